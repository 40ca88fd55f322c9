"""Per-client policy (`clients:`): several client certificates through pyroguard to the real Pyro4
4.82 daemon, each getting exactly the access its rule gives.

Every refusal is checked three ways: what the Pyro4 client raised (SecurityError for a call,
CommunicationError for a CONNECTFAIL), the `refused` log line (reason, rule, entry, names…),
and what the daemon saw: its byte capture (conftest Backend.frames/connections) and the names it
tried to resolve (legacy_server.py --names-log). The daemon also serves `inventory`
(legacy_server.py --inventory, switched on through LEGACY_INVENTORY) so that a rule can allow
"get_*" style reads and not writes.

The certificates (tests/certs/mint.sh): client = CN=billing-client O=Example
URI spiffe://example.org/ns/billing/client; reader = CN=inventory-reader OU=readers O=Example;
registrar = CN=ns-registrar OU=ops O=Example; admin = CN=ops-admin OU=ops O=Example IP 10.1.2.3
email admin@example.org; stranger = CN=stranger O=Other URI spiffe://other.org/ns/x/stranger.
"""

import json
import marshal
import shutil
import socket
import ssl
import struct
import subprocess

import Pyro4.util
import pytest

from conftest import (MSG_CONNECT, MSG_CONNECTFAIL, MSG_CONNECTOK, MSG_INVOKE, MSG_RESULT, Quoted, pyro4_frame,
                      read_vector, recv_frames, run_client, tls_context)

SAFE = ["serpent", "json", "marshal", "msgpack"]

BILLING = {
    "name": "billing",
    "match": {"uri": "spiffe://example.org/ns/billing/*"},
    "allow": [{"object": "thing", "methods": ["echo"], "get": ["value"]}],
}
READERS = {
    "name": "readers",
    "match": {"ou": "readers"},
    "allow": [{"object": "inventory", "methods": ["get_*", "list_items"], "get": ["owner"]}],
}
OPS = {
    "name": "ops",
    "match": {"ou": "ops", "o": "Example"},
    "allow": [
        {"object": ["thing", "inventory"], "methods": ["*"], "get": ["*"], "set": ["*"]},
        {"object": "Pyro.Daemon", "methods": ["registered"]},
    ],
    "deny": [{"object": "inventory", "methods": ["drop_all", "add_*"]}],
}
POLICY = [BILLING, READERS, OPS]


@pytest.fixture
def policy_stack(make_stack, monkeypatch):
    """policy_stack(clients, **overrides) -> a started Stack whose daemon also serves `inventory`."""
    monkeypatch.setenv("LEGACY_INVENTORY", "1")

    def make(clients, **overrides):
        over = {"clients": clients}
        over.update(overrides)
        return make_stack(over)

    return make


def cert_field(certs, name, what):
    """The serial (`-serial`) or SHA-256 fingerprint (`-fingerprint -sha256`) openssl reads."""
    args = {"serial": ["-serial"], "sha256": ["-fingerprint", "-sha256"]}[what]
    out = subprocess.run(["openssl", "x509", "-in", str(certs / ("%s.crt" % name)), "-noout"] + args,
                         capture_output=True, text=True, check=True).stdout.strip()
    return out.split("=", 1)[1]


class Since(object):
    """What a stack logged, received and resolved from now on."""

    def __init__(self, stack):
        self.stack = stack
        self.n_lines = len(stack.pg.logs())
        self.n_conns = len(stack.backend.connections())
        self.n_names = len(stack.backend.resolved_names())

    def logs(self, **match):
        lines = self.stack.pg.logs()[self.n_lines:]
        return [l for l in lines if all(l.get(k) == v for k, v in match.items())]

    def refusals(self):
        return self.logs(event="refused")

    def frames(self):
        return self.stack.backend.frames()[self.n_conns:]

    def connections(self):
        return self.stack.backend.connections()[self.n_conns:]

    def resolved(self):
        return self.stack.backend.resolved_names()[self.n_names:]

    def settle(self):
        self.stack.pg.settle()


def ops(stack, cert, *operations, serializer="serpent", no_metadata=False):
    """Run the pyro_client.py `ops` scenario as `cert`; returns the outcome of each operation."""
    extra = ["--ops", json.dumps(list(operations))]
    if no_metadata:
        extra.append("--no-metadata")
    r = stack.client("ops", serializer, cert=cert, extra=extra)
    assert r["ok"], "the ops scenario itself failed: %r\n%s" % (r, stack.pg.stderr_text())
    assert len(r["result"]) == len(operations), r
    return r["result"]


def assert_ok(stack, outcome, expected=None):
    assert outcome["ok"], "refused: %r\npyroguard log:\n%s" % (outcome, stack.pg.stderr_text())
    if expected is not None:
        assert outcome["result"] == expected


def assert_security_error(outcome, *fragments):
    assert not outcome["ok"], "the call went through: %r" % outcome
    assert outcome["exc_type"] == "Pyro4.errors.SecurityError", outcome
    assert outcome["exc_msg"].startswith("pyroguard: "), outcome
    for frag in fragments:
        assert frag in outcome["exc_msg"], (frag, outcome)


