"""Differential test: pyroguard's msgpack decoder (proxy/msgpack.c, through build/value_dump)
against msgpack.unpackb(data, raw=False) of msgpack 1.0.3, the call the Pyro4 4.82 daemon makes
(PROTOCOL.md §5.4), through tests/tools/pydump.py's own functions.

The rule: whenever the C decoder says "ok", Python must decode the same bytes without error to
the same dump; and the C decoder must never refuse what an honest Pyro4 client (msgpack.packb
with use_bin_type=True, via Pyro4's MsgpackSerializer) sends. Inputs:
  * every captured client payload in tests/vectors/pyro4/msgpack/ (both must accept);
  * thousands of honest encodings of random values (nested containers, str with astral
    characters, every int width, floats, bytes, ext types, timestamps, Pyro's complex / big int
    / datetime / date ext values), packed by the real library;
  * hostile variants of every msgpack item of PROTOCOL.md §9 (str8/16/32 names, array16/32 top
    levels, bin names, overlong and surrogate UTF-8, ext types, trailing bytes, 0xc1, lengths
    beyond the input, non-str keys, duplicate keys, deep nesting, timestamp edge cases);
  * random mutations (byte flips, truncations, insertions, deletions) of valid inputs.

value_dump runs once per input, in parallel; the Python side runs in-process.
Run: VALUE_DUMP_BIN=build/value_dump /usr/bin/python3 -m pytest tests/integration -k msgpack -s
"""

import datetime
import decimal
import os
import random
import struct
import subprocess
import sys
import tempfile
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VALUE_DUMP = Path(os.environ.get("VALUE_DUMP_BIN", str(REPO / "build" / "value_dump")))
VECTORS = REPO / "tests" / "vectors" / "pyro4" / "msgpack"
SEED = 20240611

sys.path.insert(0, str(REPO / "tests" / "tools"))
import pydump  # noqa: E402  (the Python side of the differential tools)

sys.setrecursionlimit(20000)  # pydump.dump recurses once per level; inputs nest 1025 deep

msgpack = pytest.importorskip("msgpack")
Pyro4_util = pytest.importorskip("Pyro4.util")

pytestmark = pytest.mark.skipif(
    not VALUE_DUMP.exists(),
    reason="value_dump not built (%s); build it or set VALUE_DUMP_BIN" % VALUE_DUMP)

PYRO = Pyro4_util.MsgpackSerializer()


# --- running both sides ------------------------------------------------------------------------


def python_side(data):
    try:
        v = pydump.decode("msgpack", data)
    except Exception as e:  # any failure of the real decoder is a refusal
        return "error " + type(e).__name__
    return "ok " + pydump.dump(v)


def c_side(inputs):
    """value_dump's line for each input, run in parallel (one process per input)."""
    with tempfile.TemporaryDirectory(prefix="mp-diff-") as tmp:
        paths = []
        for i, data in enumerate(inputs):
            p = os.path.join(tmp, "%05d.bin" % i)
            with open(p, "wb") as f:
                f.write(data)
            paths.append(p)

        def run(path):
            r = subprocess.run([str(VALUE_DUMP), "msgpack", path], capture_output=True, timeout=30)
            assert r.returncode == 0, "value_dump failed on %s: %r" % (path, r.stderr)
            return r.stdout.decode("utf-8").rstrip("\n")

        with ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 1))) as pool:
            return list(pool.map(run, paths))


def compare(inputs, label):
    """Runs both sides; returns counts and the list of C-ok-but-different cases."""
    uniq = list(dict.fromkeys(inputs))
    c_lines = c_side(uniq)
    counts = {"ok and equal": 0, "refused by C only": 0, "refused by both": 0}
    wrong, c_refused = [], []
    for data, c in zip(uniq, c_lines):
        py = python_side(data)
        if c.startswith("ok "):
            if c != py:
                wrong.append((data.hex(), c[:200], py[:200]))
            else:
                counts["ok and equal"] += 1
        elif py.startswith("ok "):
            counts["refused by C only"] += 1
            c_refused.append((data.hex()[:200], c, py[:200]))
        else:
            counts["refused by both"] += 1
    print("\nmsgpack differential, %s: %d inputs: %s" % (
        label, len(uniq), ", ".join("%s %d" % kv for kv in counts.items())))
    return counts, wrong, c_refused


