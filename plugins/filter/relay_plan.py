# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: relay_plan
author: "smarthost.postfix maintainers (@smarthost)"
version_added: 0.1.0
short_description: Compute the Postfix configuration of a smarthost relay
description:
  - Turns the relay role's variables, the provider presets and facts about the host into the desired
    Postfix state that the role applies in one M(smarthost.postfix.postfix_config) task.
  - Validates every variable and every combination of them first; an invalid input fails with a
    message that starts with the name of the variable at fault, before anything on the host changes.
  - The result carries the SASL passwords (RV(_value.sasl_map)), so a task that stores or prints
    it must use C(no_log).
options:
  _input:
    description:
      - The relay role's variables, keyed by their names (V(relay_provider), V(relay_host), ...), every
        variable the role passes (C(roles/relay/vars/main.yml)), with V(null) for the unset ones. The plan
        has no defaults of its own; they are in the role's C(defaults/main.yml).
    type: dict
    required: true
  presets:
    description:
      - Provider presets keyed by provider name, as in the role's C(vars/presets.yml).
    type: dict
    required: true
  facts:
    description:
      - What the host tells about itself.
      - V(os_family), V(postfix_version) (V(null) before Postfix is installed), V(default_database_type),
        V(tls_min_version_syntax) (V(modern) or V(legacy), from M(smarthost.postfix.postfix_info)),
        V(ca_file) (the OS CA bundle), V(packages) (what the OS family needs), V(map_type_packages)
        (map type to the package that provides it), V(domain) and V(fqdn).
    type: dict
    default: {}
  errors:
    description:
      - V(raise) fails the template with the message.
      - V(return) returns C({error, variable}) instead, so that a task can fail with the message alone
        (ansible-core 2.19 wraps a failed filter in several "caused by" lines).
    type: str
    choices: [raise, return]
    default: raise
"""

EXAMPLES = r"""
# relay_settings: every relay_* variable the role passes, e.g. the role's defaults with
# relay_provider: sendgrid, relay_password and relay_sender_domain set.
- name: Plan a SendGrid null client
  ansible.builtin.set_fact:
    plan: >-
      {{ relay_settings
         | smarthost.postfix.relay_plan(presets, {'os_family': 'Debian', 'postfix_version': '3.7.11',
                                                  'default_database_type': 'hash',
                                                  'ca_file': '/etc/ssl/certs/ca-certificates.crt'},
                                        errors='return') }}
  no_log: true

- name: Fail with the plan's message alone, naming the variable
  ansible.builtin.fail:
    msg: "{{ plan.error }}"
  when: plan.error is defined

- name: Show where mail will go
  ansible.builtin.debug:
    msg: "{{ plan.relayhost }} with {{ plan.main_cf.smtp_tls_security_level }} TLS"
"""

RETURN = r"""
_value:
  description:
    - The desired Postfix state.
    - With O(errors=return) and an invalid input, only C(error) (the message, starting with the variable's
      name) and C(variable) (the variable at fault).
  type: dict
  contains:
    error:
      description: With O(errors=return), why the input cannot work; it never contains a secret.
      type: str
      sample: "relay_port: 70000 is out of range; use 1-65535"
    variable:
      description: With O(errors=return), the variable at fault.
      type: str
      sample: relay_port
    provider:
      description: The provider preset in use.
      type: str
      sample: sendgrid
    relayhost:
      description: The primary next hop, in brackets with its port; also the key of its SASL entry.
      type: str
      sample: "[smtp.sendgrid.net]:587"
    database_type:
      description: The indexed map type every table and the SASL map use.
      type: str
      sample: hash
    packages:
      description: OS packages to install.
      type: list
      elements: str
      sample: [postfix, libsasl2-modules, ca-certificates]
    main_cf:
      description:
        - Every main.cf parameter the role owns, name to value; a V(null) value means the parameter is
          removed from main.cf so that Postfix's default applies.
      type: dict
      sample: {relayhost: "[smtp.sendgrid.net]:587", smtp_tls_security_level: secure}
    master_services:
      description: Entries for the O(smarthost.postfix.postfix_config#module:services) option.
      type: list
      elements: dict
    sasl_map:
      description:
        - The SASL password map, one item of O(smarthost.postfix.postfix_config#module:sasl_maps)
          (secret, for its entries carry the passwords).
      type: dict
      sample:
        path: /etc/postfix/sasl_passwd
        type: hash
        entries: [{key: "[smtp.sendgrid.net]:587", username: apikey, password: "..."}]
    tables:
      description:
        - Other lookup tables for O(smarthost.postfix.postfix_config#module:tables), each with V(path),
          V(type) and ordered V(entries).
      type: list
      elements: dict
"""

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text

from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import RelayPlanError, relay_plan

# Vault values that are not str instances: EncryptedString (ansible-core 2.19) and
# AnsibleVaultEncryptedUnicode (earlier); str() decrypts both.
VAULTED_TYPES = ("EncryptedString", "AnsibleVaultEncryptedUnicode")


def _plain(value):
    """Plain Python data: vaulted strings become the text they decrypt to."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)
    if type(value).__name__ in VAULTED_TYPES:
        return to_text(str(value))
    return value


def relay_plan_filter(settings, presets, facts=None, errors="raise"):
    if errors not in ("raise", "return"):
        raise AnsibleFilterError("relay_plan: errors must be raise or return, not %r" % (errors,))
    try:
        return relay_plan(_plain(settings), presets, _plain(facts or {}))
    except RelayPlanError as exc:
        if errors == "return":
            return {"error": str(exc), "variable": exc.variable}
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"relay_plan": relay_plan_filter}
