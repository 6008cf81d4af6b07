/*
 * fuzz_message.c -- the message pipeline of submission and -bs DATA:
 * linereader, message_read_header, message_header_recipients and
 * message_write, as submit_message() runs them.
 *
 * Input: one flag byte, then the message as it would arrive on stdin.
 *   flags & 3      0: -i (to end of input), 1: a lone "." ends (no -i),
 *                  2 and 3: SMTP DATA (dot-unstuffing, "." required)
 *   flags & 4      rewrite From: as [sender] address does (set_header)
 *   flags & 8      a -F full name with quotes, backslashes and controls
 *   flags & 0xe0   all set: a line longer than the 64 KiB read buffer
 *                  (the input repeated, LF as space) goes first, as a
 *                  header field, or with flags & 0x10 as the first body
 *                  line; rarely, since such a run takes ~10 ms
 *
 * Besides memory errors, what message.h promises is checked on what is
 * written: CRLF line ends only, no line over 998 octets, a final line
 * end, the size and 8-bit flag right, an empty line ending the header,
 * and in the header no Bcc or Return-Path, exactly one From, Date and
 * Message-ID, at most one To, Cc, Sender and Reply-To.
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include <ctype.h>

#include "address.h"
#include "buf.h"
#include "linereader.h"
#include "message.h"
#include "util.h"

#define FUZZ_REPEAT_TO	(LINEREADER_BUFSIZE + 64)

static int
sink(void *arg, const char *p, size_t n)
{
	buf_append(arg, p, n);
	return 0;
}

/* The field name of an output header line, as message.c reads one. */
static int
field_is(const char *l, size_t n, const char *name)
{
	size_t i = 0, nl;

	while (i < n && l[i] > 32 && l[i] < 127 && l[i] != ':')
		i++;
	nl = i;
	while (i < n && (l[i] == ' ' || l[i] == '\t'))
		i++;
	return nl > 0 && i < n && l[i] == ':' && nl == strlen(name) &&
	    strncasecmp(l, name, nl) == 0;
}

