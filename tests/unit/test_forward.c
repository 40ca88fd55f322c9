/* Unit tests for proxy/forward.c: the caller's identity as JSON, and the "PGID" annotation chunk
 * added to a forwarded CONNECT or INVOKE (frame_rebuild underneath).
 *
 * The rewrite is run over every captured client CONNECT and INVOKE of Pyro4 4.82 (with CORR,
 * BLBI and user chunks: tests/vectors/pyro4, pyro4-captured) and Pyro5 5.17 (tests/vectors/pyro5,
 * whose messages carry a stale BLBI); the result must parse as its protocol, with the same header
 * fields, the same payload, the client's chunks in order and one PGID chunk last. Protocols 46 and
 * 47, odd flag bits, spoofed PGID and HMAC chunks are built here. Certificates are minted in
 * process (testcert.h) and read with identity_from_x509, as a TLS handshake hands them over; the
 * JSON is read back with pyroguard's own json decoder, which reads as Python's json.loads. */
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

#include "decode.h"
#include "forward.h"
#include "frame.h"
#include "identity.h"
#include "value.h"

#include "testcert.h"
#include "testframe.h"

#define LIMIT_16MIB ((size_t)16777216)
#define ALL_PROTOCOLS                                                                              \
    (FRAME_PROTO_BIT(PROTO_PYRO4_46) | FRAME_PROTO_BIT(PROTO_PYRO4_47) |                           \
     FRAME_PROTO_BIT(PROTO_PYRO4) | FRAME_PROTO_BIT(PROTO_PYRO5))

static const char kJson[] = "{\"v\":1,\"listener\":\"app\",\"cn\":\"billing-client\"}";
static const char kSpoof[] = "{\"v\":1,\"cn\":\"admin\"}";

/* ---- helpers -------------------------------------------------------------------------- */

static void parse_ok(const uint8_t *data, size_t len, frame_t *f)
{
    frame_error_t err;
    assert_int_equal(frame_parse_as(data, len, PROTO_NONE, ALL_PROTOCOLS, LIMIT_16MIB, f, &err),
                     FRAME_OK);
    assert_int_equal(f->total_len, len);
}

/* build builds a message with frame_build_as into a blob freed with OPENSSL_free. */
static blob_t build(frame_proto_t proto, uint16_t type, uint16_t flags, const uint8_t *corr,
                    const uint8_t *anns, size_t ann_len, const char *payload)
{
    CBB cbb;
    blob_t b;
    assert_true(CBB_init(&cbb, 64));
    assert_true(frame_build_as(&cbb, proto, type, flags, 7, SER4_SERPENT, corr, anns, ann_len,
                               (const uint8_t *)payload, strlen(payload)));
    assert_true(CBB_finish(&cbb, &b.data, &b.len));
    return b;
}

/* add_chunk appends one |proto| annotation chunk to |cbb|. */
static void add_chunk(CBB *cbb, frame_proto_t proto, const char *key, const void *value, size_t n)
{
    assert_true(CBB_add_bytes(cbb, (const uint8_t *)key, 4));
    assert_true(proto == PROTO_PYRO5 ? CBB_add_u32(cbb, (uint32_t)n)
                                     : CBB_add_u16(cbb, (uint16_t)n));
    assert_true(CBB_add_bytes(cbb, value, n));
}

/* rewrite runs forward_rewrite on |f| with |json| and returns the new message (OPENSSL_free). */
static blob_t rewrite(const frame_t *f, const char *json, size_t json_len)
{
    CBB out;
    blob_t b;
    assert_true(CBB_init(&out, 0));
    assert_int_equal(forward_rewrite(&out, f, (const uint8_t *)json, json_len), FORWARD_OK);
    assert_true(CBB_finish(&out, &b.data, &b.len));
    return b;
}

/* refused runs forward_rewrite on |f| and returns its status, checking that nothing was
 * written. */
static forward_status_t refused(const frame_t *f, const char *json, size_t json_len)
{
    CBB out;
    assert_true(CBB_init(&out, 0));
    forward_status_t st = forward_rewrite(&out, f, (const uint8_t *)json, json_len);
    assert_int_not_equal(st, FORWARD_OK);
    assert_int_equal(CBB_len(&out), 0);
    CBB_cleanup(&out);
    return st;
}

/* chunks lists the annotation chunks of |f|, leaving out those named |skip| (NULL: none). */
static size_t chunks(const frame_t *f, const char *skip, frame_annotation_t out[], size_t max)
{
    CBS anns = f->annotations;
    frame_annotation_t a;
    size_t n = 0;
    while (frame_annotation_next_as(&anns, f->proto, &a)) {
        if (skip != NULL && memcmp(a.key, skip, 4) == 0)
            continue;
        assert_true(n < max);
        out[n++] = a;
    }
    assert_int_equal(CBS_len(&anns), 0);
    return n;
}

