#!/usr/bin/python3
"""A FAKE Pyro5 daemon (protocol 502) for the Pyro5 tests — NOT the real Pyro5.

    *** This is a stand-in written for the tests. Pyro5 is not packaged in Debian and nothing may
    *** be downloaded here, so unlike legacy_server.py (the real Pyro4 4.82 daemon) no real Pyro5
    *** code runs in this process. Where it matters it copies Pyro5 5.17's behaviour as described
    *** in PROTOCOL.md and as seen in the captures (tests/vectors/pyro5); everything else is
    *** simplified. Do not take its answers as evidence of what real Pyro5 does: the captures are.

Usage:
    fake_pyro5_daemon.py --port PORT [--capture-dir DIR] [--ready-file FILE]
                         [--mode echo|replay] [--replay-dir DIR]

--port 0 picks a free port; the port in use is in the READY line (stdout and --ready-file):
"READY 127.0.0.1:PORT PYRO:thing@127.0.0.1:PORT".

Recording (same convention as legacy_server.py): with --capture-dir, an INSTALLED marker is written
at start, and every byte the daemon reads from an accepted connection is appended to
DIR/conn-NNNN.bin (one file per accepted connection, created empty on accept; bytes of a read the
peer cut short are recorded too), the peer address in DIR/conn-NNNN.peer. The daemon reads exactly
as Pyro5's recv_stub does — 6 bytes, the other 34 header bytes, then annotations + payload — so it
never consumes bytes beyond the message it is working on, and a refused header ends the reading
before its payload.

Framing, strictly as Pyro5 5.17 (PROTOCOL.md §1, §3.1, §3.4):
  * bad tag, protocol version or magic, payload + annotations > 1 GiB, a wrong message type,
    an annotation chunk overrunning the block, a non-ASCII annotation key, bad zlib data:
      - on the first message (the handshake): answered with CONNECTFAIL (the error text, marshal,
        seq 0) and the connection is closed — Pyro5's Daemon._handshake catches every exception
        (read in Pyro5's source; the real Pyro4 4.82 daemon, whose _handshake is the same, was
        seen doing it: a bad checksum or tag on a CONNECT gets a marshal CONNECTFAIL);
      - after CONNECTOK: the connection is dropped without a reply — handleRequest lets
        recv_stub's errors escape;
  * an unknown serializer id drops the connection without a reply, on CONNECT and INVOKE (§3.3);
  * COMPRESSED payloads are decompressed at receive time, for every message type (§3.1).

--mode echo (default) serves one object, `thing`, with two exposed methods:
  echo(x) -> x, add(*numbers) -> sum(numbers). Replies use the request's seq and serializer id and
  always carry FLAG_CORR_ID: the request's correlation id if it had FLAG_CORR_ID, else a fresh
  uuid4 (as 5.17 does; see the captures' s2c corr ids).
  * CONNECT {"handshake", "object"} -> CONNECTOK {"handshake": "hello", "meta": {"methods",
    "oneway", "attrs"}} (sets: serpent/marshal write sets, json/msgpack lists, §4.2); a missing
    key or unknown object -> CONNECTFAIL with the error text.
  * INVOKE -> RESULT; any error -> RESULT with FLAG_EXCEPTION and the exception as Pyro5 serializes
    it: {"__class__": "builtins.AttributeError", "__exception__": True, "args": (...),
    "attributes": {"_pyroTraceback": [...]}} (shape copied from */dotted/01_s2c_RESULT.bin).
    Dispatch in Pyro5's order (§6): KEEPSERIALIZED takes object and method from the BLBI
    annotation (the one argument is the decoded payload — a simplification); BATCH calls each
    (method, args, kwargs) of vargs and answers the list of results with FLAG_BATCH (an error
    raised by a call ends the batch as a Pyro5.core._ExceptionWrapper item; an unresolvable name
    fails the whole request); `__getattr__`/`__setattr__` are property access (`thing` has no
    properties, so always an AttributeError); other names go through Pyro5's private-name rule
    (§7.1) and exposure check.
  * ONEWAY requests never get a reply, not even on error (§1).
  * PING -> PING "pong", same seq and serializer id (a Pyro5 client pings with id 42).
  * `{"__class__": ...}` dicts in the arguments are refused as Pyro5's class registry refuses
    classes it does not know (SerializeError; SecurityError, which also closes the connection, for
    names containing "__"), §8. The daemon object `Pyro.Daemon` is not served.

--mode replay --replay-dir DIR (a capture scenario directory, e.g. tests/vectors/pyro5/json/echo)
answers the Nth message a client sends on a connection (N = 0 for the CONNECT) with the bytes of
DIR/NN_s2c_*.bin for that NN, in file-name order, and nothing when there is none (ONEWAY): a
captured scenario replayed byte for byte, correlation ids included. Framing is checked as above.
"""

