/* Unit tests for proxy/admin.c: the admin endpoint as an HTTP client sees it, and its request
 * parser on its own.
 *
 * Each endpoint test starts the admin listener on 127.0.0.1 (a port the system picks) on a
 * libuv loop run by a second thread, exactly as the control thread would run it, and talks
 * to it from the test thread with plain blocking sockets; the loop is stopped through a
 * uv_async_t, and uv_loop_close must then succeed (every handle closed, ASan sees the rest). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bytestring.h>
#include <openssl/mem.h>
#include <uv.h>

#include "admin.h"
#include "log.h"
#include "metrics.h"

/* ---- the admin loop in a thread --------------------------------------------------------- */

typedef struct {
    uv_loop_t loop;
    uv_async_t stop;
    pthread_t thread;
    admin_t *admin;
    int running;
    int port;
    /* What the callbacks answer; set before admin_start. */
    int ready;
    const char *why;
    int render_fails;
    metrics_shard_t *shard;
    metrics_process_t proc;
} fixture_t;

static int ready_cb(void *arg, char *why, size_t why_len)
{
    fixture_t *f = arg;
    if (f->ready)
        return 1;
    snprintf(why, why_len, "%s", f->why);
    return 0;
}

static int render_cb(void *arg, CBB *out)
{
    fixture_t *f = arg;
    if (f->render_fails)
        return 0;
    return metrics_render(&f->shard, 1, &f->proc, out);
}

static void on_stop(uv_async_t *a)
{
    fixture_t *f = a->data;
    admin_close(f->admin);
    uv_close((uv_handle_t *)&f->stop, NULL);
}

static void *run_loop(void *arg)
{
    fixture_t *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return NULL;
}

static config_addr_t loopback_addr(int port)
{
    config_addr_t addr;
    memset(&addr, 0, sizeof(addr));
    addr.text = "127.0.0.1:0";
    assert_int_equal(uv_ip4_addr("127.0.0.1", port, (struct sockaddr_in *)&addr.addr), 0);
    return addr;
}

static void start_admin(fixture_t *f, uint64_t timeout_ms)
{
    struct sockaddr_storage ss;
    config_addr_t addr = loopback_addr(0);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_async_init(&f->loop, &f->stop, on_stop), 0);
    f->stop.data = f;
    f->admin = admin_start_ex(&f->loop, &addr, ready_cb, render_cb, f, timeout_ms);
    assert_non_null(f->admin);
    assert_true(admin_local_addr(f->admin, &ss));
    f->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    assert_int_not_equal(f->port, 0);
    assert_int_equal(pthread_create(&f->thread, NULL, run_loop, f), 0);
    f->running = 1;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    f->ready = 1;
    f->why = "";
    f->shard = metrics_shard_new();
    f->proc.version = "0.1.0";
    *state = f;
    return f->shard == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    int ok = 1;
    if (f->running) {
        uv_async_send(&f->stop);
        pthread_join(f->thread, NULL);
        /* UV_EBUSY here would mean a handle the admin never closed. */
        ok = uv_loop_close(&f->loop) == 0;
    }
    metrics_shard_free(f->shard);
    free(f);
    return ok ? 0 : -1;
}

/* ---- a blocking HTTP client ------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int connect_admin(const fixture_t *f)
{
    struct sockaddr_in sin;
    struct timeval tv = {10, 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(uv_ip4_addr("127.0.0.1", f->port, &sin), 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    return fd;
}

static void send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        assert_true(w > 0);
        p += w;
        len -= (size_t)w;
    }
}

typedef struct {
    char raw[1 << 17];
    size_t len;
    int reset; /* the read ended in ECONNRESET rather than EOF */
    int status;
    const char *body;
    size_t body_len;
} response_t;

