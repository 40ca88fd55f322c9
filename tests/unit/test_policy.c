/* Unit tests for proxy/identity.c and proxy/policy.c: who a client certificate names, which
 * client rule it gets, and what that rule lets it call (DESIGN.md `clients:`).
 *
 * Certificates are minted here, in process, with BoringSSL (an EC key, subject entries, SANs,
 * a serial) and read back from their DER form as a TLS handshake would hand them over.
 * Policies are loaded from YAML text with config_load_buffer, and calls are decoded from the
 * serpent text an honest Pyro4 client sends (decode_serpent, call_from_invoke), so every
 * decision here runs through the same modules as in the proxy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "call.h"
#include "config.h"
#include "decode.h"
#include "frame.h"
#include "identity.h"
#include "policy.h"
#include "value.h"

#include "testcert.h"

/* ---- certificates: testcert.h ---------------------------------------------------------- */

/* The client most tests use: the billing service of example.org. */
static X509 *billing_cert(void)
{
    cert_t c;
    cert_begin(&c, "1A2B");
    cert_name(&c, "CN", "billing-client");
    cert_name(&c, "O", "Example Org");
    cert_name(&c, "OU", "payments");
    cert_name(&c, "OU", "eu");
    cert_san(&c, GEN_DNS, "billing.example.org");
    cert_san(&c, GEN_DNS, "pay.example.org");
    cert_san(&c, GEN_URI, "spiffe://example.org/ns/billing/client");
    cert_ip(&c, "10.1.2.3");
    cert_ip(&c, "fd00::7");
    cert_san(&c, GEN_EMAIL, "Billing@Example.org");
    return cert_end(&c);
}

static identity_t g_id;
static char g_err[256];

static void read_identity(X509 *x)
{
    g_err[0] = '\0';
    int ok = identity_from_x509(x, &g_id, g_err, sizeof(g_err));
    X509_free(x);
    if (!ok)
        fail_msg("identity refused: %s", g_err);
}

/* identity_refusal returns identity_from_x509's error for |x| (which it frees). */
static const char *identity_refusal(X509 *x)
{
    identity_t id;
    g_err[0] = '\0';
    int ok = identity_from_x509(x, &id, g_err, sizeof(g_err));
    X509_free(x);
    assert_false(ok);
    /* Nothing is left to free, and freeing again is safe. */
    assert_int_equal(id.n_values, 0);
    assert_null(id.pool);
    identity_free(&id);
    return g_err;
}

/* ---- configurations --------------------------------------------------------------------- */

static config_t g_cfg;
static config_errors_t g_errs;

#define PREAMBLE                                                                                   \
    "listeners:\n"                                                                                 \
    "  - name: app\n"                                                                              \
    "    listen: 0.0.0.0:9443\n"                                                                   \
    "    backend: 127.0.0.1:9090\n"                                                                \
    "tls:\n"                                                                                       \
    "  cert: server.crt\n"                                                                         \
    "  key: server.key\n"                                                                          \
    "  client_ca: ca.crt\n"                                                                        \
    "clients:\n"

/* load_clients loads the preamble followed by |clients|, the items of `clients:`. */
static void load_clients(const char *clients)
{
    size_t n = strlen(PREAMBLE) + strlen(clients) + 1;
    char *yaml = malloc(n);
    assert_non_null(yaml);
    snprintf(yaml, n, "%s%s", PREAMBLE, clients);
    memset(&g_errs, 0, sizeof(g_errs));
    int ok = config_load_buffer("t.yaml", "/etc/pyroguard", (const uint8_t *)yaml, n - 1, &g_cfg,
                                &g_errs);
    free(yaml);
    for (size_t i = 0; i < g_errs.n; i++)
        print_message("config error: %s\n", g_errs.lines[i]);
    assert_true(ok);
}

/* ---- calls ------------------------------------------------------------------------------ */

static value_arena_t g_arena;
static policy_decision_t g_d;
static int g_rule;

static int setup(void **state)
{
    memset(&g_id, 0, sizeof(g_id));
    memset(&g_cfg, 0, sizeof(g_cfg));
    memset(&g_errs, 0, sizeof(g_errs));
    value_arena_init(&g_arena, NULL);
    g_rule = POLICY_NO_RULE;
    return 0;
}

static int teardown(void **state)
{
    identity_free(&g_id);
    config_free(&g_cfg);
    config_errors_free(&g_errs);
    value_arena_cleanup(&g_arena);
    return 0;
}

/* load_for_billing loads |clients| and picks the rule of the billing client. */
static void load_for_billing(const char *clients)
{
    load_clients(clients);
    read_identity(billing_cert());
    g_rule = policy_match_client(&g_cfg, &g_id);
    assert_int_not_equal(g_rule, POLICY_NO_RULE);
}

static const call_t *decode_invoke(const char *serpent, uint16_t flags)
{
    static call_t call;
    value_t *top = NULL;
    const char *why = NULL;
    call_refusal_t r;
    if (!decode_serpent((const uint8_t *)serpent, strlen(serpent), &g_arena, &top, &why))
        fail_msg("serpent refused (%s): %s", why, serpent);
    if (!call_from_invoke(top, CALL_FORM_TUPLE, flags, &g_arena, &call, &r))
        fail_msg("call refused: %s", r.detail);
    return &call;
}

/* invoke decides the INVOKE whose payload is |serpent| for the current rule. */
static int invoke_flags(const char *serpent, uint16_t flags)
{
    return policy_decide(&g_cfg, g_rule, decode_invoke(serpent, flags), 0, &g_d);
}

static int invoke(const char *serpent)
{
    return invoke_flags(serpent, 0);
}

static int connect_with(const char *serpent, int wants_metadata)
{
    call_t call;
    value_t *top = NULL;
    const char *why = NULL;
    call_refusal_t r;
    if (!decode_serpent((const uint8_t *)serpent, strlen(serpent), &g_arena, &top, &why))
        fail_msg("serpent refused (%s): %s", why, serpent);
    if (!call_from_connect(top, 0, &g_arena, &call, &r))
        fail_msg("connect refused: %s", r.detail);
    return policy_decide(&g_cfg, g_rule, &call, wants_metadata, &g_d);
}

