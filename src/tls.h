/*
 * tls.h -- the OpenSSL client policy for the relay connection.
 *
 * One SSL_CTX per session: TLS 1.2 or newer, the peer chain verified
 * against the system store or [relay] ca_file, the configured host name
 * (or IP address) verified during the handshake, SNI sent, and the
 * optional SPKI pin checked.  Verification fails closed.
 */
#ifndef RELAYQ_TLS_H
#define RELAYQ_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

struct config;

/* Returns a new context, or NULL with err set. */
SSL_CTX	*tls_client_ctx(const struct config *, char *err, size_t errlen);

/* Why the last handshake's verification failed, or "" if it did not. */
const char *tls_verify_error(void);
void	tls_verify_reset(void);

/*
 * Checks the peer certificate of a finished handshake against the
 * configured name (the libesmtp name check looks at the DNS canonical
 * name instead).  1 matches, 0 not.
 */
int	tls_peer_matches(SSL *, const char *host);

/* The OpenSSL error queue as one line (and cleared), for messages. */
void	tls_error_string(char *buf, size_t len);

#endif
