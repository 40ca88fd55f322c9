"""Pyro5 wire format (protocol 502) for the tests: build, split and decode Pyro5 messages.

The Pyro4 helpers live in conftest.py (pyro4_frame, parse_pyro4_frames); this module is the Pyro5
counterpart, kept apart because Pyro5 renumbered the flags and serializer ids and replaced the
checksum with a magic number (PROTOCOL.md §3). It is plain Python (stdlib + Debian's python3-serpent
and python3-msgpack) so that both the tests and fake_pyro5_daemon.py can import it.

What is here:
  * constants: header layout, message types (§2.3), Pyro5 flags (§3.2), serializer ids (§3.3);
  * pyro5_frame / annotation_chunk: build a message, any header field forceable to a wrong value;
  * parse_pyro5_frames: split a byte stream into frames (tolerant, for looking at captures);
  * check_header / parse_annotations: the strict checks a Pyro5 5.17 receiver applies (§3.1, §3.4),
    used by the fake daemon;
  * connect_payload / invoke_payload / batch_payload: payloads byte-for-byte as a Pyro5 5.17 client
    encodes them (checked against tests/vectors/pyro5 by test_pyro5_tools.py);
  * encode_value / decode_payload / decode_call: the serializers' dumps/loads as the daemon uses them;
  * read_vector5: a captured message from tests/vectors/pyro5.
"""

import datetime
import json
import marshal
import struct
import sys
import uuid
import zlib
from pathlib import Path

import msgpack
import serpent

VECTORS5 = Path(__file__).resolve().parents[1] / "vectors" / "pyro5"

# --- constants (PROTOCOL.md §2.3, §3.1-§3.3) ----------------------------------------------------

HEADER5 = struct.Struct("!4sHBBHHII16sHH")  # tag, version, type, ser, flags, seq, data, ann, corr, res, magic
HEADER5_SIZE = HEADER5.size  # 40
PROTOCOL_VERSION5 = 502
MAGIC5 = 0x4DC5
EMPTY_CORR_ID = b"\0" * 16
MAX_MESSAGE_SIZE5 = 1073741824  # Pyro5 config.MAX_MESSAGE_SIZE default (§3.1)

MSG_CONNECT, MSG_CONNECTOK, MSG_CONNECTFAIL, MSG_INVOKE, MSG_RESULT, MSG_PING = 1, 2, 3, 4, 5, 6
MSG_NAMES = {1: "CONNECT", 2: "CONNECTOK", 3: "CONNECTFAIL", 4: "INVOKE", 5: "RESULT", 6: "PING"}

# Pyro5 renumbered the flags (§3.2): do not mix them up with conftest's Pyro4 FLAG_* values.
FLAG_EXCEPTION = 0x01
FLAG_COMPRESSED = 0x02
FLAG_ONEWAY = 0x04
FLAG_BATCH = 0x08
FLAG_ITEMSTREAMRESULT = 0x10
FLAG_KEEPSERIALIZED = 0x20
FLAG_CORR_ID = 0x40

SER_IDS5 = {"serpent": 1, "marshal": 2, "json": 3, "msgpack": 4}  # §3.3 (Pyro4 numbers differ)
SER_NAMES5 = {v: k for k, v in SER_IDS5.items()}
SERIALIZERS5 = tuple(SER_IDS5)

# A Pyro5 client pings with serializer id 42 and the server echoes it (captures */ping/01_*_PING).
PING_SERIALIZER_ID = 42


class ProtocolError(Exception):
    """What Pyro5 raises (errors.ProtocolError) for a message it refuses to frame."""


def ser_name(ser):
    """'serpent' for 'serpent' or 1, and so on; KeyError for anything else."""
    return ser if isinstance(ser, str) and ser in SER_IDS5 else SER_NAMES5[ser]


# --- building messages --------------------------------------------------------------------------


def _ascii(key):
    return key.encode("ascii") if isinstance(key, str) else bytes(key)


