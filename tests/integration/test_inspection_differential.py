"""Differential test: pyroguard's decoders against the real Pyro4 4.82 daemon's own decoding.

For every frame of a corpus, `pyroguard inspect` (the same inspect_request the proxy runs) is
compared with pyro_names.daemon_view, which replays the daemon's dispatch order with Pyro4's own
serializer classes (PROTOCOL.md §6; see pyro_names.py). The corpus:

  * honest traffic: every c2s frame of the four safe serializers in tests/vectors/pyro4 (copied
    from the shared captures) and tests/vectors/pyro4-captured (real Pyro4 4.82 clients in every
    call style, captured at the daemon by `pyro_names.py capture`);
  * hostile variants generated below for every item of PROTOCOL.md §9, per serializer, and the
    frame-level places (BLBI, BATCH, COMPRESSED, __getattr__/__setattr__, top-level shapes);
  * byte-level mutants of all of these (fixed seed) for serpent, json and msgpack.

Required (the issue's words): zero frames that pyroguard allows with names different from
Python's, and zero refusals of honest traffic from real clients. Whenever Python's resolved
names contain a dotted, private or non-identifier name, pyroguard must refuse. Frames pyroguard
refuses although the daemon would only have resolved clean names are allowed (pyroguard accepts
only canonical shapes, §10) but counted and listed for review.

Run: PYROGUARD_BIN=build/pyroguard /usr/bin/python3 -m pytest -q tests/integration/test_inspection_differential.py
"""

import json
import marshal
import pickle
import random
import struct
import subprocess
import warnings
import zlib
from collections import Counter, defaultdict

import msgpack
import pytest
import serpent

from conftest import MSG_CONNECT, MSG_INVOKE, MSG_PING, PYROGUARD_BIN, REPO, SER_IDS, pyro4_frame
from pyro_names import NAME_RENDER_LEN, OBJECT_RENDER_LEN, daemon_view, render

SAFE = ["serpent", "json", "marshal", "msgpack"]
VECTORS = REPO / "tests" / "vectors" / "pyro4"
CAPTURED = REPO / "tests" / "vectors" / "pyro4-captured"

FLAG_COMPRESSED, FLAG_ONEWAY, FLAG_BATCH = 0x02, 0x04, 0x08
FLAG_META_ON_CONNECT, FLAG_KEEPSERIALIZED = 0x10, 0x40

# Honest client code that emits dotted or private names (the shared vectors' `dotted`,
# `dotted_client_attr`, `private`, and the captured scenarios named after them): refused.
BAD_NAME_SCENARIOS = {"dotted", "dotted_client_attr", "private", "private_dunder_class",
                      "batch_dotted", "getattr_dotted", "blob_dotted"}
NAME_REASONS = {"dotted_name", "private_name", "invalid_name"}

# PROTOCOL.md §9, one id per bullet; each generated variant names the bullet it exercises.
BULLETS = {
    "serpent": {
        "S-escape": "\\x2e \\x2E \\56 \\056 \\u002e \\U0000002e \\N{FULL STOP} \\N{full stop}",
        "S-concat": "implicit concatenation, across lines with comments, u''/r'' mixing, b'' mixing",
        "S-backslash-newline": "backslash-newline inside a quoted string (LF, CRLF)",
        "S-prefix": "prefixes u r U R, triple quotes ''' and \"\"\"",
        "S-raw": "raw strings keep escapes: r'sub\\x2eecho' is 11 chars, no dot",
        "S-bytes": "b'sub.echo' is bytes (TypeError on the server)",
        "S-object-special": "dot hidden in the object id; escaped special names ('__g\\x65tattr__')",
        "S-toplevel": "top level list / 4-key dict / no header comment / other header",
        "S-not-a-dot": "U+FF0E, U+2024 are not dots (no NFKC)",
    },
    "json": {
        "J-escape": "\\u002e, hex digits in either case",
        "J-escaped-key": "escaped key names (\"m\\u0065thod\")",
        "J-duplicate-key": "duplicate method key, the last one wins",
        "J-key-order": "any key order / whitespace",
        "J-batch-escape": "batch entries with escapes",
        "J-utf8": "invalid UTF-8 (overlong C0 AE), BOM",
    },
    "marshal": {
        "M-string-types": "the same name as z Z a A u t, with or without FLAG_REF",
        "M-ref": "r back-references to strings that appeared earlier as data",
        "M-bytes": "s (bytes) as a name",
        "M-trailing": "trailing bytes after the object (a second fake call)",
        "M-surrogate": "u/t contents are UTF-8 with surrogatepass",
    },
    "msgpack": {
        "P-str-forms": "str8/str16/str32 instead of fixstr",
        "P-array16": "array16/array32 top level",
        "P-bin": "bin8/16/32 -> bytes (TypeError on the server)",
        "P-utf8": "overlong / invalid UTF-8",
        "P-ext": "ext types are not strings",
    },
    "frame": {
        "F-blbi": "KEEPSERIALIZED + BLBI, payload irrelevant",
        "F-blbi-duplicate": "duplicate BLBI (last wins)",
        "F-blbi-without-flag": "BLBI without KEEPSERIALIZED is ignored",
        "F-batch": "BATCH flag: the outer name is ignored",
        "F-compressed": "COMPRESSED (zlib)",
        "F-property": "__getattr__/__setattr__ attribute name in vargs[0]",
        "F-shape": "non-canonical top levels: 4-key dict, list, 4-char string, set, json extra and duplicate keys",
    },
}


class Case(object):
    def __init__(self, label, serializer, origin, raw, bullet=None, scenario=None):
        self.label = label
        self.serializer = serializer
        self.origin = origin  # "vector", "captured", "generated" or "mutant"
        self.raw = raw
        self.bullet = bullet
        self.scenario = scenario
        self.pg = None
        self.py = None
        self.outcome = None
        self.problem = None

    @property
    def honest(self):
        return self.origin in ("vector", "captured")


# --- frames -------------------------------------------------------------------------------------


def ann(key, value):
    """One Pyro4 annotation chunk (PROTOCOL.md §2.2)."""
    return key + struct.pack("!H", len(value)) + value


def invoke(ser, payload, flags=0, annotations=b"", seq=1):
    return pyro4_frame(MSG_INVOKE, payload, serializer_id=SER_IDS[ser], flags=flags, seq=seq,
                       annotations=annotations)


def connect(ser, payload, flags=FLAG_META_ON_CONNECT):
    return pyro4_frame(MSG_CONNECT, payload, serializer_id=SER_IDS[ser], flags=flags, seq=0)


def encode_call(ser, obj, method, vargs, kwargs):
    """The call as the real Pyro4 4.82 client library writes it (util.<X>Serializer.dumpsCall),
    except that the marshal client's kwargs=None crash is avoided (tests/vectors/pyro4/README.md)."""
    if ser == "serpent":
        return serpent.dumps((obj, method, vargs, kwargs), module_in_classname=True)
    if ser == "json":
        return json.dumps({"object": obj, "method": method, "params": vargs, "kwargs": kwargs},
                          ensure_ascii=False).encode("utf-8")
    if ser == "marshal":
        return marshal.dumps((obj, method, list(vargs) if isinstance(vargs, tuple) else vargs, kwargs))
    if ser == "msgpack":
        return msgpack.packb((obj, method, vargs, kwargs), use_bin_type=True)
    raise ValueError(ser)


def encode_data(ser, data):
    if ser == "serpent":
        return serpent.dumps(data, module_in_classname=True)
    if ser == "json":
        return json.dumps(data, ensure_ascii=False).encode("utf-8")
    if ser == "marshal":
        return marshal.dumps(data)
    return msgpack.packb(data, use_bin_type=True)


def blbi(method, obj="thing", info="blobinfo"):
    return marshal.dumps((info, obj, method))


# --- serpent -------------------------------------------------------------------------------------

SERPENT_HEADER = b"# serpent utf-8 python3.2\n"

# (label, literal text of the name, bullet)
SERPENT_NAMES = [
    ("plain dotted", r"'sub.echo'", None),
    ("\\x2e", r"'sub\x2eecho'", "S-escape"),
    ("\\x2E", r"'sub\x2Eecho'", "S-escape"),
    ("\\56", r"'sub\56echo'", "S-escape"),
    ("\\056", r"'sub\056echo'", "S-escape"),
    ("\\u002e", r"'sub\u002eecho'", "S-escape"),
    ("\\U0000002e", r"'sub\U0000002eecho'", "S-escape"),
    ("\\N{FULL STOP}", r"'sub\N{FULL STOP}echo'", "S-escape"),
    ("\\N{full stop}", r"'sub\N{full stop}echo'", "S-escape"),
    ("\\N{PERIOD} (no such name)", r"'sub\N{PERIOD}echo'", "S-escape"),
    ("concatenation", r"'sub' '.echo'", "S-concat"),
    ("concatenation without space", r"'sub''.echo'", "S-concat"),
    ("concatenation across lines with a comment", "('sub' # x\n '.echo')", "S-concat"),
    ("u'' r'' concatenation", r"u'sub' r'.echo'", "S-concat"),
    ("concatenation with b''", r"'sub' b'.echo'", "S-concat"),
    ("concatenation of clean halves", r"'ec' 'ho'", "S-concat"),
    ("backslash-LF", "'sub\\\n.echo'", "S-backslash-newline"),
    ("backslash-CRLF", "'sub\\\r\n.echo'", "S-backslash-newline"),
    ("backslash-LF in a clean name", "'ec\\\nho'", "S-backslash-newline"),
    ("u prefix", r"u'sub.echo'", "S-prefix"),
    ("U prefix", r"U'sub.echo'", "S-prefix"),
    ("r prefix", r"r'sub.echo'", "S-prefix"),
    ("R prefix", r"R'sub.echo'", "S-prefix"),
    ("triple single quotes", r"'''sub.echo'''", "S-prefix"),
    ("triple double quotes", r'"""sub.echo"""', "S-prefix"),
    ("double quotes", r'"sub.echo"', "S-prefix"),
    ("u prefix clean", r"u'echo'", "S-prefix"),
    ("r prefix clean", r"r'echo'", "S-prefix"),
    ("triple quotes clean", r"'''echo'''", "S-prefix"),
    ("double quotes clean", r'"echo"', "S-prefix"),
    ("raw keeps \\x2e", r"r'sub\x2eecho'", "S-raw"),
    ("raw keeps \\N{}", r"r'sub\N{FULL STOP}echo'", "S-raw"),
    ("bytes dotted", r"b'sub.echo'", "S-bytes"),
    ("bytes clean", r"b'echo'", "S-bytes"),
    ("rb bytes", r"rb'echo'", "S-bytes"),
    ("f-string", r"f'echo'", "S-prefix"),
    ("fullwidth full stop escaped", r"'sub\uff0eecho'", "S-not-a-dot"),
    ("one dot leader escaped", r"'sub\u2024echo'", "S-not-a-dot"),
    ("fullwidth full stop raw", "'sub\uff0eecho'", "S-not-a-dot"),
    ("clean \\x65", r"'\x65cho'", "S-escape"),
    ("clean \\u006f", r"'ech\u006f'", "S-escape"),
    ("clean \\N{LATIN SMALL LETTER E}", r"'\N{LATIN SMALL LETTER E}cho'", "S-escape"),
    ("clean octal \\145", r"'\145cho'", "S-escape"),
    ("_private", r"'_private'", None),
    ("_private escaped", r"'_\x70rivate'", "S-escape"),
    ("__class__", r"'__class__'", None),
    ("__class__ escaped", r"'__cl\x61ss__'", "S-escape"),
    ("__init__", r"'__init__'", None),
    ("__dict__ (public dunder)", r"'__dict__'", None),
    ("empty", r"''", None),
    ("space inside", r"'ec ho'", None),
    ("NUL escaped", r"'echo\x00'", None),
    ("non-ASCII letter escaped", r"'\xe9cho'", None),
    ("non-ASCII letter raw", "'\u00e9cho'", None),
    ("None", "None", None),
    ("int", "42", None),
    ("tuple", "('echo',)", None),
]

