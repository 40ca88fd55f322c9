"""The decode limits each have a config key, a default and a test (DESIGN.md property 5):
pyro.max_inflated_bytes (zlib bombs), pyro.max_depth and pyro.max_values. A request over a
limit gets a SecurityError naming it and never reaches the daemon; the same request under a
raised limit is served."""

import zlib

import pytest

from conftest import MSG_CONNECTOK, MSG_RESULT, pyro4_frame, read_vector, recv_frames

CONNECT = read_vector("serpent/echo/00_c2s_CONNECT.bin")
FLAG_EXCEPTION, FLAG_COMPRESSED = 0x01, 0x02
HEADER = b"# serpent utf-8 python3.2\n"


def call(arg_literal, flags=0, compress=False):
    payload = HEADER + b"('thing','echo',(" + arg_literal + b",),{})"
    if compress:
        payload = zlib.compress(payload)
        flags |= FLAG_COMPRESSED
    return pyro4_frame(msg_type=4, payload=payload, seq=1, flags=flags)


def exchange(stack, frame):
    with stack.tls_socket() as s:
        s.sendall(CONNECT + frame)
        frames = recv_frames(s, 2, timeout=30)
    assert [(f["type"], f["seq"]) for f in frames] == [(MSG_CONNECTOK, 0), (MSG_RESULT, 1)]
    return frames[1]


def assert_refused_not_forwarded(stack, reply, reason, text):
    assert reply["flags"] & FLAG_EXCEPTION
    assert b"SecurityError" in reply["payload"] and text.encode() in reply["payload"]
    [line] = stack.pg.wait_log(event="refused", reason=reason)
    assert line["action"] == "exception_reply"
    stack.pg.settle()
    [conn] = stack.backend.frames()
    assert [f["type"] for f in conn] == [1], "the daemon received more than the CONNECT"


def assert_served(stack, reply):
    assert reply["flags"] & FLAG_EXCEPTION == 0, reply["payload"][:200]
    assert stack.pg.logs(event="refused") == []


def test_zlib_bomb_is_refused_before_it_is_decoded(make_stack):
    stack = make_stack({"pyro": {"max_inflated_bytes": 1 << 20}})
    reply = exchange(stack, call(b"'" + b"A" * (8 << 20) + b"'", compress=True))
    assert_refused_not_forwarded(stack, reply, "inflated_too_large", "inflates past 1048576 bytes")


def test_compressed_call_under_max_inflated_bytes_is_served(make_stack):
    stack = make_stack({"pyro": {"max_inflated_bytes": 16 << 20}})
    assert_served(stack, exchange(stack, call(b"'" + b"A" * (8 << 20) + b"'", compress=True)))


def test_nesting_deeper_than_max_depth_is_refused(make_stack):
    stack = make_stack()  # default max_depth 32
    reply = exchange(stack, call(b"[" * 40 + b"]" * 40))
    assert_refused_not_forwarded(stack, reply, "undecodable", "cannot be decoded safely")


def test_nesting_under_a_raised_max_depth_is_served(make_stack):
    stack = make_stack({"pyro": {"max_depth": 64}})
    assert_served(stack, exchange(stack, call(b"[" * 40 + b"]" * 40)))


def test_more_values_than_max_values_is_refused(make_stack):
    stack = make_stack({"pyro": {"max_values": 100}})
    reply = exchange(stack, call(b"[" + b",".join(b"%d" % i for i in range(200)) + b"]"))
    assert_refused_not_forwarded(stack, reply, "undecodable", "cannot be decoded safely")


def test_values_under_max_values_are_served(make_stack):
    stack = make_stack()
    assert_served(stack, exchange(stack, call(b"[" + b",".join(b"%d" % i for i in range(200)) + b"]")))


# The other inspection refusals, each through the real proxy: a SecurityError in the client's
# serializer and nothing but the CONNECT at the daemon.
@pytest.mark.parametrize("payload,flags,reason,text", [
    (HEADER + b"{'object':'thing','method':'echo','params':(),'kwargs':{}}", 0,
     "malformed_call", "4-element tuple"),
    (HEADER + b"('thing','echo',('unterminated,),{})", 0, "undecodable", "cannot be decoded"),
    (HEADER + b"('thing','echo',('\\N{FULL STOP}',),{})", 0, "undecodable", "cannot be decoded"),
    (b"not a zlib stream", FLAG_COMPRESSED, "inflate_failed", "not a valid zlib stream"),
    (zlib.compress(HEADER + b"('thing','echo',(1,),{})") + b"trailer", FLAG_COMPRESSED,
     "inflate_failed", "not a valid zlib stream"),
], ids=["non_canonical_shape", "syntax_error", "named_escape", "not_zlib", "bytes_after_zlib"])
def test_other_inspection_refusals_never_reach_the_daemon(make_stack, payload, flags, reason,
                                                           text):
    stack = make_stack()
    reply = exchange(stack, pyro4_frame(msg_type=4, payload=payload, seq=1, flags=flags))
    assert_refused_not_forwarded(stack, reply, reason, text)
