/*
 * dkim.c -- DKIM signatures (RFC 6376 relaxed/relaxed, RFC 8463).
 *
 * A spooled message is already in wire form (CRLF lines, no bare CR, at
 * most 998 octets a line, headers final), so what is hashed here is
 * exactly what the relay receives after the signature fields.  The
 * signature is made once, by the delivering process, and stored with
 * the queue entry: every retry sends the same bytes (deliver.c).
 */
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "address.h"
#include "config.h"
#include "dkim.h"
#include "message.h"
#include "util.h"

#define DKIM_KEY_FILE_MAX	(64 * 1024)
#define DKIM_FOLD		76	/* fold signature lines near here */
#define DKIM_MAX_INSTANCES	8	/* of one field name in h= */

/*
 * Signed when present (RFC 6376 5.4.1's list, trimmed to what readers
 * see and what mailing lists key on).  From is signed once more than it
 * occurs, so nobody can add a second From the verifier would accept.
 */
static const char *const dkim_signed_fields[] = {
	"from", "reply-to", "subject", "date", "to", "cc", "message-id",
	"in-reply-to", "references", "mime-version", "content-type",
	"content-transfer-encoding", "list-id", "list-help",
	"list-unsubscribe", "list-unsubscribe-post", "list-subscribe",
	"list-post", "list-owner", "list-archive"
};

static int
dkim_wsp(int c)
{
	return c == ' ' || c == '\t';
}

/* ---- relaxed body canonicalisation, streamed into SHA-256 ---------- */

static int
dkim_body_flush(struct dkim_body *b)
{
	if (b->nout > 0 && EVP_DigestUpdate(b->md, b->out, b->nout) != 1)
		return -1;
	b->nout = 0;
	return 0;
}

static int
dkim_body_put(struct dkim_body *b, const char *p, size_t n)
{
	if (b->nout + n > sizeof(b->out) && dkim_body_flush(b) == -1)
		return -1;
	memcpy(b->out + b->nout, p, n);
	b->nout += n;
	return 0;
}

int
dkim_body_init(struct dkim_body *b)
{
	memset(b, 0, sizeof(*b));
	if ((b->md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(b->md, EVP_sha256(), NULL) != 1) {
		dkim_body_free(b);
		return -1;
	}
	return 0;
}

/* A visible character: held-back empty lines and whitespace go first. */
static int
dkim_body_char(struct dkim_body *b, char c)
{
	for (; b->blank > 0; b->blank--)
		if (dkim_body_put(b, "\r\n", 2) == -1)
			return -1;
	if (b->wsp && dkim_body_put(b, " ", 1) == -1)
		return -1;
	b->wsp = 0;
	b->content = 1;
	return dkim_body_put(b, &c, 1);
}

/* A line end: trailing whitespace goes; empty lines wait for content. */
static int
dkim_body_eol(struct dkim_body *b)
{
	b->wsp = 0;
	if (!b->content) {
		b->blank++;
		return 0;
	}
	b->content = 0;
	return dkim_body_put(b, "\r\n", 2);
}

int
dkim_body_update(struct dkim_body *b, const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char c = p[i];

		if (b->cr) {
			b->cr = 0;
			if (c == '\n') {
				if (dkim_body_eol(b) == -1)
					return -1;
				continue;
			}
			/* A CR that ends no line is an ordinary octet. */
			if (dkim_body_char(b, '\r') == -1)
				return -1;
		}
		if (c == '\r')
			b->cr = 1;
		else if (dkim_wsp(c))
			b->wsp = 1;
		else if (dkim_body_char(b, c) == -1)
			return -1;
	}
	return 0;
}