import argparse
import marshal
import os
import signal
import socketserver
import sys
import threading
import traceback
import uuid
import zlib
from pathlib import Path

from pyro5_wire import (
    FLAG_BATCH, FLAG_COMPRESSED, FLAG_CORR_ID, FLAG_EXCEPTION, FLAG_KEEPSERIALIZED, FLAG_ONEWAY,
    HEADER5_SIZE, MSG_CONNECT, MSG_CONNECTFAIL, MSG_CONNECTOK, MSG_INVOKE, MSG_PING, MSG_RESULT,
    SER_IDS5, ProtocolError, check_header, check_tag_and_version, decode_call, decode_payload,
    encode_value, parse_annotations, pyro5_frame, ser_name,
)

MARSHAL_ID = SER_IDS5["marshal"]  # Daemon._handshake answers errors it cannot attribute in marshal


# --- Pyro5's exceptions, as the client sees their class names ------------------------------------


class ConnectionClosedError(Exception):
    """The peer closed the connection (Pyro5 errors.ConnectionClosedError)."""


class PyroError(Exception):
    pass


class DaemonError(PyroError):
    pass


class SerializeError(Exception):
    pass


class SecurityError(Exception):
    pass


for _cls in (ConnectionClosedError, PyroError, DaemonError, SerializeError, SecurityError):
    _cls.__module__ = "Pyro5.errors"  # so the serialized "__class__" reads Pyro5.errors.X


def exception_dict(exc):
    """An exception the way Pyro5's serializers write it (SerializerBase.class_to_dict; the captures
    */dotted/01_s2c_RESULT.bin): class name with module, args, and the attributes (vars) of the
    exception, which hold the server-side traceback lines under _pyroTraceback."""
    return {
        "__class__": "%s.%s" % (type(exc).__module__, type(exc).__name__),
        "__exception__": True,
        "args": exc.args,
        "attributes": {"_pyroTraceback": traceback.format_exception(type(exc), exc, exc.__traceback__)},
    }


def encode_exception(ser, exc):
    """The exception payload; as in Pyro5's _sendExceptionResponse, an exception the serializer
    cannot write is replaced by a PyroError saying so."""
    try:
        return encode_value(ser, exception_dict(exc))
    except Exception as why:
        error = PyroError("Error serializing exception: %s. Original exception: %s: %s"
                          % (why, type(exc), exc))
        return encode_value(ser, exception_dict(error))


# --- the served object and Pyro5's name rules ----------------------------------------------------

# Pyro5 server._private_dunder_methods (PROTOCOL.md §7.1).
PRIVATE_DUNDERS = frozenset([
    "__init__", "__init_subclass__", "__class__", "__module__", "__weakref__",
    "__call__", "__new__", "__del__", "__repr__",
    "__str__", "__format__", "__nonzero__", "__bool__", "__coerce__",
    "__cmp__", "__eq__", "__ne__", "__hash__", "__ge__", "__gt__", "__le__", "__lt__",
    "__dir__", "__enter__", "__exit__", "__copy__", "__deepcopy__", "__sizeof__",
    "__getattr__", "__setattr__", "__hasattr__", "__getattribute__", "__delattr__",
    "__instancecheck__", "__subclasscheck__", "__getinitargs__", "__getnewargs__",
    "__getstate__", "__setstate__", "__reduce__", "__reduce_ex__", "__subclasshook__",
])


def is_private_attribute(name):
    """Pyro5's rule (§7.1): deny-listed dunders and `_names` are private, other dunders public."""
    if name in PRIVATE_DUNDERS:
        return True
    if not name.startswith("_"):
        return False
    if len(name) > 4 and name.startswith("__") and name.endswith("__"):
        return False
    return True


def expose(func):
    func._pyroExposed = True
    return func