# --- captured payloads -------------------------------------------------------------------------


def captured_payloads():
    """The msgpack payload of every captured client frame: bytes after the 24-byte header and
    the annotations (length at offset 0x12), inflated when flagged COMPRESSED (PROTOCOL.md §2)."""
    out = []
    for path in sorted(VECTORS.glob("*/*_c2s_*.bin")):
        frame = path.read_bytes()
        flags, = struct.unpack(">H", frame[8:10])
        data_len, = struct.unpack(">I", frame[12:16])
        ann_len, = struct.unpack(">H", frame[18:20])
        ser, = struct.unpack(">H", frame[16:18])
        if ser != 6:  # PING frames carry serializer id 42 and no msgpack
            continue
        payload = frame[24 + ann_len:24 + ann_len + data_len]
        if flags & 0x02:
            payload = zlib.decompress(payload)
        out.append((path.relative_to(VECTORS).as_posix(), payload))
    return out


# --- honest encodings --------------------------------------------------------------------------

ALPHABETS = [
    "abcxyz019 _.-<>",
    "éüßøñ¡¿ÿ",
    "中文字符日本語한국어",
    "\U0001f600\U0001f4a9\U00010000\U0010ffff\U0001d11e",
    "\u0000\u007f\u0080\u07ff\u0800\ud7ff\ue000\ufeff\uffff",
]


def rand_str(r):
    n = r.choice([0, 1, 2, 5, 17, 31, 32, 33, 40, 64, 100, 255, 256, 300] if r.random() < 0.2
                 else [0, 1, 3, 4, 8, 12])
    if r.random() < 0.3:  # long ASCII with a few non-ASCII characters anywhere (fast path)
        s = ["a"] * n
        for _ in range(r.randint(0, 3)):
            if s:
                s[r.randrange(len(s))] = r.choice("".join(ALPHABETS[1:]))
        return "".join(s)
    alpha = "".join(r.sample(ALPHABETS, r.randint(1, len(ALPHABETS))))
    return "".join(r.choice(alpha) for _ in range(n))


INT_EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
             2**63 - 1, 2**63, 2**64 - 1, -1, -31, -32, -33, -128, -129, -32768, -32769,
             -2**31, -2**31 - 1, -2**63]


def rand_scalar(r, pyro):
    k = r.randrange(12 if pyro else 10)
    if k == 0:
        return r.choice([None, True, False])
    if k == 1:
        return r.choice(INT_EDGES)
    if k == 2:
        return r.randint(-2**63, 2**64 - 1)
    if k == 3:
        return r.choice([0.0, -0.0, 1.5, 1e308, 5e-324, float("inf"), float("-inf"),
                         float("nan"), r.uniform(-1e9, 1e9)])
    if k in (4, 5):
        return rand_str(r)
    if k == 6:
        return bytes(r.randrange(256) for _ in range(r.choice([0, 1, 3, 32, 255, 256, 70])))
    if k == 7:
        return msgpack.ExtType(r.randint(0, 127), bytes(r.randrange(256) for _ in range(
            r.choice([0, 1, 2, 3, 4, 8, 16, 17, 255, 256]))))
    if k == 8:
        return msgpack.Timestamp(r.choice([0, 1, 2**32 - 1, 2**32, 2**34 - 1, 2**34, -1,
                                           -2**63, 2**63 - 1]),
                                 r.choice([0, 1, 999999999]))
    if k == 9:
        return rand_str(r)[:8] or "k"
    # Pyro4's MsgpackSerializer.default turns these into ext types 0x30..0x33 or str
    return r.choice([complex(r.random(), -2.5), 2**70 + r.randrange(1000), -2**80,
                     datetime.datetime(2020, 1, 2, 3, 4, 5), datetime.date(1999, 12, 31),
                     decimal.Decimal("1.25"), uuid.UUID(int=r.getrandbits(128)),
                     {1, 2, "three"}])


