/*
 * submit.c -- accepting a message: envelope, spool, first delivery.
 */
#include <errno.h>
#include <netdb.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "deliver.h"
#include "log.h"
#include "submit.h"
#include "util.h"

/* This host's fully qualified name, for bare local names. */
static char *
submit_host_domain(void)
{
	struct addrinfo hints, *res = NULL;
	char host[256];
	char *fqdn;

	if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
		return xstrdup("localhost");
	host[sizeof(host) - 1] = '\0';
	if (strchr(host, '.') != NULL)
		return xstrdup(host);
	memset(&hints, 0, sizeof(hints));
	hints.ai_flags = AI_CANONNAME;
	if (getaddrinfo(host, NULL, &hints, &res) == 0 && res != NULL &&
	    res->ai_canonname != NULL && strchr(res->ai_canonname, '.'))
		fqdn = xstrdup(res->ai_canonname);
	else
		fqdn = xstrdup(host);
	if (res != NULL)
		freeaddrinfo(res);
	return fqdn;
}

int
submit_init(struct submit *s, struct config *cfg, const struct cli_opts *o,
    char *err, size_t errlen)
{
	struct passwd *pw;

	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	s->verbose = o->verbose;
	s->fullname = o->fullname;
	if (o->fullname != NULL) {
		const unsigned char *p;

		for (p = (const unsigned char *)o->fullname; *p; p++)
			if (*p < 0x20 || *p == 0x7f) {
				(void)util_snprintf(err, errlen,
				    "-F: control character in the full name");
				return EX_DATAERR;
			}
	}
	/* cron, atd and php-fpm leave USER/LOGNAME unset or wrong. */
	errno = 0;
	pw = getpwuid(getuid());
	s->login = pw != NULL ? xstrdup(pw->pw_name) :
	    util_asprintf("uid%lu", (unsigned long)getuid());
	s->domain = cfg->sender.domain != NULL ?
	    xstrdup(cfg->sender.domain) : submit_host_domain();
	switch (o->delivery) {
	case CLI_DELIVERY_FOREGROUND:
		s->foreground = 1;
		break;
	case CLI_DELIVERY_QUEUE:
		s->foreground = 0;
		break;
	default:
		s->foreground = cfg->queue.delivery ==
		    CONFIG_DELIVERY_FOREGROUND;
		break;
	}
	return 0;
}

void
submit_free(struct submit *s)
{
	if (s->spool_open)
		spool_close(&s->spool);
	free(s->login);
	free(s->domain);
}

int
submit_sender(struct submit *s, const char *raw, char **out, char *err,
    size_t errlen)
{
	struct addr_list l;
	char why[256];

	*out = NULL;
	if (raw == NULL) {
		*out = util_asprintf("%s@%s", s->login, s->domain);
		return 0;
	}
	if (addr_check_safe(raw, why, sizeof(why)) == -1) {
		(void)util_snprintf(err, errlen, "sender: %s", why);
		return EX_DATAERR;
	}
	if (raw[0] == '\0' || strcmp(raw, "<>") == 0) {
		*out = xstrdup("");
		return 0;
	}
	addr_list_init(&l);
	if (addr_list_parse(raw, strlen(raw), &l, why, sizeof(why)) == 0 &&
	    l.n == 1) {
		if (addr_is_mailbox(l.v[0]))
			*out = xstrdup(l.v[0]);
		else if (addr_is_local_name(l.v[0]))
			*out = util_asprintf("%s@%s", l.v[0], s->domain);
	}
	addr_list_free(&l);
	if (*out == NULL) {
		log_debug("sender \"%s\" is not an address; using the default",
		    raw);
		*out = util_asprintf("%s@%s", s->login, s->domain);
	}
	return 0;
}

/* Qualifies bare local names with the domain, in place. */
static void
submit_qualify(struct submit *s, struct addr_list *l, size_t from)
{
	size_t i;

	for (i = from; i < l->n; i++) {
		if (addr_is_local_name(l->v[i])) {
			char *q = util_asprintf("%s@%s", l->v[i], s->domain);

			free(l->v[i]);
			l->v[i] = q;
		}
	}
}

