/* Allocation-failure torture (after curl's): for the parsers, the configuration loader, the
 * policy patterns, reading a client certificate's identity and the metrics, run a scenario once to
 * count the allocations it makes through alloc.h, then run it again once per allocation with
 * exactly that one failing. Every run must end in a clean error — a refusal for a request, a failed
 * load with an error line for a configuration — never in a crash, never in an allowed request, and
 * never with memory left behind: the heap in use (mallinfo2) must be what it was before the run,
 * and under ASan, LeakSanitizer checks the same at exit (make test-asan runs this file). */
#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "alloc.h"
#include "config.h"
#include "frame.h"
#include "identity.h"
#include "inspect.h"
#include "metrics.h"
#include "pattern.h"
#include "policy.h"

#include "testcert.h"
#include "testframe.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* in_use is the heap in use now; ASan replaces malloc (and checks leaks itself). glibc's
 * per-thread cache (tcache) keeps freed chunks counted as in use, so main runs the tests with it
 * off: then a free lowers the figure at once and any difference is a leak. */
static size_t in_use(void)
{
    return UNDER_ASAN ? 0 : mallinfo2().uordblks;
}

/* A scenario returns 1 for success, 0 for a clean failure; it frees all it made either way. */
typedef int (*scenario_fn)(const void *arg);

typedef struct {
    unsigned long allocations; /* made by the scenario when nothing fails */
    unsigned long failures;    /* runs in which the chosen allocation did fail */
} torture_result_t;

/* torture runs |fn| plain, then once per allocation with that one failing. A failed allocation
 * must make the scenario fail (return 0) and leave no memory behind. */
static unsigned long g_failing; /* the allocation made to fail in the current run, for messages */

static torture_result_t torture(const char *what, scenario_fn fn, const void *arg)
{
    torture_result_t r = {0, 0};
    alloc_fail_nth(0);
    assert_int_equal(fn(arg), 1); /* the scenario works when memory does */
    r.allocations = alloc_calls();
    for (unsigned long n = 1; n <= r.allocations; n++) {
        size_t before = in_use();
        g_failing = n;
        alloc_fail_nth(n);
        int ok = fn(arg);
        int failed = alloc_failed();
        alloc_fail_nth(0);
        if (failed) {
            r.failures++;
            if (ok)
                fail_msg("%s: allocation %lu of %lu failed and the scenario still succeeded", what,
                         n, r.allocations);
        }
        if (in_use() != before)
            fail_msg("%s: allocation %lu of %lu failed and %zu bytes stayed allocated", what, n,
                     r.allocations, in_use() - before);
    }
    return r;
}

/* ---- requests: framing, inflation, every decoder, the name rules ------------------------- */

typedef struct {
    const config_t *cfg;
    uint8_t *data;
    size_t len;
    int allowed; /* the verdict with no failure */
} request_t;

/* inspect_scenario: 1 for the verdict it gives with memory (allowed or refused), 0 when an
 * allocation failure turned an allowed request into a refusal. Never 1 for an allowed verdict
 * after a failure: that would be a request judged on half its data. */
static int inspect_scenario(const void *arg)
{
    const request_t *rq = arg;
    frame_t f;
    frame_error_t err;
    if (frame_parse_as(rq->data, rq->len, PROTO_NONE, rq->cfg->pyro.protocols,
                       rq->cfg->pyro.max_message_bytes, &f, &err) != FRAME_OK)
        return 0;
    inspect_t in;
    inspect_init(&in);
    inspect_verdict_t v = inspect_request(rq->cfg, &f, &in);
    int failed = alloc_failed();
    if (failed && v == INSPECT_ALLOW)
        fail_msg("an allocation failed and the request was still allowed");
    if (failed)
        assert_non_null(in.reason); /* a refusal says why */
    inspect_cleanup(&in);
    return failed ? 0 : (v == INSPECT_ALLOW) == rq->allowed;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    static uint8_t buf[1 << 20];
    *len = fread(buf, 1, sizeof(buf), fp);
    fclose(fp);
    uint8_t *copy = malloc(*len ? *len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, *len);
    return copy;
}

