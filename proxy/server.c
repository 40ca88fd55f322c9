#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "alloc.h"
#include "conn.h"
#include "log.h"

#define LISTEN_BACKLOG  1024
#define ACCEPT_RETRY_MS 250 /* a listener paused for lack of descriptors tries again after this */

/* ---- listening sockets (control thread) ----------------------------------------------- */

/* open_unix binds a Unix-socket listener with its socket_mode (default 0600): the file is
 * created under a umask that leaves it no wider, so there is no moment where others may
 * connect. Only the control thread runs here (umask is per process). */
static int open_unix(const config_listener_t *lc, int *out)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)&lc->listen.addr;
    mode_t mode = lc->socket_mode_given ? (mode_t)lc->socket_mode : 0600;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    mode_t old = umask(0777 & ~mode);
    int r = bind(fd, (const struct sockaddr *)un, sizeof(*un));
    int err = r != 0 ? -errno : 0;
    umask(old);
    if (r == 0 && chmod(un->sun_path, mode) != 0)
        err = -errno;
    if (err == 0 && listen(fd, LISTEN_BACKLOG) != 0)
        err = -errno;
    if (err != 0) {
        close(fd);
        return err;
    }
    *out = fd;
    return 0;
}

static int open_one(const config_listener_t *lc, int *out)
{
    const struct sockaddr *sa = (const struct sockaddr *)&lc->listen.addr;
    if (sa->sa_family == AF_UNIX)
        return open_unix(lc, out);
    socklen_t len =
        sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int one = 1;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* Every worker binds its own socket to the same address; the kernel spreads new
     * connections over them (no shared accept queue to fight over). */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        (sa->sa_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        bind(fd, sa, len) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    *out = fd;
    return 0;
}

/* port_taken says whether another socket already listens on |lc|'s address: a probe bound
 * without SO_REUSEPORT fails with EADDRINUSE if so (SO_REUSEADDR keeps TIME_WAIT remnants of a
 * previous run from counting). Returns 0 (free), or a negative errno. */
/* unix_path_taken says whether a process serves |lc|'s socket path: a stale socket file left
 * by a pyroguard that was killed is removed (nothing answers on it), anything else that is not a
 * socket is not ours to remove. */
static int unix_path_taken(const config_listener_t *lc)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)&lc->listen.addr;
    struct stat st;
    if (lstat(un->sun_path, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return UV_EEXIST;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int r = connect(fd, (const struct sockaddr *)un, sizeof(*un));
    int err = r == 0 ? UV_EADDRINUSE : errno == ECONNREFUSED ? 0 : -errno;
    close(fd);
    if (err == 0 && unlink(un->sun_path) != 0)
        err = -errno;
    return err;
}

static int port_taken(const config_listener_t *lc)
{
    const struct sockaddr *sa = (const struct sockaddr *)&lc->listen.addr;
    if (sa->sa_family == AF_UNIX)
        return unix_path_taken(lc);
    socklen_t len =
        sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int one = 1;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int r = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (sa->sa_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        bind(fd, sa, len) != 0)
        r = -errno;
    close(fd);
    return r;
}

int server_check_listeners_free(const config_t *cfg)
{
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        int r = port_taken(&cfg->listeners[i]);
        if (r == 0)
            continue;
        log_line_t line;
        log_begin(&line, LOG_ERROR, "listen_failed");
        log_str(&line, "listener", cfg->listeners[i].name);
        log_str(&line, "listen", cfg->listeners[i].listen.text);
        log_str(&line, "detail",
                r == UV_EADDRINUSE ? "address already in use: another process listens there "
                                     "(pyroguard does not share a port through SO_REUSEPORT "
                                     "with anything but its own workers)"
                : r == UV_EEXIST   ? "the path exists and is not a socket"
                                   : uv_strerror(r));
        log_end(&line);
        return 0;
    }
    return 1;
}

