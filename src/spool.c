/*
 * spool.c -- the durable queue on disk.
 *
 * A message file (queue/ID) is an envelope in text lines, a blank line,
 * the message exactly as it goes on the wire, and an end marker:
 *
 *	relayq-spool 1
 *	id 0001a2b3c4d5e6f7a8b9
 *	arrival 1764133000		seconds since the epoch
 *	uid 1000			who submitted it
 *	sender alice@example.com	empty for the null sender <>
 *	rcpt bob@example.com		one line per recipient
 *	notify failure,delay		optional: -N, -R and -V
 *	ret hdrs
 *	envid abc123
 *	body 7BIT			or 8BIT
 *	size 00000000000000001234	octets of message data
 *	(empty line)
 *	<size octets: CRLF lines, ready for DATA>
 *	END
 *
 * A file is complete only if its length is exactly the envelope, the data
 * and "END\n"; anything else is torn or foreign and is quarantined.  The
 * state file (queue/ID.state) is small and rewritten whole (temporary
 * file, fsync, rename) after each attempt:
 *
 *	relayq-state 1
 *	attempts 2
 *	next 1764133600
 *	last 451 4.7.1 Try again later
 *	rcpt 0 done 250 2.0.0 Ok
 *	rcpt 1 failed 550 5.1.1 No such user
 *	reported 1			a DSN went out for recipient 1
 *	atrcpt 1			it was refused at RCPT
 *	dkim DKIM-Signature: v=1; ...	signature lines, sent before the
 *	dkim 	b=...			data (one state line per line)
 *
 * Commit (spool_commit): write tmp/ID, fsync, close (checked), reopen and
 * lock it, rename it to queue/ID with RENAME_NOREPLACE (atomic, and never
 * replacing a file), fsync queue/.  Exit 0 comes only after that.  Where
 * the filesystem lacks RENAME_NOREPLACE, link(2) and unlink(2) do it; a
 * runner that meets the file between the two sees two links and its twin
 * in tmp/, and leaves it alone as busy instead of quarantining it.
 */
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "linereader.h"
#include "log.h"
#include "spool.h"
#include "util.h"

#define SPOOL_MAGIC	"relayq-spool 1"
#define STATE_MAGIC	"relayq-state 1"
#define SPOOL_END	"END\n"

static const char *const spool_subdirs[] = { "tmp", "queue", "failed",
	"corrupt" };

static int spool_cmp_ids(const void *, const void *);

/* The message being written, for spool_abort_current(). */
static struct spool_writer *spool_current;

static int
spool_path(char *buf, size_t len, const struct spool *s, const char *sub,
    const char *name, const char *suffix)
{
	return util_snprintf(buf, len, "%s/%s%s%s%s", s->dir, sub,
	    name != NULL ? "/" : "", name != NULL ? name : "",
	    suffix != NULL ? suffix : "");
}

int
spool_open(struct spool *s, const char *dir, char *err, size_t errlen)
{
	char path[4096];
	size_t i;

	memset(s, 0, sizeof(*s));
	s->dir = xstrdup(dir);
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		(void)util_snprintf(err, errlen, "spool %s: %s", dir,
		    strerror(errno));
		goto fail;
	}
	for (i = 0; i < UTIL_ARRAYLEN(spool_subdirs); i++) {
		if (spool_path(path, sizeof(path), s, spool_subdirs[i], NULL,
		    NULL) == -1 || (mkdir(path, 0700) == -1 &&
		    errno != EEXIST)) {
			(void)util_snprintf(err, errlen, "spool %s: %s", path,
			    strerror(errno));
			goto fail;
		}
	}
	return 0;
fail:
	free(s->dir);
	s->dir = NULL;
	return -1;
}

void
spool_close(struct spool *s)
{
	free(s->dir);
	s->dir = NULL;
	spool_free_ids(s->states, s->nstates);
	s->states = NULL;
	s->nstates = 0;
	s->states_dir = NULL;
}

int
spool_writable(struct spool *s, char *err, size_t errlen)
{
	char path[4096];
	int fd;

	if (spool_path(path, sizeof(path), s, "tmp", ".probe", NULL) == -1)
		return 0;
	(void)unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd == -1 && (errno == EROFS || errno == EACCES ||
	    errno == EPERM)) {
		(void)util_snprintf(err, errlen, "spool %s cannot be written: "
		    "%s", s->dir, strerror(errno));
		return -1;
	}
	if (fd != -1) {
		(void)close(fd);
		(void)unlink(path);
	}
	return 0;
}

void
spool_purge_tmp(struct spool *s, long long max_age)
{
	char dir[4096];
	struct dirent *d;
	struct stat st;
	long long now = util_now();
	DIR *dp;

	if (spool_path(dir, sizeof(dir), s, "tmp", NULL, NULL) == -1 ||
	    (dp = opendir(dir)) == NULL)
		return;
	while ((d = readdir(dp)) != NULL) {
		if (d->d_name[0] == '.' && (d->d_name[1] == '\0' ||
		    (d->d_name[1] == '.' && d->d_name[2] == '\0')))
			continue;
		if (fstatat(dirfd(dp), d->d_name, &st, AT_SYMLINK_NOFOLLOW) ==
		    0 && !S_ISDIR(st.st_mode) &&
		    now - (long long)st.st_mtime > max_age &&
		    unlinkat(dirfd(dp), d->d_name, 0) == 0)
			log_info("tmp/%s: left by a writer that died; removed",
			    spool_is_id(d->d_name) ? d->d_name : "(a file)");
	}
	(void)closedir(dp);
}

