/*
 * maildrop.c -- submissions from callers who may not read the
 * configuration or the queue (see maildrop.h for the model and format).
 */
#define _GNU_SOURCE	/* setresgid(2): the saved set-group-ID must go too */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "cli.h"
#include "config.h"
#include "log.h"
#include "maildrop.h"
#include "submit.h"
#include "util.h"

#define MAILDROP_MAGIC	"relayq-drop 1"
#define MAILDROP_STALE	(24 * 3600)	/* an unfinished file is abandoned */
#define MAILDROP_LINE	1024		/* envelope line */

int
maildrop_drop_group(void)
{
	gid_t g = getgid();

	if (setresgid(g, g, g) == -1)
		return -1;
	return getegid() == g ? 0 : -1;
}

/* Flushes b to fd when full (or always with force).  0, or -1. */
static int
maildrop_flush(int fd, struct buf *b, int force)
{
	if (b->len == 0 || (!force && b->len < 65536))
		return 0;
	if (util_write_all(fd, b->data, b->len) == -1)
		return -1;
	buf_reset(b);
	return 0;
}

static int
maildrop_status(int e)
{
	return e == ENOSPC || e == EDQUOT || e == EFBIG || e == EIO ?
	    EX_TEMPFAIL : EX_CANTCREAT;
}

int
maildrop_write(const char *spooldir, const struct maildrop_envelope *env,
    struct linereader *lr, enum message_end end, int keep_group,
    char id[SPOOL_ID_LEN + 1], char *err, size_t errlen)
{
	struct message m;
	struct buf b;
	char dir[4096];
	const char *p;
	size_t n, i;
	long long total = 0;
	int dfd, fd = -1, tries, complete = 1, r, rc = EX_SOFTWARE, saved;

	if (util_snprintf(dir, sizeof(dir), "%s/%s", spooldir,
	    MAILDROP_SUBDIR) == -1) {
		(void)util_snprintf(err, errlen, "spool path too long");
		return EX_SOFTWARE;
	}
	/* O_PATH: the group may search the directory, never list it. */
	if ((dfd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC)) == -1) {
		(void)util_snprintf(err, errlen, "%s: %s", dir,
		    strerror(errno));
		return EX_CANTCREAT;
	}
	for (tries = 0; tries < 10 && fd == -1; tries++) {
		if (spool_new_id(id) == -1)
			break;
		fd = openat(dfd, id, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0600);
		if (fd == -1 && errno != EEXIST)
			break;
	}
	if (fd == -1) {
		(void)util_snprintf(err, errlen, "cannot create a file in %s: "
		    "%s", dir, strerror(errno));
		rc = maildrop_status(errno);
		(void)close(dfd);
		return rc;
	}
	/* The group was for creating the file: reading needs none. */
	if (!keep_group && maildrop_drop_group() == -1) {
		(void)util_snprintf(err, errlen, "cannot give up the "
		    "submission group: %s", strerror(errno));
		rc = EX_OSERR;
		goto fail;
	}
	buf_init(&b);
	buf_printf(&b, "%s\nuid %lu\narrival %lld\n", MAILDROP_MAGIC,
	    (unsigned long)getuid(), util_now());
	if (env->sender != NULL)
		buf_printf(&b, "sender %s\n", env->sender);
	if (env->fullname != NULL)
		buf_printf(&b, "fullname %s\n", env->fullname);
	for (i = 0; i < env->rcpts->n; i++)
		buf_printf(&b, "rcpt %s\n", env->rcpts->v[i]);
	if (env->read_rcpts)
		buf_puts(&b, "headers\n");
	if (env->body8bit)
		buf_puts(&b, "body8bit\n");
	if (env->notify != NULL)
		buf_printf(&b, "notify %s\n", env->notify);
	if (env->ret != NULL)
		buf_printf(&b, "ret %s\n", env->ret);
	if (env->envid != NULL)
		buf_printf(&b, "envid %s\n", env->envid);
	buf_puts(&b, "\n");

	message_init(&m, end);
	while ((r = message_next(&m, lr, complete, &p, &n, &complete)) == 1) {
		if (memchr(p, '\0', n) != NULL) {
			(void)util_snprintf(err, errlen, "the message contains "
			    "a NUL byte");
			rc = EX_DATAERR;
			break;
		}
		if ((total += (long long)n) > MAILDROP_MAX) {
			(void)util_snprintf(err, errlen, "the message is larger "
			    "than %lld octets", MAILDROP_MAX);
			rc = EX_DATAERR;
			break;
		}
		buf_append(&b, p, n);
		if (maildrop_flush(fd, &b, 0) == -1) {
			r = -MESSAGE_EWRITE;
			break;
		}
	}
	saved = errno;
	/* In a dialogue the client goes on after the final dot. */
	if (rc == EX_DATAERR && end == MESSAGE_END_SMTP)
		message_drain(&m, lr);
	message_free(&m);
	if (rc == EX_SOFTWARE && r == 0) {
		/* Durable first, then complete: the runner reads only
		 * files others may read. */
		if (maildrop_flush(fd, &b, 1) == -1 || util_fsync_fd(fd) ==
		    -1 || fchmod(fd, 0604) == -1 ||
		    syscall(SYS_syncfs, fd) == -1) {
			(void)util_snprintf(err, errlen, "%s/%s: %s", dir, id,
			    strerror(errno));
			rc = maildrop_status(errno);
		} else
			rc = 0;
	} else if (rc == EX_SOFTWARE && r == -MESSAGE_EWRITE) {
		(void)util_snprintf(err, errlen, "%s/%s: %s", dir, id,
		    strerror(saved));
		rc = maildrop_status(saved);
	} else if (rc == EX_SOFTWARE) {
		(void)util_snprintf(err, errlen, r == -MESSAGE_EEOF ? "input "
		    "ended inside the message" : "reading the message: %s",
		    strerror(saved));
		rc = EX_TEMPFAIL;
	}
	buf_free(&b);
	if (rc == 0) {
		if (close(fd) == -1) {
			(void)util_snprintf(err, errlen, "%s/%s: %s", dir, id,
			    strerror(errno));
			rc = maildrop_status(errno);
			fd = -1;
			goto fail;
		}
		(void)close(dfd);
		return 0;
	}