int server_open_listeners(const config_t *cfg, int *fds, const int *first)
{
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        int r = 0;
        if (first != NULL && cfg->listeners[i].listen.addr.ss_family == AF_UNIX) {
            fds[i] = fcntl(first[i], F_DUPFD_CLOEXEC, 0);
            if (fds[i] < 0)
                r = -errno;
        } else {
            r = open_one(&cfg->listeners[i], &fds[i]);
        }
        if (r != 0) {
            log_line_t line;
            log_begin(&line, LOG_ERROR, "listen_failed");
            log_str(&line, "listener", cfg->listeners[i].name);
            log_str(&line, "listen", cfg->listeners[i].listen.text);
            log_str(&line, "detail", uv_strerror(r));
            log_end(&line);
            for (size_t j = 0; j < i; j++)
                close(fds[j]);
            return 0;
        }
    }
    return 1;
}

int server_chown_sockets(const config_t *cfg, uid_t uid, gid_t gid)
{
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&cfg->listeners[i].listen.addr;
        if (un->sun_family != AF_UNIX || chown(un->sun_path, uid, gid) == 0)
            continue;
        log_line_t line;
        log_begin(&line, LOG_ERROR, "listen_failed");
        log_str(&line, "listener", cfg->listeners[i].name);
        log_str(&line, "listen", cfg->listeners[i].listen.text);
        log_str(&line, "detail", strerror(errno));
        log_end(&line);
        return 0;
    }
    return 1;
}

void server_remove_sockets(const config_t *cfg)
{
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&cfg->listeners[i].listen.addr;
        if (un->sun_family == AF_UNIX)
            unlink(un->sun_path);
    }
}

int sock_init(uv_loop_t *loop, sock_t *s, int is_unix)
{
    return is_unix ? uv_pipe_init(loop, &s->pipe, 0) : uv_tcp_init(loop, &s->tcp);
}

/* ---- the worker's loop ---------------------------------------------------------------- */

static void on_connection(uv_stream_t *s, int status);

static void log_listener(const listener_t *l, log_level_t level, const char *event,
                         const char *detail)
{
    log_line_t line;
    log_begin(&line, level, event);
    log_str(&line, "listener", l->srv->cfg->listeners[l->index].name);
    log_uint(&line, "worker", l->srv->index);
    if (detail != NULL)
        log_str(&line, "detail", detail);
    log_uint(&line, "open_connections", __atomic_load_n(l->srv->open_total, __ATOMIC_RELAXED));
    log_end(&line);
}

/* listen_on opens |l|'s handle on a fresh descriptor of the listening socket. */
static int listen_on(listener_t *l, int fd)
{
    int r = sock_init(l->srv->loop, &l->sock, l->is_unix);
    if (r != 0) {
        close(fd);
        return r;
    }
    l->sock.tcp.data = l;
    l->open = 1;
    r = l->is_unix ? uv_pipe_open(&l->sock.pipe, fd) : uv_tcp_open(&l->sock.tcp, fd);
    if (r != 0) {
        close(fd); /* not the handle's: it failed to take it */
        return r;
    }
    return uv_listen((uv_stream_t *)&l->sock, LISTEN_BACKLOG, on_connection);
}

static void on_listener_closed(uv_handle_t *h);

static void on_retry(uv_timer_t *t)
{
    listener_t *l = t->data;
    if (l->srv->draining || l->srv->stopping || l->open)
        return;
    int fd = fcntl(l->keep_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0 || listen_on(l, fd) != 0) {
        if (l->open)
            uv_close((uv_handle_t *)&l->sock, on_listener_closed); /* retried when closed */
        else
            uv_timer_start(&l->retry, on_retry, ACCEPT_RETRY_MS, 0);
        return;
    }
    l->paused = 0;
    log_listener(l, LOG_WARN, "accept_resumed", NULL);
}

static void on_listener_closed(uv_handle_t *h)
{
    listener_t *l = h->data;
    l->open = 0;
    if (l->paused && !l->srv->draining && !l->srv->stopping)
        uv_timer_start(&l->retry, on_retry, ACCEPT_RETRY_MS, 0);
}

