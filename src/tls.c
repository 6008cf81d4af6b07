/*
 * tls.c -- the OpenSSL client policy for the relay connection.
 *
 * libesmtp hands us no SSL* before the handshake, so everything is set
 * on the SSL_CTX: the host name goes into the context's verify
 * parameters (SSL_new copies them), and SNI is added by an info
 * callback at handshake start.  The verify callback records the first
 * failure so that a deferral can say why, and checks the pin.
 */
#include <string.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "tls.h"
#include "util.h"

/* One relay connection at a time per process. */
static struct {
	char	host[256];
	int	host_is_ip;
	char	pin[128];
	char	verify_error[256];
} tls_state;

const char *
tls_verify_error(void)
{
	return tls_state.verify_error;
}

void
tls_verify_reset(void)
{
	tls_state.verify_error[0] = '\0';
}

void
tls_error_string(char *buf, size_t len)
{
	unsigned long e;
	char one[256];

	buf[0] = '\0';
	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, one, sizeof(one));
		if (buf[0] == '\0')
			(void)util_strlcpy(buf, one, len);
	}
	if (buf[0] == '\0')
		(void)util_strlcpy(buf, "unknown TLS error", len);
}

static int
tls_is_ip(const char *host)
{
	unsigned char a[16];

	return inet_pton(AF_INET, host, a) == 1 ||
	    inet_pton(AF_INET6, host, a) == 1;
}

/* base64(SHA-256(SubjectPublicKeyInfo)), as in HPKP and [relay] pin. */
static int
tls_spki_pin(X509 *cert, char *out, size_t outlen)
{
	unsigned char *der = NULL, md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	int len;

	len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
	if (len <= 0)
		return -1;
	if (!EVP_Digest(der, (size_t)len, md, &mdlen, EVP_sha256(), NULL)) {
		OPENSSL_free(der);
		return -1;
	}
	OPENSSL_free(der);
	if (outlen < 4 * ((mdlen + 2) / 3) + 1)
		return -1;
	(void)EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
	return 0;
}

static int
tls_verify_cb(int ok, X509_STORE_CTX *xs)
{
	int depth = X509_STORE_CTX_get_error_depth(xs);

	if (!ok) {
		if (tls_state.verify_error[0] == '\0')
			(void)util_snprintf(tls_state.verify_error,
			    sizeof(tls_state.verify_error),
			    "certificate verification failed at depth %d: %s",
			    depth, X509_verify_cert_error_string(
			    X509_STORE_CTX_get_error(xs)));
		return 0;
	}
	if (depth == 0 && tls_state.pin[0] != '\0') {
		char pin[128];

		if (tls_spki_pin(X509_STORE_CTX_get_current_cert(xs), pin,
		    sizeof(pin)) == -1 || strcmp(pin, tls_state.pin) != 0) {
			(void)util_snprintf(tls_state.verify_error,
			    sizeof(tls_state.verify_error),
			    "server key does not match pin_sha256 (it is %s)",
			    pin);
			X509_STORE_CTX_set_error(xs,
			    X509_V_ERR_APPLICATION_VERIFICATION);
			return 0;
		}
	}
	return 1;
}

static void
tls_info_cb(const SSL *ssl, int where, int ret)
{
	(void)ret;
	/* libesmtp sends no SNI; add it before the ClientHello. */
	if ((where & SSL_CB_HANDSHAKE_START) && !tls_state.host_is_ip &&
	    SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) == NULL)
		(void)SSL_set_tlsext_host_name((SSL *)ssl, tls_state.host);
}

SSL_CTX *
tls_client_ctx(const struct config *cfg, char *err, size_t errlen)
{
	X509_VERIFY_PARAM *vp;
	SSL_CTX *ctx;
	char why[256];

	if (util_strlcpy(tls_state.host, cfg->relay.host,
	    sizeof(tls_state.host)) == -1) {
		(void)util_snprintf(err, errlen, "relay host name too long");
		return NULL;
	}
	tls_state.host_is_ip = tls_is_ip(cfg->relay.host);
	tls_state.pin[0] = '\0';
	if (cfg->relay.pin_sha256 != NULL)
		(void)util_strlcpy(tls_state.pin, cfg->relay.pin_sha256,
		    sizeof(tls_state.pin));
	tls_verify_reset();

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		goto fail;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
		goto fail;
	if (cfg->relay.ca_file != NULL) {
		if (!SSL_CTX_load_verify_locations(ctx, cfg->relay.ca_file,
		    NULL)) {
			tls_error_string(why, sizeof(why));
			(void)util_snprintf(err, errlen, "ca_file %s: %s",
			    cfg->relay.ca_file, why);
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (!SSL_CTX_set_default_verify_paths(ctx))
		goto fail;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, tls_verify_cb);
	vp = SSL_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_hostflags(vp,
	    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (tls_state.host_is_ip) {
		if (!X509_VERIFY_PARAM_set1_ip_asc(vp, cfg->relay.host))
			goto fail;
	} else if (!X509_VERIFY_PARAM_set1_host(vp, cfg->relay.host, 0))
		goto fail;
	SSL_CTX_set_info_callback(ctx, tls_info_cb);
	return ctx;
fail:
	tls_error_string(why, sizeof(why));
	(void)util_snprintf(err, errlen, "TLS setup: %s", why);
	SSL_CTX_free(ctx);
	return NULL;
}

int
tls_peer_matches(SSL *ssl, const char *host)
{
	X509 *c = SSL_get0_peer_certificate(ssl);

	if (c == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
		return 0;
	if (tls_is_ip(host))
		return X509_check_ip_asc(c, host, 0) == 1;
	return X509_check_host(c, host, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
	    NULL) == 1;
}
