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

The test_end_to_end_* tests add the rest of a deployment (issue 10 item 3): a service daemon behind
a second pyroguard, with NATHOST/NATPORT pointing at it, that registers itself through the name
server's pyroguard with the registrar certificate, and a client that resolves PYRONAME: through
pyroguard with TLS and calls the service through the service's pyroguard.
"""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import (CLIENT_TIMEOUT, HERE, MSG_CONNECT, MSG_INVOKE, PYTHON, REPO, START_TIMEOUT, Pyroguard,
                      Quoted, parse_pyro4_frames, run_client, stop_process, wait_until, free_port)

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
        s.pg.assert_clean_exit()


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


# --- end to end: name server, service and client, each behind or through pyroguard -----------------
#
# Topology (two pyroguard processes, as in a real deployment where the name server and each service
# are separate pods/hosts with their own sidecar, their own certificate and their own policy; one
# process with two listeners would also share one `clients:` list between both, and the name
# server's registrar rule has no business on the service):
#
#   client (PYRO_SSL=1 ...)                      service daemon process
#     | PYRONAME:example.thing@localhost:NSPG      | ns.register() with the registrar certificate,
#     v   (TLS, lookup)                            v   TLS, through NSPG like any other client
#   pyroguard "nameserver" (NSPG, the example's policy) --plaintext--> Pyro4 name server
#                                                                      (127.0.0.1, --natport NSPG)
#     | PYRO:thing@localhost:SVCPG (what the name server returned: the service's NAT address)
#     v   (TLS, echo / caller)
#   pyroguard "service" (SVCPG, its own policy) --plaintext--> Pyro4 daemon (127.0.0.1,
#                                                              nathost localhost, natport SVCPG)

SERVICE_NAME = "example.thing"

# The service: the legacy daemon's Thing (legacy_server.py) plus `caller()`, which reports, while the
# call is in progress, the peer of the connection the call arrived on and which processes hold the
# other end of that TCP connection (/proc/net/tcp + /proc/PID/fd). The daemon is created with SSL
# off (plaintext on loopback behind its pyroguard, NATHOST/NATPORT = that pyroguard); only then does
# the process turn Pyro's client-side SSL on, with the registrar certificate, and register the URI
# in the name server through the name server's pyroguard. Pyro4 reads config.SSL for a server
# socket only when the Daemon is created (socketserver/threadpoolserver.py init) and for a proxy at
# each connect (core.py __pyroCreateConnection), so the daemon stays plaintext and the registration
# is mutual TLS. The byte capture is installed after the registration, so it holds only the
# connections the daemon accepted.
SERVICE_RUNNER = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import Pyro4
import legacy_server

(capture_dir, ready, port, natport, ns_port, name,
 ca, cert, key) = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), \
    sys.argv[7], sys.argv[8], sys.argv[9], sys.argv[10]


def socket_owners(local_port, remote_port):
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if (int(f[1].rsplit(":", 1)[1], 16) == local_port
                    and int(f[2].rsplit(":", 1)[1], 16) == remote_port and f[9] != "0"):
                inodes.add("socket:[%s]" % f[9])
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%s/fd/%s" % (pid, fd)) in inodes:
                    pids.add(int(pid))
            except OSError:
                pass
    return sorted(pids)


@Pyro4.expose
class Service(legacy_server.Thing):
    def caller(self):
        host, peer_port = Pyro4.current_context.client_sock_addr[:2]
        return {"peer": "%s:%d" % (host, peer_port), "pids": socket_owners(peer_port, port)}


daemon = Pyro4.Daemon(host="127.0.0.1", port=port, nathost="localhost", natport=natport)
uri = daemon.register(Service(None), "thing")

Pyro4.config.SSL = True
Pyro4.config.SSL_CACERTS = ca
Pyro4.config.SSL_CLIENTCERT = cert
Pyro4.config.SSL_CLIENTKEY = key
with Pyro4.locateNS(host="localhost", port=ns_port) as ns:
    ns.register(name, uri)

legacy_server.install_capture(capture_dir)
with open(ready + ".tmp", "w") as f:
    json.dump({"uri": str(uri), "internal": str(daemon.uriFor("thing", nat=False)),
               "pid": os.getpid()}, f)
os.replace(ready + ".tmp", ready)
print("READY", uri, flush=True)
daemon.requestLoop()
"""

