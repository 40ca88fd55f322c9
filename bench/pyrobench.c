/* pyrobench: a load generator that speaks Pyro4 (protocol 48, serpent) to pyroguard over mutual
 * TLS, or in plaintext straight to a Pyro4 daemon, and reports throughput and latency.
 *
 *   pyrobench --connect HOST:PORT [--tls --ca FILE --cert FILE --key FILE [--sni NAME] [--resume]]
 *             [--mode small|large|handshake|idle] [--conns N] [--threads T] [--duration SECONDS]
 *             [--warmup SECONDS] [--rate CALLS_PER_SECOND] [--payload-bytes B]
 *             [--object NAME] [--method NAME] [--json]
 *
 *   --connect HOST:PORT  a pyroguard listener or a Pyro4 daemon; IPv6 as [ADDRESS]:PORT
 *   --tls                TLS 1.3 only; the server certificate is verified against --ca and the
 *                        name --sni (default HOST; an IP address is matched against the IP SANs
 *                        and not sent as SNI); --cert/--key are presented as client certificate
 *   --resume             offer each connection slot the session ticket of its last handshake
 *   --mode               small (default), large, handshake or idle, see below
 *   --conns N            connections (handshake: connection slots), 1..100000, default 10
 *   --threads T          threads, each with its own epoll loop over its share of the
 *                        connections, 1..256, default 1, never more than N
 *   --duration SECONDS   measured time (idle: how long the connections are held), default 10
 *   --warmup SECONDS     time run first and not measured, default 1 (ignored by idle)
 *   --rate R             open loop: R calls (handshake: iterations) per second in total, spread
 *                        evenly over the connections; default: closed loop
 *   --payload-bytes B    length of the string argument, 0..64 MiB - 4 KiB; default 64 (a
 *                        115-byte serpent payload), large: 1048576
 *   --object, --method   the call made, OBJECT.METHOD('xx…x'); default thing.echo
 *   --json               one JSON object on stdout instead of the text report
 *
 * Modes
 *   small      each connection sends CONNECT once, then INVOKEs in a loop with one call
 *              outstanding; a call's latency runs from when it was due (closed loop: sent) to
 *              when its RESULT has been read whole.
 *   large      the same with a 1 MiB argument by default: bulk throughput.
 *   handshake  each iteration of a slot is TCP connect + TLS handshake + CONNECT + one INVOKE +
 *              close; reports iterations (handshakes) per second and the latency of a whole
 *              iteration; with --resume, how many of the measured handshakes resumed.
 *   idle       opens N connections (TCP + TLS + CONNECT answered), prints "idle: N established"
 *              (or "idle: E established, F failed") on stdout and flushes once every attempt has
 *              settled (with --json, on the line before the JSON object), holds them --duration
 *              seconds, then closes them. The latency figures are the
 *              times to establish; a connection the server closes during the hold is an error.
 *
 * With --rate the schedule is fixed in advance: when a call falls due while its connection still
 * waits for the previous reply, it is sent as soon as that reply arrives and its latency still
 * runs from when it was due, so a stalling server is charged for the calls queued behind the
 * stall (no coordinated omission). A call is measured when it was due after the warmup and its
 * reply arrived before the end; calls in flight at the end are not counted.
 *
 * Errors: failed TCP connects, failed TLS handshakes, malformed replies or replies of the wrong
 * type or seq (CONNECTFAIL included), unsolicited data, the server closing a connection, no
 * progress within 10 s (connecting) or 30 s (a call), and RESULTs flagged EXCEPTION (0x01,
 * PROTOCOL.md §2.4; pyroguard's refusals are such replies). After an exception the connection
 * goes on; after any other error it is closed and, except in idle mode, opened again 50 ms later.
 * Replies whose header declares more than 64 MiB are refused. Errors are counted over the whole
 * run, warmup included; the first few are described on stderr.
 *
 * Output: the text report, or with --json one object with the keys mode, conns, threads,
 * duration_s, calls, calls_per_s, p50_us, p90_us, p99_us, p999_us, max_us, tx_bytes_per_s,
 * rx_bytes_per_s (application bytes: whole Pyro messages), errors, handshakes_per_s, resumed,
 * established (CONNECTOKs received), plus failed (idle: connections never established) and
 * error_kinds. Percentiles come from a log-linear histogram from 1 us to 60 s, exact below
 * 256 us and within 0.8% above.
 *
 * Exit status: 0 when the run completed without errors, 1 when there were errors (or no call
 * completed in the measured window), 2 on usage or setup problems. SIGINT or SIGTERM ends the
 * run early and reports what was measured. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "frame.h"

#define MAX_REPLY_BYTES      (64u << 20)               /* data + annotations of one reply */
#define MAX_PAYLOAD_BYTES    (MAX_REPLY_BYTES - 4096u) /* so that the echo fits in a reply */
#define DEFAULT_LARGE_BYTES  1048576u
#define DEFAULT_SMALL_BYTES  64u
#define MAX_CONNS            100000u
#define MAX_THREADS          256u
#define MAX_NAME_LEN         255u
#define MAX_HOSTPORT_LEN     300u
#define MAX_SECONDS          86400.0
#define MAX_RATE             10000000.0
#define HEAD_CAP             16384u /* message bytes sent from the connection's own buffer */
#define SCRATCH_BYTES        (256u * 1024u)
#define MAX_CONNECTING       128u /* per thread, while the first connections are opened */
#define ESTABLISH_TIMEOUT_NS (10ull * 1000000000ull)
#define CALL_TIMEOUT_NS      (30ull * 1000000000ull)
#define RETRY_DELAY_NS       (50ull * 1000000ull)
#define POLL_NS              (50ull * 1000000ull) /* how often a thread looks at the end time */
#define MAX_EVENTS           256
#define FD_SLACK             64u
#define MAX_NOTES            10
#define NS_PER_S             1000000000ull
#define WRITE_CHUNK          (1u << 20)
#define HEAP_NONE            SIZE_MAX

/* The serpent header line Pyro4 4.82 writes on Python 3 (vectors/pyro4/serpent/echo). */
static const char kSerpentHeader[] = "# serpent utf-8 python3.2\n";

/* ---- options ----------------------------------------------------------------------------- */

typedef enum {
    MODE_SMALL,
    MODE_LARGE,
    MODE_HANDSHAKE,
    MODE_IDLE,
} bench_mode_t;

static const char *const kModeNames[] = {"small", "large", "handshake", "idle"};

typedef struct {
    char host[256];
    char port[8];
    char sni[256];
    int tls, resume, json;
    const char *ca, *cert, *key;
    bench_mode_t mode;
    size_t conns, threads, payload_bytes;
    double duration_s, warmup_s, rate;
    const char *object, *method;
} opts_t;

/* ---- latency histogram ------------------------------------------------------------------- */

/* Log-linear, like HdrHistogram with two significant digits: values below HIST_EXACT us are
 * counted exactly, above that each power of two is cut into 128 buckets (at most 0.8% wide). */
#define HIST_EXACT    256u
#define HIST_SUB      128u
#define HIST_SUB_BITS 7u
#define HIST_MAX_US   60000000ull /* 60 s; 2^25 <= HIST_MAX_US < 2^26 */
#define HIST_BUCKETS  (HIST_EXACT + (26u - 8u) * HIST_SUB)

typedef struct {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t max; /* exact, not clamped */
} hist_t;

typedef enum {
    ERR_CONNECT,   /* socket or TCP connect failed */
    ERR_TLS,       /* TLS handshake or record layer failed */
    ERR_PROTOCOL,  /* malformed, unexpected or unsolicited message */
    ERR_REFUSED,   /* CONNECTFAIL */
    ERR_EXCEPTION, /* RESULT flagged EXCEPTION */
    ERR_CLOSED,    /* the server closed or reset the connection */
    ERR_TIMEOUT,   /* no progress in time */
    ERR_KINDS,
} err_kind_t;

static const char *const kErrNames[ERR_KINDS] = {"connect",   "tls",    "protocol", "refused",
                                                 "exception", "closed", "timeout"};

typedef struct {
    hist_t hist;
    uint64_t calls;       /* measured successful calls (handshake: iterations) */
    uint64_t resumed;     /* measured iterations whose handshake resumed a session */
    uint64_t tx_bytes;    /* application bytes written in the measured window */
    uint64_t rx_bytes;    /* application bytes read in the measured window */
    uint64_t established; /* CONNECTOKs received */
    uint64_t errors[ERR_KINDS];
} stats_t;

/* ---- the run, its threads and connections ------------------------------------------------ */

typedef struct {
    opts_t o;
    SSL_CTX *ctx; /* NULL in plaintext */
    int sni_is_ip;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    uint8_t *connect_msg; /* the whole CONNECT, seq 0 */
    size_t connect_len;
    uint8_t *invoke_msg; /* the whole INVOKE as built for seq 0; only the header changes */
    size_t invoke_len;
    size_t head_cap;      /* size of each connection's own message buffer */
    uint64_t interval_ns; /* open loop: between two calls of one connection; 0: closed loop */
    uint64_t t_start;
    _Atomic uint64_t t_measure, t_end;
    atomic_size_t settled; /* idle: connections established or given up */
    atomic_size_t up;      /* idle: connections established */
    atomic_int notes_left; /* error descriptions still allowed on stderr */
} bench_t;

typedef enum {
    PH_DOWN, /* no socket; the timer, if set, opens one */
    PH_TCP,  /* TCP connect in progress */
    PH_TLS,  /* TLS handshake in progress */
    PH_UP,   /* exchanging Pyro messages */
} phase_t;

typedef enum {
    STEP_DONE, /* finished, go on */
    STEP_WAIT, /* blocked on the socket */
    STEP_GONE, /* the connection was closed (failure or end of iteration) */
} step_t;

typedef enum {
    IO_OK,
    IO_AGAIN,
    IO_EOF,  /* the server closed or reset the connection */
    IO_FAIL, /* TLS error */
} io_t;