def annotation_chunk(key, value, length=None):
    """One Pyro5 annotation chunk: 4-byte key, u32 length, value (§3.4). Neither the key's size
    nor `length` (default: len(value)) is checked, so a test can build a malformed chunk."""
    value = bytes(value)
    return _ascii(key) + struct.pack("!I", len(value) if length is None else length) + value


def annotations_block(annotations):
    """The annotation bytes of a message: `annotations` is raw bytes, or a list of (key, value)
    pairs (a dict's items work too), encoded in order."""
    if isinstance(annotations, (bytes, bytearray, memoryview)):
        return bytes(annotations)
    if isinstance(annotations, dict):
        annotations = annotations.items()
    return b"".join(annotation_chunk(k, v) for k, v in annotations)


def pyro5_frame(msg_type, payload=b"", serializer_id=1, flags=0, seq=0, annotations=b"",
                corr_id=EMPTY_CORR_ID, version=PROTOCOL_VERSION5, magic=MAGIC5, data_length=None,
                ann_length=None, reserved=0, tag=b"PYRO"):
    """Build one Pyro5 message (header + annotations + payload, §3.1). Every header field can be
    forced to a wrong value (data_length / ann_length default to the real sizes) for evasion
    tests. The payload is used as given: compress it yourself (compress_payload) with
    FLAG_COMPRESSED."""
    ann = annotations_block(annotations)
    dl = len(payload) if data_length is None else data_length
    al = len(ann) if ann_length is None else ann_length
    hdr = HEADER5.pack(tag, version, msg_type, serializer_id, flags, seq, dl, al, corr_id, reserved, magic)
    return hdr + ann + bytes(payload)


def compress_payload(payload):
    """zlib level 4, what a Pyro5 sender with COMPRESSION=True uses for payloads > 100 bytes (§3.3)."""
    return zlib.compress(payload, 4)


# --- reading messages ---------------------------------------------------------------------------


def split_annotations(block):
    """Tolerant split of an annotation block into [(key, value)] (keys as str when ASCII, else
    bytes). Returns (pairs, ok): ok is False when a chunk header or value overruns the block,
    in which case the pairs hold the chunks before the bad one."""
    pairs = []
    i = 0
    while i < len(block):
        if len(block) - i < 8:
            return pairs, False
        key = block[i:i + 4]
        (length,) = struct.unpack_from("!I", block, i + 4)
        if i + 8 + length > len(block):
            return pairs, False
        try:
            key = key.decode("ascii")
        except UnicodeDecodeError:
            key = bytes(key)
        pairs.append((key, bytes(block[i + 8:i + 8 + length])))
        i += 8 + length
    return pairs, True


def parse_pyro5_frames(data):
    """Split a byte stream into Pyro5 frames, like conftest.parse_pyro4_frames: a list of dicts
    with tag, version, type, serializer_id, flags, seq, data_length, ann_length, corr_id,
    reserved, magic, annotations ([(key, value)], in wire order, duplicates kept),
    annotations_ok, annotation_bytes, payload (as on the wire, still compressed if it was) and
    raw. Wrong version or magic are reported, not refused (the frames a test built on purpose
    stay visible). A tail that is not a whole frame, or does not start with b"PYRO", is returned
    as {"partial": bytes} and ends the list."""
    frames = []
    pos = 0
    data = bytes(data)
    while pos < len(data):
        if len(data) - pos < HEADER5_SIZE or data[pos:pos + 4] != b"PYRO":
            frames.append({"partial": data[pos:]})
            break
        tag, ver, typ, ser, flags, seq, dl, al, corr, res, magic = HEADER5.unpack_from(data, pos)
        start = pos + HEADER5_SIZE
        end = start + al + dl
        if end > len(data):
            frames.append({"partial": data[pos:]})
            break
        block = data[start:start + al]
        pairs, ok = split_annotations(block)
        frames.append({
            "tag": tag, "version": ver, "type": typ, "serializer_id": ser, "flags": flags,
            "seq": seq, "data_length": dl, "ann_length": al, "corr_id": corr, "reserved": res,
            "magic": magic, "annotations": pairs, "annotations_ok": ok, "annotation_bytes": block,
            "payload": data[start + al:end], "raw": data[pos:end],
        })
        pos = end
    return frames


