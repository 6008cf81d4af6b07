/*
 * address.c -- RFC 5322 address lists and RFC 5321 envelope addresses.
 *
 * The list parser is a single pass over the characters with a little
 * state: inside a comment, a quoted string, a domain literal, angle
 * brackets, or a group.  It yields addr-specs only; display names and
 * comments are dropped, and an obsolete source route "<@a,@b:x@y>" is
 * reduced to "x@y".
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "buf.h"
#include "util.h"

void
addr_list_init(struct addr_list *l)
{
	l->v = NULL;
	l->n = 0;
	l->slots = NULL;
	l->nslots = 0;
	l->indexed = 0;
}

void
addr_list_free(struct addr_list *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	free(l->slots);
	addr_list_init(l);
}

/* FNV-1a: the index's hash. */
static size_t
addr_hash(const char *a)
{
	size_t h = (size_t)14695981039346656037ULL;

	for (; *a != '\0'; a++)
		h = (h ^ (unsigned char)*a) * (size_t)1099511628211ULL;
	return h;
}

static size_t addr_slot(const struct addr_list *, const char *);

/* Takes v[i] out of the index (linear probing: later entries of its
 * run move back into the gap, Knuth's algorithm R). */
static void
addr_unindex(struct addr_list *l, size_t i)
{
	size_t k = addr_slot(l, l->v[i]), j, home;

	if (l->slots[k] != i + 1)
		return;
	for (j = k;;) {
		l->slots[k] = 0;
		for (;;) {
			j = (j + 1) & (l->nslots - 1);
			if (l->slots[j] == 0)
				return;
			home = addr_hash(l->v[l->slots[j] - 1]) & (l->nslots - 1);
			/* Stays unless its home is cyclically in (k, j]. */
			if (k <= j ? (home <= k || home > j) :
			    (home <= k && home > j))
				break;
		}
		l->slots[k] = l->slots[j];
		k = j;
	}
}

void
addr_list_truncate(struct addr_list *l, size_t n)
{
	while (l->n > n) {
		l->n--;
		if (l->n < l->indexed && l->nslots > 0)
			addr_unindex(l, l->n);
		free(l->v[l->n]);
	}
	if (l->indexed > l->n)
		l->indexed = l->n;
}

/* The slot holding a, or the empty slot where it would go. */
static size_t
addr_slot(const struct addr_list *l, const char *a)
{
	size_t i = addr_hash(a) & (l->nslots - 1);

	while (l->slots[i] != 0 && strcmp(l->v[l->slots[i] - 1], a) != 0)
		i = (i + 1) & (l->nslots - 1);
	return i;
}

/* Indexes what was appended since, growing the table at half full. */
static void
addr_index(struct addr_list *l)
{
	size_t i;

	if (2 * (l->n + 1) > l->nslots) {
		size_t want = 64;

		while (want < 2 * (l->n + 1))
			want *= 2;
		free(l->slots);
		l->slots = xcalloc(want, sizeof(*l->slots));
		l->nslots = want;
		l->indexed = 0;
	}
	for (i = l->indexed; i < l->n; i++) {
		size_t k = addr_slot(l, l->v[i]);

		if (l->slots[k] == 0)
			l->slots[k] = i + 1;
	}
	l->indexed = l->n;
}

void
addr_list_add(struct addr_list *l, const char *a)
{
	size_t k;

	addr_index(l);
	k = addr_slot(l, a);
	if (l->slots[k] != 0)
		return;
	l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
	l->v[l->n++] = xstrdup(a);
	l->slots[k] = l->n;
	l->indexed = l->n;
}

struct addr_parser {
	struct buf	 outside;	/* addr-spec or phrase text */
	struct buf	 inside;	/* text between < and > */
	int		 in_angle;
	int		 had_angle;
	int		 words;		/* separate words outside <> */
	int		 gap;		/* whitespace seen since last char */
	int		 in_group;
	int		 at;		/* an unquoted '@' outside <> */
};

static void
addr_parser_reset(struct addr_parser *p)
{
	buf_reset(&p->outside);
	buf_reset(&p->inside);
	p->in_angle = p->had_angle = p->words = p->gap = p->at = 0;
}

/* Appends text to the current word, tracking phrase words outside <>. */
static void
addr_parser_put(struct addr_parser *p, const char *s, size_t n)
{
	struct buf *b = p->in_angle ? &p->inside : &p->outside;

	if (!p->in_angle) {
		char last = p->outside.len ? p->outside.data[p->outside.len - 1]
		    : '\0';

		if (p->outside.len == 0)
			p->words = 1;
		else if (p->gap && last != '@' && last != '.' &&
		    s[0] != '@' && s[0] != '.')
			p->words++;
	}
	p->gap = 0;
	buf_append(b, s, n);
}

