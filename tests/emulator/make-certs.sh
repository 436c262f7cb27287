#!/usr/bin/env bash
# Issue the provider emulator's certificates into OUTDIR (created if missing).
#
#   tests/emulator/make-certs.sh OUTDIR
#
# OUTDIR receives:
#   ca.crt ca.key               the test CA that target hosts trust
#   server.crt server.key       the emulator's certificate, signed by the test CA, valid for every
#                               hostname in providers.json plus emulator, localhost and 127.0.0.1
#   rogue-ca.crt rogue-ca.key   a second, self-signed CA that nobody trusts (the man in the middle)
#   rogue.crt rogue.key         a certificate for the same names signed by the rogue CA
#   client.crt client.key       a TLS client certificate from the test CA (CN=relay.example.test,
#                               O=smarthost test): what a relay presents to the Office 365 connector
#                               or a custom mTLS relay (Postfix smtp_tls_cert_file/smtp_tls_key_file)
#   rogue-client.crt rogue-client.key   the same subject, signed by the rogue CA
#
# A complete set that still covers every name and is valid for another day is reused; set
# REGEN=1 to issue a new one. Keys are generated here, at test time, and never committed.
set -euo pipefail

outdir=${1:?usage: make-certs.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
providers=${PROVIDERS_JSON:-$here/providers.json}
days=${CERT_DAYS:-365}

mapfile -t hostnames < <(python3 - "$providers" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))
names = []
for provider in data["providers"].values():
    for name in provider["hostnames"]:
        if name not in names:
            names.append(name)
print("\n".join(names + ["emulator", "localhost"]))
EOF
)

files=(ca.crt ca.key server.crt server.key rogue-ca.crt rogue-ca.key rogue.crt rogue.key
       client.crt client.key rogue-client.crt rogue-client.key)
client_subject="/O=smarthost test/CN=relay.example.test"

set_is_current() {
    local f name
    for f in "${files[@]}"; do [[ -s $outdir/$f ]] || return 1; done
    for f in server.crt rogue.crt; do
        openssl x509 -in "$outdir/$f" -noout -checkend 86400 >/dev/null || return 1
        for name in "${hostnames[@]}"; do
            openssl x509 -in "$outdir/$f" -noout -checkhost "$name" | grep -q 'does match' || return 1
        done
    done
    openssl verify -CAfile "$outdir/ca.crt" "$outdir/server.crt" >/dev/null 2>&1 || return 1
    openssl verify -CAfile "$outdir/ca.crt" -purpose sslclient "$outdir/client.crt" >/dev/null 2>&1 || return 1
    openssl x509 -in "$outdir/client.crt" -noout -checkend 86400 >/dev/null || return 1
}

mkdir -p "$outdir"
if [[ ${REGEN:-0} != 1 ]] && set_is_current; then
    echo "==> emulator certificates in $outdir: current, reusing"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

san="IP:127.0.0.1"
for name in "${hostnames[@]}"; do san+=",DNS:$name"; done

cat >"$work/ca.ext" <<EOF
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
cat >"$work/leaf.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
# Client certificates also carry serverAuth: a mail server often presents its server certificate.
cat >"$work/client.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth, serverAuth
subjectAltName = DNS:relay.example.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

# ECDSA P-256 keeps the emulator's TLS handshakes cheap under benchmark load.
new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

issue_ca() {  # name subject
    new_key "$work/$1.key"
    openssl req -new -key "$work/$1.key" -subj "$2" -out "$work/$1.csr"
    openssl x509 -req -in "$work/$1.csr" -signkey "$work/$1.key" -days "$days" \
        -extfile "$work/ca.ext" -out "$work/$1.crt" 2>/dev/null
}

issue_leaf() {  # name subject ca [extfile]
    new_key "$work/$1.key"
    openssl req -new -key "$work/$1.key" -subj "$2" -out "$work/$1.csr"
    openssl x509 -req -in "$work/$1.csr" -CA "$work/$3.crt" -CAkey "$work/$3.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days "$days" \
        -extfile "$work/${4:-leaf}.ext" -out "$work/$1.crt" 2>/dev/null
}

echo "==> emulator certificates: issuing into $outdir (${#hostnames[@]} names + 127.0.0.1)"
issue_ca ca "/O=smarthost.postfix tests/CN=smarthost.postfix emulator test CA"
issue_leaf server "/O=smarthost.postfix tests/CN=emulator" ca
issue_ca rogue-ca "/O=Rogue Interceptor/CN=Rogue Interceptor CA"
issue_leaf rogue "/O=Rogue Interceptor/CN=emulator" rogue-ca
issue_leaf client "$client_subject" ca client
issue_leaf rogue-client "$client_subject" rogue-ca client

openssl verify -CAfile "$work/ca.crt" "$work/server.crt" >/dev/null
openssl verify -CAfile "$work/ca.crt" -purpose sslclient "$work/client.crt" >/dev/null
for f in rogue.crt rogue-client.crt; do
    if openssl verify -CAfile "$work/ca.crt" "$work/$f" >/dev/null 2>&1; then
        echo "$f verifies against the test CA: refusing to continue" >&2
        exit 1
    fi
done

for f in "${files[@]}"; do
    case $f in
        *.key) install -m 0600 "$work/$f" "$outdir/$f" ;;
        *) install -m 0644 "$work/$f" "$outdir/$f" ;;
    esac
done
echo "==> emulator certificates: ready"
