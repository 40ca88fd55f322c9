"""Python's side of the decoder differential tests: decode a payload with the very decoder the
Pyro4 daemon uses and print it in value_dump's canonical text (see tests/tools/value_dump.c).

    /usr/bin/python3 tests/tools/pydump.py serpent|json|marshal|msgpack FILE
    prints "ok <dump>" or "error <exception type>".
"""

import json
import marshal
import sys

import msgpack
import serpent


def dump(v):
    if v is None:
        return "None"
    if v is True:
        return "True"
    if v is False:
        return "False"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, complex):
        return "complex"
    if v is Ellipsis:
        return "..."
    if isinstance(v, str):
        return "s:" + v.encode("utf-8", "surrogatepass").hex()
    if isinstance(v, (bytes, bytearray)):
        return "b:" + bytes(v).hex()
    if isinstance(v, tuple):
        return "(" + ",".join(dump(x) for x in v) + ")"
    if isinstance(v, list):
        return "[" + ",".join(dump(x) for x in v) + "]"
    if isinstance(v, frozenset):
        return "f{" + ",".join(sorted(dump(x) for x in v)) + "}"
    if isinstance(v, set):
        return "{" + ",".join(sorted(dump(x) for x in v)) + "}"
    if isinstance(v, dict):
        return "d{" + ",".join(dump(k) + ":" + dump(x) for k, x in v.items()) + "}"
    return "?"


def decode(serializer, data):
    """Exactly the call the Pyro4 4.82 daemon makes (Pyro4/util.py), minus class recreation."""
    if serializer == "serpent":
        return serpent.loads(data)
    if serializer == "json":
        return json.loads(data.decode("utf-8"))
    if serializer == "marshal":
        return marshal.loads(data)
    if serializer == "msgpack":
        return msgpack.unpackb(data, raw=False)
    raise ValueError(serializer)


def main():
    serializer, path = sys.argv[1], sys.argv[2]
    data = open(path, "rb").read()
    try:
        v = decode(serializer, data)
    except Exception as e:  # every failure mode of the real decoder counts as "refused"
        print("error %s" % type(e).__name__)
        return
    print("ok " + dump(v))


if __name__ == "__main__":
    main()
