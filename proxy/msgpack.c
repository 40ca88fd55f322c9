/* msgpack: the Pyro4 msgpack payload (serializer id 6) decoded exactly as the Pyro4 4.82 daemon's
 * msgpack.unpackb(data, raw=False) of msgpack-python 1.0.3 (C extension, default options)
 * decodes it (PROTOCOL.md §5.4, §9 "msgpack").
 *
 * Accepted, and what each becomes:
 *   nil, true, false                    -> None, bool
 *   fixint, uint8..64, int8..64         -> int
 *   float32, float64                    -> float
 *   fixstr, str8/16/32                  -> str: strict UTF-8 as CPython decodes it (shortest
 *                                          form only, no encoded surrogates, <= U+10FFFF);
 *                                          anything else is a UnicodeDecodeError in Python
 *   bin8/16/32                          -> bytes
 *   fixarray, array16/32                -> list (use_list=True)
 *   fixmap, map16/32                    -> dict, pairs kept in wire order, duplicates included
 *                                          (Python keeps the last value; value_dict_get reports
 *                                          the ambiguity). Keys must be str or bytes:
 *                                          strict_map_key=True raises ValueError for any other
 *   fixext 1/2/4/8/16, ext8/16/32
 *     type 0..127                       -> tuple (int, bytes): the default ext_hook builds a
 *                                          msgpack.ExtType, a namedtuple, so the daemon sees a
 *                                          real 2-tuple (`*vargs` splats it). Honest Pyro4
 *                                          clients send types 0x30..0x33 (complex, big int,
 *                                          datetime, date)
 *     type -1 (timestamp)               -> VAL_OTHER (a msgpack.Timestamp), only with 4, 8 or
 *                                          12 data bytes and nanoseconds < 10^9 as
 *                                          Timestamp() demands
 * Refused, each because Python raises too:
 *   0xc1 (never used); ext types -128..-2 (ExtType() wants 0..127); malformed timestamps; a
 *   declared length or count larger than the bytes left (unpackb's max_*_len defaults are
 *   derived from len(data), and the data would be incomplete anyway); truncation; trailing
 *   bytes after the one value (ExtraData); containers nested deeper than 1024 (StackError).
 * Refused although Python would accept (fail closed): nesting deeper than the arena's max_depth
 * (an ext tuple counts as a level), more values or string bytes than the arena allows. */
#include "decode.h"

#include <string.h>

#include <openssl/bytestring.h>

/* msgpack-python's unpacker has a fixed stack of MSGPACK_EMBED_STACK_SIZE containers; array
 * or map 1025 levels deep raises StackError (ext values are not containers there). */
#define MP_PYTHON_MAX_DEPTH 1024

/* Timestamp(seconds, nanoseconds) raises ValueError unless 0 <= nanoseconds < 10**9. */
#define MP_NSEC_LIMIT 1000000000u

#define MP_ASCII_MASK UINT64_C(0x8080808080808080)

typedef struct {
    value_arena_t *arena;
    const char *reason;
} mp_t;

static int mp_value(mp_t *m, CBS *in, size_t depth, value_t **out);

static int mp_fail(mp_t *m, const char *reason)
{
    m->reason = reason;
    return 0;
}

/* The UTF-8 check is the one hot loop (long strings): it runs on an inlined cursor of CBS's shape
 * (pointer + bytes left, every read through a bounds-checked getter) instead of calling
 * CBS_get_u8 in libcrypto once per byte. */
typedef struct {
    const uint8_t *p;
    size_t len;
} utf8_cursor_t;

static inline int utf8_get(utf8_cursor_t *c, uint8_t *out)
{
    if (c->len == 0)
        return 0;
    *out = *c->p++;
    c->len--;
    return 1;
}

/* utf8_ascii8 consumes 8 bytes if there are 8 left and all are ASCII. */
static inline int utf8_ascii8(utf8_cursor_t *c)
{
    uint64_t w;
    if (c->len < sizeof(w))
        return 0;
    memcpy(&w, c->p, sizeof(w));
    if ((w & MP_ASCII_MASK) != 0)
        return 0;
    c->p += sizeof(w);
    c->len -= sizeof(w);
    return 1;
}

/* utf8_ascii32 consumes 32 bytes if there are 32 left and all are ASCII. */
static inline int utf8_ascii32(utf8_cursor_t *c)
{
    uint64_t w[4];
    if (c->len < sizeof(w))
        return 0;
    memcpy(w, c->p, sizeof(w));
    if (((w[0] | w[1] | w[2] | w[3]) & MP_ASCII_MASK) != 0)
        return 0;
    c->p += sizeof(w);
    c->len -= sizeof(w);
    return 1;
}