fail:
	if (fd != -1)
		(void)close(fd);
	/* Without the group this fails; the runner removes the unfinished
	 * file a day later. */
	(void)unlinkat(dfd, id, 0);
	(void)close(dfd);
	return rc;
}

/* ---- the runner's side -------------------------------------------- */

struct maildrop_file {
	unsigned long	 uid;
	long long	 arrival;
	char		*sender;
	char		*fullname;
	struct addr_list rcpts;
	int		 read_rcpts;
	int		 body8bit;
	char		*notify;
	char		*ret;
	char		*envid;
};

static void
maildrop_file_free(struct maildrop_file *f)
{
	free(f->sender);
	free(f->fullname);
	addr_list_free(&f->rcpts);
	free(f->notify);
	free(f->ret);
	free(f->envid);
}

/* "name value" or "name" alone: the value, else NULL. */
static const char *
maildrop_field(const char *line, const char *name)
{
	size_t n = strlen(name);

	if (strncmp(line, name, n) != 0)
		return NULL;
	if (line[n] == '\0')
		return line + n;
	return line[n] == ' ' ? line + n + 1 : NULL;
}

/* A -N, -R or -V value as the spool takes it: 1 to 100 visible octets. */
static int
maildrop_dsn_value(const char *v)
{
	size_t n = strlen(v), i;

	if (n == 0 || n > 100)
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
			return 0;
	return 1;
}