static void assert_cbs_equal(const CBS *a, const CBS *b)
{
    assert_int_equal(CBS_len(a), CBS_len(b));
    assert_memory_equal(CBS_data(a), CBS_data(b), CBS_len(a));
}

/* check_rewritten: |r| is |orig| with its PGID chunks replaced by one carrying |json|, last. */
static void check_rewritten(const frame_t *orig, const blob_t *r, const char *json, size_t json_len)
{
    frame_t g;
    frame_error_t err;
    assert_int_equal(frame_parse_as(r->data, r->len, orig->proto, 0, LIMIT_16MIB, &g, &err),
                     FRAME_OK);
    assert_int_equal(g.total_len, r->len);
    assert_int_equal(g.proto, orig->proto);
    assert_int_equal(g.version, orig->version);
    assert_int_equal(g.type, orig->type);
    assert_int_equal(g.wire_flags, orig->wire_flags);
    assert_int_equal(g.flags, orig->flags);
    assert_int_equal(g.seq, orig->seq);
    assert_int_equal(g.wire_serializer, orig->wire_serializer);
    assert_int_equal(g.serializer_id, orig->serializer_id);
    assert_memory_equal(g.corr_id, orig->corr_id, FRAME5_CORR_LEN);
    assert_cbs_equal(&g.payload, &orig->payload);
    if (g.proto != PROTO_PYRO5)
        assert_int_equal(g.checksum,
                         frame_checksum(g.type, g.version, g.data_len, (uint16_t)g.ann_len,
                                        g.wire_serializer, g.wire_flags, g.seq));

    frame_annotation_t before[FRAME_MAX_ANNOTATIONS], after[FRAME_MAX_ANNOTATIONS];
    size_t nb = chunks(orig, FORWARD_KEY, before, FRAME_MAX_ANNOTATIONS);
    size_t na = chunks(&g, NULL, after, FRAME_MAX_ANNOTATIONS);
    assert_int_equal(na, nb + 1);
    for (size_t i = 0; i < nb; i++) {
        assert_string_equal(after[i].key, before[i].key);
        assert_cbs_equal(&after[i].value, &before[i].value);
    }
    assert_string_equal(after[nb].key, FORWARD_KEY);
    assert_int_equal(CBS_len(&after[nb].value), json_len);
    assert_memory_equal(CBS_data(&after[nb].value), json, json_len);
}

/* ---- every captured CONNECT and INVOKE -------------------------------------------------- */

typedef struct {
    size_t messages;
    size_t with_corr, with_blbi, with_user;
} tally_t;

static void rewrite_vector(const char *path, const char *ser, void *arg)
{
    tally_t *t = arg;
    CBS v;
    (void)ser;
    blob_t b = read_path(path);
    frame_t f;
    parse_ok(b.data, b.len, &f);
    if (f.type == MSG_CONNECT || f.type == MSG_INVOKE) {
        blob_t r = rewrite(&f, kJson, strlen(kJson));
        check_rewritten(&f, &r, kJson, strlen(kJson));
        /* No captured client sends PGID: the message grows by one chunk. */
        assert_int_equal(r.len, b.len + (f.proto == PROTO_PYRO5 ? 8 : 6) + strlen(kJson));
        t->messages++;
        t->with_corr += frame_find_annotation(&f, "CORR", &v);
        t->with_blbi += frame_find_annotation(&f, "BLBI", &v);
        t->with_user += frame_find_annotation(&f, "XTRA", &v);
        OPENSSL_free(r.data);
    }
    free(b.data);
}

static void test_every_captured_pyro4_request_gets_one_pgid_chunk_after_its_own(void **state)
{
    tally_t t = {0, 0, 0, 0};
    for_each_vector("pyro4", "_c2s_", rewrite_vector, &t);
    for_each_vector("pyro4-captured", "_c2s_", rewrite_vector, &t);
    print_message("pyro4 requests rewritten: %zu (CORR %zu, BLBI %zu, user chunks %zu)\n",
                  t.messages, t.with_corr, t.with_blbi, t.with_user);
    assert_true(t.messages > 100);
    assert_true(t.with_corr > 0);
    assert_true(t.with_blbi > 0);
    assert_true(t.with_user > 0);
}

static void test_every_captured_pyro5_request_gets_one_pgid_chunk_after_its_own(void **state)
{
    tally_t t = {0, 0, 0, 0};
    for_each_vector("pyro5", "_c2s_", rewrite_vector, &t);
    print_message("pyro5 requests rewritten: %zu (BLBI %zu)\n", t.messages, t.with_blbi);
    assert_true(t.messages > 50);
    assert_true(t.with_blbi > 0);
}

/* The exact bytes: only the annotation length (and the Pyro4 checksum) change in the header,
 * the client's block is copied, then key, length and JSON, then the payload. */
