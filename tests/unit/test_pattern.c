/* Unit tests for proxy/pattern.c: the globs, CIDR prefixes and hex values of the `clients:`
 * policy (DESIGN.md), compiled once at load and matched on every call.
 *
 * The glob matcher is also checked against a slow recursive reference matcher written here
 * from the rules in pattern.h, over a few thousand random patterns and subjects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pattern.h"

static pattern_t g_p;
static char g_err[256];

static int release(void **state)
{
    pattern_free(&g_p);
    return 0;
}

static void compile_glob(const char *text, int nocase)
{
    g_err[0] = '\0';
    if (!pattern_compile_glob(&g_p, text, nocase, g_err, sizeof(g_err)))
        fail_msg("'%s' refused: %s", text, g_err);
}

static void compile_ip(const char *text)
{
    g_err[0] = '\0';
    if (!pattern_compile_ip(&g_p, text, g_err, sizeof(g_err)))
        fail_msg("'%s' refused: %s", text, g_err);
}

static void compile_hex(const char *text, size_t digits)
{
    g_err[0] = '\0';
    if (!pattern_compile_hex(&g_p, text, digits, g_err, sizeof(g_err)))
        fail_msg("'%s' refused: %s", text, g_err);
}

static int matches(const char *s)
{
    return pattern_match(&g_p, s, strlen(s));
}

/* glob_case compiles |pattern| (case-sensitive) and checks |s| against |want|. */
static void glob_case(const char *pattern, const char *s, int want)
{
    compile_glob(pattern, 0);
    if (matches(s) != want)
        fail_msg("'%s' %s '%s'", pattern, want ? "should match" : "should not match", s);
    pattern_free(&g_p);
}

/* ---- the slow reference matcher --------------------------------------------------------- */

static int ref_is_sep(char c)
{
    return c == '/' || c == '.';
}

