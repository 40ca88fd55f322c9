"""Pyro4 protocols 47 and 46 (Pyro4 4.22-4.37, PROTOCOL.md §13): the servers that need pyroguard
most — the era of DOTTEDNAMES and of names without a private check (§7.2). The header layout is
protocol 48's with another version number; each connection speaks the protocol of its first
message, among those `pyro.protocols` lists.

Those Pyro4 releases do not run on the Python here (and nothing may be downloaded), so neither a
real 4.2x/4.3x daemon nor client is used: the clients send frames built for version 47/46 (the
payloads a Pyro4 client writes, as captured from 4.82 — the serializers did not change), and the
backend is a fake that records every byte it reads and answers in the version it was spoken to.
Refusals are checked the way an old client would read them: its frame version, its seq, and a
payload Debian's Pyro4 serializer decodes to Pyro4.errors.SecurityError."""

import socket
import threading

import pytest
import serpent

from conftest import (FLAG_EXCEPTION, FLAG_ONEWAY, MSG_CONNECT, MSG_CONNECTFAIL, MSG_CONNECTOK, MSG_INVOKE,
                      MSG_RESULT, parse_pyro4_frames, pyro4_frame, read_until_closed, read_vector,
                      recv_frames, wait_until)

FLAG_BATCH, FLAG_KEEPSERIALIZED = 0x08, 0x40
CONNECT_BODY = read_vector("serpent/echo/00_c2s_CONNECT.bin")[24:]
SER_SERPENT = 1


def serpent_call(obj, method, args):
    return serpent.dumps((obj, method, tuple(args), {}), module_in_classname=True)


class OldPyro4Backend(object):
    """A fake Pyro4 daemon of any protocol 46-48 (no such release runs here): records every byte
    of every connection, answers CONNECT with CONNECTOK and an echo INVOKE with its first
    argument, each in the version, seq and serializer it was spoken to."""

    def __init__(self, port):
        self.received = []  # bytes per accepted connection
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", port))
        self.srv.listen(16)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.received.append(b"")
            threading.Thread(target=self.serve, args=(conn, len(self.received) - 1),
                             daemon=True).start()

    def serve(self, conn, i):
        buf = b""
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                self.received[i] += data
                buf += data
                frames = [f for f in parse_pyro4_frames(buf) if "partial" not in f]
                for f in frames:
                    buf = buf[len(f["raw"]):]
                    reply = self.answer(f)
                    if reply:
                        conn.sendall(reply)

    @staticmethod
    def answer(f):
        if f["type"] == MSG_CONNECT:
            return pyro4_frame(MSG_CONNECTOK, payload=serpent.dumps("hello"), seq=f["seq"],
                               version=f["version"])
        if f["type"] == MSG_INVOKE and not f["flags"] & FLAG_ONEWAY:
            obj, method, args, kwargs = serpent.loads(f["payload"])
            return pyro4_frame(MSG_RESULT, payload=serpent.dumps(args[0] if args else None),
                               seq=f["seq"], version=f["version"])
        return None

    def connections_with_bytes(self):
        return [c for c in self.received if c]

    def close(self):
        self.srv.close()


@pytest.fixture
def old_stack(make_stack):
    """pyroguard listing `protocols` in front of the fake old daemon."""
    backends = []

    def make(protocols):
        stack = make_stack({"pyro": {"protocols": protocols}}, backend=False)
        backends.append(OldPyro4Backend(stack.backend.port))
        return stack, backends[-1]

    yield make
    for b in backends:
        b.close()


def security_error_of(frame, version):
    """The refusal an old client gets: its version, EXCEPTION, a SecurityError it can load."""
    import Pyro4.errors
    import Pyro4.util
    assert frame["version"] == version, frame
    assert frame["type"] == MSG_RESULT and frame["flags"] & FLAG_EXCEPTION, frame
    exc = Pyro4.util.SerpentSerializer().deserializeData(frame["payload"])
    assert isinstance(exc, Pyro4.errors.SecurityError), exc
    return str(exc)


