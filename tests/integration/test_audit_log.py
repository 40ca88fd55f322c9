"""The call audit log (`log.calls: all | denied | none`): who called what, decided by which rule and
entry — and never with which argument values. `all` adds an `allowed` line per allowed CONNECT and
INVOKE; every refusal gets its `refused` line whatever the setting (README "The audit line").

Real Pyro4 4.82 clients (pyro_client.py `ops`) through the real pyroguard to the real legacy
daemon. Every client sends SECRET as an argument, and the tests check that it appears in no line
pyroguard writes, whatever the mode and whatever the verdict.
"""

import json

import pytest

from conftest import tls_connect, read_until_closed

SECRET = "s3cret-ARGUMENT-9f2c1e"

RULES = [
    {
        "name": "billing",
        "match": {"uri": "spiffe://example.org/ns/billing/*"},
        "allow": [
            {"object": "thing", "methods": ["echo", "digest"], "get": ["value"]},
            {"object": "thing", "set": ["value"]},
        ],
        "deny": [{"object": "thing", "methods": ["pid"]}],
    },
]


@pytest.fixture
def audit_stack(make_stack):
    def make(calls=None, clients=RULES):
        log = {"level": "info"}
        if calls is not None:
            log["calls"] = calls
        return make_stack({"clients": clients, "log": log})

    return make


def ops(stack, cert, *operations, serializer="serpent"):
    r = stack.client("ops", serializer, cert=cert, extra=["--ops", json.dumps(list(operations))])
    assert r["ok"], "the ops scenario itself failed: %r\n%s" % (r, stack.pg.stderr_text())
    return r["result"]


def call_lines(stack):
    """The call decision lines: allowed and refused lines about a CONNECT or INVOKE."""
    return [l for l in stack.pg.logs() if l.get("event") in ("allowed", "refused")]


def assert_secret_never_logged(stack):
    text = stack.pg.stderr_text()
    assert SECRET not in text, "an argument value reached the log:\n%s" % text
    assert SECRET[:12] not in text


# The calls every test makes: allowed ones (echo, a batch, a property read and write) and
# refused ones (not_allowed, denied_by_rule), each carrying SECRET somewhere in its arguments.
MIXED = [
    {"call": "echo", "args": [SECRET]},
    {"batch": [["echo", [SECRET]], ["digest", [SECRET + "-2"]]]},
    {"get": "value"},
    {"set": "value", "value": SECRET},
    {"call": "count"},                      # not allowed
    {"invoke": "pid", "args": [SECRET]},    # denied (the client checks no metadata for invoke)
]


def run_mixed(stack):
    out = ops(stack, "client", *MIXED)
    assert [o["ok"] for o in out] == [True, True, True, True, False, False], out
    assert out[0]["result"] == SECRET
    stack.pg.settle()
    return out


# --- log.calls: all ------------------------------------------------------------------------------


def test_calls_all_logs_each_allowed_call_with_rule_identity_object_names_and_entry(audit_stack):
    stack = audit_stack("all")
    run_mixed(stack)
    allowed = stack.pg.logs(event="allowed")
    assert all(l["level"] == "info" and l["verdict"] == "allowed" and l["action"] == "forwarded"
               for l in allowed), allowed
    for l in allowed:
        assert l["rule"] == "billing", l
        assert "CN=billing-client" in l["subject"], l
        assert l["uri"] == ["spiffe://example.org/ns/billing/client"], l
        assert l["serial"], l
        assert l["listener"] == "app" and l["peer"].startswith("127.0.0.1:"), l
        assert l["object"] == "thing", l
    summary = [(l["msg_type"], l.get("method"), l.get("property"), l.get("names"), l.get("entry"))
               for l in allowed]
    assert summary == [
        ("CONNECT", None, None, None, "clients[0].allow[0]"),
        ("INVOKE", "echo", None, ["echo"], "clients[0].allow[0]"),
        ("INVOKE", "<batch>", None, ["echo", "digest"], "clients[0].allow[0]"),
        ("INVOKE", "__getattr__", "get", ["value"], "clients[0].allow[0]"),
        ("INVOKE", "__setattr__", "set", ["value"], "clients[0].allow[1]"),
    ], allowed
    assert [l["seq"] for l in allowed[1:]] == sorted(l["seq"] for l in allowed[1:])
    assert_secret_never_logged(stack)


def test_calls_all_also_logs_the_refusals_with_their_entry(audit_stack):
    stack = audit_stack("all")
    out = run_mixed(stack)
    refused = stack.refusals()
    assert [(l["reason"], l["names"], l.get("entry")) for l in refused] == [
        ("not_allowed", ["count"], None),
        ("denied_by_rule", ["pid"], "clients[0].deny[0]"),
    ]
    for l, o in zip(refused, out[4:]):
        assert l["level"] == "warn" and l["verdict"] == "refused" and l["rule"] == "billing", l
        assert l["action"] == "exception_reply" and l["msg_type"] == "INVOKE", l
        assert o["exc_type"] == "Pyro4.errors.SecurityError" and o["exc_msg"] == l["detail"], (o, l)
    # The daemon ran exactly the allowed calls.
    names = [n for _o, _k, n in stack.backend.resolved_names()]
    assert names == ["echo", "echo", "digest", "value", "value"]
    assert_secret_never_logged(stack)


