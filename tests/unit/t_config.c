/*
 * t_config.c -- the ini file: defaults, values, and errors that name the
 * file, the line and the key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static char path[64];

static void
write_ini(const char *text)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	assert_int_equal(fputs(text, fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
}

static int
setup(void **state)
{
	int fd;

	(void)state;
	(void)snprintf(path, sizeof(path), "/tmp/t_config.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd != -1);
	(void)close(fd);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	(void)unlink(path);
	return 0;
}

static const char base[] = "[relay]\nuser = u@example.com\npassword = p\n";

static void
test_defaults(void **state)
{
	struct config *c;
	char err[512];

	(void)state;
	write_ini(base);
	c = config_load(path, 0, err, sizeof(err));
	assert_non_null(c);
	assert_string_equal(c->relay.host, "smtp.elastx.email");
	assert_int_equal(c->relay.port, 587);
	assert_int_equal(c->relay.tls, CONFIG_TLS_STARTTLS);
	assert_int_equal(c->relay.timeout, 300);
	assert_string_equal(c->queue.dir, "/var/spool/relayq");
	assert_int_equal(c->queue.delivery, CONFIG_DELIVERY_FOREGROUND);
	assert_null(c->relay.ca_file);
	config_free(c);
}

static void
test_values(void **state)
{
	struct config *c;
	char err[512];

	(void)state;
	write_ini("[Relay]\nHOST = mail.example.com\nport = 0587\n"
	    "tls = tls\ntimeout = 2m\nuser = u@example.com\n"
	    "password = \"a#b;c\"\n[queue]\ndir = /tmp/q\n"
	    "delivery = queue\n[log]\ntarget = stderr\n");
	c = config_load(path, 0, err, sizeof(err));
	assert_non_null(c);
	assert_string_equal(c->relay.host, "mail.example.com");
	assert_int_equal(c->relay.port, 587);	/* decimal, not octal */
	assert_int_equal(c->relay.tls, CONFIG_TLS_IMPLICIT);
	assert_int_equal(c->relay.timeout, 120);
	assert_string_equal(c->relay.password, "a#b;c");
	assert_int_equal(c->queue.delivery, CONFIG_DELIVERY_QUEUE);
	assert_int_equal(c->log.target, LOG_TARGET_STDERR);
	config_free(c);
}

struct err_case {
	const char	*text;
	const char	*want;		/* substring of the error */
};

static const struct err_case errs[] = {
	{ "[relay]\nuser = u@example.com\npassword = p\nport = 99999\n",
	    ":4: [relay] port: invalid value \"99999\"" },
	{ "[relay]\nuser = u@example.com\npassword = p\nport = 25x\n",
	    ":4: [relay] port" },
	{ "[relay]\nhots = x\nuser = u@example.com\npassword = p\n",
	    ":2: [relay] hots: unknown key" },
	{ "[relya]\nuser = u\n", "unknown section [relya]" },
	{ "[relay]\nuser = u@example.com\npassword = p\ntls = maybe\n",
	    ":4: [relay] tls: invalid value" },
	{ "[relay]\npassword = p\n", "[relay] user: is required" },
	{ "[relay]\nuser = u@example.com\n", "[relay] password" },
	{ "[relay]\nuser = u@example.com\npassword = p\npassword_file = /f\n",
	    "not both" },
	{ "[relay]\nhost = relay.example\ntls = none\n",
	    "only for a loopback host" },
	{ "[relay]\nhost = 127.0.0.1\ntls = none\nuser = u\n",
	    "no AUTH without TLS" },
	{ "[relay]\nuser = u@example.com\npassword = p\n[queue]\n"
	    "dir = relative\n", "must be an absolute path" },
	{ "[relay]\nthis line has no equals sign\n", "syntax error" },
	{ "early = 1\n[relay]\nuser = u@example.com\npassword = p\n",
	    "outside any [section]" },
};

static void
test_errors(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		char err[512] = "";

		print_message("case: %s\n", errs[i].want);
		write_ini(errs[i].text);
		assert_null(config_load(path, 0, err, sizeof(err)));
		assert_non_null(strstr(err, errs[i].want));
		assert_non_null(strstr(err, path));
	}
}

static void
test_missing_file(void **state)
{
	char err[512];

	(void)state;
	assert_null(config_load("/nonexistent/relayq.ini", 1, err,
	    sizeof(err)));
	assert_non_null(strstr(err, "/nonexistent/relayq.ini"));
}

