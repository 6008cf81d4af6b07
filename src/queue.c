/*
 * queue.c -- the queue runner: the one process that talks to the relay.
 *
 * Each message is also locked while it is worked on, so a submitter
 * that still holds its new message, and a runner, never both send it.
 * Damaged or foreign files are moved to corrupt/ with a log line, never
 * sent.  The daemon holds the runner lock for good and wakes through
 * inotify when a message is linked into queue/.
 */
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "deliver.h"
#include "log.h"
#include "maildrop.h"
#include "queue.h"
#include "spool.h"
#include "util.h"

static void
runner_progress(struct runner *r)
{
	long long ms = util_monotonic_ms() - r->started_ms;

	if (!r->progress)
		return;
	(void)fprintf(stderr, "\rrelayq: sent %zu, left %zu, %.1f msg/s   ",
	    r->sent, (size_t)(r->nids - r->next) + r->nfresh - r->fresh_next,
	    ms > 0 ? (double)r->sent * 1000.0 / (double)ms : 0.0);
}

static int
runner_pace_wait(void *arg)
{
	struct runner *r = arg;

	return ratelimit_wait(&r->rl);
}

static void
runner_pace_sent(void *arg)
{
	struct runner *r = arg;

	ratelimit_sent(&r->rl);
	r->sent++;
	runner_progress(r);
}

/* 421/451/454 with 4.7.x: the relay asks us to slow down, right now. */
static void
runner_pace_note(void *arg, const char *reply)
{
	struct runner *r = arg;

	if (strncmp(reply, "421 4.7.", 8) == 0 ||
	    strncmp(reply, "451 4.7.", 8) == 0 ||
	    strncmp(reply, "454 4.7.", 8) == 0) {
		ratelimit_throttle(&r->rl);
		log_warnx("relay %s asks to slow down (%s); pausing",
		    r->cfg->relay.host, reply);
	} else if (reply[0] == '2')
		ratelimit_ok(&r->rl);
}

int
runner_acquire(struct runner *r, struct config *cfg, struct spool *sp,
    int block, int verbose, volatile sig_atomic_t *stop, char *err,
    size_t errlen)
{
	char path[4096];
	int rc;

	memset(r, 0, sizeof(*r));
	r->cfg = cfg;
	r->sp = sp;
	r->lockfd = -1;
	r->ifd = -1;
	r->verbose = verbose;
	r->stop = stop;
	r->progress = verbose && isatty(2);
	r->started_ms = util_monotonic_ms();
	for (;;) {
		rc = spool_lock_runner(sp, &r->lockfd, err, errlen);
		if (rc != 0 || !block)
			break;
		if (stop != NULL && *stop)
			return 0;
		(void)poll(NULL, 0, 200);
	}
	if (rc != 1)
		return rc;
	ratelimit_open(&r->rl, sp->dir, cfg->queue.rate, stop);
	/* New messages while we run: no rescans of the whole queue. */
	if (util_snprintf(path, sizeof(path), "%s/queue", sp->dir) == 0 &&
	    (r->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) != -1 &&
	    inotify_add_watch(r->ifd, path, IN_CREATE | IN_MOVED_TO) == -1) {
		(void)close(r->ifd);
		r->ifd = -1;
	}
	r->drop_wd = -1;
	if (r->ifd != -1 && util_snprintf(path, sizeof(path), "%s/%s",
	    sp->dir, MAILDROP_SUBDIR) == 0)
		/* A finished maildrop file is made readable: IN_ATTRIB. */
		r->drop_wd = inotify_add_watch(r->ifd, path, IN_ATTRIB |
		    IN_MOVED_TO | IN_CLOSE_WRITE);
	if (r->ifd == -1)
		r->overflow = 1;	/* so every pass lists the queue */
	return 1;
}

void
runner_release(struct runner *r)
{
	if (r->lockfd == -1)
		return;
	if (r->progress && r->sent > 0)
		(void)fputc('\n', stderr);
	ratelimit_close(&r->rl);
	if (r->ifd != -1)
		(void)close(r->ifd);
	r->ifd = -1;
	(void)close(r->lockfd);
	r->lockfd = -1;
}

