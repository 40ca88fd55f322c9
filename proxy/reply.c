#include "reply.h"

#include <string.h>

#include <openssl/mem.h>

/* The class a client's serializer turns the reply back into: Pyro4's and Pyro5's serializers
 * both rebuild "<package>.errors.<name>" exceptions from their own errors module. */
static const char *error_class(frame_proto_t proto)
{
    return proto == PROTO_PYRO5 ? "Pyro5.errors.SecurityError" : "Pyro4.errors.SecurityError";
}
/* The largest message we render; longer texts are cut. */
#define REPLY_MSG_MAX 1024

/* sanitize copies |msg| into |out| keeping printable ASCII and turning other bytes into '?'. */
static size_t sanitize(const char *msg, char out[REPLY_MSG_MAX])
{
    size_t n = 0;
    for (; msg[n] != '\0' && n < REPLY_MSG_MAX; n++) {
        unsigned char c = (unsigned char)msg[n];
        out[n] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    return n;
}

static int add_str(CBB *out, const char *s)
{
    return CBB_add_bytes(out, (const uint8_t *)s, strlen(s));
}

/* Quoted string for serpent (a Python literal) or JSON: both accept \\ and \" escapes. */
static int add_quoted(CBB *out, char quote, const char *s, size_t n)
{
    if (!CBB_add_u8(out, (uint8_t)quote))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if ((s[i] == quote || s[i] == '\\') && !CBB_add_u8(out, '\\'))
            return 0;
        if (!CBB_add_u8(out, (uint8_t)s[i]))
            return 0;
    }
    return CBB_add_u8(out, (uint8_t)quote);
}

/* serpent: a Python literal dict, as serpent writes exceptions (PROTOCOL.md §10). */
static int encode_serpent(CBB *out, const char *cls, const char *m, size_t n)
{
    return add_str(out, "# serpent utf-8 python3.2\n{'__class__':'") && add_str(out, cls) &&
           add_str(out, "','__exception__':True,'args':(") && add_quoted(out, '\'', m, n) &&
           add_str(out, ",),'attributes':{}}");
}

static int encode_json(CBB *out, const char *cls, const char *m, size_t n)
{
    return add_str(out, "{\"__class__\": \"") && add_str(out, cls) &&
           add_str(out, "\", \"__exception__\": true, \"args\": [") && add_quoted(out, '"', m, n) &&
           add_str(out, "], \"attributes\": {}}");
}

/* marshal: TYPE_UNICODE 'u' with a little-endian i32 length (PROTOCOL.md §5.3). */
static int marshal_str(CBB *out, const char *s, size_t n)
{
    return CBB_add_u8(out, 'u') && CBB_add_u32le(out, (uint32_t)n) &&
           CBB_add_bytes(out, (const uint8_t *)s, n);
}

static int marshal_cstr(CBB *out, const char *s)
{
    return marshal_str(out, s, strlen(s));
}

static int encode_marshal(CBB *out, const char *cls, const char *m, size_t n)
{
    return CBB_add_u8(out, '{') && marshal_cstr(out, "__class__") && marshal_cstr(out, cls) &&
           marshal_cstr(out, "__exception__") && CBB_add_u8(out, 'T') &&
           marshal_cstr(out, "args") && CBB_add_u8(out, ')') && CBB_add_u8(out, 1) &&
           marshal_str(out, m, n) && marshal_cstr(out, "attributes") && CBB_add_u8(out, '{') &&
           CBB_add_u8(out, '0') && CBB_add_u8(out, '0');
}

/* msgpack: str8/str16 as needed; the message is capped at REPLY_MSG_MAX. */
static int msgpack_str(CBB *out, const char *s, size_t n)
{
    int ok;
    if (n < 32)
        ok = CBB_add_u8(out, (uint8_t)(0xa0 | n));
    else if (n < 256)
        ok = CBB_add_u8(out, 0xd9) && CBB_add_u8(out, (uint8_t)n);
    else
        ok = CBB_add_u8(out, 0xda) && CBB_add_u16(out, (uint16_t)n);
    return ok && CBB_add_bytes(out, (const uint8_t *)s, n);
}

