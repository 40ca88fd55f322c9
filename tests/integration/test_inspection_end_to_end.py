"""Dotted, private and hidden names never reach the daemon: real Pyro4 4.82 clients over mutual TLS,
the real pyroguard, and the real legacy daemon, which logs every name it tries to resolve
(legacy_server.py --names-log; conftest Backend.resolved_names).

For each refused call the client gets Pyro4.errors.SecurityError naming the refused name,
pyroguard logs `refused` with a name reason, the daemon's names log shows it never even looked the
name up, and its byte capture shows the INVOKE never arrived (only the CONNECT did). Spellings real
clients cannot produce (escapes, references, string forms) are sent as raw frames over TLS with the
client certificate (PROTOCOL.md §9). The control test shows the names log does record a dotted
name when the daemon is reached directly, so its silence behind pyroguard means something.

One daemon + pyroguard per serializer serves this whole module (starting ~70 stacks would
dominate the run time); each test looks only at what happened while it ran (`Window`).
"""

import json
import marshal
import struct

import msgpack
import pytest

import Pyro4.errors
import Pyro4.util

from conftest import (FLAG_EXCEPTION, MSG_CONNECT, MSG_CONNECTOK, MSG_INVOKE, MSG_RESULT, SER_IDS, Stack,
                      pyro4_frame, read_vector, recv_frames, run_client)

SAFE = ["serpent", "json", "marshal", "msgpack"]
NAME_REASONS = {"dotted_name", "private_name", "invalid_name"}
FLAG_BATCH, FLAG_KEEPSERIALIZED = 0x08, 0x40


@pytest.fixture(scope="module")
def stacks(tmp_path_factory, certs):
    """stacks(key) -> a started Stack shared by every test of this module asking for `key`."""
    made = {}

    def get(key):
        if key not in made:
            made[key] = Stack(tmp_path_factory.mktemp("e2e-%s" % key), certs).start()
        return made[key]

    yield get
    for s in made.values():
        s.stop()
    for key, s in made.items():
        report = s.pg.sanitizer_report()
        assert not report, "pyroguard (%s) printed a sanitizer report:\n%s" % (key, report)
        assert s.pg.returncode == 0, "pyroguard (%s) exited with %s at teardown" % (key, s.pg.returncode)


class Window(object):
    """What a shared stack logged, captured and resolved from now on."""

    def __init__(self, stack):
        self.stack = stack
        self.n_refused = len(stack.refusals())
        self.n_conns = len(stack.backend.connections())
        self.n_names = len(stack.backend.resolved_names())

    def refusals(self):
        return self.stack.refusals()[self.n_refused:]

    def connections(self):
        return self.stack.backend.connections()[self.n_conns:]

    def frames(self):
        return self.stack.backend.frames()[self.n_conns:]

    def resolved_names(self):
        return self.stack.backend.resolved_names()[self.n_names:]

    def resolved(self):
        return [name for _obj, _kind, name in self.resolved_names()]

    def settle(self):
        self.stack.pg.settle()


@pytest.fixture(params=SAFE)
def serializer(request):
    return request.param


@pytest.fixture
def window(stacks, serializer):
    return Window(stacks(serializer))


def client(window, scenario, serializer, *extra):
    return window.stack.client(scenario, serializer, extra=list(extra))


def assert_refused_name(window, r, name, reason):
    """The client saw SecurityError naming `name`; pyroguard logged why; the daemon neither looked
    the name up nor received the INVOKE."""
    stack = window.stack
    assert not r["ok"], "the call went through: %r\npyroguard log:\n%s" % (r, stack.pg.stderr_text())
    assert r["exc_type"] == "Pyro4.errors.SecurityError", r
    assert name in r["exc_msg"] and r["exc_msg"].startswith("pyroguard: "), r
    window.settle()
    [line] = window.refusals()
    assert line["reason"] == reason, line
    assert line["msg_type"] == "INVOKE" and line["action"] == "exception_reply", line
    assert name in line["detail"], line
    assert name not in window.resolved(), window.resolved_names()
    conns = window.frames()
    assert conns, "the client never reached the daemon"
    for conn in conns:
        assert [f["type"] for f in conn] == [MSG_CONNECT], "the daemon received %r" % conn
    return line


# --- real clients ---------------------------------------------------------------------------------


def test_dotted_method_name_from_pyroInvoke_is_refused_before_the_daemon(window, serializer):
    r = client(window, "dotted", serializer)  # proxy._pyroInvoke("sub.echo", ("x",), {})
    assert_refused_name(window, r, "sub.echo", "dotted_name")
    assert window.resolved() == []


