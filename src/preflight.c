/*
 * preflight.c -- relayq check's relay probe (see preflight.h).
 *
 * Blocking socket I/O with SO_RCVTIMEO/SO_SNDTIMEO at [relay] timeout;
 * the plain socket until STARTTLS, then an SSL* over it.  Replies are
 * read whole (multi-line "250-" continuations included).
 */
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "buf.h"
#include "config.h"
#include "preflight.h"
#include "tls.h"
#include "util.h"

#define PREFLIGHT_LINE_MAX	2048
#define PREFLIGHT_REPLY_MAX	(64 * 1024)

struct preflight_conn {
	int		 fd;
	SSL		*ssl;
	char		 in[4096];
	size_t		 inlen;
	size_t		 inoff;
	int		 offers_starttls;
	int		 auth_plain;
	int		 auth_login;
};

static struct preflight_step *
preflight_add(struct preflight *p, const char *step, const char *domain)
{
	struct preflight_step *s;

	p->steps = xreallocarray(p->steps, p->nsteps + 1, sizeof(*p->steps));
	s = &p->steps[p->nsteps++];
	memset(s, 0, sizeof(*s));
	s->step = step;
	s->domain = domain;
	s->status = PREFLIGHT_SKIP;
	return s;
}

void
preflight_free(struct preflight *p)
{
	free(p->steps);
	p->steps = NULL;
	p->nsteps = 0;
}

/* Connects to host:port within the timeout.  The socket, or -1. */
static int
preflight_connect(const struct config *cfg, char *err, size_t errlen)
{
	struct addrinfo hints, *res = NULL, *ai;
	struct timeval tv = { (time_t)cfg->relay.timeout, 0 };
	char port[16];
	int fd = -1, rc, soerr = 0;
	socklen_t len = sizeof(soerr);

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	(void)util_snprintf(port, sizeof(port), "%u", cfg->relay.port);
	if ((rc = getaddrinfo(cfg->relay.host, port, &hints, &res)) != 0) {
		(void)util_snprintf(err, errlen, "cannot resolve %s: %s",
		    cfg->relay.host, gai_strerror(rc));
		return -1;
	}
	(void)util_snprintf(err, errlen, "no address for %s", cfg->relay.host);
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		struct pollfd pfd;
		int flags;

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd == -1)
			continue;
		flags = fcntl(fd, F_GETFL);
		if (flags == -1 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1)
			goto next;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == -1) {
			if (errno != EINPROGRESS)
				goto fail;
			pfd.fd = fd;
			pfd.events = POLLOUT;
			do
				rc = poll(&pfd, 1, (int)cfg->relay.timeout *
				    1000);
			while (rc == -1 && errno == EINTR);
			if (rc == 0)
				errno = ETIMEDOUT;
			if (rc <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR,
			    &soerr, &len) == -1)
				goto fail;
			if (soerr != 0) {
				errno = soerr;
				goto fail;
			}
		}
		if (fcntl(fd, F_SETFL, flags) == -1 ||
		    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ==
		    -1 || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv,
		    sizeof(tv)) == -1)
			goto next;
		freeaddrinfo(res);
		return fd;
fail:
		(void)util_snprintf(err, errlen, "cannot connect to %s port "
		    "%u: %s", cfg->relay.host, cfg->relay.port,
		    strerror(errno));
next:
		(void)close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return -1;
}

static int
preflight_write(struct preflight_conn *c, const char *s, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t w;

		if (c->ssl != NULL) {
			int r = SSL_write(c->ssl, s + done, (int)(n - done));

			w = r > 0 ? r : -1;
		} else {
			w = send(c->fd, s + done, n - done, MSG_NOSIGNAL);
			if (w == -1 && errno == EINTR)
				continue;
		}
		if (w <= 0)
			return -1;
		done += (size_t)w;
	}
	return 0;
}

