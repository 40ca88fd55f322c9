"""The /metrics page read by Prometheus' own Python parser: proxy/metrics.c's text, as printed
by build/metrics_dump (tests/tools/metrics_dump.c) for two shards filled with known events, goes
through prometheus_client.parser.text_string_to_metric_families (Debian's
python3-prometheus-client), and every value comes back as the events say."""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import PYROGUARD_BIN

parser = pytest.importorskip(
    "prometheus_client.parser", reason="apt-get install python3-prometheus-client")

# Next to the pyroguard binary under test, so `make test-asan` runs the sanitized one.
METRICS_DUMP = Path(os.environ.get("METRICS_DUMP_BIN", str(PYROGUARD_BIN.parent / "metrics_dump")))

pytestmark = pytest.mark.skipif(
    not METRICS_DUMP.exists(),
    reason="%s not built (cmake --build build, or set METRICS_DUMP_BIN)" % METRICS_DUMP)

OUTCOMES = ["client_closed", "backend_closed", "idle_timeout", "handshake_timeout", "tls_fail",
            "refused", "backend_unavailable", "shutdown", "error", "other"]
TLS_REASONS = ["no_client_certificate", "unknown_ca", "certificate_expired",
               "certificate_not_yet_valid", "certificate_revoked", "certificate_denied",
               "certificate_invalid", "protocol_version", "no_shared_cipher", "not_tls",
               "handshake_timeout", "peer_closed", "tls_error", "other"]
REFUSALS = ["no_matching_rule", "identity_invalid", "denied_by_rule", "not_allowed",
            "object_not_allowed", "name_too_long", "malformed_call", "not_pyro",
            "protocol_version", "bad_checksum", "negative_length", "message_too_large",
            "bad_annotations", "unexpected_message", "unsupported_flags", "serializer_not_allowed",
            "compression_denied", "inflate_failed", "inflated_too_large", "undecodable",
            "dotted_name", "private_name", "invalid_name", "backend_unavailable", "other"]
BUCKETS = ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
           "5", "+Inf"]

TYPES = {
    "pyroguard_connections_open": "gauge",
    "pyroguard_connections": "counter",
    "pyroguard_connections_rejected": "counter",
    "pyroguard_tls_handshake_failures": "counter",
    "pyroguard_tls_handshake_duration_seconds": "histogram",
    "pyroguard_requests": "counter",
    "pyroguard_requests_by_rule": "counter",
    "pyroguard_requests_by_protocol": "counter",
    "pyroguard_bytes": "counter",
    "pyroguard_backend_dial_failures": "counter",
    "pyroguard_reloads": "counter",
    "pyroguard_config_generation": "gauge",
    "pyroguard_config_loaded_timestamp_seconds": "gauge",
    "pyroguard_server_certificate_expiry_timestamp_seconds": "gauge",
    "pyroguard_client_ca_expiry_timestamp_seconds": "gauge",
    "pyroguard_draining": "gauge",
    "pyroguard_build_info": "gauge",
}


