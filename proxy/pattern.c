#include "pattern.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

static int is_sep(char c)
{
    return c == '/' || c == '.';
}

static char fold(char c, int nocase)
{
    return (nocase && c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
}

static int check_text(const char *text, char *err, size_t err_len)
{
    size_t n = strlen(text);
    if (n == 0) {
        snprintf(err, err_len, "a pattern must not be empty");
        return 0;
    }
    if (n > PATTERN_MAX_LEN) {
        snprintf(err, err_len, "a pattern must be at most %d characters", PATTERN_MAX_LEN);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f) {
            snprintf(err, err_len, "a pattern must not contain control characters");
            return 0;
        }
    }
    return 1;
}

static int set_written(pattern_t *p, const char *text, char *err, size_t err_len)
{
    p->written = pg_strdup(text);
    if (p->written == NULL) {
        snprintf(err, err_len, "out of memory");
        return 0;
    }
    return 1;
}

static uint64_t load8(const char *s)
{
    uint64_t w;
    memcpy(&w, s, sizeof(w));
    return w;
}

/* fold8 lower-cases the ASCII letters of 8 bytes at once (bytes >= 0x80 are left alone). */
static uint64_t fold8(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t low7 = w & ~high;
    uint64_t ge_a = low7 + ones * (0x80 - 'A'); /* high bit set where byte >= 'A' */
    uint64_t gt_z = low7 + ones * (0x7f - 'Z'); /* high bit set where byte > 'Z' */
    uint64_t upper = (ge_a & ~gt_z) & ~w & high;
    return w | (upper >> 2);
}

/* set_probe picks 8 literal characters every match must contain at a known place: the end
 * of an exact text or of a glob's literal prefix (where "spiffe://example.org/ns/team-1/"
 * and ".../ns/billing/" differ), else the start of a long literal suffix. */
static void set_probe(pattern_t *p)
{
    if (p->kind == PATTERN_EXACT || p->kind == PATTERN_HEX) {
        if (p->len >= 8) {
            p->probe_where = 1;
            p->probe_at = p->len - 8;
        }
    } else if (p->prefix_len >= 8) {
        p->probe_where = 1;
        p->probe_at = p->prefix_len - 8;
    } else if (p->suffix_len >= 8) {
        p->probe_where = 2;
        p->probe_at = p->suffix_len;
    }
    if (p->probe_where == 1)
        p->probe = load8(p->text + p->probe_at);
    else if (p->probe_where == 2)
        p->probe = load8(p->text + p->len - p->suffix_len);
}

int pattern_compile_glob(pattern_t *p, const char *text, int nocase, char *err, size_t err_len)
{
    memset(p, 0, sizeof(*p));
    if (!check_text(text, err, err_len))
        return 0;
    size_t n = strlen(text);
    p->text = pg_malloc(n + 1);
    if (p->text == NULL || !set_written(p, text, err, err_len)) {
        snprintf(err, err_len, "out of memory");
        pattern_free(p);
        return 0;
    }
    /* Fold runs of three or more stars into `**`; lower-case when matching ignores case. */
    size_t j = 0, stars = 0;
    for (size_t i = 0; i < n; i++) {
        if (text[i] == '*') {
            if (++stars > 2)
                continue;
        } else {
            stars = 0;
        }
        p->text[j++] = fold(text[i], nocase);
    }
    p->text[j] = '\0';
    p->len = j;
    p->nocase = nocase;
    const char *first = memchr(p->text, '*', p->len);
    if (first == NULL) {
        p->kind = PATTERN_EXACT;
        set_probe(p);
        return 1;
    }
    p->kind = PATTERN_GLOB;
    p->prefix_len = (size_t)(first - p->text);
    size_t last = p->len;
    while (last > 0 && p->text[last - 1] != '*')
        last--;
    p->suffix_len = p->len - last;
    /* Between the prefix and the suffix: one run of stars (at most two, after folding)? */
    size_t run = last - p->prefix_len;
    size_t k = p->prefix_len;
    while (k < last && p->text[k] == '*')
        k++;
    if (k == last)
        p->single_run = (int)run;
    set_probe(p);
    return 1;
}

