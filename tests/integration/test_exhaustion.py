"""Exhaustion, as an operator would provoke it: ten thousand TLS clients at once, and a connection
flood against `limits.max_connections`. The real binary, the real Pyro4 daemon (SERVERTYPE
multiplex: its default thread pool serves at most THREADPOOL_SIZE connections at a time, far
fewer than these tests hold), certificates minted by openssl.

The clients here are asyncio TLS connections sending the bytes a real Pyro4 4.82 client sends
(the captured CONNECT, and the captured echo INVOKE with its argument replaced by a token of the
same length, so every reply can be matched to its connection): one process cannot run ten
thousand Pyro4 proxies, each of which blocks a thread. A real Pyro4 client also calls through
while they are all held.

Running out of descriptors with a small RLIMIT_NOFILE (accept failures, recovery, no spinning, the
`descriptors_low` warning) is tested in test_limits_ops.py."""

import asyncio
import os
import resource
import socket
import ssl
import threading
import time

import pytest

from conftest import (HEADER, MSG_CONNECTOK, MSG_RESULT, SCALE, metric, read_until_closed,
                      read_vector, recv_frames, scrape, tls_context, wait_until, with_admin)

CONNECT = read_vector("serpent/echo/00_c2s_CONNECT.bin")
INVOKE = read_vector("serpent/echo/01_c2s_INVOKE.bin")
assert INVOKE.count(b"'hello'") == 1

WANTED = 10000  # concurrent TLS connections the issue asks for
FDS_PER_CONNECTION = 2  # in pyroguard: the client's socket and its own to the daemon
FDS_SPARE = 100  # listeners, log, admin, eventfds, the daemon's probe


def invoke_with_token(token):
    """The captured echo INVOKE with 'hello' replaced by |token| (5 bytes): the Pyro4 checksum
    covers the header only, and the length is unchanged."""
    assert len(token) == 5
    return INVOKE.replace(b"'hello'", b"'" + token + b"'")


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


async def read_frame(reader):
    head = await reader.readexactly(HEADER.size)
    f = HEADER.unpack(head)
    assert f[0] == b"PYRO", head
    body = await reader.readexactly(f[5] + f[7])  # data length + annotations length
    return {"type": f[2], "flags": f[3], "seq": f[4], "payload": body[f[7]:]}


class Held(object):
    """N verified TLS connections, each past its CONNECT, held open by one asyncio loop."""

    def __init__(self, port, certs, n, parallel=64):
        self.port, self.n, self.parallel = port, n, parallel
        self.ctx = tls_context(certs)
        self.conns = []

    async def _open_one(self, sem):
        async with sem:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port, ssl=self.ctx,
                                        server_hostname="localhost"), 120 * SCALE)
            writer.write(CONNECT)
            f = await asyncio.wait_for(read_frame(reader), 60 * SCALE)
            assert f["type"] == MSG_CONNECTOK, f
            self.conns.append((reader, writer))

    async def open_all(self):
        sem = asyncio.Semaphore(self.parallel)
        await asyncio.gather(*[self._open_one(sem) for _ in range(self.n)])

    async def _call_one(self, sem, i, reader, writer):
        token = b"%05d" % (i % 100000)
        async with sem:
            writer.write(invoke_with_token(token))
            f = await asyncio.wait_for(read_frame(reader), 60 * SCALE)
        return f["type"] == MSG_RESULT and not f["flags"] & 1 and b"'" + token + b"'" in f["payload"]

    async def call_all(self):
        sem = asyncio.Semaphore(256)
        return await asyncio.gather(*[self._call_one(sem, i, r, w)
                                      for i, (r, w) in enumerate(self.conns)])

    async def close_all(self):
        for _, w in self.conns:
            w.close()
        await asyncio.gather(*[w.wait_closed() for _, w in self.conns], return_exceptions=True)
        self.conns = []


