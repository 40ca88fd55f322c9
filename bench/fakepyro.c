/* fakepyro: a fast fake Pyro4 daemon (protocol 48, plaintext TCP) for benchmarks, so that the
 * backend behind pyroguard, HAProxy, stunnel, nginx or hitch is never the bottleneck. The real
 * Python daemon manages a few thousand calls/s; this one answers millions of pipelined calls per
 * second on one core.
 *
 *   fakepyro --listen HOST:PORT [--threads N] [--echo] [--max-bytes N] [--quiet]
 *
 *   --listen HOST:PORT  address to listen on (IPv6 as [::1]:PORT); PORT 0 picks a free port,
 *                       shown in the start-up line
 *   --threads N         N threads (1..256, default 1), each with its own epoll and its own
 *                       SO_REUSEPORT listening socket, so the kernel spreads connections
 *   --echo              INVOKE results are strings as long as the request's payload, so bulk
 *                       tests move the same number of bytes both ways (default: the string 'ok')
 *   --max-bytes N       largest data + annotations of one message (default 64 MiB, at most
 *                       2^31-1 + 65535); a larger header closes the connection
 *   --quiet             no per-connection log lines and no summary at exit
 *
 * Once every socket listens it prints "fakepyro: listening on HOST:PORT (N threads)" on stderr,
 * so scripts can wait for that line. Usage and bind errors exit 2; SIGINT/SIGTERM exit 0 after a
 * one-line summary.
 *
 * On the wire it behaves like a Pyro4 4.82 daemon serving one object whose only method is echo
 * (PROTOCOL.md §1-2; captures in tests/vectors/pyro4/serpent/echo/):
 *   CONNECT -> CONNECTOK with the handshake "hello" and, when the CONNECT has META_ON_CONNECT,
 *              the metadata {'methods':['echo'],'oneway':[],'attrs':[]} and that flag echoed;
 *   INVOKE  -> RESULT 'ok' (or the --echo string) for whatever object and method are named;
 *              nothing at all for ONEWAY;
 *   PING    -> PING with the raw data "pong", flags 0 (PING is never deserialized, so any
 *              serializer id is answered, PROTOCOL.md §2.5).
 * Replies carry the request's sequence number and serializer id and a 16-byte CORR annotation:
 * the request's own CORR when it has one, as the daemon does, else a per-thread counter.
 * Serializers serpent, json, marshal and msgpack are answered in kind (the ones pyroguard lets
 * through); anything else, a message out of order (not CONNECT first, a second CONNECT), a
 * BATCH call, a bad or oversized header or malformed annotations logs one line and closes the
 * connection without a reply, as the daemon drops such a stream. Payloads are never decoded.
 *
 * How it stays fast: level-triggered epoll, non-blocking sockets with TCP_NODELAY. Each read
 * (up to 256 KiB) lands in the thread's buffer; every complete message in it is answered into
 * the thread's output queue, which goes out with one writev per read. Only a partial header and
 * annotation block (at most 24 + 65535 bytes) is kept per connection between reads; payloads are
 * never buffered: a large remainder is discarded in the kernel with recv(MSG_TRUNC). Echo
 * strings are 'x' characters taken from one shared 1 MiB block, copied when small and referenced
 * by the writev otherwise. A connection whose replies do not fit the socket keeps them and is
 * not read again until they are sent. Nothing is allocated per message once buffers have grown
 * (this BoringSSL's CBB_init_fixed allocates, so one CBB spans a whole read batch).
 * The soft RLIMIT_NOFILE is raised to the hard limit at start. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "frame.h"

/* One read batch. More than a header plus the largest annotation block, so that what a
 * connection keeps between reads always fits in front of the next read. */
#define READ_BUF_LEN (256 * 1024)
/* The most a connection keeps between reads: an incomplete header and annotation block. */
#define PEND_MAX (FRAME4_HEADER_LEN + 0xffff)
/* Payload remainders at least this long are discarded by the kernel without a copy. */
#define SKIP_MIN (64 * 1024)
/* The most one recv(MSG_TRUNC) discards. */
#define SKIP_CHUNK (16 * 1024 * 1024)
/* The shared block of 'x' echo strings are cut from. */
#define FILLER_LEN (1024 * 1024)
/* Echo strings up to this long are copied into the reply, longer ones referenced. */
#define ECHO_COPY_MAX (16 * 1024)
/* iovecs per writev. */
#define IOV_BATCH  64
#define MAX_EVENTS 256
/* Connections accepted per readiness event of a listening socket, so accepting cannot starve
 * the connections already open. */
#define ACCEPT_BATCH      64
#define MAX_THREADS       256
#define DEFAULT_MAX_BYTES (64u * 1024 * 1024)
/* data (i32) + annotations (u16): nothing larger can be declared. */
#define LIMIT_MAX_BYTES (0x7fffffffull + 0xffff)
#define CORR_LEN        16
/* One CORR chunk: key, u16 length, value (PROTOCOL.md §2.2). */
#define REPLY_ANN_LEN (4 + 2 + CORR_LEN)
/* The least a batch CBB is opened for: replies are small, a batch holds many. */
#define REPLY_ROOM_MIN (64 * 1024)
/* A drained per-connection output queue bigger than this is freed rather than kept. */
#define OUT_KEEP_MAX   (1024 * 1024)
#define SERPENT_HEADER "# serpent utf-8 python3.2\n"

/* epoll's data pointer leads to one of these tags, the first member of what it belongs to. */
enum {
    EV_LISTEN = 1,
    EV_WAKE,
    EV_CONN,
};

typedef enum {
    ENC_SERPENT,
    ENC_JSON,
    ENC_MARSHAL,
    ENC_MSGPACK,
} enc_kind_t;

/* A serializer answered in kind, with its fixed payloads encoded once at start. */
typedef struct {
    uint16_t id;
    enc_kind_t kind;
    uint8_t hello[64]; /* CONNECTOK data without metadata: 'hello' */
    size_t hello_len;
    uint8_t meta[192]; /* CONNECTOK data with metadata */
    size_t meta_len;
    uint8_t ok[48]; /* RESULT data: 'ok' */
    size_t ok_len;
} ser_t;

typedef struct {
    char host[256]; /* as given, brackets included */
    char node[256]; /* for getaddrinfo: brackets removed */
    unsigned port;
    unsigned threads;
    int echo;
    size_t max_bytes;
    int quiet;
} options_t;

/* What every thread reads and nobody writes once the threads run. */
typedef struct {
    options_t opt;
    ser_t sers[4];
    uint8_t *filler; /* FILLER_LEN bytes of 'x' */
} fake_t;

