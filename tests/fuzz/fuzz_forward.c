/* fuzz_forward: libFuzzer target for identity forwarding (proxy/forward.c, frame_rebuild in
 * proxy/frame.c) and streams bound to their owner (proxy/streams.c), over one message read as
 * each protocol in turn (Pyro4 48, 46, 47 and Pyro5 502; the input's version field picks the one
 * that parses).
 *
 * For a message that parses, forward_rewrite with a fixed identity JSON (made once by
 * forward_identity_json and checked against its expected text) must:
 *  - refuse with FORWARD_HMAC exactly when a chunk is "HMAC", and with FORWARD_TOO_LARGE exactly
 *    when the JSON is over FORWARD_MAX_JSON, 64 chunks would stay besides PGID (the rewritten
 *    message would have 65, more than frame_parse_as takes), or the new block would pass 65535
 *    bytes (Pyro4; the JSON lengths either side of that boundary are tried), appending nothing
 *    either way;
 *  - otherwise give one message that frame_parse_as reads as the same protocol, no byte left
 *    over, with the same version, type, flags and serializer as sent, seq, correlation id and
 *    payload, and whose chunks, read by a naive second splitter, are the input's chunks byte for
 *    byte and in order with every "PGID" left out, then one "PGID" whose value is the JSON.
 * forward_identity_json, given the payload as a CN and a URI, succeeds exactly when it is
 * well-formed UTF-8, and pyroguard's JSON decoder then reads the same strings back.
 *
 * streams_record_reply is given the parsed annotation block, and, as conn.c does with a reply it
 * forwards unparsed, the raw block after any header that parses: its answer must be the naive
 * splitter's (1: one STRM of 1..STREAMS_MAX_ID_LEN bytes, then owned; 0: none; -1: a bad block,
 * two STRM, an empty or long id). Whatever inspection decodes goes to streams_check_call: with no
 * id recorded, a Pyro.Daemon stream call is always refused and every other call passes; with the
 * input's ids, a passing stream call is a plain call naming an owned id. streams_free ends. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bytestring.h>
#include <openssl/mem.h>

#include "call.h"
#include "config.h"
#include "decode.h"
#include "forward.h"
#include "frame.h"
#include "identity.h"
#include "inspect.h"
#include "streams.h"
#include "value.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define LIMIT      ((size_t)16777216)
#define LIMIT_OUT  (LIMIT + FORWARD_MAX_JSON + 8)
#define MAX_CHUNKS (FRAME_MAX_ANNOTATIONS + 2)

static const frame_proto_t kProtos[] = {PROTO_PYRO4, PROTO_PYRO4_46, PROTO_PYRO4_47, PROTO_PYRO5};

static const char kExpectedJson[] =
    "{\"v\":1,\"listener\":\"app\",\"rule\":\"billing\",\"cn\":\"billing \\\"client\\\\\","
    "\"uri\":[\"spiffe://example.org/ns/x/client\"],\"dns\":[\"a.example\",\"b.example\"],"
    "\"serial\":\"1A2B\",\"sha256\":"
    "\"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF\"}";

static uint8_t *g_json; /* the fixed identity JSON, made once */
static size_t g_json_len;
static uint8_t g_pad[FORWARD_MAX_JSON + 1]; /* a JSON value of any length up to one too long */
static config_t g_cfg;

/* ---- a second reading of annotation blocks, without frame.c ---------------------------- */

typedef struct {
    uint8_t key[4];
    CBS raw; /* the chunk as sent: key, length, value */
    CBS value;
} chunk_t;

/* next_chunk reads one chunk of |proto| from |block| (PROTOCOL.md §2.2, §3.4): four printable
 * ASCII key bytes, a big-endian u16 (Pyro4) or u32 (Pyro5) length, the value. */
