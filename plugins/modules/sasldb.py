#!/usr/bin/python
# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sasldb
short_description: Manage the Cyrus SASL users Postfix's SMTP server accepts (sasldb2)
version_added: 0.1.0
author: "smarthost.postfix maintainers (@smarthost)"
description:
  - Keeps a Cyrus SASL user database (sasldb2) holding exactly the users listed, with their
    passwords, for a Postfix C(smtpd) that authenticates clients with C(smtpd_sasl_type = cyrus).
  - The database is written by the distribution's own C(saslpasswd2), so its format is always the
    one the host's C(libsasl2) reads. Each password reaches C(saslpasswd2) on its standard input
    (C(-p)), never on a command line, so it never shows in a process list.
  - Whether anything changed is known without rewriting the database. A root-only digest file next
    to it (C(<path>.digest), mode C(0600)) records a salted PBKDF2 digest of each password set, and
    C(sasldblistusers2) tells which users the database holds. When a user was added, removed or
    given another password (or the database was edited behind the module's back), a new database is
    built in a private directory next to it and renamed into place, so C(smtpd) never sees a half
    written one. Otherwise nothing is written and the module reports C(changed=false).
  - The database is owned by root and readable by O(group) only (mode C(0640)); C(smtpd) reads it as
    that group after dropping privileges.
  - Optionally writes the Cyrus application configuration (for example C(smtpd.conf) in the
    directory C(cyrus_sasl_config_path) names) that points C(libsasl2) at this database.
notes:
  - sasldb stores passwords as given (it needs them for every mechanism); the file is therefore kept
    readable by O(group) only. Run the service that reads it unchrooted, or keep the database at the
    same path inside the chroot.
  - A user named C(name) without C(@) logs in as C(name) or C(name@realm); Postfix reports it (and
    C(smtpd_sender_login_maps) must name it) as C(name@realm). A user named C(name@domain) belongs
    to the realm C(domain).
requirements:
  - C(saslpasswd2) and C(sasldblistusers2) (Debian C(sasl2-bin), RHEL C(cyrus-sasl)).
attributes:
  check_mode:
    support: full
    description: Reports what would change and writes nothing.
  diff_mode:
    support: full
    description: The diff lists the users before and after, and marks a changed password; never a password.
  platform:
    support: full
    platforms: posix
    description: Debian and RHEL families, with the distribution's Cyrus SASL tools.
options:
  path:
    description:
      - Path of the sasldb2 file. Its directory is created (mode C(0755)) when missing.
    type: path
    required: true
  users:
    description:
      - Every user the database holds; users not listed are removed.
      - An empty list (or O(state=absent)) removes the database, its digest file and O(config_file).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - The user name, C(name) or C(name@domain). Letters, digits, C(.), C(_), C(+) and C(-).
        type: str
        required: true
      password:
        description:
          - The password. Must not be empty, contain a line break or control character, or start or
            end with whitespace.
        type: str
        required: true
  realm:
    description:
      - The realm of users named without C(@); give the same value to C(smtpd_sasl_local_domain).
      - Required when such a user is listed.
    type: str
  group:
    description:
      - The group that may read the database (the user C(smtpd) runs as, C(mail_owner)).
    type: str
    default: postfix
  config_file:
    description:
      - Where to write the Cyrus application configuration (C(pwcheck_method auxprop), C(auxprop_plugin
        sasldb), C(sasldb_path), C(mech_list)), root-owned, mode C(0644). Omit it to leave that file alone.
    type: path
  mechanisms:
    description:
      - The mechanisms C(mech_list) offers. Only mechanisms that send the password itself fit a service
        that allows authentication only over TLS.
    type: list
    elements: str
    default: [PLAIN, LOGIN]
  state:
    description:
      - V(present) keeps exactly O(users); V(absent) removes the database, its digest file and O(config_file).
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: smarthost.postfix.postfix_config
  - name: Postfix SASL README
    description: Configuring SASL authentication in the Postfix SMTP server.
    link: https://www.postfix.org/SASL_README.html#server_sasl
"""

EXAMPLES = r"""
- name: Users the submission service accepts
  smarthost.postfix.sasldb:
    path: /etc/postfix/submission/sasldb2
    config_file: /etc/postfix/submission/smtpd.conf
    realm: submission
    users:
      - name: billing-app
        password: "{{ vault_billing_app_password }}"
      - name: crm@example.com
        password: "{{ vault_crm_password }}"

- name: Remove the database and every user in it
  smarthost.postfix.sasldb:
    path: /etc/postfix/submission/sasldb2
    config_file: /etc/postfix/submission/smtpd.conf
    state: absent
"""

RETURN = r"""
users:
  description: The logins the database holds (or would hold), as Postfix reports them (C(name@realm)).
  returned: success
  type: list
  elements: str
  sample: [billing-app@submission, crm@example.com]
users_added:
  description: Logins that were (or would be) added.
  returned: success
  type: list
  elements: str
  sample: [crm@example.com]
users_removed:
  description: Logins that were (or would be) removed.
  returned: success
  type: list
  elements: str
  sample: []
users_updated:
  description: Logins whose password was (or would be) changed.
  returned: success
  type: list
  elements: str
  sample: [billing-app@submission]
config_changed:
  description: Whether O(config_file) was (or would be) written or removed.
  returned: success
  type: bool
  sample: false
"""

import grp

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.smarthost.postfix.plugins.module_utils.module_support import run_and_exit
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import ValidationError
from ansible_collections.smarthost.postfix.plugins.module_utils.sasldb import SaslDb, manage_sasldb


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            users=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    name=dict(type="str", required=True),
                    password=dict(type="str", required=True, no_log=True),
                ),
            ),
            realm=dict(type="str"),
            group=dict(type="str", default="postfix"),
            config_file=dict(type="path"),
            mechanisms=dict(type="list", elements="str", default=["PLAIN", "LOGIN"]),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        supports_check_mode=True,
    )
    params = module.params

    def run(cmd, data=None):
        # PATH first, then the sbin directories get_bin_path always adds.
        binary = module.get_bin_path(cmd[0])
        if binary is None:
            raise ValidationError("%s not found: install sasl2-bin (Debian) or cyrus-sasl (RHEL)" % cmd[0])
        return module.run_command([binary] + cmd[1:], data=data, binary_data=True, expand_user_and_vars=False)

    try:
        group_id = grp.getgrnam(params["group"]).gr_gid
    except KeyError:
        if params["state"] == "present" and params["users"]:
            module.fail_json(msg="group %s does not exist (is Postfix installed?)" % params["group"])
        group_id = None

    db = SaslDb(
        params["path"], run, group_id=group_id, config_file=params["config_file"], mechanisms=params["mechanisms"]
    )

    def work():
        return manage_sasldb(db, params["users"], params["realm"], params["state"], module.check_mode)

    # run_and_exit masks the users' passwords (no_log) in whatever saslpasswd2 printed.
    run_and_exit(module, work, path=params["path"])


if __name__ == "__main__":
    main()