/* A run of pending output: bytes in the queue's own buffer, or a piece of the filler. */
typedef struct {
    size_t off;
    size_t len;
    int filler;
} seg_t;

/* An output queue. Zero state is empty; outq_cleanup frees it and leaves it empty. */
typedef struct {
    uint8_t *bytes;
    size_t bytes_len, bytes_cap;
    seg_t *segs;
    size_t nsegs, segs_cap;
    size_t head;      /* first segment not completely sent */
    size_t head_sent; /* bytes of segs[head] already sent */
} outq_t;

/* The message whose payload is being consumed; it is answered once the payload is gone. */
typedef struct {
    uint16_t type, flags, seq, ser;
    uint32_t data_len;
    int has_corr;
    uint8_t corr[CORR_LEN];
} request_t;

typedef struct conn {
    int tag; /* EV_CONN */
    int fd;
    struct conn *prev, *next;
    uint8_t *pend; /* an incomplete header + annotations carried to the next read */
    size_t pend_len, pend_cap;
    int has_cur;        /* cur's header is in; its payload is being consumed */
    uint64_t body_left; /* payload bytes of cur still to come */
    request_t cur;
    int connected; /* a CONNECT was accepted */
    int blocked;   /* out holds replies: waiting for EPOLLOUT, not reading */
    outq_t out;
} conn_t;

typedef struct {
    int listen_tag; /* EV_LISTEN */
    int wake_tag;   /* EV_WAKE */
    const fake_t *fake;
    unsigned index;
    int epfd, lfd, wakefd, spare_fd;
    uint8_t *rbuf;
    outq_t scratch; /* replies of the current read batch */
    CBB cbb;        /* writes into scratch's bytes from cbb_base on, while cbb_open */
    int cbb_open;
    size_t cbb_base;
    uint8_t ann[REPLY_ANN_LEN]; /* the CORR chunk of the reply being written */
    uint8_t corr_prefix[8];     /* first half of generated CORR values: "fakep", thread */
    conn_t *conns;
    uint64_t corr_next;
    uint64_t accepted, requests;
    int failed;
    pthread_t thread;
} worker_t;

/* ---------------------------------------------------------------------------------------- */
/* Encoding the few values a reply holds, in each serializer's syntax. Strings are ASCII that
 * needs no escaping. */

/* A string length encoding: |head| bytes before the characters, for at most |max_n| of them. */
typedef struct {
    size_t head;
    uint64_t max_n;
} str_width_t;

static const str_width_t kTextWidths[] = {{1, UINT64_MAX}};
/* marshal: 'z' short ASCII (u8 length), 'a' ASCII (i32 little-endian length). */
static const str_width_t kMarshalWidths[] = {{2, 0xff}, {5, 0x7fffffff}};
/* msgpack: fixstr, str8, str16, str32 (big-endian lengths). */
static const str_width_t kMsgpackWidths[] = {{1, 31}, {2, 0xff}, {3, 0xffff}, {5, 0xffffffff}};

/* str_widths sets |*out| to |kind|'s string encodings, narrowest first, and returns how many. */
static size_t str_widths(enc_kind_t kind, const str_width_t **out)
{
    switch (kind) {
    case ENC_MARSHAL:
        *out = kMarshalWidths;
        return sizeof(kMarshalWidths) / sizeof(kMarshalWidths[0]);
    case ENC_MSGPACK:
        *out = kMsgpackWidths;
        return sizeof(kMsgpackWidths) / sizeof(kMsgpackWidths[0]);
    case ENC_SERPENT:
    case ENC_JSON:
        break;
    }
    *out = kTextWidths;
    return 1;
}

/* doc_prefix returns what |kind| puts before a document's top-level value. */
static const char *doc_prefix(enc_kind_t kind)
{
    return kind == ENC_SERPENT ? SERPENT_HEADER : "";
}

/* str_tail_len returns the bytes |kind| puts after a string's characters (a closing quote). */
static size_t str_tail_len(enc_kind_t kind)
{
    return kind == ENC_SERPENT || kind == ENC_JSON ? 1 : 0;
}

/* str_head_for_n returns the narrowest head able to announce |n| characters. */
static size_t str_head_for_n(enc_kind_t kind, uint64_t n)
{
    const str_width_t *w;
    size_t count = str_widths(kind, &w);
    for (size_t i = 0; i < count; i++) {
        if (n <= w[i].max_n)
            return w[i].head;
    }
    return w[count - 1].head; /* unreachable: the widest covers every length a frame allows */
}

/* str_plan_total finds a string encoding of exactly |total| bytes (document prefix included):
 * it sets |*out_head| and |*out_n| and returns 1, or returns 0 when |total| is too short even
 * for an empty string. */
static int str_plan_total(enc_kind_t kind, uint64_t total, size_t *out_head, uint64_t *out_n)
{
    const str_width_t *w;
    size_t count = str_widths(kind, &w);
    uint64_t fixed = strlen(doc_prefix(kind)) + str_tail_len(kind);
    for (size_t i = 0; i < count; i++) {
        uint64_t overhead = fixed + w[i].head;
        if (total >= overhead && total - overhead <= w[i].max_n) {
            *out_head = w[i].head;
            *out_n = total - overhead;
            return 1;
        }
    }
    return 0;
}

/* enc_str_head appends the head of a string of |n| characters, |head| bytes long (one of
 * |kind|'s widths, large enough for |n|). */
static int enc_str_head(CBB *cbb, enc_kind_t kind, uint64_t n, size_t head)
{
    switch (kind) {
    case ENC_SERPENT:
        return CBB_add_u8(cbb, '\'');
    case ENC_JSON:
        return CBB_add_u8(cbb, '"');
    case ENC_MARSHAL:
        if (head == 2)
            return CBB_add_u8(cbb, 'z') && CBB_add_u8(cbb, (uint8_t)n);
        return CBB_add_u8(cbb, 'a') && CBB_add_u32le(cbb, (uint32_t)n);
    case ENC_MSGPACK:
        if (head == 1)
            return CBB_add_u8(cbb, (uint8_t)(0xa0 | n));
        if (head == 2)
            return CBB_add_u8(cbb, 0xd9) && CBB_add_u8(cbb, (uint8_t)n);
        if (head == 3)
            return CBB_add_u8(cbb, 0xda) && CBB_add_u16(cbb, (uint16_t)n);
        return CBB_add_u8(cbb, 0xdb) && CBB_add_u32(cbb, (uint32_t)n);
    }
    return 0;
}

/* enc_str_tail appends what closes a string. */
static int enc_str_tail(CBB *cbb, enc_kind_t kind)
{
    switch (kind) {
    case ENC_SERPENT:
        return CBB_add_u8(cbb, '\'');
    case ENC_JSON:
        return CBB_add_u8(cbb, '"');
    case ENC_MARSHAL:
    case ENC_MSGPACK:
        break;
    }
    return 1;
}

