/*
 * log.c -- logging to syslog (facility mail) or stderr, and fatal exits.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "log.h"

static struct {
	int	 use_syslog;
	int	 verbose;
	void	(*cleanup)(void);
} log_state;

void
log_init(enum log_target target)
{
	struct stat st;

	switch (target) {
	case LOG_TARGET_SYSLOG:
		log_state.use_syslog = 1;
		break;
	case LOG_TARGET_STDERR:
		log_state.use_syslog = 0;
		break;
	case LOG_TARGET_AUTO:
		/* Containers often have no syslog daemon: then stderr. */
		log_state.use_syslog = stat("/dev/log", &st) == 0 &&
		    S_ISSOCK(st.st_mode);
		break;
	}
	if (log_state.use_syslog)
		openlog("relayq", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

int
log_to_stderr(void)
{
	return !log_state.use_syslog;
}

void
log_set_verbose(int v)
{
	log_state.verbose = v;
}

int
log_verbose(void)
{
	return log_state.verbose;
}

void
log_set_cleanup(void (*fn)(void))
{
	log_state.cleanup = fn;
}

static void
log_emit(int prio, const char *fmt, va_list ap, const char *suffix)
{
	char line[2048];

	(void)vsnprintf(line, sizeof(line), fmt, ap);
	if (log_state.use_syslog) {
		if (suffix != NULL)
			syslog(prio, "%s: %s", line, suffix);
		else
			syslog(prio, "%s", line);
	} else {
		if (suffix != NULL)
			(void)fprintf(stderr, "relayq[%ld]: %s: %s\n",
			    (long)getpid(), line, suffix);
		else
			(void)fprintf(stderr, "relayq[%ld]: %s\n",
			    (long)getpid(), line);
	}
}

void
log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_INFO, fmt, ap, NULL);
	va_end(ap);
}

void
log_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_WARNING, fmt, ap, NULL);
	va_end(ap);
}

void
log_warn(const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	log_emit(LOG_WARNING, fmt, ap, strerror(saved));
	va_end(ap);
	errno = saved;
}

void
log_debug(const char *fmt, ...)
{
	va_list ap;

	if (!log_state.verbose)
		return;
	va_start(ap, fmt);
	(void)fputs("relayq: ", stderr);
	(void)vfprintf(stderr, fmt, ap);
	(void)fputc('\n', stderr);
	va_end(ap);
}

static void
log_user_v(const char *fmt, va_list ap, const char *suffix)
{
	char line[2048];

	(void)vsnprintf(line, sizeof(line), fmt, ap);
	if (suffix != NULL)
		(void)fprintf(stderr, "relayq: %s: %s\n", line, suffix);
	else
		(void)fprintf(stderr, "relayq: %s\n", line);
	if (log_state.use_syslog) {
		if (suffix != NULL)
			syslog(LOG_WARNING, "%s: %s", line, suffix);
		else
			syslog(LOG_WARNING, "%s", line);
	}
}

void
log_user(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_user_v(fmt, ap, NULL);
	va_end(ap);
}

void
log_fatal(int ex, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	if (log_state.cleanup != NULL)
		log_state.cleanup();
	va_start(ap, fmt);
	log_user_v(fmt, ap, strerror(saved));
	va_end(ap);
	exit(ex);
}

void
log_fatalx(int ex, const char *fmt, ...)
{
	va_list ap;

	if (log_state.cleanup != NULL)
		log_state.cleanup();
	va_start(ap, fmt);
	log_user_v(fmt, ap, NULL);
	va_end(ap);
	exit(ex);
}
