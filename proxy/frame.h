/* frame: the Pyro wire framing, parsed and built with BoringSSL's CBS/CBB: Pyro4 protocol 48
 * (PROTOCOL.md §2), the older Pyro4 protocols 46 and 47 (§13: the same 24-byte header with
 * another version number and fewer flags) and Pyro5 protocol 502 (§3: a 40-byte header, u32
 * lengths, a correlation id in the header, renumbered flags and serializer ids).
 *
 * frame_parse_as is stateless: given the bytes received so far it says "need more", "error
 * (with a reason)" or "a whole message of n bytes". The protocol is the one the connection was
 * fixed to, or, for its first message, detected from the version field among those accepted.
 * The declared size is checked against the limit as soon as the header is complete, before any
 * payload is awaited. A parsed frame_t points into the caller's buffer and owns nothing.
 *
 * Flags and serializer ids are given to the rest of pyroguard in one numbering whatever the
 * protocol — Pyro4 48's (FLAG4_*, SER4_*) plus FLAG_CORR_ID — so inspection has one meaning
 * for each; the bytes on the wire are kept as they were (wire_flags, wire_serializer) and
 * forwarded unchanged. A flag the protocol does not have is never given in |flags| (a
 * KEEPSERIALIZED bit sent to a protocol 47 daemon does not make it skip decoding the payload,
 * so pyroguard must not skip it either); frame_unsupported_flags says which bits of a message
 * pyroguard cannot interpret for its protocol. */
#ifndef PYROGUARD_FRAME_H
#define PYROGUARD_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/bytestring.h>
#include <openssl/is_boringssl.h>
#ifndef OPENSSL_IS_BORINGSSL
#error "pyroguard must be built against BoringSSL's headers (android-libboringssl-dev)"
#endif

#define FRAME4_HEADER_LEN    24
#define FRAME4_VERSION       48
#define FRAME4_VERSION_46    46
#define FRAME4_VERSION_47    47
#define FRAME4_CHECKSUM_KEY  0x34E9
#define FRAME5_HEADER_LEN    40
#define FRAME5_VERSION       502
#define FRAME5_MAGIC         0x4DC5
#define FRAME5_CORR_LEN      16
#define FRAME_MAX_HEADER_LEN FRAME5_HEADER_LEN

/* The wire protocols pyroguard speaks; a connection speaks one, fixed by its first message. */
typedef enum {
    PROTO_NONE = 0, /* not known yet */
    PROTO_PYRO4_46, /* Pyro4 4.22-4.25 */
    PROTO_PYRO4_47, /* Pyro4 4.26-4.37 */
    PROTO_PYRO4,    /* Pyro4 4.38-4.82, protocol 48 */
    PROTO_PYRO5,    /* Pyro5 5.2 and later, protocol 502 */
    PROTO_COUNT,
} frame_proto_t;

#define FRAME_PROTO_BIT(p) (1u << (p))
/* The most annotation chunks one message may carry. Pyro itself sends at most CORR, HMAC and
 * BLBI; user annotations are rare. 64 keeps the duplicate check trivially cheap. */
#define FRAME_MAX_ANNOTATIONS 64

/* Message types (PROTOCOL.md §2.3). */
enum {
    MSG_CONNECT = 1,
    MSG_CONNECTOK = 2,
    MSG_CONNECTFAIL = 3,
    MSG_INVOKE = 4,
    MSG_RESULT = 5,
    MSG_PING = 6,
};

/* Pyro4 flags (PROTOCOL.md §2.4). */
enum {
    FLAG4_EXCEPTION = 0x01,
    FLAG4_COMPRESSED = 0x02,
    FLAG4_ONEWAY = 0x04,
    FLAG4_BATCH = 0x08,
    FLAG4_META_ON_CONNECT = 0x10,
    FLAG4_ITEMSTREAMRESULT = 0x20,
    FLAG4_KEEPSERIALIZED = 0x40,
    /* Pyro5 only: the header's correlation id is set (PROTOCOL.md §3.2). */
    FLAG_CORR_ID = 0x80,
};

/* Pyro5 flags on the wire (PROTOCOL.md §3.2), mapped to the ones above by frame_parse_as. */
enum {
    FLAG5_EXCEPTION = 0x01,
    FLAG5_COMPRESSED = 0x02,
    FLAG5_ONEWAY = 0x04,
    FLAG5_BATCH = 0x08,
    FLAG5_ITEMSTREAMRESULT = 0x10,
    FLAG5_KEEPSERIALIZED = 0x20,
    FLAG5_CORR_ID = 0x40,
};

