#include "frame.h"

#include <string.h>

static const uint8_t kMagic[4] = {'P', 'Y', 'R', 'O'};

uint16_t frame_checksum(uint16_t type, uint16_t version, uint32_t data_len, uint16_t ann_len,
                        uint16_t serializer_id, uint16_t flags, uint16_t seq)
{
    /* A sum of field values, not of bytes; the data length is signed on the wire but the sum
     * is taken mod 2^16, where two's complement gives the same result (PROTOCOL.md §2.1). The
     * reserved field is not covered. */
    uint32_t sum = (uint32_t)type + version + data_len + ann_len + serializer_id + flags + seq +
                   FRAME4_CHECKSUM_KEY;
    return (uint16_t)(sum & 0xffff);
}

/* check_prefix reports a foreign protocol as soon as a differing byte is seen, so a client
 * speaking HTTP or TLS is refused without waiting for 24 bytes that may never come. */
static int check_prefix(const uint8_t *buf, size_t len, frame_error_t *out_err)
{
    size_t n = len < sizeof(kMagic) ? len : sizeof(kMagic);
    if (memcmp(buf, kMagic, n) != 0) {
        *out_err = FRAME_ERR_NOT_PYRO;
        return 0;
    }
    if (len >= 6) {
        uint16_t version = (uint16_t)((buf[4] << 8) | buf[5]);
        if (version != FRAME4_VERSION) {
            *out_err = FRAME_ERR_VERSION;
            return 0;
        }
    }
    return 1;
}

frame_status_t frame_parse_header(const uint8_t *buf, size_t len, size_t max_message, frame_t *out,
                                  frame_error_t *out_err)
{
    CBS cbs, magic;
    uint16_t reserved;
    uint32_t data_len;

    *out_err = FRAME_ERR_NONE;
    memset(out, 0, sizeof(*out));
    if (!check_prefix(buf, len, out_err))
        return FRAME_ERROR;
    if (len < FRAME4_HEADER_LEN)
        return FRAME_NEED_MORE;

    CBS_init(&cbs, buf, FRAME4_HEADER_LEN);
    if (!CBS_get_bytes(&cbs, &magic, 4) || !CBS_get_u16(&cbs, &out->version) ||
        !CBS_get_u16(&cbs, &out->type) || !CBS_get_u16(&cbs, &out->flags) ||
        !CBS_get_u16(&cbs, &out->seq) || !CBS_get_u32(&cbs, &data_len) ||
        !CBS_get_u16(&cbs, &out->serializer_id) || !CBS_get_u16(&cbs, &out->ann_len) ||
        !CBS_get_u16(&cbs, &reserved) || !CBS_get_u16(&cbs, &out->checksum)) {
        *out_err = FRAME_ERR_NOT_PYRO; /* unreachable: 24 bytes are present */
        return FRAME_ERROR;
    }
    if (out->checksum != frame_checksum(out->type, out->version, data_len, out->ann_len,
                                        out->serializer_id, out->flags, out->seq)) {
        *out_err = FRAME_ERR_CHECKSUM;
        return FRAME_ERROR;
    }
    /* The field is an i32: Pyro4 accepts the checksum of a negative length and then fails
     * the read (PROTOCOL.md §2.1); refuse it outright. */
    if (data_len & 0x80000000u) {
        *out_err = FRAME_ERR_NEGATIVE_LENGTH;
        return FRAME_ERROR;
    }
    if ((uint64_t)data_len + out->ann_len > max_message) {
        *out_err = FRAME_ERR_TOO_LARGE;
        return FRAME_ERROR;
    }
    out->data_len = data_len;
    out->total_len = FRAME4_HEADER_LEN + (size_t)out->ann_len + data_len;
    return FRAME_OK;
}

int frame_annotation_next(CBS *anns, frame_annotation_t *out)
{
    CBS rest = *anns, key;
    uint16_t n;

    /* Work on a copy so that a malformed chunk leaves |anns| where it was: only a clean end
     * leaves it empty. */
    if (!CBS_get_bytes(&rest, &key, 4) || !CBS_get_u16(&rest, &n) ||
        !CBS_get_bytes(&rest, &out->value, n))
        return 0;
    for (size_t i = 0; i < 4; i++) {
        uint8_t c = CBS_data(&key)[i];
        /* Pyro decodes keys as ASCII and drops the connection otherwise (PROTOCOL.md §2.2);
         * control characters are refused as well: no Pyro key contains one. */
        if (c < 0x20 || c > 0x7e)
            return 0;
        out->key[i] = (char)c;
    }
    out->key[4] = '\0';
    *anns = rest;
    return 1;
}

/* validate_annotations refuses what Pyro4 would read differently from a careful parser:
 * a chunk overrunning the block (Pyro4 silently truncates it), trailing bytes too short for
 * a chunk, and duplicate keys (Pyro4 keeps the last one) — PROTOCOL.md §2.2, §10. */
