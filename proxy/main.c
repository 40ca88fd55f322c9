/* pyroguard: a mutual-TLS sidecar that inspects every Pyro message before a legacy Pyro
 * daemon sees it. This file is the command line only (DESIGN.md "Command line"). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "alloc.h"
#include "call.h"
#include "config.h"
#include "generation.h"
#include "explain.h"
#include "frame.h"
#include "inspect.h"
#include "log.h"
#include "runtime.h"
#include "tls.h"
#include "version.h"

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

static const char kUsage[] =
    "usage: pyroguard <command> [options]\n"
    "\n"
    "commands:\n"
    "  run   -c FILE   serve: terminate mutual TLS, inspect every Pyro message, forward\n"
    "                  what is allowed to the backend; logs JSON lines on stderr\n"
    "  check -c FILE   validate the configuration, certificates, key, CA bundle and CRL;\n"
    "                  exit 0, or print every error as FILE:LINE:COL: PATH: REASON\n"
    "  inspect [-c FILE] FRAME...\n"
    "                  judge raw client-to-server Pyro message files as pyroguard would and\n"
    "                  print one JSON line each: verdict, reason, object id and every name\n"
    "                  the daemon would resolve (the -c FILE pyro: settings apply)\n"
    "  explain -c FILE (--cert CLIENT.pem | --listener NAME) [--object OBJ]\n"
    "          [--method NAME [--arg STR] | --get NAME | --set NAME] [--json]\n"
    "                  test a policy: with --cert, print the identity read from the\n"
    "                  certificate, whether the handshake would accept it and the rule it\n"
    "                  matches; with --listener, a client-mode listener's egress rule (no\n"
    "                  certificate); then the verdict on the request, with the reason and\n"
    "                  the deciding entry; exit 0 allowed, 3 refused\n"
    "  version         print the version and the libraries it was built with\n"
    "  --help          this text\n"
    "\n"
    "exit codes: 0 success, 1 runtime failure, 2 usage or configuration error,\n"
    "            3 refused (explain)\n";

static void print_errors(const config_errors_t *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        fprintf(stderr, "%s\n", errs->lines[i]);
    if (errs->dropped)
        fprintf(stderr, "(%zu more errors not shown)\n", errs->dropped);
}

/* cmd_check reads the configuration and builds every TLS context, as `run` would. */
static int cmd_check(const char *path)
{
    config_errors_t errs = {0};
    generation_t *g = generation_load(path, 1, &errs);
    if (g == NULL) {
        print_errors(&errs);
        config_errors_free(&errs);
        return EXIT_USAGE;
    }
    printf("%s: configuration OK (%zu listener%s)\n", path, g->cfg.n_listeners,
           g->cfg.n_listeners == 1 ? "" : "s");
    config_errors_free(&errs);
    generation_unref(g);
    return EXIT_OK;
}

static int cmd_run(const char *path)
{
    return runtime_run(path);
}

/* read_file reads a whole (bounded) frame file; returns NULL and sets errno-ish text. */
static uint8_t *read_file(const char *path, size_t max, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    uint8_t *data = pg_malloc(max + 1);
    size_t len = data ? fread(data, 1, max + 1, f) : 0;
    fclose(f);
    if (data == NULL || len > max) {
        free(data);
        return NULL;
    }
    *out_len = len;
    return data;
}

static const char *kind_name(call_name_kind_t k)
{
    switch (k) {
    case CALL_NAME_METHOD:
        return "method";
    case CALL_NAME_BATCH_METHOD:
        return "batch_method";
    case CALL_NAME_ATTRIBUTE:
        return "attribute";
    }
    return "method";
}

/* inspect_one prints the verdict on one frame file. Names are printed escaped (\xNN for
 * anything outside printable ASCII), which is the identity for every name that passes. */
