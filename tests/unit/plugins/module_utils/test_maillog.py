# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The log parser and diagnosis on real Postfix 3.7 logs (tests/unit/fixtures/postfix-logs, see capture/).

Each fixture message carries Message-ID <fixture.LABEL@relay-test.example.net>; LABEL says which
relay stand-in it was sent to, so the expectations below follow from how it was captured.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils import maillog, provider_replies
from ansible_collections.smarthost.postfix.plugins.module_utils.maillog import (
    MailLog,
    diagnose,
    parse_line,
    provider_message_id,
)
from ansible_collections.smarthost.postfix.plugins.module_utils.provider_replies import REPLY_CAUSES, tool_cause
from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils import maillog_gen

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "postfix-logs")
CAPTURED = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.timezone.utc)  # the capture container's clock
SES_ID = "0100018c9f3e4b1a-6d2f3c4e-8a7b-4c1d-9e2f-3a4b5c6d7e8f-000000"

# label -> (status, diagnosed cause, provider message id)
EXPECTED = {
    "no-worthy-mechs": ("deferred", "no_worthy_mechs", None),
    "ses-ok": ("sent", None, SES_ID),
    "generic-ok": ("sent", None, "20261122.relaytest.1@mail.provider.test"),
    "auth-535": ("deferred", "auth_failed_535", None),
    "throttled": ("deferred", "throttled_454", None),
    "sandbox": ("bounced", "ses_sandbox_554", None),
    "no-starttls": ("deferred", "tls_required_not_offered", None),
    "rogue-cert": ("deferred", "certificate_verify_failed", None),
    "implicit-ok": ("sent", None, SES_ID),
    "unknown-user": ("bounced", "recipient_rejected", None),
    "broken-tls": ("deferred", "tls_handshake_failed", None),
    "refused": ("deferred", "connection_refused", None),
    "nxdomain": ("bounced", "dns_failure", None),
    "reuse": ("deferred", "tls_handshake_failed", None),
    "two-recipients": ("bounced", "recipient_rejected", None),
    "wrapper": ("deferred", "no_greeting", None),
    "timeout": ("deferred", "connection_timeout", None),
    "no-password": ("bounced", "auth_required_530", None),
    "no-tls": ("bounced", "starttls_required_530", None),
}
SYSLOG_FORMATS = ["debian12-mail.log", "traditional-maillog", "journal-short-iso.log", "journal.json"]


def fixture_path(name):
    return os.path.join(FIXTURES, name)


def load(name):
    log = MailLog()
    with open(fixture_path(name), encoding="utf-8") as handle:
        log.feed_lines(handle, now=CAPTURED)
    return log


def trace_label(log, label):
    message_id = "fixture.%s@relay-test.example.net" % label
    return maillog.trace_result(log, maillog.followed_queue_ids(log, message_id=message_id))


@pytest.mark.parametrize("name", SYSLOG_FORMATS)
@pytest.mark.parametrize("label", sorted(EXPECTED))
def test_every_captured_failure_is_diagnosed_in_every_format(name, label):
    status, cause, provider_id = EXPECTED[label]
    result = trace_label(load(name), label)
    assert result["found"] and result["final"]
    assert result["status"] == status
    assert (result["diagnosis"] or {}).get("cause") == cause
    assert result["provider_message_id"] == provider_id
    assert any("message-id=<fixture.%s@" % label in line for line in result["lines"])


@pytest.mark.parametrize("name", SYSLOG_FORMATS[1:])
def test_all_formats_yield_the_same_histories(name):
    def essentials(log):
        return dict(
            (
                queue_id,
                (
                    h["message_id"],
                    h["sender"],
                    h["nrcpt"],
                    h["removed"],
                    [(d["to"], d["relay"], d["dsn"], d["status"], d["reason"]) for d in h["deliveries"]],
                ),
            )
            for queue_id, h in log.messages.items()
        )

    assert essentials(load(name)) == essentials(load("debian12-mail.log"))


def test_timestamps_of_each_format_agree_to_the_second():
    times = {}
    for name in SYSLOG_FORMATS:
        sent = load(name).last_sent
        times[name] = datetime.datetime.fromisoformat(sent["time"])
    assert max(times.values()) - min(times.values()) < datetime.timedelta(seconds=1)


def test_sent_delivery_details():
    result = trace_label(load("debian12-mail.log"), "ses-ok")
    assert result["relay"] == "127.0.0.1[127.0.0.1]:10025"
    assert result["dsn"] == "2.0.0"
    assert result["reason"] == "250 Ok " + SES_ID
    assert result["delays"].count("/") == 3 and isinstance(result["delay"], float)
    assert result["diagnosis"] is None


