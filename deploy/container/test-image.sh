#!/usr/bin/env bash
# deploy/container/test-image.sh - builds the pyroguard image without a Docker engine and proves
# it works: a real Pyro4 mutual-TLS call through the container to a real Pyro4 daemon.
#
#   1. base image: deploy/container/base-image.sh (debootstrap, imported as debian:bookworm-slim)
#   2. podman build --pull=never --isolation=chroot --network=host of the root Dockerfile
#   3. the image's metadata: user 65532, the ENTRYPOINT, the OCI labels; its size
#   4. podman run with a read-only root, every capability dropped, no-new-privileges, a 1-CPU
#      quota (so one worker), as uid 65532, deploy/compose/pyroguard.yaml and certificates minted now with openssl mounted
#      read-only at /etc/pyroguard; host network, a Pyro4 daemon on 127.0.0.1:9090
#   5. real Pyro4 clients: an allowed call is answered; a policy refusal, a pickle client (whose
#      payload would create a file on the daemon) and a client without a certificate are refused,
#      and the daemon never saw them
#   6. certificate rotation: a new server certificate written into the mounted directory is
#      served without a restart (reload.watch)
#   7. podman stop (SIGTERM): pyroguard drains and exits 0
# Exits non-zero on any difference. Run as root (debootstrap, rootful podman), from `make
# test-container` or the test suite (tests/deploy/test_container.py, PYROGUARD_TEST_CONTAINER=1).
#
# Env: PODMAN (default podman), IMAGE (default localhost/pyroguard:<version>),
#      CONTAINER_CACHE (default build/container: the debootstrap tarball is kept there).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PODMAN=${PODMAN:-podman}
PY=/usr/bin/python3
CACHE=${CONTAINER_CACHE:-$ROOT/build/container}
VERSION=$(sed -n 's/^project(pyroguard VERSION \([0-9.]*\).*/\1/p' "$ROOT/CMakeLists.txt")
IMAGE=${IMAGE:-localhost/pyroguard:$VERSION}
NAME=pyroguard-test-$$
WORK=$(mktemp -d /tmp/pyroguard-container.XXXXXX)
DAEMON_PID=

say() { printf '\n== %s\n' "$*"; }
die() {
    printf 'test-image: FAILED: %s\n' "$*" >&2
    exit 1
}

cleanup() {
    local rc=$?
    if [ $rc -ne 0 ] && $PODMAN container exists "$NAME" 2>/dev/null; then
        echo "--- pyroguard's log (podman logs $NAME):" >&2
        $PODMAN logs "$NAME" >&2 || true
    fi
    $PODMAN rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
    if [ -n "$DAEMON_PID" ]; then
        kill "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# logs_have REGEX: pyroguard's log (so far) has a line matching REGEX.
logs_have() {
    $PODMAN logs "$NAME" >"$WORK/pyroguard.log" 2>&1 && grep -Eq "$1" "$WORK/pyroguard.log"
}
wait_for() {
    local cmd=$1 secs=$2
    for _ in $(seq $((secs * 10))); do
        if eval "$cmd"; then return 0; fi
        sleep 0.1
    done
    return 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and rootful podman)"
command -v "$PODMAN" >/dev/null || die "podman is not installed: apt-get install podman buildah debootstrap runc"
"$PY" -c 'import Pyro4' 2>/dev/null || die "python3-pyro4 is not installed"
for port in 9090 9443 9901; do
    port_open "$port" && die "port $port on 127.0.0.1 is in use; the container runs on the host network"
done

# Runtime settings for this host (runc on hybrid cgroups, limits root may set): podman-conf.sh.
bash "$ROOT/deploy/container/podman-conf.sh" "$WORK/containers.conf"
export CONTAINERS_CONF=$WORK/containers.conf

say "1. Base image (debootstrap, imported as debian:bookworm-slim)"
bash "$ROOT/deploy/container/base-image.sh" "$CACHE"

say "2. podman build --pull=never --isolation=chroot --network=host -t $IMAGE ."
if ! $PODMAN build --pull=never --isolation=chroot --network=host --build-arg "VERSION=$VERSION" \
    -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT" >"$WORK/build.log" 2>&1; then
    tail -n 40 "$WORK/build.log" >&2
    die "podman build failed"
fi
tail -n 3 "$WORK/build.log"

say "3. The image"
SIZE=$($PODMAN image inspect --format '{{.Size}}' "$IMAGE")
BASE_SIZE=$($PODMAN image inspect --format '{{.Size}}' docker.io/library/debian:bookworm-slim)
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1000000 }'; }
echo "   $IMAGE: $SIZE bytes ($(mb "$SIZE")); debian:bookworm-slim below it: $(mb "$BASE_SIZE");" \
    "pyroguard and the libraries it links: $(mb $((SIZE - BASE_SIZE)))"
