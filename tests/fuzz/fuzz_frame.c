/* fuzz_frame: libFuzzer target for the Pyro framer (proxy/frame.c): Pyro4 protocol 48 alone (a
 * connection fixed to it), and every protocol accepted with the protocol chosen from the input's
 * version field (46, 47, 48, Pyro5 502).
 *
 * Beyond "no crash", it checks the framer's promises on every input:
 *  - frame_parse_header_as agrees with frame_parse_as on status, error and total_len;
 *  - a FRAME_OK message is refused or awaited, never accepted, one byte short;
 *  - the validated annotation block iterates to its end (u16 or u32 chunk lengths by
 *    protocol) and frame_find_annotation finds every key with the same value;
 *  - building the parsed fields reproduces the input byte for byte, apart from the reserved
 *    field, which Pyro ignores (PROTOCOL.md §2.1, §3.1) and pyroguard writes as 0 — whenever
 *    the input has nothing a builder cannot express (a Pyro5 flag bit or serializer id Pyro5
 *    does not have, a correlation id without its flag, a 46/47 flag beyond the known three);
 *  - a 46/47 message never shows a flag those protocols do not have. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bytestring.h>
#include <openssl/mem.h>

#include "frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static void check_annotations(const frame_t *f)
{
    CBS anns = f->annotations;
    frame_annotation_t a;
    size_t count = 0;

    while (CBS_len(&anns) > 0) {
        CHECK(frame_annotation_next_as(&anns, f->proto, &a));
        CHECK(strlen(a.key) == 4);
        count++;
        CBS found;
        CHECK(frame_find_annotation(f, a.key, &found));
        CHECK(CBS_data(&found) == CBS_data(&a.value) && CBS_len(&found) == CBS_len(&a.value));
    }
    CHECK(count <= FRAME_MAX_ANNOTATIONS);
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0)
            return 0;
    }
    return 1;
}

static void check_rebuild(const uint8_t *data, const frame_t *f)
{
    CBB cbb;
    uint8_t *out = NULL;
    size_t out_len = 0;
    int ok;
    size_t reserved;

    if (f->proto == PROTO_PYRO5) {
        /* Only what Pyro5 has: known flag bits and serializers, a correlation id with its flag. */
        if ((f->wire_flags & ~0x7f) || f->serializer_id == SER_UNKNOWN ||
            (!(f->flags & FLAG_CORR_ID) && !all_zero(f->corr_id, FRAME5_CORR_LEN)))
            return;
        uint16_t flags = f->type == MSG_CONNECT ? f->flags & ~FLAG4_META_ON_CONNECT : f->flags;
        CHECK(CBB_init(&cbb, f->total_len));
        ok =
            frame_build_as(&cbb, PROTO_PYRO5, f->type, flags, f->seq, f->serializer_id,
                           (f->flags & FLAG_CORR_ID) ? f->corr_id : NULL, CBS_data(&f->annotations),
                           CBS_len(&f->annotations), CBS_data(&f->payload), CBS_len(&f->payload));
        reserved = 36;
    } else if (f->proto == PROTO_PYRO4) {
        CHECK(CBB_init(&cbb, f->total_len));
        ok = frame_build(&cbb, f->type, f->flags, f->seq, f->serializer_id,
                         CBS_data(&f->annotations), CBS_len(&f->annotations), CBS_data(&f->payload),
                         CBS_len(&f->payload));
        reserved = 20;
    } else {
        CHECK(f->proto == PROTO_PYRO4_46 || f->proto == PROTO_PYRO4_47);
        CHECK((f->flags & ~(FLAG4_EXCEPTION | FLAG4_COMPRESSED | FLAG4_ONEWAY)) == 0);
        CHECK((f->flags | frame_unsupported_flags(f)) == f->wire_flags);
        if (frame_unsupported_flags(f) != 0)
            return;
        CHECK(CBB_init(&cbb, f->total_len));
        ok = frame_build_as(&cbb, f->proto, f->type, f->flags, f->seq, f->serializer_id, NULL,
                            CBS_data(&f->annotations), CBS_len(&f->annotations),
                            CBS_data(&f->payload), CBS_len(&f->payload));
        reserved = 20;
    }
    CHECK(ok);
    CHECK(CBB_finish(&cbb, &out, &out_len));
    CHECK(out_len == f->total_len);
    CHECK(memcmp(out, data, reserved) == 0);
    CHECK(memcmp(out + reserved + 2, data + reserved + 2, out_len - reserved - 2) == 0);
    OPENSSL_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Two limits: the shipped default and a small one, so both the size refusal and the
     * annotation checks are reachable with short inputs. */
    static const size_t limits[] = {16777216, 200};
    /* A connection fixed to protocol 48 (and accepting only it), and a first message with every
     * protocol accepted. */
    static const struct {
        frame_proto_t proto;
        uint32_t accept;
    } modes[] = {
        {PROTO_PYRO4, FRAME_PROTO_BIT(PROTO_PYRO4)},
        {PROTO_NONE, FRAME_PROTO_BIT(PROTO_PYRO4_46) | FRAME_PROTO_BIT(PROTO_PYRO4_47) |
                         FRAME_PROTO_BIT(PROTO_PYRO4) | FRAME_PROTO_BIT(PROTO_PYRO5)},
    };

    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
            frame_t f, h;
            frame_error_t err, herr;
            frame_proto_t p = modes[m].proto;
            uint32_t acc = modes[m].accept;
            frame_status_t st = frame_parse_as(data, size, p, acc, limits[i], &f, &err);
            frame_status_t hst = frame_parse_header_as(data, size, p, acc, limits[i], &h, &herr);

            CHECK((st == FRAME_ERROR) == (err != FRAME_ERR_NONE));
            if (hst == FRAME_ERROR) {
                CHECK(st == FRAME_ERROR && err == herr);
                continue;
            }
            if (hst == FRAME_NEED_MORE) {
                CHECK(st == FRAME_NEED_MORE && size < FRAME_MAX_HEADER_LEN);
                continue;
            }
            CHECK(h.header_len == frame_header_len(h.proto));
            CHECK(p == PROTO_NONE || h.proto == p);
            CHECK(acc & FRAME_PROTO_BIT(h.proto));
            CHECK(h.total_len - h.header_len == (size_t)h.data_len + h.ann_len);
            CHECK((size_t)h.data_len + h.ann_len <= limits[i]);
            if (st == FRAME_NEED_MORE) {
                CHECK(size < h.total_len);
                continue;
            }
            if (st == FRAME_ERROR) {
                CHECK(err == FRAME_ERR_ANNOTATIONS && size >= h.total_len);
                continue;
            }
            CHECK(f.proto == h.proto);
            CHECK(f.total_len == h.total_len && f.total_len <= size);
            CHECK(CBS_len(&f.annotations) == f.ann_len && CBS_len(&f.payload) == f.data_len);
            CHECK(frame_parse_as(data, f.total_len - 1, p, acc, limits[i], &h, &herr) ==
                  FRAME_NEED_MORE);
            check_annotations(&f);
            check_rebuild(data, &f);
        }
    }
    return 0;
}