def assert_connectfail(outcome, *fragments):
    assert not outcome["ok"], "the connection was accepted: %r" % outcome
    assert outcome["exc_type"] == "Pyro4.errors.CommunicationError", outcome
    assert "rejected: pyroguard: " in outcome["exc_msg"], outcome
    for frag in fragments:
        assert frag in outcome["exc_msg"], (frag, outcome)


def assert_line(line, **fields):
    for k, v in fields.items():
        assert line.get(k) == v, "log field %r: %r != %r in %r" % (k, line.get(k), v, line)


def invokes(conn_frames):
    return [f for f in conn_frames if f.get("type") == MSG_INVOKE]


# --- each certificate gets its rule's access ---------------------------------------------------------


@pytest.mark.parametrize("serializer", SAFE)
def test_billing_client_may_echo_but_a_method_outside_its_rule_is_refused(policy_stack, serializer):
    stack = policy_stack(POLICY)
    w = Since(stack)
    echo, count, echo2 = ops(stack, "client",
                             {"call": "echo", "args": ["billing-%s" % serializer]},
                             {"call": "count"},
                             {"call": "echo", "args": ["still usable"]},
                             serializer=serializer)
    assert_ok(stack, echo, "billing-%s" % serializer)
    assert_security_error(count, "method 'count' of object 'thing' is not allowed for client rule 'billing'")
    assert_ok(stack, echo2, "still usable")  # a refused call leaves the connection usable
    w.settle()
    [line] = w.refusals()
    assert_line(line, level="warn", reason="not_allowed", verdict="refused", rule="billing",
                msg_type="INVOKE", serializer=serializer, object="thing", method="count",
                names=["count"], action="exception_reply", detail=count["exc_msg"])
    assert "CN=billing-client" in line["subject"]
    assert line["uri"] == ["spiffe://example.org/ns/billing/client"]
    assert line["serial"] == cert_field(stack.certs, "client", "serial").lstrip("0")
    assert "entry" not in line, "no entry allowed or denied 'count': %r" % line
    # The daemon resolved the two echoes and never heard of `count`.
    assert w.resolved() == [("thing", "method", "echo"), ("thing", "method", "echo")]
    [conn] = w.frames()
    assert [f["type"] for f in conn] == [MSG_CONNECT, MSG_INVOKE, MSG_INVOKE]
    assert all(b"count" not in f["payload"] for f in conn)


def test_billing_client_may_read_the_allowed_property_but_not_write_it(policy_stack):
    stack = policy_stack(POLICY)
    w = Since(stack)
    get, put = ops(stack, "client", {"get": "value"}, {"set": "value", "value": 7})
    assert_ok(stack, get, 42)
    assert_security_error(put, "writing property 'value' of object 'thing' is not allowed")
    w.settle()
    [line] = w.refusals()
    assert_line(line, reason="not_allowed", rule="billing", object="thing", method="__setattr__",
                property="set", names=["value"], action="exception_reply")
    assert w.resolved() == [("thing", "attribute_get", "value")]
    [conn] = w.frames()
    assert len(invokes(conn)) == 1
    # The value did not change: read it back as the ops rule, which may.
    [again] = ops(stack, "admin", {"get": "value"})
    assert_ok(stack, again, 42)


def test_readers_may_call_get_methods_of_inventory_and_nothing_that_writes(policy_stack):
    stack = policy_stack(POLICY)
    w = Since(stack)
    out = ops(stack, "reader",
              {"object": "inventory", "call": "get_count"},
              {"object": "inventory", "call": "get_item", "args": ["apple"]},
              {"object": "inventory", "call": "list_items"},
              {"object": "inventory", "get": "owner"},
              {"object": "inventory", "call": "add_item", "args": ["plum", 9]},
              {"object": "inventory", "call": "drop_all"},
              {"object": "inventory", "get": "label"},
              {"object": "inventory", "call": "get_count"})
    assert_ok(stack, out[0], 2)
    assert_ok(stack, out[1], 3)
    assert_ok(stack, out[2], ["apple", "pear"])
    assert_ok(stack, out[3], "stores-team")
    assert_security_error(out[4], "method 'add_item' of object 'inventory' is not allowed for client rule 'readers'")
    assert_security_error(out[5], "method 'drop_all' of object 'inventory' is not allowed")
    assert_security_error(out[6], "reading property 'label' of object 'inventory' is not allowed")
    assert_ok(stack, out[7], 2)  # nothing was added or dropped
    w.settle()
    lines = w.refusals()
    assert [(l["reason"], l["rule"], l["names"]) for l in lines] == [
        ("not_allowed", "readers", ["add_item"]), ("not_allowed", "readers", ["drop_all"]),
        ("not_allowed", "readers", ["label"])]
    assert lines[2]["property"] == "get"
    names = [n for _o, _k, n in w.resolved()]
    assert names == ["get_count", "get_item", "list_items", "owner", "get_count"]
    [conn] = w.frames()
    assert len(invokes(conn)) == 5


def test_a_rule_matches_only_when_every_match_key_matches(policy_stack):
    # ou ops alone is not enough for "ops-other" (o: Other): the admin falls through to "ops".
    ops_other = {"name": "ops-other", "match": {"ou": "ops", "o": "Other"},
                 "allow": [{"object": "thing", "methods": ["pid"]}]}
    stack = policy_stack([ops_other, OPS])
    w = Since(stack)
    count, pid = ops(stack, "admin", {"call": "count"}, {"call": "pid"})
    assert_ok(stack, count)
    assert_ok(stack, pid)
    w.settle()
    [opened] = w.logs(event="conn_open")
    assert opened["rule"] == "ops"
    assert w.refusals() == []


