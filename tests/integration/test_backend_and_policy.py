"""What a client sees when the daemon behind pyroguard is down, and the `pyro.compression` switch."""

import pytest

from conftest import FLAG_COMPRESSED, MSG_INVOKE

SAFE = ["serpent", "json", "marshal", "msgpack"]


def test_backend_down_gives_connectfail_backend_unavailable(make_stack):
    stack = make_stack(backend=False)
    r = stack.client("echo")
    assert not r["ok"]
    assert r["exc_type"] == "Pyro4.errors.CommunicationError"
    assert "backend unavailable" in r["exc_msg"]
    [line] = stack.pg.wait_log(event="refused", reason="backend_unavailable")
    assert line["action"] == "connectfail"
    assert line["msg_type"] == "CONNECT"


def test_backend_that_comes_back_is_used_without_restarting_pyroguard(make_stack):
    stack = make_stack(backend=False)
    assert not stack.client("echo")["ok"]
    stack.backend.start()
    r = stack.client("echo")
    assert r["ok"], r
    assert r["result"] == "hello"


@pytest.mark.parametrize("serializer", SAFE)
def test_compressed_call_is_refused_when_compression_is_denied(make_stack, serializer):
    # The SecurityError reply must be encoded with the client's own serializer (PROTOCOL.md §1).
    stack = make_stack({"pyro": {"compression": "deny"}})
    r = stack.client("compressed", serializer)
    assert not r["ok"]
    assert r["exc_type"] == "Pyro4.errors.SecurityError"
    assert r["exc_msg"].startswith("pyroguard: ")
    [line] = stack.pg.wait_log(event="refused", reason="compression_denied")
    assert line["msg_type"] == "INVOKE"
    assert line["action"] == "exception_reply"
    stack.pg.settle()
    for conn in stack.backend.frames():
        assert [f for f in conn if f.get("flags", 0) & FLAG_COMPRESSED] == []


def test_uncompressed_calls_still_work_when_compression_is_denied(make_stack):
    stack = make_stack({"pyro": {"compression": "deny"}})
    r = stack.client("echo")
    assert r["ok"], r
    assert stack.refusals() == []
    [conn] = stack.backend.frames()
    assert [f["type"] for f in conn if f["type"] == MSG_INVOKE] == [MSG_INVOKE]
