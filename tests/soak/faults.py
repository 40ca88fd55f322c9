"""Raw clients of the pyroguard soak (tests/soak/soak.py) — the traffic a Pyro4 client never
sends — and the small probes the soak reads pyroguard with (/metrics, /proc).

Each client returns a dict describing what happened; the soak adds it up. None of them raises
for anything pyroguard does: a timeout is reported as {"outcome": "hung"}. They raise only for
bugs of the soak itself.
"""

import http.client
import os
import re
import socket
import ssl
import struct
import time

from conftest import (MSG_CONNECT, MSG_CONNECTFAIL, MSG_CONNECTOK, MSG_INVOKE, MSG_RESULT,
                      parse_pyro4_frames, pyro4_frame)

FLAG_META_ON_CONNECT = 0x10
SERPENT_HEADER = b"# serpent utf-8 python3.2\n"
CONNECT_THING = pyro4_frame(MSG_CONNECT, SERPENT_HEADER + b"{'handshake':'hello','object':'thing'}",
                            serializer_id=1, flags=FLAG_META_ON_CONNECT, seq=0)


def invoke_echo(arg, seq=1):
    """A serpent INVOKE of thing.echo(arg) (arg: a str)."""
    payload = SERPENT_HEADER + ("('thing','echo',(%r,),{})" % (arg,)).encode("utf-8")
    return pyro4_frame(MSG_INVOKE, payload, serializer_id=1, seq=seq)


def rst_close(sock):
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN (a client that vanishes)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Closed(Exception):
    """The peer closed (or reset) before the frames we waited for arrived."""


def read_frames(recv, count, deadline):
    """Reads with |recv| (a function returning bytes, b"" at EOF) until |count| whole frames
    arrived. Raises socket.timeout past |deadline|, Closed when the peer closes first."""
    buf = b""
    while True:
        frames = [f for f in parse_pyro4_frames(buf) if "partial" not in f]
        if len(frames) >= count:
            return frames
        if time.monotonic() > deadline:
            raise socket.timeout("no answer within the bound")
        try:
            chunk = recv()
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError) as e:
            raise Closed(str(e))
        if not chunk:
            raise Closed("EOF after %d bytes" % len(buf))
        buf += chunk


def connect_reply(frame):
    """What a CONNECT got: 'ok', 'backend_unavailable', or the CONNECTFAIL text."""
    if frame["type"] == MSG_CONNECTOK:
        return "ok"
    if frame["type"] == MSG_CONNECTFAIL:
        text = frame["payload"].decode("utf-8", "replace")
        return "backend_unavailable" if "pyroguard: backend unavailable" in text else text
    return "unexpected message type %d" % frame["type"]


def tcp_connect(port, timeout, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def client_context(certs, cert="client"):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.path.join(certs, "ca.crt"))
    ctx.load_cert_chain(os.path.join(certs, cert + ".crt"), os.path.join(certs, cert + ".key"))
    return ctx


# --- TLS garbage ---------------------------------------------------------------------------------


def garbage(port, rng, timeout, hello_ctx):
    """A raw TCP client that sends something that is not a TLS handshake pyroguard can complete:
    random bytes; a TLS record header followed by random bytes; an HTTP request; the first part
    of a real ClientHello; nothing at all. Then it either resets at once or waits for pyroguard
    to close (reading at most |timeout| s), then closes. Every one of them must end as exactly one
    failed handshake in pyroguard's metrics."""
    variant = rng.choice(["random", "record_header", "http", "half_hello", "empty"])
    if variant == "random":
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096)))
    elif variant == "record_header":
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 2048)))
        data = bytes([0x16, 0x03, rng.choice([0, 1, 3, 9])]) + struct.pack("!H", rng.randrange(0, 65536)) + body
    elif variant == "http":
        data = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
    elif variant == "half_hello":
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = hello_ctx.wrap_bio(inc, out, server_hostname="localhost")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = out.read()
        data = hello[: rng.randrange(1, len(hello))]
    else:
        data = b""
    s = tcp_connect(port, timeout)
    how = "reset" if rng.random() < 0.4 else "wait"
    try:
        if data:
            s.sendall(data)
        if how == "wait":
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not s.recv(65536):
                    break
    except (socket.timeout, OSError):
        pass  # pyroguard reset us, or kept waiting for more: both are fine
    finally:
        if how == "reset":
            rst_close(s)
        else:
            s.close()
    return {"variant": "%s+%s" % (variant, how)}


