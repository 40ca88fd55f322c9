"""Client mode (listeners[].mode: client) end to end, with real processes only:

    real Pyro4 4.82 client, no SSL settings at all (pyro_client.py --plain / --unix)
      -> pyroguard C, a client-mode listener: plaintext on 127.0.0.1 or a Unix socket
         -> mutual TLS with C's own client certificate (certs/client.crt, CN=billing-client,
            URI spiffe://example.org/ns/billing/client), the upstream's certificate checked
            against the CA and the expected name / SPIFFE URI
      -> pyroguard S, an ordinary server-mode listener (the default test configuration)
      -> the real Pyro4 daemon (legacy_server.py), plaintext on 127.0.0.1

Both pyroguards are the real binary; S is the `Stack` every other test uses. What C lets through
is its listener's egress policy, after the same inspection as server mode; what S lets through is
its clients: rules, which see C's certificate.
"""

import grp
import json
import os
import pwd
import socket
import stat
import subprocess

import pytest

from conftest import MSG_INVOKE, PYROGUARD_BIN, Pyroguard, parse_pyro4_frames, run_client

EGRESS_ECHO_ONLY = {"allow": [{"object": "thing", "methods": ["echo", "seen_annotations"]}]}


class ClientModePyroguard(Pyroguard):
    """pyroguard with one client-mode listener in front of |upstream_port| (server mode)."""

    def __init__(self, workdir, certs, upstream_port, egress=None, listener=None, unix=None,
                 top=None):
        self.upstream_port = upstream_port
        self.egress = egress if egress is not None else EGRESS_ECHO_ONLY
        self.listener_extra = listener or {}
        self.unix = unix
        self.top = top or {}
        Pyroguard.__init__(self, workdir, certs, backend_port=0, listener="to-app")

    def default_config(self):
        listener = {
            "name": self.listener,
            "mode": "client",
            "listen": "unix:%s" % self.unix if self.unix else "127.0.0.1:%d" % self.port,
            "upstream": "localhost:%d" % self.upstream_port,
            "upstream_tls": {
                "cert": str(self.certs / "client.crt"),
                "key": str(self.certs / "client.key"),
                "ca": str(self.certs / "ca.crt"),
                "server_name": "localhost",
            },
            "egress": self.egress,
        }
        for k, v in self.listener_extra.items():
            if isinstance(v, dict) and isinstance(listener.get(k), dict):
                listener[k] = dict(listener[k], **v)
            else:
                listener[k] = v
        config = {
            "listeners": [listener],
            "pyro": {"protocols": [4], "serializers": ["serpent", "json", "marshal", "msgpack"]},
            "limits": {"drain_timeout": 2000, "backend_connect_timeout": 3000},
            "log": {"level": "info", "calls": "all"},
        }
        config.update(self.top)
        return config


@pytest.fixture
def chain(make_stack, tmp_path, certs):
    """chain(server_listener=None, server_overrides=None, **client_mode_kwargs) -> (S, C):
    S a started Stack (daemon + server-mode pyroguard, its listener updated with
    |server_listener|), C a started client-mode pyroguard in front of it. C is stopped at
    teardown (before make_stack stops S) and must exit 0 without a sanitizer report."""
    made = []

    def make(server_listener=None, server_overrides=None, **kw):
        s = make_stack(server_overrides, name="server", listener=server_listener)
        c = ClientModePyroguard(tmp_path / ("client-mode%d" % len(made)), certs, s.port, **kw)
        c.dir.mkdir(parents=True, exist_ok=True)
        made.append(c)
        c.start()
        return s, c

    yield make
    for c in made:
        c.stop()
    for c in made:
        c.assert_clean_exit()


def plain_client(c, scenario="echo", **kw):
    """A Pyro4 client with no SSL settings, talking to the client-mode listener."""
    extra = list(kw.pop("extra", ()))
    if "token" in kw:
        extra += ["--token", kw.pop("token")]
    if c.unix:
        extra += ["--unix", c.unix]
    return run_client(scenario, c.port, c.certs, plain=True, extra=extra, **kw)


def ops(c, operations, **kw):
    return plain_client(c, "ops", extra=["--ops", json.dumps(operations)], **kw)


def daemon_invokes(stack):
    """Every INVOKE payload the real daemon received."""
    return [f["payload"] for data in stack.backend.connections()
            for f in parse_pyro4_frames(data) if f["type"] == MSG_INVOKE]


# --- the whole chain -------------------------------------------------------------------------


