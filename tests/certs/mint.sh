#!/usr/bin/env bash
# mint.sh DIR - mint the development / test PKI for pyroguard into DIR (openssl only).
#
# Written into DIR (keys are unencrypted PEM):
#   ca.crt ca.key                    dev CA (ECDSA P-256)
#   server.crt server.key            ECDSA P-256, SAN DNS:localhost IP:127.0.0.1, serverAuth
#   server-rsa.crt server-rsa.key    RSA 2048, same SANs
#   client.crt client.key            CN=billing-client O=Example,
#                                    SAN URI:spiffe://example.org/ns/billing/client DNS:client.example
#   reader.crt reader.key            CN=inventory-reader OU=readers O=Example,
#                                    SAN URI:spiffe://example.org/ns/inventory/reader DNS:reader.example
#   registrar.crt registrar.key      CN=ns-registrar OU=ops O=Example,
#                                    SAN URI:spiffe://example.org/ns/ops/registrar
#   admin.crt admin.key              CN=ops-admin OU=ops O=Example, SAN URI:spiffe://example.org/ns/ops/admin
#                                    IP:10.1.2.3 email:admin@example.org
#   stranger.crt stranger.key        CN=stranger O=Other (signed by ca; matches none of the test rules),
#                                    SAN URI:spiffe://other.org/ns/x/stranger
#   other-ca.crt other-ca.key        an unrelated CA
#   other-client.crt other-client.key        client signed by other-ca
#   expired-client.crt expired-client.key    signed by ca, validity entirely in the past
#   future-client.crt future-client.key      signed by ca, validity entirely in the future
#   revoked-client.crt revoked-client.key    signed by ca, then revoked
#   ca.crl                           PEM CRL of ca listing revoked-client (valid 30 days)
#   server-enc.key server-enc.pass   server.key as encrypted PKCS#8 (AES-256-CBC, PBKDF2 with
#                                    HMAC-SHA256) and its password (one line)
#   server.p12 server-p12.pass       PKCS#12 keystore: server.crt, server.key and ca.crt as chain,
#                                    OpenSSL 3 defaults (AES-256-CBC, PBKDF2, SHA-256 MAC), and its
#                                    password (one line)
#   server-nopass.p12                the same keystore with the empty password
#   server-nomac.p12                 the same keystore without a MAC (BoringSSL refuses it)
#   ca-db/                           the `openssl ca` state (config, index, serials)
#
# Idempotent: when a complete, still-valid set is present nothing is touched; otherwise the whole
# set is minted again (certificates signed by different CA keys must never be mixed).
# Used by the integration tests and by `make demo`; prints one line.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi

mkdir -p "$1"
DIR=$(cd "$1" && pwd)
OPENSSL=${OPENSSL:-openssl}

FILES="ca.crt ca.key server.crt server.key server-rsa.crt server-rsa.key client.crt client.key
reader.crt reader.key registrar.crt registrar.key admin.crt admin.key stranger.crt stranger.key
other-ca.crt other-ca.key other-client.crt other-client.key expired-client.crt expired-client.key
future-client.crt future-client.key revoked-client.crt revoked-client.key ca.crl
server-enc.key server-enc.pass server.p12 server-p12.pass server-nopass.p12 server-nomac.p12"

complete_and_valid() {
    local f
    for f in $FILES; do
        [ -s "$DIR/$f" ] || return 1
    done
    # Still valid for at least one more day: the CA, the leaf certs and the CRL.
    for f in ca.crt server.crt server-rsa.crt client.crt reader.crt registrar.crt admin.crt \
        stranger.crt other-client.crt revoked-client.crt; do
        "$OPENSSL" x509 -in "$DIR/$f" -noout -checkend 86400 >/dev/null 2>&1 || return 1
    done
    local next
    next=$("$OPENSSL" crl -in "$DIR/ca.crl" -noout -nextupdate 2>/dev/null | sed 's/^nextUpdate=//') ||
        return 1
    [ -n "$next" ] || return 1
    [ "$(date -d "$next" +%s 2>/dev/null || echo 0)" -gt "$(($(date +%s) + 86400))" ] || return 1
    return 0
}

if complete_and_valid; then
    echo "mint.sh: certificates in $DIR are up to date"
    exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pyroguard-mint.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Run openssl quietly; show its output only when it fails.
ossl() {
    if ! "$OPENSSL" "$@" >"$WORK/ossl.log" 2>&1; then
        echo "mint.sh: openssl $1 failed:" >&2
        cat "$WORK/ossl.log" >&2
        exit 1
    fi
}

