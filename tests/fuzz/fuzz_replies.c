/*
 * fuzz_replies.c -- the SMTP reply stream check of relay.c
 * (src/replyscan.c), fed the input in pieces cut where its first byte
 * says.
 *
 * Checked beyond "no crash": the verdicts do not depend on how the
 * stream is cut into reads, and match a line-by-line reference written
 * from RFC 5321 4.2 -- each line three digits 2xx-5xx then " ", "-" or
 * the end (a CR before the LF allowed); one code per reply.
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include "replyscan.h"

/* The reference: the number of complete replies, or -1 when bad. */
static int
reference(const unsigned char *p, size_t n)
{
	size_t i = 0;
	int replies = 0, code = 0;

	while (i < n) {
		const unsigned char *nl = memchr(p + i, '\n', n - i);
		size_t len;
		int c, last;

		if (nl == NULL)
			break;		/* an unfinished line */
		len = (size_t)(nl - (p + i));
		if (len < 3 || p[i] < '2' || p[i] > '5' || p[i + 1] < '0' ||
		    p[i + 1] > '9' || p[i + 2] < '0' || p[i + 2] > '9')
			return -1;
		if (len > 3 && p[i + 3] != ' ' && p[i + 3] != '-' &&
		    !(len == 4 && p[i + 3] == '\r'))
			return -1;
		c = (p[i] - '0') * 100 + (p[i + 1] - '0') * 10 + (p[i + 2] - '0');
		if (code != 0 && c != code)
			return -1;
		last = len == 3 || p[i + 3] != '-';
		code = last ? 0 : c;
		replies += last;
		i += len + 1;
	}
	return replies;
}

/* Runs the scanner over the stream in pieces of at most step octets. */
static int
scan(const char *p, size_t n, size_t step)
{
	struct reply_scan rs;
	size_t off = 0, used;
	int replies = 0;

	reply_scan_init(&rs);
	while (off < n) {
		size_t len = n - off < step ? n - off : step;

		while (len > 0) {
			enum reply_scan_result r = reply_scan_feed(&rs, p + off,
			    len, &used);

			FUZZ_ASSERT(used <= len);
			off += used;
			len -= used;
			if (r == REPLY_SCAN_BAD)
				return -1;
			if (r == REPLY_SCAN_REPLY) {
				FUZZ_ASSERT(rs.last >= 200 && rs.last <= 599);
				replies++;
			} else
				FUZZ_ASSERT(len == 0);
		}
	}
	return replies;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t step;
	int whole, cut, ref;

	if (size < 1)
		return 0;
	step = (size_t)data[0] % 16 + 1;
	data++;
	size--;
	whole = scan((const char *)data, size, size > 0 ? size : 1);
	cut = scan((const char *)data, size, step);
	ref = reference(data, size);
	FUZZ_ASSERT(whole == cut);
	FUZZ_ASSERT(whole == ref);
	return 0;
}
