/* Unit tests for proxy/msgpack.c: msgpack.unpackb(data, raw=False) of msgpack 1.0.3 as the
 * Pyro4 4.82 daemon calls it (PROTOCOL.md §5.4, §9).
 *
 * Each test pins one behaviour. Expected trees are written in a compact text (see tree()):
 * None True False int float ? s'text' b'text' (a,b) [a,b] d{k:v} — strings with non-printable
 * bytes as \xHH, dicts in wire order with duplicates. Where Python's own answer matters, the
 * byte strings come from msgpack.packb / Pyro4's MsgpackSerializer, and the outcomes were
 * checked against msgpack.unpackb (the integration test does so for thousands of inputs).
 * The captures are real Pyro4 4.82 client frames from tests/vectors/pyro4/msgpack/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "decode.h"
#include "value.h"

/* ---- helpers -------------------------------------------------------------------------- */

typedef struct {
    value_limits_t limits;
    value_arena_t arena;
    value_t *v;
    const char *reason;
    char tree[8192];
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    value_limits_default(&f->limits);
    value_arena_init(&f->arena, &f->limits);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    value_arena_cleanup(&f->arena);
    free(f);
    return 0;
}

/* decode runs decode_msgpack on a fresh arena with |f->limits|. */
static int decode(fx_t *f, const uint8_t *data, size_t len)
{
    value_arena_cleanup(&f->arena);
    value_arena_init(&f->arena, &f->limits);
    f->v = NULL;
    f->reason = NULL;
    int ok = decode_msgpack(data, len, &f->arena, &f->v, &f->reason);
    if (ok) {
        assert_non_null(f->v);
    } else {
        assert_non_null(f->reason);
        assert_null(f->v);
    }
    return ok;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    fail_msg("bad hex digit '%c'", c);
    return 0;
}

/* unhex decodes |hex| (spaces allowed) into a malloc'ed buffer. */
static uint8_t *unhex(const char *hex, size_t *out_len)
{
    uint8_t *b = malloc(strlen(hex) / 2 + 1);
    size_t n = 0;
    assert_non_null(b);
    for (const char *p = hex; *p != '\0';) {
        if (*p == ' ') {
            p++;
            continue;
        }
        assert_true(p[1] != '\0');
        b[n++] = (uint8_t)(hexval(p[0]) << 4 | hexval(p[1]));
        p += 2;
    }
    *out_len = n;
    return b;
}

static int decode_hex(fx_t *f, const char *hex)
{
    size_t len;
    uint8_t *b = unhex(hex, &len);
    int ok = decode(f, b, len);
    free(b);
    return ok;
}

typedef struct {
    char *p;
    size_t left;
} out_t;

static void emit(out_t *o, const char *s)
{
    size_t n = strlen(s);
    assert_true(n < o->left);
    memcpy(o->p, s, n + 1);
    o->p += n;
    o->left -= n;
}

static void emit_string(out_t *o, const char *prefix, const value_t *v)
{
    emit(o, prefix);
    emit(o, "'");
    for (size_t i = 0; i < v->u.str.len; i++) {
        uint8_t c = v->u.str.data[i];
        char s[8];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'')
            snprintf(s, sizeof(s), "%c", c);
        else
            snprintf(s, sizeof(s), "\\x%02x", c);
        emit(o, s);
    }
    emit(o, "'");
}

static void tree_to(out_t *o, const value_t *v)
{
    switch (v->type) {
    case VAL_NONE:
        emit(o, "None");
        return;
    case VAL_BOOL:
        emit(o, v->u.boolean ? "True" : "False");
        return;
    case VAL_INT:
        emit(o, "int");
        return;
    case VAL_FLOAT:
        emit(o, "float");
        return;
    case VAL_STR:
        emit_string(o, "s", v);
        return;
    case VAL_BYTES:
        emit_string(o, "b", v);
        return;
    case VAL_TUPLE:
    case VAL_LIST:
        emit(o, v->type == VAL_TUPLE ? "(" : "[");
        for (size_t i = 0; i < v->u.seq.n; i++) {
            if (i > 0)
                emit(o, ",");
            tree_to(o, v->u.seq.items[i]);
        }
        emit(o, v->type == VAL_TUPLE ? ")" : "]");
        return;
    case VAL_DICT:
        emit(o, "d{");
        for (size_t i = 0; i < v->u.dict.n; i++) {
            if (i > 0)
                emit(o, ",");
            tree_to(o, v->u.dict.keys[i]);
            emit(o, ":");
            tree_to(o, v->u.dict.values[i]);
        }
        emit(o, "}");
        return;
    case VAL_OTHER:
        emit(o, "?");
        return;
    default:
        fail_msg("msgpack never produces %s", value_type_name(v->type));
    }
}

/* tree renders the last decoded value. */
static const char *tree(fx_t *f)
{
    out_t o = {f->tree, sizeof(f->tree)};
    f->tree[0] = '\0';
    tree_to(&o, f->v);
    return f->tree;
}

