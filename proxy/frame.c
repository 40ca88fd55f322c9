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

size_t frame_header_len(frame_proto_t proto)
{
    return proto == PROTO_PYRO5 ? FRAME5_HEADER_LEN : FRAME4_HEADER_LEN;
}

frame_proto_t frame_proto_of_version(uint16_t version)
{
    switch (version) {
    case FRAME4_VERSION_46:
        return PROTO_PYRO4_46;
    case FRAME4_VERSION_47:
        return PROTO_PYRO4_47;
    case FRAME4_VERSION:
        return PROTO_PYRO4;
    case FRAME5_VERSION:
        return PROTO_PYRO5;
    }
    return PROTO_NONE;
}

const char *frame_proto_name(frame_proto_t proto)
{
    switch (proto) {
    case PROTO_PYRO4_46:
        return "pyro4.46";
    case PROTO_PYRO4_47:
        return "pyro4.47";
    case PROTO_PYRO4:
        return "pyro4";
    case PROTO_PYRO5:
        return "pyro5";
    case PROTO_NONE:
    case PROTO_COUNT:
        break;
    }
    return "none";
}

/* check_prefix reports a foreign protocol as soon as a differing byte is seen, so a client
 * speaking HTTP or TLS is refused without waiting for a header that may never come; and a
 * version that is not |proto|'s (or, before the first message, not in |accept|) as soon as its
 * two bytes are there. Sets |*out| to the protocol once known. */
static int check_prefix(const uint8_t *buf, size_t len, frame_proto_t proto, uint32_t accept,
                        frame_proto_t *out, frame_error_t *out_err)
{
    size_t n = len < sizeof(kMagic) ? len : sizeof(kMagic);
    *out = proto;
    if (memcmp(buf, kMagic, n) != 0) {
        *out_err = FRAME_ERR_NOT_PYRO;
        return 0;
    }
    if (len >= 6) {
        frame_proto_t p = frame_proto_of_version((uint16_t)((buf[4] << 8) | buf[5]));
        if (p == PROTO_NONE ||
            (proto != PROTO_NONE ? p != proto : !(accept & FRAME_PROTO_BIT(p)))) {
            *out_err = FRAME_ERR_VERSION;
            return 0;
        }
        *out = p;
    }
    return 1;
}

/* The flags of Pyro4 protocols 46 and 47 whose bits are established: EXCEPTION, COMPRESSED and
 * ONEWAY have the same bits in protocols 44 to 48. BATCH has not: protocols 44/45 put an HMAC
 * flag at 0x08 and BATCH at 0x10, protocol 48 BATCH at 0x08 and META_ON_CONNECT at 0x10, and
 * neither PROTOCOL.md nor a capture says which 46 and 47 use. Reading the wrong one would let a
 * batch of hidden calls pass as one call (or the reverse), so frame_unsupported_flags reports
 * every other bit of a 46/47 message and inspection refuses it. META_ON_CONNECT (4.38),
 * ITEMSTREAMRESULT (4.49) and KEEPSERIALIZED (4.58) are later than both protocols. */
#define FLAGS_46_47 (FLAG4_EXCEPTION | FLAG4_COMPRESSED | FLAG4_ONEWAY)

/* pyro4_flags: protocol 48's unknown bits are kept as they always were (its daemons ignore
 * them, PROTOCOL.md §2.4). */
static uint16_t pyro4_flags(frame_proto_t proto, uint16_t wire)
{
    if (proto == PROTO_PYRO4)
        return wire;
    return wire & FLAGS_46_47;
}

uint16_t frame_unsupported_flags(const frame_t *f)
{
    if (f->proto == PROTO_PYRO4_46 || f->proto == PROTO_PYRO4_47)
        return f->wire_flags & (uint16_t)~FLAGS_46_47;
    return 0;
}