/* One line, without its CRLF.  0, or -1 (timeout, EOF, too long). */
static int
preflight_line(struct preflight_conn *c, struct buf *line)
{
	buf_reset(line);
	for (;;) {
		while (c->inoff < c->inlen) {
			char ch = c->in[c->inoff++];

			if (ch == '\n') {
				if (line->len > 0 &&
				    line->data[line->len - 1] == '\r')
					line->data[--line->len] = '\0';
				if (line->data == NULL)
					buf_append(line, "", 0);
				return 0;
			}
			if (line->len >= PREFLIGHT_LINE_MAX)
				return -1;
			buf_append(line, &ch, 1);
		}
		if (c->ssl != NULL) {
			int r = SSL_read(c->ssl, c->in, sizeof(c->in));

			if (r <= 0)
				return -1;
			c->inlen = (size_t)r;
		} else {
			ssize_t r = recv(c->fd, c->in, sizeof(c->in), 0);

			if (r == -1 && errno == EINTR)
				continue;
			if (r <= 0)
				return -1;
			c->inlen = (size_t)r;
		}
		c->inoff = 0;
	}
}

/*
 * Reads one reply: its code (0 if unreadable) and, in s->reply, its
 * first line (the last too, for a multi-line reply).  With ehlo the
 * extensions are noted.
 */
static int
preflight_reply(struct preflight_conn *c, struct preflight_step *s, int ehlo)
{
	struct buf line;
	char first[256] = "", text[PREFLIGHT_LINE_MAX];
	size_t total = 0;
	int code = 0, nlines = 0;

	buf_init(&line);
	for (;;) {
		if (preflight_line(c, &line) == -1 || line.len < 3 ||
		    (total += line.len) > PREFLIGHT_REPLY_MAX) {
			(void)util_snprintf(s->detail, sizeof(s->detail), "no "
			    "valid reply (connection closed or timed out)");
			code = 0;
			break;
		}
		code = (line.data[0] >= '2' && line.data[0] <= '5' &&
		    line.data[1] >= '0' && line.data[1] <= '9' &&
		    line.data[2] >= '0' && line.data[2] <= '9' &&
		    (line.len == 3 || line.data[3] == ' ' ||
		    line.data[3] == '-')) ? (line.data[0] - '0') * 100 +
		    (line.data[1] - '0') * 10 + (line.data[2] - '0') : 0;
		if (code == 0) {
			(void)util_snprintf(s->detail, sizeof(s->detail),
			    "not an SMTP reply");
			break;
		}
		util_sanitize(text, sizeof(text), line.data, line.len);
		if (nlines++ == 0)
			(void)util_strlcpy(first, text, sizeof(first));
		if (ehlo && line.len > 4) {
			const char *ext = line.data + 4;

			if (util_strcaseeq(ext, "STARTTLS"))
				c->offers_starttls = 1;
			if (util_strncaseeq(ext, "AUTH ", 5) ||
			    util_strncaseeq(ext, "AUTH=", 5)) {
				c->auth_plain |= strstr(ext, "PLAIN") != NULL;
				c->auth_login |= strstr(ext, "LOGIN") != NULL;
			}
		}
		if (line.len == 3 || line.data[3] != '-') {
			if (nlines > 1 && !ehlo)
				(void)util_snprintf(s->reply, sizeof(s->reply),
				    "%s ... %s", first, text);
			else
				(void)util_strlcpy(s->reply, first,
				    sizeof(s->reply));
			break;
		}
	}
	buf_free(&line);
	return code;
}

/* Sends a command (never logged) and reads the reply.  The code. */
static int
preflight_cmd(struct preflight_conn *c, struct preflight_step *s,
    const char *cmd, int ehlo)
{
	if (preflight_write(c, cmd, strlen(cmd)) == -1 ||
	    preflight_write(c, "\r\n", 2) == -1) {
		(void)util_snprintf(s->detail, sizeof(s->detail), "cannot send "
		    "to the relay: %s", strerror(errno));
		return 0;
	}
	return preflight_reply(c, s, ehlo);
}

/* A step that got the reply it wanted passes; anything else fails. */
static int
preflight_judge(struct preflight_step *s, int code, int want)
{
	s->status = code == want ? PREFLIGHT_PASS : PREFLIGHT_FAIL;
	if (s->status == PREFLIGHT_FAIL && s->detail[0] == '\0')
		(void)util_snprintf(s->detail, sizeof(s->detail), "expected "
		    "%d", want);
	return s->status == PREFLIGHT_PASS;
}

static int
preflight_tls(const struct config *cfg, struct preflight_conn *c,
    struct preflight_step *s)
{
	char err[512];
	SSL_CTX *ctx;