/* read_response reads until the server closes, then splits status, headers and body. */
static void read_response(int fd, response_t *r)
{
    r->len = 0;
    r->reset = 0;
    r->status = 0;
    r->body = NULL;
    r->body_len = 0;
    for (;;) {
        assert_true(r->len < sizeof(r->raw) - 1);
        ssize_t n = recv(fd, r->raw + r->len, sizeof(r->raw) - 1 - r->len, 0);
        if (n == 0)
            break;
        if (n < 0 && errno == ECONNRESET) {
            r->reset = 1;
            break;
        }
        if (n < 0)
            fail_msg("recv: %s", strerror(errno));
        r->len += (size_t)n;
    }
    r->raw[r->len] = '\0';
    if (r->len == 0)
        return;
    assert_true(r->len > 12 && memcmp(r->raw, "HTTP/1.1 ", 9) == 0);
    r->status = (r->raw[9] - '0') * 100 + (r->raw[10] - '0') * 10 + (r->raw[11] - '0');
    const char *end = strstr(r->raw, "\r\n\r\n");
    assert_non_null(end);
    r->body = end + 4;
    r->body_len = r->len - (size_t)(r->body - r->raw);
}

/* header returns the value of header |name| (exact case, as admin.c writes it) or NULL. */
static const char *header(const response_t *r, const char *name, char *out, size_t out_len)
{
    char key[64];
    snprintf(key, sizeof(key), "\r\n%s: ", name);
    const char *at = strstr(r->raw, key);
    if (at == NULL || at > r->body)
        return NULL;
    at += strlen(key);
    const char *eol = strstr(at, "\r\n");
    snprintf(out, out_len, "%.*s", (int)(eol - at), at);
    return out;
}

static void assert_header(const response_t *r, const char *name, const char *want)
{
    char value[128];
    if (header(r, name, value, sizeof(value)) == NULL)
        fail_msg("no %s header in:\n%s", name, r->raw);
    if (strcmp(value, want) != 0)
        fail_msg("%s is '%s', expected '%s'", name, value, want);
}

/* http sends |request| on a new connection and reads the whole answer. */
static void http(const fixture_t *f, const char *request, response_t *r)
{
    int fd = connect_admin(f);
    send_all(fd, request, strlen(request));
    read_response(fd, r);
    close(fd);
}

static void assert_answer(const response_t *r, int status, const char *body)
{
    char len[32];
    if (r->status != status)
        fail_msg("status %d, expected %d:\n%s", r->status, status, r->raw);
    assert_false(r->reset);
    assert_header(r, "Connection", "close");
    snprintf(len, sizeof(len), "%zu", strlen(body));
    assert_header(r, "Content-Length", len);
    assert_int_equal(r->body_len, strlen(body));
    assert_memory_equal(r->body, body, r->body_len);
}

static response_t g_resp;

/* ---- endpoints -------------------------------------------------------------------------- */

