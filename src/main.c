/*
 * main.c -- process set-up and dispatch; the only place that exits.
 *
 * Before anything else: descriptors 0, 1 and 2 are made to exist (so no
 * file we open becomes someone's stdout), the umask is made strict, and
 * SIGPIPE is ignored (libESMTP writes to sockets without MSG_NOSIGNAL).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "check.h"
#include "cli.h"
#include "config.h"
#include "dialogue.h"
#include "log.h"
#include "queue.h"
#include "queuectl.h"
#include "submit.h"
#include "util.h"

#ifndef RELAYQ_VERSION
#define RELAYQ_VERSION "0.1.0"
#endif

static void
main_sanitize_process(void)
{
	struct stat st;
	int fd;

	for (fd = 0; fd < 3; fd++) {
		if (fstat(fd, &st) == -1 && errno == EBADF) {
			int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);

			if (n == -1)
				exit(EX_OSERR);
			if (n != fd)
				exit(EX_OSERR);
		}
	}
	(void)umask(077);
	(void)signal(SIGPIPE, SIG_IGN);
}

/* Set-ID runs must not let the caller pick the configuration. */
static int
main_privileged(void)
{
	return getuid() != geteuid() || getgid() != getegid();
}

int
main(int argc, char **argv)
{
	struct cli_opts opts;
	struct config *cfg;
	char err[1024];
	size_t i;
	int rc, privileged;

	main_sanitize_process();
	if (argc < 1 || argv[0] == NULL) {
		(void)fprintf(stderr, "relayq: refusing an empty argument "
		    "vector\n");
		return EX_USAGE;
	}
	if (cli_parse(argc, argv, &opts, err, sizeof(err)) == -1) {
		(void)fprintf(stderr, "relayq: %s\n%s\n", err, cli_usage);
		return EX_USAGE;
	}
	log_set_verbose(opts.verbose);
	switch (opts.mode) {
	case CLI_VERSION:
		(void)printf("relayq %s\n", RELAYQ_VERSION);
		return 0;
	case CLI_NEWALIASES:
		(void)printf("relayq keeps no alias database: aliases live in "
		    "the [aliases] section of %s\n(see relayq.ini(5)); there "
		    "is nothing to rebuild\n", CONFIG_DEFAULT_PATH);
		return 0;
	default:
		break;
	}
	privileged = main_privileged();
	if (privileged && opts.config_path != NULL) {
		/* Another configuration means giving up the set-ID group. */
		if (setgid(getgid()) == -1 || setuid(getuid()) == -1) {
			(void)fprintf(stderr, "relayq: cannot drop privileges: "
			    "%s\n", strerror(errno));
			return EX_OSERR;
		}
		privileged = 0;
	}
	for (i = 0; i < opts.nignored; i++)
		log_debug("ignoring option %s", opts.ignored[i]);

	if ((cfg = config_load(opts.config_path, !privileged, err,
	    sizeof(err))) == NULL) {
		(void)fprintf(stderr, "relayq: %s\n", err);
		return EX_CONFIG;
	}
	log_init(cfg->log.target);
	switch (opts.mode) {
	case CLI_QUEUE_RUN:
		rc = queue_run(cfg, opts.verbose);
		break;
	case CLI_QUEUE_DAEMON:
		rc = queue_daemon(cfg, opts.interval, opts.verbose);
		break;
	case CLI_QUEUE_LIST:
		rc = queuectl_list(cfg, opts.json);
		break;
	case CLI_QUEUE_RETRY:
		rc = queuectl_retry(cfg, opts.queue_id);
		break;
	case CLI_QUEUE_REMOVE:
		rc = queuectl_remove(cfg, opts.queue_id);
		break;
	case CLI_SMTP:
		rc = dialogue_main(cfg, &opts);
		break;
	case CLI_CHECK:
		rc = check_main(cfg, &opts);
		break;
	case CLI_DNS_RECORDS:
		rc = check_dns_records(cfg, &opts);
		break;
	default:
		rc = submit_main(cfg, &opts);
		break;
	}
	config_free(cfg);
	return rc;
}
