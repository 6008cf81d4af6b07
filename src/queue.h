/*
 * queue.h -- the queue runner: the one process that talks to the relay.
 *
 * Exactly one runner per spool (flock on <dir>/lock).  Whoever holds it
 * delivers: `relayq -q', the -qINTERVAL daemon, or a foreground submitter
 * that found no runner.  Everyone else leaves their message in the queue
 * for it.  So the rate limit, kept in the spool, holds across processes.
 */
#ifndef RELAYQ_QUEUE_H
#define RELAYQ_QUEUE_H

#include <signal.h>
#include <stddef.h>

#include "deliver.h"
#include "ratelimit.h"

struct config;
struct spool;
struct spool_entry;

struct runner {
	struct config		*cfg;
	struct spool		*sp;
	int			 lockfd;
	int			 ifd;		/* inotify on queue/, or -1 */
	int			 drop_wd;	/* its watch on maildrop/ */
	int			 drop_pending;	/* maildrop/ changed */
	int			 daemon;	/* -qINTERVAL: may keep sessions idle */
	int			 warned_ro;	/* said the spool is read-only */
	long long		 idle_since;	/* the session idles since (ms) */
	struct ratelimit	 rl;
	int			 verbose;
	int			 progress;	/* a tty progress line */
	volatile sig_atomic_t	*stop;
	size_t			 sent;		/* for the progress line */
	long long		 started_ms;
	/* The pass in progress. */
	int			 flush;
	long long		 now;
	long long		 next_due;
	int			 busy;
	int			 overflow;	/* inotify lost events */
	char			**ids;		/* the listing, sorted */
	int			 nids;
	int			 next;
	char			**fresh;	/* spooled since, from inotify */
	size_t			 nfresh;
	size_t			 fresh_next;
	struct spool_entry	**open;		/* handed to the session */
	size_t			 nopen;
	/* The session's account ([account DOMAIN], or NULL for [relay]);
	 * messages for another account wait for a later session. */
	const struct config_account *account;
	char			**later;
	size_t			 nlater;
	size_t			 later_next;
};

/*
 * Takes the runner lock (waiting for it when block is set, until *stop).
 * Returns 1 taken, 0 busy (or stopped), -1 error with err.
 */
int	runner_acquire(struct runner *, struct config *, struct spool *,
	    int block, int verbose, volatile sig_atomic_t *stop,
	    char *err, size_t errlen);
void	runner_release(struct runner *);

/* Delivers locked entries in one session, paced (they stay open). */
void	runner_deliver(struct runner *, struct spool_entry **, size_t n,
	    const struct spool_entry *foreground, struct deliver_result *);

/*
 * One pass over the queue: every due message (with flush: every message)
 * and whatever is spooled meanwhile, the session topped up as messages
 * finish, up to [queue] session_max per session.  With only_new, just the
 * messages spooled since the last pass (the daemon, woken by inotify).
 * Stops early when the relay cannot be used (connect, TLS or AUTH
 * failure: the whole queue waits).  *next_due gets the earliest retry
 * time of what was not due (0: none).  Returns 1 if some message was
 * busy (still locked by its submitter), else 0.
 */
int	runner_pass(struct runner *, int flush, int only_new,
	    long long *next_due);

/* 1 if something in queue/ is due now. */
int	runner_has_due(struct runner *);

/* relayq -q: one pass with flush; returns an exit code. */
int	queue_run(struct config *, int verbose);
/* relayq -qINTERVAL: the daemon; returns an exit code on SIGTERM. */
int	queue_daemon(struct config *, unsigned long interval, int verbose);

#endif
