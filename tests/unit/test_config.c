/* Unit tests for proxy/config.c: loading pyroguard.yaml (DESIGN.md "Configuration").
 *
 * Error lines are compared whole, "NAME:LINE:COL: PATH: REASON", because they are what an
 * operator reads when pyroguard refuses to start. Lines and columns are 1-based and point at
 * the offending node of the YAML text given to the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <openssl/ssl.h>

#include "config.h"
#include "frame.h"

#define NAME     "t.yaml"
#define BASE_DIR "/etc/pyroguard"

/* A minimal valid configuration: lines 1-8. Tests append to it (from line 9) or replace it. */
#define LISTENERS                                                                                  \
    "listeners:\n"                                                                                 \
    "  - name: app\n"                                                                              \
    "    listen: 0.0.0.0:9443\n"                                                                   \
    "    backend: 127.0.0.1:9090\n"
#define TLS                                                                                        \
    "tls:\n"                                                                                       \
    "  cert: server.crt\n"                                                                         \
    "  key: server.key\n"                                                                          \
    "  client_ca: ca.crt\n"
#define MINIMAL LISTENERS TLS
/* clients: is required; tests add it after everything else so that lines stay as above. */
#define CLIENTS "clients: []\n"

static config_t g_cfg;
static config_errors_t g_errs;

static int load(const char *yaml)
{
    memset(&g_errs, 0, sizeof(g_errs));
    return config_load_buffer(NAME, BASE_DIR, (const uint8_t *)yaml, strlen(yaml), &g_cfg, &g_errs);
}

static int release(void **state)
{
    config_free(&g_cfg);
    config_errors_free(&g_errs);
    return 0;
}

/* assert_refused_with checks that |yaml| is refused with exactly one error line, |expected|. */
static void assert_refused_with(const char *yaml, const char *expected)
{
    int ok = load(yaml);
    if (ok || g_errs.n != 1 || strcmp(g_errs.lines[0], expected) != 0) {
        print_message("expected: %s\n", expected);
        for (size_t i = 0; i < g_errs.n; i++)
            print_message("got:      %s\n", g_errs.lines[i]);
    }
    assert_false(ok);
    assert_int_equal(g_errs.n, 1);
    assert_string_equal(g_errs.lines[0], expected);
}

static void assert_loads(const char *yaml)
{
    int ok = load(yaml);
    for (size_t i = 0; i < g_errs.n; i++)
        print_message("unexpected error: %s\n", g_errs.lines[i]);
    assert_true(ok);
    assert_int_equal(g_errs.n, 0);
}

static const struct sockaddr_in *in4(const config_addr_t *a)
{
    assert_int_equal(a->addr.ss_family, AF_INET);
    return (const struct sockaddr_in *)&a->addr;
}

static const struct sockaddr_in6 *in6(const config_addr_t *a)
{
    assert_int_equal(a->addr.ss_family, AF_INET6);
    return (const struct sockaddr_in6 *)&a->addr;
}

/* assert_defaults checks every optional value against DESIGN.md's documented default. */
static void assert_defaults(const config_t *cfg)
{
    assert_int_equal(cfg->tls.min_version, TLS1_2_VERSION);
    assert_null(cfg->tls.crl.path);
    assert_int_equal(cfg->pyro.protocols, FRAME_PROTO_BIT(PROTO_PYRO4));
    assert_int_equal(cfg->pyro.serializers, (1u << SER4_SERPENT) | (1u << SER4_JSON) |
                                                (1u << SER4_MARSHAL) | (1u << SER4_MSGPACK));
    assert_int_equal(cfg->pyro.max_message_bytes, 16777216);
    assert_int_equal(cfg->pyro.compression_allow, 1);
    assert_int_equal(cfg->limits.max_connections, 10000);
    assert_int_equal(cfg->limits.handshake_timeout_ms, 10000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 300000);
    assert_int_equal(cfg->limits.backend_connect_timeout_ms, 5000);
    assert_int_equal(cfg->log.level, LOG_INFO);
    assert_int_equal(cfg->log.calls, LOG_CALLS_DENIED);
    assert_null(cfg->tls.pkcs12.path);
    assert_null(cfg->tls.key_password_file.path);
    assert_null(cfg->tls.pkcs12_password_file.path);
    assert_null(cfg->tls.ciphers.text);
    assert_null(cfg->tls.curves.text);
    assert_int_equal(cfg->tls.deny_serials.n, 0);
    assert_int_equal(cfg->tls.deny_sha256.n, 0);
}

/* ---- valid configurations ------------------------------------------------------------- */

static void test_config_init_sets_every_documented_default(void **state)
{
    config_init(&g_cfg);
    assert_defaults(&g_cfg);
    assert_int_equal(g_cfg.n_listeners, 0);
    assert_null(g_cfg.listeners);
    assert_null(g_cfg.tls.cert.path);
}

static void test_minimal_config_gets_every_default(void **state)
{
    assert_loads(MINIMAL CLIENTS);
    assert_defaults(&g_cfg);
    assert_string_equal(g_cfg.file, NAME);
}

static void test_listener_fields_are_parsed(void **state)
{
    assert_loads(MINIMAL CLIENTS);
    assert_int_equal(g_cfg.n_listeners, 1);
    const config_listener_t *l = &g_cfg.listeners[0];
    assert_string_equal(l->name, "app");
    assert_string_equal(l->listen.text, "0.0.0.0:9443");
    assert_int_equal(ntohs(in4(&l->listen)->sin_port), 9443);
    assert_int_equal(ntohl(in4(&l->listen)->sin_addr.s_addr), INADDR_ANY);
    assert_string_equal(l->backend.text, "127.0.0.1:9090");
    assert_int_equal(ntohs(in4(&l->backend)->sin_port), 9090);
    assert_int_equal(ntohl(in4(&l->backend)->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(l->allow_remote_backend, 0);
    assert_int_equal(l->mark.line, 2);
    assert_int_equal(l->mark.col, 5);
    assert_int_equal(l->backend.mark.line, 4);
    assert_int_equal(l->backend.mark.col, 14);
}

static void test_every_optional_value_can_be_set(void **state)
{
    assert_loads(LISTENERS TLS "  crl: ca.crl\n"
                               "  min_version: \"1.3\"\n"
                               "pyro:\n"
                               "  protocols: [4]\n"
                               "  serializers: [msgpack, json]\n"
                               "  max_message_bytes: 1024\n"
                               "  compression: deny\n"
                               "limits:\n"
                               "  max_connections: 5\n"
                               "  handshake_timeout: 1\n"
                               "  idle_timeout: 86400000\n"
                               "  backend_connect_timeout: 20\n"
                               "log:\n"
                               "  level: debug\n" CLIENTS);
    assert_string_equal(g_cfg.tls.crl.path, BASE_DIR "/ca.crl");
    assert_int_equal(g_cfg.tls.min_version, TLS1_3_VERSION);
    assert_int_equal(g_cfg.pyro.protocols, FRAME_PROTO_BIT(PROTO_PYRO4));
    assert_int_equal(g_cfg.pyro.serializers, (1u << SER4_MSGPACK) | (1u << SER4_JSON));
    assert_int_equal(g_cfg.pyro.max_message_bytes, 1024);
    assert_int_equal(g_cfg.pyro.compression_allow, 0);
    assert_int_equal(g_cfg.limits.max_connections, 5);
    assert_int_equal(g_cfg.limits.handshake_timeout_ms, 1);
    assert_int_equal(g_cfg.limits.idle_timeout_ms, 86400000);
    assert_int_equal(g_cfg.limits.backend_connect_timeout_ms, 20);
    assert_int_equal(g_cfg.log.level, LOG_DEBUG);
}

static void test_relative_paths_are_resolved_against_base_dir(void **state)
{
    assert_loads(LISTENERS "tls:\n"
                           "  cert: server.crt\n"
                           "  key: /secrets/server.key\n"
                           "  client_ca: sub/dir/ca.crt\n" CLIENTS);
    assert_string_equal(g_cfg.tls.cert.path, BASE_DIR "/server.crt");
    assert_string_equal(g_cfg.tls.key.path, "/secrets/server.key");
    assert_string_equal(g_cfg.tls.client_ca.path, BASE_DIR "/sub/dir/ca.crt");
    /* Marks let the certificate checks point at the line later. */
    assert_int_equal(g_cfg.tls.cert.mark.line, 6);
    assert_int_equal(g_cfg.tls.cert.mark.col, 9);
}

static void test_paths_stay_as_written_when_base_dir_is_empty(void **state)
{
    static const char yaml[] = MINIMAL CLIENTS;
    memset(&g_errs, 0, sizeof(g_errs));
    assert_true(config_load_buffer(NAME, "", (const uint8_t *)yaml, strlen(yaml), &g_cfg, &g_errs));
    assert_string_equal(g_cfg.tls.cert.path, "server.crt");
    assert_string_equal(g_cfg.tls.client_ca.path, "ca.crt");
}

static void test_shipped_style_flow_mappings_are_accepted(void **state)
{
    assert_loads("listeners: [{name: a, listen: \"127.0.0.1:1\", backend: \"127.0.0.1:2\"}]\n"
                 "tls: {cert: c, key: k, client_ca: ca}\n"
                 "log: {level: error}\n" CLIENTS);
    assert_int_equal(g_cfg.log.level, LOG_ERROR);
}

static void test_log_level_warn_is_accepted(void **state)
{
    assert_loads(MINIMAL "log:\n  level: warn\n" CLIENTS);
    assert_int_equal(g_cfg.log.level, LOG_WARN);
}

static void test_smallest_message_limit_is_accepted(void **state)
{
    assert_loads(MINIMAL "pyro:\n  max_message_bytes: 64\n" CLIENTS);
    assert_int_equal(g_cfg.pyro.max_message_bytes, 64);
}

static void test_largest_message_limit_is_accepted(void **state)
{
    assert_loads(MINIMAL "pyro:\n  max_message_bytes: 2147483647\n" CLIENTS);
    assert_int_equal(g_cfg.pyro.max_message_bytes, 2147483647u);
}

/* ---- unknown, duplicate and missing keys ---------------------------------------------- */

static void test_unknown_top_level_key_is_refused(void **state)
{
    assert_refused_with(MINIMAL "listner: x\n" CLIENTS, "t.yaml:9:1: unknown key 'listner'");
}

static void test_unknown_nested_key_is_refused(void **state)
{
    assert_refused_with(MINIMAL "  cnn: x\n" CLIENTS, "t.yaml:9:3: tls: unknown key 'cnn'");
}

static void test_unknown_listener_key_is_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 127.0.0.1:9090\n"
                        "    proto: tcp\n" TLS CLIENTS,
                        "t.yaml:5:5: listeners[0]: unknown key 'proto'");
}

static void test_keys_are_case_sensitive(void **state)
{
    assert_refused_with(MINIMAL "Log:\n  level: info\n" CLIENTS, "t.yaml:9:1: unknown key 'Log'");
}