static void expect_exact_bytes(const char *rel, size_t ann_len_offset, size_t len_field)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/vectors/%s", TEST_DATA_DIR, rel);
    blob_t b = read_path(path);
    frame_t f;
    parse_ok(b.data, b.len, &f);
    assert_true(f.ann_len > 0);
    blob_t r = rewrite(&f, kJson, strlen(kJson));
    size_t h = f.header_len, json_len = strlen(kJson);
    size_t add = 4 + len_field + json_len;
    assert_int_equal(r.len, b.len + add);

    /* Header: identical but for the annotation length (and the Pyro4 checksum, last). */
    uint8_t want[FRAME_MAX_HEADER_LEN];
    memcpy(want, b.data, h);
    uint32_t ann = f.ann_len + (uint32_t)add;
    if (len_field == 4)
        put_u32(want + ann_len_offset, ann);
    else
        put_u16(want + ann_len_offset, (uint16_t)ann);
    if (f.proto != PROTO_PYRO5)
        put_u16(want + 22, frame_checksum(f.type, f.version, f.data_len, (uint16_t)ann,
                                          f.wire_serializer, f.wire_flags, f.seq));
    assert_memory_equal(r.data, want, h);

    assert_memory_equal(r.data + h, b.data + h, f.ann_len);
    const uint8_t *p = r.data + h + f.ann_len;
    assert_memory_equal(p, "PGID", 4);
    if (len_field == 4)
        assert_int_equal((p[4] << 24) | (p[5] << 16) | (p[6] << 8) | p[7], json_len);
    else
        assert_int_equal((p[4] << 8) | p[5], json_len);
    assert_memory_equal(p + 4 + len_field, kJson, json_len);
    assert_memory_equal(p + 4 + len_field + json_len, b.data + h + f.ann_len, f.data_len);
    OPENSSL_free(r.data);
    free(b.data);
}

static void test_pyro4_correlation_chunk_and_payload_are_kept_byte_for_byte(void **state)
{
    expect_exact_bytes("pyro4-captured/json/correlation/c0_01_c2s_INVOKE.bin", 18, 2);
    expect_exact_bytes("pyro4-captured/serpent/user_annotations/c0_00_c2s_CONNECT.bin", 18, 2);
    expect_exact_bytes("pyro4/msgpack/blob/01_c2s_INVOKE.bin", 18, 2);
}

static void test_pyro5_blob_chunk_and_payload_are_kept_byte_for_byte(void **state)
{
    expect_exact_bytes("pyro5/serpent/blob/01_c2s_INVOKE.bin", 16, 4);
    expect_exact_bytes("pyro5/marshal/echo/00_c2s_CONNECT.bin", 16, 4);
}

/* ---- spoofing, HMAC, sizes -------------------------------------------------------------- */

static void spoofed_pgid_is_replaced(frame_proto_t proto, uint16_t type)
{
    CBB anns;
    uint8_t *block;
    size_t block_len;
    assert_true(CBB_init(&anns, 0));
    add_chunk(&anns, proto, "XTRA", "user data", 9);
    add_chunk(&anns, proto, "PGID", kSpoof, strlen(kSpoof));
    add_chunk(&anns, proto, "BLBI", "\x29\x03", 2);
    assert_true(CBB_finish(&anns, &block, &block_len));
    blob_t b = build(proto, type, 0, NULL, block, block_len, "payload");
    frame_t f;
    parse_ok(b.data, b.len, &f);

    blob_t r = rewrite(&f, kJson, strlen(kJson));
    check_rewritten(&f, &r, kJson, strlen(kJson));
    assert_null(memmem(r.data, r.len, kSpoof, strlen(kSpoof)));
    frame_t g;
    parse_ok(r.data, r.len, &g);
    frame_annotation_t a[4];
    assert_int_equal(chunks(&g, NULL, a, 4), 3);
    assert_string_equal(a[0].key, "XTRA");
    assert_string_equal(a[1].key, "BLBI");
    assert_string_equal(a[2].key, "PGID");
    OPENSSL_free(r.data);
    OPENSSL_free(b.data);
    OPENSSL_free(block);
}

static void test_a_pgid_chunk_sent_by_the_client_is_replaced_not_kept(void **state)
{
    spoofed_pgid_is_replaced(PROTO_PYRO4, MSG_CONNECT);
    spoofed_pgid_is_replaced(PROTO_PYRO4, MSG_INVOKE);
    spoofed_pgid_is_replaced(PROTO_PYRO5, MSG_CONNECT);
    spoofed_pgid_is_replaced(PROTO_PYRO5, MSG_INVOKE);
}

