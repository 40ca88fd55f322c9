"""Differential test: pyroguard's marshal decoder (proxy/marshal.c, via build/value_dump) against
the decoder the Pyro4 4.82 daemon runs (CPython 3.11 marshal.loads, PROTOCOL.md §5.3), over:

  captured  every marshal payload in tests/vectors/pyro4/marshal/ (CONNECT, INVOKE and RESULT
            frames, COMPRESSED ones inflated, and the BLBI annotation of the blob call): must be
            accepted and identical;
  honest    Pyro4's own MarshalSerializer (dumpsCall / dumps) and marshal.dumps at every format
            version 0-4 of about a thousand varied values: nested and shared containers (shared
            objects and repeated strings become FLAG_REF / r references), unicode with Latin-1,
            astral characters and lone surrogates, huge and tiny ints, floats incl. nan/inf/-0.0,
            complex, bytes, empty things, Pyro-shaped calls and batches: must be accepted;
  hostile   every marshal form PROTOCOL.md §9 lists (the method name in z Z a A u t with and
            without FLAG_REF, r references to earlier data, bytes names, trailing bytes, a second
            call after the first, surrogates), the §10 hazards (code objects, trailing bytes), and
            the corners of CPython's r_object: every type code, FLAG_REF on singletons, refs out of
            range / to unfinished containers / cycles, NULL in the wrong place, dict terminators,
            unhashable keys, numbers Python merges as keys (1, 1.0, True), duplicate set members,
            unnormalized longs, negative and oversized counts, text floats, Latin-1 in ASCII
            strings, random UTF-8 byte soup, deep nesting, reference bombs;
  mutation  byte flips, truncations, insertions, deletions and duplications of valid inputs.

Assertions: no input where the decoder says ok and Python fails or builds a different tree; no
refusal of a captured or honest input. The decoder may refuse anything else (fail closed); those
refusals are counted and their reasons printed (run pytest with -s).

The value model (proxy/value.h) keeps numbers typed but not their values, so it cannot say
whether two keys 1 and 2 (or 1 and True) are one key or two. The decoder keeps such dict pairs in
wire order (the value.h contract) and keeps set members holding numbers as sent; value_dump then
collapses dict keys by their dump text. For an input with such a container — one with two keys or
members holding numbers, or one holding a number and another a bool — Python's dump and a
perfect decoder's dump can differ, so there the decoder is compared with the value-model
rendering of the same bytes (model_load below: an independent reader of the marshal format that
keeps wire order) and counted as "equal in the value model". Everywhere else the comparison is
with Python's own dump, and model_load is checked against that dump too.
"""

import collections
import multiprocessing
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VECTORS = REPO / "tests" / "vectors" / "pyro4" / "marshal"
VALUE_DUMP = Path(os.environ.get("VALUE_DUMP_BIN", str(REPO / "build" / "value_dump")))

sys.path.insert(0, str(REPO / "tests" / "tools"))
import pydump  # noqa: E402  (the Python side of every differential test)

SEED = 0x3A25  # fixed: the corpus is the same on every run
# Under `make test-asan` value_dump is a sanitized build: LeakSanitizer's exit-time scan would
# triple the cost of each of the thousands of runs (the decoder's leaks are the fuzzer's job).
SANITIZED = os.environ.get("PYROGUARD_SANITIZED", "") not in ("", "0")
C_ENV = dict(os.environ)
if SANITIZED:
    C_ENV["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
                                                    "detect_leaks=0"]))
DEFAULT_MAX_DEPTH = 32  # value_limits_default

pytestmark = pytest.mark.skipif(
    not VALUE_DUMP.exists(),
    reason="%s not built (cmake --build build, or set VALUE_DUMP_BIN)" % VALUE_DUMP)


def i32(n):
    return struct.pack("<i", n)


def u32(n):
    return struct.pack("<I", n)


# --- captured payloads ---------------------------------------------------------------------------


def captured_payloads():
    """(name, payload, direction) for every marshal message in the captures (PROTOCOL.md §2):
    CONNECT/INVOKE/RESULT payloads (the PING data is never deserialized) and BLBI annotations."""
    out = []
    for path in sorted(VECTORS.rglob("*.bin")):
        raw = path.read_bytes()
        msg_type, flags = struct.unpack(">HH", raw[6:10])
        ann_len = struct.unpack(">H", raw[18:20])[0]
        name = str(path.relative_to(VECTORS))
        direction = "c2s" if "_c2s_" in path.name else "s2c"
        anns = raw[24:24 + ann_len]
        while len(anns) >= 6:
            key, n = anns[:4], struct.unpack(">H", anns[4:6])[0]
            if key == b"BLBI":
                out.append((name + ":BLBI", anns[6:6 + n], direction))
            anns = anns[6 + n:]
        if msg_type == 6:  # PING
            continue
        payload = raw[24 + ann_len:]
        if flags & 0x02:
            payload = zlib.decompress(payload)
        out.append((name, payload, direction))
    return out


# --- honest encodings ----------------------------------------------------------------------------

