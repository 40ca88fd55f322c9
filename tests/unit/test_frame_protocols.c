/* Unit tests for proxy/frame.c beyond Pyro4 protocol 48: choosing a connection's protocol from
 * its first message, the older Pyro4 protocols 46 and 47 (PROTOCOL.md §13) and Pyro5 protocol 502
 * (§3).
 *
 * The Pyro5 positive cases use real captures of Pyro5 5.17 traffic copied from the shared
 * vector set into tests/vectors/pyro5/ (one file = one whole message); protocol 46/47 frames are
 * built here from the header layout, which is protocol 48's with another version (§13): no
 * capture of those versions exists, their Pyro4 releases do not run on the Python here. */
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
#define ALL_PROTOCOLS                                                                              \
    (FRAME_PROTO_BIT(PROTO_PYRO4_46) | FRAME_PROTO_BIT(PROTO_PYRO4_47) |                           \
     FRAME_PROTO_BIT(PROTO_PYRO4) | FRAME_PROTO_BIT(PROTO_PYRO5))

/* ---- helpers -------------------------------------------------------------------------- */

/* read_vector5 loads tests/vectors/pyro5/|rel|. */
static blob_t read_vector5(const char *rel)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/vectors/pyro5/%s", TEST_DATA_DIR, rel);
    blob_t b = read_path(path);
    assert_true(b.len >= FRAME5_HEADER_LEN);
    return b;
}

/* build builds a frame with frame_build_as into a blob. */
static blob_t build(frame_proto_t proto, uint16_t type, uint16_t flags, uint16_t seq, uint16_t ser,
                    const uint8_t *corr, const uint8_t *anns, size_t ann_len, const char *payload)
{
    CBB cbb;
    blob_t b;
    assert_true(CBB_init(&cbb, 64));
    assert_true(frame_build_as(&cbb, proto, type, flags, seq, ser, corr, anns, ann_len,
                               (const uint8_t *)payload, strlen(payload)));
    assert_true(CBB_finish(&cbb, &b.data, &b.len));
    return b;
}

/* A hand-built Pyro4 header of protocol |version| with a correct checksum. */
static void header4(uint8_t h[FRAME4_HEADER_LEN], uint16_t version, uint16_t type, uint16_t flags,
                    uint32_t data_len, uint16_t ser)
{
    memcpy(h, "PYRO", 4);
    put_u16(h + 4, version);
    put_u16(h + 6, type);
    put_u16(h + 8, flags);
    put_u16(h + 10, 1);
    put_u32(h + 12, data_len);
    put_u16(h + 16, ser);
    put_u16(h + 18, 0);
    put_u16(h + 20, 0);
    put_u16(h + 22, frame_checksum(type, version, data_len, 0, ser, flags, 1));
}

/* ---- choosing the protocol from the first message --------------------------------------- */

static void test_first_message_version_chooses_the_protocol_among_those_accepted(void **state)
{
    static const struct {
        frame_proto_t proto;
    } kCases[] = {{PROTO_PYRO4_46}, {PROTO_PYRO4_47}, {PROTO_PYRO4}, {PROTO_PYRO5}};
    for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
        blob_t b = build(kCases[i].proto, MSG_CONNECT, 0, 0, SER4_SERPENT, NULL, NULL, 0, "x");
        frame_t f;
        frame_error_t err;
        assert_int_equal(
            frame_parse_as(b.data, b.len, PROTO_NONE, ALL_PROTOCOLS, LIMIT_16MIB, &f, &err),
            FRAME_OK);
        assert_int_equal(f.proto, kCases[i].proto);
        assert_int_equal(f.total_len, b.len);
        assert_int_equal(f.header_len, frame_header_len(kCases[i].proto));
        OPENSSL_free(b.data);
    }
}

