#include "conn.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/mem.h>

#include "alloc.h"
#include "buf.h"
#include "forward.h"
#include "frame.h"
#include "identity.h"
#include "inspect.h"
#include "log.h"
#include "policy.h"
#include "reply.h"
#include "streams.h"
#include "tls.h"
#include "tlsbio.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Bytes read from a socket at a time. */
#define READ_CHUNK (64 * 1024)
/* A peer with this many bytes queued towards it stops the other side from being read until it
 * drains below half (backpressure in both directions). */
#define WRITE_HIGH_WATER (1024 * 1024)
/* Encrypted bytes accepted from the client before TLS has consumed them. */
#define TLS_IN_HIGH_WATER (2 * READ_CHUNK)
/* Ciphertext BoringSSL may write between two flushes: one read's worth of reply (READ_CHUNK
 * plus record overhead) and a refusal, with room to spare; more is a bug and closes. */
#define TLS_OUT_MAX (1024 * 1024)
/* How long a closing connection may take to flush what it owes each peer. */
#define LINGER_MS 5000
/* The largest reply frame the backend may announce; replies are streamed, not buffered. */
#define S2C_MAX_MESSAGE ((size_t)0x7fffffff + 0xffff)
/* The largest annotation block of a stream reply read for its STRM id (Pyro4's own limit). */
#define S2C_MAX_STREAM_ANNOTATIONS 0xffff

typedef enum {
    CONN_HANDSHAKE,       /* TLS handshake in progress */
    CONN_AWAIT_CONNECT,   /* verified client; its first message must be an allowed CONNECT */
    CONN_DIALING,         /* CONNECT allowed and held; connecting to the backend */
    CONN_AWAIT_CONNECTOK, /* CONNECT forwarded; waiting for CONNECTOK/CONNECTFAIL */
    CONN_READY,           /* INVOKE and PING flow */
    CONN_CLOSING,
} conn_state_t;

struct conn {
    conn_t *prev, *next; /* server's list */
    server_t *srv;
    listener_t *lst;
    uint64_t id;
    conn_state_t state;

    sock_t client; /* TCP, or a Unix socket for a client-mode listener */
    uv_tcp_t backend;
    uv_timer_t timer; /* handshake, dial, idle or linger deadline, per state */
    uv_connect_t connect_req;
    uv_shutdown_t client_shutdown;
    uv_shutdown_t backend_shutdown;
    int streams_open; /* client and (once created) backend handles not yet closed */
    int backend_created;
    int backend_connected;
    int client_reading;
    int backend_reading;
    int client_eof;

    /* The client side. Server mode: TLS, |net| the ciphertext both ways between the client
     * socket and BoringSSL (tlsbio.h). Client mode: |ssl| is NULL and |net| holds plaintext
     * the client sent that c2s has no room for yet. */
    SSL *ssl;
    BIO *net;
    /* The backend side in client mode: TLS to the upstream (NULL in server mode). */
    SSL *up_ssl;
    BIO *up_net;
    int up_handshake_done;
    streams_t streams; /* stream ids this connection received (PROTOCOL.md §6.2) */

    buf_t c2s;             /* decrypted client bytes not yet judged; capped at one message */
    size_t client_queued;  /* bytes in flight towards the client */
    size_t backend_queued; /* bytes in flight towards the backend */
    unsigned outstanding;  /* forwarded requests whose reply has not fully passed */
    uint16_t connect_seq;
    frame_proto_t proto; /* fixed by the first message; PROTO_NONE until it is parsed */

    /* Server-to-client framing: replies are passed through as they arrive, but every frame
     * boundary is known so that injected replies never split one (DESIGN.md property 3). */
    uint8_t s2c_hdr[FRAME_MAX_HEADER_LEN];
    size_t s2c_hdr_len;
    uint64_t s2c_left;
    /* The annotation block of an ITEMSTREAMRESULT reply, copied as it passes to read its STRM. */
    uint8_t *s2c_ann;
    size_t s2c_ann_len;
    size_t s2c_ann_need;
    int close_after_reply;

    uint64_t bytes_in;  /* plaintext from the client */
    uint64_t bytes_out; /* plaintext to the client */
    uint64_t started_ms;
    uint64_t started_ns; /* for the handshake duration histogram */
    uint64_t last_activity_ms;
    char peer[INET6_ADDRSTRLEN + 16];
    identity_t ident;    /* of the verified client certificate, once the handshake is done */
    int ident_ok;        /* the certificate's identity could be read faithfully */
    char ident_err[128]; /* why not */
    int rule;            /* the client's rule in the generation |rule_gen|, or POLICY_NO_RULE */
    uint64_t rule_gen;
    generation_t *gen;             /* accepted under: TLS context, listener, buffer sizes */
    const config_listener_t *lcfg; /* &gen->cfg.listeners[lst->index] */
    uint64_t max_message;          /* pyro.max_message_bytes of |gen| */
    int handshake_done;
    const char *close_reason;
};

typedef struct {
    uv_write_t req;
    conn_t *c;
    int to_backend;
    size_t len;
    uint8_t data[];
} wreq_t;

static void conn_pump(conn_t *c);
static void conn_process_c2s(conn_t *c);
static void conn_update_reading(conn_t *c);

/* ---- logging -------------------------------------------------------------------------- */

static void log_conn_fields(log_line_t *l, const conn_t *c)
{
    log_uint(l, "conn", c->id);
    log_str(l, "listener", c->lcfg->name);
    log_str(l, "peer", c->peer);
    if (c->proto != PROTO_NONE) /* from the first message on */
        log_str(l, "protocol", frame_proto_name(c->proto));
}

/* conn_parse parses the client message at the start of c2s: as the connection's protocol, or,
 * for the first message, as whichever protocol of pyro.protocols its version field names. */
static frame_status_t conn_parse(const conn_t *c, frame_t *f, frame_error_t *err)
{
    return frame_parse_as(buf_peek(&c->c2s), buf_len(&c->c2s), c->proto,
                          c->srv->cfg->pyro.protocols, c->max_message, f, err);
}

/* conn_rule returns the client's rule in the worker's current generation: a reload may have
 * changed the rules, and later requests are judged by the new ones (the identity is kept). */
static int conn_rule(conn_t *c)
{
    const server_t *srv = c->srv;
    if (c->rule_gen != srv->gen->id) {
        if (c->lcfg->mode == LISTENER_CLIENT) /* the listener's egress rule: no certificate */
            c->rule = srv->cfg->listeners[c->lst->index].egress_rule;
        else
            c->rule = c->ident_ok ? policy_match_client(srv->cfg, &c->ident) : POLICY_NO_RULE;
        c->rule_gen = srv->gen->id;
    }
    return c->rule;
}

static const char *conn_rule_name(conn_t *c)
{
    int rule = conn_rule(c);
    return rule == POLICY_NO_RULE ? NULL : c->srv->cfg->clients[rule].name;
}

/* log_client adds who the client is: its rule and the identity fields an operator searches. */
static void log_client(log_line_t *l, conn_t *c)
{
    const char *uris[8];
    size_t n_uris = 0;
    const char *rule = conn_rule_name(c);
    if (rule != NULL)
        log_str(l, "rule", rule);
    if (!c->ident_ok)
        return;
    log_str(l, "subject", c->ident.subject);
    for (size_t i = 0; i < c->ident.n_values && n_uris < 8; i++) {
        if (c->ident.field_of[i] == ID_URI)
            uris[n_uris++] = c->ident.values[i];
    }
    if (n_uris)
        log_strlist(l, "uri", uris, n_uris);
    const char *serial = identity_first(&c->ident, ID_SERIAL);
    if (serial != NULL)
        log_str(l, "serial", serial);
}

#define LOG_MAX_NAMES 32

/* log_call_names adds the object id, the method as sent and every name the daemon would
 * resolve, in its order (batch methods, the property) — never argument values. */
static void log_call_names(log_line_t *l, const inspect_t *in)
{
    char rendered[LOG_MAX_NAMES][128];
    const char *names[LOG_MAX_NAMES];
    if (in == NULL || !in->decoded)
        return;
    const call_t *call = &in->call;
    if (call->object != NULL && call->object->type == VAL_STR)
        log_strn(l, "object", call->object->u.str.data, call->object->u.str.len);
    if (call->method != NULL && call->method->type == VAL_STR)
        log_strn(l, "method", call->method->u.str.data, call->method->u.str.len);
    if (call->property)
        log_str(l, "property", call->property == 'g' ? "get" : "set");
    size_t n = call->n_names < LOG_MAX_NAMES ? call->n_names : LOG_MAX_NAMES;
    for (size_t i = 0; i < n; i++) {
        call_render_str(call->names[i].name, rendered[i], sizeof(rendered[i]));
        names[i] = rendered[i];
    }
    if (call->n_names) {
        log_strlist(l, "names", names, n);
        if (call->n_names > n)
            log_uint(l, "names_total", call->n_names);
    }
}

