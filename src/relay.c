/*
 * relay.c -- one SMTP session with the smarthost, through libESMTP.
 *
 * libESMTP 1.1.0 pitfalls handled here (see the project's API notes):
 * smtp_start_session() returns 1 for nearly every failure after the TCP
 * connect, so the outcome is read from events and per-message statuses;
 * a failed AUTH makes it go on unauthenticated, so the monitor callback
 * watches the AUTH replies and cuts the connection on a refusal; its
 * default SSL_CTX is unsafe (freed by the first session), so ours is
 * always passed; it stat()s ~/.config/libesmtp/ unless XDG_CONFIG_DIR
 * points elsewhere; connect() has no timeout, so an alarm covers it; and
 * the message callback's *ctx is free()d by the library, so state lives
 * in our relay_msg instead.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <openssl/ssl.h>
#include <auth-client.h>
#include <libesmtp.h>

#include "config.h"
#include "relay.h"
#include "replyscan.h"
#include "tls.h"
#include "tunnel.h"
#include "util.h"

#define RELAY_CHUNK 65536

struct relay_state {
	const struct config	*cfg;
	const char		*user;
	const char		*password;
	auth_context_t		 auth;
	SSL			*ssl;		/* after STARTTLS */
	struct tunnel		*tunnel;	/* implicit TLS, or NULL */
	int			 verbose;
	int			 connected;
	int			 tls_ok;
	long long		 starttls_ms;	/* when STARTTLS was sent */
	int			 no_starttls;
	char			 cert_error[256];
	int			 in_auth;	/* between AUTH and its result */
	int			 authenticated;
	int			 auth_failed;
	char			 auth_reply[RELAY_TEXT_MAX];
	const struct relay_pacer *pacer;
	int			 greeting;	/* the first reply's code */
	char			 greeting_text[RELAY_TEXT_MAX];
	struct relay_msg	**msgs;		/* every message of the session */
	size_t			 nmsgs;
	size_t			 added;		/* of those, in the session */
	int			 interrupted;
	int			 setup_failed;
	int			 offers_8bitmime;	/* in the last EHLO */
	int			 in_ehlo;
	/* The reply stream, checked as it is read (RFC 5321 4.2): one
	 * code per reply, three digits, in time; nothing after the reply
	 * to STARTTLS.  libESMTP would take a malformed reply's first code
	 * as a refusal, and buffered plaintext for replies inside TLS. */
	struct reply_scan	 scan;
	long long		 await_ms;	/* last command, or reply */
	int			 data_end;	/* last write ended the data */
	int			 await_starttls;
	char			 gline[RELAY_TEXT_MAX];	/* the greeting */
	size_t			 glen;
	int			 plain_fd;	/* the socket before TLS */
	int			 bad_stream;
	enum relay_failure	 bad_kind;
	char			 bad_reason[RELAY_TEXT_MAX];
};

static int relay_add(smtp_session_t, struct relay_state *, struct relay_msg *);
static void relay_collect(smtp_message_t, void *);

static void
relay_alarm(int sig)
{
	(void)sig;	/* only interrupts a hanging connect() */
}

/* Ends the connection at once; libESMTP then fails what is left. */
static void
relay_cut(struct relay_state *rs)
{
	if (rs->ssl != NULL && SSL_get_fd(rs->ssl) >= 0)
		(void)shutdown(SSL_get_fd(rs->ssl), SHUT_RDWR);
	else if (rs->tunnel != NULL)
		tunnel_cut(rs->tunnel);
	else if (rs->plain_fd >= 0)
		(void)shutdown(rs->plain_fd, SHUT_RDWR);
}

/*
 * libESMTP keeps its socket to itself until STARTTLS; to cut a relay
 * that misbehaves before that, find it: the newest TCP socket whose
 * peer has the relay's port.
 */
static int
relay_find_socket(const struct config *cfg)
{
	struct sockaddr_storage ss;
	socklen_t len, tlen;
	int fd, type, found = -1;
	unsigned port;

	for (fd = 3; fd < 4096; fd++) {
		tlen = sizeof(type);
		len = sizeof(ss);
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == -1 ||
		    type != SOCK_STREAM ||
		    getpeername(fd, (struct sockaddr *)&ss, &len) == -1)
			continue;
		if (ss.ss_family == AF_INET)
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		else
			continue;
		if (port == cfg->relay.port)
			found = fd;
	}
	return found;
}

