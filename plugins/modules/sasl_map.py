#!/usr/bin/python
# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sasl_map
short_description: Manage the Postfix SASL password map safely
version_added: 0.1.0
author: "smarthost.postfix maintainers (@smarthost)"
description:
  - Manages the table Postfix's SMTP client looks up SASL credentials in
    (C(smtp_sasl_password_maps)), with one C(username:password) value per relay or sender key.
  - The source file and the compiled map are owned by root, mode C(0600), and written
    atomically; the compiled map is built with C(postmap) in a private directory and
    renamed into place, so it is never readable by others, not even briefly.
  - The compiled map is rebuilt when it is missing or holds other entries than the source (read back
    with C(postmap -s)), even if no entry changed; that alone reports C(changed=true). File times do
    not count; a map older than its source but built from it is current.
  - Runs on one host take turns (an exclusive lock on the map's directory), and what a killed run
    left there (a temporary copy of the map, a postmap directory, an unfinished change of
    M(smarthost.postfix.postfix_config)) is finished first, with a warning.
  - Works before C(main.cf) exists (Debian's "No configuration" install); C(postmap) then runs with
    Postfix's built-in defaults.
  - Passwords never appear in the module's output, diff, warnings or errors. The diff shows
    C(key username:********). A line of the map that is not a SASL entry (for example a password
    broken onto a line of its own) is shown by its line number only.
  - All entries are validated before anything is written.
  - Comments and entries not listed are kept (unless O(exclusive=true)); new entries are appended.
notes:
  - Supports check mode and diff mode.
  - A missing table is created, even when it ends up empty, so that Postfix can open the map
    that C(smtp_sasl_password_maps) names.
  - In the diff, comment lines that look like commented-out entries are masked as well.
  - The result's RV(map) is exactly what belongs in C(smtp_sasl_password_maps).
  - Postfix looks keys up case-insensitively in indexed tables, so keys that differ only in case
    are the same entry.
requirements:
  - Postfix (C(postconf), C(postmap)) on the managed host.
options:
  path:
    description:
      - Path of the table source file. The compiled map is created next to it.
      - Its directory must exist.
    type: path
    default: /etc/postfix/sasl_passwd
  entries:
    description:
      - Credentials, one per lookup key.
    type: list
    elements: dict
    suboptions:
      key:
        description:
          - The lookup key, as Postfix looks it up. One of C([host]:port), C([host]),
            C(host:port), C(host) (the next hop as in C(relayhost)), or C(user@domain) and
            C(@domain) for sender-dependent authentication.
          - C(host) is a DNS name or an IPv4 address; IPv6 addresses only inside brackets.
            A port is a number from 1 to 65535.
        type: str
        required: true
      username:
        description:
          - The SASL username. Must not be empty or contain C(:), whitespace, control characters or NUL.
          - Required with O(state=present).
        type: str
      password:
        description:
          - The SASL password. Must not be empty, contain a line break (also U+2028, U+2029, U+0085,
            U+001C-U+001E, C(\v), C(\f), which some readers take for one), NUL or another control
            character, or start or end with whitespace.
          - Every password accepted reads back through C(postmap -q) exactly as given.
          - Required with O(state=present).
        type: str
  state:
    description:
      - V(present) adds or updates the listed entries; V(absent) removes the listed keys and needs
        no O(entries[].username) or O(entries[].password).
    type: str
    choices: [present, absent]
    default: present
  exclusive:
    description:
      - With O(state=present), remove every entry whose key is not listed.
    type: bool
    default: false
  update_password:
    description:
      - V(always) writes the given password for existing keys; V(on_create) only sets passwords of
        new keys and keeps the password of an existing key (its username is still updated).
    type: str
    choices: [always, on_create]
    default: always
  type:
    description:
      - Lookup table type. V(texthash) is read by Postfix directly and not compiled.
      - When omitted, the host's C(default_database_type) (C(postconf -h default_database_type)),
        which is V(lmdb) on hosts without Berkeley DB such as RHEL 10.
      - The type must be one C(postconf -m) lists.
    type: str
    choices: [hash, lmdb, btree, cdb, texthash]
  config_dir:
    description:
      - Postfix configuration directory whose settings C(postconf) and C(postmap) use (C(-c)).
    type: path
  backup:
    description:
      - Before changing the source file, keep a timestamped copy next to it, mode C(0600).
    type: bool
    default: false
attributes:
  check_mode:
    description: Reports what would change and writes nothing.
    support: full
  diff_mode:
    description: Before and after with every password masked.
    support: full
  platform:
    description: Linux hosts with Postfix (Debian and Red Hat families); runs on the managed host.
    support: N/A
    platforms: posix
seealso:
  - module: smarthost.postfix.lookup_table
  - module: smarthost.postfix.postconf
  - name: Postfix SASL README
    description: Enabling SASL authentication in the Postfix SMTP client.
    link: https://www.postfix.org/SASL_README.html#client_sasl_enable
"""

EXAMPLES = r"""
- name: Credentials for the smarthost
  smarthost.postfix.sasl_map:
    entries:
      - key: "[email-smtp.eu-west-1.amazonaws.com]:587"
        username: AKIAEXAMPLE
        password: "{{ vault_ses_smtp_password }}"
  register: sasl

- name: Point Postfix at the map
  smarthost.postfix.postconf:
    parameters:
      smtp_sasl_password_maps: "{{ sasl.map }}"

- name: Sender-dependent credentials; drop every other entry
  smarthost.postfix.sasl_map:
    path: /etc/postfix/sender_sasl_passwd
    type: lmdb
    exclusive: true
    entries:
      - key: "@example.com"
        username: relay-example
        password: "{{ vault_example_password }}"
      - key: billing@example.org
        username: billing
        password: "{{ vault_billing_password }}"

- name: Remove credentials of a retired relay
  smarthost.postfix.sasl_map:
    state: absent
    entries:
      - key: "[smtp.old-relay.example]:587"
"""

RETURN = r"""
map:
  description: The table as Postfix refers to it, C(type:path); the value for C(smtp_sasl_password_maps).
  returned: success
  type: str
  sample: hash:/etc/postfix/sasl_passwd
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
  sample: ["[email-smtp.eu-west-1.amazonaws.com]:587"]
keys_removed:
  description: Keys that were (or would be) removed.
  returned: success
  type: list
  elements: str
  sample: []
keys_updated:
  description: Keys whose username or password was (or would be) changed.
  returned: success
  type: list
  elements: str
  sample: []
compiled:
  description: Whether C(postmap) rebuilt (or would rebuild) the compiled map.
  returned: success
  type: bool
  sample: true
backup_file:
  description: Path of the backup of the source file, when one was made.
  returned: success
  type: str
  sample: /etc/postfix/sasl_passwd.4242.2025-01-31@12:00:00~
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.smarthost.postfix.plugins.module_utils.maps import manage_table, resolve_map_type
from ansible_collections.smarthost.postfix.plugins.module_utils.module_support import (
    module_runner,
    run_and_exit,
)
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import SASL_MAP_TYPES
from ansible_collections.smarthost.postfix.plugins.module_utils.sasl import keep_password, sasl_entries, sasl_masks


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/postfix/sasl_passwd"),
            entries=dict(
                type="list",
                elements="dict",
                options=dict(
                    key=dict(type="str", required=True, no_log=False),
                    username=dict(type="str"),
                    password=dict(type="str", no_log=True),
                ),
            ),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            exclusive=dict(type="bool", default=False),
            update_password=dict(type="str", default="always", choices=["always", "on_create"], no_log=False),
            type=dict(type="str", choices=list(SASL_MAP_TYPES)),
            config_dir=dict(type="path"),
            backup=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    entries = module.params["entries"] or []

    postfix = Postfix(module.params["config_dir"], runner=module_runner(module))

    def work():
        pairs = sasl_entries(entries, module.params["state"])
        map_type = resolve_map_type(postfix, module.params["type"])
        return manage_table(
            postfix,
            module.params["path"],
            map_type,
            pairs,
            state=module.params["state"],
            exclusive=module.params["exclusive"],
            mode=0o600,
            check_mode=module.check_mode,
            backup=module.params["backup"],
            merge=keep_password if module.params["update_password"] == "on_create" else None,
            diff_masks=sasl_masks,
            want_diff=module._diff,  # pylint: disable=protected-access
        )

    run_and_exit(module, work, path=module.params["path"], postfix=postfix)


if __name__ == "__main__":
    main()
