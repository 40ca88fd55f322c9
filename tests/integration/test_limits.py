"""Connection limits from the `limits:` section (DESIGN.md property 5: bounded everything).
The handshake timeout is in test_tls.py, max_message_bytes in test_raw_frames.py."""

import time

from conftest import MSG_CONNECTOK, read_until_closed, read_vector, recv_frames

CONNECT = "serpent/echo/00_c2s_CONNECT.bin"
INVOKE = "serpent/echo/01_c2s_INVOKE.bin"


def test_idle_connection_is_closed_after_idle_timeout(make_stack):
    stack = make_stack({"limits": {"idle_timeout": 700}})
    with stack.tls_socket() as s:
        s.sendall(read_vector(CONNECT))
        [ok] = recv_frames(s, 1)
        assert ok["type"] == MSG_CONNECTOK
        t0 = time.monotonic()
        _, how = read_until_closed(s, timeout=10)
        elapsed = time.monotonic() - t0
    assert how != "timeout", "the idle connection was never closed"
    assert 0.5 <= elapsed < 5, elapsed
    [closed] = stack.pg.wait_log(event="conn_close")
    assert closed["reason"] == "idle_timeout"


def test_busy_connection_is_not_closed_by_idle_timeout(make_stack):
    stack = make_stack({"limits": {"idle_timeout": 700}})
    connect, invoke = read_vector(CONNECT), read_vector(INVOKE)
    with stack.tls_socket() as s:
        s.sendall(connect)
        recv_frames(s, 1)
        for _ in range(6):  # 6 x 0.3 s: well past the idle timeout, but never idle that long
            time.sleep(0.3)
            s.sendall(invoke)
            recv_frames(s, 1)
    assert stack.pg.logs(event="conn_close", reason="idle_timeout") == []


def fill_and_overflow(stack):
    """Open max_connections (2) working connections, then a third. Returns (admitted sockets,
    how the third ended: None if refused outright, else read_until_closed's verdict)."""
    connect = read_vector(CONNECT)
    admitted = [stack.tls_socket(), stack.tls_socket()]
    for s in admitted:
        s.sendall(connect)
        recv_frames(s, 1)
    try:
        third = stack.tls_socket(timeout=5)
    except OSError:
        return admitted, None  # refused before or during the handshake
    with third:
        try:
            third.sendall(connect)
        except OSError:
            pass
        return admitted, read_until_closed(third, timeout=5)


def test_connection_over_max_connections_is_rejected(make_stack):
    stack = make_stack({"limits": {"max_connections": 2}})
    admitted, third = fill_and_overflow(stack)
    try:
        if third is not None:
            reply, how = third
            assert how != "timeout" and reply == b"", "the third connection was served"
        [line] = stack.pg.wait_log(event="conn_rejected", reason="max_connections")
        assert line["listener"] == "app"
        # The two admitted connections keep working.
        for s in admitted:
            s.sendall(read_vector(INVOKE))
            [result] = recv_frames(s, 1)
            assert b"hello" in result["payload"]
    finally:
        for s in admitted:
            s.close()
    assert len(stack.backend.connections()) == 2


def test_rejected_connection_log_says_from_where(make_stack):
    # DESIGN.md property 6: every decision is logged with who and from where.
    stack = make_stack({"limits": {"max_connections": 2}})
    admitted, _ = fill_and_overflow(stack)
    for s in admitted:
        s.close()
    [line] = stack.pg.wait_log(event="conn_rejected", reason="max_connections")
    assert line.get("peer", "").startswith("127.0.0.1:"), line
