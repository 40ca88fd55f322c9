/* Helpers shared by the framer's unit tests (test_frame.c, test_frame_protocols.c): whole files
 * read into memory, and big-endian fields written into hand-built headers. cmocka fails the test
 * on any error.
 *
 * Ownership: read_path returns a blob whose data the caller frees with free(). */
#ifndef PYROGUARD_TESTFRAME_H
#define PYROGUARD_TESTFRAME_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* for_each_vector calls |fn| with the path of every captured message under
 * TEST_DATA_DIR/vectors/|set|/<serializer>/<scenario>/ whose name contains |must_contain|, for the
 * four safe serializers; |fn| gets the serializer's directory name. Returns how many. */
static inline size_t for_each_vector(const char *set, const char *must_contain,
                                     void (*fn)(const char *path, const char *ser, void *arg),
                                     void *arg)
{
    static const char *const kSers[] = {"serpent", "json", "marshal", "msgpack"};
    size_t n = 0;
    for (size_t s = 0; s < sizeof(kSers) / sizeof(kSers[0]); s++) {
        char dir[512];
        snprintf(dir, sizeof(dir), "%s/vectors/%s/%s", TEST_DATA_DIR, set, kSers[s]);
        DIR *d = opendir(dir);
        assert_non_null(d);
        struct dirent *scen;
        while ((scen = readdir(d)) != NULL) {
            if (scen->d_name[0] == '.')
                continue;
            char sub[1024];
            snprintf(sub, sizeof(sub), "%s/%s", dir, scen->d_name);
            DIR *e = opendir(sub);
            if (e == NULL)
                continue;
            struct dirent *v;
            while ((v = readdir(e)) != NULL) {
                if (strstr(v->d_name, ".bin") == NULL || strstr(v->d_name, must_contain) == NULL)
                    continue;
                char path[2048];
                snprintf(path, sizeof(path), "%s/%s", sub, v->d_name);
                fn(path, kSers[s], arg);
                n++;
            }
            closedir(e);
        }
        closedir(d);
    }
    return n;
}

#endif
