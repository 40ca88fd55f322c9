/* metrics: what pyroguard counts, for the admin endpoint's GET /metrics (Prometheus text
 * exposition format 0.0.4).
 *
 * Every event loop owns one shard and is its only writer: an increment is a load and a relaxed
 * atomic store, never a locked read-modify-write, so the data path pays a few nanoseconds. The
 * admin side reads shards from another thread with relaxed atomic loads and sums them; a
 * scrape may see one loop's counters a moment older than another's, never a torn value.
 * Labels come from fixed tables (reasons, outcomes) or from rule names, which are interned in
 * a shard on first use (bounded: METRICS_MAX_RULES names; more are counted under "other").
 *
 * Labels:
 *  - connections_total{outcome}: conn_close's reason mapped to client_closed, backend_closed,
 *    idle_timeout, handshake_timeout, tls_fail, refused, backend_unavailable, shutdown, error
 *    or other (the table is in metrics.c, metrics_outcome_name). The outcome names themselves
 *    are accepted too. "protocol_version" is both a TLS failure and a Pyro framing refusal:
 *    it counts as "refused", so a connection that failed its handshake should be closed as
 *    "tls_fail" (or the caller passes "tls_fail" here when the handshake had not finished).
 *  - tls_handshake_failures_total{reason} and requests_total{verdict,reason}: the reason codes
 *    of README.md "Logs"; a code not in the table counts as "other".
 *  - requests_by_rule_total{rule,verdict}: a request from a client that matched no rule has
 *    rule="" (no rule can have that name: config requires a non-empty one; Prometheus stores
 *    an empty label as an absent one, so select it with {rule=""}). Past METRICS_MAX_RULES
 *    names in one shard, the rest count as rule="other" (a rule actually named "other" then
 *    shares that series). Rule series appear once a request counted them; every fixed-label
 *    series is always written, at 0 if need be.
 *
 * Process-wide values (reloads, certificate expiry, readiness) live in a metrics_process_t
 * owned by the control thread.
 *
 * Ownership: metrics_shard_new allocates a shard, metrics_shard_free releases it (after its
 * loop has stopped and no reader uses it). A shard copies the rule names it interns, so the
 * configuration they came from may be freed by a reload; a shard is 64 KiB of slots plus one
 * allocation per interned name. metrics_render writes into a caller-owned CBB. */
#ifndef PYROGUARD_METRICS_H
#define PYROGUARD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/bytestring.h>

#define METRICS_MAX_RULES 4096

typedef struct metrics_shard metrics_shard_t;

/* metrics_shard_new returns a zeroed shard, or NULL when out of memory. */
metrics_shard_t *metrics_shard_new(void);
/* metrics_shard_free frees |s| and the names it interned; NULL is accepted. */
void metrics_shard_free(metrics_shard_t *s);

/* A TCP connection was accepted (it counts as open until metrics_conn_closed). */
void metrics_conn_accepted(metrics_shard_t *s);
/* A connection over limits.max_connections was closed at once (not counted as open). */
/* metrics_conn_freed: an accepted connection's sockets are closed and its slot of
 * limits.max_connections is free again (after its metrics_conn_closed). */
void metrics_conn_freed(metrics_shard_t *s);
void metrics_conn_rejected(metrics_shard_t *s);
/* An accepted connection closed; |outcome| is conn_close's reason ("client_closed",
 * "idle_timeout", "tls_fail", "shutdown", a refusal reason…), mapped to a fixed label set. */
void metrics_conn_closed(metrics_shard_t *s, const char *outcome);
/* A handshake failed with a tls_failure_reason() code, "handshake_timeout" or "peer_closed". */
void metrics_tls_failed(metrics_shard_t *s, const char *reason);
/* A handshake completed after |micros| microseconds (histogram). */
void metrics_handshake_done(metrics_shard_t *s, uint64_t micros);
/* A judged client message: |allowed|, the reason code (refusals; "allowed" otherwise) and
 * the client's rule name (NULL: none matched). |rule| is copied the first time it is seen. */
void metrics_request(metrics_shard_t *s, int allowed, const char *reason, const char *rule);
/* Plaintext bytes passed client to backend (|in|) and back (|out|). */
/* metrics_request_protocol counts one judged message under its connection's wire protocol
 * ("pyro4", "pyro4.47", "pyro4.46", "pyro5"; anything else is "other"). */
void metrics_request_protocol(metrics_shard_t *s, const char *protocol, int allowed);
void metrics_bytes(metrics_shard_t *s, uint64_t in, uint64_t out);
/* Dialling the backend failed or timed out. */
void metrics_backend_dial_failed(metrics_shard_t *s);

/* metrics_outcome_name returns the outcome label conn_close's |reason| counts under (never
 * NULL: "other" for an unknown reason). */
const char *metrics_outcome_name(const char *reason);

typedef struct {
    uint64_t reloads_ok;
    uint64_t reloads_failed;
    int64_t cert_not_after; /* unix time of the server certificate's notAfter; 0: unknown */
    int64_t ca_not_after;   /* earliest notAfter among tls.client_ca certificates; 0: unknown */
    uint64_t config_generation;
    int64_t config_loaded_at; /* unix time of the configuration in use */
    int draining;
    const char *version; /* NULL is written as "" */
    const char *boringssl_version;
    const char *libuv_version;
} metrics_process_t;

/* metrics_render writes the exposition text for |n| shards summed and |p| (NULL: all zero)
 * into |out|. Rule series: rule="" first, then the names sorted, then the overflow "other". It may
 * be called from any thread while the shards' loops run. Returns 0 if |out| could not grow (or
 * memory ran out); |out| then holds a partial text the caller discards. */
int metrics_render(metrics_shard_t *const *shards, size_t n, const metrics_process_t *p, CBB *out);

#endif
