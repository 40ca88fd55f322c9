/* json: the Pyro4 json serializer's payload, decoded as the daemon decodes it —
 * json.loads(payload.decode("utf-8")) of CPython 3.11 (PROTOCOL.md §5.2) — or refused.
 *
 * Accepted, exactly as Python reads it:
 *   - the text must be strict UTF-8 (overlong forms, encoded surrogates, code points past
 *     U+10FFFF and truncated sequences are refused, as the decode raises); a leading BOM is
 *     refused (json.loads raises on it, PROTOCOL.md §9);
 *   - whitespace is only space, tab, LF and CR, around any token;
 *   - objects -> VAL_DICT (keys must be strings), arrays -> VAL_LIST, strings -> VAL_STR,
 *     true/false -> VAL_BOOL, null -> VAL_NONE, NaN / Infinity / -Infinity -> VAL_FLOAT;
 *   - numbers in Python's grammar -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?: with a
 *     fraction or an exponent a float, otherwise an int of any size up to 4300 digits (CPython
 *     3.11 raises ValueError past its default int_max_str_digits, so those are refused too);
 *   - strings: raw characters from U+0020 up, escapes \" \\ \/ \b \f \n \r \t and \uXXXX
 *     (hex digits in either case); a high-surrogate escape directly followed by a
 *     low-surrogate escape is one astral code point, any other surrogate escape stays a lone
 *     surrogate, stored as 3-byte generalized UTF-8 (value.h).
 *
 * Refused although Python accepts it:
 *   - an object with the same key twice, however it is spelled ("method" and "m\u0065thod"):
 *     json.loads keeps the last one, and a name could hide behind the first (PROTOCOL.md §9,
 *     §10). Honest Pyro4 clients only produce this from a dict whose keys differ in Python but
 *     not in JSON ({1: .., "1": ..});
 *   - nesting deeper than the arena's max_depth (a container is depth 1), more values than
 *     max_values, more decoded string bytes than max_string_bytes.
 *
 * Refused like Python: raw control characters U+0000..U+001F inside strings (strict=True),
 * any other escape, a truncated \u escape, leading zeros, '+', '.5', '1.', '1e', trailing
 * commas, unquoted or non-string keys, and anything but whitespace after the value.
 *
 * Strings are scanned twice: once to validate them and measure the decoded length (plain
 * ASCII runs eight bytes at a time), then copied in one piece, or decoded escape by escape
 * when they hold a backslash. */
#include "alloc.h"
#include "decode.h"

#include <stdlib.h>
#include <string.h>

/* ---- input cursor: CBS's shape, inlined for the per-byte paths --------------------------- */

typedef struct {
    const uint8_t *data;
    size_t len;
} jcur_t;

static void jcur_init(jcur_t *c, const uint8_t *data, size_t len)
{
    c->data = data;
    c->len = len;
}

static inline int jcur_peek(const jcur_t *c, uint8_t *out)
{
    if (c->len == 0)
        return 0;
    *out = c->data[0];
    return 1;
}

static inline int jcur_skip(jcur_t *c, size_t n)
{
    if (n > c->len)
        return 0;
    if (n == 0)
        return 1; /* data may be NULL */
    c->data += n;
    c->len -= n;
    return 1;
}

static inline int jcur_get_u8(jcur_t *c, uint8_t *out)
{
    return jcur_peek(c, out) && jcur_skip(c, 1);
}

/* jcur_get_bytes moves the next |n| bytes of |c| into |out|. */
static int jcur_get_bytes(jcur_t *c, jcur_t *out, size_t n)
{
    if (n > c->len)
        return 0;
    jcur_init(out, c->data, n);
    return jcur_skip(c, n);
}

/* jcur_get_literal consumes the NUL-terminated |lit| if |c| starts with it. */
static int jcur_get_literal(jcur_t *c, const char *lit)
{
    size_t n = strlen(lit);
    if (c->len < n || memcmp(c->data, lit, n) != 0)
        return 0;
    return jcur_skip(c, n);
}