static void assert_allowed(int got)
{
    if (!got || !g_d.allowed)
        print_message("refused: %s (%s)\n", g_d.detail, g_d.reason);
    assert_true(got);
    assert_true(g_d.allowed);
    assert_string_equal(g_d.reason, "allowed");
}

static void assert_refused(int got, const char *reason, const char *detail)
{
    if (got)
        print_message("allowed by entry '%c' %zu\n", g_d.entry_kind, g_d.entry_index);
    assert_false(got);
    assert_false(g_d.allowed);
    assert_string_equal(g_d.reason, reason);
    if (detail != NULL)
        assert_string_equal(g_d.detail, detail);
}

static const char *entry_text(void)
{
    static char out[128];
    policy_entry_text(&g_cfg, g_rule, &g_d, out, sizeof(out));
    return out;
}

/* ---- identity --------------------------------------------------------------------------- */

static size_t count_field(identity_field_t f)
{
    size_t n = 0;
    for (size_t i = 0; i < g_id.n_values; i++)
        n += g_id.field_of[i] == f;
    return n;
}

static const char *nth_value(identity_field_t f, size_t nth)
{
    for (size_t i = 0; i < g_id.n_values; i++) {
        if (g_id.field_of[i] == f && nth-- == 0)
            return g_id.values[i];
    }
    return NULL;
}

static void test_identity_reads_every_field_of_a_certificate(void **state)
{
    read_identity(billing_cert());
    assert_string_equal(identity_first(&g_id, ID_CN), "billing-client");
    assert_string_equal(identity_first(&g_id, ID_O), "Example Org");
    assert_int_equal(count_field(ID_OU), 2);
    assert_string_equal(nth_value(ID_OU, 0), "payments");
    assert_string_equal(nth_value(ID_OU, 1), "eu");
    assert_int_equal(count_field(ID_DNS), 2);
    assert_string_equal(nth_value(ID_DNS, 1), "pay.example.org");
    assert_string_equal(identity_first(&g_id, ID_URI), "spiffe://example.org/ns/billing/client");
    assert_string_equal(nth_value(ID_IP, 0), "10.1.2.3");
    assert_string_equal(nth_value(ID_IP, 1), "fd00::7");
    assert_string_equal(identity_first(&g_id, ID_EMAIL), "Billing@Example.org");
    assert_string_equal(identity_first(&g_id, ID_SERIAL), "1A2B");
    assert_int_equal(strlen(identity_first(&g_id, ID_SHA256)), 64);
    assert_int_equal(g_id.n_values, 12);
    assert_string_equal(g_id.subject, "OU=eu,OU=payments,O=Example Org,CN=billing-client");
    assert_string_equal(g_id.issuer, g_id.subject);
    for (size_t i = 0; i < g_id.n_values; i++)
        assert_int_equal(strlen(g_id.values[i]), g_id.lens[i]);
}

static void test_identity_field_names_are_the_match_keys(void **state)
{
    static const char *const want[] = {"cn", "o",     "ou",     "dns",   "uri",
                                       "ip", "email", "serial", "sha256"};
    for (int f = 0; f < ID_FIELDS; f++)
        assert_string_equal(identity_field_name((identity_field_t)f), want[f]);
    assert_string_equal(identity_field_name(ID_FIELDS), "?");
}

static void test_identity_serial_is_upper_case_hex_without_leading_zeros(void **state)
{
    cert_t c;
    cert_begin(&c, "00000a0bcdef");
    cert_name(&c, "CN", "x");
    read_identity(cert_end(&c));
    assert_string_equal(identity_first(&g_id, ID_SERIAL), "A0BCDEF");
}

static void test_identity_sha256_is_the_fingerprint_of_the_der(void **state)
{
    static const char hex[] = "0123456789ABCDEF";
    uint8_t md[32];
    unsigned md_len = 0;
    char want[65];
    X509 *x = billing_cert();
    assert_true(X509_digest(x, EVP_sha256(), md, &md_len));
    for (size_t i = 0; i < 32; i++) {
        want[2 * i] = hex[md[i] >> 4];
        want[2 * i + 1] = hex[md[i] & 15];
    }
    want[64] = '\0';
    read_identity(x);
    assert_string_equal(identity_first(&g_id, ID_SHA256), want);
}

static void test_identity_of_a_certificate_without_sans_has_subject_and_hashes(void **state)
{
    cert_t c;
    cert_begin(&c, "01");
    cert_name(&c, "CN", "plain");
    read_identity(cert_end(&c));
    assert_int_equal(g_id.n_values, 3);
    assert_null(identity_first(&g_id, ID_URI));
    assert_null(identity_first(&g_id, ID_DNS));
}

static void test_identity_converts_a_bmpstring_cn_to_utf8(void **state)
{
    cert_t c;
    cert_begin(&c, "01");
    /* "é" as a BMPString: X509_NAME_add_entry_by_txt picks the type from MBSTRING_BMP. */
    static const uint8_t bmp[] = {0x00, 'c', 0x00, 'a', 0x00, 'f', 0x00, 0xe9};
    assert_true(X509_NAME_add_entry_by_txt(X509_get_subject_name(c.x), "CN", MBSTRING_BMP, bmp,
                                           sizeof(bmp), -1, 0));
    read_identity(cert_end(&c));
    assert_string_equal(identity_first(&g_id, ID_CN), "caf\xc3\xa9");
}

static void test_identity_with_a_nul_in_a_dns_san_is_refused(void **state)
{
    /* The "evil.example\0.good.example" trick: a C string comparison would see only half. */
    static const char evil[] = "evil.example\0.good.example";
    cert_t c;
    cert_begin(&c, "01");
    cert_name(&c, "CN", "x");
    cert_san_n(&c, GEN_DNS, evil, sizeof(evil) - 1);
    assert_string_equal(identity_refusal(cert_end(&c)),
                        "a dns of the certificate contains a control character");
}

static void test_identity_with_a_control_character_in_a_uri_is_refused(void **state)
{
    cert_t c;
    cert_begin(&c, "01");
    cert_san(&c, GEN_URI, "spiffe://example.org/ns/a\nb");
    assert_string_equal(identity_refusal(cert_end(&c)),
                        "a uri of the certificate contains a control character");
}

