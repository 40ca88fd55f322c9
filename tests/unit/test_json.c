/* Unit tests for proxy/json.c: the Pyro4 json payload decoder (PROTOCOL.md §5.2, §9).
 *
 * Positive cases use the real Pyro4 4.82 captures in tests/vectors/pyro4/json/ and small texts
 * whose Python result (json.loads) is written next to them in the dump notation of
 * tests/tools/value_dump.c: s:<hex of UTF-8>, int, float, [..] list, d{k:v,..} dict. The
 * differential test (tests/integration/test_json_decoder_matches_python.py) checks the same
 * against Python itself on thousands of inputs. */
#include <dirent.h>
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
    char *p;
    size_t len, cap;
} text_t;

static void text_put(text_t *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 64;
        while (cap < t->len + n + 1)
            cap *= 2;
        t->p = realloc(t->p, cap);
        assert_non_null(t->p);
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void text_puts(text_t *t, const char *s)
{
    text_put(t, s, strlen(s));
}

/* dump writes |v| in value_dump's notation (JSON has no sets, and duplicate keys are refused,
 * so wire order is the dump order). */
static void dump(text_t *t, const value_t *v)
{
    static const char hex[] = "0123456789abcdef";
    switch (v->type) {
    case VAL_NONE:
        text_puts(t, "None");
        return;
    case VAL_BOOL:
        text_puts(t, v->u.boolean ? "True" : "False");
        return;
    case VAL_INT:
        text_puts(t, "int");
        return;
    case VAL_FLOAT:
        text_puts(t, "float");
        return;
    case VAL_STR:
        text_puts(t, "s:");
        for (size_t i = 0; i < v->u.str.len; i++) {
            char h[2] = {hex[v->u.str.data[i] >> 4], hex[v->u.str.data[i] & 15]};
            text_put(t, h, 2);
        }
        return;
    case VAL_LIST:
        text_puts(t, "[");
        for (size_t i = 0; i < v->u.seq.n; i++) {
            if (i)
                text_puts(t, ",");
            dump(t, v->u.seq.items[i]);
        }
        text_puts(t, "]");
        return;
    case VAL_DICT:
        text_puts(t, "d{");
        for (size_t i = 0; i < v->u.dict.n; i++) {
            if (i)
                text_puts(t, ",");
            dump(t, v->u.dict.keys[i]);
            text_puts(t, ":");
            dump(t, v->u.dict.values[i]);
        }
        text_puts(t, "}");
        return;
    default:
        fail_msg("json produced a %s", value_type_name(v->type));
    }
}

/* decode_with decodes |len| bytes of |data| under |limits| (NULL: defaults); returns 1 and
 * the dump in |*out_dump| (caller frees), or 0 and the reason. */
static int decode_with(const void *data, size_t len, const value_limits_t *limits, char **out_dump,
                       const char **out_reason)
{
    value_arena_t arena;
    value_t *v = NULL;
    const char *reason = NULL;
    text_t t = {NULL, 0, 0};

    value_arena_init(&arena, limits);
    int ok = decode_json(data, len, &arena, &v, &reason);
    if (ok) {
        assert_non_null(v);
        dump(&t, v);
        *out_dump = t.p;
    } else {
        assert_non_null(reason);
        *out_reason = reason;
    }
    value_arena_cleanup(&arena);
    return ok;
}

/* expect_bytes: |data| decodes to the dump |want|. */
static void expect_bytes(const void *data, size_t len, const char *want)
{
    char *got = NULL;
    const char *reason = NULL;
    if (!decode_with(data, len, NULL, &got, &reason))
        fail_msg("refused (%s), expected %s", reason, want);
    assert_string_equal(got, want);
    free(got);
}

static void expect(const char *text, const char *want)
{
    expect_bytes(text, strlen(text), want);
}

/* refuse_bytes: |data| is refused with |reason|. */
static void refuse_bytes(const void *data, size_t len, const char *reason)
{
    char *got = NULL;
    const char *why = NULL;
    if (decode_with(data, len, NULL, &got, &why)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "accepted as %.200s", got);
        free(got);
        fail_msg("%s", msg);
    }
    assert_string_equal(why, reason);
}

