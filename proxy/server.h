/* server: the listeners, their accept loop and process-wide signals on one libuv loop.
 *
 * A server_t is embedded by main: server_start binds every listener of the configuration
 * and installs SIGTERM/SIGINT handlers; server_stop closes listeners and every connection.
 * The loop returns from uv_run once everything is closed; the server_t holds no heap memory
 * of its own afterwards except the listener array freed by server_cleanup. The configuration
 * and the SSL_CTX stay owned by the caller and must outlive the loop run. */
#ifndef PYROGUARD_SERVER_H
#define PYROGUARD_SERVER_H

#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "config.h"
#include "inspect.h"

typedef struct server server_t;
typedef struct conn conn_t;

typedef struct {
    uv_tcp_t tcp;
    server_t *srv;
    const config_listener_t *cfg;
    int open;
} listener_t;

struct server {
    uv_loop_t *loop;
    const config_t *cfg;
    SSL_CTX *ssl_ctx;
    listener_t *listeners;
    size_t n_listeners;
    uv_signal_t sig_term;
    uv_signal_t sig_int;
    int signals_open;
    conn_t *conns; /* every live connection, for shutdown */
    uint64_t n_conns;
    uint64_t next_conn_id;
    int stopping;
    inspect_t inspect; /* reused for every request judged on this loop */
};

/* server_start binds and listens on every listener and logs "listening" for each. It returns
 * 1 on success; 0 after logging why a listener could not be opened (the caller then calls
 * server_stop, runs the loop to let handles close, and exits 1). */
int server_start(server_t *srv, uv_loop_t *loop, const config_t *cfg, SSL_CTX *ssl_ctx);

/* server_stop stops accepting and closes every connection; idempotent. */
void server_stop(server_t *srv, const char *why);

/* server_cleanup frees the listener array; call after uv_run has returned. */
void server_cleanup(server_t *srv);

#endif