static void
check_output(const struct message *m, const struct buf *o)
{
	static const char *const once[] = { "From", "Date", "Message-ID" };
	static const char *const atmost[] = { "To", "Cc", "Sender",
		"Reply-To", "Disposition-Notification-To" };
	static const char *const never[] = { "Bcc", "Return-Path",
		"Original-Recipient", "Resent-Reply-To" };
	size_t count[3] = { 0 }, acount[5] = { 0 };
	size_t i, k, line = 0, len;
	int in_header = 1, eight = 0;
	const char *l;

	FUZZ_ASSERT(m->size == o->len);
	FUZZ_ASSERT(o->len >= 2 && memcmp(o->data + o->len - 2, "\r\n", 2) ==
	    0);
	for (i = 0; i < o->len; i = line) {
		const char *eol = memchr(o->data + i, '\n', o->len - i);

		FUZZ_ASSERT(eol != NULL);
		l = o->data + i;
		len = (size_t)(eol - l);
		FUZZ_ASSERT(len >= 1 && l[len - 1] == '\r');
		len--;
		line = (size_t)(eol - o->data) + 1;
		FUZZ_ASSERT(len <= MESSAGE_LINE_MAX);
		for (k = 0; k < len; k++) {
			FUZZ_ASSERT(l[k] != '\r');	/* no stray CR */
			if ((unsigned char)l[k] >= 0x80)
				eight = 1;
		}
		if (!in_header)
			continue;
		if (len == 0) {
			in_header = 0;
			continue;
		}
		if (l[0] == ' ' || l[0] == '\t')
			continue;	/* a fold */
		for (k = 0; k < UTIL_ARRAYLEN(never); k++)
			FUZZ_ASSERT(!field_is(l, len, never[k]));
		for (k = 0; k < UTIL_ARRAYLEN(once); k++)
			count[k] += field_is(l, len, once[k]);
		for (k = 0; k < UTIL_ARRAYLEN(atmost); k++)
			acount[k] += field_is(l, len, atmost[k]);
	}
	FUZZ_ASSERT(!in_header);	/* the empty line is there */
	for (k = 0; k < UTIL_ARRAYLEN(once); k++)
		FUZZ_ASSERT(count[k] == 1);
	for (k = 0; k < UTIL_ARRAYLEN(atmost); k++)
		FUZZ_ASSERT(acount[k] <= 1);
	if (eight)
		FUZZ_ASSERT(m->eightbit);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum message_end ends[] = { MESSAGE_END_EOF,
		MESSAGE_END_DOT, MESSAGE_END_SMTP, MESSAGE_END_SMTP };
	struct message_defaults def = { "me@host.example", NULL,
	    "<id.relayq@host.example>", 1764133000LL };
	struct linereader *lr;
	struct message m;
	struct addr_list rcpts;
	struct buf out;
	char err[512];
	const char *v;
	unsigned flags;
	size_t i, vlen;
	int fd, st;

	if (size == 0 || size > 256 * 1024)
		return 0;
	flags = data[0];
	data++;
	size--;
	if (flags & 8)
		def.fullname = "Jo \"Q\" \\ Public\r\n\x7f\xc3\xa9";

	if ((flags & 0xe0) == 0xe0 && size > 0) {
		/* Not the input repeated whole: some 10^4 header fields grow
		 * their array one at a time, quadratic under ASan (its
		 * realloc always moves), which is too slow to fuzz. */
		struct buf big;
		char *piece = fuzz_strndup(data, size);

		for (i = 0; i < size; i++)
			if (piece[i] == '\n')
				piece[i] = ' ';
		buf_init(&big);
		buf_puts(&big, flags & 0x10 ? "Subject: long body\n\n" :
		    "X-Long: ");
		while (big.len < FUZZ_REPEAT_TO)
			buf_append(&big, piece, size);
		free(piece);
		buf_append(&big, "\n", 1);
		if (!(flags & 0x10))
			buf_append(&big, data, size);
		fd = fuzz_memfd(big.data, big.len);
		buf_free(&big);
	} else
		fd = fuzz_memfd(data, size);

	lr = malloc(sizeof(*lr));
	FUZZ_ASSERT(lr != NULL);
	linereader_init(lr, fd);
	message_init(&m, ends[flags & 3]);
	buf_init(&out);
	addr_list_init(&rcpts);
	err[0] = '\0';

	st = message_read_header(&m, lr, err, sizeof(err));
	if (st != MESSAGE_OK) {
		FUZZ_ASSERT(st == MESSAGE_EDATA || st == MESSAGE_EEOF);
		FUZZ_ASSERT(err[0] != '\0');
		goto done;
	}
	/* -t: the recipients in To, Cc and Bcc. */
	if (message_header_recipients(&m, &rcpts, err, sizeof(err)) == 0) {
		for (i = 0; i < rcpts.n; i++)
			FUZZ_ASSERT(addr_check_safe(rcpts.v[i], err,
			    sizeof(err)) == 0);
	} else
		FUZZ_ASSERT(err[0] != '\0');
	if ((v = message_header_value(&m, "From", &vlen)) != NULL) {
		char name[256];

		addr_display_name(v, vlen, name, sizeof(name));
		if (flags & 4) {
			/* What submit.c does for [sender] address. */
			struct buf nv;

			buf_init(&nv);
			if (name[0] != '\0') {
				addr_quote_phrase(&nv, name);
				buf_puts(&nv, " ");
			}
			buf_puts(&nv, "<noreply@example.com>");
			message_set_header(&m, "From", nv.data);
			buf_free(&nv);
			if (!message_has_header(&m, "Reply-To"))
				message_set_header(&m, "Reply-To", "x@y.example");
		}
	}
	(void)message_header_value(&m, "Subject", &vlen);

	err[0] = '\0';
	st = message_write(&m, lr, &def, sink, &out, err, sizeof(err));
	if (st == MESSAGE_OK)
		check_output(&m, &out);
	else {
		FUZZ_ASSERT(st == MESSAGE_EDATA || st == MESSAGE_EEOF);
		FUZZ_ASSERT(err[0] != '\0');
	}
done:
	/* In a dialogue the client goes on after the final dot. */
	if (st == MESSAGE_EDATA && m.end == MESSAGE_END_SMTP)
		message_drain(&m, lr);
	addr_list_free(&rcpts);
	buf_free(&out);
	message_free(&m);
	free(lr);
	(void)close(fd);
	return 0;
}
