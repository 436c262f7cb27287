# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Planning main.cf and master.cf changes, against the real postconf on throwaway config dirs."""

from __future__ import annotations

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils.config_plan import (
    configure,
    find_unknown_parameters,
    format_parameter_value,
    normalize_service,
    plan_parameters,
    plan_services,
)
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import MasterEntry, Postfix
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import ValidationError
from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils.postfix_cli import postconf


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, "yes"),
        (False, "no"),
        (10240000, "10240000"),
        (["a", "b", "c"], "a, b, c"),
        ([], ""),
        ("  permit_mynetworks,\n   reject  ", "permit_mynetworks, reject"),
        (None, None),
    ],
)
def test_format_parameter_value(value, expected):
    assert format_parameter_value(value) == expected


def test_plan_parameters():
    current = {"relayhost": "[a]:587", "inet_interfaces": "all", "x_y": "1"}
    desired = {"relayhost": "[a]:587", "inet_interfaces": "loopback-only", "mydestination": "", "x_y": None}
    assert plan_parameters(current, desired, "present") == (
        {"inet_interfaces": "loopback-only", "mydestination": ""},
        ["x_y"],
    )
    assert plan_parameters(current, desired, "absent") == ({}, ["relayhost", "inet_interfaces", "x_y"])


def test_plan_services_uses_cheapest_edits():
    current = {
        "relay/unix": MasterEntry(
            "relay", "unix", chroot="y", command="smtp", options={"syslog_name": "x", "smtp_fallback_relay": ""}
        ),
        "tlsproxy/unix": MasterEntry("tlsproxy", "unix", chroot="y", maxproc="0", command="tlsproxy"),
    }
    specs = [
        normalize_service(spec)
        for spec in [
            {"name": "relay", "chroot": "n", "options": {"smtp_fallback_relay": None, "smtp_helo_timeout": 5}},
            {"name": "tlsproxy", "chroot": "y", "maxproc": 0, "command": "tlsproxy"},
            {"name": "ses_relay", "command": "smtp", "options": {"relayhost": "[s]:587"}},
        ]
    ]
    plan = plan_services(current, specs)
    assert plan.changed_services == ["relay/unix", "ses_relay/unix"]
    assert plan.fields == {"relay/unix/chroot": "n"}
    assert plan.remove_options == ["relay/unix/smtp_fallback_relay"]
    assert plan.set_options == {"relay/unix/smtp_helo_timeout": "5"}
    assert [entry.line() for entry in plan.replace] == ["ses_relay unix - - - - - smtp -o relayhost=[s]:587"]


def test_plan_services_rewrites_entry_when_command_changes():
    current = {"relay/unix": MasterEntry("relay", "unix", command="smtp", options={"syslog_name": "x"})}
    plan = plan_services(current, [normalize_service({"name": "relay", "command": "lmtp"})])
    assert [entry.line() for entry in plan.replace] == ["relay unix - - - - - lmtp -o syslog_name=x"]
    assert not plan.fields and not plan.set_options


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "bad name"}, "invalid master.cf service name"),
        ({"name": "x", "type": "tcp"}, "type must be one of"),
        ({"name": "x", "maxproc": "many"}, "invalid maxproc"),
        ({"name": "x", "wakeup": "60!"}, "invalid wakeup"),
        ({"name": "x", "command": "smtp -o a=b"}, "put -o overrides into options"),
        ({"name": "x", "options": {"smtp_helo_name": "a b"}}, "must not contain whitespace"),
        ({"name": "x", "options": {"bad-name": "a"}}, "invalid option name"),
    ],
)
def test_normalize_service_rejects(spec, message):
    with pytest.raises(ValidationError, match=message):
        normalize_service(spec)


def test_unknown_parameters_knows_what_postconf_knows(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    current = postfix.explicit_settings()
    assert find_unknown_parameters(postfix, ["relayhost", "relay_destination_rate_delay"], current) == []
    assert find_unknown_parameters(postfix, ["relayhots"], current) == ["relayhots"]
    # a user-defined name is known once a value refers to it
    assert find_unknown_parameters(postfix, ["my_limit"], dict(current, relay_domains="${my_limit}")) == []
    # names derived from a service defined in the same call
    ses = MasterEntry("ses_relay", "unix", command="smtp")
    assert find_unknown_parameters(postfix, ["ses_relay_destination_rate_delay"], current, (), [ses]) == []
    assert find_unknown_parameters(postfix, ["ses_relay_destination_rate_delay"], current) == [
        "ses_relay_destination_rate_delay"
    ]
    # restriction classes and $names used by -o overrides
    assert find_unknown_parameters(postfix, ["my_class"], dict(current, smtpd_restriction_classes="my_class")) == []
    assert find_unknown_parameters(postfix, ["mua_rules"], current, ["$mua_rules"]) == []


def test_configure_writes_main_cf_in_one_postconf_e(postfix_dir, tool_log, settle):
    postfix = Postfix(str(postfix_dir))
    result = configure(
        postfix,
        {
            "relayhost": "[a.example]:587",
            "smtp_tls_security_level": "secure",
            "smtp_sasl_auth_enable": True,
            "sample_directory": None,
        },
    )
    assert result["changed_parameters"] == ["relayhost", "smtp_tls_security_level", "smtp_sasl_auth_enable"]
    edits = [call for call in tool_log.calls("postconf") if "-e" in call]
    assert len(edits) == 1
    settle()
    assert postconf(postfix_dir, "-h", "relayhost", "smtp_sasl_auth_enable").split() == ["[a.example]:587", "yes"]


def test_configure_creates_missing_main_cf_except_in_check_mode(postfix_dir, settle):
    (postfix_dir / "main.cf").unlink()
    postfix = Postfix(str(postfix_dir))
    checked = configure(postfix, {"relayhost": "[a]:587"}, services=[{"name": "relay", "chroot": "n"}], check_mode=True)
    assert checked["changed_parameters"] == ["relayhost"]
    assert checked["changed_services"] == ["relay/unix"]
    assert not (postfix_dir / "main.cf").exists()
    applied = configure(postfix, {"relayhost": "[a]:587"}, services=[{"name": "relay", "chroot": "n"}])
    assert applied["changed_parameters"] == checked["changed_parameters"]
    settle()
    assert postconf(postfix_dir, "-n").splitlines() == ["config_directory = %s" % postfix_dir, "relayhost = [a]:587"]


def test_configure_rejects_a_missing_config_dir(tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        configure(Postfix(str(tmp_path / "nope")), {"relayhost": "x"})