void
spool_note_sent(struct spool *s, long long when)
{
	char path[4096], tmp[4096], line[32];
	int fd;

	if (spool_path(path, sizeof(path), s, "sent", NULL, NULL) == -1 ||
	    spool_path(tmp, sizeof(tmp), s, "tmp", "sent", NULL) == -1)
		return;
	if (util_snprintf(line, sizeof(line), "%lld\n", when) == -1)
		return;
	/* Never through a link someone left in tmp/. */
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd == -1)
		return;
	if (util_write_all(fd, line, strlen(line)) == -1 ||
	    close(fd) == -1 || rename(tmp, path) == -1)
		(void)unlink(tmp);
}

long long
spool_last_sent(struct spool *s)
{
	char path[4096], line[32];
	unsigned long v;
	ssize_t n;
	int fd;

	if (spool_path(path, sizeof(path), s, "sent", NULL, NULL) == -1 ||
	    (fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) == -1)
		return 0;
	n = util_read(fd, line, sizeof(line) - 1);
	(void)close(fd);
	if (n <= 0)
		return 0;
	line[n] = '\0';
	line[strcspn(line, "\n")] = '\0';
	return util_parse_ulong(line, 0, 1UL << 40, &v) == 0 ? (long long)v :
	    0;
}

int
spool_is_id(const char *name)
{
	size_t i;

	for (i = 0; i < SPOOL_ID_LEN; i++)
		if (!isdigit((unsigned char)name[i]) &&
		    (name[i] < 'a' || name[i] > 'f'))
			return 0;
	return name[SPOOL_ID_LEN] == '\0';
}