def test_calls_all_logs_the_Pyro_Daemon_stream_methods_as_the_built_in_rule(audit_stack):
    rules = [{"name": "streamer", "match": {"cn": "billing-client"},
              "allow": [{"object": "thing", "methods": ["gen"]}]}]
    stack = audit_stack("all", rules)
    [gen] = ops(stack, "client", {"call": "gen", "args": [2]})
    assert gen == {"ok": True, "result": [0, 1]}
    stack.pg.settle()
    invokes = [l for l in stack.pg.logs(event="allowed") if l["msg_type"] == "INVOKE"]
    assert [(l["object"], l["names"], l["entry"]) for l in invokes] == [
        ("thing", ["gen"], "clients[0].allow[0]")] + [
        ("Pyro.Daemon", ["get_next_stream_item"], "built-in Pyro.Daemon rule")] * 3


def test_calls_all_does_not_log_the_connect_handshake_data(audit_stack):
    stack = audit_stack("all")
    r = stack.client("custom_handshake")  # handshake {"token": "s3crét", "n": [1, 2]}
    assert r["ok"], r
    stack.pg.settle()
    [connect] = stack.pg.logs(event="allowed", msg_type="CONNECT")
    assert connect["object"] == "thing"
    assert "s3cr" not in stack.pg.stderr_text()


# --- log.calls: denied (the default) ------------------------------------------------------------


@pytest.mark.parametrize("calls", [None, "denied"], ids=["default", "denied"])
def test_calls_denied_logs_only_the_refusals(audit_stack, calls):
    stack = audit_stack(calls)
    run_mixed(stack)
    assert stack.pg.logs(event="allowed") == []
    refused = stack.refusals()
    assert [(l["reason"], l["rule"], l["object"], l["method"], l["names"], l.get("entry")) for l in refused] == [
        ("not_allowed", "billing", "thing", "count", ["count"], None),
        ("denied_by_rule", "billing", "thing", "pid", ["pid"], "clients[0].deny[0]"),
    ]
    for l in refused:
        assert "CN=billing-client" in l["subject"] and l["uri"] == ["spiffe://example.org/ns/billing/client"]
        assert l["serializer"] == "serpent" and isinstance(l["seq"], int) and isinstance(l["flags"], int)
    assert_secret_never_logged(stack)


def test_conn_open_names_the_rule_or_says_none_matched(audit_stack):
    stack = audit_stack()
    assert ops(stack, "client", {"call": "echo", "args": ["x"]})[0]["ok"]
    r = stack.client("echo", cert="stranger")
    assert not r["ok"]
    stack.pg.settle()
    opened = stack.pg.logs(event="conn_open")
    assert [(l.get("rule"), l.get("rule_matched")) for l in opened] == [("billing", None), (None, False)]


# --- log.calls: none ----------------------------------------------------------------------------


def test_calls_none_logs_no_allowed_call_but_still_every_refusal(audit_stack):
    # README "The audit line": refusals are never silenced; `none` behaves as `denied`
    # (DESIGN.md: "a structured log line for each connection and each refusal").
    stack = audit_stack("none")
    out = run_mixed(stack)
    assert out[4]["exc_type"] == "Pyro4.errors.SecurityError"
    # A CONNECT refused by the policy (object not allowed) is a call decision too.
    refused_connect = ops(stack, "client", {"object": "inventory", "call": "get_count"})
    assert refused_connect[0]["exc_type"] == "Pyro4.errors.CommunicationError"
    stack.pg.settle()
    assert stack.pg.logs(event="allowed") == []
    assert [(l["reason"], l["msg_type"], l.get("names"), l["action"]) for l in call_lines(stack)] == [
        ("not_allowed", "INVOKE", ["count"], "exception_reply"),
        ("denied_by_rule", "INVOKE", ["pid"], "exception_reply"),
        ("object_not_allowed", "CONNECT", None, "connectfail"),
    ]
    assert len(stack.pg.logs(event="conn_open")) == 2
    assert_secret_never_logged(stack)


def test_calls_none_still_logs_a_client_without_a_rule(audit_stack):
    stack = audit_stack("none")
    r = stack.client("echo", cert="stranger", extra=["--token", SECRET])
    assert not r["ok"] and "no client rule matches" in r["exc_msg"], r
    [line] = stack.pg.wait_log(event="refused", reason="no_matching_rule")
    assert line["level"] == "warn" and line["action"] == "connectfail", line
    assert "CN=stranger" in line["subject"], line
    stack.pg.settle()
    assert call_lines(stack) == [line]
    stack.backend.assert_received_nothing()
    assert_secret_never_logged(stack)


def test_calls_none_still_logs_framing_errors(audit_stack):
    stack = audit_stack("none")
    with tls_connect(stack.port, stack.certs) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 32)
        _data, how = read_until_closed(s)
    assert how != "timeout"
    [line] = stack.pg.wait_log(event="refused", reason="not_pyro")
    assert line["action"] == "closed"
    stack.backend.assert_received_nothing()
