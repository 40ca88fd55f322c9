/* config: pyroguard.yaml (DESIGN.md "Configuration"), read with libyaml into a config_t.
 *
 * Every key is one entry of a table (name, parser, field, required), so a later capability
 * adds a key by adding a line. Unknown keys, duplicate keys, wrong types and bad values are
 * errors reported as "FILE:LINE:COL: PATH: REASON". Relative paths are resolved against the
 * directory of the configuration file.
 *
 * Ownership: config_load fills a caller-owned config_t (zero it or config_init first);
 * config_free releases what it holds and is safe on a zeroed or partly filled config.
 * Error texts are collected in a caller-owned config_errors_t, freed by config_errors_free. */
#ifndef PYROGUARD_CONFIG_H
#define PYROGUARD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "identity.h"
#include "log.h"
#include "pattern.h"

#define CONFIG_MAX_ERRORS    32
#define CONFIG_MAX_FILE_SIZE (1u << 20) /* a configuration file larger than 1 MiB is refused */
#define CONFIG_MAX_LISTENERS 64
#define CONFIG_MAX_CLIENTS   4096 /* rules */
#define CONFIG_MAX_ENTRIES   1024 /* allow or deny entries of one rule; patterns per list */
#define CONFIG_MAX_DEPTH     16   /* YAML nesting; pyroguard.yaml needs 4 */

/* Where a value came from, to point at it in later errors (certificate checks). */
typedef struct {
    int line;
    int col;
} config_mark_t;

typedef struct {
    char *path; /* resolved against the configuration file's directory; NULL if unset */
    config_mark_t mark;
} config_file_t;

/* A string value and where it was written (TLS names checked when the context is built). */
typedef struct {
    char *text;
    config_mark_t mark;
} config_text_t;

/* Normalised hex values (serials, fingerprints) as pattern_hex_normalise writes them. */
typedef struct {
    char **items;
    size_t n;
} config_hexlist_t;

typedef struct {
    char *text; /* as written, e.g. "127.0.0.1:9443" */
    struct sockaddr_storage addr;
    config_mark_t mark;
} config_addr_t;

/* A list of patterns given as one scalar or a YAML list of scalars. */
typedef struct {
    pattern_t *items;
    size_t n;
} config_patterns_t;

/* listeners[].mode: server terminates mutual TLS in front of a plaintext daemon; client takes
 * plaintext from local Pyro clients and originates mutual TLS to an upstream (README "Client
 * mode"). */
typedef enum { LISTENER_SERVER = 0, LISTENER_CLIENT = 1 } listener_mode_t;

/* listeners[].upstream_tls: how a client-mode listener proves itself and checks the upstream. */
typedef struct {
    config_file_t cert; /* this side's client certificate chain (PEM) */
    config_file_t key;
    config_file_t ca;             /* verifies the upstream's certificate */
    config_text_t server_name;    /* expected DNS or IP SAN; sent as SNI when a DNS name */
    config_patterns_t server_uri; /* expected URI SAN (glob as in clients[].match.uri) */
    uint16_t min_version;
    config_mark_t mark;
} config_upstream_tls_t;

/* One allow or deny entry of a client rule (below). */
typedef struct config_access config_access_t;

/* A client rule: who (match) may call what (allow, deny). Also the shape of a client-mode
 * listener's egress policy, which has no match keys. */
typedef struct {
    char *name;
    config_patterns_t match[ID_FIELDS]; /* n == 0: key not given */
    config_access_t *allow;
    size_t n_allow;
    config_access_t *deny; /* wins over allow; an entry without names denies whole objects */
    size_t n_deny;
    int egress; /* a listener's egress rule: never matched against a certificate */
    config_mark_t mark;
} config_client_t;

typedef struct {
    char *name;
    int mode;             /* listener_mode_t */
    config_addr_t listen; /* server: the TLS side; client: loopback TCP or a Unix socket */
    config_addr_t backend;
    int allow_remote_backend;
    int forward_identity; /* server: add the verified identity to each CONNECT and INVOKE */
    uint32_t socket_mode; /* unix: listen: permissions of the socket file */
    int socket_mode_given;
    config_addr_t upstream; /* client: the TLS server to originate mutual TLS to */
    config_upstream_tls_t upstream_tls;
    int upstream_tls_given;
    config_client_t egress; /* client: parsed here, then moved to cfg->clients[egress_rule] */
    int egress_given;
    int egress_rule;
    config_mark_t mark;
} config_listener_t;

/* One allow or deny entry of a client rule: the objects it covers and the names on them. */
struct config_access {
    config_patterns_t objects;
    config_patterns_t methods; /* method calls, plain and inside a BATCH */
    config_patterns_t get;     /* property reads (p.value) */
    config_patterns_t set;     /* property writes (p.value = 7) */
    config_mark_t mark;
};