/* Reads the envelope up to its empty line.  0, or -1 with err. */
static int
maildrop_parse(struct linereader *lr, struct maildrop_file *f, char *err,
    size_t errlen)
{
	struct buf line;
	const char *p, *v;
	size_t n, lineno = 0;
	unsigned long ul;
	int complete, r, rc = -1;

	buf_init(&line);
	for (;;) {
		buf_reset(&line);
		do {
			if ((r = linereader_next(lr, &p, &n, &complete)) != 1)
				goto bad;
			if (line.len + n > MAILDROP_LINE)
				goto bad;
			buf_append(&line, p, n);
		} while (!complete);
		line.data[--line.len] = '\0';	/* the LF */
		if (memchr(line.data, '\0', line.len) != NULL ||
		    memchr(line.data, '\r', line.len) != NULL)
			goto bad;
		if (++lineno == 1) {
			if (strcmp(line.data, MAILDROP_MAGIC) != 0)
				goto bad;
			continue;
		}
		if (line.len == 0)
			break;
		if ((v = maildrop_field(line.data, "uid")) != NULL) {
			if (util_parse_ulong(v, 0, 0xffffffffUL, &f->uid) == -1)
				goto bad;
		} else if ((v = maildrop_field(line.data, "arrival")) !=
		    NULL) {
			if (util_parse_ulong(v, 0, 1UL << 40, &ul) == -1)
				goto bad;
			f->arrival = (long long)ul;
		} else if ((v = maildrop_field(line.data, "sender")) != NULL &&
		    f->sender == NULL)
			f->sender = xstrdup(v);
		else if ((v = maildrop_field(line.data, "fullname")) != NULL &&
		    f->fullname == NULL)
			f->fullname = xstrdup(v);
		else if ((v = maildrop_field(line.data, "rcpt")) != NULL &&
		    *v != '\0' && f->rcpts.n < ADDR_MAX_COUNT)
			addr_list_add(&f->rcpts, v);
		else if (strcmp(line.data, "headers") == 0)
			f->read_rcpts = 1;
		else if (strcmp(line.data, "body8bit") == 0)
			f->body8bit = 1;
		else if ((v = maildrop_field(line.data, "notify")) != NULL &&
		    f->notify == NULL && maildrop_dsn_value(v))
			f->notify = xstrdup(v);
		else if ((v = maildrop_field(line.data, "ret")) != NULL &&
		    f->ret == NULL && maildrop_dsn_value(v))
			f->ret = xstrdup(v);
		else if ((v = maildrop_field(line.data, "envid")) != NULL &&
		    f->envid == NULL && maildrop_dsn_value(v))
			f->envid = xstrdup(v);
		else
			goto bad;
	}
	rc = 0;
	goto out;
bad:
	(void)util_snprintf(err, errlen, "bad envelope line %zu", lineno + 1);
out:
	buf_free(&line);
	return rc;
}

/* Moves a bad file aside; the log says why.  Never sent. */
static void
maildrop_quarantine(struct spool *sp, int dfd, const char *name,
    const char *why)
{
	char to[4096], shown[64];

	util_sanitize(shown, sizeof(shown), name, strlen(name));
	/* Never over an earlier one of the same name. */
	if (util_snprintf(to, sizeof(to), "%s/corrupt/drop-%s-%lld", sp->dir,
	    shown, util_monotonic_ms()) == -1 ||
	    syscall(SYS_renameat2, dfd, name, AT_FDCWD, to,
	    RENAME_NOREPLACE) == -1) {
		log_warnx("maildrop/%s: %s; cannot move it aside (%s), "
		    "removing it", shown, why, strerror(errno));
		(void)unlinkat(dfd, name, 0);
		return;
	}
	log_warnx("maildrop/%s: %s; moved to corrupt/", shown, why);
}

/* Already queued under its ID: a pickup that died before the unlink. */
static int
maildrop_queued(struct spool *sp, const char *id)
{
	char path[4096];
	struct stat st;

	return (util_snprintf(path, sizeof(path), "%s/queue/%s", sp->dir,
	    id) == 0 && lstat(path, &st) == 0) ||
	    (util_snprintf(path, sizeof(path), "%s/failed/%s", sp->dir,
	    id) == 0 && lstat(path, &st) == 0);
}

/*
 * The submitter exited 0 long ago: tell them, by mail to their login
 * resolved like any local recipient, that the message was refused and
 * why.  From the null sender, so it can never bounce back.
 */
