#!/usr/bin/python3
"""What a real Pyro4 4.82 daemon reads from one client message, computed by Pyro4's own code.

daemon_view(frame) is the reference side of the differential test
(test_inspection_differential.py): it replays Daemon._handshake / Daemon.handleRequest of Debian's
python3-pyro4 4.82 in their order (PROTOCOL.md §6) on one raw frame, without a socket and without
registered objects, and returns the object id and every name the daemon would resolve:

  1. Pyro4.message.Message.recv on the bytes (header checks, annotation chunks exactly as 4.82
     parses them: duplicates -> last wins, overruns silently truncated, §2.2);
  2. PING -> nothing decoded; serializer id not accepted -> refused (§2.5);
  3. CONNECT -> serializer.deserializeData(payload, COMPRESSED), data["handshake"], and
     data["object"] when META_ON_CONNECT is set (§4.1);
  4. INVOKE + KEEPSERIALIZED -> `blobinfo, objId, method = marshal.loads(annotations["BLBI"])`
     (§2.8); else serializer.deserializeCall(payload, COMPRESSED) = zlib.decompress + the real
     Pyro4.util.<X>Serializer().loadsCall (§5);
  5. BATCH flag -> `for method, vargs, kwargs in vargs` (every inner method; the outer one is
     ignored); `method == "__getattr__"/"__setattr__"` -> vargs[0] (and vargs[1] for set);
     otherwise the method (§6 steps 5-7).

The daemon stops a batch at the first call that raises; the view lists every inner name, i.e. what
the daemon resolves when every call succeeds (the most it can resolve). Whether the object exists
is not modelled (an unknown object id resolves nothing; the view assumes it exists).

loadsCall also rebuilds "__class__" dicts inside the arguments (PROTOCOL.md §8 #10) and fails on
classes it does not know, before any name is resolved. Honest clients send such arguments (a user
object as an argument): the view then reports `args_error` and the names read from the structure
as it was decoded (the same serializer class with class rebuilding switched off), which is what
pyroguard, knowing nothing about classes, can be compared with.

Also here: the name rule pyroguard enforces (name_problem), pyroguard's rendering of strings in
its inspect output (render), and the tool that captured tests/vectors/pyro4-captured:

    /usr/bin/python3 tests/integration/pyro_names.py capture OUTDIR
"""

import marshal
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import Pyro4
import Pyro4.core
import Pyro4.errors
import Pyro4.message
import Pyro4.util

MSG_CONNECT, MSG_INVOKE, MSG_PING = 1, 4, 6
FLAG_COMPRESSED, FLAG_BATCH, FLAG_META_ON_CONNECT, FLAG_KEEPSERIALIZED = 0x02, 0x08, 0x10, 0x40
SER_NAMES = {1: "serpent", 2: "json", 3: "marshal", 4: "pickle", 5: "dill", 6: "msgpack", 7: "cloudpickle"}
SAFE_SERIALIZER_IDS = frozenset([1, 2, 3, 6])  # pyroguard's default pyro.serializers

# pyroguard prints names and object ids escaped, cut at these buffer sizes (proxy/main.c).
NAME_RENDER_LEN = 128
OBJECT_RENDER_LEN = 512

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# --- the reference decoders: the real serializer classes, and the same with class rebuilding off

class _RawSerpent(Pyro4.util.SerpentSerializer):
    def recreate_classes(self, literal):
        return literal


class _RawJson(Pyro4.util.JsonSerializer):
    def recreate_classes(self, literal):
        return literal


class _RawMarshal(Pyro4.util.MarshalSerializer):
    def recreate_classes(self, literal):
        return literal


class _RawMsgpack(Pyro4.util.MsgpackSerializer):
    def object_hook(self, obj):
        return obj


_RAW = {1: _RawSerpent(), 2: _RawJson(), 3: _RawMarshal(), 6: _RawMsgpack()}


