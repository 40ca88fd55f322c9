/* marshal: the Pyro4 marshal serializer's payloads, decoded as CPython 3.11 marshal.loads
 * (format version 4, Python/marshal.c r_object) decodes them (PROTOCOL.md §5.3, §9).
 *
 * Accepted, with CPython's meaning:
 *   N T F . S          None, True, False, Ellipsis, StopIteration (VAL_OTHER)
 *   i I l g f y x      ints (int32, int64, 15-bit-digit longs), floats, complexes; the value
 *                      is checked the way CPython checks it but not kept
 *   s                  bytes
 *   u t                str: UTF-8 with surrogatepass (ED A0..BF xx is a lone surrogate, kept
 *                      as those three bytes; every other invalid sequence is refused)
 *   a A z Z            "ASCII" str: CPython builds it with PyUnicode_FromKindAndData(1BYTE),
 *                      so a byte >= 0x80 is the Latin-1 code point U+0080..U+00FF
 *   ) ( [ { < >        tuple, list, dict (pairs until TYPE_NULL, whatever its FLAG_REF bit),
 *                      set, frozenset
 *   r, FLAG_REF        back-references: a flagged object takes the next index when it is
 *                      created (a container before its children); singletons, TYPE_NULL and
 *                      r itself take none even when flagged. A reference shares the value_t.
 *
 * Refused (fail closed):
 *   - code objects (c), unknown type codes, TYPE_NULL anywhere but as the dict terminator;
 *   - trailing bytes: marshal ignores them, so a second, different call could follow the one
 *     the daemon decodes and fool a filter that reads the wrong one (PROTOCOL.md §9);
 *   - negative lengths and counts, truncation, unnormalized longs, digits >= 2^15, float text
 *     outside the plain decimal / inf / nan forms CPython's PyOS_string_to_double accepts
 *     (CPython also stops at an embedded NUL; we refuse it);
 *   - a reference to a container that is still being built (a cycle; CPython builds it, or
 *     fails on a frozenset), an index out of range;
 *   - TYPE_NULL in place of a dict value ({ key 0): CPython ends the dict there and silently
 *     drops the key;
 *   - unhashable dict keys / set members (list, dict, set, or a tuple holding one), as CPython
 *     raises TypeError;
 *   - past the arena's limits: containers nested deeper than max_depth (a top-level tuple is
 *     depth 1; never more than 1999, CPython's own limit), more than max_values values with
 *     references counted as the subtree they stand for (so refs cannot blow up whoever walks
 *     the tree), decoded string bytes past max_string_bytes.
 *
 * Dict pairs stay in wire order, duplicates included (value.h). Set and frozenset members are
 * deduplicated as Python does where the tree can tell equal from unequal: members holding no
 * int, float or complex; the others are all kept (see parse_set). */
#include "decode.h"

#include <string.h>

#include <openssl/bytestring.h>

#define TYPE_NULL                 '0'
#define TYPE_NONE                 'N'
#define TYPE_FALSE                'F'
#define TYPE_TRUE                 'T'
#define TYPE_STOPITER             'S'
#define TYPE_ELLIPSIS             '.'
#define TYPE_INT                  'i'
#define TYPE_INT64                'I'
#define TYPE_FLOAT                'f'
#define TYPE_BINARY_FLOAT         'g'
#define TYPE_COMPLEX              'x'
#define TYPE_BINARY_COMPLEX       'y'
#define TYPE_LONG                 'l'
#define TYPE_STRING               's'
#define TYPE_INTERNED             't'
#define TYPE_REF                  'r'
#define TYPE_TUPLE                '('
#define TYPE_LIST                 '['
#define TYPE_DICT                 '{'
#define TYPE_CODE                 'c'
#define TYPE_UNICODE              'u'
#define TYPE_SET                  '<'
#define TYPE_FROZENSET            '>'
#define TYPE_ASCII                'a'
#define TYPE_ASCII_INTERNED       'A'
#define TYPE_SMALL_TUPLE          ')'
#define TYPE_SHORT_ASCII          'z'
#define TYPE_SHORT_ASCII_INTERNED 'Z'
#define FLAG_REF                  0x80

/* CPython raises "recursion limit exceeded" past 2000 nested r_object calls; a leaf inside the
 * deepest container is one call deeper than it, so containers nest 1999 deep at most. */
#define MARSHAL_MAX_DEPTH 1999

