/*
 * deliver.c -- what the relay's answers mean for queued messages.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "deliver.h"
#include "log.h"
#include "util.h"

#define DELIVER_BACKOFF_MIN	60
#define DELIVER_BACKOFF_MAX	3600

unsigned long
deliver_backoff(unsigned long attempts)
{
	unsigned long d = DELIVER_BACKOFF_MIN;

	while (attempts-- > 1 && d < DELIVER_BACKOFF_MAX)
		d *= 2;
	return d < DELIVER_BACKOFF_MAX ? d : DELIVER_BACKOFF_MAX;
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

/* Applies one message's relay outcome to its spool entry. */
static void
deliver_apply(struct config *cfg, struct spool *sp, struct spool_entry *e,
    const struct relay_msg *m, const struct relay_session *ses,
    struct deliver_result *res, long long now)
{
	size_t i, k = 0, pending = 0, done = 0, failed = 0;
	char err[512], *tried = xcalloc(e->rcpts.n, 1);
	int mail_refused;

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
	deliver_log(cfg, e, tried, now);
	free(tried);
	if (pending > 0) {
		for (i = 0; i < e->rcpts.n; i++)
			if (e->rstate[i].status == SPOOL_RCPT_PENDING) {
				(void)util_strlcpy(e->last, e->rstate[i].text,
				    sizeof(e->last));
				break;
			}
		e->next_try = now + (long long)deliver_backoff(e->attempts);
		if (spool_entry_save(sp, e, err, sizeof(err)) == -1)
			log_warnx("%s: %s", e->id, err);
	} else if (failed == 0) {
		if (spool_entry_done(sp, e, err, sizeof(err)) == -1)
			log_warnx("%s: %s", e->id, err);
	} else {
		for (i = 0; i < e->rcpts.n; i++)
			if (e->rstate[i].status == SPOOL_RCPT_FAILED) {
				(void)util_strlcpy(e->last, e->rstate[i].text,
				    sizeof(e->last));
				break;
			}
		if (spool_entry_fail(sp, e, err, sizeof(err)) == -1)
			log_warnx("%s: %s", e->id, err);
		else
			log_info("%s: moved to failed/ (%zu of %zu recipients "
			    "refused)", e->id, failed, e->rcpts.n);
	}
}

void
deliver_entries(struct config *cfg, struct spool *sp,
    struct spool_entry **entries, size_t n, int verbose,
    struct deliver_result *res)
{
	struct relay_msg *msgs = xcalloc(n, sizeof(*msgs));
	long long now = util_now();
	char err[512];
	size_t i, j;

	memset(res, 0, sizeof(*res));
	for (i = 0; i < n; i++) {
		struct spool_entry *e = entries[i];
		struct relay_msg *m = &msgs[i];

		m->id = e->id;
		m->fd = e->fd;
		m->data_off = e->data_off;
		m->data_len = e->data_len;
		m->sender = e->sender;
		m->rcpts = xcalloc(e->rcpts.n, sizeof(*m->rcpts));
		for (j = 0; j < e->rcpts.n; j++)
			if (e->rstate[j].status == SPOOL_RCPT_PENDING)
				m->rcpts[m->nrcpts++].addr = e->rcpts.v[j];
	}
	if (config_load_password(cfg, err, sizeof(err)) == -1) {
		res->session.failure = RELAY_FAIL_AUTH;
		(void)util_snprintf(res->session.reason,
		    sizeof(res->session.reason), "%s", err);
	} else
		relay_deliver(cfg, msgs, n, verbose, &res->session);
	if (res->session.failure != RELAY_FAIL_NONE)
		log_warnx("relay %s:%u: %s", cfg->relay.host, cfg->relay.port,
		    res->session.reason);
	for (i = 0; i < n; i++) {
		deliver_apply(cfg, sp, entries[i], &msgs[i], &res->session,
		    res, now);
		free(msgs[i].rcpts);
	}
	free(msgs);
}
