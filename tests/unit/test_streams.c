/* Item streams bound to the connection that opened them (PROTOCOL.md §6.2, §6.3): ids recorded
 * from the STRM annotation of real captured ITEMSTREAMRESULT replies, the captured
 * get_next_stream_item / close_stream INVOKEs of the same capture judged through the real
 * inspection path, and every other shape of those two calls refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "alloc.h"
#include "call.h"
#include "config.h"
#include "frame.h"
#include "inspect.h"
#include "streams.h"
#include "value.h"

#include "testframe.h"

static const char kId[] = "6a5c8023-36cc-4848-86bb-e3551e15300f";
static const char kOther[] = "342b1bf5-2e67-4e0c-b994-f488102d758f";

static value_arena_t g_arena;
static config_t g_cfg;

#include "testvalue.h"

static int setup(void **state)
{
    (void)state;
    value_arena_init(&g_arena, NULL);
    config_init(&g_cfg);
    g_cfg.pyro.protocols = FRAME_PROTO_BIT(PROTO_PYRO4) | FRAME_PROTO_BIT(PROTO_PYRO5);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    value_arena_cleanup(&g_arena);
    config_free(&g_cfg);
    return 0;
}

/* ---- annotation blocks ------------------------------------------------------------------ */

typedef struct {
    uint8_t data[4096];
    size_t len;
} block_t;

/* chunk appends one |proto| annotation chunk (key, length, value) to |b|. */
static void chunk(block_t *b, frame_proto_t proto, const char *key, const void *value, size_t n)
{
    size_t lenlen = proto == PROTO_PYRO5 ? 4 : 2;
    assert_true(b->len + 4 + lenlen + n <= sizeof(b->data));
    memcpy(b->data + b->len, key, 4);
    if (proto == PROTO_PYRO5)
        put_u32(b->data + b->len + 4, (uint32_t)n);
    else
        put_u16(b->data + b->len + 4, (uint16_t)n);
    memcpy(b->data + b->len + 4 + lenlen, value, n);
    b->len += 4 + lenlen + n;
}

static int record_str(streams_t *s, frame_proto_t proto, const char *id)
{
    block_t b = {{0}, 0};
    chunk(&b, proto, "STRM", id, strlen(id));
    return streams_record_reply(s, proto, b.data, b.len);
}

/* ---- calls built by hand, as test_call.c does ------------------------------------------- */

static call_t invoke(const char *object, const char *method, value_t *vargs, value_t *kwargs,
                     uint16_t flags)
{
    call_t c;
    call_refusal_t r;
    value_t *top = TUPLE(4, str(object), str(method), vargs, kwargs);
    if (!call_from_invoke(top, CALL_FORM_TUPLE, flags, &g_arena, &c, &r))
        fail_msg("call not decoded: %s", r.detail);
    return c;
}

static call_t daemon_call(const char *method, value_t *vargs, value_t *kwargs)
{
    return invoke("Pyro.Daemon", method, vargs, kwargs, 0);
}

static void assert_passes(const streams_t *s, const call_t *c)
{
    char detail[256] = "";
    if (!streams_check_call(s, c, detail, sizeof(detail)))
        fail_msg("refused: %s", detail);
}

static void assert_refused(const streams_t *s, const call_t *c, const char *want)
{
    char detail[256] = "";
    assert_false(streams_check_call(s, c, detail, sizeof(detail)));
    assert_string_equal(detail, want);
}

static const char kOdd[] = "pyroguard: stream calls must name one stream id";

static void assert_refused_odd(const streams_t *s, const call_t *c)
{
    assert_refused(s, c, kOdd);
}

/* ---- captured replies and requests ------------------------------------------------------ */

static void parse_file(const char *path, blob_t *b, frame_t *f)
{
    frame_error_t err;
    *b = read_path(path);
    if (frame_parse_as(b->data, b->len, PROTO_NONE, g_cfg.pyro.protocols,
                       g_cfg.pyro.max_message_bytes, f, &err) != FRAME_OK)
        fail_msg("%s: not one whole message", path);
}

