/* fuzz_policy: libFuzzer target for the policy's patterns (proxy/pattern.c).
 *
 * An input is a mode byte, a pattern, a NUL, and a subject (which may hold NULs):
 *   mode % 5: 0 glob, 1 glob ignoring case (dns, email), 2 ip (CIDR or glob), 3 serial,
 *   4 SHA-256 fingerprint.
 * The pattern is compiled as the configuration loader would, then matched against the subject
 * and checked against pattern.h's promises:
 *  - a refusal always says why; a glob is refused exactly when it is empty, longer than
 *    PATTERN_MAX_LEN or holds a control character;
 *  - glob matching agrees with a slow reference matcher written here from pattern.h (a run of
 *    two or more stars crosses '/' and '.', a single star does not), memoised so that it
 *    stays polynomial on inputs such as "*a*a*a*a*b";
 *  - a pattern without '*' matches exactly itself; every glob matches its own text with the
 *    stars taken out; `**` matches every subject up to PATTERN_MAX_SUBJECT bytes and none
 *    longer; no pattern matches a subject longer than PATTERN_MAX_SUBJECT;
 *  - a CIDR prefix matches exactly the addresses of its family whose leading bits are the
 *    prefix's (checked bit by bit here), including its own network address;
 *  - a hex pattern is normalised (upper case, no ':', no leading zero for a serial, 64 digits
 *    for a fingerprint), matches its own text, and normalising it again changes nothing;
 *  - a pattern's screen passes every subject the pattern matches. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pattern.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* ---- the reference glob matcher ---------------------------------------------------------- */

#define REF_MAX 300 /* longest pattern and subject cross-checked (the memo is REF_MAX^2) */

typedef struct {
    const char *p;
    size_t pn;
    const char *s;
    size_t sn;
    int nocase;
    int8_t memo[(REF_MAX + 1) * (REF_MAX + 1)]; /* -1 unknown, else the answer */
} ref_t;

static int ref_sep(char c)
{
    return c == '/' || c == '.';
}

