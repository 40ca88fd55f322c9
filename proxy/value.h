/* value: a decoded Python value, exactly as the daemon's deserializer would build it — only as
 * much of it as inspection needs (types, strings, container structure; numbers are typed but
 * not kept). Every decoder (serpent, json, marshal, msgpack) produces this one model, and the
 * call module reads names from it in the daemon's dispatch order (PROTOCOL.md §6).
 *
 * Ownership: all values and string bytes of one decode live in a value_arena_t, a stack
 * object: value_arena_init, then value_arena_cleanup frees everything at once. Values are
 * never freed individually. The arena enforces the decode limits (value_limits_t): every
 * decoder calls value_new / value_alloc, which fail (return NULL) past the limits, and the
 * decoder then refuses the whole input. */
#ifndef PYROGUARD_VALUE_H
#define PYROGUARD_VALUE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    VAL_NONE,
    VAL_BOOL,
    VAL_INT, /* any size; the value itself is not kept */
    VAL_FLOAT,
    VAL_COMPLEX,
    VAL_ELLIPSIS,
    VAL_STR,   /* Python str: bytes are UTF-8; lone surrogates (json "\ud800", marshal
                * surrogatepass) are kept as their 3-byte generalized UTF-8 form */
    VAL_BYTES, /* Python bytes/bytearray */
    VAL_TUPLE,
    VAL_LIST,
    VAL_SET,
    VAL_FROZENSET,
    VAL_DICT,
    VAL_OTHER, /* anything else a decoder can produce (msgpack timestamp, StopIteration…),
                * never a name */
} value_type_t;

typedef struct value value_t;

struct value {
    value_type_t type;
    union {
        int boolean;
        struct {
            const uint8_t *data; /* not NUL-terminated; in the arena or in the input */
            size_t len;
        } str; /* VAL_STR and VAL_BYTES */
        struct {
            value_t **items;
            size_t n;
        } seq; /* VAL_TUPLE, VAL_LIST, VAL_SET, VAL_FROZENSET */
        struct {
            value_t **keys;
            value_t **values;
            size_t n; /* pairs in wire order, duplicates included (see value_dict_get) */
        } dict;
    } u;
};

/* Limits of one decode. Defaults (value_limits_default): depth 32, 100000 values,
 * 16 MiB of decoded string bytes in total. */
typedef struct {
    size_t max_depth;
    size_t max_values;
    size_t max_string_bytes;
} value_limits_t;

typedef struct value_chunk value_chunk_t;

typedef struct {
    value_limits_t limits;
    value_chunk_t *chunks; /* bump allocator */
    size_t values;         /* values created so far */
    size_t string_bytes;   /* string bytes allocated so far */
} value_arena_t;

void value_limits_default(value_limits_t *out);

/* value_arena_init prepares an empty arena with |limits| (NULL: the defaults). */
void value_arena_init(value_arena_t *a, const value_limits_t *limits);

/* value_arena_reset forgets every value of |a| but keeps one small chunk of memory for the
 * next decode, so inspecting a stream of small calls does not call malloc at all. */
void value_arena_reset(value_arena_t *a);

/* value_arena_cleanup frees every value and byte allocated from |a|; |a| is empty again. */
void value_arena_cleanup(value_arena_t *a);

/* value_new returns a zeroed value of |type| from |a|, or NULL if the value limit is reached
 * or memory is exhausted. */
value_t *value_new(value_arena_t *a, value_type_t type);

/* value_alloc returns |n| bytes (8-aligned) from |a|, or NULL. Used for item arrays. */
void *value_alloc(value_arena_t *a, size_t n);

/* value_alloc_string returns |n| bytes for decoded string contents, or NULL past
 * max_string_bytes. */
uint8_t *value_alloc_string(value_arena_t *a, size_t n);

/* value_is_str returns 1 if |v| is a str equal to the NUL-terminated ASCII |s|. */
int value_is_str(const value_t *v, const char *s);

/* value_dict_get finds the value of str key |key| in dict |d|: it returns 1 and sets |*out|
 * when the key appears exactly once, 0 when it is absent; -1 when it appears more than once
 * (the daemon would take the last one; inspection refuses the ambiguity). */
int value_dict_get(const value_t *d, const char *key, const value_t **out);

/* value_type_name returns "str", "bytes", "tuple"… for messages. */
const char *value_type_name(value_type_t type);

#endif