/* record_capture records the STRM of |dir|/01_s2c_RESULT.bin, the iterator result. */
static void record_capture(streams_t *s, const char *dir)
{
    char path[512];
    blob_t b;
    frame_t f;
    snprintf(path, sizeof(path), "%s/vectors/%s/01_s2c_RESULT.bin", TEST_DATA_DIR, dir);
    parse_file(path, &b, &f);
    assert_int_equal(f.type, MSG_RESULT);
    assert_true(f.flags & FLAG4_ITEMSTREAMRESULT);
    assert_int_equal(
        streams_record_reply(s, f.proto, CBS_data(&f.annotations), CBS_len(&f.annotations)), 1);
    free(b.data);
}

/* judge_capture decodes |dir|/<nn>_c2s_INVOKE.bin through inspect_request and returns
 * streams_check_call's verdict; |method| is the name the capture must carry. */
static int judge_capture(const streams_t *s, const char *dir, int nn, const char *method,
                         char *detail, size_t detail_len)
{
    char path[512];
    blob_t b;
    frame_t f;
    inspect_t in;
    snprintf(path, sizeof(path), "%s/vectors/%s/%02d_c2s_INVOKE.bin", TEST_DATA_DIR, dir, nn);
    parse_file(path, &b, &f);
    inspect_init(&in);
    if (inspect_request(&g_cfg, &f, &in) != INSPECT_ALLOW)
        fail_msg("%s: inspection refused it: %s", path, in.detail);
    assert_true(in.decoded);
    assert_true(value_is_str(in.call.object, "Pyro.Daemon"));
    assert_int_equal(in.call.n_names, 1);
    assert_true(value_is_str(in.call.names[0].name, method));
    int ok = streams_check_call(s, &in.call, detail, detail_len);
    inspect_cleanup(&in);
    free(b.data);
    return ok;
}

static const char *const kCaptures[] = {
    "pyro4/serpent/stream", "pyro4/marshal/stream", "pyro5/serpent/stream",
    "pyro5/json/stream",    "pyro5/marshal/stream", "pyro5/msgpack/stream",
};

static void test_captured_stream_calls_pass_after_their_reply_is_recorded(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(kCaptures) / sizeof(kCaptures[0]); i++) {
        streams_t s = {0};
        char detail[256];
        record_capture(&s, kCaptures[i]);
        assert_int_equal(streams_count(&s), 1);
        assert_true(
            judge_capture(&s, kCaptures[i], 2, "get_next_stream_item", detail, sizeof(detail)));
        assert_true(
            judge_capture(&s, kCaptures[i], 3, "get_next_stream_item", detail, sizeof(detail)));
        assert_true(judge_capture(&s, kCaptures[i], 4, "close_stream", detail, sizeof(detail)));
        streams_free(&s);
    }
}

static void test_captured_stream_calls_are_refused_on_a_connection_that_opened_nothing(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(kCaptures) / sizeof(kCaptures[0]); i++) {
        streams_t s = {0};
        char detail[256];
        assert_false(
            judge_capture(&s, kCaptures[i], 2, "get_next_stream_item", detail, sizeof(detail)));
        assert_non_null(strstr(detail, "was not opened on this connection"));
        assert_false(judge_capture(&s, kCaptures[i], 4, "close_stream", detail, sizeof(detail)));
    }
}

static void test_another_captures_stream_is_refused_with_its_id_named(void **state)
{
    (void)state;
    streams_t s = {0};
    char detail[256];
    record_capture(&s, "pyro4/serpent/stream");
    /* stream_full is another connection of the same daemon, with its own id. */
    assert_false(judge_capture(&s, "pyro4/serpent/stream_full", 2, "get_next_stream_item", detail,
                               sizeof(detail)));
    assert_string_equal(detail, "pyroguard: stream 342b1bf5-2e67-4e0c-b994-f488102d758f was not "
                                "opened on this connection");
    streams_free(&s);
}

static void test_pyro4_json_and_msgpack_stream_calls_decode_to_the_same_shape(void **state)
{
    /* These captures have no s2c side: the id is recorded from a block built with it. */
    (void)state;
    static const struct {
        const char *dir, *id;
    } kCases[] = {
        {"pyro4/json/stream", "93b39c6a-5f75-457d-95fe-0f66de60ef02"},
        {"pyro4/msgpack/stream", "07b955c5-b4db-4640-8c38-412e8bcd2a56"},
    };
    for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
        streams_t s = {0};
        char detail[256];
        assert_false(
            judge_capture(&s, kCases[i].dir, 2, "get_next_stream_item", detail, sizeof(detail)));
        assert_int_equal(record_str(&s, PROTO_PYRO4, kCases[i].id), 1);
        assert_true(
            judge_capture(&s, kCases[i].dir, 2, "get_next_stream_item", detail, sizeof(detail)));
        assert_true(judge_capture(&s, kCases[i].dir, 4, "close_stream", detail, sizeof(detail)));
        streams_free(&s);
    }
}

