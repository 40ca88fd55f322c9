/* Unit tests for proxy/marshal.c: the Pyro4 marshal payload decoder, which must build exactly what
 * CPython 3.11 marshal.loads builds or refuse (PROTOCOL.md §5.3, §9).
 *
 * The positive cases start from real captures of Pyro4 4.82 traffic (tests/vectors/pyro4/marshal/,
 * payload = frame bytes after the 24-byte header and the annotation block). The others are built
 * byte by byte from CPython's Python/marshal.c; what CPython does with each input was checked
 * with /usr/bin/python3 -c 'import marshal; marshal.loads(...)' and is stated in the comments. */
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
    value_arena_t arena;
    value_t *v;
    const char *reason;
    int ok;
} result_t;

static void decode_limits(result_t *r, const void *data, size_t len, const value_limits_t *limits)
{
    value_arena_init(&r->arena, limits);
    r->v = NULL;
    r->reason = NULL;
    r->ok = decode_marshal(data, len, &r->arena, &r->v, &r->reason);
    if (r->ok)
        assert_non_null(r->v);
    else
        assert_non_null(r->reason);
}

static void decode(result_t *r, const void *data, size_t len)
{
    decode_limits(r, data, len, NULL);
}

/* DECODE decodes a string literal of marshal bytes (without its terminating NUL). */
#define DECODE(r, lit) decode((r), (lit), sizeof(lit) - 1)

static void done(result_t *r)
{
    value_arena_cleanup(&r->arena);
}

static void assert_refused(const void *data, size_t len, const char *reason)
{
    result_t r;
    decode(&r, data, len);
    assert_false(r.ok);
    assert_string_equal(r.reason, reason);
    done(&r);
}

#define REFUSED(lit, reason) assert_refused((lit), sizeof(lit) - 1, (reason))

static void assert_accepted_type(const void *data, size_t len, value_type_t type)
{
    result_t r;
    decode(&r, data, len);
    if (!r.ok)
        fail_msg("refused: %s", r.reason);
    assert_int_equal(r.v->type, type);
    done(&r);
}

#define ACCEPTED(lit, type) assert_accepted_type((lit), sizeof(lit) - 1, (type))

static void assert_str_bytes(const value_t *v, const char *bytes, size_t n)
{
    assert_non_null(v);
    assert_int_equal(v->type, VAL_STR);
    assert_int_equal(v->u.str.len, n);
    assert_memory_equal(v->u.str.data, bytes, n);
}

#define ASSERT_STR(v, lit) assert_str_bytes((v), (lit), sizeof(lit) - 1)

typedef struct {
    uint8_t *data;
    size_t len;
} blob_t;

/* read_payload loads tests/vectors/pyro4/marshal/|rel| and returns its payload (inflated when the
 * frame is COMPRESSED, PROTOCOL.md §2.6), or its BLBI annotation value when |blbi| is set. */
static blob_t read_payload(const char *rel, int blbi)
{
    char path[512];
    uint8_t raw[1 << 16];
    blob_t b = {NULL, 0};
    snprintf(path, sizeof(path), "%s/vectors/pyro4/marshal/%s", TEST_DATA_DIR, rel);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    size_t n = fread(raw, 1, sizeof(raw), f);
    fclose(f);
    assert_true(n >= 24);
    size_t flags = (size_t)raw[8] << 8 | raw[9];
    size_t ann_len = (size_t)raw[18] << 8 | raw[19];
    assert_true(n >= 24 + ann_len);
    if (blbi) {
        assert_true(ann_len >= 6);
        assert_memory_equal(raw + 24, "BLBI", 4);
        b.len = (size_t)raw[28] << 8 | raw[29];
        b.data = malloc(b.len ? b.len : 1);
        memcpy(b.data, raw + 30, b.len);
        return b;
    }
    const uint8_t *payload = raw + 24 + ann_len;
    size_t payload_len = n - 24 - ann_len;
    if (flags & 0x02) {
        uLongf out_len = 1 << 20;
        b.data = malloc(out_len);
        assert_int_equal(uncompress(b.data, &out_len, payload, payload_len), Z_OK);
        b.len = out_len;
        return b;
    }
    b.data = malloc(payload_len ? payload_len : 1);
    memcpy(b.data, payload, payload_len);
    b.len = payload_len;
    return b;
}

/* nest writes |depth| one-element lists around None into |buf|; returns the length. */
static size_t nest(uint8_t *buf, size_t depth, uint8_t innermost)
{
    size_t n = 0;
    for (size_t i = 0; i < depth; i++) {
        memcpy(buf + n, "[\x01\x00\x00\x00", 5);
        n += 5;
    }
    buf[n++] = innermost;
    return n;
}

/* ---- captured payloads ---------------------------------------------------------------- */

static void test_captured_echo_invoke_is_the_call_tuple(void **state)
{
    (void)state;
    blob_t b = read_payload("echo/01_c2s_INVOKE.bin", 0);
    result_t r;
    decode(&r, b.data, b.len);
    assert_true(r.ok);
    assert_int_equal(r.v->type, VAL_TUPLE);
    assert_int_equal(r.v->u.seq.n, 4);
    value_t **it = r.v->u.seq.items;
    ASSERT_STR(it[0], "thing");
    ASSERT_STR(it[1], "echo");
    assert_int_equal(it[2]->type, VAL_LIST);
    assert_int_equal(it[2]->u.seq.n, 1);
    ASSERT_STR(it[2]->u.seq.items[0], "hello");
    assert_int_equal(it[3]->type, VAL_DICT);
    assert_int_equal(it[3]->u.dict.n, 0);
    done(&r);
    free(b.data);
}

static void test_captured_connect_is_the_handshake_dict(void **state)
{
    (void)state;
    blob_t b = read_payload("echo/00_c2s_CONNECT.bin", 0);
    result_t r;
    const value_t *hs, *obj;
    decode(&r, b.data, b.len);
    assert_true(r.ok);
    assert_int_equal(r.v->type, VAL_DICT);
    assert_int_equal(value_dict_get(r.v, "handshake", &hs), 1);
    ASSERT_STR(hs, "hello");
    assert_int_equal(value_dict_get(r.v, "object", &obj), 1);
    ASSERT_STR(obj, "thing");
    done(&r);
    free(b.data);
}