/* utf8_char consumes one character from |c|: Unicode Table 3-7, which is exactly what
 * CPython's strict UTF-8 codec accepts. */
static inline int utf8_char(utf8_cursor_t *c)
{
    uint8_t b, lo = 0x80, hi = 0xbf, x;
    size_t more;

    if (!utf8_get(c, &b))
        return 0;
    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf) {
        more = 1;
    } else if (b >= 0xe0 && b <= 0xef) {
        more = 2;
        if (b == 0xe0)
            lo = 0xa0; /* overlong */
        else if (b == 0xed)
            hi = 0x9f; /* U+D800..U+DFFF: surrogates are invalid in strict UTF-8 */
    } else if (b >= 0xf0 && b <= 0xf4) {
        more = 3;
        if (b == 0xf0)
            lo = 0x90; /* overlong */
        else if (b == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0; /* continuation byte, C0/C1 overlong lead, F5..FF */
    }
    if (!utf8_get(c, &x) || x < lo || x > hi)
        return 0;
    while (--more > 0) {
        if (!utf8_get(c, &x) || (x & 0xc0) != 0x80)
            return 0;
    }
    return 1;
}

/* utf8_valid returns 1 if |s| is strict UTF-8. ASCII runs go 32 (then 8) bytes per step; a
 * block with a non-ASCII byte is followed by characters one at a time up to the end of the
 * next 8-byte window, so mostly non-ASCII text does not pay for a failed block test per
 * character. */
static int utf8_valid(CBS s)
{
    utf8_cursor_t c = {CBS_data(&s), CBS_len(&s)};

    while (c.len > 0) {
        if (utf8_ascii32(&c))
            continue;
        while (utf8_ascii8(&c))
            ;
        size_t stop = c.len > 8 ? c.len - 8 : 0;
        while (c.len > stop) {
            if (!utf8_char(&c))
                return 0;
        }
    }
    return 1;
}

/* get_len reads a big-endian length of |width| bytes (1, 2 or 4). */
static int get_len(CBS *in, size_t width, size_t *out)
{
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;

    switch (width) {
    case 1:
        if (!CBS_get_u8(in, &u8))
            return 0;
        *out = u8;
        return 1;
    case 2:
        if (!CBS_get_u16(in, &u16))
            return 0;
        *out = u16;
        return 1;
    default:
        if (!CBS_get_u32(in, &u32))
            return 0;
        *out = u32;
        return 1;
    }
}

static int mp_new(mp_t *m, value_type_t type, value_t **out)
{
    *out = value_new(m->arena, type);
    return *out != NULL ? 1 : mp_fail(m, "too many values");
}

/* mp_scalar consumes the |n| payload bytes of a number and makes a value of |type|. */
static int mp_scalar(mp_t *m, CBS *in, size_t n, value_type_t type, value_t **out)
{
    if (!CBS_skip(in, n))
        return mp_fail(m, "truncated");
    return mp_new(m, type, out);
}

/* mp_bytes makes a str or bytes value of the next |n| bytes, copied into the arena. */
static int mp_bytes(mp_t *m, CBS *in, size_t n, value_type_t type, value_t **out)
{
    CBS s;
    if (!CBS_get_bytes(in, &s, n))
        return mp_fail(m, "truncated");
    if (type == VAL_STR && !utf8_valid(s))
        return mp_fail(m, "invalid UTF-8");
    uint8_t *p = value_alloc_string(m->arena, n);
    if (p == NULL)
        return mp_fail(m, "too many string bytes");
    if (n > 0)
        memcpy(p, CBS_data(&s), n);
    if (!mp_new(m, type, out))
        return 0;
    (*out)->u.str.data = p;
    (*out)->u.str.len = n;
    return 1;
}

/* mp_items allocates room for |n| value pointers; |n| has been checked against the input. */
static int mp_items(mp_t *m, size_t n, value_t ***out)
{
    *out = NULL;
    if (n == 0)
        return 1;
    if (n > SIZE_MAX / sizeof(value_t *))
        return mp_fail(m, "too many values");
    *out = value_alloc(m->arena, n * sizeof(value_t *));
    return *out != NULL ? 1 : mp_fail(m, "out of memory");
}

