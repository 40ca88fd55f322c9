/* The names a daemon resolves, read in its dispatch order, and the name rules (PROTOCOL.md
 * §6, §7.1, §10). Values are built by hand here: the decoders have their own tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "call.h"
#include "frame.h"
#include "value.h"

static value_arena_t g_arena;

#include "testvalue.h"

static int setup(void **state)
{
    value_arena_init(&g_arena, NULL);
    return 0;
}

static int teardown(void **state)
{
    value_arena_cleanup(&g_arena);
    return 0;
}

#define EMPTY_DICT    dict(0)
#define CALL(o, m, a) TUPLE(4, str(o), str(m), a, EMPTY_DICT)

static int invoke(const value_t *top, uint16_t flags, call_t *out, call_refusal_t *r)
{
    return call_from_invoke(top, CALL_FORM_TUPLE, flags, &g_arena, out, r);
}

static void assert_refused(const value_t *top, uint16_t flags, const char *reason,
                           const char *detail)
{
    call_t c;
    call_refusal_t r;
    assert_false(invoke(top, flags, &c, &r));
    assert_string_equal(r.reason, reason);
    if (detail != NULL)
        assert_string_equal(r.detail, detail);
}

static void assert_method_refused(const char *name, const char *reason)
{
    assert_refused(CALL("thing", name, TUPLE(0)), 0, reason, NULL);
}

/* ---- plain calls ---------------------------------------------------------------------- */

static void test_plain_call_resolves_its_method(void **state)
{
    call_t c;
    call_refusal_t r;
    assert_true(invoke(CALL("thing", "echo", TUPLE(1, str("hello"))), 0, &c, &r));
    assert_true(value_is_str(c.object, "thing"));
    assert_int_equal(c.n_names, 1);
    assert_int_equal(c.names[0].kind, CALL_NAME_METHOD);
    assert_true(value_is_str(c.names[0].name, "echo"));
    assert_int_equal(c.property, 0);
    assert_int_equal(c.batch, 0);
}

static void test_list_top_level_is_accepted_like_a_tuple(void **state)
{
    call_t c;
    call_refusal_t r;
    assert_true(invoke(LIST(4, str("thing"), str("echo"), LIST(0), none()), 0, &c, &r));
    assert_true(value_is_str(c.names[0].name, "echo"));
}

static void test_object_id_with_dots_is_allowed(void **state)
{
    call_t c;
    call_refusal_t r;
    assert_true(invoke(CALL("Pyro.Daemon", "ping", LIST(0)), 0, &c, &r));
    assert_true(value_is_str(c.object, "Pyro.Daemon"));
}

static void test_dotted_method_is_refused_and_named(void **state)
{
    assert_refused(CALL("thing", "sub.echo", TUPLE(0)), 0, "dotted_name",
                   "pyroguard: method name 'sub.echo' contains a dot");
}

static void test_private_method_is_refused(void **state)
{
    assert_refused(CALL("thing", "_private", TUPLE(0)), 0, "private_name",
                   "pyroguard: method name '_private' is private");
}

static void test_deny_listed_dunders_are_private(void **state)
{
    /* (__getattr__ and __setattr__ as the method are property access: tested below.) */
    static const char *const denied[] = {"__class__",        "__init__",          "__call__",
                                         "__reduce__",       "__getattribute__",  "__setstate__",
                                         "__subclasshook__", "__init_subclass__", "__del__",
                                         "__delattr__",      "__reduce_ex__",     "__weakref__"};
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++)
        assert_method_refused(denied[i], "private_name");
}

static void test_other_dunders_are_public_as_in_pyro(void **state)
{
    call_t c;
    call_refusal_t r;
    static const char *const public_[] = {"__len__", "__getitem__", "__iter__", "_____"};
    for (size_t i = 0; i < sizeof(public_) / sizeof(public_[0]); i++)
        assert_true(invoke(CALL("thing", public_[i], TUPLE(0)), 0, &c, &r));
}