def frame_payload(frame):
    """A parsed frame's payload, decompressed when FLAG_COMPRESSED is set (Pyro5 decompresses at
    receive time, for every message type: §3.1)."""
    if frame["flags"] & FLAG_COMPRESSED:
        return zlib.decompress(frame["payload"])
    return frame["payload"]


def rebuild_frame(frame):
    """pyro5_frame() called with every field of a parsed frame: gives back frame["raw"] exactly."""
    return pyro5_frame(frame["type"], frame["payload"], serializer_id=frame["serializer_id"],
                       flags=frame["flags"], seq=frame["seq"], annotations=frame["annotations"],
                       corr_id=frame["corr_id"], version=frame["version"], magic=frame["magic"],
                       data_length=frame["data_length"], ann_length=frame["ann_length"],
                       reserved=frame["reserved"], tag=frame["tag"])


# --- the strict checks of a Pyro5 5.17 receiver (used by fake_pyro5_daemon.py) -------------------


def check_tag_and_version(first6):
    """Pyro5 reads 6 bytes first and checks them before reading the rest (§3.1)."""
    if not first6.startswith(b"PYRO"):
        raise ProtocolError("invalid data")
    version = int.from_bytes(first6[4:6], "big")
    if version != PROTOCOL_VERSION5:
        raise ProtocolError("invalid protocol version: %d" % version)


def check_header(header):
    """Unpack a 40-byte header the way Pyro5 5.17 does (§3.1): tag, version and magic must be
    right, payload + annotations at most MAX_MESSAGE_SIZE. Returns a dict of the fields;
    raises ProtocolError."""
    tag, ver, typ, ser, flags, seq, dl, al, corr, res, magic = HEADER5.unpack(header)
    if tag != b"PYRO" or ver != PROTOCOL_VERSION5 or magic != MAGIC5:
        raise ProtocolError("invalid message or protocol version")
    if dl + al > MAX_MESSAGE_SIZE5:
        raise ProtocolError("message too large (%d, max=%d)" % (dl + al, MAX_MESSAGE_SIZE5))
    return {"type": typ, "serializer_id": ser, "flags": flags, "seq": seq, "data_length": dl,
            "ann_length": al, "corr_id": corr}


def parse_annotations(block):
    """The annotation block as Pyro5 5.17 reads it (§3.4): a chunk that overruns the block, or a
    block not consumed exactly, is a ProtocolError; a key must be ASCII; duplicates: last wins.
    Returns a dict key -> bytes."""
    annotations = {}
    i = 0
    while i < len(block):
        if len(block) - i < 8:
            raise ProtocolError("annotation chunk header overruns the annotations block")
        key = bytes(block[i:i + 4]).decode("ascii")  # UnicodeDecodeError, as in Pyro5
        length = int.from_bytes(block[i + 4:i + 8], "big")
        if i + 8 + length > len(block):
            raise ProtocolError("annotation chunk overruns the annotations block")
        annotations[key] = bytes(block[i + 8:i + 8 + length])
        i += 8 + length
    return annotations


# --- payload encoders, as a Pyro5 5.17 client writes them (§4.2, §5) -----------------------------


def _not_interned(s):
    """A fresh, non-interned copy of a str (a 0/1-character str stays the cached singleton, as it
    would in the client)."""
    return s[:1] + s[1:] if isinstance(s, str) and len(s) > 1 else s