/* ---- output cursor for decoded string bytes ---------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t left;
} jout_t;

static int jout_put(jout_t *o, const uint8_t *src, size_t n)
{
    if (n > o->left)
        return 0;
    memcpy(o->p, src, n);
    o->p += n;
    o->left -= n;
    return 1;
}

/* ---- parser state ------------------------------------------------------------------------ */

typedef struct {
    jcur_t in;
    value_arena_t *arena;
    /* Children of the containers being parsed, innermost last; a container takes its own off
     * the top when it closes. Grows with the values created, so max_values bounds it. */
    value_t **stack;
    size_t stack_len;
    size_t stack_cap;
    const char *reason;
} json_parser_t;

static int fail(json_parser_t *p, const char *reason)
{
    p->reason = reason;
    return 0;
}

static int push(json_parser_t *p, value_t *v)
{
    if (p->stack_len == p->stack_cap) {
        size_t cap = p->stack_cap ? p->stack_cap * 2 : 64;
        if (cap < p->stack_cap || cap > SIZE_MAX / sizeof(*p->stack))
            return fail(p, "out of memory");
        value_t **s = pg_realloc(p->stack, cap * sizeof(*s));
        if (s == NULL)
            return fail(p, "out of memory");
        p->stack = s;
        p->stack_cap = cap;
    }
    p->stack[p->stack_len++] = v;
    return 1;
}

/* Python's json whitespace: space, tab, LF, CR — nothing else (no FF, no VT, no NBSP). */
static void skip_ws(jcur_t *c)
{
    uint8_t b;
    while (jcur_peek(c, &b) && (b == ' ' || b == '\t' || b == '\n' || b == '\r'))
        jcur_skip(c, 1);
}

/* ---- strings ----------------------------------------------------------------------------- */

#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static inline int is_plain(uint8_t b)
{
    return b >= 0x20 && b < 0x80 && b != '"' && b != '\\';
}

/* plain_run returns how many leading bytes of |p|[0..n) are printable ASCII other than '"'
 * and '\\' — bytes a string holds as they are. Eight at a time: a word is plain unless one
 * of its bytes equals '"' or '\\', is below 0x20 or has its top bit set (each test is exact
 * as "does any byte match", which is all that is asked of it). */
static size_t plain_run(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (n - i >= 8) {
        uint64_t w, q, b;
        memcpy(&w, p + i, 8);
        q = w ^ (ONES * '"');
        b = w ^ (ONES * '\\');
        uint64_t special = ((q - ONES) & ~q) | ((b - ONES) & ~b) | ((w - ONES * 0x20) & ~w) | w;
        if (special & HIGHS)
            break;
        i += 8;
    }
    while (i < n && is_plain(p[i]))
        i++;
    return i;
}

/* utf8_seq_len returns the length (2..4) of the well-formed UTF-8 sequence |p|[0..n) starts
 * with, as Python's strict decoder accepts it, or 0. */
static size_t utf8_seq_len(const uint8_t *p, size_t n)
{
    uint8_t b0 = p[0], lo = 0x80, hi = 0xbf;
    size_t need;

    if (b0 >= 0xc2 && b0 <= 0xdf) {
        need = 2;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
        need = 3;
        if (b0 == 0xe0)
            lo = 0xa0; /* overlong */
        else if (b0 == 0xed)
            hi = 0x9f; /* U+D800..U+DFFF encoded: not UTF-8 */
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
        need = 4;
        if (b0 == 0xf0)
            lo = 0x90; /* overlong */
        else if (b0 == 0xf4)
            hi = 0x8f; /* past U+10FFFF */
    } else {
        return 0; /* continuation byte, C0, C1, F5..FF */
    }
    if (n < need || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return need;
}

/* utf8_run returns how many leading bytes of |p|[0..n) are well-formed non-ASCII UTF-8
 * sequences, so a run of them costs one call. */
static size_t utf8_run(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && p[i] >= 0x80) {
        size_t k = utf8_seq_len(p + i, n - i);
        if (k == 0)
            break;
        i += k;
    }
    return i;
}