static int
addr_parser_finish(struct addr_parser *p, struct addr_list *out, char *err,
    size_t errlen)
{
	const char *a;
	char shown[80];

	if (p->had_angle) {
		a = p->inside.data != NULL ? p->inside.data : "";
		/* Obsolete route: "@a,@b:user@host". */
		if (a[0] == '@' && strchr(a, ':') != NULL)
			a = strchr(a, ':') + 1;
	} else {
		a = p->outside.data != NULL ? p->outside.data : "";
		if (p->words > 1) {
			util_sanitize(shown, sizeof(shown), a, strlen(a));
			(void)util_snprintf(err, errlen,
			    "no address in \"%s\"", shown);
			return -1;
		}
	}
	if (a[0] != '\0') {
		if (addr_check_safe(a, err, errlen) == -1)
			return -1;
		if (!addr_is_mailbox(a) && !addr_is_local_name(a)) {
			util_sanitize(shown, sizeof(shown), a, strlen(a));
			(void)util_snprintf(err, errlen,
			    "invalid address \"%s\"", shown);
			return -1;
		}
		if (out->n >= ADDR_MAX_COUNT) {
			(void)util_snprintf(err, errlen,
			    "more than %d recipients", ADDR_MAX_COUNT);
			return -1;
		}
		addr_list_add(out, a);
	}
	addr_parser_reset(p);
	return 0;
}

/*
 * Returns the index just past a comment starting at s[i] == '(', which
 * may nest and hold quoted pairs, or (size_t)-1 if it is unterminated.
 */
static size_t
addr_skip_comment(const char *s, size_t len, size_t i)
{
	int depth = 0;

	for (; i < len; i++) {
		if (s[i] == '\\' && i + 1 < len)
			i++;
		else if (s[i] == '(')
			depth++;
		else if (s[i] == ')' && --depth == 0)
			return i + 1;
	}
	return (size_t)-1;
}

/* Like addr_skip_comment for "quoted" strings and [literals]. */
static size_t
addr_skip_until(const char *s, size_t len, size_t i, char close)
{
	for (i++; i < len; i++) {
		if (s[i] == '\\' && i + 1 < len)
			i++;
		else if (s[i] == close)
			return i + 1;
	}
	return (size_t)-1;
}

int
addr_list_parse(const char *s, size_t len, struct addr_list *out, char *err,
    size_t errlen)
{
	struct addr_parser p;
	size_t i = 0, j;
	int rc = -1;

	memset(&p, 0, sizeof(p));
	buf_init(&p.outside);
	buf_init(&p.inside);
	while (i < len) {
		char c = s[i];

		if (c == '(') {
			if ((j = addr_skip_comment(s, len, i)) == (size_t)-1) {
				(void)util_snprintf(err, errlen,
				    "unterminated comment");
				goto done;
			}
			p.gap = 1;
			i = j;
			continue;
		}
		if (c == '"' || c == '[') {
			if ((j = addr_skip_until(s, len, i,
			    c == '"' ? '"' : ']')) == (size_t)-1) {
				(void)util_snprintf(err, errlen,
				    "unterminated %s", c == '"' ?
				    "quoted string" : "domain literal");
				goto done;
			}
			addr_parser_put(&p, s + i, j - i);
			i = j;
			continue;
		}
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			p.gap = 1;
			i++;
			continue;
		}
		if (p.in_angle) {
			if (c == '>') {
				p.in_angle = 0;
				p.had_angle = 1;
			} else if (c == '<') {
				(void)util_snprintf(err, errlen,
				    "nested \"<\" in address");
				goto done;
			} else
				addr_parser_put(&p, &c, 1);
			i++;
			continue;
		}
		switch (c) {
		case '<':
			if (p.had_angle) {
				(void)util_snprintf(err, errlen,
				    "two <addresses> in one mailbox");
				goto done;
			}
			p.in_angle = 1;
			buf_reset(&p.inside);
			break;
		case ',':
			if (addr_parser_finish(&p, out, err, errlen) == -1)
				goto done;
			break;
		case ';':
			if (addr_parser_finish(&p, out, err, errlen) == -1)
				goto done;
			p.in_group = 0;
			break;
		case ':':
			/* "display-name:" opens a group; the name is not
			 * an address, and an address is not a name (a CR
			 * turned "a@b\rBcc: c@d" into the group "a@b"). */
			if (p.in_group || p.had_angle || p.at) {
				(void)util_snprintf(err, errlen,
				    "unexpected \":\" in address list");
				goto done;
			}
			addr_parser_reset(&p);
			p.in_group = 1;
			break;
		case '>':
			(void)util_snprintf(err, errlen,
			    "\">\" without \"<\" in address list");
			goto done;
		default:
			if (p.had_angle) {
				/* Text after <addr>: only comments belong
				 * there, but be lenient and ignore it. */
				break;
			}
			p.at |= c == '@';
			addr_parser_put(&p, &c, 1);
			break;
		}
		i++;
	}
	if (p.in_angle) {
		(void)util_snprintf(err, errlen, "unterminated \"<\"");
		goto done;
	}
	rc = addr_parser_finish(&p, out, err, errlen);