/* ---- shapes of the two calls ------------------------------------------------------------ */

static void test_plain_call_with_a_recorded_id_passes_as_list_or_tuple(void **state)
{
    (void)state;
    streams_t s = {0};
    assert_int_equal(record_str(&s, PROTO_PYRO4, kId), 1);
    call_t c = daemon_call("get_next_stream_item", LIST(1, str(kId)), dict(0));
    assert_passes(&s, &c);
    c = daemon_call("close_stream", TUPLE(1, str(kId)), dict(0));
    assert_passes(&s, &c);
    streams_free(&s);
}

static void test_kwargs_stream_id_form_passes(void **state)
{
    (void)state;
    streams_t s = {0};
    assert_int_equal(record_str(&s, PROTO_PYRO4, kId), 1);
    call_t c = daemon_call("get_next_stream_item", TUPLE(0), dict(1, str("streamId"), str(kId)));
    assert_passes(&s, &c);
    streams_free(&s);
}

static void test_other_id_is_refused_and_named(void **state)
{
    (void)state;
    streams_t s = {0};
    assert_int_equal(record_str(&s, PROTO_PYRO4, kId), 1);
    call_t c = daemon_call("get_next_stream_item", LIST(1, str(kOther)), dict(0));
    assert_refused(&s, &c,
                   "pyroguard: stream 342b1bf5-2e67-4e0c-b994-f488102d758f was not opened on "
                   "this connection");
    c = daemon_call("close_stream", TUPLE(0), dict(1, str("streamId"), str(kOther)));
    assert_refused(&s, &c,
                   "pyroguard: stream 342b1bf5-2e67-4e0c-b994-f488102d758f was not opened on "
                   "this connection");
    streams_free(&s);
}

static void test_ids_are_compared_byte_for_byte(void **state)
{
    (void)state;
    streams_t s = {0};
    assert_int_equal(record_str(&s, PROTO_PYRO4, kId), 1);
    static const char *const kNear[] = {
        "6a5c8023-36cc-4848-86bb-e3551e15300",   /* a prefix */
        "6a5c8023-36cc-4848-86bb-e3551e15300f ", /* longer */
        "6A5C8023-36CC-4848-86BB-E3551E15300F",  /* case */
        "",
    };
    for (size_t i = 0; i < sizeof(kNear) / sizeof(kNear[0]); i++) {
        call_t c = daemon_call("get_next_stream_item", LIST(1, str(kNear[i])), dict(0));
        char detail[256];
        assert_false(streams_check_call(&s, &c, detail, sizeof(detail)));
    }
    streams_free(&s);
}

static void test_odd_shapes_are_refused_even_with_a_recorded_id(void **state)
{
    (void)state;
    streams_t s = {0};
    assert_int_equal(record_str(&s, PROTO_PYRO4, kId), 1);
    value_t *bytes_id = str(kId);
    bytes_id->type = VAL_BYTES;
    call_t cases[] = {
        /* an int id, a bytes id, None */
        daemon_call("get_next_stream_item", LIST(1, typed(VAL_INT)), dict(0)),
        daemon_call("get_next_stream_item", LIST(1, bytes_id), dict(0)),
        daemon_call("close_stream", LIST(1, typed(VAL_NONE)), dict(0)),
        /* two arguments, none */
        daemon_call("get_next_stream_item", LIST(2, str(kId), str(kId)), dict(0)),
        daemon_call("get_next_stream_item", LIST(0), dict(0)),
        /* the id given twice: positionally and by name */
        daemon_call("get_next_stream_item", LIST(1, str(kId)), dict(1, str("streamId"), str(kId))),
        /* another keyword, an extra keyword, the keyword twice */
        daemon_call("get_next_stream_item", LIST(0), dict(1, str("stream_id"), str(kId))),
        daemon_call("get_next_stream_item", LIST(0),
                    dict(2, str("streamId"), str(kId), str("x"), str(kId))),
        daemon_call("get_next_stream_item", LIST(0),
                    dict(2, str("streamId"), str(kId), str("streamId"), str(kId))),
        /* kwargs None (the daemon's **None fails anyway), vargs as a set or a str */
        daemon_call("close_stream", LIST(1, str(kId)), typed(VAL_NONE)),
        daemon_call("close_stream", seq(VAL_SET, 1, str(kId)), dict(0)),
        daemon_call("close_stream", str(kId), dict(0)),
        /* the id nested in a list */
        daemon_call("close_stream", LIST(1, LIST(1, str(kId))), dict(0)),
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char detail[256] = "";
        if (streams_check_call(&s, &cases[i], detail, sizeof(detail)))
            fail_msg("case %zu passed", i);
        assert_string_equal(detail, kOdd);
    }
    streams_free(&s);
}

