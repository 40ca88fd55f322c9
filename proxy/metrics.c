#include "metrics.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

/* ---- label tables ----------------------------------------------------------------------- */

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

enum {
    OUT_CLIENT_CLOSED,
    OUT_BACKEND_CLOSED,
    OUT_IDLE_TIMEOUT,
    OUT_HANDSHAKE_TIMEOUT,
    OUT_TLS_FAIL,
    OUT_REFUSED,
    OUT_BACKEND_UNAVAILABLE,
    OUT_SHUTDOWN,
    OUT_ERROR,
    OUT_OTHER,
    N_OUTCOMES
};

static const char *const kOutcomes[N_OUTCOMES] = {
    "client_closed", "backend_closed", "idle_timeout",        "handshake_timeout",
    "tls_fail",      "refused",        "backend_unavailable", "shutdown",
    "error",         "other",
};

/* conn_close reasons (proxy/conn.c) that are neither an outcome name, a refusal reason nor a
 * TLS failure reason. Looked up first, so they win over the tables below. */
static const struct {
    const char *reason;
    int outcome;
} kCloseReasons[] = {
    {"client_closed_mid_message", OUT_CLIENT_CLOSED},
    {"backend_connectfail", OUT_REFUSED}, /* the daemon's own CONNECTFAIL, passed on */
    {"internal_error", OUT_ERROR},
    {"client_write_error", OUT_ERROR},
    {"backend_write_error", OUT_ERROR},
    {"client_read_error", OUT_ERROR},
    {"backend_read_error", OUT_ERROR},
    {"backend_protocol_error", OUT_ERROR},
    {"accept_failed", OUT_ERROR},
    {"out_of_memory", OUT_ERROR},
};

/* The TLS failure reasons of tls_failure_reason, the deadline and a peer that hung up; the
 * last entry catches everything else. */
static const char *const kTlsReasons[] = {
    "no_client_certificate",
    "unknown_ca",
    "certificate_expired",
    "certificate_not_yet_valid",
    "certificate_revoked",
    "certificate_denied",
    "certificate_invalid",
    "protocol_version",
    "no_shared_cipher",
    "not_tls",
    "handshake_timeout",
    "peer_closed",
    "tls_error",
    "other",
};
#define N_TLS COUNT_OF(kTlsReasons)

/* The wire protocols (frame.h's frame_proto_name); the last entry catches everything else. */
static const char *const kProtocols[] = {"pyro4", "pyro4.47", "pyro4.46", "pyro5", "other"};
#define N_PROTOCOLS COUNT_OF(kProtocols)

/* Refusal reasons (README.md "Logs", `refused`): policy, inspection, framing, the backend. */
static const char *const kRefusals[] = {
    /* policy */
    "no_matching_rule",
    "identity_invalid",
    "denied_by_rule",
    "not_allowed",
    "object_not_allowed",
    "name_too_long",
    "malformed_call",
    /* framing (frame_error_reason) */
    "not_pyro",
    "protocol_version",
    "bad_checksum",
    "negative_length",
    "message_too_large",
    "bad_annotations",
    /* inspection */
    "unexpected_message",
    "unsupported_flags",
    "serializer_not_allowed",
    "compression_denied",
    "inflate_failed",
    "inflated_too_large",
    "undecodable",
    "dotted_name",
    "private_name",
    "invalid_name",
    /* streams bound to their owner; identity forwarding */
    "stream_not_owned",
    "hmac_not_rewritable",
    "identity_too_large",
    /* no backend to forward an allowed CONNECT to; client mode: the upstream refused TLS */
    "backend_unavailable",
    "upstream_tls_failed",
    "other",
};
#define N_REFUSALS COUNT_OF(kRefusals)

/* find returns the index of |s| in |table| (|n| entries, the last one "other"), or n - 1. */
static size_t find(const char *const *table, size_t n, const char *s)
{
    if (s != NULL) {
        for (size_t i = 0; i + 1 < n; i++) {
            if (strcmp(table[i], s) == 0)
                return i;
        }
    }
    return n - 1;
}

