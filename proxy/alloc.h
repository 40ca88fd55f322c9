/* alloc: every allocation pyroguard makes itself goes through these wrappers, so that a test can
 * make exactly one of them fail and see the code around it cope (tests/unit/test_alloc_torture.c:
 * the parsers, the configuration loader and the policy, with each allocation failing in turn).
 *
 * The wrappers behave as the libc functions they wrap; memory from them is released with free().
 * Allocations made inside BoringSSL, libyaml and libuv do not pass through here (they use their
 * own allocators); the torture covers pyroguard's code and the paths that handle its failures.
 *
 * The failure switch is per thread (a torture in one test thread never touches the workers of a
 * running proxy) and costs one thread-local load per allocation when off. */
#ifndef PYROGUARD_ALLOC_H
#define PYROGUARD_ALLOC_H

#include <stddef.h>

void *pg_malloc(size_t n);
void *pg_calloc(size_t count, size_t size);
void *pg_realloc(void *p, size_t n);
char *pg_strdup(const char *s);

/* For tests. alloc_fail_nth(n) makes the n-th allocation from now on this thread fail (n = 1:
 * the next one), once; 0 turns failures off. alloc_calls returns how many allocations this
 * thread has asked for since the last alloc_fail_nth, and alloc_failed whether the chosen one
 * has failed yet. */
void alloc_fail_nth(unsigned long n);
unsigned long alloc_calls(void);
int alloc_failed(void);

#endif
