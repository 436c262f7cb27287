# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The providers' published refusals (replies.json), each at its SMTP stage, and the modes that make them."""

from __future__ import annotations

import json
import os
import re
import smtplib
import subprocess
import sys
import threading

import pytest
from emulator_harness import EMULATOR_DIR, PROVIDERS, connect, emulatorctl, login, send, trusting

with open(os.path.join(EMULATOR_DIR, "replies.json"), encoding="utf-8") as _handle:
    REPLIES = json.load(_handle)
CASES = REPLIES["cases"]
STAGES = {"ehlo", "auth", "mail", "rcpt", "data_command", "data"}
OFFICE365_HOST = "smtp.office365.com"
GMAIL_HOST = "smtp.gmail.com"
SES_HOST = PROVIDERS["ses"]["hostnames"][0]


def message(sender="sender@example.test", size=0):
    body = "x" * 76 + "\r\n"
    return "From: Sender <%s>\r\nTo: rcpt@example.net\r\nSubject: provider replies\r\nX-Test-Tag: replies\r\n\r\n%s" % (
        sender,
        body * (size // len(body) + 1) if size else "body\r\n",
    )


def text_of(case, provider, stage=None):
    """The table's text with its placeholders as a prefix-free pattern check needs: the first line."""
    entry = CASES[case]["providers"].get(provider) or CASES[case]["default"]
    if "stages" in entry:
        entry = entry["stages"][stage]
    reply = entry["reply"]
    return reply if isinstance(reply, str) else "\r\n".join(reply)


def matches(template, reply):
    """A reply is the table's template with {server} = emulator and any session id."""
    pattern = re.escape(template).replace(re.escape("{sid}"), r"\S+").replace(re.escape("{server}"), "emulator")
    return re.fullmatch(pattern, reply) is not None


# -- the table ---------------------------------------------------------------------------------


def test_every_reply_names_its_source_and_a_known_stage():
    for case, table in CASES.items():
        entries = list(table.get("providers", {}).items())
        if "default" in table:
            entries.append(("default", table["default"]))
        assert entries, case
        for provider, entry in entries:
            if "stages" in entry:
                variants = entry["stages"].items()
            else:
                variants = [(entry.get("stage") or table.get("stage"), entry)]
            for stage, variant in variants:
                assert variant.get("source"), (case, provider)
                assert stage is None or stage in STAGES, (case, provider, stage)
                lines = variant["reply"] if isinstance(variant["reply"], list) else [variant["reply"]]
                codes = {line[:3] for line in lines}
                assert len(codes) == 1 and codes.pop().isdigit(), (case, provider)
                # Multi-line replies continue with "-" and end with " ".
                assert all(line[3] == "-" for line in lines[:-1]) and lines[-1][3] == " ", (case, provider)
            if provider != "default":
                assert provider in PROVIDERS, (case, provider)
    for mode, case in emulatorctl.MODE_CASES.items():
        assert case in CASES, mode


def test_size_limits_are_the_published_figures():
    sizes = CASES["message_too_large"]["providers"]
    assert sizes["ses"]["max_size"] == 40 * 1024 * 1024
    assert sizes["gmail"]["advertised_size"] == 35882577
    assert sizes["office365"]["max_size"] == 35 * 1024 * 1024
    assert sizes["office365"]["advertised_size"] == 150 * 1024 * 1024


@pytest.mark.parametrize(
    "doc, message_text",
    [
        ({"mode": "daily_limit", "providers": ["sendgrid"]}, "daily_limit has no reply text for sendgrid"),
        ({"mode": "send_as_denied", "providers": ["gmail"]}, "no reply text for gmail"),
        ({"mode": "size_limit"}, "size_limit needs max_size"),
        ({"mode": "daily_limit", "after": -1}, "after must be a whole number of at least 0"),
        ({"mode": "concurrency_limit", "max_connections": 0}, "max_connections must be"),
        ({"mode": "basic_auth_disabled", "at": "rcpt"}, "at must be one of auth, mail"),
        ({"mode": "throttle", "verified": ["a@b"]}, "verified applies only"),
        ({"mode": "normal", "after": 3}, "after applies only to the daily_limit mode"),
    ],
)
def test_invalid_provider_modes_are_refused(doc, message_text):
    with pytest.raises(ValueError, match=message_text):
        emulatorctl.parse_mode(doc)


# -- authentication texts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "provider, hostname, expected",
    [
        ("office365", OFFICE365_HOST, "535 5.7.3 Authentication unsuccessful [emulator]"),
        ("office365", "emulator", "535 5.7.3 Authentication unsuccessful [emulator]"),  # no SNI, as Postfix
        ("gmail", GMAIL_HOST, text_of("auth_failed", "gmail")),
        ("sendgrid", "smtp.sendgrid.net", "535 5.7.8 Authentication credentials invalid"),
    ],
)
def test_wrong_password_gets_the_providers_text(emulator, provider, hostname, expected):
    with connect(emulator, name=hostname) as client:
        client.user, client.password = PROVIDERS[provider]["username"], "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.auth("PLAIN", client.auth_plain)
    assert refused.value.smtp_code == 535
    [reply] = emulator.records("replies")
    assert matches(expected, reply["reply"]), reply["reply"]
    assert (reply["stage"], reply["provider"]) == ("auth", provider)