typedef struct worker worker_t;

typedef struct {
    worker_t *w;
    size_t slot; /* index over all threads */
    phase_t phase;
    int fd;
    SSL *ssl;
    uint32_t events;  /* registered with epoll; 0: not registered */
    uint32_t rd_want; /* what the last read or handshake step waits for */
    uint32_t wr_want; /* what the last write waits for */
    int ramping;      /* counted in w->connecting */
    int settled;      /* idle: counted in bench_t.settled */
    /* output: head_len bytes of head, then tail_len bytes of tail (shared, read-only) */
    uint8_t *head;
    size_t head_len;
    const uint8_t *tail;
    size_t tail_len;
    size_t sent;
    int head_is_invoke; /* head holds the INVOKE payload's prefix */
    /* input */
    uint16_t awaiting; /* MSG_CONNECTOK, MSG_RESULT or 0 */
    uint16_t seq;      /* of the last message sent */
    uint8_t hdr[FRAME4_HEADER_LEN];
    size_t hdr_have;
    frame_t reply;
    size_t body_left;
    /* timing */
    uint64_t t_intended; /* when the call (handshake: iteration) in progress was due */
    uint64_t t_next;     /* open loop: when the next one is due */
    uint64_t timer_at;
    size_t heap_pos;
    SSL_SESSION *session; /* --resume: the last ticket received */
} conn_t;

struct worker {
    bench_t *b;
    pthread_t thread;
    int started;
    int ep;
    int use_pwait2;
    int broken; /* the event loop itself failed */
    conn_t *conns;
    size_t nconns;
    size_t next_start; /* first connections not opened yet */
    size_t connecting;
    conn_t **heap; /* timers: a binary min-heap on timer_at, one entry per connection at most */
    size_t heap_len;
    uint8_t *scratch; /* reply bodies are read here and dropped */
    char why[256];    /* the last I/O failure, for messages */
    stats_t stats;
};

static volatile sig_atomic_t g_interrupted;

/* ---- small helpers ----------------------------------------------------------------------- */

/* now_ns reads the monotonic clock. */
static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* say writes one "pyrobench: ..." line on stderr. */
static void say(const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    fprintf(stderr, "pyrobench: %s\n", text);
}

/* say_ssl reports a failed setup step with BoringSSL's first queued error. */
static void say_ssl(const char *what, const char *path)
{
    char err[256] = "unknown error";
    uint32_t e = ERR_get_error();
    if (e != 0)
        ERR_error_string_n(e, err, sizeof(err));
    say("%s %s: %s", what, path, err);
    ERR_clear_error();
}

/* on_signal ends the run early; main looks at the flag. */
static void on_signal(int sig)
{
    g_interrupted = 1;
}

/* ---- histogram --------------------------------------------------------------------------- */

/* hist_index maps |v| us (at most HIST_MAX_US) to its bucket. */
static size_t hist_index(uint64_t v)
{
    if (v < HIST_EXACT)
        return (size_t)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 8 */
    unsigned shift = e - HIST_SUB_BITS;
    size_t sub = (size_t)(v >> shift) - HIST_SUB; /* 0..127 */
    return HIST_EXACT + (size_t)(e - 8u) * HIST_SUB + sub;
}

/* hist_upper is the largest value that falls in bucket |i|. */
static uint64_t hist_upper(size_t i)
{
    if (i < HIST_EXACT)
        return i;
    size_t k = i - HIST_EXACT;
    unsigned e = 8u + (unsigned)(k / HIST_SUB);
    uint64_t sub = HIST_SUB + k % HIST_SUB;
    return ((sub + 1) << (e - HIST_SUB_BITS)) - 1;
}

/* hist_record counts one latency of |v| us; values over 60 s land in the last bucket. */
static void hist_record(hist_t *h, uint64_t v)
{
    if (v > h->max)
        h->max = v;
    h->counts[hist_index(v > HIST_MAX_US ? HIST_MAX_US : v)]++;
    h->total++;
}

/* hist_merge adds |from| to |into|. */
static void hist_merge(hist_t *into, const hist_t *from)
{
    for (size_t i = 0; i < HIST_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    into->total += from->total;
    if (from->max > into->max)
        into->max = from->max;
}

/* hist_percentile returns the value at or below which |pct| percent of the samples lie (the
 * highest value of its bucket, never more than the exact maximum); 0 when empty. */
static uint64_t hist_percentile(const hist_t *h, double pct)
{
    if (h->total == 0)
        return 0;
    double want = pct / 100.0 * (double)h->total;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > h->total)
        rank = h->total;
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = hist_upper(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

/* ---- argument parsing -------------------------------------------------------------------- */

/* usage prints the synopsis to |out|. */
static void usage(FILE *out)
{
    fputs("usage: pyrobench --connect HOST:PORT [--tls --ca FILE --cert FILE --key FILE "
          "[--sni NAME] [--resume]]\n"
          "                 [--mode small|large|handshake|idle] [--conns N] [--threads T] "
          "[--duration SECONDS]\n"
          "                 [--warmup SECONDS] [--rate CALLS_PER_SECOND] [--payload-bytes B]\n"
          "                 [--object NAME] [--method NAME] [--json]\n",
          out);
}

/* parse_size reads a decimal integer in [min, max] from |s|: digits only, nothing after. */
static int parse_size(const char *s, size_t min, size_t max, size_t *out)
{
    char *end;
    if (s[0] < '0' || s[0] > '9')
        return 0;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return 0;
    *out = (size_t)v;
    return 1;
}

/* parse_number reads a decimal number in [min, max] from |s| ("2", "0.5"). */
static int parse_number(const char *s, double min, double max, double *out)
{
    char *end;
    if ((s[0] < '0' || s[0] > '9') && s[0] != '.')
        return 0;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !(v >= min && v <= max))
        return 0;
    *out = v;
    return 1;
}

/* parse_hostport splits HOST:PORT or [ADDRESS]:PORT into |o->host| and |o->port|. */
static int parse_hostport(const char *arg, opts_t *o)
{
    CBS in, host, digits;
    uint8_t ch;
    uint32_t port = 0;
    size_t len = strnlen(arg, MAX_HOSTPORT_LEN + 1);

    if (len > MAX_HOSTPORT_LEN)
        return 0;
    CBS_init(&in, (const uint8_t *)arg, len);
    if (len > 0 && arg[0] == '[') {
        if (!CBS_skip(&in, 1) || !CBS_get_until_first(&in, &host, ']') || !CBS_skip(&in, 1))
            return 0;
    } else if (!CBS_get_until_first(&in, &host, ':')) {
        return 0;
    }
    if (!CBS_get_u8(&in, &ch) || ch != ':')
        return 0;
    digits = in;
    if (CBS_len(&host) == 0 || CBS_len(&host) >= sizeof(o->host) || CBS_len(&digits) == 0 ||
        CBS_len(&digits) > 5)
        return 0;
    while (CBS_get_u8(&digits, &ch)) {
        if (ch < '0' || ch > '9')
            return 0;
        port = port * 10 + (uint32_t)(ch - '0');
    }
    if (port == 0 || port > 65535)
        return 0;
    size_t host_len = CBS_len(&host);
    if (!CBS_copy_bytes(&host, (uint8_t *)o->host, host_len))
        return 0;
    o->host[host_len] = '\0';
    snprintf(o->port, sizeof(o->port), "%" PRIu32, port);
    return 1;
}

/* check_name accepts an object or method name that can stand between single quotes in
 * serpent without escaping: 1..255 printable ASCII characters other than ' and \. */
static int check_name(const char *name)
{
    CBS cbs;
    uint8_t ch;
    size_t len = strnlen(name, MAX_NAME_LEN + 1);

    if (len == 0 || len > MAX_NAME_LEN)
        return 0;
    CBS_init(&cbs, (const uint8_t *)name, len);
    while (CBS_get_u8(&cbs, &ch)) {
        if (ch < 0x20 || ch > 0x7e || ch == '\'' || ch == '\\')
            return 0;
    }
    return 1;
}

enum {
    OPT_CONNECT = 256,
    OPT_TLS,
    OPT_CA,
    OPT_CERT,
    OPT_KEY,
    OPT_SNI,
    OPT_RESUME,
    OPT_MODE,
    OPT_CONNS,
    OPT_THREADS,
    OPT_DURATION,
    OPT_WARMUP,
    OPT_RATE,
    OPT_PAYLOAD,
    OPT_OBJECT,
    OPT_METHOD,
    OPT_JSON,
};

static const struct option kOptions[] = {
    {"connect", required_argument, NULL, OPT_CONNECT},
    {"tls", no_argument, NULL, OPT_TLS},
    {"ca", required_argument, NULL, OPT_CA},
    {"cert", required_argument, NULL, OPT_CERT},
    {"key", required_argument, NULL, OPT_KEY},
    {"sni", required_argument, NULL, OPT_SNI},
    {"resume", no_argument, NULL, OPT_RESUME},
    {"mode", required_argument, NULL, OPT_MODE},
    {"conns", required_argument, NULL, OPT_CONNS},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"rate", required_argument, NULL, OPT_RATE},
    {"payload-bytes", required_argument, NULL, OPT_PAYLOAD},
    {"object", required_argument, NULL, OPT_OBJECT},
    {"method", required_argument, NULL, OPT_METHOD},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* parse_mode sets |*out| from a --mode argument. */
static int parse_mode(const char *s, bench_mode_t *out)
{
    for (size_t i = 0; i < sizeof(kModeNames) / sizeof(kModeNames[0]); i++) {
        if (strcmp(s, kModeNames[i]) == 0) {
            *out = (bench_mode_t)i;
            return 1;
        }
    }
    return 0;
}

/* parse_option applies one option |opt| with argument |arg| to |o|, noting in |*payload_set|
 * whether --payload-bytes was given; it complains and returns 0 on a bad value. */
static int parse_option(int opt, const char *arg, opts_t *o, int *payload_set, int *connect_set)
{
    switch (opt) {
    case OPT_CONNECT:
        if (!parse_hostport(arg, o)) {
            say("--connect wants HOST:PORT or [IPV6]:PORT, got \"%s\"", arg);
            return 0;
        }
        *connect_set = 1;
        return 1;
    case OPT_TLS:
        o->tls = 1;
        return 1;
    case OPT_CA:
        o->ca = arg;
        return 1;
    case OPT_CERT:
        o->cert = arg;
        return 1;
    case OPT_KEY:
        o->key = arg;
        return 1;
    case OPT_SNI:
        if (strnlen(arg, sizeof(o->sni)) >= sizeof(o->sni) || arg[0] == '\0') {
            say("--sni must be 1..%zu characters", sizeof(o->sni) - 1);
            return 0;
        }
        snprintf(o->sni, sizeof(o->sni), "%s", arg);
        return 1;
    case OPT_RESUME:
        o->resume = 1;
        return 1;
    case OPT_MODE:
        if (!parse_mode(arg, &o->mode)) {
            say("--mode must be small, large, handshake or idle, got \"%s\"", arg);
            return 0;
        }
        return 1;
    case OPT_CONNS:
        if (!parse_size(arg, 1, MAX_CONNS, &o->conns)) {
            say("--conns must be an integer from 1 to %u", MAX_CONNS);
            return 0;
        }
        return 1;
    case OPT_THREADS:
        if (!parse_size(arg, 1, MAX_THREADS, &o->threads)) {
            say("--threads must be an integer from 1 to %u", MAX_THREADS);
            return 0;
        }
        return 1;
    case OPT_DURATION:
        if (!parse_number(arg, 0.001, MAX_SECONDS, &o->duration_s)) {
            say("--duration must be a number of seconds from 0.001 to %.0f", MAX_SECONDS);
            return 0;
        }
        return 1;
    case OPT_WARMUP:
        if (!parse_number(arg, 0.0, MAX_SECONDS, &o->warmup_s)) {
            say("--warmup must be a number of seconds from 0 to %.0f", MAX_SECONDS);
            return 0;
        }
        return 1;
    case OPT_RATE:
        if (!parse_number(arg, 0.001, MAX_RATE, &o->rate)) {
            say("--rate must be a number of calls per second from 0.001 to %.0f", MAX_RATE);
            return 0;
        }
        return 1;
    case OPT_PAYLOAD:
        if (!parse_size(arg, 0, MAX_PAYLOAD_BYTES, &o->payload_bytes)) {
            say("--payload-bytes must be an integer from 0 to %u", MAX_PAYLOAD_BYTES);
            return 0;
        }
        *payload_set = 1;
        return 1;
    case OPT_OBJECT:
    case OPT_METHOD:
        if (!check_name(arg)) {
            say("--%s must be 1..%u printable ASCII characters without quotes or backslashes",
                opt == OPT_OBJECT ? "object" : "method", MAX_NAME_LEN);
            return 0;
        }
        if (opt == OPT_OBJECT)
            o->object = arg;
        else
            o->method = arg;
        return 1;
    case OPT_JSON:
        o->json = 1;
        return 1;
    }
    usage(stderr);
    return 0;
}

/* parse_args fills |o| from the command line. It returns 1 to run, 0 on a usage error
 * (already reported); |*out_help| is set when --help was asked for. */
static int parse_args(int argc, char **argv, opts_t *o, int *out_help)
{
    int opt, payload_set = 0, connect_set = 0;

    memset(o, 0, sizeof(*o));
    o->mode = MODE_SMALL;
    o->conns = 10;
    o->threads = 1;
    o->duration_s = 10.0;
    o->warmup_s = 1.0;
    o->object = "thing";
    o->method = "echo";
    *out_help = 0;

    opterr = 1;
    while ((opt = getopt_long(argc, argv, "h", kOptions, NULL)) != -1) {
        if (opt == 'h') {
            *out_help = 1;
            return 0;
        }
        if (opt == '?' || !parse_option(opt, optarg, o, &payload_set, &connect_set)) {
            if (opt == '?')
                usage(stderr);
            return 0;
        }
    }
    if (optind < argc) {
        say("unexpected argument \"%s\"", argv[optind]);
        return 0;
    }
    if (!connect_set) {
        say("--connect HOST:PORT is required");
        usage(stderr);
        return 0;
    }
    if (o->tls && (o->ca == NULL || o->cert == NULL || o->key == NULL)) {
        say("--tls needs --ca, --cert and --key");
        return 0;
    }
    if (!o->tls &&
        (o->ca != NULL || o->cert != NULL || o->key != NULL || o->sni[0] != '\0' || o->resume)) {
        say("--ca, --cert, --key, --sni and --resume only apply with --tls");
        return 0;
    }
    if (o->mode == MODE_IDLE && o->rate > 0) {
        say("--rate does not apply to --mode idle");
        return 0;
    }
    if (!payload_set)
        o->payload_bytes = o->mode == MODE_LARGE ? DEFAULT_LARGE_BYTES : DEFAULT_SMALL_BYTES;
    if (o->threads > o->conns)
        o->threads = o->conns;
    if (o->mode == MODE_IDLE)
        o->warmup_s = 0.0;
    if (o->sni[0] == '\0')
        snprintf(o->sni, sizeof(o->sni), "%s", o->host);
    return 1;
}

/* ---- setup ------------------------------------------------------------------------------- */

/* setup_signals ignores SIGPIPE (a write to a closed socket is an error, not a death) and
 * makes SIGINT and SIGTERM end the run early. */
static int setup_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGPIPE, &sa, NULL) != 0)
        return 0;
    sa.sa_handler = on_signal;
    return sigaction(SIGINT, &sa, NULL) == 0 && sigaction(SIGTERM, &sa, NULL) == 0;
}

