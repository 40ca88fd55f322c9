"""Identity forwarding (listeners[].forward_identity: true; issue 10 item 2, contract "Identity
forwarding"), end to end with real processes:

    real Pyro4 4.82 client (its own /usr/bin/python3 process, mutual TLS with tests/certs)
      -> the real pyroguard binary, a server-mode listener "app" with forward_identity: true
      -> the real Pyro4 4.82 daemon (legacy_server.py), whose Thing.seen_annotations() returns the
         annotations of the call as Pyro4 handed them to the method (current_context.annotations)

What is checked: the daemon method sees pyroguard's PGID JSON, exactly; a PGID the client sent is
stripped (and, since Pyro4 parses annotations into a dict where the last chunk wins, the byte
capture is what proves the stripping: exactly one PGID chunk per CONNECT and INVOKE); other
chunks pass unchanged; HMAC-signed messages are refused, not broken; without forward_identity
nothing is added or removed. The Pyro5 test at the end uses fake_pyro5_daemon.py, a stand-in (not
Pyro5), only as a byte recorder.
"""

import hashlib
import json
import ssl
import struct
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest

import pyro5_wire as p5
from conftest import (CLIENT_TIMEOUT, HEADER, HERE, MSG_CONNECT, MSG_CONNECTFAIL, MSG_CONNECTOK,
                      MSG_INVOKE, MSG_RESULT, PYTHON, Backend, parse_pyro4_frames,
                      pyro4_checksum, pyro4_frame, read_until_closed, read_vector, recv_frames,
                      run_client)

SERIALIZERS = ["serpent", "json", "marshal", "msgpack"]
SER_IDS = {"serpent": 1, "json": 2, "marshal": 3, "msgpack": 6}

ALLOW_ALL = [
    {"object": "**", "methods": ["*"], "get": ["*"], "set": ["*"]},
    {"object": "Pyro.Daemon", "methods": ["registered", "info"]},
]
# One rule per test certificate (tests/certs/mint.sh), so the "rule" member names which matched.
CLIENTS = [
    {"name": "billing", "match": {"cn": "billing-client"}, "allow": ALLOW_ALL},
    {"name": "readers", "match": {"ou": "readers"}, "allow": ALLOW_ALL},
    {"name": "ops", "match": {"ou": "ops"}, "allow": ALLOW_ALL},
]

SEEN = json.dumps([{"call": "seen_annotations"}])
PGID = "PGID"
# A forged identity, as a client would try to pass it off.
FORGED = json.dumps({"v": 1, "listener": "app", "rule": "ops", "cn": "ops-admin",
                     "uri": ["spiffe://example.org/ns/ops/admin"]}, separators=(",", ":"))


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def fwd(make_stack):
    """fwd(forward_identity=True, overrides=None, backend=True) -> started Stack (real daemon +
    pyroguard) whose listener "app" has forward_identity as given (None: the key left out)."""

    def make(forward_identity=True, overrides=None, backend=True):
        over = {"clients": CLIENTS, "log": {"level": "info", "calls": "all"}}
        over.update(overrides or {})
        listener = {} if forward_identity is None else {"forward_identity": forward_identity}
        return make_stack(over, backend=backend, listener=listener)

    return make


# --- helpers ------------------------------------------------------------------------------------


def chunks(block):
    """A Pyro4 annotation block as [(key, value)] in wire order, duplicates kept: 4-byte key,
    u16 length, value (PROTOCOL.md §2.2). Fails on a block that does not parse exactly."""
    out, i = [], 0
    while i < len(block):
        assert len(block) - i >= 6, "truncated chunk header in %r" % block
        key = block[i:i + 4].decode("ascii")
        (n,) = struct.unpack_from("!H", block, i + 4)
        assert i + 6 + n <= len(block), "chunk %s overruns the block" % key
        out.append((key, bytes(block[i + 6:i + 6 + n])))
        i += 6 + n
    return out


def chunk(key, value):
    return key.encode("ascii") + struct.pack("!H", len(value)) + value