#define assert_decodes_to(state, hex, want)                                                        \
    do {                                                                                           \
        fx_t *f_ = (state);                                                                        \
        if (!decode_hex(f_, (hex)))                                                                \
            fail_msg("%s refused: %s", (hex), f_->reason);                                         \
        assert_string_equal(tree(f_), (want));                                                     \
    } while (0)

#define assert_refused(state, hex, why)                                                            \
    do {                                                                                           \
        fx_t *f_ = (state);                                                                        \
        if (decode_hex(f_, (hex)))                                                                 \
            fail_msg("%s accepted as %s", (hex), tree(f_));                                        \
        assert_string_equal(f_->reason, (why));                                                    \
    } while (0)

/* payload_of returns the msgpack payload of a captured Pyro4 frame tests/vectors/pyro4/|rel|:
 * the bytes after the 24-byte header and the annotations, inflated if the COMPRESSED flag
 * (0x02) is set (PROTOCOL.md §2.1, §2.6). */
static uint8_t *payload_of(const char *rel, size_t *out_len)
{
    char path[512];
    uint8_t frame[1 << 16];
    snprintf(path, sizeof(path), "%s/vectors/pyro4/msgpack/%s", TEST_DATA_DIR, rel);
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        fail_msg("cannot open %s", path);
    size_t n = fread(frame, 1, sizeof(frame), fp);
    fclose(fp);
    assert_true(n >= 24);
    uint16_t flags = (uint16_t)(frame[8] << 8 | frame[9]);
    size_t data_len =
        (size_t)frame[12] << 24 | (size_t)frame[13] << 16 | (size_t)frame[14] << 8 | frame[15];
    size_t ann_len = (size_t)frame[18] << 8 | frame[19];
    assert_int_equal(n, 24 + ann_len + data_len);

    uint8_t *p = malloc(1 << 16);
    assert_non_null(p);
    if (flags & 0x02) {
        uLongf out = 1 << 16;
        assert_int_equal(uncompress(p, &out, frame + 24 + ann_len, data_len), Z_OK);
        *out_len = out;
    } else {
        memcpy(p, frame + 24 + ann_len, data_len);
        *out_len = data_len;
    }
    return p;
}

static int decode_capture(fx_t *f, const char *rel)
{
    size_t len;
    uint8_t *p = payload_of(rel, &len);
    int ok = decode(f, p, len);
    free(p);
    return ok;
}

/* nested builds |levels| x |open| (hex of a one-element container header) around |inner|. */
static uint8_t *nested(const char *open, size_t levels, const char *inner, size_t *out_len)
{
    size_t open_len, inner_len;
    uint8_t *o = unhex(open, &open_len);
    uint8_t *in = unhex(inner, &inner_len);
    uint8_t *b = malloc(levels * open_len + inner_len);
    assert_non_null(b);
    for (size_t i = 0; i < levels; i++)
        memcpy(b + i * open_len, o, open_len);
    memcpy(b + levels * open_len, in, inner_len);
    *out_len = levels * open_len + inner_len;
    free(o);
    free(in);
    return b;
}

static int decode_nested(fx_t *f, const char *open, size_t levels, const char *inner)
{
    size_t len;
    uint8_t *b = nested(open, levels, inner, &len);
    int ok = decode(f, b, len);
    free(b);
    return ok;
}

/* ---- scalars -------------------------------------------------------------------------- */

static void test_msgpack_nil_is_none(void **state)
{
    assert_decodes_to(*state, "c0", "None");
}

static void test_msgpack_true_and_false_are_bools(void **state)
{
    assert_decodes_to(*state, "c3", "True");
    assert_decodes_to(*state, "c2", "False");
}

static void test_msgpack_positive_and_negative_fixints_are_ints(void **state)
{
    assert_decodes_to(*state, "00", "int");
    assert_decodes_to(*state, "7f", "int");
    assert_decodes_to(*state, "e0", "int");
    assert_decodes_to(*state, "ff", "int");
}

static void test_msgpack_every_sized_int_is_an_int(void **state)
{
    assert_decodes_to(*state, "cc ff", "int");
    assert_decodes_to(*state, "cd ffff", "int");
    assert_decodes_to(*state, "ce ffffffff", "int");
    assert_decodes_to(*state, "cf ffffffffffffffff", "int");
    assert_decodes_to(*state, "d0 80", "int");
    assert_decodes_to(*state, "d1 8000", "int");
    assert_decodes_to(*state, "d2 80000000", "int");
    assert_decodes_to(*state, "d3 8000000000000000", "int");
}

static void test_msgpack_float32_and_float64_are_floats(void **state)
{
    assert_decodes_to(*state, "ca 3fc00000", "float");
    assert_decodes_to(*state, "ca 7fc00000", "float"); /* NaN */
    assert_decodes_to(*state, "cb 3ff8000000000000", "float");
    assert_decodes_to(*state, "cb fff0000000000000", "float"); /* -inf */
}

/* ---- strings and bytes ---------------------------------------------------------------- */

static void test_msgpack_every_str_form_gives_the_same_str(void **state)
{
    assert_decodes_to(*state, "a5 7468696e67", "s'thing'");
    assert_decodes_to(*state, "d9 05 7468696e67", "s'thing'");
    assert_decodes_to(*state, "da 0005 7468696e67", "s'thing'");
    assert_decodes_to(*state, "db 00000005 7468696e67", "s'thing'");
}

