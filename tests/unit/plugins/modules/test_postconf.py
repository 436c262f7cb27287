# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""smarthost.postfix.postconf run in-process against a throwaway config dir and the real postconf."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

SES = "[email-smtp.eu-west-1.amazonaws.com]:587"


def postconf(config_dir, *args):
    return subprocess.run(
        ["postconf", "-c", str(config_dir)] + list(args),
        check=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ).stdout


def fingerprint(config_dir):
    return {name: hashlib.sha256((config_dir / name).read_bytes()).hexdigest() for name in ("main.cf", "master.cf")}


def service_line(config_dir, key):
    """The entry as postconf -M prints it, one line with its -o overrides."""
    return " ".join(postconf(config_dir, "-M", key).split())


@pytest.fixture
def postconf_module(run_module, postfix_dir):
    def run(check_mode=False, diff=False, **args):
        return run_module("postconf", dict(args, config_dir=str(postfix_dir)), check_mode=check_mode, diff=diff)

    return run


RELAY_SETUP = {
    "parameters": {
        "relayhost": SES,
        "smtp_sasl_auth_enable": True,
        "smtp_sasl_security_options": ["noanonymous"],
        "smtp_tls_security_level": "secure",
        "message_size_limit": 20480000,
        "mydestination": [],
        "smtpd_relay_restrictions": ["permit_mynetworks", "reject_unauth_destination"],
    },
    "services": [
        {"name": "ses_relay", "chroot": "n", "command": "smtp", "options": {"relayhost": SES}},
        {"name": "tlsproxy", "chroot": "y", "maxproc": "0", "command": "tlsproxy"},
    ],
}


def test_apply_then_idempotent(postconf_module, postfix_dir):
    first = postconf_module(**RELAY_SETUP)
    assert first["changed"]
    assert first["changed_parameters"] == list(RELAY_SETUP["parameters"])
    assert first["changed_services"] == ["ses_relay/unix", "tlsproxy/unix"]
    assert postconf(postfix_dir, "-h", "smtp_sasl_auth_enable", "message_size_limit").split() == ["yes", "20480000"]
    assert (
        postconf(postfix_dir, "-h", "smtpd_relay_restrictions").strip()
        == "permit_mynetworks, reject_unauth_destination"
    )
    assert service_line(postfix_dir, "ses_relay/unix") == "ses_relay unix - - n - - smtp -o relayhost=%s" % SES
    assert service_line(postfix_dir, "tlsproxy/unix") == "tlsproxy unix - - y - 0 tlsproxy"
    before = fingerprint(postfix_dir)
    second = postconf_module(**RELAY_SETUP)
    assert not second["changed"]
    assert second["changed_parameters"] == [] and second["changed_services"] == []
    assert fingerprint(postfix_dir) == before


def test_check_mode_writes_nothing_and_predicts_the_real_run(postconf_module, postfix_dir):
    before = fingerprint(postfix_dir)
    checked = postconf_module(check_mode=True, **RELAY_SETUP)
    assert fingerprint(postfix_dir) == before
    applied = postconf_module(**RELAY_SETUP)
    assert fingerprint(postfix_dir) != before
    for key in ("changed", "changed_parameters", "changed_services"):
        assert checked[key] == applied[key]


def test_diff_shows_exactly_the_changed_lines(postconf_module, postfix_dir):
    postconf(postfix_dir, "-e", "relayhost=[old.example]:25")
    postconf(postfix_dir, "-P", "relay/unix/smtp_fallback_relay=")
    os.utime(postfix_dir / "main.cf", (0, 0))
    result = postconf_module(
        check_mode=True,
        diff=True,
        parameters={"relayhost": SES, "inet_interfaces": "loopback-only", "mynetworks": None},
        services=[{"name": "relay", "options": {"smtp_fallback_relay": None}}],
    )
    main_diff, master_diff = result["diff"]
    assert main_diff["before_header"] == str(postfix_dir / "main.cf")
    assert main_diff["before"] == "relayhost = [old.example]:25\nmynetworks = 127.0.0.0/8\n"
    assert main_diff["after"] == "relayhost = %s\ninet_interfaces = loopback-only\n" % SES
    assert master_diff["before_header"] == str(postfix_dir / "master.cf")
    assert master_diff["before"].splitlines() == [
        "relay      unix  -       -       y       -       -       smtp",
        "  -o syslog_name=postfix/$service_name",
        "  -o smtp_fallback_relay=",
    ]  # file order, as master.cf holds them
    assert master_diff["after"].splitlines() == master_diff["before"].splitlines()[:2]