def assert_valid_header(frame):
    """The frame's header checksum is right for its fields (what Pyro4's from_header checks) and
    the lengths cover exactly the bytes present."""
    magic, ver, typ, flags, seq, dl, ser, al, _res, cs = HEADER.unpack_from(frame["raw"])
    assert magic == b"PYRO" and ver == 48, frame
    assert cs == pyro4_checksum(typ, ver, dl, al, ser, flags, seq), frame
    assert al == len(frame["annotations"]) and dl == len(frame["payload"]), frame
    assert len(frame["raw"]) == HEADER.size + al + dl


def daemon_frames(stack):
    """Every complete frame the real daemon read, per connection (none partial)."""
    out = []
    for data in stack.backend.connections():
        frames = parse_pyro4_frames(data)
        assert all("partial" not in f for f in frames), frames
        out.append(frames)
    return out


def cert_serial_and_sha256(certs, name):
    """The certificate's serial (upper-case hex, no leading zeros) and the SHA-256 of its DER
    (upper-case hex), computed here from the file, independently of pyroguard."""
    pem = (Path(certs) / ("%s.crt" % name)).read_text()
    der = ssl.PEM_cert_to_DER_cert(pem)
    p = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem, capture_output=True,
                       text=True, check=True)
    serial = p.stdout.strip().split("=", 1)[1].upper().lstrip("0") or "0"
    return serial, hashlib.sha256(der).hexdigest().upper()


# What the certificates of tests/certs/mint.sh hold, and the rule of CLIENTS each one matches.
CERT_IDENTITY = {
    "client": ("billing", "billing-client", ["spiffe://example.org/ns/billing/client"],
               ["client.example"]),
    "reader": ("readers", "inventory-reader", ["spiffe://example.org/ns/inventory/reader"],
               ["reader.example"]),
    # No DNS SAN (an IP and an email instead): the "dns" member is left out.
    "admin": ("ops", "ops-admin", ["spiffe://example.org/ns/ops/admin"], []),
}


def expected_pgid(stack, certs, cert):
    """The exact PGID text for |cert| on listener "app": built here in the contract's key order,
    with serial and sha256 as pyroguard logged them in conn_open (checked against the file)."""
    rule, cn, uris, dns = CERT_IDENTITY[cert]
    serial, sha = cert_serial_and_sha256(certs, cert)
    opens = [l for l in stack.pg.logs(event="conn_open") if l.get("sha256") == sha]
    assert opens, "no conn_open for %s (sha256 %s): %s" % (cert, sha, stack.pg.logs(event="conn_open"))
    assert opens[0]["serial"] == serial and opens[0]["rule"] == rule, opens[0]
    ident = {"v": 1, "listener": "app", "rule": rule, "cn": cn, "uri": uris}
    if dns:
        ident["dns"] = dns
    ident["serial"] = opens[0]["serial"]
    ident["sha256"] = opens[0]["sha256"]
    return json.dumps(ident, separators=(",", ":"))


def seen(stack, serializer="serpent", cert="client"):
    """A real Pyro4 client (pyro_client.py ops) calls thing.seen_annotations(): what it returns."""
    out = run_client("ops", stack.port, stack.certs, serializer=serializer, cert=cert,
                     extra=["--ops", SEEN])
    assert out["ok"], out
    [r] = out["result"]
    assert r["ok"], r
    return r["result"]


