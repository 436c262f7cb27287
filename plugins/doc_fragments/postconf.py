# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The master.cf and name-checking options shared by the postconf and postfix_config modules."""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  services:
    description:
      - C(master.cf) service entries to manage, identified by O(services[].name) and O(services[].type).
      - Services not listed are left alone.
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - Service name, the first column of C(master.cf), for example V(relay), V(tlsproxy) or
            V(127.0.0.1:submission).
          - Letters, digits, V(.), V(_) and V(-), at most 64 characters; an V(inet) service may be
            C([host:]port). Anything else (V(my=svc), V(#svc), a brace, a comma, C($)) is refused
            before any file changes.
        type: str
        required: true
      type:
        description:
          - Service type, the second column of C(master.cf).
        type: str
        choices: [inet, unix, unix-dgram, fifo, pass]
        default: unix
      state:
        description:
          - V(present) creates or updates the entry, V(absent) removes it (C(postconf -MX)).
        type: str
        choices: [present, absent]
        default: present
      private:
        description:
          - The private column. When creating an entry and omitted, V(-) (Postfix's default).
        type: str
        choices: ['y', 'n', '-']
      unpriv:
        description:
          - The unprivileged column. When creating an entry and omitted, V(-).
        type: str
        choices: ['y', 'n', '-']
      chroot:
        description:
          - The chroot column. When creating an entry and omitted, V(-).
          - Debian's package runs most services chrooted; RHEL's does not.
        type: str
        choices: ['y', 'n', '-']
      wakeup:
        description:
          - The wakeup column, for example V(60), V(1000?) or V(-). When creating an entry and
            omitted, V(-).
        type: str
      maxproc:
        description:
          - The process limit column, a number or V(-). When creating an entry and omitted, V(-).
        type: str
      command:
        description:
          - The command with its arguments, for example V(smtp), V(tlsproxy) or
            V(pipe flags=Rq user=list argv=/usr/bin/handler ${nexthop}).
          - Do not put C(-o) overrides here; use O(services[].options).
          - A line break inside the command is refused (it would be folded into one line).
          - When omitted, the entry must already exist and only its columns and overrides are managed.
          - Changing the command of an existing entry rewrites the entry (C(postconf -M)) and keeps
            its overrides.
        type: str
      options:
        description:
          - C(-o name=value) overrides of this service, as a dictionary.
          - Values are formatted like O(parameters), except that lists are joined with C(,);
            values must not contain whitespace (C(postconf -P) refuses it).
          - Override names are checked like C(main.cf) names (see O(allow_unknown)).
          - A value of V(null) removes that override (C(postconf -PX)), for example to drop
            C(-o smtp_fallback_relay=) from the V(relay) service.
          - Overrides not listed are kept unless O(services[].exclusive_options=true).
        type: dict
      exclusive_options:
        description:
          - Remove overrides of this service that are not listed in O(services[].options).
        type: bool
        default: false
  allow_unknown:
    description:
      - Accept C(main.cf) names Postfix does not know, in O(parameters) and as C(-o) override names.
      - Known names are those C(postconf -d) lists, names Postfix derives from C(master.cf)
        services (for example V(ses_relay_destination_rate_delay) once a V(ses_relay) service
        exists, including services defined in the same task), and user-defined names that some
        value refers to as C($name) or C(${name}) (in C(main.cf), in a C(-o) override, or in this
        task), or that C(smtpd_restriction_classes) lists.
    type: bool
    default: false
"""
