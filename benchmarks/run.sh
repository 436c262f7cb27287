#!/usr/bin/env bash
# make bench: measure the collection on containers created here (large maps and
# logs on this machine itself) and write docs/performance.md. Everything it
# starts (bench-* hosts, the emulator smarthost-emulator-bench, network
# smarthost-bench) is removed on exit, also when a step fails. Counts: BENCH_*
# variables, see benchmarks/bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
network=smarthost-bench
state=$repo/benchmarks/results
python=$repo/.venv/bin/python3

cleanup() {
    docker ps -aq --filter label=smarthost-bench=1 | xargs -r docker rm -f -v >/dev/null 2>&1 || true
    docker rm -f -v smarthost-emulator-bench smarthost-emulator-bench-b smarthost-emulator-bench-c >/dev/null 2>&1 || true
    docker network rm "$network" "$network-b" "$network-c" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> images: base (Debian 12 and 13), emulator, and the cached-packages variants"
bash images/build.sh 12
bash images/build.sh 13
bash tests/emulator/build.sh
# Rebuilt when the base image changed or the apt lists are older than half a
# day: the role refreshes lists older than a day, which would add a download.
for release in 12 13; do
    cached=smarthost-postfix/debian:$release-postfix-cached
    base_id=$(docker image inspect -f '{{.Id}}' "smarthost-postfix/debian:$release")
    built_from=$(docker image inspect -f '{{ index .Config.Labels "smarthost.bench.base" }}' "$cached" 2>/dev/null || true)
    created=$(docker image inspect -f '{{.Created}}' "$cached" 2>/dev/null || echo 1970-01-01T00:00:00Z)
    if [[ $built_from != "$base_id" ]] || (( $(date +%s) - $(date -d "$created" +%s) > 43200 )); then
        echo "==> $cached: building (packages downloaded, not installed)"
        docker build -q --no-cache --label "smarthost.bench.base=$base_id" --build-arg "RELEASE=$release" \
            -t "$cached" - < benchmarks/Dockerfile.postfix-cached >/dev/null
    fi
done

cleanup
mkdir -p "$state"
rm -f "$state"/results.json
docker network create "$network" >/dev/null

# The phases on this machine add about 5 minutes (large maps 4, large logs 1, measured on 2 busy cores).
echo "==> measuring (about 85 minutes on 2 cores; the paced runs start after the fleet phase and take 5000 messages at 3.5 per second)"
"$python" benchmarks/bench.py measure
"$python" benchmarks/bench.py report
echo "==> docs/performance.md written"
