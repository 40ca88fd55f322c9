#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/un.h>

#include <openssl/ssl.h>
#include <uv.h>
#include <yaml.h>

#include "alloc.h"
#include "frame.h"

/* ---- parse context -------------------------------------------------------------------- */

typedef struct {
    const char *file;
    const char *base_dir;
    yaml_document_t *doc;
    config_t *cfg;
    config_errors_t *errs;
} cfg_ctx_t;

typedef int (*cfg_parse_fn)(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                            const void *arg);

typedef struct {
    const char *name;
    cfg_parse_fn parse;
    size_t offset; /* of the field within the struct the table describes */
    int required;
    const void *arg; /* parser-specific: a sub-table, a range… */
} cfg_key_t;

typedef struct {
    uint64_t min;
    uint64_t max;
    const char *unit; /* "bytes", "milliseconds" or "" */
} cfg_range_t;

#define CFG_TABLE_END                                                                              \
    {                                                                                              \
        NULL, NULL, 0, 0, NULL                                                                     \
    }

static config_mark_t node_mark(const yaml_node_t *node)
{
    config_mark_t m = {(int)node->start_mark.line + 1, (int)node->start_mark.column + 1};
    return m;
}

void config_error(config_errors_t *errs, const char *file, config_mark_t mark, const char *path,
                  const char *fmt, ...)
{
    char reason[512], line[1024];
    va_list ap;

    if (errs->n == CONFIG_MAX_ERRORS) {
        errs->dropped++;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    /* Line 0 means "the file as a whole" (cannot open, too large): no position to give. */
    if (mark.line == 0)
        snprintf(line, sizeof(line), "%s: %s", file, reason);
    else if (path != NULL && path[0] != '\0')
        snprintf(line, sizeof(line), "%s:%d:%d: %s: %s", file, mark.line, mark.col, path, reason);
    else
        snprintf(line, sizeof(line), "%s:%d:%d: %s", file, mark.line, mark.col, reason);
    errs->lines[errs->n] = pg_strdup(line);
    if (errs->lines[errs->n] != NULL)
        errs->n++;
    else
        errs->dropped++;
}

void config_errors_free(config_errors_t *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        free(errs->lines[i]);
    memset(errs, 0, sizeof(*errs));
}

static void cfg_err(cfg_ctx_t *ctx, const yaml_node_t *node, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void cfg_err(cfg_ctx_t *ctx, const yaml_node_t *node, const char *path, const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    config_error(ctx->errs, ctx->file, node_mark(node), path, "%s", reason);
}

static const char *node_kind(const yaml_node_t *node)
{
    switch (node->type) {
    case YAML_SCALAR_NODE:
        return "a scalar";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

/* scalar returns the text of a scalar node, or NULL (with an error) for anything else. The
 * text is NUL-terminated by libyaml; an embedded NUL makes the value invalid. */
static const char *scalar(cfg_ctx_t *ctx, yaml_node_t *node, const char *path, const char *what)
{
    if (node->type != YAML_SCALAR_NODE) {
        cfg_err(ctx, node, path, "expected %s, got %s", what, node_kind(node));
        return NULL;
    }
    const char *s = (const char *)node->data.scalar.value;
    if (strlen(s) != node->data.scalar.length) {
        cfg_err(ctx, node, path, "value contains a NUL character");
        return NULL;
    }
    return s;
}

static int is_plain(const yaml_node_t *node)
{
    return node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* parse_u64 reads a plain decimal integer without sign, spaces or overflow. */
static int parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

static void join_path(char *out, size_t out_len, const char *path, const char *key)
{
    if (key[0] == '\0')
        snprintf(out, out_len, "%s", path);
    else if (path[0] == '\0')
        snprintf(out, out_len, "%s", key);
    else
        snprintf(out, out_len, "%s.%s", path, key);
}

/* "path[i]" for an error message. Paths are made of known keys and indexes, far shorter than
 * any buffer here; should one not fit, it ends in "..." rather than being cut silently. */
static void index_path(char *out, size_t out_len, const char *path, size_t i)
{
    int n = snprintf(out, out_len, "%s[%zu]", path, i);
    if (n >= 0 && (size_t)n < out_len)
        return;
    if (out_len >= 4)
        memcpy(out + out_len - 4, "...", 4);
}

/* ---- generic parsers ------------------------------------------------------------------ */

static int parse_map(cfg_ctx_t *ctx, yaml_node_t *node, void *base, const char *path,
                     const cfg_key_t *table);

static int parse_section(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                         const void *arg)
{
    return parse_map(ctx, node, field, path, arg);
}

static int parse_string(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                        const void *arg)
{
    char **out = field;
    const char *s = scalar(ctx, node, path, "a string");
    if (s == NULL)
        return 0;
    if (s[0] == '\0') {
        cfg_err(ctx, node, path, "must not be empty");
        return 0;
    }
    char *copy = pg_strdup(s);
    if (copy == NULL) {
        cfg_err(ctx, node, path, "out of memory");
        return 0;
    }
    free(*out);
    *out = copy;
    return 1;
}

/* parse_text reads a non-empty string and where it was written (config_text_t). */
static int parse_text(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                      const void *arg)
{
    config_text_t *out = field;
    if (!parse_string(ctx, node, &out->text, path, arg))
        return 0;
    out->mark = node_mark(node);
    return 1;
}

static int parse_file(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                      const void *arg)
{
    config_file_t *out = field;
    const char *s = scalar(ctx, node, path, "a file path");
    if (s == NULL)
        return 0;
    if (s[0] == '\0') {
        cfg_err(ctx, node, path, "must not be empty");
        return 0;
    }
    size_t n = strlen(ctx->base_dir) + 1 + strlen(s) + 1;
    char *full = pg_malloc(n);
    if (full == NULL) {
        cfg_err(ctx, node, path, "out of memory");
        return 0;
    }
    if (s[0] == '/' || ctx->base_dir[0] == '\0')
        snprintf(full, n, "%s", s);
    else
        snprintf(full, n, "%s/%s", ctx->base_dir, s);
    free(out->path);
    out->path = full;
    out->mark = node_mark(node);
    return 1;
}

static int parse_uint_range(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                            const void *arg)
{
    const cfg_range_t *r = arg;
    uint64_t v;
    const char *s = scalar(ctx, node, path, "an integer");
    if (s == NULL)
        return 0;
    if (!is_plain(node) || !parse_u64(s, &v)) {
        cfg_err(ctx, node, path, "expected an integer%s%s, got '%s'", r->unit[0] ? " in " : "",
                r->unit, s);
        return 0;
    }
    if (v < r->min || v > r->max) {
        cfg_err(ctx, node, path, "must be between %llu and %llu, got %llu",
                (unsigned long long)r->min, (unsigned long long)r->max, (unsigned long long)v);
        return 0;
    }
    *(uint64_t *)field = v;
    return 1;
}

static int parse_bool(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                      const void *arg)
{
    const char *s = scalar(ctx, node, path, "true or false");
    if (s == NULL)
        return 0;
    if (is_plain(node) && strcmp(s, "true") == 0) {
        *(int *)field = 1;
        return 1;
    }
    if (is_plain(node) && strcmp(s, "false") == 0) {
        *(int *)field = 0;
        return 1;
    }
    cfg_err(ctx, node, path, "expected true or false, got '%s'", s);
    return 0;
}

/* An enumeration: |arg| is a cfg_enum_t listing names and the int each one stores. */
typedef struct {
    const char *names[6];
    int values[6];
    const char *expected; /* for the error: "\"1.2\" or \"1.3\"" */
} cfg_enum_t;

static int parse_enum(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                      const void *arg)
{
    const cfg_enum_t *e = arg;
    const char *s = scalar(ctx, node, path, "a string");
    if (s == NULL)
        return 0;
    for (size_t i = 0; i < 6 && e->names[i] != NULL; i++) {
        if (strcmp(s, e->names[i]) == 0) {
            *(int *)field = e->values[i];
            return 1;
        }
    }
    cfg_err(ctx, node, path, "must be %s, got '%s'", e->expected, s);
    return 0;
}

static int parse_min_version(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                             const void *arg)
{
    static const cfg_enum_t versions = {
        {"1.2", "1.3", NULL}, {TLS1_2_VERSION, TLS1_3_VERSION}, "\"1.2\" or \"1.3\""};
    int v = 0;
    if (!parse_enum(ctx, node, &v, path, &versions))
        return 0;
    *(uint16_t *)field = (uint16_t)v;
    return 1;
}

static int parse_log_level(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                           const void *arg)
{
    static const cfg_enum_t levels = {{"error", "warn", "info", "debug", NULL},
                                      {LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG},
                                      "error, warn, info or debug"};
    int v = 0;
    if (!parse_enum(ctx, node, &v, path, &levels))
        return 0;
    *(log_level_t *)field = (log_level_t)v;
    return 1;
}

static int parse_compression(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                             const void *arg)
{
    static const cfg_enum_t modes = {{"allow", "deny", NULL}, {1, 0}, "allow or deny"};
    return parse_enum(ctx, node, field, path, &modes);
}

/* ---- pyro.serializers and pyro.protocols ---------------------------------------------- */

static int parse_serializers(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                             const void *arg)
{
    static const struct {
        const char *name;
        uint16_t id;
        int dangerous;
    } known[] = {
        {"serpent", SER4_SERPENT, 0},         {"json", SER4_JSON, 0},
        {"marshal", SER4_MARSHAL, 0},         {"msgpack", SER4_MSGPACK, 0},
        {"pickle", SER4_PICKLE, 1},           {"dill", SER4_DILL, 1},
        {"cloudpickle", SER4_CLOUDPICKLE, 1},
    };
    uint32_t mask = 0;
    int ok = 1;
    char item_path[256];

    if (node->type != YAML_SEQUENCE_NODE) {
        cfg_err(ctx, node, path, "expected a list of serializer names, got %s", node_kind(node));
        return 0;
    }
    size_t i = 0;
    for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top;
         it++, i++) {
        yaml_node_t *item = yaml_document_get_node(ctx->doc, *it);
        index_path(item_path, sizeof(item_path), path, i);
        const char *s = scalar(ctx, item, item_path, "a serializer name");
        if (s == NULL) {
            ok = 0;
            continue;
        }
        size_t k;
        for (k = 0; k < sizeof(known) / sizeof(known[0]); k++) {
            if (strcmp(s, known[k].name) == 0)
                break;
        }
        if (k == sizeof(known) / sizeof(known[0])) {
            cfg_err(ctx, item, item_path,
                    "unknown serializer '%s' (known: serpent, json, marshal, msgpack)", s);
            ok = 0;
        } else if (known[k].dangerous) {
            /* PROTOCOL.md §5.5: these run code while decoding, before any check can happen. */
            cfg_err(ctx, item, item_path,
                    "'%s' executes code on the server when decoded and can never be allowed", s);
            ok = 0;
        } else if (mask & (1u << known[k].id)) {
            cfg_err(ctx, item, item_path, "'%s' is listed twice", s);
            ok = 0;
        } else {
            mask |= 1u << known[k].id;
        }
    }
    if (ok && mask == 0) {
        cfg_err(ctx, node, path, "must list at least one serializer");
        ok = 0;
    }
    if (ok)
        *(uint32_t *)field = mask;
    return ok;
}

static int parse_protocols(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                           const void *arg)
{
    uint32_t mask = 0;
    int ok = 1;
    char item_path[256];

    if (node->type != YAML_SEQUENCE_NODE) {
        cfg_err(ctx, node, path, "expected a list of protocol versions, got %s", node_kind(node));
        return 0;
    }
    size_t i = 0;
    for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top;
         it++, i++) {
        yaml_node_t *item = yaml_document_get_node(ctx->doc, *it);
        index_path(item_path, sizeof(item_path), path, i);
        const char *s = scalar(ctx, item, item_path, "4");
        if (s == NULL) {
            ok = 0;
        } else if (!is_plain(item)) {
            cfg_err(ctx, item, item_path,
                    "expected a protocol version (4, 5, 4.47 or 4.46), got '%s'", s);
            ok = 0;
        } else if (strcmp(s, "4") == 0) {
            mask |= FRAME_PROTO_BIT(PROTO_PYRO4);
        } else if (strcmp(s, "4.47") == 0) {
            mask |= FRAME_PROTO_BIT(PROTO_PYRO4_47);
        } else if (strcmp(s, "4.46") == 0) {
            mask |= FRAME_PROTO_BIT(PROTO_PYRO4_46);
        } else if (strcmp(s, "5") == 0) {
            mask |= FRAME_PROTO_BIT(PROTO_PYRO5);
        } else {
            cfg_err(ctx, item, item_path,
                    "unknown Pyro protocol '%s' (expected 4, 5, 4.47 or 4.46)", s);
            ok = 0;
        }
    }
    if (ok && mask == 0) {
        cfg_err(ctx, node, path, "must list at least one protocol");
        ok = 0;
    }
    if (ok)
        *(uint32_t *)field = mask;
    return ok;
}

/* ---- addresses ------------------------------------------------------------------------ */

/* parse_hostport accepts "IPv4:port", "[IPv6]:port" and "localhost:port", port 1-65535. */
static int parse_hostport(const char *s, struct sockaddr_storage *out)
{
    char host[64];
    const char *port_s;
    uint64_t port;

    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - s - 1) >= sizeof(host))
            return 0;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        port_s = end + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon == NULL || (size_t)(colon - s) >= sizeof(host) || strchr(s, ':') != colon)
            return 0;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        port_s = colon + 1;
    }
    if (!parse_u64(port_s, &port) || port == 0 || port > 65535)
        return 0;
    memset(out, 0, sizeof(*out));
    if (s[0] != '[' && strcmp(host, "localhost") == 0)
        return uv_ip4_addr("127.0.0.1", (int)port, (struct sockaddr_in *)out) == 0;
    if (s[0] == '[')
        return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0;
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0;
}

