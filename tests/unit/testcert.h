/* Test certificates minted in process with BoringSSL: an EC P-256 key made once per test group
 * (testcert_make_key / testcert_free_key as the group's setup and teardown), subject entries,
 * SANs and a serial, signed and read back from DER as a TLS handshake would hand them over.
 * For the unit tests only (test_policy.c, test_alloc_torture.c): cmocka asserts on every step.
 *
 * Ownership: cert_begin starts a certificate held in the cert_t; cert_end frees it and returns
 * a new X509 the caller frees with X509_free. */
#ifndef PYROGUARD_TESTCERT_H
#define PYROGUARD_TESTCERT_H

#include <arpa/inet.h>
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static EVP_PKEY *g_key;

static inline int testcert_make_key(void **state)
{
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    if (ec == NULL || !EC_KEY_generate_key(ec))
        return -1;
    g_key = EVP_PKEY_new();
    if (g_key == NULL || !EVP_PKEY_assign_EC_KEY(g_key, ec))
        return -1;
    return 0;
}

static inline int testcert_free_key(void **state)
{
    EVP_PKEY_free(g_key);
    return 0;
}

typedef struct {
    X509 *x;
    GENERAL_NAMES *sans;
} cert_t;

/* cert_begin starts a self-signed certificate with serial |serial_hex| (BN_hex2bn form). */
static inline void cert_begin(cert_t *c, const char *serial_hex)
{
    BIGNUM *bn = NULL;
    c->x = X509_new();
    c->sans = sk_GENERAL_NAME_new_null();
    assert_non_null(c->x);
    assert_non_null(c->sans);
    assert_true(X509_set_version(c->x, X509_VERSION_3));
    assert_true(BN_hex2bn(&bn, serial_hex) > 0);
    assert_non_null(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c->x)));
    BN_free(bn);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(c->x), 0));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(c->x), 3600));
    assert_true(X509_set_pubkey(c->x, g_key));
}

/* cert_name adds a subject entry ("CN", "O", "OU") of |n| UTF-8 bytes. */
static inline void cert_name_n(cert_t *c, const char *field, const char *value, size_t n)
{
    assert_true(X509_NAME_add_entry_by_txt(X509_get_subject_name(c->x), field, MBSTRING_UTF8,
                                           (const uint8_t *)value, (int)n, -1, 0));
}

static inline void cert_name(cert_t *c, const char *field, const char *value)
{
    cert_name_n(c, field, value, strlen(value));
}

/* cert_san_n adds a dNSName, URI or rfc822Name SAN of |n| bytes, as they are. */
static inline void cert_san_n(cert_t *c, int type, const char *value, size_t n)
{
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    assert_non_null(g);
    assert_non_null(s);
    assert_true(ASN1_STRING_set(s, value, (int)n));
    GENERAL_NAME_set0_value(g, type, s);
    assert_true(sk_GENERAL_NAME_push(c->sans, g));
}

static inline void cert_san(cert_t *c, int type, const char *value)
{
    cert_san_n(c, type, value, strlen(value));
}

/* cert_ip_raw adds an iPAddress SAN of |n| raw bytes. */
static inline void cert_ip_raw(cert_t *c, const uint8_t *addr, size_t n)
{
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_OCTET_STRING *s = ASN1_OCTET_STRING_new();
    assert_non_null(g);
    assert_non_null(s);
    assert_true(ASN1_OCTET_STRING_set(s, addr, (int)n));
    GENERAL_NAME_set0_value(g, GEN_IPADD, s);
    assert_true(sk_GENERAL_NAME_push(c->sans, g));
}

static inline void cert_ip(cert_t *c, const char *text)
{
    uint8_t addr[16];
    if (inet_pton(AF_INET, text, addr) == 1)
        cert_ip_raw(c, addr, 4);
    else if (inet_pton(AF_INET6, text, addr) == 1)
        cert_ip_raw(c, addr, 16);
    else
        fail_msg("not an address: %s", text);
}

/* cert_end signs the certificate and returns it as parsed back from DER. */
static inline X509 *cert_end(cert_t *c)
{
    X509_NAME *subject = X509_get_subject_name(c->x);
    assert_true(X509_set_issuer_name(c->x, subject));
    if (sk_GENERAL_NAME_num(c->sans) > 0)
        assert_true(X509_add1_ext_i2d(c->x, NID_subject_alt_name, c->sans, 0, X509V3_ADD_DEFAULT));
    GENERAL_NAMES_free(c->sans);
    assert_true(X509_sign(c->x, g_key, EVP_sha256()) > 0);
    uint8_t *der = NULL;
    int len = i2d_X509(c->x, &der);
    assert_true(len > 0);
    X509_free(c->x);
    const uint8_t *p = der;
    X509 *parsed = d2i_X509(NULL, &p, len);
    OPENSSL_free(der);
    assert_non_null(parsed);
    return parsed;
}

#endif