static void test_every_client_pgid_chunk_is_removed_even_two_of_them(void **state)
{
    /* frame_parse_as refuses duplicate keys, so a frame_t is made by hand from the header: the
     * rewrite must not rely on there being one. */
    frame_proto_t protos[] = {PROTO_PYRO4, PROTO_PYRO5};
    for (size_t i = 0; i < 2; i++) {
        CBB anns;
        uint8_t *block;
        size_t block_len;
        assert_true(CBB_init(&anns, 0));
        add_chunk(&anns, protos[i], "PGID", kSpoof, strlen(kSpoof));
        add_chunk(&anns, protos[i], "CORR", "0123456789abcdef", 16);
        add_chunk(&anns, protos[i], "PGID", "second", 6);
        assert_true(CBB_finish(&anns, &block, &block_len));
        blob_t b = build(protos[i], MSG_INVOKE, 0, NULL, block, block_len, "payload");
        frame_t f;
        frame_error_t err;
        assert_int_equal(frame_parse_as(b.data, b.len, protos[i], 0, LIMIT_16MIB, &f, &err),
                         FRAME_ERROR);
        assert_int_equal(frame_parse_header_as(b.data, b.len, protos[i], 0, LIMIT_16MIB, &f, &err),
                         FRAME_OK);
        CBS_init(&f.annotations, b.data + f.header_len, f.ann_len);
        CBS_init(&f.payload, b.data + f.header_len + f.ann_len, f.data_len);

        blob_t r = rewrite(&f, kJson, strlen(kJson));
        check_rewritten(&f, &r, kJson, strlen(kJson));
        assert_null(memmem(r.data, r.len, kSpoof, strlen(kSpoof)));
        assert_null(memmem(r.data, r.len, "second", 6));
        OPENSSL_free(r.data);
        OPENSSL_free(b.data);
        OPENSSL_free(block);
    }
}

static void test_a_message_with_an_hmac_chunk_is_not_rewritten(void **state)
{
    static const uint8_t kMac[20] = {1, 2, 3};
    frame_proto_t protos[] = {PROTO_PYRO4, PROTO_PYRO4_47, PROTO_PYRO5};
    for (size_t i = 0; i < 3; i++) {
        CBB anns;
        uint8_t *block;
        size_t block_len;
        assert_true(CBB_init(&anns, 0));
        add_chunk(&anns, protos[i], "PGID", kSpoof, strlen(kSpoof));
        add_chunk(&anns, protos[i], "HMAC", kMac, sizeof(kMac));
        assert_true(CBB_finish(&anns, &block, &block_len));
        blob_t b = build(protos[i], MSG_INVOKE, 0, NULL, block, block_len, "payload");
        frame_t f;
        parse_ok(b.data, b.len, &f);
        assert_int_equal(refused(&f, kJson, strlen(kJson)), FORWARD_HMAC);
        /* HMAC wins over a JSON that would be too large as well. */
        assert_int_equal(refused(&f, kJson, FORWARD_MAX_JSON + 1), FORWARD_HMAC);
        OPENSSL_free(b.data);
        OPENSSL_free(block);
    }
}

/* pyro4_with_chunk builds a Pyro4 INVOKE whose one chunk has a |n|-byte value. */
static blob_t pyro4_with_chunk(size_t n)
{
    CBB anns;
    uint8_t *block;
    size_t block_len;
    uint8_t *value = calloc(n ? n : 1, 1);
    assert_non_null(value);
    assert_true(CBB_init(&anns, 0));
    add_chunk(&anns, PROTO_PYRO4, "XTRA", value, n);
    assert_true(CBB_finish(&anns, &block, &block_len));
    blob_t b = build(PROTO_PYRO4, MSG_INVOKE, 0, NULL, block, block_len, "payload");
    OPENSSL_free(block);
    free(value);
    return b;
}

static void test_a_pyro4_annotation_block_over_65535_bytes_is_too_large(void **state)
{
    size_t json_len = strlen(kJson);
    /* Client chunk 6 + n bytes, PGID chunk 6 + json_len: 65535 in all fits, 65536 not. */
    size_t n_fits = 65535 - 6 - 6 - json_len;

    blob_t b = pyro4_with_chunk(n_fits);
    frame_t f;
    parse_ok(b.data, b.len, &f);
    blob_t r = rewrite(&f, kJson, json_len);
    check_rewritten(&f, &r, kJson, json_len);
    frame_t g;
    parse_ok(r.data, r.len, &g);
    assert_int_equal(g.ann_len, 65535);
    OPENSSL_free(r.data);
    OPENSSL_free(b.data);

    b = pyro4_with_chunk(n_fits + 1);
    parse_ok(b.data, b.len, &f);
    assert_int_equal(refused(&f, kJson, json_len), FORWARD_TOO_LARGE);
    OPENSSL_free(b.data);
}

/* with_chunks builds a |proto| INVOKE with |n| distinct small client chunks (and a PGID one
 * when |pgid|). */