static size_t utf8_len(uint32_t cp)
{
    return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

/* utf8_put writes |cp| (surrogates included, as generalized UTF-8) into |out|. */
static int utf8_put(jout_t *o, uint32_t cp)
{
    uint8_t b[4];
    size_t n = utf8_len(cp);
    if (n == 1) {
        b[0] = (uint8_t)cp;
    } else if (n == 2) {
        b[0] = (uint8_t)(0xc0 | (cp >> 6));
        b[1] = (uint8_t)(0x80 | (cp & 0x3f));
    } else if (n == 3) {
        b[0] = (uint8_t)(0xe0 | (cp >> 12));
        b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (uint8_t)(0x80 | (cp & 0x3f));
    } else {
        b[0] = (uint8_t)(0xf0 | (cp >> 18));
        b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (uint8_t)(0x80 | (cp & 0x3f));
    }
    return jout_put(o, b, n);
}

/* get_hex4 reads the four hex digits of a \u escape (either case). */
static int get_hex4(jcur_t *c, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t d;
        if (!jcur_get_u8(c, &d))
            return 0;
        if (d >= '0' && d <= '9')
            d = (uint8_t)(d - '0');
        else if (d >= 'a' && d <= 'f')
            d = (uint8_t)(d - 'a' + 10);
        else if (d >= 'A' && d <= 'F')
            d = (uint8_t)(d - 'A' + 10);
        else
            return 0;
        v = (v << 4) | d;
    }
    *out = v;
    return 1;
}

/* get_escape reads one escape, |c| just past its backslash, into the code point |*out_cp|.
 * A high surrogate immediately followed by a \u low surrogate is joined into one astral code
 * point; otherwise the surrogate stays alone and what follows is read on its own, as CPython's
 * scanstring does (PROTOCOL.md §5.2). */
static int get_escape(jcur_t *c, uint32_t *out_cp, const char **out_reason)
{
    uint8_t e;
    if (!jcur_get_u8(c, &e)) {
        *out_reason = "unterminated string";
        return 0;
    }
    switch (e) {
    case '"':
    case '\\':
    case '/':
        *out_cp = e;
        return 1;
    case 'b':
        *out_cp = '\b';
        return 1;
    case 'f':
        *out_cp = '\f';
        return 1;
    case 'n':
        *out_cp = '\n';
        return 1;
    case 'r':
        *out_cp = '\r';
        return 1;
    case 't':
        *out_cp = '\t';
        return 1;
    case 'u':
        break;
    default:
        *out_reason = "invalid escape";
        return 0;
    }
    uint32_t cp;
    if (!get_hex4(c, &cp)) {
        *out_reason = "invalid \\u escape";
        return 0;
    }
    if (cp >= 0xd800 && cp <= 0xdbff) {
        jcur_t ahead = *c;
        uint32_t lo;
        if (jcur_get_literal(&ahead, "\\u")) {
            /* Python reads these four as hex whatever they turn out to be: bad ones are an
             * error here as they would be when read as the next escape. */
            if (!get_hex4(&ahead, &lo)) {
                *out_reason = "invalid \\u escape";
                return 0;
            }
            if (lo >= 0xdc00 && lo <= 0xdfff) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                *c = ahead;
            }
        }
    }
    *out_cp = cp;
    return 1;
}

/* scan_string validates the string whose opening quote was consumed, consumes it up to and
 * including its closing quote, and returns its raw contents in |*out_raw|, its decoded length
 * in |*out_len| and whether it holds any escape in |*out_escaped|. */
