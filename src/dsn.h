/*
 * dsn.h -- delivery status notifications (RFC 3464) for refused or
 * expired recipients, queued as ordinary messages with the null sender.
 */
#ifndef RELAYQ_DSN_H
#define RELAYQ_DSN_H

#include <stddef.h>

struct config;
struct spool;
struct spool_entry;

/*
 * Where a DSN about e goes: its envelope sender, except when that is the
 * [sender] address that local senders were rewritten to (nobody reads
 * it): then [aliases] root, else [aliases] default, else the sender.
 */
const char *dsn_recipient(const struct config *, const struct spool_entry *e);

/*
 * Queues one DSN (to dsn_recipient()) about the recipients i with marked[i] set
 * (failed ones; their state text is the diagnostic).  expired says the
 * queue lifetime ran out (Status 4.4.7).  Never for a null sender: the
 * caller checks.  Returns 0 with the new queue id in id, or -1 with err.
 */
int	dsn_queue(const struct config *, struct spool *,
	    const struct spool_entry *e, const char *marked, int expired,
	    char *id, char *err, size_t errlen);

#endif
