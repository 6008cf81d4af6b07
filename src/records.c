/*
 * records.c -- the relay's DNS records: what they must say, and whether
 * the TXT records found say it.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "buf.h"
#include "records.h"
#include "util.h"

#define SPF_MAX_LOOKUPS	10	/* RFC 7208 4.6.4 */

void
records_check_free(struct record_check *rc)
{
	free(rc->fix);
	rc->fix = NULL;
	dns_txt_free(&rc->found);
}

char *
records_token(const char *user)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0, i;
	char hex[2 * EVP_MAX_MD_SIZE + 1];

	if (EVP_Digest(user, strlen(user), md, &n, EVP_sha256(), NULL) != 1)
		n = 0;
	for (i = 0; i < n; i++) {
		hex[2 * i] = "0123456789abcdef"[md[i] >> 4];
		hex[2 * i + 1] = "0123456789abcdef"[md[i] & 15];
	}
	hex[2 * n] = '\0';
	return util_asprintf("elastx-mrs=%s", hex);
}

char *
records_zone_line(const char *name, const char *value)
{
	struct buf b;
	size_t i, n = strlen(value), in = 0;

	buf_init(&b);
	buf_printf(&b, "%s. %d IN TXT \"", name, RECORDS_TTL);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)value[i];

		if (in == 255) {	/* one character-string holds 255 */
			buf_puts(&b, "\" \"");
			in = 0;
		}
		if (c == '"' || c == '\\')
			buf_printf(&b, "\\%c", c);
		else if (c < 0x20 || c > 0x7e)
			buf_printf(&b, "\\%03u", c);
		else
			buf_append(&b, &value[i], 1);
		in++;
	}
	buf_puts(&b, "\"");
	return buf_take(&b);
}

void
records_name(struct record_check *rc, const char *record, const char *domain,
    const char *selector)
{
	memset(rc, 0, sizeof(*rc));
	rc->record = record;
	if (strcmp(record, "dkim") == 0)
		(void)util_snprintf(rc->name, sizeof(rc->name),
		    "%s._domainkey.%s", selector, domain);
	else if (strcmp(record, "dmarc") == 0)
		(void)util_snprintf(rc->name, sizeof(rc->name), "_dmarc.%s",
		    domain);
	else
		(void)util_snprintf(rc->name, sizeof(rc->name), "%s", domain);
}

static void
records_found(struct record_check *rc, const char *v)
{
	rc->found.v = xreallocarray(rc->found.v, rc->found.n + 1,
	    sizeof(*rc->found.v));
	rc->found.v[rc->found.n++] = xstrdup(v);
}

/* The lookup itself failed: the record cannot be judged. */
static int
records_lookup_failed(struct record_check *rc, enum dns_status st,
    const char *lookup_err)
{
	if (st != DNS_FAIL)
		return 0;
	rc->pass = 0;
	(void)util_snprintf(rc->detail, sizeof(rc->detail), "lookup of %s "
	    "failed: %s", rc->name, lookup_err != NULL ? lookup_err : "");
	return 1;
}

void
records_check_token(struct record_check *rc, const char *domain,
    const char *user, enum dns_status st, const struct dns_txt *txt,
    const char *lookup_err)
{
	char *want = records_token(user);
	size_t i, others = 0;

	(void)domain;
	rc->pass = 0;
	if (records_lookup_failed(rc, st, lookup_err)) {
		free(want);
		return;
	}
	for (i = 0; st == DNS_FOUND && i < txt->n; i++) {
		const char *v = txt->v[i] + strspn(txt->v[i], " \t");

		if (!util_strncaseeq(v, "elastx-mrs=", 11))
			continue;
		records_found(rc, txt->v[i]);
		if (util_strcaseeq(v, want))
			rc->pass = 1;
		else
			others++;
	}
	if (rc->pass)
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "the "
		    "challenge token for %s is published", user);
	else if (others > 0)
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "%zu "
		    "challenge token%s, but none for the relay account %s "
		    "(another account's token authorizes only that account)",
		    others, others == 1 ? "" : "s", user);
	else
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "no "
		    "elastx-mrs challenge token: the relay refuses mail from "
		    "this domain for %s", user);
	if (!rc->pass)
		rc->fix = records_zone_line(rc->name, want);
	free(want);
}

int
records_is_spf(const char *v)
{
	return util_strncaseeq(v, "v=spf1", 6) && (v[6] == '\0' ||
	    v[6] == ' ');
}