STRINGS = ["", "echo", "sub.echo", "__getattr__", "Pyro.Daemon", "<batch>", "é", "ÿ", "\x80",
           "\u20ac", "日本語", "\U0001F600", "\ud800", "\udfff", "a\ud83dx", "\ud83d\ude00",
           "\x00", "x" * 255, "x" * 256, "é" * 300, "\U0010FFFF", "\uFFFF", "\u0100"]


def rand_str(rnd, max_len=12):
    r = rnd.random()
    if r < 0.35:
        return "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz_.0123456789")
                       for _ in range(rnd.randint(0, max_len)))
    if r < 0.55:
        return rnd.choice(STRINGS)
    ranges = [(0x20, 0x7E), (0x80, 0xFF), (0x100, 0x7FF), (0x800, 0xFFFF), (0xD800, 0xDFFF),
              (0x10000, 0x10FFFF), (0, 0x1F)]
    out = []
    for _ in range(rnd.randint(0, max_len)):
        lo, hi = rnd.choice(ranges)
        out.append(chr(rnd.randint(lo, hi)))
    return "".join(out)


def rand_int(rnd):
    return rnd.choice([
        0, 1, -1, 2 ** 31 - 1, -2 ** 31, 2 ** 31, -2 ** 31 - 1, 2 ** 15, 2 ** 30, 2 ** 45 - 1,
        2 ** 63, -2 ** 64 - 1, 10 ** 40, -(10 ** 60), rnd.randint(-1000, 1000),
        rnd.getrandbits(rnd.randint(1, 300)) * rnd.choice([1, -1])])


def rand_float(rnd):
    return rnd.choice([0.0, -0.0, 1.5, -2.25, float("inf"), float("-inf"), float("nan"), 1e308,
                       5e-324, 1e-300, 123456789.125, rnd.uniform(-1e6, 1e6),
                       rnd.random() * 10 ** rnd.randint(-300, 300)])


def rand_scalar(rnd):
    r = rnd.randrange(12)
    if r == 0:
        return rnd.choice([None, True, False, Ellipsis, StopIteration])
    if r in (1, 2):
        return rand_int(rnd)
    if r == 3:
        return rand_float(rnd)
    if r == 4:
        return complex(rand_float(rnd), rand_float(rnd))
    if r == 5:
        return bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 10)))
    if r == 6:
        return bytearray(rnd.getrandbits(8) for _ in range(rnd.randint(0, 5)))
    return rand_str(rnd)


def rand_hashable(rnd, depth):
    r = rnd.randrange(10)
    if r < 5:
        return rand_str(rnd)
    if r == 5:
        return bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 4)))
    if r == 6:
        return rnd.choice([None, True, False, Ellipsis, StopIteration, rand_int(rnd),
                           rand_float(rnd)])
    if r == 7 and depth < 4:
        return tuple(rand_hashable(rnd, depth + 1) for _ in range(rnd.randint(0, 3)))
    if r == 8 and depth < 4:
        return frozenset(rand_hashable(rnd, depth + 1) for _ in range(rnd.randint(0, 3)))
    return rand_int(rnd)


def rand_value(rnd, pool, depth=0, max_depth=5):
    if pool and rnd.random() < 0.1:
        return rnd.choice(pool)  # the same object twice: marshal writes FLAG_REF and r
    if depth >= max_depth or rnd.random() < 0.4:
        v = rand_scalar(rnd)
    else:
        n = rnd.choice([0, 1, 2, 3, 4, 6])
        kind = rnd.randrange(6)
        if kind == 0:
            v = tuple(rand_value(rnd, pool, depth + 1, max_depth) for _ in range(n))
        elif kind == 1:
            v = [rand_value(rnd, pool, depth + 1, max_depth) for _ in range(n)]
        elif kind == 2:
            v = {rand_str(rnd): rand_value(rnd, pool, depth + 1, max_depth) for _ in range(n)}
        elif kind == 3:
            v = {rand_hashable(rnd, depth): rand_value(rnd, pool, depth + 1, max_depth)
                 for _ in range(n)}
        elif kind == 4:
            v = {rand_hashable(rnd, depth) for _ in range(n)}
        else:
            v = frozenset(rand_hashable(rnd, depth) for _ in range(n))
    if not isinstance(v, (bool, type(None))):
        pool.append(v)
    return v


