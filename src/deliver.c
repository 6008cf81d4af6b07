/*
 * deliver.c -- what the relay's answers mean for queued messages.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "deliver.h"
#include "dkim.h"
#include "dsn.h"
#include "log.h"
#include "util.h"

unsigned long
deliver_backoff(const struct config *cfg, unsigned long attempts)
{
	unsigned long d = cfg->queue.retry_min;

	while (attempts-- > 1 && d < cfg->queue.retry_max)
		d *= 2;
	return d < cfg->queue.retry_max ? d : cfg->queue.retry_max;
}

int
deliver_expired(const struct config *cfg, const struct spool_entry *e,
    long long now)
{
	/* Wall-clock age, but never before enough real attempts: a clock
	 * jumping forward must not bounce a whole queue. */
	return now - e->arrival >= (long long)cfg->queue.lifetime &&
	    e->attempts >= cfg->queue.min_attempts;
}

/*
 * One log line per attempt and outcome: recipients that got the same
 * answer share a line.  tried[i] marks the recipients of this attempt.
 */
static void
deliver_log(const struct config *cfg, const struct spool_entry *e,
    char *tried, long long now)
{
	static const char *const names[] = { "deferred", "sent", "failed" };
	struct buf to;
	size_t i, j;

	buf_init(&to);
	for (i = 0; i < e->rcpts.n; i++) {
		const struct spool_rcpt_state *ri = &e->rstate[i];

		if (!tried[i])
			continue;
		buf_reset(&to);
		for (j = i; j < e->rcpts.n; j++) {
			const struct spool_rcpt_state *rj = &e->rstate[j];

			if (!tried[j] || rj->status != ri->status ||
			    strcmp(rj->text, ri->text) != 0)
				continue;
			buf_printf(&to, "%s<%s>", to.len ? "," : "",
			    e->rcpts.v[j]);
			tried[j] = 0;
		}
		log_info("%s: to=%s, from=<%s>, size=%zu, relay=%s:%u, "
		    "delay=%llds, attempts=%lu, status=%s (%s)", e->id, to.data,
		    e->sender, e->data_len, cfg->relay.host, cfg->relay.port,
		    now - e->arrival, e->attempts, names[ri->status], ri->text);
	}
	buf_free(&to);
}

/*
 * Queues a DSN for failed recipients not yet reported, and marks them
 * reported.  No DSN for the null sender (never a bounce of a bounce), or
 * when quiet (the caller is told by the exit status).
 */
static void
deliver_report(struct config *cfg, struct spool *sp, struct spool_entry *e,
    int expired, int quiet, struct deliver_result *res)
{
	char *marked = xcalloc(e->rcpts.n, 1), id[SPOOL_ID_LEN + 1];
	char err[512];
	size_t i, n = 0;

	for (i = 0; i < e->rcpts.n; i++)
		if (e->rstate[i].status == SPOOL_RCPT_FAILED &&
		    !e->rstate[i].reported) {
			marked[i] = 1;
			n++;
		}
	if (n > 0 && e->sender[0] != '\0' && !quiet) {
		if (dsn_queue(cfg, sp, e, marked, expired, id, err,
		    sizeof(err)) == -1) {
			/* Keep it unreported: the next run tries again. */
			log_warnx("%s: cannot queue a DSN: %s", e->id, err);
			free(marked);
			return;
		}
		log_info("%s: DSN %s queued to <%s> for %zu recipient%s",
		    e->id, id, dsn_recipient(cfg, e), n, n == 1 ? "" : "s");
		res->dsns++;
	} else if (n > 0 && e->sender[0] == '\0')
		log_info("%s: null sender: no DSN for %zu failed recipient%s",
		    e->id, n, n == 1 ? "" : "s");
	for (i = 0; i < e->rcpts.n; i++)
		if (marked[i])
			e->rstate[i].reported = 1;
	free(marked);
}

/* Saves, removes or moves the entry according to its recipients. */
static void
deliver_settle(struct config *cfg, struct spool *sp, struct spool_entry *e,
    long long now)
{
	size_t i, pending = 0, failed = 0;
	char err[512];

	for (i = 0; i < e->rcpts.n; i++) {
		pending += e->rstate[i].status == SPOOL_RCPT_PENDING;
		failed += e->rstate[i].status == SPOOL_RCPT_FAILED;
	}
	if (pending > 0) {
		e->next_try = now + (long long)deliver_backoff(cfg,
		    e->attempts);
		if (spool_entry_save(sp, e, err, sizeof(err)) == -1)
			log_warnx("%s: %s", e->id, err);
	} else if (failed == 0) {
		if (spool_entry_done(sp, e, err, sizeof(err)) == -1)
			log_warnx("%s: %s", e->id, err);
	} else {
		if (spool_entry_fail(sp, e, err, sizeof(err)) == -1)
			log_warnx("%s: %s", e->id, err);
		else
			log_info("%s: moved to failed/ (%zu of %zu recipients "
			    "not delivered)", e->id, failed, e->rcpts.n);
	}
}

