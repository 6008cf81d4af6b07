/*
 * cli.c -- the sendmail command line, parsed without side effects.
 *
 * Sendmail's options are not getopt(3)-shaped: -o and -b take the next
 * letters as their argument, -B, -f, -F, -r, -C, -N, -R, -V and -O take a
 * value attached or in the next word, and callers combine them freely
 * (cron: "-FCronDaemon -i -B8BITMIME -oem root").  Parsing stops at "--"
 * or at the first operand; operands are recipients.
 */
#include <string.h>

#include "cli.h"
#include "util.h"

const char cli_usage[] =
    "usage: relayq [-tiUv] [-B type] [-C file] [-F name] [-f sender] "
    "[-N dsn] [-R ret] [-V envid] [-bm | -bs | -bp | -bi] "
    "[-odi | -odb | -odq] [-oX...] [-q[interval]] [--] [recipient ...]\n"
    "       relayq [-C file] queue list [--json] | retry ID | remove ID\n"
    "       relayq [-C file] queue check [--warn N] [--crit N] "
    "[--age DURATION]\n"
    "       relayq [-C file] check [--json] [--no-dns] [--no-relay] "
    "[DOMAIN ...]\n"
    "       relayq [-C file] dns-records [DOMAIN]";

static const char *
cli_basename(const char *p)
{
	const char *s = strrchr(p, '/');

	return s != NULL ? s + 1 : p;
}

static void
cli_note_ignored(struct cli_opts *o, const char *arg)
{
	if (o->nignored < UTIL_ARRAYLEN(o->ignored))
		o->ignored[o->nignored++] = arg;
}

/*
 * Takes the value of an option letter: the rest of the word if there is
 * one, else the next word.  Returns NULL if there is none.
 */
static const char *
cli_value(int argc, char **argv, int *i, const char *rest)
{
	if (*rest != '\0')
		return rest;
	if (*i + 1 >= argc)
		return NULL;
	return argv[++*i];
}

/* -oX: the letters after -o. */
static int
cli_parse_o(struct cli_opts *o, const char *arg, char *err, size_t errlen)
{
	const char *v = arg + 2;

	switch (v[0]) {
	case 'i':
		if (v[1] == '\0') {
			o->dot_ends_input = 0;
			return 0;
		}
		break;
	case 'd':
		/* -odX: delivery mode. */
		if (v[1] == 'i' && v[2] == '\0') {
			o->delivery = CLI_DELIVERY_FOREGROUND;
			return 0;
		}
		if (v[1] == 'b' && v[2] == '\0') {
			o->delivery = CLI_DELIVERY_BACKGROUND;
			return 0;
		}
		if ((v[1] == 'q' || v[1] == 'd') && v[2] == '\0') {
			o->delivery = CLI_DELIVERY_QUEUE;
			return 0;
		}
		(void)util_snprintf(err, errlen,
		    "unknown delivery mode in %s (use -odi, -odb or -odq)",
		    arg);
		return -1;
	case '\0':
		(void)util_snprintf(err, errlen, "option -o needs a letter");
		return -1;
	default:
		break;
	}
	/* -oem, -oep, -oQ..., -oA... and every other legacy option. */
	cli_note_ignored(o, arg);
	return 0;
}

/* -N: "never", or a comma list of success, failure and delay. */
static int
cli_check_notify(const char *v)
{
	const char *p = v;
	size_t n;

	if (util_strcaseeq(v, "never"))
		return 0;
	while (*p != '\0') {
		n = strcspn(p, ",");
		if (!((n == 7 && util_strncaseeq(p, "success", 7)) ||
		    (n == 7 && util_strncaseeq(p, "failure", 7)) ||
		    (n == 5 && util_strncaseeq(p, "delay", 5))))
			return -1;
		p += n;
		if (*p == ',')
			p++;
	}
	return p == v ? -1 : 0;
}

/* -V: an ENVID is printable ASCII without spaces (RFC 3461 4.4). */
static int
cli_check_envid(const char *v)
{
	size_t n = strlen(v), i;

	if (n == 0 || n > 100)
		return -1;
	for (i = 0; i < n; i++)
		if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
			return -1;
	return 0;
}