typedef struct {
    const config_t *cfg;
    unsigned long requests, allocations, failures;
} request_tally_t;

/* torture_request runs the torture over one captured client message, of any protocol. */
static void torture_request(const char *path, const char *ser, void *arg)
{
    request_tally_t *t = arg;
    (void)ser;
    request_t rq = {t->cfg, NULL, 0, 0};
    rq.data = read_file(path, &rq.len);
    /* The verdict with memory, to compare against. */
    frame_t f;
    frame_error_t err;
    if (frame_parse_as(rq.data, rq.len, PROTO_NONE, t->cfg->pyro.protocols,
                       t->cfg->pyro.max_message_bytes, &f, &err) == FRAME_OK) {
        inspect_t in;
        inspect_init(&in);
        rq.allowed = inspect_request(t->cfg, &f, &in) == INSPECT_ALLOW;
        inspect_cleanup(&in);
        torture_result_t r = torture(path, inspect_scenario, &rq);
        t->requests++;
        t->allocations += r.allocations;
        t->failures += r.failures;
    }
    free(rq.data);
}

static void test_every_captured_request_fails_closed_when_any_allocation_fails(void **state)
{
    config_t cfg;
    config_init(&cfg);
    cfg.pyro.protocols = FRAME_PROTO_BIT(PROTO_PYRO4) | FRAME_PROTO_BIT(PROTO_PYRO5);
    request_tally_t t = {&cfg, 0, 0, 0};
    for_each_vector("pyro4", "_c2s_", torture_request, &t);
    for_each_vector("pyro5", "_c2s_", torture_request, &t);
    unsigned long requests = t.requests, allocations = t.allocations, failures = t.failures;
    print_message("requests: %lu, allocations failed one at a time: %lu (%lu runs failed)\n",
                  requests, allocations, failures);
    assert_true(requests > 100);  /* the captured vectors were found */
    assert_true(allocations > 0); /* and they allocate: the torture is not empty */
    assert_int_equal(failures, allocations);
    config_free(&cfg);
}

/* ---- configurations and the policy's patterns -------------------------------------------- */

typedef struct {
    const char *name;
    uint8_t *data;
    size_t len;
} yaml_t;

static int config_scenario(const void *arg)
{
    const yaml_t *y = arg;
    config_t cfg;
    config_errors_t errs;
    memset(&errs, 0, sizeof(errs));
    int ok = config_load_buffer(y->name, "/etc/pyroguard", y->data, y->len, &cfg, &errs);
    if (!ok && errs.n + errs.dropped == 0)
        fail_msg("%s: allocation %lu failed and the load failed without saying why", y->name,
                 g_failing);
    config_errors_free(&errs);
    config_free(&cfg);
    return ok;
}

static void
test_every_shipped_configuration_fails_to_load_cleanly_when_any_allocation_fails(void **state)
{
    static const char *const kFiles[] = {"pyroguard.yaml", "examples/read-only.yaml",
                                         "examples/name-server.yaml", "examples/spiffe-mesh.yaml"};
    unsigned long allocations = 0;
    for (size_t i = 0; i < sizeof(kFiles) / sizeof(kFiles[0]); i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/../config/%s", TEST_DATA_DIR, kFiles[i]);
        yaml_t y = {kFiles[i], NULL, 0};
        y.data = read_file(path, &y.len);
        torture_result_t r = torture(kFiles[i], config_scenario, &y);
        assert_int_equal(r.failures, r.allocations);
        allocations += r.allocations;
        free(y.data);
    }
    print_message("configurations: %zu, allocations failed one at a time: %lu\n",
                  sizeof(kFiles) / sizeof(kFiles[0]), allocations);
    assert_true(allocations > 20);
}

typedef struct {
    char kind; /* 'g' glob, 'i' ip, 'h' hex */
    const char *text;
} pattern_case_t;