static void test_duplicate_key_is_refused(void **state)
{
    assert_refused_with(MINIMAL "  cert: other.crt\n" CLIENTS,
                        "t.yaml:9:3: tls: duplicate key 'cert'");
}

static void test_duplicate_section_is_refused(void **state)
{
    assert_refused_with(MINIMAL "log:\n  level: info\nlog:\n  level: debug\n" CLIENTS,
                        "t.yaml:11:1: duplicate key 'log'");
}

static void test_missing_listeners_is_refused(void **state)
{
    assert_refused_with(TLS CLIENTS, "t.yaml:1:1: missing required key 'listeners'");
}

static void test_missing_tls_is_refused(void **state)
{
    assert_refused_with(LISTENERS CLIENTS, "t.yaml:1:1: missing required key 'tls'");
}

static void test_missing_tls_cert_is_refused(void **state)
{
    assert_refused_with(LISTENERS "tls:\n"
                                  "  key: server.key\n"
                                  "  client_ca: ca.crt\n" CLIENTS,
                        "t.yaml:6:3: tls: missing required key 'cert' (or 'pkcs12')");
}

static void test_missing_tls_client_ca_is_refused(void **state)
{
    /* Client certificates are always required, so the CA that signs them is too. */
    assert_refused_with(LISTENERS "tls:\n"
                                  "  cert: server.crt\n"
                                  "  key: server.key\n" CLIENTS,
                        "t.yaml:6:3: tls: missing required key 'client_ca'");
}

static void test_listener_without_backend_is_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9443\n" TLS CLIENTS,
                        "t.yaml:2:5: listeners[0]: missing required key 'backend'");
}

static void test_every_error_of_a_file_is_reported_in_order(void **state)
{
    assert_false(load(LISTENERS "tls:\n"
                                "  cert: server.crt\n"
                                "  cnn: x\n"
                                "pyro:\n"
                                "  serializers: [pickle]\n" CLIENTS));
    /* The missing 'key' is not reported: cert/key/pkcs12 are checked once the tls keys
     * themselves parse. */
    assert_int_equal(g_errs.n, 3);
    assert_string_equal(g_errs.lines[0], "t.yaml:7:3: tls: unknown key 'cnn'");
    assert_string_equal(g_errs.lines[1], "t.yaml:6:3: tls: missing required key 'client_ca'");
    assert_string_equal(g_errs.lines[2], "t.yaml:9:17: pyro.serializers[0]: 'pickle' executes "
                                         "code on the server when decoded and can never be "
                                         "allowed");
}

static void test_errors_past_the_cap_are_counted_not_kept(void **state)
{
    char yaml[2048];
    size_t n = (size_t)snprintf(yaml, sizeof(yaml), "%s", MINIMAL "pyro:\n  serializers: [");
    for (int i = 0; i < 40; i++)
        n += (size_t)snprintf(yaml + n, sizeof(yaml) - n, "%sx%d", i ? ", " : "", i);
    snprintf(yaml + n, sizeof(yaml) - n, "]\n" CLIENTS);
    assert_false(load(yaml));
    assert_int_equal(g_errs.n, CONFIG_MAX_ERRORS);
    assert_int_equal(g_errs.dropped, 40 - CONFIG_MAX_ERRORS);
}

/* ---- wrong types and values ----------------------------------------------------------- */

static void test_mapping_where_a_path_is_expected_is_refused(void **state)
{
    assert_refused_with(LISTENERS "tls:\n"
                                  "  cert: {file: server.crt}\n"
                                  "  key: server.key\n"
                                  "  client_ca: ca.crt\n" CLIENTS,
                        "t.yaml:6:9: tls.cert: expected a file path, got a mapping");
}

static void test_list_where_a_name_is_expected_is_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: [app]\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 127.0.0.1:9090\n" TLS CLIENTS,
                        "t.yaml:2:11: listeners[0].name: expected a string, got a list");
}

static void test_scalar_where_a_section_is_expected_is_refused(void **state)
{
    assert_refused_with(MINIMAL "limits: none\n" CLIENTS,
                        "t.yaml:9:9: limits: expected a mapping, got a "
                        "scalar");
}

static void test_listeners_as_a_mapping_is_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  name: app\n" TLS CLIENTS,
                        "t.yaml:2:3: listeners: expected a list of listeners, got a mapping");
}

static void test_string_where_an_integer_is_expected_is_refused(void **state)
{
    assert_refused_with(MINIMAL "limits:\n  max_connections: many\n" CLIENTS,
                        "t.yaml:10:20: limits.max_connections: expected an integer, got 'many'");
}

static void test_duration_with_a_unit_suffix_is_refused(void **state)
{
    assert_refused_with(MINIMAL "limits:\n  idle_timeout: 5m\n" CLIENTS,
                        "t.yaml:10:17: limits.idle_timeout: expected an integer in milliseconds, "
                        "got '5m'");
}

static void test_quoted_integer_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  max_message_bytes: \"1024\"\n" CLIENTS,
                        "t.yaml:10:22: pyro.max_message_bytes: expected an integer in bytes, got "
                        "'1024'");
}

static void test_negative_integer_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  max_message_bytes: -1\n" CLIENTS,
                        "t.yaml:10:22: pyro.max_message_bytes: expected an integer in bytes, got "
                        "'-1'");
}

static void test_integer_overflowing_64_bits_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  max_message_bytes: 18446744073709551616\n" CLIENTS,
                        "t.yaml:10:22: pyro.max_message_bytes: expected an integer in bytes, got "
                        "'18446744073709551616'");
}

static void test_message_limit_below_64_bytes_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  max_message_bytes: 63\n" CLIENTS,
                        "t.yaml:10:22: pyro.max_message_bytes: must be between 64 and "
                        "2147483647, got 63");
}

static void test_message_limit_above_the_pyro4_maximum_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  max_message_bytes: 2147483648\n" CLIENTS,
                        "t.yaml:10:22: pyro.max_message_bytes: must be between 64 and "
                        "2147483647, got 2147483648");
}

static void test_zero_connections_is_refused(void **state)
{
    assert_refused_with(MINIMAL "limits:\n  max_connections: 0\n" CLIENTS,
                        "t.yaml:10:20: limits.max_connections: must be between 1 and 1000000, "
                        "got 0");
}

static void test_empty_listener_name_is_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: \"\"\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 127.0.0.1:9090\n" TLS CLIENTS,
                        "t.yaml:2:11: listeners[0].name: must not be empty");
}

static void test_empty_file_path_is_refused(void **state)
{
    assert_refused_with(LISTENERS "tls:\n"
                                  "  cert: ''\n"
                                  "  key: server.key\n"
                                  "  client_ca: ca.crt\n" CLIENTS,
                        "t.yaml:6:9: tls.cert: must not be empty");
}

static void test_path_with_a_nul_character_is_refused(void **state)
{
    assert_refused_with(LISTENERS "tls:\n"
                                  "  cert: \"server\\0.crt\"\n"
                                  "  key: server.key\n"
                                  "  client_ca: ca.crt\n" CLIENTS,
                        "t.yaml:6:9: tls.cert: value contains a NUL character");
}

static void test_non_scalar_key_is_refused(void **state)
{
    assert_refused_with(MINIMAL "? [a, b]\n: c\n" CLIENTS,
                        "t.yaml:9:3: keys must be plain strings");
}

/* ---- pyro.serializers and pyro.protocols ---------------------------------------------- */

static void test_pickle_is_refused_because_it_executes_code(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: [serpent, pickle]\n" CLIENTS,
                        "t.yaml:10:26: pyro.serializers[1]: 'pickle' executes code on the server "
                        "when decoded and can never be allowed");
}

static void test_dill_is_refused_because_it_executes_code(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: [dill]\n" CLIENTS,
                        "t.yaml:10:17: pyro.serializers[0]: 'dill' executes code on the server "
                        "when decoded and can never be allowed");
}

static void test_cloudpickle_is_refused_because_it_executes_code(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers:\n    - json\n    - cloudpickle\n" CLIENTS,
                        "t.yaml:12:7: pyro.serializers[1]: 'cloudpickle' executes code on the "
                        "server when decoded and can never be allowed");
}

static void test_unknown_serializer_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: [yaml]\n" CLIENTS,
                        "t.yaml:10:17: pyro.serializers[0]: unknown serializer 'yaml' (known: "
                        "serpent, json, marshal, msgpack)");
}

static void test_serializer_names_are_case_sensitive(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: [JSON]\n" CLIENTS,
                        "t.yaml:10:17: pyro.serializers[0]: unknown serializer 'JSON' (known: "
                        "serpent, json, marshal, msgpack)");
}

static void test_serializer_listed_twice_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: [json, json]\n" CLIENTS,
                        "t.yaml:10:23: pyro.serializers[1]: 'json' is listed twice");
}

static void test_empty_serializer_list_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: []\n" CLIENTS,
                        "t.yaml:10:16: pyro.serializers: must list at least one serializer");
}

static void test_serializers_as_a_single_name_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: json\n" CLIENTS,
                        "t.yaml:10:16: pyro.serializers: expected a list of serializer names, got "
                        "a scalar");
}

static void test_pyro5_is_accepted_alone_or_beside_pyro4(void **state)
{
    assert_loads(MINIMAL "pyro:\n  protocols: [5]\n" CLIENTS);
    assert_int_equal(g_cfg.pyro.protocols, FRAME_PROTO_BIT(PROTO_PYRO5));
    release(NULL);
    assert_loads(MINIMAL "pyro:\n  protocols: [4, 5]\n" CLIENTS);
    assert_int_equal(g_cfg.pyro.protocols,
                     FRAME_PROTO_BIT(PROTO_PYRO4) | FRAME_PROTO_BIT(PROTO_PYRO5));
}

static void test_unknown_protocol_is_refused(void **state)
{
    assert_refused_with(
        MINIMAL "pyro:\n  protocols: [3]\n" CLIENTS,
        "t.yaml:10:15: pyro.protocols[0]: unknown Pyro protocol '3' (expected 4, 5, "
        "4.47 or 4.46)");
}

static void test_pyro4_protocols_46_and_47_are_accepted_beside_48(void **state)
{
    assert_loads(MINIMAL "pyro:\n  protocols: [4.46, 4.47, 4]\n" CLIENTS);
    assert_int_equal(g_cfg.pyro.protocols, FRAME_PROTO_BIT(PROTO_PYRO4_46) |
                                               FRAME_PROTO_BIT(PROTO_PYRO4_47) |
                                               FRAME_PROTO_BIT(PROTO_PYRO4));
}

static void test_a_pyro4_version_pyroguard_does_not_speak_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  protocols: [4.45]\n" CLIENTS,
                        "t.yaml:10:15: pyro.protocols[0]: unknown Pyro protocol '4.45' (expected "
                        "4, 5, 4.47 or 4.46)");
}

