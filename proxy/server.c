#include "server.h"

#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "log.h"

static void on_connection(uv_stream_t *s, int status)
{
    listener_t *l = (listener_t *)s; /* tcp is the first member */
    if (status < 0) {
        /* EMFILE and friends: log and keep listening; libuv retries on the next event. */
        log_line_t line;
        log_begin(&line, LOG_ERROR, "accept_failed");
        log_str(&line, "listener", l->cfg->name);
        log_str(&line, "detail", uv_strerror(status));
        log_end(&line);
        return;
    }
    if (l->srv->stopping)
        return;
    conn_accept(l);
}

static void on_listener_closed(uv_handle_t *h)
{
    listener_t *l = h->data;
    l->open = 0;
}

static void on_signal_closed(uv_handle_t *h) {}

static void on_signal(uv_signal_t *sig, int signum)
{
    server_t *srv = sig->data;
    log_line_t l;
    log_begin(&l, LOG_INFO, "shutdown");
    log_str(&l, "signal", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    log_uint(&l, "open_connections", srv->n_conns);
    log_end(&l);
    server_stop(srv, "shutdown");
}

int server_start(server_t *srv, uv_loop_t *loop, const config_t *cfg, SSL_CTX *ssl_ctx)
{
    memset(srv, 0, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = cfg;
    srv->ssl_ctx = ssl_ctx;
    inspect_init(&srv->inspect);

    uv_signal_init(loop, &srv->sig_term);
    uv_signal_init(loop, &srv->sig_int);
    srv->sig_term.data = srv->sig_int.data = srv;
    srv->signals_open = 1;
    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);

    srv->listeners = calloc(cfg->n_listeners, sizeof(*srv->listeners));
    if (srv->listeners == NULL) {
        log_msg(LOG_ERROR, "startup_failed", "out of memory");
        return 0;
    }
    srv->n_listeners = cfg->n_listeners;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        listener_t *l = &srv->listeners[i];
        const config_listener_t *lc = &cfg->listeners[i];
        l->srv = srv;
        l->cfg = lc;
        uv_tcp_init(loop, &l->tcp);
        l->tcp.data = l;
        l->open = 1;
        int r = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&lc->listen.addr, 0);
        if (r == 0)
            r = uv_listen((uv_stream_t *)&l->tcp, 1024, on_connection);
        if (r != 0) {
            log_line_t line;
            log_begin(&line, LOG_ERROR, "listen_failed");
            log_str(&line, "listener", lc->name);
            log_str(&line, "listen", lc->listen.text);
            log_str(&line, "detail", uv_strerror(r));
            log_end(&line);
            return 0;
        }
        log_line_t line;
        log_begin(&line, LOG_INFO, "listening");
        log_str(&line, "listener", lc->name);
        log_str(&line, "listen", lc->listen.text);
        log_str(&line, "backend", lc->backend.text);
        log_end(&line);
    }
    return 1;
}

void server_stop(server_t *srv, const char *why)
{
    if (srv->stopping)
        return;
    srv->stopping = 1;
    for (size_t i = 0; i < srv->n_listeners; i++) {
        listener_t *l = &srv->listeners[i];
        if (l->open && !uv_is_closing((uv_handle_t *)&l->tcp))
            uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
    }
    if (srv->signals_open) {
        uv_close((uv_handle_t *)&srv->sig_term, on_signal_closed);
        uv_close((uv_handle_t *)&srv->sig_int, on_signal_closed);
        srv->signals_open = 0;
    }
    conn_close_all(srv, why);
}

void server_cleanup(server_t *srv)
{
    inspect_cleanup(&srv->inspect);
    free(srv->listeners);
    srv->listeners = NULL;
    srv->n_listeners = 0;
}
