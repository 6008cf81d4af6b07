/*
 * fuzz.h -- helpers shared by the libFuzzer targets in tests/fuzz/.
 *
 * Each target is one fuzz_*.c file linked against the library objects
 * (everything in src/ but main.c); see "make fuzz" in GNUmakefile.
 * Everything here is static inline so that a target that does not use a
 * helper does not warn about it.
 */
#ifndef RELAYQ_FUZZ_H
#define RELAYQ_FUZZ_H

#include <sys/mman.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);
int	LLVMFuzzerInitialize(int *, char ***);

/* A harness precondition failed: not a finding, but nothing can run. */
static inline void
fuzz_die(const char *what)
{
	(void)fprintf(stderr, "fuzz harness: %s: %s\n", what, strerror(errno));
	abort();
}

/* An invariant of the code under test does not hold: a finding. */
#define FUZZ_ASSERT(c) do {						\
	if (!(c))							\
		fuzz_failed(__FILE__, __LINE__, #c);			\
} while (0)

/*
 * Says which invariant failed where the sanitizer reports go: with
 * -close_fd_mask=2 (make fuzz) stderr is closed, but those are not.
 */
void	__sanitizer_report_error_summary(const char *);

static inline void
fuzz_failed(const char *file, int line, const char *cond)
{
	char msg[512];

	(void)snprintf(msg, sizeof(msg), "relayq fuzz invariant failed at "
	    "%s:%d: %s", file, line, cond);
	(void)fprintf(stderr, "%s\n", msg);
	__sanitizer_report_error_summary(msg);
	abort();
}

/*
 * Known issues: found, reported and not fixed yet (tests/fuzz/README
 * lists them, tests/fuzz/crashes/ holds their reproducers).  A target
 * that recognises an input showing one lets it through, unless
 * RELAYQ_FUZZ_STRICT is set in the environment: so the fuzzers look
 * for new problems and CI stays green.  When the fix is in, delete the
 * waiver and its README entry.
 */
static inline int
fuzz_waive(const char *issue)
{
	static int strict = -1;

	(void)issue;
	if (strict == -1)
		strict = getenv("RELAYQ_FUZZ_STRICT") != NULL;
	return !strict;
}

/* A NUL-terminated copy of the input (exactly sized, for ASan). */
static inline char *
fuzz_strndup(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s == NULL)
		fuzz_die("malloc");
	if (size > 0)
		memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

static inline void
fuzz_write_all(int fd, const void *data, size_t size)
{
	const char *p = data;

	while (size > 0) {
		ssize_t n = write(fd, p, size);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			fuzz_die("write");
		p += n;
		size -= (size_t)n;
	}
}

/* A descriptor reading data from its start (a memfd: no file system). */
static inline int
fuzz_memfd(const void *data, size_t size)
{
	int fd = memfd_create("relayq-fuzz", MFD_CLOEXEC);

	if (fd == -1) {
		FILE *fp = tmpfile();

		if (fp == NULL || (fd = dup(fileno(fp))) == -1)
			fuzz_die("memfd_create/tmpfile");
		(void)fclose(fp);
	}
	fuzz_write_all(fd, data, size);
	if (lseek(fd, 0, SEEK_SET) == -1)
		fuzz_die("lseek");
	return fd;
}

/* Replaces path's contents by data (mode 0600). */
static inline void
fuzz_write_file(const char *path, const void *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd == -1)
		fuzz_die(path);
	fuzz_write_all(fd, data, size);
	if (close(fd) == -1)
		fuzz_die("close");
}

static inline int
fuzz_rm_one(const char *path, const struct stat *st, int type,
    struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	(void)(type == FTW_DP ? rmdir(path) : unlink(path));
	return 0;
}

/* Removes path and everything under it. */
static inline void
fuzz_rmtree(const char *path)
{
	(void)nftw(path, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static char *fuzz_tmp_top;

static inline void
fuzz_tmp_cleanup(void)
{
	if (fuzz_tmp_top != NULL)
		fuzz_rmtree(fuzz_tmp_top);
	free(fuzz_tmp_top);
	fuzz_tmp_top = NULL;
}

/*
 * Removes base/relayq-fuzz-PID-* left by processes that are gone: a
 * crash ends a fuzzer without running atexit handlers.
 */
static inline void
fuzz_tmp_sweep(const char *base)
{
	char path[4096];
	struct dirent *de;
	DIR *d;

	if ((d = opendir(base)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		char *end;
		long pid;

		if (strncmp(de->d_name, "relayq-fuzz-", 12) != 0)
			continue;
		pid = strtol(de->d_name + 12, &end, 10);
		if (end == de->d_name + 12 || *end != '-' || pid <= 0 ||
		    kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		(void)snprintf(path, sizeof(path), "%s/%s", base, de->d_name);
		fuzz_rmtree(path);
	}
	(void)closedir(d);
}

/*
 * A private directory for this process, removed at exit: on /dev/shm
 * when there is one (the spool fsyncs a lot), else $TMPDIR or /tmp.
 */
static inline const char *
fuzz_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	struct stat st;
	size_t n;

	if (fuzz_tmp_top != NULL)
		return fuzz_tmp_top;
	if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) &&
	    access("/dev/shm", W_OK | X_OK) == 0)
		base = "/dev/shm";
	else if (base == NULL || base[0] != '/')
		base = "/tmp";
	fuzz_tmp_sweep(base);
	n = strlen(base) + sizeof("/relayq-fuzz--XXXXXX") + 20;
	if ((fuzz_tmp_top = malloc(n)) == NULL)
		fuzz_die("malloc");
	(void)snprintf(fuzz_tmp_top, n, "%s/relayq-fuzz-%ld-XXXXXX", base,
	    (long)getpid());
	if (mkdtemp(fuzz_tmp_top) == NULL)
		fuzz_die("mkdtemp");
	(void)atexit(fuzz_tmp_cleanup);
	return fuzz_tmp_top;
}

/* 1 if directory dir has an entry whose name starts with prefix. */
static inline int
fuzz_dir_has(const char *dir, const char *prefix)
{
	struct dirent *de;
	DIR *d;
	int found = 0;

	if ((d = opendir(dir)) == NULL)
		return 0;
	while (!found && (de = readdir(d)) != NULL)
		found = strncmp(de->d_name, prefix, strlen(prefix)) == 0;
	(void)closedir(d);
	return found;
}

/* Points fd (0 or 1) at /dev/null. */
static inline void
fuzz_devnull(int fd)
{
	int n = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (n == -1 || dup2(n, fd) == -1)
		fuzz_die("/dev/null");
	(void)close(n);
}

#endif

#ifdef FUZZ_FIXED_HOSTNAME
/*
 * This host's name, for submit_init() and config_host_fqdn(): fixed and
 * fully qualified, so that no run waits on a resolver and every machine
 * takes the same paths.  It replaces libc's for the whole fuzz binary.
 */
int
gethostname(char *name, size_t len)
{
	static const char host[] = "fuzzhost.example";

	if (len < sizeof(host)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(name, host, sizeof(host));
	return 0;
}
#endif
