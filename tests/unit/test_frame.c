/* Unit tests for proxy/frame.c: the Pyro4 framer (PROTOCOL.md §2).
 *
 * The positive cases use real captures of Pyro4 4.82 traffic copied from the shared vector set
 * into tests/vectors/pyro4/ (one file = one whole message as it crossed the socket). The
 * negative cases are built byte by byte from the header layout of PROTOCOL.md §2.1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/bytestring.h>
#include <openssl/mem.h>

#include "frame.h"

#include "testframe.h"

#define LIMIT_16MIB ((size_t)16777216)

/* ---- helpers -------------------------------------------------------------------------- */

/* read_vector loads tests/vectors/pyro4/|rel| or fails the test. */
static blob_t read_vector(const char *rel)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/vectors/pyro4/%s", TEST_DATA_DIR, rel);
    blob_t b = read_path(path);
    assert_true(b.len >= FRAME4_HEADER_LEN);
    return b;
}

/* write_header writes a 24-byte Pyro4 header with the given fields and a correct checksum. */
static void write_header(uint8_t h[FRAME4_HEADER_LEN], uint16_t type, uint16_t flags, uint16_t seq,
                         uint32_t data_len, uint16_t ser, uint16_t ann_len)
{
    memcpy(h, "PYRO", 4);
    put_u16(h + 4, FRAME4_VERSION);
    put_u16(h + 6, type);
    put_u16(h + 8, flags);
    put_u16(h + 10, seq);
    put_u32(h + 12, data_len);
    put_u16(h + 16, ser);
    put_u16(h + 18, ann_len);
    put_u16(h + 20, 0);
    put_u16(h + 22, frame_checksum(type, FRAME4_VERSION, data_len, ann_len, ser, flags, seq));
}

/* build_frame frames |anns| (a raw chunk block, not validated) and |payload| with frame_build. */
static blob_t build_frame(const uint8_t *anns, size_t ann_len, const uint8_t *payload,
                          size_t payload_len)
{
    CBB cbb;
    blob_t b = {NULL, 0};
    assert_true(CBB_init(&cbb, 64));
    assert_true(
        frame_build(&cbb, MSG_INVOKE, 0, 1, SER4_SERPENT, anns, ann_len, payload, payload_len));
    assert_true(CBB_finish(&cbb, &b.data, &b.len));
    return b;
}

/* add_chunk appends one annotation chunk (4-byte key, u16 length, value) to |cbb|. */
static void add_chunk(CBB *cbb, const char key[4], const char *value, size_t n)
{
    assert_true(CBB_add_bytes(cbb, (const uint8_t *)key, 4));
    assert_true(CBB_add_u16(cbb, (uint16_t)n));
    assert_true(CBB_add_bytes(cbb, (const uint8_t *)value, n));
}

/* parse_with_annotations frames the chunk block in |cbb| and returns frame_parse's verdict. */
static frame_status_t parse_with_annotations(CBB *cbb, frame_error_t *err)
{
    uint8_t *anns;
    size_t ann_len;
    frame_t f;
    static const uint8_t payload[] = "# serpent utf-8 python3.2\n('thing','echo',('x',),{})";

    assert_true(CBB_finish(cbb, &anns, &ann_len));
    blob_t b = build_frame(anns, ann_len, payload, sizeof(payload) - 1);
    frame_status_t st = frame_parse(b.data, b.len, LIMIT_16MIB, &f, err);
    OPENSSL_free(anns);
    OPENSSL_free(b.data);
    return st;
}

/* ---- captured frames: every serializer, both directions -------------------------------- */

typedef struct {
    const char *file;
    uint16_t type;
    uint16_t flags;
    uint16_t seq;
    uint16_t serializer_id;
    uint32_t data_len;
    uint16_t ann_len;
} vector_t;

/* Expected header fields, as decoded by Python's struct module from the capture files
 * (vectors/pyro4/index.tsv lists the same). */
