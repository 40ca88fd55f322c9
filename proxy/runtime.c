#include "runtime.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/x509.h>
#include <uv.h>

#include "alloc.h"
#include "admin.h"
#include "generation.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "sys.h"
#include "version.h"

#define PROBE_INTERVAL_MS 1000 /* how often readiness dials each backend */
#define PROBE_TIMEOUT_MS  1000
#define WATCH_DEBOUNCE_MS 300 /* files of one rotation settle before the reload */
#define MAX_WATCHED_FILES (8 + 3 * CONFIG_MAX_LISTENERS) /* the file, tls.*, upstream_tls.* */

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

/* The readiness probe of one listener's backend. */
typedef struct {
    struct runtime *rt;
    size_t index;
    uv_tcp_t tcp;
    uv_connect_t req;
    uv_timer_t timeout;
    int in_flight;
    int ok;
    char why[160];
} probe_t;

typedef struct {
    uv_fs_poll_t poll;
    struct runtime *rt;
} watch_t;

typedef struct runtime {
    uv_loop_t loop;
    const char *path;
    generation_t *gen;
    uint64_t last_gen_id;
    server_t *workers;
    unsigned n_workers;
    unsigned started;
    uv_async_t worker_done;
    uv_signal_t sig_hup, sig_term, sig_int;
    uv_timer_t drain_timer;
    uv_timer_t probe_timer;
    uv_timer_t debounce;
    probe_t *probes;
    size_t n_probes;
    watch_t *watches[MAX_WATCHED_FILES];
    size_t n_watches;
    admin_t *admin;
    metrics_process_t proc;
    int draining;
    int stopping;
    int closing;
    uint64_t open_total; /* connections open in every worker (atomic) */
    uint64_t conn_ids;
    char version[256];
} runtime_t;

static void log_errors(const char *event, const config_errors_t *errs)
{
    for (size_t i = 0; i < errs->n; i++) {
        log_line_t l;
        log_begin(&l, LOG_ERROR, event);
        log_str(&l, "detail", errs->lines[i]);
        log_end(&l);
    }
}

static void notify(const char *state)
{
    char why[160];
    if (sys_notify(state, why, sizeof(why)) < 0) {
        log_line_t l;
        log_begin(&l, LOG_WARN, "notify_failed");
        log_str(&l, "detail", why);
        log_end(&l);
    }
}

/* ---- certificate expiry gauges -------------------------------------------------------- */

static int64_t not_after(const X509 *x)
{
    int days = 0, secs = 0;
    if (x == NULL || !ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)))
        return 0;
    return (int64_t)time(NULL) + (int64_t)days * 86400 + secs;
}

static void update_expiry(runtime_t *rt)
{
    SSL_CTX *ctx = rt->gen->ssl_ctx;
    rt->proc.cert_not_after = 0;
    rt->proc.ca_not_after = 0;
    rt->proc.config_generation = rt->gen->id;
    rt->proc.config_loaded_at = rt->gen->loaded_at;
    if (ctx == NULL) /* client-mode listeners only: no server certificate */
        return;
    rt->proc.cert_not_after = not_after(SSL_CTX_get0_certificate(ctx));
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
    for (size_t i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        int64_t t = x != NULL ? not_after(x) : 0;
        if (t != 0 && (rt->proc.ca_not_after == 0 || t < rt->proc.ca_not_after))
            rt->proc.ca_not_after = t;
    }
    rt->proc.config_generation = rt->gen->id;
    rt->proc.config_loaded_at = rt->gen->loaded_at;
}

/* ---- readiness: is every backend accepting TCP? ---------------------------------------- */

static void on_probe_closed(uv_handle_t *h)
{
    probe_t *p = h->data;
    p->in_flight = 0;
}

static void probe_done(probe_t *p, int status)
{
    if (!p->in_flight || uv_is_closing((uv_handle_t *)&p->tcp))
        return;
    const config_listener_t *lc = &p->rt->gen->cfg.listeners[p->index];
    p->ok = status == 0;
    if (!p->ok)
        snprintf(p->why, sizeof(p->why), "backend of listener '%s' (%s) is not accepting TCP: %s",
                 lc->name, lc->backend.text, uv_strerror(status));
    uv_timer_stop(&p->timeout);
    uv_close((uv_handle_t *)&p->tcp, on_probe_closed);
}

static void on_probe_connect(uv_connect_t *req, int status)
{
    probe_done(req->data, status);
}

static void on_probe_timeout(uv_timer_t *t)
{
    probe_done(t->data, UV_ETIMEDOUT);
}