static void test_captured_blob_annotation_is_info_object_and_method(void **state)
{
    (void)state;
    blob_t b = read_payload("blob/01_c2s_INVOKE.bin", 1);
    result_t r;
    decode(&r, b.data, b.len);
    assert_true(r.ok);
    assert_int_equal(r.v->type, VAL_TUPLE);
    assert_int_equal(r.v->u.seq.n, 3);
    ASSERT_STR(r.v->u.seq.items[0], "blobinfo");
    ASSERT_STR(r.v->u.seq.items[1], "thing");
    ASSERT_STR(r.v->u.seq.items[2], "blob");
    done(&r);
    free(b.data);
}

static void test_captured_compressed_invoke_decodes_after_inflating(void **state)
{
    (void)state;
    blob_t b = read_payload("compressed/01_c2s_INVOKE.bin", 0);
    result_t r;
    decode(&r, b.data, b.len);
    assert_true(r.ok);
    const value_t *arg = r.v->u.seq.items[2]->u.seq.items[0];
    assert_int_equal(arg->type, VAL_STR);
    assert_int_equal(arg->u.str.len, 1000); /* p.echo("A"*1000) */
    done(&r);
    free(b.data);
}

static void test_every_captured_marshal_payload_is_accepted(void **state)
{
    (void)state;
    static const char *const files[] = {
        "batch/00_c2s_CONNECT.bin",
        "blob/01_c2s_INVOKE.bin",
        "compressed/01_c2s_INVOKE.bin",
        "daemon_object/01_c2s_INVOKE.bin",
        "daemon_object/02_c2s_INVOKE.bin",
        "daemon_object/03_c2s_INVOKE.bin",
        "dotted/01_c2s_INVOKE.bin",
        "dotted_client_attr/00_c2s_CONNECT.bin",
        "dotted_client_attr/01_c2s_INVOKE.bin",
        "no_metadata/01_c2s_INVOKE.bin",
        "oneway/01_c2s_INVOKE.bin",
        "private/01_c2s_INVOKE.bin",
        "stream/01_c2s_INVOKE.bin",
        "stream/02_c2s_INVOKE.bin",
        "stream/04_c2s_INVOKE.bin",
        "stream_full/04_c2s_INVOKE.bin",
        "daemon_object/00_s2c_CONNECTOK.bin",
        "daemon_object/02_s2c_RESULT.bin",
        "dotted/01_s2c_RESULT.bin",
        "stream/01_s2c_RESULT.bin",
        "stream_full/04_s2c_RESULT.bin",
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        blob_t b = read_payload(files[i], 0);
        result_t r;
        decode(&r, b.data, b.len);
        if (!r.ok)
            fail_msg("%s refused: %s", files[i], r.reason);
        done(&r);
        free(b.data);
    }
}

static void test_captured_dotted_method_name_is_decoded_literally(void **state)
{
    (void)state;
    blob_t b = read_payload("dotted/01_c2s_INVOKE.bin", 0);
    result_t r;
    decode(&r, b.data, b.len);
    assert_true(r.ok);
    ASSERT_STR(r.v->u.seq.items[1], "sub.echo");
    done(&r);
    free(b.data);
}

static void test_captured_invoke_cut_short_anywhere_is_refused(void **state)
{
    (void)state;
    blob_t b = read_payload("echo/01_c2s_INVOKE.bin", 0);
    for (size_t n = 0; n < b.len; n++) {
        result_t r;
        decode(&r, b.data, n);
        assert_false(r.ok);
        done(&r);
    }
    free(b.data);
}

/* ---- singletons and numbers ----------------------------------------------------------- */

static void test_singletons_decode_to_their_types(void **state)
{
    (void)state;
    result_t r;
    ACCEPTED("N", VAL_NONE);
    ACCEPTED(".", VAL_ELLIPSIS);
    ACCEPTED("S", VAL_OTHER); /* the StopIteration class */
    DECODE(&r, "T");
    assert_true(r.ok);
    assert_int_equal(r.v->type, VAL_BOOL);
    assert_int_equal(r.v->u.boolean, 1);
    done(&r);
    DECODE(&r, "F");
    assert_true(r.ok);
    assert_int_equal(r.v->u.boolean, 0);
    done(&r);
}

static void test_flag_ref_on_a_singleton_is_ignored(void **state)
{
    (void)state;
    ACCEPTED("\xce", VAL_NONE);
    ACCEPTED("\xd4", VAL_BOOL);
    /* CPython gives None/True/False/.../S no reference index even when flagged. */
    REFUSED("(\x02\x00\x00\x00\xcer\x00\x00\x00\x00", "invalid reference");
    REFUSED("(\x02\x00\x00\x00\xd3r\x00\x00\x00\x00", "invalid reference");
}

static void test_flag_ref_on_a_ref_takes_no_index(void **state)
{
    (void)state;
    /* (5, ref 0 flagged, ref 1): CPython says "invalid reference" for the third. */
    REFUSED("(\x03\x00\x00\x00\xe9\x05\x00\x00\x00\xf2\x00\x00\x00\x00r\x01\x00\x00\x00",
            "invalid reference");
    ACCEPTED("(\x03\x00\x00\x00\xe9\x05\x00\x00\x00\xf2\x00\x00\x00\x00r\x00\x00\x00\x00",
             VAL_TUPLE);
}

