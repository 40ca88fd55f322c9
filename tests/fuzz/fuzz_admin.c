/* fuzz_admin: bytes a client sends to the admin endpoint, through admin_parse_request.
 *
 * Beyond "no crash, no leak": a served request is exactly `GET|HEAD SP path SP HTTP/1.x`
 * CRLF, header lines that a naive second reading finds free of bodies, bare CR/LF and control
 * characters, and the first blank line, all within ADMIN_MAX_REQUEST; "need more" means no
 * blank line in the window; 431 only for a full window without one; and a verdict, once
 * given, is the same for any shorter prefix that already had one and for any extension. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

static const char *const kPaths[] = {"/healthz", "/readyz", "/metrics"};

static int lower(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static int starts_nocase(const uint8_t *p, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    if (n < k)
        return 0;
    for (size_t i = 0; i < k; i++) {
        if (lower(p[i]) != prefix[i])
            return 0;
    }
    return 1;
}

/* find_blank_line returns the offset just past the first CRLFCRLF in |p|, or 0. */
static size_t find_blank_line(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 4 <= n; i++) {
        if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n')
            return i + 4;
    }
    return 0;
}

/* check_served reads a served head again, naively, line by line. */
static void check_served(const uint8_t *data, const admin_request_t *r)
{
    const char *method = r->head ? "HEAD " : "GET ";
    const char *path = kPaths[r->path];
    size_t m = strlen(method), p = strlen(path);
    CHECK((unsigned)r->path < 3);
    CHECK(r->head_len >= m + p + 13);
    CHECK(memcmp(data, method, m) == 0);
    CHECK(memcmp(data + m, path, p) == 0);
    CHECK(memcmp(data + m + p, " HTTP/1.", 8) == 0);
    CHECK(data[m + p + 8] == '0' || data[m + p + 8] == '1');
    CHECK(memcmp(data + m + p + 9, "\r\n", 2) == 0);

    size_t line = m + p + 11;
    for (size_t i = line; i < r->head_len; i++) {
        uint8_t c = data[i];
        CHECK(c >= 0x20 || c == '\t' || c == '\r' || c == '\n');
        CHECK(c != 0x7f);
        if (c == '\r')
            CHECK(i + 1 < r->head_len && data[i + 1] == '\n');
        if (c == '\n') {
            CHECK(data[i - 1] == '\r');
            const uint8_t *l = data + line;
            size_t n = i - 1 - line;
            CHECK(!starts_nocase(l, n, "transfer-encoding:"));
            if (starts_nocase(l, n, "content-length:")) {
                for (size_t k = 15; k < n; k++)
                    CHECK(l[k] == '0' || l[k] == ' ' || l[k] == '\t');
            }
            if (n > 0)
                CHECK(l[0] != ' ' && l[0] != '\t' && memchr(l, ':', n) != NULL);
            line = i + 1;
        }
    }
}

static void check_same(admin_req_status_t a, const admin_request_t *ra, admin_req_status_t b,
                       const admin_request_t *rb)
{
    CHECK(a == b);
    if (a == ADMIN_REQ_SERVE)
        CHECK(ra->path == rb->path && ra->head == rb->head && ra->head_len == rb->head_len);
    if (a == ADMIN_REQ_REFUSE)
        CHECK(ra->status == rb->status && strcmp(ra->why, rb->why) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    admin_request_t r, r2;
    size_t window = size < ADMIN_MAX_REQUEST ? size : ADMIN_MAX_REQUEST;
    size_t blank = find_blank_line(data, window);

    admin_req_status_t st = admin_parse_request(data, size, &r);
    switch (st) {
    case ADMIN_REQ_NEED_MORE:
        CHECK(size < ADMIN_MAX_REQUEST);
        CHECK(blank == 0);
        break;
    case ADMIN_REQ_SERVE:
        CHECK(r.head_len == blank);
        check_served(data, &r);
        break;
    case ADMIN_REQ_REFUSE:
        CHECK(r.status == 400 || r.status == 404 || r.status == 405 || r.status == 431);
        CHECK(r.why != NULL && r.why[0] != '\0' && strchr(r.why, '\n') == NULL);
        if (r.status == 431)
            CHECK(size >= ADMIN_MAX_REQUEST && blank == 0);
        break;
    default:
        abort();
    }

    /* A prefix that already has a verdict has this one. */
    size_t cut = size > 0 ? data[0] % (size + 1) : 0;
    if (size > 8)
        cut = size - 1 - (data[size - 1] % (size < 64 ? size : 64));
    admin_req_status_t st2 = admin_parse_request(data, cut, &r2);
    if (st2 != ADMIN_REQ_NEED_MORE)
        check_same(st2, &r2, st, &r);

    /* And so does any extension of input that has one. */
    if (st != ADMIN_REQ_NEED_MORE) {
        uint8_t *longer = malloc(size + 8);
        CHECK(longer != NULL);
        if (size > 0)
            memcpy(longer, data, size);
        memcpy(longer + size, "\r\n\r\nX\n\r\0", 8);
        st2 = admin_parse_request(longer, size + 8, &r2);
        check_same(st, &r, st2, &r2);
        free(longer);
    }
    return 0;
}
