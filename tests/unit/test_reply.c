/* Unit tests for proxy/reply.c: the messages pyroguard itself sends to Pyro4 clients.
 *
 * The expected payloads below were not written by hand: they are the bytes reply.c emits,
 * each checked once with /usr/bin/python3 (Pyro4 4.82, serpent 1.41, msgpack 1.0.3) before
 * being pasted here. For every serializer, Pyro4.util.get_serializer_by_id(id)
 * .deserializeData(payload) returned Pyro4.errors.SecurityError with args == (msg,), and the
 * raw decoders (serpent.loads, json.loads, marshal.loads, msgpack.unpackb(raw=False),
 * pickle.loads) gave the exception dict / exception; whole frames were read back with
 * Pyro4.message.Message.recv, which checks magic, version and checksum. CONNECTFAIL payloads
 * decoded with Pyro4's marshal serializer to the message text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/bytestring.h>
#include <openssl/mem.h>

#include "frame.h"
#include "reply.h"

#define MSG "pyroguard: method 'sub.echo' is not allowed"
/* Quotes, a backslash, control characters, DEL and a two-byte UTF-8 'é'. */
#define TRICKY "quote ' dq \" bs \\ tab\t nl\n del\x7f e\xc3\xa9 end"

typedef struct {
    uint8_t *data;
    size_t len;
} bytes_t;

static bytes_t encode(uint16_t serializer_id, const char *msg)
{
    CBB cbb;
    bytes_t b = {NULL, 0};
    assert_true(CBB_init(&cbb, 64));
    assert_true(reply_encode_security_error(&cbb, PROTO_PYRO4, serializer_id, msg));
    assert_true(CBB_finish(&cbb, &b.data, &b.len));
    return b;
}

/* assert_payload compares reply_encode_security_error's output with |len| bytes. */
static void assert_payload(uint16_t serializer_id, const char *msg, const char *expected,
                           size_t len)
{
    bytes_t b = encode(serializer_id, msg);
    assert_int_equal(b.len, len);
    assert_memory_equal(b.data, expected, len);
    OPENSSL_free(b.data);
}

#define ASSERT_PAYLOAD(id, msg, literal) assert_payload(id, msg, literal, sizeof(literal) - 1)

/* ---- payloads, per serializer --------------------------------------------------------- */

static const char kSerpent[] =
    "# serpent utf-8 python3.2\n{'__class__':'Pyro4.errors.SecurityError','__exception__':True,"
    "'args':('pyroguard: method \\'sub.echo\\' is not allowed',),'attributes':{}}";

static const char kJson[] = "{\"__class__\": \"Pyro4.errors.SecurityError\", \"__exception__\": "
                            "true, \"args\": [\"pyroguard: method 'sub.echo' is not allowed\"], "
                            "\"attributes\": {}}";

static const char kMarshal[] = "{u\x09\x00\x00\x00__class__u\x1a\x00\x00\x00Pyro4.errors."
                               "SecurityErroru\x0d\x00\x00\x00__exception__Tu\x04\x00\x00\x00"
                               "args)\x01u+\x00\x00\x00pyroguard: method 'sub.echo' is not "
                               "allowedu\x0a\x00\x00\x00"
                               "attributes{00";

static const char kMsgpack[] = "\x84\xa9__class__\xbaPyro4.errors.SecurityError\xad__exception__"
                               "\xc3\xa4"
                               "args\x91\xd9+pyroguard: method 'sub.echo' is not allowed\xaa"
                               "attributes\x80";

static const char kPickle[] = "\x80\x02"
                              "cPyro4.errors\nSecurityError\nX+\x00\x00\x00pyroguard: method "
                              "'sub.echo' is not allowed\x85R.";

static void test_serpent_payload_is_a_security_error_dict_literal(void **state)
{
    ASSERT_PAYLOAD(SER4_SERPENT, MSG, kSerpent);
}

static void test_json_payload_is_a_security_error_object(void **state)
{
    ASSERT_PAYLOAD(SER4_JSON, MSG, kJson);
}

static void test_marshal_payload_is_a_security_error_dict(void **state)
{
    ASSERT_PAYLOAD(SER4_MARSHAL, MSG, kMarshal);
}

static void test_msgpack_payload_is_a_security_error_map(void **state)
{
    ASSERT_PAYLOAD(SER4_MSGPACK, MSG, kMsgpack);
}