# A Pyro4 client configured only through the environment (PYRO_SSL, PYRO_SSL_CACERTS,
# PYRO_SSL_CLIENTCERT, PYRO_SSL_CLIENTKEY: PROTOCOL.md §11), no SSL code.
#   call URI TOKEN            bind a proxy to URI (PYRONAME: resolved through the name server),
#                             then echo(TOKEN) and caller()
#   register HOST PORT NAME URI   ns.register(NAME, URI) on the name server at HOST:PORT
CLIENT_RUNNER = r"""
import json, os, sys
import Pyro4
import Pyro4.errors

out = {"pid": os.getpid()}
try:
    if sys.argv[1] == "call":
        with Pyro4.Proxy(sys.argv[2]) as p:
            p._pyroTimeout = 20
            p._pyroBind()
            out["uri"] = str(p._pyroUri)
            out["echo"] = p.echo(sys.argv[3])
            out["caller"] = p.caller()
    elif sys.argv[1] == "register":
        with Pyro4.locateNS(host=sys.argv[2], port=int(sys.argv[3])) as ns:
            out["register"] = ns.register(sys.argv[4], sys.argv[5])
    out["ok"] = True
except Exception as e:
    out.update(ok=False, exc_type="%s.%s" % (type(e).__module__, type(e).__name__), exc_msg=str(e))
print(json.dumps(out))
"""


def example_config():
    return yaml.safe_load(EXAMPLE.read_text())


