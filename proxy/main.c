/* pyroguard: a mutual-TLS sidecar that inspects every Pyro message before a legacy Pyro
 * daemon sees it. This file is the command line only (DESIGN.md "Command line"). */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "config.h"
#include "log.h"
#include "server.h"
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
    "  version         print the version and the libraries it was built with\n"
    "  --help          this text\n"
    "\n"
    "exit codes: 0 success, 1 runtime failure, 2 usage or configuration error\n";

static void print_errors(const config_errors_t *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        fprintf(stderr, "%s\n", errs->lines[i]);
    if (errs->dropped)
        fprintf(stderr, "(%zu more errors not shown)\n", errs->dropped);
}

/* load_all reads the configuration and builds the TLS context; both must be valid. */
static int load_all(const char *path, config_t *cfg, SSL_CTX **out_ctx)
{
    config_errors_t errs = {0};
    *out_ctx = NULL;
    if (!config_load(path, cfg, &errs)) {
        print_errors(&errs);
        config_errors_free(&errs);
        return 0;
    }
    *out_ctx = tls_ctx_new(cfg, &errs);
    if (*out_ctx == NULL) {
        print_errors(&errs);
        config_errors_free(&errs);
        return 0;
    }
    config_errors_free(&errs);
    return 1;
}

static int cmd_check(const char *path)
{
    config_t cfg;
    SSL_CTX *ctx;
    int ok = load_all(path, &cfg, &ctx);
    if (ok)
        printf("%s: configuration OK (%zu listener%s)\n", path, cfg.n_listeners,
               cfg.n_listeners == 1 ? "" : "s");
    SSL_CTX_free(ctx);
    config_free(&cfg);
    return ok ? EXIT_OK : EXIT_USAGE;
}

static int cmd_run(const char *path)
{
    config_t cfg;
    SSL_CTX *ctx;
    server_t srv;
    uv_loop_t loop;
    char version[256];
    int rc = EXIT_OK;

    if (!load_all(path, &cfg, &ctx)) {
        config_free(&cfg);
        return EXIT_USAGE;
    }
    log_set_level(cfg.log.level);
    /* A peer closing while we write must be an error return, not a fatal signal. */
    signal(SIGPIPE, SIG_IGN);
    if (uv_loop_init(&loop) != 0) {
        log_msg(LOG_ERROR, "startup_failed", "cannot create the event loop");
        rc = EXIT_RUNTIME;
        goto free_config;
    }
    version_string(version, sizeof(version));
    log_line_t l;
    log_begin(&l, LOG_INFO, "start");
    log_str(&l, "version", version);
    log_str(&l, "config", path);
    log_end(&l);
    if (!server_start(&srv, &loop, &cfg, ctx)) {
        rc = EXIT_RUNTIME;
        server_stop(&srv, "startup_failed");
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    server_cleanup(&srv);
    uv_loop_close(&loop);
    log_msg(LOG_INFO, "stopped", rc == EXIT_OK ? "clean exit" : "startup failed");
free_config:
    SSL_CTX_free(ctx);
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
