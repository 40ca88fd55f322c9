/* Unit tests for proxy/serpent.c: the serpent decoder (PROTOCOL.md §5.1, §9, §10).
 *
 * serpent.loads is a strict UTF-8 decode, a NUL check and ast.literal_eval; every expectation
 * below is what CPython 3.11 with serpent 1.41 builds from the same bytes (checked with
 * tests/tools/pydump.py). Three kinds of expectation:
 *   - expect_tree: Python accepts, and so does the decoder, with exactly this tree. Used for the
 *     captured Pyro4 4.82 payloads, for everything serpent.dumps writes (honest traffic, which
 *     must never be refused) and for the rest of the literal grammar the decoder implements;
 *   - expect_refused: Python raises, so the decoder must refuse;
 *   - expect_refused_or_tree: Python accepts a form the decoder may refuse (decode.h: \N{...};
 *     identifiers spelled with compatibility characters; nesting by parentheses alone); if it
 *     accepts, it must build exactly Python's tree.
 * Trees are written in a compact text (see render): s'…' is a str and b'…' bytes, shown as
 * their UTF-8 / raw bytes with anything outside printable ASCII (and ' and \) as \xNN; numbers
 * are typed only; dict pairs are in wire order, duplicates included; set members in the order
 * the decoder keeps them (the first of equal members, as Python). */
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

/* ---- rendering a tree ------------------------------------------------------------------ */

#define TREE_MAX 65536

typedef struct {
    char buf[TREE_MAX];
    size_t len;
} text_t;

static void put(text_t *t, const char *s)
{
    size_t n = strlen(s);
    if (n > TREE_MAX - 1 - t->len)
        fail_msg("rendered tree longer than %d bytes", TREE_MAX);
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

static void put_bytes(text_t *t, const char *prefix, const uint8_t *p, size_t n)
{
    put(t, prefix);
    for (size_t i = 0; i < n; i++) {
        char c[5];
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\'' && p[i] != '\\')
            snprintf(c, sizeof(c), "%c", p[i]);
        else
            snprintf(c, sizeof(c), "\\x%02x", p[i]);
        put(t, c);
    }
    put(t, "'");
}

static void render(text_t *t, const value_t *v)
{
    assert_non_null(v);
    switch (v->type) {
    case VAL_NONE:
        put(t, "None");
        return;
    case VAL_BOOL:
        put(t, v->u.boolean ? "True" : "False");
        return;
    case VAL_INT:
        put(t, "int");
        return;
    case VAL_FLOAT:
        put(t, "float");
        return;
    case VAL_COMPLEX:
        put(t, "complex");
        return;
    case VAL_ELLIPSIS:
        put(t, "...");
        return;
    case VAL_STR:
    case VAL_BYTES:
        assert_true(v->u.str.len == 0 || v->u.str.data != NULL);
        put_bytes(t, v->type == VAL_STR ? "s'" : "b'", v->u.str.data, v->u.str.len);
        return;
    case VAL_TUPLE:
    case VAL_LIST:
    case VAL_SET:
    case VAL_FROZENSET:
        put(t, v->type == VAL_TUPLE ? "(" : v->type == VAL_LIST ? "[" : "set{");
        for (size_t i = 0; i < v->u.seq.n; i++) {
            if (i)
                put(t, ",");
            render(t, v->u.seq.items[i]);
        }
        if (v->type == VAL_TUPLE && v->u.seq.n == 1)
            put(t, ",");
        put(t, v->type == VAL_TUPLE ? ")" : v->type == VAL_LIST ? "]" : "}");
        return;
    case VAL_DICT:
        put(t, "{");
        for (size_t i = 0; i < v->u.dict.n; i++) {
            if (i)
                put(t, ",");
            render(t, v->u.dict.keys[i]);
            put(t, ":");
            render(t, v->u.dict.values[i]);
        }
        put(t, "}");
        return;
    case VAL_OTHER:
        put(t, "?");
        return;
    }
    fail_msg("value type %d out of range", (int)v->type);
}

/* ---- decoding ------------------------------------------------------------------------- */

typedef struct {
    int ok;
    const char *reason;
    text_t tree;
} result_t;

static result_t g_result;

/* decode_with copies |len| bytes of |in| into a buffer of exactly that size (so that ASan sees
 * any read past the end), decodes it with |limits| (NULL: the defaults) and renders the
 * outcome into g_result. */
static const result_t *decode_with(const void *in, size_t len, const value_limits_t *limits)
{
    uint8_t *copy = malloc(len ? len : 1);
    value_arena_t arena;
    value_t *out = NULL;
    const char *reason = NULL;

    assert_non_null(copy);
    if (len)
        memcpy(copy, in, len);
    value_arena_init(&arena, limits);
    memset(&g_result, 0, sizeof(g_result));
    g_result.ok = decode_serpent(copy, len, &arena, &out, &reason);
    if (g_result.ok) {
        render(&g_result.tree, out);
    } else {
        /* every refusal names its reason with a static, non-empty string */
        assert_non_null(reason);
        assert_true(reason[0] != '\0');
        g_result.reason = reason;
    }
    value_arena_cleanup(&arena);
    free(copy);
    return &g_result;
}

static void expect_tree_n(const void *in, size_t len, const char *tree)
{
    const result_t *r = decode_with(in, len, NULL);
    if (!r->ok)
        fail_msg("refused (%s), Python builds %s", r->reason, tree);
    assert_string_equal(r->tree.buf, tree);
}

static void expect_refused_n(const void *in, size_t len)
{
    const result_t *r = decode_with(in, len, NULL);
    if (r->ok)
        fail_msg("accepted as %s, but Python raises", r->tree.buf);
}

static void expect_refused_or_tree_n(const void *in, size_t len, const char *tree)
{
    const result_t *r = decode_with(in, len, NULL);
    if (r->ok)
        assert_string_equal(r->tree.buf, tree);
}

static void expect_reason_n(const void *in, size_t len, const char *reason)
{
    const result_t *r = decode_with(in, len, NULL);
    if (r->ok)
        fail_msg("accepted as %s, but Python raises", r->tree.buf);
    assert_string_equal(r->reason, reason);
}

/* String-literal arguments keep embedded NULs: the length is the literal's. */
#define expect_tree(lit, tree)            expect_tree_n(lit, sizeof(lit) - 1, tree)
#define expect_refused(lit)               expect_refused_n(lit, sizeof(lit) - 1)
#define expect_refused_or_tree(lit, tree) expect_refused_or_tree_n(lit, sizeof(lit) - 1, tree)
#define expect_reason(lit, reason)        expect_reason_n(lit, sizeof(lit) - 1, reason)

#define HDR "# serpent utf-8 python3.2\n"

/* repeat returns |prefix| + |unit| x |n| + |suffix| in a malloc'd buffer; *len is its length. */
static char *repeat(const char *prefix, const char *unit, size_t n, const char *suffix, size_t *len)
{
    size_t p = strlen(prefix), u = strlen(unit), s = strlen(suffix);
    char *buf = malloc(p + u * n + s + 1);
    assert_non_null(buf);
    memcpy(buf, prefix, p);
    for (size_t i = 0; i < n; i++)
        memcpy(buf + p + i * u, unit, u);
    memcpy(buf + p + u * n, suffix, s + 1);
    *len = p + u * n + s;
    return buf;
}

/* ---- captured Pyro4 4.82 payloads ----------------------------------------------------- */

/* read_payload returns the payload of the capture tests/vectors/pyro4/serpent/|rel|: the
 * bytes after the 24-byte header and the annotations (length at header offset 0x12),
 * inflated when the COMPRESSED flag (0x02) is set, as the daemon does before serpent.loads. */
static uint8_t *read_payload(const char *rel, size_t *len)
{
    char path[512];
    static uint8_t frame[1 << 16];
    snprintf(path, sizeof(path), "%s/vectors/pyro4/serpent/%s", TEST_DATA_DIR, rel);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    size_t n = fread(frame, 1, sizeof(frame), f);
    fclose(f);
    assert_true(n >= 24);
    unsigned flags = ((unsigned)frame[8] << 8) | frame[9];
    size_t data_len = ((size_t)frame[12] << 24) | ((size_t)frame[13] << 16) |
                      ((size_t)frame[14] << 8) | frame[15];
    size_t ann = ((size_t)frame[0x12] << 8) | frame[0x13];
    assert_int_equal(n, 24 + ann + data_len);
    uint8_t *p;
    if (flags & 0x02) {
        uLongf cap = 1 << 20;
        p = malloc(cap);
        assert_non_null(p);
        assert_int_equal(uncompress(p, &cap, frame + 24 + ann, data_len), Z_OK);
        *len = cap;
    } else {
        p = malloc(data_len ? data_len : 1);
        assert_non_null(p);
        memcpy(p, frame + 24 + ann, data_len);
        *len = data_len;
    }
    return p;
}

static void expect_capture(const char *rel, const char *tree)
{
    size_t len;
    uint8_t *p = read_payload(rel, &len);
    expect_tree_n(p, len, tree);
    free(p);
}

static void test_captured_connect_handshake_is_a_dict(void **state)
{
    (void)state;
    expect_capture("echo/00_c2s_CONNECT.bin", "{s'handshake':s'hello',s'object':s'thing'}");
}

