/*
 * maildrop.h -- submissions from callers who may not read the
 * configuration or the queue (the set-group-ID path).
 *
 * Such a caller can only create files in <spool>/maildrop (mode 1730,
 * owned by the service user, group the submission group): a file it
 * cannot list, and others cannot read.  The submitter writes the raw
 * envelope it was given and the message, fsyncs, and marks the file
 * complete by making it readable to the service (mode 0600 -> 0604);
 * only then does it exit 0.  The queue runner, as the service user,
 * checks each complete file (regular, one link, not a symlink, owner
 * as recorded, size, format), runs it through the same submission code
 * as a direct caller -- aliases, rewriting, header fixes -- into queue/
 * under the file's own ID, and removes it.  Anything else goes to
 * corrupt/ with a log line.
 *
 * The file:
 *	relayq-drop 1
 *	uid 1000
 *	arrival 1764133000
 *	sender alice			-f / MAIL FROM as given (optional)
 *	fullname Alice Liddell		-F (optional)
 *	rcpt bob@example.com		each recipient argument as given
 *	headers				-t: recipients from the headers
 *	body8bit			-B 8BITMIME
 *	notify / ret / envid		-N, -R, -V
 *	(empty line)
 *	the message as read (end-of-input rules applied, dots unstuffed)
 */
#ifndef RELAYQ_MAILDROP_H
#define RELAYQ_MAILDROP_H

#include <stddef.h>

#include "address.h"
#include "linereader.h"
#include "message.h"
#include "spool.h"

#define MAILDROP_SUBDIR	"maildrop"
#define MAILDROP_MAX	(1024LL * 1024 * 1024)	/* octets in one file */

struct maildrop_envelope {
	const char		*sender;	/* raw, or NULL */
	const char		*fullname;
	const struct addr_list	*rcpts;		/* raw arguments */
	int			 read_rcpts;	/* -t */
	int			 body8bit;
	const char		*notify;
	const char		*ret;
	const char		*envid;
};

/*
 * Writes one submission into spooldir/maildrop.  keep_group: the
 * submission group is still needed afterwards (-bs: more messages may
 * follow); otherwise it is dropped as soon as the file exists, before
 * the message is read.  id gets the file's ID.  Returns 0 (the file is
 * durable and complete), or a sysexits code with err set.
 */
int	maildrop_write(const char *spooldir, const struct maildrop_envelope *,
	    struct linereader *, enum message_end, int keep_group,
	    char id[SPOOL_ID_LEN + 1], char *err, size_t errlen);

/* Gives up the set-group-ID group for good.  0, or -1. */
int	maildrop_drop_group(void);

struct config;

/* 1 if the maildrop holds any file (finished or not). */
int	maildrop_waiting(struct spool *);

/*
 * The runner's side: spools every complete maildrop file, quarantines
 * the bad ones.  Returns the number of messages queued.
 */
size_t	maildrop_pickup(struct config *, struct spool *);

#endif