static blob_t with_chunks(frame_proto_t proto, size_t n, int pgid)
{
    CBB anns;
    uint8_t *block;
    size_t block_len;
    assert_true(CBB_init(&anns, 0));
    for (size_t i = 0; i < n; i++) {
        char key[5] = {'X', (char)('0' + i / 100 % 10), (char)('0' + i / 10 % 10),
                       (char)('0' + i % 10), '\0'};
        add_chunk(&anns, proto, key, (const uint8_t *)"v", 1);
    }
    if (pgid)
        add_chunk(&anns, proto, FORWARD_KEY, (const uint8_t *)"{}", 2);
    assert_true(CBB_finish(&anns, &block, &block_len));
    blob_t b = build(proto, MSG_INVOKE, 0, NULL, block, block_len, "payload");
    OPENSSL_free(block);
    return b;
}

/* What pyroguard forwards it would itself accept: 63 client chunks and ours make the 64 a
 * message may have; a 64th kept chunk leaves no room (found by fuzz_forward). A client PGID
 * chunk does not count: it is replaced. */
static void test_a_message_with_64_chunks_of_its_own_is_too_large(void **state)
{
    frame_proto_t protos[] = {PROTO_PYRO4, PROTO_PYRO5};
    size_t json_len = strlen(kJson);
    for (size_t i = 0; i < 2; i++) {
        frame_t f, g;
        blob_t b = with_chunks(protos[i], FRAME_MAX_ANNOTATIONS - 1, 0);
        parse_ok(b.data, b.len, &f);
        blob_t r = rewrite(&f, kJson, json_len);
        check_rewritten(&f, &r, kJson, json_len);
        parse_ok(r.data, r.len, &g);
        OPENSSL_free(r.data);
        OPENSSL_free(b.data);

        b = with_chunks(protos[i], FRAME_MAX_ANNOTATIONS - 1, 1); /* 64 with a spoofed PGID */
        parse_ok(b.data, b.len, &f);
        r = rewrite(&f, kJson, json_len);
        parse_ok(r.data, r.len, &g);
        OPENSSL_free(r.data);
        OPENSSL_free(b.data);

        b = with_chunks(protos[i], FRAME_MAX_ANNOTATIONS, 0);
        parse_ok(b.data, b.len, &f);
        assert_int_equal(refused(&f, kJson, json_len), FORWARD_TOO_LARGE);
        OPENSSL_free(b.data);
    }
}

static void test_identity_json_over_16_kib_is_too_large(void **state)
{
    char *json = malloc(FORWARD_MAX_JSON + 1);
    assert_non_null(json);
    memset(json, 'x', FORWARD_MAX_JSON + 1);
    frame_proto_t protos[] = {PROTO_PYRO4, PROTO_PYRO5};
    for (size_t i = 0; i < 2; i++) {
        blob_t b = build(protos[i], MSG_INVOKE, 0, NULL, NULL, 0, "payload");
        frame_t f;
        parse_ok(b.data, b.len, &f);
        blob_t r = rewrite(&f, json, FORWARD_MAX_JSON);
        check_rewritten(&f, &r, json, FORWARD_MAX_JSON);
        assert_int_equal(refused(&f, json, FORWARD_MAX_JSON + 1), FORWARD_TOO_LARGE);
        OPENSSL_free(r.data);
        OPENSSL_free(b.data);
    }
    free(json);
}

/* ---- the header as sent ------------------------------------------------------------------ */

/* A hand-built Pyro4 header of protocol |version| with wire flags |flags| and a correct
 * checksum, followed by |payload|. */
static blob_t pyro4_raw(uint16_t version, uint16_t flags, uint16_t ser, const char *payload)
{
    size_t n = strlen(payload);
    blob_t b = {malloc(FRAME4_HEADER_LEN + n), FRAME4_HEADER_LEN + n};
    assert_non_null(b.data);
    memcpy(b.data, "PYRO", 4);
    put_u16(b.data + 4, version);
    put_u16(b.data + 6, MSG_INVOKE);
    put_u16(b.data + 8, flags);
    put_u16(b.data + 10, 513);
    put_u32(b.data + 12, (uint32_t)n);
    put_u16(b.data + 16, ser);
    put_u16(b.data + 18, 0);
    put_u16(b.data + 20, 0);
    put_u16(b.data + 22, frame_checksum(MSG_INVOKE, version, (uint32_t)n, 0, ser, flags, 513));
    memcpy(b.data + FRAME4_HEADER_LEN, payload, n);
    return b;
}