def _client_method_name(method):
    """The method name object the proxy hands to the serializer. Only marshal can tell the
    difference (interned strings are written as `Z`/`A`, others as `z`/`a`, §5.3): attribute
    access on a proxy (`p.echo`, `len(p)`, `__getattr__`) yields an interned identifier, while a
    name that is not an identifier was built at run time (`sub.echo` is `z` in
    marshal/dotted/01_c2s_INVOKE.bin)."""
    if isinstance(method, str) and method.isidentifier() and method.isascii():
        return sys.intern(method)
    return _not_interned(method)


def _json_default(obj):
    # Pyro5's JsonSerializer.default for the types a test may pass (sets, uuids).
    if isinstance(obj, (set, frozenset)):
        return tuple(obj)
    if isinstance(obj, uuid.UUID):
        return str(obj)
    raise TypeError("json: can't serialize %r" % type(obj))


def _msgpack_default(obj):
    # Pyro5's MsgpackSerializer.default: sets become arrays, big ints ext 0x31, complex ext 0x30.
    if isinstance(obj, (set, frozenset)):
        return tuple(obj)
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, complex):
        return msgpack.ExtType(0x30, struct.pack("dd", obj.real, obj.imag))
    if isinstance(obj, int):
        return msgpack.ExtType(0x31, str(obj).encode("ascii"))
    raise TypeError("msgpack: can't serialize %r" % type(obj))


def _msgpack_ext_hook(code, data):
    # Pyro5's MsgpackSerializer.ext_hook; 5.17's loadsCall uses it too (§3.5).
    if code == 0x30:
        real, imag = struct.unpack("dd", data)
        return complex(real, imag)
    if code == 0x31:
        return int(data)
    if code == 0x32:
        return datetime.datetime.fromtimestamp(struct.unpack("d", data)[0])
    if code == 0x33:
        return datetime.date.fromordinal(struct.unpack("l", data)[0])
    raise ValueError("invalid ext code for msgpack: %d" % code)


def encode_value(ser, value):
    """`value` in serializer `ser` (name or id), as Pyro5's serializer.dumps writes it: what the
    daemon uses for CONNECTOK, RESULT and exception payloads, and the client for CONNECT.
    serpent: module_in_classname=True; json: ensure_ascii=False; msgpack: use_bin_type=True."""
    name = ser_name(ser)
    if name == "serpent":
        return serpent.dumps(value, module_in_classname=True)
    if name == "marshal":
        return marshal.dumps(value)
    if name == "json":
        return json.dumps(value, ensure_ascii=False, default=_json_default).encode("utf-8")
    return msgpack.packb(value, use_bin_type=True, default=_msgpack_default)


def connect_payload(ser, handshake="hello", obj="thing"):
    """The CONNECT payload {"handshake": ..., "object": ...} (§4.2). The object id is a runtime
    string in the client (parsed from the URI), so marshal writes it as `z`, not `Z`; the client's
    URI still holds it, so it is shared and carries marshal's FLAG_REF (`fa`, §5.3)."""
    obj = _not_interned(obj)  # this local reference stands for the URI's
    return encode_value(ser, {"handshake": handshake, "object": obj})


def invoke_payload(ser, obj, method, args, kwargs):
    """The INVOKE payload for the call (objectId, method, vargs, kwargs) (§5), byte for byte as a
    Pyro5 5.17 client's serializer.dumpsCall writes it:
      serpent: the 4-tuple; args/kwargs kept as given (a proxy call passes its *args tuple; the
               daemon-object and stream calls pass a list; batch/__getattr__/__setattr__ pass
               kwargs=None);
      marshal: the 4-tuple with vargs turned into a list and kwargs into a new dict (so both carry
               marshal's FLAG_REF, like the client's); kwargs=None stays None, although a real 5.17
               marshal client cannot send it (it crashes on None.items(): the marshal
               batch/getattr/setattr captures have no INVOKE at all);
      json:    the object {"object", "method", "params", "kwargs"} (json is addressed by key);
      msgpack: the 4-tuple as an array.
    kwargs=None means None on the wire, as the client sends for batch and properties (a plain
    method call with None fails on the server: `method(*vargs, **None)`); normal calls pass {}."""
    name = ser_name(ser)
    obj = _not_interned(obj)
    method = _client_method_name(method)
    if name == "serpent":
        return serpent.dumps((obj, method, args, kwargs), module_in_classname=True)
    if name == "marshal":
        vargs = [v for v in args]
        kw = None if kwargs is None else {k: v for k, v in kwargs.items()}
        return marshal.dumps((obj, method, vargs, kw))
    if name == "json":
        data = {"object": obj, "method": method, "params": args, "kwargs": kwargs}
        return json.dumps(data, ensure_ascii=False, default=_json_default).encode("utf-8")
    return msgpack.packb((obj, method, args, kwargs), use_bin_type=True, default=_msgpack_default)


