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
    assert_int_equal(cfg->pyro.protocols, 1u << 4);
    assert_int_equal(cfg->pyro.serializers, (1u << SER4_SERPENT) | (1u << SER4_JSON) |
                                                (1u << SER4_MARSHAL) | (1u << SER4_MSGPACK));
    assert_int_equal(cfg->pyro.max_message_bytes, 16777216);
    assert_int_equal(cfg->pyro.compression_allow, 1);
    assert_int_equal(cfg->limits.max_connections, 10000);
    assert_int_equal(cfg->limits.handshake_timeout_ms, 10000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 300000);
    assert_int_equal(cfg->limits.backend_connect_timeout_ms, 5000);
    assert_int_equal(cfg->log.level, LOG_INFO);
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
    assert_loads(MINIMAL);
    assert_defaults(&g_cfg);
    assert_string_equal(g_cfg.file, NAME);
}

static void test_listener_fields_are_parsed(void **state)
{
    assert_loads(MINIMAL);
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
                               "  level: debug\n");
    assert_string_equal(g_cfg.tls.crl.path, BASE_DIR "/ca.crl");
    assert_int_equal(g_cfg.tls.min_version, TLS1_3_VERSION);
    assert_int_equal(g_cfg.pyro.protocols, 1u << 4);
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
                           "  client_ca: sub/dir/ca.crt\n");
    assert_string_equal(g_cfg.tls.cert.path, BASE_DIR "/server.crt");
    assert_string_equal(g_cfg.tls.key.path, "/secrets/server.key");
    assert_string_equal(g_cfg.tls.client_ca.path, BASE_DIR "/sub/dir/ca.crt");
    /* Marks let the certificate checks point at the line later. */
    assert_int_equal(g_cfg.tls.cert.mark.line, 6);
    assert_int_equal(g_cfg.tls.cert.mark.col, 9);
}

static void test_paths_stay_as_written_when_base_dir_is_empty(void **state)
{
    static const char yaml[] = MINIMAL;
    memset(&g_errs, 0, sizeof(g_errs));
    assert_true(config_load_buffer(NAME, "", (const uint8_t *)yaml, strlen(yaml), &g_cfg, &g_errs));
    assert_string_equal(g_cfg.tls.cert.path, "server.crt");
    assert_string_equal(g_cfg.tls.client_ca.path, "ca.crt");
}

static void test_shipped_style_flow_mappings_are_accepted(void **state)
{
    assert_loads("listeners: [{name: a, listen: \"127.0.0.1:1\", backend: \"127.0.0.1:2\"}]\n"
                 "tls: {cert: c, key: k, client_ca: ca}\n"
                 "log: {level: error}\n");
    assert_int_equal(g_cfg.log.level, LOG_ERROR);
}

static void test_log_level_warn_is_accepted(void **state)
{
    assert_loads(MINIMAL "log:\n  level: warn\n");
    assert_int_equal(g_cfg.log.level, LOG_WARN);
}

static void test_smallest_message_limit_is_accepted(void **state)
{
    assert_loads(MINIMAL "pyro:\n  max_message_bytes: 64\n");
    assert_int_equal(g_cfg.pyro.max_message_bytes, 64);
}

static void test_largest_message_limit_is_accepted(void **state)
{
    assert_loads(MINIMAL "pyro:\n  max_message_bytes: 2147483647\n");
    assert_int_equal(g_cfg.pyro.max_message_bytes, 2147483647u);
}

/* ---- unknown, duplicate and missing keys ---------------------------------------------- */

static void test_unknown_top_level_key_is_refused(void **state)
{
    assert_refused_with(MINIMAL "listner: x\n", "t.yaml:9:1: unknown key 'listner'");
}

static void test_unknown_nested_key_is_refused(void **state)
{
    assert_refused_with(MINIMAL "  cnn: x\n", "t.yaml:9:3: tls: unknown key 'cnn'");
}

static void test_unknown_listener_key_is_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 127.0.0.1:9090\n"
                        "    mode: tcp\n" TLS,
                        "t.yaml:5:5: listeners[0]: unknown key 'mode'");
}

static void test_keys_are_case_sensitive(void **state)
{
    assert_refused_with(MINIMAL "Log:\n  level: info\n", "t.yaml:9:1: unknown key 'Log'");
}

static void test_duplicate_key_is_refused(void **state)
{
    assert_refused_with(MINIMAL "  cert: other.crt\n", "t.yaml:9:3: tls: duplicate key 'cert'");
}

static void test_duplicate_section_is_refused(void **state)
{
    assert_refused_with(MINIMAL "log:\n  level: info\nlog:\n  level: debug\n",
                        "t.yaml:11:1: duplicate key 'log'");
}

