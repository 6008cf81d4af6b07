/*
 * t_dkim.c -- DKIM canonicalisation (RFC 6376 3.4, with its 3.4.5
 * example), the streamed body hash cut at every possible point, and the
 * DNS record checks of records.c.  Signatures themselves are verified
 * end to end by an independent verifier (tests/e2e/test_dkim.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "dkim.h"
#include "records.h"
#include "util.h"

static void
canon_header(const char *in, const char *want)
{
	struct buf b;

	buf_init(&b);
	dkim_canon_header(&b, in, strlen(in), 0);
	assert_non_null(b.data);
	assert_string_equal(b.data, want);
	buf_free(&b);
}

static void
test_header_rfc_example(void **state)
{
	(void)state;
	canon_header("A: X", "a:X\r\n");
	canon_header("B : Y\t\r\n\tZ  ", "b:Y Z\r\n");
}

static void
test_header_edges(void **state)
{
	(void)state;
	canon_header("Subject:", "subject:\r\n");
	canon_header("Subject:   \t ", "subject:\r\n");
	/* A colon inside the value is not the separator. */
	canon_header("Subject: a:  b", "subject:a: b\r\n");
	canon_header("SUBJECT:\r\n folded\r\n\tagain", "subject:folded again\r\n");
	canon_header("X-Weird\t :v", "x-weird:v\r\n");
}

/* The body hash of in, fed in two pieces cut at every point. */
static void
body_hash(const char *in, const char *want_bh)
{
	char bh[DKIM_BH_LEN + 1];
	size_t cut, len = strlen(in);

	for (cut = 0; cut <= len; cut++) {
		struct dkim_body b;

		assert_int_equal(dkim_body_init(&b), 0);
		assert_int_equal(dkim_body_update(&b, in, cut), 0);
		assert_int_equal(dkim_body_update(&b, in + cut, len - cut), 0);
		assert_int_equal(dkim_body_final(&b, bh), 0);
		assert_string_equal(bh, want_bh);
	}
}

/* base64(SHA-256(s)), computed the plain way. */
static void
sha256_b64(const char *s, char out[DKIM_BH_LEN + 1])
{
	struct dkim_body b;

	/* A canonical body is its own canonical form. */
	assert_int_equal(dkim_body_init(&b), 0);
	assert_int_equal(dkim_body_update(&b, s, strlen(s)), 0);
	assert_int_equal(dkim_body_final(&b, out), 0);
}

static void
test_body_rfc_example(void **state)
{
	static const char in[] = " C \r\nD \t E\r\n\r\n\r\n";
	char want[DKIM_BH_LEN + 1];

	(void)state;
	sha256_b64(" C\r\nD E\r\n", want);
	body_hash(in, want);
}

static void
test_body_edges(void **state)
{
	/* SHA-256 of the empty string: an empty body, or only empty lines. */
	static const char empty[] = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
	char want[DKIM_BH_LEN + 1];

	(void)state;
	body_hash("", empty);
	body_hash("\r\n\r\n\r\n", empty);
	body_hash(" \t \r\n\r\n", empty);
	/* A last line without CRLF gets one. */
	sha256_b64("x\r\n", want);
	body_hash("x", want);
	body_hash("x  ", want);
	body_hash("x\r\n\r\n", want);
	/* Empty lines inside the body stay. */
	sha256_b64("a\r\n\r\n\r\nb\r\n", want);
	body_hash("a\r\n\r\n  \r\nb", want);
	/* A CR that ends no line is kept as an octet. */
	sha256_b64("a\rb\r\n", want);
	body_hash("a\rb\r\n", want);
}

static void
test_from_domain(void **state)
{
	static const char hdr[] = "To: x@y.z\r\nFrom: \"Al, B\" <al@Ex.COM> "
	    "(c)\r\nSubject: s\r\n";
	char *d;

	(void)state;
	d = dkim_from_domain(hdr, sizeof(hdr) - 1);
	assert_non_null(d);
	assert_string_equal(d, "ex.com");
	free(d);
	assert_null(dkim_from_domain("To: a@b.c\r\n", 11));
}