static void test_int32_int64_and_long_are_ints(void **state)
{
    (void)state;
    ACCEPTED("i\xff\xff\xff\xff", VAL_INT);
    ACCEPTED("I\x01\x02\x03\x04\x05\x06\x07\x08", VAL_INT);
    ACCEPTED("l\x00\x00\x00\x00", VAL_INT);                         /* 0 */
    ACCEPTED("l\x01\x00\x00\x00\xff\x7f", VAL_INT);                 /* 32767 */
    ACCEPTED("l\xfe\xff\xff\xff\x00\x00\x01\x00", VAL_INT);         /* -32768 */
    ACCEPTED("l\x03\x00\x00\x00\x00\x00\x00\x00\x01\x00", VAL_INT); /* 2**30 */
}

static void test_long_with_a_zero_top_digit_is_refused(void **state)
{
    (void)state;
    /* CPython: "bad marshal data (unnormalized long data)" */
    REFUSED("l\x01\x00\x00\x00\x00\x00", "unnormalized long");
    REFUSED("l\x02\x00\x00\x00\x01\x00\x00\x00", "unnormalized long");
    REFUSED("l\xfe\xff\xff\xff\x01\x00\x00\x00", "unnormalized long");
}

static void test_long_digit_of_2_15_or_more_is_refused(void **state)
{
    (void)state;
    /* CPython: "bad marshal data (digit out of range in long)" */
    REFUSED("l\x01\x00\x00\x00\x00\x80", "long digit out of range");
    REFUSED("l\x02\x00\x00\x00\xff\xff\x01\x00", "long digit out of range");
}

static void test_long_digit_count_out_of_range_or_past_the_input_is_refused(void **state)
{
    (void)state;
    REFUSED("l\x00\x00\x00\x80", "long size out of range"); /* -2**31 */
    REFUSED("l\xff\xff\xff\x7f\x01\x00", "truncated");
    REFUSED("l\x02\x00\x00\x00\x01\x00", "truncated");
    REFUSED("l\x01\x00", "truncated");
}

static void test_binary_float_and_complex_are_typed(void **state)
{
    (void)state;
    ACCEPTED("g\x00\x00\x00\x00\x00\x00\xf8\x7f", VAL_FLOAT); /* nan */
    ACCEPTED("y\x00\x00\x00\x00\x00\x00\xf0\x3f\x00\x00\x00\x00\x00\x00\x00\x00", VAL_COMPLEX);
    REFUSED("g\x00\x00\x00\x00\x00\x00\xf8", "truncated");
    REFUSED("y\x00\x00\x00\x00\x00\x00\xf0\x3f", "truncated");
}

static void test_text_float_accepts_what_cpython_parses(void **state)
{
    (void)state;
    ACCEPTED("f\0031.5", VAL_FLOAT);
    ACCEPTED("f\x02-0", VAL_FLOAT);
    ACCEPTED("f\x03+.5", VAL_FLOAT);
    ACCEPTED("f\0021.", VAL_FLOAT);
    ACCEPTED("f\0041e-5", VAL_FLOAT);
    ACCEPTED("f\0051E+99", VAL_FLOAT);
    ACCEPTED("f\0071e99999", VAL_FLOAT); /* inf, no error */
    ACCEPTED("f\x03inf", VAL_FLOAT);
    ACCEPTED("f\x04-INF", VAL_FLOAT);
    ACCEPTED("f\x08Infinity", VAL_FLOAT);
    ACCEPTED("f\x04+NaN", VAL_FLOAT);
    ACCEPTED("x\0031.5\x04-inf", VAL_COMPLEX);
}

static void test_text_float_refuses_what_cpython_refuses(void **state)
{
    (void)state;
    /* Each raises "could not convert string to float" in CPython. */
    REFUSED("f\x00", "invalid float text");
    REFUSED("f\x01.", "invalid float text");
    REFUSED("f\0021e", "invalid float text");
    REFUSED("f\0031e+", "invalid float text");
    REFUSED("f\002e5", "invalid float text");
    REFUSED("f\x04 1.5", "invalid float text");
    REFUSED("f\0041.5 ", "invalid float text");
    REFUSED("f\0051_000", "invalid float text");
    REFUSED("f\0040x10", "invalid float text");
    REFUSED("f\x07infinit", "invalid float text");
    REFUSED("f\x06nan(1)", "invalid float text");
    REFUSED("f\x03--1", "invalid float text");
    REFUSED("x\0031.5\x01z", "invalid float text");
}

static void test_text_float_with_an_embedded_nul_is_refused(void **state)
{
    (void)state;
    /* CPython reads up to the NUL and returns 1.5; we refuse rather than guess. */
    REFUSED("f\0051.5\x00x", "invalid float text");
}

static void test_text_float_past_the_input_is_refused(void **state)
{
    (void)state;
    REFUSED("f\0051.5", "truncated");
    REFUSED("f", "truncated");
    REFUSED("x\0031.5", "truncated");
}

/* ---- strings -------------------------------------------------------------------------- */

static void test_bytes_are_bytes_not_str(void **state)
{
    (void)state;
    result_t r;
    DECODE(&r, "s\x04\x00\x00\000echo");
    assert_true(r.ok);
    assert_int_equal(r.v->type, VAL_BYTES);
    assert_int_equal(r.v->u.str.len, 4);
    assert_memory_equal(r.v->u.str.data, "echo", 4);
    assert_false(value_is_str(r.v, "echo"));
    done(&r);
}

static void test_every_string_type_gives_the_same_str(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
    } forms[] = {
        {"z\x08sub.echo", 10},
        {"Z\x08sub.echo", 10},
        {"\xfa\x08sub.echo", 10},
        {"\xda\x08sub.echo", 10},
        {"a\x08\x00\x00\x00sub.echo", 13},
        {"A\x08\x00\x00\x00sub.echo", 13},
        {"\xe1\x08\x00\x00\x00sub.echo", 13},
        {"u\x08\x00\x00\x00sub.echo", 13},
        {"t\x08\x00\x00\x00sub.echo", 13},
        {"\xf5\x08\x00\x00\x00sub.echo", 13},
        {"\xf4\x08\x00\x00\x00sub.echo", 13},
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        result_t r;
        decode(&r, forms[i].bytes, forms[i].len);
        assert_true(r.ok);
        assert_true(value_is_str(r.v, "sub.echo"));
        done(&r);
    }
}