def test_delivery_agent_warnings_travel_with_the_delivery():
    log = load("debian12-mail.log")
    no_mechs = trace_label(log, "no-worthy-mechs")
    assert any("warning: SASL authentication failure: No worthy mechs found" in line for line in no_mechs["lines"])
    rogue = trace_label(log, "rogue-cert")
    assert any(
        "certificate verification failed for 127.0.0.1[127.0.0.1]:10031: self-signed certificate" in line
        for line in rogue["lines"]
    )
    reuse = trace_label(log, "reuse")
    assert any("connect to private/tlsproxy service" in line for line in reuse["lines"])


def test_worst_recipient_decides_and_each_is_listed():
    result = trace_label(load("debian12-mail.log"), "two-recipients")
    assert sorted((r["to"], r["status"]) for r in result["recipients"]) == [
        ("nobody@unknown-user.test", "bounced"),
        ("user@ses-ok.test", "sent"),
    ]


def test_bounce_links_to_its_notification():
    log = load("debian12-mail.log")
    sandbox = log.messages[trace_label(log, "sandbox")["queue_id"]]
    notice = log.messages[sandbox["notification_queue_id"]]
    assert notice["sender"] == ""
    assert notice["deliveries"][0]["to"] == "sender@example.net"


def test_postlogd_file_with_long_queue_ids_and_an_expired_message():
    log = load("postlogd-postfix.log")
    sent = trace_label(log, "long-id-sent")
    assert sent["status"] == "sent" and len(sent["queue_id"]) > 12 and "z" in sent["queue_id"]
    assert trace_label(log, "long-id-535")["diagnosis"]["cause"] == "auth_failed_535"
    expired = [h for h in log.messages.values() if h["expired"]]
    assert len(expired) == 1
    result = maillog.trace_result(log, [expired[0]["queue_id"]])
    assert result["status"] == "expired" and result["final"]
    assert result["diagnosis"]["cause"] == "connection_refused"


@pytest.mark.parametrize("queue_id", ["4jXDzX693QzCy0y", "4jXDWG6l2QzCqyr", "2985118041D"])
def test_long_and_short_queue_ids_are_recognised(queue_id):
    record = parse_line("Nov 22 03:27:52 relay-test postfix/qmgr[1520]: %s: removed" % queue_id, now=CAPTURED)
    assert maillog.parse_event(record) == {"queue_id": queue_id, "type": "removed"}


@pytest.mark.parametrize("message", ["statistics: max connection rate 1/60s", "warning: SASL authentication failure"])
def test_words_followed_by_a_colon_are_not_queue_ids(message):
    record = parse_line("Nov 22 03:27:52 relay-test postfix/anvil[1]: " + message, now=CAPTURED)
    assert maillog.parse_event(record) is None


def test_parse_line_formats():
    rfc3339 = parse_line(
        "2026-11-22T03:19:06.091030+00:00 relay-test postfix/pickup[1154]: 162EB184635: uid=0 from=<a@b>"
    )
    assert rfc3339.time == datetime.datetime(2026, 11, 22, 3, 19, 6, 91030, tzinfo=datetime.timezone.utc)
    assert (rfc3339.host, rfc3339.program, rfc3339.pid, rfc3339.service) == (
        "relay-test",
        "postfix/pickup",
        1154,
        "pickup",
    )
    short_iso = parse_line("2026-11-22T03:19:06+0100 relay-test postfix/smtp[9]: x")
    assert short_iso.time.utcoffset() == datetime.timedelta(hours=1)
    assert parse_line("not a log line") is None
    assert parse_line('{"MESSAGE": "no identifier"}') is None


@pytest.mark.parametrize(
    "now, year",
    [
        (datetime.datetime(2026, 11, 23, tzinfo=datetime.timezone.utc), 2026),
        (datetime.datetime(2027, 1, 5, tzinfo=datetime.timezone.utc), 2026),  # December lines read in January
        (datetime.datetime(2026, 11, 22, 3, 0, tzinfo=datetime.timezone.utc), 2026),
    ],
)
def test_traditional_timestamps_get_the_most_recent_past_year(now, year):
    record = parse_line("Nov 22 03:19:35 relay-test postfix/qmgr[1735]: 162EB184635: removed", now=now)
    assert record.time.year == year and record.time.tzinfo is not None