static void probe_all(uv_timer_t *t)
{
    runtime_t *rt = t->data;
    for (size_t i = 0; i < rt->n_probes; i++) {
        probe_t *p = &rt->probes[i];
        if (p->in_flight || i >= rt->gen->cfg.n_listeners)
            continue;
        const config_listener_t *lc = &rt->gen->cfg.listeners[i];
        if (lc->mode == LISTENER_CLIENT) {
            /* A TCP probe of an upstream TLS server would be a failed handshake in its logs
             * every second: a client-mode listener is ready once it listens. */
            p->ok = 1;
            continue;
        }
        if (uv_tcp_init(&rt->loop, &p->tcp) != 0)
            continue;
        p->tcp.data = p;
        p->req.data = p;
        p->in_flight = 1;
        int r = uv_tcp_connect(&p->req, &p->tcp, (const struct sockaddr *)&lc->backend.addr,
                               on_probe_connect);
        if (r != 0) {
            probe_done(p, r);
            continue;
        }
        uv_timer_start(&p->timeout, on_probe_timeout, PROBE_TIMEOUT_MS, 0);
    }
}

static int ready(void *arg, char *why, size_t why_len)
{
    runtime_t *rt = arg;
    if (rt->draining) {
        snprintf(why, why_len, "draining: not accepting new connections");
        return 0;
    }
    for (size_t i = 0; i < rt->n_probes; i++) {
        if (!rt->probes[i].ok) {
            snprintf(why, why_len, "%s", rt->probes[i].why);
            return 0;
        }
    }
    return 1;
}

static int render(void *arg, CBB *out)
{
    runtime_t *rt = arg;
    metrics_shard_t *shards[256];
    size_t n = 0;
    for (unsigned i = 0; i < rt->n_workers && n < 256; i++) {
        if (rt->workers[i].metrics != NULL)
            shards[n++] = rt->workers[i].metrics;
    }
    rt->proc.draining = rt->draining;
    return metrics_render(shards, n, &rt->proc, out);
}

/* ---- watching files -------------------------------------------------------------------- */

static void reload(runtime_t *rt, const char *trigger);

static void on_debounce(uv_timer_t *t)
{
    reload(t->data, "watch");
}

static void on_watch(uv_fs_poll_t *h, int status, const uv_stat_t *prev, const uv_stat_t *curr)
{
    watch_t *w = h->data;
    /* Any change, including a file appearing or going (a symlink swap in a Secret volume). */
    if (!w->rt->draining)
        uv_timer_start(&w->rt->debounce, on_debounce, WATCH_DEBOUNCE_MS, 0);
}

static void on_watch_closed(uv_handle_t *h)
{
    free(h->data);
}

static void unwatch(runtime_t *rt)
{
    for (size_t i = 0; i < rt->n_watches; i++)
        uv_close((uv_handle_t *)&rt->watches[i]->poll, on_watch_closed);
    rt->n_watches = 0;
}

static void watch_file(runtime_t *rt, const char *path, uint64_t interval)
{
    if (path == NULL || rt->n_watches == MAX_WATCHED_FILES)
        return;
    watch_t *w = pg_calloc(1, sizeof(*w));
    if (w == NULL)
        return;
    w->rt = rt;
    uv_fs_poll_init(&rt->loop, &w->poll);
    w->poll.data = w;
    if (uv_fs_poll_start(&w->poll, on_watch, path, (unsigned)interval) != 0) {
        uv_close((uv_handle_t *)&w->poll, on_watch_closed);
        return;
    }
    rt->watches[rt->n_watches++] = w;
}

/* rewatch follows the files the current generation names (a reload may name others). */
static void rewatch(runtime_t *rt)
{
    const config_t *cfg = &rt->gen->cfg;
    unwatch(rt);
    if (!cfg->reload.watch || rt->draining)
        return;
    uint64_t iv = cfg->reload.poll_interval_ms;
    watch_file(rt, rt->path, iv);
    watch_file(rt, cfg->tls.cert.path, iv);
    watch_file(rt, cfg->tls.key.path, iv);
    watch_file(rt, cfg->tls.key_password_file.path, iv);
    watch_file(rt, cfg->tls.pkcs12.path, iv);
    watch_file(rt, cfg->tls.pkcs12_password_file.path, iv);
    watch_file(rt, cfg->tls.client_ca.path, iv);
    watch_file(rt, cfg->tls.crl.path, iv);
    for (size_t i = 0; i < cfg->n_listeners; i++) { /* client mode's own certificate and CA */
        const config_upstream_tls_t *t = &cfg->listeners[i].upstream_tls;
        watch_file(rt, t->cert.path, iv);
        watch_file(rt, t->key.path, iv);
        watch_file(rt, t->ca.path, iv);
    }
}

