#include "identity.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/mem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "alloc.h"
#include "pattern.h"

/* While reading, values are kept as offsets into a growing pool; they become pointers once
 * the pool no longer moves. */
typedef struct {
    identity_t *id;
    size_t offsets[IDENTITY_MAX_VALUES + 2];
    size_t pool_len;
    size_t pool_cap;
    char *err;
    size_t err_len;
} reader_t;

static const char *const kFieldNames[ID_FIELDS] = {
    "cn", "o", "ou", "dns", "uri", "ip", "email", "serial", "sha256",
};

const char *identity_field_name(identity_field_t f)
{
    return f < ID_FIELDS ? kFieldNames[f] : "?";
}

static int add_value(reader_t *r, identity_field_t f, const uint8_t *p, size_t n)
{
    identity_t *id = r->id;
    int is_name = f != ID_SERIAL && f != ID_SHA256;
    if (id->n_values == (is_name ? IDENTITY_MAX_VALUES : IDENTITY_MAX_VALUES + 2)) {
        snprintf(r->err, r->err_len, "the certificate names more than %d identities",
                 IDENTITY_MAX_VALUES);
        return 0;
    }
    if (n > IDENTITY_MAX_VALUE_LEN) {
        snprintf(r->err, r->err_len, "a %s of the certificate is longer than %d bytes",
                 kFieldNames[f], IDENTITY_MAX_VALUE_LEN);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f) {
            snprintf(r->err, r->err_len, "a %s of the certificate contains a control character",
                     kFieldNames[f]);
            return 0;
        }
    }
    if (r->pool_len + n + 1 > r->pool_cap) {
        size_t ncap = r->pool_cap ? r->pool_cap * 2 : 512;
        while (ncap < r->pool_len + n + 1)
            ncap *= 2;
        char *grown = pg_realloc(id->pool, ncap);
        if (grown == NULL) {
            snprintf(r->err, r->err_len, "out of memory");
            return 0;
        }
        id->pool = grown;
        r->pool_cap = ncap;
    }
    memcpy(id->pool + r->pool_len, p, n);
    id->pool[r->pool_len + n] = '\0';
    r->offsets[id->n_values] = r->pool_len;
    id->lens[id->n_values] = (uint16_t)n;
    id->field_of[id->n_values] = (uint8_t)f;
    id->n_values++;
    r->pool_len += n + 1;
    return 1;
}

/* add_asn1_text adds an ASN.1 string converted to UTF-8 (BMPString and the like included). */
static int add_asn1_text(reader_t *r, identity_field_t f, const ASN1_STRING *s)
{
    uint8_t *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, s);
    if (n < 0) {
        snprintf(r->err, r->err_len, "a %s of the certificate is not valid text", kFieldNames[f]);
        return 0;
    }
    int ok = add_value(r, f, utf8, (size_t)n);
    OPENSSL_free(utf8);
    return ok;
}

static int read_subject(reader_t *r, const X509_NAME *name)
{
    static const struct {
        int nid;
        identity_field_t field;
    } kWanted[] = {
        {NID_commonName, ID_CN}, {NID_organizationName, ID_O}, {NID_organizationalUnitName, ID_OU}};
    for (size_t w = 0; w < sizeof(kWanted) / sizeof(kWanted[0]); w++) {
        int last = -1;
        while ((last = X509_NAME_get_index_by_NID(name, kWanted[w].nid, last)) >= 0) {
            const X509_NAME_ENTRY *e = X509_NAME_get_entry(name, last);
            if (!add_asn1_text(r, kWanted[w].field, X509_NAME_ENTRY_get_data(e)))
                return 0;
        }
    }
    return 1;
}

static int read_sans(reader_t *r, X509 *cert)
{
    int crit = 0;
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    int ok = 1;
    if (gens == NULL) {
        if (crit == -2) {
            snprintf(r->err, r->err_len, "the certificate has two subjectAltName extensions");
            return 0;
        }
        if (crit != -1) {
            /* Present but unreadable. Verification refuses it too, but an identity read as
             * "no SANs" must not exist even for a certificate that was not verified. */
            snprintf(r->err, r->err_len, "the certificate's subjectAltName extension is malformed");
            return 0;
        }
        return 1; /* none */
    }
    /* Fields are kept grouped (all DNS names, then URIs…) in certificate order. */
    static const struct {
        int type;
        identity_field_t field;
    } kOrder[] = {{GEN_DNS, ID_DNS}, {GEN_URI, ID_URI}, {GEN_IPADD, ID_IP}, {GEN_EMAIL, ID_EMAIL}};
    for (size_t o = 0; ok && o < sizeof(kOrder) / sizeof(kOrder[0]); o++) {
        for (size_t i = 0; ok && i < sk_GENERAL_NAME_num(gens); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
            if (g->type != kOrder[o].type)
                continue;
            if (g->type == GEN_IPADD) {
                char ip[INET6_ADDRSTRLEN];
                int len = ASN1_STRING_length(g->d.iPAddress);
                const uint8_t *d = ASN1_STRING_get0_data(g->d.iPAddress);
                int af = len == 4 ? AF_INET : len == 16 ? AF_INET6 : 0;
                if (af == 0 || inet_ntop(af, d, ip, sizeof(ip)) == NULL) {
                    snprintf(r->err, r->err_len, "an IP address of the certificate is malformed");
                    ok = 0;
                } else {
                    ok = add_value(r, ID_IP, (const uint8_t *)ip, strlen(ip));
                }
                continue;
            }
            /* dNSName, URI and rfc822Name are IA5String: bytes as they are. */
            const ASN1_STRING *s = g->type == GEN_DNS   ? g->d.dNSName
                                   : g->type == GEN_URI ? g->d.uniformResourceIdentifier
                                                        : g->d.rfc822Name;
            ok = add_value(r, kOrder[o].field, ASN1_STRING_get0_data(s),
                           (size_t)ASN1_STRING_length(s));
        }
    }
    GENERAL_NAMES_free(gens);
    return ok;
}