def honest_inputs(rnd):
    import Pyro4.errors
    import Pyro4.util  # the serializer the honest client runs

    ser = Pyro4.util.MarshalSerializer()
    out = []
    for i in range(550):
        pool = []
        obj = rnd.choice(["thing", "Pyro.Daemon", "obj_" + rand_str(rnd), rand_str(rnd)])
        method = rnd.choice(["echo", "get_metadata", "sub.echo", "__getattr__", rand_str(rnd)])
        vargs = tuple(rand_value(rnd, pool, 1) for _ in range(rnd.randint(0, 4)))
        kwargs = {rand_str(rnd): rand_value(rnd, pool, 1) for _ in range(rnd.randint(0, 3))}
        if i % 10 == 0:  # a batch: vargs is a list of (method, vargs, kwargs)
            method = "<batch>"
            name = rnd.choice(["echo", "fire"])
            vargs = ([(name, tuple(rand_value(rnd, pool, 3) for _ in range(2)), {})
                      for _ in range(rnd.randint(1, 4))],)
        try:
            out.append(("dumpsCall-%d" % i, ser.dumpsCall(obj, method, vargs, kwargs)))
        except (TypeError, ValueError, Pyro4.errors.SerializeError):
            pass  # Pyro4 cannot convert a top-level StopIteration / Ellipsis argument
    for i in range(100):
        try:
            out.append(("dumps-%d" % i, ser.dumps(rand_value(rnd, [], 0))))
        except (TypeError, ValueError, Pyro4.errors.SerializeError):
            pass
    for i in range(400):
        v = rand_value(rnd, [], 0)
        out.append(("version%d-%d" % (i % 5, i), marshal_dumps(v, i % 5)))
    # Pyro-shaped values that need a big tree or string (still within the default limits).
    big = ["k%d" % i for i in range(5000)]
    out.append(("big-list", ser.dumpsCall("thing", "echo", (big, set(big)), {})))
    out.append(("long-ascii", ser.dumpsCall("thing", "echo", ("A" * 200000,), {})))
    out.append(("long-utf8", ser.dumpsCall("thing", "echo", ("é\U0001F600\ud800" * 20000,), {})))
    out.append(("long-bytes", ser.dumpsCall("thing", "echo", (b"\xff" * 100000,), {})))
    deep = "x"
    for _ in range(DEFAULT_MAX_DEPTH - 2):  # 30 lists in the vargs list in the call tuple
        deep = [deep]
    out.append(("deep-within-limit", ser.dumpsCall("thing", "echo", (deep,), {})))
    shared = ["shared"]
    out.append(("shared-list", ser.dumpsCall("thing", "echo", (shared, shared, (shared,)), {})))
    out.append(("int-keys", ser.dumpsCall("thing", "echo", ({1: "a", 2: "b", 3.5: "c"},), {})))
    out.append(("int-set", ser.dumpsCall("thing", "echo", ({1, 2, 3}, frozenset({1, 2})), {})))
    out.append(("bool-keys", ser.dumpsCall("thing", "echo", ({True: 1, False: 0, None: 2},), {})))
    return [(n, d) for n, d in out]


def marshal_dumps(v, version):
    import marshal
    return marshal.dumps(v, version)


# --- hostile inputs ------------------------------------------------------------------------------


def z(s, code=0x7A):
    """A short ASCII str (z, or Z / with FLAG_REF by code)."""
    b = s if isinstance(s, bytes) else s.encode("latin-1")
    return bytes([code, len(b)]) + b


def long_str(s, code):
    b = s if isinstance(s, bytes) else s.encode("utf-8", "surrogatepass")
    return bytes([code]) + u32(len(b)) + b


def call(obj, meth, vargs=b"[" + u32(0), kwargs=b"{0"):
    return b")\x04" + obj + meth + vargs + kwargs


THING = z("thing", 0xFA)
ECHO = z("echo", 0xDA)


def string_forms(name):
    """The same str in every marshal string type, with and without FLAG_REF (PROTOCOL.md §9)."""
    forms = []
    for code in (0x7A, 0x5A, 0xFA, 0xDA):
        if len(name.encode("latin-1", "replace")) < 256 and all(ord(c) < 256 for c in name):
            forms.append(z(name, code))
    for code in (0x61, 0x41, 0xE1, 0xC1):
        if all(ord(c) < 256 for c in name):
            forms.append(long_str(name.encode("latin-1"), code))
    for code in (0x75, 0x74, 0xF5, 0xF4):
        forms.append(long_str(name, code))
    return forms