/* ---- reload ---------------------------------------------------------------------------- */

static void reload(runtime_t *rt, const char *trigger)
{
    config_errors_t errs = {0};
    log_line_t l;

    if (rt->draining)
        return;
    char why[160];
    if (sys_notify_reloading(why, sizeof(why)) < 0)
        log_msg(LOG_WARN, "notify_failed", why);
    generation_t *next = generation_load(rt->path, rt->last_gen_id + 1, &errs);
    const char *fixed = next != NULL ? generation_restart_needed(rt->gen, next) : NULL;
    if (next == NULL || fixed != NULL) {
        rt->proc.reloads_failed++;
        log_begin(&l, LOG_ERROR, "reload_failed");
        log_str(&l, "trigger", trigger);
        log_str(&l, "config", rt->path);
        log_uint(&l, "generation", rt->gen->id);
        if (fixed != NULL)
            log_str(&l, "detail",
                    "this key cannot change without a restart; the running "
                    "configuration stays in force");
        if (fixed != NULL)
            log_str(&l, "key", fixed);
        else
            log_str(&l, "detail",
                    "the new configuration is invalid; the running one stays in "
                    "force");
        log_end(&l);
        log_errors("reload_error", &errs);
        generation_unref(next);
        config_errors_free(&errs);
        notify("READY=1");
        return;
    }
    config_errors_free(&errs);
    rt->last_gen_id = next->id;
    for (unsigned i = 0; i < rt->started; i++)
        server_post_generation(&rt->workers[i], next);
    generation_unref(rt->gen);
    rt->gen = next;
    rt->proc.reloads_ok++;
    log_set_level(next->cfg.log.level);
    update_expiry(rt);
    rewatch(rt);
    log_begin(&l, LOG_INFO, "reloaded");
    log_str(&l, "trigger", trigger);
    log_str(&l, "config", rt->path);
    log_uint(&l, "generation", next->id);
    log_end(&l);
    notify("READY=1");
}

/* ---- drain and stop -------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {}

static void close_control(runtime_t *rt)
{
    if (rt->closing)
        return;
    rt->closing = 1;
    unwatch(rt);
    uv_close((uv_handle_t *)&rt->sig_hup, on_handle_closed);
    uv_close((uv_handle_t *)&rt->sig_term, on_handle_closed);
    uv_close((uv_handle_t *)&rt->sig_int, on_handle_closed);
    uv_close((uv_handle_t *)&rt->drain_timer, on_handle_closed);
    uv_close((uv_handle_t *)&rt->probe_timer, on_handle_closed);
    uv_close((uv_handle_t *)&rt->debounce, on_handle_closed);
    for (size_t i = 0; i < rt->n_probes; i++) {
        probe_t *p = &rt->probes[i];
        if (p->in_flight && !uv_is_closing((uv_handle_t *)&p->tcp))
            uv_close((uv_handle_t *)&p->tcp, on_probe_closed);
        uv_close((uv_handle_t *)&p->timeout, on_handle_closed);
    }
    uv_close((uv_handle_t *)&rt->worker_done, on_handle_closed);
    if (rt->admin != NULL)
        admin_close(rt->admin);
    rt->admin = NULL;
}

static void on_worker_done(uv_async_t *a)
{
    runtime_t *rt = a->data;
    for (unsigned i = 0; i < rt->started; i++) {
        if (!__atomic_load_n(&rt->workers[i].finished, __ATOMIC_ACQUIRE))
            return;
    }
    close_control(rt);
}

static void stop_now(runtime_t *rt)
{
    rt->stopping = 1;
    for (unsigned i = 0; i < rt->started; i++)
        server_post_stop(&rt->workers[i]);
}

static void on_drain_timeout(uv_timer_t *t)
{
    runtime_t *rt = t->data;
    log_msg(LOG_WARN, "drain_timeout",
            "calls still in flight after limits.drain_timeout: closing their connections");
    stop_now(rt);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    runtime_t *rt = sig->data;
    log_line_t l;

    if (rt->stopping || rt->closing)
        return; /* already on the way out (a failed start, or stop_now) */
    if (signum == SIGHUP) {
        reload(rt, "SIGHUP");
        return;
    }
    const char *name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
    if (rt->draining) {
        /* A second request to stop: do not wait for calls in flight any longer. */
        log_begin(&l, LOG_WARN, "shutdown");
        log_str(&l, "signal", name);
        log_str(&l, "detail", "second signal: closing every connection now");
        log_end(&l);
        stop_now(rt);
        return;
    }
    rt->draining = 1;
    notify("STOPPING=1");
    unwatch(rt);
    log_begin(&l, LOG_INFO, "shutdown");
    log_str(&l, "signal", name);
    log_str(&l, "detail", "draining: no new connections; calls in flight may finish");
    log_uint(&l, "drain_timeout_ms", rt->gen->cfg.limits.drain_timeout_ms);
    log_end(&l);
    for (unsigned i = 0; i < rt->started; i++)
        server_post_drain(&rt->workers[i]);
    uv_timer_start(&rt->drain_timer, on_drain_timeout, rt->gen->cfg.limits.drain_timeout_ms, 0);
}

