#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* The first certificate-verification error of a handshake, kept on the SSL object. */
static int g_verify_error_idx = -1;

static void ssl_reason(char *out, size_t out_len)
{
    uint32_t e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(out, out_len, "%s", r ? r : "unknown error");
    ERR_clear_error();
}

/* file_readable reports a missing or unreadable file with errno's words, which say more than
 * the PEM layer's "NO_START_LINE" or "system library". */
static int file_readable(config_errors_t *errs, const char *cfgfile, const config_file_t *f,
                         const char *path)
{
    FILE *fp = fopen(f->path, "rb");
    if (fp == NULL) {
        config_error(errs, cfgfile, f->mark, path, "cannot read '%s': %s", f->path,
                     strerror(errno));
        return 0;
    }
    fclose(fp);
    return 1;
}

static int load_client_cas(SSL_CTX *ctx, const config_t *cfg, config_errors_t *errs)
{
    const config_file_t *f = &cfg->tls.client_ca;
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    STACK_OF(X509_NAME) *names = NULL;
    BIO *bio = NULL;
    X509 *x;
    int count = 0, ok = 0;

    if (!file_readable(errs, cfg->file, f, "tls.client_ca"))
        return 0;
    bio = BIO_new_file(f->path, "rb");
    names = sk_X509_NAME_new_null();
    if (bio == NULL || names == NULL)
        goto free_all;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        int added = X509_STORE_add_cert(store, x);
        X509_NAME *name = X509_NAME_dup(X509_get_subject_name(x));
        X509_free(x);
        if (!added || name == NULL || !sk_X509_NAME_push(names, name)) {
            X509_NAME_free(name);
            config_error(errs, cfg->file, f->mark, "tls.client_ca",
                         "cannot add a CA certificate from '%s'", f->path);
            goto free_all;
        }
        count++;
    }
    uint32_t e = ERR_peek_last_error();
    if (count == 0 || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
        char why[128];
        ssl_reason(why, sizeof(why));
        if (count == 0)
            config_error(errs, cfg->file, f->mark, "tls.client_ca",
                         "no CA certificate found in '%s'", f->path);
        else
            config_error(errs, cfg->file, f->mark, "tls.client_ca",
                         "cannot parse certificate %d in '%s': %s", count + 1, f->path, why);
        goto free_all;
    }
    ERR_clear_error();
    /* Tell clients which CAs we accept, so one holding several certificates picks the right. */
    SSL_CTX_set_client_CA_list(ctx, names);
    names = NULL;
    ok = 1;
free_all:
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    BIO_free(bio);
    return ok;
}

static int load_crls(SSL_CTX *ctx, const config_t *cfg, config_errors_t *errs)
{
    const config_file_t *f = &cfg->tls.crl;
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    X509_CRL *crl;
    int count = 0, ok = 0;

    if (!file_readable(errs, cfg->file, f, "tls.crl"))
        return 0;
    BIO *bio = BIO_new_file(f->path, "rb");
    if (bio == NULL)
        return 0;
    while ((crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
        int added = X509_STORE_add_crl(store, crl);
        X509_CRL_free(crl);
        if (!added) {
            config_error(errs, cfg->file, f->mark, "tls.crl", "cannot add a CRL from '%s'",
                         f->path);
            goto free_bio;
        }
        count++;
    }
    uint32_t e = ERR_peek_last_error();
    if (count == 0 || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
        char why[128];
        ssl_reason(why, sizeof(why));
        if (count == 0)
            config_error(errs, cfg->file, f->mark, "tls.crl", "no CRL found in '%s'", f->path);
        else
            config_error(errs, cfg->file, f->mark, "tls.crl", "cannot parse CRL %d in '%s': %s",
                         count + 1, f->path, why);
        goto free_bio;
    }
    ERR_clear_error();
    /* Check the leaf and every intermediate against the CRLs; a CA without a CRL then fails
     * verification, which is the closed failure a revocation list is for. */
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    ok = 1;
free_bio:
    BIO_free(bio);
    return ok;
}

static int verify_cb(int ok, X509_STORE_CTX *store_ctx)
{
    if (!ok) {
        SSL *ssl = X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx());
        if (ssl != NULL && g_verify_error_idx >= 0 &&
            SSL_get_ex_data(ssl, g_verify_error_idx) == NULL) {
            /* Store error + 1 so that 0 (X509_V_OK) stays distinguishable from "unset". */
            intptr_t err = X509_STORE_CTX_get_error(store_ctx) + 1;
            SSL_set_ex_data(ssl, g_verify_error_idx, (void *)err);
        }
    }
    return ok;
}