/* What the parent needs to know about a decoded value, refs expanded. */
typedef struct {
    size_t size;        /* values in the subtree, this one included */
    size_t height;      /* containers on the longest path down, this one included */
    uint8_t unhashable; /* list, dict, set, or a tuple holding one */
    uint8_t has_num;    /* an int, float or complex somewhere in it */
} minfo_t;

typedef struct {
    value_t *v; /* NULL while the container is being built */
    minfo_t info;
} mref_t;

typedef struct {
    CBS in;
    value_arena_t *arena;
    size_t max_depth;
    mref_t *refs; /* the reference table, in the arena */
    size_t nrefs, refs_cap;
    value_t **pairs; /* dict pairs being collected (key, value, ...), shared by nested dicts */
    size_t npairs, pairs_cap;
    const char *reason;
} mparser_t;

typedef enum {
    M_ERROR,
    M_OK,
    M_NULL, /* TYPE_NULL: the dict terminator, an error anywhere else */
} mresult_t;

static int fail(mparser_t *p, const char *reason)
{
    p->reason = reason;
    return 0;
}

/* read_count reads an i32 LE length or count; CPython refuses negative ones. */
static int read_count(mparser_t *p, size_t *out)
{
    uint32_t raw;
    if (!CBS_get_u32le(&p->in, &raw))
        return fail(p, "truncated");
    if (raw & 0x80000000u)
        return fail(p, "negative length");
    *out = raw;
    return 1;
}

/* count_fits refuses a declared count of items, each at least one byte, that the input cannot
 * hold, before anything is allocated for them. */
static int count_fits(mparser_t *p, size_t n)
{
    if (n > CBS_len(&p->in))
        return fail(p, "count exceeds input");
    return 1;
}

static value_t *new_value(mparser_t *p, value_type_t type)
{
    value_t *v = value_new(p->arena, type);
    if (v == NULL)
        fail(p, "too many values");
    return v;
}

static value_t **new_items(mparser_t *p, size_t n)
{
    if (n > SIZE_MAX / sizeof(value_t *))
        return fail(p, "out of memory"), NULL;
    value_t **items = value_alloc(p->arena, (n ? n : 1) * sizeof(value_t *));
    if (items == NULL)
        fail(p, "out of memory");
    return items;
}

/* grow doubles an arena array of |*cap| elements of |elem| bytes holding |used| of them. */
static int grow(mparser_t *p, void **array, size_t *cap, size_t used, size_t elem)
{
    size_t ncap = *cap ? *cap * 2 : 16;
    if (ncap > SIZE_MAX / elem)
        return fail(p, "out of memory");
    void *n = value_alloc(p->arena, ncap * elem);
    if (n == NULL)
        return fail(p, "out of memory");
    if (used)
        memcpy(n, *array, used * elem);
    *array = n;
    *cap = ncap;
    return 1;
}

/* ---- reference table --------------------------------------------------------------------- */

/* ref_reserve gives a FLAG_REF object its index as CPython does, when it is created: *out_idx is
 * SIZE_MAX when |flag| is clear. Each entry stands for a value, so max_values bounds them. */
static int ref_reserve(mparser_t *p, int flag, size_t *out_idx)
{
    *out_idx = SIZE_MAX;
    if (!flag)
        return 1;
    if (p->nrefs >= p->arena->limits.max_values)
        return fail(p, "too many values");
    if (p->nrefs == p->refs_cap) {
        void *a = p->refs;
        if (!grow(p, &a, &p->refs_cap, p->nrefs, sizeof(mref_t)))
            return 0;
        p->refs = a;
    }
    memset(&p->refs[p->nrefs], 0, sizeof(mref_t));
    *out_idx = p->nrefs++;
    return 1;
}

static void ref_complete(mparser_t *p, size_t idx, value_t *v, const minfo_t *info)
{
    if (idx == SIZE_MAX)
        return;
    p->refs[idx].v = v;
    p->refs[idx].info = *info;
}

/* parse_ref resolves r: the index must name a finished object. A reference to a container still
 * being built would make a cycle (CPython builds one, or fails for a frozenset); refused. The
 * referenced subtree now also sits at |level|, so it must still fit max_depth there. */