static void refuse(const char *text, const char *reason)
{
    refuse_bytes(text, strlen(text), reason);
}

/* read_payload loads the payload of the capture tests/vectors/pyro4/json/|rel|: the bytes
 * after the 24-byte header and the annotations (length at offset 0x12), zlib-inflated when the
 * COMPRESSED flag (0x02 at offset 0x08) is set, as the daemon does (PROTOCOL.md §2.6). */
static uint8_t *read_payload(const char *rel, size_t *out_len)
{
    char path[512];
    static uint8_t frame[1 << 16];
    snprintf(path, sizeof(path), "%s/vectors/pyro4/json/%s", TEST_DATA_DIR, rel);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    size_t n = fread(frame, 1, sizeof(frame), f);
    fclose(f);
    assert_true(n >= 24);
    size_t ann = ((size_t)frame[0x12] << 8) | frame[0x13];
    assert_true(n >= 24 + ann);
    size_t len = n - 24 - ann;
    uint8_t *out;
    if (frame[0x09] & 0x02) {
        uLongf cap = 1 << 20;
        out = malloc(cap);
        assert_non_null(out);
        assert_int_equal(uncompress(out, &cap, frame + 24 + ann, (uLong)len), Z_OK);
        len = cap;
    } else {
        out = malloc(len ? len : 1);
        assert_non_null(out);
        memcpy(out, frame + 24 + ann, len);
    }
    *out_len = len;
    return out;
}

static void expect_payload(const char *rel, const char *want)
{
    size_t len;
    uint8_t *p = read_payload(rel, &len);
    expect_bytes(p, len, want);
    free(p);
}

/* The dump of a str given as ASCII text. */
#define S_OBJECT "s:6f626a656374"
#define S_METHOD "s:6d6574686f64"
#define S_PARAMS "s:706172616d73"
#define S_KWARGS "s:6b7761726773"
#define S_THING  "s:7468696e67"
#define S_ECHO   "s:6563686f"

/* ---- real captures ------------------------------------------------------------------------ */

static void test_json_captured_echo_invoke_decodes_to_the_four_key_call_object(void **state)
{
    (void)state;
    expect_payload("echo/01_c2s_INVOKE.bin", "d{" S_OBJECT ":" S_THING "," S_METHOD ":" S_ECHO
                                             "," S_PARAMS ":[s:68656c6c6f]," S_KWARGS ":d{}}");
}

static void test_json_captured_connect_decodes_to_handshake_object(void **state)
{
    (void)state;
    expect_payload("echo/00_c2s_CONNECT.bin",
                   "d{s:68616e647368616b65:s:68656c6c6f," S_OBJECT ":" S_THING "}");
}

static void test_json_captured_batch_invoke_has_a_list_of_calls_and_null_kwargs(void **state)
{
    (void)state;
    expect_payload("batch/01_c2s_INVOKE.bin",
                   "d{" S_OBJECT ":" S_THING "," S_METHOD ":s:3c62617463683e," S_PARAMS ":[[" S_ECHO
                   ",[int],d{}],[" S_ECHO ",[s:74776f],d{}]]," S_KWARGS ":None}");
}

static void test_json_captured_dotted_method_name_is_decoded_with_its_dot(void **state)
{
    (void)state;
    expect_payload("dotted/01_c2s_INVOKE.bin",
                   "d{" S_OBJECT ":" S_THING "," S_METHOD ":s:7375622e6563686f," S_PARAMS
                   ":[s:78]," S_KWARGS ":d{}}");
}

static void test_json_captured_compressed_invoke_decodes_after_inflating(void **state)
{
    (void)state;
    size_t len;
    uint8_t *p = read_payload("compressed/01_c2s_INVOKE.bin", &len);
    char *got = NULL;
    const char *reason = NULL;
    assert_true(decode_with(p, len, NULL, &got, &reason));
    /* params holds one str of 1000 'A's. */
    assert_non_null(strstr(got, S_PARAMS ":[s:4141"));
    free(got);
    free(p);
}