def hostile_fixed():
    out = []

    def add(name, data):
        out.append((name, data))

    # §9: the name in every string form; bytes names; refs; trailing bytes.
    for name in ("sub.echo", "echo", "__getattr__", "_private", "é.x", "\ud800", "a\x00b"):
        for j, form in enumerate(string_forms(name)):
            add("name-form-%r-%d" % (name, j), call(THING, form))
            add("objid-form-%r-%d" % (name, j), call(form, ECHO))
    add("bytes-name", call(THING, b"s" + u32(4) + b"echo"))
    add("ref-name-to-objid", call(THING, b"r" + u32(0)))
    add("ref-name-to-arg", b")\x04" + THING + b"r" + u32(1) + b"[" + u32(1) + z("sub.echo", 0xDA)
        + b"{0")  # forward ref: index 1 does not exist yet
    batch = (b")\x04" + THING + z("<batch>", 0xDA) + b"\xdb" + u32(2)
             + b"\xa9\x03" + z("echo", 0xDA) + b"\xa9\x01" + z("sub.echo", 0xDA) + b"\xfb0"
             + b"\xa9\x03" + b"r" + u32(5) + b")\x00" + b"r" + u32(6) + b"N")
    add("batch-ref-to-data-string", batch)
    add("batch-ref-to-tuple", batch[:-11] + b"r" + u32(4) + b"N")
    honest = call(THING, ECHO, b"\xdb" + u32(1) + z("hello", 0xDA), b"\xfb0")
    add("honest-echo", honest)
    add("trailing-garbage", honest + b"x")
    add("trailing-null", honest + b"0")
    add("trailing-second-call", honest + call(THING, z("sub.echo")))
    add("top-list", b"[" + u32(4) + THING + ECHO + b"[" + u32(0) + b"{0")
    add("top-dict", b"{" + z("a") + b"N" + z("b") + b"N" + z("c") + b"N" + z("d") + b"N0")
    add("top-set", b"<" + u32(4) + z("a") + z("b") + z("c") + z("d"))
    add("top-str", z("abcd"))
    add("empty", b"")
    # Every type code, with and without FLAG_REF, followed by plausible bytes.
    for code in range(256):
        tails = (b"\x01\x00\x00\x00N",) if code & 0x80 else (b"\x00" * 16, b"\x03abc0")
        for tail in tails:
            add("code-%02x-%s" % (code, tail.hex()), bytes([code]) + tail)
    # FLAG_REF on singletons, NULL and r takes no index.
    for code in b"NTF.S":
        add("flagged-%c-then-ref" % code, b"(" + u32(2) + bytes([code | 0x80]) + b"r" + u32(0))
    add("flagged-ref-then-ref", b"(" + u32(3) + b"\xe9" + u32(5) + b"\xf2" + u32(0) + b"r" + u32(1))
    add("flagged-int-then-ref", b"(" + u32(2) + b"\xe9" + u32(5) + b"r" + u32(0))
    add("ref-negative", b"(" + u32(2) + b"\xe9" + u32(5) + b"r" + i32(-1))
    add("ref-out-of-range", b"(" + u32(2) + b"\xe9" + u32(5) + b"r" + u32(1))
    add("ref-truncated", b"(" + u32(2) + b"\xe9" + u32(5) + b"r\x00\x00")
    # Cycles and references to unfinished containers.
    add("tuple-contains-itself", b"\xa9\x01r" + u32(0))
    add("list-contains-itself", b"\xdb" + u32(1) + b"r" + u32(0))
    add("dict-contains-itself", b"\xfb" + z("a") + b"r" + u32(0) + b"0")
    add("dict-key-is-itself", b"\xfbr" + u32(0) + b"N0")
    add("set-contains-itself", b"\xbc" + u32(1) + b"r" + u32(0))
    add("frozenset-contains-itself", b"\xbe" + u32(1) + b"r" + u32(0))
    add("empty-frozenset-ref", b"(" + u32(2) + b"\xbe" + u32(0) + b"r" + u32(0))
    add("ref-to-finished-list", b"(" + u32(2) + b"\xdb" + u32(1) + z("x") + b"r" + u32(0))
    add("ref-to-finished-dict", b"(" + u32(2) + b"\xfb" + z("x") + b"N0" + b"r" + u32(0))
    add("ref-to-outer-tuple-in-child", b"\xa9\x02\xa9\x01Nr" + u32(0))
    add("ref-to-sibling-tuple", b"\xa9\x02\xa9\x01Nr" + u32(1))
    # NULL and dict terminators.
    add("null-top", b"0")
    add("null-in-tuple", b")\x020N")
    add("null-in-list", b"[" + u32(1) + b"0")
    add("null-in-set", b"<" + u32(1) + b"0")
    add("dict-value-null", b"{" + z("a") + b"0")
    add("dict-value-null-then-more", b"(" + u32(2) + b"{" + z("a") + b"0" + b"N")
    add("dict-unhashable-key-null-value", b"{[" + u32(0) + b"0")
    add("dict-flagged-null-terminator", b"{" + z("a") + b"N\xb0")
    add("dict-unterminated", b"{" + z("a") + b"N")
    add("dict-duplicate-keys", b"{" + z("method") + z("echo") + z("method") + z("sub.echo") + b"0")
    # Hashability.
    add("dict-key-list", b"{[" + u32(0) + b"N0")
    add("dict-key-dict", b"{{0N0")
    add("dict-key-set", b"{<" + u32(0) + b"N0")
    add("dict-key-frozenset", b"{>" + u32(0) + b"N0")
    add("dict-key-tuple-with-list", b"{)\x01[" + u32(0) + b"N0")
    add("dict-key-tuple-ref-to-list", b"(" + u32(2) + b"\xdb" + u32(0) + b"{)\x01r" + u32(1)
        + b"N0")
    add("set-member-list", b"<" + u32(1) + b"[" + u32(0))
    add("set-member-frozenset", b"<" + u32(1) + b">" + u32(1) + z("a"))
    # Numbers Python merges as keys or members; duplicates.
    one_i, one_l, one_g = b"i" + u32(1), b"l" + u32(1) + b"\x01\x00", b"g" + struct.pack("<d", 1.0)
    add("keys-1-True", b"{" + one_i + z("a") + b"T" + z("b") + b"0")
    add("keys-1-1.0", b"{" + one_i + z("a") + one_g + z("b") + b"0")
    add("keys-1-long1", b"{" + one_i + z("a") + one_l + z("b") + b"0")
    add("keys-1-2", b"{" + one_i + z("a") + b"i" + u32(2) + z("b") + b"0")
    add("keys-tuple1-tupleTrue", b"{)\x01" + one_i + z("a") + b")\x01T" + z("b") + b"0")
    add("keys-True-True", b"{T" + z("a") + b"T" + z("b") + b"0")
    add("keys-nan-nan", b"{g" + struct.pack("<d", float("nan")) + z("a") + b"g"
        + struct.pack("<d", float("nan")) + z("b") + b"0")
    add("set-1-True", b"<" + u32(2) + one_i + b"T")
    add("set-1-1", b"<" + u32(2) + one_i + one_i)
    add("set-dup-str", b"<" + u32(3) + z("a") + z("b") + z("a"))
    add("set-dup-str-forms", b"<" + u32(3) + z("é") + long_str("é", 0x75)
        + long_str(b"\xe9", 0x61))
    add("set-dup-tuples", b"<" + u32(2) + b")\x02" + z("a") + b"N" + b")\x02" + z("a") + b"N")
    add("set-dup-frozensets", b"<" + u32(2) + b">" + u32(2) + z("a") + z("b") + b">" + u32(2)
        + z("b") + z("a"))
    add("frozenset-dup-members", b">" + u32(3) + z("x") + b"N" + z("x"))
    add("dict-keys-frozensets-equal", b"{>" + u32(2) + z("a") + z("b") + b"N>" + u32(3) + z("b")
        + z("a") + z("b") + b"T0")
    add("set-bytes-vs-str", b"<" + u32(2) + z("a") + b"s" + u32(1) + b"a")
    # Longs.
    for name, body in [("zero", u32(0)), ("one", u32(1) + b"\x01\x00"),
                       ("neg", i32(-1) + b"\x05\x00"), ("unnormalized", u32(1) + b"\x00\x00"),
                       ("unnormalized-2", u32(2) + b"\x01\x00\x00\x00"),
                       ("digit-8000", u32(1) + b"\x00\x80"), ("digit-7fff", u32(1) + b"\xff\x7f"),
                       ("digit-ffff", u32(1) + b"\xff\xff"), ("min-count", i32(-2 ** 31)),
                       ("huge-count", u32(0x7FFFFFFF) + b"\x01\x00"),
                       ("truncated", u32(3) + b"\x01\x00"), ("three", u32(3) + b"\x01\x00" * 3),
                       ("neg-three", i32(-3) + b"\x00\x00\x00\x00\x01\x00")]:
        add("long-" + name, b"l" + body)
    add("int64", b"I" + b"\xff" * 8)
    add("int64-truncated", b"I" + b"\xff" * 7)
    # Negative and oversized counts.
    for code in b"([<>saAut":
        add("count-negative-%c" % code, bytes([code]) + i32(-1))
        add("count-huge-%c" % code, bytes([code]) + u32(0x7FFFFFFF) + b"N")
    add("small-tuple-eof", b")")
    add("short-ascii-eof", b"z")
    # Latin-1 in "ASCII" strings.
    for b in (b"\x80", b"\xe9", b"\xff", b"abc\xff", b"\xc3\xa9"):
        add("latin1-z-%s" % b.hex(), z(b))
        add("latin1-a-%s" % b.hex(), long_str(b, 0x61))
    # Deep nesting (the arena's default depth is 32; CPython stops at 2000 r_object calls).
    for depth in (DEFAULT_MAX_DEPTH - 1, DEFAULT_MAX_DEPTH, DEFAULT_MAX_DEPTH + 1, 100, 1999,
                  2000, 2001):
        add("deep-lists-%d" % depth, (b"[" + u32(1)) * depth + b"N")
        add("deep-empty-%d" % depth, (b"[" + u32(1)) * (depth - 1) + b"[" + u32(0))
    # A ref puts a deep subtree at a deeper place.
    sub = (b"\xa9\x01") * 20 + b"N"
    add("ref-deepens-tree", b")\x02" + sub + (b")\x01") * 20 + b"r" + u32(0))
    add("ref-deepens-tree-ok", b")\x02" + sub + (b")\x01") * 5 + b"r" + u32(0))
    # Reference bombs: each level is two refs to the previous one.
    bomb = b"(" + u32(30) + b"\xa9\x01N" + b"".join(
        b"\xa9\x02r" + u32(i) + b"r" + u32(i) for i in range(29))
    add("ref-bomb", bomb)
    small_bomb = b"(" + u32(6) + b"\xa9\x01N" + b"".join(
        b"\xa9\x02r" + u32(i) + b"r" + u32(i) for i in range(5))
    add("ref-bomb-small", small_bomb)
    # Text floats and complexes (format versions 0 and 1).
    for text in (b"1.5", b"-0", b"+.5", b"1.", b".", b"", b"1e5", b"1e", b"1e+", b"1E-5", b"inf",
                 b"-INF", b"Infinity", b"infinit", b"nan", b"-nan", b"+NaN", b"nan(1)", b" 1",
                 b"1 ", b"1_0", b"0x10", b"1.5\x00x", b"\x001", b"1e99999", b"1e-99999",
                 b"0" * 255, b"1" * 200 + b"e-190", b"--1", b"+-1", b"1.5.5", b"e5", b"\xb2"):
        add("float-text-%s" % text.hex(), b"f" + bytes([len(text)]) + text)
        add("complex-text-%s" % text.hex(), b"x" + bytes([len(text)]) + text + b"\x011")
    add("float-text-truncated", b"f\x051.5")
    add("binary-float-truncated", b"g" + b"\x00" * 7)
    add("binary-complex-truncated", b"y" + b"\x00" * 15)
    add("code-object", call(THING, b"c" + b"\x00" * 40))
    return out