/* compile_ip_text compiles an address pattern without a prefix length. A literal address is
 * kept in inet_ntop's form, the one identity.h writes: "2001:DB8:0::1" names the same address
 * as "2001:db8::1" and must match it. */
static int compile_ip_text(pattern_t *p, const char *text, char *err, size_t err_len)
{
    uint8_t addr[16];
    char canon[INET6_ADDRSTRLEN];
    /* `*` stops at dots, so an IPv4 glob needs all four parts ("10.1.*.*"): "10.1.*" could
     * never match and would silently shut everyone out. */
    size_t dots = 0;
    for (const char *q = text; *q; q++)
        dots += *q == '.';
    if (dots != 0 && dots != 3 && strchr(text, ':') == NULL && strstr(text, "**") == NULL) {
        memset(p, 0, sizeof(*p));
        snprintf(err, err_len,
                 "'%s' can never match an IPv4 address: write all four parts (10.1.*.*) or a "
                 "prefix (10.1.0.0/16)",
                 text);
        return 0;
    }
    if (!pattern_compile_glob(p, text, 1, err, err_len))
        return 0;
    if (p->kind != PATTERN_EXACT)
        return 1;
    int af = inet_pton(AF_INET, p->text, addr) == 1    ? AF_INET
             : inet_pton(AF_INET6, p->text, addr) == 1 ? AF_INET6
                                                       : 0;
    if (af == 0 || inet_ntop(af, addr, canon, sizeof(canon)) == NULL)
        return 1;
    char *copy = pg_strdup(canon);
    if (copy == NULL) {
        snprintf(err, err_len, "out of memory");
        pattern_free(p);
        return 0;
    }
    free(p->text);
    p->text = copy;
    p->len = strlen(copy);
    p->probe_where = 0;
    set_probe(p);
    return 1;
}

int pattern_compile_ip(pattern_t *p, const char *text, char *err, size_t err_len)
{
    const char *slash = strchr(text, '/');
    if (slash == NULL)
        return compile_ip_text(p, text, err, err_len);

    char addr[64];
    unsigned long bits;
    char *end;
    memset(p, 0, sizeof(*p));
    size_t alen = (size_t)(slash - text);
    if (alen == 0 || alen >= sizeof(addr) || slash[1] < '0' || slash[1] > '9')
        goto bad;
    memcpy(addr, text, alen);
    addr[alen] = '\0';
    bits = strtoul(slash + 1, &end, 10);
    if (*end != '\0')
        goto bad;
    if (inet_pton(AF_INET, addr, p->addr) == 1) {
        p->family = 4;
        if (bits > 32)
            goto bad;
    } else if (inet_pton(AF_INET6, addr, p->addr) == 1) {
        p->family = 6;
        if (bits > 128)
            goto bad;
    } else {
        goto bad;
    }
    p->prefix = (unsigned)bits;
    size_t alen_bytes = p->family == 4 ? 4 : 16;
    for (size_t i = 0; i < alen_bytes; i++) {
        unsigned keep = p->prefix >= (i + 1) * 8 ? 8 : p->prefix > i * 8 ? p->prefix - i * 8 : 0;
        uint8_t mask = keep == 8 ? 0xff : (uint8_t)(0xff00u >> keep);
        if ((p->addr[i] & (uint8_t)~mask) != 0) {
            snprintf(err, err_len, "'%s' has bits set after the /%u prefix", text, p->prefix);
            return 0;
        }
    }
    p->kind = PATTERN_CIDR;
    return set_written(p, text, err, err_len);
bad:
    snprintf(err, err_len, "'%s' is not an IP address prefix (e.g. 10.0.0.0/8, fd00::/8)", text);
    return 0;
}

