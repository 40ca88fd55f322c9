#!/usr/bin/env bash
# podman as podman-compose 1.0.3 (Debian 12) should call it, for tests/deploy/test_container.py.
#
# That podman-compose passes `network_mode: "service:NAME"` through as `--network service:NAME`
# (which podman does not know) and adds the project network after it; compose means "join NAME's
# network namespace", which podman spells `--network container:<project>_NAME_1`. This shim makes
# only that translation; every other argument reaches podman unchanged. Runtime flags for this
# machine come from CONTAINERS_CONF (see the test).
set -euo pipefail
args=("$@")
if [ "${args[0]:-}" = run ]; then
    project=
    out=()
    i=0
    for a in "${args[@]}"; do
        case "$a" in --label=io.podman.compose.project=* | io.podman.compose.project=*) project=${a##*=} ;; esac
    done
    joined=
    while [ $i -lt ${#args[@]} ]; do
        a=${args[$i]}
        if [ "$a" = --network ] && [[ ${args[$((i + 1))]} == service:* ]]; then
            out+=(--network "container:${project}_${args[$((i + 1))]#service:}_1")
            joined=1
            i=$((i + 2))
            continue
        fi
        if [ -n "$joined" ] && { [ "$a" = --net ] || [ "$a" = --network-alias ]; }; then
            i=$((i + 2)) # the project network: not for a container in another's namespace
            continue
        fi
        out+=("$a")
        i=$((i + 1))
    done
    args=("${out[@]}")
fi
exec podman "${args[@]}"
