#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/pkcs8.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "alloc.h"
#include "identity.h"
#include "pattern.h"

/* BoringSSL's PEM layer hands the password callback a PEM_BUFSIZE buffer, so a longer password
 * could never decrypt a PEM key; the same bound keeps PKCS#12 passwords in one buffer. */
#define TLS_MAX_PASSWORD PEM_BUFSIZE
/* A keystore holds a key and a short chain, a few KiB: 1 MiB is generous. */
#define TLS_MAX_PKCS12 (1u << 20)

/* What openssl writes BoringSSL can read; shown when a keystore cannot be read. */
#define PKCS12_HINT                                                                                \
    "BoringSSL reads PKCS#12 made with `openssl pkcs12 -export` (OpenSSL 3 defaults: "             \
    "AES-256-CBC, PBKDF2, HMAC-SHA256 MAC; or -legacy), with a MAC: not with -nomac"

/* The first certificate-verification error of a handshake, kept on the SSL object. */
static int g_verify_error_idx = -1;
/* Why a deny list refused the peer (heap text, freed with the SSL), kept on the SSL object. */
static int g_denial_idx = -1;
/* The config_t a context was built from, on the SSL_CTX, for the deny lists in verify_cb. */
static int g_config_idx = -1;

/* ssl_reason: BoringSSL's words for its last error, for configuration messages. */
static void ssl_reason(char *out, size_t out_len)
{
    tls_last_error(out, out_len, "unknown error");
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

/* read_file reads all of |f| into |buf| (|cap| bytes). It returns 1 with the length in
 * |*out_len|, or 0 after reporting a missing, unreadable or larger file. */
static int read_file(config_errors_t *errs, const char *cfgfile, const config_file_t *f,
                     const char *path, uint8_t *buf, size_t cap, size_t *out_len)
{
    FILE *fp = fopen(f->path, "rb");
    if (fp == NULL) {
        config_error(errs, cfgfile, f->mark, path, "cannot read '%s': %s", f->path,
                     strerror(errno));
        return 0;
    }
    /* A byte left after |cap| tells a larger file from one of exactly |cap| bytes. */
    size_t n = fread(buf, 1, cap, fp);
    int failed = ferror(fp);
    int err = errno;
    int more = !failed && n == cap && fgetc(fp) != EOF;
    fclose(fp);
    if (failed) {
        config_error(errs, cfgfile, f->mark, path, "cannot read '%s': %s", f->path, strerror(err));
        return 0;
    }
    if (more) {
        config_error(errs, cfgfile, f->mark, path, "'%s' is larger than %zu bytes", f->path, cap);
        return 0;
    }
    *out_len = n;
    return 1;
}

/* A password read from a file; password_cleanup wipes it. Zero state: no password. */
typedef struct {
    char text[TLS_MAX_PASSWORD + 1]; /* NUL-terminated for PKCS#12 */
    size_t len;
    int have;  /* a password file was read */
    int asked; /* the PEM layer asked for a password: the key is encrypted */
} password_t;

static void password_cleanup(password_t *pw)
{
    OPENSSL_cleanse(pw, sizeof(*pw));
}

/* read_password reads |f| into |pw|: the whole file but one trailing "\n" or "\r\n". An empty
 * password, a NUL byte or more than TLS_MAX_PASSWORD bytes is an error. */
static int read_password(config_errors_t *errs, const char *cfgfile, const config_file_t *f,
                         const char *path, password_t *pw)
{
    uint8_t raw[TLS_MAX_PASSWORD + 2]; /* the password and its line end */
    size_t n = 0;
    CBS pass, rest;
    uint8_t c;
    int ok = 0;

    if (!read_file(errs, cfgfile, f, path, raw, sizeof(raw), &n))
        goto wipe_raw;
    CBS_init(&pass, raw, n);
    rest = pass;
    if (CBS_get_last_u8(&rest, &c) && c == '\n') {
        pass = rest;
        if (CBS_get_last_u8(&rest, &c) && c == '\r')
            pass = rest;
    }
    if (CBS_len(&pass) == 0) {
        config_error(errs, cfgfile, f->mark, path, "'%s' holds an empty password", f->path);
        goto wipe_raw;
    }
    if (CBS_len(&pass) > TLS_MAX_PASSWORD) {
        config_error(errs, cfgfile, f->mark, path, "the password in '%s' is longer than %d bytes",
                     f->path, TLS_MAX_PASSWORD);
        goto wipe_raw;
    }
    if (CBS_contains_zero_byte(&pass)) {
        config_error(errs, cfgfile, f->mark, path, "the password in '%s' contains a NUL byte",
                     f->path);
        goto wipe_raw;
    }
    pw->len = CBS_len(&pass);
    if (!CBS_copy_bytes(&pass, (uint8_t *)pw->text, pw->len))
        goto wipe_raw;
    pw->text[pw->len] = '\0';
    pw->have = 1;
    ok = 1;
wipe_raw:
    OPENSSL_cleanse(raw, sizeof(raw));
    return ok;
}

/* password_cb is the PEM layer's pem_password_cb; |userdata| is a password_t. */
static int password_cb(char *buf, int size, int rwflag, void *userdata)
{
    password_t *pw = userdata;
    pw->asked = 1;
    if (!pw->have || size < 0 || pw->len > (size_t)size)
        return -1;
    memcpy(buf, pw->text, pw->len);
    return (int)pw->len;
}

/* use_key installs |key| in |ctx| next to its certificate (|cert_path|); errors are reported
 * at |f|, the file the key came from, under the key |path|. */
static int use_key(SSL_CTX *ctx, EVP_PKEY *key, const config_t *cfg, const config_file_t *f,
                   const char *path, const char *cert_path, config_errors_t *errs)
{
    char why[128];
    if (!SSL_CTX_use_PrivateKey(ctx, key)) {
        ssl_reason(why, sizeof(why));
        if (strstr(why, "MISMATCH") != NULL || strstr(why, "mismatch") != NULL)
            config_error(errs, cfg->file, f->mark, path,
                         "private key '%s' does not match the certificate '%s'", f->path,
                         cert_path);
        else
            config_error(errs, cfg->file, f->mark, path, "cannot use the private key in '%s': %s",
                         f->path, why);
        return 0;
    }
    if (!SSL_CTX_check_private_key(ctx)) {
        ERR_clear_error();
        config_error(errs, cfg->file, f->mark, path,
                     "private key '%s' does not match the certificate '%s'", f->path, cert_path);
        return 0;
    }
    return 1;
}

/* load_pem_key reads tls.key, decrypting it with tls.key_password_file when it is encrypted. */
static int load_pem_key(SSL_CTX *ctx, const config_t *cfg, config_errors_t *errs)
{
    const config_file_t *kf = &cfg->tls.key, *pf = &cfg->tls.key_password_file;
    password_t pw;
    EVP_PKEY *key = NULL;
    BIO *bio = NULL;
    char why[128];
    int ok = 0;

    memset(&pw, 0, sizeof(pw));
    if (!file_readable(errs, cfg->file, kf, "tls.key"))
        goto wipe_password;
    if (pf->path != NULL && !read_password(errs, cfg->file, pf, "tls.key_password_file", &pw))
        goto wipe_password;
    bio = BIO_new_file(kf->path, "rb");
    if (bio != NULL)
        key = PEM_read_bio_PrivateKey(bio, NULL, password_cb, &pw);
    if (key == NULL) {
        ssl_reason(why, sizeof(why));
        if (pw.asked && !pw.have)
            config_error(errs, cfg->file, kf->mark, "tls.key",
                         "private key '%s' is encrypted; set tls.key_password_file", kf->path);
        else if (pw.asked)
            config_error(errs, cfg->file, pf->mark, "tls.key_password_file",
                         "cannot decrypt the private key '%s' with the password in '%s'", kf->path,
                         pf->path);
        else
            config_error(errs, cfg->file, kf->mark, "tls.key",
                         "cannot load a private key from '%s': %s", kf->path, why);
        goto free_bio;
    }
    ok = use_key(ctx, key, cfg, kf, "tls.key", cfg->tls.cert.path, errs);
    EVP_PKEY_free(key);
free_bio:
    BIO_free(bio);
wipe_password:
    password_cleanup(&pw);
    return ok;
}

static int load_pem_cert_and_key(SSL_CTX *ctx, const config_t *cfg, config_errors_t *errs)
{
    char why[128];
    if (!file_readable(errs, cfg->file, &cfg->tls.cert, "tls.cert"))
        return 0;
    if (!SSL_CTX_use_certificate_chain_file(ctx, cfg->tls.cert.path)) {
        ssl_reason(why, sizeof(why));
        config_error(errs, cfg->file, cfg->tls.cert.mark, "tls.cert",
                     "cannot load a certificate chain from '%s': %s", cfg->tls.cert.path, why);
        return 0;
    }
    return load_pem_key(ctx, cfg, errs);
}

/* use_pkcs12_contents installs the certificate of |key| from |certs| as the leaf, |key|, and
 * every other certificate of the keystore as the chain. */
static int use_pkcs12_contents(SSL_CTX *ctx, EVP_PKEY *key, STACK_OF(X509) * certs,
                               const config_t *cfg, config_errors_t *errs)
{
    const config_file_t *f = &cfg->tls.pkcs12;
    size_t leaf = sk_X509_num(certs);
    for (size_t i = 0; i < sk_X509_num(certs); i++) {
        if (X509_check_private_key(sk_X509_value(certs, i), key)) {
            leaf = i;
            break;
        }
    }
    ERR_clear_error();
    if (leaf == sk_X509_num(certs)) {
        config_error(errs, cfg->file, f->mark, "tls.pkcs12",
                     "keystore '%s' holds no certificate for its private key", f->path);
        return 0;
    }
    if (!SSL_CTX_use_certificate(ctx, sk_X509_value(certs, leaf))) {
        char why[128];
        ssl_reason(why, sizeof(why));
        config_error(errs, cfg->file, f->mark, "tls.pkcs12",
                     "cannot use the certificate in '%s': %s", f->path, why);
        return 0;
    }
    for (size_t i = 0; i < sk_X509_num(certs); i++) {
        if (i != leaf && !SSL_CTX_add1_chain_cert(ctx, sk_X509_value(certs, i))) {
            ERR_clear_error();
            config_error(errs, cfg->file, f->mark, "tls.pkcs12",
                         "cannot add chain certificate %zu of '%s'", i + 1, f->path);
            return 0;
        }
    }
    return use_key(ctx, key, cfg, f, "tls.pkcs12", f->path, errs);
}

/* load_pkcs12 reads the certificate, key and chain from tls.pkcs12, with the password in
 * tls.pkcs12_password_file or else the empty password. */
static int load_pkcs12(SSL_CTX *ctx, const config_t *cfg, config_errors_t *errs)
{
    const config_file_t *f = &cfg->tls.pkcs12, *pf = &cfg->tls.pkcs12_password_file;
    STACK_OF(X509) *certs = NULL;
    EVP_PKEY *key = NULL;
    uint8_t *der = NULL;
    size_t der_len = 0;
    password_t pw;
    int ok = 0;

    memset(&pw, 0, sizeof(pw));
    der = pg_malloc(TLS_MAX_PKCS12);
    if (der == NULL) {
        config_error(errs, cfg->file, f->mark, "tls.pkcs12", "out of memory");
        goto wipe_password;
    }
    if (!read_file(errs, cfg->file, f, "tls.pkcs12", der, TLS_MAX_PKCS12, &der_len))
        goto free_der;
    if (pf->path != NULL && !read_password(errs, cfg->file, pf, "tls.pkcs12_password_file", &pw))
        goto free_der;
    certs = sk_X509_new_null();
    if (certs == NULL)
        goto free_der;

    /* Without a password file pw.text is "": the empty password `-passout pass:` writes. */
    CBS in;
    CBS_init(&in, der, der_len);
    if (!PKCS12_get_key_and_certs(&key, certs, &in, pw.text)) {
        uint32_t e = ERR_peek_last_error();
        int wrong_password =
            ERR_GET_LIB(e) == ERR_LIB_PKCS8 && ERR_GET_REASON(e) == PKCS8_R_INCORRECT_PASSWORD;
        char why[128];
        ssl_reason(why, sizeof(why));
        if (wrong_password && pw.have)
            config_error(errs, cfg->file, pf->mark, "tls.pkcs12_password_file",
                         "cannot decrypt the keystore '%s' with the password in '%s'", f->path,
                         pf->path);
        else if (wrong_password)
            config_error(errs, cfg->file, f->mark, "tls.pkcs12",
                         "keystore '%s' has a password; set tls.pkcs12_password_file", f->path);
        else
            config_error(errs, cfg->file, f->mark, "tls.pkcs12",
                         "cannot read the PKCS#12 keystore '%s': %s (" PKCS12_HINT ")", f->path,
                         why);
        goto free_certs;
    }
    if (CBS_len(&in) != 0) {
        config_error(errs, cfg->file, f->mark, "tls.pkcs12",
                     "'%s' has %zu bytes after the keystore", f->path, CBS_len(&in));
        goto free_certs;
    }
    if (key == NULL) {
        config_error(errs, cfg->file, f->mark, "tls.pkcs12", "keystore '%s' holds no private key",
                     f->path);
        goto free_certs;
    }
    ok = use_pkcs12_contents(ctx, key, certs, cfg, errs);
free_certs:
    EVP_PKEY_free(key);
    sk_X509_pop_free(certs, X509_free);
free_der:
    free(der);
wipe_password:
    password_cleanup(&pw);
    return ok;
}

/* tls13_suite_in finds a TLS 1.3 suite name in the cipher list |list| (items separated as
 * BoringSSL separates them) and copies it to |out|. BoringSSL matches those names and then
 * ignores them, so such a list would silently not mean what it says. */
static int tls13_suite_in(const char *list, char *out, size_t out_len)
{
    static const char *const kPrefixes[] = {"TLS_AES_", "TLS_CHACHA20_"};
    const char *item = list;
    while (*item != '\0') {
        size_t n = strcspn(item, ":, ;");
        for (size_t i = 0; i < sizeof(kPrefixes) / sizeof(kPrefixes[0]); i++) {
            size_t plen = strlen(kPrefixes[i]);
            if (n > plen && strncmp(item, kPrefixes[i], plen) == 0) {
                snprintf(out, out_len, "%.*s", (int)n, item);
                return 1;
            }
        }
        item += n;
        if (*item != '\0')
            item++;
    }
    return 0;
}

/* key_can_use reports whether a TLS 1.2 cipher authenticates with the server key |key|. */
static int key_can_use(const EVP_PKEY *key, const SSL_CIPHER *cipher)
{
    int auth = SSL_CIPHER_get_auth_nid(cipher);
    switch (EVP_PKEY_id(key)) {
    case EVP_PKEY_EC:
    case EVP_PKEY_ED25519:
        return auth == NID_auth_ecdsa;
    case EVP_PKEY_RSA:
        return auth == NID_auth_rsa;
    default:
        return 0;
    }
}

static const char *key_kind(const EVP_PKEY *key)
{
    switch (key != NULL ? EVP_PKEY_id(key) : EVP_PKEY_NONE) {
    case EVP_PKEY_RSA:
        return "RSA";
    case EVP_PKEY_ED25519:
        return "Ed25519";
    default:
        return "ECDSA";
    }
}

/* set_ciphers applies tls.ciphers (TLS 1.2; BoringSSL does not make TLS 1.3 suites
 * configurable) once the key is loaded, so a list the key cannot serve is an error too. */
static int set_ciphers(SSL_CTX *ctx, const config_t *cfg, config_errors_t *errs)
{
    const config_text_t *t = &cfg->tls.ciphers;
    char suite[64];

    if (t->text == NULL)
        return 1;
    if (tls13_suite_in(t->text, suite, sizeof(suite))) {
        config_error(errs, cfg->file, t->mark, "tls.ciphers",
                     "'%s' is a TLS 1.3 suite: BoringSSL does not make TLS 1.3 suites "
                     "configurable (it always offers AES-GCM and ChaCha20-Poly1305); list TLS 1.2 "
                     "ciphers only",
                     suite);
        return 0;
    }
    if (cfg->tls.min_version >= TLS1_3_VERSION) {
        config_error(errs, cfg->file, t->mark, "tls.ciphers",
                     "applies to TLS 1.2 only, and min_version is \"1.3\"");
        return 0;
    }
    if (!SSL_CTX_set_strict_cipher_list(ctx, t->text)) {
        ERR_clear_error();
        config_error(errs, cfg->file, t->mark, "tls.ciphers",
                     "unknown or unusable cipher list '%s'", t->text);
        return 0;
    }
    const EVP_PKEY *key = SSL_CTX_get0_privatekey(ctx);
    STACK_OF(SSL_CIPHER) *list = SSL_CTX_get_ciphers(ctx);
    for (size_t i = 0; key != NULL && i < sk_SSL_CIPHER_num(list); i++) {
        if (key_can_use(key, sk_SSL_CIPHER_value(list, i)))
            return 1;
    }
    config_error(errs, cfg->file, t->mark, "tls.ciphers",
                 "no cipher in '%s' can be used with the server's %s key", t->text, key_kind(key));
    return 0;
}

static int set_curves(SSL_CTX *ctx, const config_t *cfg, config_errors_t *errs)
{
    const config_text_t *t = &cfg->tls.curves;
    if (t->text == NULL || SSL_CTX_set1_curves_list(ctx, t->text))
        return 1;
    ERR_clear_error();
    config_error(errs, cfg->file, t->mark, "tls.curves",
                 "unknown curve in '%s' (BoringSSL knows X25519, P-256, P-384, P-521)", t->text);
    return 0;
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

/* hex_upper writes the |n| bytes at |in| as upper-case hex into |out| (2n + 1 bytes). */
static void hex_upper(const uint8_t *in, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int in_list(const config_hexlist_t *l, const char *value)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->items[i], value) == 0)
            return 1;
    }
    return 0;
}