static int scan_string(json_parser_t *p, jcur_t *out_raw, size_t *out_len, int *out_escaped)
{
    jcur_t *c = &p->in;
    const uint8_t *start = c->data;
    size_t decoded = 0;
    int escaped = 0;

    for (;;) {
        size_t run = plain_run(c->data, c->len);
        jcur_skip(c, run);
        decoded += run; /* never overflows: at most the input length */

        uint8_t b;
        if (!jcur_peek(c, &b))
            return fail(p, "unterminated string");
        if (b == '"')
            break;
        if (b == '\\') {
            uint32_t cp;
            jcur_skip(c, 1);
            if (!get_escape(c, &cp, &p->reason))
                return 0;
            decoded += utf8_len(cp); /* escapes are never shorter than what they decode to */
            escaped = 1;
        } else if (b < 0x20) {
            return fail(p, "control character in string");
        } else {
            size_t n = utf8_run(c->data, c->len);
            if (n == 0)
                return fail(p, "invalid UTF-8");
            jcur_skip(c, n);
            decoded += n;
        }
    }
    jcur_init(out_raw, start, (size_t)(c->data - start));
    jcur_skip(c, 1); /* the closing quote */
    *out_len = decoded;
    *out_escaped = escaped;
    return 1;
}

/* unescape writes the decoded form of |raw|, validated by scan_string, into |o|. */
static int unescape(jcur_t raw, jout_t *o, const char **out_reason)
{
    while (raw.len > 0) {
        const uint8_t *bs = memchr(raw.data, '\\', raw.len);
        size_t n = bs ? (size_t)(bs - raw.data) : raw.len;
        jcur_t chunk;
        uint32_t cp;
        if (!jcur_get_bytes(&raw, &chunk, n) || !jout_put(o, chunk.data, chunk.len))
            return 0;
        if (bs == NULL)
            break;
        jcur_skip(&raw, 1);
        if (!get_escape(&raw, &cp, out_reason) || !utf8_put(o, cp))
            return 0;
    }
    return 1;
}

static int parse_string(json_parser_t *p, value_t **out)
{
    jcur_t raw;
    size_t len;
    int escaped;

    if (!scan_string(p, &raw, &len, &escaped))
        return 0;
    value_t *v = value_new(p->arena, VAL_STR);
    if (v == NULL)
        return fail(p, "too many values");
    uint8_t *s = value_alloc_string(p->arena, len);
    if (s == NULL)
        return fail(p, "strings too long");
    jout_t o = {s, len};
    if (escaped) {
        if (!unescape(raw, &o, &p->reason) || o.left != 0)
            return fail(p, "internal error: string length");
    } else if (!jout_put(&o, raw.data, raw.len) || o.left != 0) {
        return fail(p, "internal error: string length");
    }
    v->u.str.data = s;
    v->u.str.len = len;
    *out = v;
    return 1;
}

/* ---- numbers and literals ---------------------------------------------------------------- */

/* CPython 3.11's default sys.get_int_max_str_digits(): int("1" * 4301) raises ValueError. */
#define PY_INT_MAX_STR_DIGITS 4300

static size_t skip_digits(jcur_t *c)
{
    size_t n = 0;
    uint8_t b;
    while (jcur_peek(c, &b) && b >= '0' && b <= '9') {
        jcur_skip(c, 1);
        n++;
    }
    return n;
}

/* parse_number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)? or -Infinity. Where
 * Python would stop early ("01", "1.", "1e") the next character can never follow a value,
 * so refusing at once gives the same answer. */
static int parse_number(json_parser_t *p, value_t **out)
{
    jcur_t *c = &p->in;
    value_type_t type = VAL_INT;
    uint8_t b;

    if (jcur_get_literal(c, "-Infinity")) {
        type = VAL_FLOAT;
        goto make;
    }
    if (jcur_peek(c, &b) && b == '-')
        jcur_skip(c, 1);
    if (!jcur_peek(c, &b) || b < '0' || b > '9')
        return fail(p, "invalid number");
    size_t digits = 1;
    jcur_skip(c, 1);
    if (b != '0')
        digits += skip_digits(c);
    if (jcur_peek(c, &b) && b == '.') {
        jcur_skip(c, 1);
        if (skip_digits(c) == 0)
            return fail(p, "invalid number");
        type = VAL_FLOAT;
    }
    if (jcur_peek(c, &b) && (b == 'e' || b == 'E')) {
        jcur_skip(c, 1);
        if (jcur_peek(c, &b) && (b == '+' || b == '-'))
            jcur_skip(c, 1);
        if (skip_digits(c) == 0)
            return fail(p, "invalid number");
        type = VAL_FLOAT;
    }
    if (jcur_peek(c, &b) && b >= '0' && b <= '9')
        return fail(p, "invalid number"); /* "01" */
    if (type == VAL_INT && digits > PY_INT_MAX_STR_DIGITS)
        return fail(p, "integer too long");
make:
    *out = value_new(p->arena, type);
    if (*out == NULL)
        return fail(p, "too many values");
    return 1;
}

