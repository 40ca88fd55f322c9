"""The admin endpoint (admin.listen) of the real pyroguard binary in front of the real Pyro4
daemon: /healthz, /readyz (backend probe, drain) and /metrics read with Prometheus' own Python
parser (Debian's python3-prometheus-client) after known traffic from real Pyro4 clients, with
one worker and with two."""

import http.client
import re
import signal
import subprocess
import time
from datetime import datetime, timezone

import pytest

from conftest import (LOG_TIMEOUT, MSG_CONNECTOK, PYROGUARD_BIN, SCALE, Session, deep_merge,
                      free_port, read_vector, recv_frames, wait_until)

parser = pytest.importorskip(
    "prometheus_client.parser", reason="apt-get install python3-prometheus-client")


# The default policy of conftest, but only for O=Example: the `stranger` certificate (O=Other)
# then matches no rule.
EXAMPLE_ONLY = [{
    "name": "everyone",
    "match": {"o": "Example"},
    "allow": [
        {"object": "**", "methods": ["*"], "get": ["*"], "set": ["*"]},
        {"object": "Pyro.Daemon", "methods": ["registered", "info"]},
    ],
}]

OUTCOMES = ["client_closed", "backend_closed", "idle_timeout", "handshake_timeout", "tls_fail",
            "refused", "backend_unavailable", "shutdown", "error", "other"]
TLS_REASONS = ["no_client_certificate", "unknown_ca", "certificate_expired",
               "certificate_not_yet_valid", "certificate_revoked", "certificate_denied",
               "certificate_invalid", "protocol_version", "no_shared_cipher", "not_tls",
               "handshake_timeout", "peer_closed", "tls_error", "other"]
REFUSALS = ["no_matching_rule", "identity_invalid", "denied_by_rule", "not_allowed",
            "object_not_allowed", "name_too_long", "malformed_call", "not_pyro",
            "protocol_version", "bad_checksum", "negative_length", "message_too_large",
            "bad_annotations", "unexpected_message", "serializer_not_allowed",
            "compression_denied", "inflate_failed", "inflated_too_large", "undecodable",
            "dotted_name", "private_name", "invalid_name", "stream_not_owned",
            "hmac_not_rewritable", "identity_too_large", "backend_unavailable",
            "upstream_tls_failed", "other"]


# --- helpers -----------------------------------------------------------------------------------


def admin_stack(make_stack, overrides=None, **kw):
    """A started stack with the admin endpoint on a free loopback port (stack.admin_port)."""
    port = free_port()
    stack = make_stack(deep_merge({"admin": {"listen": "127.0.0.1:%d" % port}}, overrides or {}),
                       **kw)
    stack.admin_port = port
    return stack