/*
 * libESMTP 1.1.0 reads before it flushes: when TLS 1.3 NewSessionTicket
 * records are readable at its first poll after queueing EHLO, SSL_read()
 * eats them, wants more, and sio_sslpoll() blocks with EHLO still unsent
 * until the timeout.  Servers send the tickets right after the handshake,
 * so wait for them here, before EHLO is queued, and let OpenSSL take
 * them in with SSL_peek() (which leaves any application data alone).
 * The wait is bounded by twice the handshake time (one round trip brings
 * the tickets), at least 20 ms, at most 1 s, once per session.
 */
static void
relay_absorb_tickets(struct relay_state *rs)
{
	long long start = util_monotonic_ms(), window, left;
	struct pollfd pfd;
	int fd = SSL_get_fd(rs->ssl), got = 0;
	char c;
	int n;

	if (fd < 0 || SSL_version(rs->ssl) < TLS1_3_VERSION)
		return;
	window = 2 * (start - rs->starttls_ms);
	window = window < 20 ? 20 : window > 1000 ? 1000 : window;
	for (;;) {
		left = window - (util_monotonic_ms() - start);
		if (got && left > 10)
			left = 10;	/* stragglers of the same burst */
		if (left <= 0)
			return;
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, (int)left) <= 0)
			return;
		if ((n = SSL_peek(rs->ssl, &c, 1)) > 0)
			return;		/* application data: not ours */
		if (SSL_get_error(rs->ssl, n) != SSL_ERROR_WANT_READ)
			return;
		got = 1;
	}
}

/* Passes a reply to the pacer's note hook, as "451 4.7.1 text". */
static void
relay_note(struct relay_state *rs, const smtp_status_t *st)
{
	char text[RELAY_TEXT_MAX], buf[RELAY_TEXT_MAX - 8];

	if (rs->pacer == NULL || rs->pacer->note == NULL || st == NULL ||
	    st->code == 0)
		return;
	util_sanitize(buf, sizeof(buf), st->text != NULL ? st->text : "",
	    st->text != NULL ? strlen(st->text) : 0);
	(void)util_snprintf(text, sizeof(text), "%d %s", st->code, buf);
	rs->pacer->note(rs->pacer->arg, text);
}