/* ---- start ----------------------------------------------------------------------------- */

static void log_listening(const config_t *cfg, unsigned workers)
{
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        log_line_t line;
        log_begin(&line, LOG_INFO, "listening");
        log_str(&line, "listener", cfg->listeners[i].name);
        log_str(&line, "listen", cfg->listeners[i].listen.text);
        if (cfg->listeners[i].mode == LISTENER_CLIENT) {
            log_str(&line, "mode", "client");
            log_str(&line, "upstream", cfg->listeners[i].upstream.text);
        } else {
            log_str(&line, "backend", cfg->listeners[i].backend.text);
        }
        log_uint(&line, "workers", workers);
        log_end(&line);
    }
}

/* open_everything opens every socket the process will ever need, while it may still. */
static int open_everything(runtime_t *rt, int *fds)
{
    const config_t *cfg = &rt->gen->cfg;
    if (!server_check_listeners_free(cfg))
        return 0;
    for (unsigned w = 0; w < rt->n_workers; w++) {
        if (!server_open_listeners(cfg, fds + (size_t)w * cfg->n_listeners, w > 0 ? fds : NULL)) {
            for (size_t i = 0; i < (size_t)w * cfg->n_listeners; i++)
                close(fds[i]);
            return 0;
        }
    }
    if (cfg->admin.enabled) {
        rt->admin = admin_start(&rt->loop, &cfg->admin.listen, ready, render, rt);
        if (rt->admin == NULL) {
            for (size_t i = 0; i < (size_t)rt->n_workers * cfg->n_listeners; i++)
                close(fds[i]);
            return 0;
        }
    }
    return 1;
}

static int harden(const config_t *cfg)
{
    char why[200];
    if (cfg->user != NULL || cfg->group != NULL) {
        /* Unix sockets were created by root: they go to the user and group served. */
        uid_t uid;
        gid_t gid;
        if (!sys_resolve_ids(cfg->user, cfg->group, &uid, &gid, why, sizeof(why))) {
            log_msg(LOG_ERROR, "startup_failed", why);
            return 0;
        }
        if (geteuid() == 0 && !server_chown_sockets(cfg, uid, gid))
            return 0;
    }
    if ((cfg->user != NULL || cfg->group != NULL) &&
        !sys_drop_privileges(cfg->user, cfg->group, why, sizeof(why))) {
        log_msg(LOG_ERROR, "startup_failed", why);
        return 0;
    }
    if (!sys_no_new_privs(why, sizeof(why))) {
        log_msg(LOG_ERROR, "startup_failed", why);
        return 0;
    }
    return 1;
}

/* init_control initialises every handle of the control loop (close_control closes them all,
 * whatever happens next) and starts catching signals; start_control starts the rest once the
 * workers run. */
static void init_control(runtime_t *rt)
{
    uv_async_init(&rt->loop, &rt->worker_done, on_worker_done);
    uv_signal_init(&rt->loop, &rt->sig_hup);
    uv_signal_init(&rt->loop, &rt->sig_term);
    uv_signal_init(&rt->loop, &rt->sig_int);
    uv_timer_init(&rt->loop, &rt->drain_timer);
    uv_timer_init(&rt->loop, &rt->probe_timer);
    uv_timer_init(&rt->loop, &rt->debounce);
    rt->worker_done.data = rt->sig_hup.data = rt->sig_term.data = rt->sig_int.data = rt;
    rt->drain_timer.data = rt->probe_timer.data = rt->debounce.data = rt;
    for (size_t i = 0; i < rt->n_probes; i++) {
        rt->probes[i].rt = rt;
        rt->probes[i].index = i;
        snprintf(rt->probes[i].why, sizeof(rt->probes[i].why), "backend not probed yet");
        uv_timer_init(&rt->loop, &rt->probes[i].timeout);
        rt->probes[i].timeout.data = &rt->probes[i];
    }
    /* Signals are caught from here on, before any listener opens: one that arrives while the
     * workers start (an orchestrator stopping the pod at once) waits in libuv's queue and
     * starts a drain when the loop runs, instead of killing the process with its connections
     * by the default action. */
    uv_signal_start(&rt->sig_hup, on_signal, SIGHUP);
    uv_signal_start(&rt->sig_term, on_signal, SIGTERM);
    uv_signal_start(&rt->sig_int, on_signal, SIGINT);
}