static void test_msgpack_empty_str_and_empty_bytes_are_kept(void **state)
{
    assert_decodes_to(*state, "a0", "s''");
    assert_decodes_to(*state, "d9 00", "s''");
    assert_decodes_to(*state, "c4 00", "b''");
    assert_decodes_to(*state, "c6 00000000", "b''");
}

static void test_msgpack_every_bin_form_gives_bytes_not_str(void **state)
{
    /* PROTOCOL.md §9: a bin method name is bytes, which the server rejects (TypeError). */
    assert_decodes_to(*state, "c4 04 6563686f", "b'echo'");
    assert_decodes_to(*state, "c5 0004 6563686f", "b'echo'");
    assert_decodes_to(*state, "c6 00000004 6563686f", "b'echo'");
}

static void test_msgpack_bin_may_hold_any_bytes(void **state)
{
    assert_decodes_to(*state, "c4 04 ff00eda0", "b'\\xff\\x00\\xed\\xa0'");
}

static void test_msgpack_multibyte_utf8_is_kept_byte_for_byte(void **state)
{
    assert_decodes_to(*state, "a2 c3a9", "s'\\xc3\\xa9'");               /* U+00E9 */
    assert_decodes_to(*state, "a3 e4b8ad", "s'\\xe4\\xb8\\xad'");        /* U+4E2D */
    assert_decodes_to(*state, "a3 ed9fbf", "s'\\xed\\x9f\\xbf'");        /* U+D7FF */
    assert_decodes_to(*state, "a3 ee8080", "s'\\xee\\x80\\x80'");        /* U+E000 */
    assert_decodes_to(*state, "a3 efbfbf", "s'\\xef\\xbf\\xbf'");        /* U+FFFF */
    assert_decodes_to(*state, "a4 f0908080", "s'\\xf0\\x90\\x80\\x80'"); /* U+10000 */
    assert_decodes_to(*state, "a4 f48fbfbf", "s'\\xf4\\x8f\\xbf\\xbf'"); /* U+10FFFF */
    assert_decodes_to(*state, "a3 efbbbf", "s'\\xef\\xbb\\xbf'");        /* U+FEFF kept */
    assert_decodes_to(*state, "a4 7375622e", "s'sub.'");                 /* plain dot */
    assert_decodes_to(*state, "a3 efbc8e", "s'\\xef\\xbc\\x8e'");        /* U+FF0E no dot */
}

/* The validator reads long ASCII runs in blocks: a non-ASCII character at any offset of a
 * long string, valid or not, must still be seen. */
static void test_msgpack_non_ascii_is_checked_at_every_offset_of_a_long_str(void **state)
{
    fx_t *f = *state;
    uint8_t b[3 + 100];
    static const uint8_t good[] = {0xe4, 0xb8, 0xad};
    static const uint8_t bad[][3] = {{0xff, 'a', 'a'},  {0xe4, 0xb8, 'a'}, {0xed, 0xa0, 0x80},
                                     {0xc0, 0xae, 'a'}, {0x80, 'a', 'a'},  {0xf4, 0x90, 0x80}};

    b[0] = 0xda;
    b[1] = 0;
    b[2] = 100;
    for (size_t off = 0; off + 3 <= 100; off++) {
        memset(b + 3, 'x', 100);
        memcpy(b + 3 + off, good, 3);
        assert_true(decode(f, b, sizeof(b)));
        assert_int_equal(f->v->u.str.len, 100);
        assert_memory_equal(f->v->u.str.data, b + 3, 100);
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
            memset(b + 3, 'x', 100);
            memcpy(b + 3 + off, bad[k], 3);
            assert_false(decode(f, b, sizeof(b)));
            assert_string_equal(f->reason, "invalid UTF-8");
        }
    }
}

static void test_msgpack_utf8_sequence_cut_by_the_str_end_is_refused(void **state)
{
    /* The continuation bytes follow the str, so they must not complete the character. */
    assert_refused(*state, "92 a1 e4 a2 b8ad", "invalid UTF-8");
    assert_refused(*state, "a2 f09f", "invalid UTF-8");
}

static void test_msgpack_overlong_utf8_is_refused(void **state)
{
    assert_refused(*state, "a2 c0ae", "invalid UTF-8"); /* '.' in 2 bytes, PROTOCOL.md §9 */
    assert_refused(*state, "a2 c1bf", "invalid UTF-8");
    assert_refused(*state, "a3 e080ae", "invalid UTF-8");
    assert_refused(*state, "a3 e09fbf", "invalid UTF-8");
    assert_refused(*state, "a4 f08080ae", "invalid UTF-8");
    assert_refused(*state, "a4 f08fbfbf", "invalid UTF-8");
}

static void test_msgpack_utf8_encoded_surrogates_are_refused(void **state)
{
    /* raw=False decodes strictly: no surrogatepass (unlike marshal). */
    assert_refused(*state, "a3 eda080", "invalid UTF-8");
    assert_refused(*state, "a3 edbfbf", "invalid UTF-8");
    assert_refused(*state, "a6 eda0bdedb880", "invalid UTF-8"); /* CESU-8 pair */
}

