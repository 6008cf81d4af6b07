/*
 * submit.c -- accepting a message: envelope, spool, first delivery.
 */
#include <sys/inotify.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "buf.h"
#include "cli.h"
#include "config.h"
#include "deliver.h"
#include "dkim.h"
#include "dns.h"
#include "log.h"
#include "maildrop.h"
#include "queue.h"
#include "records.h"
#include "submit.h"
#include "util.h"

#define SUBMIT_FULLNAME_MAX	512

int
submit_init(struct submit *s, struct config *cfg, const struct cli_opts *o,
    char *err, size_t errlen)
{
	struct passwd *pw;

	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	s->origin.uid = o->caller_uid;
	s->origin.id = NULL;
	s->verbose = o->verbose;
	s->fullname = o->fullname;
	s->dsn.notify = o->dsn_notify;
	s->dsn.ret = o->dsn_ret;
	s->dsn.envid = o->dsn_envid;
	s->body8bit = o->body8bit;
	if (o->fullname != NULL) {
		const unsigned char *p;

		for (p = (const unsigned char *)o->fullname; *p; p++)
			if (*p < 0x20 || *p == 0x7f) {
				(void)util_snprintf(err, errlen,
				    "-F: control character in the full name");
				return EX_DATAERR;
			}
		/* A name is a few words; a huge one would be folded. */
		if (strlen(o->fullname) > SUBMIT_FULLNAME_MAX) {
			(void)util_snprintf(err, errlen, "-F: a full name of "
			    "more than %d octets", SUBMIT_FULLNAME_MAX);
			return EX_DATAERR;
		}
		/* Like -f: a value that looks like an option is refused. */
		if (o->fullname[0] == '-') {
			(void)util_snprintf(err, errlen, "-F: a full name may "
			    "not begin with \"-\"");
			return EX_DATAERR;
		}
	}
	/* cron, atd and php-fpm leave USER/LOGNAME unset or wrong. */
	errno = 0;
	pw = getpwuid((uid_t)o->caller_uid);
	s->login = pw != NULL ? xstrdup(pw->pw_name) :
	    util_asprintf("uid%lu", o->caller_uid);
	/* One lookup: the FQDN also qualifies when [sender] domain is unset. */
	s->fqdn = config_host_fqdn();
	s->domain = xstrdup(cfg->sender.domain != NULL ? cfg->sender.domain :
	    s->fqdn);
	if (gethostname(s->host, sizeof(s->host)) == -1)
		s->host[0] = '\0';
	s->host[sizeof(s->host) - 1] = '\0';
	s->host[strcspn(s->host, ".")] = '\0';
	switch (o->delivery) {
	case CLI_DELIVERY_FOREGROUND:
		s->delivery = CONFIG_DELIVERY_FOREGROUND;
		break;
	case CLI_DELIVERY_BACKGROUND:
		s->delivery = CONFIG_DELIVERY_BACKGROUND;
		break;
	case CLI_DELIVERY_QUEUE:
		s->delivery = CONFIG_DELIVERY_QUEUE;
		break;
	default:
		s->delivery = cfg->queue.delivery;
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
	free(s->fqdn);
}

static int
submit_has_8bit(const char *a)
{
	for (; *a != '\0'; a++)
		if ((unsigned char)*a >= 0x80)
			return 1;
	return 0;
}

/*
 * 1 if a is local: no domain, or localhost, or this host by its short
 * or full name, or a loopback literal.
 */
static int
submit_is_local(const struct submit *s, const char *a)
{
	const char *d = strrchr(a, '@');

	if (d == NULL)
		return 1;
	d++;
	return util_strcaseeq(d, "localhost") ||
	    util_strcaseeq(d, "localhost.localdomain") ||
	    (s->host[0] != '\0' && util_strcaseeq(d, s->host)) ||
	    util_strcaseeq(d, s->fqdn) || strcmp(d, "[127.0.0.1]") == 0 ||
	    util_strcaseeq(d, "[IPv6:::1]");
}

/* The envelope sender after [sender] rewrite; local says it was local. */
static char *
submit_rewrite_sender(struct submit *s, char *sender, int local)
{
	const struct config *cfg = s->cfg;

	if (sender[0] == '\0' || cfg->sender.address == NULL ||
	    cfg->sender.rewrite == CONFIG_REWRITE_NEVER ||
	    (cfg->sender.rewrite == CONFIG_REWRITE_LOCAL && !local))
		return sender;
	log_debug("sender <%s> rewritten to <%s>", sender, cfg->sender.address);
	free(sender);
	return xstrdup(cfg->sender.address);
}

int
submit_sender(struct submit *s, const char *raw, char **out, char *err,
    size_t errlen)
{
	struct addr_list l;
	char why[256];
	int local = 0;

	*out = NULL;
	if (s->cfg->drop) {
		/* The runner decides; hostile values stop here. */
		if (raw != NULL && addr_check_safe(raw, why, sizeof(why)) ==
		    -1) {
			(void)util_snprintf(err, errlen, "sender: %s", why);
			return EX_DATAERR;
		}
		*out = raw != NULL ? xstrdup(raw) : NULL;
		return 0;
	}
	if (raw == NULL) {
		/* A local login: local whatever the domain. */
		*out = submit_rewrite_sender(s, util_asprintf("%s@%s", s->login,
		    s->domain), 1);
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
	if (submit_has_8bit(raw)) {
		(void)util_snprintf(err, errlen, "sender needs SMTPUTF8, which "
		    "relayq cannot send; use an ASCII (punycode) address");
		return EX_DATAERR;
	}
	addr_list_init(&l);
	if (addr_list_parse(raw, strlen(raw), &l, why, sizeof(why)) == 0 &&
	    l.n == 1) {
		local = submit_is_local(s, l.v[0]);
		if (addr_is_mailbox(l.v[0]))
			*out = xstrdup(l.v[0]);
		else if (addr_is_local_name(l.v[0]))
			*out = util_asprintf("%s@%s", l.v[0], s->domain);
	}
	addr_list_free(&l);
	if (*out == NULL) {
		/* mailutils passes "-f Sender"; a display name is no sender. */
		log_debug("sender \"%s\" is not an address; using the default",
		    raw);
		*out = util_asprintf("%s@%s", s->login, s->domain);
		local = 1;
	}
	*out = submit_rewrite_sender(s, *out, local);
	return 0;
}

/*
 * Resolves local recipients in l from index `from' on: [aliases] entry,
 * else [aliases] default, else name@[sender] domain if set, else an
 * error: a local address must never reach the relay.  0 or EX_NOUSER.
 */
static int
submit_resolve(struct submit *s, struct addr_list *l, size_t from, char *err,
    size_t errlen)
{
	const struct config_alias *a;
	struct addr_list out;
	size_t i, j;

	/* UTF-8 addresses need SMTPUTF8, which libESMTP 1.1.0 cannot do:
	 * say so now rather than let the relay refuse it later. */
	for (i = from; i < l->n; i++) {
		if (submit_has_8bit(l->v[i])) {
			(void)util_snprintf(err, errlen, "recipient <%s> needs "
			    "SMTPUTF8, which relayq cannot send; use an ASCII "
			    "(punycode) address", l->v[i]);
			return EX_DATAERR;
		}
	}
	/* Only the new entries are resolved: the list may grow to
	 * thousands of arguments, one call each. */
	addr_list_init(&out);
	for (i = from; i < l->n; i++) {
		char local[ADDR_MAX_LEN + 1];

		if (!submit_is_local(s, l->v[i])) {
			addr_list_add(&out, l->v[i]);
			continue;
		}
		(void)util_strlcpy(local, l->v[i], sizeof(local));
		local[strcspn(local, "@")] = '\0';
		if ((a = config_alias(s->cfg, local)) == NULL)
			a = config_alias(s->cfg, "default");
		if (a != NULL) {
			for (j = 0; j < a->nto; j++)
				addr_list_add(&out, a->to[j]);
			log_debug("recipient <%s> is <%s>%s", l->v[i], a->to[0],
			    a->nto > 1 ? " and more" : "");
		} else if (s->cfg->sender.domain != NULL) {
			char *q = util_asprintf("%s@%s", local,
			    s->cfg->sender.domain);

			addr_list_add(&out, q);
			free(q);
		} else {
			(void)util_snprintf(err, errlen, "no alias for the local "
			    "recipient <%s>: add it to [aliases], or set "
			    "[aliases] default", l->v[i]);
			addr_list_free(&out);
			return EX_NOUSER;
		}
	}
	addr_list_truncate(l, from);
	for (i = 0; i < out.n; i++)
		addr_list_add(l, out.v[i]);
	addr_list_free(&out);
	return 0;
}

/*
 * A local From: (or any, with rewrite = always) becomes the [sender]
 * address, keeping the display name; with reply_to the original goes
 * to Reply-To.  A missing From: is added later with the right address.
 */
static void
submit_rewrite_from(struct submit *s, struct message *m)
{
	const struct config *cfg = s->cfg;
	struct addr_list l;
	const char *v;
	char name[256], why[256], *orig, *nv;
	struct buf b;
	size_t len;
	int local;

	if (cfg->sender.address == NULL ||
	    cfg->sender.rewrite == CONFIG_REWRITE_NEVER ||
	    (v = message_header_value(m, "From", &len)) == NULL)
		return;
	addr_list_init(&l);
	local = addr_list_parse(v, len, &l, why, sizeof(why)) == -1 ||
	    l.n != 1 || submit_is_local(s, l.v[0]);
	addr_list_free(&l);
	if (cfg->sender.rewrite == CONFIG_REWRITE_LOCAL && !local)
		return;
	addr_display_name(v, len, name, sizeof(name));
	if (name[0] == '\0' && s->fullname != NULL)
		(void)util_strlcpy(name, s->fullname, sizeof(name));
	orig = xstrndup(v, len);
	buf_init(&b);
	if (name[0] != '\0') {
		addr_quote_phrase(&b, name);
		buf_printf(&b, " <%s>", cfg->sender.address);
	} else
		buf_printf(&b, "<%s>", cfg->sender.address);
	nv = buf_take(&b);
	message_set_header(m, "From", nv);
	/* Replies to a real address still reach it; to a local one not. */
	if (cfg->sender.reply_to && !local &&
	    !message_has_header(m, "Reply-To"))
		message_set_header(m, "Reply-To", orig + strspn(orig, " \t"));
	free(nv);
	free(orig);
}

int
submit_recipients(struct submit *s, const char *arg, struct addr_list *out,
    char *err, size_t errlen)
{
	size_t before = out->n, i;
	char why[256], shown[64];

	int rc;

	if (addr_check_safe(arg, why, sizeof(why)) == -1 ||
	    addr_list_parse(arg, strlen(arg), out, why, sizeof(why)) == -1) {
		util_sanitize(shown, sizeof(shown), arg, strlen(arg));
		(void)util_snprintf(err, errlen, "recipient \"%s\": %s", shown,
		    why);
		addr_list_truncate(out, before);
		return EX_DATAERR;
	}
	if (s->cfg->drop) {
		/* Checked; the runner resolves it as it was given.  What
		 * it would refuse for sure is refused now, while the caller
		 * can still be told by the exit status. */
		for (i = before; i < out->n; i++)
			if (submit_has_8bit(out->v[i])) {
				util_sanitize(shown, sizeof(shown), arg,
				    strlen(arg));
				(void)util_snprintf(err, errlen, "recipient "
				    "\"%s\" needs SMTPUTF8, which relayq "
				    "cannot send; use an ASCII (punycode) "
				    "address", shown);
				addr_list_truncate(out, before);
				return EX_DATAERR;
			}
		addr_list_truncate(out, before);
		addr_list_add(out, arg);
		return 0;
	}
	/* A refused argument leaves nothing behind (-bs goes on after it). */
	if ((rc = submit_resolve(s, out, before, err, errlen)) != 0)
		addr_list_truncate(out, before);
	return rc;
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

/*
 * The exit status a message's state implies for a waiting caller: 0 when
 * delivered or still queued (with a warning), 67/69 when refused for
 * every recipient (then it is in failed/ and no DSN went out).
 */
static int
submit_outcome(const struct spool_entry *e, char *err, size_t errlen)
{
	size_t i, pending = 0, failed = 0, done = 0, at_rcpt = 0;

	for (i = 0; i < e->rcpts.n; i++) {
		done += e->rstate[i].status == SPOOL_RCPT_DONE;
		pending += e->rstate[i].status == SPOOL_RCPT_PENDING;
		if (e->rstate[i].status == SPOOL_RCPT_FAILED) {
			failed++;
			at_rcpt += e->rstate[i].at_rcpt;
		}
	}
	if (pending > 0) {
		log_user("%s: delivery deferred, the message stays queued: %s",
		    e->id, e->last);
		return 0;
	}
	if (failed > 0 && done == 0) {
		(void)util_snprintf(err, errlen, "%s: refused by the relay: %s "
		    "(kept in failed/)", e->id, e->last);
		return at_rcpt == failed ? EX_NOUSER : EX_UNAVAILABLE;
	}
	for (i = 0; i < e->rcpts.n; i++)
		if (e->rstate[i].status == SPOOL_RCPT_FAILED)
			log_user("%s: <%s> refused: %s", e->id, e->rcpts.v[i],
			    e->rstate[i].text);
	return 0;
}

/*
 * Detaches a child from the caller: its own session, and none of the
 * caller's pipes, which callers read until EOF (Symfony, subprocess).
 * A log on stderr stays only where stderr is a terminal or a file.
 */
static void
submit_detach(void)
{
	struct stat st;
	int fd;

	(void)setsid();
	if ((fd = open("/dev/null", O_RDWR)) != -1) {
		(void)dup2(fd, 0);
		(void)dup2(fd, 1);
		if (!log_to_stderr() || fstat(2, &st) == -1 ||
		    S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))
			(void)dup2(fd, 2);
		if (fd > 2)
			(void)close(fd);
	}
}

/*
 * We hold the runner lock: deliver e (locked, open) now, then hand the
 * rest of the queue to a detached child so the caller gets its answer.
 */
static int
submit_as_runner(struct runner *r, struct spool_entry *e, int tell_caller,
    char *err, size_t errlen)
{
	struct deliver_result res;
	long long next_due;
	int rc = 0;
	pid_t pid;

	runner_deliver(r, &e, 1, tell_caller ? e : NULL, &res);
	if (tell_caller)
		rc = submit_outcome(e, err, errlen);
	spool_entry_close(e);
	if (res.session.failure == RELAY_FAIL_NONE && runner_has_due(r)) {
		(void)fflush(NULL);
		if ((pid = fork()) == 0) {
			submit_detach();
			while (runner_pass(r, 0, 0, &next_due))
				(void)poll(NULL, 0, 50);
			runner_release(r);
			_exit(0);
		}
		if (pid == -1)
			log_warn("cannot start a queue runner");
		/* The child holds the lock now; ours is the same one. */
		(void)close(r->lockfd);
		r->lockfd = -1;
		ratelimit_close(&r->rl);
		return rc;
	}
	runner_release(r);
	return rc;
}

/*
 * Another runner is active: it delivers our message.  Wait for the
 * outcome (bounded by [queue] wait), or take over if it goes away.
 */
static int
submit_wait(struct submit *s, const char *id, int tell_caller, char *err,
    size_t errlen)
{
	long long deadline = util_monotonic_ms() +
	    (long long)s->cfg->queue.wait * 1000;
	struct spool_entry e;
	struct runner r;
	struct pollfd pfd;
	char why[512], path[4096];
	int waiter = -1, rc = 0, ifd, rl;

	if (tell_caller)
		waiter = spool_waiter_create(&s->spool, id);
	/* The runner's every step renames a state file into queue/ or
	 * removes from it: wake on that, not on a timer. */
	if ((ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) != -1 &&
	    (util_snprintf(path, sizeof(path), "%s/queue", s->spool.dir) ==
	    -1 || inotify_add_watch(ifd, path, IN_MOVED_TO | IN_MOVED_FROM |
	    IN_DELETE) == -1)) {
		(void)close(ifd);
		ifd = -1;
	}
	for (;;) {
		switch (spool_entry_peek(&s->spool, "queue", id, &e, why,
		    sizeof(why))) {
		case SPOOL_OPEN_OK:
			if (e.attempts > 0) {
				rc = tell_caller ? submit_outcome(&e, err,
				    errlen) : 0;
				spool_entry_close(&e);
				goto out;
			}
			spool_entry_close(&e);
			break;
		case SPOOL_OPEN_GONE:
			if (spool_entry_peek(&s->spool, "failed", id, &e, why,
			    sizeof(why)) == SPOOL_OPEN_OK) {
				rc = tell_caller ? submit_outcome(&e, err,
				    errlen) : 0;
				spool_entry_close(&e);
			}
			goto out;	/* else delivered */
		default:
			break;
		}
		rl = runner_acquire(&r, s->cfg, &s->spool, 0, s->verbose, NULL,
		    why, sizeof(why));
		if (rl == -1) {
			/* No lock at all (EMFILE...): nobody to wait for. */
			log_user("%s: queued; cannot wait for the queue runner: "
			    "%s", id, why);
			goto out;
		}
		if (rl == 1) {
			/* The runner is gone without it: our turn. */
			if (spool_entry_open(&s->spool, id, &e, why,
			    sizeof(why)) == SPOOL_OPEN_OK) {
				rc = submit_as_runner(&r, &e, tell_caller, err,
				    errlen);
				goto out;
			}
			runner_release(&r);
			continue;	/* look at it again */
		}
		if (util_monotonic_ms() > deadline) {
			log_user("%s: queued; the active queue runner has not "
			    "reached it within %us", id, s->cfg->queue.wait);
			goto out;
		}
		pfd.fd = ifd;
		pfd.events = POLLIN;
		if (poll(&pfd, ifd != -1 ? 1 : 0, ifd != -1 ? 200 : 20) > 0) {
			char buf[4096] __attribute__((aligned(
			    __alignof__(struct inotify_event))));

			while (read(ifd, buf, sizeof(buf)) > 0)
				;	/* what changed: we look anyway */
		}
	}
out:
	if (ifd != -1)
		(void)close(ifd);
	spool_waiter_remove(&s->spool, id, waiter);
	return rc;
}

/* An added From: is the login's, or the [sender] address. */
static char *
submit_added_from(const struct submit *s)
{
	return s->cfg->sender.address != NULL &&
	    s->cfg->sender.rewrite != CONFIG_REWRITE_NEVER ?
	    xstrdup(s->cfg->sender.address) :
	    util_asprintf("%s@%s", s->login, s->domain);
}

/*
 * [dkim] require: the From domain must be one we sign for, or have the
 * relay's DKIM record, else the relay refuses the message later.  A
 * lookup that gets no answer lets the message through (with a warning):
 * refusing mail because DNS is down would lose it.  0, or EX_DATAERR.
 */
static int
submit_check_dkim(struct submit *s, const struct message *m,
    const char *added_from, char *err, size_t errlen)
{
	struct addr_list al;
	struct dns_txt txt;
	enum dns_status st;
	const char *v, *at;
	char name[300], why[256], *domain;
	size_t len, i;
	int ok = 0;

	addr_list_init(&al);
	if ((v = message_header_value(m, "From", &len)) != NULL)
		(void)addr_list_parse(v, len, &al, why, sizeof(why));
	else
		addr_list_add(&al, added_from);
	if (al.n == 0) {
		(void)util_snprintf(err, errlen, "[dkim] require: the From "
		    "header has no address to sign for");
		addr_list_free(&al);
		return EX_DATAERR;
	}
	/* A bare local name is qualified like any local address. */
	at = strrchr(al.v[0], '@');
	domain = xstrdup(at != NULL ? at + 1 : s->domain);
	addr_list_free(&al);
	if (dkim_signing_domain(s->cfg, domain) != NULL) {
		free(domain);
		return 0;
	}
	(void)util_snprintf(name, sizeof(name), "%s._domainkey.%s",
	    RECORDS_DKIM_SELECTOR, domain);
	st = dns_txt(s->cfg->dns.server, name, &txt, why, sizeof(why));
	for (i = 0; st == DNS_FOUND && i < txt.n; i++)
		if (strstr(txt.v[i], "p=") != NULL)
			ok = 1;
	dns_txt_free(&txt);
	if (st == DNS_FAIL) {
		log_warnx("[dkim] require: cannot look up %s (%s); accepting "
		    "the message", name, why);
		ok = 1;
	}
	if (!ok) {
		char shown[128];

		util_sanitize(shown, sizeof(shown), domain, strlen(domain));
		(void)util_snprintf(err, errlen, "From domain %s cannot be "
		    "DKIM-signed: no [dkim] key signs for it and there is no "
		    "DKIM record at %s._domainkey.%s (TXT); create it (see "
		    "relayq dns-records %s) or add the domain to [dkim] "
		    "domain", shown, RECORDS_DKIM_SELECTOR, shown, shown);
		s->policy_refused = 1;
	}
	free(domain);
	return ok ? 0 : EX_DATAERR;
}

/* The spool sink, counting against [queue] max_size. */
struct submit_sink {
	struct spool_writer	*w;
	unsigned long long	 max;
	unsigned long long	 total;
	int			 too_big;
};

static int
submit_sink_write(void *arg, const char *p, size_t n)
{
	struct submit_sink *k = arg;

	k->total += n;
	if (k->max > 0 && k->total > k->max) {
		k->too_big = 1;
		return -1;
	}
	return spool_write(k->w, p, n);
}

/* The caller may not read the configuration: into the maildrop. */
static int
submit_drop(struct submit *s, struct linereader *lr, enum message_end end,
    const char *sender, struct addr_list *rcpts, int read_rcpts,
    char *queue_id, char *err, size_t errlen)
{
	struct maildrop_envelope env;
	int rc;

	if (rcpts->n == 0 && !read_rcpts) {
		(void)util_snprintf(err, errlen, "no recipients");
		return EX_DATAERR;
	}
	memset(&env, 0, sizeof(env));
	env.sender = sender;
	env.fullname = s->fullname;
	env.rcpts = rcpts;
	env.read_rcpts = read_rcpts;
	env.body8bit = s->body8bit;
	env.notify = s->dsn.notify;
	env.ret = s->dsn.ret;
	env.envid = s->dsn.envid;
	/* -bs may bring more messages: it keeps the group until the end. */
	rc = maildrop_write(s->cfg->queue.dir, &env, lr, end,
	    end == MESSAGE_END_SMTP, queue_id, err, errlen);
	if (rc == 0)
		log_info("%s: dropped into %s/%s for the queue runner, uid=%lu",
		    queue_id, s->cfg->queue.dir, MAILDROP_SUBDIR,
		    (unsigned long)getuid());
	return rc;
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
	int st, rc = EX_SOFTWARE, have_runner = 0;
	struct runner r;
	pid_t pid;

	memset(&e, 0, sizeof(e));
	e.fd = -1;
	queue_id[0] = '\0';
	s->policy_refused = 0;
	s->too_big = 0;
	if (s->cfg->drop)
		return submit_drop(s, lr, end, sender, rcpts, read_rcpts,
		    queue_id, err, errlen);
	if (s->arrival != 0)
		now = s->arrival;
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
		if ((rc = submit_resolve(s, rcpts, before, err, errlen)) != 0)
			goto done;
	}
	submit_rewrite_from(s, &msg);
	if (rcpts->n == 0) {
		(void)util_snprintf(err, errlen, "no recipients: none given "
		    "and none in To:, Cc: or Bcc:");
		rc = EX_DATAERR;
		goto done;
	}
	if (s->cfg->dkim.require) {
		char *from = submit_added_from(s);

		rc = submit_check_dkim(s, &msg, from, err, errlen);
		free(from);
		if (rc != 0)
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
	if (spool_create_as(&s->spool, w, &s->origin, now, sender, rcpts,
	    &s->dsn, why, sizeof(why)) == -1) {
		rc = submit_spool_status(errno);
		(void)util_snprintf(err, errlen, "%s", why);
		free(w);
		w = NULL;
		goto done;
	}
	/* Our Message-IDs carry the sender domain, not a local host name. */
	(void)util_snprintf(msgid, sizeof(msgid), "<%s.relayq@%s>", w->id,
	    s->cfg->sender.address != NULL ?
	    strrchr(s->cfg->sender.address, '@') + 1 : s->domain);
	def.from_addr = NULL;
	def.fullname = s->fullname;
	def.msgid = msgid;
	def.date = now;
	{
		char *from = submit_added_from(s);
		struct submit_sink sink = { w, s->cfg->queue.max_size, 0, 0 };

		def.from_addr = from;
		st = message_write(&msg, lr, &def, submit_sink_write, &sink,
		    why, sizeof(why));
		free(from);
		if (sink.too_big) {
			spool_abort(w);
			(void)util_snprintf(err, errlen, "message larger than "
			    "[queue] max_size (%llu octets)",
			    s->cfg->queue.max_size);
			s->too_big = 1;
			rc = EX_DATAERR;
			goto done;
		}
	}
	if (st != MESSAGE_OK) {
		rc = st == MESSAGE_EDATA ? EX_DATAERR : st == MESSAGE_EWRITE ?
		    submit_spool_status(w->saved_errno) : EX_TEMPFAIL;
		spool_abort(w);
		(void)util_snprintf(err, errlen, "%s", why);
		goto done;
	}
	/* Only the runner talks to the relay: are we it? */
	if (s->delivery == CONFIG_DELIVERY_FOREGROUND)
		have_runner = runner_acquire(&r, s->cfg, &s->spool, 0,
		    s->verbose, NULL, why, sizeof(why)) == 1;
	if (spool_commit(&s->spool, w, msg.eightbit || s->body8bit, have_runner,
	    &e, why,
	    sizeof(why)) == -1) {
		rc = submit_spool_status(errno);
		(void)util_snprintf(err, errlen, "%s", why);
		if (have_runner)
			runner_release(&r);
		goto done;
	}
	/* From here on the message is safe. */
	(void)util_strlcpy(queue_id, e.id, SPOOL_ID_LEN + 1);
	e.arrival = now;
	e.uid = s->origin.uid;
	e.sender = xstrdup(sender);
	e.notify = s->dsn.notify != NULL ? xstrdup(s->dsn.notify) : NULL;
	e.ret = s->dsn.ret != NULL ? xstrdup(s->dsn.ret) : NULL;
	e.envid = s->dsn.envid != NULL ? xstrdup(s->dsn.envid) : NULL;
	for (i = 0; i < rcpts->n; i++)
		addr_list_add(&e.rcpts, rcpts->v[i]);
	e.rstate = xcalloc(e.rcpts.n, sizeof(*e.rstate));
	e.last[0] = '\0';
	log_info("%s: queued from=<%s>, nrcpt=%zu, size=%zu, uid=%lu",
	    e.id, e.sender, e.rcpts.n, e.data_len, e.uid);
	rc = 0;
	switch (s->delivery) {
	case CONFIG_DELIVERY_FOREGROUND:
		if (have_runner)
			rc = submit_as_runner(&r, &e, 1, err, errlen);
		else
			rc = submit_wait(s, e.id, 1, err, errlen);
		break;
	case CONFIG_DELIVERY_BACKGROUND:
		(void)fflush(NULL);
		if ((pid = fork()) == 0) {
			submit_detach();
			(void)submit_wait(s, e.id, 0, err, errlen);
			_exit(0);
		}
		if (pid == -1)
			log_warn("%s: queued, but cannot start the delivery",
			    e.id);
		break;
	case CONFIG_DELIVERY_QUEUE:
		break;
	}
done:
	/* In a dialogue the client goes on after the final dot. */
	if (rc == EX_DATAERR && end == MESSAGE_END_SMTP)
		message_drain(&msg, lr);
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
