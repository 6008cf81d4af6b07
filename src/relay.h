/*
 * relay.h -- one SMTP session with the smarthost, through libESMTP.
 *
 * relay.c is the only file that includes libesmtp.h.  A session carries
 * any number of messages over one connection, one TLS handshake and one
 * AUTH.  The caller passes messages as spool byte ranges and gets back,
 * per message and per recipient, the relay's replies; it decides what
 * they mean for the queue (deliver.c).
 */
#ifndef RELAYQ_RELAY_H
#define RELAYQ_RELAY_H

#include <stddef.h>
#include <sys/types.h>

#define RELAY_TEXT_MAX 256

struct config;

struct relay_rcpt {
	const char	*addr;
	/* Out: the RCPT reply if it was not 2xx, else the reply to the
	 * end of DATA (0: never reached). */
	int		 code;
	char		 text[RELAY_TEXT_MAX];
	int		 at_rcpt;	/* code is the RCPT reply */
};

struct relay_msg {
	const char	*id;		/* queue id, for the transcript */
	int		 fd;		/* spool file */
	off_t		 data_off;
	size_t		 data_len;
	const char	*head;		/* sent before the data (DKIM), or NULL */
	size_t		 head_len;
	const char	*sender;	/* "" for the null sender */
	int		 eightbit;	/* BODY=8BITMIME when offered */
	const char	*notify;	/* DSN requests, or NULL */
	const char	*ret;
	const char	*envid;
	struct relay_rcpt *rcpts;
	size_t		 nrcpts;
	/* Out. */
	int		 mail_code;	/* reply to MAIL FROM, 0: not sent */
	char		 mail_text[RELAY_TEXT_MAX];
	int		 data_code;	/* reply after the final dot */
	char		 data_text[RELAY_TEXT_MAX];
	int		 data_sent;	/* all data went out (then the dot) */
	int		 read_error;	/* the spool could not be read */
	int		 after_idle;	/* added to a connection that idled */
	/* Private to relay.c. */
	size_t		 pos;
	char		*chunk;
	void		*state;
	size_t		 index;
	void		*handle;	/* libESMTP's message */
};

enum relay_failure {
	RELAY_FAIL_NONE = 0,
	RELAY_FAIL_CONNECT,	/* could not reach the relay */
	RELAY_FAIL_TLS,		/* no STARTTLS, handshake or verification */
	RELAY_FAIL_AUTH,	/* credentials refused: defer everything */
	RELAY_FAIL_PROTOCOL	/* dropped, timed out, or nonsense */
};

struct relay_session {
	enum relay_failure failure;
	char		 reason[512];	/* sanitised, for logs and stderr */
	int		 authenticated;
	int		 interrupted;	/* the pacer said stop */
};

/*
 * Hooks into a running session.  wait() is called before the first
 * message and after each final reply, before the next (-1: stop the
 * session there); sent() when a message got its final reply; note() with
 * every MAIL, RCPT and final reply ("451 4.7.1 ..."); feed(), when the
 * last message of the session is done, may return one more message to
 * send on the same connection (NULL: none).  Any hook may be NULL.
 */
struct relay_pacer {
	int		(*wait)(void *arg);
	void		(*sent)(void *arg);
	void		(*note)(void *arg, const char *reply);
	struct relay_msg *(*feed)(void *arg);
	/* A message got its final reply: its outcome fields are filled in
	 * already, so it can be settled before the session goes on. */
	void		(*done)(void *arg, struct relay_msg *);
	/* Nothing left to send: may block until there may be (1: ask
	 * feed() again) or the connection should close (0). */
	int		(*idle)(void *arg);
	void		*arg;
};

/*
 * Delivers msgs in one session.  Never fails as a whole: a session-level
 * failure is reported in out->failure, message and recipient outcomes in
 * msgs.  user/password: the account (NULL user: no AUTH, tls = none
 * only).  verbose prints the SMTP
 * dialogue on stderr with the AUTH exchange hidden.  pacer may be NULL.
 */
void	relay_deliver(const struct config *cfg, const char *user,
	    const char *password, struct relay_msg **msgs, size_t n,
	    int verbose, const struct relay_pacer *pacer,
	    struct relay_session *out);

#endif