class _Wire(object):
    """Stands in for Pyro4.socketutil.SocketConnection: recv(n) returns exactly n bytes or fails
    the way a closed socket does (ConnectionClosedError)."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def recv(self, size):
        if size < 0 or self.pos + size > len(self.data):
            raise Pyro4.errors.ConnectionClosedError("receiving: not enough data")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def close(self):
        pass


class BlobArgument(object):
    """Stands for the SerializedBlob the daemon passes as the only argument of a KEEPSERIALIZED call."""

    def __repr__(self):
        return "<SerializedBlob>"


class DaemonView(object):
    """What the daemon makes of one message.

    ok        -- it got as far as resolving names (False: it drops the connection or answers an
                 error before resolving anything; `stage` and `error` say where and why)
    msg_type  -- header type
    object    -- the object id looked up (INVOKE; CONNECT with META_ON_CONNECT), else None
    has_object-- whether `object` is meaningful (a META_ON_CONNECT CONNECT without "object" has
                 object None and connect_error set: the daemon answers CONNECTFAIL by itself)
    names     -- [(kind, value)] in dispatch order; kind is method / batch_method / attribute
    args_error-- loadsCall failed only while rebuilding "__class__" arguments (see module doc)
    """

    def __init__(self):
        self.ok = False
        self.stage = None
        self.error = None
        self.msg_type = None
        self.flags = 0
        self.serializer_id = None
        self.object = None
        self.has_object = False
        self.names = []
        self.args_error = None
        self.connect_error = None
        self.hmac = False

    def fail(self, stage, exc):
        self.ok = False
        self.stage = stage
        self.error = "%s: %s" % (type(exc).__name__, exc) if isinstance(exc, BaseException) else str(exc)
        return self

    def bad_names(self):
        """The resolved names that break the rule pyroguard enforces: [(kind, value, problem)]."""
        return [(k, v, name_problem(v)) for k, v in self.names if name_problem(v)]

    def problems(self):
        """bad_names, plus an object id that is not a str (the daemon's lookup of it can only fail
        or hit something no honest client names)."""
        out = self.bad_names()
        if self.has_object and not self.connect_error and not isinstance(self.object, str):
            out.append(("object", self.object, "object id not a str (%s)" % type(self.object).__name__))
        return out

    def __repr__(self):
        if not self.ok:
            return "<daemon: fails at %s (%s)>" % (self.stage, self.error)
        notes = "".join(" %s=%s" % (k, getattr(self, k)) for k in ("args_error", "connect_error", "hmac")
                        if getattr(self, k))
        return "<daemon: object %r names %r%s>" % (self.object, self.names, notes)


def _deserialize(serializer_id, data, compressed, call):
    """The daemon's deserializeCall / deserializeData; on a failure that only class rebuilding
    causes, the raw structure and the error."""
    real = Pyro4.util.get_serializer_by_id(serializer_id)
    try:
        if call:
            return real.deserializeCall(data, compressed=compressed), None
        return real.deserializeData(data, compressed=compressed), None
    except Exception as first:
        raw = _RAW[serializer_id]
        if call:
            value = raw.deserializeCall(data, compressed=compressed)  # raises if the structure fails
        else:
            value = raw.deserializeData(data, compressed=compressed)
        return value, "%s: %s" % (type(first).__name__, first)


def daemon_view(raw, accepted=SAFE_SERIALIZER_IDS):
    view = DaemonView()
    wire = _Wire(raw)
    try:
        msg = Pyro4.message.Message.recv(wire, [MSG_CONNECT, MSG_INVOKE, MSG_PING])
    except Pyro4.errors.SecurityError as e:
        # The HMAC check (PROTOCOL.md §2.7) depends on the daemon's key, which pyroguard neither
        # knows nor needs: a daemon whose key matches goes on with this very message.
        if not hasattr(e, "pyroMsg") or "hmac" not in str(e):
            return view.fail("framing", e)
        msg = e.pyroMsg
        view.hmac = True
    except Exception as e:
        return view.fail("framing", e)
    if wire.pos != len(raw):
        return view.fail("framing", "bytes after the message (a second message)")
    view.msg_type, view.flags, view.serializer_id = msg.type, msg.flags, msg.serializer_id
    if msg.type == MSG_PING:
        view.ok = True
        return view
    if msg.serializer_id not in accepted:
        return view.fail("serializer", "serializer id %d not accepted" % msg.serializer_id)
    compressed = msg.flags & FLAG_COMPRESSED

    if msg.type == MSG_CONNECT:
        try:
            data, view.args_error = _deserialize(msg.serializer_id, msg.data, compressed, call=False)
            data["handshake"]
        except Exception as e:
            return view.fail("decode", e)
        view.ok = True
        if msg.flags & FLAG_META_ON_CONNECT:
            view.has_object = True
            try:
                view.object = data["object"]
            except Exception as e:
                # The daemon answers CONNECTFAIL itself and looks nothing up: no object id.
                view.object = None
                view.connect_error = "%s: %s" % (type(e).__name__, e)
        return view

    try:
        if msg.flags & FLAG_KEEPSERIALIZED:
            _info, obj, method = marshal.loads(msg.annotations["BLBI"])
            vargs, kwargs = (BlobArgument(),), {}
        else:
            (obj, method, vargs, kwargs), view.args_error = _deserialize(
                msg.serializer_id, msg.data, compressed, call=True)
    except Exception as e:
        return view.fail("decode", e)
    view.object, view.has_object = obj, True
    try:
        if msg.flags & FLAG_BATCH:
            for method, _vargs, _kwargs in vargs:
                view.names.append(("batch_method", method))
        elif method == "__getattr__":
            view.names.append(("attribute", vargs[0]))
        elif method == "__setattr__":
            name = vargs[0]
            vargs[1]  # the daemon reads the new value before it looks the name up
            view.names.append(("attribute", name))
        else:
            view.names.append(("method", method))
    except Exception as e:
        return view.fail("dispatch", e)
    view.ok = True
    return view


# --- the name rule and pyroguard's rendering ----------------------------------------------------


def name_problem(name):
    """None if `name` passes pyroguard's rule (a str, a plain ASCII identifier, no '.', not
    private per Pyro4's own is_private_attribute, PROTOCOL.md §7.1, §10); else why not."""
    if not isinstance(name, str):
        return "not a str (%s)" % type(name).__name__
    if "." in name:
        return "dotted"
    if not _IDENTIFIER.match(name):
        return "not an ASCII identifier"
    if Pyro4.util.is_private_attribute(name):
        return "private"
    return None