static void test_quoted_protocol_number_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  protocols: [\"4\"]\n" CLIENTS,
                        "t.yaml:10:15: pyro.protocols[0]: expected a protocol version (4, 5, 4.47 "
                        "or 4.46), got '4'");
}

static void test_empty_protocol_list_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  protocols: []\n" CLIENTS,
                        "t.yaml:10:14: pyro.protocols: must list at least one protocol");
}

/* ---- enumerations and booleans -------------------------------------------------------- */

static void test_tls_1_1_is_refused(void **state)
{
    assert_refused_with(MINIMAL "  min_version: \"1.1\"\n" CLIENTS,
                        "t.yaml:9:16: tls.min_version: must be \"1.2\" or \"1.3\", got '1.1'");
}

static void test_tls_1_3_minimum_is_accepted(void **state)
{
    assert_loads(MINIMAL "  min_version: \"1.3\"\n" CLIENTS);
    assert_int_equal(g_cfg.tls.min_version, TLS1_3_VERSION);
}

static void test_unknown_log_level_is_refused(void **state)
{
    assert_refused_with(MINIMAL "log:\n  level: verbose\n" CLIENTS,
                        "t.yaml:10:10: log.level: must be error, warn, info or debug, got "
                        "'verbose'");
}

static void test_unknown_compression_mode_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  compression: maybe\n" CLIENTS,
                        "t.yaml:10:16: pyro.compression: must be allow or deny, got 'maybe'");
}

static void test_yes_is_not_a_boolean(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 127.0.0.1:9090\n"
                        "    allow_remote_backend: yes\n" TLS CLIENTS,
                        "t.yaml:5:27: listeners[0].allow_remote_backend: expected true or false, "
                        "got 'yes'");
}

static void test_quoted_true_is_not_a_boolean(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 10.0.0.5:9090\n"
                        "    allow_remote_backend: \"true\"\n" TLS CLIENTS,
                        "t.yaml:5:27: listeners[0].allow_remote_backend: expected true or false, "
                        "got 'true'");
}

/* ---- listeners and addresses ---------------------------------------------------------- */

static void test_remote_backend_is_refused_by_default(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 10.0.0.5:9090\n" TLS CLIENTS,
                        "t.yaml:4:14: listeners[0].backend: '10.0.0.5:9090' is not a loopback "
                        "address (set allow_remote_backend: true to forward plaintext Pyro traffic "
                        "off this host)");
}

static void test_remote_ipv6_backend_is_refused_by_default(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: \"[2001:db8::1]:9090\"\n" TLS CLIENTS,
                        "t.yaml:4:14: listeners[0].backend: '[2001:db8::1]:9090' is not a "
                        "loopback address (set allow_remote_backend: true to forward plaintext "
                        "Pyro traffic off this host)");
}

static void test_remote_backend_is_allowed_with_allow_remote_backend(void **state)
{
    assert_loads("listeners:\n"
                 "  - name: app\n"
                 "    listen: 0.0.0.0:9443\n"
                 "    backend: 10.0.0.5:9090\n"
                 "    allow_remote_backend: true\n" TLS CLIENTS);
    assert_int_equal(g_cfg.listeners[0].allow_remote_backend, 1);
    assert_int_equal(ntohl(in4(&g_cfg.listeners[0].backend)->sin_addr.s_addr), 0x0a000005);
}

static void test_any_127_address_is_a_loopback_backend(void **state)
{
    assert_loads("listeners:\n"
                 "  - name: app\n"
                 "    listen: 0.0.0.0:9443\n"
                 "    backend: 127.254.0.1:9090\n" TLS CLIENTS);
}

static void test_localhost_backend_means_127_0_0_1(void **state)
{
    assert_loads("listeners:\n"
                 "  - name: app\n"
                 "    listen: 0.0.0.0:9443\n"
                 "    backend: localhost:9090\n" TLS CLIENTS);
    assert_int_equal(ntohl(in4(&g_cfg.listeners[0].backend)->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(ntohs(in4(&g_cfg.listeners[0].backend)->sin_port), 9090);
}

static void test_ipv6_loopback_backend_is_accepted(void **state)
{
    assert_loads("listeners:\n"
                 "  - name: app\n"
                 "    listen: \"[::]:9443\"\n"
                 "    backend: \"[::1]:9090\"\n" TLS CLIENTS);
    const config_listener_t *l = &g_cfg.listeners[0];
    assert_string_equal(l->backend.text, "[::1]:9090");
    assert_int_equal(ntohs(in6(&l->backend)->sin6_port), 9090);
    assert_memory_equal(&in6(&l->backend)->sin6_addr, &in6addr_loopback, sizeof(struct in6_addr));
    assert_int_equal(ntohs(in6(&l->listen)->sin6_port), 9443);
    assert_memory_equal(&in6(&l->listen)->sin6_addr, &in6addr_any, sizeof(struct in6_addr));
}

static void test_duplicate_listener_names_are_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 127.0.0.1:9090\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9444\n"
                        "    backend: 127.0.0.1:9091\n" TLS CLIENTS,
                        "t.yaml:5:5: listeners[1].name: listener name 'app' is already used by "
                        "listeners[0]");
}

static void test_duplicate_listen_addresses_are_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 127.0.0.1:9090\n"
                        "  - name: ns\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 127.0.0.1:9091\n" TLS CLIENTS,
                        "t.yaml:6:13: listeners[1].listen: address '0.0.0.0:9443' is already used "
                        "by listeners[0]");
}

static void test_same_listen_address_spelled_two_ways_is_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: localhost:9443\n"
                        "    backend: 127.0.0.1:9090\n"
                        "  - name: ns\n"
                        "    listen: 127.0.0.1:9443\n"
                        "    backend: 127.0.0.1:9091\n" TLS CLIENTS,
                        "t.yaml:6:13: listeners[1].listen: address '127.0.0.1:9443' is already "
                        "used by listeners[0]");
}

static void test_deeply_nested_yaml_is_refused_before_it_is_built(void **state)
{
    char yaml[256];
    memset(yaml, '[', 100);
    yaml[100] = '\0';
    assert_refused_with(yaml, "t.yaml:1:17: nesting deeper than 16 levels");
}

static void test_two_distinct_listeners_are_accepted(void **state)
{
    assert_loads("listeners:\n"
                 "  - name: app\n"
                 "    listen: 0.0.0.0:9443\n"
                 "    backend: 127.0.0.1:9090\n"
                 "  - name: ns\n"
                 "    listen: 0.0.0.0:9444\n"
                 "    backend: 127.0.0.1:9091\n" TLS CLIENTS);
    assert_int_equal(g_cfg.n_listeners, 2);
    assert_string_equal(g_cfg.listeners[1].name, "ns");
}

static void test_empty_listener_list_is_refused(void **state)
{
    assert_refused_with("listeners: []\n" TLS CLIENTS,
                        "t.yaml:1:12: listeners: at least one listener is required");
}

static void test_65_listeners_are_refused(void **state)
{
    char yaml[16384];
    size_t n = (size_t)snprintf(yaml, sizeof(yaml), "listeners: [");
    for (int i = 0; i < CONFIG_MAX_LISTENERS + 1; i++)
        n += (size_t)snprintf(yaml + n, sizeof(yaml) - n,
                              "%s{name: l%d, listen: \"127.0.0.1:%d\", backend: \"127.0.0.1:1\"}",
                              i ? ", " : "", i, 1000 + i);
    snprintf(yaml + n, sizeof(yaml) - n, "]\n" TLS CLIENTS);
    assert_true(n < sizeof(yaml) - 100);
    assert_refused_with(yaml, "t.yaml:1:12: listeners: at most 64 listeners are supported");
}

/* Malformed addresses: each is given quoted so YAML hands it over untouched. */
static void test_malformed_addresses_are_refused_with_the_expected_form(void **state)
{
    static const char *const bad[] = {
        "127.0.0.1",                         /* no port */
        "127.0.0.1:",                        /* empty port */
        "127.0.0.1:65536",                   /* port out of range */
        "127.0.0.1:-1",                      /* signed port */
        "127.0.0.1:+80",                     /* signed port */
        "127.0.0.1: 80",                     /* space */
        "127.0.0.1:80x",                     /* trailing garbage */
        "127.0.0.1:99999999999999999999999", /* overflow */
        "256.0.0.1:80",                      /* not an IPv4 address */
        "10.1:80",                           /* inet_aton shorthand, not accepted */
        "example.com:80",                    /* host names other than localhost */
        ":9090",                             /* empty host */
        "::1:9090",                          /* IPv6 without brackets */
        "[::1]9090",                         /* no colon after the bracket */
        "[::1]:",                            /* empty port */
        "[::1",                              /* unclosed bracket */
        "[]:80",                             /* empty IPv6 host */
        "[127.0.0.1]:80",                    /* IPv4 in brackets */
        "localhost",                         /* no port */
        "127.0.0.1:0",                       /* port 0: "any port" is no address to serve */
        "[localhost]:80",                    /* brackets hold IPv6 literals only */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char yaml[512], expected[256];
        snprintf(yaml, sizeof(yaml),
                 "listeners:\n"
                 "  - name: app\n"
                 "    listen: \"%s\"\n"
                 "    backend: 127.0.0.1:9090\n" TLS CLIENTS,
                 bad[i]);
        snprintf(expected, sizeof(expected),
                 "t.yaml:3:13: listeners[0].listen: invalid address '%s' (expected IP:port or "
                 "[IPv6]:port, port 1-65535)",
                 bad[i]);
        assert_refused_with(yaml, expected);
        release(NULL);
    }
}

/* ---- whole documents ------------------------------------------------------------------ */

static void test_yaml_syntax_error_reports_line_and_column(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: [json\nlog:\n  level: info\n",
                        "t.yaml:11:4: YAML syntax error: did not find expected ',' or ']'");
}

static void test_tab_indentation_is_a_syntax_error(void **state)
{
    assert_refused_with(MINIMAL "log:\n\tlevel: info\n",
                        "t.yaml:10:1: YAML syntax error: found character that cannot start any "
                        "token");
}

static void test_empty_document_is_refused(void **state)
{
    assert_refused_with("", "t.yaml:1:1: the configuration is empty");
}

static void test_comment_only_document_is_refused(void **state)
{
    assert_refused_with("# nothing here\n\n", "t.yaml:1:1: the configuration is empty");
}

static void test_top_level_list_is_refused(void **state)
{
    assert_refused_with("- listeners\n- tls\n", "t.yaml:1:1: expected a mapping, got a list");
}

static void test_second_document_is_refused(void **state)
{
    assert_refused_with(MINIMAL CLIENTS "---\nlisteners: []\n",
                        "t.yaml:10:1: only one YAML document is allowed");
}

static void test_syntax_error_in_a_second_document_is_refused(void **state)
{
    assert_refused_with(MINIMAL CLIENTS "---\n[\n", "t.yaml:12:1: YAML syntax error: did not "
                                                    "find expected node content");
}