def test_client_whose_certificate_matches_no_rule_gets_connectfail_and_the_daemon_no_connection(policy_stack):
    stack = policy_stack(POLICY)
    serial = cert_field(stack.certs, "stranger", "serial").lstrip("0")
    [r] = ops(stack, "stranger", {"call": "echo", "args": ["hello?"]})
    assert_connectfail(r, "pyroguard: no client rule matches the certificate of CN=stranger",
                       "URI=spiffe://other.org/ns/x/stranger", "serial %s" % serial)
    stack.pg.settle()
    [opened] = stack.pg.logs(event="conn_open")
    assert opened.get("rule_matched") is False and "rule" not in opened, opened
    [line] = stack.refusals()
    assert_line(line, reason="no_matching_rule", verdict="refused", msg_type="CONNECT",
                action="connectfail", uri=["spiffe://other.org/ns/x/stranger"], serial=serial)
    assert "rule" not in line
    assert "CN=stranger" in line["subject"]
    assert line["detail"] in r["exc_msg"]
    stack.backend.assert_received_nothing()
    assert stack.backend.resolved_names() == []


def test_object_outside_the_rule_is_refused_at_connect_before_the_daemon_is_dialled(policy_stack):
    # The reader's rule names only `inventory`: a proxy for `thing` asks for thing's metadata on
    # CONNECT (PROTOCOL.md §8 row 3), which is refused as a CONNECTFAIL.
    stack = policy_stack(POLICY)
    [r] = ops(stack, "reader", {"call": "echo", "args": ["x"]})
    assert_connectfail(r, "object 'thing' is not allowed for client rule 'readers'")
    stack.pg.settle()
    [line] = stack.refusals()
    assert_line(line, reason="object_not_allowed", rule="readers", msg_type="CONNECT",
                object="thing", action="connectfail")
    stack.backend.assert_received_nothing()


# --- deny -------------------------------------------------------------------------------------------


def test_deny_entry_wins_over_an_allow_entry_that_covers_the_same_method(policy_stack):
    stack = policy_stack(POLICY)  # ops: allow inventory methods "*", deny drop_all and add_*
    w = Since(stack)
    out = ops(stack, "admin",
              {"object": "inventory", "call": "drop_all"},
              {"object": "inventory", "call": "add_item", "args": ["plum", 1]},
              {"object": "inventory", "call": "get_count"})
    assert_security_error(out[0], "method 'drop_all' of object 'inventory' is denied for client rule 'ops'")
    assert_security_error(out[1], "method 'add_item' of object 'inventory' is denied")
    assert_ok(stack, out[2], 2)
    w.settle()
    lines = w.refusals()
    assert [(l["reason"], l["rule"], l["entry"], l["names"]) for l in lines] == [
        ("denied_by_rule", "ops", "clients[2].deny[0]", ["drop_all"]),
        ("denied_by_rule", "ops", "clients[2].deny[0]", ["add_item"])]
    assert w.resolved() == [("inventory", "method", "get_count")]


def test_name_less_deny_entry_refuses_the_connect_metadata_of_the_object(policy_stack):
    rule = {"name": "all-but-inventory", "match": {"o": "Example"},
            "allow": [{"object": "**", "methods": ["*"], "get": ["*"]}],
            "deny": [{"object": "inventory"}]}
    stack = policy_stack([rule])
    w = Since(stack)
    inv, echo = ops(stack, "client", {"object": "inventory", "call": "get_count"},
                    {"call": "echo", "args": ["thing is fine"]})
    assert_connectfail(inv, "object 'inventory' is denied for client rule 'all-but-inventory'")
    assert_ok(stack, echo, "thing is fine")
    w.settle()
    [line] = w.refusals()
    assert_line(line, reason="denied_by_rule", rule="all-but-inventory", entry="clients[0].deny[0]",
                msg_type="CONNECT", object="inventory", action="connectfail")
    # Only the connection for `thing` reached the daemon.
    [conn] = w.frames()
    assert [f["type"] for f in conn] == [MSG_CONNECT, MSG_INVOKE]
    assert b"inventory" not in conn[0]["payload"]
    assert w.resolved() == [("thing", "method", "echo")]


def test_name_less_deny_entry_refuses_every_call_when_the_client_skips_metadata(policy_stack):
    # METADATA=False: the CONNECT names no object, so the refusal comes at the INVOKE.
    rule = {"name": "all-but-inventory", "match": {"o": "Example"},
            "allow": [{"object": "**", "methods": ["*"]}],
            "deny": [{"object": "inventory"}]}
    stack = policy_stack([rule])
    w = Since(stack)
    [inv] = ops(stack, "client", {"object": "inventory", "call": "get_count"}, no_metadata=True)
    assert_security_error(inv, "method 'get_count' of object 'inventory' is denied")
    w.settle()
    [line] = w.refusals()
    assert_line(line, reason="denied_by_rule", entry="clients[0].deny[0]", object="inventory",
                names=["get_count"], msg_type="INVOKE", action="exception_reply")
    [conn] = w.frames()
    assert [f["type"] for f in conn] == [MSG_CONNECT]
    assert w.resolved() == []


