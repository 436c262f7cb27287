# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""smarthost.postfix.site and the per-provider playbooks decide each host's provider from the inventory.

The hosts here are unreachable on purpose (SSH to a closed port): the first play never connects, so
its decisions are visible without a managed host, and the rollout stops at its canary without
touching anything. molecule/fleet converges real hosts with the same rules. Runs under whichever
ansible-core the interpreter has, so `make unit` covers every core meta/runtime.yml claims.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
ROLLOUT_PLAY = "Roll out the relays, canary first"
REFUSE = "Refuse a host whose inventory leaves its provider open or names an unknown one"
UNREACHABLE = {
    "ansible_connection": "ssh",
    "ansible_host": "127.0.0.1",
    "ansible_port": 1,
    "ansible_python_interpreter": "/usr/bin/python3",
}


def argument_spec_providers():
    with open(os.path.join(REPO, "roles", "relay", "meta", "argument_specs.yml")) as handle:
        specs = yaml.safe_load(handle)
    return specs["argument_specs"]["main"]["options"]["relay_provider"]["choices"]


def site_providers():
    with open(os.path.join(REPO, "playbooks", "site.yml")) as handle:
        plays = yaml.safe_load(handle)
    return plays[0]["vars"]["__relay_site_providers"]


def test_site_knows_every_provider_the_role_accepts():
    assert site_providers() == argument_spec_providers()