static void test_identity_with_a_control_character_in_the_cn_is_refused(void **state)
{
    cert_t c;
    cert_begin(&c, "01");
    cert_name(&c, "CN", "bad\x1b[0mname");
    assert_string_equal(identity_refusal(cert_end(&c)),
                        "a cn of the certificate contains a control character");
}

static void test_identity_with_a_delete_character_in_an_email_is_refused(void **state)
{
    cert_t c;
    cert_begin(&c, "01");
    cert_san(&c, GEN_EMAIL, "a\x7f@example.org");
    assert_string_equal(identity_refusal(cert_end(&c)),
                        "a email of the certificate contains a control character");
}

static X509 *cert_with_dns_count(size_t n)
{
    cert_t c;
    cert_begin(&c, "01");
    for (size_t i = 0; i < n; i++) {
        char name[48];
        snprintf(name, sizeof(name), "h%zu.example.org", i);
        cert_san(&c, GEN_DNS, name);
    }
    return cert_end(&c);
}

static void test_identity_of_exactly_64_names_is_read(void **state)
{
    /* 64 names, then the serial and the fingerprint. */
    read_identity(cert_with_dns_count(IDENTITY_MAX_VALUES));
    assert_int_equal(g_id.n_values, IDENTITY_MAX_VALUES + 2);
    assert_string_equal(nth_value(ID_DNS, 63), "h63.example.org");
    assert_non_null(identity_first(&g_id, ID_SERIAL));
    assert_non_null(identity_first(&g_id, ID_SHA256));
}

static void test_identity_of_more_than_64_names_is_refused(void **state)
{
    assert_string_equal(identity_refusal(cert_with_dns_count(IDENTITY_MAX_VALUES + 1)),
                        "the certificate names more than 64 identities");
    assert_string_equal(identity_refusal(cert_with_dns_count(200)),
                        "the certificate names more than 64 identities");
}

static X509 *cert_with_uri_of_length(size_t n)
{
    char *uri = malloc(n);
    assert_non_null(uri);
    memcpy(uri, "spiffe://", 9);
    memset(uri + 9, 'a', n - 9);
    cert_t c;
    cert_begin(&c, "01");
    cert_san_n(&c, GEN_URI, uri, n);
    free(uri);
    return cert_end(&c);
}

static void test_identity_value_of_1024_bytes_is_read(void **state)
{
    read_identity(cert_with_uri_of_length(IDENTITY_MAX_VALUE_LEN));
    assert_int_equal(strlen(identity_first(&g_id, ID_URI)), IDENTITY_MAX_VALUE_LEN);
}

static void test_identity_value_of_1025_bytes_is_refused(void **state)
{
    assert_string_equal(identity_refusal(cert_with_uri_of_length(IDENTITY_MAX_VALUE_LEN + 1)),
                        "a uri of the certificate is longer than 1024 bytes");
}

static void test_identity_with_a_5_byte_ip_san_is_refused(void **state)
{
    static const uint8_t five[] = {10, 0, 0, 1, 7};
    cert_t c;
    cert_begin(&c, "01");
    cert_ip_raw(&c, five, sizeof(five));
    assert_string_equal(identity_refusal(cert_end(&c)),
                        "an IP address of the certificate is malformed");
}

/* cert_raw_san adds a subjectAltName extension whose contents are |der| as given. */
static void cert_raw_san(cert_t *c, const uint8_t *der, size_t n)
{
    ASN1_OCTET_STRING *data = ASN1_OCTET_STRING_new();
    assert_non_null(data);
    assert_true(ASN1_OCTET_STRING_set(data, der, (int)n));
    X509_EXTENSION *ext = X509_EXTENSION_create_by_NID(NULL, NID_subject_alt_name, 0, data);
    assert_non_null(ext);
    assert_true(X509_add_ext(c->x, ext, -1));
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(data);
}

static void test_identity_with_a_malformed_san_extension_is_refused(void **state)
{
    /* Reading it as "no SANs" would let a rule that only looks at the CN decide. */
    static const uint8_t garbage[] = {0x30, 0x05, 0x82, 0x09, 'a', 'b', 'c'};
    cert_t c;
    cert_begin(&c, "01");
    cert_name(&c, "CN", "x");
    cert_raw_san(&c, garbage, sizeof(garbage));
    assert_string_equal(identity_refusal(cert_end(&c)),
                        "the certificate's subjectAltName extension is malformed");
}

static void test_identity_with_two_san_extensions_is_refused(void **state)
{
    /* SEQUENCE { [2] "a.example" } */
    static const uint8_t one[] = {0x30, 0x0b, 0x82, 0x09, 'a', '.', 'e',
                                  'x',  'a',  'm',  'p',  'l', 'e'};
    cert_t c;
    cert_begin(&c, "01");
    cert_raw_san(&c, one, sizeof(one));
    cert_raw_san(&c, one, sizeof(one));
    assert_string_equal(identity_refusal(cert_end(&c)),
                        "the certificate has two subjectAltName extensions");
}

static void test_identity_summary_names_cn_uri_dns_and_serial(void **state)
{
    char out[320];
    read_identity(billing_cert());
    identity_summary(&g_id, out, sizeof(out));
    assert_string_equal(out, "CN=billing-client, URI=spiffe://example.org/ns/billing/client, "
                             "DNS=billing.example.org, DNS=pay.example.org, serial 1A2B");
}

static void test_identity_summary_is_cut_with_an_ellipsis(void **state)
{
    char out[20];
    read_identity(billing_cert());
    identity_summary(&g_id, out, sizeof(out));
    assert_string_equal(out, "CN=billing-clien...");
}

/* ---- client rules ----------------------------------------------------------------------- */

/* rule_for loads |clients| and returns the rule the billing certificate gets. */
static int rule_for(const char *clients)
{
    load_clients(clients);
    read_identity(billing_cert());
    return policy_match_client(&g_cfg, &g_id);
}

/* One test per match key: the first rule looks for another value, the second for ours. */
static void match_key_case(const char *key, const char *other, const char *ours)
{
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "  - name: other\n"
             "    match: {%s: \"%s\"}\n"
             "  - name: ours\n"
             "    match: {%s: \"%s\"}\n",
             key, other, key, ours);
    assert_int_equal(rule_for(yaml), 1);
}