# --- batches and properties -------------------------------------------------------------------------


# Not marshal: the Pyro4 4.82 marshal client cannot send batches (tests/vectors/pyro4/README.md).
@pytest.mark.parametrize("serializer", ["serpent", "json", "msgpack"])
def test_batch_with_one_method_outside_the_rule_is_refused_whole(policy_stack, serializer):
    stack = policy_stack(POLICY)
    w = Since(stack)
    [batch] = ops(stack, "client", {"batch": [["echo", [1]], ["count", []], ["echo", [3]]]},
                  serializer=serializer)
    assert_security_error(batch, "batch method 'count' of object 'thing' is not allowed")
    w.settle()
    [line] = w.refusals()
    assert_line(line, reason="not_allowed", rule="billing", object="thing", method="<batch>",
                names=["echo", "count", "echo"], action="exception_reply", serializer=serializer)
    # Not even the allowed first echo ran: the daemon received the CONNECT only.
    assert w.resolved() == []
    [conn] = w.frames()
    assert [f["type"] for f in conn] == [MSG_CONNECT]


def test_batch_of_allowed_methods_runs(policy_stack):
    stack = policy_stack(POLICY)
    w = Since(stack)
    [batch] = ops(stack, "client", {"batch": [["echo", [1]], ["echo", ["two"]]]})
    assert_ok(stack, batch, [1, "two"])
    w.settle()
    assert w.refusals() == []
    assert w.resolved() == [("thing", "method", "echo")] * 2


def test_property_get_and_set_lists_are_separate(policy_stack):
    rule = {"name": "labeller", "match": {"cn": "billing-client"},
            "allow": [{"object": "inventory", "methods": ["get_count"], "get": ["owner"], "set": ["label"]}]}
    auditor = {"name": "auditor", "match": {"cn": "ops-admin"},
               "allow": [{"object": "inventory", "get": ["label"]}]}
    stack = policy_stack([rule, auditor])
    w = Since(stack)
    out = ops(stack, "client",
              {"object": "inventory", "get": "owner"},
              {"object": "inventory", "set": "label", "value": "relabelled"},
              {"object": "inventory", "get": "label"},
              {"object": "inventory", "set": "owner", "value": "me"},
              {"object": "inventory", "call": "get_count"})
    assert_ok(stack, out[0], "stores-team")
    assert_ok(stack, out[1])
    assert_security_error(out[2], "reading property 'label' of object 'inventory' is not allowed")
    assert_security_error(out[3], "writing property 'owner' of object 'inventory' is not allowed")
    assert_ok(stack, out[4], 2)
    w.settle()
    lines = w.refusals()
    assert [(l["reason"], l["property"], l["names"], l["method"]) for l in lines] == [
        ("not_allowed", "get", ["label"], "__getattr__"), ("not_allowed", "set", ["owner"], "__setattr__")]
    assert w.resolved() == [("inventory", "attribute_get", "owner"), ("inventory", "attribute_set", "label"),
                            ("inventory", "method", "get_count")]
    # The write went through: the auditor rule may read the label.
    [label] = ops(stack, "admin", {"object": "inventory", "get": "label"})
    assert_ok(stack, label, "relabelled")


def test_a_methods_pattern_does_not_open_properties(policy_stack):
    rule = {"name": "methods-only", "match": {"cn": "billing-client"},
            "allow": [{"object": "thing", "methods": ["*"]}]}
    stack = policy_stack([rule])
    w = Since(stack)
    get, echo = ops(stack, "client", {"get": "value"}, {"call": "echo", "args": ["m"]})
    assert_security_error(get, "reading property 'value' of object 'thing' is not allowed")
    assert_ok(stack, echo, "m")
    w.settle()
    [line] = w.refusals()
    assert_line(line, reason="not_allowed", property="get", names=["value"])
    assert w.resolved() == [("thing", "method", "echo")]


# --- Pyro.Daemon ------------------------------------------------------------------------------------


def test_daemon_ping_is_allowed_with_any_rule_but_registered_and_info_are_not(policy_stack):
    # "**" covers Pyro.Daemon, but registered() and info() need an entry naming it literally.
    rule = {"name": "wide", "match": {"cn": "billing-client"},
            "allow": [{"object": "**", "methods": ["*"]}]}
    stack = policy_stack([rule])
    w = Since(stack)
    ping, reg, info = ops(stack, "client",
                          {"object": "Pyro.Daemon", "call": "ping"},
                          {"object": "Pyro.Daemon", "call": "registered"},
                          {"object": "Pyro.Daemon", "call": "info"})
    assert_ok(stack, ping)
    # The message says why "**" was not enough.
    assert_security_error(reg, "method 'registered' of object 'Pyro.Daemon'", "client rule 'wide'",
                          '"Pyro.Daemon" literally')
    assert_security_error(info, "method 'info' of object 'Pyro.Daemon'", '"Pyro.Daemon" literally')
    w.settle()
    lines = w.refusals()
    assert [(l["reason"], l["object"], l["names"]) for l in lines] == [
        ("not_allowed", "Pyro.Daemon", ["registered"]), ("not_allowed", "Pyro.Daemon", ["info"])]
    assert all("entry" not in l for l in lines), lines
    assert w.resolved() == [("Pyro.Daemon", "method", "ping")]