static int
runner_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* 1 if id was listed or already taken from inotify in this pass. */
static int
runner_seen(struct runner *r, const char *id)
{
	size_t i;

	if (r->nids > 0 && bsearch(&id, r->ids, (size_t)r->nids,
	    sizeof(*r->ids), runner_cmp) != NULL)
		return 1;
	for (i = 0; i < r->nfresh; i++)
		if (strcmp(r->fresh[i], id) == 0)
			return 1;
	return 0;
}

/* Collects the names inotify reports, in arrival order. */
static void
runner_read_inotify(struct runner *r)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;
	char *p;

	if (r->ifd == -1)
		return;
	while ((n = read(r->ifd, buf, sizeof(buf))) > 0) {
		for (p = buf; p < buf + n; ) {
			struct inotify_event *ev = (struct inotify_event *)
			    (void *)p;

			if (ev->mask & IN_Q_OVERFLOW)
				r->overflow = 1;
			else if (ev->wd == r->drop_wd)
				r->drop_pending = 1;
			else if (ev->len > 0 && spool_is_id(ev->name) &&
			    !runner_seen(r, ev->name)) {
				r->fresh = xreallocarray(r->fresh,
				    r->nfresh + 1, sizeof(*r->fresh));
				r->fresh[r->nfresh++] = xstrdup(ev->name);
			}
			p += sizeof(*ev) + ev->len;
		}
	}
}

/* 1 if some recipient of e is still to be tried. */
static int
runner_has_pending(const struct spool_entry *e)
{
	size_t i;

	for (i = 0; i < e->rcpts.n; i++)
		if (e->rstate[i].status == SPOOL_RCPT_PENDING)
			return 1;
	return 0;
}

/* A message with nothing pending left over from a crash. */
static int
runner_nothing_pending(const struct spool_entry *e)
{
	size_t i;

	for (i = 0; i < e->rcpts.n; i++)
		if (e->rstate[i].status == SPOOL_RCPT_PENDING)
			return 0;
	return 1;
}

/*
 * The next message to send in this pass, opened and locked: from the
 * listing, then from what inotify reported since.  NULL: none left.
 */
static struct spool_entry *
runner_next(struct runner *r, int in_session)
{
	struct spool_entry *e = xmalloc(sizeof(*e));
	char err[1024];
	const char *id;

	for (;;) {
		if (r->stop != NULL && *r->stop)
			break;
		if (r->next < r->nids)
			id = r->ids[r->next++];
		else {
			if (r->fresh_next == r->nfresh)
				runner_read_inotify(r);
			if (r->fresh_next < r->nfresh)
				id = r->fresh[r->fresh_next++];
			else if (!in_session && r->later_next < r->nlater)
				id = r->later[r->later_next++];
			else
				break;
		}
		switch (spool_entry_open(r->sp, id, e, err, sizeof(err))) {
		case SPOOL_OPEN_OK:
			break;
		case SPOOL_OPEN_BUSY:
			r->busy = 1;	/* its submitter still has it */
			continue;
		case SPOOL_OPEN_BAD:
			log_warnx("%s: %s; moved to corrupt/", id, err);
			(void)spool_quarantine(r->sp, id);
			continue;
		default:
			continue;
		}
		/* A retry further off than retry_max allows means the clock
		 * went back: it is due now, not in a day. */
		if (e->next_try > r->now + (long long)r->cfg->queue.retry_max)
			e->next_try = r->now;
		if (!r->flush && e->next_try > r->now) {
			if (r->next_due == 0 || e->next_try < r->next_due)
				r->next_due = e->next_try;
		} else if (deliver_expired(r->cfg, e, r->now))
			deliver_expire(r->cfg, r->sp, e);
		else if (runner_nothing_pending(e))
			deliver_finish(r->cfg, r->sp, e);
		else if (in_session && config_account_for(r->cfg, e->sender) !=
		    r->account) {
			/* Another account: a session of its own, later. */
			r->later = xreallocarray(r->later, r->nlater + 1,
			    sizeof(*r->later));
			r->later[r->nlater++] = xstrdup(e->id);
		} else
			return e;
		spool_entry_close(e);
	}
	free(e);
	return NULL;
}

