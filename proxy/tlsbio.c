#include "tlsbio.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "alloc.h"
#include "buf.h"

typedef struct {
    buf_t in;  /* ciphertext from the client, not yet read by BoringSSL */
    buf_t out; /* ciphertext BoringSSL wrote, not yet sent */
} tlsbio_t;

static BIO_METHOD *g_method;
static uv_once_t g_method_once = UV_ONCE_INIT;

static int tlsbio_read(BIO *bio, char *out, int outl)
{
    tlsbio_t *t = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    size_t have = buf_len(&t->in);
    if (have == 0) {
        BIO_set_retry_read(bio); /* more may come from the socket */
        return -1;
    }
    if (outl <= 0)
        return 0;
    size_t take = have < (size_t)outl ? have : (size_t)outl;
    memcpy(out, buf_peek(&t->in), take);
    if (take == have)
        buf_reset(&t->in); /* storage kept for the next feed; tlsbio_trim frees it */
    else
        buf_consume(&t->in, take);
    return (int)take;
}

static int tlsbio_write(BIO *bio, const char *in, int inl)
{
    tlsbio_t *t = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (inl <= 0)
        return 0;
    /* Never a retry: the bytes are taken whole or the write fails and the connection with it. */
    return buf_append(&t->out, (const uint8_t *)in, (size_t)inl) ? inl : -1;
}

static long tlsbio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    tlsbio_t *t = BIO_get_data(bio);
    switch (cmd) {
    case BIO_CTRL_PENDING:
        return (long)buf_len(&t->in);
    case BIO_CTRL_WPENDING:
        return (long)buf_len(&t->out);
    case BIO_CTRL_FLUSH:
        return 1; /* the caller sends tlsbio_out when BoringSSL returns */
    default:
        return 0;
    }
}

static int tlsbio_destroy(BIO *bio)
{
    tlsbio_t *t = BIO_get_data(bio);
    if (t != NULL) {
        buf_cleanup(&t->in);
        buf_cleanup(&t->out);
        free(t);
        BIO_set_data(bio, NULL);
    }
    return 1;
}

static void make_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pyroguard");
    if (m == NULL)
        return;
    if (!BIO_meth_set_read(m, tlsbio_read) || !BIO_meth_set_write(m, tlsbio_write) ||
        !BIO_meth_set_ctrl(m, tlsbio_ctrl) || !BIO_meth_set_destroy(m, tlsbio_destroy)) {
        BIO_meth_free(m);
        return;
    }
    g_method = m; /* lives as long as the process */
}

BIO *tlsbio_new(size_t in_max, size_t out_max)
{
    uv_once(&g_method_once, make_method);
    if (g_method == NULL)
        return NULL;
    tlsbio_t *t = pg_malloc(sizeof(*t));
    BIO *bio = t != NULL ? BIO_new(g_method) : NULL;
    if (bio == NULL) {
        free(t);
        return NULL;
    }
    buf_init(&t->in, in_max);
    buf_init(&t->out, out_max);
    BIO_set_data(bio, t);
    BIO_set_init(bio, 1);
    return bio;
}

int tlsbio_feed(BIO *bio, const uint8_t *p, size_t n)
{
    tlsbio_t *t = BIO_get_data(bio);
    return buf_append(&t->in, p, n);
}

size_t tlsbio_in_pending(BIO *bio)
{
    const tlsbio_t *t = BIO_get_data(bio);
    return buf_len(&t->in);
}

const uint8_t *tlsbio_out(BIO *bio, size_t *len)
{
    const tlsbio_t *t = BIO_get_data(bio);
    *len = buf_len(&t->out);
    return buf_peek(&t->out);
}

size_t tlsbio_held(BIO *bio)
{
    const tlsbio_t *t = BIO_get_data(bio);
    return t->in.alloc + t->out.alloc;
}

void tlsbio_out_clear(BIO *bio)
{
    tlsbio_t *t = BIO_get_data(bio);
    buf_reset(&t->out);
}

void tlsbio_trim(BIO *bio)
{
    tlsbio_t *t = BIO_get_data(bio);
    if (buf_len(&t->in) == 0)
        buf_cleanup(&t->in);
    if (buf_len(&t->out) == 0)
        buf_cleanup(&t->out);
}
