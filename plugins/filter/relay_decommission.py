# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: relay_decommission
author: "smarthost.postfix maintainers (@smarthost)"
version_added: 0.1.0
short_description: What undoes a relay plan, for a host that stops relaying
description:
  - Turns the result of P(smarthost.postfix.relay_plan#filter) for a host into what the relay role applies
    with O(relay_state=absent) on that host.
  - Every main.cf parameter the plan owns goes back to Postfix's default, except those of a local-only
    Postfix (loopback only, local delivery with an alias database, every other destination refused
    by the C(error) transport, as Debian's "Local only" configuration).
  - Every master.cf service the plan adds is removed; every map the plan writes, with what postmap
    compiled from it and the names of its backups, is listed for removal, since those files hold the
    relays' logins.
options:
  _input:
    description:
      - The result of P(smarthost.postfix.relay_plan#filter) for the same settings, presets and facts.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Plan what stops relaying on this host
  ansible.builtin.set_fact:
    undo: "{{ plan | smarthost.postfix.relay_decommission }}"
"""

RETURN = r"""
_value:
  description: What the role applies to stop relaying.
  type: dict
  contains:
    main_cf:
      description:
        - main.cf parameters for O(smarthost.postfix.postfix_config#module:parameters); V(null) removes one.
      type: dict
      sample: {relayhost: null, inet_interfaces: loopback-only, default_transport: "error:..."}
    master_services:
      description: The services the plan adds, each with V(state=absent).
      type: list
      elements: dict
    aliases:
      description: The alias database the local delivery that remains reads (V(path), V(map), V(compiled)).
      type: dict
    secret_files:
      description: Every map the plan writes and every compiled file postmap may have built from it.
      type: list
      elements: str
      sample: [/etc/postfix/sasl_passwd, /etc/postfix/sasl_passwd.cdb, /etc/postfix/sasl_passwd.db]
    secret_directories:
      description: Directories the plan owns whole (the submission users' sasldb).
      type: list
      elements: str
    backup_directories:
      description: Where backups of those files are.
      type: list
      elements: str
    backup_patterns:
      description: The file name patterns of those backups.
      type: list
      elements: str
      sample: ["sasl_passwd.*~"]
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.decommission import decommission


def relay_decommission_filter(plan):
    if not isinstance(plan, dict) or "error" in plan or "main_cf" not in plan:
        raise AnsibleFilterError("relay_decommission: the input must be a relay_plan result without an error")
    return decommission(plan)


class FilterModule:
    def filters(self):
        return {"relay_decommission": relay_decommission_filter}
