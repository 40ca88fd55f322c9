"""Differential test: pyroguard's serpent decoder (proxy/serpent.c, via build/value_dump) against
the decoder the Pyro4 4.82 daemon runs (serpent.loads = strict UTF-8 decode + ast.literal_eval,
PROTOCOL.md §5.1), over:

  captured  every serpent payload in tests/vectors/pyro4/serpent/ (COMPRESSED ones inflated):
            must be accepted and identical;
  honest    serpent.dumps() of a few thousand varied values (nested containers, unicode with
            astral characters and lone surrogates, huge and tiny numbers, empty things, Pyro-shaped
            calls, the classes serpent turns into dicts), as Pyro4 writes them and with serpent's
            other writer options: must be accepted and identical whenever Python accepts them;
  hostile   every form PROTOCOL.md §9 lists for serpent and the §10 hazards (all string prefixes
            and quotes, every escape, implicit concatenation across lines and comments,
            backslash-newline, raw vs bytes, all number spellings, sums and signs, every container
            and constant, header variants, whitespace and line-ending tricks), hand-written and
            generated, plus named regressions for decoder bugs found here;
  mutation  byte flips, truncations, insertions, deletions and duplications of valid inputs.

Assertions: no input where the decoder says ok and Python fails or builds a different tree; no
refusal of a captured or honest input that Python accepts. The decoder may refuse anything else
(fail closed); those refusals are counted and their reasons printed (run pytest with -s).

One comparison caveat, from the value model (proxy/value.h): numbers are typed but not kept,
and a dict keeps its pairs in wire order, duplicates included, for value_dump to collapse by
their dump text. So for a dict with keys that are equal or unequal only as numbers ({1: 'a',
2: 'b'}, {1: 'a', True: 'b'}), Python's dump and a correct decoder's can differ. For those
inputs the decoder's tree is compared with the value-model rendering of Python's own parse
(wire-order pairs collapsed the way value_dump collapses them) and counted separately as "equal
in the value model". Sets get no such allowance: a set keeps the first of equal members
(1 == 1.0 == True), and the decoder must produce exactly Python's members.
"""

import ast
import collections
import datetime
import decimal
import os
import random
import struct
import subprocess
import sys
import tempfile
import unicodedata
import uuid
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import serpent

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VECTORS = REPO / "tests" / "vectors" / "pyro4" / "serpent"
VALUE_DUMP = Path(os.environ.get("VALUE_DUMP_BIN", str(REPO / "build" / "value_dump")))

sys.path.insert(0, str(REPO / "tests" / "tools"))
import pydump  # noqa: E402  (the Python side of every differential test)

HEADER = b"# serpent utf-8 python3.2\n"
SEED = 0x5E4E7  # fixed: the corpus is the same on every run
# SERPENT_DIFF_SCALE=10 multiplies the generated inputs (about 4,000 at 1) for a longer local run.
SCALE = max(1, int(os.environ.get("SERPENT_DIFF_SCALE", "1")))

pytestmark = pytest.mark.skipif(
    not VALUE_DUMP.exists(),
    reason="%s not built (cmake --build build, or set VALUE_DUMP_BIN)" % VALUE_DUMP)


# --- named regressions: decoder bugs this test found (input -> what Python builds) --------------
# Each entry stays here after the fix so that it never comes back. Name them for the behaviour.
REGRESSIONS = [
    # fuzz_serpent (UBSan): an empty first piece of an implicit concatenation made the decoder
    # compute NULL + 0 (proxy/serpent.c decode_piece); only a sanitized value_dump shows it.
    ("empty-first-piece-of-a-concatenation", b"'' 'a'"),
    ("empty-triple-quoted-first-piece", b"''''''''a\rb''''"),
    ("empty-bytes-first-piece", b"b'' b'x'"),
]


# --- captured payloads ---------------------------------------------------------------------------


def captured_payloads():
    """(name, payload, direction) for every serpent message in the captures (PROTOCOL.md §2)."""
    out = []
    for path in sorted(VECTORS.rglob("*.bin")):
        frame = path.read_bytes()
        flags, data_len, ser_id, ann_len = struct.unpack(">HxxIHH", frame[8:20])
        if ser_id != 1:  # PING frames carry serializer id 42 and the bytes "ping"
            continue
        payload = frame[24 + ann_len:24 + ann_len + data_len]
        if flags & 0x02:  # COMPRESSED: the daemon inflates before serpent.loads
            payload = zlib.decompress(payload)
        direction = "c2s" if "_c2s_" in path.name else "s2c"
        out.append((str(path.relative_to(VECTORS)), payload, direction))
    return out


# --- honest encodings: serpent.dumps of varied values --------------------------------------------

ASCII_PRINTABLE = [chr(c) for c in range(0x20, 0x7F)]
SPECIAL_CHARS = ["'", '"', "\\", "\n", "\r", "\t", "\x00", "\x07", "\x0b", "\x0c", "\x1b", "\x7f",
                 "\x80", "\x9f", "\xa0", "\xad", "\xe9", "\xff", "\u0100", "\u0300", "\u2028",
                 "\u2029", "\u200b", "\ufeff", "\ufffd", "\uffff", "\ud800", "\udbff", "\udc00",
                 "\udfff", "\U0001d11e", "\U0001f600", "\U000e0001", "\U0010ffff", "\u4e2d",
                 "\u0627", "\uff0e", "\u2024", ".", "#", "{", "}", "(", ")", ",", ":"]


class Thing:
    """An ordinary object: serpent writes it as a dict with '__class__'."""

    def __init__(self, rnd):
        self.name = rand_str(rnd, 6)
        self.size = rnd.randint(-5, 5)


class OrderedSet(set):
    """A set that iterates in insertion order: serpent writes sets in iteration order, which
    for a plain set depends on PYTHONHASHSEED; this keeps the corpus the same on every run."""

    def __init__(self, items=()):
        super().__init__(items)
        self._order = list(dict.fromkeys(items))

    def __iter__(self):
        return iter(self._order)


class OrderedFrozenSet(frozenset):
    def __new__(cls, items=()):
        s = super().__new__(cls, items)
        s._order = list(dict.fromkeys(items))
        return s

    def __iter__(self):
        return iter(self._order)


def rand_str(rnd, max_len=12):
    n = rnd.randint(0, max_len)
    pool = rnd.choice([ASCII_PRINTABLE, SPECIAL_CHARS, ASCII_PRINTABLE + SPECIAL_CHARS])
    return "".join(rnd.choice(pool) for _ in range(n))


def rand_int(rnd):
    kind = rnd.randrange(6)
    if kind == 0:
        return rnd.randint(-10, 10)
    if kind == 1:
        return rnd.choice([2**31 - 1, -2**31, 2**63, -2**63 - 1, 2**64, 10**18])
    if kind == 2:
        return rnd.randint(-10**40, 10**40)
    if kind == 3:
        return rnd.choice([10**4299, -(10**4299), 10**4299 + 12345])  # 4300 digits: still allowed
    return rnd.randint(-10**6, 10**6)