static const vector_t kVectors[] = {
    {"serpent/echo/00_c2s_CONNECT.bin", MSG_CONNECT, FLAG4_META_ON_CONNECT, 0, 1, 64, 0},
    {"serpent/echo/01_c2s_INVOKE.bin", MSG_INVOKE, 0, 1, 1, 56, 0},
    {"serpent/echo/00_s2c_CONNECTOK.bin", MSG_CONNECTOK, FLAG4_META_ON_CONNECT, 0, 1, 131, 22},
    {"serpent/echo/01_s2c_RESULT.bin", MSG_RESULT, 0, 1, 1, 33, 22},
    {"json/echo/00_c2s_CONNECT.bin", MSG_CONNECT, FLAG4_META_ON_CONNECT, 0, 2, 41, 0},
    {"json/echo/01_c2s_INVOKE.bin", MSG_INVOKE, 0, 1, 2, 72, 0},
    {"json/echo/00_s2c_CONNECTOK.bin", MSG_CONNECTOK, FLAG4_META_ON_CONNECT, 0, 2, 116, 22},
    {"json/echo/01_s2c_RESULT.bin", MSG_RESULT, 0, 1, 2, 7, 22},
    {"marshal/echo/00_c2s_CONNECT.bin", MSG_CONNECT, FLAG4_META_ON_CONNECT, 0, 3, 35, 0},
    {"marshal/echo/01_c2s_INVOKE.bin", MSG_INVOKE, 0, 1, 3, 29, 0},
    {"marshal/echo/00_s2c_CONNECTOK.bin", MSG_CONNECTOK, FLAG4_META_ON_CONNECT, 0, 3, 102, 22},
    {"marshal/echo/01_s2c_RESULT.bin", MSG_RESULT, 0, 1, 3, 7, 22},
    {"pickle/echo/00_c2s_CONNECT.bin", MSG_CONNECT, FLAG4_META_ON_CONNECT, 0, 4, 53, 0},
    {"pickle/echo/01_c2s_INVOKE.bin", MSG_INVOKE, 0, 1, 4, 42, 0},
    {"pickle/echo/00_s2c_CONNECTOK.bin", MSG_CONNECTOK, FLAG4_META_ON_CONNECT, 0, 4, 121, 22},
    {"pickle/echo/01_s2c_RESULT.bin", MSG_RESULT, 0, 1, 4, 20, 22},
    {"dill/echo/00_c2s_CONNECT.bin", MSG_CONNECT, FLAG4_META_ON_CONNECT, 0, 5, 53, 0},
    {"dill/echo/01_c2s_INVOKE.bin", MSG_INVOKE, 0, 1, 5, 42, 0},
    {"dill/echo/00_s2c_CONNECTOK.bin", MSG_CONNECTOK, FLAG4_META_ON_CONNECT, 0, 5, 121, 22},
    {"dill/echo/01_s2c_RESULT.bin", MSG_RESULT, 0, 1, 5, 20, 22},
    {"msgpack/echo/00_c2s_CONNECT.bin", MSG_CONNECT, FLAG4_META_ON_CONNECT, 0, 6, 30, 0},
    {"msgpack/echo/01_c2s_INVOKE.bin", MSG_INVOKE, 0, 1, 6, 20, 0},
    {"msgpack/echo/00_s2c_CONNECTOK.bin", MSG_CONNECTOK, FLAG4_META_ON_CONNECT, 0, 6, 77, 22},
    {"msgpack/echo/01_s2c_RESULT.bin", MSG_RESULT, 0, 1, 6, 6, 22},
    {"cloudpickle/echo/00_c2s_CONNECT.bin", MSG_CONNECT, FLAG4_META_ON_CONNECT, 0, 7, 53, 0},
    {"cloudpickle/echo/01_c2s_INVOKE.bin", MSG_INVOKE, 0, 1, 7, 42, 0},
    {"cloudpickle/echo/00_s2c_CONNECTOK.bin", MSG_CONNECTOK, FLAG4_META_ON_CONNECT, 0, 7, 121, 22},
    {"cloudpickle/echo/01_s2c_RESULT.bin", MSG_RESULT, 0, 1, 7, 20, 22},
    {"serpent/ping/01_c2s_PING.bin", MSG_PING, 0, 0, 42, 4, 0},
    {"serpent/ping/01_s2c_PING.bin", MSG_PING, 0, 0, 42, 4, 22},
    {"serpent/blob/01_c2s_INVOKE.bin", MSG_INVOKE, FLAG4_KEEPSERIALIZED, 1, 1, 59, 31},
    {"serpent/stream/01_s2c_RESULT.bin", MSG_RESULT, FLAG4_EXCEPTION | FLAG4_ITEMSTREAMRESULT, 1, 1,
     168, 42},
};

#define N_VECTORS (sizeof(kVectors) / sizeof(kVectors[0]))

/* One cmocka test per capture; its state is the vector_t. */
static void test_captured_frame_parses_with_its_header_fields(void **state)
{
    const vector_t *v = *state;
    frame_t f;
    frame_error_t err;
    blob_t b = read_vector(v->file);

    assert_int_equal(frame_parse(b.data, b.len, LIMIT_16MIB, &f, &err), FRAME_OK);
    assert_int_equal(err, FRAME_ERR_NONE);
    assert_int_equal(f.version, FRAME4_VERSION);
    assert_int_equal(f.type, v->type);
    assert_int_equal(f.flags, v->flags);
    assert_int_equal(f.seq, v->seq);
    assert_int_equal(f.serializer_id, v->serializer_id);
    assert_int_equal(f.data_len, v->data_len);
    assert_int_equal(f.ann_len, v->ann_len);
    assert_int_equal(f.total_len, b.len);
    assert_ptr_equal(CBS_data(&f.annotations), b.data + FRAME4_HEADER_LEN);
    assert_int_equal(CBS_len(&f.annotations), v->ann_len);
    assert_ptr_equal(CBS_data(&f.payload), b.data + FRAME4_HEADER_LEN + v->ann_len);
    assert_int_equal(CBS_len(&f.payload), v->data_len);
    free(b.data);
}

/* ---- checksum ------------------------------------------------------------------------- */

static void test_checksum_matches_the_protocol_md_example(void **state)
{
    /* PROTOCOL.md §2.1: 4+48+56+0+1+0+1+0x34E9 = 0x3557. */
    assert_int_equal(frame_checksum(MSG_INVOKE, 48, 56, 0, 1, 0, 1), 0x3557);
}

static void test_serpent_echo_invoke_header_is_the_protocol_md_example(void **state)
{
    static const uint8_t expected[FRAME4_HEADER_LEN] = {
        0x50, 0x59, 0x52, 0x4f, 0x00, 0x30, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x38, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x35, 0x57};
    blob_t b = read_vector("serpent/echo/01_c2s_INVOKE.bin");
    assert_memory_equal(b.data, expected, sizeof(expected));
    free(b.data);
}

static void test_checksum_wraps_modulo_65536(void **state)
{
    /* (5 + 48 + 0xffff + 0 + 6 + 0 + 0 + 0x34E9) mod 65536, computed with Python. */
    assert_int_equal(frame_checksum(MSG_RESULT, 48, 0xffff, 0, 6, 0, 0), 0x3523);
    /* All u16 fields at their maximum: (6*0xffff + 0x7fffffff + 0x34e9) mod 65536 = 0x34e2. */
    assert_int_equal(frame_checksum(0xffff, 0xffff, 0x7fffffff, 0xffff, 0xffff, 0xffff, 0xffff),
                     0x34e2);
}

static void test_checksum_of_a_negative_length_equals_pythons_signed_sum(void **state)
{
    /* Pyro4 sums the signed value: (4 + 48 + (-16) + 0 + 1 + 0 + 1 + 0x34E9) & 0xffff = 0x350f,
     * computed with Python. The unsigned 0xfffffff0 must give the same. */
    assert_int_equal(frame_checksum(MSG_INVOKE, 48, 0xfffffff0u, 0, 1, 0, 1), 0x350f);
}