/* Every c2s capture in tests/vectors/pyro4/json/ decodes: an honest client is never refused. */
static void test_json_every_captured_c2s_payload_is_accepted(void **state)
{
    (void)state;
    char dir[512];
    size_t count = 0;
    snprintf(dir, sizeof(dir), "%s/vectors/pyro4/json", TEST_DATA_DIR);
    DIR *top = opendir(dir);
    assert_non_null(top);
    struct dirent *scenario;
    while ((scenario = readdir(top)) != NULL) {
        if (scenario->d_name[0] == '.')
            continue;
        char sub[768];
        snprintf(sub, sizeof(sub), "%s/%s", dir, scenario->d_name);
        DIR *d = opendir(sub);
        if (d == NULL)
            continue;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strstr(e->d_name, "_c2s_") == NULL || strstr(e->d_name, "PING") != NULL)
                continue;
            char rel[600];
            size_t len;
            char *got = NULL;
            const char *reason = NULL;
            snprintf(rel, sizeof(rel), "%s/%s", scenario->d_name, e->d_name);
            uint8_t *p = read_payload(rel, &len);
            if (!decode_with(p, len, NULL, &got, &reason))
                fail_msg("%s refused: %s", rel, reason);
            assert_true(strncmp(got, "d{", 2) == 0);
            free(got);
            free(p);
            count++;
        }
        closedir(d);
    }
    closedir(top);
    assert_true(count >= 30);
}

/* ---- scalars ------------------------------------------------------------------------------ */

static void test_json_true_false_null_are_bool_and_none(void **state)
{
    (void)state;
    expect("[true,false,null]", "[True,False,None]");
}

static void test_json_nan_and_both_infinities_are_floats(void **state)
{
    (void)state;
    expect("[NaN,Infinity,-Infinity]", "[float,float,float]");
}

static void test_json_misspelled_literals_are_refused(void **state)
{
    (void)state;
    refuse("True", "expecting value");
    refuse("nul", "expecting value");
    refuse("nan", "expecting value");
    refuse("infinity", "expecting value");
    refuse("-NaN", "invalid number");
    refuse("-infinity", "invalid number");
    refuse("truex", "trailing data");
}

static void test_json_integers_without_fraction_or_exponent_are_ints(void **state)
{
    (void)state;
    expect("[0,-0,7,-12,123456789012345678901234567890]", "[int,int,int,int,int]");
}

static void test_json_fraction_or_exponent_makes_a_float(void **state)
{
    (void)state;
    expect("[1.5,-0.0,1e5,1E+5,1e-5,2.5E-3,1e400]", "[float,float,float,float,float,float,float]");
}

/* CPython 3.11 refuses to build an int from more than 4300 digits (ValueError). */
static void test_json_int_of_4300_digits_is_accepted_and_4301_refused(void **state)
{
    (void)state;
    char buf[4400];
    memset(buf, '9', sizeof(buf));
    expect_bytes(buf, 4300, "int");
    refuse_bytes(buf, 4301, "integer too long");
    buf[0] = '-';
    expect_bytes(buf, 4301, "int"); /* the sign is not a digit */
}

static void test_json_float_of_many_digits_is_accepted(void **state)
{
    (void)state;
    char buf[5002];
    memset(buf, '1', sizeof(buf));
    buf[4990] = '.';
    expect_bytes(buf, sizeof(buf), "float");
}

static void test_json_numbers_outside_python_grammar_are_refused(void **state)
{
    (void)state;
    refuse("01", "invalid number");
    refuse("-01", "invalid number");
    refuse("+1", "expecting value");
    refuse(".5", "expecting value");
    refuse("1.", "invalid number");
    refuse("1.e5", "invalid number");
    refuse("1e", "invalid number");
    refuse("1e+", "invalid number");
    refuse("-", "invalid number");
    refuse("- 1", "invalid number");
    refuse("0x10", "trailing data");
    refuse("1_000", "trailing data");
}

/* ---- strings ------------------------------------------------------------------------------ */

