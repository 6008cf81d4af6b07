/*
 * message.c -- reading a message (stdin or SMTP DATA) into spool form.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "message.h"
#include "util.h"

struct message_header {
	char	*text;		/* "Name: value", folds as CRLF, no final CRLF */
	size_t	 len;
	int	 deleted;
};

/* Singletons libesmtp would de-duplicate on the wire (keeping the first). */
static const char *const message_singletons[] = {
	"Date", "Message-ID", "Sender", "Reply-To",
	"Disposition-Notification-To",
};
/* Fields libesmtp always deletes; Bcc is ours to remove anyway. */
static const char *const message_deleted[] = {
	"Bcc", "Return-Path", "Original-Recipient", "Resent-Reply-To",
};

void
message_init(struct message *m, enum message_end end)
{
	memset(m, 0, sizeof(*m));
	m->end = end;
}

void
message_free(struct message *m)
{
	size_t i;

	for (i = 0; i < m->nfields; i++)
		free(m->fields[i].text);
	free(m->fields);
	free(m->pending);
	memset(m, 0, sizeof(*m));
}

/* Length of a field name ending at ':' (obsolete WSP allowed), or 0. */
static size_t
message_field_name_len(const char *s, size_t n)
{
	size_t i = 0, name;

	while (i < n && s[i] > 32 && s[i] < 127 && s[i] != ':')
		i++;
	name = i;
	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	if (name == 0 || i >= n || s[i] != ':')
		return 0;
	return name;
}

static int
message_field_is(const struct message_header *h, const char *name)
{
	size_t n = message_field_name_len(h->text, h->len);

	return n == strlen(name) && util_strncaseeq(h->text, name, n);
}

/* The value after the colon. */
static const char *
message_field_value(const struct message_header *h, size_t *len)
{
	const char *c = memchr(h->text, ':', h->len);

	c = c != NULL ? c + 1 : h->text + h->len;
	*len = h->len - (size_t)(c - h->text);
	return c;
}

/*
 * The next piece of input with the end-of-input rules applied.  Returns
 * 1 (piece), 0 (end of message), or -(message_status).
 */
int
message_next(struct message *m, struct linereader *lr, int line_start,
    const char **p, size_t *n, int *complete)
{
	int r;

	if (m->input_done)
		return 0;
	r = linereader_next(lr, p, n, complete);
	if (r == -1)
		return -MESSAGE_EREAD;
	if (r == 0) {
		if (m->end == MESSAGE_END_SMTP)
			return -MESSAGE_EEOF;
		return 0;
	}
	if (line_start && m->end != MESSAGE_END_EOF && *complete &&
	    (*n == 2 || (*n == 3 && (*p)[1] == '\r')) && (*p)[0] == '.') {
		m->input_done = 1;
		return 0;
	}
	if (line_start && m->end == MESSAGE_END_SMTP && (*p)[0] == '.') {
		/* RFC 5321 4.5.2: remove the stuffed dot. */
		(*p)++;
		(*n)--;
	}
	return 1;
}

/* Strips the line end of a complete piece. */
static size_t
message_content_len(const char *p, size_t n, int complete)
{
	if (complete) {
		n--;	/* LF */
		if (n > 0 && p[n - 1] == '\r')
			n--;
	}
	return n;
}

/* Appends raw line content to a header field; CR becomes a space. */
static int
message_append_field(struct message *m, struct buf *b, const char *p,
    size_t n, char *err, size_t errlen)
{
	size_t i;

	if (m->header_bytes + n > MESSAGE_HEADER_MAX) {
		(void)util_snprintf(err, errlen,
		    "header section larger than %d octets",
		    MESSAGE_HEADER_MAX);
		return -1;
	}
	m->header_bytes += n;
	for (i = 0; i < n; i++) {
		char c = p[i];

		if (c == '\0') {
			(void)util_snprintf(err, errlen,
			    "message contains a NUL byte");
			return -1;
		}
		if ((unsigned char)c >= 0x80)
			m->eightbit = 1;
		if (c == '\r')
			c = ' ';
		buf_append(b, &c, 1);
	}
	return 0;
}

