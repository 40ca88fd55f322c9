/* Unit tests for proxy/tlsbio.c: the BIO between BoringSSL and a client socket — bytes in
 * order, retries when empty, hard caps both ways, storage reused while a message streams and freed
 * by tlsbio_trim. (Every
 * integration test runs real TLS 1.3 handshakes and calls through it.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/bio.h>

#include "tlsbio.h"

static void test_fed_bytes_are_read_in_order_and_an_empty_bio_asks_for_a_retry(void **state)
{
    BIO *bio = tlsbio_new(64, 64);
    assert_non_null(bio);
    char out[8];
    assert_int_equal(BIO_read(bio, out, sizeof(out)), -1);
    assert_true(BIO_should_retry(bio) && BIO_should_read(bio));

    assert_int_equal(tlsbio_feed(bio, (const uint8_t *)"hello", 5), 1);
    assert_int_equal(tlsbio_feed(bio, (const uint8_t *)"world", 5), 1);
    assert_int_equal(tlsbio_in_pending(bio), 10);
    assert_int_equal(BIO_pending(bio), 10);
    assert_int_equal(BIO_read(bio, out, 3), 3);
    assert_memory_equal(out, "hel", 3);
    assert_int_equal(BIO_read(bio, out, sizeof(out)), 7);
    assert_memory_equal(out, "loworld", 7);
    assert_int_equal(BIO_read(bio, out, sizeof(out)), -1);
    assert_true(BIO_should_retry(bio));
    BIO_free(bio);
}

static void test_feeding_past_the_cap_is_refused_and_keeps_nothing(void **state)
{
    BIO *bio = tlsbio_new(8, 8);
    assert_non_null(bio);
    assert_int_equal(tlsbio_feed(bio, (const uint8_t *)"12345", 5), 1);
    assert_int_equal(tlsbio_feed(bio, (const uint8_t *)"6789", 4), 0); /* 9 > 8 */
    assert_int_equal(tlsbio_in_pending(bio), 5);
    char out[16];
    assert_int_equal(BIO_read(bio, out, sizeof(out)), 5);
    assert_memory_equal(out, "12345", 5);
    BIO_free(bio);
}

static void test_written_bytes_wait_for_the_flush_and_a_write_past_the_cap_fails(void **state)
{
    BIO *bio = tlsbio_new(8, 8);
    assert_non_null(bio);
    size_t len = 99;
    tlsbio_out(bio, &len);
    assert_int_equal(len, 0);
    assert_int_equal(BIO_write(bio, "abc", 3), 3);
    assert_int_equal(BIO_write(bio, "defg", 4), 4);
    assert_int_equal(BIO_wpending(bio), 7);
    const uint8_t *p = tlsbio_out(bio, &len);
    assert_int_equal(len, 7);
    assert_memory_equal(p, "abcdefg", 7);
    /* Over the cap: a failure, not a retry, so BoringSSL reports an error and the connection
     * closes instead of waiting for room that flushing would not make. */
    assert_int_equal(BIO_write(bio, "hi", 2), -1);
    assert_false(BIO_should_retry(bio));
    tlsbio_out_clear(bio);
    tlsbio_out(bio, &len);
    assert_int_equal(len, 0);
    assert_int_equal(BIO_write(bio, "hi", 2), 2);
    p = tlsbio_out(bio, &len);
    assert_int_equal(len, 2);
    assert_memory_equal(p, "hi", 2);
    BIO_free(bio);
}

static void test_drained_buffers_are_reused_and_trim_frees_them(void **state)
{
    BIO *bio = tlsbio_new(1 << 20, 1 << 20);
    assert_non_null(bio);
    assert_int_equal(tlsbio_held(bio), 0);
    static uint8_t record[16 * 1024];
    memset(record, 0x17, sizeof(record));
    assert_int_equal(tlsbio_feed(bio, record, sizeof(record)), 1);
    size_t held = tlsbio_held(bio);
    assert_true(held >= sizeof(record));
    static char out[sizeof(record)];
    assert_int_equal(BIO_read(bio, out, sizeof(out)), (int)sizeof(out));
    /* Read whole: the storage stays for the next record of a message in progress. */
    assert_int_equal(tlsbio_held(bio), held);
    assert_int_equal(tlsbio_feed(bio, record, sizeof(record)), 1);
    assert_int_equal(tlsbio_held(bio), held); /* reused, not grown */

    assert_int_equal(BIO_write(bio, record, (int)sizeof(record)), (int)sizeof(record));
    tlsbio_out_clear(bio);
    size_t both = tlsbio_held(bio);
    assert_int_equal(BIO_write(bio, record, (int)sizeof(record)), (int)sizeof(record));
    assert_int_equal(tlsbio_held(bio), both); /* the cleared storage is written again */
    tlsbio_out_clear(bio);

    /* Trim frees only what is empty: the unread input stays. */
    tlsbio_trim(bio);
    assert_int_equal(tlsbio_held(bio), held);
    assert_int_equal(tlsbio_in_pending(bio), sizeof(record));
    assert_int_equal(BIO_read(bio, out, sizeof(out)), (int)sizeof(out));
    tlsbio_trim(bio);
    assert_int_equal(tlsbio_held(bio), 0); /* an idle connection holds nothing here */
    BIO_free(bio);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fed_bytes_are_read_in_order_and_an_empty_bio_asks_for_a_retry),
        cmocka_unit_test(test_feeding_past_the_cap_is_refused_and_keeps_nothing),
        cmocka_unit_test(test_written_bytes_wait_for_the_flush_and_a_write_past_the_cap_fails),
        cmocka_unit_test(test_drained_buffers_are_reused_and_trim_frees_them),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
