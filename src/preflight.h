/*
 * preflight.h -- relayq check's relay probe: connect, EHLO, STARTTLS
 * with verification, AUTH, then per sender domain MAIL FROM and RSET,
 * then QUIT.  No DATA, so nothing sent is a message.
 *
 * It is a small SMTP client of its own because libESMTP can only send
 * messages: it has no way to stop after MAIL FROM.  The TLS policy is
 * tls.c's, the same as for delivery.
 */
#ifndef RELAYQ_PREFLIGHT_H
#define RELAYQ_PREFLIGHT_H

#include <stddef.h>

struct config;

enum preflight_status {
	PREFLIGHT_PASS,
	PREFLIGHT_FAIL,
	PREFLIGHT_SKIP		/* not reached after an earlier failure */
};

struct preflight_step {
	const char		*step;	/* connect ehlo starttls tls auth mail rset quit */
	const char		*domain;	/* mail and rset, else NULL */
	enum preflight_status	 status;
	char			 reply[512];	/* the relay's reply, sanitised */
	char			 detail[512];
};

struct preflight {
	const char		*user;	/* the account of this session */
	struct preflight_step	*steps;
	size_t			 nsteps;
};

/*
 * Probes the relay with an account (acct NULL: [relay] user; the
 * password is loaded here) for the given domains.  Fills p; returns 1
 * if every step passed, else 0.
 */
struct config_account;
int	preflight_run(struct config *, struct config_account *acct,
	    char *const *domains, size_t ndomains, struct preflight *p);
void	preflight_free(struct preflight *);

#endif