/* relayq queue list [--json] | retry ID | remove ID */
static int
cli_parse_queue(struct cli_opts *o, char *err, size_t errlen)
{
	const char *verb = o->nrcpts > 1 ? o->rcpts[1] : "list";
	size_t nargs = o->nrcpts > 2 ? o->nrcpts - 2 : 0;
	char *const *args = o->rcpts + 2;

	o->nrcpts = 0;
	if (strcmp(verb, "list") == 0) {
		o->mode = CLI_QUEUE_LIST;
		if (nargs == 1 && strcmp(args[0], "--json") == 0)
			o->json = 1;
		else if (nargs != 0)
			goto usage;
		return 0;
	}
	if (strcmp(verb, "check") == 0) {
		size_t i;

		o->mode = CLI_QUEUE_CHECK;
		o->check_warn = 100;
		o->check_crit = 1000;
		o->check_age = 3600;
		for (i = 0; i < nargs; i += 2) {
			const char *v = i + 1 < nargs ? args[i + 1] : NULL;
			int bad;

			if (v == NULL)
				goto usage;
			if (strcmp(args[i], "--warn") == 0)
				bad = util_parse_ulong(v, 1, 100000000,
				    &o->check_warn);
			else if (strcmp(args[i], "--crit") == 0)
				bad = util_parse_ulong(v, 1, 100000000,
				    &o->check_crit);
			else if (strcmp(args[i], "--age") == 0)
				bad = util_parse_duration(v, &o->check_age);
			else
				goto usage;
			if (bad == -1)
				goto usage;
		}
		return 0;
	}
	if ((strcmp(verb, "retry") == 0 || strcmp(verb, "remove") == 0) &&
	    nargs == 1) {
		o->mode = verb[2] == 't' ? CLI_QUEUE_RETRY : CLI_QUEUE_REMOVE;
		o->queue_id = args[0];
		return 0;
	}
usage:
	(void)util_snprintf(err, errlen, "usage: relayq queue list [--json] | "
	    "retry ID | remove ID | check [--warn N] [--crit N] "
	    "[--age DURATION]");
	return -1;
}

/* relayq check [--json] [--no-dns] [--no-relay] [DOMAIN...] and
 * relayq dns-records [DOMAIN]: options first, then domains. */
static int
cli_parse_check(struct cli_opts *o, char *err, size_t errlen)
{
	int check = strcmp(o->rcpts[0], "check") == 0;
	size_t i = 1;

	o->mode = check ? CLI_CHECK : CLI_DNS_RECORDS;
	for (; check && i < o->nrcpts && o->rcpts[i][0] == '-'; i++) {
		if (strcmp(o->rcpts[i], "--json") == 0)
			o->json = 1;
		else if (strcmp(o->rcpts[i], "--no-dns") == 0)
			o->no_dns = 1;
		else if (strcmp(o->rcpts[i], "--no-relay") == 0)
			o->no_relay = 1;
		else
			goto usage;
	}
	o->rcpts += i;
	o->nrcpts -= i;
	for (i = 0; i < o->nrcpts; i++)
		if (o->rcpts[i][0] == '-' || o->rcpts[i][0] == '\0')
			goto usage;
	if (!check && o->nrcpts > 1)
		goto usage;
	return 0;
usage:
	(void)util_snprintf(err, errlen, check ? "usage: relayq check [--json] "
	    "[--no-dns] [--no-relay] [DOMAIN ...]" :
	    "usage: relayq dns-records [DOMAIN]");
	return -1;
}