/* enc_str appends the string |s|. */
static int enc_str(CBB *cbb, enc_kind_t kind, const char *s)
{
    size_t n = strlen(s);
    return enc_str_head(cbb, kind, n, str_head_for_n(kind, n)) &&
           CBB_add_bytes(cbb, (const uint8_t *)s, n) && enc_str_tail(cbb, kind);
}

/* enc_open starts a dict ('{') or list ('[') of |count| entries (at most 15). */
static int enc_open(CBB *cbb, enc_kind_t kind, char bracket, uint8_t count)
{
    switch (kind) {
    case ENC_SERPENT:
    case ENC_JSON:
        return CBB_add_u8(cbb, (uint8_t)bracket);
    case ENC_MARSHAL:
        /* A marshal dict runs to a '0' (TYPE_NULL); a list is counted. */
        if (bracket == '{')
            return CBB_add_u8(cbb, '{');
        return CBB_add_u8(cbb, '[') && CBB_add_u32le(cbb, count);
    case ENC_MSGPACK:
        return CBB_add_u8(cbb, (uint8_t)((bracket == '{' ? 0x80 : 0x90) | count));
    }
    return 0;
}

/* enc_close ends what the matching enc_open started. */
static int enc_close(CBB *cbb, enc_kind_t kind, char bracket)
{
    switch (kind) {
    case ENC_SERPENT:
    case ENC_JSON:
        return CBB_add_u8(cbb, bracket == '{' ? '}' : ']');
    case ENC_MARSHAL:
        return bracket == '{' ? CBB_add_u8(cbb, '0') : 1;
    case ENC_MSGPACK:
        break;
    }
    return 1;
}

/* enc_punct appends ':' or ',' where the syntax has them (the text formats). */
static int enc_punct(CBB *cbb, enc_kind_t kind, char c)
{
    if (kind == ENC_SERPENT || kind == ENC_JSON)
        return CBB_add_u8(cbb, (uint8_t)c);
    return 1;
}

/* enc_key appends a dict key and what separates it from its value. */
static int enc_key(CBB *cbb, enc_kind_t kind, const char *key)
{
    return enc_str(cbb, kind, key) && enc_punct(cbb, kind, ':');
}

/* enc_meta appends the daemon's get_metadata(as_lists=True) for an object with one method,
 * echo: {'methods':['echo'],'oneway':[],'attrs':[]}. */
static int enc_meta(CBB *cbb, enc_kind_t k)
{
    return enc_open(cbb, k, '{', 3) && enc_key(cbb, k, "methods") && enc_open(cbb, k, '[', 1) &&
           enc_str(cbb, k, "echo") && enc_close(cbb, k, '[') && enc_punct(cbb, k, ',') &&
           enc_key(cbb, k, "oneway") && enc_open(cbb, k, '[', 0) && enc_close(cbb, k, '[') &&
           enc_punct(cbb, k, ',') && enc_key(cbb, k, "attrs") && enc_open(cbb, k, '[', 0) &&
           enc_close(cbb, k, '[') && enc_close(cbb, k, '{');
}

typedef enum {
    DOC_HELLO,     /* 'hello' */
    DOC_HANDSHAKE, /* {'handshake':'hello','meta':{…}} */
    DOC_OK,        /* 'ok' */
} doc_t;

/* enc_doc encodes document |doc| in |k|'s syntax into the |cap| bytes at |buf| and sets
 * |*out_len|. It returns 1, or 0 if it does not fit. */
static int enc_doc(enc_kind_t k, doc_t doc, uint8_t *buf, size_t cap, size_t *out_len)
{
    CBB cbb;
    const char *pre = doc_prefix(k);
    int ok;

    CBB_zero(&cbb);
    ok = CBB_init_fixed(&cbb, buf, cap) && CBB_add_bytes(&cbb, (const uint8_t *)pre, strlen(pre));
    switch (doc) {
    case DOC_HELLO:
        ok = ok && enc_str(&cbb, k, "hello");
        break;
    case DOC_HANDSHAKE:
        ok = ok && enc_open(&cbb, k, '{', 2) && enc_key(&cbb, k, "handshake") &&
             enc_str(&cbb, k, "hello") && enc_punct(&cbb, k, ',') && enc_key(&cbb, k, "meta") &&
             enc_meta(&cbb, k) && enc_close(&cbb, k, '{');
        break;
    case DOC_OK:
        ok = ok && enc_str(&cbb, k, "ok");
        break;
    }
    if (ok)
        *out_len = CBB_len(&cbb);
    CBB_cleanup(&cbb);
    return ok;
}

/* ser_init encodes |s|'s fixed payloads. */
static int ser_init(ser_t *s, uint16_t id, enc_kind_t k)
{
    s->id = id;
    s->kind = k;
    return enc_doc(k, DOC_HELLO, s->hello, sizeof(s->hello), &s->hello_len) &&
           enc_doc(k, DOC_HANDSHAKE, s->meta, sizeof(s->meta), &s->meta_len) &&
           enc_doc(k, DOC_OK, s->ok, sizeof(s->ok), &s->ok_len);
}

