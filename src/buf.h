/*
 * buf.h -- a growable byte buffer, always NUL-terminated.
 */
#ifndef RELAYQ_BUF_H
#define RELAYQ_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char	*data;
	size_t	 len;
	size_t	 cap;
};

void	buf_init(struct buf *);
void	buf_free(struct buf *);
void	buf_reset(struct buf *);
void	buf_append(struct buf *, const void *, size_t);
void	buf_puts(struct buf *, const char *);
void	buf_printf(struct buf *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
void	buf_vprintf(struct buf *, const char *, va_list)
	    __attribute__((format(printf, 2, 0)));
/*
 * Appends s as a JSON string; octets >= 0x80 become \u00XX, so the
 * output is valid JSON whatever s holds.
 */
void	buf_json_str(struct buf *, const char *s);
/* Hands the data over to the caller (who frees it) and resets the buffer. */
char	*buf_take(struct buf *);

#endif
