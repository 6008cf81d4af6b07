/*
 * queuectl.h -- looking at and steering the queue: mailq / -bp,
 * relayq queue list [--json], retry ID, remove ID.
 */
#ifndef RELAYQ_QUEUECTL_H
#define RELAYQ_QUEUECTL_H

struct config;

/* Prints queued and failed messages (JSON: one array).  Exit code. */
int	queuectl_list(struct config *, int json);
/* Makes a queued message due now, or requeues a failed one.  Exit code. */
int	queuectl_retry(struct config *, const char *id);
/* Deletes a queued or failed message.  Exit code. */
int	queuectl_remove(struct config *, const char *id);

#endif
