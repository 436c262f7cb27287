# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""relay_state absent: what undoes a plan, across the corpus and read back by the real Postfix."""

from __future__ import annotations

import copy
import json
import os

import pytest
import yaml

from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix
from ansible_collections.smarthost.postfix.plugins.module_utils.transaction import apply_configuration
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import RelayPlanError, relay_plan
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.decommission import (
    decommission,
    local_only_parameters,
)
from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils.postfix_cli import postconf

HERE = os.path.dirname(os.path.abspath(__file__))
ROLE = os.path.join(HERE, "..", "..", "..", "..", "..", "roles", "relay")
with open(os.path.join(ROLE, "vars", "presets.yml"), encoding="utf-8") as _handle:
    PRESETS = yaml.safe_load(_handle)["__relay_presets"]
with open(os.path.join(ROLE, "defaults", "main.yml"), encoding="utf-8") as _handle:
    DEFAULTS = yaml.safe_load(_handle)
with open(os.path.join(HERE, "corpus", "cases.json"), encoding="utf-8") as _handle:
    CORPUS = json.load(_handle)["cases"]


def corpus_plans():
    for case in CORPUS:
        presets = PRESETS if case["presets"] == "presets.yml" else case["presets"]
        try:
            yield case["name"], relay_plan(copy.deepcopy(case["settings"]), presets, case["facts"])
        except RelayPlanError:
            continue


PLANS = list(corpus_plans())


def secrets_of(plan):
    found = [entry["password"] for entry in plan["sasl_map"]["entries"] if entry["password"]]
    for account in plan["oauth2"]:
        found += [value for key, value in account["config"].items() if key in ("client_secret", "refresh_token")]
    if plan["submission"]:
        found += [user["password"] for user in plan["submission"]["users"]]
    # Long enough not to turn up in a path by chance (the corpus has passwords like "p").
    return [secret for secret in found if secret and len(secret) >= 8]


def test_the_corpus_has_plans_with_secrets_to_remove():
    assert len(PLANS) > 100
    assert sum(1 for _name, plan in PLANS if plan["oauth2"]) > 3
    assert sum(1 for _name, plan in PLANS if plan["submission"]) > 3


@pytest.mark.parametrize("name, plan", PLANS, ids=[name for name, _plan in PLANS])
def test_every_parameter_service_and_map_of_the_plan_is_undone(name, plan):
    undo = decommission(plan)
    local_only = local_only_parameters(plan["database_type"])
    assert set(plan["main_cf"]) <= set(undo["main_cf"])
    assert {key: value for key, value in undo["main_cf"].items() if value is not None} == local_only
    added = {(s["name"], s["type"]) for s in plan["master_services"]}
    assert {(s["name"], s["type"]) for s in undo["master_services"]} == added
    for before, after in zip(plan["master_services"], undo["master_services"]):
        if before.get("command") is None and before.get("state") == "present":
            # A service the plan only gives options to (qmgr) stays, without them.
            assert after == dict(before, options=dict.fromkeys(before["options"]))
        else:
            assert after == {"name": before["name"], "type": before["type"], "state": "absent"}
    pace_map = plan.get("pace_map")
    assert undo["other_files"] == ([pace_map["clones_path"]] if pace_map else [])
    for path in [plan["sasl_map"]["path"]] + [table["path"] for table in plan["tables"]]:
        assert path in undo["secret_files"]
        assert path + ".db" in undo["secret_files"] and path + ".lmdb" in undo["secret_files"]
        assert os.path.basename(path) + ".*~" in undo["backup_patterns"]
        assert os.path.dirname(path) in undo["backup_directories"]
    if plan["submission"]:
        assert undo["secret_directories"] == [plan["submission"]["directory"]]
    # What undoes the plan carries none of its secrets.
    text = json.dumps(undo)
    assert not [secret for secret in secrets_of(plan) if secret in text]


# What postfix_info tells of a Debian 12 host, as much as these plans read.
DEBIAN_FACTS = {
    "os_family": "Debian",
    "postfix_version": "3.7.11",
    "default_database_type": "hash",
    "ca_file": "/etc/ssl/certs/ca-certificates.crt",
    "domain": "example.com",
}