	tls_verify_reset();
	if ((ctx = tls_client_ctx(cfg, err, sizeof(err))) == NULL) {
		(void)util_strlcpy(s->detail, err, sizeof(s->detail));
		return 0;
	}
	c->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx);	/* the SSL keeps a reference */
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
	    SSL_connect(c->ssl) != 1 ||
	    !tls_peer_matches(c->ssl, cfg->relay.host)) {
		if (tls_verify_error()[0] != '\0')
			(void)util_snprintf(s->detail, sizeof(s->detail),
			    "TLS handshake failed: %s", tls_verify_error());
		else {
			tls_error_string(err, sizeof(err));
			(void)util_snprintf(s->detail, sizeof(s->detail),
			    "TLS handshake failed: %s", err);
		}
		return 0;
	}
	(void)util_snprintf(s->detail, sizeof(s->detail), "%s, certificate "
	    "verified for %s", SSL_get_version(c->ssl), cfg->relay.host);
	return 1;
}

static char *
preflight_b64(const char *p, size_t n)
{
	char *out = xmalloc(4 * ((n + 2) / 3) + 1);

	if (EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)p,
	    (int)n) < 0)
		out[0] = '\0';
	return out;
}

/* AUTH PLAIN, else LOGIN; the secret never leaves this function. */
static int
preflight_auth(struct preflight_conn *c, struct preflight_step *s,
    const char *user, const char *password)
{
	size_t ul = strlen(user), pl = strlen(password);
	char *raw, *b64, *cmd;
	int code;

	if (c->auth_plain) {
		raw = xmalloc(ul + pl + 2);
		raw[0] = '\0';
		memcpy(raw + 1, user, ul);
		raw[ul + 1] = '\0';
		memcpy(raw + ul + 2, password, pl);
		b64 = preflight_b64(raw, ul + pl + 2);
		util_wipe(raw, ul + pl + 2);
		free(raw);
		cmd = util_asprintf("AUTH PLAIN %s", b64);
		util_wipe(b64, strlen(b64));
		free(b64);
		code = preflight_cmd(c, s, cmd, 0);
		util_wipe(cmd, strlen(cmd));
		free(cmd);
		return preflight_judge(s, code, 235);
	}
	if (!c->auth_login) {
		s->status = PREFLIGHT_FAIL;
		(void)util_snprintf(s->detail, sizeof(s->detail), "the relay "
		    "offers neither AUTH PLAIN nor AUTH LOGIN");
		return 0;
	}
	if (preflight_cmd(c, s, "AUTH LOGIN", 0) != 334)
		return preflight_judge(s, 0, 235);
	b64 = preflight_b64(user, ul);
	code = preflight_cmd(c, s, b64, 0);
	free(b64);
	if (code != 334)
		return preflight_judge(s, code, 235);
	b64 = preflight_b64(password, pl);
	code = preflight_cmd(c, s, b64, 0);
	util_wipe(b64, strlen(b64));
	free(b64);
	return preflight_judge(s, code, 235);
}

/* The MAIL FROM probe address for a domain. */
static char *
preflight_probe_address(const struct config *cfg, const char *domain)
{
	const char *at = cfg->sender.address != NULL ?
	    strrchr(cfg->sender.address, '@') : NULL;

	if (at != NULL && util_strcaseeq(at + 1, domain))
		return xstrdup(cfg->sender.address);
	return util_asprintf("postmaster@%s", domain);
}

