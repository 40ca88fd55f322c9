#!/usr/bin/python3
"""One client process of the pyroguard soak (tests/soak/soak.py): real Pyro4 4.82 clients over
mutual TLS, several threads, until a deadline, then one JSON report.

Roles:
  honest   each thread opens a proxy with a random serializer (serpent, json, marshal, msgpack),
           makes 1..MAX_PER_CONN calls on it (echo of small and medium values, a short sleep, a
           property read), then opens another. Every result is compared with what was sent.
  refuser  each thread makes calls pyroguard must refuse: a method the policy does not allow
           (not_allowed), an object it does not allow (object_not_allowed, refused at CONNECT),
           a pickle client (serializer_not_allowed, refused at CONNECT), a dotted name
           (dotted_name) and a private name (private_name). After refused INVOKEs an honest echo
           on the same connection proves the connection stayed usable (PROTOCOL/DESIGN: a refused
           INVOKE gets a SecurityError and the connection stays open).

Every call is bounded by Pyro4's COMMTIMEOUT and watched by a thread of its own: a call that
neither returns nor raises within the bound counts as hung. Each call is recorded as answered,
failed (with the exception, the time the connection was begun and the time it failed, so that
the soak can tell whether a backend kill explains the failure) or hung.

The soak counts, from this report, what pyroguard's metrics must show: TCP connections opened
to pyroguard (Pyro4's createSocket is wrapped), CONNECTs and INVOKEs that pyroguard must have
counted as allowed (answered) or may have (cut by a backend kill), and refusals by reason.

Usage (soak.py runs it):
    pyro_worker.py --role honest|refuser --port PORT --certs DIR --until UNIX_TIME
                   --seed N --threads N --timeout S --out FILE
"""

import argparse
import json
import os
import random
import socket
import string
import sys
import threading
import time
import traceback

import Pyro4
import Pyro4.core
import Pyro4.errors
import Pyro4.socketutil

SERIALIZERS = ("serpent", "json", "marshal", "msgpack")
MAX_PER_CONN = 60  # calls per proxy before it is released and another one opened

# How pyroguard words its refusals (README.md "What happens to each message"); the soak counts a
# refusal under a reason only when the client got exactly that refusal.
REFUSAL_TEXT = {
    "not_allowed": "pyroguard: method 'count' of object 'thing' is not allowed",
    "object_not_allowed": "pyroguard: object 'secret' is not allowed",
    "serializer_not_allowed": "pyroguard: serializer pickle (id 4) is not allowed",
    "dotted_name": "contains a dot",
    "private_name": "is private",
}
BACKEND_UNAVAILABLE = "pyroguard: backend unavailable"


def exc_name(e):
    t = type(e)
    return "%s.%s" % (t.__module__, t.__name__)


def exc_label(e):
    """The exception's name, and for pyroguard's CONNECTFAIL its reason: for the report."""
    if e is None:
        return "watchdog"
    if isinstance(e, Pyro4.errors.CommunicationError) and BACKEND_UNAVAILABLE in str(e):
        return exc_name(e) + " (CONNECTFAIL backend unavailable)"
    return exc_name(e)


# --- Pyro4 client setup, shared with soak.py -----------------------------------------------------


class ConnCounter(object):
    """Counts the TCP connections Pyro4 opens (its createSocket with connect=…): every one of
    them is a connection pyroguard accepts and must count in pyroguard_connections_total."""

    def __init__(self):
        self.lock = threading.Lock()
        self.attempts = 0
        self.errors = 0

    def install(self):
        orig = Pyro4.socketutil.createSocket

        def counted(*args, **kwargs):
            if kwargs.get("connect") is not None:
                with self.lock:
                    self.attempts += 1
                try:
                    return orig(*args, **kwargs)
                except Exception:
                    # Connecting to a listening loopback port does not fail; a failure here is
                    # the TLS handshake (or its timeout), reported and judged by the soak.
                    with self.lock:
                        self.errors += 1
                    raise
            return orig(*args, **kwargs)

        Pyro4.socketutil.createSocket = counted


