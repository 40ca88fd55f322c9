/* inspect_bench: how long pyroguard's inspection (framing, decoding, name rules) takes per
 * message, measured in-process on frames honest Pyro4 clients send (bench/gen_inspect_payloads.py).
 *
 *   inspect_bench FRAME...   prints one Markdown table row per frame:
 *   | frame | payload bytes | ns per message | MB/s |
 *
 * Each frame is judged repeatedly for about half a second after a warm-up; the median of
 * five such runs is reported. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "frame.h"
#include "inspect.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* run judges |f| |n| times and returns seconds per message. */
static double run(const config_t *cfg, const frame_t *f, long n)
{
    inspect_t in;
    inspect_init(&in);
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        if (inspect_request(cfg, f, &in) != INSPECT_ALLOW) {
            fprintf(stderr, "refused: %s\n", in.detail);
            exit(1);
        }
    }
    double dt = now_s() - t0;
    inspect_cleanup(&in);
    return dt / (double)n;
}

int main(int argc, char **argv)
{
    config_t cfg;
    config_init(&cfg);
    cfg.pyro.max_message_bytes = 0x7fffffff;
    printf("| frame | payload bytes | ns per message | MB/s |\n|---|---:|---:|---:|\n");
    for (int a = 1; a < argc; a++) {
        FILE *fp = fopen(argv[a], "rb");
        if (fp == NULL) {
            perror(argv[a]);
            return 1;
        }
        fseek(fp, 0, SEEK_END);
        long size = ftell(fp);
        fseek(fp, 0, SEEK_SET);
        uint8_t *data = malloc((size_t)size);
        if (data == NULL || fread(data, 1, (size_t)size, fp) != (size_t)size) {
            fprintf(stderr, "%s: read failed\n", argv[a]);
            return 1;
        }
        fclose(fp);
        frame_t f;
        frame_error_t err;
        if (frame_parse(data, (size_t)size, cfg.pyro.max_message_bytes, &f, &err) != FRAME_OK) {
            fprintf(stderr, "%s: not a frame (%s)\n", argv[a], frame_error_reason(err));
            return 1;
        }
        /* Calibrate to ~0.5 s per run. */
        long n = 1;
        while (run(&cfg, &f, n) * (double)n < 0.05)
            n *= 4;
        double per = run(&cfg, &f, n);
        n = (long)(0.5 / per) + 1;
        double runs[5];
        for (int r = 0; r < 5; r++)
            runs[r] = run(&cfg, &f, n);
        qsort(runs, 5, sizeof(runs[0]), cmp_double);
        double s = runs[2];
        const char *base = strrchr(argv[a], '/');
        printf("| %s | %zu | %.0f | %.0f |\n", base ? base + 1 : argv[a], CBS_len(&f.payload),
               s * 1e9, (double)CBS_len(&f.payload) / s / 1e6);
        free(data);
    }
    config_free(&cfg);
    return 0;
}
