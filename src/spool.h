/*
 * spool.h -- the durable queue on disk.
 *
 * Layout under [queue] dir:
 *   tmp/            files being written; never read by the runner
 *   queue/ID        committed messages (immutable once renamed here)
 *   queue/ID.state  delivery state: attempts, next try, per recipient
 *   failed/ID[.state]  permanently failed, kept for inspection
 *   corrupt/        foreign or damaged files, moved aside, never sent
 *   lock            the queue runner's flock(2)
 * ID is 20 lowercase hex digits: 14 of microseconds since the epoch, 6
 * random, so IDs sort by arrival.  spool.c's opening comment documents the file format.
 */
#ifndef RELAYQ_SPOOL_H
#define RELAYQ_SPOOL_H

#include <stddef.h>
#include <sys/types.h>

#include "address.h"

#define SPOOL_ID_LEN	20
#define SPOOL_TEXT_MAX	256	/* stored reply texts, sanitised */

enum spool_rcpt_status {
	SPOOL_RCPT_PENDING = 0,
	SPOOL_RCPT_DONE,
	SPOOL_RCPT_FAILED
};

struct spool_rcpt_state {
	enum spool_rcpt_status	status;
	int			code;
	char			text[SPOOL_TEXT_MAX];
	int			reported;	/* failed, and the sender told */
	int			at_rcpt;	/* refused at RCPT, not at DATA */
};

/* What the submitter asked of the relay's DSNs (-N, -R, -V); NULL: unset. */
struct spool_dsn {
	const char		*notify;	/* never | success,failure,delay */
	const char		*ret;		/* full | hdrs */
	const char		*envid;
};

struct spool_entry {
	char			 id[SPOOL_ID_LEN + 1];
	int			 fd;		/* open and flock()ed */
	long long		 arrival;
	unsigned long		 uid;
	char			*sender;	/* "" for the null sender */
	struct addr_list	 rcpts;
	int			 eightbit;
	char			*notify;	/* -N, -R, -V, or NULL */
	char			*ret;
	char			*envid;
	off_t			 data_off;
	size_t			 data_len;
	/* Mutable state, from ID.state. */
	unsigned long		 attempts;
	long long		 next_try;
	char			 last[SPOOL_TEXT_MAX];
	struct spool_rcpt_state	*rstate;	/* one per rcpts.v[] */
	/* DKIM-Signature field(s) made on the first attempt, sent in front
	 * of the data on every attempt; NULL: none (yet). */
	char			*dkim;
	int			 tried;		/* this run made an attempt */
};

struct spool_writer {
	int		 fd;
	char		 id[SPOOL_ID_LEN + 1];
	char		 tmppath[4096];
	off_t		 size_off;	/* where the size field is */
	off_t		 body_off;	/* where the body type field is */
	off_t		 data_off;
	off_t		 pos;		/* file offset of buf[0] */
	size_t		 len;
	int		 failed;
	int		 saved_errno;
	char		 buf[65536];
};

struct spool {
	char	*dir;
	/* A listing for display (queue list) may set hint_states: then
	 * spool_list_dir() notes which IDs have a state file, and peeking
	 * at an entry of that directory opens none for the others. */
	int	 hint_states;
	char	**states;
	int	 nstates;
	const char *states_dir;
};

/*
 * Opens the spool, creating its directories when missing (mode 0700).
 * Returns 0, or -1 with err set.
 */
int	spool_open(struct spool *, const char *dir, char *err, size_t errlen);
void	spool_close(struct spool *);

/*
 * Starts a new message in tmp/ and writes its envelope.  Returns 0, or
 * -1 with err and errno set (and nothing left behind).
 */
int	spool_create(struct spool *, struct spool_writer *, long long arrival,
	    const char *sender, const struct addr_list *rcpts,
	    const struct spool_dsn *dsn, char *err, size_t errlen);
/*
 * Who submitted a message, when the runner spools it for someone else
 * (a maildrop file): their uid, and the ID to use (NULL: a new one).
 * With an ID that is already queued or failed, spool_create_as fails
 * with errno EEXIST.
 */
struct spool_origin {
	unsigned long	 uid;
	const char	*id;
};
int	spool_create_as(struct spool *, struct spool_writer *,
	    const struct spool_origin *, long long arrival,
	    const char *sender, const struct addr_list *rcpts,
	    const struct spool_dsn *dsn, char *err, size_t errlen);