/* raise_fd_limit lifts the soft RLIMIT_NOFILE to the hard limit and checks that it covers one
 * descriptor per connection plus the threads' epoll descriptors and some slack. */
static int raise_fd_limit(const opts_t *o)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)(o->conns + o->threads + FD_SLACK);

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        say("getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return 0;
    }
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        say("--conns %zu needs %llu file descriptors but the hard limit (ulimit -Hn) is %llu; "
            "raise it or use fewer connections",
            o->conns, (unsigned long long)need, (unsigned long long)rl.rlim_max);
        return 0;
    }
    if (rl.rlim_max == RLIM_INFINITY)
        rl.rlim_cur = rl.rlim_cur >= need ? rl.rlim_cur : need;
    else
        rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        say("setrlimit(RLIMIT_NOFILE, %llu): %s", (unsigned long long)rl.rlim_cur, strerror(errno));
        return 0;
    }
    return 1;
}

/* resolve_target looks the --connect address up once, before the run. */
static int resolve_target(bench_t *b)
{
    struct addrinfo hints, *res = NULL;
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(b->o.host, b->o.port, &hints, &res);
    if (rc != 0) {
        say("cannot resolve %s: %s", b->o.host, gai_strerror(rc));
        return 0;
    }
    if (res->ai_addrlen > sizeof(b->addr)) {
        freeaddrinfo(res);
        say("cannot resolve %s: address too long", b->o.host);
        return 0;
    }
    memcpy(&b->addr, res->ai_addr, res->ai_addrlen);
    b->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 1;
}

/* put_invoke_header writes the 24-byte header of INVOKE |seq| with a |payload_len|-byte
 * serpent payload to |out| (PROTOCOL.md §2.1). frame_build writes header and payload together;
 * here the payload is built once and shared, so only the header is written per call. */
static int put_invoke_header(uint8_t out[FRAME4_HEADER_LEN], uint16_t seq, size_t payload_len)
{
    CBB cbb;
    size_t len;
    uint16_t sum =
        frame_checksum(MSG_INVOKE, FRAME4_VERSION, (uint32_t)payload_len, 0, SER4_SERPENT, 0, seq);

    if (payload_len > 0x7fffffff || !CBB_init_fixed(&cbb, out, FRAME4_HEADER_LEN))
        return 0;
    if (!CBB_add_bytes(&cbb, (const uint8_t *)"PYRO", 4) || !CBB_add_u16(&cbb, FRAME4_VERSION) ||
        !CBB_add_u16(&cbb, MSG_INVOKE) || !CBB_add_u16(&cbb, 0) || !CBB_add_u16(&cbb, seq) ||
        !CBB_add_u32(&cbb, (uint32_t)payload_len) || !CBB_add_u16(&cbb, SER4_SERPENT) ||
        !CBB_add_u16(&cbb, 0) || !CBB_add_u16(&cbb, 0) || !CBB_add_u16(&cbb, sum) ||
        !CBB_finish(&cbb, NULL, &len) || len != FRAME4_HEADER_LEN) {
        CBB_cleanup(&cbb);
        return 0;
    }
    return 1;
}

/* add_str appends the characters of |s| to |cbb|. */
static int add_str(CBB *cbb, const char *s)
{
    return CBB_add_bytes(cbb, (const uint8_t *)s, strlen(s));
}

/* build_message frames |payload| as one Pyro4 message of |type| into a new buffer. */
static int build_message(uint16_t type, uint16_t flags, const uint8_t *payload, size_t payload_len,
                         uint8_t **out, size_t *out_len)
{
    CBB cbb;

    if (!CBB_init(&cbb, FRAME4_HEADER_LEN + payload_len))
        return 0;
    if (!frame_build(&cbb, type, flags, 0, SER4_SERPENT, NULL, 0, payload, payload_len) ||
        !CBB_finish(&cbb, out, out_len)) {
        CBB_cleanup(&cbb);
        return 0;
    }
    return 1;
}

/* build_connect builds the CONNECT a real Pyro4 proxy sends: META_ON_CONNECT, seq 0, payload
 * {'handshake':'hello','object':'OBJECT'} (vectors/pyro4/serpent/echo/00_c2s_CONNECT.bin). */