static void test_missing_listeners_is_refused(void **state)
{
    assert_refused_with(TLS, "t.yaml:1:1: missing required key 'listeners'");
}

static void test_missing_tls_is_refused(void **state)
{
    assert_refused_with(LISTENERS, "t.yaml:1:1: missing required key 'tls'");
}

static void test_missing_tls_cert_is_refused(void **state)
{
    assert_refused_with(LISTENERS "tls:\n"
                                  "  key: server.key\n"
                                  "  client_ca: ca.crt\n",
                        "t.yaml:6:3: tls: missing required key 'cert'");
}

static void test_missing_tls_client_ca_is_refused(void **state)
{
    /* Client certificates are always required, so the CA that signs them is too. */
    assert_refused_with(LISTENERS "tls:\n"
                                  "  cert: server.crt\n"
                                  "  key: server.key\n",
                        "t.yaml:6:3: tls: missing required key 'client_ca'");
}

static void test_listener_without_backend_is_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9443\n" TLS,
                        "t.yaml:2:5: listeners[0]: missing required key 'backend'");
}

static void test_every_error_of_a_file_is_reported_in_order(void **state)
{
    assert_false(load(LISTENERS "tls:\n"
                                "  cert: server.crt\n"
                                "  cnn: x\n"
                                "pyro:\n"
                                "  serializers: [pickle]\n"));
    assert_int_equal(g_errs.n, 4);
    assert_string_equal(g_errs.lines[0], "t.yaml:7:3: tls: unknown key 'cnn'");
    assert_string_equal(g_errs.lines[1], "t.yaml:6:3: tls: missing required key 'key'");
    assert_string_equal(g_errs.lines[2], "t.yaml:6:3: tls: missing required key 'client_ca'");
    assert_string_equal(g_errs.lines[3], "t.yaml:9:17: pyro.serializers[0]: 'pickle' executes "
                                         "code on the server when decoded and can never be "
                                         "allowed");
}

static void test_errors_past_the_cap_are_counted_not_kept(void **state)
{
    char yaml[2048];
    size_t n = (size_t)snprintf(yaml, sizeof(yaml), "%s", MINIMAL "pyro:\n  serializers: [");
    for (int i = 0; i < 40; i++)
        n += (size_t)snprintf(yaml + n, sizeof(yaml) - n, "%sx%d", i ? ", " : "", i);
    snprintf(yaml + n, sizeof(yaml) - n, "]\n");
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
                                  "  client_ca: ca.crt\n",
                        "t.yaml:6:9: tls.cert: expected a file path, got a mapping");
}

static void test_list_where_a_name_is_expected_is_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: [app]\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 127.0.0.1:9090\n" TLS,
                        "t.yaml:2:11: listeners[0].name: expected a string, got a list");
}

static void test_scalar_where_a_section_is_expected_is_refused(void **state)
{
    assert_refused_with(MINIMAL "limits: none\n", "t.yaml:9:9: limits: expected a mapping, got a "
                                                  "scalar");
}

static void test_listeners_as_a_mapping_is_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  name: app\n" TLS,
                        "t.yaml:2:3: listeners: expected a list of listeners, got a mapping");
}

static void test_string_where_an_integer_is_expected_is_refused(void **state)
{
    assert_refused_with(MINIMAL "limits:\n  max_connections: many\n",
                        "t.yaml:10:20: limits.max_connections: expected an integer, got 'many'");
}

static void test_duration_with_a_unit_suffix_is_refused(void **state)
{
    assert_refused_with(MINIMAL "limits:\n  idle_timeout: 5m\n",
                        "t.yaml:10:17: limits.idle_timeout: expected an integer in milliseconds, "
                        "got '5m'");
}

static void test_quoted_integer_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  max_message_bytes: \"1024\"\n",
                        "t.yaml:10:22: pyro.max_message_bytes: expected an integer in bytes, got "
                        "'1024'");
}

static void test_negative_integer_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  max_message_bytes: -1\n",
                        "t.yaml:10:22: pyro.max_message_bytes: expected an integer in bytes, got "
                        "'-1'");
}

static void test_integer_overflowing_64_bits_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  max_message_bytes: 18446744073709551616\n",
                        "t.yaml:10:22: pyro.max_message_bytes: expected an integer in bytes, got "
                        "'18446744073709551616'");
}

static void test_message_limit_below_64_bytes_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  max_message_bytes: 63\n",
                        "t.yaml:10:22: pyro.max_message_bytes: must be between 64 and "
                        "2147483647, got 63");
}

static void test_message_limit_above_the_pyro4_maximum_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  max_message_bytes: 2147483648\n",
                        "t.yaml:10:22: pyro.max_message_bytes: must be between 64 and "
                        "2147483647, got 2147483648");
}