static void test_json_simple_escapes_decode(void **state)
{
    (void)state;
    expect("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"", "s:22205c202f2008200c200a200d2009");
}

/* PROTOCOL.md §9: a dot can be written \u002e or \u002E. */
static void test_json_u_escape_hex_digits_are_case_insensitive(void **state)
{
    (void)state;
    expect("\"sub\\u002eecho\"", "s:7375622e6563686f");
    expect("\"sub\\u002Eecho\"", "s:7375622e6563686f");
    expect("\"\\u00E9\\u00e9\\uABCD\"", "s:c3a9c3a9eaaf8d");
}

static void test_json_u_escape_of_nul_gives_a_nul_character(void **state)
{
    (void)state;
    expect("\"a\\u0000b\"", "s:610062");
}

static void test_json_surrogate_pair_escape_is_one_astral_code_point(void **state)
{
    (void)state;
    expect("\"\\ud83d\\ude00\"", "s:f09f9880");
    expect("\"\\uDBFF\\uDFFF\"", "s:f48fbfbf");
}

static void test_json_lone_surrogate_escapes_stay_lone_as_generalized_utf8(void **state)
{
    (void)state;
    expect("\"\\ud800\"", "s:eda080");
    expect("\"\\udc00\"", "s:edb080");
    expect("\"\\udc00\\ud800\"", "s:edb080eda080"); /* low then high: no pair */
}

static void test_json_high_surrogate_before_a_non_low_escape_stays_lone(void **state)
{
    (void)state;
    expect("\"\\ud800\\ud800\\udc00\"", "s:eda080f0908080");
    expect("\"\\ud800\\u0041\"", "s:eda08041");
    expect("\"\\ud800\\n\"", "s:eda0800a");
    expect("\"\\ud800x\"", "s:eda08078");
}

static void test_json_high_surrogate_before_a_bad_u_escape_is_refused(void **state)
{
    (void)state;
    refuse("\"\\ud800\\uZZZZ\"", "invalid \\u escape");
    refuse("\"\\ud800\\u12\"", "invalid \\u escape");
}

static void test_json_raw_utf8_characters_are_kept(void **state)
{
    (void)state;
    expect("\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\x7f\"", "s:c3a9e4b8adf09f98807f");
    expect("\"\xc2\x80\xef\xbf\xbf\xf4\x8f\xbf\xbf\"", "s:c280efbfbff48fbfbf");
}

static void test_json_escaped_and_raw_forms_of_a_name_decode_alike(void **state)
{
    (void)state;
    expect("[\"m\\u0065thod\",\"method\"]", "[" S_METHOD "," S_METHOD "]");
}

static void test_json_empty_string_decodes(void **state)
{
    (void)state;
    expect("\"\"", "s:");
}

static void test_json_raw_control_characters_in_strings_are_refused(void **state)
{
    (void)state;
    refuse_bytes("\"a\0b\"", 5, "control character in string");
    refuse("\"a\tb\"", "control character in string");
    refuse("\"a\nb\"", "control character in string");
    refuse("\"a\x1f\"", "control character in string");
}

static void test_json_unknown_escapes_are_refused(void **state)
{
    (void)state;
    refuse("\"\\x2e\"", "invalid escape");
    refuse("\"\\U0000002e\"", "invalid escape");
    refuse("\"\\'\"", "invalid escape");
    refuse("\"\\a\"", "invalid escape");
    refuse("\"\\0\"", "invalid escape");
    refuse("\"\\\n\"", "invalid escape");
}

static void test_json_short_or_non_hex_u_escapes_are_refused(void **state)
{
    (void)state;
    refuse("\"\\u12\"", "invalid \\u escape");
    refuse("\"\\u12g4\"", "invalid \\u escape");
    refuse("\"\\u 123\"", "invalid \\u escape");
    refuse("\"\\u\"", "invalid \\u escape");
}

static void test_json_unterminated_strings_are_refused(void **state)
{
    (void)state;
    refuse("\"abc", "unterminated string");
    refuse("\"abc\\", "unterminated string");
    refuse("\"abc\\\"", "unterminated string");
    refuse("\"", "unterminated string");
}

/* Every ill-formed UTF-8 form Python's strict decoder rejects (PROTOCOL.md §9: an overlong
 * C0 AE must not become a dot). */
static void test_json_ill_formed_utf8_in_strings_is_refused(void **state)
{
    (void)state;
    static const char *const kBad[] = {
        "\"\xc0\xae\"",         /* overlong '.' */
        "\"\xc1\xbf\"",         /* overlong */
        "\"\xe0\x80\xae\"",     /* overlong, 3 bytes */
        "\"\xe0\x9f\xbf\"",     /* overlong, 3 bytes */
        "\"\xf0\x80\x80\xae\"", /* overlong, 4 bytes */
        "\"\xf0\x8f\xbf\xbf\"", /* overlong, 4 bytes */
        "\"\xed\xa0\x80\"",     /* encoded surrogate */
        "\"\xed\xbf\xbf\"",     /* encoded surrogate */
        "\"\xf4\x90\x80\x80\"", /* past U+10FFFF */
        "\"\xf5\x80\x80\x80\"", /* F5 lead */
        "\"\xff\"",
        "\"\x80\"",         /* lone continuation */
        "\"\xe4\xb8\"",     /* truncated */
        "\"\xe4\xb8x\"",    /* bad continuation */
        "\"\xf0\x9f\x98\"", /* truncated 4-byte */
        "\"\xc3\"",
    };
    for (size_t i = 0; i < sizeof(kBad) / sizeof(kBad[0]); i++)
        refuse(kBad[i], "invalid UTF-8");
}

static void test_json_non_ascii_outside_strings_is_refused(void **state)
{
    (void)state;
    refuse("[1,\xc2\xa0 2]", "expecting value"); /* NBSP is not whitespace */
    refuse("\xe4\xb8\xad", "expecting value");
}

static void test_json_utf8_bom_is_refused(void **state)
{
    (void)state;
    refuse("\xef\xbb\xbf{}", "UTF-8 BOM");
    refuse("\xef\xbb\xbf", "UTF-8 BOM");
}

/* The fast path reads eight bytes at a time: a special byte must be found at every offset. */
static void test_json_special_byte_is_found_at_every_offset_of_a_long_string(void **state)
{
    (void)state;
    char buf[64], want[256];
    for (size_t at = 1; at < 40; at++) {
        memset(buf, 'a', sizeof(buf));
        buf[0] = '"';
        buf[at] = '\x01';
        buf[50] = '"';
        refuse_bytes(buf, 51, "control character in string");
        buf[at] = '"'; /* the string ends early: trailing data */
        refuse_bytes(buf, 51, "trailing data");
        buf[at] = '\x7f'; /* DEL is an ordinary character */
        char *p = want;
        p += snprintf(p, sizeof(want), "s:");
        for (size_t i = 1; i < 50; i++)
            p += snprintf(p, (size_t)(want + sizeof(want) - p), "%02x", (unsigned char)buf[i]);
        expect_bytes(buf, 51, want);
        buf[at] = '\xc3'; /* a lead byte whose continuation is 'a' */
        refuse_bytes(buf, 51, "invalid UTF-8");
    }
}

static void test_json_long_plain_string_is_copied_whole(void **state)
{
    (void)state;
    size_t n = 100000;
    char *buf = malloc(n + 2);
    assert_non_null(buf);
    buf[0] = '"';
    for (size_t i = 1; i <= n; i++)
        buf[i] = (char)('a' + (i % 26));
    buf[n + 1] = '"';
    value_arena_t arena;
    value_t *v = NULL;
    const char *reason = NULL;
    value_arena_init(&arena, NULL);
    assert_true(decode_json((const uint8_t *)buf, n + 2, &arena, &v, &reason));
    assert_int_equal(v->type, VAL_STR);
    assert_int_equal(v->u.str.len, n);
    assert_memory_equal(v->u.str.data, buf + 1, n);
    value_arena_cleanup(&arena);
    free(buf);
}

/* ---- whitespace and trailing data -------------------------------------------------------- */

static void test_json_space_tab_lf_cr_are_whitespace_around_every_token(void **state)
{
    (void)state;
    expect(" \t\r\n{ \"a\" \n:\t[ 1 ,\r2 ] , \"b\":{ } }\r\n\t ", "d{s:61:[int,int],s:62:d{}}");
}

static void test_json_other_whitespace_characters_are_refused(void **state)
{
    (void)state;
    refuse("\f1", "expecting value");
    refuse("[\v1]", "expecting value");
    refuse("1\f", "trailing data");
}

static void test_json_anything_after_the_value_is_refused(void **state)
{
    (void)state;
    refuse("{} {}", "trailing data");
    refuse("1 2", "trailing data");
    refuse("[]]", "trailing data");
    refuse_bytes("{}\0", 3, "trailing data");
}

static void test_json_empty_or_blank_input_is_refused(void **state)
{
    (void)state;
    refuse("", "expecting value");
    refuse(" \n\t", "expecting value");
    refuse_bytes(NULL, 0, "expecting value");
}

/* ---- containers --------------------------------------------------------------------------- */

static void test_json_empty_containers_decode(void **state)
{
    (void)state;
    expect("[[],{},[{}]]", "[[],d{},[d{}]]");
}

/* Fuzz regression: an empty array before any value was stacked did arithmetic on NULL. */
static void test_json_empty_top_level_containers_decode(void **state)
{
    (void)state;
    expect("[]", "[]");
    expect("{}", "d{}");
    expect(" [ ] ", "[]");
}

static void test_json_object_keeps_keys_in_wire_order(void **state)
{
    (void)state;
    expect("{\"b\":1,\"a\":\"x\",\"c\":null}", "d{s:62:int,s:61:s:78,s:63:None}");
}

static void test_json_escaped_keys_are_decoded(void **state)
{
    (void)state;
    expect("{\"m\\u0065thod\":\"e\\u0063ho\"}", "d{" S_METHOD ":" S_ECHO "}");
}

static void test_json_malformed_arrays_are_refused(void **state)
{
    (void)state;
    refuse("[1,]", "expecting value");
    refuse("[,1]", "expecting value");
    refuse("[1 2]", "expecting ',' or ']'");
    refuse("[1", "unterminated array");
    refuse("[", "expecting value");
    refuse("[1}", "expecting ',' or ']'");
}

static void test_json_malformed_objects_are_refused(void **state)
{
    (void)state;
    refuse("{\"a\":1,}", "expecting string key");
    refuse("{,}", "expecting string key");
    refuse("{\"a\" 1}", "expecting ':'");
    refuse("{\"a\":}", "expecting value");
    refuse("{\"a\":1", "unterminated object");
    refuse("{\"a\":1 \"b\":2}", "expecting ',' or '}'");
    refuse("{", "expecting string key");
}

static void test_json_non_string_keys_are_refused(void **state)
{
    (void)state;
    refuse("{1:2}", "expecting string key");
    refuse("{null:2}", "expecting string key");
    refuse("{'a':2}", "expecting string key");
    refuse("{a:2}", "expecting string key");
    refuse("{[]:2}", "expecting string key");
}

/* ---- duplicate keys (PROTOCOL.md §9: json.loads keeps the last one) ---------------------- */

static void test_json_duplicate_key_is_refused(void **state)
{
    (void)state;
    refuse("{\"object\":\"thing\",\"method\":\"echo\",\"params\":[],\"kwargs\":{},"
           "\"method\":\"sub.echo\"}",
           "duplicate key");
}

static void test_json_duplicate_key_spelled_with_an_escape_is_refused(void **state)
{
    (void)state;
    refuse("{\"method\":\"echo\",\"m\\u0065thod\":\"sub.echo\"}", "duplicate key");
    refuse("{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}", "duplicate key");
}

static void test_json_duplicate_key_in_a_nested_object_is_refused(void **state)
{
    (void)state;
    refuse("{\"params\":[{\"a\":1,\"a\":2}]}", "duplicate key");
}

static void test_json_duplicate_among_many_keys_is_refused(void **state)
{
    (void)state;
    char buf[4096];
    size_t n = 0;
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "{");
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\"k%d\":%d,", i, i);
    char *dup = buf + n;
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\"k57\":0}");
    refuse_bytes(buf, n, "duplicate key");
    memcpy(dup, "\"k99x\":0}", 9); /* now all distinct */
    char *got = NULL;
    const char *reason = NULL;
    assert_true(decode_with(buf, n + 1, NULL, &got, &reason));
    free(got);
}