ec_key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
rsa_key() { ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1"; }

# self_signed_ca NAME CN
self_signed_ca() {
    ec_key "$DIR/$1.key"
    cat >"$WORK/$1.ext" <<EOF
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
    ossl req -new -x509 -key "$DIR/$1.key" -subj "/O=Example/CN=$2" -days 3650 -sha256 \
        -extensions v3 -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[v3]\n'; cat "$WORK/$1.ext") \
        -set_serial "0x$("$OPENSSL" rand -hex 16)" -out "$DIR/$1.crt"
}

# leaf NAME CA SUBJECT EXTENSIONS KEYTYPE
leaf() {
    local name=$1 ca=$2 subj=$3 ext=$4 keytype=$5
    "${keytype}_key" "$DIR/$name.key"
    printf '%s\n' "$ext" >"$WORK/$name.ext"
    ossl req -new -key "$DIR/$name.key" -subj "$subj" -out "$WORK/$name.csr"
    ossl x509 -req -in "$WORK/$name.csr" -CA "$DIR/$ca.crt" -CAkey "$DIR/$ca.key" \
        -set_serial "0x$("$OPENSSL" rand -hex 16)" -days 825 -sha256 \
        -extfile "$WORK/$name.ext" -out "$DIR/$name.crt"
}

SERVER_EXT='basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid'

client_ext() {
    printf '%s\n' 'basicConstraints = critical, CA:FALSE' \
        'keyUsage = critical, digitalSignature' \
        'extendedKeyUsage = clientAuth' \
        "subjectAltName = $1" \
        'subjectKeyIdentifier = hash' \
        'authorityKeyIdentifier = keyid'
}

rm -rf "$DIR/ca-db"
for f in $FILES; do rm -f "$DIR/$f"; done

self_signed_ca ca "pyroguard dev CA"
self_signed_ca other-ca "some other CA"

leaf server ca "/O=Example/CN=localhost" "$SERVER_EXT" ec
leaf server-rsa ca "/O=Example/CN=localhost" "$SERVER_EXT" rsa
leaf client ca "/O=Example/CN=billing-client" \
    "$(client_ext 'URI:spiffe://example.org/ns/billing/client, DNS:client.example')" ec
leaf reader ca "/O=Example/OU=readers/CN=inventory-reader" \
    "$(client_ext 'URI:spiffe://example.org/ns/inventory/reader, DNS:reader.example')" ec
leaf registrar ca "/O=Example/OU=ops/CN=ns-registrar" \
    "$(client_ext 'URI:spiffe://example.org/ns/ops/registrar')" ec
leaf admin ca "/O=Example/OU=ops/CN=ops-admin" \
    "$(client_ext 'URI:spiffe://example.org/ns/ops/admin, IP:10.1.2.3, email:admin@example.org')" ec
leaf stranger ca "/O=Other/CN=stranger" \
    "$(client_ext 'URI:spiffe://other.org/ns/x/stranger')" ec
leaf other-client other-ca "/O=Example/CN=billing-client" \
    "$(client_ext 'URI:spiffe://example.org/ns/billing/client, DNS:client.example')" ec

# Certificates with chosen validity periods and the CRL need `openssl ca` and its database.
DB="$DIR/ca-db"
mkdir -p "$DB/newcerts"
: >"$DB/index.txt"
echo 'unique_subject = no' >"$DB/index.txt.attr"
"$OPENSSL" rand -hex 16 >"$DB/serial"
echo 1000 >"$DB/crlnumber"
cat >"$DB/ca.cnf" <<EOF
[ca]
default_ca = devca

[devca]
dir = $DB
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
serial = \$dir/serial
crlnumber = \$dir/crlnumber
certificate = $DIR/ca.crt
private_key = $DIR/ca.key
default_md = sha256
default_days = 825
default_crl_days = 30
policy = anything
unique_subject = no
copy_extensions = none
x509_extensions = client_ext
crl_extensions = crl_ext

[anything]
organizationName = optional
commonName = supplied

[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:spiffe://example.org/ns/billing/client, DNS:client.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[crl_ext]
authorityKeyIdentifier = keyid
EOF

# ca_leaf NAME CN [openssl ca options...]
ca_leaf() {
    local name=$1 cn=$2
    shift 2
    ec_key "$DIR/$name.key"
    ossl req -new -key "$DIR/$name.key" -subj "/O=Example/CN=$cn" -out "$WORK/$name.csr"
    ossl ca -batch -notext -config "$DB/ca.cnf" -in "$WORK/$name.csr" -out "$DIR/$name.crt" "$@"
}

ca_leaf expired-client expired-client -startdate 20200101000000Z -enddate 20210101000000Z
ca_leaf future-client future-client -startdate 20700101000000Z -enddate 20710101000000Z
ca_leaf revoked-client revoked-client
ossl ca -batch -config "$DB/ca.cnf" -revoke "$DIR/revoked-client.crt" -crl_reason keyCompromise
ossl ca -batch -config "$DB/ca.cnf" -gencrl -crldays 30 -out "$DIR/ca.crl"

# The server's key in the other forms tls: accepts: an encrypted PEM key and PKCS#12 keystores.
echo 'correct horse battery staple' >"$DIR/server-enc.pass"
ossl pkcs8 -topk8 -in "$DIR/server.key" -v2 aes-256-cbc -v2prf hmacWithSHA256 \
    -passout "file:$DIR/server-enc.pass" -out "$DIR/server-enc.key"
echo 'p12 secret' >"$DIR/server-p12.pass"
p12() {
    local out=$1
    shift
    ossl pkcs12 -export -in "$DIR/server.crt" -inkey "$DIR/server.key" -certfile "$DIR/ca.crt" \
        -name server "$@" -out "$DIR/$out"
}
p12 server.p12 -passout "file:$DIR/server-p12.pass"
p12 server-nopass.p12 -passout pass:
p12 server-nomac.p12 -passout pass: -nomac
chmod 600 "$DIR"/*.pass "$DIR"/*.p12

chmod 600 "$DIR"/*.key
echo "mint.sh: minted dev CA, server and client certificates into $DIR"
