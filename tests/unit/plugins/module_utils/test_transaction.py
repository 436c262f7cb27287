# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One checked change: the snapshot that puts files back, and apply_configuration() against the real
postconf, postmap and postfix check on throwaway config dirs (the module's own tests go through main())."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix, PostfixError
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import ValidationError
from ansible_collections.smarthost.postfix.plugins.module_utils.transaction import (
    Snapshot,
    apply_configuration,
    stale_compiled_files,
)
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
