/* metrics_dump: prints metrics_render's page for two shards filled with a fixed set of events
 * (or, with the argument "empty", for two untouched shards and no process values), for
 * tests/integration/test_metrics_format.py, which reads it back with prometheus_client's own
 * parser and checks every value against the events below. */
#include <stdio.h>
#include <string.h>

#include <openssl/bytestring.h>
#include <openssl/mem.h>
#include <uv.h>

#include "metrics.h"

static void repeat(void (*fn)(metrics_shard_t *), metrics_shard_t *s, int n)
{
    for (int i = 0; i < n; i++)
        fn(s);
}

static void fill(metrics_shard_t *a, metrics_shard_t *b)
{
    repeat(metrics_conn_accepted, a, 7);
    metrics_conn_closed(a, "client_closed");
    metrics_conn_closed(a, "client_closed_mid_message");
    metrics_conn_closed(a, "idle_timeout");
    metrics_conn_closed(a, "unknown_ca");
    repeat(metrics_conn_freed, a, 4); /* each closed connection's sockets closed too */
    metrics_conn_rejected(a);
    metrics_tls_failed(a, "unknown_ca");
    metrics_tls_failed(a, "handshake_timeout");
    metrics_handshake_done(a, 800);
    metrics_handshake_done(a, 20000);
    metrics_handshake_done(a, 1500000);
    for (int i = 0; i < 3; i++)
        metrics_request(a, 1, "allowed", "billing");
    metrics_request(a, 0, "not_allowed", "billing");
    metrics_request(a, 0, "no_matching_rule", NULL);
    metrics_request(a, 0, "no_matching_rule", NULL);
    metrics_request_protocol(a, "pyro4", 1);
    metrics_request_protocol(a, "pyro4", 1);
    metrics_request_protocol(a, "pyro5", 0);
    metrics_request_protocol(a, "pyro4.47", 1);
    metrics_bytes(a, 1000, 5000);
    metrics_backend_dial_failed(a);

    repeat(metrics_conn_accepted, b, 3);
    metrics_conn_closed(b, "backend_closed");
    metrics_conn_closed(b, "shutdown");
    repeat(metrics_conn_freed, b, 2);
    metrics_tls_failed(b, "peer_closed");
    metrics_handshake_done(b, 2000);
    metrics_request_protocol(b, "pyro5", 1);
    metrics_request_protocol(b, "no-such-protocol", 0);
    metrics_request(b, 1, "allowed", "inventory");
    metrics_request(b, 1, "allowed", "inventory");
    metrics_request(b, 0, "dotted_name", "inventory");
    metrics_request(b, 1, "allowed", "billing");
    metrics_request(b, 1, "allowed", "we\"ird\\ru\nle");
    metrics_bytes(b, 24, 6);
}

int main(int argc, char **argv)
{
    int empty = argc > 1 && strcmp(argv[1], "empty") == 0;
    metrics_shard_t *shards[2] = {metrics_shard_new(), metrics_shard_new()};
    metrics_process_t p = {
        .reloads_ok = 2,
        .reloads_failed = 1,
        .cert_not_after = 1893456000,
        .ca_not_after = 1924992000,
        .config_generation = 3,
        .config_loaded_at = 1764201234,
        .draining = 0,
        .version = "0.1.0",
        .boringssl_version = "BoringSSL",
        .libuv_version = uv_version_string(),
    };
    CBB cbb;
    uint8_t *text = NULL;
    size_t len = 0;
    int rc = 1;

    if (shards[0] == NULL || shards[1] == NULL || !CBB_init(&cbb, 8192))
        goto free_shards;
    if (!empty)
        fill(shards[0], shards[1]);
    if (!metrics_render(shards, 2, empty ? NULL : &p, &cbb) || !CBB_finish(&cbb, &text, &len)) {
        CBB_cleanup(&cbb);
        goto free_shards;
    }
    rc = fwrite(text, 1, len, stdout) == len ? 0 : 1;
    OPENSSL_free(text);
free_shards:
    metrics_shard_free(shards[0]);
    metrics_shard_free(shards[1]);
    return rc;
}