static void
test_token(void **state)
{
	char *t;

	(void)state;
	/* The provider's documented example. */
	t = records_token("user@domain.com");
	assert_string_equal(t, "elastx-mrs=f7ee5ec7312165148b69fcca1d29075b"
	    "14b8aef0b5048a332b18b88d09069fb7");
	free(t);
}

static void
test_zone_line(void **state)
{
	char val[600], *line, *p;
	size_t i;

	(void)state;
	line = records_zone_line("a.example", "v=spf1 \"x\" -all");
	assert_string_equal(line,
	    "a.example. 3600 IN TXT \"v=spf1 \\\"x\\\" -all\"");
	free(line);
	for (i = 0; i < 600; i++)
		val[i] = 'A';
	val[599] = '\0';
	line = records_zone_line("k", val);
	/* 599 octets: strings of 255, 255 and 89. */
	p = strstr(line, "\" \"");
	assert_non_null(p);
	assert_int_equal(p - strchr(line, '"') - 1, 255);
	assert_non_null(strstr(p + 3, "\" \""));
	free(line);
}

static struct record_check
spf(const char *const *v, size_t n)
{
	struct record_check rc;
	struct dns_txt t = { (char **)(uintptr_t)v, n };

	records_name(&rc, "spf", "example.com", NULL);
	records_check_spf(&rc, "example.com", n > 0 ? DNS_FOUND : DNS_NONE, &t,
	    NULL, NULL, NULL);
	return rc;
}

static void
test_spf(void **state)
{
	static const char *const good[] = { "google-site-verification=x",
		"v=spf1 mx include:elastx.email ~all" };
	static const char *const none[] = { "v=spf10 nope" };
	static const char *const two[] = { "v=spf1 mx -all",
		"v=spf1 include:elastx.email -all" };
	static const char *const noinc[] = { "v=spf1 mx -all" };
	static const char *const plus[] = { "v=spf1 include:elastx.email +all" };
	static const char *const bare[] = { "v=spf1 include:elastx.email all" };
	static const char *const after[] = { "v=spf1 -all include:elastx.email" };
	struct record_check rc;

	(void)state;
	rc = spf(good, 2);
	assert_true(rc.pass);
	assert_null(rc.fix);
	records_check_free(&rc);
	rc = spf(none, 1);
	assert_false(rc.pass);
	assert_string_equal(rc.fix, "example.com. 3600 IN TXT \"v=spf1 "
	    "include:elastx.email -all\"");
	records_check_free(&rc);
	rc = spf(two, 2);
	assert_false(rc.pass);
	assert_string_equal(rc.fix, "example.com. 3600 IN TXT \"v=spf1 mx "
	    "include:elastx.email -all\"");
	records_check_free(&rc);
	rc = spf(noinc, 1);
	assert_false(rc.pass);
	assert_string_equal(rc.fix, "example.com. 3600 IN TXT \"v=spf1 mx "
	    "include:elastx.email -all\"");
	records_check_free(&rc);
	rc = spf(plus, 1);
	assert_false(rc.pass);
	assert_non_null(strstr(rc.detail, "+all"));
	records_check_free(&rc);
	rc = spf(bare, 1);
	assert_false(rc.pass);
	records_check_free(&rc);
	/* Nothing after "all" is ever evaluated. */
	rc = spf(after, 1);
	assert_false(rc.pass);
	records_check_free(&rc);
}

static int
dkim_pass(const char *rec, const char *pub, const char *type)
{
	struct record_check rc;
	struct dns_txt t = { (char **)(uintptr_t)&rec, 1 };
	int pass;

	records_name(&rc, "dkim", "example.com", "sel");
	records_check_dkim(&rc, pub, type, rec != NULL ? DNS_FOUND : DNS_NONE,
	    &t, NULL);
	pass = rc.pass;
	if (!pass)
		assert_non_null(rc.fix);
	records_check_free(&rc);
	return pass;
}