int
cli_parse(int argc, char **argv, struct cli_opts *o, char *err, size_t errlen)
{
	const char *prog;
	int i;

	memset(o, 0, sizeof(*o));
	o->mode = CLI_SUBMIT;
	o->dot_ends_input = 1;
	if (argc < 1 || argv[0] == NULL) {
		(void)util_snprintf(err, errlen, "empty argument vector");
		return -1;
	}
	prog = cli_basename(argv[0]);
	if (strcmp(prog, "newaliases") == 0)
		o->mode = CLI_NEWALIASES;
	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		o->mode = CLI_VERSION;
		return 0;
	}

	for (i = 1; i < argc; i++) {
		const char *arg = argv[i], *p, *v;

		if (strcmp(arg, "--") == 0) {
			i++;
			break;
		}
		if (arg[0] != '-' || arg[1] == '\0')
			break;
		/* A word of option letters, e.g. "-ti". */
		for (p = arg + 1; *p != '\0'; p++) {
			switch (*p) {
			case 't':
				o->read_recipients = 1;
				continue;
			case 'i':
				o->dot_ends_input = 0;
				continue;
			case 'v':
				o->verbose = 1;
				continue;
			case 'U':	/* initial user submission */
			case 'G':	/* gateway submission */
			case 'm':	/* "me too": we never expand aliases */
			case 'n':	/* no aliasing */
				cli_note_ignored(o, arg);
				continue;
			case 'I':
				o->mode = CLI_NEWALIASES;
				continue;
			case 'o':
				if (p != arg + 1)
					goto unknown;
				if (cli_parse_o(o, arg, err, errlen) == -1)
					return -1;
				break;
			case 'b':
				if (p != arg + 1)
					goto unknown;
				if (strcmp(arg, "-bm") == 0)
					o->mode = CLI_SUBMIT;
				else if (strcmp(arg, "-bs") == 0)
					o->mode = CLI_SMTP;
				else if (strcmp(arg, "-bi") == 0)
					o->mode = CLI_NEWALIASES;
				else if (strcmp(arg, "-bp") == 0)
					o->mode = CLI_QUEUE_LIST;
				else {
					(void)util_snprintf(err, errlen,
					    "unsupported mode %s", arg);
					return -1;
				}
				break;
			case 'q':
				if (p != arg + 1)
					goto unknown;
				if (p[1] == '\0') {
					o->mode = CLI_QUEUE_RUN;
					break;
				}
				/* -q1m: a daemon waking every minute. */
				if (util_parse_duration(p + 1, &o->interval) ==
				    -1 || o->interval < 1 ||
				    o->interval > 86400) {
					(void)util_snprintf(err, errlen,
					    "bad queue interval in %s (e.g. "
					    "-q30s, -q1m, -q1h)", arg);
					return -1;
				}
				o->mode = CLI_QUEUE_DAEMON;
				break;
			case 'f':
			case 'r':
			case 'F':
			case 'C':
			case 'B':
			case 'N':
			case 'R':
			case 'V':
			case 'O':
			case 'h':
				if ((v = cli_value(argc, argv, &i, p + 1)) == NULL) {
					(void)util_snprintf(err, errlen,
					    "option -%c needs a value", *p);
					return -1;
				}
				if (*p == 'f' || *p == 'r')
					o->sender = v;	/* the last one wins */
				else if (*p == 'F')
					o->fullname = v;
				else if (*p == 'C')
					o->config_path = v;
				else if (*p == 'B') {
					if (util_strcaseeq(v, "8BITMIME"))
						o->body8bit = 1;
					else if (util_strcaseeq(v, "7BIT"))
						o->body8bit = 0;
					else {
						(void)util_snprintf(err, errlen,
						    "unknown body type -B %s", v);
						return -1;
					}
				} else if (*p == 'N') {
					if (cli_check_notify(v) == -1) {
						(void)util_snprintf(err, errlen,
						    "-N takes never, or a list of "
						    "success, failure and delay");
						return -1;
					}
					o->dsn_notify = v;
				} else if (*p == 'R') {
					if (!util_strcaseeq(v, "full") &&
					    !util_strcaseeq(v, "hdrs")) {
						(void)util_snprintf(err, errlen,
						    "-R takes full or hdrs");
						return -1;
					}
					o->dsn_ret = v;
				} else if (*p == 'V') {
					if (cli_check_envid(v) == -1) {
						(void)util_snprintf(err, errlen,
						    "-V takes up to 100 printable "
						    "characters");
						return -1;
					}
					o->dsn_envid = v;
				} else
					cli_note_ignored(o, arg);
				break;
			default:
				goto unknown;
			}
			break;	/* the option consumed the rest of the word */
		}
		continue;
unknown:
		(void)util_snprintf(err, errlen, "unknown option -%c in %s",
		    *p, arg);
		return -1;
	}
	o->rcpts = argv + i;
	o->nrcpts = (size_t)(argc - i);
	if (strcmp(prog, "mailq") == 0)
		o->mode = CLI_QUEUE_LIST;
	if (strcmp(prog, "relayq") == 0 && o->mode == CLI_SUBMIT &&
	    o->nrcpts > 0 && strcmp(o->rcpts[0], "queue") == 0)
		return cli_parse_queue(o, err, errlen);
	if (strcmp(prog, "relayq") == 0 && o->mode == CLI_SUBMIT &&
	    o->nrcpts > 0 && (strcmp(o->rcpts[0], "check") == 0 ||
	    strcmp(o->rcpts[0], "dns-records") == 0))
		return cli_parse_check(o, err, errlen);
	return 0;
}