def configure_pyro(certs, timeout):
    """Pyro4's client configuration, process-wide: SSL with the `client` certificate (rule
    `soak`), no retries, every socket operation bounded by |timeout|."""
    Pyro4.config.SERIALIZER = "serpent"
    Pyro4.config.COMMTIMEOUT = timeout
    Pyro4.config.MAX_RETRIES = 0
    Pyro4.config.METADATA = True
    Pyro4.config.SSL = True
    Pyro4.config.SSL_CACERTS = os.path.join(certs, "ca.crt")
    Pyro4.config.SSL_CLIENTCERT = os.path.join(certs, "client.crt")
    Pyro4.config.SSL_CLIENTKEY = os.path.join(certs, "client.key")
    # Pyro4 builds its cached client context lazily and without a lock (README.md "Pyro clients"):
    # build it before any thread connects.
    Pyro4.socketutil.getSSLcontext(clientcert=Pyro4.config.SSL_CLIENTCERT,
                                   clientkey=Pyro4.config.SSL_CLIENTKEY,
                                   cacerts=Pyro4.config.SSL_CACERTS)


def new_proxy(port, serializer, timeout, obj="thing"):
    p = Pyro4.Proxy("PYRO:%s@localhost:%d" % (obj, port))
    p._pyroSerializer = serializer
    p._pyroTimeout = timeout
    return p


def bind_watched(proxy, wd, what):
    """Connect |proxy| (CONNECT) under the watchdog: (start time, exception or None, hung)."""
    t_conn = time.time()
    wd.begin(what)
    try:
        proxy._pyroBind()
        err = None
    except Exception as e:
        err = e
    return t_conn, err, wd.end()


def release(proxy):
    try:
        proxy._pyroRelease()
    except Exception:
        pass


# --- bookkeeping ---------------------------------------------------------------------------------


