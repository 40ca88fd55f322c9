"""The shipped configurations: config/pyroguard.yaml and every file in config/examples/.

Each is copied, unchanged, into a temporary directory beside a tls/ directory holding freshly
minted certificates (tests/certs/mint.sh), so its relative paths (tls/server.crt, ...) resolve as
they would for a user. Then:
  * `pyroguard check -c FILE` must exit 0;
  * `pyroguard explain -c FILE --cert CERT ...` must give the verdict the example's comments
    promise, for a few (certificate, object, request) triples per example, with the deciding
    rule, reason and entry; for a client-mode listener, `explain --listener NAME ...` (its
    egress rule, no certificate);
  * the name-server example is run for real: Debian's Pyro4 name server behind pyroguard with
    that policy, real Pyro4 clients with the minted certificates.

The minted client certificates (tests/certs/mint.sh):
  client     CN=billing-client O=Example          URI spiffe://example.org/ns/billing/client
  reader     CN=inventory-reader OU=readers O=Example  URI spiffe://example.org/ns/inventory/reader
  registrar  CN=ns-registrar OU=ops O=Example     URI spiffe://example.org/ns/ops/registrar
  admin      CN=ops-admin OU=ops O=Example        URI spiffe://example.org/ns/ops/admin,
                                                  IP 10.1.2.3, email admin@example.org
  stranger   CN=stranger O=Other                  URI spiffe://other.org/ns/x/stranger
"""

import json
import shutil
import socket
import subprocess

import pytest

from conftest import (PYROGUARD_BIN, PYTHON, REPO, SANITIZER_REPORT, START_TIMEOUT, free_port,
                      stop_process, wait_until)

CONFIG_DIR = REPO / "config"
EXAMPLES = CONFIG_DIR / "examples"
TLS_FILES = ("server.crt", "server.key", "ca.crt", "ca.crl", "client.crt", "client.key")

ALLOWED, REFUSED = 0, 3  # explain's exit codes
DAEMON_BUILTIN = "built-in Pyro.Daemon rule"