int
dkim_body_final(struct dkim_body *b, char bh[DKIM_BH_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n;
	int rc = -1;

	if (b->cr && dkim_body_char(b, '\r') == -1)
		goto out;
	/* A last line without CRLF gets one; trailing empty lines go. */
	if (b->content && dkim_body_put(b, "\r\n", 2) == -1)
		goto out;
	if (dkim_body_flush(b) == -1 ||
	    EVP_DigestFinal_ex(b->md, md, &n) != 1 || n != 32)
		goto out;
	if (EVP_EncodeBlock((unsigned char *)bh, md, (int)n) != DKIM_BH_LEN)
		goto out;
	rc = 0;
out:
	dkim_body_free(b);
	return rc;
}

void
dkim_body_free(struct dkim_body *b)
{
	EVP_MD_CTX_free(b->md);
	b->md = NULL;
}

/* ---- relaxed header canonicalisation ------------------------------- */

void
dkim_canon_header(struct buf *out, const char *f, size_t len, int nocrlf)
{
	size_t i = 0, name_end, start;
	int wsp = 0, started = 0;

	while (i < len && f[i] != ':')
		i++;
	name_end = i;
	while (name_end > 0 && dkim_wsp(f[name_end - 1]))
		name_end--;
	for (start = 0; start < name_end; start++) {
		char c = (char)tolower((unsigned char)f[start]);

		buf_append(out, &c, 1);
	}
	buf_append(out, ":", 1);
	if (i < len)
		i++;
	/* Unfold, squeeze whitespace runs, trim both ends of the value. */
	for (; i < len; i++) {
		if (f[i] == '\r' || f[i] == '\n' || dkim_wsp(f[i])) {
			wsp = 1;
			continue;
		}
		if (wsp && started)
			buf_append(out, " ", 1);
		wsp = 0;
		started = 1;
		buf_append(out, &f[i], 1);
	}
	if (!nocrlf)
		buf_append(out, "\r\n", 2);
}

/* ---- keys ---------------------------------------------------------- */

static int
dkim_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

int
dkim_key_load(const char *path, struct dkim_key *k, char *err, size_t errlen)
{
	char *pem = NULL;
	struct stat st;
	ssize_t n;
	size_t len = 0;
	BIO *bio = NULL;
	int fd, rc = -1;

	memset(k, 0, sizeof(*k));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		(void)util_snprintf(err, errlen, "[dkim] key_file %s: %s",
		    path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		(void)util_snprintf(err, errlen, "[dkim] key_file %s: not a "
		    "regular file", path);
		goto out;
	}
	if (st.st_mode & (S_IRWXO | S_IWGRP)) {
		(void)util_snprintf(err, errlen, "[dkim] key_file %s: refusing "
		    "a private key that others may read, or the group or "
		    "others may change (mode %04o; chmod 640 or 600 it)", path,
		    (unsigned)(st.st_mode & 07777));
		goto out;
	}
	if (st.st_size <= 0 || st.st_size > DKIM_KEY_FILE_MAX) {
		(void)util_snprintf(err, errlen, "[dkim] key_file %s: empty or "
		    "too large for a PEM key", path);
		goto out;
	}
	pem = xmalloc((size_t)st.st_size);
	while (len < (size_t)st.st_size &&
	    (n = util_read(fd, pem + len, (size_t)st.st_size - len)) > 0)
		len += (size_t)n;
	if (len != (size_t)st.st_size) {
		(void)util_snprintf(err, errlen, "[dkim] key_file %s: short "
		    "read", path);
		goto out;
	}
	if ((bio = BIO_new_mem_buf(pem, (int)len)) == NULL ||
	    (k->pkey = PEM_read_bio_PrivateKey(bio, NULL, dkim_no_passphrase,
	    NULL)) == NULL) {
		(void)util_snprintf(err, errlen, "[dkim] key_file %s: not an "
		    "unencrypted PEM private key", path);
		goto out;
	}
	if (EVP_PKEY_is_a(k->pkey, "ED25519"))
		k->ed25519 = 1;
	else if (!EVP_PKEY_is_a(k->pkey, "RSA")) {
		(void)util_snprintf(err, errlen, "[dkim] key_file %s: neither "
		    "an RSA nor an Ed25519 key", path);
		goto out;
	}
	k->bits = (unsigned)EVP_PKEY_get_bits(k->pkey);
	if (!k->ed25519 && k->bits < 2048) {
		(void)util_snprintf(err, errlen, "[dkim] key_file %s: RSA key "
		    "of %u bits; DKIM needs at least 2048", path, k->bits);
		goto out;
	}
	rc = 0;
out:
	BIO_free(bio);
	if (pem != NULL) {
		util_wipe(pem, len);
		free(pem);
	}
	(void)close(fd);
	if (rc == -1)
		dkim_key_free(k);
	return rc;
}

void
dkim_key_free(struct dkim_key *k)
{
	EVP_PKEY_free(k->pkey);
	k->pkey = NULL;
}

static char *
dkim_base64(const unsigned char *p, size_t n)
{
	char *out = xmalloc(4 * ((n + 2) / 3) + 1);

	if (EVP_EncodeBlock((unsigned char *)out, p, (int)n) < 0)
		out[0] = '\0';
	return out;
}

char *
dkim_key_public(const struct dkim_key *k)
{
	unsigned char raw[32], *der = NULL;
	size_t rawlen = sizeof(raw);
	char *p;
	int n;

	if (k->ed25519) {
		/* RFC 8463: the bare 32-octet key, not an SPKI. */
		if (EVP_PKEY_get_raw_public_key(k->pkey, raw, &rawlen) != 1)
			return NULL;
		return dkim_base64(raw, rawlen);
	}
	if ((n = i2d_PUBKEY(k->pkey, &der)) <= 0)
		return NULL;
	p = dkim_base64(der, (size_t)n);
	OPENSSL_free(der);
	return p;
}

char *
dkim_key_record(const struct dkim_key *k)
{
	char *p = dkim_key_public(k), *r;

	if (p == NULL)
		return NULL;
	r = util_asprintf("v=DKIM1; k=%s; p=%s", k->ed25519 ? "ed25519" :
	    "rsa", p);
	free(p);
	return r;
}

/* ---- signing ------------------------------------------------------- */

struct dkim_field {
	const char	*p;
	size_t		 len;		/* without the final CRLF */
	size_t		 namelen;
	int		 used;
};

/* Splits a header block into fields (a fold continues a field). */
static struct dkim_field *
dkim_fields(const char *hdr, size_t hlen, size_t *nout)
{
	struct dkim_field *v = NULL;
	size_t n = 0, i = 0;

	while (i < hlen) {
		size_t start = i, end;

		for (;;) {
			const char *nl = memchr(hdr + i, '\n', hlen - i);

			i = nl != NULL ? (size_t)(nl - hdr) + 1 : hlen;
			if (i >= hlen || !dkim_wsp(hdr[i]))
				break;
		}
		end = i;
		if (end > start && hdr[end - 1] == '\n')
			end--;
		if (end > start && hdr[end - 1] == '\r')
			end--;
		v = xreallocarray(v, n + 1, sizeof(*v));
		v[n].p = hdr + start;
		v[n].len = end - start;
		v[n].namelen = 0;
		while (v[n].namelen < v[n].len && hdr[start + v[n].namelen] !=
		    ':')
			v[n].namelen++;
		while (v[n].namelen > 0 && dkim_wsp(hdr[start +
		    v[n].namelen - 1]))
			v[n].namelen--;
		v[n].used = 0;
		n++;
	}
	*nout = n;
	return v;
}

static int
dkim_field_is(const struct dkim_field *f, const char *name)
{
	return strlen(name) == f->namelen &&
	    util_strncaseeq(f->p, name, f->namelen);
}

/* Appends s to a folded field: a new line when this one is full. */
static void
dkim_fold_add(struct buf *b, size_t *col, const char *s, size_t n)
{
	if (*col + n > DKIM_FOLD && *col > 1) {
		buf_append(b, "\r\n\t", 3);
		*col = 1;
		if (n > 0 && *s == ' ') {	/* the fold is the space */
			s++;
			n--;
		}
	}
	buf_append(b, s, n);
	*col += n;
}

/* Signs data: rsa-sha256 signs it, ed25519-sha256 signs its SHA-256. */
static unsigned char *
dkim_sign_data(const struct dkim_key *k, const char *data, size_t len,
    size_t *siglen)
{
	unsigned char digest[32], *sig = NULL;
	unsigned int dlen;
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	int ok = 0;

	if (c == NULL)
		return NULL;
	if (k->ed25519) {
		if (EVP_Digest(data, len, digest, &dlen, EVP_sha256(), NULL) ==
		    1 && EVP_DigestSignInit(c, NULL, NULL, NULL, k->pkey) == 1 &&
		    EVP_DigestSign(c, NULL, siglen, digest, dlen) == 1) {
			sig = xmalloc(*siglen);
			ok = EVP_DigestSign(c, sig, siglen, digest, dlen) == 1;
		}
	} else if (EVP_DigestSignInit(c, NULL, EVP_sha256(), NULL, k->pkey) ==
	    1 && EVP_DigestSignUpdate(c, data, len) == 1 &&
	    EVP_DigestSignFinal(c, NULL, siglen) == 1) {
		sig = xmalloc(*siglen);
		ok = EVP_DigestSignFinal(c, sig, siglen) == 1;
	}
	EVP_MD_CTX_free(c);
	if (!ok) {
		free(sig);
		return NULL;
	}
	return sig;
}

char *
dkim_sign_header(const struct dkim_key *k, const char *domain,
    const char *selector, const char *hdr, size_t hlen, const char *bh,
    long long t, char *err, size_t errlen)
{
	struct dkim_field *fields;
	struct buf sigf, data;
	unsigned char *sig;
	char tag[512], *b64;
	size_t nf, i, j, col, siglen, pos;

	fields = dkim_fields(hdr, hlen, &nf);
	buf_init(&sigf);
	buf_init(&data);
	buf_puts(&sigf, "DKIM-Signature:");
	col = 15;
	(void)util_snprintf(tag, sizeof(tag), " v=1; a=%s; c=relaxed/relaxed;",
	    k->ed25519 ? "ed25519-sha256" : "rsa-sha256");
	dkim_fold_add(&sigf, &col, tag, strlen(tag));
	(void)util_snprintf(tag, sizeof(tag), " d=%s;", domain);
	dkim_fold_add(&sigf, &col, tag, strlen(tag));
	(void)util_snprintf(tag, sizeof(tag), " s=%s;", selector);
	dkim_fold_add(&sigf, &col, tag, strlen(tag));
	(void)util_snprintf(tag, sizeof(tag), " t=%lld;", t);
	dkim_fold_add(&sigf, &col, tag, strlen(tag));

	/* h=: each present field as often as it occurs (From once more);
	 * the hash takes instances from the bottom up (RFC 6376 5.4.2). */
	dkim_fold_add(&sigf, &col, " h=", 3);
	pos = 0;
	for (i = 0; i < UTIL_ARRAYLEN(dkim_signed_fields); i++) {
		const char *name = dkim_signed_fields[i];
		size_t count = 0, c;

		for (j = 0; j < nf; j++)
			count += dkim_field_is(&fields[j], name);
		/* The last few of a field are enough (verifiers take them
		 * from the bottom), and h= must fit the state file. */
		if (count > DKIM_MAX_INSTANCES)
			count = DKIM_MAX_INSTANCES;
		if (i == 0)
			count++;
		for (c = 0; c < count; c++) {
			(void)util_snprintf(tag, sizeof(tag), "%s%s",
			    pos++ > 0 ? ":" : "", name);
			dkim_fold_add(&sigf, &col, tag, strlen(tag));
			for (j = nf; j-- > 0;)
				if (!fields[j].used &&
				    dkim_field_is(&fields[j], name)) {
					fields[j].used = 1;
					dkim_canon_header(&data, fields[j].p,
					    fields[j].len, 0);
					break;
				}
		}
	}
	buf_append(&sigf, ";", 1);
	col++;
	(void)util_snprintf(tag, sizeof(tag), " bh=%s;", bh);
	dkim_fold_add(&sigf, &col, tag, strlen(tag));
	dkim_fold_add(&sigf, &col, " b=", 3);
	/* The field itself is hashed last, with b= empty, without CRLF. */
	dkim_canon_header(&data, sigf.data, sigf.len, 1);
	free(fields);

	sig = dkim_sign_data(k, data.data, data.len, &siglen);
	buf_free(&data);
	if (sig == NULL) {
		(void)util_snprintf(err, errlen, "DKIM signing with the %s key "
		    "for %s failed", k->ed25519 ? "Ed25519" : "RSA", domain);
		buf_free(&sigf);
		return NULL;
	}
	b64 = dkim_base64(sig, siglen);
	free(sig);
	for (i = 0; b64[i] != '\0'; i += j) {
		j = strlen(b64 + i);
		if (j > DKIM_FOLD - 8)
			j = DKIM_FOLD - 8;
		dkim_fold_add(&sigf, &col, b64 + i, j);
	}
	free(b64);
	buf_append(&sigf, "\r\n", 2);
	return buf_take(&sigf);
}

char *
dkim_from_domain(const char *hdr, size_t hlen)
{
	struct dkim_field *fields;
	struct addr_list al;
	char err[256], *d = NULL, *at, *p;
	size_t nf, i;

	fields = dkim_fields(hdr, hlen, &nf);
	addr_list_init(&al);
	for (i = 0; i < nf && al.n == 0; i++)
		if (dkim_field_is(&fields[i], "from")) {
			const char *v = memchr(fields[i].p, ':', fields[i].len);

			if (v != NULL)
				(void)addr_list_parse(v + 1, fields[i].len -
				    (size_t)(v + 1 - fields[i].p), &al, err,
				    sizeof(err));
		}
	if (al.n > 0 && (at = strrchr(al.v[0], '@')) != NULL &&
	    at[1] != '\0') {
		d = xstrdup(at + 1);
		for (p = d; *p != '\0'; p++)
			*p = (char)tolower((unsigned char)*p);
	}
	addr_list_free(&al);
	free(fields);
	return d;
}

const char *
dkim_signing_domain(const struct config *cfg, const char *domain)
{
	size_t i;

	if (domain == NULL)
		return NULL;
	for (i = 0; i < cfg->dkim.ndomains; i++)
		if (util_strcaseeq(cfg->dkim.domains[i], domain))
			return cfg->dkim.domains[i];
	return NULL;
}

/* The first CRLF CRLF in p[0..n), or NULL. */
static char *
dkim_find_blank(char *p, size_t n)
{
	char *cr;

	while (n >= 4 && (cr = memchr(p, '\r', n - 3)) != NULL) {
		if (memcmp(cr, "\r\n\r\n", 4) == 0)
			return cr;
		n -= (size_t)(cr + 1 - p);
		p = cr + 1;
	}
	return NULL;
}

/* Reads the header block: everything before the first empty line. */
static int
dkim_read_header(int fd, off_t off, size_t len, struct buf *hdr,
    size_t *body_off)
{
	char chunk[8192];
	size_t pos = 0, scan = 0;
	char *end;

	while (pos < len) {
		size_t want = len - pos < sizeof(chunk) ? len - pos :
		    sizeof(chunk);

		if (util_pread_full(fd, chunk, want, off + (off_t)pos) == -1)
			return -1;
		buf_append(hdr, chunk, want);
		pos += want;
		/* An empty first line: no header at all. */
		if (hdr->len >= 2 && memcmp(hdr->data, "\r\n", 2) == 0) {
			hdr->len = 0;
			*body_off = 2;
			return 0;
		}
		if ((end = dkim_find_blank(hdr->data + scan, hdr->len - scan))
		    != NULL) {
			hdr->len = (size_t)(end - hdr->data) + 2;
			*body_off = hdr->len + 2;
			return 0;
		}
		scan = hdr->len > 3 ? hdr->len - 3 : 0;
		/* The submission limit counts content; each spooled line
		 * adds its CRLF, so allow for short lines. */
		if (hdr->len > 3 * (size_t)MESSAGE_HEADER_MAX) {
			errno = EFBIG;
			return -1;
		}
	}
	*body_off = len;	/* a message of header fields only */
	return 0;
}

int
dkim_sign_spooled(const struct config *cfg, int fd, off_t off, size_t len,
    long long now, char **sig, char *err, size_t errlen)
{
	struct dkim_key keys[DKIM_MAX_KEYS];
	struct dkim_body body;
	struct buf hdr, out;
	char bh[DKIM_BH_LEN + 1], chunk[65536], *from;
	const char *domain;
	size_t body_off, pos, i, nkeys = 0;
	int rc = -1;

	*sig = NULL;
	if (cfg->dkim.nkeys == 0)
		return 0;
	buf_init(&hdr);
	buf_init(&out);
	if (dkim_read_header(fd, off, len, &hdr, &body_off) == -1) {
		(void)util_snprintf(err, errlen, "DKIM: reading the message: "
		    "%s", strerror(errno));
		buf_free(&hdr);
		return -1;
	}
	from = dkim_from_domain(hdr.data != NULL ? hdr.data : "", hdr.len);
	if ((domain = dkim_signing_domain(cfg, from)) == NULL) {
		free(from);
		buf_free(&hdr);
		return 0;
	}
	free(from);
	for (nkeys = 0; nkeys < cfg->dkim.nkeys; nkeys++)
		if (dkim_key_load(cfg->dkim.key_files[nkeys], &keys[nkeys], err,
		    errlen) == -1)
			goto out;
	if (dkim_body_init(&body) == -1) {
		(void)util_snprintf(err, errlen, "DKIM: SHA-256 unavailable");
		goto out;
	}
	for (pos = body_off; pos < len;) {
		size_t want = len - pos < sizeof(chunk) ? len - pos :
		    sizeof(chunk);

		if (util_pread_full(fd, chunk, want, off + (off_t)pos) == -1 ||
		    dkim_body_update(&body, chunk, want) == -1) {
			(void)util_snprintf(err, errlen, "DKIM: hashing the "
			    "body: %s", strerror(errno));
			dkim_body_free(&body);
			goto out;
		}
		pos += want;
	}
	if (dkim_body_final(&body, bh) == -1) {
		(void)util_snprintf(err, errlen, "DKIM: hashing the body");
		goto out;
	}
	for (i = 0; i < nkeys; i++) {
		char *s = dkim_sign_header(&keys[i], domain,
		    cfg->dkim.selectors[i], hdr.data != NULL ? hdr.data : "",
		    hdr.len, bh, now, err, errlen);

		if (s == NULL)
			goto out;
		buf_puts(&out, s);
		free(s);
	}
	*sig = buf_take(&out);
	rc = 1;
out:
	for (i = 0; i < nkeys; i++)
		dkim_key_free(&keys[i]);
	buf_free(&hdr);
	buf_free(&out);
	return rc;
}