def test_journal_json_non_utf8_message_is_decoded():
    record = parse_line(
        '{"MESSAGE": [65, 66, 255], "SYSLOG_IDENTIFIER": "postfix/smtp", "_PID": "7", '
        '"__REALTIME_TIMESTAMP": "1795316853212250"}'
    )
    assert record.message == "AB\ufffd" and record.pid == 7 and record.time.year == 2026


def test_reused_queue_id_starts_a_new_history():
    lines = [
        "Nov 22 03:00:00 h postfix/cleanup[1]: ABCDEF123: message-id=<old@x>",
        "Nov 22 03:00:01 h postfix/smtp[2]: ABCDEF123: to=<a@x>, relay=r[1.2.3.4]:587, delay=1, delays=0/0/0/1, "
        "dsn=2.0.0, status=sent (250 ok)",
        "Nov 22 03:00:02 h postfix/qmgr[3]: ABCDEF123: removed",
        "Nov 22 04:00:00 h postfix/pickup[4]: ABCDEF123: uid=0 from=<me@x>",
        "Nov 22 04:00:00 h postfix/cleanup[1]: ABCDEF123: message-id=<new@x>",
    ]
    log = MailLog()
    log.feed_lines(lines, now=CAPTURED)
    result = maillog.trace_result(log, maillog.followed_queue_ids(log, message_id="new@x"))
    assert result["status"] == "queued" and not result["final"]


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("250 Ok " + SES_ID, SES_ID),  # Amazon SES
        ("250 2.0.0 Ok: queued as 4Hx7zW1Lx5z2Vb", "4Hx7zW1Lx5z2Vb"),  # Postfix-based relays
        ("250 2.0.0 OK: queued as <202611221200.1234@smtp-relay.example>", "202611221200.1234@smtp-relay.example"),
        ("250 OK id=1rABCd-00AbCd-2x", "1rABCd-00AbCd-2x"),
        (
            "250 2.6.0 <MW4PR01MB1234.namprd01.prod.example> [InternalId=1, Hostname=X] Queued mail for delivery",
            "MW4PR01MB1234.namprd01.prod.example",
        ),
        ("250 2.0.0 OK  1795316853 d2e1a72fcca58-7a1b2c3d4e5f.123 - gsmtp", "d2e1a72fcca58-7a1b2c3d4e5f.123"),
        ("250 2.0.0 Ok", None),
        ("250 Great success", None),
        (None, None),
    ],
)
def test_provider_message_id(reply, expected):
    assert provider_message_id(reply) == expected