static void start_control(runtime_t *rt)
{
    /* Readiness is only asked through the admin endpoint; without it nobody dials the
     * backends but the clients' connections. */
    if (rt->gen->cfg.admin.enabled)
        uv_timer_start(&rt->probe_timer, probe_all, 0, PROBE_INTERVAL_MS);
    rewatch(rt);
}

int runtime_run(const char *config_path)
{
    runtime_t rt;
    config_errors_t errs = {0};
    int *fds = NULL;
    int rc = EXIT_RUNTIME;

    memset(&rt, 0, sizeof(rt));
    rt.path = config_path;
    rt.gen = generation_load(config_path, 1, &errs);
    if (rt.gen == NULL) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.lines[i]);
        config_errors_free(&errs);
        return EXIT_USAGE;
    }
    config_errors_free(&errs);
    rt.last_gen_id = 1;
    const config_t *cfg = &rt.gen->cfg;
    log_set_level(cfg->log.level);
    /* A peer closing while we write must be an error return, not a fatal signal. */
    signal(SIGPIPE, SIG_IGN);
    version_string(rt.version, sizeof(rt.version));
    rt.proc.version = PYROGUARD_VERSION;
    rt.proc.boringssl_version = "BoringSSL"; /* it has no version of its own to report */
    rt.proc.libuv_version = uv_version_string();
    rt.n_workers = cfg->workers ? (unsigned)cfg->workers : sys_cpu_count();
    rt.workers = pg_calloc(rt.n_workers, sizeof(*rt.workers));
    rt.probes = pg_calloc(cfg->n_listeners, sizeof(*rt.probes));
    fds = pg_calloc((size_t)rt.n_workers * cfg->n_listeners, sizeof(*fds));
    if (rt.workers == NULL || rt.probes == NULL || fds == NULL || uv_loop_init(&rt.loop) != 0) {
        log_msg(LOG_ERROR, "startup_failed", "out of memory");
        goto free_memory;
    }
    rt.n_probes = cfg->n_listeners;
    init_control(&rt);
    log_line_t l;
    log_begin(&l, LOG_INFO, "start");
    log_str(&l, "version", rt.version);
    log_str(&l, "config", config_path);
    log_uint(&l, "workers", rt.n_workers);
    log_end(&l);

    if (!open_everything(&rt, fds))
        goto close_loop;
    /* Every socket is open and every file read: what the process may do can only shrink. */
    if (!harden(cfg)) {
        for (size_t i = 0; i < (size_t)rt.n_workers * cfg->n_listeners; i++)
            close(fds[i]);
        goto close_loop;
    }
    for (unsigned w = 0; w < rt.n_workers; w++) {
        int ok = server_init(&rt.workers[w], w, rt.gen, fds + (size_t)w * cfg->n_listeners,
                             &rt.worker_done, &rt.open_total, &rt.conn_ids);
        if (ok)
            ok = server_run(&rt.workers[w]);
        if (!ok) {
            server_cleanup(&rt.workers[w]);
            for (unsigned v = w + 1; v < rt.n_workers; v++)
                for (size_t i = 0; i < cfg->n_listeners; i++)
                    close(fds[(size_t)v * cfg->n_listeners + i]);
            stop_now(&rt);
            break;
        }
        rt.started++;
    }
    if (rt.started == rt.n_workers) {
        rc = EXIT_OK;
        log_listening(cfg, rt.n_workers);
        update_expiry(&rt);
        start_control(&rt);
        notify("READY=1");
    } else if (rt.started == 0) {
        close_control(&rt);
    }
    uv_run(&rt.loop, UV_RUN_DEFAULT);
    for (unsigned w = 0; w < rt.started; w++) {
        uv_thread_join(&rt.workers[w].thread);
        server_cleanup(&rt.workers[w]);
    }
    if (rt.started > 0)
        server_remove_sockets(&rt.gen->cfg); /* Unix-socket listeners leave no file behind */
    log_msg(LOG_INFO, "stopped", rc == EXIT_OK ? "clean exit" : "startup failed");
close_loop:
    if (!rt.closing)
        close_control(&rt);
    uv_run(&rt.loop, UV_RUN_DEFAULT);
    uv_loop_close(&rt.loop);
free_memory:
    free(rt.workers);
    free(rt.probes);
    free(fds);
    generation_unref(rt.gen);
    return rc;
}
