/* fuzz_frame: libFuzzer target for the Pyro4 framer (proxy/frame.c).
 *
 * Beyond "no crash", it checks the framer's promises on every input:
 *  - frame_parse_header agrees with frame_parse on status, error and total_len;
 *  - a FRAME_OK message is refused or awaited, never accepted, one byte short;
 *  - the validated annotation block iterates to its end and frame_find_annotation finds
 *    every key with the same value (duplicates were refused);
 *  - frame_build of the parsed fields reproduces the input byte for byte, apart from the
 *    reserved field, which Pyro4 ignores (PROTOCOL.md §2.1) and frame_build writes as 0. */
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
        CHECK(frame_annotation_next(&anns, &a));
        CHECK(strlen(a.key) == 4);
        count++;
        CBS found;
        CHECK(frame_find_annotation(f, a.key, &found));
        CHECK(CBS_data(&found) == CBS_data(&a.value) && CBS_len(&found) == CBS_len(&a.value));
    }
    CHECK(count <= FRAME_MAX_ANNOTATIONS);
}

static void check_rebuild(const uint8_t *data, const frame_t *f)
{
    CBB cbb;
    uint8_t *out = NULL;
    size_t out_len = 0;

    CHECK(CBB_init(&cbb, f->total_len));
    CHECK(frame_build(&cbb, f->type, f->flags, f->seq, f->serializer_id, CBS_data(&f->annotations),
                      CBS_len(&f->annotations), CBS_data(&f->payload), CBS_len(&f->payload)));
    CHECK(CBB_finish(&cbb, &out, &out_len));
    CHECK(out_len == f->total_len);
    CHECK(memcmp(out, data, 20) == 0);
    CHECK(memcmp(out + 22, data + 22, out_len - 22) == 0);
    OPENSSL_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Two limits: the shipped default and a small one, so both the size refusal and the
     * annotation checks are reachable with short inputs. */
    static const size_t limits[] = {16777216, 200};

    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        frame_t f, h;
        frame_error_t err, herr;
        frame_status_t st = frame_parse(data, size, limits[i], &f, &err);
        frame_status_t hst = frame_parse_header(data, size, limits[i], &h, &herr);

        CHECK((st == FRAME_ERROR) == (err != FRAME_ERR_NONE));
        if (hst == FRAME_ERROR) {
            CHECK(st == FRAME_ERROR && err == herr);
            continue;
        }
        if (hst == FRAME_NEED_MORE) {
            CHECK(st == FRAME_NEED_MORE && size < FRAME4_HEADER_LEN);
            continue;
        }
        CHECK(h.total_len >= FRAME4_HEADER_LEN);
        CHECK(h.total_len - FRAME4_HEADER_LEN == (size_t)h.data_len + h.ann_len);
        CHECK((size_t)h.data_len + h.ann_len <= limits[i]);
        if (st == FRAME_NEED_MORE) {
            CHECK(size < h.total_len);
            continue;
        }
        if (st == FRAME_ERROR) {
            CHECK(err == FRAME_ERR_ANNOTATIONS && size >= h.total_len);
            continue;
        }
        CHECK(f.total_len == h.total_len && f.total_len <= size);
        CHECK(CBS_len(&f.annotations) == f.ann_len && CBS_len(&f.payload) == f.data_len);
        CHECK(frame_parse(data, f.total_len - 1, limits[i], &h, &herr) == FRAME_NEED_MORE);
        check_annotations(&f);
        check_rebuild(data, &f);
    }
    return 0;
}
