/*
 * address.h -- RFC 5322 address lists and RFC 5321 envelope addresses.
 */
#ifndef RELAYQ_ADDRESS_H
#define RELAYQ_ADDRESS_H

#include <stddef.h>

#define ADDR_MAX_LEN	 512	/* longer is refused (RFC 5321: 256) */
#define ADDR_MAX_COUNT	 100000	/* recipients in one message */

struct addr_list {
	char	**v;	/* addr-specs: "local@domain" or bare "local" */
	size_t	  n;
	/* Private: a hash index of v[0..indexed) for addr_list_add, so
	 * that 10 000 recipients do not cost 10 000 squared compares. */
	size_t	 *slots;	/* index + 1, 0: empty */
	size_t	  nslots;	/* a power of two, or 0 */
	size_t	  indexed;
};

void	addr_list_init(struct addr_list *);
void	addr_list_free(struct addr_list *);
/* Drops the entries from index n on. */
void	addr_list_truncate(struct addr_list *, size_t n);
/* Appends a copy of a unless an equal address is already there. */
void	addr_list_add(struct addr_list *, const char *a);

/*
 * Parses an RFC 5322 address list (To/Cc/Bcc value, or a recipient
 * argument holding a comma list): display names, quoted strings,
 * comments, groups, angle addresses with obsolete routes, folding.
 * Appends the addr-specs found to out.  Returns 0, or -1 with err set;
 * on error out may hold the addresses parsed before the bad one.
 */
int	addr_list_parse(const char *s, size_t len, struct addr_list *out,
	    char *err, size_t errlen);

/*
 * Checks a value that will become an envelope address: no control
 * characters (CR, LF, NUL...), no leading '-', at most ADDR_MAX_LEN.
 * Returns 0, or -1 with the reason in err.  This is the anti-injection
 * check; addr_is_mailbox() is the shape check.
 */
int	addr_check_safe(const char *a, char *err, size_t errlen);

/*
 * The display name of one mailbox: the phrase of "Name <a@b>" (quotes
 * removed), else the first comment of "a@b (Name)", else "".
 */
void	addr_display_name(const char *s, size_t len, char *out, size_t outlen);

/* Appends s as an RFC 5322 quoted-string (control characters dropped). */
struct buf;
void	addr_quote_phrase(struct buf *, const char *s);

/* 1 if a is local@domain with a sane local part and domain. */
int	addr_is_mailbox(const char *a);
/* 1 if a is a bare local name (no '@') that can be qualified. */
int	addr_is_local_name(const char *a);

#endif
