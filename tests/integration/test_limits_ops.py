"""Operational limits of the real pyroguard binary in front of the real Pyro4 daemon, as an
operator sees them: the global connection limit across workers (with its metric), the handshake
deadline against a client that dribbles its ClientHello, the idle timeout that never cuts a reply
in progress, the backend connect deadline, and running out of file descriptors without spinning.

Not repeated here (see test_limits.py, test_limits_and_ordering.py, test_tls.py): the idle close
of a connection between calls, periodic calls keeping a connection open, a `sleep` call
outliving the idle timeout, a silent TCP client hitting the handshake deadline, the basic
max_connections refusal and its log line, and the functional CONNECTFAIL of a backend that
never accepts."""

import os
import select
import socket
import ssl
import threading
import time

import pytest

from conftest import (HEADER, MSG_CONNECTFAIL, MSG_CONNECTOK, MSG_INVOKE, MSG_RESULT, SCALE,
                      metric, pyro4_frame, read_until_closed, read_vector, recv_frames,
                      scrape, tls_context, wait_until, with_admin)

pytest.importorskip("prometheus_client.parser", reason="apt-get install python3-prometheus-client")

CONNECT = read_vector("serpent/echo/00_c2s_CONNECT.bin")
INVOKE = read_vector("serpent/echo/01_c2s_INVOKE.bin")


# --- helpers -----------------------------------------------------------------------------------


def connected_session(stack, timeout=10):
    """A verified TLS connection whose CONNECT got its CONNECTOK."""
    s = stack.tls_socket(timeout=timeout)
    s.sendall(CONNECT)
    [ok] = recv_frames(s, 1, timeout=timeout)
    assert ok["type"] == MSG_CONNECTOK, ok
    return s


def conn_open_line(stack, sock):
    """The conn_open line of the connection |sock| (matched by its local port)."""
    peer = "127.0.0.1:%d" % sock.getsockname()[1]
    [line] = stack.pg.wait_log(event="conn_open", peer=peer)
    return line


def echo_works(sock):
    sock.sendall(INVOKE)
    [r] = recv_frames(sock, 1)
    return r["type"] == MSG_RESULT and not r["flags"] & 1 and b"hello" in r["payload"]


# --- max_connections ---------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_connection_over_max_connections_is_closed_at_once_whatever_worker_takes_it(
        make_stack, workers):
    overrides, admin_port = with_admin({"workers": workers, "limits": {"max_connections": 3}})
    stack = make_stack(overrides)
    held = [connected_session(stack) for _ in range(3)]
    try:
        if workers == 2:
            # The limit is global only if the held connections are spread over both workers
            # (each then holds fewer than 3): reshuffle until they are.
            for _ in range(60):
                if {conn_open_line(stack, s)["worker"] for s in held} == {0, 1}:
                    break
                s = held.pop(0)
                conn = conn_open_line(stack, s)["conn"]
                s.close()
                stack.pg.wait_log(event="conn_close", conn=conn)
                wait_until(lambda: metric(scrape(admin_port), "pyroguard_connections_open") == 2,
                           10, what="connections_open to drop to 2")
                held.append(connected_session(stack))
            workers_used = [conn_open_line(stack, s)["worker"] for s in held]
            assert set(workers_used) == {0, 1}, workers_used

        t0 = time.monotonic()
        try:
            fourth = stack.tls_socket(timeout=5)
        except (OSError, ssl.SSLError):
            how = "refused during the handshake"
        else:
            with fourth:
                try:
                    fourth.sendall(CONNECT)
                except OSError:
                    pass
                reply, how = read_until_closed(fourth, timeout=5)
                assert reply == b"" and how != "timeout", (reply, how)
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0 * SCALE, (
            "the 4th connection took %.2f s to be closed (%s)" % (elapsed, how))

        [line] = stack.pg.wait_log(event="conn_rejected")
        assert line["reason"] == "max_connections" and line["open_connections"] == 3, line
        m = scrape(admin_port)
        assert metric(m, "pyroguard_connections_rejected_total") == 1
        assert metric(m, "pyroguard_connections_open") == 3
        assert all(echo_works(s) for s in held)

        # One slot frees up: the next connection is served. The slot is free once the closed
        # connection's sockets are (the gauge), a moment after its conn_close line.
        s = held.pop()
        conn = conn_open_line(stack, s)["conn"]
        s.close()
        stack.pg.wait_log(event="conn_close", conn=conn)
        wait_until(lambda: metric(scrape(admin_port), "pyroguard_connections_open") == 2, 10,
                   what="connections_open to drop to 2")
        s = connected_session(stack)
        held.append(s)
        assert echo_works(s)
        assert len(stack.pg.logs(event="conn_rejected")) == 1
    finally:
        for s in held:
            s.close()
    # Every served connection reached the daemon with its CONNECT; the rejected one did not.
    served = [c for c in stack.backend.connections() if c]  # the admin probe's are empty
    assert len(served) == len(stack.pg.logs(event="conn_open"))


