# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""smarthost.postfix.postfix_config in-process against a throwaway instance: real postconf, postmap, postfix check."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess

import pytest

SES = "[email-smtp.eu-west-1.amazonaws.com]:587"
PASSWORD = "Tr4ns-Secret:with#odd&chars"
NEW_PASSWORD = "Tr4ns-Other-Secret"


def postconf(config_dir, *args):
    return subprocess.run(
        ["postconf", "-c", str(config_dir)] + list(args),
        check=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ).stdout


def state_of(config_dir):
    """Content hash, mode and owner of every file in the config dir (hidden ones included)."""
    files = {}
    for name in sorted(os.listdir(str(config_dir))):
        path = os.path.join(str(config_dir), name)
        st = os.lstat(path)
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest() if stat.S_ISREG(st.st_mode) else "dir"
        files[name] = (digest, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return files


def lookup(config_dir, map_name, key):
    return subprocess.run(
        ["postmap", "-c", str(config_dir), "-q", key, map_name], stdout=subprocess.PIPE, text=True, check=False
    ).stdout.strip()


def relay_args(config_dir, password=PASSWORD, map_type="hash", **parameters):
    sasl = "%s/sasl_passwd" % config_dir
    transport = "%s/transport" % config_dir
    wanted = {
        "relayhost": SES,
        "smtp_sasl_auth_enable": True,
        "smtp_sasl_password_maps": "%s:%s" % (map_type, sasl),
        "smtp_tls_connection_reuse": True,
        "transport_maps": "hash:" + transport,
    }
    wanted.update(parameters)
    return {
        "config_dir": str(config_dir),
        "parameters": wanted,
        "services": [{"name": "tlsproxy", "chroot": "n", "maxproc": "0", "command": "tlsproxy"}],
        "sasl_maps": [
            {"path": sasl, "type": map_type, "entries": [{"key": SES, "username": "AKIAEXAMPLE", "password": password}]}
        ],
        "tables": [
            {
                "path": transport,
                "type": "hash",
                "entries": [{"key": "example.org", "value": "smtp:[smtp.sendgrid.net]:587"}],
            }
        ],
    }


@pytest.fixture
def apply(run_module):
    def run(args, check_mode=False, diff=False):
        result = run_module("postfix_config", args, check_mode=check_mode, diff=diff)
        dumped = json.dumps(result)
        assert PASSWORD not in dumped and NEW_PASSWORD not in dumped
        return result

    return run


def test_applies_everything_with_modes_then_changes_nothing(apply, postfix_dir):
    first = apply(relay_args(postfix_dir))
    assert first["changed"] and first["checked"]
    assert first["changed_parameters"] == list(relay_args(postfix_dir)["parameters"])
    assert first["changed_services"] == ["tlsproxy/unix"]
    assert postconf(postfix_dir, "-h", "relayhost").strip() == SES
    assert lookup(postfix_dir, "hash:%s/sasl_passwd" % postfix_dir, SES) == "AKIAEXAMPLE:" + PASSWORD
    assert lookup(postfix_dir, "hash:%s/transport" % postfix_dir, "example.org") == "smtp:[smtp.sendgrid.net]:587"
    files = state_of(postfix_dir)
    assert files["sasl_passwd"][1:] == (0o600, 0, 0) and files["sasl_passwd.db"][1:] == (0o600, 0, 0)
    assert files["transport"][1] == 0o644 and files["transport.db"][1] == 0o644
    summary = first["tables"]["%s/sasl_passwd" % postfix_dir]
    assert summary["keys_added"] == [SES] and summary["compiled"]

    second = apply(relay_args(postfix_dir))
    assert not second["changed"] and not second["checked"]
    assert second["changed_parameters"] == [] and second["changed_services"] == []
    assert all(not table["changed"] for table in second["tables"].values())
    assert state_of(postfix_dir) == files
    assert not any(name.startswith(".smarthost-rollback") for name in os.listdir(str(postfix_dir)))


def test_check_mode_writes_nothing_and_predicts_the_real_run(apply, postfix_dir):
    before = state_of(postfix_dir)
    checked = apply(relay_args(postfix_dir), check_mode=True)
    assert state_of(postfix_dir) == before
    applied = apply(relay_args(postfix_dir))
    for key in ("changed", "changed_parameters", "changed_services", "restart_needed"):
        assert checked[key] == applied[key], key
    assert {path: table["keys_added"] for path, table in checked["tables"].items()} == {
        path: table["keys_added"] for path, table in applied["tables"].items()
    }


def test_diff_shows_each_changed_file_and_masks_the_password(apply, postfix_dir):
    apply(relay_args(postfix_dir))
    result = apply(relay_args(postfix_dir, password=NEW_PASSWORD), diff=True)
    assert result["changed"]
    headers = [item["after_header"] for item in result["diff"]]
    assert headers == ["%s/sasl_passwd" % postfix_dir]
    assert result["diff"][0]["after"] == "%s AKIAEXAMPLE:******** (password changed)\n" % SES
    assert result["tables"]["%s/sasl_passwd" % postfix_dir]["keys_updated"] == [SES]
    assert lookup(postfix_dir, "hash:%s/sasl_passwd" % postfix_dir, SES) == "AKIAEXAMPLE:" + NEW_PASSWORD


def test_a_change_postfix_check_rejects_puts_every_file_back(apply, postfix_dir):
    apply(relay_args(postfix_dir))
    before = state_of(postfix_dir)
    rejected = apply(relay_args(postfix_dir, password=NEW_PASSWORD, default_process_limit="many"))
    assert rejected["failed"]
    assert rejected["msg"].startswith("postfix check rejected the new configuration")
    assert "Postfix said:" in rejected["msg"] and "default_process_limit" in rejected["msg"]
    # Byte for byte, mode and owner: the old password is live again, no rollback copy is left.
    assert state_of(postfix_dir) == before
    assert lookup(postfix_dir, "hash:%s/sasl_passwd" % postfix_dir, SES) == "AKIAEXAMPLE:" + PASSWORD


def test_a_rejected_first_change_removes_the_tables_it_created(apply, postfix_dir):
    before = state_of(postfix_dir)
    rejected = apply(relay_args(postfix_dir, default_process_limit="many"))
    assert rejected["failed"] and "postfix check rejected" in rejected["msg"]
    assert state_of(postfix_dir) == before


@pytest.mark.parametrize(
    "change, message",
    [
        ({"parameters": {"relayhostt": "[a]:587"}}, "unknown main.cf parameter name(s): relayhostt"),
        (
            {"sasl_maps": [{"path": "SASL", "entries": [{"key": SES, "username": "a:b", "password": PASSWORD}]}]},
            "username must not contain ':'",
        ),
        ({"tables": [{"path": "TRANSPORT", "entries": [{"key": "a b", "value": "x"}]}]}, "cannot contain whitespace"),
        ({"tables": [{"path": "SASL", "entries": []}]}, "is listed more than once"),
        ({"tables": [{"path": "TRANSPORT", "type": "cdb", "entries": []}]}, None),
    ],
)
def test_bad_input_fails_before_any_file_is_written(apply, postfix_dir, map_types, change, message):
    if change.get("tables") and change["tables"][0].get("type") == "cdb":
        if "cdb" in map_types:
            pytest.skip("cdb is installed here; the unavailable-type case needs a host without it")
        message = "map type cdb is not available on this host"
    args = relay_args(postfix_dir)
    places = {"SASL": "%s/sasl_passwd" % postfix_dir, "TRANSPORT": "%s/transport" % postfix_dir}
    for key, value in change.items():
        if key == "parameters":
            args[key] = dict(args[key], **value)
        else:
            args[key] = [dict(item, path=places[item["path"]]) for item in value]
    before = state_of(postfix_dir)
    result = apply(args)
    assert result["failed"] and message in result["msg"], result["msg"]
    assert state_of(postfix_dir) == before


def test_a_map_type_switch_removes_the_old_compiled_password_map(apply, postfix_dir):
    apply(relay_args(postfix_dir))
    assert os.path.exists("%s/sasl_passwd.db" % postfix_dir)
    switch = relay_args(postfix_dir, map_type="texthash")
    predicted = apply(switch, check_mode=True)
    assert predicted["removed_files"] == ["%s/sasl_passwd.db" % postfix_dir]
    assert os.path.exists("%s/sasl_passwd.db" % postfix_dir)
    switched = apply(switch)
    assert switched["removed_files"] == ["%s/sasl_passwd.db" % postfix_dir]
    assert not os.path.exists("%s/sasl_passwd.db" % postfix_dir)
    assert not apply(switch)["changed"]


def test_inet_interfaces_needs_a_restart_and_other_parameters_a_reload(apply, postfix_dir):
    assert not apply(relay_args(postfix_dir))["restart_needed"]
    assert not apply(relay_args(postfix_dir, message_size_limit=20480000))["restart_needed"]
    assert apply(relay_args(postfix_dir, message_size_limit=20480000, inet_interfaces="loopback-only"))[
        "restart_needed"
    ]


def test_backups_keep_every_changed_file_and_secret_ones_stay_0600(apply, postfix_dir):
    apply(relay_args(postfix_dir))
    os.chmod("%s/sasl_passwd" % postfix_dir, 0o644)  # as an older tool might have left it
    args = relay_args(postfix_dir, password=NEW_PASSWORD, message_size_limit=20480000)
    args["backup"] = True
    result = apply(args)
    backups = sorted(os.path.basename(path) for path in result["backup_files"])
    assert [name.split(".")[0] for name in backups] == ["main", "sasl_passwd"], backups
    for path in result["backup_files"]:
        if os.path.basename(path).startswith("sasl_passwd"):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            assert PASSWORD in open(path, encoding="utf-8").read()
    assert stat.S_IMODE(os.stat("%s/sasl_passwd" % postfix_dir).st_mode) == 0o600


def test_password_never_in_a_failure_message(apply, postfix_dir):
    args = relay_args(postfix_dir)
    args["sasl_maps"][0]["entries"][0]["password"] = PASSWORD + "\n"
    result = apply(args)
    assert result["failed"] and "line break" in result["msg"]


def unreachable_probe():
    """A probe of 127.0.0.1 on a port nothing listens on: refused at once, the cause is connection_refused."""
    from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils.smtp_servers import free_port

    return {"key": SES, "host": "127.0.0.1", "port": free_port()}


def test_a_rotation_the_probe_cannot_confirm_writes_nothing_in_check_mode_or_for_real(apply, postfix_dir):
    apply(relay_args(postfix_dir))
    before = state_of(postfix_dir)
    rotated = dict(relay_args(postfix_dir, password=NEW_PASSWORD), probe=unreachable_probe())
    for check_mode in (True, False):
        result = apply(rotated, check_mode=check_mode)
        assert result["failed"], check_mode
        assert "refused the new configuration before anything was written (connection_refused)" in result["msg"]
        assert state_of(postfix_dir) == before
    assert lookup(postfix_dir, "hash:%s/sasl_passwd" % postfix_dir, SES) == "AKIAEXAMPLE:" + PASSWORD


def test_a_change_that_leaves_the_relay_and_its_login_alone_is_not_probed(apply, postfix_dir):
    apply(relay_args(postfix_dir))
    args = dict(relay_args(postfix_dir, message_size_limit="20480000"), probe=unreachable_probe())
    result = apply(args)
    assert result["changed"] and result["changed_parameters"] == ["message_size_limit"]
    assert "probed" not in result