SERPENT_SHAPES = [
    # (label, text template with {n}, flags, bullets the shape adds)
    ("method", "('thing',{n},('x',),{{}})", 0, ()),
    ("batch inner method", "('thing','<batch>',[('echo',(1,),{{}}),({n},(2,),{{}})],None)", FLAG_BATCH,
     ("F-batch",)),
    ("__getattr__ attribute", "('thing','__getattr__',({n},),None)", 0, ("F-property",)),
    ("__setattr__ attribute", "('thing','__setattr__',({n},7),None)", 0, ("F-property",)),
    ("object id", "({n},'registered',(),{{}})", 0, ("S-object-special",)),
]

SERPENT_WHOLE = [
    # (label, payload text, flags, bullet)
    ("no header comment", "('thing','echo',('x',),{})", 0, "S-toplevel"),
    ("no header, dotted", "('thing','sub.echo',('x',),{})", 0, "S-toplevel"),
    ("other header comment", "# serpent utf-8 python2.7\n('thing','echo',('x',),{})", 0, "S-toplevel"),
    ("two comment lines", "# serpent utf-8 python3.2\n# more\n('thing','echo',('x',),{})", 0, "S-toplevel"),
    ("CRLF after header", "# serpent utf-8 python3.2\r\n('thing','echo',('x',),{})", 0, "S-toplevel"),
    ("leading spaces", "   ('thing','echo',('x',),{})", 0, "S-toplevel"),
    ("indented after comment", "# c\n   ('thing','echo',('x',),{})", 0, "S-toplevel"),
    ("trailing comment", "('thing','echo',('x',),{}) # trailing", 0, "S-toplevel"),
    ("trailing newlines", "('thing','echo',('x',),{})\n\n", 0, "S-toplevel"),
    ("trailing garbage", "('thing','echo',('x',),{}) junk", 0, "S-toplevel"),
    ("two expressions", "('thing','echo',('x',),{})\n('thing','sub.echo',('x',),{})", 0, "S-toplevel"),
    ("tuple without parentheses", "'thing','echo',('x',),{}", 0, "S-toplevel"),
    ("tuple without parentheses, dotted", "'thing','sub.echo',('x',),{}", 0, "S-toplevel"),
    ("trailing comma", "('thing','echo',('x',),{},)", 0, "S-toplevel"),
    ("nested parentheses", "(('thing'),('echo'),(('x',)),({}))", 0, "S-toplevel"),
    ("line continuation between items", "('thing',\\\n'echo',('x',),{})", 0, "S-toplevel"),
    ("list top level", "['thing','echo',('x',),{}]", 0, "S-toplevel"),
    ("list top level, dotted", "['thing','sub.echo',('x',),{}]", 0, "S-toplevel"),
    ("4-key dict top level, dotted key", "{'thing':0,'sub.echo':1,'a':2,'b':3}", 0, "F-shape"),
    ("4-key dict top level, clean keys", "{'thing':0,'echo':1,'a':2,'b':3}", 0, "F-shape"),
    ("4-char string top level", "'t.xy'", 0, "F-shape"),
    ("4-char string top level, clean", "'tecd'", 0, "F-shape"),
    ("set top level", "{'thing','sub.echo',1,2}", 0, "F-shape"),
    ("3-tuple", "('thing','echo',('x',))", 0, "F-shape"),
    ("5-tuple", "('thing','echo',('x',),{},None)", 0, "F-shape"),
    ("vargs list, kwargs None", "('thing','echo',['x'],None)", 0, None),
    ("rich literal arguments", "('thing','echo',(1_000,0x1F,0o7,0b1,1e5,1+2j,-3,...,set(),"
     "True,None,b'by',{1,2},[{'k':(1,)}],-(1),+2.5),{})", 0, None),
    ("frozenset() call (not a literal)", "('thing','echo',(frozenset(),),{})", 0, None),
    ("NUL character in the text", "('thing','echo',('x\x00',),{})", 0, None),
    ("BOM", "\ufeff('thing','echo',('x',),{})", 0, None),
    ("deeply nested argument", "('thing','echo',(" + "(" * 60 + "1" + ",)" * 60 + ",),{})", 0, None),
    ("getattr vargs a string", "('thing','__getattr__','value',None)", 0, "F-property"),
    ("getattr vargs a dict with key 0", "('thing','__getattr__',{0:'sub.echo'},None)", 0, "F-property"),
    ("getattr vargs a list", "('thing','__getattr__',['value'],None)", 0, "F-property"),
    ("getattr vargs with two items", "('thing','__getattr__',('value','sub.echo'),None)", 0, "F-property"),
    ("getattr vargs empty", "('thing','__getattr__',(),None)", 0, "F-property"),
    ("setattr vargs with one item", "('thing','__setattr__',('value',),None)", 0, "F-property"),
    ("setattr vargs a string", "('thing','__setattr__','vx',None)", 0, "F-property"),
    ("escaped __getattr__ reads vargs[0]", r"('thing','__g\x65tattr__',('sub.value',),None)", 0, "S-object-special"),
    ("escaped __getattr__, clean attribute", r"('thing','__g\x65tattr__',('value',),None)", 0, "S-object-special"),
    ("escaped __setattr__, clean attribute", r"('thing','__s\u0065tattr__',('value',7),None)", 0, "S-object-special"),
    ("escaped dot in Pyro.Daemon", r"('Pyro\x2eDaemon','registered',(),{})", 0, "S-object-special"),
    ("batch outer name dotted", "('thing','sub.echo',[('echo',(1,),{})],None)", FLAG_BATCH, "F-batch"),
    ("batch outer name private", "('thing','_private',[('echo',(1,),{})],None)", FLAG_BATCH, "F-batch"),
    ("batch outer name __getattr__", "('thing','__getattr__',[('echo',(1,),{})],None)", FLAG_BATCH, "F-batch"),
    ("batch without the flag", "('thing','<batch>',[('echo',(1,),{})],None)", 0, "F-batch"),
    ("batch flag on a plain call", "('thing','echo',('x',),{})", FLAG_BATCH, "F-batch"),
    ("batch entries as lists", "('thing','<batch>',[['echo',[1],{}],['echo',[2],{}]],None)", FLAG_BATCH, "F-batch"),
    ("batch vargs a tuple", "('thing','<batch>',(('echo',(1,),{}),),None)", FLAG_BATCH, "F-batch"),
    ("batch entry with two items", "('thing','<batch>',[('echo',(1,))],None)", FLAG_BATCH, "F-batch"),
    ("batch entry a 3-char string", "('thing','<batch>',['e.x'],None)", FLAG_BATCH, "F-batch"),
    ("batch entry a 3-key dict", "('thing','<batch>',[{'sub.echo':1,'b':2,'c':3}],None)", FLAG_BATCH, "F-batch"),
    ("batch empty", "('thing','<batch>',[],None)", FLAG_BATCH, "F-batch"),
    ("batch vargs a dict", "('thing','<batch>',{('echo',(1,),None):1},None)", FLAG_BATCH, "F-batch"),
    ("batch inner __getattr__", "('thing','<batch>',[('__getattr__',('value',),{})],None)", FLAG_BATCH, "F-batch"),
    ("batch of 70 calls", "('thing','<batch>',[" + ",".join(["('echo',(%d,),{})" % i for i in range(70)])
     + "],None)", FLAG_BATCH, "F-batch"),
    ("batch of 70 calls, the last dotted", "('thing','<batch>',[" + ",".join(["('echo',(%d,),{})" % i for i in range(69)])
     + ",('sub.echo',(1,),{})],None)", FLAG_BATCH, "F-batch"),
    ("batch entry escaped and concatenated", "('thing','<batch>',[('echo',(1,),{}),('sub' '\\x2eecho',(2,),{})],None)",
     FLAG_BATCH, "F-batch"),
]


