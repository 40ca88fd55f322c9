/* fuzz_serpent: libFuzzer target for the serpent decoder (proxy/serpent.c).
 *
 * Beyond "no crash, no leak, no read past the input", it checks the decoder's promises
 * (decode.h, value.h) on every input:
 *  - a refusal names a non-empty reason;
 *  - an input holding a NUL, or that is not strict UTF-8, is refused (serpent.loads decodes
 *    strictly and rejects NUL first, PROTOCOL.md §5.1);
 *  - an accepted tree is well formed: only the types literal_eval builds (no frozenset, no
 *    "other"), booleans 0/1, str contents generalized UTF-8 (lone surrogates as 3-byte forms,
 *    nothing overlong or above U+10FFFF), data present when non-empty, container depth and
 *    value count within the arena limits, only hashable set members and dict keys (no list,
 *    dict or set, also inside tuples), no two equal strings in one set (Python keeps one);
 *  - decoding is deterministic: a second decode gives the same verdict and tree;
 *  - limits only ever refuse: what decodes under small limits decodes to the same tree under
 *    the defaults;
 *  - the tokenizer is consistent: serpent's header comment line in front of an input that does
 *    not start with a blank changes nothing, and an accepted input stays accepted, with the
 *    same tree, when a newline is appended. */
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

static const char kHeader[] = "# serpent utf-8 python3.2\n";

/* utf8_valid: strict UTF-8 as Python's "utf-8" codec decodes it (no surrogates, no overlong
 * forms, nothing above U+10FFFF); with |allow_surrogates|, generalized UTF-8 as
 * str.encode("utf-8", "surrogatepass") writes it. */
static int utf8_valid(const uint8_t *p, size_t n, int allow_surrogates)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff)
            return 0;
        if (cp >= 0xd800 && cp <= 0xdfff && !allow_surrogates)
            return 0;
        i += len;
    }
    return 1;
}

static int is_hashable(const value_t *v)
{
    if (v->type == VAL_LIST || v->type == VAL_DICT || v->type == VAL_SET)
        return 0;
    if (v->type == VAL_TUPLE)
        for (size_t i = 0; i < v->u.seq.n; i++)
            if (!is_hashable(v->u.seq.items[i]))
                return 0;
    return 1;
}

static int str_equal(const value_t *a, const value_t *b)
{
    return a->type == b->type && a->u.str.len == b->u.str.len &&
           (a->u.str.len == 0 || memcmp(a->u.str.data, b->u.str.data, a->u.str.len) == 0);
}

typedef struct {
    size_t values;
    size_t max_depth;
    uint64_t hash; /* FNV-1a over the tree, to compare two decodes */
} walk_t;

static void mix(walk_t *w, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        w->hash ^= b[i];
        w->hash *= 0x100000001b3ull;
    }
}

static void check_set_strings_distinct(const value_t *v)
{
    for (size_t i = 0; i < v->u.seq.n; i++) {
        const value_t *x = v->u.seq.items[i];
        if (x->type != VAL_STR && x->type != VAL_BYTES)
            continue;
        for (size_t j = 0; j < i; j++)
            CHECK(!str_equal(x, v->u.seq.items[j]));
    }
}