def test_dotted_attribute_chain_without_metadata_is_refused_before_the_daemon(window, serializer):
    r = client(window, "dotted_client_attr", serializer)  # METADATA=False; p.sub.echo("y")
    assert_refused_name(window, r, "sub.echo", "dotted_name")


@pytest.mark.parametrize("name", ["_private", "__class__", "__init__"])
def test_private_method_name_is_refused_before_the_daemon(window, serializer, name):
    r = client(window, "private", serializer, "--name", name)
    assert_refused_name(window, r, name, "private_name")


@pytest.mark.parametrize("name,reason", [("sub.echo", "dotted_name"), ("_private", "private_name")])
def test_batch_with_one_bad_name_is_refused_whole(window, serializer, name, reason):
    # b.echo(1); b.<name>(2); b() -- not even the clean first call may run (PROTOCOL.md §6 step 5).
    r = client(window, "batch_name", serializer, "--name", name)
    assert_refused_name(window, r, name, reason)
    assert window.resolved() == []


@pytest.mark.parametrize("name,reason", [("sub.value", "dotted_name"), ("__class__", "private_name")])
def test_property_read_of_a_bad_attribute_name_is_refused(window, serializer, name, reason):
    # The daemon applies no private check on this path (PROTOCOL.md §6.1); pyroguard does.
    r = client(window, "getattr_name", serializer, "--name", name)
    assert_refused_name(window, r, name, reason)


def test_property_write_of_a_private_attribute_name_is_refused(window, serializer):
    r = client(window, "setattr_name", serializer, "--name", "_private")
    assert_refused_name(window, r, "_private", "private_name")


def test_serialized_blob_call_whose_BLBI_names_a_dotted_method_is_refused(window, serializer):
    # KEEPSERIALIZED: the daemon takes the name from the marshal BLBI annotation (§2.8).
    r = client(window, "blob_name", serializer, "--name", "sub.echo")
    assert_refused_name(window, r, "sub.echo", "dotted_name")


# --- the instruments -------------------------------------------------------------------------------


def test_names_log_records_a_dotted_name_when_the_daemon_is_reached_directly(stacks):
    # Control: without pyroguard in the way the daemon does look `sub.echo` up.
    stack = stacks("control")
    r = run_client("dotted", stack.backend.port, stack.certs, plain=True)
    assert not r["ok"] and "sub.echo" in r["exc_msg"], r
    assert ("thing", "method", "sub.echo") in stack.backend.resolved_names()


@pytest.mark.parametrize("scenario,names", [
    ("echo", [("thing", "method", "echo")]),
    ("getattr", [("thing", "attribute_get", "value")]),
    ("stream", [("thing", "method", "gen")] + [("Pyro.Daemon", "method", "get_next_stream_item")] * 6),
])
def test_allowed_calls_resolve_exactly_the_names_the_client_sent(window, serializer, scenario, names):
    if serializer == "marshal" and scenario == "getattr":
        pytest.skip("the Pyro4 4.82 marshal client cannot send __getattr__ (tests/vectors/pyro4/README.md)")
    r = client(window, scenario, serializer)
    assert r["ok"], "%r\n%s" % (r, window.stack.pg.stderr_text())
    window.settle()
    assert window.refusals() == []
    assert window.resolved_names() == names


# --- raw frames: spellings real clients do not produce ----------------------------------------------


def serpent_call(text):
    return b"# serpent utf-8 python3.2\n" + text.encode()


def m_z(s, ref=False):
    return bytes([0x7A | (0x80 if ref else 0), len(s)]) + s.encode()


def m_list(items):
    return b"[" + struct.pack("<i", len(items)) + b"".join(items)


def m_tuple(items):
    return bytes([0x29, len(items)]) + b"".join(items)