static void
maildrop_notify(struct config *cfg, const struct maildrop_file *f,
    const char *name, const char *why)
{
	struct addr_list rcpts;
	struct linereader *lr;
	struct cli_opts o;
	struct submit s;
	struct passwd *pw;
	struct buf b;
	char err[512], id[SPOOL_ID_LEN + 1], date[64], shown[512];
	int fd = -1, rc;

	memset(&o, 0, sizeof(o));
	o.delivery = CLI_DELIVERY_QUEUE;
	addr_list_init(&rcpts);
	buf_init(&b);
	if (submit_init(&s, cfg, &o, err, sizeof(err)) != 0)
		goto out;
	free(s.login);
	pw = getpwuid((uid_t)f->uid);
	s.login = pw != NULL ? xstrdup(pw->pw_name) :
	    util_asprintf("uid%lu", f->uid);
	if (submit_recipients(&s, s.login, &rcpts, err, sizeof(err)) != 0) {
		log_warnx("maildrop/%s: cannot tell uid %lu: %s", name, f->uid,
		    err);
		goto done;
	}
	util_sanitize(shown, sizeof(shown), why, strlen(why));
	(void)message_format_date(f->arrival, date, sizeof(date));
	buf_printf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\n"
	    "To: <%s>\nSubject: Undelivered Mail: refused when it was "
	    "taken in\nAuto-Submitted: auto-replied\n\n"
	    "The message you submitted at %s (maildrop %s) was not\n"
	    "accepted for delivery, and nothing was sent:\n\n    %s\n\n"
	    "It was set aside for the administrator of this host.\n",
	    s.domain, rcpts.v[0], date, name, shown);
	if ((fd = memfd_create("relayq-notice", MFD_CLOEXEC)) == -1 ||
	    util_write_all(fd, b.data, b.len) == -1 ||
	    lseek(fd, 0, SEEK_SET) == -1) {
		log_warn("maildrop/%s: cannot write a notice", name);
		goto done;
	}
	lr = xmalloc(sizeof(*lr));
	linereader_init(lr, fd);
	rc = submit_message(&s, lr, MESSAGE_END_EOF, "", &rcpts, 0, id, err,
	    sizeof(err));
	free(lr);
	if (rc == 0)
		log_info("maildrop/%s: notice %s queued to <%s>", name, id,
		    rcpts.v[0]);
	else
		log_warnx("maildrop/%s: cannot queue a notice: %s", name, err);
done:
	submit_free(&s);
out:
	if (fd != -1)
		(void)close(fd);
	buf_free(&b);
	addr_list_free(&rcpts);
}

/*
 * Spools one maildrop file through the submission code, as its owner.
 * Returns 1 queued, 0 left for later or removed, -1 refused.
 */
static int
maildrop_take(struct config *cfg, struct spool *sp, int dfd,
    const char *name, int fd, const struct stat *st, char *err,
    size_t errlen)
{
	struct maildrop_file f;
	struct linereader *lr;
	struct cli_opts o;
	struct submit s;
	struct addr_list rcpts;
	struct passwd *pw;
	char *sender = NULL, id[SPOOL_ID_LEN + 1];
	size_t i;
	int rc;

	memset(&f, 0, sizeof(f));
	addr_list_init(&f.rcpts);
	addr_list_init(&rcpts);
	lr = xmalloc(sizeof(*lr));
	linereader_init(lr, fd);
	if (maildrop_parse(lr, &f, err, errlen) == -1) {
		rc = -1;
		goto out;
	}
	if (f.uid != (unsigned long)st->st_uid) {
		(void)util_snprintf(err, errlen, "says uid %lu, but belongs to "
		    "uid %lu", f.uid, (unsigned long)st->st_uid);
		rc = -1;
		goto out;
	}
	memset(&o, 0, sizeof(o));
	o.fullname = f.fullname;
	o.dsn_notify = f.notify;
	o.dsn_ret = f.ret;
	o.dsn_envid = f.envid;
	o.body8bit = f.body8bit;
	o.delivery = CLI_DELIVERY_QUEUE;
	if ((rc = submit_init(&s, cfg, &o, err, errlen)) != 0) {
		submit_free(&s);
		rc = -1;
		goto out;
	}
	/* The submitter, not us: their login, uid and arrival time. */
	free(s.login);
	pw = getpwuid((uid_t)f.uid);
	s.login = pw != NULL ? xstrdup(pw->pw_name) :
	    util_asprintf("uid%lu", f.uid);
	s.origin.uid = f.uid;
	s.origin.id = name;
	s.arrival = f.arrival;
	rc = submit_sender(&s, f.sender, &sender, err, errlen);
	for (i = 0; rc == 0 && i < f.rcpts.n; i++)
		rc = submit_recipients(&s, f.rcpts.v[i], &rcpts, err, errlen);
	if (rc == 0)
		rc = submit_message(&s, lr, MESSAGE_END_EOF, sender, &rcpts,
		    f.read_rcpts, id, err, errlen);
	submit_free(&s);
	if (rc == 0)
		rc = 1;
	else if (maildrop_queued(sp, name))
		rc = 0;		/* queued before; the unlink was lost */
	else if (rc == EX_TEMPFAIL || rc == EX_CANTCREAT || rc == EX_OSERR ||
	    rc == EX_SOFTWARE) {
		rc = 0;		/* our trouble: try again later */
		name = NULL;
	} else {
		/* The message itself was refused (bad address, too big):
		 * what a direct submitter learns from the exit status. */
		maildrop_notify(cfg, &f, name, err);
		rc = -1;
	}
	if (name != NULL && rc >= 0 && unlinkat(dfd, name, 0) == -1)
		log_warn("maildrop/%s: cannot remove it", name);
out:
	free(sender);
	free(lr);
	addr_list_free(&rcpts);
	maildrop_file_free(&f);
	return rc;
}