static void test_captured_connect_without_metadata_has_no_object_key(void **state)
{
    (void)state;
    expect_capture("no_metadata/00_c2s_CONNECT.bin", "{s'handshake':s'hello'}");
}

static void test_captured_echo_invoke_is_the_call_tuple(void **state)
{
    (void)state;
    expect_capture("echo/01_c2s_INVOKE.bin", "(s'thing',s'echo',(s'hello',),{})");
}

static void test_captured_batch_invoke_lists_every_call(void **state)
{
    (void)state;
    expect_capture("batch/01_c2s_INVOKE.bin",
                   "(s'thing',s'<batch>',[(s'echo',(int,),{}),(s'echo',(s'two',),{})],None)");
}

static void test_captured_getattr_invoke_has_none_kwargs(void **state)
{
    (void)state;
    expect_capture("getattr/01_c2s_INVOKE.bin", "(s'thing',s'__getattr__',(s'value',),None)");
}

static void test_captured_setattr_invoke_carries_name_and_value(void **state)
{
    (void)state;
    expect_capture("setattr/01_c2s_INVOKE.bin", "(s'thing',s'__setattr__',(s'value',int),None)");
}

static void test_captured_oneway_invoke(void **state)
{
    (void)state;
    expect_capture("oneway/01_c2s_INVOKE.bin", "(s'thing',s'fire',(s'bang',),{})");
}

static void test_captured_blob_invoke_has_a_dict_for_vargs(void **state)
{
    (void)state;
    expect_capture("blob/01_c2s_INVOKE.bin", "(s'thing',s'blob',{s'k':[int,int,int]},{})");
}

static void test_captured_compressed_invoke_decodes_after_inflating(void **state)
{
    size_t len;
    (void)state;
    uint8_t *p = read_payload("compressed/01_c2s_INVOKE.bin", &len);
    const result_t *r = decode_with(p, len, NULL);
    free(p);
    assert_true(r->ok);
    assert_memory_equal(r->tree.buf, "(s'thing',s'echo',(s'AAAA", 25);
    assert_int_equal(r->tree.len, strlen("(s'thing',s'echo',(s'',),{})") + 1000);
}

static void test_captured_dotted_invoke_keeps_the_dot(void **state)
{
    (void)state;
    expect_capture("dotted/01_c2s_INVOKE.bin", "(s'thing',s'sub.echo',(s'x',),{})");
    expect_capture("dotted_client_attr/01_c2s_INVOKE.bin", "(s'thing',s'sub.echo',(s'y',),{})");
}

static void test_captured_private_invoke(void **state)
{
    (void)state;
    expect_capture("private/01_c2s_INVOKE.bin", "(s'thing',s'_private',(),{})");
}

static void test_captured_stream_invoke_has_a_list_for_vargs(void **state)
{
    (void)state;
    expect_capture("stream/02_c2s_INVOKE.bin", "(s'Pyro.Daemon',s'get_next_stream_item',"
                                               "[s'6a5c8023-36cc-4848-86bb-e3551e15300f'],{})");
    expect_capture("stream/04_c2s_INVOKE.bin", "(s'Pyro.Daemon',s'close_stream',"
                                               "[s'6a5c8023-36cc-4848-86bb-e3551e15300f'],{})");
}

static void test_captured_daemon_object_invoke(void **state)
{
    (void)state;
    expect_capture("daemon_object/02_c2s_INVOKE.bin",
                   "(s'Pyro.Daemon',s'get_metadata',(s'thing',),{})");
}

static void test_captured_metadata_result_has_sets(void **state)
{
    (void)state;
    expect_capture("daemon_object/02_s2c_RESULT.bin",
                   "{s'methods':set{s'echo',s'fire',s'gen',s'blob'},s'oneway':set{s'fire'},"
                   "s'attrs':set{s'value'}}");
}

static void test_captured_exception_result_with_traceback_decodes(void **state)
{
    size_t len;
    (void)state;
    /* serpent's exception dict: nested quotes of both kinds, \n escapes, a True (§10) */
    uint8_t *p = read_payload("private/01_s2c_RESULT.bin", &len);
    const result_t *r = decode_with(p, len, NULL);
    free(p);
    assert_true(r->ok);
    assert_non_null(strstr(r->tree.buf, "{s'__class__':s'builtins.AttributeError',"
                                        "s'__exception__':True,s'args':(s'attempt to access "
                                        "private attribute \\x27_private\\x27',),"));
    assert_non_null(strstr(r->tree.buf, "getAttribute\\x0a"));
}

static void test_every_captured_serpent_message_decodes(void **state)
{
    static const char *const scenarios[] = {
        "batch",   "blob",    "compressed",  "daemon_object", "dotted", "dotted_client_attr",
        "echo",    "getattr", "no_metadata", "oneway",        "ping",   "private",
        "setattr", "stream",  "stream_full",
    };
    static const char *const files[] = {
        "00_c2s_CONNECT.bin", "00_s2c_CONNECTOK.bin", "01_c2s_INVOKE.bin", "01_s2c_RESULT.bin",
        "02_c2s_INVOKE.bin",  "02_s2c_RESULT.bin",    "03_c2s_INVOKE.bin", "03_s2c_RESULT.bin",
        "04_c2s_INVOKE.bin",  "04_s2c_RESULT.bin",
    };
    size_t decoded = 0;
    (void)state;
    for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
        for (size_t j = 0; j < sizeof(files) / sizeof(files[0]); j++) {
            char rel[128], path[512];
            snprintf(rel, sizeof(rel), "%s/%s", scenarios[i], files[j]);
            snprintf(path, sizeof(path), "%s/vectors/pyro4/serpent/%s", TEST_DATA_DIR, rel);
            FILE *f = fopen(path, "rb");
            if (f == NULL)
                continue;
            fclose(f);
            size_t len;
            uint8_t *p = read_payload(rel, &len);
            const result_t *r = decode_with(p, len, NULL);
            free(p);
            if (!r->ok)
                fail_msg("%s refused: %s", rel, r->reason);
            decoded++;
        }
    }
    assert_true(decoded >= 60); /* 72 serpent messages are captured (PING frames aside) */
}

/* ---- what serpent.dumps writes (honest traffic): must be accepted --------------------- */

static void test_header_comment_line_then_value(void **state)
{
    (void)state;
    expect_tree(HDR "('thing','echo',(),{})", "(s'thing',s'echo',(),{})");
}

static void test_header_from_older_serpent_versions_is_only_a_comment(void **state)
{
    (void)state;
    /* PROTOCOL.md §5.1: older serpents wrote other version tags [live: serpent_other_header] */
    expect_tree("# serpent utf-8 python2.6\n('thing','echo',(),{})", "(s'thing',s'echo',(),{})");
    expect_tree("# serpent utf-8 python3.2 and more\n1", "int");
}

static void test_missing_header_is_accepted(void **state)
{
    (void)state;
    /* PROTOCOL.md §5.1 [live: serpent_no_header] */
    expect_tree("('thing','echo',(),{})", "(s'thing',s'echo',(),{})");
}

static void test_str_escapes_that_serpent_writes(void **state)
{
    (void)state;
    /* repr(): \\ \' \t \n \r and \xNN for other controls, DEL and C1 */
    expect_tree(HDR "'\\\\\\'\\t\\n\\r\\x00\\x07\\x1b\\x7f\\x80\\x9f\\xa0\\xad'",
                "s'\\x5c\\x27\\x09\\x0a\\x0d\\x00\\x07\\x1b\\x7f\\xc2\\x80\\xc2\\x9f\\xc2\\xa0"
                "\\xc2\\xad'");
}

static void test_str_with_single_quote_is_double_quoted(void **state)
{
    (void)state;
    expect_tree(HDR "\"a'b\"", "s'a\\x27b'");
    expect_tree(HDR "'a\\'\"b'", "s'a\\x27\"b'");
}

static void test_printable_non_ascii_is_written_raw(void **state)
{
    (void)state;
    expect_tree(HDR "'caf\xc3\xa9 \xe4\xb8\xad \xf0\x9d\x84\x9e'",
                "s'caf\\xc3\\xa9 \\xe4\\xb8\\xad \\xf0\\x9d\\x84\\x9e'");
}

static void test_u_escapes_that_serpent_writes(void **state)
{
    (void)state;
    expect_tree(HDR "'\\u2028\\u200b\\ufeff\\U000e0001\\U0010ffff'",
                "s'\\xe2\\x80\\xa8\\xe2\\x80\\x8b\\xef\\xbb\\xbf\\xf3\\xa0\\x80\\x81\\xf4\\x8f\\xbf"
                "\\xbf'");
}

static void test_lone_surrogate_escape_is_kept_as_generalized_utf8(void **state)
{
    (void)state;
    expect_tree(HDR "'\\ud800'", "s'\\xed\\xa0\\x80'");
    expect_tree(HDR "'x\\udfffy'", "s'x\\xed\\xbf\\xbfy'");
}

static void test_escaped_surrogate_pair_stays_two_code_points(void **state)
{
    (void)state;
    /* Python does not join '\ud83d\ude00' into U+1F600: two lone surrogates */
    expect_tree(HDR "'\\ud83d\\ude00'", "s'\\xed\\xa0\\xbd\\xed\\xb8\\x80'");
}

static void test_empty_string(void **state)
{
    (void)state;
    expect_tree(HDR "''", "s''");
}