static int outcome_of(const char *reason)
{
    if (reason == NULL)
        return OUT_OTHER;
    for (size_t i = 0; i < COUNT_OF(kCloseReasons); i++) {
        if (strcmp(kCloseReasons[i].reason, reason) == 0)
            return kCloseReasons[i].outcome;
    }
    size_t i = find(kOutcomes, N_OUTCOMES, reason);
    if (i != OUT_OTHER)
        return (int)i;
    /* backend_unavailable is an outcome of its own (matched above); protocol_version is
     * ambiguous and counts as a Pyro refusal (metrics.h). */
    if (find(kRefusals, N_REFUSALS, reason) != N_REFUSALS - 1)
        return OUT_REFUSED;
    if (find(kTlsReasons, N_TLS, reason) != N_TLS - 1)
        return OUT_TLS_FAIL;
    return OUT_OTHER;
}

const char *metrics_outcome_name(const char *reason)
{
    return kOutcomes[outcome_of(reason)];
}

/* Handshake duration buckets (upper bounds, inclusive), in microseconds and as written. */
static const uint64_t kBucketMicros[] = {1000,   2500,   5000,   10000,   25000,   50000,
                                         100000, 250000, 500000, 1000000, 2500000, 5000000};
static const char *const kBucketLabels[] = {"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
                                            "0.1",   "0.25",   "0.5",   "1",    "2.5",   "5"};
#define N_BUCKETS (COUNT_OF(kBucketMicros) + 1) /* the last is +Inf */

/* ---- shards ----------------------------------------------------------------------------- */

/* A power of two above METRICS_MAX_RULES: a probe always ends at a free slot. */
#define RULE_SLOTS 8192

enum { VERDICT_ALLOWED, VERDICT_REFUSED, N_VERDICTS };

typedef struct {
    uint64_t count[N_VERDICTS];
    char name[]; /* NUL-terminated copy */
} rule_entry_t;

struct metrics_shard {
    uint64_t accepted;
    uint64_t freed; /* accepted connections whose sockets are closed and slot given back */
    uint64_t rejected;
    uint64_t outcome[N_OUTCOMES];
    uint64_t tls_failed[N_TLS];
    uint64_t hs_bucket[N_BUCKETS]; /* per bucket, not cumulative */
    uint64_t hs_sum_micros;
    uint64_t req_allowed;
    uint64_t req_refused[N_REFUSALS];
    uint64_t req_by_protocol[N_PROTOCOLS][2]; /* [protocol][VERDICT_*] */
    uint64_t rule_none[N_VERDICTS];
    uint64_t rule_other[N_VERDICTS];
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t dial_failed;
    size_t n_rules; /* read and written by the writer only */
    /* Insert-only: a slot goes from NULL to an entry once (release store) and stays. */
    rule_entry_t *rules[RULE_SLOTS];
};

/* add is the single writer's increment: no read-modify-write instruction, no lock; a reader
 * on another thread sees the old or the new value, never a torn one. */
static void add(uint64_t *x, uint64_t d)
{
    __atomic_store_n(x, __atomic_load_n(x, __ATOMIC_RELAXED) + d, __ATOMIC_RELAXED);
}

static uint64_t get(const uint64_t *x)
{
    return __atomic_load_n(x, __ATOMIC_RELAXED);
}

metrics_shard_t *metrics_shard_new(void)
{
    return pg_calloc(1, sizeof(metrics_shard_t));
}

void metrics_shard_free(metrics_shard_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < RULE_SLOTS; i++)
        free(s->rules[i]);
    free(s);
}

void metrics_conn_accepted(metrics_shard_t *s)
{
    add(&s->accepted, 1);
}

void metrics_conn_freed(metrics_shard_t *s)
{
    add(&s->freed, 1);
}

void metrics_conn_rejected(metrics_shard_t *s)
{
    add(&s->rejected, 1);
}

void metrics_conn_closed(metrics_shard_t *s, const char *outcome)
{
    add(&s->outcome[outcome_of(outcome)], 1);
}

void metrics_tls_failed(metrics_shard_t *s, const char *reason)
{
    add(&s->tls_failed[find(kTlsReasons, N_TLS, reason)], 1);
}