int
spool_new_id(char id[SPOOL_ID_LEN + 1])
{
	struct timespec ts;
	unsigned char r[3];
	unsigned long long us;

	if (clock_gettime(CLOCK_REALTIME, &ts) == -1)
		return -1;
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return -1;
	us = (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000;
	return util_snprintf(id, SPOOL_ID_LEN + 1, "%014llx%02x%02x%02x",
	    us & 0xffffffffffffffULL, r[0], r[1], r[2]);
}

static int
spool_flush(struct spool_writer *w)
{
	if (w->failed)
		return -1;
	if (w->len > 0 && util_write_all(w->fd, w->buf, w->len) == -1) {
		w->failed = 1;
		w->saved_errno = errno;
		return -1;
	}
	w->pos += (off_t)w->len;
	w->len = 0;
	return 0;
}

int
spool_write(void *arg, const char *p, size_t n)
{
	struct spool_writer *w = arg;

	while (n > 0) {
		size_t room = sizeof(w->buf) - w->len, k = n < room ? n : room;

		memcpy(w->buf + w->len, p, k);
		w->len += k;
		p += k;
		n -= k;
		if (w->len == sizeof(w->buf) && spool_flush(w) == -1)
			return -1;
	}
	return w->failed ? -1 : 0;
}

int
spool_create(struct spool *s, struct spool_writer *w, long long arrival,
    const char *sender, const struct addr_list *rcpts,
    const struct spool_dsn *dsn, char *err, size_t errlen)
{
	struct spool_origin me = { (unsigned long)getuid(), NULL };

	return spool_create_as(s, w, &me, arrival, sender, rcpts, dsn, err,
	    errlen);
}

int
spool_create_as(struct spool *s, struct spool_writer *w,
    const struct spool_origin *origin, long long arrival,
    const char *sender, const struct addr_list *rcpts,
    const struct spool_dsn *dsn, char *err, size_t errlen)
{
	char path[4096];
	struct stat st;
	struct buf b;
	size_t i;
	int tries;

	memset(w, 0, sizeof(*w));
	w->fd = -1;
	for (tries = 0; tries < 10; tries++) {
		if (origin->id != NULL)
			(void)util_strlcpy(w->id, origin->id, sizeof(w->id));
		else if (spool_new_id(w->id) == -1) {
			(void)util_snprintf(err, errlen,
			    "cannot make a queue id: %s", strerror(errno));
			return -1;
		}
		/* Never reuse an ID that is still queued or failed. */
		if ((spool_path(path, sizeof(path), s, "queue", w->id, NULL)
		    == 0 && lstat(path, &st) == 0) ||
		    (spool_path(path, sizeof(path), s, "failed", w->id, NULL)
		    == 0 && lstat(path, &st) == 0)) {
			if (origin->id == NULL)
				continue;
			(void)util_snprintf(err, errlen, "%s is queued already",
			    w->id);
			errno = EEXIST;
			return -1;
		}
		if (spool_path(w->tmppath, sizeof(w->tmppath), s, "tmp",
		    w->id, NULL) == -1) {
			(void)util_snprintf(err, errlen, "spool path too long");
			return -1;
		}
		/* A pickup that died left its temporary file. */
		if (origin->id != NULL)
			(void)unlink(w->tmppath);
		w->fd = open(w->tmppath, O_WRONLY | O_CREAT | O_EXCL |
		    O_NOFOLLOW | O_CLOEXEC, 0600);
		if (w->fd != -1 || errno != EEXIST || origin->id != NULL)
			break;
	}
	if (w->fd == -1) {
		(void)util_snprintf(err, errlen, "%s: %s", w->tmppath,
		    strerror(errno));
		w->tmppath[0] = '\0';
		return -1;
	}
	spool_current = w;

	buf_init(&b);
	buf_printf(&b, "%s\nid %s\narrival %lld\nuid %lu\nsender %s\n",
	    SPOOL_MAGIC, w->id, arrival, origin->uid, sender);
	for (i = 0; i < rcpts->n; i++)
		buf_printf(&b, "rcpt %s\n", rcpts->v[i]);
	if (dsn != NULL && dsn->notify != NULL)
		buf_printf(&b, "notify %s\n", dsn->notify);
	if (dsn != NULL && dsn->ret != NULL)
		buf_printf(&b, "ret %s\n", dsn->ret);
	if (dsn != NULL && dsn->envid != NULL)
		buf_printf(&b, "envid %s\n", dsn->envid);
	w->body_off = (off_t)b.len + 5;
	buf_puts(&b, "body 7BIT\n");
	w->size_off = (off_t)b.len + 5;
	buf_printf(&b, "size %020u\n\n", 0);
	w->data_off = (off_t)b.len;
	(void)spool_write(w, b.data, b.len);
	buf_free(&b);
	if (w->failed) {
		(void)util_snprintf(err, errlen, "%s: %s", w->tmppath,
		    strerror(w->saved_errno));
		spool_abort(w);
		errno = w->saved_errno;
		return -1;
	}
	return 0;
}

void
spool_abort(struct spool_writer *w)
{
	if (w->fd != -1) {
		(void)close(w->fd);
		w->fd = -1;
	}
	if (w->tmppath[0] != '\0') {
		(void)unlink(w->tmppath);
		w->tmppath[0] = '\0';
	}
	if (spool_current == w)
		spool_current = NULL;
}

void
spool_abort_current(void)
{
	if (spool_current != NULL)
		spool_abort(spool_current);
}

/* rename(2) that fails with EEXIST instead of replacing to. */
static int
spool_rename_noreplace(const char *from, const char *to)
{
#ifdef SYS_renameat2
	if (syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to,
	    RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
#endif
	if (link(from, to) == -1)
		return -1;
	(void)unlink(from);
	return 0;
}

/* 1 if path (two links) is a commit in progress: its twin is tmp/ID. */
/* geteuid(), asked once: it is checked for every message listed. */
static uid_t
spool_euid(void)
{
	static uid_t euid = (uid_t)-1;

	if (euid == (uid_t)-1)
		euid = geteuid();
	return euid;
}

static int
spool_committing(struct spool *s, const char *id, const struct stat *st)
{
	char twin[4096];
	struct stat tst;

	return st->st_nlink == 2 &&
	    spool_path(twin, sizeof(twin), s, "tmp", id, NULL) == 0 &&
	    lstat(twin, &tst) == 0 && tst.st_ino == st->st_ino &&
	    tst.st_dev == st->st_dev;
}

int
spool_commit(struct spool *s, struct spool_writer *w, int eightbit,
    int lock, struct spool_entry *e, char *err, size_t errlen)
{
	char num[32], path[4096], qdir[4096];
	size_t data_len = (size_t)(w->pos + (off_t)w->len - w->data_off);
	int fd = -1, rc, saved;

	if (spool_write(w, SPOOL_END, strlen(SPOOL_END)) == -1 ||
	    spool_flush(w) == -1) {
		errno = w->saved_errno;
		goto fail;
	}
	(void)util_snprintf(num, sizeof(num), "%020zu", data_len);
	if (util_pwrite_all(w->fd, num, 20, w->size_off) == -1 ||
	    (eightbit && util_pwrite_all(w->fd, "8BIT", 4, w->body_off) == -1))
		goto fail;
	if (util_fsync_fd(w->fd) == -1)
		goto fail;
	rc = close(w->fd);
	w->fd = -1;
	if (rc == -1)
		goto fail;
	/* Lock before it becomes visible: the submitter delivers it. */
	if (lock && ((fd = open(w->tmppath, O_RDONLY | O_NOFOLLOW |
	    O_CLOEXEC)) == -1 || flock(fd, LOCK_EX) == -1))
		goto fail;
	if (spool_path(path, sizeof(path), s, "queue", w->id, NULL) == -1 ||
	    spool_path(qdir, sizeof(qdir), s, "queue", NULL, NULL) == -1) {
		errno = ENAMETOOLONG;
		goto fail;
	}
	if (spool_rename_noreplace(w->tmppath, path) == -1)
		goto fail;
	w->tmppath[0] = '\0';
	if (util_fsync_dir(qdir) == -1) {
		/* Not durable: take it back rather than claim success. */
		saved = errno;
		(void)unlink(path);
		errno = saved;
		goto fail;
	}
	spool_current = NULL;

	memset(e, 0, sizeof(*e));
	memcpy(e->id, w->id, sizeof(e->id));
	e->fd = fd;
	e->data_off = w->data_off;
	e->data_len = data_len;
	e->eightbit = eightbit;
	return 0;
fail:
	saved = errno;
	(void)util_snprintf(err, errlen, "cannot queue the message in %s: %s",
	    s->dir, strerror(saved));
	if (fd != -1)
		(void)close(fd);
	spool_abort(w);
	errno = saved;
	return -1;
}

static void
spool_entry_clear(struct spool_entry *e)
{
	free(e->notify);
	free(e->ret);
	free(e->envid);
	e->notify = e->ret = e->envid = NULL;
	free(e->sender);
	addr_list_free(&e->rcpts);
	free(e->rstate);
	free(e->dkim);
	e->dkim = NULL;
	e->sender = NULL;
	e->rstate = NULL;
}

void
spool_entry_close(struct spool_entry *e)
{
	if (e->fd != -1)
		(void)close(e->fd);	/* read-only: nothing to lose */
	e->fd = -1;
	spool_entry_clear(e);
}

/* "key value": returns value if line starts with key and a space. */
static const char *
spool_field(const char *line, const char *key)
{
	size_t n = strlen(key);

	if (strncmp(line, key, n) != 0 || line[n] != ' ')
		return NULL;
	return line + n + 1;
}

/* Parses the envelope; returns 0, or -1 with err (file is bad). */
static int
spool_parse_envelope(struct spool_entry *e, const char *id, off_t size,
    char *err, size_t errlen)
{
	struct linereader *lr = xmalloc(sizeof(*lr));
	const char *p, *v;
	unsigned long ul;
	int complete, r, lineno = 0, have_size = 0, rc = -1;
	char line[ADDR_MAX_LEN + 16], why[128];
	off_t off = 0;
	size_t n;
	char end[sizeof(SPOOL_END)];

	linereader_init(lr, e->fd);
	/* The envelope is small; the message behind it may be megabytes,
	 * and a listing reads only the envelope. */
	lr->chunk = 1024;
	for (;;) {
		if ((r = linereader_next(lr, &p, &n, &complete)) != 1 ||
		    !complete || n >= sizeof(line)) {
			(void)util_snprintf(err, errlen,
			    "envelope line %d is torn or too long", lineno + 1);
			goto done;
		}
		off += (off_t)n;
		memcpy(line, p, n - 1);
		line[n - 1] = '\0';
		lineno++;
		if (lineno == 1) {
			if (strcmp(line, SPOOL_MAGIC) != 0) {
				(void)util_snprintf(err, errlen,
				    "not a relayq spool file");
				goto done;
			}
			continue;
		}
		if (line[0] == '\0')
			break;
		if ((v = spool_field(line, "id")) != NULL) {
			if (strcmp(v, id) != 0)
				goto bad;
		} else if ((v = spool_field(line, "arrival")) != NULL) {
			if (util_parse_ulong(v, 0, 1UL << 40, &ul) == -1)
				goto bad;
			e->arrival = (long long)ul;
		} else if ((v = spool_field(line, "uid")) != NULL) {
			if (util_parse_ulong(v, 0, 0xffffffffUL, &e->uid) == -1)
				goto bad;
		} else if ((v = spool_field(line, "sender")) != NULL) {
			if (v[0] != '\0' && addr_check_safe(v, why,
			    sizeof(why)) == -1)
				goto bad;
			free(e->sender);
			e->sender = xstrdup(v);
		} else if ((v = spool_field(line, "rcpt")) != NULL) {
			if (v[0] == '\0' || addr_check_safe(v, why,
			    sizeof(why)) == -1 || e->rcpts.n >= ADDR_MAX_COUNT)
				goto bad;
			e->rcpts.v = xreallocarray(e->rcpts.v, e->rcpts.n + 1,
			    sizeof(*e->rcpts.v));
			e->rcpts.v[e->rcpts.n++] = xstrdup(v);
		} else if ((v = spool_field(line, "notify")) != NULL ||
		    (v = spool_field(line, "ret")) != NULL ||
		    (v = spool_field(line, "envid")) != NULL) {
			char **dst = line[0] == 'n' ? &e->notify :
			    line[0] == 'r' ? &e->ret : &e->envid;

			if (v[0] == '\0' || strlen(v) > 100 || *dst != NULL ||
			    strpbrk(v, " \t") != NULL)
				goto bad;
			*dst = xstrdup(v);
		} else if ((v = spool_field(line, "body")) != NULL) {
			if (strcmp(v, "7BIT") != 0 && strcmp(v, "8BIT") != 0)
				goto bad;
			e->eightbit = strcmp(v, "8BIT") == 0;
		} else if ((v = spool_field(line, "size")) != NULL) {
			if (util_parse_ulong(v, 0, (unsigned long)1 << 40,
			    &ul) == -1)
				goto bad;
			e->data_len = (size_t)ul;
			have_size = 1;
		} else
			goto bad;
	}
	if (e->sender == NULL || e->rcpts.n == 0 || !have_size) {
		(void)util_snprintf(err, errlen, "envelope is incomplete");
		goto done;
	}
	e->data_off = off;
	/* Complete means: exactly envelope + data + END marker. */
	if (size != e->data_off +
	    (off_t)e->data_len + (off_t)strlen(SPOOL_END) ||
	    util_pread_full(e->fd, end, strlen(SPOOL_END), e->data_off +
	    (off_t)e->data_len) == -1 || memcmp(end, SPOOL_END,
	    strlen(SPOOL_END)) != 0) {
		(void)util_snprintf(err, errlen,
		    "file is torn (size or end marker wrong)");
		goto done;
	}
	rc = 0;
	goto done;
bad:
	(void)util_snprintf(err, errlen, "bad envelope line %d", lineno);
done:
	free(lr);
	return rc;
}

#define SPOOL_DKIM_MAX	8192

/*
 * Appends one line of stored DKIM-Signature fields: printable ASCII and
 * tabs only, the first line a DKIM-Signature field.  0, or -1.
 */
static int
spool_add_dkim_line(struct spool_entry *e, const char *v)
{
	size_t have = e->dkim != NULL ? strlen(e->dkim) : 0, n = strlen(v), i;

	if (n == 0 || have + n + 3 > SPOOL_DKIM_MAX)
		return -1;
	for (i = 0; i < n; i++)
		if ((v[i] < 0x20 || v[i] > 0x7e) && v[i] != '\t')
			return -1;
	if (have == 0 && !util_strncaseeq(v, "DKIM-Signature:", 15))
		return -1;
	e->dkim = xrealloc(e->dkim, have + n + 3);
	memcpy(e->dkim + have, v, n);
	memcpy(e->dkim + have + n, "\r\n", 3);
	return 0;
}

/* Reads dir/ID.state if there is one.  0, or -1 with err. */
static int
spool_parse_state(struct spool *s, const char *dir, struct spool_entry *e,
    char *err, size_t errlen)
{
	char path[4096], line[SPOOL_TEXT_MAX + 64];
	unsigned long ul, idx, code;
	FILE *fp;
	int fd, lineno = 0;
	const char *v;
	char *end;

	e->rstate = xcalloc(e->rcpts.n, sizeof(*e->rstate));
	if (s->hint_states && s->states_dir != NULL &&
	    strcmp(s->states_dir, dir) == 0) {
		const char *key = e->id;

		if (s->nstates == 0 || bsearch(&key, s->states,
		    (size_t)s->nstates, sizeof(*s->states), spool_cmp_ids) ==
		    NULL)
			return 0;	/* the listing saw no state file */
	}
	if (spool_path(path, sizeof(path), s, dir, e->id, ".state") == -1)
		return -1;
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) == -1) {
		if (errno == ENOENT)
			return 0;
		(void)util_snprintf(err, errlen, "%s: %s", path,
		    strerror(errno));
		return -1;
	}
	if ((fp = fdopen(fd, "r")) == NULL) {
		(void)close(fd);
		return -1;
	}
	while (fgets(line, sizeof(line), fp) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		if (++lineno == 1) {
			if (strcmp(line, STATE_MAGIC) != 0)
				goto bad;
			continue;
		}
		if ((v = spool_field(line, "attempts")) != NULL) {
			if (util_parse_ulong(v, 0, 1UL << 30, &e->attempts)
			    == -1)
				goto bad;
		} else if ((v = spool_field(line, "next")) != NULL) {
			if (util_parse_ulong(v, 0, 1UL << 40, &ul) == -1)
				goto bad;
			e->next_try = (long long)ul;
		} else if ((v = spool_field(line, "last")) != NULL) {
			(void)util_strlcpy(e->last, v, sizeof(e->last));
		} else if ((v = spool_field(line, "reported")) != NULL) {
			if (util_parse_ulong(v, 0, e->rcpts.n - 1, &idx) == -1)
				goto bad;
			e->rstate[idx].reported = 1;
		} else if ((v = spool_field(line, "atrcpt")) != NULL) {
			if (util_parse_ulong(v, 0, e->rcpts.n - 1, &idx) == -1)
				goto bad;
			e->rstate[idx].at_rcpt = 1;
		} else if ((v = spool_field(line, "dkim")) != NULL) {
			if (spool_add_dkim_line(e, v) == -1)
				goto bad;
		} else if ((v = spool_field(line, "rcpt")) != NULL) {
			struct spool_rcpt_state *rs;

			errno = 0;
			idx = strtoul(v, &end, 10);
			if (errno != 0 || *end != ' ' || idx >= e->rcpts.n)
				goto bad;
			rs = &e->rstate[idx];
			v = end + 1;
			if (strncmp(v, "done ", 5) == 0)
				rs->status = SPOOL_RCPT_DONE;
			else if (strncmp(v, "failed ", 7) == 0)
				rs->status = SPOOL_RCPT_FAILED;
			else if (strncmp(v, "pending ", 8) == 0)
				rs->status = SPOOL_RCPT_PENDING;
			else
				goto bad;
			v = strchr(v, ' ') + 1;
			code = strtoul(v, &end, 10);
			if (code > 999 || (*end != ' ' && *end != '\0'))
				goto bad;
			rs->code = (int)code;
			(void)util_strlcpy(rs->text, *end ? end + 1 : "",
			    sizeof(rs->text));
		} else
			goto bad;
	}
	(void)fclose(fp);
	return 0;
bad:
	(void)fclose(fp);
	(void)util_snprintf(err, errlen, "%s: bad line %d", path, lineno);
	return -1;
}

