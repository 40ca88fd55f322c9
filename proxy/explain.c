#include "explain.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "call.h"
#include "config.h"
#include "generation.h"
#include "identity.h"
#include "log.h"
#include "policy.h"
#include "tls.h"

static const char kExplainUsage[] =
    "usage: pyroguard explain -c FILE (--cert CLIENT.pem | --listener NAME) [--object OBJ]\n"
    "                         [--method NAME [--arg STR] | --get NAME | --set NAME] [--json]\n"
    "  --cert CLIENT.pem  a client certificate, judged by the clients: rules (server mode)\n"
    "  --listener NAME    a client-mode listener, judged by its egress rule (no certificate)\n";

int explain_parse_args(int argc, char **argv, explain_args_t *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        char kind = 0;
        if (strcmp(a, "--json") == 0) {
            out->json = 1;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "pyroguard explain: %s needs a value\n%s", a, kExplainUsage);
            return 0;
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0)
            out->config = v;
        else if (strcmp(a, "--cert") == 0)
            out->cert = v;
        else if (strcmp(a, "--listener") == 0)
            out->listener = v;
        else if (strcmp(a, "--object") == 0)
            out->object = v;
        else if (strcmp(a, "--arg") == 0)
            out->arg = v;
        else if (strcmp(a, "--method") == 0)
            kind = 'm';
        else if (strcmp(a, "--get") == 0)
            kind = 'g';
        else if (strcmp(a, "--set") == 0)
            kind = 's';
        else {
            fprintf(stderr, "pyroguard explain: unknown option '%s'\n%s", a, kExplainUsage);
            return 0;
        }
        if (kind) {
            if (out->kind) {
                fprintf(stderr, "pyroguard explain: give one of --method, --get, --set\n%s",
                        kExplainUsage);
                return 0;
            }
            out->kind = kind;
            out->name = v;
        }
        i++;
    }
    if (out->config == NULL) {
        fprintf(stderr, "pyroguard explain: -c FILE is required\n%s", kExplainUsage);
        return 0;
    }
    if (out->cert != NULL && out->listener != NULL) {
        fprintf(stderr,
                "pyroguard explain: give --cert or --listener, not both: --cert judges a client "
                "certificate by the clients: rules of server-mode listeners, --listener a "
                "client-mode listener's egress rule\n%s",
                kExplainUsage);
        return 0;
    }
    if (out->cert == NULL && out->listener == NULL) {
        fprintf(stderr,
                "pyroguard explain: --cert CLIENT.pem (server mode: the clients: rules) or "
                "--listener NAME (client mode: the listener's egress rule) is required\n%s",
                kExplainUsage);
        return 0;
    }
    if (out->arg != NULL && out->kind != 'm') {
        fprintf(stderr, "pyroguard explain: --arg goes with --method\n%s", kExplainUsage);
        return 0;
    }
    if (out->name != NULL && out->object == NULL) {
        fprintf(stderr, "pyroguard explain: --%s needs --object\n%s",
                out->kind == 'm'   ? "method"
                : out->kind == 'g' ? "get"
                                   : "set",
                kExplainUsage);
        return 0;
    }
    return 1;
}

/* What explain found, printed at the end in one of two forms. With --listener, |lst| is the
 * client-mode listener and the certificate fields stay empty. */
typedef struct {
    const explain_args_t *args;
    const config_t *cfg;
    const config_listener_t *lst;
    size_t lst_index;
    identity_t id;
    int id_ok;
    char id_err[128];
    const char *handshake; /* "accepted" or a tls_failure_reason code */
    char handshake_detail[200];
    int rule;
    int allowed;
    const char *reason;
    char detail[320];
    char entry[64];
} explanation_t;

/* load_chain reads the leaf and any further certificates of a PEM file. */
static X509 *load_chain(const char *path, STACK_OF(X509) * *chain)
{
    X509 *leaf = NULL, *x;
    BIO *bio = BIO_new_file(path, "rb");
    *chain = sk_X509_new_null();
    if (bio == NULL || *chain == NULL)
        goto free_bio;
    leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    while (leaf != NULL && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(*chain, x)) {
            X509_free(x);
            break;
        }
    }
    ERR_clear_error();
free_bio:
    BIO_free(bio);
    return leaf;
}

/* verify_like_handshake verifies |leaf| as the handshake would: the client CA store with its
 * CRLs, the SSL client purpose, then the deny lists. */