def rand_float(rnd):
    return rnd.choice([0.0, -0.0, 1.5, -2.25, 1e-300, 5e-324, 1e300, 1.7976931348623157e308,
                       float("inf"), float("-inf"), float("nan"), 0.1, 1e16, 123456789.125,
                       rnd.uniform(-1e6, 1e6), rnd.random() * 10 ** rnd.randint(-30, 30)])


def rand_scalar(rnd):
    kind = rnd.randrange(14)
    if kind < 4:
        return rand_str(rnd)
    if kind == 4:
        return rand_int(rnd)
    if kind == 5:
        return rand_float(rnd)
    if kind == 6:
        return complex(rand_float(rnd), rand_float(rnd))
    if kind == 7:
        return rnd.choice([None, True, False, ...])
    if kind == 8:
        return bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 10)))
    if kind == 9:
        return bytearray(rnd.randrange(256) for _ in range(rnd.randint(0, 4)))
    if kind == 10:
        return rnd.choice([datetime.datetime(2020, 1, 2, 3, 4, 5, 6), datetime.date(1999, 12, 31),
                           datetime.time(23, 59), datetime.timedelta(seconds=90.5),
                           uuid.UUID(int=rnd.getrandbits(128)), decimal.Decimal("-1.50"),
                           decimal.Decimal("NaN")])
    if kind == 11:
        return rnd.choice([ValueError("bad", 1), KeyError("k"), Thing(rnd)])
    return rand_str(rnd, 3)


def rand_hashable(rnd, depth):
    kind = rnd.randrange(8)
    if kind == 0 and depth < 3:
        return tuple(rand_hashable(rnd, depth + 1) for _ in range(rnd.randint(0, 3)))
    if kind == 1:
        return rand_int(rnd) if rnd.random() < 0.7 else rnd.randint(0, 3)
    if kind == 2:
        return rnd.choice([rand_float(rnd), True, False, 1 + 2j])
    if kind == 3 and rnd.random() < 0.02:
        return b"by"  # serpent writes bytes as a dict: Python then finds an unhashable key
    return rand_str(rnd, 8)


def rand_value(rnd, depth=0, max_depth=6):
    if depth >= max_depth or rnd.random() < 0.35:
        return rand_scalar(rnd)
    kind = rnd.randrange(6)
    n = rnd.choice([0, 1, 2, 3, rnd.randint(0, 12)])
    if kind == 0:
        return tuple(rand_value(rnd, depth + 1, max_depth) for _ in range(n))
    if kind == 1:
        return [rand_value(rnd, depth + 1, max_depth) for _ in range(n)]
    if kind == 2:
        return {rand_hashable(rnd, 0): rand_value(rnd, depth + 1, max_depth) for _ in range(n)}
    if kind == 3:
        return {rand_str(rnd, 8): rand_value(rnd, depth + 1, max_depth) for _ in range(n)}
    members = [rand_hashable(rnd, 0) for _ in range(n)]
    return OrderedSet(members) if kind == 4 else OrderedFrozenSet(members)


def rand_call(rnd):
    """What a Pyro4 4.82 proxy hands to serpent.dumps (PROTOCOL.md §5 table)."""
    obj = rnd.choice(["thing", "Pyro.Daemon", "Pyro.NameServer", rand_str(rnd, 10)])
    method = rnd.choice(["echo", "<batch>", "__getattr__", "__setattr__", "get_next_stream_item",
                         rand_str(rnd, 10)])
    vargs = tuple(rand_value(rnd, 1, 5) for _ in range(rnd.randint(0, 4)))
    if rnd.random() < 0.2:
        vargs = list(vargs)
    kwargs = rnd.choice([{}, None, {rand_str(rnd, 6): rand_value(rnd, 1, 4)
                                    for _ in range(rnd.randint(0, 3))}])
    return (obj, method, vargs, kwargs)


def honest_inputs(rnd):
    values = [(), [], {}, set(), frozenset(), "", b"", 0, -0.0, None, True, False, ...,
              ("thing", "echo", ("hello",), {}),
              ("thing", "<batch>", [("echo", (1,), {}), ("echo", ("two",), {})], None),
              ("thing", "__getattr__", ("value",), None),
              ("thing", "__setattr__", ("value", 7), None),
              "".join(SPECIAL_CHARS), tuple(SPECIAL_CHARS), {c: c for c in SPECIAL_CHARS},
              "\ud83d\ude00", "\udc00\ud800", [10**4299], [2**10000],
              [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]], ({},) * 20, [{}] * 50]
    values += [rand_call(rnd) for _ in range(650 * SCALE)]
    values += [rand_value(rnd, 0, 8) for _ in range(350 * SCALE)]
    out = []
    for i, v in enumerate(values):
        # Pyro4 4.82 writes serpent.dumps(obj, module_in_classname=True); serpent's other
        # writer options (indent, Pyro5's bytes_repr) are honest serpent output too.
        opts = {"module_in_classname": True}
        if i % 5 == 3:
            opts["indent"] = True
        if i % 7 == 4:
            opts["bytes_repr"] = True
        try:
            out.append(("honest-%d" % i, serpent.dumps(v, **opts)))
        except (TypeError, ValueError):  # unhashable key serpent will not write, or similar
            continue
    return out


# --- hostile forms --------------------------------------------------------------------------------

