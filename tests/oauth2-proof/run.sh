#!/usr/bin/env bash
# The oauth2 proof: Postfix relaying through oauth2-token deliver and Debian's msmtp with XOAUTH2
# to a fake identity provider and submission server, on Debian 12 and 13 containers.
#
#   tests/oauth2-proof/run.sh [12] [13]        results in tests/oauth2-proof/results/
#
# Needs the images smarthost-postfix/debian:12 and :13 (make images) and Debian's mirror.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
prefix=${PROOF_PREFIX:-oauth-proof}
versions=("${@:-12 13}")
[ $# -gt 0 ] || versions=(12 13)
status=0
mkdir -p "$here/results"
for version in "${versions[@]}"; do
    name="$prefix-$version"
    docker rm -f "$name" >/dev/null 2>&1 || true
    flock /tmp/smarthost-docker.lock docker run -d --name "$name" --hostname relay.proof.example --cgroupns host \
        -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock "smarthost-postfix/debian:$version" >/dev/null
    docker exec "$name" mkdir -p /opt/proof/repo/systemd
    for file in accounts.json fake_provider.py make-pki.sh proof.py setup.sh; do
        docker cp -q "$here/$file" "$name:/opt/proof/$file"
    done
    docker cp -q "$repo/plugins/module_utils/oauth2_token.py" "$name:/opt/proof/repo/oauth2_token.py"
    docker cp -q "$repo/roles/relay/files/systemd/." "$name:/opt/proof/repo/systemd/"
    echo "==> debian $version: setup"
    docker exec "$name" bash /opt/proof/setup.sh
    echo "==> debian $version: proof"
    docker exec "$name" python3 /opt/proof/proof.py --label "debian$version" ${PROOF_ONLY:+--only $PROOF_ONLY} || status=1
    docker cp -q "$name:/opt/proof/results/." "$here/results/"
    docker cp -q "$name:/var/log/mail.log" "$here/results/mail-debian$version.log" || true
    [ -n "${PROOF_KEEP:-}" ] || docker rm -f "$name" >/dev/null
done
exit $status
