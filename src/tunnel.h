/*
 * tunnel.h -- implicit TLS (port 465) for libESMTP, which lacks it.
 *
 * A thread connects to the relay, does the TLS handshake with our
 * verified SSL_CTX, and relays the plaintext to libESMTP over a one-shot
 * listener on 127.0.0.1.  It accepts exactly one connection, and only
 * one whose other end is a socket of this very process, so no other
 * local process can take the credentials' place.
 */
#ifndef RELAYQ_TUNNEL_H
#define RELAYQ_TUNNEL_H

#include <pthread.h>
#include <stddef.h>

#include <openssl/ssl.h>

struct config;

struct tunnel {
	unsigned		 local_port;
	int			 listen_fd;
	int			 local_fd;	/* accepted, or -1 */
	const struct config	*cfg;
	SSL_CTX			*ctx;
	pthread_t		 thread;
	pthread_mutex_t		 lock;
	int			 running;
	char			 error[256];
};

/* Starts the thread.  0, or -1 with err set. */
int	tunnel_start(struct tunnel *, const struct config *, SSL_CTX *,
	    char *err, size_t errlen);
/* Cuts the plaintext side (aborts the SMTP session). */
void	tunnel_cut(struct tunnel *);
/* Waits for the thread and releases everything.  Idempotent. */
void	tunnel_stop(struct tunnel *);
/* After tunnel_stop(): 1 with the reason if TLS or connecting failed. */
int	tunnel_failed(struct tunnel *, char *why, size_t len);

#endif
