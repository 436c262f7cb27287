# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rules written once: each case here is one where two copies used to disagree."""

from __future__ import annotations

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils import rules
from ansible_collections.smarthost.postfix.plugins.module_utils.sasl import sasl_entries, sasl_key_error


@pytest.mark.parametrize(
    "name, valid",
    [
        ("smtp.example.com", True),
        ("smtp.example.com.", True),
        # Postfix's valid_hostname() takes '_': the plan allowed it, the SASL key check did not.
        ("mail_relay.internal", True),
        ("_relay.example.com", True),
        ("-relay.example.com", False),
        ("relay-.example.com", False),
        ("relay example.com", False),
        ("relay!.example.com", False),
        ("a" * 64 + ".example.com", False),
        # All digits and dots must be an IPv4 address: the plan took 999.1.1.1 as a host name.
        ("999.1.1.1", False),
        ("192.0.2.1", True),
        ("", False),
    ],
)
def test_one_host_name_rule(name, valid):
    assert rules.is_hostname(name) is valid


def test_the_sasl_key_check_and_the_host_name_rule_agree():
    for host in ("mail_relay.internal", "smtp.example.com", "999.1.1.1", "relay!.example.com"):
        assert (sasl_key_error("[%s]:587" % host) is None) is rules.is_hostname(host)


@pytest.mark.parametrize(
    "password, problem",
    [
        ("s3cret/with+symbols==", None),
        ("inner space is fine", None),
        ("", "must not be empty"),
        (" leading", "start or end with whitespace"),
        ("trailing ", "start or end with whitespace"),
        ("line\nbreak", "line break"),
        ("carriage\rreturn", "line break"),
        # The plan refused control characters, the SASL map module took a tab or an ESC.
        ("tab\tinside", "control characters"),
        ("escape\x1binside", "control characters"),
        ("delete\x7finside", "control characters"),
        (42, "must be a string"),
    ],
)
def test_one_password_rule(password, problem):
    found = rules.password_problem(password)
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize("password", ["tab\tinside", "escape\x1binside"])
def test_the_sasl_map_refuses_what_the_plan_refuses(password):
    with pytest.raises(rules.ValidationError, match="control characters"):
        sasl_entries([{"key": "[a.example]:587", "username": "u", "password": password}])


@pytest.mark.parametrize(
    "username, problem",
    [
        ("AKIAEXAMPLE", None),
        ("postmaster@mg.example.com", None),
        ("user:name", "':'"),
        ("user name", "whitespace"),
        ("user\x00", "control characters"),
        ("", "must not be empty"),
    ],
)
def test_one_username_rule(username, problem):
    found = rules.username_problem(username)
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize(
    "name, valid",
    [
        ("relayhost", True),
        # Capitals occur in built-in names; the plan's escape hatch allowed lower case only.
        ("smtp_tls_CAfile", True),
        ("bad-name", False),
        ("bad name", False),
        ("", False),
        (None, False),
    ],
)
def test_one_parameter_name_rule(name, valid):
    assert rules.is_parameter_name(name) is valid


# Every code point str.splitlines() breaks at, and NUL (Postfix reads a C string): in any secret or value.
UNWRITABLE = ["\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00"]


@pytest.mark.parametrize("char", UNWRITABLE)
def test_every_line_break_a_reader_honours_is_refused_in_every_secret_and_value(char):
    value = "Head%sTAILSECRET" % char
    assert ("x" + char + "y").splitlines() != ["x" + char + "y"] or char == "\x00"
    for problem in (rules.text_problem(value), rules.password_problem(value), rules.username_problem(value)):
        assert problem is not None and "TAILSECRET" not in problem
    with pytest.raises(rules.ValidationError) as caught:
        sasl_entries([{"key": "[a.example]:587", "username": "u", "password": value}])
    assert "TAILSECRET" not in str(caught.value)
    with pytest.raises(rules.ValidationError):
        sasl_entries([{"key": "[a.example]:587", "username": "u" + char, "password": "fine"}])


def test_text_problem_names_the_code_point_and_accepts_what_postfix_reads():
    assert "U+2028" in rules.text_problem("a\u2028b")
    assert "NUL" in rules.text_problem("a\x00b")
    assert "surrogate" in rules.text_problem("a\udc80b")
    for fine in ("tab\tinside", "nbsp\xa0inside", "unicode ü", "hash # and \\ backslash"):
        assert rules.text_problem(fine) is None


def test_lines_split_at_newline_only_and_logical_lines_as_readlline():
    assert rules.physical_lines("a\u2028b\x1cc\r\nd\n") == ["a\u2028b\x1cc\r", "d"]
    assert rules.physical_lines("") == [] and rules.physical_lines("x") == ["x"]
    text = "first = a\n  b\n# note\n\tc\n\nsecond = \x0bv\n"
    assert rules.logical_lines(text) == [(1, "first = a  b\tc"), (6, "second = \x0bv")]


def test_scrub_masks_the_longest_secret_first():
    # 'abc' inside 'abcdef': masking the short one first would leave 'def' visible.
    assert rules.scrub("token abcdef and abc", ["abc", "abcdef", ""]) == "token ******** and ********"


def test_map_types_nest():
    assert set(rules.INDEXED_TYPES) < set(rules.SASL_MAP_TYPES) < set(rules.TABLE_TYPES)
    assert all(rules.compiled_path("/t", kind) for kind in rules.INDEXED_TYPES)
    assert rules.compiled_path("/t", "regexp") is None