static void test_batch_naming_a_stream_method_is_refused_even_with_a_recorded_id(void **state)
{
    (void)state;
    streams_t s = {0};
    assert_int_equal(record_str(&s, PROTO_PYRO4, kId), 1);
    value_t *entry = LIST(3, str("get_next_stream_item"), LIST(1, str(kId)), dict(0));
    call_t c = invoke("Pyro.Daemon", "<batch>", LIST(1, entry), dict(0), FLAG4_BATCH);
    assert_true(c.batch);
    assert_refused_odd(&s, &c);
    /* hidden behind an innocent member */
    value_t *ping = LIST(3, str("ping"), LIST(0), dict(0));
    value_t *close = LIST(3, str("close_stream"), LIST(1, str(kOther)), dict(0));
    c = invoke("Pyro.Daemon", "<batch>", LIST(2, ping, close), dict(0), FLAG4_BATCH);
    assert_refused_odd(&s, &c);
    streams_free(&s);
}

static void test_keepserialized_stream_call_is_refused(void **state)
{
    (void)state;
    streams_t s = {0};
    assert_int_equal(record_str(&s, PROTO_PYRO4, kId), 1);
    call_t c;
    call_refusal_t r;
    value_t *blbi = TUPLE(3, str("blobinfo"), str("Pyro.Daemon"), str("get_next_stream_item"));
    assert_true(call_from_blob(blbi, FLAG4_KEEPSERIALIZED, &g_arena, &c, &r));
    assert_null(c.names[0].args);
    assert_refused_odd(&s, &c);
    streams_free(&s);
}

static void test_other_daemon_methods_and_other_objects_are_untouched(void **state)
{
    (void)state;
    streams_t s = {0}; /* nothing recorded */
    call_t c = daemon_call("ping", LIST(0), dict(0));
    assert_passes(&s, &c);
    c = daemon_call("get_metadata", LIST(1, str("thing")), dict(0));
    assert_passes(&s, &c);
    /* a user object's own method of the same name is not the daemon's */
    c = invoke("thing", "get_next_stream_item", LIST(1, typed(VAL_INT)), dict(0), 0);
    assert_passes(&s, &c);
    c = invoke("Pyro.DaemonX", "close_stream", LIST(0), dict(0), 0);
    assert_passes(&s, &c);
    value_t *entry = LIST(3, str("close_stream"), LIST(0), dict(0));
    c = invoke("thing", "<batch>", LIST(1, entry), dict(0), FLAG4_BATCH);
    assert_passes(&s, &c);
    /* a batch on the daemon without the two names */
    entry = LIST(3, str("ping"), LIST(0), dict(0));
    c = invoke("Pyro.Daemon", "<batch>", LIST(1, entry), dict(0), FLAG4_BATCH);
    assert_passes(&s, &c);
    streams_free(&s);
}

static void test_ids_are_per_connection(void **state)
{
    (void)state;
    streams_t a = {0}, b = {0};
    assert_int_equal(record_str(&a, PROTO_PYRO4, kId), 1);
    assert_int_equal(record_str(&b, PROTO_PYRO4, kOther), 1);
    call_t c = daemon_call("get_next_stream_item", LIST(1, str(kId)), dict(0));
    assert_passes(&a, &c);
    assert_refused(&b, &c,
                   "pyroguard: stream 6a5c8023-36cc-4848-86bb-e3551e15300f was not opened on "
                   "this connection");
    streams_free(&a);
    streams_free(&b);
}

