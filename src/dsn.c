/*
 * dsn.c -- delivery status notifications (RFC 3464).
 *
 * A DSN is a multipart/report with three parts: a few lines for people,
 * the machine-readable message/delivery-status, and the headers of the
 * original message (RFC 3462 text/rfc822-headers; never the body, which
 * may be large).  It is queued with the null sender (RFC 5321 6.1), so
 * it can never cause another DSN.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "address.h"
#include "buf.h"
#include "config.h"
#include "dsn.h"
#include "message.h"
#include "spool.h"
#include "util.h"

#define DSN_HEADERS_MAX (64 * 1024)

/* The enhanced status code in a reply ("550 5.1.1 ..."), or a default. */
static void
dsn_status(const char *reply, int expired, char *out, size_t len)
{
	const char *p = reply;
	size_t n;

	if (expired) {
		(void)util_strlcpy(out, "4.4.7", len);
		return;
	}
	if (isdigit((unsigned char)p[0]) && isdigit((unsigned char)p[1]) &&
	    isdigit((unsigned char)p[2]) && p[3] == ' ') {
		p += 4;
		n = strspn(p, "0123456789.");
		if (n >= 5 && n < 12 && (p[0] == '4' || p[0] == '5') &&
		    p[1] == '.' && (p[n] == ' ' || p[n] == '\0')) {
			(void)util_snprintf(out, len, "%.*s", (int)n, p);
			return;
		}
	}
	(void)util_strlcpy(out, reply[0] == '4' ? "4.0.0" : "5.0.0", len);
}

/* 1 if text starts with an SMTP reply code. */
static int
dsn_is_smtp_reply(const char *t)
{
	return isdigit((unsigned char)t[0]) && isdigit((unsigned char)t[1]) &&
	    isdigit((unsigned char)t[2]) && (t[3] == ' ' || t[3] == '\0');
}

/* Appends the original header block (capped) from the spool file. */
static void
dsn_original_headers(struct buf *b, const struct spool_entry *e)
{
	size_t want = e->data_len < DSN_HEADERS_MAX ? e->data_len :
	    DSN_HEADERS_MAX;
	char *h = xmalloc(want + 1), *end;

	if (util_pread_full(e->fd, h, want, e->data_off) == -1) {
		buf_puts(b, "X-Relayq-Note: the original headers could not be "
		    "read\r\n");
		free(h);
		return;
	}
	h[want] = '\0';
	end = strstr(h, "\r\n\r\n");
	if (end != NULL)
		want = (size_t)(end - h) + 2;
	else if (want == DSN_HEADERS_MAX) {
		/* Cut at a line end. */
		char *last = NULL, *p = h;

		while ((p = strstr(p, "\r\n")) != NULL)
			last = p++;
		want = last != NULL ? (size_t)(last - h) + 2 : 0;
	}
	buf_append(b, h, want);
	free(h);
}

const char *
dsn_recipient(const struct config *cfg, const struct spool_entry *e)
{
	const struct config_alias *a;

	if (cfg->sender.address == NULL ||
	    !util_strcaseeq(e->sender, cfg->sender.address))
		return e->sender;
	if ((a = config_alias(cfg, "root")) != NULL ||
	    (a = config_alias(cfg, "default")) != NULL)
		return a->to[0];
	return e->sender;
}

