#!/usr/bin/python3
"""The vulnerable legacy Pyro4 4.82 daemon that pyroguard protects in the integration tests.

It is configured the way the threat model in DESIGN.md describes: plaintext on 127.0.0.1 and
accepting every serializer, pickle, dill and cloudpickle included, so that anything that slips
through pyroguard would really be executed here.

Usage:
    legacy_server.py --port PORT --capture-dir DIR [--fire-log FILE] [--ready-file FILE]
                     [--nathost HOST] [--natport PORT] [--objects-log FILE] [--names-log FILE]
                     [--inventory] [--multiplex]

Every option may also come from the environment (LEGACY_PORT, LEGACY_CAPTURE_DIR,
LEGACY_FIRE_LOG, LEGACY_READY_FILE, LEGACY_NATHOST, LEGACY_NATPORT, LEGACY_NAMES_LOG,
LEGACY_INVENTORY=1, LEGACY_MULTIPLEX=1).

Instrumentation (NOT a mock): this is the real Pyro4 4.82 Daemon from Debian's python3-pyro4,
serving real requests. The only change is a wrapper around
Pyro4.socketutil.SocketConnection.__init__/recv, installed in this process only, that appends
every byte the daemon reads from an accepted connection to DIR/conn-NNNN.bin (one file per
accepted connection, created empty on accept). Bytes of a receive that failed half-way (the peer
closed mid-message) are recorded too, from the exception's partialData. The integration tests read
these files to prove that the daemon never received the bytes of a message pyroguard refused.

With --names-log, a second wrapper (same process, same real daemon) records every name the
daemon tries to resolve, before it resolves it: Pyro4.util.getAttribute (plain and batched
methods) and Pyro4.util.get/set_exposed_property_value (the __getattr__/__setattr__ path),
PROTOCOL.md §6 steps 5-7. One JSON line per attempt: {"object", "kind", "name"}; a name that is
not a str is logged as its repr with "name_type". The tests use it to prove that the daemon never
even looked up a name pyroguard refused.
"""

import argparse
import hashlib
import json
import os
import resource
import sys
import threading
import time

import Pyro4
import Pyro4.errors
import Pyro4.socketutil
import Pyro4.util

# The legacy configuration: every serializer, the dangerous ones included.
Pyro4.config.SERIALIZERS_ACCEPTED = {
    "serpent",
    "json",
    "marshal",
    "pickle",
    "dill",
    "msgpack",
    "cloudpickle",
}
Pyro4.config.REQUIRE_EXPOSE = True
Pyro4.config.THREADPOOL_SIZE = 100
Pyro4.config.THREADPOOL_SIZE_MIN = 8


# --- capture instrumentation (see module docstring) ------------------------------------------

_capture_dir = None
_capture_lock = threading.Lock()
_capture_count = 0
_orig_init = Pyro4.socketutil.SocketConnection.__init__
_orig_recv = Pyro4.socketutil.SocketConnection.recv


def _capture_append(conn, data):
    path = getattr(conn, "_pg_capture_path", None)
    if path is None or not data:
        return
    with open(path, "ab") as f:
        f.write(data)


def _capturing_init(self, sock, *args, **kwargs):
    global _capture_count
    _orig_init(self, sock, *args, **kwargs)
    if _capture_dir is None:
        return
    with _capture_lock:
        _capture_count += 1
        n = _capture_count
    try:
        peer = "%s:%d" % sock.getpeername()[:2]
    except OSError:
        peer = "?"
    self._pg_capture_path = os.path.join(_capture_dir, "conn-%04d.bin" % n)
    open(self._pg_capture_path, "wb").close()
    with open(os.path.join(_capture_dir, "conn-%04d.peer" % n), "w") as f:
        f.write(peer + "\n")


def _capturing_recv(self, size):
    try:
        data = _orig_recv(self, size)
    except Exception as x:
        _capture_append(self, getattr(x, "partialData", b""))
        raise
    _capture_append(self, data)
    return data


def install_capture(directory):
    global _capture_dir
    os.makedirs(directory, exist_ok=True)
    _capture_dir = directory
    # Lets the tests tell "received nothing" apart from "capture not working".
    with open(os.path.join(directory, "INSTALLED"), "w") as f:
        f.write("%d\n" % os.getpid())
    Pyro4.socketutil.SocketConnection.__init__ = _capturing_init
    Pyro4.socketutil.SocketConnection.recv = _capturing_recv


# --- names instrumentation (see module docstring) --------------------------------------------

_names_log = None
_names_lock = threading.Lock()


def _log_name(obj, kind, name):
    entry = {"object": getattr(obj, "_pyroId", None), "kind": kind}
    if isinstance(name, str):
        entry["name"] = name
    else:
        entry["name"], entry["name_type"] = repr(name), type(name).__name__
    line = json.dumps(entry, ensure_ascii=True) + "\n"
    with _names_lock, open(_names_log, "a") as f:
        f.write(line)


def install_names_log(path):
    global _names_log
    _names_log = path
    open(path, "a").close()
    util = Pyro4.util
    orig_get_attribute = util.getAttribute
    orig_get_property = util.get_exposed_property_value
    orig_set_property = util.set_exposed_property_value

    def getAttribute(obj, attr):
        _log_name(obj, "method", attr)
        return orig_get_attribute(obj, attr)

    def get_exposed_property_value(obj, propname, *args, **kwargs):
        _log_name(obj, "attribute_get", propname)
        return orig_get_property(obj, propname, *args, **kwargs)

    def set_exposed_property_value(obj, propname, *args, **kwargs):
        _log_name(obj, "attribute_set", propname)
        return orig_set_property(obj, propname, *args, **kwargs)

    util.getAttribute = getAttribute
    util.get_exposed_property_value = get_exposed_property_value
    util.set_exposed_property_value = set_exposed_property_value