# Lexing corners of Python literals: a decoder that mis-tokenizes any of these would read other
# strings than ast.literal_eval does (whole payloads after the header, PROTOCOL.md §5.1).
SERPENT_LEXING = [
    ("escaped quote in a name", r"('thing','ec\'ho',('x',),{})"),
    ("double-quoted name with a single quote", r"""('thing',"ec'ho",('x',),{})"""),
    ("backslash before the closing quote", r"('thing','echo\\',('x',),{})"),
    ("escaped backslash then x2e", r"('thing','sub\\x2eecho',('x',),{})"),
    ("simple escapes \\a \\b \\f \\v \\0", r"('thing','e\a\b\f\v\0',('x',),{})"),
    ("octal escape above 0o377", r"('thing','ech\400',('x',),{})"),
    ("octal \\0568 (three digits then a digit)", r"('thing','sub\0568echo',('x',),{})"),
    ("octal \\56 then a digit", r"('thing','sub\561',('x',),{})"),
    ("unknown escape \\q kept", r"('thing','ech\q',('x',),{})"),
    ("escape \\8 kept", r"('thing','ech\8',('x',),{})"),
    ("incomplete \\x2", r"('thing','sub\x2',('x',),{})"),
    ("incomplete \\u002", r"('thing','sub\u002',('x',),{})"),
    ("\\U out of range", r"('thing','sub\U00110000',('x',),{})"),
    ("empty \\N{}", r"('thing','sub\N{}echo',('x',),{})"),
    ("comment with a quote between items", "('thing',# it's\n'echo',('x',),{})"),
    ("comment with a quote, dotted", "('thing',# it's\n'sub.echo',('x',),{})"),
    ("comment hiding a dotted item", "('thing','echo',# 'sub.echo',\n('x',),{})"),
    ("hash inside a string", "('thing#','echo',('x',),{})"),
    ("hash inside a string, then dotted", "('thing#','sub.echo',('x',),{})"),
    ("triple-quoted with quotes inside", "('thing','''ec'ho''',('x',),{})"),
    ("triple-quoted with a newline inside", "('thing','''sub\n.echo''',('x',),{})"),
    ("triple then single concatenation", "('thing','''su''' 'b.echo',('x',),{})"),
    ("triple-quoted ending in four quotes", "('thing','''echo'''',('x',),{})"),
    ("empty-string concatenation", "('thing','' 'echo' '',('x',),{})"),
    ("string + string (not a literal)", "('thing','sub'+'.echo',('x',),{})"),
    ("string * 1 (not a literal)", "('thing','echo'*1,('x',),{})"),
    ("starred tuple", "(*('thing','echo'),('x',),{})"),
    ("bare name", "('thing',echo,('x',),{})"),
    ("form feed between items", "('thing',\f'echo',('x',),{})"),
    ("tab between items", "('thing',\t'echo',('x',),{})"),
    ("no-break space between items", "('thing',\u00a0'echo',('x',),{})"),
    ("CR alone as a newline", "('thing',\r'echo',('x',),{})"),
    ("non-ASCII in a bytes literal", "('thing','echo',(b'\u00e9',),{})"),
    ("ub prefix", "('thing',ub'echo',('x',),{})"),
    ("Rb and bR prefixes", "('thing','echo',(Rb'x',bR'y'),{})"),
    ("numbers next to strings", "('thing','echo',(0x_1f,1_0.5e-3j,.5,1.,0o7_7),{})"),
    ("leading zero integer", "('thing','echo',(01,),{})"),
    ("unary minus on a string", "('thing',-'echo',('x',),{})"),
    ("complex sums", "('thing','echo',(1+2j,-3-4j),{})"),
    ("complex sum plus a number", "('thing','echo',((1+2j)+3,),{})"),
    ("dict literals with duplicate keys", "('thing','echo',({'a':1,'a':2},),{'k':1,'k':2})"),
    ("kwargs dict with an escaped key", r"('thing','echo',(),{'\x78':1})"),
    ("ellipsis method", "('thing',...,('x',),{})"),
    ("parenthesized name", "('thing',('sub.echo'),('x',),{})"),
    ("name in a 1-tuple", "('thing',('echo',),('x',),{})"),
    ("very long clean name", "('thing','%s',('x',),{})" % ("e" * 300)),
    ("very long object id with a dot", "('%s.x','echo',('x',),{})" % ("o" * 600)),
]


def serpent_cases():
    for nlabel, token, bullet in SERPENT_NAMES:
        for slabel, template, flags, shape_bullets in SERPENT_SHAPES:
            text = SERPENT_HEADER.decode() + template.format(n=token)
            yield ("%s: %s" % (slabel, nlabel), invoke("serpent", text.encode("utf-8"), flags),
                   bullet or (shape_bullets[0] if shape_bullets else None))
    for label, text, flags, bullet in SERPENT_WHOLE:
        yield label, invoke("serpent", text.encode("utf-8"), flags), bullet
    for label, text in SERPENT_LEXING:
        yield label, invoke("serpent", SERPENT_HEADER + text.encode("utf-8")), (
            "S-concat" if "concatenation" in label else None)
    hdr = SERPENT_HEADER
    yield ("invalid UTF-8 in a name", invoke("serpent", hdr + b"('thing','sub\xc0\xaeecho',('x',),{})"), "S-escape")
    yield ("Latin-1 byte in a name", invoke("serpent", hdr + b"('thing','\xe9cho',('x',),{})"), None)


# --- json ----------------------------------------------------------------------------------------

JSON_NAMES = [
    ("plain dotted", r'"sub.echo"', None),
    ("\\u002e", r'"sub\u002eecho"', "J-escape"),
    ("\\u002E", r'"sub\u002Eecho"', "J-escape"),
    ("escaped first letter, dotted", r'"\u0073ub.echo"', "J-escape"),
    ("fullwidth full stop", r'"sub\uff0eecho"', "J-escape"),
    ("one dot leader", r'"sub\u2024echo"', "J-escape"),
    ("\\/", r'"sub\/echo"', "J-escape"),
    ("clean \\u0065", r'"\u0065cho"', "J-escape"),
    ("clean all escaped, upper case", r'"\u0065\u0063\u0068\u006F"', "J-escape"),
    ("_private", r'"_private"', None),
    ("_private escaped", r'"\u005fprivate"', "J-escape"),
    ("__class__", r'"__class__"', None),
    ("__init__ escaped", r'"__\u0069nit__"', "J-escape"),
    ("__dict__ (public dunder)", r'"__dict__"', None),
    ("empty", r'""', None),
    ("NUL escaped", r'"echo\u0000"', None),
    ("lone surrogate", r'"ech\ud800"', "J-escape"),
    ("surrogate pair", r'"ech\ud83d\ude00"', "J-escape"),
    ("non-ASCII escaped", r'"\u00e9cho"', None),
    ("non-ASCII raw", '"\u00e9cho"', None),
    ("raw tab (invalid in strict JSON)", '"ec\tho"', None),
    ("null", "null", None),
    ("number", "5", None),
    ("array", '["echo"]', None),
    ("object", '{"a": 1}', None),
    ("true", "true", None),
]

JSON_SHAPES = [
    ("method", '{{"object": "thing", "method": {n}, "params": ["x"], "kwargs": {{}}}}', 0, ()),
    ("batch inner method", '{{"object": "thing", "method": "<batch>", "params": [["echo", [1], {{}}], [{n}, [2], {{}}]], '
     '"kwargs": null}}', FLAG_BATCH, ("J-batch-escape",)),
    ("__getattr__ attribute", '{{"object": "thing", "method": "__getattr__", "params": [{n}], "kwargs": null}}', 0,
     ("F-property",)),
    ("__setattr__ attribute", '{{"object": "thing", "method": "__setattr__", "params": [{n}, 7], "kwargs": null}}', 0,
     ("F-property",)),
    ("object id", '{{"object": {n}, "method": "registered", "params": [], "kwargs": {{}}}}', 0, ()),
]

JSON_WHOLE = [
    ("escaped key method, dotted", r'{"object": "thing", "m\u0065thod": "sub.echo", "params": ["x"], "kwargs": {}}', 0,
     "J-escaped-key"),
    ("escaped key method, clean", r'{"object": "thing", "m\u0065thod": "echo", "params": ["x"], "kwargs": {}}', 0,
     "J-escaped-key"),
    ("every key escaped", r'{"\u006fbject": "thing", "\u006dethod": "echo", "\u0070arams": ["x"], "\u006bwargs": {}}',
     0, "J-escaped-key"),
    ("duplicate method, last dotted", '{"object": "thing", "method": "echo", "method": "sub.echo", "params": ["x"], '
     '"kwargs": {}}', 0, "J-duplicate-key"),
    ("duplicate method, last clean", '{"object": "thing", "method": "sub.echo", "params": ["x"], "kwargs": {}, '
     '"method": "echo"}', 0, "J-duplicate-key"),
    ("duplicate method through an escaped key", r'{"object": "thing", "method": "echo", "params": ["x"], "kwargs": {}, '
     r'"m\u0065thod": "_private"}', 0, "J-duplicate-key"),
    ("duplicate object", '{"object": "other", "object": "thing", "method": "echo", "params": ["x"], "kwargs": {}}', 0,
     "J-duplicate-key"),
    ("duplicate params for __getattr__", '{"object": "thing", "method": "__getattr__", "params": ["value"], '
     '"kwargs": null, "params": ["sub.value"]}', 0, "J-duplicate-key"),
    ("duplicate key inside kwargs", '{"object": "thing", "method": "echo", "params": [], "kwargs": {"x": 1, "x": 2}}', 0,
     "J-duplicate-key"),
    ("keys in reverse order", '{"kwargs": {}, "params": ["x"], "method": "echo", "object": "thing"}', 0, "J-key-order"),
    ("keys in reverse order, dotted", '{"kwargs": {}, "params": ["x"], "method": "sub.echo", "object": "thing"}', 0,
     "J-key-order"),
    ("no whitespace", '{"object":"thing","method":"echo","params":["x"],"kwargs":{}}', 0, "J-key-order"),
    ("newlines and tabs", '\n\t{\n"object"\t:\r\n"thing" ,"method":"echo","params":["x"],"kwargs":{}\n}\n', 0,
     "J-key-order"),
    ("extra key", '{"object": "thing", "method": "echo", "params": ["x"], "kwargs": {}, "extra": 1}', 0, "F-shape"),
    ("extra key, dotted", '{"object": "thing", "method": "sub.echo", "params": ["x"], "kwargs": {}, "extra": 1}', 0,
     "F-shape"),
    ("missing kwargs", '{"object": "thing", "method": "echo", "params": ["x"]}', 0, "F-shape"),
    ("list top level", '["thing", "echo", ["x"], {}]', 0, "F-shape"),
    ("string top level", '"tecd"', 0, "F-shape"),
    ("number top level", "4", 0, "F-shape"),
    ("two objects", '{"object": "thing", "method": "echo", "params": ["x"], "kwargs": {}}'
     '{"object": "thing", "method": "sub.echo", "params": ["x"], "kwargs": {}}', 0, "F-shape"),
    ("trailing garbage", '{"object": "thing", "method": "echo", "params": ["x"], "kwargs": {}} x', 0, "F-shape"),
    ("kwargs null on a plain call", '{"object": "thing", "method": "echo", "params": ["x"], "kwargs": null}', 0, None),
    ("NaN Infinity -Infinity in params", '{"object": "thing", "method": "echo", "params": [NaN, Infinity, -Infinity, '
     '1e400, -0.0, 12345678901234567890123], "kwargs": {}}', 0, None),
    ("params a string for __getattr__", '{"object": "thing", "method": "__getattr__", "params": "value", '
     '"kwargs": null}', 0, "F-property"),
    ("params an object for __getattr__", '{"object": "thing", "method": "__getattr__", "params": {"0": "sub.echo"}, '
     '"kwargs": null}', 0, "F-property"),
    ("__getattr__ with two params", '{"object": "thing", "method": "__getattr__", "params": ["value", "sub.echo"], '
     '"kwargs": null}', 0, "F-property"),
    ("escaped __getattr__ reads params[0]", r'{"object": "thing", "method": "__g\u0065tattr__", "params": ["_private"], '
     r'"kwargs": null}', 0, "J-escape"),
    ("escaped __getattr__, clean attribute", r'{"object": "thing", "method": "__g\u0065tattr__", "params": ["value"], '
     r'"kwargs": null}', 0, "J-escape"),
    ("escaped dot in Pyro.Daemon", r'{"object": "Pyro\u002eDaemon", "method": "registered", "params": [], "kwargs": {}}',
     0, "J-escape"),
    ("batch outer name dotted", '{"object": "thing", "method": "sub.echo", "params": [["echo", [1], {}]], '
     '"kwargs": null}', FLAG_BATCH, "F-batch"),
    ("batch without the flag", '{"object": "thing", "method": "<batch>", "params": [["echo", [1], {}]], '
     '"kwargs": null}', 0, "F-batch"),
    ("batch entry an object with 3 keys", '{"object": "thing", "method": "<batch>", "params": [{"sub.echo": 1, "b": 2, '
     '"c": 3}], "kwargs": null}', FLAG_BATCH, "F-batch"),
    ("batch entry a 3-char string", '{"object": "thing", "method": "<batch>", "params": ["e.x"], "kwargs": null}',
     FLAG_BATCH, "F-batch"),
    ("batch entries escaped", r'{"object": "thing", "method": "<batch>", "params": [["\u0065cho", [1], {}], '
     r'["sub\u002Eecho", [2], {}]], "kwargs": null}', FLAG_BATCH, "J-batch-escape"),
    ("deeply nested params", '{"object": "thing", "method": "echo", "params": [' + "[" * 60 + "]" * 60
     + '], "kwargs": {}}', 0, None),
    ("object argument with __class__", '{"object": "thing", "method": "echo", "params": [{"__class__": '
     '"Pyro4.errors.CommunicationError", "__exception__": true, "args": ["x"], "attributes": {}}], "kwargs": {}}', 0,
     None),
    ("object argument of an unknown class", '{"object": "thing", "method": "echo", "params": [{"__class__": '
     '"mymodule.Point", "x": 1}], "kwargs": {}}', 0, None),
]


