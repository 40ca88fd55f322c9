#include "inspect.h"

#include <stdio.h>

static inspect_verdict_t refuse(inspect_result_t *out, const char *reason)
{
    out->reason = reason;
    return INSPECT_REFUSE;
}

inspect_verdict_t inspect_request(const config_t *cfg, const frame_t *f, inspect_result_t *out)
{
    out->reason = NULL;
    out->detail[0] = '\0';
    if (f->type == MSG_PING)
        return INSPECT_ALLOW;

    /* The daemon checks the header's id against its accept list before it deserializes
     * (PROTOCOL.md §2.5); with pickle, dill or cloudpickle the deserialization itself runs
     * the attacker's code, so the id is the only thing that can be judged. */
    if (!config_serializer_allowed(cfg, f->serializer_id)) {
        const char *name = frame_serializer_name(f->serializer_id);
        if (name != NULL)
            snprintf(out->detail, sizeof(out->detail),
                     "pyroguard: serializer %s (id %u) is not allowed", name,
                     (unsigned)f->serializer_id);
        else
            snprintf(out->detail, sizeof(out->detail),
                     "pyroguard: unknown serializer id %u is not allowed",
                     (unsigned)f->serializer_id);
        return refuse(out, "serializer_not_allowed");
    }
    if ((f->flags & FLAG4_COMPRESSED) && !cfg->pyro.compression_allow) {
        snprintf(out->detail, sizeof(out->detail),
                 "pyroguard: compressed messages are not allowed");
        return refuse(out, "compression_denied");
    }
    return INSPECT_ALLOW;
}