/* deliver's "more" hook: tops the open session up to session_max. */
static struct spool_entry *
runner_more(void *arg)
{
	struct runner *r = arg;
	struct spool_entry *e;

	if (r->drop_pending) {
		r->drop_pending = 0;
		(void)maildrop_pickup(r->cfg, r->sp);
	}
	if (r->nopen >= r->cfg->queue.session_max ||
	    (e = runner_next(r, 1)) == NULL)
		return NULL;
	r->idle_since = 0;	/* a new idle period after this one */
	r->open = xreallocarray(r->open, r->nopen + 1, sizeof(*r->open));
	r->open[r->nopen++] = e;
	return e;
}

/*
 * deliver's "idle" hook: the session has sent everything.  The daemon
 * keeps the connection open for up to [queue] idle and wakes when mail
 * is spooled, so the next message costs no new TLS handshake and AUTH.
 * 1: look for new mail now; 0: close the connection.
 */
static int
runner_idle(void *arg)
{
	struct runner *r = arg;
	struct pollfd pfd;
	long long deadline;
	int rc;

	if (!r->daemon || r->cfg->queue.idle == 0 || r->ifd == -1 ||
	    r->nopen >= r->cfg->queue.session_max ||
	    r->later_next < r->nlater || r->overflow)
		return 0;
	if (r->idle_since == 0)
		r->idle_since = util_monotonic_ms();
	deadline = r->idle_since + (long long)r->cfg->queue.idle * 1000;
	pfd.fd = r->ifd;
	pfd.events = POLLIN;
	for (;;) {
		long long left = deadline - util_monotonic_ms();

		if ((r->stop != NULL && *r->stop) || left <= 0)
			return 0;
		rc = poll(&pfd, 1, (int)(left > 1000 ? 1000 : left));
		if (rc > 0)
			return 1;
		if (rc == -1 && errno != EINTR)
			return 0;
	}
}

void
runner_deliver(struct runner *r, struct spool_entry **entries, size_t n,
    const struct spool_entry *foreground, struct deliver_result *res)
{
	struct relay_pacer pacer = { runner_pace_wait, runner_pace_sent,
	    runner_pace_note, NULL, NULL, NULL, r };
	struct deliver_opts opts = { r->verbose, &pacer, foreground, NULL,
	    NULL, NULL };

	deliver_entries(r->cfg, r->sp, entries, n, &opts, res);
}

#define RUNNER_RECONNECTS 3
#define RUNNER_TMP_STALE (24 * 3600)	/* an unfinished tmp/ file */

/*
 * One session starting with first and topped up from the queue.  When
 * the connection ends early (421, a drop) the messages it never reached
 * go again on a new connection, a few times.  Everything handed out is
 * closed here.  Returns 1 if the relay was unusable (the pass stops).
 */