/* find_ser returns the serializer with Pyro4 id |id|, or NULL if it is not answered. */
static const ser_t *find_ser(const fake_t *fake, uint16_t id)
{
    for (size_t i = 0; i < sizeof(fake->sers) / sizeof(fake->sers[0]); i++) {
        if (fake->sers[i].id == id)
            return &fake->sers[i];
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Output queues. */

/* outq_push appends a segment, merging it into the last one when both are contiguous bytes. */
static int outq_push(outq_t *q, int filler, size_t off, size_t len)
{
    if (q->nsegs > q->head) {
        seg_t *last = &q->segs[q->nsegs - 1];
        if (!filler && !last->filler && last->off + last->len == off) {
            last->len += len;
            return 1;
        }
    }
    if (q->nsegs == q->segs_cap) {
        size_t cap = q->segs_cap ? q->segs_cap * 2 : 16;
        seg_t *segs = realloc(q->segs, cap * sizeof(*segs));
        if (segs == NULL)
            return 0;
        q->segs = segs;
        q->segs_cap = cap;
    }
    q->segs[q->nsegs++] = (seg_t){.off = off, .len = len, .filler = filler};
    return 1;
}

/* outq_grow makes room for at least |n| more bytes after bytes_len (moving the buffer: segments
 * hold offsets, not pointers). */
static int outq_grow(outq_t *q, size_t n)
{
    if (q->bytes_cap - q->bytes_len >= n)
        return 1;
    if (n > SIZE_MAX / 4 - q->bytes_len)
        return 0;
    size_t cap = q->bytes_cap ? q->bytes_cap : 4096;
    while (cap - q->bytes_len < n)
        cap *= 2;
    uint8_t *bytes = realloc(q->bytes, cap);
    if (bytes == NULL)
        return 0;
    q->bytes = bytes;
    q->bytes_cap = cap;
    return 1;
}

/* outq_append queues a copy of |n| bytes at |p|. */
static int outq_append(outq_t *q, const uint8_t *p, size_t n)
{
    if (!outq_grow(q, n))
        return 0;
    memcpy(q->bytes + q->bytes_len, p, n);
    if (!outq_push(q, 0, q->bytes_len, n))
        return 0;
    q->bytes_len += n;
    return 1;
}

/* outq_add_filler queues |n| filler bytes by reference, one segment per FILLER_LEN. */
static int outq_add_filler(outq_t *q, uint64_t n)
{
    while (n > 0) {
        size_t len = n < FILLER_LEN ? (size_t)n : FILLER_LEN;
        if (!outq_push(q, 1, 0, len))
            return 0;
        n -= len;
    }
    return 1;
}

/* outq_empty says whether everything queued has been sent. */
static int outq_empty(const outq_t *q)
{
    return q->head == q->nsegs;
}

/* outq_reset empties |q| and keeps its memory. */
static void outq_reset(outq_t *q)
{
    q->bytes_len = q->nsegs = q->head = q->head_sent = 0;
}

/* outq_cleanup frees |q|'s memory and leaves it empty. */
static void outq_cleanup(outq_t *q)
{
    free(q->bytes);
    free(q->segs);
    memset(q, 0, sizeof(*q));
}

/* outq_send writes what |q| holds to |fd| until it is empty or the socket is full. It returns
 * 1 (check outq_empty) or 0 on a write error. */
static int outq_send(outq_t *q, int fd, uint8_t *filler)
{
    struct iovec iov[IOV_BATCH];

    while (!outq_empty(q)) {
        int n = 0;
        size_t want = 0;
        for (size_t i = q->head; i < q->nsegs && n < IOV_BATCH; i++, n++) {
            const seg_t *s = &q->segs[i];
            size_t skip = i == q->head ? q->head_sent : 0;
            uint8_t *base = s->filler ? filler : q->bytes;
            iov[n].iov_base = base + s->off + skip;
            iov[n].iov_len = s->len - skip;
            want += iov[n].iov_len;
        }
        ssize_t r = writev(fd, iov, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
        size_t done = (size_t)r;
        while (done > 0) {
            size_t left = q->segs[q->head].len - q->head_sent;
            if (done < left) {
                q->head_sent += done;
                break;
            }
            done -= left;
            q->head++;
            q->head_sent = 0;
        }
        if ((size_t)r < want)
            return 1;
    }
    outq_reset(q);
    return 1;
}

/* outq_take moves what |src| has not sent to the end of |dst| (bytes copied, filler pieces by
 * reference) and empties |src|. It returns 1, or 0 when out of memory. */
static int outq_take(outq_t *dst, outq_t *src)
{
    for (size_t i = src->head; i < src->nsegs; i++) {
        const seg_t *s = &src->segs[i];
        size_t skip = i == src->head ? src->head_sent : 0;
        int ok = s->filler ? outq_push(dst, 1, s->off + skip, s->len - skip)
                           : outq_append(dst, src->bytes + s->off + skip, s->len - skip);
        if (!ok)
            return 0;
    }
    outq_reset(src);
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Replies, written with one CBB per read batch into the worker's scratch queue: this
 * BoringSSL's CBB_init_fixed allocates the CBB's state, so a CBB per reply would allocate per
 * message. Each reply is queued (reply_commit) as soon as it is written. */

/* reply_close ends the batch CBB (queued bytes stay queued, anything uncommitted is dropped). */
static void reply_close(worker_t *w)
{
    if (w->cbb_open)
        CBB_cleanup(&w->cbb);
    w->cbb_open = 0;
}

/* reply_room returns the batch CBB with room for |need| more bytes, opening it or, when the
 * scratch buffer must grow, closing and reopening it behind what is already queued. NULL when
 * out of memory. */
static CBB *reply_room(worker_t *w, size_t need)
{
    outq_t *q = &w->scratch;

    if (w->cbb_open && q->bytes_cap - q->bytes_len >= need)
        return &w->cbb;
    reply_close(w);
    if (!outq_grow(q, need < REPLY_ROOM_MIN ? REPLY_ROOM_MIN : need))
        return NULL;
    CBB_zero(&w->cbb);
    if (!CBB_init_fixed(&w->cbb, q->bytes + q->bytes_len, q->bytes_cap - q->bytes_len))
        return NULL;
    w->cbb_open = 1;
    w->cbb_base = q->bytes_len;
    return &w->cbb;
}

/* reply_commit queues what the batch CBB holds beyond what is queued already. */
static int reply_commit(worker_t *w)
{
    outq_t *q = &w->scratch;
    size_t end = w->cbb_base + CBB_len(&w->cbb);
    size_t start = q->bytes_len;

    if (!outq_push(q, 0, start, end - start))
        return 0;
    q->bytes_len = end;
    return 1;
}

/* reply_ann sets the CORR chunk of the reply to |r|: the request's own, else the worker's
 * next counter value, big-endian (the daemon would send a random UUID). */
static void reply_ann(worker_t *w, const request_t *r)
{
    uint8_t *corr = w->ann + REPLY_ANN_LEN - CORR_LEN;

    if (r->has_corr) {
        memcpy(corr, r->corr, CORR_LEN);
        return;
    }
    uint64_t n = htobe64(w->corr_next++);
    memcpy(corr, w->corr_prefix, sizeof(w->corr_prefix));
    memcpy(corr + sizeof(w->corr_prefix), &n, sizeof(n));
}

/* put_frame queues a whole reply with a fixed payload, built by frame_build. */
static int put_frame(worker_t *w, const request_t *r, uint16_t type, uint16_t flags,
                     const uint8_t *payload, size_t len)
{
    CBB *cbb = reply_room(w, FRAME4_HEADER_LEN + REPLY_ANN_LEN + len);

    reply_ann(w, r);
    return cbb != NULL &&
           frame_build(cbb, type, flags, r->seq, r->ser, w->ann, REPLY_ANN_LEN, payload, len) &&
           reply_commit(w);
}

/* put_header appends a reply header announcing |data_len| bytes of payload, and its CORR
 * chunk; frame_build cannot be used when the payload is not contiguous. */
static int put_header(worker_t *w, CBB *cbb, const request_t *r, uint16_t type, uint16_t flags,
                      uint32_t data_len)
{
    uint16_t sum =
        frame_checksum(type, FRAME4_VERSION, data_len, REPLY_ANN_LEN, r->ser, flags, r->seq);

    reply_ann(w, r);
    return CBB_add_bytes(cbb, (const uint8_t *)"PYRO", 4) && CBB_add_u16(cbb, FRAME4_VERSION) &&
           CBB_add_u16(cbb, type) && CBB_add_u16(cbb, flags) && CBB_add_u16(cbb, r->seq) &&
           CBB_add_u32(cbb, data_len) && CBB_add_u16(cbb, r->ser) &&
           CBB_add_u16(cbb, REPLY_ANN_LEN) && CBB_add_u16(cbb, 0) && CBB_add_u16(cbb, sum) &&
           CBB_add_bytes(cbb, w->ann, REPLY_ANN_LEN);
}

/* put_echo queues a RESULT whose payload is a string of 'x' exactly as long as the request's
 * payload, or the empty string when that is too short to hold one. */
static int put_echo(worker_t *w, const request_t *r, const ser_t *s)
{
    const char *pre = doc_prefix(s->kind);
    size_t pre_len = strlen(pre), head, tail = str_tail_len(s->kind);
    uint64_t n;
    CBB *cbb;

    if (!str_plan_total(s->kind, r->data_len, &head, &n)) {
        head = str_head_for_n(s->kind, 0);
        n = 0;
    }
    uint64_t data_len = pre_len + head + n + tail;
    if (data_len > 0x7fffffff)
        return 0;
    int copy = n <= ECHO_COPY_MAX;
    cbb = reply_room(w, FRAME4_HEADER_LEN + REPLY_ANN_LEN + pre_len + head +
                            (copy ? (size_t)n + tail : 0));
    if (cbb == NULL || !put_header(w, cbb, r, MSG_RESULT, 0, (uint32_t)data_len) ||
        !CBB_add_bytes(cbb, (const uint8_t *)pre, pre_len) || !enc_str_head(cbb, s->kind, n, head))
        return 0;
    if (copy)
        return CBB_add_bytes(cbb, w->fake->filler, (size_t)n) && enc_str_tail(cbb, s->kind) &&
               reply_commit(w);
    if (!reply_commit(w) || !outq_add_filler(&w->scratch, n))
        return 0;
    if (tail == 0)
        return 1;
    cbb = reply_room(w, tail);
    return cbb != NULL && enc_str_tail(cbb, s->kind) && reply_commit(w);
}

/* ---------------------------------------------------------------------------------------- */
/* Connections. */

/* conn_log prints one line about |c| (its peer address first) unless --quiet. */
__attribute__((format(printf, 3, 4))) static void conn_log(const worker_t *w, const conn_t *c,
                                                           const char *fmt, ...)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char addr[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    char msg[256];
    va_list ap;

    if (w->fake->opt.quiet)
        return;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, addr, sizeof(addr));
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, addr, sizeof(addr));
            port = ntohs(a->sin6_port);
        }
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "fakepyro: %s:%u: %s; closing\n", addr, port, msg);
}