H = HEADER
HOSTILE_FIXED = [
    # header comment (PROTOCOL.md §5.1): absent, other versions, more comments, CRLF, indentation
    ("no-header", b"('thing','echo',('x',),{})"),
    ("header-py26", b"# serpent utf-8 python2.6\n('thing','echo',(),{})"),
    ("header-bare-hash", b"#\n('thing','echo',(),{})"),
    ("header-crlf", b"# serpent utf-8 python3.2\r\n('thing','echo',(),{})"),
    ("header-lone-cr", b"# serpent utf-8 python3.2\r('thing','echo',(),{})"),
    ("header-cr-then-name", b"# a\rb\n1"),
    ("header-twice", H + H + b"1"),
    ("header-then-indented-value", H + b"  ('thing','echo',(),{})"),
    ("header-then-tab-indented-value", H + b"\t('thing','echo',(),{})"),
    ("header-then-indented-comment", H + b"    # more\n1"),
    ("header-then-blank-indented", H + b"   \n1"),
    ("header-then-tab-blank", H + b"\t\n1"),
    ("header-then-ff-line", H + b"\x0c\n1"),
    ("header-then-space-ff", H + b" \x0c1"),
    ("header-then-ff-space", H + b"\x0c 1"),
    ("header-then-continuation", H + b"\\\n1"),
    ("header-then-continuation-indent", H + b"\\\n  1"),
    ("indented-header", b"   " + H + b"1"),
    ("tab-indented-header", b"\t" + H + b"1"),
    ("coding-cookie-latin1", b"# -*- coding: latin-1 -*-\n'\xc3\xa9'"),
    ("coding-cookie-unknown", b"# coding: foobar\n1"),
    ("comment-unicode-line-sep", "# \u2028\n1".encode()),
    ("bom", b"\xef\xbb\xbf" + H + b"1"),
    ("bom-after-header", H + b"\xef\xbb\xbf1"),
    # whitespace and line endings
    ("leading-spaces", b"   1"), ("leading-tab", b"\t1"), ("leading-ff", b"\x0c1"),
    ("leading-ff-space", b"\x0c 1"), ("leading-newline-indent", b"\n 1"),
    ("leading-blank-lines", b"\n\n1"), ("leading-space-newline", b"  \n1"),
    ("trailing-newline", b"1\n"), ("trailing-crlf", b"1\r\n"), ("trailing-cr", b"1\r"),
    ("trailing-cr-cr-lf", b"1\r\r\n"), ("trailing-ff", b"1 \x0c"), ("trailing-ff-line", b"1\n\x0c"),
    ("trailing-space-ff-line", b"1\n \x0c"), ("trailing-indent", b"1\n    "),
    ("trailing-tab", b"1\n\t"), ("trailing-blank-indented-line", b"1\n \n"),
    ("trailing-comment", b"1 # c"), ("trailing-comment-line", b"1\n#c"),
    ("trailing-indented-comment-line", b"1\n  #c"),
    ("trailing-continuation", b"1 \\"), ("trailing-continuation-newline", b"1 \\\n"),
    ("trailing-continuation-blank", b"1 \\\n\n"), ("continuation-space", b"1 \\ \n"),
    ("continuation-first", b"\\\n1"), ("continuation-indented-first", b"  \\\n1"),
    ("trailing-indented-continuation", b"1\n  \\\n"), ("trailing-line-continuation", b"1\n\\\n"),
    ("vt-outside-string", b"\x0b1"), ("vt-after-value", b"1\x0b"),
    ("nbsp-outside-string", "1\u00a0".encode()), ("ff-in-tuple", b"(1\x0c,2)"),
    ("tabs-in-tuple", b"\t\t(1,\n\t2)"), ("crlf-in-tuple", b"(1,\r\n2)"),
    ("lone-cr-in-tuple", b"(1,\r2)"), ("nul-in-comment", b"# \x00\n1"),
    ("nul-in-string", b"'a\x00b'"), ("nul-after-value", b"1\x00"), ("nul-alone", b"\x00"),
    ("empty", b""), ("blank", b"  "), ("newline-only", b"\n"), ("comment-only", b"# c"),
    ("header-only", H),
    # invalid UTF-8 (strict decode before parsing)
    ("utf8-overlong-dot", b"'sub\xc0\xaeecho'"), ("utf8-surrogate", b"'\xed\xa0\x80'"),
    ("utf8-above-max", b"'\xf4\x90\x80\x80'"), ("utf8-truncated", b"'\xe2\x82'"),
    ("utf8-lone-continuation", b"'\x80'"), ("utf8-ff", b"'\xff'"), ("utf8-in-comment", b"#\xff\n1"),
    ("utf8-overlong-nul", b"'\xc0\x80'"), ("utf8-5-byte", b"'\xf8\x88\x80\x80\x80'"),
    # string prefixes and quotes (§9)
    ("prefix-u", b"u'a'"), ("prefix-U", b"U'a'"), ("prefix-r", b"r'a\\x2e'"),
    ("prefix-R", b"R'a\\x2e'"), ("prefix-b", b"b'a'"), ("prefix-B", b"B'a'"),
    ("prefix-br", b"br'a\\x2e'"), ("prefix-rb", b"rb'\\x'"), ("prefix-bR", b"bR'a'"),
    ("prefix-Rb", b"Rb'a'"), ("prefix-RB", b"RB'a'"), ("prefix-BR", b"BR'a'"),
    ("prefix-f", b"f'a'"), ("prefix-F", b"F'a'"), ("prefix-rf", b"rf'a'"), ("prefix-fr", b"fr'a'"),
    ("prefix-ur", b"ur'a'"), ("prefix-ub", b"ub'a'"), ("prefix-bu", b"bu'a'"),
    ("prefix-space", b"r 'a'"), ("prefix-uu", b"uu'a'"), ("prefix-x", b"x'a'"),
    ("concat-f", b"'a' f'b'"), ("double-quotes", b'"a\'b"'), ("triple-single", b"'''a'b'''"),
    ("triple-double", b'"""a"b"""'), ("triple-newline", b"'''a\nb'''"),
    ("triple-crlf", b"'''a\r\nb'''"), ("triple-cr", b"'''a\rb'''"),
    ("triple-cr-cr-lf", b"'''a\r\r\nb'''"), ("triple-raw-crlf", b"r'''a\r\nb'''"),
    ("empty-single", b"''"), ("empty-double", b'""'), ("empty-triple", b"''''''"),
    ("empty-triple-double", b'""""""'), ("four-quotes", b"''''"), ("seven-quotes", b"'''''''"),
    ("triple-then-quote", b'"""a""""'), ("triple-escaped-quote", b'"""a\\""""'),
    ("triple-unterminated", b"'''abc''"), ("newline-in-single", b"'a\nb'"),
    ("cr-in-single", b"'a\rb'"), ("unterminated", b"'abc"), ("unterminated-escape", b"'abc\\'"),
    ("raw-backslash-end", b"r'\\'"), ("raw-escaped-quote", b"r'\\''"),
    ("raw-two-backslashes", b"r'\\\\'"),
    ("raw-N", b"r'\\N{FULL STOP}'"), ("raw-backslash-newline", b"r'a\\\nb'"),
    ("raw-backslash-crlf", b"r'a\\\r\nb'"), ("u2028-in-string", "'\u2028'".encode()),
    ("controls-in-string", b"'\x01\x0b\x1b\x7f\x0c\t'"), ("raw-tab-in-string", b"'a\tb'"),
    # escapes (§9): the dot spelled every way
    ("esc-x2e", b"'sub\\x2eecho'"), ("esc-x2E", b"'sub\\x2Eecho'"),
    ("esc-octal-56", b"'sub\\56echo'"),
    ("esc-octal-056", b"'sub\\056echo'"), ("esc-u002e", b"'sub\\u002eecho'"),
    ("esc-U0000002e", b"'sub\\U0000002eecho'"), ("esc-N-full-stop", b"'sub\\N{FULL STOP}echo'"),
    ("esc-N-lower", b"'sub\\N{full stop}echo'"), ("esc-N-period", b"'sub\\N{PERIOD}echo'"),
    ("esc-N-alias", b"'\\N{LATIN SMALL LETTER A}'"), ("esc-N-empty", b"'\\N{}'"),
    ("esc-N-bare", b"'\\N'"), ("esc-N-unclosed", b"'\\N{FULL STOP'"),
    ("esc-N-named-sequence", b"'\\N{LATIN CAPITAL LETTER A WITH MACRON AND GRAVE}'"),
    ("esc-N-cjk", b"'\\N{CJK UNIFIED IDEOGRAPH-4E2D}'"),
    ("esc-N-hangul", b"'\\N{HANGUL SYLLABLE GA}'"),
    ("esc-N-control-alias", b"'\\N{NULL}'"), ("esc-N-in-bytes", b"b'\\N{DOT}'"),
    ("esc-u-in-bytes", b"b'\\u002e'"), ("esc-U-in-bytes", b"b'\\U0000002e'"),
    ("esc-x-in-bytes", b"b'\\x2e\\xff'"), ("esc-octal-in-bytes", b"b'\\56\\377'"),
    ("esc-octal-400-bytes", b"b'\\400'"), ("esc-octal-777-bytes", b"b'\\777'"),
    ("esc-octal-400-str", b"'\\400'"), ("esc-octal-777-str", b"'\\777'"),
    ("esc-octal-1234", b"'\\1234'"), ("esc-octal-0", b"'\\0'"), ("esc-octal-00", b"'\\00x'"),
    ("esc-8", b"'\\8'"), ("esc-9", b"'\\9'"), ("esc-unknown-q", b"'\\q'"),
    ("esc-unknown-bytes", b"b'\\q'"), ("esc-simple", b"'\\a\\b\\f\\n\\r\\t\\v\\\\\\'\\\"'"),
    ("esc-simple-bytes", b"b'\\a\\b\\f\\n\\r\\t\\v\\\\\\'\\\"'"),
    ("esc-x-truncated", b"'\\x4'"), ("esc-x-nonhex", b"'\\xg0'"), ("esc-u-truncated", b"'\\u12'"),
    ("esc-U-truncated", b"'\\U0001F60'"), ("esc-U-too-big", b"'\\U00110000'"),
    ("esc-U-max", b"'\\U0010FFFF'"), ("esc-U-ffffffff", b"'\\UFFFFFFFF'"),
    ("esc-lone-surrogate", b"'\\ud800'"), ("esc-surrogate-pair", b"'\\ud83d\\ude00'"),
    ("esc-U-surrogate", b"'\\U0000DC00'"), ("esc-x-nul", b"'\\x00'"), ("esc-backslash-end", b"'\\"),
    ("esc-backslash-newline", b"'sub\\\n.echo'"), ("esc-backslash-crlf", b"'sub\\\r\n.echo'"),
    ("esc-backslash-cr", b"'sub\\\r.echo'"), ("esc-backslash-newline-triple", b"'''a\\\nb'''"),
    ("esc-backslash-newline-bytes", b"b'a\\\nb'"), ("esc-uppercase-X", b"'\\X41'"),
    ("esc-u-uppercase-hex", b"'\\u00E9\\u00e9'"),
    # implicit concatenation (§9)
    ("concat", b"'sub' '.echo'"), ("concat-no-space", b"'sub''.echo'"),
    ("concat-lines-comment", b"('sub' # x\n '.echo')"), ("concat-continuation", b"'a' \\\n 'b'"),
    ("concat-newline-top", b"'a'\n'b'"), ("concat-newline-indent-top", b"'a'\n 'b'"),
    ("concat-u-r", b"u'a' r'\\x'"), ("concat-triple", b"'a' '''b''' \"c\""),
    ("concat-bytes", b"b'a' B'b' rb'\\c'"), ("concat-mix-bytes-str", b"'a' b'b'"),
    ("concat-mix-str-bytes", b"b'a' u'b'"),
    ("concat-many", b"(" + b" ".join([b"'x'"] * 300) + b")"),
    ("concat-crlf-in-parens", b"('a'\r\n'b')"), ("concat-cr-in-parens", b"('a'\r'b')"),
    ("concat-ff-in-parens", b"('a'\x0c'b')"), ("concat-call-tuple",
                                                 b"('thing', 'sub' '.' 'echo', (), {})"),
    # numbers
    ("int-leading-zero", b"01"), ("int-zero-underscore", b"0_0"), ("int-zeros", b"00"),
    ("float-leading-zero", b"09.5"), ("imag-leading-zero", b"09j"), ("exp-leading-zero", b"09e1"),
    ("float-zero-underscore", b"0_9.0"), ("int-double-underscore", b"1__0"),
    ("int-trailing-underscore", b"1_"), ("hex-underscore", b"0x_1"), ("exp-underscore", b"1e1_0"),
    ("underscore-before-exp", b"1_e10"), ("underscore-after-dot", b"1._5"), ("dot-exp", b"1.e5"),
    ("dot-first", b".5"), ("float-trailing-underscore", b"1.5_"), ("hex-imag", b"0x1j"),
    ("int-letters", b"1abc"), ("octal-8", b"0o8"), ("binary-2", b"0b12"), ("hex-empty", b"0x"),
    ("hex-upper", b"0XfF"), ("octal-upper", b"0O17"), ("binary-upper", b"0B101"),
    ("imag-upper", b"1J"), ("exp-upper", b"1E5"), ("exp-sign", b"1e-5"), ("exp-plus", b"1e+5"),
    ("exp-empty", b"1e"), ("exp-sign-only", b"1e+"), ("float-inf-literal", b"1e30000"),
    ("neg-inf-literal", b"-1e30000"), ("imag-inf", b"1e30000j"), ("neg-zero", b"-0"),
    ("neg-zero-float", b"-0.0"), ("plus", b"+1"), ("plus-space", b"+ 1"), ("minus-space", b"- 1"),
    ("minus-newline-parens", b"(-\n1)"), ("double-minus", b"--1"), ("minus-plus", b"-+1"),
    ("minus-paren", b"-(1)"), ("plus-plus-paren", b"+(+1)"), ("minus-true", b"-True"),
    ("minus-none", b"-None"), ("minus-string", b"-'a'"), ("invert", b"~1"), ("not", b"not 1"),
    ("sum-complex", b"1+2j"), ("diff-complex", b"-1-2j"), ("sum-neg-imag", b"1+-2j"),
    ("sum-nested", b"(1+2j)+3j"), ("sum-two-imag", b"2j+3j"), ("sum-imag-first", b"1j+1"),
    ("sum-true", b"True+1j"), ("neg-sum", b"-(1+2j)"), ("paren-neg-sum", b"(-1)+2j"),
    ("sum-ints", b"1+2"), ("sum-floats", b"1.5+2.5"), ("product", b"2*3"), ("power", b"2**3"),
    ("sum-float-complex", b"-1.5e3+0j"), ("sum-hex-imag", b"0x10+1j"), ("sum-spaces", b"1 + 2j"),
    ("sum-continuation", b"1 \\\n+ 2j"), ("sum-in-tuple", b"(1+2j, -3-4.5j)"),
    ("serpent-complex", b"(1.0+2.0j)"), ("serpent-complex-inf", b"(-1.0+1e30000j)"),
    ("serpent-complex-neg-zero", b"(1.0+-0.0j)"), ("serpent-neg-inf-imag", b"(1.0-1e30000j)"),
    ("big-int-4300", b"1" * 4300), ("big-int-4301", b"1" * 4301),
    ("big-int-4301-underscores", b"1_" * 4300 + b"1"), ("big-neg-int-4301", b"-" + b"9" * 4301),
    ("big-hex", b"0x" + b"f" * 5000), ("big-octal", b"0o" + b"7" * 5000),
    ("big-binary", b"0b" + b"1" * 20000), ("big-float-digits", b"1" * 5000 + b".0"),
    ("big-imag-digits", b"1" * 5000 + b"j"), ("big-int-in-tuple", b"(" + b"2" * 4301 + b",)"),
    ("zero-4301", b"0" * 4301), ("keyword-after-number", b"1if 1 else 2"),
    ("number-then-name", b"0x1for"), ("number-dot-attr", b"1 .real"),
    ("float-dot-attr", b"1..real"),
    # constants and names
    ("true", b"True"), ("false", b"False"), ("none", b"None"), ("ellipsis", b"..."),
    ("ellipsis-spaced", b". . ."), ("ellipsis-name", b"Ellipsis"), ("lower-none", b"none"),
    ("name", b"foo"), ("attribute", b"True.real"), ("call", b"foo()"),
    ("fullwidth-true", "\uff34\uff52\uff55\uff45".encode()),
    # containers
    ("empty-tuple", b"()"), ("paren-empty-tuple", b"(())"), ("paren-int", b"(1)"),
    ("one-tuple", b"(1,)"), ("bare-tuple", b"1, 2"), ("bare-one-tuple", b"1,"),
    ("bare-tuple-trailing", b"1,2,"), ("bare-call", b"'thing','echo',(),{}"),
    ("bare-tuple-newline", b"1,\n2"), ("bare-tuple-continuation", b"1, \\\n2"),
    ("comma-only-tuple", b"(,)"), ("comma-only-list", b"[,]"), ("comma-only-dict", b"{,}"),
    ("double-comma", b"(1,,2)"), ("dict-trailing-comma", b"{1:2,}"),
    ("dict-missing-value", b"{1:}"),
    ("dict-missing-key", b"{:1}"), ("dict-mixed-set", b"{1:2,3}"), ("set-mixed-dict", b"{3,1:2}"),
    ("unclosed", b"(1,"), ("mismatched", b"(1]"), ("extra-close", b"(1))"),
    ("dict-duplicate-keys", b"{'a':1,'a':[2],'b':3,'a':'x'}"), ("set-literal", b"{1,'a',(2,)}"),
    ("set-duplicate-members", b"{'a','a','b'}"), ("set-number-collide", b"{1,True,1.0}"),
    ("dict-number-collide", b"{1:'a',True:'b',1.0:'c'}"), ("dict-int-keys", b"{1:'a',2:'b'}"),
    ("set-call", b"set()"), ("set-call-spaces", b"set ( )"), ("set-call-paren", b"(set)()"),
    ("set-call-newline", b"set(\n)"), ("set-call-arg", b"set([])"), ("set-call-kw", b"set(x=1)"),
    ("set-call-star", b"set(*())"), ("frozenset-call", b"frozenset()"), ("dict-call", b"dict()"),
    ("set-call-fullwidth", "\uff53\uff45\uff54()".encode()),
    ("set-call-long-s", "\u017fet()".encode()),
    ("set-call-bold", "\U0001d42c\U0001d41e\U0001d42d()".encode()),
    ("set-of-list", b"{1,[2]}"), ("set-of-tuple-list", b"{(1,[2])}"), ("dict-key-list", b"{[1]:2}"),
    ("dict-value-list", b"{1:[2]}"), ("set-of-set-call", b"{set()}"),
    ("dict-key-set-call", b"{set():1}"),
    ("set-of-deep-set", b"{(1,(2,set()))}"), ("dict-key-dict", b"{{}:1}"),
    ("set-of-dict", b"{{1:2}}"),
    ("set-of-set", b"{{1}}"), ("dict-key-tuple-dict", b"{(1,{}):2}"),
    ("dict-key-tuple", b"{(1,'a'):2}"),
    ("dict-splat", b"{**{}}"), ("tuple-star", b"(*a,)"), ("list-star", b"[*()]"),
    ("list-comp", b"[x for x in ()]"), ("lambda", b"lambda: 1"), ("walrus", b"(x:=1)"),
    ("subscript", b"[1][0]"), ("slice", b"'ab'[0:1]"), ("await", b"await 1"), ("yield", b"(yield)"),
    ("generator", b"(x for x in ())"), ("semicolon", b"1;"), ("two-values", b"1 2"),
    ("two-lines", b"1\n2"), ("value-then-name", b"(1,) x"), ("keyword", b"if"),
    ("deep-parens-150", b"(" * 150 + b"1" + b")" * 150),
    ("deep-parens-250", b"(" * 250 + b"1" + b")" * 250),
    ("deep-list-100", b"[" * 100 + b"]" * 100), ("deep-list-33", b"[" * 33 + b"]" * 33),
    ("deep-list-32", b"[" * 32 + b"]" * 32), ("deep-list-31", b"[" * 31 + b"]" * 31),
    ("deep-tuple-33", b"(" * 33 + b")" * 33), ("deep-unary", b"-" * 300 + b"1"),
    ("open-bomb", b"[" * 100000), ("wide-list", b"[" + b"1," * 50000 + b"]"),
    ("wide-list-too-many", b"[" + b"0," * 100001 + b"]"),
    ("wide-empty-tuples", b"[" + b"()," * 60000 + b"]"),
    ("long-string", b"'" + b"a" * 100000 + b"'"),
    ("long-escaped-string", b"'" + b"\\x41" * 50000 + b"'"),
    # int + complex converts the int to a float: OverflowError past the largest double
    ("sum-int-too-large", b"1" * 400 + b"+1j"),
    ("sum-neg-int-too-large", b"-" + b"9" * 309 + b"-1j"),
    ("sum-int-rounds-to-overflow", hex(2 ** 1024 - 2 ** 970).encode() + b"+1j"),
    ("sum-int-rounds-to-max", hex(2 ** 1024 - 2 ** 970 - 1).encode() + b"+1j"),
    ("sum-octal-2-1023", b"0o1" + b"0" * 341 + b"+1j"),
    ("sum-binary-2-1024", b"0b1" + b"0" * 1024 + b"+1j"),
    ("sum-float-overflow-is-inf", b"1" + b"0" * 400 + b".0+1j"), ("sum-zeros", b"0" * 500 + b"+1j"),
    # set members that are equal across types: the first one stays
    ("set-int-float-bool", b"{1, 1.0, True, 1+0j}"), ("set-float-first", b"{1.0, 1}"),
    ("set-bool-first", b"{True, 1}"), ("set-zeros", b"{0, -0.0, 0j, False, 0.0, -0}"),
    ("set-tuples-equal", b"{(1, 'a'), (1.0, 'a'), (True, u'a')}"),
    ("set-str-escapes", b"{'a', '\\x61', 'a' ''}"), ("set-str-bytes", b"{'a', b'a'}"),
    ("set-1e23", b"{100000000000000000000000+0j, 100000000000000000000000}"),
    ("set-2-53", b"{9007199254740993, 9007199254740992.0}"),
    ("set-2-53-float-rounds", b"{9007199254740993.0, 9007199254740992}"),
    ("set-inf", b"{1e400, 1e401, 2e308}"), ("set-bases", b"{0x10, 16.0, 0o20, 0b10000, 1.6e1}"),
    ("set-underflow", b"{1e-400, 0}"), ("set-none-ellipsis", b"{None, None, ..., ...}"),
    ("set-imag", b"{1j, 0+1j, -0.0+1j, 1.0j}"),
    ("set-big-hex-decimal", b"{" + hex(3 ** 700).encode() + b", " + str(3 ** 700).encode() + b"}"),
    ("set-big-near", b"{" + hex(3 ** 700).encode() + b", " + str(3 ** 700 + 1).encode() + b"}"),
    ("set-max-double", b"{1.7976931348623157e308, " + str(2 ** 1024 - 2 ** 971).encode() + b"}"),
    ("dict-key-dupes-across-types", b"{1: 'a', 1.0: 'b', True: 'c'}"),
    # set() spelled in ways literal_eval still sees as Call(Name('set')), and near misses
    ("set-call-double-paren", b"((set))()"), ("set-call-comment", b"set(# c\n)"),
    ("set-call-continuation", b"set\\\n()"), ("set-call-tuple", b"(set,)()"),
    ("set-call-call", b"set()()"), ("set-call-in-set", b"{set()}"), ("set-call-neg", b"-set()"),
    ("set-name", b"set"), ("set-call-as-value", b"{'k': set()}"),
]