static void
message_add_field(struct message *m, struct buf *b)
{
	size_t name = message_field_name_len(b->data, b->len), colon = name;

	/* "Date :" (obsolete syntax) becomes "Date:": libESMTP knows only
	 * the latter, and would add a Date of its own. */
	while (colon < b->len && b->data[colon] != ':')
		colon++;
	if (name > 0 && colon > name) {
		memmove(b->data + name, b->data + colon, b->len - colon + 1);
		b->len -= colon - name;
	}
	m->fields = xreallocarray(m->fields, m->nfields + 1,
	    sizeof(*m->fields));
	m->fields[m->nfields].len = b->len;
	m->fields[m->nfields].deleted = 0;
	m->fields[m->nfields].text = buf_take(b);
	m->nfields++;
}

int
message_read_header(struct message *m, struct linereader *lr, char *err,
    size_t errlen)
{
	struct buf field;
	const char *p;
	size_t n, clen;
	int complete, r, first = 1, in_field = 0, line_start = 1;
	int status = MESSAGE_OK;

	buf_init(&field);
	for (;;) {
		r = message_next(m, lr, line_start, &p, &n, &complete);
		if (r < 0) {
			status = -r;
			if (status == MESSAGE_EREAD)
				(void)util_snprintf(err, errlen,
				    "reading the message: %s", strerror(errno));
			else
				(void)util_snprintf(err, errlen,
				    "input ended before the final \".\"");
			goto done;
		}
		if (r == 0)
			break;
		clen = message_content_len(p, n, complete);
		if (!line_start) {
			/* More of a long header line. */
			if (message_append_field(m, &field, p, clen, err,
			    errlen) == -1) {
				status = MESSAGE_EDATA;
				goto done;
			}
			line_start = complete;
			continue;
		}
		/* An mbox "From " separator is not a header. */
		if (first && clen >= 5 && memcmp(p, "From ", 5) == 0) {
			first = 0;
			if (!complete) {
				/* Drop the rest of that line too. */
				while ((r = message_next(m, lr, 0, &p, &n,
				    &complete)) == 1 && !complete)
					;
				if (r < 0) {
					status = -r;
					(void)util_snprintf(err, errlen,
					    "reading the message failed");
					goto done;
				}
			}
			continue;
		}
		first = 0;
		if (in_field && clen > 0 && (p[0] == ' ' || p[0] == '\t')) {
			buf_append(&field, "\r\n", 2);
		} else {
			if (in_field) {
				message_add_field(m, &field);
				in_field = 0;
			}
			if (clen == 0)
				break;	/* the empty line ends the header */
			if (message_field_name_len(p, clen) == 0) {
				/* Not a header: the body starts here. */
				m->pending = xstrndup(p, n);
				m->npending = n;
				m->pending_complete = complete;
				break;
			}
			in_field = 1;
		}
		if (message_append_field(m, &field, p, clen, err, errlen) ==
		    -1) {
			status = MESSAGE_EDATA;
			goto done;
		}
		line_start = complete;
	}
	if (in_field)
		message_add_field(m, &field);
done:
	buf_free(&field);
	return status;
}

const char *
message_header_value(const struct message *m, const char *name, size_t *len)
{
	size_t i;

	for (i = m->nfields; i-- > 0;)
		if (!m->fields[i].deleted && message_field_is(&m->fields[i],
		    name))
			return message_field_value(&m->fields[i], len);
	return NULL;
}

void
message_set_header(struct message *m, const char *name, const char *value)
{
	struct buf b;
	size_t i;

	for (i = 0; i < m->nfields; i++)
		if (message_field_is(&m->fields[i], name))
			m->fields[i].deleted = 1;
	buf_init(&b);
	buf_printf(&b, "%s: %s", name, value);
	message_add_field(m, &b);
	buf_free(&b);
}

int
message_has_header(const struct message *m, const char *name)
{
	size_t i;

	for (i = 0; i < m->nfields; i++)
		if (!m->fields[i].deleted && message_field_is(&m->fields[i],
		    name))
			return 1;
	return 0;
}

int
message_header_recipients(const struct message *m, struct addr_list *out,
    char *err, size_t errlen)
{
	static const char *const names[] = { "To", "Cc", "Bcc" };
	char why[256];
	size_t i, j, vlen;

	for (i = 0; i < m->nfields; i++) {
		for (j = 0; j < UTIL_ARRAYLEN(names); j++) {
			const char *v;

			if (!message_field_is(&m->fields[i], names[j]))
				continue;
			v = message_field_value(&m->fields[i], &vlen);
			if (addr_list_parse(v, vlen, out, why, sizeof(why))
			    == -1) {
				(void)util_snprintf(err, errlen,
				    "%s: header: %s", names[j], why);
				return -1;
			}
		}
	}
	return 0;
}

