# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What postfix_info reports about the host around Postfix: OS family, name, packages, service.

These few facts let the relay role plan and skip its install and service steps without a
full fact gathering, which costs more than the rest of a no-op run together.
"""

from __future__ import annotations

import os
import shlex
import socket

from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import find_binary

# os-release IDs (ID and ID_LIKE) of the families the relay role knows.
OS_FAMILIES = (
    ("Debian", ("debian", "ubuntu")),
    ("RedHat", ("rhel", "fedora", "centos", "rocky", "almalinux", "ol", "amzn")),
)
OS_RELEASE_FILES = ("/etc/os-release", "/usr/lib/os-release")


def parse_os_release(text):
    """KEY=value lines of os-release(5), shell-quoted values unquoted."""
    fields = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value]
        fields[key] = " ".join(words)
    return fields


def os_family(fields):
    """'Debian' or 'RedHat' from os-release fields, else the ID as os-release spells it (or None)."""
    ids = [fields.get("ID", "").lower()] + fields.get("ID_LIKE", "").lower().split()
    for family, members in OS_FAMILIES:
        if any(item in members for item in ids):
            return family
    return fields.get("ID") or None


def read_os_release(paths=OS_RELEASE_FILES):
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return parse_os_release(handle.read())
        except FileNotFoundError:
            continue
    return {}


def host_names():
    """(fqdn, domain) as Ansible's facts derive them: socket.getfqdn() and what follows its first dot."""
    fqdn = socket.getfqdn()
    return fqdn, fqdn.partition(".")[2]


def package_versions(names, runner):
    """{name: installed version or None} from dpkg or rpm, whichever the host has; {} with neither.

    Names the package database does not know count as not installed.
    """
    names = sorted(set(names or []))
    if not names:
        return {}
    versions = dict.fromkeys(names)
    dpkg_query = find_binary("dpkg-query")
    if dpkg_query:
        # Exit status 1 only says that some name is unknown; the known ones are still printed.
        _rc, out, _err = runner([dpkg_query, "-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Version}\n"] + names)
        for line in out.splitlines():
            fields = line.split("\t")
            if len(fields) == 3 and fields[0] in versions and fields[1].startswith("ii"):
                versions[fields[0]] = fields[2]
        return versions
    rpm = find_binary("rpm")
    if rpm:
        _rc, out, _err = runner([rpm, "-q", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n"] + names)
        for line in out.splitlines():
            fields = line.split("\t")
            if len(fields) == 2 and fields[0] in versions:
                versions[fields[0]] = fields[1]
        return versions
    return {}


def service_state(unit, runner):
    """{'active': bool, 'enabled': bool} of a systemd unit, or None where systemd does not answer.

    The same properties ansible.builtin.service reads, so the role can skip that task exactly
    when it would change nothing.
    """
    systemctl = find_binary("systemctl")
    if not systemctl or not os.path.isdir("/run/systemd/system"):
        return None
    rc, out, _err = runner([systemctl, "show", unit, "--property=LoadState,ActiveState,UnitFileState"])
    if rc != 0:
        return None
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    if props.get("LoadState") != "loaded":
        return {"active": False, "enabled": False}
    return {"active": props.get("ActiveState") == "active", "enabled": props.get("UnitFileState") == "enabled"}


SELINUX_ENFORCE = "/sys/fs/selinux/enforce"
# Where the relay role keeps the configuration of each OAuth 2.0 relay account (one JSON file each).
OAUTH2_CONFIG_DIR = "/etc/smarthost-postfix/oauth2"


def oauth2_accounts(directory=OAUTH2_CONFIG_DIR):
    """Names of the OAuth 2.0 accounts configured on this host (file names only, never their content)."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(name[: -len(".json")] for name in names if name.endswith(".json") and not name.startswith("."))


def selinux_mode(enforce_path=SELINUX_ENFORCE):
    """'enforcing', 'permissive' or 'disabled' (no selinuxfs mounted: no SELinux at all)."""
    try:
        with open(enforce_path, encoding="ascii") as handle:
            return "enforcing" if handle.read().strip() == "1" else "permissive"
    except FileNotFoundError:
        return "disabled"


def parse_port_labels(text, port_type="smtp_port_t"):
    """TCP ports `semanage port -l` gives port_type, ranges expanded where they are small."""
    ports = set()
    for line in text.splitlines():
        fields = line.split(None, 2)
        if len(fields) < 3 or fields[0] != port_type or fields[1] != "tcp":
            continue
        for item in fields[2].replace(" ", "").split(","):
            low, _dash, high = item.partition("-")
            if low.isdigit() and (not high or high.isdigit()):
                start, end = int(low), int(high or low)
                ports.update(range(start, min(end, start + 1023) + 1))
    return sorted(ports)


def selinux_smtp_ports(runner):
    """Ports SELinux lets Postfix's smtp client connect to, or None where semanage is not installed."""
    semanage = find_binary("semanage")
    if semanage is None:
        return None
    rc, out, _err = runner([semanage, "port", "-l"])
    return parse_port_labels(out) if rc == 0 else None


def describe_host(packages, runner):
    """The host facts postfix_info returns beside the Postfix ones."""
    fqdn, domain = host_names()
    selinux = selinux_mode()
    return {
        "os_family": os_family(read_os_release()),
        "fqdn": fqdn,
        "domain": domain,
        "packages": package_versions(packages, runner),
        "service": service_state("postfix", runner),
        "selinux": selinux,
        "selinux_smtp_ports": selinux_smtp_ports(runner) if selinux != "disabled" else None,
        "firewalld": service_state("firewalld", runner),
        "oauth2_accounts": oauth2_accounts(),
    }
