# -*- coding: utf-8 -*-
# Copyright (c) 2025, smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""The plan's validators: each takes the variable's name and its value, returns the value as the
plan uses it, or raises RelayPlanError naming the variable. Values are never echoed where they
may be a secret. Rules that the modules apply too (host names, SASL logins, parameter names) come
from module_utils.rules, so the plan never accepts what a module would refuse."""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.smarthost.postfix.plugins.module_utils.rules import (
    CONTROL_CHARACTERS,
    is_hostname,
    is_ip,
    password_problem,
    username_problem,
)

TIME_VALUE = re.compile(r"^[0-9]+[smhdw]?$")
TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
LOCAL_PART = re.compile(r"^[^\s@<>()\[\],;:\"\\]+$")


class RelayPlanError(ValueError):
    """A role variable (or a combination of them) that cannot work; the message names it."""

    def __init__(self, variable, problem):
        self.variable = variable
        super().__init__("%s: %s" % (variable, problem))


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def number(value):
    """An int or float (not a bool) or a numeric string, as a float; None when it is none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def integer(variable, value, minimum, maximum=None):
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not is_int(value):
        raise RelayPlanError(variable, "must be a whole number, got %r" % (value,))
    if value < minimum or (maximum is not None and value > maximum):
        bounds = "%d-%d" % (minimum, maximum) if maximum is not None else "%d or more" % minimum
        raise RelayPlanError(variable, "%d is out of range; use %s" % (value, bounds))
    return value


def text(variable, value, allow_empty=False):
    if not isinstance(value, str):
        raise RelayPlanError(variable, "must be a string, got %s" % type(value).__name__)
    if not allow_empty and not value.strip():
        raise RelayPlanError(variable, "must not be empty")
    if CONTROL_CHARACTERS.search(value):
        raise RelayPlanError(variable, "must not contain line breaks or control characters")
    return value


def flag(variable, value):
    if not isinstance(value, bool):
        raise RelayPlanError(variable, "must be true or false, got %r" % (value,))
    return value


def choice(variable, value, choices):
    if value not in choices:
        raise RelayPlanError(variable, "%r is not one of %s" % (value, ", ".join(choices)))
    return value


def as_list(variable, value):
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise RelayPlanError(variable, "must be a list, got %s" % type(value).__name__)
    return list(value)


def split_words(value):
    """A Postfix-style "a, b c" string as a list; anything else unchanged."""
    if isinstance(value, str):
        return [item for item in re.split(r"[\s,]+", value) if item]
    return value


def mapping(variable, value, allowed_keys):
    if not isinstance(value, dict):
        raise RelayPlanError(variable, "must be a dictionary, got %s" % type(value).__name__)
    unknown = sorted(set(value) - set(allowed_keys))
    if unknown:
        raise RelayPlanError(variable, "unknown key(s) %s; allowed: %s" % (", ".join(unknown), ", ".join(allowed_keys)))
    return value


def time_value(variable, value):
    if is_int(value):
        value = "%ds" % value
    value = text(variable, value)
    if not TIME_VALUE.match(value):
        raise RelayPlanError(variable, "%r is not a Postfix time value such as 30s, 10m, 5d" % value)
    return value


def seconds(value):
    """A validated Postfix time value in seconds."""
    unit = value[-1]
    if unit.isdigit():
        return int(value)
    return int(value[:-1]) * TIME_UNITS[unit]


def hostname(variable, value):
    """A DNS name or IP address as the user wrote it, without brackets or port."""
    value = text(variable, value)
    if any(char.isspace() for char in value):
        raise RelayPlanError(variable, "must not contain whitespace")
    if value.startswith("[") or (":" in value and not is_ip(value)):
        raise RelayPlanError(variable, "give the bare host name (%r); the role adds the brackets and the port itself" % value)
    if is_ip(value):
        return value
    if not is_hostname(value):
        raise RelayPlanError(variable, "%r is not a valid host name" % value)
    return value


def domain(variable, value):
    value = hostname(variable, value)
    if is_ip(value):
        raise RelayPlanError(variable, "%r is an address, not a domain" % value)
    return value.rstrip(".")


def address_pattern(variable, value):
    """user@domain or @domain, the forms Postfix looks up in address tables."""
    value = text(variable, value)
    local, sep, domain_part = value.rpartition("@")
    if not sep or (local and not LOCAL_PART.match(local)):
        raise RelayPlanError(variable, "%r is not an address (user@example.com) or a domain pattern (@example.com)" % value)
    domain(variable, domain_part)
    return value


def network(variable, value):
    """An IP network as mynetworks takes it (IPv6 in brackets); never the whole Internet."""
    value = text(variable, value).strip()
    bare = value.replace("[", "").replace("]", "")
    try:
        parsed = ipaddress.ip_network(bare, strict=False)
    except ValueError:
        raise RelayPlanError(variable, "%r is not an IP network such as 10.0.0.0/8 or [2001:db8::]/32" % value) from None
    if parsed.prefixlen == 0:
        raise RelayPlanError(variable, "%r would let the whole Internet relay through this host" % value)
    if parsed.version == 6:
        return "[%s]/%d" % (parsed.network_address, parsed.prefixlen)
    return str(parsed) if "/" in bare else str(parsed.network_address)


def is_loopback(value):
    if value in ("localhost", "loopback-only"):
        return True
    try:
        return ipaddress.ip_address(value.strip("[]")).is_loopback
    except ValueError:
        return False


def username(variable, value):
    # Values are never echoed: Postmark's user name is the server token.
    problem = username_problem(value)
    if problem:
        raise RelayPlanError(variable, problem)
    return value


def password(variable, value):
    problem = password_problem(value)
    if problem:
        raise RelayPlanError(variable, problem)
    return value


def fingerprint(variable, value):
    value = text(variable, value)
    digits = value.replace(":", "").strip().upper()
    if not re.match(r"^[0-9A-F]{64}$", digits):
        raise RelayPlanError(variable, "%r is not a SHA-256 fingerprint (64 hex digits, colons optional)" % value)
    return ":".join(digits[i:i + 2] for i in range(0, 64, 2))


def service_name(variable, value):
    value = text(variable, value)
    if not SERVICE_NAME.match(value):
        raise RelayPlanError(variable, "%r is not a usable master.cf service name (lowercase letters, digits, _ and -)" % value)
    return value


def header_name(variable, value):
    value = text(variable, value).rstrip(":")
    if not HEADER_NAME.match(value):
        raise RelayPlanError(variable, "%r is not a header name" % value)
    return value


def postfix_version_tuple(version):
    if not version:
        return None
    parts = re.findall(r"\d+", str(version))
    return tuple(int(part) for part in parts[:3]) if parts else None
