"""The server key in the forms operators keep it (an encrypted PEM key with its password in a file,
a PKCS#12 keystore), and the TLS 1.2 ciphers and the curves pyroguard offers: each works with a
real Pyro4 client, and each mistake is a `pyroguard check` error naming FILE:LINE:COL (exit 2)."""

import re
import shutil
import socket
import ssl
import subprocess

import pytest

from conftest import PYROGUARD_BIN, Pyroguard, Quoted, tls_context

COMMUNICATION_ERRORS = ("Pyro4.errors.CommunicationError", "Pyro4.errors.ConnectionClosedError")


# --- pyroguard check on a config built like the running ones -----------------------------------


def check(tmp_path, certs, overrides):
    """Write the default test config merged with `overrides`, run `pyroguard check -c` on it.
    Returns (exit code, stderr, the YAML text, the config path as passed)."""
    pg = Pyroguard(tmp_path / "check", certs, backend_port=9, overrides=overrides)
    pg.dir.mkdir(parents=True, exist_ok=True)
    path = pg.write_config()
    p = subprocess.run([str(PYROGUARD_BIN), "check", "-c", str(path)], capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    return p.returncode, p.stderr, path.read_text(), str(path)


def value_mark(yaml_text, key, item=None):
    """LINE:COL (1-based) of the value of `key:` in the YAML text, or of `item` on that line."""
    for n, line in enumerate(yaml_text.splitlines(), 1):
        m = re.match(r"^\s*%s: " % re.escape(key), line)
        if m:
            col = line.index(item, m.end()) if item is not None else m.end()
            return "%d:%d" % (n, col + 1)
    raise AssertionError("no %r in:\n%s" % (key, yaml_text))


def map_mark(yaml_text, section):
    """LINE:COL of the first key of a block mapping `section:` (libyaml's mark of the mapping)."""
    lines = yaml_text.splitlines()
    n = lines.index("%s:" % section) + 2
    return "%d:%d" % (n, len(lines[n - 1]) - len(lines[n - 1].lstrip()) + 1)


def assert_check_error(tmp_path, certs, overrides, key, message, item=None):
    rc, err, text, path = check(tmp_path, certs, overrides)
    assert rc == 2, (rc, err)
    where = value_mark(text, re.sub(r"\[\d+\]$", "", key.split(".")[-1]), item)
    expected = "%s:%s: %s: %s" % (path, where, key, message)
    assert expected in err.splitlines(), "expected\n  %s\ngot\n%s" % (expected, err)


def p12_overrides(certs, p12, password_file=None):
    tls = {"cert": None, "key": None, "pkcs12": str(certs / p12)}
    if password_file is not None:
        tls["pkcs12_password_file"] = str(password_file)
    return {"tls": tls}


def s_client(port, certs, *opts):
    """openssl s_client with the `client` certificate; returns (exit code, stdout + stderr)."""
    p = subprocess.run(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", "localhost",
         "-cert", str(certs / "client.crt"), "-key", str(certs / "client.key"),
         "-CAfile", str(certs / "ca.crt")] + list(opts),
        input="", capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def served_chain(port, certs):
    """The PEM certificates pyroguard sends in its handshake."""
    rc, out = s_client(port, certs, "-showcerts")
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)


def pem_body(path):
    return re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                     path.read_text(), re.S).group(0)


def assert_handshake_refused(stack, ctx, reason):
    """A raw TLS client with `ctx` fails the handshake; pyroguard logs `reason`, the daemon sees
    nothing. Returns the tls_fail line and the client's error text."""
    raw = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
    try:
        with pytest.raises(ssl.SSLError) as e:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.recv(1)
    finally:
        raw.close()
    [line] = stack.pg.wait_log(event="tls_fail", reason=reason)
    assert stack.pg.logs(event="conn_open") == []
    stack.pg.settle()
    stack.backend.assert_received_nothing()
    return line, str(e.value)


# --- encrypted PEM key -------------------------------------------------------------------------


def test_encrypted_key_with_password_file_serves_pyro_clients(make_stack, certs):
    stack = make_stack({"tls": {"key": str(certs / "server-enc.key"),
                                "key_password_file": str(certs / "server-enc.pass")}})
    r = stack.client("echo")
    assert r["ok"], r
    assert r["result"] == "hello"


