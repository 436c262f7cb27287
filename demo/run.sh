#!/usr/bin/env bash
# make demo: a three-host fleet in containers, converged with the collection's
# site playbook, each host relaying to "its" smarthost (the provider emulator
# answering under the providers' real names). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
state=$repo/demo/.state
network=smarthost-demo
fleet=(demo-app1:12 demo-app2:13 demo-app3:12)

step() { printf '\n==> [%s/5] %s\n' "$1" "$2"; }

step 1 "base images (built once with debootstrap, then reused)"
bash images/build.sh 12 13
bash tests/emulator/build.sh

step 2 "demo fleet: ${fleet[*]}"
docker network inspect "$network" >/dev/null 2>&1 || docker network create "$network" >/dev/null
for entry in "${fleet[@]}"; do
    name=${entry%%:*} version=${entry##*:}
    if docker container inspect "$name" >/dev/null 2>&1; then
        docker start "$name" >/dev/null
        echo "    $name (Debian $version): running"
        continue
    fi
    docker run -d --name "$name" --hostname "$name.demo.example.test" --network "$network" \
        --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
        --label smarthost-demo=1 "smarthost-postfix/debian:$version" >/dev/null
    echo "    $name (Debian $version): started"
done

step 3 "provider emulator and its test CA on every host"
ansible-playbook -i demo/inventory molecule/resources/playbooks/prepare.yml \
    -e "emulator_project_dir=$repo" -e "emulator_state_dir=$state/emulator" -e emulator_scenario=demo

step 4 "ansible-playbook smarthost.postfix.site"
ansible-playbook -i demo/inventory smarthost.postfix.site

step 5 "a test message from each host"
MOLECULE_PROJECT_DIRECTORY=$repo MOLECULE_EPHEMERAL_DIRECTORY=$state MOLECULE_SCENARIO_NAME=demo \
    python3 demo/report.py "${fleet[@]%%:*}"
