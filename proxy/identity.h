/* identity: who a verified client certificate names, in the fields the policy matches on
 * (DESIGN.md `clients:` match keys): subject CN, O and OU; SAN DNS, URI, IP and e-mail; the
 * serial (upper-case hex, no leading zeros) and the SHA-256 fingerprint of the DER
 * certificate (upper-case hex, 64 digits). Every field may hold several values.
 *
 * A certificate whose identity cannot be read faithfully is refused rather than read in part:
 * more than IDENTITY_MAX_VALUES values, a value longer than IDENTITY_MAX_VALUE_LEN, or a
 * value with a NUL or control character (the "evil.example\0.good.example" trick). A policy
 * evaluated on part of an identity could let a later, broader rule match.
 *
 * Ownership: identity_from_x509 fills a caller-owned identity_t; identity_free releases what
 * it holds and is safe on a zeroed identity_t. Values are NUL-terminated and valid until then. */
#ifndef PYROGUARD_IDENTITY_H
#define PYROGUARD_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/base.h>

#define IDENTITY_MAX_VALUES    64 /* names (CN, O, OU, SANs) */
#define IDENTITY_MAX_VALUE_LEN 1024

typedef enum {
    ID_CN,
    ID_O,
    ID_OU,
    ID_DNS,
    ID_URI,
    ID_IP,
    ID_EMAIL,
    ID_SERIAL,
    ID_SHA256,
    ID_FIELDS,
} identity_field_t;

typedef struct {
    char *subject; /* RFC 2253 one-line form, text in UTF-8, control characters as '?' */
    char *issuer;
    /* Up to IDENTITY_MAX_VALUES names, then the serial and the fingerprint. */
    const char *values[IDENTITY_MAX_VALUES + 2];
    uint16_t lens[IDENTITY_MAX_VALUES + 2];
    uint8_t field_of[IDENTITY_MAX_VALUES + 2];
    size_t n_values;
    char *pool; /* owns every value */
} identity_t;

/* identity_from_x509 reads |cert|. Returns 1, or 0 with the reason in |err| (and nothing to
 * free beyond identity_free). */
int identity_from_x509(X509 *cert, identity_t *id, char *err, size_t err_len);

void identity_free(identity_t *id);

/* identity_field_name returns the match key of |f|: "cn", "o", "ou", "dns", "uri", "ip",
 * "email", "serial", "sha256". */
const char *identity_field_name(identity_field_t f);

/* identity_first returns the first value of |f| or NULL. */
const char *identity_first(const identity_t *id, identity_field_t f);

/* identity_summary writes the identity in one line for messages: "CN=billing-client,
 * URI=spiffe://example.org/ns/billing/client, serial 1A2B…" (the fields that are present:
 * CN, the URI and DNS SANs, the serial); cut with "..." at |out_len|. */
void identity_summary(const identity_t *id, char *out, size_t out_len);

#endif
