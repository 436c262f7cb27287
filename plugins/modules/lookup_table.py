#!/usr/bin/python
# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lookup_table
short_description: Manage a Postfix lookup table file and its compiled map
version_added: 0.1.0
author: "smarthost.postfix maintainers (@smarthost)"
description:
  - Manages one Postfix lookup table, such as C(transport), C(generic), C(sender_canonical),
    C(sender_dependent_relayhost), an C(access) table or C(header_checks).
  - Indexed types (V(hash), V(btree), V(lmdb), V(cdb)) are compiled with C(postmap); the compiled
    map is built in a private directory and renamed into place with the file's mode, and rebuilt
    when it is missing or holds other entries than the source (read back with C(postmap -s)) even
    if no entry changed.
    V(texthash), V(regexp), V(pcre) and V(cidr) tables are read by Postfix directly and only written.
  - The source file is written atomically (temporary file in the same directory, then rename),
    owned by root, with O(mode).
  - Comments and entries not listed are kept (unless O(exclusive=true)); changed entries keep
    their place and new entries are appended.
  - For the first-match types V(regexp), V(pcre) and V(cidr) the order of entries matters; with
    O(exclusive=true) the file holds exactly O(entries), in the given order.
  - For passwords use M(smarthost.postfix.sasl_map), which never shows values.
notes:
  - Supports check mode and diff mode.
  - A missing table is created, even when it ends up empty, so that Postfix can open it.
  - Postfix looks keys up case-insensitively in indexed tables, so keys that differ only in case
    are the same entry there.
  - C(if)/C(endif) blocks of regexp and pcre tables are not supported.
requirements:
  - Postfix (C(postconf), C(postmap)) on the managed host.
options:
  path:
    description:
      - Path of the table source file. Its directory must exist.
    type: path
    required: true
  type:
    description:
      - Lookup table type.
      - When omitted, the host's C(default_database_type) (C(postconf -h default_database_type)).
      - The type must be one C(postconf -m) lists (V(lmdb), V(cdb) and V(pcre) are separate
        packages on some distributions).
    type: str
    choices: [hash, lmdb, btree, cdb, texthash, regexp, pcre, cidr]
  entries:
    description:
      - Table entries in the order they should appear.
    type: list
    elements: dict
    suboptions:
      key:
        description:
          - The lookup key. For V(regexp) and V(pcre) the pattern with its delimiters and flags,
            for example V(/^Received:.*internal/); for V(cidr) an address or network.
          - Must not be empty or contain line breaks; keys of other types cannot contain whitespace.
        type: str
        required: true
      value:
        description:
          - The result, for example V(smtp:[relay.example.com]:587) or the action V(IGNORE).
          - Required with O(state=present). Leading and trailing whitespace is dropped, as
            C(postmap) does.
        type: str
  state:
    description:
      - V(present) adds or updates the listed entries; V(absent) removes the listed keys and needs
        no O(entries[].value).
    type: str
    choices: [present, absent]
    default: present
  exclusive:
    description:
      - With O(state=present), remove every entry whose key is not listed.
    type: bool
    default: false
  mode:
    description:
      - Octal permissions of the source file and the compiled map, for example V("0640").
    type: str
    default: "0644"
  config_dir:
    description:
      - Postfix configuration directory whose settings C(postconf) and C(postmap) use (C(-c)).
    type: path
  backup:
    description:
      - Before changing the source file, keep a timestamped copy next to it with the same mode.
    type: bool
    default: false
attributes:
  check_mode:
    description: Reports what would change and writes nothing.
    support: full
  diff_mode:
    description: The table's lines before and after; the compiled map is not diffed.
    support: full
  platform:
    description: Linux hosts with Postfix (Debian and Red Hat families); runs on the managed host.
    support: N/A
    platforms: posix
seealso:
  - module: smarthost.postfix.sasl_map
  - module: smarthost.postfix.postconf
  - name: Postfix lookup table types
    description: Which table types exist and how Postfix searches them.
    link: https://www.postfix.org/DATABASE_README.html
"""

EXAMPLES = r"""
- name: Route one domain through a second smarthost
  smarthost.postfix.lookup_table:
    path: /etc/postfix/transport
    entries:
      - key: example.org
        value: "smtp:[smtp.sendgrid.net]:587"
  register: transport

- name: Sender-dependent relay hosts, nothing else
  smarthost.postfix.lookup_table:
    path: /etc/postfix/sender_dependent_relayhost
    type: lmdb
    exclusive: true
    entries:
      - key: "@example.com"
        value: "[email-smtp.eu-west-1.amazonaws.com]:587"
      - key: "@example.org"
        value: "[smtp.sendgrid.net]:587"

- name: Strip internal Received headers (first match wins, order kept)
  smarthost.postfix.lookup_table:
    path: /etc/postfix/header_checks
    type: regexp
    exclusive: true
    entries:
      - key: "/^Received:.*\\.internal\\.example/"
        value: IGNORE
      - key: "/^X-Originating-IP:/"
        value: IGNORE

- name: Remove one rewrite
  smarthost.postfix.lookup_table:
    path: /etc/postfix/generic
    state: absent
    entries:
      - key: root@host.internal.example
"""

RETURN = r"""
map:
  description: The table as Postfix refers to it, C(type:path).
  returned: success
  type: str
  sample: hash:/etc/postfix/transport
type:
  description: The table type used.
  returned: success
  type: str
  sample: hash
keys_added:
  description: Keys that were (or would be) added.
  returned: success
  type: list
  elements: str
  sample: [example.org]
keys_removed:
  description: Keys that were (or would be) removed.
  returned: success
  type: list
  elements: str
  sample: []
keys_updated:
  description: Keys whose value was (or would be) changed.
  returned: success
  type: list
  elements: str
  sample: []
compiled:
  description: Whether C(postmap) rebuilt (or would rebuild) the compiled map; always false for types read as text.
  returned: success
  type: bool
  sample: true
backup_file:
  description: Path of the backup of the source file, when one was made.
  returned: success
  type: str
  sample: /etc/postfix/transport.4242.2025-01-31@12:00:00~
"""

import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.smarthost.postfix.plugins.module_utils.maps import (
    manage_table,
    resolve_map_type,
    table_entries,
)
from ansible_collections.smarthost.postfix.plugins.module_utils.module_support import module_runner, run_and_exit
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import TABLE_TYPES


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            type=dict(type="str", choices=list(TABLE_TYPES)),
            entries=dict(
                type="list",
                elements="dict",
                options=dict(
                    key=dict(type="str", required=True, no_log=False),
                    value=dict(type="str"),
                ),
            ),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            exclusive=dict(type="bool", default=False),
            mode=dict(type="str", default="0644"),
            config_dir=dict(type="path"),
            backup=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    if not re.match(r"^0?[0-7]{3,4}$", module.params["mode"]):
        module.fail_json(msg='mode must be octal permissions such as "0644", got %r' % module.params["mode"])
    postfix = Postfix(module.params["config_dir"], runner=module_runner(module))

    def work():
        map_type = resolve_map_type(postfix, module.params["type"])
        pairs = table_entries(module.params["entries"] or [], map_type, module.params["state"])
        return manage_table(
            postfix,
            module.params["path"],
            map_type,
            pairs,
            state=module.params["state"],
            exclusive=module.params["exclusive"],
            mode=int(module.params["mode"], 8),
            check_mode=module.check_mode,
            backup=module.params["backup"],
            want_diff=module._diff,  # pylint: disable=protected-access
        )

    run_and_exit(module, work, path=module.params["path"], postfix=postfix)


if __name__ == "__main__":
    main()