# --- clients that reset mid-frame ----------------------------------------------------------------


class MemTLS(object):
    """A TLS client over a socket through memory BIOs, so that the ciphertext of a message can
    be cut anywhere (inside a TLS record) before it is sent."""

    def __init__(self, ctx, sock):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")

    def flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                data = self.sock.recv(65536)
                if not data:
                    raise Closed("EOF during the handshake")
                self.inc.write(data)
        self.flush()

    def recv(self):
        while True:
            try:
                return self.obj.read(65536)
            except ssl.SSLWantReadError:
                data = self.sock.recv(65536)
                if not data:
                    return b""
                self.inc.write(data)
            except ssl.SSLZeroReturnError:
                return b""

    def send(self, data):
        self.obj.write(data)
        self.flush()

    def seal(self, data):
        """The ciphertext of |data|, not sent."""
        self.obj.write(data)
        return self.out.read()


def half_frame(port, certs_ctx, rng, timeout):
    """A client that completes the handshake, then vanishes (RST) in the middle of a message:
      connect  part of the CONNECT, then RST;
      invoke   CONNECT answered, then part of an INVOKE (1 byte .. all but one of a call of up to
               200 KiB), then RST;
      record   CONNECT answered, then the TLS ciphertext of an INVOKE cut at a random byte —
               inside a TLS record — then RST.
    Returns {"variant", "connect": ok|backend_unavailable|closed|<text>|None}."""
    variant = rng.choice(["connect", "invoke", "record"])
    s = tcp_connect(port, timeout)
    result = {"variant": variant, "connect": None}
    deadline = time.monotonic() + timeout
    try:
        tls = MemTLS(certs_ctx, s)
        tls.handshake()
        if variant == "connect":
            tls.send(CONNECT_THING[: rng.randrange(1, len(CONNECT_THING))])
        else:
            tls.send(CONNECT_THING)
            try:
                [reply] = read_frames(tls.recv, 1, deadline)[:1]
                result["connect"] = connect_reply(reply)
            except Closed:
                result["connect"] = "closed"
            if result["connect"] == "ok":
                arg = "h" * rng.randrange(0, 200 * 1024)
                frame = invoke_echo(arg)
                if variant == "invoke":
                    tls.send(frame[: rng.randrange(1, len(frame))])
                else:
                    sealed = tls.seal(frame)
                    s.sendall(sealed[: rng.randrange(1, len(sealed))])
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0, 0.05))  # let pyroguard take the partial message first
    except socket.timeout:
        result["hung"] = True
    except (Closed, OSError, ssl.SSLError) as e:
        result["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        rst_close(s)
    return result


# --- a client whose certificate matches no rule --------------------------------------------------


def stranger(port, stranger_ctx, timeout):
    """A valid certificate that matches no client rule: CONNECTFAIL no_matching_rule."""
    s = tcp_connect(port, timeout)
    try:
        t = stranger_ctx.wrap_socket(s, server_hostname="localhost")
        t.sendall(CONNECT_THING)
        [reply] = read_frames(lambda: t.recv(65536), 1, time.monotonic() + timeout)[:1]
        text = connect_reply(reply)
        return {"outcome": "refused" if "no client rule matches" in text else "wrong", "text": text}
    except socket.timeout:
        return {"outcome": "hung"}
    except (Closed, OSError, ssl.SSLError) as e:
        return {"outcome": "failed", "text": "%s: %s" % (type(e).__name__, e)}
    finally:
        s.close()


# --- a slow reader -------------------------------------------------------------------------------


def slow_reader(port, ctx, rng, timeout, size=1 << 20):
    """echo() of a ~1 MiB string, its reply read 2 KiB at a time with a pause after each read
    and a 4 KiB receive buffer: pyroguard must hold the reply back (backpressure) without
    growing, and deliver it whole. Returns {"outcome": answered|failed|hung|wrong, …}."""
    import serpent

    unit = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(4096))
    arg = (unit * (size // len(unit) + 1))[:size]
    s = tcp_connect(port, timeout, rcvbuf=4096)
    res = {"outcome": None, "connect": None, "reply_bytes": 0, "t_conn": time.time()}
    try:
        t = ctx.wrap_socket(s, server_hostname="localhost")
        t.sendall(CONNECT_THING)
        deadline = time.monotonic() + timeout
        try:
            [reply] = read_frames(lambda: t.recv(65536), 1, deadline)[:1]
            res["connect"] = connect_reply(reply)
        except Closed as e:
            res["connect"], res["outcome"], res["text"] = "closed", "failed", str(e)
            return res
        if res["connect"] != "ok":
            res["outcome"] = "failed" if res["connect"] == "backend_unavailable" else "wrong"
            return res
        t.sendall(invoke_echo(arg))
        pause = rng.uniform(0.001, 0.006)
        # The reply takes about size/2048*pause seconds to read: a generous overall bound.
        deadline = time.monotonic() + timeout + size / 2048 * pause * 2

        def slow():
            chunk = t.recv(2048)
            time.sleep(pause)
            return chunk

        try:
            [reply] = read_frames(slow, 1, deadline)[:1]
        except Closed as e:
            res["outcome"], res["text"] = "failed", str(e)
            return res
        res["reply_bytes"] = len(reply["raw"])
        ok = (reply["type"] == MSG_RESULT and not reply["flags"] & 1 and
              serpent.loads(reply["payload"]) == arg)
        res["outcome"] = "answered" if ok else "wrong"
        return res
    except socket.timeout:
        res["outcome"] = "hung"
        return res
    except (OSError, ssl.SSLError) as e:
        res["outcome"], res["text"] = "failed", "%s: %s" % (type(e).__name__, e)
        return res
    finally:
        res["t_fail"] = time.time()
        s.close()


# --- reading pyroguard ---------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics(dict):
    """/metrics as {(name, frozenset of label pairs): value}."""

    def get(self, name, **labels):
        return dict.get(self, (name, frozenset(labels.items())), 0.0)

    def total(self, name, **labels):
        """Sum of every series of |name| whose labels include |labels|."""
        want = set(labels.items())
        return sum(v for (n, l), v in self.items() if n == name and want <= l)

    def series(self, name):
        return {dict(l).get("reason", dict(l).get("outcome", "")): v
                for (n, l), v in self.items() if n == name}


def scrape(admin_port, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read().decode("utf-8")
        if r.status != 200:
            raise RuntimeError("GET /metrics: %d %s" % (r.status, body))
    finally:
        conn.close()
    m = Metrics()
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            raise RuntimeError("unparsable /metrics line: %r" % line)
        labels = frozenset(_LABEL.findall(match.group(2) or ""))
        m[(match.group(1), labels)] = float(match.group(3))
    return m


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def settled_fds(pid, samples=10, interval=0.2):
    """The fewest descriptors seen over |samples| reads: the readiness probe opens a socket to
    the backend once a second for a moment (README.md "Admin endpoint"), so one read may see
    one more. A leaked descriptor stays and is seen by every read."""
    seen = []
    for _ in range(samples):
        seen.append(fd_count(pid))
        time.sleep(interval)
    return min(seen), seen
