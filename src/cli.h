/*
 * cli.h -- the sendmail command line, parsed without side effects.
 *
 * cli_parse() only classifies argv; it opens nothing and reads no
 * configuration, so it can run (and be fuzzed) before anything else.
 */
#ifndef RELAYQ_CLI_H
#define RELAYQ_CLI_H

#include <stddef.h>

enum cli_mode {
	CLI_SUBMIT,		/* -bm (default): message on stdin */
	CLI_SMTP,		/* -bs: SMTP dialogue on stdin/stdout */
	CLI_QUEUE_RUN,		/* -q: deliver what is queued, once */
	CLI_QUEUE_DAEMON,	/* -qINTERVAL: the queue runner daemon */
	CLI_QUEUE_LIST,		/* -bp, mailq, relayq queue list */
	CLI_QUEUE_RETRY,	/* relayq queue retry ID */
	CLI_QUEUE_REMOVE,	/* relayq queue remove ID */
	CLI_QUEUE_CHECK,	/* relayq queue check [--warn N] ... */
	CLI_CHECK,		/* relayq check [DOMAIN...] */
	CLI_DNS_RECORDS,	/* relayq dns-records [DOMAIN] */
	CLI_NEWALIASES,		/* newaliases, -bi, -I */
	CLI_VERSION		/* --version */
};

enum cli_delivery {
	CLI_DELIVERY_CONFIG,	/* [queue] delivery decides */
	CLI_DELIVERY_FOREGROUND, /* -odi */
	CLI_DELIVERY_BACKGROUND, /* -odb */
	CLI_DELIVERY_QUEUE	/* -odq, -odd */
};

struct cli_opts {
	enum cli_mode	  mode;
	enum cli_delivery delivery;
	int		  read_recipients;	/* -t */
	int		  dot_ends_input;	/* no -i / -oi */
	int		  verbose;		/* -v */
	const char	 *sender;		/* -f / -r, or NULL */
	const char	 *fullname;		/* -F, or NULL */
	const char	 *config_path;		/* -C, or NULL */
	unsigned long	  interval;		/* -qINTERVAL, seconds */
	const char	 *dsn_notify;		/* -N never|success,failure,delay */
	const char	 *dsn_ret;		/* -R full|hdrs */
	const char	 *dsn_envid;		/* -V envid */
	int		  body8bit;		/* -B 8BITMIME */
	int		  json;			/* queue list, check: --json */
	unsigned long	  caller_uid;		/* set by main: who called us */
	int		  no_dns;		/* check --no-dns */
	int		  no_relay;		/* check --no-relay */
	const char	 *queue_id;		/* queue retry|remove ID */
	unsigned long	  check_warn;		/* queue check --warn N */
	unsigned long	  check_crit;		/* --crit N */
	unsigned long	  check_age;		/* --age DURATION, seconds */
	char		**rcpts;		/* operands, may hold comma lists;
						   check's domains */
	size_t		  nrcpts;
	/* Options that were accepted and ignored, for the -v note. */
	const char	 *ignored[16];
	size_t		  nignored;
};

/*
 * Parses argv (argv[0] selects sendmail, mailq or newaliases mode;
 * invoked as relayq, "queue list|retry|remove" after the options are
 * sub-commands).
 * Returns 0, or -1 with a one-line reason in err for a usage error.
 * opts points into argv afterwards.
 */
int	cli_parse(int argc, char **argv, struct cli_opts *opts,
	    char *err, size_t errlen);

/* The one-line usage summary printed with a usage error. */
extern const char cli_usage[];

#endif