static void test_zero_connections_is_refused(void **state)
{
    assert_refused_with(MINIMAL "limits:\n  max_connections: 0\n",
                        "t.yaml:10:20: limits.max_connections: must be between 1 and 1000000, "
                        "got 0");
}

static void test_empty_listener_name_is_refused(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: \"\"\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 127.0.0.1:9090\n" TLS,
                        "t.yaml:2:11: listeners[0].name: must not be empty");
}

static void test_empty_file_path_is_refused(void **state)
{
    assert_refused_with(LISTENERS "tls:\n"
                                  "  cert: ''\n"
                                  "  key: server.key\n"
                                  "  client_ca: ca.crt\n",
                        "t.yaml:6:9: tls.cert: must not be empty");
}

static void test_path_with_a_nul_character_is_refused(void **state)
{
    assert_refused_with(LISTENERS "tls:\n"
                                  "  cert: \"server\\0.crt\"\n"
                                  "  key: server.key\n"
                                  "  client_ca: ca.crt\n",
                        "t.yaml:6:9: tls.cert: value contains a NUL character");
}

static void test_non_scalar_key_is_refused(void **state)
{
    assert_refused_with(MINIMAL "? [a, b]\n: c\n", "t.yaml:9:3: keys must be plain strings");
}

/* ---- pyro.serializers and pyro.protocols ---------------------------------------------- */

static void test_pickle_is_refused_because_it_executes_code(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: [serpent, pickle]\n",
                        "t.yaml:10:26: pyro.serializers[1]: 'pickle' executes code on the server "
                        "when decoded and can never be allowed");
}

static void test_dill_is_refused_because_it_executes_code(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: [dill]\n",
                        "t.yaml:10:17: pyro.serializers[0]: 'dill' executes code on the server "
                        "when decoded and can never be allowed");
}

static void test_cloudpickle_is_refused_because_it_executes_code(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers:\n    - json\n    - cloudpickle\n",
                        "t.yaml:12:7: pyro.serializers[1]: 'cloudpickle' executes code on the "
                        "server when decoded and can never be allowed");
}

static void test_unknown_serializer_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: [yaml]\n",
                        "t.yaml:10:17: pyro.serializers[0]: unknown serializer 'yaml' (known: "
                        "serpent, json, marshal, msgpack)");
}

static void test_serializer_names_are_case_sensitive(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: [JSON]\n",
                        "t.yaml:10:17: pyro.serializers[0]: unknown serializer 'JSON' (known: "
                        "serpent, json, marshal, msgpack)");
}

static void test_serializer_listed_twice_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: [json, json]\n",
                        "t.yaml:10:23: pyro.serializers[1]: 'json' is listed twice");
}

static void test_empty_serializer_list_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: []\n",
                        "t.yaml:10:16: pyro.serializers: must list at least one serializer");
}

static void test_serializers_as_a_single_name_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  serializers: json\n",
                        "t.yaml:10:16: pyro.serializers: expected a list of serializer names, got "
                        "a scalar");
}

static void test_pyro5_protocol_is_refused_at_load(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  protocols: [5]\n",
                        "t.yaml:10:15: pyro.protocols[0]: Pyro5 is not supported by this version "
                        "of pyroguard");
}

static void test_pyro5_next_to_pyro4_is_refused_at_load(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  protocols: [4, 5]\n",
                        "t.yaml:10:18: pyro.protocols[1]: Pyro5 is not supported by this version "
                        "of pyroguard");
}

static void test_unknown_protocol_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  protocols: [3]\n",
                        "t.yaml:10:15: pyro.protocols[0]: unknown Pyro protocol '3' (expected 4)");
}

static void test_quoted_protocol_number_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  protocols: [\"4\"]\n",
                        "t.yaml:10:15: pyro.protocols[0]: expected an integer, got '4'");
}

static void test_empty_protocol_list_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  protocols: []\n",
                        "t.yaml:10:14: pyro.protocols: must list at least one protocol");
}

/* ---- enumerations and booleans -------------------------------------------------------- */

static void test_tls_1_1_is_refused(void **state)
{
    assert_refused_with(MINIMAL "  min_version: \"1.1\"\n",
                        "t.yaml:9:16: tls.min_version: must be \"1.2\" or \"1.3\", got '1.1'");
}

static void test_tls_1_3_minimum_is_accepted(void **state)
{
    assert_loads(MINIMAL "  min_version: \"1.3\"\n");
    assert_int_equal(g_cfg.tls.min_version, TLS1_3_VERSION);
}

static void test_unknown_log_level_is_refused(void **state)
{
    assert_refused_with(MINIMAL "log:\n  level: verbose\n",
                        "t.yaml:10:10: log.level: must be error, warn, info or debug, got "
                        "'verbose'");
}

