"""A real Pyro4 4.82 name server (Debian's Pyro4.naming, PROTOCOL.md §6.4) behind pyroguard, with
the policy of config/examples/name-server.yaml: every client may lookup/list/count/ping on
Pyro.NameServer, only the registrars (OU ops and URI spiffe://example.org/ns/ops/registrar) may
register, remove and set_metadata.

The name server runs in its own /usr/bin/python3 process, plaintext on 127.0.0.1, with its NAT
address set to pyroguard (so the URI it registers for itself points at the sidecar, §12), and with
the byte capture and names log of legacy_server.py installed in that process — the same
instrumentation the legacy daemon has, so the tests can show that a refused register() never
reached the name server. Clients are real Pyro4 proxies with SSL on
(`PYRO:Pyro.NameServer@localhost:PORT`: broadcast discovery cannot cross pyroguard). What the name
server really holds is read directly over plaintext, bypassing pyroguard.
"""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import (HERE, MSG_CONNECT, MSG_INVOKE, PYTHON, REPO, START_TIMEOUT, Pyroguard, parse_pyro4_frames,
                      run_client, stop_process, wait_until, free_port)

EXAMPLE = REPO / "config" / "examples" / "name-server.yaml"
NS = "Pyro.NameServer"

# The name server with legacy_server.py's instrumentation (capture + names log), nothing else
# changed: Pyro4's default SERIALIZERS_ACCEPTED for the name server (serpent, marshal, json).
NS_RUNNER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import Pyro4
accepted = set(Pyro4.config.SERIALIZERS_ACCEPTED)
import legacy_server
Pyro4.config.SERIALIZERS_ACCEPTED = accepted
import Pyro4.naming
legacy_server.install_capture(sys.argv[2])
legacy_server.install_names_log(sys.argv[3])
Pyro4.naming.startNSloop(host="127.0.0.1", port=int(sys.argv[4]), enableBroadcast=False,
                         nathost="localhost", natport=int(sys.argv[5]))
