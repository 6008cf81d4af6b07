/*
 * fuzz_records.c -- judging the TXT records of relayq check and
 * relayq dns-records: token, SPF (with include:/redirect= followed
 * through a fake resolver that answers with the same records), DKIM key
 * and DMARC, and the zone-file lines suggested as fixes.
 *
 * Input: one flag byte, then TXT values, one per line.
 *   flags & 3      the lookup: found (0, 3), none (1), failed (2)
 *   flags & 4      a local DKIM key to compare with (else the provider's)
 *   flags & 8      ... an RSA one (else Ed25519)
 *   flags & 16     SPF includes are followed (else lookup is NULL)
 *
 * Checked beyond "no crash": a zone line is one owner name, TTL, IN TXT
 * and quoted character-strings of at most 255 octets, in printable
 * ASCII, that decode back to the value exactly.
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include "dns.h"
#include "records.h"

#define FUZZ_MAXREC	64

static const struct dns_txt *answer;
static size_t lookups;

static enum dns_status
fake_lookup(void *arg, const char *name, struct dns_txt *out, char *err,
    size_t errlen)
{
	size_t i;

	(void)arg;
	(void)name;
	memset(out, 0, sizeof(*out));
	lookups++;
	FUZZ_ASSERT(lookups <= 100);	/* RFC 7208 4.6.4 caps it at 10 */
	if (answer->n == 0) {
		(void)snprintf(err, errlen, "no such name");
		return DNS_NONE;
	}
	out->v = calloc(answer->n, sizeof(*out->v));
	FUZZ_ASSERT(out->v != NULL);
	for (i = 0; i < answer->n; i++)
		out->v[i] = strdup(answer->v[i]);
	out->n = answer->n;
	return DNS_FOUND;
}

/* Checks a zone line and returns its decoded TXT value (caller frees). */
static char *
decode_zone_line(const char *line, const char *name)
{
	char prefix[512], *out;
	const char *p;
	size_t n = 0, in;

	(void)snprintf(prefix, sizeof(prefix), "%s. %d IN TXT \"", name,
	    RECORDS_TTL);
	FUZZ_ASSERT(strncmp(line, prefix, strlen(prefix)) == 0);
	p = line + strlen(prefix) - 1;
	out = malloc(strlen(line) + 1);
	FUZZ_ASSERT(out != NULL);
	for (;;) {
		FUZZ_ASSERT(*p == '"');
		p++;
		for (in = 0; *p != '"'; in++) {
			FUZZ_ASSERT(*p >= 0x20 && *p <= 0x7e);
			if (*p == '\\') {
				p++;
				if (*p == '"' || *p == '\\')
					out[n++] = *p++;
				else {
					FUZZ_ASSERT(p[0] >= '0' && p[0] <= '9' &&
					    p[1] >= '0' && p[1] <= '9' &&
					    p[2] >= '0' && p[2] <= '9');
					out[n++] = (char)((p[0] - '0') * 100 +
					    (p[1] - '0') * 10 + (p[2] - '0'));
					p += 3;
				}
			} else
				out[n++] = *p++;
		}
		FUZZ_ASSERT(in <= 255);
		p++;
		if (*p == '\0')
			break;
		FUZZ_ASSERT(*p == ' ');
		p++;
	}
	out[n] = '\0';
	return out;
}

static void
check_zone_line(const char *name, const char *value)
{
	char *line = records_zone_line(name, value), *back;

	back = decode_zone_line(line, name);
	FUZZ_ASSERT(strcmp(back, value) == 0);
	free(back);
	free(line);
}

static void
check_result(struct record_check *rc)
{
	size_t i;

	FUZZ_ASSERT(memchr(rc->detail, '\0', sizeof(rc->detail)) != NULL);
	FUZZ_ASSERT(rc->detail[0] != '\0');
	for (i = 0; i < rc->found.n; i++)
		FUZZ_ASSERT(rc->found.v[i] != NULL);
	if (rc->fix != NULL && strstr(rc->fix, "(the value") == NULL)
		free(decode_zone_line(rc->fix, rc->name));
	records_check_free(rc);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum dns_status sts[] = { DNS_FOUND, DNS_NONE, DNS_FAIL,
		DNS_FOUND };
	static const char ed_pub[] =
	    "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
	static const char rsa_pub[] = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCg"
	    "KCAQEAwzGlxu3ryZ+lTbFOnMUNVIhdazQ1Bl3IaoRgV9eJMTtF5iVOeyLWwIDAQAB";
	struct record_check rc;
	struct dns_txt txt;
	records_lookup lookup;
	enum dns_status st;
	const char *pub, *keytype;
	char *advice, *token, **spf;
	size_t i, start, nspf = 0;
	unsigned flags;

	if (size == 0 || size > 16 * 1024)
		return 0;
	flags = data[0];
	data++;
	size--;
	txt.v = calloc(FUZZ_MAXREC, sizeof(*txt.v));
	FUZZ_ASSERT(txt.v != NULL);
	txt.n = 0;
	for (start = 0, i = 0; i <= size && txt.n < FUZZ_MAXREC; i++)
		if (i == size || data[i] == '\n') {
			if (i == size && i == start && txt.n > 0)
				break;
			txt.v[txt.n++] = fuzz_strndup(data + start, i - start);
			start = i + 1;
		}
	st = sts[flags & 3];
	pub = flags & 4 ? (flags & 8 ? rsa_pub : ed_pub) : NULL;
	keytype = flags & 8 ? "rsa" : "ed25519";
	lookup = flags & 16 ? fake_lookup : NULL;
	answer = &txt;
	lookups = 0;

	records_name(&rc, "token", "example.com", NULL);
	records_check_token(&rc, "example.com", "user@example.com", st, &txt,
	    "timed out");
	check_result(&rc);

	records_name(&rc, "spf", "example.com", NULL);
	records_check_spf(&rc, "example.com", st, &txt, "timed out", lookup,
	    NULL);
	check_result(&rc);

	records_name(&rc, "dkim", "example.com", pub != NULL ? "sel" :
	    RECORDS_DKIM_SELECTOR);
	records_check_dkim(&rc, pub, pub != NULL ? keytype : NULL, st, &txt,
	    "timed out");
	check_result(&rc);

	records_name(&rc, "dmarc", "example.com", NULL);
	records_check_dmarc(&rc, st, &txt, "timed out");
	check_result(&rc);

	/* dns-records: the SPF records among them, merged (check.c). */
	spf = calloc(txt.n, sizeof(*spf));
	FUZZ_ASSERT(spf != NULL);
	for (i = 0; i < txt.n; i++) {
		if (records_is_spf(txt.v[i]))
			spf[nspf++] = txt.v[i];
		check_zone_line("example.com", txt.v[i]);
	}
	advice = records_spf_advice(spf, nspf);
	FUZZ_ASSERT(records_is_spf(advice));
	check_zone_line("example.com", advice);
	free(advice);
	free(spf);
	token = records_token(txt.v[0]);
	FUZZ_ASSERT(strncmp(token, "elastx-mrs=", 11) == 0 &&
	    strlen(token) == 11 + 64);
	free(token);

	for (i = 0; i < txt.n; i++)
		free(txt.v[i]);
	free(txt.v);
	return 0;
}