JSON_LEXING = [
    ("surrogate pair escapes in the object id",
     r'{"object": "th\ud83d\ude00ng", "method": "echo", "params": [], "kwargs": {}}'),
    ("high surrogate then a letter", r'{"object": "th\ud800A", "method": "echo", "params": [], "kwargs": {}}'),
    ("escaped quote and backslash in the object id",
     r'{"object": "t\"h\\ing", "method": "echo", "params": [], "kwargs": {}}'),
    ("every simple escape in the object id",
     r'{"object": "\b\f\n\r\t\/\"\\", "method": "echo", "params": [], "kwargs": {}}'),
    ("invalid escape \\x", r'{"object": "thing", "method": "ech\x6f", "params": [], "kwargs": {}}'),
    ("invalid escape \\'", r'{"object": "thing", "method": "ech\'", "params": [], "kwargs": {}}'),
    ("short \\u escape", r'{"object": "thing", "method": "sub\u02e", "params": [], "kwargs": {}}'),
    ("raw control character in the object id",
     '{"object": "th\u0001ing", "method": "echo", "params": [], "kwargs": {}}'),
    ("raw DEL and C1 characters in the object id",
     '{"object": "th\u007f\u0085ing", "method": "echo", "params": [], "kwargs": {}}'),
    ("numbers of every form", '{"object": "thing", "method": "echo", "params": [-0, 1E5, 1e-5, -1.5e+3, '
     '123456789012345678901234567890, 1.0e400], "kwargs": {}}'),
    ("leading zero number", '{"object": "thing", "method": "echo", "params": [01], "kwargs": {}}'),
    ("leading plus", '{"object": "thing", "method": "echo", "params": [+1], "kwargs": {}}'),
    ("trailing dot", '{"object": "thing", "method": "echo", "params": [1.], "kwargs": {}}'),
    ("-NaN", '{"object": "thing", "method": "echo", "params": [-NaN], "kwargs": {}}'),
    ("True (Python spelling)", '{"object": "thing", "method": "echo", "params": [True], "kwargs": {}}'),
    ("trailing comma in an array", '{"object": "thing", "method": "echo", "params": ["x",], "kwargs": {}}'),
    ("trailing comma in the object", '{"object": "thing", "method": "echo", "params": [], "kwargs": {},}'),
    ("single quotes", "{'object': 'thing', 'method': 'echo', 'params': [], 'kwargs': {}}"),
    ("form feed as whitespace", '{"object": "thing",\f"method": "echo", "params": [], "kwargs": {}}'),
    ("no-break space as whitespace", '{"object": "thing",\u00a0"method": "echo", "params": [], "kwargs": {}}'),
    ("empty key in kwargs", '{"object": "thing", "method": "echo", "params": [], "kwargs": {"": 1}}'),
    ("comment", '{"object": "thing", /* c */ "method": "echo", "params": [], "kwargs": {}}'),
    ("key equal to object only after escapes",
     r'{"object": "a", "obj\u0065ct": "thing", "method": "echo", "params": [], "kwargs": {}}'),
    ("key method with a NUL",
     r'{"object": "thing", "method\u0000": "sub.echo", "method": "echo", "params": [], "kwargs": {}}'),
    ("upper-case key", '{"object": "thing", "Method": "sub.echo", "method": "echo", "params": [], "kwargs": {}}'),
    ("very long clean name", '{"object": "thing", "method": "%s", "params": [], "kwargs": {}}' % ("e" * 300)),
]


def json_cases():
    for nlabel, token, bullet in JSON_NAMES:
        for slabel, template, flags, shape_bullets in JSON_SHAPES:
            text = template.format(n=token)
            yield ("%s: %s" % (slabel, nlabel), invoke("json", text.encode("utf-8"), flags),
                   bullet or (shape_bullets[0] if shape_bullets else None))
    for label, text, flags, bullet in JSON_WHOLE:
        yield label, invoke("json", text.encode("utf-8"), flags), bullet
    for label, text in JSON_LEXING:
        yield label, invoke("json", text.encode("utf-8")), "J-escaped-key" if "key" in label else None
    base = '{"object": "thing", "method": "%s", "params": ["x"], "kwargs": {}}'
    yield ("overlong UTF-8 dot", invoke("json", (base % "sub@echo").encode().replace(b"@", b"\xc0\xae")), "J-utf8")
    yield ("invalid UTF-8 byte", invoke("json", (base % "ech@").encode().replace(b"@", b"\xff")), "J-utf8")
    yield ("UTF-8 BOM", invoke("json", b"\xef\xbb\xbf" + (base % "echo").encode()), "J-utf8")
    yield ("UTF-16 text", invoke("json", (base % "echo").encode("utf-16")), "J-utf8")
    yield ("CESU-8 surrogate in a name", invoke("json", (base % "ech@").encode().replace(b"@", b"\xed\xa0\x80")),
           "J-utf8")


# --- marshal -------------------------------------------------------------------------------------

MARSHAL_STR_CODES = [b"z", b"Z", b"a", b"A", b"u", b"t"]
FLAG_REF = 0x80


def m_str(s, code=b"u", ref=False):
    """One marshal string object of type `code` (PROTOCOL.md §5.3)."""
    data = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s
    c = bytes([code[0] | (FLAG_REF if ref else 0)])
    if code in (b"z", b"Z"):
        return c + bytes([len(data)]) + data
    return c + struct.pack("<i", len(data)) + data


def m_tuple(items, ref=False):
    return bytes([0x29 | (FLAG_REF if ref else 0), len(items)]) + b"".join(items)


def m_list(items):
    return b"[" + struct.pack("<i", len(items)) + b"".join(items)


def m_dict(pairs):
    return b"{" + b"".join(k + v for k, v in pairs) + b"0"


def m_ref(i):
    return b"r" + struct.pack("<i", i)


M_NONE, M_EMPTY_DICT = b"N", b"{0"


def m_int(i):
    return b"i" + struct.pack("<i", i)


def m_call(obj, method, vargs, kwargs=M_EMPTY_DICT):
    return m_tuple([obj, method, vargs, kwargs])


MARSHAL_FLAGGED = [
    ("None", b"\xce"), ("True", b"\xd4"), ("False", b"\xc6"), ("Ellipsis", b"\xae"), ("StopIteration", b"\xd3"),
    ("ref", b"\xf2" + struct.pack("<i", 0)), ("int", b"\xe9" + struct.pack("<i", 5)),
    ("long", b"\xec" + struct.pack("<i", 1) + b"\x05\x00"), ("float", b"\xe7" + struct.pack("<d", 1.5)),
    ("complex", b"\xf9" + struct.pack("<dd", 1, 2)), ("bytes", b"\xf3" + struct.pack("<i", 1) + b"b"),
    ("empty small tuple", b"\xa9\x00"), ("empty tuple", b"\xa8" + struct.pack("<i", 0)),
    ("empty list", b"\xdb" + struct.pack("<i", 0)), ("empty dict", b"\xfb0"),
    ("empty set", b"\xbc" + struct.pack("<i", 0)), ("empty frozenset", b"\xbe" + struct.pack("<i", 0)),
    ("frozenset of one", b"\xbe" + struct.pack("<i", 1) + m_str("f", b"z", True)),
    ("list with a flagged child", b"\xdb" + struct.pack("<i", 1) + m_str("c", b"z", True)),
    ("small tuple with a flagged child", b"\xa9\x01" + m_str("c", b"z", True)),
    ("dict with flagged key and value", b"\xfb" + m_str("k", b"z", True) + m_str("v", b"z", True) + b"0"),
    ("empty z string", b"\xfa\x00"), ("empty u string", b"\xf5" + struct.pack("<i", 0)),
    ("old text float f", b"\xe6\x031.5"), ("old text complex x", b"\xf8\x031.5\x031.5"),
    ("int64 I", b"\xc9" + struct.pack("<q", 5)), ("stringref R", b"\xd2" + struct.pack("<i", 0)),
]