static void test_explicit_document_markers_are_accepted(void **state)
{
    assert_loads("---\n" MINIMAL CLIENTS "...\n");
}

/* ---- reading a file ------------------------------------------------------------------- */

static void test_missing_file_is_reported_with_its_path(void **state)
{
    memset(&g_errs, 0, sizeof(g_errs));
    assert_false(config_load("/nonexistent/pyroguard.yaml", &g_cfg, &g_errs));
    assert_int_equal(g_errs.n, 1);
    assert_string_equal(g_errs.lines[0],
                        "/nonexistent/pyroguard.yaml: cannot open: No such file or directory");
}

static void test_file_over_1_mib_is_refused_before_parsing(void **state)
{
    char dir[] = "/tmp/pg_test_config_XXXXXX";
    char path[256], expected[300];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/big.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(MINIMAL CLIENTS, f);
    /* A comment keeps the text valid YAML: only the size can be the reason. */
    fputc('#', f);
    for (size_t i = strlen(MINIMAL CLIENTS) + 1; i < CONFIG_MAX_FILE_SIZE + 1; i++)
        fputc('x', f);
    fclose(f);

    memset(&g_errs, 0, sizeof(g_errs));
    int ok = config_load(path, &g_cfg, &g_errs);
    unlink(path);
    rmdir(dir);
    assert_false(ok);
    assert_int_equal(g_errs.n, 1);
    snprintf(expected, sizeof(expected), "%s: larger than 1048576 bytes", path);
    assert_string_equal(g_errs.lines[0], expected);
}

static void test_file_of_exactly_1_mib_is_accepted(void **state)
{
    char dir[] = "/tmp/pg_test_config_XXXXXX";
    char path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/edge.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(MINIMAL CLIENTS, f);
    fputc('#', f);
    for (size_t i = strlen(MINIMAL CLIENTS) + 1; i < CONFIG_MAX_FILE_SIZE; i++)
        fputc('x', f);
    fclose(f);

    memset(&g_errs, 0, sizeof(g_errs));
    int ok = config_load(path, &g_cfg, &g_errs);
    unlink(path);
    rmdir(dir);
    assert_true(ok);
}

static void test_file_paths_are_resolved_against_the_files_directory(void **state)
{
    char dir[] = "/tmp/pg_test_config_XXXXXX";
    char path[256], expected[300];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/pyroguard.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(MINIMAL CLIENTS, f);
    fclose(f);

    memset(&g_errs, 0, sizeof(g_errs));
    int ok = config_load(path, &g_cfg, &g_errs);
    unlink(path);
    rmdir(dir);
    assert_true(ok);
    assert_string_equal(g_cfg.file, path);
    snprintf(expected, sizeof(expected), "%s/server.crt", dir);
    assert_string_equal(g_cfg.tls.cert.path, expected);
}

/* ---- serializer queries --------------------------------------------------------------- */

static void test_default_serializers_are_the_four_safe_ones(void **state)
{
    config_init(&g_cfg);
    assert_true(config_serializer_allowed(&g_cfg, SER4_SERPENT));
    assert_true(config_serializer_allowed(&g_cfg, SER4_JSON));
    assert_true(config_serializer_allowed(&g_cfg, SER4_MARSHAL));
    assert_true(config_serializer_allowed(&g_cfg, SER4_MSGPACK));
    assert_false(config_serializer_allowed(&g_cfg, SER4_PICKLE));
    assert_false(config_serializer_allowed(&g_cfg, SER4_DILL));
    assert_false(config_serializer_allowed(&g_cfg, SER4_CLOUDPICKLE));
}

static void test_ids_outside_the_table_are_not_allowed(void **state)
{
    config_init(&g_cfg);
    g_cfg.pyro.serializers = 0xffffffffu;
    assert_true(config_serializer_allowed(&g_cfg, 31));
    assert_false(config_serializer_allowed(&g_cfg, 32));
    assert_false(config_serializer_allowed(&g_cfg, 42));
    assert_false(config_serializer_allowed(&g_cfg, 0xffff));
}

static void test_configured_serializers_replace_the_defaults(void **state)
{
    assert_loads(MINIMAL "pyro:\n  serializers: [json]\n" CLIENTS);
    assert_true(config_serializer_allowed(&g_cfg, SER4_JSON));
    assert_false(config_serializer_allowed(&g_cfg, SER4_SERPENT));
    assert_false(config_serializer_allowed(&g_cfg, SER4_MARSHAL));
    assert_false(config_serializer_allowed(&g_cfg, SER4_MSGPACK));
}

static void test_serializer_list_names_the_defaults_in_id_order(void **state)
{
    char out[64];
    config_init(&g_cfg);
    config_serializer_list(&g_cfg, out, sizeof(out));
    assert_string_equal(out, "serpent, json, marshal, msgpack");
}

static void test_serializer_list_follows_the_configuration(void **state)
{
    char out[64];
    assert_loads(MINIMAL "pyro:\n  serializers: [msgpack, json]\n" CLIENTS);
    config_serializer_list(&g_cfg, out, sizeof(out));
    assert_string_equal(out, "json, msgpack");
}

static void test_serializer_list_fits_a_one_byte_buffer(void **state)
{
    char out[1] = {'x'};
    config_init(&g_cfg);
    config_serializer_list(&g_cfg, out, sizeof(out));
    assert_int_equal(out[0], '\0');
}

/* ---- clients ---------------------------------------------------------------------------- */

static void test_missing_clients_is_refused(void **state)
{
    /* A policy must be written down, even if it is `clients: []` (nobody gets in). */
    assert_refused_with(MINIMAL, "t.yaml:1:1: missing required key 'clients'");
}

static void test_empty_client_list_is_accepted(void **state)
{
    assert_loads(MINIMAL "clients: []\n");
    assert_int_equal(g_cfg.n_clients, 0);
    assert_null(g_cfg.clients);
}

static void test_client_rules_are_parsed(void **state)
{
    assert_loads(MINIMAL "clients:\n"
                         "  - name: billing\n"
                         "    match:\n"
                         "      uri: \"spiffe://example.org/ns/billing/*\"\n"
                         "      dns: [\"*.Example.org\", api.example.com]\n"
                         "      ip: 10.0.0.0/8\n"
                         "      serial: \"00:1a:2b\"\n"
                         "    allow:\n"
                         "      - object: billing\n"
                         "        methods: [charge, \"get_*\"]\n"
                         "        get: balance\n"
                         "    deny:\n"
                         "      - {object: \"reports.*\"}\n"
                         "  - name: everyone\n"
                         "    match: {}\n");
    assert_int_equal(g_cfg.n_clients, 2);
    const config_client_t *c = &g_cfg.clients[0];
    assert_string_equal(c->name, "billing");
    assert_int_equal(c->mark.line, 10);
    assert_int_equal(c->mark.col, 5);
    assert_int_equal(c->match[ID_URI].n, 1);
    assert_int_equal(c->match[ID_URI].items[0].kind, PATTERN_GLOB);
    assert_string_equal(c->match[ID_URI].items[0].written, "spiffe://example.org/ns/billing/*");
    assert_int_equal(c->match[ID_URI].items[0].nocase, 0);
    assert_int_equal(c->match[ID_DNS].n, 2);
    assert_int_equal(c->match[ID_DNS].items[0].nocase, 1);
    assert_int_equal(c->match[ID_DNS].items[1].kind, PATTERN_EXACT);
    assert_int_equal(c->match[ID_IP].items[0].kind, PATTERN_CIDR);
    assert_int_equal(c->match[ID_SERIAL].items[0].kind, PATTERN_HEX);
    assert_string_equal(c->match[ID_SERIAL].items[0].text, "1A2B");
    assert_int_equal(c->match[ID_CN].n, 0);
    assert_int_equal(c->n_allow, 1);
    assert_int_equal(c->allow[0].objects.n, 1);
    assert_int_equal(c->allow[0].methods.n, 2);
    assert_int_equal(c->allow[0].get.n, 1);
    assert_int_equal(c->allow[0].set.n, 0);
    assert_int_equal(c->allow[0].mark.line, 17);
    assert_int_equal(c->allow[0].mark.col, 9);
    assert_int_equal(c->n_deny, 1);
    assert_int_equal(c->deny[0].methods.n, 0);
    assert_string_equal(c->deny[0].objects.items[0].written, "reports.*");
    const config_client_t *e = &g_cfg.clients[1];
    assert_string_equal(e->name, "everyone");
    assert_int_equal(e->n_allow, 0);
    assert_int_equal(e->n_deny, 0);
    for (int f = 0; f < ID_FIELDS; f++)
        assert_int_equal(e->match[f].n, 0);
}

static void test_empty_match_value_matches_every_client(void **state)
{
    assert_loads(MINIMAL "clients:\n"
                         "  - name: everyone\n"
                         "    match:\n");
    for (int f = 0; f < ID_FIELDS; f++)
        assert_int_equal(g_cfg.clients[0].match[f].n, 0);
}

static void test_every_match_key_is_accepted(void **state)
{
    assert_loads(MINIMAL "clients:\n"
                         "  - name: all\n"
                         "    match:\n"
                         "      cn: a\n"
                         "      o: b\n"
                         "      ou: c\n"
                         "      dns: d.example.org\n"
                         "      uri: \"spiffe://e/*\"\n"
                         "      ip: [\"fd00::/8\", \"10.1.*.*\"]\n"
                         "      email: \"*@example.org\"\n"
                         "      serial: \"01\"\n"
                         "      sha256: \"" /* 64 digits */
                         "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n");
    for (int f = 0; f < ID_FIELDS; f++)
        assert_int_equal(g_cfg.clients[0].match[f].n, f == ID_IP ? 2 : 1);
    assert_int_equal(g_cfg.clients[0].match[ID_EMAIL].items[0].nocase, 1);
    assert_string_equal(g_cfg.clients[0].match[ID_SHA256].items[0].text,
                        "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF");
}

static void test_clients_as_a_mapping_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients: {name: a}\n",
                        "t.yaml:9:10: clients: expected a list of client rules, got a mapping");
}

static void test_client_rule_without_name_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - match: {}\n",
                        "t.yaml:10:5: clients[0]: missing required key 'name'");
}

static void test_client_rule_without_match_is_refused(void **state)
{
    /* Matching everyone is written `match: {}`, never by forgetting the key. */
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n",
                        "t.yaml:10:5: clients[0]: missing required key 'match'");
}

static void test_unknown_client_rule_key_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {}\n"
                                "    alow: []\n",
                        "t.yaml:12:5: clients[0]: unknown key 'alow'");
}

static void test_duplicate_rule_names_are_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {}\n"
                                "  - name: a\n"
                                "    match: {}\n",
                        "t.yaml:12:5: clients[1].name: rule name 'a' is already used by "
                        "clients[0]");
}

static void test_empty_rule_name_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: \"\"\n"
                                "    match: {}\n",
                        "t.yaml:10:11: clients[0].name: must not be empty");
}

