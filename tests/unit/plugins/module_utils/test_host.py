# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host facts postfix_info reports: os-release parsing, OS family, package versions."""

from __future__ import annotations

import subprocess

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils import host
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import find_binary, run_subprocess

RELEASES = {
    "Debian": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
    "Ubuntu": 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n',
    "Rocky": 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\n',
    "Fedora": 'NAME="Fedora Linux"\nID=fedora\n',
    "Alma": "ID='almalinux'\nID_LIKE='rhel centos fedora'\n",
    "Alpine": 'NAME="Alpine Linux"\nID=alpine\n',
}


@pytest.mark.parametrize(
    "name, family",
    [
        ("Debian", "Debian"),
        ("Ubuntu", "Debian"),
        ("Rocky", "RedHat"),
        ("Fedora", "RedHat"),
        ("Alma", "RedHat"),
        ("Alpine", "alpine"),
    ],
)
def test_os_family_from_os_release(name, family):
    assert host.os_family(host.parse_os_release(RELEASES[name])) == family


def test_os_release_quoting_and_comments():
    fields = host.parse_os_release('# comment\nNAME="Debian GNU/Linux"\nID=debian\nBROKEN\nVERSION="12 (bookworm)"\n')
    assert fields == {"NAME": "Debian GNU/Linux", "ID": "debian", "VERSION": "12 (bookworm)"}
    assert host.os_family({}) is None


def test_read_os_release_falls_back_to_usr_lib(tmp_path):
    fallback = tmp_path / "os-release"
    fallback.write_text("ID=debian\n")
    assert host.read_os_release([str(tmp_path / "missing"), str(fallback)]) == {"ID": "debian"}
    assert host.read_os_release([str(tmp_path / "missing")]) == {}


def test_package_versions_from_dpkg():
    if find_binary("dpkg-query") is None:
        pytest.skip("needs dpkg-query")
    version = (
        subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "postfix"], stdout=subprocess.PIPE, text=True, check=False
        ).stdout
        or None
    )
    versions = host.package_versions(["postfix", "cyrus-sasl-plain", "postfix"], run_subprocess)
    assert versions == {"postfix": version, "cyrus-sasl-plain": None}
    assert host.package_versions([], run_subprocess) == {}


def test_package_versions_count_removed_but_configured_packages_as_missing(tmp_path):
    """dpkg's "rc" (removed, configuration kept) is not installed."""
    script = tmp_path / "dpkg-query"
    script.write_text('#!/bin/sh\nprintf "postfix\\trc \\t3.7.11\\nca-certificates\\tii \\t20230311\\n"\n')
    script.chmod(0o755)

    def runner(cmd):
        return run_subprocess([str(script)] + cmd[1:])

    assert host.package_versions(["postfix", "ca-certificates"], runner) == {
        "postfix": None,
        "ca-certificates": "20230311",
    }


SEMANAGE_PORTS = """SELinux Port Type              Proto    Port Number

smtp_port_t                    tcp      2525, 465, 587, 25
smtp_port_t                    udp      25
ssh_port_t                     tcp      22
xserver_port_t                 tcp      6000-6020
"""


def test_port_labels_from_semanage():
    assert host.parse_port_labels(SEMANAGE_PORTS) == [25, 465, 587, 2525]
    assert host.parse_port_labels(SEMANAGE_PORTS, "xserver_port_t") == list(range(6000, 6021))
    assert host.parse_port_labels("") == []


def test_selinux_mode_from_selinuxfs(tmp_path):
    enforce = tmp_path / "enforce"
    assert host.selinux_mode(str(enforce)) == "disabled"
    enforce.write_text("1\n")
    assert host.selinux_mode(str(enforce)) == "enforcing"
    enforce.write_text("0\n")
    assert host.selinux_mode(str(enforce)) == "permissive"


def test_oauth2_accounts_are_the_config_file_names(tmp_path):
    assert host.oauth2_accounts(str(tmp_path / "missing")) == []
    for name in ("relay.json", "smtp_office365_com_587.json", ".relay.json.tmp", "notes.txt"):
        (tmp_path / name).write_text("{}")
    assert host.oauth2_accounts(str(tmp_path)) == ["relay", "smtp_office365_com_587"]