static void on_connection(uv_stream_t *s, int status)
{
    listener_t *l = (listener_t *)s; /* sock is the first member */
    if (status == UV_EMFILE || status == UV_ENFILE) {
        /* Out of descriptors, and libuv's own reserve descriptor is gone too (another worker
         * took the one it freed): stop accepting instead of being called again at once.
         * Pending clients wait in the kernel's backlog; accepting resumes when a descriptor
         * is free. One line per pause, not per attempt. */
        if (!l->paused && l->open && !uv_is_closing((uv_handle_t *)&l->sock)) {
            l->paused = 1;
            log_listener(l, LOG_ERROR, "accept_paused", uv_strerror(status));
            uv_close((uv_handle_t *)&l->sock, on_listener_closed);
        }
        return;
    }
    if (status < 0) {
        log_listener(l, LOG_ERROR, "accept_failed", uv_strerror(status));
        return;
    }
    if (l->srv->draining || l->srv->stopping)
        return;
    conn_accept(l);
}

static void on_timer_closed(uv_handle_t *h) {}

static void close_listeners(server_t *srv)
{
    for (size_t i = 0; i < srv->n_listeners; i++) {
        listener_t *l = &srv->listeners[i];
        if (l->open && !uv_is_closing((uv_handle_t *)&l->sock))
            uv_close((uv_handle_t *)&l->sock, on_listener_closed);
        if (!uv_is_closing((uv_handle_t *)&l->retry))
            uv_close((uv_handle_t *)&l->retry, on_timer_closed);
        if (l->keep_fd >= 0) {
            close(l->keep_fd);
            l->keep_fd = -1;
        }
    }
}

static void on_wake_closed(uv_handle_t *h) {}

/* finish ends the loop: once the wake handle is closed nothing keeps it running. */
static void finish(server_t *srv)
{
    close_listeners(srv);
    if (!uv_is_closing((uv_handle_t *)&srv->wake))
        uv_close((uv_handle_t *)&srv->wake, on_wake_closed);
}

static void switch_generation(server_t *srv, generation_t *next)
{
    generation_t *old = srv->gen;
    srv->gen = next;
    srv->cfg = &next->cfg;
    generation_unref(old);
}

static void on_wake(uv_async_t *a)
{
    server_t *srv = a->data;
    generation_t *next;
    int drain, stop;

    uv_mutex_lock(&srv->mailbox_lock);
    next = srv->next_gen;
    srv->next_gen = NULL;
    drain = srv->drain_requested;
    stop = srv->stop_requested;
    uv_mutex_unlock(&srv->mailbox_lock);

    if (next != NULL)
        switch_generation(srv, next);
    if (stop && !srv->stopping) {
        srv->stopping = 1;
        srv->draining = 1;
        conn_close_all(srv, "shutdown");
        finish(srv);
        return;
    }
    if (drain && !srv->draining) {
        srv->draining = 1;
        close_listeners(srv);
        conn_drain_all(srv);
        if (srv->n_conns == 0)
            finish(srv);
    }
}

void server_conn_gone(server_t *srv)
{
    if (srv->draining && srv->n_conns == 0)
        finish(srv);
}

