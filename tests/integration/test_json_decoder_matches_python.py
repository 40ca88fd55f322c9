"""Differential test: pyroguard's json decoder (proxy/json.c, via build/value_dump) against the
decoder the Pyro4 4.82 daemon runs (json.loads of the strictly UTF-8-decoded payload,
PROTOCOL.md §5.2), over:

  captured  every c2s json payload in tests/vectors/pyro4/json/ (COMPRESSED ones inflated): must
            be accepted and identical;
  honest    what Pyro4's JsonSerializer writes (json.dumps(ensure_ascii=False) encoded as UTF-8)
            for a few thousand varied values and calls — nested containers, unicode with astral
            characters, control characters, huge and tiny numbers, NaN and infinities, empty
            things — plus json.dumps' other writer options (ensure_ascii=True, which escapes lone
            surrogates and astral pairs; indent; separators): must be accepted and identical;
  hostile   every json form PROTOCOL.md §9 lists (\\u002e / \\u002E dots, escaped key names,
            duplicate keys, any key order and whitespace, batch entries with escapes, overlong
            UTF-8, BOM) and the grammar's edges (numbers, literals, escapes, surrogates,
            whitespace, trailing data), hand-written and generated;
  mutation  byte flips, truncations, insertions, deletions and duplications of valid inputs.

Assertions: no input where the decoder says ok and Python fails or builds a different tree; no
refusal of a captured or honest input; and where the decoder refuses what Python accepts, the
reason is one of the documented deliberate refusals (duplicate key, nesting too deep — json.c's
header comment). Counts are printed (pytest -s).
"""

import collections
import json
import os
import random
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
VECTORS = REPO / "tests" / "vectors" / "pyro4" / "json"
VALUE_DUMP = Path(os.environ.get("VALUE_DUMP_BIN", str(REPO / "build" / "value_dump")))

sys.path.insert(0, str(REPO / "tests" / "tools"))
import pydump  # noqa: E402  (the Python side of every differential test)

SEED = 0x150A  # fixed: the corpus is the same on every run
# What the decoder may refuse although Python accepts it (documented in proxy/json.c).
DELIBERATE = {"duplicate key", "nesting too deep"}

pytestmark = pytest.mark.skipif(
    not VALUE_DUMP.exists(),
    reason="%s not built (cmake --build build, or set VALUE_DUMP_BIN)" % VALUE_DUMP)


# --- the two sides ----------------------------------------------------------------------------


def python_side(data):
    """'ok <dump>' or 'error <type>', exactly as tests/tools/pydump.py prints it."""
    try:
        v = pydump.decode("json", data)
    except Exception as e:  # every failure of the real decoder counts as a refusal
        return "error " + type(e).__name__
    return "ok " + pydump.dump(v)


def c_side(paths):
    def run(path):
        out = subprocess.run([str(VALUE_DUMP), "json", str(path)], capture_output=True,
                             timeout=60)
        assert out.returncode == 0, (path, out.stderr)
        return out.stdout.decode("ascii").rstrip("\n")

    with ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 1))) as pool:
        return list(pool.map(run, paths))


def compare(inputs):
    """Runs both sides on [(kind, name, data)]; returns [(kind, name, data, c, py)]."""
    with tempfile.TemporaryDirectory(prefix="json-diff-") as tmp:
        paths = []
        for i, (_, _, data) in enumerate(inputs):
            p = Path(tmp) / ("%06d.json" % i)
            p.write_bytes(data)
            paths.append(p)
        c_results = c_side(paths)
    return [(k, n, d, c, python_side(d)) for (k, n, d), c in zip(inputs, c_results)]


# --- captured payloads ------------------------------------------------------------------------


def captured_payloads():
    out = []
    for path in sorted(VECTORS.rglob("*_c2s_*.bin")):
        frame = path.read_bytes()
        flags, data_len, ser_id, ann_len = struct.unpack(">HxxIHH", frame[8:20])
        if ser_id != 2:  # PING frames carry serializer id 42 and the bytes "ping"
            continue
        payload = frame[24 + ann_len:24 + ann_len + data_len]
        if flags & 0x02:  # COMPRESSED: the daemon inflates before json.loads (PROTOCOL.md §2.6)
            payload = zlib.decompress(payload)
        out.append(("captured", str(path.relative_to(VECTORS)), payload))
    return out