def pyroguard(*args, cwd=None, timeout=20):
    if not PYROGUARD_BIN.exists():
        pytest.fail("pyroguard binary not found at %s (run `make`)" % PYROGUARD_BIN)
    p = subprocess.run([str(PYROGUARD_BIN)] + [str(a) for a in args], cwd=cwd,
                       capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if SANITIZER_REPORT.search(p.stderr):
        pytest.fail("pyroguard printed a sanitizer report:\n%s" % p.stderr, pytrace=False)
    return p


def install(tmp_path, certs, source, text=None):
    """Copy |source| (or |text| under its name) into tmp_path with tls/ beside it."""
    tls = tmp_path / "tls"
    tls.mkdir(exist_ok=True)
    for name in TLS_FILES:
        shutil.copy(certs / name, tls / name)
    dest = tmp_path / source.name
    if text is None:
        shutil.copy(source, dest)
    else:
        dest.write_text(text)
    return dest


def explain(config, certs, cert, obj=None, kind=None, name=None):
    """Runs `pyroguard explain --cert … --json`; returns (exit code, parsed JSON or None,
    process)."""
    return run_explain(config, ["--cert", certs / ("%s.crt" % cert)], obj, kind, name)


def run_explain(config, who, obj=None, kind=None, name=None):
    """`pyroguard explain` with |who| (["--cert", PATH] or ["--listener", NAME]) and --json."""
    args = ["explain", "-c", config.name] + list(who)
    if obj is not None:
        args += ["--object", obj]
    if kind is not None:
        args += ["--%s" % kind, name]
    p = pyroguard(*(args + ["--json"]), cwd=config.parent)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        doc = None
    return p.returncode, doc, p


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def uncomment_shipped_example(text):
    """config/pyroguard.yaml with its commented clients: example switched on."""
    out, in_block = [], False
    for line in text.split("\n"):
        if line == "clients: []":
            out.append("clients:")
            in_block = True
            continue
        if in_block and line.startswith("#  "):
            out.append(line[1:])
            continue
        in_block = False
        out.append(line)
    return "\n".join(out)


# (cert, object, kind, name) -> (exit code, rule, reason, deciding entry). kind is method, get or
# set (property read / write); None with an object alone is the CONNECT metadata lookup.
CASES = {
    "spiffe-mesh.yaml": [
        ("client", "billing", "method", "charge", ALLOWED, "billing", "allowed",
         "clients[0].allow[0]"),
        ("client", "billing.invoices", "get", "total", ALLOWED, "billing", "allowed",
         "clients[0].allow[0]"),
        ("client", "inventory", "method", "get_stock", ALLOWED, "billing", "allowed",
         "clients[0].allow[1]"),
        ("client", "inventory", "method", "add_stock", REFUSED, "billing", "not_allowed", None),
        ("client", "billing.ledger", "method", "drop_all", REFUSED, "billing", "denied_by_rule",
         "clients[0].deny[0]"),
        # A name-less deny entry closes the whole object, even to its own team.
        ("client", "billing.admin", "method", "charge", REFUSED, "billing", "denied_by_rule",
         "clients[0].deny[1]"),
        ("client", "billing.admin", None, None, REFUSED, "billing", "denied_by_rule",
         "clients[0].deny[1]"),
        # `*` is one segment: billing.eu.archive is not "billing.*".
        ("client", "billing.eu.archive", "method", "charge", REFUSED, "billing",
         "object_not_allowed", None),
        # `**` crosses segments.
        ("reader", "inventory.eu.warehouse", "set", "reorder_level", ALLOWED, "inventory",
         "allowed", "clients[1].allow[0]"),
        ("reader", "billing", "method", "charge", REFUSED, "inventory", "object_not_allowed",
         None),
        ("admin", "thing", "method", "health", ALLOWED, "ops", "allowed", "clients[2].allow[0]"),
        ("admin", "Pyro.Daemon", "method", "info", ALLOWED, "ops", "allowed",
         "clients[2].allow[1]"),
        ("client", "Pyro.Daemon", "method", "info", REFUSED, "billing", "not_allowed", None),
        ("client", "Pyro.Daemon", "method", "ping", ALLOWED, "billing", "allowed",
         DAEMON_BUILTIN),
        ("stranger", "billing", "method", "charge", REFUSED, None, "no_matching_rule", None),
    ],
    "read-only.yaml": [
        ("reader", "inventory", "method", "get_stock", ALLOWED, "readers", "allowed",
         "clients[0].allow[0]"),
        ("reader", "inventory", "method", "list_items", ALLOWED, "readers", "allowed",
         "clients[0].allow[0]"),
        ("reader", "inventory", "get", "reorder_level", ALLOWED, "readers", "allowed",
         "clients[0].allow[0]"),
        ("reader", "inventory", "set", "reorder_level", REFUSED, "readers", "denied_by_rule",
         "clients[0].deny[0]"),
        ("reader", "inventory", "method", "add_stock", REFUSED, "readers", "not_allowed", None),
        ("reader", "Pyro.Daemon", "method", "registered", REFUSED, "readers", "not_allowed",
         None),
        ("admin", "inventory", "method", "add_stock", ALLOWED, "ops", "allowed",
         "clients[1].allow[0]"),
        ("admin", "inventory", "set", "reorder_level", ALLOWED, "ops", "allowed",
         "clients[1].allow[0]"),
        ("admin", "inventory", "method", "drop_all", REFUSED, "ops", "denied_by_rule",
         "clients[1].deny[0]"),
        ("admin", "Pyro.Daemon", "method", "registered", ALLOWED, "ops", "allowed",
         "clients[1].allow[1]"),
        # OU ops but neither the IP nor the e-mail SAN: every given key must match.
        ("registrar", "inventory", "method", "list_items", REFUSED, None, "no_matching_rule",
         None),
        ("client", "inventory", "method", "list_items", REFUSED, None, "no_matching_rule", None),
    ],
    "name-server.yaml": [
        ("stranger", "Pyro.NameServer", "method", "lookup", ALLOWED, "everyone", "allowed",
         "clients[1].allow[0]"),
        ("client", "Pyro.NameServer", "method", "list", ALLOWED, "everyone", "allowed",
         "clients[1].allow[0]"),
        ("client", "Pyro.NameServer", None, None, ALLOWED, "everyone", "allowed",
         "clients[1].allow[0]"),
        ("client", "Pyro.NameServer", "method", "register", REFUSED, "everyone", "not_allowed",
         None),
        ("registrar", "Pyro.NameServer", "method", "register", ALLOWED, "registrars", "allowed",
         "clients[0].allow[0]"),
        ("registrar", "Pyro.NameServer", "method", "remove", ALLOWED, "registrars", "allowed",
         "clients[0].allow[0]"),
        # OU ops, but not the registrar's SPIFFE ID: only "everyone".
        ("admin", "Pyro.NameServer", "method", "register", REFUSED, "everyone", "not_allowed",
         None),
        ("reader", "Pyro.NameServer", "method", "set_metadata", REFUSED, "everyone",
         "not_allowed", None),
        ("reader", "Pyro.Daemon", "method", "ping", ALLOWED, "everyone", "allowed",
         DAEMON_BUILTIN),
        ("reader", "Pyro.Daemon", "method", "registered", REFUSED, "everyone", "not_allowed",
         None),
        ("reader", "Pyro.Flame", None, None, REFUSED, "everyone", "object_not_allowed", None),
    ],
}


# Client-mode listeners have no certificate to judge: their rule is their egress policy,
# "egress:<listener>", explained with `explain --listener NAME`.
# (listener, object, kind, name) -> (exit code, reason, deciding entry).
LISTENER_CASES = {
    "client-mode.yaml": [
        ("billing", "billing", "method", "charge", ALLOWED, "allowed", "egress:billing.allow[0]"),
        ("billing", "billing", "method", "refund", ALLOWED, "allowed", "egress:billing.allow[0]"),
        ("billing", "billing", "method", "get_balance", ALLOWED, "allowed",
         "egress:billing.allow[0]"),
        ("billing", "billing", None, None, ALLOWED, "allowed", "egress:billing.allow[0]"),
        # refund_all is on no allow list, and a deny entry says so again: the deny entry decides.
        ("billing", "billing", "method", "refund_all", REFUSED, "denied_by_rule",
         "egress:billing.deny[0]"),
        ("billing", "billing", "method", "delete_account", REFUSED, "not_allowed", None),
        ("billing", "billing", "get", "balance", REFUSED, "not_allowed", None),
        ("billing", "inventory", "method", "get_stock", REFUSED, "object_not_allowed", None),
        ("billing", "billing", "method", "_reset", REFUSED, "private_name", None),
        ("billing", "Pyro.Daemon", "method", "ping", ALLOWED, "allowed", DAEMON_BUILTIN),
        ("billing", "Pyro.Daemon", "method", "info", REFUSED, "not_allowed", None),
        # The Unix socket listener has its own, narrower egress rule.
        ("billing-unix", "billing", "method", "get_balance", ALLOWED, "allowed",
         "egress:billing-unix.allow[0]"),
        ("billing-unix", "billing", "method", "charge", REFUSED, "not_allowed", None),
    ],
}


def all_configs():
    return [CONFIG_DIR / "pyroguard.yaml"] + sorted(EXAMPLES.glob("*.yaml"))


def test_every_example_has_explain_cases():
    names = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    assert len(names) >= 3, names
    assert names == sorted(set(CASES) | set(LISTENER_CASES)), \
        "examples without test cases (or cases without an example)"
    assert all(CASES.get(n) or LISTENER_CASES.get(n) for n in names), "an example with no case"


@pytest.mark.parametrize("source", all_configs(), ids=lambda p: p.name)
def test_shipped_config_passes_check(tmp_path, certs, source):
    config = install(tmp_path, certs, source)
    p = pyroguard("check", "-c", config.name, cwd=tmp_path)
    assert (p.returncode, p.stderr) == (0, ""), p.stdout + p.stderr
    assert p.stdout.startswith("%s: configuration OK" % config.name), p.stdout


def _case_id(case):
    cert, obj, kind, name = case[:4]
    return "%s-%s-%s" % (cert, obj, "%s:%s" % (kind, name) if kind else "connect")


@pytest.mark.parametrize("example,case", [(e, c) for e in sorted(CASES) for c in CASES[e]],
                         ids=lambda v: v if isinstance(v, str) else _case_id(v))
def test_example_verdicts(tmp_path, certs, example, case):
    cert, obj, kind, name, rc, rule, reason, entry = case
    config = install(tmp_path, certs, EXAMPLES / example)
    got_rc, doc, p = explain(config, certs, cert, obj, kind, name)
    assert got_rc == rc, "exit %s, wanted %s:\n%s%s" % (got_rc, rc, p.stdout, p.stderr)
    assert doc is not None, "--json printed no JSON:\n" + p.stdout
    assert doc.get("verdict") == ("allowed" if rc == ALLOWED else "refused"), doc
    assert doc.get("reason") == reason, doc
    assert doc.get("rule") == rule, doc
    if entry is not None:
        assert doc.get("entry") == entry, doc
    else:
        assert not doc.get("entry"), doc


def explain_listener(config, listener, obj=None, kind=None, name=None):
    """Runs `pyroguard explain --listener … --json` (a client-mode listener's egress rule)."""
    return run_explain(config, ["--listener", listener], obj, kind, name)


def _listener_case_id(case):
    listener, obj, kind, name = case[:4]
    return "%s-%s-%s" % (listener, obj, "%s:%s" % (kind, name) if kind else "connect")


@pytest.mark.parametrize("example,case", [(e, c) for e in sorted(LISTENER_CASES)
                                          for c in LISTENER_CASES[e]],
                         ids=lambda v: v if isinstance(v, str) else _listener_case_id(v))
def test_example_client_mode_verdicts(tmp_path, certs, example, case):
    listener, obj, kind, name, rc, reason, entry = case
    config = install(tmp_path, certs, EXAMPLES / example)
    got_rc, doc, p = explain_listener(config, listener, obj, kind, name)
    assert got_rc == rc, "exit %s, wanted %s:\n%s%s" % (got_rc, rc, p.stdout, p.stderr)
    assert doc is not None, "--json printed no JSON:\n" + p.stdout
    assert (doc.get("listener"), doc.get("mode")) == (listener, "client"), doc
    assert doc.get("rule") == "egress:%s" % listener, doc
    assert doc.get("verdict") == ("allowed" if rc == ALLOWED else "refused"), doc
    assert doc.get("reason") == reason, doc
    if entry is not None:
        assert doc.get("entry") == entry, doc
    else:
        assert not doc.get("entry"), doc


def test_shipped_config_refuses_everyone(tmp_path, certs):
    config = install(tmp_path, certs, CONFIG_DIR / "pyroguard.yaml")
    for cert in ("client", "admin", "stranger"):
        rc, doc, p = explain(config, certs, cert, "inventory", "method", "list_items")
        assert rc == REFUSED, p.stdout + p.stderr
        assert doc.get("reason") == "no_matching_rule", doc


def test_shipped_config_commented_example_is_valid_and_does_what_it_says(tmp_path, certs):
    source = CONFIG_DIR / "pyroguard.yaml"
    text = uncomment_shipped_example(source.read_text())
    assert "clients: []" not in text and "  - name: billing" in text
    config = install(tmp_path, certs, source, text=text)
    p = pyroguard("check", "-c", config.name, cwd=tmp_path)
    assert (p.returncode, p.stderr) == (0, ""), p.stdout + p.stderr
    expected = [
        ("client", "inventory", "method", "list_items", ALLOWED, "billing"),
        ("client", "inventory", "method", "get_count", ALLOWED, "billing"),
        ("client", "inventory", "get", "count", ALLOWED, "billing"),
        ("client", "inventory", "set", "count", REFUSED, "billing"),
        ("client", "inventory", "method", "drop_all", REFUSED, "billing"),
        ("admin", "inventory", "method", "drop_all", ALLOWED, "ops"),
        ("admin", "Pyro.Daemon", "method", "info", ALLOWED, "ops"),
        ("registrar", "inventory", "method", "list_items", REFUSED, None),  # no IP SAN
    ]
    for cert, obj, kind, name, want, rule in expected:
        rc, doc, p = explain(config, certs, cert, obj, kind, name)
        assert (rc, doc.get("rule")) == (want, rule), (cert, obj, kind, name, p.stdout, p.stderr)


def test_explain_plain_output_names_rule_verdict_and_entry(tmp_path, certs):
    config = install(tmp_path, certs, EXAMPLES / "read-only.yaml")
    args = ["explain", "-c", config.name, "--cert", certs / "reader.crt", "--object",
            "inventory"]
    p = pyroguard(*(args + ["--set", "reorder_level"]), cwd=tmp_path)
    assert p.returncode == REFUSED, p.stdout + p.stderr
    for word in ("CN=inventory-reader", "spiffe://example.org/ns/inventory/reader", "readers",
                 "refused", "denied_by_rule", "clients[0].deny[0]"):
        assert word in p.stdout, (word, p.stdout)
    p = pyroguard(*(args + ["--method", "list_items"]), cwd=tmp_path)
    assert p.returncode == ALLOWED, p.stdout + p.stderr
    assert "allowed" in p.stdout and "clients[0].allow[0]" in p.stdout, p.stdout


# --- the name-server example, for real -------------------------------------------------------

NS_CLIENT = r"""
import json, sys
import Pyro4, Pyro4.errors
certs, cert, port, action = sys.argv[1:5]
Pyro4.config.SSL = True
Pyro4.config.SSL_CACERTS = certs + "/ca.crt"
Pyro4.config.SSL_CLIENTCERT = "%s/%s.crt" % (certs, cert)
Pyro4.config.SSL_CLIENTKEY = "%s/%s.key" % (certs, cert)
Pyro4.config.COMMTIMEOUT = 20.0
out = {}
def attempt(what, fn):
    try:
        out[what] = fn()
    except Exception as e:
        out[what] = "%s.%s: %s" % (type(e).__module__, type(e).__name__, e)
ns = [None]
def locate():
    ns[0] = Pyro4.locateNS(host="localhost", port=int(port))
    return "located"
attempt("locate", locate)
if ns[0] is not None:
    attempt("lookup", lambda: str(ns[0].lookup("Pyro.NameServer")))
    if action == "register":
        attempt("register", lambda: ns[0].register("example.svc", "PYRO:svc@localhost:1") or "ok")
    attempt("list", lambda: sorted(ns[0].list()))
print(json.dumps(out))
"""


def test_name_server_example_with_a_real_name_server(tmp_path, certs):
    pg_port, ns_port = free_port(), free_port()
    text = (EXAMPLES / "name-server.yaml").read_text()
    assert "listen: 0.0.0.0:9090" in text and "backend: 127.0.0.1:19090" in text
    text = text.replace("listen: 0.0.0.0:9090", "listen: 127.0.0.1:%d" % pg_port)
    text = text.replace("backend: 127.0.0.1:19090", "backend: 127.0.0.1:%d" % ns_port)
    config = install(tmp_path, certs, EXAMPLES / "name-server.yaml", text=text)

    # The name server as the example's comments start it (nathost: the sidecar's name).
    ns_log = open(tmp_path / "ns.log", "wb")
    ns = subprocess.Popen([PYTHON, "-m", "Pyro4.naming", "-n", "127.0.0.1", "-p", str(ns_port),
                           "--nathost", "localhost", "--natport", str(pg_port)],
                          stdout=ns_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    pg_err = open(tmp_path / "pyroguard.stderr", "wb")
    pg = None
    try:
        wait_until(lambda: port_open(ns_port) or ns.poll() is not None, START_TIMEOUT,
                   what="the name server")
        assert ns.poll() is None, (tmp_path / "ns.log").read_text()
        pg = subprocess.Popen([str(PYROGUARD_BIN), "run", "-c", config.name], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=pg_err, stdin=subprocess.DEVNULL)
        wait_until(lambda: b'"listening"' in (tmp_path / "pyroguard.stderr").read_bytes()
                   or pg.poll() is not None, START_TIMEOUT, what="pyroguard listening")
        assert pg.poll() is None, (tmp_path / "pyroguard.stderr").read_text()

        def client(cert, action):
            p = subprocess.run([PYTHON, "-c", NS_CLIENT, str(certs), cert, str(pg_port), action],
                               capture_output=True, text=True, timeout=60)
            assert p.stdout.strip(), p.stderr
            return json.loads(p.stdout.strip().splitlines()[-1])

        nat_uri = "PYRO:Pyro.NameServer@localhost:%d" % pg_port
        reg = client("registrar", "register")
        assert reg == {"locate": "located", "lookup": nat_uri, "register": "ok",
                       "list": ["Pyro.NameServer", "example.svc"]}, reg
        billing = client("client", "register")
        assert billing["lookup"] == nat_uri, billing
        assert billing["register"].startswith("Pyro4.errors.SecurityError: pyroguard: "), billing
        assert "'register'" in billing["register"] and "'everyone'" in billing["register"]
        assert billing["list"] == ["Pyro.NameServer", "example.svc"], billing
        # Any certificate from the CA may look names up, the stranger's too.
        stranger = client("stranger", "lookup")
        assert stranger == {"locate": "located", "lookup": nat_uri,
                            "list": ["Pyro.NameServer", "example.svc"]}, stranger

        logs = [json.loads(l) for l in (tmp_path / "pyroguard.stderr").read_text().splitlines()
                if l.startswith("{")]
        refused = [l for l in logs if l.get("event") == "refused"]
        assert len(refused) == 1, refused
        assert (refused[0]["rule"], refused[0]["reason"], refused[0]["object"],
                refused[0]["method"]) == ("everyone", "not_allowed", "Pyro.NameServer",
                                          "register"), refused[0]
    finally:
        if pg is not None:
            assert stop_process(pg) == 0, (tmp_path / "pyroguard.stderr").read_text()[-2000:]
        stop_process(ns)
        pg_err.close()
        ns_log.close()
    report = SANITIZER_REPORT.search((tmp_path / "pyroguard.stderr").read_text())
    assert report is None, (tmp_path / "pyroguard.stderr").read_text()