SSL_CTX *tls_ctx_new(const config_t *cfg, config_errors_t *errs)
{
    char why[128];
    SSL_CTX *ctx = NULL;

    if (g_verify_error_idx < 0)
        g_verify_error_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        config_error(errs, cfg->file, (config_mark_t){0, 0}, "tls", "cannot create TLS context");
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, cfg->tls.min_version) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION))
        goto fail;

    if (!file_readable(errs, cfg->file, &cfg->tls.cert, "tls.cert"))
        goto fail;
    if (!SSL_CTX_use_certificate_chain_file(ctx, cfg->tls.cert.path)) {
        ssl_reason(why, sizeof(why));
        config_error(errs, cfg->file, cfg->tls.cert.mark, "tls.cert",
                     "cannot load a certificate chain from '%s': %s", cfg->tls.cert.path, why);
        goto fail;
    }
    if (!file_readable(errs, cfg->file, &cfg->tls.key, "tls.key"))
        goto fail;
    if (!SSL_CTX_use_PrivateKey_file(ctx, cfg->tls.key.path, SSL_FILETYPE_PEM)) {
        ssl_reason(why, sizeof(why));
        if (strstr(why, "MISMATCH") != NULL || strstr(why, "mismatch") != NULL)
            config_error(errs, cfg->file, cfg->tls.key.mark, "tls.key",
                         "private key '%s' does not match the certificate '%s'", cfg->tls.key.path,
                         cfg->tls.cert.path);
        else
            config_error(errs, cfg->file, cfg->tls.key.mark, "tls.key",
                         "cannot load a private key from '%s': %s", cfg->tls.key.path, why);
        goto fail;
    }
    if (!SSL_CTX_check_private_key(ctx)) {
        ERR_clear_error();
        config_error(errs, cfg->file, cfg->tls.key.mark, "tls.key",
                     "private key '%s' does not match the certificate '%s'", cfg->tls.key.path,
                     cfg->tls.cert.path);
        goto fail;
    }
    if (!load_client_cas(ctx, cfg, errs))
        goto fail;
    if (cfg->tls.crl.path != NULL && !load_crls(ctx, cfg, errs))
        goto fail;

    /* Client certificates are always required (DESIGN.md): no certificate, no connection. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
    static const uint8_t sid_ctx[] = "pyroguard";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

void tls_conn_setup(SSL *ssl)
{
    SSL_set_ex_data(ssl, g_verify_error_idx, NULL);
}

static void copy_printable(char *out, size_t out_len, const uint8_t *p, size_t n)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < out_len; i++)
        out[j++] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
    out[j] = '\0';
}

static void name_oneline(const X509_NAME *name, char *out, size_t out_len)
{
    out[0] = '\0';
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
        const uint8_t *data;
        size_t len;
        if (BIO_mem_contents(bio, &data, &len))
            copy_printable(out, out_len, data, len);
    }
    BIO_free(bio);
}

static void add_san(tls_identity_t *out, const char *prefix, const uint8_t *p, size_t n)
{
    if (out->n_sans == TLS_MAX_SANS)
        return;
    char *dst = out->sans[out->n_sans++];
    size_t plen = strlen(prefix);
    memcpy(dst, prefix, plen);
    copy_printable(dst + plen, sizeof(out->sans[0]) - plen, p, n);
}

static void collect_sans(X509 *cert, tls_identity_t *out)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (gens == NULL)
        return;
    for (size_t i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        const ASN1_STRING *s = NULL;
        const char *prefix = NULL;
        switch (g->type) {
        case GEN_DNS:
            s = g->d.dNSName, prefix = "DNS:";
            break;
        case GEN_URI:
            s = g->d.uniformResourceIdentifier, prefix = "URI:";
            break;
        case GEN_EMAIL:
            s = g->d.rfc822Name, prefix = "email:";
            break;
        case GEN_IPADD: {
            char ip[INET6_ADDRSTRLEN];
            int len = ASN1_STRING_length(g->d.iPAddress);
            const uint8_t *d = ASN1_STRING_get0_data(g->d.iPAddress);
            int af = len == 4 ? AF_INET : len == 16 ? AF_INET6 : 0;
            if (af && inet_ntop(af, d, ip, sizeof(ip)) != NULL)
                add_san(out, "IP:", (const uint8_t *)ip, strlen(ip));
            continue;
        }
        default:
            continue;
        }
        add_san(out, prefix, ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s));
    }
    GENERAL_NAMES_free(gens);
}

int tls_identity_from(const SSL *ssl, tls_identity_t *out)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t md[32];
    unsigned md_len = 0;

    memset(out, 0, sizeof(*out));
    X509 *cert = SSL_get_peer_certificate(ssl);
    if (cert == NULL)
        return 0;
    name_oneline(X509_get_subject_name(cert), out->subject, sizeof(out->subject));
    name_oneline(X509_get_issuer_name(cert), out->issuer, sizeof(out->issuer));
    collect_sans(cert, out);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    if (bn != NULL) {
        char *h = BN_bn2hex(bn);
        if (h != NULL)
            snprintf(out->serial, sizeof(out->serial), "%s", h);
        OPENSSL_free(h);
        BN_free(bn);
    }
    if (X509_digest(cert, EVP_sha256(), md, &md_len) && md_len == sizeof(md)) {
        for (size_t i = 0; i < sizeof(md); i++) {
            out->sha256[2 * i] = hex[md[i] >> 4];
            out->sha256[2 * i + 1] = hex[md[i] & 15];
        }
        out->sha256[64] = '\0';
    }
    X509_free(cert);
    return 1;
}

const char *tls_failure_reason(const SSL *ssl, char *detail, size_t detail_len)
{
    intptr_t stored = (intptr_t)SSL_get_ex_data(ssl, g_verify_error_idx);
    if (stored > 0) {
        long v = (long)(stored - 1);
        snprintf(detail, detail_len, "%s", X509_verify_cert_error_string(v));
        ERR_clear_error();
        switch (v) {
        case X509_V_ERR_CERT_HAS_EXPIRED:
            return "certificate_expired";
        case X509_V_ERR_CERT_NOT_YET_VALID:
            return "certificate_not_yet_valid";
        case X509_V_ERR_CERT_REVOKED:
            return "certificate_revoked";
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
            return "unknown_ca";
        default:
            return "certificate_invalid";
        }
    }
    uint32_t e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(detail, detail_len, "%s", r ? r : "handshake failed");
    int reason = e ? ERR_GET_REASON(e) : 0;
    ERR_clear_error();
    if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        return "no_client_certificate";
    if (reason == SSL_R_UNSUPPORTED_PROTOCOL || reason == SSL_R_NO_SUPPORTED_VERSIONS_ENABLED)
        return "protocol_version";
    if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_HTTP_REQUEST ||
        reason == SSL_R_HTTPS_PROXY_REQUEST)
        return "not_tls";
    return "tls_error";
}