static void test_4097_client_rules_are_refused(void **state)
{
    size_t cap = 64 + (CONFIG_MAX_CLIENTS + 1) * 40;
    char *yaml = malloc(cap);
    assert_non_null(yaml);
    size_t n = (size_t)snprintf(yaml, cap, "%s", MINIMAL "clients:\n");
    for (int i = 0; i < CONFIG_MAX_CLIENTS + 1; i++)
        n += (size_t)snprintf(yaml + n, cap - n, "  - {name: r%d, match: {}}\n", i);
    assert_true(n < cap);
    int ok = load(yaml);
    free(yaml);
    assert_false(ok);
    assert_int_equal(g_errs.n, 1);
    assert_string_equal(g_errs.lines[0],
                        "t.yaml:10:3: clients: at most 4096 client rules are supported");
}

static void test_match_as_a_list_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: [cn]\n",
                        "t.yaml:11:12: clients[0].match: expected a mapping of match keys, got a "
                        "list");
}

static void test_unknown_match_key_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {subject: x}\n",
                        "t.yaml:11:13: clients[0].match: unknown key 'subject'");
}

static void test_duplicate_match_key_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {cn: a, cn: b}\n",
                        "t.yaml:11:20: clients[0].match: duplicate key 'cn'");
}

static void test_empty_pattern_list_is_refused(void **state)
{
    /* An empty list would match nobody: almost certainly not what was meant. */
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {cn: []}\n",
                        "t.yaml:11:17: clients[0].match.cn: the list is empty");
}

static void test_mapping_where_a_pattern_is_expected_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {cn: {a: b}}\n",
                        "t.yaml:11:17: clients[0].match.cn: expected a pattern or a list of them, "
                        "got a mapping");
}

static void test_list_inside_a_pattern_list_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {cn: [[a]]}\n",
                        "t.yaml:11:18: clients[0].match.cn[0]: expected a pattern, got a list");
}

static void test_empty_pattern_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {cn: \"\"}\n",
                        "t.yaml:11:17: clients[0].match.cn: a pattern must not be empty");
}

static void test_empty_pattern_in_a_list_is_refused_with_its_index(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {uri: [\"spiffe://a/*\", \"\"]}\n",
                        "t.yaml:11:35: clients[0].match.uri[1]: a pattern must not be empty");
}

static void test_pattern_with_a_control_character_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {cn: \"a\\tb\"}\n",
                        "t.yaml:11:17: clients[0].match.cn: a pattern must not contain control "
                        "characters");
}

static void test_pattern_with_a_nul_character_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {cn: \"a\\0b\"}\n",
                        "t.yaml:11:17: clients[0].match.cn: value contains a NUL character");
}

static void test_pattern_over_1024_characters_is_refused(void **state)
{
    char yaml[2048], pat[PATTERN_MAX_LEN + 2];
    memset(pat, 'a', PATTERN_MAX_LEN + 1);
    pat[PATTERN_MAX_LEN + 1] = '\0';
    snprintf(yaml, sizeof(yaml),
             MINIMAL "clients:\n"
                     "  - name: a\n"
                     "    match: {cn: %s}\n",
             pat);
    assert_refused_with(yaml, "t.yaml:11:17: clients[0].match.cn: a pattern must be at most 1024 "
                              "characters");
}

static void test_1025_patterns_in_one_list_are_refused(void **state)
{
    char yaml[16384];
    size_t n = (size_t)snprintf(yaml, sizeof(yaml), "%s",
                                MINIMAL "clients:\n  - name: a\n    match: {cn: [");
    for (int i = 0; i < CONFIG_MAX_ENTRIES + 1; i++)
        n += (size_t)snprintf(yaml + n, sizeof(yaml) - n, "%sp%d", i ? ", " : "", i);
    snprintf(yaml + n, sizeof(yaml) - n, "]}\n");
    assert_true(n < sizeof(yaml) - 10);
    assert_refused_with(yaml, "t.yaml:11:17: clients[0].match.cn: at most 1024 items are "
                              "supported");
}

static void test_ip_prefix_with_host_bits_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {ip: 10.0.0.1/8}\n",
                        "t.yaml:11:17: clients[0].match.ip: '10.0.0.1/8' has bits set after the "
                        "/8 prefix");
}

static void test_malformed_ip_prefix_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {ip: 10.0.0.0/33}\n",
                        "t.yaml:11:17: clients[0].match.ip: '10.0.0.0/33' is not an IP address "
                        "prefix (e.g. 10.0.0.0/8, fd00::/8)");
}

static void test_serial_with_a_wildcard_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {serial: \"1A*\"}\n",
                        "t.yaml:11:21: clients[0].match.serial: '1A*' is not a serial in hex "
                        "(':' allowed; no wildcards)");
}

static void test_sha256_of_the_wrong_length_is_refused(void **state)
{
    assert_refused_with(MINIMAL "clients:\n"
                                "  - name: a\n"
                                "    match: {sha256: abcd}\n",
                        "t.yaml:11:21: clients[0].match.sha256: 'abcd' is not a SHA-256 "
                        "fingerprint (64 hex digits, ':' allowed; no wildcards)");
}

/* ---- allow and deny entries ------------------------------------------------------------- */

#define RULE                                                                                       \
    "clients:\n"                                                                                   \
    "  - name: a\n"                                                                                \
    "    match: {}\n"

static void test_entry_lists_accept_a_scalar_or_a_list(void **state)
{
    assert_loads(MINIMAL RULE "    allow:\n"
                              "      - {object: [a, \"b.*\"], methods: \"*\", set: [x, y]}\n"
                              "    deny:\n"
                              "      - {object: a, get: secret}\n");
    const config_client_t *c = &g_cfg.clients[0];
    assert_int_equal(c->allow[0].objects.n, 2);
    assert_int_equal(c->allow[0].methods.n, 1);
    assert_int_equal(c->allow[0].set.n, 2);
    assert_int_equal(c->deny[0].get.n, 1);
}

static void test_empty_allow_and_deny_lists_are_accepted(void **state)
{
    assert_loads(MINIMAL RULE "    allow: []\n"
                              "    deny: []\n");
    assert_int_equal(g_cfg.clients[0].n_allow, 0);
    assert_int_equal(g_cfg.clients[0].n_deny, 0);
}

static void test_allow_entry_without_names_is_refused(void **state)
{
    assert_refused_with(MINIMAL RULE "    allow:\n"
                                     "      - {object: billing}\n",
                        "t.yaml:13:9: clients[0].allow[0]: an allow entry needs at least one of "
                        "methods, get or set");
}

static void test_deny_entry_without_names_is_accepted(void **state)
{
    assert_loads(MINIMAL RULE "    deny:\n"
                              "      - {object: billing}\n");
    assert_int_equal(g_cfg.clients[0].n_deny, 1);
}

static void test_entry_without_object_is_refused(void **state)
{
    assert_refused_with(MINIMAL RULE "    allow:\n"
                                     "      - {methods: [a]}\n",
                        "t.yaml:13:9: clients[0].allow[0]: missing required key 'object'");
}

static void test_unknown_entry_key_is_refused(void **state)
{
    assert_refused_with(MINIMAL RULE "    deny:\n"
                                     "      - {object: a, method: [x]}\n",
                        "t.yaml:13:21: clients[0].deny[0]: unknown key 'method'");
}

static void test_allow_as_a_mapping_is_refused(void **state)
{
    assert_refused_with(MINIMAL RULE "    allow: {object: a}\n",
                        "t.yaml:12:12: clients[0].allow: expected a list of entries (object, "
                        "methods, get, set), got a mapping");
}

static void test_empty_object_pattern_is_refused(void **state)
{
    assert_refused_with(MINIMAL RULE "    allow:\n"
                                     "      - {object: \"\", methods: [a]}\n",
                        "t.yaml:13:18: clients[0].allow[0].object: a pattern must not be empty");
}

static void test_empty_methods_list_is_refused(void **state)
{
    assert_refused_with(MINIMAL RULE "    allow:\n"
                                     "      - {object: a, methods: []}\n",
                        "t.yaml:13:30: clients[0].allow[0].methods: the list is empty");
}

static void test_list_inside_a_methods_list_is_refused(void **state)
{
    assert_refused_with(MINIMAL RULE "    allow:\n"
                                     "      - {object: a, methods: [[x]]}\n",
                        "t.yaml:13:31: clients[0].allow[0].methods[0]: expected a name pattern, "
                        "got a list");
}

static void test_mapping_as_an_object_pattern_is_refused(void **state)
{
    assert_refused_with(MINIMAL RULE "    allow:\n"
                                     "      - {object: {a: b}, methods: [x]}\n",
                        "t.yaml:13:18: clients[0].allow[0].object: expected an object id pattern "
                        "or a list of them, got a mapping");
}

static void test_1025_entries_are_refused(void **state)
{
    size_t cap = 256 + (CONFIG_MAX_ENTRIES + 1) * 24;
    char *yaml = malloc(cap);
    assert_non_null(yaml);
    size_t n = (size_t)snprintf(yaml, cap, "%s", MINIMAL RULE "    deny:\n");
    for (int i = 0; i < CONFIG_MAX_ENTRIES + 1; i++)
        n += (size_t)snprintf(yaml + n, cap - n, "      - {object: o%d}\n", i);
    assert_true(n < cap);
    int ok = load(yaml);
    free(yaml);
    assert_false(ok);
    assert_int_equal(g_errs.n, 1);
    assert_string_equal(g_errs.lines[0],
                        "t.yaml:13:7: clients[0].deny: at most 1024 entries are supported");
}

/* ---- tls: keystores, ciphers, denied certificates --------------------------------------- */

static void test_pkcs12_replaces_cert_and_key(void **state)
{
    assert_loads(LISTENERS "tls:\n"
                           "  pkcs12: server.p12\n"
                           "  pkcs12_password_file: p12.pass\n"
                           "  client_ca: ca.crt\n" CLIENTS);
    assert_null(g_cfg.tls.cert.path);
    assert_null(g_cfg.tls.key.path);
    assert_string_equal(g_cfg.tls.pkcs12.path, BASE_DIR "/server.p12");
    assert_string_equal(g_cfg.tls.pkcs12_password_file.path, BASE_DIR "/p12.pass");
    assert_int_equal(g_cfg.tls.pkcs12.mark.line, 6);
    assert_int_equal(g_cfg.tls.pkcs12.mark.col, 11);
}

static void test_encrypted_key_takes_a_password_file(void **state)
{
    assert_loads(MINIMAL "  key_password_file: /run/secrets/key.pass\n" CLIENTS);
    assert_string_equal(g_cfg.tls.key_password_file.path, "/run/secrets/key.pass");
}

static void test_cert_and_pkcs12_together_are_refused(void **state)
{
    assert_refused_with(MINIMAL "  pkcs12: server.p12\n" CLIENTS,
                        "t.yaml:6:3: tls: give either cert and key, or pkcs12, not both");
}