/* conn_close closes |c|'s socket (which takes it out of epoll) and frees it. */
static void conn_close(worker_t *w, conn_t *c)
{
    close(c->fd);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    outq_cleanup(&c->out);
    free(c->pend);
    free(c);
}

/* conn_watch sets what epoll reports for |c|: readable, or writable while replies wait. */
static int conn_watch(worker_t *w, conn_t *c, int blocked)
{
    struct epoll_event ev = {.events = blocked ? EPOLLOUT : EPOLLIN, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        return 0;
    c->blocked = blocked;
    return 1;
}

/* conn_keep carries |len| bytes of an incomplete header and annotation block to the next
 * read. It returns 1, or 0 when out of memory. */
static int conn_keep(worker_t *w, conn_t *c, const uint8_t *p, size_t len)
{
    if (len > PEND_MAX) { /* unreachable: frame_parse_header bounds the annotations */
        conn_log(w, c, "internal: %zu bytes left over", len);
        return 0;
    }
    if (c->pend_cap < len) {
        size_t cap = c->pend_cap ? c->pend_cap : 256;
        while (cap < len)
            cap *= 2;
        if (cap > PEND_MAX)
            cap = PEND_MAX;
        uint8_t *pend = realloc(c->pend, cap);
        if (pend == NULL) {
            conn_log(w, c, "out of memory");
            return 0;
        }
        c->pend = pend;
        c->pend_cap = cap;
    }
    memcpy(c->pend, p, len);
    c->pend_len = len;
    return 1;
}

/* conn_start checks a message whose header and annotations are in and makes it the one being
 * consumed. It returns 1, or 0 (logged) when the daemon would drop the connection or the fake
 * does not answer it. */
static int conn_start(worker_t *w, conn_t *c, const frame_t *f, CBS anns)
{
    request_t *r = &c->cur;
    frame_annotation_t a;

    switch (f->type) {
    case MSG_CONNECT:
        if (c->connected) {
            conn_log(w, c, "second CONNECT");
            return 0;
        }
        break;
    case MSG_INVOKE:
    case MSG_PING:
        if (!c->connected) {
            conn_log(w, c, "%s before CONNECT", frame_type_name(f->type));
            return 0;
        }
        break;
    default:
        conn_log(w, c, "unexpected message type %u (%s)", f->type, frame_type_name(f->type));
        return 0;
    }
    /* PING is never deserialized, so its serializer id is not checked (PROTOCOL.md §2.5). */
    if (f->type != MSG_PING && find_ser(w->fake, f->serializer_id) == NULL) {
        const char *name = frame_serializer_name(f->serializer_id);
        conn_log(w, c, "%s with serializer %u (%s) not answered", frame_type_name(f->type),
                 f->serializer_id, name ? name : "unknown");
        return 0;
    }
    if (f->type == MSG_INVOKE && (f->flags & FLAG4_BATCH)) {
        conn_log(w, c, "BATCH calls not answered");
        return 0;
    }
    memset(r, 0, sizeof(*r));
    /* Duplicate keys: the last one wins, as in Pyro4's dict (PROTOCOL.md §2.2). */
    while (CBS_len(&anns) > 0) {
        if (!frame_annotation_next(&anns, &a)) {
            conn_log(w, c, "malformed annotations");
            return 0;
        }
        if (memcmp(a.key, "CORR", 4) == 0 && CBS_len(&a.value) == CORR_LEN) {
            memcpy(r->corr, CBS_data(&a.value), CORR_LEN);
            r->has_corr = 1;
        }
    }
    r->type = f->type;
    r->flags = f->flags;
    r->seq = f->seq;
    r->ser = f->serializer_id;
    r->data_len = f->data_len;
    if (f->type == MSG_CONNECT)
        c->connected = 1;
    c->has_cur = 1;
    c->body_left = f->data_len;
    return 1;
}

/* conn_answer queues the reply to the message whose payload has just been consumed. */
static int conn_answer(worker_t *w, conn_t *c)
{
    const request_t *r = &c->cur;
    const ser_t *s = find_ser(w->fake, r->ser);
    int ok = 1;

    c->has_cur = 0;
    w->requests++;
    switch (r->type) {
    case MSG_CONNECT:
        if (r->flags & FLAG4_META_ON_CONNECT)
            ok = put_frame(w, r, MSG_CONNECTOK, FLAG4_META_ON_CONNECT, s->meta, s->meta_len);
        else
            ok = put_frame(w, r, MSG_CONNECTOK, 0, s->hello, s->hello_len);
        break;
    case MSG_INVOKE:
        if (r->flags & FLAG4_ONEWAY)
            break;
        if (w->fake->opt.echo)
            ok = put_echo(w, r, s);
        else
            ok = put_frame(w, r, MSG_RESULT, 0, s->ok, s->ok_len);
        break;
    case MSG_PING:
        ok = put_frame(w, r, MSG_PING, 0, (const uint8_t *)"pong", 4);
        break;
    default:
        break;
    }
    if (!ok)
        conn_log(w, c, "out of memory");
    return ok;
}

/* conn_consume answers every complete message in |len| bytes at |p|, carrying an incomplete
 * header to the next read. It returns 1, or 0 (logged) when |c| must be closed. */
static int conn_consume(worker_t *w, conn_t *c, const uint8_t *p, size_t len)
{
    size_t off = 0;
    frame_t f;
    frame_error_t err;
    CBS anns;

    for (;;) {
        if (c->has_cur) {
            size_t avail = len - off;
            size_t take = c->body_left < avail ? (size_t)c->body_left : avail;
            off += take;
            c->body_left -= take;
            if (c->body_left > 0)
                return 1;
            if (!conn_answer(w, c))
                return 0;
        }
        if (off == len)
            return 1;
        switch (frame_parse_header(p + off, len - off, w->fake->opt.max_bytes, &f, &err)) {
        case FRAME_NEED_MORE:
            return conn_keep(w, c, p + off, len - off);
        case FRAME_ERROR:
            conn_log(w, c, "bad header (%s)", frame_error_reason(err));
            return 0;
        case FRAME_OK:
            break;
        }
        size_t head = FRAME4_HEADER_LEN + (size_t)f.ann_len;
        if (len - off < head)
            return conn_keep(w, c, p + off, len - off);
        CBS_init(&anns, p + off + FRAME4_HEADER_LEN, f.ann_len);
        if (!conn_start(w, c, &f, anns))
            return 0;
        off += head;
    }
}

/* conn_flush sends the replies of a read batch; what the socket does not take stays with |c|,
 * which then waits to be writable. |ok| 0 means |c| is to be closed after a last attempt to
 * send the replies to the messages before the bad one. It returns 1, or 0 to close. */
static int conn_flush(worker_t *w, conn_t *c, int ok)
{
    reply_close(w);
    if (outq_empty(&w->scratch))
        return ok;
    if (!outq_send(&w->scratch, c->fd, w->fake->filler) || !ok)
        goto reset_scratch;
    if (outq_empty(&w->scratch))
        return 1;
    if (!outq_take(&c->out, &w->scratch)) {
        conn_log(w, c, "out of memory");
        goto reset_scratch;
    }
    return conn_watch(w, c, 1);

reset_scratch:
    outq_reset(&w->scratch);
    return 0;
}

/* conn_skip discards the rest of a large payload in the kernel (TCP's recv(MSG_TRUNC) drops
 * data without copying it) and answers once it is gone. It returns 1, or 0 to close. */
static int conn_skip(worker_t *w, conn_t *c)
{
    size_t want = c->body_left < SKIP_CHUNK ? (size_t)c->body_left : SKIP_CHUNK;
    ssize_t r;

    do
        r = recv(c->fd, NULL, want, MSG_TRUNC);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK;
    if (r == 0)
        return 0;
    c->body_left -= (uint64_t)r;
    if (c->body_left > 0)
        return 1;
    return conn_flush(w, c, conn_answer(w, c));
}

/* conn_readable reads one batch into the worker's buffer, behind what |c| kept from the last
 * one, and answers it. It returns 1, or 0 to close. */
static int conn_readable(worker_t *w, conn_t *c)
{
    ssize_t r;

    if (c->has_cur && c->body_left >= SKIP_MIN)
        return conn_skip(w, c);
    do
        r = read(c->fd, w->rbuf + c->pend_len, READ_BUF_LEN - c->pend_len);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK;
    if (r == 0)
        return 0; /* the client hung up; mid-message or not, the daemon says nothing */
    size_t len = c->pend_len + (size_t)r;
    if (c->pend_len > 0)
        memcpy(w->rbuf, c->pend, c->pend_len);
    c->pend_len = 0;
    return conn_flush(w, c, conn_consume(w, c, w->rbuf, len));
}

/* conn_writable sends what waits for |c| and resumes reading once it is all gone. It returns
 * 1, or 0 to close. */
static int conn_writable(worker_t *w, conn_t *c)
{
    if (!outq_send(&c->out, c->fd, w->fake->filler))
        return 0;
    if (!outq_empty(&c->out))
        return 1;
    if (c->out.bytes_cap > OUT_KEEP_MAX)
        outq_cleanup(&c->out);
    return conn_watch(w, c, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* Workers. */

/* worker_accept_one sets up a freshly accepted socket. */
static void worker_accept_one(worker_t *w, int fd)
{
    int one = 1;
    conn_t *c = calloc(1, sizeof(*c));
    struct epoll_event ev = {.events = EPOLLIN};

    if (c == NULL) {
        close(fd);
        return;
    }
    c->tag = EV_CONN;
    c->fd = fd;
    ev.data.ptr = c;
    /* Nagle would hold back a reply that follows another still unacknowledged. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        free(c);
        return;
    }
    c->next = w->conns;
    if (w->conns != NULL)
        w->conns->prev = c;
    w->conns = c;
    w->accepted++;
}

/* worker_accept accepts what the listening socket has, up to ACCEPT_BATCH. Out of file
 * descriptors, the spare one is given up to accept and drop a connection, so the listening
 * socket does not stay readable for ever (level-triggered epoll would spin). */
static void worker_accept(worker_t *w)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            worker_accept_one(w, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if ((errno == EMFILE || errno == ENFILE) && w->spare_fd >= 0) {
            if (!w->fake->opt.quiet)
                fprintf(stderr, "fakepyro: out of file descriptors; dropping a connection\n");
            close(w->spare_fd);
            fd = accept(w->lfd, NULL, NULL);
            if (fd >= 0)
                close(fd);
            w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        }
        return;
    }
}

/* worker_run is a thread's event loop; it returns when woken through |wakefd|. */
static void *worker_run(void *arg)
{
    worker_t *w = arg;
    struct epoll_event evs[MAX_EVENTS];

    for (;;) {
        int n = epoll_wait(w->epfd, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("fakepyro: epoll_wait");
            w->failed = 1;
            kill(getpid(), SIGTERM);
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            int tag = *(const int *)evs[i].data.ptr;
            if (tag == EV_WAKE)
                return NULL;
            if (tag == EV_LISTEN) {
                worker_accept(w);
                continue;
            }
            conn_t *c = evs[i].data.ptr;
            int ok = c->blocked ? conn_writable(w, c) : conn_readable(w, c);
            if (!ok)
                conn_close(w, c);
        }
    }
}

/* worker_cleanup closes every socket of |w| and frees what it holds. Safe on a zeroed worker
 * whose descriptors are -1. */
static void worker_cleanup(worker_t *w)
{
    while (w->conns != NULL)
        conn_close(w, w->conns);
    if (w->lfd >= 0)
        close(w->lfd);
    if (w->epfd >= 0)
        close(w->epfd);
    if (w->wakefd >= 0)
        close(w->wakefd);
    if (w->spare_fd >= 0)
        close(w->spare_fd);
    reply_close(w);
    outq_cleanup(&w->scratch);
    free(w->rbuf);
    w->rbuf = NULL;
    w->lfd = w->epfd = w->wakefd = w->spare_fd = -1;
}

/* open_listener binds a listening socket to |addr|, with SO_REUSEPORT when |reuseport|. It
 * returns the socket, or -1 with errno set. */
static int open_listener(const struct sockaddr *addr, socklen_t len, int reuseport)
{
    int one = 1;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        bind(fd, addr, len) != 0 || listen(fd, 65535) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* port_is_free says whether nothing listens on |addr|. SO_REUSEPORT would otherwise let these
 * threads silently share the port with a fakepyro left over from an earlier run (same user),
 * splitting the connections between the two; a socket without it cannot bind next to one. */
static int port_is_free(const struct sockaddr *addr, socklen_t len)
{
    int fd = open_listener(addr, len, 0);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* worker_ids writes the fixed part of |w|'s reply annotation, "CORR" and its length, and the
 * first half of the CORR values it makes up: "fakep", then the thread's number. */
static int worker_ids(worker_t *w)
{
    CBB cbb;
    int ok;

    CBB_zero(&cbb);
    ok = CBB_init_fixed(&cbb, w->ann, REPLY_ANN_LEN - CORR_LEN) &&
         CBB_add_bytes(&cbb, (const uint8_t *)"CORR", 4) && CBB_add_u16(&cbb, CORR_LEN);
    CBB_cleanup(&cbb);
    CBB_zero(&cbb);
    ok = ok && CBB_init_fixed(&cbb, w->corr_prefix, sizeof(w->corr_prefix)) &&
         CBB_add_bytes(&cbb, (const uint8_t *)"fakep", 5) && CBB_add_u24(&cbb, w->index);
    CBB_cleanup(&cbb);
    return ok;
}

/* worker_init gives |w| its epoll, wake-up eventfd, buffers and a listening socket on |addr|.
 * It returns 1, or 0 with a message printed; worker_cleanup undoes what was done. */
static int worker_init(worker_t *w, const fake_t *fake, unsigned index, const struct sockaddr *addr,
                       socklen_t len)
{
    struct epoll_event ev = {.events = EPOLLIN};

    w->listen_tag = EV_LISTEN;
    w->wake_tag = EV_WAKE;
    w->fake = fake;
    w->index = index;
    if (!worker_ids(w)) {
        fprintf(stderr, "fakepyro: out of memory\n");
        return 0;
    }
    w->lfd = open_listener(addr, len, 1);
    if (w->lfd < 0) {
        fprintf(stderr, "fakepyro: cannot listen on %s:%u: %s\n", fake->opt.host, fake->opt.port,
                strerror(errno));
        return 0;
    }
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    w->rbuf = malloc(READ_BUF_LEN);
    if (w->epfd < 0 || w->wakefd < 0 || w->rbuf == NULL) {
        perror("fakepyro: worker set-up");
        return 0;
    }
    ev.data.ptr = &w->listen_tag;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->lfd, &ev) != 0) {
        perror("fakepyro: epoll_ctl");
        return 0;
    }
    ev.data.ptr = &w->wake_tag;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &ev) != 0) {
        perror("fakepyro: epoll_ctl");
        return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Start-up. */

/* usage prints the command line and returns 2, the exit status of a usage error. */
static int usage(void)
{
    fprintf(stderr, "usage: fakepyro --listen HOST:PORT [--threads N] [--echo] [--max-bytes N] "
                    "[--quiet]\n");
    return 2;
}

/* parse_uint reads a decimal number in [lo, hi] from |s| (digits only). */
static int parse_uint(const char *s, unsigned long long lo, unsigned long long hi,
                      unsigned long long *out)
{
    char *end;

    if (s[0] < '0' || s[0] > '9')
        return 0;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

/* parse_listen splits HOST:PORT (HOST may be a bracketed IPv6 address) into |opt|. */
static int parse_listen(const char *s, options_t *opt)
{
    const char *colon = strrchr(s, ':');
    unsigned long long port;
    size_t host_len;

    if (colon == NULL || colon == s || !parse_uint(colon + 1, 0, 65535, &port))
        return 0;
    host_len = (size_t)(colon - s);
    if (host_len >= sizeof(opt->host))
        return 0;
    memcpy(opt->host, s, host_len);
    opt->host[host_len] = '\0';
    if (s[0] == '[') {
        if (host_len < 3 || s[host_len - 1] != ']')
            return 0;
        memcpy(opt->node, s + 1, host_len - 2);
        opt->node[host_len - 2] = '\0';
    } else {
        if (memchr(s, ':', host_len) != NULL) /* an IPv6 address wants brackets */
            return 0;
        memcpy(opt->node, s, host_len);
        opt->node[host_len] = '\0';
    }
    opt->port = (unsigned)port;
    return 1;
}

/* parse_args fills |opt| from the command line; it prints what is wrong and returns 0. */
static int parse_args(int argc, char **argv, options_t *opt)
{
    unsigned long long v;
    int have_listen = 0;

    memset(opt, 0, sizeof(*opt));
    opt->threads = 1;
    opt->max_bytes = DEFAULT_MAX_BYTES;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--echo") == 0) {
            opt->echo = 1;
        } else if (strcmp(a, "--quiet") == 0) {
            opt->quiet = 1;
        } else if (strcmp(a, "--listen") == 0 && val != NULL) {
            if (!parse_listen(val, opt)) {
                fprintf(stderr, "fakepyro: --listen wants HOST:PORT, not '%s'\n", val);
                return 0;
            }
            have_listen = 1;
            i++;
        } else if (strcmp(a, "--threads") == 0 && val != NULL) {
            if (!parse_uint(val, 1, MAX_THREADS, &v)) {
                fprintf(stderr, "fakepyro: --threads wants 1..%d, not '%s'\n", MAX_THREADS, val);
                return 0;
            }
            opt->threads = (unsigned)v;
            i++;
        } else if (strcmp(a, "--max-bytes") == 0 && val != NULL) {
            if (!parse_uint(val, 1, LIMIT_MAX_BYTES, &v)) {
                fprintf(stderr, "fakepyro: --max-bytes wants 1..%llu, not '%s'\n", LIMIT_MAX_BYTES,
                        val);
                return 0;
            }
            opt->max_bytes = (size_t)v;
            i++;
        } else {
            fprintf(stderr, "fakepyro: unexpected argument '%s'\n", a);
            return 0;
        }
    }
    if (!have_listen) {
        fprintf(stderr, "fakepyro: --listen is required\n");
        return 0;
    }
    return 1;
}

/* raise_nofile lifts the soft limit on open files to the hard one: 10,000 connections need
 * more than the usual 1024. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        perror("fakepyro: setrlimit(RLIMIT_NOFILE)");
}

/* fake_init encodes the serializers' payloads and fills the echo block. */
static int fake_init(fake_t *fake)
{
    if (!ser_init(&fake->sers[0], SER4_SERPENT, ENC_SERPENT) ||
        !ser_init(&fake->sers[1], SER4_JSON, ENC_JSON) ||
        !ser_init(&fake->sers[2], SER4_MARSHAL, ENC_MARSHAL) ||
        !ser_init(&fake->sers[3], SER4_MSGPACK, ENC_MSGPACK))
        return 0;
    fake->filler = malloc(FILLER_LEN);
    if (fake->filler == NULL)
        return 0;
    memset(fake->filler, 'x', FILLER_LEN);
    return 1;
}

/* resolve_listen finds the address to bind: the first that getaddrinfo gives for the host. */
static int resolve_listen(const options_t *opt, struct sockaddr_storage *out, socklen_t *out_len)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    char port[8];

    snprintf(port, sizeof(port), "%u", opt->port);
    int rc = getaddrinfo(opt->node, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "fakepyro: cannot resolve '%s': %s\n", opt->node, gai_strerror(rc));
        return 0;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *out_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 1;
}

/* bound_port returns the port |fd| is bound to (the one the kernel chose for port 0). */
static unsigned bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return 0;
    if (ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&ss)->sin_port);
}