static int build_connect(bench_t *b)
{
    CBB cbb;
    uint8_t *payload;
    size_t payload_len;

    if (!CBB_init(&cbb, 128))
        return 0;
    if (!add_str(&cbb, kSerpentHeader) || !add_str(&cbb, "{'handshake':'hello','object':'") ||
        !add_str(&cbb, b->o.object) || !add_str(&cbb, "'}") ||
        !CBB_finish(&cbb, &payload, &payload_len)) {
        CBB_cleanup(&cbb);
        return 0;
    }
    int ok = build_message(MSG_CONNECT, FLAG4_META_ON_CONNECT, payload, payload_len,
                           &b->connect_msg, &b->connect_len);
    OPENSSL_free(payload);
    return ok;
}

/* build_invoke builds the INVOKE ('OBJECT','METHOD',('xx…x',),{}) with a |payload_bytes|
 * string argument (vectors/pyro4/serpent/echo/01_c2s_INVOKE.bin), as for seq 0. */
static int build_invoke(bench_t *b)
{
    CBB cbb;
    uint8_t *payload, *xs;
    size_t payload_len;

    if (!CBB_init(&cbb, b->o.payload_bytes + 1024))
        return 0;
    if (!add_str(&cbb, kSerpentHeader) || !add_str(&cbb, "('") || !add_str(&cbb, b->o.object) ||
        !add_str(&cbb, "','") || !add_str(&cbb, b->o.method) || !add_str(&cbb, "',('") ||
        !CBB_add_space(&cbb, &xs, b->o.payload_bytes))
        goto cleanup_cbb;
    memset(xs, 'x', b->o.payload_bytes);
    if (!add_str(&cbb, "',),{})") || !CBB_finish(&cbb, &payload, &payload_len))
        goto cleanup_cbb;
    int ok = build_message(MSG_INVOKE, 0, payload, payload_len, &b->invoke_msg, &b->invoke_len);
    OPENSSL_free(payload);
    return ok;

cleanup_cbb:
    CBB_cleanup(&cbb);
    return 0;
}

/* build_messages builds the CONNECT and the INVOKE template and sizes the connections' own
 * buffers. On success b->connect_msg and b->invoke_msg are the caller's (OPENSSL_free); on
 * failure (reported) nothing is left allocated. */
static int build_messages(bench_t *b)
{
    uint8_t check[FRAME4_HEADER_LEN];

    if (!build_connect(b))
        goto fail;
    if (!build_invoke(b))
        goto free_connect;
    /* Every call rewrites the header with put_invoke_header: it must agree with frame_build. */
    if (!put_invoke_header(check, 0, b->invoke_len - FRAME4_HEADER_LEN) ||
        memcmp(check, b->invoke_msg, FRAME4_HEADER_LEN) != 0) {
        say("internal error: the INVOKE header differs from frame_build's");
        goto free_invoke;
    }
    b->head_cap = b->connect_len;
    if (b->o.mode != MODE_IDLE) {
        size_t want = b->invoke_len < HEAD_CAP ? b->invoke_len : HEAD_CAP;
        if (want > b->head_cap)
            b->head_cap = want;
    }
    return 1;

free_invoke:
    OPENSSL_free(b->invoke_msg);
    b->invoke_msg = NULL;
free_connect:
    OPENSSL_free(b->connect_msg);
    b->connect_msg = NULL;
fail:
    say("cannot build the Pyro messages");
    return 0;
}

static int on_new_session(SSL *ssl, SSL_SESSION *session);

/* tls_ctx_new builds the client context: TLS 1.3 only, the server verified against --ca and
 * --sni, --cert/--key presented, session tickets kept per slot with --resume. */
static SSL_CTX *tls_ctx_new(bench_t *b)
{
    const opts_t *o = &b->o;
    struct in6_addr ip;
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());

    if (ctx == NULL) {
        say_ssl("cannot create the TLS context", "");
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) {
        say_ssl("cannot restrict the context to", "TLS 1.3");
        goto free_ctx;
    }
    if (!SSL_CTX_load_verify_locations(ctx, o->ca, NULL)) {
        say_ssl("cannot load --ca", o->ca);
        goto free_ctx;
    }
    if (!SSL_CTX_use_certificate_chain_file(ctx, o->cert)) {
        say_ssl("cannot load --cert", o->cert);
        goto free_ctx;
    }
    if (!SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM)) {
        say_ssl("cannot load --key", o->key);
        goto free_ctx;
    }
    if (!SSL_CTX_check_private_key(ctx)) {
        say_ssl("--key does not match --cert", o->key);
        goto free_ctx;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

    /* An IP address is matched against the certificate's IP SANs and never sent as SNI
     * (RFC 6066 §3). */
    b->sni_is_ip = inet_pton(AF_INET, o->sni, &ip) == 1 || inet_pton(AF_INET6, o->sni, &ip) == 1;
    X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
    if (b->sni_is_ip ? !X509_VERIFY_PARAM_set1_ip_asc(param, o->sni)
                     : !X509_VERIFY_PARAM_set1_host(param, o->sni, strlen(o->sni))) {
        say_ssl("cannot verify against the name", o->sni);
        goto free_ctx;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
    if (o->resume) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    return ctx;

free_ctx:
    SSL_CTX_free(ctx);
    return NULL;
}

/* ---- timers: a binary min-heap per thread ------------------------------------------------ */

/* heap_place puts |c| at position |i|. */
static void heap_place(worker_t *w, size_t i, conn_t *c)
{
    w->heap[i] = c;
    c->heap_pos = i;
}

/* heap_sift_up moves the entry at |i| towards the root while it is due earlier. */
static void heap_sift_up(worker_t *w, size_t i)
{
    conn_t *c = w->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (w->heap[parent]->timer_at <= c->timer_at)
            break;
        heap_place(w, i, w->heap[parent]);
        i = parent;
    }
    heap_place(w, i, c);
}

/* heap_sift_down moves the entry at |i| towards the leaves while a child is due earlier. */
static void heap_sift_down(worker_t *w, size_t i)
{
    conn_t *c = w->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= w->heap_len)
            break;
        if (child + 1 < w->heap_len && w->heap[child + 1]->timer_at < w->heap[child]->timer_at)
            child++;
        if (c->timer_at <= w->heap[child]->timer_at)
            break;
        heap_place(w, i, w->heap[child]);
        i = child;
    }
    heap_place(w, i, c);
}

/* timer_clear cancels |c|'s timer, if any. */
static void timer_clear(conn_t *c)
{
    worker_t *w = c->w;
    size_t i = c->heap_pos;

    if (i == HEAP_NONE)
        return;
    c->heap_pos = HEAP_NONE;
    conn_t *last = w->heap[--w->heap_len];
    if (i == w->heap_len)
        return;
    heap_place(w, i, last);
    heap_sift_down(w, i);
    heap_sift_up(w, last->heap_pos);
}

/* timer_set (re)arms |c|'s only timer for |at|; what it means depends on the state. */
static void timer_set(conn_t *c, uint64_t at)
{
    worker_t *w = c->w;

    timer_clear(c);
    c->timer_at = at;
    heap_place(w, w->heap_len++, c);
    heap_sift_up(w, c->heap_pos);
}

/* ---- connection: errors and closing ------------------------------------------------------ */

