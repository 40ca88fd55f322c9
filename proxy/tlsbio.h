/* tlsbio: the BIO between BoringSSL and one client connection's socket.
 *
 * pyroguard feeds BoringSSL the ciphertext libuv read and sends what BoringSSL wrote; this BIO
 * holds both directions in buf_t's (buf.h) instead of a pair of BoringSSL memory BIOs, for two
 * reasons measured in bench/RESULTS.md: the storage of both is released when the connection has
 * nothing in progress (tlsbio_trim), so an idle connection holds no ciphertext buffers at all (a
 * memory BIO keeps the largest size it ever had, a handshake flight or more), and draining costs
 * nothing (resetting a memory BIO clears its whole capacity with memset, once per reply). While
 * a large message streams through, the storage is kept and reused: no allocation per read.
 *
 * Ownership: tlsbio_new returns a BIO with one reference, which SSL_set_bio(ssl, bio, bio)
 * hands to the SSL (one BIO for both directions); SSL_free then frees it and its buffers. The
 * pointers tlsbio_out returns stay valid until the next call that writes or drains. A BIO is
 * used by one thread at a time, like its SSL. */
#ifndef PYROGUARD_TLSBIO_H
#define PYROGUARD_TLSBIO_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/bio.h>

/* tlsbio_new returns a BIO that holds at most |in_max| bytes of received ciphertext and
 * |out_max| bytes of ciphertext to send, or NULL when memory is exhausted. */
BIO *tlsbio_new(size_t in_max, size_t out_max);

/* tlsbio_feed appends |n| bytes read from the socket for BoringSSL to read. It returns 0,
 * keeping nothing, when |in_max| would be exceeded or memory is exhausted. */
int tlsbio_feed(BIO *bio, const uint8_t *p, size_t n);

/* tlsbio_in_pending returns how many received bytes BoringSSL has not read yet. */
size_t tlsbio_in_pending(BIO *bio);

/* tlsbio_out returns the bytes BoringSSL wrote and nobody has sent yet, their count in |*len|. */
const uint8_t *tlsbio_out(BIO *bio, size_t *len);

/* tlsbio_out_clear drops all of those bytes (they have been sent or queued elsewhere); the
 * storage stays for the next write. */
void tlsbio_out_clear(BIO *bio);

/* tlsbio_trim frees the storage of each buffer that is empty: for a connection with nothing in
 * progress. */
void tlsbio_trim(BIO *bio);

/* tlsbio_held returns the bytes of storage the BIO's buffers hold allocated (0 after
 * tlsbio_trim of drained buffers): what an idle connection costs here. */
size_t tlsbio_held(BIO *bio);

#endif
