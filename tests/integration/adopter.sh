#!/usr/bin/env bash
# What an adopter does: build the collection, install the tarball into a
# separate infra repo (its own ansible.cfg, requirements.yml, inventory and
# vault), then run `ansible-playbook smarthost.postfix.site` and a site.yml of
# the repo's own that uses the role by FQCN. Both must converge a container,
# the second run must change nothing, and a message must reach the emulator
# with the vaulted identity.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /var/tmp/smarthost-adopter.XXXXXX)
name=adopter-app1
network=smarthost-adopter
cleanup() {
    docker rm -f -v "$name" smarthost-emulator-adopter >/dev/null 2>&1 || true
    docker network rm "$network" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAILED: $*" >&2; exit 1; }

echo "==> build the collection tarball"
ansible-galaxy collection build --force --output-path "$work/dist" "$repo" >/dev/null
tarball=$(ls "$work"/dist/smarthost-postfix-*.tar.gz)
contents=$(tar -tzf "$tarball")
for file in plugins/modules/postconf.py plugins/modules/postfix_config.py plugins/doc_fragments/postconf.py; do
    grep -qx "$file" <<<"$contents" || fail "tarball lacks $file"
done
tooling='molecule|\.venv|\.ansible|\.build|images|tests/emulator|tests/integration|tests/unit/emulator'
unwanted="^($tooling)/|^\\.|/\\.[^/]+\$"
# The example inventory's vault password is documentation (its vault files are encrypted with it).
shipped=$(grep -vx "docs/examples/inventory/.vault-pass-example" <<<"$contents")
if grep -qE "$unwanted" <<<"$shipped"; then
    fail "tarball carries dotfiles, test tooling, cache or build files: $(grep -E "$unwanted" <<<"$shipped" | head -3)"
fi
# Every source file's licence header points there.
grep -qx "LICENSES/GPL-3.0-or-later.txt" <<<"$contents" || fail "tarball lacks LICENSES/GPL-3.0-or-later.txt"

echo "==> an infra repo of its own, with the collection installed from requirements.yml"
infra=$work/infra
mkdir -p "$infra/inventory/group_vars/smarthost_sendgrid"
cat > "$infra/ansible.cfg" <<CFG
[defaults]
collections_path = ./collections
inventory = ./inventory/hosts.yml
vault_password_file = ./.vault-pass
CFG
cat > "$infra/requirements.yml" <<REQ
collections:
  - name: $tarball
    type: file
REQ
# One smarthost group (the collection's playbooks need no other), inside a group
# of the adopter's own that its own playbook targets.
cat > "$infra/inventory/hosts.yml" <<INV
mail_relays:
  children:
    smarthost_sendgrid:
      hosts:
        $name:
          ansible_connection: community.docker.docker
          ansible_python_interpreter: /usr/bin/python3
INV
password=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["providers"]["sendgrid"]["password"])' "$repo/tests/emulator/providers.json")
echo "adopter-test-vault-pass" > "$infra/.vault-pass"
cat > "$infra/inventory/group_vars/smarthost_sendgrid/vars.yml" <<VARS
relay_provider: sendgrid
relay_password: "{{ vault_sendgrid_password }}"
relay_sender_domain: adopter.example.test
VARS
printf 'vault_sendgrid_password: "%s"\n' "$password" > "$infra/inventory/group_vars/smarthost_sendgrid/vault.yml"
(cd "$infra" && ansible-vault encrypt inventory/group_vars/smarthost_sendgrid/vault.yml >/dev/null)
# shellcheck disable=SC2016 # the literal vault header, not a variable
grep -q '^\$ANSIBLE_VAULT' "$infra/inventory/group_vars/smarthost_sendgrid/vault.yml" || fail "vault file not encrypted"
cat > "$infra/site.yml" <<SITE
- name: Our own site playbook using the role by FQCN
  hosts: mail_relays
  roles:
    - role: smarthost.postfix.relay