/* parse_unix_path fills |out| with the AF_UNIX address of "unix:PATH", PATH resolved against
 * the configuration's directory. */
static int parse_unix_path(cfg_ctx_t *ctx, const char *s, struct sockaddr_storage *out)
{
    struct sockaddr_un *un = (struct sockaddr_un *)out;
    const char *p = s + 5;
    int n;
    if (p[0] == '\0')
        return 0;
    memset(out, 0, sizeof(*out));
    un->sun_family = AF_UNIX;
    if (p[0] == '/' || ctx->base_dir[0] == '\0')
        n = snprintf(un->sun_path, sizeof(un->sun_path), "%s", p);
    else
        n = snprintf(un->sun_path, sizeof(un->sun_path), "%s/%s", ctx->base_dir, p);
    return n > 0 && (size_t)n < sizeof(un->sun_path);
}

/* resolve_hostport accepts what parse_hostport does and, for an upstream, "name:port": the name
 * is resolved when the configuration is loaded (at start and at each reload). */
static int resolve_hostport(const char *s, struct sockaddr_storage *out)
{
    char host[256];
    const char *colon = strrchr(s, ':');
    uint64_t port;
    struct addrinfo hints, *res = NULL;

    if (parse_hostport(s, out))
        return 1;
    if (s[0] == '[' || colon == NULL || colon == s || (size_t)(colon - s) >= sizeof(host) ||
        !parse_u64(colon + 1, &port) || port == 0 || port > 65535)
        return 0;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
        return 0;
    int ok = res->ai_addrlen <= sizeof(*out);
    if (ok) {
        memset(out, 0, sizeof(*out));
        memcpy(out, res->ai_addr, res->ai_addrlen);
        if (out->ss_family == AF_INET)
            ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
        else if (out->ss_family == AF_INET6)
            ((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
        else
            ok = 0;
    }
    freeaddrinfo(res);
    return ok;
}

/* parse_addr reads a listen or backend address; |arg| non-NULL: an upstream, which may name a
 * host to resolve. "unix:PATH" is read here and refused later where it does not belong. */
static int parse_addr(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                      const void *arg)
{
    config_addr_t *out = field;
    const char *s = scalar(ctx, node, path, "an address");
    if (s == NULL)
        return 0;
    if (arg == NULL && strncmp(s, "unix:", 5) == 0) {
        if (!parse_unix_path(ctx, s, &out->addr)) {
            cfg_err(ctx, node, path, "invalid Unix socket path '%s' (at most %zu bytes)", s,
                    sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
            return 0;
        }
    } else if (arg != NULL ? !resolve_hostport(s, &out->addr) : !parse_hostport(s, &out->addr)) {
        if (arg != NULL)
            cfg_err(ctx, node, path,
                    "invalid or unresolvable address '%s' (expected HOST:port, IP:port or "
                    "[IPv6]:port, port 1-65535)",
                    s);
        else
            cfg_err(ctx, node, path,
                    "invalid address '%s' (expected IP:port or [IPv6]:port, port 1-65535)", s);
        return 0;
    }
    char *copy = pg_strdup(s);
    if (copy == NULL) {
        cfg_err(ctx, node, path, "out of memory");
        return 0;
    }
    free(out->text);
    out->text = copy;
    out->mark = node_mark(node);
    return 1;
}

static int addr_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return 0;
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_UNIX)
        return strcmp(((const struct sockaddr_un *)a)->sun_path,
                      ((const struct sockaddr_un *)b)->sun_path) == 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a;
        const struct sockaddr_in *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
    const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

/* ---- listeners ------------------------------------------------------------------------ */

static int parse_mode(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                      const void *arg)
{
    static const cfg_enum_t modes = {
        {"server", "client", NULL}, {LISTENER_SERVER, LISTENER_CLIENT}, "server or client"};
    return parse_enum(ctx, node, field, path, &modes);
}

/* parse_socket_mode reads permissions in octal, "0660" (quoted or not: YAML 1.1 would read an
 * unquoted 0660 as octal too, libyaml hands over the text). */
static int parse_socket_mode(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                             const void *arg)
{
    config_listener_t *l = field;
    const char *s = scalar(ctx, node, path, "an octal mode");
    uint32_t v = 0;
    size_t n = s != NULL ? strlen(s) : 0;
    if (s == NULL)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '7' || n > 4) {
            n = 0;
            break;
        }
        v = v * 8 + (uint32_t)(s[i] - '0');
    }
    if (n < 3 || v > 0777) {
        cfg_err(ctx, node, path, "expected permissions in octal such as \"0660\", got '%s'", s);
        return 0;
    }
    if (v & 0007) {
        cfg_err(ctx, node, path,
                "'%s' lets every local user connect: the socket takes plaintext Pyro traffic "
                "that leaves with this listener's certificate (use 0600 or 0660)",
                s);
        return 0;
    }
    l->socket_mode = v;
    l->socket_mode_given = 1;
    return 1;
}

