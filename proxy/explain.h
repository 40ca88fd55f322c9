/* explain: `pyroguard explain` — test a policy before deploying it. Reads a client
 * certificate, says whether the TLS handshake would accept it (client_ca, CRL, deny lists),
 * which rule its identity matches, and the verdict on one request (a CONNECT, optionally with
 * a metadata object, or a method call, property read or property write on an object), with
 * the reason and the entry that decided. Nothing is connected to; no private key is needed.
 *
 * The request goes through the same name rules (call.h) and policy (policy.h) as live
 * traffic. */
#ifndef PYROGUARD_EXPLAIN_H
#define PYROGUARD_EXPLAIN_H

typedef struct {
    const char *config;
    const char *cert;
    const char *object; /* NULL: a CONNECT without a metadata object */
    const char *name;   /* method, or property for get/set; NULL: a CONNECT */
    char kind;          /* 'm' method, 'g' property read, 's' property write */
    const char *arg;    /* a str first argument of the method (get_metadata's object id), or NULL */
    int json;
} explain_args_t;

/* Exit codes of explain_run: 0 allowed, 3 refused, 2 usage or configuration error. */
#define EXPLAIN_ALLOWED 0
#define EXPLAIN_REFUSED 3
#define EXPLAIN_ERROR   2

/* explain_parse_args reads `explain` options from argv[2..]; returns 0 with a message on
 * stderr when they are unusable. */
int explain_parse_args(int argc, char **argv, explain_args_t *out);

/* explain_run prints the explanation on stdout and returns the exit code. */
int explain_run(const explain_args_t *args);

#endif