/* log_decision writes one line about a judged client message: "refused" (warn) or "allowed"
 * (info). Every refusal is written, whatever log.calls says (DESIGN.md property 6: a line for
 * each refusal); allowed calls only under log.calls: all. |entry| names the policy entry that
 * decided, when one did. */
static void log_decision(conn_t *c, int allowed, const char *reason, const char *detail,
                         const frame_t *f, const char *action, const inspect_t *in,
                         const char *entry)
{
    /* Every judged message is counted once, logged or not (an allowed CONNECT is judged for
     * the record when it is forwarded: a backend that cannot be reached makes it refused). */
    if (f != NULL && (f->type == MSG_CONNECT || f->type == MSG_INVOKE)) {
        metrics_request(c->srv->metrics, allowed, reason, conn_rule_name(c));
        metrics_request_protocol(c->srv->metrics, frame_proto_name(c->proto), allowed);
    }
    if (allowed && c->srv->cfg->log.calls != LOG_CALLS_ALL)
        return;
    log_line_t l;
    log_begin(&l, allowed ? LOG_INFO : LOG_WARN, allowed ? "allowed" : "refused");
    log_conn_fields(&l, c);
    log_client(&l, c);
    log_str(&l, "verdict", allowed ? "allowed" : "refused");
    log_str(&l, "reason", reason);
    if (detail != NULL && detail[0] != '\0')
        log_str(&l, "detail", detail);
    if (f != NULL) {
        const char *ser = frame_serializer_name(f->serializer_id);
        log_str(&l, "msg_type", frame_type_name(f->type));
        log_uint(&l, "seq", f->seq);
        if (ser != NULL)
            log_str(&l, "serializer", ser);
        else
            log_uint(&l, "serializer", f->serializer_id);
        log_uint(&l, "flags", f->flags);
    }
    log_call_names(&l, in);
    if (entry != NULL && entry[0] != '\0')
        log_str(&l, "entry", entry);
    log_str(&l, "action", action);
    log_end(&l);
}

static void log_refused(conn_t *c, const char *reason, const char *detail, const frame_t *f,
                        const char *action)
{
    log_decision(c, 0, reason, detail, f, action, NULL, NULL);
}

/* conn_identify reads the verified certificate's identity and finds the client's rule; the
 * verdict waits for the CONNECT, where it can be told in Pyro's terms. */
static void conn_identify(conn_t *c)
{
    X509 *cert = SSL_get_peer_certificate(c->ssl);
    c->rule = POLICY_NO_RULE;
    c->rule_gen = c->srv->gen->id;
    if (cert == NULL) {
        snprintf(c->ident_err, sizeof(c->ident_err), "no client certificate");
        return;
    }
    c->ident_ok = identity_from_x509(cert, &c->ident, c->ident_err, sizeof(c->ident_err));
    X509_free(cert);
    if (c->ident_ok)
        c->rule = policy_match_client(c->srv->cfg, &c->ident);
}

static void log_conn_open(conn_t *c)
{
    static const struct {
        identity_field_t field;
        const char *prefix;
    } kSans[] = {{ID_DNS, "DNS:"}, {ID_URI, "URI:"}, {ID_IP, "IP:"}, {ID_EMAIL, "email:"}};
    char text[16][160];
    const char *sans[16];
    size_t n_sans = 0;
    log_line_t l;

    log_begin(&l, LOG_INFO, "conn_open");
    log_conn_fields(&l, c);
    log_uint(&l, "worker", c->srv->index);
    log_uint(&l, "generation", c->gen->id);
    if (c->ssl == NULL) {
        /* Client mode: a local plaintext client; who it may call is the egress rule. */
        log_str(&l, "mode", "client");
        log_str(&l, "upstream", c->lcfg->upstream.text);
        log_str(&l, "rule", conn_rule_name(c));
        log_end(&l);
        return;
    }
    log_str(&l, "tls_version", SSL_get_version(c->ssl));
    log_str(&l, "cipher", SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl)));
    log_bool(&l, "resumed", SSL_session_reused(c->ssl));
    if (c->ident_ok) {
        log_str(&l, "subject", c->ident.subject);
        log_str(&l, "issuer", c->ident.issuer);
        for (size_t k = 0; k < sizeof(kSans) / sizeof(kSans[0]); k++) {
            for (size_t i = 0; i < c->ident.n_values && n_sans < 16; i++) {
                if (c->ident.field_of[i] != kSans[k].field)
                    continue;
                snprintf(text[n_sans], sizeof(text[n_sans]), "%s%s", kSans[k].prefix,
                         c->ident.values[i]);
                sans[n_sans] = text[n_sans];
                n_sans++;
            }
        }
        log_strlist(&l, "sans", sans, n_sans);
        log_str(&l, "serial", identity_first(&c->ident, ID_SERIAL));
        log_str(&l, "sha256", identity_first(&c->ident, ID_SHA256));
    } else {
        log_str(&l, "identity_error", c->ident_err);
    }
    const char *rule = conn_rule_name(c);
    if (rule != NULL)
        log_str(&l, "rule", rule);
    else
        log_bool(&l, "rule_matched", 0);
    log_end(&l);
}

/* ---- closing -------------------------------------------------------------------------- */

static void on_timer_closed(uv_handle_t *h)
{
    conn_t *c = container_of(h, conn_t, timer);
    server_t *srv = c->srv;

    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->n_conns--;
    __atomic_sub_fetch(srv->open_total, 1, __ATOMIC_RELAXED);
    metrics_conn_freed(srv->metrics);
    if (c->ssl != NULL)
        SSL_free(c->ssl); /* frees the BIO */
    else
        BIO_free(c->net);
    SSL_free(c->up_ssl); /* and its BIO */
    streams_free(&c->streams);
    free(c->s2c_ann);
    buf_cleanup(&c->c2s);
    identity_free(&c->ident);
    generation_unref(c->gen);
    free(c);
    server_conn_gone(srv);
}

static void on_stream_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->streams_open == 0)
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void close_stream(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, on_stream_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    close_stream((uv_handle_t *)req->handle);
}

/* close_stream_gracefully lets queued whole messages (and a TLS alert or close_notify) reach
 * the peer before the handle closes; the linger timer bounds the wait. */
static void close_stream_gracefully(uv_stream_t *s, uv_shutdown_t *req, size_t queued)
{
    if (queued == 0 || uv_shutdown(req, s, on_shutdown) != 0)
        close_stream((uv_handle_t *)s);
}

static void on_linger_timeout(uv_timer_t *t)
{
    conn_t *c = container_of(t, conn_t, timer);
    close_stream((uv_handle_t *)&c->client);
    if (c->backend_created)
        close_stream((uv_handle_t *)&c->backend);
}

static void conn_flush_tls(conn_t *c);
static int conn_flush_upstream(conn_t *c);

/* conn_handshake_peer_closed ends a handshake the client walked away from: it closed or reset
 * the connection, or writing our flight to it failed. Counted as a TLS failure (peer_closed),
 * not as a socket error: no session was ever established. */
static void conn_handshake_peer_closed(conn_t *c, const char *detail)
{
    log_line_t l;
    log_begin(&l, LOG_INFO, "tls_fail");
    log_conn_fields(&l, c);
    log_str(&l, "reason", "peer_closed");
    log_str(&l, "detail", detail);
    log_end(&l);
    metrics_tls_failed(c->srv->metrics, "peer_closed");
    conn_close(c, "peer_closed");
}

void conn_close(conn_t *c, const char *reason)
{
    log_line_t l;

    if (c->state == CONN_CLOSING)
        return;
    /* "protocol_version" names a TLS version refusal during the handshake and a Pyro one
     * after it: the outcome tells them apart. */
    metrics_conn_closed(c->srv->metrics,
                        c->state == CONN_HANDSHAKE && strcmp(reason, "protocol_version") == 0
                            ? "tls_fail"
                            : reason);
    c->state = CONN_CLOSING;
    c->close_reason = reason;
    log_begin(&l, LOG_INFO, "conn_close");
    log_conn_fields(&l, c);
    log_str(&l, "reason", reason);
    log_uint(&l, "bytes_in", c->bytes_in);
    log_uint(&l, "bytes_out", c->bytes_out);
    log_uint(&l, "duration_ms", uv_now(c->srv->loop) - c->started_ms);
    log_end(&l);

    if (c->client_reading)
        uv_read_stop((uv_stream_t *)&c->client);
    if (c->backend_reading)
        uv_read_stop((uv_stream_t *)&c->backend);
    c->client_reading = c->backend_reading = 0;

    if (c->ssl != NULL) {
        /* Say goodbye properly once the handshake is done; BoringSSL queues close_notify. */
        if (SSL_is_init_finished(c->ssl))
            SSL_shutdown(c->ssl);
        conn_flush_tls(c);
    }

    if (c->up_ssl != NULL && c->backend_connected) {
        if (SSL_is_init_finished(c->up_ssl))
            SSL_shutdown(c->up_ssl);
        conn_flush_upstream(c);
    }

    uv_timer_stop(&c->timer);
    uv_timer_start(&c->timer, on_linger_timeout, LINGER_MS, 0);
    close_stream_gracefully((uv_stream_t *)&c->client, &c->client_shutdown, c->client_queued);
    if (c->backend_created) {
        if (c->backend_connected)
            close_stream_gracefully((uv_stream_t *)&c->backend, &c->backend_shutdown,
                                    c->backend_queued);
        else
            close_stream((uv_handle_t *)&c->backend); /* cancels a pending connect */
    }
}