/* The terms of an SPF record after "v=spf1". */
static size_t
records_spf_terms(const char *v, char ***out)
{
	char **t = NULL;
	size_t n = 0, len;

	v += 6;
	while (*v != '\0') {
		v += strspn(v, " ");
		if ((len = strcspn(v, " ")) == 0)
			break;
		t = xreallocarray(t, n + 1, sizeof(*t));
		t[n++] = xstrndup(v, len);
		v += len;
	}
	*out = t;
	return n;
}

static void
records_free_terms(char **t, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(t[i]);
	free(t);
}

/* "all" with an optional qualifier: the qualifier, or 0 if not "all". */
static char
records_spf_all(const char *t)
{
	char q = '+';

	if (*t == '+' || *t == '-' || *t == '~' || *t == '?')
		q = *t++;
	return util_strcaseeq(t, "all") ? q : 0;
}

/* The target of include:X (authorizing: no or "+" qualifier), or NULL. */
static const char *
records_spf_include(const char *t)
{
	if (*t == '+')
		t++;
	return util_strncaseeq(t, "include:", 8) ? t + 8 : NULL;
}

static int
records_is_relay_domain(const char *d)
{
	size_t n = strlen(d);

	if (n > 0 && d[n - 1] == '.')
		n--;
	return n == strlen(RECORDS_SPF_INCLUDE) &&
	    util_strncaseeq(d, RECORDS_SPF_INCLUDE, n);
}

/* What following a domain's SPF record found. */
struct records_spf_walk {
	records_lookup	 lookup;
	void		*arg;
	int		 lookups;	/* DNS lookups so far */
	int		 too_many;	/* more than SPF_MAX_LOOKUPS needed */
	int		 plus_all;	/* a +all was reached: anyone passes */
};

static int records_spf_reaches(const char *, struct records_spf_walk *);

/* 1 if domain is the relay's, or its SPF record reaches it. */
static int
records_spf_follow(const char *domain, struct records_spf_walk *w)
{
	struct dns_txt sub;
	char err[256];
	size_t j;
	int found = 0;

	if (records_is_relay_domain(domain))
		return 1;
	if (w->lookup == NULL || strchr(domain, '%') != NULL)
		return 0;	/* macros: not followed */
	if (++w->lookups > SPF_MAX_LOOKUPS) {
		w->too_many = 1;
		return 0;
	}
	if (w->lookup(w->arg, domain, &sub, err, sizeof(err)) != DNS_FOUND)
		return 0;
	for (j = 0; j < sub.n && !found; j++)
		if (records_is_spf(sub.v[j]))
			found = records_spf_reaches(sub.v[j], w);
	dns_txt_free(&sub);
	return found;
}

/*
 * 1 if the SPF record v reaches include:elastx.email, following other
 * includes and redirect= (each a lookup, at most SPF_MAX_LOOKUPS in
 * all).  Terms after "all" are never evaluated (RFC 7208 5.1).
 */
static int
records_spf_reaches(const char *v, struct records_spf_walk *w)
{
	char **t;
	size_t n, i;
	const char *target, *redirect = NULL;
	int found = 0, has_all = 0;

	n = records_spf_terms(v, &t);
	/* On to the "all" even when found: a +all is still fatal. */
	for (i = 0; i < n && !has_all; i++) {
		char a = records_spf_all(t[i]);

		if (a != 0) {
			has_all = 1;
			w->plus_all |= a == '+';
		} else if (util_strncaseeq(t[i], "redirect=", 9))
			redirect = t[i] + 9;
		else if (!found &&
		    (target = records_spf_include(t[i])) != NULL)
			found = records_spf_follow(target, w);
	}
	/* redirect= counts only where no "all" ends the record. */
	if (!found && redirect != NULL && !has_all)
		found = records_spf_follow(redirect, w);
	records_free_terms(t, n);
	return found;
}