static void test_pickle_payload_is_a_fixed_security_error_pickle(void **state)
{
    ASSERT_PAYLOAD(SER4_PICKLE, MSG, kPickle);
}

static void test_dill_payload_is_the_same_pickle(void **state)
{
    ASSERT_PAYLOAD(SER4_DILL, MSG, kPickle);
}

static void test_cloudpickle_payload_is_the_same_pickle(void **state)
{
    ASSERT_PAYLOAD(SER4_CLOUDPICKLE, MSG, kPickle);
}

/* ---- escaping and sanitising ---------------------------------------------------------- */

static void test_serpent_escapes_quote_and_backslash_and_masks_the_rest(void **state)
{
    /* serpent.loads gives back args == ("quote ' dq \" bs \\ tab? nl? del? e?? end",). */
    ASSERT_PAYLOAD(SER4_SERPENT, TRICKY,
                   "# serpent utf-8 python3.2\n{'__class__':'Pyro4.errors.SecurityError',"
                   "'__exception__':True,'args':('quote \\' dq \" bs \\\\ tab? nl? del? e?? "
                   "end',),'attributes':{}}");
}

static void test_json_escapes_double_quote_and_backslash_and_masks_the_rest(void **state)
{
    /* json.loads gives back args == ["quote ' dq \" bs \\ tab? nl? del? e?? end"]. */
    ASSERT_PAYLOAD(SER4_JSON, TRICKY,
                   "{\"__class__\": \"Pyro4.errors.SecurityError\", \"__exception__\": true, "
                   "\"args\": [\"quote ' dq \\\" bs \\\\ tab? nl? del? e?? end\"], "
                   "\"attributes\": {}}");
}

static void test_marshal_carries_the_masked_text_unescaped(void **state)
{
    ASSERT_PAYLOAD(SER4_MARSHAL, TRICKY,
                   "{u\x09\x00\x00\x00__class__u\x1a\x00\x00\x00Pyro4.errors.SecurityErroru"
                   "\x0d\x00\x00\x00__exception__Tu\x04\x00\x00\x00"
                   "args)\x01u'\x00\x00\x00quote ' dq \" bs \\ tab? nl? del? e?? endu"
                   "\x0a\x00\x00\x00"
                   "attributes{00");
}

static void test_every_byte_outside_printable_ascii_becomes_a_question_mark(void **state)
{
    ASSERT_PAYLOAD(SER4_JSON, "\x01\x1f\x7f\x80\xff",
                   "{\"__class__\": \"Pyro4.errors.SecurityError\", \"__exception__\": true, "
                   "\"args\": [\"?????\"], \"attributes\": {}}");
}

static void test_empty_message_is_an_empty_string_argument(void **state)
{
    ASSERT_PAYLOAD(SER4_SERPENT, "",
                   "# serpent utf-8 python3.2\n{'__class__':'Pyro4.errors.SecurityError',"
                   "'__exception__':True,'args':('',),'attributes':{}}");
    ASSERT_PAYLOAD(SER4_MSGPACK, "",
                   "\x84\xa9__class__\xbaPyro4.errors.SecurityError\xad__exception__\xc3\xa4"
                   "args\x91\xa0\xaa"
                   "attributes\x80");
}

/* ---- msgpack string sizes and the length cap ------------------------------------------ */

/* message_of returns a NUL-terminated "abc…" of |n| letters (caller frees). */
static char *message_of(size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        s[i] = (char)('a' + i % 26);
    s[n] = '\0';
    return s;
}

/* assert_msgpack_arg_header checks the bytes that follow the args array marker 0x91. */
static void assert_msgpack_arg_header(size_t msg_len, const uint8_t *header, size_t header_len)
{
    static const char prefix[] = "\x84\xa9__class__\xbaPyro4.errors.SecurityError\xad"
                                 "__exception__\xc3\xa4"
                                 "args\x91";
    char *m = message_of(msg_len);
    bytes_t b = encode(SER4_MSGPACK, m);
    assert_true(b.len > sizeof(prefix) - 1 + header_len + msg_len);
    assert_memory_equal(b.data, prefix, sizeof(prefix) - 1);
    assert_memory_equal(b.data + sizeof(prefix) - 1, header, header_len);
    assert_memory_equal(b.data + sizeof(prefix) - 1 + header_len, m, msg_len);
    OPENSSL_free(b.data);
    free(m);
}

