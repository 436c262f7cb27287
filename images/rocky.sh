#!/usr/bin/env bash
# Build smarthost-postfix/rocky:9 when a registry can serve the base image.
# Exit 0 when the image is ready, 3 (with the reason on stdout) when it
# cannot be had here, so callers can report a skip instead of pretending.
set -uo pipefail
cd "$(dirname "$0")" || exit 1
tag=smarthost-postfix/rocky:9
base=${ROCKY_BASE_IMAGE:-docker.io/rockylinux/rockylinux:9}
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "==> $tag: cached, reusing"
    exit 0
fi
echo "==> $tag: pulling $base"
if ! reason=$(timeout 120 docker pull -q "$base" 2>&1); then
    echo "no Rocky Linux 9 image: pulling $base failed: $(tail -n 1 <<<"$reason")"
    exit 3
fi
docker build -q --build-arg "BASE=$base" -t "$tag" -f Dockerfile.rocky . >/dev/null || exit 1
echo "==> $tag: ready"