# A real Pyro4 client with what pyro_client.py has no option for: its own annotations on every
# message (a _pyroAnnotations override, as pyro_client.py sc_user_annotations does), a correlation
# id, and an HMAC key set before the CONNECT or only after it. One JSON spec in argv[1]; prints one
# JSON object: {"bind": OUTCOME, "calls": [OUTCOME, ...]}, OUTCOME {"ok": true, "result": R} or
# {"ok": false, "exc_type": T, "exc_msg": M}.
DRIVER = textwrap.dedent(r'''
    import json, sys, uuid
    import Pyro4, Pyro4.errors

    spec = json.loads(sys.argv[1])
    Pyro4.config.SERIALIZER = spec["serializer"]
    Pyro4.config.COMMTIMEOUT = spec["timeout"]
    Pyro4.config.MAX_RETRIES = 0
    Pyro4.config.SSL = True
    Pyro4.config.SSL_CACERTS = spec["ca"]
    Pyro4.config.SSL_CLIENTCERT = spec["cert"]
    Pyro4.config.SSL_CLIENTKEY = spec["key"]
    ann = {k: v.encode("utf-8") for k, v in spec.get("annotations", {}).items()}

    class AnnotatingProxy(Pyro4.Proxy):
        def _pyroAnnotations(self):
            return dict(ann)

    def outcome(fn):
        try:
            return {"ok": True, "result": fn()}
        except Exception as e:
            t = type(e)
            return {"ok": False, "exc_type": "%s.%s" % (t.__module__, t.__name__), "exc_msg": str(e)}

    if spec.get("corr"):
        Pyro4.current_context.correlation_id = uuid.UUID(spec["corr"])
    p = AnnotatingProxy("PYRO:thing@localhost:%d" % spec["port"])
    p._pyroTimeout = spec["timeout"]
    if spec.get("hmac") and not spec.get("hmac_after_bind"):
        p._pyroHmacKey = spec["hmac"].encode()
    out = {"bind": outcome(p._pyroBind), "calls": []}
    if out["bind"]["ok"]:
        if spec.get("hmac") and spec.get("hmac_after_bind"):
            p._pyroHmacKey = spec["hmac"].encode()
        for name, args in spec.get("calls", []):
            out["calls"].append(outcome(lambda: getattr(p, name)(*args)))
    p._pyroRelease()
    print(json.dumps(out, default=repr))
''')


def drive(stack, tmp_path, serializer="serpent", cert="client", **spec):
    script = Path(tmp_path) / "fwd_driver.py"
    if not script.exists():
        script.write_text(DRIVER)
    certs = Path(stack.certs)
    spec.update(port=stack.port, serializer=serializer, timeout=20, ca=str(certs / "ca.crt"),
                cert=str(certs / ("%s.crt" % cert)), key=str(certs / ("%s.key" % cert)))
    p = subprocess.run([PYTHON, str(script), json.dumps(spec)], capture_output=True,
                       timeout=CLIENT_TIMEOUT, stdin=subprocess.DEVNULL)
    lines = p.stdout.decode(errors="replace").strip().splitlines()
    assert lines, "driver printed nothing (rc %s): %s" % (p.returncode, p.stderr.decode())
    return json.loads(lines[-1])


def serpent_invoke(method, seq, annotations=b"", args=()):
    payload = ("# serpent utf-8 python3.2\n('thing',%r,%r,{})" % (method, tuple(args))).encode()
    return pyro4_frame(MSG_INVOKE, payload=payload, serializer_id=1, seq=seq,
                       annotations=annotations)


def with_annotations(frame_bytes, annotations):
    """The Pyro4 message |frame_bytes| with its annotation block replaced (header recomputed)."""
    [f] = parse_pyro4_frames(frame_bytes)
    return pyro4_frame(f["type"], payload=f["payload"], serializer_id=f["serializer"],
                       flags=f["flags"], seq=f["seq"], annotations=annotations,
                       version=f["version"])


def decode(frame):
    import Pyro4.util
    return Pyro4.util.get_serializer_by_id(frame["serializer"]).deserializeData(
        frame["payload"], frame["flags"] & 0x02)


# --- 1. what the daemon sees ---------------------------------------------------------------------


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_the_daemon_method_sees_exactly_the_verified_identity(fwd, certs, serializer):
    s = fwd()
    got = seen(s, serializer, cert="client")
    want = expected_pgid(s, certs, "client")
    # Byte for byte, key order included; and as server code reads it.
    assert got == {PGID: want}, got
    assert json.loads(got[PGID]) == {
        "v": 1, "listener": "app", "rule": "billing", "cn": "billing-client",
        "uri": ["spiffe://example.org/ns/billing/client"], "dns": ["client.example"],
        "serial": cert_serial_and_sha256(certs, "client")[0],
        "sha256": cert_serial_and_sha256(certs, "client")[1]}

    # The daemon's capture: one connection, CONNECT + INVOKE, each with exactly one PGID chunk
    # (the only chunk: this client sends none) carrying the same text, headers valid.
    s.pg.settle()
    [conn] = daemon_frames(s)
    assert [f["type"] for f in conn] == [MSG_CONNECT, MSG_INVOKE], conn
    for f in conn:
        assert_valid_header(f)
        assert chunks(f["annotations"]) == [(PGID, want.encode())], f
        assert f["serializer"] == SER_IDS[serializer], f


