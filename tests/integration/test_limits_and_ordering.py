"""Refusals injected by pyroguard reach the client in request order, at a frame boundary
(DESIGN.md property 3); a call in progress outlives the idle timeout; an unreachable backend is
given up on after backend_connect_timeout (property 5)."""

import socket
import time

from conftest import (
    HEADER, MSG_CONNECTOK, MSG_RESULT, Stack, pyro4_frame, read_vector,
    recv_frames,
)

CONNECT = read_vector("serpent/echo/00_c2s_CONNECT.bin")
INVOKE = read_vector("serpent/echo/01_c2s_INVOKE.bin")
FLAG_EXCEPTION, FLAG_ONEWAY = 0x01, 0x04


def invoke(seq, serializer_id=1, flags=0):
    """The captured serpent echo INVOKE, renumbered (and optionally relabelled)."""
    _m, _v, _t, _f, _s, dl, _ser, al, _r, _c = HEADER.unpack_from(INVOKE)
    body = INVOKE[HEADER.size:]
    return pyro4_frame(msg_type=4, payload=body[al:], annotations=body[:al], seq=seq,
                       serializer_id=serializer_id, flags=flags)


def test_pipelined_calls_get_their_replies_in_order_with_the_refusal_in_its_place(make_stack):
    stack = make_stack()
    # CONNECT, an allowed call, a pickle-labelled call, an allowed call: all in one write.
    data = CONNECT + invoke(1) + invoke(2, serializer_id=4) + invoke(3)
    with stack.tls_socket() as s:
        s.sendall(data)
        frames = recv_frames(s, 4)
    assert [f["type"] for f in frames] == [MSG_CONNECTOK, MSG_RESULT, MSG_RESULT, MSG_RESULT]
    assert [f["seq"] for f in frames[1:]] == [1, 2, 3]
    assert frames[1]["flags"] & FLAG_EXCEPTION == 0
    assert frames[2]["flags"] & FLAG_EXCEPTION
    assert frames[2]["serializer"] == 4  # answered in the client's own serializer
    assert b"Pyro4.errors" in frames[2]["payload"] and b"SecurityError" in frames[2]["payload"]
    assert frames[3]["flags"] & FLAG_EXCEPTION == 0
    stack.pg.settle()
    # The daemon saw CONNECT and the two allowed calls, never the pickle-labelled one.
    [conn] = [c for c in stack.backend.frames() if c]
    assert [(f["type"], f["seq"]) for f in conn] == [(1, 0), (4, 1), (4, 3)]


def test_refused_oneway_call_gets_no_reply_and_the_next_call_is_answered(make_stack):
    stack = make_stack()
    with stack.tls_socket() as s:
        s.sendall(CONNECT + invoke(1, serializer_id=4, flags=FLAG_ONEWAY) + invoke(2))
        frames = recv_frames(s, 2)
    assert [(f["type"], f["seq"]) for f in frames] == [(MSG_CONNECTOK, 0), (MSG_RESULT, 2)]
    [line] = stack.pg.wait_log(event="refused", reason="serializer_not_allowed")
    assert line["action"] == "dropped_oneway"
    stack.pg.settle()
    [conn] = [c for c in stack.backend.frames() if c]
    assert [f["seq"] for f in conn] == [0, 2]


def test_a_call_in_progress_is_not_cut_by_the_idle_timeout(make_stack):
    # The daemon's `sleep` call outlasts idle_timeout five times over; its reply must arrive.
    stack = make_stack(overrides={"limits": {"idle_timeout": 300}})
    payload = b"# serpent utf-8 python3.2\n('thing','sleep',(1.5,),{})"
    with stack.tls_socket() as s:
        s.sendall(CONNECT + pyro4_frame(msg_type=4, payload=payload, seq=1))
        frames = recv_frames(s, 2, timeout=10)
    assert [(f["type"], f["seq"]) for f in frames] == [(MSG_CONNECTOK, 0), (MSG_RESULT, 1)]
    assert frames[1]["flags"] & FLAG_EXCEPTION == 0, frames[1]["payload"]


def test_backend_that_never_accepts_gives_connectfail_after_backend_connect_timeout(
        tmp_path, certs):
    # A listening socket whose accept queue is full: the kernel drops further SYNs, so a
    # connect to it hangs exactly like one to an unreachable host (no network needed).
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
    stack = Stack(tmp_path / "stack", certs, {"limits": {"backend_connect_timeout": 500}},
                  backend=False, backend_port=port)
    try:
        stack.start()
        t0 = time.monotonic()
        r = stack.client("echo")
        elapsed = time.monotonic() - t0
        assert not r["ok"]
        assert "backend unavailable" in r["exc_msg"]
        assert elapsed < 10
        [line] = stack.pg.wait_log(event="refused", reason="backend_unavailable")
        assert line["action"] == "connectfail"
        assert line["msg_type"] == "CONNECT"
    finally:
        stack.stop()
        for f in fillers:
            f.close()
        ls.close()
    assert stack.pg.sanitizer_report() is None, stack.pg.sanitizer_report()


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def test_large_reply_to_a_client_that_does_not_read_is_held_back_not_buffered(make_stack):
    # The daemon answers a tiny request with 64 MiB. The client reads nothing for a while:
    # pyroguard must stop reading the daemon (backpressure) instead of buffering the reply.
    stack = make_stack()
    size = 64 << 20
    payload = b"# serpent utf-8 python3.2\n('thing','big',(%d,),{})" % size
    pid = stack.pg.proc.pid
    with stack.tls_socket(timeout=60) as s:
        s.sendall(CONNECT)
        recv_frames(s, 1)
        before = rss_kib(pid)
        s.sendall(pyro4_frame(msg_type=4, payload=payload, seq=1))
        time.sleep(3)  # the daemon has long produced the reply; the client is not reading
        held = rss_kib(pid) - before
        got = bytearray()
        s.settimeout(60)
        want = None  # the whole reply frame, as its header announces it
        while want is None or len(got) < want:  # then read it all: nothing was lost
            chunk = s.recv(1 << 20)
            assert chunk, "connection closed after %d bytes" % len(got)
            got += chunk
            if want is None and len(got) >= HEADER.size:
                _, _, _, _, _, dl, _, al, _, _ = HEADER.unpack_from(bytes(got[:HEADER.size]))
                want = HEADER.size + al + dl
    assert held < 16 * 1024, "pyroguard grew by %d KiB while the client was not reading" % held
    assert got.count(b"x") >= size
