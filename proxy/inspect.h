/* inspect: the decision on one complete client message before any byte of it is forwarded
 * (DESIGN.md property 4).
 *
 * This is the single place where a request is judged. Today it enforces the serializer gate
 * (PROTOCOL.md §2.5, §8 row 1) and the compression switch; decoding names and the per-client
 * policy plug in here, so the data path never changes when they arrive. */
#ifndef PYROGUARD_INSPECT_H
#define PYROGUARD_INSPECT_H

#include "config.h"
#include "frame.h"

typedef enum {
    INSPECT_ALLOW,
    INSPECT_REFUSE,
} inspect_verdict_t;

typedef struct {
    const char *reason; /* stable code for logs and metrics, e.g. "serializer_not_allowed" */
    char detail[256];   /* what the client and the operator are told, "pyroguard: …" */
} inspect_result_t;

/* inspect_request judges |f|, a validated CONNECT, INVOKE or PING from a client. On
 * INSPECT_REFUSE, |out| says why. PING is never deserialized by Pyro and passes whatever its
 * serializer id (PROTOCOL.md §2.5). */
inspect_verdict_t inspect_request(const config_t *cfg, const frame_t *f, inspect_result_t *out);

#endif
