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


def inventory_hosts(group="relays"):
    """Host name -> host vars written by molecule, for the hosts of a group."""
    with open(INVENTORY_FILE) as handle:
        inventory = yaml.safe_load(handle)
    hostvars = inventory["all"].get("hosts", {})
    members = inventory["all"].get("children", {}).get(group, {}).get("hosts", {})
    return {name: dict(hostvars.get(name) or {}) for name in members}


def host(name):
    """A testinfra host for a scenario container (docker exec, no ansible round trip)."""
    return testinfra.get_host("docker://%s" % name)


def records(kind="messages"):
    """Every record of one kind the emulator wrote so far (messages, auth, connections)."""
    path = os.path.join(RECORDS_DIR, "%s.jsonl" % kind)
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def new_tag():
    return "smarthost-test-%s" % uuid.uuid4().hex


def send_with_sendmail(target, sender, recipient, tag, subject="smarthost.postfix test"):
    """Submit one message on the target with Postfix's sendmail, as a local program would."""
    message = (
        "From: %s\nTo: %s\nSubject: %s\nX-Test-Tag: %s\n\nsent by the molecule tests\n"
        % (sender, recipient, subject, tag)
    )
    result = target.run("/usr/sbin/sendmail -f %s %s <<'EOF'\n%sEOF", sender, recipient, message)
    assert result.rc == 0, result.stderr
    return tag


def wait_for_message(tag, timeout=90):
    """The emulator's record of the message carrying this X-Test-Tag, or None after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in records("messages"):
            if record_tag(record) == tag:
                return record
        time.sleep(0.5)
    return None


def record_tag(record):
    return (record.get("headers") or {}).get("x-test-tag")


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