/* ---- need more ------------------------------------------------------------------------ */

static void test_every_proper_prefix_of_a_frame_needs_more(void **state)
{
    frame_t f;
    frame_error_t err;
    blob_t b = read_vector("serpent/echo/00_s2c_CONNECTOK.bin");

    for (size_t n = 0; n < b.len; n++) {
        err = FRAME_ERR_CHECKSUM;
        if (frame_parse(b.data, n, LIMIT_16MIB, &f, &err) != FRAME_NEED_MORE)
            fail_msg("prefix of %zu bytes did not need more", n);
        assert_int_equal(err, FRAME_ERR_NONE);
    }
    assert_int_equal(frame_parse(b.data, b.len, LIMIT_16MIB, &f, &err), FRAME_OK);
    free(b.data);
}

static void test_header_parse_needs_only_24_bytes(void **state)
{
    frame_t f;
    frame_error_t err;
    blob_t b = read_vector("serpent/echo/00_s2c_CONNECTOK.bin");

    for (size_t n = 0; n < FRAME4_HEADER_LEN; n++)
        assert_int_equal(frame_parse_header(b.data, n, LIMIT_16MIB, &f, &err), FRAME_NEED_MORE);
    assert_int_equal(frame_parse_header(b.data, FRAME4_HEADER_LEN, LIMIT_16MIB, &f, &err),
                     FRAME_OK);
    assert_int_equal(f.type, MSG_CONNECTOK);
    assert_int_equal(f.total_len, FRAME4_HEADER_LEN + 22 + 131);
    /* The views are not set by the header parse. */
    assert_int_equal(CBS_len(&f.annotations), 0);
    assert_int_equal(CBS_len(&f.payload), 0);
    free(b.data);
}

static void test_empty_input_needs_more(void **state)
{
    frame_t f;
    frame_error_t err;
    static const uint8_t none[1] = {0};
    assert_int_equal(frame_parse(none, 0, LIMIT_16MIB, &f, &err), FRAME_NEED_MORE);
}

/* ---- foreign protocols and versions --------------------------------------------------- */