int
dsn_queue(const struct config *cfg, struct spool *sp,
    const struct spool_entry *e, const char *marked, int expired, char *id,
    char *err, size_t errlen)
{
	struct spool_writer *w = NULL;
	struct spool_entry de;
	struct addr_list to;
	struct buf b;
	char *domain = config_sender_domain(cfg), date[64], arrival[64];
	char status[16], life[32];
	long long now = util_now();
	size_t i;
	int rc = -1, eightbit = 0;

	addr_list_init(&to);
	addr_list_add(&to, dsn_recipient(cfg, e));
	buf_init(&b);
	w = xmalloc(sizeof(*w));
	if (spool_create(sp, w, now, "", &to, NULL, err, errlen) == -1) {
		free(w);
		w = NULL;
		goto done;
	}
	if (message_format_date(now, date, sizeof(date)) == -1 ||
	    message_format_date(e->arrival, arrival, sizeof(arrival)) == -1)
		date[0] = arrival[0] = '\0';

	buf_printf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n"
	    "To: <%s>\r\n"
	    "Subject: Undelivered Mail Returned to Sender\r\n"
	    "Date: %s\r\n"
	    "Message-ID: <%s.relayq@%s>\r\n"
	    "Auto-Submitted: auto-replied\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"%s/%s\"\r\n"
	    "\r\n"
	    "This is a MIME-encapsulated message.\r\n"
	    "\r\n"
	    "--%s/%s\r\n"
	    "Content-Description: Notification\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n"
	    "\r\n"
	    "This is relayq on %s.\r\n"
	    "\r\n", domain, to.v[0], date, w->id, domain, w->id, domain,
	    w->id, domain, domain);
	util_format_duration(cfg->queue.lifetime, life, sizeof(life));
	if (expired)
		buf_printf(&b, "Your message (queue id %s) could not be "
		    "delivered within the queue lifetime of %s,\r\n"
		    "after %lu attempts, to these recipients:\r\n\r\n", e->id,
		    life, e->attempts);
	else
		buf_printf(&b, "Your message (queue id %s) was refused for "
		    "good by the relay %s\r\nfor these recipients:\r\n\r\n",
		    e->id, cfg->relay.host);
	for (i = 0; i < e->rcpts.n; i++)
		if (marked[i])
			buf_printf(&b, "<%s>: %s\r\n", e->rcpts.v[i],
			    e->rstate[i].text[0] ? e->rstate[i].text :
			    "no reply");
	buf_printf(&b, "\r\n--%s/%s\r\n"
	    "Content-Description: Delivery report\r\n"
	    "Content-Type: message/delivery-status\r\n"
	    "\r\n"
	    "Reporting-MTA: dns; %s\r\n"
	    "X-Relayq-Queue-ID: %s\r\n"
	    "Arrival-Date: %s\r\n", w->id, domain, domain, e->id, arrival);
	for (i = 0; i < e->rcpts.n; i++) {
		const char *t = e->rstate[i].text;

		if (!marked[i])
			continue;
		dsn_status(t, expired, status, sizeof(status));
		buf_printf(&b, "\r\nFinal-Recipient: rfc822; %s\r\n"
		    "Action: failed\r\n"
		    "Status: %s\r\n"
		    "Remote-MTA: dns; %s\r\n", e->rcpts.v[i], status,
		    cfg->relay.host);
		if (dsn_is_smtp_reply(t))
			buf_printf(&b, "Diagnostic-Code: smtp; %s\r\n", t);
		buf_printf(&b, "Last-Attempt-Date: %s\r\n", date);
	}
	buf_printf(&b, "\r\n--%s/%s\r\n"
	    "Content-Description: Undelivered Message Headers\r\n"
	    "Content-Type: text/rfc822-headers\r\n"
	    "\r\n", w->id, domain);
	dsn_original_headers(&b, e);
	buf_printf(&b, "\r\n--%s/%s--\r\n", w->id, domain);

	for (i = 0; i < b.len; i++)
		if ((unsigned char)b.data[i] >= 0x80)
			eightbit = 1;
	if (spool_write(w, b.data, b.len) == -1) {
		(void)util_snprintf(err, errlen, "writing a DSN: spool write "
		    "failed");
		spool_abort(w);
		goto done;
	}
	if (spool_commit(sp, w, eightbit, 0, &de, err, errlen) == -1)
		goto done;
	(void)util_strlcpy(id, de.id, SPOOL_ID_LEN + 1);
	rc = 0;
done:
	free(w);
	free(domain);
	buf_free(&b);
	addr_list_free(&to);
	return rc;
}
