#!/usr/bin/env bash
# Build (or reuse) the systemd base images the scenarios run on.
#
#   images/build.sh [12] [13]     default: both
#
# Images are tagged smarthost-postfix/debian:<version> and reused when they
# exist (delete them, or set REBUILD=1, to start over). Where no registry can
# be reached (the default here), the root filesystem comes from debootstrap
# against Debian's mirror and is imported with `docker import`; set
# IMAGE_SOURCE=registry to start from debian:<version> pulled from a registry.
set -euo pipefail

cd "$(dirname "$0")"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
IMAGE_SOURCE=${IMAGE_SOURCE:-debootstrap}
REBUILD=${REBUILD:-0}
versions=("$@")
((${#versions[@]})) || versions=(12 13)

codename() {
    case "$1" in
        12) echo bookworm ;;
        13) echo trixie ;;
        *) echo "unknown Debian version '$1' (12 or 13)" >&2; return 1 ;;
    esac
}

build_one() {
    local version=$1 release tag rootfs_tag workdir
    release=$(codename "$version")
    tag="smarthost-postfix/debian:${version}"
    rootfs_tag="smarthost-postfix/debian-rootfs:${version}"
    if [[ $REBUILD != 1 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
        echo "==> $tag: cached, reusing"
        return 0
    fi
    local base
    if [[ $IMAGE_SOURCE == registry ]]; then
        base="debian:${release}"
        echo "==> $tag: pulling $base"
        docker pull "$base"
    else
        base="$rootfs_tag"
        if [[ $REBUILD == 1 ]] || ! docker image inspect "$rootfs_tag" >/dev/null 2>&1; then
            workdir=$(mktemp -d /var/tmp/smarthost-rootfs.XXXXXX)
            trap 'rm -rf "$workdir"' RETURN
            echo "==> $tag: debootstrap $release from $MIRROR (a few minutes)"
            debootstrap --variant=minbase \
                --include=systemd,systemd-sysv,python3,python3-apt,ca-certificates,iproute2,procps \
                "$release" "$workdir/root" "$MIRROR" 2>&1 \
                | grep --line-buffered -E '^I: (Retrieving Release|Validating Packages|Installing core|Unpacking the base|Configuring the base|Base system installed)|^E:|^W:' || true
            [[ -x $workdir/root/bin/systemctl || -x $workdir/root/usr/bin/systemctl ]] \
                || { echo "debootstrap of $release failed" >&2; return 1; }
            # Point apt at the same mirror and keep the image small.
            rm -rf "$workdir/root/var/cache/apt/archives/"*.deb "$workdir/root/var/lib/apt/lists/"*
            echo "==> $tag: importing root filesystem"
            tar -C "$workdir/root" -c . | docker import - "$rootfs_tag" >/dev/null
        fi
    fi
    echo "==> $tag: finishing with images/Dockerfile.debian"
    docker build -q --build-arg "BASE=$base" -t "$tag" -f Dockerfile.debian . >/dev/null
    echo "==> $tag: ready"
}

for v in "${versions[@]}"; do
    build_one "$v"
done