static int parse_ref(mparser_t *p, size_t level, value_t **out, minfo_t *info)
{
    uint32_t raw;
    if (!CBS_get_u32le(&p->in, &raw))
        return fail(p, "truncated");
    if (raw >= p->nrefs)
        return fail(p, "invalid reference");
    const mref_t *r = &p->refs[raw];
    if (r->v == NULL)
        return fail(p, "reference to an unfinished container");
    if (r->info.height > 0 && (level > p->max_depth || r->info.height - 1 > p->max_depth - level))
        return fail(p, "nesting too deep");
    *out = r->v;
    *info = r->info;
    return 1;
}

/* ---- strings ----------------------------------------------------------------------------- */

/* The UTF-8 (surrogatepass) automaton. ED is an ordinary E1-EF lead: with surrogatepass its
 * A0-BF second bytes (the surrogates) decode too. */
enum {
    U_OK, /* between characters */
    U_C1, /* one continuation byte 80-BF to go */
    U_C2, /* two to go */
    U_C3, /* three to go */
    U_E0, /* after E0: A0-BF, then one more */
    U_F0, /* after F0: 90-BF, then two more */
    U_F4, /* after F4: 80-8F, then two more */
    U_NO, /* rejected, for good */
};

/* A shift-based DFA: the row of a byte holds, in 6 bits per state, 6 x the state that byte leads
 * to from that state, so one step is (row >> 6*state) & 63 and does not wait on a second table
 * lookup. ROW lists the next state from U_OK, U_C1, U_C2, U_C3, U_E0, U_F0, U_F4. */
#define U_SHIFT(s) ((uint64_t)(s)*6)
#define ROW(ok, c1, c2, c3, e0, f0, f4)                                                            \
    (U_SHIFT(ok) | U_SHIFT(c1) << 6 | U_SHIFT(c2) << 12 | U_SHIFT(c3) << 18 | U_SHIFT(e0) << 24 |  \
     U_SHIFT(f0) << 30 | U_SHIFT(f4) << 36 | U_SHIFT(U_NO) << 42)
#define ASC ROW(U_OK, U_NO, U_NO, U_NO, U_NO, U_NO, U_NO) /* 00-7F */
#define C80 ROW(U_NO, U_OK, U_C1, U_C2, U_NO, U_NO, U_C2) /* 80-8F */
#define C90 ROW(U_NO, U_OK, U_C1, U_C2, U_NO, U_C2, U_NO) /* 90-9F */
#define CA0 ROW(U_NO, U_OK, U_C1, U_C2, U_C1, U_C2, U_NO) /* A0-BF */
#define L2  ROW(U_C1, U_NO, U_NO, U_NO, U_NO, U_NO, U_NO) /* C2-DF */
#define LE0 ROW(U_E0, U_NO, U_NO, U_NO, U_NO, U_NO, U_NO) /* E0 */
#define L3  ROW(U_C2, U_NO, U_NO, U_NO, U_NO, U_NO, U_NO) /* E1-EF */
#define LF0 ROW(U_F0, U_NO, U_NO, U_NO, U_NO, U_NO, U_NO) /* F0 */
#define L4  ROW(U_C3, U_NO, U_NO, U_NO, U_NO, U_NO, U_NO) /* F1-F3 */
#define LF4 ROW(U_F4, U_NO, U_NO, U_NO, U_NO, U_NO, U_NO) /* F4 */
#define BAD ROW(U_NO, U_NO, U_NO, U_NO, U_NO, U_NO, U_NO) /* C0 C1 F5-FF */

/* clang-format off */
static const uint64_t kUtf8Row[256] = {
    ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, /* 00 */
    ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, /* 10 */
    ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, /* 20 */
    ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, /* 30 */
    ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, /* 40 */
    ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, /* 50 */
    ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, /* 60 */
    ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, ASC, /* 70 */
    C80, C80, C80, C80, C80, C80, C80, C80, C80, C80, C80, C80, C80, C80, C80, C80, /* 80 */
    C90, C90, C90, C90, C90, C90, C90, C90, C90, C90, C90, C90, C90, C90, C90, C90, /* 90 */
    CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, /* A0 */
    CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, CA0, /* B0 */
    BAD, BAD, L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  /* C0 */
    L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  L2,  /* D0 */
    LE0, L3,  L3,  L3,  L3,  L3,  L3,  L3,  L3,  L3,  L3,  L3,  L3,  L3,  L3,  L3,  /* E0 */
    LF0, L4,  L4,  L4,  LF4, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, /* F0 */
};
/* clang-format on */

#define HIGH_BITS 0x8080808080808080ull

