/*
 * message.h -- reading a message (stdin or SMTP DATA) into spool form.
 *
 * Two stages, so the envelope (which may come from the headers, -t) is
 * known before anything is written:
 *   message_read_header()  reads and parses the header block into memory;
 *   message_write()        fixes the headers up and streams everything,
 *                          header and body, to a sink.
 * What is written: CRLF line ends only; a CR that is not part of a line
 * end becomes a space (it is never a line end: SMTP smuggling); lines
 * longer than 998 octets are broken with CRLF SP; a final line end is
 * added; Bcc is removed; Date, Message-ID and From are added once when
 * missing, and duplicates that libesmtp would drop are dropped here, so
 * what is spooled is byte for byte what goes on the wire.
 */
#ifndef RELAYQ_MESSAGE_H
#define RELAYQ_MESSAGE_H

#include <stddef.h>

#include "address.h"
#include "linereader.h"

#define MESSAGE_LINE_MAX	998		/* RFC 5322 2.1.1 */
#define MESSAGE_HEADER_MAX	(1024 * 1024)	/* whole header block */

enum message_end {
	MESSAGE_END_EOF,	/* stdin with -i: to end of input */
	MESSAGE_END_DOT,	/* stdin without -i: a lone "." line ends */
	MESSAGE_END_SMTP	/* -bs DATA: ".", with dot-unstuffing */
};

enum message_status {
	MESSAGE_OK = 0,
	MESSAGE_EDATA,		/* bad message (NUL, bad -t address...) */
	MESSAGE_EREAD,		/* reading the input failed */
	MESSAGE_EWRITE,		/* the sink failed */
	MESSAGE_EEOF		/* SMTP DATA ended without "." */
};

struct message_header;

struct message {
	enum message_end	 end;
	struct message_header	*fields;
	size_t			 nfields;
	size_t			 header_bytes;
	/* A body line read while looking for the end of the header. */
	char			*pending;
	size_t			 npending;
	int			 pending_complete;
	int			 input_done;	/* the end marker was seen */
	int			 eightbit;	/* any octet >= 0x80 */
	size_t			 size;		/* octets written */
};

/* The write side: returns 0, or -1 on failure. */
typedef int (*message_sink)(void *arg, const char *p, size_t n);

/* Values for the headers message_write() may add. */
struct message_defaults {
	const char	*from_addr;	/* "login@domain" */
	const char	*fullname;	/* -F, or NULL */
	const char	*msgid;		/* "<...>" */
	long long	 date;		/* seconds since the epoch */
};

void	message_init(struct message *, enum message_end);
void	message_free(struct message *);

/* Reads the header block.  Returns a message_status; err says why. */
int	message_read_header(struct message *, struct linereader *,
	    char *err, size_t errlen);

/* Appends the To, Cc and Bcc addresses (for -t).  0, or -1 with err. */
int	message_header_recipients(const struct message *,
	    struct addr_list *out, char *err, size_t errlen);

/*
 * The value (after the colon) of the last field of this name, or NULL;
 * folds are CRLF SP in it.
 */
const char *message_header_value(const struct message *, const char *name,
	    size_t *len);
/* Replaces every field of this name by "Name: value", or adds one. */
void	message_set_header(struct message *, const char *name,
	    const char *value);

/* 1 if the header block has a field of this name. */
int	message_has_header(const struct message *, const char *name);

/* Writes header and body to the sink.  Returns a message_status. */
int	message_write(struct message *, struct linereader *,
	    const struct message_defaults *, message_sink, void *arg,
	    char *err, size_t errlen);

/*
 * The next raw piece of input with the end-of-input rules applied (a
 * lone "." line ends DOT and SMTP input; SMTP dots are unstuffed);
 * line_start says the piece begins a line.  1 piece, 0 end of message,
 * or a negative message_status.
 */
int	message_next(struct message *, struct linereader *, int line_start,
	    const char **p, size_t *n, int *complete);

/* Reads and discards the rest of the input, up to its end marker. */
void	message_drain(struct message *, struct linereader *);

/* Formats t as an RFC 5322 date-time into buf. */
int	message_format_date(long long t, char *buf, size_t len);

#endif