static const struct {
    uint16_t wire, ours;
} kFlags5[] = {
    {FLAG5_EXCEPTION, FLAG4_EXCEPTION},
    {FLAG5_COMPRESSED, FLAG4_COMPRESSED},
    {FLAG5_ONEWAY, FLAG4_ONEWAY},
    {FLAG5_BATCH, FLAG4_BATCH},
    {FLAG5_ITEMSTREAMRESULT, FLAG4_ITEMSTREAMRESULT},
    {FLAG5_KEEPSERIALIZED, FLAG4_KEEPSERIALIZED},
    {FLAG5_CORR_ID, FLAG_CORR_ID},
};

static const struct {
    uint16_t wire, ours;
} kSer5[] = {
    {SER5_SERPENT, SER4_SERPENT},
    {SER5_MARSHAL, SER4_MARSHAL},
    {SER5_JSON, SER4_JSON},
    {SER5_MSGPACK, SER4_MSGPACK},
};

/* pyro5_flags maps Pyro5's flags to ours (§3.2). A Pyro5 CONNECT always gets the object's
 * metadata back (§4.2): it is given META_ON_CONNECT, so that the policy judges it as such.
 * Unknown bits are dropped: Pyro5 ignores them. */
static uint16_t pyro5_flags(uint16_t type, uint16_t wire)
{
    uint16_t out = type == MSG_CONNECT ? FLAG4_META_ON_CONNECT : 0;
    for (size_t i = 0; i < sizeof(kFlags5) / sizeof(kFlags5[0]); i++) {
        if (wire & kFlags5[i].wire)
            out |= kFlags5[i].ours;
    }
    return out;
}

static uint16_t pyro5_serializer(uint16_t wire)
{
    for (size_t i = 0; i < sizeof(kSer5) / sizeof(kSer5[0]); i++) {
        if (kSer5[i].wire == wire)
            return kSer5[i].ours;
    }
    return SER_UNKNOWN;
}

static int parse_header4(CBS *cbs, frame_t *out, frame_error_t *out_err)
{
    CBS magic;
    uint16_t reserved, ann_len;
    uint32_t data_len;

    if (!CBS_get_bytes(cbs, &magic, 4) || !CBS_get_u16(cbs, &out->version) ||
        !CBS_get_u16(cbs, &out->type) || !CBS_get_u16(cbs, &out->wire_flags) ||
        !CBS_get_u16(cbs, &out->seq) || !CBS_get_u32(cbs, &data_len) ||
        !CBS_get_u16(cbs, &out->wire_serializer) || !CBS_get_u16(cbs, &ann_len) ||
        !CBS_get_u16(cbs, &reserved) || !CBS_get_u16(cbs, &out->checksum)) {
        *out_err = FRAME_ERR_NOT_PYRO; /* unreachable: the header is present */
        return 0;
    }
    if (out->checksum != frame_checksum(out->type, out->version, data_len, ann_len,
                                        out->wire_serializer, out->wire_flags, out->seq)) {
        *out_err = FRAME_ERR_CHECKSUM;
        return 0;
    }
    /* The field is an i32: Pyro4 accepts the checksum of a negative length and then fails
     * the read (PROTOCOL.md §2.1); refuse it outright. */
    if (data_len & 0x80000000u) {
        *out_err = FRAME_ERR_NEGATIVE_LENGTH;
        return 0;
    }
    out->data_len = data_len;
    out->ann_len = ann_len;
    out->flags = pyro4_flags(out->proto, out->wire_flags);
    out->serializer_id = out->wire_serializer;
    return 1;
}