static void test_msgpack_message_of_31_bytes_is_a_fixstr(void **state)
{
    static const uint8_t h[] = {0xbf};
    assert_msgpack_arg_header(31, h, sizeof(h));
}

static void test_msgpack_message_of_32_bytes_is_a_str8(void **state)
{
    static const uint8_t h[] = {0xd9, 0x20};
    assert_msgpack_arg_header(32, h, sizeof(h));
}

static void test_msgpack_message_of_255_bytes_is_a_str8(void **state)
{
    static const uint8_t h[] = {0xd9, 0xff};
    assert_msgpack_arg_header(255, h, sizeof(h));
}

static void test_msgpack_message_of_256_bytes_is_a_str16(void **state)
{
    static const uint8_t h[] = {0xda, 0x01, 0x00};
    assert_msgpack_arg_header(256, h, sizeof(h));
}

static void test_message_longer_than_1024_bytes_is_cut(void **state)
{
    /* marshal.loads of this payload gives args == (first 1024 letters,). */
    static const char prefix[] = "{u\x09\x00\x00\x00__class__u\x1a\x00\x00\x00Pyro4.errors."
                                 "SecurityErroru\x0d\x00\x00\x00__exception__Tu\x04\x00\x00\x00"
                                 "args)\x01u\x00\x04\x00\x00";
    static const char suffix[] = "u\x0a\x00\x00\x00"
                                 "attributes{00";
    char *m = message_of(5000);
    bytes_t b = encode(SER4_MARSHAL, m);
    assert_int_equal(b.len, sizeof(prefix) - 1 + 1024 + sizeof(suffix) - 1);
    assert_memory_equal(b.data, prefix, sizeof(prefix) - 1);
    assert_memory_equal(b.data + sizeof(prefix) - 1, m, 1024);
    assert_memory_equal(b.data + sizeof(prefix) - 1 + 1024, suffix, sizeof(suffix) - 1);
    OPENSSL_free(b.data);
    free(m);
}

/* ---- whole frames --------------------------------------------------------------------- */

static void
test_security_error_is_an_exception_result_with_the_request_seq_and_serializer(void **state)
{
    static const uint16_t ids[] = {SER4_SERPENT, SER4_JSON,    SER4_MARSHAL,    SER4_PICKLE,
                                   SER4_DILL,    SER4_MSGPACK, SER4_CLOUDPICKLE};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        CBB cbb;
        uint8_t *out;
        size_t out_len;
        frame_t f;
        frame_error_t err;
        uint16_t seq = (uint16_t)(0xfff0 + i);

        assert_true(CBB_init(&cbb, 256));
        assert_true(reply_security_error(&cbb, PROTO_PYRO4, seq, ids[i], NULL, MSG));
        assert_true(CBB_finish(&cbb, &out, &out_len));
        assert_int_equal(frame_parse(out, out_len, 1 << 20, &f, &err), FRAME_OK);
        assert_int_equal(f.total_len, out_len);
        assert_int_equal(f.type, MSG_RESULT);
        assert_int_equal(f.flags, FLAG4_EXCEPTION);
        assert_int_equal(f.seq, seq);
        assert_int_equal(f.serializer_id, ids[i]);
        assert_int_equal(f.ann_len, 0);

        bytes_t p = encode(ids[i], MSG);
        assert_int_equal(CBS_len(&f.payload), p.len);
        assert_memory_equal(CBS_data(&f.payload), p.data, p.len);
        OPENSSL_free(p.data);
        OPENSSL_free(out);
    }
}

static void test_serpent_security_error_frame_is_byte_exact(void **state)
{
    static const uint8_t header[FRAME4_HEADER_LEN] = {
        'P',  'Y',  'R',  'O',  0x00, 0x30, 0x00, 0x05, 0x00, 0x01, 0x00, 0x07,
        0x00, 0x00, 0x00, 0xa3, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x35, 0xca};
    CBB cbb;
    uint8_t *out;
    size_t out_len;
    assert_true(CBB_init(&cbb, 256));
    assert_true(reply_security_error(&cbb, PROTO_PYRO4, 7, SER4_SERPENT, NULL, MSG));
    assert_true(CBB_finish(&cbb, &out, &out_len));
    assert_int_equal(out_len, sizeof(header) + sizeof(kSerpent) - 1);
    assert_memory_equal(out, header, sizeof(header));
    assert_memory_equal(out + sizeof(header), kSerpent, sizeof(kSerpent) - 1);
    OPENSSL_free(out);
}