static void conn_note(conn_t *c, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* conn_note describes an error on stderr while the budget of MAX_NOTES lasts. */
static void conn_note(conn_t *c, const char *fmt, va_list ap)
{
    bench_t *b = c->w->b;
    char text[384];

    if (atomic_load_explicit(&b->notes_left, memory_order_relaxed) <= 0)
        return;
    int left = atomic_fetch_sub(&b->notes_left, 1);
    if (left <= 0)
        return;
    vsnprintf(text, sizeof(text), fmt, ap);
    fprintf(stderr, "pyrobench: connection %zu: %s%s\n", c->slot, text,
            left == 1 ? " (further errors are counted, not described)" : "");
}

static void conn_error(conn_t *c, err_kind_t kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* conn_error counts an error that leaves the connection usable (an exception reply). */
static void conn_error(conn_t *c, err_kind_t kind, const char *fmt, ...)
{
    va_list ap;
    c->w->stats.errors[kind]++;
    va_start(ap, fmt);
    conn_note(c, fmt, ap);
    va_end(ap);
}

/* conn_close releases the socket and TLS state of |c| and cancels its timer; |graceful| sends
 * a close_notify first. The slot itself, its buffers and its session stay. */
static void conn_close(conn_t *c, int graceful)
{
    timer_clear(c);
    if (c->ssl != NULL) {
        if (graceful)
            (void)SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
        ERR_clear_error();
    }
    if (c->fd >= 0) {
        close(c->fd); /* also drops it from the epoll set */
        c->fd = -1;
    }
    c->events = 0;
    c->phase = PH_DOWN;
    c->awaiting = 0;
    c->hdr_have = 0;
    c->body_left = 0;
    c->head_len = 0;
    c->tail = NULL;
    c->tail_len = 0;
    c->sent = 0;
}

/* conn_settle counts an idle-mode connection as established or given up, once. */
static void conn_settle(conn_t *c, int established)
{
    bench_t *b = c->w->b;
    if (c->settled)
        return;
    c->settled = 1;
    if (established)
        atomic_fetch_add(&b->up, 1);
    atomic_fetch_add(&b->settled, 1);
}

static void conn_fail(conn_t *c, err_kind_t kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* conn_fail counts an error, closes the connection and, except in idle mode, opens it again
 * after RETRY_DELAY_NS (handshake with --rate: not before the next iteration is due). */
static void conn_fail(conn_t *c, err_kind_t kind, const char *fmt, ...)
{
    worker_t *w = c->w;
    bench_t *b = w->b;
    va_list ap;

    w->stats.errors[kind]++;
    va_start(ap, fmt);
    conn_note(c, fmt, ap);
    va_end(ap);
    if (c->ramping) {
        c->ramping = 0;
        w->connecting--;
    }
    conn_close(c, 0);
    if (b->o.mode == MODE_IDLE) {
        conn_settle(c, 0);
        return;
    }
    uint64_t at = now_ns() + RETRY_DELAY_NS;
    if (b->o.mode == MODE_HANDSHAKE && b->interval_ns != 0 && c->t_next > at)
        at = c->t_next;
    timer_set(c, at);
}

/* ---- connection: I/O --------------------------------------------------------------------- */

/* count_io adds |n| application bytes to |*counter| if now is inside the measured window. */
static void count_io(conn_t *c, uint64_t *counter, size_t n)
{
    bench_t *b = c->w->b;
    uint64_t now = now_ns();
    if (now >= atomic_load_explicit(&b->t_measure, memory_order_relaxed) &&
        now < atomic_load_explicit(&b->t_end, memory_order_relaxed))
        *counter += n;
}

/* ssl_why puts BoringSSL's first queued error, and the verification result if it failed,
 * into w->why. */
static void ssl_why(conn_t *c)
{
    worker_t *w = c->w;
    uint32_t e = ERR_get_error();
    long v = SSL_get_verify_result(c->ssl);
    char err[200] = "TLS error";

    if (e != 0)
        ERR_error_string_n(e, err, sizeof(err));
    if (v != X509_V_OK)
        snprintf(w->why, sizeof(w->why), "%s (certificate: %s)", err,
                 X509_verify_cert_error_string(v));
    else
        snprintf(w->why, sizeof(w->why), "%s", err);
    ERR_clear_error();
}

/* ---- the socket BIO ----------------------------------------------------------------------
 *
 * BoringSSL asks its BIO for a record's 5-byte header and then for the rest, so a plain socket
 * BIO costs two read(2) calls per record. The generator shares its core with the backend, so
 * its cost per call bounds every peer's closed-loop figure: this BIO reads up to one whole
 * record (or more) per recv(2) and serves BoringSSL from memory. It never holds bytes across a
 * wait that matter: SSL_read asks for more only when what is buffered is used up, so a "want
 * read" always means the buffer is empty and epoll sees the socket. */

#define RA_BYTES (16384u + 256u + 5u) /* the largest TLS 1.3 record */

typedef struct {
    int fd;
    size_t off, len;
    uint8_t buf[RA_BYTES];
} readahead_t;

static BIO_METHOD *g_readahead_method; /* made once in main, before any thread */

static int readahead_read(BIO *bio, char *out, int outl)
{
    readahead_t *ra = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (outl <= 0)
        return 0;
    if (ra->off == ra->len) {
        ssize_t n;
        do
            n = recv(ra->fd, ra->buf, sizeof(ra->buf), 0);
        while (n < 0 && errno == EINTR);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            BIO_set_retry_read(bio);
        if (n <= 0)
            return (int)n;
        ra->off = 0;
        ra->len = (size_t)n;
    }
    size_t take = ra->len - ra->off < (size_t)outl ? ra->len - ra->off : (size_t)outl;
    memcpy(out, ra->buf + ra->off, take);
    ra->off += take;
    return (int)take;
}

static int readahead_write(BIO *bio, const char *in, int inl)
{
    readahead_t *ra = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    ssize_t n;
    do
        n = send(ra->fd, in, (size_t)inl, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_write(bio);
    return (int)n;
}

static long readahead_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    (void)bio;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int readahead_destroy(BIO *bio)
{
    free(BIO_get_data(bio));
    BIO_set_data(bio, NULL);
    return 1;
}

static int readahead_method_init(void)
{
    g_readahead_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "readahead");
    return g_readahead_method != NULL && BIO_meth_set_read(g_readahead_method, readahead_read) &&
           BIO_meth_set_write(g_readahead_method, readahead_write) &&
           BIO_meth_set_ctrl(g_readahead_method, readahead_ctrl) &&
           BIO_meth_set_destroy(g_readahead_method, readahead_destroy);
}

/* readahead_attach gives |ssl| a read-ahead BIO over |fd| (which it does not close). */
static int readahead_attach(SSL *ssl, int fd)
{
    BIO *bio = BIO_new(g_readahead_method);
    readahead_t *ra = malloc(sizeof(*ra));
    if (bio == NULL || ra == NULL) {
        BIO_free(bio);
        free(ra);
        return 0;
    }
    ra->fd = fd;
    ra->off = ra->len = 0;
    BIO_set_data(bio, ra);
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl, bio, bio); /* one reference, taken by |ssl| for both directions */
    return 1;
}

/* ssl_result classifies a failed SSL call that returned |ret| with errno |saved_errno|:
 * IO_AGAIN with |*want| set to the event to wait for, IO_EOF or IO_FAIL with w->why set. */
static io_t ssl_result(conn_t *c, int ret, int saved_errno, uint32_t *want)
{
    worker_t *w = c->w;

    switch (SSL_get_error(c->ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        *want = EPOLLIN;
        return IO_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        *want = EPOLLOUT;
        return IO_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        snprintf(w->why, sizeof(w->why), "the server closed the connection (close_notify)");
        return IO_EOF;
    case SSL_ERROR_SYSCALL:
        snprintf(w->why, sizeof(w->why), "%s",
                 ret == 0 || saved_errno == 0 ? "the server closed the connection"
                                              : strerror(saved_errno));
        ERR_clear_error();
        return IO_EOF;
    default:
        ssl_why(c);
        return IO_FAIL;
    }
}

/* io_write writes up to |len| bytes of |buf|, reporting how many in |*out_n|. */
static io_t io_write(conn_t *c, const uint8_t *buf, size_t len, size_t *out_n)
{
    worker_t *w = c->w;

    *out_n = 0;
    if (len > WRITE_CHUNK)
        len = WRITE_CHUNK;
    c->wr_want = 0;
    if (c->ssl != NULL) {
        ERR_clear_error();
        int ret = SSL_write(c->ssl, buf, (int)len);
        if (ret > 0) {
            *out_n = (size_t)ret;
            return IO_OK;
        }
        return ssl_result(c, ret, errno, &c->wr_want);
    }
    for (;;) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            *out_n = (size_t)n;
            return IO_OK;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->wr_want = EPOLLOUT;
            return IO_AGAIN;
        }
        snprintf(w->why, sizeof(w->why), "%s", n < 0 ? strerror(errno) : "short write");
        return IO_EOF;
    }
}

/* io_read reads up to |len| (> 0) bytes into |buf|, reporting how many in |*out_n|. */
static io_t io_read(conn_t *c, uint8_t *buf, size_t len, size_t *out_n)
{
    worker_t *w = c->w;

    *out_n = 0;
    if (len > INT32_MAX)
        len = INT32_MAX;
    c->rd_want = EPOLLIN;
    if (c->ssl != NULL) {
        ERR_clear_error();
        int ret = SSL_read(c->ssl, buf, (int)len);
        if (ret > 0) {
            *out_n = (size_t)ret;
            return IO_OK;
        }
        return ssl_result(c, ret, errno, &c->rd_want);
    }
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n > 0) {
            *out_n = (size_t)n;
            return IO_OK;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return IO_AGAIN;
        snprintf(w->why, sizeof(w->why), "%s",
                 n == 0 ? "the server closed the connection" : strerror(errno));
        return IO_EOF;
    }
}

/* conn_io_failed turns a failed read or write during |what| into a step: IO_AGAIN waits, the
 * rest fail the connection. */
static step_t conn_io_failed(conn_t *c, io_t r, const char *what)
{
    if (r == IO_AGAIN)
        return STEP_WAIT;
    conn_fail(c, r == IO_FAIL ? ERR_TLS : ERR_CLOSED, "%s: %s", what, c->w->why);
    return STEP_GONE;
}

/* conn_set_events registers interest in |ev| with the thread's epoll set. */
static int conn_set_events(conn_t *c, uint32_t ev)
{
    struct epoll_event e;

    if (ev == c->events)
        return 1;
    memset(&e, 0, sizeof(e));
    e.events = ev;
    e.data.ptr = c;
    if (epoll_ctl(c->w->ep, c->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &e) != 0) {
        conn_fail(c, ERR_CONNECT, "epoll_ctl: %s", strerror(errno));
        return 0;
    }
    c->events = ev;
    return 1;
}

/* out_pending says whether part of the message in progress is still to be written. */
static int out_pending(const conn_t *c)
{
    return c->sent < c->head_len + c->tail_len;
}

/* conn_update_events asks epoll for what |c| waits for: the connect, the handshake's next
 * step, or (once up) always input, so that a close or unsolicited data is seen, and output
 * while a write is blocked. */
static void conn_update_events(conn_t *c)
{
    uint32_t ev = EPOLLIN;

    switch (c->phase) {
    case PH_DOWN:
        return;
    case PH_TCP:
        ev = EPOLLOUT;
        break;
    case PH_TLS:
        ev = c->rd_want;
        break;
    case PH_UP:
        if ((out_pending(c) && c->wr_want == EPOLLOUT) || c->rd_want == EPOLLOUT)
            ev |= EPOLLOUT;
        break;
    }
    (void)conn_set_events(c, ev);
}

/* conn_flush writes what is left of the message in progress: first the connection's own
 * head buffer, then the shared tail. */
static io_t conn_flush(conn_t *c)
{
    while (out_pending(c)) {
        const uint8_t *p;
        size_t left, n;
        if (c->sent < c->head_len) {
            p = c->head + c->sent;
            left = c->head_len - c->sent;
        } else {
            size_t off = c->sent - c->head_len;
            p = c->tail + off;
            left = c->tail_len - off;
        }
        io_t r = io_write(c, p, left, &n);
        if (r != IO_OK)
            return r;
        c->sent += n;
        count_io(c, &c->w->stats.tx_bytes, n);
    }
    return IO_OK;
}

/* conn_read_reply reads the reply in progress: its header into c->hdr, checked by
 * frame_parse_header against MAX_REPLY_BYTES, then the annotations and payload, which are
 * counted and dropped. STEP_DONE: c->reply describes the whole reply. */
