/* streams: item streams bound to the connection that opened them.
 *
 * A Pyro daemon's stream ids are daemon-global (PROTOCOL.md §6.2): whoever names an id to
 * Pyro.Daemon.get_next_stream_item or close_stream (§6.3) pulls from, or ends, that stream,
 * whichever connection opened it. pyroguard therefore remembers, per connection, the STRM
 * annotation of every ITEMSTREAMRESULT reply it passes to the client (streams_record_reply),
 * and lets those two daemon methods through only as a plain call naming one of them
 * (streams_check_call).
 *
 * Ids are kept in arrival order in a ring of STREAMS_MAX slots, the oldest forgotten first,
 * and found through a chained hash index (FNV-1a over the id bytes, STREAMS_BUCKETS buckets):
 * a lookup hashes once and compares the few ids in one bucket. Ids come from the daemon, not
 * the client, so a client cannot crowd a bucket; even so a lookup never does more than
 * STREAMS_MAX comparisons of at most STREAMS_MAX_ID_LEN bytes.
 *
 * Ownership: a streams_t is embedded in its connection; zero-initialised it is empty and
 * allocates nothing until the first id is recorded (one table of about 20 KiB, then one copy
 * of each id). streams_free releases everything and leaves it empty again; it is safe on a
 * zeroed streams_t and may be called twice. */
#ifndef PYROGUARD_STREAMS_H
#define PYROGUARD_STREAMS_H

#include <stddef.h>
#include <stdint.h>

#include "call.h"
#include "frame.h"

#define STREAMS_MAX 1024 /* ids remembered per connection; the oldest forgotten first */
#define STREAMS_MAX_ID_LEN                                                                         \
    256                      /* a longer STRM value is not recorded (its stream is then            \
                              * unusable through pyroguard: fail closed) */
#define STREAMS_BUCKETS 2048 /* hash index size, a power of two */

/* The refusal reason of every call streams_check_call refuses (logs and metrics). */
#define STREAMS_REASON "stream_not_owned"

typedef struct streams_table streams_table_t;

typedef struct {
    streams_table_t *table; /* NULL until the first id is recorded; owned */
} streams_t;

/* streams_free releases every id of |s|; |s| is empty again. */
void streams_free(streams_t *s);

/* streams_record_reply reads |len| bytes at |anns|, the raw annotation block of a reply of
 * protocol |proto| (Pyro4: u16 chunk lengths, Pyro5: u32; frame_annotation_next_as), and
 * records the value of its STRM chunk as a stream id opened on this connection. The caller
 * decides which replies are item-stream results (RESULT with FLAG4_ITEMSTREAMRESULT).
 * Returns 1 when the id is recorded (or already was), 0 when the block has no STRM chunk,
 * -1 when nothing was recorded because the block is malformed (a bad chunk, trailing bytes,
 * STRM twice), the id is empty or longer than STREAMS_MAX_ID_LEN, or memory ran out. After a
 * -1 the reply may still be forwarded: its stream simply cannot be used through pyroguard. */
int streams_record_reply(streams_t *s, frame_proto_t proto, const uint8_t *anns, size_t len);

/* streams_check_call judges |call| against the ids of |s|. An INVOKE on object "Pyro.Daemon"
 * that names get_next_stream_item or close_stream anywhere in |call->names| (plain method,
 * batch member, KEEPSERIALIZED method, or attribute) passes only as a plain, non-batch call
 * with decoded arguments that are either vargs = (id,) with kwargs {} or vargs = () with
 * kwargs {"streamId": id} (tuple or list; the dict with exactly that one key), where id is a
 * str equal byte for byte to an id recorded in |s|. Other objects, other methods of
 * Pyro.Daemon and CONNECTs pass untouched. Returns 1 if |call| may pass; 0 if it is refused,
 * with reason STREAMS_REASON and the client's message written to |detail| (NUL-terminated,
 * cut to |detail_len|): "pyroguard: stream <id> was not opened on this connection" or
 * "pyroguard: stream calls must name one stream id". */
int streams_check_call(const streams_t *s, const call_t *call, char *detail, size_t detail_len);

/* streams_owns returns 1 if the |len| bytes at |id| are an id recorded in |s|. */
int streams_owns(const streams_t *s, const uint8_t *id, size_t len);

/* streams_count returns how many ids |s| remembers (at most STREAMS_MAX). */
size_t streams_count(const streams_t *s);

#endif
