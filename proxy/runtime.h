/* runtime: `pyroguard run` — the control thread around the workers.
 *
 * It loads the first generation (configuration + TLS context), opens every listening socket
 * for every worker and the admin endpoint, drops privileges, starts the workers (server.h),
 * and then serves, on its own loop: signals (SIGHUP reload, SIGTERM/SIGINT drain, a second
 * one stops at once), reloads when watched files change (reload.watch), the admin endpoint
 * (admin.h) with its readiness probe of every backend, and systemd notifications (sys.h).
 *
 * A reload builds a whole new generation; if anything is wrong with it the old one keeps
 * serving, and the failure is logged and counted. Drain stops accepting, lets calls in flight
 * finish within limits.drain_timeout, then closes what is left. */
#ifndef PYROGUARD_RUNTIME_H
#define PYROGUARD_RUNTIME_H

/* runtime_run serves |config_path| until drained; returns the process exit code: 0 after a
 * drain or stop, 1 when serving could not start, 2 when the configuration is invalid. */
int runtime_run(const char *config_path);

#endif
