/* explain: `pyroguard explain` — test a policy before deploying it, in one of two forms.
 *
 * With --cert: reads a client certificate, says whether the TLS handshake of a server-mode
 * listener would accept it (client_ca, CRL, deny lists), which clients: rule its identity
 * matches, and the verdict on one request. No private key is needed.
 *
 * With --listener: names a client-mode listener, whose rule is its egress policy
 * ("egress:<listener>", no certificate involved), and gives the verdict on one request as the
 * listener would judge it before anything leaves the host.
 *
 * The request is a CONNECT (optionally with a metadata object), or a method call, property
 * read or property write on an object; the verdict comes with the reason and the entry that
 * decided. The configuration is loaded as `run` and `check` load it (every TLS context built),
 * nothing is connected to, and the request goes through the same name rules (call.h) and
 * policy (policy.h) as live traffic. */
#ifndef PYROGUARD_EXPLAIN_H
#define PYROGUARD_EXPLAIN_H

/* Borrowed pointers into argv: explain_args_t owns nothing. */
typedef struct {
    const char *config;
    const char *cert;     /* --cert: judged by the clients: rules; NULL with --listener */
    const char *listener; /* --listener: a client-mode listener's egress rule; NULL with --cert */
    const char *object;   /* NULL: a CONNECT without a metadata object */
    const char *name;     /* method, or property for get/set; NULL: a CONNECT */
    char kind;            /* 'm' method, 'g' property read, 's' property write */
    const char *arg; /* a str first argument of the method (get_metadata's object id), or NULL */
    int json;
} explain_args_t;

/* Exit codes of explain_run: 0 allowed, 3 refused, 2 usage or configuration error. */
#define EXPLAIN_ALLOWED 0
#define EXPLAIN_REFUSED 3
#define EXPLAIN_ERROR   2

/* explain_parse_args reads `explain` options from argv[2..]; returns 0 with a message on
 * stderr when they are unusable (exactly one of --cert and --listener must be given). */
int explain_parse_args(int argc, char **argv, explain_args_t *out);

/* explain_run prints the explanation on stdout and returns the exit code. A listener that
 * does not exist or is not in client mode (with --listener), or a configuration without a
 * server-mode listener (with --cert), is a usage error: a message on stderr, exit 2. */
int explain_run(const explain_args_t *args);

#endif