# --- honest encodings ---------------------------------------------------------------------------

ASCII = [chr(c) for c in range(0x20, 0x7F)]
SPECIAL = ['"', "\\", "/", "\b", "\f", "\n", "\r", "\t", "\x00", "\x01", "\x1f", "\x7f", "\x80",
           "\x9f", "\xa0", "\xe9", "\xff", "\u0100", "\u2028", "\u2029", "\ufeff", "\ufffd",
           "\uffff", "\u4e2d", "\U0001d11e", "\U0001f600", "\U0010ffff", ".", "\uff0e", "\u2024",
           "{", "}", "[", "]", ",", ":"]
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d"]


def rand_str(rnd, max_len=12, surrogates=False):
    pool = rnd.choice([ASCII, SPECIAL, ASCII + SPECIAL])
    if surrogates:
        pool = pool + SURROGATES
    n = rnd.choice([rnd.randint(0, max_len), rnd.randint(0, max_len), rnd.randint(0, 200)])
    return "".join(rnd.choice(pool) for _ in range(n))


def rand_number(rnd):
    return rnd.choice([
        0, -1, 7, rnd.randint(-10**6, 10**6), 2**31, -2**63, 2**64, rnd.randint(-10**40, 10**40),
        10**4299, -(10**4299),  # 4300 digits: Python's default limit, still allowed
        0.0, -0.0, 1.5, -2.25, 1e-300, 5e-324, 1e300, 1.7976931348623157e308, 0.1, 1e16,
        float("inf"), float("-inf"), float("nan"), rnd.uniform(-1e6, 1e6),
        rnd.random() * 10 ** rnd.randint(-30, 30), True, False, None])


def rand_value(rnd, depth=0, surrogates=False, max_depth=6):
    kind = rnd.randrange(10) if depth < max_depth else rnd.randrange(6)
    if kind < 3:
        return rand_str(rnd, surrogates=surrogates)
    if kind < 6:
        return rand_number(rnd)
    n = rnd.choice([0, 1, 2, rnd.randint(0, 8)])
    if kind < 8:
        return [rand_value(rnd, depth + 1, surrogates, max_depth) for _ in range(n)]
    # str keys only: honest dicts whose keys collide in JSON ({1:..,"1":..}) are refused on
    # purpose (duplicate key) and generated as hostile inputs instead.
    return {rand_str(rnd, surrogates=surrogates): rand_value(rnd, depth + 1, surrogates, max_depth)
            for _ in range(n)}


def rand_name(rnd):
    return rnd.choice(["echo", "ping", "__getattr__", "__setattr__", "<batch>", "get_metadata",
                       "sub.echo", "_private", rand_str(rnd, 10)])


def honest_inputs(rnd, count):
    import Pyro4.util
    ser = Pyro4.util.JsonSerializer()
    out = []
    for i in range(count):
        style = i % 6
        if style == 0:  # what a Pyro4 4.82 client sends for a call
            obj = rnd.choice(["thing", "Pyro.Daemon", "Pyro.NameServer", rand_str(rnd, 8)])
            vargs = [rand_value(rnd, 1) for _ in range(rnd.randint(0, 4))]
            kwargs = rnd.choice([None, {}, {rand_str(rnd, 6): rand_value(rnd, 1)}])
            data = ser.dumpsCall(obj, rand_name(rnd), vargs, kwargs)
        elif style == 1:  # a batch call
            calls = [[rand_name(rnd), [rand_value(rnd, 3)], {}] for _ in range(rnd.randint(1, 4))]
            data = ser.dumpsCall("thing", "<batch>", calls, None)
        elif style == 2:
            data = ser.dumps(rand_value(rnd))
        elif style == 3:  # ensure_ascii=True: every non-ASCII character, lone surrogates too, escaped
            data = json.dumps(rand_value(rnd, surrogates=True)).encode("ascii")
        elif style == 4:
            data = json.dumps(rand_value(rnd), ensure_ascii=False,
                              indent=rnd.choice([0, 1, 2, "\t", " \r\n"])).encode("utf-8")
        else:
            data = json.dumps(rand_value(rnd), ensure_ascii=rnd.random() < 0.5,
                              separators=rnd.choice([(",", ":"), (" , ", " : "), (",\n", ":\t")]),
                              sort_keys=rnd.random() < 0.5).encode("utf-8")
        out.append(("honest", "honest-%d" % i, data))
    # Empty and scalar top levels, and a value exactly as deep as the default limit (32).
    for text in ["[]", "{}", '""', "0", "-0", "null", "true", "NaN", "-Infinity", "[" * 32 + "]" * 32,
                 '{"a":' * 31 + "[]" + "}" * 31, '"' + "x" * 100000 + '"',
                 json.dumps(["\u00e9" * 5000, "\U0001f600" * 3000], ensure_ascii=False)]:
        out.append(("honest", "fixed:" + text[:40], text.encode("utf-8")))
    return out


