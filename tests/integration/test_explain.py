"""`pyroguard explain` (test a policy offline) and the `pyroguard check` errors of bad `clients:` rules.

explain -c FILE --cert CLIENT.pem [--object OBJ] [--method NAME | --get NAME | --set NAME] [--json]
prints the identity read from the certificate, whether the TLS handshake would accept it
(tls.client_ca, tls.crl, the deny lists), the rule that matches, the request, the verdict, the
reason, the detail and the deciding entry. Exit 0 allowed, 3 refused, 2 usage or configuration
error. With --listener NAME instead of --cert, a client-mode listener is explained: no
certificate, its rule is its egress policy "egress:NAME", entries read "egress:NAME.allow[0]". Configs and certificates are real files (certificates minted by tests/certs/mint.sh), and
the last tests check that explain predicts what the running proxy does with a real Pyro4 client.
"""

import json
import re
import shutil
import subprocess

import pytest

from conftest import PYROGUARD_BIN, SANITIZER_REPORT, Quoted, Stack, to_yaml

ALLOWED, REFUSED, USAGE = 0, 3, 2

KEYS = ["listener", "mode", "upstream", "certificate", "subject", "issuer", "cn", "o", "ou", "dns", "uri", "ip", "email", "serial",
        "sha256", "handshake", "rule", "request", "verdict", "reason", "detail", "decided by"]
LINE = re.compile(r"^(%s) +(\S.*)$" % "|".join(re.escape(k) for k in sorted(KEYS, key=len, reverse=True)))

CONFIG = """\
listeners:
- name: app
  listen: 127.0.0.1:9443
  backend: 127.0.0.1:9090
tls:
  cert: tls/server.crt
  key: tls/server.key
  client_ca: tls/ca.crt
  crl: tls/ca.crl
clients:
- name: billing
  match:
    uri: spiffe://example.org/ns/billing/*
  allow:
  - object: thing
    methods: [echo, "get_*"]
    get: [value]
  - object: thing
    set: [label]
  deny:
  - object: thing
    methods: [get_secret]
  - object: vault
- name: ops
  match:
    ou: ops
    ip: 10.1.0.0/16
  allow:
  - object: "**"
    methods: ["*"]
  - object: Pyro.Daemon
    methods: [registered]
"""

CERTS = ("server.crt", "server.key", "ca.crt", "ca.crl", "client.crt", "client.key", "admin.crt",
         "reader.crt", "stranger.crt", "revoked-client.crt", "other-client.crt", "expired-client.crt")


@pytest.fixture
def confdir(tmp_path, certs):
    """tmp/pyroguard.yaml (CONFIG) with the certificates in tmp/tls; commands run in tmp."""
    tls = tmp_path / "tls"
    tls.mkdir()
    for name in CERTS:
        shutil.copy(certs / name, tls / name)
    (tmp_path / "pyroguard.yaml").write_text(CONFIG)
    return tmp_path


