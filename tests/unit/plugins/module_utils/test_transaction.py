# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One checked change: the snapshot that puts files back, and apply_configuration() against the real
postconf, postmap and postfix check on throwaway config dirs (the module's own tests go through main())."""

from __future__ import annotations

import functools
import os
import stat

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix, PostfixError
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import ValidationError
from ansible_collections.smarthost.postfix.plugins.module_utils.smtp_probe import probe as smtp_probe
from ansible_collections.smarthost.postfix.plugins.module_utils.transaction import (
    Snapshot,
    apply_configuration,
    login_to_probe,
    probe_before_write,
    stale_compiled_files,
)
from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils import smtp_servers as servers
from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils.postfix_cli import lookup, postconf

KEY = "[relay.example.test]:587"


def mode_of(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


def sasl_map(path, password="first-Secret", map_type="hash"):
    return [{"path": str(path), "type": map_type, "entries": [{"key": KEY, "username": "u", "password": password}]}]


# --------------------------------------------------------------------------- Snapshot


def test_snapshot_restores_bytes_mode_and_removes_what_did_not_exist(tmp_path):
    kept = tmp_path / "kept"
    kept.write_text("old\n")
    kept.chmod(0o640)
    created = tmp_path / "created"
    snapshot = Snapshot()
    snapshot.keep(str(kept))
    snapshot.keep(str(created))
    snapshot.keep(str(kept))  # a second keep keeps the first copy
    kept.write_text("new\n")
    kept.chmod(0o644)
    created.write_text("new file\n")
    snapshot.restore()
    snapshot.discard()
    assert kept.read_text() == "old\n"
    assert mode_of(kept) == 0o640
    assert not created.exists()
    assert sorted(os.listdir(str(tmp_path))) == ["kept"]


def test_snapshot_copies_sit_in_a_private_directory(tmp_path):
    secret = tmp_path / "sasl_passwd"
    secret.write_text("%s u:first-Secret\n" % KEY)
    secret.chmod(0o600)
    snapshot = Snapshot()
    snapshot.keep(str(secret))
    workdirs = [name for name in os.listdir(str(tmp_path)) if name.startswith(".smarthost-rollback-")]
    assert len(workdirs) == 1
    assert mode_of(tmp_path / workdirs[0]) == 0o700
    snapshot.discard()
    assert os.listdir(str(tmp_path)) == ["sasl_passwd"]


# --------------------------------------------------------------------------- apply_configuration


def test_tables_then_main_cf_as_one_change(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    path = postfix_dir / "sasl_passwd"
    result = apply_configuration(
        postfix, parameters={"relayhost": KEY, "smtp_sasl_password_maps": "hash:%s" % path}, sasl_maps=sasl_map(path)
    )
    assert result["changed"] and result["checked"]
    assert result["changed_parameters"] == ["relayhost", "smtp_sasl_password_maps"]
    assert lookup(postfix_dir, "hash:%s" % path, KEY) == "u:first-Secret"
    assert mode_of(path) == 0o600 and mode_of(str(path) + ".db") == 0o600
    again = apply_configuration(
        postfix, parameters={"relayhost": KEY, "smtp_sasl_password_maps": "hash:%s" % path}, sasl_maps=sasl_map(path)
    )
    assert not again["changed"] and not again["checked"]


def test_check_mode_plans_without_writing(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    path = postfix_dir / "sasl_passwd"
    result = apply_configuration(postfix, parameters={"relayhost": KEY}, sasl_maps=sasl_map(path), check_mode=True)
    assert result["changed"] and not result["checked"]
    assert not path.exists()
    assert "relayhost" not in postconf(postfix_dir, "-n")


def test_a_rejected_change_puts_tables_and_main_cf_back(postfix_dir, settle):
    postfix = Postfix(str(postfix_dir))
    path = postfix_dir / "sasl_passwd"
    apply_configuration(postfix, parameters={"relayhost": KEY}, sasl_maps=sasl_map(path))
    settle()
    before = {
        name: (postfix_dir / name).read_bytes() for name in ("main.cf", "master.cf", "sasl_passwd", "sasl_passwd.db")
    }
    # postfix check refuses a queue directory that does not exist and cannot be made.
    with pytest.raises(PostfixError, match="postfix check rejected the new configuration"):
        apply_configuration(
            postfix,
            parameters={"relayhost": "[other.example.test]:587", "queue_directory": "/proc/no-such-queue"},
            sasl_maps=sasl_map(path, password="second-Secret"),
        )
    after = {name: (postfix_dir / name).read_bytes() for name in before}
    assert after == before
    assert lookup(postfix_dir, "hash:%s" % path, KEY) == "u:first-Secret"
    assert not [name for name in os.listdir(str(postfix_dir)) if name.startswith(".")]


def test_bad_input_fails_before_any_file_changes(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    before = (postfix_dir / "main.cf").read_bytes()
    path = postfix_dir / "sasl_passwd"
    with pytest.raises(ValidationError, match="listed more than once"):
        apply_configuration(
            postfix, parameters={"relayhost": KEY}, sasl_maps=sasl_map(path) + sasl_map(path, password="other-Secret")
        )
    assert (postfix_dir / "main.cf").read_bytes() == before
    assert not path.exists()


def test_stale_compiled_files_are_the_other_types_beside_a_table(tmp_path):
    table = tmp_path / "sasl_passwd"
    table.write_text("")
    for suffix in (".db", ".lmdb", ".cdb"):
        (tmp_path / ("sasl_passwd" + suffix)).write_text("")
    assert stale_compiled_files(str(table), "lmdb") == [str(table) + ".cdb", str(table) + ".db"]
    assert stale_compiled_files(str(table), "hash") == [str(table) + ".cdb", str(table) + ".lmdb"]


# --------------------------------------------------------------------------- the probe before the write


def test_before_write_sees_the_planned_change_and_a_raise_leaves_every_file(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    path = postfix_dir / "sasl_passwd"
    before = (postfix_dir / "main.cf").read_bytes()
    seen = []

    def refuse(result):
        seen.append(result["changed_parameters"])
        raise ValidationError("refused by the probe")

    with pytest.raises(ValidationError, match="refused by the probe"):
        apply_configuration(postfix, parameters={"relayhost": KEY}, sasl_maps=sasl_map(path), before_write=refuse)
    assert seen == [["relayhost"]]
    assert (postfix_dir / "main.cf").read_bytes() == before
    assert not path.exists()


def test_before_write_is_not_called_when_nothing_changes(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    path = postfix_dir / "sasl_passwd"
    apply_configuration(postfix, parameters={"relayhost": KEY}, sasl_maps=sasl_map(path))
    calls = []
    again = apply_configuration(
        postfix, parameters={"relayhost": KEY}, sasl_maps=sasl_map(path), before_write=calls.append
    )
    assert not again["changed"] and calls == []


def planned(changed_parameters=(), added=(), updated=(), path="/etc/postfix/sasl_passwd"):
    return {
        "changed_parameters": list(changed_parameters),
        "tables": {path: {"keys_added": list(added), "keys_updated": list(updated), "keys_removed": []}},
    }


@pytest.mark.parametrize(
    "result, login",
    [
        (planned(changed_parameters=["relayhost"]), ("u", "new-Secret")),  # a switch to this relay
        (planned(updated=[KEY.upper()]), ("u", "new-Secret")),  # a rotated key (keys compare as Postfix does)
        (planned(added=[KEY]), ("u", "new-Secret")),  # first login for the relay
        (planned(updated=["[other.example.test]:587"]), None),  # another relay's login changed
        (planned(changed_parameters=["message_size_limit"]), None),  # nothing about the relay
    ],
)
def test_the_login_is_probed_only_when_the_switch_or_the_key_changes(result, login):
    sasl_maps = sasl_map("/etc/postfix/sasl_passwd", password="new-Secret")
    assert login_to_probe({"key": KEY}, result, sasl_maps) == login


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return servers.make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def relay(pki):
    """A STARTTLS relay that takes servers.USERNAME / servers.PASSWORD only."""
    handler = servers.RelayHandler()
    context = servers.server_context(pki["server_cert"], pki["server_key"])
    controller, port = servers.start_smtp(handler, "starttls", context)
    yield handler, port
    controller.stop()


def rotation(postfix_dir, password):
    path = postfix_dir / "sasl_passwd"
    return [
        {
            "path": str(path),
            "type": "hash",
            "entries": [{"key": KEY, "username": servers.USERNAME, "password": password}],
        }
    ]


def test_a_rotation_is_written_only_when_the_relay_takes_the_new_password(postfix_dir, pki, relay, settle):
    handler, port = relay
    postfix = Postfix(str(postfix_dir))
    path = postfix_dir / "sasl_passwd"
    parameters = {"relayhost": KEY, "smtp_sasl_password_maps": "hash:%s" % path}
    apply_configuration(postfix, parameters=parameters, sasl_maps=rotation(postfix_dir, "the-Old-secret"))
    settle()
    # The real probe against a real TLS relay; only the name the test certificate carries is injected.
    run_probe = functools.partial(smtp_probe, server_name=servers.RELAY_NAME, timeout=5, helo_name="probe.test")
    probe = {"key": KEY, "host": "127.0.0.1", "port": port, "tls": "starttls", "ca_file": pki["ca"]}

    def rotate(password):
        maps = rotation(postfix_dir, password)
        return apply_configuration(
            postfix, parameters=parameters, sasl_maps=maps, before_write=probe_before_write(probe, maps, run_probe)
        )

    before = {name: (postfix_dir / name).read_bytes() for name in ("main.cf", "sasl_passwd", "sasl_passwd.db")}
    with pytest.raises(ValidationError, match=r"before anything was written \(credentials_rejected\)") as raised:
        rotate("wr0ng-rotated-Secret")
    assert "wr0ng-rotated-Secret" not in str(raised.value)
    assert {name: (postfix_dir / name).read_bytes() for name in before} == before
    assert lookup(postfix_dir, "hash:%s" % path, KEY) == "%s:the-Old-secret" % servers.USERNAME
    assert handler.logins[-1] == ("PLAIN", servers.USERNAME.encode(), b"wr0ng-rotated-Secret")

    settle()
    rotated = rotate(servers.PASSWORD)
    assert rotated["changed"] and rotated["probed"] == {
        "ok": True,
        "cause": None,
        "auth_mechanism": "PLAIN",
        "authenticated": True,
    }
    assert lookup(postfix_dir, "hash:%s" % path, KEY) == "%s:%s" % (servers.USERNAME, servers.PASSWORD)
    assert handler.messages == []  # a probe never sends mail

    settle()
    unchanged = rotate(servers.PASSWORD)
    assert not unchanged["changed"] and "probed" not in unchanged
