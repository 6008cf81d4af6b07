/*
 * deliver.h -- what the relay's answers mean for queued messages.
 *
 * deliver_entries() sends locked spool entries in one relay session and
 * applies the outcome: per recipient 2xx done, 5xx failed, anything else
 * pending; a message with no pending recipient leaves the queue (removed
 * when all were delivered, else moved to failed/); otherwise its state
 * is saved with the next retry time.  Each recipient's outcome is logged.
 */
#ifndef RELAYQ_DELIVER_H
#define RELAYQ_DELIVER_H

#include <stddef.h>

#include "relay.h"
#include "spool.h"

struct config;

struct deliver_result {
	struct relay_session	session;
	size_t			rcpts_done;	/* in this attempt */
	size_t			rcpts_failed;
	size_t			rcpts_pending;
	size_t			rcpts_refused_at_rcpt;
};

/* Retry delay after the given number of attempts, in seconds. */
unsigned long deliver_backoff(unsigned long attempts);

/*
 * Delivers the pending recipients of entries[0..n).  The password must
 * be loadable; if it is not, everything stays queued.  Never fails as a
 * whole: problems end up in the log, the state files and *res.
 */
void	deliver_entries(struct config *, struct spool *,
	    struct spool_entry **entries, size_t n, int verbose,
	    struct deliver_result *res);

#endif