static void test_protocol_46_and_47_keep_their_version_and_get_a_valid_checksum(void **state)
{
    static const uint16_t kVersions[] = {FRAME4_VERSION_46, FRAME4_VERSION_47};
    for (size_t i = 0; i < 2; i++) {
        /* BATCH and 0x0100 mean nothing certain to these protocols: kept on the wire as sent. */
        blob_t b = pyro4_raw(kVersions[i], FLAG4_ONEWAY | FLAG4_BATCH | 0x0100, SER4_JSON, "{}");
        frame_t f;
        parse_ok(b.data, b.len, &f);
        blob_t r = rewrite(&f, kJson, strlen(kJson));
        check_rewritten(&f, &r, kJson, strlen(kJson));
        assert_int_equal((r.data[4] << 8) | r.data[5], kVersions[i]);
        frame_t g;
        parse_ok(r.data, r.len, &g);
        assert_int_equal(g.version, kVersions[i]);
        assert_int_equal(g.wire_flags, FLAG4_ONEWAY | FLAG4_BATCH | 0x0100);
        OPENSSL_free(r.data);
        free(b.data);
    }
}

static void test_unknown_flag_bits_and_serializer_ids_are_kept_as_sent(void **state)
{
    /* Pyro4 48: 0x0080 is pyroguard's FLAG_CORR_ID, an unknown bit on a Pyro4 wire, which
     * frame_build_as would not write; 0x8000 is unknown to every protocol. */
    blob_t b = pyro4_raw(FRAME4_VERSION, 0x8000 | 0x0080 | FLAG4_ONEWAY, 42, "ping");
    frame_t f;
    parse_ok(b.data, b.len, &f);
    blob_t r = rewrite(&f, kJson, strlen(kJson));
    check_rewritten(&f, &r, kJson, strlen(kJson));
    assert_int_equal((r.data[8] << 8) | r.data[9], 0x8000 | 0x0080 | FLAG4_ONEWAY);
    assert_int_equal((r.data[16] << 8) | r.data[17], 42);
    OPENSSL_free(r.data);
    free(b.data);

    /* Pyro5: unknown bits 0x8000 and 0x0080 (dropped from |flags|, kept in wire_flags), an
     * unknown serializer id 9 and a correlation id. */
    static const uint8_t kCorr[FRAME5_CORR_LEN] = {0xba, 0x45, 0x99, 0x2a, 0x84, 0x07, 0x4a, 0x90,
                                                   0x8c, 0xd7, 0x02, 0x04, 0xd5, 0xe5, 0xf4, 0x9d};
    b = build(PROTO_PYRO5, MSG_INVOKE, FLAG4_ONEWAY, kCorr, NULL, 0, "payload");
    put_u16(b.data + 8, 0x8000 | 0x0080 | FLAG5_CORR_ID | FLAG5_ONEWAY);
    b.data[7] = 9;
    parse_ok(b.data, b.len, &f);
    assert_int_equal(f.serializer_id, SER_UNKNOWN);
    r = rewrite(&f, kJson, strlen(kJson));
    check_rewritten(&f, &r, kJson, strlen(kJson));
    assert_int_equal((r.data[8] << 8) | r.data[9], 0x8000 | 0x0080 | FLAG5_CORR_ID | FLAG5_ONEWAY);
    assert_int_equal(r.data[7], 9);
    assert_memory_equal(r.data + 20, kCorr, FRAME5_CORR_LEN);
    OPENSSL_free(r.data);
    OPENSSL_free(b.data);
}

static void test_a_full_output_buffer_fails_cleanly_at_every_size(void **state)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/vectors/pyro4-captured/json/correlation/c0_01_c2s_INVOKE.bin",
             TEST_DATA_DIR);
    blob_t b = read_path(path);
    frame_t f;
    parse_ok(b.data, b.len, &f);
    blob_t want = rewrite(&f, kJson, strlen(kJson));
    uint8_t *buf = malloc(want.len);
    assert_non_null(buf);
    for (size_t n = 0; n <= want.len; n++) {
        CBB out;
        assert_true(CBB_init_fixed(&out, buf, n));
        forward_status_t st = forward_rewrite(&out, &f, (const uint8_t *)kJson, strlen(kJson));
        if (n < want.len) {
            assert_int_equal(st, FORWARD_NOMEM);
        } else {
            assert_int_equal(st, FORWARD_OK);
            assert_int_equal(CBB_len(&out), want.len);
            assert_memory_equal(buf, want.data, want.len);
        }
        CBB_cleanup(&out);
    }
    free(buf);
    OPENSSL_free(want.data);
    free(b.data);
}

/* ---- the identity as JSON ---------------------------------------------------------------- */

static identity_t read_identity(X509 *x)
{
    identity_t id;
    char err[256] = "";
    int ok = identity_from_x509(x, &id, err, sizeof(err));
    X509_free(x);
    if (!ok)
        fail_msg("identity refused: %s", err);
    return id;
}