def test_no_diff_key_without_diff_mode_and_empty_diff_when_unchanged(postconf_module):
    assert "diff" not in postconf_module(parameters={"relayhost": SES})
    assert postconf_module(diff=True, parameters={"relayhost": SES})["diff"] == []


def test_one_postconf_e_and_one_x_per_call(postconf_module, tool_log):
    postconf_module(
        parameters={
            "relayhost": SES,
            "smtp_tls_security_level": "secure",
            "mynetworks": None,
            "inet_interfaces": "loopback-only",
            "html_directory": None,
        },
        services=[{"name": "ses_relay", "command": "smtp"}],
    )
    calls = tool_log.calls("postconf")
    edits = [call for call in calls if "-e" in call]
    removals = [call for call in calls if "-X" in call]
    assert len(edits) == 1 and len(removals) == 1
    edited = sorted(arg.split("=")[0] for arg in edits[0][3:])
    assert edited == ["inet_interfaces", "relayhost", "smtp_tls_security_level"]
    assert removals[0][3:] == ["mynetworks"]
    tool_log.clear()
    postconf_module(
        parameters={
            "relayhost": SES,
            "smtp_tls_security_level": "secure",
            "mynetworks": None,
            "inet_interfaces": "loopback-only",
        }
    )
    assert not [call for call in tool_log.calls("postconf") if "-e" in call or "-X" in call]


def test_state_absent_removes_and_is_idempotent(postconf_module, postfix_dir):
    postconf_module(parameters={"relayhost": SES, "smtp_tls_security_level": "secure"})
    removed = postconf_module(
        state="absent", parameters={"relayhost": None, "smtp_tls_security_level": "ignored", "never_set_anywhere": None}
    )
    assert removed["changed_parameters"] == ["relayhost", "smtp_tls_security_level"]
    explicit = postconf(postfix_dir, "-n")
    assert "relayhost" not in explicit and "smtp_tls_security_level" not in explicit
    assert not postconf_module(state="absent", parameters={"relayhost": None})["changed"]


def test_null_value_with_state_present_removes(postconf_module, postfix_dir):
    result = postconf_module(parameters={"mynetworks": None})
    assert result["changed_parameters"] == ["mynetworks"]
    assert "mynetworks" not in postconf(postfix_dir, "-n")


def test_dollar_references_reach_postconf_unexpanded(postconf_module, postfix_dir, monkeypatch):
    monkeypatch.setenv("myhostname", "EXPANDED-BY-MISTAKE")
    monkeypatch.setenv("HOME", "/root-by-mistake")
    postconf_module(parameters={"smtpd_banner": "$myhostname ESMTP", "alias_maps": "~/aliases"})
    assert postconf(postfix_dir, "-h", "smtpd_banner").strip() == "$myhostname ESMTP"
    assert postconf(postfix_dir, "-h", "alias_maps").strip() == "~/aliases"


def test_backup_copies_only_changed_files(postconf_module, postfix_dir):
    original_main = (postfix_dir / "main.cf").read_text()
    result = postconf_module(backup=True, parameters={"relayhost": SES})
    assert list(result["backup_files"]) == ["main_cf"]
    assert open(result["backup_files"]["main_cf"]).read() == original_main
    original_master = (postfix_dir / "master.cf").read_text()
    result = postconf_module(backup=True, services=[{"name": "relay", "chroot": "n"}])
    assert list(result["backup_files"]) == ["master_cf"]
    assert open(result["backup_files"]["master_cf"]).read() == original_master
    assert postconf_module(backup=True, parameters={"relayhost": SES})["backup_files"] == {}