/* skip_ascii returns the index of the first non-ASCII byte of d[i..n), or n; 16 at a time. */
static size_t skip_ascii(const uint8_t *d, size_t i, size_t n)
{
    while (n - i >= 16) {
        uint64_t a, b;
        memcpy(&a, d + i, 8);
        memcpy(&b, d + i + 8, 8);
        if ((a | b) & HIGH_BITS)
            break;
        i += 16;
    }
    while (i < n && d[i] < 0x80)
        i++;
    return i;
}

/* utf8_surrogatepass_ok says whether bytes.decode('utf-8', 'surrogatepass') accepts |s|. It reads
 * each byte of the span once, by index below CBS_len. */
static int utf8_surrogatepass_ok(const CBS *s)
{
    const uint8_t *d = CBS_data(s);
    size_t n = CBS_len(s), i = 0;
    uint64_t state = U_SHIFT(U_OK);
    while (i < n) {
        if (state == U_SHIFT(U_OK))
            i = skip_ascii(d, i, n);
        /* Then 32 bytes (or what is left) through the automaton without a branch per byte. */
        size_t end = n - i > 32 ? i + 32 : n;
        for (; i < end; i++)
            state = (kUtf8Row[d[i]] >> state) & 63;
    }
    return state == U_SHIFT(U_OK);
}

static int new_string(mparser_t *p, value_type_t type, size_t len, value_t **out, uint8_t **buf)
{
    *buf = value_alloc_string(p->arena, len);
    if (*buf == NULL)
        return fail(p, "string too long");
    *out = new_value(p, type);
    if (*out == NULL)
        return 0;
    (*out)->u.str.data = *buf;
    (*out)->u.str.len = len;
    return 1;
}

/* parse_bytes_or_utf8 reads s (bytes) and u / t (str, UTF-8 with surrogatepass, which is also
 * exactly the generalized UTF-8 value.h keeps). */
static int parse_bytes_or_utf8(mparser_t *p, value_type_t type, value_t **out)
{
    size_t n;
    CBS s;
    uint8_t *buf;
    if (!read_count(p, &n))
        return 0;
    if (!CBS_get_bytes(&p->in, &s, n))
        return fail(p, "truncated");
    if (type == VAL_STR && !utf8_surrogatepass_ok(&s))
        return fail(p, "invalid UTF-8");
    if (!new_string(p, type, n, out, &buf))
        return 0;
    if (n)
        memcpy(buf, CBS_data(&s), n);
    return 1;
}

/* parse_latin1 reads the "ASCII" strings a A z Z of length |n|: CPython does not check that the
 * bytes are ASCII, it takes each one as a code point (Latin-1), so >= 0x80 becomes 2 bytes. */
static int parse_latin1(mparser_t *p, size_t n, value_t **out)
{
    CBS s;
    uint8_t *buf;
    if (!CBS_get_bytes(&p->in, &s, n))
        return fail(p, "truncated");
    const uint8_t *d = CBS_data(&s);
    if (skip_ascii(d, 0, n) == n) {
        if (!new_string(p, VAL_STR, n, out, &buf))
            return 0;
        if (n)
            memcpy(buf, d, n);
        return 1;
    }

    size_t high = 0;
    for (size_t i = 0; i < n; i++)
        high += d[i] >> 7;
    if (high > SIZE_MAX - n)
        return fail(p, "string too long");
    if (!new_string(p, VAL_STR, n + high, out, &buf))
        return 0;
    /* Converted a chunk at a time into |tmp|, which holds a chunk's worst case. */
    CBB cbb;
    uint8_t tmp[2 * 256];
    CBS chunk;
    int ok = CBB_init_fixed(&cbb, buf, n + high);
    while (ok && CBS_len(&s) > 0) {
        size_t k = CBS_len(&s) < 256 ? CBS_len(&s) : 256, j = 0;
        ok = CBS_get_bytes(&s, &chunk, k);
        const uint8_t *c = CBS_data(&chunk);
        for (size_t i = 0; ok && i < k; i++) {
            if (c[i] < 0x80) {
                tmp[j++] = c[i];
            } else {
                tmp[j++] = (uint8_t)(0xC0 | (c[i] >> 6));
                tmp[j++] = (uint8_t)(0x80 | (c[i] & 0x3F));
            }
        }
        ok = ok && CBB_add_bytes(&cbb, tmp, j);
    }
    ok = ok && CBB_len(&cbb) == n + high;
    CBB_cleanup(&cbb);
    return ok ? 1 : fail(p, "internal error");
}

