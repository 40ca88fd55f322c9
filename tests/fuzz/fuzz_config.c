/* fuzz_config: libFuzzer target for the YAML configuration loader (proxy/config.c).
 *
 * Every input is loaded and everything freed, so LeakSanitizer sees any path that forgets a
 * string. The loader's contract is checked too: failure always leaves at least one error
 * line, each in the "NAME:LINE:COL: " form, and success leaves a usable configuration. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static void check_valid(const config_t *cfg)
{
    CHECK(cfg->n_listeners >= 1 && cfg->n_listeners <= CONFIG_MAX_LISTENERS);
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const config_listener_t *l = &cfg->listeners[i];
        CHECK(l->name != NULL && l->listen.text != NULL && l->backend.text != NULL);
    }
    /* The server's certificate: PEM cert and key, or a PKCS#12 keystore, never both. */
    int pem = cfg->tls.cert.path != NULL && cfg->tls.key.path != NULL;
    CHECK(pem != (cfg->tls.pkcs12.path != NULL));
    /* Every rule has a name and a screen entry; rule names are unique. */
    CHECK(cfg->n_clients == 0 || cfg->screens != NULL);
    for (size_t i = 0; i < cfg->n_clients; i++) {
        CHECK(cfg->clients[i].name != NULL);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(cfg->clients[i].name, cfg->clients[j].name) != 0);
        for (size_t k = 0; k < cfg->clients[i].n_allow; k++) {
            const config_access_t *a = &cfg->clients[i].allow[k];
            CHECK(a->objects.n != 0 && (a->methods.n + a->get.n + a->set.n) != 0);
        }
    }
    CHECK(cfg->tls.client_ca.path != NULL);
    CHECK(cfg->pyro.serializers != 0 && cfg->pyro.protocols != 0);
    /* pickle (4), dill (5) and cloudpickle (7) must never get through the loader. */
    CHECK(!config_serializer_allowed(cfg, 4) && !config_serializer_allowed(cfg, 5) &&
          !config_serializer_allowed(cfg, 7));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    config_t cfg;
    config_errors_t errs;

    memset(&errs, 0, sizeof(errs));
    int ok = config_load_buffer("fuzz.yaml", "/etc/pyroguard", data, size, &cfg, &errs);
    if (ok) {
        CHECK(errs.n == 0);
        check_valid(&cfg);
    } else {
        CHECK(errs.n > 0);
        for (size_t i = 0; i < errs.n; i++)
            CHECK(strncmp(errs.lines[i], "fuzz.yaml:", 10) == 0);
    }
    config_free(&cfg);
    config_errors_free(&errs);
    return 0;
}