static int
runner_session(struct runner *r, struct spool_entry *first)
{
	struct relay_pacer pacer = { runner_pace_wait, runner_pace_sent,
	    runner_pace_note, NULL, NULL, NULL, r };
	struct deliver_opts opts = { r->verbose, &pacer, NULL, runner_more,
	    r, runner_idle };
	struct deliver_result res;
	size_t i, k;
	int tries, unusable = 0;

	r->open = xreallocarray(r->open, 1, sizeof(*r->open));
	r->open[0] = first;
	r->nopen = 1;
	r->account = config_account_for(r->cfg, first->sender);
	for (tries = 0; r->nopen > 0; tries++) {
		size_t n = r->nopen;

		deliver_entries(r->cfg, r->sp, r->open, n, &opts, &res);
		unusable = res.session.interrupted ||
		    res.session.failure == RELAY_FAIL_CONNECT ||
		    res.session.failure == RELAY_FAIL_TLS ||
		    res.session.failure == RELAY_FAIL_AUTH;
		/* Keep the untouched ones at the front, close the rest. */
		for (i = k = 0; i < r->nopen; i++) {
			struct spool_entry *e = r->open[i];

			if (!unusable && !e->tried &&
			    tries < RUNNER_RECONNECTS) {
				r->open[k++] = e;
				continue;
			}
			/* Deferred now: the daemon wakes for its retry.  Never
			 * tried: its inotify event is spent, so look again. */
			if (e->tried && e->next_try > 0 && (r->next_due == 0 ||
			    e->next_try < r->next_due) && runner_has_pending(e))
				r->next_due = e->next_try;
			if (!e->tried && !unusable)
				r->busy = 1;
			spool_entry_close(e);
			free(r->open[i]);
		}
		r->nopen = k;
		if (k > 0)
			log_info("relay %s ended the session early; "
			    "reconnecting for %zu message%s",
			    r->cfg->relay.host, k, k == 1 ? "" : "s");
	}
	return unusable;
}

int
runner_pass(struct runner *r, int flush, int only_new, long long *next_due)
{
	struct spool_entry *e;
	char err[1024];

	r->flush = flush;
	r->now = util_now();
	r->next_due = 0;
	r->busy = 0;
	r->ids = NULL;
	r->nids = r->next = 0;
	/* A spool that cannot record a delivery must not be sent from:
	 * every pass would send the same messages again. */
	if (spool_writable(r->sp, err, sizeof(err)) == -1) {
		if (!r->warned_ro)
			log_warnx("%s; nothing is sent until it is writable",
			    err);
		r->warned_ro = 1;
		return 0;
	}
	r->warned_ro = 0;
	if (!only_new)
		spool_purge_tmp(r->sp, RUNNER_TMP_STALE);
	/* Submissions of callers without access come in first; what they
	 * add to queue/ is then seen like any new message. */
	runner_read_inotify(r);
	if (!only_new || r->overflow || r->drop_pending) {
		r->drop_pending = 0;
		(void)maildrop_pickup(r->cfg, r->sp);
	}
	if (!only_new || r->overflow) {
		/* Drop stale events: the listing covers them. */
		runner_read_inotify(r);
		spool_free_ids(r->fresh, (int)r->nfresh);
		r->fresh = NULL;
		r->nfresh = r->fresh_next = 0;
		r->overflow = r->ifd == -1;
		if ((r->nids = spool_list(r->sp, &r->ids, err,
		    sizeof(err))) == -1) {
			log_warnx("%s", err);
			r->nids = 0;
		}
	}
	while ((e = runner_next(r, 0)) != NULL)
		if (runner_session(r, e))
			break;
	spool_free_ids(r->later, (int)r->nlater);
	r->later = NULL;
	r->nlater = r->later_next = 0;
	*next_due = r->next_due;
	spool_free_ids(r->ids, r->nids);
	r->ids = NULL;
	r->nids = r->next = 0;
	/* Names not reached yet stay for the next pass. */
	if (r->fresh_next == r->nfresh) {
		spool_free_ids(r->fresh, (int)r->nfresh);
		r->fresh = NULL;
		r->nfresh = r->fresh_next = 0;
	}
	free(r->open);
	r->open = NULL;
	r->nopen = 0;
	return r->busy;
}

int
runner_has_due(struct runner *r)
{
	struct spool_entry e;
	char err[512], **ids;
	long long now = util_now();
	int i, n, due = 0;

	if (maildrop_waiting(r->sp))
		return 1;
	if ((n = spool_list(r->sp, &ids, err, sizeof(err))) == -1)
		return 0;
	for (i = 0; i < n && !due; i++) {
		if (spool_entry_peek(r->sp, "queue", ids[i], &e, err,
		    sizeof(err)) != SPOOL_OPEN_OK)
			continue;
		due = e.next_try <= now;
		spool_entry_close(&e);
	}
	spool_free_ids(ids, n);
	return due;
}

