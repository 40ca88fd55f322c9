/* conn: one client connection: mutual TLS on the client side, plaintext Pyro to the backend,
 * every client message framed, judged by inspect and only then forwarded (DESIGN.md
 * properties 3 and 4).
 *
 * A conn_t is created by conn_accept and owns its libuv handles (client TCP, backend TCP, one
 * timer), its SSL object and its buffers. It is freed only in the last close callback of its
 * handles; conn_close starts that and may be called any number of times. */
#ifndef PYROGUARD_CONN_H
#define PYROGUARD_CONN_H

#include "server.h"

/* conn_accept accepts one pending connection on |l| and starts its TLS handshake. When the
 * server is at limits.max_connections the connection is accepted and closed at once. */
void conn_accept(listener_t *l);

/* conn_close starts closing |c|: pending whole messages are flushed (bounded by a linger
 * timer), then both sides are closed and "conn_close" is logged with |reason|. */
void conn_close(conn_t *c, const char *reason);

/* conn_drain_all closes every connection of |srv| that has no call in flight; the others close
 * as soon as their answer has passed (the worker is draining). */
void conn_drain_all(server_t *srv);

/* conn_close_all closes every connection of |srv| with |reason|. */
void conn_close_all(server_t *srv, const char *reason);

#endif
