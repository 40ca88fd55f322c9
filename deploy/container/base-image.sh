#!/usr/bin/env bash
# deploy/container/base-image.sh - makes the Debian 12 base image the Dockerfile builds FROM,
# with debootstrap, and imports it into podman's store as debian:bookworm-slim.
#
# For machines that cannot pull from a registry (this project's CI among them). Where
# docker.io/library/debian:bookworm-slim is already in the store it is left alone.
#
# Usage: deploy/container/base-image.sh [CACHE_DIR]     (default: build/container)
# Env:   DEBIAN_MIRROR   the Debian mirror debootstrap installs from; by default the first
#                        deb.debian.org-style URI of this host's own apt sources.
#        PODMAN          podman command (default: podman)
#
# What it makes is what the official slim image is: debootstrap's minbase variant of bookworm
# with documentation, manual pages and locales excluded from every later dpkg install, and no
# apt lists or package cache. The host's own apt "Acquire::" settings (a proxy, a mirror
# snapshot's validity window) are copied in, so that `apt-get update` in the Dockerfile reaches
# the same mirror the host does.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${1:-$ROOT/build/container}
PODMAN=${PODMAN:-podman}
BASE_TAG=docker.io/library/debian:bookworm-slim
SUITE=bookworm

die() {
    printf 'base-image: %s\n' "$*" >&2
    exit 1
}

if $PODMAN image exists "$BASE_TAG"; then
    echo "base-image: $BASE_TAG is already in the image store"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is not installed: apt-get install debootstrap"

if [ -z "${DEBIAN_MIRROR:-}" ]; then
    DEBIAN_MIRROR=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' \
        /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        head -n1 | awk '{print $2}') || true
    DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
fi

mkdir -p "$CACHE"
TARBALL="$CACHE/debian-$SUITE-slim.tar"
if [ ! -s "$TARBALL" ]; then
    ROOTFS=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$ROOTFS"' EXIT
    echo "base-image: debootstrap --variant=minbase $SUITE from $DEBIAN_MIRROR"
    debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$DEBIAN_MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $CACHE/debootstrap.log"

    # The slim variant: no documentation, manual pages or locales from later installs.
    cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
CFG
    find "$ROOTFS/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
    find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* \
        "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin \
        "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/*
    # No apt cache in images, as in the official ones.
    cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
    # The host's Acquire settings, so that apt inside reaches the mirror as the host does.
    for f in /etc/apt/apt.conf.d/*; do
        [ -f "$f" ] && grep -q '^[[:space:]]*Acquire::' "$f" || continue
        cp "$f" "$ROOTFS/etc/apt/apt.conf.d/$(basename "$f")"
    done
    printf 'deb %s %s main\n' "$DEBIAN_MIRROR" "$SUITE" >"$ROOTFS/etc/apt/sources.list"
    : >"$ROOTFS/etc/hostname"
    tar --numeric-owner -C "$ROOTFS" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
fi

$PODMAN import -q --change 'CMD ["bash"]' "$TARBALL" "$BASE_TAG" >/dev/null
echo "base-image: imported $BASE_TAG ($($PODMAN image inspect --format '{{.Size}}' "$BASE_TAG") bytes)"
