"""Pyro5 (protocol 502, PROTOCOL.md §3) through the real pyroguard binary.

Pyro5 is not packaged in Debian and nothing may be downloaded here, so the daemon behind pyroguard
is fake_pyro5_daemon.py — a stand-in, not Pyro5 — and the clients send real Pyro5 5.17 frames:
the captures in tests/vectors/pyro5 (replayed message by message, the daemon answering with the
captured replies) and frames built with pyro5_wire.py, whose encoders reproduce every captured
CONNECT and INVOKE byte for byte (test_pyro5_tools.py). Refusals are read as a Pyro5 client would:
the 40-byte header, its seq and correlation id, and a payload that decodes to a
Pyro5.errors.SecurityError dict.

A mixed run puts a real Pyro4 4.82 client (and the real Pyro4 daemon) and Pyro5 clients on one
listener, each connection relayed to the daemon of its protocol."""

import socket
import threading
import zlib
from collections import Counter

import pytest

import pyro5_wire as p5
from conftest import (HERE, PYTHON, Backend, metric, read_until_closed, scrape, wait_until,
                      with_admin)

VECTORS5 = HERE.parent / "vectors" / "pyro5"
SERIALIZERS = ["serpent", "marshal", "json", "msgpack"]

# Every name the captured scenarios call, on the objects they call it on.
ALLOW_ALL = [{
    "name": "everyone",
    "match": {"cn": "**"},
    "allow": [
        {"object": "**", "methods": ["*"], "get": ["*"], "set": ["*"]},
        {"object": "Pyro.Daemon",
         "methods": ["registered", "get_metadata", "get_next_stream_item", "close_stream", "info"]},
    ],
}]


class FakePyro5(Backend):
    """fake_pyro5_daemon.py on |port| (0: it picks one), recording every byte per connection in
    the capture convention of the real daemon's wrapper (Backend.connections reads it)."""

    def __init__(self, workdir, port, mode="echo", replay_dir=None):
        super().__init__(workdir, port=port or None)
        self.port = port
        self.mode, self.replay_dir = mode, replay_dir

    def command(self):
        args = [PYTHON, str(HERE / "fake_pyro5_daemon.py"), "--port", str(self.port),
                "--capture-dir", str(self.capture_dir), "--ready-file", str(self.ready_file),
                "--mode", self.mode]
        if self.replay_dir is not None:
            args += ["--replay-dir", str(self.replay_dir)]
        return args


@pytest.fixture
def stack5(make_stack, tmp_path):
    """stack5(mode="echo", replay_dir=None, overrides=None) -> (Stack, FakePyro5): pyroguard with
    `protocols: [5]` in front of the fake Pyro5 daemon."""
    fakes = []

    def make(mode="echo", replay_dir=None, overrides=None, protocols=(5,)):
        over = {"pyro": {"protocols": list(protocols)}, "clients": ALLOW_ALL}
        over.update(overrides or {})
        stack = make_stack(over, backend=False)
        fake = FakePyro5(tmp_path / ("fake%d" % len(fakes)), stack.backend.port, mode,
                         replay_dir).start()
        fakes.append(fake)
        return stack, fake

    yield make
    for f in fakes:
        f.stop()


def security_error(frame, ser):
    """The refusal as a Pyro5 client reads it: RESULT, EXCEPTION, its serializer, the class."""
    assert frame["type"] == p5.MSG_RESULT, frame
    assert frame["flags"] & p5.FLAG_EXCEPTION, frame
    assert frame["serializer_id"] == p5.SER_IDS5[ser], frame
    exc = p5.decode_payload(ser, frame["payload"])
    assert exc["__class__"] == "Pyro5.errors.SecurityError" and exc["__exception__"], exc
    return exc["args"][0]


def scenario_dirs():
    out = []
    for ser in SERIALIZERS:
        for d in sorted((VECTORS5 / ser).iterdir()):
            if any(d.glob("*_c2s_INVOKE.bin")) or any(d.glob("*_c2s_PING.bin")):
                out.append(pytest.param(d, id="%s/%s" % (ser, d.name)))
    return out


