/*
 * tunnel.c -- implicit TLS (port 465) for libESMTP, which lacks it.
 */
#include <sys/socket.h>
#include <sys/stat.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>

#include "config.h"
#include "tls.h"
#include "tunnel.h"
#include "util.h"

static void
tunnel_error(struct tunnel *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
tunnel_error(struct tunnel *t, const char *fmt, ...)
{
	va_list ap;

	if (t->error[0] != '\0')
		return;
	va_start(ap, fmt);
	(void)util_vsnprintf(t->error, sizeof(t->error), fmt, ap);
	va_end(ap);
}

/*
 * 1 if the peer of fd is a socket held by this process (libESMTP's), which
 * also gets TCP_NODELAY: libESMTP never sets it, and Nagle would hold each
 * message's last small write until the delayed ACK.
 */
static int
tunnel_peer_is_us(int fd)
{
	struct sockaddr_in peer, mine;
	socklen_t len = sizeof(peer);
	struct dirent *d;
	DIR *dp;
	int found = 0;

	if (getpeername(fd, (struct sockaddr *)&peer, &len) == -1 ||
	    peer.sin_family != AF_INET)
		return 0;
	if ((dp = opendir("/proc/self/fd")) == NULL)
		return 0;
	while (!found && (d = readdir(dp)) != NULL) {
		unsigned long n;

		if (util_parse_ulong(d->d_name, 0, 1 << 20, &n) == -1 ||
		    (int)n == fd || (int)n == dirfd(dp))
			continue;
		len = sizeof(mine);
		if (getsockname((int)n, (struct sockaddr *)&mine, &len) == 0 &&
		    mine.sin_family == AF_INET &&
		    mine.sin_port == peer.sin_port &&
		    mine.sin_addr.s_addr == peer.sin_addr.s_addr) {
			int one = 1;

			(void)setsockopt((int)n, IPPROTO_TCP, TCP_NODELAY,
			    &one, sizeof(one));
			found = 1;
		}
	}
	(void)closedir(dp);
	return found;
}

static int
tunnel_connect(struct tunnel *t)
{
	const struct config *cfg = t->cfg;
	struct addrinfo hints, *res = NULL, *ai;
	struct timeval tv = { (time_t)cfg->relay.timeout, 0 };
	char port[16];
	int fd = -1, rc, one = 1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	(void)util_snprintf(port, sizeof(port), "%u", cfg->relay.port);
	if ((rc = getaddrinfo(cfg->relay.host, port, &hints, &res)) != 0) {
		tunnel_error(t, "cannot resolve %s: %s", cfg->relay.host,
		    gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd == -1)
			continue;
		/* The timeouts bound connect() and every later read. */
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		tunnel_error(t, "cannot connect to %s:%u: %s", cfg->relay.host,
		    cfg->relay.port, strerror(errno));
		(void)close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd != -1) {
		t->error[0] = '\0';
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
	}
	return fd;
}

/* Copies both ways until either side closes. */
static void
tunnel_pump(struct tunnel *t, int local, SSL *ssl, int remote)
{
	char buf[16384];
	struct pollfd pfd[2];
	int n;

	for (;;) {
		if (SSL_pending(ssl) == 0) {
			pfd[0].fd = local;
			pfd[0].events = POLLIN;
			pfd[1].fd = remote;
			pfd[1].events = POLLIN;
			n = poll(pfd, 2, (int)t->cfg->relay.timeout * 1000);
			if (n == -1 && errno == EINTR)
				continue;
			if (n <= 0)
				return;
		} else {
			pfd[0].revents = 0;
			pfd[1].revents = POLLIN;
		}
		if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			n = SSL_read(ssl, buf, sizeof(buf));
			if (n <= 0) {
				int e = SSL_get_error(ssl, n);

				if (e == SSL_ERROR_WANT_READ)
					continue;
				return;
			}
			if (util_write_all(local, buf, (size_t)n) == -1)
				return;
		}
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = util_read(local, buf, sizeof(buf));

			if (r <= 0)
				return;
			if (SSL_write(ssl, buf, (int)r) <= 0)
				return;
		}
	}
}