def test_password_file_with_windows_line_end_decrypts_the_key(make_stack, certs, tmp_path):
    pw = tmp_path / "crlf.pass"
    pw.write_bytes((certs / "server-enc.pass").read_bytes().rstrip(b"\n") + b"\r\n")
    stack = make_stack({"tls": {"key": str(certs / "server-enc.key"), "key_password_file": str(pw)}})
    r = stack.client("echo")
    assert r["ok"], r


def test_check_reports_wrong_key_password(tmp_path, certs):
    pw = tmp_path / "wrong.pass"
    pw.write_text("not the password\n")
    assert_check_error(
        tmp_path, certs,
        {"tls": {"key": str(certs / "server-enc.key"), "key_password_file": str(pw)}},
        "tls.key_password_file",
        "cannot decrypt the private key '%s' with the password in '%s'"
        % (certs / "server-enc.key", pw))


def test_check_reports_encrypted_key_without_password_file(tmp_path, certs):
    assert_check_error(
        tmp_path, certs, {"tls": {"key": str(certs / "server-enc.key")}}, "tls.key",
        "private key '%s' is encrypted; set tls.key_password_file" % (certs / "server-enc.key"))


def test_check_reports_missing_key_password_file(tmp_path, certs):
    missing = tmp_path / "missing.pass"
    assert_check_error(
        tmp_path, certs,
        {"tls": {"key": str(certs / "server-enc.key"), "key_password_file": str(missing)}},
        "tls.key_password_file", "cannot read '%s': No such file or directory" % missing)


def test_check_refuses_empty_key_password(tmp_path, certs):
    empty = tmp_path / "empty.pass"
    empty.write_text("\n")
    assert_check_error(
        tmp_path, certs,
        {"tls": {"key": str(certs / "server-enc.key"), "key_password_file": str(empty)}},
        "tls.key_password_file", "'%s' holds an empty password" % empty)


# --- PKCS#12 -----------------------------------------------------------------------------------


def test_pkcs12_keystore_with_password_serves_pyro_clients_and_its_chain(make_stack, certs):
    stack = make_stack(p12_overrides(certs, "server.p12", certs / "server-p12.pass"))
    r = stack.client("echo")
    assert r["ok"], r
    assert r["result"] == "hello"
    # The keystore's CA certificate is sent as the chain, after the leaf.
    assert served_chain(stack.port, certs) == [pem_body(certs / "server.crt"),
                                               pem_body(certs / "ca.crt")]


def test_pkcs12_keystore_without_password_serves_pyro_clients(make_stack, certs):
    stack = make_stack(p12_overrides(certs, "server-nopass.p12"))
    r = stack.client("echo")
    assert r["ok"], r
    with stack.tls_socket() as s:
        presented = s.getpeercert(binary_form=True)
    assert presented == ssl.PEM_cert_to_DER_cert((certs / "server.crt").read_text())


def test_check_reports_wrong_pkcs12_password(tmp_path, certs):
    pw = tmp_path / "wrong.pass"
    pw.write_text("not the password\n")
    assert_check_error(
        tmp_path, certs, p12_overrides(certs, "server.p12", pw), "tls.pkcs12_password_file",
        "cannot decrypt the keystore '%s' with the password in '%s'" % (certs / "server.p12", pw))


def test_check_reports_pkcs12_password_missing(tmp_path, certs):
    assert_check_error(
        tmp_path, certs, p12_overrides(certs, "server.p12"), "tls.pkcs12",
        "keystore '%s' has a password; set tls.pkcs12_password_file" % (certs / "server.p12"))


def test_check_explains_which_pkcs12_files_boringssl_reads(tmp_path, certs):
    assert_check_error(
        tmp_path, certs, p12_overrides(certs, "server-nomac.p12"), "tls.pkcs12",
        "cannot read the PKCS#12 keystore '%s': MISSING_MAC (BoringSSL reads PKCS#12 made with "
        "`openssl pkcs12 -export` (OpenSSL 3 defaults: AES-256-CBC, PBKDF2, HMAC-SHA256 MAC; or "
        "-legacy), with a MAC: not with -nomac)" % (certs / "server-nomac.p12"))


def test_check_refuses_pkcs12_next_to_cert_and_key(tmp_path, certs):
    rc, err, text, path = check(tmp_path, certs, {"tls": {"pkcs12": str(certs / "server.p12")}})
    assert rc == 2, (rc, err)
    assert "%s:%s: tls: give either cert and key, or pkcs12, not both" % (
        path, map_mark(text, "tls")) in err.splitlines(), err