def encode_char(rnd, ch, quote, in_bytes):
    """One way to spell |ch| inside a non-raw literal (PROTOCOL.md §9: every escape)."""
    cp = ord(ch)
    ways = []
    printable_raw = ch not in ("\\", "\n", "\r", quote[0]) and not (in_bytes and cp > 0x7F) \
        and not 0xD800 <= cp <= 0xDFFF and cp != 0
    if printable_raw:
        ways.append(ch)
    if cp < 0x100:
        ways.append("\\x%02x" % cp)
        ways.append("\\x%02X" % cp)
        ways.append("\\%o" % cp)
        ways.append("\\%03o" % cp)
    if not in_bytes:
        if cp < 0x10000:
            ways.append("\\u%04x" % cp)
            ways.append("\\u%04X" % cp)
        ways.append("\\U%08x" % cp)
        try:
            name = unicodedata.name(ch)
            if rnd.random() < 0.05:  # rare: the decoder may refuse every \N{...}
                ways.append("\\N{%s}" % rnd.choice([name, name.lower(), name.title()]))
        except ValueError:
            pass
    simple = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", "'": "\\'", '"': '\\"',
              "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v"}
    if ch in simple:
        ways.append(simple[ch])
    if cp > 0x7F and in_bytes:
        return None
    return rnd.choice(ways) if ways else None