static void test_rule_matches_on_cn(void **state)
{
    match_key_case("cn", "billing", "billing-*");
}

static void test_rule_matches_on_o(void **state)
{
    match_key_case("o", "Example", "Example Org");
}

static void test_rule_matches_on_any_ou(void **state)
{
    match_key_case("ou", "us", "eu");
}

static void test_rule_matches_on_dns_ignoring_case(void **state)
{
    match_key_case("dns", "*.example.com", "PAY.Example.ORG");
}

static void test_rule_matches_on_uri(void **state)
{
    match_key_case("uri", "spiffe://example.org/ns/*", "spiffe://example.org/ns/billing/*");
}

static void test_rule_matches_on_ip_cidr(void **state)
{
    match_key_case("ip", "10.2.0.0/16", "10.1.0.0/16");
}

static void test_rule_matches_on_ipv6_cidr(void **state)
{
    match_key_case("ip", "fe80::/10", "fd00::/8");
}

static void test_rule_matches_on_ip_glob(void **state)
{
    match_key_case("ip", "10.1.2.4", "10.1.*.*");
}

static void test_rule_matches_on_email_ignoring_case(void **state)
{
    match_key_case("email", "*@example.com", "billing@example.org");
}

static void test_rule_matches_on_serial_written_with_colons_and_zeros(void **state)
{
    match_key_case("serial", "1a2c", "00:1a:2b");
}

static void test_rule_matches_on_sha256_fingerprint(void **state)
{
    uint8_t md[32];
    unsigned md_len = 0;
    char yaml[1024], ours[100], other[65];
    /* ECDSA signatures differ each time: this one certificate is the client. */
    X509 *x = billing_cert();
    assert_true(X509_digest(x, EVP_sha256(), md, &md_len));
    /* As `openssl x509 -fingerprint` prints it, but in lower case. */
    size_t j = 0;
    for (size_t i = 0; i < 32; i++)
        j += (size_t)snprintf(ours + j, sizeof(ours) - j, "%s%02x", i ? ":" : "", md[i]);
    memset(other, 'a', 64);
    other[64] = '\0';
    snprintf(yaml, sizeof(yaml),
             "  - name: other\n"
             "    match: {sha256: \"%s\"}\n"
             "  - name: ours\n"
             "    match: {sha256: \"%s\"}\n",
             other, ours);
    load_clients(yaml);
    read_identity(x);
    assert_int_equal(policy_match_client(&g_cfg, &g_id), 1);
}

static void test_every_given_key_must_match(void **state)
{
    assert_int_equal(rule_for("  - name: cn-and-uri\n"
                              "    match:\n"
                              "      cn: billing-client\n"
                              "      uri: spiffe://example.org/ns/shipping/client\n"
                              "  - name: cn-and-dns\n"
                              "    match:\n"
                              "      cn: billing-client\n"
                              "      dns: pay.example.org\n"),
                     1);
}

static void test_any_pattern_of_a_key_list_matches(void **state)
{
    assert_int_equal(rule_for("  - name: list\n"
                              "    match:\n"
                              "      uri: [\"spiffe://a/*\", \"spiffe://example.org/**\"]\n"),
                     0);
}

static void test_key_the_certificate_lacks_never_matches(void **state)
{
    cert_t c;
    load_clients("  - name: any-email\n"
                 "    match: {email: \"**\"}\n");
    cert_begin(&c, "01");
    cert_name(&c, "CN", "no-email");
    read_identity(cert_end(&c));
    assert_int_equal(policy_match_client(&g_cfg, &g_id), POLICY_NO_RULE);
}

static void test_empty_match_matches_every_client(void **state)
{
    assert_int_equal(rule_for("  - name: narrow\n"
                              "    match: {cn: nobody}\n"
                              "  - name: everyone\n"
                              "    match: {}\n"),
                     1);
}

static void test_first_matching_rule_wins(void **state)
{
    assert_int_equal(rule_for("  - name: nobody\n"
                              "    match: {cn: nobody}\n"
                              "  - name: by-uri\n"
                              "    match: {uri: \"spiffe://example.org/**\"}\n"
                              "  - name: by-cn\n"
                              "    match: {cn: billing-client}\n"),
                     1);
}

static void test_client_without_a_rule_is_refused_naming_its_identity(void **state)
{
    assert_int_equal(rule_for("  - name: shipping\n"
                              "    match: {uri: \"spiffe://example.org/ns/shipping/*\"}\n"),
                     POLICY_NO_RULE);
    policy_refuse_unmatched(&g_id, &g_d);
    assert_false(g_d.allowed);
    assert_string_equal(g_d.reason, "no_matching_rule");
    assert_string_equal(g_d.detail, "pyroguard: no client rule matches the certificate of "
                                    "CN=billing-client, "
                                    "URI=spiffe://example.org/ns/billing/client, "
                                    "DNS=billing.example.org, DNS=pay.example.org, serial 1A2B");
}

static void test_empty_client_list_refuses_everyone(void **state)
{
    assert_int_equal(rule_for("  []\n"), POLICY_NO_RULE);
}

static void test_decision_without_a_rule_is_refused(void **state)
{
    load_clients("  - name: a\n    match: {}\n");
    g_rule = POLICY_NO_RULE;
    assert_refused(invoke("('billing', 'charge', (), {})"), "no_matching_rule", NULL);
    g_rule = 1;
    assert_refused(invoke("('billing', 'charge', (), {})"), "no_matching_rule", NULL);
}

/* ---- allow and deny --------------------------------------------------------------------- */

static const char kBilling[] = "  - name: billing\n"
                               "    match: {uri: \"spiffe://example.org/ns/billing/*\"}\n"
                               "    allow:\n"
                               "      - {object: billing, methods: [charge, \"get_*\"]}\n"
                               "      - {object: billing, methods: [\"*\"], get: [balance], "
                               "set: [limit]}\n"
                               "      - {object: \"reports.*\", methods: [\"*\"]}\n"
                               "    deny:\n"
                               "      - {object: billing, methods: [refund]}\n"
                               "      - {object: billing, get: [secret], set: [balance]}\n"
                               "      - {object: \"reports.internal\"}\n";

static const char kOnlyBilling[] = "  - name: billing\n"
                                   "    match: {}\n"
                                   "    allow:\n"
                                   "      - {object: billing, methods: [charge]}\n";

