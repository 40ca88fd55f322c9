#!/usr/bin/env bash
# deploy/container/podman-conf.sh FILE - writes a containers.conf(5) for running containers on
# this host, for `CONTAINERS_CONF=FILE podman ...` (test-image.sh, tests/deploy).
#
# Two things a sandboxed or older host needs and a normal one does not mind:
#  - hybrid cgroups (v1 controllers plus a v2 "unified" mount): crun refuses to start containers
#    ("cgroups in hybrid mode not supported"); runc handles them, so it is used where it exists;
#  - rootful podman raises RLIMIT_NOFILE and RLIMIT_NPROC to its own defaults, which fails where
#    root lacks CAP_SYS_RESOURCE: containers get the host's own descriptor limit and 4096
#    processes instead.
set -euo pipefail
out=${1:?usage: podman-conf.sh FILE}
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
{
    echo "[containers]"
    echo "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=4096:4096\"]"
    if [ -d /sys/fs/cgroup/unified ] && ! mount | grep -q 'on /sys/fs/cgroup type cgroup2'; then
        if command -v runc >/dev/null; then
            echo "[engine]"
            echo "runtime = \"runc\""
        else
            echo "podman-conf: hybrid cgroups and no runc: crun cannot start containers here;" \
                "apt-get install runc" >&2
            exit 1
        fi
    fi
} >"$out"
