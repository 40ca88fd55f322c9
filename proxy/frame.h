/* frame: the Pyro4 wire framing (PROTOCOL.md §2), parsed and built with BoringSSL's CBS/CBB.
 *
 * frame_parse is stateless: given the bytes received so far it says "need more", "error (with
 * a reason)" or "a whole message of n bytes". The declared size is checked against the limit
 * as soon as the header is complete, before any payload is awaited. A parsed frame_t points
 * into the caller's buffer and owns nothing. */
#ifndef PYROGUARD_FRAME_H
#define PYROGUARD_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/bytestring.h>
#include <openssl/is_boringssl.h>
#ifndef OPENSSL_IS_BORINGSSL
#error "pyroguard must be built against BoringSSL's headers (android-libboringssl-dev)"
#endif

#define FRAME4_HEADER_LEN   24
#define FRAME4_VERSION      48
#define FRAME4_CHECKSUM_KEY 0x34E9
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

typedef enum {
    FRAME_NEED_MORE,
    FRAME_OK,
    FRAME_ERROR,
} frame_status_t;

typedef enum {
    FRAME_ERR_NONE = 0,
    FRAME_ERR_NOT_PYRO,        /* magic tag is not "PYRO" */
    FRAME_ERR_VERSION,         /* protocol version is not one we speak */
    FRAME_ERR_CHECKSUM,        /* header checksum mismatch */
    FRAME_ERR_NEGATIVE_LENGTH, /* signed data length < 0 */
    FRAME_ERR_TOO_LARGE,       /* data + annotations over the configured limit */
    FRAME_ERR_ANNOTATIONS,     /* malformed, overrunning, duplicate or too many chunks */
} frame_error_t;

typedef struct {
    uint16_t version;
    uint16_t type;
    uint16_t flags;
    uint16_t seq;
    uint16_t serializer_id;
    uint16_t checksum;
    uint32_t data_len; /* validated non-negative */
    uint16_t ann_len;
    CBS annotations;  /* the raw annotation block */
    CBS payload;      /* the raw (maybe compressed) payload */
    size_t total_len; /* header + annotations + payload */
} frame_t;

typedef struct {
    char key[5]; /* four ASCII characters and a NUL */
    CBS value;
} frame_annotation_t;

/* frame_parse examines |len| bytes at |buf|. FRAME_OK: |*out| describes one whole message of
 * |out->total_len| bytes at the start of |buf|, its annotation block already validated.
 * FRAME_NEED_MORE: nothing wrong yet, more bytes are needed. FRAME_ERROR: |*out_err| says
 * why; the stream cannot be resynchronised. |max_message| bounds data + annotations. A
 * mismatching magic is reported as soon as the first differing byte arrives. */
frame_status_t frame_parse(const uint8_t *buf, size_t len, size_t max_message, frame_t *out,
                           frame_error_t *out_err);

/* frame_parse_header is frame_parse limited to the 24-byte header: FRAME_OK as soon as the
 * header is complete and valid, with |out->total_len| the full message size; payload and
 * annotation views are not set. Used for the server-to-client stream, which is forwarded as
 * it arrives rather than buffered whole. */
frame_status_t frame_parse_header(const uint8_t *buf, size_t len, size_t max_message, frame_t *out,
                                  frame_error_t *out_err);

/* frame_annotation_next reads the next chunk from |*anns| into |*out| and advances |*anns|.
 * It returns 1 on success and 0 at the end or on a malformed chunk (a key that is not
 * printable ASCII, a length running past the block); a malformed chunk leaves |*anns|
 * unconsumed, so CBS_len(anns) == 0 after a 0 means a clean end. */
int frame_annotation_next(CBS *anns, frame_annotation_t *out);

/* frame_find_annotation sets |*out| to the value of |key| in |f|'s annotations and returns 1,
 * or returns 0 if absent. The block must have been validated by frame_parse. */
int frame_find_annotation(const frame_t *f, const char key[4], CBS *out);

/* frame_checksum computes the header checksum of PROTOCOL.md §2.1. */
uint16_t frame_checksum(uint16_t type, uint16_t version, uint32_t data_len, uint16_t ann_len,
                        uint16_t serializer_id, uint16_t flags, uint16_t seq);

/* frame_build appends one Pyro4 message to |cbb|. It returns 1 on success, 0 if the
 * annotations exceed 65535 bytes, the payload 2^31-1, or |cbb| fails. |annotations| is a raw,
 * already encoded chunk block. */
int frame_build(CBB *cbb, uint16_t type, uint16_t flags, uint16_t seq, uint16_t serializer_id,
                const uint8_t *annotations, size_t ann_len, const uint8_t *payload,
                size_t payload_len);

/* frame_error_reason returns the stable machine-readable name of |err| ("bad_checksum"…). */
const char *frame_error_reason(frame_error_t err);

/* frame_type_name returns "CONNECT", "INVOKE"… or "UNKNOWN". */
const char *frame_type_name(uint16_t type);

/* frame_serializer_name returns the Pyro4 name of serializer |id|, or NULL if unknown. */
const char *frame_serializer_name(uint16_t id);

#endif