static void test_utf8_str_keeps_astral_characters(void **state)
{
    (void)state;
    result_t r;
    DECODE(&r, "u\x06\x00\x00\x00\xc3\xa9\xf0\x9f\x98\x80");
    assert_true(r.ok);
    ASSERT_STR(r.v, "\xc3\xa9\xf0\x9f\x98\x80");
    done(&r);
}

static void test_utf8_str_keeps_lone_surrogates_as_three_bytes(void **state)
{
    (void)state;
    result_t r;
    /* surrogatepass: '\ud800' and a CESU-8 pair '\ud83d\ude00' (two code points, not one). */
    DECODE(&r, "u\x09\x00\x00\x00\xed\xa0\x80\xed\xa0\xbd\xed\xb8\x80");
    assert_true(r.ok);
    ASSERT_STR(r.v, "\xed\xa0\x80\xed\xa0\xbd\xed\xb8\x80");
    done(&r);
}

static void test_invalid_utf8_str_is_refused(void **state)
{
    (void)state;
    REFUSED("u\x02\x00\x00\x00\xc0\xae", "invalid UTF-8");         /* overlong '.' */
    REFUSED("u\x03\x00\x00\x00\xe0\x80\xae", "invalid UTF-8");     /* overlong '.' */
    REFUSED("u\x04\x00\x00\x00\xf0\x80\x80\xae", "invalid UTF-8"); /* overlong '.' */
    REFUSED("u\x04\x00\x00\x00\xf4\x90\x80\x80", "invalid UTF-8"); /* past U+10FFFF */
    REFUSED("u\x01\x00\x00\x00\x80", "invalid UTF-8");
    REFUSED("u\x01\x00\x00\x00\xff", "invalid UTF-8");
    REFUSED("u\x02\x00\x00\x00\xed\xa0", "invalid UTF-8"); /* truncated surrogate */
    REFUSED("t\x02\x00\x00\x00\xc3(", "invalid UTF-8");
}

static void test_invalid_utf8_after_a_long_ascii_run_is_refused(void **state)
{
    (void)state;
    uint8_t buf[5 + 100];
    memcpy(buf, "u\x64\x00\x00\x00", 5);
    memset(buf + 5, 'a', 100);
    buf[5 + 99] = 0xc3; /* a lead byte with nothing after it */
    assert_refused(buf, sizeof(buf), "invalid UTF-8");
    buf[5 + 40] = 0x80;
    assert_refused(buf, sizeof(buf), "invalid UTF-8");
}

static void test_ascii_str_bytes_above_0x7f_are_latin1(void **state)
{
    (void)state;
    result_t r;
    /* CPython: PyUnicode_FromKindAndData(1BYTE) gives 'éÿ' for z 02 e9 ff. */
    DECODE(&r, "z\x02\xe9\xff");
    assert_true(r.ok);
    ASSERT_STR(r.v, "\xc3\xa9\xc3\xbf");
    done(&r);
    DECODE(&r, "a\x04\x00\x00\x00x\x80y\xc3");
    assert_true(r.ok);
    ASSERT_STR(r.v, "x\xc2\x80y\xc3\x83");
    done(&r);
}

static void test_empty_strings_are_accepted(void **state)
{
    (void)state;
    ACCEPTED("z\x00", VAL_STR);
    ACCEPTED("u\x00\x00\x00\x00", VAL_STR);
    ACCEPTED("a\x00\x00\x00\x00", VAL_STR);
    ACCEPTED("s\x00\x00\x00\x00", VAL_BYTES);
}

static void test_string_past_the_input_is_refused(void **state)
{
    (void)state;
    REFUSED("z\005abc", "truncated");
    REFUSED("u\x05\x00\x00\000abc", "truncated");
    REFUSED("s\xff\xff\xff\x7f", "truncated");
    REFUSED("z", "truncated");
    REFUSED("u\x01\x00", "truncated");
}

/* ---- containers ----------------------------------------------------------------------- */

static void test_small_and_large_tuples_and_lists(void **state)
{
    (void)state;
    result_t r;
    DECODE(&r, "(\x02\x00\x00\x00N)\x00");
    assert_true(r.ok);
    assert_int_equal(r.v->type, VAL_TUPLE);
    assert_int_equal(r.v->u.seq.n, 2);
    assert_int_equal(r.v->u.seq.items[1]->type, VAL_TUPLE);
    assert_int_equal(r.v->u.seq.items[1]->u.seq.n, 0);
    done(&r);
    DECODE(&r, "[\x03\x00\x00\x00NTF");
    assert_true(r.ok);
    assert_int_equal(r.v->type, VAL_LIST);
    assert_int_equal(r.v->u.seq.n, 3);
    done(&r);
}

static void test_dict_keeps_pairs_in_wire_order_with_duplicates(void **state)
{
    (void)state;
    result_t r;
    const value_t *m;
    DECODE(&r, "{z\x06methodz\004echoz\x01xNz\x06methodz\x08sub.echo0");
    assert_true(r.ok);
    assert_int_equal(r.v->type, VAL_DICT);
    assert_int_equal(r.v->u.dict.n, 3);
    ASSERT_STR(r.v->u.dict.values[0], "echo");
    ASSERT_STR(r.v->u.dict.keys[1], "x");
    ASSERT_STR(r.v->u.dict.values[2], "sub.echo");
    assert_int_equal(value_dict_get(r.v, "method", &m), -1); /* ambiguous: refused by inspection */
    done(&r);
}

static void test_dict_ends_at_a_null_with_or_without_flag_ref(void **state)
{
    (void)state;
    ACCEPTED("{0", VAL_DICT);
    ACCEPTED("{\xb0", VAL_DICT);
    ACCEPTED("{z\001aN\xb0", VAL_DICT);
}