static int read_serial_and_digest(reader_t *r, X509 *cert)
{
    static const char hex[] = "0123456789ABCDEF";
    char text[2 * 32 + 1], norm[2 * 64 + 2];
    uint8_t md[32];
    unsigned md_len = 0;
    int ok = 0;

    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *h = bn != NULL ? BN_bn2hex(bn) : NULL;
    /* A negative serial (malformed, but seen in the wild) keeps its sign and never matches a
     * configured serial, which pattern_hex_normalise refuses to write with a '-'. */
    if (h == NULL || (h[0] != '-' && !pattern_hex_normalise(h, strlen(h), 0, norm, sizeof(norm))))
        snprintf(r->err, r->err_len, "cannot read the certificate serial");
    else
        ok = add_value(r, ID_SERIAL, (const uint8_t *)(h[0] == '-' ? h : norm),
                       strlen(h[0] == '-' ? h : norm));
    OPENSSL_free(h);
    BN_free(bn);
    if (!ok)
        return 0;
    if (!X509_digest(cert, EVP_sha256(), md, &md_len) || md_len != sizeof(md)) {
        snprintf(r->err, r->err_len, "cannot compute the certificate fingerprint");
        return 0;
    }
    for (size_t i = 0; i < sizeof(md); i++) {
        text[2 * i] = hex[md[i] >> 4];
        text[2 * i + 1] = hex[md[i] & 15];
    }
    return add_value(r, ID_SHA256, (const uint8_t *)text, 64);
}

/* name_oneline prints |name| in RFC 2253 form with text as UTF-8 ("CN=café-client", not
 * "CN=caf\C3\A9-client"); control characters become '?'. */
static char *name_oneline(const X509_NAME *name)
{
    char *out = NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return NULL;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        const uint8_t *data;
        size_t len;
        if (BIO_mem_contents(bio, &data, &len) && (out = pg_malloc(len + 1)) != NULL) {
            for (size_t i = 0; i < len; i++)
                out[i] = (data[i] < 0x20 || data[i] == 0x7f) ? '?' : (char)data[i];
            out[len] = '\0';
        }
    }
    BIO_free(bio);
    return out;
}

int identity_from_x509(X509 *cert, identity_t *id, char *err, size_t err_len)
{
    reader_t r;

    memset(id, 0, sizeof(*id));
    memset(&r, 0, sizeof(r));
    r.id = id;
    r.err = err;
    r.err_len = err_len;
    id->subject = name_oneline(X509_get_subject_name(cert));
    id->issuer = name_oneline(X509_get_issuer_name(cert));
    if (id->subject == NULL || id->issuer == NULL) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    if (!read_subject(&r, X509_get_subject_name(cert)) || !read_sans(&r, cert) ||
        !read_serial_and_digest(&r, cert))
        goto fail;
    for (size_t i = 0; i < id->n_values; i++)
        id->values[i] = id->pool + r.offsets[i];
    return 1;
fail:
    identity_free(id);
    return 0;
}

void identity_free(identity_t *id)
{
    free(id->subject);
    free(id->issuer);
    free(id->pool);
    memset(id, 0, sizeof(*id));
}

const char *identity_first(const identity_t *id, identity_field_t f)
{
    for (size_t i = 0; i < id->n_values; i++) {
        if (id->field_of[i] == f)
            return id->values[i];
    }
    return NULL;
}

void identity_summary(const identity_t *id, char *out, size_t out_len)
{
    static const struct {
        identity_field_t field;
        const char *label;
    } kShown[] = {{ID_CN, "CN="}, {ID_URI, "URI="}, {ID_DNS, "DNS="}, {ID_SERIAL, "serial "}};
    size_t used = 0;

    out[0] = '\0';
    for (size_t k = 0; k < sizeof(kShown) / sizeof(kShown[0]); k++) {
        for (size_t i = 0; i < id->n_values; i++) {
            if (id->field_of[i] != kShown[k].field)
                continue;
            int w = snprintf(out + used, out_len - used, "%s%s%s", used ? ", " : "",
                             kShown[k].label, id->values[i]);
            if (w < 0 || (size_t)w >= out_len - used) {
                if (out_len >= 4)
                    memcpy(out + out_len - 4, "...", 4);
                return;
            }
            used += (size_t)w;
        }
    }
}
