#include "streams.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

typedef struct {
    uint8_t *id; /* owned copy; NULL for a free slot */
    uint32_t hash;
    uint16_t len;
    uint16_t next; /* next slot in the same bucket, plus one; 0 ends the chain */
} streams_entry_t;

struct streams_table {
    streams_entry_t slots[STREAMS_MAX]; /* filled in order, then reused oldest first */
    uint16_t buckets[STREAMS_BUCKETS];  /* first slot of each chain, plus one; 0: empty */
    size_t count;
    size_t next_slot; /* where the next id goes; when full, the oldest id's slot */
};

_Static_assert(STREAMS_MAX < UINT16_MAX, "slot numbers plus one must fit a uint16_t");
_Static_assert((STREAMS_BUCKETS & (STREAMS_BUCKETS - 1)) == 0, "buckets: a power of two");
_Static_assert(STREAMS_MAX_ID_LEN <= UINT16_MAX, "id lengths must fit a uint16_t");

static const char kDaemon[] = "Pyro.Daemon";

static uint32_t fnv1a(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

/* find returns the slot holding |id|, or -1. */
static long find(const streams_table_t *t, const uint8_t *id, size_t len, uint32_t hash)
{
    /* A chain never holds more than STREAMS_MAX slots; the bound guards against a corrupt
     * table looping forever. */
    uint16_t link = t->buckets[hash & (STREAMS_BUCKETS - 1)];
    for (size_t steps = 0; link != 0 && steps < STREAMS_MAX; steps++) {
        const streams_entry_t *e = &t->slots[link - 1];
        if (e->hash == hash && e->len == len && memcmp(e->id, id, len) == 0)
            return (long)(link - 1);
        link = e->next;
    }
    return -1;
}

/* unlink_slot removes slot |i| from its bucket's chain and frees its id. */
static void unlink_slot(streams_table_t *t, size_t i)
{
    streams_entry_t *e = &t->slots[i];
    uint16_t *link = &t->buckets[e->hash & (STREAMS_BUCKETS - 1)];
    while (*link != 0 && *link != i + 1)
        link = &t->slots[*link - 1].next;
    if (*link == i + 1)
        *link = e->next;
    free(e->id);
    memset(e, 0, sizeof(*e));
    t->count--;
}

static int insert(streams_t *s, const uint8_t *id, size_t len)
{
    uint32_t hash = fnv1a(id, len);
    if (s->table != NULL && find(s->table, id, len, hash) >= 0)
        return 1;
    if (s->table == NULL) {
        s->table = pg_calloc(1, sizeof(*s->table));
        if (s->table == NULL)
            return -1;
    }
    /* Copy first: when memory runs out, the oldest id is not forgotten for nothing. */
    uint8_t *copy = pg_malloc(len);
    if (copy == NULL)
        return -1;
    memcpy(copy, id, len);

    streams_table_t *t = s->table;
    size_t i = t->next_slot;
    if (t->slots[i].id != NULL)
        unlink_slot(t, i); /* full: |i| is the oldest */
    uint16_t *bucket = &t->buckets[hash & (STREAMS_BUCKETS - 1)];
    t->slots[i].id = copy;
    t->slots[i].hash = hash;
    t->slots[i].len = (uint16_t)len;
    t->slots[i].next = *bucket;
    *bucket = (uint16_t)(i + 1);
    t->count++;
    t->next_slot = (i + 1) % STREAMS_MAX;
    return 1;
}

void streams_free(streams_t *s)
{
    if (s->table == NULL)
        return;
    for (size_t i = 0; i < STREAMS_MAX; i++)
        free(s->table->slots[i].id);
    free(s->table);
    s->table = NULL;
}

int streams_record_reply(streams_t *s, frame_proto_t proto, const uint8_t *anns, size_t len)
{
    CBS block, strm;
    CBS_init(&strm, NULL, 0);
    frame_annotation_t a;
    int found = 0;

    /* Read the whole block before recording anything: a malformed block records nothing,
     * and a second STRM (Pyro keeps the last, PROTOCOL.md §2.2) is an ambiguity refused. */
    CBS_init(&block, anns, len);
    while (frame_annotation_next_as(&block, proto, &a)) {
        if (memcmp(a.key, "STRM", 4) != 0)
            continue;
        if (found)
            return -1;
        strm = a.value;
        found = 1;
    }
    if (CBS_len(&block) != 0)
        return -1;
    if (!found)
        return 0;
    /* The daemon never sends an empty id (Pyro4 core.py: no STRM for a falsy id), and the
     * client refuses one. */
    if (CBS_len(&strm) == 0 || CBS_len(&strm) > STREAMS_MAX_ID_LEN)
        return -1;
    return insert(s, CBS_data(&strm), CBS_len(&strm));
}

int streams_owns(const streams_t *s, const uint8_t *id, size_t len)
{
    if (s->table == NULL || len == 0 || len > STREAMS_MAX_ID_LEN)
        return 0;
    return find(s->table, id, len, fnv1a(id, len)) >= 0;
}

size_t streams_count(const streams_t *s)
{
    return s->table ? s->table->count : 0;
}

static int is_stream_method(const value_t *name)
{
    return value_is_str(name, "get_next_stream_item") || value_is_str(name, "close_stream");
}

static int is_seq(const value_t *v, size_t n)
{
    return v != NULL && (v->type == VAL_TUPLE || v->type == VAL_LIST) && v->u.seq.n == n;
}

static int is_dict(const value_t *v, size_t n)
{
    return v != NULL && v->type == VAL_DICT && v->u.dict.n == n;
}

/* stream_id_of returns the id argument of a plain stream call, or NULL for any other shape:
 * get_next_stream_item(streamId) as vargs (id,) or kwargs {"streamId": id} (§6.3). */
static const value_t *stream_id_of(const call_name_t *n)
{
    const value_t *id = NULL;
    if (n->kind != CALL_NAME_METHOD || n->args == NULL)
        return NULL; /* KEEPSERIALIZED: the argument is an opaque blob */
    if (is_seq(n->args, 1) && is_dict(n->kwargs, 0))
        id = n->args->u.seq.items[0];
    else if (is_seq(n->args, 0) && is_dict(n->kwargs, 1) &&
             value_is_str(n->kwargs->u.dict.keys[0], "streamId"))
        id = n->kwargs->u.dict.values[0];
    if (id == NULL || id->type != VAL_STR)
        return NULL;
    return id;
}

int streams_check_call(const streams_t *s, const call_t *call, char *detail, size_t detail_len)
{
    int named = 0;

    if (call->kind != CALL_INVOKE || !value_is_str(call->object, kDaemon))
        return 1;
    for (size_t i = 0; i < call->n_names; i++)
        named |= is_stream_method(call->names[i].name);
    if (!named)
        return 1;

    const value_t *id = NULL;
    if (!call->batch && call->n_names == 1)
        id = stream_id_of(&call->names[0]);
    if (id == NULL) {
        snprintf(detail, detail_len, "pyroguard: stream calls must name one stream id");
        return 0;
    }
    if (streams_owns(s, id->u.str.data, id->u.str.len))
        return 1;
    char shown[96];
    call_render_str(id, shown, sizeof(shown));
    snprintf(detail, detail_len, "pyroguard: stream %s was not opened on this connection", shown);
    return 0;
}