def test_plain_pyro4_client_gets_mutual_tls_to_the_daemon_with_no_code_change(chain):
    s, c = chain()
    out = plain_client(c, token="through-both")
    assert out["ok"] and out["result"] == "through-both", out

    # C: a local plaintext client under the egress rule, and TLS to the upstream it verified.
    opened = c.wait_log(event="conn_open")[0]
    assert opened["mode"] == "client" and opened["rule"] == "egress:to-app", opened
    assert opened["peer"].startswith("127.0.0.1:"), opened
    up = c.wait_log(event="upstream_open")[0]
    assert up["subject"] == "O=Example,CN=localhost" or "CN=localhost" in up["subject"], up
    assert up["tls_version"] in ("TLSv1.3", "TLSv1.2"), up

    # S: the connection came with C's client certificate, matched by S's clients: rules.
    s_open = s.pg.wait_log(event="conn_open")[0]
    assert "CN=billing-client" in s_open["subject"], s_open
    assert "URI:spiffe://example.org/ns/billing/client" in s_open["sans"], s_open
    assert s_open["rule"] == "everyone", s_open

    # The daemon received the call, in plaintext, from S.
    assert any(b"through-both" in p for p in daemon_invokes(s))


def test_the_server_side_sees_the_client_modes_certificate_identity_in_the_call(chain):
    s, c = chain(server_listener={"forward_identity": True})
    out = plain_client(c, "ops", extra=["--ops", json.dumps([{"call": "seen_annotations"}])])
    assert out["ok"], out
    seen = out["result"][0]
    assert seen["ok"], seen
    ident = json.loads(seen["result"]["PGID"])
    assert ident["cn"] == "billing-client", ident
    assert ident["uri"] == ["spiffe://example.org/ns/billing/client"], ident
    assert ident["rule"] == "everyone" and ident["listener"] == "app", ident


def test_egress_refusal_reaches_the_client_as_security_error_and_leaves_nothing_upstream(chain):
    s, c = chain()
    out = ops(c, [{"call": "echo", "args": ["first"]},
                  {"call": "digest", "args": ["must-not-pass"]},
                  {"call": "echo", "args": ["still-in-sync"]}])
    assert out["ok"], out
    first, refused, after = out["result"]
    assert first == {"ok": True, "result": "first"}, first
    assert refused["ok"] is False and refused["exc_type"] == "Pyro4.errors.SecurityError", refused
    assert "digest" in refused["exc_msg"] and "egress:to-app" in refused["exc_msg"], refused
    assert after == {"ok": True, "result": "still-in-sync"}, after

    line = c.wait_log(event="refused", reason="not_allowed")[0]
    assert line["method"] == "digest" and line["rule"] == "egress:to-app", line
    # Refused in C: neither S nor the daemon ever saw it.
    c.settle()
    s.pg.settle()
    assert not s.pg.logs(event="refused"), s.pg.logs(event="refused")
    assert not any(l.get("method") == "digest" for l in s.pg.logs())
    assert not any(b"must-not-pass" in p for p in daemon_invokes(s))


def test_dotted_and_private_names_are_refused_in_client_mode_before_leaving_the_host(chain):
    s, c = chain(egress={"allow": [{"object": "thing", "methods": ["*"]}]})
    out = ops(c, [{"invoke": "sub.echo", "args": ["dotted"]},
                  {"invoke": "_private", "args": []},
                  {"call": "echo", "args": ["ok"]}])
    assert out["ok"], out
    dotted, private, ok = out["result"]
    assert dotted["exc_type"] == "Pyro4.errors.SecurityError", dotted
    assert private["exc_type"] == "Pyro4.errors.SecurityError", private
    assert ok == {"ok": True, "result": "ok"}, ok
    reasons = sorted(l["reason"] for l in c.wait_log(event="refused", count=2))
    assert reasons == ["dotted_name", "private_name"], reasons
    s.pg.settle()
    assert not any(b"sub.echo" in p or b"_private" in p for p in daemon_invokes(s))


def test_a_connect_to_an_object_outside_the_egress_policy_is_refused_in_pyros_terms(chain):
    s, c = chain()
    out = ops(c, [{"object": "Pyro.NameServer", "call": "list"}])
    res = out["result"][0]
    assert res["ok"] is False and res["exc_type"] == "Pyro4.errors.CommunicationError", res
    assert "not allowed" in res["exc_msg"], res
    c.wait_log(event="refused", reason="object_not_allowed")
    # Refused before any upstream connection was made.
    assert not c.logs(event="upstream_open")
    assert not s.pg.logs(event="conn_open")


