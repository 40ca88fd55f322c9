/* fuzz_marshal: libFuzzer target for the marshal decoder (proxy/marshal.c).
 *
 * Beyond "no crash, no leak, no undefined behaviour", it checks decode_marshal's promises on every
 * input:
 *  - a refusal always comes with a reason;
 *  - an accepted tree keeps the limits when walked with references expanded: no more than
 *    max_values nodes, containers no deeper than max_depth, valid generalized UTF-8 in every str
 *    (what bytes.decode('utf-8', 'surrogatepass') accepts), no unhashable dict key or set member;
 *  - marshal is self-delimiting and trailing bytes are refused, so one byte fewer or one byte more
 *    than an accepted input is refused;
 *  - tighter limits only refuse more: an input accepted under small limits is accepted under the
 *    defaults;
 *  - the input taken as the contents of a u string is accepted exactly when it is UTF-8 with
 *    surrogates (a plain reference validator), and kept byte for byte; taken as the contents of an
 *    a string it is always accepted, each byte becoming its Latin-1 code point. */
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

/* utf8_ok: UTF-8 with surrogates allowed (ED A0-BF xx), nothing else invalid. */
static int utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            return 0;
        }
        if (n - i <= need)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += need + 1;
    }
    return 1;
}

static int unhashable(const value_t *v)
{
    if (v->type == VAL_LIST || v->type == VAL_DICT || v->type == VAL_SET)
        return 1;
    if (v->type == VAL_TUPLE)
        for (size_t i = 0; i < v->u.seq.n; i++)
            if (unhashable(v->u.seq.items[i]))
                return 1;
    return 0;
}

typedef struct {
    const value_limits_t *limits;
    size_t nodes;
} walk_t;

/* walk visits the expanded tree; |level| is the container depth of |v| (the top is 1). */
static void walk(walk_t *w, const value_t *v, size_t level)
{
    CHECK(v != NULL);
    w->nodes++;
    CHECK(w->nodes <= w->limits->max_values);
    switch (v->type) {
    case VAL_STR:
        CHECK(utf8_ok(v->u.str.data, v->u.str.len));
        break;
    case VAL_TUPLE:
    case VAL_LIST:
    case VAL_SET:
    case VAL_FROZENSET:
        CHECK(level <= w->limits->max_depth);
        for (size_t i = 0; i < v->u.seq.n; i++) {
            if (v->type == VAL_SET || v->type == VAL_FROZENSET)
                CHECK(!unhashable(v->u.seq.items[i]));
            walk(w, v->u.seq.items[i], level + 1);
        }
        break;
    case VAL_DICT:
        CHECK(level <= w->limits->max_depth);
        for (size_t i = 0; i < v->u.dict.n; i++) {
            CHECK(!unhashable(v->u.dict.keys[i]));
            walk(w, v->u.dict.keys[i], level + 1);
            walk(w, v->u.dict.values[i], level + 1);
        }
        break;
    default:
        break;
    }
}

static int decode_with(const uint8_t *data, size_t size, const value_limits_t *limits)
{
    value_arena_t arena;
    value_t *v = NULL;
    const char *reason = NULL;
    value_arena_init(&arena, limits);
    int ok = decode_marshal(data, size, &arena, &v, &reason);
    if (ok) {
        walk_t w = {&arena.limits, 0};
        walk(&w, v, 1);
        CHECK(arena.string_bytes <= arena.limits.max_string_bytes);
    } else {
        CHECK(reason != NULL && reason[0] != '\0');
    }
    value_arena_cleanup(&arena);
    return ok;
}

/* check_as_strings wraps |data| in u and a headers and checks the decoded str. */
static void check_as_strings(const uint8_t *data, size_t size)
{
    if (size > 1 << 20)
        return;
    uint8_t *buf = malloc(5 + size);
    CHECK(buf != NULL);
    buf[1] = (uint8_t)size;
    buf[2] = (uint8_t)(size >> 8);
    buf[3] = (uint8_t)(size >> 16);
    buf[4] = 0;
    if (size)
        memcpy(buf + 5, data, size);

    value_arena_t arena;
    value_t *v = NULL;
    const char *reason = NULL;
    buf[0] = 'u';
    value_arena_init(&arena, NULL);
    int ok = decode_marshal(buf, 5 + size, &arena, &v, &reason);
    CHECK(ok == utf8_ok(data, size));
    if (ok)
        CHECK(v->type == VAL_STR && v->u.str.len == size &&
              (size == 0 || memcmp(v->u.str.data, data, size) == 0));
    value_arena_cleanup(&arena);

    buf[0] = 'a';
    value_arena_init(&arena, NULL);
    CHECK(decode_marshal(buf, 5 + size, &arena, &v, &reason));
    CHECK(v->type == VAL_STR);
    size_t j = 0;
    for (size_t i = 0; i < size; i++) {
        if (data[i] < 0x80) {
            CHECK(j < v->u.str.len && v->u.str.data[j++] == data[i]);
        } else {
            CHECK(j + 1 < v->u.str.len && v->u.str.data[j++] == (0xC0 | (data[i] >> 6)));
            CHECK(v->u.str.data[j++] == (0x80 | (data[i] & 0x3F)));
        }
    }
    CHECK(j == v->u.str.len);
    value_arena_cleanup(&arena);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_as_strings(data, size);

    int ok = decode_with(data, size, NULL);

    value_limits_t small = {.max_depth = 4, .max_values = 40, .max_string_bytes = 64};
    if (decode_with(data, size, &small))
        CHECK(ok);

    if (ok) {
        CHECK(size > 0);
        CHECK(!decode_with(data, size - 1, NULL));
        uint8_t *more = malloc(size + 1);
        CHECK(more != NULL);
        memcpy(more, data, size);
        more[size] = 'N';
        CHECK(!decode_with(more, size + 1, NULL));
        free(more);
    }
    return 0;
}