static void
relay_event(smtp_session_t session, int event, void *arg, ...)
{
	struct relay_state *rs = arg;
	struct relay_msg *m;
	va_list ap;
	int *ok;

	va_start(ap, arg);
	switch (event) {
	case SMTP_EV_CONNECT:
		(void)alarm(0);
		rs->connected = 1;
		rs->await_ms = util_monotonic_ms();	/* the greeting */
		if (rs->tunnel == NULL)
			rs->plain_fd = relay_find_socket(rs->cfg);
		break;
	case SMTP_EV_STARTTLS_OK: {
		int one = 1;

		rs->ssl = va_arg(ap, SSL *);
		rs->tls_ok = 1;
		/* libESMTP never sets TCP_NODELAY: each message's last small
		 * TLS record then waits for the relay's delayed ACK (about
		 * 40 ms a message, measured).  The socket is ours to tune. */
		if (SSL_get_fd(rs->ssl) >= 0)
			(void)setsockopt(SSL_get_fd(rs->ssl), IPPROTO_TCP,
			    TCP_NODELAY, &one, sizeof(one));
		relay_absorb_tickets(rs);
		/* Cut before the first command inside TLS, whose reply
		 * could come from what was injected before it. */
		if (rs->bad_stream)
			relay_cut(rs);
		break;
	}
	case SMTP_EV_INVALID_PEER_CERTIFICATE: {
		long vr = va_arg(ap, long);

		ok = va_arg(ap, int *);
		*ok = 0;
		(void)util_snprintf(rs->cert_error, sizeof(rs->cert_error),
		    "certificate verification failed: %s",
		    X509_verify_cert_error_string(vr));
		break;
	}
	case SMTP_EV_WRONG_PEER_CERTIFICATE: {
		SSL *ssl;

		ok = va_arg(ap, int *);
		(void)va_arg(ap, const char *);
		ssl = va_arg(ap, SSL *);
		/* libESMTP compared the DNS canonical name; we compare the
		 * configured one (the handshake already did, too). */
		*ok = tls_peer_matches(ssl, rs->cfg->relay.host);
		if (!*ok)
			(void)util_snprintf(rs->cert_error,
			    sizeof(rs->cert_error), "certificate is not "
			    "valid for %s", rs->cfg->relay.host);
		break;
	}
	case SMTP_EV_NO_PEER_CERTIFICATE:
		ok = va_arg(ap, int *);
		*ok = 0;
		(void)util_strlcpy(rs->cert_error, "server sent no certificate",
		    sizeof(rs->cert_error));
		break;
	case SMTP_EV_NO_CLIENT_CERTIFICATE:
		ok = va_arg(ap, int *);
		*ok = 1;	/* we authenticate with AUTH, not certificates */
		break;
	case SMTP_EV_WEAK_CIPHER: {
		int bits = va_arg(ap, int);

		ok = va_arg(ap, int *);
		*ok = bits >= 128;
		break;
	}
	case SMTP_EV_EXTNA_STARTTLS:
		rs->no_starttls = 1;
		break;
	case SMTP_EV_EXTNA_DSN: {
		int *quit = va_arg(ap, int *);

		*quit = 0;
		break;
	}
	case SMTP_EV_MAILSTATUS: {
		/* The last message has started: add one more behind it, so
		 * the session goes on whatever becomes of this one (a message
		 * refused at RCPT ends without MESSAGESENT). */
		const struct relay_pacer *p = rs->pacer;
		struct relay_msg *more;
		smtp_message_t sm;

		(void)va_arg(ap, const char *);
		sm = va_arg(ap, smtp_message_t);
		relay_note(rs, smtp_reverse_path_status(sm));
		m = smtp_message_get_application_data(sm);
		if (p != NULL && p->feed != NULL && m != NULL &&
		    m->index + 1 == rs->added && !rs->interrupted &&
		    !rs->bad_stream &&
		    (more = p->feed(p->arg)) != NULL &&
		    relay_add(session, rs, more) == -1)
			rs->setup_failed = 1;
		break;
	}
	case SMTP_EV_RCPTSTATUS: {
		smtp_recipient_t r;

		(void)va_arg(ap, const char *);
		r = va_arg(ap, smtp_recipient_t);
		relay_note(rs, smtp_recipient_status(r));
		break;
	}
	case SMTP_EV_MESSAGESENT: {
		/* Fired after the final reply: pace the next message here,
		 * and top the session up while it is open. */
		smtp_message_t sm = va_arg(ap, smtp_message_t);
		const struct relay_pacer *p = rs->pacer;
		int idled;

		m = smtp_message_get_application_data(sm);
		relay_note(rs, smtp_message_transfer_status(sm));
		/* After a malformed reply nothing is settled here: the
		 * session fails, and what it carried stays queued. */
		if (p == NULL || m == NULL || rs->bad_stream)
			break;
		if (p->sent != NULL)
			p->sent(p->arg);
		if (p->done != NULL) {
			relay_collect(sm, NULL);
			p->done(p->arg, m);
		}
		/* The last message is done: keep the connection for what
		 * comes next, as long as the pacer wants.  libESMTP looks
		 * for a next message only after this event. */
		for (idled = 0; m->index + 1 == rs->added && !rs->interrupted &&
		    !rs->setup_failed && p->feed != NULL && p->idle != NULL;
		    idled = 1) {
			struct relay_msg *more = p->feed(p->arg);

			if (more != NULL) {
				more->after_idle = idled;
				if (relay_add(session, rs, more) == -1)
					rs->setup_failed = 1;
				break;
			}
			if (!p->idle(p->arg))
				break;
		}
		if (m->index + 1 < rs->added && p->wait != NULL &&
		    p->wait(p->arg) == -1) {
			rs->interrupted = 1;
			relay_cut(rs);
		}
		break;
	}
	default:
		break;
	}
	va_end(ap);
}

static void
relay_transcript(const char *dir, const char *buf, int len)
{
	char line[512];
	const char *p = buf, *e = buf + len, *nl;

	while (p < e) {
		nl = memchr(p, '\n', (size_t)(e - p));
		if (nl == NULL)
			nl = e;
		util_sanitize(line, sizeof(line), p, (size_t)(nl - p));
		if (line[0] != '\0')
			(void)fprintf(stderr, "%s %s\n", dir, line);
		p = nl < e ? nl + 1 : e;
	}
}

/* Declares BODY=8BITMIME on the 8-bit messages. */
static void
relay_set_8bitmime(struct relay_state *rs)
{
	size_t i;

	rs->offers_8bitmime = 1;
	for (i = 0; i < rs->nmsgs; i++)
		if (rs->msgs[i]->eightbit && rs->msgs[i]->handle != NULL)
			(void)smtp_8bitmime_set_body(rs->msgs[i]->handle,
			    E8bitmime_8BITMIME);
}

