"""Bytes no honest Pyro4 client sends, over a valid mutual-TLS connection: pyroguard closes the
connection (a first message of a known protocol is answered with a CONNECTFAIL first, as the Pyro
daemon answers a broken handshake), logs a `refused` line naming the rule, and the daemon never
receives the bad bytes.
Frames are built from the header layout in PROTOCOL.md §2.1 or replayed from captured vectors."""

import marshal
import struct

import pytest

from conftest import (
    HEADER, MSG_CONNECT, MSG_CONNECTFAIL, MSG_CONNECTOK, MSG_PING, MSG_RESULT,
    parse_pyro4_frames, pyro4_frame, read_until_closed, read_vector, recv_frames,
)

CONNECT = "serpent/echo/00_c2s_CONNECT.bin"
INVOKE = "serpent/echo/01_c2s_INVOKE.bin"


def reframe(raw, **fields):
    """Re-emit a captured frame with some header fields replaced (checksum recomputed unless given)."""
    magic, ver, typ, flags, seq, dl, ser, al, _res, _cs = HEADER.unpack_from(raw)
    body = raw[HEADER.size:]
    args = dict(msg_type=typ, version=ver, flags=flags, seq=seq, serializer_id=ser,
                annotations=body[:al], payload=body[al:], magic=magic)
    args.update(fields)
    return pyro4_frame(**args)


def send_and_expect_close(stack, data, timeout=10):
    with stack.tls_socket() as s:
        s.sendall(data)
        reply, how = read_until_closed(s, timeout=timeout)
    assert how in ("eof", "reset") or how.startswith("tls_error"), (
        "pyroguard kept the connection open (%s)" % how)
    return reply


def assert_refused(stack, reason, action=None):
    [line] = stack.pg.wait_log(event="refused", reason=reason)
    assert line["listener"] == "app"
    assert line["peer"].startswith("127.0.0.1:")
    assert "billing-client" in line["subject"]
    assert line["detail"]
    if action:
        assert line["action"] == action
    stack.pg.settle()
    return line