@pytest.mark.parametrize("version,spelling", [(47, 4.47), (46, 4.46)])
def test_an_old_client_calls_through_with_its_frames_forwarded_byte_for_byte(
        old_stack, version, spelling):
    stack, backend = old_stack([spelling, 4])
    connect = pyro4_frame(MSG_CONNECT, payload=CONNECT_BODY, version=version)
    invoke = pyro4_frame(MSG_INVOKE, payload=serpent_call("thing", "echo", ["hi there"]), seq=1,
                         version=version)
    oneway = pyro4_frame(MSG_INVOKE, payload=serpent_call("thing", "echo", ["quiet"]), seq=2,
                         flags=FLAG_ONEWAY, version=version)
    with stack.tls_socket() as s:
        s.sendall(connect)
        [ok] = recv_frames(s, 1)
        assert ok["type"] == MSG_CONNECTOK and ok["version"] == version
        s.sendall(invoke)
        [r] = recv_frames(s, 1)
        assert r["version"] == version and r["seq"] == 1
        assert serpent.loads(r["payload"]) == "hi there"
        s.sendall(oneway)
        s.sendall(invoke)
        [r] = recv_frames(s, 1)
        assert r["seq"] == 1
    wait_until(lambda: len(backend.connections_with_bytes()) == 1 and
               len(backend.received[0]) == len(connect + invoke + oneway + invoke), 10,
               what="the daemon to read every forwarded byte")
    assert backend.received[0] == connect + invoke + oneway + invoke
    assert stack.pg.logs(event="refused") == []


# Names a DOTTEDNAMES=True server of 4.22-4.28 would walk (§7.2: `echo.__globals__` reaches the
# module's globals), and private names 4.22-4.26 would call without any check.
REFUSED_NAMES = [
    ("echo.__globals__.x", "dotted_name"),
    ("echo.__globals__.__setitem__", "dotted_name"),
    ("sub.echo", "dotted_name"),
    ("__class__", "private_name"),
    ("_private", "private_name"),
    ("__init__", "private_name"),
]


@pytest.mark.parametrize("name,reason", REFUSED_NAMES)
def test_names_an_old_server_would_walk_or_call_are_refused_in_its_own_protocol(
        old_stack, name, reason):
    stack, backend = old_stack([4.47, 4])
    connect = pyro4_frame(MSG_CONNECT, payload=CONNECT_BODY, version=47)
    bad = pyro4_frame(MSG_INVOKE, payload=serpent_call("thing", name, ["x"]), seq=1, version=47)
    after = pyro4_frame(MSG_INVOKE, payload=serpent_call("thing", "echo", ["after"]), seq=2,
                        version=47)
    with stack.tls_socket() as s:
        s.sendall(connect)
        recv_frames(s, 1)
        s.sendall(bad)
        [r] = recv_frames(s, 1)
        assert r["seq"] == 1
        text = security_error_of(r, 47)
        assert name.split(".")[0] in text or name in text, text
        # The connection goes on, as after any refused call.
        s.sendall(after)
        [r] = recv_frames(s, 1)
        assert serpent.loads(r["payload"]) == "after"
    [line] = stack.pg.logs(event="refused")
    assert line["reason"] == reason and line["protocol"] == "pyro4.47", line
    wait_until(lambda: backend.received and backend.received[0].endswith(after), 10,
               what="the call after the refusal to reach the daemon")
    assert backend.received[0] == connect + after  # the refused INVOKE never reached it


@pytest.mark.parametrize("flags", [FLAG_BATCH, 0x10, FLAG_KEEPSERIALIZED, 0x20])
def test_flags_whose_meaning_in_protocol_47_is_not_established_are_refused(old_stack, flags):
    """BATCH is 0x10 in protocols 44/45 and 0x08 in 48; 46/47 are not documented. A batch read as
    a single call (or the reverse) would let hidden names through, so both bits are refused, as
    are KEEPSERIALIZED, ITEMSTREAMRESULT and META_ON_CONNECT, which came later."""
    stack, backend = old_stack([4.47])
    connect = pyro4_frame(MSG_CONNECT, payload=CONNECT_BODY, version=47)
    odd = pyro4_frame(MSG_INVOKE, payload=serpent_call("thing", "echo", ["x"]), seq=1,
                      flags=flags, version=47)
    with stack.tls_socket() as s:
        s.sendall(connect)
        recv_frames(s, 1)
        s.sendall(odd)
        [r] = recv_frames(s, 1)
        assert "not supported for Pyro protocol 47" in security_error_of(r, 47)
    [line] = stack.pg.logs(event="refused")
    assert line["reason"] == "unsupported_flags", line
    stack.pg.settle()
    assert backend.received == [connect]