def marshal_cases():
    thing = m_str("thing", b"z")
    x_args = m_list([m_str("x", b"z")])
    for code in MARSHAL_STR_CODES:
        for ref in (False, True):
            for name in ("sub.echo", "echo", "_private", "__class__"):
                tag = "%s%s %r" % (code.decode(), "|REF" if ref else "", name)
                yield ("method as %s" % tag, invoke("marshal", m_call(thing, m_str(name, code, ref), x_args)),
                       "M-string-types")
            yield ("batch inner method as %s%s" % (code.decode(), "|REF" if ref else ""),
                   invoke("marshal", m_call(thing, m_str("<batch>", b"z"), m_list([
                       m_tuple([m_str("echo", b"z"), m_list([m_int(1)]), M_EMPTY_DICT]),
                       m_tuple([m_str("sub.echo", code, ref), m_list([m_int(2)]), M_EMPTY_DICT])]), M_NONE),
                       FLAG_BATCH), "M-string-types")
            yield ("__getattr__ attribute as %s%s" % (code.decode(), "|REF" if ref else ""),
                   invoke("marshal", m_call(thing, m_str("__getattr__", b"z"), m_list([m_str("sub.value", code, ref)]),
                                            M_NONE)), "M-string-types")
            yield ("object id as %s%s" % (code.decode(), "|REF" if ref else ""),
                   invoke("marshal", m_call(m_str("Pyro.Daemon", code, ref), m_str("registered", b"z"), m_list([]))),
                   "M-string-types")
    # Latin-1 bytes in the ASCII types: CPython does not check them.
    yield ("z with a byte >= 0x80", invoke("marshal", m_call(thing, m_str(b"\xe9cho", b"z"), x_args)), "M-string-types")
    yield ("a with a dot byte", invoke("marshal", m_call(thing, m_str(b"sub.echo", b"a"), x_args)), "M-string-types")
    # Surrogates (surrogatepass) and invalid UTF-8 in u/t.
    yield ("u with a lone surrogate", invoke("marshal", m_call(thing, m_str("ech\ud800", b"u"), x_args)), "M-surrogate")
    yield ("t with a lone surrogate", invoke("marshal", m_call(thing, m_str("ech\ud800", b"t"), x_args)), "M-surrogate")
    yield ("object id with a lone surrogate", invoke("marshal", m_call(m_str("thing\udc80", b"u"),
                                                                       m_str("echo", b"z"), x_args)), "M-surrogate")
    yield ("u with overlong UTF-8 dot", invoke("marshal", m_call(thing, m_str(b"sub\xc0\xaeecho", b"u"), x_args)),
           "M-surrogate")
    yield ("u with invalid UTF-8", invoke("marshal", m_call(thing, m_str(b"ech\xff", b"u"), x_args)), "M-surrogate")
    # Bytes as names.
    for label, s in (("clean", b"echo"), ("dotted", b"sub.echo")):
        yield ("method as s (bytes) %s" % label, invoke("marshal", m_call(thing, m_str(s, b"s"), x_args)), "M-bytes")
        yield ("attribute as s (bytes) %s" % label,
               invoke("marshal", m_call(thing, m_str("__getattr__", b"z"), m_list([m_str(s, b"s")]), M_NONE)), "M-bytes")
    # References. Index 0 is the first FLAG_REF object in decode order (containers first).
    yield ("method = ref to the object id string",
           invoke("marshal", m_call(m_str("Pyro.Daemon", b"z", True), m_ref(0), m_list([]))), "M-ref")
    yield ("method = ref to a vargs string (later: invalid)",
           invoke("marshal", m_call(thing, m_ref(0), m_list([m_str("sub.echo", b"z", True)]))), "M-ref")
    yield ("batch: entry 2 method = ref to an argument of entry 1",
           invoke("marshal", m_call(thing, m_str("<batch>", b"z"), m_list([
               m_tuple([m_str("echo", b"z"), m_list([m_str("sub.echo", b"z", True)]), M_EMPTY_DICT]),
               m_tuple([m_ref(0), m_list([m_int(2)]), M_EMPTY_DICT])]), M_NONE), FLAG_BATCH), "M-ref")
    yield ("batch: entry 2 method = ref to entry 1 method (honest interning)",
           invoke("marshal", m_call(thing, m_str("<batch>", b"z"), m_list([
               m_tuple([m_str("echo", b"Z", True), m_list([m_int(1)]), M_EMPTY_DICT]),
               m_tuple([m_ref(0), m_list([m_int(2)]), M_EMPTY_DICT])]), M_NONE), FLAG_BATCH), "M-ref")
    yield ("__getattr__ attribute = ref to the object id",
           invoke("marshal", m_call(m_str("_private", b"z", True), m_str("__getattr__", b"z"),
                                    m_list([m_ref(0)]), M_NONE)), "M-ref")
    yield ("method = ref to a key of kwargs of an earlier... (forward: invalid)",
           invoke("marshal", m_call(thing, m_ref(3), x_args)), "M-ref")
    yield ("method = ref to the call tuple itself",
           invoke("marshal", m_tuple([thing, m_ref(0), x_args, M_EMPTY_DICT], ref=True)), "M-ref")
    yield ("method = negative ref", invoke("marshal", m_call(thing, m_ref(-1), x_args)), "M-ref")
    yield ("method = ref with FLAG_REF on the tuple first",
           invoke("marshal", m_tuple([m_str("Pyro.Daemon", b"z", True), m_ref(1), m_list([]), M_EMPTY_DICT],
                                     ref=True)), "M-ref")
    # Which objects take a reference slot: in CPython FLAG_REF on None/True/False/Ellipsis/
    # StopIteration and on r itself takes none; everything else does, containers before their
    # children. A decoder that numbers slots differently reads another string through a later r.
    for xlabel, xbytes in MARSHAL_FLAGGED:
        for first, second in (("echo", "sub.echo"), ("sub.echo", "echo")):
            args = m_list([m_str("pad", b"z", True), xbytes, m_str(first, b"z", True), m_str(second, b"z", True)])
            for k in range(1, 5):
                yield ("ref slots: flagged %s before %r,%r; batch entry 2 method r(%d)" % (xlabel, first, second, k),
                       invoke("marshal", m_call(thing, m_str("<batch>", b"z"), m_list([
                           m_tuple([m_str("echo", b"z"), args, M_EMPTY_DICT]),
                           m_tuple([m_ref(k), m_list([]), M_EMPTY_DICT])]), M_NONE), FLAG_BATCH), "M-ref")
    # The call tuple takes its slot before its items (reserved, then filled).
    for top_ref in (False, True):
        for obj_name in ("value", "sub.value"):
            for k in range(3):
                yield ("ref slots: call tuple %sflagged, object %r flagged; attribute r(%d)" % (
                    "" if top_ref else "not ", obj_name, k),
                    invoke("marshal", m_tuple([m_str(obj_name, b"z", True), m_str("__getattr__", b"z", True),
                                               m_list([m_ref(k)]), M_NONE], ref=top_ref)), "M-ref")
    # Trailing bytes: marshal.loads reads one object.
    honest = m_call(thing, m_str("echo", b"z"), x_args)
    dotted = m_call(thing, m_str("sub.echo", b"z"), x_args)
    yield ("honest call then a dotted call", invoke("marshal", honest + dotted), "M-trailing")
    yield ("dotted call then an honest call", invoke("marshal", dotted + honest), "M-trailing")
    yield ("honest call then junk", invoke("marshal", honest + b"\x00junk"), "M-trailing")
    # Top-level shapes.
    yield ("list top level", invoke("marshal", m_list([thing, m_str("echo", b"z"), x_args, M_EMPTY_DICT])), "F-shape")
    yield ("list top level, dotted", invoke("marshal", m_list([thing, m_str("sub.echo", b"z"), x_args,
                                                                M_EMPTY_DICT])), "F-shape")
    yield ("( tuple with i32 count", invoke("marshal", b"(" + struct.pack("<i", 4) + thing + m_str("echo", b"z")
                                            + x_args + M_EMPTY_DICT), "F-shape")
    yield ("4-key dict top level, dotted key", invoke("marshal", m_dict([
        (thing, m_int(0)), (m_str("sub.echo", b"z"), m_int(1)), (m_str("a", b"z"), m_int(2)),
        (m_str("b", b"z"), m_int(3))])), "F-shape")
    yield ("4-char string top level", invoke("marshal", m_str("t.xy", b"z")), "F-shape")
    yield ("set top level", invoke("marshal", b"<" + struct.pack("<i", 4) + thing + m_str("sub.echo", b"z")
                                   + m_int(1) + m_int(2)), "F-shape")
    yield ("frozenset top level", invoke("marshal", b">" + struct.pack("<i", 4) + thing + m_str("sub.echo", b"z")
                                         + m_int(1) + m_int(2)), "F-shape")
    yield ("3-tuple", invoke("marshal", m_tuple([thing, m_str("echo", b"z"), x_args])), "F-shape")
    yield ("5-tuple", invoke("marshal", m_tuple([thing, m_str("echo", b"z"), x_args, M_EMPTY_DICT, M_NONE])), "F-shape")
    yield ("getattr vargs a dict with key 0", invoke("marshal", m_call(
        thing, m_str("__getattr__", b"z"), m_dict([(m_int(0), m_str("sub.echo", b"z"))]), M_NONE)), "F-property")
    yield ("getattr vargs a string", invoke("marshal", m_call(thing, m_str("__getattr__", b"z"),
                                                              m_str("value", b"z"), M_NONE)), "F-property")
    yield ("getattr vargs a tuple", invoke("marshal", m_call(thing, m_str("__getattr__", b"z"),
                                                             m_tuple([m_str("value", b"z")]), M_NONE)), "F-property")
    yield ("code object argument", invoke("marshal", marshal.dumps(
        ("thing", "echo", [compile("1", "f", "eval")], {}))), None)
    yield ("unknown type code", invoke("marshal", m_call(thing, m_str("echo", b"z"), m_list([b"\x01"]))), None)
    # Honest encodings at every marshal format version, with arguments of every marshal type.
    rich = ["x", 1, 2 ** 40, 2 ** 70, -1.5, complex(1, 2), None, True, False, b"by", (1, "t"), [2],
            {"k": "v"}, {1, 2}, frozenset(["f"]), Ellipsis, "\u00e9\U0001f600"]
    for version in range(5):
        yield ("honest call, marshal version %d" % version,
               invoke("marshal", marshal.dumps(("thing", "echo", rich, {"kw": "v"}), version)), None)
        yield ("dotted call, marshal version %d" % version,
               invoke("marshal", marshal.dumps(("thing", "sub.echo", ["x"], {}), version)), None)


# --- msgpack -------------------------------------------------------------------------------------


def p_str(s, form="fix"):
    data = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s
    n = len(data)
    if form == "fix":
        return bytes([0xA0 | n]) + data
    if form == "str8":
        return b"\xd9" + bytes([n]) + data
    if form == "str16":
        return b"\xda" + struct.pack(">H", n) + data
    if form == "str32":
        return b"\xdb" + struct.pack(">I", n) + data
    if form == "bin8":
        return b"\xc4" + bytes([n]) + data
    if form == "bin16":
        return b"\xc5" + struct.pack(">H", n) + data
    if form == "bin32":
        return b"\xc6" + struct.pack(">I", n) + data
    raise ValueError(form)


def p_array(items, form="fix"):
    n = len(items)
    head = {"fix": bytes([0x90 | n]), "array16": b"\xdc" + struct.pack(">H", n),
            "array32": b"\xdd" + struct.pack(">I", n)}[form]
    return head + b"".join(items)


def p_map(pairs, form="fix"):
    n = len(pairs)
    head = {"fix": bytes([0x80 | n]), "map16": b"\xde" + struct.pack(">H", n)}[form]
    return head + b"".join(k + v for k, v in pairs)


P_NIL, P_EMPTY_MAP = b"\xc0", b"\x80"


