/*
 * buf.c -- a growable byte buffer, always NUL-terminated.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "buf.h"
#include "log.h"
#include "util.h"

void
buf_init(struct buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

void
buf_free(struct buf *b)
{
	free(b->data);
	buf_init(b);
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

static void
buf_reserve(struct buf *b, size_t more)
{
	size_t want;

	if (more > SIZE_MAX - b->len - 1)
		log_fatalx(EX_OSERR, "out of memory");
	want = b->len + more + 1;
	if (want <= b->cap)
		return;
	if (b->cap < 64)
		b->cap = 64;
	while (b->cap < want)
		b->cap = b->cap > SIZE_MAX / 2 ? want : b->cap * 2;
	b->data = xrealloc(b->data, b->cap);
}

void
buf_append(struct buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
buf_puts(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

void
buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		log_fatalx(EX_SOFTWARE, "bad format string");
	buf_reserve(b, (size_t)n);
	(void)vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
}

void
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(b, fmt, ap);
	va_end(ap);
}

char *
buf_take(struct buf *b)
{
	char *p;

	if (b->data == NULL)
		buf_append(b, "", 0);
	p = b->data;
	buf_init(b);
	return p;
}

void
buf_json_str(struct buf *b, const char *s)
{
	buf_append(b, "\"", 1);
	for (; s != NULL && *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			buf_printf(b, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			buf_printf(b, "\\u%04x", c);
		else
			buf_append(b, s, 1);
	}
	buf_append(b, "\"", 1);
}
