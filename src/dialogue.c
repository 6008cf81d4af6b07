/*
 * dialogue.c -- sendmail -bs: an SMTP server dialogue on stdin/stdout.
 *
 * Symfony Mailer, SwiftMailer, Laravel and Nextcloud speak SMTP to
 * "sendmail -bs" and judge success by the replies alone.  So every
 * reply tells the truth: 250 after DATA only once the message is
 * durably queued (and, in foreground mode, after the relay accepted it
 * or it was safely deferred); a permanent refusal by the relay is passed
 * back as 554.  Each message takes the same path as stdin submission.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "address.h"
#include "cli.h"
#include "config.h"
#include "dialogue.h"
#include "linereader.h"
#include "log.h"
#include "submit.h"
#include "util.h"

#define DIALOGUE_CMD_MAX	1000	/* RFC 5321 4.5.3.1.4: 512 */
#define DIALOGUE_RCPT_MAX	1000

static int
dialogue_reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
dialogue_reply(const char *fmt, ...)
{
	char line[1100];
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	(void)util_vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	n = strlen(line);
	line[n++] = '\r';
	line[n++] = '\n';
	return util_write_all(1, line, n);
}

/*
 * The address in "MAIL FROM:<addr> params" / "RCPT TO:<addr>".
 * Returns a pointer into line (terminated there), or NULL.
 */
static char *
dialogue_path(char *arg)
{
	char *p = arg, *e;

	while (*p == ' ')
		p++;
	if (*p != '<') {
		/* Lenient: a bare address up to the first space. */
		e = p + strcspn(p, " ");
		*e = '\0';
		return p;
	}
	p++;
	if ((e = strchr(p, '>')) == NULL)
		return NULL;
	*e = '\0';
	return p;
}

/* Skips the rest of a too long command line. */
static int
dialogue_skip_line(struct linereader *lr)
{
	const char *p;
	size_t n;
	int complete, r;

	while ((r = linereader_next(lr, &p, &n, &complete)) == 1 && !complete)
		;
	return r;
}

