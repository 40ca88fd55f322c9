#!/usr/bin/python3
"""pyroguard side by side with HAProxy, stunnel, nginx (stream) and hitch: `make bench`.

Every peer terminates TLS 1.3 with the same ECDSA P-256 server certificate, requires a client
certificate from the same CA and forwards to the same backend; pyroguard also inspects every Pyro4
message against a policy. The load generator (bench/pyrobench.c) speaks Pyro4 over BoringSSL; the
backend is bench/fakepyro.c (a C Pyro4 daemon that is never the bottleneck) or, for the figures a
user feels, the real Python Pyro4 daemon (where Pyro4's own SSL is measured too).

The proxy under test runs pinned to CPU 0, the generator and the backend to CPU 1 (as SCHED_BATCH
tasks, see pinned()), so that the proxy is what saturates first. Peers are
interleaved (run 1 of every peer, then run 2, ...) so that drift hits all alike; each figure is
the median of the runs. Results go to stdout and, with --write, to bench/RESULTS.md.

    bench/run.py [--runs 3] [--duration 10] [--idle 9000] [--write] [--quick]
    bench/run.py --quick     # the CI smoke: every peer and scenario once, 1 s each, no thresholds
"""

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("BUILD_DIR", ROOT / "build"))
PYROGUARD = BUILD / "pyroguard"
PYROBENCH = BUILD / "pyrobench"
FAKEPYRO = BUILD / "fakepyro"
HANDSHAKE_BENCH = BUILD / "handshake_bench"
PY = "/usr/bin/python3"

BACKEND_PORT = 19190
PROXY_PORT = 19191
TWO_CPUS = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
PROXY_CPU, LOAD_CPU = "0", "1"
BATCH = shutil.which("chrt") is not None
# Each proxied connection holds two descriptors (client and backend): the connection limits the
# peers are given follow from the descriptor limit every process here inherits.
FD_LIMIT = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
MAXCONN = (FD_LIMIT - 200) // 2

PEERS = ["direct", "pyroguard", "haproxy", "stunnel", "nginx", "hitch"]
ALL_ROWS = PEERS + ["pyro4-ssl"]


def die(msg):
    print("bench: " + msg, file=sys.stderr)
    sys.exit(2)


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pinned(cmd, cpu):
    """|cmd| pinned to |cpu|. The generator and the backend share the load CPU and run there as
    SCHED_BATCH: a batch task does not preempt the other one when it wakes, so the two take turns
    in whole slices instead of switching at every message. Without it the figure depends on how
    the proxy spaces its output (a proxy that answers each message at once makes the load CPU
    switch tasks per message, and that CPU, not the proxy, becomes the limit), which measures the
    scheduler of a core that a real client and server would not share."""
    prefix = ["taskset", "-c", cpu] if TWO_CPUS else []
    if cpu == LOAD_CPU and BATCH:
        prefix = ["chrt", "--batch", "0"] + prefix
    return prefix + [str(c) for c in cmd]


# --- processes ---------------------------------------------------------------------------------


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, task)) as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_seconds(pid):
    """User + system CPU time of a process tree, in seconds."""
    total = 0
    for p in tree(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid):
    total = 0
    for p in tree(pid):
        try:
            with open("/proc/%d/status" % p) as f:
                m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
            total += int(m.group(1)) * 1024 if m else 0
        except OSError:
            pass
    return total