/* parse_header5: PROTOCOL.md §3.1. The reserved field is ignored, as Pyro5 does. */
static int parse_header5(CBS *cbs, frame_t *out, frame_error_t *out_err)
{
    CBS magic, corr;
    uint8_t type, ser;
    uint16_t reserved, magic5;

    if (!CBS_get_bytes(cbs, &magic, 4) || !CBS_get_u16(cbs, &out->version) ||
        !CBS_get_u8(cbs, &type) || !CBS_get_u8(cbs, &ser) || !CBS_get_u16(cbs, &out->wire_flags) ||
        !CBS_get_u16(cbs, &out->seq) || !CBS_get_u32(cbs, &out->data_len) ||
        !CBS_get_u32(cbs, &out->ann_len) || !CBS_get_bytes(cbs, &corr, FRAME5_CORR_LEN) ||
        !CBS_get_u16(cbs, &reserved) || !CBS_get_u16(cbs, &magic5)) {
        *out_err = FRAME_ERR_NOT_PYRO; /* unreachable: the header is present */
        return 0;
    }
    if (magic5 != FRAME5_MAGIC) {
        *out_err = FRAME_ERR_CHECKSUM;
        return 0;
    }
    out->type = type;
    out->wire_serializer = ser;
    memcpy(out->corr_id, CBS_data(&corr), FRAME5_CORR_LEN);
    out->flags = pyro5_flags(out->type, out->wire_flags);
    out->serializer_id = pyro5_serializer(ser);
    return 1;
}

frame_status_t frame_parse_header_as(const uint8_t *buf, size_t len, frame_proto_t proto,
                                     uint32_t accept, size_t max_message, frame_t *out,
                                     frame_error_t *out_err)
{
    CBS cbs;
    frame_proto_t p;

    *out_err = FRAME_ERR_NONE;
    memset(out, 0, sizeof(*out));
    if (!check_prefix(buf, len, proto, accept, &p, out_err))
        return FRAME_ERROR;
    if (p == PROTO_NONE || len < frame_header_len(p))
        return FRAME_NEED_MORE;

    out->proto = p;
    out->header_len = frame_header_len(p);
    CBS_init(&cbs, buf, out->header_len);
    if (!(p == PROTO_PYRO5 ? parse_header5(&cbs, out, out_err) : parse_header4(&cbs, out, out_err)))
        return FRAME_ERROR;
    if ((uint64_t)out->data_len + out->ann_len > max_message) {
        *out_err = FRAME_ERR_TOO_LARGE;
        return FRAME_ERROR;
    }
    out->total_len = out->header_len + (size_t)out->ann_len + out->data_len;
    return FRAME_OK;
}

frame_status_t frame_parse_header(const uint8_t *buf, size_t len, size_t max_message, frame_t *out,
                                  frame_error_t *out_err)
{
    return frame_parse_header_as(buf, len, PROTO_PYRO4, FRAME_PROTO_BIT(PROTO_PYRO4), max_message,
                                 out, out_err);
}

