/* handshake_bench: the cost of the server side of one full TLS 1.3 handshake with this
 * BoringSSL, in process, with no network and no event loop — the limit `make bench` measures
 * pyroguard's handshakes per second against.
 *
 *   handshake_bench SERVER.crt SERVER.key CA.crt CLIENT.crt CLIENT.key [SECONDS]
 *
 * A client and a server SSL object talk through a pair of memory BIOs. The server is set up as
 * pyroguard sets it up (TLS 1.3, client certificate required and verified against CA.crt, no
 * session resumption); only the time spent inside the server's SSL_do_handshake calls is
 * counted. Prints the handshakes per second of the server side and, for reference, of both sides
 * together. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* make_ctx builds a TLS 1.3 context with a certificate, its key and CA.crt to verify the peer. */
static SSL_CTX *make_ctx(int server, const char *crt, const char *key, const char *ca)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL)
        return NULL;
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        SSL_CTX_use_certificate_chain_file(ctx, crt) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
        goto free_ctx;
    SSL_CTX_set_verify(
        ctx, server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    return ctx;

free_ctx:
    SSL_CTX_free(ctx);
    return NULL;
}

/* one_handshake runs a whole handshake; |*server_s| accumulates the server's time. Returns 1 on
 * success. */
static int one_handshake(SSL_CTX *sctx, SSL_CTX *cctx, double *server_s)
{
    int ok = 0;
    SSL *server = SSL_new(sctx);
    SSL *client = SSL_new(cctx);
    BIO *s_bio = NULL, *c_bio = NULL;
    if (server == NULL || client == NULL || !BIO_new_bio_pair(&s_bio, 0, &c_bio, 0))
        goto free_ssl;
    SSL_set_bio(server, s_bio, s_bio);
    SSL_set_bio(client, c_bio, c_bio);
    SSL_set_accept_state(server);
    SSL_set_connect_state(client);
    if (!SSL_set1_host(client, "localhost"))
        goto free_ssl;
    for (int round = 0; round < 16; round++) {
        int c = SSL_do_handshake(client);
        if (c != 1 && SSL_get_error(client, c) != SSL_ERROR_WANT_READ)
            goto free_ssl;
        double t0 = now_s();
        int s = SSL_do_handshake(server);
        *server_s += now_s() - t0;
        if (s != 1 && SSL_get_error(server, s) != SSL_ERROR_WANT_READ)
            goto free_ssl;
        if (c == 1 && s == 1) {
            ok = 1;
            break;
        }
    }
free_ssl:
    SSL_free(client);
    SSL_free(server);
    return ok;
}

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: %s SERVER.crt SERVER.key CA.crt CLIENT.crt CLIENT.key [SECONDS]\n",
                argv[0]);
        return 2;
    }
    double seconds = 3.0;
    if (argc == 7) {
        char *end;
        seconds = strtod(argv[6], &end);
        if (*end != '\0' || seconds <= 0 || seconds > 600) {
            fprintf(stderr, "handshake_bench: SECONDS must be in (0, 600]\n");
            return 2;
        }
    }
    int rc = 1;
    SSL_CTX *sctx = make_ctx(1, argv[1], argv[2], argv[3]);
    SSL_CTX *cctx = make_ctx(0, argv[4], argv[5], argv[3]);
    if (sctx == NULL || cctx == NULL) {
        fprintf(stderr, "handshake_bench: cannot load the certificates\n");
        ERR_print_errors_fp(stderr);
        goto free_ctx;
    }
    double server_s = 0;
    long n = 0;
    double start = now_s();
    while (now_s() - start < seconds) {
        if (!one_handshake(sctx, cctx, &server_s)) {
            fprintf(stderr, "handshake_bench: a handshake failed\n");
            ERR_print_errors_fp(stderr);
            goto free_ctx;
        }
        n++;
    }
    double total_s = now_s() - start;
    printf("{\"handshakes\":%ld,\"server_per_s\":%.1f,\"both_sides_per_s\":%.1f,"
           "\"server_us\":%.1f}\n",
           n, (double)n / server_s, (double)n / total_s, server_s / (double)n * 1e6);
    rc = 0;
free_ctx:
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    return rc;
}