static void test_integers_that_serpent_writes(void **state)
{
    (void)state;
    expect_tree(HDR "(0,-5,7,100000000000000000000000000000000000000000000000000)",
                "(int,int,int,int)");
}

static void test_decimal_int_of_4300_digits_is_accepted(void **state)
{
    size_t len;
    (void)state;
    /* CPython 3.11 refuses decimal literals longer than 4300 digits; 4300 is still fine and
     * serpent can write it (str(int) has the same limit) */
    char *in = repeat(HDR "[", "1", 4300, "]", &len);
    expect_tree_n(in, len, "[int]");
    free(in);
}

static void test_floats_that_serpent_writes(void **state)
{
    (void)state;
    expect_tree(HDR "(1.5,-0.0,1e+300,5e-324,1.7976931348623157e+308,0.1,-2.25)",
                "(float,float,float,float,float,float,float)");
}

static void test_infinity_is_written_as_an_overflowing_literal(void **state)
{
    (void)state;
    expect_tree(HDR "[1e30000,-1e30000]", "[float,float]");
}

static void test_nan_is_written_as_a_class_dict(void **state)
{
    (void)state;
    expect_tree(HDR "{'__class__':'float','value':'nan'}",
                "{s'__class__':s'float',s'value':s'nan'}");
}

static void test_complex_as_serpent_writes_it(void **state)
{
    (void)state;
    expect_tree(HDR "[(1.0+2.0j),(1.0-2.0j),(-1.5+0.0j),(-1.0+1e30000j),(1e30000-1e30000j)]",
                "[complex,complex,complex,complex,complex]");
}

static void test_complex_with_negative_zero_imaginary_is_refused(void **state)
{
    (void)state;
    /* serpent writes complex(1, -0.0) as (1.0+-0.0j): a UnaryOp right operand, which
     * literal_eval refuses — so does the daemon */
    expect_refused(HDR "(1.0+-0.0j)");
}

static void test_constants_true_false_none(void **state)
{
    (void)state;
    expect_tree(HDR "(True,False,None)", "(True,False,None)");
}

static void test_ellipsis_as_serpent_writes_it_is_refused(void **state)
{
    (void)state;
    /* serpent writes repr(...), the name Ellipsis: literal_eval refuses names */
    expect_refused(HDR "Ellipsis");
}

static void test_empty_containers(void **state)
{
    (void)state;
    expect_tree(HDR "((),[],{})", "((),[],{})");
}

static void test_one_element_tuple(void **state)
{
    (void)state;
    expect_tree(HDR "(1,)", "(int,)");
}

static void test_set_literal(void **state)
{
    (void)state;
    expect_tree(HDR "{1,'a',(2,'b'),None,1.5,(1+2j)}",
                "set{int,s'a',(int,s'b'),None,float,complex}");
}

static void test_nested_containers(void **state)
{
    (void)state;
    expect_tree(HDR "[1,[2,[3,{'a':{'b':()}}]],({},)]", "[int,[int,[int,{s'a':{s'b':()}}]],({},)]");
}

static void test_dict_keys_of_every_hashable_kind(void **state)
{
    (void)state;
    expect_tree(HDR "{1:'i',1.5:'f',False:'b',None:'n',(1,'t'):'t','s':'s',(1+2j):'c'}",
                "{int:s'i',float:s'f',False:s'b',None:s'n',(int,s't'):s't',s's':s's',"
                "complex:s'c'}");
}

static void test_bytes_as_the_base64_dict(void **state)
{
    (void)state;
    expect_tree(HDR "{'data':'AP8=','encoding':'base64'}",
                "{s'data':s'AP8=',s'encoding':s'base64'}");
}

static void test_bytes_literal_with_bytes_repr(void **state)
{
    (void)state;
    /* serpent.dumps(b"ab'\0\xff\t", bytes_repr=True), as Pyro5 may send (PROTOCOL.md §5.1) */
    expect_tree(HDR "b\"ab'\\x00\\xff\\t\"", "b'ab\\x27\\x00\\xff\\x09'");
    expect_tree(HDR "b''", "b''");
}

static void test_indented_output(void **state)
{
    (void)state;
    /* serpent.dumps(..., indent=True): newlines and indentation inside brackets */
    expect_tree(HDR "{\n  'a': (\n    1,\n    {\n      2,\n      3\n    }\n  ),\n  'b': [\n"
                    "    1,\n    2\n  ]\n}",
                "{s'a':(int,set{int,int}),s'b':[int,int]}");
}

static void test_exception_class_dict(void **state)
{
    (void)state;
    expect_tree(HDR "{'__class__':'builtins.ValueError','__exception__':True,'args':('x',),"
                    "'attributes':{}}",
                "{s'__class__':s'builtins.ValueError',s'__exception__':True,s'args':(s'x',),"
                "s'attributes':{}}");
}

static void test_empty_set_is_written_as_an_empty_tuple(void **state)
{
    (void)state;
    expect_tree(HDR "('thing','m',((),),{})", "(s'thing',s'm',((),),{})");
}

static void test_large_honest_strings_are_accepted(void **state)
{
    size_t len;
    value_arena_t arena;
    value_t *out = NULL;
    const char *reason = NULL;
    (void)state;
    char *in = repeat(HDR "('thing','echo',('", "A", 1000000, "',),{})", &len);
    value_arena_init(&arena, NULL);
    assert_true(decode_serpent((const uint8_t *)in, len, &arena, &out, &reason));
    assert_int_equal(out->type, VAL_TUPLE);
    assert_int_equal(out->u.seq.n, 4);
    assert_int_equal(out->u.seq.items[2]->u.seq.items[0]->u.str.len, 1000000);
    value_arena_cleanup(&arena);
    free(in);
}

/* ---- header comment, whitespace and line endings -------------------------------------- */

static void test_more_comment_lines_before_the_value(void **state)
{
    (void)state;
    expect_tree("# one\n#\n# two\n(1,)", "(int,)");
}

static void test_comment_after_the_value(void **state)
{
    (void)state;
    expect_tree(HDR "(1,) # trailing", "(int,)");
    expect_tree(HDR "(1,)\n# trailing\n", "(int,)");
}

static void test_trailing_newlines(void **state)
{
    (void)state;
    expect_tree(HDR "(1,)\n\n", "(int,)");
    expect_tree(HDR "(1,)\r\n", "(int,)");
}

static void test_leading_spaces_and_tabs_are_stripped(void **state)
{
    (void)state;
    /* literal_eval strips " \t" from the whole text (PROTOCOL.md §5.1) */
    expect_tree("  \t(1,)", "(int,)");
    expect_tree("   " HDR "(1,)", "(int,)");
}

static void test_indentation_after_a_comment_line_is_refused(void **state)
{
    (void)state;
    /* IndentationError (PROTOCOL.md §5.1) */
    expect_reason(HDR " ('thing','echo',(),{})", "unexpected indent");
    expect_refused(HDR "\t('thing','echo',(),{})");
    expect_refused("\n  1");
}

static void test_indented_comment_and_blank_lines_are_not_indentation(void **state)
{
    (void)state;
    expect_tree(HDR "    # more\n1", "int");
    expect_tree(HDR "   \n1", "int");
    expect_tree("'x'\n  \n\t# c\n", "s'x'");
}

static void test_whitespace_only_last_line_is_refused(void **state)
{
    (void)state;
    /* the tokenizer reads trailing indentation without a newline as an indent */
    expect_refused(HDR "1\n    ");
    expect_refused(HDR "1\n\t");
}

static void test_crlf_line_endings(void **state)
{
    (void)state;
    expect_tree("# serpent utf-8 python3.2\r\n(1,\r\n2)", "(int,int)");
}

static void test_lone_cr_ends_a_line(void **state)
{
    (void)state;
    /* compile() turns a lone \r into \n: the header comment ends there */
    expect_tree("# serpent utf-8 python3.2\r(1,)", "(int,)");
    expect_tree("('a',\r'b')", "(s'a',s'b')");
    expect_refused("# a\rb\n1"); /* b is a name on a line of its own */
}

static void test_form_feed_resets_indentation(void **state)
{
    (void)state;
    expect_tree("\x0c(1,)", "(int,)");
    expect_tree(HDR " \x0c(1,)", "(int,)");
    expect_tree("\n \x0c'x'", "s'x'");
    expect_tree("(1\x0c,2)", "(int,int)");
    expect_tree("1\x0c", "int");
    expect_tree("'x'\n\x0c", "s'x'");
    expect_refused("\x0c (1,)");
    expect_refused(HDR "\x0c (1,)");
}

static void test_line_continuation_at_top_level(void **state)
{
    (void)state;
    expect_tree("1, \\\n2", "(int,int)");
    expect_tree("\\\n1", "int");
    expect_tree("1 + \\\n  2j", "complex");
    expect_refused(HDR "\\\n  1"); /* indentation after the joined comment line */
    expect_refused("\\\n 'x'");
    expect_refused("1 \\"); /* continuation at end of input */
    expect_reason("1 \\ \n", "unexpected character after line continuation");
    expect_refused("1 \\\n"); /* EOF right after the joined line */
    expect_tree("1 \\\n\n", "int");
}

static void test_newlines_inside_brackets_are_whitespace(void **state)
{
    (void)state;
    expect_tree("(1,\n\n     2 # c\n  ,3\n)", "(int,int,int)");
    expect_tree("(-\n1)", "int");
    expect_refused("-\n1");
}