int
queue_run(struct config *cfg, int verbose)
{
	struct spool sp;
	struct runner r;
	char err[1024];
	long long next_due;
	int rc, tries;

	if (spool_open(&sp, cfg->queue.dir, err, sizeof(err)) == -1) {
		log_user("%s", err);
		return EX_CANTCREAT;
	}
	rc = runner_acquire(&r, cfg, &sp, 0, verbose, NULL, err, sizeof(err));
	if (rc != 1) {
		spool_close(&sp);
		if (rc == 0) {
			log_debug("another queue runner is active");
			return 0;
		}
		log_user("%s", err);
		return EX_TEMPFAIL;
	}
	/* A message still held by its submitter is worth a short wait. */
	for (tries = 0; runner_pass(&r, 1, 0, &next_due) && tries < 20;
	    tries++)
		(void)poll(NULL, 0, 50);
	runner_release(&r);
	spool_close(&sp);
	return 0;
}

static volatile sig_atomic_t queue_stop;

static void
queue_on_signal(int sig)
{
	(void)sig;
	queue_stop = 1;
}

int
queue_daemon(struct config *cfg, unsigned long interval, int verbose)
{
	struct sigaction sa;
	struct spool sp;
	struct runner r;
	struct pollfd pfd;
	char err[1024];
	long long next_due, wait_ms, now, full_at = 0;
	int busy = 0, rc, full;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = queue_on_signal;	/* no SA_RESTART */
	(void)sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGTERM, &sa, NULL);
	(void)sigaction(SIGINT, &sa, NULL);
	(void)sigaction(SIGHUP, &sa, NULL);
	if (spool_open(&sp, cfg->queue.dir, err, sizeof(err)) == -1) {
		log_user("%s", err);
		return EX_CANTCREAT;
	}
	rc = runner_acquire(&r, cfg, &sp, 1, verbose, &queue_stop, err,
	    sizeof(err));
	if (rc == -1) {
		log_user("%s", err);
		spool_close(&sp);
		return EX_TEMPFAIL;
	}
	if (rc == 1) {
		char drop[4096];
		struct stat st;

		r.daemon = 1;
		/* Callers who may not read the configuration drop their
		 * mail into the built-in spool. */
		if (strcmp(cfg->queue.dir, SPOOLDIR) != 0 &&
		    util_snprintf(drop, sizeof(drop), "%s/%s", SPOOLDIR,
		    MAILDROP_SUBDIR) == 0 && stat(drop, &st) == 0)
			log_warnx("%s exists, but this runner takes in only "
			    "%s/%s: set-group-ID submissions of users who "
			    "cannot read the configuration are not picked up",
			    drop, cfg->queue.dir, MAILDROP_SUBDIR);
		log_info("queue runner started: %s, every %lus, rate %u/s",
		    sp.dir, interval, cfg->queue.rate);
	}
	while (rc == 1 && !queue_stop) {
		/* The whole queue on schedule; in between only new mail. */
		now = util_monotonic_ms();
		full = now >= full_at || busy;
		busy = runner_pass(&r, 0, !full, &next_due);
		if (full)
			full_at = util_monotonic_ms() + (long long)interval * 1000;
		if (queue_stop)
			break;
		now = util_now();
		wait_ms = full_at - util_monotonic_ms();
		if (next_due > 0 && (next_due - now) * 1000 < wait_ms) {
			/* A retry is due before the next full pass. */
			full_at = util_monotonic_ms() + (next_due > now ?
			    (next_due - now) * 1000 : 0);
			wait_ms = full_at - util_monotonic_ms();
		}
		if (busy)
			wait_ms = 50;	/* its submitter lets go soon */
		if (wait_ms < 0)
			wait_ms = 0;
		pfd.fd = r.ifd;
		pfd.events = POLLIN;
		(void)poll(&pfd, r.ifd != -1 ? 1 : 0, (int)(wait_ms > 86400000 ?
		    86400000 : wait_ms));
	}
	if (rc == 1) {
		log_info("queue runner stopping");
		runner_release(&r);
	}
	spool_close(&sp);
	return 0;
}
