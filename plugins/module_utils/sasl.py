# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""The SASL password map's own rules: which keys Postfix looks up, what an entry may hold, and
how a diff shows it without a secret. The table machinery itself is maps.py."""

from __future__ import annotations

import re

from ansible_collections.smarthost.postfix.plugins.module_utils.maps import Entry, Masks, key_identity, validate_entries
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import (
    MASK,
    ValidationError,
    is_hostname,
    is_ipv4,
    is_ipv6,
    password_problem,
    username_problem,
)

_PORT_RE = re.compile(r"^[1-9][0-9]{0,4}$")
_BRACKETED_RE = re.compile(r"^\[([^\]]*)\](?::([^:]*))?$")
_BAD_LOCAL_PART_RE = re.compile(r"[\s:]")


def _valid_port(port):
    # ASCII digits only: str.isdigit() takes '٥٨٧', which int() reads as 587 and Postfix never looks up.
    return port is None or (bool(_PORT_RE.match(port)) and int(port) <= 65535)


def sasl_key_error(key):
    """None when key is a lookup key Postfix uses for SASL passwords, else the reason."""
    bracketed = _BRACKETED_RE.match(key)
    if bracketed:
        host, port = bracketed.groups()
        if not (is_hostname(host) or is_ipv4(host) or is_ipv6(host)):
            return "invalid host %r inside brackets" % host
        if not _valid_port(port):
            return "invalid port %r (1-65535)" % port
        return None
    if "@" in key:
        local_part, _at, domain = key.partition("@")
        if _BAD_LOCAL_PART_RE.search(local_part):
            return "invalid local part in user@domain key"
        if not is_hostname(domain):
            return "invalid domain %r" % domain
        return None
    host, _colon, port = key.partition(":")
    if not (is_hostname(host) or is_ipv4(host)):
        return "invalid host %r (IPv6 addresses must be written in brackets)" % host
    if _colon and not _valid_port(port):
        return "invalid port %r (1-65535)" % port
    return None


def sasl_entries(entries, state="present"):
    """Validate sasl_map entries and return [(key, 'username:password')].

    Errors name the entry's key and never include the password.
    """
    pairs = []
    for entry in entries:
        key = entry.get("key") or ""
        problem = sasl_key_error(key) if key.strip() else "empty key"
        if problem:
            raise ValidationError("entry %r: %s" % (key, problem))
        if state != "present":
            pairs.append((key, None))
            continue
        username, password = entry.get("username"), entry.get("password")
        if not username:
            raise ValidationError("entry %r: username is missing or empty" % key)
        problem = username_problem(username)
        if problem:
            raise ValidationError("entry %r: username %s" % (key, problem))
        if not password:
            raise ValidationError("entry %r: password is missing or empty" % key)
        problem = password_problem(password)
        if problem:
            raise ValidationError("entry %r: password %s" % (key, problem))
        pairs.append((key, "%s:%s" % (username, password)))
    validate_entries(pairs, "hash", state)
    return pairs


def keep_password(current_value, desired_value):
    """merge() for update_password=on_create: new username, password already in the map."""
    if ":" not in current_value:
        return desired_value
    return "%s:%s" % (desired_value.split(":", 1)[0], current_value.split(":", 1)[1])


def _shown_username(value):
    """The username for a diff, unless it is the secret itself (Postmark's server token) or the
    value has no user:password form (then all of it may be the secret)."""
    username, separator, password = value.partition(":")
    return MASK if not separator or username == password else username


def shown_key(entry):
    """How a key read from the map is shown: as it is when it is a SASL lookup key with a
    user:password value; otherwise it may be a fragment of a password (a line a hand edit or
    another tool broke), so only its line number is shown."""
    if sasl_key_error(entry.key) is None and ":" in entry.value:
        return entry.key
    return "(line %s: not a SASL entry)" % (entry.line or "?")


def sasl_masks(old_items):
    """Masks for a SASL map: show `username:********`, flag changed passwords, hide odd keys."""
    old_passwords = {
        key_identity(item.key, "hash"): item.value.partition(":")[2] for item in old_items if isinstance(item, Entry)
    }

    def before(_key, value):
        return "%s:%s" % (_shown_username(value), MASK)

    def after(key, value):
        old = old_passwords.get(key_identity(key, "hash"))
        changed = old is not None and old != value.partition(":")[2]
        return "%s:%s%s" % (_shown_username(value), MASK, " (password changed)" if changed else "")

    return Masks(before, after, shown_key)