def msgpack_cases():
    thing = p_str("thing")
    x_args = p_array([p_str("x")])

    def call(method, vargs=x_args, kwargs=P_EMPTY_MAP, obj=thing, form="fix"):
        return p_array([obj, method, vargs, kwargs], form)

    for form in ("fix", "str8", "str16", "str32", "bin8", "bin16", "bin32"):
        bullet = "P-bin" if form.startswith("bin") else "P-str-forms"
        for name in ("sub.echo", "echo", "_private", "__class__"):
            yield ("method as %s %r" % (form, name), invoke("msgpack", call(p_str(name, form))), bullet)
        yield ("batch inner method as %s" % form, invoke("msgpack", call(p_str("<batch>"), p_array([
            p_array([p_str("echo"), p_array([b"\x01"]), P_EMPTY_MAP]),
            p_array([p_str("sub.echo", form), p_array([b"\x02"]), P_EMPTY_MAP])]), P_NIL), FLAG_BATCH), bullet)
        yield ("__getattr__ attribute as %s" % form, invoke("msgpack", call(p_str("__getattr__"),
                                                                            p_array([p_str("sub.value", form)]), P_NIL)),
               bullet)
        yield ("__getattr__ as %s, clean attribute" % form, invoke("msgpack", call(p_str("__getattr__", form),
                                                                                   p_array([p_str("value")]), P_NIL)),
               bullet)
        yield ("object id as %s" % form, invoke("msgpack", call(p_str("registered"), p_array([]),
                                                                obj=p_str("Pyro.Daemon", form))), bullet)
    for form in ("array16", "array32"):
        yield ("%s top level" % form, invoke("msgpack", call(p_str("echo"), form=form)), "P-array16")
        yield ("%s top level, dotted" % form, invoke("msgpack", call(p_str("sub.echo"), form=form)), "P-array16")
        yield ("%s batch list" % form, invoke("msgpack", call(p_str("<batch>"), p_array([
            p_array([p_str("echo"), p_array([b"\x01"]), P_EMPTY_MAP], form)], form), P_NIL), FLAG_BATCH), "P-array16")
    yield ("overlong UTF-8 dot", invoke("msgpack", call(p_str(b"sub\xc0\xaeecho"))), "P-utf8")
    yield ("invalid UTF-8 byte", invoke("msgpack", call(p_str(b"ech\xff"))), "P-utf8")
    yield ("CESU-8 surrogate", invoke("msgpack", call(p_str(b"ech\xed\xa0\x80"))), "P-utf8")
    yield ("4-byte UTF-8 in object id", invoke("msgpack", call(p_str("echo"), obj=p_str("th\U0001f600ng"))), "P-utf8")
    for code, data in ((0x30, struct.pack("dd", 1.0, 2.0)), (0x31, b"12345"), (0x01, b"sub.echo")):
        ext = b"\xc7" + bytes([len(data), code]) + data
        yield ("ext 0x%02x as method" % code, invoke("msgpack", call(ext)), "P-ext")
        yield ("ext 0x%02x as argument" % code, invoke("msgpack", call(p_str("echo"), p_array([ext]))), "P-ext")
    yield ("fixext as attribute", invoke("msgpack", call(p_str("__getattr__"), p_array([b"\xd4\x01."]), P_NIL)), "P-ext")
    yield ("nil method", invoke("msgpack", call(P_NIL)), None)
    yield ("int method", invoke("msgpack", call(b"\x05")), None)
    yield ("trailing bytes", invoke("msgpack", call(p_str("echo")) + call(p_str("sub.echo"))), "F-shape")
    yield ("4-key map top level, dotted key", invoke("msgpack", p_map([
        (thing, b"\x00"), (p_str("sub.echo"), b"\x01"), (p_str("a"), b"\x02"), (p_str("b"), b"\x03")])), "F-shape")
    yield ("map16 top level", invoke("msgpack", p_map([
        (thing, b"\x00"), (p_str("echo"), b"\x01"), (p_str("a"), b"\x02"), (p_str("b"), b"\x03")], "map16")),
           "F-shape")
    yield ("4-char string top level", invoke("msgpack", p_str("t.xy")), "F-shape")
    yield ("3-array", invoke("msgpack", p_array([thing, p_str("echo"), x_args])), "F-shape")
    yield ("5-array", invoke("msgpack", p_array([thing, p_str("echo"), x_args, P_EMPTY_MAP, P_NIL])), "F-shape")
    yield ("map with an int key", invoke("msgpack", call(p_str("echo"), kwargs=p_map([(b"\x01", b"\x02")]))), None)
    yield ("getattr vargs a string", invoke("msgpack", call(p_str("__getattr__"), p_str("value"), P_NIL)), "F-property")
    yield ("getattr vargs a map", invoke("msgpack", call(p_str("__getattr__"), p_map([(p_str("0"), p_str("x"))]),
                                                         P_NIL)), "F-property")
    yield ("setattr with one argument", invoke("msgpack", call(p_str("__setattr__"), p_array([p_str("value")]), P_NIL)),
           "F-property")
    yield ("batch entry a map with 3 keys", invoke("msgpack", call(p_str("<batch>"), p_array([p_map([
        (p_str("sub.echo"), b"\x01"), (p_str("b"), b"\x02"), (p_str("c"), b"\x03")])]), P_NIL), FLAG_BATCH),
           "F-batch")
    yield ("argument map with __class__ (exception)", invoke("msgpack", call(p_str("echo"), p_array([p_map([
        (p_str("__class__"), p_str("Pyro4.errors.PyroError")), (p_str("__exception__"), b"\xc3"),
        (p_str("args"), p_array([])), (p_str("attributes"), P_EMPTY_MAP)])]))), None)
    yield ("argument map with __class__ (unknown)", invoke("msgpack", call(p_str("echo"), p_array([p_map([
        (p_str("__class__"), p_str("mymodule.Point"))])]))), None)
    yield ("top-level map with __class__", invoke("msgpack", p_map([
        (p_str("__class__"), p_str("Pyro4.util.SerpentSerializer")), (thing, b"\x00"), (p_str("echo"), b"\x01"),
        (p_str("a"), b"\x02")])), "F-shape")
    yield ("deeply nested argument", invoke("msgpack", call(p_str("echo"), p_array([b"\x91" * 60 + b"\x90"]))), None)
    yield ("5-entry map with a duplicate key top level", invoke("msgpack", p_map([
        (thing, b"\x00"), (p_str("sub.echo"), b"\x01"), (p_str("sub.echo"), b"\x02"), (p_str("a"), b"\x03"),
        (p_str("b"), b"\x04")])), "F-shape")
    yield ("kwargs with a duplicate key", invoke("msgpack", call(p_str("echo"), kwargs=p_map([
        (p_str("x"), b"\x01"), (p_str("x"), b"\x02")]))), None)
    yield ("fixstr longer than the data", invoke("msgpack", b"\x94" + thing + b"\xa8echo"), None)
    yield ("str8 length past the end", invoke("msgpack", call(b"\xd9\x40echo")), None)
    yield ("timestamp ext -1 as method", invoke("msgpack", call(b"\xd6\xff" + struct.pack(">I", 1))), "P-ext")
    yield ("timestamp ext -1 as argument", invoke("msgpack", call(p_str("echo"), p_array(
        [b"\xd6\xff" + struct.pack(">I", 1)]))), "P-ext")
    yield ("reserved byte 0xc1", invoke("msgpack", call(p_str("echo"), p_array([b"\xc1"]))), None)
    yield ("every scalar type in args", invoke("msgpack", call(p_str("echo"), p_array([
        b"\xc2", b"\xc3", b"\x7f", b"\xe0", b"\xcc\xff", b"\xcd\xff\xff", b"\xce" + b"\xff" * 4,
        b"\xcf" + b"\xff" * 8, b"\xd0\x80", b"\xd1\x80\x00", b"\xd2\x80" + b"\x00" * 3, b"\xd3\x80" + b"\x00" * 7,
        b"\xca" + struct.pack(">f", 1.5), b"\xcb" + struct.pack(">d", 2.5)]))), None)
    yield ("batch of 70 with str16 names, the last dotted", invoke("msgpack", call(p_str("<batch>"), p_array(
        [p_array([p_str("echo", "str16"), p_array([]), P_EMPTY_MAP])] * 69
        + [p_array([p_str("sub.echo", "str16"), p_array([]), P_EMPTY_MAP])], "array16"), P_NIL), FLAG_BATCH),
           "P-str-forms")
    yield ("batch of 70 clean", invoke("msgpack", call(p_str("<batch>"), p_array(
        [p_array([p_str("echo"), p_array([]), P_EMPTY_MAP])] * 70, "array16"), P_NIL), FLAG_BATCH), "F-batch")
    yield ("very long clean name", invoke("msgpack", call(p_str("e" * 300, "str16"))), "P-str-forms")


# --- frame-level places, every serializer -----------------------------------------------------------