int
maildrop_waiting(struct spool *sp)
{
	char dir[4096];
	struct dirent *de;
	DIR *d;
	int any = 0;

	if (util_snprintf(dir, sizeof(dir), "%s/%s", sp->dir,
	    MAILDROP_SUBDIR) == -1 || (d = opendir(dir)) == NULL)
		return 0;
	/* Only finished files: an abandoned one waits a day for removal. */
	while (!any && (de = readdir(d)) != NULL) {
		struct stat st;

		any = de->d_name[0] != '.' && fstatat(dirfd(d), de->d_name,
		    &st, AT_SYMLINK_NOFOLLOW) == 0 && (st.st_mode & S_IROTH);
	}
	(void)closedir(d);
	return any;
}

size_t
maildrop_pickup(struct config *cfg, struct spool *sp)
{
	char dir[4096], err[512];
	struct dirent *de;
	struct stat st;
	size_t queued = 0;
	DIR *d;
	int dfd, fd;

	if (util_snprintf(dir, sizeof(dir), "%s/%s", sp->dir,
	    MAILDROP_SUBDIR) == -1 || (d = opendir(dir)) == NULL)
		return 0;	/* no maildrop: nobody submits that way */
	dfd = dirfd(d);
	while ((de = readdir(d)) != NULL) {
		const char *name = de->d_name;
		int r;

		if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' &&
		    name[2] == '\0')))
			continue;
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1)
			continue;
		if (!spool_is_id(name) || !S_ISREG(st.st_mode) ||
		    st.st_nlink != 1) {
			maildrop_quarantine(sp, dfd, name, "not a regular file "
			    "with one link and a queue ID for a name");
			continue;
		}
		if (!(st.st_mode & S_IROTH)) {
			/* Still being written, or abandoned. */
			if (util_now() - (long long)st.st_mtime >
			    MAILDROP_STALE) {
				log_warnx("maildrop/%s: unfinished for a day "
				    "(uid %lu); removed", name,
				    (unsigned long)st.st_uid);
				(void)unlinkat(dfd, name, 0);
			}
			continue;
		}
		/* The message limit, and room for a big envelope. */
		if (st.st_size > MAILDROP_MAX + 64LL * 1024 * 1024) {
			maildrop_quarantine(sp, dfd, name, "too large");
			continue;
		}
		fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
		    O_CLOEXEC);
		if (fd == -1) {
			if (errno == ELOOP)
				maildrop_quarantine(sp, dfd, name,
				    "a symbolic link");
			else if (errno != ENOENT)
				log_warn("maildrop/%s", name);
			continue;
		}
		/* The file opened must be the file checked. */
		{
			struct stat st2;

			if (fstat(fd, &st2) == -1 || st2.st_ino != st.st_ino ||
			    st2.st_dev != st.st_dev || !S_ISREG(st2.st_mode) ||
			    st2.st_nlink != 1) {
				(void)close(fd);
				continue;
			}
		}
		err[0] = '\0';
		r = maildrop_take(cfg, sp, dfd, name, fd, &st, err,
		    sizeof(err));
		(void)close(fd);
		if (r == -1)
			maildrop_quarantine(sp, dfd, name, err);
		else if (r == 1)
			queued++;
	}
	(void)closedir(d);
	if (queued > 0 && util_fsync_dir(dir) == -1)
		log_warn("%s", dir);
	return queued;
}