def test_http_request_is_refused_as_not_pyro(stack):
    reply = send_and_expect_close(stack, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert reply == b""
    assert_refused(stack, "not_pyro", action="closed")
    stack.backend.assert_received_nothing()


def connectfail_text(reply, version=48):
    """A broken first message is answered as the Pyro daemon answers a broken handshake: one
    CONNECTFAIL, seq 0, marshal text, in the client's own protocol version, then the close."""
    [f] = parse_pyro4_frames(reply)
    assert f["type"] == MSG_CONNECTFAIL and f["version"] == version and f["seq"] == 0, f
    assert f["serializer"] == 3, f  # marshal
    return marshal.loads(f["payload"])


def test_wrong_protocol_version_is_refused(stack):
    frame = reframe(read_vector(CONNECT), version=47)  # a Pyro4 4.26-4.37 client; checksum valid
    reply = send_and_expect_close(stack, frame)
    assert connectfail_text(reply, version=47) == (
        "pyroguard: Pyro protocol version 47 (pyro4.47) is not accepted here (pyro.protocols)")
    assert_refused(stack, "protocol_version", action="connectfail")
    stack.backend.assert_received_nothing()


def test_unknown_protocol_version_is_closed_without_a_reply(stack):
    frame = reframe(read_vector(CONNECT), version=45)  # the 38-byte header era: no way to answer
    reply = send_and_expect_close(stack, frame)
    assert reply == b""
    assert_refused(stack, "protocol_version", action="closed")
    stack.backend.assert_received_nothing()


def test_bad_checksum_is_refused(stack):
    raw = read_vector(CONNECT)
    (cs,) = struct.unpack_from("!H", raw, 22)
    frame = raw[:22] + struct.pack("!H", (cs + 1) & 0xFFFF) + raw[24:]
    reply = send_and_expect_close(stack, frame)
    assert connectfail_text(reply) == "pyroguard: malformed Pyro message (bad_checksum)"
    assert_refused(stack, "bad_checksum", action="connectfail")
    stack.backend.assert_received_nothing()


def test_a_real_pyro4_client_at_a_pyro5_only_listener_is_told_why(make_stack):
    """What the client sees of such a refusal: Pyro's own CommunicationError with the reason."""
    stack = make_stack({"pyro": {"protocols": [5]}})
    r = stack.client("echo")
    assert not r["ok"], r
    assert r["exc_type"] == "Pyro4.errors.CommunicationError", r
    assert ("rejected: pyroguard: Pyro protocol version 48 (pyro4) is not accepted here "
            "(pyro.protocols)") in r["exc_msg"], r
    stack.backend.assert_received_nothing()


@pytest.mark.parametrize("data_length,ann_length", [(65537, 0), (65530, 20)],
                         ids=["payload_over_limit", "payload_plus_annotations_over_limit"])
def test_declared_length_over_max_message_bytes_is_refused_without_waiting_for_the_body(
        make_stack, data_length, ann_length):
    stack = make_stack({"pyro": {"max_message_bytes": 65536}})
    # Only the header is sent: the size must be judged before the body is awaited (STYLE.md #3).
    header = pyro4_frame(MSG_CONNECT, data_length=data_length, ann_length=ann_length)
    reply = send_and_expect_close(stack, header, timeout=5)
    assert connectfail_text(reply) == "pyroguard: malformed Pyro message (message_too_large)"
    assert_refused(stack, "message_too_large", action="connectfail")
    stack.backend.assert_received_nothing()


def test_message_of_exactly_max_message_bytes_is_forwarded(make_stack):
    stack = make_stack({"pyro": {"max_message_bytes": 65536}})
    connect = read_vector(CONNECT)
    head, tail = b"# serpent utf-8 python3.2\n{'handshake':'", b"','object':'thing'}"
    payload = head + b"x" * (65536 - len(head) - len(tail)) + tail
    assert len(payload) == 65536
    with stack.tls_socket() as s:
        s.sendall(reframe(connect, payload=payload))
        [reply] = recv_frames(s, 1)
    assert reply["type"] == MSG_CONNECTOK
    assert stack.refusals() == []


def test_negative_data_length_is_refused(stack):
    reply = send_and_expect_close(stack, pyro4_frame(MSG_CONNECT, data_length=-1))
    assert connectfail_text(reply) == "pyroguard: malformed Pyro message (negative_length)"
    assert_refused(stack, "negative_length", action="connectfail")
    stack.backend.assert_received_nothing()


def test_invoke_before_connect_is_refused(stack):
    reply = send_and_expect_close(stack, read_vector(INVOKE))
    # The daemon itself would answer CONNECTFAIL (PROTOCOL.md §1); a bare close is also fine.
    assert [f.get("type") for f in parse_pyro4_frames(reply)] in ([], [MSG_CONNECTFAIL])
    line = assert_refused(stack, "unexpected_message")
    assert line["msg_type"] == "INVOKE"
    stack.backend.assert_received_nothing()


def test_pickle_connect_from_a_recorded_session_gets_connectfail(stack):
    reply = send_and_expect_close(stack, read_vector("pickle/echo/00_c2s_CONNECT.bin"))
    frames = parse_pyro4_frames(reply)
    assert [f.get("type") for f in frames] == [MSG_CONNECTFAIL]
    assert b"serializer pickle (id 4) is not allowed" in frames[0]["payload"]
    line = assert_refused(stack, "serializer_not_allowed", action="connectfail")
    assert line["msg_type"] == "CONNECT"
    stack.backend.assert_received_nothing()


def test_recorded_serpent_session_is_forwarded_byte_for_byte(stack):
    connect, invoke = read_vector(CONNECT), read_vector(INVOKE)
    with stack.tls_socket() as s:
        s.sendall(connect)
        [ok] = recv_frames(s, 1)
        s.sendall(invoke)
        [result] = recv_frames(s, 1)
    assert ok["type"] == MSG_CONNECTOK
    assert result["type"] == MSG_RESULT and result["seq"] == 1
    assert b"hello" in result["payload"]
    stack.pg.settle()
    assert stack.backend.connections() == [connect + invoke]


def test_ping_after_connect_is_answered_with_pong(stack):
    with stack.tls_socket() as s:
        s.sendall(read_vector("serpent/ping/00_c2s_CONNECT.bin"))
        recv_frames(s, 1)
        s.sendall(read_vector("serpent/ping/01_c2s_PING.bin"))
        [pong] = recv_frames(s, 1)
    assert pong["type"] == MSG_PING and pong["payload"] == b"pong"
    assert stack.refusals() == []


def test_second_connect_after_handshake_is_refused_and_not_forwarded(stack):
    connect = read_vector(CONNECT)
    with stack.tls_socket() as s:
        s.sendall(connect)
        [ok] = recv_frames(s, 1)
        assert ok["type"] == MSG_CONNECTOK
        s.sendall(connect)
        reply, how = read_until_closed(s)
    assert how != "timeout", "pyroguard kept the connection open"
    line = assert_refused(stack, "unexpected_message")
    assert line["msg_type"] == "CONNECT"
    assert stack.backend.connections() == [connect]


def test_bad_checksum_after_handshake_closes_connection_and_is_not_forwarded(stack):
    connect, invoke = read_vector(CONNECT), read_vector(INVOKE)
    (cs,) = struct.unpack_from("!H", invoke, 22)
    bad = invoke[:22] + struct.pack("!H", (cs + 1) & 0xFFFF) + invoke[24:]
    with stack.tls_socket() as s:
        s.sendall(connect)
        recv_frames(s, 1)
        s.sendall(bad)
        reply, how = read_until_closed(s)
    assert how != "timeout", "pyroguard kept the connection open"
    assert reply == b""
    assert_refused(stack, "bad_checksum", action="closed")
    assert stack.backend.connections() == [connect]


def test_bad_frame_split_across_writes_is_refused_once_complete(stack):
    # Header first, then its payload: the framer must judge the header on its own.
    frame = reframe(read_vector(CONNECT), version=46)
    with stack.tls_socket() as s:
        s.sendall(frame[:10])
        s.sendall(frame[10:])
        reply, how = read_until_closed(s)
    assert how != "timeout"
    assert_refused(stack, "protocol_version")
    stack.backend.assert_received_nothing()


def chunk(key, value):
    return key + struct.pack("!H", len(value)) + value


@pytest.mark.parametrize("annotations", [
    # Pyro4 silently truncates a chunk that runs past the block and executes the call
    # (PROTOCOL.md §2.2, live `ann_length_overrun`): pyroguard refuses it instead.
    b"XTRA" + struct.pack("!H", 40) + b"short",
    # Duplicate keys: Pyro4 keeps the last one, a careless filter the first (§2.2, §10).
    chunk(b"BLBI", b"one") + chunk(b"BLBI", b"two"),
    # A tail too short to be a chunk header.
    chunk(b"XTRA", b"v") + b"XT",
    # A key that is not printable ASCII.
    chunk(b"X\xffRA", b"v"),
], ids=["chunk_overrunning_the_block", "duplicate_key", "trailing_fragment", "non_ascii_key"])
def test_malformed_annotations_after_handshake_are_refused_and_not_forwarded(stack, annotations):
    connect, invoke = read_vector(CONNECT), read_vector(INVOKE)
    bad = reframe(invoke, annotations=annotations)
    with stack.tls_socket() as s:
        s.sendall(connect)
        recv_frames(s, 1)
        s.sendall(bad)
        reply, how = read_until_closed(s)
    assert how != "timeout", "pyroguard kept the connection open"
    assert reply == b""
    line = assert_refused(stack, "bad_annotations", action="closed")
    assert line["msg_type"] == "INVOKE"
    assert stack.backend.connections() == [connect]
