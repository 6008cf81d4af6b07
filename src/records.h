/*
 * records.h -- the four DNS records the relay needs per sender domain
 * (the provider's "Getting started"): what they must say, and whether
 * the TXT records found say it.
 *
 *   DOMAIN               "elastx-mrs=<sha256 hex of the relay account>"
 *   DOMAIN               SPF that reaches include:elastx.email
 *   SEL._domainkey...    DKIM key (ours, or elastx's from the provider)
 *   _dmarc.DOMAIN        any valid DMARC policy
 *
 * Every function here is pure but for records_check_spf(), which follows
 * include: and redirect= through the lookup callback.
 */
#ifndef RELAYQ_RECORDS_H
#define RELAYQ_RECORDS_H

#include <stddef.h>

#include "dns.h"

#define RECORDS_SPF_INCLUDE	"elastx.email"
#define RECORDS_DKIM_SELECTOR	"elastx"	/* the provider's selector */
#define RECORDS_DMARC_EXAMPLE	"v=DMARC1; p=quarantine; adkim=r; aspf=r"
#define RECORDS_TTL		3600

struct record_check {
	const char	*record;	/* "token", "spf", "dkim", "dmarc" */
	char		 name[300];	/* the owner name looked up */
	int		 pass;
	char		 detail[768];	/* what is right or wrong */
	char		*fix;		/* a zone line to write, or NULL */
	struct dns_txt	 found;		/* the relevant records found */
};

typedef enum dns_status (*records_lookup)(void *arg, const char *name,
	    struct dns_txt *out, char *err, size_t errlen);

void	records_check_free(struct record_check *);

/* "elastx-mrs=<hex>" for a relay account.  Caller frees. */
char	*records_token(const char *user);

/*
 * A zone-file line: NAME. TTL IN TXT "..." with the value cut into
 * strings of at most 255 octets.  Caller frees.
 */
char	*records_zone_line(const char *name, const char *value);

/*
 * The checks.  st and txt are the lookup of rc->name (filled in by
 * records_name()); lookup_err says why when st is DNS_FAIL.
 */
void	records_name(struct record_check *, const char *record,
	    const char *domain, const char *selector);
void	records_check_token(struct record_check *, const char *domain,
	    const char *user, enum dns_status st, const struct dns_txt *txt,
	    const char *lookup_err);
void	records_check_spf(struct record_check *, const char *domain,
	    enum dns_status st, const struct dns_txt *txt,
	    const char *lookup_err, records_lookup lookup, void *arg);
/* pubkey: our p= value and key type, or NULL for the provider's key. */
void	records_check_dkim(struct record_check *, const char *pubkey,
	    const char *keytype, enum dns_status st, const struct dns_txt *txt,
	    const char *lookup_err);
void	records_check_dmarc(struct record_check *, enum dns_status st,
	    const struct dns_txt *txt, const char *lookup_err);

/*
 * The SPF record to publish given the ones there now (NULL/0: none):
 * their terms, include:elastx.email, and a closing -all (or the
 * existing ~all / ?all).  Caller frees.
 */
char	*records_spf_advice(char *const *spf, size_t n);

/* 1 if v is an SPF record ("v=spf1" then a space or the end). */
int	records_is_spf(const char *v);

#endif
