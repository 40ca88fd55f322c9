"""Fixtures for the pyroguard integration tests.

Real components only, as a user would run them (STYLE.md habit 11):
  * certificates minted at test time by tests/certs/mint.sh (openssl);
  * the legacy Pyro4 4.82 daemon (legacy_server.py), accepting pickle & co, plaintext on 127.0.0.1,
    instrumented to record every byte it reads (one capture file per accepted connection);
  * the real pyroguard binary (PYROGUARD_BIN, default <repo>/build/pyroguard) started with
    `pyroguard run -c cfg.yaml`, its JSON log lines (stderr) kept in a file;
  * real Pyro4 clients, each in its own /usr/bin/python3 process (pyro_client.py), or raw frames
    over a real mutual-TLS connection (python ssl) when a test needs bytes no client would send.

Run: /usr/bin/python3 -m pytest tests/integration
"""

import http.client
import json
import os
import re
import resource
import signal
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VECTORS = REPO / "tests" / "vectors" / "pyro4"
MINT = REPO / "tests" / "certs" / "mint.sh"
PYTHON = "/usr/bin/python3"  # Debian's interpreter: the one with python3-pyro4 & co
PYROGUARD_BIN = Path(os.environ.get("PYROGUARD_BIN", str(REPO / "build" / "pyroguard")))

# `make test-asan` runs the suite against a sanitized build (PYROGUARD_SANITIZED=1): slower, so
# every wait is stretched; a sanitizer report on pyroguard's stderr fails the test (see
# SANITIZER_REPORT below).
SANITIZED = os.environ.get("PYROGUARD_SANITIZED", "") not in ("", "0")
SCALE = 3 if SANITIZED else 1
TEST_TIMEOUT = 90 * SCALE  # seconds; a hung test fails instead of hanging the suite
START_TIMEOUT = 15 * SCALE
CLIENT_TIMEOUT = 60 * SCALE
LOG_TIMEOUT = 10 * SCALE
SANITIZER_REPORT = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer|MemorySanitizer|ThreadSanitizer)|"
    r"WARNING: ThreadSanitizer|"
    r"SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer)|"
    r"\.c:\d+:\d+: runtime error: ")


# --- per-test hard timeout ---------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): hard per-test time limit (SIGALRM)")


class HardTimeout(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    marker = item.get_closest_marker("timeout")
    limit = int(marker.args[0]) * SCALE if marker else TEST_TIMEOUT

    def on_alarm(signum, frame):
        raise HardTimeout("test exceeded %d s" % limit)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --- small helpers -----------------------------------------------------------------------------


_ports_handed_out = set()


def free_port():
    """A currently free 127.0.0.1 port, never the same one twice in this test session."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port


def wait_until(pred, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def stop_process(proc, grace=5.0):
    """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)
    return proc.returncode


# --- YAML emitter (the config is simple; no PyYAML dependency) ----------------------------------

_PLAIN_OK = re.compile(r"^[A-Za-z_/.][A-Za-z0-9_./:@*\[\]-]*$")


def _yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, Quoted):
        return json.dumps(str(v))
    s = str(v)
    if _PLAIN_OK.match(s) and s.lower() not in ("true", "false", "yes", "no", "null", "on", "off"):
        return s
    return json.dumps(s)


class Quoted(str):
    """A string that must be written quoted (e.g. min_version "1.2")."""


def to_yaml(obj, indent=0):
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict):
                lines.append("%s%s:" % (pad, k))
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, list) and v and all(isinstance(i, dict) for i in v):
                lines.append("%s%s:" % (pad, k))
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, list):
                lines.append("%s%s: [%s]" % (pad, k, ", ".join(_yaml_scalar(i) for i in v)))
            else:
                lines.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            sub = to_yaml(item, indent + 2).split("\n")
            sub[0] = pad + "- " + sub[0][indent + 2 :]
            lines.extend(sub)
    return "\n".join(lines)


def deep_merge(base, over):
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# --- Pyro4 frames (PROTOCOL.md §2.1) -----------------------------------------------------------

MSG_CONNECT, MSG_CONNECTOK, MSG_CONNECTFAIL, MSG_INVOKE, MSG_RESULT, MSG_PING = 1, 2, 3, 4, 5, 6
FLAG_EXCEPTION, FLAG_COMPRESSED, FLAG_ONEWAY = 0x01, 0x02, 0x04
SER_IDS = {"serpent": 1, "json": 2, "marshal": 3, "pickle": 4, "dill": 5, "msgpack": 6, "cloudpickle": 7}
HEADER = struct.Struct("!4sHHHHiHHHH")


