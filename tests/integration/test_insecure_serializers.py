"""pickle, dill and cloudpickle never reach the daemon: not at CONNECT (where the legacy daemon would
already unpickle the handshake, PROTOCOL.md §4.1), not on a later INVOKE, not on a ONEWAY call.

The payload is a real exploit: unpickling it creates a marker file. The control test shows it
works against the unprotected daemon, so the marker's absence behind pyroguard means something.
"""

import pytest

from conftest import MSG_CONNECT, MSG_INVOKE, SER_IDS, Backend, run_client

INSECURE = ["pickle", "dill", "cloudpickle"]


def not_allowed_text(serializer):
    return "pyroguard: serializer %s (id %d) is not allowed" % (serializer, SER_IDS[serializer])


def assert_serializer_refusal_logged(stack, serializer, msg_type, action):
    [line] = stack.pg.wait_log(event="refused", reason="serializer_not_allowed")
    assert line["msg_type"] == msg_type
    assert line["action"] == action
    assert line["serializer"] in (serializer, SER_IDS[serializer])
    assert line["listener"] == "app"
    assert "billing-client" in line["subject"]
    return line


def assert_no_frame_with_insecure_serializer(stack):
    for conn in stack.backend.frames():
        assert [f["serializer"] for f in conn if f.get("serializer") in (4, 5, 7)] == []


@pytest.mark.parametrize("serializer", INSECURE)
def test_exploit_payload_runs_code_on_the_unprotected_daemon(tmp_path, certs, serializer):
    backend = Backend(tmp_path / "backend").start()
    marker = tmp_path / "pwned"
    try:
        r = run_client("evil_connect", backend.port, certs, serializer=serializer, plain=True,
                       extra=["--marker", str(marker)])
    finally:
        backend.stop()
    assert r["ok"], r
    assert marker.exists(), "the control exploit did not run on the unprotected daemon"


@pytest.mark.parametrize("serializer", INSECURE)
def test_insecure_connect_is_refused_before_backend_sees_it(stack, tmp_path, serializer):
    marker = tmp_path / "pwned"
    r = stack.client("evil_connect", serializer, extra=["--marker", str(marker)])
    assert not r["ok"]
    assert r["exc_type"] == "Pyro4.errors.CommunicationError"
    assert not_allowed_text(serializer) in r["exc_msg"]
    assert "rejected" in r["exc_msg"]
    assert_serializer_refusal_logged(stack, serializer, "CONNECT", "connectfail")
    stack.pg.settle()
    assert not marker.exists(), "the daemon unpickled the handshake"
    stack.backend.assert_received_nothing()


@pytest.mark.parametrize("serializer", INSECURE)
def test_switching_to_insecure_serializer_after_connect_gets_security_error(stack, tmp_path, serializer):
    marker = tmp_path / "pwned"
    r = stack.client("switch_invoke", serializer, extra=["--marker", str(marker)])
    steps = dict(r["steps"])
    assert steps["connect"] == "before"
    exc_type, exc_msg = steps["switched_call"]
    assert exc_type == "Pyro4.errors.SecurityError"
    assert not_allowed_text(serializer) in exc_msg
    line = assert_serializer_refusal_logged(stack, serializer, "INVOKE", "exception_reply")
    assert line["seq"] == 2
    stack.pg.settle()
    assert not marker.exists(), "the daemon unpickled the call"
    assert_no_frame_with_insecure_serializer(stack)
    assert str(marker).encode() not in b"".join(stack.backend.connections())


@pytest.mark.parametrize("serializer", INSECURE)
def test_connection_stays_usable_after_a_refused_invoke(stack, tmp_path, serializer):
    r = stack.client("switch_invoke", serializer, extra=["--marker", str(tmp_path / "pwned")])
    assert r["ok"], r
    assert r["result"] == "after"
    stack.pg.settle()
    [conn] = stack.backend.frames()
    assert [(f["type"], f["serializer"], f["seq"]) for f in conn] == [
        (MSG_CONNECT, 1, 0), (MSG_INVOKE, 1, 1), (MSG_INVOKE, 1, 3)]


@pytest.mark.parametrize("serializer", INSECURE)
def test_insecure_oneway_call_is_dropped_silently_and_connection_stays_usable(stack, tmp_path, serializer):
    marker = tmp_path / "pwned"
    r = stack.client("switch_oneway", serializer, extra=["--marker", str(marker)])
    assert r["ok"], r
    assert dict(r["steps"])["switched_oneway"] == "None"
    assert r["result"] == "after"
    assert_serializer_refusal_logged(stack, serializer, "INVOKE", "dropped_oneway")
    stack.pg.settle()
    assert not marker.exists(), "the daemon unpickled the oneway call"
    assert stack.backend.fired() == []
    assert_no_frame_with_insecure_serializer(stack)
    [conn] = stack.backend.frames()
    assert [(f["type"], f["seq"]) for f in conn] == [(MSG_CONNECT, 0), (MSG_INVOKE, 1), (MSG_INVOKE, 3)]
