/*
 * queuectl.c -- looking at and steering the queue.
 *
 * Listing reads entries without locking them, so it never waits for a
 * delivery in progress; what it shows may be a moment old.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "log.h"
#include "queuectl.h"
#include "spool.h"
#include "util.h"

static const char *const queuectl_status[] = { "pending", "done", "failed" };

static void
queuectl_json_entry(struct buf *b, const struct spool_entry *e,
    const char *queue)
{
	size_t i;

	buf_printf(b, "{\"id\":\"%s\",\"queue\":\"%s\",\"arrival\":%lld,"
	    "\"size\":%zu,\"sender\":", e->id, queue, e->arrival, e->data_len);
	buf_json_str(b, e->sender);
	buf_printf(b, ",\"attempts\":%lu,\"next_try\":%lld,\"last_reply\":",
	    e->attempts, e->next_try);
	buf_json_str(b, e->last);
	buf_puts(b, ",\"recipients\":[");
	for (i = 0; i < e->rcpts.n; i++) {
		buf_puts(b, i ? ",{\"address\":" : "{\"address\":");
		buf_json_str(b, e->rcpts.v[i]);
		buf_printf(b, ",\"status\":\"%s\",\"code\":%d,\"reply\":",
		    queuectl_status[e->rstate[i].status], e->rstate[i].code);
		buf_json_str(b, e->rstate[i].text);
		buf_puts(b, "}");
	}
	buf_puts(b, "]}");
}

static void
queuectl_age(char *buf, size_t len, long long secs)
{
	if (secs < 0)
		secs = 0;
	if (secs < 120)
		(void)util_snprintf(buf, len, "%llds", secs);
	else if (secs < 7200)
		(void)util_snprintf(buf, len, "%lldm", secs / 60);
	else if (secs < 172800)
		(void)util_snprintf(buf, len, "%lldh", secs / 3600);
	else
		(void)util_snprintf(buf, len, "%lldd", secs / 86400);
}

static void
queuectl_text_entry(struct buf *b, const struct spool_entry *e,
    const char *queue, long long now)
{
	char age[16], next[32];
	size_t i;

	queuectl_age(age, sizeof(age), now - e->arrival);
	if (strcmp(queue, "failed") == 0)
		(void)util_strlcpy(next, "failed", sizeof(next));
	else if (e->next_try <= now)
		(void)util_strlcpy(next, "now", sizeof(next));
	else {
		char in[16];

		queuectl_age(in, sizeof(in), e->next_try - now);
		(void)util_snprintf(next, sizeof(next), "in %s", in);
	}
	buf_printf(b, "%-20s %9zu %5s %8lu  %-8s <%s>\n", e->id, e->data_len,
	    age, e->attempts, next, e->sender);
	for (i = 0; i < e->rcpts.n; i++) {
		const struct spool_rcpt_state *rs = &e->rstate[i];

		buf_printf(b, "    <%s> %s%s%s%s\n", e->rcpts.v[i],
		    queuectl_status[rs->status], rs->text[0] ? " (" : "",
		    rs->text, rs->text[0] ? ")" : "");
	}
}

/* Root and the spool's owner see every message; others their own. */
static int
queuectl_everyone(const struct config *cfg)
{
	struct stat st;

	return getuid() == 0 || (stat(cfg->queue.dir, &st) == 0 &&
	    st.st_uid == getuid());
}