void
deliver_expire(struct config *cfg, struct spool *sp, struct spool_entry *e)
{
	struct deliver_result res;
	long long now = util_now();
	char *tried = xcalloc(e->rcpts.n, 1);
	size_t i;

	memset(&res, 0, sizeof(res));
	for (i = 0; i < e->rcpts.n; i++) {
		struct spool_rcpt_state *rs = &e->rstate[i];

		if (rs->status != SPOOL_RCPT_PENDING)
			continue;
		rs->status = SPOOL_RCPT_FAILED;
		tried[i] = 1;
		if (rs->text[0] == '\0')
			(void)util_strlcpy(rs->text, "never delivered",
			    sizeof(rs->text));
	}
	log_warnx("%s: expired after %lu attempts in %lld s", e->id,
	    e->attempts, now - e->arrival);
	deliver_log(cfg, e, tried, now);
	free(tried);
	deliver_report(cfg, sp, e, 1, 0, &res);
	deliver_settle(cfg, sp, e, now);
}

void
deliver_finish(struct config *cfg, struct spool *sp, struct spool_entry *e)
{
	struct deliver_result res;

	memset(&res, 0, sizeof(res));
	deliver_report(cfg, sp, e, 0, 0, &res);
	deliver_settle(cfg, sp, e, util_now());
}

/* Applies one message's relay outcome to its spool entry. */
static void
deliver_apply(struct config *cfg, struct spool *sp, struct spool_entry *e,
    const struct relay_msg *m, const struct deliver_opts *opts,
    struct deliver_result *res, long long now)
{
	const struct relay_session *ses = &res->session;
	size_t i, k = 0, pending = 0, done = 0, failed = 0;
	char *tried;
	int mail_refused, quiet;

	/* A session that ended (stopped by us, or dropped after earlier
	 * messages) before this one's MAIL did not touch it: no attempt.
	 * Nor did a relay that closed a connection we kept idle (quietly
	 * or with 421): the message goes again on a new connection. */
	if ((m->mail_code == 0 && (ses->interrupted ||
	    ses->failure == RELAY_FAIL_NONE)) || (m->after_idle &&
	    (m->mail_code == 0 || m->mail_code == 421))) {
		res->untouched++;
		return;
	}
	e->tried = 1;
	tried = xcalloc(e->rcpts.n, 1);
	/* 530 to MAIL means AUTH trouble, never the message's fault. */
	mail_refused = m->mail_code >= 500 && m->mail_code != 530 &&
	    ses->failure == RELAY_FAIL_NONE;
	e->attempts++;
	for (i = 0; i < e->rcpts.n; i++) {
		struct spool_rcpt_state *rs = &e->rstate[i];
		const struct relay_rcpt *rr;

		if (rs->status != SPOOL_RCPT_PENDING) {
			done += rs->status == SPOOL_RCPT_DONE;
			failed += rs->status == SPOOL_RCPT_FAILED;
			continue;
		}
		rr = &m->rcpts[k++];
		tried[i] = 1;
		if (ses->failure != RELAY_FAIL_NONE) {
			rs->code = 0;
			(void)util_strlcpy(rs->text, ses->reason,
			    sizeof(rs->text));
		} else if (mail_refused) {
			rs->status = SPOOL_RCPT_FAILED;
			rs->code = m->mail_code;
			(void)util_strlcpy(rs->text, m->mail_text,
			    sizeof(rs->text));
		} else {
			rs->code = rr->code;
			if (rr->text[0] != '\0')
				(void)util_strlcpy(rs->text, rr->text,
				    sizeof(rs->text));
			else if (m->mail_code != 0 && (m->mail_code < 200 ||
			    m->mail_code >= 300))
				(void)util_strlcpy(rs->text, m->mail_text,
				    sizeof(rs->text));
			else if (m->data_sent)
				(void)util_strlcpy(rs->text, "connection lost "
				    "after the end of data: possible duplicate",
				    sizeof(rs->text));
			else
				(void)util_strlcpy(rs->text, "connection lost "
				    "before the message was accepted",
				    sizeof(rs->text));
			if (rr->code >= 200 && rr->code < 300)
				rs->status = SPOOL_RCPT_DONE;
			else if (rr->code >= 500) {
				rs->status = SPOOL_RCPT_FAILED;
				rs->at_rcpt = rr->at_rcpt;
				res->rcpts_refused_at_rcpt += rr->at_rcpt;
			}
		}
		switch (rs->status) {
		case SPOOL_RCPT_DONE:
			done++;
			res->rcpts_done++;
			break;
		case SPOOL_RCPT_FAILED:
			failed++;
			res->rcpts_failed++;
			break;
		default:
			pending++;
			res->rcpts_pending++;
			break;
		}
	}
	if (ses->failure == RELAY_FAIL_NONE && m->data_sent &&
	    m->data_code == 0)
		log_warnx("%s: connection lost after the end of data, before "
		    "the reply: possible duplicate when it is sent again",
		    e->id);
	deliver_log(cfg, e, tried, now);
	free(tried);
	for (i = 0; i < e->rcpts.n; i++)
		if (e->rstate[i].status == SPOOL_RCPT_PENDING) {
			(void)util_strlcpy(e->last, e->rstate[i].text,
			    sizeof(e->last));
			break;
		}
	if (pending > 0 && deliver_expired(cfg, e, now)) {
		deliver_expire(cfg, sp, e);
		return;
	}
	if (pending == 0 && failed > 0)
		for (i = 0; i < e->rcpts.n; i++)
			if (e->rstate[i].status == SPOOL_RCPT_FAILED) {
				(void)util_strlcpy(e->last, e->rstate[i].text,
				    sizeof(e->last));
				break;
			}
	/* Refused for everyone while the caller waits: it gets 67/69. */
	quiet = done == 0 && pending == 0 && (opts->foreground == e ||
	    spool_waiter_present(sp, e->id));
	deliver_report(cfg, sp, e, 0, quiet, res);
	deliver_settle(cfg, sp, e, now);
}