static step_t conn_read_reply(conn_t *c)
{
    worker_t *w = c->w;
    frame_error_t err;
    size_t n;
    io_t r;

    while (c->hdr_have < FRAME4_HEADER_LEN) {
        r = io_read(c, c->hdr + c->hdr_have, FRAME4_HEADER_LEN - c->hdr_have, &n);
        if (r != IO_OK)
            return conn_io_failed(c, r, "reading a reply");
        c->hdr_have += n;
        count_io(c, &w->stats.rx_bytes, n);
        if (c->hdr_have < FRAME4_HEADER_LEN)
            continue;
        if (frame_parse_header(c->hdr, FRAME4_HEADER_LEN, MAX_REPLY_BYTES, &c->reply, &err) !=
            FRAME_OK) {
            conn_fail(c, ERR_PROTOCOL, "bad reply header: %s", frame_error_reason(err));
            return STEP_GONE;
        }
        c->body_left = c->reply.total_len - FRAME4_HEADER_LEN;
    }
    while (c->body_left > 0) {
        size_t want = c->body_left < SCRATCH_BYTES ? c->body_left : SCRATCH_BYTES;
        r = io_read(c, w->scratch, want, &n);
        if (r != IO_OK)
            return conn_io_failed(c, r, "reading a reply");
        c->body_left -= n;
        count_io(c, &w->stats.rx_bytes, n);
    }
    return STEP_DONE;
}

/* conn_check_quiet reads when no reply is expected: the server closing, unsolicited data
 * (an error) or TLS post-handshake messages (session tickets), which BoringSSL handles. */
static step_t conn_check_quiet(conn_t *c)
{
    uint8_t byte;
    size_t n;
    io_t r = io_read(c, &byte, 1, &n);

    if (r == IO_OK) {
        conn_fail(c, ERR_PROTOCOL, "unsolicited data from the server");
        return STEP_GONE;
    }
    return conn_io_failed(c, r, "while idle");
}

/* ---- connection: the Pyro exchange ------------------------------------------------------- */

/* conn_queue_connect makes the CONNECT (seq 0) the message in progress. */
static void conn_queue_connect(conn_t *c)
{
    bench_t *b = c->w->b;

    memcpy(c->head, b->connect_msg, b->connect_len);
    c->head_is_invoke = 0;
    c->head_len = b->connect_len;
    c->tail = NULL;
    c->tail_len = 0;
    c->sent = 0;
    c->seq = 0;
    c->awaiting = MSG_CONNECTOK;
}

/* conn_send_invoke makes the next INVOKE the message in progress, due at |intended|, and arms
 * the call timeout. The caller's loop writes it. */
static step_t conn_send_invoke(conn_t *c, uint64_t intended)
{
    bench_t *b = c->w->b;
    size_t head_len = b->head_cap < b->invoke_len ? b->head_cap : b->invoke_len;

    c->seq = (uint16_t)(c->seq + 1); /* Pyro4 wraps at 2^16 too */
    if (!c->head_is_invoke) {
        memcpy(c->head + FRAME4_HEADER_LEN, b->invoke_msg + FRAME4_HEADER_LEN,
               head_len - FRAME4_HEADER_LEN);
        c->head_is_invoke = 1;
    }
    if (!put_invoke_header(c->head, c->seq, b->invoke_len - FRAME4_HEADER_LEN)) {
        conn_fail(c, ERR_PROTOCOL, "cannot build an INVOKE header");
        return STEP_GONE;
    }
    c->head_len = head_len;
    c->tail = b->invoke_msg + head_len;
    c->tail_len = b->invoke_len - head_len;
    c->sent = 0;
    c->awaiting = MSG_RESULT;
    c->t_intended = intended;
    timer_set(c, now_ns() + CALL_TIMEOUT_NS);
    return STEP_DONE;
}

/* conn_next_call sends the next INVOKE: now in a closed loop; with --rate when it is due,
 * at once if it is overdue (its latency still counts from when it was due). */
static step_t conn_next_call(conn_t *c)
{
    bench_t *b = c->w->b;
    uint64_t now = now_ns();

    if (b->interval_ns == 0)
        return conn_send_invoke(c, now);
    if (c->t_next > now) {
        timer_set(c, c->t_next);
        return STEP_DONE;
    }
    uint64_t due = c->t_next;
    c->t_next += b->interval_ns;
    return conn_send_invoke(c, due);
}

/* measured says whether a call due at |intended| and done at |done| is in the window. */
static int measured(const bench_t *b, uint64_t intended, uint64_t done)
{
    return intended >= atomic_load_explicit(&b->t_measure, memory_order_relaxed) &&
           done <= atomic_load_explicit(&b->t_end, memory_order_relaxed);
}

/* conn_on_connectok goes on after CONNECTOK: idle holds, handshake sends its one INVOKE,
 * small and large start calling. */
static step_t conn_on_connectok(conn_t *c, uint64_t now)
{
    worker_t *w = c->w;
    bench_t *b = w->b;

    w->stats.established++;
    if (c->ramping) {
        c->ramping = 0;
        w->connecting--;
    }
    switch (b->o.mode) {
    case MODE_IDLE:
        hist_record(&w->stats.hist, (now - c->t_intended + 500) / 1000);
        conn_settle(c, 1);
        timer_clear(c);
        return STEP_DONE;
    case MODE_HANDSHAKE:
        return conn_send_invoke(c, c->t_intended); /* the iteration's latency goes on */
    case MODE_SMALL:
    case MODE_LARGE:
        break;
    }
    return conn_next_call(c);
}

/* conn_on_result accounts for a RESULT; handshake mode then closes the connection and
 * schedules the slot's next iteration. */
static step_t conn_on_result(conn_t *c, uint64_t now)
{
    worker_t *w = c->w;
    bench_t *b = w->b;

    if (c->reply.flags & FLAG4_EXCEPTION) {
        conn_error(c, ERR_EXCEPTION, "RESULT seq %u carries an exception (flags 0x%04x)",
                   c->reply.seq, c->reply.flags);
    } else if (measured(b, c->t_intended, now)) {
        hist_record(&w->stats.hist, (now - c->t_intended + 500) / 1000);
        w->stats.calls++;
        if (b->o.mode == MODE_HANDSHAKE && c->ssl != NULL && SSL_session_reused(c->ssl))
            w->stats.resumed++;
    }
    if (b->o.mode != MODE_HANDSHAKE)
        return conn_next_call(c);
    conn_close(c, 1);
    timer_set(c, b->interval_ns != 0 && c->t_next > now ? c->t_next : now);
    return STEP_GONE;
}

/* conn_on_reply checks a whole reply against what was awaited: the same seq, CONNECTOK for
 * the CONNECT (CONNECTFAIL is a refusal), RESULT for an INVOKE. */
static step_t conn_on_reply(conn_t *c)
{
    uint16_t expected = c->awaiting;
    const frame_t *f = &c->reply;
    uint64_t now = now_ns();

    c->awaiting = 0;
    c->hdr_have = 0;
    if (out_pending(c)) {
        conn_fail(c, ERR_PROTOCOL, "%s arrived before the request was written whole",
                  frame_type_name(f->type));
        return STEP_GONE;
    }
    if (f->seq != c->seq) {
        conn_fail(c, ERR_PROTOCOL, "%s with seq %u, expected %u", frame_type_name(f->type), f->seq,
                  c->seq);
        return STEP_GONE;
    }
    if (expected == MSG_CONNECTOK) {
        if (f->type == MSG_CONNECTFAIL) {
            conn_fail(c, ERR_REFUSED, "CONNECTFAIL: the server refused the connection");
            return STEP_GONE;
        }
        if (f->type != MSG_CONNECTOK) {
            conn_fail(c, ERR_PROTOCOL, "%s instead of CONNECTOK", frame_type_name(f->type));
            return STEP_GONE;
        }
        return conn_on_connectok(c, now);
    }
    if (f->type != MSG_RESULT) {
        conn_fail(c, ERR_PROTOCOL, "%s instead of RESULT", frame_type_name(f->type));
        return STEP_GONE;
    }
    return conn_on_result(c, now);
}

/* conn_drive makes all the progress an established connection can make without blocking:
 * write, read the reply, act on it, and so on; then it updates the epoll interest. */
static void conn_drive(conn_t *c)
{
    for (;;) {
        if (out_pending(c)) {
            io_t r = conn_flush(c);
            if (r == IO_EOF || r == IO_FAIL) {
                (void)conn_io_failed(c, r, "writing a request");
                return;
            }
        }
        step_t s = c->awaiting != 0 ? conn_read_reply(c) : conn_check_quiet(c);
        if (s == STEP_GONE)
            return;
        if (s == STEP_WAIT)
            break;
        if (conn_on_reply(c) == STEP_GONE)
            return;
    }
    conn_update_events(c);
}

/* conn_begin_pyro starts the Pyro conversation on a fresh (TLS) connection with CONNECT. */
static void conn_begin_pyro(conn_t *c)
{
    c->phase = PH_UP;
    c->rd_want = EPOLLIN;
    c->wr_want = 0;
    conn_queue_connect(c);
    conn_drive(c);
}

/* conn_handshake runs the TLS handshake as far as it goes. */
static void conn_handshake(conn_t *c)
{
    ERR_clear_error();
    c->rd_want = EPOLLIN;
    int ret = SSL_do_handshake(c->ssl);
    if (ret == 1) {
        conn_begin_pyro(c);
        return;
    }
    io_t r = ssl_result(c, ret, errno, &c->rd_want);
    if (r == IO_AGAIN) {
        conn_update_events(c);
        return;
    }
    conn_fail(c, ERR_TLS, "TLS handshake: %s", c->w->why);
}

/* on_new_session keeps the newest session ticket of a connection slot (--resume); BoringSSL
 * calls it while reading, once the server's NewSessionTicket arrives. */
static int on_new_session(SSL *ssl, SSL_SESSION *session)
{
    conn_t *c = SSL_get_app_data(ssl);
    if (c == NULL)
        return 0;
    SSL_SESSION_free(c->session);
    c->session = session;
    return 1;
}