# --- the upstream's certificate is checked ----------------------------------------------------


def connectfail(out):
    assert out["ok"] is False and out["exc_type"] == "Pyro4.errors.CommunicationError", out
    return out["exc_msg"]


def test_an_upstream_with_another_name_than_expected_is_refused(chain):
    s, c = chain(listener={"upstream_tls": {"server_name": "billing.example"}})
    msg = connectfail(plain_client(c))
    assert "upstream TLS handshake failed" in msg and "mismatch" in msg.lower(), msg
    fail = c.wait_log(event="upstream_tls_fail")[0]
    assert fail["reason"] == "name_mismatch", fail
    c.wait_log(event="refused", reason="upstream_tls_failed")
    assert daemon_invokes(s) == [] and s.backend.connections() == []


def test_an_upstream_without_the_expected_spiffe_uri_is_refused(chain):
    s, c = chain(listener={"upstream_tls": {"server_uri": "spiffe://example.org/ns/app/server"}})
    msg = connectfail(plain_client(c))
    assert "no URI SAN matching" in msg, msg
    assert c.wait_log(event="upstream_tls_fail")[0]["reason"] == "name_mismatch"
    # The TLS session was made and torn down before the CONNECT was sent: S saw no message.
    s.pg.settle()
    assert s.backend.connections() == []


def test_an_upstream_signed_by_another_ca_is_refused(chain, certs):
    s, c = chain(listener={"upstream_tls": {"ca": str(certs / "other-ca.crt")}})
    msg = connectfail(plain_client(c))
    assert "certificate verify failed" in msg, msg
    assert c.wait_log(event="upstream_tls_fail")[0]["reason"] == "unknown_ca"
    assert s.backend.connections() == []


def test_the_upstream_refusing_the_client_modes_certificate_is_told_to_the_client(chain, certs):
    # S trusts only another CA's clients: C's certificate is refused in S's handshake.
    s, c = chain(server_overrides={"tls": {"client_ca": str(certs / "other-ca.crt")}})
    msg = connectfail(plain_client(c))
    assert "upstream TLS handshake failed" in msg, msg
    s.pg.wait_log(event="tls_fail", reason="unknown_ca")
    c.wait_log(event="upstream_tls_fail")
    assert s.backend.connections() == []


def test_upstream_down_is_a_clean_connectfail(chain):
    s, c = chain()
    s.pg.stop()
    msg = connectfail(plain_client(c))
    assert "backend unavailable" in msg, msg
    c.wait_log(event="backend_fail")


# --- Unix socket ------------------------------------------------------------------------------


def test_unix_socket_listener_has_its_socket_mode_and_serves_plain_clients(chain, tmp_path):
    path = str(tmp_path / "run" / "app.sock")
    os.makedirs(os.path.dirname(path))
    s, c = chain(unix=path, listener={"socket_mode": "0660"})
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode), st
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    out = plain_client(c, token="over-unix")
    assert out["ok"] and out["result"] == "over-unix", out
    opened = c.wait_log(event="conn_open")[0]
    assert opened["peer"].startswith("unix:pid="), opened
    assert ",uid=%d" % os.getuid() in opened["peer"], opened
    # The socket file goes with the process.
    c.stop()
    assert not os.path.exists(path)


def test_a_stale_unix_socket_file_is_replaced_but_a_live_one_is_not_taken(chain, tmp_path, certs):
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays; nothing listens: what a killed process leaves
    s, c = chain(unix=path)
    assert plain_client(c)["ok"]
    # A second pyroguard on the same live socket refuses to start.
    other = ClientModePyroguard(tmp_path / "second", certs, s.port, unix=path)
    other.dir.mkdir(parents=True, exist_ok=True)
    other.write_config()
    p = subprocess.run([str(PYROGUARD_BIN), "run", "-c", str(other.config_path)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0 and "address already in use" in p.stderr, p.stderr
    assert plain_client(c)["ok"]  # the first one still serves


def test_unix_socket_belongs_to_the_user_and_group_pyroguard_switches_to(chain, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    rundir = tmp_path / "run"
    rundir.mkdir()
    os.chmod(str(rundir), 0o755)
    path = str(rundir / "app.sock")
    s, c = chain(unix=path, listener={"socket_mode": "0660"},
                 top={"user": "nobody", "group": "nogroup"})
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (pwd.getpwnam("nobody").pw_uid,
                                      grp.getgrnam("nogroup").gr_gid), st
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert plain_client(c, token="as-nobody")["result"] == "as-nobody"