int
message_format_date(long long t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (localtime_r(&tt, &tm) == NULL ||
	    strftime(buf, len, "%a, %d %b %Y %H:%M:%S %z", &tm) == 0)
		return -1;
	return 0;
}

/* Deletes, merges and de-duplicates fields; see the file comment. */
static void
message_fix_fields(struct message *m)
{
	size_t i, j, k, vlen;

	for (i = 0; i < m->nfields; i++) {
		struct message_header *h = &m->fields[i];

		for (k = 0; k < UTIL_ARRAYLEN(message_deleted); k++)
			if (message_field_is(h, message_deleted[k]))
				h->deleted = 1;
	}
	/* A second From: wins (bsd-mailx -a "From: ..." after its own). */
	for (i = m->nfields; i-- > 0;) {
		if (m->fields[i].deleted || !message_field_is(&m->fields[i],
		    "From"))
			continue;
		for (j = 0; j < i; j++)
			if (message_field_is(&m->fields[j], "From"))
				m->fields[j].deleted = 1;
		break;
	}
	for (k = 0; k < UTIL_ARRAYLEN(message_singletons); k++) {
		int seen = 0;

		for (i = 0; i < m->nfields; i++) {
			if (m->fields[i].deleted ||
			    !message_field_is(&m->fields[i],
			    message_singletons[k]))
				continue;
			if (seen)
				m->fields[i].deleted = 1;
			seen = 1;
		}
	}
	/* Later To: and Cc: fields are merged into the first one. */
	for (k = 0; k < 2; k++) {
		const char *name = k == 0 ? "To" : "Cc";
		struct message_header *first = NULL;

		for (i = 0; i < m->nfields; i++) {
			struct message_header *h = &m->fields[i];
			const char *v;
			struct buf b;

			if (h->deleted || !message_field_is(h, name))
				continue;
			if (first == NULL) {
				first = h;
				continue;
			}
			v = message_field_value(h, &vlen);
			while (vlen > 0 && (*v == ' ' || *v == '\t')) {
				v++;
				vlen--;
			}
			if (vlen > 0) {
				buf_init(&b);
				buf_append(&b, first->text, first->len);
				buf_append(&b, ",\r\n ", 4);
				buf_append(&b, v, vlen);
				free(first->text);
				first->len = b.len;
				first->text = buf_take(&b);
			}
			h->deleted = 1;
		}
	}
}

struct message_out {
	message_sink	 sink;
	void		*arg;
	size_t		 col;		/* octets on the current line */
	size_t		 total;
	int		 failed;
};

static void
message_out_raw(struct message_out *o, const char *p, size_t n)
{
	if (o->failed || n == 0)
		return;
	if (o->sink(o->arg, p, n) == -1)
		o->failed = 1;
	o->total += n;
}

/*
 * Writes line content: stray CR becomes a space, lines are broken at
 * 998 octets with CRLF SP.  Returns -1 on a NUL byte.
 */
static int
message_out_content(struct message *m, struct message_out *o, const char *p,
    size_t n)
{
	size_t i, run = 0;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c == '\0')
			return -1;
		if (c >= 0x80)
			m->eightbit = 1;
		if (o->col == MESSAGE_LINE_MAX) {
			message_out_raw(o, p + i - run, run);
			run = 0;
			message_out_raw(o, "\r\n ", 3);
			o->col = 1;
		}
		if (c == '\r') {
			message_out_raw(o, p + i - run, run);
			run = 0;
			message_out_raw(o, " ", 1);
			o->col++;
			continue;
		}
		run++;
		o->col++;
	}
	message_out_raw(o, p + n - run, run);
	return 0;
}

static void
message_out_eol(struct message_out *o)
{
	message_out_raw(o, "\r\n", 2);
	o->col = 0;
}