done:
	buf_free(&p.outside);
	buf_free(&p.inside);
	return rc;
}

int
addr_check_safe(const char *a, char *err, size_t errlen)
{
	const unsigned char *p;

	if (strlen(a) > ADDR_MAX_LEN) {
		(void)util_snprintf(err, errlen,
		    "address longer than %d characters", ADDR_MAX_LEN);
		return -1;
	}
	if (a[0] == '-') {
		(void)util_snprintf(err, errlen,
		    "address may not begin with \"-\"");
		return -1;
	}
	for (p = (const unsigned char *)a; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f) {
			(void)util_snprintf(err, errlen,
			    "control character (0x%02x) in address", *p);
			return -1;
		}
	}
	return 0;
}

static int
addr_is_atext(unsigned char c)
{
	/* RFC 5322 atext, plus 8-bit for RFC 6531 (SMTPUTF8). */
	return isalnum(c) || c >= 0x80 || strchr("!#$%&'*+-/=?^_`{|}~", c)
	    != NULL;
}

/* dot-atom: atext runs separated by single dots. */
static int
addr_is_dot_atom(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return 0;
	for (i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (s[i + 1] == '.')
				return 0;
		} else if (!addr_is_atext((unsigned char)s[i]))
			return 0;
	}
	return 1;
}

static int
addr_is_local_part(const char *s, size_t n)
{
	size_t i;

	if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
		/* A quoted-string: inside, a quote only as \" (RFC 5321). */
		for (i = 1; i < n - 1; i++) {
			if (s[i] == '\\' && i + 1 < n - 1)
				i++;
			else if (s[i] == '"' || s[i] == '\\')
				return 0;
		}
		return 1;
	}
	return addr_is_dot_atom(s, n);
}

static int
addr_is_domain(const char *s)
{
	size_t i, n = strlen(s);

	if (n >= 2 && s[0] == '[' && s[n - 1] == ']')
		return 1;
	if (n == 0 || s[0] == '.' || s[n - 1] == '.' || s[0] == '-')
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (s[i + 1] == '.')
				return 0;
		} else if (!isalnum(c) && c != '-' && c < 0x80)
			return 0;
	}
	return 1;
}

int
addr_is_mailbox(const char *a)
{
	const char *at = strrchr(a, '@');

	if (at == NULL || at == a)
		return 0;
	return addr_is_local_part(a, (size_t)(at - a)) &&
	    addr_is_domain(at + 1);
}

int
addr_is_local_name(const char *a)
{
	return strchr(a, '@') == NULL && addr_is_local_part(a, strlen(a));
}

void
addr_display_name(const char *s, size_t len, char *out, size_t outlen)
{
	size_t i, j = 0, lt = len, start, end;
	int quoted = 0;

	if (outlen == 0)
		return;
	out[0] = '\0';
	/* The '<' outside quotes and comments, if any. */
	for (i = 0; i < len; i++) {
		if (s[i] == '\\' && i + 1 < len)
			i++;
		else if (s[i] == '"')
			quoted = !quoted;
		else if (s[i] == '(' && !quoted) {
			if ((i = addr_skip_comment(s, len, i)) == (size_t)-1)
				return;
			i--;
		} else if (s[i] == '<' && !quoted) {
			lt = i;
			break;
		}
	}
	if (lt < len) {
		start = 0;
		end = lt;
	} else {
		/* "a@b (Name)": the comment. */
		const char *c = memchr(s, '(', len);
		size_t k;

		if (c == NULL)
			return;
		start = (size_t)(c - s) + 1;
		k = addr_skip_comment(s, len, start - 1);
		if (k == (size_t)-1)
			return;
		end = k - 1;
	}
	while (start < end && (s[start] == ' ' || s[start] == '\t' ||
	    s[start] == '\r' || s[start] == '\n'))
		start++;
	while (end > start && (s[end - 1] == ' ' || s[end - 1] == '\t' ||
	    s[end - 1] == '\r' || s[end - 1] == '\n'))
		end--;
	for (i = start; i < end && j + 1 < outlen; i++) {
		if (s[i] == '"')
			continue;
		if (s[i] == '\\' && i + 1 < end)
			i++;
		out[j++] = (s[i] == '\r' || s[i] == '\n' || s[i] == '\t') ?
		    ' ' : s[i];
	}
	out[j] = '\0';
}

void
addr_quote_phrase(struct buf *b, const char *s)
{
	buf_append(b, "\"", 1);
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			buf_append(b, "\\", 1);
		if ((unsigned char)*s >= 0x20 && *s != 0x7f)
			buf_append(b, s, 1);
	}
	buf_append(b, "\"", 1);
}