static void test_security_error_is_appended_after_existing_bytes(void **state)
{
    CBB cbb;
    uint8_t *out;
    size_t out_len;
    frame_t f;
    frame_error_t err;
    assert_true(CBB_init(&cbb, 256));
    assert_true(CBB_add_bytes(&cbb, (const uint8_t *)"xyz", 3));
    assert_true(reply_security_error(&cbb, PROTO_PYRO4, 1, SER4_JSON, NULL, MSG));
    assert_true(CBB_finish(&cbb, &out, &out_len));
    assert_memory_equal(out, "xyz", 3);
    assert_int_equal(frame_parse(out + 3, out_len - 3, 1 << 20, &f, &err), FRAME_OK);
    assert_int_equal(f.total_len, out_len - 3);
    OPENSSL_free(out);
}

static void test_unknown_serializer_id_gets_no_security_error(void **state)
{
    static const uint16_t ids[] = {0, 8, 42, 0xffff};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        CBB cbb;
        assert_true(CBB_init(&cbb, 64));
        assert_false(reply_security_error(&cbb, PROTO_PYRO4, 1, ids[i], NULL, MSG));
        CBB_cleanup(&cbb);
        assert_true(CBB_init(&cbb, 64));
        assert_false(reply_encode_security_error(&cbb, PROTO_PYRO4, ids[i], MSG));
        CBB_cleanup(&cbb);
    }
}

static void test_refusals_for_protocols_47_and_46_carry_their_version_and_checksum(void **state)
{
    /* A 4.26-4.37 client reads only messages of its own protocol number (PROTOCOL.md §13). */
    static const struct {
        frame_proto_t proto;
        uint16_t version;
    } kCases[] = {{PROTO_PYRO4_47, 47}, {PROTO_PYRO4_46, 46}};
    for (size_t i = 0; i < 2; i++) {
        CBB cbb;
        uint8_t *out;
        size_t out_len;
        frame_t f;
        frame_error_t err;
        assert_true(CBB_init(&cbb, 256));
        assert_true(reply_security_error(&cbb, kCases[i].proto, 9, SER4_SERPENT, NULL, MSG));
        assert_true(reply_connectfail(&cbb, kCases[i].proto, 0, NULL, MSG));
        assert_true(CBB_finish(&cbb, &out, &out_len));
        assert_int_equal(frame_parse_as(out, out_len, kCases[i].proto, 0, 1 << 20, &f, &err),
                         FRAME_OK);
        assert_int_equal(f.version, kCases[i].version);
        assert_int_equal(f.type, MSG_RESULT);
        assert_int_equal(f.flags, FLAG4_EXCEPTION);
        assert_int_equal(f.seq, 9);
        /* The payload is the one protocol 48 gets. */
        bytes_t p = encode(SER4_SERPENT, MSG);
        assert_int_equal(CBS_len(&f.payload), p.len);
        assert_memory_equal(CBS_data(&f.payload), p.data, p.len);
        OPENSSL_free(p.data);
        size_t first = f.total_len;
        assert_int_equal(
            frame_parse_as(out + first, out_len - first, kCases[i].proto, 0, 1 << 20, &f, &err),
            FRAME_OK);
        assert_int_equal(f.version, kCases[i].version);
        assert_int_equal(f.type, MSG_CONNECTFAIL);
        assert_int_equal(f.serializer_id, SER4_MARSHAL);
        OPENSSL_free(out);
    }
}