# --- TLS 1.2 ciphers ---------------------------------------------------------------------------


def test_tls12_client_negotiates_the_configured_cipher(make_stack):
    stack = make_stack({"tls": {"min_version": Quoted("1.2"),
                                "ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384"}})
    r = stack.client("echo", extra=["--tls-max", "1.2"])
    assert r["ok"], r
    [line] = stack.pg.logs(event="conn_open")
    assert "1.2" in line["tls_version"]
    assert line["cipher"] == "ECDHE-ECDSA-AES256-GCM-SHA384"


def test_tls12_client_offering_only_other_ciphers_is_refused(make_stack, certs):
    stack = make_stack({"tls": {"ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384"}})
    ctx = tls_context(certs, max_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305")
    line, err = assert_handshake_refused(stack, ctx, "no_shared_cipher")
    assert "HANDSHAKE_FAILURE" in err, err
    assert "NO_SHARED_CIPHER" in line["detail"], line


def test_tls13_clients_are_not_limited_by_tls12_ciphers(make_stack):
    # BoringSSL's TLS 1.3 suites are fixed; tls.ciphers only narrows TLS 1.2.
    stack = make_stack({"tls": {"ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384"}})
    r = stack.client("echo")
    assert r["ok"], r
    [line] = stack.pg.logs(event="conn_open")
    assert "1.3" in line["tls_version"]


def test_check_reports_unknown_cipher(tmp_path, certs):
    assert_check_error(tmp_path, certs, {"tls": {"ciphers": "FOO"}}, "tls.ciphers",
                       "unknown or unusable cipher list 'FOO'")


def test_check_explains_tls13_suites_are_not_configurable(tmp_path, certs):
    assert_check_error(
        tmp_path, certs,
        {"tls": {"ciphers": ["ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_AES_256_GCM_SHA384"]}},
        "tls.ciphers",
        "'TLS_AES_256_GCM_SHA384' is a TLS 1.3 suite: BoringSSL does not make TLS 1.3 suites "
        "configurable (it always offers AES-GCM and ChaCha20-Poly1305); list TLS 1.2 ciphers only")


def test_check_refuses_ciphers_the_server_key_cannot_use(tmp_path, certs):
    # server.key is ECDSA: an RSA-only list would leave TLS 1.2 clients without a cipher.
    assert_check_error(
        tmp_path, certs, {"tls": {"ciphers": "ECDHE-RSA-AES128-GCM-SHA256"}}, "tls.ciphers",
        "no cipher in 'ECDHE-RSA-AES128-GCM-SHA256' can be used with the server's ECDSA key")


def test_check_refuses_ciphers_when_only_tls13_is_allowed(tmp_path, certs):
    assert_check_error(
        tmp_path, certs,
        {"tls": {"min_version": Quoted("1.3"), "ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384"}},
        "tls.ciphers", "applies to TLS 1.2 only, and min_version is \"1.3\"")


# --- curves ------------------------------------------------------------------------------------


def test_client_offering_only_other_curves_is_refused(make_stack, certs):
    stack = make_stack({"tls": {"curves": ["P-384"]}})
    # Python's ssl cannot limit a client to X25519; openssl s_client can.
    rc, out = s_client(stack.port, certs, "-groups", "X25519:P-256")
    assert rc != 0, out
    assert "alert handshake failure" in out, out
    [line] = stack.pg.wait_log(event="tls_fail", reason="no_shared_cipher")
    assert "NO_SHARED_GROUP" in line["detail"], line
    assert stack.pg.logs(event="conn_open") == []
    stack.pg.settle()
    stack.backend.assert_received_nothing()


def test_client_with_the_configured_curve_is_served(make_stack, certs):
    stack = make_stack({"tls": {"curves": ["P-384"]}})
    ctx = tls_context(certs)
    ctx.set_ecdh_curve("secp384r1")
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() == "TLSv1.3"
    stack.pg.wait_log(event="conn_open")


def test_x25519_only_serves_pyro_clients(make_stack):
    stack = make_stack({"tls": {"curves": ["X25519"]}})
    r = stack.client("echo")
    assert r["ok"], r


def test_check_reports_unknown_curve(tmp_path, certs):
    assert_check_error(
        tmp_path, certs, {"tls": {"curves": ["X25519", "P-999"]}}, "tls.curves",
        "unknown curve in 'X25519:P-999' (BoringSSL knows X25519, P-256, P-384, P-521)")