/*
 * libESMTP ends the whole session when a message requires 8BITMIME and
 * the relay lacks it, and that requirement sticks to the session once
 * set, so BODY=8BITMIME is declared only when the final EHLO reply
 * offers it (this runs before libESMTP looks at the reply).
 */
static void
relay_scan_ehlo(struct relay_state *rs, const char *buf, int len)
{
	const char *p = buf, *e = buf + len, *nl;

	for (; p < e; p = nl < e ? nl + 1 : e) {
		size_t n;

		nl = memchr(p, '\n', (size_t)(e - p));
		if (nl == NULL)
			nl = e;
		n = (size_t)(nl - p);
		if (n >= 12 && util_strncaseeq(p + 4, "8BITMIME", 8) &&
		    (n == 12 || p[12] == '\r' || p[12] == '\n' ||
		    p[12] == ' '))
			relay_set_8bitmime(rs);
		if (n >= 4 && p[3] == ' ')
			rs->in_ehlo = 0;	/* the last line of the reply */
	}
}

static void relay_bad(struct relay_state *, enum relay_failure,
    const char *, ...) __attribute__((format(printf, 3, 4)));

/* The stream cannot be trusted: end the session, keep the messages. */
static void
relay_bad(struct relay_state *rs, enum relay_failure kind, const char *fmt,
    ...)
{
	va_list ap;

	if (rs->bad_stream)
		return;
	rs->bad_stream = 1;
	rs->bad_kind = kind;
	va_start(ap, fmt);
	(void)util_vsnprintf(rs->bad_reason, sizeof(rs->bad_reason), fmt, ap);
	va_end(ap);
	relay_cut(rs);
}

/* Checks what was read: reply syntax, and time since the command. */
static void
relay_check_replies(struct relay_state *rs, const char *buf, size_t len)
{
	long long limit = (long long)rs->cfg->relay.timeout * 1000;
	size_t i, used;

	/* A relay trickling one reply out byte by byte gets the timeout
	 * for the whole reply (the final dot's: 10 minutes at least). */
	if (rs->data_end && limit < 600000)
		limit = 600000;
	if (rs->await_ms > 0 && util_monotonic_ms() - rs->await_ms > limit)
		relay_bad(rs, RELAY_FAIL_PROTOCOL, "%s took more than %lld s "
		    "for one reply", rs->cfg->relay.host, limit / 1000);
	while (len > 0 && !rs->bad_stream) {
		enum reply_scan_result r = reply_scan_feed(&rs->scan, buf, len,
		    &used);

		for (i = 0; rs->greeting == 0 && i < used; i++)
			if (buf[i] != '\n' && rs->glen < sizeof(rs->gline))
				rs->gline[rs->glen++] = buf[i];
		buf += used;
		len -= used;
		if (r == REPLY_SCAN_BAD) {
			relay_bad(rs, RELAY_FAIL_PROTOCOL, "%s sent %s",
			    rs->cfg->relay.host, rs->scan.why);
			break;
		}
		if (r != REPLY_SCAN_REPLY)
			continue;
		rs->await_ms = util_monotonic_ms();
		if (rs->greeting == 0) {
			rs->greeting = rs->scan.last;
			util_sanitize(rs->greeting_text,
			    sizeof(rs->greeting_text), rs->gline, rs->glen);
		}
		if (rs->await_starttls) {
			rs->await_starttls = 0;
			if (len > 0)
				relay_bad(rs, RELAY_FAIL_TLS, "%s sent more after "
				    "its reply to STARTTLS, to be read as if "
				    "inside TLS (an injection); nothing was sent",
				    rs->cfg->relay.host);
		}
	}
}

/*
 * Sees every command and reply.  It tracks AUTH so that a refusal ends
 * the session (libESMTP would go on unauthenticated) and so that the
 * credentials never reach the verbose transcript.
 */