static void test_msgpack_code_points_above_10ffff_are_refused(void **state)
{
    assert_refused(*state, "a4 f4908080", "invalid UTF-8");
    assert_refused(*state, "a4 f5808080", "invalid UTF-8");
    assert_refused(*state, "a1 ff", "invalid UTF-8");
}

static void test_msgpack_stray_or_missing_continuation_bytes_are_refused(void **state)
{
    assert_refused(*state, "a1 80", "invalid UTF-8");
    assert_refused(*state, "a2 61bf", "invalid UTF-8");
    assert_refused(*state, "a2 e4b8", "invalid UTF-8");
    assert_refused(*state, "a3 e461ad", "invalid UTF-8");
    assert_refused(*state, "a3 f09f98", "invalid UTF-8");
}

static void test_msgpack_invalid_utf8_in_a_map_key_is_refused(void **state)
{
    assert_refused(*state, "81 a2c0ae c0", "invalid UTF-8");
}

/* ---- containers ----------------------------------------------------------------------- */

static void test_msgpack_every_array_form_gives_a_list(void **state)
{
    assert_decodes_to(*state, "90", "[]");
    assert_decodes_to(*state, "92 01 c0", "[int,None]");
    assert_decodes_to(*state, "dc 0002 01 c0", "[int,None]");
    assert_decodes_to(*state, "dd 00000002 01 c0", "[int,None]");
    assert_decodes_to(*state, "dd 00000000", "[]");
}

static void test_msgpack_every_map_form_gives_a_dict(void **state)
{
    assert_decodes_to(*state, "80", "d{}");
    assert_decodes_to(*state, "81 a161 01", "d{s'a':int}");
    assert_decodes_to(*state, "de 0001 a161 01", "d{s'a':int}");
    assert_decodes_to(*state, "df 00000001 a161 01", "d{s'a':int}");
    assert_decodes_to(*state, "df 00000000", "d{}");
}

static void test_msgpack_nested_containers_keep_their_structure(void **state)
{
    assert_decodes_to(*state, "93 91 90 81 a16b 92 c3 80 a0", "[[[]],d{s'k':[True,d{}]},s'']");
}

static void test_msgpack_map_keeps_duplicate_keys_in_wire_order(void **state)
{
    fx_t *f = *state;
    const value_t *out;
    /* Python keeps the last value; the tree keeps both and value_dict_get sees the ambiguity. */
    assert_decodes_to(f, "83 a66d6574686f64 a3616263 a178 c0 a66d6574686f64 a3646566",
                      "d{s'method':s'abc',s'x':None,s'method':s'def'}");
    assert_int_equal(value_dict_get(f->v, "method", &out), -1);
}

static void test_msgpack_bytes_are_allowed_as_map_keys(void **state)
{
    /* strict_map_key=True allows str and bytes; a bytes key is not the str key. */
    fx_t *f = *state;
    const value_t *out;
    assert_decodes_to(f, "82 c406 6f626a656374 01 a6 6f626a656374 02",
                      "d{b'object':int,s'object':int}");
    assert_int_equal(value_dict_get(f->v, "object", &out), 1);
}

static void test_msgpack_map_keys_other_than_str_or_bytes_are_refused(void **state)
{
    static const char *const keys[] = {
        "c0", "c3", "01", "ca00000000", "90", "80", "d4 00 00", "c7 00 01", "d6ff00000001",
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char hex[64];
        snprintf(hex, sizeof(hex), "81 %s c0", keys[i]);
        assert_refused(*state, hex, "map key not str or bytes");
    }
}

/* ---- ext types ------------------------------------------------------------------------ */

static void test_msgpack_every_ext_form_gives_a_code_and_bytes_tuple(void **state)
{
    /* The default ext_hook is msgpack.ExtType, a namedtuple: the daemon sees a 2-tuple. */
    assert_decodes_to(*state, "d4 05 61", "(int,b'a')");
    assert_decodes_to(*state, "d5 05 6162", "(int,b'ab')");
    assert_decodes_to(*state, "d6 05 61626364", "(int,b'abcd')");
    assert_decodes_to(*state, "d7 05 6162636465666768", "(int,b'abcdefgh')");
    assert_decodes_to(*state, "d8 05 6162636465666768696a6b6c6d6e6f70",
                      "(int,b'abcdefghijklmnop')");
    assert_decodes_to(*state, "c7 03 05 616263", "(int,b'abc')");
    assert_decodes_to(*state, "c8 0003 05 616263", "(int,b'abc')");
    assert_decodes_to(*state, "c9 00000003 05 616263", "(int,b'abc')");
    assert_decodes_to(*state, "c7 00 05", "(int,b'')");
}

static void test_msgpack_ext_codes_0_to_127_are_accepted(void **state)
{
    assert_decodes_to(*state, "d4 00 00", "(int,b'\\x00')");
    assert_decodes_to(*state, "d4 7f 00", "(int,b'\\x00')");
}

