/*
 * util.h -- small checked helpers: memory, strings, numbers, I/O.
 *
 * Every function here either succeeds or reports failure to its caller;
 * only the x*alloc family ends the process (out of memory is not something
 * a mail submitter can recover from, and it must not write half a file).
 */
#ifndef RELAYQ_UTIL_H
#define RELAYQ_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <sys/types.h>

#define UTIL_ARRAYLEN(a) (sizeof(a) / sizeof((a)[0]))

void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xrealloc(void *, size_t);
void	*xreallocarray(void *, size_t, size_t);
char	*xstrdup(const char *);
char	*xstrndup(const char *, size_t);

/*
 * Formats into buf like snprintf.  Returns 0, or -1 if the result did not
 * fit (buf then holds a truncated, terminated string).
 */
int	 util_snprintf(char *buf, size_t len, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
int	 util_vsnprintf(char *buf, size_t len, const char *fmt, va_list ap)
	    __attribute__((format(printf, 3, 0)));
/* Like snprintf into a fresh allocation. */
char	*util_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Copies src into dst of size len; returns -1 if it was truncated. */
int	 util_strlcpy(char *dst, const char *src, size_t len);

/*
 * Parses a decimal number in [min, max].  Returns 0, or -1 for anything
 * else (empty, sign, trailing garbage, out of range).
 */
int	 util_parse_ulong(const char *s, unsigned long min, unsigned long max,
	    unsigned long *out);
/* "90", "90s", "15m", "12h", "5d", "1w": seconds.  Returns 0 or -1. */
int	 util_parse_duration(const char *s, unsigned long *secs);

/* Writes all of buf, retrying after EINTR and short writes.  0 or -1. */
int	 util_write_all(int fd, const void *buf, size_t len);
/* Writes all of buf at offset off.  0 or -1. */
int	 util_pwrite_all(int fd, const void *buf, size_t len, off_t off);
/* read(2) that retries after EINTR. */
ssize_t	 util_read(int fd, void *buf, size_t len);
/* Reads exactly len bytes at off; returns 0, or -1 (errno, or EIO on EOF). */
int	 util_pread_full(int fd, void *buf, size_t len, off_t off);
/* fsync(2) of a directory given by path.  0 or -1. */
int	 util_fsync_dir(const char *path);
/* fsync(2) of a directory given by descriptor.  0 or -1. */
int	 util_fsync_fd(int fd);

/* Replaces everything but printable ASCII by '?' and caps the length. */
void	 util_sanitize(char *dst, size_t dstlen, const char *src, size_t srclen);

/* Case-insensitive ASCII comparison helpers. */
int	 util_strcaseeq(const char *, const char *);
int	 util_strncaseeq(const char *, const char *, size_t);

/* Overwrites a secret before it is freed. */
void	 util_wipe(void *, size_t);

/* Formats seconds as "45s", "30m", "12h" or "5d" (the largest whole unit). */
void	 util_format_duration(unsigned long secs, char *buf, size_t len);

/* Wall-clock seconds. */
long long util_now(void);
/* Monotonic milliseconds. */
long long util_monotonic_ms(void);

#endif
