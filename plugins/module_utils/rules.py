# -*- coding: utf-8 -*-
# Copyright (c) 2025, smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""The rules every part of the collection applies the same way, each written once.

Host names and IP addresses, SASL user names and passwords, main.cf parameter names, the map
types postmap compiles, and the mask that stands in for a secret. The modules (on the target)
and the relay plan (on the controller) both import them, so the plan cannot accept what a
module would refuse.
"""

from __future__ import annotations

import ipaddress
import re


class ValidationError(ValueError):
    """The requested state is invalid; raised before anything is written."""


# ---------------------------------------------------------------- secrets

# What every secret is replaced with in output.
MASK = '********'


def scrub(text, secrets):
    """text with every secret replaced by MASK, longest first (one secret may contain another)."""
    for secret in sorted((secret for secret in secrets if secret), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


# ---------------------------------------------------------------- host names and addresses

# Postfix's valid_hostname(): letters, digits, '-' and '_', no label starting or ending with '-'.
_LABEL = r'(?!-)[A-Za-z0-9_-]{1,63}(?<!-)'
_HOSTNAME_RE = re.compile(r'^%s(\.%s)*$' % (_LABEL, _LABEL))


def is_ip(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_ipv4(text):
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def is_ipv6(text):
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def is_hostname(text):
    """A DNS name as Postfix accepts one (an optional trailing dot aside); all-numeric names must be IPv4."""
    name = text[:-1] if text.endswith('.') else text
    if len(name) > 253 or not _HOSTNAME_RE.match(name):
        return False
    if re.match(r'^[0-9.]+$', name):
        return is_ipv4(name)
    return True


# ---------------------------------------------------------------- SASL logins

CONTROL_CHARACTERS = re.compile(r'[\x00-\x1f\x7f]')


def username_problem(value):
    """None when value can be a SASL user name in a password map, else why not."""
    if not isinstance(value, str):
        return 'must be a string'
    if not value:
        return 'must not be empty'
    if ':' in value:
        return "must not contain ':' (Postfix splits user:password at the first colon)"
    if any(char.isspace() for char in value) or CONTROL_CHARACTERS.search(value):
        return 'must not contain whitespace or control characters'
    return None


def password_problem(value):
    """None when value can be a SASL password in a password map, else why not (never the value)."""
    if not isinstance(value, str):
        return 'must be a string (quote it in YAML)'
    if not value:
        return 'must not be empty'
    if '\n' in value or '\r' in value:
        return 'must not contain a line break (check how the secret was pasted or looked up)'
    if CONTROL_CHARACTERS.search(value):
        return 'must not contain control characters'
    if value != value.strip():
        return 'must not start or end with whitespace (Postfix would drop it)'
    return None


# ---------------------------------------------------------------- main.cf

# Built-in names are lower case, a few carry capitals (smtp_tls_CAfile); user-defined ones may too.
PARAMETER_NAME_RE = re.compile(r'^[A-Za-z0-9_]+$')


def is_parameter_name(name):
    return isinstance(name, str) and bool(PARAMETER_NAME_RE.match(name))


# ---------------------------------------------------------------- map types

# The indexed types postmap compiles, and the file it builds next to the source for each.
COMPILED_SUFFIXES = {'hash': '.db', 'btree': '.db', 'lmdb': '.lmdb', 'cdb': '.cdb'}
INDEXED_TYPES = tuple(COMPILED_SUFFIXES)
# What a SASL password map may be (an exact-match table), and what any other table may be.
SASL_MAP_TYPES = INDEXED_TYPES + ('texthash',)
TABLE_TYPES = SASL_MAP_TYPES + ('regexp', 'pcre', 'cidr')


def compiled_path(path, map_type):
    """The file postmap builds for this type, or None when Postfix reads the source itself."""
    suffix = COMPILED_SUFFIXES.get(map_type)
    return path + suffix if suffix else None