@pytest.mark.parametrize("scenario", scenario_dirs())
def test_every_captured_pyro5_scenario_passes_through_byte_for_byte(stack5, scenario):
    """Each captured client message, in order, over TLS through pyroguard: the daemon receives
    exactly the captured bytes (a refused name aside), the client exactly the captured replies.
    The captured `dotted` call (`sub.echo`) is the one pyroguard refuses."""
    stack, fake = stack5("replay", scenario)
    ser = scenario.parent.name
    c2s = sorted(scenario.glob("*_c2s_*.bin"))
    forwarded = b""
    with stack.tls_socket() as s:
        for msg in c2s:
            nn = msg.name[:2]
            data = msg.read_bytes()
            s.sendall(data)
            if scenario.name == "dotted" and nn != "00":
                [r] = p5.recv_pyro5_frames(s, 1)
                assert "sub.echo" in security_error(r, ser)
                assert r["seq"] == p5.parse_pyro5_frames(data)[0]["seq"]
                continue
            forwarded += data
            want = b"".join(p.read_bytes() for p in sorted(scenario.glob(nn + "_s2c_*.bin")))
            if want:
                assert p5.recv_exactly(s, len(want)) == want
    wait_until(lambda: fake.connections() and len(fake.connections()[0]) >= len(forwarded), 10,
               what="the daemon to read every forwarded byte")
    assert fake.connections() == [forwarded]
    refused = stack.pg.logs(event="refused")
    assert len(refused) == (1 if scenario.name == "dotted" else 0), refused
    for line in stack.pg.logs(event="refused") + stack.pg.logs(event="allowed"):
        assert line["protocol"] == "pyro5", line


# --- evasions (PROTOCOL.md §9, generated for Pyro5) ----------------------------------------


def connected5(stack, ser):
    s = stack.tls_socket()
    s.sendall(p5.pyro5_frame(p5.MSG_CONNECT, p5.connect_payload(ser),
                             serializer_id=p5.SER_IDS5[ser]))
    [ok] = p5.recv_pyro5_frames(s, 1)
    assert ok["type"] == p5.MSG_CONNECTOK, ok
    return s


def invoke5(ser, method, args=("x",), seq=1, flags=0, annotations=b"", payload=None, corr=None,
            obj="thing"):
    body = payload if payload is not None else p5.invoke_payload(ser, obj, method, list(args), {})
    kw = {}
    if corr is not None:
        kw["corr_id"] = corr
        flags |= p5.FLAG_CORR_ID
    return p5.pyro5_frame(p5.MSG_INVOKE, body, serializer_id=p5.SER_IDS5[ser], flags=flags,
                          seq=seq, annotations=annotations, **kw)


EVASIONS = [
    ("dotted method", lambda ser: invoke5(ser, "echo.__globals__"), "dotted_name"),
    ("dotted walk", lambda ser: invoke5(ser, "echo.__globals__.__setitem__"), "dotted_name"),
    ("private dunder", lambda ser: invoke5(ser, "__class__"), "private_name"),
    ("private underscore", lambda ser: invoke5(ser, "_secret"), "private_name"),
    ("denied dunder", lambda ser: invoke5(ser, "__init__"), "private_name"),
    ("dotted property", lambda ser: invoke5(ser, "__getattr__", ["value.__class__"]),
     "dotted_name"),
    ("batch hiding a dotted call",
     lambda ser: p5.pyro5_frame(p5.MSG_INVOKE, p5.batch_payload(
         ser, "thing", [("echo", [1], {}), ("echo.__globals__", [], {})]),
         serializer_id=p5.SER_IDS5[ser], flags=p5.FLAG_BATCH, seq=1), "dotted_name"),
    ("compressed dotted call",
     lambda ser: invoke5(ser, None, payload=p5.compress_payload(
         p5.invoke_payload(ser, "thing", "echo.__globals__", [], {})), flags=p5.FLAG_COMPRESSED),
     "dotted_name"),
    ("KEEPSERIALIZED with a private name in BLBI",
     lambda ser: invoke5(ser, "echo", flags=p5.FLAG_KEEPSERIALIZED, annotations=p5.annotation_chunk(
         "BLBI", blbi("thing", "__class__"))), "private_name"),
]


def blbi(obj, method):
    """A BLBI value as Pyro5 writes it: marshal of (blob_info, objectId, methodName)."""
    import marshal
    return marshal.dumps(("blobinfo", obj, method))