/* ---- writing -------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    wreq_t *w = container_of(req, wreq_t, req);
    conn_t *c = w->c;
    if (w->to_backend)
        c->backend_queued -= w->len;
    else
        c->client_queued -= w->len;
    int to_backend = w->to_backend;
    free(w);
    if (c->state == CONN_CLOSING)
        return;
    if (status < 0) {
        conn_close(c, to_backend ? "backend_write_error" : "client_write_error");
        return;
    }
    conn_update_reading(c);
}

/* conn_write sends |n| bytes towards one side: as much as the socket takes now, written
 * directly (uv_try_write: no request, no copy, no change of the poll set — the common case, one
 * write(2) per message), and a copy of the rest queued behind it (uv_write). uv_try_write
 * refuses while anything is queued, so the order of bytes is kept. Returns 0 if the socket has
 * failed (the caller closes the connection) or memory is exhausted. */
static int conn_write(conn_t *c, int to_backend, const uint8_t *p, size_t n)
{
    if (n == 0)
        return 1;
    if (n > UINT32_MAX)
        return 0; /* never: buffers are capped far below */
    uv_stream_t *s = to_backend ? (uv_stream_t *)&c->backend : (uv_stream_t *)&c->client;
    size_t whole = n;
    uv_buf_t now = uv_buf_init((char *)(uintptr_t)p, (unsigned)n);
    int sent = uv_try_write(s, &now, 1);
    if (sent == (int)n) {
        if (to_backend)
            metrics_bytes(c->srv->metrics, whole, 0); /* forwarded: allowed messages only */
        return 1;
    }
    if (sent < 0 && sent != UV_EAGAIN)
        return 0;
    if (sent > 0) {
        p += sent;
        n -= (size_t)sent;
    }
    wreq_t *w = pg_malloc(sizeof(*w) + n);
    if (w == NULL)
        return 0;
    w->c = c;
    w->to_backend = to_backend;
    w->len = n;
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
    if (uv_write(&w->req, s, &b, 1, on_write) != 0) {
        free(w);
        return 0;
    }
    if (to_backend) {
        c->backend_queued += n;
        metrics_bytes(c->srv->metrics, whole, 0);
    } else {
        c->client_queued += n;
    }
    return 1;
}

/* conn_flush_tls sends whatever BoringSSL has written (records, alerts) to the client. With no
 * message in progress either way, the ciphertext buffers are freed (an idle connection keeps
 * none); while one streams through they are reused, so a large message costs no allocation per
 * read. */
static void conn_flush_tls(conn_t *c)
{
    size_t len;
    const uint8_t *data = tlsbio_out(c->net, &len);
    int ok = len == 0 || conn_write(c, 0, data, len);
    tlsbio_out_clear(c->net);
    if (c->s2c_left == 0 && c->s2c_hdr_len == 0 && buf_len(&c->c2s) == 0)
        tlsbio_trim(c->net);
    if (ok || c->state == CONN_CLOSING)
        return;
    if (c->state == CONN_HANDSHAKE)
        conn_handshake_peer_closed(c, "writing the handshake to the client failed");
    else
        conn_close(c, "client_write_error");
}

/* ssl_write_all encrypts |n| bytes into |ssl|'s BIO. A memory BIO never blocks, so SSL_write
 * takes everything at once. */
static int ssl_write_all(SSL *ssl, const uint8_t *p, size_t n)
{
    while (n > 0) {
        int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
        int r = SSL_write(ssl, p, chunk);
        if (r <= 0) {
            ERR_clear_error();
            return 0;
        }
        p += r;
        n -= (size_t)r;
    }
    return 1;
}

/* conn_send_plain sends |n| plaintext bytes to the client: encrypted in server mode, as they
 * are to a client-mode listener's local client. */
static int conn_send_plain(conn_t *c, const uint8_t *p, size_t n)
{
    int ok = c->ssl != NULL ? ssl_write_all(c->ssl, p, n) : conn_write(c, 0, p, n);
    if (ok)
        c->bytes_out += n;
    return ok;
}

/* conn_send_built encrypts a message pyroguard built itself (a refusal). */
static int conn_send_built(conn_t *c, CBB *cbb)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int ok = CBB_finish(cbb, &data, &len) && conn_send_plain(c, data, len);
    OPENSSL_free(data);
    return ok;
}

/* conn_flush_upstream sends what BoringSSL wrote towards the upstream (client mode). */
static int conn_flush_upstream(conn_t *c)
{
    size_t len;
    const uint8_t *data = tlsbio_out(c->up_net, &len);
    int ok = len == 0 || conn_write(c, 1, data, len);
    tlsbio_out_clear(c->up_net);
    if (c->s2c_left == 0 && c->s2c_hdr_len == 0 && c->outstanding == 0)
        tlsbio_trim(c->up_net);
    return ok;
}

/* conn_to_backend sends a judged message to the backend: as it is to a plaintext daemon, or
 * encrypted for the upstream in client mode. Returns 0 if the socket failed or memory ran out. */
static int conn_to_backend(conn_t *c, const uint8_t *p, size_t n)
{
    if (c->up_ssl == NULL)
        return conn_write(c, 1, p, n);
    return ssl_write_all(c->up_ssl, p, n) && conn_flush_upstream(c);
}

/* ---- flow control --------------------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    /* Each read is consumed before the callback returns, so one buffer per loop thread is
     * enough and idle connections cost no read buffer at all. */
    static _Thread_local char scratch[READ_CHUNK];
    *out = uv_buf_init(scratch, sizeof(scratch));
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);
static void on_backend_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

/* conn_update_reading starts or stops reading each side: the client while c2s has room and
 * neither peer has WRITE_HIGH_WATER bytes queued, the backend while the client has not; a
 * stopped side resumes only below half the mark, so a slow peer does not cause flapping. */
static void conn_update_reading(conn_t *c)
{
    if (c->state == CONN_CLOSING)
        return;
    int want_client = !c->client_eof && buf_room(&c->c2s) > 0 &&
                      tlsbio_in_pending(c->net) < TLS_IN_HIGH_WATER &&
                      c->backend_queued < WRITE_HIGH_WATER && c->client_queued < WRITE_HIGH_WATER;
    if (c->client_reading && !want_client) {
        uv_read_stop((uv_stream_t *)&c->client);
        c->client_reading = 0;
    } else if (!c->client_reading && want_client && c->backend_queued < WRITE_HIGH_WATER / 2) {
        if (uv_read_start((uv_stream_t *)&c->client, alloc_cb, on_client_read) == 0)
            c->client_reading = 1;
    }
    if (!c->backend_connected)
        return;
    int want_backend = c->client_queued < WRITE_HIGH_WATER;
    if (c->backend_reading && !want_backend) {
        uv_read_stop((uv_stream_t *)&c->backend);
        c->backend_reading = 0;
    } else if (!c->backend_reading && want_backend && c->client_queued < WRITE_HIGH_WATER / 2) {
        if (uv_read_start((uv_stream_t *)&c->backend, alloc_cb, on_backend_read) == 0)
            c->backend_reading = 1;
    }
}

/* ---- timers --------------------------------------------------------------------------- */

static void on_deadline(uv_timer_t *t);

static void arm_timer(conn_t *c, uint64_t ms)
{
    uv_timer_start(&c->timer, on_deadline, ms, 0);
}

static void refuse_connect(conn_t *c, const char *reason, const char *detail, const frame_t *f);
static void upstream_refused(conn_t *c, const char *reason, const char *detail);

static void on_deadline(uv_timer_t *t)
{
    conn_t *c = container_of(t, conn_t, timer);
    const config_t *cfg = c->srv->cfg;
    uint64_t now = uv_now(c->srv->loop);

    switch (c->state) {
    case CONN_HANDSHAKE: {
        log_line_t l;
        log_begin(&l, LOG_WARN, "tls_fail");
        log_conn_fields(&l, c);
        log_str(&l, "reason", "handshake_timeout");
        log_str(&l, "detail", "no complete TLS handshake within limits.handshake_timeout");
        log_end(&l);
        metrics_tls_failed(c->srv->metrics, "handshake_timeout");
        conn_close(c, "handshake_timeout");
        return;
    }
    case CONN_DIALING:
        if (c->up_ssl != NULL) {
            upstream_refused(c, "handshake_timeout",
                             "no complete TLS handshake with the upstream within "
                             "limits.backend_connect_timeout");
            return;
        }
        metrics_backend_dial_failed(c->srv->metrics);
        refuse_connect(c, "backend_unavailable", "pyroguard: backend unavailable", NULL);
        return;
    case CONN_AWAIT_CONNECT:
    case CONN_AWAIT_CONNECTOK:
    case CONN_READY: {
        /* Idle means nothing moved and no call is waiting for its reply: a long-running call
         * is never cut by the idle timeout. */
        uint64_t idle = now - c->last_activity_ms;
        if (c->outstanding == 0 && idle >= cfg->limits.idle_timeout_ms) {
            conn_close(c, "idle_timeout");
            return;
        }
        uint64_t wait =
            c->outstanding ? cfg->limits.idle_timeout_ms : cfg->limits.idle_timeout_ms - idle;
        arm_timer(c, wait);
        return;
    }
    case CONN_CLOSING:
        return;
    }
}