static int next_chunk(CBS *block, frame_proto_t proto, chunk_t *out)
{
    CBS start = *block, key;
    uint32_t n;
    uint16_t n16;

    if (!CBS_get_bytes(block, &key, 4))
        return 0;
    if (proto == PROTO_PYRO5) {
        if (!CBS_get_u32(block, &n))
            return 0;
    } else {
        if (!CBS_get_u16(block, &n16))
            return 0;
        n = n16;
    }
    if (!CBS_get_bytes(block, &out->value, n))
        return 0;
    for (size_t i = 0; i < 4; i++) {
        if (CBS_data(&key)[i] < 0x20 || CBS_data(&key)[i] > 0x7e)
            return 0;
    }
    memcpy(out->key, CBS_data(&key), 4);
    return CBS_get_bytes(&start, &out->raw, CBS_len(&start) - CBS_len(block));
}

/* split_chunks reads all of |block| with next_chunk, nothing left over: the first |max| chunks
 * go to |out|, |*out_n| counts them all. Returns 0 for a malformed block. */
static int split_chunks(CBS block, frame_proto_t proto, chunk_t *out, size_t max, size_t *out_n)
{
    chunk_t c;

    *out_n = 0;
    while (CBS_len(&block) > 0) {
        if (!next_chunk(&block, proto, &c))
            return 0;
        if (*out_n < max)
            out[*out_n] = c;
        (*out_n)++;
    }
    return 1;
}

/* kept_len measures the chunks of |f| that are not "PGID". */
static size_t kept_len(const frame_t *f, size_t *out_n_kept, int *out_hmac)
{
    chunk_t c;
    CBS block = f->annotations;
    size_t len = 0, n = 0;

    *out_hmac = 0;
    while (CBS_len(&block) > 0) {
        CHECK(next_chunk(&block, f->proto, &c));
        *out_hmac |= memcmp(c.key, "HMAC", 4) == 0;
        if (memcmp(c.key, FORWARD_KEY, 4) != 0)
            len += CBS_len(&c.raw), n++;
    }
    if (out_n_kept != NULL)
        *out_n_kept = n;
    return len;
}

static int cbs_eq(CBS a, CBS b)
{
    return CBS_len(&a) == CBS_len(&b) && memcmp(CBS_data(&a), CBS_data(&b), CBS_len(&a)) == 0;
}

/* ---- forward_rewrite ---------------------------------------------------------------------- */

/* check_rewrite runs forward_rewrite on |f| with |json_len| bytes at |json| and checks the
 * outcome against the naive reading of |f|'s block. */
static void check_rewrite(const frame_t *f, const uint8_t *json, size_t json_len)
{
    chunk_t in[MAX_CHUNKS], got[MAX_CHUNKS];
    size_t n_in, n_got, n_kept;
    int hmac;

    CHECK(split_chunks(f->annotations, f->proto, in, MAX_CHUNKS, &n_in));
    CHECK(n_in <= FRAME_MAX_ANNOTATIONS);
    size_t kept = kept_len(f, &n_kept, &hmac);
    size_t hdr = f->proto == PROTO_PYRO5 ? 8 : 6;
    size_t max_block = f->proto == PROTO_PYRO5 ? 0xffffffffu : 0xffffu;
    forward_status_t want = hmac                                ? FORWARD_HMAC
                            : json_len > FORWARD_MAX_JSON       ? FORWARD_TOO_LARGE
                            : n_kept >= FRAME_MAX_ANNOTATIONS   ? FORWARD_TOO_LARGE
                            : kept + hdr + json_len > max_block ? FORWARD_TOO_LARGE
                                                                : FORWARD_OK;
    CBB cbb;
    CHECK(CBB_init(&cbb, 0));
    forward_status_t st = forward_rewrite(&cbb, f, json, json_len);
    CHECK(st == want);
    if (st != FORWARD_OK) {
        CHECK(CBB_len(&cbb) == 0);
        CBB_cleanup(&cbb);
        return;
    }
    uint8_t *out;
    size_t out_len;
    CHECK(CBB_finish(&cbb, &out, &out_len));

    frame_t g;
    frame_error_t err;
    CHECK(frame_parse_as(out, out_len, f->proto, FRAME_PROTO_BIT(f->proto), LIMIT_OUT, &g, &err) ==
          FRAME_OK);
    CHECK(g.total_len == out_len && g.proto == f->proto && g.version == f->version);
    CHECK(g.type == f->type && g.wire_flags == f->wire_flags && g.flags == f->flags);
    CHECK(g.seq == f->seq && g.wire_serializer == f->wire_serializer);
    CHECK(g.serializer_id == f->serializer_id);
    CHECK(memcmp(g.corr_id, f->corr_id, FRAME5_CORR_LEN) == 0);
    CHECK(cbs_eq(g.payload, f->payload));
    CHECK(g.ann_len == kept + hdr + json_len);

    CHECK(split_chunks(g.annotations, g.proto, got, MAX_CHUNKS, &n_got));
    CHECK(n_got == n_kept + 1);
    size_t j = 0;
    for (size_t i = 0; i < n_in; i++) {
        if (memcmp(in[i].key, FORWARD_KEY, 4) == 0)
            continue;
        CHECK(cbs_eq(got[j].raw, in[i].raw));
        j++;
    }
    CHECK(j == n_kept && memcmp(got[j].key, FORWARD_KEY, 4) == 0);
    CBS want_json;
    CBS_init(&want_json, json, json_len);
    CHECK(cbs_eq(got[j].value, want_json));
    CBS found;
    CHECK(frame_find_annotation(&g, FORWARD_KEY, &found) && cbs_eq(found, want_json));
    OPENSSL_free(out);
}

