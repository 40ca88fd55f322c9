/* Unit tests for proxy/metrics.c: what a Prometheus scrape of GET /metrics reads.
 *
 * Every test renders real shards with metrics_render and reads the text back: a series is
 * looked up by its exact `name{labels}` text, and every page is checked line by line against
 * the text exposition format 0.0.4 by a small strict checker (check_exposition). The same
 * text is parsed by prometheus_client itself in tests/integration/test_metrics_format.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>

#include <openssl/bytestring.h>
#include <openssl/mem.h>

#include "metrics.h"

/* ---- reading the page back -------------------------------------------------------------- */

/* render returns the page for |n| shards as a NUL-terminated string (free()). */
static char *render(metrics_shard_t *const *shards, size_t n, const metrics_process_t *p)
{
    CBB cbb;
    uint8_t *data;
    size_t len;
    assert_true(CBB_init(&cbb, 4096));
    assert_true(metrics_render(shards, n, p, &cbb));
    assert_true(CBB_add_u8(&cbb, '\0'));
    assert_true(CBB_finish(&cbb, &data, &len));
    char *text = strdup((const char *)data);
    OPENSSL_free(data);
    assert_non_null(text);
    return text;
}

/* value_of finds the line `|series| VALUE` and returns VALUE (static storage), or NULL. */
static const char *value_of(const char *text, const char *series)
{
    static char value[64];
    size_t n = strlen(series);
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        assert_non_null(end);
        if ((size_t)(end - line) > n && strncmp(line, series, n) == 0 && line[n] == ' ') {
            size_t vlen = (size_t)(end - line) - n - 1;
            assert_true(vlen < sizeof(value));
            memcpy(value, line + n + 1, vlen);
            value[vlen] = '\0';
            return value;
        }
        line = end + 1;
    }
    return NULL;
}

static void assert_series(const char *text, const char *series, const char *want)
{
    const char *got = value_of(text, series);
    if (got == NULL)
        fail_msg("series %s is missing from:\n%s", series, text);
    if (strcmp(got, want) != 0)
        fail_msg("series %s is %s, expected %s", series, got, want);
}

static void assert_no_series(const char *text, const char *prefix)
{
    if (strstr(text, prefix) != NULL)
        fail_msg("unexpected %s in:\n%s", prefix, text);
}

/* ---- a strict checker of the text format (0.0.4) ---------------------------------------- */

typedef struct {
    const char *p;
    const char *end;
} cur_t;

static int is_name_char(char c, int first, int colon_ok)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon_ok && c == ':'))
        return 1;
    return !first && c >= '0' && c <= '9';
}

/* take_name reads a metric name (colon_ok) or a label name into |out|. */
static int take_name(cur_t *c, char *out, size_t out_len, int colon_ok)
{
    size_t n = 0;
    while (c->p < c->end && is_name_char(*c->p, n == 0, colon_ok)) {
        if (n + 1 >= out_len)
            return 0;
        out[n++] = *c->p++;
    }
    out[n] = '\0';
    return n > 0;
}

/* take_label_value reads a quoted value whose only escapes are \\ \" \n, and no raw LF. */
static int take_label_value(cur_t *c)
{
    if (c->p >= c->end || *c->p++ != '"')
        return 0;
    while (c->p < c->end && *c->p != '"') {
        if (*c->p == '\\') {
            c->p++;
            if (c->p >= c->end || (*c->p != '\\' && *c->p != '"' && *c->p != 'n'))
                return 0;
        }
        c->p++;
    }
    return c->p < c->end && *c->p++ == '"';
}

/* is_number accepts what Go's ParseFloat would in a sample value: digits with an optional
 * sign, fraction and exponent, or +Inf, -Inf, NaN. */
static int is_number(const char *s, size_t n)
{
    size_t i = 0, digits = 0;
    if ((n == 4 && (memcmp(s, "+Inf", 4) == 0 || memcmp(s, "-Inf", 4) == 0)) ||
        (n == 3 && memcmp(s, "NaN", 3) == 0))
        return 1;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        i++;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
        digits++;
    if (i < n && s[i] == '.') {
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            digits++;
    }
    if (digits == 0)
        return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+'))
            i++;
        if (i >= n || s[i] < '0' || s[i] > '9')
            return 0;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    return i == n;
}

#define MAX_FAMILIES 64