static int inspect_one(const config_t *cfg, const char *path)
{
    log_line_t l;
    size_t len = 0;
    uint8_t *data = read_file(path, cfg->pyro.max_message_bytes + FRAME_MAX_HEADER_LEN + 1, &len);
    log_begin_record(&l, "file", path);
    if (data == NULL) {
        log_str(&l, "verdict", "error");
        log_str(&l, "detail", "cannot read the file (missing, unreadable or too large)");
        log_end_fd(&l, 1);
        return 0;
    }
    frame_t f;
    frame_error_t err;
    /* Judged as the first message of a connection: any protocol of pyro.protocols. */
    frame_status_t st = frame_parse_as(data, len, PROTO_NONE, cfg->pyro.protocols,
                                       cfg->pyro.max_message_bytes, &f, &err);
    if (st != FRAME_OK || f.total_len != len) {
        log_str(&l, "verdict", "refuse");
        log_str(&l, "reason", st == FRAME_ERROR ? frame_error_reason(err) : "not_one_frame");
        log_str(&l, "detail",
                st == FRAME_ERROR       ? "malformed Pyro message"
                : st == FRAME_NEED_MORE ? "the file ends inside the message"
                                        : "bytes follow the message");
        log_end_fd(&l, 1);
        free(data);
        return 1;
    }
    const char *ser = frame_serializer_name(f.serializer_id);
    inspect_t in;
    inspect_init(&in);
    inspect_verdict_t v;
    if (f.type != MSG_CONNECT && f.type != MSG_INVOKE && f.type != MSG_PING) {
        v = INSPECT_REFUSE;
        in.reason = "unexpected_message";
        snprintf(in.detail, sizeof(in.detail), "pyroguard: %s is not a client request",
                 frame_type_name(f.type));
    } else {
        v = inspect_request(cfg, &f, &in);
    }
    log_str(&l, "verdict", v == INSPECT_ALLOW ? "allow" : "refuse");
    if (v != INSPECT_ALLOW) {
        log_str(&l, "reason", in.reason);
        log_str(&l, "detail", in.detail);
    }
    log_str(&l, "protocol", frame_proto_name(f.proto));
    log_str(&l, "msg_type", frame_type_name(f.type));
    if (ser)
        log_str(&l, "serializer", ser);
    else
        log_uint(&l, "serializer", f.serializer_id);
    log_uint(&l, "flags", f.flags);
    log_uint(&l, "seq", f.seq);
    if (in.decoded) {
        char buf[512];
        if (in.call.object != NULL && in.call.object->type == VAL_STR) {
            call_render_str(in.call.object, buf, sizeof(buf));
            log_str(&l, "object", buf);
        }
        const char *names[64], *kinds[64];
        char storage[64][128];
        size_t n = in.call.n_names < 64 ? in.call.n_names : 64;
        for (size_t i = 0; i < n; i++) {
            call_render_str(in.call.names[i].name, storage[i], sizeof(storage[i]));
            names[i] = storage[i];
            kinds[i] = kind_name(in.call.names[i].kind);
        }
        log_strlist(&l, "names", names, n);
        log_strlist(&l, "kinds", kinds, n);
        if (in.call.n_names > n)
            log_uint(&l, "names_not_shown", in.call.n_names - n);
    }
    log_end_fd(&l, 1);
    inspect_cleanup(&in);
    free(data);
    return 1;
}

static int cmd_inspect(int argc, char **argv)
{
    config_t cfg;
    int first = 2, rc = EXIT_OK;
    if (argc > 3 && strcmp(argv[2], "-c") == 0) {
        config_errors_t errs = {0};
        if (!config_load(argv[3], &cfg, &errs)) {
            print_errors(&errs);
            config_errors_free(&errs);
            config_free(&cfg);
            return EXIT_USAGE;
        }
        config_errors_free(&errs);
        first = 4;
    } else {
        config_init(&cfg);
    }
    if (first >= argc) {
        fprintf(stderr, "pyroguard inspect: no frame files given\n\n%s", kUsage);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    fflush(stdout);
    for (int i = first; i < argc; i++) {
        if (!inspect_one(&cfg, argv[i]))
            rc = EXIT_RUNTIME;
    }
    config_free(&cfg);
    return rc;
}

/* config_arg finds "-c FILE" (or "--config FILE") after the command. */
static const char *config_arg(int argc, char **argv)
{
    if (argc == 4 && (strcmp(argv[2], "-c") == 0 || strcmp(argv[2], "--config") == 0))
        return argv[3];
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(kUsage, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(kUsage, stdout);
        return EXIT_OK;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        char version[256];
        version_string(version, sizeof(version));
        printf("%s\n", version);
        return EXIT_OK;
    }
    if (strcmp(cmd, "inspect") == 0)
        return cmd_inspect(argc, argv);
    if (strcmp(cmd, "explain") == 0) {
        explain_args_t args;
        if (!explain_parse_args(argc, argv, &args))
            return EXIT_USAGE;
        return explain_run(&args);
    }
    if (strcmp(cmd, "run") == 0 || strcmp(cmd, "check") == 0) {
        const char *path = config_arg(argc, argv);
        if (path == NULL) {
            fprintf(stderr, "pyroguard %s: missing -c FILE\n\n%s", cmd, kUsage);
            return EXIT_USAGE;
        }
        return strcmp(cmd, "run") == 0 ? cmd_run(path) : cmd_check(path);
    }
    fprintf(stderr, "pyroguard: unknown command '%s'\n\n%s", cmd, kUsage);
    return EXIT_USAGE;
}
