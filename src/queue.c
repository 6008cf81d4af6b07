/*
 * queue.c -- the queue runner: deliver what is queued.
 *
 * The runner lock (flock on <dir>/lock) keeps runners apart; each
 * message is also locked while it is worked on, so a foreground
 * submitter and a runner never send the same message.  Damaged or
 * foreign files are moved to corrupt/ with a log line, never sent.
 */
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "config.h"
#include "deliver.h"
#include "log.h"
#include "queue.h"
#include "spool.h"
#include "util.h"

static void
queue_flush_batch(struct config *cfg, struct spool *sp,
    struct spool_entry **batch, size_t *n, int verbose)
{
	struct deliver_result res;
	size_t i;

	if (*n == 0)
		return;
	deliver_entries(cfg, sp, batch, *n, verbose, &res);
	for (i = 0; i < *n; i++) {
		spool_entry_close(batch[i]);
		free(batch[i]);
	}
	*n = 0;
}

int
queue_run(struct config *cfg, int verbose)
{
	struct spool sp;
	struct spool_entry *batch[QUEUE_BATCH];
	char err[1024], **ids = NULL;
	size_t nbatch = 0;
	int i, n, lockfd = -1, rc;

	if (spool_open(&sp, cfg->queue.dir, err, sizeof(err)) == -1) {
		log_user("%s", err);
		return EX_CANTCREAT;
	}
	if ((rc = spool_lock_runner(&sp, &lockfd, err, sizeof(err))) != 1) {
		spool_close(&sp);
		if (rc == 0) {
			log_debug("another queue runner is active");
			return 0;
		}
		log_user("%s", err);
		return EX_TEMPFAIL;
	}
	if ((n = spool_list(&sp, &ids, err, sizeof(err))) == -1) {
		log_user("%s", err);
		(void)close(lockfd);
		spool_close(&sp);
		return EX_TEMPFAIL;
	}
	for (i = 0; i < n; i++) {
		struct spool_entry *e = xmalloc(sizeof(*e));

		switch (spool_entry_open(&sp, ids[i], e, err, sizeof(err))) {
		case SPOOL_OPEN_OK:
			batch[nbatch++] = e;
			if (nbatch == QUEUE_BATCH)
				queue_flush_batch(cfg, &sp, batch, &nbatch,
				    verbose);
			continue;
		case SPOOL_OPEN_BAD:
			log_warnx("%s: %s; moved to corrupt/", ids[i], err);
			(void)spool_quarantine(&sp, ids[i]);
			break;
		case SPOOL_OPEN_ERROR:
			log_warnx("%s: %s", ids[i], err);
			break;
		case SPOOL_OPEN_BUSY:
		case SPOOL_OPEN_GONE:
			break;
		}
		free(e);
	}
	queue_flush_batch(cfg, &sp, batch, &nbatch, verbose);
	spool_free_ids(ids, n);
	(void)close(lockfd);
	spool_close(&sp);
	return 0;
}