/* Pyro4 serializer ids (PROTOCOL.md §2.5). */
enum {
    SER4_SERPENT = 1,
    SER4_JSON = 2,
    SER4_MARSHAL = 3,
    SER4_PICKLE = 4,
    SER4_DILL = 5,
    SER4_MSGPACK = 6,
    SER4_CLOUDPICKLE = 7,
};

/* Pyro5 serializer ids on the wire (PROTOCOL.md §3.3): 4 is msgpack here, not pickle. */
enum {
    SER5_SERPENT = 1,
    SER5_MARSHAL = 2,
    SER5_JSON = 3,
    SER5_MSGPACK = 4,
};
/* The serializer id given for a Pyro5 id that Pyro5 does not know (no SER4_* is 0). */
#define SER_UNKNOWN 0

typedef enum {
    FRAME_NEED_MORE,
    FRAME_OK,
    FRAME_ERROR,
} frame_status_t;

typedef enum {
    FRAME_ERR_NONE = 0,
    FRAME_ERR_NOT_PYRO,        /* magic tag is not "PYRO" */
    FRAME_ERR_VERSION,         /* protocol version is not one we speak, or not accepted */
    FRAME_ERR_CHECKSUM,        /* Pyro4 header checksum or Pyro5 magic mismatch */
    FRAME_ERR_NEGATIVE_LENGTH, /* signed data length < 0 */
    FRAME_ERR_TOO_LARGE,       /* data + annotations over the configured limit */
    FRAME_ERR_ANNOTATIONS,     /* malformed, overrunning, duplicate or too many chunks */
} frame_error_t;

typedef struct {
    frame_proto_t proto;
    uint16_t version; /* as on the wire: 46, 47, 48 or 502 */
    uint16_t type;
    uint16_t flags; /* FLAG4_* and FLAG_CORR_ID, whatever the protocol (see above) */
    uint16_t seq;
    uint16_t serializer_id; /* SER4_* whatever the protocol; SER_UNKNOWN for an unknown Pyro5 id */
    uint16_t wire_flags;    /* the flags field as sent */
    uint16_t wire_serializer;         /* the serializer id as sent */
    uint16_t checksum;                /* Pyro4 only */
    uint8_t corr_id[FRAME5_CORR_LEN]; /* Pyro5 only; zeros when not sent */
    uint32_t data_len;                /* validated non-negative */
    uint32_t ann_len;
    size_t header_len; /* 24 or 40 */
    CBS annotations;   /* the raw annotation block */
    CBS payload;       /* the raw (maybe compressed) payload */
    size_t total_len;  /* header + annotations + payload */
} frame_t;

typedef struct {
    char key[5]; /* four ASCII characters and a NUL */
    CBS value;
} frame_annotation_t;

/* frame_parse_as examines |len| bytes at |buf| as protocol |proto|, or, if |proto| is
 * PROTO_NONE, as whichever protocol in |accept| (a mask of FRAME_PROTO_BIT) its version field
 * names. FRAME_OK: |*out| describes one whole message of |out->total_len| bytes at the start of
 * |buf|, its annotation block already validated, |out->proto| its protocol. FRAME_NEED_MORE:
 * nothing wrong yet, more bytes are needed. FRAME_ERROR: |*out_err| says why; the stream
 * cannot be resynchronised. |max_message| bounds data + annotations. A mismatching tag, and a
 * version that is not the connection's or not accepted, are reported as soon as their bytes
 * arrive. */
frame_status_t frame_parse_as(const uint8_t *buf, size_t len, frame_proto_t proto, uint32_t accept,
                              size_t max_message, frame_t *out, frame_error_t *out_err);

/* frame_parse_header_as is frame_parse_as limited to the header: FRAME_OK as soon as the
 * header is complete and valid, with |out->total_len| the full message size; payload and
 * annotation views are not set. Used for the server-to-client stream, which is forwarded as
 * it arrives rather than buffered whole. */
frame_status_t frame_parse_header_as(const uint8_t *buf, size_t len, frame_proto_t proto,
                                     uint32_t accept, size_t max_message, frame_t *out,
                                     frame_error_t *out_err);

/* frame_parse and frame_parse_header: the same for Pyro4 protocol 48 only. */
frame_status_t frame_parse(const uint8_t *buf, size_t len, size_t max_message, frame_t *out,
                           frame_error_t *out_err);
frame_status_t frame_parse_header(const uint8_t *buf, size_t len, size_t max_message, frame_t *out,
                                  frame_error_t *out_err);