@pytest.mark.parametrize("ser", SERIALIZERS)
@pytest.mark.parametrize("what,build,reason", EVASIONS, ids=[e[0] for e in EVASIONS])
def test_pyro5_evasions_are_refused_as_security_errors_and_never_reach_the_daemon(
        stack5, ser, what, build, reason):
    stack, fake = stack5()
    corr = bytes(range(16))
    bad = build(ser)
    frame = p5.parse_pyro5_frames(bad)[0]
    if not frame["flags"] & p5.FLAG_CORR_ID:
        # The request's correlation id comes back with the refusal.
        bad = p5.pyro5_frame(p5.MSG_INVOKE, bad[40 + frame_ann_len(bad):],
                             serializer_id=frame["serializer_id"],
                             flags=frame["flags"] | p5.FLAG_CORR_ID, seq=frame["seq"],
                             annotations=bad[40:40 + frame_ann_len(bad)], corr_id=corr)
    after = invoke5(ser, "echo", ["after"], seq=2)
    with connected5(stack, ser) as s:
        s.sendall(bad)
        [r] = p5.recv_pyro5_frames(s, 1)
        assert r["seq"] == 1 and r["corr_id"] == corr, r
        security_error(r, ser)
        s.sendall(after)
        [r] = p5.recv_pyro5_frames(s, 1)
        assert p5.decode_payload(ser, r["payload"]) == "after"
    [line] = stack.pg.logs(event="refused")
    assert line["reason"] == reason and line["protocol"] == "pyro5", line
    [conn] = fake.connections()
    assert bad not in conn and conn.endswith(after)


def frame_ann_len(data):
    return int.from_bytes(data[16:20], "big")


@pytest.mark.parametrize("ser_id", [5, 6, 7, 0, 42])
def test_a_serializer_id_pyro5_does_not_have_is_refused_and_never_read_as_pyro4s(stack5, ser_id):
    """Pyro4's 4-7 are pickle, dill, msgpack, cloudpickle; Pyro5 has only 1-4 (§3.3). An id Pyro5
    lacks cannot be answered in its serializer: the connection is closed, as Pyro5 does."""
    stack, fake = stack5()
    with connected5(stack, "serpent") as s:
        s.sendall(p5.pyro5_frame(p5.MSG_INVOKE, p5.invoke_payload("serpent", "thing", "echo",
                                                                   ["x"], {}),
                                 serializer_id=ser_id, seq=1))
        data, how = read_until_closed(s)
    assert data == b"" and how != "timeout", (data, how)
    [line] = stack.pg.logs(event="refused")
    assert line["reason"] == "serializer_not_allowed", line
    stack.pg.settle()
    [conn] = fake.connections()
    assert len(p5.parse_pyro5_frames(conn)) == 1  # the CONNECT only


def test_pyro5_serializer_4_is_msgpack_and_allowed(stack5):
    stack, fake = stack5()
    with connected5(stack, "msgpack") as s:
        s.sendall(invoke5("msgpack", "echo", ["m"]))
        [r] = p5.recv_pyro5_frames(s, 1)
        assert p5.decode_payload("msgpack", r["payload"]) == "m"


def test_a_pyro5_connect_without_object_gets_a_connectfail_and_is_not_forwarded(stack5):
    stack, fake = stack5()
    payload = p5.encode_value("json", {"handshake": "hello"})
    with stack.tls_socket() as s:
        s.sendall(p5.pyro5_frame(p5.MSG_CONNECT, payload, serializer_id=p5.SER_IDS5["json"]))
        data, how = read_until_closed(s)
    [f] = p5.parse_pyro5_frames(data)
    assert f["type"] == p5.MSG_CONNECTFAIL and f["serializer_id"] == 2, f  # Pyro5's marshal
    import marshal
    assert "needs 'object'" in marshal.loads(f["payload"])
    assert fake.connections() == []


@pytest.mark.parametrize("what,annotations", [
    ("duplicate BLBI", p5.annotation_chunk("BLBI", b"a") + p5.annotation_chunk("BLBI", b"b")),
    ("chunk overrunning its block", p5.annotation_chunk("BLBI", b"abc", length=300)),
])
def test_malformed_pyro5_annotations_close_the_connection_unread_by_the_daemon(
        stack5, what, annotations):
    stack, fake = stack5()
    with connected5(stack, "serpent") as s:
        s.sendall(invoke5("serpent", "echo", annotations=annotations))
        data, how = read_until_closed(s)
    assert data == b"" and how != "timeout"
    [line] = stack.pg.logs(event="refused")
    assert line["reason"] == "bad_annotations", line
    stack.pg.settle()
    [conn] = fake.connections()
    assert len(p5.parse_pyro5_frames(conn)) == 1