def render(value, limit=NAME_RENDER_LEN):
    """A str as pyroguard's call_render_str prints it: UTF-8 bytes, printable ASCII other than
    backslash and quote as is, everything else \\xNN, cut with "..." to fit `limit`-1 chars."""
    out = []
    j = 0
    for b in value.encode("utf-8", "surrogatepass"):
        piece = chr(b) if (0x20 <= b < 0x7F and b not in (0x5C, 0x27)) else "\\x%02x" % b
        if j + len(piece) + 4 > limit:
            out.append("...")
            break
        out.append(piece)
        j += len(piece)
    return "".join(out)


# --- capture tool -------------------------------------------------------------------------------

HERE = Path(__file__).resolve().parent
PYTHON = "/usr/bin/python3"

# (scenario, extra pyro_client.py arguments): every call style a real Pyro4 4.82 client has,
# plus the honest client code that emits dotted and private names (which must be refused).
CAPTURE_SCENARIOS = [
    ("echo", []), ("oneway", []), ("batch", []), ("getattr", []), ("setattr", []),
    ("stream", []), ("stream_close", []), ("compressed", []), ("compressed_batch", []),
    ("blob", []), ("blob_compressed", []), ("no_metadata", []), ("kwargs", []),
    ("rich_args", []), ("unicode_args", []), ("big_arg", []), ("oneway_batch", []),
    ("async_calls", []), ("daemon_object", []), ("ping", []), ("correlation", []),
    ("user_annotations", []), ("custom_handshake", []), ("object_args", []),
    ("metadata_off_property", []),
    ("dotted", []), ("dotted_client_attr", []), ("private", []),
    ("private_dunder_class", ["--name", "__class__"]),
    ("batch_dotted", ["--name", "sub.echo"]),
    ("getattr_dotted", ["--name", "sub.value"]),
    ("blob_dotted", ["--name", "sub.echo"]),
]
_SCENARIO_ALIASES = {"private_dunder_class": "private", "batch_dotted": "batch_name",
                     "getattr_dotted": "getattr_name", "blob_dotted": "blob_name"}