static char ref_fold(char c, int nocase)
{
    return (nocase && c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* ref_at: does p[pi..] match s[si..]? */
static int ref_at(ref_t *r, size_t pi, size_t si)
{
    int8_t *m = &r->memo[pi * (REF_MAX + 1) + si];
    if (*m >= 0)
        return *m;
    int ok = 0;
    if (pi == r->pn) {
        ok = si == r->sn;
    } else if (r->p[pi] == '*') {
        size_t run = 1;
        while (pi + run < r->pn && r->p[pi + run] == '*')
            run++;
        for (size_t k = si; k <= r->sn && !ok; k++) {
            ok = ref_at(r, pi + run, k);
            if (run == 1 && k < r->sn && ref_sep(r->s[k]))
                break; /* a single star ends where the segment does */
        }
    } else {
        ok = si < r->sn && ref_fold(r->p[pi], r->nocase) == ref_fold(r->s[si], r->nocase) &&
             ref_at(r, pi + 1, si + 1);
    }
    *m = (int8_t)ok;
    return ok;
}

static ref_t g_ref;

static int ref_match(const char *p, size_t pn, const char *s, size_t sn, int nocase)
{
    g_ref.p = p;
    g_ref.pn = pn;
    g_ref.s = s;
    g_ref.sn = sn;
    g_ref.nocase = nocase;
    for (size_t i = 0; i <= pn; i++)
        memset(&g_ref.memo[i * (REF_MAX + 1)], -1, sn + 1);
    return ref_at(&g_ref, 0, 0);
}

/* ---- checks ------------------------------------------------------------------------------ */

static int glob_text_valid(const char *text)
{
    size_t n = strlen(text);
    if (n == 0 || n > PATTERN_MAX_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

static int equal_nocase(const char *a, size_t an, const char *b, size_t bn, int nocase)
{
    if (an != bn)
        return 0;
    for (size_t i = 0; i < an; i++) {
        if (ref_fold(a[i], nocase) != ref_fold(b[i], nocase))
            return 0;
    }
    return 1;
}

/* check_glob checks a compiled glob |p| written as |text| against |s|. */
static void check_glob(const pattern_t *p, const char *text, int nocase, const char *s, size_t n)
{
    size_t tn = strlen(text);
    int got = pattern_match(p, s, n);
    if (n > PATTERN_MAX_SUBJECT)
        CHECK(!got);
    else if (tn <= REF_MAX && n <= REF_MAX)
        CHECK(got == ref_match(text, tn, s, n, nocase));

    if (strchr(text, '*') == NULL) {
        CHECK(p->kind == PATTERN_EXACT);
        CHECK(got == equal_nocase(text, tn, s, n, nocase));
        CHECK(pattern_match(p, text, tn));
        CHECK(pattern_is_literal(p, text) == !nocase);
    } else {
        CHECK(p->kind == PATTERN_GLOB);
        CHECK(!pattern_is_literal(p, text));
    }
    /* Every star may match nothing. */
    char bare[PATTERN_MAX_LEN + 1];
    size_t bn = 0;
    for (size_t i = 0; i < tn; i++) {
        if (text[i] != '*')
            bare[bn++] = text[i];
    }
    CHECK(pattern_match(p, bare, bn));
}

static void check_double_star(const char *s, size_t n)
{
    static pattern_t any;
    static int ready;
    char err[128];
    if (!ready) {
        CHECK(pattern_compile_glob(&any, "**", 0, err, sizeof(err)));
        ready = 1;
    }
    CHECK(pattern_match(&any, s, n) == (n <= PATTERN_MAX_SUBJECT));
}

/* in_prefix computes, independently of pattern.c, whether |s| is an address of the prefix. */
static int in_prefix(const pattern_t *p, const char *s, size_t n)
{
    char text[64];
    uint8_t a[16];
    if (n >= sizeof(text) || memchr(s, '\0', n) != NULL)
        return 0;
    memcpy(text, s, n);
    text[n] = '\0';
    if (inet_pton(p->family == 4 ? AF_INET : AF_INET6, text, a) != 1)
        return 0;
    for (unsigned bit = 0; bit < p->prefix; bit++) {
        unsigned mask = 0x80u >> (bit % 8);
        if ((a[bit / 8] & mask) != (p->addr[bit / 8] & mask))
            return 0;
    }
    return 1;
}

static void check_cidr(const pattern_t *p, const char *s, size_t n)
{
    CHECK(p->family == 4 || p->family == 6);
    CHECK(p->prefix <= (p->family == 4 ? 32u : 128u));
    /* Host bits are zero (refused at compile otherwise). */
    for (unsigned bit = p->prefix; bit < (p->family == 4 ? 32u : 128u); bit++)
        CHECK((p->addr[bit / 8] & (0x80u >> (bit % 8))) == 0);
    CHECK(pattern_match(p, s, n) == in_prefix(p, s, n));
    char net[INET6_ADDRSTRLEN];
    CHECK(inet_ntop(p->family == 4 ? AF_INET : AF_INET6, p->addr, net, sizeof(net)) != NULL);
    CHECK(pattern_match(p, net, strlen(net)));
}

static void check_hex(const pattern_t *p, size_t digits, const char *s, size_t n)
{
    char again[PATTERN_MAX_LEN + 1], norm[PATTERN_MAX_LEN + 1];
    CHECK(p->kind == PATTERN_HEX);
    CHECK(p->len == strlen(p->text));
    for (size_t i = 0; i < p->len; i++)
        CHECK((p->text[i] >= '0' && p->text[i] <= '9') || (p->text[i] >= 'A' && p->text[i] <= 'F'));
    if (digits)
        CHECK(p->len == digits);
    else
        CHECK(p->len >= 1 && (p->text[0] != '0' || p->len == 1));
    CHECK(pattern_hex_normalise(p->text, p->len, digits, again, sizeof(again)));
    CHECK(strcmp(again, p->text) == 0);
    CHECK(pattern_match(p, p->text, p->len));
    if (pattern_hex_normalise(s, n, digits, norm, sizeof(norm)))
        CHECK(pattern_match(p, norm, strlen(norm)) == (strcmp(norm, p->text) == 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[PATTERN_MAX_LEN + 64];
    char err[256];
    pattern_t p;

    if (size < 1)
        return 0;
    int mode = data[0] % 5;
    const uint8_t *rest = data + 1;
    size_t rest_n = size - 1;
    const uint8_t *nul = memchr(rest, '\0', rest_n);
    size_t tn = nul ? (size_t)(nul - rest) : rest_n;
    if (tn >= sizeof(text))
        return 0;
    memcpy(text, rest, tn);
    text[tn] = '\0';
    const char *s = nul ? (const char *)nul + 1 : "";
    size_t n = nul ? rest_n - tn - 1 : 0;

    check_double_star(s, n);
    err[0] = '\0';
    int ok;
    switch (mode) {
    case 0:
    case 1:
        ok = pattern_compile_glob(&p, text, mode, err, sizeof(err));
        CHECK(ok == glob_text_valid(text));
        if (ok)
            check_glob(&p, text, mode, s, n);
        break;
    case 2:
        ok = pattern_compile_ip(&p, text, err, sizeof(err));
        if (ok && p.kind == PATTERN_CIDR)
            check_cidr(&p, s, n);
        else if (ok && p.kind == PATTERN_GLOB)
            check_glob(&p, text, 1, s, n);
        else if (ok)
            CHECK(pattern_match(&p, p.text, p.len)); /* a literal, maybe canonicalised */
        break;
    default:
        ok = pattern_compile_hex(&p, text, mode == 3 ? 0 : 64, err, sizeof(err));
        if (ok)
            check_hex(&p, mode == 3 ? 0 : 64, s, n);
        break;
    }
    if (!ok)
        CHECK(err[0] != '\0');
    if (n > PATTERN_MAX_SUBJECT && ok)
        CHECK(!pattern_match(&p, s, n));
    if (ok) {
        /* A screen may only rule out subjects the pattern refuses (policy_match_client skips
         * a rule on it). */
        pattern_screen_t sc;
        pattern_screen(&p, &sc);
        if (pattern_match(&p, s, n))
            CHECK(pattern_screen_pass(&sc, s, n));
        pattern_free(&p);
    }
    return 0;
}