def test_a_stale_blbi_without_keepserialized_is_ignored_as_pyro5_does(stack5):
    """Pyro5 never clears a thread's BLBI (§3.4): every later message carries it. Without
    KEEPSERIALIZED the daemon ignores it, and so does pyroguard: the payload is judged."""
    stack, fake = stack5()
    stale = p5.annotation_chunk("BLBI", blbi("thing", "__class__"))
    with connected5(stack, "serpent") as s:
        s.sendall(invoke5("serpent", "echo", ["fine"], annotations=stale))
        [r] = p5.recv_pyro5_frames(s, 1)
        assert p5.decode_payload("serpent", r["payload"]) == "fine"
        hidden = invoke5("serpent", "_hidden", seq=2, annotations=stale)
        s.sendall(hidden)
        [r] = p5.recv_pyro5_frames(s, 1)
        security_error(r, "serpent")
    stack.pg.settle()
    [conn] = fake.connections()
    assert hidden not in conn and len(p5.parse_pyro5_frames(conn)) == 2  # CONNECT and the echo


def test_special_methods_a_pyro5_proxy_sends_pass_only_as_the_policy_allows(stack5):
    """len(proxy) sends `__len__` (§3.5): public by Pyro's rule, so the policy decides."""
    only_echo = [{"name": "everyone", "match": {"cn": "**"},
                  "allow": [{"object": "thing", "methods": ["echo"]}]}]
    stack, fake = stack5(overrides={"clients": only_echo})
    dunder = (VECTORS5 / "serpent" / "dunder_len" / "01_c2s_INVOKE.bin").read_bytes()
    with connected5(stack, "serpent") as s:
        s.sendall(dunder)
        [r] = p5.recv_pyro5_frames(s, 1)
        assert "__len__" in security_error(r, "serpent")
    [line] = stack.pg.logs(event="refused")
    assert line["reason"] == "not_allowed" and line["method"] == "__len__", line
    stack.pg.settle()
    [conn] = fake.connections()
    assert dunder not in conn and len(p5.parse_pyro5_frames(conn)) == 1  # the CONNECT only


def test_a_pyro5_client_at_a_pyro4_only_listener_is_told_in_pyro5_framing(stack5):
    import marshal
    stack, fake = stack5(protocols=(4,))
    with stack.tls_socket() as s:
        s.sendall(p5.pyro5_frame(p5.MSG_CONNECT, p5.connect_payload("serpent")))
        data, how = read_until_closed(s)
    [f] = p5.parse_pyro5_frames(data)
    assert f["type"] == p5.MSG_CONNECTFAIL and f["version"] == 502, f
    assert f["serializer_id"] == 2  # Pyro5's marshal
    assert marshal.loads(f["payload"]) == (
        "pyroguard: Pyro protocol version 502 (pyro5) is not accepted here (pyro.protocols)")
    assert fake.connections() == []


def test_a_pyro5_connection_cannot_switch_to_pyro4(stack5):
    from conftest import MSG_INVOKE, pyro4_frame
    stack, fake = stack5(protocols=(4, 5))
    with connected5(stack, "serpent") as s:
        s.sendall(pyro4_frame(MSG_INVOKE, payload=b"x", seq=1))
        data, how = read_until_closed(s)
    assert data == b""
    [line] = stack.pg.logs(event="refused")
    assert line["reason"] == "protocol_version" and "began with pyro5" in line["detail"], line
    stack.pg.settle()
    [conn] = fake.connections()
    assert len(p5.parse_pyro5_frames(conn)) == 1 and b"PYRO\x000" not in conn  # no Pyro4 byte


def test_a_compressed_pyro5_connect_is_inflated_and_judged_like_any_other(stack5):
    """Pyro5 compresses any payload over 100 bytes, a CONNECT's included, and inflates every
    message type at receive time (§3.1): so does pyroguard before judging the object."""
    only_thing = [{"name": "everyone", "match": {"cn": "**"},
                   "allow": [{"object": "thing", "methods": ["echo"]}]}]
    stack, fake = stack5(overrides={"clients": only_thing})
    big = "h" * 300
    for obj, allowed in (("thing", True), ("other", False)):
        payload = p5.compress_payload(p5.connect_payload("json", handshake=big, obj=obj))
        frame = p5.pyro5_frame(p5.MSG_CONNECT, payload, serializer_id=p5.SER_IDS5["json"],
                               flags=p5.FLAG_COMPRESSED)
        with stack.tls_socket() as s:
            s.sendall(frame)
            data, how = read_until_closed(s, timeout=2 if allowed else 10)
        [f] = p5.parse_pyro5_frames(data)
        assert f["type"] == (p5.MSG_CONNECTOK if allowed else p5.MSG_CONNECTFAIL), f
    [line] = stack.pg.logs(event="refused")
    assert line["reason"] == "object_not_allowed" and line["object"] == "other", line
    stack.pg.settle()
    conns = fake.connections()
    assert len(conns) == 1 and b"other" not in zlib.decompress(
        p5.parse_pyro5_frames(conns[0])[0]["payload"])