/* serial_denied checks the serial of |cert| against tls.deny_serials, normalised as the
 * configuration normalises it. It returns 1, with the reason in |why|, if the serial is listed
 * or cannot be read (fail closed). A negative serial is never listed: the configuration
 * cannot write one. */
static int serial_denied(const config_t *cfg, X509 *cert, char *why, size_t why_len)
{
    char norm[2 * 64 + 2];
    int denied = 1;

    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *h = bn != NULL ? BN_bn2hex(bn) : NULL;
    if (h == NULL || (h[0] != '-' && !pattern_hex_normalise(h, strlen(h), 0, norm, sizeof(norm))))
        snprintf(why, why_len, "cannot read the certificate serial to check tls.deny_serials");
    else if (h[0] != '-' && in_list(&cfg->tls.deny_serials, norm))
        snprintf(why, why_len, "certificate serial %s is in tls.deny_serials", norm);
    else
        denied = 0;
    OPENSSL_free(h);
    BN_free(bn);
    return denied;
}

/* sha256_denied checks the SHA-256 fingerprint of |cert| (at |depth| of the chain) against
 * tls.deny_sha256, like serial_denied. */
static int sha256_denied(const config_t *cfg, X509 *cert, int depth, char *why, size_t why_len)
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    unsigned md_len = 0;
    char hex[2 * SHA256_DIGEST_LENGTH + 1];

    if (!X509_digest(cert, EVP_sha256(), md, &md_len) || md_len != sizeof(md)) {
        ERR_clear_error();
        snprintf(why, why_len, "cannot compute a certificate fingerprint to check tls.deny_sha256");
        return 1;
    }
    hex_upper(md, sizeof(md), hex);
    if (!in_list(&cfg->tls.deny_sha256, hex))
        return 0;
    if (depth == 0)
        snprintf(why, why_len, "certificate fingerprint %s is in tls.deny_sha256", hex);
    else
        snprintf(why, why_len,
                 "CA certificate fingerprint %s (chain depth %d) is in tls.deny_sha256", hex,
                 depth);
    return 1;
}

