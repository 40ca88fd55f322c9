/* fuzz_json: libFuzzer target for the json payload decoder (proxy/json.c).
 *
 * Beyond "no crash, no leak, no read outside the input", it checks on every input:
 *  - an accepted tree holds only the types JSON makes (None bool int float str list dict),
 *    every str is generalized UTF-8 (well-formed, surrogates allowed), every dict key is a str
 *    and no key repeats in one dict, and no container is nested deeper than max_depth;
 *  - decoding under small limits (depth 4, 64 values, 64 string bytes) never accepts what the
 *    default limits refuse, and when both accept, the trees are the same;
 *  - re-encoding the accepted tree as JSON (every non-ASCII or special character as a \u
 *    escape, astral ones as surrogate pairs) decodes to the same tree again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bytestring.h>
#include <openssl/mem.h>

#include "decode.h"
#include "value.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* next_code_point reads one generalized UTF-8 sequence (surrogates allowed, nothing else
 * ill-formed) from |s|, or returns 0. */
static int next_code_point(CBS *s, uint32_t *out)
{
    uint8_t b0, b;
    uint32_t cp, min;
    size_t n;
    if (!CBS_get_u8(s, &b0))
        return 0;
    if (b0 < 0x80) {
        *out = b0;
        return 1;
    }
    if (b0 >= 0xc2 && b0 <= 0xdf) {
        n = 1, cp = b0 & 0x1f, min = 0x80;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
        n = 2, cp = b0 & 0x0f, min = 0x800;
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
        n = 3, cp = b0 & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (!CBS_get_u8(s, &b) || (b & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (b & 0x3f);
    }
    if (cp < min || cp > 0x10ffff)
        return 0;
    *out = cp;
    return 1;
}

static int same_str(const value_t *a, const value_t *b)
{
    return a->u.str.len == b->u.str.len && memcmp(a->u.str.data, b->u.str.data, a->u.str.len) == 0;
}

static void check_tree(const value_t *v, size_t depth, size_t max_depth)
{
    CBS s;
    uint32_t cp;
    switch (v->type) {
    case VAL_NONE:
    case VAL_BOOL:
    case VAL_INT:
    case VAL_FLOAT:
        return;
    case VAL_STR:
        CBS_init(&s, v->u.str.data, v->u.str.len);
        while (CBS_len(&s) > 0)
            CHECK(next_code_point(&s, &cp));
        return;
    case VAL_LIST:
        CHECK(depth < max_depth);
        for (size_t i = 0; i < v->u.seq.n; i++)
            check_tree(v->u.seq.items[i], depth + 1, max_depth);
        return;
    case VAL_DICT:
        CHECK(depth < max_depth);
        for (size_t i = 0; i < v->u.dict.n; i++) {
            CHECK(v->u.dict.keys[i]->type == VAL_STR);
            check_tree(v->u.dict.keys[i], depth + 1, max_depth);
            check_tree(v->u.dict.values[i], depth + 1, max_depth);
            for (size_t j = 0; j < i; j++)
                CHECK(!same_str(v->u.dict.keys[i], v->u.dict.keys[j]));
        }
        return;
    default:
        CHECK(0);
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
        return same_str(a, b);
    case VAL_LIST:
        if (a->u.seq.n != b->u.seq.n)
            return 0;
        for (size_t i = 0; i < a->u.seq.n; i++)
            if (!same_tree(a->u.seq.items[i], b->u.seq.items[i]))
                return 0;
        return 1;
    case VAL_DICT:
        if (a->u.dict.n != b->u.dict.n)
            return 0;
        for (size_t i = 0; i < a->u.dict.n; i++)
            if (!same_tree(a->u.dict.keys[i], b->u.dict.keys[i]) ||
                !same_tree(a->u.dict.values[i], b->u.dict.values[i]))
                return 0;
        return 1;
    default:
        return 1; /* numbers are typed, not kept */
    }
}

static void add_u_escape(CBB *out, uint32_t unit)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t e[6] = {'\\',
                    'u',
                    (uint8_t)hex[(unit >> 12) & 15],
                    (uint8_t)hex[(unit >> 8) & 15],
                    (uint8_t)hex[(unit >> 4) & 15],
                    (uint8_t)hex[unit & 15]};
    CHECK(CBB_add_bytes(out, e, sizeof(e)));
}

static void encode_str(CBB *out, const value_t *v)
{
    CBS s;
    uint32_t cp;
    CBS_init(&s, v->u.str.data, v->u.str.len);
    CHECK(CBB_add_u8(out, '"'));
    while (CBS_len(&s) > 0) {
        CHECK(next_code_point(&s, &cp));
        if (cp >= 0x20 && cp < 0x7f && cp != '"' && cp != '\\') {
            CHECK(CBB_add_u8(out, (uint8_t)cp));
        } else if (cp >= 0x10000) {
            add_u_escape(out, 0xd800 + ((cp - 0x10000) >> 10));
            add_u_escape(out, 0xdc00 + ((cp - 0x10000) & 0x3ff));
        } else {
            add_u_escape(out, cp);
        }
    }
    CHECK(CBB_add_u8(out, '"'));
}

static void encode(CBB *out, const value_t *v)
{
    static const char *const kScalar[] = {
        [VAL_NONE] = "null",
        [VAL_INT] = "-0",
        [VAL_FLOAT] = "1e-5",
    };
    switch (v->type) {
    case VAL_NONE:
    case VAL_INT:
    case VAL_FLOAT:
        CHECK(CBB_add_bytes(out, (const uint8_t *)kScalar[v->type], strlen(kScalar[v->type])));
        return;
    case VAL_BOOL:
        CHECK(v->u.boolean ? CBB_add_bytes(out, (const uint8_t *)"true", 4)
                           : CBB_add_bytes(out, (const uint8_t *)"false", 5));
        return;
    case VAL_STR:
        encode_str(out, v);
        return;
    case VAL_LIST:
        CHECK(CBB_add_u8(out, '['));
        for (size_t i = 0; i < v->u.seq.n; i++) {
            if (i)
                CHECK(CBB_add_bytes(out, (const uint8_t *)", ", 2));
            encode(out, v->u.seq.items[i]);
        }
        CHECK(CBB_add_u8(out, ']'));
        return;
    case VAL_DICT:
        CHECK(CBB_add_u8(out, '{'));
        for (size_t i = 0; i < v->u.dict.n; i++) {
            if (i)
                CHECK(CBB_add_u8(out, ','));
            encode(out, v->u.dict.keys[i]);
            CHECK(CBB_add_bytes(out, (const uint8_t *)"\t:\r\n", 4));
            encode(out, v->u.dict.values[i]);
        }
        CHECK(CBB_add_u8(out, '}'));
        return;
    default:
        CHECK(0);
    }
}

/* check_round_trip re-encodes |v| and decodes it again under |limits| (re-encoding grows the
 * wire form, never the decoded one: the same limits hold). */
static void check_round_trip(const value_t *v, const value_limits_t *limits)
{
    CBB cbb;
    uint8_t *text = NULL;
    size_t text_len = 0;
    value_arena_t arena;
    value_t *again = NULL;
    const char *reason = NULL;

    CHECK(CBB_init(&cbb, 256));
    encode(&cbb, v);
    CHECK(CBB_finish(&cbb, &text, &text_len));
    value_arena_init(&arena, limits);
    CHECK(decode_json(text, text_len, &arena, &again, &reason));
    CHECK(same_tree(v, again));
    value_arena_cleanup(&arena);
    OPENSSL_free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    value_limits_t def, small = {4, 64, 64};
    value_arena_t a_def, a_small;
    value_t *v_def = NULL, *v_small = NULL;
    const char *r_def = NULL, *r_small = NULL;

    value_limits_default(&def);
    value_arena_init(&a_def, &def);
    value_arena_init(&a_small, &small);
    int ok_def = decode_json(data, size, &a_def, &v_def, &r_def);
    int ok_small = decode_json(data, size, &a_small, &v_small, &r_small);

    CHECK(ok_def ? v_def != NULL : r_def != NULL);
    CHECK(ok_small ? v_small != NULL : r_small != NULL);
    if (ok_small) {
        CHECK(ok_def);
        CHECK(same_tree(v_def, v_small));
        CHECK(a_small.values <= small.max_values && a_small.string_bytes <= small.max_string_bytes);
    }
    if (ok_def) {
        check_tree(v_def, 0, def.max_depth);
        check_round_trip(v_def, &def);
    }
    value_arena_cleanup(&a_small);
    value_arena_cleanup(&a_def);
    return 0;
}