static enum spool_open_result
spool_entry_load(struct spool *s, const char *dir, const char *id,
    struct spool_entry *e, int lock, char *err, size_t errlen)
{
	char path[4096];
	struct stat st, st2;

	memset(e, 0, sizeof(*e));
	e->fd = -1;
	if (!spool_is_id(id) || spool_path(path, sizeof(path), s, dir, id,
	    NULL) == -1) {
		(void)util_snprintf(err, errlen, "bad queue id");
		return SPOOL_OPEN_BAD;
	}
	(void)util_strlcpy(e->id, id, sizeof(e->id));
	e->fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (e->fd == -1) {
		if (errno == ENOENT)
			return SPOOL_OPEN_GONE;
		(void)util_snprintf(err, errlen, "%s: %s", path,
		    strerror(errno));
		return errno == ELOOP ? SPOOL_OPEN_BAD : SPOOL_OPEN_ERROR;
	}
	/* One fstat: listing 100 000 messages is syscalls, mostly. */
	if (fstat(e->fd, &st) == -1) {
		(void)util_snprintf(err, errlen, "%s: %s", path,
		    strerror(errno));
		spool_entry_close(e);
		return SPOOL_OPEN_ERROR;
	}
	if (S_ISREG(st.st_mode) && st.st_uid == spool_euid() &&
	    spool_committing(s, id, &st)) {
		spool_entry_close(e);
		return SPOOL_OPEN_BUSY;
	}
	if (!S_ISREG(st.st_mode) || st.st_nlink != 1 ||
	    st.st_uid != spool_euid()) {
		(void)util_snprintf(err, errlen, "%s: not a regular file of "
		    "ours with one link", path);
		spool_entry_close(e);
		return SPOOL_OPEN_BAD;
	}
	if (lock) {
		if (flock(e->fd, LOCK_EX | LOCK_NB) == -1) {
			spool_entry_close(e);
			return errno == EWOULDBLOCK ? SPOOL_OPEN_BUSY :
			    SPOOL_OPEN_ERROR;
		}
		/* The previous holder may have delivered or moved it. */
		if (stat(path, &st2) == -1 || st2.st_ino != st.st_ino ||
		    st2.st_dev != st.st_dev || fstat(e->fd, &st) == -1 ||
		    st.st_nlink == 0) {
			spool_entry_close(e);
			return SPOOL_OPEN_GONE;
		}
	}
	if (spool_parse_envelope(e, id, st.st_size, err, errlen) == -1 ||
	    spool_parse_state(s, dir, e, err, errlen) == -1) {
		spool_entry_close(e);
		return SPOOL_OPEN_BAD;
	}
	return SPOOL_OPEN_OK;
}