static int parse_literal(json_parser_t *p, value_t **out)
{
    static const struct {
        const char *text;
        value_type_t type;
        int boolean;
    } kLiterals[] = {
        {"true", VAL_BOOL, 1}, {"false", VAL_BOOL, 0},     {"null", VAL_NONE, 0},
        {"NaN", VAL_FLOAT, 0}, {"Infinity", VAL_FLOAT, 0},
    };
    for (size_t i = 0; i < sizeof(kLiterals) / sizeof(kLiterals[0]); i++) {
        if (jcur_get_literal(&p->in, kLiterals[i].text)) {
            value_t *v = value_new(p->arena, kLiterals[i].type);
            if (v == NULL)
                return fail(p, "too many values");
            v->u.boolean = kLiterals[i].boolean;
            *out = v;
            return 1;
        }
    }
    return fail(p, "expecting value");
}

/* ---- containers -------------------------------------------------------------------------- */

static int parse_value(json_parser_t *p, size_t depth, value_t **out);

/* take_items moves the top |n| stack entries into a new array in the arena. */
static int take_items(json_parser_t *p, size_t n, value_t ***out)
{
    value_t **items = value_alloc(p->arena, n * sizeof(*items)); /* n <= stack_len: no overflow */
    if (items == NULL)
        return fail(p, "out of memory");
    if (n == 0) { /* the stack may not exist yet: no pointer arithmetic on NULL */
        *out = items;
        return 1;
    }
    memcpy(items, p->stack + (p->stack_len - n), n * sizeof(*items));
    p->stack_len -= n;
    *out = items;
    return 1;
}

static int parse_array(json_parser_t *p, size_t depth, value_t **out)
{
    size_t base = p->stack_len;
    uint8_t b;

    jcur_skip(&p->in, 1); /* '[' */
    skip_ws(&p->in);
    if (jcur_peek(&p->in, &b) && b == ']') {
        jcur_skip(&p->in, 1);
    } else {
        for (;;) {
            value_t *item;
            if (!parse_value(p, depth, &item) || !push(p, item))
                return 0;
            skip_ws(&p->in);
            if (!jcur_get_u8(&p->in, &b))
                return fail(p, "unterminated array");
            if (b == ']')
                break;
            if (b != ',')
                return fail(p, "expecting ',' or ']'");
            skip_ws(&p->in);
        }
    }
    value_t *v = value_new(p->arena, VAL_LIST);
    if (v == NULL)
        return fail(p, "too many values");
    v->u.seq.n = p->stack_len - base;
    if (!take_items(p, v->u.seq.n, &v->u.seq.items))
        return 0;
    *out = v;
    return 1;
}

static int key_cmp(const void *x, const void *y)
{
    const value_t *a = *(value_t *const *)x, *b = *(value_t *const *)y;
    if (a->u.str.len != b->u.str.len)
        return a->u.str.len < b->u.str.len ? -1 : 1;
    return memcmp(a->u.str.data, b->u.str.data, a->u.str.len);
}

/* check_unique_keys refuses an object naming a key twice (PROTOCOL.md §9): Python would keep
 * the last value silently. Keys are compared decoded, so escapes cannot disguise a repeat. */
