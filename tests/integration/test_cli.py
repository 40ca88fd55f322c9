"""The command line contract: `pyroguard check` names every configuration error as
FILE:LINE:COL: PATH: REASON (exit 2), `run` refuses the same configs, exit codes 0/1/2."""

import re
import shutil
import socket
import subprocess

import pytest

from conftest import PYROGUARD_BIN, SANITIZER_REPORT

GOOD = """\
listeners:
  - name: app
    listen: 127.0.0.1:9443
    backend: 127.0.0.1:9090
tls:
  cert: tls/server.crt
  key: tls/server.key
  client_ca: tls/ca.crt
  crl: tls/ca.crl
  min_version: "1.2"
pyro:
  protocols: [4]
  serializers: [serpent, json, marshal, msgpack]
  max_message_bytes: 16777216
  compression: allow
limits:
  max_connections: 10000
  handshake_timeout: 10000
  idle_timeout: 300000
  backend_connect_timeout: 5000
log:
  level: info
clients: []
"""

CFG = "conf/pyroguard.yaml"

# (replace this, with that) in GOOD -> the exact stderr line. Line/column are 1-based libyaml
# marks: the key for an unknown key, the value for a bad value.
BROKEN = {
    "unknown_key": (
        ("  level: info\n", "  level: info\n  colour: blue\n"),
        "conf/pyroguard.yaml:23:3: log: unknown key 'colour'"),
    "wrong_type": (
        ("max_message_bytes: 16777216", "max_message_bytes: lots"),
        "conf/pyroguard.yaml:14:22: pyro.max_message_bytes: expected an integer in bytes, got 'lots'"),
    "pickle_in_serializers": (
        ("serializers: [serpent, json, marshal, msgpack]", "serializers: [serpent, json, pickle]"),
        "conf/pyroguard.yaml:13:32: pyro.serializers[2]: 'pickle' executes code on the server when "
        "decoded and can never be allowed"),
    "missing_cert_file": (
        ("cert: tls/server.crt", "cert: tls/missing.crt"),
        "conf/pyroguard.yaml:6:9: tls.cert: cannot read 'conf/tls/missing.crt': No such file or directory"),
    "key_not_matching_cert": (
        ("key: tls/server.key", "key: tls/client.key"),
        "conf/pyroguard.yaml:7:8: tls.key: private key 'conf/tls/client.key' does not match the "
        "certificate 'conf/tls/server.crt'"),
    "bad_crl": (
        ("crl: tls/ca.crl", "crl: tls/garbage.crl"),
        "conf/pyroguard.yaml:9:8: tls.crl: no CRL found in 'conf/tls/garbage.crl'"),
    "bad_min_version": (
        ('min_version: "1.2"', 'min_version: "1.1"'),
        "conf/pyroguard.yaml:10:16: tls.min_version: must be \"1.2\" or \"1.3\", got '1.1'"),
    # The policy (clients:) is required; `clients: []` is valid and refuses every client.
    "missing_clients": (
        ("clients: []\n", ""),
        "conf/pyroguard.yaml:1:1: missing required key 'clients'"),
    "unknown_match_key": (
        ("clients: []\n", "clients:\n  - name: billing\n    match:\n      cnn: billing-client\n"),
        "conf/pyroguard.yaml:26:7: clients[0].match: unknown key 'cnn'"),
    "allow_entry_without_names": (
        ("clients: []\n",
         "clients:\n  - name: billing\n    match: {}\n    allow:\n      - object: inventory\n"),
        "conf/pyroguard.yaml:27:9: clients[0].allow[0]: an allow entry needs at least one of "
        "methods, get or set"),
    "bad_log_calls": (
        ("  level: info\n", "  level: info\n  calls: everything\n"),
        "conf/pyroguard.yaml:23:10: log.calls: must be all, denied or none, got 'everything'"),
}


@pytest.fixture
def confdir(tmp_path, certs):
    """tmp/conf/pyroguard.yaml with its certificates in tmp/conf/tls (paths relative to the file)."""
    tls = tmp_path / "conf" / "tls"
    tls.mkdir(parents=True)
    for name in ("server.crt", "server.key", "client.key", "ca.crt", "ca.crl"):
        shutil.copy(certs / name, tls / name)
    (tls / "garbage.crl").write_text("this is not a CRL\n")
    (tmp_path / CFG).write_text(GOOD)
    return tmp_path