/* mp_room checks, before anything is allocated, that |n| more values fit the arena. */
static int mp_room(mp_t *m, size_t n)
{
    const value_arena_t *a = m->arena;
    if (a->values > a->limits.max_values || n > a->limits.max_values - a->values)
        return mp_fail(m, "too many values");
    return 1;
}

static int mp_container_depth(mp_t *m, size_t depth)
{
    if (depth >= m->arena->limits.max_depth || depth >= MP_PYTHON_MAX_DEPTH)
        return mp_fail(m, "nesting too deep");
    return 1;
}

static int mp_array(mp_t *m, CBS *in, size_t n, size_t depth, value_t **out)
{
    if (!mp_container_depth(m, depth))
        return 0;
    /* Every item takes at least one byte. */
    if (n > CBS_len(in))
        return mp_fail(m, "array count exceeds input");
    if (!mp_room(m, n + 1)) /* n <= bytes left: no overflow */
        return 0;
    value_t *v;
    if (!mp_new(m, VAL_LIST, &v) || !mp_items(m, n, &v->u.seq.items))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!mp_value(m, in, depth + 1, &v->u.seq.items[i]))
            return 0;
    }
    v->u.seq.n = n;
    *out = v;
    return 1;
}

static int mp_map(mp_t *m, CBS *in, size_t n, size_t depth, value_t **out)
{
    if (!mp_container_depth(m, depth))
        return 0;
    /* Every pair takes at least two bytes. */
    if (n > CBS_len(in) / 2)
        return mp_fail(m, "map count exceeds input");
    if (!mp_room(m, 2 * n + 1)) /* 2n <= bytes left: no overflow */
        return 0;
    value_t *v;
    if (!mp_new(m, VAL_DICT, &v) || !mp_items(m, n, &v->u.dict.keys) ||
        !mp_items(m, n, &v->u.dict.values))
        return 0;
    for (size_t i = 0; i < n; i++) {
        value_t *k;
        if (!mp_value(m, in, depth + 1, &k))
            return 0;
        /* strict_map_key=True: only str and bytes keys (PROTOCOL.md §5.4). */
        if (k->type != VAL_STR && k->type != VAL_BYTES)
            return mp_fail(m, "map key not str or bytes");
        v->u.dict.keys[i] = k;
        if (!mp_value(m, in, depth + 1, &v->u.dict.values[i]))
            return 0;
    }
    v->u.dict.n = n;
    *out = v;
    return 1;
}

/* mp_timestamp accepts the data of ext type -1 exactly when msgpack 1.0.3 builds a Timestamp
 * from it: 4 bytes (seconds), 8 bytes (30-bit nanoseconds, 34-bit seconds) or 12 bytes (u32
 * nanoseconds, s64 seconds), with nanoseconds below 10^9. */
static int mp_timestamp(mp_t *m, CBS data, value_t **out)
{
    uint64_t u64;
    uint32_t nsec;

    switch (CBS_len(&data)) {
    case 4:
        break;
    case 8:
        if (!CBS_get_u64(&data, &u64) || (u64 >> 34) >= MP_NSEC_LIMIT)
            return mp_fail(m, "invalid timestamp");
        break;
    case 12:
        if (!CBS_get_u32(&data, &nsec) || nsec >= MP_NSEC_LIMIT)
            return mp_fail(m, "invalid timestamp");
        break;
    default:
        return mp_fail(m, "invalid timestamp");
    }
    return mp_new(m, VAL_OTHER, out);
}

/* mp_ext decodes an ext value of |n| data bytes (after its type byte). */
static int mp_ext(mp_t *m, CBS *in, size_t n, size_t depth, value_t **out)
{
    uint8_t type;
    CBS data;

    if (!CBS_get_u8(in, &type) || !CBS_get_bytes(in, &data, n))
        return mp_fail(m, "truncated");
    if (type == 0xff)
        return mp_timestamp(m, data, out);
    if (type > 0x7f)
        return mp_fail(m, "invalid ext type code"); /* ExtType(): code must be 0~127 */

    /* msgpack.ExtType(code, data) is a namedtuple: a real 2-tuple for the daemon. */
    if (depth >= m->arena->limits.max_depth)
        return mp_fail(m, "nesting too deep");
    if (!mp_room(m, 3))
        return 0;
    value_t *v, *code;
    CBS rest = data;
    if (!mp_new(m, VAL_TUPLE, &v) || !mp_items(m, 2, &v->u.seq.items) ||
        !mp_new(m, VAL_INT, &code) || !mp_bytes(m, &rest, n, VAL_BYTES, &v->u.seq.items[1]))
        return 0;
    v->u.seq.items[0] = code;
    v->u.seq.n = 2;
    *out = v;
    return 1;
}