static void
relay_monitor(const char *buf, int len, int writing, void *arg)
{
	struct relay_state *rs = arg;

	if (len <= 0)
		return;
	if (writing) {
		rs->await_ms = util_monotonic_ms();
		rs->data_end = 0;	/* (the data itself is not shown) */
		if (len >= 8 && util_strncaseeq(buf, "STARTTLS", 8)) {
			rs->starttls_ms = util_monotonic_ms();
			rs->await_starttls = 1;
		}
		/* Only the EHLO that counts: after TLS when STARTTLS. */
		if (len >= 5 && util_strncaseeq(buf, "EHLO ", 5))
			rs->in_ehlo = rs->tls_ok ||
			    rs->cfg->relay.tls != CONFIG_TLS_STARTTLS;
		if (len >= 5 && util_strncaseeq(buf, "AUTH ", 5)) {
			rs->in_auth = 1;
			if (rs->verbose) {
				const char *sp = memchr(buf + 5, ' ',
				    (size_t)len - 5);
				int n = sp != NULL ? (int)(sp - buf) : len;

				relay_transcript(">>>", buf, n);
				if (sp != NULL)
					(void)fprintf(stderr,
					    ">>> (credentials hidden)\n");
			}
		} else if (rs->in_auth) {
			if (rs->verbose)
				(void)fprintf(stderr,
				    ">>> (credentials hidden)\n");
		} else if (rs->verbose)
			relay_transcript(">>>", buf, len);
		return;
	}
	if (rs->verbose)
		relay_transcript("<<<", buf, len);
	if (rs->in_ehlo)
		relay_scan_ehlo(rs, buf, len);
	relay_check_replies(rs, buf, (size_t)len);
	if (!rs->in_auth || len < 3)
		return;
	if (buf[0] == '3')
		return;		/* 334: the exchange goes on */
	rs->in_auth = 0;
	if (buf[0] == '2') {
		rs->authenticated = 1;
		return;
	}
	rs->auth_failed = 1;
	util_sanitize(rs->auth_reply, sizeof(rs->auth_reply), buf,
	    (size_t)len);
	relay_cut(rs);
}

static int
relay_interact(auth_client_request_t req, char **result, int fields,
    void *arg)
{
	struct relay_state *rs = arg;
	const char *mech = auth_mechanism_name(rs->auth);
	int i;

	/* Only the mechanisms we vouch for: never NTLM and the like. */
	if (mech == NULL || (!util_strcaseeq(mech, "PLAIN") &&
	    !util_strcaseeq(mech, "LOGIN")))
		return 0;
	for (i = 0; i < fields; i++) {
		if (req[i].flags & AUTH_USER)
			result[i] = (char *)rs->user;
		else if (req[i].flags & AUTH_PASS)
			result[i] = (char *)rs->password;
		else if (req[i].flags & AUTH_REALM)
			result[i] = (char *)"";
		else
			return 0;
	}
	return 1;
}

static const char *
relay_message_cb(void **ctx, int *len, void *arg)
{
	struct relay_msg *m = arg;
	size_t want;

	(void)ctx;
	if (len == NULL) {
		m->pos = 0;
		return NULL;
	}
	if (m->pos < m->head_len) {
		/* The signature fields go out first, in one piece. */
		*len = (int)(m->head_len - m->pos);
		want = m->pos;
		m->pos = m->head_len;
		return m->head + want;
	}
	if (m->pos >= m->head_len + m->data_len || m->read_error) {
		/* Everything went out; libESMTP sends the final dot next,
		 * and the reply to it gets 10 minutes. */
		if (!m->read_error) {
			struct relay_state *rs = m->state;

			m->data_sent = 1;
			rs->data_end = 1;
			rs->await_ms = util_monotonic_ms();
		}
		*len = 0;
		return NULL;
	}
	want = m->head_len + m->data_len - m->pos;
	if (want > RELAY_CHUNK)
		want = RELAY_CHUNK;
	if (util_pread_full(m->fd, m->chunk, want, m->data_off +
	    (off_t)(m->pos - m->head_len)) == -1) {
		/* A short message must never be accepted. */
		m->read_error = 1;
		relay_cut(m->state);
		*len = 0;
		return NULL;
	}
	m->pos += want;
	*len = (int)want;
	return m->chunk;
}

static void
relay_status(const smtp_status_t *st, int *code, char *text)
{
	*code = st != NULL ? st->code : 0;
	text[0] = '\0';
	if (st != NULL && st->text != NULL) {
		char buf[RELAY_TEXT_MAX - 8];

		util_sanitize(buf, sizeof(buf), st->text, strlen(st->text));
		(void)util_snprintf(text, RELAY_TEXT_MAX, "%d %s", st->code,
		    buf);
	}
}

