# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers shared by the scenarios' testinfra tests.

Everything here talks to the containers a scenario created and to the
provider emulator's records, which the emulator writes to a directory
bind-mounted from the scenario's ephemeral directory.
"""

import json
import os
import re
import subprocess
import time
import uuid

import testinfra
import yaml

PROJECT_DIR = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.getcwd())
EPHEMERAL_DIR = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")
INVENTORY_FILE = os.environ.get("MOLECULE_INVENTORY_FILE", "")
SCENARIO = os.environ.get("MOLECULE_SCENARIO_NAME", "")
RECORDS_DIR = os.path.join(EPHEMERAL_DIR, "emulator", "records")
EMULATOR = "smarthost-emulator-%s" % SCENARIO


def providers():
    """The emulator's provider table: hostnames, ports, test credentials."""
    with open(os.path.join(PROJECT_DIR, "tests", "emulator", "providers.json")) as handle:
        return json.load(handle)["providers"]


def secrets():
    """Every test secret in providers.json: passwords, OAuth 2.0 client secrets and refresh tokens."""
    found = []
    for provider in providers().values():
        found.append(provider.get("password"))
        oauth2 = provider.get("oauth2") or {}
        found += [oauth2.get("client_secret"), oauth2.get("refresh_token")]
        found += [client.get("client_secret") for client in oauth2.get("extra_clients") or []]
    return [secret for secret in found if secret]


def inventory_hosts(group="relays"):
    """Host name -> the host variables the scenario gives it, for the hosts of a group.

    Molecule writes groups at the top level of its inventory; host variables
    are the scenario's linked host_vars/<host>.yml files.
    """
    with open(INVENTORY_FILE) as handle:
        inventory = yaml.safe_load(handle)
    members = (inventory.get(group) or inventory["all"].get("children", {}).get(group) or {}).get("hosts") or {}
    scenario_dir = os.environ.get("MOLECULE_SCENARIO_DIRECTORY", "")
    hosts = {}
    for name in members:
        path = os.path.join(scenario_dir, "host_vars", "%s.yml" % name)
        hostvars = {}
        if os.path.exists(path):
            with open(path) as handle:
                hostvars = yaml.safe_load(handle) or {}
        hosts[name] = hostvars
    return hosts


def host(name):
    """A testinfra host for a scenario container (docker exec, no ansible round trip)."""
    return testinfra.get_host("docker://%s" % name)


def records(kind="messages", provider=None):
    """Every record of one kind an emulator wrote so far (messages, auth, connections, replies).

    provider names a separate emulator instance (EMULATOR_SEPARATE_PROVIDERS);
    None is the main one.
    """
    directory = RECORDS_DIR if provider is None else "%s-%s" % (RECORDS_DIR, provider)
    path = os.path.join(directory, "%s.jsonl" % kind)
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        # A last line without its newline is still being written: skip it.
        return [json.loads(line) for line in handle if line.endswith("\n") and line.strip()]


def new_tag():
    return "smarthost-test-%s" % uuid.uuid4().hex


def send_with_sendmail(target, sender, recipient, tag, subject="smarthost.postfix test"):
    """Submit one message on the target with Postfix's sendmail, as a local program would."""
    message = "From: %s\nTo: %s\nSubject: %s\nX-Test-Tag: %s\n\nsent by the molecule tests\n" % (
        sender,
        recipient,
        subject,
        tag,
    )
    result = target.run("/usr/sbin/sendmail -f %s %s <<'EOF'\n%sEOF", sender, recipient, message)
    assert result.rc == 0, result.stderr
    return tag


def wait_for_message(tag, timeout=90, provider=None):
    """The emulator's record of the message carrying this X-Test-Tag, or None after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in records("messages", provider):
            if record_tag(record) == tag:
                return record
        time.sleep(0.5)
    return None


def record_tag(record):
    return (record.get("headers") or {}).get("x-test-tag")


def emulator_mode(mode, *options, provider=None):
    """Switch an emulator's failure mode; returns once the server applied it."""
    container = EMULATOR if provider is None else "%s-%s" % (EMULATOR, provider)
    subprocess.run(["docker", "exec", container, "emulatorctl", "mode", mode] + list(options), check=True)


def emulator_oauth(mode, *options):
    """Switch the emulator's token endpoints (normal, down, slow, http_503, invalid_client_secret...)."""
    subprocess.run(["docker", "exec", EMULATOR, "emulatorctl", "oauth", mode] + list(options), check=True)


def queue_report(target):
    """What Postfix says about mail still queued on the target, for failure messages."""
    return target.run("postqueue -p | tail -n 20").stdout


def run_playbook(playbook, *extra_args):
    """Run a playbook against the scenario's inventory; return (rc, output)."""
    command = [
        "ansible-playbook",
        "-i",
        INVENTORY_FILE,
        os.path.join(PROJECT_DIR, playbook) if not os.path.isabs(playbook) else playbook,
    ] + list(extra_args)
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    return proc.returncode, proc.stdout


RECAP_LINE = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def play_recap(output):
    """host -> {ok, changed, unreachable, failed} from a PLAY RECAP."""
    recap = {}
    for name, ok, changed, unreachable, failed in RECAP_LINE.findall(output):
        recap[name] = {"ok": int(ok), "changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
    return recap


def assert_check_mode_changes_nothing(hosts):
    """Check mode on converged hosts must predict zero changes and print no password."""
    converge = os.path.join(PROJECT_DIR, "molecule", "resources", "playbooks", "converge.yml")
    rc, output = run_playbook(converge, "--check", "--diff")
    assert rc == 0, output[-3000:]
    recap = play_recap(output)
    assert set(hosts) <= set(recap), output[-3000:]
    changed = {name: counts["changed"] for name, counts in recap.items() if name in hosts and counts["changed"]}
    assert not changed, "check mode predicts changes on a converged host: %s\n%s" % (changed, output[-3000:])
    for secret in secrets():
        assert secret not in output, "a secret was printed in check/diff mode"
    for hostvars in hosts.values():
        for user in hostvars.get("relay_submission_users") or []:
            assert user["password"] not in output, "a submission password was printed in check/diff mode"


SMTP_CLIENT = r"""
import smtplib, sys
server, port, sender, recipient, tag = sys.argv[1:6]
message = "From: %s\nTo: %s\nSubject: over smtp\nX-Test-Tag: %s\n\nhello\n" % (sender, recipient, tag)
try:
    with smtplib.SMTP(server, int(port), timeout=30) as smtp:
        smtp.sendmail(sender, [recipient], message)
    print(250)
except smtplib.SMTPRecipientsRefused as exc:
    code, text = list(exc.recipients.values())[0]
    print(code, text.decode())
"""


def smtp_submit(client, server_ip, sender, recipient, tag, port=25):
    """Submit a message over SMTP from a client container: (250, "") or the refusal's (code, text)."""
    out = client.check_output("python3 -c %s %s %s %s %s %s", SMTP_CLIENT, server_ip, str(port), sender, recipient, tag)
    code, _sep, text = out.strip().partition(" ")
    return int(code), text