/* mp_sized reads a |width|-byte length, then the str, bin, array, map or ext it announces. */
static int mp_sized(mp_t *m, CBS *in, uint8_t tag, size_t width, size_t depth, value_t **out)
{
    size_t n;
    if (!get_len(in, width, &n))
        return mp_fail(m, "truncated");
    switch (tag) {
    case 0xc4:
    case 0xc5:
    case 0xc6:
        return mp_bytes(m, in, n, VAL_BYTES, out);
    case 0xc7:
    case 0xc8:
    case 0xc9:
        return mp_ext(m, in, n, depth, out);
    case 0xd9:
    case 0xda:
    case 0xdb:
        return mp_bytes(m, in, n, VAL_STR, out);
    case 0xdc:
    case 0xdd:
        return mp_array(m, in, n, depth, out);
    default: /* 0xde, 0xdf */
        return mp_map(m, in, n, depth, out);
    }
}

/* mp_value decodes one value; |depth| is the number of containers around it. */
static int mp_value(mp_t *m, CBS *in, size_t depth, value_t **out)
{
    uint8_t tag;
    value_t *v;

    if (!CBS_get_u8(in, &tag))
        return mp_fail(m, "truncated");
    if (tag <= 0x7f || tag >= 0xe0) /* positive / negative fixint */
        return mp_new(m, VAL_INT, out);
    if (tag <= 0x8f)
        return mp_map(m, in, tag & 0x0f, depth, out);
    if (tag <= 0x9f)
        return mp_array(m, in, tag & 0x0f, depth, out);
    if (tag <= 0xbf)
        return mp_bytes(m, in, tag & 0x1f, VAL_STR, out);

    switch (tag) {
    case 0xc0:
        return mp_new(m, VAL_NONE, out);
    case 0xc1:
        return mp_fail(m, "reserved type byte 0xc1");
    case 0xc2:
    case 0xc3:
        if (!mp_new(m, VAL_BOOL, &v))
            return 0;
        v->u.boolean = tag == 0xc3;
        *out = v;
        return 1;
    case 0xc4: /* bin8/16/32 */
    case 0xc7: /* ext8/16/32 */
    case 0xd9: /* str8/16/32 */
        return mp_sized(m, in, tag, 1, depth, out);
    case 0xc5:
    case 0xc8:
    case 0xda:
    case 0xdc: /* array16 */
    case 0xde: /* map16 */
        return mp_sized(m, in, tag, 2, depth, out);
    case 0xc6:
    case 0xc9:
    case 0xdb:
    case 0xdd: /* array32 */
    case 0xdf: /* map32 */
        return mp_sized(m, in, tag, 4, depth, out);
    case 0xca:
        return mp_scalar(m, in, 4, VAL_FLOAT, out);
    case 0xcb:
        return mp_scalar(m, in, 8, VAL_FLOAT, out);
    case 0xcc: /* uint8..64 */
    case 0xd0: /* int8..64 */
        return mp_scalar(m, in, 1, VAL_INT, out);
    case 0xcd:
    case 0xd1:
        return mp_scalar(m, in, 2, VAL_INT, out);
    case 0xce:
    case 0xd2:
        return mp_scalar(m, in, 4, VAL_INT, out);
    case 0xcf:
    case 0xd3:
        return mp_scalar(m, in, 8, VAL_INT, out);
    case 0xd4: /* fixext 1, 2, 4, 8, 16 */
        return mp_ext(m, in, 1, depth, out);
    case 0xd5:
        return mp_ext(m, in, 2, depth, out);
    case 0xd6:
        return mp_ext(m, in, 4, depth, out);
    case 0xd7:
        return mp_ext(m, in, 8, depth, out);
    default: /* 0xd8 */
        return mp_ext(m, in, 16, depth, out);
    }
}

int decode_msgpack(const uint8_t *data, size_t len, value_arena_t *arena, value_t **out,
                   const char **out_reason)
{
    mp_t m = {arena, NULL};
    CBS in;
    value_t *v;

    *out = NULL;
    CBS_init(&in, data, len);
    if (!mp_value(&m, &in, 0, &v)) {
        *out_reason = m.reason;
        return 0;
    }
    /* unpackb raises ExtraData for anything after the value (PROTOCOL.md §5.4). */
    if (CBS_len(&in) != 0) {
        *out_reason = "trailing bytes";
        return 0;
    }
    *out = v;
    return 1;
}
