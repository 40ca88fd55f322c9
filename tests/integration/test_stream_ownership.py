"""Item streams are bound to the connection that opened them (contract "Streams bound to their
owner"; PROTOCOL.md §6.2, §6.3).

A Pyro4 daemon's stream ids are daemon-global: anyone who learns one can call
Pyro.Daemon.get_next_stream_item(id) or close_stream(id) and read or end another client's stream.
pyroguard records the STRM id of every ITEMSTREAMRESULT reply it passes to a connection and lets
those two calls through only on that connection.

The scenario, with real Pyro4 4.82 clients (each in its own /usr/bin/python3 process, mutual TLS
through pyroguard) and the real legacy daemon behind it:
  * client A calls thing.gen(n), a generator: its Pyro4 proxy gets a stream iterator, whose
    streamId is the STRM annotation of the reply; A reads the first item through the iterator;
  * client B, on its own TLS connection with a certificate its rule allows, sends exactly the
    calls A's iterator sends — Pyro.Daemon.get_next_stream_item(id) and close_stream(id), the
    latter also as ONEWAY — naming A's id: each is refused (SecurityError naming the stream, a
    `refused` log line with reason stream_not_owned) and the daemon never sees any of them (its
    byte capture of B's backend connection holds no INVOKE and not the id; its names log gains no
    entry while B runs);
  * A then calls get_next_stream_item with its own id explicitly (positional and keyword), and
    reads the rest of its stream through the iterator: nothing was stolen or closed.

The clients are driven step by step (A must keep its connection open while B runs): DRIVER below
is a real Pyro4 client reading one JSON command per line on stdin and answering one JSON line.
"""

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import MSG_CONNECT, MSG_INVOKE, PYTHON, CLIENT_TIMEOUT

SAFE = ["serpent", "json", "marshal", "msgpack"]

# Both certificates are O=Example (tests/certs/mint.sh): client = CN=billing-client,
# admin = CN=ops-admin. The rule allows the generator; Pyro.Daemon's stream methods come with any
# rule that allows something (policy.c daemon_builtin), so only ownership can refuse them.
STREAMERS = {
    "clients": [{
        "name": "streamers",
        "match": {"o": "Example"},
        "allow": [{"object": "thing", "methods": ["gen", "echo"]}],
    }],
}

DRIVER = textwrap.dedent(r'''
    import json, sys
    import Pyro4, Pyro4.errors, Pyro4.message

    port, serializer, ca, cert, key, timeout = sys.argv[1:7]
    Pyro4.config.SERIALIZER = serializer
    Pyro4.config.COMMTIMEOUT = float(timeout)
    Pyro4.config.MAX_RETRIES = 0
    Pyro4.config.SSL = True
    Pyro4.config.SSL_CACERTS = ca
    Pyro4.config.SSL_CLIENTCERT = cert
    Pyro4.config.SSL_CLIENTKEY = key

    proxy = Pyro4.Proxy("PYRO:thing@localhost:%s" % port)
    proxy._pyroTimeout = float(timeout)
    it = None

    def run(cmd):
        global it
        op = cmd["op"]
        if op == "echo":
            return proxy.echo(cmd["arg"])
        if op == "gen":  # a generator result: the proxy returns a stream iterator
            it = proxy.gen(cmd["n"])
            return it.streamId
        if op == "next":
            return next(it)
        if op == "rest":
            return list(it)
        if op == "invoke":  # a call on Pyro.Daemon over this proxy's connection, as the
                            # iterator itself sends it (Pyro4 core.py _StreamResultIterator)
            flags = Pyro4.message.FLAGS_ONEWAY if cmd.get("oneway") else 0
            return proxy._pyroInvoke(cmd["method"], cmd.get("args", []), cmd.get("kwargs", {}),
                                     flags=flags, objectId="Pyro.Daemon")
        raise ValueError("unknown op %r" % op)

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            out = {"ok": True, "result": run(cmd)}
        except Exception as e:
            t = type(e)
            out = {"ok": False, "exc_type": "%s.%s" % (t.__module__, t.__name__), "exc_msg": str(e)}
        print(json.dumps(out, default=repr), flush=True)
    proxy._pyroRelease()
''')