def scrape(*args):
    out = subprocess.run([str(METRICS_DUMP), *args], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    assert b"Sanitizer" not in out.stderr, out.stderr.decode(errors="replace")
    text = out.stdout.decode("utf-8")  # the page must be UTF-8
    families = list(parser.text_string_to_metric_families(text))
    samples = {}
    for fam in families:
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, "series written twice: %r" % (key,)
            samples[key] = s.value
    return text, families, samples


def value(samples, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, "missing %s%r" % (name, labels)
    return samples[key]


def test_every_family_has_its_type_help_and_prefix():
    _, families, _ = scrape()
    seen = {f.name: f for f in families}
    assert set(seen) == set(TYPES)
    for name, fam in seen.items():
        assert fam.type == TYPES[name], name
        assert fam.documentation, name
        for s in fam.samples:
            assert s.name.startswith("pyroguard_")


def test_connection_counters_come_back_summed_across_shards():
    _, _, m = scrape()
    assert value(m, "pyroguard_connections_open") == 4  # 10 accepted, 6 closed
    expected = {"client_closed": 2, "idle_timeout": 1, "tls_fail": 1, "backend_closed": 1,
                "shutdown": 1}
    for outcome in OUTCOMES:
        assert value(m, "pyroguard_connections_total", outcome=outcome) == \
            expected.get(outcome, 0), outcome
    assert value(m, "pyroguard_connections_rejected_total") == 1
    assert value(m, "pyroguard_backend_dial_failures_total") == 1
    assert value(m, "pyroguard_bytes_total", direction="client_to_backend") == 1024
    assert value(m, "pyroguard_bytes_total", direction="backend_to_client") == 5006


def test_tls_failures_and_the_handshake_histogram():
    _, _, m = scrape()
    expected = {"unknown_ca": 1, "handshake_timeout": 1, "peer_closed": 1}
    for reason in TLS_REASONS:
        assert value(m, "pyroguard_tls_handshake_failures_total", reason=reason) == \
            expected.get(reason, 0), reason
    # 0.8 ms, 2 ms, 20 ms, 1.5 s
    cumulative = [1, 2, 2, 2, 3, 3, 3, 3, 3, 3, 4, 4, 4]
    for le, want in zip(BUCKETS, cumulative):
        assert value(m, "pyroguard_tls_handshake_duration_seconds_bucket", le=le) == want, le
    assert value(m, "pyroguard_tls_handshake_duration_seconds_count") == 4
    assert value(m, "pyroguard_tls_handshake_duration_seconds_sum") == pytest.approx(1.5228)


def test_requests_by_reason_and_by_rule_with_escaped_names():
    _, _, m = scrape()
    assert value(m, "pyroguard_requests_total", verdict="allowed", reason="allowed") == 7
    expected = {"not_allowed": 1, "no_matching_rule": 2, "dotted_name": 1}
    for reason in REFUSALS:
        assert value(m, "pyroguard_requests_total", verdict="refused", reason=reason) == \
            expected.get(reason, 0), reason
    by_rule = {(dict(k[1])["rule"], dict(k[1])["verdict"]): v
               for k, v in m.items() if k[0] == "pyroguard_requests_by_rule_total"}
    assert by_rule == {
        ("", "allowed"): 0, ("", "refused"): 2,
        ("billing", "allowed"): 4, ("billing", "refused"): 1,
        ("inventory", "allowed"): 2, ("inventory", "refused"): 1,
        ('we"ird\\ru\nle', "allowed"): 1, ('we"ird\\ru\nle', "refused"): 0,
    }


def test_requests_by_protocol_have_every_protocol_and_verdict():
    _, _, m = scrape()
    by_proto = {(dict(k[1])["protocol"], dict(k[1])["verdict"]): v
                for k, v in m.items() if k[0] == "pyroguard_requests_by_protocol_total"}
    assert by_proto == {
        ("pyro4", "allowed"): 2, ("pyro4", "refused"): 0,
        ("pyro4.47", "allowed"): 1, ("pyro4.47", "refused"): 0,
        ("pyro4.46", "allowed"): 0, ("pyro4.46", "refused"): 0,
        ("pyro5", "allowed"): 1, ("pyro5", "refused"): 1,
        ("other", "allowed"): 0, ("other", "refused"): 1,
    }


def test_process_values_and_build_info():
    _, _, m = scrape()
    assert value(m, "pyroguard_reloads_total", result="ok") == 2
    assert value(m, "pyroguard_reloads_total", result="failed") == 1
    assert value(m, "pyroguard_config_generation") == 3
    assert value(m, "pyroguard_config_loaded_timestamp_seconds") == 1764201234
    assert value(m, "pyroguard_server_certificate_expiry_timestamp_seconds") == 1893456000
    assert value(m, "pyroguard_client_ca_expiry_timestamp_seconds") == 1924992000
    assert value(m, "pyroguard_draining") == 0
    info = [k for k in m if k[0] == "pyroguard_build_info"]
    assert len(info) == 1
    labels = dict(info[0][1])
    assert labels["version"] == "0.1.0" and labels["boringssl"] == "BoringSSL"
    assert labels["libuv"].count(".") == 2
    assert m[info[0]] == 1


def test_an_idle_proxy_has_every_fixed_series_at_zero_and_no_rules():
    _, families, m = scrape("empty")
    names = {f.name for f in families}
    # Unknown expiry times are left out rather than written as 1970.
    assert names == set(TYPES) - {"pyroguard_server_certificate_expiry_timestamp_seconds",
                                  "pyroguard_client_ca_expiry_timestamp_seconds"}
    for outcome in OUTCOMES:
        assert value(m, "pyroguard_connections_total", outcome=outcome) == 0
    for reason in REFUSALS:
        assert value(m, "pyroguard_requests_total", verdict="refused", reason=reason) == 0
    for le in BUCKETS:
        assert value(m, "pyroguard_tls_handshake_duration_seconds_bucket", le=le) == 0
    assert not [k for k in m if k[0] == "pyroguard_requests_by_rule_total"]
    assert all(v == 0 for k, v in m.items() if k[0] != "pyroguard_build_info")