def test_daemon_ping_is_allowed_by_the_built_in_rule_even_for_a_narrow_rule(policy_stack):
    stack = policy_stack(POLICY, log={"level": "info", "calls": "all"})
    w = Since(stack)
    [ping] = ops(stack, "client", {"object": "Pyro.Daemon", "call": "ping"})
    assert_ok(stack, ping)
    w.settle()
    [line] = w.logs(event="allowed", msg_type="INVOKE")
    assert_line(line, object="Pyro.Daemon", names=["ping"], entry="built-in Pyro.Daemon rule", rule="billing")


def test_daemon_registered_is_allowed_by_an_entry_naming_Pyro_Daemon_literally(policy_stack):
    stack = policy_stack(POLICY)  # ops: {object: Pyro.Daemon, methods: [registered]}
    w = Since(stack)
    reg, info = ops(stack, "admin", {"object": "Pyro.Daemon", "call": "registered"},
                    {"object": "Pyro.Daemon", "call": "info"})
    assert_ok(stack, reg)
    assert sorted(reg["result"]) == ["Pyro.Daemon", "inventory", "thing"]
    assert_security_error(info, "method 'info' of object 'Pyro.Daemon' is not allowed for client rule 'ops'")
    w.settle()
    [line] = w.refusals()
    assert_line(line, reason="not_allowed", rule="ops", names=["info"])
    assert w.resolved() == [("Pyro.Daemon", "method", "registered")]


def test_get_metadata_of_an_object_the_client_may_not_use_is_refused(policy_stack):
    stack = policy_stack(POLICY)
    w = Since(stack)
    mine, theirs = ops(stack, "client",
                       {"object": "Pyro.Daemon", "call": "get_metadata", "args": ["thing"]},
                       {"object": "Pyro.Daemon", "call": "get_metadata", "args": ["inventory"]})
    assert_ok(stack, mine)
    assert "echo" in mine["result"]["methods"]
    assert_security_error(theirs, "'inventory' is not allowed for client rule 'billing'")
    w.settle()
    [line] = w.refusals()
    assert_line(line, reason="object_not_allowed", rule="billing", object="Pyro.Daemon",
                names=["get_metadata"], action="exception_reply")
    # The arguments are not logged; the daemon looked up get_metadata once, for `thing`.
    assert "inventory" in line["detail"]
    assert w.resolved() == [("Pyro.Daemon", "method", "get_metadata")]
    [conn] = w.frames()
    assert len(invokes(conn)) == 1
    assert b"inventory" not in conn[1]["payload"]


def test_get_metadata_of_a_denied_object_is_refused(policy_stack):
    rule = {"name": "all-but-inventory", "match": {"o": "Example"},
            "allow": [{"object": "**", "methods": ["*"]}],
            "deny": [{"object": "inventory"}]}
    stack = policy_stack([rule])
    w = Since(stack)
    [r] = ops(stack, "client", {"object": "Pyro.Daemon", "call": "get_metadata", "args": ["inventory"]})
    assert_security_error(r, "'inventory' is denied for client rule 'all-but-inventory'")
    w.settle()
    [line] = w.refusals()
    assert_line(line, reason="denied_by_rule", entry="clients[0].deny[0]", names=["get_metadata"])
    assert w.resolved() == []


# --- match keys -------------------------------------------------------------------------------------


def _match_cases():
    # (id, cert, near-miss match, matching match); the near miss comes first and must not match.
    return [
        ("cn", "client", {"cn": "billing-*-x"}, {"cn": "billing-*"}),
        ("o_and_ou", "reader", {"ou": "readers", "o": "Other"}, {"ou": "readers", "o": "Example"}),
        ("uri_double_star", "client", {"uri": "spiffe://example.org/ns/*"},
         {"uri": "spiffe://example.org/**"}),
        ("dns_list_any_value", "client", {"dns": ["reader.example", "*.other"]},
         {"dns": ["nope.example", "CLIENT.*"]}),
        ("ip_cidr", "admin", {"ip": "10.2.0.0/16"}, {"ip": "10.1.0.0/16"}),
        ("email_glob", "admin", {"email": "*@other.org"}, {"email": "*@example.org"}),
        ("serial", "reader", "serial:client", "serial:reader"),
        ("sha256", "registrar", "sha256:admin", "sha256:registrar"),
        ("empty_match_matches_everyone", "stranger", {"cn": "nobody"}, {}),
    ]


def _resolve_match(spec, certs):
    if isinstance(spec, str):
        what, name = spec.split(":")
        v = cert_field(certs, name, what)
        if what == "serial":
            v = v.lower()  # compared after normalisation: case and leading zeros
        return {what: Quoted(v)}
    return spec