static void test_key_next_to_pkcs12_is_refused(void **state)
{
    assert_refused_with(LISTENERS "tls:\n"
                                  "  key: server.key\n"
                                  "  pkcs12: server.p12\n"
                                  "  client_ca: ca.crt\n" CLIENTS,
                        "t.yaml:6:3: tls: give either cert and key, or pkcs12, not both");
}

static void test_cert_without_key_is_refused(void **state)
{
    assert_refused_with(LISTENERS "tls:\n"
                                  "  cert: server.crt\n"
                                  "  client_ca: ca.crt\n" CLIENTS,
                        "t.yaml:6:3: tls: missing required key 'key'");
}

static void test_neither_cert_nor_pkcs12_is_refused(void **state)
{
    assert_refused_with(LISTENERS "tls:\n"
                                  "  client_ca: ca.crt\n" CLIENTS,
                        "t.yaml:6:3: tls: missing required key 'cert' (or 'pkcs12')");
}

static void test_key_password_file_with_pkcs12_is_refused(void **state)
{
    assert_refused_with(LISTENERS "tls:\n"
                                  "  pkcs12: server.p12\n"
                                  "  key_password_file: key.pass\n"
                                  "  client_ca: ca.crt\n" CLIENTS,
                        "t.yaml:6:3: tls: key_password_file goes with key; use "
                        "pkcs12_password_file");
}

static void test_pkcs12_password_file_without_pkcs12_is_refused(void **state)
{
    assert_refused_with(MINIMAL "  pkcs12_password_file: p12.pass\n" CLIENTS,
                        "t.yaml:6:3: tls: pkcs12_password_file is given without pkcs12");
}