static void test_a_protocol_not_accepted_is_refused_once_its_version_arrives(void **state)
{
    uint32_t only48 = FRAME_PROTO_BIT(PROTO_PYRO4);
    frame_proto_t others[] = {PROTO_PYRO4_46, PROTO_PYRO4_47, PROTO_PYRO5};
    for (size_t i = 0; i < 3; i++) {
        blob_t b = build(others[i], MSG_CONNECT, 0, 0, SER4_SERPENT, NULL, NULL, 0, "x");
        frame_t f;
        frame_error_t err;
        assert_int_equal(frame_parse_as(b.data, 5, PROTO_NONE, only48, LIMIT_16MIB, &f, &err),
                         FRAME_NEED_MORE);
        assert_int_equal(frame_parse_as(b.data, 6, PROTO_NONE, only48, LIMIT_16MIB, &f, &err),
                         FRAME_ERROR);
        assert_int_equal(err, FRAME_ERR_VERSION);
        assert_string_equal(frame_error_reason(err), "protocol_version");
        OPENSSL_free(b.data);
    }
}

static void test_a_connection_cannot_change_protocol_after_its_first_message(void **state)
{
    /* Fixed to Pyro4 48: a Pyro5 message (or a 47 one) later on the same connection is
     * refused, even though both are accepted for a first message. */
    blob_t b5 = build(PROTO_PYRO5, MSG_INVOKE, 0, 1, SER4_SERPENT, NULL, NULL, 0, "x");
    blob_t b47 = build(PROTO_PYRO4_47, MSG_INVOKE, 0, 1, SER4_SERPENT, NULL, NULL, 0, "x");
    frame_t f;
    frame_error_t err;
    assert_int_equal(
        frame_parse_as(b5.data, b5.len, PROTO_PYRO4, ALL_PROTOCOLS, LIMIT_16MIB, &f, &err),
        FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_VERSION);
    assert_int_equal(
        frame_parse_as(b47.data, b47.len, PROTO_PYRO4, ALL_PROTOCOLS, LIMIT_16MIB, &f, &err),
        FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_VERSION);
    OPENSSL_free(b5.data);
    OPENSSL_free(b47.data);
}

static void test_unknown_versions_are_refused_whatever_is_accepted(void **state)
{
    static const uint16_t kVersions[] = {0, 45, 49, 500, 501, 503, 0xffff};
    for (size_t i = 0; i < sizeof(kVersions) / sizeof(kVersions[0]); i++) {
        uint8_t h[6] = {'P', 'Y', 'R', 'O', 0, 0};
        put_u16(h + 4, kVersions[i]);
        frame_t f;
        frame_error_t err;
        assert_int_equal(frame_parse_as(h, 6, PROTO_NONE, ALL_PROTOCOLS, LIMIT_16MIB, &f, &err),
                         FRAME_ERROR);
        assert_int_equal(err, FRAME_ERR_VERSION);
    }
}

/* ---- Pyro4 protocols 46 and 47 (PROTOCOL.md §13) ----------------------------------------- */

static void test_protocol_47_frame_parses_with_its_fields(void **state)
{
    uint8_t m[FRAME4_HEADER_LEN + 3];
    header4(m, 47, MSG_INVOKE, FLAG4_ONEWAY, 3, SER4_JSON);
    memcpy(m + FRAME4_HEADER_LEN, "abc", 3);
    frame_t f;
    frame_error_t err;
    assert_int_equal(frame_parse_as(m, sizeof(m), PROTO_PYRO4_47, 0, LIMIT_16MIB, &f, &err),
                     FRAME_OK);
    assert_int_equal(f.version, 47);
    assert_int_equal(f.type, MSG_INVOKE);
    assert_int_equal(f.flags, FLAG4_ONEWAY);
    assert_int_equal(f.serializer_id, SER4_JSON);
    assert_int_equal(CBS_len(&f.payload), 3);
}

static void test_protocol_47_checksum_covers_its_own_version(void **state)
{
    /* A checksum computed as if the version were 48 does not hold for a 47 frame. */
    uint8_t m[FRAME4_HEADER_LEN];
    header4(m, 47, MSG_INVOKE, 0, 0, SER4_SERPENT);
    put_u16(m + 22, frame_checksum(MSG_INVOKE, 48, 0, 0, SER4_SERPENT, 0, 1));
    frame_t f;
    frame_error_t err;
    assert_int_equal(frame_parse_as(m, sizeof(m), PROTO_PYRO4_47, 0, LIMIT_16MIB, &f, &err),
                     FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_CHECKSUM);
}