# --- handshake_timeout -------------------------------------------------------------------------


def client_hello(certs):
    """The first flight of a real TLS client (python ssl): a ClientHello record."""
    ctx = tls_context(certs)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 100  # a handshake record
    return hello


def test_client_dribbling_its_client_hello_is_cut_at_the_handshake_deadline(make_stack, certs):
    overrides, admin_port = with_admin({"limits": {"handshake_timeout": 2000}})
    stack = make_stack(overrides)
    hello = client_hello(certs)
    s = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
    t0 = time.monotonic()
    closed_after, sent = None, 0
    try:
        while sent < len(hello) and time.monotonic() - t0 < 10:
            try:
                s.sendall(hello[sent:sent + 1])  # one byte a second: never idle, never done
            except OSError:
                closed_after = time.monotonic() - t0
                break
            sent += 1
            r, _, _ = select.select([s], [], [], 1.0)
            if r:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                assert data == b"", "pyroguard answered a partial ClientHello: %r" % data
                closed_after = time.monotonic() - t0
                break
    finally:
        s.close()
    assert closed_after is not None, "still open after %d bytes in 10 s" % sent
    assert 1.9 <= closed_after < 2.0 + 1.5 * SCALE, closed_after
    [line] = stack.pg.wait_log(event="tls_fail", reason="handshake_timeout")
    assert line["listener"] == "app", line
    [close] = stack.pg.wait_log(event="conn_close", reason="handshake_timeout")
    assert close["bytes_in"] == 0
    m = scrape(admin_port)
    assert metric(m, "pyroguard_tls_handshake_failures_total", reason="handshake_timeout") == 1
    assert metric(m, "pyroguard_connections_total", outcome="handshake_timeout") == 1
    assert metric(m, "pyroguard_tls_handshake_duration_seconds_count") == 0
    assert all(c == b"" for c in stack.backend.connections())  # only the admin probe dialled


# --- idle_timeout ------------------------------------------------------------------------------


def test_verified_connection_that_never_sends_connect_is_closed_after_idle_timeout(make_stack):
    overrides, admin_port = with_admin({"limits": {"idle_timeout": 1000}})
    stack = make_stack(overrides)
    with stack.tls_socket() as s:
        conn_open_line(stack, s)  # the server side of the handshake is done
        t0 = time.monotonic()
        data, how = read_until_closed(s, timeout=10)
        elapsed = time.monotonic() - t0
    assert how in ("eof", "reset"), how
    assert data == b""
    assert 0.8 <= elapsed < 1.0 + 1.5 * SCALE, elapsed
    [close] = stack.pg.wait_log(event="conn_close")
    assert close["reason"] == "idle_timeout", close
    m = scrape(admin_port)
    assert metric(m, "pyroguard_connections_total", outcome="idle_timeout") == 1
    assert all(c == b"" for c in stack.backend.connections())  # only the admin probe dialled