static void test_ciphers_and_curves_are_joined_with_colons(void **state)
{
    assert_loads(MINIMAL "  ciphers: [ECDHE-ECDSA-AES128-GCM-SHA256, "
                         "ECDHE-RSA-AES128-GCM-SHA256]\n"
                         "  curves: X25519:P-256\n" CLIENTS);
    assert_string_equal(g_cfg.tls.ciphers.text,
                        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256");
    assert_int_equal(g_cfg.tls.ciphers.mark.line, 9);
    assert_int_equal(g_cfg.tls.ciphers.mark.col, 12);
    assert_string_equal(g_cfg.tls.curves.text, "X25519:P-256");
}

static void test_empty_cipher_name_is_refused(void **state)
{
    assert_refused_with(MINIMAL "  ciphers: [a, \"\"]\n" CLIENTS,
                        "t.yaml:9:16: tls.ciphers[1]: must not be empty");
}

static void test_empty_cipher_list_is_refused(void **state)
{
    assert_refused_with(MINIMAL "  ciphers: []\n" CLIENTS,
                        "t.yaml:9:12: tls.ciphers: the list is empty");
}

static void test_curves_as_a_mapping_are_refused(void **state)
{
    assert_refused_with(MINIMAL "  curves: {a: b}\n" CLIENTS,
                        "t.yaml:9:11: tls.curves: expected a name or a list of them, got a "
                        "mapping");
}

static void test_denied_serials_and_fingerprints_are_normalised(void **state)
{
    assert_loads(MINIMAL "  deny_serials: [\"00:1a:2b\", 0A]\n"
                         "  deny_sha256: \"00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:"
                         "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff\"\n" CLIENTS);
    assert_int_equal(g_cfg.tls.deny_serials.n, 2);
    assert_string_equal(g_cfg.tls.deny_serials.items[0], "1A2B");
    assert_string_equal(g_cfg.tls.deny_serials.items[1], "A");
    assert_int_equal(g_cfg.tls.deny_sha256.n, 1);
    assert_string_equal(g_cfg.tls.deny_sha256.items[0],
                        "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF");
}

static void test_denied_serial_that_is_not_hex_is_refused(void **state)
{
    assert_refused_with(MINIMAL "  deny_serials: [xyz]\n" CLIENTS,
                        "t.yaml:9:18: tls.deny_serials[0]: 'xyz' is not a certificate serial in "
                        "hex");
}

static void test_denied_fingerprint_of_the_wrong_length_is_refused(void **state)
{
    assert_refused_with(MINIMAL "  deny_sha256: abcd\n" CLIENTS,
                        "t.yaml:9:16: tls.deny_sha256: 'abcd' is not a SHA-256 fingerprint (64 "
                        "hex digits, ':' separators allowed)");
}

/* ---- log.calls -------------------------------------------------------------------------- */

static void test_log_calls_all_and_none_are_accepted(void **state)
{
    assert_loads(MINIMAL "log:\n  calls: all\n" CLIENTS);
    assert_int_equal(g_cfg.log.calls, LOG_CALLS_ALL);
    release(NULL);
    assert_loads(MINIMAL "log:\n  calls: none\n" CLIENTS);
    assert_int_equal(g_cfg.log.calls, LOG_CALLS_NONE);
}

static void test_unknown_log_calls_mode_is_refused(void **state)
{
    assert_refused_with(MINIMAL "log:\n  calls: some\n" CLIENTS,
                        "t.yaml:10:10: log.calls: must be all, denied or none, got 'some'");
}

/* ---- listener modes: client mode, forward_identity (issue 10) ---------------------------- */

/* A client-mode listener: lines 1-13. Tests append listener keys from line 14 (column 5). */
#define CLIENT_LISTENER                                                                            \
    "listeners:\n"                                                                                 \
    "  - name: to-app\n"                                                                           \
    "    mode: client\n"                                                                           \
    "    listen: 127.0.0.1:9000\n"                                                                 \
    "    upstream: 127.0.0.1:9443\n"                                                               \
    "    upstream_tls:\n"                                                                          \
    "      cert: client.crt\n"                                                                     \
    "      key: /secrets/client.key\n"                                                             \
    "      ca: ca.crt\n"                                                                           \
    "      server_name: localhost\n"                                                               \
    "    egress:\n"                                                                                \
    "      allow:\n"                                                                               \
    "        - {object: thing, methods: [echo]}\n"

/* The client-mode listener of CLIENT_LISTENER without its own "listeners:" line, as the second
 * item after LISTENERS (lines 5-16). */
#define SECOND_CLIENT_LISTENER                                                                     \
    "  - name: to-app\n"                                                                           \
    "    mode: client\n"                                                                           \
    "    listen: unix:run/app.sock\n"                                                              \
    "    socket_mode: \"0660\"\n"                                                                  \
    "    upstream: 127.0.0.1:9443\n"                                                               \
    "    upstream_tls:\n"                                                                          \
    "      cert: client.crt\n"                                                                     \
    "      key: client.key\n"                                                                      \
    "      ca: ca.crt\n"                                                                           \
    "      server_uri: \"spiffe://example.org/ns/app/*\"\n"                                        \
    "    egress:\n"                                                                                \
    "      deny: [{object: thing}]\n"

static void test_client_mode_listener_is_parsed_and_needs_no_tls_nor_clients(void **state)
{
    assert_loads(CLIENT_LISTENER);
    assert_int_equal(g_cfg.n_listeners, 1);
    const config_listener_t *l = &g_cfg.listeners[0];
    assert_int_equal(l->mode, LISTENER_CLIENT);
    assert_string_equal(l->listen.text, "127.0.0.1:9000");
    assert_int_equal(ntohl(in4(&l->listen)->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(ntohs(in4(&l->listen)->sin_port), 9000);
    assert_null(l->backend.text);
    assert_int_equal(l->forward_identity, 0);
    assert_int_equal(l->socket_mode_given, 0);
    assert_string_equal(l->upstream.text, "127.0.0.1:9443");
    assert_int_equal(ntohl(in4(&l->upstream)->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(ntohs(in4(&l->upstream)->sin_port), 9443);
    assert_int_equal(l->upstream_tls_given, 1);
    assert_string_equal(l->upstream_tls.cert.path, BASE_DIR "/client.crt");
    assert_string_equal(l->upstream_tls.key.path, "/secrets/client.key");
    assert_string_equal(l->upstream_tls.ca.path, BASE_DIR "/ca.crt");
    assert_string_equal(l->upstream_tls.server_name.text, "localhost");
    assert_int_equal(l->upstream_tls.server_uri.n, 0);
    assert_int_equal(l->upstream_tls.min_version, TLS1_2_VERSION);
    /* No tls: and no clients: — the egress policy is the only rule, and no certificate rule. */
    assert_null(g_cfg.tls.cert.path);
    assert_int_equal(g_cfg.n_cert_rules, 0);
    assert_int_equal(g_cfg.n_clients, 1);
    assert_int_equal(l->egress_rule, 0);
    const config_client_t *e = &g_cfg.clients[0];
    assert_string_equal(e->name, "egress:to-app");
    assert_int_equal(e->egress, 1);
    assert_int_equal(e->n_allow, 1);
    assert_string_equal(e->allow[0].objects.items[0].written, "thing");
    assert_int_equal(e->allow[0].methods.n, 1);
    assert_int_equal(e->n_deny, 0);
    for (int f = 0; f < ID_FIELDS; f++)
        assert_int_equal(e->match[f].n, 0);
    /* What the listener held was moved, not copied. */
    assert_null(l->egress.name);
    assert_null(l->egress.allow);
}

static void test_egress_rules_follow_the_clients_rules(void **state)
{
    assert_loads(LISTENERS SECOND_CLIENT_LISTENER TLS "clients:\n"
                                                      "  - name: billing\n"
                                                      "    match: {cn: billing-client}\n"
                                                      "  - name: everyone\n"
                                                      "    match: {}\n");
    assert_int_equal(g_cfg.n_listeners, 2);
    assert_int_equal(g_cfg.listeners[0].mode, LISTENER_SERVER);
    const config_listener_t *l = &g_cfg.listeners[1];
    assert_int_equal(l->mode, LISTENER_CLIENT);
    /* unix:PATH, relative to the configuration's directory, with its mode. */
    assert_string_equal(l->listen.text, "unix:run/app.sock");
    assert_int_equal(l->listen.addr.ss_family, AF_UNIX);
    assert_string_equal(((const struct sockaddr_un *)&l->listen.addr)->sun_path,
                        BASE_DIR "/run/app.sock");
    assert_int_equal(l->socket_mode_given, 1);
    assert_int_equal(l->socket_mode, 0660);
    assert_null(l->upstream_tls.server_name.text);
    assert_int_equal(l->upstream_tls.server_uri.n, 1);
    assert_string_equal(l->upstream_tls.server_uri.items[0].written,
                        "spiffe://example.org/ns/app/*");
    /* Rules: billing, everyone (the certificate rules), then egress:to-app. */
    assert_int_equal(g_cfg.n_cert_rules, 2);
    assert_int_equal(g_cfg.n_clients, 3);
    assert_string_equal(g_cfg.clients[0].name, "billing");
    assert_string_equal(g_cfg.clients[1].name, "everyone");
    assert_int_equal(g_cfg.clients[0].egress, 0);
    assert_int_equal(g_cfg.clients[1].egress, 0);
    assert_int_equal(l->egress_rule, 2);
    const config_client_t *e = &g_cfg.clients[2];
    assert_string_equal(e->name, "egress:to-app");
    assert_int_equal(e->egress, 1);
    assert_int_equal(e->n_allow, 0);
    assert_int_equal(e->n_deny, 1);
    assert_string_equal(e->deny[0].objects.items[0].written, "thing");
}

static void test_client_mode_listens_on_ipv6_loopback(void **state)
{
    assert_loads("listeners:\n"
                 "  - name: to-app\n"
                 "    mode: client\n"
                 "    listen: \"[::1]:9000\"\n"
                 "    upstream: \"[::1]:9443\"\n"
                 "    upstream_tls: {cert: c, key: k, ca: ca, server_name: \"::1\"}\n"
                 "    egress: {}\n");
    const config_listener_t *l = &g_cfg.listeners[0];
    assert_int_equal(ntohs(in6(&l->listen)->sin6_port), 9000);
    assert_true(IN6_IS_ADDR_LOOPBACK(&in6(&l->upstream)->sin6_addr));
    assert_int_equal(g_cfg.clients[l->egress_rule].n_allow, 0);
}

static void test_upstream_may_be_a_host_name(void **state)
{
    /* upstream: HOST:port (listen and backend take addresses only). */
    assert_loads("listeners:\n"
                 "  - name: to-app\n"
                 "    mode: client\n"
                 "    listen: 127.0.0.1:9000\n"
                 "    upstream: localhost:9443\n"
                 "    upstream_tls: {cert: c, key: k, ca: ca, server_name: localhost}\n"
                 "    egress: {}\n");
    const config_listener_t *l = &g_cfg.listeners[0];
    assert_string_equal(l->upstream.text, "localhost:9443");
    assert_int_equal(ntohl(in4(&l->upstream)->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(ntohs(in4(&l->upstream)->sin_port), 9443);
    assert_int_equal(l->upstream.mark.line, 5);
    assert_int_equal(l->upstream.mark.col, 15);
}

static void test_server_mode_still_requires_tls_and_clients(void **state)
{
    /* A client-mode listener does not make tls: or clients: optional for a server-mode one. */
    assert_refused_with(LISTENERS SECOND_CLIENT_LISTENER CLIENTS,
                        "t.yaml:1:1: missing required key 'tls'");
    release(NULL);
    assert_refused_with(LISTENERS SECOND_CLIENT_LISTENER TLS,
                        "t.yaml:1:1: missing required key 'clients'");
}

static void test_unknown_listener_mode_is_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    mode: tcp\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 127.0.0.1:9090\n" TLS CLIENTS,
                        "t.yaml:3:11: listeners[0].mode: must be server or client, got 'tcp'");
}

static void test_client_mode_refuses_server_mode_keys(void **state)
{
    assert_refused_with(CLIENT_LISTENER "    backend: 127.0.0.1:9090\n",
                        "t.yaml:14:14: listeners[0].backend: is for server-mode listeners: a "
                        "client-mode listener sends to 'upstream' over TLS");
    release(NULL);
    assert_refused_with(CLIENT_LISTENER "    forward_identity: true\n",
                        "t.yaml:2:5: listeners[0].forward_identity: is for server-mode "
                        "listeners: a client-mode listener sends to 'upstream' over TLS");
    release(NULL);
    assert_refused_with(CLIENT_LISTENER "    allow_remote_backend: true\n",
                        "t.yaml:2:5: listeners[0].allow_remote_backend: is for server-mode "
                        "listeners: a client-mode listener sends to 'upstream' over TLS");
    release(NULL);
    /* false is what the default is: nothing to refuse. */
    assert_loads(CLIENT_LISTENER "    forward_identity: false\n"
                                 "    allow_remote_backend: false\n");
}

static void test_client_mode_requires_upstream_upstream_tls_and_egress(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: to-app\n"
                        "    mode: client\n"
                        "    listen: 127.0.0.1:9000\n"
                        "    upstream_tls: {cert: c, key: k, ca: ca, server_name: localhost}\n"
                        "    egress: {}\n",
                        "t.yaml:2:5: listeners[0]: missing required key 'upstream' (mode: client)");
    release(NULL);
    assert_refused_with("listeners:\n"
                        "  - name: to-app\n"
                        "    mode: client\n"
                        "    listen: 127.0.0.1:9000\n"
                        "    upstream: 127.0.0.1:9443\n"
                        "    egress: {}\n",
                        "t.yaml:2:5: listeners[0]: missing required key 'upstream_tls' (mode: "
                        "client)");
    release(NULL);
    assert_refused_with("listeners:\n"
                        "  - name: to-app\n"
                        "    mode: client\n"
                        "    listen: 127.0.0.1:9000\n"
                        "    upstream: 127.0.0.1:9443\n"
                        "    upstream_tls: {cert: c, key: k, ca: ca, server_name: localhost}\n",
                        "t.yaml:2:5: listeners[0]: missing required key 'egress' (mode: client)");
}

static void test_client_mode_listen_must_be_loopback_or_unix(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: to-app\n"
                        "    mode: client\n"
                        "    listen: 0.0.0.0:9000\n"
                        "    upstream: 127.0.0.1:9443\n"
                        "    upstream_tls: {cert: c, key: k, ca: ca, server_name: localhost}\n"
                        "    egress: {}\n",
                        "t.yaml:4:13: listeners[0].listen: '0.0.0.0:9000' is not a loopback "
                        "address or unix:PATH: a client-mode listener takes plaintext Pyro "
                        "traffic, which must not come from off this host");
}

static void test_socket_mode_goes_with_a_unix_listen_address(void **state)
{
    assert_refused_with(CLIENT_LISTENER "    socket_mode: \"0600\"\n",
                        "t.yaml:2:5: listeners[0].socket_mode: goes with listen: unix:PATH");
}

/* socket_mode_refused loads a unix: client-mode listener whose socket_mode is |value| (line 8,
 * its value at column 18) and expects |expected|. */
static void socket_mode_refused(const char *value, const char *expected)
{
    char yaml[1024];
    snprintf(yaml, sizeof(yaml), "listeners:\n%s", SECOND_CLIENT_LISTENER);
    /* Replace the "0660" of SECOND_CLIENT_LISTENER (line 5) with |value|. */
    char *at = strstr(yaml, "\"0660\"");
    assert_non_null(at);
    char rest[1024];
    snprintf(rest, sizeof(rest), "%s", at + 6);
    snprintf(at, sizeof(yaml) - (size_t)(at - yaml), "%s%s", value, rest);
    assert_refused_with(yaml, expected);
    release(NULL);
}

static void test_socket_mode_values(void **state)
{
    socket_mode_refused("\"0666\"",
                        "t.yaml:5:18: listeners[0].socket_mode: '0666' lets every local user "
                        "connect: the socket takes plaintext Pyro traffic that leaves with this "
                        "listener's certificate (use 0600 or 0660)");
    socket_mode_refused("\"0607\"",
                        "t.yaml:5:18: listeners[0].socket_mode: '0607' lets every local user "
                        "connect: the socket takes plaintext Pyro traffic that leaves with this "
                        "listener's certificate (use 0600 or 0660)");
    socket_mode_refused("\"999\"", "t.yaml:5:18: listeners[0].socket_mode: expected permissions "
                                   "in octal such as \"0660\", got '999'");
    socket_mode_refused("abc", "t.yaml:5:18: listeners[0].socket_mode: expected permissions in "
                               "octal such as \"0660\", got 'abc'");
    socket_mode_refused("\"01777\"", "t.yaml:5:18: listeners[0].socket_mode: expected "
                                     "permissions in octal such as \"0660\", got '01777'");
    /* Unquoted, as YAML 1.1 octal: libyaml hands over the text. */
    char yaml[1024];
    snprintf(yaml, sizeof(yaml), "listeners:\n%s", SECOND_CLIENT_LISTENER);
    char *at = strstr(yaml, "\"0660\"");
    assert_non_null(at);
    memcpy(at, "0640  ", 6);
    assert_loads(yaml);
    assert_int_equal(g_cfg.listeners[0].socket_mode, 0640);
}

static void test_upstream_tls_must_name_the_server(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: to-app\n"
                        "    mode: client\n"
                        "    listen: 127.0.0.1:9000\n"
                        "    upstream: 127.0.0.1:9443\n"
                        "    upstream_tls: {cert: c, key: k, ca: ca}\n"
                        "    egress: {}\n",
                        "t.yaml:6:19: listeners[0].upstream_tls: give server_name or server_uri "
                        "(or both): the upstream's certificate must name the server expected, "
                        "not just chain to the CA");
}

static void test_upstream_tls_requires_a_ca(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: to-app\n"
                        "    mode: client\n"
                        "    listen: 127.0.0.1:9000\n"
                        "    upstream: 127.0.0.1:9443\n"
                        "    upstream_tls: {cert: c, key: k, server_name: localhost}\n"
                        "    egress: {}\n",
                        "t.yaml:6:19: listeners[0].upstream_tls: missing required key 'ca'");
}

static void test_upstream_with_port_zero_is_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: to-app\n"
                        "    mode: client\n"
                        "    listen: 127.0.0.1:9000\n"
                        "    upstream: localhost:0\n"
                        "    upstream_tls: {cert: c, key: k, ca: ca, server_name: localhost}\n"
                        "    egress: {}\n",
                        "t.yaml:5:15: listeners[0].upstream: invalid or unresolvable address "
                        "'localhost:0' (expected HOST:port, IP:port or [IPv6]:port, port "
                        "1-65535)");
}

static void test_server_mode_listen_on_a_unix_socket_is_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: unix:/run/app.sock\n"
                        "    backend: 127.0.0.1:9090\n" TLS CLIENTS,
                        "t.yaml:3:13: listeners[0].listen: a server-mode listener takes TLS on a "
                        "TCP address, not 'unix:/run/app.sock'");
}

static void test_server_mode_refuses_client_mode_keys(void **state)
{
    assert_refused_with(LISTENERS "    upstream: 127.0.0.1:9443\n" TLS CLIENTS,
                        "t.yaml:5:15: listeners[0].upstream: is for client-mode listeners "
                        "(mode: client)");
    release(NULL);
    assert_refused_with(LISTENERS
                        "    upstream_tls: {cert: c, key: k, ca: ca, server_name: x}\n" TLS CLIENTS,
                        "t.yaml:5:19: listeners[0].upstream_tls: is for client-mode listeners "
                        "(mode: client)");
    release(NULL);
    assert_refused_with(LISTENERS "    egress: {}\n" TLS CLIENTS,
                        "t.yaml:5:13: listeners[0].egress: is for client-mode listeners (mode: "
                        "client)");
    release(NULL);
    assert_refused_with(LISTENERS "    socket_mode: \"0600\"\n" TLS CLIENTS,
                        "t.yaml:2:5: listeners[0].socket_mode: is for client-mode listeners "
                        "(mode: client)");
}