char *
records_spf_advice(char *const *spf, size_t nspf)
{
	struct buf b;
	char **t, **kept = NULL, q = 0;
	size_t i, j, k, n, nkept = 0;
	int have_include = 0;

	buf_init(&b);
	buf_puts(&b, "v=spf1");
	for (i = 0; i < nspf; i++) {
		n = records_spf_terms(spf[i], &t);
		for (j = 0; j < n; j++) {
			char a = records_spf_all(t[j]);
			const char *inc;
			int dup = 0;

			if (a != 0) {
				/* Keep a cautious ending; never "+all". */
				if (a != '+' && (q == 0 || a == '-'))
					q = a;
				continue;
			}
			if (util_strncaseeq(t[j], "redirect=", 9))
				continue;
			for (k = 0; k < nkept && !dup; k++)
				dup = util_strcaseeq(kept[k], t[j]);
			if (dup)
				continue;
			if ((inc = records_spf_include(t[j])) != NULL &&
			    records_is_relay_domain(inc))
				have_include = 1;
			buf_printf(&b, " %s", t[j]);
			kept = xreallocarray(kept, nkept + 1, sizeof(*kept));
			kept[nkept++] = xstrdup(t[j]);
		}
		records_free_terms(t, n);
	}
	records_free_terms(kept, nkept);
	if (!have_include)
		buf_puts(&b, " include:" RECORDS_SPF_INCLUDE);
	buf_printf(&b, " %call", q != 0 ? q : '-');
	return buf_take(&b);
}

void
records_check_spf(struct record_check *rc, const char *domain,
    enum dns_status st, const struct dns_txt *txt, const char *lookup_err,
    records_lookup lookup, void *arg)
{
	struct records_spf_walk w;
	size_t i;
	char *advice;
	int found;

	(void)domain;
	rc->pass = 0;
	if (records_lookup_failed(rc, st, lookup_err))
		return;
	for (i = 0; st == DNS_FOUND && i < txt->n; i++)
		if (records_is_spf(txt->v[i]))
			records_found(rc, txt->v[i]);
	advice = records_spf_advice(rc->found.v, rc->found.n);
	if (rc->found.n == 0) {
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "no SPF "
		    "record: receivers cannot tell that the relay may send "
		    "for this domain");
		goto fail;
	}
	if (rc->found.n > 1) {
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "%zu SPF "
		    "records: receivers treat more than one as an error "
		    "(RFC 7208 4.5); merge them into one", rc->found.n);
		goto fail;
	}
	memset(&w, 0, sizeof(w));
	w.lookup = lookup;
	w.arg = arg;
	found = records_spf_reaches(rc->found.v[0], &w);
	if (w.plus_all) {
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "the SPF "
		    "record ends in +all (itself or through an include or "
		    "redirect), which lets any host send as this domain; end "
		    "it in -all (or ~all)");
		goto fail;
	}
	if (!found && w.too_many) {
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "the SPF "
		    "record needs more than %d DNS lookups before it reaches "
		    RECORDS_SPF_INCLUDE " (RFC 7208 4.6.4): receivers stop "
		    "there", SPF_MAX_LOOKUPS);
		goto fail;
	}
	if (!found) {
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "the SPF "
		    "record does not include " RECORDS_SPF_INCLUDE " (directly "
		    "or through its includes), so the relay's servers are not "
		    "authorized");
		goto fail;
	}
	rc->pass = 1;
	(void)util_snprintf(rc->detail, sizeof(rc->detail), "one SPF record, "
	    "and it authorizes " RECORDS_SPF_INCLUDE);
	free(advice);
	return;
fail:
	rc->fix = records_zone_line(rc->name, advice);
	free(advice);
}

/*
 * Finds tag in a tag-list (RFC 6376 3.2: "tag=value; ..." with folding
 * whitespace around everything): its value with whitespace removed, or
 * NULL.  *pos gets its position in the list, counted from 0.
 */
static char *
records_tag(const char *list, const char *tag, int *pos)
{
	const char *p = list;
	size_t tl = strlen(tag);
	int index = 0;

	while (*p != '\0') {
		const char *end = strchr(p, ';'), *eq;
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);

		while (len > 0 && isspace((unsigned char)*p)) {
			p++;
			len--;
		}
		eq = memchr(p, '=', len);
		if (eq != NULL) {
			size_t nl = (size_t)(eq - p);

			while (nl > 0 && isspace((unsigned char)p[nl - 1]))
				nl--;
			if (nl == tl && strncmp(p, tag, tl) == 0) {
				struct buf b;
				const char *v;

				buf_init(&b);
				for (v = eq + 1; v < p + len; v++)
					if (!isspace((unsigned char)*v))
						buf_append(&b, v, 1);
				if (pos != NULL)
					*pos = index;
				if (b.data == NULL)
					buf_append(&b, "", 0);
				return buf_take(&b);
			}
		}
		if (len > 0)
			index++;
		if (end == NULL)
			break;
		p = end + 1;
	}
	return NULL;
}