static void test_short_underscore_names_are_private(void **state)
{
    assert_method_refused("_", "private_name");
    assert_method_refused("__", "private_name");
    assert_method_refused("____", "private_name");
    assert_method_refused("__x", "private_name");
}

static void test_names_that_are_not_identifiers_are_refused(void **state)
{
    assert_method_refused("", "invalid_name");
    assert_method_refused("1abc", "invalid_name");
    assert_method_refused("a-b", "invalid_name");
    assert_method_refused("a b", "invalid_name");
    assert_method_refused("<batch>", "invalid_name");
    assert_method_refused("caf\xc3\xa9", "invalid_name");
    assert_method_refused("echo\xef\xbc\x8e", "invalid_name"); /* U+FF0E is no dot, still out */
}

static void test_non_ascii_is_shown_escaped_in_the_message(void **state)
{
    assert_refused(CALL("thing", "a\xc3\xa9\\'", TUPLE(0)), 0, "invalid_name",
                   "pyroguard: method name 'a\\xc3\\xa9\\x5c\\x27' is not a plain ASCII "
                   "identifier");
}

static void test_bytes_method_is_refused(void **state)
{
    assert_refused(TUPLE(4, str("thing"), bytes("echo"), TUPLE(0), EMPTY_DICT), 0, "invalid_name",
                   "pyroguard: method name is not a str but bytes");
}

static void test_object_id_that_is_not_a_str_is_refused(void **state)
{
    assert_refused(TUPLE(4, bytes("thing"), str("echo"), TUPLE(0), EMPTY_DICT), 0, "malformed_call",
                   "pyroguard: object id is not a str");
}

static void test_shapes_other_than_four_elements_are_refused(void **state)
{
    assert_refused(TUPLE(3, str("thing"), str("echo"), TUPLE(0)), 0, "malformed_call", NULL);
    assert_refused(TUPLE(5, str("thing"), str("echo"), TUPLE(0), EMPTY_DICT, none()), 0,
                   "malformed_call", NULL);
    assert_refused(str("abcd"), 0, "malformed_call", NULL);
    assert_refused(
        dict(4, str("thing"), none(), str("echo"), none(), str("a"), none(), str("b"), none()), 0,
        "malformed_call", NULL);
    assert_refused(seq(VAL_SET, 4, str("thing"), str("echo"), str("a"), str("b")), 0,
                   "malformed_call", NULL);
}

/* ---- property access ------------------------------------------------------------------ */

static void test_getattr_resolves_the_attribute_in_vargs(void **state)
{
    call_t c;
    call_refusal_t r;
    assert_true(invoke(TUPLE(4, str("thing"), str("__getattr__"), TUPLE(1, str("value")), none()),
                       0, &c, &r));
    assert_int_equal(c.property, 'g');
    assert_int_equal(c.n_names, 1);
    assert_int_equal(c.names[0].kind, CALL_NAME_ATTRIBUTE);
    assert_true(value_is_str(c.names[0].name, "value"));
}

static void test_setattr_resolves_the_attribute_in_vargs(void **state)
{
    call_t c;
    call_refusal_t r;
    assert_true(
        invoke(TUPLE(4, str("thing"), str("__setattr__"), LIST(2, str("value"), none()), none()), 0,
               &c, &r));
    assert_int_equal(c.property, 's');
    assert_true(value_is_str(c.names[0].name, "value"));
}

static void test_dotted_attribute_is_refused(void **state)
{
    assert_refused(TUPLE(4, str("thing"), str("__getattr__"), TUPLE(1, str("a.b")), none()), 0,
                   "dotted_name", "pyroguard: attribute name 'a.b' contains a dot");
}

static void test_private_attribute_is_refused(void **state)
{
    assert_refused(
        TUPLE(4, str("thing"), str("__setattr__"), TUPLE(2, str("_secret"), none()), none()), 0,
        "private_name", NULL);
}