@pytest.mark.parametrize("cert", ["reader", "admin"])
def test_each_certificate_gets_its_own_identity_on_the_same_listener(fwd, certs, cert):
    s = fwd()
    first = seen(s, cert="client")
    other = seen(s, cert=cert)
    assert first == {PGID: expected_pgid(s, certs, "client")}, first
    assert other == {PGID: expected_pgid(s, certs, cert)}, other
    ident = json.loads(other[PGID])
    assert ident["rule"] == CERT_IDENTITY[cert][0] and ident["cn"] == CERT_IDENTITY[cert][1]
    if cert == "admin":
        assert "dns" not in ident, ident  # no DNS SAN: no member
    assert json.loads(first[PGID])["sha256"] != ident["sha256"]


def test_every_invoke_on_one_connection_carries_the_identity_and_the_connection_stays_in_sync(
        fwd, certs):
    s = fwd()
    out = run_client("ops", s.port, s.certs, extra=["--ops", json.dumps(
        [{"call": "seen_annotations"}, {"call": "echo", "args": ["between"]},
         {"batch": [["echo", [1]], ["seen_annotations", []]]}, {"call": "seen_annotations"}])])
    assert out["ok"], out
    want = expected_pgid(s, certs, "client")
    a, b, batch, c = out["result"]
    assert a == {"ok": True, "result": {PGID: want}}, a
    assert b == {"ok": True, "result": "between"}, b
    assert batch == {"ok": True, "result": [1, {PGID: want}]}, batch
    assert c == {"ok": True, "result": {PGID: want}}, c
    s.pg.settle()
    [conn] = daemon_frames(s)
    assert [f["type"] for f in conn] == [MSG_CONNECT] + [MSG_INVOKE] * 4, conn
    for f in conn:
        assert_valid_header(f)
        assert [k for k, _ in chunks(f["annotations"])].count(PGID) == 1, f


@pytest.mark.parametrize("scenario,want", [
    ("blob", ["blobinfo", {"k": [1, 2, 3]}]),   # KEEPSERIALIZED: BLBI chunk kept before PGID
    ("compressed", [5000, True]),              # FLAGS_COMPRESSED payload, unchanged
    ("oneway", [None, "after-oneway"]),        # a ONEWAY INVOKE is rewritten too
    ("stream", [0, 1, 2, 3, 4]),               # Pyro.Daemon get_next_stream_item calls
    ("correlation", "correlated"),             # CORR chunk kept
])
def test_other_call_styles_work_through_a_forward_identity_listener(fwd, certs, scenario, want):
    s = fwd()
    out = run_client(scenario, s.port, s.certs)
    assert out["ok"] and out["result"] == want, out
    pgid = expected_pgid(s, certs, "client").encode()
    s.pg.settle()
    for conn in daemon_frames(s):
        for f in conn:
            assert_valid_header(f)
            got = chunks(f["annotations"])
            assert [k for k, _ in got].count(PGID) == 1 and got[-1] == (PGID, pgid), f
            if scenario == "blob" and f["type"] == MSG_INVOKE:
                assert [k for k, _ in got] == ["BLBI", PGID], got
            if scenario == "correlation":
                assert [k for k, _ in got] == ["CORR", PGID], got