static void
test_protocol_46_and_47_flags_beyond_exception_compressed_oneway_are_reported(void **state)
{
    /* KEEPSERIALIZED (4.58), ITEMSTREAMRESULT (4.49) and META_ON_CONNECT (4.38) mean nothing to
     * a 4.22-4.37 daemon: it decodes the payload whatever BLBI says, so they are never given in
     * |flags|. BATCH's bit in 46/47 is not established (0x10 in 44/45, 0x08 in 48): both are
     * reported as unsupported, for inspection to refuse. The bits stay on the wire. */
    frame_proto_t protos[] = {PROTO_PYRO4_46, PROTO_PYRO4_47};
    static const uint16_t kOdd[] = {
        FLAG4_BATCH, FLAG4_META_ON_CONNECT, FLAG4_ITEMSTREAMRESULT, FLAG4_KEEPSERIALIZED, 0x0100,
        0x8000};
    for (size_t i = 0; i < 2; i++) {
        for (size_t k = 0; k < sizeof(kOdd) / sizeof(kOdd[0]); k++) {
            uint8_t m[FRAME4_HEADER_LEN];
            header4(m, protos[i] == PROTO_PYRO4_46 ? 46 : 47, MSG_INVOKE, kOdd[k] | FLAG4_ONEWAY, 0,
                    SER4_SERPENT);
            frame_t f;
            frame_error_t err;
            assert_int_equal(frame_parse_as(m, sizeof(m), protos[i], 0, LIMIT_16MIB, &f, &err),
                             FRAME_OK);
            assert_int_equal(f.flags, FLAG4_ONEWAY);
            assert_int_equal(f.wire_flags, kOdd[k] | FLAG4_ONEWAY);
            assert_int_equal(frame_unsupported_flags(&f), kOdd[k]);
        }
        uint8_t m[FRAME4_HEADER_LEN];
        header4(m, protos[i] == PROTO_PYRO4_46 ? 46 : 47, MSG_INVOKE,
                FLAG4_EXCEPTION | FLAG4_COMPRESSED | FLAG4_ONEWAY, 0, SER4_SERPENT);
        frame_t f;
        frame_error_t err;
        assert_int_equal(frame_parse_as(m, sizeof(m), protos[i], 0, LIMIT_16MIB, &f, &err),
                         FRAME_OK);
        assert_int_equal(frame_unsupported_flags(&f), 0);
    }
    /* Protocol 48 knows them (and its daemons ignore bits they do not know). */
    uint16_t later =
        FLAG4_BATCH | FLAG4_KEEPSERIALIZED | FLAG4_ITEMSTREAMRESULT | FLAG4_META_ON_CONNECT;
    uint8_t m[FRAME4_HEADER_LEN];
    header4(m, 48, MSG_INVOKE, later | 0x0100, 0, SER4_SERPENT);
    frame_t f;
    frame_error_t err;
    assert_int_equal(frame_parse_as(m, sizeof(m), PROTO_PYRO4, 0, LIMIT_16MIB, &f, &err), FRAME_OK);
    assert_int_equal(f.flags, later | 0x0100);
    assert_int_equal(frame_unsupported_flags(&f), 0);
}

static void test_replies_built_for_protocols_46_and_47_carry_their_version(void **state)
{
    frame_proto_t protos[] = {PROTO_PYRO4_46, PROTO_PYRO4_47};
    for (size_t i = 0; i < 2; i++) {
        blob_t b = build(protos[i], MSG_RESULT, FLAG4_EXCEPTION | FLAG4_ITEMSTREAMRESULT, 7,
                         SER4_SERPENT, NULL, NULL, 0, "payload");
        assert_int_equal((b.data[4] << 8) | b.data[5], protos[i] == PROTO_PYRO4_46 ? 46 : 47);
        frame_t f;
        frame_error_t err;
        assert_int_equal(frame_parse_as(b.data, b.len, protos[i], 0, LIMIT_16MIB, &f, &err),
                         FRAME_OK);
        assert_int_equal(f.wire_flags, FLAG4_EXCEPTION); /* a flag it lacks is not written */
        assert_int_equal(f.seq, 7);
        OPENSSL_free(b.data);
    }
}