static void verify_like_handshake(explanation_t *e, SSL_CTX *ctx, X509 *leaf,
                                  STACK_OF(X509) * chain)
{
    X509_STORE_CTX *sctx = X509_STORE_CTX_new();
    e->handshake = "tls_error";
    if (sctx == NULL || !X509_STORE_CTX_init(sctx, SSL_CTX_get_cert_store(ctx), leaf, chain) ||
        !X509_STORE_CTX_set_default(sctx, "ssl_client")) {
        snprintf(e->handshake_detail, sizeof(e->handshake_detail), "cannot set up verification");
        goto free_ctx;
    }
    if (X509_verify_cert(sctx) != 1) {
        int err = X509_STORE_CTX_get_error(sctx);
        e->handshake = tls_verify_error_reason(err);
        snprintf(e->handshake_detail, sizeof(e->handshake_detail), "%s",
                 X509_verify_cert_error_string(err));
        goto free_ctx;
    }
    STACK_OF(X509) *verified = X509_STORE_CTX_get0_chain(sctx);
    for (size_t i = 0; i < sk_X509_num(verified); i++) {
        if (tls_cert_denied(e->cfg, sk_X509_value(verified, i), (int)i, e->handshake_detail,
                            sizeof(e->handshake_detail))) {
            e->handshake = "certificate_denied";
            goto free_ctx;
        }
    }
    e->handshake = "accepted";
free_ctx:
    X509_STORE_CTX_free(sctx);
    ERR_clear_error();
}

/* judge_certificate refuses, as the handshake and CONNECT would, a certificate the handshake
 * does not accept, that carries no usable identity, or that matches no rule. Returns 1 when
 * the request itself is still to be judged. */
static int judge_certificate(explanation_t *e)
{
    policy_decision_t d;

    if (strcmp(e->handshake, "accepted") != 0) {
        e->reason = e->handshake;
        snprintf(e->detail, sizeof(e->detail), "the TLS handshake would fail: %s",
                 e->handshake_detail);
        return 0;
    }
    if (!e->id_ok) {
        e->reason = "identity_invalid";
        snprintf(e->detail, sizeof(e->detail),
                 "pyroguard: the client certificate cannot be used: %s", e->id_err);
        return 0;
    }
    if (e->rule == POLICY_NO_RULE) {
        policy_refuse_unmatched(&e->id, &d);
        e->reason = d.reason;
        snprintf(e->detail, sizeof(e->detail), "%s", d.detail);
        return 0;
    }
    return 1;
}

/* judge_request runs the request through the name rules and rule |e->rule|, as live traffic
 * goes (conn.c policy_judge). */
static void judge_request(explanation_t *e)
{
    const explain_args_t *a = e->args;
    policy_decision_t d;
    call_refusal_t r;
    value_t obj = {.type = VAL_STR}, name = {.type = VAL_STR}, arg = {.type = VAL_STR};
    value_t args = {.type = VAL_TUPLE};
    value_t *arg_items[1] = {&arg};
    call_name_t nm;
    call_t call;

    memset(&call, 0, sizeof(call));
    memset(&nm, 0, sizeof(nm));
    if (a->object != NULL) {
        obj.u.str.data = (const uint8_t *)a->object;
        obj.u.str.len = strlen(a->object);
        call.object = &obj;
    }
    call.kind = a->name != NULL ? CALL_INVOKE : CALL_CONNECT;
    if (a->name != NULL) {
        name.u.str.data = (const uint8_t *)a->name;
        name.u.str.len = strlen(a->name);
        if (!call_check_name(&name, a->kind == 'm' ? "method" : "attribute", &r)) {
            e->reason = r.reason;
            snprintf(e->detail, sizeof(e->detail), "%s", r.detail);
            return;
        }
        nm.kind = a->kind == 'm' ? CALL_NAME_METHOD : CALL_NAME_ATTRIBUTE;
        nm.name = &name;
        if (a->kind == 'm') {
            /* The arguments are only ever read for Pyro.Daemon.get_metadata's object id. */
            if (a->arg != NULL) {
                arg.u.str.data = (const uint8_t *)a->arg;
                arg.u.str.len = strlen(a->arg);
                args.u.seq.items = arg_items;
                args.u.seq.n = 1;
            }
            nm.args = &args;
        }
        call.method = &name;
        call.property = a->kind == 'm' ? 0 : a->kind;
        call.names = &nm;
        call.n_names = 1;
    }
    e->allowed = policy_decide(e->cfg, e->rule, &call, 0, &d);
    e->reason = d.reason;
    snprintf(e->detail, sizeof(e->detail), "%s", d.detail);
    policy_entry_text(e->cfg, e->rule, &d, e->entry, sizeof(e->entry));
}