static void test_msgpack_pyro_ext_values_of_honest_clients_are_accepted(void **state)
{
    /* Pyro4's MsgpackSerializer.default: complex 0x30, big int 0x31, datetime 0x32, date
     * 0x33; the daemon's loadsCall has no ext_hook, so they arrive as ExtType tuples. */
    assert_decodes_to(*state, "d8 30 000000000000f03f0000000000000040",
                      "(int,b'\\x00\\x00\\x00\\x00\\x00\\x00\\xf0?\\x00\\x00\\x00\\x00\\x00\\x00"
                      "\\x00@')");
    assert_decodes_to(*state, "c7 16 31 31313830353931363230373137343131333033343234",
                      "(int,b'1180591620717411303424')");
    assert_decodes_to(*state, "d7 32 000040695783d741", "(int,b'\\x00\\x00@iW\\x83\\xd7A')");
    assert_decodes_to(*state, "d7 33 92400b0000000000",
                      "(int,b'\\x92@\\x0b\\x00\\x00\\x00\\x00\\x00')");
}

static void test_msgpack_negative_ext_codes_other_than_timestamp_are_refused(void **state)
{
    /* ExtType(code, data) raises ValueError unless 0 <= code <= 127. */
    assert_refused(*state, "d4 fe 00", "invalid ext type code");
    assert_refused(*state, "d4 80 00", "invalid ext type code");
    assert_refused(*state, "c7 00 81", "invalid ext type code");
}

static void test_msgpack_timestamps_of_4_8_and_12_bytes_are_opaque_values(void **state)
{
    assert_decodes_to(*state, "d6 ff 00000005", "?");
    assert_decodes_to(*state, "d7 ff 0000000000000001", "?");
    assert_decodes_to(*state, "c7 0c ff 00000000 0000000000000001", "?");
    assert_decodes_to(*state, "c7 04 ff 00000005", "?");
    assert_decodes_to(*state, "c8 0008 ff 0000000000000001", "?");
}

static void test_msgpack_timestamp_with_999999999_nanoseconds_is_accepted(void **state)
{
    assert_decodes_to(*state, "d7 ff ee6b27fc 00000001", "?");
    assert_decodes_to(*state, "c7 0c ff 3b9ac9ff 8000000000000000", "?");
}

static void test_msgpack_timestamp_with_a_billion_nanoseconds_is_refused(void **state)
{
    /* Timestamp() raises ValueError for nanoseconds >= 10**9. */
    assert_refused(*state, "d7 ff ee6b2800 00000000", "invalid timestamp");
    assert_refused(*state, "d7 ff ffffffff ffffffff", "invalid timestamp");
    assert_refused(*state, "c7 0c ff 3b9aca00 0000000000000000", "invalid timestamp");
    assert_refused(*state, "c7 0c ff ffffffff 0000000000000000", "invalid timestamp");
}

static void test_msgpack_timestamps_of_other_lengths_are_refused(void **state)
{
    assert_refused(*state, "d4 ff 00", "invalid timestamp");
    assert_refused(*state, "d5 ff 0000", "invalid timestamp");
    assert_refused(*state, "d8 ff 00000000000000000000000000000000", "invalid timestamp");
    assert_refused(*state, "c7 00 ff", "invalid timestamp");
    assert_refused(*state, "c7 05 ff 0000000000", "invalid timestamp");
}

/* ---- malformed input ------------------------------------------------------------------ */

static void test_msgpack_empty_input_is_refused(void **state)
{
    assert_false(decode(*state, (const uint8_t *)"", 0));
    assert_string_equal(((fx_t *)*state)->reason, "truncated");
}

static void test_msgpack_type_byte_c1_is_refused(void **state)
{
    assert_refused(*state, "c1", "reserved type byte 0xc1");
    assert_refused(*state, "91 c1", "reserved type byte 0xc1");
}

static void test_msgpack_trailing_bytes_after_the_value_are_refused(void **state)
{
    /* unpackb raises ExtraData: a second call tuple cannot ride behind the first. */
    assert_refused(*state, "c0 c0", "trailing bytes");
    assert_refused(*state, "94 a1 74 a1 6d 90 80 94 a1 74 a1 6d 90 80", "trailing bytes");
    assert_refused(*state, "90 00", "trailing bytes");
}

static void test_msgpack_every_truncation_of_a_valid_value_is_refused(void **state)
{
    fx_t *f = *state;
    size_t len;
    /* one of every form */
    uint8_t *b = unhex("dc 0017 c0 c3 7f e0 cc01 cd0001 ce00000001 cf0000000000000001 d0ff d1ffff "
                       "d2ffffffff d3ffffffffffffffff ca3f800000 cb3ff0000000000000 "
                       "81 a161 c40161 de0001 d90161 c5000161 df00000001 da000161 db0000000161 "
                       "dd00000001 c600000001 61 d40161 c7016161 c800016161 c9000000016161 "
                       "d6ff00000001",
                       &len);
    assert_true(decode(f, b, len));
    for (size_t cut = 0; cut < len; cut++) {
        if (decode(f, b, cut))
            fail_msg("prefix of %zu bytes accepted as %s", cut, tree(f));
    }
    free(b);
}