def test_big_reply_read_slowly_for_several_idle_timeouts_arrives_whole(make_stack):
    """The reply of one call takes about four idle timeouts to read; the client reads it
    steadily (never pausing as long as the idle timeout) and the connection stays open and
    usable. (The client's receive buffer is kept small, so that what the kernels hold of the
    reply once pyroguard has written its last byte is read well within the idle timeout:
    pyroguard cannot see a client reading what is already in kernel buffers.)"""
    stack = make_stack({"limits": {"idle_timeout": 1000}})
    size = 32 << 20
    payload = b"# serpent utf-8 python3.2\n('thing','big',(%d,),{})" % size
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 << 10)
    raw.settimeout(30)
    raw.connect(("127.0.0.1", stack.port))
    with tls_context(stack.certs).wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(CONNECT)
        recv_frames(s, 1)
        s.sendall(pyro4_frame(MSG_INVOKE, payload=payload, seq=1))
        got = bytearray()
        want = None
        t0 = time.monotonic()
        next_pause = 256 << 10
        while want is None or len(got) < want:
            chunk = s.recv(1 << 16)
            assert chunk, "connection closed after %d bytes of the reply" % len(got)
            got += chunk
            if want is None and len(got) >= HEADER.size:
                _, _, _, _, _, dl, _, al, _, _ = HEADER.unpack_from(bytes(got[:HEADER.size]))
                want = HEADER.size + al + dl
            if len(got) >= next_pause:  # about 8 MiB/s
                time.sleep(0.03)
                next_pause += 256 << 10
        took = time.monotonic() - t0
        assert took > 3, "the reply took only %.1f s to read: not several idle timeouts" % took
        assert got.count(b"x") >= size
        # The connection is still usable afterwards.
        s.sendall(pyro4_frame(
            MSG_INVOKE, payload=b"# serpent utf-8 python3.2\n('thing','echo',('after',),{})",
            seq=2))
        [r] = recv_frames(s, 1)
        assert r["seq"] == 2 and b"after" in r["payload"]
    assert stack.pg.logs(event="conn_close", reason="idle_timeout") == []


# --- backend_connect_timeout -------------------------------------------------------------------


@pytest.fixture
def blackhole_port():
    """A 127.0.0.1 port whose accept queue is full: the kernel drops further SYNs, so a connect
    to it hangs like one to an unreachable host (no network needed)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port = ls.getsockname()[1]
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(f)
    time.sleep(0.2)
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        with pytest.raises(socket.timeout):
            probe.connect(("127.0.0.1", port))
    finally:
        probe.close()
    yield port
    for f in fillers:
        f.close()
    ls.close()


def test_connect_to_a_backend_that_never_answers_gets_connectfail_at_the_deadline(
        make_stack, blackhole_port):
    overrides, admin_port = with_admin({"limits": {"backend_connect_timeout": 1500}})
    stack = make_stack(overrides, backend=False, backend_port=blackhole_port)
    with stack.tls_socket(timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(CONNECT)
        [fail] = recv_frames(s, 1, timeout=10)
        elapsed = time.monotonic() - t0
        _, how = read_until_closed(s, timeout=5)
    assert fail["type"] == MSG_CONNECTFAIL, fail
    assert b"backend unavailable" in fail["payload"], fail["payload"]
    assert how in ("eof", "reset"), how
    assert 1.4 <= elapsed < 1.5 + 1.5 * SCALE, elapsed
    [line] = stack.pg.wait_log(event="refused", reason="backend_unavailable")
    assert line["action"] == "connectfail" and line["msg_type"] == "CONNECT", line
    [close] = stack.pg.wait_log(event="conn_close")
    assert close["reason"] == "backend_unavailable", close
    m = scrape(admin_port)
    assert metric(m, "pyroguard_backend_dial_failures_total") == 1
    assert metric(m, "pyroguard_connections_total", outcome="backend_unavailable") == 1


# --- running out of file descriptors -----------------------------------------------------------


def cpu_seconds(pid):
    """utime + stime of every thread of |pid|, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def closed_at_once(sock, wait=0.3):
    """True when the peer closed |sock| (EOF or reset) within |wait| seconds."""
    r, _, _ = select.select([sock], [], [], wait)
    if not r:
        return False
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


def exhaust_descriptors(stack, nofile):
    """Open raw TCP connections (each holds one of pyroguard's descriptors: they never start a
    handshake) until pyroguard sheds one at once. Returns the held sockets."""
    held = []
    try:
        while len(held) < 4 * nofile:
            s = socket.create_connection(("127.0.0.1", stack.port), timeout=5)
            if closed_at_once(s, wait=0.2):
                s.close()
                return held
            held.append(s)
    except BaseException:
        for s in held:
            s.close()
        raise
    for s in held:
        s.close()
    raise AssertionError("%d connections held and none shed" % len(held))


NOFILE = 64
OUT_OF_FDS = {"workers": 2, "limits": {"handshake_timeout": 60000}}