static void test_allowed_method_is_allowed_by_its_entry(void **state)
{
    load_for_billing(kBilling);
    assert_allowed(invoke("('billing', 'charge', (12,), {})"));
    assert_int_equal(g_d.entry_kind, 'a');
    assert_int_equal(g_d.entry_index, 0);
    assert_string_equal(entry_text(), "clients[0].allow[0]");
}

static void test_method_glob_allows_matching_names(void **state)
{
    load_for_billing(kBilling);
    assert_allowed(invoke("('billing', 'get_invoice', (), {})"));
    assert_int_equal(g_d.entry_index, 0);
    assert_allowed(invoke("('billing', 'list_invoices', (), {})"));
    assert_int_equal(g_d.entry_index, 1);
}

static void test_method_on_an_object_without_entry_is_refused_for_the_object(void **state)
{
    /* No allow entry names the object at all: the message says so, not "this method". */
    load_for_billing(kBilling);
    assert_refused(invoke("('shipping', 'send', (), {})"), "object_not_allowed",
                   "pyroguard: object 'shipping' is not allowed for client rule 'billing'");
    assert_int_equal(g_d.entry_kind, 0);
    assert_string_equal(entry_text(), "");
}

static void test_method_not_listed_on_an_allowed_object_is_not_allowed(void **state)
{
    load_for_billing(kOnlyBilling);
    assert_refused(invoke("('billing', 'refund', (), {})"), "not_allowed",
                   "pyroguard: method 'refund' of object 'billing' is not allowed for client "
                   "rule 'billing'");
}

static void test_deny_wins_over_allow(void **state)
{
    load_for_billing(kBilling);
    assert_refused(invoke("('billing', 'refund', (12,), {})"), "denied_by_rule",
                   "pyroguard: method 'refund' of object 'billing' is denied for client rule "
                   "'billing'");
    assert_int_equal(g_d.entry_kind, 'd');
    assert_int_equal(g_d.entry_index, 0);
    assert_string_equal(entry_text(), "clients[0].deny[0]");
}

static void test_object_glob_stays_inside_a_segment(void **state)
{
    load_for_billing(kBilling);
    assert_allowed(invoke("('reports.daily', 'fetch', (), {})"));
    assert_refused(invoke("('reports.daily.raw', 'fetch', (), {})"), "object_not_allowed", NULL);
    assert_refused(invoke("('reports', 'fetch', (), {})"), "object_not_allowed", NULL);
}

static void test_nameless_deny_blocks_every_name_of_the_object(void **state)
{
    load_for_billing(kBilling);
    assert_refused(invoke("('reports.internal', 'fetch', (), {})"), "denied_by_rule",
                   "pyroguard: method 'fetch' of object 'reports.internal' is denied for client "
                   "rule 'billing'");
    assert_int_equal(g_d.entry_index, 2);
    assert_refused(invoke("('reports.internal', '__getattr__', ('size',), {})"), "denied_by_rule",
                   NULL);
    assert_refused(invoke("('reports.internal', '__setattr__', ('size', 1), {})"), "denied_by_rule",
                   NULL);
}

static void test_nameless_deny_blocks_the_object_at_connect(void **state)
{
    load_for_billing(kBilling);
    assert_refused(connect_with("{'handshake': 'hello', 'object': 'reports.internal'}", 1),
                   "denied_by_rule",
                   "pyroguard: object 'reports.internal' is denied for client rule 'billing'");
    assert_string_equal(entry_text(), "clients[0].deny[2]");
}

static void test_nameless_deny_hides_the_object_from_get_metadata(void **state)
{
    load_for_billing(kBilling);
    assert_refused(invoke("('Pyro.Daemon', 'get_metadata', ('reports.internal',), {})"),
                   "denied_by_rule",
                   "pyroguard: metadata of object 'reports.internal' is denied for client rule "
                   "'billing'");
}

static void test_methods_list_does_not_open_property_reads(void **state)
{
    load_clients("  - name: r\n"
                 "    match: {}\n"
                 "    allow:\n"
                 "      - {object: acct, methods: [balance]}\n");
    read_identity(billing_cert());
    g_rule = policy_match_client(&g_cfg, &g_id);
    assert_allowed(invoke("('acct', 'balance', (), {})"));
    assert_refused(invoke("('acct', '__getattr__', ('balance',), {})"), "not_allowed",
                   "pyroguard: reading property 'balance' of object 'acct' is not allowed for "
                   "client rule 'r'");
}

static void test_get_list_allows_reads_but_not_writes(void **state)
{
    load_for_billing(kBilling);
    assert_allowed(invoke("('billing', '__getattr__', ('balance',), {})"));
    assert_int_equal(g_d.entry_index, 1);
    assert_refused(invoke("('billing', '__setattr__', ('balance', 0), {})"), "denied_by_rule",
                   "pyroguard: writing property 'balance' of object 'billing' is denied for "
                   "client rule 'billing'");
    assert_refused(invoke("('billing', '__getattr__', ('limit',), {})"), "not_allowed", NULL);
}

static void test_set_list_allows_writes(void **state)
{
    load_for_billing(kBilling);
    assert_allowed(invoke("('billing', '__setattr__', ('limit', 100), {})"));
    assert_int_equal(g_d.entry_index, 1);
}

static void test_deny_of_a_property_read_leaves_the_method_of_that_name(void **state)
{
    load_for_billing(kBilling);
    assert_refused(invoke("('billing', '__getattr__', ('secret',), {})"), "denied_by_rule", NULL);
    assert_int_equal(g_d.entry_index, 1);
    assert_allowed(invoke("('billing', 'secret', (), {})"));
}

static void test_batch_is_allowed_when_every_name_is(void **state)
{
    load_for_billing(kBilling);
    assert_allowed(invoke_flags("('billing', '<batch>', [('charge', (1,), {}), "
                                "('get_invoice', (), {})], {})",
                                FLAG4_BATCH));
    assert_int_equal(g_d.name_index, 1);
}

