/* tls: the server-side TLS context (BoringSSL) and what pyroguard learns from a handshake.
 *
 * tls_ctx_new builds an SSL_CTX from the tls: section: the certificate chain and key (ECDSA
 * or RSA), TLS 1.2/1.3 per min_version, client certificates always required and verified
 * against client_ca and, when given, the CRL. The caller owns the SSL_CTX (SSL_CTX_free).
 * tls_identity_t is a fixed-size stack object: nothing to free. */
#ifndef PYROGUARD_TLS_H
#define PYROGUARD_TLS_H

#include <stddef.h>

#include <openssl/is_boringssl.h>
#include <openssl/ssl.h>
#ifndef OPENSSL_IS_BORINGSSL
#error "pyroguard must be built against BoringSSL's headers (android-libboringssl-dev)"
#endif

#include "config.h"

#define TLS_MAX_SANS 16

typedef struct {
    char subject[512];
    char issuer[512];
    char sans[TLS_MAX_SANS][256]; /* "DNS:…", "URI:…", "IP:…", "email:…" */
    size_t n_sans;
    char serial[80]; /* upper-case hex, as openssl prints it */
    char sha256[65]; /* lower-case hex of the DER certificate */
} tls_identity_t;

/* tls_ctx_new returns a configured server context, or NULL after adding one line per problem
 * to |errs| (file:line:col of the offending key, the file, and the reason). */
SSL_CTX *tls_ctx_new(const config_t *cfg, config_errors_t *errs);

/* tls_conn_setup prepares |ssl| (made from a tls_ctx_new context) so that tls_failure_reason
 * can name the certificate error of a failed handshake. */
void tls_conn_setup(SSL *ssl);

/* tls_identity_from fills |out| from the verified peer certificate of |ssl|; returns 0 if the
 * peer presented none. */
int tls_identity_from(const SSL *ssl, tls_identity_t *out);

/* tls_failure_reason classifies a failed handshake: "no_client_certificate", "unknown_ca",
 * "certificate_expired", "certificate_not_yet_valid", "certificate_revoked",
 * "certificate_invalid", "protocol_version", "not_tls" or "tls_error"; |detail| gets
 * BoringSSL's own words. Call it right after SSL_do_handshake failed, before ERR_clear_error. */
const char *tls_failure_reason(const SSL *ssl, char *detail, size_t detail_len);

#endif
