#!/usr/bin/python3
"""A real Pyro4 4.82 client, one scenario per process, for the pyroguard integration tests.

Pyro4's client configuration (serializer, SSL settings) is process-global and its SSL context is
cached on first use, so every scenario runs in a fresh interpreter.

Usage:
    pyro_client.py SCENARIO --port PORT [--host localhost] [--serializer serpent]
                   [--ca ca.crt] [--cert client.crt] [--key client.key] [--plain]
                   [--unix PATH] [--marker PATH] [--token TEXT] [--tls-max 1.2] [--timeout 20] [--threads 20]
                   [--name NAME] [--ops JSON] [--no-metadata]

Prints exactly one JSON object on stdout:
    {"ok": true, "result": ...}                       the scenario completed
    {"ok": false, "exc_type": "Pyro4.errors.X", "exc_msg": "...", "steps": [...]}
`steps` lists what happened before the failure (scenarios with several phases fill it).
"""

import argparse
import builtins
import hashlib
import json
import random
import ssl
import string
import sys
import threading

import Pyro4
import Pyro4.core
import Pyro4.errors
import Pyro4.message
import Pyro4.socketutil


class FileCreatingPayload(object):
    """Unpickling this creates a file: the proof that a daemon decoded a pickle/dill/cloudpickle
    payload (arbitrary code execution, PROTOCOL.md §4.1 / §5.5)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


def exc_name(e):
    t = type(e)
    return "%s.%s" % (t.__module__, t.__name__)


class Steps(list):
    def add(self, name, value):
        self.append([name, value])


def make_proxy(args):
    if args.unix:
        p = Pyro4.Proxy("PYRO:thing@./u:%s" % args.unix)
    else:
        p = Pyro4.Proxy("PYRO:thing@%s:%d" % (args.host, args.port))
    p._pyroTimeout = args.timeout
    return p


# --- scenarios: each returns the value reported as "result" ---------------------------------


def sc_echo(args, steps):
    with make_proxy(args) as p:
        return p.echo(args.token or "hello")


def sc_oneway(args, steps):
    with make_proxy(args) as p:
        r = p.fire(args.token or "bang")
        steps.add("fire", r)
        # A call after the oneway proves the connection is still in sync.
        return [r, p.echo("after-oneway")]


def sc_batch(args, steps):
    with make_proxy(args) as p:
        b = Pyro4.batch(p)
        b.echo(1)
        b.echo("two")
        return list(b())


def sc_getattr(args, steps):
    with make_proxy(args) as p:
        return p.value


def sc_setattr(args, steps):
    with make_proxy(args) as p:
        p.value = 7
        steps.add("set", 7)
        return p.value


def sc_stream(args, steps):
    with make_proxy(args) as p:
        return list(p.gen(5))


def sc_compressed(args, steps):
    Pyro4.config.COMPRESSION = True
    with make_proxy(args) as p:
        r = p.echo("A" * 5000)
        return [len(r), r == "A" * 5000]


def sc_blob(args, steps):
    with make_proxy(args) as p:
        return p.blob(Pyro4.core.SerializedBlob("blobinfo", {"k": [1, 2, 3]}))


def sc_big(args, steps):
    rnd = random.Random(1234)
    unit = "".join(rnd.choice(string.ascii_letters) for _ in range(4096))
    big = (unit * (10 * 1024 * 1024 // len(unit) + 1))[: 10 * 1024 * 1024]
    with make_proxy(args) as p:
        n, h = p.digest(big)
        return {"sent_len": len(big), "got_len": n, "match": h == hashlib.sha256(big.encode()).hexdigest()}


def sc_many(args, steps):
    with make_proxy(args) as p:
        got = [p.echo(i) for i in range(100)]
        return {"calls": len(got), "in_order": got == list(range(100))}


def sc_concurrent(args, steps):
    n = args.threads
    bound = threading.Barrier(n, timeout=args.timeout)
    done = threading.Barrier(n, timeout=args.timeout)
    results = [None] * n

    def worker(i):
        try:
            with make_proxy(args) as p:
                p._pyroBind()
                bound.wait()  # all n connections are open at the same time
                got = [p.echo("c%d-%d" % (i, k)) for k in range(5)]
                done.wait()
                results[i] = got == ["c%d-%d" % (i, k) for k in range(5)]
        except Exception as e:
            results[i] = "%s: %s" % (exc_name(e), e)
            bound.abort()
            done.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"clients": n, "all_ok": all(r is True for r in results), "results": results}


def sc_evil_connect(args, steps):
    """Connect with the configured serializer, carrying a file-creating object in the handshake."""
    with make_proxy(args) as p:
        p._pyroHandshake = {"hello": FileCreatingPayload(args.marker)}
        return p.echo("should never be answered")


def sc_switch_invoke(args, steps):
    """Connect with serpent, then send one INVOKE with another serializer, then go back."""
    with make_proxy(args) as p:
        steps.add("connect", p.echo("before"))
        p._pyroSerializer = args.serializer
        try:
            r = p.echo(FileCreatingPayload(args.marker))
            steps.add("switched_call", ["returned", repr(r)])
        except Exception as e:
            steps.add("switched_call", [exc_name(e), str(e)])
        p._pyroSerializer = "serpent"
        return p.echo("after")


def sc_switch_oneway(args, steps):
    """Connect with serpent, then send a ONEWAY call with another serializer, then go back."""
    with make_proxy(args) as p:
        steps.add("connect", p.echo("before"))
        p._pyroSerializer = args.serializer
        steps.add("switched_oneway", repr(p.fire(FileCreatingPayload(args.marker))))
        p._pyroSerializer = "serpent"
        return p.echo("after")


# --- more call styles (differential corpus, PROTOCOL.md §5-§6) and refused names (§7, §9) --------
# The scenarios below take the name they send from --name where it matters, so that one scenario
# covers every dotted or private spelling a test wants to try.


def _proxy_without_metadata(args):
    Pyro4.config.METADATA = False
    return make_proxy(args)


def sc_no_metadata(args, steps):
    """METADATA=False: CONNECT without META_ON_CONNECT and without "object"."""
    with _proxy_without_metadata(args) as p:
        return p.echo(args.token or "no-metadata")


def sc_kwargs(args, steps):
    with make_proxy(args) as p:
        return p.echo(x=args.token or "by-keyword")


def _rich_values(serializer):
    """Argument values of many types; each serializer gets those its Pyro4 client can encode."""
    values = [
        "h\u00e9llo w\u00f6rld \u2713 \U0001f600 \u0000 tab\tquote' dq\" back\\slash",
        "\u65e5\u672c\u8a9e \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u00a0\u2028\u2029",
        {"k\u00e9y": [1, -2, 3.5, None, True, False], "nested": {"a": ["b", {"c": "d"}]}},
        2 ** 70,
        -0.0,
        1e300,
        ["list", ("tuple", 1)],
        "",
    ]
    if serializer in ("serpent", "marshal", "msgpack"):
        values += [b"\x00\x01bytes\xff", complex(1, -2)]
    if serializer in ("serpent", "marshal"):
        values += [{1, 2, 3}, frozenset(["f"]), float("nan")]
    if serializer == "json":
        values += [float("inf"), float("nan")]
    return values


def sc_rich_args(args, steps):
    """One echo per value type; a value the client or the daemon cannot handle is recorded."""
    with make_proxy(args) as p:
        for v in _rich_values(args.serializer):
            try:
                p.echo(v)
                steps.add(repr(v)[:40], "ok")
            except Exception as e:
                steps.add(repr(v)[:40], exc_name(e))
        return len(steps)


def sc_unicode_args(args, steps):
    with make_proxy(args) as p:
        return p.echo("\u00fcnic\u00f8de \u2603 \U0001f40d " * 20)


def sc_big_arg(args, steps):
    """A 256 KiB argument: large enough to need several reads, small enough to keep as a vector."""
    big = ("pyroguard-" * 26215)[: 256 * 1024]
    with make_proxy(args) as p:
        n, h = p.digest(big)
        return {"sent_len": len(big), "got_len": n}


def sc_compressed_batch(args, steps):
    Pyro4.config.COMPRESSION = True
    with make_proxy(args) as p:
        if args.serializer == "marshal":
            return _marshal_batch(p, [("echo", ("A" * 3000,), {}), ("echo", ("B",), {})])
        b = Pyro4.batch(p)
        b.echo("A" * 3000)
        b.echo("B")
        return [len(x) for x in b()]


def sc_blob_compressed(args, steps):
    Pyro4.config.COMPRESSION = True
    with make_proxy(args) as p:
        return p.blob(Pyro4.core.SerializedBlob("blobinfo", {"k": ["v" * 2000]}))


def sc_oneway_batch(args, steps):
    with make_proxy(args) as p:
        if args.serializer == "marshal":
            _marshal_batch(p, [("fire", ("ob1",), {}), ("fire", ("ob2",), {})], oneway=True)
        else:
            b = Pyro4.batch(p)
            b.fire("ob1")
            b.fire("ob2")
            b(oneway=True)
        return p.echo("after-oneway-batch")


def sc_async_calls(args, steps):
    with make_proxy(args) as p:
        p._pyroAsync()  # calls return futures; the frames are ordinary INVOKEs
        r1 = p.echo("async-1").value
        return [r1, p.echo("async-2").value]


def sc_stream_close(args, steps):
    """Take two items of a stream, then abandon it: the client sends close_stream as ONEWAY."""
    with make_proxy(args) as p:
        it = p.gen(10)
        got = [next(it), next(it)]
        it.close()
        return got + [p.echo("after-close")]


def sc_daemon_object(args, steps):
    """Calls on the daemon object Pyro.Daemon (a dotted object id, PROTOCOL.md §6.3)."""
    d = Pyro4.Proxy("PYRO:Pyro.Daemon@%s:%d" % (args.host, args.port))
    d._pyroTimeout = args.timeout
    with d:
        ids = d.registered()
        meta = d.get_metadata("thing")
        info = d.info()
        d.ping()
        return [sorted(ids), sorted(meta["methods"]), bool(info)]


def sc_ping(args, steps):
    with make_proxy(args) as p:
        p._pyroBind()
        Pyro4.message.Message.ping(p._pyroConnection)
        return p.echo("after-ping")


def sc_correlation(args, steps):
    import uuid
    Pyro4.current_context.correlation_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with make_proxy(args) as p:
        return p.echo("correlated")


def sc_user_annotations(args, steps):
    class AnnotatingProxy(Pyro4.Proxy):
        def _pyroAnnotations(self):
            return {"XTRA": b"user annotation", "XTR2": b""}

    p = AnnotatingProxy("PYRO:thing@%s:%d" % (args.host, args.port))
    p._pyroTimeout = args.timeout
    with p:
        return p.echo("annotated")


def sc_custom_handshake(args, steps):
    with make_proxy(args) as p:
        p._pyroHandshake = {"token": "s3cr\u00e9t", "n": [1, 2]}
        return p.echo("after-handshake")


class Point(object):
    def __init__(self, x, y):
        self.x, self.y = x, y


def sc_object_args(args, steps):
    """Objects as arguments travel as dicts with "__class__" (PROTOCOL.md §8 #10): a user class
    the daemon does not know (it answers SerializeError), an exception, a proxy."""
    with make_proxy(args) as p:
        for v in (Point(1, 2), ValueError("bad", 7), Pyro4.Proxy("PYRO:other@localhost:1")):
            try:
                p.echo(v)
                steps.add(type(v).__name__, "ok")
            except Exception as e:
                steps.add(type(v).__name__, exc_name(e))
        return len(steps)


def sc_metadata_off_property(args, steps):
    """METADATA=False: `p.value` is sent as a call of a method named "value"."""
    with _proxy_without_metadata(args) as p:
        return repr(p.value())


def _marshal_batch(p, calls, oneway=False):
    # Pyro4 4.82's marshal client sends batches with kwargs None and fails on it
    # (tests/vectors/pyro4/README.md); _pyroInvoke with {} is the same call the daemon accepts.
    flags = Pyro4.message.FLAGS_BATCH | (Pyro4.message.FLAGS_ONEWAY if oneway else 0)
    r = p._pyroInvoke("<batch>", calls, {}, flags)
    return None if oneway else list(r)


def sc_dotted(args, steps):
    """A dotted method name, as `proxy._pyroInvoke("sub.echo", ...)` sends it."""
    with make_proxy(args) as p:
        return p._pyroInvoke(args.name or "sub.echo", ("x",), {})


def sc_dotted_client_attr(args, steps):
    """Ordinary client code emitting a dotted name: METADATA=False; p.sub.echo("y")."""
    with _proxy_without_metadata(args) as p:
        return p.sub.echo("y")


def sc_private(args, steps):
    with make_proxy(args) as p:
        return p._pyroInvoke(args.name or "_private", (), {})


def sc_batch_name(args, steps):
    """A batch of echo(1) and a call of --name (dotted or private)."""
    name = args.name or "sub.echo"
    with make_proxy(args) as p:
        if args.serializer == "marshal":
            return _marshal_batch(p, [("echo", (1,), {}), (name, (2,), {})])
        b = Pyro4.batch(p)
        b.echo(1)
        getattr(b, "__getattr__")(name)(2)
        return list(b())


def sc_getattr_name(args, steps):
    """Property read of --name (the daemon's __getattr__ path, PROTOCOL.md §6.1)."""
    with make_proxy(args) as p:
        return p._pyroInvoke("__getattr__", (args.name or "sub.value",), {})


def sc_setattr_name(args, steps):
    with make_proxy(args) as p:
        return p._pyroInvoke("__setattr__", (args.name or "sub.value", 7), {})


def sc_blob_name(args, steps):
    """A KEEPSERIALIZED call whose BLBI names --name (PROTOCOL.md §2.8)."""
    with make_proxy(args) as p:
        return p._pyroInvoke(args.name or "sub.echo",
                             (Pyro4.core.SerializedBlob("blobinfo", {"k": [1]}),), {})


# --- policy scenarios: several operations on named objects over one connection per object --------


def _plain(v):
    """Results as JSON can carry them: a Pyro URI (name server lookups) as its text."""
    if isinstance(v, Pyro4.core.URI):
        return str(v)
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)) or hasattr(v, "__next__"):
        return [_plain(x) for x in v]  # an iterator: a streamed result (PROTOCOL.md §6.2)
    return v