void metrics_handshake_done(metrics_shard_t *s, uint64_t micros)
{
    size_t b = 0;
    while (b < COUNT_OF(kBucketMicros) && micros > kBucketMicros[b])
        b++;
    add(&s->hs_bucket[b], 1);
    add(&s->hs_sum_micros, micros);
}

/* hash is FNV-1a over the name. */
static uint64_t hash(const char *name)
{
    uint64_t h = 14695981039346656037ull;
    for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return h;
}

/* rule_counts returns the counters of |name| in |s|, interning it on first use; past
 * METRICS_MAX_RULES names (or out of memory), the "other" counters. */
static uint64_t *rule_counts(metrics_shard_t *s, const char *name)
{
    size_t i = (size_t)hash(name) & (RULE_SLOTS - 1);
    for (;; i = (i + 1) & (RULE_SLOTS - 1)) {
        /* Only this thread stores slots, so a relaxed load sees every earlier store. */
        rule_entry_t *e = __atomic_load_n(&s->rules[i], __ATOMIC_RELAXED);
        if (e == NULL)
            break;
        if (strcmp(e->name, name) == 0)
            return e->count;
    }
    if (s->n_rules >= METRICS_MAX_RULES)
        return s->rule_other;
    size_t len = strlen(name);
    rule_entry_t *e = pg_malloc(sizeof(*e) + len + 1);
    if (e == NULL)
        return s->rule_other;
    memset(e->count, 0, sizeof(e->count));
    memcpy(e->name, name, len + 1);
    /* Release: a reader that sees the pointer sees the name and the zeroed counters. */
    __atomic_store_n(&s->rules[i], e, __ATOMIC_RELEASE);
    s->n_rules++;
    return e->count;
}

void metrics_request(metrics_shard_t *s, int allowed, const char *reason, const char *rule)
{
    int v = allowed ? VERDICT_ALLOWED : VERDICT_REFUSED;
    if (allowed)
        add(&s->req_allowed, 1);
    else
        add(&s->req_refused[find(kRefusals, N_REFUSALS, reason)], 1);
    uint64_t *counts = rule == NULL ? s->rule_none : rule_counts(s, rule);
    add(&counts[v], 1);
}

void metrics_request_protocol(metrics_shard_t *s, const char *protocol, int allowed)
{
    add(&s->req_by_protocol[find(kProtocols, N_PROTOCOLS, protocol)][allowed ? 0 : 1], 1);
}

void metrics_bytes(metrics_shard_t *s, uint64_t in, uint64_t out)
{
    add(&s->bytes_in, in);
    add(&s->bytes_out, out);
}

void metrics_backend_dial_failed(metrics_shard_t *s)
{
    add(&s->dial_failed, 1);
}

/* ---- text format ------------------------------------------------------------------------ */

static int put(CBB *out, const char *s)
{
    return CBB_add_bytes(out, (const uint8_t *)s, strlen(s));
}