def pyroguard(*args, cwd=None, timeout=20):
    if not PYROGUARD_BIN.exists():
        pytest.fail("pyroguard binary not found at %s (run `make`)" % PYROGUARD_BIN)
    p = subprocess.run([str(PYROGUARD_BIN)] + [str(a) for a in args], cwd=cwd, capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if SANITIZER_REPORT.search(p.stderr):
        pytest.fail("pyroguard printed a sanitizer report:\n%s" % p.stderr, pytrace=False)
    return p


def explain(confdir, cert, *request, config="pyroguard.yaml"):
    return pyroguard("explain", "-c", config, "--cert", "tls/%s.crt" % cert, *request, cwd=confdir)


def parse(stdout):
    """Human output -> {key: [values]}; every line must be "key<spaces>value" with a known key."""
    out = {}
    for line in stdout.splitlines():
        m = LINE.match(line)
        assert m, "not a 'key  value' line: %r\n%s" % (line, stdout)
        out.setdefault(m.group(1), []).append(m.group(2))
    return out


def one(fields, key):
    [v] = fields[key]
    return v


def openssl(certs, name, *args):
    out = subprocess.run(["openssl", "x509", "-in", str(certs / ("%s.crt" % name)), "-noout"] + list(args),
                         capture_output=True, text=True, check=True).stdout.strip()
    return out.split("=", 1)[1]


def serial_of(certs, name):
    return openssl(certs, name, "-serial").lstrip("0")


def sha256_of(certs, name):
    return openssl(certs, name, "-fingerprint", "-sha256").replace(":", "")


def assert_explained(p, code):
    assert p.returncode == code, "exit %s (expected %s)\nstdout:\n%s\nstderr:\n%s" % (
        p.returncode, code, p.stdout, p.stderr)
    assert p.stderr == ""
    return parse(p.stdout)


# --- explain: allowed ---------------------------------------------------------------------------


def test_allowed_method_exits_0_and_prints_identity_rule_and_deciding_entry(confdir, certs):
    f = assert_explained(explain(confdir, "client", "--object", "thing", "--method", "echo"), ALLOWED)
    assert one(f, "certificate") == "tls/client.crt"
    assert one(f, "subject") == "CN=billing-client,O=Example"
    assert one(f, "issuer") == "CN=pyroguard dev CA,O=Example"
    assert one(f, "cn") == "billing-client"
    assert one(f, "o") == "Example"
    assert f["dns"] == ["client.example"]
    assert f["uri"] == ["spiffe://example.org/ns/billing/client"]
    assert "ou" not in f and "ip" not in f and "email" not in f
    assert one(f, "serial") == serial_of(certs, "client")
    assert one(f, "sha256") == sha256_of(certs, "client")
    assert one(f, "handshake").startswith("accepted")
    assert one(f, "rule").split()[0] == "billing"
    assert "clients[0]" in one(f, "rule")
    assert one(f, "request") == "method echo on object thing"
    assert one(f, "verdict") == "allowed"
    assert one(f, "reason") == "allowed"
    assert one(f, "decided by") == "clients[0].allow[0]"


def test_allowed_property_read_and_write_name_their_entries(confdir):
    f = assert_explained(explain(confdir, "client", "--object", "thing", "--get", "value"), ALLOWED)
    assert one(f, "decided by") == "clients[0].allow[0]"
    assert "value" in one(f, "request")
    f = assert_explained(explain(confdir, "client", "--object", "thing", "--set", "label"), ALLOWED)
    assert one(f, "decided by") == "clients[0].allow[1]"
    assert "label" in one(f, "request")


def test_identity_fields_of_a_certificate_with_ou_ip_and_email(confdir):
    f = assert_explained(explain(confdir, "admin", "--object", "inventory", "--method", "list_items"), ALLOWED)
    assert one(f, "ou") == "ops"
    assert f["ip"] == ["10.1.2.3"]
    assert f["email"] == ["admin@example.org"]
    assert one(f, "rule").split()[0] == "ops"
    assert one(f, "decided by") == "clients[1].allow[0]"


def test_connect_object_alone_is_judged_as_the_connect_metadata_lookup(confdir):
    f = assert_explained(explain(confdir, "client", "--object", "thing"), ALLOWED)
    assert "thing" in one(f, "request")
    assert one(f, "decided by") == "clients[0].allow[0]"


def test_pyro_daemon_ping_is_allowed_by_the_built_in_rule(confdir):
    f = assert_explained(explain(confdir, "client", "--object", "Pyro.Daemon", "--method", "ping"), ALLOWED)
    assert one(f, "decided by") == "built-in Pyro.Daemon rule"


def test_pyro_daemon_registered_needs_an_entry_naming_it_literally(confdir):
    f = assert_explained(explain(confdir, "client", "--object", "Pyro.Daemon", "--method", "registered"),
                         REFUSED)
    assert one(f, "reason") == "not_allowed"
    f = assert_explained(explain(confdir, "admin", "--object", "Pyro.Daemon", "--method", "registered"),
                         ALLOWED)
    assert one(f, "decided by") == "clients[1].allow[1]"


def test_get_metadata_is_judged_by_the_object_id_given_with_arg(confdir):
    # The one argument pyroguard ever judges: get_metadata's object id (PROTOCOL.md §8 row 8).
    f = assert_explained(explain(confdir, "client", "--object", "Pyro.Daemon", "--method", "get_metadata",
                                 "--arg", "thing"), ALLOWED)
    assert one(f, "request") == "method get_metadata('thing') on object Pyro.Daemon"
    assert one(f, "decided by") == "clients[0].allow[0]"
    f = assert_explained(explain(confdir, "client", "--object", "Pyro.Daemon", "--method", "get_metadata",
                                 "--arg", "vault"), REFUSED)
    assert (one(f, "reason"), one(f, "decided by")) == ("denied_by_rule", "clients[0].deny[1]")
    f = assert_explained(explain(confdir, "client", "--object", "Pyro.Daemon", "--method", "get_metadata"),
                         REFUSED)
    assert one(f, "reason") == "malformed_call"


# --- explain: refused -----------------------------------------------------------------------------


def test_method_denied_by_a_deny_entry_exits_3_naming_the_entry(confdir):
    # get_secret matches the allow entry's "get_*" too: deny wins.
    f = assert_explained(explain(confdir, "client", "--object", "thing", "--method", "get_secret"), REFUSED)
    assert one(f, "verdict") == "refused"
    assert one(f, "reason") == "denied_by_rule"
    assert one(f, "decided by") == "clients[0].deny[0]"
    assert one(f, "detail") == "pyroguard: method 'get_secret' of object 'thing' is denied for client rule 'billing'"


def test_method_outside_every_allow_entry_exits_3_not_allowed(confdir):
    f = assert_explained(explain(confdir, "client", "--object", "thing", "--method", "count"), REFUSED)
    assert one(f, "reason") == "not_allowed"
    assert one(f, "detail") == "pyroguard: method 'count' of object 'thing' is not allowed for client rule 'billing'"
    assert "decided by" not in f


def test_property_not_in_the_get_list_is_refused(confdir):
    f = assert_explained(explain(confdir, "client", "--object", "thing", "--get", "label"), REFUSED)
    assert one(f, "reason") == "not_allowed"
    assert "reading property 'label'" in one(f, "detail")


def test_object_behind_a_name_less_deny_entry_is_refused_even_at_connect(confdir):
    f = assert_explained(explain(confdir, "client", "--object", "vault"), REFUSED)
    assert one(f, "reason") == "denied_by_rule"
    assert one(f, "decided by") == "clients[0].deny[1]"
    assert "vault" in one(f, "detail")
    f = assert_explained(explain(confdir, "client", "--object", "vault", "--method", "open"), REFUSED)
    assert (one(f, "reason"), one(f, "decided by")) == ("denied_by_rule", "clients[0].deny[1]")


def test_object_the_rule_does_not_name_is_refused(confdir):
    f = assert_explained(explain(confdir, "client", "--object", "inventory"), REFUSED)
    assert one(f, "reason") == "object_not_allowed"


def test_certificate_matching_no_rule_exits_3_no_matching_rule(confdir, certs):
    f = assert_explained(explain(confdir, "stranger", "--object", "thing", "--method", "echo"), REFUSED)
    assert one(f, "handshake").startswith("accepted")
    assert "billing" not in one(f, "rule") and "ops" not in one(f, "rule")
    assert one(f, "reason") == "no_matching_rule"
    assert one(f, "detail") == (
        "pyroguard: no client rule matches the certificate of CN=stranger, "
        "URI=spiffe://other.org/ns/x/stranger, serial %s" % serial_of(certs, "stranger"))


@pytest.mark.parametrize("name,reason", [("a.b", "dotted_name"), ("_private", "private_name"),
                                         ("__class__", "private_name")])
def test_name_rules_apply_before_the_policy(confdir, name, reason):
    f = assert_explained(explain(confdir, "admin", "--object", "thing", "--method", name), REFUSED)
    assert one(f, "verdict") == "refused"
    assert one(f, "reason") == reason
    assert name in one(f, "detail")


def test_revoked_certificate_is_refused_by_the_handshake(confdir):
    f = assert_explained(explain(confdir, "revoked-client", "--object", "thing", "--method", "echo"), REFUSED)
    assert one(f, "handshake").startswith("refused")
    assert "certificate_revoked" in one(f, "handshake")
    assert one(f, "verdict") == "refused"
    assert one(f, "reason") == "certificate_revoked"


def test_revoked_certificate_passes_the_handshake_when_no_crl_is_configured(confdir):
    (confdir / "nocrl.yaml").write_text(CONFIG.replace("  crl: tls/ca.crl\n", ""))
    f = assert_explained(explain(confdir, "revoked-client", "--object", "thing", "--method", "echo",
                                 config="nocrl.yaml"), ALLOWED)
    assert one(f, "handshake").startswith("accepted")


def test_certificate_of_another_ca_is_refused_unknown_ca(confdir):
    f = assert_explained(explain(confdir, "other-client", "--object", "thing", "--method", "echo"), REFUSED)
    assert "unknown_ca" in one(f, "handshake")
    assert one(f, "reason") == "unknown_ca"
    assert one(f, "verdict") == "refused"


def test_expired_certificate_is_refused_certificate_expired(confdir):
    f = assert_explained(explain(confdir, "expired-client", "--object", "thing", "--method", "echo"), REFUSED)
    assert "certificate_expired" in one(f, "handshake")


def test_certificate_in_tls_deny_serials_is_refused_by_the_handshake(confdir, certs):
    cfg = CONFIG.replace("  crl: tls/ca.crl\n", '  crl: tls/ca.crl\n  deny_serials: ["%s"]\n'
                         % serial_of(certs, "client"))
    (confdir / "deny.yaml").write_text(cfg)
    p = explain(confdir, "client", "--object", "thing", "--method", "echo", config="deny.yaml")
    f = assert_explained(p, REFUSED)
    assert one(f, "handshake").startswith("refused")
    assert "deny_serials" in one(f, "handshake")


def test_certificate_in_tls_deny_sha256_is_refused_by_the_handshake(confdir, certs):
    fp = openssl(certs, "admin", "-fingerprint", "-sha256")  # with ':' separators
    cfg = CONFIG.replace("  crl: tls/ca.crl\n", '  crl: tls/ca.crl\n  deny_sha256: ["%s"]\n' % fp)
    (confdir / "deny.yaml").write_text(cfg)
    f = assert_explained(explain(confdir, "admin", "--object", "thing", "--method", "echo", config="deny.yaml"),
                         REFUSED)
    assert "deny_sha256" in one(f, "handshake")


# --- explain: usage and configuration errors ------------------------------------------------------


def test_unreadable_certificate_is_a_usage_error(confdir):
    p = pyroguard("explain", "-c", "pyroguard.yaml", "--cert", "tls/missing.crt", "--object", "thing",
                  "--method", "echo", cwd=confdir)
    assert p.returncode == USAGE
    assert "tls/missing.crt" in p.stderr
    assert p.stdout == ""


def test_a_private_key_is_not_a_certificate(confdir, certs):
    shutil.copy(certs / "client.key", confdir / "tls" / "client.key")
    p = pyroguard("explain", "-c", "pyroguard.yaml", "--cert", "tls/client.key", cwd=confdir)
    assert p.returncode == USAGE
    assert "tls/client.key" in p.stderr


@pytest.mark.parametrize("args", [
    ["--cert", "tls/client.crt"],                                           # no -c
    ["-c", "pyroguard.yaml"],                                               # no --cert
    ["-c", "pyroguard.yaml", "--cert", "tls/client.crt", "--method", "echo"],  # no --object
    ["-c", "pyroguard.yaml", "--cert", "tls/client.crt", "--object", "thing", "--method", "echo",
     "--get", "value"],                                                     # two requests
    ["-c", "pyroguard.yaml", "--cert", "tls/client.crt", "--colour"],
], ids=["no_config", "no_cert", "method_without_object", "method_and_get", "unknown_option"])
def test_usage_errors_exit_2(confdir, args):
    p = pyroguard("explain", *args, cwd=confdir)
    assert p.returncode == USAGE, p
    assert "usage" in p.stderr or "pyroguard explain" in p.stderr, p.stderr
    assert p.stdout == ""


def test_broken_config_is_a_config_error_with_file_line_column(confdir):
    (confdir / "pyroguard.yaml").write_text(CONFIG.replace("    uri: spiffe", "    urii: spiffe"))
    p = explain(confdir, "client", "--object", "thing", "--method", "echo")
    assert p.returncode == USAGE
    assert p.stderr.startswith("pyroguard.yaml:13:5: clients[0].match: unknown key 'urii'"), p.stderr
    assert p.stdout == ""


# --- explain --json ---------------------------------------------------------------------------------


def explain_json(confdir, cert, *request, code):
    p = explain(confdir, cert, "--json", *request)
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert p.stderr == ""
    [line] = p.stdout.splitlines()
    return json.loads(line)


def test_json_of_an_allowed_call_has_every_field(confdir, certs):
    j = explain_json(confdir, "client", "--object", "thing", "--method", "echo", code=ALLOWED)
    assert j["certificate"] == "tls/client.crt"
    assert j["subject"] == "CN=billing-client,O=Example"
    assert j["issuer"] == "CN=pyroguard dev CA,O=Example"
    assert (j["cn"], j["o"], j["ou"], j["dns"], j["uri"], j["ip"], j["email"]) == (
        ["billing-client"], ["Example"], [], ["client.example"], ["spiffe://example.org/ns/billing/client"], [], [])
    assert j["serial"] == serial_of(certs, "client")
    assert j["sha256"] == sha256_of(certs, "client")
    assert j["handshake"] == "accepted"
    assert (j["rule"], j["rule_index"]) == ("billing", 0)
    assert (j["object"], j["method"]) == ("thing", "echo")
    assert "get" not in j and "set" not in j
    assert (j["verdict"], j["reason"], j["entry"]) == ("allowed", "allowed", "clients[0].allow[0]")
    assert "detail" in j


def test_json_of_refusals(confdir):
    j = explain_json(confdir, "client", "--object", "thing", "--get", "label", code=REFUSED)
    assert (j["get"], j["verdict"], j["reason"]) == ("label", "refused", "not_allowed")
    assert j["detail"].startswith("pyroguard: reading property 'label'")
    j = explain_json(confdir, "client", "--object", "thing", "--set", "label", code=ALLOWED)
    assert (j["set"], j["entry"]) == ("label", "clients[0].allow[1]")
    j = explain_json(confdir, "client", "--object", "thing", "--method", "get_secret", code=REFUSED)
    assert (j["reason"], j["entry"]) == ("denied_by_rule", "clients[0].deny[0]")
    j = explain_json(confdir, "admin", "--object", "thing", "--method", "a.b", code=REFUSED)
    assert (j["reason"], j["rule"], j["ip"], j["email"], j["ou"]) == (
        "dotted_name", "ops", ["10.1.2.3"], ["admin@example.org"], ["ops"])


def test_json_without_a_matching_rule_has_no_rule(confdir):
    j = explain_json(confdir, "stranger", "--object", "thing", "--method", "echo", code=REFUSED)
    assert "rule" not in j, j
    assert j.get("rule_index") in (None, -1), j
    assert "entry" not in j or j["entry"] in ("", None), j
    assert (j["verdict"], j["reason"], j["handshake"]) == ("refused", "no_matching_rule", "accepted")


@pytest.mark.parametrize("cert,handshake", [("revoked-client", "certificate_revoked"),
                                            ("other-client", "unknown_ca"),
                                            ("expired-client", "certificate_expired")])
def test_json_of_a_refused_handshake(confdir, cert, handshake):
    j = explain_json(confdir, cert, "--object", "thing", "--method", "echo", code=REFUSED)
    assert j["handshake"] == handshake
    assert j["verdict"] == "refused"


# --- pyroguard check: bad rules ---------------------------------------------------------------------

# (replace this, with that) in CONFIG -> the exact stderr line. Positions are libyaml's 1-based marks.
BAD_RULES = {
    # DESIGN.md's own example, at the same place in this file (the message may go on after it).
    "unknown_match_key": (("    uri: spiffe", "    cnn: billing-client\n    uri: spiffe"),
                          "pyroguard.yaml:13:5: clients[0].match: unknown key 'cnn'"),
    "allow_entry_without_names": (("    set: [label]\n", ""),
                                  "pyroguard.yaml:18:5: clients[0].allow[1]: an allow entry needs at least "
                                  "one of methods, get or set"),
    "duplicate_rule_name": (("- name: ops", "- name: billing"),
                            "pyroguard.yaml:24:3: clients[1].name: rule name 'billing' is already used by "
                            "clients[0]"),
    "bad_cidr": (("10.1.0.0/16", "10.1.0.0/33"),
                 "pyroguard.yaml:27:9: clients[1].match.ip: '10.1.0.0/33' is not an IP address prefix "
                 "(e.g. 10.0.0.0/8, fd00::/8)"),
    "cidr_with_host_bits": (("10.1.0.0/16", "10.1.2.3/8"),
                            "pyroguard.yaml:27:9: clients[1].match.ip: '10.1.2.3/8' has bits set after the "
                            "/8 prefix"),
    "bad_serial": (("    ip: 10.1.0.0/16\n", '    ip: 10.1.0.0/16\n    serial: "0A:1B:XY"\n'),
                   "pyroguard.yaml:28:13: clients[1].match.serial: '0A:1B:XY' is not a serial in hex"),
    "sha256_with_63_digits": (("    ip: 10.1.0.0/16\n", '    ip: 10.1.0.0/16\n    sha256: "%s"\n' % ("A" * 63)),
                              "pyroguard.yaml:28:13: clients[1].match.sha256: '%s' is not a SHA-256 "
                              "fingerprint" % ("A" * 63)),
    "missing_clients": (("clients:\n", "rules:\n"), "pyroguard.yaml:10:1: unknown key 'rules'"),
    "unknown_entry_key": (("    get: [value]\n", "    get: [value]\n    call: [x]\n"),
                          "pyroguard.yaml:18:5: clients[0].allow[0]: unknown key 'call'"),
    "empty_methods_list": (("methods: [echo, \"get_*\"]", "methods: []"),
                           "pyroguard.yaml:16:14: clients[0].allow[0].methods: the list is empty"),
    "rule_without_match": (("  match:\n    ou: ops\n    ip: 10.1.0.0/16\n", ""),
                           "pyroguard.yaml:24:3: clients[1]: missing required key 'match'"),
}


@pytest.mark.parametrize("case", sorted(BAD_RULES))
def test_check_names_file_line_column_of_a_bad_rule(confdir, case):
    (old, new), expected = BAD_RULES[case]
    assert old in CONFIG
    (confdir / "pyroguard.yaml").write_text(CONFIG.replace(old, new, 1))
    p = pyroguard("check", "-c", "pyroguard.yaml", cwd=confdir)
    assert p.returncode == 2, p
    assert p.stdout == ""
    first = p.stderr.splitlines()[0] if p.stderr else ""
    assert first.startswith(expected), "got %r, expected %r" % (p.stderr, expected)


def test_check_without_a_clients_key_says_it_is_required(confdir):
    cfg = CONFIG[:CONFIG.index("clients:\n")]
    (confdir / "pyroguard.yaml").write_text(cfg)
    p = pyroguard("check", "-c", "pyroguard.yaml", cwd=confdir)
    assert p.returncode == 2
    assert p.stderr == "pyroguard.yaml:1:1: missing required key 'clients'\n"


def test_check_accepts_the_config_used_by_these_tests(confdir):
    p = pyroguard("check", "-c", "pyroguard.yaml", cwd=confdir)
    assert (p.returncode, p.stderr) == (0, ""), p


def test_design_example_of_an_unknown_match_key_at_line_12_column_5(tmp_path, certs):
    # The exact layout of DESIGN.md's example error: `pyroguard.yaml:12:5: clients[0].match: unknown key 'cnn'`.
    tls = tmp_path / "tls"
    tls.mkdir()
    for name in ("server.crt", "server.key", "ca.crt"):
        shutil.copy(certs / name, tls / name)
    (tmp_path / "pyroguard.yaml").write_text(
        "listeners:\n- name: app\n  listen: 127.0.0.1:9443\n  backend: 127.0.0.1:9090\n"
        "tls:\n  cert: tls/server.crt\n  key: tls/server.key\n  client_ca: tls/ca.crt\n"
        "clients:\n- name: billing\n  match:\n    cnn: billing-client\n"
        "  allow:\n  - object: thing\n    methods: [echo]\n")
    p = pyroguard("check", "-c", "pyroguard.yaml", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.startswith("pyroguard.yaml:12:5: clients[0].match: unknown key 'cnn'"), p.stderr


# --- explain predicts what the running proxy does ---------------------------------------------------


PREDICT_RULES = [{
    "name": "billing",
    "match": {"uri": "spiffe://example.org/ns/billing/*"},
    "allow": [{"object": "thing", "methods": ["echo", "count"], "get": ["value"]}],
    "deny": [{"object": "thing", "methods": ["count"]}],
}]


@pytest.mark.parametrize("cert,op,explain_args", [
    ("client", {"call": "echo", "args": ["x"]}, ["--object", "thing", "--method", "echo"]),
    ("client", {"call": "count"}, ["--object", "thing", "--method", "count"]),
    ("client", {"call": "pid"}, ["--object", "thing", "--method", "pid"]),
    ("client", {"get": "value"}, ["--object", "thing", "--get", "value"]),
    ("client", {"set": "value", "value": 1}, ["--object", "thing", "--set", "value"]),
    ("client", {"object": "Pyro.Daemon", "call": "registered"}, ["--object", "Pyro.Daemon", "--method", "registered"]),
    ("stranger", {"call": "echo", "args": ["x"]}, ["--object", "thing", "--method", "echo"]),
], ids=["allowed", "denied", "not_allowed", "get", "set", "daemon_registered", "no_rule"])
def test_explain_predicts_the_running_proxy(make_stack, cert, op, explain_args):
    stack = make_stack({"clients": PREDICT_RULES, "log": {"level": "info", "calls": "all"}})
    cfg = stack.pg.config_path
    p = pyroguard("explain", "-c", cfg, "--cert", stack.certs / ("%s.crt" % cert), "--json", *explain_args)
    assert p.returncode in (ALLOWED, REFUSED), (p.returncode, p.stderr)
    predicted = json.loads(p.stdout)
    r = stack.client("ops", cert=cert, extra=["--ops", json.dumps([op])])
    assert r["ok"], r
    [outcome] = r["result"]
    stack.pg.settle()
    lines = [l for l in stack.pg.logs() if l.get("event") in ("allowed", "refused")]
    last = lines[-1]
    assert outcome["ok"] == (predicted["verdict"] == "allowed") == (p.returncode == ALLOWED), (outcome, predicted)
    assert last["verdict"] == predicted["verdict"], (last, predicted)
    assert last["reason"] == predicted["reason"], (last, predicted)
    assert last.get("entry") == predicted.get("entry"), (last, predicted)
    assert last.get("rule") == predicted.get("rule"), (last, predicted)
    if not outcome["ok"]:
        assert predicted["detail"] in outcome["exc_msg"], (outcome, predicted)


# --- match patterns against a certificate with awkward values (explain: the same policy code) ----------

ODD_SUBJECT = "/O=Other/O=Example/OU=x/CN=deep"
ODD_SAN = ("DNS:a.b.example, URI:spiffe://example.org/ns/billing/client/extra, IP:fd00::1, IP:10.1.2.3, "
           "email:Admin@Example.org")


@pytest.fixture(scope="module")
def odd_cert(certs, tmp_path_factory):
    """tls/deep.crt: two O values, a two-label DNS name, a deeper URI, IPv6 + IPv4, a mixed-case
    e-mail address, and a serial (0x00AB12) that DER writes with a leading zero byte."""
    d = tmp_path_factory.mktemp("odd")
    run = lambda *a: subprocess.run(["openssl"] + [str(x) for x in a], check=True, capture_output=True)
    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", d / "deep.key")
    run("req", "-new", "-key", d / "deep.key", "-subj", ODD_SUBJECT, "-out", d / "deep.csr")
    (d / "deep.ext").write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                "extendedKeyUsage=clientAuth\nsubjectAltName=%s\n" % ODD_SAN)
    run("x509", "-req", "-in", d / "deep.csr", "-CA", certs / "ca.crt", "-CAkey", certs / "ca.key",
        "-set_serial", "0x00ab12", "-days", "30", "-extfile", d / "deep.ext", "-out", d / "deep.crt")
    return d / "deep.crt"


MATCH_MATRIX = [
    ({"dns": "*.example"}, False),            # `*` stays inside one label
    ({"dns": "**.example"}, True),
    ({"dns": "A.B.EXAMPLE"}, True),           # DNS names compare without case
    ({"uri": "spiffe://example.org/ns/billing/*"}, False),
    ({"uri": "spiffe://example.org/ns/billing/**"}, True),
    ({"ip": "fd00::/8"}, True),
    ({"ip": "fe80::/10"}, False),
    ({"ip": "10.1.2.0/24"}, True),
    ({"ip": "10.1.2.3"}, True),
    ({"ip": "10.1.2.4"}, False),
    ({"ip": "10.1.*.*"}, True),
    ({"email": "*@example.org"}, True),       # e-mail addresses compare without case
    ({"email": "admin@*"}, False),            # `*` does not cross the '.' of example.org
    ({"email": "admin@**"}, True),
    ({"o": "Example"}, True),                 # any of the certificate's O values
    ({"o": ["Nope", "Other"]}, True),         # any of the rule's patterns
    ({"cn": "deep", "o": "Nope"}, False),     # every key must match
    ({"cn": "dee"}, False),
    ({"serial": "AB12"}, True),
    ({"serial": "00:ab:12"}, True),
    ({"serial": "AB13"}, False),
    ({}, True),
]


def _quoted(v):
    return [Quoted(x) for x in v] if isinstance(v, list) else Quoted(v)


@pytest.mark.parametrize("match,matches", MATCH_MATRIX, ids=[json.dumps(m, sort_keys=True) for m, _ in MATCH_MATRIX])
def test_match_pattern_against_an_awkward_certificate(confdir, odd_cert, match, matches):
    rule = {"name": "r", "match": {k: _quoted(v) for k, v in match.items()},
            "allow": [{"object": "thing", "methods": ["echo"]}]}
    cfg = CONFIG[:CONFIG.index("clients:\n")] + to_yaml({"clients": [rule]}) + "\n"
    (confdir / "odd.yaml").write_text(cfg)
    p = pyroguard("explain", "-c", "odd.yaml", "--cert", odd_cert, "--object", "thing", "--method", "echo",
                  "--json", cwd=confdir)
    assert p.returncode == (ALLOWED if matches else REFUSED), (p.returncode, p.stdout, p.stderr, cfg)
    j = json.loads(p.stdout)
    assert j["handshake"] == "accepted", j
    assert j["ip"] == ["fd00::1", "10.1.2.3"] or sorted(j["ip"]) == sorted(["fd00::1", "10.1.2.3"]), j
    if matches:
        assert (j.get("rule"), j["verdict"]) == ("r", "allowed"), j
    else:
        assert "rule" not in j and j["reason"] == "no_matching_rule", j


# --- explain --listener: a client-mode listener's egress rule ----------------------------------------

CLIENT_LISTENER = """\
- name: billing
  mode: client
  listen: 127.0.0.1:7000
  upstream: 127.0.0.1:9443
  upstream_tls:
    cert: tls/client.crt
    key: tls/client.key
    ca: tls/ca.crt
    server_name: localhost
  egress:
    allow:
    - object: billing
      methods: [charge, "get_*"]
      get: [total]
    - object: Pyro.Daemon
      methods: [registered]
    deny:
    - object: billing
      methods: [get_secret]
    - object: vault
"""

# Client mode only: no tls: and no clients: section (they serve server-mode listeners).
CLIENT_ONLY = "listeners:\n" + CLIENT_LISTENER

# Both kinds of listener in one file: the server's clients: rules and the client's egress rule.
MIXED = CONFIG.replace("tls:\n", CLIENT_LISTENER + "tls:\n", 1)


@pytest.fixture
def clientdir(confdir):
    """confdir with client-only.yaml (CLIENT_ONLY) and mixed.yaml (MIXED) beside pyroguard.yaml."""
    (confdir / "client-only.yaml").write_text(CLIENT_ONLY)
    (confdir / "mixed.yaml").write_text(MIXED)
    return confdir


def explain_listener(confdir, listener, *request, config="client-only.yaml"):
    return pyroguard("explain", "-c", config, "--listener", listener, *request, cwd=confdir)


def test_client_mode_listener_is_explained_without_a_certificate_or_a_tls_section(clientdir):
    p = explain_listener(clientdir, "billing", "--object", "billing", "--method", "charge")
    f = assert_explained(p, ALLOWED)
    assert one(f, "listener") == "billing (listeners[0], client-only.yaml:2:3)"
    assert one(f, "mode") == "client"
    assert one(f, "upstream") == "127.0.0.1:9443"
    assert one(f, "rule").startswith("egress:billing (listeners[0].egress, client-only.yaml:")
    assert one(f, "request") == "method charge on object billing"
    assert (one(f, "verdict"), one(f, "reason")) == ("allowed", "allowed")
    assert one(f, "decided by") == "egress:billing.allow[0]"
    for key in ("certificate", "subject", "handshake"):
        assert key not in f, f


def test_client_mode_deny_entry_refuses_with_exit_3_naming_the_egress_entry(clientdir):
    # get_secret matches the allow entry's "get_*" too: deny wins, as in clients: rules.
    f = assert_explained(explain_listener(clientdir, "billing", "--object", "billing", "--method",
                                          "get_secret"), REFUSED)
    assert (one(f, "verdict"), one(f, "reason")) == ("refused", "denied_by_rule")
    assert one(f, "decided by") == "egress:billing.deny[0]"
    assert one(f, "detail") == (
        "pyroguard: method 'get_secret' of object 'billing' is denied for client rule 'egress:billing'")


def test_client_mode_method_outside_the_egress_allow_list_is_not_allowed(clientdir):
    f = assert_explained(explain_listener(clientdir, "billing", "--object", "billing", "--method",
                                          "refund_all"), REFUSED)
    assert one(f, "reason") == "not_allowed"
    assert one(f, "detail") == (
        "pyroguard: method 'refund_all' of object 'billing' is not allowed for client rule 'egress:billing'")
    assert "decided by" not in f


def test_client_mode_property_read_and_write_follow_the_get_and_set_lists(clientdir):
    f = assert_explained(explain_listener(clientdir, "billing", "--object", "billing", "--get", "total"),
                         ALLOWED)
    assert (one(f, "request"), one(f, "decided by")) == ("read property total on object billing",
                                                         "egress:billing.allow[0]")
    f = assert_explained(explain_listener(clientdir, "billing", "--object", "billing", "--set", "total"),
                         REFUSED)
    assert one(f, "reason") == "not_allowed"
    assert "writing property 'total'" in one(f, "detail")


def test_client_mode_connect_metadata_lookup_is_judged_by_the_egress_rule(clientdir):
    f = assert_explained(explain_listener(clientdir, "billing", "--object", "billing"), ALLOWED)
    assert one(f, "request") == "CONNECT with metadata for object billing"
    f = assert_explained(explain_listener(clientdir, "billing", "--object", "vault"), REFUSED)
    assert (one(f, "reason"), one(f, "decided by")) == ("denied_by_rule", "egress:billing.deny[1]")
    f = assert_explained(explain_listener(clientdir, "billing", "--object", "inventory"), REFUSED)
    assert one(f, "reason") == "object_not_allowed"
    f = assert_explained(explain_listener(clientdir, "billing"), ALLOWED)
    assert one(f, "request") == "CONNECT"


@pytest.mark.parametrize("name,reason", [("a.b", "dotted_name"), ("_private", "private_name"),
                                         ("__class__", "private_name")])
def test_client_mode_name_rules_apply_before_the_egress_policy(clientdir, name, reason):
    f = assert_explained(explain_listener(clientdir, "billing", "--object", "billing", "--method", name),
                         REFUSED)
    assert one(f, "reason") == reason
    assert name in one(f, "detail")


def test_client_mode_pyro_daemon_rules_are_those_of_server_mode(clientdir):
    f = assert_explained(explain_listener(clientdir, "billing", "--object", "Pyro.Daemon", "--method",
                                          "ping"), ALLOWED)
    assert one(f, "decided by") == "built-in Pyro.Daemon rule"
    f = assert_explained(explain_listener(clientdir, "billing", "--object", "Pyro.Daemon", "--method",
                                          "registered"), ALLOWED)
    assert one(f, "decided by") == "egress:billing.allow[1]"
    f = assert_explained(explain_listener(clientdir, "billing", "--object", "Pyro.Daemon", "--method",
                                          "info"), REFUSED)
    assert one(f, "reason") == "not_allowed"
    f = assert_explained(explain_listener(clientdir, "billing", "--object", "Pyro.Daemon", "--method",
                                          "get_metadata", "--arg", "vault"), REFUSED)
    assert (one(f, "reason"), one(f, "decided by")) == ("denied_by_rule", "egress:billing.deny[1]")


def test_client_mode_json_names_listener_mode_rule_and_entry(clientdir):
    p = explain_listener(clientdir, "billing", "--json", "--object", "billing", "--method", "get_secret")
    assert (p.returncode, p.stderr) == (REFUSED, ""), p
    [line] = p.stdout.splitlines()
    j = json.loads(line)
    assert j == {
        "listener": "billing", "mode": "client", "upstream": "127.0.0.1:9443", "rule": "egress:billing",
        "object": "billing", "method": "get_secret", "verdict": "refused", "reason": "denied_by_rule",
        "detail": "pyroguard: method 'get_secret' of object 'billing' is denied for client rule "
                  "'egress:billing'",
        "entry": "egress:billing.deny[0]"}, j
    p = explain_listener(clientdir, "billing", "--json", "--object", "billing", "--get", "total")
    assert p.returncode == ALLOWED, p
    j = json.loads(p.stdout)
    assert (j["get"], j["verdict"], j["reason"], j["entry"]) == ("total", "allowed", "allowed",
                                                                "egress:billing.allow[0]")


def test_a_file_with_both_modes_explains_each_listener_by_its_own_rule(clientdir):
    f = assert_explained(explain_listener(clientdir, "billing", "--object", "thing", "--method", "echo",
                                          config="mixed.yaml"), REFUSED)
    assert (one(f, "reason"), one(f, "rule").split()[0]) == ("object_not_allowed", "egress:billing")
    f = assert_explained(explain(clientdir, "client", "--object", "thing", "--method", "echo",
                                 config="mixed.yaml"), ALLOWED)
    assert (one(f, "rule").split()[0], one(f, "decided by")) == ("billing", "clients[0].allow[0]")
    # The egress rule is never matched against a certificate, not even a last resort.
    f = assert_explained(explain(clientdir, "stranger", "--object", "billing", "--method", "charge",
                                 config="mixed.yaml"), REFUSED)
    assert one(f, "reason") == "no_matching_rule"


def test_listener_in_server_mode_is_a_usage_error_pointing_at_cert(clientdir):
    p = explain_listener(clientdir, "app", "--object", "thing", "--method", "echo", config="mixed.yaml")
    assert (p.returncode, p.stdout) == (USAGE, ""), p
    assert "'app' is in server mode" in p.stderr and "--cert" in p.stderr, p.stderr


def test_unknown_listener_is_a_usage_error(clientdir):
    p = explain_listener(clientdir, "biling", "--object", "billing", "--method", "charge")
    assert (p.returncode, p.stdout) == (USAGE, ""), p
    assert "no listener named 'biling'" in p.stderr, p.stderr


def test_cert_on_a_client_mode_only_file_is_a_usage_error_pointing_at_listener(clientdir):
    p = explain(clientdir, "client", "--object", "billing", "--method", "charge", config="client-only.yaml")
    assert (p.returncode, p.stdout) == (USAGE, ""), p
    assert "no server-mode listener" in p.stderr and "--listener" in p.stderr, p.stderr


@pytest.mark.parametrize("args,says", [
    (["--cert", "tls/client.crt", "--listener", "billing"], "not both"),
    ([], "--cert CLIENT.pem"),
    (["--listener", "billing", "--method", "charge"], "--method needs --object"),
], ids=["cert_and_listener", "neither", "method_without_object"])
def test_listener_usage_errors_exit_2(clientdir, args, says):
    p = pyroguard("explain", "-c", "mixed.yaml", *args, cwd=clientdir)
    assert (p.returncode, p.stdout) == (USAGE, ""), p
    assert says in p.stderr and "usage:" in p.stderr, p.stderr


def test_client_mode_file_errors_are_configuration_errors_with_file_line_column(clientdir):
    (clientdir / "client-only.yaml").write_text(CLIENT_ONLY.replace("tls/client.key", "tls/missing.key"))
    p = explain_listener(clientdir, "billing", "--object", "billing", "--method", "charge")
    assert (p.returncode, p.stdout) == (USAGE, ""), p
    assert p.stderr.startswith("client-only.yaml:"), p.stderr
    assert "tls/missing.key" in p.stderr, p.stderr


# --- explain --listener predicts what a running client-mode pyroguard does ----------------------------

PREDICT_EGRESS = {
    "allow": [{"object": "thing", "methods": ["echo", "count"], "get": ["value"]}],
    "deny": [{"object": "thing", "methods": ["count"]}],
}


@pytest.mark.parametrize("op,explain_args", [
    ({"call": "echo", "args": ["x"]}, ["--object", "thing", "--method", "echo"]),
    ({"call": "count"}, ["--object", "thing", "--method", "count"]),
    ({"call": "pid"}, ["--object", "thing", "--method", "pid"]),
    ({"get": "value"}, ["--object", "thing", "--get", "value"]),
    ({"set": "value", "value": 1}, ["--object", "thing", "--set", "value"]),
    ({"object": "Pyro.Daemon", "call": "registered"}, ["--object", "Pyro.Daemon", "--method", "registered"]),
], ids=["allowed", "denied", "not_allowed", "get", "set", "daemon_registered"])
def test_explain_listener_predicts_the_running_client_mode_proxy(tmp_path, certs, op, explain_args):
    # Imported here: the client-mode harness lives with the client-mode tests.
    from test_client_mode import ClientModePyroguard, ops
    s = Stack(tmp_path / "server", certs)
    s.start()
    c = ClientModePyroguard(tmp_path / "client-mode", certs, s.port, egress=PREDICT_EGRESS)
    c.dir.mkdir(parents=True, exist_ok=True)
    try:
        c.start()
        p = pyroguard("explain", "-c", c.config_path, "--listener", c.listener, "--json", *explain_args)
        assert p.returncode in (ALLOWED, REFUSED), (p.returncode, p.stderr)
        predicted = json.loads(p.stdout)
        assert (predicted["listener"], predicted["mode"]) == (c.listener, "client"), predicted
        r = ops(c, [op])
        assert r["ok"], r
        [outcome] = r["result"]
        c.settle()
        last = [l for l in c.logs() if l.get("event") in ("allowed", "refused")][-1]
        assert outcome["ok"] == (predicted["verdict"] == "allowed") == (p.returncode == ALLOWED), (
            outcome, predicted)
        for key in ("verdict", "reason", "entry", "rule"):
            assert last.get(key) == predicted.get(key), (key, last, predicted)
        if not outcome["ok"]:
            assert predicted["detail"] in outcome["exc_msg"], (outcome, predicted)
    finally:
        c.stop()
        s.stop()
    for pg in (c, s.pg):
        assert pg.sanitizer_report() is None, pg.sanitizer_report()