# --- the legacy service -----------------------------------------------------------------------


@Pyro4.expose
class Sub(object):
    """Reachable as `thing.sub` only through a dotted name (`sub.echo`), which Pyro4 4.82 never
    traverses (PROTOCOL.md §7.2) and pyroguard refuses: the target a dotted call would aim at."""

    def echo(self, x):
        return ["sub", x]


@Pyro4.expose
class Thing(object):
    """The object registered as `thing`."""

    def __init__(self, fire_log):
        self._fire_log = fire_log
        self._value = 42
        self._calls = 0
        self._lock = threading.Lock()
        self.sub = Sub()  # an instance attribute: not in the metadata, reachable only dotted

    def _private(self):
        """Private by Pyro's rule (PROTOCOL.md §7.1): never callable remotely."""
        return "private"

    def _count_call(self):
        with self._lock:
            self._calls += 1

    def echo(self, x):
        self._count_call()
        return x

    @Pyro4.oneway
    def fire(self, x):
        self._count_call()
        if self._fire_log:
            with self._lock, open(self._fire_log, "a") as f:
                f.write(repr(x) + "\n")

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, v):
        self._value = v

    def gen(self, n):
        self._count_call()
        for i in range(n):
            yield i

    def blob(self, b):
        """Takes a SerializedBlob (KEEPSERIALIZED call) and decodes it on demand."""
        self._count_call()
        if isinstance(b, Pyro4.core.SerializedBlob):
            return [b.info, b.deserialized()]
        return ["not a blob", repr(type(b))]

    def digest(self, x):
        """Length and sha256 of a (large) string argument; avoids echoing megabytes back."""
        self._count_call()
        if isinstance(x, str):
            x = x.encode("utf-8")
        return [len(x), hashlib.sha256(x).hexdigest()]

    def sleep(self, seconds):
        """A slow call (capped at 10 s), to test timeouts while a call is in progress."""
        self._count_call()
        time.sleep(min(float(seconds), 10.0))
        return seconds

    def big(self, n):
        """A large result (n characters, capped at 256 MiB) for a tiny request: backpressure."""
        self._count_call()
        return "x" * min(int(n), 256 << 20)

    def count(self):
        with self._lock:
            return self._calls

    def pid(self):
        return os.getpid()

    def seen_annotations(self):
        """The annotations of this very call as the daemon received them (Pyro4 sets
        current_context.annotations from each INVOKE): what identity forwarding shows server
        code. Values as text."""
        ann = Pyro4.current_context.annotations
        return {k: bytes(v).decode("utf-8", "replace") for k, v in ann.items()}


@Pyro4.expose
class Inventory(object):
    """The object registered as `inventory` when --inventory is given (the policy tests): read
    methods named get_* and list_items, writes add_item and drop_all, a read-only property
    `owner` and a read/write property `label`. Without --inventory the daemon serves exactly
    what it always did."""

    def __init__(self):
        self._items = {"apple": 3, "pear": 5}
        self._label = "main"
        self._lock = threading.Lock()

    def get_item(self, key):
        with self._lock:
            return self._items.get(key)

    def get_count(self):
        with self._lock:
            return len(self._items)

    def list_items(self):
        with self._lock:
            return sorted(self._items)

    def add_item(self, key, n):
        with self._lock:
            self._items[key] = n
            return len(self._items)

    def drop_all(self):
        with self._lock:
            self._items.clear()
            return 0

    @property
    def owner(self):
        return "stores-team"

    @property
    def label(self):
        return self._label

    @label.setter
    def label(self, v):
        self._label = v


def main():
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=int(env("LEGACY_PORT", "9090")))
    ap.add_argument("--capture-dir", default=env("LEGACY_CAPTURE_DIR"))
    ap.add_argument("--fire-log", default=env("LEGACY_FIRE_LOG"))
    ap.add_argument("--ready-file", default=env("LEGACY_READY_FILE"))
    ap.add_argument("--nathost", default=env("LEGACY_NATHOST"))
    ap.add_argument("--natport", type=int, default=int(env("LEGACY_NATPORT", "0")))
    ap.add_argument("--names-log", default=env("LEGACY_NAMES_LOG"))
    ap.add_argument("--inventory", action="store_true", default=env("LEGACY_INVENTORY", "") not in ("", "0"),
                    help="also register the object `inventory` (policy tests)")
    ap.add_argument("--multiplex", action="store_true", default=env("LEGACY_MULTIPLEX", "") not in ("", "0"),
                    help="SERVERTYPE multiplex (one thread, selectors) and the descriptor limit "
                         "raised to its hard limit: for tests that hold thousands of connections, "
                         "which the thread pool (at most THREADPOOL_SIZE) cannot")
    args = ap.parse_args()

    if args.multiplex:
        Pyro4.config.SERVERTYPE = "multiplex"
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    if args.capture_dir:
        install_capture(args.capture_dir)
    if args.names_log:
        install_names_log(args.names_log)

    daemon = Pyro4.Daemon(
        host="127.0.0.1",
        port=args.port,
        nathost=args.nathost,
        natport=args.natport if args.nathost else None,
    )
    uri = daemon.register(Thing(args.fire_log), "thing")
    if args.inventory:
        daemon.register(Inventory(), "inventory")
    line = "READY %s %s" % (daemon.locationStr, uri)
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, args.ready_file)
    print(line, flush=True)
    try:
        daemon.requestLoop()
    except KeyboardInterrupt:
        pass
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
