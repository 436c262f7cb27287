# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
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
    text_problem,
    username_problem,
)

TIME_VALUE = re.compile(r"^[0-9]+[smhdw]?$")
# ASCII digits: str.isdigit() also takes "٥٨٧", which int() reads as 587.
WHOLE_NUMBER = re.compile(r"^[0-9]+$")
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
    if isinstance(value, str) and WHOLE_NUMBER.match(value.strip()):
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
    if CONTROL_CHARACTERS.search(value) or text_problem(value):
        raise RelayPlanError(variable, "must not contain line breaks or control characters")
    return value


def absolute_path(variable, value):
    value = text(variable, value)
    if not value.startswith("/"):
        raise RelayPlanError(variable, "must be an absolute path (it is %r)" % value)
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
        raise RelayPlanError(
            variable, "give the bare host name (%r); the role adds the brackets and the port itself" % value
        )
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
        raise RelayPlanError(
            variable, "%r is not an address (user@example.com) or a domain pattern (@example.com)" % value
        )
    domain(variable, domain_part)
    return value


def network(variable, value):
    """An IP network as mynetworks takes it (IPv6 in brackets); never the whole Internet."""
    value = text(variable, value).strip()
    bare = value.replace("[", "").replace("]", "")
    try:
        parsed = ipaddress.ip_network(bare, strict=False)
    except ValueError:
        raise RelayPlanError(
            variable, "%r is not an IP network such as 10.0.0.0/8 or [2001:db8::]/32" % value
        ) from None
    if parsed.prefixlen == 0:
        raise RelayPlanError(variable, "%r would let the whole Internet relay through this host" % value)
    if parsed.version == 6:
        return "[%s]/%d" % (parsed.network_address, parsed.prefixlen)
    return str(parsed) if "/" in bare else str(parsed.network_address)


# Addresses no client on the Internet has: private, shared (CGNAT), loopback, link-local,
# documentation, benchmarking, multicast and reserved ranges. The rest is public.
NON_PUBLIC_NETWORKS = {
    4: [
        ipaddress.ip_network(net)
        for net in (
            "0.0.0.0/8",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.0.0.0/24",
            "192.0.2.0/24",
            "192.168.0.0/16",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "224.0.0.0/4",
            "240.0.0.0/4",
        )
    ],
    6: [
        ipaddress.ip_network(net)
        for net in ("::/128", "::1/128", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8")
    ],
}
# IPv4 clients may appear as IPv4-mapped IPv6 addresses: such networks count as IPv4.
IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
# The most public address space relay_mynetworks may trust, in total: as much as a /8 of IPv4
# and a /16 of IPv6 (more than any one organisation's clients; [0.0.0.0/1, 128.0.0.0/1] or ::/1
# would be an open relay that a /0 check lets through).
PUBLIC_LIMIT = {4: (2**24, "/8"), 6: (2**112, "/16")}


def public_addresses(networks):
    """{4: n, 6: n}: how many public addresses the networks cover together (overlaps counted once)."""
    by_version = {4: [], 6: []}
    for net in networks:
        if net.version == 6 and net.subnet_of(IPV4_MAPPED):
            mapped = int(net.network_address) & 0xFFFFFFFF
            by_version[4].append(ipaddress.ip_network((mapped, net.prefixlen - 96)))
            continue
        if net.version == 6 and net.supernet_of(IPV4_MAPPED):
            by_version[4].append(ipaddress.ip_network("0.0.0.0/0"))
        by_version[net.version].append(net)
    counts = {}
    for version, nets in by_version.items():
        total = 0
        for net in ipaddress.collapse_addresses(nets):
            total += net.num_addresses
            for hidden in NON_PUBLIC_NETWORKS[version] + ([IPV4_MAPPED] if version == 6 else []):
                if hidden.subnet_of(net):
                    total -= hidden.num_addresses
                elif net.subnet_of(hidden):
                    total -= net.num_addresses
        counts[version] = total
    return counts


def public_bound(variable, values):
    """Refuse mynetworks that together trust more public address space than PUBLIC_LIMIT."""
    networks = [ipaddress.ip_network(value.replace("[", "").replace("]", ""), strict=False) for value in values]
    for version, count in sorted(public_addresses(networks).items()):
        limit, size = PUBLIC_LIMIT[version]
        if count > limit:
            raise RelayPlanError(
                variable,
                "together these networks let %s public IPv%d addresses relay through this host "
                "without a login, more than a %s (%s); list the networks your clients use "
                "(docs/security.md)" % (f"{count:,}", version, size, f"{limit:,}"),
            )
    return values


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
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


def service_name(variable, value):
    value = text(variable, value)
    if not SERVICE_NAME.match(value):
        raise RelayPlanError(
            variable, "%r is not a usable master.cf service name (lowercase letters, digits, _ and -)" % value
        )
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