/* json_of returns forward_identity_json's text (free with free()), or NULL when it fails. */
static char *json_of(const identity_t *id, const char *listener, const char *rule)
{
    CBB cbb;
    assert_true(CBB_init(&cbb, 0));
    if (!forward_identity_json(&cbb, id, listener, rule)) {
        CBB_cleanup(&cbb);
        return NULL;
    }
    char *s = calloc(CBB_len(&cbb) + 1, 1);
    assert_non_null(s);
    memcpy(s, CBB_data(&cbb), CBB_len(&cbb));
    CBB_cleanup(&cbb);
    return s;
}

/* json_member decodes |json| as Python would and returns the str member |key| (NULL if
 * absent), copied into |out|. */
static const char *json_member(const char *json, const char *key, char *out, size_t out_len)
{
    value_arena_t arena;
    value_t *v = NULL;
    const value_t *m = NULL;
    const char *reason = NULL;
    const char *found = NULL;
    value_arena_init(&arena, NULL);
    if (!decode_json((const uint8_t *)json, strlen(json), &arena, &v, &reason))
        fail_msg("not JSON (%s): %s", reason, json);
    assert_int_equal(v->type, VAL_DICT);
    int r = value_dict_get(v, key, &m);
    assert_true(r >= 0); /* never twice: no member can be injected */
    if (r == 1) {
        assert_int_equal(m->type, VAL_STR);
        assert_true(m->u.str.len < out_len);
        memcpy(out, m->u.str.data, m->u.str.len);
        out[m->u.str.len] = '\0';
        found = out;
    }
    value_arena_cleanup(&arena);
    return found;
}

static void test_identity_json_names_the_certificate_in_the_contract_order(void **state)
{
    cert_t c;
    cert_begin(&c, "1A2B");
    cert_name(&c, "CN", "billing-client");
    cert_name(&c, "CN", "second-cn");
    cert_name(&c, "O", "Example Org");
    cert_name(&c, "OU", "payments");
    cert_san(&c, GEN_DNS, "billing.example.org");
    cert_san(&c, GEN_URI, "spiffe://example.org/ns/billing/client");
    cert_san(&c, GEN_DNS, "pay.example.org");
    cert_san(&c, GEN_URI, "spiffe://example.org/ns/billing/other");
    cert_ip(&c, "10.1.2.3");
    cert_san(&c, GEN_EMAIL, "billing@example.org");
    identity_t id = read_identity(cert_end(&c));

    char want[512];
    snprintf(want, sizeof(want),
             "{\"v\":1,\"listener\":\"app\",\"rule\":\"billing\",\"cn\":\"billing-client\","
             "\"uri\":[\"spiffe://example.org/ns/billing/client\","
             "\"spiffe://example.org/ns/billing/other\"],"
             "\"dns\":[\"billing.example.org\",\"pay.example.org\"],\"serial\":\"1A2B\","
             "\"sha256\":\"%s\"}",
             identity_first(&id, ID_SHA256));
    char *json = json_of(&id, "app", "billing");
    assert_non_null(json);
    assert_string_equal(json, want);
    assert_int_equal(strlen(identity_first(&id, ID_SHA256)), 64);

    /* And it is what the rewrite carries. */
    blob_t b = build(PROTO_PYRO4, MSG_INVOKE, 0, NULL, NULL, 0, "payload");
    frame_t f;
    parse_ok(b.data, b.len, &f);
    blob_t r = rewrite(&f, json, strlen(json));
    check_rewritten(&f, &r, json, strlen(json));
    OPENSSL_free(r.data);
    OPENSSL_free(b.data);
    free(json);
    identity_free(&id);
}

static void test_identity_json_omits_what_is_absent(void **state)
{
    cert_t c;
    cert_begin(&c, "0F");
    cert_name(&c, "O", "Example Org"); /* no CN, no SAN */
    identity_t id = read_identity(cert_end(&c));
    char want[256];
    snprintf(want, sizeof(want), "{\"v\":1,\"serial\":\"F\",\"sha256\":\"%s\"}",
             identity_first(&id, ID_SHA256));
    char *json = json_of(&id, NULL, NULL);
    assert_non_null(json);
    assert_string_equal(json, want);
    free(json);

    /* A listener without a rule name (and an identity of nothing at all). */
    identity_t none;
    memset(&none, 0, sizeof(none));
    json = json_of(&none, "app", NULL);
    assert_string_equal(json, "{\"v\":1,\"listener\":\"app\"}");
    free(json);
    identity_free(&id);
}

