/* tls: the server-side TLS context (BoringSSL) and what pyroguard learns from a handshake.
 *
 * tls_ctx_new builds an SSL_CTX from the tls: section: the certificate chain and key (ECDSA
 * or RSA) from PEM files, the key possibly encrypted (key_password_file), or from a PKCS#12
 * keystore; TLS 1.2/1.3 per min_version, the TLS 1.2 ciphers and the curves when given;
 * client certificates always required and verified against client_ca and, when given, the
 * CRL, then refused when the leaf's serial is in deny_serials or any certificate of the chain
 * has its SHA-256 fingerprint in deny_sha256. The caller owns the SSL_CTX (SSL_CTX_free); the
 * context keeps a pointer to |cfg|, which must outlive it.
 * What a verified certificate says about its holder is read by identity.h. */
#ifndef PYROGUARD_TLS_H
#define PYROGUARD_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/is_boringssl.h>
#include <openssl/ssl.h>
#ifndef OPENSSL_IS_BORINGSSL
#error "pyroguard must be built against BoringSSL's headers (android-libboringssl-dev)"
#endif

#include "config.h"

/* tls_ctx_new returns a configured server context, or NULL after adding one line per problem
 * to |errs| (file:line:col of the offending key, the file, and the reason). */
SSL_CTX *tls_ctx_new(const config_t *cfg, config_errors_t *errs);

/* tls_conn_setup prepares |ssl| (made from a tls_ctx_new context) so that tls_failure_reason
 * can name the certificate error of a failed handshake. */
void tls_conn_setup(SSL *ssl);

/* tls_verify_error_reason names an X509_V_ERR_* code as tls_failure_reason does
 * ("unknown_ca", "certificate_expired", …). */
const char *tls_verify_error_reason(long v);

/* tls_cert_denied checks |cert|, at |depth| of a verified chain (0: the client's own), against
 * tls.deny_serials (leaf only) and tls.deny_sha256 (any depth). Returns 1 with the reason in
 * |why| when it is listed or cannot be checked (fail closed). */
int tls_cert_denied(const config_t *cfg, X509 *cert, int depth, char *why, size_t why_len);

/* tls_last_error puts BoringSSL's words for its last error in |detail| (|fallback| when there is
 * none), clears the error queue and returns the error's code (0: none). */
uint32_t tls_last_error(char *detail, size_t detail_len, const char *fallback);

/* tls_failure_reason classifies a failed handshake: "no_client_certificate", "unknown_ca",
 * "certificate_expired", "certificate_not_yet_valid", "certificate_revoked",
 * "certificate_denied" (tls.deny_serials or tls.deny_sha256), "certificate_invalid",
 * "protocol_version", "no_shared_cipher" (no common TLS 1.2 cipher or curve), "not_tls" or
 * "tls_error"; |detail| gets BoringSSL's own words, or which deny list refused the certificate.
 * Call it right after SSL_do_handshake failed, before ERR_clear_error. */
const char *tls_failure_reason(const SSL *ssl, char *detail, size_t detail_len);

/* ---- client mode: originating mutual TLS to an upstream (listeners[].mode: client) ---- */

/* tls_upstream_ctx_new builds the client context of client-mode listener |l| of |cfg|: its
 * certificate and key (upstream_tls.cert, key), the upstream's certificate verified against
 * upstream_tls.ca only (no system store), TLS 1.2/1.3 per upstream_tls.min_version. NULL after
 * adding one line per problem to |errs|. The caller owns the SSL_CTX. */
SSL_CTX *tls_upstream_ctx_new(const config_t *cfg, const config_listener_t *l,
                              config_errors_t *errs);

/* tls_upstream_setup prepares |ssl| (from that context) to connect: SNI when server_name is a
 * DNS name, and the name the chain verification demands (a DNS or IP SAN). Returns 0 when
 * memory is exhausted. */
int tls_upstream_setup(SSL *ssl, const config_listener_t *l);

/* tls_upstream_check runs after a completed handshake: the certificate BoringSSL verified must
 * carry a URI SAN matching upstream_tls.server_uri when one is given. Returns 1, or 0 with the
 * reason in |why|. |subject| gets the upstream certificate's subject for the log. */
int tls_upstream_check(SSL *ssl, const config_listener_t *l, char *subject, size_t subject_len,
                       char *why, size_t why_len);

/* tls_upstream_failure describes a failed client handshake in |detail| ("certificate verify
 * failed: Hostname mismatch", BoringSSL's words otherwise) and returns a stable reason
 * ("unknown_ca", "name_mismatch", "certificate_expired", "tls_error", ...). Call it right after
 * SSL_do_handshake failed. */
const char *tls_upstream_failure(const SSL *ssl, char *detail, size_t detail_len);

#endif