static void test_healthz_answers_200_ok(void **state)
{
    fixture_t *f = *state;
    start_admin(f, 5000);
    http(f, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", &g_resp);
    assert_answer(&g_resp, 200, "ok\n");
    assert_header(&g_resp, "Content-Type", "text/plain; charset=utf-8");
    assert_int_equal(memcmp(g_resp.raw, "HTTP/1.1 200 OK\r\n", 17), 0);
}

static void test_readyz_answers_200_when_ready(void **state)
{
    fixture_t *f = *state;
    start_admin(f, 5000);
    http(f, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:9901\r\n\r\n", &g_resp);
    assert_answer(&g_resp, 200, "ready\n");
}

static void test_readyz_answers_503_with_the_reason_when_not_ready(void **state)
{
    fixture_t *f = *state;
    f->ready = 0;
    f->why = "draining";
    start_admin(f, 5000);
    http(f, "GET /readyz HTTP/1.1\r\nHost: [::1]:9901\r\n\r\n", &g_resp);
    assert_answer(&g_resp, 503, "not ready: draining\n");
    assert_int_equal(memcmp(g_resp.raw, "HTTP/1.1 503 Service Unavailable\r\n", 34), 0);
}

static void test_readyz_reason_is_kept_to_printable_ascii(void **state)
{
    fixture_t *f = *state;
    f->ready = 0;
    f->why = "backend\r\nX-Injected: 1";
    start_admin(f, 5000);
    http(f, "GET /readyz HTTP/1.1\r\n\r\n", &g_resp);
    assert_answer(&g_resp, 503, "not ready: backend??X-Injected: 1\n");
}

static void test_metrics_answers_the_rendered_page_as_prometheus_text(void **state)
{
    fixture_t *f = *state;
    metrics_conn_accepted(f->shard);
    metrics_request(f->shard, 1, "allowed", "billing");
    metrics_bytes(f->shard, 10, 20);
    f->proc.config_generation = 9;
    start_admin(f, 5000);
    http(f, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n", &g_resp);

    CBB cbb;
    uint8_t *want;
    size_t want_len;
    assert_true(CBB_init(&cbb, 4096));
    assert_true(metrics_render(&f->shard, 1, &f->proc, &cbb));
    assert_true(CBB_add_u8(&cbb, '\0'));
    assert_true(CBB_finish(&cbb, &want, &want_len));
    assert_answer(&g_resp, 200, (const char *)want);
    OPENSSL_free(want);
    assert_header(&g_resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    assert_non_null(strstr(g_resp.body, "\npyroguard_config_generation 9\n"));
}

static void test_metrics_that_cannot_be_rendered_are_500(void **state)
{
    fixture_t *f = *state;
    f->render_fails = 1;
    start_admin(f, 5000);
    http(f, "GET /metrics HTTP/1.1\r\n\r\n", &g_resp);
    assert_answer(&g_resp, 500, "metrics unavailable\n");
}

static void test_head_answers_the_headers_without_the_body(void **state)
{
    fixture_t *f = *state;
    start_admin(f, 5000);
    http(f, "HEAD /healthz HTTP/1.1\r\n\r\n", &g_resp);
    assert_int_equal(g_resp.status, 200);
    assert_header(&g_resp, "Content-Length", "3"); /* what GET would send */
    assert_int_equal(g_resp.body_len, 0);

    http(f, "HEAD /metrics HTTP/1.1\r\n\r\n", &g_resp);
    assert_int_equal(g_resp.status, 200);
    assert_header(&g_resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    assert_int_equal(g_resp.body_len, 0);

    http(f, "HEAD /nope HTTP/1.1\r\n\r\n", &g_resp);
    assert_int_equal(g_resp.status, 404);
    assert_int_equal(g_resp.body_len, 0);
}

static void test_http_1_0_is_served(void **state)
{
    fixture_t *f = *state;
    start_admin(f, 5000);
    http(f, "GET /healthz HTTP/1.0\r\n\r\n", &g_resp);
    assert_answer(&g_resp, 200, "ok\n");
}

static void test_a_request_sent_a_byte_at_a_time_is_served(void **state)
{
    fixture_t *f = *state;
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t\r\n\r\n";
    start_admin(f, 5000);
    int fd = connect_admin(f);
    for (size_t i = 0; i < sizeof(req) - 1; i++) {
        send_all(fd, &req[i], 1);
        usleep(1000);
    }
    read_response(fd, &g_resp);
    close(fd);
    assert_answer(&g_resp, 200, "ok\n");
}

static void test_post_is_405_and_names_the_allowed_methods(void **state)
{
    fixture_t *f = *state;
    start_admin(f, 5000);
    http(f, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &g_resp);
    assert_answer(&g_resp, 405, "only GET and HEAD are allowed\n");
    assert_header(&g_resp, "Allow", "GET, HEAD");
}

static void test_unknown_paths_and_query_strings_are_404(void **state)
{
    fixture_t *f = *state;
    start_admin(f, 5000);
    static const char *const kReqs[] = {
        "GET / HTTP/1.1\r\n\r\n",
        "GET /metrics/ HTTP/1.1\r\n\r\n",
        "GET /metrics?name[]=x HTTP/1.1\r\n\r\n",
        "GET /METRICS HTTP/1.1\r\n\r\n",
        "GET http://localhost/metrics HTTP/1.1\r\n\r\n",
        "GET /healthz/../metrics HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(kReqs) / sizeof(kReqs[0]); i++) {
        http(f, kReqs[i], &g_resp);
        assert_answer(&g_resp, 404, "not found: try /healthz, /readyz or /metrics\n");
    }
}

static void test_a_request_with_a_body_is_400(void **state)
{
    fixture_t *f = *state;
    start_admin(f, 5000);
    http(f, "GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", &g_resp);
    assert_answer(&g_resp, 400, "a request body is not allowed\n");
    http(f, "GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
         &g_resp);
    assert_answer(&g_resp, 400, "a request body is not allowed\n");
    /* An explicit empty body is no body. */
    http(f, "GET /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &g_resp);
    assert_answer(&g_resp, 200, "ok\n");
}

static void test_malformed_requests_are_400(void **state)
{
    fixture_t *f = *state;
    start_admin(f, 5000);
    http(f, "GET /healthz HTTP/1.1\nHost: x\n\n\r\n\r\n", &g_resp);
    assert_answer(&g_resp, 400, "lines must end with CRLF and hold no other CR, LF or NUL\n");
    http(f, "GET /healthz HTTP/2.0\r\n\r\n", &g_resp);
    assert_answer(&g_resp, 400, "only HTTP/1.0 and HTTP/1.1 are served\n");
    http(f, "GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", &g_resp);
    assert_answer(&g_resp, 400, "malformed header field\n");
}

static void test_an_oversized_request_head_is_431(void **state)
{
    fixture_t *f = *state;
    static char req[ADMIN_MAX_REQUEST + 1000];
    start_admin(f, 5000);
    int n = snprintf(req, sizeof(req), "GET /metrics HTTP/1.1\r\nX-Filler: ");
    memset(req + n, 'a', sizeof(req) - (size_t)n);
    int fd = connect_admin(f);
    /* More than the limit, never a blank line: the answer must still arrive whole (the
     * unread rest is drained, not answered with a reset). */
    send_all(fd, req, sizeof(req));
    read_response(fd, &g_resp);
    close(fd);
    assert_answer(&g_resp, 431, "request head too large\n");
}

static void test_a_head_of_exactly_the_limit_is_served(void **state)
{
    fixture_t *f = *state;
    static char req[ADMIN_MAX_REQUEST];
    start_admin(f, 5000);
    int n = snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nX-Filler: ");
    memset(req + n, 'a', sizeof(req) - (size_t)n - 4);
    memcpy(req + sizeof(req) - 4, "\r\n\r\n", 4);
    int fd = connect_admin(f);
    send_all(fd, req, sizeof(req));
    read_response(fd, &g_resp);
    close(fd);
    assert_answer(&g_resp, 200, "ok\n");
}

static void test_a_silent_client_is_closed_after_the_timeout_without_an_answer(void **state)
{
    fixture_t *f = *state;
    start_admin(f, 300);
    int fd = connect_admin(f);
    uint64_t t0 = now_ms();
    read_response(fd, &g_resp);
    uint64_t waited = now_ms() - t0;
    close(fd);
    assert_int_equal(g_resp.len, 0);
    assert_true(waited >= 250);
    assert_true(waited < 5000);

    /* Half a request is no better than none. */
    fd = connect_admin(f);
    send_all(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n", 32);
    read_response(fd, &g_resp);
    close(fd);
    assert_int_equal(g_resp.len, 0);
}

static void test_clients_over_the_limit_are_closed_at_once(void **state)
{
    fixture_t *f = *state;
    int fds[ADMIN_MAX_CLIENTS];
    start_admin(f, 20000);
    for (int i = 0; i < ADMIN_MAX_CLIENTS; i++)
        fds[i] = connect_admin(f);

    /* One more: accepted (it leaves the backlog) and closed without a word, long before any
     * timeout. */
    int extra = connect_admin(f);
    uint64_t t0 = now_ms();
    read_response(extra, &g_resp);
    close(extra);
    assert_int_equal(g_resp.len, 0);
    assert_true(now_ms() - t0 < 5000);

    /* The ones inside the limit are still served. */
    send_all(fds[0], "GET /healthz HTTP/1.1\r\n\r\n", 25);
    read_response(fds[0], &g_resp);
    assert_answer(&g_resp, 200, "ok\n");
    for (int i = 0; i < ADMIN_MAX_CLIENTS; i++)
        close(fds[i]);

    /* And once they are gone, a new client is served again. */
    for (int attempt = 0;; attempt++) {
        http(f, "GET /healthz HTTP/1.1\r\n\r\n", &g_resp);
        if (g_resp.status == 200)
            break;
        assert_true(attempt < 100);
        usleep(20000);
    }
}

static void test_closing_the_admin_closes_its_clients(void **state)
{
    fixture_t *f = *state;
    int fds[3];
    start_admin(f, 20000);
    for (int i = 0; i < 3; i++)
        fds[i] = connect_admin(f);
    send_all(fds[2], "GET /heal", 9);
    /* Make sure the loop has accepted them before it is stopped. */
    http(f, "GET /healthz HTTP/1.1\r\n\r\n", &g_resp);
    assert_answer(&g_resp, 200, "ok\n");
    uv_async_send(&f->stop);
    pthread_join(f->thread, NULL);
    f->running = 0;
    assert_int_equal(uv_loop_close(&f->loop), 0);
    for (int i = 0; i < 3; i++) {
        read_response(fds[i], &g_resp);
        assert_int_equal(g_resp.len, 0);
        close(fds[i]);
    }
}

/* ---- starting ---------------------------------------------------------------------------- */

static char *read_log(int fd)
{
    static char text[8192];
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    assert_true(n >= 0);
    text[n] = '\0';
    return text;
}

static void test_start_logs_listening_and_a_taken_port_logs_admin_failed(void **state)
{
    fixture_t *f = *state;
    char path[] = "/tmp/test_admin_log_XXXXXX";
    int log_fd = mkstemp(path);
    assert_true(log_fd >= 0);
    unlink(path);
    log_set_fd(log_fd);
    log_set_level(LOG_INFO);

    start_admin(f, 5000);
    assert_non_null(strstr(read_log(log_fd), "\"event\":\"admin_listening\""));

    /* Its own port is taken now. */
    uv_loop_t loop;
    config_addr_t addr = loopback_addr(f->port);
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_null(admin_start(&loop, &addr, ready_cb, render_cb, f));
    const char *text = read_log(log_fd);
    log_set_fd(2);
    log_set_level(LOG_WARN);
    close(log_fd);
    assert_non_null(strstr(text, "\"event\":\"admin_failed\""));
    assert_non_null(strstr(text, "address already in use"));
    /* The half-opened listener closes on the loop, and nothing leaks. */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the parser alone ------------------------------------------------------------------- */

typedef struct {
    const char *req;
    admin_req_status_t want;
    unsigned status; /* REFUSE */
    admin_path_t path;
} parse_case_t;

static void test_parser_cases(void **state)
{
    static const parse_case_t kCases[] = {
        {"GET /healthz HTTP/1.1\r\n\r\n", ADMIN_REQ_SERVE, 0, ADMIN_PATH_HEALTHZ},
        {"GET /readyz HTTP/1.0\r\nHost: a\r\n\r\n", ADMIN_REQ_SERVE, 0, ADMIN_PATH_READYZ},
        {"HEAD /metrics HTTP/1.1\r\n\r\n", ADMIN_REQ_SERVE, 0, ADMIN_PATH_METRICS},
        {"GET /metrics HTTP/1.1\r\ncontent-length:  000 \r\n\r\n", ADMIN_REQ_SERVE, 0,
         ADMIN_PATH_METRICS},
        {"GET /metrics HTTP/1.1\r\nX-Empty:\r\nX-Tab:\ta\tb\r\n\r\n", ADMIN_REQ_SERVE, 0,
         ADMIN_PATH_METRICS},
        {"GET /metrics HTTP/1.1\r\nX-Utf8: caf\xc3\xa9\r\n\r\n", ADMIN_REQ_SERVE, 0,
         ADMIN_PATH_METRICS},
        /* need more */
        {"", ADMIN_REQ_NEED_MORE, 0, 0},
        {"GET /healthz HTTP/1.1", ADMIN_REQ_NEED_MORE, 0, 0},
        {"GET /healthz HTTP/1.1\r\n", ADMIN_REQ_NEED_MORE, 0, 0},
        {"GET /healthz HTTP/1.1\r\nHost: x\r\n\r", ADMIN_REQ_NEED_MORE, 0, 0},
        /* decided as soon as the request line is whole */
        {"POST /metrics HTTP/1.1\r\n", ADMIN_REQ_REFUSE, 405, 0},
        {"get /metrics HTTP/1.1\r\n", ADMIN_REQ_REFUSE, 405, 0},
        {"GET /metrics?x HTTP/1.1\r\n", ADMIN_REQ_REFUSE, 404, 0},
        {"GET * HTTP/1.1\r\n", ADMIN_REQ_REFUSE, 404, 0},
        /* 400 */
        {"GET /healthz HTTP/1.1\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\nHost: a\rb\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\nHost: a\x01\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\nHost: a\x7f\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"\r\nGET /healthz HTTP/1.1\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET  /healthz HTTP/1.1\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz  HTTP/1.1\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1 \r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /health\x80z HTTP/1.1\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"G(T /healthz HTTP/1.1\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.2\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz http/1.1\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\n Host: x\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\nHost: x\r\n\tfolded\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\nNo colon\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\n: x\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\nContent-Length: 1\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\nContent-Length: 0010\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\nContent-Length: -0\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\nContent-Length: 0 0\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\nContent-Length: 0,0\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\nContent-Length:\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        {"GET /healthz HTTP/1.1\r\nTRANSFER-ENCODING: identity\r\n\r\n", ADMIN_REQ_REFUSE, 400, 0},
        /* The first fault in order decides: the line with the method comes first. */
        {"PUT /nope HTTP/1.1\r\nContent-Length: 5\r\n\r\n", ADMIN_REQ_REFUSE, 405, 0},
        {"GET /nope HTTP/1.1\r\nContent-Length: 5\r\n\r\n", ADMIN_REQ_REFUSE, 404, 0},
    };
    for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
        const parse_case_t *c = &kCases[i];
        admin_request_t r;
        size_t len = strlen(c->req);
        admin_req_status_t st = admin_parse_request((const uint8_t *)c->req, len, &r);
        if (st != c->want)
            fail_msg("case %zu (%s): status %d, expected %d", i, c->req, st, c->want);
        if (st == ADMIN_REQ_REFUSE) {
            if (r.status != c->status)
                fail_msg("case %zu (%s): %u, expected %u", i, c->req, r.status, c->status);
            assert_non_null(r.why);
        }
        if (st == ADMIN_REQ_SERVE) {
            assert_int_equal(r.path, c->path);
            assert_int_equal(r.head_len, len);
            assert_int_equal(r.head, c->req[0] == 'H');
        }
    }
}

/* A page in a local browser can reach a loopback port through DNS rebinding: its requests
 * then carry the attacker's name in Host. The loopback endpoint answers only IP literals and
 * localhost. */
static void test_loopback_endpoint_refuses_a_dns_name_in_host(void **state)
{
    fixture_t *f = *state;
    start_admin(f, 5000);
    http(f, "GET /metrics HTTP/1.1\r\nHost: attacker.example:9901\r\n\r\n", &g_resp);
    assert_int_equal(g_resp.status, 421);
    http(f, "GET /metrics HTTP/1.1\r\nHost: LOCALHOST:9901\r\n\r\n", &g_resp);
    assert_int_equal(g_resp.status, 200);
}

static void test_parser_classifies_host_values(void **state)
{
    static const struct {
        const char *host;
        int is_name;
    } cases[] = {
        {"127.0.0.1", 0},      {"127.0.0.1:9901", 0}, {"[::1]", 0},        {"[::1]:9901", 0},
        {"localhost", 0},      {"LocalHost:1", 0},    {"evil.example", 1}, {"evil.example:80", 1},
        {"127.0.0.1:x", 1},    {"[::1]x", 1},         {"[::1", 1},         {"", 1},
        {"1.2.3.4.nip.io", 1}, {"localhost.evil", 1},
    };
    char req[256];
    admin_request_t r;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n =
            snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", cases[i].host);
        assert_int_equal(admin_parse_request((const uint8_t *)req, (size_t)n, &r), ADMIN_REQ_SERVE);
        if (r.host_is_name != cases[i].is_name)
            fail_msg("Host '%s': host_is_name %d", cases[i].host, r.host_is_name);
    }
}

static void test_parser_stops_at_the_blank_line_and_at_the_limit(void **state)
{
    static uint8_t buf[ADMIN_MAX_REQUEST + 10];
    static const char req[] = "GET /metrics HTTP/1.1\r\n\r\n";
    admin_request_t r;

    /* What follows the head is not looked at. */
    memcpy(buf, req, sizeof(req) - 1);
    memset(buf + sizeof(req) - 1, 0, 20);
    assert_int_equal(admin_parse_request(buf, sizeof(req) - 1 + 20, &r), ADMIN_REQ_SERVE);
    assert_int_equal(r.head_len, sizeof(req) - 1);

    /* A head without its blank line within the limit is 431, whatever comes after it. */
    int n = snprintf((char *)buf, sizeof(buf), "GET /metrics HTTP/1.1\r\nX: ");
    memset(buf + n, 'a', sizeof(buf) - (size_t)n);
    assert_int_equal(admin_parse_request(buf, ADMIN_MAX_REQUEST - 1, &r), ADMIN_REQ_NEED_MORE);
    assert_int_equal(admin_parse_request(buf, ADMIN_MAX_REQUEST, &r), ADMIN_REQ_REFUSE);
    assert_int_equal(r.status, 431);
    memcpy(buf + ADMIN_MAX_REQUEST, "\r\n\r\n", 4);
    assert_int_equal(admin_parse_request(buf, ADMIN_MAX_REQUEST + 4, &r), ADMIN_REQ_REFUSE);
    assert_int_equal(r.status, 431);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_healthz_answers_200_ok),
        T(test_readyz_answers_200_when_ready),
        T(test_readyz_answers_503_with_the_reason_when_not_ready),
        T(test_readyz_reason_is_kept_to_printable_ascii),
        T(test_metrics_answers_the_rendered_page_as_prometheus_text),
        T(test_metrics_that_cannot_be_rendered_are_500),
        T(test_head_answers_the_headers_without_the_body),
        T(test_http_1_0_is_served),
        T(test_a_request_sent_a_byte_at_a_time_is_served),
        T(test_post_is_405_and_names_the_allowed_methods),
        T(test_unknown_paths_and_query_strings_are_404),
        T(test_a_request_with_a_body_is_400),
        T(test_malformed_requests_are_400),
        T(test_an_oversized_request_head_is_431),
        T(test_a_head_of_exactly_the_limit_is_served),
        T(test_a_silent_client_is_closed_after_the_timeout_without_an_answer),
        T(test_clients_over_the_limit_are_closed_at_once),
        T(test_closing_the_admin_closes_its_clients),
        T(test_start_logs_listening_and_a_taken_port_logs_admin_failed),
        T(test_loopback_endpoint_refuses_a_dns_name_in_host),
        cmocka_unit_test(test_parser_cases),
        cmocka_unit_test(test_parser_classifies_host_values),
        cmocka_unit_test(test_parser_stops_at_the_blank_line_and_at_the_limit),
    };
    log_set_level(LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