"""


class NameServer(object):
    def __init__(self, workdir, natport):
        self.dir = Path(workdir)
        self.port = free_port()
        self.natport = natport
        self.capture_dir = self.dir / "capture"
        self.names_log = self.dir / "names.log"
        self.out = self.dir / "ns.out"
        self.proc = None

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self._out = open(self.out, "wb")
        self.proc = subprocess.Popen(
            [PYTHON, "-u", "-c", NS_RUNNER, str(HERE), str(self.capture_dir), str(self.names_log),
             str(self.port), str(self.natport)],
            stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def running():
            if self.proc.poll() is not None:
                raise AssertionError("name server exited: %s" % self.out.read_text())
            # Watching its output, not probing the port: a probe would count as a connection.
            return "NS running on" in self.out.read_text()

        wait_until(running, START_TIMEOUT, what="the name server to start")
        return self

    def stop(self):
        if self.proc:
            stop_process(self.proc)
            self._out.close()

    def connections(self):
        return [p.read_bytes() for p in sorted(self.capture_dir.glob("conn-*.bin"))]

    def frames(self):
        return [parse_pyro4_frames(c) for c in self.connections()]

    def resolved_names(self):
        if not self.names_log.exists():
            return []
        return [(d["object"], d["kind"], d["name"])
                for d in map(json.loads, self.names_log.read_text().splitlines())]


def example_clients():
    """The `clients` of the shipped name-server example, so that this test runs its policy."""
    return yaml.safe_load(EXAMPLE.read_text())["clients"]


class NsStack(object):
    def __init__(self, workdir, certs, log_calls="denied"):
        self.certs = Path(certs)
        self.pg = Pyroguard(Path(workdir) / "pyroguard", certs, backend_port=0,
                            overrides={"clients": example_clients(),
                                       "log": {"level": "info", "calls": log_calls}},
                            listener="nameserver")
        self.ns = NameServer(Path(workdir) / "ns", natport=self.pg.port)
        self.pg.backend_port = self.ns.port
        self.pg.config["listeners"][0]["backend"] = "127.0.0.1:%d" % self.ns.port
        self.pg.dir.mkdir(parents=True, exist_ok=True)

    def start(self):
        self.ns.start()
        self.pg.start()
        return self

    def stop(self):
        self.pg.stop()
        self.ns.stop()

    def ops(self, cert, *operations):
        """Operations on Pyro.NameServer through pyroguard, with `cert`."""
        ops_ = [dict({"object": NS}, **op) for op in operations]
        r = run_client("ops", self.pg.port, self.certs, cert=cert, extra=["--ops", json.dumps(ops_)])
        assert r["ok"], "the ops scenario failed: %r\n%s" % (r, self.pg.stderr_text())
        return r["result"]

    def direct(self, *operations):
        """The same, straight to the name server over plaintext (what it really holds)."""
        ops_ = [dict({"object": NS}, **op) for op in operations]
        r = run_client("ops", self.ns.port, self.certs, plain=True, extra=["--ops", json.dumps(ops_)])
        assert r["ok"], r
        return r["result"]

    def registry(self):
        [listing] = self.direct({"call": "list"})
        assert listing["ok"], listing
        return listing["result"]


@pytest.fixture
def ns_stack(tmp_path, certs):
    stacks = []

    def make(**kw):
        s = NsStack(tmp_path / ("ns%d" % len(stacks)), certs, **kw)
        stacks.append(s)
        return s.start()

    yield make
    for s in stacks:
        s.stop()
    for s in stacks:
        report = s.pg.sanitizer_report()
        assert not report, "pyroguard printed a sanitizer report:\n%s" % report
        assert s.pg.returncode == 0, "pyroguard exited with %s at teardown" % s.pg.returncode


SEED = ("example.billing", "PYRO:billing@localhost:9443")


def seeded(stack):
    [r] = stack.direct({"call": "register", "args": list(SEED)})
    assert r["ok"], r
    return stack


def ok(outcome, expected=None):
    assert outcome["ok"], outcome
    if expected is not None:
        assert outcome["result"] == expected, outcome
    return outcome["result"]


def security_error(outcome, *fragments):
    assert not outcome["ok"], "the call went through: %r" % outcome
    assert outcome["exc_type"] == "Pyro4.errors.SecurityError", outcome
    for frag in fragments:
        assert frag in outcome["exc_msg"], (frag, outcome)


# --- tests -------------------------------------------------------------------------------------------


def test_example_policy_is_the_one_these_tests_expect():
    rules = example_clients()
    assert [r["name"] for r in rules] == ["registrars", "everyone"]
    assert rules[0]["match"] == {"ou": "ops", "uri": "spiffe://example.org/ns/ops/registrar"}
    assert rules[1]["match"] == {}


def test_reader_can_lookup_list_count_and_ping_through_pyroguard(ns_stack):
    stack = seeded(ns_stack())
    lookup, listing, count, ping, self_uri = stack.ops(
        "reader",
        {"call": "lookup", "args": [SEED[0]]},
        {"call": "list"},
        {"call": "count"},
        {"call": "ping"},
        {"call": "lookup", "args": [NS]})
    ok(lookup, SEED[1])
    assert ok(listing)[SEED[0]] == SEED[1]
    ok(count, 2)
    ok(ping)
    # The name server's own URI points at pyroguard (--natport), not at its loopback port.
    ok(self_uri, "PYRO:Pyro.NameServer@localhost:%d" % stack.pg.port)
    stack.pg.settle()
    assert stack.pg.logs(event="refused") == []
    [opened] = stack.pg.logs(event="conn_open")
    assert opened["rule"] == "everyone"


def test_reader_cannot_register_remove_or_set_metadata_and_the_registry_is_unchanged(ns_stack):
    stack = seeded(ns_stack())
    before = stack.registry()
    n_conns = len(stack.ns.connections())
    names_before = len(stack.ns.resolved_names())
    register, remove, set_meta, lookup = stack.ops(
        "reader",
        {"call": "register", "args": [SEED[0], "PYRO:billing@attacker.example:1"]},
        {"call": "remove", "args": [SEED[0]]},
        {"call": "set_metadata", "args": [SEED[0], ["hijacked"]]},
        {"call": "lookup", "args": [SEED[0]]})
    security_error(register, "method 'register' of object 'Pyro.NameServer' is not allowed for client rule 'everyone'")
    security_error(remove, "method 'remove'")
    security_error(set_meta, "method 'set_metadata'")
    ok(lookup, SEED[1])  # the lookup, on the same connection, still sees the real service
    stack.pg.settle()
    refused = stack.pg.logs(event="refused")
    assert [(l["reason"], l["rule"], l["object"], l["names"], l["action"]) for l in refused] == [
        ("not_allowed", "everyone", NS, ["register"], "exception_reply"),
        ("not_allowed", "everyone", NS, ["remove"], "exception_reply"),
        ("not_allowed", "everyone", NS, ["set_metadata"], "exception_reply"),
    ]
    assert all("CN=inventory-reader" in l["subject"] for l in refused)
    # The name server never looked any of them up, and never received the attacker's URI.
    assert [n for _o, _k, n in stack.ns.resolved_names()[names_before:]] == ["lookup"]
    [conn] = stack.ns.frames()[n_conns:]
    assert [f["type"] for f in conn] == [MSG_CONNECT, MSG_INVOKE]
    assert all(b"attacker" not in f["payload"] and b"hijacked" not in f["payload"] for f in conn)
    assert stack.registry() == before


def test_registrar_can_register_look_up_and_remove(ns_stack):
    stack = ns_stack(log_calls="all")
    name, uri = "example.inventory", "PYRO:inventory@localhost:9443"
    register, lookup, set_meta, remove, gone = stack.ops(
        "registrar",
        {"call": "register", "args": [name, uri]},
        {"call": "lookup", "args": [name]},
        {"call": "set_metadata", "args": [name, ["stores"]]},
        {"call": "remove", "args": [name]},
        {"call": "lookup", "args": [name]})
    ok(register)
    ok(lookup, uri)
    ok(set_meta)
    ok(remove, 1)
    assert not gone["ok"] and gone["exc_type"] == "Pyro4.errors.NamingError", gone
    stack.pg.settle()
    assert stack.pg.logs(event="refused") == []
    invokes = [l for l in stack.pg.logs(event="allowed") if l["msg_type"] == "INVOKE"]
    assert [(l["rule"], l["names"], l["entry"]) for l in invokes] == [
        ("registrars", [m], "clients[0].allow[0]")
        for m in ("register", "lookup", "set_metadata", "remove", "lookup")]
    assert name not in stack.registry()


def test_registration_by_the_registrar_is_seen_by_a_reader(ns_stack):
    stack = ns_stack()
    [reg] = stack.ops("registrar", {"call": "register", "args": ["example.shared", "PYRO:shared@localhost:9443"]})
    ok(reg)
    [lookup] = stack.ops("reader", {"call": "lookup", "args": ["example.shared"]})
    ok(lookup, "PYRO:shared@localhost:9443")
    assert stack.registry()["example.shared"] == "PYRO:shared@localhost:9443"


def test_ops_member_with_another_uri_is_only_everyone(ns_stack):
    # admin is OU ops too, but its SPIFFE ID is .../ops/admin: both match keys must hold.
    stack = ns_stack()
    before = stack.registry()
    register, count = stack.ops("admin", {"call": "register", "args": ["x.y", "PYRO:x@localhost:1"]},
                                {"call": "count"})
    security_error(register, "client rule 'everyone'")
    ok(count, 1)
    stack.pg.settle()
    [line] = stack.pg.logs(event="refused")
    assert (line["rule"], line["reason"], line["names"]) == ("everyone", "not_allowed", ["register"])
    assert "register" not in [n for _o, _k, n in stack.ns.resolved_names()]
    assert stack.registry() == before


def test_name_server_daemon_object_gives_ping_but_not_registered(ns_stack):
    stack = ns_stack()
    ping, registered = stack.ops("reader",
                                 {"object": "Pyro.Daemon", "call": "ping"},
                                 {"object": "Pyro.Daemon", "call": "registered"})
    ok(ping)
    security_error(registered, "method 'registered' of object 'Pyro.Daemon'")
    stack.pg.settle()
    [line] = stack.pg.logs(event="refused")
    assert (line["reason"], line["object"], line["names"]) == ("not_allowed", "Pyro.Daemon", ["registered"])
    assert [n for _o, _k, n in stack.ns.resolved_names()] == ["ping"]