static int put_u64(CBB *out, uint64_t v)
{
    uint8_t digits[20];
    size_t n = 0;
    do {
        digits[sizeof(digits) - 1 - n++] = (uint8_t)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return CBB_add_bytes(out, digits + sizeof(digits) - n, n);
}

static int put_i64(CBB *out, int64_t v)
{
    if (v >= 0)
        return put_u64(out, (uint64_t)v);
    /* Negated in unsigned arithmetic: INT64_MIN has no positive int64_t. */
    return CBB_add_u8(out, '-') && put_u64(out, 0 - (uint64_t)v);
}

/* put_micros writes |us| microseconds as exact decimal seconds ("1.002500"). */
static int put_micros(CBB *out, uint64_t us)
{
    uint64_t frac = us % 1000000;
    uint8_t text[6];
    for (size_t i = 0; i < sizeof(text); i++) {
        text[sizeof(text) - 1 - i] = (uint8_t)('0' + frac % 10);
        frac /= 10;
    }
    return put_u64(out, us / 1000000) && CBB_add_u8(out, '.') &&
           CBB_add_bytes(out, text, sizeof(text));
}

/* utf8_len returns the length of the well-formed UTF-8 sequence (no overlong form, no
 * surrogate, at most U+10FFFF) that |lead| starts in |cbs|, or 0 if it is not one. */
static size_t utf8_len(uint8_t lead, const CBS *rest)
{
    size_t len;
    uint32_t min, v;
    if (lead >= 0xc2 && lead <= 0xdf)
        len = 2, min = 0x80, v = lead & 0x1f;
    else if (lead >= 0xe0 && lead <= 0xef)
        len = 3, min = 0x800, v = lead & 0x0f;
    else if (lead >= 0xf0 && lead <= 0xf4)
        len = 4, min = 0x10000, v = lead & 0x07;
    else
        return 0;
    CBS cont = *rest;
    for (size_t i = 1; i < len; i++) {
        uint8_t c;
        if (!CBS_get_u8(&cont, &c) || (c & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (c & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    return len;
}

/* put_label_value writes |s| as the text format wants a label value: backslash, double quote
 * and newline escaped, and (so the page is always UTF-8) every byte that does not start a
 * well-formed UTF-8 sequence replaced by U+FFFD. */
static int put_label_value(CBB *out, const char *s)
{
    static const uint8_t kReplacement[] = {0xef, 0xbf, 0xbd};
    CBS in;
    uint8_t c;
    CBS_init(&in, (const uint8_t *)s, strlen(s));
    while (CBS_get_u8(&in, &c)) {
        int ok;
        if (c == '\\')
            ok = put(out, "\\\\");
        else if (c == '"')
            ok = put(out, "\\\"");
        else if (c == '\n')
            ok = put(out, "\\n");
        else if (c < 0x80)
            ok = CBB_add_u8(out, c);
        else {
            size_t len = utf8_len(c, &in);
            if (len == 0) {
                ok = CBB_add_bytes(out, kReplacement, sizeof(kReplacement));
            } else {
                ok = CBB_add_u8(out, c) && CBB_add_bytes(out, CBS_data(&in), len - 1) &&
                     CBS_skip(&in, len - 1);
            }
        }
        if (!ok)
            return 0;
    }
    return 1;
}

static int put_family(CBB *out, const char *name, const char *type, const char *help)
{
    return put(out, "# HELP ") && put(out, name) && CBB_add_u8(out, ' ') && put(out, help) &&
           put(out, "\n# TYPE ") && put(out, name) && CBB_add_u8(out, ' ') && put(out, type) &&
           CBB_add_u8(out, '\n');
}

/* put_series writes `name{k1="v1",…} ` for |n| (key, value) pairs in |labels|; the caller
 * writes the value and the newline. */
static int put_series(CBB *out, const char *name, const char *const *labels, size_t n)
{
    if (!put(out, name))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!CBB_add_u8(out, i == 0 ? '{' : ',') || !put(out, labels[2 * i]) || !put(out, "=\"") ||
            !put_label_value(out, labels[2 * i + 1]) || !CBB_add_u8(out, '"'))
            return 0;
    }
    return (n == 0 || CBB_add_u8(out, '}')) && CBB_add_u8(out, ' ');
}

static int put_u64_sample(CBB *out, const char *name, const char *const *labels, size_t n,
                          uint64_t v)
{
    return put_series(out, name, labels, n) && put_u64(out, v) && CBB_add_u8(out, '\n');
}

static int put_i64_sample(CBB *out, const char *name, const char *const *labels, size_t n,
                          int64_t v)
{
    return put_series(out, name, labels, n) && put_i64(out, v) && CBB_add_u8(out, '\n');
}

/* ---- summing shards --------------------------------------------------------------------- */

/* sum_at adds up the counter at |offset| in every shard. */
static uint64_t sum_at(metrics_shard_t *const *shards, size_t n, size_t offset)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += get((const uint64_t *)((const char *)shards[i] + offset));
    return total;
}

#define SUM(field) sum_at(shards, n, offsetof(metrics_shard_t, field))

typedef struct {
    const char *name; /* owned by a shard */
    uint64_t count[N_VERDICTS];
} rule_row_t;

typedef struct {
    rule_row_t *rows;
    size_t n;
    size_t cap;
} rule_rows_t;

static int push_row(rule_rows_t *r, const rule_entry_t *e)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        if (cap > SIZE_MAX / sizeof(*r->rows))
            return 0;
        rule_row_t *rows = pg_realloc(r->rows, cap * sizeof(*rows));
        if (rows == NULL)
            return 0;
        r->rows = rows;
        r->cap = cap;
    }
    rule_row_t *row = &r->rows[r->n++];
    row->name = e->name;
    for (int v = 0; v < N_VERDICTS; v++)
        row->count[v] = get(&e->count[v]);
    return 1;
}

