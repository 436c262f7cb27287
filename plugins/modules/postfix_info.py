#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2025, smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postfix_info
short_description: Report whether and which Postfix is installed and what it supports
version_added: 0.1.0
author: "smarthost.postfix maintainers (@smarthost)"
description:
  - Reports the Postfix version, its default lookup table type, the table types it supports and
    which TLS protocol syntax it takes.
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
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import (
    Postfix,
    PostfixError,
    describe,
    module_runner,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            config_dir=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    try:
        facts = describe(Postfix(module.params['config_dir'], runner=module_runner(module)))
    except PostfixError as exc:
        module.fail_json(msg=str(exc), cmd=exc.cmd, rc=exc.rc, stderr=exc.stderr)
    module.exit_json(changed=False, **facts)


if __name__ == '__main__':
    main()