enum spool_open_result
spool_entry_open(struct spool *s, const char *id, struct spool_entry *e,
    char *err, size_t errlen)
{
	return spool_entry_load(s, "queue", id, e, 1, err, errlen);
}

enum spool_open_result
spool_entry_peek(struct spool *s, const char *dir, const char *id,
    struct spool_entry *e, char *err, size_t errlen)
{
	return spool_entry_load(s, dir, id, e, 0, err, errlen);
}

int
spool_entry_save(struct spool *s, struct spool_entry *e, char *err,
    size_t errlen)
{
	static const char *const names[] = { "pending", "done", "failed" };
	char tmp[4096], path[4096], qdir[4096];
	const char *p, *eol;
	struct buf b;
	size_t i;
	int fd = -1, rc;

	if (spool_path(tmp, sizeof(tmp), s, "tmp", e->id, ".state") == -1 ||
	    spool_path(path, sizeof(path), s, "queue", e->id, ".state") == -1 ||
	    spool_path(qdir, sizeof(qdir), s, "queue", NULL, NULL) == -1)
		return -1;
	buf_init(&b);
	buf_printf(&b, "%s\nattempts %lu\nnext %lld\nlast %s\n", STATE_MAGIC,
	    e->attempts, e->next_try, e->last);
	for (i = 0; i < e->rcpts.n; i++) {
		const struct spool_rcpt_state *rs = &e->rstate[i];

		if (rs->status == SPOOL_RCPT_PENDING && rs->code == 0 &&
		    rs->text[0] == '\0')
			continue;
		buf_printf(&b, "rcpt %zu %s %d %s\n", i, names[rs->status],
		    rs->code, rs->text);
		if (rs->reported)
			buf_printf(&b, "reported %zu\n", i);
		if (rs->at_rcpt)
			buf_printf(&b, "atrcpt %zu\n", i);
	}
	for (p = e->dkim; p != NULL && *p != '\0'; p = eol + 2) {
		if ((eol = strstr(p, "\r\n")) == NULL)
			break;
		buf_printf(&b, "dkim %.*s\n", (int)(eol - p), p);
	}
	/* Never through a link someone left in tmp/. */
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd == -1 || util_write_all(fd, b.data, b.len) == -1 ||
	    util_fsync_fd(fd) == -1)
		goto fail;
	rc = close(fd);
	fd = -1;
	if (rc == -1 || rename(tmp, path) == -1 || util_fsync_dir(qdir) == -1)
		goto fail;
	buf_free(&b);
	return 0;