# --- 2. spoofing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_a_pgid_sent_by_a_real_pyro4_client_is_stripped_and_other_annotations_pass(
        fwd, certs, tmp_path, serializer):
    s = fwd()
    corr = "12345678-1234-5678-1234-567812345678"
    out = drive(s, tmp_path, serializer, annotations={PGID: FORGED, "XTRA": "user annotation"},
                corr=corr, calls=[["seen_annotations", []]])
    assert out["bind"]["ok"], out
    [r] = out["calls"]
    assert r["ok"], r
    want = expected_pgid(s, certs, "client")
    got = r["result"]
    assert got[PGID] == want, got  # pyroguard's, not the forged one
    assert got["XTRA"] == "user annotation", got
    assert got["CORR"] == uuid.UUID(corr).bytes.decode("utf-8", "replace"), got
    assert set(got) == {PGID, "XTRA", "CORR"}, got

    # Pyro4 parses annotations into a dict, the last chunk winning, so the daemon's view alone
    # would not tell "stripped" from "appended after". The capture does: on the CONNECT and the
    # INVOKE, the client's chunks in their order, no forged PGID, then pyroguard's PGID last.
    s.pg.settle()
    [conn] = daemon_frames(s)
    assert [f["type"] for f in conn] == [MSG_CONNECT, MSG_INVOKE], conn
    for f in conn:
        assert_valid_header(f)
        got_chunks = chunks(f["annotations"])
        assert [k for k, _ in got_chunks].count(PGID) == 1, got_chunks
        assert got_chunks[-1] == (PGID, want.encode()), got_chunks
        assert FORGED.encode() not in f["raw"]
        kept = dict(got_chunks[:-1])
        assert kept == {"XTRA": b"user annotation", "CORR": uuid.UUID(corr).bytes}, got_chunks


def test_raw_frames_with_forged_chunks_arrive_rewritten_byte_for_byte(fwd, certs):
    """Raw Pyro4 frames over mutual TLS: a forged PGID chunk between user chunks, on the
    CONNECT and on an INVOKE. The daemon receives each message exactly as sent, except that the
    forged chunk is gone, pyroguard's PGID is last, and the lengths and checksum fit."""
    s = fwd()
    corr = bytes(range(16))
    sent_ann = (chunk("XTRA", b"x-value") + chunk(PGID, FORGED.encode()) + chunk("CORR", corr) +
                chunk("XTR2", b""))
    kept_ann = chunk("XTRA", b"x-value") + chunk("CORR", corr) + chunk("XTR2", b"")
    connect = with_annotations(read_vector("serpent/echo/00_c2s_CONNECT.bin"), sent_ann)
    invoke = serpent_invoke("seen_annotations", seq=1, annotations=sent_ann)
    with s.tls_socket() as sock:
        sock.sendall(connect)
        [ok] = recv_frames(sock, 1)
        assert ok["type"] == MSG_CONNECTOK, ok
        sock.sendall(invoke)
        [r] = recv_frames(sock, 1)
        assert r["type"] == MSG_RESULT and not r["flags"] & 0x01, r
        got = decode(r)
    want = expected_pgid(s, certs, "client").encode()
    assert got == {PGID: want.decode(), "XTRA": "x-value", "XTR2": "",
                   "CORR": corr.decode("utf-8", "replace")}, got
    s.pg.settle()
    [conn] = daemon_frames(s)
    assert [f["raw"] for f in conn] == [
        with_annotations(connect, kept_ann + chunk(PGID, want)),
        with_annotations(invoke, kept_ann + chunk(PGID, want)),
    ]
    for f in conn:
        assert_valid_header(f)


def test_two_pgid_chunks_in_one_message_are_refused_before_the_daemon(fwd):
    """Duplicate annotation keys are refused when the message is framed (Pyro4 would keep the
    last one, PROTOCOL.md §2.2), so two forged PGID chunks never get as far as the rewrite."""
    s = fwd()
    ann = chunk(PGID, b"forged-1") + chunk("XTRA", b"x") + chunk(PGID, FORGED.encode())
    with s.tls_socket() as sock:
        sock.sendall(with_annotations(read_vector("serpent/echo/00_c2s_CONNECT.bin"), ann))
        data, how = read_until_closed(sock)
    [fail] = parse_pyro4_frames(data)
    assert fail["type"] == MSG_CONNECTFAIL, fail
    assert decode(fail) == "pyroguard: malformed Pyro message (bad_annotations)", fail
    s.pg.settle()
    s.backend.assert_received_nothing()


