/*
 * fuzz_address.c -- the RFC 5322 address list parser and the checks
 * that guard envelope addresses.
 *
 * Input: an address list as it appears in To:/Cc:/Bcc:, a recipient
 * argument or an [aliases] value.  Checked beyond "no crash":
 *   - every address returned (also before an error) is safe for the
 *     envelope and is a mailbox or a bare local name, with no duplicate;
 *   - parsing a returned address again gives exactly that address
 *     (unless the input holds a NUL, which no caller passes);
 *   - a display name has no line breaks, and a quoted phrase is one
 *     well-formed quoted-string without control characters.
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include "address.h"
#include "buf.h"

/* One quoted-string: "...", inner quotes and backslashes escaped. */
static void
check_quoted(const struct buf *b)
{
	size_t i;

	FUZZ_ASSERT(b->len >= 2 && b->data[0] == '"' &&
	    b->data[b->len - 1] == '"');
	for (i = 1; i + 1 < b->len; i++) {
		unsigned char c = (unsigned char)b->data[i];

		FUZZ_ASSERT(c >= 0x20 && c != 0x7f);
		if (c == '\\') {
			FUZZ_ASSERT(i + 2 < b->len);
			i++;
			FUZZ_ASSERT(b->data[i] == '"' || b->data[i] == '\\');
		} else
			FUZZ_ASSERT(c != '"');
	}
}

static void
check_phrase(const char *s)
{
	struct buf b;

	buf_init(&b);
	addr_quote_phrase(&b, s);
	check_quoted(&b);
	buf_free(&b);
}

/*
 * Known issue 3: addr_is_local_part() takes anything between a first
 * and a last '"' for a quoted-string, so "a"x"b"@example.com and
 * """";";""@example.com pass as mailboxes (and then do not parse
 * again).  1 if the local part is like that.
 */
static int
bad_quoted_local(const char *a)
{
	const char *at = strrchr(a, '@');
	size_t n = at != NULL ? (size_t)(at - a) : strlen(a), i;

	if (n < 2 || a[0] != '"')
		return 0;
	for (i = 1; i + 1 < n; i++) {
		if (a[i] == '\\')
			i++;
		else if (a[i] == '"')
			return 1;
	}
	return i != n - 1;	/* the last quote was escaped */
}

static void
check_address(const char *a, int reparse)
{
	struct addr_list again;
	char err[256];
	size_t len = strlen(a);
	char *copy;

	FUZZ_ASSERT(addr_check_safe(a, err, sizeof(err)) == 0);
	FUZZ_ASSERT(addr_is_mailbox(a) || addr_is_local_name(a));
	FUZZ_ASSERT(len > 0 && len <= ADDR_MAX_LEN);

	check_phrase(a);
	if (!reparse || (bad_quoted_local(a) &&
	    fuzz_waive("address: lax quoted local part")))
		return;
	/* Exact-size copy without a terminator: the parser takes a length. */
	copy = malloc(len);
	FUZZ_ASSERT(copy != NULL);
	memcpy(copy, a, len);
	addr_list_init(&again);
	FUZZ_ASSERT(addr_list_parse(copy, len, &again, err, sizeof(err)) ==
	    0);
	FUZZ_ASSERT(again.n == 1 && strcmp(again.v[0], a) == 0);
	addr_list_free(&again);
	free(copy);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct addr_list l;
	char err[256], name[256], tiny[2], *s;
	size_t i, j, n;
	int rc, has_nul;

	if (size > 65536)
		return 0;
	/* Exactly size octets: the parser must not read a terminator. */
	s = malloc(size > 0 ? size : 1);
	FUZZ_ASSERT(s != NULL);
	if (size > 0)
		memcpy(s, data, size);

	/*
	 * A NUL ends an address early (the parser keeps C strings), so what
	 * follows it is lost and the rest may not parse again.  No caller
	 * passes a NUL: header values with one are refused before, and
	 * arguments and config values are C strings.
	 */
	has_nul = memchr(data, '\0', size) != NULL;
	addr_list_init(&l);
	err[0] = '\0';
	rc = addr_list_parse(s, size, &l, err, sizeof(err));
	FUZZ_ASSERT(rc == 0 || rc == -1);
	if (rc == -1)
		FUZZ_ASSERT(err[0] != '\0');
	for (i = 0; i < l.n; i++) {
		check_address(l.v[i], !has_nul);
		for (j = 0; j < i; j++)
			FUZZ_ASSERT(strcmp(l.v[i], l.v[j]) != 0);
	}
	/* Appending keeps no duplicates; truncation frees the tail. */
	n = l.n;
	if (n > 0)
		addr_list_add(&l, l.v[0]);
	FUZZ_ASSERT(l.n == n);
	addr_list_truncate(&l, n / 2);
	FUZZ_ASSERT(l.n == n / 2);
	addr_list_free(&l);

	addr_display_name(s, size, name, sizeof(name));
	FUZZ_ASSERT(memchr(name, '\0', sizeof(name)) != NULL);
	FUZZ_ASSERT(strpbrk(name, "\r\n") == NULL);
	tiny[0] = tiny[1] = 'x';
	addr_display_name(s, size, tiny, sizeof(tiny));
	FUZZ_ASSERT(memchr(tiny, '\0', sizeof(tiny)) != NULL);
	check_phrase(name);
	free(s);

	/* The checks on the input as one C string. */
	s = fuzz_strndup(data, size);
	(void)addr_check_safe(s, err, sizeof(err));
	(void)addr_is_mailbox(s);
	(void)addr_is_local_name(s);
	check_phrase(s);
	free(s);
	return 0;
}
