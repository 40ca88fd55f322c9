#include "alloc.h"

#include <stdlib.h>
#include <string.h>

static _Thread_local unsigned long t_calls;   /* allocations asked for since alloc_fail_nth */
static _Thread_local unsigned long t_fail_at; /* the call number that fails; 0: none */
static _Thread_local int t_failed;

/* should_fail counts one allocation and says whether it is the one chosen to fail. */
static int should_fail(void)
{
    t_calls++;
    if (t_fail_at == 0 || t_calls != t_fail_at)
        return 0;
    t_failed = 1;
    return 1;
}

void *pg_malloc(size_t n)
{
    return should_fail() ? NULL : malloc(n);
}

void *pg_calloc(size_t count, size_t size)
{
    return should_fail() ? NULL : calloc(count, size);
}

void *pg_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : realloc(p, n); /* |p| untouched on failure, as realloc */
}

char *pg_strdup(const char *s)
{
    return should_fail() ? NULL : strdup(s);
}

void alloc_fail_nth(unsigned long n)
{
    t_calls = 0;
    t_fail_at = n;
    t_failed = 0;
}

unsigned long alloc_calls(void)
{
    return t_calls;
}

int alloc_failed(void)
{
    return t_failed;
}
