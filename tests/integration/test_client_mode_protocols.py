"""Client mode for clients older than Pyro's own TLS, and for Pyro5, end to end through BOTH
pyroguards:

    plaintext client socket (127.0.0.1)
      -> pyroguard C, client mode (pyro.protocols [4.47] / [4.46] / [5]), egress policy
         -> mutual TLS with C's client certificate (certs/client.crt), the upstream's checked
      -> pyroguard S, server mode (same protocols), its clients: rules judging C's certificate
      -> a FAKE daemon of that protocol, plaintext on 127.0.0.1, recording every byte it reads

What is real: both pyroguards are the real binary (PYROGUARD_BIN) started from YAML like every
other test; the TLS between them is real mutual TLS (OpenSSL on both ends) with the certificates
tests/certs/mint.sh mints per session; C's egress checks and S's client rules are the real code;
every byte is read and compared on real sockets.

What is fake, and why: no Pyro4 4.22-4.37 (protocols 46/47 — the releases before Pyro4 had any SSL,
the clients client mode exists for) and no Pyro5 can be installed here (Debian ships Pyro4 4.82 only,
Pyro5 is not packaged, nothing may be downloaded). So:
  * protocol 47/46: the "client" is a raw socket sending frames built from the header layout
    (PROTOCOL.md §13) with conftest.pyro4_frame and the serpent payloads a Pyro4 client writes
    (the captured 4.82 CONNECT body) — the builders of test_pyro4_old_protocols.py, imported
    from it; the daemon is its OldPyro4Backend, a fake that answers CONNECT/echo in the version,
    seq and serializer it was spoken to. Refusals are decoded as an old client would, with
    Debian's Pyro4 serializer (security_error_of, imported too).
  * Pyro5: the client sends the real Pyro5 5.17 frames captured in tests/vectors/pyro5 (and, for
    the correlation id, frames pyro5_wire.py builds byte-for-byte like them); the daemon is
    fake_pyro5_daemon.py (FakePyro5 from test_pyro5.py), replaying the captured replies or
    serving `thing` in echo mode. Refusals are read as a Pyro5 client would (security_error,
    from test_pyro5.py).
"""

import socket

import pytest
import serpent

import pyro5_wire as p5
from conftest import (MSG_CONNECT, MSG_CONNECTOK, MSG_INVOKE, MSG_RESULT, Pyroguard,
                      free_port, parse_pyro4_frames, pyro4_frame, recv_frames, wait_until)
from test_client_mode import ClientModePyroguard
from test_pyro4_old_protocols import (CONNECT_BODY, OldPyro4Backend, security_error_of,
                                      serpent_call)
from test_pyro5 import VECTORS5, FakePyro5, security_error

SERIALIZERS = ["serpent", "json", "marshal", "msgpack"]
EGRESS_ANY_THING = {"allow": [{"object": "thing", "methods": ["*"]}]}
EGRESS_ECHO = {"allow": [{"object": "thing", "methods": ["echo"]}]}


@pytest.fixture
def both(tmp_path, certs):
    """both(protocols, backend_port, egress) -> (S, C): a server-mode pyroguard S listing
    |protocols| in front of 127.0.0.1:|backend_port| (the test's fake daemon), and a client-mode
    pyroguard C listing the same protocols with |egress|, upstream S. Both log every call
    decision; both must exit 0 without a sanitizer report at teardown."""
    made = []

    def make(protocols, backend_port, egress):
        pyro = {"protocols": list(protocols), "serializers": SERIALIZERS}
        s = Pyroguard(tmp_path / ("server%d" % len(made)), certs, backend_port,
                      {"pyro": pyro, "log": {"calls": "all"}})
        s.dir.mkdir(parents=True, exist_ok=True)
        made.append(s)
        s.start()
        c = ClientModePyroguard(tmp_path / ("client-mode%d" % len(made)), certs, s.port,
                                egress=egress, top={"pyro": pyro})
        c.dir.mkdir(parents=True, exist_ok=True)
        made.append(c)
        c.start()
        return s, c

    yield make
    for pg in reversed(made):
        pg.stop()
    for pg in made:
        pg.assert_clean_exit()


def plain_socket(c, timeout=10):
    """What a Pyro client without TLS does: a plain TCP connection to the client-mode listener."""
    return socket.create_connection(("127.0.0.1", c.port), timeout=timeout)


def assert_server_mode_saw_c(s, protocol):
    """S accepted C's certificate under its clients: rule and judged the connection's protocol."""
    opened = s.wait_log(event="conn_open")[0]
    assert "CN=billing-client" in opened["subject"] and opened["rule"] == "everyone", opened
    for line in s.logs(event="allowed"):
        assert line["protocol"] == protocol, line


# --- Pyro4 protocols 47 and 46 (Pyro4 4.22-4.37: no SSL at all) -----------------------------