/* conn_connected follows the TCP connect: TLS, or straight to Pyro in plaintext. */
static void conn_connected(conn_t *c)
{
    bench_t *b = c->w->b;

    if (b->ctx == NULL) {
        conn_begin_pyro(c);
        return;
    }
    c->ssl = SSL_new(b->ctx);
    if (c->ssl == NULL || !readahead_attach(c->ssl, c->fd) || !SSL_set_app_data(c->ssl, c) ||
        (!b->sni_is_ip && !SSL_set_tlsext_host_name(c->ssl, b->o.sni)) ||
        (c->session != NULL && !SSL_set_session(c->ssl, c->session))) {
        char err[200] = "out of memory";
        uint32_t e = ERR_get_error();
        if (e != 0)
            ERR_error_string_n(e, err, sizeof(err));
        conn_fail(c, ERR_TLS, "cannot set up TLS: %s", err);
        return;
    }
    SSL_set_connect_state(c->ssl);
    c->phase = PH_TLS;
    conn_handshake(c);
}

/* conn_tcp_done reads the outcome of a non-blocking connect. */
static void conn_tcp_done(conn_t *c)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        conn_fail(c, ERR_CONNECT, "connect: %s", strerror(err));
        return;
    }
    conn_connected(c);
}

/* conn_start opens a new connection for |c|; in handshake mode this begins an iteration,
 * due now (closed loop) or at c->t_next (--rate). */
static void conn_start(conn_t *c)
{
    bench_t *b = c->w->b;
    uint64_t now = now_ns();
    int one = 1;

    c->t_intended = now;
    if (b->o.mode == MODE_HANDSHAKE && b->interval_ns != 0) {
        c->t_intended = c->t_next;
        c->t_next += b->interval_ns;
    }
    c->fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_fail(c, ERR_CONNECT, "socket: %s", strerror(errno));
        return;
    }
    if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
        conn_fail(c, ERR_CONNECT, "TCP_NODELAY: %s", strerror(errno));
        return;
    }
    timer_set(c, now + ESTABLISH_TIMEOUT_NS);
    if (connect(c->fd, (const struct sockaddr *)&b->addr, b->addr_len) == 0) {
        conn_connected(c);
        return;
    }
    if (errno != EINPROGRESS) {
        conn_fail(c, ERR_CONNECT, "connect: %s", strerror(errno));
        return;
    }
    c->phase = PH_TCP;
    conn_update_events(c);
}

/* conn_on_timer acts on |c|'s timer: open a connection, give up on one that made no progress,
 * or (with --rate) send the call now due. */
static void conn_on_timer(conn_t *c)
{
    if (c->phase == PH_DOWN) {
        conn_start(c);
        return;
    }
    if (c->phase != PH_UP || c->awaiting == MSG_CONNECTOK) {
        conn_fail(c, ERR_TIMEOUT, "not established within %llu s",
                  (unsigned long long)(ESTABLISH_TIMEOUT_NS / NS_PER_S));
        return;
    }
    if (c->awaiting == MSG_RESULT) {
        conn_fail(c, ERR_TIMEOUT, "no RESULT within %llu s",
                  (unsigned long long)(CALL_TIMEOUT_NS / NS_PER_S));
        return;
    }
    if (conn_next_call(c) == STEP_GONE)
        return;
    conn_drive(c);
}

/* conn_on_event dispatches readiness of |c|'s socket by phase. */
static void conn_on_event(conn_t *c)
{
    switch (c->phase) {
    case PH_DOWN:
        return;
    case PH_TCP:
        conn_tcp_done(c);
        return;
    case PH_TLS:
        conn_handshake(c);
        return;
    case PH_UP:
        conn_drive(c);
        return;
    }
}

/* ---- threads ----------------------------------------------------------------------------- */

/* worker_ramp opens the connections not opened yet, at most MAX_CONNECTING at a time, so that
 * thousands of connects do not overflow the server's accept queue. */
static void worker_ramp(worker_t *w)
{
    while (w->next_start < w->nconns && w->connecting < MAX_CONNECTING) {
        conn_t *c = &w->conns[w->next_start++];
        c->ramping = 1;
        w->connecting++;
        conn_start(c);
    }
}

/* worker_run_timers fires the timers due by |now|, each at most once per round. */
static void worker_run_timers(worker_t *w, uint64_t now)
{
    size_t budget = w->heap_len;
    while (budget-- > 0 && w->heap_len > 0 && w->heap[0]->timer_at <= now) {
        conn_t *c = w->heap[0];
        timer_clear(c);
        conn_on_timer(c);
    }
}

/* worker_wait waits up to |wait_ns| for socket events: epoll_pwait2 for a timeout finer than a
 * millisecond where the kernel has it, epoll_wait otherwise. */
static int worker_wait(worker_t *w, struct epoll_event *events, uint64_t wait_ns)
{
    if (w->use_pwait2) {
        struct timespec ts = {.tv_sec = (time_t)(wait_ns / NS_PER_S),
                              .tv_nsec = (long)(wait_ns % NS_PER_S)};
        int n = epoll_pwait2(w->ep, events, MAX_EVENTS, &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        w->use_pwait2 = 0;
    }
    return epoll_wait(w->ep, events, MAX_EVENTS, (int)((wait_ns + 999999) / 1000000));
}

/* worker_main is one thread's event loop over its connections until the end time, which
 * main may move (idle mode, interruption); it then closes everything. */
static void *worker_main(void *arg)
{
    worker_t *w = arg;
    bench_t *b = w->b;
    struct epoll_event events[MAX_EVENTS];

    if (b->o.mode == MODE_HANDSHAKE) {
        /* Slots are not ramped: each iteration is a new connection anyway. */
        for (size_t i = 0; i < w->nconns; i++)
            timer_set(&w->conns[i], b->interval_ns != 0 ? w->conns[i].t_next : b->t_start);
        w->next_start = w->nconns;
    }
    for (;;) {
        uint64_t now = now_ns();
        uint64_t end = atomic_load_explicit(&b->t_end, memory_order_relaxed);
        if (now >= end)
            break;
        worker_ramp(w);
        worker_run_timers(w, now);

        uint64_t wait = end - now < POLL_NS ? end - now : POLL_NS;
        now = now_ns();
        if (w->heap_len > 0) {
            uint64_t at = w->heap[0]->timer_at;
            uint64_t until = at > now ? at - now : 0;
            if (until < wait)
                wait = until;
        }
        int n = worker_wait(w, events, wait);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            say("epoll_wait: %s", strerror(errno));
            w->broken = 1;
            break;
        }
        for (int i = 0; i < n; i++)
            conn_on_event(events[i].data.ptr);
    }
    for (size_t i = 0; i < w->nconns; i++)
        conn_close(&w->conns[i], w->conns[i].phase == PH_UP);
    return NULL;
}

/* workers_free releases the threads' state (after they have been joined). Accepts NULL. */
static void workers_free(worker_t *ws, size_t n)
{
    if (ws == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        worker_t *w = &ws[i];
        for (size_t j = 0; w->conns != NULL && j < w->nconns; j++) {
            conn_close(&w->conns[j], 0);
            SSL_SESSION_free(w->conns[j].session);
            free(w->conns[j].head);
        }
        free(w->conns);
        free(w->heap);
        free(w->scratch);
        if (w->ep >= 0)
            close(w->ep);
    }
    free(ws);
}

/* workers_new splits the connections over the threads and allocates each thread's state.
 * Returns NULL (reported) on failure. */
static worker_t *workers_new(bench_t *b)
{
    size_t T = b->o.threads, slot = 0;
    worker_t *ws = calloc(T, sizeof(*ws));

    if (ws == NULL)
        goto fail;
    for (size_t i = 0; i < T; i++)
        ws[i].ep = -1;
    for (size_t i = 0; i < T; i++) {
        worker_t *w = &ws[i];
        w->b = b;
        w->use_pwait2 = 1;
        w->nconns = b->o.conns / T + (i < b->o.conns % T ? 1 : 0);
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        w->conns = calloc(w->nconns, sizeof(*w->conns));
        w->heap = calloc(w->nconns, sizeof(*w->heap));
        w->scratch = malloc(SCRATCH_BYTES);
        if (w->ep < 0 || w->conns == NULL || w->heap == NULL || w->scratch == NULL)
            goto free_workers;
        for (size_t j = 0; j < w->nconns; j++, slot++) {
            conn_t *c = &w->conns[j];
            c->w = w;
            c->slot = slot;
            c->fd = -1;
            c->heap_pos = HEAP_NONE;
            /* --rate: slots take turns, one call every 1/rate s over all of them. */
            if (b->interval_ns != 0)
                c->t_next = (uint64_t)((double)slot * 1e9 / b->o.rate); /* + t_start later */
            c->head = malloc(b->head_cap);
            if (c->head == NULL)
                goto free_workers;
        }
    }
    return ws;

free_workers:
    workers_free(ws, T);
fail:
    say("cannot set up %zu threads for %zu connections: %s", T, b->o.conns, strerror(errno));
    return NULL;
}

/* wait_idle_settled waits (idle mode) until every connection is established or given up,
 * then prints the "idle:" line and starts the hold. */
static void wait_idle_settled(bench_t *b)
{
    const struct timespec tick = {0, 10 * 1000 * 1000};

    while (!g_interrupted && atomic_load(&b->settled) < b->o.conns)
        nanosleep(&tick, NULL);
    size_t up = atomic_load(&b->up);
    if (up == b->o.conns)
        printf("idle: %zu established\n", up);
    else
        printf("idle: %zu established, %zu failed\n", up, b->o.conns - up);
    fflush(stdout);
    uint64_t now = now_ns();
    atomic_store(&b->t_measure, now);
    atomic_store(&b->t_end, now + (uint64_t)(b->o.duration_s * 1e9));
}