/* ---- refusals ------------------------------------------------------------------------- */

/* corr_of returns the correlation id a reply to |f| echoes: a Pyro5 request's, when it set one
 * (PROTOCOL.md §3.2), else none. */
static const uint8_t *corr_of(const frame_t *f)
{
    return f != NULL && (f->flags & FLAG_CORR_ID) ? f->corr_id : NULL;
}

/* refuse_connect answers a refused or unserviceable CONNECT with a CONNECTFAIL in Pyro's own
 * terms and closes (the daemon closes after CONNECTFAIL too, PROTOCOL.md §1). */
static void refuse_connect_call(conn_t *c, const char *reason, const char *detail, const frame_t *f,
                                const inspect_t *in, const char *entry)
{
    CBB cbb;
    frame_t held;
    frame_error_t err;
    /* While dialling, the allowed CONNECT is still held whole in c2s: log its header. */
    if (f == NULL && c->state == CONN_DIALING && conn_parse(c, &held, &err) == FRAME_OK)
        f = &held;
    log_decision(c, 0, reason, detail, f, "connectfail", in, entry);
    if (CBB_init(&cbb, 128)) {
        if (reply_connectfail(&cbb, c->proto, f ? f->seq : c->connect_seq, corr_of(f), detail))
            conn_send_built(c, &cbb);
        CBB_cleanup(&cbb);
    }
    conn_close(c, reason);
}

static void refuse_connect(conn_t *c, const char *reason, const char *detail, const frame_t *f)
{
    refuse_connect_call(c, reason, detail, f, NULL, NULL);
}

/* refuse_close handles input that cannot be answered in Pyro's terms (broken framing after the
 * handshake, a second CONNECT): Pyro itself drops such connections without a reply (PROTOCOL.md
 * §1). */
static void refuse_close(conn_t *c, const char *reason, const char *detail, const frame_t *f)
{
    log_refused(c, reason, detail, f, "closed");
    conn_close(c, reason);
}

/* refuse_handshake_framing answers a first message that cannot be framed. The Pyro daemons
 * answer a broken handshake with CONNECTFAIL (marshal, seq 0) and close — Pyro4 4.82 and Pyro5
 * catch every error of it (fake_pyro5_daemon.py says where this was read and seen) — so a client
 * of a known protocol is told why in its own framing: a Pyro5 client at a listener that lists
 * only 4 reads "Pyro protocol version 502 (pyro5) is not accepted here" instead of a bare close.
 * Bytes that name no protocol pyroguard can frame (not Pyro, an unknown version) are closed. */
static void refuse_handshake_framing(conn_t *c, const char *reason, const char *detail,
                                     const frame_t *f)
{
    frame_proto_t proto = PROTO_NONE;
    if (buf_len(&c->c2s) >= 6 && memcmp(buf_peek(&c->c2s), "PYRO", 4) == 0) {
        const uint8_t *p = buf_peek(&c->c2s);
        proto = frame_proto_of_version((uint16_t)((p[4] << 8) | p[5]));
    }
    CBB cbb;
    if (proto == PROTO_NONE || !CBB_init(&cbb, 256)) {
        refuse_close(c, reason, detail, f);
        return;
    }
    if (reply_connectfail(&cbb, proto, 0, NULL, detail)) {
        log_refused(c, reason, detail, f, "connectfail");
        conn_send_built(c, &cbb);
    } else {
        log_refused(c, reason, detail, f, "closed");
    }
    CBB_cleanup(&cbb);
    conn_close(c, reason);
}

/* refuse_invoke answers a refused INVOKE with a SecurityError in the request's serializer and
 * the same seq, or drops a refused ONEWAY call (Pyro never answers those). */
static void refuse_invoke(conn_t *c, const frame_t *f, const char *reason, const char *detail,
                          const inspect_t *in, const char *entry)
{
    CBB cbb;
    if (f->type == MSG_INVOKE && (f->flags & FLAG4_ONEWAY)) {
        /* An answer would desynchronise the client. */
        log_decision(c, 0, reason, detail, f, "dropped_oneway", in, entry);
        return;
    }
    if (!CBB_init(&cbb, 256)) {
        refuse_close(c, reason, detail, f);
        return;
    }
    if (!reply_security_error(&cbb, c->proto, f->seq, f->serializer_id, corr_of(f), detail)) {
        /* No serializer to answer in: the daemon would drop the connection as well. */
        CBB_cleanup(&cbb);
        log_decision(c, 0, reason, detail, f, "closed", in, entry);
        conn_close(c, reason);
        return;
    }
    log_decision(c, 0, reason, detail, f, "exception_reply", in, entry);
    if (!conn_send_built(c, &cbb)) {
        CBB_cleanup(&cbb);
        conn_close(c, "internal_error");
        return;
    }
    CBB_cleanup(&cbb);
}

/* policy_judge applies the client's rule to a call inspection has allowed. Returns 1 when
 * allowed (the caller logs it once the message is on its way); 0 with |d| and |entry| filled
 * otherwise. */
static int policy_judge(conn_t *c, const frame_t *f, const inspect_t *in, policy_decision_t *d,
                        char *entry, size_t entry_len)
{
    const config_t *cfg = c->srv->cfg;
    int rule = conn_rule(c);
    int ok = policy_decide(cfg, rule, &in->call,
                           f->type == MSG_CONNECT && (f->flags & FLAG4_META_ON_CONNECT), d);
    policy_entry_text(cfg, rule, d, entry, entry_len);
    return ok;
}

/* ---- backend -------------------------------------------------------------------------- */

static const char kHmacNotRewritable[] =
    "pyroguard: this listener forwards the caller's identity (forward_identity) and cannot add "
    "it to an HMAC-signed message; turn off the HMAC key (TLS already authenticates) or "
    "forward_identity";

/* conn_forward sends an allowed CONNECT or INVOKE (whole, at the start of c2s) on to the
 * backend: as it came, or, on a listener with forward_identity, with the caller's verified
 * identity added (forward.h). Returns 1 when sent; 0 when it was refused or the connection
 * closed (the caller stops). */
static int conn_forward(conn_t *c, const frame_t *f, const inspect_t *in)
{
    enum { FORWARD_UNENCODABLE = FORWARD_NOMEM + 1 };
    if (!c->lcfg->forward_identity || (f->type != MSG_CONNECT && f->type != MSG_INVOKE)) {
        if (conn_to_backend(c, buf_peek(&c->c2s), f->total_len))
            return 1;
        conn_close(c, "backend_write_error");
        return 0;
    }
    CBB json, out;
    uint8_t *json_data = NULL, *data = NULL;
    size_t json_len = 0, len = 0;
    int st = FORWARD_NOMEM;
    int sent = 0;
    if (!CBB_init(&json, 256))
        goto done;
    if (!forward_identity_json(&json, &c->ident, c->lcfg->name, conn_rule_name(c)) ||
        !CBB_finish(&json, &json_data, &json_len)) {
        /* A name that is not valid UTF-8 (identity.h lets raw bytes through in SANs) would
         * break the daemon's JSON decoding, and escaping it would name someone else. */
        CBB_cleanup(&json);
        st = FORWARD_UNENCODABLE;
        goto done;
    }
    if (!CBB_init(&out, f->total_len + json_len + 16))
        goto free_json;
    st = forward_rewrite(&out, f, json_data, json_len);
    if (st == FORWARD_OK && CBB_finish(&out, &data, &len))
        sent = conn_to_backend(c, data, len);
    CBB_cleanup(&out);
    OPENSSL_free(data);
free_json:
    OPENSSL_free(json_data);
done:
    if (sent)
        return 1;
    if (st == FORWARD_HMAC || st == FORWARD_TOO_LARGE || st == FORWARD_UNENCODABLE) {
        const char *reason = st == FORWARD_HMAC        ? "hmac_not_rewritable"
                             : st == FORWARD_TOO_LARGE ? "identity_too_large"
                                                       : "identity_invalid";
        const char *detail =
            st == FORWARD_HMAC ? kHmacNotRewritable
            : st == FORWARD_TOO_LARGE
                ? "pyroguard: the caller's identity does not fit in this message's annotations"
                : "pyroguard: the client certificate's identity cannot be forwarded: a name in "
                  "it is not valid UTF-8";
        if (f->type == MSG_CONNECT) {
            refuse_connect_call(c, reason, detail, f, in, NULL);
        } else {
            refuse_invoke(c, f, reason, detail, in, NULL);
            buf_consume(&c->c2s, f->total_len);
        }
        return 0;
    }
    conn_close(c, st == FORWARD_OK ? "backend_write_error" : "out_of_memory");
    return 0;
}

