#!/usr/bin/env bash
# deploy/demo/demo.sh - run by `make demo` after build/pyroguard is built.
#
# Puts pyroguard (127.0.0.1:9443, mutual TLS, policy in pyroguard-demo.yaml) in front of a legacy
# Pyro4 inventory service that accepts pickle (127.0.0.1:9090, plaintext), then runs real Pyro4
# clients:
#   1. billing client (rule billing) lists the inventory           -> served
#   2. billing client calls add_stock, which its rule does not allow -> SecurityError
#   3. ops client (rule ops: every method) sends a dotted name      -> SecurityError (name rules)
#   4. stranger: a certificate from the CA that matches no rule     -> refused at CONNECT
#   5. pickle client (handshake carries a code-execution payload)   -> refused at CONNECT
#   6. client without a certificate                                 -> refused at the TLS handshake
#   7. billing client lists again: the refused write never reached the service
# and shows `pyroguard explain` for one allowed and one refused request; then a second pyroguard
# in client mode (127.0.0.1:7000, pyroguard-client-mode.yaml) gives a legacy client with no SSL
# settings mutual TLS to the first one:
#  11. the legacy client lists the inventory through both pyroguards  -> served, as billing
#  12. the legacy client calls add_stock: the egress policy denies it -> SecurityError, locally
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
CLIENT_CONFIG="$DEMO/pyroguard-client-mode.yaml"
CM_LOG="$OUT/pyroguard-client-mode.log"

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
for port in 9090 9443 7000; do
    port_open "$port" && die "port $port on 127.0.0.1 is already in use; stop whatever listens there"
done

mkdir -p "$OUT"
rm -f "$MARKER" "$SERVICE_LOG" "$PG_LOG" "$CM_LOG"

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
# run_client TITLE EXPECT(OK|REFUSED) MODE [CERT [PORT [--plain]]]
run_client() {
    local title=$1 expect=$2 mode=$3 cert=${4:-client} port=${5:-9443} rc
    say "$title"
    set +e
    OUT=$("$PY" "$DEMO/client.py" "$mode" --cert "$cert" --certs "$TLS" --port "$port" \
        --marker "$MARKER" ${6:-} 2>&1)
    rc=$?
    set -e
    printf '   client: %s\n' "$OUT"
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

# expect_log WHAT REGEX: pyroguard's log must have a line matching REGEX.
expect_log() {
    if ! grep -Eq "$2" "$PG_LOG"; then
        echo "   UNEXPECTED: no pyroguard log line with $1"
        FAILED=1
    fi
}

# expect_out WHAT TEXT: the last client's output must contain TEXT.
expect_out() {
    case "$OUT" in
    *"$2"*) ;;
    *)
        echo "   UNEXPECTED: the client was not told $1"
        FAILED=1
        ;;
    esac
}

run_client "1. billing client (certificate URI spiffe://example.org/ns/billing/client) reads the inventory" \
    OK list client
expect_log 'an allowed call of rule billing' '"event" ?: ?"allowed".*"rule" ?: ?"billing".*"method" ?: ?"list_items"'

run_client "2. billing client calls add_stock(): its rule allows list_items and get_stock only" \
    REFUSED add client
expect_out "the policy refusal" "SecurityError: pyroguard: method 'add_stock' of object 'inventory' is not allowed for client rule 'billing'"
expect_log 'reason not_allowed' '"reason" ?: ?"not_allowed"'

run_client "3. ops client (OU=ops, rule allows every method) sends the dotted name add_stock.__globals__" \
    REFUSED dotted admin
expect_out "the name-rule refusal" "contains a dot"
expect_log 'reason dotted_name' '"reason" ?: ?"dotted_name"'

run_client "4. stranger: certificate signed by the same CA, but no client rule matches it" \
    REFUSED list stranger
expect_out "that no rule matches" "no client rule matches the certificate of CN=stranger"
expect_log 'reason no_matching_rule' '"reason" ?: ?"no_matching_rule"'

run_client "5. pickle client (its handshake would run code on the service if unpickled)" REFUSED pickle
expect_log 'the pickle serializer refused' 'serializer pickle \(id 4\) is not allowed'
if [ -e "$MARKER" ]; then
    echo "   UNEXPECTED: $MARKER exists: the legacy service unpickled the payload"
    FAILED=1
else
    echo "   the legacy service never unpickled anything (no $MARKER)"
fi

run_client "6. client without a client certificate" REFUSED nocert
expect_log 'reason no_client_certificate' '"reason" ?: ?"no_client_certificate"'

