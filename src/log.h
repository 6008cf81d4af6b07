/*
 * log.h -- logging to syslog (facility mail) or stderr, and fatal exits.
 *
 * The logging state is the program's only global.  Messages are one line
 * each; callers pass relay reply text through util_sanitize() first.
 */
#ifndef RELAYQ_LOG_H
#define RELAYQ_LOG_H

enum log_target {
	LOG_TARGET_AUTO,	/* syslog when /dev/log exists, else stderr */
	LOG_TARGET_SYSLOG,
	LOG_TARGET_STDERR
};

/* Before log_init() everything goes to stderr. */
void	log_init(enum log_target);
/* True when log lines already reach stderr (no need to print twice). */
int	log_to_stderr(void);
void	log_set_verbose(int);
int	log_verbose(void);
/* Called by log_fatal*() before exiting, e.g. to remove a temporary file. */
void	log_set_cleanup(void (*)(void));

void	log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
/* Appends ": strerror(errno)". */
void	log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
/* Verbose-mode note on stderr only. */
void	log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
/*
 * One line for the person who ran the command: on stderr always, and in
 * the log as a warning when the log is not stderr.
 */
void	log_user(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_fatal(int, const char *, ...)
	    __attribute__((format(printf, 2, 3), noreturn));
void	log_fatalx(int, const char *, ...)
	    __attribute__((format(printf, 2, 3), noreturn));

#endif