static int parse_server_uri(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                            const void *arg);

static const cfg_key_t kUpstreamTlsKeys[] = {
    {"cert", parse_file, offsetof(config_upstream_tls_t, cert), 1, NULL},
    {"key", parse_file, offsetof(config_upstream_tls_t, key), 1, NULL},
    {"ca", parse_file, offsetof(config_upstream_tls_t, ca), 1, NULL},
    {"server_name", parse_text, offsetof(config_upstream_tls_t, server_name), 0, NULL},
    {"server_uri", parse_server_uri, offsetof(config_upstream_tls_t, server_uri), 0, NULL},
    {"min_version", parse_min_version, offsetof(config_upstream_tls_t, min_version), 0, NULL},
    CFG_TABLE_END,
};

static int parse_upstream_tls(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                              const void *arg)
{
    config_listener_t *l = field;
    config_upstream_tls_t *t = &l->upstream_tls;
    t->min_version = TLS1_2_VERSION;
    t->mark = node_mark(node);
    l->upstream_tls_given = 1;
    if (!parse_map(ctx, node, t, path, kUpstreamTlsKeys))
        return 0;
    if (t->server_name.text == NULL && t->server_uri.n == 0) {
        cfg_err(ctx, node, path,
                "give server_name or server_uri (or both): the upstream's certificate must name "
                "the server expected, not just chain to the CA");
        return 0;
    }
    return 1;
}

static int parse_egress(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                        const void *arg);

static const cfg_key_t kListenerKeys[] = {
    {"name", parse_string, offsetof(config_listener_t, name), 1, NULL},
    {"mode", parse_mode, offsetof(config_listener_t, mode), 0, NULL},
    {"listen", parse_addr, offsetof(config_listener_t, listen), 1, NULL},
    {"backend", parse_addr, offsetof(config_listener_t, backend), 0, NULL},
    {"allow_remote_backend", parse_bool, offsetof(config_listener_t, allow_remote_backend), 0,
     NULL},
    {"forward_identity", parse_bool, offsetof(config_listener_t, forward_identity), 0, NULL},
    {"socket_mode", parse_socket_mode, 0, 0, NULL},
    {"upstream", parse_addr, offsetof(config_listener_t, upstream), 0, "upstream"},
    {"upstream_tls", parse_upstream_tls, 0, 0, NULL},
    {"egress", parse_egress, 0, 0, NULL},
    CFG_TABLE_END,
};