typedef struct {
    char families[MAX_FAMILIES][128];
    size_t n_families;
    char **series; /* every `name{labels}`, to find one written twice */
    size_t n_series;
    size_t cap_series;
} page_t;

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int sample_belongs(const char *sample, const char *family, const char *type)
{
    size_t n = strlen(family);
    if (strncmp(sample, family, n) != 0)
        return 0;
    if (sample[n] == '\0')
        return strcmp(type, "histogram") != 0;
    if (strcmp(type, "histogram") == 0)
        return strcmp(sample + n, "_bucket") == 0 || strcmp(sample + n, "_sum") == 0 ||
               strcmp(sample + n, "_count") == 0;
    return 0;
}

/* check_exposition fails the test unless every line of |text| is `# HELP name text`,
 * `# TYPE name type` (once per family, before its samples, HELP first) or a sample
 * `name{label="value",…} number` of the family last typed, each series written once. */
static void check_exposition(const char *text, page_t *page)
{
    char family[128] = "", type[16] = "", help_for[128] = "";
    memset(page, 0, sizeof(*page));
    for (const char *line = text; *line != '\0';) {
        const char *eol = strchr(line, '\n');
        if (eol == NULL)
            fail_msg("the page does not end with a newline");
        cur_t c = {line, eol};
        char name[128];
        if (strncmp(line, "# HELP ", 7) == 0) {
            c.p += 7;
            if (!take_name(&c, name, sizeof(name), 1) || c.p >= c.end || *c.p != ' ' ||
                c.p + 1 >= c.end)
                fail_msg("bad HELP line: %.*s", (int)(eol - line), line);
            snprintf(help_for, sizeof(help_for), "%s", name);
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            c.p += 7;
            if (!take_name(&c, name, sizeof(name), 1) || c.p >= c.end || *c.p++ != ' ')
                fail_msg("bad TYPE line: %.*s", (int)(eol - line), line);
            size_t tlen = (size_t)(c.end - c.p);
            if (!((tlen == 7 && memcmp(c.p, "counter", 7) == 0) ||
                  (tlen == 5 && memcmp(c.p, "gauge", 5) == 0) ||
                  (tlen == 9 && memcmp(c.p, "histogram", 9) == 0)))
                fail_msg("bad type: %.*s", (int)(eol - line), line);
            if (strcmp(help_for, name) != 0)
                fail_msg("TYPE %s without its HELP line just before", name);
            for (size_t i = 0; i < page->n_families; i++) {
                if (strcmp(page->families[i], name) == 0)
                    fail_msg("family %s typed twice", name);
            }
            assert_true(page->n_families < MAX_FAMILIES);
            snprintf(page->families[page->n_families++], 128, "%s", name);
            snprintf(family, sizeof(family), "%s", name);
            snprintf(type, sizeof(type), "%.*s", (int)tlen, c.p);
            if (strncmp(name, "pyroguard_", 10) != 0)
                fail_msg("%s is not prefixed pyroguard_", name);
        } else {
            if (line[0] == '#')
                fail_msg("unexpected comment: %.*s", (int)(eol - line), line);
            if (!take_name(&c, name, sizeof(name), 1))
                fail_msg("bad sample name: %.*s", (int)(eol - line), line);
            if (family[0] == '\0' || !sample_belongs(name, family, type))
                fail_msg("sample %s outside its family (%s)", name, family);
            if (c.p < c.end && *c.p == '{') {
                c.p++;
                for (;;) {
                    char label[64];
                    if (!take_name(&c, label, sizeof(label), 0) || c.p >= c.end || *c.p++ != '=' ||
                        !take_label_value(&c))
                        fail_msg("bad labels: %.*s", (int)(eol - line), line);
                    if (c.p < c.end && *c.p == ',') {
                        c.p++;
                        continue;
                    }
                    if (c.p < c.end && *c.p == '}') {
                        c.p++;
                        break;
                    }
                    fail_msg("bad labels: %.*s", (int)(eol - line), line);
                }
            }
            const char *series_end = c.p;
            if (c.p >= c.end || *c.p++ != ' ' || !is_number(c.p, (size_t)(c.end - c.p)))
                fail_msg("bad value: %.*s", (int)(eol - line), line);
            if (page->n_series == page->cap_series) {
                page->cap_series = page->cap_series ? 2 * page->cap_series : 256;
                page->series = realloc(page->series, page->cap_series * sizeof(char *));
                assert_non_null(page->series);
            }
            page->series[page->n_series] = strndup(line, (size_t)(series_end - line));
            assert_non_null(page->series[page->n_series]);
            page->n_series++;
        }
        line = eol + 1;
    }
    qsort(page->series, page->n_series, sizeof(char *), str_cmp);
    for (size_t i = 1; i < page->n_series; i++) {
        if (strcmp(page->series[i - 1], page->series[i]) == 0)
            fail_msg("series written twice: %s", page->series[i]);
    }
}

static void page_cleanup(page_t *page)
{
    for (size_t i = 0; i < page->n_series; i++)
        free(page->series[i]);
    free(page->series);
}

