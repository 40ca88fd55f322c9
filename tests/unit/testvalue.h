/* testvalue.h: building decoded values by hand for the unit tests (the shapes a decoder would
 * produce), in the arena |g_arena| that the including test file defines before including this
 * header and resets in its setup/teardown. */
#ifndef PYROGUARD_TESTVALUE_H
#define PYROGUARD_TESTVALUE_H

#include <stdarg.h>
#include <string.h>

#include "value.h"

static inline value_t *typed(value_type_t type)
{
    return value_new(&g_arena, type);
}

static inline value_t *none(void)
{
    return typed(VAL_NONE);
}

static inline value_t *str(const char *s)
{
    value_t *v = value_new(&g_arena, VAL_STR);
    size_t n = strlen(s);
    uint8_t *p = value_alloc_string(&g_arena, n ? n : 1);
    memcpy(p, s, n);
    v->u.str.data = p;
    v->u.str.len = n;
    return v;
}

static inline value_t *bytes(const char *s)
{
    value_t *v = str(s);
    v->type = VAL_BYTES;
    return v;
}

/* seq(type, n, item1, item2…): a tuple or list of |n| items. */
static inline value_t *seq(value_type_t type, size_t n, ...)
{
    va_list ap;
    value_t *v = value_new(&g_arena, type);
    v->u.seq.items = value_alloc(&g_arena, (n ? n : 1) * sizeof(value_t *));
    v->u.seq.n = n;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        v->u.seq.items[i] = va_arg(ap, value_t *);
    va_end(ap);
    return v;
}

/* dict(n, k1, v1, k2, v2…) */
static inline value_t *dict(size_t n, ...)
{
    va_list ap;
    value_t *v = value_new(&g_arena, VAL_DICT);
    v->u.dict.keys = value_alloc(&g_arena, (n ? n : 1) * sizeof(value_t *));
    v->u.dict.values = value_alloc(&g_arena, (n ? n : 1) * sizeof(value_t *));
    v->u.dict.n = n;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++) {
        v->u.dict.keys[i] = va_arg(ap, value_t *);
        v->u.dict.values[i] = va_arg(ap, value_t *);
    }
    va_end(ap);
    return v;
}

#define TUPLE(...) seq(VAL_TUPLE, __VA_ARGS__)
#define LIST(...)  seq(VAL_LIST, __VA_ARGS__)

#endif