def literal_forms(rnd, text, in_bytes=False):
    """A string literal expression for |text| — escapes, quotes, prefixes, implicit concatenation
    and backslash-newlines chosen at random — or None when |text| cannot be spelled that way.
    A raw prefix (10%) makes Python read the escapes literally: the point is what Python reads."""
    quote = rnd.choice(["'", '"', "'''", '"""'])
    prefix = rnd.choice(["b", "B"]) if in_bytes else rnd.choice(["", "", "", "u", "U"])
    parts = []
    for ch in text:
        enc = encode_char(rnd, ch, quote, in_bytes)
        if enc is None:
            return None
        # an octal escape reads up to 3 digits: never let it swallow a following digit
        if parts and parts[-1][:1] == "\\" and parts[-1][1:2].isdigit() and enc[:1].isdigit():
            enc = "\\x%02x" % ord(ch)
        parts.append(enc)
        if rnd.random() < 0.05:
            parts.append(rnd.choice(["\\\n", "\\\r\n"]))  # removed inside non-raw strings
    pieces, cur = [], []
    for p in parts:
        cur.append(p)
        if rnd.random() < 0.15:
            pieces.append("".join(cur))
            cur = []
    pieces.append("".join(cur))
    out = []
    for body in pieces:
        p = prefix
        if rnd.random() < 0.1:
            raw = rnd.choice(["r", "R"])
            p = raw + p if rnd.random() < 0.5 else p + raw
            if not in_bytes:
                p = raw
        out.append(p + quote + body + quote)
    seps = [" ", "", "\t", " \\\n ", "\n", "  # c\n", "\r\n", "\x0c", "\r"]
    return rnd.choice(seps).join(out) if rnd.random() < 0.3 else " ".join(out)


