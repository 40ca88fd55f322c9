/* value_dump: decode one payload file with one of pyroguard's decoders and print the value
 * tree in the canonical text that tests/tools/pydump.py produces from Python's own decoders,
 * so the two can be compared byte for byte (the differential tests).
 *
 *   value_dump serpent|json|marshal|msgpack FILE
 *   prints "ok <dump>" or "refused <reason>", exit 0 (2 on usage or I/O error).
 *
 * Dump format: None True False int float complex ... ; s:<hex> (str as UTF-8 with surrogates
 * as generalized UTF-8), b:<hex> (bytes); (a,b) tuple; [a,b] list; {a,b} set and f{a,b}
 * frozenset with items sorted; d{k:v,...} dict in first-insertion order, a repeated key keeping
 * its first position and its last value (as a Python dict does); ? anything else. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "value.h"

typedef struct {
    char *p;
    size_t len, cap;
} sbuf_t;

static void put(sbuf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (b->p == NULL) {
            perror("realloc");
            exit(2);
        }
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(sbuf_t *b, const char *s)
{
    put(b, s, strlen(s));
}

static void dump(sbuf_t *b, const value_t *v);

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

static char *dump_alloc(const value_t *v)
{
    sbuf_t t = {0};
    dump(&t, v);
    return t.p;
}

static void dump_set(sbuf_t *b, const value_t *v, const char *open)
{
    size_t n = v->u.seq.n;
    char **items = calloc(n ? n : 1, sizeof(*items));
    for (size_t i = 0; i < n; i++)
        items[i] = dump_alloc(v->u.seq.items[i]);
    qsort(items, n, sizeof(*items), cmp_str);
    puts_(b, open);
    for (size_t i = 0; i < n; i++) {
        if (i)
            puts_(b, ",");
        puts_(b, items[i]);
        free(items[i]);
    }
    puts_(b, "}");
    free(items);
}

static void dump_dict(sbuf_t *b, const value_t *v)
{
    size_t n = v->u.dict.n;
    char **keys = calloc(n ? n : 1, sizeof(*keys));
    for (size_t i = 0; i < n; i++)
        keys[i] = dump_alloc(v->u.dict.keys[i]);
    puts_(b, "d{");
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        size_t j, last = i;
        for (j = 0; j < i; j++)
            if (strcmp(keys[j], keys[i]) == 0)
                break;
        if (j < i)
            continue; /* printed at its first position */
        for (j = i + 1; j < n; j++)
            if (strcmp(keys[j], keys[i]) == 0)
                last = j;
        if (!first)
            puts_(b, ",");
        first = 0;
        puts_(b, keys[i]);
        puts_(b, ":");
        dump(b, v->u.dict.values[last]);
    }
    puts_(b, "}");
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
}

static void dump(sbuf_t *b, const value_t *v)
{
    static const char hex[] = "0123456789abcdef";
    switch (v->type) {
    case VAL_NONE:
        puts_(b, "None");
        return;
    case VAL_BOOL:
        puts_(b, v->u.boolean ? "True" : "False");
        return;
    case VAL_INT:
        puts_(b, "int");
        return;
    case VAL_FLOAT:
        puts_(b, "float");
        return;
    case VAL_COMPLEX:
        puts_(b, "complex");
        return;
    case VAL_ELLIPSIS:
        puts_(b, "...");
        return;
    case VAL_STR:
    case VAL_BYTES:
        puts_(b, v->type == VAL_STR ? "s:" : "b:");
        for (size_t i = 0; i < v->u.str.len; i++) {
            char h[2] = {hex[v->u.str.data[i] >> 4], hex[v->u.str.data[i] & 15]};
            put(b, h, 2);
        }
        return;
    case VAL_TUPLE:
    case VAL_LIST:
        puts_(b, v->type == VAL_TUPLE ? "(" : "[");
        for (size_t i = 0; i < v->u.seq.n; i++) {
            if (i)
                puts_(b, ",");
            dump(b, v->u.seq.items[i]);
        }
        puts_(b, v->type == VAL_TUPLE ? ")" : "]");
        return;
    case VAL_SET:
        dump_set(b, v, "{");
        return;
    case VAL_FROZENSET:
        dump_set(b, v, "f{");
        return;
    case VAL_DICT:
        dump_dict(b, v);
        return;
    case VAL_OTHER:
        puts_(b, "?");
        return;
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: value_dump serpent|json|marshal|msgpack FILE\n");
        return 2;
    }
    FILE *f = fopen(argv[2], "rb");
    if (f == NULL) {
        perror(argv[2]);
        return 2;
    }
    size_t cap = 1 << 16, len = 0;
    uint8_t *data = malloc(cap);
    for (;;) {
        if (len == cap)
            data = realloc(data, cap *= 2);
        size_t n = fread(data + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);

    int (*decode)(const uint8_t *, size_t, value_arena_t *, value_t **, const char **) = NULL;
    if (strcmp(argv[1], "serpent") == 0)
        decode = decode_serpent;
    else if (strcmp(argv[1], "json") == 0)
        decode = decode_json;
    else if (strcmp(argv[1], "marshal") == 0)
        decode = decode_marshal;
    else if (strcmp(argv[1], "msgpack") == 0)
        decode = decode_msgpack;
    if (decode == NULL) {
        fprintf(stderr, "unknown serializer '%s'\n", argv[1]);
        return 2;
    }
    value_arena_t arena;
    value_t *v = NULL;
    const char *reason = NULL;
    value_arena_init(&arena, NULL);
    if (decode(data, len, &arena, &v, &reason)) {
        sbuf_t out = {0};
        dump(&out, v);
        printf("ok %s\n", out.p);
        free(out.p);
    } else {
        printf("refused %s\n", reason ? reason : "(no reason)");
    }
    value_arena_cleanup(&arena);
    free(data);
    return 0;
}