static int row_cmp(const void *a, const void *b)
{
    return strcmp(((const rule_row_t *)a)->name, ((const rule_row_t *)b)->name);
}

/* collect_rules gathers every interned rule of every shard, sorted by name, with the rows of
 * one name merged. */
static int collect_rules(metrics_shard_t *const *shards, size_t n, rule_rows_t *r)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < RULE_SLOTS; k++) {
            const rule_entry_t *e = __atomic_load_n(&shards[i]->rules[k], __ATOMIC_ACQUIRE);
            if (e != NULL && !push_row(r, e))
                return 0;
        }
    }
    if (r->n == 0)
        return 1;
    qsort(r->rows, r->n, sizeof(*r->rows), row_cmp);
    size_t w = 0;
    for (size_t i = 1; i < r->n; i++) {
        if (strcmp(r->rows[w].name, r->rows[i].name) == 0) {
            for (int v = 0; v < N_VERDICTS; v++)
                r->rows[w].count[v] += r->rows[i].count[v];
        } else {
            r->rows[++w] = r->rows[i];
        }
    }
    r->n = w + 1;
    return 1;
}

/* ---- render ----------------------------------------------------------------------------- */

static const char *const kVerdicts[N_VERDICTS] = {"allowed", "refused"};

#define M_OPEN        "pyroguard_connections_open"
#define M_CONNS       "pyroguard_connections_total"
#define M_REJECTED    "pyroguard_connections_rejected_total"
#define M_TLS_FAIL    "pyroguard_tls_handshake_failures_total"
#define M_HS          "pyroguard_tls_handshake_duration_seconds"
#define M_REQUESTS    "pyroguard_requests_total"
#define M_BY_RULE     "pyroguard_requests_by_rule_total"
#define M_BY_PROTOCOL "pyroguard_requests_by_protocol_total"
#define M_BYTES       "pyroguard_bytes_total"
#define M_DIAL_FAIL   "pyroguard_backend_dial_failures_total"
#define M_RELOADS     "pyroguard_reloads_total"
#define M_GENERATION  "pyroguard_config_generation"
#define M_LOADED_AT   "pyroguard_config_loaded_timestamp_seconds"
#define M_CERT_EXPIRY "pyroguard_server_certificate_expiry_timestamp_seconds"
#define M_CA_EXPIRY   "pyroguard_client_ca_expiry_timestamp_seconds"
#define M_DRAINING    "pyroguard_draining"
#define M_BUILD       "pyroguard_build_info"

static int render_connections(metrics_shard_t *const *shards, size_t n, CBB *out)
{
    uint64_t closed[N_OUTCOMES];
    for (size_t i = 0; i < N_OUTCOMES; i++)
        closed[i] = sum_at(shards, n, offsetof(metrics_shard_t, outcome) + i * sizeof(uint64_t));
    /* Open means holding a slot of limits.max_connections: from accept until the sockets are
     * closed, a closing connection included (conn.c). Frees are read before accepts (a free
     * always follows its accept on its shard); the clamp keeps the gauge sane whatever a racing
     * scrape reads. */
    uint64_t freed = SUM(freed);
    uint64_t accepted = SUM(accepted);
    uint64_t open = accepted > freed ? accepted - freed : 0;

    if (!put_family(out, M_OPEN, "gauge",
                    "Client connections open now (closing ones until their sockets are closed).") ||
        !put_u64_sample(out, M_OPEN, NULL, 0, open) ||
        !put_family(out, M_CONNS, "counter",
                    "Client connections closed, by outcome (conn_close reason, grouped)."))
        return 0;
    for (size_t i = 0; i < N_OUTCOMES; i++) {
        const char *labels[] = {"outcome", kOutcomes[i]};
        if (!put_u64_sample(out, M_CONNS, labels, 1, closed[i]))
            return 0;
    }
    if (!put_family(out, M_REJECTED, "counter",
                    "Connections closed at once because limits.max_connections were open.") ||
        !put_u64_sample(out, M_REJECTED, NULL, 0, SUM(rejected)))
        return 0;
    return 1;
}