int frame_annotation_next_as(CBS *anns, frame_proto_t proto, frame_annotation_t *out)
{
    CBS rest = *anns, key;
    uint32_t n;
    uint16_t n16;

    /* Work on a copy so that a malformed chunk leaves |anns| where it was: only a clean end
     * leaves it empty. Pyro5 chunk lengths are u32 (PROTOCOL.md §3.4), Pyro4's u16 (§2.2). */
    if (!CBS_get_bytes(&rest, &key, 4))
        return 0;
    if (proto == PROTO_PYRO5) {
        if (!CBS_get_u32(&rest, &n))
            return 0;
    } else {
        if (!CBS_get_u16(&rest, &n16))
            return 0;
        n = n16;
    }
    if (!CBS_get_bytes(&rest, &out->value, n))
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

int frame_annotation_next(CBS *anns, frame_annotation_t *out)
{
    return frame_annotation_next_as(anns, PROTO_PYRO4, out);
}

/* validate_annotations refuses what Pyro would read differently from a careful parser:
 * a chunk overrunning the block (Pyro4 and Pyro5 up to 5.16 silently truncate it), trailing
 * bytes too short for a chunk, and duplicate keys (both keep the last one) — PROTOCOL.md §2.2,
 * §3.4, §10. */
static int validate_annotations(CBS anns, frame_proto_t proto)
{
    char seen[FRAME_MAX_ANNOTATIONS][4];
    size_t count = 0;
    frame_annotation_t a;

    while (CBS_len(&anns) > 0) {
        if (!frame_annotation_next_as(&anns, proto, &a))
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

frame_status_t frame_parse_as(const uint8_t *buf, size_t len, frame_proto_t proto, uint32_t accept,
                              size_t max_message, frame_t *out, frame_error_t *out_err)
{
    CBS cbs;
    frame_status_t st = frame_parse_header_as(buf, len, proto, accept, max_message, out, out_err);
    if (st != FRAME_OK)
        return st;
    if (len < out->total_len)
        return FRAME_NEED_MORE;
    CBS_init(&cbs, buf + out->header_len, out->total_len - out->header_len);
    if (!CBS_get_bytes(&cbs, &out->annotations, out->ann_len) ||
        !CBS_get_bytes(&cbs, &out->payload, out->data_len) || CBS_len(&cbs) != 0) {
        *out_err = FRAME_ERR_ANNOTATIONS; /* unreachable: lengths were summed above */
        return FRAME_ERROR;
    }
    if (!validate_annotations(out->annotations, out->proto)) {
        *out_err = FRAME_ERR_ANNOTATIONS;
        return FRAME_ERROR;
    }
    return FRAME_OK;
}

frame_status_t frame_parse(const uint8_t *buf, size_t len, size_t max_message, frame_t *out,
                           frame_error_t *out_err)
{
    return frame_parse_as(buf, len, PROTO_PYRO4, FRAME_PROTO_BIT(PROTO_PYRO4), max_message, out,
                          out_err);
}

int frame_find_annotation(const frame_t *f, const char key[4], CBS *out)
{
    CBS anns = f->annotations;
    frame_annotation_t a;
    while (frame_annotation_next_as(&anns, f->proto, &a)) {
        if (memcmp(a.key, key, 4) == 0) {
            *out = a.value;
            return 1;
        }
    }
    return 0;
}

static int build4(CBB *cbb, uint16_t version, uint16_t type, uint16_t flags, uint16_t seq,
                  uint16_t ser, const uint8_t *annotations, size_t ann_len, const uint8_t *payload,
                  size_t payload_len)
{
    if (ann_len > 0xffff || payload_len > 0x7fffffff)
        return 0;
    uint16_t sum =
        frame_checksum(type, version, (uint32_t)payload_len, (uint16_t)ann_len, ser, flags, seq);
    return CBB_add_bytes(cbb, kMagic, sizeof(kMagic)) && CBB_add_u16(cbb, version) &&
           CBB_add_u16(cbb, type) && CBB_add_u16(cbb, flags) && CBB_add_u16(cbb, seq) &&
           CBB_add_u32(cbb, (uint32_t)payload_len) && CBB_add_u16(cbb, ser) &&
           CBB_add_u16(cbb, (uint16_t)ann_len) && CBB_add_u16(cbb, 0) && CBB_add_u16(cbb, sum) &&
           CBB_add_bytes(cbb, annotations, ann_len) && CBB_add_bytes(cbb, payload, payload_len);
}

static int build5(CBB *cbb, uint16_t type, uint16_t flags, uint16_t seq, uint16_t serializer_id,
                  const uint8_t *corr_id, const uint8_t *annotations, size_t ann_len,
                  const uint8_t *payload, size_t payload_len)
{
    static const uint8_t kNoCorr[FRAME5_CORR_LEN];
    uint16_t wire_flags = corr_id != NULL ? FLAG5_CORR_ID : 0;
    uint16_t ser = 0;
    for (size_t i = 0; i < sizeof(kFlags5) / sizeof(kFlags5[0]); i++) {
        if ((flags & kFlags5[i].ours) && kFlags5[i].ours != FLAG_CORR_ID)
            wire_flags |= kFlags5[i].wire;
    }
    for (size_t i = 0; i < sizeof(kSer5) / sizeof(kSer5[0]); i++) {
        if (kSer5[i].ours == serializer_id)
            ser = kSer5[i].wire;
    }
    if (ser == 0 || type > 0xff || ann_len > 0xffffffffu || payload_len > 0xffffffffu)
        return 0;
    return CBB_add_bytes(cbb, kMagic, sizeof(kMagic)) && CBB_add_u16(cbb, FRAME5_VERSION) &&
           CBB_add_u8(cbb, (uint8_t)type) && CBB_add_u8(cbb, (uint8_t)ser) &&
           CBB_add_u16(cbb, wire_flags) && CBB_add_u16(cbb, seq) &&
           CBB_add_u32(cbb, (uint32_t)payload_len) && CBB_add_u32(cbb, (uint32_t)ann_len) &&
           CBB_add_bytes(cbb, corr_id != NULL ? corr_id : kNoCorr, FRAME5_CORR_LEN) &&
           CBB_add_u16(cbb, 0) && CBB_add_u16(cbb, FRAME5_MAGIC) &&
           CBB_add_bytes(cbb, annotations, ann_len) && CBB_add_bytes(cbb, payload, payload_len);
}

int frame_build_as(CBB *cbb, frame_proto_t proto, uint16_t type, uint16_t flags, uint16_t seq,
                   uint16_t serializer_id, const uint8_t *corr_id, const uint8_t *annotations,
                   size_t ann_len, const uint8_t *payload, size_t payload_len)
{
    switch (proto) {
    case PROTO_PYRO4:
        /* FLAG_CORR_ID is pyroguard's own bit: Pyro4 carries no correlation id in its header. */
        return build4(cbb, FRAME4_VERSION, type, flags & (uint16_t)~FLAG_CORR_ID, seq,
                      serializer_id, annotations, ann_len, payload, payload_len);
    case PROTO_PYRO4_46:
    case PROTO_PYRO4_47:
        return build4(cbb, proto == PROTO_PYRO4_46 ? FRAME4_VERSION_46 : FRAME4_VERSION_47, type,
                      pyro4_flags(proto, flags), seq, serializer_id, annotations, ann_len, payload,
                      payload_len);
    case PROTO_PYRO5:
        return build5(cbb, type, flags, seq, serializer_id, corr_id, annotations, ann_len, payload,
                      payload_len);
    case PROTO_NONE:
    case PROTO_COUNT:
        break;
    }
    return 0;
}

int frame_build(CBB *cbb, uint16_t type, uint16_t flags, uint16_t seq, uint16_t serializer_id,
                const uint8_t *annotations, size_t ann_len, const uint8_t *payload,
                size_t payload_len)
{
    return build4(cbb, FRAME4_VERSION, type, flags, seq, serializer_id, annotations, ann_len,
                  payload, payload_len);
}

int frame_rebuild(CBB *cbb, const frame_t *f, const uint8_t *anns, size_t ann_len,
                  const uint8_t *payload, size_t payload_len)
{
    switch (f->proto) {
    case PROTO_PYRO4:
    case PROTO_PYRO4_46:
    case PROTO_PYRO4_47:
        /* build4 sums the checksum over the fields exactly as it writes them: the wire's
         * version, flags and serializer id. */
        return build4(cbb, f->version, f->type, f->wire_flags, f->seq, f->wire_serializer, anns,
                      ann_len, payload, payload_len);
    case PROTO_PYRO5:
        if (f->type > 0xff || f->wire_serializer > 0xff || ann_len > 0xffffffffu ||
            payload_len > 0xffffffffu)
            return 0;
        return CBB_add_bytes(cbb, kMagic, sizeof(kMagic)) && CBB_add_u16(cbb, f->version) &&
               CBB_add_u8(cbb, (uint8_t)f->type) && CBB_add_u8(cbb, (uint8_t)f->wire_serializer) &&
               CBB_add_u16(cbb, f->wire_flags) && CBB_add_u16(cbb, f->seq) &&
               CBB_add_u32(cbb, (uint32_t)payload_len) && CBB_add_u32(cbb, (uint32_t)ann_len) &&
               CBB_add_bytes(cbb, f->corr_id, FRAME5_CORR_LEN) && CBB_add_u16(cbb, 0) &&
               CBB_add_u16(cbb, FRAME5_MAGIC) && CBB_add_bytes(cbb, anns, ann_len) &&
               CBB_add_bytes(cbb, payload, payload_len);
    case PROTO_NONE:
    case PROTO_COUNT:
        break;
    }
    return 0;
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