class Report(object):
    """Everything a worker counts; merged by soak.py. Thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        # honest calls: serializer -> outcome -> n (answered, failed, hung, wrong_answer, broken)
        self.calls = {s: {} for s in SERIALIZERS}
        # every failed or hung honest call: [t_conn, t_fail, serializer, what, exc_type, exc_msg]
        self.failures = []
        # refused calls: kind -> outcome -> n (refused, backend_unavailable, failed, hung, wrong)
        self.refused = {}
        self.refused_failures = []  # [t_conn, t_fail, kind, exc_type, exc_msg]
        # what pyroguard's requests_total must reflect
        self.connect_ok = 0  # CONNECTOK received: counted allowed
        self.connect_unknown = 0  # cut by a fault: allowed may or may not have been counted
        self.invoke_ok = 0  # allowed INVOKE answered: counted allowed
        self.invoke_unknown = 0
        self.refusals = {}  # reason -> n, refusals the client received
        self.exc_types = {}  # "serializer exc_type" -> n, for the report
        self.errors = []  # internal errors of this worker (a bug in the soak: fails it)

    def bump(self, table, key, sub=None, n=1):
        with self.lock:
            if sub is None:
                table[key] = table.get(key, 0) + n
            else:
                d = table.setdefault(key, {})
                d[sub] = d.get(sub, 0) + n

    def add(self, field, n=1):
        with self.lock:
            setattr(self, field, getattr(self, field) + n)

    def as_dict(self, conns):
        with self.lock:
            return {
                "calls": self.calls, "failures": self.failures, "refused": self.refused,
                "refused_failures": self.refused_failures, "connect_ok": self.connect_ok,
                "connect_unknown": self.connect_unknown, "invoke_ok": self.invoke_ok,
                "invoke_unknown": self.invoke_unknown, "refusals": self.refusals,
                "exc_types": self.exc_types, "errors": self.errors,
                "tcp_connects": conns.attempts, "tcp_connect_errors": conns.errors,
            }


class Watchdog(object):
    """Marks a call hung when it has run longer than |limit| seconds (Pyro4's own timeout should
    have ended it well before). One entry per thread."""

    def __init__(self, limit):
        self.limit = limit
        self.lock = threading.Lock()
        self.inflight = {}  # thread ident -> [t_start, what, hung?]
        self.hung = []  # descriptions of calls seen hung
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def begin(self, what):
        with self.lock:
            self.inflight[threading.get_ident()] = [time.time(), what, False]

    def end(self):
        """Returns True when the call that just ended had been declared hung."""
        with self.lock:
            e = self.inflight.pop(threading.get_ident(), None)
        return bool(e and e[2])

    def run(self):
        while not self.stop.wait(0.5):
            now = time.time()
            with self.lock:
                for e in self.inflight.values():
                    if not e[2] and now - e[0] > self.limit:
                        e[2] = True
                        self.hung.append("%s (running %.1f s)" % (e[1], now - e[0]))

    def still_running(self):
        with self.lock:
            return ["%s (running %.1f s)" % (e[1], time.time() - e[0])
                    for e in self.inflight.values()]


def classify_exception(e):
    """'hung' for a timeout (the bound was hit: nothing answered), 'failed' for a clean failure
    in Pyro's terms (connection closed, connection refused by pyroguard, socket error), 'broken'
    for anything else (a protocol error, a wrong serializer, an unexpected exception)."""
    if isinstance(e, (Pyro4.errors.TimeoutError, socket.timeout)):
        return "hung"
    if isinstance(e, (Pyro4.errors.CommunicationError, OSError)) and \
            not isinstance(e, (Pyro4.errors.ProtocolError, Pyro4.errors.SecurityError)):
        return "failed"
    return "broken"


# --- honest calls --------------------------------------------------------------------------------


def small_value(rng, serializer):
    """A value every serializer carries and gives back equal: str keys, no tuples or bytes."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randrange(-2 ** 40, 2 ** 40)
    if kind == 1:
        return "".join(rng.choice(string.ascii_letters + " \u00e9\u2603") for _ in range(rng.randrange(0, 64)))
    if kind == 2:
        return [rng.randrange(1000) for _ in range(rng.randrange(0, 20))]
    if kind == 3:
        return {"k%d" % i: [i, "v%d" % i, None, True] for i in range(rng.randrange(0, 10))}
    if kind == 4:
        return rng.random() * 1e6
    return {"nested": {"a": [1, {"b": ["c", False]}]}, "n": None}


def medium_value(rng):
    unit = "".join(rng.choice(string.ascii_letters) for _ in range(256))
    return unit * rng.randrange(16, 256)  # 4 .. 64 KiB: several TLS records


def honest_call(proxy, rng, serializer):
    """Makes one call; returns (what, expected, got)."""
    r = rng.random()
    if r < 0.80:
        v = small_value(rng, serializer)
        return "echo", v, proxy.echo(v)
    if r < 0.85:
        # A call that takes a while: some are always in flight when the daemon is killed.
        d = round(rng.uniform(0.05, 0.5), 3)
        return "sleep", d, proxy.sleep(d)
    if r < 0.95 and serializer != "marshal":
        # Pyro4 4.82's marshal client cannot read a property (it calls .items() on a None
        # kwargs before sending: tests/vectors/pyro4/README.md); it echoes instead.
        return "value", 42, proxy.value
    v = medium_value(rng)
    return "echo_medium", v, proxy.echo(v)


