#!/usr/bin/env bash
# Build (or reuse) the provider emulator image smarthost-postfix/emulator:latest.
#
#   tests/emulator/build.sh            reuse the image when it was built from the same input files
#   REBUILD=1 tests/emulator/build.sh  build again (Docker's layer cache still applies)
#
# Needs smarthost-postfix/debian:12 (images/build.sh 12) and Debian's mirror for python3-aiosmtpd.
set -euo pipefail

cd "$(dirname "$0")"
tag=${EMULATOR_IMAGE:-smarthost-postfix/emulator:latest}
base=smarthost-postfix/debian:12
inputs=(Dockerfile emulator.py emulatorctl.py oauth.py providers.json replies.json)

if ! docker image inspect "$base" >/dev/null 2>&1; then
    echo "==> $tag: base image $base is missing; building it"
    ../../images/build.sh 12
fi

# The image records a digest of its inputs, so an edited emulator is never served from a stale image.
digest=$(cat "${inputs[@]}" | sha256sum | cut -c1-16)
if [[ ${REBUILD:-0} != 1 ]] \
   && [[ $(docker image inspect -f '{{ index .Config.Labels "smarthost.emulator.inputs" }}' "$tag" 2>/dev/null) == "$digest" ]]; then
    echo "==> $tag: cached, reusing"
    exit 0
fi
echo "==> $tag: building (apt-get install python3-aiosmtpd in $base)"
docker build -q --label "smarthost.emulator.inputs=$digest" -t "$tag" . >/dev/null
echo "==> $tag: ready"