/* conn_forward_connect forwards the CONNECT held in c2s while the backend was dialled (and, in
 * client mode, while TLS to the upstream was set up). It is judged again first: a reload may
 * have changed the policy meanwhile; that one decision is logged. */
static void conn_forward_connect(conn_t *c)
{
    frame_t f;
    frame_error_t err;
    if (conn_parse(c, &f, &err) != FRAME_OK) {
        conn_close(c, "internal_error");
        return;
    }
    inspect_t *in = &c->srv->inspect;
    policy_decision_t d;
    char entry[64];
    if (inspect_request(c->srv->cfg, &f, in) != INSPECT_ALLOW) {
        refuse_connect_call(c, in->reason, in->detail, &f, in, NULL);
        return;
    }
    if (!policy_judge(c, &f, in, &d, entry, sizeof(entry))) {
        refuse_connect_call(c, d.reason, d.detail, &f, in, entry);
        return;
    }
    if (!conn_forward(c, &f, in))
        return;
    log_decision(c, 1, "allowed", NULL, &f, "forwarded", in, entry); /* counted once, as sent */
    buf_consume(&c->c2s, f.total_len);
    c->outstanding = 1;
    c->state = CONN_AWAIT_CONNECTOK;
    c->last_activity_ms = uv_now(c->srv->loop);
    arm_timer(c, c->srv->cfg->limits.idle_timeout_ms);
    conn_update_reading(c);
}

/* upstream_refused answers the held CONNECT when TLS to the upstream failed (client mode). */
static void upstream_refused(conn_t *c, const char *reason, const char *detail)
{
    char text[320];
    log_line_t l;
    log_begin(&l, LOG_WARN, "upstream_tls_fail");
    log_conn_fields(&l, c);
    log_str(&l, "upstream", c->lcfg->upstream.text);
    log_str(&l, "reason", reason);
    log_str(&l, "detail", detail);
    log_end(&l);
    metrics_backend_dial_failed(c->srv->metrics);
    snprintf(text, sizeof(text), "pyroguard: upstream TLS handshake failed: %s", detail);
    refuse_connect(c, "upstream_tls_failed", text, NULL);
}

/* upstream_handshake advances the client-mode handshake with the upstream; once it is done
 * and the upstream's certificate names the server expected, the held CONNECT goes. */
static void upstream_handshake(conn_t *c)
{
    char detail[256], subject[256];
    int r = SSL_do_handshake(c->up_ssl);
    if (!conn_flush_upstream(c)) {
        upstream_refused(c, "write_failed", "cannot write to the upstream");
        return;
    }
    if (r != 1) {
        if (SSL_get_error(c->up_ssl, r) == SSL_ERROR_WANT_READ)
            return;
        const char *reason = tls_upstream_failure(c->up_ssl, detail, sizeof(detail));
        upstream_refused(c, reason, detail);
        return;
    }
    if (!tls_upstream_check(c->up_ssl, c->lcfg, subject, sizeof(subject), detail, sizeof(detail))) {
        upstream_refused(c, "name_mismatch", detail);
        return;
    }
    c->up_handshake_done = 1;
    log_line_t l;
    log_begin(&l, LOG_INFO, "upstream_open");
    log_conn_fields(&l, c);
    log_str(&l, "upstream", c->lcfg->upstream.text);
    log_str(&l, "tls_version", SSL_get_version(c->up_ssl));
    log_str(&l, "cipher", SSL_CIPHER_get_name(SSL_get_current_cipher(c->up_ssl)));
    log_bool(&l, "resumed", SSL_session_reused(c->up_ssl));
    log_str(&l, "subject", subject);
    log_end(&l);
    conn_forward_connect(c);
}

/* upstream_start begins TLS to the upstream once TCP is connected (client mode). */
static void upstream_start(conn_t *c)
{
    c->up_ssl = SSL_new(c->gen->upstream_ctx[c->lst->index]);
    c->up_net = tlsbio_new(TLS_IN_HIGH_WATER + READ_CHUNK, TLS_OUT_MAX);
    if (c->up_ssl == NULL || c->up_net == NULL) {
        SSL_free(c->up_ssl);
        c->up_ssl = NULL;
        BIO_free(c->up_net);
        c->up_net = NULL;
        conn_close(c, "out_of_memory");
        return;
    }
    SSL_set_bio(c->up_ssl, c->up_net, c->up_net); /* the SSL now owns it */
    if (!tls_upstream_setup(c->up_ssl, c->lcfg)) {
        conn_close(c, "out_of_memory");
        return;
    }
    conn_update_reading(c);
    upstream_handshake(c);
}

static void on_backend_connect(uv_connect_t *req, int status)
{
    conn_t *c = req->data;

    if (c->state != CONN_DIALING)
        return; /* closing: the connect was cancelled */
    if (status < 0) {
        int client_mode = c->lcfg->mode == LISTENER_CLIENT;
        log_line_t l;
        log_begin(&l, LOG_ERROR, "backend_fail");
        log_conn_fields(&l, c);
        log_str(&l, client_mode ? "upstream" : "backend",
                client_mode ? c->lcfg->upstream.text : c->lcfg->backend.text);
        log_str(&l, "detail", uv_strerror(status));
        log_end(&l);
        metrics_backend_dial_failed(c->srv->metrics);
        refuse_connect(c, "backend_unavailable", "pyroguard: backend unavailable", NULL);
        return;
    }
    c->backend_connected = 1;
    uv_tcp_nodelay(&c->backend, 1);
    if (c->lcfg->mode == LISTENER_CLIENT)
        upstream_start(c);
    else
        conn_forward_connect(c);
}

static void conn_dial(conn_t *c)
{
    server_t *srv = c->srv;
    int r = uv_tcp_init(srv->loop, &c->backend);
    if (r != 0) {
        refuse_connect(c, "backend_unavailable", "pyroguard: backend unavailable", NULL);
        return;
    }
    c->backend.data = c;
    c->backend_created = 1;
    c->streams_open++;
    c->state = CONN_DIALING;
    c->connect_req.data = c;
    const config_addr_t *to =
        c->lcfg->mode == LISTENER_CLIENT ? &c->lcfg->upstream : &c->lcfg->backend;
    r = uv_tcp_connect(&c->connect_req, &c->backend, (const struct sockaddr *)&to->addr,
                       on_backend_connect);
    if (r != 0) {
        metrics_backend_dial_failed(srv->metrics);
        refuse_connect(c, "backend_unavailable", "pyroguard: backend unavailable", NULL);
        return;
    }
    arm_timer(c, srv->cfg->limits.backend_connect_timeout_ms);
}

static void backend_protocol_error(conn_t *c, const char *detail)
{
    log_line_t l;
    log_begin(&l, LOG_ERROR, "backend_protocol_error");
    log_conn_fields(&l, c);
    log_str(&l, "detail", detail);
    log_end(&l);
    conn_close(c, "backend_protocol_error");
}

/* s2c_frame_done runs when a whole reply has been passed to the client. */
static void s2c_frame_done(conn_t *c)
{
    c->outstanding--;
    if (c->close_after_reply) {
        conn_close(c, "backend_connectfail");
        return;
    }
    if (c->outstanding == 0) {
        if (c->client_eof && buf_len(&c->c2s) == 0) {
            conn_close(c, "client_closed");
            return;
        }
        if (c->srv->draining) {
            /* The call in flight has its answer; nothing new starts while draining. */
            conn_close(c, "shutdown");
            return;
        }
        conn_process_c2s(c); /* requests the client sent meanwhile */
    }
}

/* s2c_header checks one reply header against the connection state; NULL when it may pass, or
 * why not (the caller logs it and closes). */
static const char *s2c_header(conn_t *c)
{
    frame_t f;
    frame_error_t err;
    /* Replies come only after the CONNECT, so the protocol is known: the daemon speaks it. */
    if (frame_parse_header_as(c->s2c_hdr, frame_header_len(c->proto), c->proto, 0, S2C_MAX_MESSAGE,
                              &f, &err) != FRAME_OK)
        return frame_error_reason(err);
    if (c->outstanding == 0)
        return "reply without a request";
    if (c->state == CONN_AWAIT_CONNECTOK) {
        if (f.type == MSG_CONNECTOK)
            c->state = CONN_READY;
        else if (f.type == MSG_CONNECTFAIL)
            c->close_after_reply = 1;
        else
            return "expected CONNECTOK or CONNECTFAIL";
    } else if (f.type != MSG_RESULT && f.type != MSG_PING) {
        return "expected RESULT or PING";
    }
    c->s2c_left = f.total_len - f.header_len;
    /* A stream's id comes in the STRM annotation of its ITEMSTREAMRESULT reply: the block is
     * copied as it passes and the id recorded for this connection (PROTOCOL.md §6.2). A block
     * too large to copy is not read: that stream cannot be pulled through pyroguard. */
    c->s2c_ann_len = c->s2c_ann_need = 0;
    if (f.type == MSG_RESULT && (f.flags & FLAG4_ITEMSTREAMRESULT) && f.ann_len > 0 &&
        f.ann_len <= S2C_MAX_STREAM_ANNOTATIONS) {
        free(c->s2c_ann);
        c->s2c_ann = pg_malloc(f.ann_len);
        if (c->s2c_ann != NULL)
            c->s2c_ann_need = f.ann_len;
    }
    return NULL;
}