def utf8_soup(rnd):
    alphabet = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF,
                0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]
    return bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 7)))


def float_soup(rnd):
    alphabet = "0123456789+-.eEinfatyINFATY_x \x00"
    return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 9))).encode("latin-1")


INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFF, ord("0"), ord("N"), ord("r"), ord("("), ord(")"),
               ord("["), ord("{"), ord("<"), ord(">"), ord("z"), ord("u"), ord("a"), ord("l"),
               0xDA, 0xFA, 0xA9, 0xDB, 0xFB, 0xF2]


def mutate(rnd, data):
    data = bytearray(data)
    for _ in range(rnd.choice([1, 1, 1, 2, 3])):
        op = rnd.randrange(7)
        pos = rnd.randint(0, len(data))
        if op == 0 and data:
            pos = min(pos, len(data) - 1)
            data[pos] ^= 1 << rnd.randrange(8)
        elif op == 1:
            data[pos:pos] = bytes([rnd.choice(INTERESTING)])
        elif op == 2 and data:
            del data[pos:pos + rnd.randint(1, 4)]
        elif op == 3:
            data = data[:pos]
        elif op == 4 and data:
            pos = min(pos, len(data) - 1)
            data[pos] = rnd.choice(INTERESTING)
        elif op == 5 and len(data) >= 4:
            pos = min(pos, len(data) - 4)
            data[pos:pos + 4] = rnd.choice([u32(0), u32(1), u32(2), i32(-1), u32(0x7FFFFFFF),
                                            u32(len(data))])
        else:
            n = rnd.randint(1, 8)
            data[pos:pos] = data[pos:pos + n]
    return bytes(data)