/* listener_err reports |key| of listener |item_path| at |mark|. */
static void listener_err(cfg_ctx_t *ctx, config_mark_t mark, const char *item_path, const char *key,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void listener_err(cfg_ctx_t *ctx, config_mark_t mark, const char *item_path, const char *key,
                         const char *fmt, ...)
{
    char sub[300], reason[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    join_path(sub, sizeof(sub), item_path, key);
    config_error(ctx->errs, ctx->file, mark, sub, "%s", reason);
}

/* check_listener_mode checks the keys each mode needs and refuses those it does not use. */
static int check_listener_mode(cfg_ctx_t *ctx, const config_listener_t *l, const char *item_path)
{
    int is_unix = l->listen.addr.ss_family == AF_UNIX;
    if (l->mode == LISTENER_SERVER) {
        /* Client-only keys first: with them and no backend, "mode: client" was forgotten.
         * Each is pointed at where it was written (socket_mode keeps no mark: the listener). */
        static const char *client_only = "is for client-mode listeners (mode: client)";
        if (l->upstream.text != NULL) {
            listener_err(ctx, l->upstream.mark, item_path, "upstream", "%s", client_only);
            return 0;
        }
        if (l->upstream_tls_given || l->egress_given || l->socket_mode_given) {
            config_mark_t mark = l->upstream_tls_given ? l->upstream_tls.mark
                                 : l->egress_given     ? l->egress.mark
                                                       : l->mark;
            const char *key = l->upstream_tls_given ? "upstream_tls"
                              : l->egress_given     ? "egress"
                                                    : "socket_mode";
            listener_err(ctx, mark, item_path, key, "%s", client_only);
            return 0;
        }
        if (l->backend.text == NULL) {
            listener_err(ctx, l->mark, item_path, "", "missing required key 'backend'");
            return 0;
        }
        if (is_unix) {
            listener_err(ctx, l->listen.mark, item_path, "listen",
                         "a server-mode listener takes TLS on a TCP address, not '%s'",
                         l->listen.text);
            return 0;
        }
        if (!l->allow_remote_backend && !addr_is_loopback(&l->backend.addr)) {
            listener_err(ctx, l->backend.mark, item_path, "backend",
                         "'%s' is not a loopback address (set allow_remote_backend: true to "
                         "forward plaintext Pyro traffic off this host)",
                         l->backend.text);
            return 0;
        }
        return 1;
    }
    if (l->backend.text != NULL || l->allow_remote_backend || l->forward_identity) {
        listener_err(ctx, l->backend.text != NULL ? l->backend.mark : l->mark, item_path,
                     l->backend.text != NULL ? "backend"
                     : l->forward_identity   ? "forward_identity"
                                             : "allow_remote_backend",
                     "is for server-mode listeners: a client-mode listener sends to 'upstream' "
                     "over TLS");
        return 0;
    }
    static const char *need[] = {"upstream", "upstream_tls", "egress"};
    int have[] = {l->upstream.text != NULL, l->upstream_tls_given, l->egress_given};
    for (size_t k = 0; k < 3; k++) {
        if (!have[k]) {
            listener_err(ctx, l->mark, item_path, "", "missing required key '%s' (mode: client)",
                         need[k]);
            return 0;
        }
    }
    if (!is_unix && !addr_is_loopback(&l->listen.addr)) {
        listener_err(ctx, l->listen.mark, item_path, "listen",
                     "'%s' is not a loopback address or unix:PATH: a client-mode listener takes "
                     "plaintext Pyro traffic, which must not come from off this host",
                     l->listen.text);
        return 0;
    }
    if (!is_unix && l->socket_mode_given) {
        listener_err(ctx, l->mark, item_path, "socket_mode", "goes with listen: unix:PATH");
        return 0;
    }
    return 1;
}

static int parse_listeners(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                           const void *arg)
{
    config_t *cfg = ctx->cfg;
    char item_path[256];
    int ok = 1;

    if (node->type != YAML_SEQUENCE_NODE) {
        cfg_err(ctx, node, path, "expected a list of listeners, got %s", node_kind(node));
        return 0;
    }
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n == 0) {
        cfg_err(ctx, node, path, "at least one listener is required");
        return 0;
    }
    if (n > CONFIG_MAX_LISTENERS) {
        cfg_err(ctx, node, path, "at most %d listeners are supported", CONFIG_MAX_LISTENERS);
        return 0;
    }
    cfg->listeners = pg_calloc(n, sizeof(*cfg->listeners));
    if (cfg->listeners == NULL) {
        cfg_err(ctx, node, path, "out of memory");
        return 0;
    }
    cfg->n_listeners = n;
    for (size_t i = 0; i < n; i++) {
        config_listener_t *l = &cfg->listeners[i];
        yaml_node_t *item = yaml_document_get_node(ctx->doc, node->data.sequence.items.start[i]);
        index_path(item_path, sizeof(item_path), path, i);
        l->mark = node_mark(item);
        if (!parse_map(ctx, item, l, item_path, kListenerKeys)) {
            ok = 0;
            continue;
        }
        char sub[300];
        if (!check_listener_mode(ctx, l, item_path))
            ok = 0;
        for (size_t j = 0; j < i; j++) {
            const config_listener_t *o = &cfg->listeners[j];
            if (o->name != NULL && strcmp(o->name, l->name) == 0) {
                join_path(sub, sizeof(sub), item_path, "name");
                config_error(ctx->errs, ctx->file, l->mark, sub,
                             "listener name '%s' is already used by %s[%zu]", l->name, path, j);
                ok = 0;
            }
            if (o->listen.text != NULL && same_addr(&o->listen.addr, &l->listen.addr)) {
                join_path(sub, sizeof(sub), item_path, "listen");
                config_error(ctx->errs, ctx->file, l->listen.mark, sub,
                             "address '%s' is already used by %s[%zu]", l->listen.text, path, j);
                ok = 0;
            }
        }
    }
    return ok;
}

/* ---- tls lists ----------------------------------------------------------------------- */

/* for_each_scalar calls |fn| for |node| when it is a scalar, or for each item of a list of
 * scalars; |what| names the expected item in errors. */
typedef int (*cfg_item_fn)(cfg_ctx_t *ctx, yaml_node_t *item, const char *s, const char *path,
                           void *state);

static int for_each_scalar(cfg_ctx_t *ctx, yaml_node_t *node, const char *path, const char *what,
                           size_t max_items, cfg_item_fn fn, void *state)
{
    char item_path[320];
    int ok = 1;

    if (node->type == YAML_SCALAR_NODE) {
        const char *s = scalar(ctx, node, path, what);
        return s != NULL && fn(ctx, node, s, path, state);
    }
    if (node->type != YAML_SEQUENCE_NODE) {
        cfg_err(ctx, node, path, "expected %s or a list of them, got %s", what, node_kind(node));
        return 0;
    }
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n == 0) {
        cfg_err(ctx, node, path, "the list is empty");
        return 0;
    }
    if (n > max_items) {
        cfg_err(ctx, node, path, "at most %zu items are supported", max_items);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yaml_document_get_node(ctx->doc, node->data.sequence.items.start[i]);
        index_path(item_path, sizeof(item_path), path, i);
        const char *s = scalar(ctx, item, item_path, what);
        if (s == NULL || !fn(ctx, item, s, item_path, state))
            ok = 0;
    }
    return ok;
}

typedef struct {
    char **items;
    size_t n;
    size_t cap;
    size_t digits; /* 0: serial */
} hex_list_t;

static int add_hex(cfg_ctx_t *ctx, yaml_node_t *item, const char *s, const char *path, void *state)
{
    hex_list_t *l = state;
    char norm[PATTERN_MAX_LEN];
    if (!pattern_hex_normalise(s, strlen(s), l->digits, norm, sizeof(norm))) {
        if (l->digits)
            cfg_err(ctx, item, path,
                    "'%s' is not a SHA-256 fingerprint (64 hex digits, ':' separators allowed)", s);
        else
            cfg_err(ctx, item, path, "'%s' is not a certificate serial in hex", s);
        return 0;
    }
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 8;
        char **n = pg_realloc(l->items, ncap * sizeof(*n));
        if (n == NULL) {
            cfg_err(ctx, item, path, "out of memory");
            return 0;
        }
        l->items = n;
        l->cap = ncap;
    }
    l->items[l->n] = pg_strdup(norm);
    if (l->items[l->n] == NULL) {
        cfg_err(ctx, item, path, "out of memory");
        return 0;
    }
    l->n++;
    return 1;
}

static const size_t kSerialDigits = 0, kSha256Digits = 64;

/* parse_hex_list reads serials (|arg| &kSerialDigits) or fingerprints (&kSha256Digits). */
static int parse_hex_list(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                          const void *arg)
{
    config_hexlist_t *out = field;
    size_t digits = *(const size_t *)arg;
    hex_list_t l = {out->items, out->n, out->n, digits};
    int ok = for_each_scalar(ctx, node, path, digits ? "a SHA-256 fingerprint" : "a serial",
                             1u << 20, add_hex, &l);
    out->items = l.items;
    out->n = l.n;
    return ok;
}

typedef struct {
    char *joined;
    size_t len;
} join_state_t;

static int add_joined(cfg_ctx_t *ctx, yaml_node_t *item, const char *s, const char *path,
                      void *state)
{
    join_state_t *j = state;
    size_t n = strlen(s);
    if (n == 0) {
        cfg_err(ctx, item, path, "must not be empty");
        return 0;
    }
    char *grown = pg_realloc(j->joined, j->len + n + 2);
    if (grown == NULL) {
        cfg_err(ctx, item, path, "out of memory");
        return 0;
    }
    j->joined = grown;
    if (j->len)
        j->joined[j->len++] = ':';
    memcpy(j->joined + j->len, s, n + 1);
    j->len += n;
    return 1;
}

/* parse_colon_list reads a string ("A:B") or a list of strings, stored joined with ':'. The
 * names themselves are checked by BoringSSL when the TLS context is built (tls.c). */
static int parse_colon_list(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                            const void *arg)
{
    join_state_t j = {NULL, 0};
    if (!for_each_scalar(ctx, node, path, "a name", 256, add_joined, &j)) {
        free(j.joined);
        return 0;
    }
    config_text_t *out = field;
    free(out->text);
    out->text = j.joined;
    out->mark = node_mark(node);
    return 1;
}

/* ---- clients -------------------------------------------------------------------------- */

typedef enum { PAT_GLOB, PAT_GLOB_NOCASE, PAT_IP, PAT_SERIAL, PAT_SHA256 } pat_type_t;

