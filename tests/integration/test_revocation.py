"""Certificates pinned out by pyroguard's own deny lists, without waiting for a CRL: the leaf's
serial in `tls.deny_serials`, or the SHA-256 fingerprint of any certificate of the chain in
`tls.deny_sha256`. A denied client fails the TLS handshake (`tls_fail` reason
`certificate_denied`) and the daemon never sees a connection; other clients are still served.
(CRL revocation itself is tested in test_tls.py.)"""

import subprocess

import pytest

from conftest import Quoted
from test_tls_knobs import assert_check_error

COMMUNICATION_ERRORS = ("Pyro4.errors.CommunicationError", "Pyro4.errors.ConnectionClosedError")


def openssl_x509(path, *opts):
    """One `openssl x509 -noout` value, the text after '=' ("serial=4F3A…" -> "4F3A…")."""
    out = subprocess.run(["openssl", "x509", "-noout", "-in", str(path)] + list(opts),
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return out.strip().split("=", 1)[1]


def serial_of(certs, name):
    return openssl_x509(certs / ("%s.crt" % name), "-serial")


def sha256_of(certs, name):
    """As openssl prints it: upper-case pairs separated by ':'."""
    return openssl_x509(certs / ("%s.crt" % name), "-fingerprint", "-sha256")


def colon_lower(hexdigits):
    """'4F3A1' -> '00:04:f3:a1': lower case, ':' between bytes, a leading zero byte."""
    h = hexdigits if len(hexdigits) % 2 == 0 else "0" + hexdigits
    return ":".join(["00"] + [h[i:i + 2].lower() for i in range(0, len(h), 2)])


def normalised_serial(hexdigits):
    """A serial as pyroguard writes it: upper case, no ':', no leading zeros."""
    return hexdigits.replace(":", "").upper().lstrip("0") or "0"


def normalised_fingerprint(hexdigits):
    """A SHA-256 fingerprint as pyroguard writes it: all 64 digits, upper case, no ':'."""
    h = hexdigits.replace(":", "").upper()
    assert len(h) == 64, hexdigits
    return h


def assert_denied(stack, r, detail):
    assert not r["ok"], "the client got through: %r" % r
    assert r["exc_type"] in COMMUNICATION_ERRORS, r
    # The client learns it from the TLS alert.
    assert "ALERT_BAD_CERTIFICATE" in r["exc_msg"], r
    [line] = stack.pg.wait_log(event="tls_fail", reason="certificate_denied")
    assert line["detail"] == detail, line
    assert line["listener"] == "app"
    assert stack.pg.logs(event="conn_open") == []
    stack.pg.settle()
    stack.backend.assert_received_nothing()


@pytest.mark.parametrize("form", ["as_openssl_prints_it", "colon_lower_case"])
def test_client_whose_serial_is_denied_is_refused_at_handshake(make_stack, certs, form):
    serial = serial_of(certs, "client")
    written = serial if form == "as_openssl_prints_it" else colon_lower(serial)
    stack = make_stack({"tls": {"deny_serials": [Quoted(written)]}})
    r = stack.client("echo", cert="client")
    assert_denied(stack, r, "certificate serial %s is in tls.deny_serials" % normalised_serial(serial))


def test_deny_serials_leaves_other_clients_served(make_stack, certs):
    stack = make_stack({"tls": {"deny_serials": [Quoted(serial_of(certs, "client"))]}})
    r = stack.client("echo", cert="reader")
    assert r["ok"], r
    [line] = stack.pg.logs(event="conn_open")
    assert "CN=inventory-reader" in line["subject"]
    assert stack.pg.logs(event="tls_fail") == []


@pytest.mark.parametrize("form", ["as_openssl_prints_it", "lower_case_without_colons"])
def test_client_whose_fingerprint_is_denied_is_refused_at_handshake(make_stack, certs, form):
    fp = sha256_of(certs, "client")
    written = fp if form == "as_openssl_prints_it" else fp.replace(":", "").lower()
    stack = make_stack({"tls": {"deny_sha256": [Quoted(written)]}})
    r = stack.client("echo", cert="client")
    assert_denied(stack, r, "certificate fingerprint %s is in tls.deny_sha256" % normalised_fingerprint(fp))


def test_deny_sha256_leaves_other_clients_served(make_stack, certs):
    stack = make_stack({"tls": {"deny_sha256": [Quoted(sha256_of(certs, "client"))]}})
    r = stack.client("echo", cert="reader")
    assert r["ok"], r
    assert stack.pg.logs(event="tls_fail") == []


def test_denying_a_ca_fingerprint_refuses_every_client_it_signed(make_stack, certs):
    fp = sha256_of(certs, "ca")
    stack = make_stack({"tls": {"deny_sha256": [Quoted(fp)]}})
    r = stack.client("echo", cert="reader")
    assert_denied(stack, r, "CA certificate fingerprint %s (chain depth 1) is in tls.deny_sha256"
                  % normalised_fingerprint(fp))


def test_serial_of_a_ca_does_not_deny_the_clients_it_signed(make_stack, certs):
    # deny_serials names leaf certificates only; a CA is pinned out by its fingerprint.
    stack = make_stack({"tls": {"deny_serials": [Quoted(serial_of(certs, "ca"))]}})
    r = stack.client("echo", cert="client")
    assert r["ok"], r


def test_check_reports_a_deny_serial_that_is_not_hex(tmp_path, certs):
    assert_check_error(tmp_path, certs, {"tls": {"deny_serials": [Quoted("1A2B"), "serial-7"]}},
                       "tls.deny_serials[1]", "'serial-7' is not a certificate serial in hex",
                       item="serial-7")


def test_check_reports_a_deny_sha256_that_is_not_a_fingerprint(tmp_path, certs):
    short = sha256_of(certs, "client")[:-3]
    assert_check_error(tmp_path, certs, {"tls": {"deny_sha256": [Quoted(short)]}},
                       "tls.deny_sha256[0]",
                       "'%s' is not a SHA-256 fingerprint (64 hex digits, ':' separators allowed)"
                       % short, item='"' + short)
