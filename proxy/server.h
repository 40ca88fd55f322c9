/* server: one worker — an event loop on its own thread with its own listening sockets (one per
 * listener, SO_REUSEPORT: the kernel spreads connections over the workers), its connections,
 * its inspection state and its metrics shard. Nothing on the data path is shared between
 * workers; the configuration they read is an immutable generation (generation.h).
 *
 * The control thread (runtime.h) talks to a worker only through server_post_* (a mailbox under
 * a mutex, then uv_async_send): a new generation to judge with, drain, or stop. A worker's
 * loop ends when its listeners and connections are closed after drain or stop; it then tells
 * the control thread through the |done| async handle it was given.
 *
 * Ownership: server_t is allocated by runtime.c; server_init takes over the listening fds
 * (closed in every case) and a reference to |gen|; server_cleanup, after the thread has been
 * joined, releases the rest. */
#ifndef PYROGUARD_SERVER_H
#define PYROGUARD_SERVER_H

#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "config.h"
#include "generation.h"
#include "inspect.h"
#include "metrics.h"

typedef struct server server_t;
typedef struct conn conn_t;

/* A stream socket of either family pyroguard listens on: TCP, or a Unix socket (client-mode
 * listeners, `listen: unix:PATH`). Its address is the handle's. */
typedef union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
} sock_t;

typedef struct {
    sock_t sock; /* first member: the stream libuv hands to on_connection is the listener */
    int is_unix;
    server_t *srv;
    size_t index; /* in cfg->listeners of every generation (reloads cannot change them) */
    int open;     /* |sock| is an open handle (listening, or closing) */
    int keep_fd;  /* pyroguard's own descriptor of the listening socket: survives a pause */
    int paused;   /* out of descriptors: not accepting until |retry| fires */
    uv_timer_t retry;
} listener_t;

struct server {
    uv_loop_t loop_storage;
    uv_loop_t *loop;
    uv_thread_t thread;
    unsigned index;
    generation_t *gen;   /* current: new connections, and every judgement */
    const config_t *cfg; /* &gen->cfg */
    listener_t *listeners;
    size_t n_listeners;
    uv_async_t wake; /* the control thread posted something */
    uv_mutex_t mailbox_lock;
    generation_t *next_gen; /* mailbox: a generation to switch to, or NULL */
    int drain_requested;
    int stop_requested;
    uv_async_t *done; /* the control thread's: this worker's loop has ended */
    int finished;     /* set (atomically) by the worker thread just before |done| */
    conn_t *conns;    /* every live connection of this worker */
    uint64_t n_conns;
    uint64_t *open_total;  /* shared by every worker (atomic): limits.max_connections is global */
    uint64_t *conn_ids;    /* shared (atomic): connection ids are unique in the process */
    uint64_t fd_warn_at;   /* descriptor number that triggers "descriptors_low" (90% of the soft
                              RLIMIT_NOFILE); 0: unlimited */
    uint64_t fd_warned_ms; /* when it was last logged (at most every 10 s per worker) */
    int draining;          /* no more accepting; connections close once idle */
    int stopping;          /* closing everything now */
    inspect_t inspect;     /* reused for every request judged on this loop */
    metrics_shard_t *metrics;
};

/* server_check_listeners_free returns 1 if no other socket listens on any listener's address,
 * else logs listen_failed and returns 0. Run before server_open_listeners: the workers' sockets
 * share their port through SO_REUSEPORT, which the kernel would also let them share with any
 * other process of the same user already listening there (a stale pyroguard, another program),
 * silently splitting the connections between them. */
int server_check_listeners_free(const config_t *cfg);

/* server_open_listeners binds and listens on every listener of |cfg| with SO_REUSEPORT,
 * writing the fds to |fds| (n_listeners of them). Returns 1, or 0 after logging which listener
 * failed (every fd opened is closed). Called by the control thread, once per worker, before
 * privileges are dropped. A Unix socket has one path, so workers after the first (|first|: the
 * first worker's fds, NULL for the first) share its socket through a duplicate descriptor. */
int server_open_listeners(const config_t *cfg, int *fds, const int *first);

/* server_chown_sockets gives the socket files of the Unix-socket listeners to |uid|:|gid|
 * (the user and group pyroguard is about to switch to, so that socket_mode's group is theirs).
 * Returns 1, or 0 after logging listen_failed. */
int server_chown_sockets(const config_t *cfg, uid_t uid, gid_t gid);

/* server_remove_sockets removes the socket files of the Unix-socket listeners this process
 * created, at exit. */
void server_remove_sockets(const config_t *cfg);

/* sock_init prepares |s| on |loop| as a TCP or Unix stream handle. */
int sock_init(uv_loop_t *loop, sock_t *s, int is_unix);

/* server_init prepares worker |index| on its own loop with the listening |fds| (taken over).
 * Returns 0 after logging on failure; server_cleanup is then still required. */
int server_init(server_t *srv, unsigned index, generation_t *gen, const int *fds, uv_async_t *done,
                uint64_t *open_total, uint64_t *conn_ids);

/* server_run starts the worker's thread; its loop runs until drained or stopped. */
int server_run(server_t *srv);

/* Posted from the control thread. */
void server_post_generation(server_t *srv, generation_t *gen); /* takes a reference */
void server_post_drain(server_t *srv);
void server_post_stop(server_t *srv);

/* server_cleanup releases what the worker holds; call after its thread has been joined (or
 * when it never started). */
void server_cleanup(server_t *srv);

/* server_conn_gone is called by conn.c when a connection's memory is released: a draining
 * worker finishes when the last one goes. */
void server_conn_gone(server_t *srv);

#endif