static void test_batch_refusal_names_the_first_refused_name(void **state)
{
    load_for_billing(kBilling);
    assert_refused(invoke_flags("('billing', '<batch>', [('charge', (1,), {}), "
                                "('refund', (1,), {}), ('close', (), {})], {})",
                                FLAG4_BATCH),
                   "denied_by_rule",
                   "pyroguard: batch method 'refund' of object 'billing' is denied for client "
                   "rule 'billing'");
    assert_int_equal(g_d.name_index, 1);
}

static void test_batch_with_a_name_not_allowed_is_refused(void **state)
{
    load_clients("  - name: r\n"
                 "    match: {}\n"
                 "    allow:\n"
                 "      - {object: acct, methods: [a, b]}\n");
    g_rule = 0;
    assert_refused(invoke_flags("('acct', '<batch>', [('a', (), {}), ('b', (), {}), "
                                "('c', (), {})], {})",
                                FLAG4_BATCH),
                   "not_allowed",
                   "pyroguard: batch method 'c' of object 'acct' is not allowed for client rule "
                   "'r'");
    assert_int_equal(g_d.name_index, 2);
}

static void test_name_of_1024_bytes_is_judged_and_1025_is_too_long(void **state)
{
    char payload[2200];
    char name[1100];
    load_clients("  - name: r\n"
                 "    match: {}\n"
                 "    allow:\n"
                 "      - {object: acct, methods: [\"*\"]}\n");
    g_rule = 0;
    memset(name, 'm', 1024);
    name[1024] = '\0';
    snprintf(payload, sizeof(payload), "('acct', '%s', (), {})", name);
    assert_allowed(invoke(payload));
    name[1024] = 'm';
    name[1025] = '\0';
    snprintf(payload, sizeof(payload), "('acct', '%s', (), {})", name);
    assert_refused(invoke(payload), "name_too_long", "pyroguard: name longer than 1024 bytes");
}

static void test_object_id_of_1025_bytes_is_too_long(void **state)
{
    char payload[2200];
    char obj[1100];
    load_clients("  - name: r\n"
                 "    match: {}\n"
                 "    allow:\n"
                 "      - {object: \"**\", methods: [\"*\"]}\n");
    g_rule = 0;
    memset(obj, 'o', 1025);
    obj[1025] = '\0';
    snprintf(payload, sizeof(payload), "('%s', 'm', (), {})", obj);
    assert_refused(invoke(payload), "name_too_long", "pyroguard: object id longer than 1024 bytes");
    snprintf(payload, sizeof(payload), "{'handshake': 'hello', 'object': '%s'}", obj);
    assert_refused(connect_with(payload, 1), "name_too_long",
                   "pyroguard: object id longer than 1024 bytes");
    obj[1024] = '\0';
    snprintf(payload, sizeof(payload), "('%s', 'm', (), {})", obj);
    assert_allowed(invoke(payload));
}

static void test_refusal_renders_unprintable_object_bytes(void **state)
{
    load_for_billing(kBilling);
    assert_refused(invoke("('ship\\x01ping', 'send', (), {})"), "object_not_allowed",
                   "pyroguard: object 'ship\\x01ping' is not allowed for client rule 'billing'");
}

/* ---- CONNECT ---------------------------------------------------------------------------- */

static void test_connect_without_object_is_allowed(void **state)
{
    load_for_billing(kBilling);
    assert_allowed(connect_with("{'handshake': 'hello'}", 0));
    /* Nothing is named: having a rule is all it takes, no entry decides. */
    assert_int_equal(g_d.entry_kind, 0);
}

static void test_connect_asking_for_metadata_without_object_is_refused(void **state)
{
    load_for_billing(kBilling);
    assert_refused(connect_with("{'handshake': 'hello'}", 1), "malformed_call",
                   "pyroguard: CONNECT asks for metadata without naming an object");
}

static void test_connect_for_metadata_of_an_allowed_object_is_allowed(void **state)
{
    load_for_billing(kBilling);
    assert_allowed(connect_with("{'handshake': 'hello', 'object': 'billing'}", 1));
    assert_int_equal(g_d.entry_kind, 'a');
    assert_string_equal(entry_text(), "clients[0].allow[0]");
}

static void test_connect_for_metadata_of_another_object_is_refused(void **state)
{
    load_for_billing(kBilling);
    assert_refused(connect_with("{'handshake': 'hello', 'object': 'shipping'}", 1),
                   "object_not_allowed",
                   "pyroguard: object 'shipping' is not allowed for client rule 'billing'");
}

static void test_connect_for_metadata_of_the_daemon_is_allowed(void **state)
{
    load_for_billing(kBilling);
    assert_allowed(connect_with("{'handshake': 'hello', 'object': 'Pyro.Daemon'}", 1));
}

/* ---- Pyro.Daemon ------------------------------------------------------------------------ */

static const char *const kStreamCalls[] = {
    "('Pyro.Daemon', 'ping', (), {})",
    "('Pyro.Daemon', 'get_next_stream_item', ('f81d4fae',), {})",
    "('Pyro.Daemon', 'close_stream', ('f81d4fae',), {})",
};

static void test_daemon_ping_and_stream_methods_come_with_every_rule_that_allows(void **state)
{
    load_for_billing(kOnlyBilling);
    for (size_t i = 0; i < sizeof(kStreamCalls) / sizeof(kStreamCalls[0]); i++) {
        assert_allowed(invoke(kStreamCalls[i]));
        assert_int_equal(g_d.entry_kind, 'p');
        assert_string_equal(entry_text(), "built-in Pyro.Daemon rule");
    }
}

static void test_rule_that_allows_nothing_gets_no_daemon_methods(void **state)
{
    load_clients("  - name: nothing\n    match: {}\n");
    g_rule = 0;
    for (size_t i = 0; i < sizeof(kStreamCalls) / sizeof(kStreamCalls[0]); i++)
        assert_refused(invoke(kStreamCalls[i]), "not_allowed", NULL);
    assert_refused(invoke("('Pyro.Daemon', 'get_metadata', ('billing',), {})"), "not_allowed",
                   "pyroguard: method 'get_metadata' of object 'Pyro.Daemon' is not allowed for "
                   "client rule 'nothing'");
}

static void test_daemon_builtins_are_only_on_the_daemon(void **state)
{
    load_for_billing(kOnlyBilling);
    assert_refused(invoke("('billing', 'ping', (), {})"), "not_allowed", NULL);
    assert_refused(invoke("('Pyro.DaemonX', 'ping', (), {})"), "object_not_allowed", NULL);
}