@pytest.mark.parametrize("provider", argument_spec_providers())
def test_each_provider_playbook_is_the_site_playbook_for_its_provider(provider):
    with open(os.path.join(REPO, "playbooks", provider + ".yml")) as handle:
        plays = yaml.safe_load(handle)
    assert plays == [
        {
            "name": plays[0]["name"],
            "ansible.builtin.import_playbook": "site.yml",
            "vars": {"relay_rollout_provider": provider},
        }
    ]


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    """Every case of the rules, with hosts that cannot be reached."""
    hosts = {
        "all": {"vars": dict(UNREACHABLE, relay_password="not-a-secret-unit-test", relay_ses_region="us-east-1")},
        "smarthost_ses": {
            "hosts": {
                "ses-1": None,
                "override": {"relay_provider": "sendgrid"},
                "both": None,
                "both-set": {"relay_provider": "ses"},
            }
        },
        "smarthost_sendgrid": {"hosts": {"both": None, "both-set": None, "sendgrid-1": None}},
        "smarthost_custom": {
            "vars": {"relay_host": "relay.example.test"},
            "children": {"smarthost_custom_billing": {"hosts": {"billing-1": None}}},
        },
        "smarthost_canary": {"hosts": {"no-provider": None, "typo": {"relay_provider": "sendgird"}}},
        # Not managed: a web server of the same inventory, and a host whose name only looks like a group.
        "web": {"hosts": {"web-1": None, "smarthost_lookalike": {"relay_provider": "ses"}}},
    }
    directory = tmp_path_factory.mktemp("inventory")
    (directory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    return str(directory / "hosts.yml")


def run(playbook, inventory, *args):
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_HOST_KEY_CHECKING="0",
        ANSIBLE_SSH_ARGS="-o ConnectTimeout=5",
    )
    env.pop("ANSIBLE_CONFIG", None)
    proc = subprocess.run(
        [PLAYBOOK, "-v", "-i", inventory, playbook] + list(args),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert "not-a-secret-unit-test" not in proc.stdout
    return proc.returncode, proc.stdout + proc.stderr


def task_results(output, task):
    """host -> (status, result) for one task of the output: one JSON line at -v, indented for debug."""
    found = {}
    start = re.compile(r"^(ok|changed|fatal|skipping): \[([^\]]+)\](?:: [A-Z!]+)? => (\{.*)$")
    for section in re.split(r"^TASK \[", output, flags=re.M)[1:]:
        if section.split("]", 1)[0].split(" : ")[-1] != task:
            continue
        lines = section.splitlines()
        for index, line in enumerate(lines):
            match = start.match(line)
            if match:
                status, host, text = match.groups()
                if text == "{":
                    text = "\n".join(["{"] + lines[index + 1 : lines.index("}", index) + 1])
                found[host.split(" -> ")[0]] = (status, json.loads(text))
    return found


def rollout_hosts(output):
    parts = re.split(r"^PLAY \[(.*)\] \**$", output, flags=re.M)
    sections = [parts[i + 1] for i in range(1, len(parts) - 1, 2) if parts[i] == ROLLOUT_PLAY]
    return [
        sorted({name.split(" -> ")[0] for name in re.findall(r"^\w+: \[([^\]]+)\]", section, re.M)})
        for section in sections
    ]


@pytest.fixture(scope="module")
def site(inventory):
    return run("smarthost.postfix.site", inventory)


def decisions(output):
    results = task_results(output, "Decide every host's provider, or why it has none, and which hosts roll out")
    assert len(results) == 1, results  # once for the play, not once per host
    return next(iter(results.values()))[1]["ansible_facts"]["__relay_site_decisions"]


def test_the_inventory_decides_the_provider_and_the_group_is_the_default(site):
    _rc, output = site
    decided = {host: decision["provider"] for host, decision in decisions(output).items() if not decision["refusal"]}
    assert decided == {
        "ses-1": "ses",
        "override": "sendgrid",
        "both-set": "ses",
        "sendgrid-1": "sendgrid",
        "billing-1": "custom",
    }, output


def test_hosts_outside_the_smarthost_groups_are_not_touched(site):
    _rc, output = site
    assert "web-1" not in output and "smarthost_lookalike" not in output


@pytest.mark.parametrize(
    "host, words",
    [
        ("both", ["both is in smarthost_sendgrid and smarthost_ses", "left unchanged"]),
        ("no-provider", ["no-provider is in smarthost_canary", "left unchanged"]),
        ("typo", ["relay_provider is 'sendgird'", "left unchanged"]),
    ],
)
def test_ambiguous_or_unknown_providers_are_refused_by_name(site, host, words):
    rc, output = site
    status, result = task_results(output, REFUSE)[host]
    assert status == "fatal" and all(word in result["msg"] for word in words), result
    assert all(host not in batch for batch in rollout_hosts(output))
    assert rc != 0


def test_the_rollout_starts_with_one_canary_in_inventory_order_and_stops_when_it_fails(site):
    rc, output = site
    # The canary is unreachable: its batch failed entirely, so no second batch ever started.
    assert rollout_hosts(output) == [["ses-1"]], output
    assert re.search(r"^fatal: \[ses-1\]: UNREACHABLE!", output, re.M)
    assert rc == 4


def test_a_provider_playbook_takes_the_hosts_its_provider_wins(inventory):
    rc, output = run("smarthost.postfix.sendgrid", inventory)
    noted = task_results(output, "Say which hosts of the group another provider takes")
    notes = [line for _status, result in noted.values() for line in result["msg"]]
    assert notes == [
        "both-set is in smarthost_sendgrid, but relay_provider 'ses' in its inventory wins: "
        "smarthost.postfix.ses or smarthost.postfix.site configures it, this playbook leaves it alone."
    ]
    assert task_results(output, REFUSE)["both"][0] == "fatal"
    # Only sendgrid hosts are in scope: the refusals of the others are not its business.
    assert task_results(output, REFUSE)["typo"][0] == "skipping"
    # The host_vars override of smarthost_ses is the canary: it comes first in inventory order.
    assert rollout_hosts(output) == [["override"]], output
    assert rc == 4


def test_settings_are_checked_before_any_host(inventory):
    rc, output = run("smarthost.postfix.site", inventory, "-e", "relay_rollout_max_fail_percentage=lots")
    assert "relay_rollout_max_fail_percentage must be a number from 0 to 100" in output
    assert rollout_hosts(output) == [] and "Refuse a host" not in output
    assert rc == 2
