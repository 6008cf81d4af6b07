/*
 * deliver.h -- what the relay's answers mean for queued messages.
 *
 * deliver_entries() sends locked spool entries in one relay session and
 * applies the outcome: per recipient 2xx done, 5xx failed, anything else
 * pending.  Newly failed recipients get one DSN (dsn.c) unless the
 * sender is null or the caller is told directly.  A message with nothing
 * pending leaves the queue (removed when everything was delivered, else
 * moved to failed/); otherwise its state is saved with the next retry
 * time, or it expires once it is older than [queue] lifetime and has had
 * [queue] min_attempts attempts.  One log line per attempt and outcome.
 */
#ifndef RELAYQ_DELIVER_H
#define RELAYQ_DELIVER_H

#include <stddef.h>

#include "relay.h"
#include "spool.h"

struct config;

struct deliver_opts {
	int			 verbose;
	/* wait, sent and note hooks (its feed is not used), or NULL */
	const struct relay_pacer *pacer;
	/* The caller waits for this entry's outcome and is told by the
	 * exit status, so refusing it for everyone needs no DSN. */
	const struct spool_entry *foreground;
	/* More locked entries for the open session, or NULL; the caller
	 * keeps and later closes what it hands out. */
	struct spool_entry	*(*more)(void *arg);
	void			*more_arg;
	/* With more: the session has nothing to send; may wait for new
	 * mail on the open connection (relay_pacer's idle), or NULL. */
	int			(*idle)(void *arg);
};

struct deliver_result {
	struct relay_session	session;
	size_t			rcpts_done;	/* in this attempt */
	size_t			rcpts_failed;
	size_t			rcpts_pending;
	size_t			rcpts_refused_at_rcpt;
	size_t			dsns;		/* DSNs queued */
	size_t			untouched;	/* never reached MAIL */
};

/* Retry delay after the given number of attempts, in seconds. */
unsigned long deliver_backoff(const struct config *, unsigned long attempts);

/* 1 if e has outlived the queue lifetime (and had enough attempts). */
int	deliver_expired(const struct config *, const struct spool_entry *,
	    long long now);

/* Fails the pending recipients of an expired entry: DSN, failed/. */
void	deliver_expire(struct config *, struct spool *, struct spool_entry *);
/* Settles an entry with nothing pending (left by a crash): DSN, move. */
void	deliver_finish(struct config *, struct spool *, struct spool_entry *);

/*
 * Delivers the pending recipients of entries[0..n), and of whatever
 * opts->more hands out while the session is open, in one session.  The
 * password must be loadable; if it is not, everything stays queued.
 * Never fails as a whole: problems end up in the log, the state files
 * and *res.  An entry the session never reached keeps tried == 0.
 */
void	deliver_entries(struct config *, struct spool *,
	    struct spool_entry **entries, size_t n,
	    const struct deliver_opts *, struct deliver_result *res);

#endif