static char ref_fold(char c, int nocase)
{
    return (nocase && c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* ref_match reads pattern.h literally: a run of two or more stars matches any run of
 * characters; a single star any run without '/' or '.'; anything else itself. */
static int ref_match(const char *p, size_t pn, const char *s, size_t sn, int nocase)
{
    if (pn == 0)
        return sn == 0;
    if (p[0] == '*') {
        size_t run = 1;
        while (run < pn && p[run] == '*')
            run++;
        for (size_t i = 0; i <= sn; i++) {
            if (ref_match(p + run, pn - run, s + i, sn - i, nocase))
                return 1;
            if (i < sn && run == 1 && ref_is_sep(s[i]))
                return 0;
        }
        return 0;
    }
    if (sn == 0 || ref_fold(p[0], nocase) != ref_fold(s[0], nocase))
        return 0;
    return ref_match(p + 1, pn - 1, s + 1, sn - 1, nocase);
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng % n);
}

/* ---- globs ------------------------------------------------------------------------------ */

static void test_star_stays_inside_a_slash_segment(void **state)
{
    glob_case("spiffe://example.org/ns/*", "spiffe://example.org/ns/billing", 1);
    glob_case("spiffe://example.org/ns/*", "spiffe://example.org/ns/billing/client", 0);
    glob_case("a/*/c", "a/b/c", 1);
    glob_case("a/*/c", "a/b/x/c", 0);
}

static void test_star_stays_inside_a_dot_segment(void **state)
{
    glob_case("Pyro.*", "Pyro.Daemon", 1);
    glob_case("Pyro.*", "Pyro.Daemon.x", 0);
    glob_case("*", "billing", 1);
    glob_case("*", "billing.service", 0);
    glob_case("*.example.org", "api.example.org", 1);
    glob_case("*.example.org", "a.api.example.org", 0);
}

static void test_double_star_crosses_segments(void **state)
{
    glob_case("**", "", 1);
    glob_case("**", "a/b.c/d", 1);
    glob_case("spiffe://example.org/**", "spiffe://example.org/ns/billing/client", 1);
    glob_case("spiffe://example.org/**", "spiffe://example.com/ns", 0);
    glob_case("**.example.org", "a.b.example.org", 1);
    glob_case("a/**/z", "a/b/c/z", 1);
    glob_case("a/**/z", "a//z", 1);
    glob_case("a/**/z", "a/z", 0);
}

static void test_three_or_more_stars_are_a_double_star(void **state)
{
    compile_glob("a***b", 0);
    assert_string_equal(g_p.text, "a**b");
    assert_string_equal(g_p.written, "a***b");
    assert_true(matches("a/x.y/b"));
    pattern_free(&g_p);
    compile_glob("******", 0);
    assert_string_equal(g_p.text, "**");
    assert_true(matches("x/y"));
}

static void test_prefix_suffix_and_middle_stars(void **state)
{
    glob_case("billing-*", "billing-client", 1);
    glob_case("billing-*", "billing-", 1);
    glob_case("billing-*", "billing", 0);
    glob_case("*-client", "billing-client", 1);
    glob_case("*-client", "billing-clients", 0);
    glob_case("team-*-client", "team-7-client", 1);
    glob_case("team-*-client", "team--client", 1);
    glob_case("team-*-client", "team-7-server", 0);
    glob_case("a*b*c", "axxbyyc", 1);
    glob_case("a*b*c", "abc", 1);
    glob_case("a*b*c", "acb", 0);
    glob_case("ab*ba", "aba", 0); /* prefix and suffix may not share the subject's 'b' */
    glob_case("ab*ba", "abba", 1);
}

static void test_star_matches_an_empty_segment(void **state)
{
    glob_case("a/*/b", "a//b", 1);
    glob_case("spiffe://example.org/ns/*", "spiffe://example.org/ns/", 1);
    glob_case("*.example.org", ".example.org", 1);
}

static void test_empty_segments_are_matched_literally(void **state)
{
    glob_case("a//b", "a//b", 1);
    glob_case("a//b", "a/b", 0);
    glob_case("a/*/*/b", "a///b", 1);
    glob_case("a/*/*/b", "a//b", 0);
}

static void test_pattern_without_star_matches_only_itself(void **state)
{
    compile_glob("billing", 0);
    assert_int_equal(g_p.kind, PATTERN_EXACT);
    assert_true(matches("billing"));
    assert_false(matches("billin"));
    assert_false(matches("billingx"));
    assert_false(matches(""));
    assert_false(pattern_match(&g_p, "billing\0", 8));
    assert_true(pattern_is_literal(&g_p, "billing"));
    assert_false(pattern_is_literal(&g_p, "billin"));
}

static void test_a_glob_is_not_a_literal(void **state)
{
    compile_glob("Pyro.*", 0);
    assert_int_equal(g_p.kind, PATTERN_GLOB);
    assert_false(pattern_is_literal(&g_p, "Pyro.*"));
    assert_false(pattern_is_literal(&g_p, "Pyro.Daemon"));
}

static void test_case_matters_by_default(void **state)
{
    glob_case("Pyro.Daemon", "pyro.daemon", 0);
    glob_case("CN-*", "cn-x", 0);
}

static void test_dns_and_email_patterns_ignore_case(void **state)
{
    compile_glob("*.Example.ORG", 1);
    assert_true(matches("API.example.org"));
    assert_true(matches("api.EXAMPLE.org"));
    assert_false(matches("api.example.com"));
    pattern_free(&g_p);
    compile_glob("Alice@Example.org", 1);
    assert_int_equal(g_p.kind, PATTERN_EXACT);
    assert_true(matches("alice@example.ORG"));
    assert_false(matches("alice@example.orgx"));
    /* A case-insensitive pattern is never "literally" one string. */
    assert_false(pattern_is_literal(&g_p, "alice@example.org"));
}

static void test_non_ascii_bytes_are_compared_exactly(void **state)
{
    compile_glob("caf\xc3\xa9-*", 1);
    assert_true(matches("CAF\xc3\xa9-1"));
    assert_false(matches("CAF\xc3\x89-1"));
}

static void test_a_nul_in_the_subject_is_an_ordinary_byte(void **state)
{
    compile_glob("a*", 0);
    assert_true(pattern_match(&g_p, "a\0b", 3));
    pattern_free(&g_p);
    compile_glob("a.b", 0);
    assert_false(pattern_match(&g_p, "a.b\0", 4));
}

/* ---- limits and refusals ---------------------------------------------------------------- */

static void test_empty_pattern_is_refused(void **state)
{
    assert_false(pattern_compile_glob(&g_p, "", 0, g_err, sizeof(g_err)));
    assert_string_equal(g_err, "a pattern must not be empty");
    assert_false(pattern_compile_ip(&g_p, "", g_err, sizeof(g_err)));
    assert_string_equal(g_err, "a pattern must not be empty");
    assert_false(pattern_compile_hex(&g_p, "", 0, g_err, sizeof(g_err)));
    assert_string_equal(g_err, "a pattern must not be empty");
}

static void test_control_characters_are_refused(void **state)
{
    static const char *const bad[] = {"a\tb", "a\nb", "\x01", "ab\x7f", "\x1b[31m"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(pattern_compile_glob(&g_p, bad[i], 0, g_err, sizeof(g_err)));
        assert_string_equal(g_err, "a pattern must not contain control characters");
        assert_false(pattern_compile_hex(&g_p, bad[i], 0, g_err, sizeof(g_err)));
        assert_string_equal(g_err, "a pattern must not contain control characters");
    }
}

static void test_pattern_of_1024_characters_is_accepted_and_1025_refused(void **state)
{
    char text[PATTERN_MAX_LEN + 2];
    memset(text, 'a', PATTERN_MAX_LEN);
    text[PATTERN_MAX_LEN] = '\0';
    compile_glob(text, 0);
    assert_true(matches(text));
    pattern_free(&g_p);
    text[PATTERN_MAX_LEN] = 'a';
    text[PATTERN_MAX_LEN + 1] = '\0';
    assert_false(pattern_compile_glob(&g_p, text, 0, g_err, sizeof(g_err)));
    assert_string_equal(g_err, "a pattern must be at most 1024 characters");
}

static void test_subject_longer_than_the_maximum_never_matches(void **state)
{
    char s[PATTERN_MAX_SUBJECT + 2];
    memset(s, 'a', sizeof(s));
    compile_glob("**", 0);
    assert_true(pattern_match(&g_p, s, PATTERN_MAX_SUBJECT));
    assert_false(pattern_match(&g_p, s, PATTERN_MAX_SUBJECT + 1));
    pattern_free(&g_p);
    compile_glob("*", 0);
    assert_true(pattern_match(&g_p, s, PATTERN_MAX_SUBJECT));
    assert_false(pattern_match(&g_p, s, PATTERN_MAX_SUBJECT + 1));
    pattern_free(&g_p);
    compile_glob("a**", 0);
    assert_false(pattern_match(&g_p, s, PATTERN_MAX_SUBJECT + 2));
}

static void test_pathological_patterns_terminate(void **state)
{
    /* A backtracking matcher takes exponential time here; the set-of-positions matcher is
     * |pattern| x |subject|. Only termination and the verdicts are checked, not the time. */
    char s[PATTERN_MAX_SUBJECT + 1];
    memset(s, 'a', PATTERN_MAX_SUBJECT);
    s[PATTERN_MAX_SUBJECT] = '\0';
    static const char *const pats[] = {"*a*a*a*a*a*a*a*a*a*a*a*b", "**a**a**a**a**a**a**b",
                                       "a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*c"};
    for (size_t i = 0; i < sizeof(pats) / sizeof(pats[0]); i++) {
        compile_glob(pats[i], 0);
        assert_false(matches(s));
        pattern_free(&g_p);
    }
    compile_glob("*a*a*a*a*a*a*a*a*a*a*a*a", 0);
    assert_true(matches(s));
}

static void test_pattern_free_is_safe_on_a_zeroed_pattern(void **state)
{
    pattern_t p;
    memset(&p, 0, sizeof(p));
    pattern_free(&p);
    pattern_free(&p);
}

/* ---- IP addresses ----------------------------------------------------------------------- */

static void ip_case(const char *pattern, const char *s, int want)
{
    compile_ip(pattern);
    if (matches(s) != want)
        fail_msg("'%s' %s '%s'", pattern, want ? "should match" : "should not match", s);
    pattern_free(&g_p);
}

static void test_ipv4_cidr_matches_its_network(void **state)
{
    ip_case("10.0.0.0/8", "10.1.2.3", 1);
    ip_case("10.0.0.0/8", "10.255.255.255", 1);
    ip_case("10.0.0.0/8", "11.0.0.0", 0);
    ip_case("192.168.4.0/22", "192.168.7.255", 1);
    ip_case("192.168.4.0/22", "192.168.8.0", 0);
    ip_case("192.168.4.0/22", "192.168.3.255", 0);
    ip_case("10.0.0.0/8", "10.1.2", 0);
    ip_case("10.0.0.0/8", "not an address", 0);
}

static void test_ipv4_cidr_edges_0_and_32(void **state)
{
    ip_case("0.0.0.0/0", "255.255.255.255", 1);
    ip_case("0.0.0.0/0", "1.2.3.4", 1);
    ip_case("0.0.0.0/0", "::1", 0);
    ip_case("10.1.2.3/32", "10.1.2.3", 1);
    ip_case("10.1.2.3/32", "10.1.2.2", 0);
    compile_ip("10.1.2.3/32");
    assert_int_equal(g_p.kind, PATTERN_CIDR);
    assert_int_equal(g_p.family, 4);
    assert_int_equal(g_p.prefix, 32);
    assert_string_equal(g_p.written, "10.1.2.3/32");
}

static void test_ipv6_cidr_matches_its_network(void **state)
{
    ip_case("fd00::/8", "fd12:3456::1", 1);
    ip_case("fd00::/8", "fe80::1", 0);
    ip_case("2001:db8::/32", "2001:db8:ffff::1", 1);
    ip_case("2001:db8::/33", "2001:db8:8000::1", 0);
    ip_case("2001:db8::/33", "2001:db8:7fff::1", 1);
    ip_case("FD00::/8", "fd00::1", 1);
}

static void test_ipv6_cidr_edges_0_and_128(void **state)
{
    ip_case("::/0", "2001:db8::1", 1);
    ip_case("::/0", "::", 1);
    ip_case("::/0", "10.0.0.1", 0);
    ip_case("2001:db8::1/128", "2001:db8::1", 1);
    ip_case("2001:db8::1/128", "2001:db8::2", 0);
}

static void test_cidr_refuses_a_subject_with_a_nul(void **state)
{
    /* Found by fuzz_policy: the address text was handed to inet_pton as a C string. */
    compile_ip("::/7");
    assert_true(pattern_match(&g_p, "f::", 3));
    assert_false(pattern_match(&g_p, "f::\0", 4));
    pattern_free(&g_p);
    compile_ip("10.0.0.0/8");
    assert_false(pattern_match(&g_p, "10.0.0.1\0junk", 13));
}

static void test_cidr_does_not_cross_address_families(void **state)
{
    ip_case("10.0.0.0/8", "::ffff:10.0.0.1", 0);
    ip_case("::ffff:0:0/96", "10.0.0.1", 0);
}

static void test_cidr_with_host_bits_set_is_refused_at_compile(void **state)
{
    assert_false(pattern_compile_ip(&g_p, "10.0.0.1/8", g_err, sizeof(g_err)));
    assert_string_equal(g_err, "'10.0.0.1/8' has bits set after the /8 prefix");
    assert_false(pattern_compile_ip(&g_p, "192.168.5.0/22", g_err, sizeof(g_err)));
    assert_string_equal(g_err, "'192.168.5.0/22' has bits set after the /22 prefix");
    assert_false(pattern_compile_ip(&g_p, "fd00::1/64", g_err, sizeof(g_err)));
    assert_string_equal(g_err, "'fd00::1/64' has bits set after the /64 prefix");
    assert_false(pattern_compile_ip(&g_p, "1.0.0.0/0", g_err, sizeof(g_err)));
    assert_string_equal(g_err, "'1.0.0.0/0' has bits set after the /0 prefix");
}

static void test_malformed_cidr_is_refused(void **state)
{
    static const char *const bad[] = {
        "10.0.0.0/33",
        "fd00::/129",
        "10.0.0.0/",
        "/8",
        "10.0.0.0/8x",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "10.0.0.0/ 8",
        "10.0.0/8",
        "10.*.0.0/8",
        "a.b.c.d/8",
        "10.0.0.0/8/8",
        "10.0.0.0/99999999999999999999999",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char expected[320];
        snprintf(expected, sizeof(expected),
                 "'%s' is not an IP address prefix (e.g. 10.0.0.0/8, fd00::/8)", bad[i]);
        if (pattern_compile_ip(&g_p, bad[i], g_err, sizeof(g_err)))
            fail_msg("'%s' accepted", bad[i]);
        assert_string_equal(g_err, expected);
    }
}

static void test_ip_glob_matches_the_text_form(void **state)
{
    ip_case("10.0.*.*", "10.0.1.2", 1);
    ip_case("10.0.*.*", "10.1.1.2", 0);
    ip_case("10.**", "10.0.1.2", 1);
    ip_case("fd00::*", "fd00::1", 1);
    ip_case("FD00::*", "fd00::abcd", 1);
    ip_case("10.0.0.1", "10.0.0.1", 1);
    ip_case("10.0.0.1", "10.0.0.10", 0);
}

static void test_ipv4_glob_without_four_parts_is_refused(void **state)
{
    /* '*' stays between dots: "10.0.*" could never match an address and would silently shut
     * every client out. */
    static const char *const bad[] = {"10.0.*", "10.*", "10.0.0.*.*", "10.0.0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char expected[320];
        snprintf(expected, sizeof(expected),
                 "'%s' can never match an IPv4 address: write all four parts (10.1.*.*) or a "
                 "prefix (10.1.0.0/16)",
                 bad[i]);
        if (pattern_compile_ip(&g_p, bad[i], g_err, sizeof(g_err)))
            fail_msg("'%s' accepted", bad[i]);
        assert_string_equal(g_err, expected);
    }
    ip_case("10.**", "10.0.1.2", 1);
}

static void test_literal_ipv6_pattern_is_compared_in_canonical_form(void **state)
{
    /* identity.h writes addresses as inet_ntop does; a literal written another way (upper
     * case, zeros spelled out) names the same address and must match it. */
    ip_case("2001:DB8:0:0:0:0:0:1", "2001:db8::1", 1);
    ip_case("2001:db8:0::0:1", "2001:db8::1", 1);
    ip_case("::FFFF:10.0.0.1", "::ffff:10.0.0.1", 1);
    compile_ip("2001:DB8:0:0:0:0:0:1");
    assert_string_equal(g_p.written, "2001:DB8:0:0:0:0:0:1");
}

/* ---- hex values ------------------------------------------------------------------------- */

static void test_serial_is_normalised_case_colons_and_leading_zeros(void **state)
{
    compile_hex("0a:1b:2C", 0);
    assert_int_equal(g_p.kind, PATTERN_HEX);
    assert_string_equal(g_p.text, "A1B2C");
    assert_true(matches("A1B2C"));
    assert_false(matches("0A1B2C"));
    assert_false(matches("a1b2c")); /* subjects come normalised (identity.h) */
    pattern_free(&g_p);
    compile_hex("00:00:00:01", 0);
    assert_string_equal(g_p.text, "1");
    pattern_free(&g_p);
    compile_hex("00", 0);
    assert_string_equal(g_p.text, "0");
    pattern_free(&g_p);
    compile_hex("0", 0);
    assert_string_equal(g_p.text, "0");
}

static void test_serial_that_is_not_hex_is_refused(void **state)
{
    static const char *const bad[] = {"1A*", "0x1A", "1G", ":", "::", "-1A", "1A 2B"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char expected[320];
        snprintf(expected, sizeof(expected),
                 "'%s' is not a serial in hex (':' allowed; no wildcards)", bad[i]);
        if (pattern_compile_hex(&g_p, bad[i], 0, g_err, sizeof(g_err)))
            fail_msg("'%s' accepted", bad[i]);
        assert_string_equal(g_err, expected);
    }
}

static const char kSha[] = "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789ABCDEF";

static void test_sha256_is_64_digits_with_optional_colons(void **state)
{
    char colons[200];
    size_t j = 0;
    for (size_t i = 0; i < 64; i += 2) {
        colons[j++] = kSha[i];
        colons[j++] = kSha[i + 1];
        if (i + 2 < 64)
            colons[j++] = ':';
    }
    colons[j] = '\0';
    compile_hex(colons, 64);
    assert_string_equal(g_p.text,
                        "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF");
    pattern_free(&g_p);
    compile_hex(kSha, 64);
    /* A fingerprint keeps its leading zero: it has a fixed width. */
    assert_int_equal(g_p.text[0], '0');
    assert_true(matches("0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"));
}

static void test_sha256_of_63_or_65_digits_is_refused(void **state)
{
    char text[80];
    memcpy(text, kSha, 63);
    text[63] = '\0';
    assert_false(pattern_compile_hex(&g_p, text, 64, g_err, sizeof(g_err)));
    char expected[320];
    snprintf(expected, sizeof(expected),
             "'%s' is not a SHA-256 fingerprint (64 hex digits, ':' allowed; no wildcards)", text);
    assert_string_equal(g_err, expected);
    memcpy(text, kSha, 64);
    text[64] = 'A';
    text[65] = '\0';
    assert_false(pattern_compile_hex(&g_p, text, 64, g_err, sizeof(g_err)));
    memcpy(text, kSha, 64);
    text[0] = '*';
    text[64] = '\0';
    assert_false(pattern_compile_hex(&g_p, text, 64, g_err, sizeof(g_err)));
}

static void test_hex_normalise_refuses_an_output_too_small(void **state)
{
    char out[4];
    assert_true(pattern_hex_normalise("0ABC", 4, 0, out, sizeof(out)));
    assert_string_equal(out, "ABC");
    assert_false(pattern_hex_normalise("ABCD", 4, 0, out, sizeof(out)));
    char one[1];
    assert_false(pattern_hex_normalise("0", 1, 0, one, sizeof(one)));
}

/* ---- the reference cross-check ---------------------------------------------------------- */

static void test_glob_agrees_with_a_reference_matcher_on_random_inputs(void **state)
{
    static const char alphabet_p[] = "ab/.*A";
    static const char alphabet_s[] = "ab/.Ba";
    char pat[16], subj[20];
    size_t disagreements = 0, matched = 0;

    for (int iter = 0; iter < 200000; iter++) {
        size_t pn = 1 + rnd(10), sn = rnd(14);
        for (size_t i = 0; i < pn; i++)
            pat[i] = alphabet_p[rnd(sizeof(alphabet_p) - 1)];
        pat[pn] = '\0';
        for (size_t i = 0; i < sn; i++)
            subj[i] = alphabet_s[rnd(sizeof(alphabet_s) - 1)];
        subj[sn] = '\0';
        int nocase = (int)rnd(2);
        pattern_t p;
        assert_true(pattern_compile_glob(&p, pat, nocase, g_err, sizeof(g_err)));
        int got = pattern_match(&p, subj, sn);
        int want = ref_match(pat, pn, subj, sn, nocase);
        pattern_free(&p);
        matched += (size_t)want;
        if (got != want && disagreements++ < 5)
            print_message("pattern '%s' nocase %d subject '%s': got %d, reference %d\n", pat,
                          nocase, subj, got, want);
    }
    assert_int_equal(disagreements, 0);
    /* The inputs are not all trivially refused. */
    assert_true(matched > 1000);
}

#define T(f) cmocka_unit_test_teardown(f, release)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_star_stays_inside_a_slash_segment),
        T(test_star_stays_inside_a_dot_segment),
        T(test_double_star_crosses_segments),
        T(test_three_or_more_stars_are_a_double_star),
        T(test_prefix_suffix_and_middle_stars),
        T(test_star_matches_an_empty_segment),
        T(test_empty_segments_are_matched_literally),
        T(test_pattern_without_star_matches_only_itself),
        T(test_a_glob_is_not_a_literal),
        T(test_case_matters_by_default),
        T(test_dns_and_email_patterns_ignore_case),
        T(test_non_ascii_bytes_are_compared_exactly),
        T(test_a_nul_in_the_subject_is_an_ordinary_byte),
        T(test_empty_pattern_is_refused),
        T(test_control_characters_are_refused),
        T(test_pattern_of_1024_characters_is_accepted_and_1025_refused),
        T(test_subject_longer_than_the_maximum_never_matches),
        T(test_pathological_patterns_terminate),
        T(test_pattern_free_is_safe_on_a_zeroed_pattern),
        T(test_ipv4_cidr_matches_its_network),
        T(test_ipv4_cidr_edges_0_and_32),
        T(test_ipv6_cidr_matches_its_network),
        T(test_ipv6_cidr_edges_0_and_128),
        T(test_cidr_refuses_a_subject_with_a_nul),
        T(test_cidr_does_not_cross_address_families),
        T(test_cidr_with_host_bits_set_is_refused_at_compile),
        T(test_malformed_cidr_is_refused),
        T(test_ip_glob_matches_the_text_form),
        T(test_ipv4_glob_without_four_parts_is_refused),
        T(test_literal_ipv6_pattern_is_compared_in_canonical_form),
        T(test_serial_is_normalised_case_colons_and_leading_zeros),
        T(test_serial_that_is_not_hex_is_refused),
        T(test_sha256_is_64_digits_with_optional_colons),
        T(test_sha256_of_63_or_65_digits_is_refused),
        T(test_hex_normalise_refuses_an_output_too_small),
        T(test_glob_agrees_with_a_reference_matcher_on_random_inputs),
    };
    return cmocka_run_group_tests_name("pattern", tests, NULL, NULL);
}
