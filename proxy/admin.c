#include "admin.h"

#include <stddef.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/mem.h>

#include "alloc.h"
#include "log.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ---- request parsing -------------------------------------------------------------------- */

/* RFC 9110 §5.6.2 tchar: the bytes of a token (method, field name). */
static int is_tchar(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int all_tchar(const CBS *s)
{
    CBS c = *s;
    uint8_t b;
    if (CBS_len(&c) == 0)
        return 0;
    while (CBS_get_u8(&c, &b)) {
        if (!is_tchar(b))
            return 0;
    }
    return 1;
}

static int cbs_eq(const CBS *s, const char *text)
{
    return CBS_mem_equal(s, (const uint8_t *)text, strlen(text));
}

/* cbs_eq_nocase compares |s| with lower-case ASCII |text| ignoring case. */
static int cbs_eq_nocase(const CBS *s, const char *text)
{
    CBS c = *s;
    uint8_t b;
    if (CBS_len(&c) != strlen(text))
        return 0;
    for (size_t i = 0; CBS_get_u8(&c, &b); i++) {
        if (b >= 'A' && b <= 'Z')
            b = (uint8_t)(b - 'A' + 'a');
        if (b != (uint8_t)text[i])
            return 0;
    }
    return 1;
}

/* cbs_get_until splits |s| at the first |c|: |out| gets what precedes it and |s| keeps what
 * follows. Returns 0, leaving both alone, if |c| is not there. */
static int cbs_get_until(CBS *s, uint8_t c, CBS *out)
{
    CBS rest = *s, before;
    if (!CBS_get_until_first(&rest, &before, c) || !CBS_skip(&rest, 1))
        return 0;
    *out = before;
    *s = rest;
    return 1;
}

static int cbs_has(const CBS *s, uint8_t c)
{
    CBS rest = *s, before;
    return CBS_get_until_first(&rest, &before, c);
}

static int is_ows(uint8_t c)
{
    return c == ' ' || c == '\t';
}

typedef enum { LINE_NONE, LINE_OK, LINE_BAD } line_status_t;

/* get_line takes one CRLF-terminated line off |s| (without the CRLF): LINE_NONE while its LF
 * has not arrived, LINE_BAD for a lone LF, or a CR or NUL inside the line (RFC 9112 §2.2). */
static line_status_t get_line(CBS *s, CBS *out)
{
    CBS rest = *s, line;
    uint8_t cr;
    if (!cbs_get_until(&rest, '\n', &line))
        return LINE_NONE;
    if (!CBS_get_last_u8(&line, &cr) || cr != '\r' || cbs_has(&line, '\r') || cbs_has(&line, '\0'))
        return LINE_BAD;
    *out = line;
    *s = rest;
    return LINE_OK;
}

static admin_req_status_t refuse(admin_request_t *out, unsigned status, const char *why)
{
    out->status = status;
    out->why = why;
    return ADMIN_REQ_REFUSE;
}

/* parse_request_line checks `method SP target SP version` (RFC 9112 §3). Returns NEED_MORE
 * (here: valid) or REFUSE. */
static admin_req_status_t parse_request_line(CBS line, admin_request_t *out)
{
    CBS method, target;
    uint8_t b;
    if (!cbs_get_until(&line, ' ', &method) || !all_tchar(&method))
        return refuse(out, 400, "malformed request line");
    out->head = cbs_eq(&method, "HEAD");
    if (!cbs_get_until(&line, ' ', &target) || CBS_len(&target) == 0)
        return refuse(out, 400, "malformed request line");
    for (CBS t = target; CBS_get_u8(&t, &b);) {
        if (b <= 0x20 || b >= 0x7f)
            return refuse(out, 400, "malformed request target");
    }
    /* |line| now holds the version, which must be all that is left. */
    if (!cbs_eq(&line, "HTTP/1.1") && !cbs_eq(&line, "HTTP/1.0"))
        return refuse(out, 400, "only HTTP/1.0 and HTTP/1.1 are served");
    if (!out->head && !cbs_eq(&method, "GET"))
        return refuse(out, 405, "only GET and HEAD are allowed");
    if (cbs_eq(&target, "/healthz"))
        out->path = ADMIN_PATH_HEALTHZ;
    else if (cbs_eq(&target, "/readyz"))
        out->path = ADMIN_PATH_READYZ;
    else if (cbs_eq(&target, "/metrics"))
        out->path = ADMIN_PATH_METRICS;
    else
        return refuse(out, 404, "not found: try /healthz, /readyz or /metrics");
    return ADMIN_REQ_NEED_MORE;
}

/* trim_ows drops spaces and tabs from both ends of |s| (RFC 9110 §5.5). */
static void trim_ows(CBS *s)
{
    CBS t = *s;
    uint8_t c;
    while (CBS_get_u8(&t, &c) && is_ows(c))
        *s = t;
    t = *s;
    while (CBS_get_last_u8(&t, &c) && is_ows(c))
        *s = t;
}

/* host_is_literal says whether a Host value names an IPv4 literal, a bracketed IPv6 literal
 * or localhost, with or without ":port". */
static int all_digits(CBS d)
{
    uint8_t b;
    if (CBS_len(&d) == 0)
        return 0;
    while (CBS_get_u8(&d, &b)) {
        if (b < '0' || b > '9')
            return 0;
    }
    return 1;
}

static int host_is_literal(CBS h)
{
    CBS host;
    uint8_t b;
    if (CBS_len(&h) > 0 && CBS_data(&h)[0] == '[') {
        /* "[v6]" or "[v6]:port" (cbs_get_until consumes the ']'). */
        if (!cbs_get_until(&h, ']', &host))
            return 0;
        return CBS_len(&h) == 0 || (CBS_get_u8(&h, &b) && b == ':' && all_digits(h));
    }
    if (cbs_get_until(&h, ':', &host)) {
        if (!all_digits(h))
            return 0;
    } else {
        host = h;
    }
    if (cbs_eq_nocase(&host, "localhost"))
        return 1;
    if (CBS_len(&host) == 0)
        return 0;
    while (CBS_get_u8(&host, &b)) {
        if ((b < '0' || b > '9') && b != '.')
            return 0;
    }
    return 1;
}

/* parse_field checks one header field line (RFC 9112 §5): a token name right before the
 * colon, a value of visible characters, spaces and tabs, and no body announced. */
static admin_req_status_t parse_field(CBS line, admin_request_t *out)
{
    CBS name, value;
    uint8_t b;
    if (!cbs_get_until(&line, ':', &name) || !all_tchar(&name))
        return refuse(out, 400, "malformed header field");
    value = line;
    for (CBS v = value; CBS_get_u8(&v, &b);) {
        if ((b < 0x20 && b != '\t') || b == 0x7f)
            return refuse(out, 400, "malformed header field");
    }
    if (cbs_eq_nocase(&name, "transfer-encoding"))
        return refuse(out, 400, "a request body is not allowed");
    if (cbs_eq_nocase(&name, "host")) {
        /* An IP literal ("127.0.0.1:9901", "[::1]:9901") or localhost is what scrapers and
         * probes send to a loopback endpoint; a DNS name there is how a page in a local
         * browser reaches it through DNS rebinding (refused in on_client_read). */
        trim_ows(&value);
        out->host_is_name = !host_is_literal(value);
    }
    if (cbs_eq_nocase(&name, "content-length")) {
        /* There is no body to read: only a length of zero ("0", "00"…) is acceptable. */
        int body = 0;
        trim_ows(&value);
        if (CBS_len(&value) == 0)
            return refuse(out, 400, "malformed Content-Length");
        while (CBS_get_u8(&value, &b)) {
            if (b < '0' || b > '9')
                return refuse(out, 400, "malformed Content-Length");
            body |= b != '0';
        }
        if (body)
            return refuse(out, 400, "a request body is not allowed");
    }
    return ADMIN_REQ_NEED_MORE;
}

admin_req_status_t admin_parse_request(const uint8_t *data, size_t len, admin_request_t *out)
{
    CBS in, line;
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return ADMIN_REQ_NEED_MORE;
    size_t window = len < ADMIN_MAX_REQUEST ? len : ADMIN_MAX_REQUEST;
    CBS_init(&in, data, window);
    for (int first = 1;; first = 0) {
        line_status_t ls = get_line(&in, &line);
        if (ls == LINE_NONE)
            break;
        if (ls == LINE_BAD)
            return refuse(out, 400, "lines must end with CRLF and hold no other CR, LF or NUL");
        if (first) {
            if (parse_request_line(line, out) == ADMIN_REQ_REFUSE)
                return ADMIN_REQ_REFUSE;
            continue;
        }
        if (CBS_len(&line) == 0) {
            out->head_len = window - CBS_len(&in);
            return ADMIN_REQ_SERVE;
        }
        CBS lead = line;
        uint8_t c0;
        if (CBS_get_u8(&lead, &c0) && is_ows(c0))
            return refuse(out, 400, "header folding is not allowed");
        if (parse_field(line, out) == ADMIN_REQ_REFUSE)
            return ADMIN_REQ_REFUSE;
    }
    if (len >= ADMIN_MAX_REQUEST)
        return refuse(out, 431, "request head too large");
    return ADMIN_REQ_NEED_MORE;
}

/* ---- responses -------------------------------------------------------------------------- */

static const char *status_text(unsigned status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 421:
        return "Misdirected Request";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    }
    return "Error";
}