/* s2c_observe_annotations copies the part of |take| reply body bytes at |p| that belongs to a
 * stream reply's annotation block (which comes first in the body) and, once it is whole,
 * records the stream id for this connection. */
static void s2c_observe_annotations(conn_t *c, const uint8_t *p, size_t take)
{
    size_t want = c->s2c_ann_need - c->s2c_ann_len;
    size_t n = take < want ? take : want;
    memcpy(c->s2c_ann + c->s2c_ann_len, p, n);
    c->s2c_ann_len += n;
    if (c->s2c_ann_len < c->s2c_ann_need)
        return;
    if (streams_record_reply(&c->streams, c->proto, c->s2c_ann, c->s2c_ann_len) < 0) {
        log_line_t l;
        log_begin(&l, LOG_WARN, "stream_not_recorded");
        log_conn_fields(&l, c);
        log_str(&l, "detail",
                "a stream reply's STRM annotation could not be read: the stream cannot be "
                "pulled through pyroguard");
        log_end(&l);
    }
    free(c->s2c_ann);
    c->s2c_ann = NULL;
    c->s2c_ann_len = c->s2c_ann_need = 0;
}

/* conn_s2c passes reply bytes from the backend to the client, each header checked before any
 * of its bytes leave. What passes is encrypted a whole reply at a time — header and body in one
 * TLS record (up to 16 KiB each) — not piece by piece: a 24-byte header sealed on its own costs
 * a record, an AEAD operation and, often, a wake-up and a read more on the client. Only a header
 * split across two backend reads is sealed by itself. */
static void conn_s2c(conn_t *c, const uint8_t *p, size_t n)
{
    const size_t hlen = frame_header_len(c->proto);
    const uint8_t *span = p; /* checked bytes of |p| not yet encrypted: [span, p) */
    while (n > 0 && c->state != CONN_CLOSING) {
        if (c->s2c_left == 0) {
            const uint8_t *hdr = p;
            int held = c->s2c_hdr_len > 0; /* begun in the previous read: not in |p| */
            size_t take = hlen - c->s2c_hdr_len;
            if (take > n)
                take = n;
            memcpy(c->s2c_hdr + c->s2c_hdr_len, p, take);
            c->s2c_hdr_len += take;
            p += take;
            n -= take;
            if (c->s2c_hdr_len < hlen) {
                p = hdr; /* held back until the rest of the header arrives */
                break;
            }
            c->s2c_hdr_len = 0;
            const char *bad = s2c_header(c);
            if (bad != NULL) {
                /* The replies before this header were whole and checked: they still go. */
                if (conn_send_plain(c, span, (size_t)(hdr - span)))
                    conn_flush_tls(c);
                backend_protocol_error(c, bad);
                return;
            }
            if (held) {
                if (!conn_send_plain(c, c->s2c_hdr, hlen)) {
                    conn_close(c, "internal_error");
                    return;
                }
                span = p;
            }
        } else {
            size_t take = c->s2c_left < n ? (size_t)c->s2c_left : n;
            if (c->s2c_ann_len < c->s2c_ann_need)
                s2c_observe_annotations(c, p, take);
            c->s2c_left -= take;
            p += take;
            n -= take;
        }
        if (c->s2c_left == 0) {
            /* A whole reply, encrypted before s2c_frame_done: that may close the connection
             * or refuse the next request, and those bytes must follow this reply. */
            if (!conn_send_plain(c, span, (size_t)(p - span))) {
                conn_close(c, "internal_error");
                return;
            }
            span = p;
            s2c_frame_done(c);
        }
    }
    if (c->state != CONN_CLOSING && p > span && !conn_send_plain(c, span, (size_t)(p - span)))
        conn_close(c, "internal_error");
}

/* upstream_read decrypts what the upstream sent and passes it on as reply bytes (client mode).
 * A TLS failure before any reply came — the upstream refusing this listener's certificate
 * after a TLS 1.3 handshake, typically — answers the held CONNECT with a CONNECTFAIL. */
static void upstream_read(conn_t *c)
{
    static _Thread_local uint8_t plain[16384 + 256];
    while (c->state != CONN_CLOSING) {
        int r = SSL_read(c->up_ssl, plain, (int)sizeof(plain));
        if (r > 0) {
            conn_s2c(c, plain, (size_t)r);
            continue;
        }
        int e = SSL_get_error(c->up_ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            conn_close(c, "backend_closed");
            return;
        }
        char detail[160];
        tls_last_error(detail, sizeof(detail), "TLS record error");
        if (c->state == CONN_AWAIT_CONNECTOK && c->s2c_hdr_len == 0 && c->s2c_left == 0) {
            upstream_refused(c, "alert_received", detail);
            return;
        }
        log_line_t l;
        log_begin(&l, LOG_WARN, "upstream_tls_error");
        log_conn_fields(&l, c);
        log_str(&l, "detail", detail);
        log_end(&l);
        conn_close(c, "upstream_tls_error");
        return;
    }
    if (c->state != CONN_CLOSING && !conn_flush_upstream(c))
        conn_close(c, "backend_write_error");
}

static void on_backend_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    conn_t *c = container_of(s, conn_t, backend);
    if (nread == 0 || c->state == CONN_CLOSING)
        return;
    if (nread < 0) {
        if (c->up_ssl != NULL && !c->up_handshake_done && c->state == CONN_DIALING) {
            upstream_refused(c, "peer_closed", "the upstream closed the connection");
            return;
        }
        /* A reply cut short cannot be completed; one never started is simply not coming. */
        conn_close(c, nread == UV_EOF ? "backend_closed" : "backend_read_error");
        return;
    }
    c->last_activity_ms = uv_now(c->srv->loop);
    metrics_bytes(c->srv->metrics, 0, (uint64_t)nread); /* every reply byte is passed on */
    if (c->up_ssl != NULL) {
        if (!tlsbio_feed(c->up_net, (const uint8_t *)b->base, (size_t)nread)) {
            conn_close(c, "out_of_memory");
            return;
        }
        if (!c->up_handshake_done) {
            upstream_handshake(c);
            if (c->state == CONN_CLOSING || !c->up_handshake_done)
                return;
        }
        upstream_read(c);
    } else {
        conn_s2c(c, (const uint8_t *)b->base, (size_t)nread);
    }
    if (c->state == CONN_CLOSING)
        return;
    conn_flush_tls(c);
    conn_update_reading(c);
}

/* ---- client --------------------------------------------------------------------------- */

/* handle_connect judges the first message. Allowed: dial the backend, holding the CONNECT. */
static void handle_connect(conn_t *c, const frame_t *f)
{
    inspect_t *in = &c->srv->inspect;
    char detail[256], entry[64];
    policy_decision_t d;

    if (f->type != MSG_CONNECT) {
        /* Pyro answers this with CONNECTFAIL "invalid msg type" (PROTOCOL.md §1). */
        snprintf(detail, sizeof(detail), "pyroguard: expected CONNECT, got %s",
                 frame_type_name(f->type));
        refuse_connect(c, "unexpected_message", detail, f);
        return;
    }
    c->connect_seq = f->seq;
    /* Who the client is decides before anything it sent is decoded (client mode: the local
     * client has no certificate; the listener's egress rule applies). */
    if (c->ssl != NULL && !c->ident_ok) {
        snprintf(detail, sizeof(detail), "pyroguard: the client certificate cannot be used: %s",
                 c->ident_err);
        refuse_connect(c, "identity_invalid", detail, f);
        return;
    }
    if (conn_rule(c) == POLICY_NO_RULE) {
        policy_refuse_unmatched(&c->ident, &d);
        refuse_connect(c, d.reason, d.detail, f);
        return;
    }
    if (inspect_request(c->srv->cfg, f, in) != INSPECT_ALLOW) {
        refuse_connect_call(c, in->reason, in->detail, f, in, NULL);
        return;
    }
    /* Allowed: held while the backend is dialled, and judged (and logged) once more when it is
     * forwarded (on_backend_connect) — under the policy in force then. */
    if (!policy_judge(c, f, in, &d, entry, sizeof(entry))) {
        refuse_connect_call(c, d.reason, d.detail, f, in, entry);
        return;
    }
    /* An HMAC-signed CONNECT cannot carry the identity (conn_forward says why): refused before
     * the daemon is dialled. */
    CBS hmac;
    if (c->lcfg->forward_identity && frame_find_annotation(f, "HMAC", &hmac)) {
        refuse_connect_call(c, "hmac_not_rewritable", kHmacNotRewritable, f, in, NULL);
        return;
    }
    conn_dial(c);
}