class Service(object):
    def __init__(self, name, cmd, port, cpu, workdir, env=None):
        self.name, self.port = name, port
        self.log = open(workdir / ("%s.log" % name), "wb")
        self.proc = subprocess.Popen(pinned(cmd, cpu), stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + 15
        while not port_open(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                die("%s did not start listening on %d; see %s" % (name, port, self.log.name))
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # The leader's exit is not the group's: a worker process (hitch, nginx) may still hold
        # the listening socket, and the next peer would share the port with it (SO_REUSEPORT)
        # and lose the connections the kernel hands to the dying one.
        deadline = time.monotonic() + 15
        while port_open(self.port):
            if time.monotonic() > deadline - 5:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                die("%s still listens on %d after it was stopped" % (self.name, self.port))
            time.sleep(0.05)
        self.log.close()


# --- peers --------------------------------------------------------------------------------------


def peer_command(name, work, certs, backend_port, listen_port):
    """The command line of a peer, its configuration written into |work|."""
    crt, key, ca = certs / "server.crt", certs / "server.key", certs / "ca.crt"
    pem = work / "server.pem"
    pem.write_bytes(crt.read_bytes() + key.read_bytes())
    if name == "pyroguard":
        cfg = work / "pyroguard.yaml"
        obj = "thing"
        cfg.write_text(textwrap.dedent("""\
            listeners: [{name: bench, listen: "127.0.0.1:%d", backend: "127.0.0.1:%d"}]
            tls: {cert: %s, key: %s, client_ca: %s, min_version: "1.3"}
            pyro: {protocols: [4], serializers: [serpent]}
            clients:
              - name: bench
                match: {cn: "**"}
                allow: [{object: %s, methods: [echo]}]
            limits: {max_connections: %d, idle_timeout: 600000}
            workers: 1
            log: {level: warn}
            """) % (listen_port, backend_port, crt, key, ca, obj, MAXCONN))
        return [PYROGUARD, "run", "-c", cfg]
    if name == "haproxy":
        cfg = work / "haproxy.cfg"
        cfg.write_text(textwrap.dedent("""\
            global
                nbthread 1
                maxconn %d
            defaults
                mode tcp
                timeout connect 5s
                timeout client 600s
                timeout server 600s
            frontend fe
                bind 127.0.0.1:%d ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3
                default_backend be
            backend be
                server s1 127.0.0.1:%d
            """) % (MAXCONN, listen_port, pem, ca, backend_port))
        return ["haproxy", "-db", "-f", cfg]
    if name == "stunnel":
        cfg = work / "stunnel.conf"
        cfg.write_text(textwrap.dedent("""\
            foreground = yes
            pid =
            [pyro]
            accept = 127.0.0.1:%d
            connect = 127.0.0.1:%d
            cert = %s
            key = %s
            CAfile = %s
            verifyChain = yes
            requireCert = yes
            sslVersionMin = TLSv1.3
            """) % (listen_port, backend_port, crt, key, ca))
        return ["stunnel", cfg]
    if name == "nginx":
        cfg = work / "nginx.conf"
        cfg.write_text(textwrap.dedent("""\
            load_module /usr/lib/nginx/modules/ngx_stream_module.so;
            daemon off;
            master_process on;
            worker_processes 1;
            worker_rlimit_nofile %d;
            pid %s/nginx.pid;
            error_log %s/nginx-error.log warn;
            events { worker_connections %d; }
            stream {
                server {
                    listen 127.0.0.1:%d ssl;
                    ssl_certificate %s;
                    ssl_certificate_key %s;
                    ssl_client_certificate %s;
                    ssl_verify_client on;
                    ssl_protocols TLSv1.3;
                    proxy_timeout 600s;
                    proxy_pass 127.0.0.1:%d;
                }
            }
            """) % (FD_LIMIT, work, work, 2 * MAXCONN + 10, listen_port, crt, key, ca,
                    backend_port))
        return ["nginx", "-c", cfg, "-p", work]
    if name == "hitch":
        cfg = work / "hitch.conf"
        cfg.write_text(textwrap.dedent("""\
            frontend = "[127.0.0.1]:%d"
            backend = "[127.0.0.1]:%d"
            pem-file = "%s"
            client-verify = required
            client-verify-ca = "%s"
            tls-protos = TLSv1.3
            workers = 1
            daemon = off
            user = "nobody"
            backlog = 1024
            """) % (listen_port, backend_port, pem, ca))
        return ["hitch", "--config", cfg]
    raise ValueError(name)


# --- one measurement ----------------------------------------------------------------------------


WARMUP_S = 1


def loadgen(port, tls, certs, mode, duration, extra=()):
    cmd = [PYROBENCH, "--connect", "127.0.0.1:%d" % port, "--mode", mode,
           "--duration", str(duration), "--warmup", str(WARMUP_S), "--json"] + list(extra)
    if tls:
        cmd += ["--tls", "--ca", certs / "ca.crt", "--cert", certs / "client.crt",
                "--key", certs / "client.key", "--sni", "localhost"]
    return cmd


def run_load(cmd, proxy):
    before = cpu_seconds(proxy.proc.pid) if proxy else 0.0
    r = subprocess.run(pinned(cmd, LOAD_CPU), capture_output=True, text=True, timeout=900)
    after = cpu_seconds(proxy.proc.pid) if proxy else 0.0
    try:
        result = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        die("pyrobench failed (exit %d): %s %s" % (r.returncode, r.stdout[-2000:],
                                                    r.stderr[-2000:]))
    result["proxy_cpu_s"] = after - before
    # The proxy's CPU time covers the warm-up too: per call (or handshake) it is divided by the
    # calls of warm-up and run together, at the measured rate.
    rate = result.get("handshakes_per_s") if result.get("mode") == "handshake" else \
        result.get("calls_per_s")
    span = float(result.get("duration_s", 0)) + WARMUP_S
    if proxy and rate:
        result["cpu_us"] = result["proxy_cpu_s"] / (rate * span) * 1e6
        result["capacity"] = 1e6 / result["cpu_us"] if result["cpu_us"] > 0 else None
    result["exit"] = r.returncode
    return result


def run_idle(port, certs, count, proxy, hold):
    """RSS growth of the proxy per idle TLS connection (after CONNECT). Connections pyrobench
    could not establish are counted and the first reasons kept (its stderr)."""
    base = rss_bytes(proxy.proc.pid) if proxy else 0
    cmd = loadgen(port, True, certs, "idle", hold, ["--conns", str(count), "--threads", "1"])
    p = subprocess.Popen(pinned(cmd, LOAD_CPU), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    established = failed = None
    grown = None
    for line in p.stdout:
        m = re.match(r"idle: (\d+) established(?:, (\d+) failed)?", line)
        if m:
            established, failed = int(m.group(1)), int(m.group(2) or 0)
            time.sleep(1.0)
            grown = rss_bytes(proxy.proc.pid) - base if proxy else 0
            break
    _, err = p.communicate(timeout=hold + 120)
    if established is None:
        die("pyrobench idle did not establish its connections: %s" % err[-2000:])
    return {"established": established, "not_established": failed,
            "why": " | ".join(err.strip().splitlines()[:3]),
            "rss_per_conn": grown / max(established, 1)}


# --- the limits ---------------------------------------------------------------------------------


def limits(certs):
    """The two limits on CPU 0: AES-128-GCM seal speed at 16 KiB records (bssl-tool speed: the
    TLS record layer's bulk limit on one core) and the server side of one full TLS 1.3 handshake
    with these certificates, in process (bench/handshake_bench.c)."""
    out = subprocess.run(pinned(["bssl-tool", "speed", "-filter", "AES-128-GCM"], PROXY_CPU),
                         capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"AES-128-GCM \(16384 bytes\) seal operations.*: ([\d.]+) MB/s", out)
    gcm = float(m.group(1)) * 1e6 if m else None
    r = subprocess.run(pinned([HANDSHAKE_BENCH, certs / "server.crt", certs / "server.key",
                               certs / "ca.crt", certs / "client.crt", certs / "client.key", "3"],
                              PROXY_CPU), capture_output=True, text=True, timeout=60)
    hs = json.loads(r.stdout) if r.returncode == 0 else {}
    return {"gcm_bytes_per_s": gcm, "handshake_per_s": hs.get("server_per_s"),
            "handshake_us": hs.get("server_us")}


# --- the whole run ------------------------------------------------------------------------------


FIXED_RATE = 10000  # calls/s: below every peer's closed-loop figure, stunnel's included

SCENARIOS = [
    # name, pyrobench mode, extra args, backend: fake | fake-echo | python
    ("small", "small", ["--conns", "16", "--threads", "1"], "fake"),
    # Latency compared at the same load: a closed loop gives a faster proxy more calls to carry
    # and so more queueing; here every peer is offered the same calls at the same times.
    ("rate", "small", ["--conns", "16", "--threads", "1", "--rate", str(FIXED_RATE)], "fake"),
    ("large", "large", ["--conns", "4", "--threads", "1"], "fake-echo"),
    ("handshake", "handshake", ["--conns", "8", "--threads", "1"], "fake"),
    ("handshake_resumed", "handshake", ["--conns", "8", "--threads", "1", "--resume"], "fake"),
    ("python", "small", ["--conns", "16", "--threads", "1"], "python"),
]


def start_backend(kind, work, certs, tls=False):
    if kind == "python":
        cmd = [PY, ROOT / "bench" / "pyro4_daemon.py", "--port", str(BACKEND_PORT)]
        if tls:
            cmd += ["--ssl", certs]
        return Service("pyro4-daemon", cmd, BACKEND_PORT, LOAD_CPU, work)
    cmd = [FAKEPYRO, "--listen", "127.0.0.1:%d" % BACKEND_PORT, "--quiet"]
    if kind == "fake-echo":
        cmd.append("--echo")
    return Service("fakepyro", cmd, BACKEND_PORT, LOAD_CPU, work)


def versions():
    def line(cmd, pattern=r".+"):
        """The first line of a command's output (stdout and stderr) that matches |pattern|."""
        try:
            r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=10)
        except OSError:
            return "not found"
        m = re.search("^.*%s.*$" % pattern, r.stdout + r.stderr, re.M)
        return m.group(0).strip() if m else "?"
    return {
        "pyroguard": line([PYROGUARD, "version"]),
        "haproxy": line(["haproxy", "-v"], "HAProxy version"),
        "stunnel": line(["stunnel", "-version"], r"^stunnel \d"),
        "nginx": line(["nginx", "-v"], "nginx version"),
        "hitch": line(["hitch", "--version"], "hitch"),
        "python3-pyro4": line([PY, "-c", "import Pyro4; print('Pyro4', Pyro4.__version__)"]),
        "kernel": platform.release(),
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                     if l.startswith("model name")), "?"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--idle", type=int, default=9000)
    ap.add_argument("--quick", action="store_true", help="CI smoke: 1 run, 1 s, 200 idle")
    ap.add_argument("--write", action="store_true", help="write bench/RESULTS.md")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--scenarios", default=",".join([sc[0] for sc in SCENARIOS] + ["idle"]),
                    help="a subset of: %(default)s")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.duration, args.idle = 1, 1, 200
    peers = args.peers.split(",")
    scenarios = args.scenarios.split(",")
    for binary in (PYROGUARD, PYROBENCH, FAKEPYRO, HANDSHAKE_BENCH):
        if not binary.exists():
            die("%s not found: run `make` first" % binary)
    for tool in ("haproxy", "stunnel", "nginx", "hitch", "bssl-tool", "openssl"):
        if shutil.which(tool) is None:
            die("%s not found: deploy/install-deps.sh --bench installs the peers" % tool)
    for port in (BACKEND_PORT, PROXY_PORT):
        if port_open(port):
            die("port %d on 127.0.0.1 is in use" % port)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    if args.idle > MAXCONN - 100:
        args.idle = MAXCONN - 100
        print("bench: the descriptor limit (%d) allows %d idle connections" % (FD_LIMIT,
                                                                             args.idle),
              file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="pyroguard-bench."))
    certs = work / "certs"
    subprocess.run(["bash", str(ROOT / "tests" / "certs" / "mint.sh"), str(certs)], check=True,
                   capture_output=True)
    os.chmod(work, 0o755)
    for f in certs.iterdir():
        os.chmod(f, 0o644)  # hitch reads its pem after dropping to nobody

    results = {}   # (scenario, peer) -> [result, ...]
    try:
        for scenario, mode, extra, kind in [sc for sc in SCENARIOS if sc[0] in scenarios]:
            for run in range(args.runs):
                for peer in peers + (["pyro4-ssl"] if kind == "python" else []):
                    if peer == "direct" and mode == "handshake":
                        continue  # no TLS: nothing to measure
                    # Pyro4's own TLS: the Python daemon terminates it, on the generator's CPU.
                    backend = start_backend(kind, work, certs, tls=(peer == "pyro4-ssl"))
                    proxy = None
                    try:
                        if peer not in ("direct", "pyro4-ssl"):
                            proxy = Service(peer, peer_command(peer, work, certs, BACKEND_PORT,
                                                               PROXY_PORT),
                                            PROXY_PORT, PROXY_CPU, work)
                        port = PROXY_PORT if proxy else BACKEND_PORT
                        r = run_load(loadgen(port, peer != "direct", certs, mode, args.duration,
                                             extra), proxy)
                        results.setdefault((scenario, peer), []).append(r)
                        print("%-18s %-9s run %d: %s" % (scenario, peer, run + 1, summary(r)),
                              flush=True)
                    finally:
                        if proxy:
                            proxy.stop()
                        backend.stop()

        # Memory per idle connection.
        backend = start_backend("fake", work, certs)
        try:
            for run in range(args.runs if "idle" in scenarios else 0):
                for peer in [p for p in peers if p != "direct"]:
                    proxy = Service(peer, peer_command(peer, work, certs, BACKEND_PORT,
                                                       PROXY_PORT),
                                    PROXY_PORT, PROXY_CPU, work)
                    try:
                        r = run_idle(PROXY_PORT, certs, args.idle, proxy, 3)
                    finally:
                        proxy.stop()
                    results.setdefault(("idle", peer), []).append(r)
                    print("%-18s %-9s run %d: %d established, %d failed, %.0f bytes/conn%s"
                          % ("idle", peer, run + 1, r["established"], r["not_established"],
                             r["rss_per_conn"], " (%s)" % r["why"] if r["why"] else ""),
                          flush=True)
        finally:
            backend.stop()
        lim = limits(certs)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report = render(results, lim, versions(), args)
    print()
    print(report)
    failed = ["%s/%s" % key for key, rs in sorted(results.items())
              for r in rs if r.get("errors") or r.get("failed")]
    if failed:
        # A figure with failed calls measures something else: nothing is written.
        print("bench: runs with errors: %s" % ", ".join(failed), file=sys.stderr)
        return 1
    if args.write:
        # The profiling record (hand-written, with its before/after figures) goes with it.
        profile = ROOT / "bench" / "PROFILE.md"
        extra = "\n" + profile.read_text() if profile.exists() else ""
        (ROOT / "bench" / "RESULTS.md").write_text(report + extra)
    return 0


