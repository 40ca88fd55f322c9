/* Unit tests for proxy/buf.c: the capped byte buffer, and writing in place (reserve/commit). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"

static void test_append_consume_and_the_cap(void **state)
{
    buf_t b;
    buf_init(&b, 10);
    assert_int_equal(buf_append(&b, (const uint8_t *)"hello", 5), 1);
    assert_int_equal(buf_append(&b, (const uint8_t *)"world!", 6), 0); /* 11 > 10 */
    assert_int_equal(buf_len(&b), 5);
    assert_int_equal(buf_room(&b), 5);
    buf_consume(&b, 2);
    assert_memory_equal(buf_peek(&b), "llo", 3);
    assert_int_equal(buf_append(&b, (const uint8_t *)"world!!", 7), 1); /* 3 + 7 = 10 */
    assert_memory_equal(buf_peek(&b), "lloworld!!", 10);
    buf_cleanup(&b);
}

static void test_reserve_then_commit_writes_in_place(void **state)
{
    buf_t b;
    size_t got = 0;
    buf_init(&b, 1 << 20);
    uint8_t *p = buf_reserve(&b, 100, &got);
    assert_non_null(p);
    assert_true(got >= 100);
    memcpy(p, "abc", 3);
    assert_int_equal(buf_len(&b), 0); /* nothing counts before commit */
    buf_commit(&b, 3);
    assert_int_equal(buf_len(&b), 3);
    assert_memory_equal(buf_peek(&b), "abc", 3);
    /* A second reservation goes after the committed bytes. */
    p = buf_reserve(&b, 2, &got);
    memcpy(p, "de", 2);
    buf_commit(&b, 2);
    assert_memory_equal(buf_peek(&b), "abcde", 5);
    buf_cleanup(&b);
}

static void test_reserve_never_offers_room_past_the_cap(void **state)
{
    buf_t b;
    size_t got = 0;
    buf_init(&b, 6000);
    assert_non_null(buf_reserve(&b, 4096, &got));
    assert_true(got >= 4096 && got <= 6000);
    buf_commit(&b, 4096);
    assert_null(buf_reserve(&b, 1905, &got)); /* 4096 + 1905 > 6000 */
    assert_non_null(buf_reserve(&b, 1904, &got));
    assert_int_equal(got, 1904); /* the buffer grew past 6000, the offer did not */
    buf_cleanup(&b);
}

static void test_reserve_reclaims_the_consumed_prefix(void **state)
{
    buf_t b;
    size_t got = 0;
    buf_init(&b, 4096);
    uint8_t *p = buf_reserve(&b, 4096, &got);
    memset(p, 'x', 4096);
    buf_commit(&b, 4096);
    buf_consume(&b, 4000);
    p = buf_reserve(&b, 4000, &got); /* only possible by moving the 96 bytes down */
    assert_non_null(p);
    assert_int_equal(buf_len(&b), 96);
    assert_int_equal(got, 4000);
    buf_cleanup(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_consume_and_the_cap),
        cmocka_unit_test(test_reserve_then_commit_writes_in_place),
        cmocka_unit_test(test_reserve_never_offers_room_past_the_cap),
        cmocka_unit_test(test_reserve_reclaims_the_consumed_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
