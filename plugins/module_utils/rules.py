# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
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
MASK = "********"


def scrub(text, secrets):
    """Text we did not write (what Postfix or a server printed) with every secret replaced by MASK,
    longest first (one secret may contain another).

    Only for foreign text: the modules' own messages are built from parts and never hold a secret,
    so they are never scrubbed (a password that is a common word would otherwise mask the word).
    """
    if not text:
        return text
    # The cheap membership test first: a module may hold 100,000 secrets and scrub a short line.
    for secret in sorted((secret for secret in secrets if secret and secret in text), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


# ---------------------------------------------------------------- text Postfix reads

# Postfix's white space: C isspace() in the C locale. Python's str.split() and str.strip() also take
# U+001C-U+001F, U+0085, U+00A0, U+2028 and more, which Postfix reads as ordinary characters.
POSTFIX_SPACE = " \t\n\v\f\r"
# Code points where some reader of our files ends a line, although Postfix splits at '\n' only:
# str.splitlines() breaks at every one of these, and so do editors and log viewers.
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_UNWRITABLE_RE = re.compile("[\x00%s\ud800-\udfff]" % LINE_BREAKS)


def physical_lines(text):
    """The lines of a Postfix file or of postconf/postmap output, split as Postfix splits them: at '\n' only."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def is_ignored_line(line):
    """Empty, white space only, or a comment (first non-space character '#'): Postfix skips it."""
    stripped = line.lstrip(POSTFIX_SPACE)
    return not stripped or stripped.startswith("#")


def is_continuation(line):
    """A line that starts with white space continues the logical line before it."""
    return line[:1] != "" and line[0] in POSTFIX_SPACE


def logical_lines(text):
    """[(line number, logical line)] as Postfix's readlline() builds them.

    Skipped lines (is_ignored_line) do not end a logical line; a continuation line is appended as
    it is, its leading white space included (Postfix drops only the newline).
    """
    result = []
    for number, line in enumerate(physical_lines(text), 1):
        if is_ignored_line(line):
            continue
        if is_continuation(line) and result:
            result[-1] = (result[-1][0], result[-1][1] + line)
        else:
            result.append((number, line))
    return result


def strip_postfix_space(text):
    return text.strip(POSTFIX_SPACE)


def text_problem(value, what="value"):
    """None when a value can be written into a Postfix file as it is, else why not (never the value).

    Refused: every line break some reader honours (LINE_BREAKS: a value that one reader splits is
    a different value, or a second entry, to another), NUL (Postfix reads a C string and stops
    there) and unpaired surrogates (no UTF-8 for them).
    """
    match = _UNWRITABLE_RE.search(value)
    if match is None:
        return None
    char = match.group(0)
    if char == "\x00":
        return "must not contain a NUL character"
    if char in "\n\r":
        return "must not contain a line break (check how the %s was pasted or looked up)" % what
    if char in LINE_BREAKS:
        return (
            "must not contain U+%04X, a line break to some readers of the file (check how the %s was "
            "pasted or looked up)" % (ord(char), what)
        )
    return "must be valid Unicode text (it contains an unpaired surrogate)"


# ---------------------------------------------------------------- host names and addresses

# Postfix's valid_hostname(): letters, digits, '-' and '_', no label starting or ending with '-'.
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_HOSTNAME_RE = re.compile(r"^%s(\.%s)*$" % (_LABEL, _LABEL))
_NUMERIC_RE = re.compile(r"^[0-9.]+$")


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
    name = text[:-1] if text.endswith(".") else text
    if len(name) > 253 or not _HOSTNAME_RE.match(name):
        return False
    if _NUMERIC_RE.match(name):
        return is_ipv4(name)
    return True


# ---------------------------------------------------------------- SASL logins

# C0 and C1 control characters and DEL (U+0085, a C1 control, is also a line break).
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")


def username_problem(value):
    """None when value can be a SASL user name in a password map, else why not."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if ":" in value:
        return "must not contain ':' (Postfix splits user:password at the first colon)"
    if any(char.isspace() for char in value) or CONTROL_CHARACTERS.search(value):
        return "must not contain whitespace or control characters"
    return text_problem(value)


def password_problem(value):
    """None when value can be a SASL password in a password map, else why not (never the value)."""
    if not isinstance(value, str):
        return "must be a string (quote it in YAML)"
    if not value:
        return "must not be empty"
    problem = text_problem(value, "secret")
    if problem:
        return problem
    if CONTROL_CHARACTERS.search(value):
        return "must not contain control characters"
    if value != value.strip():
        return "must not start or end with whitespace (Postfix would drop it)"
    return None


# ---------------------------------------------------------------- main.cf

# Built-in names are lower case, a few carry capitals (smtp_tls_CAfile); user-defined ones may too.
PARAMETER_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")


def is_parameter_name(name):
    return isinstance(name, str) and bool(PARAMETER_NAME_RE.match(name))


# ---------------------------------------------------------------- map types

# The indexed types postmap compiles, and the file it builds next to the source for each.
COMPILED_SUFFIXES = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb"}
INDEXED_TYPES = tuple(COMPILED_SUFFIXES)
# What a SASL password map may be (an exact-match table), and what any other table may be.
SASL_MAP_TYPES = INDEXED_TYPES + ("texthash",)
TABLE_TYPES = SASL_MAP_TYPES + ("regexp", "pcre", "cidr")


def compiled_path(path, map_type):
    """The file postmap builds for this type, or None when Postfix reads the source itself."""
    suffix = COMPILED_SUFFIXES.get(map_type)
    return path + suffix if suffix else None