/* The first look policy_match_client takes at a rule: the screen of the single pattern of one
 * of its match keys (a rule cannot match unless a value of that field passes it). All rules'
 * screens lie in one array, 24 bytes each, so passing over a hundred rules reads 2.4 KB. */
typedef struct {
    pattern_screen_t screen;
    uint8_t field;
    uint8_t active; /* 0: the rule has no single-pattern key to screen on; match it in full */
} config_screen_t;

typedef enum { LOG_CALLS_NONE, LOG_CALLS_DENIED, LOG_CALLS_ALL } log_calls_t;

typedef struct {
    char *file; /* the configuration file as named by the user */
    config_listener_t *listeners;
    size_t n_listeners;
    struct {
        config_file_t cert;
        config_file_t key;
        config_file_t client_ca;
        config_file_t crl;
        uint16_t min_version;            /* TLS1_2_VERSION or TLS1_3_VERSION */
        config_file_t key_password_file; /* for an encrypted PEM key */
        config_file_t pkcs12;            /* instead of cert + key */
        config_file_t pkcs12_password_file;
        config_text_t ciphers; /* TLS 1.2 cipher list joined with ':'; NULL: BoringSSL's default */
        config_text_t curves;  /* "X25519:P-256"; NULL: BoringSSL's default */
        config_hexlist_t deny_serials; /* as identity.h writes serials */
        config_hexlist_t deny_sha256;  /* 64 upper-case hex digits */
    } tls;
    struct {
        uint32_t protocols;   /* FRAME_PROTO_BIT of each protocol accepted (frame.h) */
        uint32_t serializers; /* bit n set: Pyro4 serializer id n allowed */
        uint64_t max_message_bytes;
        int compression_allow;
        uint64_t max_inflated_bytes;
        uint64_t max_depth;  /* nesting of a decoded payload */
        uint64_t max_values; /* values in one decoded payload */
    } pyro;
    struct {
        uint64_t max_connections;
        uint64_t handshake_timeout_ms;
        uint64_t idle_timeout_ms;
        uint64_t backend_connect_timeout_ms;
        uint64_t drain_timeout_ms; /* SIGTERM: in-flight calls get this long to finish */
    } limits;
    struct {
        int enabled;          /* the admin: section is present */
        config_addr_t listen; /* GET /healthz /readyz /metrics */
        int allow_remote;     /* a non-loopback admin address is refused without it */
    } admin;
    struct {
        int watch;                 /* reload when a referenced file changes */
        uint64_t poll_interval_ms; /* how often watched files are checked */
    } reload;
    uint64_t workers; /* event loops, one thread each; 0: one per CPU */
    char *user;       /* drop to this user (and its group) after binding; NULL: stay */
    char *group;
    /* The clients: rules (first match wins; none matching: refused at CONNECT), then one egress
     * rule per client-mode listener. */
    config_client_t *clients;
    config_screen_t *screens; /* one per rule, built at load */
    size_t n_clients;         /* all rules */
    size_t n_cert_rules;      /* the clients: rules, matched against certificates */
    int clients_given;
    struct {
        log_level_t level;
        log_calls_t calls; /* which call decisions are logged */
    } log;
} config_t;

typedef struct {
    char *lines[CONFIG_MAX_ERRORS];
    size_t n;
    size_t dropped; /* errors past CONFIG_MAX_ERRORS, counted but not kept */
} config_errors_t;

/* config_init zeroes |cfg| and sets every default of DESIGN.md. */
void config_init(config_t *cfg);

/* config_free releases everything |cfg| holds and zeroes it. */
void config_free(config_t *cfg);

/* config_load reads |path| into |cfg| (which config_load initialises). It returns 1 if the
 * file is valid; otherwise 0 with at least one line in |errs|. It does not open the
 * certificate files it names: tls_check_config does. */
int config_load(const char *path, config_t *cfg, config_errors_t *errs);

/* config_load_buffer is config_load for |len| bytes already in memory; |name| is used in
 * error messages and |base_dir| resolves relative paths. */
int config_load_buffer(const char *name, const char *base_dir, const uint8_t *data, size_t len,
                       config_t *cfg, config_errors_t *errs);

/* config_error appends "FILE:LINE:COL: PATH: REASON" to |errs| (PATH omitted when empty). */
void config_error(config_errors_t *errs, const char *file, config_mark_t mark, const char *path,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* config_errors_free releases the collected lines. */
void config_errors_free(config_errors_t *errs);

/* config_serializer_allowed returns 1 if Pyro4 serializer |id| is allowed by |cfg|. */
int config_serializer_allowed(const config_t *cfg, uint16_t id);

/* config_serializer_list writes the allowed serializers as "serpent, json" into |out|. */
void config_serializer_list(const config_t *cfg, char *out, size_t out_len);

#endif