static int
records_is_base64(const char *s)
{
	size_t n = strlen(s), i, pad = 0;

	if (n == 0 || n % 4 != 0)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '=') {
			if (++pad > 2 || i + 3 - pad < n - 1)
				return 0;
		} else if (pad > 0 || !(isalnum(c) || c == '+' || c == '/'))
			return 0;
	}
	return 1;
}

/* 1 if base64 p decodes to a usable public key of the type. */
static int
records_is_key(const char *p, int ed25519)
{
	size_t n = strlen(p), len;
	unsigned char *der = xmalloc(3 * (n / 4) + 3);
	const unsigned char *q = der;
	EVP_PKEY *k = NULL;
	int rc = 0, dl;

	if ((dl = EVP_DecodeBlock(der, (const unsigned char *)p, (int)n)) < 0)
		goto out;
	len = (size_t)dl;	/* less the "=" padding */
	while (n > 0 && p[n - 1] == '=' && len > 0) {
		n--;
		len--;
	}
	if (ed25519) {
		rc = len == 32;
		goto out;
	}
	/* SubjectPublicKeyInfo, or a bare PKCS#1 RSAPublicKey. */
	if ((k = d2i_PUBKEY(NULL, &q, (long)len)) == NULL) {
		q = der;
		k = d2i_PublicKey(EVP_PKEY_RSA, NULL, &q, (long)len);
	}
	rc = k != NULL && EVP_PKEY_is_a(k, "RSA") &&
	    EVP_PKEY_get_bits(k) >= 1024;
out:
	EVP_PKEY_free(k);
	free(der);
	return rc;
}

void
records_check_dkim(struct record_check *rc, const char *pubkey,
    const char *keytype, enum dns_status st, const struct dns_txt *txt,
    const char *lookup_err)
{
	char *v = NULL, *k = NULL, *p = NULL, *want = NULL;
	int vpos = -1;

	rc->pass = 0;
	if (records_lookup_failed(rc, st, lookup_err))
		return;
	if (pubkey != NULL) {
		char *val = util_asprintf("v=DKIM1; k=%s; p=%s", keytype,
		    pubkey);

		want = records_zone_line(rc->name, val);
		free(val);
	}
	if (st != DNS_FOUND || txt->n == 0) {
		if (pubkey != NULL)
			(void)util_snprintf(rc->detail, sizeof(rc->detail),
			    "no DKIM key record for the local key");
		else
			(void)util_snprintf(rc->detail, sizeof(rc->detail),
			    "no DKIM key record: Elastx signs for the domain "
			    "only with the record their support provides (or "
			    "sign locally with [dkim])");
		goto fail;
	}
	records_found(rc, txt->v[0]);
	if (txt->n > 1) {
		records_found(rc, txt->v[1]);
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "%zu TXT "
		    "records at one selector: verifiers may pick either; keep "
		    "one", txt->n);
		goto fail;
	}
	v = records_tag(txt->v[0], "v", &vpos);
	k = records_tag(txt->v[0], "k", NULL);
	p = records_tag(txt->v[0], "p", NULL);
	if (v != NULL && (vpos != 0 || strcmp(v, "DKIM1") != 0)) {
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "malformed "
		    "DKIM record: v= must come first and be DKIM1");
		goto fail;
	}
	if (p == NULL) {
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "malformed "
		    "DKIM record: no p= (public key) tag");
		goto fail;
	}
	if (p[0] == '\0') {
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "the DKIM "
		    "key is revoked (empty p=)");
		goto fail;
	}
	if (!records_is_base64(p)) {
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "malformed "
		    "DKIM record: p= is not base64");
		goto fail;
	}
	if (k != NULL && !util_strcaseeq(k, "rsa") &&
	    !util_strcaseeq(k, "ed25519")) {
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "malformed "
		    "DKIM record: unknown key type k=%.32s", k);
		goto fail;
	}
	if (!records_is_key(p, k != NULL && util_strcaseeq(k, "ed25519"))) {
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "malformed "
		    "DKIM record: p= is not a%s public key",
		    k != NULL && util_strcaseeq(k, "ed25519") ? "n Ed25519" :
		    "n RSA");
		goto fail;
	}
	if (pubkey != NULL) {
		if (!util_strcaseeq(k != NULL ? k : "rsa", keytype)) {
			(void)util_snprintf(rc->detail, sizeof(rc->detail),
			    "the record is for a %s key, the local key is %s",
			    k != NULL ? k : "rsa", keytype);
			goto fail;
		}
		if (strcmp(p, pubkey) != 0) {
			(void)util_snprintf(rc->detail, sizeof(rc->detail),
			    "the record's key does not match the local key "
			    "(signatures would not verify)");
			goto fail;
		}
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "matches "
		    "the local %s key", keytype);
	} else
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "a "
		    "well-formed %s key record (the relay's key)",
		    k != NULL ? k : "rsa");
	rc->pass = 1;
	free(want);
	goto out;
