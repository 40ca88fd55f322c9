# syntax=docker/dockerfile:1
# pyroguard container image: the proxy alone, as a sidecar next to a legacy Pyro server.
#
#   podman build -t pyroguard .          (or docker build; deploy/container/build.sh does it
#                                         here without a Docker engine and tests the result)
#   podman run --read-only -v ./conf:/etc/pyroguard:ro -p 9443:9443 pyroguard
#
# The configuration and certificates are mounted at /etc/pyroguard (pyroguard.yaml, relative
# paths in it resolve against that directory). The image holds no configuration, key or
# certificate of its own.

ARG DEBIAN_IMAGE=debian:bookworm-slim

# ---- build: the -dev packages and CMake ------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake make gcc libc6-dev pkg-config \
      android-libboringssl-dev libuv1-dev libyaml-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY proxy/ proxy/
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DPYROGUARD_DEV_TOOLS=OFF \
 && cmake --build build --target pyroguard -j"$(nproc)" \
 && strip --strip-unneeded build/pyroguard \
 && build/pyroguard version

# ---- runtime: pyroguard and the Debian packages of the libraries it links --------------------
FROM ${DEBIAN_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="pyroguard" \
      org.opencontainers.image.description="Mutual-TLS sidecar that inspects every Pyro4 call before a legacy Pyro daemon sees it" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim" \
      org.opencontainers.image.documentation="README.md, sections Deployment and Configuration reference"
# android-libboringssl: libssl.so.0/libcrypto.so.0 (BoringSSL, found through the binary's
# RUNPATH); libuv1, libyaml-0-2; zlib1g is in the base already.
RUN apt-get update \
 && apt-get install -y --no-install-recommends android-libboringssl libuv1 libyaml-0-2 zlib1g \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log \
 && groupadd --system --gid 65532 pyroguard \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin pyroguard \
 && install -d -m 0755 /etc/pyroguard
COPY --from=build /src/build/pyroguard /usr/local/bin/pyroguard
RUN pyroguard version
# Runs unprivileged from the start: the listeners must use ports >= 1024 (9443 here) and the
# configuration must not set user:/group:. Nothing is written to the filesystem, so the
# container runs with a read-only root (--read-only, readOnlyRootFilesystem: true).
USER 65532:65532
WORKDIR /etc/pyroguard
# The mutual-TLS listener and the admin endpoint of the example configurations.
EXPOSE 9443 9901
# SIGTERM drains (limits.drain_timeout), a second SIGTERM stops at once; SIGHUP reloads.
STOPSIGNAL SIGTERM
ENTRYPOINT ["pyroguard", "run", "-c", "/etc/pyroguard/pyroguard.yaml"]