/*
 * The message cannot be sent as it must be (no DKIM key to sign it):
 * an attempt that failed before the relay saw it.  It stays queued, and
 * expires like any message the relay keeps deferring.
 */
static void
deliver_local_failure(struct config *cfg, struct spool *sp,
    struct spool_entry *e, const char *why)
{
	long long now = util_now();
	char *tried = xcalloc(e->rcpts.n, 1);
	size_t i;

	e->tried = 1;
	e->attempts++;
	for (i = 0; i < e->rcpts.n; i++)
		if (e->rstate[i].status == SPOOL_RCPT_PENDING) {
			e->rstate[i].code = 0;
			(void)util_strlcpy(e->rstate[i].text, why,
			    sizeof(e->rstate[i].text));
			tried[i] = 1;
		}
	(void)util_strlcpy(e->last, why, sizeof(e->last));
	log_warnx("%s: not sent: %s", e->id, why);
	deliver_log(cfg, e, tried, now);
	free(tried);
	if (deliver_expired(cfg, e, now))
		deliver_expire(cfg, sp, e);
	else
		deliver_settle(cfg, sp, e, now);
}

/*
 * Signs e on its first attempt and stores the signature before anything
 * is sent, so every attempt sends the same bytes.  0: ready to send;
 * -1: not sendable now (settled as a failed attempt).
 */
static int
deliver_prepare(struct config *cfg, struct spool *sp, struct spool_entry *e)
{
	char err[512];
	char *sig;
	int rc;

	if (cfg->dkim.nkeys == 0 || e->dkim != NULL)
		return 0;
	rc = dkim_sign_spooled(cfg, e->fd, e->data_off, e->data_len,
	    util_now(), &sig, err, sizeof(err));
	if (rc == 0)
		return 0;
	if (rc == 1) {
		e->dkim = sig;
		if (spool_entry_save(sp, e, err, sizeof(err)) == 0)
			return 0;
		free(e->dkim);
		e->dkim = NULL;
	}
	deliver_local_failure(cfg, sp, e, err);
	return -1;
}

/* A message as the relay layer sees it: a byte range and recipients. */
static struct relay_msg *
deliver_msg(struct spool_entry *e)
{
	struct relay_msg *m = xcalloc(1, sizeof(*m));
	size_t j;

	m->id = e->id;
	m->fd = e->fd;
	m->data_off = e->data_off;
	m->data_len = e->data_len;
	m->head = e->dkim;
	m->head_len = e->dkim != NULL ? strlen(e->dkim) : 0;
	m->sender = e->sender;
	m->eightbit = e->eightbit;
	m->notify = e->notify;
	m->ret = e->ret;
	m->envid = e->envid;
	m->rcpts = xcalloc(e->rcpts.n, sizeof(*m->rcpts));
	for (j = 0; j < e->rcpts.n; j++)
		if (e->rstate[j].status == SPOOL_RCPT_PENDING)
			m->rcpts[m->nrcpts++].addr = e->rcpts.v[j];
	e->tried = 0;
	return m;
}

/* The entries of one session and their relay messages, side by side. */
struct deliver_batch {
	const struct deliver_opts *opts;
	struct config		*cfg;
	struct spool		*sp;
	struct deliver_result	*res;
	struct spool_entry	**entries;
	struct relay_msg	**msgs;
	char			*applied;	/* settled during the session */
	size_t			 n;
};