def test_a_message_with_no_room_for_the_identity_is_refused_and_never_reaches_the_daemon(fwd):
    """64 chunks of the client's own (as many as pyroguard takes) leave no room for PGID: the
    INVOKE is refused as identity_too_large, the daemon never reads it, the connection goes on."""
    s = fwd()
    full = b"".join(chunk("X%03d" % i, b"v") for i in range(64))
    with s.tls_socket() as sock:
        sock.sendall(read_vector("serpent/echo/00_c2s_CONNECT.bin"))
        [ok] = recv_frames(sock, 1)
        assert ok["type"] == MSG_CONNECTOK, ok
        sock.sendall(serpent_invoke("echo", 1, args=("no-room",), annotations=full))
        [r] = recv_frames(sock, 1)
        assert r["type"] == MSG_RESULT and r["flags"] & 0x01 and r["seq"] == 1, r
        exc = decode(r)
        assert type(exc).__name__ == "SecurityError", repr(exc)
        assert "does not fit" in str(exc), str(exc)
        sock.sendall(serpent_invoke("echo", 2, args=("after",)))
        [r] = recv_frames(sock, 1)
        assert decode(r) == "after" and r["seq"] == 2, r
    [line] = s.pg.wait_log(event="refused")
    assert line["reason"] == "identity_too_large", line
    s.pg.settle()
    for conn in daemon_frames(s):
        for f in conn:
            assert b"no-room" not in f["payload"], f


# --- 4. HMAC -------------------------------------------------------------------------------------


HMAC_REFUSAL = ("pyroguard: this listener forwards the caller's identity (forward_identity) and "
                "cannot add it to an HMAC-signed message; turn off the HMAC key (TLS already "
                "authenticates) or forward_identity")


def pyro4_message(msg_type, payload, seq, hmac_key, serializer_id=1, flags=0, annotations=None):
    """The bytes a real Pyro4 4.82 sender writes, HMAC chunk and all (Pyro4.message.Message)."""
    import Pyro4.message
    return Pyro4.message.Message(msg_type, payload, serializer_id, flags, seq,
                                 annotations=dict(annotations or {}),
                                 hmac_key=hmac_key).to_bytes()


def hmac_connect():
    [f] = parse_pyro4_frames(read_vector("serpent/echo/00_c2s_CONNECT.bin"))
    return pyro4_message(MSG_CONNECT, f["payload"], f["seq"], b"k", flags=f["flags"])


def test_a_real_pyro4_client_with_an_hmac_key_is_refused_at_connect(fwd, tmp_path):
    """A proxy with _pyroHmacKey signs its CONNECT: pyroguard cannot add PGID to it and refuses
    the CONNECT. Pyro4's own check then speaks first on the client: the CONNECTFAIL is unsigned
    and the proxy has a key, so Message.recv raises SecurityError("hmac key config not
    symmetric") inside the connect, which the proxy reports as a CommunicationError. pyroguard's
    text (below, read raw) is in its CONNECTFAIL and its log."""
    s = fwd()
    out = drive(s, tmp_path, hmac="k", calls=[["echo", ["never"]]])
    assert out["bind"] == {
        "ok": False, "exc_type": "Pyro4.errors.CommunicationError",
        "exc_msg": "cannot connect to ('localhost', %d): hmac key config not symmetric" % s.port}, out
    [line] = s.pg.wait_log(event="refused")
    assert line["reason"] == "hmac_not_rewritable", line
    assert line["detail"] == HMAC_REFUSAL, line
    s.pg.settle()
    # pyroguard had dialled the daemon for the allowed CONNECT; not one byte reached it.
    assert all(c == b"" for c in s.backend.connections()), s.backend.connections()


