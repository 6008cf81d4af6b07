/*
 * dns.c -- TXT lookups for relayq check, dns-records and [dkim] require.
 *
 * glibc's resolver builds and parses the packets (res_nmkquery,
 * ns_initparse); it also sends them unless [dns] server names one
 * server with a port, which its configuration cannot express for IPv6.
 * Then this file sends the query itself: UDP, and TCP when the answer
 * comes back truncated (a DKIM key record of 4096 bits does not fit in
 * 512 octets).
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <resolv.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dns.h"
#include "util.h"

#define DNS_TIMEOUT_MS	3000
#define DNS_TRIES	2
#define DNS_MAX_ANSWER	65535

int
dns_server_parse(const char *s, struct sockaddr_storage *ss)
{
	struct sockaddr_storage tmp;
	struct sockaddr_in *sin = (struct sockaddr_in *)&tmp;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&tmp;
	char host[INET6_ADDRSTRLEN + 1];
	const char *port = NULL, *end;
	unsigned long p = 53;
	size_t n;

	memset(&tmp, 0, sizeof(tmp));
	if (s[0] == '[') {
		if ((end = strchr(s, ']')) == NULL)
			return -1;
		n = (size_t)(end - s - 1);
		if (end[1] == ':')
			port = end + 2;
		else if (end[1] != '\0')
			return -1;
		s++;
	} else if ((end = strchr(s, ':')) != NULL &&
	    strchr(end + 1, ':') == NULL) {
		n = (size_t)(end - s);	/* IPv4:PORT */
		port = end + 1;
	} else
		n = strlen(s);		/* IPv4, or a bare IPv6 address */
	if (n == 0 || n >= sizeof(host))
		return -1;
	memcpy(host, s, n);
	host[n] = '\0';
	if (port != NULL && util_parse_ulong(port, 1, 65535, &p) == -1)
		return -1;
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((unsigned short)p);
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((unsigned short)p);
	} else
		return -1;
	if (ss != NULL)
		*ss = tmp;
	return 0;
}

static socklen_t
dns_addrlen(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET ? sizeof(struct sockaddr_in) :
	    sizeof(struct sockaddr_in6);
}

/* Waits for fd to be ready; 0, or -1 (errno ETIMEDOUT on timeout). */
static int
dns_wait(int fd, short events, long long deadline)
{
	struct pollfd pfd = { fd, events, 0 };
	long long left;
	int rc;

	for (;;) {
		if ((left = deadline - util_monotonic_ms()) <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		rc = poll(&pfd, 1, (int)left);
		if (rc > 0)
			return 0;
		if (rc == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		if (errno != EINTR)
			return -1;
	}
}

/* One UDP exchange: the answer length, or -1. */
static int
dns_udp(const struct sockaddr_storage *ss, const unsigned char *q, int qlen,
    unsigned char *ans, int anslen)
{
	int fd, tries, n = -1;

	if ((fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (connect(fd, (const struct sockaddr *)ss, dns_addrlen(ss)) == -1)
		goto out;
	for (tries = 0; tries < DNS_TRIES; tries++) {
		long long deadline = util_monotonic_ms() + DNS_TIMEOUT_MS;

		if (send(fd, q, (size_t)qlen, 0) != qlen)
			goto out;
		while (dns_wait(fd, POLLIN, deadline) == 0) {
			ssize_t r = recv(fd, ans, (size_t)anslen, 0);

			/* Only the answer to this query (same ID) counts. */
			if (r >= HFIXEDSZ && ans[0] == q[0] && ans[1] == q[1]) {
				n = (int)r;
				goto out;
			}
			if (r == -1 && errno != EINTR && errno != EAGAIN)
				goto out;
		}
		if (errno != ETIMEDOUT)
			goto out;
	}
out:
	(void)close(fd);
	return n;
}

static int
dns_tcp_io(int fd, void *buf, size_t len, int out, long long deadline)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r;

		if (dns_wait(fd, out ? POLLOUT : POLLIN, deadline) == -1)
			return -1;
		r = out ? send(fd, (char *)buf + done, len - done,
		    MSG_NOSIGNAL) : recv(fd, (char *)buf + done, len - done, 0);
		if (r == 0 && !out) {
			errno = ECONNRESET;
			return -1;
		}
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -1;
		}
		done += (size_t)r;
	}
	return 0;
}

/* One TCP exchange (RFC 1035 4.2.2): the answer length, or -1. */
static int
dns_tcp(const struct sockaddr_storage *ss, const unsigned char *q, int qlen,
    unsigned char *ans, int anslen)
{
	long long deadline = util_monotonic_ms() + DNS_TIMEOUT_MS * 2;
	unsigned char lenbuf[2];
	int fd, n = -1, err;
	socklen_t elen = sizeof(err);

	fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
	    0);
	if (fd == -1)
		return -1;
	if (connect(fd, (const struct sockaddr *)ss, dns_addrlen(ss)) == -1) {
		if (errno != EINPROGRESS || dns_wait(fd, POLLOUT, deadline) ==
		    -1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) ==
		    -1)
			goto out;
		if (err != 0) {
			errno = err;
			goto out;
		}
	}
	lenbuf[0] = (unsigned char)(qlen >> 8);
	lenbuf[1] = (unsigned char)qlen;
	if (dns_tcp_io(fd, lenbuf, 2, 1, deadline) == -1 ||
	    dns_tcp_io(fd, (void *)(uintptr_t)q, (size_t)qlen, 1, deadline) ==
	    -1 || dns_tcp_io(fd, lenbuf, 2, 0, deadline) == -1)
		goto out;
	n = (lenbuf[0] << 8) | lenbuf[1];
	if (n < HFIXEDSZ || n > anslen || dns_tcp_io(fd, ans, (size_t)n, 0,
	    deadline) == -1 || ans[0] != q[0] || ans[1] != q[1])
		n = -1;