# --------------------------------------------------------------------------- master.cf


def test_service_overrides_add_change_remove(postconf_module, postfix_dir):
    relay = {"name": "relay", "options": {"smtp_helo_timeout": 5}}
    assert postconf_module(services=[relay])["changed_services"] == ["relay/unix"]
    assert service_line(postfix_dir, "relay/unix") == (
        "relay unix - - y - - smtp -o syslog_name=postfix/$service_name -o smtp_helo_timeout=5"
    )
    relay["options"]["smtp_helo_timeout"] = "10s"
    assert postconf_module(services=[relay])["changed"]
    assert postconf(postfix_dir, "-Ph", "relay/unix/smtp_helo_timeout").strip() == "10s"
    assert not postconf_module(services=[relay])["changed"]
    relay["options"]["smtp_helo_timeout"] = None
    assert postconf_module(services=[relay])["changed"]
    assert postconf(postfix_dir, "-P", "relay/unix").splitlines() == ["relay/unix/syslog_name = postfix/$service_name"]
    assert not postconf_module(services=[relay])["changed"]


def test_remove_empty_fallback_relay_override(postconf_module, postfix_dir):
    postconf(postfix_dir, "-P", "relay/unix/smtp_fallback_relay=")
    assert "smtp_fallback_relay=" in service_line(postfix_dir, "relay/unix")
    result = postconf_module(services=[{"name": "relay", "options": {"smtp_fallback_relay": None}}])
    assert result["changed_services"] == ["relay/unix"]
    assert service_line(postfix_dir, "relay/unix") == "relay unix - - y - - smtp -o syslog_name=postfix/$service_name"


def test_exclusive_options(postconf_module, postfix_dir):
    spec = {"name": "relay", "exclusive_options": True, "options": {"smtp_connect_timeout": "5s"}}
    assert postconf_module(services=[spec])["changed"]
    assert postconf(postfix_dir, "-P", "relay/unix").splitlines() == ["relay/unix/smtp_connect_timeout = 5s"]
    assert not postconf_module(services=[spec])["changed"]


def test_change_columns_and_command(postconf_module, postfix_dir):
    postconf_module(services=[{"name": "relay", "chroot": "n", "maxproc": "20"}])
    assert service_line(postfix_dir, "relay/unix") == "relay unix - - n - 20 smtp -o syslog_name=postfix/$service_name"
    postconf_module(services=[{"name": "relay", "command": "lmtp -v"}])
    assert service_line(postfix_dir, "relay/unix") == (
        "relay unix - - n - 20 lmtp -o syslog_name=postfix/$service_name -v"
    )
    assert not postconf_module(services=[{"name": "relay", "command": "lmtp  -v", "chroot": "n"}])["changed"]


def test_create_and_remove_entries(postconf_module, postfix_dir):
    spec = {"name": "ses_relay", "command": "smtp", "chroot": "n", "options": {"relayhost": SES}}
    assert postconf_module(services=[spec])["changed_services"] == ["ses_relay/unix"]
    assert not postconf_module(services=[spec])["changed"]
    gone = postconf_module(
        services=[
            {"name": "ses_relay", "state": "absent"},
            {"name": "uucp", "state": "absent"},
            {"name": "never_there", "state": "absent"},
        ]
    )
    assert gone["changed_services"] == ["ses_relay/unix", "uucp/unix"]
    assert postconf(postfix_dir, "-M", "ses_relay/unix", "uucp/unix") == ""
    assert not postconf_module(services=[{"name": "ses_relay", "state": "absent"}])["changed"]


def test_inet_service_with_host(postconf_module, postfix_dir):
    spec = {
        "name": "127.0.0.1:submission",
        "type": "inet",
        "private": "n",
        "chroot": "y",
        "command": "smtpd",
        "options": {"smtpd_tls_security_level": "encrypt", "syslog_name": "postfix/submission"},
    }
    assert postconf_module(services=[spec])["changed"]
    assert service_line(postfix_dir, "127.0.0.1:submission/inet") == (
        "127.0.0.1:submission inet n - y - - smtpd -o smtpd_tls_security_level=encrypt "
        "-o syslog_name=postfix/submission"
    )
    assert not postconf_module(services=[spec])["changed"]