NAMES = ["sub.echo", "echo", "__getattr__", "__setattr__", "_private", "Pyro.Daemon", "<batch>",
         "a'b\"c", "tab\there", "new\nline", "back\\slash", "caf\xe9", "\u4e2d\u6587",
         "\U0001f600x",
         "\ud800lone", "dot\uff0eecho", "nul\x00nul", "", "#notcomment", "\u2028", "x" * 40]


def hostile_call(rnd):
    """('thing', <method spelled some way>, vargs, kwargs) with a random layout around it."""
    in_bytes = rnd.random() < 0.08
    name = rnd.choice(NAMES)
    lit = literal_forms(rnd, name if not in_bytes else name.encode("ascii", "replace").decode(),
                        in_bytes)
    if lit is None:
        return None
    obj = literal_forms(rnd, rnd.choice(["thing", "Pyro.Daemon"])) if rnd.random() < 0.3 \
        else "'thing'"
    vargs = rnd.choice(["()", "('x',)", "[1,2]", "(%s,)" % (literal_forms(rnd, "value") or "''"),
                        "('value', 7)"])
    kwargs = rnd.choice(["{}", "None", "{'k':1}", "{%s:1}" % (literal_forms(rnd, "k") or "''")])
    items = [obj, lit, vargs, kwargs]
    sep = rnd.choice([",", ", ", ",\n", " ,\t", ",  # c\n", ",\\\n", ",\r\n", ",\x0c"])
    shape = rnd.randrange(6)
    if shape == 0:
        body = "(" + sep.join(items) + ")"
    elif shape == 1:
        body = "[" + sep.join(items) + "]"
    elif shape == 2:
        body = ", ".join(items)  # bare top-level tuple
    elif shape == 3:
        body = "(" + sep.join(items) + ",)"
    elif shape == 4:
        body = "{%s: 1, %s: 2, %s: 3, %s: 4}" % tuple(items[:2] + ["'v'", "'k'"])
    else:
        body = "(\n  " + (sep + "\n  ").join(items) + "\n)"
    head = rnd.choice([HEADER.decode(), "", "# serpent utf-8 python2.6\n", "#\n# more\n",
                       "  ", "\t", HEADER.decode() + "\n", HEADER.decode().replace("\n", "\r\n"),
                       "\x0c", "# x\n  ", "\\\n"])
    tail = rnd.choice(["", "\n", " ", "  # t", "\n\n", "\r\n", "\n ", "\x0c"])
    return (head + body + tail).encode("utf-8", "surrogatepass")


