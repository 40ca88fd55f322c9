/* fuzz_inspect: a whole client message through framing and inspection — zlib inflation,
 * every decoder, BLBI, and the name rules — with the default configuration (all four safe
 * serializers, compression allowed). Whatever the verdict, an allowed request must name only
 * names that pass the rules, and nothing may leak. */
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
        ready = 1;
    }
    if (frame_parse(data, size, cfg.pyro.max_message_bytes, &f, &err) != FRAME_OK)
        return 0;
    if (f.type != MSG_CONNECT && f.type != MSG_INVOKE && f.type != MSG_PING)
        return 0;
    inspect_t in;
    inspect_init(&in);
    if (inspect_request(&cfg, &f, &in) == INSPECT_ALLOW && in.decoded) {
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
