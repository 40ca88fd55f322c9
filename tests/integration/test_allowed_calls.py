"""Safe serializers pass through pyroguard untouched: every Pyro4 call style works end to end with a
real Pyro4 4.82 client (mutual TLS) and the real legacy daemon behind pyroguard."""

import pytest

from conftest import FLAG_COMPRESSED, FLAG_ONEWAY, MSG_CONNECT, MSG_INVOKE, SER_IDS, wait_until

SAFE = ["serpent", "json", "marshal", "msgpack"]

MARSHAL_CLIENT_BUG = ("the Pyro4 4.82 marshal client cannot send %s (it calls .items() on a None kwargs; "
                      "tests/vectors/pyro4/README.md), so there is nothing to forward")


def assert_allowed(stack, r):
    assert r["ok"], "client failed: %r\npyroguard log:\n%s" % (r, stack.pg.stderr_text())
    assert stack.refusals() == []


@pytest.mark.parametrize("serializer", SAFE)
def test_plain_call_is_forwarded_and_answered(stack, serializer):
    r = stack.client("echo", serializer)
    assert_allowed(stack, r)
    assert r["result"] == "hello"
    [conn] = stack.backend.frames()
    assert [(f["type"], f["serializer"]) for f in conn] == [
        (MSG_CONNECT, SER_IDS[serializer]), (MSG_INVOKE, SER_IDS[serializer])]


@pytest.mark.parametrize("serializer", SAFE)
def test_oneway_call_reaches_the_daemon_and_connection_stays_in_sync(stack, serializer):
    token = "oneway-%s" % serializer
    r = stack.client("oneway", serializer, extra=["--token", token])
    assert_allowed(stack, r)
    assert r["result"] == [None, "after-oneway"]
    wait_until(lambda: repr(token) in stack.backend.fired(), 5, what="the oneway call to run")
    invokes = [f for f in stack.backend.frames()[0] if f["type"] == MSG_INVOKE]
    assert invokes[0]["flags"] & FLAG_ONEWAY


@pytest.mark.parametrize("serializer", SAFE)
def test_batch_call_returns_every_result(stack, serializer):
    if serializer == "marshal":
        pytest.skip(MARSHAL_CLIENT_BUG % "batch calls")
    r = stack.client("batch", serializer)
    assert_allowed(stack, r)
    assert r["result"] == [1, "two"]


@pytest.mark.parametrize("serializer", SAFE)
def test_property_get_returns_the_daemon_value(stack, serializer):
    if serializer == "marshal":
        pytest.skip(MARSHAL_CLIENT_BUG % "__getattr__ (property get)")
    r = stack.client("getattr", serializer)
    assert_allowed(stack, r)
    assert r["result"] == 42


@pytest.mark.parametrize("serializer", SAFE)
def test_property_set_is_applied_by_the_daemon(stack, serializer):
    if serializer == "marshal":
        pytest.skip(MARSHAL_CLIENT_BUG % "__setattr__ (property set)")
    r = stack.client("setattr", serializer)
    assert_allowed(stack, r)
    assert r["result"] == 7


@pytest.mark.parametrize("serializer", SAFE)
def test_generator_result_streams_item_by_item(stack, serializer):
    r = stack.client("stream", serializer)
    assert_allowed(stack, r)
    assert r["result"] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("serializer", SAFE)
def test_compressed_call_is_forwarded_when_compression_is_allowed(stack, serializer):
    r = stack.client("compressed", serializer)
    assert_allowed(stack, r)
    assert r["result"] == [5000, True]
    invokes = [f for f in stack.backend.frames()[0] if f["type"] == MSG_INVOKE]
    assert invokes and invokes[0]["flags"] & FLAG_COMPRESSED


@pytest.mark.parametrize("serializer", SAFE)
def test_serialized_blob_call_is_forwarded(stack, serializer):
    r = stack.client("blob", serializer)
    assert_allowed(stack, r)
    info, data = r["result"]
    assert info == "blobinfo"
    if serializer in ("serpent", "msgpack"):
        assert data == {"k": [1, 2, 3]}
    # json and marshal re-serialize a SerializedBlob oddly in Pyro4 4.82 itself
    # (tests/vectors/pyro4/README.md); the call going through is what matters here.


@pytest.mark.timeout(150)
@pytest.mark.parametrize("serializer", SAFE)
def test_ten_megabyte_argument_arrives_intact(stack, serializer):
    r = stack.client("big", serializer, timeout=120)
    assert_allowed(stack, r)
    assert r["result"] == {"sent_len": 10485760, "got_len": 10485760, "match": True}


@pytest.mark.parametrize("serializer", SAFE)
def test_hundred_calls_share_one_connection(stack, serializer):
    r = stack.client("many", serializer)
    assert_allowed(stack, r)
    assert r["result"] == {"calls": 100, "in_order": True}
    stack.pg.settle()
    assert len(stack.pg.logs(event="conn_open")) == 1
    assert len(stack.backend.connections()) == 1
    [conn] = stack.backend.frames()
    assert len([f for f in conn if f["type"] == MSG_INVOKE]) == 100


@pytest.mark.timeout(150)
@pytest.mark.parametrize("serializer", SAFE)
def test_twenty_concurrent_clients_are_all_served(stack, serializer):
    r = stack.client("concurrent", serializer, timeout=120, extra=["--threads", "20"])
    assert_allowed(stack, r)
    assert r["result"]["all_ok"], r["result"]["results"]
    assert len(stack.pg.logs(event="conn_open")) == 20
    assert len(stack.backend.connections()) == 20