static void handle_request(conn_t *c, const frame_t *f)
{
    inspect_t *in = &c->srv->inspect;
    char detail[384], entry[64];
    policy_decision_t d;

    if (f->type != MSG_INVOKE && f->type != MSG_PING) {
        /* A second CONNECT or a reply type from a client: the daemon drops the connection
         * without answering (PROTOCOL.md §1). */
        snprintf(detail, sizeof(detail), "pyroguard: unexpected %s after the handshake",
                 frame_type_name(f->type));
        refuse_close(c, "unexpected_message", detail, f);
        return;
    }
    if (inspect_request(c->srv->cfg, f, in) != INSPECT_ALLOW) {
        refuse_invoke(c, f, in->reason, in->detail, in, NULL);
        buf_consume(&c->c2s, f->total_len);
        return;
    }
    /* A PING names nothing; every INVOKE name goes through the client's rule. */
    if (f->type == MSG_INVOKE && !policy_judge(c, f, in, &d, entry, sizeof(entry))) {
        refuse_invoke(c, f, d.reason, d.detail, in, entry);
        buf_consume(&c->c2s, f->total_len);
        return;
    }
    /* Stream ids are daemon-global: only the connection that received one may pull or close
     * it (PROTOCOL.md §6.2). */
    if (f->type == MSG_INVOKE &&
        !streams_check_call(&c->streams, &in->call, detail, sizeof(detail))) {
        refuse_invoke(c, f, "stream_not_owned", detail, in, NULL);
        buf_consume(&c->c2s, f->total_len);
        return;
    }
    if (!conn_forward(c, f, in))
        return;
    if (f->type == MSG_INVOKE) /* counted, and logged under log.calls: all */
        log_decision(c, 1, "allowed", NULL, f, "forwarded", in, entry);
    buf_consume(&c->c2s, f->total_len);
    if (!(f->type == MSG_INVOKE && (f->flags & FLAG4_ONEWAY)))
        c->outstanding++;
}

/* conn_process_c2s judges whole client messages one at a time. While a forwarded request
 * waits for its reply nothing else is judged, so a refusal injected later is always at a
 * frame boundary and in request order (PROTOCOL.md §1: the daemon is strictly sequential). */
static void conn_tls_read(conn_t *c);

/* protocol_error_detail says what was wrong with a message that could not be framed; for a
 * version, which one and why it is not spoken here. */
static void protocol_error_detail(const conn_t *c, frame_error_t err, char *out, size_t out_len)
{
    if (err == FRAME_ERR_VERSION && buf_len(&c->c2s) >= 6) {
        const uint8_t *p = buf_peek(&c->c2s);
        unsigned version = (unsigned)((p[4] << 8) | p[5]);
        frame_proto_t proto = frame_proto_of_version((uint16_t)version);
        if (proto == PROTO_NONE)
            snprintf(out, out_len, "pyroguard: unknown Pyro protocol version %u", version);
        else if (c->proto != PROTO_NONE)
            snprintf(out, out_len,
                     "pyroguard: Pyro protocol version %u on a connection that began with %s",
                     version, frame_proto_name(c->proto));
        else
            snprintf(out, out_len,
                     "pyroguard: Pyro protocol version %u (%s) is not accepted here "
                     "(pyro.protocols)",
                     version, frame_proto_name(proto));
        return;
    }
    snprintf(out, out_len, "pyroguard: malformed Pyro message (%s)", frame_error_reason(err));
}

/* process_frames judges the whole messages already in c2s, as far as the state allows. */
static void process_frames(conn_t *c)
{
    frame_t f;
    frame_error_t err;

    while ((c->state == CONN_AWAIT_CONNECT || c->state == CONN_READY) && c->outstanding == 0 &&
           buf_len(&c->c2s) > 0) {
        frame_status_t st = conn_parse(c, &f, &err);
        if (st == FRAME_NEED_MORE)
            return;
        if (st == FRAME_ERROR) {
            char detail[160];
            protocol_error_detail(c, err, detail, sizeof(detail));
            /* Header fields are worth logging when the header itself parsed. */
            int have_header = err == FRAME_ERR_NEGATIVE_LENGTH || err == FRAME_ERR_TOO_LARGE ||
                              err == FRAME_ERR_ANNOTATIONS;
            if (c->state == CONN_AWAIT_CONNECT)
                refuse_handshake_framing(c, frame_error_reason(err), detail,
                                         have_header ? &f : NULL);
            else
                refuse_close(c, frame_error_reason(err), detail, have_header ? &f : NULL);
            return;
        }
        if (c->proto == PROTO_NONE)
            c->proto = f.proto; /* the first message fixes the connection's protocol */
        if (c->state == CONN_AWAIT_CONNECT)
            handle_connect(c, &f);
        else
            handle_request(c, &f);
    }
}

/* conn_process_c2s judges whole client messages one at a time. While a forwarded request
 * waits for its reply nothing else is judged, so a refusal injected later is always at a
 * frame boundary and in request order (PROTOCOL.md §1: the daemon is strictly sequential).
 * When judging freed room in c2s, bytes BoringSSL still holds are pulled in: no new socket
 * event may come to do it if the client already sent everything. */
static void conn_process_c2s(conn_t *c)
{
    for (;;) {
        process_frames(c);
        if (c->state != CONN_AWAIT_CONNECT && c->state != CONN_READY)
            break;
        if (c->outstanding > 0 || buf_room(&c->c2s) == 0)
            break;
        if (tlsbio_in_pending(c->net) == 0 && (c->ssl == NULL || SSL_pending(c->ssl) == 0))
            break;
        size_t before = buf_len(&c->c2s);
        conn_tls_read(c);
        if (c->state == CONN_CLOSING || buf_len(&c->c2s) == before)
            break;
    }
    if (c->state == CONN_CLOSING)
        return;
    if (c->client_eof && c->outstanding == 0 && c->state != CONN_DIALING) {
        conn_close(c, buf_len(&c->c2s) ? "client_closed_mid_message" : "client_closed");
        return;
    }
    conn_flush_tls(c);
    conn_update_reading(c);
}

/* conn_tls_read decrypts client bytes straight into c2s while there is room: into the space
 * the buffer already has, or 4 KiB more (a small message needs no more, and idle connections
 * stay small; the buffer doubles as large messages fill it). */
static void conn_tls_read(conn_t *c)
{
    while (buf_room(&c->c2s) > 0) {
        size_t room = buf_room(&c->c2s), got = 0;
        uint8_t *dst = buf_reserve(&c->c2s, room < 4096 ? room : 4096, &got);
        if (dst == NULL) {
            conn_close(c, "out_of_memory");
            return;
        }
        int want = got > INT_MAX ? INT_MAX : (int)got;
        int r = c->ssl != NULL ? SSL_read(c->ssl, dst, want) : BIO_read(c->net, dst, want);
        if (r > 0) {
            buf_commit(&c->c2s, (size_t)r);
            c->bytes_in += (uint64_t)r;
            continue;
        }
        if (c->ssl == NULL) /* client mode: all the plaintext held so far is in c2s */
            return;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            return;
        if (e == SSL_ERROR_ZERO_RETURN) {
            c->client_eof = 1; /* close_notify */
            return;
        }
        char detail[128];
        tls_last_error(detail, sizeof(detail), "TLS record error");
        log_line_t l;
        log_begin(&l, LOG_WARN, "tls_error");
        log_conn_fields(&l, c);
        log_str(&l, "detail", detail);
        log_end(&l);
        conn_flush_tls(c); /* the alert */
        conn_close(c, "tls_error");
        return;
    }
}

static void conn_handshake_done(conn_t *c)
{
    metrics_handshake_done(c->srv->metrics, (uv_hrtime() - c->started_ns) / 1000);
    c->handshake_done = 1;
    c->state = CONN_AWAIT_CONNECT;
    conn_identify(c);
    log_conn_open(c);
    c->last_activity_ms = uv_now(c->srv->loop);
    arm_timer(c, c->srv->cfg->limits.idle_timeout_ms);
}

static void conn_handshake(conn_t *c)
{
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        conn_flush_tls(c);
        conn_handshake_done(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        conn_flush_tls(c);
        return;
    }
    char detail[160];
    const char *reason = tls_failure_reason(c->ssl, detail, sizeof(detail));
    log_line_t l;
    log_begin(&l, LOG_WARN, "tls_fail");
    log_conn_fields(&l, c);
    log_str(&l, "reason", reason);
    log_str(&l, "detail", detail);
    log_end(&l);
    metrics_tls_failed(c->srv->metrics, reason);
    /* conn_close flushes the alert BoringSSL chose (unknown_ca, certificate_expired…) once the
     * connection is counted under this reason: a client that has already reset would otherwise
     * make that write fail first and the connection count as a client_write_error. */
    conn_close(c, reason);
}