def test_an_hmac_signed_connect_gets_pyroguards_connectfail_text(fwd):
    s = fwd()
    with s.tls_socket() as sock:
        sock.sendall(hmac_connect())
        data, how = read_until_closed(sock)
    [fail] = parse_pyro4_frames(data)
    assert fail["type"] == MSG_CONNECTFAIL, fail
    text = decode(fail)
    assert text == HMAC_REFUSAL, text
    assert "forward_identity" in text and "HMAC" in text
    assert how == "eof", how
    s.pg.wait_log(event="refused", reason="hmac_not_rewritable")
    s.pg.settle()
    assert all(c == b"" for c in s.backend.connections()), s.backend.connections()


def test_an_hmac_signed_invoke_is_refused_with_security_error_and_never_reaches_the_daemon(
        fwd, tmp_path):
    # A real Pyro4 client whose key is set after an unsigned CONNECT: its INVOKE is signed.
    s = fwd()
    out = drive(s, tmp_path, hmac="k", hmac_after_bind=True, calls=[["echo", ["signed"]]])
    assert out["bind"]["ok"], out
    [r] = out["calls"]
    # The refusal (a RESULT with a SecurityError) is unsigned: the keyed proxy's Message.recv
    # raises its own SecurityError before reading what pyroguard said.
    assert r == {"ok": False, "exc_type": "Pyro4.errors.SecurityError",
                 "exc_msg": "hmac key config not symmetric"}, r
    [line] = s.pg.wait_log(event="refused")
    assert line["reason"] == "hmac_not_rewritable" and line["detail"] == HMAC_REFUSAL, line

    # Raw, on one connection: the signed INVOKE gets SecurityError(pyroguard's text), the
    # connection stays usable, and the daemon never reads the signed message.
    signed = pyro4_message(MSG_INVOKE, serpent_invoke("echo", 1, args=("signed-raw",))[24:], 1,
                           b"k")
    with s.tls_socket() as sock:
        sock.sendall(read_vector("serpent/echo/00_c2s_CONNECT.bin"))
        [ok] = recv_frames(sock, 1)
        assert ok["type"] == MSG_CONNECTOK, ok
        sock.sendall(signed)
        [r] = recv_frames(sock, 1)
        assert r["type"] == MSG_RESULT and r["flags"] & 0x01 and r["seq"] == 1, r
        exc = decode(r)
        assert type(exc).__name__ == "SecurityError" and str(exc) == HMAC_REFUSAL, repr(exc)
        sock.sendall(serpent_invoke("echo", 2, args=("after",)))
        [r] = recv_frames(sock, 1)
        assert decode(r) == "after" and r["seq"] == 2, r
    s.pg.settle()
    for conn in daemon_frames(s):
        for f in conn:
            assert "HMAC" not in dict(chunks(f["annotations"])), f
            assert b"signed" not in f["payload"], f


def test_without_forward_identity_hmac_traffic_passes_and_the_daemon_answers_it(fwd, tmp_path):
    """No forward_identity: pyroguard leaves the signed CONNECT alone. The daemon has no key, so
    it is the daemon (Pyro4 Message.recv in Daemon._handshake) that refuses it with its own
    CONNECTFAIL "hmac key config not symmetric" — proven by the raw bytes: the daemon read the
    client's CONNECT unchanged, and the CONNECTFAIL is the daemon's (marshal, seq 0)."""
    s = fwd(forward_identity=False)
    connect = hmac_connect()
    with s.tls_socket() as sock:
        sock.sendall(connect)
        data, how = read_until_closed(sock)
    [fail] = parse_pyro4_frames(data)
    assert fail["type"] == MSG_CONNECTFAIL and fail["serializer"] == 3, fail
    assert decode(fail) == "hmac key config not symmetric", fail
    s.pg.settle()
    assert s.backend.connections() == [connect]
    assert not s.pg.logs(event="refused"), s.pg.logs(event="refused")

    # A real keyed Pyro4 client gets the same words (its own check of the unsigned CONNECTFAIL).
    out = drive(s, tmp_path, hmac="k")
    assert out["bind"] == {
        "ok": False, "exc_type": "Pyro4.errors.CommunicationError",
        "exc_msg": "cannot connect to ('localhost', %d): hmac key config not symmetric" % s.port}, out
    assert not s.pg.logs(event="refused"), s.pg.logs(event="refused")