class Thing(object):
    """The object registered as `thing`."""

    @expose
    def echo(self, x):
        return x

    @expose
    def add(self, *numbers):
        return sum(numbers)


OBJECTS = {"thing": Thing()}


def get_metadata(obj_id):
    """The "meta" of CONNECTOK: exposed methods, oneway methods and properties, as sets (§4.2)."""
    obj = OBJECTS.get(obj_id)
    if obj is None:
        raise DaemonError("unknown object")
    methods = {name for name in dir(obj)
               if not is_private_attribute(name) and getattr(getattr(obj, name), "_pyroExposed", False)}
    return {"methods": methods, "oneway": set(), "attrs": set()}


def get_attribute(obj, name):
    """Pyro5 server._get_attribute: private check, one plain getattr (a dotted name is looked up
    literally), exposure check (§7.1)."""
    if is_private_attribute(name):
        raise AttributeError("attempt to access private attribute '%s'" % name)
    value = getattr(obj, name)
    if getattr(value, "_pyroExposed", False):
        return value
    raise AttributeError("attempt to access unexposed attribute '%s'" % name)


def property_error(name):
    # `thing` exposes no @property, so every __getattr__/__setattr__ fails as in Pyro5 (§6.1).
    return AttributeError("attempt to access unexposed or unknown remote attribute '%s'" % (name,))


def refuse_classes(value, serpent_floats):
    """Pyro5's loadsCall turns {"__class__": ...} dicts in vargs/kwargs into objects (§8). This fake
    knows no classes: it refuses them the way Pyro5 refuses unknown ones. serpent's
    {'__class__': 'float', 'value': 'nan'} is the one class serpent itself writes."""
    if isinstance(value, dict):
        if "__class__" in value:
            name = value["__class__"]
            if serpent_floats and name == "float":
                return float(value["value"])
            if isinstance(name, bytes):
                name = name.decode("utf-8")
            if "__" in str(name):
                raise SecurityError("refused to deserialize types with double underscores in their name: "
                                    + str(name))
            raise SerializeError("unsupported serialized class: %s" % name)
        return {k: refuse_classes(v, serpent_floats) for k, v in value.items()}
    if isinstance(value, list):
        return [refuse_classes(v, serpent_floats) for v in value]
    if isinstance(value, tuple):
        return tuple(refuse_classes(v, serpent_floats) for v in value)
    if isinstance(value, set):
        return {refuse_classes(v, serpent_floats) for v in value}
    return value


# --- one connection: exact reads, recording, framing -----------------------------------------------


class Message(object):
    """A received message: header fields, annotations (dict) and the decompressed payload."""

    def __init__(self, fields, annotations, data):
        self.type = fields["type"]
        self.serializer_id = fields["serializer_id"]
        self.flags = fields["flags"]
        self.seq = fields["seq"]
        self.corr_id = fields["corr_id"]
        self.annotations = annotations
        self.data = data


class Connection(object):
    """An accepted socket that records what it reads and reads messages as Pyro5's recv_stub."""

    def __init__(self, sock, capture_path):
        self.sock = sock
        self.capture_path = capture_path
        self.corr_id = None  # Pyro5's current_context.correlation_id: unset until a message sets it

    def _record(self, data):
        if self.capture_path and data:
            with open(self.capture_path, "ab") as f:
                f.write(data)

    def recv_exact(self, size):
        buf = b""
        while len(buf) < size:
            try:
                chunk = self.sock.recv(size - len(buf))
            except OSError:
                chunk = b""
            if not chunk:
                raise ConnectionClosedError("receiving: connection lost")
            self._record(chunk)
            buf += chunk
        return buf

    def recv_message(self, accepted_types):
        """Pyro5 protocol.recv_stub plus 5.17's strict annotation parsing (§3.1, §3.4)."""
        first = self.recv_exact(6)
        check_tag_and_version(first)
        fields = check_header(first + self.recv_exact(HEADER5_SIZE - 6))
        if fields["type"] not in accepted_types:
            raise ProtocolError("invalid msg type %d received (expected: %s)"
                                      % (fields["type"], ",".join(str(t) for t in accepted_types)))
        body = self.recv_exact(fields["ann_length"] + fields["data_length"])
        annotations = parse_annotations(body[:fields["ann_length"]])
        data = body[fields["ann_length"]:]
        if fields["flags"] & FLAG_COMPRESSED:
            data = zlib.decompress(data)
            fields["flags"] &= ~FLAG_COMPRESSED
        return Message(fields, annotations, data)

    def take_correlation_id(self, msg):
        """5.17: the request's correlation id if it has FLAG_CORR_ID, else a new uuid4."""
        self.corr_id = msg.corr_id if msg.flags & FLAG_CORR_ID else uuid.uuid4().bytes

    def frame(self, msg_type, flags, seq, serializer_id, payload):
        """A reply as Pyro5's SendingMessage builds it: FLAG_CORR_ID and the id when one is set."""
        if self.corr_id is not None:
            return pyro5_frame(msg_type, payload, serializer_id=serializer_id, flags=flags | FLAG_CORR_ID,
                               seq=seq, corr_id=self.corr_id)
        return pyro5_frame(msg_type, payload, serializer_id=serializer_id, flags=flags, seq=seq)

    def send(self, data):
        if data:
            self.sock.sendall(data)


