#!/usr/bin/env bash
# Prepares a Debian test container for proof.py: Debian's postfix and msmtp, the fake provider,
# and the on-host components installed the way the role is to install them.
set -euo pipefail
PROOF=/opt/proof
export DEBIAN_FRONTEND=noninteractive

echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends postfix msmtp python3-aiosmtpd openssl ca-certificates procps \
    util-linux >/dev/null

# The providers' names on loopback addresses of this container.
cat >> /etc/hosts <<HOSTS
127.0.0.4 login.microsoftonline.com oauth2.googleapis.com
127.0.0.2 smtp.office365.com
127.0.0.3 smtp.gmail.com
HOSTS
"$PROOF/make-pki.sh" "$PROOF/pki"
systemd-run --quiet --unit=fake-provider --property=WorkingDirectory="$PROOF" \
    python3 "$PROOF/fake_provider.py" --dir "$PROOF/pki"
for _ in $(seq 50); do
    python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:8080/state", timeout=1)' 2>/dev/null && break
    sleep 0.2
done

# --- the on-host components, as the role installs them -------------------------------------------
useradd --system --user-group --home-dir /var/cache/smarthost-postfix/oauth2 --no-create-home \
    --shell /usr/sbin/nologin smarthost-oauth2
install -d -m 0755 /usr/libexec/smarthost-postfix
{ echo '#!/usr/bin/python3 -I'; cat "$PROOF/repo/oauth2_token.py"; } > /usr/libexec/smarthost-postfix/oauth2-token
chmod 0755 /usr/libexec/smarthost-postfix/oauth2-token
install -d -o root -g smarthost-oauth2 -m 0750 /etc/smarthost-postfix/oauth2
install -d -o smarthost-oauth2 -g smarthost-oauth2 -m 0700 /var/cache/smarthost-postfix/oauth2
python3 - <<'PY'
import json, os, grp
accounts = json.load(open('/opt/proof/accounts.json'))
app = accounts['microsoft']['apps'][0]
google = accounts['google']['clients'][0]
refresh = next(iter(google['refresh_tokens']))
configs = {
    'office365': {'provider': 'microsoft', 'tenant': 'contoso.onmicrosoft.com', 'client_id': app['client_id'],
                  'client_secret': app['client_secret'], 'username': app['mailboxes'][0],
                  'ca_file': '/opt/proof/pki/ca.crt', 'helo_name': 'relay.proof.example'},
    'gmail': {'provider': 'google', 'client_id': google['client_id'], 'client_secret': google['client_secret'],
              'refresh_token': refresh, 'username': google['refresh_tokens'][refresh],
              'ca_file': '/opt/proof/pki/ca.crt', 'helo_name': 'relay.proof.example'},
}
gid = grp.getgrnam('smarthost-oauth2').gr_gid
for name, config in configs.items():
    path = '/etc/smarthost-postfix/oauth2/%s.json' % name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, 'w') as handle:
        json.dump(config, handle, indent=2)
    os.fchown(os.open(path, os.O_RDONLY), 0, gid)
PY
install -m 0644 "$PROOF/repo/systemd/smarthost-oauth2-renew@.service" "$PROOF/repo/systemd/smarthost-oauth2-renew@.timer" \
    /etc/systemd/system/
systemctl daemon-reload
systemctl enable --quiet --now smarthost-oauth2-renew@office365.timer

# --- Postfix: default route and a domain route through the two pipe(8) transports -----------------
touch /etc/postfix/main.cf
# $myhostname is for Postfix to expand, not the shell.
# shellcheck disable=SC2016
postconf -e 'compatibility_level = 3.6' 'myhostname = relay.proof.example' 'mydomain = proof.example' \
    'myorigin = $myhostname' 'mydestination = localhost' 'inet_interfaces = loopback-only' 'inet_protocols = ipv4' \
    'maillog_file = /var/log/mail.log' 'alias_maps =' 'alias_database =' \
    'default_transport = oauth2-office365:' 'transport_maps = texthash:/etc/postfix/transport' \
    'oauth2-office365_destination_recipient_limit = 1' 'oauth2-gmail_destination_recipient_limit = 1'
echo 'gmail-route.example oauth2-gmail:' > /etc/postfix/transport
for account in office365 gmail; do
    postconf -M "oauth2-$account/unix=oauth2-$account unix - n n - 3 pipe flags=q null_sender= user=smarthost-oauth2 argv=/usr/libexec/smarthost-postfix/oauth2-token deliver --config /etc/smarthost-postfix/oauth2/$account.json -f \${sender} -- \${recipient}"
done
postfix check
systemctl restart postfix
postconf -M oauth2-office365/unix
postconf -n | grep -i oauth2
echo "setup done"
