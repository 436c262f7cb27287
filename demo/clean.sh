#!/usr/bin/env bash
# make demo-clean: remove the demo fleet, the emulator, the network and state.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
docker rm -f -v demo-app1 demo-app2 demo-app3 smarthost-emulator-demo >/dev/null 2>&1
docker network rm smarthost-demo >/dev/null 2>&1
rm -rf demo/.state
echo "demo removed (images are kept for the next run; images/build.sh REBUILD=1 rebuilds)"