static int pattern_scenario(const void *arg)
{
    const pattern_case_t *pc = arg;
    pattern_t p;
    char err[256] = "";
    int ok = pc->kind == 'g'   ? pattern_compile_glob(&p, pc->text, 0, err, sizeof(err))
             : pc->kind == 'i' ? pattern_compile_ip(&p, pc->text, err, sizeof(err))
                               : pattern_compile_hex(&p, pc->text, 0, err, sizeof(err));
    if (!ok) {
        assert_true(err[0] != '\0'); /* a failed compile says why */
        return 0;
    }
    pattern_free(&p);
    return 1;
}

static void
test_every_policy_pattern_kind_fails_to_compile_cleanly_when_any_allocation_fails(void **state)
{
    static const pattern_case_t kCases[] = {
        {'g', "spiffe://prod.example/ns/*/sa/**"},
        {'g', "billing-*"},
        {'g', "exact"},
        {'i', "10.0.0.0/8"},
        {'i', "fd00::/8"},
        {'i', "192.168.*.7"},
        {'h', "0A:1B:2C"},
    };
    unsigned long allocations = 0;
    for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
        torture_result_t r = torture(kCases[i].text, pattern_scenario, &kCases[i]);
        assert_int_equal(r.failures, r.allocations);
        allocations += r.allocations;
    }
    assert_true(allocations > 0);
}

/* ---- a client certificate's identity, and the rule it gets ------------------------------ */

typedef struct {
    X509 *cert;
    const config_t *cfg;
    int rule; /* the rule it gets with memory */
} identity_case_t;

static int identity_scenario(const void *arg)
{
    const identity_case_t *ic = arg;
    identity_t id;
    char err[256] = "";
    if (!identity_from_x509(ic->cert, &id, err, sizeof(err))) {
        assert_true(err[0] != '\0'); /* refused, and the reason is said */
        identity_free(&id);
        return 0;
    }
    /* Read whole or not at all: with every value there, the rule is the one it gets with
     * memory (a policy judged on part of an identity could match a broader, later rule). */
    assert_int_equal(policy_match_client(ic->cfg, &id), ic->rule);
    identity_free(&id);
    return 1;
}

static void test_a_client_identity_is_read_whole_or_refused_when_any_allocation_fails(void **state)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/../config/examples/spiffe-mesh.yaml", TEST_DATA_DIR);
    yaml_t y = {"spiffe-mesh.yaml", NULL, 0};
    y.data = read_file(path, &y.len);
    config_t cfg;
    config_errors_t errs;
    memset(&errs, 0, sizeof(errs));
    assert_true(config_load_buffer(y.name, "/etc/pyroguard", y.data, y.len, &cfg, &errs));
    config_errors_free(&errs);

    /* Enough names (40 DNS SANs of 60 bytes) that the value pool grows several times. */
    cert_t c;
    cert_begin(&c, "0A1B2C3D");
    cert_name(&c, "CN", "billing-client");
    cert_name(&c, "O", "Example Org");
    cert_name(&c, "OU", "billing");
    char dns[64];
    for (int i = 0; i < 40; i++) {
        snprintf(dns, sizeof(dns), "replica-%02d.billing.eu-west.internal.example.org.svc", i);
        cert_san(&c, GEN_DNS, dns);
    }
    cert_san(&c, GEN_URI, "spiffe://example.org/ns/billing/client");
    cert_ip(&c, "10.1.2.3");
    identity_case_t ic = {cert_end(&c), &cfg, 0};

    identity_t id;
    char err[256];
    assert_true(identity_from_x509(ic.cert, &id, err, sizeof(err)));
    ic.rule = policy_match_client(&cfg, &id);
    identity_free(&id);
    assert_true(ic.rule != POLICY_NO_RULE); /* the billing rule: the case is not vacuous */

    torture_result_t r = torture("identity", identity_scenario, &ic);
    print_message("identity: allocations failed one at a time: %lu\n", r.allocations);
    assert_true(r.allocations >= 3); /* subject, issuer, the pool (grown) */
    assert_int_equal(r.failures, r.allocations);
    X509_free(ic.cert);
    config_free(&cfg);
    free(y.data);
}

