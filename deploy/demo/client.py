#!/usr/bin/python3
"""Real Pyro4 clients for the pyroguard demo.

Usage: client.py MODE --certs DIR [--cert NAME] [--host localhost] [--port 9443] [--marker FILE]
  list      serpent client: inventory.list_items() and inventory.get_stock("widget")
  add       serpent client: inventory.add_stock("widget", 5), a write
  dotted    serpent client: calls the dotted name "add_stock.__globals__" (what an old Pyro4
            client with DOTTEDNAMES sends to walk into the server's globals)
  pickle    pickle client; its handshake carries an object whose unpickling would create
            --marker on the server (what an attacker would send)
  nocert    serpent client that presents no client certificate
--cert NAME picks DIR/NAME.crt and DIR/NAME.key (default: client, the billing client).
--plain: no SSL settings at all (a legacy client, for pyroguard in client mode).

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
    ap.add_argument("mode", choices=["list", "add", "dotted", "pickle", "nocert"])
    ap.add_argument("--certs", required=True)
    ap.add_argument("--cert", default="client")
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--port", type=int, default=9443)
    ap.add_argument("--marker", default="/tmp/pyroguard-demo-PWNED")
    ap.add_argument("--plain", action="store_true", help="no SSL settings (client mode)")
    args = ap.parse_args()

    Pyro4.config.SERIALIZER = "pickle" if args.mode == "pickle" else "serpent"
    Pyro4.config.SSL = not args.plain
    Pyro4.config.SSL_CACERTS = os.path.join(args.certs, "ca.crt")
    if args.mode != "nocert" and not args.plain:
        Pyro4.config.SSL_CLIENTCERT = os.path.join(args.certs, args.cert + ".crt")
        Pyro4.config.SSL_CLIENTKEY = os.path.join(args.certs, args.cert + ".key")
    Pyro4.config.COMMTIMEOUT = 10.0
    Pyro4.config.MAX_RETRIES = 0

    try:
        with Pyro4.Proxy("PYRO:inventory@%s:%d" % (args.host, args.port)) as inventory:
            if args.mode == "pickle":
                inventory._pyroHandshake = {"hello": FileCreatingPayload(args.marker)}
            if args.mode == "add":
                result = "add_stock('widget', 5) -> %r" % (inventory.add_stock("widget", 5),)
            elif args.mode == "dotted":
                result = inventory._pyroInvoke("add_stock.__globals__", (), {})
            else:
                result = "list_items() -> %r, get_stock('widget') -> %r" % (
                    inventory.list_items(), inventory.get_stock("widget"))
    except Exception as e:
        print("REFUSED: %s.%s: %s" % (type(e).__module__, type(e).__name__, e))
        return 3
    print("OK: %s" % (result,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
