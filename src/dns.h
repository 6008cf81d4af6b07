/*
 * dns.h -- TXT lookups: glibc's resolver (/etc/resolv.conf), or one
 * server named by [dns] server, asked over UDP and over TCP when the
 * answer is truncated.
 */
#ifndef RELAYQ_DNS_H
#define RELAYQ_DNS_H

#include <stddef.h>
#include <sys/socket.h>

enum dns_status {
	DNS_FOUND,	/* at least one TXT record */
	DNS_NONE,	/* the name does not exist, or has no TXT */
	DNS_FAIL	/* no answer: timeout, SERVFAIL, refused... */
};

/* TXT records, each with its character-strings joined (RFC 7208 3.3). */
struct dns_txt {
	char	**v;
	size_t	  n;
};

/*
 * Parses "IP", "IP:PORT" or "[IPv6]:PORT" (port 53 by default) into ss
 * (may be NULL to just check).  0, or -1.
 */
int	dns_server_parse(const char *s, struct sockaddr_storage *ss);

/*
 * Looks up the TXT records of name.  server: IP[:PORT], or NULL for the
 * system resolver.  On DNS_FAIL err says why.
 */
enum dns_status dns_txt(const char *server, const char *name,
	    struct dns_txt *out, char *err, size_t errlen);
void	dns_txt_free(struct dns_txt *);

#endif
