# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one atomic writer and the backups: modes in place before content is visible."""

from __future__ import annotations

import os
import stat

from ansible_collections.smarthost.postfix.plugins.module_utils.files import atomic_write, backup_file


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_sets_mode_before_the_file_appears(tmp_path):
    path = str(tmp_path / "table")
    atomic_write(path, b"a b\n", 0o600, 0, 0)
    assert mode_of(path) == 0o600
    assert os.stat(path).st_uid == 0
    atomic_write(path, b"c d\n", 0o640)
    assert (tmp_path / "table").read_text() == "c d\n"
    assert mode_of(path) == 0o640
    assert os.listdir(str(tmp_path)) == ["table"]


def test_backup_keeps_content_and_mode(tmp_path):
    source = tmp_path / "sasl_passwd"
    source.write_text("[a] u:p\n")
    source.chmod(0o600)
    backup = backup_file(str(source))
    assert backup.startswith(str(source) + ".") and backup.endswith("~")
    assert open(backup).read() == "[a] u:p\n"
    assert mode_of(backup) == 0o600