static void test_get_metadata_of_an_allowed_object_is_allowed(void **state)
{
    load_for_billing(kOnlyBilling);
    assert_allowed(invoke("('Pyro.Daemon', 'get_metadata', ('billing',), {})"));
    assert_allowed(invoke("('Pyro.Daemon', 'get_metadata', ('billing', True), {})"));
}

static void test_get_metadata_of_an_object_not_allowed_is_refused(void **state)
{
    load_for_billing(kOnlyBilling);
    assert_refused(invoke("('Pyro.Daemon', 'get_metadata', ('shipping',), {})"),
                   "object_not_allowed",
                   "pyroguard: metadata of object 'shipping' is not allowed for client rule "
                   "'billing'");
}

static void test_get_metadata_reads_the_object_from_kwargs(void **state)
{
    load_for_billing(kOnlyBilling);
    assert_allowed(invoke("('Pyro.Daemon', 'get_metadata', (), {'objectId': 'billing'})"));
    assert_refused(invoke("('Pyro.Daemon', 'get_metadata', (), {'objectId': 'shipping'})"),
                   "object_not_allowed", NULL);
    assert_allowed(invoke("('Pyro.Daemon', 'get_metadata', (), {'objectId': 'billing', "
                          "'as_lists': True})"));
}

static void test_get_metadata_without_a_str_object_is_malformed(void **state)
{
    static const char *const calls[] = {
        "('Pyro.Daemon', 'get_metadata', (), {})",
        "('Pyro.Daemon', 'get_metadata', (42,), {})",
        "('Pyro.Daemon', 'get_metadata', (b'billing',), {})",
        "('Pyro.Daemon', 'get_metadata', (), {'objectId': None})",
        "('Pyro.Daemon', 'get_metadata', (), {'object': 'billing'})",
        "('Pyro.Daemon', 'get_metadata', (), None)",
        "('Pyro.Daemon', 'get_metadata', 'billing', {})",
    };
    load_for_billing(kOnlyBilling);
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++)
        assert_refused(invoke(calls[i]), "malformed_call",
                       "pyroguard: Pyro.Daemon.get_metadata needs one object id (a str)");
}

static void test_get_metadata_with_the_object_given_twice_is_malformed(void **state)
{
    /* The daemon raises TypeError; which of the two would be checked is not worth guessing. */
    load_for_billing(kOnlyBilling);
    assert_refused(invoke("('Pyro.Daemon', 'get_metadata', ('billing',), "
                          "{'objectId': 'billing'})"),
                   "malformed_call", NULL);
}

static void test_get_metadata_inside_a_batch_checks_each_target(void **state)
{
    load_for_billing(kOnlyBilling);
    assert_refused(invoke_flags("('Pyro.Daemon', '<batch>', [('ping', (), {}), "
                                "('get_metadata', ('billing',), {}), "
                                "('get_metadata', ('shipping',), {})], {})",
                                FLAG4_BATCH),
                   "object_not_allowed", NULL);
    assert_int_equal(g_d.name_index, 2);
}

static void test_get_metadata_of_a_target_longer_than_1024_bytes_is_refused(void **state)
{
    char payload[2200], obj[1100];
    load_for_billing(kOnlyBilling);
    memset(obj, 'o', 1025);
    obj[1025] = '\0';
    snprintf(payload, sizeof(payload), "('Pyro.Daemon', 'get_metadata', ('%s',), {})", obj);
    assert_refused(invoke(payload), "name_too_long", NULL);
}

static void test_registered_and_info_are_refused_with_a_double_star_object(void **state)
{
    load_clients("  - name: wide\n"
                 "    match: {}\n"
                 "    allow:\n"
                 "      - {object: \"**\", methods: [\"*\"]}\n");
    g_rule = 0;
    assert_refused(invoke("('Pyro.Daemon', 'registered', (), {})"), "not_allowed",
                   "pyroguard: method 'registered' of object 'Pyro.Daemon' is allowed only by an "
                   "entry naming the object \"Pyro.Daemon\" literally (client rule 'wide')");
    assert_refused(invoke("('Pyro.Daemon', 'info', (), {})"), "not_allowed", NULL);
    /* The built-ins still come with the rule. */
    assert_allowed(invoke("('Pyro.Daemon', 'ping', (), {})"));
    assert_int_equal(g_d.entry_kind, 'p');
}

static void test_registered_is_refused_with_a_daemon_glob_object(void **state)
{
    load_clients("  - name: glob\n"
                 "    match: {}\n"
                 "    allow:\n"
                 "      - {object: \"Pyro.*\", methods: [registered, info]}\n");
    g_rule = 0;
    assert_refused(invoke("('Pyro.Daemon', 'registered', (), {})"), "not_allowed", NULL);
}

static void test_registered_and_info_are_allowed_with_a_literal_daemon_entry(void **state)
{
    load_clients("  - name: ops\n"
                 "    match: {}\n"
                 "    allow:\n"
                 "      - {object: billing, methods: [charge]}\n"
                 "      - {object: [\"Pyro.Daemon\"], methods: [registered, info]}\n");
    g_rule = 0;
    assert_allowed(invoke("('Pyro.Daemon', 'registered', (), {})"));
    assert_int_equal(g_d.entry_kind, 'a');
    assert_int_equal(g_d.entry_index, 1);
    assert_allowed(invoke("('Pyro.Daemon', 'info', (), {})"));
}

static void test_deny_entries_apply_to_the_daemon(void **state)
{
    load_clients("  - name: r\n"
                 "    match: {}\n"
                 "    allow:\n"
                 "      - {object: billing, methods: [charge]}\n"
                 "    deny:\n"
                 "      - {object: \"Pyro.Daemon\", methods: [ping]}\n");
    g_rule = 0;
    assert_refused(invoke("('Pyro.Daemon', 'ping', (), {})"), "denied_by_rule", NULL);
    assert_allowed(invoke("('Pyro.Daemon', 'close_stream', ('x',), {})"));
}