int
submit_recipients(struct submit *s, const char *arg, struct addr_list *out,
    char *err, size_t errlen)
{
	size_t before = out->n;
	char why[256], shown[64];

	if (addr_check_safe(arg, why, sizeof(why)) == -1 ||
	    addr_list_parse(arg, strlen(arg), out, why, sizeof(why)) == -1) {
		util_sanitize(shown, sizeof(shown), arg, strlen(arg));
		(void)util_snprintf(err, errlen, "recipient \"%s\": %s", shown,
		    why);
		return EX_DATAERR;
	}
	submit_qualify(s, out, before);
	return 0;
}

/*
 * A spool write that failed for lack of room is temporary (75); one that
 * failed for permissions or a read-only spool needs the admin (73).
 */
static int
submit_spool_status(int e)
{
	return e == ENOSPC || e == EDQUOT || e == EFBIG || e == EIO ?
	    EX_TEMPFAIL : EX_CANTCREAT;
}

/* The foreground attempt; returns the exit status it implies. */
static int
submit_deliver(struct submit *s, struct spool_entry *e, char *err,
    size_t errlen)
{
	struct spool_entry *list[1] = { e };
	struct deliver_result res;
	size_t i, failed = 0, done = 0;

	deliver_entries(s->cfg, &s->spool, list, 1, s->verbose, &res);
	for (i = 0; i < e->rcpts.n; i++) {
		done += e->rstate[i].status == SPOOL_RCPT_DONE;
		failed += e->rstate[i].status == SPOOL_RCPT_FAILED;
	}
	if (res.rcpts_pending > 0) {
		log_user("%s: delivery deferred, the message stays queued: %s",
		    e->id, e->last);
		return 0;
	}
	if (failed > 0 && done == 0) {
		/* Refused for good; the caller learns it now, so no bounce. */
		(void)util_snprintf(err, errlen, "%s: refused by the relay: %s "
		    "(kept in failed/)", e->id, e->last);
		return res.rcpts_refused_at_rcpt == failed ? EX_NOUSER :
		    EX_UNAVAILABLE;
	}
	for (i = 0; i < e->rcpts.n; i++)
		if (e->rstate[i].status == SPOOL_RCPT_FAILED)
			log_user("%s: <%s> refused: %s", e->id, e->rcpts.v[i],
			    e->rstate[i].text);
	return 0;
}