/* ---- Pyro5 protocol 502 (PROTOCOL.md §3) ------------------------------------------------- */

static uint16_t serializer_of_dir(const char *name)
{
    if (strcmp(name, "serpent") == 0)
        return SER4_SERPENT;
    if (strcmp(name, "marshal") == 0)
        return SER4_MARSHAL;
    if (strcmp(name, "json") == 0)
        return SER4_JSON;
    if (strcmp(name, "msgpack") == 0)
        return SER4_MSGPACK;
    fail_msg("unexpected directory %s", name);
    return 0;
}

/* check_capture5: a captured Pyro5 message parses whole as Pyro5, with the serializer of its
 * directory, and frame_build_as gives back its exact bytes from the parsed fields. */
static void check_capture5(const char *path, uint16_t ser)
{
    blob_t b = read_path(path);
    frame_t f;
    frame_error_t err;
    if (frame_parse_as(b.data, b.len, PROTO_NONE, ALL_PROTOCOLS, LIMIT_16MIB, &f, &err) != FRAME_OK)
        fail_msg("%s: not parsed (%s)", path, frame_error_reason(err));
    /* Pyro5 sends PING with serializer id 42, which names no serializer (index.tsv). */
    if (f.type == MSG_PING)
        ser = SER_UNKNOWN;
    if (f.proto != PROTO_PYRO5 || f.total_len != b.len || f.serializer_id != ser)
        fail_msg("%s: proto %d, %zu of %zu bytes, serializer %u", path, f.proto, f.total_len, b.len,
                 f.serializer_id);
    /* A CONNECT's META_ON_CONNECT is implied (§4.2), not on the wire. */
    uint16_t flags = f.type == MSG_CONNECT ? f.flags & ~FLAG4_META_ON_CONNECT : f.flags;
    CBB cbb;
    uint8_t *out;
    size_t out_len;
    assert_true(CBB_init(&cbb, b.len));
    /* frame_build_as writes only serializers Pyro5 has: build a PING as serpent, then put its
     * id back. */
    uint16_t build_ser = ser == SER_UNKNOWN ? SER4_SERPENT : ser;
    assert_true(frame_build_as(&cbb, PROTO_PYRO5, f.type, flags, f.seq, build_ser,
                               (f.flags & FLAG_CORR_ID) ? f.corr_id : NULL,
                               CBS_data(&f.annotations), CBS_len(&f.annotations),
                               CBS_data(&f.payload), CBS_len(&f.payload)));
    assert_true(CBB_finish(&cbb, &out, &out_len));
    if (ser == SER_UNKNOWN && out_len > 7)
        out[7] = (uint8_t)f.wire_serializer;
    if (out_len != b.len || memcmp(out, b.data, b.len) != 0)
        fail_msg("%s: rebuilt differently", path);
    OPENSSL_free(out);
    free(b.data);
}

static void check_capture5_of(const char *path, const char *ser, void *arg)
{
    (void)arg;
    check_capture5(path, serializer_of_dir(ser));
}

static void test_every_captured_pyro5_message_parses_and_rebuilds_byte_for_byte(void **state)
{
    size_t n = for_each_vector("pyro5", ".bin", check_capture5_of, NULL);
    print_message("Pyro5 captures parsed and rebuilt: %zu\n", n);
    assert_true(n >= 200);
}

