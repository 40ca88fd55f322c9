"""What pyroguard does as a process, seen from outside: the user and group it switches to after
binding, no_new_privs, systemd's readiness protocol (NOTIFY_SOCKET), and `pyroguard check`'s
errors for the operations keys (admin, reload, workers)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import (LOG_TIMEOUT, PYROGUARD_BIN, SANITIZER_REPORT, START_TIMEOUT, Pyroguard,
                      Quoted, Stack, wait_until)

NOBODY, NOGROUP = 65534, 65534


# --- helpers -----------------------------------------------------------------------------------


def proc_status(pid, task=None):
    """/proc/PID/status (or one thread's) as {field: value text}."""
    path = "/proc/%d/status" % pid if task is None else "/proc/%d/task/%s/status" % (pid, task)
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def threads_status(pid):
    return [proc_status(pid, t) for t in sorted(os.listdir("/proc/%d/task" % pid))]


def ids(status, key):
    return [int(x) for x in status[key].split()]


class EnvPyroguard(Pyroguard):
    """Pyroguard.start with extra environment variables for the child."""

    env = None

    def start(self):
        if not PYROGUARD_BIN.exists():
            pytest.fail("pyroguard binary not found at %s" % PYROGUARD_BIN)
        self.write_config()
        self._err = open(self.log_path, "wb")
        self._out = open(self.stdout_path, "wb")
        env = dict(os.environ)
        env.update(self.env or {})
        self.proc = subprocess.Popen([str(PYROGUARD_BIN), "run", "-c", str(self.config_path)],
                                     stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, env=env)

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError("pyroguard exited with %s before listening; stderr:\n%s"
                                     % (self.proc.returncode, self.stderr_text()))
            return any(l.get("event") == "listening" for l in self.logs())

        wait_until(listening, START_TIMEOUT, what="pyroguard 'listening' log line")
        return self


@pytest.fixture
def env_stack(tmp_path, certs):
    """env_stack(env, overrides=None) -> started Stack whose pyroguard has |env| added to its
    environment; stopped and checked at teardown like make_stack's."""
    stacks = []

    def make(env, overrides=None):
        s = Stack(tmp_path / ("env%d" % len(stacks)), certs, overrides)
        s.pg.__class__ = EnvPyroguard
        s.pg.env = env
        stacks.append(s)
        return s.start()

    yield make
    for s in stacks:
        s.stop()
    for s in stacks:
        report = s.pg.sanitizer_report()
        if report:
            pytest.fail("pyroguard printed a sanitizer report:\n%s" % report, pytrace=False)
        if s.pg.proc is not None and s.pg.returncode != 0:
            pytest.fail("pyroguard exited with %s at teardown; stderr tail:\n%s"
                        % (s.pg.returncode, s.pg.stderr_text()[-3000:]), pytrace=False)


def run_pyroguard(config_path, timeout=20):
    p = subprocess.run([str(PYROGUARD_BIN), "run", "-c", str(config_path)], capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if SANITIZER_REPORT.search(p.stderr):
        pytest.fail("pyroguard printed a sanitizer report:\n%s" % p.stderr, pytrace=False)
    return p


def json_lines(text):
    out = []
    for line in text.splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if isinstance(d, dict):
            out.append(d)
    return out


# --- user and group ----------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@needs_root
def test_runs_as_nobody_nogroup_after_binding_and_still_serves_calls(make_stack):
    stack = make_stack({"user": "nobody", "group": "nogroup"})
    r = stack.client("echo")
    assert r == {"ok": True, "result": "hello", "steps": []}, r
    pid = stack.pg.proc.pid
    for st in threads_status(pid):  # every thread, the workers included
        assert ids(st, "Uid") == [NOBODY] * 4, st["Uid"]  # real, effective, saved, filesystem
        assert ids(st, "Gid") == [NOGROUP] * 4, st["Gid"]
        assert st["Groups"] == "", st["Groups"]  # root's supplementary groups are gone
        assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, st
    assert len(threads_status(pid)) >= 2


@needs_root
def test_user_alone_switches_to_its_primary_group(make_stack):
    stack = make_stack({"user": "nobody"})
    st = proc_status(stack.pg.proc.pid)
    assert ids(st, "Uid") == [NOBODY] * 4 and ids(st, "Gid") == [NOGROUP] * 4, st
    assert stack.client("echo")["ok"]


@needs_root
@pytest.mark.parametrize("overrides, reason", [
    ({"user": "nosuchuser"}, "no user 'nosuchuser'"),
    ({"user": "nobody", "group": "nosuchgroup"}, "no group 'nosuchgroup'"),
    ({"user": Quoted("65532")},
     "no user named '65532', so as a uid it has no primary group: set the group too"),
], ids=["unknown_user", "unknown_group", "numeric_user_without_group"])
def test_a_user_or_group_that_cannot_be_switched_to_stops_startup_with_exit_1(
        tmp_path, certs, overrides, reason):
    pg = Pyroguard(tmp_path, certs, backend_port=1, overrides=overrides)
    pg.write_config()
    p = run_pyroguard(pg.config_path)
    assert p.returncode == 1, (p.returncode, p.stderr)
    failed = [l for l in json_lines(p.stderr) if l.get("event") == "startup_failed"]
    assert failed, p.stderr
    assert failed[0]["level"] == "error" and failed[0]["msg"] == reason, failed[0]
    # It never served: no "listening" line, and the port is free again.
    assert not [l for l in json_lines(p.stderr) if l.get("event") == "listening"], p.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", pg.port))


@needs_root
def test_numeric_user_and_group_without_passwd_entries_are_taken_as_ids(make_stack):
    stack = make_stack({"user": Quoted("65532"), "group": Quoted("65533")})
    st = proc_status(stack.pg.proc.pid)
    assert ids(st, "Uid") == [65532] * 4 and ids(st, "Gid") == [65533] * 4, st
    assert stack.client("echo")["ok"]


# --- no_new_privs ------------------------------------------------------------------------------


def test_no_new_privs_is_set_on_every_thread(make_stack):
    stack = make_stack()
    statuses = threads_status(stack.pg.proc.pid)
    assert [st["NoNewPrivs"] for st in statuses] == ["1"] * len(statuses)


# --- systemd notification ----------------------------------------------------------------------


class NotifySocket(object):
    """What systemd listens on: an AF_UNIX datagram socket at a path or an abstract name."""

    def __init__(self, abstract=False):
        self.dir = tempfile.mkdtemp(prefix="pgn", dir="/tmp")  # sun_path holds 107 bytes
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "pyroguard-test-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = os.path.join(self.dir, "notify")
            self.sock.bind(self.address)

    def receive(self, timeout=LOG_TIMEOUT):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536).decode()
        except socket.timeout:
            raise AssertionError("no notification within %ss" % timeout)

    def nothing_pending(self):
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        raise AssertionError("unexpected notification %r" % data)

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket():
    sockets = []

    def make(abstract=False):
        sockets.append(NotifySocket(abstract))
        return sockets[-1]

    yield make
    for s in sockets:
        s.close()


def assert_reloading(message, before_us, after_us):
    lines = message.split("\n")
    assert lines[0] == "RELOADING=1" and len(lines) == 2, message
    key, _, usec = lines[1].partition("=")
    assert key == "MONOTONIC_USEC", message
    # CLOCK_MONOTONIC is one clock for every process of the host.
    assert before_us <= int(usec) <= after_us, (before_us, usec, after_us)


def test_systemd_is_told_ready_then_reloading_and_ready_then_stopping(env_stack, notify_socket):
    n = notify_socket()
    stack = env_stack({"NOTIFY_SOCKET": n.address})
    assert n.receive() == "READY=1"
    assert stack.client("echo")["ok"]  # READY=1 means serving
    assert n.nothing_pending()

    before = time.monotonic_ns() // 1000
    stack.pg.proc.send_signal(signal.SIGHUP)
    reloading = n.receive()
    after = time.monotonic_ns() // 1000
    assert_reloading(reloading, before, after)
    assert n.receive() == "READY=1"
    stack.pg.wait_log(event="reloaded")

    # A reload that fails still ends with READY=1: the old configuration keeps serving.
    good = stack.pg.config_path.read_text()
    stack.pg.config_path.write_text(good + "\nlisteners: [\n")
    before = time.monotonic_ns() // 1000
    stack.pg.proc.send_signal(signal.SIGHUP)
    reloading = n.receive()
    after = time.monotonic_ns() // 1000
    assert_reloading(reloading, before, after)
    assert n.receive() == "READY=1"
    stack.pg.wait_log(event="reload_failed")
    assert n.nothing_pending()

    stack.pg.proc.send_signal(signal.SIGTERM)
    assert n.receive() == "STOPPING=1"
    assert stack.pg.proc.wait(timeout=10) == 0
    assert n.nothing_pending()
    assert not stack.pg.logs(event="notify_failed")


def test_systemd_notify_socket_in_the_abstract_namespace(env_stack, notify_socket):
    n = notify_socket(abstract=True)
    stack = env_stack({"NOTIFY_SOCKET": n.address})
    assert n.receive() == "READY=1"
    stack.pg.proc.send_signal(signal.SIGTERM)
    assert n.receive() == "STOPPING=1"
    assert stack.pg.proc.wait(timeout=10) == 0


def test_unreachable_notify_socket_is_logged_and_pyroguard_serves_anyway(env_stack, tmp_path):
    stack = env_stack({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens-here")})
    [line] = stack.pg.wait_log(event="notify_failed")
    assert "nobody-listens-here" in line["detail"], line
    assert stack.client("echo")["ok"]


# --- pyroguard check: the operations keys ------------------------------------------------------

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
clients: []
"""
CFG = "conf/pyroguard.yaml"

# Text appended to GOOD (from line 11 on) -> the exact error line of `pyroguard check`.
BROKEN_OPS = {
    "admin_listen_not_loopback": (
        "admin:\n  listen: 0.0.0.0:9901\n",
        "conf/pyroguard.yaml:12:11: admin.listen: '0.0.0.0:9901' is not a loopback address "
        "(the metrics name clients and rules: set allow_remote: true to serve them off this "
        "host)"),
    "admin_listen_is_a_listeners_address": (
        "admin:\n  listen: 127.0.0.1:9443\n",
        "conf/pyroguard.yaml:12:11: admin.listen: address '127.0.0.1:9443' is already used by "
        "listeners[0]"),
    "admin_listen_is_a_listeners_address_by_another_name": (
        "admin:\n  listen: localhost:9443\n",
        "conf/pyroguard.yaml:12:11: admin.listen: address 'localhost:9443' is already used by "
        "listeners[0]"),
    "admin_without_listen": (
        "admin:\n  allow_remote: true\n",
        "conf/pyroguard.yaml:12:3: admin: missing required key 'listen'"),
    "workers_zero": (
        "workers: 0\n",
        "conf/pyroguard.yaml:11:10: workers: must be between 1 and 256, got 0"),
    "workers_too_many": (
        "workers: 257\n",
        "conf/pyroguard.yaml:11:10: workers: must be between 1 and 256, got 257"),
    "poll_interval_too_short": (
        "reload:\n  watch: true\n  poll_interval: 50\n",
        "conf/pyroguard.yaml:13:18: reload.poll_interval: must be between 100 and 3600000, "
        "got 50"),
    "drain_timeout_not_a_number": (
        "limits:\n  drain_timeout: soon\n",
        "conf/pyroguard.yaml:12:18: limits.drain_timeout: expected an integer in milliseconds, "
        "got 'soon'"),
}


@pytest.fixture
def confdir(tmp_path, certs):
    tls = tmp_path / "conf" / "tls"
    tls.mkdir(parents=True)
    for name in ("server.crt", "server.key", "ca.crt", "ca.crl"):
        shutil.copy(certs / name, tls / name)
    (tmp_path / CFG).write_text(GOOD)
    return tmp_path


def check(confdir):
    p = subprocess.run([str(PYROGUARD_BIN), "check", "-c", CFG], cwd=confdir,
                       capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    if SANITIZER_REPORT.search(p.stderr):
        pytest.fail("pyroguard printed a sanitizer report:\n%s" % p.stderr, pytrace=False)
    return p


@pytest.mark.parametrize("case", sorted(BROKEN_OPS))
def test_check_names_file_line_column_of_a_bad_operations_key(confdir, case):
    extra, expected = BROKEN_OPS[case]
    (confdir / CFG).write_text(GOOD + extra)
    p = check(confdir)
    assert (p.returncode, p.stderr, p.stdout) == (2, expected + "\n", "")


@pytest.mark.parametrize("extra", [
    "admin:\n  listen: 0.0.0.0:9901\n  allow_remote: true\n",
    "admin:\n  listen: 127.0.0.1:9901\n",
    "admin:\n  listen: \"[::1]:9901\"\n",
    "workers: 1\nreload:\n  watch: true\n  poll_interval: 100\n",
    "user: nobody\ngroup: nogroup\nlimits:\n  drain_timeout: 1\n",
], ids=["remote_admin_allowed", "loopback_admin", "ipv6_loopback_admin", "workers_and_reload",
        "user_group_drain"])
def test_check_accepts_valid_operations_keys(confdir, extra):
    (confdir / CFG).write_text(GOOD + extra)
    p = check(confdir)
    assert (p.returncode, p.stderr) == (0, ""), p.stderr


def test_a_port_another_process_already_listens_on_stops_startup_instead_of_being_shared(
        tmp_path, certs):
    """pyroguard's workers share their port through SO_REUSEPORT, which Linux would also let them
    share with any other process of the same user listening there — a stale pyroguard, another
    proxy — each getting a part of the connections. pyroguard refuses to start instead."""
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(16)
        port = squatter.getsockname()[1]
        pg = Pyroguard(tmp_path, certs, backend_port=1,
                       overrides={"listeners": [{"name": "app", "listen": "127.0.0.1:%d" % port,
                                                 "backend": "127.0.0.1:1"}]})
        pg.write_config()
        p = run_pyroguard(pg.config_path)
        assert p.returncode == 1, (p.returncode, p.stderr)
        [failed] = [l for l in json_lines(p.stderr) if l.get("event") == "listen_failed"]
        assert failed["listener"] == "app" and failed["listen"] == "127.0.0.1:%d" % port
        assert failed["detail"].startswith("address already in use: another process listens"), \
            failed
        assert not [l for l in json_lines(p.stderr) if l.get("event") == "listening"], p.stderr