def _op(proxy, op):
    if "call" in op:
        return getattr(proxy, op["call"])(*op.get("args", []), **op.get("kwargs", {}))
    if "get" in op:
        return getattr(proxy, op["get"])
    if "set" in op:
        setattr(proxy, op["set"], op["value"])
        return None
    if "batch" in op:
        b = Pyro4.batch(proxy)
        for name, vargs in op["batch"]:
            getattr(b, name)(*vargs)
        return list(b())
    if "invoke" in op:
        # A call the client does not check against the metadata (PROTOCOL.md §6 step 7).
        return proxy._pyroInvoke(op["invoke"], tuple(op.get("args", [])), {})
    raise ValueError("unknown op %r" % (op,))


def sc_ops(args, steps):
    """Run --ops (a JSON list) in order. Each op names its "object" (default thing) and one of
    {"call": NAME, "args": [...]}, {"get": NAME}, {"set": NAME, "value": V},
    {"batch": [[NAME, [ARGS...]], ...]}, {"invoke": NAME, "args": [...]} (no metadata check).
    One proxy (one connection) per object, opened at its first op. Every op's outcome is
    recorded, so one refusal does not hide what the next op on the same connection gets:
    result = [{"ok": true, "result": R} | {"ok": false, "exc_type": T, "exc_msg": M}, ...]."""
    if args.no_metadata:
        Pyro4.config.METADATA = False
    proxies = {}
    out = []
    try:
        for op in json.loads(args.ops):
            obj = op.get("object", "thing")
            if obj not in proxies:
                where = "./u:%s" % args.unix if args.unix else "%s:%d" % (args.host, args.port)
                p = Pyro4.Proxy("PYRO:%s@%s" % (obj, where))
                p._pyroTimeout = args.timeout
                proxies[obj] = p
            try:
                out.append({"ok": True, "result": _plain(_op(proxies[obj], op))})
            except Exception as e:
                out.append({"ok": False, "exc_type": exc_name(e), "exc_msg": str(e)})
                if isinstance(e, Pyro4.errors.CommunicationError):
                    # A refused CONNECT: the next op on this object connects anew.
                    proxies.pop(obj)._pyroRelease()
    finally:
        for p in proxies.values():
            p._pyroRelease()
    return out