int server_init(server_t *srv, unsigned index, generation_t *gen, const int *fds, uv_async_t *done,
                uint64_t *open_total, uint64_t *conn_ids)
{
    const config_t *cfg = &gen->cfg;
    size_t opened = 0;

    memset(srv, 0, sizeof(*srv));
    srv->index = index;
    srv->gen = generation_ref(gen);
    srv->cfg = &gen->cfg;
    srv->done = done;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        srv->fd_warn_at = (uint64_t)rl.rlim_cur - (uint64_t)rl.rlim_cur / 10;
    srv->open_total = open_total;
    srv->conn_ids = conn_ids;
    srv->loop = &srv->loop_storage;
    inspect_init(&srv->inspect);
    if (uv_loop_init(srv->loop) != 0) {
        srv->loop = NULL;
        goto close_fds;
    }
    uv_mutex_init(&srv->mailbox_lock);
    srv->metrics = metrics_shard_new();
    srv->listeners = pg_calloc(cfg->n_listeners, sizeof(*srv->listeners));
    if (srv->metrics == NULL || srv->listeners == NULL ||
        uv_async_init(srv->loop, &srv->wake, on_wake) != 0)
        goto close_fds;
    srv->wake.data = srv;
    srv->n_listeners = cfg->n_listeners;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        listener_t *l = &srv->listeners[i];
        l->srv = srv;
        l->index = i;
        l->is_unix = cfg->listeners[i].listen.addr.ss_family == AF_UNIX;
        l->keep_fd = -1;
        uv_timer_init(srv->loop, &l->retry);
        l->retry.data = l;
    }
    for (; opened < cfg->n_listeners; opened++) {
        listener_t *l = &srv->listeners[opened];
        l->keep_fd = fcntl(fds[opened], F_DUPFD_CLOEXEC, 0);
        if (l->keep_fd < 0) {
            log_msg(LOG_ERROR, "listen_failed", "cannot duplicate a listening descriptor");
            goto close_fds;
        }
        int r = listen_on(l, fds[opened]);
        if (r != 0) {
            log_line_t line;
            log_begin(&line, LOG_ERROR, "listen_failed");
            log_str(&line, "listener", cfg->listeners[opened].name);
            log_str(&line, "detail", uv_strerror(r));
            log_end(&line);
            opened++; /* listen_on has closed this fd, or its handle will */
            goto close_fds;
        }
    }
    return 1;
close_fds:
    /* Descriptors not yet handed to a handle are closed here; the others with their handle. */
    for (size_t i = opened; i < cfg->n_listeners; i++)
        close(fds[i]);
    log_msg(LOG_ERROR, "startup_failed", "cannot set up a worker");
    return 0;
}

static void worker_main(void *arg)
{
    server_t *srv = arg;
    uv_run(srv->loop, UV_RUN_DEFAULT);
    /* uv_async_send coalesces: the control thread looks at every worker's flag. */
    __atomic_store_n(&srv->finished, 1, __ATOMIC_RELEASE);
    uv_async_send(srv->done);
}

int server_run(server_t *srv)
{
    return uv_thread_create(&srv->thread, worker_main, srv) == 0;
}

static void post(server_t *srv, generation_t *gen, int drain, int stop)
{
    uv_mutex_lock(&srv->mailbox_lock);
    if (gen != NULL) {
        generation_unref(srv->next_gen); /* a newer one replaces one not yet taken */
        srv->next_gen = generation_ref(gen);
    }
    srv->drain_requested |= drain;
    srv->stop_requested |= stop;
    uv_mutex_unlock(&srv->mailbox_lock);
    uv_async_send(&srv->wake);
}

void server_post_generation(server_t *srv, generation_t *gen)
{
    post(srv, gen, 0, 0);
}

void server_post_drain(server_t *srv)
{
    post(srv, NULL, 1, 0);
}

void server_post_stop(server_t *srv)
{
    post(srv, NULL, 0, 1);
}

static void on_leftover_closed(uv_handle_t *h) {}

static void close_leftover(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, on_leftover_closed);
}

void server_cleanup(server_t *srv)
{
    if (srv->loop != NULL) {
        /* A worker that never ran (startup failed) still has open handles: close them. */
        uv_walk(srv->loop, close_leftover, NULL);
        uv_run(srv->loop, UV_RUN_DEFAULT);
        uv_loop_close(srv->loop);
        uv_mutex_destroy(&srv->mailbox_lock);
        srv->loop = NULL;
    }
    for (size_t i = 0; i < srv->n_listeners; i++) {
        if (srv->listeners[i].keep_fd >= 0)
            close(srv->listeners[i].keep_fd);
    }
    inspect_cleanup(&srv->inspect);
    generation_unref(srv->next_gen);
    generation_unref(srv->gen);
    metrics_shard_free(srv->metrics);
    free(srv->listeners);
    memset(srv, 0, sizeof(*srv));
}