@pytest.mark.parametrize(
    "reason, cause",
    [
        (
            "SASL authentication failed; server email-smtp.eu-west-1.amazonaws.com[52.1.2.3] said: 535 Authentication "
            "Credentials Invalid",
            "auth_failed_535",
        ),
        (
            "host smtp.example[1.2.3.4] said: 421 4.7.0 Try again later, closing connection. (in reply to MAIL FROM "
            "command)",
            "throttled_454",
        ),
        (
            "host email-smtp.us-east-1.amazonaws.com[3.2.1.0] said: 454 Throttling failure: Daily message quota "
            "exceeded. "
            "(in reply to end of DATA command)",
            "daily_quota_exceeded",
        ),
        (
            "host outlook.office365.com[52.96.1.2] said: 421 4.3.2 The maximum number of concurrent connections per "
            "resource "
            "forest has exceeded a limit, closing transmission channel (in reply to MAIL FROM command)",
            "too_many_connections",
        ),
        (
            "host smtp.office365.com[52.96.1.2] said: 550 5.1.90 Your message can't be sent because you've reached "
            "your daily "
            "limit for message recipients (in reply to end of DATA command)",
            "daily_quota_exceeded",
        ),
        (
            "SASL authentication failed; server smtp.office365.com[52.96.1.2] said: 535 5.7.139 Authentication "
            "unsuccessful, "
            "the user credentials were incorrect. [PH0PR07CA0004.namprd07.prod.outlook.com]",
            "auth_failed_535",
        ),
        ("lost connection with smtp.example[1.2.3.4] while receiving the initial server greeting", "no_greeting"),
        ("connect to smtp.example[1.2.3.4]:25: No route to host", "network_unreachable"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_diagnose_other_wordings(reason, cause):
    diagnosis = diagnose(reason)
    assert diagnosis["cause"] == cause
    assert diagnosis["remedy"] == maillog.CAUSES[cause]


def test_every_cause_has_a_remedy_and_a_rule():
    causes = [cause for cause, _pattern in maillog.DIAGNOSIS_RULES]
    assert sorted(causes + ["unknown"]) == sorted(maillog.REMEDIES)
    assert not set(maillog.REMEDIES) & set(REPLY_CAUSES), "a cause is in both vocabularies"
    assert set(maillog.CAUSES) == set(maillog.REMEDIES) | set(REPLY_CAUSES)
    assert (
        "libsasl2-modules" in maillog.REMEDIES["no_worthy_mechs"]
        and "cyrus-sasl-plain" in maillog.REMEDIES["no_worthy_mechs"]
    )
    assert "IAM" in maillog.REMEDIES["auth_failed_535"]


# --- the providers' published texts, as a real Postfix logged them (fixtures/postfix-logs/providers) --------

# label -> (status, cause): Postfix defers a refused login (smtp_sasl_auth_soft_bounce) and what a
# provider answers with 4xx; it bounces a 5xx unless smtp_delivery_status_filter says otherwise.
PROVIDER_EXPECTED = {
    "o365-concurrency": ("deferred", "too_many_connections"),
    "o365-sendas": ("bounced", "send_as_denied"),
    "o365-basic-5730": ("deferred", "basic_auth_disabled"),
    "o365-basic-57139": ("deferred", "basic_auth_disabled"),
    "o365-smtp-auth-off": ("deferred", "smtp_auth_disabled"),
    "o365-535": ("deferred", "auth_failed_535"),  # a password refused: OAuth's 535 5.7.3 comes through the token tool
    "gmail-app-password": ("deferred", "app_password_required"),
    "gmail-daily": ("bounced", "daily_quota_exceeded"),
    "gmail-daily-deferred": ("deferred", "daily_quota_exceeded"),  # through smtp_delivery_status_filter
    "gmail-ehlo": ("deferred", "throttled_454"),
    "ses-daily": ("deferred", "daily_quota_exceeded"),
    "ses-rate": ("deferred", "throttled_454"),
    "sendgrid-identity": ("bounced", "sender_identity_not_verified"),
    "size-postfix": ("bounced", "message_too_large"),
    "size-gmail": ("bounced", "message_too_large"),
    "oauth2-ok": ("sent", None),
    "oauth2-endpoint-down": ("deferred", "oauth2_token_endpoint_unreachable"),
    "oauth2-endpoint-timeout": ("deferred", "oauth2_token_endpoint_unreachable"),
    "oauth2-invalid-client": ("deferred", "oauth2_invalid_client"),
    "oauth2-secret-expired": ("deferred", "oauth2_invalid_client"),
    "oauth2-app-not-found": ("deferred", "oauth2_app_not_found"),
    "oauth2-invalid-grant": ("deferred", "oauth2_invalid_grant"),
    "oauth2-mailbox": ("deferred", "oauth2_mailbox_not_permitted"),
    "oauth2-quota": ("deferred", "daily_quota_exceeded"),
    "oauth2-certificate": ("deferred", "certificate_verify_failed"),
    "oauth2-two-lines": ("deferred", "too_many_connections"),
    "oauth2-sendas": ("bounced", "send_as_denied"),  # the tool exited 69: pipe(8) bounces
}
PROVIDER_FORMATS = ["providers/debian12-mail.log", "providers/traditional-maillog", "providers/journal.json"]


@pytest.mark.parametrize("name", PROVIDER_FORMATS)
@pytest.mark.parametrize("label", sorted(PROVIDER_EXPECTED))
def test_every_published_provider_text_is_diagnosed_in_every_format(name, label):
    status, cause = PROVIDER_EXPECTED[label]
    result = trace_label(load(name), label)
    assert result["found"] and result["final"]
    assert result["status"] == status
    assert (result["diagnosis"] or {}).get("cause") == cause
    if cause:
        assert result["diagnosis"]["remedy"] == maillog.CAUSES[cause]


# The token tool's own word for what failed, as its line names it, and where the provider's text alone decides.
TOOL_WORDS = {
    "oauth2-endpoint-down": ("token_endpoint_unreachable", False),
    "oauth2-endpoint-timeout": ("token_endpoint_timeout", False),
    "oauth2-invalid-client": ("invalid_client_secret", True),
    "oauth2-secret-expired": ("client_secret_expired", True),
    "oauth2-app-not-found": ("application_not_found", True),
    "oauth2-invalid-grant": ("invalid_grant", True),
    "oauth2-mailbox": ("xoauth2_rejected", False),  # 535 5.7.3 alone is a wrong password: the tool says XOAUTH2
    "oauth2-quota": ("sending_quota_exceeded", True),
    "oauth2-certificate": ("smtp_certificate_untrusted", True),
    "oauth2-sendas": ("provider_refused", True),  # no cause of ours: the provider's text decides
}


@pytest.mark.parametrize("label", sorted(TOOL_WORDS))
def test_the_token_tools_line_is_read_by_its_word_and_by_the_providers_text(label):
    word, text_decides = TOOL_WORDS[label]
    reason = trace_label(load("providers/debian12-mail.log"), label)["reason"]
    assert reason.startswith("smarthost-oauth2 %s: " % word)
    expected = PROVIDER_EXPECTED[label][1]
    assert tool_cause(reason) == provider_replies.TOKEN_TOOL_CAUSES.get(word)
    without_word = reason.replace("smarthost-oauth2 %s: " % word, "")
    if text_decides:
        assert diagnose(without_word)["cause"] == expected
    else:
        assert diagnose(without_word)["cause"] != expected
        assert provider_replies.TOKEN_TOOL_CAUSES[word] == expected


def test_every_token_tool_word_maps_to_a_known_cause():
    assert set(provider_replies.TOKEN_TOOL_CAUSES.values()) <= set(maillog.CAUSES)


def test_pipe_deliveries_report_the_transport_and_the_command_output():
    log = load("providers/debian12-mail.log")
    sent = trace_label(log, "oauth2-ok")
    assert (sent["relay"], sent["dsn"], sent["reason"]) == ("oauth2", "2.0.0", "delivered via oauth2 service")
    assert sent["provider_message_id"] is None
    # An output that begins with an enhanced status code gives pipe(8) the DSN, and the rest is the reason.
    deferred = trace_label(log, "oauth2-mailbox")
    assert deferred["dsn"] == "4.7.3" and deferred["relay"] == "oauth2"
    assert deferred["reason"].startswith("smarthost-oauth2 xoauth2_rejected: authentication failed (AUTH): 535 5.7.3")
    bounced = trace_label(log, "oauth2-sendas")
    assert bounced["status"] == "bounced" and bounced["dsn"] == "5.2.252"
    # Without a status code, pipe(8) names the exit status and joins the output's lines with a space.
    two_lines = trace_label(log, "oauth2-two-lines")
    assert two_lines["dsn"] == "4.3.0"
    assert two_lines["reason"].startswith(
        "temporary failure. Command output: token fetched smtp.office365.com said: 432"
    )


def test_multi_line_replies_are_logged_joined_with_their_codes():
    log = load("providers/debian12-mail.log")
    assert (
        "550-5.4.5 sending limits go to 550 5.4.5  https://support.google.com/a/answer/166852"
        in trace_label(log, "gmail-daily")["reason"]
    )
    assert (
        "Learn more at?534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor"
        in trace_label(log, "gmail-app-password")["reason"]
    )
    assert "refused to talk to me: 421-4.7.0 Try again later" in trace_label(log, "gmail-ehlo")["reason"]


def test_the_status_filter_turns_the_daily_limit_into_a_deferral():
    log = load("providers/debian12-mail.log")
    bounced, deferred = trace_label(log, "gmail-daily"), trace_label(log, "gmail-daily-deferred")
    assert (bounced["status"], bounced["dsn"]) == ("bounced", "5.4.5")
    assert (deferred["status"], deferred["dsn"]) == ("deferred", "4.4.5")


# --- reading and following ------------------------------------------------------------------


def test_file_source_reads_only_new_complete_lines_and_survives_rotation(tmp_path):
    path = tmp_path / "mail.log"
    path.write_text("one\ntwo\nthr")
    source = maillog.LogSource("file", path=str(path))
    assert source.read() == ["one", "two"]
    with open(path, "a") as handle:
        handle.write("ee\n")
    assert source.read() == ["three"]
    assert source.read() == []
    path.write_text("new\n")  # rotated: the file is shorter than what was read
    assert source.read() == ["new"]


def test_before_the_window_only_the_bounded_stretch_is_read_and_its_cut_first_line_skipped(tmp_path):
    path = tmp_path / "mail.log"
    start = datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.timezone.utc)
    write_lines(
        path, [(start + datetime.timedelta(seconds=n), "postfix/qmgr[1]: ABCDEF%05d: removed" % n) for n in range(100)]
    )
    line_length = len(path.read_text().splitlines()[0]) + 1
    source = maillog.LogSource("file", path=str(path))
    source.start_at(start + datetime.timedelta(seconds=90) + maillog.SINCE_MARGIN)  # the window starts at line 90
    window = source.read()
    assert parse_line(window[0]).message == "ABCDEF00090: removed" and len(window) == 10
    before = list(source.iter_before(max_bytes=3 * line_length + 5))
    assert [parse_line(line).message for line in before] == ["ABCDEF%05d: removed" % n for n in (87, 88, 89)]
    assert list(source.iter_before(max_bytes=10**6))[0].endswith("ABCDEF00000: removed")  # bounded by the file's start
    assert source.read() == []  # reading before the window does not move the window's reader


def test_before_the_window_from_the_journal_is_the_last_entries_until_its_start(tmp_path):
    calls = tmp_path / "calls"
    fake = tmp_path / "journalctl"
    fake.write_text('#!/bin/sh\necho "$@" >> %s\nhead -n 3 %s\n' % (calls, fixture_path("journal.json")))
    fake.chmod(0o755)
    source = maillog.LogSource("journal", journalctl=str(fake))
    since = datetime.datetime(2026, 11, 22, 3, 0, tzinfo=datetime.timezone.utc)
    source.start_at(since)
    assert len(list(source.iter_before(max_entries=7))) == 3
    assert len(source.read()) == 3
    before, window = calls.read_text().splitlines()
    assert "--until=@%d" % int((since - maillog.SINCE_MARGIN).timestamp()) in before and "--lines=7" in before
    assert "--since" not in before
    assert "--since=@" in window and "--after-cursor" not in window  # the look back left no cursor behind


def test_trace_follows_a_growing_log_until_the_message_is_sent(tmp_path):
    with open(fixture_path("debian12-mail.log"), encoding="utf-8") as handle:
        lines = handle.readlines()
    label_lines = [line for line in lines if "fixture.ses-ok@" in line]
    queue_id = label_lines[0].split(": ")[1]
    mine = [line for line in lines if " %s: " % queue_id in line]
    path = tmp_path / "mail.log"
    path.write_text("".join(mine[:2]))  # pickup and cleanup only: accepted, not delivered yet

    def deliver():
        time.sleep(1.2)
        with open(path, "a") as handle:
            handle.write("".join(mine[2:]))

    writer = threading.Thread(target=deliver)
    writer.start()
    result = maillog.trace(
        maillog.LogSource("file", path=str(path)),
        message_id="fixture.ses-ok@relay-test.example.net",
        timeout=10,
        poll_interval=0.2,
    )
    writer.join()
    assert result["status"] == "sent" and result["timed_out"] is False
    assert 1.0 <= result["elapsed"] < 5
    assert result["provider_message_id"] == SES_ID


def test_trace_times_out_on_an_unknown_message(tmp_path):
    path = tmp_path / "mail.log"
    shutil.copy(fixture_path("debian12-mail.log"), path)
    result = maillog.trace(
        maillog.LogSource("file", path=str(path)), message_id="nobody@nowhere", timeout=0.5, poll_interval=0.1
    )
    assert result["status"] == "not_found" and result["found"] is False and result["timed_out"] is True


def test_wait_for_sent_keeps_waiting_through_a_deferral(tmp_path):
    path = tmp_path / "mail.log"
    shutil.copy(fixture_path("debian12-mail.log"), path)
    source = maillog.LogSource("file", path=str(path))
    result = maillog.trace(
        source, message_id="fixture.auth-535@relay-test.example.net", timeout=0.5, wait_for="sent", poll_interval=0.1
    )
    assert result["status"] == "deferred" and result["timed_out"] is True and result["final"] is False
    assert result["diagnosis"]["cause"] == "auth_failed_535"


def test_open_log_source_prefers_the_given_then_postfix_maillog_file(tmp_path):
    given = tmp_path / "given.log"
    given.write_text("")
    postlog = tmp_path / "postfix.log"
    postlog.write_text("")
    assert maillog.open_log_source("auto", str(given), str(postlog)).path == str(given)
    assert maillog.open_log_source("auto", None, str(postlog)).path == str(postlog)
    assert maillog.open_log_source("none") is None
    with pytest.raises(OSError, match="no readable mail log"):
        maillog.open_log_source("file", str(tmp_path / "missing.log"))


# --- reading only what the trace needs ---------------------------------------------------------


def write_lines(path, stamps_and_texts):
    with open(path, "a") as handle:
        for when, text in stamps_and_texts:
            handle.write("%s relay-test %s\n" % (when.isoformat(), text))


@pytest.mark.parametrize("name", SYSLOG_FORMATS + ["postlogd-postfix.log"] + PROVIDER_FORMATS)
def test_following_only_the_relevant_lines_gives_the_full_reads_answer(name):
    full = load(name)
    with open(fixture_path(name), encoding="utf-8") as handle:
        lines = handle.readlines()
    for message_id in sorted(full.by_message_id):
        expected = maillog.trace_result(full, maillog.followed_queue_ids(full, message_id=message_id))
        log = MailLog()
        maillog.Follower(log, message_id=message_id, now=CAPTURED).feed(line.rstrip("\n") for line in lines)
        result = maillog.trace_result(log, maillog.followed_queue_ids(log, message_id=message_id))
        assert result == expected, message_id
    assert full.by_message_id


def test_following_a_queue_id_gives_the_full_reads_answer():
    full = load("debian12-mail.log")
    queue_id = trace_label(full, "rogue-cert")["queue_id"]
    log = MailLog()
    with open(fixture_path("debian12-mail.log"), encoding="utf-8") as handle:
        maillog.Follower(log, queue_id=queue_id, now=CAPTURED).feed(line.rstrip("\n") for line in handle)
    assert maillog.trace_result(log, [queue_id]) == maillog.trace_result(full, [queue_id])
    assert any("certificate verification failed" in line for line in maillog.trace_result(log, [queue_id])["lines"])
    assert set(log.messages) == {queue_id}  # nothing else was kept


def test_start_at_steps_back_from_the_end_to_shortly_before_since(tmp_path, monkeypatch):
    monkeypatch.setattr(maillog, "SEEK_BLOCK", 512)
    path = tmp_path / "mail.log"
    start = datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.timezone.utc)
    write_lines(
        path, [(start + datetime.timedelta(seconds=n), "postfix/qmgr[1]: ABCDEF%05d: removed" % n) for n in range(2000)]
    )
    source = maillog.LogSource("file", path=str(path))
    since = start + datetime.timedelta(seconds=1900)
    source.start_at(since)
    lines = source.read()
    first = parse_line(lines[0]).time
    assert first == since - maillog.SINCE_MARGIN  # one line a second: the first one at the margin
    assert parse_line(lines[-1]).message == "ABCDEF01999: removed"
    assert source.bytes_read < path.stat().st_size / 10


def test_start_at_before_the_whole_file_reads_all_of_it(tmp_path):
    path = tmp_path / "mail.log"
    start = datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.timezone.utc)
    write_lines(path, [(start, "postfix/qmgr[1]: ABCDEF00001: removed")])
    source = maillog.LogSource("file", path=str(path))
    source.start_at(start - datetime.timedelta(hours=1))
    assert len(source.read()) == 1


