"""What reaches the TLS port that is not TLS from a client with a certificate: random bytes,
ClientHellos cut short at every length, ClientHellos with bytes flipped. pyroguard must close each
such connection, keep serving honest clients in between, and never dial the daemon for any of
them (the daemon is dialled only after a verified handshake and an allowed CONNECT). The inputs
are seeded, so a failure names an input that can be replayed."""

import random
import socket
import ssl
import struct

from conftest import (MSG_CONNECTOK, Session, metric, read_until_closed, scrape, tls_context,
                      wait_until, with_admin)

SEED = 20261127


def real_client_hello(certs):
    """The first flight of Python's ssl module (OpenSSL 3) as a Pyro4 client would send it."""
    ctx = tls_context(certs)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 200, "not a ClientHello record: %r" % hello[:16]
    return hello


def send_raw(port, data, wait_for_close=True):
    """Connect over TCP, send |data|, half-close, and read until pyroguard closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return b"", "reset"
        if not wait_for_close:
            return b"", "sent"
        return read_until_closed(s, timeout=10)


def assert_still_serving(stack):
    session = Session(stack)
    try:
        assert session.call("echo", "still here") == (True, "still here")
    finally:
        session.close()


def assert_no_garbage_reached_the_daemon(stack, honest_sessions):
    # Each honest session opened exactly one daemon connection; garbage opened none.
    conns = stack.backend.connections()
    assert len(conns) == honest_sessions, (
        "the daemon was dialled %d times for %d honest sessions" % (len(conns), honest_sessions))


def test_random_bytes_on_the_tls_port_are_closed_and_never_reach_the_daemon(stack):
    rng = random.Random(SEED)
    for i in range(150):
        size = rng.choice([1, 5, 16, 100, 517, 4096, 20000])
        data = bytes(rng.getrandbits(8) for _ in range(size))
        reply, how = send_raw(stack.pg.port, data)
        assert how != "timeout", "input %d (%d random bytes) kept the connection open" % (i, size)
    assert_still_serving(stack)
    assert stack.pg.proc.poll() is None
    assert_no_garbage_reached_the_daemon(stack, honest_sessions=1)
    wait_until(lambda: len(stack.pg.logs(event="tls_fail")) >= 100, 10,
               what="tls_fail lines for the garbage")


def test_client_hellos_cut_short_at_every_length_are_closed_and_never_reach_the_daemon(
        stack, certs):
    hello = real_client_hello(certs)
    cuts = list(range(1, len(hello), 3)) + [len(hello) - 1]
    for n in cuts:
        reply, how = send_raw(stack.pg.port, hello[:n])
        assert how != "timeout", "a ClientHello cut at %d of %d bytes kept the connection open" % (
            n, len(hello))
    assert_still_serving(stack)
    assert stack.pg.proc.poll() is None
    assert_no_garbage_reached_the_daemon(stack, honest_sessions=1)


def test_client_hellos_with_flipped_bytes_are_closed_and_never_reach_the_daemon(stack, certs):
    hello = real_client_hello(certs)
    rng = random.Random(SEED + 1)
    for i in range(150):
        mutated = bytearray(hello)
        for _ in range(rng.choice([1, 2, 8])):
            pos = rng.randrange(len(mutated))
            mutated[pos] ^= 1 << rng.randrange(8)
        reply, how = send_raw(stack.pg.port, bytes(mutated))
        assert how != "timeout", "mutation %d of the ClientHello kept the connection open" % i
        if i % 50 == 49:
            assert_still_serving(stack)
    assert stack.pg.proc.poll() is None
    assert_no_garbage_reached_the_daemon(stack, honest_sessions=3)


def test_a_client_that_resets_after_a_bad_client_hello_is_counted_as_a_tls_failure(
        make_stack, certs):
    """The operator's dashboards tell failed handshakes from broken sockets. A client that sends
    a bad ClientHello and resets at once makes the write of pyroguard's alert fail; the
    connection must still be counted under outcome tls_fail, not as an error."""
    overrides, admin_port = with_admin({})
    stack = make_stack(overrides)
    hello = real_client_hello(certs)
    rng = random.Random(SEED + 2)
    n = 100
    for i in range(n):
        mutated = bytearray(hello)
        pos = rng.randrange(5, len(mutated))  # the record header stays, the handshake breaks
        mutated[pos] ^= 0xFF
        with socket.create_connection(("127.0.0.1", stack.pg.port), timeout=10) as s:
            s.sendall(bytes(mutated))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # closed with SO_LINGER 0: an RST right behind the ClientHello
    wait_until(lambda: len(stack.pg.logs(event="conn_close")) >= n, 20,
               what="%d conn_close lines" % n)
    m = scrape(admin_port)
    outcomes = {dict(labels)["outcome"]: v for (name, labels), v in m.items()
                if name == "pyroguard_connections_total" and v}
    assert outcomes == {"tls_fail": n}, outcomes
    assert metric(m, "pyroguard_connections_open") == 0
    # The admin endpoint's readiness probe dials the daemon and sends nothing; no byte came.
    assert [c for c in stack.backend.connections() if c] == []