static void
relay_collect_rcpt(smtp_recipient_t r, const char *mailbox, void *arg)
{
	struct relay_msg *m = arg;
	struct relay_rcpt *rc = smtp_recipient_get_application_data(r);
	const smtp_status_t *st = smtp_recipient_status(r);

	(void)mailbox;
	if (rc == NULL)
		return;
	if (st != NULL && st->code >= 200 && st->code < 300) {
		/* Accepted at RCPT: the outcome is the end of DATA. */
		rc->code = m->data_code;
		(void)util_strlcpy(rc->text, m->data_text, sizeof(rc->text));
	} else {
		relay_status(st, &rc->code, rc->text);
		rc->at_rcpt = rc->code != 0;
	}
}

static void
relay_collect(smtp_message_t msg, void *arg)
{
	struct relay_msg *m = smtp_message_get_application_data(msg);

	(void)arg;
	if (m == NULL)
		return;
	relay_status(smtp_reverse_path_status(msg), &m->mail_code,
	    m->mail_text);
	relay_status(smtp_message_transfer_status(msg), &m->data_code,
	    m->data_text);
	(void)smtp_enumerate_recipients(msg, relay_collect_rcpt, m);
}

/* The EHLO name: this host's name as the resolver knows it. */
static void
relay_ehlo_name(char *buf, size_t len)
{
	if (gethostname(buf, len) == -1 || buf[0] == '\0')
		(void)util_strlcpy(buf, "localhost", len);
	buf[len - 1] = '\0';
}

static void
relay_fail(struct relay_session *out, enum relay_failure f, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));

static void
relay_fail(struct relay_session *out, enum relay_failure f, const char *fmt,
    ...)
{
	va_list ap;

	if (out->failure != RELAY_FAIL_NONE)
		return;
	out->failure = f;
	va_start(ap, fmt);
	(void)util_vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
	va_end(ap);
}

/* "never" or "success,failure,delay" as libESMTP's NOTIFY flags. */
static enum notify_flags
relay_notify_flags(const char *v)
{
	int f = 0;
	size_t n;

	if (util_strcaseeq(v, "never"))
		return Notify_NEVER;
	for (; *v != '\0'; v += n + (v[n] == ',')) {
		n = strcspn(v, ",");
		if (n == 7 && util_strncaseeq(v, "success", 7))
			f |= Notify_SUCCESS;
		else if (n == 7 && util_strncaseeq(v, "failure", 7))
			f |= Notify_FAILURE;
		else if (n == 5 && util_strncaseeq(v, "delay", 5))
			f |= Notify_DELAY;
	}
	return (enum notify_flags)f;
}

/* Adds one message to the session (also while it runs).  0 or -1. */
static int
relay_add(smtp_session_t session, struct relay_state *rs, struct relay_msg *m)
{
	smtp_message_t sm;
	size_t j;

	m->chunk = xmalloc(RELAY_CHUNK);
	m->state = rs;
	m->index = rs->added;
	rs->msgs = xreallocarray(rs->msgs, rs->nmsgs + 1, sizeof(*rs->msgs));
	rs->msgs[rs->nmsgs++] = m;
	if ((sm = smtp_add_message(session)) == NULL ||
	    !smtp_set_reverse_path(sm, m->sender[0] != '\0' ? m->sender :
	    NULL) || !smtp_set_messagecb(sm, relay_message_cb, m) ||
	    !smtp_size_set_estimate(sm, m->head_len + m->data_len))
		return -1;
	smtp_message_set_application_data_release(sm, m, NULL);
	m->handle = sm;
	if (m->eightbit && rs->offers_8bitmime)
		(void)smtp_8bitmime_set_body(sm, E8bitmime_8BITMIME);
	/* DSN requests go out only when the relay offers DSN. */
	if (m->ret != NULL)
		(void)smtp_dsn_set_ret(sm, util_strcaseeq(m->ret, "full") ?
		    Ret_FULL : Ret_HDRS);
	if (m->envid != NULL)
		(void)smtp_dsn_set_envid(sm, m->envid);
	for (j = 0; j < m->nrcpts; j++) {
		smtp_recipient_t r = smtp_add_recipient(sm, m->rcpts[j].addr);

		if (r == NULL)
			return -1;
		smtp_recipient_set_application_data_release(r, &m->rcpts[j],
		    NULL);
		if (m->notify != NULL)
			(void)smtp_dsn_set_notify(r, relay_notify_flags(
			    m->notify));
	}
	rs->added++;
	return 0;
}

