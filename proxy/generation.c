#include "generation.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "tls.h"

static void free_upstream_contexts(generation_t *g)
{
    for (size_t i = 0; g->upstream_ctx != NULL && i < g->cfg.n_listeners; i++)
        SSL_CTX_free(g->upstream_ctx[i]);
    free(g->upstream_ctx);
    g->upstream_ctx = NULL;
}

generation_t *generation_load(const char *path, uint64_t id, config_errors_t *errs)
{
    generation_t *g = pg_calloc(1, sizeof(*g));
    if (g == NULL) {
        config_error(errs, path, (config_mark_t){0, 0}, "", "out of memory");
        return NULL;
    }
    if (!config_load(path, &g->cfg, errs))
        goto free_config;
    int any_server = 0;
    g->upstream_ctx = pg_calloc(g->cfg.n_listeners, sizeof(*g->upstream_ctx));
    if (g->upstream_ctx == NULL) {
        config_error(errs, path, (config_mark_t){0, 0}, "", "out of memory");
        goto free_contexts;
    }
    for (size_t i = 0; i < g->cfg.n_listeners; i++) {
        const config_listener_t *l = &g->cfg.listeners[i];
        if (l->mode != LISTENER_CLIENT) {
            any_server = 1;
            continue;
        }
        g->upstream_ctx[i] = tls_upstream_ctx_new(&g->cfg, l, errs);
        if (g->upstream_ctx[i] == NULL)
            goto free_contexts;
    }
    if (any_server && (g->ssl_ctx = tls_ctx_new(&g->cfg, errs)) == NULL)
        goto free_contexts;
    g->id = id;
    g->loaded_at = (int64_t)time(NULL);
    g->refs = 1;
    return g;
free_contexts:
    free_upstream_contexts(g);
free_config:
    config_free(&g->cfg);
    free(g);
    return NULL;
}

generation_t *generation_ref(generation_t *g)
{
    __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED);
    return g;
}

void generation_unref(generation_t *g)
{
    if (g == NULL || __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    SSL_CTX_free(g->ssl_ctx);
    free_upstream_contexts(g);
    config_free(&g->cfg);
    free(g);
}

static int same_text(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

const char *generation_restart_needed(const generation_t *cur, const generation_t *next)
{
    const config_t *a = &cur->cfg, *b = &next->cfg;
    if (a->n_listeners != b->n_listeners)
        return "listeners";
    for (size_t i = 0; i < a->n_listeners; i++) {
        if (!same_text(a->listeners[i].name, b->listeners[i].name) ||
            a->listeners[i].mode != b->listeners[i].mode ||
            a->listeners[i].socket_mode != b->listeners[i].socket_mode ||
            memcmp(&a->listeners[i].listen.addr, &b->listeners[i].listen.addr,
                   sizeof(a->listeners[i].listen.addr)) != 0)
            return "listeners";
    }
    if (a->workers != b->workers)
        return "workers";
    if (a->admin.enabled != b->admin.enabled ||
        (a->admin.enabled &&
         memcmp(&a->admin.listen.addr, &b->admin.listen.addr, sizeof(a->admin.listen.addr)) != 0))
        return "admin.listen";
    if (!same_text(a->user, b->user) || !same_text(a->group, b->group))
        return "user/group";
    return NULL;
}