static void test_pyro5_serializer_4_is_msgpack_not_pickle(void **state)
{
    blob_t b = read_vector5("msgpack/echo/01_c2s_INVOKE.bin");
    frame_t f;
    frame_error_t err;
    assert_int_equal(frame_parse_as(b.data, b.len, PROTO_PYRO5, 0, LIMIT_16MIB, &f, &err),
                     FRAME_OK);
    assert_int_equal(f.wire_serializer, 4);
    assert_int_equal(f.serializer_id, SER4_MSGPACK);
    /* An id Pyro5 does not know is given as unknown, never as the Pyro4 serializer of that id. */
    for (uint8_t id = 5; id < 10; id++) {
        b.data[7] = id;
        assert_int_equal(frame_parse_as(b.data, b.len, PROTO_PYRO5, 0, LIMIT_16MIB, &f, &err),
                         FRAME_OK);
        assert_int_equal(f.serializer_id, SER_UNKNOWN);
    }
    free(b.data);
}

static void test_pyro5_flags_are_given_in_pyro4_numbering(void **state)
{
    static const struct {
        uint16_t wire, ours;
    } kCases[] = {
        {0x01, FLAG4_EXCEPTION},
        {0x02, FLAG4_COMPRESSED},
        {0x04, FLAG4_ONEWAY},
        {0x08, FLAG4_BATCH},
        {0x10, FLAG4_ITEMSTREAMRESULT},
        {0x20, FLAG4_KEEPSERIALIZED},
        {0x40, FLAG_CORR_ID},
        {0x80, 0},
        {0x8000, 0},
    };
    blob_t b = read_vector5("serpent/echo/01_c2s_INVOKE.bin");
    for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
        put_u16(b.data + 8, kCases[i].wire);
        frame_t f;
        frame_error_t err;
        assert_int_equal(frame_parse_as(b.data, b.len, PROTO_PYRO5, 0, LIMIT_16MIB, &f, &err),
                         FRAME_OK);
        assert_int_equal(f.flags, kCases[i].ours);
        assert_int_equal(f.wire_flags, kCases[i].wire);
    }
    free(b.data);
}

static void test_pyro5_connect_always_asks_for_metadata(void **state)
{
    blob_t b = read_vector5("serpent/echo/00_c2s_CONNECT.bin");
    frame_t f;
    frame_error_t err;
    assert_int_equal(frame_parse_as(b.data, b.len, PROTO_PYRO5, 0, LIMIT_16MIB, &f, &err),
                     FRAME_OK);
    assert_int_equal(f.wire_flags, 0);
    assert_true(f.flags & FLAG4_META_ON_CONNECT);
    free(b.data);
}

static void test_pyro5_wrong_magic_is_refused_from_the_header_alone(void **state)
{
    blob_t b = read_vector5("serpent/echo/01_c2s_INVOKE.bin");
    b.data[0x27] ^= 1;
    frame_t f;
    frame_error_t err;
    assert_int_equal(
        frame_parse_header_as(b.data, FRAME5_HEADER_LEN, PROTO_PYRO5, 0, LIMIT_16MIB, &f, &err),
        FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_CHECKSUM);
    free(b.data);
}

static void test_pyro5_header_needs_all_40_bytes(void **state)
{
    blob_t b = read_vector5("serpent/echo/01_c2s_INVOKE.bin");
    frame_t f;
    frame_error_t err;
    for (size_t n = 0; n < FRAME5_HEADER_LEN; n++)
        assert_int_equal(
            frame_parse_header_as(b.data, n, PROTO_NONE, ALL_PROTOCOLS, LIMIT_16MIB, &f, &err),
            FRAME_NEED_MORE);
    assert_int_equal(frame_parse_header_as(b.data, FRAME5_HEADER_LEN, PROTO_NONE, ALL_PROTOCOLS,
                                           LIMIT_16MIB, &f, &err),
                     FRAME_OK);
    assert_int_equal(f.total_len, b.len);
    free(b.data);
}