static void test_nested_dicts_keep_their_own_pairs(void **state)
{
    (void)state;
    result_t r;
    /* {'a': {'b': {}, 'c': N}, ('t',): {'d': N}} */
    DECODE(&r, "{z\001a{z\001b{0z\001cN0)\x01z\x01t{z\001dN00");
    assert_true(r.ok);
    assert_int_equal(r.v->u.dict.n, 2);
    const value_t *inner = r.v->u.dict.values[0];
    assert_int_equal(inner->u.dict.n, 2);
    ASSERT_STR(inner->u.dict.keys[0], "b");
    ASSERT_STR(inner->u.dict.keys[1], "c");
    assert_int_equal(inner->u.dict.values[0]->u.dict.n, 0);
    assert_int_equal(r.v->u.dict.keys[1]->type, VAL_TUPLE);
    ASSERT_STR(r.v->u.dict.values[1]->u.dict.keys[0], "d");
    done(&r);
}

static void test_dict_with_many_pairs_keeps_them_all(void **state)
{
    (void)state;
    uint8_t buf[1 + 200 * 4 + 1];
    size_t n = 0;
    buf[n++] = '{';
    for (int i = 0; i < 200; i++) {
        buf[n++] = 'z';
        buf[n++] = 1;
        buf[n++] = (uint8_t)('!' + i % 90);
        buf[n++] = 'N';
    }
    buf[n++] = '0';
    result_t r;
    decode(&r, buf, n);
    assert_true(r.ok);
    assert_int_equal(r.v->u.dict.n, 200);
    done(&r);
}

static void test_set_drops_repeated_members_like_python(void **state)
{
    (void)state;
    result_t r;
    /* CPython: {'a', 'b'} from < 3 'a' 'b' 'a'; 'é' written three ways is one member. */
    DECODE(&r, "<\x03\x00\x00\x00z\001az\001bz\001a");
    assert_true(r.ok);
    assert_int_equal(r.v->type, VAL_SET);
    assert_int_equal(r.v->u.seq.n, 2);
    done(&r);
    DECODE(&r, "<\x03\x00\x00\x00z\x01\xe9u\x02\x00\x00\x00\xc3\251a\x01\x00\x00\x00\xe9");
    assert_true(r.ok);
    assert_int_equal(r.v->u.seq.n, 1);
    ASSERT_STR(r.v->u.seq.items[0], "\xc3\xa9");
    done(&r);
}

static void test_equal_frozensets_in_any_order_are_one_member(void **state)
{
    (void)state;
    result_t r;
    DECODE(&r, "<\x02\x00\x00\x00>\x02\x00\x00\x00z\001az\001b>\x03\x00\x00\x00z\001bz\001az\001b");
    assert_true(r.ok);
    assert_int_equal(r.v->u.seq.n, 1);
    assert_int_equal(r.v->u.seq.items[0]->type, VAL_FROZENSET);
    assert_int_equal(r.v->u.seq.items[0]->u.seq.n, 2);
    done(&r);
}

static void test_set_keeps_members_holding_numbers_as_sent(void **state)
{
    (void)state;
    result_t r;
    /* 1 and True are one member for Python, 1 and 2 are two: the tree cannot tell which. */
    DECODE(&r, "<\x03\x00\x00\x00i\x01\x00\x00\x00Ti\x02\x00\x00\x00");
    assert_true(r.ok);
    assert_int_equal(r.v->u.seq.n, 3);
    done(&r);
}

static void test_bytes_and_str_are_different_set_members(void **state)
{
    (void)state;
    result_t r;
    DECODE(&r, ">\x02\x00\x00\x00z\001as\x01\x00\x00\000a");
    assert_true(r.ok);
    assert_int_equal(r.v->type, VAL_FROZENSET);
    assert_int_equal(r.v->u.seq.n, 2);
    done(&r);
}

/* ---- references ----------------------------------------------------------------------- */

static void test_ref_to_an_interned_name_shares_the_value(void **state)
{
    (void)state;
    result_t r;
    /* An honest batch: ('echo', ...) twice, the second name a ref (PROTOCOL.md §5.3). */
    DECODE(&r, "[\x02\x00\x00\x00)\x01\xda\004echo)\x01r\x00\x00\x00\x00");
    assert_true(r.ok);
    const value_t *a = r.v->u.seq.items[0]->u.seq.items[0];
    const value_t *b = r.v->u.seq.items[1]->u.seq.items[0];
    ASSERT_STR(b, "echo");
    assert_ptr_equal(a, b);
    done(&r);
}

static void test_method_name_may_be_a_ref_to_an_argument_string(void **state)
{
    (void)state;
    result_t r;
    /* PROTOCOL.md §9 marshal_batch_ref: entry 2's method = ref to an argument of entry 1. */
    DECODE(&r, ")\x04\xfa\x05thing\xda\x07<batch>\xdb\x02\x00\x00\x00"
               "\xa9\x03\xda\004echo)\x01\xda\x08sub.echo\3730"
               "\xa9\x03r\x05\x00\x00\x00)\x00r\x06\x00\x00\x00N");
    assert_true(r.ok);
    const value_t *second = r.v->u.seq.items[2]->u.seq.items[1];
    ASSERT_STR(second->u.seq.items[0], "sub.echo");
    done(&r);
}

static void test_ref_to_a_finished_container_shares_the_subtree(void **state)
{
    (void)state;
    result_t r;
    DECODE(&r, "(\x02\x00\x00\x00\xdb\x01\x00\x00\x00z\x01xr\x00\x00\x00\x00");
    assert_true(r.ok);
    assert_ptr_equal(r.v->u.seq.items[0], r.v->u.seq.items[1]);
    done(&r);
}

static void test_ref_index_out_of_range_is_refused(void **state)
{
    (void)state;
    REFUSED("(\x02\x00\x00\x00\xe9\x05\x00\x00\x00r\x01\x00\x00\x00", "invalid reference");
    REFUSED("(\x02\x00\x00\x00\xe9\x05\x00\x00\x00r\xff\xff\xff\xff", "invalid reference");
    REFUSED("r\x00\x00\x00\x00", "invalid reference");
    REFUSED("r\x00\x00", "truncated");
}