out:
	(void)close(fd);
	return n;
}

static const char *
dns_rcode_name(int rcode)
{
	switch (rcode) {
	case ns_r_formerr:
		return "FORMERR";
	case ns_r_servfail:
		return "SERVFAIL";
	case ns_r_notimpl:
		return "NOTIMP";
	case ns_r_refused:
		return "REFUSED";
	default:
		return "an error";
	}
}

/* Collects the TXT records of an answer. */
static enum dns_status
dns_parse(const unsigned char *ans, int len, struct dns_txt *out, char *err,
    size_t errlen)
{
	ns_msg msg;
	ns_rr rr;
	int i, rcode;

	if (ns_initparse(ans, len, &msg) == -1) {
		(void)util_snprintf(err, errlen, "malformed DNS answer");
		return DNS_FAIL;
	}
	rcode = ns_msg_getflag(msg, ns_f_rcode);
	if (rcode == ns_r_nxdomain)
		return DNS_NONE;
	if (rcode != ns_r_noerror) {
		(void)util_snprintf(err, errlen, "the DNS server answered %s",
		    dns_rcode_name(rcode));
		return DNS_FAIL;
	}
	for (i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
		const unsigned char *rd;
		size_t rdlen, pos = 0, o = 0;
		char *txt;

		if (ns_parserr(&msg, ns_s_an, i, &rr) == -1) {
			(void)util_snprintf(err, errlen, "malformed DNS "
			    "answer");
			return DNS_FAIL;
		}
		if (ns_rr_type(rr) != ns_t_txt || ns_rr_class(rr) != ns_c_in)
			continue;
		rd = ns_rr_rdata(rr);
		rdlen = ns_rr_rdlen(rr);
		txt = xmalloc(rdlen + 1);
		while (pos < rdlen) {
			size_t n = rd[pos++];

			if (n > rdlen - pos)
				n = rdlen - pos;
			for (; n > 0; n--, pos++)	/* NUL would cut it */
				txt[o++] = rd[pos] != '\0' ? (char)rd[pos] :
				    '?';
		}
		txt[o] = '\0';
		out->v = xreallocarray(out->v, out->n + 1, sizeof(*out->v));
		out->v[out->n++] = txt;
	}
	return out->n > 0 ? DNS_FOUND : DNS_NONE;
}

enum dns_status
dns_txt(const char *server, const char *name, struct dns_txt *out,
    char *err, size_t errlen)
{
	struct __res_state rs;
	struct sockaddr_storage ss;
	unsigned char q[NS_PACKETSZ], *ans;
	enum dns_status st = DNS_FAIL;
	int qlen, n;

	memset(out, 0, sizeof(*out));
	memset(&rs, 0, sizeof(rs));
	if (res_ninit(&rs) == -1) {
		(void)util_snprintf(err, errlen, "cannot set up the resolver");
		return DNS_FAIL;
	}
	ans = xmalloc(DNS_MAX_ANSWER);
	if (server == NULL) {
		n = res_nquery(&rs, name, ns_c_in, ns_t_txt, ans,
		    DNS_MAX_ANSWER);
		if (n == -1) {
			switch (rs.res_h_errno) {
			case HOST_NOT_FOUND:
			case NO_DATA:
				st = DNS_NONE;
				break;
			default:
				(void)util_snprintf(err, errlen, "no answer "
				    "from the resolver (%s)",
				    hstrerror(rs.res_h_errno));
				break;
			}
			goto out;
		}
	} else {
		if (dns_server_parse(server, &ss) == -1) {
			(void)util_snprintf(err, errlen, "bad [dns] server");
			goto out;
		}
		qlen = res_nmkquery(&rs, ns_o_query, name, ns_c_in, ns_t_txt,
		    NULL, 0, NULL, q, sizeof(q));
		if (qlen == -1) {
			(void)util_snprintf(err, errlen, "cannot ask for %.200s",
			    name);
			goto out;
		}
		n = dns_udp(&ss, q, qlen, ans, DNS_MAX_ANSWER);
		if (n >= HFIXEDSZ && (ans[2] & 0x02))	/* TC: truncated */
			n = dns_tcp(&ss, q, qlen, ans, DNS_MAX_ANSWER);
		if (n == -1) {
			(void)util_snprintf(err, errlen, "no answer from %s: %s",
			    server, strerror(errno));
			goto out;
		}
	}
	st = dns_parse(ans, n, out, err, errlen);
out:
	free(ans);
	res_nclose(&rs);
	if (st != DNS_FOUND)
		dns_txt_free(out);
	return st;
}

void
dns_txt_free(struct dns_txt *t)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		free(t->v[i]);
	free(t->v);
	t->v = NULL;
	t->n = 0;
}