int tls_cert_denied(const config_t *cfg, X509 *cert, int depth, char *why, size_t why_len)
{
    return (depth == 0 && cfg->tls.deny_serials.n != 0 && serial_denied(cfg, cert, why, why_len)) ||
           (cfg->tls.deny_sha256.n != 0 && sha256_denied(cfg, cert, depth, why, why_len));
}

/* check_deny_lists applies tls.deny_serials to the leaf and tls.deny_sha256 to every
 * certificate of a chain that verified, as verify_cb meets them. A hit is kept on |ssl| for
 * tls_failure_reason; it returns 0 then. */
static int check_deny_lists(SSL *ssl, X509_STORE_CTX *store_ctx)
{
    const config_t *cfg = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g_config_idx);
    X509 *cert = X509_STORE_CTX_get_current_cert(store_ctx);
    int depth = X509_STORE_CTX_get_error_depth(store_ctx);
    char why[200];

    if (cfg == NULL || (cfg->tls.deny_serials.n == 0 && cfg->tls.deny_sha256.n == 0))
        return 1;
    if (cert == NULL)
        snprintf(why, sizeof(why), "no certificate to check against the deny lists");
    else if (!tls_cert_denied(cfg, cert, depth, why, sizeof(why)))
        return 1;
    if (SSL_get_ex_data(ssl, g_denial_idx) == NULL) {
        /* Out of memory leaves the refusal without its detail, not without the refusal. */
        char *kept = pg_strdup(why);
        if (kept != NULL && !SSL_set_ex_data(ssl, g_denial_idx, kept))
            free(kept);
    }
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_CERT_REJECTED);
    return 0;
}