class Client(object):
    """One real Pyro4 client process (one proxy, one TLS connection through pyroguard)."""

    def __init__(self, stack, workdir, serializer, cert):
        script = Path(workdir) / "stream_driver.py"
        if not script.exists():
            script.write_text(DRIVER)
        certs = Path(stack.certs)
        self.proc = subprocess.Popen(
            [PYTHON, str(script), str(stack.port), serializer, str(certs / "ca.crt"),
             str(certs / ("%s.crt" % cert)), str(certs / ("%s.key" % cert)), "20"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def do(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=5)
            raise AssertionError("the client died on %r: %s" % (cmd, self.proc.stderr.read()))
        return json.loads(line)

    def ok(self, stack, **cmd):
        out = self.do(**cmd)
        assert out["ok"], "%r failed: %r\npyroguard log:\n%s" % (cmd, out, stack.pg.stderr_text())
        return out["result"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(timeout=CLIENT_TIMEOUT)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def clients(tmp_path):
    """clients(stack, serializer, cert) -> a started Client; all are ended at teardown."""
    started = []

    def make(stack, serializer, cert):
        c = Client(stack, tmp_path, serializer, cert)
        started.append(c)
        return c

    yield make
    for c in started:
        c.close()


def assert_stream_refused(outcome, stream_id):
    assert not outcome["ok"], "the call on another connection's stream went through: %r" % outcome
    assert outcome["exc_type"] == "Pyro4.errors.SecurityError", outcome
    assert outcome["exc_msg"] == (
        "pyroguard: stream %s was not opened on this connection" % stream_id), outcome


def run_scenario(stack, clients, serializer, b_cert):
    a = clients(stack, serializer, "client")
    stream_id = a.ok(stack, op="gen", n=6)
    assert isinstance(stream_id, str) and len(stream_id) == 36, stream_id  # str(uuid4())
    assert a.ok(stack, op="next") == 0
    stack.pg.wait_log(event="conn_open")
    a_conn = stack.pg.logs(event="conn_open")[-1]["conn"]

    # B: its own connection, an allowed certificate, a call of its own first (so its backend
    # connection exists and is known to work), then A's id.
    conns_before_b = len(stack.backend.connections())
    b = clients(stack, serializer, b_cert)
    assert b.ok(stack, op="echo", arg="b-is-allowed") == "b-is-allowed"
    names_before = len(stack.backend.resolved_names())
    logs_before = len(stack.pg.logs())
    b_next = b.do(op="invoke", method="get_next_stream_item", args=[stream_id])
    b_close = b.do(op="invoke", method="close_stream", args=[stream_id])
    b_close_kw = b.do(op="invoke", method="close_stream", kwargs={"streamId": stream_id})
    b_oneway = b.do(op="invoke", method="close_stream", args=[stream_id], oneway=True)
    b_after = b.do(op="echo", arg="b-still-usable")

    assert_stream_refused(b_next, stream_id)
    assert_stream_refused(b_close, stream_id)
    assert_stream_refused(b_close_kw, stream_id)
    assert b_oneway == {"ok": True, "result": None}, b_oneway  # a ONEWAY call gets no answer
    assert b_after == {"ok": True, "result": "b-still-usable"}, b_after

    # The refusals are logged, each with its reason, on B's connection (not A's).
    refused = [l for l in stack.pg.logs()[logs_before:] if l.get("event") == "refused"]
    assert [(l.get("reason"), l.get("method"), l.get("action")) for l in refused] == [
        ("stream_not_owned", "get_next_stream_item", "exception_reply"),
        ("stream_not_owned", "close_stream", "exception_reply"),
        ("stream_not_owned", "close_stream", "exception_reply"),
        ("stream_not_owned", "close_stream", "dropped_oneway"),
    ], refused
    for line in refused:
        assert line.get("object") == "Pyro.Daemon", line
        assert line.get("conn") != a_conn, line
    assert [l.get("detail") for l in refused[:3]] == [b_next["exc_msg"], b_close["exc_msg"],
                                                      b_close_kw["exc_msg"]]

    # The daemon never saw B's stream calls: it resolved only B's second echo meanwhile, and
    # B's backend connection carried B's CONNECT and two echoes, never the id.
    assert stack.backend.resolved_names()[names_before:] == [("thing", "method", "echo")]
    b_conns = stack.backend.frames()[conns_before_b:]
    assert len(b_conns) == 1, b_conns
    [b_frames] = b_conns
    assert [f.get("type") for f in b_frames] == [MSG_CONNECT, MSG_INVOKE, MSG_INVOKE], b_frames
    assert all(stream_id.encode() not in f.get("raw", b"") for f in b_frames)
    assert all(b"_stream" not in f.get("raw", b"") for f in b_frames)

    # A: its own id passes on its own connection, given explicitly, positionally or by name...
    assert a.ok(stack, op="invoke", method="get_next_stream_item", args=[stream_id]) == 1
    assert a.ok(stack, op="invoke", method="get_next_stream_item",
                kwargs={"streamId": stream_id}) == 2
    # ...and the iterator reads the rest: B took nothing and closed nothing.
    assert a.ok(stack, op="rest") == [3, 4, 5]
    a_refusals = [l for l in stack.pg.logs(event="refused") if l.get("conn") == a_conn]
    assert a_refusals == [], a_refusals
    daemon_stream_calls = [n for n in stack.backend.resolved_names() if n[0] == "Pyro.Daemon"]
    # next() x1, explicit x2, rest: 3 items and the StopIteration.
    assert daemon_stream_calls == [("Pyro.Daemon", "method", "get_next_stream_item")] * 7


@pytest.mark.parametrize("serializer", SAFE)
def test_another_client_cannot_read_or_close_a_stream_it_did_not_open(make_stack, clients,
                                                                       serializer):
    stack = make_stack(STREAMERS)
    run_scenario(stack, clients, serializer, "admin")


def test_same_certificate_on_another_connection_cannot_use_the_stream(make_stack, clients):
    # Streams belong to a connection, not to an identity.
    stack = make_stack(STREAMERS)
    run_scenario(stack, clients, "serpent", "client")


def test_owner_may_close_its_stream_and_then_cannot_read_it(make_stack, clients):
    stack = make_stack(STREAMERS)
    a = clients(stack, "serpent", "client")
    stream_id = a.ok(stack, op="gen", n=10)
    assert a.ok(stack, op="next") == 0
    assert a.ok(stack, op="invoke", method="close_stream", args=[stream_id]) is None
    # The id is still this connection's: the daemon itself answers that the stream has ended.
    out = a.do(op="invoke", method="get_next_stream_item", args=[stream_id])
    assert not out["ok"] and out["exc_type"] == "Pyro4.errors.PyroError", out
    assert "item stream terminated" in out["exc_msg"], out
    assert stack.refusals() == []
    assert [n for n in stack.backend.resolved_names() if n[0] == "Pyro.Daemon"] == [
        ("Pyro.Daemon", "method", "get_next_stream_item"),
        ("Pyro.Daemon", "method", "close_stream"),
        ("Pyro.Daemon", "method", "get_next_stream_item"),
    ]