def test_ten_thousand_tls_connections_are_held_at_once_and_each_is_served(make_stack, certs,
                                                                         record_property):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = min(WANTED, (hard - FDS_SPARE) // FDS_PER_CONNECTION)
    if n < WANTED:
        # Raising the hard limit needs CAP_SYS_RESOURCE (not granted in every container, not
        # here: 20,000); say what was held instead of pretending.
        print("RLIMIT_NOFILE hard limit is %d: pyroguard can hold %d client connections (each "
              "needs %d descriptors), not %d" % (hard, n, FDS_PER_CONNECTION, WANTED))
    assert n >= 5000, "hard descriptor limit %d is too low for this test" % hard
    record_property("connections_held", n)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds n sockets
    try:
        overrides, admin_port = with_admin({
            "workers": 2,
            # one more than held: room for the real Pyro4 client below
            "limits": {"max_connections": n + 1, "handshake_timeout": 120000 * SCALE},
        })
        stack = make_stack(overrides, nofile=hard, multiplex=True)
        pid = stack.pg.proc.pid
        fds0, rss0 = open_fds(pid), rss_kb(pid)

        held = Held(stack.port, certs, n)
        loop = asyncio.new_event_loop()
        try:
            t0 = time.monotonic()
            loop.run_until_complete(held.open_all())
            t_open = time.monotonic() - t0
            assert len(held.conns) == n

            # All n are open in pyroguard at once, and each has its own daemon connection.
            m = scrape(admin_port)
            assert metric(m, "pyroguard_connections_open") == n
            assert metric(m, "pyroguard_connections_rejected_total") == 0
            fds, rss = open_fds(pid), rss_kb(pid)
            assert fds >= fds0 + 2 * n, (fds0, fds)
            daemon = [c for c in stack.backend.connections() if c]
            assert len(daemon) == n, "the daemon has %d connections with a CONNECT" % len(daemon)

            # Every one of them is served while all are held: n calls, each answered on its own
            # connection with its own token.
            t0 = time.monotonic()
            ok = loop.run_until_complete(held.call_all())
            t_call = time.monotonic() - t0
            assert all(ok), "%d of %d calls not answered with their token" % (ok.count(False), n)
            # And a real Pyro4 client, a new connection, is served beside them.
            r = stack.client("echo")
            assert r["ok"], r
            print("held %d TLS connections (opened in %.1f s, one call each in %.1f s); pyroguard "
                  "%d descriptors, RSS %d -> %d kB (%.1f kB per connection with its daemon socket)"
                  % (n, t_open, t_call, fds, rss0, rss, (rss - rss0) / n))
        finally:
            loop.run_until_complete(held.close_all())
            loop.close()

        # Every connection closes; pyroguard's descriptors go back to where they were.
        wait_until(lambda: metric(scrape(admin_port), "pyroguard_connections_open") == 0,
                   60 * SCALE, what="connections_open back to 0")
        wait_until(lambda: open_fds(pid) <= fds0, 30 * SCALE,
                   what="pyroguard's descriptors back to %d" % fds0)
        m = scrape(admin_port)
        assert metric(m, "pyroguard_connections_total", outcome="client_closed") == n + 1  # + Pyro4
        # With every slot free again, a new client is served.
        r = stack.client("echo")
        assert r["ok"], r
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


FLOOD_LIMIT = 20


def connected_session(stack):
    s = stack.tls_socket(timeout=10 * SCALE)
    s.sendall(CONNECT)
    [ok] = recv_frames(s, 1, timeout=10 * SCALE)
    assert ok["type"] == MSG_CONNECTOK, ok
    return s


def echo_works(sock, token):
    sock.sendall(invoke_with_token(token))
    [r] = recv_frames(sock, 1, timeout=10 * SCALE)
    return r["type"] == MSG_RESULT and not r["flags"] & 1 and b"'" + token + b"'" in r["payload"]


@pytest.mark.parametrize("workers", [1, 2])
def test_max_connections_holds_under_a_connection_flood(make_stack, certs, workers):
    """max_connections held by honest clients, then eight threads opening connections as fast
    as they can for three seconds (half bare TCP, half TLS with a valid certificate and a
    CONNECT): not one more connection is admitted, none reaches the daemon, every flood
    connection is closed and counted, and the held clients are served throughout."""
    overrides, admin_port = with_admin({"workers": workers,
                                        "limits": {"max_connections": FLOOD_LIMIT}})
    stack = make_stack(overrides)
    pid = stack.pg.proc.pid
    held = [connected_session(stack) for _ in range(FLOOD_LIMIT)]
    try:
        stop = threading.Event()
        attempts = [0] * 8
        backlog_full = [0] * 8  # connect() failed: the kernel refused, pyroguard never saw it
        admitted = []  # flood connections that got a reply to their CONNECT
        samples = []

        def flood(k):
            ctx = tls_context(certs)
            while not stop.is_set():
                try:
                    raw = socket.create_connection(("127.0.0.1", stack.port), timeout=5)
                except OSError:
                    backlog_full[k] += 1
                    continue
                attempts[k] += 1
                with raw:
                    if k % 2 == 0:
                        continue  # bare TCP: connect and go
                    try:
                        s = ctx.wrap_socket(raw, server_hostname="localhost")
                        s.sendall(CONNECT)
                        reply, how = read_until_closed(s, timeout=5)
                    except (OSError, ssl.SSLError):
                        continue  # closed during the handshake: what a rejection looks like
                    if reply or how == "timeout":
                        admitted.append((reply[:32], how))

        def sample():
            while not stop.is_set():
                samples.append(metric(scrape(admin_port), "pyroguard_connections_open"))
                time.sleep(0.05)

        threads = [threading.Thread(target=flood, args=(k,)) for k in range(8)]
        threads.append(threading.Thread(target=sample))
        for t in threads:
            t.start()
        try:
            time.sleep(1.5)
            # Served in the middle of the flood.
            assert all(echo_works(s, b"%05d" % i) for i, s in enumerate(held))
            time.sleep(1.5)
        finally:
            stop.set()
            for t in threads:
                t.join(30)

        total = sum(attempts)
        print("flood: %d connections in 3 s (and %d connect() failures), open at most %d"
              % (total, sum(backlog_full), max(samples or [0])))
        assert total > 100, "the flood opened only %d connections" % total
        assert admitted == [], "%d flood connections were served: %r" % (len(admitted), admitted[:3])
        assert samples and max(samples) == FLOOD_LIMIT, samples
        # Each flood connection pyroguard accepted was rejected at once, logged and counted.
        wait_until(lambda: metric(scrape(admin_port),
                                  "pyroguard_connections_rejected_total") == total,
                   10 * SCALE, what="connections_rejected_total == %d" % total)
        assert len(stack.pg.logs(event="conn_rejected", reason="max_connections")) == total
        m = scrape(admin_port)
        assert metric(m, "pyroguard_connections_open") == FLOOD_LIMIT
        assert len(stack.pg.logs(event="conn_open")) == FLOOD_LIMIT
        # None of it reached the daemon: its only connections are the held clients' (and the
        # admin endpoint's readiness probes, which send nothing).
        assert len([c for c in stack.backend.connections() if c]) == FLOOD_LIMIT
        assert all(echo_works(s, b"%05d" % i) for i, s in enumerate(held))
        # The flood is over: pyroguard is idle again.
        cpu = lambda: sum(int(x) for x in open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[11:13])
        c0 = cpu()
        time.sleep(1)
        assert cpu() - c0 < 30 * SCALE, "pyroguard busy after the flood: %d ticks in 1 s" % (cpu() - c0)

        # A slot freed is a slot for the next client.
        held.pop().close()
        wait_until(lambda: metric(scrape(admin_port), "pyroguard_connections_open") < FLOOD_LIMIT,
                   10 * SCALE, what="a slot to free up")
        s = connected_session(stack)
        held.append(s)
        assert echo_works(s, b"after")
    finally:
        for s in held:
            s.close()