typedef struct {
    config_patterns_t *list;
    size_t cap;
    pat_type_t type;
} pat_state_t;

static int add_pattern(cfg_ctx_t *ctx, yaml_node_t *item, const char *s, const char *path,
                       void *state)
{
    pat_state_t *st = state;
    config_patterns_t *l = st->list;
    char why[200];
    pattern_t p;
    int ok;

    memset(&p, 0, sizeof(p));
    switch (st->type) {
    case PAT_GLOB:
        ok = pattern_compile_glob(&p, s, 0, why, sizeof(why));
        break;
    case PAT_GLOB_NOCASE:
        ok = pattern_compile_glob(&p, s, 1, why, sizeof(why));
        break;
    case PAT_IP:
        ok = pattern_compile_ip(&p, s, why, sizeof(why));
        break;
    case PAT_SERIAL:
        ok = pattern_compile_hex(&p, s, 0, why, sizeof(why));
        break;
    default:
        ok = pattern_compile_hex(&p, s, 64, why, sizeof(why));
        break;
    }
    if (!ok) {
        cfg_err(ctx, item, path, "%s", why);
        return 0;
    }
    if (l->n == st->cap) {
        size_t ncap = st->cap ? st->cap * 2 : 4;
        pattern_t *n = pg_realloc(l->items, ncap * sizeof(*n));
        if (n == NULL) {
            pattern_free(&p);
            cfg_err(ctx, item, path, "out of memory");
            return 0;
        }
        l->items = n;
        st->cap = ncap;
    }
    l->items[l->n++] = p;
    return 1;
}

static int parse_patterns_as(cfg_ctx_t *ctx, yaml_node_t *node, config_patterns_t *out,
                             const char *path, pat_type_t type, const char *what)
{
    pat_state_t st = {out, out->n, type};
    return for_each_scalar(ctx, node, path, what, CONFIG_MAX_ENTRIES, add_pattern, &st);
}

static int parse_name_globs(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                            const void *arg)
{
    return parse_patterns_as(ctx, node, field, path, PAT_GLOB, "a name pattern");
}

static int parse_object_globs(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                              const void *arg)
{
    return parse_patterns_as(ctx, node, field, path, PAT_GLOB, "an object id pattern");
}

/* The match keys, in identity_field_t order. */
static const struct {
    const char *key;
    pat_type_t type;
} kMatchKeys[ID_FIELDS] = {
    {"cn", PAT_GLOB},           {"o", PAT_GLOB},        {"ou", PAT_GLOB},
    {"dns", PAT_GLOB_NOCASE},   {"uri", PAT_GLOB},      {"ip", PAT_IP},
    {"email", PAT_GLOB_NOCASE}, {"serial", PAT_SERIAL}, {"sha256", PAT_SHA256},
};

static int parse_match(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                       const void *arg)
{
    config_client_t *c = field;
    char sub[320];
    int ok = 1;

    /* `match: {}` (or an empty `match:`) matches every verified client, explicitly. */
    if (node->type == YAML_SCALAR_NODE && is_plain(node) && node->data.scalar.length == 0)
        return 1;
    if (node->type != YAML_MAPPING_NODE) {
        cfg_err(ctx, node, path, "expected a mapping of match keys, got %s", node_kind(node));
        return 0;
    }
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(ctx->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(ctx->doc, p->value);
        const char *name = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "";
        size_t f;
        for (f = 0; f < ID_FIELDS; f++) {
            if (strcmp(kMatchKeys[f].key, name) == 0)
                break;
        }
        if (f == ID_FIELDS) {
            /* Worded as every other unknown key (DESIGN.md's own example is this one). */
            cfg_err(ctx, k, path, "unknown key '%s'", name);
            ok = 0;
            continue;
        }
        if (c->match[f].n != 0) {
            cfg_err(ctx, k, path, "duplicate key '%s'", name);
            ok = 0;
            continue;
        }
        join_path(sub, sizeof(sub), path, name);
        if (!parse_patterns_as(ctx, v, &c->match[f], sub, kMatchKeys[f].type, "a pattern"))
            ok = 0;
    }
    return ok;
}

static const cfg_key_t kAccessKeys[] = {
    {"object", parse_object_globs, offsetof(config_access_t, objects), 1, NULL},
    {"methods", parse_name_globs, offsetof(config_access_t, methods), 0, NULL},
    {"get", parse_name_globs, offsetof(config_access_t, get), 0, NULL},
    {"set", parse_name_globs, offsetof(config_access_t, set), 0, NULL},
    CFG_TABLE_END,
};

/* parse_access reads an allow (|arg| "allow") or deny list. */
static int parse_access(cfg_ctx_t *ctx, yaml_node_t *node, config_access_t **out, size_t *out_n,
                        const char *path, int is_allow)
{
    char item_path[320];
    int ok = 1;

    if (node->type != YAML_SEQUENCE_NODE) {
        cfg_err(ctx, node, path, "expected a list of entries (object, methods, get, set), got %s",
                node_kind(node));
        return 0;
    }
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n > CONFIG_MAX_ENTRIES) {
        cfg_err(ctx, node, path, "at most %d entries are supported", CONFIG_MAX_ENTRIES);
        return 0;
    }
    if (n == 0)
        return 1;
    *out = pg_calloc(n, sizeof(**out));
    if (*out == NULL) {
        cfg_err(ctx, node, path, "out of memory");
        return 0;
    }
    *out_n = n;
    for (size_t i = 0; i < n; i++) {
        config_access_t *a = &(*out)[i];
        yaml_node_t *item = yaml_document_get_node(ctx->doc, node->data.sequence.items.start[i]);
        index_path(item_path, sizeof(item_path), path, i);
        a->mark = node_mark(item);
        if (!parse_map(ctx, item, a, item_path, kAccessKeys)) {
            ok = 0;
            continue;
        }
        if (is_allow && a->methods.n == 0 && a->get.n == 0 && a->set.n == 0) {
            /* Allowing a whole object would be one `**` away from allowing everything: the
             * operator writes methods: ["*"] when that is what is meant. */
            cfg_err(ctx, item, item_path,
                    "an allow entry needs at least one of methods, get or set");
            ok = 0;
        }
    }
    return ok;
}

static int parse_allow(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                       const void *arg)
{
    config_client_t *c = field;
    return parse_access(ctx, node, &c->allow, &c->n_allow, path, 1);
}

static int parse_deny(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                      const void *arg)
{
    config_client_t *c = field;
    return parse_access(ctx, node, &c->deny, &c->n_deny, path, 0);
}

static int parse_server_uri(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                            const void *arg)
{
    return parse_patterns_as(ctx, node, field, path, PAT_GLOB, "a URI pattern");
}

static const cfg_key_t kEgressKeys[] = {
    {"allow", parse_allow, 0, 0, NULL},
    {"deny", parse_deny, 0, 0, NULL},
    CFG_TABLE_END,
};

/* parse_egress reads a client-mode listener's egress policy: a client rule without match keys,
 * moved among the rules once the whole file is read (finish_egress). */
static int parse_egress(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                        const void *arg)
{
    config_listener_t *l = field;
    l->egress_given = 1;
    l->egress.mark = node_mark(node);
    l->egress.egress = 1;
    return parse_map(ctx, node, &l->egress, path, kEgressKeys);
}

static const cfg_key_t kClientKeys[] = {
    {"name", parse_string, offsetof(config_client_t, name), 1, NULL},
    {"match", parse_match, 0, 1, NULL},
    {"allow", parse_allow, 0, 0, NULL},
    {"deny", parse_deny, 0, 0, NULL},
    CFG_TABLE_END,
};

/* screen_rule picks, for config_screen_t, a match key of |c| with a single pattern, preferring
 * one whose pattern carries a probe (most rules differ there). */