# --- hostile inputs -----------------------------------------------------------------------------

CALL = '{"object": "thing", "method": %s, "params": ["x"], "kwargs": {}}'

HOSTILE_TEXTS = [
    # PROTOCOL.md §9 json: dots and names hidden in escapes, keys, duplicates, order, batches
    CALL % r'"sub\u002eecho"', CALL % r'"sub\u002Eecho"', CALL % r'"\u0073ub.echo"',
    CALL % r'"__g\u0065tattr__"', CALL % r'"sub\/echo"',
    r'{"object": "thing", "m\u0065thod": "sub.echo", "params": [], "kwargs": {}}',
    r'{"object": "thing", "\u006d\u0065\u0074\u0068\u006f\u0064": "x", "params": [], "kwargs": {}}',
    '{"object": "thing", "method": "echo", "params": [], "kwargs": {}, "method": "sub.echo"}',
    r'{"object": "thing", "method": "echo", "params": [], "kwargs": {}, "m\u0065thod": "sub.echo"}',
    '{"method": "echo", "method": "echo"}', '{"a": {"b": 1, "b": 2}}', '[{"x": 1, "x": 1}]',
    '{"\\ud83d\\ude00": 1, "\U0001f600": 2}', '{"": 1, "": 2}',
    '{"kwargs":{},"params":["x"],"method":"echo","object":"thing"}',
    '\r\n\t {\r\n"object"\t:\n"thing" ,"method" : "echo","params":[ ],"kwargs":{ } } \n',
    r'{"object": "thing", "method": "<batch>", "params": [["sub\u002eecho", [1], {}]], "kwargs": null}',
    r'{"object": "Pyro\u002eDaemon", "method": "info", "params": [], "kwargs": {}}',
    '{"object": "thing", "method": "__getattr__", "params": ["sub\\u002evalue"], "kwargs": null}',
    '{"object": "thing", "method": "echo", "params": "abc", "kwargs": {}}',
    # numbers
    "-0", "0.0", "-0.0", "1e5", "1E5", "1e+5", "1E-5", "0e0", "-0e-0", "1.5e308", "1e400", "-1e400",
    "01", "00", "-01", "+1", ".5", "1.", "1.e5", "1e", "1e+", "1E-", "-", "--1", "- 1", "0x10",
    "1_0", "1,", "[1.5.5]", "[1e5e5]", "123abc", "9" * 4300, "9" * 4301, "-" + "9" * 4301,
    "9" * 4301 + ".0", "9" * 4301 + "e0", "1" * 5000 + "." + "1" * 5000,
    # literals
    "true", "false", "null", "NaN", "Infinity", "-Infinity", "True", "FALSE", "nul", "nan",
    "infinity", "-NaN", "-infinity", "+Infinity", "[NaN,Infinity,-Infinity]", "truefalse",
    "[true false]", "None",
    # strings and escapes
    r'"\" \\ \/ \b \f \n \r \t"', r'"\u0000"', r'"\u001f\u007f\u0080"', r'"\uffff"',
    r'"\ud800"', r'"\udc00"', r'"\udbff\udfff"', r'"\ud83d\ude00"', r'"\uD83D\uDE00"',
    r'"\ud800\ud800"', r'"\ud800\ud800\udc00"', r'"\udc00\ud800"', r'"\ud800\u0041"',
    r'"\ud800\n"', r'"\ud800x"', r'"\ud800\\u0041"', r'"\ud800\uZZZZ"', r'"\ud800\u12"',
    r'"\ud800\u"', r'"\ud800\"', r'"\ud800\udc0"', r'"\u12"', r'"\u12g4"', r'"\u 123"', r'"\u"',
    r'"\x2e"', r'"\U0000002e"', r"'a'", r'"\'"', r'"\a"', r'"\0"', r'"\N{FULL STOP}"', '"\\\n"',
    '"a\tb"', '"a\nb"', '"a\x00b"', '"a\x1fb"', '"a\x7fb"', '"abc', '"abc\\', '"abc\\"', '"',
    '"\u2028\u2029\ufeff"', '"\U0010ffff"',
    # whitespace and trailing data
    " 1 ", "\t\n\r 1\r\n\t ", "\f1", "\x0b1", "1\f", "\u00a01", "1\u00a0", "\u30001",
    "{} {}", "1 2", "[]]", "{}}", "{}\x00", "", " ", "\n",
    # containers
    "[]", "{}", "[[]]", "[{}]", "[1,]", "[,1]", "[1 2]", "[1", "[", "]", "[1}", '{"a":1,}', "{,}",
    '{"a" 1}', '{"a":}', '{"a":1', '{"a":1 "b":2}', "{", "}", "{1:2}", "{null:2}", "{'a':2}",
    "{a:2}", "{[]:2}", '{"a":1,"b":[2,{"c":null}]}',
    "[" * 32 + "]" * 32, "[" * 33 + "]" * 33, "[" * 5000, '{"a":' * 33 + "1" + "}" * 33,
]