static void test_msgpack_declared_lengths_beyond_the_input_are_refused(void **state)
{
    assert_refused(*state, "db ffffffff 61", "truncated");
    assert_refused(*state, "a2 61", "truncated");
    assert_refused(*state, "c6 ffffffff 61", "truncated");
    assert_refused(*state, "c9 ffffffff 01 61", "truncated");
    assert_refused(*state, "c7 02 01 61", "truncated");
    assert_refused(*state, "dd ffffffff c0", "array count exceeds input");
    assert_refused(*state, "92 c0", "array count exceeds input");
    assert_refused(*state, "df ffffffff a0 c0", "map count exceeds input");
    assert_refused(*state, "82 a0 c0", "map count exceeds input");
}

/* ---- limits --------------------------------------------------------------------------- */

static void test_msgpack_nesting_up_to_max_depth_is_accepted_and_one_deeper_refused(void **state)
{
    fx_t *f = *state;
    f->limits.max_depth = 8;
    assert_true(decode_nested(f, "91", 8, "c0"));
    assert_false(decode_nested(f, "91", 9, "c0"));
    assert_string_equal(f->reason, "nesting too deep");
    assert_false(decode_nested(f, "91", 8, "90"));
    assert_string_equal(f->reason, "nesting too deep");
}

static void test_msgpack_maps_count_toward_max_depth(void **state)
{
    fx_t *f = *state;
    f->limits.max_depth = 8;
    assert_true(decode_nested(f, "81a0", 8, "c0"));
    assert_false(decode_nested(f, "81a0", 9, "c0"));
    assert_string_equal(f->reason, "nesting too deep");
}

static void test_msgpack_ext_tuple_counts_as_a_nesting_level(void **state)
{
    fx_t *f = *state;
    f->limits.max_depth = 8;
    assert_true(decode_nested(f, "91", 7, "d40061"));
    assert_false(decode_nested(f, "91", 8, "d40061"));
    assert_string_equal(f->reason, "nesting too deep");
    /* a Timestamp is not a container */
    assert_true(decode_nested(f, "91", 8, "d6ff00000001"));
}

static void test_msgpack_default_depth_limit_is_32(void **state)
{
    fx_t *f = *state;
    assert_true(decode_nested(f, "91", 32, "c0"));
    assert_false(decode_nested(f, "91", 33, "c0"));
    assert_string_equal(f->reason, "nesting too deep");
}

static void test_msgpack_nesting_beyond_pythons_1024_is_refused_whatever_max_depth(void **state)
{
    /* msgpack-python raises StackError past 1024 nested arrays/maps (ext is no container). */
    fx_t *f = *state;
    f->limits.max_depth = 5000;
    assert_true(decode_nested(f, "91", 1024, "c0"));
    assert_true(decode_nested(f, "91", 1023, "90"));
    assert_true(decode_nested(f, "91", 1024, "d40061"));
    assert_false(decode_nested(f, "91", 1024, "90"));
    assert_string_equal(f->reason, "nesting too deep");
    assert_false(decode_nested(f, "81a0", 1025, "c0"));
    assert_string_equal(f->reason, "nesting too deep");
}

static void test_msgpack_value_limit_is_enforced(void **state)
{
    fx_t *f = *state;
    f->limits.max_values = 4;
    assert_decodes_to(f, "93 c0 c0 c0", "[None,None,None]");
    assert_refused(f, "94 c0 c0 c0 c0", "too many values");
    assert_refused(f, "81 a0 92 c0 c0", "too many values");
    assert_refused(f, "92 c0 d4 00 00", "too many values"); /* an ext is 3 values */
}

static void test_msgpack_huge_declared_count_is_refused_before_allocating(void **state)
{
    fx_t *f = *state;
    size_t n = 1u << 20;
    uint8_t *b = malloc(5 + n);
    assert_non_null(b);
    b[0] = 0xdd;
    b[1] = 0x00;
    b[2] = 0x10;
    b[3] = 0x00;
    b[4] = 0x00;
    memset(b + 5, 0xc0, n);
    f->limits.max_values = 1000;
    assert_false(decode(f, b, 5 + n));
    assert_string_equal(f->reason, "too many values");
    assert_int_equal(f->arena.values, 0);
    assert_null(f->arena.chunks);
    b[0] = 0xdf;
    b[2] = 0x08;
    assert_false(decode(f, b, 5 + n));
    assert_string_equal(f->reason, "too many values");
    assert_null(f->arena.chunks);
    free(b);
}

static void test_msgpack_string_byte_limit_is_enforced(void **state)
{
    fx_t *f = *state;
    f->limits.max_string_bytes = 6;
    assert_decodes_to(f, "92 a3616263 c403646566", "[s'abc',b'def']");
    assert_refused(f, "92 a3616263 c404646566 67", "too many string bytes");
    assert_refused(f, "a7 61626364656667", "too many string bytes");
    assert_refused(f, "92 a3616263 d6 00 64656667", "too many string bytes");
}