SCENARIOS = {
    "echo": sc_echo,
    "oneway": sc_oneway,
    "batch": sc_batch,
    "getattr": sc_getattr,
    "setattr": sc_setattr,
    "stream": sc_stream,
    "compressed": sc_compressed,
    "blob": sc_blob,
    "big": sc_big,
    "many": sc_many,
    "concurrent": sc_concurrent,
    "evil_connect": sc_evil_connect,
    "switch_invoke": sc_switch_invoke,
    "switch_oneway": sc_switch_oneway,
    "no_metadata": sc_no_metadata,
    "kwargs": sc_kwargs,
    "rich_args": sc_rich_args,
    "unicode_args": sc_unicode_args,
    "big_arg": sc_big_arg,
    "compressed_batch": sc_compressed_batch,
    "blob_compressed": sc_blob_compressed,
    "oneway_batch": sc_oneway_batch,
    "async_calls": sc_async_calls,
    "stream_close": sc_stream_close,
    "daemon_object": sc_daemon_object,
    "ping": sc_ping,
    "correlation": sc_correlation,
    "user_annotations": sc_user_annotations,
    "custom_handshake": sc_custom_handshake,
    "object_args": sc_object_args,
    "metadata_off_property": sc_metadata_off_property,
    "dotted": sc_dotted,
    "dotted_client_attr": sc_dotted_client_attr,
    "private": sc_private,
    "batch_name": sc_batch_name,
    "getattr_name": sc_getattr_name,
    "setattr_name": sc_setattr_name,
    "blob_name": sc_blob_name,
    "ops": sc_ops,
}