static void test_ref_to_a_container_being_built_is_refused(void **state)
{
    (void)state;
    /* CPython builds a tuple / list / dict that contains itself; we cannot represent it. */
    REFUSED("\xa9\x01r\x00\x00\x00\x00", "reference to an unfinished container");
    REFUSED("\xdb\x01\x00\x00\x00r\x00\x00\x00\x00", "reference to an unfinished container");
    REFUSED("\xfbz\001ar\x00\x00\x00\0000", "reference to an unfinished container");
    /* CPython: "invalid reference" (frozensets are registered when finished) and unhashable. */
    REFUSED("\xbe\x01\x00\x00\x00r\x00\x00\x00\x00", "reference to an unfinished container");
    REFUSED("\xbc\x01\x00\x00\x00r\x00\x00\x00\x00", "reference to an unfinished container");
    /* A child referring to its grandparent. */
    REFUSED("\xa9\x02\xa9\x01Nr\x00\x00\x00\x00", "reference to an unfinished container");
}

static void test_ref_to_a_finished_sibling_inside_a_tuple_is_accepted(void **state)
{
    (void)state;
    ACCEPTED(")\x02\xa9\x01Nr\x00\x00\x00\x00", VAL_TUPLE);
}

static void test_many_flagged_values_fill_the_reference_table(void **state)
{
    (void)state;
    uint8_t buf[5 + 100 * 3 + 5];
    size_t n = 0;
    memcpy(buf, "(\x65\x00\x00\x00", 5); /* 101 items */
    n = 5;
    for (int i = 0; i < 100; i++) {
        buf[n++] = 0xda;
        buf[n++] = 1;
        buf[n++] = (uint8_t)('A' + i % 26);
    }
    memcpy(buf + n, "r\x63\x00\x00\x00", 5); /* ref 99 */
    n += 5;
    result_t r;
    decode(&r, buf, n);
    assert_true(r.ok);
    assert_ptr_equal(r.v->u.seq.items[100], r.v->u.seq.items[99]);
    done(&r);
}

/* ---- NULL, hashability ---------------------------------------------------------------- */

static void test_null_outside_a_dict_key_is_refused(void **state)
{
    (void)state;
    REFUSED("0", "NULL object");                      /* CPython: TypeError */
    REFUSED(")\0020N", "NULL object in a container"); /* CPython: TypeError */
    REFUSED("[\x01\x00\x00\0000", "NULL object in a container");
    REFUSED("<\x01\x00\x00\0000", "NULL object in a container");
}

static void test_null_in_place_of_a_dict_value_is_refused(void **state)
{
    (void)state;
    /* CPython ends the dict there and silently drops the key: {} for { 'a' 0. */
    REFUSED("{z\001a0", "NULL dict value");
}

static void test_unterminated_dict_is_refused(void **state)
{
    (void)state;
    REFUSED("{z\001aN", "truncated");
    REFUSED("{", "truncated");
}

static void test_unhashable_dict_keys_are_refused(void **state)
{
    (void)state;
    /* CPython: TypeError unhashable type. */
    REFUSED("{[\x00\x00\x00\x00N0", "unhashable dict key");
    REFUSED("{{0N0", "unhashable dict key");
    REFUSED("{<\x00\x00\x00\x00N0", "unhashable dict key");
    REFUSED("{)\x01[\x00\x00\x00\x00N0", "unhashable dict key");
    REFUSED("(\x02\x00\x00\x00\xdb\x00\x00\x00\x00{)\x01r\x00\x00\x00\x00N0",
            "unhashable dict key");
}

static void test_hashable_dict_keys_are_accepted(void **state)
{
    (void)state;
    /* Keys frozenset(), ('a', True), 1, b'', ..., StopIteration. */
    ACCEPTED("{>\x00\x00\x00\x00N)\x02z\001aTNi\x01\x00\x00\x00Ns\x00\x00\x00\x00N.NSN0", VAL_DICT);
}

static void test_unhashable_set_members_are_refused(void **state)
{
    (void)state;
    REFUSED("<\x01\x00\x00\x00[\x00\x00\x00\x00", "unhashable set member");
    REFUSED(">\x01\x00\x00\x00<\x00\x00\x00\x00", "unhashable set member");
    REFUSED("<\x01\x00\x00\x00)\x01{0", "unhashable set member");
}

/* ---- refused codes and framing -------------------------------------------------------- */

static void test_code_object_is_refused(void **state)
{
    (void)state;
    REFUSED("c\x00\x00\x00\x00", "code object");
    REFUSED("\xe3\x00\x00\x00\x00", "code object");
}

static void test_every_unknown_type_code_is_refused(void **state)
{
    (void)state;
    static const char known[] = "0NFTS.iIfgxylstr([{<>uaA)zZc";
    for (int code = 0; code < 256; code++) {
        if (strchr(known, code & 0x7f) != NULL && (code & 0x7f) != 0)
            continue;
        uint8_t buf[9] = {(uint8_t)code, 0, 0, 0, 0, 'N', 'N', 'N', '0'};
        result_t r;
        decode(&r, buf, sizeof(buf));
        assert_false(r.ok);
        assert_string_equal(r.reason, "unknown type code");
        done(&r);
    }
}

static void test_trailing_bytes_are_refused(void **state)
{
    (void)state;
    /* marshal.loads ignores them: a second call could hide there (PROTOCOL.md §9). */
    REFUSED("NN", "trailing bytes");
    REFUSED(")\x01z\004echo0", "trailing bytes");
    REFUSED(")\x04z\x05thingz\004echo[\x00\x00\x00\x00{0"
            ")\x04z\x05thingz\x08sub.echo[\x00\x00\x00\x00{0",
            "trailing bytes");
}

static void test_empty_input_is_refused(void **state)
{
    (void)state;
    result_t r;
    decode(&r, "", 0);
    assert_false(r.ok);
    assert_string_equal(r.reason, "truncated");
    done(&r);
}