static int render_tls(metrics_shard_t *const *shards, size_t n, CBB *out)
{
    if (!put_family(out, M_TLS_FAIL, "counter", "TLS handshakes that failed, by reason."))
        return 0;
    for (size_t i = 0; i < N_TLS; i++) {
        const char *labels[] = {"reason", kTlsReasons[i]};
        uint64_t v =
            sum_at(shards, n, offsetof(metrics_shard_t, tls_failed) + i * sizeof(uint64_t));
        if (!put_u64_sample(out, M_TLS_FAIL, labels, 1, v))
            return 0;
    }
    if (!put_family(out, M_HS, "histogram", "Duration of completed TLS handshakes."))
        return 0;
    uint64_t cumulative = 0;
    for (size_t b = 0; b < N_BUCKETS; b++) {
        const char *labels[] = {"le", b < COUNT_OF(kBucketLabels) ? kBucketLabels[b] : "+Inf"};
        cumulative +=
            sum_at(shards, n, offsetof(metrics_shard_t, hs_bucket) + b * sizeof(uint64_t));
        if (!put_u64_sample(out, M_HS "_bucket", labels, 1, cumulative))
            return 0;
    }
    /* _count is the +Inf bucket as read, so the two always agree. */
    return put_series(out, M_HS "_sum", NULL, 0) && put_micros(out, SUM(hs_sum_micros)) &&
           CBB_add_u8(out, '\n') && put_u64_sample(out, M_HS "_count", NULL, 0, cumulative);
}

static int render_rule(CBB *out, const char *rule, const uint64_t *count)
{
    for (int v = 0; v < N_VERDICTS; v++) {
        const char *labels[] = {"rule", rule, "verdict", kVerdicts[v]};
        if (!put_u64_sample(out, M_BY_RULE, labels, 2, count[v]))
            return 0;
    }
    return 1;
}

static int render_requests(metrics_shard_t *const *shards, size_t n, CBB *out)
{
    rule_rows_t rows = {NULL, 0, 0};
    uint64_t none[N_VERDICTS], other[N_VERDICTS];
    int ok = 0;

    if (!put_family(out, M_REQUESTS, "counter",
                    "Judged client messages, by verdict and reason code."))
        return 0;
    const char *allowed[] = {"verdict", "allowed", "reason", "allowed"};
    if (!put_u64_sample(out, M_REQUESTS, allowed, 2, SUM(req_allowed)))
        return 0;
    for (size_t i = 0; i < N_REFUSALS; i++) {
        const char *labels[] = {"verdict", "refused", "reason", kRefusals[i]};
        uint64_t v =
            sum_at(shards, n, offsetof(metrics_shard_t, req_refused) + i * sizeof(uint64_t));
        if (!put_u64_sample(out, M_REQUESTS, labels, 2, v))
            return 0;
    }

    if (!put_family(out, M_BY_PROTOCOL, "counter",
                    "Judged client messages, by the connection's Pyro wire protocol and verdict."))
        return 0;
    for (size_t i = 0; i < N_PROTOCOLS; i++) {
        for (int v = 0; v < 2; v++) {
            const char *labels[] = {"protocol", kProtocols[i], "verdict",
                                    v == 0 ? "allowed" : "refused"};
            size_t at =
                offsetof(metrics_shard_t, req_by_protocol) + (i * 2 + (size_t)v) * sizeof(uint64_t);
            if (!put_u64_sample(out, M_BY_PROTOCOL, labels, 2, sum_at(shards, n, at)))
                return 0;
        }
    }

    if (!put_family(out, M_BY_RULE, "counter",
                    "Judged client messages, by client rule (\"\": no rule matched) and "
                    "verdict."))
        return 0;
    if (!collect_rules(shards, n, &rows))
        goto free_rows;
    for (int v = 0; v < N_VERDICTS; v++) {
        none[v] = sum_at(shards, n, offsetof(metrics_shard_t, rule_none) + v * sizeof(uint64_t));
        other[v] = sum_at(shards, n, offsetof(metrics_shard_t, rule_other) + v * sizeof(uint64_t));
    }
    /* A rule actually named "other" shares the overflow series: one series per label set. */
    for (size_t i = 0; i < rows.n; i++) {
        if (strcmp(rows.rows[i].name, "other") == 0) {
            for (int v = 0; v < N_VERDICTS; v++) {
                rows.rows[i].count[v] += other[v];
                other[v] = 0;
            }
        }
    }
    if (none[0] + none[1] > 0 && !render_rule(out, "", none))
        goto free_rows;
    for (size_t i = 0; i < rows.n; i++) {
        if (!render_rule(out, rows.rows[i].name, rows.rows[i].count))
            goto free_rows;
    }
    if (other[0] + other[1] > 0 && !render_rule(out, "other", other))
        goto free_rows;
    ok = 1;
free_rows:
    free(rows.rows);
    return ok;
}