static void
test_env_override(void **state)
{
	struct config *c;
	char err[512];

	(void)state;
	write_ini(base);
	assert_int_equal(setenv("RELAYQ_RELAY_PORT", "2525", 1), 0);
	c = config_load(path, 1, err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(c->relay.port, 2525);
	config_free(c);
	/* A privileged run ignores the environment. */
	c = config_load(path, 0, err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(c->relay.port, 587);
	config_free(c);
	assert_int_equal(setenv("RELAYQ_RELAY_PORT", "0", 1), 0);
	assert_null(config_load(path, 1, err, sizeof(err)));
	assert_non_null(strstr(err, "RELAYQ_RELAY_PORT"));
	(void)unsetenv("RELAYQ_RELAY_PORT");
}

static void
test_password_file(void **state)
{
	char pwpath[] = "/tmp/t_config_pw.XXXXXX", err[512], ini[256];
	struct config *c;
	int fd;

	(void)state;
	fd = mkstemp(pwpath);
	assert_true(fd != -1);
	assert_int_equal(write(fd, "sekrit\nsecond line\n", 19), 19);
	(void)close(fd);
	(void)snprintf(ini, sizeof(ini), "[relay]\nuser = u@example.com\n"
	    "password_file = %s\n", pwpath);
	write_ini(ini);
	c = config_load(path, 0, err, sizeof(err));
	assert_non_null(c);
	assert_null(c->relay.password);		/* read only when needed */
	assert_int_equal(config_load_password(c, err, sizeof(err)), 0);
	assert_string_equal(c->relay.password, "sekrit");
	config_free(c);
	(void)unlink(pwpath);
	c = config_load(path, 0, err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(config_load_password(c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, pwpath));
	config_free(c);
}

static void
test_aliases_accounts_sender(void **state)
{
	const struct config_alias *a;
	struct config *c;
	char err[512];

	(void)state;
	write_ini("[relay]\nuser = u@example.com\npassword = p\n"
	    "[sender]\naddress = noreply@example.com\nrewrite = always\n"
	    "reply_to = yes\n[aliases]\nRoot = a@example.com, "
	    "\"Ops Team\" <ops@example.com>\ndefault = c@example.com\n"
	    "[account Example.SE]\nuser = se@example.se\n"
	    "password_file = /nonexistent\n");
	c = config_load(path, 0, err, sizeof(err));
	assert_non_null(c);
	assert_string_equal(c->sender.address, "noreply@example.com");
	assert_int_equal(c->sender.rewrite, CONFIG_REWRITE_ALWAYS);
	assert_int_equal(c->sender.reply_to, 1);
	a = config_alias(c, "ROOT");
	assert_non_null(a);
	assert_int_equal(a->nto, 2);
	assert_string_equal(a->to[1], "ops@example.com");
	assert_non_null(config_alias(c, "default"));
	assert_null(config_alias(c, "www-data"));
	assert_non_null(config_account_for(c, "app@example.se"));
	assert_string_equal(config_account_for(c, "x@EXAMPLE.se")->user,
	    "se@example.se");
	assert_null(config_account_for(c, "app@example.com"));
	assert_int_equal(config_account_password(config_account_for(c,
	    "a@example.se"), err, sizeof(err)), -1);
	assert_non_null(strstr(err, "/nonexistent"));
	config_free(c);

	write_ini("[relay]\nuser = u@example.com\npassword = p\n"
	    "[aliases]\nroot = root\n");
	assert_null(config_load(path, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "[aliases] root"));
	assert_non_null(strstr(err, "not a full address"));
	write_ini("[relay]\nuser = u@example.com\npassword = p\n"
	    "[aliases]\nroot =\n");
	assert_null(config_load(path, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "[aliases] root: is empty"));
	write_ini("[relay]\nhost = 127.0.0.1\ntls = none\n"
	    "[account example.se]\nuser = x@example.se\npassword = p\n");
	assert_null(config_load(path, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "no AUTH without TLS"));
	write_ini("[relay]\nuser = u@example.com\npassword = p\n"
	    "[account example.se]\nuser = x@example.se\nhost = y\n");
	assert_null(config_load(path, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "unknown key"));
	write_ini("[relay]\nuser = u@example.com\npassword = p\n"
	    "[sender]\nrewrite = sometimes\n");
	assert_null(config_load(path, 0, err, sizeof(err)));
	assert_non_null(strstr(err, ":5: [sender] rewrite"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_env_override),
		cmocka_unit_test(test_password_file),
		cmocka_unit_test(test_aliases_accounts_sender),
	};

	return cmocka_run_group_tests_name("config", tests, setup, teardown);
}