static void test_negative_counts_and_lengths_are_refused(void **state)
{
    (void)state;
    REFUSED("(\xff\xff\xff\xffN", "negative length");
    REFUSED("[\xff\xff\xff\xffN", "negative length");
    REFUSED("<\xff\xff\xff\xffN", "negative length");
    REFUSED(">\x00\x00\x00\x80N", "negative length");
    REFUSED("s\xff\xff\xff\xffN", "negative length");
    REFUSED("u\xff\xff\xff\xffN", "negative length");
    REFUSED("a\xff\xff\xff\xffN", "negative length");
}

static void test_count_larger_than_the_input_is_refused_before_allocating(void **state)
{
    (void)state;
    REFUSED("(\xff\xff\xff\x7fN", "count exceeds input");
    REFUSED("[\x03\x00\x00\x00NN", "count exceeds input");
    REFUSED("<\x00\x00\x00\x01N", "count exceeds input");
    REFUSED(")\xffN", "count exceeds input");
}

/* ---- limits --------------------------------------------------------------------------- */

static void test_nesting_up_to_max_depth_is_accepted_and_deeper_is_refused(void **state)
{
    (void)state;
    uint8_t buf[5 * 40 + 1];
    value_limits_t limits;
    value_limits_default(&limits);
    result_t r;
    decode(&r, buf, nest(buf, limits.max_depth, 'N'));
    assert_true(r.ok);
    done(&r);
    decode(&r, buf, nest(buf, limits.max_depth + 1, 'N'));
    assert_false(r.ok);
    assert_string_equal(r.reason, "nesting too deep");
    done(&r);
}

static void test_max_depth_follows_the_arena_limits(void **state)
{
    (void)state;
    uint8_t buf[5 * 10 + 1];
    value_limits_t limits;
    value_limits_default(&limits);
    limits.max_depth = 3;
    result_t r;
    decode_limits(&r, buf, nest(buf, 3, 'N'), &limits);
    assert_true(r.ok);
    done(&r);
    decode_limits(&r, buf, nest(buf, 4, 'N'), &limits);
    assert_false(r.ok);
    done(&r);
    ACCEPTED("N", VAL_NONE); /* scalars have no depth */
}

static void test_depth_never_exceeds_cpythons_own_limit(void **state)
{
    (void)state;
    /* CPython stops at 2000 nested r_object calls: 1999 lists around None decode, 2000 do not. */
    static uint8_t buf[5 * 2001 + 1];
    value_limits_t limits;
    value_limits_default(&limits);
    limits.max_depth = 100000;
    result_t r;
    decode_limits(&r, buf, nest(buf, 1999, 'N'), &limits);
    assert_true(r.ok);
    done(&r);
    decode_limits(&r, buf, nest(buf, 2000, 'N'), &limits);
    assert_false(r.ok);
    assert_string_equal(r.reason, "nesting too deep");
    done(&r);
}

static void test_ref_that_puts_a_deep_subtree_deeper_is_refused(void **state)
{
    (void)state;
    value_limits_t limits;
    value_limits_default(&limits);
    limits.max_depth = 4;
    /* ( sub, (ref sub,) ) with sub three tuples deep: 1 + 1 + 3 = 5 > 4 when expanded. */
    static const char deep[] = ")\x02\xa9\x01)\x01)\x01N)\x01r\x00\x00\x00\x00";
    static const char fits[] = ")\x02\xa9\x01)\x01)\x01Nr\x00\x00\x00\x00";
    result_t r;
    decode_limits(&r, deep, sizeof(deep) - 1, &limits);
    assert_false(r.ok);
    assert_string_equal(r.reason, "nesting too deep");
    done(&r);
    decode_limits(&r, fits, sizeof(fits) - 1, &limits);
    assert_true(r.ok);
    done(&r);
}

static void test_value_count_up_to_max_values_is_accepted(void **state)
{
    (void)state;
    value_limits_t limits;
    value_limits_default(&limits);
    limits.max_values = 4;
    result_t r;
    decode_limits(&r, "(\x03\x00\x00\x00NNN", 8, &limits);
    assert_true(r.ok);
    done(&r);
    decode_limits(&r, "(\x04\x00\x00\x00NNNN", 9, &limits);
    assert_false(r.ok);
    assert_string_equal(r.reason, "too many values");
    done(&r);
}

static void test_references_count_as_the_values_they_stand_for(void **state)
{
    (void)state;
    /* 30 tuples, each holding the previous one twice: 2^30 values when walked. */
    uint8_t buf[5 + 3 + 29 * 12];
    size_t n = 0;
    memcpy(buf, "(\x1e\x00\x00\x00\xa9\x01N", 8);
    n = 8;
    for (uint8_t i = 0; i < 29; i++) {
        uint8_t item[12] = {0xa9, 2, 'r', i, 0, 0, 0, 'r', i, 0, 0, 0};
        memcpy(buf + n, item, sizeof(item));
        n += sizeof(item);
    }
    result_t r;
    decode(&r, buf, n);
    assert_false(r.ok);
    assert_string_equal(r.reason, "too many values");
    done(&r);
}

static void test_string_bytes_up_to_max_string_bytes_are_accepted(void **state)
{
    (void)state;
    value_limits_t limits;
    value_limits_default(&limits);
    limits.max_string_bytes = 4;
    result_t r;
    decode_limits(&r, ")\x02z\002abz\002cd", 10, &limits);
    assert_true(r.ok);
    done(&r);
    decode_limits(&r, ")\x02z\002abz\003cde", 11, &limits);
    assert_false(r.ok);
    assert_string_equal(r.reason, "string too long");
    done(&r);
    /* Latin-1 counts decoded bytes: 3 bytes become 5. */
    decode_limits(&r, "z\x03\xe9\xe9x", 5, &limits);
    assert_false(r.ok);
    assert_string_equal(r.reason, "string too long");
    done(&r);
}

