"""Reload (SIGHUP, reload.watch) and drain (SIGTERM/SIGINT) of the real pyroguard binary in front of
the real Pyro4 daemon.

A reload builds a whole new state (configuration, TLS context, policy): new connections use the
new TLS material, open connections keep theirs, and every later request -- on open connections
too -- is judged by the new policy. A broken configuration, or one that changes what cannot
change without a restart, is refused and the running state stays in force.

A drain stops accepting, lets calls in flight finish within limits.drain_timeout, closes the
rest and exits 0.
"""

import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import LOG_TIMEOUT, Session, read_until_closed, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import kubelet_volume  # noqa: E402  (a Secret volume as kubelet writes it)


ECHO_ONLY = [{"name": "everyone", "match": {"cn": "**"},
              "allow": [{"object": "thing", "methods": ["echo", "sleep"]}]}]
COUNT_ONLY = [{"name": "everyone", "match": {"cn": "**"},
               "allow": [{"object": "thing", "methods": ["count", "sleep"]}]}]


def reload(stack, trigger="SIGHUP", expect="reloaded"):
    """Send SIGHUP (unless the watch triggers it) and wait for the reloaded/reload_failed line."""
    before = len(stack.pg.logs(event=expect))
    if trigger == "SIGHUP":
        stack.pg.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(stack.pg.logs(event=expect)) > before, LOG_TIMEOUT,
               what="a %r log line" % expect)
    return stack.pg.logs(event=expect)[-1]


def set_clients(stack, clients):
    stack.pg.config["clients"] = clients
    stack.pg.write_config()


def peer_cert_serial(stack):
    """The serial of the certificate a fresh TLS connection is served (upper-case hex)."""
    with stack.tls_socket() as s:
        der = s.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der,
                         capture_output=True, check=True).stdout.decode()
    return out.strip().split("=", 1)[1].lstrip("0")