/* ---- metrics: counting under many rule names, and the scrape ---------------------------- */

#define METRIC_RULES    150 /* rule names: one interned entry each, and rows to sort at render */
#define METRIC_REQUESTS 600

/* by_rule_total sums every pyroguard_requests_by_rule_total sample of a scrape. */
static uint64_t by_rule_total(const uint8_t *text, size_t len)
{
    static const char kName[] = "pyroguard_requests_by_rule_total{";
    uint64_t sum = 0;
    const char *p = (const char *)text, *end = p + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        if ((size_t)(eol - p) > sizeof(kName) - 1 && memcmp(p, kName, sizeof(kName) - 1) == 0) {
            const char *sp = eol;
            while (sp > p && sp[-1] != ' ')
                sp--;
            sum += strtoull(sp, NULL, 10);
        }
        p = eol + 1;
    }
    return sum;
}

/* metrics_scenario: a shard counts requests under many rule names, then is scraped. A name that
 * cannot be interned is counted under the "other" row (metrics.h), so no request may go
 * uncounted; a scrape that cannot be built fails as a whole. Returns 0 when an allocation
 * failed (and it was handled so), 1 otherwise. */
static int metrics_scenario(const void *arg)
{
    (void)arg;
    metrics_shard_t *s = metrics_shard_new();
    if (s == NULL)
        return 0;
    char rule[32];
    for (int i = 0; i < METRIC_REQUESTS; i++) {
        snprintf(rule, sizeof(rule), "rule-%03d", i % METRIC_RULES);
        metrics_request(s, i % 3 != 0, i % 3 != 0 ? NULL : "not_allowed", rule);
    }
    CBB out;
    assert_true(CBB_init(&out, 1 << 16));
    metrics_process_t p;
    memset(&p, 0, sizeof(p));
    metrics_shard_t *const shards[] = {s};
    int rendered = metrics_render(shards, 1, &p, &out);
    if (rendered)
        assert_int_equal(by_rule_total(CBB_data(&out), CBB_len(&out)), METRIC_REQUESTS);
    CBB_cleanup(&out);
    metrics_shard_free(s);
    return rendered && !alloc_failed();
}

static void test_metrics_lose_no_count_when_any_allocation_fails(void **state)
{
    torture_result_t r = torture("metrics", metrics_scenario, NULL);
    print_message("metrics: allocations failed one at a time: %lu\n", r.allocations);
    assert_true(r.allocations > METRIC_RULES); /* the shard, every name, the rows */
    assert_int_equal(r.failures, r.allocations);
}

#define NO_TCACHE "glibc.malloc.tcache_count=0"

int main(int argc, char **argv)
{
    (void)argc;
    if (!UNDER_ASAN) {
        const char *t = getenv("GLIBC_TUNABLES");
        if (t == NULL || strstr(t, NO_TCACHE) == NULL) {
            /* Tunables are read at start-up only: run again with the cache off. */
            setenv("GLIBC_TUNABLES", NO_TCACHE, 1);
            execv("/proc/self/exe", argv);
            fprintf(stderr, "cannot re-run with %s: %s\n", NO_TCACHE, strerror(errno));
            return 1;
        }
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_captured_request_fails_closed_when_any_allocation_fails),
        cmocka_unit_test(
            test_every_shipped_configuration_fails_to_load_cleanly_when_any_allocation_fails),
        cmocka_unit_test(
            test_every_policy_pattern_kind_fails_to_compile_cleanly_when_any_allocation_fails),
        cmocka_unit_test(test_a_client_identity_is_read_whole_or_refused_when_any_allocation_fails),
        cmocka_unit_test(test_metrics_lose_no_count_when_any_allocation_fails),
    };
    return cmocka_run_group_tests(tests, testcert_make_key, testcert_free_key);
}