# --- Pyro4 and Pyro5 clients on one listener ------------------------------------------------


class VersionRelay(object):
    """The backend address of a listener serving both protocols: relays each connection to the
    real Pyro4 daemon or the fake Pyro5 one, by the version field of its first message. (One
    daemon speaks one protocol; a site moving from Pyro4 to Pyro5 runs both behind one name.)"""

    def __init__(self, port, pyro4_port, pyro5_port):
        self.targets = {48: pyro4_port, 502: pyro5_port}
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", port))
        self.srv.listen(64)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.relay, args=(c,), daemon=True).start()

    def relay(self, c):
        head = b""
        while len(head) < 6:
            chunk = c.recv(6 - len(head))
            if not chunk:
                c.close()
                return
            head += chunk
        up = socket.create_connection(("127.0.0.1",
                                       self.targets[int.from_bytes(head[4:6], "big")]))
        up.sendall(head)

        def pipe(a, b):
            try:
                while True:
                    d = a.recv(65536)
                    if not d:
                        break
                    b.sendall(d)
            except OSError:
                pass
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pipe, args=(up, c), daemon=True).start()
        pipe(c, up)

    def close(self):
        self.srv.close()


def test_pyro4_and_pyro5_clients_share_one_listener(make_stack, tmp_path):
    overrides, admin_port = with_admin({"pyro": {"protocols": [4, 5]}, "clients": ALLOW_ALL})
    stack = make_stack(overrides, backend=False)
    pyro4 = Backend(tmp_path / "pyro4").start()
    fake5 = FakePyro5(tmp_path / "pyro5", 0).start()
    port5 = int(fake5.ready_file.read_text().split()[1].rsplit(":", 1)[1])
    relay = VersionRelay(stack.backend.port, pyro4.port, port5)
    errors = []

    def pyro4_client(i):
        r = stack.client("echo")
        if not r.get("ok"):
            errors.append(("pyro4", r))

    def pyro5_client(i):
        ser = SERIALIZERS[i % 4]
        try:
            with connected5(stack, ser) as s:
                s.sendall(invoke5(ser, "echo", ["five-%d" % i]))
                [r] = p5.recv_pyro5_frames(s, 1)
                if p5.decode_payload(ser, r["payload"]) != "five-%d" % i:
                    errors.append(("pyro5", r))
                s.sendall(invoke5(ser, "_private", seq=2))
                [r] = p5.recv_pyro5_frames(s, 1)
                security_error(r, ser)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(("pyro5", repr(e)))

    try:
        threads = [threading.Thread(target=pyro4_client, args=(i,)) for i in range(4)]
        threads += [threading.Thread(target=pyro5_client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        relay.close()
        fake5.stop()
        pyro4.stop()
    assert errors == []
    protos = [l["protocol"] for l in stack.pg.logs(event="refused")]
    assert protos == ["pyro5"] * 8, protos
    # Each connection's lines and counts name its protocol.
    closes = Counter(l.get("protocol") for l in stack.pg.logs(event="conn_close"))
    assert closes == {"pyro4": 4, "pyro5": 8}, closes
    m = scrape(admin_port)
    assert metric(m, "pyroguard_requests_by_protocol_total", protocol="pyro5",
                  verdict="allowed") == 16  # 8 CONNECTs, 8 echo calls
    assert metric(m, "pyroguard_requests_by_protocol_total", protocol="pyro5",
                  verdict="refused") == 8
    assert metric(m, "pyroguard_requests_by_protocol_total", protocol="pyro4",
                  verdict="allowed") >= 8
    assert metric(m, "pyroguard_requests_by_protocol_total", protocol="pyro4",
                  verdict="refused") == 0