def test_a_window_that_began_before_the_rotation_reads_the_rotated_file_first(tmp_path):
    path = tmp_path / "mail.log"
    start = datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.timezone.utc)
    write_lines(
        str(path) + ".1",
        [(start + datetime.timedelta(minutes=n), "postfix/qmgr[1]: ABCDEF0000%d: removed" % n) for n in range(5)],
    )
    write_lines(path, [(start + datetime.timedelta(minutes=10), "postfix/qmgr[1]: ABCDEF00010: removed")])
    source = maillog.LogSource("file", path=str(path))
    source.start_at(start + datetime.timedelta(minutes=3, seconds=30))
    assert [parse_line(line).message for line in source.read()] == ["ABCDEF00004: removed", "ABCDEF00010: removed"]


def test_following_survives_a_rotation_by_rename_without_losing_the_old_files_last_lines(tmp_path):
    path = tmp_path / "mail.log"
    path.write_text("one\n")
    source = maillog.LogSource("file", path=str(path))
    assert source.read() == ["one"]
    with open(path, "a") as handle:
        handle.write("two, written just before the rotation\n")
    os.rename(path, str(path) + ".1")
    assert source.read() == ["two, written just before the rotation"]  # the new file does not exist yet
    path.write_text("three\n")
    with open(str(path) + ".1", "a") as handle:
        handle.write("late line in the old file\n")
    assert source.read() == ["late line in the old file", "three"]
    assert source.read() == []