static void test_pyro5_lengths_over_the_limit_are_refused_from_the_header_alone(void **state)
{
    /* u32 lengths: 2^32-1 of payload, or annotations, is no overflow and no negative value. */
    uint8_t h[FRAME5_HEADER_LEN];
    blob_t b = read_vector5("serpent/echo/01_c2s_INVOKE.bin");
    memcpy(h, b.data, sizeof(h));
    free(b.data);
    frame_t f;
    frame_error_t err;
    put_u32(h + 12, 0xffffffffu);
    assert_int_equal(frame_parse_header_as(h, sizeof(h), PROTO_PYRO5, 0, LIMIT_16MIB, &f, &err),
                     FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_TOO_LARGE);
    put_u32(h + 12, 0);
    put_u32(h + 16, 0xffffffffu);
    assert_int_equal(frame_parse_header_as(h, sizeof(h), PROTO_PYRO5, 0, LIMIT_16MIB, &f, &err),
                     FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_TOO_LARGE);
    put_u32(h + 12, 0x80000000u); /* would be negative in Pyro4: here only large */
    put_u32(h + 16, 0);
    assert_int_equal(frame_parse_header_as(h, sizeof(h), PROTO_PYRO5, 0, SIZE_MAX, &f, &err),
                     FRAME_OK);
}

/* anns5 builds a Pyro5 annotation block: chunks of (key, u32 declared length, value bytes). */
static size_t chunk5(uint8_t *p, const char *key, uint32_t declared, const char *value)
{
    memcpy(p, key, 4);
    put_u32(p + 4, declared);
    memcpy(p + 8, value, strlen(value));
    return 8 + strlen(value);
}

static void test_pyro5_annotation_chunks_have_u32_lengths(void **state)
{
    uint8_t anns[64];
    size_t n = chunk5(anns, "BLBI", 3, "abc");
    n += chunk5(anns + n, "USER", 0, "");
    blob_t b = build(PROTO_PYRO5, MSG_INVOKE, 0, 1, SER4_SERPENT, NULL, anns, n, "x");
    frame_t f;
    frame_error_t err;
    assert_int_equal(frame_parse_as(b.data, b.len, PROTO_PYRO5, 0, LIMIT_16MIB, &f, &err),
                     FRAME_OK);
    CBS v;
    assert_true(frame_find_annotation(&f, "BLBI", &v));
    assert_int_equal(CBS_len(&v), 3);
    assert_true(frame_find_annotation(&f, "USER", &v));
    assert_int_equal(CBS_len(&v), 0);
    OPENSSL_free(b.data);
}

static void test_pyro5_annotation_chunk_overrunning_its_block_is_refused(void **state)
{
    /* Pyro5 up to 5.16 silently truncated such a chunk (§3.4): refused, as in Pyro4. */
    uint8_t anns[64];
    size_t n = chunk5(anns, "BLBI", 300, "abc");
    blob_t b = build(PROTO_PYRO5, MSG_INVOKE, 0, 1, SER4_SERPENT, NULL, anns, n, "x");
    frame_t f;
    frame_error_t err;
    assert_int_equal(frame_parse_as(b.data, b.len, PROTO_PYRO5, 0, LIMIT_16MIB, &f, &err),
                     FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_ANNOTATIONS);
    OPENSSL_free(b.data);
}

static void test_pyro5_duplicate_annotation_key_is_refused(void **state)
{
    uint8_t anns[64];
    size_t n = chunk5(anns, "BLBI", 1, "a");
    n += chunk5(anns + n, "BLBI", 1, "b");
    blob_t b = build(PROTO_PYRO5, MSG_INVOKE, 0, 1, SER4_SERPENT, NULL, anns, n, "x");
    frame_t f;
    frame_error_t err;
    assert_int_equal(frame_parse_as(b.data, b.len, PROTO_PYRO5, 0, LIMIT_16MIB, &f, &err),
                     FRAME_ERROR);
    assert_int_equal(err, FRAME_ERR_ANNOTATIONS);
    OPENSSL_free(b.data);
}