def test_gmail_success_text(emulator):
    with connect(emulator, name=GMAIL_HOST) as client:
        assert login(client, "gmail") == (235, b"2.7.0 Accepted")
    with connect(emulator, name=OFFICE365_HOST) as client:
        assert login(client, "office365") == (235, b"2.7.0 Authentication successful")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_basic_auth_disabled_refuses_passwords_at_auth(emulator, mechanism):
    emulator.set_mode("basic_auth_disabled")
    with connect(emulator, name=OFFICE365_HOST) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            login(client, "office365", mechanism)
    assert refused.value.smtp_code == 535
    assert refused.value.smtp_error == (
        b"5.7.139 Authentication unsuccessful, basic authentication is disabled. [emulator]"
    )
    [attempt] = emulator.records("auth")
    assert (attempt["success"], attempt["reason"]) == (False, "mode basic_auth_disabled")
    # Providers without the text are left alone.
    with connect(emulator) as client:
        assert login(client, "sendgrid")[0] == 235


def test_basic_auth_disabled_at_mail_answers_5_7_30_after_a_good_login(emulator):
    emulator.set_mode("basic_auth_disabled", at="mail")
    with connect(emulator, name=OFFICE365_HOST) as client:
        assert login(client, "office365")[0] == 235
        assert client.mail("relay@contoso.example.test") == (
            550,
            b"5.7.30 Basic authentication is not supported for Client Submission.",
        )
    [reply] = emulator.records("replies")
    assert (reply["code"], reply["stage"], reply["mode"]) == ("550", "mail", "basic_auth_disabled")
    assert emulator.records() == []


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_app_password_required_is_gmails_multiline_534(emulator, mechanism):
    emulator.set_mode("app_password_required", providers=["gmail"])
    with connect(emulator, name=GMAIL_HOST) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            login(client, "gmail", mechanism)
    assert refused.value.smtp_code == 534
    lines = refused.value.smtp_error.decode().split("\n")
    assert lines[0] == "5.7.9 Application-specific password required. For more information, go to"
    assert lines[1].startswith("5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor ")
    assert lines[1].endswith(" - gsmtp")
    assert emulator.counters()["replies"]["534"] == 1


# -- quotas and limits --------------------------------------------------------------------------


def test_gmail_daily_limit_after_n_then_lifted(emulator):
    """The test issue #16 wants, small: N accepted, then 550 5.4.5 to the DATA command until lifted."""
    emulator.set_mode("daily_limit", providers=["gmail"], after=5)
    codes = []
    with connect(emulator, name=GMAIL_HOST) as client:
        login(client, "gmail")
        for _unused in range(8):
            code, text = send(client, message=message())
            codes.append(code)
            if code != 250:
                refusal = text
                client.rset()
    assert codes == [250] * 5 + [550] * 3
    lines = refusal.decode().split("\n")
    assert lines[0] == "5.4.5 Daily user sending limit exceeded. For more information on Gmail"
    assert lines[1] == "5.4.5 sending limits go to"
    assert lines[2].startswith("5.4.5  https://support.google.com/a/answer/166852 ")
    replies = emulator.records("replies")
    assert [(r["code"], r["stage"]) for r in replies] == [("550", "data_command")] * 3
    assert replies[0]["accepted_before_limit"] == 5
    emulator.set_mode("normal")
    with connect(emulator, name=GMAIL_HOST) as client:
        login(client, "gmail")
        assert [send(client, message=message())[0] for _unused in range(3)] == [250] * 3
    assert len(emulator.records()) == 8