def test_missing_service_without_command_fails(postconf_module, postfix_dir):
    before = fingerprint(postfix_dir)
    result = postconf_module(parameters={"relayhost": SES}, services=[{"name": "nosuch", "chroot": "n"}])
    assert result["failed"]
    assert "nosuch/unix is not in master.cf" in result["msg"]
    assert fingerprint(postfix_dir) == before


def test_invalid_override_value_fails_before_writing(postconf_module, postfix_dir):
    before = fingerprint(postfix_dir)
    result = postconf_module(
        parameters={"relayhost": SES}, services=[{"name": "relay", "options": {"smtp_helo_name": "two words"}}]
    )
    assert result["failed"] and "must not contain whitespace" in result["msg"]
    assert fingerprint(postfix_dir) == before


# --------------------------------------------------------------------------- known names


def test_unknown_names_fail_naming_them(postconf_module, postfix_dir):
    before = fingerprint(postfix_dir)
    result = postconf_module(parameters={"relayhost": SES, "relay_host": "x", "smtp_tls_securitylevel": "secure"})
    assert result["failed"]
    assert "relay_host, smtp_tls_securitylevel" in result["msg"]
    assert "relayhost" not in result["msg"].replace("relay_host", "")
    assert fingerprint(postfix_dir) == before


def test_allow_unknown_writes_and_stays_idempotent(postconf_module, postfix_dir):
    result = postconf_module(allow_unknown=True, parameters={"my_note": "kept for humans"})
    assert result["changed_parameters"] == ["my_note"]
    assert "my_note = kept for humans" in (postfix_dir / "main.cf").read_text()
    # postconf -n hides unused user-defined names; a second run must still see it
    assert not postconf_module(allow_unknown=True, parameters={"my_note": "kept for humans"})["changed"]
    removed = postconf_module(state="absent", parameters={"my_note": None})
    assert removed["changed_parameters"] == ["my_note"]
    assert "my_note" not in (postfix_dir / "main.cf").read_text()


def test_per_service_names_of_services_defined_in_the_same_call(postconf_module, postfix_dir):
    result = postconf_module(
        parameters={"ses_relay_destination_rate_delay": "72ms", "ses_relay_destination_concurrency_limit": 1},
        services=[{"name": "ses_relay", "command": "smtp"}],
    )
    assert not result.get("failed"), result.get("msg")
    assert postconf(postfix_dir, "-h", "ses_relay_destination_rate_delay").strip() == "72ms"
    # and of existing services
    assert not postconf_module(parameters={"relay_destination_rate_delay": "1s"}).get("failed")
    # a service that does not exist derives nothing
    assert postconf_module(parameters={"nosuch_destination_rate_delay": "1s"})["failed"]


def test_dollar_name_users_are_known(postconf_module, postfix_dir):
    same_call = postconf_module(parameters={"relay_targets": "example.org", "relay_domains": "$relay_targets"})
    assert not same_call.get("failed"), same_call.get("msg")
    # now defined and referenced in main.cf
    assert not postconf_module(parameters={"relay_targets": "example.net"}).get("failed")
    braced = postconf_module(
        parameters={"mua_rules": "permit_sasl_authenticated, reject"},
        services=[{"name": "relay", "options": {"smtpd_client_restrictions": "${mua_rules}"}}],
    )
    assert not braced.get("failed"), braced.get("msg")
    classes = postconf_module(parameters={"smtpd_restriction_classes": "strict", "strict": "reject"})
    assert not classes.get("failed"), classes.get("msg")