static void test_pyro5_chunk_read_with_pyro4_lengths_is_not_what_pyro5_reads(void **state)
{
    /* The same block iterated as Pyro4 (u16 lengths) goes wrong: the protocol must be given. */
    uint8_t anns[16];
    size_t n = chunk5(anns, "BLBI", 3, "abc");
    CBS it;
    frame_annotation_t a;
    CBS_init(&it, anns, n);
    assert_true(frame_annotation_next_as(&it, PROTO_PYRO5, &a));
    assert_int_equal(CBS_len(&a.value), 3);
    CBS_init(&it, anns, n);
    assert_true(!frame_annotation_next_as(&it, PROTO_PYRO4, &a) || CBS_len(&a.value) != 3);
}

static void test_pyro5_correlation_id_is_read_from_the_header_and_written_back(void **state)
{
    static const uint8_t corr[FRAME5_CORR_LEN] = {1, 2,  3,  4,  5,  6,  7,  8,
                                                  9, 10, 11, 12, 13, 14, 15, 16};
    blob_t b = build(PROTO_PYRO5, MSG_RESULT, FLAG4_EXCEPTION, 9, SER4_JSON, corr, NULL, 0, "{}");
    frame_t f;
    frame_error_t err;
    assert_int_equal(frame_parse_as(b.data, b.len, PROTO_PYRO5, 0, LIMIT_16MIB, &f, &err),
                     FRAME_OK);
    assert_int_equal(f.wire_flags, FLAG5_EXCEPTION | FLAG5_CORR_ID);
    assert_int_equal(f.flags, FLAG4_EXCEPTION | FLAG_CORR_ID);
    assert_memory_equal(f.corr_id, corr, sizeof(corr));
    assert_int_equal(f.wire_serializer, SER5_JSON);
    OPENSSL_free(b.data);
}

static void test_pyro5_build_refuses_a_serializer_pyro5_does_not_have(void **state)
{
    CBB cbb;
    assert_true(CBB_init(&cbb, 64));
    assert_false(
        frame_build_as(&cbb, PROTO_PYRO5, MSG_RESULT, 0, 1, SER4_PICKLE, NULL, NULL, 0, NULL, 0));
    CBB_cleanup(&cbb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_message_version_chooses_the_protocol_among_those_accepted),
        cmocka_unit_test(test_a_protocol_not_accepted_is_refused_once_its_version_arrives),
        cmocka_unit_test(test_a_connection_cannot_change_protocol_after_its_first_message),
        cmocka_unit_test(test_unknown_versions_are_refused_whatever_is_accepted),
        cmocka_unit_test(test_protocol_47_frame_parses_with_its_fields),
        cmocka_unit_test(test_protocol_47_checksum_covers_its_own_version),
        cmocka_unit_test(
            test_protocol_46_and_47_flags_beyond_exception_compressed_oneway_are_reported),
        cmocka_unit_test(test_replies_built_for_protocols_46_and_47_carry_their_version),
        cmocka_unit_test(test_every_captured_pyro5_message_parses_and_rebuilds_byte_for_byte),
        cmocka_unit_test(test_pyro5_serializer_4_is_msgpack_not_pickle),
        cmocka_unit_test(test_pyro5_flags_are_given_in_pyro4_numbering),
        cmocka_unit_test(test_pyro5_connect_always_asks_for_metadata),
        cmocka_unit_test(test_pyro5_wrong_magic_is_refused_from_the_header_alone),
        cmocka_unit_test(test_pyro5_header_needs_all_40_bytes),
        cmocka_unit_test(test_pyro5_lengths_over_the_limit_are_refused_from_the_header_alone),
        cmocka_unit_test(test_pyro5_annotation_chunks_have_u32_lengths),
        cmocka_unit_test(test_pyro5_annotation_chunk_overrunning_its_block_is_refused),
        cmocka_unit_test(test_pyro5_duplicate_annotation_key_is_refused),
        cmocka_unit_test(test_pyro5_chunk_read_with_pyro4_lengths_is_not_what_pyro5_reads),
        cmocka_unit_test(test_pyro5_correlation_id_is_read_from_the_header_and_written_back),
        cmocka_unit_test(test_pyro5_build_refuses_a_serializer_pyro5_does_not_have),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
