# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A module run SIGKILLed at each stage that leaves something behind, and the run after it.

The killed run is a real process (interrupted_run.py) stopped where it writes; SIGKILL leaves
what it leaves. The next run must find its own temporary files and rollback directories, put
back or remove them, and no copy of a secret may ever be wider than 0600.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils.postfix_cli import lookup

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "interrupted_run.py")
KEY = "[relay.example.test]:587"
OLD = "Old-Secret-pw"
NEW = "New-Secret-pw"


def kill_at(tmp_path, module, args, stage):
    """Start the module, wait until it reaches stage, SIGKILL it; return the marker's pid."""
    args_file = tmp_path / ("%s-args.json" % stage)
    args_file.write_text(json.dumps(args))
    marker = tmp_path / ("%s.reached" % stage)
    proc = subprocess.Popen(
        [sys.executable, HELPER, module, str(args_file), stage, str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError("the run ended before %s: %s" % (stage, proc.stderr.read().decode()))
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the run never reached %s" % stage)
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def warnings_of(result):
    """The warnings' texts (ansible-core 2.19 returns them as structured events in-process)."""
    return [warning["event"]["msg"] if isinstance(warning, dict) else warning for warning in result.get("warnings", [])]


def leftovers(directory):
    """Hidden names in directory, and for each regular file in them (at any depth) its mode."""
    found = {}
    for name in sorted(os.listdir(str(directory))):
        if not name.startswith("."):
            continue
        path = os.path.join(str(directory), name)
        if os.path.isdir(path):
            found[name] = {
                "mode": stat.S_IMODE(os.stat(path).st_mode),
                "files": {
                    inner: stat.S_IMODE(os.stat(os.path.join(path, inner)).st_mode)
                    for inner in sorted(os.listdir(path))
                },
            }
        else:
            found[name] = {"mode": stat.S_IMODE(os.stat(path).st_mode)}
    return found


def sasl_args(postfix_dir, password):
    return {
        "path": str(postfix_dir / "sasl_passwd"),
        "config_dir": str(postfix_dir),
        "entries": [{"key": KEY, "username": "u", "password": password}],
    }


def config_args(postfix_dir, password, **parameters):
    return {
        "config_dir": str(postfix_dir),
        "parameters": dict({"relayhost": KEY}, **parameters),
        "sasl_maps": [
            {
                "path": str(postfix_dir / "sasl_passwd"),
                "type": "hash",
                "entries": [{"key": KEY, "username": "u", "password": password}],
            }
        ],
    }


def assert_private(found):
    for name, info in found.items():
        assert info["mode"] in (0o600, 0o700), (name, info)
        for inner, mode in info.get("files", {}).items():
            assert mode == 0o600, (name, inner, oct(mode))


@pytest.mark.parametrize("stage, prefix", [("temp-written", ".sasl_passwd."), ("postmap-built", ".postmap-")])
def test_sasl_map_killed_mid_write_is_cleaned_up_by_the_next_run(run_module, postfix_dir, tmp_path, stage, prefix):
    assert not run_module("sasl_map", sasl_args(postfix_dir, OLD)).get("failed")
    kill_at(tmp_path, "sasl_map", sasl_args(postfix_dir, NEW), stage)
    found = leftovers(postfix_dir)
    assert [name for name in found if name.startswith(prefix)], found  # the kill left its work behind
    assert_private(found)
    result = run_module("sasl_map", sasl_args(postfix_dir, NEW))
    assert result["changed"] and not result.get("failed")
    assert any("interrupted" in warning for warning in warnings_of(result))
    assert leftovers(postfix_dir) == {}
    assert lookup(postfix_dir, "hash:%s" % (postfix_dir / "sasl_passwd"), KEY) == "u:" + NEW
    assert not run_module("sasl_map", sasl_args(postfix_dir, NEW))["changed"]


def test_postfix_config_killed_during_its_check_is_undone_by_the_next_run(run_module, postfix_dir, tmp_path):
    """Killed after writing the new password and main.cf, before postfix check said yes: the change
    never completed, so the next run (which changes something else) puts the old files back first."""
    assert not run_module("postfix_config", config_args(postfix_dir, OLD)).get("failed")
    main_cf = (postfix_dir / "main.cf").read_bytes()
    kill_at(tmp_path, "postfix_config", config_args(postfix_dir, NEW, smtp_helo_name="killed.example"), "checking")
    found = leftovers(postfix_dir)
    rollback = [name for name in found if name.startswith(".smarthost-rollback-")]
    assert rollback and "manifest.json" in found[rollback[0]]["files"], found
    assert_private(found)
    assert lookup(postfix_dir, "hash:%s" % (postfix_dir / "sasl_passwd"), KEY) == "u:" + NEW  # half done

    result = run_module("postconf", {"config_dir": str(postfix_dir), "parameters": {"smtp_tls_loglevel": "1"}})
    assert result["changed"] and not result.get("failed"), result
    assert any("put back" in warning and "sasl_passwd" in warning for warning in warnings_of(result))
    assert leftovers(postfix_dir) == {}
    assert lookup(postfix_dir, "hash:%s" % (postfix_dir / "sasl_passwd"), KEY) == "u:" + OLD
    settings = subprocess.run(
        ["postconf", "-c", str(postfix_dir), "-n"], stdout=subprocess.PIPE, text=True, check=True
    ).stdout
    assert "killed.example" not in settings and "smtp_tls_loglevel = 1" in settings
    assert (postfix_dir / "main.cf").read_bytes() != main_cf  # only the new run's change


def test_postfix_config_killed_while_copying_aside_changed_nothing(run_module, postfix_dir, tmp_path):
    assert not run_module("postfix_config", config_args(postfix_dir, OLD)).get("failed")
    kill_at(tmp_path, "postfix_config", config_args(postfix_dir, NEW), "copying")
    found = leftovers(postfix_dir)
    rollback = [name for name in found if name.startswith(".smarthost-rollback-")]
    assert rollback and "manifest.json" not in found[rollback[0]]["files"], found
    assert_private(found)
    result = run_module("postfix_config", config_args(postfix_dir, NEW))
    assert result["changed"] and not result.get("failed"), result
    assert any("had not begun" in warning for warning in warnings_of(result))
    assert leftovers(postfix_dir) == {}
    assert lookup(postfix_dir, "hash:%s" % (postfix_dir / "sasl_passwd"), KEY) == "u:" + NEW


def test_check_mode_reports_what_the_next_run_would_recover_and_touches_nothing(run_module, postfix_dir, tmp_path):
    assert not run_module("sasl_map", sasl_args(postfix_dir, OLD)).get("failed")
    kill_at(tmp_path, "sasl_map", sasl_args(postfix_dir, NEW), "postmap-built")
    found = leftovers(postfix_dir)
    checked = run_module("sasl_map", sasl_args(postfix_dir, OLD), check_mode=True)
    assert checked["changed"] and any("would remove" in warning for warning in warnings_of(checked))
    assert leftovers(postfix_dir) == found