static void
deliver_batch_add(struct deliver_batch *b, struct spool_entry *e)
{
	b->entries = xreallocarray(b->entries, b->n + 1, sizeof(*b->entries));
	b->msgs = xreallocarray(b->msgs, b->n + 1, sizeof(*b->msgs));
	b->applied = xreallocarray(b->applied, b->n + 1, 1);
	b->entries[b->n] = e;
	b->msgs[b->n] = deliver_msg(e);
	b->applied[b->n] = 0;
	b->n++;
}

static int
deliver_hook_wait(void *arg)
{
	const struct relay_pacer *p = ((struct deliver_batch *)arg)->opts->pacer;

	return p != NULL && p->wait != NULL ? p->wait(p->arg) : 0;
}

static void
deliver_hook_sent(void *arg)
{
	const struct relay_pacer *p = ((struct deliver_batch *)arg)->opts->pacer;

	if (p != NULL && p->sent != NULL)
		p->sent(p->arg);
}

static void
deliver_hook_note(void *arg, const char *reply)
{
	const struct relay_pacer *p = ((struct deliver_batch *)arg)->opts->pacer;

	if (p != NULL && p->note != NULL)
		p->note(p->arg, reply);
}

/*
 * A message got its final reply: settle it now (RFC 5321 4.5.3.2 and
 * the reliability bar: done right after the 250), not when the session
 * ends, so a crash mid-session resends at most the message in flight.
 */
static void
deliver_hook_done(void *arg, struct relay_msg *m)
{
	struct deliver_batch *b = arg;
	size_t i;

	for (i = 0; i < b->n; i++)
		if (b->msgs[i] == m && !b->applied[i]) {
			deliver_apply(b->cfg, b->sp, b->entries[i], m, b->opts,
			    b->res, util_now());
			b->applied[i] = 1;
		}
}

static int
deliver_hook_idle(void *arg)
{
	const struct deliver_opts *o = ((struct deliver_batch *)arg)->opts;

	return o->idle != NULL && o->more != NULL ? o->idle(o->more_arg) : 0;
}

static struct relay_msg *
deliver_hook_feed(void *arg)
{
	struct deliver_batch *b = arg;
	struct spool_entry *e;

	do {
		if (b->opts->more == NULL ||
		    (e = b->opts->more(b->opts->more_arg)) == NULL)
			return NULL;
	} while (deliver_prepare(b->cfg, b->sp, e) == -1);
	deliver_batch_add(b, e);
	return b->msgs[b->n - 1];
}

void
deliver_entries(struct config *cfg, struct spool *sp,
    struct spool_entry **entries, size_t n, const struct deliver_opts *opts,
    struct deliver_result *res)
{
	struct deliver_batch b = { opts, cfg, sp, res, NULL, NULL, NULL, 0 };
	struct relay_pacer hooks = { deliver_hook_wait, deliver_hook_sent,
	    deliver_hook_note, deliver_hook_feed, deliver_hook_done,
	    deliver_hook_idle, &b };
	long long now;
	char err[512];
	size_t i;

	struct config_account *acct;
	const char *user = cfg->relay.user, *password;
	int rc;

	memset(res, 0, sizeof(*res));
	for (i = 0; i < n; i++)
		if (deliver_prepare(cfg, sp, entries[i]) == 0)
			deliver_batch_add(&b, entries[i]);
	/* One account per session: the first sender's domain decides. */
	acct = b.n > 0 ? config_account_for(cfg, b.entries[0]->sender) :
	    NULL;
	if (acct != NULL) {
		rc = config_account_password(acct, err, sizeof(err));
		user = acct->user;
		password = acct->password;
	} else {
		rc = config_load_password(cfg, err, sizeof(err));
		password = cfg->relay.password;
	}
	if (b.n > 0 && rc == -1) {
		res->session.failure = RELAY_FAIL_AUTH;
		(void)util_snprintf(res->session.reason,
		    sizeof(res->session.reason), "%s", err);
	} else if (b.n > 0)
		relay_deliver(cfg, user, password, b.msgs, b.n, opts->verbose,
		    &hooks, &res->session);
	if (res->session.failure != RELAY_FAIL_NONE)
		log_warnx("relay %s:%u: %s", cfg->relay.host, cfg->relay.port,
		    res->session.reason);
	if (res->rcpts_done > 0)
		spool_note_sent(sp, util_now());
	now = util_now();
	for (i = 0; i < b.n; i++) {
		if (!b.applied[i])
			deliver_apply(cfg, sp, b.entries[i], b.msgs[i], opts,
			    res, now);
		free(b.msgs[i]->rcpts);
		free(b.msgs[i]);
	}
	free(b.applied);
	free(b.msgs);
	free(b.entries);
}
