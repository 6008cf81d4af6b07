/*
 * replyscan.h -- an SMTP reply stream checked as it is read (RFC 5321
 * 4.2): each line a three-digit code then " ", "-" or the end; the lines
 * of one reply all with one code.  libESMTP takes the first line's code
 * of a malformed reply at face value, so relay.c runs every octet it
 * reads through this first.
 */
#ifndef RELAYQ_REPLYSCAN_H
#define RELAYQ_REPLYSCAN_H

#include <stddef.h>

struct reply_scan {
	char	 head[4];	/* the first octets of the current line */
	size_t	 pos;		/* octets of the current line so far */
	int	 code;		/* of the reply in progress, 0: none */
	int	 last;		/* code of the last complete reply */
	char	 why[96];	/* after REPLY_SCAN_BAD */
};

enum reply_scan_result {
	REPLY_SCAN_MORE,	/* everything consumed, no reply ended */
	REPLY_SCAN_REPLY,	/* a reply ended: *used octets consumed */
	REPLY_SCAN_BAD		/* malformed: why says how */
};

void	reply_scan_init(struct reply_scan *);

/*
 * Consumes octets of buf up to the end of the next complete reply.
 * *used is set to what was consumed; with REPLY_SCAN_REPLY, last holds
 * the reply's code.
 */
enum reply_scan_result reply_scan_feed(struct reply_scan *, const char *buf,
	    size_t len, size_t *used);

#endif