static int verify_cb(int ok, X509_STORE_CTX *store_ctx)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    if (ok && ssl != NULL)
        ok = check_deny_lists(ssl, store_ctx);
    if (!ok) {
        if (ssl != NULL && g_verify_error_idx >= 0 &&
            SSL_get_ex_data(ssl, g_verify_error_idx) == NULL) {
            /* Store error + 1 so that 0 (X509_V_OK) stays distinguishable from "unset". */
            intptr_t err = X509_STORE_CTX_get_error(store_ctx) + 1;
            SSL_set_ex_data(ssl, g_verify_error_idx, (void *)err);
        }
    }
    return ok;
}

static void free_denial(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                        void *argp)
{
    free(ptr);
}

/* new_indices allocates the ex_data indices once; the process is single-threaded. */
static int new_indices(void)
{
    if (g_verify_error_idx < 0)
        g_verify_error_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    if (g_denial_idx < 0)
        g_denial_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_denial);
    if (g_config_idx < 0)
        g_config_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    return g_verify_error_idx >= 0 && g_denial_idx >= 0 && g_config_idx >= 0;
}

SSL_CTX *tls_ctx_new(const config_t *cfg, config_errors_t *errs)
{
    SSL_CTX *ctx = NULL;

    if (!new_indices() || (ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
        config_error(errs, cfg->file, (config_mark_t){0, 0}, "tls", "cannot create TLS context");
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, cfg->tls.min_version) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION))
        goto fail;

    if (cfg->tls.pkcs12.path != NULL ? !load_pkcs12(ctx, cfg, errs)
                                     : !load_pem_cert_and_key(ctx, cfg, errs))
        goto fail;
    if (!set_ciphers(ctx, cfg, errs) || !set_curves(ctx, cfg, errs))
        goto fail;
    if (!load_client_cas(ctx, cfg, errs))
        goto fail;
    if (cfg->tls.crl.path != NULL && !load_crls(ctx, cfg, errs))
        goto fail;

    /* verify_cb reads the deny lists from here; the configuration outlives the context. */
    if (!SSL_CTX_set_ex_data(ctx, g_config_idx, (void *)(uintptr_t)cfg))
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
    SSL_set_ex_data(ssl, g_denial_idx, NULL);
}