#define CT_TEXT    "text/plain; charset=utf-8"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

static int put(CBB *out, const char *s)
{
    return CBB_add_bytes(out, (const uint8_t *)s, strlen(s));
}

static int put_uint(CBB *out, uint64_t v)
{
    uint8_t digits[20];
    size_t n = 0;
    do {
        digits[sizeof(digits) - 1 - n++] = (uint8_t)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return CBB_add_bytes(out, digits + sizeof(digits) - n, n);
}

/* build_head writes the status line and headers for a body of |body_len| bytes. */
static int build_head(CBB *out, unsigned status, const char *content_type, size_t body_len)
{
    return put(out, "HTTP/1.1 ") && put_uint(out, status) && CBB_add_u8(out, ' ') &&
           put(out, status_text(status)) && put(out, "\r\nContent-Type: ") &&
           put(out, content_type) && put(out, "\r\nContent-Length: ") && put_uint(out, body_len) &&
           (status != 405 || put(out, "\r\nAllow: GET, HEAD")) &&
           put(out, "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n");
}

/* ---- clients ---------------------------------------------------------------------------- */

typedef enum {
    CLIENT_READING,  /* waiting for a whole request head */
    CLIENT_WRITING,  /* the answer and then the shutdown are in flight */
    CLIENT_DRAINING, /* answered and shut down: dropping input until EOF */
    CLIENT_CLOSING,
} client_state_t;

typedef struct admin_client admin_client_t;

struct admin {
    uv_loop_t *loop;
    uv_tcp_t listener;
    admin_ready_fn ready;
    admin_render_fn render;
    void *arg;
    uint64_t timeout_ms;
    admin_client_t *clients; /* every open client, for admin_close */
    size_t n_clients;
    int listener_open; /* until its close callback */
    int closing;
    int loopback; /* bound to a loopback address: refuse DNS names in Host */
};

struct admin_client {
    admin_client_t *prev, *next;
    admin_t *admin;
    client_state_t state;
    uv_tcp_t tcp;
    uv_timer_t timer; /* the request deadline, then the answer's */
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    int handles_open;
    uint8_t *head; /* the answer's status line and headers (OPENSSL_free) */
    uint8_t *body; /* and its body, when one is sent */
    size_t head_len, body_len;
    size_t len; /* bytes received into req */
    uint8_t req[ADMIN_MAX_REQUEST];
};

/* admin_maybe_free frees |a| once admin_close has run and every handle is closed. */
static void admin_maybe_free(admin_t *a)
{
    if (a->closing && !a->listener_open && a->clients == NULL)
        free(a);
}

static void on_client_handle_closed(uv_handle_t *h)
{
    admin_client_t *c = h->data;
    if (--c->handles_open > 0)
        return;
    admin_t *a = c->admin;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    a->n_clients--;
    OPENSSL_free(c->head);
    OPENSSL_free(c->body);
    free(c);
    admin_maybe_free(a);
}

static void client_close(admin_client_t *c)
{
    if (c->state == CLIENT_CLOSING)
        return;
    c->state = CLIENT_CLOSING;
    /* Closing cancels a pending write or shutdown: their callbacks run first, with
     * UV_ECANCELED, and find the client closing. */
    uv_close((uv_handle_t *)&c->tcp, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_client_handle_closed);
}

static void on_timeout(uv_timer_t *t)
{
    client_close(t->data);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    admin_client_t *c = h->data;
    /* While reading a request, the rest of req; while draining, all of it as scratch. */
    size_t off = c->state == CLIENT_READING ? c->len : 0;
    *out = uv_buf_init((char *)c->req + off, (unsigned)(sizeof(c->req) - off));
}

static void on_drain_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    admin_client_t *c = s->data;
    if (nread < 0)
        client_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    admin_client_t *c = req->data;
    if (c->state != CLIENT_WRITING)
        return;
    if (status < 0 || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_drain_read) != 0) {
        client_close(c);
        return;
    }
    c->state = CLIENT_DRAINING;
}

