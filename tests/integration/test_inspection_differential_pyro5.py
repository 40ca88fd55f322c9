"""The differential test (test_inspection_differential.py) for Pyro5 frames.

Pyro5 is not installed here (nothing may be downloaded), so there is no Pyro5 daemon to ask. What
makes the comparison sound anyway: Pyro5 decodes with the same serializer libraries (serpent,
json, marshal, msgpack) and resolves names in the same order with the same private-name rule as
Pyro4 4.82 (PROTOCOL.md §3.5; its deny list is a subset of 4.82's, §7.1). So each frame is judged
by `pyroguard inspect` as a Pyro5 frame, and by the Pyro4 4.82 daemon's own decoding
(pyro_names.daemon_view) as the same message in Pyro4 framing:

  * honest: every c2s capture of real Pyro5 5.17 clients (tests/vectors/pyro5), converted to
    Pyro4 framing for the reference;
  * hostile: every generated §9 variant and every mutant of the Pyro4 differential corpus,
    converted to Pyro5 framing (flags and serializer ids renumbered, §3.2, §3.3; annotation chunks
    with u32 lengths, §3.4). Frames whose Pyro4 annotation block is malformed are left out: their
    Pyro5 form would not be the same message.

Where Pyro5 differs from Pyro4 on purpose — a CONNECT must name its object (§3.5), msgpack ext
types in 5.17 — pyroguard refuses, which counts as "refused by pyroguard only", never as a
mismatch. Required, as for Pyro4: no frame allowed with names other than the reference's, every
dotted/private/invalid name the reference resolves refused, no honest Pyro5 frame refused."""

import struct
import warnings
from collections import Counter, defaultdict

import pytest

import pyro5_wire as p5
from conftest import MSG_INVOKE, PYROGUARD_BIN, REPO, pyro4_frame
from pyro_names import daemon_view
from test_inspection_differential import (BAD_NAME_SCENARIOS, NAME_REASONS, SAFE, Case, compare,
                                          describe, generated_cases, honest_cases, mutant_cases,
                                          run_inspect)

VECTORS5 = REPO / "tests" / "vectors" / "pyro5"
CONFIG = REPO / "config" / "pyroguard.yaml"

# Pyro4 48 -> Pyro5 (§3.2): META_ON_CONNECT has no Pyro5 bit (Pyro5 always sends metadata).
FLAGS_4_TO_5 = {0x01: 0x01, 0x02: 0x02, 0x04: 0x04, 0x08: 0x08, 0x20: 0x10, 0x40: 0x20}
# serializer ids (§2.5, §3.3); the Pyro4 ids Pyro5 lacks become ids Pyro5 lacks (never 1-4).
SER_4_TO_5 = {1: 1, 2: 3, 3: 2, 6: 4}
H4 = struct.Struct("!4sHHHHiHHHH")


def _chunks4(block):
    """Pyro4 annotation chunks, or None for a block Pyro4 itself would read otherwise."""
    out, i = [], 0
    while i < len(block):
        if len(block) - i < 6:
            return None
        key, n = block[i:i + 4], struct.unpack("!H", block[i + 4:i + 6])[0]
        if i + 6 + n > len(block):
            return None
        out.append((key, block[i + 6:i + 6 + n]))
        i += 6 + n
    return out


def to_pyro5(raw):
    """The Pyro5 form of a Pyro4 48 frame, or None when there is no faithful one."""
    if len(raw) < H4.size:
        return None
    tag, ver, typ, flags, seq, dl, ser, al, _res, _ck = H4.unpack_from(raw)
    if tag != b"PYRO" or ver != 48 or dl < 0 or len(raw) != H4.size + al + dl or typ > 255:
        return None
    chunks = _chunks4(raw[H4.size:H4.size + al])
    if chunks is None:
        return None
    flags5 = 0
    for bit4, bit5 in FLAGS_4_TO_5.items():
        if flags & bit4:
            flags5 |= bit5
    ser5 = SER_4_TO_5.get(ser, 0x80 | (ser & 0x7f))
    if ser == 42:
        ser5 = 42  # the PING id, the same in both
    block = b"".join(k + struct.pack("!I", len(v)) + v for k, v in chunks)
    return p5.pyro5_frame(typ, raw[H4.size + al:], serializer_id=ser5, flags=flags5, seq=seq,
                          annotations=block)


