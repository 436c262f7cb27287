#!/usr/bin/env bash
# A throwaway test CA, the provider hosts' certificate it signs, and an unrelated "rogue" CA.
# The extensions satisfy Python 3.13's strict X.509 checks (VERIFY_X509_STRICT) and GnuTLS.
set -euo pipefail
dir=${1:?usage: make-pki.sh DIR}
mkdir -p "$dir" && cd "$dir"
for ca in ca rogue-ca; do
    openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=OAuth2 Proof Test ${ca}" \
        -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' \
        -addext 'subjectKeyIdentifier=hash' -keyout "$ca.key" -out "$ca.crt" 2>/dev/null
done
cat > server.ext <<EXT
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
subjectAltName = DNS:login.microsoftonline.com, DNS:oauth2.googleapis.com, DNS:smtp.office365.com, DNS:smtp.gmail.com
EXT
openssl req -new -newkey rsa:2048 -nodes -subj '/CN=smtp.office365.com' -keyout server.key -out server.csr 2>/dev/null
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 -sha256 -extfile server.ext \
    -out server.crt 2>/dev/null
chmod 0644 ca.crt rogue-ca.crt server.crt
