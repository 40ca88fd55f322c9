"""Replies as a backend really sends them: in pieces, back to back, or wrong. pyroguard checks each
reply header before any of its bytes reach the client, and seals a whole reply in as few TLS
records as it can (conn_s2c); these tests pin what the client receives when the backend's bytes
arrive split at awkward places, and what happens when a reply breaks the protocol after good ones.
The backend here is a raw socket server in the test (not the Pyro4 daemon), because a real daemon
neither trickles its replies nor sends replies nobody asked for."""

import socket
import threading
import time

from conftest import (
    MSG_CONNECTOK, MSG_RESULT, parse_pyro4_frames, pyro4_frame, read_until_closed, read_vector,
    recv_frames, wait_until,
)

CONNECT = read_vector("serpent/echo/00_c2s_CONNECT.bin")
INVOKE = read_vector("serpent/echo/01_c2s_INVOKE.bin")


class RawBackend(object):
    """Accepts one connection on |port|; for each request frame it reads, calls script(i, frame)
    and sends the chunks it returns, pausing between them so that each arrives in its own read."""

    def __init__(self, port, script, pause=0.05):
        self.script, self.pause = script, pause
        self.received = []
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", port))
        self.srv.listen(1)
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            conn, _ = self.srv.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = b""
            while True:
                frames = [f for f in parse_pyro4_frames(buf) if "partial" not in f]
                if frames:
                    buf = buf[len(frames[0]["raw"]):]
                    self.received.append(frames[0]["raw"])
                    for chunk in self.script(len(self.received) - 1, frames[0]):
                        conn.sendall(chunk)
                        time.sleep(self.pause)
                    continue
                data = conn.recv(65536)
                if not data:
                    break
                buf += data
            conn.close()
        except OSError as e:
            self.error = e

    def close(self):
        self.srv.close()


def connectok(seq):
    return pyro4_frame(MSG_CONNECTOK, payload=b"{'handshake':'hello'}", seq=seq)


def result(seq, payload):
    return pyro4_frame(MSG_RESULT, payload=payload, seq=seq)


def test_a_reply_that_arrives_in_pieces_split_inside_its_header_reaches_the_client_whole(
        make_stack):
    stack = make_stack(backend=False)
    ok = connectok(0)
    reply = result(1, b"'" + b"x" * 3000 + b"'")

    def script(i, frame):
        if i == 0:
            return [ok[:7], ok[7:23], ok[23:]]          # the header in three reads
        # A header split after 10 bytes, then the rest of it with half the body, then the end.
        return [reply[:10], reply[10:1500], reply[1500:]]

    backend = RawBackend(stack.backend.port, script)
    try:
        with stack.tls_socket() as s:
            s.sendall(CONNECT)
            [got_ok] = recv_frames(s, 1)
            assert got_ok["raw"] == ok
            s.sendall(INVOKE)
            [got] = recv_frames(s, 1)
            assert got["raw"] == reply
        assert backend.received == [CONNECT, INVOKE]
    finally:
        backend.close()
    assert not stack.pg.logs(event="backend_protocol_error")


def call_then_read_until_closed(stack, answer):
    """CONNECT (answered CONNECTOK), then one INVOKE answered with the bytes |answer| in one send;
    returns what the client read until pyroguard closed the connection."""
    def script(i, frame):
        return [connectok(0)] if i == 0 else [answer]

    backend = RawBackend(stack.backend.port, script)
    try:
        with stack.tls_socket() as s:
            s.sendall(CONNECT)
            recv_frames(s, 1)
            s.sendall(INVOKE)
            data, how = read_until_closed(s)
    finally:
        backend.close()
    assert how in ("eof", "reset") or how.startswith("tls_error"), how
    return data


def test_a_reply_nobody_asked_for_closes_the_connection_after_the_good_reply_before_it(
        make_stack):
    stack = make_stack(backend=False)
    good = result(1, b"'fine'")
    # One read: a whole good reply, then one without a request.
    data = call_then_read_until_closed(stack, good + result(2, b"'unasked'"))
    frames = parse_pyro4_frames(data)
    assert [f.get("raw") for f in frames] == [good], "only the reply that was asked for"
    [line] = stack.pg.wait_log(event="backend_protocol_error")
    assert line["detail"] == "reply without a request"
    wait_until(lambda: stack.pg.logs(event="conn_close", reason="backend_protocol_error"), 10,
               what="conn_close backend_protocol_error")


def test_a_garbled_header_after_a_good_reply_closes_the_connection_and_the_good_reply_still_goes(
        make_stack):
    stack = make_stack(backend=False)
    good = result(1, b"'fine'")
    data = call_then_read_until_closed(stack, good + b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    assert data == good, "the good reply whole, and not one byte of what followed it"
    stack.pg.wait_log(event="backend_protocol_error")
