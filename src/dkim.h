/*
 * dkim.h -- DKIM signatures: RFC 6376 relaxed/relaxed with rsa-sha256,
 * and RFC 8463 ed25519-sha256, through OpenSSL's EVP interface.
 *
 * The body hash is computed while the body streams past
 * (dkim_body_*), so a message is never held in memory whole; only its
 * header block is.  dkim_sign_spooled() is what delivery calls: it reads
 * a spooled message, decides whether its From domain is one we sign for,
 * and returns the DKIM-Signature field(s) to put in front of it.
 */
#ifndef RELAYQ_DKIM_H
#define RELAYQ_DKIM_H

#include <stddef.h>
#include <sys/types.h>

#include "buf.h"

#define DKIM_MAX_KEYS	2
#define DKIM_BH_LEN	44	/* base64 of a SHA-256 digest */

struct config;
struct evp_pkey_st;
struct evp_md_ctx_st;

struct dkim_key {
	struct evp_pkey_st *pkey;
	int		 ed25519;	/* else RSA */
	unsigned	 bits;
};

/* The relaxed body canonicalisation (RFC 6376 3.4.4), hashed as it goes. */
struct dkim_body {
	struct evp_md_ctx_st *md;
	size_t		 blank;		/* empty lines held back */
	int		 wsp;		/* whitespace held back */
	int		 content;	/* this line has more than WSP */
	int		 cr;		/* a CR held back */
	size_t		 nout;
	char		 out[4096];
};

int	dkim_body_init(struct dkim_body *);
int	dkim_body_update(struct dkim_body *, const char *p, size_t n);
/* Writes the base64 body hash (bh=) and frees the hash state. */
int	dkim_body_final(struct dkim_body *, char bh[DKIM_BH_LEN + 1]);
void	dkim_body_free(struct dkim_body *);

/*
 * Appends the relaxed form (RFC 6376 3.4.2) of one header field, given
 * with its folds but without its final CRLF, and a CRLF unless nocrlf.
 */
void	dkim_canon_header(struct buf *, const char *field, size_t len,
	    int nocrlf);

/*
 * Loads a PEM private key.  Refused: a file others may read or write, an
 * encrypted key, RSA under 2048 bits, any other key type.  0, or -1
 * with err naming the file.
 */
int	dkim_key_load(const char *path, struct dkim_key *, char *err,
	    size_t errlen);
void	dkim_key_free(struct dkim_key *);
/* The key record's value: "v=DKIM1; k=rsa; p=...".  Caller frees. */
char	*dkim_key_record(const struct dkim_key *);
/* Just the p= value (base64).  Caller frees. */
char	*dkim_key_public(const struct dkim_key *);

/*
 * One DKIM-Signature field ("DKIM-Signature: ...\r\n", folded) for the
 * header block hdr (CRLF lines, without the empty line that ends it)
 * and the body hash bh.  NULL with err on a signing failure.
 */
char	*dkim_sign_header(const struct dkim_key *, const char *domain,
	    const char *selector, const char *hdr, size_t hlen,
	    const char *bh, long long t, char *err, size_t errlen);

/*
 * The domain of the first address in the From field(s) of a header
 * block, lower-cased, or NULL.  Caller frees.
 */
char	*dkim_from_domain(const char *hdr, size_t hlen);

/* The [dkim] domain entry matching domain (any case), or NULL. */
const char *dkim_signing_domain(const struct config *, const char *domain);

/*
 * Signs the message at [off, off + len) of fd when its From domain is a
 * [dkim] domain: *sig gets the DKIM-Signature field(s), one per key.
 * Returns 1 signed, 0 not ours to sign (*sig NULL), -1 with err.
 */
int	dkim_sign_spooled(const struct config *, int fd, off_t off,
	    size_t len, long long now, char **sig, char *err, size_t errlen);

#endif
