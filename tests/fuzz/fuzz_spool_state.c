/*
 * fuzz_spool_state.c -- reading queue entries: a message file and its
 * state file, both hostile (a damaged disk, another program, a bug in
 * an older relayq), through spool_entry_peek / spool_entry_open, and
 * what the runner and mailq then do with an entry that was accepted.
 *
 * Input: one flag byte, then queue/ID; if the separator line
 * "%%state%%" follows, what comes after it is queue/ID.state.
 *   flags & 1      the files are in failed/ (relayq queue retry's
 *                  spool_unfail then moves them back)
 *   flags & 2      take the lock: spool_entry_open (queue/ only)
 *   flags & 4      relayq queue list [--json with flags & 8] as well
 *   flags & 16     DSNs for the failed recipients say "expired"
 *
 * Checked beyond "no crash", for an entry that was accepted:
 *   - its envelope is what the parser promises (safe addresses, at
 *     least one recipient, sizes adding up to the file);
 *   - the state it saves reads back the same (spool_entry_save is
 *     what the runner does after every attempt: if it wrote what it
 *     cannot read, the message would be quarantined);
 *   - a DSN about its failed recipients is queued and reads back;
 *   - from failed/, spool_unfail gives a queue entry that reads back.
 */
#define _GNU_SOURCE
#define FUZZ_FIXED_HOSTNAME
#include "fuzz.h"

#include <sys/stat.h>

#include "config.h"
#include "dsn.h"
#include "queuectl.h"
#include "spool.h"

#define FUZZ_ID		"0001a2b3c4d5e6f7a8b9"
#define FUZZ_SEP	"\n%%state%%\n"

static struct config *cfg;
static char spooldir[4096];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = fuzz_tmpdir();
	char path[4096], text[8192], err[1024];

	(void)argc;
	(void)argv;
	(void)snprintf(spooldir, sizeof(spooldir), "%s/spool", dir);
	(void)snprintf(path, sizeof(path), "%s/relayq.ini", dir);
	(void)snprintf(text, sizeof(text),
	    "[relay]\nhost = 127.0.0.1\ntls = none\n"
	    "[queue]\ndir = %s\ndelivery = queue\n"
	    "[sender]\ndomain = example.org\n"
	    "[aliases]\nroot = admin@example.com\n", spooldir);
	fuzz_write_file(path, text, strlen(text));
	if ((cfg = config_load(path, 0, err, sizeof(err))) == NULL) {
		(void)fprintf(stderr, "fuzz harness: %s\n", err);
		abort();
	}
	fuzz_devnull(1);	/* queue list prints there */
	return 0;
}

static void
put(const char *sub, const char *suffix, const void *data, size_t n)
{
	char path[8192];

	(void)snprintf(path, sizeof(path), "%s/%s/%s%s", spooldir, sub,
	    FUZZ_ID, suffix);
	fuzz_write_file(path, data, n);
}

static void
check_entry(const struct spool_entry *e, off_t fsize)
{
	char err[256];
	size_t i;

	FUZZ_ASSERT(e->sender != NULL);
	FUZZ_ASSERT(e->sender[0] == '\0' || addr_check_safe(e->sender, err,
	    sizeof(err)) == 0);
	FUZZ_ASSERT(e->rcpts.n >= 1 && e->rstate != NULL);
	for (i = 0; i < e->rcpts.n; i++) {
		FUZZ_ASSERT(addr_check_safe(e->rcpts.v[i], err, sizeof(err)) ==
		    0);
		FUZZ_ASSERT(e->rstate[i].status <= SPOOL_RCPT_FAILED);
		FUZZ_ASSERT(e->rstate[i].code >= 0 && e->rstate[i].code <= 999);
		FUZZ_ASSERT(memchr(e->rstate[i].text, '\0',
		    sizeof(e->rstate[i].text)) != NULL);
	}
	FUZZ_ASSERT(memchr(e->last, '\0', sizeof(e->last)) != NULL);
	if (fsize >= 0)
		FUZZ_ASSERT(e->data_off + (off_t)e->data_len + 4 == fsize);
}

