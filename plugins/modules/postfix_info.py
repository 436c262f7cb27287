#!/usr/bin/python
# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postfix_info
short_description: Report whether and which Postfix is installed, what it supports and how it runs
version_added: 0.1.0
author: "smarthost.postfix maintainers (@smarthost)"
description:
  - Reports the Postfix version, its default lookup table type, the table types it supports and
    which TLS protocol syntax it takes.
  - Also reports the few host facts a Postfix configuration depends on (OS family, fully
    qualified name), the installed versions of the packages named in O(packages) and whether the
    C(postfix) service runs and starts at boot. With these, the P(smarthost.postfix.relay#role)
    role needs no fact gathering, and skips its install and service steps where nothing is
    missing.
  - Read-only; never changes anything, so it is safe in check mode.
  - When Postfix is not installed it returns RV(installed=false) instead of failing, so a play
    can run in check mode against a host that does not have Postfix yet.
  - Works before C(main.cf) exists (Debian's "No configuration" install), using Postfix's
    built-in defaults.
notes:
  - Supports check mode.
options:
  config_dir:
    description:
      - Postfix configuration directory to ask about (C(postconf -c)).
      - When omitted, Postfix's default configuration directory.
    type: path
  packages:
    description:
      - Package names to look up in the host's package database (C(dpkg-query) or C(rpm)); RV(packages)
        gives each one's installed version.
      - Names the package database does not know are reported as not installed, so one list can
        name the packages of several distributions.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    description: Read-only; it runs the same in check mode.
    support: full
  diff_mode:
    description: Nothing changes.
    support: none
  platform:
    description: Linux hosts with Postfix (Debian and Red Hat families); runs on the managed host.
    support: N/A
    platforms: posix
seealso:
  - module: smarthost.postfix.postconf
"""

EXAMPLES = r"""
- name: Learn about the host's Postfix
  smarthost.postfix.postfix_info:
  register: postfix

- name: Use the TLS syntax this Postfix understands
  smarthost.postfix.postconf:
    parameters:
      smtp_tls_mandatory_protocols: >-
        {{ '>=TLSv1.2' if postfix.tls_min_version_syntax == 'modern' else '!SSLv2, !SSLv3, !TLSv1, !TLSv1.1' }}
  when: postfix.installed

- name: Learn which of the relay's packages are missing
  smarthost.postfix.postfix_info:
    packages: [postfix, libsasl2-modules, ca-certificates]
  register: postfix

- name: Install only what is missing
  ansible.builtin.package:
    name: "{{ postfix.packages | dict2items | rejectattr('value') | map(attribute='key') | list }}"
  when: postfix.packages.values() | reject | list | length > 0
"""

RETURN = r"""
installed:
  description: Whether C(postconf) was found.
  returned: always
  type: bool
  sample: true
mail_version:
  description: The Postfix version (C(mail_version)); null when not installed.
  returned: always
  type: str
  sample: 3.7.11
default_database_type:
  description: The effective C(default_database_type); null when not installed.
  returned: always
  type: str
  sample: hash
map_types:
  description: Lookup table types Postfix supports (C(postconf -m)); empty when not installed.
  returned: always
  type: list
  elements: str
  sample: [btree, cidr, hash, lmdb, pcre, regexp, texthash]
config_directory:
  description: The configuration directory asked about; null when not installed.
  returned: always
  type: str
  sample: /etc/postfix
tls_min_version_syntax:
  description:
    - V(modern) when Postfix (3.6 or later) accepts C(>=TLSv1.2) in C(*_tls_*protocols),
      V(legacy) when it needs the C(!SSLv2, !SSLv3, !TLSv1, !TLSv1.1) form; null when not installed.
  returned: always
  type: str
  sample: modern
relayhost:
  description:
    - The smarthost this host relays to now (C(postconf -h relayhost)); empty when main.cf sets
      none or does not exist, null when Postfix is not installed.
    - The relay role compares it with the planned relayhost to decide whether to probe a switch.
  returned: always
  type: str
  sample: "[email-smtp.eu-west-1.amazonaws.com]:587"
main_cf_exists:
  description:
    - Whether C(main.cf) exists in the configuration directory (Debian's "No configuration" install writes none).
  returned: always
  type: bool
  sample: true
inet_services:
  description:
    - The C(master.cf) services of type C(inet) (what Postfix listens on), each with its C(syslog_name)
      override or null; empty before C(main.cf) exists.
    - The relay role tells the submission services it created by their C(syslog_name), and refuses a
      submission port that another service already holds.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: smtp, syslog_name: null}
    - {name: "587", syslog_name: postfix/smarthost-submission}
unix_services:
  description:
    - The C(master.cf) services of type C(unix) (delivery agents and internal services), each with its
      C(syslog_name) override or null; empty before C(main.cf) exists.
    - The relay role tells the pacing clones it created (C(smtp_pace1), ...) by their C(syslog_name), and
      removes those the current pacing no longer uses.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: smtp, syslog_name: null}
    - {name: smtp_pace1, syslog_name: postfix/smtp_pace1}
os_family:
  description:
    - V(Debian) or V(RedHat) for the distributions of those families (from C(/etc/os-release) C(ID)
      and C(ID_LIKE), as Ansible's C(ansible_os_family) fact names them), otherwise the C(ID) itself;
      null without an os-release file.
  returned: always
  type: str
  sample: Debian
fqdn:
  description: The host's fully qualified name, as Ansible's C(ansible_fqdn) fact finds it.
  returned: always
  type: str
  sample: relay1.example.com
domain:
  description: What follows the first dot of RV(fqdn); empty for a bare host name.
  returned: always
  type: str
  sample: example.com
packages:
  description:
    - Each name of O(packages) with its installed version, or null when it is not installed.
    - Empty when the host has neither C(dpkg-query) nor C(rpm).
  returned: always
  type: dict
  sample:
    postfix: 3.7.11-0+deb12u1
    libsasl2-modules: 2.1.28+dfsg-10
    postfix-lmdb: null
selinux:
  description: V(enforcing), V(permissive) or V(disabled) (no SELinux file system mounted).
  returned: always
  type: str
  sample: enforcing
selinux_smtp_ports:
  description:
    - The TCP ports SELinux labels C(smtp_port_t), which Postfix's smtp client may connect to; null
      without SELinux or without C(semanage) (policycoreutils-python-utils).
  returned: always
  type: list
  elements: int
  sample: [25, 465, 587]
oauth2_accounts:
  description:
    - The OAuth 2.0 relay accounts configured on this host by the relay role (the names of the files
      in C(/etc/smarthost-postfix/oauth2/), never their content).
  returned: always
  type: list
  elements: str
  sample: [relay]
firewalld:
  description:
    - Whether the C(firewalld) systemd unit is active and enabled; null where systemd does not run.
  returned: always
  type: dict
  sample: {active: true, enabled: true}
service:
  description:
    - Whether the C(postfix) systemd unit is active and enabled at boot; null where systemd does
      not run (then nothing is known).
  returned: always
  type: dict
  sample:
    active: true
    enabled: true
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.smarthost.postfix.plugins.module_utils.host import describe_host
from ansible_collections.smarthost.postfix.plugins.module_utils.module_support import module_runner
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix, PostfixError, describe


def main():
    module = AnsibleModule(
        argument_spec=dict(
            config_dir=dict(type="path"),
            packages=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    runner = module_runner(module)
    try:
        facts = describe(Postfix(module.params["config_dir"], runner=runner))
    except PostfixError as exc:
        module.fail_json(msg=str(exc), cmd=exc.cmd, rc=exc.rc, stderr=exc.stderr)
    facts.update(describe_host(module.params["packages"], runner))
    module.exit_json(changed=False, **facts)


if __name__ == "__main__":
    main()