static void test_a_long_utf8_string_is_accepted_whole(void **state)
{
    (void)state;
    size_t n = 1 << 20;
    uint8_t *buf = malloc(5 + n);
    assert_non_null(buf);
    buf[0] = 'u';
    buf[1] = 0;
    buf[2] = 0;
    buf[3] = 0x10;
    buf[4] = 0;
    for (size_t i = 0; i < n; i += 4)
        memcpy(buf + 5 + i, (i / 4) % 3 ? "abcd" : "\xf0\x9f\x98\x80", 4);
    result_t r;
    decode(&r, buf, 5 + n);
    assert_true(r.ok);
    assert_int_equal(r.v->u.str.len, n);
    assert_memory_equal(r.v->u.str.data, buf + 5, n);
    done(&r);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_captured_echo_invoke_is_the_call_tuple),
        cmocka_unit_test(test_captured_connect_is_the_handshake_dict),
        cmocka_unit_test(test_captured_blob_annotation_is_info_object_and_method),
        cmocka_unit_test(test_captured_compressed_invoke_decodes_after_inflating),
        cmocka_unit_test(test_every_captured_marshal_payload_is_accepted),
        cmocka_unit_test(test_captured_dotted_method_name_is_decoded_literally),
        cmocka_unit_test(test_captured_invoke_cut_short_anywhere_is_refused),
        cmocka_unit_test(test_singletons_decode_to_their_types),
        cmocka_unit_test(test_flag_ref_on_a_singleton_is_ignored),
        cmocka_unit_test(test_flag_ref_on_a_ref_takes_no_index),
        cmocka_unit_test(test_int32_int64_and_long_are_ints),
        cmocka_unit_test(test_long_with_a_zero_top_digit_is_refused),
        cmocka_unit_test(test_long_digit_of_2_15_or_more_is_refused),
        cmocka_unit_test(test_long_digit_count_out_of_range_or_past_the_input_is_refused),
        cmocka_unit_test(test_binary_float_and_complex_are_typed),
        cmocka_unit_test(test_text_float_accepts_what_cpython_parses),
        cmocka_unit_test(test_text_float_refuses_what_cpython_refuses),
        cmocka_unit_test(test_text_float_with_an_embedded_nul_is_refused),
        cmocka_unit_test(test_text_float_past_the_input_is_refused),
        cmocka_unit_test(test_bytes_are_bytes_not_str),
        cmocka_unit_test(test_every_string_type_gives_the_same_str),
        cmocka_unit_test(test_utf8_str_keeps_astral_characters),
        cmocka_unit_test(test_utf8_str_keeps_lone_surrogates_as_three_bytes),
        cmocka_unit_test(test_invalid_utf8_str_is_refused),
        cmocka_unit_test(test_invalid_utf8_after_a_long_ascii_run_is_refused),
        cmocka_unit_test(test_ascii_str_bytes_above_0x7f_are_latin1),
        cmocka_unit_test(test_empty_strings_are_accepted),
        cmocka_unit_test(test_string_past_the_input_is_refused),
        cmocka_unit_test(test_small_and_large_tuples_and_lists),
        cmocka_unit_test(test_dict_keeps_pairs_in_wire_order_with_duplicates),
        cmocka_unit_test(test_dict_ends_at_a_null_with_or_without_flag_ref),
        cmocka_unit_test(test_nested_dicts_keep_their_own_pairs),
        cmocka_unit_test(test_dict_with_many_pairs_keeps_them_all),
        cmocka_unit_test(test_set_drops_repeated_members_like_python),
        cmocka_unit_test(test_equal_frozensets_in_any_order_are_one_member),
        cmocka_unit_test(test_set_keeps_members_holding_numbers_as_sent),
        cmocka_unit_test(test_bytes_and_str_are_different_set_members),
        cmocka_unit_test(test_ref_to_an_interned_name_shares_the_value),
        cmocka_unit_test(test_method_name_may_be_a_ref_to_an_argument_string),
        cmocka_unit_test(test_ref_to_a_finished_container_shares_the_subtree),
        cmocka_unit_test(test_ref_index_out_of_range_is_refused),
        cmocka_unit_test(test_ref_to_a_container_being_built_is_refused),
        cmocka_unit_test(test_ref_to_a_finished_sibling_inside_a_tuple_is_accepted),
        cmocka_unit_test(test_many_flagged_values_fill_the_reference_table),
        cmocka_unit_test(test_null_outside_a_dict_key_is_refused),
        cmocka_unit_test(test_null_in_place_of_a_dict_value_is_refused),
        cmocka_unit_test(test_unterminated_dict_is_refused),
        cmocka_unit_test(test_unhashable_dict_keys_are_refused),
        cmocka_unit_test(test_hashable_dict_keys_are_accepted),
        cmocka_unit_test(test_unhashable_set_members_are_refused),
        cmocka_unit_test(test_code_object_is_refused),
        cmocka_unit_test(test_every_unknown_type_code_is_refused),
        cmocka_unit_test(test_trailing_bytes_are_refused),
        cmocka_unit_test(test_empty_input_is_refused),
        cmocka_unit_test(test_negative_counts_and_lengths_are_refused),
        cmocka_unit_test(test_count_larger_than_the_input_is_refused_before_allocating),
        cmocka_unit_test(test_nesting_up_to_max_depth_is_accepted_and_deeper_is_refused),
        cmocka_unit_test(test_max_depth_follows_the_arena_limits),
        cmocka_unit_test(test_depth_never_exceeds_cpythons_own_limit),
        cmocka_unit_test(test_ref_that_puts_a_deep_subtree_deeper_is_refused),
        cmocka_unit_test(test_value_count_up_to_max_values_is_accepted),
        cmocka_unit_test(test_references_count_as_the_values_they_stand_for),
        cmocka_unit_test(test_string_bytes_up_to_max_string_bytes_are_accepted),
        cmocka_unit_test(test_a_long_utf8_string_is_accepted_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