# --- what to answer: echo mode ----------------------------------------------------------------------


class EchoResponder(object):
    """Answers like a Pyro5 daemon serving `thing` (see the module docstring)."""

    def connect(self, conn, msg, index):
        ser = ser_name(msg.serializer_id)
        data = decode_payload(ser, msg.data)
        data = refuse_classes(data, ser == "serpent")  # Pyro5's loads recreates classes everywhere
        _ = data["handshake"]  # validateHandshake(conn, data["handshake"]) always says "hello"
        response = {"handshake": "hello", "meta": get_metadata(data["object"])}
        return conn.frame(MSG_CONNECTOK, 0, msg.seq, msg.serializer_id, encode_value(ser, response))

    def request(self, conn, msg, index):
        """Daemon.handleRequest for one INVOKE or PING. Returns (bytes to send, keep_open)."""
        if msg.type == MSG_PING:
            # Nothing is decoded; any serializer id is echoed (§6 step 1).
            return conn.frame(MSG_PING, 0, msg.seq, msg.serializer_id, b"pong"), True
        oneway = msg.flags & FLAG_ONEWAY
        try:
            ser = ser_name(msg.serializer_id)
            data, flags = self._call(ser, msg)
            if oneway:
                return b"", True
            return conn.frame(MSG_RESULT, flags, msg.seq, msg.serializer_id, encode_value(ser, data)), True
        except Exception as exc:
            if oneway:
                return b"", not isinstance(exc, SecurityError)
            # An unknown serializer id fails again here (KeyError): the connection is dropped (§3.3).
            payload = encode_exception(ser_name(msg.serializer_id), exc)
            reply = conn.frame(MSG_RESULT, FLAG_EXCEPTION, msg.seq, msg.serializer_id, payload)
            return reply, not isinstance(exc, SecurityError)

    def _call(self, ser, msg):
        """Decode and dispatch in Pyro5's order (§6). Returns (result, reply flags)."""
        if msg.flags & FLAG_KEEPSERIALIZED:
            _info, obj_id, method = marshal.loads(msg.annotations["BLBI"])
            vargs, kwargs = (decode_payload(ser, msg.data),), {}
        else:
            obj_id, method, vargs, kwargs = decode_call(ser, msg.data)
            vargs = refuse_classes(vargs, ser == "serpent")
            kwargs = refuse_classes(kwargs, ser == "serpent")
        obj = OBJECTS.get(obj_id)
        if obj is None:
            raise DaemonError("unknown object")
        if msg.flags & FLAG_BATCH:
            results = []
            for name, args, kw in vargs:
                func = get_attribute(obj, name)  # outside the try: a bad name fails the whole batch
                try:
                    results.append(func(*args, **kw))
                except Exception as exc:
                    results.append({"__class__": "Pyro5.core._ExceptionWrapper",
                                    "exception": exception_dict(exc)})
                    break
            return results, FLAG_BATCH
        if method == "__getattr__":
            raise property_error(vargs[0])
        if method == "__setattr__":
            raise property_error(vargs[0])
        func = get_attribute(obj, method)
        if msg.flags & FLAG_ONEWAY:
            try:
                func(*vargs, **kwargs)
            except Exception:
                pass  # Pyro5 runs it in a thread and only logs the error
            return None, 0
        return func(*vargs, **kwargs), 0  # kwargs None (json null) is a TypeError, as in Pyro5


