#include "inspect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "alloc.h"
#include "decode.h"

void inspect_init(inspect_t *in)
{
    memset(in, 0, sizeof(*in));
    value_arena_init(&in->arena, NULL);
}

static void inspect_reset(inspect_t *in)
{
    value_arena_reset(&in->arena);
    free(in->inflated);
    in->inflated = NULL;
    in->inflated_len = 0;
    in->reason = NULL;
    in->detail[0] = '\0';
    in->decoded = 0;
    memset(&in->call, 0, sizeof(in->call));
}

void inspect_cleanup(inspect_t *in)
{
    inspect_reset(in);
    value_arena_cleanup(&in->arena);
}

static inspect_verdict_t refuse(inspect_t *in, const char *reason, const char *detail)
{
    in->reason = reason;
    snprintf(in->detail, sizeof(in->detail), "%s", detail);
    return INSPECT_REFUSE;
}

/* inflate_payload undoes zlib compression (a zlib container, as Python's zlib.decompress
 * reads it) into in->inflated, refusing more than |max| bytes of output, a stream that does
 * not end, and bytes after its end (Python ignores those; honest senders never write them). */
static int inflate_payload(inspect_t *in, CBS payload, size_t max, const char **out_reason)
{
    z_stream zs;
    size_t cap = CBS_len(&payload) * 4 + 1024;
    int ok = 0;

    memset(&zs, 0, sizeof(zs));
    if (inflateInit(&zs) != Z_OK) {
        *out_reason = "inflate_failed";
        return 0;
    }
    if (cap > max + 1)
        cap = max + 1;
    uint8_t *out = pg_malloc(cap);
    if (out == NULL) {
        *out_reason = "inflate_failed";
        goto end_inflate;
    }
    zs.next_in = (Bytef *)(uintptr_t)CBS_data(&payload);
    zs.avail_in = (uInt)CBS_len(&payload);
    size_t produced = 0;
    for (;;) {
        if (produced == cap) {
            if (cap > max) {
                *out_reason = "inflated_too_large";
                goto free_out;
            }
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            uint8_t *n = pg_realloc(out, ncap);
            if (n == NULL) {
                *out_reason = "inflate_failed";
                goto free_out;
            }
            out = n;
            cap = ncap;
        }
        size_t room = cap - produced;
        zs.next_out = out + produced;
        zs.avail_out = room > 0x40000000 ? 0x40000000 : (uInt)room;
        uInt before = zs.avail_out;
        int rc = inflate(&zs, Z_NO_FLUSH);
        produced += before - zs.avail_out;
        if (produced > max) {
            *out_reason = "inflated_too_large";
            goto free_out;
        }
        if (rc == Z_STREAM_END)
            break;
        if (rc != Z_OK && !(rc == Z_BUF_ERROR && zs.avail_out == 0)) {
            *out_reason = "inflate_failed";
            goto free_out;
        }
        if (zs.avail_in == 0 && zs.avail_out != 0) {
            *out_reason = "inflate_failed"; /* truncated stream */
            goto free_out;
        }
    }
    if (zs.avail_in != 0) {
        *out_reason = "inflate_failed"; /* bytes after the end of the stream */
        goto free_out;
    }
    in->inflated = out;
    in->inflated_len = produced;
    out = NULL;
    ok = 1;
free_out:
    free(out);
end_inflate:
    inflateEnd(&zs);
    return ok;
}

typedef int (*decode_fn)(const uint8_t *, size_t, value_arena_t *, value_t **, const char **);

static decode_fn decoder_for(uint16_t serializer_id)
{
    switch (serializer_id) {
    case SER4_SERPENT:
        return decode_serpent;
    case SER4_JSON:
        return decode_json;
    case SER4_MARSHAL:
        return decode_marshal;
    case SER4_MSGPACK:
        return decode_msgpack;
    }
    return NULL;
}

static inspect_verdict_t inspect_blob(const frame_t *f, inspect_t *in)
{
    CBS blbi;
    value_t *v = NULL;
    const char *why = NULL;
    call_refusal_t r;

    if (!frame_find_annotation(f, "BLBI", &blbi))
        return refuse(in, "malformed_call",
                      "pyroguard: KEEPSERIALIZED call without a BLBI annotation");
    /* BLBI is always marshal, whatever the header's serializer (§2.8). */
    if (!decode_marshal(CBS_data(&blbi), CBS_len(&blbi), &in->arena, &v, &why)) {
        char detail[200];
        snprintf(detail, sizeof(detail), "pyroguard: BLBI annotation cannot be decoded (%s)",
                 why ? why : "invalid");
        return refuse(in, "undecodable", detail);
    }
    if (!call_from_blob(v, f->flags, &in->arena, &in->call, &r)) {
        in->decoded = in->call.object != NULL;
        return refuse(in, r.reason, r.detail);
    }
    in->decoded = 1;
    return INSPECT_ALLOW;
}