int
submit_message(struct submit *s, struct linereader *lr, enum message_end end,
    const char *sender, struct addr_list *rcpts, int read_rcpts,
    char *queue_id, char *err, size_t errlen)
{
	struct message msg;
	struct message_defaults def;
	struct spool_writer *w = NULL;
	struct spool_entry e;
	char msgid[SPOOL_ID_LEN + 300], why[512];
	long long now = util_now();
	size_t before = rcpts->n, i;
	int st, rc = EX_SOFTWARE;

	memset(&e, 0, sizeof(e));
	e.fd = -1;
	queue_id[0] = '\0';
	message_init(&msg, end);
	st = message_read_header(&msg, lr, why, sizeof(why));
	if (st != MESSAGE_OK) {
		/* Input that cannot be read to its end is never queued. */
		rc = st == MESSAGE_EDATA ? EX_DATAERR : EX_TEMPFAIL;
		(void)util_snprintf(err, errlen, "%s", why);
		goto done;
	}
	if (read_rcpts) {
		if (message_header_recipients(&msg, rcpts, why, sizeof(why)) ==
		    -1) {
			(void)util_snprintf(err, errlen, "%s", why);
			rc = EX_DATAERR;
			goto done;
		}
		submit_qualify(s, rcpts, before);
	}
	if (rcpts->n == 0) {
		(void)util_snprintf(err, errlen, "no recipients: none given "
		    "and none in To:, Cc: or Bcc:");
		rc = EX_DATAERR;
		goto done;
	}
	if (!s->spool_open) {
		if (spool_open(&s->spool, s->cfg->queue.dir, why,
		    sizeof(why)) == -1) {
			(void)util_snprintf(err, errlen, "%s", why);
			rc = EX_CANTCREAT;
			goto done;
		}
		s->spool_open = 1;
	}
	w = xmalloc(sizeof(*w));
	if (spool_create(&s->spool, w, now, sender, rcpts, why,
	    sizeof(why)) == -1) {
		rc = submit_spool_status(errno);
		(void)util_snprintf(err, errlen, "%s", why);
		free(w);
		w = NULL;
		goto done;
	}
	(void)util_snprintf(msgid, sizeof(msgid), "<%s.relayq@%s>", w->id,
	    s->domain);
	def.from_addr = NULL;
	def.fullname = s->fullname;
	def.msgid = msgid;
	def.date = now;
	{
		char *from = util_asprintf("%s@%s", s->login, s->domain);

		def.from_addr = from;
		st = message_write(&msg, lr, &def, spool_write, w, why,
		    sizeof(why));
		free(from);
	}
	if (st != MESSAGE_OK) {
		rc = st == MESSAGE_EDATA ? EX_DATAERR : st == MESSAGE_EWRITE ?
		    submit_spool_status(w->saved_errno) : EX_TEMPFAIL;
		spool_abort(w);
		(void)util_snprintf(err, errlen, "%s", why);
		goto done;
	}
	if (spool_commit(&s->spool, w, msg.eightbit, &e, why,
	    sizeof(why)) == -1) {
		rc = submit_spool_status(errno);
		(void)util_snprintf(err, errlen, "%s", why);
		goto done;
	}
	/* From here on the message is safe. */
	(void)util_strlcpy(queue_id, e.id, SPOOL_ID_LEN + 1);
	e.arrival = now;
	e.uid = (unsigned long)getuid();
	e.sender = xstrdup(sender);
	for (i = 0; i < rcpts->n; i++)
		addr_list_add(&e.rcpts, rcpts->v[i]);
	e.rstate = xcalloc(e.rcpts.n, sizeof(*e.rstate));
	log_info("%s: queued from=<%s>, nrcpt=%zu, size=%zu, uid=%lu",
	    e.id, e.sender, e.rcpts.n, e.data_len, e.uid);
	rc = 0;
	if (s->foreground)
		rc = submit_deliver(s, &e, err, errlen);
done:
	/* In a dialogue the client goes on after the final dot. */
	if (rc == EX_DATAERR && end == MESSAGE_END_SMTP)
		message_drain(&msg, lr);
	if (e.fd != -1)
		spool_entry_close(&e);
	free(w);
	message_free(&msg);
	return rc;
}

int
submit_main(struct config *cfg, const struct cli_opts *o)
{
	struct submit s;
	struct addr_list rcpts;
	struct linereader *lr;
	char *sender = NULL, err[1024], id[SPOOL_ID_LEN + 1];
	size_t i;
	int rc;

	if (o->nrcpts == 0 && !o->read_recipients) {
		log_user("no recipients given (name them, or use -t to read "
		    "them from the message)");
		return EX_USAGE;
	}
	addr_list_init(&rcpts);
	if ((rc = submit_init(&s, cfg, o, err, sizeof(err))) != 0)
		goto out;
	if ((rc = submit_sender(&s, o->sender, &sender, err,
	    sizeof(err))) != 0)
		goto out;
	for (i = 0; i < o->nrcpts; i++)
		if ((rc = submit_recipients(&s, o->rcpts[i], &rcpts, err,
		    sizeof(err))) != 0)
			goto out;
	lr = xmalloc(sizeof(*lr));
	linereader_init(lr, 0);
	log_set_cleanup(spool_abort_current);
	rc = submit_message(&s, lr, o->dot_ends_input ? MESSAGE_END_DOT :
	    MESSAGE_END_EOF, sender, &rcpts, o->read_recipients, id, err,
	    sizeof(err));
	log_set_cleanup(NULL);
	free(lr);
out:
	if (rc != 0)
		log_user("%s", err);
	free(sender);
	addr_list_free(&rcpts);
	submit_free(&s);
	return rc;
}