static void test_rendered_id_in_the_message_is_escaped_and_cut(void **state)
{
    (void)state;
    streams_t s = {0};
    char longid[400];
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    call_t c = daemon_call("get_next_stream_item", LIST(1, str("a'b\\c\n")), dict(0));
    assert_refused(&s, &c,
                   "pyroguard: stream a\\x27b\\x5cc\\x0a was not opened on this connection");
    c = daemon_call("get_next_stream_item", LIST(1, str(longid)), dict(0));
    char detail[256];
    assert_false(streams_check_call(&s, &c, detail, sizeof(detail)));
    assert_non_null(strstr(detail, "x..."));
    assert_true(strlen(detail) < 200);
    /* a small buffer is cut, still NUL-terminated */
    char tiny[16];
    assert_false(streams_check_call(&s, &c, tiny, sizeof(tiny)));
    assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
}

/* ---- recording ---------------------------------------------------------------------------- */

static void test_zeroed_and_freed_sets_are_empty(void **state)
{
    (void)state;
    streams_t s = {0};
    assert_int_equal(streams_count(&s), 0);
    assert_false(streams_owns(&s, (const uint8_t *)kId, strlen(kId)));
    streams_free(&s); /* nothing to free */
    assert_int_equal(record_str(&s, PROTO_PYRO5, kId), 1);
    assert_true(streams_owns(&s, (const uint8_t *)kId, strlen(kId)));
    streams_free(&s);
    assert_null(s.table);
    assert_int_equal(streams_count(&s), 0);
    assert_false(streams_owns(&s, (const uint8_t *)kId, strlen(kId)));
    streams_free(&s); /* twice is fine */
}

static void test_strm_is_found_among_other_chunks(void **state)
{
    (void)state;
    for (frame_proto_t proto = PROTO_PYRO4; proto <= PROTO_PYRO5; proto++) {
        streams_t s = {0};
        block_t b = {{0}, 0};
        uint8_t corr[16] = {1, 2, 3};
        chunk(&b, proto, "CORR", corr, sizeof(corr));
        chunk(&b, proto, "STRM", kId, strlen(kId));
        chunk(&b, proto, "XTRA", "", 0);
        assert_int_equal(streams_record_reply(&s, proto, b.data, b.len), 1);
        assert_true(streams_owns(&s, (const uint8_t *)kId, strlen(kId)));
        streams_free(&s);
    }
}

static void test_block_without_strm_records_nothing(void **state)
{
    (void)state;
    streams_t s = {0};
    block_t b = {{0}, 0};
    assert_int_equal(streams_record_reply(&s, PROTO_PYRO4, b.data, 0), 0);
    assert_int_equal(streams_record_reply(&s, PROTO_PYRO4, NULL, 0), 0);
    chunk(&b, PROTO_PYRO4, "CORR", "0123456789abcdef", 16);
    chunk(&b, PROTO_PYRO4, "strm", kId, strlen(kId)); /* keys are case-sensitive */
    assert_int_equal(streams_record_reply(&s, PROTO_PYRO4, b.data, b.len), 0);
    assert_int_equal(streams_count(&s), 0);
    assert_null(s.table); /* nothing allocated either */
}

static void test_malformed_blocks_record_nothing(void **state)
{
    (void)state;
    streams_t s = {0};
    block_t good = {{0}, 0};
    chunk(&good, PROTO_PYRO4, "STRM", kId, strlen(kId));

    /* truncated anywhere: in the key, the length, or the value */
    for (size_t cut = 1; cut < good.len; cut++)
        assert_int_equal(streams_record_reply(&s, PROTO_PYRO4, good.data, cut), -1);
    /* trailing bytes too short for a chunk */
    block_t trail = good;
    memcpy(trail.data + trail.len, "AB", 2);
    assert_int_equal(streams_record_reply(&s, PROTO_PYRO4, trail.data, trail.len + 2), -1);
    /* a chunk claiming more than the block holds, after a good STRM */
    block_t over = good;
    chunk(&over, PROTO_PYRO4, "XTRA", "abc", 3);
    put_u16(over.data + good.len + 4, 200);
    assert_int_equal(streams_record_reply(&s, PROTO_PYRO4, over.data, over.len), -1);
    /* a key that is not printable ASCII */
    block_t badkey = {{0}, 0};
    chunk(&badkey, PROTO_PYRO4, "ST\x01M", kId, strlen(kId));
    chunk(&badkey, PROTO_PYRO4, "STRM", kId, strlen(kId));
    assert_int_equal(streams_record_reply(&s, PROTO_PYRO4, badkey.data, badkey.len), -1);
    /* STRM twice, even with the same value: Pyro keeps the last, pyroguard refuses to guess */
    block_t twice = good;
    chunk(&twice, PROTO_PYRO4, "STRM", kOther, strlen(kOther));
    assert_int_equal(streams_record_reply(&s, PROTO_PYRO4, twice.data, twice.len), -1);
    /* an empty id */
    block_t empty = {{0}, 0};
    chunk(&empty, PROTO_PYRO4, "STRM", "", 0);
    assert_int_equal(streams_record_reply(&s, PROTO_PYRO4, empty.data, empty.len), -1);
    assert_int_equal(streams_count(&s), 0);
    assert_false(streams_owns(&s, (const uint8_t *)kId, strlen(kId)));
    assert_false(streams_owns(&s, (const uint8_t *)kOther, strlen(kOther)));
    streams_free(&s);
}