# --- 5. forward_identity off ---------------------------------------------------------------------


@pytest.mark.parametrize("setting", [False, None], ids=["false", "default"])
def test_without_forward_identity_nothing_is_added_and_a_client_pgid_is_not_touched(
        fwd, tmp_path, setting):
    # pyroguard does not interpret PGID on such a listener: a client may send any chunk of that
    # name and the daemon gets it as sent. That is acceptable because PGID means something only
    # behind a forward_identity: true listener, which always removes the client's and adds its
    # own; server code must trust PGID only there (README, "Identity forwarding"). Stripping it
    # here too would suggest the value can be relied on where pyroguard does not vouch for it.
    s = fwd(forward_identity=setting)
    assert seen(s) == {}, "the daemon saw annotations without forward_identity"
    out = drive(s, tmp_path, annotations={PGID: FORGED}, calls=[["seen_annotations", []]])
    assert out["bind"]["ok"], out
    assert out["calls"] == [{"ok": True, "result": {PGID: FORGED}}], out
    s.pg.settle()
    plain, forged = daemon_frames(s)
    for f in plain:
        assert_valid_header(f)
        assert f["annotations"] == b"", f
    for f in forged:
        assert chunks(f["annotations"]) == [(PGID, FORGED.encode())], f


# --- 6. Pyro5 (fake daemon) ----------------------------------------------------------------------


class FakePyro5(Backend):
    """fake_pyro5_daemon.py — a stand-in written for the tests, NOT the real Pyro5 — used here
    only for its byte capture (same convention as legacy_server.py's)."""

    def command(self):
        return [PYTHON, str(HERE / "fake_pyro5_daemon.py"), "--port", str(self.port),
                "--capture-dir", str(self.capture_dir), "--ready-file", str(self.ready_file),
                "--mode", "echo"]


def test_pyro5_connect_and_invoke_carry_exactly_one_pgid_u32_chunk(fwd, certs, tmp_path):
    s = fwd(overrides={"pyro": {"protocols": [5]}}, backend=False)
    fake = FakePyro5(tmp_path / "fake5", port=s.backend.port).start()
    try:
        corr = bytes(range(16))
        ann = [(PGID, FORGED.encode()), ("XTRA", b"x-value")]
        connect = p5.pyro5_frame(p5.MSG_CONNECT, p5.connect_payload("serpent"), serializer_id=1,
                                 annotations=ann, corr_id=corr, flags=p5.FLAG_CORR_ID)
        invoke = p5.pyro5_frame(p5.MSG_INVOKE, p5.invoke_payload("serpent", "thing", "echo",
                                                                 ["five"], {}),
                                serializer_id=1, seq=1, annotations=ann, corr_id=corr,
                                flags=p5.FLAG_CORR_ID)
        with s.tls_socket() as sock:
            sock.sendall(connect)
            [ok] = p5.recv_pyro5_frames(sock, 1)
            assert ok["type"] == p5.MSG_CONNECTOK, ok
            sock.sendall(invoke)
            [r] = p5.recv_pyro5_frames(sock, 1)
            assert p5.decode_payload("serpent", r["payload"]) == "five", r
        want = expected_pgid(s, certs, "client").encode()
        s.pg.settle()
        [conn] = fake.connections()
        got = p5.parse_pyro5_frames(conn)
        assert len(got) == 2 and all("partial" not in f for f in got), got
        for sent, f in zip((connect, invoke), got):
            [orig] = p5.parse_pyro5_frames(sent)
            assert f["annotations_ok"], f
            assert f["annotations"] == [("XTRA", b"x-value"), (PGID, want)], f
            # Everything else as sent: header fields (correlation id included) and payload.
            assert f["raw"] == p5.pyro5_frame(
                orig["type"], orig["payload"], serializer_id=orig["serializer_id"],
                flags=orig["flags"], seq=orig["seq"], annotations=f["annotations"],
                corr_id=orig["corr_id"])
    finally:
        fake.stop()
