# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The providers' published refusal texts and what they mean, as all three diagnosing tools see them.

The log forms are covered on real Postfix lines in test_maillog.py; here the texts are taken as the
providers publish them (as relay_probe reads them on the wire) and the remedies are held to the role.
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from ansible_collections.smarthost.postfix.plugins.module_utils import maillog, provider_replies, smtp_probe
from ansible_collections.smarthost.postfix.plugins.module_utils.provider_replies import REPLY_CAUSES, classify_reply

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))


def role_variables():
    with open(os.path.join(REPO, "roles", "relay", "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        return set(yaml.safe_load(handle)["argument_specs"]["main"]["options"])


# The texts as published or quoted from the wire by the providers' users, one line per reply line.
@pytest.mark.parametrize(
    "text, cause",
    [
        (
            "432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more "
            "information. "
            "[Hostname=DM4PR18MB4126.namprd18.prod.outlook.com]",
            "too_many_connections",
        ),
        ("432 4.3.2 concurrent connection limit exceeded", "too_many_connections"),
        ("4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded.", "too_many_connections"),
        (
            "554 5.2.252 SendAsDenied; delightgx46@outlook.com not allowed to send as security@sfb.com; "
            "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
            "send_as_denied",
        ),
        (
            "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to "
            "process "
            "message due to a permanent exception with message Cannot submit message.",
            "send_as_denied",
        ),
        ("550 5.7.30 Basic authentication is not supported for Client Submission", "basic_auth_disabled"),
        (
            "535 5.7.139 Authentication unsuccessful, basic authentication is disabled. "
            "[PN0PR01CA0024.INDPRD01.PROD.OUTLOOK.COM 2025-01-26T18:54:30.055Z 08DD3DD7D75D7743]",
            "basic_auth_disabled",
        ),
        (
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit "
            "https://aka.ms/smtp_auth_disabled for more information.",
            "smtp_auth_disabled",
        ),
        ("535 5.7.139 Authentication unsuccessful, the user credentials were incorrect.", None),
        ("535 5.7.3 Authentication unsuccessful [FR3P281CA0094.DEUP281.PROD.OUTLOOK.COM]", None),  # a password refused
        (
            "AUTH XOAUTH2 rejected: 535 5.7.3 Authentication unsuccessful [LO2P265CA0061.GBRP265.PROD.OUTLOOK.COM]",
            "oauth2_mailbox_not_permitted",
        ),
        (
            "534-5.7.9 Application-specific password required. Learn more at\r\n"
            "534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor z19sm307897wmi.43 - gsmtp",
            "app_password_required",
        ),
        (
            "550-5.4.5 Daily user sending limit exceeded. For more information on Gmail\r\n550-5.4.5 sending limits go "
            "to\r\n"
            "550 5.4.5  https://support.google.com/a/answer/166852 d75a77b69052e-4535f85b3d9sm7257481cf.29 - gsmtp",
            "daily_quota_exceeded",
        ),
        ("550 5.4.5 Daily user sending quota exceeded. o65sm25351206pga.71 - gsmtp", "daily_quota_exceeded"),
        ("454 Throttling failure: Daily message quota exceeded.", "daily_quota_exceeded"),
        ("454 Throttling failure: Maximum sending rate exceeded.", "throttled_454"),
        ("421-4.7.0 Try again later, closing connection. (EHLO)", "throttled_454"),
        (
            "421 4.7.0 Try again later, closing connection. (EHLO) v6-20020a50c406000000b00461d375b0a5sm78344edf.43 - "
            "gsmtp",
            "throttled_454",
        ),
        (
            "554 Message rejected: Email address is not verified. The following identities failed the check in region "
            "EU-WEST-1: sender@example.net",
            "ses_sandbox_554",
        ),
        (
            "550 The from address does not match a verified Sender Identity. Mail cannot be sent until this error is "
            "resolved. Visit https://sendgrid.com/docs/for-developers/sending-email/sender-identity/ to see the Sender "
            "Identity requirements",
            "sender_identity_not_verified",
        ),
        ("552 5.3.4 Message size exceeds fixed limit", "message_too_large"),
        ("552 5.3.4 Message size exceeds fixed maximum message size", "message_too_large"),
        (
            "552-5.2.3 Your message exceeded Google's message size limits. Please visit\r\n"
            "552-5.2.3  https://support.google.com/mail/?p=MaxSizeError to view our size\r\n552 5.2.3 guidelines.",
            "message_too_large",
        ),
        (
            '{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the '
            "secret "
            'being sent in the request is the client secret value, not the client secret ID"}',
            "oauth2_invalid_client",
        ),
        (
            "AADSTS7000222: The provided client secret keys for app 'd87bcc39-1750-4ca0-ad54-f8d0efbb2735' "
            "are expired.",
            "oauth2_invalid_client",
        ),
        (
            "AADSTS700016: Application with identifier '160c5842-eeba-487b-bb30-be9fae7878d0' was not found in the "
            "directory '1cdf1d7c-ca85-45c7-b1a6-0d197aa07dc5'.",
            "oauth2_app_not_found",
        ),
        (
            '{"error": "invalid_grant", "error_description": "Token has been expired or revoked."}',
            "oauth2_invalid_grant",
        ),
        ("cannot reach https://oauth2.googleapis.com/token: timed out", "oauth2_token_endpoint_unreachable"),
        ("250 2.0.0 OK", None),
        ("535 5.7.8 Username and Password not accepted.", None),
        ("", None),
        (None, None),
    ],
)
def test_published_texts(text, cause):
    assert classify_reply(text) == cause


def test_a_cause_the_tool_names_wins_and_an_unknown_name_is_ignored():
    named = "smarthost-oauth2: oauth2_invalid_grant: the endpoint said something new"
    assert classify_reply(named) == "oauth2_invalid_grant"
    assert (
        classify_reply("smarthost-oauth2: made_up_cause: 454 Throttling failure: Maximum sending rate exceeded.")
        == "throttled_454"
    )


def test_every_cause_has_one_rule_and_no_vocabulary_repeats_another():
    ruled = [cause for cause, _pattern in provider_replies.REPLY_RULES]
    assert sorted(ruled) == sorted(REPLY_CAUSES)
    assert not set(REPLY_CAUSES) & set(maillog.REMEDIES)
    assert not set(REPLY_CAUSES) & set(smtp_probe.CAUSES)


@pytest.mark.parametrize("vocabulary", ["REPLY_CAUSES", "maillog.REMEDIES", "smtp_probe.CAUSES"])
def test_remedies_name_only_role_variables_that_exist(vocabulary):
    remedies = {
        "REPLY_CAUSES": REPLY_CAUSES,
        "maillog.REMEDIES": maillog.REMEDIES,
        "smtp_probe.CAUSES": smtp_probe.CAUSES,
    }[vocabulary]
    known = role_variables() | {"relay_probe"}  # the module, not a variable
    for cause, remedy in remedies.items():
        for name in re.findall(r"\brelay_[a-z0-9_]+", remedy):
            assert name in known, (cause, name)


def test_remedies_point_at_the_role_not_at_main_cf_where_the_role_owns_the_setting():
    # The role owns the rate (relay_max_send_rate) and the concurrency (relay_destination_concurrency_limit).
    for cause in ("throttled_454", "too_many_connections"):
        assert "relay_destination_concurrency_limit" in REPLY_CAUSES[cause]
        main_cf = r"\b(default|smtp|<transport>)_destination_(rate_delay|concurrency_limit)\b"
        assert not re.search(main_cf, REPLY_CAUSES[cause])
    assert "relay_max_send_rate" in REPLY_CAUSES["throttled_454"]
    assert "relay_auth: oauth2" in REPLY_CAUSES["basic_auth_disabled"]
    for cause, remedy in list(maillog.REMEDIES.items()) + list(REPLY_CAUSES.items()):
        assert not re.search(r"\bsmtp_tls_(security_level|wrappermode|CAfile) = ", remedy), cause