static void test_a_forgotten_mode_client_is_named_before_the_missing_backend(void **state)
{
    /* Everything a client-mode listener has, but no "mode: client": the first key that only
     * client mode takes is named, not the backend that client mode does not need. */
    assert_refused_with("listeners:\n"
                        "  - name: to-app\n"
                        "    listen: 127.0.0.1:9000\n"
                        "    upstream: 127.0.0.1:9443\n"
                        "    upstream_tls: {cert: c, key: k, ca: ca, server_name: localhost}\n"
                        "    egress: {}\n" TLS CLIENTS,
                        "t.yaml:4:15: listeners[0].upstream: is for client-mode listeners "
                        "(mode: client)");
}

static void test_forward_identity_is_accepted_on_a_server_mode_listener(void **state)
{
    assert_loads(LISTENERS "    forward_identity: true\n" TLS CLIENTS);
    assert_int_equal(g_cfg.listeners[0].forward_identity, 1);
    assert_int_equal(g_cfg.listeners[0].mode, LISTENER_SERVER);
    release(NULL);
    assert_loads(LISTENERS "    mode: server\n"
                           "    forward_identity: false\n" TLS CLIENTS);
    assert_int_equal(g_cfg.listeners[0].forward_identity, 0);
    release(NULL);
    assert_refused_with(LISTENERS "    forward_identity: yes\n" TLS CLIENTS,
                        "t.yaml:5:23: listeners[0].forward_identity: expected true or false, "
                        "got 'yes'");
}

#define T(f) cmocka_unit_test_teardown(f, release)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_config_init_sets_every_documented_default),
        T(test_minimal_config_gets_every_default),
        T(test_listener_fields_are_parsed),
        T(test_every_optional_value_can_be_set),
        T(test_relative_paths_are_resolved_against_base_dir),
        T(test_paths_stay_as_written_when_base_dir_is_empty),
        T(test_shipped_style_flow_mappings_are_accepted),
        T(test_log_level_warn_is_accepted),
        T(test_smallest_message_limit_is_accepted),
        T(test_largest_message_limit_is_accepted),
        T(test_unknown_top_level_key_is_refused),
        T(test_unknown_nested_key_is_refused),
        T(test_unknown_listener_key_is_refused),
        T(test_keys_are_case_sensitive),
        T(test_duplicate_key_is_refused),
        T(test_duplicate_section_is_refused),
        T(test_missing_listeners_is_refused),
        T(test_missing_tls_is_refused),
        T(test_missing_tls_cert_is_refused),
        T(test_missing_tls_client_ca_is_refused),
        T(test_listener_without_backend_is_refused),
        T(test_every_error_of_a_file_is_reported_in_order),
        T(test_errors_past_the_cap_are_counted_not_kept),
        T(test_mapping_where_a_path_is_expected_is_refused),
        T(test_list_where_a_name_is_expected_is_refused),
        T(test_scalar_where_a_section_is_expected_is_refused),
        T(test_listeners_as_a_mapping_is_refused),
        T(test_string_where_an_integer_is_expected_is_refused),
        T(test_duration_with_a_unit_suffix_is_refused),
        T(test_quoted_integer_is_refused),
        T(test_negative_integer_is_refused),
        T(test_integer_overflowing_64_bits_is_refused),
        T(test_message_limit_below_64_bytes_is_refused),
        T(test_message_limit_above_the_pyro4_maximum_is_refused),
        T(test_zero_connections_is_refused),
        T(test_empty_listener_name_is_refused),
        T(test_empty_file_path_is_refused),
        T(test_path_with_a_nul_character_is_refused),
        T(test_non_scalar_key_is_refused),
        T(test_pickle_is_refused_because_it_executes_code),
        T(test_dill_is_refused_because_it_executes_code),
        T(test_cloudpickle_is_refused_because_it_executes_code),
        T(test_unknown_serializer_is_refused),
        T(test_serializer_names_are_case_sensitive),
        T(test_serializer_listed_twice_is_refused),
        T(test_empty_serializer_list_is_refused),
        T(test_serializers_as_a_single_name_is_refused),
        T(test_pyro5_is_accepted_alone_or_beside_pyro4),
        T(test_unknown_protocol_is_refused),
        T(test_pyro4_protocols_46_and_47_are_accepted_beside_48),
        T(test_a_pyro4_version_pyroguard_does_not_speak_is_refused),
        T(test_quoted_protocol_number_is_refused),
        T(test_empty_protocol_list_is_refused),
        T(test_tls_1_1_is_refused),
        T(test_tls_1_3_minimum_is_accepted),
        T(test_unknown_log_level_is_refused),
        T(test_unknown_compression_mode_is_refused),
        T(test_yes_is_not_a_boolean),
        T(test_quoted_true_is_not_a_boolean),
        T(test_remote_backend_is_refused_by_default),
        T(test_remote_ipv6_backend_is_refused_by_default),
        T(test_remote_backend_is_allowed_with_allow_remote_backend),
        T(test_any_127_address_is_a_loopback_backend),
        T(test_localhost_backend_means_127_0_0_1),
        T(test_ipv6_loopback_backend_is_accepted),
        T(test_duplicate_listener_names_are_refused),
        T(test_duplicate_listen_addresses_are_refused),
        T(test_same_listen_address_spelled_two_ways_is_refused),
        T(test_deeply_nested_yaml_is_refused_before_it_is_built),
        T(test_two_distinct_listeners_are_accepted),
        T(test_empty_listener_list_is_refused),
        T(test_65_listeners_are_refused),
        T(test_malformed_addresses_are_refused_with_the_expected_form),
        T(test_yaml_syntax_error_reports_line_and_column),
        T(test_tab_indentation_is_a_syntax_error),
        T(test_empty_document_is_refused),
        T(test_comment_only_document_is_refused),
        T(test_top_level_list_is_refused),
        T(test_second_document_is_refused),
        T(test_syntax_error_in_a_second_document_is_refused),
        T(test_explicit_document_markers_are_accepted),
        T(test_missing_file_is_reported_with_its_path),
        T(test_file_over_1_mib_is_refused_before_parsing),
        T(test_file_of_exactly_1_mib_is_accepted),
        T(test_file_paths_are_resolved_against_the_files_directory),
        T(test_default_serializers_are_the_four_safe_ones),
        T(test_ids_outside_the_table_are_not_allowed),
        T(test_configured_serializers_replace_the_defaults),
        T(test_serializer_list_names_the_defaults_in_id_order),
        T(test_serializer_list_follows_the_configuration),
        T(test_serializer_list_fits_a_one_byte_buffer),
        T(test_missing_clients_is_refused),
        T(test_empty_client_list_is_accepted),
        T(test_client_rules_are_parsed),
        T(test_empty_match_value_matches_every_client),
        T(test_every_match_key_is_accepted),
        T(test_clients_as_a_mapping_is_refused),
        T(test_client_rule_without_name_is_refused),
        T(test_client_rule_without_match_is_refused),
        T(test_unknown_client_rule_key_is_refused),
        T(test_duplicate_rule_names_are_refused),
        T(test_empty_rule_name_is_refused),
        T(test_4097_client_rules_are_refused),
        T(test_match_as_a_list_is_refused),
        T(test_unknown_match_key_is_refused),
        T(test_duplicate_match_key_is_refused),
        T(test_empty_pattern_list_is_refused),
        T(test_mapping_where_a_pattern_is_expected_is_refused),
        T(test_list_inside_a_pattern_list_is_refused),
        T(test_empty_pattern_is_refused),
        T(test_empty_pattern_in_a_list_is_refused_with_its_index),
        T(test_pattern_with_a_control_character_is_refused),
        T(test_pattern_with_a_nul_character_is_refused),
        T(test_pattern_over_1024_characters_is_refused),
        T(test_1025_patterns_in_one_list_are_refused),
        T(test_ip_prefix_with_host_bits_is_refused),
        T(test_malformed_ip_prefix_is_refused),
        T(test_serial_with_a_wildcard_is_refused),
        T(test_sha256_of_the_wrong_length_is_refused),
        T(test_entry_lists_accept_a_scalar_or_a_list),
        T(test_empty_allow_and_deny_lists_are_accepted),
        T(test_allow_entry_without_names_is_refused),
        T(test_deny_entry_without_names_is_accepted),
        T(test_entry_without_object_is_refused),
        T(test_unknown_entry_key_is_refused),
        T(test_allow_as_a_mapping_is_refused),
        T(test_empty_object_pattern_is_refused),
        T(test_empty_methods_list_is_refused),
        T(test_list_inside_a_methods_list_is_refused),
        T(test_mapping_as_an_object_pattern_is_refused),
        T(test_1025_entries_are_refused),
        T(test_pkcs12_replaces_cert_and_key),
        T(test_encrypted_key_takes_a_password_file),
        T(test_cert_and_pkcs12_together_are_refused),
        T(test_key_next_to_pkcs12_is_refused),
        T(test_cert_without_key_is_refused),
        T(test_neither_cert_nor_pkcs12_is_refused),
        T(test_key_password_file_with_pkcs12_is_refused),
        T(test_pkcs12_password_file_without_pkcs12_is_refused),
        T(test_ciphers_and_curves_are_joined_with_colons),
        T(test_empty_cipher_name_is_refused),
        T(test_empty_cipher_list_is_refused),
        T(test_curves_as_a_mapping_are_refused),
        T(test_denied_serials_and_fingerprints_are_normalised),
        T(test_denied_serial_that_is_not_hex_is_refused),
        T(test_denied_fingerprint_of_the_wrong_length_is_refused),
        T(test_log_calls_all_and_none_are_accepted),
        T(test_unknown_log_calls_mode_is_refused),
        T(test_client_mode_listener_is_parsed_and_needs_no_tls_nor_clients),
        T(test_egress_rules_follow_the_clients_rules),
        T(test_client_mode_listens_on_ipv6_loopback),
        T(test_upstream_may_be_a_host_name),
        T(test_server_mode_still_requires_tls_and_clients),
        T(test_unknown_listener_mode_is_refused),
        T(test_client_mode_refuses_server_mode_keys),
        T(test_client_mode_requires_upstream_upstream_tls_and_egress),
        T(test_client_mode_listen_must_be_loopback_or_unix),
        T(test_socket_mode_goes_with_a_unix_listen_address),
        T(test_socket_mode_values),
        T(test_upstream_tls_must_name_the_server),
        T(test_upstream_tls_requires_a_ca),
        T(test_upstream_with_port_zero_is_refused),
        T(test_server_mode_listen_on_a_unix_socket_is_refused),
        T(test_server_mode_refuses_client_mode_keys),
        T(test_a_forgotten_mode_client_is_named_before_the_missing_backend),
        T(test_forward_identity_is_accepted_on_a_server_mode_listener),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
