/* fuzz_msgpack: libFuzzer target for the msgpack decoder (proxy/msgpack.c).
 *
 * Beyond "no crash, no leak", it checks the decoder's promises on every input:
 *  - a refusal carries a reason and no value; an accepted tree stays within the arena limits
 *    (depth, values, string bytes);
 *  - every str in an accepted tree is strict UTF-8 (checked here by an independent, naive
 *    decoder) and every dict key is a str or bytes (strict_map_key, PROTOCOL.md §5.4);
 *  - msgpack is self-delimiting: once an input is accepted, it is refused one byte short and
 *    with one byte more;
 *  - tighter limits only ever turn an acceptance into a refusal, never into another tree. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "value.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* utf8_strict decodes code point by code point and rejects overlongs, surrogates and values
 * above U+10FFFF: deliberately written differently from the decoder's validator. */
static int utf8_strict(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k;
        uint8_t b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xe0) == 0xc0) {
            cp = b & 0x1fu;
            k = 1;
        } else if ((b & 0xf0) == 0xe0) {
            cp = b & 0x0fu;
            k = 2;
        } else if ((b & 0xf8) == 0xf0) {
            cp = b & 0x07u;
            k = 3;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3fu);
        }
        static const uint32_t min[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

typedef struct {
    size_t values;
    size_t string_bytes;
} tally_t;

static void check_tree(const value_t *v, size_t depth, const value_limits_t *lim, tally_t *t)
{
    t->values++;
    switch (v->type) {
    case VAL_NONE:
    case VAL_BOOL:
    case VAL_INT:
    case VAL_FLOAT:
    case VAL_OTHER:
        return;
    case VAL_STR:
        CHECK(utf8_strict(v->u.str.data, v->u.str.len));
        t->string_bytes += v->u.str.len;
        return;
    case VAL_BYTES:
        t->string_bytes += v->u.str.len;
        return;
    case VAL_TUPLE: /* only an ExtType: (int, bytes) */
        CHECK(depth < lim->max_depth);
        CHECK(v->u.seq.n == 2);
        CHECK(v->u.seq.items[0]->type == VAL_INT && v->u.seq.items[1]->type == VAL_BYTES);
        check_tree(v->u.seq.items[0], depth + 1, lim, t);
        check_tree(v->u.seq.items[1], depth + 1, lim, t);
        return;
    case VAL_LIST:
        CHECK(depth < lim->max_depth && depth < 1024);
        for (size_t i = 0; i < v->u.seq.n; i++)
            check_tree(v->u.seq.items[i], depth + 1, lim, t);
        return;
    case VAL_DICT:
        CHECK(depth < lim->max_depth && depth < 1024);
        for (size_t i = 0; i < v->u.dict.n; i++) {
            const value_t *k = v->u.dict.keys[i];
            CHECK(k->type == VAL_STR || k->type == VAL_BYTES);
            check_tree(k, depth + 1, lim, t);
            check_tree(v->u.dict.values[i], depth + 1, lim, t);
        }
        return;
    default:
        CHECK(0); /* msgpack never makes complex, ellipsis, set, frozenset */
    }
}

static int same_tree(const value_t *a, const value_t *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case VAL_BOOL:
        return a->u.boolean == b->u.boolean;
    case VAL_STR:
    case VAL_BYTES:
        return a->u.str.len == b->u.str.len &&
               (a->u.str.len == 0 || memcmp(a->u.str.data, b->u.str.data, a->u.str.len) == 0);
    case VAL_TUPLE:
    case VAL_LIST:
        if (a->u.seq.n != b->u.seq.n)
            return 0;
        for (size_t i = 0; i < a->u.seq.n; i++) {
            if (!same_tree(a->u.seq.items[i], b->u.seq.items[i]))
                return 0;
        }
        return 1;
    case VAL_DICT:
        if (a->u.dict.n != b->u.dict.n)
            return 0;
        for (size_t i = 0; i < a->u.dict.n; i++) {
            if (!same_tree(a->u.dict.keys[i], b->u.dict.keys[i]) ||
                !same_tree(a->u.dict.values[i], b->u.dict.values[i]))
                return 0;
        }
        return 1;
    default:
        return 1;
    }
}

/* decode_checked decodes |data| with |lim| into |arena| and checks the result's promises. */
static int decode_checked(const uint8_t *data, size_t size, const value_limits_t *lim,
                          value_arena_t *arena, value_t **out)
{
    const char *reason = NULL;
    value_arena_init(arena, lim);
    int ok = decode_msgpack(data, size, arena, out, &reason);
    if (!ok) {
        CHECK(reason != NULL && reason[0] != '\0' && *out == NULL);
        return 0;
    }
    CHECK(*out != NULL);
    tally_t t = {0, 0};
    check_tree(*out, 0, lim, &t);
    CHECK(t.values <= arena->values && arena->values <= lim->max_values);
    CHECK(t.string_bytes <= arena->string_bytes && arena->string_bytes <= lim->max_string_bytes);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    value_limits_t wide, tight = {4, 64, 64};
    value_arena_t a, b;
    value_t *va = NULL, *vb = NULL;

    value_limits_default(&wide);
    int ok = decode_checked(data, size, &wide, &a, &va);
    int tight_ok = decode_checked(data, size, &tight, &b, &vb);
    if (tight_ok)
        CHECK(ok && same_tree(va, vb));
    value_arena_cleanup(&b);

    if (ok) {
        /* One byte short is incomplete; one byte more is ExtraData. */
        value_t *vc = NULL;
        CHECK(size > 0 && !decode_checked(data, size - 1, &wide, &b, &vc));
        value_arena_cleanup(&b);
        uint8_t *longer = malloc(size + 1);
        CHECK(longer != NULL);
        memcpy(longer, data, size);
        longer[size] = 0xc0;
        CHECK(!decode_checked(longer, size + 1, &wide, &b, &vc));
        value_arena_cleanup(&b);
        free(longer);
    }
    value_arena_cleanup(&a);
    return 0;
}