const char *tls_verify_error_reason(long v)
{
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

uint32_t tls_last_error(char *detail, size_t detail_len, const char *fallback)
{
    uint32_t e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(detail, detail_len, "%s", r ? r : fallback);
    ERR_clear_error();
    return e;
}

const char *tls_failure_reason(const SSL *ssl, char *detail, size_t detail_len)
{
    const char *denial = SSL_get_ex_data(ssl, g_denial_idx);
    if (denial != NULL) {
        snprintf(detail, detail_len, "%s", denial);
        ERR_clear_error();
        return "certificate_denied";
    }
    intptr_t stored = (intptr_t)SSL_get_ex_data(ssl, g_verify_error_idx);
    if (stored > 0) {
        long v = (long)(stored - 1);
        snprintf(detail, detail_len, "%s", X509_verify_cert_error_string(v));
        ERR_clear_error();
        return tls_verify_error_reason(v);
    }
    uint32_t e = tls_last_error(detail, detail_len, "handshake failed");
    int reason = e ? ERR_GET_REASON(e) : 0;
    if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        return "no_client_certificate";
    if (reason == SSL_R_UNSUPPORTED_PROTOCOL || reason == SSL_R_NO_SUPPORTED_VERSIONS_ENABLED)
        return "protocol_version";
    if (reason == SSL_R_NO_SHARED_CIPHER || reason == SSL_R_NO_SHARED_GROUP)
        return "no_shared_cipher";
    if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_HTTP_REQUEST ||
        reason == SSL_R_HTTPS_PROXY_REQUEST)
        return "not_tls";
    return "tls_error";
}