inspect_verdict_t inspect_request(const config_t *cfg, const frame_t *f, inspect_t *in)
{
    char detail[256];

    inspect_reset(in);
    in->arena.limits.max_depth = cfg->pyro.max_depth;
    in->arena.limits.max_values = cfg->pyro.max_values;
    /* A decoded string is never longer than the (inflated) payload it came from. */
    in->arena.limits.max_string_bytes = cfg->pyro.max_inflated_bytes > cfg->pyro.max_message_bytes
                                            ? cfg->pyro.max_inflated_bytes
                                            : cfg->pyro.max_message_bytes;
    /* A flag whose meaning in this protocol is not established (frame.h: BATCH in Pyro4 46 and
     * 47) could make the daemon read the message otherwise than pyroguard does. */
    uint16_t odd = frame_unsupported_flags(f);
    if (odd != 0) {
        snprintf(detail, sizeof(detail),
                 "pyroguard: flags 0x%04x are not supported for Pyro protocol %u", (unsigned)odd,
                 (unsigned)f->version);
        return refuse(in, "unsupported_flags", detail);
    }
    if (f->type == MSG_PING)
        return INSPECT_ALLOW;

    /* The daemon checks the header's id against its accept list before it deserializes
     * (PROTOCOL.md §2.5); with pickle, dill or cloudpickle the deserialization itself runs
     * the attacker's code, so the id is the only thing that can be judged. */
    if (!config_serializer_allowed(cfg, f->serializer_id)) {
        const char *name = frame_serializer_name(f->serializer_id);
        if (name != NULL)
            snprintf(detail, sizeof(detail), "pyroguard: serializer %s (id %u) is not allowed",
                     name, (unsigned)f->serializer_id);
        else
            snprintf(detail, sizeof(detail), "pyroguard: unknown serializer id %u is not allowed",
                     (unsigned)f->serializer_id);
        return refuse(in, "serializer_not_allowed", detail);
    }
    if (f->type == MSG_INVOKE && (f->flags & FLAG4_KEEPSERIALIZED)) {
        /* The daemon reads names from BLBI only and hands the payload on undecoded, without
         * inflating it (§2.6, §2.8); COMPRESSED is still judged by the operator's switch. */
        if ((f->flags & FLAG4_COMPRESSED) && !cfg->pyro.compression_allow)
            return refuse(in, "compression_denied",
                          "pyroguard: compressed messages are not allowed");
        return inspect_blob(f, in);
    }

    CBS payload = f->payload;
    if (f->flags & FLAG4_COMPRESSED) {
        const char *why = NULL;
        if (!cfg->pyro.compression_allow)
            return refuse(in, "compression_denied",
                          "pyroguard: compressed messages are not allowed");
        if (!inflate_payload(in, payload, cfg->pyro.max_inflated_bytes, &why)) {
            if (strcmp(why, "inflated_too_large") == 0)
                snprintf(detail, sizeof(detail),
                         "pyroguard: compressed payload inflates past %llu bytes",
                         (unsigned long long)cfg->pyro.max_inflated_bytes);
            else
                snprintf(detail, sizeof(detail),
                         "pyroguard: compressed payload is not a valid "
                         "zlib stream");
            return refuse(in, why, detail);
        }
        CBS_init(&payload, in->inflated, in->inflated_len);
    }

    decode_fn decode = decoder_for(f->serializer_id);
    value_t *top = NULL;
    const char *why = NULL;
    if (decode == NULL || !decode(CBS_data(&payload), CBS_len(&payload), &in->arena, &top, &why)) {
        snprintf(detail, sizeof(detail), "pyroguard: %s payload cannot be decoded safely (%s)",
                 frame_serializer_name(f->serializer_id), why ? why : "unsupported");
        return refuse(in, "undecodable", detail);
    }
    call_refusal_t r;
    int ok;
    if (f->type == MSG_CONNECT)
        ok = call_from_connect(top, f->proto == PROTO_PYRO5, &in->arena, &in->call, &r);
    else
        ok = call_from_invoke(top, f->serializer_id == SER4_JSON ? CALL_FORM_JSON : CALL_FORM_TUPLE,
                              f->flags, &in->arena, &in->call, &r);
    in->decoded = 1;
    if (!ok)
        return refuse(in, r.reason, r.detail);
    return INSPECT_ALLOW;
}