static void test_msgpack_long_str_is_accepted_up_to_the_string_limit(void **state)
{
    fx_t *f = *state;
    size_t n = 1u << 20;
    uint8_t *b = malloc(5 + n);
    assert_non_null(b);
    b[0] = 0xdb;
    b[1] = 0x00;
    b[2] = 0x10;
    b[3] = 0x00;
    b[4] = 0x00;
    for (size_t i = 0; i < n; i += 4)
        memcpy(b + 5 + i, i % 64 == 0 ? "\xf0\x9f\x98\x80" : "abcd", 4);
    assert_true(decode(f, b, 5 + n));
    assert_int_equal(f->v->type, VAL_STR);
    assert_int_equal(f->v->u.str.len, n);
    assert_memory_equal(f->v->u.str.data, b + 5, n);
    f->limits.max_string_bytes = n - 1;
    assert_false(decode(f, b, 5 + n));
    assert_string_equal(f->reason, "too many string bytes");
    free(b);
}

/* ---- real captures -------------------------------------------------------------------- */

static void test_msgpack_captured_echo_invoke_is_the_call_tuple(void **state)
{
    fx_t *f = *state;
    assert_true(decode_capture(f, "echo/01_c2s_INVOKE.bin"));
    assert_string_equal(tree(f), "[s'thing',s'echo',[s'hello'],d{}]");
}

static void test_msgpack_captured_batch_invoke_lists_every_call(void **state)
{
    fx_t *f = *state;
    assert_true(decode_capture(f, "batch/01_c2s_INVOKE.bin"));
    assert_string_equal(tree(f),
                        "[s'thing',s'<batch>',[[s'echo',[int],d{}],[s'echo',[s'two'],d{}]],"
                        "None]");
}

static void test_msgpack_captured_getattr_and_setattr_name_the_attribute(void **state)
{
    fx_t *f = *state;
    assert_true(decode_capture(f, "getattr/01_c2s_INVOKE.bin"));
    assert_string_equal(tree(f), "[s'thing',s'__getattr__',[s'value'],None]");
    assert_true(decode_capture(f, "setattr/01_c2s_INVOKE.bin"));
    assert_string_equal(tree(f), "[s'thing',s'__setattr__',[s'value',int],None]");
}

static void test_msgpack_captured_dotted_name_is_decoded_as_sent(void **state)
{
    fx_t *f = *state;
    assert_true(decode_capture(f, "dotted/01_c2s_INVOKE.bin"));
    assert_string_equal(tree(f), "[s'thing',s'sub.echo',[s'x'],d{}]");
    assert_true(decode_capture(f, "dotted_client_attr/01_c2s_INVOKE.bin"));
    assert_string_equal(tree(f), "[s'thing',s'sub.echo',[s'y'],d{}]");
}

static void test_msgpack_captured_compressed_invoke_decodes_after_inflating(void **state)
{
    fx_t *f = *state;
    assert_true(decode_capture(f, "compressed/01_c2s_INVOKE.bin"));
    assert_int_equal(f->v->type, VAL_LIST);
    assert_int_equal(f->v->u.seq.n, 4);
    const value_t *vargs = f->v->u.seq.items[2];
    assert_int_equal(vargs->type, VAL_LIST);
    assert_int_equal(vargs->u.seq.n, 1);
    assert_int_equal(vargs->u.seq.items[0]->type, VAL_STR);
    assert_int_equal(vargs->u.seq.items[0]->u.str.len, 1000);
}

static void test_msgpack_captured_connect_is_the_handshake_dict(void **state)
{
    fx_t *f = *state;
    assert_true(decode_capture(f, "echo/00_c2s_CONNECT.bin"));
    assert_string_equal(tree(f), "d{s'handshake':s'hello',s'object':s'thing'}");
    assert_true(decode_capture(f, "no_metadata/00_c2s_CONNECT.bin"));
    assert_string_equal(tree(f), "d{s'handshake':s'hello'}");
}

