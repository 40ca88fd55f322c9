/* Helpers shared by the framer's unit tests (test_frame.c, test_frame_protocols.c): whole files
 * read into memory, and big-endian fields written into hand-built headers. cmocka fails the test
 * on any error.
 *
 * Ownership: read_path returns a blob whose data the caller frees with free(). */
#ifndef PYROGUARD_TESTFRAME_H
#define PYROGUARD_TESTFRAME_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    uint8_t *data;
    size_t len;
} blob_t;

/* read_path loads at most 1 MiB of |path|, or fails the test. */
static inline blob_t read_path(const char *path)
{
    blob_t b = {NULL, 0};
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    b.data = malloc(1 << 20);
    assert_non_null(b.data);
    b.len = fread(b.data, 1, 1 << 20, f);
    fclose(f);
    return b;
}

static inline void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

#endif