def build_corpus():
    """[(kind, name, payload)]; kind in captured-c2s, captured-s2c, honest, hostile, mutation."""
    rnd = random.Random(SEED)
    corpus = []
    for name, payload, direction in captured_payloads():
        corpus.append(("captured-" + direction, name, payload))
    honest = honest_inputs(rnd)
    corpus += [("honest", name, data) for name, data in honest]
    corpus += [("hostile", name, data) for name, data in hostile_fixed()]
    for i in range(350):
        soup = utf8_soup(rnd)
        code = rnd.choice([0x75, 0x74, 0xF5])
        corpus.append(("hostile", "utf8-%d" % i, call(THING, long_str(soup, code))))
    for i in range(60):
        corpus.append(("hostile", "latin1-%d" % i, call(THING, z(utf8_soup(rnd),
                                                                  rnd.choice([0x7A, 0xDA])))))
    for i in range(200):
        text = float_soup(rnd)
        corpus.append(("hostile", "float-%d" % i, b"f" + bytes([len(text)]) + text))
    sources = [d for _, _, d in corpus if len(d) < 2000]
    for i in range(700):
        corpus.append(("mutation", "mutation-%d" % i, mutate(rnd, rnd.choice(sources))))
    return corpus


# --- the value-model oracle ----------------------------------------------------------------------


class MDict:
    def __init__(self):
        self.pairs = []


class MSet:
    def __init__(self, frozen):
        self.frozen = frozen
        self.items = []


class ModelError(Exception):
    pass


