#!/usr/bin/python3
"""A typical legacy Pyro4 service, as found in the wild: plaintext on 127.0.0.1:9090 and accepting
pickle (so anyone who reaches the port can run code on it). `make demo` puts pyroguard in front.

Usage: legacy_service.py [--port 9090] [--nathost localhost --natport 9443]
NATHOST/NATPORT make the URIs the daemon hands out point at pyroguard (PROTOCOL.md §12).
"""

import argparse
import sys
import threading

import Pyro4

# The insecure legacy settings pyroguard exists for.
Pyro4.config.SERIALIZERS_ACCEPTED = {"serpent", "json", "marshal", "msgpack", "pickle", "dill", "cloudpickle"}
Pyro4.config.REQUIRE_EXPOSE = True


@Pyro4.expose
class Inventory(object):
    def __init__(self):
        self._items = {"widget": 12, "gadget": 3, "sprocket": 40}
        self._lock = threading.Lock()

    def list_items(self):
        with self._lock:
            return sorted(self._items)

    def get_stock(self, name):
        with self._lock:
            return self._items.get(name, 0)

    def add_stock(self, name, qty):
        with self._lock:
            self._items[name] = self._items.get(name, 0) + int(qty)
            return self._items[name]


def main():
    ap = argparse.ArgumentParser(description="legacy inventory service (Pyro4, accepts pickle)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9090)
    ap.add_argument("--nathost", default=None)
    ap.add_argument("--natport", type=int, default=0)
    args = ap.parse_args()
    daemon = Pyro4.Daemon(host=args.host, port=args.port, nathost=args.nathost,
                          natport=args.natport if args.nathost else None)
    uri = daemon.register(Inventory(), "inventory")
    print("legacy inventory service READY on %s, object URI %s" % (daemon.locationStr, uri), flush=True)
    try:
        daemon.requestLoop()
    except KeyboardInterrupt:
        pass
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