USER_=$($PODMAN image inspect --format '{{.Config.User}}' "$IMAGE")
ENTRY=$($PODMAN image inspect --format '{{json .Config.Entrypoint}}' "$IMAGE")
echo "   user: $USER_   entrypoint: $ENTRY"
[ "$USER_" = "65532:65532" ] || die "the image runs as '$USER_', not 65532:65532"
[ "$ENTRY" = '["pyroguard","run","-c","/etc/pyroguard/pyroguard.yaml"]' ] || die "unexpected ENTRYPOINT $ENTRY"
for label in title description version; do
    value=$($PODMAN image inspect --format "{{index .Labels \"org.opencontainers.image.$label\"}}" "$IMAGE")
    [ -n "$value" ] || die "label org.opencontainers.image.$label is missing"
    echo "   org.opencontainers.image.$label=$value"
done
$PODMAN run --rm --network=none --entrypoint pyroguard "$IMAGE" version | sed 's/^/   /'

say "4. Certificates (openssl, now) and a legacy Pyro4 daemon on 127.0.0.1:9090"
CERTS=$WORK/certs
CONF=$WORK/etc
bash "$ROOT/tests/certs/mint.sh" "$CERTS" >/dev/null
mkdir -p "$CONF/tls"
cp "$ROOT/deploy/compose/pyroguard.yaml" "$CONF/pyroguard.yaml"
cp "$CERTS/server.crt" "$CONF/tls/tls.crt"
cp "$CERTS/server.key" "$CONF/tls/tls.key"
cp "$CERTS/ca.crt" "$CONF/tls/ca.crt"
# The key readable by the container's group only, as a Secret mounted with fsGroup would be.
chown -R 0:65532 "$CONF" && chmod 0750 "$CONF" "$CONF/tls" && chmod 0640 "$CONF"/tls/* "$CONF/pyroguard.yaml"
MARKER=$WORK/PWNED
"$PY" "$ROOT/deploy/demo/legacy_service.py" --port 9090 --nathost localhost --natport 9443 \
    >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
wait_for "port_open 9090" 15 || die "the Pyro4 daemon did not start: $(cat "$WORK/daemon.log")"
sed 's/^/   /' "$WORK/daemon.log"

say "5. podman run --read-only --cap-drop=ALL --security-opt=no-new-privileges --cpus 1 -v ...:/etc/pyroguard:ro $IMAGE"
# --cpus 1: a CPU quota, which pyroguard's default worker count follows (one worker, not one per
# CPU of the host).
$PODMAN run -d --name "$NAME" --network=host --read-only --cap-drop=ALL --cpus 1 \
    --security-opt=no-new-privileges -v "$CONF:/etc/pyroguard:ro" "$IMAGE" >/dev/null
wait_for "logs_have '\"event\":\"listening\"'" 20 || die "pyroguard did not start listening"
PID=$($PODMAN inspect --format '{{.State.Pid}}' "$NAME")
echo "   $($PODMAN inspect --format 'running: {{.State.Running}}, read-only root: {{.HostConfig.ReadonlyRootfs}}' "$NAME")"
echo "   process $PID: $(grep -E '^(Uid|Gid|CapEff|NoNewPrivs)' "/proc/$PID/status" | tr -s '\t ' ' ' | paste -sd';')"
grep -Eq '^Uid:\s+65532\s' "/proc/$PID/status" || die "pyroguard does not run as uid 65532"
grep -Eq '^CapEff:\s+0+$' "/proc/$PID/status" || die "pyroguard holds capabilities"
grep -Eq '^NoNewPrivs:\s+1$' "/proc/$PID/status" || die "no_new_privs is not set"
WORKERS=$(grep -o '"event":"start".*"workers":[0-9]*' "$WORK/pyroguard.log" | grep -o '[0-9]*$')
echo "   workers under a 1-CPU quota on a $(nproc)-CPU host: $WORKERS"
[ "$WORKERS" = 1 ] || die "pyroguard started $WORKERS workers under a 1-CPU quota"

FAILED=0
# client TITLE EXPECT(OK|REFUSED) MODE [CERT] [TEXT the output must contain]
client() {
    local title=$1 expect=$2 mode=$3 cert=${4:-client} text=${5:-} out rc
    echo "   $title"
    set +e
    out=$("$PY" "$ROOT/deploy/demo/client.py" "$mode" --cert "$cert" --certs "$CERTS" --port 9443 \
        --marker "$MARKER" 2>&1)
    rc=$?
    set -e
    echo "     client: $out"
    if { [ "$expect" = OK ] && [ $rc -ne 0 ]; } || { [ "$expect" = REFUSED ] && [ $rc -ne 3 ]; }; then
        echo "     UNEXPECTED: wanted $expect (exit code $rc)"
        FAILED=1
    elif [ -n "$text" ] && [[ $out != *"$text"* ]]; then
        echo "     UNEXPECTED: the output lacks: $text"
        FAILED=1
    fi
}
say "6. Real Pyro4 clients through the container"
client "billing client, allowed call (mutual TLS through the container)" OK list client \
    "list_items() -> ['gadget', 'sprocket', 'widget'], get_stock('widget') -> 12"
client "billing client, add_stock (not in its rule)" REFUSED add client \
    "SecurityError: pyroguard: method 'add_stock' of object 'inventory' is not allowed for client rule 'billing'"
client "pickle client with a code-execution payload" REFUSED pickle client "serializer pickle"
client "client without a certificate" REFUSED nocert
client "billing client again: the refused add_stock never reached the daemon" OK list client \
    "get_stock('widget') -> 12"
[ -e "$MARKER" ] && { echo "     UNEXPECTED: the pickle payload ran on the daemon"; FAILED=1; }
[ $FAILED -eq 0 ] || die "a client outcome differs"

say "7. Certificate rotation: a new server certificate in the mounted directory, no restart"
served_serial() {
    "$PY" - "$CERTS" <<'PY'
import ssl, socket, sys
d = sys.argv[1]
ctx = ssl.create_default_context(cafile=d + "/ca.crt")
ctx.load_cert_chain(d + "/client.crt", d + "/client.key")
with socket.create_connection(("127.0.0.1", 9443), timeout=5) as s:
    with ctx.wrap_socket(s, server_hostname="localhost") as t:
        print("%X" % int(t.getpeercert()["serialNumber"], 16))
PY
}
OLD=$(served_serial)
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/new.key" 2>/dev/null
openssl req -new -key "$WORK/new.key" -subj "/CN=localhost" -out "$WORK/new.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$WORK/ext"
openssl x509 -req -in "$WORK/new.csr" -CA "$CERTS/ca.crt" -CAkey "$CERTS/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$WORK/ext" -out "$WORK/new.crt" 2>/dev/null
# Key and certificate replaced together, each by an atomic rename (as kubelet swaps a Secret).
install -m 0640 -o 0 -g 65532 "$WORK/new.key" "$CONF/tls/.tls.key.new"
install -m 0640 -o 0 -g 65532 "$WORK/new.crt" "$CONF/tls/.tls.crt.new"
mv "$CONF/tls/.tls.key.new" "$CONF/tls/tls.key" && mv "$CONF/tls/.tls.crt.new" "$CONF/tls/tls.crt"
wait_for "logs_have '\"event\":\"reloaded\"'" 15 || die "pyroguard did not reload"
NEW=$(served_serial)
WANT=$(openssl x509 -in "$WORK/new.crt" -noout -serial | cut -d= -f2 | sed 's/^0*//')
echo "   served serial before: $OLD, after: $NEW (the new certificate: $WANT)"
[ "$NEW" = "$WANT" ] && [ "$NEW" != "$OLD" ] || die "the new certificate is not served"
client "billing client after the rotation" OK list client "get_stock('widget') -> 12"
[ $FAILED -eq 0 ] || die "a client outcome differs after the rotation"

say "8. podman stop (SIGTERM): drain and exit"
$PODMAN stop -t 30 "$NAME" >/dev/null
CODE=$($PODMAN inspect --format '{{.State.ExitCode}}' "$NAME")
echo "   exit code: $CODE"
echo "   pyroguard's log, refusals and lifecycle:"
logs_have '"event":"stopped"' || die "no stopped line in the log"
"$PY" - "$WORK/pyroguard.log" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["event"] in ("start", "listening", "refused", "tls_fail", "reloaded", "shutdown", "stopped"):
        keys = ("level", "event", "rule", "reason", "detail", "trigger", "signal", "msg")
        print("     " + " ".join("%s=%s" % (k, e[k]) for k in keys if k in e))
PY
[ "$CODE" = 0 ] || die "pyroguard exited with $CODE"
[ "$(grep -c '"event":"refused"' "$WORK/pyroguard.log")" = 2 ] || die "expected 2 refused lines (policy, pickle)"
grep -q '"event":"tls_fail".*"reason":"no_client_certificate"' "$WORK/pyroguard.log" ||
    die "no tls_fail line for the client without a certificate"

say "PASS: $IMAGE ($(mb "$SIZE")) served a real Pyro4 mutual-TLS call and refused the rest"