static void test_http_request_is_refused_at_its_first_byte(void **state)
{
    frame_t f;
    frame_error_t err;
    static const uint8_t get[] = "GET / HTTP/1.1\r\n";
    assert_int_equal(frame_parse(get, 1, LIMIT_16MIB, &f, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_NOT_PYRO);
    assert_string_equal(frame_error_reason(err), "not_pyro");
}

static void test_tls_client_hello_is_refused_at_its_first_byte(void **state)
{
    frame_t f;
    frame_error_t err;
    static const uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00};
    assert_int_equal(frame_parse(hello, 1, LIMIT_16MIB, &f, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_NOT_PYRO);
}

static void test_wrong_magic_byte_is_refused_as_soon_as_it_arrives(void **state)
{
    frame_t f;
    frame_error_t err;
    static const uint8_t pyx[] = "PYX";
    assert_int_equal(frame_parse(pyx, 2, LIMIT_16MIB, &f, &err), FRAME_NEED_MORE);
    assert_int_equal(frame_parse(pyx, 3, LIMIT_16MIB, &f, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_NOT_PYRO);
}

static void test_lowercase_magic_is_refused(void **state)
{
    frame_t f;
    frame_error_t err;
    uint8_t h[FRAME4_HEADER_LEN];
    write_header(h, MSG_CONNECT, 0, 0, 0, SER4_SERPENT, 0);
    h[3] = 'o';
    assert_int_equal(frame_parse(h, sizeof(h), LIMIT_16MIB, &f, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_NOT_PYRO);
}

static void test_pyro4_protocol_47_is_refused_once_six_bytes_are_there(void **state)
{
    frame_t f;
    frame_error_t err;
    static const uint8_t v47[] = {'P', 'Y', 'R', 'O', 0x00, 0x2f};
    assert_int_equal(frame_parse(v47, 5, LIMIT_16MIB, &f, &err), FRAME_NEED_MORE);
    assert_int_equal(frame_parse(v47, 6, LIMIT_16MIB, &f, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_VERSION);
    assert_string_equal(frame_error_reason(err), "protocol_version");
}

static void test_pyro5_protocol_502_is_refused_once_six_bytes_are_there(void **state)
{
    frame_t f;
    frame_error_t err;
    static const uint8_t v502[] = {'P', 'Y', 'R', 'O', 0x01, 0xf6};
    assert_int_equal(frame_parse(v502, 5, LIMIT_16MIB, &f, &err), FRAME_NEED_MORE);
    assert_int_equal(frame_parse(v502, 6, LIMIT_16MIB, &f, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_VERSION);
}

/* ---- checksum and length refusals ----------------------------------------------------- */

static void test_bad_checksum_is_refused(void **state)
{
    frame_t f;
    frame_error_t err;
    blob_t b = read_vector("serpent/echo/01_c2s_INVOKE.bin");
    b.data[23] ^= 0x01;
    assert_int_equal(frame_parse(b.data, b.len, LIMIT_16MIB, &f, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_CHECKSUM);
    assert_string_equal(frame_error_reason(err), "bad_checksum");
    free(b.data);
}

static void test_flag_changed_without_fixing_the_checksum_is_refused(void **state)
{
    frame_t f;
    frame_error_t err;
    blob_t b = read_vector("serpent/echo/01_c2s_INVOKE.bin");
    b.data[9] |= FLAG4_ONEWAY;
    assert_int_equal(frame_parse(b.data, b.len, LIMIT_16MIB, &f, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_CHECKSUM);
    free(b.data);
}

static void test_checksum_error_is_reported_from_the_header_alone(void **state)
{
    frame_t f;
    frame_error_t err;
    blob_t b = read_vector("serpent/echo/01_c2s_INVOKE.bin");
    b.data[22] ^= 0x80;
    assert_int_equal(frame_parse(b.data, FRAME4_HEADER_LEN, LIMIT_16MIB, &f, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_CHECKSUM);
    free(b.data);
}

static void test_reserved_field_is_ignored_like_pyro_does(void **state)
{
    frame_t f;
    frame_error_t err;
    blob_t b = read_vector("serpent/echo/01_c2s_INVOKE.bin");
    /* PROTOCOL.md §2.1: not covered by the checksum, ignored on receipt. */
    b.data[20] = 0xbe;
    b.data[21] = 0xef;
    assert_int_equal(frame_parse(b.data, b.len, LIMIT_16MIB, &f, &err), FRAME_OK);
    assert_int_equal(f.type, MSG_INVOKE);
    free(b.data);
}

static void test_negative_length_is_refused_even_with_a_valid_checksum(void **state)
{
    frame_t f;
    frame_error_t err;
    uint8_t h[FRAME4_HEADER_LEN];
    write_header(h, MSG_INVOKE, 0, 1, 0xfffffff0u, SER4_SERPENT, 0);
    /* The checksum written is the one Pyro4 itself accepts for data length -16. */
    assert_int_equal((h[22] << 8) | h[23], 0x350f);
    assert_int_equal(frame_parse(h, sizeof(h), SIZE_MAX, &f, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_NEGATIVE_LENGTH);
    assert_string_equal(frame_error_reason(err), "negative_length");
}

static void test_int32_min_length_is_refused_as_negative(void **state)
{
    frame_t f;
    frame_error_t err;
    uint8_t h[FRAME4_HEADER_LEN];
    write_header(h, MSG_INVOKE, 0, 1, 0x80000000u, SER4_SERPENT, 0);
    assert_int_equal(frame_parse_header(h, sizeof(h), SIZE_MAX, &f, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_NEGATIVE_LENGTH);
}

static void test_largest_signed_length_is_accepted_when_the_limit_allows(void **state)
{
    frame_t f;
    frame_error_t err;
    uint8_t h[FRAME4_HEADER_LEN];
    write_header(h, MSG_INVOKE, 0, 1, 0x7fffffffu, SER4_SERPENT, 0);
    assert_int_equal(frame_parse_header(h, sizeof(h), SIZE_MAX, &f, &err), FRAME_OK);
    assert_int_equal(f.data_len, 0x7fffffffu);
    assert_int_equal(f.total_len, (size_t)FRAME4_HEADER_LEN + 0x7fffffffu);
    assert_int_equal(frame_parse(h, sizeof(h), SIZE_MAX, &f, &err), FRAME_NEED_MORE);
}

static void test_data_over_the_limit_is_refused_from_the_header_alone(void **state)
{
    frame_t f;
    frame_error_t err;
    uint8_t h[FRAME4_HEADER_LEN];
    write_header(h, MSG_INVOKE, 0, 1, 1025, SER4_SERPENT, 0);
    /* Only the header has arrived: the refusal must not wait for 1025 bytes of payload. */
    assert_int_equal(frame_parse(h, sizeof(h), 1024, &f, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_TOO_LARGE);
    assert_string_equal(frame_error_reason(err), "message_too_large");
}

static void test_annotations_count_towards_the_limit(void **state)
{
    frame_t f;
    frame_error_t err;
    uint8_t h[FRAME4_HEADER_LEN];
    write_header(h, MSG_INVOKE, 0, 1, 1000, SER4_SERPENT, 25);
    assert_int_equal(frame_parse(h, sizeof(h), 1024, &f, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_TOO_LARGE);
}

static void test_message_exactly_at_the_limit_is_awaited(void **state)
{
    frame_t f;
    frame_error_t err;
    uint8_t h[FRAME4_HEADER_LEN];
    write_header(h, MSG_INVOKE, 0, 1, 1000, SER4_SERPENT, 24);
    assert_int_equal(frame_parse(h, sizeof(h), 1024, &f, &err), FRAME_NEED_MORE);
    assert_int_equal(err, FRAME_ERR_NONE);
    assert_int_equal(frame_parse_header(h, sizeof(h), 1024, &f, &err), FRAME_OK);
    assert_int_equal(f.total_len, FRAME4_HEADER_LEN + 1024);
}

static void test_header_parse_refuses_what_the_full_parse_refuses(void **state)
{
    frame_t f;
    frame_error_t err;
    uint8_t h[FRAME4_HEADER_LEN];
    write_header(h, MSG_RESULT, 0, 1, 2048, SER4_SERPENT, 0);
    assert_int_equal(frame_parse_header(h, sizeof(h), 1024, &f, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_TOO_LARGE);
}

/* ---- annotation blocks ---------------------------------------------------------------- */

static void test_annotation_chunk_overrunning_its_block_is_refused(void **state)
{
    CBB cbb;
    frame_error_t err;
    assert_true(CBB_init(&cbb, 64));
    /* Declares 16 value bytes, carries 10: Pyro4 would silently truncate (PROTOCOL.md §2.2). */
    assert_true(CBB_add_bytes(&cbb, (const uint8_t *)"CORR", 4));
    assert_true(CBB_add_u16(&cbb, 16));
    assert_true(CBB_add_bytes(&cbb, (const uint8_t *)"0123456789", 10));
    assert_int_equal(parse_with_annotations(&cbb, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_ANNOTATIONS);
    assert_string_equal(frame_error_reason(err), "bad_annotations");
}

static void test_trailing_fragment_of_1_to_5_bytes_is_refused(void **state)
{
    static const uint8_t fragment[5] = {'H', 'M', 'A', 'C', 0x00};
    for (size_t n = 1; n <= 5; n++) {
        CBB cbb;
        frame_error_t err = FRAME_ERR_NONE;
        assert_true(CBB_init(&cbb, 64));
        add_chunk(&cbb, "CORR", "0123456789abcdef", 16);
        assert_true(CBB_add_bytes(&cbb, fragment, n));
        if (parse_with_annotations(&cbb, &err) != FRAME_ERROR || err != FRAME_ERR_ANNOTATIONS)
            fail_msg("a trailing fragment of %zu bytes was not refused", n);
    }
}

static void test_annotation_block_of_only_a_fragment_is_refused(void **state)
{
    CBB cbb;
    frame_error_t err;
    assert_true(CBB_init(&cbb, 8));
    assert_true(CBB_add_bytes(&cbb, (const uint8_t *)"BLB", 3));
    assert_int_equal(parse_with_annotations(&cbb, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_ANNOTATIONS);
}

static void test_duplicate_annotation_key_is_refused(void **state)
{
    CBB cbb;
    frame_error_t err;
    assert_true(CBB_init(&cbb, 64));
    /* Pyro4 keeps the last BLBI (PROTOCOL.md §2.2, live blob_duplicate_BLBI); a filter that
     * read the first would judge a different call. */
    add_chunk(&cbb, "BLBI", "first", 5);
    add_chunk(&cbb, "CORR", "0123456789abcdef", 16);
    add_chunk(&cbb, "BLBI", "second", 6);
    assert_int_equal(parse_with_annotations(&cbb, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_ANNOTATIONS);
}

static void test_non_ascii_annotation_key_is_refused(void **state)
{
    CBB cbb;
    frame_error_t err;
    assert_true(CBB_init(&cbb, 64));
    add_chunk(&cbb, "CO\xc3\xa9", "x", 1);
    assert_int_equal(parse_with_annotations(&cbb, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_ANNOTATIONS);
}

static void test_key_with_high_bit_in_last_byte_is_refused(void **state)
{
    CBB cbb;
    frame_error_t err;
    assert_true(CBB_init(&cbb, 64));
    add_chunk(&cbb, "COR\x80", "x", 1);
    assert_int_equal(parse_with_annotations(&cbb, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_ANNOTATIONS);
}

/* add_numbered_chunks adds |n| chunks with distinct keys "K000", "K001"… */
static void add_numbered_chunks(CBB *cbb, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char key[5] = {'K', (char)('0' + i / 100 % 10), (char)('0' + i / 10 % 10),
                       (char)('0' + i % 10), '\0'};
        add_chunk(cbb, key, "v", 1);
    }
}

static void test_65_annotation_chunks_are_refused(void **state)
{
    CBB cbb;
    frame_error_t err;
    assert_true(CBB_init(&cbb, 512));
    add_numbered_chunks(&cbb, FRAME_MAX_ANNOTATIONS + 1);
    assert_int_equal(parse_with_annotations(&cbb, &err), FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_ANNOTATIONS);
}

static void test_64_annotation_chunks_are_accepted(void **state)
{
    CBB cbb;
    frame_error_t err;
    assert_true(CBB_init(&cbb, 512));
    add_numbered_chunks(&cbb, FRAME_MAX_ANNOTATIONS);
    assert_int_equal(parse_with_annotations(&cbb, &err), FRAME_OK);
    assert_int_equal(err, FRAME_ERR_NONE);
}

static void test_empty_annotation_value_is_accepted(void **state)
{
    CBB cbb;
    frame_error_t err;
    assert_true(CBB_init(&cbb, 16));
    add_chunk(&cbb, "USER", "", 0);
    assert_int_equal(parse_with_annotations(&cbb, &err), FRAME_OK);
}

static void test_largest_annotation_block_is_accepted(void **state)
{
    CBB cbb;
    frame_error_t err;
    static char value[0xffff - 6];
    memset(value, 'a', sizeof(value));
    assert_true(CBB_init(&cbb, 0x10000));
    add_chunk(&cbb, "USER", value, sizeof(value));
    assert_int_equal(parse_with_annotations(&cbb, &err), FRAME_OK);
}

static void test_annotation_error_waits_for_the_whole_message(void **state)
{
    CBB cbb;
    uint8_t *anns;
    size_t ann_len;
    frame_t f;
    frame_error_t err;
    assert_true(CBB_init(&cbb, 16));
    assert_true(CBB_add_bytes(&cbb, (const uint8_t *)"BLB", 3));
    assert_true(CBB_finish(&cbb, &anns, &ann_len));
    blob_t b = build_frame(anns, ann_len, (const uint8_t *)"payload", 7);
    /* The block is only judged once all of it is there. */
    assert_int_equal(frame_parse(b.data, b.len - 1, LIMIT_16MIB, &f, &err), FRAME_NEED_MORE);
    assert_int_equal(frame_parse(b.data, b.len, LIMIT_16MIB, &f, &err), FRAME_ERROR);
    OPENSSL_free(anns);
    OPENSSL_free(b.data);
}

/* ---- reading annotations -------------------------------------------------------------- */

static void test_corr_annotation_of_a_captured_reply_is_found(void **state)
{
    frame_t f;
    frame_error_t err;
    CBS corr;
    blob_t b = read_vector("serpent/echo/00_s2c_CONNECTOK.bin");
    assert_int_equal(frame_parse(b.data, b.len, LIMIT_16MIB, &f, &err), FRAME_OK);
    assert_true(frame_find_annotation(&f, "CORR", &corr));
    /* The value follows the 4-byte key and the 2-byte length of the first chunk. */
    assert_ptr_equal(CBS_data(&corr), b.data + FRAME4_HEADER_LEN + 6);
    assert_int_equal(CBS_len(&corr), 16);
    free(b.data);
}

static void test_blbi_annotation_of_a_captured_keepserialized_invoke_is_found(void **state)
{
    frame_t f;
    frame_error_t err;
    CBS blbi;
    /* PROTOCOL.md §5.3: BLBI = marshal (small tuple of 3) ('blobinfo', 'thing', 'blob'). */
    static const uint8_t expected[] = {0x29, 0x03, 0xda, 0x08, 'b',  'l', 'o', 'b', 'i',
                                       'n',  'f',  'o',  0xfa, 0x05, 't', 'h', 'i', 'n',
                                       'g',  0xda, 0x04, 'b',  'l',  'o', 'b'};
    blob_t b = read_vector("serpent/blob/01_c2s_INVOKE.bin");
    assert_int_equal(frame_parse(b.data, b.len, LIMIT_16MIB, &f, &err), FRAME_OK);
    assert_true(frame_find_annotation(&f, "BLBI", &blbi));
    assert_int_equal(CBS_len(&blbi), sizeof(expected));
    assert_memory_equal(CBS_data(&blbi), expected, sizeof(expected));
    free(b.data);
}

static void test_absent_annotation_is_not_found(void **state)
{
    frame_t f;
    frame_error_t err;
    CBS v;
    blob_t b = read_vector("serpent/echo/00_s2c_CONNECTOK.bin");
    assert_int_equal(frame_parse(b.data, b.len, LIMIT_16MIB, &f, &err), FRAME_OK);
    assert_false(frame_find_annotation(&f, "HMAC", &v));
    assert_false(frame_find_annotation(&f, "corr", &v));
    free(b.data);
}

static void test_frame_without_annotations_finds_nothing(void **state)
{
    frame_t f;
    frame_error_t err;
    CBS v;
    blob_t b = read_vector("serpent/echo/01_c2s_INVOKE.bin");
    assert_int_equal(frame_parse(b.data, b.len, LIMIT_16MIB, &f, &err), FRAME_OK);
    assert_false(frame_find_annotation(&f, "CORR", &v));
    free(b.data);
}

static void test_annotation_iteration_visits_every_chunk_in_order(void **state)
{
    CBB cbb;
    uint8_t *anns;
    size_t ann_len;
    CBS it;
    frame_annotation_t a;
    assert_true(CBB_init(&cbb, 64));
    add_chunk(&cbb, "CORR", "0123456789abcdef", 16);
    add_chunk(&cbb, "USER", "", 0);
    add_chunk(&cbb, "BLBI", "xyz", 3);
    assert_true(CBB_finish(&cbb, &anns, &ann_len));
    CBS_init(&it, anns, ann_len);

    assert_true(frame_annotation_next(&it, &a));
    assert_string_equal(a.key, "CORR");
    assert_int_equal(CBS_len(&a.value), 16);
    assert_memory_equal(CBS_data(&a.value), "0123456789abcdef", 16);
    assert_true(frame_annotation_next(&it, &a));
    assert_string_equal(a.key, "USER");
    assert_int_equal(CBS_len(&a.value), 0);
    assert_true(frame_annotation_next(&it, &a));
    assert_string_equal(a.key, "BLBI");
    assert_memory_equal(CBS_data(&a.value), "xyz", 3);
    assert_false(frame_annotation_next(&it, &a));
    assert_int_equal(CBS_len(&it), 0);
    OPENSSL_free(anns);
}

static void test_annotation_iteration_stops_at_a_truncated_chunk(void **state)
{
    static const uint8_t anns[] = {'C', 'O', 'R', 'R', 0x00, 0x10, 'a', 'b'};
    CBS it;
    frame_annotation_t a;
    CBS_init(&it, anns, sizeof(anns));
    assert_false(frame_annotation_next(&it, &a));
    /* Distinguishable from the end of the block. */
    assert_int_not_equal(CBS_len(&it), 0);
}

static void test_bad_key_in_the_last_chunk_is_not_reported_as_the_end(void **state)
{
    static const uint8_t anns[] = {'C', 'O', 0xc3, 0xa9, 0x00, 0x01, 'x'};
    CBS it;
    frame_annotation_t a;
    CBS_init(&it, anns, sizeof(anns));
    assert_false(frame_annotation_next(&it, &a));
    assert_int_not_equal(CBS_len(&it), 0);
}

/* ---- streams of frames ---------------------------------------------------------------- */

static void test_two_frames_back_to_back_parse_one_at_a_time(void **state)
{
    frame_t f;
    frame_error_t err;
    blob_t a = read_vector("serpent/echo/00_c2s_CONNECT.bin");
    blob_t b = read_vector("serpent/echo/01_c2s_INVOKE.bin");
    uint8_t *both = malloc(a.len + b.len);
    assert_non_null(both);
    memcpy(both, a.data, a.len);
    memcpy(both + a.len, b.data, b.len);

    assert_int_equal(frame_parse(both, a.len + b.len, LIMIT_16MIB, &f, &err), FRAME_OK);
    assert_int_equal(f.type, MSG_CONNECT);
    assert_int_equal(f.total_len, a.len);
    assert_int_equal(CBS_len(&f.payload), 64);
    assert_int_equal(frame_parse(both + a.len, b.len, LIMIT_16MIB, &f, &err), FRAME_OK);
    assert_int_equal(f.type, MSG_INVOKE);
    assert_int_equal(f.seq, 1);
    assert_int_equal(f.total_len, b.len);
    free(both);
    free(a.data);
    free(b.data);
}

static void test_frame_followed_by_a_partial_one_parses_the_first(void **state)
{
    frame_t f;
    frame_error_t err;
    blob_t a = read_vector("serpent/echo/00_c2s_CONNECT.bin");
    blob_t b = read_vector("serpent/echo/01_c2s_INVOKE.bin");
    uint8_t *both = malloc(a.len + 10);
    assert_non_null(both);
    memcpy(both, a.data, a.len);
    memcpy(both + a.len, b.data, 10);

    assert_int_equal(frame_parse(both, a.len + 10, LIMIT_16MIB, &f, &err), FRAME_OK);
    assert_int_equal(f.total_len, a.len);
    assert_int_equal(frame_parse(both + a.len, 10, LIMIT_16MIB, &f, &err), FRAME_NEED_MORE);
    free(both);
    free(a.data);
    free(b.data);
}

/* ---- building ------------------------------------------------------------------------- */

static void test_built_frame_round_trips_through_parse(void **state)
{
    CBB cbb, anns;
    uint8_t *ann_bytes, *out;
    size_t ann_len, out_len;
    frame_t f;
    frame_error_t err;
    CBS corr;
    static const uint8_t payload[] = "{\"object\": \"thing\", \"method\": \"echo\"}";

    assert_true(CBB_init(&anns, 32));
    add_chunk(&anns, "CORR", "fedcba9876543210", 16);
    assert_true(CBB_finish(&anns, &ann_bytes, &ann_len));
    assert_true(CBB_init(&cbb, 128));
    assert_true(frame_build(&cbb, MSG_INVOKE, FLAG4_ONEWAY | FLAG4_BATCH, 0xfffe, SER4_JSON,
                            ann_bytes, ann_len, payload, sizeof(payload) - 1));
    assert_true(CBB_finish(&cbb, &out, &out_len));

    assert_int_equal(frame_parse(out, out_len, LIMIT_16MIB, &f, &err), FRAME_OK);
    assert_int_equal(f.version, FRAME4_VERSION);
    assert_int_equal(f.type, MSG_INVOKE);
    assert_int_equal(f.flags, FLAG4_ONEWAY | FLAG4_BATCH);
    assert_int_equal(f.seq, 0xfffe);
    assert_int_equal(f.serializer_id, SER4_JSON);
    assert_int_equal(f.ann_len, 22);
    assert_int_equal(f.data_len, sizeof(payload) - 1);
    assert_int_equal(f.total_len, out_len);
    assert_memory_equal(CBS_data(&f.payload), payload, sizeof(payload) - 1);
    assert_true(frame_find_annotation(&f, "CORR", &corr));
    assert_memory_equal(CBS_data(&corr), "fedcba9876543210", 16);
    /* The reserved field is written as 0. */
    assert_int_equal(out[20], 0);
    assert_int_equal(out[21], 0);
    OPENSSL_free(ann_bytes);
    OPENSSL_free(out);
}

/* rebuild_matches frames the fields parsed from capture |file| and compares the bytes. */
static void rebuild_matches(const char *file)
{
    CBB cbb;
    uint8_t *out;
    size_t out_len;
    frame_t f;
    frame_error_t err;
    blob_t b = read_vector(file);

    assert_int_equal(frame_parse(b.data, b.len, LIMIT_16MIB, &f, &err), FRAME_OK);
    assert_true(CBB_init(&cbb, b.len));
    assert_true(frame_build(&cbb, f.type, f.flags, f.seq, f.serializer_id, CBS_data(&f.annotations),
                            CBS_len(&f.annotations), CBS_data(&f.payload), CBS_len(&f.payload)));
    assert_true(CBB_finish(&cbb, &out, &out_len));
    assert_int_equal(out_len, b.len);
    assert_memory_equal(out, b.data, b.len);
    OPENSSL_free(out);
    free(b.data);
}

static void test_built_invoke_is_byte_identical_to_the_pyro4_capture(void **state)
{
    rebuild_matches("serpent/echo/01_c2s_INVOKE.bin");
}

static void test_built_reply_with_corr_is_byte_identical_to_the_pyro4_capture(void **state)
{
    rebuild_matches("serpent/echo/00_s2c_CONNECTOK.bin");
}

static void test_build_refuses_annotations_over_65535_bytes(void **state)
{
    CBB cbb;
    static uint8_t big[0x10000];
    assert_true(CBB_init(&cbb, 64));
    assert_false(frame_build(&cbb, MSG_INVOKE, 0, 1, SER4_SERPENT, big, sizeof(big), NULL, 0));
    CBB_cleanup(&cbb);
}

static void test_build_refuses_a_payload_over_2_31_minus_1_bytes(void **state)
{
    CBB cbb;
    static const uint8_t small[1] = {0};
    assert_true(CBB_init(&cbb, 64));
    /* The size is checked before any byte is read, so a short buffer is never touched. */
    assert_false(
        frame_build(&cbb, MSG_INVOKE, 0, 1, SER4_SERPENT, NULL, 0, small, (size_t)0x80000000u));
    CBB_cleanup(&cbb);
}

/* ---- PING ----------------------------------------------------------------------------- */

static void test_ping_with_serializer_id_42_parses(void **state)
{
    frame_t f;
    frame_error_t err;
    blob_t b = read_vector("serpent/ping/01_c2s_PING.bin");
    assert_int_equal(frame_parse(b.data, b.len, LIMIT_16MIB, &f, &err), FRAME_OK);
    assert_int_equal(f.type, MSG_PING);
    /* PROTOCOL.md §2.5: real clients send 42; the framer must not judge serializer ids. */
    assert_int_equal(f.serializer_id, 42);
    assert_null(frame_serializer_name(f.serializer_id));
    assert_int_equal(CBS_len(&f.payload), 4);
    assert_memory_equal(CBS_data(&f.payload), "ping", 4);
    free(b.data);
}

/* ---- names ---------------------------------------------------------------------------- */

static void test_type_and_serializer_names_follow_pyro4(void **state)
{
    assert_string_equal(frame_type_name(MSG_CONNECT), "CONNECT");
    assert_string_equal(frame_type_name(MSG_CONNECTOK), "CONNECTOK");
    assert_string_equal(frame_type_name(MSG_CONNECTFAIL), "CONNECTFAIL");
    assert_string_equal(frame_type_name(MSG_INVOKE), "INVOKE");
    assert_string_equal(frame_type_name(MSG_RESULT), "RESULT");
    assert_string_equal(frame_type_name(MSG_PING), "PING");
    assert_string_equal(frame_type_name(7), "UNKNOWN");
    assert_string_equal(frame_serializer_name(1), "serpent");
    assert_string_equal(frame_serializer_name(2), "json");
    assert_string_equal(frame_serializer_name(3), "marshal");
    assert_string_equal(frame_serializer_name(4), "pickle");
    assert_string_equal(frame_serializer_name(5), "dill");
    assert_string_equal(frame_serializer_name(6), "msgpack");
    assert_string_equal(frame_serializer_name(7), "cloudpickle");
    assert_null(frame_serializer_name(0));
    assert_null(frame_serializer_name(8));
}

static void test_error_reasons_are_the_stable_log_names(void **state)
{
    assert_string_equal(frame_error_reason(FRAME_ERR_NONE), "none");
    assert_string_equal(frame_error_reason(FRAME_ERR_NOT_PYRO), "not_pyro");
    assert_string_equal(frame_error_reason(FRAME_ERR_VERSION), "protocol_version");
    assert_string_equal(frame_error_reason(FRAME_ERR_CHECKSUM), "bad_checksum");
    assert_string_equal(frame_error_reason(FRAME_ERR_NEGATIVE_LENGTH), "negative_length");
    assert_string_equal(frame_error_reason(FRAME_ERR_TOO_LARGE), "message_too_large");
    assert_string_equal(frame_error_reason(FRAME_ERR_ANNOTATIONS), "bad_annotations");
}

/* ---- main ----------------------------------------------------------------------------- */

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_checksum_matches_the_protocol_md_example),
        cmocka_unit_test(test_serpent_echo_invoke_header_is_the_protocol_md_example),
        cmocka_unit_test(test_checksum_wraps_modulo_65536),
        cmocka_unit_test(test_checksum_of_a_negative_length_equals_pythons_signed_sum),
        cmocka_unit_test(test_every_proper_prefix_of_a_frame_needs_more),
        cmocka_unit_test(test_header_parse_needs_only_24_bytes),
        cmocka_unit_test(test_empty_input_needs_more),
        cmocka_unit_test(test_http_request_is_refused_at_its_first_byte),
        cmocka_unit_test(test_tls_client_hello_is_refused_at_its_first_byte),
        cmocka_unit_test(test_wrong_magic_byte_is_refused_as_soon_as_it_arrives),
        cmocka_unit_test(test_lowercase_magic_is_refused),
        cmocka_unit_test(test_pyro4_protocol_47_is_refused_once_six_bytes_are_there),
        cmocka_unit_test(test_pyro5_protocol_502_is_refused_once_six_bytes_are_there),
        cmocka_unit_test(test_bad_checksum_is_refused),
        cmocka_unit_test(test_flag_changed_without_fixing_the_checksum_is_refused),
        cmocka_unit_test(test_checksum_error_is_reported_from_the_header_alone),
        cmocka_unit_test(test_reserved_field_is_ignored_like_pyro_does),
        cmocka_unit_test(test_negative_length_is_refused_even_with_a_valid_checksum),
        cmocka_unit_test(test_int32_min_length_is_refused_as_negative),
        cmocka_unit_test(test_largest_signed_length_is_accepted_when_the_limit_allows),
        cmocka_unit_test(test_data_over_the_limit_is_refused_from_the_header_alone),
        cmocka_unit_test(test_annotations_count_towards_the_limit),
        cmocka_unit_test(test_message_exactly_at_the_limit_is_awaited),
        cmocka_unit_test(test_header_parse_refuses_what_the_full_parse_refuses),
        cmocka_unit_test(test_annotation_chunk_overrunning_its_block_is_refused),
        cmocka_unit_test(test_trailing_fragment_of_1_to_5_bytes_is_refused),
        cmocka_unit_test(test_annotation_block_of_only_a_fragment_is_refused),
        cmocka_unit_test(test_duplicate_annotation_key_is_refused),
        cmocka_unit_test(test_non_ascii_annotation_key_is_refused),
        cmocka_unit_test(test_key_with_high_bit_in_last_byte_is_refused),
        cmocka_unit_test(test_65_annotation_chunks_are_refused),
        cmocka_unit_test(test_64_annotation_chunks_are_accepted),
        cmocka_unit_test(test_empty_annotation_value_is_accepted),
        cmocka_unit_test(test_largest_annotation_block_is_accepted),
        cmocka_unit_test(test_annotation_error_waits_for_the_whole_message),
        cmocka_unit_test(test_corr_annotation_of_a_captured_reply_is_found),
        cmocka_unit_test(test_blbi_annotation_of_a_captured_keepserialized_invoke_is_found),
        cmocka_unit_test(test_absent_annotation_is_not_found),
        cmocka_unit_test(test_frame_without_annotations_finds_nothing),
        cmocka_unit_test(test_annotation_iteration_visits_every_chunk_in_order),
        cmocka_unit_test(test_annotation_iteration_stops_at_a_truncated_chunk),
        cmocka_unit_test(test_bad_key_in_the_last_chunk_is_not_reported_as_the_end),
        cmocka_unit_test(test_two_frames_back_to_back_parse_one_at_a_time),
        cmocka_unit_test(test_frame_followed_by_a_partial_one_parses_the_first),
        cmocka_unit_test(test_built_frame_round_trips_through_parse),
        cmocka_unit_test(test_built_invoke_is_byte_identical_to_the_pyro4_capture),
        cmocka_unit_test(test_built_reply_with_corr_is_byte_identical_to_the_pyro4_capture),
        cmocka_unit_test(test_build_refuses_annotations_over_65535_bytes),
        cmocka_unit_test(test_build_refuses_a_payload_over_2_31_minus_1_bytes),
        cmocka_unit_test(test_ping_with_serializer_id_42_parses),
        cmocka_unit_test(test_type_and_serializer_names_follow_pyro4),
        cmocka_unit_test(test_error_reasons_are_the_stable_log_names),
    };
    enum { N_FIXED = sizeof(fixed) / sizeof(fixed[0]) };
    static struct CMUnitTest tests[N_FIXED + N_VECTORS];
    static char names[N_VECTORS][128];

    for (size_t i = 0; i < N_VECTORS; i++) {
        snprintf(names[i], sizeof(names[i]),
                 "test_captured_frame_parses_with_its_header_fields(%s)", kVectors[i].file);
        tests[i].name = names[i];
        tests[i].test_func = test_captured_frame_parses_with_its_header_fields;
        tests[i].initial_state = (void *)(uintptr_t)&kVectors[i];
    }
    memcpy(tests + N_VECTORS, fixed, sizeof(fixed));
    return _cmocka_run_group_tests("frame", tests, N_FIXED + N_VECTORS, NULL, NULL);
}