def rand_number_literal(rnd):
    def digits(pool, n):
        s = "".join(rnd.choice(pool) for _ in range(n))
        if rnd.random() < 0.2 and len(s) > 1:
            i = rnd.randrange(0, len(s) + 1)
            s = s[:i] + rnd.choice(["_", "__"]) + s[i:]
        return s

    kind = rnd.randrange(8)
    dec = "0123456789"
    if kind == 0:
        body = digits(dec, rnd.randint(1, 6))
    elif kind == 1:
        body = rnd.choice(["0x", "0X"]) + digits("0123456789abcdefABCDEFg", rnd.randint(0, 5))
    elif kind == 2:
        body = rnd.choice(["0o", "0O"]) + digits("012345678", rnd.randint(0, 5))
    elif kind == 3:
        body = rnd.choice(["0b", "0B"]) + digits("012", rnd.randint(0, 8))
    elif kind == 4:
        body = digits(dec, rnd.randint(0, 4)) + "." + digits(dec, rnd.randint(0, 4))
    elif kind == 5:
        body = digits(dec, rnd.randint(1, 4)) + rnd.choice(["e", "E"]) \
            + rnd.choice(["", "+", "-"]) + digits(dec, rnd.randint(0, 3))
    elif kind == 6:
        body = digits(dec, rnd.randint(0, 3)) + "." + digits(dec, rnd.randint(0, 3)) + "e" \
            + digits(dec, rnd.randint(1, 3))
    else:
        body = rnd.choice(["0", "00", "0_0", "1_000", "007", "0.0", "1e1_0", "1_e1", ".5", "5.",
                           "1.__class__", "0x_f", "0_x1", "1.5j", "1e5j", "0j", "0xj"])
    if rnd.random() < 0.3:
        body += rnd.choice(["j", "J", "jj", "l", "L", "_", "a"])
    sign = rnd.choice(["", "", "-", "+", "- ", "-(", "--"])
    if sign.endswith("("):
        body += ")"
    lit = sign + body
    if rnd.random() < 0.3:
        lit += rnd.choice([" + ", "-", "+", " - "]) + rand_number_literal(rnd)
    return lit


def layout_variant(rnd, data):
    """Re-lay a valid serpent text out: random whitespace, newlines, comments and continuations
    between tokens (valid inside brackets, mostly not at top level)."""
    text = data.decode("utf-8")
    out = []
    i = 0
    in_str = None
    while i < len(text):
        ch = text[i]
        if in_str:
            out.append(ch)
            if ch == "\\":
                out.append(text[i + 1])
                i += 2
                continue
            if text.startswith(in_str, i):
                out.append(text[i + 1:i + len(in_str)])
                i += len(in_str)
                in_str = None
                continue
            i += 1
            continue
        if ch in "'\"":
            in_str = text[i:i + 3] if text[i:i + 3] in ("'''", '"""') else ch
            out.append(in_str)
            i += len(in_str)
            continue
        out.append(ch)
        if ch in "([{,:" and rnd.random() < 0.3:
            out.append(rnd.choice([" ", "\n", "\t", "  # c\n", "\\\n", "\r\n", "\r", "\x0c",
                                   "\n\n  ", " \\\n", "\n# c\n"]))
        i += 1
    return "".join(out).encode("utf-8")


# Spellings of numbers that are equal, or nearly, as Python compares them: a set keeps the first
# of equal members (1 == 1.0 == True == 1+0j), so the decoder must compare exact values.
EQUAL_NUMBERS = [
    ["1", "1.0", "True", "1+0j", "0x1", "0o1", "0b1", "1_0e-1", "1.0-0j", "+1", "(1)"],
    ["0", "0.0", "-0.0", "False", "0j", "-0j", "-0", "0e0", "0x0", "1e-400", "0-0j", "-0.0+0j"],
    ["16", "16.0", "0x10", "0o20", "0b10000", "1.6e1", "16+0j", "160e-1", "1_6", "0x_10"],
    ["-16", "-16.0", "-0x10", "-(16)", "-16+0j", "-1.6e1"],
    ["9007199254740992", "9007199254740992.0", "9007199254740993.0", "0x20000000000000",
     "9007199254740992+0j", "9007199254740993+0j", "9007199254740993"],
    ["100000000000000000000000", "1e23", "100000000000000000000000+0j", "1e23+0j",
     "99999999999999991611392"],
    ["1e400", "1e401", "1e400+0j", "2e308", "1" + "0" * 400 + ".0"],
    ["-1e400", "-1e401", "-1e400-0j"],
    ["1j", "0+1j", "1.0j", "-0.0+1j", "-0+1j", "0x0+1j", "1e400j", "1e401j"],
    ["0.5", "0.5+0j", "5e-1", "0.50000000000000001", ".5"],
    ["5e-324", "4.9406564584124654e-324", "2.4703282292062328e-324", "2.4703282292062327e-324"],
    [str(2 ** 1023), hex(2 ** 1023), "8.98846567431158e307", "0o1" + "0" * 341,
     str(2 ** 1023) + "+0j"],
    [hex(2 ** 1024 - 2 ** 970 - 1) + "+0j", "1.7976931348623157e308",
     hex(2 ** 1024 - 2 ** 970) + "+0j", str(2 ** 1024 - 2 ** 971),
     hex(2 ** 1024 - 2 ** 971) + "+0j"],
    ["'a'", "'\\x61'", "u'a'", "'a' ''", "b'a'", "b'\\x61'", "r'a'"],
    ["None", "...", "()", "(())", "((),)", "(1,)", "(1.0,)", "(True,)", "(1, 'a')", "(1.0, 'a')",
     "(1+0j, u'a')", "((1,),)", "((1.0,),)"],
]


def rand_set_display(rnd):
    """A set display mixing equal and nearly-equal spellings (or the same as dict keys)."""
    members = []
    for _ in range(rnd.randint(2, 6)):
        group = rnd.choice(EQUAL_NUMBERS)
        members.append(rnd.choice(group))
        if rnd.random() < 0.2:
            members[-1] = "(%s, %s)" % (members[-1], rnd.choice(rnd.choice(EQUAL_NUMBERS)))
    if rnd.random() < 0.15:
        return ("{" + ", ".join("%s: %d" % (m, i) for i, m in enumerate(members)) + "}").encode()
    return ("{" + ", ".join(members) + "}").encode()


INTERESTING = [b"'", b'"', b"\\", b"\n", b"\r", b"#", b"\x00", b"\xff", b"\xc0", b"j", b"_",
               b"(", b")", b"[", b"]", b"{", b"}", b",", b":", b" ", b"\t", b"\x0c", b"u", b"r",
               b"b", b"f", b"x", b"N", b"0", b"9", b".", b"-", b"+", b"e", b"\\x", b"\\u", b"\\N{",
               b"'''", b"\\\n", b"set()", b"None", b"...", b"\xe2\x80\xa8", b"\xed\xa0\x80"]


