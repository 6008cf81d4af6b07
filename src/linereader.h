/*
 * linereader.h -- buffered reading of lines from a descriptor, in pieces.
 *
 * A line longer than the buffer is returned in several pieces, so no line
 * length ever forces the whole line into memory.  A piece that is not the
 * end of its line never ends in CR, so a CRLF pair is never split.
 */
#ifndef RELAYQ_LINEREADER_H
#define RELAYQ_LINEREADER_H

#include <stddef.h>

#define LINEREADER_BUFSIZE 65536

struct linereader {
	int	 fd;
	size_t	 start;		/* unread data is buf[start, end) */
	size_t	 end;
	int	 eof;
	size_t	 chunk;		/* read at most this much at once, 0: all */
	char	 buf[LINEREADER_BUFSIZE];
};

void	linereader_init(struct linereader *, int fd);

/*
 * Returns 1 with the next piece in *p, *n (valid until the next call) and
 * *complete set if it ends with LF (included in *n); 0 at end of input;
 * -1 on a read error (errno set).
 */
int	linereader_next(struct linereader *, const char **p, size_t *n,
	    int *complete);

#endif