int
preflight_run(struct config *cfg, struct config_account *acct,
    char *const *domains, size_t ndomains, struct preflight *p)
{
	struct preflight_conn c;
	struct preflight_step *s;
	const char *password = NULL;
	char err[512], *ehlo_name, *cmd;
	size_t i;
	int tls = cfg->relay.tls, code, ok = 1;

	memset(p, 0, sizeof(*p));
	memset(&c, 0, sizeof(c));
	c.fd = -1;
	p->user = acct != NULL ? acct->user : cfg->relay.user;
	/* The plan first: steps not reached stay SKIP. */
	preflight_add(p, "connect", NULL);
	if (tls == CONFIG_TLS_IMPLICIT)
		preflight_add(p, "tls", NULL);
	preflight_add(p, "ehlo", NULL);
	if (tls == CONFIG_TLS_STARTTLS)
		preflight_add(p, "starttls", NULL);
	if (p->user != NULL)
		preflight_add(p, "auth", NULL);
	for (i = 0; i < ndomains; i++) {
		preflight_add(p, "mail", domains[i]);
		preflight_add(p, "rset", domains[i]);
	}
	(void)preflight_add(p, "quit", NULL);

	s = p->steps;
	if ((c.fd = preflight_connect(cfg, err, sizeof(err))) == -1) {
		s->status = PREFLIGHT_FAIL;
		(void)util_strlcpy(s->detail, err, sizeof(s->detail));
		return 0;
	}
	if (tls == CONFIG_TLS_IMPLICIT) {
		s[1].status = preflight_tls(cfg, &c, &s[1]) ? PREFLIGHT_PASS :
		    PREFLIGHT_FAIL;
		if (s[1].status == PREFLIGHT_FAIL) {
			s->status = PREFLIGHT_PASS;
			ok = 0;
			goto out;
		}
	}
	if (!preflight_judge(s, preflight_reply(&c, s, 0), 220)) {
		ok = 0;
		goto out;
	}
	s += tls == CONFIG_TLS_IMPLICIT ? 2 : 1;
	ehlo_name = config_host_fqdn();
	cmd = util_asprintf("EHLO %s", ehlo_name);
	free(ehlo_name);
	code = preflight_cmd(&c, s, cmd, 1);
	if (!preflight_judge(s, code, 250)) {
		free(cmd);
		ok = 0;
		goto out;
	}
	s++;
	if (tls == CONFIG_TLS_STARTTLS) {
		if (!c.offers_starttls) {
			s->status = PREFLIGHT_FAIL;
			(void)util_snprintf(s->detail, sizeof(s->detail), "the "
			    "relay does not offer STARTTLS; relayq never sends "
			    "the password without TLS");
			free(cmd);
			ok = 0;
			goto out;
		}
		if (!preflight_judge(s, preflight_cmd(&c, s, "STARTTLS", 0),
		    220) || !preflight_tls(cfg, &c, s)) {
			s->status = PREFLIGHT_FAIL;
			free(cmd);
			ok = 0;
			goto out;
		}
		/* RFC 3207 4.2: forget what was learnt before TLS. */
		c.auth_plain = c.auth_login = 0;
		c.inlen = c.inoff = 0;
		{
			struct preflight_step again;

			memset(&again, 0, sizeof(again));
			if (preflight_cmd(&c, &again, cmd, 1) != 250) {
				s->status = PREFLIGHT_FAIL;
				(void)util_snprintf(s->detail,
				    sizeof(s->detail), "EHLO after STARTTLS "
				    "failed: %s", again.reply);
				free(cmd);
				ok = 0;
				goto out;
			}
		}
		s++;
	}
	free(cmd);
	if (p->user != NULL) {
		if (acct != NULL ? config_account_password(acct, err,
		    sizeof(err)) == -1 : config_load_password(cfg, err,
		    sizeof(err)) == -1) {
			s->status = PREFLIGHT_FAIL;
			(void)util_strlcpy(s->detail, err, sizeof(s->detail));
			ok = 0;
			goto out;
		}
		password = acct != NULL ? acct->password : cfg->relay.password;
		if (!preflight_auth(&c, s, p->user, password)) {
			ok = 0;
			goto out;
		}
		s++;
	}
	for (i = 0; i < ndomains; i++, s += 2) {
		char *addr = preflight_probe_address(cfg, domains[i]);

		cmd = util_asprintf("MAIL FROM:<%s>", addr);
		(void)util_snprintf(s->detail, sizeof(s->detail), "MAIL "
		    "FROM:<%s>", addr);
		free(addr);
		code = preflight_cmd(&c, s, cmd, 0);
		free(cmd);
		if (!preflight_judge(s, code, 250))
			ok = 0;
		if (!preflight_judge(&s[1], preflight_cmd(&c, &s[1], "RSET",
		    0), 250)) {
			ok = 0;
			s += 2;
			goto out;
		}
	}
	if (!preflight_judge(s, preflight_cmd(&c, s, "QUIT", 0), 221))
		ok = 0;
out:
	/* A session cut short still ends politely. */
	if (c.fd != -1 && p->steps[p->nsteps - 1].status == PREFLIGHT_SKIP &&
	    p->steps[0].status == PREFLIGHT_PASS)
		(void)preflight_write(&c, "QUIT\r\n", 6);
	if (c.ssl != NULL) {
		(void)SSL_shutdown(c.ssl);
		SSL_free(c.ssl);
	}
	if (c.fd != -1)
		(void)close(c.fd);
	return ok;
}
