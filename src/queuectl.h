/*
 * queuectl.h -- looking at and steering the queue: mailq / -bp,
 * relayq queue list [--json], retry ID, remove ID.
 */
#ifndef RELAYQ_QUEUECTL_H
#define RELAYQ_QUEUECTL_H

struct config;

/* Prints queued and failed messages (JSON: one array).  Exit code. */
int	queuectl_list(struct config *, int json);
/*
 * relayq queue check: a monitoring plugin.  One status line with
 * perfdata; exit 0 OK, 1 WARNING (warn or more queued, the oldest older
 * than age seconds, or anything in failed/), 2 CRITICAL (crit or more
 * queued), 3 UNKNOWN (the queue cannot be read).
 */
int	queuectl_check(struct config *, unsigned long warn, unsigned long crit,
	    unsigned long age);
/* Makes a queued message due now, or requeues a failed one.  Exit code. */
int	queuectl_retry(struct config *, const char *id);
/* Deletes a queued or failed message.  Exit code. */
int	queuectl_remove(struct config *, const char *id);

#endif
