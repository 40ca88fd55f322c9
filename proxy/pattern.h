/* pattern: the patterns of the policy (DESIGN.md `clients:`), compiled once at load.
 *
 * A glob matches a whole string. `*` matches any run of characters inside one segment (it
 * never matches a '/' or a '.'); `**` matches any run, separators included; every other
 * character matches itself. So "spiffe://example.org/ns/" followed by `*` matches
 * ".../ns/billing" but not ".../ns/billing/client"; "Pyro.*" matches "Pyro.Daemon"; "**"
 * matches everything.
 * An IP pattern may instead be a CIDR prefix ("10.0.0.0/8", "fd00::/8"). A hex pattern
 * (certificate serial, SHA-256 fingerprint) is one exact value, compared after
 * normalisation (case, ':' separators, leading zeros of a serial).
 *
 * Matching never allocates and is linear in |pattern| x |subject|; subjects longer than
 * PATTERN_MAX_SUBJECT never match (callers refuse them first: policy.h, identity.h).
 *
 * Ownership: a pattern_t owns its text; pattern_free releases it and is safe on a zeroed
 * pattern_t. */
#ifndef PYROGUARD_PATTERN_H
#define PYROGUARD_PATTERN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PATTERN_MAX_LEN     1024 /* pattern text as written */
#define PATTERN_MAX_SUBJECT 1024 /* longest string a pattern is matched against */

typedef enum {
    PATTERN_EXACT, /* no wildcard: compared as a whole */
    PATTERN_GLOB,
    PATTERN_CIDR,
    PATTERN_HEX, /* normalised hex, compared as a whole */
} pattern_kind_t;

typedef struct {
    pattern_kind_t kind;
    int nocase;        /* ASCII case-insensitive (DNS names, e-mail addresses) */
    char *text;        /* EXACT/GLOB: the pattern, `***…` folded to `**`; HEX: normalised */
    size_t len;        /* of text */
    size_t prefix_len; /* GLOB: literal characters before the first '*' */
    size_t suffix_len; /* GLOB: literal characters after the last '*' */
    /* Derived at compile time, so that most subjects are refused without a loop: */
    int single_run;   /* GLOB: the stars are one run, `*` (1) or `**` (2); 0: several runs */
    int probe_where;  /* 0: no probe; 1: |probe| at probe_at; 2: at probe_at from the end */
    size_t probe_at;  /* where 8 literal characters of the pattern must appear in a subject */
    uint64_t probe;   /* those characters as one word (folded when nocase) */
    char *written;    /* as the operator wrote it, for messages */
    int family;       /* CIDR: 4 or 6 */
    uint8_t addr[16]; /* CIDR: network address, host bits zero */
    unsigned prefix;  /* CIDR: prefix length */
} pattern_t;

/* A screen is the cheap part of a pattern — the subject's length range and 8 literal bytes at
 * a known place — copied where a loop over many rules reads it without following pointers. A
 * subject that fails a pattern's screen never matches the pattern; one that passes must still
 * be matched with pattern_match. */
typedef struct {
    uint64_t probe;
    uint16_t min_len;
    uint16_t max_len;
    uint16_t probe_at;
    uint8_t probe_where; /* as in pattern_t; 0: lengths only */
    uint8_t nocase;
} pattern_screen_t;

/* pattern_compile_glob compiles |text| as a glob. Returns 1, or 0 with the reason in |err|
 * (empty, too long, contains a NUL or a control character). */
int pattern_compile_glob(pattern_t *p, const char *text, int nocase, char *err, size_t err_len);

/* pattern_compile_ip compiles a CIDR prefix when |text| contains '/', else a glob over the
 * text form of an address (inet_ntop: "10.1.2.3", "fd00::1"). */
int pattern_compile_ip(pattern_t *p, const char *text, char *err, size_t err_len);

/* pattern_compile_hex compiles an exact hex value: upper-case, ':' removed; with
 * |exact_digits| 0 (serials) leading zeros are dropped, otherwise the value must have exactly
 * that many digits (64 for a SHA-256 fingerprint). No wildcards. */
int pattern_compile_hex(pattern_t *p, const char *text, size_t exact_digits, char *err,
                        size_t err_len);

/* pattern_match returns 1 if |p| matches the |n| bytes at |s|. For HEX patterns |s| must be
 * normalised the same way (identity.h does). */
int pattern_match(const pattern_t *p, const char *s, size_t n);

/* pattern_is_literal returns 1 if |p| matches exactly one string, |s|. */
int pattern_is_literal(const pattern_t *p, const char *s);

/* pattern_hex_normalise writes |s| normalised as pattern_compile_hex does (|exact_digits| 0:
 * serial) into |out|; returns 0 if |s| is not hex or does not fit. */
int pattern_hex_normalise(const char *s, size_t n, size_t exact_digits, char *out, size_t out_len);

/* pattern_screen fills |out| from |p|. */
void pattern_screen(const pattern_t *p, pattern_screen_t *out);

/* pattern_screen_pass returns 0 if |s| (|n| bytes) cannot match the screened pattern. Inline:
 * it runs once per rule in the loop that finds a client's rule. */
static inline int pattern_screen_pass(const pattern_screen_t *sc, const char *s, size_t n)
{
    uint64_t w;
    if (n < sc->min_len || n > sc->max_len)
        return 0;
    if (sc->probe_where == 0)
        return 1;
    memcpy(&w, sc->probe_where == 1 ? s + sc->probe_at : s + n - sc->probe_at, sizeof(w));
    if (sc->nocase) {
        /* ASCII letters to lower case, 8 bytes at once (as pattern.c's fold8). */
        const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
        uint64_t low7 = w & ~high;
        uint64_t upper = ((low7 + ones * (0x80 - 'A')) & ~(low7 + ones * (0x7f - 'Z'))) & ~w & high;
        w |= upper >> 2;
    }
    return w == sc->probe;
}

void pattern_free(pattern_t *p);

#endif
