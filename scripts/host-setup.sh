#!/usr/bin/env bash
# Prepare a fresh Debian machine (as root) for the test suite:
#  - Postfix binaries for the unit tests, installed WITHOUT configuring or
#    starting a Postfix on this machine (debconf "No configuration"), and
#    Cyrus SASL's saslpasswd2 (sasl2-bin; its saslauthd stays disabled) and
#    db_dump (db-util) for the sasldb module's tests,
#  - the Docker engine for the molecule scenarios (started only when no
#    engine answers already),
#  - debootstrap for building base images offline.
# Idempotent: a second run installs nothing and starts nothing.
set -euo pipefail

log() { printf '==> %s\n' "$*"; }

need_pkgs=()
for pkg in postfix libsasl2-modules msmtp sasl2-bin db-util docker.io debootstrap rsync git make ca-certificates openssl shellcheck; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$pkg")
done
# A docker CLI on PATH with an engine that answers is good enough: do not
# install docker.io over someone else's engine.
if docker info >/dev/null 2>&1; then
    need_pkgs=("${need_pkgs[@]/docker.io}")
fi
mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | grep -v '^$' || true)

if ((${#need_pkgs[@]})); then
    log "installing system packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    # Keep apt from starting services (postfix, dockerd) on this machine; we
    # start dockerd ourselves below and never want a host Postfix running.
    policy_created=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    trap '[[ $policy_created == 1 ]] && rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (no Docker engine answered)"
    mkdir -p /var/log
    nohup dockerd >/var/log/dockerd-smarthost.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { echo "dockerd did not come up; see /var/log/dockerd-smarthost.log" >&2; exit 1; }
fi
log "docker engine: $(docker version --format '{{.Server.Version}}')"
log "postfix: $(postconf -d -h mail_version 2>/dev/null)"