def model_load(data):
    """An independent reader of the marshal format for inputs CPython accepted: the same values,
    but dicts keep their pairs and sets their members in wire order (the value model)."""
    refs = []
    pos = [0]

    def take(n):
        if pos[0] + n > len(data):
            raise ModelError("short")
        b = data[pos[0]:pos[0] + n]
        pos[0] += n
        return b

    def take_i32():
        return struct.unpack("<i", take(4))[0]

    def reserve(flag):
        if not flag:
            return None
        refs.append(None)
        return len(refs) - 1

    def done(idx, v):
        if idx is not None:
            refs[idx] = v
        return v

    def r_object():
        code = take(1)[0]
        flag, t = code & 0x80, chr(code & 0x7F)
        if t == "0":
            return ModelError  # the NULL marker
        simple = {"N": None, "T": True, "F": False, ".": Ellipsis, "S": StopIteration}
        if t in simple:
            return simple[t]
        if t == "r":
            n = take_i32()
            if not 0 <= n < len(refs) or refs[n] is None:
                raise ModelError("ref")
            return refs[n]
        idx = reserve(flag)
        if t == "i":
            return done(idx, take_i32())
        if t == "I":
            return done(idx, struct.unpack("<q", take(8))[0])
        if t == "l":
            n = take_i32()
            digits = [struct.unpack("<H", take(2))[0] for _ in range(abs(n))]
            v = sum(d << (15 * i) for i, d in enumerate(digits))
            return done(idx, -v if n < 0 else v)
        if t == "g":
            return done(idx, struct.unpack("<d", take(8))[0])
        if t == "y":
            return done(idx, complex(*struct.unpack("<dd", take(16))))
        if t == "f":
            return done(idx, float(take(take(1)[0]).split(b"\0")[0]))
        if t == "x":
            re_ = float(take(take(1)[0]).split(b"\0")[0])
            return done(idx, complex(re_, float(take(take(1)[0]).split(b"\0")[0])))
        if t == "s":
            return done(idx, take(take_i32()))
        if t in "ut":
            return done(idx, take(take_i32()).decode("utf-8", "surrogatepass"))
        if t in "aA":
            return done(idx, take(take_i32()).decode("latin-1"))
        if t in "zZ":
            return done(idx, take(take(1)[0]).decode("latin-1"))
        if t in "()[":
            n = take(1)[0] if t == ")" else take_i32()
            items = []
            v = items if t == "[" else None
            for _ in range(n):
                x = r_object()
                if x is ModelError:
                    raise ModelError("null")
                items.append(x)
            return done(idx, items if t == "[" else tuple(items)) if v is None else done(idx, v)
        if t == "{":
            d = MDict()
            while True:
                k = r_object()
                if k is ModelError:
                    break
                v = r_object()
                if v is ModelError:
                    raise ModelError("null value")
                d.pairs.append((k, v))
            return done(idx, d)
        if t in "<>":
            s = MSet(t == ">")
            for _ in range(take_i32()):
                s.items.append(r_object())
            return done(idx, s)
        raise ModelError("code %r" % t)

    v = r_object()
    if v is ModelError:
        raise ModelError("top")
    return v  # trailing bytes ignored, as by marshal.loads


def has_num(v):
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float, complex)):
        return True
    if isinstance(v, tuple):
        return any(has_num(x) for x in v)
    if isinstance(v, MSet):
        return any(has_num(x) for x in v.items)
    return False


def has_bool(v):
    if isinstance(v, bool):
        return True
    if isinstance(v, tuple):
        return any(has_bool(x) for x in v)
    if isinstance(v, MSet):
        return any(has_bool(x) for x in v.items)
    return False


def ambiguous_keys(keys):
    """Whether Python may merge two of these keys / members where the value model cannot tell."""
    num = [has_num(k) for k in keys]
    boolish = [has_bool(k) for k in keys]
    return sum(num) >= 2 or (sum(num) >= 1 and any(b and not n for b, n in zip(boolish, num)))


def model_dump(v, amb):
    """value_dump's rendering of the value-model tree; sets |amb[0]| when a container is
    ambiguous."""
    if isinstance(v, MDict):
        if ambiguous_keys([k for k, _ in v.pairs]):
            amb[0] = True
        pairs = collections.OrderedDict()
        for k, x in v.pairs:
            pairs[model_dump(k, amb)] = model_dump(x, amb)  # first position, last value
        return "d{" + ",".join(k + ":" + x for k, x in pairs.items()) + "}"
    if isinstance(v, MSet):
        if ambiguous_keys(v.items):
            amb[0] = True
        plain, numeric = set(), []
        for x in v.items:
            if has_num(x):
                numeric.append(model_dump(x, amb))
            else:
                plain.add(model_dump(x, amb))  # number-free members: equal iff same dump
        return ("f{" if v.frozen else "{") + ",".join(sorted(list(plain) + numeric)) + "}"
    if isinstance(v, tuple):
        return "(" + ",".join(model_dump(x, amb) for x in v) + ")"
    if isinstance(v, list):
        return "[" + ",".join(model_dump(x, amb) for x in v) + "]"
    return pydump.dump(v)


# --- the two sides -------------------------------------------------------------------------------


def expanded_size(v, memo, stack):
    """Nodes in the tree of |v| with shared subtrees counted each time; None on a cycle."""
    key = id(v)
    if key in memo:
        return memo[key]
    if key in stack:
        return None
    if isinstance(v, (tuple, list, set, frozenset)):
        children = list(v)
    elif isinstance(v, dict):
        children = list(v.keys()) + list(v.values())
    else:
        return 1
    stack.add(key)
    total = 1
    for c in children:
        n = expanded_size(c, memo, stack)
        if n is None:
            return None
        total += n
    stack.discard(key)
    memo[key] = total
    return total


def worker_init():
    # CPython allocates and clears a tuple or list of the declared count before reading the
    # items: a lying count of 2^31 would touch 16 GiB, slowly. Give the worker 128 MiB more than
    # it has, so such counts become a quick MemoryError (an error either way).
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + (128 << 20), vm + (128 << 20)))
    sys.setrecursionlimit(20000)