/* wait_end sleeps until the end time or an interruption, which moves the end to now. */
static void wait_end(bench_t *b)
{
    const struct timespec tick = {0, 20 * 1000 * 1000};

    while (!g_interrupted && now_ns() < atomic_load(&b->t_end))
        nanosleep(&tick, NULL);
    if (g_interrupted) {
        uint64_t now = now_ns();
        if (now < atomic_load(&b->t_end))
            atomic_store(&b->t_end, now);
        if (now < atomic_load(&b->t_measure))
            atomic_store(&b->t_measure, now);
    }
}

/* run_workers starts the threads, waits for the run to end and joins them. Signals are
 * blocked in the threads, so that SIGINT reaches main. Returns 0 (reported) if a thread
 * could not start or its event loop broke. */
static int run_workers(bench_t *b, worker_t *ws)
{
    sigset_t block, old;
    size_t started = 0;
    int ok = 1;

    b->t_start = now_ns();
    if (b->o.mode == MODE_IDLE) {
        atomic_store(&b->t_measure, UINT64_MAX);
        atomic_store(&b->t_end, UINT64_MAX);
    } else {
        uint64_t measure = b->t_start + (uint64_t)(b->o.warmup_s * 1e9);
        atomic_store(&b->t_measure, measure);
        atomic_store(&b->t_end, measure + (uint64_t)(b->o.duration_s * 1e9));
    }
    for (size_t i = 0; i < b->o.threads; i++) {
        for (size_t j = 0; j < ws[i].nconns; j++) {
            if (b->interval_ns != 0)
                ws[i].conns[j].t_next += b->t_start;
        }
    }

    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (; started < b->o.threads; started++) {
        int rc = pthread_create(&ws[started].thread, NULL, worker_main, &ws[started]);
        if (rc != 0) {
            say("cannot start thread %zu: %s", started, strerror(rc));
            atomic_store(&b->t_end, 0);
            ok = 0;
            break;
        }
        ws[started].started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (ok && b->o.mode == MODE_IDLE)
        wait_idle_settled(b);
    if (ok)
        wait_end(b);
    for (size_t i = 0; i < started; i++) {
        pthread_join(ws[i].thread, NULL);
        if (ws[i].broken)
            ok = 0;
    }
    return ok;
}

/* ---- report ------------------------------------------------------------------------------ */

typedef struct {
    stats_t s;
    uint64_t errors;
    double seconds;
    double calls_per_s, tx_per_s, rx_per_s;
    uint64_t p50, p90, p99, p999;
    size_t failed; /* idle: never established */
} summary_t;

/* summarize merges the threads' statistics and derives the rates over the measured window. */
static void summarize(const bench_t *b, const worker_t *ws, summary_t *out)
{
    uint64_t t_measure = atomic_load(&b->t_measure), t_end = atomic_load(&b->t_end);

    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < b->o.threads; i++) {
        const stats_t *s = &ws[i].stats;
        hist_merge(&out->s.hist, &s->hist);
        out->s.calls += s->calls;
        out->s.resumed += s->resumed;
        out->s.tx_bytes += s->tx_bytes;
        out->s.rx_bytes += s->rx_bytes;
        out->s.established += s->established;
        for (size_t k = 0; k < ERR_KINDS; k++)
            out->s.errors[k] += s->errors[k];
    }
    for (size_t k = 0; k < ERR_KINDS; k++)
        out->errors += out->s.errors[k];
    out->seconds =
        t_end > t_measure && t_measure != UINT64_MAX ? (double)(t_end - t_measure) / 1e9 : 0.0;
    if (out->seconds > 0) {
        out->calls_per_s = (double)out->s.calls / out->seconds;
        out->tx_per_s = (double)out->s.tx_bytes / out->seconds;
        out->rx_per_s = (double)out->s.rx_bytes / out->seconds;
    }
    out->p50 = hist_percentile(&out->s.hist, 50.0);
    out->p90 = hist_percentile(&out->s.hist, 90.0);
    out->p99 = hist_percentile(&out->s.hist, 99.0);
    out->p999 = hist_percentile(&out->s.hist, 99.9);
    if (b->o.mode == MODE_IDLE)
        out->failed = b->o.conns - atomic_load(&b->up);
}

/* print_json writes the summary as one JSON object on one line. */
static void print_json(const bench_t *b, const summary_t *m)
{
    const opts_t *o = &b->o;

    printf("{\"mode\":\"%s\",\"conns\":%zu,\"threads\":%zu,\"duration_s\":%.3f,"
           "\"calls\":%" PRIu64 ",\"calls_per_s\":%.1f,\"p50_us\":%" PRIu64 ",\"p90_us\":%" PRIu64
           ",\"p99_us\":%" PRIu64 ",\"p999_us\":%" PRIu64 ",\"max_us\":%" PRIu64
           ",\"tx_bytes_per_s\":%.0f,\"rx_bytes_per_s\":%.0f,\"errors\":%" PRIu64
           ",\"handshakes_per_s\":%.1f,\"resumed\":%" PRIu64 ",\"established\":%" PRIu64
           ",\"failed\":%zu,\"error_kinds\":{",
           kModeNames[o->mode], o->conns, o->threads, m->seconds, m->s.calls, m->calls_per_s,
           m->p50, m->p90, m->p99, m->p999, m->s.hist.max, m->tx_per_s, m->rx_per_s, m->errors,
           o->mode == MODE_HANDSHAKE ? m->calls_per_s : 0.0, m->s.resumed, m->s.established,
           m->failed);
    for (size_t k = 0; k < ERR_KINDS; k++)
        printf("%s\"%s\":%" PRIu64, k == 0 ? "" : ",", kErrNames[k], m->s.errors[k]);
    printf("}}\n");
}

/* print_text writes the human-readable report. */
static void print_text(const bench_t *b, const summary_t *m)
{
    const opts_t *o = &b->o;

    printf("pyrobench %s: %s:%s, %s%s, %zu connection%s, %zu thread%s", kModeNames[o->mode],
           o->host, o->port, o->tls ? "TLS 1.3" : "plaintext",
           o->tls && o->resume ? " (resume)" : "", o->conns, o->conns == 1 ? "" : "s", o->threads,
           o->threads == 1 ? "" : "s");
    if (o->mode != MODE_IDLE) {
        printf(", %s.%s(%zu bytes) in a %zu-byte INVOKE, ", o->object, o->method, o->payload_bytes,
               b->invoke_len);
        if (o->rate > 0)
            printf("open loop at %.1f/s\n", o->rate);
        else
            printf("closed loop\n");
        printf("measured     %.2f s after %.2f s of warmup\n", m->seconds, o->warmup_s);
        printf("%-12s %" PRIu64 " (%.1f/s)\n", o->mode == MODE_HANDSHAKE ? "iterations" : "calls",
               m->s.calls, m->calls_per_s);
        printf("latency us   p50 %" PRIu64 "  p90 %" PRIu64 "  p99 %" PRIu64 "  p99.9 %" PRIu64
               "  max %" PRIu64 "\n",
               m->p50, m->p90, m->p99, m->p999, m->s.hist.max);
        printf("bytes/s      tx %.0f  rx %.0f\n", m->tx_per_s, m->rx_per_s);
        if (o->mode == MODE_HANDSHAKE)
            printf("handshakes   %.1f/s, %" PRIu64 " resumed\n", m->calls_per_s, m->s.resumed);
    } else {
        printf(", held %.2f s\n", m->seconds);
        printf("established  %" PRIu64 ", failed %zu\n", m->s.established, m->failed);
        printf("setup us     p50 %" PRIu64 "  p90 %" PRIu64 "  p99 %" PRIu64 "  p99.9 %" PRIu64
               "  max %" PRIu64 "\n",
               m->p50, m->p90, m->p99, m->p999, m->s.hist.max);
    }
    printf("errors       %" PRIu64, m->errors);
    for (size_t k = 0, shown = 0; k < ERR_KINDS; k++) {
        if (m->s.errors[k] != 0)
            printf("%s%s %" PRIu64, shown++ == 0 ? " (" : ", ", kErrNames[k], m->s.errors[k]);
    }
    printf("%s\n", m->errors != 0 ? ")" : "");
}

/* ---- main -------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static bench_t b; /* large and zeroed; the threads point into it */
    worker_t *ws = NULL;
    summary_t m;
    int help, status = 2;

    if (!parse_args(argc, argv, &b.o, &help)) {
        if (help) {
            usage(stdout);
            return 0;
        }
        return 2;
    }
    atomic_init(&b.t_measure, 0);
    atomic_init(&b.t_end, 0);
    atomic_init(&b.settled, 0);
    atomic_init(&b.up, 0);
    atomic_init(&b.notes_left, MAX_NOTES);
    if (!setup_signals()) {
        say("cannot install signal handlers: %s", strerror(errno));
        return 2;
    }
    if (!raise_fd_limit(&b.o) || !resolve_target(&b) || !build_messages(&b))
        return 2;
    if (b.o.tls && !readahead_method_init()) {
        say("cannot create the socket BIO method");
        goto free_messages;
    }
    if (b.o.tls && (b.ctx = tls_ctx_new(&b)) == NULL)
        goto free_messages;
    if (b.o.rate > 0)
        b.interval_ns = (uint64_t)((double)b.o.conns * 1e9 / b.o.rate);
    if ((ws = workers_new(&b)) == NULL)
        goto free_ctx;
    if (!run_workers(&b, ws))
        goto free_workers;

    summarize(&b, ws, &m);
    if (b.o.json)
        print_json(&b, &m);
    else
        print_text(&b, &m);
    fflush(stdout);
    status = m.errors != 0 ? 1 : 0;
    if (b.o.mode != MODE_IDLE && m.s.calls == 0) {
        say("no call completed in the measured window");
        status = 1;
    }

free_workers:
    workers_free(ws, b.o.threads);
free_ctx:
    SSL_CTX_free(b.ctx);
free_messages:
    BIO_meth_free(g_readahead_method); /* NULL without --tls */
    OPENSSL_free(b.connect_msg);
    OPENSSL_free(b.invoke_msg);
    return status;
}