def test_a_protocol_not_listed_is_told_so_in_its_own_framing_and_closed(old_stack):
    import marshal
    stack, backend = old_stack([4])
    with stack.tls_socket() as s:
        s.sendall(pyro4_frame(MSG_CONNECT, payload=CONNECT_BODY, version=47))
        data, how = read_until_closed(s)
    assert how != "timeout", how
    [f] = parse_pyro4_frames(data)
    assert f["type"] == MSG_CONNECTFAIL and f["version"] == 47, f
    assert "not accepted here" in marshal.loads(f["payload"])
    [line] = stack.pg.logs(event="refused")
    assert line["reason"] == "protocol_version" and line["action"] == "connectfail", line
    assert line["detail"] == ("pyroguard: Pyro protocol version 47 (pyro4.47) is not accepted "
                              "here (pyro.protocols)"), line
    stack.pg.settle()
    assert backend.received == []  # never dialled


def test_a_connection_cannot_switch_protocol_after_its_first_message(old_stack):
    stack, backend = old_stack([4.47, 4])
    connect = pyro4_frame(MSG_CONNECT, payload=CONNECT_BODY, version=47)
    with stack.tls_socket() as s:
        s.sendall(connect)
        recv_frames(s, 1)
        s.sendall(pyro4_frame(MSG_INVOKE, payload=serpent_call("thing", "echo", ["x"]), seq=1,
                              version=48))
        data, how = read_until_closed(s)
    assert data == b"" and how != "timeout", (data, how)
    [line] = stack.pg.logs(event="refused")
    assert line["reason"] == "protocol_version", line
    assert "on a connection that began with pyro4.47" in line["detail"], line
    stack.pg.settle()
    assert backend.received == [connect]


def test_old_and_current_clients_share_one_listener(old_stack):
    stack, backend = old_stack([4.46, 4.47, 4])
    for version in (46, 47, 48, 47):
        with stack.tls_socket() as s:
            s.sendall(pyro4_frame(MSG_CONNECT, payload=CONNECT_BODY, version=version))
            [ok] = recv_frames(s, 1)
            assert ok["version"] == version
            s.sendall(pyro4_frame(MSG_INVOKE, payload=serpent_call("thing", "echo", [version]),
                                  seq=1, version=version))
            [r] = recv_frames(s, 1)
            assert r["version"] == version and serpent.loads(r["payload"]) == version
    opened = stack.pg.logs(event="conn_open")
    assert len(opened) == 4
    assert stack.pg.logs(event="refused") == []


def test_a_refused_connect_of_protocol_47_gets_a_connectfail_it_can_read(make_stack):
    """No client rule for this certificate: CONNECTFAIL in version 47, marshal text."""
    import marshal
    stack = make_stack({"pyro": {"protocols": [4.47]},
                        "clients": [{"name": "nobody", "match": {"cn": "no-such-client"},
                                     "allow": [{"object": "**", "methods": ["*"]}]}]},
                       backend=False)
    backend = OldPyro4Backend(stack.backend.port)
    try:
        with stack.tls_socket() as s:
            s.sendall(pyro4_frame(MSG_CONNECT, payload=CONNECT_BODY, version=47))
            data, how = read_until_closed(s)
        [f] = parse_pyro4_frames(data)
        assert f["version"] == 47 and f["type"] == MSG_CONNECTFAIL, f
        assert "no client rule matches" in marshal.loads(f["payload"]), f
        stack.pg.settle()
        assert backend.received == []  # never dialled
    finally:
        backend.close()
