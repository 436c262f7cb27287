# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A mixed fleet through smarthost.postfix.site and the per-provider playbooks.

Each case writes an inventory of its own (hosts.yml, group_vars/, host_vars/, as an
operator keeps one) and runs the shipped playbooks against the scenario's containers.
The cases build on each other and run in file order:

  fleet-canary    smarthost_ses                          -> SES (the group names it)
  fleet-override  smarthost_ses, host_vars relay_provider: sendgrid -> SendGrid
  fleet-both      smarthost_ses and smarthost_sendgrid, no relay_provider -> refused
  fleet-gone      smarthost_sendgrid, no such container  -> unreachable
  fleet-billing   smarthost_custom_billing (child of smarthost_custom) -> custom, account 1
  fleet-alerts    smarthost_custom_alerts  (child of smarthost_custom) -> custom, account 2

The emulator tells the two custom accounts apart by their logins: its table names the
second one "fallback" (tests/emulator/providers.json).
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "resources", "tests"))
import harness  # noqa: E402  pylint: disable=wrong-import-position

PROVIDERS = harness.providers()
CONTAINERS = ["fleet-canary", "fleet-override", "fleet-both", "fleet-billing", "fleet-alerts"]
GONE = "fleet-gone"
ROLLOUT_PLAY = "Roll out the relays, canary first"
REFUSE = "Refuse a host whose inventory leaves its provider open or names an unknown one"
SES_HOST = "email-smtp.us-east-1.amazonaws.com"
# Where each host's mail must leave, by what its inventory says (not by what the role did).
EXPECTED = {
    "fleet-canary": ("ses", PROVIDERS["ses"]["username"], "[%s]:587" % SES_HOST),
    "fleet-override": ("sendgrid", "apikey", "[smtp.sendgrid.net]:587"),
    "fleet-billing": ("custom", PROVIDERS["custom"]["username"], "[relay.example.test]:587"),
    "fleet-alerts": ("fallback", PROVIDERS["fallback"]["username"], "[relay.example.test]:587"),
}
# Every secret the emulator knows: passwords, OAuth 2.0 client secrets and refresh tokens (the connector has none).
PASSWORDS = harness.secrets()
WORK = tempfile.mkdtemp(prefix="inventories-", dir=harness.EPHEMERAL_DIR or None)

CONNECTION = {
    "ansible_connection": "community.docker.docker",
    "ansible_python_interpreter": "/usr/bin/python3",
    "relay_sender_domain": "example.test",
}


def account(name):
    return {"relay_username": PROVIDERS[name]["username"], "relay_password": PROVIDERS[name]["password"]}


def write_inventory(name, hosts, group_vars=None, host_vars=None):
    """An inventory directory as operators keep one; returns its path."""
    directory = os.path.join(WORK, name)
    for sub, variables in (("group_vars", group_vars or {}), ("host_vars", host_vars or {})):
        os.makedirs(os.path.join(directory, sub), exist_ok=True)
        for owner, values in variables.items():
            with open(os.path.join(directory, sub, owner + ".yml"), "w") as handle:
                yaml.safe_dump(values, handle)
    with open(os.path.join(directory, "hosts.yml"), "w") as handle:
        yaml.safe_dump(hosts, handle, sort_keys=False)
    return directory


MIXED = write_inventory(
    "mixed",
    {
        "smarthost_ses": {"hosts": {"fleet-canary": None, "fleet-override": None, "fleet-both": None}},
        "smarthost_sendgrid": {"hosts": {"fleet-both": None, GONE: None}},
        "smarthost_custom": {
            "children": {
                "smarthost_custom_billing": {"hosts": {"fleet-billing": None}},
                "smarthost_custom_alerts": {"hosts": {"fleet-alerts": None}},
            }
        },
    },
    group_vars={
        "all": CONNECTION,
        "smarthost_ses": dict(account("ses"), relay_ses_region="us-east-1"),
        "smarthost_sendgrid": {"relay_password": PROVIDERS["sendgrid"]["password"]},
        "smarthost_custom": {"relay_host": "relay.example.test"},
        "smarthost_custom_billing": account("custom"),
        "smarthost_custom_alerts": account("fallback"),
    },
    host_vars={
        # The override: SendGrid for this member of smarthost_ses. It inherits the
        # group's SES login, which SendGrid's preset refuses, so it clears it.
        "fleet-override": {
            "relay_provider": "sendgrid",
            "relay_username": None,
            "relay_password": PROVIDERS["sendgrid"]["password"],
        },
        GONE: {"ansible_host": "fleet-gone-no-such-container"},
    },
)