fail:
	(void)util_snprintf(err, errlen, "saving %s: %s", path,
	    strerror(errno));
	if (fd != -1)
		(void)close(fd);
	(void)unlink(tmp);
	buf_free(&b);
	return -1;
}

int
spool_entry_done(struct spool *s, struct spool_entry *e, char *err,
    size_t errlen)
{
	char path[4096], qdir[4096];

	if (spool_path(path, sizeof(path), s, "queue", e->id, NULL) == -1 ||
	    spool_path(qdir, sizeof(qdir), s, "queue", NULL, NULL) == -1)
		return -1;
	if (unlink(path) == -1) {
		(void)util_snprintf(err, errlen, "removing %s: %s", path,
		    strerror(errno));
		return -1;
	}
	if (spool_path(path, sizeof(path), s, "queue", e->id, ".state") == 0)
		(void)unlink(path);
	if (util_fsync_dir(qdir) == -1) {
		(void)util_snprintf(err, errlen, "fsync %s: %s", qdir,
		    strerror(errno));
		return -1;
	}
	return 0;
}

int
spool_entry_fail(struct spool *s, struct spool_entry *e, char *err,
    size_t errlen)
{
	char from[4096], to[4096], dir[4096];

	if (spool_entry_save(s, e, err, errlen) == -1)
		return -1;
	/* The message first: a crash in between leaves it failed, and the
	 * runner tidies the orphaned state file. */
	if (spool_path(from, sizeof(from), s, "queue", e->id, NULL) == -1 ||
	    spool_path(to, sizeof(to), s, "failed", e->id, NULL) == -1 ||
	    rename(from, to) == -1)
		goto fail;
	if (spool_path(from, sizeof(from), s, "queue", e->id, ".state") == -1 ||
	    spool_path(to, sizeof(to), s, "failed", e->id, ".state") == -1 ||
	    rename(from, to) == -1)
		goto fail;
	if (spool_path(dir, sizeof(dir), s, "failed", NULL, NULL) == -1 ||
	    util_fsync_dir(dir) == -1 ||
	    spool_path(dir, sizeof(dir), s, "queue", NULL, NULL) == -1 ||
	    util_fsync_dir(dir) == -1)
		goto fail;
	return 0;
fail:
	(void)util_snprintf(err, errlen, "moving %s to failed/: %s", e->id,
	    strerror(errno));
	return -1;
}

