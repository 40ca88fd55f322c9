/* sys: what pyroguard asks of the operating system around the event loops: systemd readiness
 * notification, dropping privileges after binding, and no_new_privs.
 *
 * Nothing here keeps memory beyond the call (lookup buffers are freed before returning); every
 * function logs nothing itself and reports failures to its caller with a reason in |why| (a
 * caller buffer of |why_len| bytes, always NUL-terminated when why_len > 0; NULL is allowed).
 *
 * Order at start-up: bind every socket, read every file (configuration, certificates, keys),
 * sys_drop_privileges, sys_no_new_privs, start the worker threads, then sys_notify("READY=1"). */
#ifndef PYROGUARD_SYS_H
#define PYROGUARD_SYS_H

#include <stddef.h>
#include <sys/types.h>

/* The longest state sys_notify sends: a handful of KEY=VALUE lines; more is a caller's bug. */
#define SYS_NOTIFY_STATE_MAX 4096

/* sys_notify sends |state| ("READY=1", "RELOADING=1\nMONOTONIC_USEC=…", "STOPPING=1",
 * "STATUS=…") to $NOTIFY_SOCKET (an absolute path, or an abstract socket written "@name") as
 * one datagram. Returns 1 when sent, 0 when NOTIFY_SOCKET is unset or empty (not started by
 * systemd: nothing to do), -1 on error with the reason in |why|: an empty state or one longer
 * than SYS_NOTIFY_STATE_MAX, an address that is neither form or does not fit a sockaddr_un, a
 * send that failed or did not finish within a second (systemd's queue full). NOTIFY_SOCKET is
 * left in the environment, since a reload notifies again. */
int sys_notify(const char *state, char *why, size_t why_len);

/* sys_notify_reloading sends "RELOADING=1\nMONOTONIC_USEC=<CLOCK_MONOTONIC in µs>" as systemd
 * 253+ expects (older versions ignore the second line). The caller sends "READY=1" once the
 * reload is done. Returns as sys_notify does. */
int sys_notify_reloading(char *why, size_t why_len);

/* sys_resolve_ids finds the uid and gid sys_drop_privileges would switch to for |user| and
 * |group| (either may be NULL: the current id is given for it). Returns 1, or 0 with |why|. */
int sys_resolve_ids(const char *user, const char *group, uid_t *uid, gid_t *gid, char *why,
                    size_t why_len);

/* sys_drop_privileges switches to |user| and |group|, clears supplementary groups, and checks
 * that regaining root is impossible. Returns 1, or 0 with the reason in |why|; on 0 the process
 * may be half-switched and the caller must exit rather than carry on.
 *
 * |user| is a name looked up with getpwnam_r; when no user has that name and it is a decimal
 * number ("65532") it is taken as a uid, since container images often have no passwd entry for
 * the uid they run as. |group| likewise, with getgrnam_r. NULL |group| means the user's primary
 * group from its passwd entry; a numeric user without a passwd entry has none, so |group| must
 * then be given. NULL |user| keeps the uid (only the group changes: no check that root cannot
 * be regained is possible). Both NULL: nothing changes, returns 1.
 *
 * Not running as root: returns 1 if the process already has exactly that uid and gid (systemd's
 * User=/Group= did the switch), else 0 ("not running as root: cannot switch to user 'x'").
 *
 * The order is setgroups, setgid, setuid; then the real, effective and saved ids are read back,
 * and when the uid is not 0, setuid(0) and setgid(0) must fail. Call after every socket is
 * bound and every file is read, before starting threads. */
int sys_drop_privileges(const char *user, const char *group, char *why, size_t why_len);

/* sys_no_new_privs sets PR_SET_NO_NEW_PRIVS: no program this process or its children exec may
 * gain privileges (setuid bits, file capabilities). It cannot be unset. Returns 1, or 0 with the
 * reason in |why|. */
int sys_no_new_privs(char *why, size_t why_len);

/* sys_cpu_count returns the number of CPUs this process may use: the CPUs it may run on
 * (sched_getaffinity, which honours taskset and cpusets; the CPUs online if that fails), capped
 * by the CPU quota of its cgroup (sys_cgroup_cpu_limit) — a container limited to 1.5 CPUs on a
 * 64-CPU node gets 2. At least 1. */
unsigned sys_cpu_count(void);

/* sys_cgroup_cpu_limit returns the CPU bandwidth limit of the cgroup this process is in, as a
 * whole number of CPUs rounded up, or 0 when there is none or it cannot be read. cgroup v2:
 * "cpu.max" ("QUOTA PERIOD" or "max PERIOD") in the directory that /proc/self/cgroup's "0::"
 * line names; cgroup v1: cpu.cfs_quota_us / cpu.cfs_period_us under the "cpu" controller. The
 * directory and each parent up to the hierarchy's root are read and the smallest limit wins
 * (a parent's limit binds its children; in a container the path may name a directory that only
 * exists outside, whose ancestor inside is the container's own cgroup). |root| prefixes every
 * path read: "" for the running system, a directory laid out like it in tests. Every file is
 * read into a bounded buffer and parsed strictly (CBS); anything unexpected means "no limit". */
unsigned sys_cgroup_cpu_limit(const char *root);

#endif
