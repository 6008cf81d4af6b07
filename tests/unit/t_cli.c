/*
 * t_cli.c -- sendmail option parsing, as real callers use it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cli.h"

#define MAXARGS 12

struct cli_case {
	const char	*name;
	const char	*argv[MAXARGS];
	int		 ok;
	enum cli_mode	 mode;
	int		 t, dot_ends, verbose;
	const char	*sender, *fullname, *config;
	enum cli_delivery delivery;
	size_t		 nrcpts;
	const char	*first_rcpt;
	const char	*err_has;
	unsigned long	 interval;
	int		 json;
	const char	*queue_id;
	const char	*notify, *ret, *envid;
	int		 body8;
};

static const struct cli_case cases[] = {
	{ .name = "cron", .argv = { "/usr/sbin/sendmail", "-FCronDaemon",
	    "-i", "-B8BITMIME", "-oem", "root" }, .ok = 1, .dot_ends = 0,
	    .fullname = "CronDaemon", .nrcpts = 1, .first_rcpt = "root",
	    .body8 = 1 },
	{ .name = "php", .argv = { "sendmail", "-t", "-i" }, .ok = 1, .t = 1 },
	{ .name = "php -f attached", .argv = { "sendmail", "-t", "-i",
	    "-fbounce@example.com" }, .ok = 1, .t = 1,
	    .sender = "bounce@example.com" },
	{ .name = "last -f wins", .argv = { "sendmail", "-t", "-i", "-f",
	    "a@example.com", "-fb@example.com" }, .ok = 1, .t = 1,
	    .sender = "b@example.com" },
	{ .name = "-r is -f", .argv = { "sendmail", "-r", "r@example.com",
	    "x@example.com" }, .ok = 1, .dot_ends = 1,
	    .sender = "r@example.com", .nrcpts = 1 },
	{ .name = "s-nail -F separate", .argv = { "sendmail", "-i", "-F",
	    "Sender", "-f", "s@example.com", "--", "u@example.com" },
	    .ok = 1, .fullname = "Sender", .sender = "s@example.com",
	    .nrcpts = 1, .first_rcpt = "u@example.com" },
	{ .name = "phpmailer", .argv = { "sendmail", "-t", "-i", "-oi",
	    "-fapp@example.com", "-t" }, .ok = 1, .t = 1,
	    .sender = "app@example.com" },
	{ .name = "mutt -oem -oi --", .argv = { "sendmail", "-oem", "-oi",
	    "--", "-x@example.com" }, .ok = 1, .nrcpts = 1,
	    .first_rcpt = "-x@example.com" },
	{ .name = "no -i: dot ends", .argv = { "sendmail", "-t" }, .ok = 1,
	    .t = 1, .dot_ends = 1 },
	{ .name = "clustered -ti", .argv = { "sendmail", "-ti" }, .ok = 1,
	    .t = 1 },
	{ .name = "-odq", .argv = { "sendmail", "-odq", "a@b.example" },
	    .ok = 1, .dot_ends = 1, .delivery = CLI_DELIVERY_QUEUE,
	    .nrcpts = 1 },
	{ .name = "-odi", .argv = { "sendmail", "-odi", "a@b.example" },
	    .ok = 1, .dot_ends = 1, .delivery = CLI_DELIVERY_FOREGROUND,
	    .nrcpts = 1 },
	{ .name = "-B separate", .argv = { "sendmail", "-B", "8BITMIME",
	    "a@b.example" }, .ok = 1, .dot_ends = 1, .nrcpts = 1,
	    .body8 = 1 },
	{ .name = "-C and -v", .argv = { "sendmail", "-v", "-C", "/x.ini",
	    "a@b.example" }, .ok = 1, .dot_ends = 1, .verbose = 1,
	    .config = "/x.ini", .nrcpts = 1 },
	{ .name = "-bs", .argv = { "sendmail", "-bs" }, .ok = 1,
	    .mode = CLI_SMTP, .dot_ends = 1 },
	{ .name = "-q", .argv = { "sendmail", "-q" }, .ok = 1,
	    .mode = CLI_QUEUE_RUN, .dot_ends = 1 },
	{ .name = "newaliases", .argv = { "/usr/bin/newaliases" }, .ok = 1,
	    .mode = CLI_NEWALIASES, .dot_ends = 1 },
	{ .name = "--version", .argv = { "relayq", "--version" }, .ok = 1,
	    .mode = CLI_VERSION, .dot_ends = 1 },
	{ .name = "options stop at first operand", .argv = { "sendmail",
	    "a@b.example", "-t" }, .ok = 1, .dot_ends = 1, .nrcpts = 2 },
	{ .name = "unknown -X", .argv = { "sendmail", "-X", "/tmp/log" },
	    .err_has = "unknown option -X" },
	{ .name = "-f without value", .argv = { "sendmail", "-f" },
	    .err_has = "needs a value" },
	{ .name = "bad -B", .argv = { "sendmail", "-B", "BINARYMIME" },
	    .err_has = "body type" },
	{ .name = "-bd refused", .argv = { "sendmail", "-bd" },
	    .err_has = "unsupported mode" },
	{ .name = "-q1m daemon", .argv = { "sendmail", "-q1m" }, .ok = 1,
	    .mode = CLI_QUEUE_DAEMON, .dot_ends = 1, .interval = 60 },
	{ .name = "-q30s daemon", .argv = { "sendmail", "-q30s" }, .ok = 1,
	    .mode = CLI_QUEUE_DAEMON, .dot_ends = 1, .interval = 30 },
	{ .name = "bad interval", .argv = { "sendmail", "-qsoon" },
	    .err_has = "bad queue interval" },
	{ .name = "-odb", .argv = { "sendmail", "-odb", "a@b.example" },
	    .ok = 1, .dot_ends = 1, .delivery = CLI_DELIVERY_BACKGROUND,
	    .nrcpts = 1 },
	{ .name = "-bp", .argv = { "sendmail", "-bp" }, .ok = 1,
	    .mode = CLI_QUEUE_LIST, .dot_ends = 1 },
	{ .name = "mailq", .argv = { "/usr/bin/mailq" }, .ok = 1,
	    .mode = CLI_QUEUE_LIST, .dot_ends = 1 },
	{ .name = "queue list --json", .argv = { "relayq", "-C", "/x.ini",
	    "queue", "list", "--json" }, .ok = 1, .mode = CLI_QUEUE_LIST,
	    .dot_ends = 1, .config = "/x.ini", .json = 1 },
	{ .name = "queue retry", .argv = { "/usr/sbin/relayq", "queue",
	    "retry", "0123" }, .ok = 1, .mode = CLI_QUEUE_RETRY,
	    .dot_ends = 1, .queue_id = "0123" },
	{ .name = "queue remove", .argv = { "relayq", "queue", "remove",
	    "0123" }, .ok = 1, .mode = CLI_QUEUE_REMOVE, .dot_ends = 1,
	    .queue_id = "0123" },
	{ .name = "DSN and body flags", .argv = { "sendmail", "-N",
	    "failure,delay", "-Rhdrs", "-V", "abc-123", "-B8BITMIME",
	    "x@y.example" }, .ok = 1, .dot_ends = 1, .nrcpts = 1,
	    .notify = "failure,delay", .ret = "hdrs", .envid = "abc-123",
	    .body8 = 1 },
	{ .name = "-N never", .argv = { "sendmail", "-Nnever", "x@y.example" },
	    .ok = 1, .dot_ends = 1, .nrcpts = 1, .notify = "never" },
	{ .name = "bad -N", .argv = { "sendmail", "-N", "sometimes" },
	    .err_has = "-N takes" },
	{ .name = "bad -R", .argv = { "sendmail", "-R", "body" },
	    .err_has = "-R takes" },
	{ .name = "bad -V", .argv = { "sendmail", "-V", "a b" },
	    .err_has = "-V takes" },
	{ .name = "queue bad verb", .argv = { "relayq", "queue", "flush" },
	    .err_has = "usage: relayq queue" },
	{ .name = "as sendmail, queue is a recipient", .argv = { "sendmail",
	    "queue" }, .ok = 1, .dot_ends = 1, .nrcpts = 1,
	    .first_rcpt = "queue" },
	{ .name = "bad -od", .argv = { "sendmail", "-odx" },
	    .err_has = "delivery mode" },
};

static void
test_cases(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct cli_case *c = &cases[i];
		char *argv[MAXARGS + 1] = { 0 }, err[256] = "";
		struct cli_opts o;
		int argc = 0, rc;

		while (c->argv[argc] != NULL) {
			argv[argc] = (char *)c->argv[argc];
			argc++;
		}
		rc = cli_parse(argc, argv, &o, err, sizeof(err));
		print_message("case: %s\n", c->name);
		if (!c->ok) {
			assert_int_equal(rc, -1);
			assert_non_null(strstr(err, c->err_has));
			continue;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(o.mode, c->mode);
		assert_int_equal(o.read_recipients, c->t);
		assert_int_equal(o.dot_ends_input, c->dot_ends);
		assert_int_equal(o.verbose, c->verbose);
		assert_int_equal(o.delivery, c->delivery);
		assert_int_equal(o.nrcpts, c->nrcpts);
		if (c->sender)
			assert_string_equal(o.sender, c->sender);
		else
			assert_null(o.sender);
		if (c->fullname)
			assert_string_equal(o.fullname, c->fullname);
		if (c->config)
			assert_string_equal(o.config_path, c->config);
		if (c->first_rcpt)
			assert_string_equal(o.rcpts[0], c->first_rcpt);
		assert_int_equal(o.interval, c->interval);
		assert_int_equal(o.json, c->json);
		if (c->queue_id)
			assert_string_equal(o.queue_id, c->queue_id);
		if (c->notify)
			assert_string_equal(o.dsn_notify, c->notify);
		if (c->ret)
			assert_string_equal(o.dsn_ret, c->ret);
		if (c->envid)
			assert_string_equal(o.dsn_envid, c->envid);
		assert_int_equal(o.body8bit, c->body8);
	}
}

static void
test_ignored_are_noted(void **state)
{
	char *argv[] = { "sendmail", "-oem", "-oQ/tmp", "-U", "x@y.example",
	    NULL };
	struct cli_opts o;
	char err[256];

	(void)state;
	assert_int_equal(cli_parse(5, argv, &o, err, sizeof(err)), 0);
	assert_int_equal(o.nignored, 3);
	assert_string_equal(o.ignored[1], "-oQ/tmp");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_ignored_are_noted),
	};

	return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