def to_pyro4(raw5):
    """The Pyro4 48 form of a Pyro5 capture, for the reference."""
    [f] = p5.parse_pyro5_frames(raw5)
    flags4 = 0
    for bit4, bit5 in FLAGS_4_TO_5.items():
        if f["flags"] & bit5:
            flags4 |= bit4
    if f["type"] == 1:
        flags4 |= 0x10  # Pyro5 always returns metadata
    ser4 = {v: k for k, v in SER_4_TO_5.items()}.get(f["serializer_id"], f["serializer_id"])
    block = b"".join(k.encode("ascii") + struct.pack("!H", len(v)) + v
                     for k, v in f["annotations"])
    return pyro4_frame(f["type"], f["payload"], serializer_id=ser4, flags=flags4, seq=f["seq"],
                       annotations=block)


@pytest.fixture(scope="module")
def corpus5(tmp_path_factory):
    if not PYROGUARD_BIN.exists():
        pytest.fail("pyroguard binary not found at %s" % PYROGUARD_BIN)
    config = tmp_path_factory.mktemp("conf5") / "pyroguard.yaml"
    text = CONFIG.read_text()
    assert "  protocols: [4]" in text
    config.write_text(text.replace("  protocols: [4]", "  protocols: [5]", 1))

    cases = []
    for ser in SAFE:
        for path in sorted((VECTORS5 / ser).glob("*/*_c2s_*.bin")):
            raw5 = path.read_bytes()
            c = Case("pyro5 capture | %s/%s" % (path.parent.name, path.name), ser, "vector", raw5,
                     scenario=path.parent.name)
            c.reference = to_pyro4(raw5)
            cases.append(c)
    pyro4 = honest_cases() + generated_cases()
    pyro4 += mutant_cases(pyro4)
    skipped = 0
    for c4 in pyro4:
        raw5 = to_pyro5(c4.raw)
        if raw5 is None:
            skipped += 1
            continue
        origin = "generated" if c4.origin in ("vector", "captured") else c4.origin
        c = Case(c4.label, c4.serializer, origin, raw5, bullet=c4.bullet, scenario=c4.scenario)
        c.reference = c4.raw
        cases.append(c)
    run_inspect(cases, tmp_path_factory.mktemp("frames5"), extra=["-c", str(config)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for c in cases:
            c.py = daemon_view(c.reference)
            compare(c)
    return cases, skipped


def test_pyro5_differential_counts_table(corpus5, capsys):
    cases, skipped = corpus5
    table = defaultdict(Counter)
    for c in cases:
        table[(c.serializer, c.origin)][c.outcome] += 1
    cols = ["agree-allow", "agree-refuse", "refused-only", "MISMATCH"]
    lines = ["", "pyroguard inspect (Pyro5 frames) vs the daemon's decoding of the same messages "
             "(%d frames; %d Pyro4 frames with malformed annotations not converted)"
             % (len(cases), skipped),
             "%-12s %-10s %s" % ("serializer", "origin", " ".join("%13s" % c for c in cols))]
    for key in sorted(table):
        lines.append("%-12s %-10s %s" % (key[0], key[1],
                                         " ".join("%13d" % table[key][c] for c in cols)))
    total = Counter(c.outcome for c in cases)
    lines.append("%-23s %s" % ("total", " ".join("%13d" % total[c] for c in cols)))
    with capsys.disabled():
        print("\n".join(lines))
    assert len(cases) > 1000


def test_no_pyro5_frame_is_allowed_with_names_other_than_the_daemons(corpus5):
    cases, _ = corpus5
    bad = [c for c in cases if c.outcome == "MISMATCH"]
    assert not bad, "%d Pyro5 frame(s) allowed with other names:\n%s" % (
        len(bad), "\n".join("%s\n    => %s" % (describe(c), c.problem) for c in bad[:20]))


def test_every_dotted_private_or_invalid_name_in_a_pyro5_frame_is_refused(corpus5):
    cases, _ = corpus5
    missed = [c for c in cases if c.py.ok and c.py.problems() and c.pg["verdict"] == "allow"]
    assert not missed, "\n".join(describe(c) for c in missed[:20])


def test_honest_pyro5_traffic_is_never_refused_and_its_bad_names_always_are(corpus5):
    cases, _ = corpus5
    honest = [c for c in cases if c.origin == "vector"]
    assert len(honest) >= 100
    assert all(c.py.ok for c in honest), [describe(c) for c in honest if not c.py.ok][:5]
    clean = [c for c in honest if c.scenario not in BAD_NAME_SCENARIOS]
    refused = [c for c in clean if c.pg["verdict"] != "allow"]
    assert not refused, "\n".join(describe(c) for c in refused)
    dotted = [c for c in honest if c.scenario in BAD_NAME_SCENARIOS and c.py.msg_type == MSG_INVOKE]
    assert dotted and all(c.pg["verdict"] == "refuse" and c.pg.get("reason") in NAME_REASONS
                          for c in dotted), [describe(c) for c in dotted]
    assert all(c.pg.get("protocol") == "pyro5" for c in cases if "protocol" in c.pg)