static void print_field(const char *key, const char *value)
{
    printf("%-12s %s\n", key, value);
}

/* describe_request writes the request in words ("method echo on object thing"). */
static void describe_request(const explain_args_t *a, char *out, size_t out_len)
{
    if (a->name != NULL && a->arg != NULL)
        snprintf(out, out_len, "method %s('%s') on object %s", a->name, a->arg, a->object);
    else if (a->name != NULL)
        snprintf(out, out_len, "%s %s on object %s",
                 a->kind == 'm'   ? "method"
                 : a->kind == 'g' ? "read property"
                                  : "write property",
                 a->name, a->object);
    else if (a->object != NULL)
        snprintf(out, out_len, "CONNECT with metadata for object %s", a->object);
    else
        snprintf(out, out_len, "CONNECT");
}

static void print_certificate_text(const explanation_t *e)
{
    char line[512];

    print_field("certificate", e->args->cert);
    if (e->id_ok) {
        print_field("subject", e->id.subject);
        print_field("issuer", e->id.issuer);
        for (size_t f = 0; f < ID_FIELDS; f++) {
            for (size_t i = 0; i < e->id.n_values; i++) {
                if (e->id.field_of[i] == f)
                    print_field(identity_field_name((identity_field_t)f), e->id.values[i]);
            }
        }
    } else {
        print_field("identity", e->id_err);
    }
    if (strcmp(e->handshake, "accepted") == 0)
        print_field("handshake", "accepted (tls.client_ca, tls.crl and the deny lists)");
    else {
        snprintf(line, sizeof(line), "refused: %s (%s)", e->handshake, e->handshake_detail);
        print_field("handshake", line);
    }
    if (e->rule != POLICY_NO_RULE) {
        const config_client_t *c = &e->cfg->clients[e->rule];
        snprintf(line, sizeof(line), "%s (clients[%d], %s:%d:%d)", c->name, e->rule, e->cfg->file,
                 c->mark.line, c->mark.col);
        print_field("rule", line);
    } else {
        print_field("rule", e->id_ok ? "none matches" : "-");
    }
}

static void print_listener_text(const explanation_t *e)
{
    const config_client_t *c = &e->cfg->clients[e->rule];
    char line[512];

    snprintf(line, sizeof(line), "%s (listeners[%zu], %s:%d:%d)", e->lst->name, e->lst_index,
             e->cfg->file, e->lst->mark.line, e->lst->mark.col);
    print_field("listener", line);
    print_field("mode", "client");
    print_field("upstream", e->lst->upstream.text);
    snprintf(line, sizeof(line), "%s (listeners[%zu].egress, %s:%d:%d)", c->name, e->lst_index,
             e->cfg->file, c->mark.line, c->mark.col);
    print_field("rule", line);
}

static void print_text(const explanation_t *e)
{
    char line[512];

    if (e->lst != NULL)
        print_listener_text(e);
    else
        print_certificate_text(e);
    describe_request(e->args, line, sizeof(line));
    print_field("request", line);
    print_field("verdict", e->allowed ? "allowed" : "refused");
    print_field("reason", e->reason);
    if (e->detail[0] != '\0')
        print_field("detail", e->detail);
    if (e->entry[0] != '\0')
        print_field("decided by", e->entry);
}

static void print_certificate_json(log_line_t *l, const explanation_t *e)
{
    const char *values[IDENTITY_MAX_VALUES];

    log_begin_record(l, "certificate", e->args->cert);
    if (e->id_ok) {
        log_str(l, "subject", e->id.subject);
        log_str(l, "issuer", e->id.issuer);
        for (size_t f = 0; f < ID_FIELDS; f++) {
            size_t n = 0;
            for (size_t i = 0; i < e->id.n_values; i++) {
                if (e->id.field_of[i] == f)
                    values[n++] = e->id.values[i];
            }
            if (f == ID_SERIAL || f == ID_SHA256)
                log_str(l, identity_field_name((identity_field_t)f), n ? values[0] : "");
            else
                log_strlist(l, identity_field_name((identity_field_t)f), values, n);
        }
    } else {
        log_str(l, "identity_error", e->id_err);
    }
    log_str(l, "handshake", e->handshake);
    if (strcmp(e->handshake, "accepted") != 0)
        log_str(l, "handshake_detail", e->handshake_detail);
    if (e->rule != POLICY_NO_RULE) {
        log_str(l, "rule", e->cfg->clients[e->rule].name);
        log_int(l, "rule_index", e->rule);
    }
}

