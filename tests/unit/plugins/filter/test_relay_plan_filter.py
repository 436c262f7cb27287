# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The smarthost.postfix.relay_plan filter: the plan as Ansible sees it."""

from __future__ import annotations

import os
import re

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.smarthost.postfix.plugins.filter.relay_plan import FilterModule

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
with open(os.path.join(ROOT, "roles", "relay", "vars", "presets.yml")) as _handle:
    PRESETS = yaml.safe_load(_handle)["__relay_presets"]
with open(os.path.join(ROOT, "roles", "relay", "defaults", "main.yml")) as _handle:
    DEFAULTS = yaml.safe_load(_handle)
with open(os.path.join(ROOT, "roles", "relay", "vars", "main.yml")) as _handle:
    PASSED = re.findall(r"'(relay_[a-z0-9_]+)': ", yaml.safe_load(_handle)["__relay_settings"])
FACTS = {
    "os_family": "Debian",
    "postfix_version": "3.7.11",
    "default_database_type": "hash",
    "ca_file": "/etc/ssl/certs/ca-certificates.crt",
    "domain": "example.com",
}

relay_plan = FilterModule().filters()["relay_plan"]


def settings(**overrides):
    """What the role passes: every variable it lists, at its default unless given."""
    values = {name: DEFAULTS.get(name) for name in PASSED}
    values.update(overrides)
    return values


def test_filter_returns_the_plan():
    result = relay_plan(settings(relay_provider="postmark", relay_password="server-token-1"), PRESETS, FACTS)
    assert result["relayhost"] == "[smtp.postmarkapp.com]:587"
    assert result["sasl_map"]["entries"] == [
        {"key": "[smtp.postmarkapp.com]:587", "username": "server-token-1", "password": "server-token-1"}
    ]


def test_filter_raises_ansible_filter_error_naming_the_variable():
    with pytest.raises(AnsibleFilterError) as raised:
        relay_plan(settings(relay_provider="sendgrid", relay_password="key", relay_port=0), PRESETS, FACTS)
    assert "relay_port: 0 is out of range" in str(raised.value)


def test_filter_returns_the_error_on_request():
    # What the role does: a task then fails with exactly this message, one line naming the variable.
    result = relay_plan(
        settings(relay_provider="sendgrid", relay_password="key", relay_port=0), PRESETS, FACTS, errors="return"
    )
    assert result == {"error": "relay_port: 0 is out of range; use 1-65535", "variable": "relay_port"}


def test_filter_refuses_an_unknown_errors_mode():
    with pytest.raises(AnsibleFilterError, match="errors must be raise or return"):
        relay_plan(settings(relay_provider="sendgrid", relay_password="key"), PRESETS, FACTS, errors="ignore")


def test_filter_without_facts_names_what_to_set():
    with pytest.raises(AnsibleFilterError) as raised:
        relay_plan(settings(relay_provider="sendgrid", relay_password="key"), PRESETS)
    # Without facts there is no CA bundle to verify against: the message says which variable to set.
    assert "relay_tls_ca_file" in str(raised.value)


def test_a_variable_the_role_does_not_pass_is_an_error_not_a_default():
    partial = settings(relay_provider="sendgrid", relay_password="key")
    del partial["relay_mode"]
    with pytest.raises(AnsibleFilterError, match="relay_mode: is not passed to the plan"):
        relay_plan(partial, PRESETS, FACTS)


def test_vaulted_password_is_used_as_its_text():
    # The same shape as Ansible's vault value types: not a str, str() gives the plaintext.
    class EncryptedString:
        def __str__(self):
            return "decrypted-secret"

    result = relay_plan(settings(relay_provider="sendgrid", relay_password=EncryptedString()), PRESETS, FACTS)
    assert result["sasl_map"]["entries"][0]["password"] == "decrypted-secret"


def test_the_decommission_filter_takes_a_plan_and_refuses_an_error():
    from ansible_collections.smarthost.postfix.plugins.filter.relay_decommission import FilterModule as Decommission

    undo = Decommission().filters()["relay_decommission"]
    plan = FilterModule().filters()["relay_plan"](
        dict({name: DEFAULTS.get(name) for name in PASSED}, relay_provider="sendgrid", relay_password="SG.key"),
        PRESETS,
        FACTS,
    )
    assert undo(plan)["main_cf"]["relayhost"] is None
    assert "/etc/postfix/sasl_passwd" in undo(plan)["secret_files"]
    for bad in ({"error": "relay_port: out of range", "variable": "relay_port"}, None, {}):
        with pytest.raises(AnsibleFilterError, match="relay_plan result"):
            undo(bad)