/* ---- client mode ------------------------------------------------------------------------ */

SSL_CTX *tls_upstream_ctx_new(const config_t *cfg, const config_listener_t *l,
                              config_errors_t *errs)
{
    const config_upstream_tls_t *t = &l->upstream_tls;
    char path[300], why[160];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    snprintf(path, sizeof(path), "listeners[%zu].upstream_tls", (size_t)(l - cfg->listeners));
    if (ctx == NULL) {
        config_error(errs, cfg->file, t->mark, path, "cannot create TLS context");
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, t->min_version) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION))
        goto free_ctx;
    if (!file_readable(errs, cfg->file, &t->cert, path) ||
        !file_readable(errs, cfg->file, &t->key, path) ||
        !file_readable(errs, cfg->file, &t->ca, path))
        goto free_ctx;
    if (!SSL_CTX_use_certificate_chain_file(ctx, t->cert.path)) {
        ssl_reason(why, sizeof(why));
        config_error(errs, cfg->file, t->cert.mark, path, "cannot use certificate '%s': %s",
                     t->cert.path, why);
        goto free_ctx;
    }
    if (!SSL_CTX_use_PrivateKey_file(ctx, t->key.path, SSL_FILETYPE_PEM) ||
        !SSL_CTX_check_private_key(ctx)) {
        ssl_reason(why, sizeof(why));
        config_error(errs, cfg->file, t->key.mark, path,
                     "cannot use key '%s' (or it does not match the certificate): %s", t->key.path,
                     why);
        goto free_ctx;
    }
    /* Only the configured CA: a publicly trusted certificate for the same name is not the
     * upstream this listener was told to trust. */
    if (!SSL_CTX_load_verify_locations(ctx, t->ca.path, NULL)) {
        ssl_reason(why, sizeof(why));
        config_error(errs, cfg->file, t->ca.mark, path, "cannot load CA '%s': %s", t->ca.path, why);
        goto free_ctx;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
free_ctx:
    SSL_CTX_free(ctx);
    return NULL;
}

