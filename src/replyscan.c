/*
 * replyscan.c -- an SMTP reply stream checked as it is read.
 */
#include <stdio.h>
#include <string.h>

#include "replyscan.h"
#include "util.h"

void
reply_scan_init(struct reply_scan *rs)
{
	memset(rs, 0, sizeof(*rs));
}

/* A line ended: 1 if it ends a reply, 0 if more lines follow, -1 bad. */
static int
reply_scan_line(struct reply_scan *rs)
{
	const char *h = rs->head;
	int code, last;

	if (!(rs->pos >= 3 && h[0] >= '2' && h[0] <= '5' && h[1] >= '0' &&
	    h[1] <= '9' && h[2] >= '0' && h[2] <= '9' && (rs->pos == 3 ||
	    h[3] == ' ' || h[3] == '-' || (rs->pos == 4 && h[3] == '\r')))) {
		(void)util_strlcpy(rs->why, "a malformed reply line",
		    sizeof(rs->why));
		return -1;
	}
	code = (h[0] - '0') * 100 + (h[1] - '0') * 10 + (h[2] - '0');
	if (rs->code != 0 && code != rs->code) {
		(void)util_snprintf(rs->why, sizeof(rs->why), "one reply with "
		    "the codes %d and %d", rs->code, code);
		return -1;
	}
	last = rs->pos == 3 || h[3] != '-';
	rs->code = last ? 0 : code;
	if (last)
		rs->last = code;
	return last;
}

enum reply_scan_result
reply_scan_feed(struct reply_scan *rs, const char *buf, size_t len,
    size_t *used)
{
	size_t i;
	int r;

	for (i = 0; i < len; i++) {
		if (buf[i] != '\n') {
			if (rs->pos < sizeof(rs->head))
				rs->head[rs->pos] = buf[i];
			rs->pos++;
			continue;
		}
		r = reply_scan_line(rs);
		rs->pos = 0;
		if (r == -1) {
			*used = i + 1;
			return REPLY_SCAN_BAD;
		}
		if (r == 1) {
			*used = i + 1;
			return REPLY_SCAN_REPLY;
		}
	}
	*used = len;
	return REPLY_SCAN_MORE;
}