def pyro4_checksum(msg_type, version, data_length, ann_length, serializer_id, flags, seq):
    # A sum of field values, data length signed, reserved field excluded (PROTOCOL.md §2.1).
    return (msg_type + version + data_length + ann_length + serializer_id + flags + seq + 0x34E9) % 65536


def pyro4_frame(msg_type, payload=b"", serializer_id=1, flags=0, seq=0, annotations=b"",
                version=48, data_length=None, ann_length=None, checksum=None, magic=b"PYRO"):
    """Build one Pyro4 message; any header field can be forced to a wrong value."""
    dl = len(payload) if data_length is None else data_length
    al = len(annotations) if ann_length is None else ann_length
    cs = pyro4_checksum(msg_type, version, dl, al, serializer_id, flags, seq) if checksum is None else checksum
    hdr = HEADER.pack(magic, version, msg_type, flags, seq, dl, serializer_id, al, 0, cs)
    return hdr + annotations + payload


def parse_pyro4_frames(data):
    """Split a byte stream into frames: list of dicts (type, flags, seq, serializer, ann, payload, raw).
    A trailing partial frame is returned as {"partial": bytes}."""
    frames = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < HEADER.size:
            frames.append({"partial": data[pos:]})
            break
        magic, ver, typ, flags, seq, dl, ser, al, _res, cs = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + al + max(dl, 0)
        if magic != b"PYRO" or dl < 0 or end > len(data):
            frames.append({"partial": data[pos:]})
            break
        ann = data[pos + HEADER.size : pos + HEADER.size + al]
        frames.append({
            "version": ver, "type": typ, "flags": flags, "seq": seq, "serializer": ser,
            "annotations": ann, "payload": data[pos + HEADER.size + al : end], "raw": data[pos:end],
        })
        pos = end
    return frames


def read_vector(relpath):
    """A captured Pyro4 4.82 frame, copied from shared/vectors into tests/vectors/pyro4."""
    return (VECTORS / relpath).read_bytes()


# --- the legacy backend ------------------------------------------------------------------------