static void test_pyro5_refusals_are_pyro5_security_errors_with_the_request_corr_id(void **state)
{
    static const uint8_t corr[FRAME5_CORR_LEN] = {0xba, 0x45, 0x99, 0x2a, 0x84, 0x07, 0x4a, 0x90,
                                                  0x8c, 0xd7, 0x02, 0x04, 0xd5, 0xe5, 0xf4, 0x9d};
    static const struct {
        uint16_t ser, wire;
    } kCases[] = {{SER4_SERPENT, SER5_SERPENT},
                  {SER4_MARSHAL, SER5_MARSHAL},
                  {SER4_JSON, SER5_JSON},
                  {SER4_MSGPACK, SER5_MSGPACK}};
    for (size_t i = 0; i < 4; i++) {
        CBB cbb;
        uint8_t *out;
        size_t out_len;
        frame_t f;
        frame_error_t err;
        assert_true(CBB_init(&cbb, 256));
        assert_true(reply_security_error(&cbb, PROTO_PYRO5, 11, kCases[i].ser, corr, MSG));
        assert_true(CBB_finish(&cbb, &out, &out_len));
        assert_int_equal(frame_parse_as(out, out_len, PROTO_PYRO5, 0, 1 << 20, &f, &err), FRAME_OK);
        assert_int_equal(f.total_len, out_len);
        assert_int_equal(f.version, 502);
        assert_int_equal(f.type, MSG_RESULT);
        assert_int_equal(f.wire_flags, FLAG5_EXCEPTION | FLAG5_CORR_ID);
        assert_int_equal(f.wire_serializer, kCases[i].wire); /* Pyro5's id, not Pyro4's */
        assert_int_equal(f.seq, 11);
        assert_memory_equal(f.corr_id, corr, sizeof(corr));
        /* The same payload as for Pyro4 but for the package of the class. */
        CBB want;
        uint8_t *w;
        size_t w_len;
        assert_true(CBB_init(&want, 256));
        assert_true(reply_encode_security_error(&want, PROTO_PYRO5, kCases[i].ser, MSG));
        assert_true(CBB_finish(&want, &w, &w_len));
        assert_int_equal(CBS_len(&f.payload), w_len);
        assert_memory_equal(CBS_data(&f.payload), w, w_len);
        assert_non_null(memmem(w, w_len, "Pyro5.errors.SecurityError", 26));
        assert_null(memmem(w, w_len, "Pyro4", 5));
        OPENSSL_free(w);
        OPENSSL_free(out);
    }
}

static void test_pyro5_serpent_security_error_payload_is_byte_exact(void **state)
{
    static const char kWant[] =
        "# serpent utf-8 python3.2\n{'__class__':'Pyro5.errors.SecurityError',"
        "'__exception__':True,'args':('pyroguard: refused \\'x\\'',),'attributes':{}}";
    CBB cbb;
    uint8_t *out;
    size_t out_len;
    assert_true(CBB_init(&cbb, 256));
    assert_true(
        reply_encode_security_error(&cbb, PROTO_PYRO5, SER4_SERPENT, "pyroguard: refused 'x'"));
    assert_true(CBB_finish(&cbb, &out, &out_len));
    assert_int_equal(out_len, sizeof(kWant) - 1);
    assert_memory_equal(out, kWant, out_len);
    OPENSSL_free(out);
}

static void test_pyro5_has_no_pickle_to_answer_in(void **state)
{
    static const uint16_t ids[] = {SER4_PICKLE, SER4_DILL, SER4_CLOUDPICKLE, SER_UNKNOWN};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        CBB cbb;
        assert_true(CBB_init(&cbb, 64));
        assert_false(reply_security_error(&cbb, PROTO_PYRO5, 1, ids[i], NULL, MSG));
        CBB_cleanup(&cbb);
    }
}

static void test_pyro5_connectfail_is_a_marshal_string_with_pyro5s_marshal_id(void **state)
{
    CBB cbb;
    uint8_t *out;
    size_t out_len;
    frame_t f;
    frame_error_t err;
    assert_true(CBB_init(&cbb, 128));
    assert_true(reply_connectfail(&cbb, PROTO_PYRO5, 0, NULL, MSG));
    assert_true(CBB_finish(&cbb, &out, &out_len));
    assert_int_equal(frame_parse_as(out, out_len, PROTO_PYRO5, 0, 1 << 20, &f, &err), FRAME_OK);
    assert_int_equal(f.type, MSG_CONNECTFAIL);
    assert_int_equal(f.wire_serializer, SER5_MARSHAL);
    assert_int_equal(f.wire_flags, 0);
    assert_int_equal(CBS_len(&f.payload), 5 + strlen(MSG));
    assert_int_equal(CBS_data(&f.payload)[0], 'u');
    OPENSSL_free(out);
}