static int msgpack_cstr(CBB *out, const char *s)
{
    return msgpack_str(out, s, strlen(s));
}

static int encode_msgpack(CBB *out, const char *cls, const char *m, size_t n)
{
    return CBB_add_u8(out, 0x84) && msgpack_cstr(out, "__class__") && msgpack_cstr(out, cls) &&
           msgpack_cstr(out, "__exception__") && CBB_add_u8(out, 0xc3) &&
           msgpack_cstr(out, "args") && CBB_add_u8(out, 0x91) && msgpack_str(out, m, n) &&
           msgpack_cstr(out, "attributes") && CBB_add_u8(out, 0x80);
}

/* pickle protocol 2: GLOBAL 'Pyro4.errors SecurityError', BINUNICODE msg, TUPLE1, REDUCE,
 * STOP. The three pickle serializers (pickle, dill, cloudpickle) all load it. */
static int encode_pickle(CBB *out, const char *m, size_t n)
{
    return CBB_add_u8(out, 0x80) && CBB_add_u8(out, 2) && CBB_add_u8(out, 'c') &&
           add_str(out, "Pyro4.errors\nSecurityError\n") && CBB_add_u8(out, 'X') &&
           CBB_add_u32le(out, (uint32_t)n) && CBB_add_bytes(out, (const uint8_t *)m, n) &&
           CBB_add_u8(out, 0x85) && CBB_add_u8(out, 'R') && CBB_add_u8(out, '.');
}

int reply_encode_security_error(CBB *out, frame_proto_t proto, uint16_t serializer_id,
                                const char *msg)
{
    char m[REPLY_MSG_MAX];
    size_t n = sanitize(msg, m);
    const char *cls = error_class(proto);
    switch (serializer_id) {
    case SER4_SERPENT:
        return encode_serpent(out, cls, m, n);
    case SER4_JSON:
        return encode_json(out, cls, m, n);
    case SER4_MARSHAL:
        return encode_marshal(out, cls, m, n);
    case SER4_MSGPACK:
        return encode_msgpack(out, cls, m, n);
    case SER4_PICKLE:
    case SER4_DILL:
    case SER4_CLOUDPICKLE:
        /* Pyro5 has no pickle serializer (PROTOCOL.md §3.3): its ids never get here. */
        return proto != PROTO_PYRO5 && encode_pickle(out, m, n);
    }
    return 0;
}

/* build_message encodes a payload with |encode| into a scratch CBB, then frames it. */
static int frame_payload(CBB *out, frame_proto_t proto, uint16_t type, uint16_t flags, uint16_t seq,
                         uint16_t ser, const uint8_t *corr_id, CBB *payload)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int ok = CBB_finish(payload, &data, &len) &&
             frame_build_as(out, proto, type, flags, seq, ser, corr_id, NULL, 0, data, len);
    OPENSSL_free(data);
    return ok;
}

int reply_security_error(CBB *out, frame_proto_t proto, uint16_t seq, uint16_t serializer_id,
                         const uint8_t *corr_id, const char *msg)
{
    CBB payload;
    if (proto == PROTO_NONE || !CBB_init(&payload, 256))
        return 0;
    if (!reply_encode_security_error(&payload, proto, serializer_id, msg)) {
        CBB_cleanup(&payload);
        return 0;
    }
    int ok = frame_payload(out, proto, MSG_RESULT, FLAG4_EXCEPTION, seq, serializer_id, corr_id,
                           &payload);
    CBB_cleanup(&payload);
    return ok;
}

int reply_connectfail(CBB *out, frame_proto_t proto, uint16_t seq, const uint8_t *corr_id,
                      const char *msg)
{
    char m[REPLY_MSG_MAX];
    size_t n = sanitize(msg, m);
    CBB payload;
    if (proto == PROTO_NONE || !CBB_init(&payload, 128))
        return 0;
    if (!marshal_str(&payload, m, n)) {
        CBB_cleanup(&payload);
        return 0;
    }
    int ok = frame_payload(out, proto, MSG_CONNECTFAIL, 0, seq, SER4_MARSHAL, corr_id, &payload);
    CBB_cleanup(&payload);
    return ok;
}