def rand_value(r, depth, pyro):
    if depth <= 0 or r.random() < 0.45:
        return rand_scalar(r, pyro)
    k = r.randrange(3)
    n = r.choice([0, 1, 2, 3, 4, 15, 16, 17] if depth >= 4 else [0, 1, 2, 3])
    if k == 0:
        return [rand_value(r, depth - 1, pyro) for _ in range(n)]
    if k == 1:
        return tuple(rand_value(r, depth - 1, pyro) for _ in range(n))
    keys = [rand_str(r)[:12] if r.random() < 0.85 else bytes(rand_str(r)[:6], "utf-8")
            for _ in range(n)]
    return {key: rand_value(r, depth - 1, pyro) for key in keys}


def honest_inputs(r, count):
    out = []
    for i in range(count):
        kind = i % 4
        if kind == 0:  # what a Pyro4 4.82 client sends for a call
            kwargs = {rand_str(r)[:10] or "kw": rand_value(r, 3, True)
                      for _ in range(r.randint(0, 3))}
            vargs = tuple(rand_value(r, 4, True) for _ in range(r.randint(0, 4)))
            out.append(PYRO.dumpsCall(r.choice(["thing", "Pyro.Daemon", rand_str(r)]),
                                      r.choice(["echo", "__getattr__", "<batch>", rand_str(r)]),
                                      vargs, kwargs if r.random() < 0.8 else None))
        elif kind == 1:
            out.append(PYRO.dumps(rand_value(r, 5, True)))
        elif kind == 2:
            out.append(msgpack.packb(rand_value(r, 5, False), use_bin_type=True,
                                     use_single_float=r.random() < 0.5))
        else:  # old-style packing (no bin types, no str8): kept when it holds no bytes
            data = msgpack.packb(rand_value(r, 4, False), use_bin_type=False)
            if python_side(data).startswith("ok "):
                out.append(data)
    # a few large ones: long strings cross the validator's block boundaries many times
    for n in (1000, 4096, 70000):
        out.append(msgpack.packb(["x" * n, ("é" + "y" * 37) * (n // 38), "中" * n, b"z" * n]))
    return out


# --- hostile variants (PROTOCOL.md §9 msgpack, §10) --------------------------------------------


def s8(b):
    return b"\xd9" + struct.pack(">B", len(b)) + b


def s16(b):
    return b"\xda" + struct.pack(">H", len(b)) + b


def s32(b):
    return b"\xdb" + struct.pack(">I", len(b)) + b


def fixs(b):
    return bytes([0xa0 | len(b)]) + b


def call(obj, method, vargs=b"\x91\xa5hello", kwargs=b"\x80", head=b"\x94"):
    return head + obj + method + vargs + kwargs


def hostile_inputs(r):
    out = []
    thing = fixs(b"thing")
    for enc in (fixs, s8, s16, s32):  # §9: str8/16/32 instead of fixstr
        out.append(call(thing, enc(b"sub.echo")))
        out.append(call(enc(b"thing"), enc(b"echo")))
    for head in (b"\xdc\x00\x04", b"\xdd\x00\x00\x00\x04", b"\x93", b"\x95", b"\x84"):
        out.append(call(thing, fixs(b"echo"), head=head))  # array16/32 top, wrong sizes
    for name in (b"\xc4\x04echo", b"\xc5\x00\x04echo", b"\xc6\x00\x00\x00\x04echo",
                 b"\xd4\x2e\x2e", b"\xd6\xff\x00\x00\x00\x01", b"\xc0", b"\x2e", b"\x90",
                 b"\x80", b"\xc1"):
        out.append(call(thing, name))  # non-str method names
    for dot in (b"\xc0\xae", b"\xe0\x80\xae", b"\xf0\x80\x80\xae", b"\xc1\xae",  # overlong '.'
                b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xa0\xbd\xed\xb8\x80",  # surrogates
                b"\xef\xbc\x8e", b"\xe2\x80\xa4", b"\xf4\x90\x80\x80", b"\xff", b"\x80"):
        out.append(call(thing, fixs(b"sub" + dot + b"echo")))
        out.append(call(thing, s16(b"x" * 40 + dot + b"echo")))
    # kwargs maps: map16/32, duplicate keys, every kind of non-str key
    out.append(call(thing, fixs(b"echo"), kwargs=b"\xde\x00\x01\xa1k\x01"))
    out.append(call(thing, fixs(b"echo"), kwargs=b"\xdf\x00\x00\x00\x01\xa1k\x01"))
    out.append(call(thing, fixs(b"echo"), kwargs=b"\x82\xa1k\x01\xa1k\x02"))
    out.append(b"\x85\xa6object\xa5thing\xa6method\xa4echo\xa6method\xa3sub\xa1x\xc0\xa1y\xc0")
    for key in (b"\xc0", b"\xc2", b"\xc3", b"\x01", b"\xff", b"\xcb" + b"\x00" * 8, b"\x90",
                b"\x80", b"\x91\xa1a", b"\xd4\x01\x00", b"\xc7\x00\x05", b"\xd6\xff\x00\x00\x00\x00",
                b"\xc4\x01k", b"\xa0"):
        out.append(call(thing, fixs(b"echo"), kwargs=b"\x81" + key + b"\x01"))
    # trailing bytes: a second call riding behind the first (unpackb raises ExtraData)
    first = call(thing, fixs(b"echo"))
    out += [first + first, first + b"\x00", first + b"\xc0", first + b"\xc1", b"\xc0\xc0"]
    # 0xc1 anywhere, truncations and lengths beyond the input
    out += [b"\xc1", b"\x91\xc1", b"\x81\xa0\xc1", b"\x81\xc1\xc0", b""]
    for tag, width in ((0xd9, 1), (0xda, 2), (0xdb, 4), (0xc4, 1), (0xc5, 2), (0xc6, 4),
                       (0xc7, 1), (0xc8, 2), (0xc9, 4), (0xdc, 2), (0xdd, 4), (0xde, 2),
                       (0xdf, 4)):
        for n in (0, 1, 2, 3, 2**(8 * width) - 1):
            for body in (b"", b"\x01", b"\x01\x01", b"\x01" * 3, b"\xa1a\xa1a\xa1a"):
                out.append(bytes([tag]) + n.to_bytes(width, "big") + body)
    # ext type codes: every code with a 1-byte fixext, timestamps of every length
    for code in range(256):
        out.append(b"\xd4" + bytes([code]) + b"\x00")
    for n in range(0, 18):
        out.append(b"\xc7" + bytes([n, 0xff]) + bytes(r.randrange(256) for _ in range(n)))
    for nsec in (0, 1, 999999999, 1000000000, 2**30 - 1, 2**32 - 1):
        if nsec < 2**30:
            out.append(b"\xd7\xff" + struct.pack(">Q", nsec << 34 | r.getrandbits(34)))
        out.append(b"\xc7\x0c\xff" + struct.pack(">Iq", nsec, r.randint(-2**63, 2**63 - 1)))
    for tag in (0xd4, 0xd5, 0xd6, 0xd7, 0xd8):
        n = 1 << (tag - 0xd4)
        out.append(bytes([tag, 0xff]) + b"\x00" * n)
        out.append(bytes([tag, 0x30]) + b"\x00" * n)
        out.append(bytes([tag, 0x80]) + b"\x00" * n)
    # deep nesting: C refuses past the arena's 32 levels (fail closed), Python past 1024
    for depth in (31, 32, 33, 1023, 1024, 1025):
        for open_, close in ((b"\x91", b"\xc0"), (b"\x81\xa0", b"\xc0"), (b"\x91", b"\x90"),
                             (b"\x91", b"\xd4\x00\x00"), (b"\x91", b"\xd6\xff\x00\x00\x00\x00")):
            out.append(open_ * depth + close)
    # single bytes and short sequences of every type byte
    for b in range(256):
        out.append(bytes([b]))
        out.append(bytes([b]) + bytes(r.randrange(256) for _ in range(r.randint(1, 9))))
    # strings: chosen lead bytes x boundary second bytes, short and inside long ASCII runs
    leads = [0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0,
             0xf1, 0xf3, 0xf4, 0xf5, 0xf7, 0xf8, 0xfe, 0xff]
    seconds = [0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0]
    for lead in leads:
        for second in seconds:
            seq = bytes([lead, second, 0x80, 0x80])
            for cut in (2, 3, 4):
                out.append(fixs(seq[:cut]))
            pos = r.randrange(60)
            out.append(s8(b"a" * pos + seq[:r.randint(1, 4)] + b"b" * r.randrange(60)))
    return out


# --- mutations ---------------------------------------------------------------------------------

INTERESTING = [0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc4, 0xc7,
               0xca, 0xcb, 0xcf, 0xd4, 0xd8, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff]


def mutate(r, data):
    b = bytearray(data)
    for _ in range(r.randint(1, 3)):
        op = r.randrange(6)
        if op == 0 and b:
            b[r.randrange(len(b))] ^= 1 << r.randrange(8)
        elif op == 1 and b:
            b[r.randrange(len(b))] = r.choice(INTERESTING)
        elif op == 2 and b:
            del b[r.randrange(len(b)):]
        elif op == 3:
            b.insert(r.randint(0, len(b)), r.randrange(256))
        elif op == 4 and b:
            del b[r.randrange(len(b))]
        elif op == 5 and b:
            i = r.randrange(len(b))
            b[i:i] = b[i:i + r.randint(1, 8)]
    return bytes(b)


# --- tests -------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_msgpack_every_captured_client_payload_decodes_like_python():
    caps = captured_payloads()
    assert len(caps) >= 30
    lines = c_side([p for _, p in caps])
    for (name, payload), c in zip(caps, lines):
        py = python_side(payload)
        assert py.startswith("ok "), "%s: Python refuses its own capture: %s" % (name, py)
        assert c == py, "%s: C %r != Python %r" % (name, c, py)
    print("\nmsgpack differential, captures: %d payloads, all ok and equal" % len(caps))


@pytest.mark.timeout(120)
def test_msgpack_honest_encodings_are_never_refused_and_decode_like_python():
    r = random.Random(SEED)
    inputs = honest_inputs(r, 1300)
    counts, wrong, c_refused = compare(inputs, "honest encodings (seed %d)" % SEED)
    assert not wrong, "C accepted with a different tree: %r" % wrong[:5]
    assert not c_refused, "C refused honest encodings: %r" % c_refused[:5]
    assert counts["refused by both"] == 0


@pytest.mark.timeout(120)
def test_msgpack_hostile_and_mutated_inputs_never_decode_differently():
    r = random.Random(SEED + 1)
    hostile = hostile_inputs(r)
    valid = [p for _, p in captured_payloads()] + honest_inputs(r, 120)
    valid += [h for h in hostile if python_side(h).startswith("ok ")]
    mutated = [mutate(r, r.choice(valid)) for _ in range(1200)]
    counts, wrong, c_refused = compare(hostile + mutated, "hostile + mutated (seed %d)" % (SEED + 1))
    assert not wrong, "C accepted with a different tree (or Python failed): %r" % wrong[:5]
    # C may refuse more than Python (fail closed) only at the limits of its arena
    limits = ("refused nesting too deep", "refused too many values", "refused too many string bytes")
    for hex_, c, _ in c_refused:
        assert c in limits, "C refused what Python accepts: %s %s" % (hex_, c)
    assert counts["ok and equal"] > 100 and counts["refused by both"] > 500