def configure(args):
    # The switch_* scenarios connect with serpent and switch per proxy afterwards.
    if args.scenario.startswith("switch_"):
        Pyro4.config.SERIALIZER = "serpent"
    else:
        Pyro4.config.SERIALIZER = args.serializer
    Pyro4.config.COMMTIMEOUT = args.timeout
    Pyro4.config.MAX_RETRIES = 0
    if args.plain:
        Pyro4.config.SSL = False
        return
    Pyro4.config.SSL = True
    Pyro4.config.SSL_CACERTS = args.ca or ""
    Pyro4.config.SSL_CLIENTCERT = args.cert or ""
    Pyro4.config.SSL_CLIENTKEY = args.key or ""
    # Pyro4 caches its client context (PROTOCOL.md §11) and builds it lazily without a lock:
    # threads connecting at once can get the cached context before its CA and certificate are
    # loaded. Build it now, before any thread runs (and narrow it when asked).
    ctx = Pyro4.socketutil.getSSLcontext(
        clientcert=Pyro4.config.SSL_CLIENTCERT,
        clientkey=Pyro4.config.SSL_CLIENTKEY,
        cacerts=Pyro4.config.SSL_CACERTS,
    )
    if args.tls_max:
        ctx.maximum_version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[args.tls_max]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--unix", help="connect to this Unix socket instead of host:port")
    ap.add_argument("--serializer", default="serpent")
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--plain", action="store_true", help="no TLS (talk to the daemon directly)")
    ap.add_argument("--marker", default="/nonexistent/marker")
    ap.add_argument("--token")
    ap.add_argument("--name", help="method or attribute name for the *_name, dotted, private scenarios")
    ap.add_argument("--tls-max", choices=["1.2", "1.3"])
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=20)
    ap.add_argument("--ops", default="[]", help="the ops scenario's operations (JSON list)")
    ap.add_argument("--no-metadata", action="store_true", help="ops: Pyro4.config.METADATA = False")
    args = ap.parse_args()

    steps = Steps()
    try:
        configure(args)
        result = SCENARIOS[args.scenario](args, steps)
        out = {"ok": True, "result": result, "steps": steps}
    except Exception as e:
        out = {"ok": False, "exc_type": exc_name(e), "exc_msg": str(e), "steps": steps}
    json.dump(out, sys.stdout, default=repr)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