static void test_getattr_with_vargs_that_are_not_a_list_is_refused(void **state)
{
    /* The daemon would index a str (first character) or a dict (key 0): §6 step 6. */
    assert_refused(TUPLE(4, str("thing"), str("__getattr__"), str("value"), none()), 0,
                   "malformed_call", NULL);
    assert_refused(
        TUPLE(4, str("thing"), str("__getattr__"), dict(1, str("x"), str("value")), none()), 0,
        "malformed_call", NULL);
}

static void test_getattr_with_the_wrong_argument_count_is_refused(void **state)
{
    assert_refused(TUPLE(4, str("thing"), str("__getattr__"), TUPLE(0), none()), 0,
                   "malformed_call", NULL);
    assert_refused(TUPLE(4, str("thing"), str("__getattr__"), TUPLE(2, str("a"), str("b")), none()),
                   0, "malformed_call", NULL);
    assert_refused(TUPLE(4, str("thing"), str("__setattr__"), TUPLE(1, str("a")), none()), 0,
                   "malformed_call", NULL);
}

/* ---- batch ---------------------------------------------------------------------------- */

static value_t *batch_entry(const char *m)
{
    return TUPLE(3, str(m), TUPLE(0), EMPTY_DICT);
}

static void test_batch_resolves_every_inner_method_in_order(void **state)
{
    call_t c;
    call_refusal_t r;
    value_t *calls = LIST(2, batch_entry("echo"), batch_entry("count"));
    assert_true(invoke(TUPLE(4, str("thing"), str("<batch>"), calls, none()), FLAG4_BATCH, &c, &r));
    assert_int_equal(c.batch, 1);
    assert_int_equal(c.n_names, 2);
    assert_int_equal(c.names[1].kind, CALL_NAME_BATCH_METHOD);
    assert_int_equal(c.names[1].index, 1);
    assert_true(value_is_str(c.names[0].name, "echo"));
    assert_true(value_is_str(c.names[1].name, "count"));
}

static void test_dotted_name_inside_a_batch_is_refused(void **state)
{
    value_t *calls = LIST(2, batch_entry("echo"), batch_entry("sub.echo"));
    assert_refused(TUPLE(4, str("thing"), str("<batch>"), calls, none()), FLAG4_BATCH,
                   "dotted_name", "pyroguard: batch method name 'sub.echo' contains a dot");
}

static void test_getattr_inside_a_batch_is_private(void **state)
{
    /* Inside a batch every name goes through the private check (§6 step 5). */
    value_t *calls = LIST(1, batch_entry("__getattr__"));
    assert_refused(TUPLE(4, str("thing"), str("<batch>"), calls, none()), FLAG4_BATCH,
                   "private_name", NULL);
}

static void test_batch_flag_with_another_outer_name_is_refused(void **state)
{
    /* The daemon ignores the outer name (live `serpent_batch_inner_dotted`): only the honest
     * "<batch>" is accepted. */
    value_t *calls = LIST(1, batch_entry("echo"));
    assert_refused(TUPLE(4, str("thing"), str("echo"), calls, none()), FLAG4_BATCH,
                   "malformed_call", NULL);
}

static void test_batch_entries_must_be_triples(void **state)
{
    value_t *calls = LIST(1, TUPLE(2, str("echo"), TUPLE(0)));
    assert_refused(TUPLE(4, str("thing"), str("<batch>"), calls, none()), FLAG4_BATCH,
                   "malformed_call", NULL);
    assert_refused(TUPLE(4, str("thing"), str("<batch>"), str("echo"), none()), FLAG4_BATCH,
                   "malformed_call", NULL);
}

/* ---- json form ------------------------------------------------------------------------ */

static value_t *json_call(const char *o, const char *m)
{
    return dict(4, str("object"), str(o), str("method"), str(m), str("params"), LIST(0),
                str("kwargs"), EMPTY_DICT);
}