static void test_connectfail_is_a_marshal_string_frame(void **state)
{
    /* Pyro4's client reads this with Message.recv, decodes it with the marshal serializer and
     * raises CommunicationError("connection to HOST:PORT rejected: " + MSG). */
    static const char expected[] = "PYRO\x00"
                                   "0\x00\x03\x00\x00\x00\x03\x00\x00\x00"
                                   "0\x00\x03\x00\x00\x00\x00"
                                   "5Ru+\x00\x00\x00" MSG;
    CBB cbb;
    uint8_t *out;
    size_t out_len;
    frame_t f;
    frame_error_t err;
    assert_true(CBB_init(&cbb, 128));
    assert_true(reply_connectfail(&cbb, PROTO_PYRO4, 3, NULL, MSG));
    assert_true(CBB_finish(&cbb, &out, &out_len));
    assert_int_equal(out_len, sizeof(expected) - 1);
    assert_memory_equal(out, expected, out_len);

    assert_int_equal(frame_parse(out, out_len, 1 << 20, &f, &err), FRAME_OK);
    assert_int_equal(f.type, MSG_CONNECTFAIL);
    assert_int_equal(f.flags, 0);
    assert_int_equal(f.seq, 3);
    assert_int_equal(f.serializer_id, SER4_MARSHAL);
    OPENSSL_free(out);
}

static void test_connectfail_masks_bytes_outside_printable_ascii(void **state)
{
    static const char expected_payload[] =
        "u'\x00\x00\x00quote ' dq \" bs \\ tab? nl? del? e?? end";
    CBB cbb;
    uint8_t *out;
    size_t out_len;
    frame_t f;
    frame_error_t err;
    assert_true(CBB_init(&cbb, 128));
    assert_true(reply_connectfail(&cbb, PROTO_PYRO4, 0, NULL, TRICKY));
    assert_true(CBB_finish(&cbb, &out, &out_len));
    assert_int_equal(frame_parse(out, out_len, 1 << 20, &f, &err), FRAME_OK);
    assert_int_equal(CBS_len(&f.payload), sizeof(expected_payload) - 1);
    assert_memory_equal(CBS_data(&f.payload), expected_payload, sizeof(expected_payload) - 1);
    OPENSSL_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serpent_payload_is_a_security_error_dict_literal),
        cmocka_unit_test(test_json_payload_is_a_security_error_object),
        cmocka_unit_test(test_marshal_payload_is_a_security_error_dict),
        cmocka_unit_test(test_msgpack_payload_is_a_security_error_map),
        cmocka_unit_test(test_pickle_payload_is_a_fixed_security_error_pickle),
        cmocka_unit_test(test_dill_payload_is_the_same_pickle),
        cmocka_unit_test(test_cloudpickle_payload_is_the_same_pickle),
        cmocka_unit_test(test_serpent_escapes_quote_and_backslash_and_masks_the_rest),
        cmocka_unit_test(test_json_escapes_double_quote_and_backslash_and_masks_the_rest),
        cmocka_unit_test(test_marshal_carries_the_masked_text_unescaped),
        cmocka_unit_test(test_every_byte_outside_printable_ascii_becomes_a_question_mark),
        cmocka_unit_test(test_empty_message_is_an_empty_string_argument),
        cmocka_unit_test(test_msgpack_message_of_31_bytes_is_a_fixstr),
        cmocka_unit_test(test_msgpack_message_of_32_bytes_is_a_str8),
        cmocka_unit_test(test_msgpack_message_of_255_bytes_is_a_str8),
        cmocka_unit_test(test_msgpack_message_of_256_bytes_is_a_str16),
        cmocka_unit_test(test_message_longer_than_1024_bytes_is_cut),
        cmocka_unit_test(
            test_security_error_is_an_exception_result_with_the_request_seq_and_serializer),
        cmocka_unit_test(test_serpent_security_error_frame_is_byte_exact),
        cmocka_unit_test(test_security_error_is_appended_after_existing_bytes),
        cmocka_unit_test(test_unknown_serializer_id_gets_no_security_error),
        cmocka_unit_test(test_connectfail_is_a_marshal_string_frame),
        cmocka_unit_test(test_refusals_for_protocols_47_and_46_carry_their_version_and_checksum),
        cmocka_unit_test(test_pyro5_refusals_are_pyro5_security_errors_with_the_request_corr_id),
        cmocka_unit_test(test_pyro5_serpent_security_error_payload_is_byte_exact),
        cmocka_unit_test(test_pyro5_has_no_pickle_to_answer_in),
        cmocka_unit_test(test_pyro5_connectfail_is_a_marshal_string_with_pyro5s_marshal_id),
        cmocka_unit_test(test_connectfail_masks_bytes_outside_printable_ascii),
    };
    return cmocka_run_group_tests_name("reply", tests, NULL, NULL);
}