/* Writes a stored field, whose folds are CRLF already. */
static void
message_out_field(struct message *m, struct message_out *o, const char *t,
    size_t len)
{
	const char *p = t, *e = t + len, *crlf;

	while (p < e) {
		crlf = NULL;
		for (const char *q = p; q + 1 < e; q++)
			if (q[0] == '\r' && q[1] == '\n') {
				crlf = q;
				break;
			}
		if (crlf == NULL)
			crlf = e;
		/* A line too long for SMTP is folded before a blank it has,
		 * which unfolding gives back unchanged.  Without one, a fold
		 * adds a space; never right after a backslash, where it would
		 * end a quoted string early. */
		while (crlf - p > (ptrdiff_t)(MESSAGE_LINE_MAX - o->col)) {
			size_t room = MESSAGE_LINE_MAX - o->col;
			const char *cut = p + room;

			while (cut > p && *cut != ' ' && *cut != '\t')
				cut--;
			if (cut > p) {
				(void)message_out_content(m, o, p,
				    (size_t)(cut - p));
				message_out_eol(o);
			} else {
				cut = p + room;
				if (room > 1 && cut[-1] == '\\')
					cut--;
				(void)message_out_content(m, o, p,
				    (size_t)(cut - p));
				message_out_raw(o, "\r\n ", 3);
				o->col = 1;
			}
			p = cut;
		}
		(void)message_out_content(m, o, p, (size_t)(crlf - p));
		message_out_eol(o);
		p = crlf == e ? e : crlf + 2;
	}
}

int
message_write(struct message *m, struct linereader *lr,
    const struct message_defaults *def, message_sink sink, void *arg,
    char *err, size_t errlen)
{
	struct message_out o = { sink, arg, 0, 0, 0 };
	const char *p;
	size_t i, n, clen;
	int complete, r, line_start = 1;
	struct buf b;
	char date[64];

	message_fix_fields(m);
	for (i = 0; i < m->nfields; i++)
		if (!m->fields[i].deleted)
			message_out_field(m, &o, m->fields[i].text,
			    m->fields[i].len);
	buf_init(&b);
	if (!message_has_header(m, "Date")) {
		if (message_format_date(def->date, date, sizeof(date)) == 0) {
			buf_printf(&b, "Date: %s", date);
			message_out_field(m, &o, b.data, b.len);
		}
	}
	if (!message_has_header(m, "Message-ID")) {
		buf_reset(&b);
		buf_printf(&b, "Message-ID: %s", def->msgid);
		message_out_field(m, &o, b.data, b.len);
	}
	if (!message_has_header(m, "From")) {
		buf_reset(&b);
		buf_puts(&b, "From: ");
		if (def->fullname != NULL && def->fullname[0] != '\0') {
			addr_quote_phrase(&b, def->fullname);
			buf_printf(&b, " <%s>", def->from_addr);
		} else
			buf_puts(&b, def->from_addr);
		message_out_field(m, &o, b.data, b.len);
	}
	buf_free(&b);
	message_out_eol(&o);

	/* The body, starting with a line the header reader kept back. */
	if (m->pending != NULL) {
		clen = message_content_len(m->pending, m->npending,
		    m->pending_complete);
		if (message_out_content(m, &o, m->pending, clen) == -1)
			goto nul;
		if (m->pending_complete)
			message_out_eol(&o);
		line_start = m->pending_complete;
	}
	for (;;) {
		r = message_next(m, lr, line_start, &p, &n, &complete);
		if (r < 0) {
			if (-r == MESSAGE_EREAD)
				(void)util_snprintf(err, errlen,
				    "reading the message: %s", strerror(errno));
			else
				(void)util_snprintf(err, errlen,
				    "input ended before the final \".\"");
			return -r;
		}
		if (r == 0)
			break;
		clen = message_content_len(p, n, complete);
		if (message_out_content(m, &o, p, clen) == -1)
			goto nul;
		if (complete)
			message_out_eol(&o);
		line_start = complete;
	}
	if (!line_start)
		message_out_eol(&o);	/* the last line had no line end */
	if (o.failed) {
		(void)util_snprintf(err, errlen, "writing the message: %s",
		    strerror(errno));
		return MESSAGE_EWRITE;
	}
	m->size = o.total;
	return MESSAGE_OK;
nul:
	(void)util_snprintf(err, errlen, "message contains a NUL byte");
	return MESSAGE_EDATA;
}

void
message_drain(struct message *m, struct linereader *lr)
{
	const char *p;
	size_t n;
	int complete, line_start = 1;

	while (message_next(m, lr, line_start, &p, &n, &complete) == 1)
		line_start = complete;
}
