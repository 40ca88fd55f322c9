/* generation: one loaded state of pyroguard — the configuration (with its compiled policy)
 * and the TLS context built from it — shared by every event loop and swapped whole on reload.
 *
 * A generation is immutable once published. Each holder keeps a reference: the control thread
 * (the current generation), every worker (its current one), every connection (the one it was
 * accepted under: its TLS context, listener and limits). References are atomic, so a worker
 * may drop one while another thread takes one; the last reference frees the configuration and
 * releases the SSL_CTX (SSL objects of open connections keep their own reference to it).
 *
 * Ownership: generation_load returns a generation with one reference, owned by the caller. */
#ifndef PYROGUARD_GENERATION_H
#define PYROGUARD_GENERATION_H

#include <stdint.h>

#include <openssl/ssl.h>

#include "config.h"

typedef struct {
    config_t cfg;
    SSL_CTX *ssl_ctx;       /* server mode (tls:); NULL when every listener is a client */
    SSL_CTX **upstream_ctx; /* per listener: client mode's context, NULL for server mode */
    uint64_t id;       /* 1 for the configuration read at start, then +1 per successful reload */
    int64_t loaded_at; /* unix time */
    int refs;
} generation_t;

/* generation_load reads |path| and builds its TLS context. Returns NULL with every problem in
 * |errs| (file:line:col: path: reason). |id| is stored as is. */
generation_t *generation_load(const char *path, uint64_t id, config_errors_t *errs);

generation_t *generation_ref(generation_t *g);
void generation_unref(generation_t *g);

/* generation_restart_needed compares what a reload cannot change on a running process (the
 * listening addresses, workers, admin.listen, user, group). Returns NULL when |next| may
 * replace |cur|, else which key differs. */
const char *generation_restart_needed(const generation_t *cur, const generation_t *next);

#endif