class Service(object):
    """SERVICE_RUNNER in its own /usr/bin/python3 process."""

    def __init__(self, workdir, natport, ns_port, certs, cert="registrar"):
        self.dir = Path(workdir)
        self.port = free_port()
        self.natport, self.ns_port = natport, ns_port
        self.certs, self.cert = Path(certs), cert
        self.capture_dir = self.dir / "capture"
        self.ready_file = self.dir / "service.ready"
        self.out = self.dir / "service.out"
        self.proc = None

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self._out = open(self.out, "wb")
        c = self.certs
        self.proc = subprocess.Popen(
            [PYTHON, "-u", "-c", SERVICE_RUNNER, str(HERE), str(self.capture_dir), str(self.ready_file),
             str(self.port), str(self.natport), str(self.ns_port), SERVICE_NAME, str(c / "ca.crt"),
             str(c / ("%s.crt" % self.cert)), str(c / ("%s.key" % self.cert))],
            stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("the service exited: %s" % self.out.read_text())
            return self.ready_file.exists()

        wait_until(ready, START_TIMEOUT, what="the service to register and start")
        self.info = json.loads(self.ready_file.read_text())
        return self

    def stop(self):
        if self.proc:
            stop_process(self.proc)
            self._out.close()

    def frames(self):
        return [parse_pyro4_frames(p.read_bytes()) for p in sorted(self.capture_dir.glob("conn-*.bin"))]

    def peers(self):
        return [p.read_text().strip() for p in sorted(self.capture_dir.glob("conn-*.peer"))]


def run_pyro(certs, cert, *args):
    """CLIENT_RUNNER with SSL on, the CA and (unless cert is None) a client certificate."""
    certs = Path(certs)
    env = {"PATH": "/usr/bin:/bin", "PYRO_SSL": "1", "PYRO_SSL_CACERTS": str(certs / "ca.crt")}
    if cert:
        env.update(PYRO_SSL_CLIENTCERT=str(certs / ("%s.crt" % cert)),
                   PYRO_SSL_CLIENTKEY=str(certs / ("%s.key" % cert)))
    p = subprocess.run([PYTHON, "-c", CLIENT_RUNNER] + [str(a) for a in args], env=env,
                       capture_output=True, timeout=CLIENT_TIMEOUT, stdin=subprocess.DEVNULL)
    lines = p.stdout.decode(errors="replace").strip().splitlines()
    assert lines, "the client printed nothing (rc %s):\n%s" % (
        p.returncode, p.stderr.decode(errors="replace"))
    return json.loads(lines[-1])


class EndToEnd(object):
    """The name server behind pyroguard "nameserver" (the example's policy: clients, pyro, TLS
    minimum), the service daemon behind pyroguard "service" (its own policy), both started as a
    deployment would: name server, its pyroguard, the service's pyroguard, the service (which
    registers itself through the first pyroguard as it starts)."""

    def __init__(self, workdir, certs):
        workdir, self.certs = Path(workdir), Path(certs)
        ex = example_config()
        self.ns_pg = Pyroguard(workdir / "ns-pyroguard", certs, backend_port=0, listener="nameserver",
                               overrides={"clients": ex["clients"], "pyro": ex["pyro"],
                                          "tls": {"min_version": Quoted(ex["tls"]["min_version"])},
                                          "log": {"level": "info", "calls": "all"}})
        self.ns = NameServer(workdir / "ns", natport=self.ns_pg.port)
        self.ns_pg.config["listeners"][0]["backend"] = "127.0.0.1:%d" % self.ns.port
        self.svc_pg = Pyroguard(workdir / "svc-pyroguard", certs, backend_port=0, listener="service",
                                overrides={
                                    "clients": [{
                                        "name": "billing",
                                        "match": {"uri": "spiffe://example.org/ns/billing/client"},
                                        "allow": [{"object": "thing", "methods": ["echo", "caller"]}],
                                    }],
                                    "pyro": {"serializers": ["serpent"]},
                                    "log": {"level": "info", "calls": "all"}})
        self.svc = Service(workdir / "service", natport=self.svc_pg.port, ns_port=self.ns_pg.port,
                           certs=certs)
        self.svc_pg.config["listeners"][0]["backend"] = "127.0.0.1:%d" % self.svc.port
        for pg in (self.ns_pg, self.svc_pg):
            pg.dir.mkdir(parents=True, exist_ok=True)
        self.pgs = (self.ns_pg, self.svc_pg)

    def start(self):
        self.ns.start()
        self.ns_pg.start()
        self.svc_pg.start()
        self.svc.start()
        return self

    def stop(self):
        for p in (self.svc_pg, self.ns_pg, self.svc, self.ns):
            p.stop()

    @property
    def pyroname(self):
        return "PYRONAME:%s@localhost:%d" % (SERVICE_NAME, self.ns_pg.port)

    def registry(self):
        r = run_client("ops", self.ns.port, self.certs, plain=True,
                       extra=["--ops", json.dumps([{"object": NS, "call": "list"}])])
        assert r["ok"] and r["result"][0]["ok"], r
        return r["result"][0]["result"]


@pytest.fixture
def e2e(tmp_path, certs):
    s = EndToEnd(tmp_path / "e2e", certs)
    try:
        s.start()
        yield s
    finally:
        s.stop()
    for pg in s.pgs:
        pg.assert_clean_exit()


def test_end_to_end_pyroname_resolved_and_called_through_pyroguard(e2e):
    """Issue 10 item 3, end to end with real processes: a Pyro4 name server behind its own
    pyroguard (the name-server example's policy), a Pyro4 service daemon with NATHOST/NATPORT = its
    own pyroguard that registers itself through the name server's pyroguard with the registrar
    certificate, and a Pyro4 client with SSL settings only in its environment that resolves
    PYRONAME:example.thing@localhost:<name server's pyroguard> and calls the service.

    Two pyroguard processes, not one with two listeners: that is how it is deployed (the name
    server and each service in their own pod or host, each with its own sidecar, certificate and
    lifecycle, as deploy/kubernetes/name-server/ next to base/), and pyroguard's `clients:` list is
    per process, so one process would apply the name server's registrar rule to the service too.
    """
    # The service registered itself at start-up through the name server's pyroguard, with the
    # registrar certificate: allowed by the example's `registrars` rule, and the URI it stored is
    # the service's NAT address, i.e. the service's pyroguard.
    svc_uri = "PYRO:thing@localhost:%d" % e2e.svc_pg.port
    assert e2e.svc.info["uri"] == svc_uri
    e2e.ns_pg.settle()
    [reg] = [l for l in e2e.ns_pg.logs(event="allowed") if l["msg_type"] == "INVOKE"]
    assert (reg["rule"], reg["names"], reg["object"]) == ("registrars", ["register"], NS)
    assert reg["uri"] == ["spiffe://example.org/ns/ops/registrar"]

    r = run_pyro(e2e.certs, "client", "call", e2e.pyroname, "through-both")
    assert r["ok"], (r, e2e.ns_pg.stderr_text(), e2e.svc_pg.stderr_text())
    # What the client resolved points at the service's pyroguard, and the call's answer is right.
    assert r["uri"] == svc_uri
    assert r["echo"] == "through-both"
    # The call reached the daemon on a connection whose other end is held by the service's
    # pyroguard process (not the client, not the name server's pyroguard).
    assert r["caller"]["pids"] == [e2e.svc_pg.proc.pid], (r["caller"], e2e.svc_pg.proc.pid, r["pid"])

    # The name server's pyroguard saw the client's lookup under the example's `everyone` rule...
    e2e.ns_pg.settle()
    e2e.svc_pg.settle()
    invokes = [l for l in e2e.ns_pg.logs(event="allowed") if l["msg_type"] == "INVOKE"]
    assert [(l["rule"], l["names"]) for l in invokes] == [("registrars", ["register"]),
                                                          ("everyone", ["lookup"])]
    assert e2e.ns_pg.logs(event="refused") == []
    assert [n for _o, _k, n in e2e.ns.resolved_names()] == ["register", "lookup"]
    # ...and the service's pyroguard the two calls, from the client's certificate.
    calls = [l for l in e2e.svc_pg.logs(event="allowed") if l["msg_type"] == "INVOKE"]
    assert [(l["rule"], l["object"], l["names"]) for l in calls] == [
        ("billing", "thing", ["echo"]), ("billing", "thing", ["caller"])]
    assert all("CN=billing-client" in l["subject"] for l in calls)
    assert e2e.svc_pg.logs(event="refused") == []
    # The daemon's capture: one connection, from the peer caller() reported, carrying the
    # plaintext frames pyroguard decrypted (the client itself only ever spoke TLS).
    [conn] = e2e.svc.frames()
    assert e2e.svc.peers() == [r["caller"]["peer"]]
    assert [f["type"] for f in conn] == [MSG_CONNECT, MSG_INVOKE, MSG_INVOKE]
    assert b"through-both" in conn[1]["payload"]


def test_end_to_end_registered_uri_is_the_nat_address_not_the_daemon(e2e):
    # What the name server really holds (read over plaintext, bypassing pyroguard): the service's
    # pyroguard, never the daemon's own loopback port.
    registry = e2e.registry()
    stored = registry[SERVICE_NAME]
    assert stored == "PYRO:thing@localhost:%d" % e2e.svc_pg.port
    assert stored != e2e.svc.info["internal"]
    assert e2e.svc.info["internal"] == "PYRO:thing@127.0.0.1:%d" % e2e.svc.port
    assert registry[NS] == "PYRO:Pyro.NameServer@localhost:%d" % e2e.ns_pg.port

    # For contrast, what a service WITHOUT NATHOST would register (uriFor(nat=False)), stored by
    # the registrar: a client resolving it goes around the service's pyroguard, straight to the
    # daemon (reachable here only because the test runs on one host; in a deployment loopback is
    # not reachable from clients at all). With SSL on it sends a TLS ClientHello the plaintext
    # daemon cannot read, so no call arrives; the service's pyroguard never sees the client.
    direct = "example.direct"
    r = run_pyro(e2e.certs, "registrar", "register", "localhost", e2e.ns_pg.port, direct,
                 e2e.svc.info["internal"])
    assert r["ok"], r
    r = run_pyro(e2e.certs, "client", "call",
                 "PYRONAME:%s@localhost:%d" % (direct, e2e.ns_pg.port), "should-not-arrive")
    assert not r["ok"], r
    assert r["exc_type"] == "Pyro4.errors.CommunicationError", r
    assert "127.0.0.1', %d" % e2e.svc.port in r["exc_msg"] and "wrong version number" in r["exc_msg"], r
    [hello] = e2e.svc.frames()
    assert hello[0]["partial"][:1] == b"\x16", hello  # a TLS handshake record, not PYRO
    e2e.svc_pg.settle()
    assert e2e.svc_pg.logs(event="conn_open") == []


def test_end_to_end_reader_cannot_hijack_the_name_and_the_client_still_reaches_the_service(e2e):
    attacker = "PYRO:thing@localhost:1"
    r = run_pyro(e2e.certs, "reader", "register", "localhost", e2e.ns_pg.port, SERVICE_NAME, attacker)
    assert not r["ok"], r
    assert r["exc_type"] == "Pyro4.errors.SecurityError", r
    assert "method 'register' of object 'Pyro.NameServer' is not allowed for client rule 'everyone'" \
        in r["exc_msg"], r
    e2e.ns_pg.settle()
    [refused] = e2e.ns_pg.logs(event="refused")
    assert (refused["reason"], refused["rule"], refused["names"]) == ("not_allowed", "everyone", ["register"])
    assert "CN=inventory-reader" in refused["subject"]
    # The name server never resolved the reader's register (only the service's own, at start),
    # never received the attacker's URI, and still holds the service's pyroguard.
    assert [n for _o, _k, n in e2e.ns.resolved_names()] == ["register"]
    assert all(b"localhost:1'" not in f["payload"] for conn in e2e.ns.frames() for f in conn)
    assert e2e.registry()[SERVICE_NAME] == "PYRO:thing@localhost:%d" % e2e.svc_pg.port

    r = run_pyro(e2e.certs, "client", "call", e2e.pyroname, "still-here")
    assert r["ok"], r
    assert (r["uri"], r["echo"]) == ("PYRO:thing@localhost:%d" % e2e.svc_pg.port, "still-here")


def test_end_to_end_client_without_certificate_is_refused_at_the_name_server_listener(e2e):
    n_ns_conns = len(e2e.ns.connections())
    r = run_pyro(e2e.certs, None, "call", e2e.pyroname, "no-cert")
    assert not r["ok"], r
    # Pyro4's PYRONAME resolution reports a name server it could not reach as NamingError.
    assert (r["exc_type"], r["exc_msg"]) == ("Pyro4.errors.NamingError", "Failed to locate the nameserver"), r
    [fail] = e2e.ns_pg.wait_log(event="tls_fail")
    assert fail["reason"] == "no_client_certificate", fail
    # The only connection the name server's pyroguard opened is the service's registration.
    assert [l["rule"] for l in e2e.ns_pg.logs(event="conn_open")] == ["registrars"]
    # Neither the name server nor the service was reached.
    assert len(e2e.ns.connections()) == n_ns_conns
    assert e2e.svc.frames() == []
    assert e2e.svc_pg.logs(event="conn_open") == []
