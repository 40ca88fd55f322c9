/* call: the names a Pyro4 daemon will resolve for one request, read from a decoded value in
 * the daemon's own dispatch order (PROTOCOL.md §6, §8), and the name rules every one of them
 * must pass before any policy applies (DESIGN.md "Names are always checked", §7.1, §10).
 *
 * A call_t points into the value arena it was read from and owns nothing but its names array,
 * which is allocated in the same arena: it is valid until that arena is cleaned up. */
#ifndef PYROGUARD_CALL_H
#define PYROGUARD_CALL_H

#include <stddef.h>
#include <stdint.h>

#include "value.h"

typedef enum {
    CALL_NAME_METHOD,       /* the method of a plain call (or of a KEEPSERIALIZED blob call) */
    CALL_NAME_BATCH_METHOD, /* one inner method of a BATCH call */
    CALL_NAME_ATTRIBUTE,    /* vargs[0] of __getattr__ / __setattr__ (property access) */
} call_name_kind_t;

typedef struct {
    call_name_kind_t kind;
    const value_t *name;   /* VAL_STR after a successful call_check */
    size_t index;          /* batch position for CALL_NAME_BATCH_METHOD */
    const value_t *args;   /* the call's vargs and kwargs as decoded (methods only; NULL for a */
    const value_t *kwargs; /* KEEPSERIALIZED call, whose argument is an opaque blob) */
} call_name_t;

typedef enum {
    CALL_CONNECT,
    CALL_INVOKE,
} call_kind_t;

typedef struct {
    call_kind_t kind;
    const value_t *object; /* object id (VAL_STR); for CONNECT the metadata object or NULL */
    const value_t *method; /* the top-level method as sent (ignored by the daemon on BATCH) */
    int property;          /* 0, 'g' (__getattr__) or 's' (__setattr__) */
    int batch;             /* BATCH flag honoured */
    call_name_t *names;    /* every name the daemon resolves, in dispatch order */
    size_t n_names;
} call_t;

/* A refusal: a stable reason code and a human text (pyroguard's message to the client). */
typedef struct {
    const char *reason; /* "dotted_name", "private_name", "invalid_name", "malformed_call" */
    char detail[256];
} call_refusal_t;

typedef enum {
    CALL_FORM_TUPLE, /* serpent, marshal, msgpack: (objectId, method, vargs, kwargs) */
    CALL_FORM_JSON,  /* json: {"object", "method", "params", "kwargs"} */
} call_form_t;

/* call_from_invoke reads an INVOKE payload value |top| (PROTOCOL.md §5) with header |flags|
 * (Pyro4 bits). Only canonical shapes are accepted (§10): a 4-element tuple or list (TUPLE
 * form) or a JSON object with exactly the four keys. Returns 1 and fills |out| when every name
 * passes the rules; 0 with |r| filled otherwise. */
int call_from_invoke(const value_t *top, call_form_t form, uint16_t flags, value_arena_t *arena,
                     call_t *out, call_refusal_t *r);

/* call_from_blob reads the marshal-decoded BLBI annotation of a KEEPSERIALIZED INVOKE:
 * (blob_info, objectId, method) (PROTOCOL.md §2.8). BATCH and property access cannot be
 * combined with it (the daemon would hand them a SerializedBlob): refused. */
int call_from_blob(const value_t *blbi, uint16_t flags, value_arena_t *arena, call_t *out,
                   call_refusal_t *r);

/* call_from_connect reads a CONNECT payload (PROTOCOL.md §4.1, §4.2): a dict with "handshake"
 * and a str "object" — optional for Pyro4 (METADATA=False clients leave it out), required when
 * |object_required| (Pyro5) — and no other key. */
int call_from_connect(const value_t *top, int object_required, value_arena_t *arena, call_t *out,
                      call_refusal_t *r);

/* call_check_name applies the name rules to one method or attribute name: a str, an ASCII
 * identifier, no '.', not private per PROTOCOL.md §7.1. Returns 1 if it passes; 0 with |r|
 * filled (|what| names the role in the message: "method", "attribute"…). */
int call_check_name(const value_t *name, const char *what, call_refusal_t *r);

/* call_render_str writes |v| (a str) for messages and logs: printable ASCII as is, other
 * bytes as \xNN, cut at |out_len|-1 with "..." when longer. */
void call_render_str(const value_t *v, char *out, size_t out_len);

#endif