/* set_port writes |port| into |addr|. */
static void set_port(struct sockaddr_storage *addr, unsigned port)
{
    if (addr->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)port);
}

int main(int argc, char **argv)
{
    static fake_t fake;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    sigset_t stop;
    worker_t *workers;
    unsigned started = 0;
    uint64_t accepted = 0, requests = 0;
    int status = 1, sig;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage();
            return 0;
        }
    }
    if (!parse_args(argc, argv, &fake.opt))
        return usage();
    if (!resolve_listen(&fake.opt, &addr, &addr_len))
        return 2;
    raise_nofile();
    if (!fake_init(&fake)) {
        fprintf(stderr, "fakepyro: out of memory\n");
        return 1;
    }
    workers = calloc(fake.opt.threads, sizeof(*workers));
    if (workers == NULL) {
        fprintf(stderr, "fakepyro: out of memory\n");
        goto free_filler;
    }
    for (unsigned i = 0; i < fake.opt.threads; i++)
        workers[i].lfd = workers[i].epfd = workers[i].wakefd = workers[i].spare_fd = -1;

    if (fake.opt.port != 0 && !port_is_free((const struct sockaddr *)&addr, addr_len)) {
        fprintf(stderr, "fakepyro: cannot listen on %s:%u: %s\n", fake.opt.host, fake.opt.port,
                strerror(errno));
        status = 2;
        goto free_workers;
    }
    for (unsigned i = 0; i < fake.opt.threads; i++) {
        worker_t *w = &workers[i];
        if (!worker_init(w, &fake, i, (const struct sockaddr *)&addr, addr_len)) {
            if (w->lfd < 0) /* a bind error */
                status = 2;
            goto cleanup_workers;
        }
        if (i == 0 && fake.opt.port == 0) {
            /* Port 0: every other thread's socket joins the port the kernel chose. */
            fake.opt.port = bound_port(w->lfd);
            set_port(&addr, fake.opt.port);
        }
    }

    /* Signals are taken synchronously by this thread; the workers inherit the mask. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    signal(SIGPIPE, SIG_IGN);
    if (pthread_sigmask(SIG_BLOCK, &stop, NULL) != 0)
        goto cleanup_workers;
    for (; started < fake.opt.threads; started++) {
        if (pthread_create(&workers[started].thread, NULL, worker_run, &workers[started]) != 0) {
            fprintf(stderr, "fakepyro: cannot start thread %u\n", started);
            goto stop_threads;
        }
    }
    fprintf(stderr, "fakepyro: listening on %s:%u (%u threads)\n", fake.opt.host, fake.opt.port,
            fake.opt.threads);
    fflush(stderr);
    if (sigwait(&stop, &sig) != 0)
        goto stop_threads;
    status = 0;

stop_threads:
    for (unsigned i = 0; i < started; i++) {
        uint64_t one = 1;
        if (write(workers[i].wakefd, &one, sizeof(one)) != (ssize_t)sizeof(one))
            perror("fakepyro: waking a thread");
    }
    for (unsigned i = 0; i < started; i++) {
        pthread_join(workers[i].thread, NULL);
        if (workers[i].failed)
            status = 1;
        accepted += workers[i].accepted;
        requests += workers[i].requests;
    }
    if (started > 0 && !fake.opt.quiet)
        fprintf(stderr, "fakepyro: stopped after %llu connections, %llu requests\n",
                (unsigned long long)accepted, (unsigned long long)requests);
cleanup_workers:
    for (unsigned i = 0; i < fake.opt.threads; i++)
        worker_cleanup(&workers[i]);
free_workers:
    free(workers);
free_filler:
    free(fake.filler);
    return status;
}