static void on_written(uv_write_t *req, int status)
{
    admin_client_t *c = req->data;
    if (c->state != CLIENT_WRITING)
        return;
    c->shutdown_req.data = c;
    if (status < 0 || uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        client_close(c);
}

/* client_send writes head and body (each may be NULL) and takes them over. */
static void client_send(admin_client_t *c, uint8_t *head, size_t head_len, uint8_t *body,
                        size_t body_len)
{
    uv_buf_t bufs[2];
    unsigned n = 0;
    c->head = head;
    c->head_len = head_len;
    c->body = body;
    c->body_len = body_len;
    if (head == NULL) {
        client_close(c);
        return;
    }
    bufs[n++] = uv_buf_init((char *)head, (unsigned)head_len);
    if (body != NULL && body_len > 0)
        bufs[n++] = uv_buf_init((char *)body, (unsigned)body_len);
    c->state = CLIENT_WRITING;
    c->write_req.data = c;
    /* The answer gets its own deadline: a client that does not read it is let go. */
    uv_timer_start(&c->timer, on_timeout, c->admin->timeout_ms, 0);
    if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, bufs, n, on_written) != 0)
        client_close(c);
}

/* client_answer answers with |status| and the body |text| (a line, newline added). */
static void client_answer_text(admin_client_t *c, unsigned status, int head_only, const char *text)
{
    CBB head, body;
    uint8_t *h = NULL, *b = NULL;
    size_t h_len = 0, b_len = 0;
    CBB_zero(&head);
    CBB_zero(&body);
    if (!CBB_init(&body, 64) || !put(&body, text) || !CBB_add_u8(&body, '\n') ||
        !CBB_finish(&body, &b, &b_len))
        goto cleanup_cbbs;
    if (!CBB_init(&head, 160) || !build_head(&head, status, CT_TEXT, b_len) ||
        !CBB_finish(&head, &h, &h_len))
        goto cleanup_cbbs;
    if (head_only) {
        OPENSSL_free(b);
        b = NULL;
        b_len = 0;
    }
    client_send(c, h, h_len, b, b_len);
    return;
cleanup_cbbs:
    CBB_cleanup(&head);
    CBB_cleanup(&body);
    OPENSSL_free(h);
    OPENSSL_free(b);
    client_close(c);
}

