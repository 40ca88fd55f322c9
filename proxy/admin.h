/* admin: the admin HTTP endpoint (admin.listen): GET /healthz, /readyz and /metrics, and
 * nothing else.
 *
 * It runs on the control thread's loop. Requests are bounded: ADMIN_MAX_REQUEST bytes of
 * request line and headers, ADMIN_TIMEOUT_MS to send them, ADMIN_MAX_CLIENTS at once; a body,
 * another method, an unknown path or a malformed request gets a fixed 4xx answer and the
 * connection is closed after every response (Connection: close).
 *
 * /healthz answers 200 "ok" while the process runs its loop. /readyz asks |ready| (supplied by
 * main): 200 "ready" or 503 with the reason it gives (draining, backend not accepting TCP, …).
 * /metrics asks |render| for the Prometheus text.
 *
 * What is answered (admin_parse_request):
 *  - the method is GET or HEAD (HEAD: the same status and headers, no body); any other
 *    method: 405 with "Allow: GET, HEAD";
 *  - the target is exactly /healthz, /readyz or /metrics. Nothing takes arguments, so a query
 *    string (/metrics?x=1), an absolute URI or any other path is 404;
 *  - the version is HTTP/1.0 or HTTP/1.1; Host is not required;
 *  - a request with a body (Content-Length other than 0, or any Transfer-Encoding), header
 *    folding, a field name with whitespace, a control character or a lone CR or LF is 400;
 *  - lines end with CRLF; a head that has no blank line within ADMIN_MAX_REQUEST bytes is 431;
 *  - a client that has not sent a whole head within the timeout is closed without an answer.
 * The first fault in request order decides, as soon as its line has arrived (a bad method is
 * answered without waiting for the headers).
 *
 * Each response is written whole, then the sending side is shut down; what the client still
 * sends is read and dropped until it closes or the timeout (re-armed for the answer) expires,
 * so a client never loses its answer to a reset. A client over ADMIN_MAX_CLIENTS is accepted
 * and closed at once.
 *
 * Ownership: admin_start allocates the admin_t and opens the listener; admin_close starts
 * closing it and every admin connection, and the admin_t is freed in the last close callback;
 * the loop must run until they are closed. Per client, memory is one ADMIN_MAX_REQUEST buffer
 * and the response. */
#ifndef PYROGUARD_ADMIN_H
#define PYROGUARD_ADMIN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/bytestring.h>
#include <uv.h>

#include "config.h"

#define ADMIN_MAX_REQUEST 8192
#define ADMIN_TIMEOUT_MS  5000
#define ADMIN_MAX_CLIENTS 64

/* ready returns 1 if ready; else 0 with a short reason in |why| (a NUL-terminated string of
 * printable ASCII; other bytes are answered as '?'). */
typedef int (*admin_ready_fn)(void *arg, char *why, size_t why_len);
/* render appends the metrics text to |out|; returns 0 on failure (answered with 500). */
typedef int (*admin_render_fn)(void *arg, CBB *out);

typedef struct admin admin_t;

/* admin_start listens on |addr| on |loop|. Returns NULL after logging why it cannot
 * ("admin_failed"); the handle it had opened is then closed on |loop|, so run the loop before
 * uv_loop_close. Logs "admin_listening" on success. */
admin_t *admin_start(uv_loop_t *loop, const config_addr_t *addr, admin_ready_fn ready,
                     admin_render_fn render, void *arg);

/* admin_start_ex is admin_start with |timeout_ms| in place of ADMIN_TIMEOUT_MS (tests). */
admin_t *admin_start_ex(uv_loop_t *loop, const config_addr_t *addr, admin_ready_fn ready,
                        admin_render_fn render, void *arg, uint64_t timeout_ms);

/* admin_local_addr writes the address the listener is bound to (with the port the system
 * chose for port 0) into |out|; returns 1, or 0 if it cannot be read. */
int admin_local_addr(const admin_t *a, struct sockaddr_storage *out);

/* admin_close closes the listener and every admin connection; |a| is freed once they are.
 * Call it once, from the loop's thread. */
void admin_close(admin_t *a);

/* ---- the request parser (exposed for the fuzzer and the tests) -------------------------- */

typedef enum {
    ADMIN_PATH_HEALTHZ,
    ADMIN_PATH_READYZ,
    ADMIN_PATH_METRICS,
} admin_path_t;

typedef enum {
    ADMIN_REQ_NEED_MORE, /* no fault so far, no blank line yet: read more */
    ADMIN_REQ_SERVE,     /* a whole valid request for |path| */
    ADMIN_REQ_REFUSE,    /* answer |status| with |why| as the body, then close */
} admin_req_status_t;

typedef struct {
    admin_path_t path; /* ADMIN_REQ_SERVE */
    int head;          /* the method is HEAD: no body in the answer (any status) */
    size_t head_len;   /* ADMIN_REQ_SERVE: bytes of request line, headers and blank line */
    unsigned status;   /* ADMIN_REQ_REFUSE: 400, 404, 405 or 431 */
    const char *why;   /* ADMIN_REQ_REFUSE: a static one-line text for the body */
    int host_is_name;  /* a Host header names something other than an IP literal or localhost */
} admin_request_t;

/* admin_parse_request reads the first |len| bytes a client sent (only the first
 * ADMIN_MAX_REQUEST are looked at) and says what to do. Stateless: call it again with all
 * the bytes received so far; once it returns SERVE or REFUSE for some bytes, it returns the
 * same for any longer input starting with them. Nothing is allocated. */
admin_req_status_t admin_parse_request(const uint8_t *data, size_t len, admin_request_t *out);

#endif