static int validate_annotations(CBS anns)
{
    char seen[FRAME_MAX_ANNOTATIONS][4];
    size_t count = 0;
    frame_annotation_t a;

    while (CBS_len(&anns) > 0) {
        if (!frame_annotation_next(&anns, &a))
            return 0;
        if (count == FRAME_MAX_ANNOTATIONS)
            return 0;
        for (size_t i = 0; i < count; i++) {
            if (memcmp(seen[i], a.key, 4) == 0)
                return 0;
        }
        memcpy(seen[count++], a.key, 4);
    }
    return 1;
}

frame_status_t frame_parse(const uint8_t *buf, size_t len, size_t max_message, frame_t *out,
                           frame_error_t *out_err)
{
    CBS cbs;
    frame_status_t st = frame_parse_header(buf, len, max_message, out, out_err);
    if (st != FRAME_OK)
        return st;
    if (len < out->total_len)
        return FRAME_NEED_MORE;
    CBS_init(&cbs, buf + FRAME4_HEADER_LEN, out->total_len - FRAME4_HEADER_LEN);
    if (!CBS_get_bytes(&cbs, &out->annotations, out->ann_len) ||
        !CBS_get_bytes(&cbs, &out->payload, out->data_len) || CBS_len(&cbs) != 0) {
        *out_err = FRAME_ERR_ANNOTATIONS; /* unreachable: lengths were summed above */
        return FRAME_ERROR;
    }
    if (!validate_annotations(out->annotations)) {
        *out_err = FRAME_ERR_ANNOTATIONS;
        return FRAME_ERROR;
    }
    return FRAME_OK;
}

int frame_find_annotation(const frame_t *f, const char key[4], CBS *out)
{
    CBS anns = f->annotations;
    frame_annotation_t a;
    while (frame_annotation_next(&anns, &a)) {
        if (memcmp(a.key, key, 4) == 0) {
            *out = a.value;
            return 1;
        }
    }
    return 0;
}

int frame_build(CBB *cbb, uint16_t type, uint16_t flags, uint16_t seq, uint16_t serializer_id,
                const uint8_t *annotations, size_t ann_len, const uint8_t *payload,
                size_t payload_len)
{
    if (ann_len > 0xffff || payload_len > 0x7fffffff)
        return 0;
    uint16_t sum = frame_checksum(type, FRAME4_VERSION, (uint32_t)payload_len, (uint16_t)ann_len,
                                  serializer_id, flags, seq);
    return CBB_add_bytes(cbb, kMagic, sizeof(kMagic)) && CBB_add_u16(cbb, FRAME4_VERSION) &&
           CBB_add_u16(cbb, type) && CBB_add_u16(cbb, flags) && CBB_add_u16(cbb, seq) &&
           CBB_add_u32(cbb, (uint32_t)payload_len) && CBB_add_u16(cbb, serializer_id) &&
           CBB_add_u16(cbb, (uint16_t)ann_len) && CBB_add_u16(cbb, 0) && CBB_add_u16(cbb, sum) &&
           CBB_add_bytes(cbb, annotations, ann_len) && CBB_add_bytes(cbb, payload, payload_len);
}

const char *frame_error_reason(frame_error_t err)
{
    switch (err) {
    case FRAME_ERR_NONE:
        return "none";
    case FRAME_ERR_NOT_PYRO:
        return "not_pyro";
    case FRAME_ERR_VERSION:
        return "protocol_version";
    case FRAME_ERR_CHECKSUM:
        return "bad_checksum";
    case FRAME_ERR_NEGATIVE_LENGTH:
        return "negative_length";
    case FRAME_ERR_TOO_LARGE:
        return "message_too_large";
    case FRAME_ERR_ANNOTATIONS:
        return "bad_annotations";
    }
    return "unknown";
}

const char *frame_type_name(uint16_t type)
{
    switch (type) {
    case MSG_CONNECT:
        return "CONNECT";
    case MSG_CONNECTOK:
        return "CONNECTOK";
    case MSG_CONNECTFAIL:
        return "CONNECTFAIL";
    case MSG_INVOKE:
        return "INVOKE";
    case MSG_RESULT:
        return "RESULT";
    case MSG_PING:
        return "PING";
    }
    return "UNKNOWN";
}

const char *frame_serializer_name(uint16_t id)
{
    switch (id) {
    case SER4_SERPENT:
        return "serpent";
    case SER4_JSON:
        return "json";
    case SER4_MARSHAL:
        return "marshal";
    case SER4_PICKLE:
        return "pickle";
    case SER4_DILL:
        return "dill";
    case SER4_MSGPACK:
        return "msgpack";
    case SER4_CLOUDPICKLE:
        return "cloudpickle";
    }
    return NULL;
}