/* client_answer_metrics answers with the rendered metrics, or 500 when they cannot be. */
static void client_answer_metrics(admin_client_t *c, int head_only)
{
    admin_t *a = c->admin;
    CBB head, body;
    uint8_t *h = NULL, *b = NULL;
    size_t h_len = 0, b_len = 0;
    CBB_zero(&head);
    if (!CBB_init(&body, 16384))
        goto fail;
    if (!a->render(a->arg, &body) || !CBB_finish(&body, &b, &b_len)) {
        CBB_cleanup(&body);
        goto fail;
    }
    if (!CBB_init(&head, 160) || !build_head(&head, 200, CT_METRICS, b_len) ||
        !CBB_finish(&head, &h, &h_len)) {
        CBB_cleanup(&head);
        OPENSSL_free(b);
        goto fail;
    }
    if (head_only) {
        OPENSSL_free(b);
        b = NULL;
        b_len = 0;
    }
    client_send(c, h, h_len, b, b_len);
    return;
fail:
    log_msg(LOG_ERROR, "admin_metrics_failed", "the metrics could not be rendered");
    client_answer_text(c, 500, head_only, "metrics unavailable");
}

static void client_answer_ready(admin_client_t *c, int head_only)
{
    admin_t *a = c->admin;
    char why[160] = "";
    char text[200];
    if (a->ready(a->arg, why, sizeof(why))) {
        client_answer_text(c, 200, head_only, "ready");
        return;
    }
    why[sizeof(why) - 1] = '\0';
    for (char *p = why; *p != '\0'; p++) {
        if (*p < 0x20 || *p > 0x7e)
            *p = '?';
    }
    snprintf(text, sizeof(text), "not ready: %s", why[0] != '\0' ? why : "unknown");
    client_answer_text(c, 503, head_only, text);
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    admin_client_t *c = s->data;
    admin_request_t r;
    if (c->state != CLIENT_READING || nread == 0)
        return;
    if (nread < 0) {
        /* Gone (or reset) before a whole request: nobody to answer. */
        client_close(c);
        return;
    }
    c->len += (size_t)nread;
    admin_req_status_t st = admin_parse_request(c->req, c->len, &r);
    if (st == ADMIN_REQ_NEED_MORE)
        return; /* the parser answers 431 before req can fill up */
    uv_read_stop(s);
    if (st == ADMIN_REQ_REFUSE) {
        client_answer_text(c, r.status, r.head, r.why);
        return;
    }
    if (r.host_is_name && c->admin->loopback) {
        client_answer_text(c, 421, r.head,
                           "a loopback admin endpoint answers Host: an IP address or localhost");
        return;
    }
    switch (r.path) {
    case ADMIN_PATH_HEALTHZ:
        client_answer_text(c, 200, r.head, "ok");
        return;
    case ADMIN_PATH_READYZ:
        client_answer_ready(c, r.head);
        return;
    case ADMIN_PATH_METRICS:
        client_answer_metrics(c, r.head);
        return;
    }
}