CAPTURE_SERIALIZERS = ["serpent", "json", "marshal", "msgpack"]
_TYPE_NAMES = {1: "CONNECT", 4: "INVOKE", 6: "PING"}


def _split_frames(data):
    sys.path.insert(0, str(HERE))
    from conftest import parse_pyro4_frames  # noqa: E402 (pytest is installed with the suite)
    return parse_pyro4_frames(data)


def capture(outdir):
    """Run every CAPTURE_SCENARIOS client in plaintext against legacy_server.py and store each
    c2s frame the daemon received as OUTDIR/<serializer>/<scenario>/c<conn>_<NN>_c2s_<TYPE>.bin."""
    outdir = Path(outdir)
    work = Path(tempfile.mkdtemp(prefix="pyroguard-capture-"))
    capdir = work / "capture"
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([PYTHON, str(HERE / "legacy_server.py"), "--port", str(port),
                               "--capture-dir", str(capdir), "--ready-file", str(work / "ready"),
                               "--fire-log", str(work / "fire.log")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    index = []
    try:
        deadline = time.monotonic() + 15
        while not (work / "ready").exists():
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("legacy_server.py did not start")
            time.sleep(0.05)
        seen = set()
        for ser in CAPTURE_SERIALIZERS:
            for scenario, extra in CAPTURE_SCENARIOS:
                cmd = [PYTHON, str(HERE / "pyro_client.py"), _SCENARIO_ALIASES.get(scenario, scenario),
                       "--port", str(port), "--serializer", ser, "--plain", "--timeout", "20"] + extra
                p = subprocess.run(cmd, capture_output=True, timeout=90)
                result = p.stdout.decode(errors="replace").strip().splitlines()[-1:]
                time.sleep(0.3)  # let ONEWAY calls and closes reach the daemon
                conns = sorted(f for f in capdir.glob("conn-*.bin") if f.name not in seen)
                seen.update(f.name for f in conns)
                target = outdir / ser / scenario
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir(parents=True)
                for ci, conn in enumerate(conns):
                    frames = [f for f in _split_frames(conn.read_bytes()) if "partial" not in f]
                    for ni, fr in enumerate(frames):
                        name = "c%d_%02d_c2s_%s.bin" % (ci, ni, _TYPE_NAMES.get(fr["type"], "T%d" % fr["type"]))
                        (target / name).write_bytes(fr["raw"])
                        index.append("%s/%s/%s\tflags=0x%02x\tser=%d\tlen=%d\t%s" % (
                            ser, scenario, name, fr["flags"], fr["serializer"], len(fr["raw"]),
                            result[0][:160] if result else "(no client output)"))
                print("%-8s %-22s %d connection(s) %s" % (ser, scenario, len(conns),
                                                         result[0][:100] if result else p.stderr[-200:]))
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    (outdir / "index.tsv").write_text("\n".join(index) + "\n")


def main(argv):
    if len(argv) == 3 and argv[1] == "capture":
        capture(argv[2])
        return 0
    if len(argv) >= 3 and argv[1] == "view":
        for path in argv[2:]:
            print(path, daemon_view(Path(path).read_bytes()))
        return 0
    sys.stderr.write("usage: pyro_names.py capture OUTDIR | view FRAME...\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