static int render_traffic(metrics_shard_t *const *shards, size_t n, CBB *out)
{
    const char *c2b[] = {"direction", "client_to_backend"};
    const char *b2c[] = {"direction", "backend_to_client"};
    return put_family(out, M_BYTES, "counter", "Plaintext bytes passed, by direction.") &&
           put_u64_sample(out, M_BYTES, c2b, 1, SUM(bytes_in)) &&
           put_u64_sample(out, M_BYTES, b2c, 1, SUM(bytes_out)) &&
           put_family(out, M_DIAL_FAIL, "counter",
                      "Backend connections that failed or timed out.") &&
           put_u64_sample(out, M_DIAL_FAIL, NULL, 0, SUM(dial_failed));
}

static int render_process(const metrics_process_t *p, CBB *out)
{
    const char *ok[] = {"result", "ok"};
    const char *failed[] = {"result", "failed"};
    if (!put_family(out, M_RELOADS, "counter", "Configuration reloads, by result.") ||
        !put_u64_sample(out, M_RELOADS, ok, 1, p->reloads_ok) ||
        !put_u64_sample(out, M_RELOADS, failed, 1, p->reloads_failed) ||
        !put_family(out, M_GENERATION, "gauge",
                    "Configuration generation in use (1 at start, +1 per successful reload).") ||
        !put_u64_sample(out, M_GENERATION, NULL, 0, p->config_generation) ||
        !put_family(out, M_LOADED_AT, "gauge", "Unix time the configuration in use was loaded.") ||
        !put_i64_sample(out, M_LOADED_AT, NULL, 0, p->config_loaded_at))
        return 0;
    if (p->cert_not_after != 0 &&
        (!put_family(out, M_CERT_EXPIRY, "gauge",
                     "Unix time the server certificate expires (notAfter).") ||
         !put_i64_sample(out, M_CERT_EXPIRY, NULL, 0, p->cert_not_after)))
        return 0;
    if (p->ca_not_after != 0 &&
        (!put_family(out, M_CA_EXPIRY, "gauge",
                     "Unix time the first tls.client_ca certificate expires (notAfter).") ||
         !put_i64_sample(out, M_CA_EXPIRY, NULL, 0, p->ca_not_after)))
        return 0;
    const char *build[] = {"version",   p->version ? p->version : "",
                           "boringssl", p->boringssl_version ? p->boringssl_version : "",
                           "libuv",     p->libuv_version ? p->libuv_version : ""};
    return put_family(out, M_DRAINING, "gauge",
                      "1 while shutting down gracefully (readyz answers 503), else 0.") &&
           put_u64_sample(out, M_DRAINING, NULL, 0, p->draining ? 1 : 0) &&
           put_family(out, M_BUILD, "gauge", "Always 1; the labels say what is running.") &&
           put_u64_sample(out, M_BUILD, build, 3, 1);
}

int metrics_render(metrics_shard_t *const *shards, size_t n, const metrics_process_t *p, CBB *out)
{
    static const metrics_process_t kZero;
    if (p == NULL)
        p = &kZero;
    return render_connections(shards, n, out) && render_tls(shards, n, out) &&
           render_requests(shards, n, out) && render_traffic(shards, n, out) &&
           render_process(p, out);
}