/* ---- listener --------------------------------------------------------------------------- */

static void on_rejected_closed(uv_handle_t *h)
{
    free(h);
}

/* reject_client accepts one pending connection and closes it at once, so it leaves the
 * backlog instead of waiting there. */
static void reject_client(admin_t *a)
{
    uv_tcp_t *t = pg_malloc(sizeof(*t));
    if (t == NULL)
        return;
    if (uv_tcp_init(a->loop, t) != 0) {
        free(t);
        return;
    }
    if (uv_accept((uv_stream_t *)&a->listener, (uv_stream_t *)t) == 0) {
        log_line_t l;
        log_begin(&l, LOG_WARN, "admin_rejected");
        log_str(&l, "reason", "max_clients");
        log_uint(&l, "open_clients", a->n_clients);
        log_end(&l);
    }
    uv_close((uv_handle_t *)t, on_rejected_closed);
}

static void on_connection(uv_stream_t *s, int status)
{
    admin_t *a = s->data;
    if (status < 0) {
        log_line_t l;
        log_begin(&l, LOG_ERROR, "admin_accept_failed");
        log_str(&l, "detail", uv_strerror(status));
        log_end(&l);
        return;
    }
    if (a->closing)
        return;
    if (a->n_clients >= ADMIN_MAX_CLIENTS) {
        reject_client(a);
        return;
    }
    admin_client_t *c = pg_malloc(sizeof(*c));
    if (c == NULL) {
        reject_client(a);
        return;
    }
    memset(c, 0, offsetof(admin_client_t, req)); /* req is written before it is read */
    c->admin = a;
    c->state = CLIENT_READING;
    if (uv_tcp_init(a->loop, &c->tcp) != 0 || uv_timer_init(a->loop, &c->timer) != 0) {
        /* uv_tcp_init leaves nothing to close when it fails; uv_timer_init cannot fail. */
        free(c);
        reject_client(a);
        return;
    }
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    /* Linked in now: from here on the close callbacks own the memory. */
    c->next = a->clients;
    if (a->clients)
        a->clients->prev = c;
    a->clients = c;
    a->n_clients++;
    if (uv_accept(s, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_client_read) != 0 ||
        uv_timer_start(&c->timer, on_timeout, a->timeout_ms, 0) != 0)
        client_close(c);
}

