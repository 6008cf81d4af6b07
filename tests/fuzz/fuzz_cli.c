/*
 * fuzz_cli.c -- cli_parse() on an argv split from the input.
 *
 * Input: the first byte picks argv[0] (sendmail, relayq, mailq,
 * newaliases, with or without a directory); the rest are the words,
 * separated by NUL bytes.  Every word is its own exact-size allocation
 * so that reading past one is caught.
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include "cli.h"

#define FUZZ_MAXARGS	64

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = { "sendmail", "relayq", "mailq",
		"newaliases", "/usr/sbin/sendmail", "/usr/sbin/relayq",
		"/usr/bin/mailq", "/usr/bin/newaliases" };
	char *argv[FUZZ_MAXARGS + 1], err[512];
	struct cli_opts o;
	size_t i, start;
	int argc = 0, rc;
	volatile size_t sink = 0;

	if (size == 0)
		return 0;
	argv[argc++] = fuzz_strndup((const uint8_t *)names[data[0] % 8],
	    strlen(names[data[0] % 8]));
	data++;
	size--;
	for (start = 0, i = 0; i <= size && argc < FUZZ_MAXARGS; i++) {
		if (i == size || data[i] == '\0') {
			if (i == size && i == start && argc > 1)
				break;	/* no empty word after a final NUL */
			argv[argc++] = fuzz_strndup(data + start, i - start);
			start = i + 1;
		}
	}
	argv[argc] = NULL;

	err[0] = '\0';
	rc = cli_parse(argc, argv, &o, err, sizeof(err));
	if (rc == 0) {
		/* Everything it returns points into argv: touch it all. */
		const char *const s[] = { o.sender, o.fullname,
			o.config_path, o.dsn_notify, o.dsn_ret, o.dsn_envid,
			o.queue_id };

		for (i = 0; i < sizeof(s) / sizeof(s[0]); i++)
			if (s[i] != NULL)
				sink += strlen(s[i]);
		for (i = 0; i < o.nrcpts; i++)
			sink += strlen(o.rcpts[i]);
		FUZZ_ASSERT(o.nignored <= sizeof(o.ignored) /
		    sizeof(o.ignored[0]));
		for (i = 0; i < o.nignored; i++)
			sink += strlen(o.ignored[i]);
	} else {
		/* A usage error always says why. */
		FUZZ_ASSERT(rc == -1);
		FUZZ_ASSERT(err[0] != '\0');
		FUZZ_ASSERT(memchr(err, '\0', sizeof(err)) != NULL);
	}
	(void)sink;
	for (i = 0; i < (size_t)argc; i++)
		free(argv[i]);
	return 0;
}
