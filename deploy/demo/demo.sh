#!/usr/bin/env bash
# deploy/demo/demo.sh - run by `make demo` after build/pyroguard is built.
#
# Puts pyroguard (127.0.0.1:9443, mutual TLS) in front of a legacy Pyro4 inventory service that
# accepts pickle (127.0.0.1:9090, plaintext), then runs three real Pyro4 clients:
#   1. serpent client with a trusted client certificate      -> served
#   2. pickle client (handshake carries a code-execution payload) -> refused at CONNECT
#   3. client without a certificate                           -> refused at the TLS handshake
# Exits non-zero if any outcome differs. Logs: build/demo/*.log. Processes are stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEMO="$ROOT/deploy/demo"
OUT="$ROOT/build/demo"
BIN=${PYROGUARD_BIN:-$ROOT/build/pyroguard}
PY=/usr/bin/python3 # Debian's interpreter, with python3-pyro4
CONFIG="$DEMO/pyroguard-demo.yaml"
TLS="$OUT/tls"
MARKER="$OUT/PWNED"
SERVICE_LOG="$OUT/legacy_service.log"
PG_LOG="$OUT/pyroguard.log"

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s\n' "$*"; }
die() {
    printf 'demo: %s\n' "$*" >&2
    exit 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Wait up to $2 seconds for `$1` (a command) to succeed.
wait_for() {
    local cmd=$1 secs=$2
    for _ in $(seq $((secs * 10))); do
        if eval "$cmd"; then return 0; fi
        sleep 0.1
    done
    return 1
}

[ -x "$BIN" ] || die "$BIN not found: run 'make' first"
[ -x "$PY" ] || die "$PY not found (Debian python3 with python3-pyro4 is needed)"
"$PY" -c 'import Pyro4' 2>/dev/null || die "python3-pyro4 is not installed"
for port in 9090 9443; do
    port_open "$port" && die "port $port on 127.0.0.1 is already in use; stop whatever listens there"
done

mkdir -p "$OUT"
rm -f "$MARKER" "$SERVICE_LOG" "$PG_LOG"

say "Minting development certificates into build/demo/tls"
bash "$ROOT/tests/certs/mint.sh" "$TLS"

say "Starting the legacy inventory service on 127.0.0.1:9090 (plaintext, accepts pickle)"
"$PY" "$DEMO/legacy_service.py" --port 9090 --nathost localhost --natport 9443 >"$SERVICE_LOG" 2>&1 &
PIDS+=($!)
wait_for "port_open 9090" 15 || die "the legacy service did not start; see $SERVICE_LOG"
sed 's/^/   /' "$SERVICE_LOG"

say "Checking the pyroguard configuration"
"$BIN" check -c "$CONFIG"

say "Starting pyroguard on 127.0.0.1:9443 (mutual TLS) -> 127.0.0.1:9090"
"$BIN" run -c "$CONFIG" 2>"$PG_LOG" &
PIDS+=($!)
PG_PID=$!
wait_for "grep -Eq '\"event\" ?: ?\"listening\"' '$PG_LOG' || ! kill -0 $PG_PID 2>/dev/null" 15 || true
grep -Eq '"event" ?: ?"listening"' "$PG_LOG" || {
    cat "$PG_LOG" >&2
    die "pyroguard did not start listening; see $PG_LOG"
}

FAILED=0
# run_client TITLE EXPECT(OK|REFUSED) MODE
run_client() {
    local title=$1 expect=$2 mode=$3 out rc
    say "$title"
    set +e
    out=$("$PY" "$DEMO/client.py" "$mode" --certs "$TLS" --port 9443 --marker "$MARKER" 2>&1)
    rc=$?
    set -e
    printf '   client: %s\n' "$out"
    if [ "$expect" = OK ] && [ $rc -eq 0 ]; then
        echo "   as expected: the call was served"
    elif [ "$expect" = REFUSED ] && [ $rc -eq 3 ]; then
        echo "   as expected: the client was refused"
    else
        echo "   UNEXPECTED: wanted $expect (client exit code $rc)"
        FAILED=1
    fi
    sleep 0.3 # let pyroguard write its log lines
}

run_client "1. serpent client with a trusted certificate calls inventory.list_items()" OK allowed
run_client "2. pickle client (its handshake would run code on the service if unpickled)" REFUSED pickle
if ! grep -q 'serializer pickle (id 4) is not allowed' "$PG_LOG"; then
    echo "   UNEXPECTED: no pyroguard log line refusing the pickle serializer"
    FAILED=1
fi
if [ -e "$MARKER" ]; then
    echo "   UNEXPECTED: $MARKER exists: the legacy service unpickled the payload"
    FAILED=1
else
    echo "   the legacy service never unpickled anything (no $MARKER)"
fi
run_client "3. client without a client certificate" REFUSED nocert
if ! grep -Eq '"reason" ?: ?"no_client_certificate"' "$PG_LOG"; then
    echo "   UNEXPECTED: no tls_fail log line with reason no_client_certificate"
    FAILED=1
fi

say "pyroguard log lines (JSON, stderr of pyroguard run)"
grep -E '"event" ?: ?"(listening|conn_open|refused|tls_fail)"' "$PG_LOG" | sed 's/^/   /' || true

say "Logs"
echo "   pyroguard:       $PG_LOG"
echo "   legacy service:  $SERVICE_LOG"
echo "   certificates:    $TLS"

if [ $FAILED -ne 0 ]; then
    say "DEMO FAILED: an expected outcome did not happen"
    exit 1
fi
say "Demo OK: trusted serpent call served, pickle refused at CONNECT, certificate-less client refused at TLS"
