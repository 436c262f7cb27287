# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The SASL password map's rules: lookup keys, entries, and diffs without a secret."""

from __future__ import annotations

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils.maps import parse_table
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import ValidationError
from ansible_collections.smarthost.postfix.plugins.module_utils.sasl import (
    sasl_entries,
    sasl_key_error,
    sasl_masks,
)


@pytest.mark.parametrize(
    "key",
    [
        "[email-smtp.eu-west-1.amazonaws.com]:587",
        "[smtp.example.com]",
        "smtp.example.com:2525",
        "smtp.example.com",
        "[192.0.2.10]:465",
        "192.0.2.10",
        "[2001:db8::1]:587",
        "user@example.com",
        "@example.com",
        "relay",
        "[smtp.example.com]:65535",
        # Postfix's valid_hostname() takes '_' (the plan does too: rules.is_hostname).
        "[mail_relay.internal]:587",
    ],
)
def test_valid_sasl_keys(key):
    assert sasl_key_error(key) is None


@pytest.mark.parametrize(
    "key, reason",
    [
        ("[smtp.example.com]:0", "invalid port"),
        ("[smtp.example.com]:65536", "invalid port"),
        ("[smtp.example.com]:smtp", "invalid port"),
        ("smtp.example.com:", "invalid port"),
        ("2001:db8::1", "in brackets"),
        ("[bad!host]:587", "invalid host"),
        ("[-bad.example]:587", "invalid host"),
        ("-bad.example", "invalid host"),
        ("999.1.1.1", "invalid host"),
        ("user@", "invalid domain"),
        ("us er@example.com", "invalid local part"),
        ("[smtp.example.com", "invalid host"),
    ],
)
def test_invalid_sasl_keys(key, reason):
    assert reason in sasl_key_error(key)


PASSWORD = "Pa55:w0rd#with spaces inside"


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"key": "[a.example]:587", "username": "", "password": PASSWORD}, "username is missing"),
        ({"key": "[a.example]:587", "username": "us:er", "password": PASSWORD}, "must not contain ':'"),
        ({"key": "[a.example]:587", "username": "us er", "password": PASSWORD}, "whitespace"),
        ({"key": "[a.example]:587", "username": "user", "password": ""}, "password is missing"),
        ({"key": "[a.example]:587", "username": "user", "password": PASSWORD + "\n"}, "line break"),
        ({"key": "[a.example]:587", "username": "user", "password": " " + PASSWORD}, "start or end with whitespace"),
        ({"key": "[a.example]:587", "username": "user", "password": PASSWORD + "\t"}, "control characters"),
        ({"key": "[a.example]:99999", "username": "user", "password": PASSWORD}, "invalid port"),
    ],
)
def test_sasl_entries_errors_name_the_key_never_the_password(entry, message):
    with pytest.raises(ValidationError, match=message) as caught:
        sasl_entries([entry])
    assert entry["key"] in str(caught.value)
    assert PASSWORD.strip() not in str(caught.value)


def test_sasl_entries_rejects_duplicate_keys():
    entries = [
        {"key": "[A.example]:587", "username": "u", "password": "p"},
        {"key": "[a.example]:587", "username": "v", "password": "q"},
    ]
    with pytest.raises(ValidationError, match="more than once"):
        sasl_entries(entries)


def test_sasl_entries_values_and_absent():
    assert sasl_entries([{"key": "@example.com", "username": "u", "password": "p:w"}]) == [("@example.com", "u:p:w")]
    assert sasl_entries([{"key": "@example.com"}], "absent") == [("@example.com", None)]


def test_sasl_masks_hide_passwords_and_flag_changes():
    old = parse_table("[a]:587 user:old\n", "hash")
    before, after = sasl_masks(old).before, sasl_masks(old).after
    assert before("[a]:587", "user:old") == "user:********"
    assert after("[A]:587", "user:new") == "user:******** (password changed)"
    assert after("[a]:587", "user:old") == "user:********"
    assert after("[b]", "other:pw") == "other:********"


def test_sasl_diff_masks_a_username_that_is_the_secret():
    # Postmark's server token is both the username and the password.
    token = "00000000-aaaa-4bbb-8ccc-token0000001"
    before, after = sasl_masks([]).before, sasl_masks([]).after
    assert token not in after("[smtp.postmarkapp.com]:587", "%s:%s" % (token, token))
    assert token not in before("[smtp.postmarkapp.com]:587", "%s:%s" % (token, token))
    assert after("[smtp.sendgrid.net]:587", "apikey:SG.secret").startswith("apikey:")


def test_keys_that_are_not_sasl_entries_are_shown_by_line_only():
    # A password broken onto its own line by a hand edit reads as a key: never echo it.
    items = parse_table("[a]:587 user:Head\nTAILSECRET\n@example.com tail:only-a-fragment-no-colon\n", "hash")
    shown = [sasl_masks(items).key(item) for item in items]
    assert shown == ["[a]:587", "(line 2: not a SASL entry)", "@example.com"]
    assert sasl_masks(items).before("@example.com", "nocolon") == "********:********"
