# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared fixtures: throwaway Postfix config dirs, in-process module runs, tool call logs.

Everything runs the real postconf/postmap binaries against temporary directories made with
`postconf -c DIR`; /etc/postfix is never read for configuration nor written.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shutil
import subprocess
import textwrap
import time

import pytest
from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19
    from unittest import mock

    @contextlib.contextmanager
    def patch_module_args(args=None):
        payload = json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}).encode()
        with mock.patch.object(basic, "_ANSIBLE_ARGS", payload):
            yield


from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import find_binary

POSTFIX_SHARE = "/usr/share/postfix"
MODULE_PACKAGE = "ansible_collections.smarthost.postfix.plugins.modules."


def _postfix_templates():
    main_dist = os.path.join(POSTFIX_SHARE, "main.cf.dist")
    master_dist = os.path.join(POSTFIX_SHARE, "master.cf.dist")
    if find_binary("postconf") is None or not os.path.exists(main_dist) or not os.path.exists(master_dist):
        pytest.skip("needs Postfix with its templates in %s (Debian package postfix)" % POSTFIX_SHARE)
    return main_dist, master_dist


def main_cf_from_dist(text):
    """Debian's main.cf.dist minus its install-time placeholders.

    main.cf.dist leaves e.g. `setgid_group =` and `sendmail_path =` empty for the installer
    to fill in; postconf -m and postfix check refuse those empty values. A name with nothing
    after `=` and no continuation line is such a placeholder; dropping it restores the default.
    """
    lines = text.splitlines()
    kept = []
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else ""
        continues = following[:1].isspace() and following.strip() != ""
        if re.match(r"^[a-z_]+\s*=\s*$", line) and not continues:
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def age_main_cf(config_dir):
    """Pretend main.cf was written a minute ago.

    postconf re-reads a main.cf modified within the last couple of seconds until it stops
    changing (300 ms polls, about 2 s), in case an editor is still writing it. Tests write
    and read main.cf in quick succession; ageing the file keeps them fast without changing
    what Postfix reads.
    """
    main_cf = os.path.join(str(config_dir), "main.cf")
    if os.path.exists(main_cf):
        past = time.time() - 60
        os.utime(main_cf, (past, past))


@pytest.fixture
def postfix_dir(tmp_path):
    """A throwaway Postfix config dir: Debian's main.cf.dist and master.cf.dist.

    The queue and data directories point into the temporary tree, so even `postfix check`
    (which creates missing queue directories) stays inside it.
    """
    main_dist, master_dist = _postfix_templates()
    config = tmp_path / "postfix"
    config.mkdir()
    with open(main_dist, encoding="utf-8") as handle:
        main_cf = main_cf_from_dist(handle.read())
    (config / "main.cf").write_text(main_cf, encoding="utf-8")
    shutil.copyfile(master_dist, config / "master.cf")
    (tmp_path / "spool").mkdir()
    (tmp_path / "lib").mkdir()
    subprocess.run(
        [
            find_binary("postconf"),
            "-c",
            str(config),
            "-e",
            "queue_directory=%s" % (tmp_path / "spool"),
            "data_directory=%s" % (tmp_path / "lib"),
        ],
        check=True,
    )
    age_main_cf(config)
    return config


@pytest.fixture
def settle(postfix_dir):
    """Call after writing postfix_dir's main.cf behind the code's back (see age_main_cf)."""
    return lambda: age_main_cf(postfix_dir)


@pytest.fixture
def map_types(postfix_dir):
    """Lookup table types the installed Postfix supports."""
    from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix

    return Postfix(str(postfix_dir)).map_types()


@pytest.fixture
def run_module(capsys, monkeypatch):
    """Run a module's main() in-process; return its JSON result (with `failed` on fail_json)."""
    try:
        from ansible.module_utils import _internal
    except ImportError:  # ansible-core < 2.19
        _internal = None
    if getattr(_internal, "is_controller", False):
        # A test that imported controller code (the filter's) flips this for the whole process;
        # a module would then hand its warnings to the controller's display instead of its result.
        monkeypatch.setattr(_internal, "is_controller", False)

    def run(name, args, check_mode=False, diff=False):
        module = importlib.import_module(MODULE_PACKAGE + name)
        module_args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
        capsys.readouterr()
        with patch_module_args(module_args):
            with pytest.raises(SystemExit):
                module.main()
        if args.get("config_dir"):
            age_main_cf(args["config_dir"])
        return json.loads(capsys.readouterr().out)

    return run


class ToolLog:
    """Reads what the PATH wrappers recorded: one list of arguments per invocation."""

    def __init__(self, path):
        self.path = path

    def calls(self, tool=None):
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as handle:
            records = [line.rstrip("\n").split("\x1f") for line in handle if line.strip()]
        return [record[1:] for record in records if tool is None or record[0] == tool]

    def clear(self):
        if os.path.exists(self.path):
            os.unlink(self.path)


@pytest.fixture
def tool_log(tmp_path, monkeypatch):
    """Put logging wrappers for postconf and postmap first on PATH.

    The wrappers run the real binaries; postmap's record also carries the mode of the
    directory its map is built in, to prove the build happens in a private directory.
    """
    bin_dir = tmp_path / "wrappers"
    bin_dir.mkdir()
    log = tmp_path / "tool-calls.log"
    for tool in ("postconf", "postmap"):
        real = find_binary(tool)
        extra = ""
        if tool == "postmap":
            extra = textwrap.dedent("""\
                for last in "$@"; do :; done
                printf '\\037dirmode=%s' "$(stat -c %a "$(dirname "${last#*:}")")" >> "$LOG"
                """)
        script = textwrap.dedent("""\
            #!/bin/sh
            LOG=%s
            { printf '%%s' %s; for arg in "$@"; do printf '\\037%%s' "$arg"; done; } >> "$LOG"
            %s
            printf '\\n' >> "$LOG"
            exec %s "$@"
            """) % (log, tool, extra, real)
        wrapper = bin_dir / tool
        wrapper.write_text(script, encoding="utf-8")
        wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", "%s%s%s" % (bin_dir, os.pathsep, os.environ.get("PATH", "")))
    return ToolLog(str(log))
