#!/usr/bin/python3
"""A real Pyro4 4.82 client, one scenario per process, for the pyroguard integration tests.

Pyro4's client configuration (serializer, SSL settings) is process-global and its SSL context is
cached on first use, so every scenario runs in a fresh interpreter.

Usage:
    pyro_client.py SCENARIO --port PORT [--host localhost] [--serializer serpent]
                   [--ca ca.crt] [--cert client.crt] [--key client.key] [--plain]
                   [--marker PATH] [--token TEXT] [--tls-max 1.2] [--timeout 20] [--threads 20]

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
    ap.add_argument("--serializer", default="serpent")
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--plain", action="store_true", help="no TLS (talk to the daemon directly)")
    ap.add_argument("--marker", default="/nonexistent/marker")
    ap.add_argument("--token")
    ap.add_argument("--tls-max", choices=["1.2", "1.3"])
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=20)
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
