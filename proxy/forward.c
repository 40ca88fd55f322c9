#include "forward.h"

#include <string.h>

static const char kHex[] = "0123456789abcdef";

/* utf8_next moves one well-formed UTF-8 sequence (RFC 3629: no overlong form, no surrogate,
 * nothing past U+10FFFF) from the front of |in| to |out|. Returns 0, |in| untouched, if the
 * front of |in| is not one. Python's strict decode refuses exactly these. */
static int utf8_next(CBS *in, CBS *out)
{
    CBS rest = *in;
    uint8_t c, b;
    uint32_t cp, min;
    size_t more;

    if (!CBS_get_u8(&rest, &c))
        return 0;
    if (c < 0x80) {
        more = 0, cp = c, min = 0;
    } else if ((c & 0xe0) == 0xc0) {
        more = 1, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        more = 2, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        more = 3, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 0; i < more; i++) {
        if (!CBS_get_u8(&rest, &b) || (b & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (b & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return CBS_get_bytes(in, out, more + 1);
}

/* add_json_string writes |n| bytes at |s| as a JSON string (RFC 8259 §7). */
static int add_json_string(CBB *cbb, const uint8_t *s, size_t n)
{
    CBS in, ch;

    CBS_init(&in, s, n);
    if (!CBB_add_u8(cbb, '"'))
        return 0;
    while (CBS_len(&in) > 0) {
        if (!utf8_next(&in, &ch))
            return 0;
        uint8_t c = CBS_data(&ch)[0];
        int ok;
        if (c == '"' || c == '\\')
            ok = CBB_add_u8(cbb, '\\') && CBB_add_u8(cbb, c);
        else if (c < 0x20)
            ok = CBB_add_bytes(cbb, (const uint8_t *)"\\u00", 4) &&
                 CBB_add_u8(cbb, (uint8_t)kHex[c >> 4]) && CBB_add_u8(cbb, (uint8_t)kHex[c & 15]);
        else
            ok = CBB_add_bytes(cbb, CBS_data(&ch), CBS_len(&ch));
        if (!ok)
            return 0;
    }
    return CBB_add_u8(cbb, '"');
}

static int add_literal(CBB *cbb, const char *s)
{
    return CBB_add_bytes(cbb, (const uint8_t *)s, strlen(s));
}

/* add_member writes ,"|key|":"|value|" for a string member. */
static int add_member(CBB *cbb, const char *key, const uint8_t *value, size_t n)
{
    return CBB_add_u8(cbb, ',') && add_json_string(cbb, (const uint8_t *)key, strlen(key)) &&
           CBB_add_u8(cbb, ':') && add_json_string(cbb, value, n);
}

/* add_first writes the member |key| with the first value of |field|, if there is one. */
static int add_first(CBB *cbb, const identity_t *id, identity_field_t field, const char *key)
{
    for (size_t i = 0; i < id->n_values; i++) {
        if (id->field_of[i] == field)
            return add_member(cbb, key, (const uint8_t *)id->values[i], id->lens[i]);
    }
    return 1;
}

/* add_all writes the member |key| with an array of every value of |field|, if there is one. */
static int add_all(CBB *cbb, const identity_t *id, identity_field_t field, const char *key)
{
    size_t n = 0;
    for (size_t i = 0; i < id->n_values; i++) {
        if (id->field_of[i] != field)
            continue;
        if (n++ == 0) {
            if (!CBB_add_u8(cbb, ',') || !add_json_string(cbb, (const uint8_t *)key, strlen(key)) ||
                !add_literal(cbb, ":["))
                return 0;
        } else if (!CBB_add_u8(cbb, ',')) {
            return 0;
        }
        if (!add_json_string(cbb, (const uint8_t *)id->values[i], id->lens[i]))
            return 0;
    }
    return n == 0 || CBB_add_u8(cbb, ']');
}

int forward_identity_json(CBB *cbb, const identity_t *id, const char *listener, const char *rule)
{
    if (!add_literal(cbb, "{\"v\":1"))
        return 0;
    if (listener != NULL &&
        !add_member(cbb, "listener", (const uint8_t *)listener, strlen(listener)))
        return 0;
    if (rule != NULL && !add_member(cbb, "rule", (const uint8_t *)rule, strlen(rule)))
        return 0;
    return add_first(cbb, id, ID_CN, "cn") && add_all(cbb, id, ID_URI, "uri") &&
           add_all(cbb, id, ID_DNS, "dns") && add_first(cbb, id, ID_SERIAL, "serial") &&
           add_first(cbb, id, ID_SHA256, "sha256") && CBB_add_u8(cbb, '}');
}

/* chunk_header_len: key and length of one chunk, Pyro4 u16 (PROTOCOL.md §2.2), Pyro5 u32
 * (§3.4). */
static size_t chunk_header_len(frame_proto_t proto)
{
    return proto == PROTO_PYRO5 ? 8 : 6;
}

static size_t max_block_len(frame_proto_t proto)
{
    return proto == PROTO_PYRO5 ? 0xffffffffu : 0xffff;
}

/* next_chunk reads the next chunk of |*anns| and sets |*raw| to its bytes as sent. */
static int next_chunk(CBS *anns, frame_proto_t proto, frame_annotation_t *a, CBS *raw)
{
    CBS before = *anns;
    if (!frame_annotation_next_as(anns, proto, a))
        return 0;
    return CBS_get_bytes(&before, raw, CBS_len(&before) - CBS_len(anns));
}

/* scan_chunks checks |f|'s block for "HMAC" and measures what stays of it without "PGID": its
 * bytes and its chunks. */
static forward_status_t scan_chunks(const frame_t *f, size_t *out_kept, size_t *out_chunks)
{
    CBS anns = f->annotations, raw;
    frame_annotation_t a;

    *out_kept = *out_chunks = 0;
    while (CBS_len(&anns) > 0) {
        if (!next_chunk(&anns, f->proto, &a, &raw))
            return FORWARD_NOMEM; /* unreachable: frame_parse_as validated the block */
        if (memcmp(a.key, "HMAC", 4) == 0)
            return FORWARD_HMAC;
        if (memcmp(a.key, FORWARD_KEY, 4) != 0) {
            *out_kept += CBS_len(&raw);
            (*out_chunks)++;
        }
    }
    return FORWARD_OK;
}

/* build_block writes |f|'s chunks but "PGID", then the new "PGID" chunk, to |block|. */
static int build_block(CBB *block, const frame_t *f, const uint8_t *json, size_t json_len)
{
    CBS anns = f->annotations, raw;
    frame_annotation_t a;

    while (CBS_len(&anns) > 0) {
        if (!next_chunk(&anns, f->proto, &a, &raw))
            return 0;
        if (memcmp(a.key, FORWARD_KEY, 4) != 0 &&
            !CBB_add_bytes(block, CBS_data(&raw), CBS_len(&raw)))
            return 0;
    }
    if (!CBB_add_bytes(block, (const uint8_t *)FORWARD_KEY, 4))
        return 0;
    /* json_len <= FORWARD_MAX_JSON: it fits either length field. */
    if (!(f->proto == PROTO_PYRO5 ? CBB_add_u32(block, (uint32_t)json_len)
                                  : CBB_add_u16(block, (uint16_t)json_len)))
        return 0;
    return CBB_add_bytes(block, json, json_len);
}

forward_status_t forward_rewrite(CBB *out, const frame_t *f, const uint8_t *json, size_t json_len)
{
    CBB block;
    size_t kept, chunks, block_len;
    forward_status_t st = scan_chunks(f, &kept, &chunks);

    if (st != FORWARD_OK)
        return st;
    /* The message pyroguard forwards stays one pyroguard itself would accept: at most
     * FRAME_MAX_ANNOTATIONS chunks, ours included. */
    if (json_len > FORWARD_MAX_JSON || chunks >= FRAME_MAX_ANNOTATIONS)
        return FORWARD_TOO_LARGE;
    /* kept is at most the parsed block's length (u32), so the sum cannot overflow size_t. */
    block_len = kept + chunk_header_len(f->proto) + json_len;
    if (block_len > max_block_len(f->proto))
        return FORWARD_TOO_LARGE;

    if (!CBB_init(&block, block_len))
        return FORWARD_NOMEM;
    st = FORWARD_NOMEM;
    if (!build_block(&block, f, json, json_len) || !CBB_flush(&block))
        goto free_block;
    if (!frame_rebuild(out, f, CBB_data(&block), CBB_len(&block), CBS_data(&f->payload),
                       CBS_len(&f->payload)))
        goto free_block;
    st = FORWARD_OK;
free_block:
    CBB_cleanup(&block);
    return st;
}
