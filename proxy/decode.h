/* decode: the four Pyro serializers that may be allowed, each decoding a payload into a
 * value_t tree exactly as the daemon's Python decoder would (PROTOCOL.md §5, §9), or refusing.
 *
 * Contract shared by every decoder:
 *   - returns 1 and sets |*out| (allocated in |arena|) when the whole input is one value that
 *     Python would decode to the same types and the same str contents;
 *   - returns 0 otherwise, with a short static reason in |*out_reason| ("invalid escape",
 *     "trailing bytes", "nesting too deep", "too many values"…). Anything the decoder cannot
 *     reproduce with certainty is refused: never decode differently from Python.
 *   - never reads outside |data|[0..len), never recurses deeper than the arena's max_depth,
 *     never allocates past the arena's limits.
 * None of them keeps state between calls. */
#ifndef PYROGUARD_DECODE_H
#define PYROGUARD_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "value.h"

/* serpent: a Python literal expression as ast.literal_eval reads it, after a strict UTF-8
 * decode; a NUL anywhere is refused (serpent.loads refuses it too). \N{...} escapes may be
 * refused (honest serpent never writes them). */
int decode_serpent(const uint8_t *data, size_t len, value_arena_t *arena, value_t **out,
                   const char **out_reason);

/* json: Python's json.loads on the strictly UTF-8-decoded text (no BOM), NaN/Infinity
 * accepted, \u escapes incl. surrogate pairs and lone surrogates; duplicate keys in any
 * object are refused (json.loads keeps the last one). */
int decode_json(const uint8_t *data, size_t len, value_arena_t *arena, value_t **out,
                const char **out_reason);

/* marshal: CPython 3.11 marshal.loads (format 4): string types z Z a A u t (u/t strict UTF-8
 * with surrogatepass), s/bytes, FLAG_REF and r references, tuples, lists, dicts, sets,
 * frozensets, None/True/False/Ellipsis, ints (i, l), floats (g, f), complex (y, x). Code
 * objects and unknown codes are refused; trailing bytes are refused (marshal ignores them). */
int decode_marshal(const uint8_t *data, size_t len, value_arena_t *arena, value_t **out,
                   const char **out_reason);

/* msgpack: msgpack.unpackb(raw=False) of msgpack-python 1.0.3 as the Pyro4 daemon calls it:
 * str forms -> str (strict UTF-8), bin forms -> bytes, arrays -> list (use_list), maps -> dict
 * (strict_map_key: keys str or bytes), ints, floats, nil, bools; ext codes 0..127 -> the 2-tuple
 * ExtType(code, data) really is (int, bytes); the timestamp ext (-1) -> VAL_OTHER when its
 * length and nanoseconds are valid; other negative ext codes refused; trailing bytes refused.
 *
 * Depth, for every decoder: each container (and a msgpack ext tuple) is one level of
 * nesting, and nesting past the arena's max_depth is refused before it is descended into. */
int decode_msgpack(const uint8_t *data, size_t len, value_arena_t *arena, value_t **out,
                   const char **out_reason);

#endif