/* ---- numbers ----------------------------------------------------------------------------- */

/* parse_long checks l as r_PyLong does: i32 digit count n (its sign is the number's), then |n|
 * 15-bit digits as u16 LE, each < 2^15, the last one nonzero. */
static int parse_long(mparser_t *p)
{
    uint32_t raw;
    if (!CBS_get_u32le(&p->in, &raw))
        return fail(p, "truncated");
    if (raw == 0)
        return 1;
    if (raw == 0x80000000u)
        return fail(p, "long size out of range");
    size_t digits = (raw & 0x80000000u) ? (size_t)(~raw + 1u) : (size_t)raw;
    if (digits > CBS_len(&p->in) / 2)
        return fail(p, "truncated");
    uint16_t d = 0;
    for (size_t i = 0; i < digits; i++) {
        if (!CBS_get_u16le(&p->in, &d))
            return fail(p, "truncated");
        if (d >= 0x8000)
            return fail(p, "long digit out of range");
    }
    if (d == 0)
        return fail(p, "unnormalized long");
    return 1;
}

static int is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* word_is says whether |s| is |word| (lower-case ASCII), ignoring ASCII case. */
static int word_is(CBS s, const char *word)
{
    size_t n = strlen(word);
    uint8_t c;
    if (CBS_len(&s) != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!CBS_get_u8(&s, &c))
            return 0;
        if (c >= 'A' && c <= 'Z')
            c = (uint8_t)(c - 'A' + 'a');
        if (c != (uint8_t)word[i])
            return 0;
    }
    return 1;
}

enum { F_START, F_INT, F_DOT, F_FRAC, F_E, F_ESIGN, F_EDIG, F_BAD };

/* float_text_ok accepts a subset of what PyOS_string_to_double(s, NULL, NULL) accepts: an
 * optional sign, then decimal digits with an optional point and exponent, or inf, infinity,
 * nan in any case. No spaces, underscores, hex or NUL. */
static int float_text_ok(CBS s)
{
    uint8_t c;
    CBS peek = s;
    if (CBS_get_u8(&peek, &c) && (c == '+' || c == '-'))
        s = peek;
    if (word_is(s, "inf") || word_is(s, "infinity") || word_is(s, "nan"))
        return 1;
    int state = F_START;
    while (state != F_BAD && CBS_get_u8(&s, &c)) {
        int digit = is_digit(c), point = c == '.', e = c == 'e' || c == 'E';
        switch (state) {
        case F_START:
            state = digit ? F_INT : point ? F_DOT : F_BAD;
            break;
        case F_INT:
            state = digit ? F_INT : point ? F_FRAC : e ? F_E : F_BAD;
            break;
        case F_DOT:
            state = digit ? F_FRAC : F_BAD;
            break;
        case F_FRAC:
            state = digit ? F_FRAC : e ? F_E : F_BAD;
            break;
        case F_E:
            state = digit ? F_EDIG : (c == '+' || c == '-') ? F_ESIGN : F_BAD;
            break;
        case F_ESIGN:
        case F_EDIG:
            state = digit ? F_EDIG : F_BAD;
            break;
        }
    }
    return state == F_INT || state == F_FRAC || state == F_EDIG;
}

/* parse_float_text reads the old text float of f and x: a 1-byte length, then the text. */
static int parse_float_text(mparser_t *p)
{
    uint8_t n;
    CBS s;
    if (!CBS_get_u8(&p->in, &n) || !CBS_get_bytes(&p->in, &s, n))
        return fail(p, "truncated");
    if (!float_text_ok(s))
        return fail(p, "invalid float text");
    return 1;
}

static int parse_scalar(mparser_t *p, int type, value_t **out, minfo_t *info)
{
    value_type_t vt = VAL_INT;
    int ok = 1;
    switch (type) {
    case TYPE_INT:
        ok = CBS_skip(&p->in, 4) || fail(p, "truncated");
        break;
    case TYPE_INT64:
        ok = CBS_skip(&p->in, 8) || fail(p, "truncated");
        break;
    case TYPE_LONG:
        ok = parse_long(p);
        break;
    case TYPE_BINARY_FLOAT:
        vt = VAL_FLOAT;
        ok = CBS_skip(&p->in, 8) || fail(p, "truncated");
        break;
    case TYPE_FLOAT:
        vt = VAL_FLOAT;
        ok = parse_float_text(p);
        break;
    case TYPE_BINARY_COMPLEX:
        vt = VAL_COMPLEX;
        ok = CBS_skip(&p->in, 16) || fail(p, "truncated");
        break;
    case TYPE_COMPLEX:
        vt = VAL_COMPLEX;
        ok = parse_float_text(p) && parse_float_text(p);
        break;
    }
    if (!ok)
        return 0;
    info->has_num = 1;
    *out = new_value(p, vt);
    return *out != NULL;
}