static void test_unknown_compression_mode_is_refused(void **state)
{
    assert_refused_with(MINIMAL "pyro:\n  compression: maybe\n",
                        "t.yaml:10:16: pyro.compression: must be allow or deny, got 'maybe'");
}

static void test_yes_is_not_a_boolean(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 127.0.0.1:9090\n"
                        "    allow_remote_backend: yes\n" TLS,
                        "t.yaml:5:27: listeners[0].allow_remote_backend: expected true or false, "
                        "got 'yes'");
}

static void test_quoted_true_is_not_a_boolean(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 10.0.0.5:9090\n"
                        "    allow_remote_backend: \"true\"\n" TLS,
                        "t.yaml:5:27: listeners[0].allow_remote_backend: expected true or false, "
                        "got 'true'");
}

/* ---- listeners and addresses ---------------------------------------------------------- */

static void test_remote_backend_is_refused_by_default(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: 10.0.0.5:9090\n" TLS,
                        "t.yaml:4:14: listeners[0].backend: '10.0.0.5:9090' is not a loopback "
                        "address (set allow_remote_backend: true to forward plaintext Pyro traffic "
                        "off this host)");
}

static void test_remote_ipv6_backend_is_refused_by_default(void **state)
{
    assert_refused_with("listeners:\n"
                        "  - name: app\n"
                        "    listen: 0.0.0.0:9443\n"
                        "    backend: \"[2001:db8::1]:9090\"\n" TLS,
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
                 "    allow_remote_backend: true\n" TLS);
    assert_int_equal(g_cfg.listeners[0].allow_remote_backend, 1);
    assert_int_equal(ntohl(in4(&g_cfg.listeners[0].backend)->sin_addr.s_addr), 0x0a000005);
}

static void test_any_127_address_is_a_loopback_backend(void **state)
{
    assert_loads("listeners:\n"
                 "  - name: app\n"
                 "    listen: 0.0.0.0:9443\n"
                 "    backend: 127.254.0.1:9090\n" TLS);
}

static void test_localhost_backend_means_127_0_0_1(void **state)
{
    assert_loads("listeners:\n"
                 "  - name: app\n"
                 "    listen: 0.0.0.0:9443\n"
                 "    backend: localhost:9090\n" TLS);
    assert_int_equal(ntohl(in4(&g_cfg.listeners[0].backend)->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(ntohs(in4(&g_cfg.listeners[0].backend)->sin_port), 9090);
}

static void test_ipv6_loopback_backend_is_accepted(void **state)
{
    assert_loads("listeners:\n"
                 "  - name: app\n"
                 "    listen: \"[::]:9443\"\n"
                 "    backend: \"[::1]:9090\"\n" TLS);
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
                        "    backend: 127.0.0.1:9091\n" TLS,
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
                        "    backend: 127.0.0.1:9091\n" TLS,
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
                        "    backend: 127.0.0.1:9091\n" TLS,
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
                 "    backend: 127.0.0.1:9091\n" TLS);
    assert_int_equal(g_cfg.n_listeners, 2);
    assert_string_equal(g_cfg.listeners[1].name, "ns");
}

static void test_empty_listener_list_is_refused(void **state)
{
    assert_refused_with("listeners: []\n" TLS,
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
    snprintf(yaml + n, sizeof(yaml) - n, "]\n" TLS);
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
                 "    backend: 127.0.0.1:9090\n" TLS,
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
    assert_refused_with(MINIMAL "---\nlisteners: []\n",
                        "t.yaml:9:1: only one YAML document is allowed");
}

static void test_syntax_error_in_a_second_document_is_refused(void **state)
{
    assert_refused_with(MINIMAL "---\n[\n", "t.yaml:11:1: YAML syntax error: did not find "
                                            "expected node content");
}

static void test_explicit_document_markers_are_accepted(void **state)
{
    assert_loads("---\n" MINIMAL "...\n");
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
    fputs(MINIMAL, f);
    /* A comment keeps the text valid YAML: only the size can be the reason. */
    fputc('#', f);
    for (size_t i = strlen(MINIMAL) + 1; i < CONFIG_MAX_FILE_SIZE + 1; i++)
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
    fputs(MINIMAL, f);
    fputc('#', f);
    for (size_t i = strlen(MINIMAL) + 1; i < CONFIG_MAX_FILE_SIZE; i++)
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
    fputs(MINIMAL, f);
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
    assert_loads(MINIMAL "pyro:\n  serializers: [json]\n");
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
    assert_loads(MINIMAL "pyro:\n  serializers: [msgpack, json]\n");
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
        T(test_pyro5_protocol_is_refused_at_load),
        T(test_pyro5_next_to_pyro4_is_refused_at_load),
        T(test_unknown_protocol_is_refused),
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
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