static void test_json_same_key_in_different_objects_is_accepted(void **state)
{
    (void)state;
    expect("[{\"a\":1},{\"a\":2}]", "[d{s:61:int},d{s:61:int}]");
    expect("{\"a\":{\"a\":1}}", "d{s:61:d{s:61:int}}");
}

static void test_json_keys_differing_only_by_length_or_case_are_distinct(void **state)
{
    (void)state;
    expect("{\"a\":1,\"aa\":2,\"A\":3,\"\":4}", "d{s:61:int,s:6161:int,s:41:int,s::int}");
}

/* ---- limits ------------------------------------------------------------------------------- */

static void nest(char *buf, size_t depth, char open, char close)
{
    for (size_t i = 0; i < depth; i++) {
        buf[i] = open;
        buf[2 * depth - 1 - i] = close;
    }
}

static void test_json_nesting_up_to_max_depth_is_accepted(void **state)
{
    (void)state;
    value_limits_t limits;
    char buf[64], *got = NULL;
    const char *reason = NULL;
    value_limits_default(&limits);
    limits.max_depth = 5;
    nest(buf, 5, '[', ']');
    assert_true(decode_with(buf, 10, &limits, &got, &reason));
    assert_string_equal(got, "[[[[[]]]]]");
    free(got);
}