static void test_msgpack_every_captured_client_payload_decodes(void **state)
{
    static const char *const captures[] = {
        "batch/00_c2s_CONNECT.bin",
        "batch/01_c2s_INVOKE.bin",
        "blob/00_c2s_CONNECT.bin",
        "blob/01_c2s_INVOKE.bin",
        "compressed/00_c2s_CONNECT.bin",
        "compressed/01_c2s_INVOKE.bin",
        "daemon_object/00_c2s_CONNECT.bin",
        "daemon_object/01_c2s_INVOKE.bin",
        "daemon_object/02_c2s_INVOKE.bin",
        "daemon_object/03_c2s_INVOKE.bin",
        "dotted/00_c2s_CONNECT.bin",
        "dotted/01_c2s_INVOKE.bin",
        "dotted_client_attr/00_c2s_CONNECT.bin",
        "dotted_client_attr/01_c2s_INVOKE.bin",
        "echo/00_c2s_CONNECT.bin",
        "echo/01_c2s_INVOKE.bin",
        "getattr/00_c2s_CONNECT.bin",
        "getattr/01_c2s_INVOKE.bin",
        "no_metadata/00_c2s_CONNECT.bin",
        "no_metadata/01_c2s_INVOKE.bin",
        "oneway/00_c2s_CONNECT.bin",
        "oneway/01_c2s_INVOKE.bin",
        "ping/00_c2s_CONNECT.bin",
        "private/00_c2s_CONNECT.bin",
        "private/01_c2s_INVOKE.bin",
        "setattr/00_c2s_CONNECT.bin",
        "setattr/01_c2s_INVOKE.bin",
        "stream/00_c2s_CONNECT.bin",
        "stream/01_c2s_INVOKE.bin",
        "stream/02_c2s_INVOKE.bin",
        "stream/03_c2s_INVOKE.bin",
        "stream/04_c2s_INVOKE.bin",
        "stream_full/00_c2s_CONNECT.bin",
        "stream_full/01_c2s_INVOKE.bin",
        "stream_full/02_c2s_INVOKE.bin",
        "stream_full/03_c2s_INVOKE.bin",
        "stream_full/04_c2s_INVOKE.bin",
    };
    fx_t *f = *state;
    for (size_t i = 0; i < sizeof(captures) / sizeof(captures[0]); i++) {
        if (!decode_capture(f, captures[i]))
            fail_msg("%s refused: %s", captures[i], f->reason);
        if (strstr(captures[i], "INVOKE") != NULL) {
            assert_int_equal(f->v->type, VAL_LIST);
            assert_int_equal(f->v->u.seq.n, 4);
            assert_int_equal(f->v->u.seq.items[1]->type, VAL_STR);
        } else {
            assert_int_equal(f->v->type, VAL_DICT);
        }
    }
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_msgpack_nil_is_none),
        T(test_msgpack_true_and_false_are_bools),
        T(test_msgpack_positive_and_negative_fixints_are_ints),
        T(test_msgpack_every_sized_int_is_an_int),
        T(test_msgpack_float32_and_float64_are_floats),
        T(test_msgpack_every_str_form_gives_the_same_str),
        T(test_msgpack_empty_str_and_empty_bytes_are_kept),
        T(test_msgpack_every_bin_form_gives_bytes_not_str),
        T(test_msgpack_bin_may_hold_any_bytes),
        T(test_msgpack_multibyte_utf8_is_kept_byte_for_byte),
        T(test_msgpack_non_ascii_is_checked_at_every_offset_of_a_long_str),
        T(test_msgpack_utf8_sequence_cut_by_the_str_end_is_refused),
        T(test_msgpack_overlong_utf8_is_refused),
        T(test_msgpack_utf8_encoded_surrogates_are_refused),
        T(test_msgpack_code_points_above_10ffff_are_refused),
        T(test_msgpack_stray_or_missing_continuation_bytes_are_refused),
        T(test_msgpack_invalid_utf8_in_a_map_key_is_refused),
        T(test_msgpack_every_array_form_gives_a_list),
        T(test_msgpack_every_map_form_gives_a_dict),
        T(test_msgpack_nested_containers_keep_their_structure),
        T(test_msgpack_map_keeps_duplicate_keys_in_wire_order),
        T(test_msgpack_bytes_are_allowed_as_map_keys),
        T(test_msgpack_map_keys_other_than_str_or_bytes_are_refused),
        T(test_msgpack_every_ext_form_gives_a_code_and_bytes_tuple),
        T(test_msgpack_ext_codes_0_to_127_are_accepted),
        T(test_msgpack_pyro_ext_values_of_honest_clients_are_accepted),
        T(test_msgpack_negative_ext_codes_other_than_timestamp_are_refused),
        T(test_msgpack_timestamps_of_4_8_and_12_bytes_are_opaque_values),
        T(test_msgpack_timestamp_with_999999999_nanoseconds_is_accepted),
        T(test_msgpack_timestamp_with_a_billion_nanoseconds_is_refused),
        T(test_msgpack_timestamps_of_other_lengths_are_refused),
        T(test_msgpack_empty_input_is_refused),
        T(test_msgpack_type_byte_c1_is_refused),
        T(test_msgpack_trailing_bytes_after_the_value_are_refused),
        T(test_msgpack_every_truncation_of_a_valid_value_is_refused),
        T(test_msgpack_declared_lengths_beyond_the_input_are_refused),
        T(test_msgpack_nesting_up_to_max_depth_is_accepted_and_one_deeper_refused),
        T(test_msgpack_maps_count_toward_max_depth),
        T(test_msgpack_ext_tuple_counts_as_a_nesting_level),
        T(test_msgpack_default_depth_limit_is_32),
        T(test_msgpack_nesting_beyond_pythons_1024_is_refused_whatever_max_depth),
        T(test_msgpack_value_limit_is_enforced),
        T(test_msgpack_huge_declared_count_is_refused_before_allocating),
        T(test_msgpack_string_byte_limit_is_enforced),
        T(test_msgpack_long_str_is_accepted_up_to_the_string_limit),
        T(test_msgpack_captured_echo_invoke_is_the_call_tuple),
        T(test_msgpack_captured_batch_invoke_lists_every_call),
        T(test_msgpack_captured_getattr_and_setattr_name_the_attribute),
        T(test_msgpack_captured_dotted_name_is_decoded_as_sent),
        T(test_msgpack_captured_compressed_invoke_decodes_after_inflating),
        T(test_msgpack_captured_connect_is_the_handshake_dict),
        T(test_msgpack_every_captured_client_payload_decodes),
    };
    return cmocka_run_group_tests_name("msgpack", tests, NULL, NULL);
}