def frame_cases(ser):
    echo = encode_call(ser, "thing", "echo", ["x"], {})
    dotted = encode_call(ser, "thing", "sub.echo", ["x"], {})
    blob_payload = encode_call(ser, "thing", "blob", {"k": [1]}, {})
    K, B, C = FLAG_KEEPSERIALIZED, FLAG_BATCH, FLAG_COMPRESSED
    # F-blbi: names come from BLBI only.
    yield "BLBI names sub.echo, honest payload", invoke(ser, blob_payload, K, ann(b"BLBI", blbi("sub.echo"))), "F-blbi"
    yield "BLBI names blob, honest payload", invoke(ser, blob_payload, K, ann(b"BLBI", blbi("blob"))), "F-blbi"
    yield "BLBI names blob, dotted payload", invoke(ser, dotted, K, ann(b"BLBI", blbi("blob"))), "F-blbi"
    yield "BLBI names _private", invoke(ser, blob_payload, K, ann(b"BLBI", blbi("_private"))), "F-blbi"
    yield "BLBI names __getattr__", invoke(ser, blob_payload, K, ann(b"BLBI", blbi("__getattr__"))), "F-blbi"
    yield "BLBI names __class__", invoke(ser, blob_payload, K, ann(b"BLBI", blbi("__class__"))), "F-blbi"
    yield "BLBI method bytes", invoke(ser, blob_payload, K, ann(b"BLBI", blbi(b"blob"))), "F-blbi"
    yield "BLBI object Pyro.Daemon", invoke(ser, blob_payload, K, ann(b"BLBI", blbi("registered", "Pyro.Daemon"))), \
        "F-blbi"
    yield "BLBI, garbage payload", invoke(ser, b"\x00\xffgarbage", K, ann(b"BLBI", blbi("blob"))), "F-blbi"
    yield "BLBI dotted, garbage payload", invoke(ser, b"\x00\xffgarbage", K, ann(b"BLBI", blbi("sub.echo"))), "F-blbi"
    yield "BLBI, pickle payload", invoke(ser, pickle.dumps(("thing", "blob", (), {})), K,
                                         ann(b"BLBI", blbi("blob"))), "F-blbi"
    yield "BLBI, empty payload", invoke(ser, b"", K, ann(b"BLBI", blbi("blob"))), "F-blbi"
    yield "BLBI with COMPRESSED and a non-zlib payload", invoke(ser, b"not zlib", K | C, ann(b"BLBI", blbi("blob"))), \
        "F-blbi"
    yield "BLBI with COMPRESSED, dotted", invoke(ser, zlib.compress(blob_payload), K | C,
                                                 ann(b"BLBI", blbi("sub.echo"))), "F-blbi"
    yield "BLBI with BATCH", invoke(ser, blob_payload, K | B, ann(b"BLBI", blbi("blob"))), "F-blbi"
    yield "KEEPSERIALIZED without BLBI", invoke(ser, blob_payload, K), "F-blbi"
    yield "BLBI as a list", invoke(ser, blob_payload, K, ann(b"BLBI", marshal.dumps(["i", "thing", "sub.echo"]))), \
        "F-blbi"
    yield "BLBI a 4-tuple", invoke(ser, blob_payload, K, ann(b"BLBI", marshal.dumps(("i", "thing", "blob", "x")))), \
        "F-blbi"
    yield "BLBI a 3-char string", invoke(ser, blob_payload, K, ann(b"BLBI", marshal.dumps("i.b"))), "F-blbi"
    yield "BLBI with trailing bytes", invoke(ser, blob_payload, K, ann(
        b"BLBI", blbi("blob") + blbi("sub.echo"))), "F-blbi"
    yield "BLBI method as a ref to info", invoke(ser, blob_payload, K, ann(b"BLBI", m_tuple(
        [m_str("sub.echo", b"z", True), m_str("thing", b"z"), m_ref(0)]))), "F-blbi"
    yield "BLBI method as u with an escape-free dot", invoke(ser, blob_payload, K, ann(b"BLBI", m_tuple(
        [m_str("i", b"z"), m_str("thing", b"z"), m_str("sub.echo", b"t", True)]))), "F-blbi"
    yield "BLBI not marshal", invoke(ser, blob_payload, K, ann(b"BLBI", b"garbage")), "F-blbi"
    yield "BLBI next to user annotations", invoke(ser, blob_payload, K, ann(b"XTRA", b"1") + ann(
        b"BLBI", blbi("blob")) + ann(b"CORR", b"\x01" * 16)), "F-blbi"
    # F-blbi-duplicate: the daemon keeps the last chunk.
    yield "duplicate BLBI, last dotted", invoke(ser, blob_payload, K, ann(b"BLBI", blbi("blob")) + ann(
        b"BLBI", blbi("sub.echo"))), "F-blbi-duplicate"
    yield "duplicate BLBI, last clean", invoke(ser, blob_payload, K, ann(b"BLBI", blbi("sub.echo")) + ann(
        b"BLBI", blbi("blob"))), "F-blbi-duplicate"
    # F-blbi-without-flag: BLBI ignored, payload decides.
    yield "BLBI dotted without the flag, honest payload", invoke(ser, echo, 0, ann(b"BLBI", blbi("sub.echo"))), \
        "F-blbi-without-flag"
    yield "BLBI clean without the flag, dotted payload", invoke(ser, dotted, 0, ann(b"BLBI", blbi("echo"))), \
        "F-blbi-without-flag"
    yield "BLBI garbage without the flag", invoke(ser, echo, 0, ann(b"BLBI", b"garbage")), "F-blbi-without-flag"
    # F-batch: the outer name is ignored.
    for outer in ("<batch>", "sub.echo", "_private", "echo"):
        for inner in (["echo", "echo"], ["echo", "sub.echo"], ["__class__"]):
            payload = encode_call(ser, "thing", outer, [[m, [i], {}] for i, m in enumerate(inner)], None)
            yield "BATCH outer %r inner %r" % (outer, inner), invoke(ser, payload, B), "F-batch"
    yield "BATCH|ONEWAY inner dotted", invoke(ser, encode_call(ser, "thing", "<batch>", [["sub.echo", [1], {}]],
                                                               None), B | FLAG_ONEWAY), "F-batch"
    yield "<batch> without the flag", invoke(ser, encode_call(ser, "thing", "<batch>", [["echo", [1], {}]], None)), \
        "F-batch"
    yield "BATCH flag on a plain call", invoke(ser, echo, B), "F-batch"
    # F-compressed.
    yield "COMPRESSED honest", invoke(ser, zlib.compress(echo), C), "F-compressed"
    yield "COMPRESSED dotted", invoke(ser, zlib.compress(dotted), C), "F-compressed"
    yield "COMPRESSED level 0 dotted", invoke(ser, zlib.compress(dotted, 0), C), "F-compressed"
    yield "COMPRESSED level 9 honest", invoke(ser, zlib.compress(echo, 9), C), "F-compressed"
    yield "COMPRESSED twice", invoke(ser, zlib.compress(zlib.compress(echo)), C), "F-compressed"
    yield "COMPRESSED with trailing bytes after the stream", invoke(ser, zlib.compress(echo) + b"trailing", C), \
        "F-compressed"
    yield "COMPRESSED honest + a second stream", invoke(ser, zlib.compress(echo) + zlib.compress(dotted), C), \
        "F-compressed"
    yield "COMPRESSED flag on a plain payload", invoke(ser, echo, C), "F-compressed"
    yield "COMPRESSED raw deflate", invoke(ser, zlib.compress(echo)[2:-4], C), "F-compressed"
    yield "COMPRESSED truncated", invoke(ser, zlib.compress(echo)[:-3], C), "F-compressed"
    yield "COMPRESSED batch inner dotted", invoke(ser, zlib.compress(encode_call(
        ser, "thing", "<batch>", [["echo", [1], {}], ["sub.echo", [2], {}]], None)), C | B), "F-compressed"
    yield "COMPRESSED __getattr__ dotted", invoke(ser, zlib.compress(encode_call(
        ser, "thing", "__getattr__", ["sub.value"], None)), C), "F-compressed"
    yield "COMPRESSED CONNECT", connect(ser, zlib.compress(encode_data(ser, {"handshake": "hello", "object": "thing"})),
                                       FLAG_META_ON_CONNECT | C), "F-compressed"
    # F-property: vargs[0] of __getattr__/__setattr__.
    for attr in ("value", "sub.value", "_private", "__class__", "__dict__", "va lue", ""):
        yield "__getattr__ %r" % attr, invoke(ser, encode_call(ser, "thing", "__getattr__", [attr], None)), \
            "F-property"
        yield "__setattr__ %r" % attr, invoke(ser, encode_call(ser, "thing", "__setattr__", [attr, 7], None)), \
            "F-property"
    yield "__getattr__ with kwargs", invoke(ser, encode_call(ser, "thing", "__getattr__", ["value"], {"k": 1})), \
        "F-property"
    yield "__getattr__ of a non-str", invoke(ser, encode_call(ser, "thing", "__getattr__", [5], None)), "F-property"
    yield "__setattr__ with three args", invoke(ser, encode_call(ser, "thing", "__setattr__", ["value", 1, 2], None)), \
        "F-property"
    # Other header places the daemon ignores.
    for flags in (0x01, 0x20, 0x80, 0x8000, 0x10):
        yield "unknown/reply-only flag 0x%x, honest" % flags, invoke(ser, echo, flags), None
        yield "unknown/reply-only flag 0x%x, dotted" % flags, invoke(ser, dotted, flags), None
    yield "user annotations, honest", invoke(ser, echo, 0, ann(b"XTRA", b"v") + ann(b"CORR", b"\x02" * 16)), None
    yield "annotation overrunning its block", invoke(ser, echo, 0, ann(b"XTRA", b"v")[:-1] + b"\x00\x10" + b"abc"), None
    yield "non-ASCII annotation key", invoke(ser, echo, 0, ann(b"X\xffRA", b"v")), None
    yield "HMAC annotation (daemon has no key)", invoke(ser, echo, 0, ann(b"HMAC", b"\x00" * 20)), None
    # CONNECT (object id for metadata, PROTOCOL.md §4.1).
    for label, data, flags in (
            ("honest", {"handshake": "hello", "object": "thing"}, FLAG_META_ON_CONNECT),
            ("without META_ON_CONNECT", {"handshake": "hello"}, 0),
            ("object Pyro.Daemon", {"handshake": "hello", "object": "Pyro.Daemon"}, FLAG_META_ON_CONNECT),
            ("object dotted", {"handshake": "hello", "object": "sub.thing"}, FLAG_META_ON_CONNECT),
            ("extra key", {"handshake": "hello", "object": "thing", "x": 1}, FLAG_META_ON_CONNECT),
            ("no handshake", {"object": "thing"}, FLAG_META_ON_CONNECT),
            ("META flag without object", {"handshake": "hello"}, FLAG_META_ON_CONNECT),
            ("object without META flag", {"handshake": "hello", "object": "thing"}, 0),
            ("object not a str", {"handshake": "hello", "object": 5}, FLAG_META_ON_CONNECT),
            ("a list", ["handshake", "object"], FLAG_META_ON_CONNECT),
            ("handshake a dict", {"handshake": {"token": "t", "n": [1]}, "object": "thing"}, FLAG_META_ON_CONNECT)):
        yield "CONNECT %s" % label, connect(ser, encode_data(ser, data), flags), None
    yield "PING with serializer 42", pyro4_frame(MSG_PING, b"ping", serializer_id=42), None
    yield "PING with this serializer and a dotted payload", pyro4_frame(MSG_PING, dotted, serializer_id=SER_IDS[ser]), \
        None
    yield "RESULT from a client", pyro4_frame(5, echo, serializer_id=SER_IDS[ser], seq=1), None


def generated_cases():
    per_serializer = {"serpent": serpent_cases, "json": json_cases, "marshal": marshal_cases,
                      "msgpack": msgpack_cases}
    cases = []
    for ser in SAFE:
        for label, raw, bullet in per_serializer[ser]():
            cases.append(Case("%s | %s" % (ser, label), ser, "generated", raw, bullet))
        for label, raw, bullet in frame_cases(ser):
            cases.append(Case("%s | frame | %s" % (ser, label), ser, "generated", raw, bullet))
    # The serializer gate: the daemon must never decode pickle & co (refused by id, §2.5).
    for ser, data in (("pickle", pickle.dumps(("thing", "echo", ("x",), {}))),
                      ("dill", pickle.dumps(("thing", "echo", ("x",), {}))),
                      ("cloudpickle", pickle.dumps(("thing", "echo", ("x",), {})))):
        cases.append(Case("%s | honest call" % ser, ser, "generated", invoke(ser, data)))
    cases.append(Case("serpent payload under the json id", "json", "generated",
                      invoke("json", serpent.dumps(("thing", "echo", ("x",), {})))))
    return cases


# --- seeded mutants ------------------------------------------------------------------------------