def test_daily_limit_answers_each_providers_text_at_its_stage(emulator):
    emulator.set_mode("daily_limit")
    with connect(emulator, name=SES_HOST) as client:
        login(client, "ses")
        assert client.mail("sender@example.test") == (454, b"Throttling failure: Daily message quota exceeded")
    with connect(emulator, name=OFFICE365_HOST) as client:
        login(client, "office365")
        assert send(client, "relay@contoso.example.test", message=message("relay@contoso.example.test")) == (
            554,
            b"5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
        )
    with connect(emulator) as client:  # SendGrid has no daily-limit text: not affected
        login(client, "sendgrid")
        assert send(client)[0] == 250
    stages = [(r["provider"], r["stage"]) for r in emulator.records("replies")]
    assert stages == [("ses", "mail"), ("office365", "data")]


def test_daily_limit_stage_can_be_moved(emulator):
    emulator.set_mode("daily_limit", providers=["gmail"], at="mail")
    with connect(emulator, name=GMAIL_HOST) as client:
        login(client, "gmail")
        code, _text = client.mail("sender@example.test")
    assert code == 550
    assert emulator.records("replies")[0]["stage"] == "mail"


def test_concurrency_limit_refuses_sessions_beyond_k_with_432(emulator):
    emulator.set_mode("concurrency_limit", max_connections=2)
    clients = [connect(emulator, name=OFFICE365_HOST) for _unused in range(3)]
    try:
        for client in clients:
            login(client, "office365")
        sender = "relay@contoso.example.test"
        assert send(clients[0], sender, message=message(sender))[0] == 250
        assert send(clients[1], sender, message=message(sender))[0] == 250
        code, text = send(clients[2], sender, message=message(sender))
        assert code == 432
        assert text == (
            b"4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending "
            b"for more information. [Hostname=emulator]"
        )
        clients[0].quit()
        emulator.closed_connections(1)
        clients[2].rset()
        assert send(clients[2], sender, message=message(sender))[0] == 250
    finally:
        for client in clients[1:]:
            client.close()
    [refusal] = emulator.records("replies")
    assert (refusal["stage"], refusal["concurrent_rank"]) == ("data", 3)


def test_default_concurrency_limit_is_exchanges_three():
    assert emulatorctl.parse_mode("concurrency_limit")["max_connections"] == 3


def test_send_as_denied_names_mailbox_and_address(emulator):
    emulator.set_mode("send_as_denied")
    mailbox = PROVIDERS["office365"]["username"]
    with connect(emulator, name=OFFICE365_HOST) as client:
        login(client, "office365")
        code, text = send(client, mailbox, message=message("other@contoso.example.test"))
        assert code == 554
        assert text.decode().startswith(
            "5.2.252 SendAsDenied; %s not allowed to send as other@contoso.example.test; "
            "STOREDRV.Submission.Exception:SendAsDeniedException" % mailbox
        )
        assert send(client, mailbox, message=message(mailbox))[0] == 250
    emulator.set_mode("send_as_denied", verified=["@contoso.example.test"])
    with connect(emulator, name=OFFICE365_HOST) as client:
        login(client, "office365")
        assert send(client, mailbox, message=message("other@contoso.example.test"))[0] == 250
    [refusal] = emulator.records("replies")
    assert (refusal["stage"], refusal["from_address"]) == ("data", "other@contoso.example.test")


def test_sendgrid_sender_identity(emulator):
    emulator.set_mode("sender_identity", verified=["@verified.example"])
    with connect(emulator) as client:
        login(client, "sendgrid")
        code, text = send(client, message=message("news@unverified.example"))
        assert code == 550
        assert text.decode() == text_of("sender_identity", "sendgrid")[4:]
        assert send(client, message=message("news@verified.example"))[0] == 250


def test_try_again_later_at_mail_closes_the_connection(emulator):
    emulator.set_mode("try_again_later", providers=["gmail"])
    client = connect(emulator, name=GMAIL_HOST)
    login(client, "gmail")
    code, text = client.mail("sender@example.test")
    assert code == 421
    assert text.decode().startswith("4.7.0 Try again later, closing connection. (MAIL) ")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    [connection] = emulator.closed_connections(1)
    assert connection["replies"] == {"421": 1}


def test_try_again_later_at_ehlo_uses_sni(emulator):
    emulator.set_mode("try_again_later", providers=["gmail"], at="ehlo")
    client = smtplib.SMTP_SSL(context=trusting(emulator.certs), timeout=10)
    client._host = GMAIL_HOST  # SNI
    client.connect("127.0.0.1", emulator.implicit_port)
    code, text = client.ehlo("client.example.test")
    assert code == 421
    assert text.decode().split("\n", maxsplit=1)[0] == "4.7.0 Try again later, closing connection. (EHLO)"
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    [refusal] = emulator.records("replies")
    assert (refusal["code"], refusal["stage"], refusal["provider"]) == ("421", "ehlo", "gmail")
    assert refusal["reply"].startswith("421-4.7.0 Try again later, closing connection. (EHLO)\r\n")
    with connect(emulator, implicit=True) as client:  # SNI smtp.sendgrid.net: not limited
        assert login(client, "sendgrid")[0] == 235