@pytest.mark.parametrize("case", _match_cases(), ids=[c[0] for c in _match_cases()])
def test_match_key_selects_the_rule(policy_stack, certs, case):
    _id, cert, miss, hit = case
    allow = [{"object": "thing", "methods": ["echo"]}]
    rules = [{"name": "near-miss", "match": _resolve_match(miss, certs), "allow": [{"object": "thing", "methods": ["pid"]}]},
             {"name": "hit", "match": _resolve_match(hit, certs), "allow": allow}]
    stack = policy_stack(rules)
    w = Since(stack)
    echo, pid = ops(stack, cert, {"call": "echo", "args": [_id]}, {"call": "pid"})
    assert_ok(stack, echo, _id)
    assert_security_error(pid, "client rule 'hit'")
    w.settle()
    [opened] = w.logs(event="conn_open")
    assert opened["rule"] == "hit", opened
    [line] = w.refusals()
    assert_line(line, rule="hit", reason="not_allowed", names=["pid"])
    assert w.resolved() == [("thing", "method", "echo")]


def test_serial_rule_does_not_match_another_certificate(policy_stack, certs):
    rule = {"name": "reader-by-serial", "match": {"serial": Quoted(cert_field(certs, "reader", "serial"))},
            "allow": [{"object": "thing", "methods": ["echo"]}]}
    stack = policy_stack([rule])
    [r] = ops(stack, "client", {"call": "echo", "args": ["x"]})
    assert_connectfail(r, "no client rule matches the certificate of CN=billing-client")
    stack.pg.settle()
    [line] = stack.refusals()
    assert_line(line, reason="no_matching_rule", action="connectfail")
    stack.backend.assert_received_nothing()


def test_first_matching_rule_wins_even_when_a_later_one_would_allow_more(policy_stack):
    narrow = {"name": "narrow", "match": {"cn": "billing-client"},
              "allow": [{"object": "thing", "methods": ["echo"]}]}
    broad = {"name": "broad", "match": {"o": "Example"},
             "allow": [{"object": "thing", "methods": ["*"]}]}
    stack = policy_stack([narrow, broad])
    w = Since(stack)
    echo, count = ops(stack, "client", {"call": "echo", "args": ["n"]}, {"call": "count"})
    assert_ok(stack, echo, "n")
    assert_security_error(count, "method 'count' of object 'thing' is not allowed for client rule 'narrow'")
    [count_reader] = ops(stack, "reader", {"call": "count"})  # only "broad" matches the reader
    assert_ok(stack, count_reader)
    w.settle()
    [line] = w.refusals()
    assert_line(line, rule="narrow", reason="not_allowed", names=["count"])
    assert [l["rule"] for l in w.logs(event="conn_open")] == ["narrow", "broad"]
    assert w.resolved() == [("thing", "method", "echo"), ("thing", "method", "count")]


def test_empty_clients_list_refuses_every_client(policy_stack):
    stack = policy_stack([])
    [r] = ops(stack, "admin", {"call": "echo", "args": ["x"]})
    assert_connectfail(r, "no client rule matches the certificate of CN=ops-admin")
    stack.pg.settle()
    [line] = stack.refusals()
    assert_line(line, reason="no_matching_rule")
    stack.backend.assert_received_nothing()


def test_name_rules_still_come_before_a_policy_that_allows_everything(policy_stack):
    # methods: ["*"] never opens a private or dotted name (DESIGN.md: names before the policy).
    rule = {"name": "wide", "match": {}, "allow": [{"object": "**", "methods": ["**"]}]}
    stack = policy_stack([rule])
    w = Since(stack)
    [r] = ops(stack, "client", {"invoke": "sub.echo", "args": ["x"]})
    assert_security_error(r, "sub.echo")
    w.settle()
    [line] = w.refusals()
    assert_line(line, reason="dotted_name", rule="wide")
    assert w.resolved() == []


# --- oneway and streaming ---------------------------------------------------------------------------


def test_refused_oneway_call_is_dropped_and_never_runs(policy_stack):
    # Pyro never answers a ONEWAY call, so the refusal is only logged (README "INVOKE and PING").
    stack = policy_stack(POLICY)
    w = Since(stack)
    fire, echo = ops(stack, "client", {"call": "fire", "args": ["billing-fire"]},
                     {"call": "echo", "args": ["in sync"]})
    assert_ok(stack, fire, None)
    assert_ok(stack, echo, "in sync")  # the connection did not lose its place
    w.settle()
    [line] = w.refusals()
    assert_line(line, reason="not_allowed", rule="billing", names=["fire"], action="dropped_oneway")
    assert stack.backend.fired() == []
    assert w.resolved() == [("thing", "method", "echo")]


def test_streamed_result_works_through_the_built_in_Pyro_Daemon_stream_methods(policy_stack):
    # The rule names thing.gen only; get_next_stream_item on Pyro.Daemon comes with it (§6.2).
    rule = {"name": "streamer", "match": {"cn": "billing-client"},
            "allow": [{"object": "thing", "methods": ["gen"]}]}
    stack = policy_stack([rule])
    w = Since(stack)
    [gen] = ops(stack, "client", {"call": "gen", "args": [3]})
    assert_ok(stack, gen, [0, 1, 2])
    w.settle()
    assert w.refusals() == []
    assert w.resolved() == [("thing", "method", "gen")] + [("Pyro.Daemon", "method", "get_next_stream_item")] * 4


# --- where else the daemon takes an object id or a name from (PROTOCOL.md §8) --------------------------


