#!/usr/bin/python3
"""Real Pyro4 clients for the pyroguard demo.

Usage: client.py MODE --certs DIR [--host localhost] [--port 9443] [--marker FILE]
  allowed   serpent client with the billing client certificate: lists the inventory
  pickle    pickle client with the same certificate; its handshake carries an object whose
            unpickling would create --marker on the server (what an attacker would send)
  nocert    serpent client that presents no client certificate

Prints one line: "OK: <result>" (exit 0) or "REFUSED: <exception type>: <message>" (exit 3).
"""

import argparse
import builtins
import os
import sys

import Pyro4
import Pyro4.errors


class FileCreatingPayload(object):
    """Unpickling this creates a file on the server: harmless proof of code execution."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["allowed", "pickle", "nocert"])
    ap.add_argument("--certs", required=True)
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--port", type=int, default=9443)
    ap.add_argument("--marker", default="/tmp/pyroguard-demo-PWNED")
    args = ap.parse_args()

    Pyro4.config.SERIALIZER = "pickle" if args.mode == "pickle" else "serpent"
    Pyro4.config.SSL = True
    Pyro4.config.SSL_CACERTS = os.path.join(args.certs, "ca.crt")
    if args.mode != "nocert":
        Pyro4.config.SSL_CLIENTCERT = os.path.join(args.certs, "client.crt")
        Pyro4.config.SSL_CLIENTKEY = os.path.join(args.certs, "client.key")
    Pyro4.config.COMMTIMEOUT = 10.0
    Pyro4.config.MAX_RETRIES = 0

    try:
        with Pyro4.Proxy("PYRO:inventory@%s:%d" % (args.host, args.port)) as inventory:
            if args.mode == "pickle":
                inventory._pyroHandshake = {"hello": FileCreatingPayload(args.marker)}
            result = inventory.list_items()
    except Exception as e:
        print("REFUSED: %s.%s: %s" % (type(e).__module__, type(e).__name__, e))
        return 3
    print("OK: list_items() -> %r" % (result,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
