#!/usr/bin/python
# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postconf
short_description: Manage Postfix main.cf parameters and master.cf services with postconf
version_added: 0.1.0
author: "smarthost.postfix maintainers (@smarthost)"
description:
  - Sets and removes C(main.cf) parameters and manages C(master.cf) service entries and their
    C(-o) overrides through Postfix's own C(postconf) command, never by editing text.
  - Compares the requested state with what C(main.cf) actually holds (C(postconf -n)), so a run
    that changes nothing reports C(changed=false) and writes nothing.
  - All C(main.cf) assignments of one task are applied in a single C(postconf -e) invocation and
    all removals in a single C(postconf -X). C(master.cf) edits use C(postconf -M), C(-MX), C(-F),
    C(-P) and C(-PX), at most one invocation of each.
  - Postfix itself only warns about parameter names it does not know, at run time. This module
    fails instead, naming them, unless O(allow_unknown=true).
  - If C(main.cf) does not exist yet (for example Debian's "No configuration" install), an empty
    one is created first.
  - Everything, parameters and services, is validated before the first write. Should C(postconf)
    still refuse an edit after an earlier one of the same task was applied, the task fails with
    C(changed=true) and a message naming what was applied.
  - Warnings C(postconf) prints (for example C(unused parameter)) are passed on as task warnings.
  - Runs on one host take turns (an exclusive lock on the configuration directory), and what a
    killed run of any of this collection's modules left there is finished first (see
    M(smarthost.postfix.postfix_config)).
notes:
  - Supports check mode and diff mode. The diff shows before and after of exactly the
    C(main.cf) lines and C(master.cf) entries that change.
  - Does not reload Postfix; notify a handler for that.
requirements:
  - Postfix (C(postconf)) on the managed host.
extends_documentation_fragment:
  - smarthost.postfix.postconf
options:
  config_dir:
    description:
      - Postfix configuration directory to work on (C(postconf -c)), for example a second
        Postfix instance.
      - When omitted, Postfix's default configuration directory is used.
    type: path
  parameters:
    description:
      - C(main.cf) parameters as a dictionary of name to value.
      - Values may be strings, numbers, booleans (written as C(yes)/C(no)) or lists (joined with
        C(", ")). Whitespace runs are collapsed to one space, as Postfix itself prints values.
      - A value with a line break inside it (also U+2028 and the others some readers take for one)
        or a NUL is refused. Folded into one line, a relayhost of V([a]:587), a line break and
        V(smtp_tls_security_level = none) would become a relayhost of junk next hops. Use a list for a
        multi-line value; white space at the ends, such as the last newline of a YAML block, is dropped.
      - A value of V(null) removes the parameter from C(main.cf), so that Postfix's default applies.
      - With O(state=absent), the listed names are removed and their values are ignored.
    type: dict
  state:
    description:
      - Whether the names in O(parameters) should be set (V(present)) or removed (V(absent)).
      - Applies to O(parameters) only; each service has its own O(services[].state).
    type: str
    choices: [present, absent]
    default: present
  backup:
    description:
      - Before changing C(main.cf) or C(master.cf), keep a timestamped copy of it next to it.
    type: bool
    default: false
attributes:
  check_mode:
    description: Reports what would change and runs no writing C(postconf).
    support: full
  diff_mode:
    description: Before and after of exactly the parameters and services it changes.
    support: full
  platform:
    description: Linux hosts with Postfix (Debian and Red Hat families); runs on the managed host.
    support: N/A
    platforms: posix
seealso:
  - name: postconf(1)
    description: Postfix configuration utility.
    link: https://www.postfix.org/postconf.1.html
  - name: master(5)
    description: The master.cf file format.
    link: https://www.postfix.org/master.5.html
  - module: smarthost.postfix.postfix_info
"""

EXAMPLES = r"""
- name: Relay all mail through Amazon SES with SASL and verified TLS
  smarthost.postfix.postconf:
    parameters:
      relayhost: "[email-smtp.eu-west-1.amazonaws.com]:587"
      smtp_sasl_auth_enable: true
      smtp_sasl_password_maps: hash:/etc/postfix/sasl_passwd
      smtp_sasl_security_options: noanonymous
      smtp_tls_security_level: secure
      smtp_tls_mandatory_protocols: ">=TLSv1.2"
      smtp_tls_CAfile: /etc/ssl/certs/ca-certificates.crt
      inet_interfaces: loopback-only
      mydestination: []
  notify: Reload postfix

- name: Define a named smtp transport with its own relayhost, and enable tlsproxy
  smarthost.postfix.postconf:
    services:
      - name: ses_relay
        chroot: n
        command: smtp
        options:
          relayhost: "[email-smtp.eu-west-1.amazonaws.com]:587"
      - name: tlsproxy
        chroot: y
        maxproc: "0"
        command: tlsproxy
    parameters:
      ses_relay_destination_rate_delay: 1s
      smtp_tls_connection_reuse: true

- name: Remove the -o smtp_fallback_relay= override from the relay service
  smarthost.postfix.postconf:
    services:
      - name: relay
        options:
          smtp_fallback_relay: null

- name: Remove parameters, keeping a backup of main.cf
  smarthost.postfix.postconf:
    parameters:
      fallback_relay:
      smtp_fallback_relay:
    state: absent
    backup: true

- name: Manage a second instance
  smarthost.postfix.postconf:
    config_dir: /etc/postfix-out
    parameters:
      myhostname: out.example.com
"""

RETURN = r"""
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
  sample: [ses_relay/unix, relay/unix]
backup_files:
  description: Backups made before changing a file, keyed C(main_cf) and C(master_cf); only files that were backed up.
  returned: always
  type: dict
  sample:
    main_cf: /etc/postfix/main.cf.4242.2025-01-31@12:00:00~
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.smarthost.postfix.plugins.module_utils.config_plan import configure
from ansible_collections.smarthost.postfix.plugins.module_utils.module_support import (
    module_runner,
    run_and_exit,
    services_argument_spec,
)
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix


def main():
    module = AnsibleModule(
        argument_spec=dict(
            config_dir=dict(type="path"),
            parameters=dict(type="dict"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            services=services_argument_spec(),
            allow_unknown=dict(type="bool", default=False),
            backup=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    postfix = Postfix(module.params["config_dir"], runner=module_runner(module))
    run_and_exit(
        module,
        lambda: configure(
            postfix,
            parameters=module.params["parameters"],
            state=module.params["state"],
            services=module.params["services"],
            allow_unknown=module.params["allow_unknown"],
            check_mode=module.check_mode,
            backup=module.backup_local if module.params["backup"] else None,
        ),
        postfix=postfix,
    )


if __name__ == "__main__":
    main()