static void test_json_object_form_resolves_its_method(void **state)
{
    call_t c;
    call_refusal_t r;
    assert_true(call_from_invoke(json_call("thing", "echo"), CALL_FORM_JSON, 0, &g_arena, &c, &r));
    assert_true(value_is_str(c.object, "thing"));
    assert_true(value_is_str(c.names[0].name, "echo"));
}

static void test_json_form_with_a_missing_or_extra_key_is_refused(void **state)
{
    call_t c;
    call_refusal_t r;
    value_t *missing =
        dict(3, str("object"), str("thing"), str("method"), str("echo"), str("params"), LIST(0));
    assert_false(call_from_invoke(missing, CALL_FORM_JSON, 0, &g_arena, &c, &r));
    assert_string_equal(r.reason, "malformed_call");
    value_t *extra = dict(5, str("object"), str("thing"), str("method"), str("echo"), str("params"),
                          LIST(0), str("kwargs"), EMPTY_DICT, str("x"), none());
    assert_false(call_from_invoke(extra, CALL_FORM_JSON, 0, &g_arena, &c, &r));
    value_t *dup = dict(4, str("object"), str("thing"), str("method"), str("echo"), str("method"),
                        str("sub.echo"), str("kwargs"), EMPTY_DICT);
    assert_false(call_from_invoke(dup, CALL_FORM_JSON, 0, &g_arena, &c, &r));
    assert_string_equal(r.reason, "malformed_call");
}

static void test_pyro5_connect_without_object_is_refused(void **state)
{
    call_t c;
    call_refusal_t r;
    assert_false(call_from_connect(dict(1, str("handshake"), str("hello")), 1, &g_arena, &c, &r));
    assert_string_equal(r.reason, "malformed_call");
    assert_true(call_from_connect(
        dict(2, str("handshake"), str("hello"), str("object"), str("thing")), 1, &g_arena, &c, &r));
}

static void test_tuple_payload_under_json_is_refused(void **state)
{
    call_t c;
    call_refusal_t r;
    assert_false(
        call_from_invoke(CALL("thing", "echo", LIST(0)), CALL_FORM_JSON, 0, &g_arena, &c, &r));
}

/* ---- KEEPSERIALIZED (BLBI) ------------------------------------------------------------ */

static void test_blob_names_come_from_blbi(void **state)
{
    call_t c;
    call_refusal_t r;
    assert_true(call_from_blob(TUPLE(3, str("blobinfo"), str("thing"), str("blob")),
                               FLAG4_KEEPSERIALIZED, &g_arena, &c, &r));
    assert_true(value_is_str(c.object, "thing"));
    assert_int_equal(c.n_names, 1);
    assert_true(value_is_str(c.names[0].name, "blob"));
}

static void test_dotted_method_in_blbi_is_refused(void **state)
{
    call_t c;
    call_refusal_t r;
    assert_false(call_from_blob(TUPLE(3, str("i"), str("thing"), str("sub.echo")),
                                FLAG4_KEEPSERIALIZED, &g_arena, &c, &r));
    assert_string_equal(r.reason, "dotted_name");
}

static void test_blbi_of_the_wrong_shape_or_with_batch_or_property_is_refused(void **state)
{
    call_t c;
    call_refusal_t r;
    assert_false(call_from_blob(LIST(3, str("i"), str("thing"), str("blob")), FLAG4_KEEPSERIALIZED,
                                &g_arena, &c, &r));
    assert_string_equal(r.reason, "malformed_call");
    assert_false(call_from_blob(TUPLE(2, str("thing"), str("blob")), FLAG4_KEEPSERIALIZED, &g_arena,
                                &c, &r));
    assert_false(call_from_blob(TUPLE(3, str("i"), str("thing"), str("blob")),
                                FLAG4_KEEPSERIALIZED | FLAG4_BATCH, &g_arena, &c, &r));
    assert_false(call_from_blob(TUPLE(3, str("i"), str("thing"), str("__getattr__")),
                                FLAG4_KEEPSERIALIZED, &g_arena, &c, &r));
    assert_string_equal(r.reason, "malformed_call");
}