/* check_forward tries the fixed JSON, the longest and one too long, and for Pyro4 the lengths
 * either side of the 65535-byte block limit when a JSON can reach it. */
static void check_forward(const frame_t *f)
{
    check_rewrite(f, g_json, g_json_len);
    check_rewrite(f, g_pad, FORWARD_MAX_JSON);
    check_rewrite(f, g_pad, FORWARD_MAX_JSON + 1);
    if (f->proto == PROTO_PYRO5)
        return;

    int hmac;
    size_t kept = kept_len(f, NULL, &hmac);
    if (kept + 6 <= 0xffff && 0xffff - kept - 6 < FORWARD_MAX_JSON) {
        size_t edge = 0xffff - kept - 6;
        check_rewrite(f, g_pad, edge);
        check_rewrite(f, g_pad, edge + 1);
    }
}

/* ---- forward_identity_json ---------------------------------------------------------------- */

/* utf8_ok is a naive strict UTF-8 check written from RFC 3629 §4's syntax (no overlong form,
 * surrogate or code point past U+10FFFF: what Python's strict decode refuses), byte ranges
 * rather than forward.c's decoding. */
static int utf8_ok(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t more;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c <= 0x7f) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
        } else if (c == 0xe0) {
            more = 2, lo = 0xa0;
        } else if (c == 0xed) {
            more = 2, hi = 0x9f;
        } else if (c >= 0xe1 && c <= 0xef) {
            more = 2;
        } else if (c == 0xf0) {
            more = 3, lo = 0x90;
        } else if (c == 0xf4) {
            more = 3, hi = 0x8f;
        } else if (c >= 0xf1 && c <= 0xf3) {
            more = 3;
        } else {
            return 0;
        }
        if (n - i - 1 < more)
            return 0;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= more; k++) {
            if (p[i + k] < 0x80 || p[i + k] > 0xbf)
                return 0;
        }
        i += more + 1;
    }
    return 1;
}

static int value_is_bytes(const value_t *v, const uint8_t *p, size_t n)
{
    return v != NULL && v->type == VAL_STR && v->u.str.len == n &&
           (n == 0 || memcmp(v->u.str.data, p, n) == 0);
}

/* check_identity_json writes the JSON for a certificate whose CN and one URI SAN are the |n|
 * bytes at |p| and reads it back. */