static int check_unique_keys(json_parser_t *p, value_t **keys, size_t n)
{
    if (n <= 8) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (key_cmp(&keys[i], &keys[j]) == 0)
                    return fail(p, "duplicate key");
        return 1;
    }
    /* Sorted, so an object of many keys costs n log n comparisons, whatever the keys. */
    value_t **sorted = value_alloc(p->arena, n * sizeof(*sorted));
    if (sorted == NULL)
        return fail(p, "out of memory");
    memcpy(sorted, keys, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), key_cmp);
    for (size_t i = 1; i < n; i++)
        if (key_cmp(&sorted[i - 1], &sorted[i]) == 0)
            return fail(p, "duplicate key");
    return 1;
}

static int parse_object(json_parser_t *p, size_t depth, value_t **out)
{
    size_t base = p->stack_len;
    uint8_t b;

    jcur_skip(&p->in, 1); /* '{' */
    skip_ws(&p->in);
    if (jcur_peek(&p->in, &b) && b == '}') {
        jcur_skip(&p->in, 1);
    } else {
        for (;;) {
            value_t *key, *val;
            if (!jcur_get_u8(&p->in, &b) || b != '"')
                return fail(p, "expecting string key");
            if (!parse_string(p, &key) || !push(p, key))
                return 0;
            skip_ws(&p->in);
            if (!jcur_get_u8(&p->in, &b) || b != ':')
                return fail(p, "expecting ':'");
            skip_ws(&p->in);
            if (!parse_value(p, depth, &val) || !push(p, val))
                return 0;
            skip_ws(&p->in);
            if (!jcur_get_u8(&p->in, &b))
                return fail(p, "unterminated object");
            if (b == '}')
                break;
            if (b != ',')
                return fail(p, "expecting ',' or '}'");
            skip_ws(&p->in);
        }
    }
    value_t *v = value_new(p->arena, VAL_DICT);
    if (v == NULL)
        return fail(p, "too many values");
    size_t n = (p->stack_len - base) / 2;
    value_t **keys = value_alloc(p->arena, n * sizeof(*keys));
    value_t **vals = value_alloc(p->arena, n * sizeof(*vals));
    if (keys == NULL || vals == NULL)
        return fail(p, "out of memory");
    for (size_t i = 0; i < n; i++) {
        keys[i] = p->stack[base + 2 * i];
        vals[i] = p->stack[base + 2 * i + 1];
    }
    p->stack_len = base;
    if (!check_unique_keys(p, keys, n))
        return 0;
    v->u.dict.keys = keys;
    v->u.dict.values = vals;
    v->u.dict.n = n;
    *out = v;
    return 1;
}

/* parse_value reads one value at the cursor (whitespace already skipped); |depth| counts
 * the containers around it. */
static int parse_value(json_parser_t *p, size_t depth, value_t **out)
{
    uint8_t b;
    if (!jcur_peek(&p->in, &b))
        return fail(p, "expecting value");
    switch (b) {
    case '"':
        jcur_skip(&p->in, 1);
        return parse_string(p, out);
    case '[':
    case '{':
        if (depth >= p->arena->limits.max_depth)
            return fail(p, "nesting too deep");
        return b == '[' ? parse_array(p, depth + 1, out) : parse_object(p, depth + 1, out);
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        return parse_number(p, out);
    default:
        return parse_literal(p, out);
    }
}

int decode_json(const uint8_t *data, size_t len, value_arena_t *arena, value_t **out,
                const char **out_reason)
{
    json_parser_t p;
    value_t *v = NULL;
    int ok = 0;

    memset(&p, 0, sizeof(p));
    jcur_init(&p.in, data, len);
    p.arena = arena;

    /* json.loads raises on a str starting with U+FEFF (PROTOCOL.md §5.2). */
    if (jcur_get_literal(&p.in, "\xef\xbb\xbf")) {
        p.reason = "UTF-8 BOM";
        goto free_stack;
    }
    skip_ws(&p.in);
    if (!parse_value(&p, 0, &v))
        goto free_stack;
    skip_ws(&p.in);
    if (p.in.len != 0) {
        p.reason = "trailing data";
        goto free_stack;
    }
    *out = v;
    ok = 1;
free_stack:
    free(p.stack);
    if (!ok)
        *out_reason = p.reason ? p.reason : "invalid json";
    return ok;
}