static void conn_pump(conn_t *c)
{
    if (c->state == CONN_HANDSHAKE) {
        conn_handshake(c);
        if (c->state == CONN_HANDSHAKE || c->state == CONN_CLOSING) {
            conn_update_reading(c);
            return;
        }
    }
    conn_tls_read(c);
    if (c->state == CONN_CLOSING)
        return;
    conn_process_c2s(c);
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    conn_t *c = container_of(s, conn_t, client);
    if (nread == 0 || c->state == CONN_CLOSING)
        return;
    if (nread < 0) {
        if (c->state == CONN_HANDSHAKE) {
            conn_handshake_peer_closed(c, nread == UV_EOF ? "connection closed during the handshake"
                                                          : uv_strerror((int)nread));
            return;
        }
        uv_read_stop(s);
        c->client_reading = 0;
        c->client_eof = 1;
        if (nread != UV_EOF) {
            conn_close(c, "client_read_error");
            return;
        }
        conn_pump(c);
        return;
    }
    c->last_activity_ms = uv_now(c->srv->loop);
    if (!tlsbio_feed(c->net, (const uint8_t *)b->base, (size_t)nread)) {
        conn_close(c, "out_of_memory"); /* reading stops at TLS_IN_HIGH_WATER: memory only */
        return;
    }
    conn_pump(c);
}

/* ---- accept --------------------------------------------------------------------------- */

static void on_rejected_closed(uv_handle_t *h)
{
    free(h);
}

static void peer_name(sock_t *t, int is_unix, char *out, size_t out_len);

/* reject accepts one pending connection and closes it at once, so it leaves the backlog. */
static void reject(listener_t *l, const char *reason)
{
    sock_t *t = pg_malloc(sizeof(*t));
    if (t == NULL)
        return;
    if (sock_init(l->srv->loop, t, l->is_unix) != 0) {
        free(t);
        return;
    }
    if (uv_accept((uv_stream_t *)&l->sock, (uv_stream_t *)t) == 0) {
        char peer[INET6_ADDRSTRLEN + 16];
        peer_name(t, l->is_unix, peer, sizeof(peer));
        log_line_t line;
        log_begin(&line, LOG_WARN, "conn_rejected");
        log_str(&line, "listener", l->srv->cfg->listeners[l->index].name);
        log_str(&line, "peer", peer);
        log_str(&line, "reason", reason);
        log_uint(&line, "open_connections", __atomic_load_n(l->srv->open_total, __ATOMIC_RELAXED));
        log_end(&line);
    }
    uv_close((uv_handle_t *)t, on_rejected_closed);
}

/* peer_name writes who is at the other end: "IP:port", or for a Unix socket the peer's
 * process and user as the kernel gives them ("unix:pid=812,uid=1000"). */
static void peer_name(sock_t *t, int is_unix, char *out, size_t out_len)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN];
    snprintf(out, out_len, "unknown");
    if (is_unix) {
        struct ucred cred;
        socklen_t clen = sizeof(cred);
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)t, &fd) == 0 &&
            getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
            snprintf(out, out_len, "unix:pid=%ld,uid=%lu", (long)cred.pid, (unsigned long)cred.uid);
        else
            snprintf(out, out_len, "unix");
        return;
    }
    if (uv_tcp_getpeername(&t->tcp, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        uv_ip4_name(in, ip, sizeof(ip));
        snprintf(out, out_len, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        uv_ip6_name(in6, ip, sizeof(ip));
        snprintf(out, out_len, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
    }
}

/* warn_if_descriptors_low logs, at most every 10 s per worker, when the descriptor just
 * accepted is past 90% of RLIMIT_NOFILE: descriptors are handed out lowest first, so its number
 * tells how many are in use. Past the limit libuv sheds new connections without telling, and a
 * worker that cannot shed pauses accepting ("accept_paused"): this line comes first. */
static void warn_if_descriptors_low(conn_t *c)
{
    server_t *srv = c->srv;
    uv_os_fd_t fd;
    uint64_t now = uv_now(srv->loop);
    if (srv->fd_warn_at == 0 || uv_fileno((uv_handle_t *)&c->client, &fd) != 0 ||
        (uint64_t)fd < srv->fd_warn_at ||
        (srv->fd_warned_ms != 0 && now - srv->fd_warned_ms < 10000))
        return;
    srv->fd_warned_ms = now;
    log_line_t l;
    log_begin(&l, LOG_WARN, "descriptors_low");
    log_uint(&l, "worker", srv->index);
    log_uint(&l, "descriptor", (uint64_t)fd);
    log_uint(&l, "open_connections", __atomic_load_n(srv->open_total, __ATOMIC_RELAXED));
    log_str(&l, "detail",
            "past 90% of RLIMIT_NOFILE: raise it (LimitNOFILE=) or lower "
            "limits.max_connections");
    log_end(&l);
}

void conn_accept(listener_t *l)
{
    server_t *srv = l->srv;
    const config_t *cfg = srv->cfg;

    /* Counted before the check, so that workers accepting at the same moment cannot pass
     * the limit together. */
    if (__atomic_add_fetch(srv->open_total, 1, __ATOMIC_RELAXED) > cfg->limits.max_connections) {
        __atomic_sub_fetch(srv->open_total, 1, __ATOMIC_RELAXED);
        metrics_conn_rejected(srv->metrics);
        reject(l, "max_connections");
        return;
    }
    conn_t *c = pg_calloc(1, sizeof(*c));
    if (c == NULL) {
        __atomic_sub_fetch(srv->open_total, 1, __ATOMIC_RELAXED);
        reject(l, "out_of_memory");
        return;
    }
    c->srv = srv;
    c->lst = l;
    c->gen = generation_ref(srv->gen);
    c->lcfg = &c->gen->cfg.listeners[l->index];
    c->max_message = cfg->pyro.max_message_bytes;
    c->id = __atomic_add_fetch(srv->conn_ids, 1, __ATOMIC_RELAXED);
    c->state = CONN_HANDSHAKE;
    c->rule = POLICY_NO_RULE; /* until the handshake names the client */
    buf_init(&c->c2s, cfg->pyro.max_message_bytes + FRAME_MAX_HEADER_LEN);
    if (sock_init(srv->loop, &c->client, l->is_unix) != 0)
        goto free_conn;
    c->client.tcp.data = c; /* the handle fields are common to both kinds */
    c->streams_open = 1;
    uv_timer_init(srv->loop, &c->timer);
    c->timer.data = c;

    /* Linked in now: from here on the close callbacks own the memory. */
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->n_conns++;
    metrics_conn_accepted(srv->metrics);
    c->started_ms = c->last_activity_ms = uv_now(srv->loop);
    c->started_ns = uv_hrtime();

    if (uv_accept((uv_stream_t *)&l->sock, (uv_stream_t *)&c->client) != 0) {
        conn_close(c, "accept_failed");
        return;
    }
    peer_name(&c->client, l->is_unix, c->peer, sizeof(c->peer));
    if (!l->is_unix)
        uv_tcp_nodelay(&c->client.tcp, 1);
    warn_if_descriptors_low(c);

    if (c->lcfg->mode == LISTENER_CLIENT) {
        /* A local plaintext client: no handshake; its first message must be a CONNECT the
         * egress rule allows, which is then carried to the upstream over mutual TLS. */
        c->net = tlsbio_new(TLS_IN_HIGH_WATER + READ_CHUNK, 1);
        if (c->net == NULL) {
            conn_close(c, "out_of_memory");
            return;
        }
        c->state = CONN_AWAIT_CONNECT;
        c->rule_gen = 0; /* conn_rule finds the egress rule */
        log_conn_open(c);
        arm_timer(c, cfg->limits.idle_timeout_ms);
        conn_update_reading(c);
        return;
    }

    c->ssl = SSL_new(c->gen->ssl_ctx);
    c->net = tlsbio_new(TLS_IN_HIGH_WATER + READ_CHUNK, TLS_OUT_MAX);
    if (c->ssl == NULL || c->net == NULL) {
        BIO_free(c->net);
        c->net = NULL;
        conn_close(c, "out_of_memory");
        return;
    }
    SSL_set_bio(c->ssl, c->net, c->net); /* the SSL now owns it */
    SSL_set_accept_state(c->ssl);
    tls_conn_setup(c->ssl);
    arm_timer(c, cfg->limits.handshake_timeout_ms);
    conn_update_reading(c);
    return;

free_conn:
    buf_cleanup(&c->c2s);
    generation_unref(c->gen);
    free(c);
    __atomic_sub_fetch(srv->open_total, 1, __ATOMIC_RELAXED);
    reject(l, "out_of_memory");
}

void conn_drain_all(server_t *srv)
{
    conn_t *c = srv->conns;
    while (c != NULL) {
        conn_t *next = c->next;
        /* A connection with a call in flight (or a CONNECT being dialled) closes when its
         * answer has passed (s2c_frame_done); the others close now. */
        if (c->state != CONN_CLOSING && c->state != CONN_DIALING && c->outstanding == 0)
            conn_close(c, "shutdown");
        c = next;
    }
}

void conn_close_all(server_t *srv, const char *reason)
{
    conn_t *c = srv->conns;
    while (c != NULL) {
        conn_t *next = c->next;
        conn_close(c, reason);
        c = next;
    }
}