@pytest.fixture
def old_chain(both):
    """old_chain(version, spelling, egress) -> (S, C, backend) with the fake 46-48 daemon."""
    backends = []

    def make(spelling, egress=EGRESS_ANY_THING):
        port = free_port()
        backends.append(OldPyro4Backend(port))
        s, c = both([spelling], port, egress)
        return s, c, backends[-1]

    yield make
    for b in backends:
        b.close()


@pytest.mark.parametrize("version,spelling", [(47, 4.47), (46, 4.46)])
def test_an_old_pyro4_client_without_tls_calls_through_both_pyroguards_byte_exact(
        old_chain, version, spelling):
    s, c, backend = old_chain(spelling)
    connect = pyro4_frame(MSG_CONNECT, payload=CONNECT_BODY, version=version)
    invoke = pyro4_frame(MSG_INVOKE, payload=serpent_call("thing", "echo", ["through both"]),
                         seq=1, version=version)
    with plain_socket(c) as sock:
        sock.sendall(connect)
        [ok] = recv_frames(sock, 1)
        assert ok["raw"] == OldPyro4Backend.answer(parse_pyro4_frames(connect)[0]), ok
        assert ok["type"] == MSG_CONNECTOK and ok["version"] == version, ok
        sock.sendall(invoke)
        [r] = recv_frames(sock, 1)
        # Byte for byte what the daemon wrote, through S and C.
        assert r["raw"] == OldPyro4Backend.answer(parse_pyro4_frames(invoke)[0]), r
        assert r["type"] == MSG_RESULT and r["version"] == version and r["seq"] == 1, r
        assert serpent.loads(r["payload"]) == "through both"
    # ...and the daemon read byte for byte what the client wrote.
    wait_until(lambda: backend.connections_with_bytes() == [connect + invoke], 10,
               what="the daemon to read the client's bytes")
    protocol = "pyro4.%d" % version
    up = c.wait_log(event="upstream_open")[0]
    assert up["tls_version"] in ("TLSv1.3", "TLSv1.2"), up
    assert c.wait_log(event="conn_open")[0]["mode"] == "client"
    assert_server_mode_saw_c(s, protocol)
    assert [l["method"] for l in s.wait_log(event="allowed", msg_type="INVOKE")] == ["echo"]
    assert c.logs(event="refused") == [] and s.logs(event="refused") == []


@pytest.mark.parametrize("version,spelling", [(47, 4.47), (46, 4.46)])
def test_dotted_and_private_names_of_an_old_client_are_refused_in_client_mode_in_its_protocol(
        old_chain, version, spelling):
    s, c, backend = old_chain(spelling)  # egress allows every method of `thing`: the name
    # rules, not the policy, refuse these
    connect = pyro4_frame(MSG_CONNECT, payload=CONNECT_BODY, version=version)
    first = pyro4_frame(MSG_INVOKE, payload=serpent_call("thing", "echo", ["first"]), seq=1,
                        version=version)
    dotted = pyro4_frame(MSG_INVOKE, payload=serpent_call("thing", "echo.__globals__.x", ["x"]),
                         seq=2, version=version)
    private = pyro4_frame(MSG_INVOKE, payload=serpent_call("thing", "_private", []), seq=3,
                          version=version)
    after = pyro4_frame(MSG_INVOKE, payload=serpent_call("thing", "echo", ["after"]), seq=4,
                        version=version)
    with plain_socket(c) as sock:
        sock.sendall(connect)
        recv_frames(sock, 1)
        sock.sendall(first)
        [r] = recv_frames(sock, 1)
        assert serpent.loads(r["payload"]) == "first"
        for frame, seq, name in ((dotted, 2, "echo.__globals__.x"), (private, 3, "_private")):
            sock.sendall(frame)
            [r] = recv_frames(sock, 1)
            assert r["seq"] == seq, r
            text = security_error_of(r, version)  # version 47/46 frame, Pyro4 SecurityError
            assert name.split(".")[0] in text, text
        sock.sendall(after)
        [r] = recv_frames(sock, 1)
        assert r["seq"] == 4 and serpent.loads(r["payload"]) == "after", r

    protocol = "pyro4.%d" % version
    refused = c.wait_log(event="refused", count=2)
    assert [(l["reason"], l["seq"], l["protocol"], l["rule"]) for l in refused] == [
        ("dotted_name", 2, protocol, "egress:to-app"),
        ("private_name", 3, protocol, "egress:to-app")], refused
    # Neither S nor the daemon saw the refused calls.
    wait_until(lambda: backend.connections_with_bytes() == [connect + first + after], 10,
               what="the daemon to read exactly the allowed messages")
    c.settle()
    s.settle()
    assert s.logs(event="refused") == []
    assert [l["method"] for l in s.logs(event="allowed", msg_type="INVOKE")] == ["echo", "echo"]
    assert [l["seq"] for l in s.logs(event="allowed", msg_type="INVOKE")] == [1, 4]
    assert_server_mode_saw_c(s, protocol)


# --- Pyro5 (protocol 502) ----------------------------------------------------------------------