static void test_two_top_level_lines_are_refused(void **state)
{
    (void)state;
    expect_refused("1\n2");
    expect_refused("1,\n2");
    expect_refused("'a'\n'b'");
}

static void test_empty_and_comment_only_inputs_are_refused(void **state)
{
    (void)state;
    expect_refused("");
    expect_refused("   ");
    expect_refused("\n");
    expect_refused("\n\n");
    expect_refused("# only a comment");
    expect_refused(HDR);
}

static void test_trailing_tokens_are_refused(void **state)
{
    (void)state;
    expect_refused("1 2");
    expect_refused("(1,) x");
    expect_refused("1;");
    expect_refused("(1,))");
    expect_refused("'a' 1");
}

static void test_byte_order_mark_is_refused(void **state)
{
    (void)state;
    /* codecs.decode(..., "utf-8") keeps U+FEFF; the tokenizer calls it non-printable */
    expect_refused("\xef\xbb\xbf" HDR "1");
    expect_refused(HDR "\xef\xbb\xbf"
                       "1");
}

static void test_non_printable_characters_outside_strings_are_refused(void **state)
{
    (void)state;
    expect_refused("\x0b"
                   "1");
    expect_refused("1\x0b");
    expect_refused("1\x1c");
    expect_refused("1\xc2\xa0"); /* NO-BREAK SPACE is not whitespace to the tokenizer */
}

static void test_coding_cookie_is_ignored(void **state)
{
    (void)state;
    /* the text is already decoded: a cookie is only a comment */
    expect_tree("# -*- coding: latin-1 -*-\n'\xc3\xa9'", "s'\\xc3\\xa9'");
    expect_tree("# coding: foobar\n1", "int");
}

/* ---- NUL and UTF-8 -------------------------------------------------------------------- */

static void test_nul_anywhere_is_refused(void **state)
{
    (void)state;
    expect_reason("'a\0b'", "NUL character");
    expect_reason("# \0\n1", "NUL character");
    expect_refused("1\0");
    expect_refused("\0");
}

static void test_escaped_nul_in_a_string_is_accepted(void **state)
{
    (void)state;
    expect_tree(HDR "'a\\x00b'", "s'a\\x00b'");
    expect_tree("'\\0'", "s'\\x00'");
}

static void test_invalid_utf8_is_refused(void **state)
{
    (void)state;
    expect_reason("'sub\xc0\xae"
                  "echo'",
                  "invalid UTF-8");       /* overlong '.' (PROTOCOL.md §9) */
    expect_refused("'\xc0\x80'");         /* overlong NUL */
    expect_refused("'\xed\xa0\x80'");     /* encoded surrogate */
    expect_refused("'\xf4\x90\x80\x80'"); /* above U+10FFFF */
    expect_refused("'\xe2\x82'");         /* truncated sequence */
    expect_refused("'\x80'");             /* lone continuation byte */
    expect_refused("'\xff'");
    expect_refused("'\xf8\x88\x80\x80\x80'");
    expect_refused("#\xff\n1"); /* the whole text is decoded, comments too */
    expect_refused("'a'\xe2");
}

static void test_non_ascii_in_comments_is_fine(void **state)
{
    (void)state;
    expect_tree("# caf\xc3\xa9 \xe2\x80\xa8\n1", "int");
}

/* ---- string prefixes and quotes (PROTOCOL.md §9) -------------------------------------- */

static void test_u_prefix_is_a_plain_str(void **state)
{
    (void)state;
    expect_tree("u'sub.echo'", "s'sub.echo'");
    expect_tree("U\"a\\x2e\"", "s'a.'");
}

static void test_raw_prefix_keeps_escapes_literally(void **state)
{
    (void)state;
    /* r'sub\x2eecho' is the 11-character name sub\x2eecho, no dot (PROTOCOL.md §9) */
    expect_tree("r'sub\\x2eecho'", "s'sub\\x5cx2eecho'");
    expect_tree("R'\\N{FULL STOP}'", "s'\\x5cN{FULL STOP}'");
    expect_tree("r'\\''", "s'\\x5c\\x27'");
    expect_tree("r'\\\\'", "s'\\x5c\\x5c'");
}

static void test_raw_backslash_newline_is_kept(void **state)
{
    (void)state;
    expect_tree("r'a\\\nb'", "s'a\\x5c\\x0ab'");
    expect_tree("r'a\\\r\nb'", "s'a\\x5c\\x0ab'");
}

static void test_raw_string_ending_in_backslash_is_unterminated(void **state)
{
    (void)state;
    expect_reason("r'\\'", "unterminated string literal");
}

static void test_bytes_prefixes(void **state)
{
    (void)state;
    expect_tree("b'sub.echo'", "b'sub.echo'");
    expect_tree("B'a'", "b'a'");
    expect_tree("br'\\x2e'", "b'\\x5cx2e'");
    expect_tree("rb'\\x'", "b'\\x5cx'");
    expect_tree("Rb'a'", "b'a'");
    expect_tree("bR'a'", "b'a'");
    expect_tree("BR'a'", "b'a'");
}

static void test_bytes_with_non_ascii_characters_are_refused(void **state)
{
    (void)state;
    expect_reason("b'caf\xc3\xa9'", "bytes can only contain ASCII characters");
    expect_refused("b'\\\xc3\xa9'");
}

static void test_f_strings_are_refused(void **state)
{
    (void)state;
    /* JoinedStr, which literal_eval refuses even without placeholders */
    expect_reason("f'a'", "f-strings are not literals");
    expect_refused("F'a'");
    expect_refused("rf'a'");
    expect_refused("fR'a'");
    expect_refused("'a' f'b'");
}

static void test_invalid_prefixes_are_refused(void **state)
{
    (void)state;
    expect_refused("ur'a'");
    expect_refused("ub'a'");
    expect_refused("bu'a'");
    expect_refused("uu'a'");
    expect_refused("rr'a'");
    expect_refused("x'a'");
    expect_refused("r 'a'");
}

static void test_triple_quoted_strings(void **state)
{
    (void)state;
    expect_tree("'''a'b\"c'''", "s'a\\x27b\"c'");
    expect_tree("\"\"\"a\"b'c\"\"\"", "s'a\"b\\x27c'");
    expect_tree("'''a\nb'''", "s'a\\x0ab'");
    expect_tree("''''''", "s''");
    expect_tree("'''a''b'''", "s'a\\x27\\x27b'");
    expect_tree("'''a\\''''", "s'a\\x27'");
    expect_tree("\"\"\"a\\\"\"\"\"", "s'a\"'");
}

static void test_triple_quoted_line_endings_become_newlines(void **state)
{
    (void)state;
    expect_tree("'''a\r\nb'''", "s'a\\x0ab'");
    expect_tree("'''a\rb'''", "s'a\\x0ab'");
    expect_tree("'''a\r\r\nb'''", "s'a\\x0a\\x0ab'");
    expect_tree("r'''a\r\nb'''", "s'a\\x0ab'");
}

static void test_raw_control_characters_inside_strings(void **state)
{
    (void)state;
    expect_tree("'\x01\x0b\x1b\x7f\x0c\t'", "s'\\x01\\x0b\\x1b\\x7f\\x0c\\x09'");
    expect_tree("'\xe2\x80\xa8'", "s'\\xe2\\x80\\xa8'");
}

static void test_unterminated_strings_are_refused(void **state)
{
    (void)state;
    expect_refused("'a\nb'");
    expect_reason("'a\rb'", "unterminated string literal");
    expect_refused("'abc");
    expect_refused("'abc\\'");
    expect_refused("'\\");
    expect_refused("''''");
    expect_refused("'''''''");
    expect_refused("'''abc''");
    expect_refused("\"\"\"a\"\"\"\"");
}

/* ---- escapes (PROTOCOL.md §9) --------------------------------------------------------- */

static void test_every_spelling_of_the_dot(void **state)
{
    (void)state;
    expect_tree("'sub\\x2eecho'", "s'sub.echo'");
    expect_tree("'sub\\x2Eecho'", "s'sub.echo'");
    expect_tree("'sub\\56echo'", "s'sub.echo'");
    expect_tree("'sub\\056echo'", "s'sub.echo'");
    expect_tree("'sub\\u002eecho'", "s'sub.echo'");
    expect_tree("'sub\\U0000002eecho'", "s'sub.echo'");
    expect_tree("'Pyro\\x2eDaemon'", "s'Pyro.Daemon'");
    expect_tree("'__g\\x65tattr__'", "s'__getattr__'");
}

static void test_named_escapes_decode_or_are_refused(void **state)
{
    (void)state;
    /* decode.h: \N{...} may be refused; if decoded, names are case-insensitive */
    expect_refused_or_tree("'sub\\N{FULL STOP}echo'", "s'sub.echo'");
    expect_refused_or_tree("'sub\\N{full stop}echo'", "s'sub.echo'");
    expect_refused_or_tree("'\\N{LATIN SMALL LETTER A}'", "s'a'");
}

static void test_malformed_named_escapes_are_refused(void **state)
{
    (void)state;
    expect_refused("'sub\\N{PERIOD}echo'"); /* no such name */
    expect_refused("'\\N{}'");
    expect_refused("'\\N'");
    expect_refused("u'\\N'");
    expect_refused("'\\N{FULL STOP'");
    expect_refused("'\\N{LATIN CAPITAL LETTER A WITH MACRON AND GRAVE}'"); /* named sequence */
}

