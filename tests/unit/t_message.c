/*
 * t_message.c -- header parsing, line-ending normalisation, header
 * fix-ups and -t recipient extraction, byte for byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"
#include "message.h"

#define ADDED "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n" \
	"Message-ID: <id@host.example>\r\nFrom: me@host.example\r\n"

struct msg_case {
	const char	*name;
	const char	*in;
	size_t		 inlen;		/* 0: strlen(in) */
	enum message_end end;
	int		 status;
	const char	*out;		/* NULL: not checked */
};

static const struct msg_case cases[] = {
	{ "LF becomes CRLF", "Subject: s\nTo: a@x.example\n\nbody\n",
	    0, MESSAGE_END_EOF, MESSAGE_OK,
	    "Subject: s\r\nTo: a@x.example\r\n" ADDED "\r\nbody\r\n" },
	{ "mixed endings", "Subject: s\r\nTo: a@x.example\r\n\r\nb1\nb2\r\n",
	    0, MESSAGE_END_EOF, MESSAGE_OK,
	    "Subject: s\r\nTo: a@x.example\r\n" ADDED "\r\nb1\r\nb2\r\n" },
	{ "stray CR is a space, never a line end",
	    "Subject: x\rBcc: victim@x.example\n\na\rb\r\r\n.\r.\r\n",
	    0, MESSAGE_END_EOF, MESSAGE_OK,
	    "Subject: x Bcc: victim@x.example\r\n" ADDED
	    "\r\na b \r\n. .\r\n" },
	{ "no final newline", "Subject: s\n\nlast", 0, MESSAGE_END_EOF,
	    MESSAGE_OK, "Subject: s\r\n" ADDED "\r\nlast\r\n" },
	{ "Bcc and Return-Path removed, existing kept",
	    "Return-Path: <x@y.example>\nFrom: F <f@x.example>\n"
	    "Bcc: hidden@x.example,\n other@x.example\nDate: D\n"
	    "Message-Id: <m@x>\n\nb\n", 0, MESSAGE_END_EOF, MESSAGE_OK,
	    "From: F <f@x.example>\r\nDate: D\r\nMessage-Id: <m@x>\r\n"
	    "\r\nb\r\n" },
	{ "second From wins, second Date dropped, To merged",
	    "From: a@x.example\nTo: t1@x.example\nDate: D1\n"
	    "From: Sender <s@x.example>\nTo: t2@x.example\nDate: D2\n\nb\n",
	    0, MESSAGE_END_EOF, MESSAGE_OK,
	    "To: t1@x.example,\r\n t2@x.example\r\nDate: D1\r\n"
	    "From: Sender <s@x.example>\r\n"
	    "Message-ID: <id@host.example>\r\n\r\nb\r\n" },
	{ "no header at all", "just a body line\nsecond\n", 0,
	    MESSAGE_END_EOF, MESSAGE_OK,
	    ADDED "\r\njust a body line\r\nsecond\r\n" },
	{ "header ended by a non-header line", "Subject: s\nnot a header\n",
	    0, MESSAGE_END_EOF, MESSAGE_OK,
	    "Subject: s\r\n" ADDED "\r\nnot a header\r\n" },
	{ "mbox From_ line dropped", "From me Thu Jan 1 1970\nSubject: s\n\nb\n",
	    0, MESSAGE_END_EOF, MESSAGE_OK,
	    "Subject: s\r\n" ADDED "\r\nb\r\n" },
	{ "folded header kept", "Subject: one\n\ttwo\n\nb\n", 0,
	    MESSAGE_END_EOF, MESSAGE_OK,
	    "Subject: one\r\n\ttwo\r\n" ADDED "\r\nb\r\n" },
	{ "without -i a lone dot ends input", "Subject: s\n\nb\n.\nignored\n",
	    0, MESSAGE_END_DOT, MESSAGE_OK,
	    "Subject: s\r\n" ADDED "\r\nb\r\n" },
	{ "with -i a lone dot is data", "Subject: s\n\nb\n.\nkept\n", 0,
	    MESSAGE_END_EOF, MESSAGE_OK,
	    "Subject: s\r\n" ADDED "\r\nb\r\n.\r\nkept\r\n" },
	{ "SMTP DATA unstuffs and ends at dot",
	    "Subject: s\r\n\r\n..x\r\n.\r\nQUIT\r\n", 0, MESSAGE_END_SMTP,
	    MESSAGE_OK, "Subject: s\r\n" ADDED "\r\n.x\r\n" },
	{ "SMTP DATA cut short", "Subject: s\r\n\r\nb\r\n", 0,
	    MESSAGE_END_SMTP, MESSAGE_EEOF, NULL },
	{ "NUL in body", "Subject: s\n\na\0b\n", 14, MESSAGE_END_EOF,
	    MESSAGE_EDATA, NULL },
	{ "NUL in header", "Subj\0ect: s\n\nb\n", 15, MESSAGE_END_EOF,
	    MESSAGE_EDATA, NULL },
};

static struct buf sink_buf;