def test_trace_finds_a_message_sent_just_before_it_starts(tmp_path):
    # verify.yml sends first and traces afterwards: the lines are already in the log.
    path = tmp_path / "mail.log"
    shutil.copy(fixture_path("debian12-mail.log"), path)
    with open(path, encoding="utf-8") as handle:
        lines = handle.readlines()
    sent_line = next(line for line in lines if "fixture.ses-ok@" in line)
    since = parse_line(sent_line).time
    source = maillog.LogSource("file", path=str(path))
    source.start_at(since)
    result = maillog.trace(source, message_id="fixture.ses-ok@relay-test.example.net", timeout=0)
    assert result["status"] == "sent" and result["provider_message_id"] == SES_ID


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1795316853", datetime.datetime(2026, 11, 22, 3, 7, 33, tzinfo=datetime.timezone.utc)),
        ("1795316853.5", datetime.datetime(2026, 11, 22, 3, 7, 33, 500000, tzinfo=datetime.timezone.utc)),
        ("2026-11-22T03:07:33Z", datetime.datetime(2026, 11, 22, 3, 7, 33, tzinfo=datetime.timezone.utc)),
        (
            "2026-11-22T04:07:33.25+01:00",
            datetime.datetime(2026, 11, 22, 3, 7, 33, 250000, tzinfo=datetime.timezone.utc),
        ),
        (
            "2026-11-22 04:07:33.123456+0100",
            datetime.datetime(2026, 11, 22, 3, 7, 33, 123456, tzinfo=datetime.timezone.utc),
        ),
    ],
)
def test_parse_since(value, expected):
    assert maillog.parse_since(value) == expected


