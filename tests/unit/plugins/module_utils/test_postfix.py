# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Postfix CLI layer, against the real postconf/postfix on throwaway config dirs."""

from __future__ import annotations

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import (
    MasterEntry,
    Postfix,
    PostfixError,
    describe,
    parse_settings,
    parse_version,
    read_main_cf,
    referenced_names,
    split_command,
    tls_min_version_syntax,
)
from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils.postfix_cli import postconf

# --------------------------------------------------------------------------- pure parsing


def test_parse_settings_handles_empty_values():
    assert parse_settings("a = 1\nmydestination =\nb = x = y\n") == {"a": "1", "mydestination": "", "b": "x = y"}


def test_read_main_cf_follows_postfix_line_rules(tmp_path):
    main_cf = tmp_path / "main.cf"
    main_cf.write_text("# comment = no\nfirst = a\n  b\n\n   \n\tc\nsecond=2\n#third = 3\nfirst = again\n    x\n")
    assert read_main_cf(str(main_cf)) == {"first": "again x", "second": "2"}


def test_parsers_split_lines_at_newline_only(tmp_path):
    assert parse_settings("a = x\u2028y\x1cz\nb = 2\n") == {"a": "x\u2028y\x1cz", "b": "2"}
    main_cf = tmp_path / "main.cf"
    main_cf.write_text("odd = Head\u2028TAIL = secret\nnbsp = a\xa0b\n", encoding="utf-8")
    assert read_main_cf(str(main_cf)) == {"odd": "Head\u2028TAIL = secret", "nbsp": "a\xa0b"}


def test_referenced_names_covers_all_expansion_forms():
    value = "$myhostname ${mydomain} $(relay_x) ${maybe?yes} ${other:no} $$ plain"
    assert referenced_names(value) == {"myhostname", "mydomain", "relay_x", "maybe", "other"}


@pytest.mark.parametrize(
    "version, parsed, syntax",
    [
        ("3.7.11", (3, 7, 11), "modern"),
        ("3.6.0", (3, 6, 0), "modern"),
        ("3.5.25", (3, 5, 25), "legacy"),
        ("3.10-20240101", (3, 10), "modern"),
        ("2.10.1", (2, 10, 1), "legacy"),
    ],
)
def test_versions_and_tls_syntax(version, parsed, syntax):
    assert parse_version(version) == parsed
    assert tls_min_version_syntax(version) == syntax


@pytest.mark.parametrize(
    "command, expected",
    [
        ("smtp", ("smtp", {})),
        ("smtp -o syslog_name=postfix/$service_name", ("smtp", {"syslog_name": "postfix/$service_name"})),
        ("smtp -v -o b=2 -oa=1", ("smtp -v", {"b": "2", "a": "1"})),
        ("smtp -o {smtp_helo_name = foo bar} -o x=", ("smtp", {"smtp_helo_name": "foo bar", "x": ""})),
        # -o after the first non-option argument belongs to the pipe command, not to Postfix
        (
            "pipe -o a=b flags=R argv=/bin/x -o keep ${nexthop}",
            ("pipe flags=R argv=/bin/x -o keep ${nexthop}", {"a": "b"}),
        ),
    ],
)
def test_split_command(command, expected):
    assert split_command(command) == expected


# --------------------------------------------------------------------------- postconf facts


