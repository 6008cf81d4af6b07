/*
 * submit.h -- accepting a message: envelope, spool, first delivery.
 *
 * Shared by the sendmail command line (stdin) and the -bs dialogue, so
 * that both take exactly the same path into the queue.
 */
#ifndef RELAYQ_SUBMIT_H
#define RELAYQ_SUBMIT_H

#include <stddef.h>

#include "address.h"
#include "linereader.h"
#include "message.h"
#include "config.h"
#include "spool.h"

struct cli_opts;

struct submit {
	struct config	*cfg;
	struct spool	 spool;
	int		 spool_open;
	char		*login;		/* from getuid(), never $USER */
	char		*domain;	/* qualifies bare names */
	char		 host[256];	/* this host's short name */
	char		*fqdn;		/* and its full one */
	const char	*fullname;	/* -F */
	enum config_delivery delivery;	/* foreground, background, queue */
	struct spool_dsn dsn;		/* -N, -R, -V */
	int		 body8bit;	/* -B 8BITMIME */
	int		 verbose;
	/* The last refusal was policy ([dkim] require), not the data. */
	int		 policy_refused;
	int		 too_big;	/* over [queue] max_size */
	/* Whose message, under which ID (maildrop pickup: the
	 * submitter's uid and file ID; else ours and a new one). */
	struct spool_origin origin;
	long long	 arrival;	/* 0: now */
};

/* Returns 0, or a sysexits code with err set. */
int	submit_init(struct submit *, struct config *, const struct cli_opts *,
	    char *err, size_t errlen);
void	submit_free(struct submit *);

/*
 * With cfg->drop (a caller who may not read the configuration) the
 * sender and recipients are only checked for safety and kept as given,
 * and submit_message() writes a maildrop file (maildrop.h): the queue
 * runner resolves and spools it.
 *
 * The envelope sender from a -f value or MAIL FROM (NULL: the default,
 * login@domain).  "" or "<>" is the null sender.  Values that are not
 * addresses fall back to the default (noted with -v).  Returns 0 with
 * *out allocated, or EX_DATAERR with err set for hostile values.
 */
int	submit_sender(struct submit *, const char *raw, char **out,
	    char *err, size_t errlen);

/*
 * Adds the recipients in one argument (a comma list allowed).  Local
 * ones (bare names, user@localhost, user@<this host>) become their
 * [aliases] entry, else [aliases] default, else user@[sender] domain when
 * that is set.  Returns 0, or EX_DATAERR / EX_NOUSER with err set.
 */
int	submit_recipients(struct submit *, const char *arg,
	    struct addr_list *out, char *err, size_t errlen);

/*
 * Reads a message, spools it durably, and (foreground) delivers it.
 * rcpts may be extended from the headers when read_rcpts (-t).
 * Returns 0 (queued or delivered), or a sysexits code with err set:
 * EX_DATAERR bad message, EX_NOUSER/EX_UNAVAILABLE refused by the relay
 * (the message then is in failed/), EX_CANTCREAT spool not writable,
 * EX_TEMPFAIL input unreadable or spool full (nothing queued).
 */
int	submit_message(struct submit *, struct linereader *,
	    enum message_end, const char *sender, struct addr_list *rcpts,
	    int read_rcpts, char *queue_id, char *err, size_t errlen);

/* The sendmail mode: argv recipients, message on stdin. */
int	submit_main(struct config *, const struct cli_opts *);

#endif
