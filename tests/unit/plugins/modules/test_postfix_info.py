# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""smarthost.postfix.postfix_info against the installed Postfix and without one."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils import postfix as postfix_utils


def postconf(config_dir, *args):
    return subprocess.run(
        ["postconf", "-c", str(config_dir)] + list(args),
        check=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ).stdout


def test_reports_what_postconf_says(run_module, postfix_dir):
    result = run_module("postfix_info", {"config_dir": str(postfix_dir)})
    assert result["installed"] is True and result["changed"] is False
    assert result["mail_version"] == postconf(postfix_dir, "-dh", "mail_version").strip()
    assert result["default_database_type"] == postconf(postfix_dir, "-h", "default_database_type").strip()
    assert result["map_types"] == postconf(postfix_dir, "-m").split()
    assert result["config_directory"] == str(postfix_dir)
    major, minor = (int(part) for part in result["mail_version"].split(".")[:2])
    assert result["tls_min_version_syntax"] == ("modern" if (major, minor) >= (3, 6) else "legacy")


def test_effective_default_database_type(run_module, postfix_dir, settle):
    postconf(postfix_dir, "-e", "default_database_type=btree")
    settle()
    assert run_module("postfix_info", {"config_dir": str(postfix_dir)})["default_database_type"] == "btree"


def test_reports_the_current_relayhost(run_module, postfix_dir, settle):
    assert run_module("postfix_info", {"config_dir": str(postfix_dir)})["relayhost"] == ""
    postconf(postfix_dir, "-e", "relayhost=[smtp.sendgrid.net]:587")
    settle()
    assert run_module("postfix_info", {"config_dir": str(postfix_dir)})["relayhost"] == "[smtp.sendgrid.net]:587"


def test_check_mode_changes_nothing(run_module, postfix_dir):
    files = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in postfix_dir.iterdir()}
    result = run_module("postfix_info", {"config_dir": str(postfix_dir)}, check_mode=True)
    assert result["installed"] and not result["changed"]
    assert {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in postfix_dir.iterdir()} == files


def test_works_before_main_cf_exists(run_module, postfix_dir):
    (postfix_dir / "main.cf").unlink()
    result = run_module("postfix_info", {"config_dir": str(postfix_dir)})
    assert result["installed"] and "hash" in result["map_types"]
    assert result["default_database_type"] == postconf(postfix_dir, "-dh", "default_database_type").strip()
    assert result["relayhost"] == ""
    assert not (postfix_dir / "main.cf").exists()


def test_not_installed_is_not_a_failure(run_module, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(postfix_utils, "SBIN_DIRS", ())
    result = run_module("postfix_info", {}, check_mode=True)
    assert not result.get("failed")
    assert result["installed"] is False
    assert result["mail_version"] is None and result["map_types"] == []
    assert result["tls_min_version_syntax"] is None
    assert result["relayhost"] is None


def test_failing_postconf_is_reported(run_module, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "main.cf").write_text("setgid_group =\n")
    os.utime(str(broken / "main.cf"), (0, 0))  # skip postconf's wait for a freshly written main.cf
    result = run_module("postfix_info", {"config_dir": str(broken)})
    if not result.get("failed"):
        pytest.fail("postfix_info accepted a main.cf postconf -m refuses: %r" % result)
    assert "setgid_group" in result["stderr"]


def test_reports_main_cf_and_the_host_facts_the_relay_role_plans_with(run_module, postfix_dir):
    result = run_module("postfix_info", {"config_dir": str(postfix_dir)})
    assert result["main_cf_exists"] is True
    assert result["fqdn"] and result["domain"] == result["fqdn"].partition(".")[2]
    with open("/etc/os-release", encoding="utf-8") as handle:
        release = handle.read()
    if "debian" in release.lower():
        assert result["os_family"] == "Debian"
    (postfix_dir / "main.cf").unlink()
    assert run_module("postfix_info", {"config_dir": str(postfix_dir)})["main_cf_exists"] is False


def test_reports_installed_package_versions(run_module, postfix_dir):
    if postfix_utils.find_binary("dpkg-query") is None:
        pytest.skip("needs dpkg-query (a Debian-family host)")
    installed = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "postfix"], stdout=subprocess.PIPE, text=True, check=True
    ).stdout
    result = run_module(
        "postfix_info", {"config_dir": str(postfix_dir), "packages": ["postfix", "no-such-package-xyz"]}
    )
    assert result["packages"] == {"postfix": installed, "no-such-package-xyz": None}
    assert run_module("postfix_info", {"config_dir": str(postfix_dir)})["packages"] == {}


def test_service_state_is_unknown_without_systemd_and_boolean_with_it(run_module, postfix_dir):
    service = run_module("postfix_info", {"config_dir": str(postfix_dir)})["service"]
    if os.path.isdir("/run/systemd/system"):
        assert set(service) == {"active", "enabled"} and all(isinstance(value, bool) for value in service.values())
    else:
        assert service is None