/* Saves e's state and reads the entry back: it must be the same. */
static void
check_save(struct spool *sp, const struct spool_entry *e)
{
	struct spool_entry e2;
	char err[1024];
	size_t i;

	FUZZ_ASSERT(spool_entry_save(sp, (struct spool_entry *)e, err,
	    sizeof(err)) == 0);
	FUZZ_ASSERT(spool_entry_peek(sp, "queue", e->id, &e2, err,
	    sizeof(err)) == SPOOL_OPEN_OK);
	FUZZ_ASSERT(e2.attempts == e->attempts);
	FUZZ_ASSERT(e2.next_try == e->next_try);
	FUZZ_ASSERT(strcmp(e2.last, e->last) == 0);
	FUZZ_ASSERT(e2.rcpts.n == e->rcpts.n);
	for (i = 0; i < e->rcpts.n; i++) {
		const struct spool_rcpt_state *a = &e->rstate[i],
		    *b = &e2.rstate[i];

		/* A pending recipient never tried is not written. */
		if (a->status == SPOOL_RCPT_PENDING && a->code == 0)
			continue;
		FUZZ_ASSERT(a->status == b->status && a->code == b->code);
		FUZZ_ASSERT(strcmp(a->text, b->text) == 0);
		FUZZ_ASSERT(a->reported == b->reported);
		FUZZ_ASSERT(a->at_rcpt == b->at_rcpt);
	}
	FUZZ_ASSERT((e->dkim == NULL) == (e2.dkim == NULL));
	FUZZ_ASSERT(e->dkim == NULL || strcmp(e->dkim, e2.dkim) == 0);
	spool_entry_close(&e2);
}

static void
check_dsn(struct spool *sp, const struct spool_entry *e, int expired)
{
	struct spool_entry d;
	char *marked, id[SPOOL_ID_LEN + 1], err[1024];
	size_t i, n = 0;

	if (e->sender[0] == '\0')
		return;		/* never a DSN for a DSN */
	marked = calloc(e->rcpts.n, 1);
	FUZZ_ASSERT(marked != NULL);
	for (i = 0; i < e->rcpts.n; i++)
		if (e->rstate[i].status == SPOOL_RCPT_FAILED) {
			marked[i] = 1;
			n++;
		}
	if (n > 0) {
		FUZZ_ASSERT(dsn_queue(cfg, sp, e, marked, expired, id, err,
		    sizeof(err)) == 0);
		FUZZ_ASSERT(spool_entry_peek(sp, "queue", id, &d, err,
		    sizeof(err)) == SPOOL_OPEN_OK);
		FUZZ_ASSERT(d.sender[0] == '\0' && d.rcpts.n == 1);
		spool_entry_close(&d);
	}
	free(marked);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *dir, *sep;
	struct spool sp;
	struct spool_entry e;
	struct stat st;
	char err[1024], path[8192];
	enum spool_open_result r;
	unsigned flags;

	if (size == 0 || size > 64 * 1024)
		return 0;
	flags = data[0];
	data++;
	size--;
	dir = flags & 1 ? "failed" : "queue";

	fuzz_rmtree(spooldir);
	if (spool_open(&sp, spooldir, err, sizeof(err)) == -1)
		fuzz_die(err);
	sep = memmem(data, size, FUZZ_SEP, strlen(FUZZ_SEP));
	if (sep != NULL) {
		size_t n = (size_t)(sep - (const char *)data) + 1;

		put(dir, "", data, n);	/* with the separator's LF */
		put(dir, ".state", data + n - 1 + strlen(FUZZ_SEP),
		    size - (n - 1) - strlen(FUZZ_SEP));
	} else
		put(dir, "", data, size);
	(void)snprintf(path, sizeof(path), "%s/%s/%s", spooldir, dir,
	    FUZZ_ID);
	if (stat(path, &st) == -1)
		fuzz_die(path);

	err[0] = '\0';
	if ((flags & 2) && !(flags & 1))
		r = spool_entry_open(&sp, FUZZ_ID, &e, err, sizeof(err));
	else
		r = spool_entry_peek(&sp, dir, FUZZ_ID, &e, err, sizeof(err));
	FUZZ_ASSERT(r == SPOOL_OPEN_OK || r == SPOOL_OPEN_BAD);
	if (r == SPOOL_OPEN_BAD)
		FUZZ_ASSERT(err[0] != '\0');
	if (r == SPOOL_OPEN_OK) {
		check_entry(&e, st.st_size);
		if (flags & 4)
			(void)queuectl_list(cfg, (flags & 8) != 0);
		check_dsn(&sp, &e, (flags & 16) != 0);
		if (flags & 1) {
			struct spool_entry q;

			spool_entry_close(&e);
			FUZZ_ASSERT(spool_unfail(&sp, FUZZ_ID, err,
			    sizeof(err)) == 0);
			FUZZ_ASSERT(spool_entry_peek(&sp, "queue", FUZZ_ID, &q,
			    err, sizeof(err)) == SPOOL_OPEN_OK);
			check_entry(&q, st.st_size);
			spool_entry_close(&q);
		} else {
			check_save(&sp, &e);
			spool_entry_close(&e);
		}
	} else if (flags & 4)
		(void)queuectl_list(cfg, (flags & 8) != 0);
	spool_close(&sp);
	return 0;
}