def full_plan(config_dir):
    """An Office 365 OAuth 2.0 relay with a password route, pacing and authenticated submission."""
    settings = dict(
        DEFAULTS,
        relay_provider="office365",
        relay_auth="oauth2",
        relay_username="relay@contoso.com",
        relay_oauth2_tenant="contoso.onmicrosoft.com",
        relay_oauth2_client_id="00000000-0000-0000-0000-000000000001",
        relay_oauth2_client_secret="s3cret-Client",
        relay_mode="relay_server",
        relay_mynetworks=["10.0.0.0/8"],
        relay_domain_routes=[
            {"domain": "partner.example", "provider": "sendgrid", "password": "SG.s3cret-Route"},
        ],
        relay_submission_users=[{"name": "app", "password": "s3cret-Submission", "senders": ["app@example.com"]}],
        relay_tls_server_cert="/etc/ssl/certs/relay.pem",
        relay_tls_server_key="/etc/ssl/private/relay.key",
        relay_config_dir=str(config_dir),
    )
    return relay_plan(settings, PRESETS, DEBIAN_FACTS)


def test_postfix_takes_the_local_only_configuration_and_keeps_nothing_of_the_relay(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    stock_services = postconf(postfix_dir, "-M")
    plan = full_plan(postfix_dir)
    relaying = apply_configuration(
        postfix,
        parameters=plan["main_cf"],
        services=plan["master_services"],
        sasl_maps=[plan["sasl_map"]],
        tables=plan["tables"],
    )
    assert relaying["checked"] and postconf(postfix_dir, "-M") != stock_services
    assert "smtp_sasl_password_maps" in postconf(postfix_dir, "-n")

    undo = decommission(plan)
    undone = apply_configuration(postfix, parameters=undo["main_cf"], services=undo["master_services"])
    assert undone["changed"] and undone["checked"]
    # Postfix's own view: loopback only, nothing relayed, no map of the relay read, stock services.
    settings = postconf(postfix_dir, "-n")
    assert not [path for path in undo["secret_files"] if path in settings]
    for name in ("relayhost", "smtp_sasl_password_maps", "transport_maps", "smtp_tls_security_level"):
        assert postconf(postfix_dir, "-n", name).strip() == "", name
    assert postconf(postfix_dir, "-h", "inet_interfaces").strip() == "loopback-only"
    assert postconf(postfix_dir, "-h", "default_transport").strip().startswith("error:")
    assert postconf(postfix_dir, "-M") == stock_services
    # Every map the relay wrote, compiled or not, is on the list of files the role removes.
    written = {os.path.join(str(postfix_dir), name) for name in os.listdir(postfix_dir)}
    assert written - set(undo["secret_files"]) == {os.path.join(str(postfix_dir), n) for n in ("main.cf", "master.cf")}
    again = apply_configuration(postfix, parameters=undo["main_cf"], services=undo["master_services"])
    assert not again["changed"]


def test_undoing_the_pace_map_gives_the_queue_manager_back_its_own_resolver(postfix_dir):
    """Pacing in turn changes Postfix's own qmgr service; the undo takes that change back, not the service."""
    postfix = Postfix(str(postfix_dir))
    stock_services = postconf(postfix_dir, "-M")
    settings = dict(
        DEFAULTS,
        relay_provider="ses",
        relay_ses_region="us-east-1",
        relay_username="AKIA",
        relay_password="p-Secret",
        relay_max_send_rate=14,
        relay_config_dir=str(postfix_dir),
    )
    plan = relay_plan(settings, PRESETS, DEBIAN_FACTS)
    applied = apply_configuration(postfix, parameters=plan["main_cf"], services=plan["master_services"])
    assert applied["checked"]
    assert postconf(postfix_dir, "-P", "qmgr/unix/rewrite_service_name").strip().endswith("= pace_rewrite")
    undo = decommission(plan)
    assert apply_configuration(postfix, parameters=undo["main_cf"], services=undo["master_services"])["checked"]
    assert postconf(postfix_dir, "-M") == stock_services
