"""Only holders of a client certificate from the configured CA, valid now and not revoked, get a
TLS session; every refusal is a `tls_fail` log line and the daemon receives nothing."""

import hashlib
import socket
import ssl
import time

from conftest import read_until_closed

COMMUNICATION_ERRORS = ("Pyro4.errors.CommunicationError", "Pyro4.errors.ConnectionClosedError")


def assert_tls_refused(stack, r, reason, alert):
    assert not r["ok"], "the client got through: %r" % r
    assert r["exc_type"] in COMMUNICATION_ERRORS, r
    # The client learns why from the TLS alert pyroguard sent, named by its own TLS library.
    assert alert in r["exc_msg"], r
    [line] = stack.pg.wait_log(event="tls_fail", reason=reason)
    assert line["listener"] == "app"
    assert line["peer"].startswith("127.0.0.1:")
    assert isinstance(line["conn"], int)
    assert stack.pg.logs(event="conn_open") == []
    stack.pg.settle()
    stack.backend.assert_received_nothing()
    return line


def test_client_without_certificate_is_refused_at_handshake(stack):
    r = stack.client("echo", cert=None)
    assert_tls_refused(stack, r, "no_client_certificate", "TLSV13_ALERT_CERTIFICATE_REQUIRED")


def test_client_certificate_from_another_ca_is_refused(stack):
    r = stack.client("echo", cert="other-client")
    assert_tls_refused(stack, r, "unknown_ca", "TLSV1_ALERT_UNKNOWN_CA")


def test_expired_client_certificate_is_refused(stack):
    r = stack.client("echo", cert="expired-client")
    assert_tls_refused(stack, r, "certificate_expired", "SSLV3_ALERT_CERTIFICATE_EXPIRED")


def test_not_yet_valid_client_certificate_is_refused(stack):
    r = stack.client("echo", cert="future-client")
    assert_tls_refused(stack, r, "certificate_not_yet_valid", "SSLV3_ALERT_CERTIFICATE_EXPIRED")


def test_revoked_client_certificate_is_refused(stack):
    r = stack.client("echo", cert="revoked-client")
    assert_tls_refused(stack, r, "certificate_revoked", "SSLV3_ALERT_CERTIFICATE_REVOKED")


def test_revoked_client_certificate_is_accepted_when_no_crl_is_configured(make_stack):
    # Pins down that the refusal above really comes from the CRL.
    stack = make_stack({"tls": {"crl": None}})
    r = stack.client("echo", cert="revoked-client")
    assert r["ok"], r


def test_silent_tcp_client_is_closed_after_handshake_timeout(make_stack):
    stack = make_stack({"limits": {"handshake_timeout": 600}})
    s = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
    t0 = time.monotonic()
    try:
        data, how = read_until_closed(s, timeout=10)
    finally:
        s.close()
    elapsed = time.monotonic() - t0
    assert how in ("eof", "reset"), how
    assert data == b""
    assert 0.4 <= elapsed < 5, elapsed
    stack.pg.wait_log(event="tls_fail", reason="handshake_timeout")
    stack.pg.settle()
    stack.backend.assert_received_nothing()


def test_tls12_only_client_is_served_with_default_min_version(stack):
    r = stack.client("echo", extra=["--tls-max", "1.2"])
    assert r["ok"], r
    [line] = stack.pg.logs(event="conn_open")
    assert "1.2" in line["tls_version"]


def test_tls12_only_client_is_refused_when_min_version_is_13(make_stack):
    stack = make_stack({"tls": {"min_version": "1.3"}})
    r = stack.client("echo", extra=["--tls-max", "1.2"])
    assert_tls_refused(stack, r, "protocol_version", "TLSV1_ALERT_PROTOCOL_VERSION")


def test_tls13_client_is_served_when_min_version_is_13(make_stack):
    stack = make_stack({"tls": {"min_version": "1.3"}})
    r = stack.client("echo")
    assert r["ok"], r
    [line] = stack.pg.logs(event="conn_open")
    assert "1.3" in line["tls_version"]


def test_rsa_server_certificate_serves_pyro_clients(make_stack, certs):
    stack = make_stack({"tls": {"cert": str(certs / "server-rsa.crt"), "key": str(certs / "server-rsa.key")}})
    with stack.tls_socket() as s:
        presented = s.getpeercert(binary_form=True)
    expected = ssl.PEM_cert_to_DER_cert((certs / "server-rsa.crt").read_text())
    assert presented == expected
    r = stack.client("echo")
    assert r["ok"], r
    assert r["result"] == "hello"


def _hexnorm(s):
    return s.replace(":", "").lower().lstrip("0")


def test_connection_log_names_the_client_certificate(stack, certs):
    r = stack.client("echo")
    assert r["ok"], r
    stack.pg.settle()
    [opened] = stack.pg.logs(event="conn_open")
    assert opened["listener"] == "app"
    assert opened["peer"].startswith("127.0.0.1:")
    assert opened["tls_version"] and opened["cipher"]
    assert "CN=billing-client" in opened["subject"] and "O=Example" in opened["subject"]
    assert "pyroguard dev CA" in opened["issuer"]
    assert "URI:spiffe://example.org/ns/billing/client" in opened["sans"]
    assert "DNS:client.example" in opened["sans"]
    pem = (certs / "client.crt").read_text()
    der = ssl.PEM_cert_to_DER_cert(pem)
    assert opened["sha256"].replace(":", "").lower() == hashlib.sha256(der).hexdigest()
    decoded = ssl._ssl._test_decode_cert(str(certs / "client.crt"))
    assert _hexnorm(opened["serial"]) == _hexnorm(decoded["serialNumber"])
    [closed] = stack.pg.logs(event="conn_close", conn=opened["conn"])
    assert closed["bytes_in"] > 0 and closed["bytes_out"] > 0
    assert closed["duration_ms"] >= 0


def test_every_log_line_is_a_json_object_with_ts_level_event(stack):
    stack.client("echo")
    stack.client("echo", cert=None)
    stack.pg.settle()
    lines = stack.pg.raw_log_lines()
    parsed = stack.pg.logs()
    assert len(parsed) == len(lines), "non-JSON lines on stderr:\n%s" % "\n".join(lines)
    for d in parsed:
        assert {"ts", "level", "event"} <= set(d), d
    [listening] = stack.pg.logs(event="listening")
    assert listening["listener"] == "app"
    assert listening["listen"] == "127.0.0.1:%d" % stack.port
    assert listening["backend"] == "127.0.0.1:%d" % stack.backend.port