def batch_payload(ser, obj, calls):
    """A batch INVOKE payload (send it with FLAG_BATCH, §6 step 5): method `<batch>`, vargs the
    list of (method, args, kwargs) tuples, kwargs None — the shape of the captures
    */batch/01_c2s_INVOKE.bin, e.g. serpent ('thing','<batch>',[('echo',(1,),{}),...],None).
    `calls` holds (method, args) or (method, args, kwargs) items; args become tuples, missing
    kwargs {}."""
    items = []
    for call in calls:
        method, args = call[0], tuple(call[1])
        kwargs = call[2] if len(call) > 2 else {}
        items.append((_client_method_name(method), args, kwargs))
    return invoke_payload(ser, obj, "<batch>", items, None)


# --- decoding -----------------------------------------------------------------------------------


def decode_payload(ser, data):
    """Decode a (decompressed) payload as Pyro5's serializer.loads does, minus the class registry
    (dicts with "__class__" stay dicts, so exception results read as
    {"__class__": ..., "__exception__": True, "args": ..., "attributes": ...})."""
    name = ser_name(ser)
    data = bytes(data)
    if name == "serpent":
        return serpent.loads(data)
    if name == "marshal":
        return marshal.loads(data)
    if name == "json":
        return json.loads(data.decode("utf-8"))
    return msgpack.unpackb(data, raw=False, ext_hook=_msgpack_ext_hook)


def decode_call(ser, data):
    """(objectId, method, vargs, kwargs) of an INVOKE payload, as the daemon's loadsCall gets them
    (§5): json by key ("object", "method", "params", "kwargs"); the other serializers by
    unpacking whatever 4-element iterable was sent."""
    value = decode_payload(ser, data)
    if ser_name(ser) == "json":
        return value["object"], value["method"], value["params"], value["kwargs"]
    obj, method, vargs, kwargs = value
    return obj, method, vargs, kwargs


def read_vector5(relpath):
    """A captured Pyro5 5.17 message (copied from the shared capture set into tests/vectors/pyro5),
    e.g. read_vector5("serpent/echo/01_c2s_INVOKE.bin")."""
    return (VECTORS5 / relpath).read_bytes()


def vector5_paths(pattern="*/*/*.bin"):
    """Relative paths (str, sorted) of the captured messages matching a glob under tests/vectors/pyro5."""
    return sorted(str(p.relative_to(VECTORS5)) for p in VECTORS5.glob(pattern))


# --- reading from a socket (tests) ----------------------------------------------------------------


def recv_pyro5_frames(sock, count, timeout=10):
    """Read exactly `count` complete Pyro5 frames (fails if the peer closes first)."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        frames = [f for f in parse_pyro5_frames(buf) if "partial" not in f]
        if len(frames) >= count:
            return frames
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed after %d of %d frames" % (len(frames), count))
        buf += chunk


def recv_exactly(sock, size, timeout=10):
    sock.settimeout(timeout)
    buf = b""
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise AssertionError("connection closed after %d of %d bytes" % (len(buf), size))
        buf += chunk
    return buf
