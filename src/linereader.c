/*
 * linereader.c -- buffered reading of lines from a descriptor, in pieces.
 */
#include <string.h>
#include <unistd.h>

#include "linereader.h"
#include "util.h"

void
linereader_init(struct linereader *lr, int fd)
{
	lr->fd = fd;
	lr->start = lr->end = 0;
	lr->eof = 0;
	lr->chunk = 0;
}

int
linereader_next(struct linereader *lr, const char **p, size_t *n,
    int *complete)
{
	size_t scanned = 0;

	for (;;) {
		const char *base = lr->buf + lr->start;
		size_t avail = lr->end - lr->start;
		const char *lf = memchr(base + scanned, '\n', avail - scanned);
		size_t want;
		ssize_t r;

		if (lf != NULL) {
			*p = base;
			*n = (size_t)(lf - base) + 1;
			*complete = 1;
			lr->start += *n;
			return 1;
		}
		scanned = avail;
		if (lr->eof || avail == sizeof(lr->buf)) {
			if (avail == 0)
				return 0;
			/* Keep a final CR back: its LF may follow. */
			if (!lr->eof && base[avail - 1] == '\r' && avail > 1)
				avail--;
			*p = base;
			*n = avail;
			*complete = 0;
			lr->start += avail;
			return 1;
		}
		if (lr->start > 0) {
			memmove(lr->buf, base, avail);
			lr->start = 0;
			lr->end = avail;
		}
		want = sizeof(lr->buf) - lr->end;
		if (lr->chunk > 0 && want > lr->chunk)
			want = lr->chunk;
		r = util_read(lr->fd, lr->buf + lr->end, want);
		if (r == -1)
			return -1;
		if (r == 0)
			lr->eof = 1;
		lr->end += (size_t)r;
	}
}