def test_out_of_file_descriptors_pyroguard_sheds_connections_without_spinning_and_recovers(
        make_stack):
    stack = make_stack(OUT_OF_FDS, nofile=NOFILE)
    pid = stack.pg.proc.pid
    held = exhaust_descriptors(stack, NOFILE)
    try:
        assert open_fds(pid) >= NOFILE - 2, open_fds(pid)
        # Clients keep coming; pyroguard closes them and must not burn CPU doing so.
        before = cpu_seconds(pid)
        t0 = time.monotonic()
        n_shed = 0
        while time.monotonic() - t0 < 2.0:
            with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as s:
                n_shed += closed_at_once(s, wait=0.1)
            time.sleep(0.05)
        used = cpu_seconds(pid) - before
        assert stack.pg.proc.poll() is None, "pyroguard died: %s" % stack.pg.stderr_text()[-2000:]
        assert used < 0.5 * SCALE, (
            "pyroguard used %.2f s of CPU in 2 s while out of descriptors" % used)
        assert n_shed > 0
        # Those already admitted are still open: none was dropped to make room.
        assert all(not closed_at_once(s, wait=0) for s in held)
    finally:
        for s in held:
            s.close()
    stack.pg.wait_log(event="tls_fail", reason="peer_closed", count=len(held), timeout=20)
    r = stack.client("echo")
    assert r["ok"], r


def test_running_low_on_descriptors_is_logged_before_clients_are_turned_away(make_stack):
    """An operator must find it in the log when pyroguard runs out of descriptors. libuv sheds a
    connection it cannot keep with its reserve descriptor without telling anyone, so pyroguard
    warns earlier: `descriptors_low` once past 90% of RLIMIT_NOFILE (at most every 10 s per
    worker), and `accept_paused` when a worker has to stop accepting."""
    stack = make_stack(OUT_OF_FDS, nofile=NOFILE)
    held = exhaust_descriptors(stack, NOFILE)
    try:
        [line] = stack.pg.wait_log(event="descriptors_low")[:1]
        assert line["descriptor"] >= NOFILE * 9 // 10 - 1, line
        assert "RLIMIT_NOFILE" in line["detail"], line
        # Warned once per worker at most in 10 s, not per connection.
        assert len(stack.pg.logs(event="descriptors_low")) <= 2
    finally:
        for s in held:
            s.close()


def test_burst_of_clients_while_out_of_descriptors_neither_spins_nor_floods_the_log(make_stack):
    """Many clients at once while every descriptor is taken (what a connection flood looks
    like): once the burst is over, pyroguard must be idle again, its log must not keep growing,
    and it must still serve a client and stop on SIGTERM once descriptors are free."""
    stack = make_stack(OUT_OF_FDS, nofile=NOFILE)
    pid = stack.pg.proc.pid
    held = exhaust_descriptors(stack, NOFILE)
    stop = threading.Event()

    def burst():
        while not stop.is_set():
            try:
                socket.create_connection(("127.0.0.1", stack.port), timeout=2).close()
            except OSError:
                pass

    threads = [threading.Thread(target=burst) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    try:
        size0, cpu0 = stack.pg.log_path.stat().st_size, cpu_seconds(pid)
        time.sleep(2)  # nobody connects now
        grown, used = stack.pg.log_path.stat().st_size - size0, cpu_seconds(pid) - cpu0
        spinning = used >= 0.5 * SCALE or grown > 64 << 10
        if spinning:
            # Do not let it fill the disk: stop it now, keep the head and tail of its log.
            stack.pg.proc.kill()
            stack.pg.proc.wait(10)
            stack.pg.killed_by_test = True
            data = stack.pg.log_path.read_bytes()
            flood = data.count(b'"accept_failed"') + data.count(b'"accept_paused"')
            stack.pg.log_path.write_bytes(
                data[:256 << 10] + b"\n[... %d bytes cut by the test ...]\n" % len(data) +
                data[-(64 << 10):])
        assert not spinning, (
            "after the burst, with nobody connecting, pyroguard used %.2f s of CPU in 2 s and "
            "its log grew by %d bytes (%d accept_failed/accept_paused lines in all); it had to be killed"
            % (used, grown, flood))
    finally:
        for s in held:
            s.close()
    r = stack.client("echo")
    assert r["ok"], r