/* ---- CONNECT -------------------------------------------------------------------------- */

static void test_connect_with_handshake_and_object_is_read(void **state)
{
    call_t c;
    call_refusal_t r;
    assert_true(call_from_connect(
        dict(2, str("handshake"), str("hello"), str("object"), str("thing")), 0, &g_arena, &c, &r));
    assert_int_equal(c.kind, CALL_CONNECT);
    assert_true(value_is_str(c.object, "thing"));
    assert_int_equal(c.n_names, 0);
}

static void test_connect_without_metadata_object_is_accepted(void **state)
{
    call_t c;
    call_refusal_t r;
    assert_true(call_from_connect(dict(1, str("handshake"), str("hello")), 0, &g_arena, &c, &r));
    assert_null(c.object);
}

static void test_connect_of_another_shape_is_refused(void **state)
{
    call_t c;
    call_refusal_t r;
    assert_false(call_from_connect(str("hello"), 0, &g_arena, &c, &r));
    assert_false(call_from_connect(dict(1, str("object"), str("thing")), 0, &g_arena, &c, &r));
    assert_false(call_from_connect(dict(2, str("handshake"), none(), str("extra"), none()), 0,
                                   &g_arena, &c, &r));
    assert_false(call_from_connect(
        dict(3, str("handshake"), none(), str("object"), str("a"), str("object"), str("b")), 0,
        &g_arena, &c, &r));
    assert_false(call_from_connect(dict(2, str("handshake"), none(), str("object"), bytes("a")), 0,
                                   &g_arena, &c, &r));
    assert_string_equal(r.reason, "malformed_call");
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_plain_call_resolves_its_method),
        T(test_list_top_level_is_accepted_like_a_tuple),
        T(test_object_id_with_dots_is_allowed),
        T(test_dotted_method_is_refused_and_named),
        T(test_private_method_is_refused),
        T(test_deny_listed_dunders_are_private),
        T(test_other_dunders_are_public_as_in_pyro),
        T(test_short_underscore_names_are_private),
        T(test_names_that_are_not_identifiers_are_refused),
        T(test_non_ascii_is_shown_escaped_in_the_message),
        T(test_bytes_method_is_refused),
        T(test_object_id_that_is_not_a_str_is_refused),
        T(test_shapes_other_than_four_elements_are_refused),
        T(test_getattr_resolves_the_attribute_in_vargs),
        T(test_setattr_resolves_the_attribute_in_vargs),
        T(test_dotted_attribute_is_refused),
        T(test_private_attribute_is_refused),
        T(test_getattr_with_vargs_that_are_not_a_list_is_refused),
        T(test_getattr_with_the_wrong_argument_count_is_refused),
        T(test_batch_resolves_every_inner_method_in_order),
        T(test_dotted_name_inside_a_batch_is_refused),
        T(test_getattr_inside_a_batch_is_private),
        T(test_batch_flag_with_another_outer_name_is_refused),
        T(test_batch_entries_must_be_triples),
        T(test_json_object_form_resolves_its_method),
        T(test_json_form_with_a_missing_or_extra_key_is_refused),
        T(test_tuple_payload_under_json_is_refused),
        T(test_blob_names_come_from_blbi),
        T(test_dotted_method_in_blbi_is_refused),
        T(test_blbi_of_the_wrong_shape_or_with_batch_or_property_is_refused),
        T(test_connect_with_handshake_and_object_is_read),
        T(test_connect_without_metadata_object_is_accepted),
        T(test_connect_of_another_shape_is_refused),
        T(test_pyro5_connect_without_object_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