static void check_identity_json(const uint8_t *p, size_t n)
{
    identity_t id;
    memset(&id, 0, sizeof(id));
    id.values[0] = (const char *)p;
    id.lens[0] = (uint16_t)n;
    id.field_of[0] = ID_URI;
    id.values[1] = (const char *)p;
    id.lens[1] = (uint16_t)n;
    id.field_of[1] = ID_CN;
    id.n_values = 2;

    CBB cbb;
    uint8_t *json;
    size_t json_len;
    CHECK(CBB_init(&cbb, 64));
    int ok = forward_identity_json(&cbb, &id, "app", NULL);
    CHECK(ok == utf8_ok(p, n));
    if (!ok) {
        CBB_cleanup(&cbb);
        return;
    }
    CHECK(CBB_finish(&cbb, &json, &json_len));
    for (size_t i = 0; i < json_len; i++)
        CHECK(json[i] >= 0x20); /* control characters are escaped */

    value_arena_t arena;
    value_t *top;
    const value_t *v;
    const char *reason;
    value_arena_init(&arena, NULL);
    CHECK(decode_json(json, json_len, &arena, &top, &reason));
    CHECK(top->type == VAL_DICT && top->u.dict.n == 4);
    CHECK(value_dict_get(top, "v", &v) == 1 && v->type == VAL_INT);
    CHECK(value_dict_get(top, "listener", &v) == 1 && value_is_str(v, "app"));
    CHECK(value_dict_get(top, "cn", &v) == 1 && value_is_bytes(v, p, n));
    CHECK(value_dict_get(top, "uri", &v) == 1 && v->type == VAL_LIST && v->u.seq.n == 1);
    CHECK(value_is_bytes(v->u.seq.items[0], p, n));
    CHECK(value_is_str(top->u.dict.keys[2], "cn")); /* the order of forward.h */
    value_arena_cleanup(&arena);
    OPENSSL_free(json);
}

/* ---- streams -------------------------------------------------------------------------------- */

/* check_record gives |block| to streams_record_reply and checks the answer against the naive
 * splitter. */
static void check_record(streams_t *s, frame_proto_t proto, CBS block)
{
    chunk_t c;
    size_t strm = 0;
    int well_formed = 1;
    CBS id, rest = block;

    CBS_init(&id, NULL, 0);
    while (CBS_len(&rest) > 0 && well_formed) {
        well_formed = next_chunk(&rest, proto, &c);
        if (well_formed && memcmp(c.key, "STRM", 4) == 0)
            strm++, id = c.value;
    }
    int want = !well_formed || strm > 1                                 ? -1
               : strm == 0                                              ? 0
               : CBS_len(&id) == 0 || CBS_len(&id) > STREAMS_MAX_ID_LEN ? -1
                                                                        : 1;
    size_t before = streams_count(s);
    int got = streams_record_reply(s, proto, CBS_data(&block), CBS_len(&block));
    CHECK(got == want);
    if (got == 1) {
        CHECK(streams_owns(s, CBS_data(&id), CBS_len(&id)));
        CHECK(streams_count(s) == before || streams_count(s) == before + 1);
    } else {
        CHECK(streams_count(s) == before);
    }
}

static int is_stream_method(const value_t *v)
{
    return value_is_str(v, "get_next_stream_item") || value_is_str(v, "close_stream");
}

/* owned_arg returns 1 if the plain call |n| names, as vargs (id,) or kwargs {"streamId": id},
 * a str id owned by |s|. */
static int owned_arg(const streams_t *s, const call_name_t *n)
{
    const value_t *id = NULL, *args = n->args, *kw = n->kwargs;
    if (args == NULL || kw == NULL || kw->type != VAL_DICT ||
        (args->type != VAL_TUPLE && args->type != VAL_LIST))
        return 0;
    if (args->u.seq.n == 1 && kw->u.dict.n == 0)
        id = args->u.seq.items[0];
    else if (args->u.seq.n == 0 && kw->u.dict.n == 1 &&
             value_is_str(kw->u.dict.keys[0], "streamId"))
        id = kw->u.dict.values[0];
    return id != NULL && id->type == VAL_STR && streams_owns(s, id->u.str.data, id->u.str.len);
}