SINGLE = write_inventory(
    "single",
    {
        "smarthost_ses": {"hosts": {"fleet-canary": None}},
        # A host of the same infra inventory that is no relay: nothing may touch it.
        "web": {"hosts": {"fleet-both": None}},
    },
    group_vars={"all": CONNECTION, "smarthost_ses": dict(account("ses"), relay_ses_region="us-east-1")},
)

# The adopter's own groups and playbook; the two accounts trade hosts.
ADOPTER = write_inventory(
    "adopter",
    {
        "mail_relays": {
            "children": {
                "team_payments": {"hosts": {"fleet-billing": None}},
                "team_monitoring": {"hosts": {"fleet-alerts": None}},
            }
        }
    },
    group_vars={
        "all": CONNECTION,
        "mail_relays": {"relay_provider": "custom", "relay_host": "relay.example.test"},
        "team_payments": account("fallback"),
        "team_monitoring": account("custom"),
    },
)
ADOPTER_PLAYBOOK = os.path.join(WORK, "adopter-mail.yml")  # outside the inventory directory
with open(ADOPTER_PLAYBOOK, "w") as _handle:
    _handle.write(
        "- name: Our mail relays\n  hosts: mail_relays\n  gather_facts: false\n"
        "  roles:\n    - role: smarthost.postfix.relay\n"
    )

RUNS = {}


def run(playbook, inventory, *args):
    """ansible-playbook with results as one JSON line per host; returns (rc, output)."""
    env = dict(
        os.environ,
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_HOST_KEY_CHECKING="0",
    )
    env.pop("ANSIBLE_CONFIG", None)  # molecule's ansible.cfg would bring its inventory
    command = ["ansible-playbook", "-i", inventory, playbook] + list(args)
    proc = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, env=env, cwd=WORK
    )
    if os.environ.get("FLEET_TEST_LOGS"):  # keep every run's output for a look afterwards
        RUNS.setdefault("count", [0])[0] += 1
        name = "%02d-%s.log" % (RUNS["count"][0], os.path.basename(playbook))
        path = os.path.join(os.environ["FLEET_TEST_LOGS"], name)
        with open(path, "w") as handle:
            handle.write("%s\nrc=%s\n%s" % (" ".join(command), proc.returncode, proc.stdout))
    for password in PASSWORDS:
        assert password not in proc.stdout, "a password was printed by %s" % " ".join(command)
    return proc.returncode, proc.stdout


def play_sections(output, name):
    """The text of each run (serial batch) of the play called name."""
    parts = re.split(r"^PLAY \[(.*)\] \**$", output, flags=re.M)  # text, name, text, name, text...
    return [parts[i + 1] for i in range(1, len(parts) - 1, 2) if parts[i] == name]


def hosts_in(section):
    """Hosts a task ran for in this text ("host -> localhost" for a delegated task counts as host)."""
    found = re.findall(r"^(?:ok|changed|fatal|skipping|failed): \[([^\]]+)\]", section, re.M)
    return {name.split(" -> ")[0] for name in found}


def results(output, host, task):
    """The results the given task printed for the host (one JSON line, or indented for debug), each with
    the status Ansible printed before it (ok, changed, fatal) under "_status"."""
    found = []
    start = re.compile(r"^(ok|changed|fatal): \[%s\](?:: FAILED!| => \(item=.*\))? => (\{.*)$" % re.escape(host))
    for section in re.split(r"^TASK \[", output, flags=re.M)[1:]:
        if section.split("]", 1)[0].split(" : ")[-1] != task:
            continue
        lines = section.splitlines()
        for index, line in enumerate(lines):
            match = start.match(line)
            if not match:
                continue
            status, text = match.groups()
            if text == "{":  # an indented result runs to the closing brace at column 0
                text = "\n".join(["{"] + lines[index + 1 : lines.index("}", index) + 1])
            found.append(dict(json.loads(text), _status=status))
    return found