fail:
	rc->fix = want != NULL ? want : util_asprintf("%s. %d IN TXT \"(the "
	    "value Elastx support gives you)\"", rc->name, RECORDS_TTL);
out:
	free(v);
	free(k);
	free(p);
}

static int
records_word_in(const char *w, const char *const *set)
{
	for (; *set != NULL; set++)
		if (util_strcaseeq(w, *set))
			return 1;
	return 0;
}

/* Checks one DMARC record's tags; "" if good, else why not. */
static void
records_dmarc_problem(const char *rec, char *why, size_t len)
{
	static const char *const policies[] = { "none", "quarantine",
		"reject", NULL };
	static const char *const modes[] = { "r", "s", NULL };
	char *p, *sp, *adkim, *aspf, *pct;
	unsigned long n;
	int ppos = -1;

	why[0] = '\0';
	p = records_tag(rec, "p", &ppos);
	sp = records_tag(rec, "sp", NULL);
	adkim = records_tag(rec, "adkim", NULL);
	aspf = records_tag(rec, "aspf", NULL);
	pct = records_tag(rec, "pct", NULL);
	if (p == NULL)
		(void)util_snprintf(why, len, "no p= policy tag");
	else if (ppos != 1)	/* right after v=DMARC1 (RFC 7489 6.4) */
		(void)util_snprintf(why, len, "p= must come right after "
		    "v=DMARC1");
	else if (!records_word_in(p, policies))
		(void)util_snprintf(why, len, "p=%.32s is not none, quarantine "
		    "or reject", p);
	else if (sp != NULL && !records_word_in(sp, policies))
		(void)util_snprintf(why, len, "sp=%.32s is not none, "
		    "quarantine or reject", sp);
	else if (adkim != NULL && !records_word_in(adkim, modes))
		(void)util_snprintf(why, len, "adkim=%.32s is not r or s",
		    adkim);
	else if (aspf != NULL && !records_word_in(aspf, modes))
		(void)util_snprintf(why, len, "aspf=%.32s is not r or s", aspf);
	else if (pct != NULL && util_parse_ulong(pct, 0, 100, &n) == -1)
		(void)util_snprintf(why, len, "pct=%.32s is not 0 to 100", pct);
	free(p);
	free(sp);
	free(adkim);
	free(aspf);
	free(pct);
}

void
records_check_dmarc(struct record_check *rc, enum dns_status st,
    const struct dns_txt *txt, const char *lookup_err)
{
	char why[256];
	size_t i;

	rc->pass = 0;
	if (records_lookup_failed(rc, st, lookup_err))
		return;
	/* Only records that start with v=DMARC1 are DMARC records. */
	for (i = 0; st == DNS_FOUND && i < txt->n; i++) {
		int vpos = -1;
		char *v = records_tag(txt->v[i], "v", &vpos);

		if (v != NULL && vpos == 0 && strcmp(v, "DMARC1") == 0)
			records_found(rc, txt->v[i]);
		free(v);
	}
	if (rc->found.n == 0)
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "no DMARC "
		    "record (any valid policy will do)");
	else if (rc->found.n > 1)
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "%zu DMARC "
		    "records: receivers ignore them all (RFC 7489 6.6.3); keep "
		    "one", rc->found.n);
	else {
		records_dmarc_problem(rc->found.v[0], why, sizeof(why));
		if (why[0] == '\0') {
			rc->pass = 1;
			(void)util_snprintf(rc->detail, sizeof(rc->detail),
			    "a valid DMARC policy");
			return;
		}
		(void)util_snprintf(rc->detail, sizeof(rc->detail), "invalid "
		    "DMARC record: %s", why);
	}
	rc->fix = records_zone_line(rc->name, RECORDS_DMARC_EXAMPLE);
}