def pyroguard(*args, cwd=None, timeout=20):
    if not PYROGUARD_BIN.exists():
        pytest.fail("pyroguard binary not found at %s (run `make`)" % PYROGUARD_BIN)
    p = subprocess.run([str(PYROGUARD_BIN)] + list(args), cwd=cwd, capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if SANITIZER_REPORT.search(p.stderr):
        pytest.fail("pyroguard printed a sanitizer report:\n%s" % p.stderr, pytrace=False)
    return p


def test_check_accepts_the_good_config(confdir):
    p = pyroguard("check", "-c", CFG, cwd=confdir)
    assert (p.returncode, p.stderr) == (0, "")
    # The contract says "FILE: configuration OK"; the binary may append a summary.
    assert p.stdout.startswith("conf/pyroguard.yaml: configuration OK"), p.stdout


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_names_file_line_column_path_and_reason(confdir, case):
    (old, new), expected = BROKEN[case]
    assert old in GOOD
    (confdir / CFG).write_text(GOOD.replace(old, new))
    p = pyroguard("check", "-c", CFG, cwd=confdir)
    assert p.returncode == 2
    assert p.stderr == expected + "\n"
    assert p.stdout == ""


@pytest.mark.parametrize("case", ["unknown_key", "pickle_in_serializers", "key_not_matching_cert"])
def test_run_refuses_a_broken_config_with_the_same_error(confdir, case):
    (old, new), expected = BROKEN[case]
    (confdir / CFG).write_text(GOOD.replace(old, new))
    p = pyroguard("run", "-c", CFG, cwd=confdir)
    assert p.returncode == 2
    assert expected in p.stderr.splitlines()


def test_check_reports_every_error_not_just_the_first(confdir):
    text = GOOD
    for case in ("unknown_key", "wrong_type", "bad_min_version"):
        (old, new), _ = BROKEN[case]
        text = text.replace(old, new)
    (confdir / CFG).write_text(text)
    p = pyroguard("check", "-c", CFG, cwd=confdir)
    assert p.returncode == 2
    for case in ("unknown_key", "wrong_type", "bad_min_version"):
        assert BROKEN[case][1] in p.stderr.splitlines()


def test_check_of_a_missing_file_is_a_config_error(tmp_path):
    p = pyroguard("check", "-c", "nope.yaml", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.startswith("nope.yaml:")
    assert "cannot open" in p.stderr


def test_check_without_config_is_a_usage_error(tmp_path):
    p = pyroguard("check", cwd=tmp_path)
    assert p.returncode == 2
    assert "-c FILE" in p.stderr


def test_unknown_command_is_a_usage_error(tmp_path):
    p = pyroguard("serve", cwd=tmp_path)
    assert p.returncode == 2


def test_help_and_version_succeed(tmp_path):
    h = pyroguard("--help", cwd=tmp_path)
    assert h.returncode == 0
    assert "check -c FILE" in h.stdout + h.stderr
    v = pyroguard("version", cwd=tmp_path)
    assert v.returncode == 0
    assert v.stdout.startswith("pyroguard ")


def test_help_lists_explain_with_its_options_and_exit_code_3(tmp_path):
    h = pyroguard("--help", cwd=tmp_path)
    assert h.returncode == 0
    text = h.stdout + h.stderr
    explain = [l for l in text.splitlines() if l.strip().startswith("explain")]
    assert explain, "no `explain` command in --help:\n" + text
    assert "-c FILE" in explain[0] and "--cert" in explain[0], explain[0]
    for option in ("--object", "--method", "--get", "--set", "--json"):
        assert option in text, option
    # explain's verdict is its exit code: 0 allowed, 3 refused (2 stays usage/config error).
    codes = text[text.index("exit codes"):]
    assert re.search(r"\b3\b", codes), codes


@pytest.mark.parametrize("args", [
    ["explain"],                                          # no -c FILE
    ["explain", "-c", CFG],                               # no --cert
    ["explain", "-c", CFG, "--cert", "conf/tls/client.crt", "--method", "a", "--get", "b"],
])
def test_explain_usage_errors_exit_2(confdir, certs, args):
    shutil.copy(certs / "client.crt", confdir / "conf" / "tls" / "client.crt")
    p = pyroguard(*args, cwd=confdir)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr != ""


def test_run_fails_with_exit_1_when_the_listen_port_is_taken(confdir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (confdir / CFG).write_text(GOOD.replace("listen: 127.0.0.1:9443", "listen: 127.0.0.1:%d" % port))
        p = pyroguard("run", "-c", CFG, cwd=confdir)
    assert p.returncode == 1
    assert '"event":"listen_failed"' in p.stderr.replace(" ", "")


def test_sigterm_stops_pyroguard_with_exit_0(make_stack):
    stack = make_stack()
    stack.pg.stop()
    assert stack.pg.returncode == 0