/* ---- containers -------------------------------------------------------------------------- */

static mresult_t parse_value(mparser_t *p, size_t level, value_t **out, minfo_t *info);

/* add_child folds a child's facts into its container's, keeping the expanded size within
 * max_values. */
static int add_child(mparser_t *p, minfo_t *parent, const minfo_t *child)
{
    size_t max = p->arena->limits.max_values;
    if (parent->size > max || child->size > max - parent->size)
        return fail(p, "too many values");
    parent->size += child->size;
    if (child->height >= parent->height)
        parent->height = child->height + 1;
    parent->has_num |= child->has_num;
    parent->unhashable |= child->unhashable;
    return 1;
}

/* hashable refuses a dict key or set member Python cannot hash (TypeError). */
static int hashable(mparser_t *p, const minfo_t *k, const char *what)
{
    return k->unhashable ? fail(p, what) : 1;
}

static int enter(mparser_t *p, size_t level)
{
    if (level > p->max_depth)
        return fail(p, "nesting too deep");
    return 1;
}

/* parse_child parses one item of a tuple, list or set: TYPE_NULL is an error there. */
static int parse_child(mparser_t *p, size_t level, value_t **out, minfo_t *info)
{
    mresult_t r = parse_value(p, level + 1, out, info);
    if (r == M_NULL)
        return fail(p, "NULL object in a container");
    return r == M_OK;
}

static int parse_seq(mparser_t *p, value_type_t type, size_t n, size_t level, value_t **out,
                     minfo_t *info)
{
    if (!enter(p, level) || !count_fits(p, n))
        return 0;
    value_t *v = new_value(p, type);
    value_t **items = v ? new_items(p, n) : NULL;
    if (items == NULL)
        return 0;
    info->height = 1;
    for (size_t i = 0; i < n; i++) {
        minfo_t ci;
        if (!parse_child(p, level, &items[i], &ci) || !add_child(p, info, &ci))
            return 0;
    }
    if (type == VAL_LIST)
        info->unhashable = 1;
    v->u.seq.items = items;
    v->u.seq.n = n;
    *out = v;
    return 1;
}

/* value_cmp orders hashable values that hold no int, float or complex (bools are fine): it is 0
 * exactly when Python finds them equal, frozensets being kept in this order. Refs are expanded,
 * so its cost is bounded by the values' sizes, which max_values bounds. */
static int value_cmp(const value_t *a, const value_t *b)
{
    if (a == b)
        return 0;
    if (a->type != b->type)
        return a->type < b->type ? -1 : 1;
    switch (a->type) {
    case VAL_BOOL:
        return (a->u.boolean > b->u.boolean) - (a->u.boolean < b->u.boolean);
    case VAL_STR:
    case VAL_BYTES: {
        size_t n = a->u.str.len < b->u.str.len ? a->u.str.len : b->u.str.len;
        int c = n ? memcmp(a->u.str.data, b->u.str.data, n) : 0;
        if (c != 0)
            return c < 0 ? -1 : 1;
        return (a->u.str.len > b->u.str.len) - (a->u.str.len < b->u.str.len);
    }
    case VAL_TUPLE:
    case VAL_FROZENSET:
        for (size_t i = 0; i < a->u.seq.n && i < b->u.seq.n; i++) {
            int c = value_cmp(a->u.seq.items[i], b->u.seq.items[i]);
            if (c != 0)
                return c;
        }
        return (a->u.seq.n > b->u.seq.n) - (a->u.seq.n < b->u.seq.n);
    default:
        return 0;
    }
}

/* sort_values: a stable merge sort of |a| by value_cmp, |tmp| holding as many pointers. */
static void sort_values(value_t **a, value_t **tmp, size_t n)
{
    if (n < 2)
        return;
    size_t half = n / 2, i = 0, j = half, k = 0;
    sort_values(a, tmp, half);
    sort_values(a + half, tmp, n - half);
    while (i < half && j < n)
        tmp[k++] = value_cmp(a[j], a[i]) < 0 ? a[j++] : a[i++];
    while (i < half)
        tmp[k++] = a[i++];
    while (j < n)
        tmp[k++] = a[j++];
    memcpy(a, tmp, n * sizeof(*a));
}

