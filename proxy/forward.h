/* forward: identity forwarding (listeners[].forward_identity). A forwarded CONNECT or INVOKE
 * gets one annotation chunk "PGID", after the client's own chunks, whose value is a compact JSON
 * object naming the verified client certificate:
 *
 *   {"v":1,"listener":"app","rule":"billing","cn":"billing-client","uri":["spiffe://..."],
 *    "dns":["a.example"],"serial":"1A2B","sha256":"<64 upper hex>"}
 *
 * keys in that order and only when present. Any "PGID" chunk the client sent is removed first,
 * so a backend can trust the one it reads. Everything else in the message is kept: the other
 * chunks in order and byte for byte, the payload, and in the header the version, type, flags
 * and serializer id as sent (unknown bits included), seq and the Pyro5 correlation id; only the
 * lengths and the Pyro4 checksum change (frame_rebuild).
 *
 * A message carrying an "HMAC" chunk is never rewritten: the HMAC covers the annotation values
 * (PROTOCOL.md §2.7), so an added chunk would break it, and the daemon would refuse the call.
 *
 * The module keeps no state and allocates only inside CBBs. */
#ifndef PYROGUARD_FORWARD_H
#define PYROGUARD_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/bytestring.h>

#include "frame.h"
#include "identity.h"

/* The annotation key of the forwarded identity. */
#define FORWARD_KEY "PGID"
/* The longest JSON value forward_rewrite adds. */
#define FORWARD_MAX_JSON (16 * 1024)

typedef enum {
    FORWARD_OK,
    FORWARD_HMAC,      /* the message carries an "HMAC" chunk: not rewritable */
    FORWARD_TOO_LARGE, /* the JSON is over FORWARD_MAX_JSON, or the block would not fit */
    FORWARD_NOMEM,     /* |out| or a scratch buffer could not grow */
} forward_status_t;

/* forward_identity_json appends to |cbb| the JSON object above for |id|, with |listener| and
 * |rule| (each omitted when NULL): "cn" is the first CN, "uri" and "dns" every URI and DNS SAN in
 * the certificate's order, "serial" and "sha256" as identity.h writes them; a field the
 * certificate lacks is omitted. Strings are escaped per RFC 8259 (", \ and control characters as
 * \u00XX); other UTF-8 is written as it is. Returns 1 on success; 0 if |cbb| fails or a string is
 * not well-formed UTF-8 (a SAN is an IA5String kept byte for byte by identity.h: a value Python
 * could not decode is refused rather than written in a form that names someone else), in which
 * case what was appended to |cbb| must be discarded. */
int forward_identity_json(CBB *cbb, const identity_t *id, const char *listener, const char *rule);

/* forward_rewrite appends to |out| the message |f| (one whole message of any protocol, as parsed
 * by frame_parse_as: its annotation block validated) with every "PGID" chunk removed and one
 * "PGID" chunk of |json_len| bytes at |json| added after the others. Returns FORWARD_OK;
 * FORWARD_HMAC if some chunk is "HMAC", and FORWARD_TOO_LARGE if |json_len| is over
 * FORWARD_MAX_JSON, or the new annotation block would not fit the protocol (Pyro4: 65535 bytes)
 * or hold more than FRAME_MAX_ANNOTATIONS chunks (the client's 64 chunks plus ours),
 * both with nothing appended; FORWARD_NOMEM if |out| or the scratch buffer fails (also for an
 * annotation block frame_parse_as would not have accepted), after which |out| is only fit for
 * CBB_cleanup. |f|'s bytes are only read; they may not overlap |out|'s buffer. */
forward_status_t forward_rewrite(CBB *out, const frame_t *f, const uint8_t *json, size_t json_len);

#endif
