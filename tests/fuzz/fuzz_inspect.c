/* fuzz_inspect: a whole client message through framing and inspection — zlib inflation,
 * every decoder, BLBI, and the name rules — with the default configuration (all four safe
 * serializers, compression allowed) and every protocol accepted (Pyro4 46, 47, 48 and Pyro5,
 * chosen by the input's version field as for a connection's first message). Whatever the
 * verdict, an allowed request must name only names that pass the rules, a Pyro5 CONNECT must
 * name its object, a 46/47 message with a flag those protocols do not establish is never
 * allowed, and nothing may leak. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "call.h"
#include "config.h"
#include "frame.h"
#include "inspect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static config_t cfg;
    static int ready;
    frame_t f;
    frame_error_t err;

    if (!ready) {
        config_init(&cfg);
        cfg.pyro.max_inflated_bytes = 1 << 20; /* keep bombs cheap for the fuzzer */
        cfg.pyro.protocols = FRAME_PROTO_BIT(PROTO_PYRO4_46) | FRAME_PROTO_BIT(PROTO_PYRO4_47) |
                             FRAME_PROTO_BIT(PROTO_PYRO4) | FRAME_PROTO_BIT(PROTO_PYRO5);
        ready = 1;
    }
    if (frame_parse_as(data, size, PROTO_NONE, cfg.pyro.protocols, cfg.pyro.max_message_bytes, &f,
                       &err) != FRAME_OK)
        return 0;
    if (f.type != MSG_CONNECT && f.type != MSG_INVOKE && f.type != MSG_PING)
        return 0;
    inspect_t in;
    inspect_init(&in);
    inspect_verdict_t v = inspect_request(&cfg, &f, &in);
    assert(v != INSPECT_ALLOW || frame_unsupported_flags(&f) == 0);
    assert(v != INSPECT_ALLOW || f.type != MSG_CONNECT || f.proto != PROTO_PYRO5 ||
           in.call.object != NULL);
    if (v == INSPECT_ALLOW && in.decoded) {
        for (size_t i = 0; i < in.call.n_names; i++) {
            call_refusal_t r;
            int ok = call_check_name(in.call.names[i].name, "name", &r);
            assert(ok);
            (void)ok;
        }
    }
    inspect_cleanup(&in);
    return 0;
}
