#!/usr/bin/python
# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postfix_config
short_description: Apply main.cf, master.cf and lookup tables as one change that postfix check must accept
version_added: 0.1.0
author: "smarthost.postfix maintainers (@smarthost)"
description:
  - Brings C(main.cf) parameters, C(master.cf) services, SASL password maps and other lookup tables
    of one Postfix instance to the requested state in a single task, and treats them as one change.
  - Everything is compared first, so a run that changes nothing writes nothing and reports
    C(changed=false), and bad input fails before any file is touched.
  - When something changes, each file about to change is copied aside (in a private directory
    next to it), the tables are written and compiled, then C(main.cf) and C(master.cf). Then
    C(postfix check) must accept the result. If it does not, or any step fails, every file is put
    back as it was, byte for byte with its mode and owner, and the task fails with Postfix's own
    message. Postfix itself is never reloaded, so it keeps running the previous configuration.
  - The C(main.cf) and C(master.cf) side works like M(smarthost.postfix.postconf), the SASL maps
    like M(smarthost.postfix.sasl_map) and the other tables like M(smarthost.postfix.lookup_table)
    with O(smarthost.postfix.lookup_table#module:exclusive=true); the same code does the work.
  - A listed table holds exactly its entries (comments are kept). Compiled files that another table
    type left next to it (for example C(sasl_passwd.db) after a switch to V(lmdb), which would keep
    old passwords on disk) are removed once the change passed C(postfix check).
  - This is the module the P(smarthost.postfix.relay#role) role configures Postfix with, so a run
    that changes nothing costs one module call.
  - A run holds an exclusive lock on every directory it writes in, from the first read to the last
    rename, so two runs on one host take turns instead of losing each other's changes.
  - A run that was killed (SIGKILL, a lost connection) cannot clean up. The next run of any of this
    collection's configuring modules does. A change that had begun (the files were copied aside
    and a manifest written) is undone, every file put back as it was before it; temporary files
    and postmap directories it left are removed. A warning says what was done; check mode only
    reports it.
notes:
  - Supports check mode and diff mode. The diff shows every changed file; SASL passwords appear only
    as C(********), also when a username is the secret itself.
  - Passwords never appear in the module's output or messages.
  - Does not reload Postfix; notify a handler for that, and restart instead of reloading when
    RV(restart_needed) is true.
requirements:
  - Postfix (C(postconf), C(postmap), C(postfix)) on the managed host.
extends_documentation_fragment:
  - smarthost.postfix.postconf
options:
  config_dir:
    description:
      - Postfix configuration directory to work on (C(postconf -c), C(postfix -c)).
      - When omitted, Postfix's default configuration directory is used.
    type: path
  parameters:
    description:
      - C(main.cf) parameters as a dictionary of name to value, as in M(smarthost.postfix.postconf).
      - Values may be strings, numbers, booleans (written as C(yes)/C(no)) or lists (joined with
        C(", ")). A value of V(null) removes the parameter, so that Postfix's default applies.
      - Parameters not listed are left alone.
    type: dict
  sasl_maps:
    description:
      - SASL password maps (C(smtp_sasl_password_maps)); each holds exactly its O(sasl_maps[].entries).
      - Written root-only, mode C(0600), source and compiled map alike.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Path of the map's source file. Its directory must exist.
        type: path
        required: true
      type:
        description:
          - Lookup table type; when omitted, the host's C(default_database_type).
        type: str
        choices: [hash, lmdb, btree, cdb, texthash]
      entries:
        description: The map's entries, as in M(smarthost.postfix.sasl_map).
        type: list
        elements: dict
        default: []
        suboptions:
          key:
            description:
              - The next hop or sender the login is for, for example V([email-smtp.eu-west-1.amazonaws.com]:587).
            type: str
            required: true
          username:
            description: The SASL login name.
            type: str
            required: true
          password:
            description: The SASL password. Never shown.
            type: str
            required: true
  tables:
    description:
      - Other lookup tables (transport, generic, sender-dependent relay hosts, header checks, ...);
        each holds exactly its O(tables[].entries), in the given order.
      - Written owned by root, mode C(0644).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Path of the table's source file. Its directory must exist.
        type: path
        required: true
      type:
        description:
          - Lookup table type; when omitted, the host's C(default_database_type).
          - Indexed types are compiled with C(postmap); the others are read by Postfix directly.
        type: str
        choices: [hash, lmdb, btree, cdb, texthash, regexp, pcre, cidr]
      entries:
        description: The table's entries, as in M(smarthost.postfix.lookup_table).
        type: list
        elements: dict
        default: []
        suboptions:
          key:
            description: The lookup key (for V(regexp) and V(pcre), the pattern with delimiters and flags).
            type: str
            required: true
          value:
            description: The result, for example V(smtp:[relay.example.com]:587).
            type: str
            required: true
  check:
    description:
      - Run C(postfix check) after writing, and put every file back when it fails.
      - Turn off only for a configuration directory that is not a complete Postfix instance.
    type: bool
    default: true
  backup:
    description:
      - Keep a timestamped copy of every file that changes, next to it. Copies of SASL maps get no
        permission beyond C(0600).
      - The rollback on failure does not depend on this.
    type: bool
    default: false
  probe:
    description:
      - Before anything is written, log in to the relay with the new credentials without sending mail
        (as M(smarthost.postfix.relay_probe) does), whenever this change switches C(relayhost) or changes
        the SASL entry O(probe.key) of the first O(sasl_maps) item; a rotated key that the relay refuses,
        or a new relay that cannot be reached, fails the task with the cause and its remedy, and the
        previous configuration keeps relaying. Also in check mode, which then predicts the failure.
      - Without it nothing is probed.
    type: dict
    suboptions:
      key:
        description: The SASL map key whose login is probed (the relayhost, for example V([smtp.sendgrid.net]:587)).
        type: str
        required: true
      host:
        description: The relay's host name.
        type: str
        required: true
      port:
        description: The relay's port.
        type: int
        required: true
      tls:
        description: V(starttls) or V(implicit) (wrapper mode).
        type: str
        choices: [starttls, implicit]
        default: starttls
      verify:
        description: Verify the relay's certificate (as C(smtp_tls_security_level=secure) does).
        type: bool
        default: true
      ca_file:
        description: The CA bundle to verify against; default the OS bundle.
        type: path
attributes:
  check_mode:
    description: Plans every file and reports what would change; writes nothing and runs no C(postfix check).
    support: full
  diff_mode:
    description: Every changed file; SASL passwords are masked.
    support: full
  platform:
    description: Linux hosts with Postfix (Debian and Red Hat families); runs on the managed host.
    support: N/A
    platforms: posix
seealso:
  - module: smarthost.postfix.postconf
  - module: smarthost.postfix.sasl_map
  - module: smarthost.postfix.lookup_table
  - name: postfix(1)
    description: The C(postfix check) command that must accept the new configuration.
    link: https://www.postfix.org/postfix.1.html
"""

EXAMPLES = r"""
- name: Relay through Amazon SES, credentials and routing in one checked change
  smarthost.postfix.postfix_config:
    parameters:
      relayhost: "[email-smtp.eu-west-1.amazonaws.com]:587"
      smtp_sasl_auth_enable: true
      smtp_sasl_password_maps: lmdb:/etc/postfix/sasl_passwd
      smtp_sasl_security_options: noanonymous
      smtp_tls_security_level: secure
      transport_maps: lmdb:/etc/postfix/transport
    sasl_maps:
      - path: /etc/postfix/sasl_passwd
        type: lmdb
        entries:
          - key: "[email-smtp.eu-west-1.amazonaws.com]:587"
            username: AKIAEXAMPLE
            password: "{{ vault_ses_password }}"
    tables:
      - path: /etc/postfix/transport
        type: lmdb
        entries:
          - key: example.org
            value: "smtp:[smtp.sendgrid.net]:587"
  register: postfix_change
  notify: Reload or restart Postfix

- name: Enable TLS connection reuse (needs the tlsproxy service) in the same change
  smarthost.postfix.postfix_config:
    parameters:
      smtp_tls_connection_reuse: true
    services:
      - name: tlsproxy
        chroot: n
        maxproc: "0"
        command: tlsproxy
"""

RETURN = r"""
probed:
  description:
    - What the probe before the write found (O(probe)), when the change switched C(relayhost) or changed the
      probed login; V(ok), the V(cause) of a failure, the V(auth_mechanism) and whether it V(authenticated).
  returned: when probed
  type: dict
  sample: {ok: true, cause: null, auth_mechanism: PLAIN, authenticated: true}
changed_parameters:
  description: C(main.cf) parameter names that were (or in check mode would be) set or removed.
  returned: always
  type: list
  elements: str
  sample: [relayhost, smtp_sasl_auth_enable]
changed_services:
  description: C(master.cf) services that were (or would be) created, changed or removed, as C(name/type).
  returned: always
  type: list
  elements: str
  sample: [tlsproxy/unix]
tables:
  description:
    - Per table path, what changed (or would change) in it, the SASL maps included.
    - C(keys_updated) of a SASL map names keys whose username or password changed.
  returned: always
  type: dict
  sample:
    /etc/postfix/sasl_passwd:
      map: lmdb:/etc/postfix/sasl_passwd
      type: lmdb
      changed: true
      keys_added: ["[email-smtp.eu-west-1.amazonaws.com]:587"]
      keys_removed: []
      keys_updated: []
      compiled: true
removed_files:
  description: Compiled files of another table type next to a listed table, removed (or to be removed).
  returned: always
  type: list
  elements: str
  sample: [/etc/postfix/sasl_passwd.db]
restart_needed:
  description:
    - True when a changed parameter is read by master(8) only when it starts (C(inet_interfaces),
      C(inet_protocols)), so Postfix needs a restart rather than a reload.
  returned: always
  type: bool
  sample: false
checked:
  description: Whether C(postfix check) ran and accepted the new files (false when nothing was written).
  returned: always
  type: bool
  sample: true
backup_files:
  description: Backups made with O(backup=true).
  returned: always
  type: list
  elements: str
  sample: [/etc/postfix/main.cf.4242.2025-01-31@12:00:00~]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.smarthost.postfix.plugins.module_utils.module_support import (
    module_runner,
    run_and_exit,
    services_argument_spec,
)
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import SASL_MAP_TYPES, TABLE_TYPES
from ansible_collections.smarthost.postfix.plugins.module_utils.transaction import (
    apply_configuration,
    probe_before_write,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            config_dir=dict(type="path"),
            parameters=dict(type="dict"),
            services=services_argument_spec(),
            sasl_maps=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    path=dict(type="path", required=True),
                    type=dict(type="str", choices=list(SASL_MAP_TYPES)),
                    entries=dict(
                        type="list",
                        elements="dict",
                        default=[],
                        options=dict(
                            key=dict(type="str", required=True, no_log=False),
                            username=dict(type="str", required=True),
                            password=dict(type="str", required=True, no_log=True),
                        ),
                    ),
                ),
            ),
            tables=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    path=dict(type="path", required=True),
                    type=dict(type="str", choices=list(TABLE_TYPES)),
                    entries=dict(
                        type="list",
                        elements="dict",
                        default=[],
                        options=dict(
                            key=dict(type="str", required=True, no_log=False),
                            value=dict(type="str", required=True),
                        ),
                    ),
                ),
            ),
            allow_unknown=dict(type="bool", default=False),
            check=dict(type="bool", default=True),
            backup=dict(type="bool", default=False),
            probe=dict(
                type="dict",
                options=dict(
                    key=dict(type="str", required=True, no_log=False),
                    host=dict(type="str", required=True),
                    port=dict(type="int", required=True),
                    tls=dict(type="str", choices=["starttls", "implicit"], default="starttls"),
                    verify=dict(type="bool", default=True),
                    ca_file=dict(type="path"),
                ),
            ),
        ),
        supports_check_mode=True,
    )
    postfix = Postfix(module.params["config_dir"], runner=module_runner(module))
    run_and_exit(
        module,
        lambda: apply_configuration(
            postfix,
            parameters=module.params["parameters"],
            services=module.params["services"],
            sasl_maps=module.params["sasl_maps"],
            tables=module.params["tables"],
            allow_unknown=module.params["allow_unknown"],
            check=module.params["check"],
            check_mode=module.check_mode,
            backup=module.params["backup"],
            want_diff=module._diff,  # pylint: disable=protected-access
            before_write=probe_before_write(module.params["probe"], module.params["sasl_maps"]),
        ),
        path=postfix.config_dir or "/etc/postfix",
        postfix=postfix,
    )


if __name__ == "__main__":
    main()