def test_size_limit_is_advertised_and_enforced_after_data(emulator):
    emulator.set_mode("size_limit", max_size=2000)
    with connect(emulator) as client:
        assert client.esmtp_features["size"] == "2000"
        login(client, "sendgrid")
        code, text = send(client, message=message(size=3000))
        assert (code, text) == (552, b"5.3.4 Message size exceeds fixed limit")
        assert send(client, message=message())[0] == 250
        assert client.mail("sender@example.test", ["SIZE=5000"])[0] == 552
    stages = [(r["stage"], r["code"]) for r in emulator.records("replies")]
    assert stages == [("data", "552"), ("mail", "552")]


def test_size_limit_uses_the_providers_text(emulator):
    emulator.set_mode("size_limit", max_size=2000, providers=["gmail"])
    with connect(emulator, name=GMAIL_HOST) as client:
        login(client, "gmail")
        code, text = send(client, message=message(size=3000))
    assert code == 552
    assert text.decode().startswith("5.2.3 Your message exceeded Google's message size limits. Please visit\n")


@pytest.mark.parametrize(
    "hostname, size",
    [
        (OFFICE365_HOST, 157286400),
        (GMAIL_HOST, 35882577),
        (SES_HOST, 41943040),
        ("smtp.sendgrid.net", 33554432),
        ("emulator", 157286400),
    ],
)
def test_ehlo_size_is_the_providers_when_sni_names_it(emulator, hostname, size):
    with connect(emulator, name=hostname, implicit=True) as client:
        assert client.esmtp_features["size"] == str(size)


def test_ses_throttle_text_is_the_published_one(emulator):
    emulator.set_mode("throttle")
    with connect(emulator, name=SES_HOST) as client:
        login(client, "ses")
        assert client.mail("sender@example.test") == (454, b"Throttling failure: Maximum sending rate exceeded")


def test_control_cli_knows_the_new_modes(emulator):
    ctl = [sys.executable, os.path.join(EMULATOR_DIR, "emulatorctl.py"), "--dir", emulator.state_dir]
    result = subprocess.run(
        ctl + ["mode", "daily_limit", "--providers", "gmail", "--after", "10"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout)["after"] == 10 and result.stderr == ""
    refused = subprocess.run(
        ctl + ["mode", "daily_limit", "--providers", "postmark"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2 and "no reply text for postmark" in refused.stderr


def test_a_hundred_messages_with_the_limit_after_ten_all_arrive_once_after_it_is_lifted(emulator):
    """What Postfix does with smtp_delivery_status_filter, done by hand: retry every refused message."""
    emulator.set_mode("daily_limit", providers=["gmail"], after=10)
    pending = ["m%03d" % n for n in range(100)]
    with connect(emulator, name=GMAIL_HOST) as client:
        login(client, "gmail")
        for tag in list(pending):
            code, _text = send(client, message=message().replace("X-Test-Tag: replies", "X-Test-Tag: " + tag))
            if code == 250:
                pending.remove(tag)
            else:
                assert code == 550
                client.rset()
    assert len(pending) == 90
    emulator.set_mode("normal")
    with connect(emulator, name=GMAIL_HOST) as client:
        login(client, "gmail")
        for tag in pending:
            assert send(client, message=message().replace("X-Test-Tag: replies", "X-Test-Tag: " + tag))[0] == 250
    tags = [m["headers"]["x-test-tag"] for m in emulator.records()]
    assert sorted(tags) == ["m%03d" % n for n in range(100)]


def test_concurrent_sessions_under_daily_limit_never_exceed_n(emulator):
    emulator.set_mode("daily_limit", providers=["gmail"], after=7)
    accepted = []

    def worker():
        with connect(emulator, name=GMAIL_HOST) as client:
            login(client, "gmail")
            for _unused in range(5):
                code = send(client, message=message())[0]
                accepted.append(code == 250)
                if code != 250:
                    client.rset()

    threads = [threading.Thread(target=worker) for _unused in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(accepted) == 7 and len(accepted) == 20


def test_a_provider_mode_leaves_providers_without_the_text_alone(emulator):
    emulator.set_mode("app_password_required")
    with connect(emulator, name=SES_HOST) as client:
        assert login(client, "ses")[0] == 235
    with connect(emulator, name=GMAIL_HOST) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            login(client, "gmail")
