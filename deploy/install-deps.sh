#!/usr/bin/env bash
# Installs the Debian 12 packages pyroguard needs to build, test and run its demo.
# As root it installs what is missing; otherwise it names exactly what to install.
# With --container, also what `make test-container` needs: podman and buildah to build and run
# the image, debootstrap for its base, runc (crun cannot start containers on hosts with hybrid
# cgroups), catatonit (the pods' pause process) and podman-compose. With --bench, also the peers
# `make bench` measures pyroguard beside (HAProxy, stunnel, nginx's stream module, hitch) and
# bssl-tool.
set -euo pipefail

PACKAGES=(
  cmake make gcc pkg-config
  android-libboringssl-dev libuv1-dev libyaml-dev zlib1g-dev
  libcmocka-dev
  python3 python3-pytest python3-pyro4 python3-serpent python3-msgpack
  python3-dill python3-cloudpickle python3-prometheus-client
  openssl
  clang libclang-rt-14-dev
  yamllint python3-yaml
  valgrind
)
case "${1:-}" in
  --container) PACKAGES+=(podman buildah debootstrap runc catatonit podman-compose) ;;
  # make bench: the peers pyroguard is measured beside, and bssl-tool (the limits).
  --bench) PACKAGES+=(haproxy stunnel4 hitch nginx-light libnginx-mod-stream android-boringssl
                      util-linux) ;;
esac

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing missing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi

echo "pyroguard needs these Debian packages, which are not installed:" >&2
echo "  sudo apt-get install ${missing[*]}" >&2
exit 1