HOSTILE_BYTES = [
    b"\xef\xbb\xbf{}", b"\xef\xbb\xbf", b"\xef\xbb\xbf" + (CALL % '"echo"').encode(),
    (CALL % '"sub\xc0\xaeecho"').encode("latin-1"),  # overlong '.' (PROTOCOL.md §9)
    b'"\xc0\xae"', b'"\xc1\xbf"', b'"\xe0\x80\xae"', b'"\xe0\x9f\xbf"', b'"\xf0\x80\x80\xae"',
    b'"\xf0\x8f\xbf\xbf"', b'"\xed\xa0\x80"', b'"\xed\xbf\xbf"', b'"\xed\xa0\xbd\xed\xb8\x80"',
    b'"\xf4\x90\x80\x80"', b'"\xf5\x80\x80\x80"', b'"\xff"', b'"\xfe"', b'"\x80"', b'"\xbf"',
    b'"\xe4\xb8"', b'"\xe4\xb8x"', b'"\xf0\x9f\x98"', b'"\xc3"', b'"\xc2\x80\xdf\xbf"',
    b'"\xe0\xa0\x80\xef\xbf\xbf\xee\x80\x80\xed\x9f\xbf"', b'"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"',
    b"[1,\xc2\xa0 2]", b"\xe4\xb8\xad", b"\xff\xfe[]", b"[]\xff", b"\x00", b"[\x00]",
    "\"sub\u2024echo\"".encode(), "\"sub\uff0eecho\"".encode(),
]


def hostile_generated(rnd, count):
    """Pyro-shaped calls with names spelled every way JSON allows, and duplicate-key dicts."""
    out = []
    for i in range(count):
        name = rand_name(rnd)
        spelled = []
        for ch in name:
            r = rnd.random()
            if r < 0.3:
                spelled.append("\\u%04x" % ord(ch) if rnd.random() < 0.5 else "\\u%04X" % ord(ch))
            elif r < 0.35 and ch in "/\"\\":
                spelled.append("\\" + ch)
            elif ch in "\"\\":
                spelled.append("\\" + ch)
            else:
                spelled.append(ch)
        key = "".join("\\u%04x" % ord(c) if rnd.random() < 0.2 else c for c in "method")
        pairs = ['"object": "thing"', '"%s": "%s"' % (key, "".join(spelled)), '"params": []',
                 '"kwargs": {}']
        if rnd.random() < 0.3:
            pairs.append('"method": "%s"' % rand_name(rnd))  # a second method key
        if rnd.random() < 0.2:  # a Python dict whose keys collide in JSON
            pairs.append(json.dumps({1: "a", "1": "b", False: 2, "false": 3})[1:-1])
        rnd.shuffle(pairs)
        ws = rnd.choice(["", " ", "\n", "\t", "\r\n", "  "])
        text = "{" + ws + ("," + ws).join(pairs) + ws + "}"
        out.append(("hostile", "generated-%d" % i, text.encode("utf-8")))
    return out