int
spool_unfail(struct spool *s, const char *id, char *err, size_t errlen)
{
	struct spool_entry e;
	char from[4096], to[4096];
	size_t i;

	switch (spool_entry_peek(s, "failed", id, &e, err, errlen)) {
	case SPOOL_OPEN_OK:
		break;
	case SPOOL_OPEN_GONE:
		errno = ENOENT;
		(void)util_snprintf(err, errlen, "no failed message %s", id);
		return -1;
	default:
		return -1;
	}
	for (i = 0; i < e.rcpts.n; i++) {
		if (e.rstate[i].status == SPOOL_RCPT_FAILED) {
			e.rstate[i].status = SPOOL_RCPT_PENDING;
			e.rstate[i].reported = 0;
		}
	}
	e.next_try = 0;
	/* A fresh start: min_attempts more tries before it can expire. */
	e.attempts = 0;
	/* The new state goes to queue/ first; the message follows. */
	if (spool_entry_save(s, &e, err, errlen) == -1 ||
	    spool_path(from, sizeof(from), s, "failed", id, NULL) == -1 ||
	    spool_path(to, sizeof(to), s, "queue", id, NULL) == -1 ||
	    rename(from, to) == -1) {
		if (err[0] == '\0')
			(void)util_snprintf(err, errlen, "%s: %s", id,
			    strerror(errno));
		spool_entry_close(&e);
		return -1;
	}
	if (spool_path(from, sizeof(from), s, "failed", id, ".state") == 0)
		(void)unlink(from);
	if (spool_path(to, sizeof(to), s, "queue", NULL, NULL) == 0)
		(void)util_fsync_dir(to);
	spool_entry_close(&e);
	return 0;
}

int
spool_remove(struct spool *s, const char *id, char *err, size_t errlen)
{
	struct spool_entry e;
	char path[4096];

	err[0] = '\0';
	switch (spool_entry_open(s, id, &e, err, errlen)) {
	case SPOOL_OPEN_OK:
		if (spool_entry_done(s, &e, err, errlen) == -1) {
			spool_entry_close(&e);
			return -1;
		}
		spool_entry_close(&e);
		return 0;
	case SPOOL_OPEN_BUSY:
		errno = EBUSY;
		(void)util_snprintf(err, errlen, "%s is being delivered right "
		    "now", id);
		return -1;
	case SPOOL_OPEN_GONE:
		break;
	default:
		return -1;
	}
	if (spool_path(path, sizeof(path), s, "failed", id, NULL) == -1 ||
	    unlink(path) == -1) {
		if (errno == ENOENT)
			(void)util_snprintf(err, errlen, "no message %s", id);
		else
			(void)util_snprintf(err, errlen, "%s: %s", path,
			    strerror(errno));
		return -1;
	}
	if (spool_path(path, sizeof(path), s, "failed", id, ".state") == 0)
		(void)unlink(path);
	return 0;
}