/* A real RSA-2048 SubjectPublicKeyInfo and a 32-octet Ed25519 key. */
#define RSA_P "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAkgjxZSuBuvQetTUD" \
	"oYVFJhevGml/1pJkOpi+UgPtbaXJwwNGeVpxyv2iDxKBvH9uyWsoIIsHWXDL2YEGR3" \
	"Y/9WPMgEa35HYisDhmBglggxR8ExOjXn8AjKVbSiVzIH8iFt2NaYK1AGaIeqzBx3sw" \
	"QfwaGnQp3G6qTfUNDrpe4TjYA8iHS9mf4pmgKpMK3M69fHSUUguMi3jSQGbvHtdIVu" \
	"Vik2mN0v4TYyDxM/aBQTelnf2ue5VJhYVyGFsMU73LF+FR9NR1snMzVSFwFJPm5Sg7" \
	"9yKuXwr67K7tJGqJ9VOZ3igLi06JIw7CIvqByrh2MEpVc80FAeDQgqpjM7yh+wIDAQAB"
#define ED_P "GFF5lj6e+4qG8RAEqIuOLrLgbnXC5ZovyPo9G6zp5j0="

static void
test_dkim_record(void **state)
{
	(void)state;
	assert_true(dkim_pass("v=DKIM1; k=rsa; p=" RSA_P, NULL, NULL));
	assert_true(dkim_pass("p=" RSA_P, NULL, NULL));
	assert_true(dkim_pass("v=DKIM1; k=ed25519; p=GFF5lj6e+4qG8RAEqIuOLr "
	    "LgbnXC5ZovyPo9G6zp5j0=", ED_P, "ed25519"));
	assert_true(dkim_pass("v=DKIM1; p=" RSA_P, RSA_P, "rsa"));
	assert_false(dkim_pass(NULL, NULL, NULL));
	assert_false(dkim_pass("v=DKIM1; k=rsa", NULL, NULL));
	assert_false(dkim_pass("v=DKIM1; p=", NULL, NULL));
	assert_false(dkim_pass("v=DKIM1; p=QUJ", NULL, NULL));
	/* Valid base64, but no key. */
	assert_false(dkim_pass("v=DKIM1; k=rsa; p=QUJDRA==", NULL, NULL));
	assert_false(dkim_pass("v=DKIM1; k=ed25519; p=QUJDRA==", NULL, NULL));
	assert_false(dkim_pass("k=rsa; v=DKIM1; p=" RSA_P, NULL, NULL));
	assert_false(dkim_pass("v=DKIM2; p=" RSA_P, NULL, NULL));
	assert_false(dkim_pass("v=DKIM1; k=dsa; p=" RSA_P, NULL, NULL));
	assert_false(dkim_pass("v=DKIM1; k=ed25519; p=" ED_P, "AAAA" ED_P,
	    "ed25519"));
	assert_false(dkim_pass("v=DKIM1; p=" RSA_P, RSA_P, "ed25519"));
}

static int
dmarc_pass(const char *a, const char *b)
{
	const char *v[2] = { a, b };
	struct record_check rc;
	struct dns_txt t = { (char **)(uintptr_t)v, b != NULL ? 2 : 1 };
	int pass;

	records_name(&rc, "dmarc", "example.com", NULL);
	records_check_dmarc(&rc, DNS_FOUND, &t, NULL);
	pass = rc.pass;
	records_check_free(&rc);
	return pass;
}

static void
test_dmarc(void **state)
{
	(void)state;
	assert_true(dmarc_pass("v=DMARC1; p=none", NULL));
	assert_true(dmarc_pass("v=DMARC1;p=reject;pct=50;adkim=s", "other"));
	assert_false(dmarc_pass("v=DMARC1; p=maybe", NULL));
	assert_false(dmarc_pass("v=DMARC1", NULL));
	assert_false(dmarc_pass("v=DMARC1; adkim=r; p=none", NULL));
	assert_false(dmarc_pass("v=DMARC1; p=none; pct=101", NULL));
	assert_false(dmarc_pass("v=DMARC1; p=none", "v=DMARC1; p=reject"));
	assert_false(dmarc_pass("v=spf1 -all", NULL));
	/* RFC 7489's grammar allows spaces around "=". */
	assert_true(dmarc_pass("v = DMARC1 ; p = none", NULL));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_rfc_example),
		cmocka_unit_test(test_header_edges),
		cmocka_unit_test(test_body_rfc_example),
		cmocka_unit_test(test_body_edges),
		cmocka_unit_test(test_from_domain),
		cmocka_unit_test(test_token),
		cmocka_unit_test(test_zone_line),
		cmocka_unit_test(test_spf),
		cmocka_unit_test(test_dkim_record),
		cmocka_unit_test(test_dmarc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
