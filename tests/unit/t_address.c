/*
 * t_address.c -- RFC 5322 address lists (-t) and envelope checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "address.h"
#include "util.h"

struct list_case {
	const char	*in;
	const char	*out[6];	/* expected addresses, NULL-ended */
	int		 fails;
};

static const struct list_case list_cases[] = {
	{ "alice@example.com", { "alice@example.com" }, 0 },
	{ "Alice Example <alice@example.com>, bob@example.org",
	    { "alice@example.com", "bob@example.org" }, 0 },
	{ "\"Doe, John\" <john@example.com>, jane@example.com",
	    { "john@example.com", "jane@example.com" }, 0 },
	{ "\"Alice\" <alice@example.com>,<bob@example.org>",
	    { "alice@example.com", "bob@example.org" }, 0 },
	{ "undisclosed-recipients:;", { NULL }, 0 },
	{ "friends: a@x.example, b@y.example; c@z.example",
	    { "a@x.example", "b@y.example", "c@z.example" }, 0 },
	{ "cc@example.com,\r\n\tDev Eloper <dev@example.com>",
	    { "cc@example.com", "dev@example.com" }, 0 },
	{ "root (Cron Daemon)", { "root" }, 0 },
	{ "a@x.example (comment, with (nested) comma), b@y.example",
	    { "a@x.example", "b@y.example" }, 0 },
	{ "<@relay.example:user@example.com>", { "user@example.com" }, 0 },
	{ "\"john doe\"@example.com", { "\"john doe\"@example.com" }, 0 },
	{ "  ", { NULL }, 0 },
	{ "a@x.example,,b@y.example", { "a@x.example", "b@y.example" }, 0 },
	{ "a@x.example, a@x.example", { "a@x.example" }, 0 },
	{ "Gr\xc3\xbc\xc3\x9f" "e <g@example.com>", { "g@example.com" }, 0 },
	{ "John Smith", { NULL }, 1 },
	{ "<unterminated@example.com", { NULL }, 1 },
	{ "\"open quote@example.com", { NULL }, 1 },
	{ "a@x.example (open comment", { NULL }, 1 },
	{ "-oQ/tmp@example.com", { NULL }, 1 },
};

static void
test_lists(void **state)
{
	size_t i, j;

	(void)state;
	for (i = 0; i < sizeof(list_cases) / sizeof(list_cases[0]); i++) {
		const struct list_case *c = &list_cases[i];
		struct addr_list l;
		char err[256];
		int rc;

		print_message("list: %s\n", c->in);
		addr_list_init(&l);
		rc = addr_list_parse(c->in, strlen(c->in), &l, err,
		    sizeof(err));
		if (c->fails) {
			assert_int_equal(rc, -1);
			assert_true(err[0] != '\0');
			addr_list_free(&l);
			continue;
		}
		assert_int_equal(rc, 0);
		for (j = 0; c->out[j] != NULL; j++) {
			assert_true(j < l.n);
			assert_string_equal(l.v[j], c->out[j]);
		}
		assert_int_equal(l.n, j);
		addr_list_free(&l);
	}
}

static void
test_safe(void **state)
{
	char err[128];

	(void)state;
	assert_int_equal(addr_check_safe("a@example.com", err, sizeof(err)),
	    0);
	assert_int_equal(addr_check_safe("a@example.com\r\nRCPT TO:<x@y>",
	    err, sizeof(err)), -1);
	assert_int_equal(addr_check_safe("a\n@example.com", err,
	    sizeof(err)), -1);
	assert_int_equal(addr_check_safe("-X/tmp/log", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "-"));
}

static void
test_shapes(void **state)
{
	(void)state;
	assert_true(addr_is_mailbox("user@example.com"));
	assert_true(addr_is_mailbox("first.last+tag@sub.example.co"));
	assert_true(addr_is_mailbox("user@[192.0.2.1]"));
	assert_false(addr_is_mailbox("user@"));
	assert_false(addr_is_mailbox("@example.com"));
	assert_false(addr_is_mailbox("a b@example.com"));
	assert_false(addr_is_mailbox("user@exa mple.com"));
	assert_false(addr_is_mailbox("user@.example.com"));
	assert_false(addr_is_mailbox("us..er@example.com"));
	assert_true(addr_is_local_name("root"));
	assert_false(addr_is_local_name("root@vm"));
	assert_false(addr_is_local_name("Sender Name"));
}

static void
test_display_names(void **state)
{
	static const char *const cases[][2] = {
		{ "root (Cron Daemon)", "Cron Daemon" },
		{ "\"Doe, John\" <john@example.com>", "Doe, John" },
		{ "Web App <app@example.com>", "Web App" },
		{ "  Gr\xc3\xbc\xc3\x9f" "e  <g@example.com>",
		    "Gr\xc3\xbc\xc3\x9f" "e" },
		{ "\"a \\\"q\\\" b\" <x@example.com>", "a \"q\" b" },
		{ "plain@example.com", "" },
		{ "<bare@example.com>", "" },
	};
	char out[128];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		addr_display_name(cases[i][0], strlen(cases[i][0]), out,
		    sizeof(out));
		assert_string_equal(out, cases[i][1]);
	}
}

/* The hash index of addr_list_add against a plain search, through
 * adds, duplicates and truncations (which take entries out of it). */
static void
test_dedup_index(void **state)
{
	struct addr_list l;
	char a[64];
	size_t i, j, round, n;
	unsigned seed = 12345;

	(void)state;
	addr_list_init(&l);
	for (round = 0; round < 200; round++) {
		for (i = 0; i < 150; i++) {
			seed = seed * 1103515245u + 12345u;
			(void)util_snprintf(a, sizeof(a), "u%u@example.com",
			    (seed >> 8) % 400);
			n = l.n;
			addr_list_add(&l, a);
			for (j = 0; j < n; j++)
				if (strcmp(l.v[j], a) == 0)
					break;
			/* Added exactly when it was not there. */
			assert_int_equal(l.n, j < n ? n : n + 1);
		}
		seed = seed * 1103515245u + 12345u;
		addr_list_truncate(&l, l.n / 2 + (seed >> 8) % (l.n / 2 + 1));
	}
	addr_list_free(&l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lists),
		cmocka_unit_test(test_dedup_index),
		cmocka_unit_test(test_safe),
		cmocka_unit_test(test_shapes),
		cmocka_unit_test(test_display_names),
	};

	return cmocka_run_group_tests_name("address", tests, NULL, NULL);
}