static void test_json_nesting_deeper_than_max_depth_is_refused(void **state)
{
    (void)state;
    value_limits_t limits;
    char buf[64], *got = NULL;
    const char *reason = NULL;
    value_limits_default(&limits);
    limits.max_depth = 5;
    nest(buf, 6, '[', ']');
    assert_false(decode_with(buf, 12, &limits, &got, &reason));
    assert_string_equal(reason, "nesting too deep");
    const char *objects = "{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":1}}}}}}";
    assert_false(decode_with(objects, strlen(objects), &limits, &got, &reason));
    assert_string_equal(reason, "nesting too deep");
}

static void test_json_default_depth_refuses_a_deep_bomb_without_recursing(void **state)
{
    (void)state;
    size_t n = 1 << 20;
    char *buf = malloc(n);
    assert_non_null(buf);
    memset(buf, '[', n);
    refuse_bytes(buf, n, "nesting too deep");
    free(buf);
}

static void test_json_value_count_limit_is_exact(void **state)
{
    (void)state;
    value_limits_t limits;
    char *got = NULL;
    const char *reason = NULL;
    value_limits_default(&limits);
    limits.max_values = 4; /* the list and three items; a dict key counts as a value */
    assert_true(decode_with("[1,\"a\",null]", 12, &limits, &got, &reason));
    free(got);
    assert_false(decode_with("[1,\"a\",null,2]", 14, &limits, &got, &reason));
    assert_string_equal(reason, "too many values");
    assert_false(decode_with("{\"a\":1,\"b\":2}", 13, &limits, &got, &reason));
    assert_string_equal(reason, "too many values");
}

