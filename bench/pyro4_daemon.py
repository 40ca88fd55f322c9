#!/usr/bin/python3
"""The real Python Pyro4 daemon for `make bench`: one object 'thing' with echo(x) -> x.

    pyro4_daemon.py --port P                 plaintext (behind pyroguard and the peers)
    pyro4_daemon.py --port P --ssl DIR       Pyro4's own TLS: server.crt/server.key from DIR,
                                             client certificates required (ca.crt)

Prints "ready" on stdout once listening.
"""

import argparse
import os
import sys

import Pyro4


@Pyro4.expose
class Thing(object):
    def echo(self, x):
        return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ssl", metavar="DIR")
    args = ap.parse_args()
    Pyro4.config.SERVERTYPE = "thread"
    Pyro4.config.THREADPOOL_SIZE = 64
    Pyro4.config.COMMTIMEOUT = 0.0
    if args.ssl:
        Pyro4.config.SSL = True
        Pyro4.config.SSL_SERVERCERT = os.path.join(args.ssl, "server.crt")
        Pyro4.config.SSL_SERVERKEY = os.path.join(args.ssl, "server.key")
        Pyro4.config.SSL_CACERTS = os.path.join(args.ssl, "ca.crt")
        Pyro4.config.SSL_REQUIRECLIENTCERT = True
    daemon = Pyro4.Daemon(host="127.0.0.1", port=args.port)
    daemon.register(Thing(), "thing")
    print("ready", flush=True)
    daemon.requestLoop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