class Backend(object):
    """legacy_server.py: a real Pyro4 daemon that records every byte it reads."""

    def __init__(self, workdir, port=None, nathost=None, natport=None, multiplex=False):
        self.port = port or free_port()
        self.multiplex = multiplex  # legacy_server.py --multiplex
        self.dir = Path(workdir)
        self.capture_dir = self.dir / "capture"
        self.fire_log = self.dir / "fire.log"
        self.ready_file = self.dir / "backend.ready"
        self.log_path = self.dir / "backend.log"
        self.names_log = self.dir / "names.log"
        self.nathost, self.natport = nathost, natport
        self.proc = None

    def command(self):
        args = [PYTHON, str(HERE / "legacy_server.py"), "--port", str(self.port),
                "--capture-dir", str(self.capture_dir), "--fire-log", str(self.fire_log),
                "--ready-file", str(self.ready_file), "--names-log", str(self.names_log)]
        if self.nathost:
            args += ["--nathost", self.nathost, "--natport", str(self.natport or 0)]
        if self.multiplex:
            args += ["--multiplex"]
        return args

    def start(self):
        """Starts command() and waits for its ready file (both daemons write one)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("%s exited (%s): %s" % (self.command()[1], self.proc.returncode,
                                                            self.log_path.read_text()))
            return self.ready_file.exists()

        wait_until(ready, START_TIMEOUT, what="%s READY" % Path(self.command()[1]).name)
        return self

    def stop(self):
        if self.proc:
            stop_process(self.proc)
            self._log.close()

    # What the daemon received, per accepted connection (capture order).
    def connections(self):
        if not self.capture_dir.exists():
            return []
        return [p.read_bytes() for p in sorted(self.capture_dir.glob("conn-*.bin"))]

    def total_bytes(self):
        return sum(len(c) for c in self.connections())

    def frames(self):
        """All frames the daemon received, per connection."""
        return [parse_pyro4_frames(c) for c in self.connections()]

    def fired(self):
        return self.fire_log.read_text().splitlines() if self.fire_log.exists() else []

    def resolved_names(self):
        """Every (object id, kind, name) the daemon tried to resolve, in order (legacy_server.py
        --names-log: kind is method, attribute_get or attribute_set)."""
        if not self.names_log.exists():
            return []
        out = []
        for line in self.names_log.read_text().splitlines():
            d = json.loads(line)
            out.append((d["object"], d["kind"], d["name"]))
        return out

    def assert_received_nothing(self):
        assert (self.capture_dir / "INSTALLED").exists(), "the backend's capture is not installed"
        conns = self.connections()
        assert all(len(c) == 0 for c in conns), (
            "the daemon received bytes: %r" % [c[:64] for c in conns if c])
        # Stronger: pyroguard dials the backend only after an allowed CONNECT, so a refusal
        # before that point leaves the daemon without even a connection.
        assert conns == [], "the daemon was dialled %d times" % len(conns)


# --- pyroguard ---------------------------------------------------------------------------------


class Pyroguard(object):
    """The real binary, run as `pyroguard run -c FILE`."""

    def __init__(self, workdir, certs, backend_port, overrides=None, listener="app"):
        self.dir = Path(workdir)
        self.certs = Path(certs)
        self.port = free_port()
        self.backend_port = backend_port
        self.listener = listener
        self.config_path = self.dir / "pyroguard.yaml"
        self.log_path = self.dir / "pyroguard.stderr"
        self.stdout_path = self.dir / "pyroguard.stdout"
        self.config = deep_merge(self.default_config(), overrides or {})
        self.proc = None
        self.returncode = None
        self.nofile = None  # RLIMIT_NOFILE (soft and hard) for the process, when set

    def default_config(self):
        return {
            "listeners": [{
                "name": self.listener,
                "listen": "127.0.0.1:%d" % self.port,
                "backend": "127.0.0.1:%d" % self.backend_port,
            }],
            "tls": {
                "cert": str(self.certs / "server.crt"),
                "key": str(self.certs / "server.key"),
                "client_ca": str(self.certs / "ca.crt"),
                "crl": str(self.certs / "ca.crl"),
                "min_version": Quoted("1.2"),
            },
            "pyro": {
                "protocols": [4],
                "serializers": ["serpent", "json", "marshal", "msgpack"],
                "max_message_bytes": 16777216,
                "compression": "allow",
            },
            # Every test client may call everything the name rules let through; tests of the
            # policy itself override "clients".
            "clients": [{
                "name": "everyone",
                "match": {"cn": "**"},
                "allow": [
                    {"object": "**", "methods": ["*"], "get": ["*"], "set": ["*"]},
                    {"object": "Pyro.Daemon", "methods": ["registered", "info"]},
                ],
            }],
            "limits": {
                "max_connections": 10000,
                "handshake_timeout": 10000,
                "idle_timeout": 300000,
                "backend_connect_timeout": 5000,
                # Teardown sends SIGTERM: calls still in flight get this long (stop_process
                # waits 5 s before SIGKILL, which would fail the test).
                "drain_timeout": 2000,
            },
            "log": {"level": "info"},
        }

    def write_config(self):
        self.config_path.write_text(to_yaml(self.config) + "\n")
        return self.config_path

    def start(self):
        if not PYROGUARD_BIN.exists():
            pytest.fail("pyroguard binary not found at %s (run `make`, or set PYROGUARD_BIN)"
                        % PYROGUARD_BIN)
        self.write_config()
        self._err = open(self.log_path, "wb")
        self._out = open(self.stdout_path, "wb")
        nofile = self.nofile

        def limit():
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen([str(PYROGUARD_BIN), "run", "-c", str(self.config_path)],
                                     stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
                                     preexec_fn=limit if nofile is not None else None)

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError("pyroguard exited with %s before listening; stderr:\n%s"
                                     % (self.proc.returncode, self.stderr_text()))
            return any(l.get("event") == "listening" for l in self.logs())

        wait_until(listening, START_TIMEOUT, what="pyroguard 'listening' log line")
        return self

    def stop(self):
        if self.proc:
            self.returncode = stop_process(self.proc)
            self._err.close()
            self._out.close()

    def assert_clean_exit(self):
        """After stop(): fail the test if pyroguard printed a sanitizer report or did not exit 0
        on SIGTERM (a crash fails the test whatever the clients saw)."""
        report = self.sanitizer_report()
        if report:
            pytest.fail("pyroguard printed a sanitizer report:\n%s" % report, pytrace=False)
        if getattr(self, "killed_by_test", False):
            return  # the test has already failed, saying why
        if self.proc is not None and self.returncode != 0:
            pytest.fail("pyroguard exited with %s at teardown (0 expected after SIGTERM); stderr "
                        "tail:\n%s" % (self.returncode, self.stderr_text()[-3000:]), pytrace=False)

    def sanitizer_report(self):
        """The sanitizer report pyroguard printed, if any (ASan/LSan/UBSan builds)."""
        text = self.stderr_text()
        m = SANITIZER_REPORT.search(text)
        return text[max(0, m.start() - 200):] if m else None

    def stderr_text(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def raw_log_lines(self):
        return [l for l in self.stderr_text().splitlines() if l.strip()]

    def logs(self, **match):
        """Parsed JSON log lines whose fields equal every given key=value."""
        out = []
        for line in self.raw_log_lines():
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if isinstance(d, dict) and all(d.get(k) == v for k, v in match.items()):
                out.append(d)
        return out

    def wait_log(self, timeout=LOG_TIMEOUT, count=1, **match):
        """Wait until at least `count` log lines match; returns them."""
        def enough():
            found = self.logs(**match)
            return found if len(found) >= count else None

        try:
            return wait_until(enough, timeout, what="log line %r" % match)
        except AssertionError:
            raise AssertionError("no pyroguard log line matching %r (x%d) within %ss; log:\n%s"
                                 % (match, count, timeout, self.stderr_text()))

    def settle(self, conn=None, timeout=LOG_TIMEOUT):
        """Wait until pyroguard logged the end of connection `conn` (or of every opened one), then
        leave a moment for anything in flight to reach the daemon before asserting absences."""
        if conn is not None:
            self.wait_log(timeout=timeout, event="conn_close", conn=conn)
        else:
            def all_closed():
                # A failed handshake need not end with conn_close; an opened connection must.
                opened = {l.get("conn") for l in self.logs(event="conn_open")}
                closed = {l.get("conn") for l in self.logs(event="conn_close")}
                return opened <= closed
            wait_until(all_closed, timeout, what="every connection's conn_close")
        time.sleep(0.3)


class Stack(object):
    """legacy daemon + pyroguard in front of it, for one test."""

    def __init__(self, workdir, certs, overrides=None, backend=True, backend_port=None):
        self.dir = Path(workdir)
        self.certs = Path(certs)
        self.backend = Backend(self.dir / "backend", port=backend_port)
        self.backend.dir.mkdir(parents=True, exist_ok=True)
        self.with_backend = backend
        self.pg = Pyroguard(self.dir / "pyroguard", certs, self.backend.port, overrides)
        self.pg.dir.mkdir(parents=True, exist_ok=True)
        self.backend.nathost, self.backend.natport = "localhost", self.pg.port

    def start(self):
        if self.with_backend:
            self.backend.start()
        self.pg.start()
        return self

    def stop(self):
        self.pg.stop()
        self.backend.stop()

    @property
    def port(self):
        return self.pg.port

    # --- clients

    def client(self, scenario, serializer="serpent", cert="client", ca="ca", timeout=CLIENT_TIMEOUT,
               extra=()):
        """Run pyro_client.py SCENARIO in its own interpreter; returns its JSON result."""
        return run_client(scenario, self.port, self.certs, serializer=serializer, cert=cert, ca=ca,
                          timeout=timeout, extra=extra)

    def tls_socket(self, cert="client", timeout=10, **ctx_opts):
        return tls_connect(self.port, self.certs, cert=cert, timeout=timeout, **ctx_opts)

    def refusals(self):
        return self.pg.logs(event="refused")


def run_client(scenario, port, certs, serializer="serpent", cert="client", ca="ca",
               timeout=CLIENT_TIMEOUT, extra=(), plain=False):
    args = [PYTHON, str(HERE / "pyro_client.py"), scenario, "--port", str(port),
            "--serializer", serializer, "--timeout", str(min(timeout, 30))]
    if plain:
        args.append("--plain")
    else:
        if ca:
            args += ["--ca", str(Path(certs) / ("%s.crt" % ca))]
        if cert:
            args += ["--cert", str(Path(certs) / ("%s.crt" % cert)),
                     "--key", str(Path(certs) / ("%s.key" % cert))]
    args += list(extra)
    p = subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    out = p.stdout.decode(errors="replace").strip().splitlines()
    assert out, "pyro_client.py printed nothing (rc %s); stderr:\n%s" % (
        p.returncode, p.stderr.decode(errors="replace"))
    return json.loads(out[-1])


def with_admin(overrides):
    """|overrides| plus an admin endpoint on a free port: (overrides, admin_port)."""
    port = free_port()
    return deep_merge({"admin": {"listen": "127.0.0.1:%d" % port}}, overrides), port


def scrape(admin_port):
    """GET /metrics parsed by prometheus_client: {(name, sorted labels): value}."""
    parser = pytest.importorskip(
        "prometheus_client.parser", reason="apt-get install python3-prometheus-client")
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        text = r.read().decode("utf-8")
        assert r.status == 200, (r.status, text)
    finally:
        conn.close()
    out = {}
    for fam in parser.text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, "missing %s%r" % (name, labels)
    return samples[key]


def tls_context(certs, cert="client", ca="ca", min_version=None, max_version=None):
    certs = Path(certs)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / ("%s.crt" % ca)))
    if cert:
        ctx.load_cert_chain(str(certs / ("%s.crt" % cert)), str(certs / ("%s.key" % cert)))
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def tls_connect(port, certs, cert="client", timeout=10, **ctx_opts):
    ctx = tls_context(certs, cert=cert, **ctx_opts)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost")
    except Exception:
        raw.close()
        raise


def read_until_closed(sock, timeout=10):
    """Read until the peer closes. Returns (bytes, how): how is 'eof', 'reset', 'tls_error: …'
    or 'timeout' (the peer kept the connection open)."""
    sock.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return buf, "timeout"
        except ssl.SSLZeroReturnError:
            return buf, "eof"
        except ssl.SSLEOFError:
            return buf, "eof"
        except ssl.SSLError as e:
            return buf, "tls_error: %s" % e
        except (ConnectionResetError, BrokenPipeError):
            return buf, "reset"
        if not chunk:
            return buf, "eof"
        buf += chunk
        if time.monotonic() > deadline:
            return buf, "timeout"


def recv_frames(sock, count, timeout=10):
    """Read exactly `count` complete Pyro4 frames (fails if the peer closes first)."""
    sock.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        frames = parse_pyro4_frames(buf)
        complete = [f for f in frames if "partial" not in f]
        if len(complete) >= count:
            return complete
        if time.monotonic() > deadline:
            raise AssertionError("got %d of %d frames before timeout" % (len(complete), count))
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed after %d of %d frames" % (len(complete), count))
        buf += chunk


class Session(object):
    """A persistent raw Pyro4 session (serpent) over mutual TLS: CONNECT to `thing` once (the
    captured vector), then calls on it, each answer returned as (ok, value or exception)."""

    def __init__(self, stack, cert="client", timeout=10):
        self.sock = stack.tls_socket(cert=cert, timeout=timeout)
        self.sock.sendall(read_vector("serpent/echo/00_c2s_CONNECT.bin"))
        [ok] = recv_frames(self.sock, 1, timeout=timeout)
        assert ok["type"] == MSG_CONNECTOK, ok
        self.seq = 0
        self.timeout = timeout

    def send(self, method, *args):
        self.seq = (self.seq + 1) & 0xffff
        payload = ("# serpent utf-8 python3.2\n('thing',%r,%r,{})" % (method, tuple(args))).encode()
        self.sock.sendall(pyro4_frame(MSG_INVOKE, payload=payload, serializer_id=1, seq=self.seq))

    def receive(self):
        import Pyro4.util  # the client side's own decoder, to read answers as a client would
        [r] = recv_frames(self.sock, 1, timeout=self.timeout)
        assert r["seq"] == self.seq, r
        value = Pyro4.util.get_serializer_by_id(1).deserializeData(r["payload"])
        return not (r["flags"] & 0x01), value

    def call(self, method, *args):
        self.send(method, *args)
        return self.receive()

    def close(self):
        self.sock.close()


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    p = subprocess.run(["bash", str(MINT), str(d)], timeout=120, capture_output=True, text=True)
    assert p.returncode == 0, "mint.sh failed:\n%s%s" % (p.stdout, p.stderr)
    return d


@pytest.fixture
def make_stack(tmp_path, certs):
    """make_stack(overrides=None, backend=True, name="stack", backend_port=None, nofile=None,
    multiplex=False, listener=None) -> started Stack; stopped at teardown, where a crash, a
    sanitizer report or no clean exit on SIGTERM fails the test. nofile: pyroguard's
    RLIMIT_NOFILE; multiplex: the daemon runs SERVERTYPE multiplex (legacy_server.py
    --multiplex); listener: keys added to the one listener (overrides would replace the whole
    listeners list, whose addresses are only known here)."""
    stacks = []

    def make(overrides=None, backend=True, name="stack", backend_port=None, nofile=None,
             multiplex=False, listener=None):
        s = Stack(tmp_path / ("%s%d" % (name, len(stacks))), certs, overrides, backend=backend,
                  backend_port=backend_port)
        s.pg.config["listeners"][0].update(listener or {})
        s.pg.nofile = nofile
        s.backend.multiplex = multiplex
        stacks.append(s)
        return s.start()

    yield make
    for s in stacks:
        s.stop()
    for s in stacks:
        s.pg.assert_clean_exit()


@pytest.fixture
def stack(make_stack):
    """The default deployment: pyroguard (serpent/json/marshal/msgpack) in front of the daemon."""
    return make_stack()