def http_request(port, path, method="GET", timeout=5):
    """One request to the admin endpoint: (status, body text, headers with lower-case names).
    Text answers end with a newline; it is checked here and stripped."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        body = r.read().decode("utf-8")
        if path != "/metrics" and body:
            assert body.endswith("\n") and body.count("\n") == 1, body
            body = body[:-1]
        return r.status, body, {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def wait_ready(stack, timeout=LOG_TIMEOUT):
    """Poll /readyz until 200 (the backend probe runs once a second)."""
    last = []

    def ready():
        status, body, _ = http_request(stack.admin_port, "/readyz")
        last[:] = [status, body]
        return status == 200

    try:
        wait_until(ready, timeout, interval=0.1, what="/readyz 200")
    except AssertionError:
        raise AssertionError("/readyz never answered 200 within %ss; last answer: %r"
                             % (timeout, last))


def scrape(stack):
    """GET /metrics, parsed by prometheus_client: {(name, sorted labels): value}."""
    status, text, headers = http_request(stack.admin_port, "/metrics")
    assert status == 200, (status, text)
    assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    samples = {}
    for fam in parser.text_string_to_metric_families(text):
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, "series written twice: %r" % (key,)
            samples[key] = s.value
    return samples


def value(samples, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, "missing %s%r in /metrics; have: %r" % (
        name, labels, sorted(k for k in samples if k[0] == name))
    return samples[key]


def series(samples, name):
    """{labels dict as a sorted tuple: value} of every series of |name|."""
    return {k[1]: v for k, v in samples.items() if k[0] == name}


def all_closed(stack):
    """Every conn_open has its conn_close, and every accepted connection is closed by metrics."""
    def done():
        opened = {l["conn"] for l in stack.pg.logs(event="conn_open")}
        closed = {l["conn"] for l in stack.pg.logs(event="conn_close")}
        return opened <= closed
    wait_until(done, LOG_TIMEOUT, what="every connection's conn_close")


def wait_metric(stack, pred, what, timeout=LOG_TIMEOUT):
    """Scrape until pred(samples) holds; returns those samples."""
    got = []

    def ok():
        got[:] = [scrape(stack)]
        return pred(got[0])

    wait_until(ok, timeout, interval=0.1, what=what)
    return got[0]


def reload(stack, expect):
    before = len(stack.pg.logs(event=expect))
    stack.pg.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(stack.pg.logs(event=expect)) > before, LOG_TIMEOUT,
               what="a %r log line" % expect)


def openssl_enddate_unix(cert_path):
    out = subprocess.run(["openssl", "x509", "-in", str(cert_path), "-noout", "-enddate"],
                         capture_output=True, check=True, text=True).stdout.strip()
    # notAfter=Dec 26 23:39:08 2026 GMT
    text = out.split("=", 1)[1]
    return int(datetime.strptime(text, "%b %d %H:%M:%S %Y GMT")
               .replace(tzinfo=timezone.utc).timestamp())


# --- /healthz and /readyz ----------------------------------------------------------------------


def test_healthz_is_ok_and_readyz_turns_ready_once_the_backend_probe_ran(make_stack):
    stack = admin_stack(make_stack)
    status, body, headers = http_request(stack.admin_port, "/healthz")
    assert (status, body) == (200, "ok")
    assert headers["connection"] == "close"
    wait_ready(stack)
    status, body, _ = http_request(stack.admin_port, "/readyz")
    assert (status, body) == (200, "ready")
    [line] = stack.pg.logs(event="admin_listening")
    assert str(stack.admin_port) in str(line), line


def test_readyz_names_the_backend_that_stopped_accepting_while_healthz_stays_ok(make_stack):
    stack = admin_stack(make_stack)
    wait_ready(stack)
    stack.backend.stop()
    expected = ("not ready: backend of listener 'app' (127.0.0.1:%d) is not accepting TCP: "
                % stack.backend.port)
    last = []

    def not_ready():
        last[:] = http_request(stack.admin_port, "/readyz")[:2]
        return last[0] == 503

    wait_until(not_ready, 5 * SCALE, interval=0.1, what="/readyz 503 after the backend stopped")
    status, body = last
    assert body.startswith(expected), body
    assert body == expected + "connection refused", body
    assert http_request(stack.admin_port, "/healthz")[:2] == (200, "ok")


def test_readyz_says_draining_while_a_call_in_flight_finishes_after_sigterm(make_stack):
    stack = admin_stack(make_stack, {"limits": {"drain_timeout": 10000}})
    wait_ready(stack)
    session = Session(stack, timeout=20)
    session.send("sleep", 3)
    wait_until(lambda: ("thing", "method", "sleep") in stack.backend.resolved_names(),
               LOG_TIMEOUT, what="the sleep call to reach the daemon")
    stack.pg.proc.send_signal(signal.SIGTERM)
    stack.pg.wait_log(event="shutdown")
    status, body, _ = http_request(stack.admin_port, "/readyz")
    assert (status, body) == (503, "not ready: draining: not accepting new connections")
    assert http_request(stack.admin_port, "/healthz")[:2] == (200, "ok")
    m = scrape(stack)
    assert value(m, "pyroguard_draining") == 1
    assert value(m, "pyroguard_connections_open") == 1
    # The call in flight still gets its answer, then pyroguard exits 0.
    assert session.receive() == (True, 3)
    assert stack.pg.proc.wait(timeout=10) == 0


# --- the admin endpoint answers nothing else ---------------------------------------------------


def test_admin_endpoint_refuses_other_methods_and_paths(make_stack):
    stack = admin_stack(make_stack)
    status, _, headers = http_request(stack.admin_port, "/metrics", method="POST")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    status, _, _ = http_request(stack.admin_port, "/healthz", method="DELETE")
    assert status == 405
    for path in ("/other", "/", "/metrics/", "/metrics?x=1", "/healthz/../metrics"):
        status, _, _ = http_request(stack.admin_port, path)
        assert status == 404, path
    status, body, headers = http_request(stack.admin_port, "/healthz", method="HEAD")
    assert (status, body) == (200, "")
    assert headers["content-length"] == "3"  # "ok\n"


# --- /metrics after known traffic --------------------------------------------------------------


def test_metrics_count_allowed_refused_and_failed_traffic_exactly(make_stack):
    stack = admin_stack(make_stack, {"clients": EXAMPLE_ONLY})
    allowed_clients = 3
    for i in range(allowed_clients):  # CONNECT + echo: two allowed requests each
        r = stack.client("echo", extra=["--token", "t%d" % i])
        assert r == {"ok": True, "result": "t%d" % i, "steps": []}, r
    r = stack.client("dotted")  # CONNECT allowed, INVOKE sub.echo refused (dotted_name)
    assert not r["ok"] and "contains a dot" in r["exc_msg"], r
    r = stack.client("echo", cert="stranger")  # no rule: CONNECTFAIL (no_matching_rule)
    assert not r["ok"] and "no client rule matches" in r["exc_msg"], r
    r = stack.client("echo", cert=None)  # no client certificate: the handshake fails
    assert not r["ok"], r
    r = stack.client("echo", cert="other-client")  # signed by another CA: the handshake fails
    assert not r["ok"], r
    stack.pg.wait_log(event="tls_fail", count=2)
    all_closed(stack)
    completed = allowed_clients + 2  # dotted and stranger completed their handshakes too
    assert len(stack.pg.logs(event="conn_open")) == completed

    m = wait_metric(stack, lambda m: value(m, "pyroguard_connections_open") == 0,
                    "connections_open back to 0")

    # requests_total{verdict, reason}
    allowed = 2 * allowed_clients + 1
    assert value(m, "pyroguard_requests_total", verdict="allowed", reason="allowed") == allowed
    refused = {"dotted_name": 1, "no_matching_rule": 1}
    for reason in REFUSALS:
        assert value(m, "pyroguard_requests_total", verdict="refused", reason=reason) == \
            refused.get(reason, 0), reason

    # requests_by_rule_total{rule, verdict}: rule="" is the client without a rule
    by_rule = {(dict(k)["rule"], dict(k)["verdict"]): v
               for k, v in series(m, "pyroguard_requests_by_rule_total").items()}
    assert by_rule == {("", "allowed"): 0, ("", "refused"): 1,
                       ("everyone", "allowed"): allowed, ("everyone", "refused"): 1}, by_rule

    # TLS: both failures by reason; the histogram counts completed handshakes only
    failures = {"no_client_certificate": 1, "unknown_ca": 1}
    for reason in TLS_REASONS:
        assert value(m, "pyroguard_tls_handshake_failures_total", reason=reason) == \
            failures.get(reason, 0), reason
    assert value(m, "pyroguard_tls_handshake_duration_seconds_count") == completed
    assert value(m, "pyroguard_tls_handshake_duration_seconds_bucket", le="+Inf") == completed
    assert value(m, "pyroguard_tls_handshake_duration_seconds_sum") > 0

    # connections_total{outcome}: one per connection made
    outcomes = {"client_closed": allowed_clients + 1, "refused": 1, "tls_fail": 2}
    for outcome in OUTCOMES:
        assert value(m, "pyroguard_connections_total", outcome=outcome) == \
            outcomes.get(outcome, 0), outcome
    assert value(m, "pyroguard_connections_open") == 0
    assert value(m, "pyroguard_connections_rejected_total") == 0
    assert value(m, "pyroguard_backend_dial_failures_total") == 0

    # bytes: client_to_backend is what was forwarded -- exactly what the daemon received (the
    # refused messages never reached it); backend_to_client is every byte the daemon answered,
    # passed on (pyroguard's own refusals are not counted: they did not come from the backend).
    c2b = value(m, "pyroguard_bytes_total", direction="client_to_backend")
    b2c = value(m, "pyroguard_bytes_total", direction="backend_to_client")
    assert c2b > 0 and b2c > 0
    assert c2b == stack.backend.total_bytes()
    closes = stack.pg.logs(event="conn_close")
    assert c2b < sum(l["bytes_in"] for l in closes)  # the refused call was not forwarded


def test_metrics_count_reloads_and_the_generation_in_use(make_stack):
    stack = admin_stack(make_stack)
    m = scrape(stack)
    assert value(m, "pyroguard_reloads_total", result="ok") == 0
    assert value(m, "pyroguard_reloads_total", result="failed") == 0
    assert value(m, "pyroguard_config_generation") == 1
    loaded_at = value(m, "pyroguard_config_loaded_timestamp_seconds")
    assert abs(loaded_at - time.time()) < 60, loaded_at

    time.sleep(1.1)  # the next load is in a later second
    reload(stack, "reloaded")
    good = stack.pg.config_path.read_text()
    stack.pg.config_path.write_text(good + "\nlisteners: [\n")
    reload(stack, "reload_failed")

    m = scrape(stack)
    assert value(m, "pyroguard_reloads_total", result="ok") == 1
    assert value(m, "pyroguard_reloads_total", result="failed") == 1
    assert value(m, "pyroguard_config_generation") == 2
    assert value(m, "pyroguard_config_loaded_timestamp_seconds") > loaded_at


def test_metrics_name_the_build_and_the_server_certificate_expiry(make_stack, certs):
    stack = admin_stack(make_stack)
    m = scrape(stack)
    [(labels, one)] = series(m, "pyroguard_build_info").items()
    assert one == 1
    out = subprocess.run([str(PYROGUARD_BIN), "version"], capture_output=True, text=True,
                         check=True).stdout
    # pyroguard 0.1.0 (BoringSSL, libuv 1.44.2, libyaml 0.2.5, zlib 1.2.13)
    v = re.match(r"pyroguard (\S+) \((\S+), libuv ([0-9.]+),", out)
    assert v, out
    assert dict(labels) == {"version": v.group(1), "boringssl": v.group(2),
                            "libuv": v.group(3)}, labels
    assert value(m, "pyroguard_server_certificate_expiry_timestamp_seconds") == \
        openssl_enddate_unix(certs / "server.crt")
    assert value(m, "pyroguard_client_ca_expiry_timestamp_seconds") == \
        openssl_enddate_unix(certs / "ca.crt")
    assert value(m, "pyroguard_draining") == 0


def test_metrics_count_backend_dial_failures_after_the_backend_stopped(make_stack):
    stack = admin_stack(make_stack)
    assert stack.client("echo")["ok"]
    stack.backend.stop()
    r = stack.client("echo")
    assert not r["ok"] and "backend unavailable" in r["exc_msg"], r
    stack.pg.wait_log(event="refused", reason="backend_unavailable")
    all_closed(stack)
    m = scrape(stack)
    assert value(m, "pyroguard_backend_dial_failures_total") == 1
    assert value(m, "pyroguard_connections_total", outcome="backend_unavailable") == 1
    assert value(m, "pyroguard_connections_total", outcome="client_closed") == 1
    # Three judged messages: CONNECT and echo, then the CONNECT the backend could not take.
    assert sum(series(m, "pyroguard_requests_total").values()) == 3


def test_a_connect_the_backend_cannot_take_is_counted_once(make_stack):
    """One CONNECT is one judged message in requests_total, however its dial ends; the dial
    failure has its own counter."""
    stack = admin_stack(make_stack, backend=False)
    r = stack.client("echo")
    assert not r["ok"] and "backend unavailable" in r["exc_msg"], r
    all_closed(stack)
    m = scrape(stack)
    total = sum(series(m, "pyroguard_requests_total").values())
    by_rule = sum(series(m, "pyroguard_requests_by_rule_total").values())
    assert (total, by_rule) == (1, 1), (
        "one CONNECT counted %d times in requests_total and %d times in "
        "requests_by_rule_total" % (total, by_rule))
    assert value(m, "pyroguard_backend_dial_failures_total") == 1


def test_a_connect_the_backend_cannot_take_has_one_audit_line_that_says_so(make_stack):
    """README "The audit line": every judged client message gives one `refused` or `allowed`
    line. With log.calls: all, a CONNECT the policy allows but whose backend is down must not
    also be logged as allowed with action "forwarded": it never reached the daemon."""
    stack = admin_stack(make_stack, {"log": {"calls": "all"}}, backend=False)
    r = stack.client("echo")
    assert not r["ok"] and "backend unavailable" in r["exc_msg"], r
    all_closed(stack)
    decisions = [(l["event"], l["msg_type"], l.get("reason"), l.get("action"))
                 for l in stack.pg.logs() if l.get("event") in ("allowed", "refused")]
    assert decisions == [("refused", "CONNECT", "backend_unavailable", "connectfail")], decisions


# --- workers -----------------------------------------------------------------------------------


def test_two_workers_both_serve_connections_and_the_metrics_add_them_up(make_stack):
    stack = admin_stack(make_stack, {"workers": 2})
    [listening] = stack.pg.logs(event="listening")
    assert listening["workers"] == 2, listening
    made = 0
    while made < 100:
        for _ in range(20):
            with stack.tls_socket() as s:
                s.sendall(read_vector("serpent/echo/00_c2s_CONNECT.bin"))
                [ok] = recv_frames(s, 1)
                assert ok["type"] == MSG_CONNECTOK
            made += 1
        stack.pg.wait_log(event="conn_open", count=made)
        if {l["worker"] for l in stack.pg.logs(event="conn_open")} == {0, 1}:
            break
    opens = stack.pg.logs(event="conn_open")
    assert {l["worker"] for l in opens} == {0, 1}, (
        "every one of %d connections went to one worker" % made)
    assert {l["generation"] for l in opens} == {1}
    all_closed(stack)
    m = wait_metric(stack, lambda m: value(m, "pyroguard_connections_open") == 0,
                    "connections_open back to 0")
    assert sum(series(m, "pyroguard_connections_total").values()) == made
    assert value(m, "pyroguard_connections_total", outcome="client_closed") == made
    assert value(m, "pyroguard_tls_handshake_duration_seconds_count") == made
    assert value(m, "pyroguard_requests_total", verdict="allowed", reason="allowed") == made