SITE
# The adopter's own environment: no collections path of ours leaks in.
unset ANSIBLE_COLLECTIONS_PATH PYTHONPATH
cd "$infra"
ansible-galaxy collection install -r requirements.yml >/dev/null
ansible-doc smarthost.postfix.sasl_map | grep -q "update_password" || fail "ansible-doc does not show sasl_map's options"
# services comes from the doc fragment: the installed collection must resolve it.
ansible-doc smarthost.postfix.postfix_config | grep -q "exclusive_options" || fail "ansible-doc does not resolve postfix_config's doc fragment"
ansible-doc -t role smarthost.postfix.relay | grep -q "relay_provider" || fail "ansible-doc does not show the relay role's variables"

echo "==> execution environment: the collection adds no Python or system dependency"
introspected=$(ansible-builder introspect --sanitize "$infra/collections")
python3 - "$introspected" <<'PY' || fail "the collection declares EE dependencies: $introspected"
import sys, yaml
data = yaml.safe_load(sys.argv[1].split("---", 1)[-1]) or {}
assert not data.get("python") and not data.get("system"), data
PY
ansible-builder create --file "$repo/docs/examples/awx/execution-environment.yml" --context "$work/ee-context" >/dev/null \
    || fail "ansible-builder create rejects docs/examples/awx/execution-environment.yml"
[[ -s $work/ee-context/Containerfile || -s $work/ee-context/Dockerfile ]] || fail "ansible-builder create wrote no build file"

echo "==> a target container and the provider emulator"
docker network create "$network" >/dev/null
docker run -d --name "$name" --hostname "$name.example.test" --network "$network" --cgroupns host \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock smarthost-postfix/debian:12 >/dev/null
ansible-playbook "$repo/molecule/resources/playbooks/prepare.yml" \
    -e "emulator_project_dir=$repo" -e "emulator_state_dir=$work/emulator" -e emulator_scenario=adopter >/dev/null

recap_changed() { grep -E "^$name\s*:" | sed -E 's/.*changed=([0-9]+).*/\1/'; }

echo "==> ansible-playbook smarthost.postfix.site (installed collection)"
ansible-playbook smarthost.postfix.site > "$work/site-1.log" 2>&1 || { tail -40 "$work/site-1.log"; fail "site converge"; }
grep -qF "$password" "$work/site-1.log" && fail "password printed by the site converge"
# A single-group inventory: no "Could not match supplied host pattern" for the
# providers it does not use, and no other warning either.
if grep -q "WARNING\]" "$work/site-1.log"; then grep "WARNING\]" "$work/site-1.log"; fail "site converge warned"; fi

echo "==> ansible-playbook site.yml (the repo's own, role by FQCN): must change nothing now"
ansible-playbook site.yml > "$work/site-2.log" 2>&1 || { tail -40 "$work/site-2.log"; fail "own site converge"; }
changed=$(recap_changed < "$work/site-2.log")
[[ $changed == 0 ]] || { tail -40 "$work/site-2.log"; fail "second converge changed $changed tasks"; }

echo "==> a message from the host reaches the smarthost as the vaulted identity"
tag=adopter-$(date +%s%N)
docker exec -i "$name" /usr/sbin/sendmail -f root someone@example.test <<MSG
Subject: adopter test
X-Test-Tag: $tag

hello
MSG
for _ in $(seq 1 60); do
    if grep -qF "$tag" "$work/emulator/records/messages.jsonl" 2>/dev/null; then break; fi
    sleep 1
done
record=$(grep -F "$tag" "$work/emulator/records/messages.jsonl" 2>/dev/null || true)
[[ -n $record ]] || { docker exec "$name" postqueue -p; fail "message did not reach the emulator"; }
python3 - "$record" <<'PY' || fail "wrong identity or TLS"
import json, sys
r = json.loads(sys.argv[1])
assert r["username"] == "apikey", r
assert r["tls_version"] in ("TLSv1.2", "TLSv1.3") and r["certificate"] == "trusted", r
PY
echo "adopter: 1 passed, 0 failed"