static void *
tunnel_main(void *arg)
{
	struct tunnel *t = arg;
	struct pollfd pfd;
	SSL *ssl = NULL;
	int local = -1, remote = -1;
	char why[256];

	/* Accept libESMTP's connection, and no one else's. */
	for (;;) {
		pfd.fd = t->listen_fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, (int)t->cfg->relay.timeout * 1000) <= 0) {
			tunnel_error(t, "internal TLS tunnel: no connection");
			goto out;
		}
		local = accept(t->listen_fd, NULL, NULL);
		if (local == -1)
			continue;
		(void)fcntl(local, F_SETFD, FD_CLOEXEC);
		if (tunnel_peer_is_us(local)) {
			int one = 1;

			(void)setsockopt(local, IPPROTO_TCP, TCP_NODELAY, &one,
			    sizeof(one));
			break;
		}
		(void)close(local);
		local = -1;
	}
	(void)close(t->listen_fd);
	t->listen_fd = -1;
	(void)pthread_mutex_lock(&t->lock);
	t->local_fd = local;
	(void)pthread_mutex_unlock(&t->lock);

	if ((remote = tunnel_connect(t)) == -1)
		goto out;
	tls_verify_reset();
	if ((ssl = SSL_new(t->ctx)) == NULL || !SSL_set_fd(ssl, remote) ||
	    SSL_connect(ssl) != 1 || SSL_get_verify_result(ssl) != X509_V_OK) {
		if (tls_verify_error()[0] != '\0')
			tunnel_error(t, "TLS with %s: %s", t->cfg->relay.host,
			    tls_verify_error());
		else {
			tls_error_string(why, sizeof(why));
			tunnel_error(t, "TLS with %s failed: %s",
			    t->cfg->relay.host, why);
		}
		goto out;
	}
	tunnel_pump(t, local, ssl, remote);
	(void)SSL_shutdown(ssl);
out:
	if (ssl != NULL)
		SSL_free(ssl);
	if (remote != -1)
		(void)close(remote);
	(void)pthread_mutex_lock(&t->lock);
	if (t->local_fd != -1) {
		(void)close(t->local_fd);
		t->local_fd = -1;
	}
	(void)pthread_mutex_unlock(&t->lock);
	ERR_clear_error();
	return NULL;
}

int
tunnel_start(struct tunnel *t, const struct config *cfg, SSL_CTX *ctx,
    char *err, size_t errlen)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	memset(t, 0, sizeof(*t));
	t->cfg = cfg;
	t->ctx = ctx;
	t->local_fd = -1;
	t->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (t->listen_fd == -1 ||
	    bind(t->listen_fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(t->listen_fd, 1) == -1 ||
	    getsockname(t->listen_fd, (struct sockaddr *)&sin, &len) == -1) {
		(void)util_snprintf(err, errlen, "TLS tunnel: %s",
		    strerror(errno));
		if (t->listen_fd != -1)
			(void)close(t->listen_fd);
		return -1;
	}
	t->local_port = ntohs(sin.sin_port);
	(void)pthread_mutex_init(&t->lock, NULL);
	if (pthread_create(&t->thread, NULL, tunnel_main, t) != 0) {
		(void)util_snprintf(err, errlen, "TLS tunnel: cannot start "
		    "a thread");
		(void)close(t->listen_fd);
		(void)pthread_mutex_destroy(&t->lock);
		return -1;
	}
	t->running = 1;
	return 0;
}

void
tunnel_cut(struct tunnel *t)
{
	(void)pthread_mutex_lock(&t->lock);
	if (t->local_fd != -1)
		(void)shutdown(t->local_fd, SHUT_RDWR);
	(void)pthread_mutex_unlock(&t->lock);
}

void
tunnel_stop(struct tunnel *t)
{
	if (!t->running)
		return;
	tunnel_cut(t);
	(void)pthread_join(t->thread, NULL);
	if (t->listen_fd != -1)
		(void)close(t->listen_fd);
	t->listen_fd = -1;
	(void)pthread_mutex_destroy(&t->lock);
	t->running = 0;
}

int
tunnel_failed(struct tunnel *t, char *why, size_t len)
{
	if (t->error[0] == '\0')
		return 0;
	(void)util_strlcpy(why, t->error, len);
	return 1;
}