def test_batch_of_get_metadata_calls_is_refused_when_one_names_a_forbidden_object(policy_stack):
    stack = policy_stack(POLICY)
    w = Since(stack)
    [batch] = ops(stack, "client", {"object": "Pyro.Daemon",
                                    "batch": [["get_metadata", ["thing"]], ["get_metadata", ["inventory"]]]})
    assert_security_error(batch, "'inventory' is not allowed for client rule 'billing'")
    w.settle()
    [line] = w.refusals()
    assert_line(line, reason="object_not_allowed", object="Pyro.Daemon", names=["get_metadata", "get_metadata"])
    assert w.resolved() == []


def _raw_call(stack, cert, invoke):
    """CONNECT as a real serpent client does, then one raw INVOKE; returns the decoded reply."""
    with stack.tls_socket(cert=cert) as s:
        s.sendall(read_vector("serpent/echo/00_c2s_CONNECT.bin"))
        [ok] = recv_frames(s, 1)
        assert ok["type"] == MSG_CONNECTOK, ok
        s.sendall(pyro4_frame(MSG_INVOKE, seq=1, **invoke))
        [reply] = recv_frames(s, 1)
    assert (reply["type"], reply["seq"]) == (MSG_RESULT, 1)
    return reply, Pyro4.util.get_serializer_by_id(1).deserializeData(reply["payload"])


@pytest.mark.parametrize("blbi_object,blbi_method,reason", [
    ("inventory", "drop_all", "object_not_allowed"),
    ("thing", "count", "not_allowed"),
])
def test_serialized_blob_call_is_judged_by_the_object_and_method_in_BLBI(policy_stack, blbi_object, blbi_method,
                                                                        reason):
    # KEEPSERIALIZED: the daemon takes object and method from the marshal BLBI annotation and
    # ignores the payload's (PROTOCOL.md §2.8, §6 step 3); an honest-looking payload must not
    # decide the verdict.
    blbi = marshal.dumps(("blobinfo", blbi_object, blbi_method))
    invoke = {"payload": b"# serpent utf-8 python3.2\n('thing','echo',('x',),{})", "serializer_id": 1,
              "flags": 0x40, "annotations": b"BLBI" + struct.pack("!H", len(blbi)) + blbi}
    stack = policy_stack(POLICY)
    w = Since(stack)
    reply, exc = _raw_call(stack, "client", invoke)
    assert reply["flags"] & 0x01
    assert type(exc).__name__ == "SecurityError" and str(exc).startswith("pyroguard: "), repr(exc)
    assert blbi_method in str(exc) or blbi_object in str(exc), repr(exc)
    w.settle()
    [line] = w.refusals()
    assert_line(line, rule="billing", reason=reason, object=blbi_object, action="exception_reply")
    assert w.resolved() == []
    [conn] = w.frames()
    assert [f["type"] for f in conn] == [MSG_CONNECT]


def test_serialized_blob_call_allowed_by_BLBI_reaches_the_daemon(policy_stack):
    rule = {"name": "blobber", "match": {"cn": "billing-client"},
            "allow": [{"object": "thing", "methods": ["blob"]}]}
    stack = policy_stack([rule])
    w = Since(stack)
    r = stack.client("blob")
    assert r["ok"], r
    assert r["result"] == ["blobinfo", {"k": [1, 2, 3]}]
    w.settle()
    assert w.refusals() == []
    assert w.resolved() == [("thing", "method", "blob")]


def test_ping_message_passes_for_a_client_with_a_narrow_rule(policy_stack):
    # A PING names nothing (PROTOCOL.md §6 step 1): no rule entry is needed for it.
    stack = policy_stack(POLICY)
    r = stack.client("ping")
    assert r["ok"] and r["result"] == "after-ping", r
    stack.pg.settle()
    assert stack.refusals() == []


# --- identities that cannot be read faithfully, and resumed sessions ----------------------------------


def mint_client(certs, outdir, name, subject, san=None):
    """A client certificate signed by the test CA, in `outdir` beside a copy of ca.crt."""
    outdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(certs / "ca.crt", outdir / "ca.crt")
    key, csr, ext, crt = (outdir / ("%s.%s" % (name, e)) for e in ("key", "csr", "ext", "crt"))
    run = lambda *a: subprocess.run(["openssl"] + [str(x) for x in a], check=True, capture_output=True)
    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    run("req", "-new", "-key", key, "-subj", subject, "-out", csr)
    lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
             "extendedKeyUsage=clientAuth"]
    if san:
        lines.append("subjectAltName=" + san)
    ext.write_text("\n".join(lines) + "\n")
    run("x509", "-req", "-in", csr, "-CA", certs / "ca.crt", "-CAkey", certs / "ca.key",
        "-set_serial", "0x5eed%04x" % (len(name) * 31), "-days", "30", "-extfile", ext, "-out", crt)
    return outdir