void
relay_deliver(const struct config *cfg, const char *user,
    const char *password, struct relay_msg **msgs, size_t n, int verbose,
    const struct relay_pacer *pacer, struct relay_session *out)
{
	static const int phases[] = { Timeout_GREETING, Timeout_ENVELOPE,
		Timeout_DATA, Timeout_TRANSFER, Timeout_DATA2 };
	struct relay_state rs;
	struct sigaction sa, old_sa;
	struct tunnel tun;
	smtp_session_t session = NULL;
	char hostport[300], ehlo[256], err[512], why[256];
	SSL_CTX *ctx = NULL;
	size_t i, added = 0;
	int rc, tunnelled = 0;

	memset(out, 0, sizeof(*out));
	memset(&rs, 0, sizeof(rs));
	rs.cfg = cfg;
	rs.plain_fd = -1;
	rs.user = user;
	rs.password = password;
	rs.verbose = verbose;
	rs.pacer = pacer;
	for (i = 0; i < n; i++)
		msgs[i]->chunk = NULL;

	/* Keep libESMTP away from $HOME/.config/libesmtp/. */
	if (setenv("XDG_CONFIG_DIR", "/nonexistent", 1) == -1) {
		relay_fail(out, RELAY_FAIL_PROTOCOL, "setenv: %s",
		    strerror(errno));
		return;
	}
	if (cfg->relay.tls != CONFIG_TLS_NONE) {
		tls_verify_reset();
		if ((ctx = tls_client_ctx(cfg, err, sizeof(err))) == NULL) {
			relay_fail(out, RELAY_FAIL_TLS, "%s", err);
			return;
		}
	}
	if (cfg->relay.tls == CONFIG_TLS_IMPLICIT) {
		/* libESMTP 1.1.0 cannot do TLS on connect: a thread does
		 * the verified TLS and hands it over a loopback pipe. */
		if (tunnel_start(&tun, cfg, ctx, err, sizeof(err)) == -1) {
			relay_fail(out, RELAY_FAIL_CONNECT, "%s", err);
			SSL_CTX_free(ctx);
			return;
		}
		tunnelled = 1;
		(void)util_snprintf(hostport, sizeof(hostport),
		    "127.0.0.1:%u", tun.local_port);
	} else
		(void)util_snprintf(hostport, sizeof(hostport), "%s:%u",
		    cfg->relay.host, cfg->relay.port);

	auth_client_init();
	if ((session = smtp_create_session()) == NULL) {
		relay_fail(out, RELAY_FAIL_PROTOCOL, "smtp_create_session failed");
		goto done;
	}
	relay_ehlo_name(ehlo, sizeof(ehlo));
	if (!smtp_set_server(session, hostport) ||
	    !smtp_set_hostname(session, ehlo) ||
	    !smtp_set_eventcb(session, relay_event, &rs) ||
	    !smtp_set_monitorcb(session, relay_monitor, &rs, 0)) {
		relay_fail(out, RELAY_FAIL_PROTOCOL, "libESMTP setup failed");
		goto done;
	}
	for (i = 0; i < UTIL_ARRAYLEN(phases); i++) {
		long ms = (long)cfg->relay.timeout * 1000;

		/* RFC 5321 4.5.3.2.6: the reply to the final dot gets 10
		 * minutes, whatever the timeout: giving up sooner only
		 * makes a duplicate likely. */
		if (phases[i] == Timeout_DATA2 && ms < 600000)
			ms = 600000;
		(void)smtp_set_timeout(session, phases[i] |
		    Timeout_OVERRIDE_RFC2822_MINIMUM, ms);
	}
	if (cfg->relay.tls == CONFIG_TLS_STARTTLS) {
		if (!smtp_starttls_enable(session, Starttls_REQUIRED) ||
		    !smtp_starttls_set_ctx(session, ctx)) {
			relay_fail(out, RELAY_FAIL_TLS, "STARTTLS setup failed");
			goto done;
		}
	} else
		(void)smtp_starttls_enable(session, Starttls_DISABLED);
	if (user != NULL) {
		rs.auth = auth_create_context();
		if (rs.auth == NULL ||
		    !auth_set_mechanism_flags(rs.auth, AUTH_PLUGIN_PLAIN, 0) ||
		    !auth_set_interact_cb(rs.auth, relay_interact, &rs) ||
		    !smtp_auth_set_context(session, rs.auth)) {
			relay_fail(out, RELAY_FAIL_PROTOCOL, "AUTH setup failed");
			goto done;
		}
	}
	for (i = 0; i < n; i++) {
		if (msgs[i]->nrcpts == 0)
			continue;
		if (relay_add(session, &rs, msgs[i]) == -1) {
			relay_fail(out, RELAY_FAIL_PROTOCOL,
			    "libESMTP message setup failed");
			goto done;
		}
	}
	added = rs.added;
	if (added == 0)
		goto done;
	if (pacer != NULL && pacer->wait != NULL &&
	    pacer->wait(pacer->arg) == -1) {
		out->interrupted = 1;
		goto done;
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = relay_alarm;	/* no SA_RESTART: EINTR connect() */
	(void)sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGALRM, &sa, &old_sa);
	if (tunnelled)
		rs.tunnel = &tun;
	(void)alarm(cfg->relay.timeout);
	rc = smtp_start_session(session);
	(void)alarm(0);
	(void)sigaction(SIGALRM, &old_sa, NULL);

	(void)smtp_enumerate_messages(session, relay_collect, NULL);
	if (tunnelled) {
		tunnel_stop(&tun);
		if (tunnel_failed(&tun, why, sizeof(why)))
			relay_fail(out, RELAY_FAIL_TLS, "%s", why);
	}
	if (rc == 0 || !rs.connected) {
		smtp_strerror(smtp_errno(), why, sizeof(why));
		relay_fail(out, RELAY_FAIL_CONNECT, "cannot connect to %s:%u: "
		    "%s", cfg->relay.host, cfg->relay.port, why);
	} else if (rs.bad_stream) {
		relay_fail(out, rs.bad_kind, "%s", rs.bad_reason);
	} else if (rs.greeting != 220) {
		/* 421 and friends: busy or closed; never the message's fault. */
		relay_fail(out, RELAY_FAIL_CONNECT, "relay %s greeted with: %s",
		    cfg->relay.host, rs.greeting ? rs.greeting_text :
		    "nothing (connection closed)");
	} else if (cfg->relay.tls == CONFIG_TLS_STARTTLS && !rs.tls_ok) {
		if (rs.no_starttls)
			relay_fail(out, RELAY_FAIL_TLS, "relay %s does not "
			    "offer STARTTLS; nothing was sent",
			    cfg->relay.host);
		else if (tls_verify_error()[0] != '\0')
			relay_fail(out, RELAY_FAIL_TLS, "TLS with %s: %s",
			    cfg->relay.host, tls_verify_error());
		else if (rs.cert_error[0] != '\0')
			relay_fail(out, RELAY_FAIL_TLS, "TLS with %s: %s",
			    cfg->relay.host, rs.cert_error);
		else {
			smtp_strerror(smtp_errno(), why, sizeof(why));
			relay_fail(out, RELAY_FAIL_TLS, "TLS handshake with "
			    "%s failed: %s", cfg->relay.host, why);
		}
	} else if (rs.auth_failed) {
		relay_fail(out, RELAY_FAIL_AUTH, "AUTH as %s refused: %s",
		    user, rs.auth_reply);
	} else if (user != NULL && !rs.authenticated) {
		/* Either no AUTH offered, or MAIL answered 530. */
		for (i = 0; i < rs.nmsgs; i++)
			if (rs.msgs[i]->mail_code != 0)
				break;
		relay_fail(out, RELAY_FAIL_AUTH, "relay did not authenticate "
		    "%s%s%s", user, i < rs.nmsgs ? ": " : " (no "
		    "AUTH PLAIN or LOGIN offered?)", i < rs.nmsgs ?
		    rs.msgs[i]->mail_text : "");
	}
	if (out->failure == RELAY_FAIL_NONE && !rs.interrupted) {
		/* Nothing reached MAIL and we do not know why: a failure, so
		 * that the messages back off rather than retry at once. */
		for (i = 0; i < rs.nmsgs; i++)
			if (rs.msgs[i]->mail_code != 0)
				break;
		if (i == rs.nmsgs) {
			smtp_strerror(smtp_errno(), why, sizeof(why));
			relay_fail(out, RELAY_FAIL_PROTOCOL, "session with %s "
			    "ended before MAIL: %s", cfg->relay.host, why);
		}
	}
	out->authenticated = rs.authenticated;
	out->interrupted = rs.interrupted;
done:
	if (session != NULL)
		(void)smtp_destroy_session(session);
	if (rs.auth != NULL)
		(void)auth_destroy_context(rs.auth);
	auth_client_exit();
	if (tunnelled)
		tunnel_stop(&tun);
	SSL_CTX_free(ctx);
	for (i = 0; i < rs.nmsgs; i++) {
		free(rs.msgs[i]->chunk);
		rs.msgs[i]->chunk = NULL;
	}
	free(rs.msgs);
}