static void screen_rule(const config_client_t *c, config_screen_t *out)
{
    int best = -1;
    memset(out, 0, sizeof(*out));
    for (size_t f = 0; f < ID_FIELDS; f++) {
        if (c->match[f].n != 1)
            continue;
        if (best < 0 ||
            (c->match[f].items[0].probe_where != 0 && c->match[best].items[0].probe_where == 0))
            best = (int)f;
    }
    if (best < 0)
        return;
    pattern_screen(&c->match[best].items[0], &out->screen);
    out->field = (uint8_t)best;
    out->active = 1;
}

static int parse_clients(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                         const void *arg)
{
    config_t *cfg = ctx->cfg;
    char item_path[320], sub[340];
    int ok = 1;

    /* `clients: []` refuses every client: a valid, if useless, deny-everything policy. */
    cfg->clients_given = 1;
    if (node->type != YAML_SEQUENCE_NODE) {
        cfg_err(ctx, node, path, "expected a list of client rules, got %s", node_kind(node));
        return 0;
    }
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n > CONFIG_MAX_CLIENTS) {
        cfg_err(ctx, node, path, "at most %d client rules are supported", CONFIG_MAX_CLIENTS);
        return 0;
    }
    if (n == 0)
        return 1;
    cfg->clients = pg_calloc(n, sizeof(*cfg->clients));
    cfg->screens = pg_calloc(n, sizeof(*cfg->screens));
    if (cfg->clients == NULL || cfg->screens == NULL) {
        cfg_err(ctx, node, path, "out of memory");
        return 0;
    }
    cfg->n_clients = cfg->n_cert_rules = n;
    for (size_t i = 0; i < n; i++) {
        config_client_t *c = &cfg->clients[i];
        yaml_node_t *item = yaml_document_get_node(ctx->doc, node->data.sequence.items.start[i]);
        index_path(item_path, sizeof(item_path), path, i);
        c->mark = node_mark(item);
        if (!parse_map(ctx, item, c, item_path, kClientKeys)) {
            ok = 0;
            continue;
        }
        screen_rule(c, &cfg->screens[i]);
        for (size_t j = 0; j < i; j++) {
            if (cfg->clients[j].name != NULL && strcmp(cfg->clients[j].name, c->name) == 0) {
                join_path(sub, sizeof(sub), item_path, "name");
                config_error(ctx->errs, ctx->file, c->mark, sub,
                             "rule name '%s' is already used by %s[%zu]", c->name, path, j);
                ok = 0;
            }
        }
    }
    return ok;
}

static int parse_log_calls(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                           const void *arg)
{
    static const cfg_enum_t modes = {{"all", "denied", "none", NULL},
                                     {LOG_CALLS_ALL, LOG_CALLS_DENIED, LOG_CALLS_NONE},
                                     "all, denied or none"};
    int v = 0;
    if (!parse_enum(ctx, node, &v, path, &modes))
        return 0;
    *(log_calls_t *)field = (log_calls_t)v;
    return 1;
}

/* ---- the tables ----------------------------------------------------------------------- */

static const cfg_range_t kMessageBytes = {64, 0x7fffffffu, "bytes"};
static const cfg_range_t kInflatedBytes = {64, 0x7fffffffu, "bytes"};
static const cfg_range_t kDepth = {2, 256, ""};
static const cfg_range_t kValues = {16, 100000000, ""};
static const cfg_range_t kConnections = {1, 1000000, ""};
static const cfg_range_t kTimeout = {1, 86400000, "milliseconds"};

#define TLS_FIELD(f)  (offsetof(config_t, tls) + offsetof(__typeof__(((config_t *)0)->tls), f))
#define PYRO_FIELD(f) (offsetof(config_t, pyro) + offsetof(__typeof__(((config_t *)0)->pyro), f))
#define LIMITS_FIELD(f)                                                                            \
    (offsetof(config_t, limits) + offsetof(__typeof__(((config_t *)0)->limits), f))
#define LOG_FIELD(f) (offsetof(config_t, log) + offsetof(__typeof__(((config_t *)0)->log), f))

/* Section tables use offsets from the start of config_t; parse_section passes the same base. */
static const cfg_key_t kTlsKeys[] = {
    {"cert", parse_file, TLS_FIELD(cert), 0, NULL},
    {"key", parse_file, TLS_FIELD(key), 0, NULL},
    {"client_ca", parse_file, TLS_FIELD(client_ca), 1, NULL},
    {"crl", parse_file, TLS_FIELD(crl), 0, NULL},
    {"min_version", parse_min_version, TLS_FIELD(min_version), 0, NULL},
    {"key_password_file", parse_file, TLS_FIELD(key_password_file), 0, NULL},
    {"pkcs12", parse_file, TLS_FIELD(pkcs12), 0, NULL},
    {"pkcs12_password_file", parse_file, TLS_FIELD(pkcs12_password_file), 0, NULL},
    {"ciphers", parse_colon_list, TLS_FIELD(ciphers), 0, NULL},
    {"curves", parse_colon_list, TLS_FIELD(curves), 0, NULL},
    {"deny_serials", parse_hex_list, TLS_FIELD(deny_serials), 0, &kSerialDigits},
    {"deny_sha256", parse_hex_list, TLS_FIELD(deny_sha256), 0, &kSha256Digits},
    CFG_TABLE_END,
};

static const cfg_key_t kPyroKeys[] = {
    {"protocols", parse_protocols, PYRO_FIELD(protocols), 0, NULL},
    {"serializers", parse_serializers, PYRO_FIELD(serializers), 0, NULL},
    {"max_message_bytes", parse_uint_range, PYRO_FIELD(max_message_bytes), 0, &kMessageBytes},
    {"compression", parse_compression, PYRO_FIELD(compression_allow), 0, NULL},
    {"max_inflated_bytes", parse_uint_range, PYRO_FIELD(max_inflated_bytes), 0, &kInflatedBytes},
    {"max_depth", parse_uint_range, PYRO_FIELD(max_depth), 0, &kDepth},
    {"max_values", parse_uint_range, PYRO_FIELD(max_values), 0, &kValues},
    CFG_TABLE_END,
};

static const cfg_key_t kLimitsKeys[] = {
    {"max_connections", parse_uint_range, LIMITS_FIELD(max_connections), 0, &kConnections},
    {"handshake_timeout", parse_uint_range, LIMITS_FIELD(handshake_timeout_ms), 0, &kTimeout},
    {"idle_timeout", parse_uint_range, LIMITS_FIELD(idle_timeout_ms), 0, &kTimeout},
    {"backend_connect_timeout", parse_uint_range, LIMITS_FIELD(backend_connect_timeout_ms), 0,
     &kTimeout},
    {"drain_timeout", parse_uint_range, LIMITS_FIELD(drain_timeout_ms), 0, &kTimeout},
    CFG_TABLE_END,
};

static const cfg_range_t kWorkers = {1, 256, ""};
static const cfg_range_t kPollInterval = {100, 3600000, "milliseconds"};

#define ADMIN_FIELD(f) (offsetof(config_t, admin) + offsetof(__typeof__(((config_t *)0)->admin), f))
#define RELOAD_FIELD(f)                                                                            \
    (offsetof(config_t, reload) + offsetof(__typeof__(((config_t *)0)->reload), f))

static const cfg_key_t kAdminKeys[] = {
    {"listen", parse_addr, ADMIN_FIELD(listen), 1, NULL},
    {"allow_remote", parse_bool, ADMIN_FIELD(allow_remote), 0, NULL},
    CFG_TABLE_END,
};

static const cfg_key_t kReloadKeys[] = {
    {"watch", parse_bool, RELOAD_FIELD(watch), 0, NULL},
    {"poll_interval", parse_uint_range, RELOAD_FIELD(poll_interval_ms), 0, &kPollInterval},
    CFG_TABLE_END,
};

/* parse_admin reads the admin: section; its presence turns the endpoint on. */
static int parse_admin(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                       const void *arg)
{
    config_t *cfg = ctx->cfg;
    char sub[300];
    if (!parse_map(ctx, node, field, path, kAdminKeys))
        return 0;
    cfg->admin.enabled = 1;
    if (!cfg->admin.allow_remote && !addr_is_loopback(&cfg->admin.listen.addr)) {
        join_path(sub, sizeof(sub), path, "listen");
        config_error(ctx->errs, ctx->file, cfg->admin.listen.mark, sub,
                     "'%s' is not a loopback address (the metrics name clients and rules: set "
                     "allow_remote: true to serve them off this host)",
                     cfg->admin.listen.text);
        return 0;
    }
    return 1;
}

