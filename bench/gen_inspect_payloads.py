"""Writes the frames bench/inspect_bench measures, encoded by the real Pyro4 4.82 serializers
(the bytes honest clients send): per serializer a typical small call (~100-byte payload) and
a call with one large string argument.

    /usr/bin/python3 bench/gen_inspect_payloads.py OUTDIR [LARGE_BYTES]
"""

import os
import struct
import sys

import Pyro4.util

SERIALIZERS = {"serpent": 1, "json": 2, "marshal": 3, "msgpack": 6}


def frame(serializer_id, payload, msg_type=4, flags=0, seq=1):
    version = 48
    cs = (msg_type + version + len(payload) + 0 + serializer_id + flags + seq + 0x34E9) & 0xFFFF
    return struct.pack("!4sHHHHiHHHH", b"PYRO", version, msg_type, flags, seq, len(payload),
                       serializer_id, 0, 0, cs) + payload


def main():
    out = sys.argv[1]
    large = int(sys.argv[2]) if len(sys.argv) > 2 else 4 << 20
    os.makedirs(out, exist_ok=True)
    for name, sid in SERIALIZERS.items():
        ser = Pyro4.util.get_serializer(name)
        small = ser.dumpsCall("inventory", "get_item", ("sku-12345", 3), {"detail": True})
        big = ser.dumpsCall("inventory", "store", ("x" * large,), {})
        with open(os.path.join(out, "%s-small.bin" % name), "wb") as f:
            f.write(frame(sid, small))
        with open(os.path.join(out, "%s-large.bin" % name), "wb") as f:
            f.write(frame(sid, big))


if __name__ == "__main__":
    main()