/* walk checks |v| and everything below it; |depth| counts the containers enclosing |v|. */
static void walk(walk_t *w, const value_t *v, size_t depth)
{
    CHECK(v != NULL);
    CHECK(v->type >= VAL_NONE && v->type <= VAL_DICT && v->type != VAL_FROZENSET);
    w->values++;
    mix(w, &v->type, sizeof(v->type));
    switch (v->type) {
    case VAL_BOOL:
        CHECK(v->u.boolean == 0 || v->u.boolean == 1);
        mix(w, &v->u.boolean, sizeof(v->u.boolean));
        break;
    case VAL_STR:
    case VAL_BYTES:
        CHECK(v->u.str.len == 0 || v->u.str.data != NULL);
        if (v->type == VAL_STR)
            CHECK(utf8_valid(v->u.str.data, v->u.str.len, 1));
        mix(w, &v->u.str.len, sizeof(v->u.str.len));
        if (v->u.str.len)
            mix(w, v->u.str.data, v->u.str.len);
        break;
    case VAL_TUPLE:
    case VAL_LIST:
    case VAL_SET:
        if (depth + 1 > w->max_depth)
            w->max_depth = depth + 1;
        CHECK(v->u.seq.n == 0 || v->u.seq.items != NULL);
        mix(w, &v->u.seq.n, sizeof(v->u.seq.n));
        if (v->type == VAL_SET)
            check_set_strings_distinct(v);
        for (size_t i = 0; i < v->u.seq.n; i++) {
            if (v->type == VAL_SET)
                CHECK(is_hashable(v->u.seq.items[i]));
            walk(w, v->u.seq.items[i], depth + 1);
        }
        break;
    case VAL_DICT:
        if (depth + 1 > w->max_depth)
            w->max_depth = depth + 1;
        CHECK(v->u.dict.n == 0 || (v->u.dict.keys != NULL && v->u.dict.values != NULL));
        mix(w, &v->u.dict.n, sizeof(v->u.dict.n));
        for (size_t i = 0; i < v->u.dict.n; i++) {
            CHECK(is_hashable(v->u.dict.keys[i]));
            walk(w, v->u.dict.keys[i], depth + 1);
            walk(w, v->u.dict.values[i], depth + 1);
        }
        break;
    default:
        break;
    }
}

/* decode_once decodes an exact-size copy of |data| (so that ASan sees any over-read) under
 * |limits| (NULL: the defaults); on success it checks the tree and returns its hash. */
static int decode_once(const uint8_t *data, size_t size, const value_limits_t *limits,
                       uint64_t *out_hash)
{
    value_arena_t arena;
    value_t *v = NULL;
    const char *reason = NULL;
    walk_t w = {0, 0, 0xcbf29ce484222325ull};
    uint8_t *copy = malloc(size ? size : 1);

    CHECK(copy != NULL);
    if (size)
        memcpy(copy, data, size);
    value_arena_init(&arena, limits);
    int ok = decode_serpent(copy, size, &arena, &v, &reason);
    if (ok) {
        walk(&w, v, 0);
        CHECK(w.values <= arena.limits.max_values);
        CHECK(w.max_depth <= arena.limits.max_depth);
        CHECK(arena.string_bytes <= arena.limits.max_string_bytes);
        *out_hash = w.hash;
    } else {
        CHECK(reason != NULL && reason[0] != '\0');
        *out_hash = 0;
    }
    value_arena_cleanup(&arena);
    free(copy);
    return ok;
}

/* decode_joined decodes |a| followed by |b|. */
static int decode_joined(const void *a, size_t alen, const void *b, size_t blen, uint64_t *out_hash)
{
    uint8_t *p = malloc(alen + blen + 1);
    CHECK(p != NULL);
    if (alen)
        memcpy(p, a, alen);
    if (blen)
        memcpy(p + alen, b, blen);
    int ok = decode_once(p, alen + blen, NULL, out_hash);
    free(p);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    value_limits_t small = {4, 64, 256};
    uint64_t h_default, h_again, h_small;

    int ok = decode_once(data, size, NULL, &h_default);
    if (ok) {
        CHECK(size > 0);
        CHECK(memchr(data, 0, size) == NULL);
        CHECK(utf8_valid(data, size, 0));
    }
    CHECK(decode_once(data, size, NULL, &h_again) == ok);
    CHECK(h_again == h_default);
    if (decode_once(data, size, &small, &h_small)) {
        CHECK(ok);
        CHECK(h_small == h_default);
    }

    /* literal_eval strips leading blanks of the whole text only: after the header they would
     * be indentation, so those inputs are left out */
    if (size == 0 || (data[0] != ' ' && data[0] != '\t')) {
        CHECK(decode_joined(kHeader, sizeof(kHeader) - 1, data, size, &h_again) == ok);
        CHECK(h_again == h_default);
    }
    if (ok) {
        CHECK(decode_joined(data, size, "\n", 1, &h_again));
        CHECK(h_again == h_default);
    }
    return 0;
}