static void test_single_character_escapes(void **state)
{
    (void)state;
    expect_tree("'\\a\\b\\f\\n\\r\\t\\v\\\\\\'\\\"'",
                "s'\\x07\\x08\\x0c\\x0a\\x0d\\x09\\x0b\\x5c\\x27\"'");
}

static void test_octal_escapes_read_up_to_three_digits(void **state)
{
    (void)state;
    expect_tree("'\\1234'", "s'S4'");
    expect_tree("'\\101\\1011\\7'", "s'AA1\\x07'");
    expect_tree("'\\0'", "s'\\x00'");
    expect_tree("'\\00x'", "s'\\x00x'");
}

static void test_octal_escapes_above_0377_in_str(void **state)
{
    (void)state;
    expect_tree("'\\400'", "s'\\xc4\\x80'");
    expect_tree("'\\777'", "s'\\xc7\\xbf'");
}

static void test_octal_escapes_above_0377_in_bytes_wrap(void **state)
{
    (void)state;
    /* CPython 3.11 keeps the low 8 bits: b'\400' == b'\x00' */
    expect_tree("b'\\400'", "b'\\x00'");
    expect_tree("b'\\777'", "b'\\xff'");
    expect_tree("b'\\x2e\\56\\777'", "b'..\\xff'");
}

static void test_hex_escapes(void **state)
{
    (void)state;
    expect_tree("'\\x41\\xe9\\xFF'", "s'A\\xc3\\xa9\\xc3\\xbf'");
    expect_tree("b'\\x2e\\xff'", "b'.\\xff'");
    expect_tree("'\\xe9\\u20ac\\U0001F600'", "s'\\xc3\\xa9\\xe2\\x82\\xac\\xf0\\x9f\\x98\\x80'");
}

static void test_truncated_or_invalid_escapes_are_refused(void **state)
{
    (void)state;
    expect_reason("'\\x4'", "invalid \\x escape");
    expect_refused("'\\xg0'");
    expect_refused("b'\\x4'");
    expect_reason("'\\u12'", "invalid unicode escape");
    expect_refused("'\\u12g4'");
    expect_refused("'\\U0001F60'");
    expect_refused("'\\U00110000'");
    expect_refused("'\\UFFFFFFFF'");
}

static void test_largest_code_point_escape(void **state)
{
    (void)state;
    expect_tree("'\\U0010FFFF'", "s'\\xf4\\x8f\\xbf\\xbf'");
    expect_tree("'\\U0000DC00'", "s'\\xed\\xb0\\x80'");
}

static void test_unknown_escapes_keep_the_backslash(void **state)
{
    (void)state;
    /* a DeprecationWarning, not an error, in 3.11 */
    expect_tree("'\\q'", "s'\\x5cq'");
    expect_tree("'\\8\\9\\ '", "s'\\x5c8\\x5c9\\x5c '");
    expect_tree("'\\X41'", "s'\\x5cX41'");
    expect_tree("'\\\xc3\xa9'", "s'\\x5c\\xc3\\xa9'");
    expect_tree("b'\\q'", "b'\\x5cq'");
}

static void test_unicode_escapes_in_bytes_are_not_escapes(void **state)
{
    (void)state;
    expect_tree("b'\\u002e'", "b'\\x5cu002e'");
    expect_tree("b'\\U0000002e'", "b'\\x5cU0000002e'");
    expect_tree("b'\\N{DOT}'", "b'\\x5cN{DOT}'");
}

static void test_backslash_newline_inside_a_string_is_removed(void **state)
{
    (void)state;
    expect_tree("'sub\\\n.echo'", "s'sub.echo'");
    expect_tree("'sub\\\r\n.echo'", "s'sub.echo'");
    expect_tree("'sub\\\r.echo'", "s'sub.echo'");
    expect_tree("'''a\\\nb'''", "s'ab'");
    expect_tree("b'a\\\nb'", "b'ab'");
}

/* ---- implicit concatenation (PROTOCOL.md §9) ------------------------------------------ */

static void test_adjacent_strings_concatenate(void **state)
{
    (void)state;
    expect_tree("'sub' '.echo'", "s'sub.echo'");
    expect_tree("'sub''.echo'", "s'sub.echo'");
    expect_tree("('thing', 'sub' '.' 'echo', (), {})", "(s'thing',s'sub.echo',(),{})");
}

static void test_concatenation_starting_with_an_empty_piece(void **state)
{
    (void)state;
    /* regression (fuzz_serpent, UBSan): an empty first piece made decode_piece compute
     * NULL + 0 — visible only in a sanitizer build (make test-asan) */
    expect_tree("'' 'a'", "s'a'");
    expect_tree("b'' b'x'", "b'x'");
    expect_tree("'''''' 'a'", "s'a'");
    expect_tree("('' # c\n 'a' '')", "s'a'");
}

static void test_concatenation_across_lines_and_comments(void **state)
{
    (void)state;
    expect_tree("('sub' # x\n '.echo')", "s'sub.echo'");
    expect_tree("('sub'\n\n# x\n\t\t'.echo',)", "(s'sub.echo',)");
    expect_tree("('a'\r\n'b')", "s'ab'");
    expect_tree("'a' \\\n 'b'", "s'ab'");
}

static void test_concatenation_mixes_str_prefixes_and_quotes(void **state)
{
    (void)state;
    expect_tree("u'a' r'\\x' \"c\" '''d'''", "s'a\\x5cxcd'");
    expect_tree("b'a' B'b' rb'\\c' bR'd'", "b'ab\\x5ccd'");
}

static void test_concatenating_bytes_and_str_is_refused(void **state)
{
    (void)state;
    expect_reason("'a' b'b'", "cannot mix bytes and str literals");
    expect_refused("b'a' u'b'");
    expect_refused("(b'a'\n u'b')");
    expect_refused("('thing', 'sub' b'.echo', (), {})");
}

static void test_many_adjacent_strings(void **state)
{
    size_t len;
    (void)state;
    char *in = repeat("(", "'x' ", 300, ")", &len);
    char want[310] = "s'";
    memset(want + 2, 'x', 300);
    memcpy(want + 302, "'", 2);
    expect_tree_n(in, len, want);
    free(in);
}

/* ---- numbers -------------------------------------------------------------------------- */

static void test_integer_bases_and_underscores(void **state)
{
    (void)state;
    expect_tree("[0x1F,0XfF,0o17,0O7,0b101,0B1_0,1_000,0x_f,0_0,00]",
                "[int,int,int,int,int,int,int,int,int,int]");
}