static int
sink(void *arg, const char *p, size_t n)
{
	(void)arg;
	buf_append(&sink_buf, p, n);
	return 0;
}

/* A readable descriptor holding data. */
static int
input_fd(const char *data, size_t len)
{
	FILE *fp = tmpfile();
	int fd;

	assert_non_null(fp);
	assert_int_equal(fwrite(data, 1, len, fp), len);
	assert_int_equal(fflush(fp), 0);
	fd = dup(fileno(fp));
	(void)fclose(fp);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

static int
run(const char *in, size_t len, enum message_end end, struct message *m,
    struct linereader *lr)
{
	struct message_defaults def = { "me@host.example", NULL,
	    "<id@host.example>", 0 };
	char err[256];
	int st, fd = input_fd(in, len);

	linereader_init(lr, fd);
	message_init(m, end);
	buf_reset(&sink_buf);
	st = message_read_header(m, lr, err, sizeof(err));
	if (st == MESSAGE_OK)
		st = message_write(m, lr, &def, sink, NULL, err, sizeof(err));
	(void)close(fd);
	return st;
}

static void
test_cases(void **state)
{
	static struct linereader lr;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct msg_case *c = &cases[i];
		struct message m;
		size_t len = c->inlen ? c->inlen : strlen(c->in);

		print_message("case: %s\n", c->name);
		assert_int_equal(run(c->in, len, c->end, &m, &lr), c->status);
		if (c->out != NULL)
			assert_string_equal(sink_buf.data, c->out);
		message_free(&m);
	}
}

static void
test_long_lines(void **state)
{
	static struct linereader lr;
	struct buf in, joined;
	struct message m;
	const char *p, *e;
	size_t i;

	(void)state;
	buf_init(&in);
	buf_init(&joined);
	buf_puts(&in, "Subject: s\n\n");
	for (i = 0; i < 200000; i++)	/* longer than the read buffer */
		buf_append(&in, i % 10 == 9 ? "\r" : "x", 1);
	buf_puts(&in, "\n");
	assert_int_equal(run(in.data, in.len, MESSAGE_END_EOF, &m, &lr),
	    MESSAGE_OK);
	/* Every line is at most 998 octets; the breaks are CRLF SP. */
	for (p = sink_buf.data; (e = strstr(p, "\r\n")) != NULL; p = e + 2)
		assert_true((size_t)(e - p) <= MESSAGE_LINE_MAX);
	p = strstr(sink_buf.data, "\r\n\r\n") + 4;
	while ((e = strstr(p, "\r\n ")) != NULL) {
		buf_append(&joined, p, (size_t)(e - p));
		p = e + 3;
	}
	buf_append(&joined, p, strlen(p));
	/* The last CR stands before LF: a line end, not content. */
	assert_int_equal(joined.len, 199999 + 2);
	assert_int_equal(joined.data[9], ' ');	/* stray CR became a space */
	message_free(&m);
	buf_free(&in);
	buf_free(&joined);
}

static void
test_recipients(void **state)
{
	static struct linereader lr;
	static const char in[] =
	    "To: \"Doe, John\" <john@example.com>,\n jane@example.com\n"
	    "Subject: x\rBcc: victim@example.com\n"
	    "Cc: list: a@example.net, b@example.net;\n"
	    "bcc: hidden@example.org\n"
	    "To:\n\nbody\n";
	static const char *const want[] = { "john@example.com",
	    "jane@example.com", "a@example.net", "b@example.net",
	    "hidden@example.org" };
	struct addr_list l;
	struct message m;
	char err[256];
	size_t i;

	(void)state;
	assert_int_equal(run(in, strlen(in), MESSAGE_END_EOF, &m, &lr),
	    MESSAGE_OK);
	addr_list_init(&l);
	assert_int_equal(message_header_recipients(&m, &l, err, sizeof(err)),
	    0);
	assert_int_equal(l.n, 5);
	for (i = 0; i < l.n; i++)
		assert_string_equal(l.v[i], want[i]);
	assert_null(strstr(sink_buf.data, "hidden@"));
	addr_list_free(&l);
	message_free(&m);
}

static void
test_bad_recipient_header(void **state)
{
	static struct linereader lr;
	static const char in[] = "To: John Smith\n\nb\n";
	struct addr_list l;
	struct message m;
	char err[256];

	(void)state;
	assert_int_equal(run(in, strlen(in), MESSAGE_END_EOF, &m, &lr),
	    MESSAGE_OK);
	addr_list_init(&l);
	assert_int_equal(message_header_recipients(&m, &l, err, sizeof(err)),
	    -1);
	assert_non_null(strstr(err, "To:"));
	addr_list_free(&l);
	message_free(&m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_long_lines),
		cmocka_unit_test(test_recipients),
		cmocka_unit_test(test_bad_recipient_header),
	};
	int rc;

	(void)setenv("TZ", "UTC", 1);
	tzset();
	buf_init(&sink_buf);
	rc = cmocka_run_group_tests_name("message", tests, NULL, NULL);
	buf_free(&sink_buf);
	return rc;
}