static void test_json_string_byte_limit_counts_decoded_bytes(void **state)
{
    (void)state;
    value_limits_t limits;
    char *got = NULL;
    const char *reason = NULL;
    value_limits_default(&limits);
    limits.max_string_bytes = 6;
    /* "\u00e9" is 6 bytes on the wire but 2 decoded: three of them fit exactly. */
    const char *fits = "[\"\\u00e9\\u00e9\",\"\\u00e9\"]";
    assert_true(decode_with(fits, strlen(fits), &limits, &got, &reason));
    free(got);
    const char *over = "[\"\\u00e9\\u00e9\",\"\\u00e9x\"]";
    assert_false(decode_with(over, strlen(over), &limits, &got, &reason));
    assert_string_equal(reason, "strings too long");
}

static void test_json_keys_count_against_the_string_byte_limit(void **state)
{
    (void)state;
    value_limits_t limits;
    char *got = NULL;
    const char *reason = NULL;
    value_limits_default(&limits);
    limits.max_string_bytes = 3;
    assert_false(decode_with("{\"ab\":\"cd\"}", 11, &limits, &got, &reason));
    assert_string_equal(reason, "strings too long");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_captured_echo_invoke_decodes_to_the_four_key_call_object),
        cmocka_unit_test(test_json_captured_connect_decodes_to_handshake_object),
        cmocka_unit_test(test_json_captured_batch_invoke_has_a_list_of_calls_and_null_kwargs),
        cmocka_unit_test(test_json_captured_dotted_method_name_is_decoded_with_its_dot),
        cmocka_unit_test(test_json_captured_compressed_invoke_decodes_after_inflating),
        cmocka_unit_test(test_json_every_captured_c2s_payload_is_accepted),
        cmocka_unit_test(test_json_true_false_null_are_bool_and_none),
        cmocka_unit_test(test_json_nan_and_both_infinities_are_floats),
        cmocka_unit_test(test_json_misspelled_literals_are_refused),
        cmocka_unit_test(test_json_integers_without_fraction_or_exponent_are_ints),
        cmocka_unit_test(test_json_fraction_or_exponent_makes_a_float),
        cmocka_unit_test(test_json_int_of_4300_digits_is_accepted_and_4301_refused),
        cmocka_unit_test(test_json_float_of_many_digits_is_accepted),
        cmocka_unit_test(test_json_numbers_outside_python_grammar_are_refused),
        cmocka_unit_test(test_json_simple_escapes_decode),
        cmocka_unit_test(test_json_u_escape_hex_digits_are_case_insensitive),
        cmocka_unit_test(test_json_u_escape_of_nul_gives_a_nul_character),
        cmocka_unit_test(test_json_surrogate_pair_escape_is_one_astral_code_point),
        cmocka_unit_test(test_json_lone_surrogate_escapes_stay_lone_as_generalized_utf8),
        cmocka_unit_test(test_json_high_surrogate_before_a_non_low_escape_stays_lone),
        cmocka_unit_test(test_json_high_surrogate_before_a_bad_u_escape_is_refused),
        cmocka_unit_test(test_json_raw_utf8_characters_are_kept),
        cmocka_unit_test(test_json_escaped_and_raw_forms_of_a_name_decode_alike),
        cmocka_unit_test(test_json_empty_string_decodes),
        cmocka_unit_test(test_json_raw_control_characters_in_strings_are_refused),
        cmocka_unit_test(test_json_unknown_escapes_are_refused),
        cmocka_unit_test(test_json_short_or_non_hex_u_escapes_are_refused),
        cmocka_unit_test(test_json_unterminated_strings_are_refused),
        cmocka_unit_test(test_json_ill_formed_utf8_in_strings_is_refused),
        cmocka_unit_test(test_json_non_ascii_outside_strings_is_refused),
        cmocka_unit_test(test_json_utf8_bom_is_refused),
        cmocka_unit_test(test_json_special_byte_is_found_at_every_offset_of_a_long_string),
        cmocka_unit_test(test_json_long_plain_string_is_copied_whole),
        cmocka_unit_test(test_json_space_tab_lf_cr_are_whitespace_around_every_token),
        cmocka_unit_test(test_json_other_whitespace_characters_are_refused),
        cmocka_unit_test(test_json_anything_after_the_value_is_refused),
        cmocka_unit_test(test_json_empty_or_blank_input_is_refused),
        cmocka_unit_test(test_json_empty_containers_decode),
        cmocka_unit_test(test_json_empty_top_level_containers_decode),
        cmocka_unit_test(test_json_object_keeps_keys_in_wire_order),
        cmocka_unit_test(test_json_escaped_keys_are_decoded),
        cmocka_unit_test(test_json_malformed_arrays_are_refused),
        cmocka_unit_test(test_json_malformed_objects_are_refused),
        cmocka_unit_test(test_json_non_string_keys_are_refused),
        cmocka_unit_test(test_json_duplicate_key_is_refused),
        cmocka_unit_test(test_json_duplicate_key_spelled_with_an_escape_is_refused),
        cmocka_unit_test(test_json_duplicate_key_in_a_nested_object_is_refused),
        cmocka_unit_test(test_json_duplicate_among_many_keys_is_refused),
        cmocka_unit_test(test_json_same_key_in_different_objects_is_accepted),
        cmocka_unit_test(test_json_keys_differing_only_by_length_or_case_are_distinct),
        cmocka_unit_test(test_json_nesting_up_to_max_depth_is_accepted),
        cmocka_unit_test(test_json_nesting_deeper_than_max_depth_is_refused),
        cmocka_unit_test(test_json_default_depth_refuses_a_deep_bomb_without_recursing),
        cmocka_unit_test(test_json_value_count_limit_is_exact),
        cmocka_unit_test(test_json_string_byte_limit_counts_decoded_bytes),
        cmocka_unit_test(test_json_keys_count_against_the_string_byte_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