def mutations(rnd, seeds, count):
    """Byte flips, truncations, insertions, deletions and duplications of valid inputs."""
    interesting = [b'"', b"\\", b"u", b"\\u", b"\\ud800", b"\\udc00", b"0", b"9", b"-", b"+",
                   b".", b"e", b"E", b"{", b"}", b"[", b"]", b",", b":", b" ", b"\t", b"\n", b"\r",
                   b"\f", b"\x00", b"\x1f", b"\x7f", b"\x80", b"\xc0", b"\xc3", b"\xe4\xb8",
                   b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\xf0\x9f\x98\x80", b"\xff", b"true",
                   b"null", b"NaN", b"-Infinity", b'"method"', b'"m\\u0065thod"']
    out = []
    for i in range(count):
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.choice([1, 1, 1, 2, 3])):
            op = rnd.randrange(6)
            pos = rnd.randint(0, len(data))
            if op == 0 and data:  # flip a byte
                pos = min(pos, len(data) - 1)
                data[pos] = rnd.choice([data[pos] ^ (1 << rnd.randrange(8)), rnd.randrange(256)])
            elif op == 1:  # truncate
                del data[pos:]
            elif op == 2:  # insert something interesting
                data[pos:pos] = rnd.choice(interesting)
            elif op == 3 and data:  # delete a run
                del data[pos:pos + rnd.randint(1, 4)]
            elif op == 4 and data:  # duplicate a slice
                end = min(len(data), pos + rnd.randint(1, 16))
                data[pos:pos] = data[pos:end]
            else:  # replace a byte with an interesting sequence
                data[pos:pos + 1] = rnd.choice(interesting)
        out.append(("mutation", "mutation-%d" % i, bytes(data)))
    return out


# --- the test -----------------------------------------------------------------------------------


# About 3,300 value_dump processes: ~30 s on two idle cores, more when the machine is busy.
@pytest.mark.timeout(240)
def test_json_decoder_matches_python():
    rnd = random.Random(SEED)
    captured = captured_payloads()
    assert len(captured) >= 30, "json captures missing from %s" % VECTORS
    honest = honest_inputs(rnd, 1200)
    hostile = [("hostile", "text:" + t[:40], t.encode("utf-8", "surrogatepass"))
               for t in HOSTILE_TEXTS]
    hostile += [("hostile", "bytes:" + repr(b[:40]), b) for b in HOSTILE_BYTES]
    hostile += hostile_generated(rnd, 300)
    seeds = [d for _, _, d in captured + honest + hostile if len(d) < 2000]
    mutated, seen = [], set(d for _, _, d in captured + honest + hostile)
    for row in mutations(rnd, seeds, 1700):  # each distinct input once: value_dump is a process
        if row[2] not in seen:
            seen.add(row[2])
            mutated.append(row)
    inputs = captured + honest + hostile + mutated

    results = compare(inputs)

    counts = collections.Counter()
    c_only = collections.Counter()
    wrong, over_refused = [], []
    for kind, name, data, c, py in results:
        c_ok, py_ok = c.startswith("ok "), py.startswith("ok ")
        if c_ok:
            if c == py:
                counts["both ok and equal"] += 1
            else:
                wrong.append((kind, name, data, c, py))
        elif py_ok:
            counts["refused by C only"] += 1
            reason = c[len("refused "):]
            c_only[reason] += 1
            if kind in ("captured", "honest") or reason not in DELIBERATE:
                over_refused.append((kind, name, data, c, py))
        else:
            counts["refused by both"] += 1

    print("\njson differential over %d inputs (%d captured, %d honest, %d hostile, %d mutations)"
          % (len(results), len(captured), len(honest), len(hostile),
             len(results) - len(captured) - len(honest) - len(hostile)))
    for k in ("both ok and equal", "refused by C only", "refused by both"):
        print("  %-20s %d" % (k, counts[k]))
    for reason, n in c_only.most_common():
        print("    C-only refusal: %-20s %d" % (reason, n))

    def show(rows):
        return "\n".join("%s %s: %r\n    C:  %s\n    py: %s" % (k, n, d[:200], c[:300], p[:300])
                         for k, n, d, c, p in rows[:10])

    assert not wrong, "decoder said ok but Python differs or fails:\n" + show(wrong)
    assert not over_refused, "decoder refused what Python accepts:\n" + show(over_refused)
    assert counts["both ok and equal"] >= 1000
