/*
 * main.c -- process set-up, who may do what, and dispatch; the only place
 * that exits.
 *
 * Before anything else: descriptors 0, 1 and 2 are made to exist (so no
 * file we open becomes someone's stdout), the umask is made strict,
 * SIGPIPE is ignored (libESMTP writes to sockets without MSG_NOSIGNAL)
 * and so is SIGXFSZ (a file size limit is a write error, not death).
 *
 * Installed set-group-ID (relayq.8, INSTALL), a run is privileged: the
 * environment is emptied and inherited descriptors above 2 are closed.
 * A caller who can read the configuration then gives the group up and
 * works directly; anyone else may only submit, into the maildrop
 * (maildrop.h).  Root works as the owner of the spool, so that every
 * queue file belongs to the one service user.
 */
#include <sys/resource.h>
#include <sys/syscall.h>

#include <errno.h>
#include <grp.h>
#include <pwd.h>
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
#include "maildrop.h"
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
	(void)signal(SIGXFSZ, SIG_IGN);
}

/* Nothing the caller left open reaches a privileged run. */
static void
main_close_inherited(void)
{
	struct rlimit rl;
	int fd, max = 1024;

#ifdef SYS_close_range
	if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0)
		return;
#endif
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < 65536)
		max = (int)rl.rlim_cur;
	for (fd = 3; fd < max; fd++)
		(void)close(fd);
}

/*
 * Root works as the spool's owner (the service user), so that the queue
 * never holds files the runner would take for foreign ones.  0, or -1.
 */
static int
main_become_spool_owner(const struct config *cfg)
{
	struct passwd *pw;
	struct stat st;
	gid_t gid;

	if (getuid() != 0 || geteuid() != 0 || stat(cfg->queue.dir, &st) ==
	    -1 || st.st_uid == 0)
		return 0;
	pw = getpwuid(st.st_uid);
	gid = pw != NULL ? pw->pw_gid : st.st_gid;
	if (setgroups(0, NULL) == -1 || setgid(gid) == -1 ||
	    setuid(st.st_uid) == -1 || getuid() != st.st_uid)
		return -1;
	return 0;
}

/*
 * Set-ID runs must not let the caller pick the configuration.  Root
 * gains nothing from the set-group-ID bit (a container's root often runs
 * the packaged binary), so root's own environment is trusted.
 */
static int
main_privileged(void)
{
	return getuid() != 0 && (getuid() != geteuid() ||
	    getgid() != getegid());
}

/*
 * A set-group-ID run.  A caller who may read the configuration and write
 * the queue (root, the service user) gives the group up and works
 * directly; anyone else may only submit, into the maildrop of the
 * configured spool if they can read the file, else of the built-in one.
 * 0 with *out set, or an exit status.
 */
static int
main_privileged_config(const struct cli_opts *o, struct config **out)
{
	struct config *cfg = NULL;
	char err[1024], path[4096];
	int trusted = 0;

	if (access(CONFIG_DEFAULT_PATH, R_OK) == 0) {
		if ((cfg = config_load(NULL, 0, err, sizeof(err))) == NULL) {
			(void)fprintf(stderr, "relayq: %s\n", err);
			return EX_CONFIG;
		}
		/* access(2) asks with the real IDs: the caller's rights. */
		trusted = getuid() == 0 || (util_snprintf(path, sizeof(path),
		    "%s/queue", cfg->queue.dir) == 0 &&
		    access(path, W_OK | X_OK) == 0);
	} else if (errno != EACCES && errno != ENOENT) {
		(void)fprintf(stderr, "relayq: %s: %s\n", CONFIG_DEFAULT_PATH,
		    strerror(errno));
		return EX_CONFIG;
	}
	if (trusted) {
		if (maildrop_drop_group() == -1) {
			(void)fprintf(stderr, "relayq: cannot drop privileges: "
			    "%s\n", strerror(errno));
			config_free(cfg);
			return EX_OSERR;
		}
		*out = cfg;
		return 0;
	}
	if (o->mode != CLI_SUBMIT && o->mode != CLI_SMTP) {
		(void)fprintf(stderr, "relayq: permission denied: only root and "
		    "the relayq service user may use the queue or the relay "
		    "this way\n");
		config_free(cfg);
		return EX_NOPERM;
	}
	if (cfg == NULL)
		cfg = config_defaults();
	cfg->drop = 1;
	cfg->queue.delivery = CONFIG_DELIVERY_QUEUE;
	*out = cfg;
	return 0;
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
	/* Root works as the spool's owner: remember who called. */
	opts.caller_uid = (unsigned long)getuid();
	privileged = main_privileged();
	if (privileged)
		main_close_inherited();
	if (privileged && opts.config_path != NULL) {
		/* Another configuration means giving up the set-ID group:
		 * the caller is then just themselves, environment and all. */
		if (maildrop_drop_group() == -1) {
			(void)fprintf(stderr, "relayq: cannot drop privileges: "
			    "%s\n", strerror(errno));
			return EX_OSERR;
		}
		privileged = 0;
	} else if (privileged && clearenv() != 0)
		return EX_OSERR;
	else if (!privileged && getegid() != getgid() &&
	    maildrop_drop_group() == -1) {
		/* Root: the submission group is no use to it. */
		(void)fprintf(stderr, "relayq: cannot drop privileges: %s\n",
		    strerror(errno));
		return EX_OSERR;
	}
	for (i = 0; i < opts.nignored; i++)
		log_debug("ignoring option %s", opts.ignored[i]);

	if (privileged) {
		if ((rc = main_privileged_config(&opts, &cfg)) != 0)
			return rc;
	} else if ((cfg = config_load(opts.config_path, 1, err,
	    sizeof(err))) == NULL) {
		(void)fprintf(stderr, "relayq: %s\n", err);
		return EX_CONFIG;
	}
	if (!cfg->drop && main_become_spool_owner(cfg) == -1) {
		(void)fprintf(stderr, "relayq: cannot become the owner of %s: "
		    "%s\n", cfg->queue.dir, strerror(errno));
		config_free(cfg);
		return EX_OSERR;
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
	case CLI_QUEUE_CHECK:
		rc = queuectl_check(cfg, opts.check_warn, opts.check_crit,
		    opts.check_age);
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
