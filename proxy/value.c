#include "value.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"

/* The arena is a list of chunks; each allocation bumps within the newest chunk. */
struct value_chunk {
    value_chunk_t *next;
    size_t used;
    size_t size;
    _Alignas(8) uint8_t data[];
};

#define VALUE_CHUNK_MIN 4096

void value_limits_default(value_limits_t *out)
{
    out->max_depth = 32;
    out->max_values = 100000;
    out->max_string_bytes = 16u << 20;
}

void value_arena_init(value_arena_t *a, const value_limits_t *limits)
{
    memset(a, 0, sizeof(*a));
    if (limits != NULL)
        a->limits = *limits;
    else
        value_limits_default(&a->limits);
}

void value_arena_cleanup(value_arena_t *a)
{
    value_chunk_t *c = a->chunks;
    while (c != NULL) {
        value_chunk_t *next = c->next;
        free(c);
        c = next;
    }
    a->chunks = NULL;
    a->values = 0;
    a->string_bytes = 0;
}

#define VALUE_CHUNK_KEEP (64 * 1024)

void value_arena_reset(value_arena_t *a)
{
    value_chunk_t *keep = NULL, *c = a->chunks;
    while (c != NULL) {
        value_chunk_t *next = c->next;
        if (keep == NULL && c->size <= VALUE_CHUNK_KEEP) {
            keep = c;
        } else {
            free(c);
        }
        c = next;
    }
    if (keep != NULL) {
        keep->next = NULL;
        keep->used = 0;
    }
    a->chunks = keep;
    a->values = 0;
    a->string_bytes = 0;
}

void *value_alloc(value_arena_t *a, size_t n)
{
    if (n > SIZE_MAX - 7)
        return NULL;
    n = (n + 7) & ~(size_t)7;
    value_chunk_t *c = a->chunks;
    if (c == NULL || c->size - c->used < n) {
        size_t size = n > VALUE_CHUNK_MIN ? n : VALUE_CHUNK_MIN;
        if (c != NULL && c->size * 2 > size && c->size <= (1u << 20))
            size = c->size * 2;
        if (size > SIZE_MAX - sizeof(*c))
            return NULL;
        value_chunk_t *nc = pg_malloc(sizeof(*nc) + size);
        if (nc == NULL)
            return NULL;
        nc->next = c;
        nc->used = 0;
        nc->size = size;
        a->chunks = c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

value_t *value_new(value_arena_t *a, value_type_t type)
{
    if (a->values >= a->limits.max_values)
        return NULL;
    value_t *v = value_alloc(a, sizeof(*v));
    if (v == NULL)
        return NULL;
    memset(v, 0, sizeof(*v));
    v->type = type;
    a->values++;
    return v;
}

uint8_t *value_alloc_string(value_arena_t *a, size_t n)
{
    if (n > a->limits.max_string_bytes - a->string_bytes)
        return NULL;
    uint8_t *p = value_alloc(a, n ? n : 1);
    if (p != NULL)
        a->string_bytes += n;
    return p;
}

int value_is_str(const value_t *v, const char *s)
{
    size_t n = strlen(s);
    return v != NULL && v->type == VAL_STR && v->u.str.len == n && memcmp(v->u.str.data, s, n) == 0;
}

int value_dict_get(const value_t *d, const char *key, const value_t **out)
{
    int found = 0;
    if (d == NULL || d->type != VAL_DICT)
        return 0;
    for (size_t i = 0; i < d->u.dict.n; i++) {
        if (value_is_str(d->u.dict.keys[i], key)) {
            if (found)
                return -1;
            found = 1;
            *out = d->u.dict.values[i];
        }
    }
    return found;
}

const char *value_type_name(value_type_t type)
{
    switch (type) {
    case VAL_NONE:
        return "None";
    case VAL_BOOL:
        return "bool";
    case VAL_INT:
        return "int";
    case VAL_FLOAT:
        return "float";
    case VAL_COMPLEX:
        return "complex";
    case VAL_ELLIPSIS:
        return "ellipsis";
    case VAL_STR:
        return "str";
    case VAL_BYTES:
        return "bytes";
    case VAL_TUPLE:
        return "tuple";
    case VAL_LIST:
        return "list";
    case VAL_SET:
        return "set";
    case VAL_FROZENSET:
        return "frozenset";
    case VAL_DICT:
        return "dict";
    case VAL_OTHER:
        return "object";
    }
    return "object";
}