def summary(r):
    if r.get("mode") == "handshake":
        return "%.0f handshakes/s, p99 %s us, resumed %s, errors %s" % (
            r.get("handshakes_per_s", 0), r.get("p99_us"), r.get("resumed"), r.get("errors"))
    return "%.0f calls/s, p50 %s us, p99 %s us, %.1f MB/s, errors %s" % (
        r.get("calls_per_s", 0), r.get("p50_us"), r.get("p99_us"),
        (r.get("tx_bytes_per_s", 0) + r.get("rx_bytes_per_s", 0)) / 1e6, r.get("errors"))


def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def render(results, limits, ver, args):
    lines = ["# pyroguard beside HAProxy, stunnel, nginx and hitch", ""]
    lines.append("`make bench` (bench/run.py), %s; %d run(s) of %g s per figure, median; the proxy "
                 "pinned to CPU %s, generator and backend to CPU %s%s%s." % (
                     time.strftime("%Y-%m-%d", time.gmtime()), args.runs, args.duration,
                     PROXY_CPU, LOAD_CPU, "" if TWO_CPUS else " (NOT pinned: fewer than 2 CPUs)",
                     " as SCHED_BATCH tasks (they take turns in whole time slices rather than "
                     "preempting each other at every message; bench/run.py pinned() says why)"
                     if BATCH else ""))
    lines.append("")
    lines.append("Backend: bench/fakepyro.c. TLS 1.3, ECDSA P-256 server and client certificates "
                 "from one CA, client certificate required by every peer; pyroguard also decodes "
                 "and judges every Pyro4 message (policy: one rule, one object, one method).")
    lines.append("")

    def row_table(title, scenario, cols):
        lines.append("## " + title)
        lines.append("")
        lines.append("| peer | " + " | ".join(c[0] for c in cols) + " |")
        lines.append("|---" * (len(cols) + 1) + "|")
        for peer in ALL_ROWS:
            rs = results.get((scenario, peer))
            if not rs:
                continue
            cells = []
            for _, key, fmt in cols:
                v = key(rs) if callable(key) else med(rs, key)
                cells.append(fmt % v if v is not None else "—")
            lines.append("| %s | %s |" % (peer, " | ".join(cells)))
        lines.append("")

    calls = ("calls/s", "calls_per_s", "%.0f")
    row_table("Small calls (~100-byte serpent payloads, 16 connections, closed loop)", "small",
              [calls, ("p50 µs", "p50_us", "%.0f"), ("p90 µs", "p90_us", "%.0f"),
               ("p99 µs", "p99_us", "%.0f"), ("p99.9 µs", "p999_us", "%.0f"),
               ("proxy CPU µs/call", "cpu_us", "%.1f"),
               ("calls/s per proxy core", "capacity", "%.0f")])
    row_table("Small calls at a fixed rate (%d calls/s offered on 16 connections, open loop; "
              "latency runs from when a call was due)" % FIXED_RATE, "rate",
              [calls, ("p50 µs", "p50_us", "%.0f"), ("p90 µs", "p90_us", "%.0f"),
               ("p99 µs", "p99_us", "%.0f"), ("p99.9 µs", "p999_us", "%.0f"),
               ("proxy CPU µs/call", "cpu_us", "%.1f")])
    row_table("Bulk (1 MiB payloads each way, 4 connections)", "large",
              [calls, ("MB/s (both ways)", lambda rs: statistics.median(
                  [(r["tx_bytes_per_s"] + r["rx_bytes_per_s"]) / 1e6 for r in rs]), "%.1f"),
               ("p99 µs", "p99_us", "%.0f"),
               ("MB/s per proxy core", lambda rs: statistics.median(
                   [(r["tx_bytes_per_s"] + r["rx_bytes_per_s"]) / 1e6 * r["capacity"] /
                    r["calls_per_s"] for r in rs if r.get("capacity")])
                if any(r.get("capacity") for r in rs) else None, "%.0f")])
    row_table("New connection per call (full handshake)", "handshake",
              [("handshakes/s", "handshakes_per_s", "%.0f"), ("p50 µs", "p50_us", "%.0f"),
               ("p99 µs", "p99_us", "%.0f"), ("proxy CPU µs/handshake", "cpu_us", "%.0f"),
               ("handshakes/s per proxy core", "capacity", "%.0f")])
    row_table("New connection per call (session resumption)", "handshake_resumed",
              [("handshakes/s", "handshakes_per_s", "%.0f"), ("resumed", "resumed", "%.0f"),
               ("p99 µs", "p99_us", "%.0f"), ("proxy CPU µs/handshake", "cpu_us", "%.0f")])
    row_table("The real Python Pyro4 daemon (small calls, 16 connections): what a user feels; "
              "pyro4-ssl is Pyro4's own TLS (SSL_REQUIRECLIENTCERT) with no proxy", "python",
              [calls, ("p50 µs", "p50_us", "%.0f"), ("p99 µs", "p99_us", "%.0f")])
    row_table("Memory per idle TLS connection (after CONNECT, backend connection open)", "idle",
              [("connections", "established", "%.0f"),
               ("not established (all runs)", lambda rs: sum(r["not_established"] for r in rs),
                "%d"),
               ("RSS bytes/connection", "rss_per_conn", "%.0f")])

    def ratio(scenario, key, a, b):
        x, y = med(results.get((scenario, a), []), key), med(results.get((scenario, b), []), key)
        return x / y if x and y else None

    lines.append("## Against the goals")
    lines.append("")
    lines.append("| goal | figure | met |")
    lines.append("|---|---|---|")

    def goal(text, value, fmt, ok):
        lines.append("| %s | %s | %s |" % (text, fmt % value if value is not None else "—",
                                           "—" if value is None else ("yes" if ok(value) else
                                                                       "**no**")))
    goal("small-call throughput ≥ HAProxy's (measured)",
         ratio("small", "calls_per_s", "pyroguard", "haproxy"), "%.2f × HAProxy",
         lambda v: v >= 1)
    goal("small-call throughput ≥ HAProxy's (per proxy core: 1 / CPU time per call)",
         ratio("small", "capacity", "pyroguard", "haproxy"), "%.2f × HAProxy", lambda v: v >= 1)
    goal("small-call throughput, against direct to the backend",
         ratio("small", "calls_per_s", "pyroguard", "direct"), "%.2f × direct", lambda v: True)
    goal("p99 latency ≤ HAProxy's, at the same offered load (%d calls/s)" % FIXED_RATE,
         ratio("rate", "p99_us", "pyroguard", "haproxy"), "%.2f × HAProxy", lambda v: v <= 1)
    goal("p99 latency ≤ HAProxy's, closed loop (each carrying what it can)",
         ratio("small", "p99_us", "pyroguard", "haproxy"), "%.2f × HAProxy", lambda v: v <= 1)
    bulk = results.get(("large", "pyroguard")) or []
    gcm = limits.get("gcm_bytes_per_s")
    measured = statistics.median([r["tx_bytes_per_s"] + r["rx_bytes_per_s"] for r in bulk]) \
        if bulk else None
    per_core = statistics.median([(r["tx_bytes_per_s"] + r["rx_bytes_per_s"]) * r["capacity"] /
                                  r["calls_per_s"] for r in bulk if r.get("capacity")]) \
        if any(r.get("capacity") for r in bulk) else None
    goal("bulk ≥ 80%% of one core's AES-128-GCM seal speed (%.0f MB/s at 16 KiB), measured"
         % (gcm / 1e6 if gcm else 0), measured / gcm if measured and gcm else None,
         "%.2f of the limit", lambda v: v >= 0.8)
    goal("the same, per proxy core", per_core / gcm if per_core and gcm else None,
         "%.2f of the limit", lambda v: v >= 0.8)
    goal("memory per idle connection ≤ HAProxy's", ratio("idle", "rss_per_conn", "pyroguard",
                                                         "haproxy"),
         "%.2f × HAProxy", lambda v: v <= 1)
    lim = limits.get("handshake_per_s")
    hs = med(results.get(("handshake", "pyroguard"), []), "handshakes_per_s")
    cap = med(results.get(("handshake", "pyroguard"), []), "capacity")
    goal("handshakes/s ≥ 90%% of the in-process limit (server side, %.0f/s), measured"
         % (lim or 0), hs / lim if hs and lim else None, "%.2f of the limit",
         lambda v: v >= 0.9)
    goal("the same, per proxy core", cap / lim if cap and lim else None, "%.2f of the limit",
         lambda v: v >= 0.9)
    lines.append("")
    lines.append("## Machine and versions")
    lines.append("")
    for k, v in ver.items():
        lines.append("- %s: %s" % (k, v))
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