/* frame_unsupported_flags returns the bits of |f|'s flags whose meaning in its protocol
 * pyroguard cannot establish, which inspection refuses: for protocols 46 and 47 every bit but
 * EXCEPTION, COMPRESSED and ONEWAY (frame.c says why); none for 48 and Pyro5, whose daemons
 * ignore unknown bits. */
uint16_t frame_unsupported_flags(const frame_t *f);

/* frame_header_len returns the header size of |proto| (24 or 40). */
size_t frame_header_len(frame_proto_t proto);

/* frame_proto_of_version returns the protocol whose version field is |version|, or PROTO_NONE. */
frame_proto_t frame_proto_of_version(uint16_t version);

/* frame_proto_name returns "pyro4", "pyro4.46", "pyro4.47", "pyro5" (log and metric labels). */
const char *frame_proto_name(frame_proto_t proto);

/* frame_annotation_next_as reads the next chunk of a |proto| annotation block (Pyro4: u16
 * lengths, Pyro5: u32) from |*anns| into |*out| and advances |*anns|. It returns 1 on success
 * and 0 at the end or on a malformed chunk (a key that is not printable ASCII, a length running
 * past the block); a malformed chunk leaves |*anns| unconsumed, so CBS_len(anns) == 0 after a 0
 * means a clean end. frame_annotation_next is the same for Pyro4. */
int frame_annotation_next_as(CBS *anns, frame_proto_t proto, frame_annotation_t *out);
int frame_annotation_next(CBS *anns, frame_annotation_t *out);

/* frame_find_annotation sets |*out| to the value of |key| in |f|'s annotations and returns 1,
 * or returns 0 if absent. The block must have been validated by frame_parse. */
int frame_find_annotation(const frame_t *f, const char key[4], CBS *out);

/* frame_checksum computes the Pyro4 header checksum of PROTOCOL.md §2.1. */
uint16_t frame_checksum(uint16_t type, uint16_t version, uint32_t data_len, uint16_t ann_len,
                        uint16_t serializer_id, uint16_t flags, uint16_t seq);

/* frame_build_as appends one |proto| message to |cbb|. |flags| (FLAG4_*, FLAG_CORR_ID) and
 * |serializer_id| (SER4_*) are in pyroguard's numbering and written in the protocol's; a flag
 * the protocol lacks is not written. |corr_id| (16 bytes, Pyro5 only; NULL for none) sets
 * FLAG_CORR_ID. |annotations| is a raw, already encoded chunk block of that protocol. Returns 1
 * on success, 0 if a length does not fit the protocol (Pyro4: annotations 65535 bytes, payload
 * 2^31-1), the serializer has no id in it, or |cbb| fails. frame_build is Pyro4 48 without a
 * correlation id. */
int frame_build_as(CBB *cbb, frame_proto_t proto, uint16_t type, uint16_t flags, uint16_t seq,
                   uint16_t serializer_id, const uint8_t *corr_id, const uint8_t *annotations,
                   size_t ann_len, const uint8_t *payload, size_t payload_len);
int frame_build(CBB *cbb, uint16_t type, uint16_t flags, uint16_t seq, uint16_t serializer_id,
                const uint8_t *annotations, size_t ann_len, const uint8_t *payload,
                size_t payload_len);

/* frame_rebuild appends |f|'s message to |cbb| again with |anns| (a raw chunk block of |f|'s
 * protocol) as its annotation block and |payload| as its data: protocol, version, type, flags and
 * serializer id as on the wire (wire_flags with unknown bits, wire_serializer), seq and the Pyro5
 * correlation id are |f|'s; the lengths are the new ones, and a Pyro4 (46/47/48) header gets the
 * checksum of the new lengths over its own version (PROTOCOL.md §2.1, §13). The reserved field
 * is written as 0, as Pyro writes it. Returns 1 on success, 0 if a length does not fit the
 * protocol (Pyro4: annotations 65535 bytes, payload 2^31-1; Pyro5: u32) or |cbb| fails. */
int frame_rebuild(CBB *cbb, const frame_t *f, const uint8_t *anns, size_t ann_len,
                  const uint8_t *payload, size_t payload_len);

/* frame_error_reason returns the stable machine-readable name of |err| ("bad_checksum"…). */
const char *frame_error_reason(frame_error_t err);

/* frame_type_name returns "CONNECT", "INVOKE"… or "UNKNOWN". */
const char *frame_type_name(uint16_t type);

/* frame_serializer_name returns the Pyro4 name of serializer |id|, or NULL if unknown. */
const char *frame_serializer_name(uint16_t id);

#endif