static void test_get_metadata_allowed_on_the_daemon_still_checks_its_target(void **state)
{
    /* An entry opening every method of Pyro.Daemon must not reveal what a deny entry hides. */
    load_clients("  - name: ops\n"
                 "    match: {}\n"
                 "    allow:\n"
                 "      - {object: \"Pyro.Daemon\", methods: [\"*\"]}\n"
                 "      - {object: \"**\", methods: [\"*\"]}\n"
                 "    deny:\n"
                 "      - {object: secret}\n");
    g_rule = 0;
    assert_refused(invoke("('Pyro.Daemon', 'get_metadata', ('secret',), {})"), "denied_by_rule",
                   "pyroguard: metadata of object 'secret' is denied for client rule 'ops'");
    assert_allowed(invoke("('Pyro.Daemon', 'get_metadata', ('billing',), {})"));
    assert_allowed(invoke("('Pyro.Daemon', 'registered', (), {})"));
}

static void test_property_of_the_daemon_needs_a_literal_entry(void **state)
{
    load_clients("  - name: r\n"
                 "    match: {}\n"
                 "    allow:\n"
                 "      - {object: \"**\", methods: [\"*\"], get: [\"*\"]}\n");
    g_rule = 0;
    assert_refused(invoke("('Pyro.Daemon', '__getattr__', ('transportServer',), {})"),
                   "not_allowed", NULL);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_identity_reads_every_field_of_a_certificate),
        T(test_identity_field_names_are_the_match_keys),
        T(test_identity_serial_is_upper_case_hex_without_leading_zeros),
        T(test_identity_sha256_is_the_fingerprint_of_the_der),
        T(test_identity_of_a_certificate_without_sans_has_subject_and_hashes),
        T(test_identity_converts_a_bmpstring_cn_to_utf8),
        T(test_identity_with_a_nul_in_a_dns_san_is_refused),
        T(test_identity_with_a_control_character_in_a_uri_is_refused),
        T(test_identity_with_a_control_character_in_the_cn_is_refused),
        T(test_identity_with_a_delete_character_in_an_email_is_refused),
        T(test_identity_of_exactly_64_names_is_read),
        T(test_identity_of_more_than_64_names_is_refused),
        T(test_identity_value_of_1024_bytes_is_read),
        T(test_identity_value_of_1025_bytes_is_refused),
        T(test_identity_with_a_5_byte_ip_san_is_refused),
        T(test_identity_with_a_malformed_san_extension_is_refused),
        T(test_identity_with_two_san_extensions_is_refused),
        T(test_identity_summary_names_cn_uri_dns_and_serial),
        T(test_identity_summary_is_cut_with_an_ellipsis),
        T(test_rule_matches_on_cn),
        T(test_rule_matches_on_o),
        T(test_rule_matches_on_any_ou),
        T(test_rule_matches_on_dns_ignoring_case),
        T(test_rule_matches_on_uri),
        T(test_rule_matches_on_ip_cidr),
        T(test_rule_matches_on_ipv6_cidr),
        T(test_rule_matches_on_ip_glob),
        T(test_rule_matches_on_email_ignoring_case),
        T(test_rule_matches_on_serial_written_with_colons_and_zeros),
        T(test_rule_matches_on_sha256_fingerprint),
        T(test_every_given_key_must_match),
        T(test_any_pattern_of_a_key_list_matches),
        T(test_key_the_certificate_lacks_never_matches),
        T(test_empty_match_matches_every_client),
        T(test_first_matching_rule_wins),
        T(test_client_without_a_rule_is_refused_naming_its_identity),
        T(test_empty_client_list_refuses_everyone),
        T(test_decision_without_a_rule_is_refused),
        T(test_allowed_method_is_allowed_by_its_entry),
        T(test_method_glob_allows_matching_names),
        T(test_method_on_an_object_without_entry_is_refused_for_the_object),
        T(test_method_not_listed_on_an_allowed_object_is_not_allowed),
        T(test_deny_wins_over_allow),
        T(test_object_glob_stays_inside_a_segment),
        T(test_nameless_deny_blocks_every_name_of_the_object),
        T(test_nameless_deny_blocks_the_object_at_connect),
        T(test_nameless_deny_hides_the_object_from_get_metadata),
        T(test_methods_list_does_not_open_property_reads),
        T(test_get_list_allows_reads_but_not_writes),
        T(test_set_list_allows_writes),
        T(test_deny_of_a_property_read_leaves_the_method_of_that_name),
        T(test_batch_is_allowed_when_every_name_is),
        T(test_batch_refusal_names_the_first_refused_name),
        T(test_batch_with_a_name_not_allowed_is_refused),
        T(test_name_of_1024_bytes_is_judged_and_1025_is_too_long),
        T(test_object_id_of_1025_bytes_is_too_long),
        T(test_refusal_renders_unprintable_object_bytes),
        T(test_connect_without_object_is_allowed),
        T(test_connect_asking_for_metadata_without_object_is_refused),
        T(test_connect_for_metadata_of_an_allowed_object_is_allowed),
        T(test_connect_for_metadata_of_another_object_is_refused),
        T(test_connect_for_metadata_of_the_daemon_is_allowed),
        T(test_daemon_ping_and_stream_methods_come_with_every_rule_that_allows),
        T(test_rule_that_allows_nothing_gets_no_daemon_methods),
        T(test_daemon_builtins_are_only_on_the_daemon),
        T(test_get_metadata_of_an_allowed_object_is_allowed),
        T(test_get_metadata_of_an_object_not_allowed_is_refused),
        T(test_get_metadata_reads_the_object_from_kwargs),
        T(test_get_metadata_without_a_str_object_is_malformed),
        T(test_get_metadata_with_the_object_given_twice_is_malformed),
        T(test_get_metadata_inside_a_batch_checks_each_target),
        T(test_get_metadata_of_a_target_longer_than_1024_bytes_is_refused),
        T(test_registered_and_info_are_refused_with_a_double_star_object),
        T(test_registered_is_refused_with_a_daemon_glob_object),
        T(test_registered_and_info_are_allowed_with_a_literal_daemon_entry),
        T(test_deny_entries_apply_to_the_daemon),
        T(test_get_metadata_allowed_on_the_daemon_still_checks_its_target),
        T(test_property_of_the_daemon_needs_a_literal_entry),
    };
    return cmocka_run_group_tests_name("policy", tests, testcert_make_key, testcert_free_key);
}