@pytest.fixture
def chain5(both, tmp_path):
    """chain5(mode, replay_dir, egress) -> (S, C, FakePyro5)."""
    fakes = []

    def make(mode="echo", replay_dir=None, egress=EGRESS_ECHO):
        port = free_port()
        s, c = both([5], port, egress)
        fake = FakePyro5(tmp_path / ("fake%d" % len(fakes)), port, mode, replay_dir).start()
        fakes.append(fake)
        return s, c, fake

    yield make
    for f in fakes:
        f.stop()


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_a_captured_pyro5_echo_scenario_replays_byte_for_byte_through_both_pyroguards(
        chain5, ser):
    scenario = VECTORS5 / ser / "echo"
    s, c, fake = chain5("replay", scenario)
    sent = b""
    with plain_socket(c) as sock:
        for msg in sorted(scenario.glob("*_c2s_*.bin")):
            data = msg.read_bytes()
            sock.sendall(data)
            sent += data
            want = b"".join(p.read_bytes() for p in sorted(scenario.glob(msg.name[:2] + "_s2c_*.bin")))
            assert p5.recv_exactly(sock, len(want)) == want, msg.name
    wait_until(lambda: fake.connections() == [sent], 10,
               what="the daemon to read exactly the captured client bytes")
    assert c.logs(event="refused") == [] and s.logs(event="refused") == []
    assert c.wait_log(event="conn_open")[0]["mode"] == "client"
    assert_server_mode_saw_c(s, "pyro5")
    assert [l["method"] for l in s.wait_log(event="allowed", msg_type="INVOKE")] == ["echo"]


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_a_pyro5_egress_refusal_is_a_security_error_with_the_requests_correlation_id(
        chain5, ser):
    s, c, fake = chain5("echo", egress=EGRESS_ECHO)
    sid = p5.SER_IDS5[ser]
    connect = (VECTORS5 / ser / "echo" / "00_c2s_CONNECT.bin").read_bytes()  # captured

    def invoke(method, args, seq, corr):
        return p5.pyro5_frame(p5.MSG_INVOKE, p5.invoke_payload(ser, "thing", method, args, {}),
                              serializer_id=sid, flags=p5.FLAG_CORR_ID, seq=seq, corr_id=corr)

    # The captured dotted call, given a correlation id (its payload and BLBI annotation as captured).
    captured = p5.parse_pyro5_frames((VECTORS5 / ser / "dotted" / "01_c2s_INVOKE.bin").read_bytes())[0]
    dotted_corr = bytes(range(100, 116))
    dotted = p5.pyro5_frame(p5.MSG_INVOKE, captured["payload"], serializer_id=sid,
                            flags=captured["flags"] | p5.FLAG_CORR_ID, seq=3,
                            annotations=captured["annotation_bytes"], corr_id=dotted_corr)
    not_allowed_corr = bytes(range(16))
    not_allowed = invoke("add", [1, 2], 2, not_allowed_corr)
    first = invoke("echo", ["first"], 1, b"\x11" * 16)
    after = invoke("echo", ["after"], 4, b"\x44" * 16)
    with plain_socket(c) as sock:
        sock.sendall(connect)
        [ok] = p5.recv_pyro5_frames(sock, 1)
        assert ok["type"] == p5.MSG_CONNECTOK, ok
        sock.sendall(first)
        [r] = p5.recv_pyro5_frames(sock, 1)
        assert p5.decode_payload(ser, r["payload"]) == "first" and r["corr_id"] == b"\x11" * 16, r

        sock.sendall(not_allowed)
        [r] = p5.recv_pyro5_frames(sock, 1)
        assert r["seq"] == 2 and r["corr_id"] == not_allowed_corr, r
        assert r["flags"] & p5.FLAG_CORR_ID, r
        text = security_error(r, ser)
        assert "'add'" in text and "egress:to-app" in text, text

        sock.sendall(dotted)
        [r] = p5.recv_pyro5_frames(sock, 1)
        assert r["seq"] == 3 and r["corr_id"] == dotted_corr, r
        assert "sub.echo" in security_error(r, ser)

        sock.sendall(after)
        [r] = p5.recv_pyro5_frames(sock, 1)
        assert r["seq"] == 4 and p5.decode_payload(ser, r["payload"]) == "after", r
        assert r["corr_id"] == b"\x44" * 16, r

    refused = c.wait_log(event="refused", count=2)
    assert [(l["reason"], l["seq"], l["protocol"]) for l in refused] == [
        ("not_allowed", 2, "pyro5"), ("dotted_name", 3, "pyro5")], refused
    # Refused in C: S never judged them, the daemon never read them.
    wait_until(lambda: fake.connections() == [connect + first + after], 10,
               what="the daemon to read exactly the allowed messages")
    c.settle()
    s.settle()
    assert s.logs(event="refused") == []
    assert [l["seq"] for l in s.logs(event="allowed", msg_type="INVOKE")] == [1, 4]
    assert_server_mode_saw_c(s, "pyro5")