run_client "7. billing client reads again: the refused add_stock never reached the service" OK list client
expect_out "the unchanged stock" "get_stock('widget') -> 12"

# explain_request TITLE EXPECTED_EXIT ARGS...: pyroguard explain, without a running proxy.
explain_request() {
    local title=$1 want=$2 rc
    shift 2
    say "$title"
    echo "   \$ pyroguard explain -c pyroguard-demo.yaml $*"
    set +e
    "$BIN" explain -c "$CONFIG" "$@" 2>&1 | sed 's/^/   /'
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" -eq "$want" ]; then
        echo "   (exit $rc, as expected)"
    else
        echo "   UNEXPECTED: exit $rc, wanted $want"
        FAILED=1
    fi
}

explain_request "8. pyroguard explain: may the billing client call inventory.get_stock?" 0 \
    --cert "$TLS/client.crt" --object inventory --method get_stock
explain_request "9. pyroguard explain: may the billing client call inventory.add_stock?" 3 \
    --cert "$TLS/client.crt" --object inventory --method add_stock

say "10. The admin endpoint: readiness and a few metrics (curl http://127.0.0.1:9901/metrics)"
"$PY" - <<'PYEOF' | sed 's/^/   /' || FAILED=1
import urllib.request, urllib.error
def get(path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:9901" + path, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
code, body = get("/readyz")
print("GET /readyz -> %s %s" % (code, body.strip()))
status, text = get("/metrics")
assert status == 200, status
for line in text.splitlines():
    if line.startswith(("pyroguard_requests_total", "pyroguard_requests_by_rule_total",
                        "pyroguard_tls_handshake_failures_total{reason=\"no_client_certificate\"}",
                        "pyroguard_connections_open", "pyroguard_config_generation")):
        if not line.endswith(" 0"):
            print(line)
PYEOF

say "Starting pyroguard in client mode on 127.0.0.1:7000 (plaintext, loopback) -> mutual TLS to 127.0.0.1:9443"
"$BIN" run -c "$CLIENT_CONFIG" 2>"$CM_LOG" &
PIDS+=($!)
CM_PID=$!
wait_for "grep -Eq '\"event\" ?: ?\"listening\"' '$CM_LOG' || ! kill -0 $CM_PID 2>/dev/null" 15 || true
grep -Eq '"event" ?: ?"listening"' "$CM_LOG" || {
    cat "$CM_LOG" >&2
    die "the client-mode pyroguard did not start listening; see $CM_LOG"
}

run_client "11. legacy client, no SSL settings at all -> client mode -> mutual TLS as billing-client" \
    OK list client 7000 --plain
if grep -Eq '"event" ?: ?"upstream_open"' "$CM_LOG" &&
    grep -Eq '"event" ?: ?"conn_open".*"subject" ?: ?"CN=billing-client' "$PG_LOG"; then
    echo "   the server side saw the client mode's certificate: CN=billing-client, rule billing"
else
    echo "   UNEXPECTED: no upstream_open in $CM_LOG or no billing-client conn_open in $PG_LOG"
    FAILED=1
fi

run_client "12. legacy client calls add_stock: client mode's egress policy denies it before it leaves" \
    REFUSED add client 7000 --plain
expect_out "the egress refusal" "is denied for client rule 'egress:inventory'"
if grep -Eq '"reason" ?: ?"denied_by_rule"' "$CM_LOG"; then
    echo "   refused in client mode (log: $CM_LOG); the server side never saw it"
else
    echo "   UNEXPECTED: no denied_by_rule line in $CM_LOG"
    FAILED=1
fi

say "pyroguard log lines (JSON, stderr of pyroguard run)"
grep -E '"event" ?: ?"(listening|conn_open|allowed|refused|tls_fail)"' "$PG_LOG" | sed 's/^/   /' || true
say "client-mode pyroguard log lines"
grep -E '"event" ?: ?"(listening|conn_open|upstream_open|allowed|refused)"' "$CM_LOG" |
    sed 's/^/   /' || true

say "Logs"
echo "   pyroguard:       $PG_LOG"
echo "   client mode:     $CM_LOG"
echo "   legacy service:  $SERVICE_LOG"
echo "   certificates:    $TLS"

if [ $FAILED -ne 0 ]; then
    say "DEMO FAILED: an expected outcome did not happen"
    exit 1
fi
say "Demo OK: allowed calls served; a call outside the client's rule, a dotted name, a client without a rule, pickle and a certificate-less client refused; a legacy client without SSL served through client mode, and its call outside the egress policy refused"