def honest_thread(args, rep, wd, rng, stop_at):
    proxy, serializer, left, t_conn = None, None, 0, 0.0
    while time.time() < stop_at:
        if proxy is None:
            serializer = rng.choice(SERIALIZERS)
            proxy = new_proxy(args.port, serializer, args.timeout)
            left = rng.randrange(1, MAX_PER_CONN + 1)
            t_conn, err, hung = bind_watched(proxy, wd, "connect %s" % serializer)
            ok = err is None
            if ok and not hung:
                rep.add("connect_ok")
            else:
                record_connect_failure(rep, err, hung, t_conn, serializer, "connect")
                release(proxy)
                proxy = None
                time.sleep(rng.uniform(0.01, 0.1))  # the backend may be down: do not spin
                continue
        wd.begin("call %s" % serializer)
        try:
            what, expected, got = honest_call(proxy, rng, serializer)
            err = None
        except Exception as e:
            what, err = "call", e
        hung = wd.end()
        if err is None and not hung:
            rep.add("invoke_ok")
            rep.bump(rep.calls, serializer, "answered" if got == expected else "wrong_answer")
            if got != expected:
                with rep.lock:
                    rep.failures.append([t_conn, time.time(), serializer, what, "wrong answer",
                                         ("%r != %r" % (got, expected))[:300]])
            left -= 1
        else:
            outcome = "hung" if hung else classify_exception(err)
            rep.add("invoke_unknown")
            rep.bump(rep.calls, serializer, outcome)
            rep.bump(rep.exc_types, "%s %s" % (serializer, exc_label(err)))
            with rep.lock:
                rep.failures.append([t_conn, time.time(), serializer, what,
                                     exc_name(err) if err else "hung", str(err)[:300]])
            left = 0
        if left <= 0:
            release(proxy)
            proxy = None
        time.sleep(rng.uniform(0, 0.02))
    if proxy is not None:
        release(proxy)


def record_connect_failure(rep, err, hung, t_conn, serializer, what):
    """A bind that did not end in CONNECTOK: an honest call that failed (or hung)."""
    msg = str(err) if err is not None else ""
    if not hung and isinstance(err, Pyro4.errors.CommunicationError) and BACKEND_UNAVAILABLE in msg:
        rep.bump(rep.refusals, "backend_unavailable")  # a CONNECTFAIL pyroguard counted
        outcome = "failed"
    else:
        rep.add("connect_unknown")
        outcome = "hung" if hung else classify_exception(err)
    rep.bump(rep.calls, serializer, outcome)
    rep.bump(rep.exc_types, "%s %s" % (serializer, exc_label(err)))
    with rep.lock:
        rep.failures.append([t_conn, time.time(), serializer, what,
                             exc_name(err) if err else "hung", msg[:300]])


# --- refused calls -------------------------------------------------------------------------------

INVOKE_KINDS = ("not_allowed", "dotted_name", "private_name")
CONNECT_KINDS = ("object_not_allowed", "serializer_not_allowed")


def refused_invoke(proxy, kind):
    if kind == "not_allowed":
        return proxy.count()  # exposed by the daemon, not in the soak's policy
    if kind == "dotted_name":
        return proxy._pyroInvoke("sub.echo", ("x",), {})
    return proxy._pyroInvoke("_private", (), {})


def refuser_thread(args, rep, wd, rng, stop_at):
    while time.time() < stop_at:
        if rng.random() < 0.4:
            refused_connect(args, rep, wd, rng, rng.choice(CONNECT_KINDS))
        else:
            refused_invokes(args, rep, wd, rng)
        time.sleep(rng.uniform(0.02, 0.2))


def note_refused(rep, kind, outcome, t_conn=None, err=None):
    rep.bump(rep.refused, kind, outcome)
    if outcome != "refused":
        with rep.lock:
            rep.refused_failures.append([t_conn, time.time(), kind,
                                         exc_name(err) if err else "hung",
                                         str(err)[:300] if err else ""])


def refused_connect(args, rep, wd, rng, kind):
    """A CONNECT pyroguard refuses before it dials the backend: whatever the daemon's state,
    the client gets CONNECTFAIL with the reason."""
    if kind == "object_not_allowed":
        proxy = new_proxy(args.port, rng.choice(SERIALIZERS), args.timeout, obj="secret")
    else:
        proxy = new_proxy(args.port, "pickle", args.timeout)
    t_conn, err, hung = bind_watched(proxy, wd, "refused %s" % kind)
    release(proxy)
    if hung:
        note_refused(rep, kind, "hung", t_conn, err)
    elif err is None:
        note_refused(rep, kind, "wrong")  # CONNECTOK for a CONNECT that must be refused
        rep.add("connect_ok")
    elif isinstance(err, Pyro4.errors.CommunicationError) and REFUSAL_TEXT[kind] in str(err):
        rep.bump(rep.refusals, kind)
        note_refused(rep, kind, "refused")
    else:
        rep.add("connect_unknown")
        note_refused(rep, kind, classify_exception(err), t_conn, err)