def test_missing_main_cf_is_created(postconf_module, postfix_dir):
    (postfix_dir / "main.cf").unlink()
    checked = postconf_module(check_mode=True, parameters={"relayhost": SES})
    assert checked["changed_parameters"] == ["relayhost"]
    assert not (postfix_dir / "main.cf").exists()
    applied = postconf_module(parameters={"relayhost": SES})
    assert applied["changed_parameters"] == ["relayhost"]
    assert (postfix_dir / "main.cf").read_text() == "relayhost = %s\n" % SES


# --------------------------------------------------------------------------- nothing half done


@pytest.mark.parametrize("name", ["my=svc", "#svc", "a" * 5000, "a{b", "x$y", "a,b", "ü", ""])
def test_a_bad_service_name_fails_before_main_cf_changes(postconf_module, postfix_dir, name):
    before = fingerprint(postfix_dir)
    result = postconf_module(parameters={"relayhost": SES}, services=[{"name": name, "command": "smtp"}])
    assert result["failed"] and "service name" in result["msg"] and not result["changed"]
    assert len(result["msg"]) < 300
    assert fingerprint(postfix_dir) == before


@pytest.mark.parametrize(
    "args, named",
    [
        ({"parameters": {"relayhost": "[a]:587\nsmtp_tls_security_level = none"}}, "relayhost"),
        ({"parameters": {"mydestination": ["a.example", "b\u2028c"]}}, "mydestination"),
        ({"services": [{"name": "r", "command": "smtp\n-o smtp_tls_security_level=none"}]}, "r/unix"),
        ({"services": [{"name": "r", "command": "smtp", "options": {"smtp_helo_name": "a\x85b"}}]}, "smtp_helo_name"),
    ],
)
def test_line_breaks_in_values_and_commands_are_refused(postconf_module, postfix_dir, args, named):
    before = fingerprint(postfix_dir)
    result = postconf_module(**args)
    assert result["failed"] and named in result["msg"] and ("line break" in result["msg"])
    assert fingerprint(postfix_dir) == before


def test_a_trailing_newline_from_a_yaml_block_is_dropped_not_refused(postconf_module, postfix_dir):
    assert postconf_module(parameters={"relayhost": SES + "\n"})["changed"]
    assert postconf(postfix_dir, "-h", "relayhost").strip() == SES


def test_override_names_are_checked_like_main_cf_names(postconf_module, postfix_dir):
    before = fingerprint(postfix_dir)
    result = postconf_module(
        services=[{"name": "r", "command": "smtp", "options": {"smtp_tls_securty_level": "secure"}}]
    )
    assert result["failed"] and "smtp_tls_securty_level" in result["msg"] and "allow_unknown" in result["msg"]
    assert fingerprint(postfix_dir) == before
    assert postconf_module(
        allow_unknown=True, services=[{"name": "r", "command": "smtp", "options": {"smtp_tls_securty_level": "x"}}]
    )["changed"]


def test_a_failure_after_main_cf_changed_reports_the_partial_change(postconf_module, postfix_dir, monkeypatch):
    """Whatever validation misses and postconf refuses later: the result says what was applied."""
    from ansible_collections.smarthost.postfix.plugins.module_utils import postfix as cli

    real = cli.Postfix.postconf

    def refuse_master_cf(self, *args):
        if args and args[0] == "-M":
            args = ("-M", "bad=entry")
        return real(self, *args)

    monkeypatch.setattr(cli.Postfix, "postconf", refuse_master_cf)
    result = postconf_module(parameters={"relayhost": SES}, services=[{"name": "newsvc", "command": "smtp"}])
    assert result["failed"] and result["changed"]
    assert result["msg"].startswith("main.cf: set relayhost; then postconf -M failed")
    assert "partial" in result["msg"]
    assert postconf(postfix_dir, "-h", "relayhost").strip() == SES


def test_postconf_warnings_are_passed_on(postconf_module, postfix_dir, settle):
    with open(str(postfix_dir / "main.cf"), "a") as handle:
        handle.write("my_unused_setting = 1\n")
    settle()
    result = postconf_module(parameters={"relayhost": SES})
    warnings = [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", [])]
    assert any("unused parameter: my_unused_setting=1" in warning for warning in warnings), warnings