def mutate(rnd, data):
    data = bytearray(data)
    for _ in range(rnd.choice([1, 1, 1, 2, 3])):
        op = rnd.randrange(6)
        pos = rnd.randint(0, len(data))
        if op == 0 and data:
            pos = min(pos, len(data) - 1)
            data[pos] ^= 1 << rnd.randrange(8)
        elif op == 1:
            data[pos:pos] = rnd.choice(INTERESTING)
        elif op == 2 and data:
            del data[pos:pos + rnd.randint(1, 4)]
        elif op == 3:
            data = data[:pos]
        elif op == 4 and data:
            pos = min(pos, len(data) - 1)
            data[pos] = rnd.choice(INTERESTING)[0]
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
    corpus += [("hostile", "regression-" + name, data) for name, data in REGRESSIONS]
    corpus += [("hostile", name, data) for name, data in HOSTILE_FIXED]
    n = 0
    while n < 800 * SCALE:
        data = hostile_call(rnd)
        if data is not None:
            corpus.append(("hostile", "call-%d" % n, data))
            n += 1
    for i in range(300 * SCALE):
        lit = rand_number_literal(rnd)
        if rnd.random() < 0.3:
            lit = "('thing','echo',(%s,),{})" % lit
        corpus.append(("hostile", "number-%d" % i, lit.encode()))
    for i in range(300 * SCALE):
        corpus.append(("hostile", "set-equality-%d" % i, rand_set_display(rnd)))
    for i in range(300 * SCALE):
        corpus.append(("hostile", "layout-%d" % i, layout_variant(rnd, rnd.choice(
            [d for _, d in honest[:600]]))))
    sources = [d for _, _, d in corpus if len(d) < 4000]
    for i in range(1000 * SCALE):
        corpus.append(("mutation", "mutation-%d" % i, mutate(rnd, rnd.choice(sources))))
    return corpus


# --- the two sides -----------------------------------------------------------------------------


def python_side(data):
    """("ok", Python's dump, value-model dump) or ("error", exception name, None)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid-escape DeprecationWarnings, as in the daemon
        try:
            value = pydump.decode("serpent", data)
        except Exception as e:  # every failure of the real decoder counts as "refused"
            return ("error", type(e).__name__, None)
        tree = ast.parse(data.decode("utf-8").lstrip(" \t"), mode="eval")
    return ("ok", pydump.dump(value), model_dump(tree.body))


def model_dump(node):
    """The value-model rendering of a parse Python accepted: what a decoder that builds exactly
    the right value_t tree prints through value_dump (dict pairs in wire order, collapsed by their
    dump text; set members as Python keeps them; numbers typed only)."""
    if isinstance(node, ast.Constant):
        return pydump.dump(node.value)
    if isinstance(node, ast.Tuple):
        return "(" + ",".join(model_dump(x) for x in node.elts) + ")"
    if isinstance(node, ast.List):
        return "[" + ",".join(model_dump(x) for x in node.elts) + "]"
    if isinstance(node, ast.Set):
        kept, seen = [], set()
        for x in node.elts:  # Python keeps the first of equal members (1 == 1.0 == True)
            v = ast.literal_eval(x)
            if v not in seen:
                seen.add(v)
                kept.append(model_dump(x))
        return "{" + ",".join(sorted(kept)) + "}"
    if isinstance(node, ast.Call):
        return "{}"  # set(): the only call literal_eval accepts
    if isinstance(node, ast.Dict):
        pairs = collections.OrderedDict()
        for k, v in zip(node.keys, node.values):
            pairs[model_dump(k)] = model_dump(v)  # first position, last value
        return "d{" + ",".join(k + ":" + v for k, v in pairs.items()) + "}"
    return pydump.dump(ast.literal_eval(node))  # signed numbers and complex sums


def c_side(path):
    out = subprocess.run([str(VALUE_DUMP), "serpent", path], capture_output=True, timeout=60)
    line = out.stdout.decode("utf-8", "replace").rstrip("\n")
    if out.returncode != 0 or not (line.startswith("ok ") or line.startswith("refused")):
        return ("crash", "exit %d: %s %s" % (out.returncode, line[:200],
                                            out.stderr.decode("utf-8", "replace")[-500:]))
    status, _, rest = line.partition(" ")
    return (status, rest)


def show(data, n=160):
    r = repr(data)
    return r if len(r) <= n else r[:n] + "...(%d bytes)" % len(data)


@pytest.mark.timeout(300)
def test_serpent_decoder_matches_python_on_captured_honest_and_hostile_inputs():
    corpus = build_corpus()
    with tempfile.TemporaryDirectory(prefix="serpent-diff-") as tmp:
        paths = []
        for i, (_, _, data) in enumerate(corpus):
            p = os.path.join(tmp, "%05d" % i)
            with open(p, "wb") as f:
                f.write(data)
            paths.append(p)
        with ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 2))) as pool:
            c_results = list(pool.map(c_side, paths, chunksize=16))
    py_results = [python_side(data) for _, _, data in corpus]

    counts = collections.Counter()
    reasons = collections.Counter()
    reason_example = {}
    problems = []
    for (kind, name, data), c, py in zip(corpus, c_results, py_results):
        group = kind.split("-")[0]
        must_accept = kind in ("captured-c2s", "captured-s2c", "honest")
        if c[0] == "crash":
            problems.append("%s %s: value_dump crashed: %s\n    input %s" % (kind, name, c[1],
                                                                           show(data)))
            continue
        if c[0] == "ok":
            if py[0] != "ok":
                problems.append("%s %s: C ok %s but Python raises %s\n    input %s"
                                % (kind, name, c[1][:200], py[1], show(data)))
            elif c[1] == py[1]:
                counts[group, "ok and equal"] += 1
            elif c[1] == py[2]:
                counts[group, "ok and equal in the value model"] += 1
            else:
                problems.append("%s %s: C and Python differ\n    input  %s\n    C      %s\n"
                                "    Python %s" % (kind, name, show(data), c[1][:300], py[1][:300]))
        elif py[0] == "ok":
            if must_accept:
                problems.append("%s %s: honest input refused (%s)\n    input %s"
                                % (kind, name, c[1], show(data)))
            counts[group, "refused by C only"] += 1
            reasons[c[1]] += 1
            reason_example.setdefault(c[1], (name, data))
        else:
            counts[group, "refused by both"] += 1

    print("\nserpent differential: %d inputs" % len(corpus))
    for group in ("captured", "honest", "hostile", "mutation"):
        print("  %-9s %s" % (group, ", ".join("%s: %d" % (what, counts[group, what]) for what in (
            "ok and equal", "ok and equal in the value model", "refused by C only",
            "refused by both"))))
    print("  refusals of inputs Python accepts, by reason:")
    for reason, n in reasons.most_common():
        ex_name, ex = reason_example[reason]
        print("    %5d  %-28s e.g. %s %s" % (n, reason, ex_name, show(ex, 90)))
    assert not problems, "%d problem(s):\n%s" % (len(problems), "\n".join(problems[:40]))
    assert counts["captured", "ok and equal"] >= 30, "captures missing from tests/vectors?"
    assert counts["honest", "ok and equal"] + counts["honest", "ok and equal in the value model"] \
        >= 800 * SCALE, "too few honest encodings that Python accepts: is serpent installed?"