int pattern_hex_normalise(const char *s, size_t n, size_t exact_digits, char *out, size_t out_len)
{
    size_t j = 0;
    int leading = exact_digits == 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == ':')
            continue;
        if (c >= 'a' && c <= 'f')
            c = (char)(c - ('a' - 'A'));
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F')))
            return 0;
        if (leading && c == '0')
            continue;
        leading = 0;
        if (j + 1 >= out_len)
            return 0;
        out[j++] = c;
    }
    if (exact_digits == 0 && j == 0) {
        /* A serial of zero (only zeros written) is "0"; no digits at all is not a serial. */
        int any = 0;
        for (size_t i = 0; i < n; i++)
            any |= s[i] == '0';
        if (!any || out_len < 2)
            return 0;
        out[j++] = '0';
    }
    if (exact_digits != 0 && j != exact_digits)
        return 0;
    out[j] = '\0';
    return 1;
}

int pattern_compile_hex(pattern_t *p, const char *text, size_t exact_digits, char *err,
                        size_t err_len)
{
    char norm[PATTERN_MAX_LEN + 1];
    memset(p, 0, sizeof(*p));
    if (!check_text(text, err, err_len))
        return 0;
    if (!pattern_hex_normalise(text, strlen(text), exact_digits, norm, sizeof(norm))) {
        if (exact_digits)
            snprintf(err, err_len,
                     "'%s' is not a SHA-256 fingerprint (%zu hex digits, ':' allowed; no "
                     "wildcards)",
                     text, exact_digits);
        else
            snprintf(err, err_len, "'%s' is not a serial in hex (':' allowed; no wildcards)", text);
        return 0;
    }
    p->kind = PATTERN_HEX;
    p->text = pg_strdup(norm);
    if (p->text == NULL || !set_written(p, text, err, err_len)) {
        snprintf(err, err_len, "out of memory");
        pattern_free(p);
        return 0;
    }
    p->len = strlen(norm);
    set_probe(p);
    return 1;
}

static int equal_fold(const char *a, const char *b, size_t n, int nocase)
{
    if (!nocase)
        return memcmp(a, b, n) == 0;
    for (size_t i = 0; i < n; i++) {
        if (fold(a[i], 1) != b[i])
            return 0;
    }
    return 1;
}

/* glob_match runs the pattern over the subject as a set of reachable subject positions
 * (reach[i]: the pattern so far can end at i), one pattern character at a time: a literal
 * moves every position one step on a matching character, `*` extends every position along the
 * segment it is in, `**` reaches everything after the first reachable position. No
 * backtracking: time is |pattern| x |subject| at worst, and there is no worst input. The
 * caller has checked the length, the literal prefix and the literal suffix. */
static int glob_match(const pattern_t *p, const char *s, size_t n)
{
    uint8_t reach[PATTERN_MAX_SUBJECT + 1];
    const char *pt = p->text;
    size_t pn = p->len;

    memset(reach, 0, n + 1);
    size_t lo = p->prefix_len, hi = p->prefix_len; /* reachable positions lie in [lo, hi] */
    reach[lo] = 1;
    for (size_t k = p->prefix_len; k < pn; k++) {
        char c = pt[k];
        if (c == '*' && k + 1 < pn && pt[k + 1] == '*') {
            k++;
            for (size_t i = lo; i <= n; i++)
                reach[i] = 1;
            hi = n;
            continue;
        }
        if (c == '*') {
            for (size_t i = lo; i < n; i++) {
                if (reach[i] && !is_sep(s[i]))
                    reach[i + 1] = 1;
            }
            while (hi < n && reach[hi + 1])
                hi++;
            continue;
        }
        /* A literal: position i survives as i+1 when s[i] matches. Downwards, in place. */
        size_t nlo = n + 1, nhi = 0;
        for (size_t i = hi < n ? hi + 1 : n; i > lo; i--) {
            int ok = reach[i - 1] && fold(s[i - 1], p->nocase) == c;
            reach[i] = (uint8_t)ok;
            if (ok) {
                nlo = i;
                if (nhi == 0)
                    nhi = i;
            }
        }
        reach[lo] = 0;
        if (nhi == 0)
            return 0;
        lo = nlo;
        hi = nhi;
    }
    return reach[n];
}