static void test_invalid_integer_spellings_are_refused(void **state)
{
    static const char *const bad[] = {
        "01",  "007",  "09",   "0_7",  "1__0", "1_", "0x",        "0x_",  "0b12",
        "0o8", "1abc", "0x1j", "0b1j", "0_x1", "1L", "1\xc3\xa9", "0x1g",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_refused_n(bad[i], strlen(bad[i]));
}

static void test_float_spellings(void **state)
{
    (void)state;
    expect_tree("[.5,5.,1.e5,1e-5,1E+5,1e1_0,1_0.0_1,09.5,0_9.0,09e1]",
                "[float,float,float,float,float,float,float,float,float,float]");
}

static void test_invalid_float_spellings_are_refused(void **state)
{
    static const char *const bad[] = {
        "1_e10", "1._5",        "1.5_", "1e",    "1e+",     "1..5",  "1.5.5",
        "1..",   "1.__class__", ". 5",  "0x1p3", "0x1.8p1", "1e5e5",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_refused_n(bad[i], strlen(bad[i]));
}

static void test_imaginary_literals(void **state)
{
    (void)state;
    expect_tree("[1j,1J,1.5j,1e5j,0j,09j,01j,1_0j]",
                "[complex,complex,complex,complex,complex,complex,complex,complex]");
}

static void test_sums_of_a_real_and_an_imaginary_literal(void **state)
{
    (void)state;
    expect_tree("[1+2j,-1-2j,1.5-0j,(-1)+2j,1+(2j),-(1)+2j,-0x10+1j,1 + 2j,-1.5e3+0j,1e999+1j]",
                "[complex,complex,complex,complex,complex,complex,complex,complex,complex,"
                "complex]");
}

static void test_int_plus_imaginary_past_the_largest_double_is_refused(void **state)
{
    size_t len;
    (void)state;
    /* int + complex converts the int to a float: OverflowError (PROTOCOL.md §10) */
    char *in = repeat("1", "0", 309, "+1j", &len); /* 10**309 */
    expect_reason_n(in, len, "int too large to convert to float");
    free(in);
    in = repeat("-", "9", 309, "-1j", &len);
    expect_refused_n(in, len);
    free(in);
    /* 2**1024 - 2**970 rounds up to 2**1024 */
    in = repeat("0xfffffffffffffc", "0", 242, "+1j", &len);
    expect_refused_n(in, len);
    free(in);
}

static void test_int_plus_imaginary_up_to_the_largest_double_is_accepted(void **state)
{
    size_t len;
    (void)state;
    char *in = repeat("1", "0", 308, "+1j", &len); /* 10**308 */
    expect_tree_n(in, len, "complex");
    free(in);
    in = repeat("0xfffffffffffffb", "f", 242, "+1j", &len); /* rounds down to DBL_MAX */
    expect_tree_n(in, len, "complex");
    free(in);
    in = repeat("", "0", 500, "+1j", &len); /* zeros are small */
    expect_tree_n(in, len, "complex");
    free(in);
}

static void test_other_arithmetic_is_refused(void **state)
{
    static const char *const bad[] = {
        "1+2",   "1.5+2.5", "1j+1",      "2j+3j",   "1j+1j",         "-1j+2j",
        "1+-2j", "1+2j+3j", "(1+2j)+3j", "-(1+2j)", "True+1j",       "2*3",
        "2**3",  "1-True",  "1<2",       "1 and 2", "1 if 1 else 2",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_refused_n(bad[i], strlen(bad[i]));
}

static void test_unary_signs(void **state)
{
    (void)state;
    expect_tree("[-1,+1,-(1),- 1,-0,-1.5,+1.5,-1j,- 1j]",
                "[int,int,int,int,int,float,float,complex,complex]");
}

static void test_repeated_or_misapplied_signs_are_refused(void **state)
{
    static const char *const bad[] = {
        "--1", "-+1", "+(+1)", "-(-1)", "-True", "-None", "+None", "-'a'", "~1", "not 1",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_refused_n(bad[i], strlen(bad[i]));
}

static void test_decimal_int_over_4300_digits_is_refused(void **state)
{
    size_t len;
    (void)state;
    /* SyntaxError: Exceeds the limit (4300 digits) for integer string conversion */
    char *in = repeat("", "1", 4301, "", &len);
    expect_reason_n(in, len, "int literal over 4300 digits");
    free(in);
    in = repeat("(-", "9", 4301, ",)", &len);
    expect_refused_n(in, len);
    free(in);
}

static void test_decimal_int_digit_limit_ignores_underscores(void **state)
{
    size_t len;
    (void)state;
    char *in = repeat("", "1_", 4300, "1", &len); /* 4301 digits */
    expect_refused_n(in, len);
    free(in);
    in = repeat("", "1_", 4299, "1", &len); /* 4300 digits */
    expect_tree_n(in, len, "int");
    free(in);
}

static void test_long_literals_without_a_digit_limit(void **state)
{
    size_t len;
    (void)state;
    /* zeros, floats, imaginary numbers and power-of-two bases have no digit limit */
    char *in = repeat("0x", "f", 5000, "", &len);
    expect_tree_n(in, len, "int");
    free(in);
    in = repeat("", "0", 5000, "", &len);
    expect_tree_n(in, len, "int");
    free(in);
    in = repeat("", "1", 5000, ".0", &len);
    expect_tree_n(in, len, "float");
    free(in);
    in = repeat("", "1", 5000, "j", &len);
    expect_tree_n(in, len, "complex");
    free(in);
}

static void test_keyword_glued_to_a_number_is_refused(void **state)
{
    (void)state;
    expect_refused("1if 1 else 2");
    expect_refused("[0x1for x in ()]");
    expect_refused("1 .real");
    expect_refused("1if");
}

/* ---- constants, names and calls ------------------------------------------------------- */

static void test_ellipsis_literal(void **state)
{
    (void)state;
    expect_tree("...", "...");
    expect_refused(". . .");
    expect_refused("....");
}

static void test_names_are_refused(void **state)
{
    static const char *const bad[] = {
        "none",   "true",
        "foo",    "True.real",
        "'a'.b",  "if",
        "a",      "x()",
        "(1)(2)", "\xef\xbc\xb4\xef\xbd\x92\xef\xbd\x95\xef\xbd\x85", /* fullwidth True: a Name */
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_refused_n(bad[i], strlen(bad[i]));
}

static void test_set_call_is_the_empty_set(void **state)
{
    (void)state;
    expect_tree("set()", "set{}");
    expect_tree("set ( \n )", "set{}");
    expect_tree("(set)()", "set{}");
    expect_tree("((set))()", "set{}");
    expect_tree("set(# c\n)", "set{}");
    expect_tree("set\\\n()", "set{}");
    expect_tree("[set(\n)]", "[set{}]");
    expect_tree("{'k':set()}", "{s'k':set{}}");
}

static void test_set_call_spelled_with_compatibility_characters(void **state)
{
    (void)state;
    /* identifiers are NFKC-normalized: fullwidth, long s and bold letters all spell set */
    expect_refused_or_tree("\xef\xbd\x93\xef\xbd\x85\xef\xbd\x94()", "set{}");
    expect_refused_or_tree("\xc5\xbf"
                           "et()",
                           "set{}");
    expect_refused_or_tree("\xf0\x9d\x90\xac\xf0\x9d\x90\x9e\xf0\x9d\x90\xad()", "set{}");
}

static void test_other_calls_are_refused(void **state)
{
    static const char *const bad[] = {
        "set",    "(set)", "set([])", "set((1,))", "set(x=1)", "set(*())", "frozenset()",
        "dict()", "foo()", "set()()", "set\n()",   "(set,)()", "-set()",   "{set}",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_refused_n(bad[i], strlen(bad[i]));
}

/* ---- containers ----------------------------------------------------------------------- */

static void test_parentheses_alone_do_not_make_a_tuple(void **state)
{
    (void)state;
    expect_tree("(1)", "int");
    expect_tree("(())", "()");
    expect_tree("((1,))", "(int,)");
    expect_tree("((('x')))", "s'x'");
}

static void test_bare_top_level_tuple(void **state)
{
    (void)state;
    expect_tree("1, 2", "(int,int)");
    expect_tree("1,", "(int,)");
    expect_tree(HDR "'thing','echo',(),{}", "(s'thing',s'echo',(),{})");
}

static void test_other_top_level_shapes(void **state)
{
    (void)state;
    /* PROTOCOL.md §5: any 4-element iterable unpacks; the decoder only decodes */
    expect_tree("['thing','echo',(),{}]", "[s'thing',s'echo',(),{}]");
    expect_tree("{'a':1,'b':2,'c':3,'d':4}", "{s'a':int,s'b':int,s'c':int,s'd':int}");
    expect_tree("'thing'", "s'thing'");
}

static void test_trailing_commas(void **state)
{
    (void)state;
    expect_tree("[1,2,]", "[int,int]");
    expect_tree("{1:2,}", "{int:int}");
    expect_tree("{1,}", "set{int}");
    expect_tree("(1,2,)", "(int,int)");
}

static void test_malformed_containers_are_refused(void **state)
{
    static const char *const bad[] = {
        "(,)",     "[,]",     "{,}", "(1,,2)", "(1,,)", "{1:}", "{:1}",
        "{1:2,3}", "{3,1:2}", "(1,", "(1]",    "[1",    "]",    "1)",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_refused_n(bad[i], strlen(bad[i]));
}

static void test_dict_keeps_duplicate_keys_in_wire_order(void **state)
{
    (void)state;
    /* decode.h: pairs in wire order, duplicates included */
    expect_tree("{'a':1,'a':[2],'b':3,'a':'x'}", "{s'a':int,s'a':[int],s'b':int,s'a':s'x'}");
}

static void test_escaped_duplicate_key_is_ambiguous_to_value_dict_get(void **state)
{
    static const char in[] = "{'method':'echo','m\\x65thod':'sub.echo'}";
    value_arena_t arena;
    value_t *v = NULL;
    const char *reason = NULL;
    const value_t *m = NULL;
    (void)state;
    value_arena_init(&arena, NULL);
    assert_true(decode_serpent((const uint8_t *)in, sizeof(in) - 1, &arena, &v, &reason));
    assert_int_equal(v->type, VAL_DICT);
    assert_int_equal(v->u.dict.n, 2);
    assert_int_equal(value_dict_get(v, "method", &m), -1);
    assert_true(value_is_str(v->u.dict.values[1], "sub.echo"));
    value_arena_cleanup(&arena);
}

static void test_set_keeps_the_first_of_equal_members(void **state)
{
    (void)state;
    /* set(map(...)): 1 == 1.0 == True == 1+0j, -0.0 == 0, (1, 'a') == (1.0, 'a') */
    expect_tree("{'a','a','b'}", "set{s'a',s'b'}");
    expect_tree("{1,1.0,True,1+0j}", "set{int}");
    expect_tree("{1.0,1}", "set{float}");
    expect_tree("{True,1}", "set{True}");
    expect_tree("{-0.0,0,0j,False}", "set{float}");
    expect_tree("{(1,'a'),(1.0,'a'),(True,u'a')}", "set{(int,s'a')}");
    expect_tree("{'a','\\x61','a' ''}", "set{s'a'}");
    expect_tree("{None,None,...,...}", "set{None,...}");
}

static void test_set_members_equal_only_after_exact_conversion(void **state)
{
    (void)state;
    expect_tree("{0x10,16.0,0o20,0b10000,1.6e1,16+0j}", "set{int}");
    expect_tree("{9007199254740993.0,9007199254740992}", "set{float}"); /* rounds to 2**53 */
    expect_tree("{1e400,1e401,2e308}", "set{float}");                   /* all infinite */
    expect_tree("{1e-400,0}", "set{float}");                            /* underflows to 0 */
    expect_tree("{0xffffffffffffffffffffffff,79228162514264337593543950335}", "set{int}");
    expect_tree("{1j,0+1j,-0.0+1j,1.0j}", "set{complex}");
}

static void test_set_members_that_differ_stay(void **state)
{
    (void)state;
    expect_tree("{9007199254740993,9007199254740992.0}", "set{int,float}");
    expect_tree("{100000000000000000000000+0j,100000000000000000000000}", "set{complex,int}");
    expect_tree("{0xffffffffffffffffffffffff,79228162514264337593543950336}", "set{int,int}");
    expect_tree("{'a',b'a'}", "set{s'a',b'a'}");
    expect_tree("{1e400,-1e400}", "set{float,float}");
    expect_tree("{True,2}", "set{True,int}");
}

static void test_unhashable_set_members_are_refused(void **state)
{
    static const char *const bad[] = {
        "{1,[2]}", "{(1,[2])}", "{set()}", "{(1,(2,set()))}", "{{1:2}}", "{{1}}", "{{}}", "{[1]}",
    };
    (void)state;
    /* TypeError: unhashable type */
    expect_reason("{[1]}", "unhashable type: list");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_refused_n(bad[i], strlen(bad[i]));
}

static void test_unhashable_dict_keys_are_refused(void **state)
{
    static const char *const bad[] = {
        "{[1]:2}",
        "{set():1}",
        "{{}:1}",
        "{(1,{}):2}",
        "{(1,(2,[])):2}",
        "{1:2,[3]:4}",
        /* serpent's own encoding of bytes, as a key */
        HDR "{{'data':'Ynk=','encoding':'base64'}:1}",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_refused_n(bad[i], strlen(bad[i]));
}

static void test_unhashable_values_are_fine(void **state)
{
    (void)state;
    expect_tree("{1:[2],(1,):{3:set()}}", "{int:[int],(int,):{int:set{}}}");
}

static void test_other_expressions_are_refused(void **state)
{
    static const char *const bad[] = {
        "{**{}}",    "{**a}",           "(*a,)",           "*a",
        "[*()]",     "[x for x in ()]", "(x for x in ())", "{1:2 for x in y}",
        "lambda: 1", "(x:=1)",          "[1][0]",          "'ab'[0:1]",
        "(yield)",   "await 1",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_refused_n(bad[i], strlen(bad[i]));
}

/* ---- limits (STYLE.md habit 2) -------------------------------------------------------- */

static value_limits_t limits(size_t depth, size_t values, size_t string_bytes)
{
    value_limits_t l;
    value_limits_default(&l);
    if (depth)
        l.max_depth = depth;
    if (values)
        l.max_values = values;
    if (string_bytes)
        l.max_string_bytes = string_bytes;
    return l;
}

static void test_nesting_up_to_max_depth_is_accepted(void **state)
{
    size_t len;
    (void)state;
    value_limits_t l = limits(4, 0, 0);
    const result_t *r = decode_with("[[[[1]]]]", 9, &l);
    assert_true(r->ok);
    assert_string_equal(r->tree.buf, "[[[[int]]]]");
    char *in = repeat("", "[", 32, "", &len); /* the default: 32 */
    char *full = repeat(in, "]", 32, "", &len);
    expect_tree_n(full, len, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
    free(in);
    free(full);
}

static void test_nesting_beyond_max_depth_is_refused(void **state)
{
    (void)state;
    value_limits_t l = limits(4, 0, 0);
    const result_t *r = decode_with("[[[[[1]]]]]", 11, &l);
    assert_false(r->ok);
    assert_string_equal(r->reason, "nesting too deep");
    assert_false(decode_with("{'a':({1:[(2,)]},)}", 19, &l)->ok);
}

static void test_bare_top_level_tuple_counts_toward_max_depth(void **state)
{
    (void)state;
    /* `1,[[1]]` builds the same three-level tree as `(1,[[1]])`: the limit is on the tree */
    value_limits_t l = limits(2, 0, 0);
    assert_false(decode_with("(1,[[1]])", 9, &l)->ok);
    assert_false(decode_with("1,[[1]]", 7, &l)->ok);
    const result_t *r = decode_with("1,[1]", 5, &l);
    assert_true(r->ok);
    assert_string_equal(r->tree.buf, "(int,[int])");
}

static void test_parentheses_alone_may_count_as_nesting(void **state)
{
    (void)state;
    /* Python accepts up to 200 parentheses; the decoder may count them against max_depth */
    value_limits_t l = limits(4, 0, 0);
    const result_t *r = decode_with("((((((((1))))))))", 17, &l);
    if (r->ok)
        assert_string_equal(r->tree.buf, "int");
}

static void test_default_depth_limit_refuses_deep_input(void **state)
{
    size_t len;
    (void)state;
    char *in = repeat("", "[", 100, "", &len);
    char *full = repeat(in, "]", 100, "", &len);
    expect_reason_n(full, len, "nesting too deep");
    free(in);
    free(full);
}

static void test_bracket_bomb_is_refused_without_recursing(void **state)
{
    size_t len;
    (void)state;
    char *in = repeat("", "[", 1000000, "", &len);
    expect_refused_n(in, len);
    free(in);
    in = repeat("", "(", 1000000, "1", &len);
    expect_refused_n(in, len);
    free(in);
    in = repeat("", "-", 1000000, "1", &len);
    expect_refused_n(in, len);
    free(in);
}

static void test_values_up_to_max_values_are_accepted(void **state)
{
    (void)state;
    value_limits_t l = limits(0, 4, 0); /* the list and its three items */
    const result_t *r = decode_with("[1,'a',None]", 12, &l);
    assert_true(r->ok);
    assert_string_equal(r->tree.buf, "[int,s'a',None]");
}

static void test_values_beyond_max_values_are_refused(void **state)
{
    (void)state;
    value_limits_t l = limits(0, 4, 0);
    const result_t *r = decode_with("[1,'a',None,2]", 14, &l);
    assert_false(r->ok);
    assert_string_equal(r->reason, "too many values");
}

static void test_default_value_limit_refuses_a_huge_list(void **state)
{
    size_t len;
    (void)state;
    char *in = repeat("[", "0,", 100001, "]", &len);
    expect_reason_n(in, len, "too many values");
    free(in);
}

static void test_decoded_string_bytes_beyond_the_limit_are_refused(void **state)
{
    size_t len;
    (void)state;
    value_limits_t l = limits(0, 0, 64);
    char *in = repeat("'", "\\x41", 100, "'", &len); /* 100 decoded bytes */
    assert_false(decode_with(in, len, &l)->ok);
    free(in);
    in = repeat("(", "'\\x41\\x41' ", 50, ",)", &len); /* 100 bytes by concatenation */
    assert_false(decode_with(in, len, &l)->ok);
    free(in);
}

static void test_string_bytes_left_in_the_input_count_too(void **state)
{
    (void)state;
    value_limits_t l = limits(0, 0, 8);
    const result_t *r = decode_with("('abcd','efgh')", 15, &l);
    assert_true(r->ok);
    assert_string_equal(r->tree.buf, "(s'abcd',s'efgh')");
    r = decode_with("('abcd','efghi')", 16, &l);
    assert_false(r->ok);
    assert_string_equal(r->reason, "string too long");
    assert_false(decode_with("('abcd','ef' 'ghi')", 19, &l)->ok);
}

static void test_decoded_string_bytes_within_the_limit_are_accepted(void **state)
{
    size_t len;
    (void)state;
    value_limits_t l = limits(0, 0, 64);
    char *in = repeat("'", "\\x41", 8, "'", &len);
    const result_t *r = decode_with(in, len, &l);
    free(in);
    assert_true(r->ok);
    assert_string_equal(r->tree.buf, "s'AAAAAAAA'");
}

/* ---- input bounds --------------------------------------------------------------------- */

static void test_only_len_bytes_are_read(void **state)
{
    (void)state;
    /* the input is a buffer, not a C string: bytes after len do not exist */
    expect_tree_n("(1,2)xyz", 5, "(int,int)");
    expect_refused_n("(1,2)", 4);
    expect_refused_n("'abc'", 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_captured_connect_handshake_is_a_dict),
        cmocka_unit_test(test_captured_connect_without_metadata_has_no_object_key),
        cmocka_unit_test(test_captured_echo_invoke_is_the_call_tuple),
        cmocka_unit_test(test_captured_batch_invoke_lists_every_call),
        cmocka_unit_test(test_captured_getattr_invoke_has_none_kwargs),
        cmocka_unit_test(test_captured_setattr_invoke_carries_name_and_value),
        cmocka_unit_test(test_captured_oneway_invoke),
        cmocka_unit_test(test_captured_blob_invoke_has_a_dict_for_vargs),
        cmocka_unit_test(test_captured_compressed_invoke_decodes_after_inflating),
        cmocka_unit_test(test_captured_dotted_invoke_keeps_the_dot),
        cmocka_unit_test(test_captured_private_invoke),
        cmocka_unit_test(test_captured_stream_invoke_has_a_list_for_vargs),
        cmocka_unit_test(test_captured_daemon_object_invoke),
        cmocka_unit_test(test_captured_metadata_result_has_sets),
        cmocka_unit_test(test_captured_exception_result_with_traceback_decodes),
        cmocka_unit_test(test_every_captured_serpent_message_decodes),
        cmocka_unit_test(test_header_comment_line_then_value),
        cmocka_unit_test(test_header_from_older_serpent_versions_is_only_a_comment),
        cmocka_unit_test(test_missing_header_is_accepted),
        cmocka_unit_test(test_str_escapes_that_serpent_writes),
        cmocka_unit_test(test_str_with_single_quote_is_double_quoted),
        cmocka_unit_test(test_printable_non_ascii_is_written_raw),
        cmocka_unit_test(test_u_escapes_that_serpent_writes),
        cmocka_unit_test(test_lone_surrogate_escape_is_kept_as_generalized_utf8),
        cmocka_unit_test(test_escaped_surrogate_pair_stays_two_code_points),
        cmocka_unit_test(test_empty_string),
        cmocka_unit_test(test_integers_that_serpent_writes),
        cmocka_unit_test(test_decimal_int_of_4300_digits_is_accepted),
        cmocka_unit_test(test_floats_that_serpent_writes),
        cmocka_unit_test(test_infinity_is_written_as_an_overflowing_literal),
        cmocka_unit_test(test_nan_is_written_as_a_class_dict),
        cmocka_unit_test(test_complex_as_serpent_writes_it),
        cmocka_unit_test(test_complex_with_negative_zero_imaginary_is_refused),
        cmocka_unit_test(test_constants_true_false_none),
        cmocka_unit_test(test_ellipsis_as_serpent_writes_it_is_refused),
        cmocka_unit_test(test_empty_containers),
        cmocka_unit_test(test_one_element_tuple),
        cmocka_unit_test(test_set_literal),
        cmocka_unit_test(test_nested_containers),
        cmocka_unit_test(test_dict_keys_of_every_hashable_kind),
        cmocka_unit_test(test_bytes_as_the_base64_dict),
        cmocka_unit_test(test_bytes_literal_with_bytes_repr),
        cmocka_unit_test(test_indented_output),
        cmocka_unit_test(test_exception_class_dict),
        cmocka_unit_test(test_empty_set_is_written_as_an_empty_tuple),
        cmocka_unit_test(test_large_honest_strings_are_accepted),
        cmocka_unit_test(test_more_comment_lines_before_the_value),
        cmocka_unit_test(test_comment_after_the_value),
        cmocka_unit_test(test_trailing_newlines),
        cmocka_unit_test(test_leading_spaces_and_tabs_are_stripped),
        cmocka_unit_test(test_indentation_after_a_comment_line_is_refused),
        cmocka_unit_test(test_indented_comment_and_blank_lines_are_not_indentation),
        cmocka_unit_test(test_whitespace_only_last_line_is_refused),
        cmocka_unit_test(test_crlf_line_endings),
        cmocka_unit_test(test_lone_cr_ends_a_line),
        cmocka_unit_test(test_form_feed_resets_indentation),
        cmocka_unit_test(test_line_continuation_at_top_level),
        cmocka_unit_test(test_newlines_inside_brackets_are_whitespace),
        cmocka_unit_test(test_two_top_level_lines_are_refused),
        cmocka_unit_test(test_empty_and_comment_only_inputs_are_refused),
        cmocka_unit_test(test_trailing_tokens_are_refused),
        cmocka_unit_test(test_byte_order_mark_is_refused),
        cmocka_unit_test(test_non_printable_characters_outside_strings_are_refused),
        cmocka_unit_test(test_coding_cookie_is_ignored),
        cmocka_unit_test(test_nul_anywhere_is_refused),
        cmocka_unit_test(test_escaped_nul_in_a_string_is_accepted),
        cmocka_unit_test(test_invalid_utf8_is_refused),
        cmocka_unit_test(test_non_ascii_in_comments_is_fine),
        cmocka_unit_test(test_u_prefix_is_a_plain_str),
        cmocka_unit_test(test_raw_prefix_keeps_escapes_literally),
        cmocka_unit_test(test_raw_backslash_newline_is_kept),
        cmocka_unit_test(test_raw_string_ending_in_backslash_is_unterminated),
        cmocka_unit_test(test_bytes_prefixes),
        cmocka_unit_test(test_bytes_with_non_ascii_characters_are_refused),
        cmocka_unit_test(test_f_strings_are_refused),
        cmocka_unit_test(test_invalid_prefixes_are_refused),
        cmocka_unit_test(test_triple_quoted_strings),
        cmocka_unit_test(test_triple_quoted_line_endings_become_newlines),
        cmocka_unit_test(test_raw_control_characters_inside_strings),
        cmocka_unit_test(test_unterminated_strings_are_refused),
        cmocka_unit_test(test_every_spelling_of_the_dot),
        cmocka_unit_test(test_named_escapes_decode_or_are_refused),
        cmocka_unit_test(test_malformed_named_escapes_are_refused),
        cmocka_unit_test(test_single_character_escapes),
        cmocka_unit_test(test_octal_escapes_read_up_to_three_digits),
        cmocka_unit_test(test_octal_escapes_above_0377_in_str),
        cmocka_unit_test(test_octal_escapes_above_0377_in_bytes_wrap),
        cmocka_unit_test(test_hex_escapes),
        cmocka_unit_test(test_truncated_or_invalid_escapes_are_refused),
        cmocka_unit_test(test_largest_code_point_escape),
        cmocka_unit_test(test_unknown_escapes_keep_the_backslash),
        cmocka_unit_test(test_unicode_escapes_in_bytes_are_not_escapes),
        cmocka_unit_test(test_backslash_newline_inside_a_string_is_removed),
        cmocka_unit_test(test_adjacent_strings_concatenate),
        cmocka_unit_test(test_concatenation_starting_with_an_empty_piece),
        cmocka_unit_test(test_concatenation_across_lines_and_comments),
        cmocka_unit_test(test_concatenation_mixes_str_prefixes_and_quotes),
        cmocka_unit_test(test_concatenating_bytes_and_str_is_refused),
        cmocka_unit_test(test_many_adjacent_strings),
        cmocka_unit_test(test_integer_bases_and_underscores),
        cmocka_unit_test(test_invalid_integer_spellings_are_refused),
        cmocka_unit_test(test_float_spellings),
        cmocka_unit_test(test_invalid_float_spellings_are_refused),
        cmocka_unit_test(test_imaginary_literals),
        cmocka_unit_test(test_sums_of_a_real_and_an_imaginary_literal),
        cmocka_unit_test(test_int_plus_imaginary_past_the_largest_double_is_refused),
        cmocka_unit_test(test_int_plus_imaginary_up_to_the_largest_double_is_accepted),
        cmocka_unit_test(test_other_arithmetic_is_refused),
        cmocka_unit_test(test_unary_signs),
        cmocka_unit_test(test_repeated_or_misapplied_signs_are_refused),
        cmocka_unit_test(test_decimal_int_over_4300_digits_is_refused),
        cmocka_unit_test(test_decimal_int_digit_limit_ignores_underscores),
        cmocka_unit_test(test_long_literals_without_a_digit_limit),
        cmocka_unit_test(test_keyword_glued_to_a_number_is_refused),
        cmocka_unit_test(test_ellipsis_literal),
        cmocka_unit_test(test_names_are_refused),
        cmocka_unit_test(test_set_call_is_the_empty_set),
        cmocka_unit_test(test_set_call_spelled_with_compatibility_characters),
        cmocka_unit_test(test_other_calls_are_refused),
        cmocka_unit_test(test_parentheses_alone_do_not_make_a_tuple),
        cmocka_unit_test(test_bare_top_level_tuple),
        cmocka_unit_test(test_other_top_level_shapes),
        cmocka_unit_test(test_trailing_commas),
        cmocka_unit_test(test_malformed_containers_are_refused),
        cmocka_unit_test(test_dict_keeps_duplicate_keys_in_wire_order),
        cmocka_unit_test(test_escaped_duplicate_key_is_ambiguous_to_value_dict_get),
        cmocka_unit_test(test_set_keeps_the_first_of_equal_members),
        cmocka_unit_test(test_set_members_equal_only_after_exact_conversion),
        cmocka_unit_test(test_set_members_that_differ_stay),
        cmocka_unit_test(test_unhashable_set_members_are_refused),
        cmocka_unit_test(test_unhashable_dict_keys_are_refused),
        cmocka_unit_test(test_unhashable_values_are_fine),
        cmocka_unit_test(test_other_expressions_are_refused),
        cmocka_unit_test(test_nesting_up_to_max_depth_is_accepted),
        cmocka_unit_test(test_nesting_beyond_max_depth_is_refused),
        cmocka_unit_test(test_bare_top_level_tuple_counts_toward_max_depth),
        cmocka_unit_test(test_parentheses_alone_may_count_as_nesting),
        cmocka_unit_test(test_default_depth_limit_refuses_deep_input),
        cmocka_unit_test(test_bracket_bomb_is_refused_without_recursing),
        cmocka_unit_test(test_values_up_to_max_values_are_accepted),
        cmocka_unit_test(test_values_beyond_max_values_are_refused),
        cmocka_unit_test(test_default_value_limit_refuses_a_huge_list),
        cmocka_unit_test(test_decoded_string_bytes_beyond_the_limit_are_refused),
        cmocka_unit_test(test_string_bytes_left_in_the_input_count_too),
        cmocka_unit_test(test_decoded_string_bytes_within_the_limit_are_accepted),
        cmocka_unit_test(test_only_len_bytes_are_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