RAW = [
    # (id, serializer, flags, annotations, payload, name, reason)
    ("serpent-x2e", "serpent", 0, b"", serpent_call(r"('thing','sub\x2eecho',('x',),{})"), "sub.echo",
     "dotted_name"),
    ("serpent-concatenation", "serpent", 0, b"", serpent_call("('thing','sub' # c\n '.echo',('x',),{})"),
     "sub.echo", "dotted_name"),
    ("serpent-escaped-getattr", "serpent", 0, b"", serpent_call(r"('thing','__g\x65tattr__',('_\x70rivate',),None)"),
     "_private", "private_name"),
    ("serpent-batch-outer-echo", "serpent", FLAG_BATCH, b"",
     serpent_call(r"('thing','<batch>',[('echo',(1,),{}),('sub\056echo',(2,),{})],None)"), "sub.echo",
     "dotted_name"),
    ("json-u002e", "json", 0, b"",
     rb'{"object": "thing", "method": "sub\u002eecho", "params": ["x"], "kwargs": {}}', "sub.echo", "dotted_name"),
    ("json-escaped-key", "json", 0, b"",
     rb'{"object": "thing", "m\u0065thod": "\u005fprivate", "params": [], "kwargs": {}}', "_private",
     "private_name"),
    ("json-batch-escape", "json", FLAG_BATCH, b"",
     rb'{"object": "thing", "method": "<batch>", "params": [["echo", [1], {}], ["sub\u002Eecho", [2], {}]], '
     rb'"kwargs": null}', "sub.echo", "dotted_name"),
    ("marshal-batch-ref", "marshal", FLAG_BATCH, b"",
     # entry 2's method is a reference to entry 1's argument string (PROTOCOL.md §9, marshal_batch_ref)
     m_tuple([m_z("thing"), m_z("<batch>"), m_list([
         m_tuple([m_z("echo"), m_list([m_z("sub.echo", ref=True)]), b"{0"]),
         m_tuple([b"r" + struct.pack("<i", 0), m_list([]), b"{0"])]), b"N"]), "sub.echo", "dotted_name"),
    ("marshal-t-string", "marshal", 0, b"",
     m_tuple([m_z("thing"), b"\xf4" + struct.pack("<i", 8) + b"sub.echo", m_list([]), b"{0"]), "sub.echo",
     "dotted_name"),
    ("msgpack-str16", "msgpack", 0, b"",
     b"\x94\xa5thing\xda\x00\x08sub.echo\x91\xa1x\x80", "sub.echo", "dotted_name"),
    ("msgpack-array16-getattr", "msgpack", 0, b"",
     b"\xdc\x00\x04\xa5thing\xab__getattr__\x91\xd9\x09__class__\xc0", "__class__", "private_name"),
    ("blbi-dotted-honest-payload", "serpent", FLAG_KEEPSERIALIZED,
     b"BLBI" + struct.pack("!H", len(marshal.dumps(("i", "thing", "sub.echo")))) + marshal.dumps(("i", "thing", "sub.echo")),
     serpent_call("('thing','blob',{'k':[1]},{})"), "sub.echo", "dotted_name"),
]


def decode_reply(serializer, frame):
    return Pyro4.util.get_serializer_by_id(SER_IDS[serializer]).deserializeData(frame["payload"])


def honest_echo(serializer, seq):
    data = {"serpent": serpent_call("('thing','echo',('after',),{})"),
            "json": json.dumps({"object": "thing", "method": "echo", "params": ["after"], "kwargs": {}}).encode(),
            "marshal": marshal.dumps(("thing", "echo", ["after"], {})),
            "msgpack": msgpack.packb(("thing", "echo", ["after"], {}))}[serializer]
    return pyro4_frame(MSG_INVOKE, data, serializer_id=SER_IDS[serializer], seq=seq)


@pytest.mark.parametrize("case", RAW, ids=[c[0] for c in RAW])
def test_hidden_name_in_a_raw_frame_is_refused_and_never_forwarded(stacks, case):
    _id, ser, flags, annotations, payload, name, reason = case
    window = Window(stacks(ser))
    bad = pyro4_frame(MSG_INVOKE, payload, serializer_id=SER_IDS[ser], flags=flags, seq=1, annotations=annotations)
    with window.stack.tls_socket() as s:
        s.sendall(read_vector("%s/echo/00_c2s_CONNECT.bin" % ser))
        [ok] = recv_frames(s, 1)
        assert ok["type"] == MSG_CONNECTOK
        s.sendall(bad)
        [reply] = recv_frames(s, 1)
        assert (reply["type"], reply["seq"], reply["serializer"]) == (MSG_RESULT, 1, SER_IDS[ser])
        assert reply["flags"] & FLAG_EXCEPTION
        exc = decode_reply(ser, reply)
        assert isinstance(exc, Pyro4.errors.SecurityError) and name in str(exc), repr(exc)
        # The connection stays usable: an honest call afterwards is answered by the daemon.
        s.sendall(honest_echo(ser, 2))
        [after] = recv_frames(s, 1)
        assert after["seq"] == 2 and not after["flags"] & FLAG_EXCEPTION
        assert decode_reply(ser, after) == "after"
    window.settle()
    [line] = window.refusals()
    assert line["reason"] == reason and name in line["detail"], line
    [conn] = window.frames()
    assert [f["type"] for f in conn] == [MSG_CONNECT, MSG_INVOKE]
    assert conn[1]["seq"] == 2 and bad not in window.connections()[0]
    assert window.resolved() == ["echo"]