static void print_json(const explanation_t *e)
{
    const explain_args_t *a = e->args;
    log_line_t l;

    if (e->lst != NULL) {
        log_begin_record(&l, "listener", e->lst->name);
        log_str(&l, "mode", "client");
        log_str(&l, "upstream", e->lst->upstream.text);
        log_str(&l, "rule", e->cfg->clients[e->rule].name);
    } else {
        print_certificate_json(&l, e);
    }
    if (a->object != NULL)
        log_str(&l, "object", a->object);
    if (a->name != NULL)
        log_str(&l, a->kind == 'm' ? "method" : a->kind == 'g' ? "get" : "set", a->name);
    if (a->arg != NULL)
        log_str(&l, "arg", a->arg);
    log_str(&l, "verdict", e->allowed ? "allowed" : "refused");
    log_str(&l, "reason", e->reason);
    log_str(&l, "detail", e->detail);
    if (e->entry[0] != '\0')
        log_str(&l, "entry", e->entry);
    log_end_fd(&l, 1);
}

static int print_explanation(const explanation_t *e)
{
    fflush(stdout);
    if (e->args->json)
        print_json(e);
    else
        print_text(e);
    return e->allowed ? EXPLAIN_ALLOWED : EXPLAIN_REFUSED;
}

/* explain_certificate judges --cert against the clients: rules, with |ctx| the server-mode
 * TLS context (NULL when no listener is in server mode: a usage error). */
static int explain_certificate(explanation_t *e, SSL_CTX *ctx)
{
    const explain_args_t *args = e->args;
    STACK_OF(X509) *chain = NULL;
    X509 *leaf = NULL;
    int rc = EXPLAIN_ERROR;

    if (ctx == NULL) {
        fprintf(stderr,
                "pyroguard explain: %s has no server-mode listener, so no client certificate is "
                "judged there; use --listener NAME for a client-mode listener's egress rule\n",
                args->config);
        return EXPLAIN_ERROR;
    }
    leaf = load_chain(args->cert, &chain);
    if (leaf == NULL) {
        fprintf(stderr, "pyroguard explain: cannot read a PEM certificate from '%s'\n", args->cert);
        goto free_cert;
    }
    e->id_ok = identity_from_x509(leaf, &e->id, e->id_err, sizeof(e->id_err));
    verify_like_handshake(e, ctx, leaf, chain);
    if (e->id_ok)
        e->rule = policy_match_client(e->cfg, &e->id);
    if (judge_certificate(e))
        judge_request(e);
    rc = print_explanation(e);
    identity_free(&e->id);
free_cert:
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

/* explain_listener judges the request by the egress rule of client-mode listener --listener,
 * as that listener judges a local client's message (conn.c conn_rule: no certificate). */
static int explain_listener(explanation_t *e)
{
    const explain_args_t *args = e->args;
    const config_t *cfg = e->cfg;

    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (strcmp(cfg->listeners[i].name, args->listener) == 0) {
            e->lst = &cfg->listeners[i];
            e->lst_index = i;
            break;
        }
    }
    if (e->lst == NULL) {
        fprintf(stderr, "pyroguard explain: %s has no listener named '%s'\n", args->config,
                args->listener);
        return EXPLAIN_ERROR;
    }
    if (e->lst->mode != LISTENER_CLIENT) {
        fprintf(stderr,
                "pyroguard explain: listener '%s' is in server mode: its policy is the clients: "
                "rules, chosen by the client certificate; use --cert CLIENT.pem instead of "
                "--listener\n",
                args->listener);
        return EXPLAIN_ERROR;
    }
    e->rule = e->lst->egress_rule;
    judge_request(e);
    return print_explanation(e);
}

int explain_run(const explain_args_t *args)
{
    config_errors_t errs = {0};
    explanation_t e;
    generation_t *g;
    int rc = EXPLAIN_ERROR;

    memset(&e, 0, sizeof(e));
    e.args = args;
    e.rule = POLICY_NO_RULE;
    /* Loaded as run and check load it: every TLS context built, so a configuration explain
     * accepts is one pyroguard would start with. */
    g = generation_load(args->config, 1, &errs);
    if (g == NULL) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.lines[i]);
        if (errs.dropped)
            fprintf(stderr, "(%zu more errors not shown)\n", errs.dropped);
        goto free_errors;
    }
    e.cfg = &g->cfg;
    if (args->listener != NULL)
        rc = explain_listener(&e);
    else
        rc = explain_certificate(&e, g->ssl_ctx);
    generation_unref(g);
free_errors:
    config_errors_free(&errs);
    return rc;
}