/* parse_set reads < and >. Python keeps one of several equal members. Which members holding
 * numbers are equal the tree cannot tell (it does not keep numbers: 1 == 1.0 == True but
 * 1 != 2), so those are all kept, in wire order (an honest set never has equal members); the
 * others are deduplicated and put in value_cmp order, which makes a frozenset's items
 * canonical. */
static int parse_set(mparser_t *p, value_type_t type, size_t level, value_t **out, minfo_t *info)
{
    size_t n;
    if (!read_count(p, &n) || !enter(p, level) || !count_fits(p, n))
        return 0;
    value_t *v = new_value(p, type);
    value_t **items = v ? new_items(p, n) : NULL;
    value_t **tmp = items ? new_items(p, n) : NULL;
    if (tmp == NULL)
        return 0;
    size_t plain = 0, numeric = 0; /* items[0..plain) hold no numbers, tmp[0..numeric) do */
    info->height = 1;
    for (size_t i = 0; i < n; i++) {
        value_t *m;
        minfo_t mi;
        if (!parse_child(p, level, &m, &mi) || !hashable(p, &mi, "unhashable set member") ||
            !add_child(p, info, &mi))
            return 0;
        if (mi.has_num)
            tmp[numeric++] = m;
        else
            items[plain++] = m;
    }
    memcpy(items + plain, tmp, numeric * sizeof(*items));
    sort_values(items, tmp, plain);
    size_t kept = 0;
    for (size_t i = 0; i < plain; i++)
        if (kept == 0 || value_cmp(items[kept - 1], items[i]) != 0)
            items[kept++] = items[i];
    memmove(items + kept, items + plain, numeric * sizeof(*items));
    info->unhashable = type == VAL_SET;
    v->u.seq.items = items;
    v->u.seq.n = kept + numeric;
    *out = v;
    return 1;
}

static int push_pair(mparser_t *p, value_t *k, value_t *v)
{
    if (p->pairs_cap - p->npairs < 2) {
        void *a = p->pairs;
        if (!grow(p, &a, &p->pairs_cap, p->npairs, sizeof(value_t *)))
            return 0;
        p->pairs = a;
    }
    p->pairs[p->npairs++] = k;
    p->pairs[p->npairs++] = v;
    return 1;
}

/* parse_dict reads key/value pairs until a TYPE_NULL key. A TYPE_NULL value also ends a
 * CPython dict (dropping that key); it is refused here. */
static int parse_dict(mparser_t *p, size_t level, value_t **out, minfo_t *info)
{
    if (!enter(p, level))
        return 0;
    value_t *d = new_value(p, VAL_DICT);
    if (d == NULL)
        return 0;
    size_t base = p->npairs;
    info->height = 1;
    for (;;) {
        value_t *k, *v;
        minfo_t ki, vi;
        mresult_t r = parse_value(p, level + 1, &k, &ki);
        if (r == M_NULL)
            break;
        if (r != M_OK || !hashable(p, &ki, "unhashable dict key"))
            return 0;
        r = parse_value(p, level + 1, &v, &vi);
        if (r == M_NULL)
            return fail(p, "NULL dict value");
        if (r != M_OK || !add_child(p, info, &ki) || !add_child(p, info, &vi) ||
            !push_pair(p, k, v))
            return 0;
    }
    size_t n = (p->npairs - base) / 2;
    d->u.dict.keys = new_items(p, n);
    d->u.dict.values = d->u.dict.keys ? new_items(p, n) : NULL;
    if (d->u.dict.values == NULL)
        return 0;
    for (size_t i = 0; i < n; i++) {
        d->u.dict.keys[i] = p->pairs[base + 2 * i];
        d->u.dict.values[i] = p->pairs[base + 2 * i + 1];
    }
    d->u.dict.n = n;
    p->npairs = base;
    info->unhashable = 1;
    *out = d;
    return 1;
}

/* ---- one object -------------------------------------------------------------------------- */

static mresult_t parse_singleton(mparser_t *p, value_type_t type, int boolean, value_t **out)
{
    *out = new_value(p, type);
    if (*out == NULL)
        return M_ERROR;
    (*out)->u.boolean = boolean;
    return M_OK;
}