/* finish_listeners runs once the whole file is read (keys may come in any order): tls: and
 * clients: are required when a listener serves TLS, and each client-mode listener's egress
 * policy becomes a rule after the clients: rules (cfg->clients[egress_rule]), never matched
 * against a certificate. */
static int finish_listeners(cfg_ctx_t *ctx, yaml_node_t *root)
{
    config_t *cfg = ctx->cfg;
    size_t n_server = 0, n_client = 0;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (cfg->listeners[i].mode == LISTENER_CLIENT)
            n_client++;
        else
            n_server++;
    }
    if (n_server > 0 && cfg->tls.client_ca.path == NULL) {
        cfg_err(ctx, root, "", "missing required key 'tls'");
        return 0;
    }
    if (n_server > 0 && !cfg->clients_given) {
        cfg_err(ctx, root, "", "missing required key 'clients'");
        return 0;
    }
    if (n_client == 0)
        return 1;
    size_t n = cfg->n_clients + n_client;
    config_client_t *clients = pg_realloc(cfg->clients, n * sizeof(*clients));
    if (clients == NULL)
        goto out_of_memory;
    cfg->clients = clients;
    config_screen_t *screens = pg_realloc(cfg->screens, n * sizeof(*screens));
    if (screens == NULL)
        goto out_of_memory;
    cfg->screens = screens;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        config_listener_t *l = &cfg->listeners[i];
        if (l->mode != LISTENER_CLIENT)
            continue;
        size_t len = strlen(l->name) + sizeof("egress:");
        char *name = pg_malloc(len);
        if (name == NULL)
            goto out_of_memory;
        snprintf(name, len, "egress:%s", l->name);
        config_client_t *c = &cfg->clients[cfg->n_clients];
        *c = l->egress;
        c->name = name;
        memset(&l->egress, 0, sizeof(l->egress));
        memset(&cfg->screens[cfg->n_clients], 0, sizeof(cfg->screens[0]));
        l->egress_rule = (int)cfg->n_clients++;
    }
    return 1;
out_of_memory:
    cfg_err(ctx, root, "", "out of memory");
    return 0;
}

/* check_addresses runs once the whole file is read (keys may come in any order): the admin
 * endpoint must not take a listener's address. */
static int check_addresses(cfg_ctx_t *ctx)
{
    const config_t *cfg = ctx->cfg;
    if (!cfg->admin.enabled)
        return 1;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (cfg->listeners[i].listen.text != NULL &&
            same_addr(&cfg->listeners[i].listen.addr, &cfg->admin.listen.addr)) {
            config_error(ctx->errs, ctx->file, cfg->admin.listen.mark, "admin.listen",
                         "address '%s' is already used by listeners[%zu]", cfg->admin.listen.text,
                         i);
            return 0;
        }
    }
    return 1;
}

static const cfg_key_t kLogKeys[] = {
    {"level", parse_log_level, LOG_FIELD(level), 0, NULL},
    {"calls", parse_log_calls, LOG_FIELD(calls), 0, NULL},
    CFG_TABLE_END,
};

static int parse_tls(cfg_ctx_t *ctx, yaml_node_t *node, void *field, const char *path,
                     const void *arg)
{
    config_t *cfg = ctx->cfg;
    if (!parse_map(ctx, node, field, path, kTlsKeys))
        return 0;
    /* The server's certificate and key come from PEM files or from one PKCS#12 keystore. */
    int pem = cfg->tls.cert.path != NULL || cfg->tls.key.path != NULL;
    int p12 = cfg->tls.pkcs12.path != NULL;
    if (pem && p12) {
        cfg_err(ctx, node, path, "give either cert and key, or pkcs12, not both");
        return 0;
    }
    if (!p12 && cfg->tls.cert.path == NULL) {
        cfg_err(ctx, node, path, "missing required key 'cert' (or 'pkcs12')");
        return 0;
    }
    if (!p12 && cfg->tls.key.path == NULL) {
        cfg_err(ctx, node, path, "missing required key 'key'");
        return 0;
    }
    if (cfg->tls.key_password_file.path != NULL && p12) {
        cfg_err(ctx, node, path, "key_password_file goes with key; use pkcs12_password_file");
        return 0;
    }
    if (cfg->tls.pkcs12_password_file.path != NULL && !p12) {
        cfg_err(ctx, node, path, "pkcs12_password_file is given without pkcs12");
        return 0;
    }
    return 1;
}

static const cfg_key_t kTopKeys[] = {
    {"listeners", parse_listeners, 0, 1, NULL},
    {"tls", parse_tls, 0, 0, NULL},
    {"pyro", parse_section, 0, 0, kPyroKeys},
    {"clients", parse_clients, 0, 0, NULL},
    {"limits", parse_section, 0, 0, kLimitsKeys},
    {"admin", parse_admin, 0, 0, NULL},
    {"reload", parse_section, 0, 0, kReloadKeys},
    {"workers", parse_uint_range, offsetof(config_t, workers), 0, &kWorkers},
    {"user", parse_string, offsetof(config_t, user), 0, NULL},
    {"group", parse_string, offsetof(config_t, group), 0, NULL},
    {"log", parse_section, 0, 0, kLogKeys},
    CFG_TABLE_END,
};

/* parse_map checks that |node| is a mapping whose keys all appear in |table| exactly once,
 * hands each value to its parser with |base| + offset, and reports missing required keys. */
static int parse_map(cfg_ctx_t *ctx, yaml_node_t *node, void *base, const char *path,
                     const cfg_key_t *table)
{
    uint64_t seen = 0;
    int ok = 1;
    char sub[300];

    if (node->type != YAML_MAPPING_NODE) {
        cfg_err(ctx, node, path, "expected a mapping, got %s", node_kind(node));
        return 0;
    }
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(ctx->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(ctx->doc, p->value);
        if (k->type != YAML_SCALAR_NODE) {
            cfg_err(ctx, k, path, "keys must be plain strings");
            ok = 0;
            continue;
        }
        const char *name = (const char *)k->data.scalar.value;
        size_t i;
        for (i = 0; table[i].name != NULL; i++) {
            if (strcmp(table[i].name, name) == 0)
                break;
        }
        if (table[i].name == NULL) {
            cfg_err(ctx, k, path, "unknown key '%s'", name);
            ok = 0;
            continue;
        }
        if (seen & (1ull << i)) {
            cfg_err(ctx, k, path, "duplicate key '%s'", name);
            ok = 0;
            continue;
        }
        seen |= 1ull << i;
        join_path(sub, sizeof(sub), path, name);
        if (!table[i].parse(ctx, v, (char *)base + table[i].offset, sub, table[i].arg))
            ok = 0;
    }
    for (size_t i = 0; table[i].name != NULL; i++) {
        if (table[i].required && !(seen & (1ull << i))) {
            cfg_err(ctx, node, path, "missing required key '%s'", table[i].name);
            ok = 0;
        }
    }
    return ok;
}

/* ---- entry points --------------------------------------------------------------------- */

void config_init(config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->tls.min_version = TLS1_2_VERSION;
    cfg->pyro.protocols = FRAME_PROTO_BIT(PROTO_PYRO4);
    cfg->pyro.serializers =
        (1u << SER4_SERPENT) | (1u << SER4_JSON) | (1u << SER4_MARSHAL) | (1u << SER4_MSGPACK);
    cfg->pyro.max_message_bytes = 16777216;
    cfg->pyro.compression_allow = 1;
    cfg->pyro.max_inflated_bytes = 67108864;
    cfg->pyro.max_depth = 32;
    cfg->pyro.max_values = 1000000;
    cfg->limits.max_connections = 10000;
    cfg->limits.handshake_timeout_ms = 10000;
    cfg->limits.idle_timeout_ms = 300000;
    cfg->limits.backend_connect_timeout_ms = 5000;
    cfg->limits.drain_timeout_ms = 30000;
    cfg->reload.poll_interval_ms = 1000;
    cfg->log.level = LOG_INFO;
    cfg->log.calls = LOG_CALLS_DENIED;
}