/* message_sink for the message data. */
int	spool_write(void *writer, const char *p, size_t n);
/*
 * Finishes the file (size, body type, END marker), fsyncs it, links it
 * into queue/ and fsyncs the directory: only then is the message
 * accepted.  With lock, *e is the open entry, locked before it became
 * visible; without, e->fd is -1 and only the id and sizes are set.
 * Returns 0, or -1 with err and errno set and the temporary file removed.
 */
int	spool_commit(struct spool *, struct spool_writer *, int eightbit,
	    int lock, struct spool_entry *e, char *err, size_t errlen);
/* Removes an unfinished message.  Safe to call twice. */
void	spool_abort(struct spool_writer *);
/* For a fatal exit: removes the file being written, if any. */
void	spool_abort_current(void);

enum spool_open_result {
	SPOOL_OPEN_OK,
	SPOOL_OPEN_BUSY,	/* another process holds it */
	SPOOL_OPEN_GONE,	/* delivered or moved meanwhile */
	SPOOL_OPEN_BAD,		/* not a valid spool file: quarantine */
	SPOOL_OPEN_ERROR	/* I/O error: leave it alone */
};

/* Opens and locks queue/ID and reads its envelope and state. */
enum spool_open_result spool_entry_open(struct spool *, const char *id,
	    struct spool_entry *, char *err, size_t errlen);
/*
 * Reads queue/ID or failed/ID (dir "queue" or "failed") without locking,
 * for listings.  Same results as spool_entry_open.
 */
enum spool_open_result spool_entry_peek(struct spool *, const char *dir,
	    const char *id, struct spool_entry *, char *err, size_t errlen);
void	spool_entry_close(struct spool_entry *);

/* Writes ID.state atomically.  0, or -1 with err. */
int	spool_entry_save(struct spool *, struct spool_entry *, char *err,
	    size_t errlen);
/* Delivered to everyone: removes the message.  0, or -1 with err. */
int	spool_entry_done(struct spool *, struct spool_entry *, char *err,
	    size_t errlen);
/* Moves the message and its state to failed/.  0, or -1 with err. */
int	spool_entry_fail(struct spool *, struct spool_entry *, char *err,
	    size_t errlen);
/*
 * Moves failed/ID back into queue/ with its failed recipients pending
 * again.  0, or -1 with err (errno ENOENT: no such message).
 */
int	spool_unfail(struct spool *, const char *id, char *err, size_t errlen);
/*
 * Removes a message from queue/ (taking its lock) or failed/.
 * 0, -1 with err (errno ENOENT: no such message, EBUSY: being sent).
 */
int	spool_remove(struct spool *, const char *id, char *err, size_t errlen);

/* Moves queue/name aside to corrupt/.  0, or -1. */
int	spool_quarantine(struct spool *, const char *name);

/* A new message ID.  0, or -1 with errno. */
int	spool_new_id(char id[SPOOL_ID_LEN + 1]);

/* 1 if name is a message ID (20 lowercase hex digits). */
int	spool_is_id(const char *name);

/*
 * Lists the IDs in queue/ (or failed/ with dir "failed"), oldest first;
 * in queue/ foreign names are quarantined.  Returns the count (ids to
 * free with spool_free_ids) or -1 with err.
 */
int	spool_list(struct spool *, char ***ids, char *err, size_t errlen);
int	spool_list_dir(struct spool *, const char *dir, char ***ids,
	    char *err, size_t errlen);
void	spool_free_ids(char **, int);

/*
 * A submitter waiting for the runner to deliver its message holds a lock
 * on tmp/ID.wait, so that the runner leaves telling the sender to the
 * exit status.  create returns the descriptor (or -1), remove undoes it.
 */
int	spool_waiter_create(struct spool *, const char *id);
void	spool_waiter_remove(struct spool *, const char *id, int fd);
int	spool_waiter_present(struct spool *, const char *id);

/*
 * <spool>/sent holds when the relay last took a message, for monitoring
 * (relayq queue check).  note writes it (best effort, not synced);
 * last returns it, or 0 if never.
 */
void	spool_note_sent(struct spool *, long long when);
long long spool_last_sent(struct spool *);

/*
 * 0 if a file can be created in tmp/ (a probe, removed at once), -1
 * with err when the spool is read-only or not ours to write.
 */
int	spool_writable(struct spool *, char *err, size_t errlen);
/* Removes files in tmp/ older than max_age seconds (killed writers). */
void	spool_purge_tmp(struct spool *, long long max_age);

/* Takes the runner lock without waiting: 1 taken, 0 busy, -1 error. */
int	spool_lock_runner(struct spool *, int *fd, char *err, size_t errlen);

#endif