# Byte-level mutants of the frames above (payload, sometimes annotations), a fixed seed so every run
# judges the same frames. Not marshal: CPython's marshal.loads allocates what a mutated count
# declares (gigabytes) before failing, which a test process must not do.
MUTANT_SERIALIZERS = ["serpent", "json", "msgpack"]
MUTANTS_PER_SERIALIZER = 400
_MUTANT_TOKENS = [b"\\x2e", b"\\u002e", b".", b"\\056", b"' '", b"\\\n", b"_", b"__", b"r'", b"u'", b"'''",
                  b"\\N{FULL STOP}", b"\xc0\xae", b"\xda\x00\x08", b"\xd9\x08", b"#", b"\"", b"\\"]


def _mutate(rnd, data, text):
    data = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        if not data:
            data = bytearray(b"x")
        i = rnd.randrange(len(data))
        op = rnd.random()
        if op < 0.3:
            data[i] = rnd.randrange(256)
        elif op < 0.5:
            data[i:i] = bytes([rnd.choice(b"\\'\"#\n\r\t .,()[]{}xuUN0123456789abcdef" if text else range(256))])
        elif op < 0.6:
            del data[i]
        elif op < 0.75:
            j = rnd.randrange(len(data))
            data[i:i] = data[j:j + rnd.randint(1, 12)]
        elif op < 0.85:
            data[i] ^= 1 << rnd.randrange(8)
        else:
            data[i:i] = rnd.choice(_MUTANT_TOKENS)
    return bytes(data)


def mutant_cases(bases):
    rnd = random.Random(4082)
    cases = []
    for ser in MUTANT_SERIALIZERS:
        pool = [c for c in bases if c.serializer == ser and len(c.raw) < 3000]
        for n in range(MUTANTS_PER_SERIALIZER):
            base = rnd.choice(pool)
            _m, _v, typ, flags, seq, _dl, sid, al, _r, _cs = struct.unpack_from("!4sHHHHiHHHH", base.raw)
            ann_block, payload = base.raw[24:24 + al], base.raw[24 + al:]
            if ann_block and rnd.random() < 0.1:
                ann_block = _mutate(rnd, ann_block, False)
            else:
                payload = _mutate(rnd, payload, ser != "msgpack")
            cases.append(Case("%s | mutant %d of %s" % (ser, n, base.label), ser, "mutant",
                              pyro4_frame(typ, payload, serializer_id=sid, flags=flags, seq=seq,
                                          annotations=ann_block)))
    return cases


# --- honest corpus -------------------------------------------------------------------------------


def honest_cases():
    cases = []
    for origin, root in (("vector", VECTORS), ("captured", CAPTURED)):
        for ser in SAFE:
            for path in sorted((root / ser).glob("*/*_c2s_*.bin")):
                scenario = path.parent.name
                cases.append(Case("%s | %s/%s" % (origin, scenario, path.name), ser, origin, path.read_bytes(),
                                  scenario=scenario))
    return cases


# --- running both sides ----------------------------------------------------------------------------


def run_inspect(cases, workdir, batch=400, extra=()):
    """`pyroguard inspect [extra] FRAME...` over every case, in batches; fills case.pg."""
    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, case in enumerate(cases):
        p = workdir / ("f%05d.bin" % i)
        p.write_bytes(case.raw)
        paths.append(str(p))
    results = {}
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        proc = subprocess.run([str(PYROGUARD_BIN), "inspect"] + list(extra) + chunk,
                              capture_output=True, timeout=120)
        assert proc.returncode == 0, "pyroguard inspect failed (%s): %s" % (proc.returncode, proc.stderr[-2000:])
        for line in proc.stdout.decode().splitlines():
            d = json.loads(line)
            results[d["file"]] = d
    missing = [p for p in paths if p not in results]
    assert not missing, "pyroguard inspect printed nothing for %d files, e.g. %s" % (len(missing), missing[:3])
    for case, p in zip(cases, paths):
        case.pg = results[p]


def compare(case):
    """Fill case.outcome: agree-allow, agree-refuse, refused-only (pyroguard refuses, the daemon
    would have resolved only clean names) or MISMATCH (pyroguard allows something else than the
    daemon reads), with case.problem saying what differs."""
    pg, py = case.pg, case.py
    if pg["verdict"] != "allow":
        case.outcome = "refused-only" if py.ok and not py.problems() else "agree-refuse"
        return
    problems = []
    if not py.ok:
        problems.append("the daemon does not get as far as resolving names: %s (%s)" % (py.stage, py.error))
    else:
        if py.problems():
            problems.append("allowed although the daemon resolves %r" % (py.problems(),))
        if py.has_object:
            if py.connect_error:
                want = None
            else:
                want = render(py.object, OBJECT_RENDER_LEN) if isinstance(py.object, str) else repr(py.object)
            if pg.get("object") != want:
                problems.append("object %r, the daemon's is %r" % (pg.get("object"), want))
        want_names = [(k, render(v, NAME_RENDER_LEN) if isinstance(v, str) else repr(v)) for k, v in py.names]
        got = list(zip(pg.get("kinds", []), pg.get("names", [])))
        shown = want_names[:64]
        if got != shown or pg.get("names_not_shown", 0) != len(want_names) - len(shown):
            problems.append("names %r, the daemon resolves %r" % (got, want_names))
    case.outcome = "MISMATCH" if problems else "agree-allow"
    case.problem = "; ".join(problems) or None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if not PYROGUARD_BIN.exists():
        pytest.fail("pyroguard binary not found at %s (run `make`, or set PYROGUARD_BIN)" % PYROGUARD_BIN)
    cases = honest_cases() + generated_cases()
    cases += mutant_cases(cases)
    run_inspect(cases, tmp_path_factory.mktemp("frames"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # literal_eval on odd escapes ("\\q")
        for case in cases:
            case.py = daemon_view(case.raw)
            compare(case)
    return cases


def describe(case):
    return "%s\n    frame %s\n    pyroguard: %s\n    daemon:    %r" % (
        case.label, case.raw[:400].hex(), json.dumps({k: v for k, v in case.pg.items() if k != "file"}), case.py)


def placeholder_note(cases):
    stubs = sorted({c.serializer for c in cases if "not written yet" in (c.pg.get("detail") or "")})
    return ("\n(decoders still placeholders: %s)" % ", ".join(stubs)) if stubs else ""


# --- the tests ---------------------------------------------------------------------------------------


def test_differential_counts_table(corpus, capsys):
    """Prints agree / refused-by-pyroguard-only counts per serializer and origin (always shown)."""
    table = defaultdict(Counter)
    for c in corpus:
        table[(c.serializer, c.origin)][c.outcome] += 1
    cols = ["agree-allow", "agree-refuse", "refused-only", "MISMATCH"]
    lines = ["", "pyroguard inspect vs the Pyro4 4.82 daemon's own decoding (%d frames)" % len(corpus),
             "%-12s %-10s %s" % ("serializer", "origin", " ".join("%13s" % c for c in cols))]
    for key in sorted(table):
        lines.append("%-12s %-10s %s" % (key[0], key[1], " ".join("%13d" % table[key][c] for c in cols)))
    total = Counter(c.outcome for c in corpus)
    lines.append("%-23s %s" % ("total", " ".join("%13d" % total[c] for c in cols)))
    review = [c for c in corpus if c.outcome == "refused-only" and c.origin == "generated"]
    n_mutants = sum(1 for c in corpus if c.outcome == "refused-only" and c.origin == "mutant")
    lines.append("")
    lines.append("refused by pyroguard only, the daemon would have resolved clean names (review; %d generated, "
                 "%d mutants not listed):" % (len(review), n_mutants))
    for c in review:
        lines.append("  %-70s %s: %s" % (c.label[:70], c.pg.get("reason"), (c.pg.get("detail") or "")[:90]))
    later = [c for c in corpus if c.outcome == "agree-allow" and c.origin == "generated"
             and (c.py.connect_error or c.py.args_error or c.py.hmac)]
    lines.append("")
    lines.append("allowed with the daemon's names, the daemon then refuses or checks it itself (%d):" % len(later))
    for c in later:
        lines.append("  %-70s %s" % (c.label[:70], c.py.connect_error or c.py.args_error or "HMAC check (key-dependent)"))
    lines.append(placeholder_note(corpus))
    with capsys.disabled():
        print("\n".join(lines))


def test_no_frame_is_allowed_with_names_other_than_the_daemons(corpus):
    bad = [c for c in corpus if c.outcome == "MISMATCH"]
    assert not bad, "%d frame(s) allowed with names the daemon does not resolve that way:\n%s" % (
        len(bad), "\n".join("%s\n    => %s" % (describe(c), c.problem) for c in bad))


def test_every_dotted_private_or_invalid_name_the_daemon_would_resolve_is_refused(corpus):
    missed = [c for c in corpus if c.py.ok and c.py.problems() and c.pg["verdict"] == "allow"]
    assert not missed, "\n".join(describe(c) for c in missed)


def test_honest_traffic_from_real_clients_is_never_refused(corpus):
    honest = [c for c in corpus if c.honest and c.scenario not in BAD_NAME_SCENARIOS]
    assert len(honest) > 300, "the honest corpus is missing (tests/vectors/pyro4, tests/vectors/pyro4-captured)"
    refused = [c for c in honest if c.pg["verdict"] != "allow"]
    assert not refused, "%d honest frame(s) refused:\n%s%s" % (
        len(refused), "\n".join(describe(c) for c in refused), placeholder_note(refused))


def test_honest_frames_are_decoded_by_the_reference_as_the_daemon_did(corpus):
    # The reference must itself read every captured frame (the daemon answered all of them).
    unread = [c for c in corpus if c.honest and not c.py.ok]
    assert not unread, "\n".join(describe(c) for c in unread)


def test_real_clients_dotted_and_private_calls_are_refused_by_the_name_rule(corpus):
    bad = [c for c in corpus if c.honest and c.scenario in BAD_NAME_SCENARIOS]
    # Every serializer's INVOKE of each such scenario (the CONNECTs before them pass).
    invokes = [c for c in bad if c.py.msg_type == MSG_INVOKE]
    assert {(c.serializer, c.scenario) for c in invokes} == {(s, n) for s in SAFE for n in BAD_NAME_SCENARIOS}
    wrong = [c for c in invokes if c.pg["verdict"] != "refuse" or c.pg.get("reason") not in NAME_REASONS]
    assert not wrong, "\n".join(describe(c) for c in wrong)
    connects = [c for c in bad if c.py.msg_type != MSG_INVOKE]
    assert all(c.pg["verdict"] == "allow" for c in connects), "\n".join(
        describe(c) for c in connects if c.pg["verdict"] != "allow")


def test_every_section_9_item_has_generated_variants_for_its_serializer(corpus):
    have = defaultdict(set)
    for c in corpus:
        if c.bullet:
            have[c.serializer].add(c.bullet)
    missing = []
    for ser in SAFE:
        for bullet in list(BULLETS[ser]) + list(BULLETS["frame"]):
            if bullet not in have[ser]:
                missing.append((ser, bullet))
    assert not missing, missing
