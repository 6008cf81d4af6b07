/*
 * queue.h -- the queue runner: deliver what is queued.
 */
#ifndef RELAYQ_QUEUE_H
#define RELAYQ_QUEUE_H

struct config;

#define QUEUE_BATCH 100		/* messages per SMTP session */

/*
 * Delivers every queued message (-q: retry times are ignored), in
 * sessions of up to QUEUE_BATCH messages.  Only one runner works on a
 * spool at a time; a second one returns at once.  Returns an exit code.
 */
int	queue_run(struct config *, int verbose);

#endif