def test_facts_come_from_postconf(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    assert postfix.mail_version() == postconf(postfix_dir, "-dh", "mail_version").strip()
    assert postfix.default_database_type() == postconf(postfix_dir, "-h", "default_database_type").strip()
    assert postfix.map_types() == postconf(postfix_dir, "-m").split()
    assert "hash" in postfix.map_types()
    names = postfix.parameter_names()
    assert "relayhost" in names
    assert "relay_destination_rate_delay" in names  # derived from master.cf's relay service
    facts = describe(postfix)
    assert facts["installed"] is True
    assert facts["config_directory"] == str(postfix_dir)


def test_facts_list_services_by_type_with_their_syslog_names(postfix_dir):
    """One master.cf read gives both lists: what listens (inet) and the delivery agents (unix)."""
    facts = describe(Postfix(str(postfix_dir)))
    assert {"name": "smtp", "syslog_name": None} in facts["inet_services"]
    assert {"name": "relay", "syslog_name": "postfix/$service_name"} in facts["unix_services"]
    assert all(service["name"] != "smtp" or service["syslog_name"] is None for service in facts["unix_services"])
    assert "pickup" not in [service["name"] for service in facts["inet_services"]]


def test_values_read_several_parameters_in_one_call(postfix_dir, settle):
    with open(postfix_dir / "main.cf", "a") as handle:
        handle.write("relayhost = [smtp.example.test]:587\n")
    settle()
    postfix = Postfix(str(postfix_dir))
    values = postfix.values("default_database_type", "relayhost", "smtp_tls_security_level")
    assert values == {
        "default_database_type": postconf(postfix_dir, "-h", "default_database_type").strip(),
        "relayhost": "[smtp.example.test]:587",
        "smtp_tls_security_level": postconf(postfix_dir, "-h", "smtp_tls_security_level").strip(),
    }
    assert describe(postfix)["relayhost"] == "[smtp.example.test]:587"
    (postfix_dir / "main.cf").unlink()
    assert Postfix(str(postfix_dir)).values("relayhost") == {"relayhost": ""}


def test_no_services_before_main_cf_exists(postfix_dir):
    (postfix_dir / "main.cf").unlink()
    assert Postfix(str(postfix_dir)).services() == {}


def test_map_types_without_main_cf(postfix_dir):
    (postfix_dir / "main.cf").unlink()
    postfix = Postfix(str(postfix_dir))
    assert "hash" in postfix.map_types()
    assert postfix.default_database_type() == postconf(postfix_dir, "-dh", "default_database_type").strip()
    assert not (postfix_dir / "main.cf").exists()


def test_explicit_settings_include_names_postconf_n_hides(postfix_dir, settle):
    with open(postfix_dir / "main.cf", "a") as handle:
        handle.write("lonely_custom = nobody uses me\nrelayhost = [a.example]:587\n")
    settle()
    assert "lonely_custom" not in postconf(postfix_dir, "-n")
    settings = Postfix(str(postfix_dir)).explicit_settings()
    assert settings["lonely_custom"] == "nobody uses me"
    assert settings["relayhost"] == "[a.example]:587"


def test_master_entries_split_columns_command_and_overrides(postfix_dir):
    entries = Postfix(str(postfix_dir)).master_entries()
    relay = entries["relay/unix"]
    assert (relay.private, relay.unpriv, relay.chroot, relay.wakeup, relay.maxproc) == ("-", "-", "y", "-", "-")
    assert relay.command == "smtp"
    assert relay.options == {"syslog_name": "postfix/$service_name"}
    assert entries["pickup/unix"].wakeup == "60"
    assert entries["smtp/inet"].command == "smtpd"
    assert entries["maildrop/unix"].command.startswith("pipe flags=DRXhu user=vmail argv=/usr/bin/maildrop")


def test_master_entry_line_round_trips_through_postconf(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    entry = MasterEntry(
        "ses_relay",
        "unix",
        chroot="n",
        maxproc="5",
        command="pipe flags=R argv=/bin/cat ${nexthop}",
        options={"relayhost": "[email-smtp.eu-west-1.amazonaws.com]:587", "smtp_helo_name": "a b"},
    )
    postfix.postconf("-M", "%s=%s" % (entry.key, entry.line()))
    assert postfix.master_entries()["ses_relay/unix"] == entry


def test_errors_carry_command_and_postfix_message(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    with pytest.raises(PostfixError) as caught:
        postfix.postconf("-e", "multi=line\nvalue")
    assert caught.value.rc != 0
    assert caught.value.cmd[1:3] == ["-c", str(postfix_dir)]
    assert "multi-line" in caught.value.stderr
    assert "multi-line" in str(caught.value)


def test_check_passes_and_reports_what_postfix_says(postfix_dir, settle):
    postfix = Postfix(str(postfix_dir))
    postfix.check()
    with open(postfix_dir / "main.cf", "a") as handle:
        handle.write("setgid_group =\n")
    settle()
    with pytest.raises(PostfixError) as caught:
        postfix.check()
    assert "setgid_group" in caught.value.stderr
    assert caught.value.cmd[-1] == "check"


def test_missing_tool_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(
        "ansible_collections.smarthost.postfix.plugins.module_utils.postfix.find_binary", lambda name: None
    )
    with pytest.raises(PostfixError, match="postconf not found"):
        Postfix("/nonexistent").postconf("-n")
