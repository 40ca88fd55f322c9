#include "buf.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"

void buf_init(buf_t *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void buf_cleanup(buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->alloc = 0;
}

static int buf_make_room(buf_t *b, size_t n)
{
    size_t used = b->len - b->off;
    if (b->alloc - b->len >= n)
        return 1;
    /* Reclaim the consumed prefix first: it is free memory already paid for. */
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, used);
        b->off = 0;
        b->len = used;
        if (b->alloc - b->len >= n)
            return 1;
    }
    size_t want = b->alloc ? b->alloc : 4096;
    while (want - used < n) {
        if (want > SIZE_MAX / 2)
            return 0;
        want *= 2;
    }
    if (want > b->max && b->max >= used + n)
        want = b->max;
    uint8_t *p = pg_realloc(b->data, want);
    if (p == NULL)
        return 0;
    b->data = p;
    b->alloc = want;
    return 1;
}

int buf_append(buf_t *b, const uint8_t *p, size_t n)
{
    size_t used = b->len - b->off;
    if (n == 0)
        return 1;
    if (n > b->max || used > b->max - n)
        return 0;
    if (!buf_make_room(b, n))
        return 0;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 1;
}

uint8_t *buf_reserve(buf_t *b, size_t n, size_t *got)
{
    size_t used = b->len - b->off;
    if (n == 0 || n > b->max || used > b->max - n || !buf_make_room(b, n))
        return NULL;
    size_t spare = b->alloc - b->len;
    size_t cap_left = b->max - used;
    *got = spare < cap_left ? spare : cap_left;
    return b->data + b->len;
}

void buf_commit(buf_t *b, size_t n)
{
    b->len += n;
}

const uint8_t *buf_peek(const buf_t *b)
{
    return b->data ? b->data + b->off : (const uint8_t *)"";
}

size_t buf_len(const buf_t *b)
{
    return b->len - b->off;
}

size_t buf_room(const buf_t *b)
{
    return b->max - buf_len(b);
}

void buf_reset(buf_t *b)
{
    b->off = b->len = 0;
}

void buf_consume(buf_t *b, size_t n)
{
    size_t used = buf_len(b);
    if (n >= used) {
        b->off = b->len = 0;
        /* Give large buffers back once drained so an idle connection stays small. */
        if (b->alloc > 65536) {
            free(b->data);
            b->data = NULL;
            b->alloc = 0;
        }
        return;
    }
    b->off += n;
}