def mint_server_cert(certs, directory, name):
    """Another server certificate from the same CA (same SANs, new key and serial)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, csr, crt, ext = (directory / (name + s) for s in (".key", ".csr", ".crt", ".ext"))
    ext.write_text("subjectAltName = DNS:localhost, IP:127.0.0.1\nextendedKeyUsage = serverAuth\n")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", str(key)], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-new", "-key", str(key), "-subj", "/O=Example/CN=localhost",
                    "-out", str(csr)], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(certs / "ca.crt"),
                    "-CAkey", str(certs / "ca.key"), "-CAcreateserial", "-days", "30",
                    "-extfile", str(ext), "-out", str(crt)], check=True, capture_output=True)
    return crt, key


# --- reload ------------------------------------------------------------------------------------


def test_sighup_reload_judges_later_requests_on_open_connections_by_the_new_policy(make_stack):
    stack = make_stack({"clients": ECHO_ONLY})
    open_session = Session(stack)
    assert open_session.call("echo", "before") == (True, "before")

    set_clients(stack, COUNT_ONLY)
    line = reload(stack)
    assert line["generation"] == 2 and line["trigger"] == "SIGHUP", line

    ok, exc = open_session.call("echo", "after-on-open")
    assert not ok and "not allowed" in str(exc), exc
    ok, n = open_session.call("count")
    assert ok, n
    fresh = Session(stack)
    ok, exc = fresh.call("echo", "after-on-fresh")
    assert not ok and "not allowed" in str(exc), exc
    names = [n for (_, kind, n) in stack.backend.resolved_names() if kind == "method"]
    assert names.count("echo") == 1, names
    stack.pg.wait_log(event="refused", count=2)
    [refused, _] = stack.pg.logs(event="refused")
    assert refused["reason"] == "not_allowed" and refused["rule"] == "everyone", refused


def test_reload_of_a_broken_configuration_is_refused_and_the_old_one_keeps_serving(make_stack):
    stack = make_stack({"clients": ECHO_ONLY})
    session = Session(stack)
    good = stack.pg.config_path.read_text()
    stack.pg.config_path.write_text(good + "\nlisteners: [\n")
    line = reload(stack, expect="reload_failed")
    assert line["generation"] == 1 and "invalid" in line["detail"], line
    errors = stack.pg.logs(event="reload_error")
    assert errors and "YAML syntax error" in errors[-1]["detail"], errors
    assert session.call("echo", "still") == (True, "still")
    assert Session(stack).call("echo", "fresh") == (True, "fresh")


def test_reload_that_changes_a_listening_address_needs_a_restart(make_stack):
    stack = make_stack({"clients": ECHO_ONLY})
    stack.pg.config["listeners"][0]["listen"] = "127.0.0.1:1"
    stack.pg.write_config()
    line = reload(stack, expect="reload_failed")
    assert line["key"] == "listeners", line
    assert Session(stack).call("echo", "x") == (True, "x")


def test_certificate_rotation_serves_new_connections_and_keeps_open_ones(make_stack, certs,
                                                                         tmp_path):
    stack = make_stack({"clients": ECHO_ONLY})
    old_serial = peer_cert_serial(stack)
    open_session = Session(stack)
    crt, key = mint_server_cert(certs, tmp_path / "rotated", "server2")
    stack.pg.config["tls"]["cert"] = str(crt)
    stack.pg.config["tls"]["key"] = str(key)
    stack.pg.write_config()
    reload(stack)
    new_serial = peer_cert_serial(stack)
    assert new_serial != old_serial
    expected = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-serial"],
                              capture_output=True, check=True).stdout.decode()
    assert new_serial == expected.strip().split("=", 1)[1].lstrip("0")
    assert open_session.call("echo", "open") == (True, "open")


def test_client_ca_bundle_change_admits_clients_of_the_added_ca(make_stack, certs, tmp_path):
    # No CRL here: with tls.crl every CA of a chain needs one, and other-ca publishes none.
    stack = make_stack({"clients": ECHO_ONLY, "tls": {"crl": None}})
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        Session(stack, cert="other-client")
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes((certs / "ca.crt").read_bytes() + (certs / "other-ca.crt").read_bytes())
    stack.pg.config["tls"]["client_ca"] = str(bundle)
    stack.pg.write_config()
    reload(stack)
    assert Session(stack, cert="other-client").call("echo", "other") == (True, "other")


def test_watched_configuration_file_reloads_by_itself(make_stack):
    stack = make_stack({"clients": ECHO_ONLY, "reload": {"watch": True, "poll_interval": 200}})
    session = Session(stack)
    set_clients(stack, COUNT_ONLY)
    line = reload(stack, trigger="watch")
    assert line["trigger"] == "watch", line
    ok, exc = session.call("echo", "x")
    assert not ok and "not allowed" in str(exc)


def test_clients_calling_through_ten_reloads_see_no_failed_call(make_stack, certs, tmp_path):
    """Persistent and fresh connections call continuously while pyroguard is reloaded ten times:
    certificate rotations, CA bundle changes, policy changes and a broken configuration."""
    stack = make_stack({"clients": ECHO_ONLY, "tls": {"crl": None}})
    failures, calls = [], [0]
    stop = threading.Event()

    def persistent():
        try:
            s = Session(stack)
            while not stop.is_set():
                r = s.call("echo", "p")
                calls[0] += 1
                if r != (True, "p"):
                    failures.append(("persistent", r))
        except Exception as e:  # any error is a failed call
            failures.append(("persistent", repr(e)))

    def fresh():
        while not stop.is_set():
            try:
                s = Session(stack)
                r = s.call("echo", "f")
                s.close()
                calls[0] += 1
                if r != (True, "f"):
                    failures.append(("fresh", r))
            except Exception as e:
                failures.append(("fresh", repr(e)))

    workers = [threading.Thread(target=persistent), threading.Thread(target=fresh)]
    for w in workers:
        w.start()
    crt2, key2 = mint_server_cert(certs, tmp_path / "rot", "server2")
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes((certs / "ca.crt").read_bytes() + (certs / "other-ca.crt").read_bytes())
    tls = stack.pg.config["tls"]
    extra_rule = {"name": "readers", "match": {"ou": "readers"},
                  "allow": [{"object": "thing", "methods": ["count"]}]}
    steps = [
        ("cert", lambda: tls.update(cert=str(crt2), key=str(key2))),
        ("ca", lambda: tls.update(client_ca=str(bundle))),
        ("policy", lambda: stack.pg.config.update(clients=[extra_rule] + ECHO_ONLY)),
        ("cert", lambda: tls.update(cert=str(certs / "server.crt"), key=str(certs / "server.key"))),
        ("broken", None),
        ("ca", lambda: tls.update(client_ca=str(certs / "ca.crt"))),
        ("policy", lambda: stack.pg.config.update(clients=ECHO_ONLY)),
        ("cert", lambda: tls.update(cert=str(crt2), key=str(key2))),
        ("log", lambda: stack.pg.config["log"].update(calls="all")),
        ("policy", lambda: stack.pg.config.update(clients=ECHO_ONLY + [extra_rule])),
    ]
    ok_reloads = 0
    try:
        for kind, change in steps:
            time.sleep(0.3)
            if kind == "broken":
                good = stack.pg.config_path.read_text()
                stack.pg.config_path.write_text(good.replace("clients:", "clients: [", 1))
                reload(stack, expect="reload_failed")
                stack.pg.config_path.write_text(good)
                continue
            change()
            stack.pg.write_config()
            reload(stack)
            ok_reloads += 1
        time.sleep(0.3)
    finally:
        stop.set()
        for w in workers:
            w.join(30)
    assert failures == [], failures[:5]
    assert calls[0] > 20, calls
    assert stack.pg.logs(event="reloaded")[-1]["generation"] == 1 + ok_reloads

    # And a policy change does take effect.
    set_clients(stack, COUNT_ONLY)
    reload(stack)
    ok, exc = Session(stack).call("echo", "x")
    assert not ok and "not allowed" in str(exc)


# --- drain -------------------------------------------------------------------------------------


def connection_refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except OSError:
        return True


def test_sigterm_lets_the_call_in_flight_finish_then_exits_0(make_stack):
    stack = make_stack({"clients": ECHO_ONLY, "limits": {"drain_timeout": 10000}})
    session = Session(stack, timeout=20)
    idle = Session(stack)
    session.send("sleep", 1.5)
    time.sleep(0.3)
    stack.pg.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: connection_refused(stack.port), LOG_TIMEOUT, what="accepting to stop")
    # The idle session is closed at once; the busy one gets its answer, then is closed.
    _, how = read_until_closed(idle.sock, timeout=5)
    assert how in ("eof", "reset"), how
    ok, value = session.receive()
    assert ok, value
    _, how = read_until_closed(session.sock, timeout=5)
    assert how in ("eof", "reset"), how
    assert stack.pg.proc.wait(timeout=10) == 0
    [line] = stack.pg.logs(event="shutdown")
    assert line["signal"] == "SIGTERM", line
    assert not stack.pg.logs(event="drain_timeout")


def test_drain_timeout_closes_a_call_that_does_not_finish(make_stack):
    stack = make_stack({"clients": ECHO_ONLY, "limits": {"drain_timeout": 500}})
    session = Session(stack, timeout=20)
    session.send("sleep", 5)
    time.sleep(0.3)
    started = time.monotonic()
    stack.pg.proc.send_signal(signal.SIGTERM)
    _, how = read_until_closed(session.sock, timeout=10)
    assert how in ("eof", "reset"), how
    assert time.monotonic() - started < 4
    assert stack.pg.proc.wait(timeout=10) == 0
    assert stack.pg.logs(event="drain_timeout")


def test_a_second_signal_stops_without_waiting(make_stack):
    stack = make_stack({"clients": ECHO_ONLY, "limits": {"drain_timeout": 60000}})
    session = Session(stack, timeout=20)
    session.send("sleep", 5)
    time.sleep(0.3)
    stack.pg.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    stack.pg.proc.send_signal(signal.SIGINT)
    _, how = read_until_closed(session.sock, timeout=4)
    assert how in ("eof", "reset"), how
    assert stack.pg.proc.wait(timeout=10) == 0


def test_a_certificate_rotated_in_a_kubernetes_secret_volume_is_served_without_a_restart(
        make_stack, certs, tmp_path):
    """What cert-manager renewing the Secret behind deploy/kubernetes looks like to pyroguard:
    kubelet swaps the volume's ..data symlink; reload.watch notices and the next handshake gets
    the new certificate, while a connection opened before keeps working."""
    volume = tmp_path / "secret"
    kubelet_volume.publish(volume, {"tls.crt": certs / "server.crt",
                                    "tls.key": certs / "server.key",
                                    "ca.crt": certs / "ca.crt"}, 1)
    stack = make_stack({"tls": {"cert": str(volume / "tls.crt"), "key": str(volume / "tls.key"),
                                "client_ca": str(volume / "ca.crt")},
                        "reload": {"watch": True, "poll_interval": 200}})
    before = peer_cert_serial(stack)
    session = Session(stack)
    assert session.call("echo", "before") == (True, "before")

    crt, key = mint_server_cert(certs, tmp_path / "renewed", "server2")
    kubelet_volume.publish(volume, {"tls.crt": crt, "tls.key": key,
                                    "ca.crt": certs / "ca.crt"}, 2)
    line = reload(stack, trigger="watch")
    assert line["trigger"] == "watch", line

    want = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-serial"],
                          capture_output=True, check=True).stdout.decode()
    after = peer_cert_serial(stack)
    assert after == want.strip().split("=", 1)[1].lstrip("0") and after != before
    assert session.call("echo", "after") == (True, "after")
    assert Session(stack).call("echo", "new") == (True, "new")