def python_side(data):
    """("ok", Python's dump, model dump or None, ambiguous) or ("error", exception, None, False)."""
    try:
        value = pydump.decode("marshal", data)
    except Exception as e:  # every failure of the real decoder counts as "refused"
        return ("error", type(e).__name__, None, False)
    size = expanded_size(value, {}, set())
    if size is None or size > 1000000:
        return ("ok", "<cyclic or %s nodes: no dump>" % size, None, False)
    dump = pydump.dump(value)
    amb = [False]
    try:
        model = model_dump(model_load(data), amb)
    except ModelError:
        model = None  # cycles, a dropped dict key: the decoder must refuse these
    return ("ok", dump, model, amb[0])


def c_side(path):
    out = subprocess.run([str(VALUE_DUMP), "marshal", path], capture_output=True, timeout=60,
                         env=C_ENV)
    line = out.stdout.decode("utf-8", "replace").rstrip("\n")
    if out.returncode != 0 or not (line.startswith("ok ") or line.startswith("refused")):
        return ("crash", "exit %d: %s %s" % (out.returncode, line[:200],
                                            out.stderr.decode("utf-8", "replace")[-500:]))
    status, _, rest = line.partition(" ")
    return (status, rest)


def show(data, n=160):
    r = repr(data)
    return r if len(r) <= n else r[:n] + "...(%d bytes)" % len(data)


@pytest.mark.timeout(120)
def test_marshal_decoder_matches_python_on_captured_honest_and_hostile_inputs():
    corpus = build_corpus()
    with tempfile.TemporaryDirectory(prefix="marshal-diff-") as tmp:
        paths = []
        for i, (_, _, data) in enumerate(corpus):
            p = os.path.join(tmp, "%05d" % i)
            with open(p, "wb") as f:
                f.write(data)
            paths.append(p)
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(max(2, os.cpu_count() or 2), initializer=worker_init) as procs:
            py_async = procs.map_async(python_side, [d for _, _, d in corpus], chunksize=32)
            with ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 2))) as pool:
                c_results = list(pool.map(c_side, paths))
            py_results = py_async.get(timeout=100)

    counts = collections.Counter()
    reasons = collections.Counter()
    reason_example = {}
    problems = []
    for (kind, name, data), c, py in zip(corpus, c_results, py_results):
        group = kind.split("-")[0]
        must_accept = kind in ("captured-c2s", "captured-s2c", "honest")
        py_ok, py_dump, model, amb = py
        if py_ok == "ok" and model is not None and not amb and model != py_dump:
            problems.append("%s %s: the test's model_load disagrees with Python\n    input %s\n"
                            "    model  %s\n    Python %s" % (kind, name, show(data), model[:300],
                                                              py_dump[:300]))
        if c[0] == "crash":
            problems.append("%s %s: value_dump crashed: %s\n    input %s" % (kind, name, c[1],
                                                                           show(data)))
            continue
        if c[0] == "ok":
            if py_ok == "ok" and model is None:
                problems.append("%s %s: C ok %s on an input the model reader refuses\n"
                                "    input %s" % (kind, name, c[1][:200], show(data)))
            elif py_ok != "ok":
                problems.append("%s %s: C ok %s but Python raises %s\n    input %s"
                                % (kind, name, c[1][:200], py_dump, show(data)))
            elif not amb and c[1] == py_dump:
                counts[group, "ok and equal"] += 1
            elif amb and c[1] == model:
                counts[group, "ok and equal in the value model"] += 1
            else:
                problems.append("%s %s: C and Python differ%s\n    input  %s\n    C      %s\n"
                                "    Python %s\n    model  %s" % (
                                    kind, name, " (ambiguous numeric keys)" if amb else "",
                                    show(data), c[1][:300], py_dump[:300], str(model)[:300]))
        elif py_ok == "ok":
            if must_accept:
                problems.append("%s %s: honest input refused (%s)\n    input %s"
                                % (kind, name, c[1], show(data)))
            counts[group, "refused by C only"] += 1
            reasons[c[1]] += 1
            reason_example.setdefault(c[1], (name, data))
        else:
            counts[group, "refused by both"] += 1

    print("\nmarshal differential: %d inputs" % len(corpus))
    for group in ("captured", "honest", "hostile", "mutation"):
        print("  %-9s %s" % (group, ", ".join("%s: %d" % (what, counts[group, what]) for what in (
            "ok and equal", "ok and equal in the value model", "refused by C only",
            "refused by both"))))
    print("  refusals of inputs Python accepts, by reason:")
    for reason, n in reasons.most_common():
        ex_name, ex = reason_example[reason]
        print("    %5d  %-36s e.g. %s %s" % (n, reason, ex_name, show(ex, 80)))
    assert not problems, "%d problem(s):\n%s" % (len(problems), "\n".join(problems[:40]))
    assert counts["captured", "ok and equal"] >= 60, "captures missing from tests/vectors?"
    assert counts["honest", "ok and equal"] + counts["honest", "ok and equal in the value model"] \
        >= 1000