static void free_patterns(config_patterns_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        pattern_free(&l->items[i]);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

static void free_access(config_access_t *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free_patterns(&a[i].objects);
        free_patterns(&a[i].methods);
        free_patterns(&a[i].get);
        free_patterns(&a[i].set);
    }
    free(a);
}

static void free_strings(char **s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
}

void config_free(config_t *cfg)
{
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        config_listener_t *l = &cfg->listeners[i];
        free(l->name);
        free(l->listen.text);
        free(l->backend.text);
        free(l->upstream.text);
        free(l->upstream_tls.cert.path);
        free(l->upstream_tls.key.path);
        free(l->upstream_tls.ca.path);
        free(l->upstream_tls.server_name.text);
        free_patterns(&l->upstream_tls.server_uri);
        free_access(l->egress.allow, l->egress.n_allow); /* only if never moved to clients */
        free_access(l->egress.deny, l->egress.n_deny);
    }
    free(cfg->listeners);
    free(cfg->tls.cert.path);
    free(cfg->tls.key.path);
    free(cfg->tls.client_ca.path);
    free(cfg->tls.crl.path);
    free(cfg->tls.key_password_file.path);
    free(cfg->tls.pkcs12.path);
    free(cfg->tls.pkcs12_password_file.path);
    free(cfg->tls.ciphers.text);
    free(cfg->tls.curves.text);
    free_strings(cfg->tls.deny_serials.items, cfg->tls.deny_serials.n);
    free_strings(cfg->tls.deny_sha256.items, cfg->tls.deny_sha256.n);
    for (size_t i = 0; i < cfg->n_clients; i++) {
        config_client_t *c = &cfg->clients[i];
        free(c->name);
        for (size_t f = 0; f < ID_FIELDS; f++)
            free_patterns(&c->match[f]);
        free_access(c->allow, c->n_allow);
        free_access(c->deny, c->n_deny);
    }
    free(cfg->admin.listen.text);
    free(cfg->user);
    free(cfg->group);
    free(cfg->clients);
    free(cfg->screens);
    free(cfg->file);
    memset(cfg, 0, sizeof(*cfg));
}

/* check_depth walks the YAML events once and refuses nesting deeper than CONFIG_MAX_DEPTH
 * before the document is built: libyaml's time grows with the square of the nesting depth,
 * and no valid configuration nests more than a few levels. */
static int check_depth(const char *name, const uint8_t *data, size_t len, config_errors_t *errs)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    int depth = 0, ok = 1;

    if (!yaml_parser_initialize(&parser))
        return 0;
    yaml_parser_set_input_string(&parser, data, len);
    for (;;) {
        if (!yaml_parser_parse(&parser, &ev))
            break; /* the syntax error is reported by the full load */
        yaml_event_type_t type = ev.type;
        if (type == YAML_SEQUENCE_START_EVENT || type == YAML_MAPPING_START_EVENT) {
            if (++depth > CONFIG_MAX_DEPTH) {
                config_mark_t m = {(int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1};
                config_error(errs, name, m, "", "nesting deeper than %d levels", CONFIG_MAX_DEPTH);
                ok = 0;
            }
        } else if (type == YAML_SEQUENCE_END_EVENT || type == YAML_MAPPING_END_EVENT) {
            depth--;
        }
        yaml_event_delete(&ev);
        if (!ok || type == YAML_STREAM_END_EVENT)
            break;
    }
    yaml_parser_delete(&parser);
    return ok;
}

int config_load_buffer(const char *name, const char *base_dir, const uint8_t *data, size_t len,
                       config_t *cfg, config_errors_t *errs)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    int ok = 0;

    config_init(cfg);
    cfg->file = pg_strdup(name);
    if (cfg->file == NULL) {
        config_error(errs, name, (config_mark_t){0, 0}, "", "out of memory");
        return 0;
    }
    if (!check_depth(name, data, len, errs))
        return 0;
    if (!yaml_parser_initialize(&parser)) {
        config_error(errs, name, (config_mark_t){0, 0}, "", "out of memory");
        return 0;
    }
    yaml_parser_set_input_string(&parser, data, len);
    if (!yaml_parser_load(&parser, &doc)) {
        config_mark_t m = {(int)parser.problem_mark.line + 1, (int)parser.problem_mark.column + 1};
        config_error(errs, name, m, "", "YAML syntax error: %s",
                     parser.problem ? parser.problem : "unknown problem");
        goto free_parser;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL) {
        config_error(errs, name, (config_mark_t){1, 1}, "", "the configuration is empty");
        goto free_doc;
    }
    cfg_ctx_t ctx = {name, base_dir, &doc, cfg, errs};
    ok = parse_map(&ctx, root, cfg, "", kTopKeys) && finish_listeners(&ctx, root) &&
         check_addresses(&ctx);
    /* A second document in the same file would be silently ignored by a careless reader. */
    if (ok) {
        yaml_document_t next;
        if (!yaml_parser_load(&parser, &next)) {
            config_mark_t m = {(int)parser.problem_mark.line + 1,
                               (int)parser.problem_mark.column + 1};
            config_error(errs, name, m, "", "YAML syntax error: %s",
                         parser.problem ? parser.problem : "unknown problem");
            ok = 0;
        } else {
            if (yaml_document_get_root_node(&next) != NULL) {
                config_error(errs, name, (config_mark_t){(int)next.start_mark.line + 1, 1}, "",
                             "only one YAML document is allowed");
                ok = 0;
            }
            yaml_document_delete(&next);
        }
    }
free_doc:
    yaml_document_delete(&doc);
free_parser:
    yaml_parser_delete(&parser);
    return ok;
}

int config_load(const char *path, config_t *cfg, config_errors_t *errs)
{
    uint8_t *data = NULL;
    size_t len = 0;
    char *dir = NULL;
    int ok = 0;

    config_init(cfg);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        config_error(errs, path, (config_mark_t){0, 0}, "", "cannot open: %s", strerror(errno));
        return 0;
    }
    data = pg_malloc(CONFIG_MAX_FILE_SIZE + 1);
    if (data == NULL) {
        config_error(errs, path, (config_mark_t){0, 0}, "", "out of memory");
        goto close_file;
    }
    len = fread(data, 1, CONFIG_MAX_FILE_SIZE + 1, f);
    if (ferror(f)) {
        config_error(errs, path, (config_mark_t){0, 0}, "", "cannot read: %s", strerror(errno));
        goto free_data;
    }
    if (len > CONFIG_MAX_FILE_SIZE) {
        config_error(errs, path, (config_mark_t){0, 0}, "", "larger than %u bytes",
                     CONFIG_MAX_FILE_SIZE);
        goto free_data;
    }
    dir = pg_strdup(path);
    if (dir == NULL)
        goto free_data;
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        dir[0] = '\0';
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    ok = config_load_buffer(path, dir, data, len, cfg, errs);
    free(dir);
free_data:
    free(data);
close_file:
    fclose(f);
    return ok;
}

int config_serializer_allowed(const config_t *cfg, uint16_t id)
{
    return id < 32 && (cfg->pyro.serializers & (1u << id)) != 0;
}

void config_serializer_list(const config_t *cfg, char *out, size_t out_len)
{
    size_t used = 0;
    out[0] = '\0';
    for (uint16_t id = 1; id < 32; id++) {
        const char *name = frame_serializer_name(id);
        if (name == NULL || !config_serializer_allowed(cfg, id))
            continue;
        size_t need = strlen(name) + (used ? 2 : 0);
        if (need >= out_len - used)
            return; /* whole names only */
        snprintf(out + used, out_len - used, "%s%s", used ? ", " : "", name);
        used += need;
    }
}