/* parse_body reads what follows the type code of an object that may carry FLAG_REF. */
static int parse_body(mparser_t *p, int type, size_t level, value_t **out, minfo_t *info)
{
    size_t n;
    uint8_t n8;
    switch (type) {
    case TYPE_INT:
    case TYPE_INT64:
    case TYPE_LONG:
    case TYPE_BINARY_FLOAT:
    case TYPE_FLOAT:
    case TYPE_BINARY_COMPLEX:
    case TYPE_COMPLEX:
        return parse_scalar(p, type, out, info);
    case TYPE_STRING:
        return parse_bytes_or_utf8(p, VAL_BYTES, out);
    case TYPE_UNICODE:
    case TYPE_INTERNED:
        return parse_bytes_or_utf8(p, VAL_STR, out);
    case TYPE_ASCII:
    case TYPE_ASCII_INTERNED:
        return read_count(p, &n) && parse_latin1(p, n, out);
    case TYPE_SHORT_ASCII:
    case TYPE_SHORT_ASCII_INTERNED:
        if (!CBS_get_u8(&p->in, &n8))
            return fail(p, "truncated");
        return parse_latin1(p, n8, out);
    case TYPE_SMALL_TUPLE:
        if (!CBS_get_u8(&p->in, &n8))
            return fail(p, "truncated");
        return parse_seq(p, VAL_TUPLE, n8, level, out, info);
    case TYPE_TUPLE:
        return read_count(p, &n) && parse_seq(p, VAL_TUPLE, n, level, out, info);
    case TYPE_LIST:
        return read_count(p, &n) && parse_seq(p, VAL_LIST, n, level, out, info);
    case TYPE_SET:
        return parse_set(p, VAL_SET, level, out, info);
    case TYPE_FROZENSET:
        return parse_set(p, VAL_FROZENSET, level, out, info);
    case TYPE_DICT:
        return parse_dict(p, level, out, info);
    case TYPE_CODE:
        return fail(p, "code object");
    default:
        return fail(p, "unknown type code");
    }
}

/* parse_value is r_object: one object at container depth |level| (the top level is 1). */
static mresult_t parse_value(mparser_t *p, size_t level, value_t **out, minfo_t *info)
{
    uint8_t code;
    memset(info, 0, sizeof(*info));
    info->size = 1;
    if (!CBS_get_u8(&p->in, &code))
        return fail(p, "truncated");
    int type = code & ~FLAG_REF;
    /* CPython ignores FLAG_REF on these: they never enter the reference table. */
    switch (type) {
    case TYPE_NULL:
        return M_NULL;
    case TYPE_NONE:
        return parse_singleton(p, VAL_NONE, 0, out);
    case TYPE_FALSE:
        return parse_singleton(p, VAL_BOOL, 0, out);
    case TYPE_TRUE:
        return parse_singleton(p, VAL_BOOL, 1, out);
    case TYPE_ELLIPSIS:
        return parse_singleton(p, VAL_ELLIPSIS, 0, out);
    case TYPE_STOPITER:
        return parse_singleton(p, VAL_OTHER, 0, out);
    case TYPE_REF:
        return parse_ref(p, level, out, info) ? M_OK : M_ERROR;
    }
    size_t idx;
    if (!ref_reserve(p, code & FLAG_REF, &idx) || !parse_body(p, type, level, out, info))
        return M_ERROR;
    ref_complete(p, idx, *out, info);
    return M_OK;
}

int decode_marshal(const uint8_t *data, size_t len, value_arena_t *arena, value_t **out,
                   const char **out_reason)
{
    mparser_t p;
    memset(&p, 0, sizeof(p));
    CBS_init(&p.in, data, len);
    p.arena = arena;
    p.max_depth =
        arena->limits.max_depth < MARSHAL_MAX_DEPTH ? arena->limits.max_depth : MARSHAL_MAX_DEPTH;
    value_t *v = NULL;
    minfo_t info;
    mresult_t r = parse_value(&p, 1, &v, &info);
    if (r == M_NULL)
        p.reason = "NULL object";
    else if (r == M_OK && CBS_len(&p.in) != 0)
        p.reason = "trailing bytes";
    else if (r == M_OK) {
        *out = v;
        return 1;
    }
    *out_reason = p.reason ? p.reason : "invalid marshal data";
    return 0;
}
