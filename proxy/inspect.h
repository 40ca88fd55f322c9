/* inspect: the decision on one complete client message before any byte of it is forwarded
 * (DESIGN.md property 4), decoding it exactly as the daemon will (property 2).
 *
 * Order, as the daemon's (PROTOCOL.md §6): PING passes untouched; the serializer id must be
 * allowed (§2.5); compression must be allowed and the payload inflates (zlib, bounded by
 * pyro.max_inflated_bytes) — the daemon inflates CONNECT and INVOKE alike (§2.6); a
 * KEEPSERIALIZED INVOKE takes its object and method from the marshal BLBI annotation and the
 * payload is not decoded (§2.8); otherwise the payload is decoded with its serializer and the
 * names are read in dispatch order (call.h) and must pass the name rules.
 *
 * An inspect_t is a stack object: inspect_init, any number of inspect_request calls (each
 * resets it), inspect_cleanup. After a request, |call| (when decoded) stays readable until
 * the next request or cleanup: it lives in the inspect_t's arena. */
#ifndef PYROGUARD_INSPECT_H
#define PYROGUARD_INSPECT_H

#include "call.h"
#include "config.h"
#include "frame.h"
#include "value.h"

typedef enum {
    INSPECT_ALLOW,
    INSPECT_REFUSE,
} inspect_verdict_t;

typedef struct {
    const char *reason; /* stable code for logs and metrics, e.g. "serializer_not_allowed" */
    char detail[256];   /* what the client and the operator are told, "pyroguard: …" */
    int decoded;        /* |call| holds what was read (also for most refusals) */
    call_t call;
    value_arena_t arena;
    uint8_t *inflated; /* the inflated payload, owned */
    size_t inflated_len;
} inspect_t;

void inspect_init(inspect_t *in);
void inspect_cleanup(inspect_t *in);

/* inspect_request judges |f|, a validated CONNECT, INVOKE or PING from a client. On
 * INSPECT_REFUSE, |in->reason| and |in->detail| say why. */
inspect_verdict_t inspect_request(const config_t *cfg, const frame_t *f, inspect_t *in);

#endif