def refused_invokes(args, rep, wd, rng):
    """CONNECT (allowed), 1..3 refused INVOKEs, then an honest echo on the same connection."""
    serializer = rng.choice(SERIALIZERS)
    proxy = new_proxy(args.port, serializer, args.timeout)
    t_conn, err, hung = bind_watched(proxy, wd, "connect for refusals %s" % serializer)
    if hung or err is not None:
        record_connect_failure(rep, err, hung, t_conn, serializer, "connect")
        release(proxy)
        return
    rep.add("connect_ok")
    try:
        for _ in range(rng.randrange(1, 4)):
            kind = rng.choice(INVOKE_KINDS)
            wd.begin("refused %s %s" % (kind, serializer))
            try:
                refused_invoke(proxy, kind)
                err = None
            except Exception as e:
                err = e
            hung = wd.end()
            if hung:
                rep.add("invoke_unknown")
                note_refused(rep, kind, "hung", t_conn, err)
                return
            if err is None:
                rep.add("invoke_ok")
                note_refused(rep, kind, "wrong")  # answered: pyroguard let it through
                continue
            if isinstance(err, Pyro4.errors.SecurityError) and REFUSAL_TEXT[kind] in str(err):
                rep.bump(rep.refusals, kind)
                note_refused(rep, kind, "refused")
                continue
            rep.add("invoke_unknown")
            note_refused(rep, kind, classify_exception(err), t_conn, err)
            return
        # The connection stays usable after refusals: an honest call on it must be answered.
        v = "after-refusals-%d" % rng.randrange(10 ** 6)
        wd.begin("echo after refusals %s" % serializer)
        try:
            got = proxy.echo(v)
            err = None
        except Exception as e:
            err = e
        hung = wd.end()
        if err is None and not hung:
            rep.add("invoke_ok")
            rep.bump(rep.calls, serializer, "answered" if got == v else "wrong_answer")
        else:
            rep.add("invoke_unknown")
            rep.bump(rep.calls, serializer, "hung" if hung else classify_exception(err))
            rep.bump(rep.exc_types, "%s %s" % (serializer, exc_label(err)))
            with rep.lock:
                rep.failures.append([t_conn, time.time(), serializer, "echo after refusals",
                                     exc_name(err) if err else "hung", str(err)[:300]])
    finally:
        release(proxy)


# --- main ----------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=("honest", "refuser"), required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--certs", required=True)
    ap.add_argument("--until", type=float, required=True, help="stop starting calls at this unix time")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=20.0, help="Pyro4 COMMTIMEOUT (s)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    conns = ConnCounter()
    conns.install()
    configure_pyro(args.certs, args.timeout)
    rep = Report()
    wd = Watchdog(args.timeout + 5)
    target = honest_thread if args.role == "honest" else refuser_thread

    def run(i):
        try:
            target(args, rep, wd, random.Random("%d-%s-%d" % (args.seed, args.role, i)), args.until)
        except Exception:
            with rep.lock:
                rep.errors.append(traceback.format_exc())

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(args.threads)]
    for t in threads:
        t.start()
    # Every call started before --until is bounded by the timeout; give it that long, and more.
    for t in threads:
        t.join(max(0.0, args.until + args.timeout + 10 - time.time()))
    out = rep.as_dict(conns)
    out["hung"] = wd.hung + ["still running at the end: %s" % s for s in wd.still_running()]
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, args.out)
    sys.stdout.flush()
    os._exit(0)  # threads still stuck in a call (already reported as hung) must not keep us


if __name__ == "__main__":
    main()