int
dialogue_main(struct config *cfg, const struct cli_opts *o)
{
	struct submit s;
	struct linereader *lr = xmalloc(sizeof(*lr));
	struct addr_list rcpts;
	char line[DIALOGUE_CMD_MAX + 1], err[1024], id[SPOOL_ID_LEN + 1];
	char *sender = NULL;
	const char *p;
	size_t n;
	int complete, r, rc = 0;

	addr_list_init(&rcpts);
	if ((rc = submit_init(&s, cfg, o, err, sizeof(err))) != 0) {
		log_user("%s", err);
		free(lr);
		return rc;
	}
	linereader_init(lr, 0);
	if (dialogue_reply("220 %s relayq ESMTP (sendmail -bs)", s.domain) ==
	    -1)
		goto out;
	for (;;) {
		char *cmd, *arg;

		r = linereader_next(lr, &p, &n, &complete);
		if (r <= 0)
			break;		/* end of input without QUIT */
		if (!complete || n > DIALOGUE_CMD_MAX) {
			if (!complete && dialogue_skip_line(lr) == -1)
				break;
			if (dialogue_reply("500 5.5.2 Line too long") == -1)
				break;
			continue;
		}
		if (memchr(p, '\0', n) != NULL) {
			/* A NUL would cut the line short: "RCPT TO:a@b\0@c". */
			if (dialogue_reply("501 5.5.2 NUL in command") == -1)
				break;
			continue;
		}
		memcpy(line, p, n);
		line[n] = '\0';
		line[strcspn(line, "\r\n")] = '\0';
		cmd = line;
		arg = cmd + strcspn(cmd, " ");
		if (*arg != '\0')
			*arg++ = '\0';

		if (util_strcaseeq(cmd, "HELO")) {
			r = dialogue_reply("250 %s", s.domain);
		} else if (util_strcaseeq(cmd, "EHLO")) {
			r = dialogue_reply("250-%s", s.domain);
			if (r == 0)
				r = dialogue_reply("250-8BITMIME");
			if (r == 0)
				r = dialogue_reply("250-ENHANCEDSTATUSCODES");
			if (r == 0)
				r = dialogue_reply("250 PIPELINING");
		} else if (util_strcaseeq(cmd, "MAIL")) {
			char *a;

			if (sender != NULL) {
				r = dialogue_reply("503 5.5.1 Sender already "
				    "given");
			} else if (!util_strncaseeq(arg, "FROM:", 5) ||
			    (a = dialogue_path(arg + 5)) == NULL) {
				r = dialogue_reply("501 5.5.4 Syntax: MAIL "
				    "FROM:<address>");
			} else if (submit_sender(&s, a, &sender, err,
			    sizeof(err)) != 0) {
				r = dialogue_reply("553 5.1.7 %s", err);
			} else
				r = dialogue_reply("250 2.1.0 Ok");
		} else if (util_strcaseeq(cmd, "RCPT")) {
			char *a;

			if (sender == NULL) {
				r = dialogue_reply("503 5.5.1 MAIL first");
			} else if (!util_strncaseeq(arg, "TO:", 3) ||
			    (a = dialogue_path(arg + 3)) == NULL ||
			    a[0] == '\0') {
				r = dialogue_reply("501 5.5.4 Syntax: RCPT "
				    "TO:<address>");
			} else if (rcpts.n >= DIALOGUE_RCPT_MAX) {
				r = dialogue_reply("452 4.5.3 Too many "
				    "recipients");
			} else if (submit_recipients(&s, a, &rcpts, err,
			    sizeof(err)) != 0) {
				r = dialogue_reply("553 5.1.3 %s", err);
			} else
				r = dialogue_reply("250 2.1.5 Ok");
		} else if (util_strcaseeq(cmd, "DATA")) {
			if (sender == NULL || rcpts.n == 0) {
				r = dialogue_reply("503 5.5.1 %s first",
				    sender == NULL ? "MAIL" : "RCPT");
				goto next;
			}
			if (dialogue_reply("354 End data with <CR><LF>.<CR><LF>")
			    == -1)
				break;
			rc = submit_message(&s, lr, MESSAGE_END_SMTP, sender,
			    &rcpts, 0, id, err, sizeof(err));
			if (rc == EX_TEMPFAIL && lr->eof &&
			    lr->start == lr->end) {
				/* Input ended inside DATA: nothing queued. */
				log_user("%s", err);
				goto out;
			}
			if (rc == 0)
				r = dialogue_reply("250 2.0.0 Ok: queued as %s",
				    id);
			else if (rc == EX_DATAERR && s.too_big)
				r = dialogue_reply("552 5.3.4 %s", err);
			else if (rc == EX_DATAERR && s.policy_refused)
				r = dialogue_reply("550 5.7.1 %s", err);
			else if (rc == EX_DATAERR)
				r = dialogue_reply("554 5.6.0 %s", err);
			else if (rc == EX_NOUSER || rc == EX_UNAVAILABLE)
				r = dialogue_reply("554 5.0.0 %s", err);
			else
				r = dialogue_reply("451 4.3.0 %s", err);
			if (rc != 0)
				log_user("%s", err);
			rc = 0;
			free(sender);
			sender = NULL;
			addr_list_free(&rcpts);
		} else if (util_strcaseeq(cmd, "RSET")) {
			free(sender);
			sender = NULL;
			addr_list_free(&rcpts);
			r = dialogue_reply("250 2.0.0 Ok");
		} else if (util_strcaseeq(cmd, "NOOP")) {
			r = dialogue_reply("250 2.0.0 Ok");
		} else if (util_strcaseeq(cmd, "QUIT")) {
			(void)dialogue_reply("221 2.0.0 Bye");
			break;
		} else if (util_strcaseeq(cmd, "VRFY")) {
			r = dialogue_reply("252 2.5.2 Cannot verify, but will "
			    "try delivery");
		} else if (util_strcaseeq(cmd, "HELP")) {
			r = dialogue_reply("214 2.0.0 HELO EHLO MAIL RCPT DATA "
			    "RSET NOOP QUIT VRFY");
		} else
			r = dialogue_reply("502 5.5.1 Command not implemented");
next:
		if (r == -1)
			break;
	}
out:
	free(sender);
	addr_list_free(&rcpts);
	submit_free(&s);
	free(lr);
	return rc;
}