static void test_identity_json_escapes_quotes_backslashes_and_control_characters(void **state)
{
    /* A CN crafted to close its string and add a "cn" member of its own. */
    static const char kEvilCn[] = "evil\",\"cn\":\"admin\\";
    cert_t c;
    cert_begin(&c, "01");
    cert_name(&c, "CN", kEvilCn);
    identity_t id = read_identity(cert_end(&c));
    char *json = json_of(&id, "line\nfeed\x01\x1f", "tab\there");
    assert_non_null(json);
    assert_non_null(strstr(json, "\"cn\":\"evil\\\",\\\"cn\\\":\\\"admin\\\\\""));
    assert_non_null(strstr(json, "\"listener\":\"line\\u000afeed\\u0001\\u001f\""));
    assert_non_null(strstr(json, "\"rule\":\"tab\\u0009here\""));

    char got[256];
    assert_string_equal(json_member(json, "cn", got, sizeof(got)), kEvilCn);
    assert_string_equal(json_member(json, "listener", got, sizeof(got)), "line\nfeed\x01\x1f");
    assert_string_equal(json_member(json, "rule", got, sizeof(got)), "tab\there");
    free(json);
    identity_free(&id);
}

static void test_identity_json_passes_utf8_as_it_is(void **state)
{
    /* é (2 bytes), ✓ (3 bytes), 𝄞 (4 bytes). */
    static const char kCn[] = "caf\xc3\xa9-client \xe2\x9c\x93 \xf0\x9d\x84\x9e";
    cert_t c;
    cert_begin(&c, "02");
    cert_name(&c, "CN", kCn);
    identity_t id = read_identity(cert_end(&c));
    char *json = json_of(&id, NULL, "r\xc3\xa8gle");
    assert_non_null(json);
    char want[128];
    snprintf(want, sizeof(want), "\"cn\":\"%s\"", kCn);
    assert_non_null(strstr(json, want));
    assert_non_null(strstr(json, "\"rule\":\"r\xc3\xa8gle\""));
    char got[128];
    assert_string_equal(json_member(json, "cn", got, sizeof(got)), kCn);
    free(json);
    identity_free(&id);
}

static void test_identity_json_refuses_text_that_is_not_utf8(void **state)
{
    static const char *const kBad[] = {
        "\xff",             /* never in UTF-8 */
        "caf\xe9",          /* Latin-1 */
        "\xc0\xaf",         /* overlong '/' */
        "\xed\xa0\x80",     /* a surrogate */
        "\xf4\x90\x80\x80", /* past U+10FFFF */
        "\xe2\x9c",         /* truncated */
    };
    identity_t none;
    memset(&none, 0, sizeof(none));
    for (size_t i = 0; i < sizeof(kBad) / sizeof(kBad[0]); i++) {
        assert_null(json_of(&none, kBad[i], NULL));
        assert_null(json_of(&none, NULL, kBad[i]));
    }

    /* A DNS SAN is an IA5String that identity.h keeps byte for byte: one that is not UTF-8
     * is read, and refused here. */
    cert_t c;
    cert_begin(&c, "03");
    cert_name(&c, "CN", "client");
    cert_san(&c, GEN_DNS, "caf\xe9.example");
    X509 *x = cert_end(&c);
    identity_t id;
    char err[256];
    assert_true(identity_from_x509(x, &id, err, sizeof(err)));
    assert_null(json_of(&id, "app", "rule"));
    identity_free(&id);
    X509_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_captured_pyro4_request_gets_one_pgid_chunk_after_its_own),
        cmocka_unit_test(test_every_captured_pyro5_request_gets_one_pgid_chunk_after_its_own),
        cmocka_unit_test(test_pyro4_correlation_chunk_and_payload_are_kept_byte_for_byte),
        cmocka_unit_test(test_pyro5_blob_chunk_and_payload_are_kept_byte_for_byte),
        cmocka_unit_test(test_a_pgid_chunk_sent_by_the_client_is_replaced_not_kept),
        cmocka_unit_test(test_every_client_pgid_chunk_is_removed_even_two_of_them),
        cmocka_unit_test(test_a_message_with_an_hmac_chunk_is_not_rewritten),
        cmocka_unit_test(test_a_pyro4_annotation_block_over_65535_bytes_is_too_large),
        cmocka_unit_test(test_identity_json_over_16_kib_is_too_large),
        cmocka_unit_test(test_a_message_with_64_chunks_of_its_own_is_too_large),
        cmocka_unit_test(test_protocol_46_and_47_keep_their_version_and_get_a_valid_checksum),
        cmocka_unit_test(test_unknown_flag_bits_and_serializer_ids_are_kept_as_sent),
        cmocka_unit_test(test_a_full_output_buffer_fails_cleanly_at_every_size),
        cmocka_unit_test(test_identity_json_names_the_certificate_in_the_contract_order),
        cmocka_unit_test(test_identity_json_omits_what_is_absent),
        cmocka_unit_test(test_identity_json_escapes_quotes_backslashes_and_control_characters),
        cmocka_unit_test(test_identity_json_passes_utf8_as_it_is),
        cmocka_unit_test(test_identity_json_refuses_text_that_is_not_utf8),
    };
    return cmocka_run_group_tests(tests, testcert_make_key, testcert_free_key);
}