/* check_calls inspects |f| and judges its call against no ids and against |s|'s. */
static void check_calls(const frame_t *f, const streams_t *s)
{
    if (f->type != MSG_CONNECT && f->type != MSG_INVOKE)
        return;
    inspect_t in;
    inspect_init(&in);
    (void)inspect_request(&g_cfg, f, &in);
    if (in.decoded) {
        const call_t *call = &in.call;
        int stream_call = 0;
        if (call->kind == CALL_INVOKE && value_is_str(call->object, "Pyro.Daemon")) {
            for (size_t i = 0; i < call->n_names; i++)
                stream_call |= is_stream_method(call->names[i].name);
        }
        streams_t empty = {0};
        char detail[256], tiny[8];
        int r0 = streams_check_call(&empty, call, detail, sizeof(detail));
        CHECK(r0 == !stream_call);
        if (!r0)
            CHECK(strncmp(detail, "pyroguard: stream ", 18) == 0);
        int r = streams_check_call(s, call, tiny, sizeof(tiny));
        CHECK(r >= r0);
        if (!r)
            CHECK(strlen(tiny) < sizeof(tiny));
        if (r && stream_call) {
            CHECK(!call->batch && call->n_names == 1);
            CHECK(call->names[0].kind == CALL_NAME_METHOD);
            CHECK(owned_arg(s, &call->names[0]));
        }
    }
    inspect_cleanup(&in);
}

/* ---- the target ------------------------------------------------------------------------------ */

static void setup(void)
{
    static const char kSha[] = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF";
    static const struct {
        identity_field_t field;
        const char *value;
    } kValues[] = {
        {ID_CN, "billing \"client\\"}, {ID_O, "Example"},
        {ID_DNS, "a.example"},         {ID_URI, "spiffe://example.org/ns/x/client"},
        {ID_DNS, "b.example"},         {ID_CN, "second-cn"},
        {ID_SERIAL, "1A2B"},           {ID_SHA256, kSha},
    };
    identity_t id;
    CBB cbb;

    memset(&id, 0, sizeof(id));
    for (size_t i = 0; i < sizeof(kValues) / sizeof(kValues[0]); i++) {
        id.values[i] = kValues[i].value;
        id.lens[i] = (uint16_t)strlen(kValues[i].value);
        id.field_of[i] = (uint8_t)kValues[i].field;
    }
    id.n_values = sizeof(kValues) / sizeof(kValues[0]);
    CHECK(CBB_init(&cbb, 256));
    CHECK(forward_identity_json(&cbb, &id, "app", "billing"));
    CHECK(CBB_finish(&cbb, &g_json, &g_json_len));
    CHECK(g_json_len == strlen(kExpectedJson) && memcmp(g_json, kExpectedJson, g_json_len) == 0);
    memset(g_pad, 'x', sizeof(g_pad));

    config_init(&g_cfg);
    g_cfg.pyro.max_inflated_bytes = 1 << 20; /* keep bombs cheap for the fuzzer */
    g_cfg.pyro.protocols = FRAME_PROTO_BIT(PROTO_PYRO4_46) | FRAME_PROTO_BIT(PROTO_PYRO4_47) |
                           FRAME_PROTO_BIT(PROTO_PYRO4) | FRAME_PROTO_BIT(PROTO_PYRO5);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    streams_t s = {0};

    if (!ready) {
        setup();
        ready = 1;
    }
    for (size_t i = 0; i < sizeof(kProtos) / sizeof(kProtos[0]); i++) {
        frame_proto_t p = kProtos[i];
        frame_t f;
        frame_error_t err;

        /* A reply's block as conn.c sees it: after a valid header, not validated. */
        if (frame_parse_header_as(data, size, p, FRAME_PROTO_BIT(p), LIMIT, &f, &err) == FRAME_OK &&
            size - f.header_len >= f.ann_len) {
            CBS raw;
            CBS_init(&raw, data + f.header_len, f.ann_len);
            check_record(&s, p, raw);
        }
        if (frame_parse_as(data, size, p, FRAME_PROTO_BIT(p), LIMIT, &f, &err) != FRAME_OK)
            continue;
        CHECK(f.proto == p);
        check_forward(&f);
        check_record(&s, p, f.annotations);
        check_calls(&f, &s);
        if (CBS_len(&f.payload) <= IDENTITY_MAX_VALUE_LEN)
            check_identity_json(CBS_data(&f.payload), CBS_len(&f.payload));
    }
    streams_free(&s);
    CHECK(streams_count(&s) == 0);
    streams_free(&s);
    return 0;
}