def test_parse_since_takes_a_naive_time_as_local_like_the_command_modules_start():
    parsed = maillog.parse_since("2026-11-22 03:07:33.123456")
    assert parsed.tzinfo is not None
    assert parsed.replace(tzinfo=None) == datetime.datetime(2026, 11, 22, 3, 7, 33, 123456)
    with pytest.raises(ValueError, match="neither a Unix time"):
        maillog.parse_since("yesterday")


def test_journal_source_starts_at_since_then_follows_the_cursor(tmp_path):
    calls = tmp_path / "calls"
    fake = tmp_path / "journalctl"
    fake.write_text('#!/bin/sh\necho "$@" >> %s\nhead -n 3 %s\n' % (calls, fixture_path("journal.json")))
    fake.chmod(0o755)
    source = maillog.LogSource("journal", journalctl=str(fake))
    since = datetime.datetime(2026, 11, 22, 3, 0, tzinfo=datetime.timezone.utc)
    source.start_at(since)
    assert len(source.read()) == 3
    source.read()
    first, second = calls.read_text().splitlines()
    assert "--since=@%d" % int((since - maillog.SINCE_MARGIN).timestamp()) in first
    assert "--after-cursor=" in second and "--since" not in second


def test_first_pass_on_a_100_mb_log_stays_under_50_mb(tmp_path):
    """The memory bound of mail_trace's first pass, measured in a child process (issue 14)."""
    path = tmp_path / "mail.log"
    end = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.timezone.utc)
    sent_at = maillog_gen.write_log(str(path), 100 * 1024 * 1024, end)
    assert path.stat().st_size > 95 * 1024 * 1024
    # VmHWM is the peak of this program alone: getrusage's ru_maxrss would include the pytest process
    # the child was forked from (Linux carries it across exec).
    child = (
        "import json, sys\n"
        "from ansible_collections.smarthost.postfix.plugins.module_utils import maillog\n"
        "def peak_rss_kib():\n"
        '    with open("/proc/self/status") as status:\n'
        '        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])\n'
        'source = maillog.LogSource("file", path=sys.argv[1])\n'
        'if sys.argv[2] != "-":\n'
        "    source.start_at(maillog.parse_since(sys.argv[2]))\n"
        "result = maillog.trace(source, message_id=sys.argv[3], timeout=0)\n"
        'print(json.dumps({"status": result["status"], "bytes_read": source.bytes_read,\n'
        '                  "max_rss_kib": peak_rss_kib()}))\n'
    )
    measured = {}
    for label, since in (("since the send", sent_at.isoformat()), ("the whole file", "-")):
        output = subprocess.run(
            [sys.executable, "-c", child, str(path), since, maillog_gen.TRACED_MESSAGE_ID],
            check=True,
            capture_output=True,
            text=True,
            env=dict(os.environ),
        ).stdout
        measured[label] = json.loads(output)
    for label, figures in measured.items():
        assert figures["status"] == "sent", label
        assert figures["max_rss_kib"] < 50 * 1024, (label, figures)
    assert measured["since the send"]["bytes_read"] < 2 * 1024 * 1024