def state_of(name):
    """What a run could change on a host without Postfix: packages, package lists, debconf, /etc/postfix."""
    script = (
        "dpkg-query -W -f '${Package} ${Version}\\n'; ls -la /var/lib/apt/lists; "
        "md5sum /var/cache/debconf/config.dat; ls /etc/postfix 2>&1; true"
    )
    out = subprocess.run(
        ["docker", "exec", name, "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=True,
    ).stdout
    return hashlib.sha256(out.encode()).hexdigest(), out


def postfix_installed(name):
    return harness.host(name).package("postfix").is_installed


def assert_mail_leaves_as_inventory_says(names):
    tags = {}
    for name in names:
        tags[name] = harness.send_with_sendmail(
            harness.host(name), "root", "ops@recipient.example.test", harness.new_tag()
        )
    for name, tag in tags.items():
        record = harness.wait_for_message(tag)
        assert record is not None, "%s: message never reached the emulator\n%s" % (
            name,
            harness.queue_report(harness.host(name)),
        )
        provider, username, _relayhost = EXPECTED[name]
        assert (record["provider"], record["username"]) == (provider, username), (name, record)
        assert record["tls_version"] in ("TLSv1.2", "TLSv1.3") and record["certificate"] == "trusted", record


@pytest.fixture(scope="module")
def before():
    return {name: state_of(name) for name in CONTAINERS}


@pytest.fixture(scope="module")
def preview(before):
    """Check mode first, on hosts that have no Postfix yet."""
    RUNS["preview"] = run("smarthost.postfix.site", MIXED, "--check", "--diff", "--limit", "!" + GONE)
    return RUNS["preview"]


def test_check_mode_previews_the_plan_on_hosts_without_postfix(preview):
    rc, output = preview
    recap = harness.play_recap(output)
    for name, (_provider, _username, relayhost) in EXPECTED.items():
        shown = results(output, name, "Preview what a real run installs and writes (check mode, no Postfix yet)")
        assert shown, "%s: no preview\n%s" % (name, output[-3000:])
        lines = shown[0]["msg"]
        assert lines[0].startswith("Postfix is not installed yet") and relayhost in lines[0], lines[0]
        assert shown[0]["_status"] == "changed", shown[0]
        assert "  relayhost = %s" % relayhost in lines, lines
        assert "  smtp_tls_security_level = secure" in lines, lines
        assert any(line.startswith("/etc/postfix/sasl_passwd (") and relayhost in line for line in lines), lines
        assert recap[name]["changed"] > 0, recap[name]
    # fleet-both is refused in check mode too, so the run fails.
    assert rc != 0


def test_check_mode_changes_nothing_on_a_host_without_postfix(before, preview):
    for name in CONTAINERS:
        digest, listing = state_of(name)
        assert digest == before[name][0], "%s changed in check mode:\n%s\nwas:\n%s" % (name, listing, before[name][1])
        assert not postfix_installed(name)


@pytest.fixture(scope="module")
def strict_rollout(preview):
    """The default policy (no failure tolerated), in batches of 1, 2 and the rest."""
    RUNS["strict"] = run("smarthost.postfix.site", MIXED, "-e", '{"relay_rollout_serial": [1, 2, "100%"]}')
    return RUNS["strict"]


def test_a_host_in_two_provider_groups_is_refused_and_left_unchanged(before, strict_rollout):
    rc, output = strict_rollout
    refusal = results(output, "fleet-both", REFUSE)
    assert refusal and refusal[0]["_status"] == "fatal", output[-3000:]
    assert "smarthost_ses" in refusal[0]["msg"] and "smarthost_sendgrid" in refusal[0]["msg"], refusal[0]["msg"]
    assert all("fleet-both" not in hosts_in(section) for section in play_sections(output, ROLLOUT_PLAY))
    assert state_of("fleet-both")[0] == before["fleet-both"][0]
    assert rc != 0


def test_one_rollout_spans_the_providers_canary_first(strict_rollout):
    _rc, output = strict_rollout
    batches = [hosts_in(section) for section in play_sections(output, ROLLOUT_PLAY)]
    # Inventory order: the first smarthost host is the canary; providers mix in the batches.
    assert batches == [{"fleet-canary"}, {"fleet-override", GONE}, {"fleet-billing", "fleet-alerts"}], batches


def test_an_unreachable_host_stops_the_rollout_before_the_next_batch(before, strict_rollout):
    rc, output = strict_rollout
    recap = harness.play_recap(output)
    assert recap[GONE]["unreachable"] == 1, recap
    # Its batch was not interrupted: the other host there finished, handlers included.
    assert recap["fleet-override"]["failed"] == 0 and recap["fleet-override"]["unreachable"] == 0, recap
    for name in ("fleet-billing", "fleet-alerts"):
        stop = results(output, name, "Stop the rollout when too many hosts of the earlier batches failed")
        assert stop and stop[0]["_status"] == "fatal", output[-3000:]
        assert "1 of the 3 hosts rolled out so far failed or were unreachable (%s)" % GONE in stop[0]["msg"], stop
        assert state_of(name)[0] == before[name][0], "%s was changed after the rollout stopped" % name
    assert rc != 0


def test_hosts_before_the_stop_relay_through_the_provider_their_inventory_names(strict_rollout):
    assert_mail_leaves_as_inventory_says(["fleet-canary", "fleet-override"])


@pytest.fixture(scope="module")
def tolerant_rollout(strict_rollout):
    RUNS["tolerant"] = run(
        "smarthost.postfix.site",
        MIXED,
        "-e",
        '{"relay_rollout_serial": [1, 2, "100%"]}',
        "-e",
        "relay_rollout_max_fail_percentage=50",
    )
    return RUNS["tolerant"]


def test_a_higher_threshold_rolls_out_past_the_unreachable_host(tolerant_rollout):
    rc, output = tolerant_rollout
    recap = harness.play_recap(output)
    assert recap[GONE]["unreachable"] == 1, recap
    for name in ("fleet-billing", "fleet-alerts"):
        assert recap[name]["failed"] == 0 and recap[name]["changed"] > 0, recap
    # Converged hosts stay as they are: the override does not flip back to SES.
    for name in ("fleet-canary", "fleet-override"):
        assert recap[name]["changed"] == 0 and recap[name]["failed"] == 0, recap
    assert rc == 4, "an unreachable host must still fail the run (rc %s)" % rc


def test_two_accounts_of_one_provider_through_child_groups(tolerant_rollout):
    assert_mail_leaves_as_inventory_says(["fleet-billing", "fleet-alerts"])


def test_provider_playbook_takes_only_the_hosts_its_provider_wins(tolerant_rollout):
    rc, output = run("smarthost.postfix.ses", MIXED)
    rolled_out = set().union(*[hosts_in(section) for section in play_sections(output, ROLLOUT_PLAY)])
    assert rolled_out == {"fleet-canary"}, output[-3000:]
    # The note runs once for the play, on its first host.
    notes = [
        line
        for result in results(output, "fleet-canary", "Say which hosts of the group another provider takes")
        for line in result["msg"]
    ]
    assert notes == [
        "fleet-override is in smarthost_ses, but relay_provider 'sendgrid' in its inventory wins: "
        "smarthost.postfix.sendgrid or smarthost.postfix.site configures it, "
        "this playbook leaves it alone."
    ]
    assert results(output, "fleet-both", REFUSE)[0]["_status"] == "fatal"
    assert harness.play_recap(output)["fleet-canary"]["changed"] == 0
    assert rc == 2

    rc, output = run("smarthost.postfix.sendgrid", MIXED, "--limit", "!" + GONE)
    rolled_out = set().union(*[hosts_in(section) for section in play_sections(output, ROLLOUT_PLAY)])
    assert rolled_out == {"fleet-override"}, output[-3000:]
    assert harness.play_recap(output)["fleet-override"]["changed"] == 0
    assert rc == 2  # fleet-both again


def test_a_single_group_inventory_runs_without_warnings(tolerant_rollout):
    for playbook in ("smarthost.postfix.site", "smarthost.postfix.ses"):
        rc, output = run(playbook, SINGLE)
        assert "Could not match supplied host pattern" not in output, output
        assert "[WARNING]" not in output, output
        recap = harness.play_recap(output)
        assert set(recap) == {"fleet-canary"}, recap
        assert rc == 0 and recap["fleet-canary"]["changed"] == 0, output[-3000:]


def test_verify_and_health_default_to_the_managed_hosts(tolerant_rollout):
    # No sudo in the images, and the docker connection is root already.
    rc, output = run("smarthost.postfix.health", SINGLE, "-e", "relay_health_become=false")
    assert rc == 0, output[-3000:]
    assert set(harness.play_recap(output)) == {"fleet-canary"}, output[-3000:]
    rc, output = run(
        "smarthost.postfix.verify",
        SINGLE,
        "-e",
        "relay_verify_sender=root@example.test",
        "-e",
        "relay_verify_recipient=ops@recipient.example.test",
        "-e",
        "relay_verify_timeout=60",
        "-e",
        "relay_verify_become=false",
    )
    assert rc == 0, output[-3000:]
    assert set(harness.play_recap(output)) == {"fleet-canary"}, output[-3000:]
    assert "fleet-canary: sent via %s" % SES_HOST in output, output[-3000:]


def test_the_role_in_an_adopters_own_playbook_with_its_own_groups(tolerant_rollout):
    rc, output = run(ADOPTER_PLAYBOOK, ADOPTER)
    recap = harness.play_recap(output)
    assert rc == 0, output[-3000:]
    assert recap["fleet-billing"]["changed"] > 0 and recap["fleet-alerts"]["changed"] > 0, recap
    # The accounts traded hosts in this inventory.
    EXPECTED["fleet-billing"], EXPECTED["fleet-alerts"] = EXPECTED["fleet-alerts"], EXPECTED["fleet-billing"]
    assert_mail_leaves_as_inventory_says(["fleet-billing", "fleet-alerts"])
    rc, output = run(ADOPTER_PLAYBOOK, ADOPTER)
    assert rc == 0 and all(counts["changed"] == 0 for counts in harness.play_recap(output).values()), output[-3000:]