static void test_block_is_read_with_its_protocols_lengths(void **state)
{
    (void)state;
    streams_t s = {0};
    block_t b5 = {{0}, 0};
    chunk(&b5, PROTO_PYRO5, "STRM", kId, strlen(kId));
    /* a Pyro5 block read as Pyro4 takes 0x0000 as the length and then trips on the rest */
    assert_int_equal(streams_record_reply(&s, PROTO_PYRO4, b5.data, b5.len), -1);
    block_t b4 = {{0}, 0};
    chunk(&b4, PROTO_PYRO4, "STRM", kId, strlen(kId));
    assert_int_equal(streams_record_reply(&s, PROTO_PYRO5, b4.data, b4.len), -1);
    assert_int_equal(streams_count(&s), 0);
    assert_int_equal(streams_record_reply(&s, PROTO_PYRO5, b5.data, b5.len), 1);
    assert_int_equal(streams_count(&s), 1);
    streams_free(&s);
}

static void test_overlong_id_is_not_recorded_and_its_stream_is_unusable(void **state)
{
    (void)state;
    streams_t s = {0};
    char id[STREAMS_MAX_ID_LEN + 2];
    memset(id, 'a', sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0'; /* STREAMS_MAX_ID_LEN + 1 bytes */
    assert_int_equal(record_str(&s, PROTO_PYRO4, id), -1);
    assert_int_equal(streams_count(&s), 0);
    call_t c = daemon_call("get_next_stream_item", LIST(1, str(id)), dict(0));
    char detail[256];
    assert_false(streams_check_call(&s, &c, detail, sizeof(detail)));
    /* exactly the limit is fine */
    id[STREAMS_MAX_ID_LEN] = '\0';
    assert_int_equal(record_str(&s, PROTO_PYRO4, id), 1);
    c = daemon_call("get_next_stream_item", LIST(1, str(id)), dict(0));
    assert_passes(&s, &c);
    streams_free(&s);
}

static void test_recording_an_id_twice_keeps_one(void **state)
{
    (void)state;
    streams_t s = {0};
    assert_int_equal(record_str(&s, PROTO_PYRO4, kId), 1);
    assert_int_equal(record_str(&s, PROTO_PYRO4, kId), 1);
    assert_int_equal(streams_count(&s), 1);
    streams_free(&s);
}

static void id_of(char *out, size_t n, size_t i)
{
    snprintf(out, n, "%08zx-0000-4000-8000-%012zx", i * 2654435761u, i);
}

static void test_oldest_id_is_forgotten_after_the_limit(void **state)
{
    (void)state;
    streams_t s = {0};
    char id[64];
    for (size_t i = 0; i < STREAMS_MAX; i++) {
        id_of(id, sizeof(id), i);
        assert_int_equal(record_str(&s, PROTO_PYRO4, id), 1);
    }
    assert_int_equal(streams_count(&s), STREAMS_MAX);
    for (size_t i = 0; i < STREAMS_MAX; i++) {
        id_of(id, sizeof(id), i);
        assert_true(streams_owns(&s, (const uint8_t *)id, strlen(id)));
    }
    /* one more forgets id 0, and only it */
    id_of(id, sizeof(id), STREAMS_MAX);
    assert_int_equal(record_str(&s, PROTO_PYRO4, id), 1);
    assert_int_equal(streams_count(&s), STREAMS_MAX);
    id_of(id, sizeof(id), 0);
    assert_false(streams_owns(&s, (const uint8_t *)id, strlen(id)));
    call_t c = daemon_call("close_stream", LIST(1, str(id)), dict(0));
    char detail[256];
    assert_false(streams_check_call(&s, &c, detail, sizeof(detail)));
    for (size_t i = 1; i <= STREAMS_MAX; i++) {
        id_of(id, sizeof(id), i);
        assert_true(streams_owns(&s, (const uint8_t *)id, strlen(id)));
    }
    /* three more rounds: always exactly the newest STREAMS_MAX */
    for (size_t i = STREAMS_MAX + 1; i <= 4 * STREAMS_MAX; i++) {
        id_of(id, sizeof(id), i);
        assert_int_equal(record_str(&s, PROTO_PYRO4, id), 1);
    }
    assert_int_equal(streams_count(&s), STREAMS_MAX);
    for (size_t i = 0; i <= 4 * STREAMS_MAX; i++) {
        id_of(id, sizeof(id), i);
        assert_int_equal(streams_owns(&s, (const uint8_t *)id, strlen(id)),
                         i > 3 * STREAMS_MAX ? 1 : 0);
    }
    streams_free(&s);
}

static void test_running_out_of_memory_records_nothing_and_forgets_nothing(void **state)
{
    (void)state;
    streams_t s = {0};
    /* the table itself */
    alloc_fail_nth(1);
    assert_int_equal(record_str(&s, PROTO_PYRO4, kId), -1);
    alloc_fail_nth(0);
    assert_int_equal(streams_count(&s), 0);
    /* the copy of an id, with the set full: the oldest stays */
    char id[64];
    for (size_t i = 0; i < STREAMS_MAX; i++) {
        id_of(id, sizeof(id), i);
        assert_int_equal(record_str(&s, PROTO_PYRO4, id), 1);
    }
    alloc_fail_nth(1);
    assert_int_equal(record_str(&s, PROTO_PYRO4, kId), -1);
    assert_true(alloc_failed());
    alloc_fail_nth(0);
    assert_false(streams_owns(&s, (const uint8_t *)kId, strlen(kId)));
    id_of(id, sizeof(id), 0);
    assert_true(streams_owns(&s, (const uint8_t *)id, strlen(id)));
    assert_int_equal(streams_count(&s), STREAMS_MAX);
    streams_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_captured_stream_calls_pass_after_their_reply_is_recorded),
        cmocka_unit_test(
            test_captured_stream_calls_are_refused_on_a_connection_that_opened_nothing),
        cmocka_unit_test(test_another_captures_stream_is_refused_with_its_id_named),
        cmocka_unit_test(test_pyro4_json_and_msgpack_stream_calls_decode_to_the_same_shape),
        cmocka_unit_test(test_plain_call_with_a_recorded_id_passes_as_list_or_tuple),
        cmocka_unit_test(test_kwargs_stream_id_form_passes),
        cmocka_unit_test(test_other_id_is_refused_and_named),
        cmocka_unit_test(test_ids_are_compared_byte_for_byte),
        cmocka_unit_test(test_odd_shapes_are_refused_even_with_a_recorded_id),
        cmocka_unit_test(test_batch_naming_a_stream_method_is_refused_even_with_a_recorded_id),
        cmocka_unit_test(test_keepserialized_stream_call_is_refused),
        cmocka_unit_test(test_other_daemon_methods_and_other_objects_are_untouched),
        cmocka_unit_test(test_ids_are_per_connection),
        cmocka_unit_test(test_rendered_id_in_the_message_is_escaped_and_cut),
        cmocka_unit_test(test_zeroed_and_freed_sets_are_empty),
        cmocka_unit_test(test_strm_is_found_among_other_chunks),
        cmocka_unit_test(test_block_without_strm_records_nothing),
        cmocka_unit_test(test_malformed_blocks_record_nothing),
        cmocka_unit_test(test_block_is_read_with_its_protocols_lengths),
        cmocka_unit_test(test_overlong_id_is_not_recorded_and_its_stream_is_unusable),
        cmocka_unit_test(test_recording_an_id_twice_keeps_one),
        cmocka_unit_test(test_oldest_id_is_forgotten_after_the_limit),
        cmocka_unit_test(test_running_out_of_memory_records_nothing_and_forgets_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