# --- what to answer: replay mode ------------------------------------------------------------------


class ReplayResponder(object):
    """Answers message N of a connection with the captured DIR/NN_s2c_*.bin files."""

    def __init__(self, replay_dir):
        self.replies = {}
        for path in sorted(Path(replay_dir).glob("*_s2c_*.bin")):
            self.replies.setdefault(int(path.name[:2]), []).append(path.read_bytes())

    def connect(self, conn, msg, index):
        return b"".join(self.replies.get(index, []))

    def request(self, conn, msg, index):
        return b"".join(self.replies.get(index, [])), True


# --- the server -------------------------------------------------------------------------------------


def handshake(conn, responder):
    """Daemon._handshake: the first message must be a good CONNECT. Any error is answered with
    CONNECTFAIL (in marshal and with seq 0 when it happened before they were known) and the
    connection is closed; an unknown serializer id fails while answering and drops it."""
    serializer_id, seq = MARSHAL_ID, 0
    try:
        msg = conn.recv_message((MSG_CONNECT,))
        seq = msg.seq
        conn.take_correlation_id(msg)
        serializer_id = msg.serializer_id
        ser_name(serializer_id)  # KeyError for an unknown id
        reply = responder.connect(conn, msg, 0)
    except ConnectionClosedError:
        return False
    except Exception as exc:
        payload = encode_value(ser_name(serializer_id), str(exc))  # KeyError escapes: dropped
        conn.send(conn.frame(MSG_CONNECTFAIL, 0, seq, serializer_id, payload))
        return False
    conn.send(reply)
    return True


class Handler(socketserver.BaseRequestHandler):
    """One thread per accepted connection."""

    def handle(self):
        server = self.server
        conn = Connection(self.request, server.open_capture(self.client_address))
        try:
            if not handshake(conn, server.responder):
                return
            index = 1
            while True:
                try:
                    msg = conn.recv_message((MSG_INVOKE, MSG_PING))
                except Exception:
                    return  # closed, or a framing error after the handshake: dropped, no reply (§1)
                conn.take_correlation_id(msg)
                reply, keep_open = server.responder.request(conn, msg, index)
                conn.send(reply)
                if not keep_open:
                    return
                index += 1
        except Exception as exc:  # an unknown serializer id, a peer gone while we send, ...
            print("connection %s dropped: %r" % (self.client_address, exc), file=sys.stderr, flush=True)


class FakeDaemon(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, port, capture_dir, responder):
        self.capture_dir = capture_dir
        self.responder = responder
        self._count = 0
        self._lock = threading.Lock()
        if capture_dir:
            os.makedirs(capture_dir, exist_ok=True)
            # Lets the tests tell "received nothing" apart from "capture not working".
            with open(os.path.join(capture_dir, "INSTALLED"), "w") as f:
                f.write("%d\n" % os.getpid())
        super().__init__(("127.0.0.1", port), Handler)

    def open_capture(self, peer):
        """Create DIR/conn-NNNN.bin (empty) for a newly accepted connection; its path, or None."""
        if not self.capture_dir:
            return None
        with self._lock:
            self._count += 1
            n = self._count
        path = os.path.join(self.capture_dir, "conn-%04d.bin" % n)
        open(path, "wb").close()
        with open(os.path.join(self.capture_dir, "conn-%04d.peer" % n), "w") as f:
            f.write("%s:%d\n" % peer[:2])
        return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True, help="0 picks a free port (see the READY line)")
    ap.add_argument("--capture-dir")
    ap.add_argument("--ready-file")
    ap.add_argument("--mode", choices=("echo", "replay"), default="echo")
    ap.add_argument("--replay-dir", help="a capture scenario directory (--mode replay)")
    args = ap.parse_args()
    if args.mode == "replay":
        if not args.replay_dir or not Path(args.replay_dir).is_dir():
            ap.error("--mode replay needs --replay-dir DIR (a capture scenario directory)")
        responder = ReplayResponder(args.replay_dir)
    else:
        responder = EchoResponder()

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    server = FakeDaemon(args.port, args.capture_dir, responder)
    location = "127.0.0.1:%d" % server.server_address[1]
    line = "READY %s PYRO:thing@%s" % (location, location)
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, args.ready_file)
    print(line, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