int tls_upstream_setup(SSL *ssl, const config_listener_t *l)
{
    const char *name = l->upstream_tls.server_name.text;
    SSL_set_connect_state(ssl);
    if (name == NULL)
        return 1;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    uint8_t ip[16];
    if (inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1)
        return X509_VERIFY_PARAM_set1_ip_asc(param, name);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return SSL_set_tlsext_host_name(ssl, name) &&
           X509_VERIFY_PARAM_set1_host(param, name, strlen(name));
}

int tls_upstream_check(SSL *ssl, const config_listener_t *l, char *subject, size_t subject_len,
                       char *why, size_t why_len)
{
    identity_t id;
    const config_patterns_t *uris = &l->upstream_tls.server_uri;
    X509 *cert = SSL_get_peer_certificate(ssl);
    int ok = 0;

    snprintf(subject, subject_len, "%s", "");
    if (cert == NULL) {
        snprintf(why, why_len, "the upstream sent no certificate");
        return 0;
    }
    memset(&id, 0, sizeof(id));
    if (!identity_from_x509(cert, &id, why, why_len))
        goto free_cert;
    snprintf(subject, subject_len, "%s", id.subject);
    if (uris->n == 0) {
        ok = 1;
        goto free_identity;
    }
    for (size_t i = 0; i < id.n_values && !ok; i++) {
        if (id.field_of[i] != ID_URI)
            continue;
        for (size_t p = 0; p < uris->n && !ok; p++)
            ok = pattern_match(&uris->items[p], id.values[i], id.lens[i]);
    }
    if (!ok)
        snprintf(why, why_len,
                 "the upstream's certificate (%s) has no URI SAN matching upstream_tls.server_uri",
                 id.subject);
free_identity:
    identity_free(&id);
free_cert:
    X509_free(cert);
    return ok;
}

const char *tls_upstream_failure(const SSL *ssl, char *detail, size_t detail_len)
{
    long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK) {
        snprintf(detail, detail_len, "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        ERR_clear_error();
        if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
            return "name_mismatch";
        return tls_verify_error_reason(v);
    }
    uint32_t e = tls_last_error(detail, detail_len, "handshake failed");
    int reason = e ? ERR_GET_REASON(e) : 0;
    if (reason == SSL_R_UNSUPPORTED_PROTOCOL || reason == SSL_R_NO_SUPPORTED_VERSIONS_ENABLED)
        return "protocol_version";
    if (reason == SSL_R_WRONG_VERSION_NUMBER)
        return "not_tls";
    if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET)
        return "alert_received"; /* the upstream refused us: our certificate, most often */
    return "tls_error";
}