static void on_listener_closed(uv_handle_t *h)
{
    admin_t *a = h->data;
    a->listener_open = 0;
    admin_maybe_free(a);
}

admin_t *admin_start_ex(uv_loop_t *loop, const config_addr_t *addr, admin_ready_fn ready,
                        admin_render_fn render, void *arg, uint64_t timeout_ms)
{
    log_line_t l;
    admin_t *a = pg_calloc(1, sizeof(*a));
    if (a == NULL) {
        log_msg(LOG_ERROR, "admin_failed", "out of memory");
        return NULL;
    }
    a->loop = loop;
    a->ready = ready;
    a->render = render;
    a->arg = arg;
    a->timeout_ms = timeout_ms;
    {
        const struct sockaddr_storage *ss = &addr->addr;
        a->loopback = (ss->ss_family == AF_INET &&
                       (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127) ||
                      (ss->ss_family == AF_INET6 &&
                       IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr));
    }
    int r = uv_tcp_init(loop, &a->listener);
    if (r != 0)
        goto free_admin;
    a->listener.data = a;
    a->listener_open = 1;
    r = uv_tcp_bind(&a->listener, (const struct sockaddr *)&addr->addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&a->listener, 128, on_connection);
    if (r != 0)
        goto close_listener;
    log_begin(&l, LOG_INFO, "admin_listening");
    log_str(&l, "listen", addr->text);
    log_end(&l);
    return a;

close_listener:
    a->closing = 1;
    uv_close((uv_handle_t *)&a->listener, on_listener_closed); /* frees |a| */
    a = NULL;
free_admin:
    free(a);
    log_begin(&l, LOG_ERROR, "admin_failed");
    log_str(&l, "listen", addr->text);
    log_str(&l, "detail", uv_strerror(r));
    log_end(&l);
    return NULL;
}

admin_t *admin_start(uv_loop_t *loop, const config_addr_t *addr, admin_ready_fn ready,
                     admin_render_fn render, void *arg)
{
    return admin_start_ex(loop, addr, ready, render, arg, ADMIN_TIMEOUT_MS);
}

int admin_local_addr(const admin_t *a, struct sockaddr_storage *out)
{
    int len = (int)sizeof(*out);
    memset(out, 0, sizeof(*out));
    return uv_tcp_getsockname(&a->listener, (struct sockaddr *)out, &len) == 0;
}

void admin_close(admin_t *a)
{
    if (a == NULL || a->closing)
        return;
    a->closing = 1;
    for (admin_client_t *c = a->clients; c != NULL; c = c->next)
        client_close(c);
    uv_close((uv_handle_t *)&a->listener, on_listener_closed);
}