int
spool_quarantine(struct spool *s, const char *name)
{
	char from[4096], to[4096];

	if (spool_path(from, sizeof(from), s, "queue", name, NULL) == -1 ||
	    spool_path(to, sizeof(to), s, "corrupt", name, NULL) == -1)
		return -1;
	return rename(from, to);
}

static int
spool_cmp_ids(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int
spool_list(struct spool *s, char ***out, char *err, size_t errlen)
{
	return spool_list_dir(s, "queue", out, err, errlen);
}

int
spool_list_dir(struct spool *s, const char *dir, char ***out, char *err,
    size_t errlen)
{
	char path[4096], name[SPOOL_ID_LEN + 1];
	struct dirent *d;
	char **ids = NULL, **states = NULL;
	int n = 0, nstates = 0;
	DIR *dp;

	if (spool_path(path, sizeof(path), s, dir, NULL, NULL) == -1 ||
	    (dp = opendir(path)) == NULL) {
		(void)util_snprintf(err, errlen, "%s: %s", path,
		    strerror(errno));
		return -1;
	}
	while ((d = readdir(dp)) != NULL) {
		size_t len = strlen(d->d_name);

		if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
			continue;
		if (len == SPOOL_ID_LEN + 6 &&
		    strcmp(d->d_name + SPOOL_ID_LEN, ".state") == 0) {
			memcpy(name, d->d_name, SPOOL_ID_LEN);
			name[SPOOL_ID_LEN] = '\0';
			if (spool_is_id(name)) {
				if (s->hint_states) {
					states = xreallocarray(states,
					    (size_t)nstates + 1,
					    sizeof(*states));
					states[nstates++] = xstrdup(name);
				}
				continue;
			}
		}
		if (!spool_is_id(d->d_name)) {
			if (strcmp(dir, "queue") == 0) {
				char shown[64];

				util_sanitize(shown, sizeof(shown), d->d_name,
				    strlen(d->d_name));
				log_warnx("queue/%s: not a queue ID; moved to "
				    "corrupt/", shown);
				(void)spool_quarantine(s, d->d_name);
			}
			continue;
		}
		ids = xreallocarray(ids, (size_t)n + 1, sizeof(*ids));
		ids[n++] = xstrdup(d->d_name);
	}
	(void)closedir(dp);
	if (n > 1)
		qsort(ids, (size_t)n, sizeof(*ids), spool_cmp_ids);
	if (s->hint_states) {
		/* Which of them have a state file: no open() to find out. */
		spool_free_ids(s->states, s->nstates);
		if (nstates > 1)
			qsort(states, (size_t)nstates, sizeof(*states),
			    spool_cmp_ids);
		s->states = states;
		s->nstates = nstates;
		s->states_dir = strcmp(dir, "queue") == 0 ? "queue" : "failed";
	}
	*out = ids;
	return n;
}

void
spool_free_ids(char **ids, int n)
{
	int i;

	for (i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

int
spool_waiter_create(struct spool *s, const char *id)
{
	char path[4096];
	int fd;

	if (spool_path(path, sizeof(path), s, "tmp", id, ".wait") == -1 ||
	    (fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
	    0600)) == -1)
		return -1;
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		(void)close(fd);
		return -1;
	}
	return fd;
}

void
spool_waiter_remove(struct spool *s, const char *id, int fd)
{
	char path[4096];

	if (fd == -1)
		return;
	if (spool_path(path, sizeof(path), s, "tmp", id, ".wait") == 0)
		(void)unlink(path);
	(void)close(fd);
}

int
spool_waiter_present(struct spool *s, const char *id)
{
	char path[4096];
	int fd, present;

	if (spool_path(path, sizeof(path), s, "tmp", id, ".wait") == -1 ||
	    (fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) == -1)
		return 0;
	/* Lockable means its waiter is gone. */
	present = flock(fd, LOCK_SH | LOCK_NB) == -1 && errno == EWOULDBLOCK;
	(void)close(fd);
	return present;
}

int
spool_lock_runner(struct spool *s, int *fdp, char *err, size_t errlen)
{
	char path[4096];
	int fd;

	if (util_snprintf(path, sizeof(path), "%s/lock", s->dir) == -1 ||
	    (fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
	    0600)) == -1) {
		(void)util_snprintf(err, errlen, "%s/lock: %s", s->dir,
		    strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		int busy = errno == EWOULDBLOCK;

		if (!busy)
			(void)util_snprintf(err, errlen, "%s: %s", path,
			    strerror(errno));
		(void)close(fd);
		return busy ? 0 : -1;
	}
	*fdp = fd;
	return 1;
}
