/* buf: a growable byte buffer born with a hard cap (after curl's dynbuf).
 *
 * A buf_t is a stack or embedded object: zero it or call buf_init, then buf_cleanup releases
 * its memory and leaves it empty and reusable. Bytes are appended at the end and consumed
 * from the front; consumed space is reclaimed lazily. The buffer never holds more than `max`
 * bytes, so every caller's memory use is bounded by construction. */
#ifndef PYROGUARD_BUF_H
#define PYROGUARD_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *data;
    size_t off;   /* consumed prefix */
    size_t len;   /* end of valid bytes (data[off..len) is unconsumed) */
    size_t alloc; /* bytes allocated at data */
    size_t max;   /* the most unconsumed bytes this buffer may hold */
} buf_t;

/* buf_init sets |b| empty with a cap of |max| bytes. Nothing is allocated. */
void buf_init(buf_t *b, size_t max);

/* buf_cleanup frees |b|'s storage; |b| stays initialised, empty, with the same cap. */
void buf_cleanup(buf_t *b);

/* buf_append copies |n| bytes to the end. It returns 1 on success and 0, leaving |b|
 * unchanged, if the cap would be exceeded or memory is exhausted. */
int buf_append(buf_t *b, const uint8_t *p, size_t n);

/* buf_reserve makes room for at least |n| more bytes (within the cap) and returns where they
 * go, with the room actually available (at least |n|, perhaps more, never past the cap) in
 * |*got|; NULL if the cap or memory does not allow |n|. Nothing is counted until buf_commit, so
 * a producer (SSL_read) can write in place instead of through a copy. */
uint8_t *buf_reserve(buf_t *b, size_t n, size_t *got);

/* buf_commit counts |n| bytes written at buf_reserve's pointer (at most what it gave). */
void buf_commit(buf_t *b, size_t n);

/* buf_peek returns the unconsumed bytes (valid until the next append, consume or cleanup). */
const uint8_t *buf_peek(const buf_t *b);

/* buf_len returns the number of unconsumed bytes. */
size_t buf_len(const buf_t *b);

/* buf_room returns how many more bytes may be appended before the cap is reached. */
size_t buf_room(const buf_t *b);

/* buf_reset drops every byte and keeps the storage, for a buffer about to be refilled. */
void buf_reset(buf_t *b);

/* buf_consume drops |n| bytes (at most buf_len) from the front. */
void buf_consume(buf_t *b, size_t n);

#endif