@pytest.mark.parametrize("name,subject,san,why", [
    ("many-sans", "/O=Example/CN=many-sans", ",".join("DNS:h%d.example" % i for i in range(70)),
     "more than 64"),
    ("control-cn", "/O=Example/CN=evil\x07name", None, "control character"),
])
def test_certificate_whose_identity_cannot_be_read_faithfully_is_refused_at_connect(
        policy_stack, certs, tmp_path, name, subject, san, why):
    # Even `match: {}` does not take it: a policy judged on part of an identity could let a
    # broader rule match (identity.h).
    mine = mint_client(certs, tmp_path / "mycerts", name, subject, san)
    stack = policy_stack([{"name": "everyone", "match": {}, "allow": [{"object": "thing", "methods": ["echo"]}]}])
    r = run_client("echo", stack.port, mine, cert=name)
    assert not r["ok"], r
    assert r["exc_type"] == "Pyro4.errors.CommunicationError", r
    assert "pyroguard: the client certificate cannot be used" in r["exc_msg"] and why in r["exc_msg"], r
    stack.pg.settle()
    [line] = stack.refusals()
    assert_line(line, reason="identity_invalid", msg_type="CONNECT", action="connectfail")
    assert "rule" not in line
    [opened] = stack.pg.logs(event="conn_open")
    assert why in opened.get("identity_error", ""), opened
    stack.backend.assert_received_nothing()


@pytest.mark.parametrize("tls_max", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_resumed_tls_session_keeps_the_client_identity_and_rule(policy_stack, tls_max):
    # A resumed session carries no certificate message; the identity must come from the session.
    stack = policy_stack(POLICY)
    ctx = tls_context(stack.certs, cert="reader", max_version=tls_max)
    session = None
    for attempt in range(2):
        raw = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(read_vector("serpent/echo/00_c2s_CONNECT.bin"))  # CONNECT for `thing`
            [reply] = recv_frames(s, 1)
            assert reply["type"] == MSG_CONNECTFAIL, reply
            assert b"object 'thing' is not allowed for client rule 'readers'" in reply["payload"]
            assert s.session_reused == (attempt == 1)
            session = s.session
    stack.pg.settle()
    opened = stack.pg.logs(event="conn_open")
    assert [(l["resumed"], l.get("rule")) for l in opened] == [(False, "readers"), (True, "readers")]
    assert [(l["reason"], l["rule"]) for l in stack.refusals()] == [("object_not_allowed", "readers")] * 2
    stack.backend.assert_received_nothing()


@pytest.mark.parametrize("daemon_methods", [["*"], ["get_metadata"], ["registered", "get_metadata"]])
def test_get_metadata_of_a_denied_object_stays_refused_when_Pyro_Daemon_is_allowed_literally(
        policy_stack, daemon_methods):
    # An entry naming Pyro.Daemon literally opens registered()/info(); it must not turn
    # get_metadata into a way around a name-less deny (PROTOCOL.md §8 row 8: the object id comes
    # from the argument) or around "only for allowed objects".
    rule = {"name": "daemon-admin", "match": {"cn": "billing-client"},
            "allow": [{"object": "thing", "methods": ["echo"]},
                      {"object": "Pyro.Daemon", "methods": daemon_methods}],
            "deny": [{"object": "inventory"}]}
    stack = policy_stack([rule])
    w = Since(stack)
    mine, denied, unnamed = ops(stack, "client",
                                {"object": "Pyro.Daemon", "call": "get_metadata", "args": ["thing"]},
                                {"object": "Pyro.Daemon", "call": "get_metadata", "args": ["inventory"]},
                                {"object": "Pyro.Daemon", "call": "get_metadata", "args": ["Pyro.NameServer"]})
    assert_ok(stack, mine)
    assert_security_error(denied, "'inventory' is denied for client rule 'daemon-admin'")
    assert_security_error(unnamed, "'Pyro.NameServer' is not allowed for client rule 'daemon-admin'")
    w.settle()
    lines = w.refusals()
    assert [(l["reason"], l.get("entry"), l["names"]) for l in lines] == [
        ("denied_by_rule", "clients[0].deny[0]", ["get_metadata"]),
        ("object_not_allowed", None, ["get_metadata"])]
    assert w.resolved() == [("Pyro.Daemon", "method", "get_metadata")]


def test_over_long_method_name_is_refused_name_too_long(policy_stack):
    # Patterns are matched against at most 1024 bytes (pattern.h); a longer name never reaches
    # the matcher, whatever the rule allows.
    rule = {"name": "wide", "match": {}, "allow": [{"object": "**", "methods": ["**"]}]}
    stack = policy_stack([rule])
    w = Since(stack)
    long_name = "a" * 2000
    [r] = ops(stack, "client", {"invoke": long_name, "args": []})
    assert_security_error(r, "longer than 1024 bytes")
    w.settle()
    [line] = w.refusals()
    assert_line(line, reason="name_too_long", rule="wide", action="exception_reply")
    assert len(json.dumps(line)) < 4096, "the log line carries the whole name: %d bytes" % len(json.dumps(line))
    assert w.resolved() == []


def test_over_long_object_id_is_refused_at_connect(policy_stack):
    rule = {"name": "wide", "match": {}, "allow": [{"object": "**", "methods": ["**"]}]}
    stack = policy_stack([rule])
    [r] = ops(stack, "client", {"object": "o" * 2000, "call": "echo", "args": ["x"]})
    assert_connectfail(r, "object id longer than 1024 bytes")
    stack.pg.settle()
    [line] = stack.refusals()
    assert_line(line, reason="name_too_long", msg_type="CONNECT", action="connectfail")
    stack.backend.assert_received_nothing()
