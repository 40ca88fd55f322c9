/* reply: the messages pyroguard itself sends to a Pyro client, in Pyro's own terms
 * (DESIGN.md property 3, PROTOCOL.md §4.1, §10), framed for the connection's protocol: Pyro4
 * protocol 48, 47 or 46 (the same messages with their version in the header, §13;
 * SecurityError is in Pyro4.errors in those releases too), or Pyro5 (§3: the 40-byte header,
 * Pyro5's serializer ids, Pyro5.errors.SecurityError, the request's correlation id echoed).
 *
 * All builders append one complete message to a caller-owned CBB and return 1 on
 * success, 0 on failure (the CBB is then in an undefined state; the caller aborts it).
 * Messages are pyroguard's own text: any byte outside printable ASCII is written as '?', so
 * no serializer needs escaping rules beyond quotes and backslashes. */
#ifndef PYROGUARD_REPLY_H
#define PYROGUARD_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/bytestring.h>

#include "frame.h"

/* reply_connectfail builds a CONNECTFAIL with sequence |seq| whose payload is |msg| as a
 * marshal string. Marshal is what the Pyro4 daemon itself uses when the request's serializer
 * was not accepted, and every Pyro4 client can decode it (PROTOCOL.md §4.1); a Pyro5 client
 * decodes it by the reply's serializer id (marshal is 2 there), and the Pyro5 daemon answers a
 * broken handshake the same way. The client raises CommunicationError("connection to
 * HOST:PORT rejected: <msg>"). |corr_id| (Pyro5 only: 16 bytes, or NULL) is echoed. */
int reply_connectfail(CBB *out, frame_proto_t proto, uint16_t seq, const uint8_t *corr_id,
                      const char *msg);

/* reply_security_error builds a RESULT with the EXCEPTION flag and sequence |seq| carrying
 * <Pyro4|Pyro5>.errors.SecurityError(msg) encoded with serializer |serializer_id| (SER4_*
 * numbering), so that the real client, which insists on its own serializer id in the reply,
 * raises SecurityError(msg). For the Pyro4 pickle family the payload is a fixed protocol-2
 * pickle of `Pyro4.errors.SecurityError(msg)` written here, never anything the client sent.
 * Returns 0 for an unknown serializer id, or one the protocol does not have. */
int reply_security_error(CBB *out, frame_proto_t proto, uint16_t seq, uint16_t serializer_id,
                         const uint8_t *corr_id, const char *msg);

/* reply_encode_security_error appends just the payload (no frame header). Exposed for tests. */
int reply_encode_security_error(CBB *out, frame_proto_t proto, uint16_t serializer_id,
                                const char *msg);

#endif