static void assert_valid_page(const char *text)
{
    page_t page;
    check_exposition(text, &page);
    page_cleanup(&page);
}

/* ---- fixtures --------------------------------------------------------------------------- */

typedef struct {
    metrics_shard_t *s[2];
} shards_t;

static int setup(void **state)
{
    shards_t *sh = calloc(1, sizeof(*sh));
    if (sh == NULL)
        return -1;
    sh->s[0] = metrics_shard_new();
    sh->s[1] = metrics_shard_new();
    if (sh->s[0] == NULL || sh->s[1] == NULL)
        return -1;
    *state = sh;
    return 0;
}

static int teardown(void **state)
{
    shards_t *sh = *state;
    metrics_shard_free(sh->s[0]);
    metrics_shard_free(sh->s[1]);
    free(sh);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------ */

static const char *const kOutcomes[] = {
    "client_closed", "backend_closed", "idle_timeout",        "handshake_timeout",
    "tls_fail",      "refused",        "backend_unavailable", "shutdown",
    "error",         "other"};

static const char *const kTlsReasons[] = {"no_client_certificate",
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
                                          "other"};

static const char *const kRefusals[] = {"no_matching_rule",
                                        "identity_invalid",
                                        "denied_by_rule",
                                        "not_allowed",
                                        "object_not_allowed",
                                        "name_too_long",
                                        "malformed_call",
                                        "not_pyro",
                                        "protocol_version",
                                        "bad_checksum",
                                        "negative_length",
                                        "message_too_large",
                                        "bad_annotations",
                                        "unexpected_message",
                                        "serializer_not_allowed",
                                        "compression_denied",
                                        "inflate_failed",
                                        "inflated_too_large",
                                        "undecodable",
                                        "dotted_name",
                                        "private_name",
                                        "invalid_name",
                                        "stream_not_owned",
                                        "hmac_not_rewritable",
                                        "identity_too_large",
                                        "backend_unavailable",
                                        "upstream_tls_failed",
                                        "other"};

static const char *const kBuckets[] = {"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
                                       "0.25",  "0.5",    "1",     "2.5",  "5",     "+Inf"};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static void test_an_idle_proxy_shows_every_fixed_series_at_zero(void **state)
{
    shards_t *sh = *state;
    char series[160];
    char *text = render(sh->s, 2, NULL);
    assert_valid_page(text);

    assert_series(text, "pyroguard_connections_open", "0");
    for (size_t i = 0; i < COUNT_OF(kOutcomes); i++) {
        snprintf(series, sizeof(series), "pyroguard_connections_total{outcome=\"%s\"}",
                 kOutcomes[i]);
        assert_series(text, series, "0");
    }
    assert_series(text, "pyroguard_connections_rejected_total", "0");
    for (size_t i = 0; i < COUNT_OF(kTlsReasons); i++) {
        snprintf(series, sizeof(series), "pyroguard_tls_handshake_failures_total{reason=\"%s\"}",
                 kTlsReasons[i]);
        assert_series(text, series, "0");
    }
    for (size_t i = 0; i < COUNT_OF(kBuckets); i++) {
        snprintf(series, sizeof(series),
                 "pyroguard_tls_handshake_duration_seconds_bucket{le=\"%s\"}", kBuckets[i]);
        assert_series(text, series, "0");
    }
    assert_series(text, "pyroguard_tls_handshake_duration_seconds_sum", "0.000000");
    assert_series(text, "pyroguard_tls_handshake_duration_seconds_count", "0");
    assert_series(text, "pyroguard_requests_total{verdict=\"allowed\",reason=\"allowed\"}", "0");
    for (size_t i = 0; i < COUNT_OF(kRefusals); i++) {
        snprintf(series, sizeof(series),
                 "pyroguard_requests_total{verdict=\"refused\",reason=\"%s\"}", kRefusals[i]);
        assert_series(text, series, "0");
    }
    assert_series(text, "pyroguard_bytes_total{direction=\"client_to_backend\"}", "0");
    assert_series(text, "pyroguard_bytes_total{direction=\"backend_to_client\"}", "0");
    assert_series(text, "pyroguard_backend_dial_failures_total", "0");
    assert_series(text, "pyroguard_reloads_total{result=\"ok\"}", "0");
    assert_series(text, "pyroguard_reloads_total{result=\"failed\"}", "0");
    assert_series(text, "pyroguard_config_generation", "0");
    assert_series(text, "pyroguard_config_loaded_timestamp_seconds", "0");
    assert_series(text, "pyroguard_draining", "0");
    assert_series(text, "pyroguard_build_info{version=\"\",boringssl=\"\",libuv=\"\"}", "1");
    /* Rules appear once seen; expiry gauges only when known. */
    assert_no_series(text, "pyroguard_requests_by_rule_total{");
    assert_no_series(text, "pyroguard_server_certificate_expiry_timestamp_seconds ");
    assert_no_series(text, "pyroguard_client_ca_expiry_timestamp_seconds ");
    /* The family is still described, so a dashboard's query has a HELP to show. */
    assert_non_null(strstr(text, "# TYPE pyroguard_requests_by_rule_total counter\n"));
    free(text);
}

static void test_a_closing_connection_is_open_until_its_sockets_are_closed(void **state)
{
    /* limits.max_connections counts a connection until it is freed; the gauge must agree. */
    shards_t *sh = *state;
    metrics_conn_accepted(sh->s[0]);
    metrics_conn_accepted(sh->s[0]);
    metrics_conn_closed(sh->s[0], "client_closed");
    char *text = render(sh->s, 1, NULL);
    assert_series(text, "pyroguard_connections_open", "2");
    assert_series(text, "pyroguard_connections_total{outcome=\"client_closed\"}", "1");
    free(text);
    metrics_conn_freed(sh->s[0]);
    text = render(sh->s, 1, NULL);
    assert_series(text, "pyroguard_connections_open", "1");
    free(text);
}

static void test_requests_are_counted_by_protocol_and_verdict(void **state)
{
    shards_t *sh = *state;
    metrics_request_protocol(sh->s[0], "pyro5", 1);
    metrics_request_protocol(sh->s[1], "pyro5", 1);
    metrics_request_protocol(sh->s[1], "pyro4.46", 0);
    metrics_request_protocol(sh->s[0], "pyro9", 1);
    char *text = render(sh->s, 2, NULL);
    assert_valid_page(text);
    assert_series(
        text, "pyroguard_requests_by_protocol_total{protocol=\"pyro5\",verdict=\"allowed\"}", "2");
    assert_series(text,
                  "pyroguard_requests_by_protocol_total{protocol=\"pyro4.46\",verdict=\"refused\"}",
                  "1");
    assert_series(
        text, "pyroguard_requests_by_protocol_total{protocol=\"pyro4\",verdict=\"allowed\"}", "0");
    assert_series(
        text, "pyroguard_requests_by_protocol_total{protocol=\"other\",verdict=\"allowed\"}", "1");
    free(text);
}

static void test_counters_are_summed_across_shards(void **state)
{
    shards_t *sh = *state;
    for (int i = 0; i < 5; i++)
        metrics_conn_accepted(sh->s[0]);
    for (int i = 0; i < 3; i++)
        metrics_conn_accepted(sh->s[1]);
    metrics_conn_closed(sh->s[0], "client_closed");
    metrics_conn_closed(sh->s[1], "client_closed");
    metrics_conn_closed(sh->s[1], "idle_timeout");
    metrics_conn_freed(sh->s[0]);
    metrics_conn_freed(sh->s[1]);
    metrics_conn_freed(sh->s[1]);
    metrics_conn_rejected(sh->s[0]);
    metrics_conn_rejected(sh->s[1]);
    metrics_tls_failed(sh->s[0], "unknown_ca");
    metrics_tls_failed(sh->s[1], "unknown_ca");
    metrics_tls_failed(sh->s[1], "handshake_timeout");
    metrics_request(sh->s[0], 1, "allowed", "billing");
    metrics_request(sh->s[1], 1, "allowed", "billing");
    metrics_request(sh->s[1], 0, "not_allowed", "billing");
    metrics_request(sh->s[0], 0, "no_matching_rule", NULL);
    metrics_bytes(sh->s[0], 100, 2000);
    metrics_bytes(sh->s[1], 23, 1);
    metrics_backend_dial_failed(sh->s[1]);

    char *text = render(sh->s, 2, NULL);
    assert_valid_page(text);
    assert_series(text, "pyroguard_connections_open", "5");
    assert_series(text, "pyroguard_connections_total{outcome=\"client_closed\"}", "2");
    assert_series(text, "pyroguard_connections_total{outcome=\"idle_timeout\"}", "1");
    assert_series(text, "pyroguard_connections_rejected_total", "2");
    assert_series(text, "pyroguard_tls_handshake_failures_total{reason=\"unknown_ca\"}", "2");
    assert_series(text, "pyroguard_tls_handshake_failures_total{reason=\"handshake_timeout\"}",
                  "1");
    assert_series(text, "pyroguard_requests_total{verdict=\"allowed\",reason=\"allowed\"}", "2");
    assert_series(text, "pyroguard_requests_total{verdict=\"refused\",reason=\"not_allowed\"}",
                  "1");
    assert_series(text, "pyroguard_requests_total{verdict=\"refused\",reason=\"no_matching_rule\"}",
                  "1");
    assert_series(text, "pyroguard_requests_by_rule_total{rule=\"billing\",verdict=\"allowed\"}",
                  "2");
    assert_series(text, "pyroguard_requests_by_rule_total{rule=\"billing\",verdict=\"refused\"}",
                  "1");
    assert_series(text, "pyroguard_requests_by_rule_total{rule=\"\",verdict=\"refused\"}", "1");
    assert_series(text, "pyroguard_requests_by_rule_total{rule=\"\",verdict=\"allowed\"}", "0");
    assert_series(text, "pyroguard_bytes_total{direction=\"client_to_backend\"}", "123");
    assert_series(text, "pyroguard_bytes_total{direction=\"backend_to_client\"}", "2001");
    assert_series(text, "pyroguard_backend_dial_failures_total", "1");

    /* One shard alone is only its own share. */
    free(text);
    text = render(sh->s, 1, NULL);
    assert_series(text, "pyroguard_connections_open", "4");
    assert_series(text, "pyroguard_bytes_total{direction=\"client_to_backend\"}", "100");
    free(text);
}

static void test_handshake_histogram_is_cumulative_with_exact_sum_and_count(void **state)
{
    shards_t *sh = *state;
    /* Bounds are inclusive: exactly 1 ms is in le="0.001". */
    metrics_handshake_done(sh->s[0], 500);
    metrics_handshake_done(sh->s[0], 1000);
    metrics_handshake_done(sh->s[1], 1001);
    metrics_handshake_done(sh->s[1], 30000);
    metrics_handshake_done(sh->s[0], 3000000);
    metrics_handshake_done(sh->s[1], 10000000);

    char *text = render(sh->s, 2, NULL);
    assert_valid_page(text);
    static const char *const kWant[] = {"2", "3", "3", "3", "3", "4", "4",
                                        "4", "4", "4", "4", "5", "6"};
    char series[128];
    for (size_t i = 0; i < COUNT_OF(kBuckets); i++) {
        snprintf(series, sizeof(series),
                 "pyroguard_tls_handshake_duration_seconds_bucket{le=\"%s\"}", kBuckets[i]);
        assert_series(text, series, kWant[i]);
    }
    /* 0.0005 + 0.001 + 0.001001 + 0.03 + 3 + 10 */
    assert_series(text, "pyroguard_tls_handshake_duration_seconds_sum", "13.032501");
    assert_series(text, "pyroguard_tls_handshake_duration_seconds_count", "6");
    free(text);
}

static void test_rules_are_interned_per_shard_and_merged_by_name(void **state)
{
    shards_t *sh = *state;
    /* A name is copied when interned: the configuration it came from may go away. */
    char name[] = "inventory";
    metrics_request(sh->s[0], 1, "allowed", name);
    memcpy(name, "xxxxxxxxx", 9);
    metrics_request(sh->s[1], 0, "denied_by_rule", "inventory");
    metrics_request(sh->s[1], 1, "allowed", "billing");
    metrics_request(sh->s[0], 1, "allowed", "zeta");

    char *text = render(sh->s, 2, NULL);
    assert_valid_page(text);
    assert_series(text, "pyroguard_requests_by_rule_total{rule=\"inventory\",verdict=\"allowed\"}",
                  "1");
    assert_series(text, "pyroguard_requests_by_rule_total{rule=\"inventory\",verdict=\"refused\"}",
                  "1");
    assert_series(text, "pyroguard_requests_by_rule_total{rule=\"billing\",verdict=\"allowed\"}",
                  "1");
    assert_series(text, "pyroguard_requests_by_rule_total{rule=\"billing\",verdict=\"refused\"}",
                  "0");
    assert_no_series(text, "rule=\"xxxxxxxxx\"");
    assert_no_series(text, "rule=\"\"");
    /* Sorted by name. */
    const char *b = strstr(text, "rule=\"billing\"");
    const char *i = strstr(text, "rule=\"inventory\"");
    const char *z = strstr(text, "rule=\"zeta\"");
    assert_true(b != NULL && i != NULL && z != NULL && b < i && i < z);
    free(text);
}

static void test_rules_past_the_limit_count_as_other(void **state)
{
    shards_t *sh = *state;
    char name[32];
    for (int i = 0; i < METRICS_MAX_RULES; i++) {
        snprintf(name, sizeof(name), "rule-%05d", i);
        metrics_request(sh->s[0], 1, "allowed", name);
    }
    /* Known names still count as themselves; new ones go to "other". */
    metrics_request(sh->s[0], 1, "allowed", "rule-00007");
    metrics_request(sh->s[0], 0, "not_allowed", "one-too-many");
    metrics_request(sh->s[0], 1, "allowed", "two-too-many");
    /* The other shard has room of its own. */
    metrics_request(sh->s[1], 1, "allowed", "one-too-many");

    char *text = render(sh->s, 2, NULL);
    page_t page;
    check_exposition(text, &page);
    assert_series(text, "pyroguard_requests_by_rule_total{rule=\"rule-00007\",verdict=\"allowed\"}",
                  "2");
    assert_series(text, "pyroguard_requests_by_rule_total{rule=\"rule-04095\",verdict=\"allowed\"}",
                  "1");
    assert_series(text, "pyroguard_requests_by_rule_total{rule=\"other\",verdict=\"allowed\"}",
                  "1");
    assert_series(text, "pyroguard_requests_by_rule_total{rule=\"other\",verdict=\"refused\"}",
                  "1");
    assert_series(
        text, "pyroguard_requests_by_rule_total{rule=\"one-too-many\",verdict=\"allowed\"}", "1");
    assert_no_series(text, "rule=\"two-too-many\"");
    page_cleanup(&page);
    free(text);
}

static void test_a_rule_named_other_shares_the_overflow_series(void **state)
{
    shards_t *sh = *state;
    char name[32];
    metrics_request(sh->s[1], 1, "allowed", "other");
    for (int i = 0; i <= METRICS_MAX_RULES; i++) {
        snprintf(name, sizeof(name), "r%d", i);
        metrics_request(sh->s[0], 0, "not_allowed", name);
    }
    char *text = render(sh->s, 2, NULL);
    assert_valid_page(text); /* fails on a series written twice */
    assert_series(text, "pyroguard_requests_by_rule_total{rule=\"other\",verdict=\"allowed\"}",
                  "1");
    assert_series(text, "pyroguard_requests_by_rule_total{rule=\"other\",verdict=\"refused\"}",
                  "1");
    free(text);
}

static void test_label_values_are_escaped(void **state)
{
    shards_t *sh = *state;
    metrics_request(sh->s[0], 1, "allowed", "quote\" back\\slash new\nline");
    /* Not UTF-8: a lone continuation byte, a truncated sequence, an overlong '/'. */
    metrics_request(sh->s[0], 1, "allowed", "bad\x80-\xe2\x82-\xc0\xaf-caf\xc3\xa9");
    metrics_process_t p = {
        .version = "1.0 \"beta\"", .boringssl_version = "a\\b", .libuv_version = "1.44\n2"};

    char *text = render(sh->s, 2, &p);
    assert_valid_page(text);
    assert_series(text,
                  "pyroguard_requests_by_rule_total{rule=\"quote\\\" back\\\\slash "
                  "new\\nline\",verdict=\"allowed\"}",
                  "1");
    assert_series(text,
                  "pyroguard_requests_by_rule_total{rule=\"bad\xef\xbf\xbd-\xef\xbf\xbd\xef\xbf"
                  "\xbd-\xef\xbf\xbd\xef\xbf\xbd-caf\xc3\xa9\",verdict=\"allowed\"}",
                  "1");
    assert_series(text,
                  "pyroguard_build_info{version=\"1.0 "
                  "\\\"beta\\\"\",boringssl=\"a\\\\b\",libuv=\"1.44\\n2\"}",
                  "1");
    free(text);
}

static void test_unknown_reasons_count_as_other(void **state)
{
    shards_t *sh = *state;
    metrics_tls_failed(sh->s[0], "certificate_too_pretty");
    metrics_tls_failed(sh->s[0], NULL);
    metrics_request(sh->s[0], 0, "unknown", "r"); /* frame_error_reason's fallback */
    metrics_request(sh->s[0], 0, NULL, "r");
    metrics_conn_accepted(sh->s[0]);
    metrics_conn_closed(sh->s[0], "cosmic_ray");

    char *text = render(sh->s, 2, NULL);
    assert_valid_page(text);
    assert_series(text, "pyroguard_tls_handshake_failures_total{reason=\"other\"}", "2");
    assert_series(text, "pyroguard_requests_total{verdict=\"refused\",reason=\"other\"}", "2");
    assert_series(text, "pyroguard_connections_total{outcome=\"other\"}", "1");
    assert_no_series(text, "certificate_too_pretty");
    assert_no_series(text, "cosmic_ray");
    free(text);
}

/* Every reason proxy/conn.c closes a connection with, and its outcome label. */
static void test_conn_close_reasons_map_to_outcomes(void **state)
{
    static const struct {
        const char *reason, *outcome;
    } kMap[] = {
        {"client_closed", "client_closed"},
        {"client_closed_mid_message", "client_closed"},
        {"backend_closed", "backend_closed"},
        {"idle_timeout", "idle_timeout"},
        {"handshake_timeout", "handshake_timeout"},
        {"tls_fail", "tls_fail"},
        {"peer_closed", "tls_fail"},
        {"tls_error", "tls_fail"},
        {"unknown_ca", "tls_fail"},
        {"no_client_certificate", "tls_fail"},
        {"certificate_expired", "tls_fail"},
        {"certificate_not_yet_valid", "tls_fail"},
        {"certificate_revoked", "tls_fail"},
        {"certificate_denied", "tls_fail"},
        {"certificate_invalid", "tls_fail"},
        {"no_shared_cipher", "tls_fail"},
        {"not_tls", "tls_fail"},
        {"protocol_version", "refused"}, /* ambiguous: see metrics.h */
        {"refused", "refused"},
        {"backend_connectfail", "refused"},
        {"no_matching_rule", "refused"},
        {"identity_invalid", "refused"},
        {"denied_by_rule", "refused"},
        {"not_allowed", "refused"},
        {"object_not_allowed", "refused"},
        {"name_too_long", "refused"},
        {"malformed_call", "refused"},
        {"unexpected_message", "refused"},
        {"not_pyro", "refused"},
        {"bad_checksum", "refused"},
        {"negative_length", "refused"},
        {"message_too_large", "refused"},
        {"bad_annotations", "refused"},
        {"serializer_not_allowed", "refused"},
        {"undecodable", "refused"},
        {"dotted_name", "refused"},
        {"backend_unavailable", "backend_unavailable"},
        {"shutdown", "shutdown"},
        {"internal_error", "error"},
        {"client_write_error", "error"},
        {"backend_write_error", "error"},
        {"client_read_error", "error"},
        {"backend_read_error", "error"},
        {"backend_protocol_error", "error"},
        {"accept_failed", "error"},
        {"out_of_memory", "error"},
        {"error", "error"},
        {"unknown", "other"},
        {"", "other"},
        {NULL, "other"},
    };
    for (size_t i = 0; i < COUNT_OF(kMap); i++) {
        const char *got = metrics_outcome_name(kMap[i].reason);
        if (strcmp(got, kMap[i].outcome) != 0)
            fail_msg("%s -> %s, expected %s", kMap[i].reason ? kMap[i].reason : "NULL", got,
                     kMap[i].outcome);
    }
}

static void test_process_values_are_written_as_given(void **state)
{
    shards_t *sh = *state;
    metrics_process_t p = {
        .reloads_ok = 3,
        .reloads_failed = 1,
        .cert_not_after = 1893456000,
        .ca_not_after = -86400, /* a CA from before 1970 is odd, not an error */
        .config_generation = 4,
        .config_loaded_at = 1764200000,
        .draining = 7,
        .version = "0.1.0",
        .boringssl_version = "BoringSSL",
        .libuv_version = "1.44.2",
    };
    char *text = render(sh->s, 2, &p);
    assert_valid_page(text);
    assert_series(text, "pyroguard_reloads_total{result=\"ok\"}", "3");
    assert_series(text, "pyroguard_reloads_total{result=\"failed\"}", "1");
    assert_series(text, "pyroguard_server_certificate_expiry_timestamp_seconds", "1893456000");
    assert_series(text, "pyroguard_client_ca_expiry_timestamp_seconds", "-86400");
    assert_series(text, "pyroguard_config_generation", "4");
    assert_series(text, "pyroguard_config_loaded_timestamp_seconds", "1764200000");
    assert_series(text, "pyroguard_draining", "1");
    assert_series(
        text, "pyroguard_build_info{version=\"0.1.0\",boringssl=\"BoringSSL\",libuv=\"1.44.2\"}",
        "1");
    free(text);

    p.cert_not_after = INT64_MIN;
    p.ca_not_after = 0;
    p.draining = 0;
    text = render(sh->s, 2, &p);
    assert_valid_page(text);
    assert_series(text, "pyroguard_server_certificate_expiry_timestamp_seconds",
                  "-9223372036854775808");
    assert_no_series(text, "pyroguard_client_ca_expiry_timestamp_seconds");
    assert_series(text, "pyroguard_draining", "0");
    free(text);
}

static void test_huge_counters_are_written_whole(void **state)
{
    shards_t *sh = *state;
    metrics_bytes(sh->s[0], UINT64_MAX, 0);
    metrics_handshake_done(sh->s[0], 18446744073709551615ull);
    char *text = render(sh->s, 1, NULL);
    assert_valid_page(text);
    assert_series(text, "pyroguard_bytes_total{direction=\"client_to_backend\"}",
                  "18446744073709551615");
    assert_series(text, "pyroguard_tls_handshake_duration_seconds_sum", "18446744073709.551615");
    assert_series(text, "pyroguard_tls_handshake_duration_seconds_bucket{le=\"5\"}", "0");
    assert_series(text, "pyroguard_tls_handshake_duration_seconds_bucket{le=\"+Inf\"}", "1");
    free(text);
}

static void test_render_reports_a_buffer_that_cannot_grow(void **state)
{
    shards_t *sh = *state;
    uint8_t small[256];
    CBB cbb;
    metrics_request(sh->s[0], 1, "allowed", "billing"); /* the rule rows are freed too */
    assert_true(CBB_init_fixed(&cbb, small, sizeof(small)));
    assert_false(metrics_render(sh->s, 2, NULL, &cbb));
    CBB_cleanup(&cbb);
}

/* One writer per shard while a reader renders: no lock, and every page a reader sees has
 * counters that never go backwards and rule entries with their names whole. */
typedef struct {
    metrics_shard_t *s;
    int n;
} writer_arg_t;

static void *writer(void *p)
{
    writer_arg_t *w = p;
    char name[32];
    for (int i = 0; i < w->n; i++) {
        snprintf(name, sizeof(name), "rule-%d", i % 300);
        metrics_request(w->s, i % 3 != 0, i % 3 ? "allowed" : "not_allowed", name);
        metrics_bytes(w->s, 1, 2);
    }
    return NULL;
}

static uint64_t number(const char *text, const char *series)
{
    const char *v = value_of(text, series);
    uint64_t n = 0;
    assert_non_null(v);
    for (; *v != '\0'; v++) {
        assert_true(*v >= '0' && *v <= '9');
        n = n * 10 + (uint64_t)(*v - '0');
    }
    return n;
}

static void test_concurrent_writers_and_reader_see_monotonic_counters(void **state)
{
    shards_t *sh = *state;
    enum { N = 200000 };
    writer_arg_t args[2] = {{sh->s[0], N}, {sh->s[1], N}};
    pthread_t threads[2];
    uint64_t last = 0;
    assert_int_equal(pthread_create(&threads[0], NULL, writer, &args[0]), 0);
    assert_int_equal(pthread_create(&threads[1], NULL, writer, &args[1]), 0);
    for (int i = 0; i < 20; i++) {
        char *text = render(sh->s, 2, NULL);
        assert_valid_page(text);
        uint64_t now = number(text, "pyroguard_bytes_total{direction=\"client_to_backend\"}");
        assert_true(now >= last);
        last = now;
        free(text);
    }
    pthread_join(threads[0], NULL);
    pthread_join(threads[1], NULL);

    char *text = render(sh->s, 2, NULL);
    assert_valid_page(text);
    assert_int_equal(number(text, "pyroguard_bytes_total{direction=\"client_to_backend\"}"), 2 * N);
    assert_int_equal(number(text, "pyroguard_bytes_total{direction=\"backend_to_client\"}"), 4 * N);
    uint64_t allowed =
        number(text, "pyroguard_requests_total{verdict=\"allowed\",reason=\"allowed\"}");
    uint64_t refused =
        number(text, "pyroguard_requests_total{verdict=\"refused\",reason=\"not_allowed\"}");
    assert_int_equal(allowed + refused, 2 * N);
    /* i % 300 == 0 is refused (i % 3 == 0): N / 300 times per writer, rounded up. */
    assert_int_equal(
        number(text, "pyroguard_requests_by_rule_total{rule=\"rule-0\",verdict=\"refused\"}"),
        2 * ((N + 299) / 300));
    free(text);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_an_idle_proxy_shows_every_fixed_series_at_zero),
        T(test_counters_are_summed_across_shards),
        T(test_requests_are_counted_by_protocol_and_verdict),
        T(test_a_closing_connection_is_open_until_its_sockets_are_closed),
        T(test_handshake_histogram_is_cumulative_with_exact_sum_and_count),
        T(test_rules_are_interned_per_shard_and_merged_by_name),
        T(test_rules_past_the_limit_count_as_other),
        T(test_a_rule_named_other_shares_the_overflow_series),
        T(test_label_values_are_escaped),
        T(test_unknown_reasons_count_as_other),
        T(test_conn_close_reasons_map_to_outcomes),
        T(test_process_values_are_written_as_given),
        T(test_huge_counters_are_written_whole),
        T(test_render_reports_a_buffer_that_cannot_grow),
        T(test_concurrent_writers_and_reader_see_monotonic_counters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