static int has_sep(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (is_sep(s[i]))
            return 1;
    }
    return 0;
}

/* glob_match_rest finishes a glob whose length and probe passed (out of line, so that the
 * common refusal in pattern_match stays a few instructions). */
static __attribute__((noinline)) int glob_match_rest(const pattern_t *p, const char *s, size_t n)
{
    size_t pre = p->prefix_len, suf = p->suffix_len;
    if (!equal_fold(s, p->text, pre, p->nocase) ||
        !equal_fold(s + n - suf, p->text + p->len - suf, suf, p->nocase))
        return 0;
    /* prefix, one run of stars, suffix: the run must cover exactly the middle. */
    if (p->single_run == 2)
        return 1;
    if (p->single_run == 1)
        return !has_sep(s + pre, n - pre - suf);
    return glob_match(p, s, n);
}

static int cidr_match(const pattern_t *p, const char *s, size_t n)
{
    char text[64];
    uint8_t a[16];
    /* inet_pton reads a C string: "10.0.0.1\0junk" must not pass for "10.0.0.1". */
    if (n >= sizeof(text) || memchr(s, '\0', n) != NULL)
        return 0;
    memcpy(text, s, n);
    text[n] = '\0';
    if (inet_pton(p->family == 4 ? AF_INET : AF_INET6, text, a) != 1)
        return 0;
    unsigned full = p->prefix / 8, rest = p->prefix % 8;
    if (memcmp(a, p->addr, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff00u >> rest);
    return (a[full] & mask) == p->addr[full];
}

int pattern_match(const pattern_t *p, const char *s, size_t n)
{
    if (p->kind == PATTERN_CIDR)
        return cidr_match(p, s, n);
    int glob = p->kind == PATTERN_GLOB;
    if (glob ? (n > PATTERN_MAX_SUBJECT || n < p->prefix_len + p->suffix_len) : n != p->len)
        return 0;
    /* The probe's 8 bytes lie inside the literal characters, which |s| is long enough for. */
    if (p->probe_where != 0) {
        uint64_t w = load8(p->probe_where == 1 ? s + p->probe_at : s + n - p->probe_at);
        if ((p->nocase ? fold8(w) : w) != p->probe)
            return 0;
    }
    return glob ? glob_match_rest(p, s, n) : equal_fold(s, p->text, n, p->nocase);
}

void pattern_screen(const pattern_t *p, pattern_screen_t *out)
{
    memset(out, 0, sizeof(*out));
    out->nocase = (uint8_t)p->nocase;
    switch (p->kind) {
    case PATTERN_CIDR:
        out->max_len = PATTERN_MAX_SUBJECT; /* text forms vary: no probe */
        return;
    case PATTERN_GLOB:
        out->min_len = (uint16_t)(p->prefix_len + p->suffix_len);
        out->max_len = PATTERN_MAX_SUBJECT;
        break;
    default:
        out->min_len = out->max_len = (uint16_t)p->len;
        break;
    }
    out->probe_where = (uint8_t)p->probe_where;
    out->probe_at = (uint16_t)p->probe_at;
    out->probe = p->probe;
}

int pattern_is_literal(const pattern_t *p, const char *s)
{
    return p->kind == PATTERN_EXACT && !p->nocase && strcmp(p->text, s) == 0;
}

void pattern_free(pattern_t *p)
{
    free(p->text);
    free(p->written);
    memset(p, 0, sizeof(*p));
}