/* Files moved aside to corrupt/ (never sent): an admin should look. */
static size_t
queuectl_count_corrupt(struct spool *sp)
{
	char dir[4096];
	struct dirent *de;
	size_t n = 0;
	DIR *d;

	if (util_snprintf(dir, sizeof(dir), "%s/corrupt", sp->dir) == -1 ||
	    (d = opendir(dir)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	(void)closedir(d);
	return n;
}

/* Monitoring plugin exit codes (the Nagios plugin guidelines). */
enum { CHECK_OK, CHECK_WARNING, CHECK_CRITICAL, CHECK_UNKNOWN };

int
queuectl_check(struct config *cfg, unsigned long warn, unsigned long crit,
    unsigned long max_age)
{
	static const char *const names[] = { "OK", "WARNING", "CRITICAL",
		"UNKNOWN" };
	struct spool sp;
	struct spool_entry e;
	char err[1024], **ids, oldest_s[16], last_s[16], why[160] = "";
	long long now = util_now(), oldest = 0, last;
	size_t queued = 0, failed = 0, corrupt;
	int i, n, rc = CHECK_OK;

	if (spool_open(&sp, cfg->queue.dir, err, sizeof(err)) == -1 ||
	    (n = spool_list_dir(&sp, "queue", &ids, err, sizeof(err))) ==
	    -1) {
		(void)printf("RELAYQ UNKNOWN: cannot read the queue: %s\n", err);
		return CHECK_UNKNOWN;
	}
	for (i = 0; i < n; i++) {
		if (spool_entry_peek(&sp, "queue", ids[i], &e, err,
		    sizeof(err)) != SPOOL_OPEN_OK)
			continue;
		queued++;
		if (oldest == 0 || e.arrival < oldest)
			oldest = e.arrival;
		spool_entry_close(&e);
	}
	spool_free_ids(ids, n);
	if ((n = spool_list_dir(&sp, "failed", &ids, err, sizeof(err))) > 0) {
		failed = (size_t)n;
		spool_free_ids(ids, n);
	}
	corrupt = queuectl_count_corrupt(&sp);
	last = spool_last_sent(&sp);
	spool_close(&sp);
	oldest = oldest > 0 && now > oldest ? now - oldest : 0;
	queuectl_age(oldest_s, sizeof(oldest_s), oldest);
	if (last > 0)
		queuectl_age(last_s, sizeof(last_s), now > last ? now - last :
		    0);
	if (queued >= crit) {
		rc = CHECK_CRITICAL;
		(void)util_snprintf(why, sizeof(why), " (%lu or more)", crit);
	} else if (queued >= warn) {
		rc = CHECK_WARNING;
		(void)util_snprintf(why, sizeof(why), " (%lu or more)", warn);
	} else if (queued > 0 && (unsigned long long)oldest >= max_age) {
		rc = CHECK_WARNING;
		(void)util_snprintf(why, sizeof(why), " (the oldest is over "
		    "%lus old)", max_age);
	} else if (failed > 0) {
		rc = CHECK_WARNING;
		(void)util_snprintf(why, sizeof(why), " (messages in "
		    "failed/)");
	} else if (corrupt > 0) {
		rc = CHECK_WARNING;
		(void)util_snprintf(why, sizeof(why), " (files set aside in "
		    "corrupt/: see the log)");
	}
	(void)printf("RELAYQ %s: %zu queued, oldest %s, %zu failed, %zu "
	    "corrupt, last delivery %s%s%s | queued=%zu;%lu;%lu;0 "
	    "oldest=%llds;%lu;;0 failed=%zu;;;0 corrupt=%zu;;;0 "
	    "last_delivery=", names[rc], queued, queued > 0 ? oldest_s : "-",
	    failed, corrupt, last > 0 ? last_s : "never",
	    last > 0 ? " ago" : "", why, queued, warn, crit,
	    (long long)oldest, max_age, failed, corrupt);
	if (last > 0)
		(void)printf("%llds;;;0\n", now > last ? now - last : 0);
	else
		(void)printf("U;;;0\n");
	if (fflush(stdout) == EOF)
		return CHECK_UNKNOWN;
	return rc;
}

int
queuectl_list(struct config *cfg, int json)
{
	static const char *const dirs[] = { "queue", "failed" };
	struct spool sp;
	struct spool_entry e;
	struct buf out;
	char err[1024], **ids;
	long long now = util_now();
	size_t d, count[2] = { 0, 0 }, bytes = 0;
	int i, n, first = 1, everyone;

	if (spool_open(&sp, cfg->queue.dir, err, sizeof(err)) == -1) {
		log_user("%s", err);
		return EX_CANTCREAT;
	}
	everyone = queuectl_everyone(cfg);
	sp.hint_states = 1;	/* a listing may be a moment old anyway */
	buf_init(&out);
	if (json)
		buf_puts(&out, "[");
	else
		buf_printf(&out, "%-20s %9s %5s %8s  %-8s %s\n", "Queue ID",
		    "Size", "Age", "Attempts", "Next try", "Sender/Recipients");
	for (d = 0; d < 2; d++) {
		if ((n = spool_list_dir(&sp, dirs[d], &ids, err,
		    sizeof(err))) == -1) {
			log_user("%s", err);
			buf_free(&out);
			spool_close(&sp);
			return EX_TEMPFAIL;
		}
		for (i = 0; i < n; i++) {
			if (spool_entry_peek(&sp, dirs[d], ids[i], &e, err,
			    sizeof(err)) != SPOOL_OPEN_OK)
				continue;
			if (!everyone && e.uid != (unsigned long)getuid()) {
				spool_entry_close(&e);
				continue;
			}
			count[d]++;
			bytes += e.data_len;
			if (json) {
				if (!first)
					buf_puts(&out, ",");
				queuectl_json_entry(&out, &e, d == 0 ?
				    "queued" : "failed");
			} else
				queuectl_text_entry(&out, &e, dirs[d], now);
			first = 0;
			spool_entry_close(&e);
		}
		spool_free_ids(ids, n);
	}
	if (json)
		buf_puts(&out, "]\n");
	else {
		long long last = spool_last_sent(&sp);
		char ago[16];

		queuectl_age(ago, sizeof(ago), last > 0 && now > last ?
		    now - last : 0);
		size_t corrupt = queuectl_count_corrupt(&sp);

		buf_printf(&out, "-- %zu queued, %zu failed, %zu bytes; last "
		    "delivery %s%s\n", count[0], count[1], bytes,
		    last > 0 ? ago : "never", last > 0 ? " ago" : "");
		if (corrupt > 0)
			buf_printf(&out, "-- %zu file%s set aside in %s/corrupt "
			    "(never sent; the log says why)\n", corrupt,
			    corrupt == 1 ? "" : "s", cfg->queue.dir);
	}
	(void)fwrite(out.data, 1, out.len, stdout);
	buf_free(&out);
	spool_close(&sp);
	if (fflush(stdout) == EOF)
		return EX_IOERR;
	return 0;
}

/* Checks the id and opens the spool.  0, or an exit code. */
static int
queuectl_open(struct config *cfg, const char *id, struct spool *sp)
{
	char err[1024];

	if (!spool_is_id(id)) {
		log_user("%s: not a queue id", id);
		return EX_DATAERR;
	}
	if (spool_open(sp, cfg->queue.dir, err, sizeof(err)) == -1) {
		log_user("%s", err);
		return EX_CANTCREAT;
	}
	/* Like the listing: others may touch only their own messages. */
	if (!queuectl_everyone(cfg)) {
		struct spool_entry e;
		int mine = 0;

		if (spool_entry_peek(sp, "queue", id, &e, err, sizeof(err)) ==
		    SPOOL_OPEN_OK || spool_entry_peek(sp, "failed", id, &e,
		    err, sizeof(err)) == SPOOL_OPEN_OK) {
			mine = e.uid == (unsigned long)getuid();
			spool_entry_close(&e);
		}
		if (!mine) {
			log_user("%s: no such message of yours", id);
			spool_close(sp);
			return EX_NOPERM;
		}
	}
	return 0;
}

int
queuectl_retry(struct config *cfg, const char *id)
{
	struct spool sp;
	struct spool_entry e;
	char err[1024] = "";
	int rc;

	if ((rc = queuectl_open(cfg, id, &sp)) != 0)
		return rc;
	switch (spool_entry_open(&sp, id, &e, err, sizeof(err))) {
	case SPOOL_OPEN_OK:
		e.next_try = 0;
		if (spool_entry_save(&sp, &e, err, sizeof(err)) == -1) {
			log_user("%s", err);
			rc = EX_TEMPFAIL;
		} else
			log_user("%s: due now", id);
		spool_entry_close(&e);
		break;
	case SPOOL_OPEN_BUSY:
		log_user("%s is being delivered right now", id);
		break;
	case SPOOL_OPEN_GONE:
		if (spool_unfail(&sp, id, err, sizeof(err)) == -1) {
			if (errno == ENOENT)
				log_user("%s: no such message", id);
			else
				log_user("%s", err);
			rc = errno == ENOENT ? EX_DATAERR : EX_TEMPFAIL;
		} else
			log_user("%s: back in the queue", id);
		break;
	default:
		log_user("%s", err);
		rc = EX_TEMPFAIL;
		break;
	}
	spool_close(&sp);
	return rc;
}

int
queuectl_remove(struct config *cfg, const char *id)
{
	struct spool sp;
	char err[1024] = "";
	int rc;

	if ((rc = queuectl_open(cfg, id, &sp)) != 0)
		return rc;
	if (spool_remove(&sp, id, err, sizeof(err)) == -1) {
		log_user("%s", err);
		rc = errno == ENOENT ? EX_DATAERR : EX_TEMPFAIL;
	} else
		log_user("%s: removed", id);
	spool_close(&sp);
	return rc;
}
