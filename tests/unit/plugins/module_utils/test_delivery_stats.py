# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Delivery counts over a window of the log: the captured Postfix 3.7 logs, generated windows, the metrics text.

The expectations for the captured logs follow from how each fixture message was captured (the label tables
of test_maillog.py), not from running the counter.
"""

from __future__ import annotations

import collections
import datetime
import re

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils import delivery_stats, maillog, queue
from ansible_collections.smarthost.postfix.plugins.module_utils.delivery_stats import DeliveryCounter, parse_interval
from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils import maillog_gen
from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils.test_maillog import (
    CAPTURED,
    EXPECTED,
    PROVIDER_EXPECTED,
    PROVIDER_FORMATS,
    SYSLOG_FORMATS,
    fixture_path,
    write_lines,
)

T0 = datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.timezone.utc)


def count_file(name, since=None):
    counter = DeliveryCounter(since)
    with open(fixture_path(name), encoding="utf-8") as handle:
        counter.feed_lines(handle, now=CAPTURED)
    return counter.result(CAPTURED.timestamp())


def causes_of(table, status):
    return dict(
        collections.Counter(
            cause for label_status, cause in (row[:2] for row in table.values()) if label_status == status
        )
    )


@pytest.mark.parametrize("name", SYSLOG_FORMATS)
def test_the_captured_failures_are_counted_by_status_and_cause_in_every_format(name):
    result = count_file(name)
    # two-recipients: one recipient bounced (the message's status), the other was sent.
    assert result["sent"] == len([1 for row in EXPECTED.values() if row[0] == "sent"]) + 1
    assert result["bounced"] == len([1 for row in EXPECTED.values() if row[0] == "bounced"])
    deferred = len([1 for row in EXPECTED.values() if row[0] == "deferred"])
    assert result["deferred"] == result["deferred_messages"] == deferred
    assert result["bounced_by_cause"] == causes_of(EXPECTED, "bounced")
    assert result["deferred_by_cause"] == causes_of(EXPECTED, "deferred")
    assert result["expired"] == 0 and result["expired_by_cause"] == {}
    # Each bounce made a notice to sender@example.net, which the capture could not resolve: the notices
    # bounced, and are counted apart from the deliveries.
    assert result["notifications"] == {"sent": 0, "deferred": 0, "bounced": result["bounced"], "expired": 0}
    assert result["finished"] == result["sent"] + result["bounced"]
    assert result["bounce_rate"] == round(float(result["bounced"]) / result["finished"], 4)


@pytest.mark.parametrize("name", PROVIDER_FORMATS)
def test_the_providers_refusals_and_pipe_deliveries_are_counted_in_every_format(name):
    result = count_file(name)
    assert result["bounced_by_cause"] == causes_of(PROVIDER_EXPECTED, "bounced")
    assert result["deferred_by_cause"] == causes_of(PROVIDER_EXPECTED, "deferred")
    assert result["sent"] == 1  # oauth2-ok, through the pipe(8) transport
    # The capture discards the notices of its bounces (postfix/discard, status=sent): notices, not deliveries.
    assert result["notifications"]["sent"] == result["bounced"] == 6


def test_an_expired_message_counts_once_with_the_cause_of_its_last_deferral():
    result = count_file("postlogd-postfix.log")
    assert result["expired"] == 1 and result["expired_by_cause"] == {"connection_refused": 1}
    assert result["deferred_by_cause"] == {"auth_failed_535": 1, "connection_refused": 1}
    assert result["notifications"]["bounced"] == 1  # the expiry's notice
    assert result["bounce_rate"] == round(1.0 / 3, 4)  # two sent, one expired


def _message(when, queue_id, to, status, reason, sender="app@example.net", dsn=None, removed=True):
    dsn = dsn or {"sent": "2.0.0", "deferred": "4.0.0"}.get(status.lower(), "5.0.0")
    lines = [
        (when, "postfix/qmgr[1113]: %s: from=<%s>, size=900, nrcpt=1 (queue active)" % (queue_id, sender)),
        (
            when,
            "postfix/smtp[2001]: %s: to=<%s>, relay=relay.example.test[192.0.2.25]:587, delay=0.2, "
            "delays=0.01/0/0.1/0.09, dsn=%s, status=%s (%s)" % (queue_id, to, dsn, status, reason),
        ),
    ]
    if removed:
        lines.append((when, "postfix/qmgr[1113]: %s: removed" % queue_id))
    return lines


THROTTLED = (
    "host relay.example.test[192.0.2.25] said: 454 4.7.0 Throttling failure: Maximum sending rate exceeded. "
    "(in reply to MAIL FROM command)"
)
SANDBOX = (
    "host relay.example.test[192.0.2.25] said: 554 Message rejected: Email address is not verified. The "
    "following identities failed the check in region US-EAST-1: nobody@example.org "
    "(in reply to end of DATA command)"
)


def test_the_window_counts_from_since_and_learns_from_the_lines_before_it(tmp_path):
    path = tmp_path / "mail.log"
    second = datetime.timedelta(seconds=1)
    since = T0 + 60 * second
    lines = []
    lines += _message(T0, "AAAA00001", "old@example.com", "sent", "250 Ok old")  # before the window: not counted
    lines += _message(T0 + second, "AAAA00002", "late@example.com", "deferred", THROTTLED, removed=False)
    # A notice whose queue manager line comes just before the window: still a notice.
    lines.append((since - second, "postfix/qmgr[1113]: AAAA00003: from=<>, size=2000, nrcpt=1 (queue active)"))
    lines.append(
        (
            since,
            "postfix/smtp[2001]: AAAA00003: to=<app@example.net>, "
            "relay=relay.example.test[192.0.2.25]:587, delay=0.1, delays=0/0/0.05/0.05, dsn=2.0.0, "
            "status=sent (250 Ok notice)",
        )
    )
    for number in range(3):
        lines += _message(
            since + (number + 1) * second,
            "BBBB0000%d" % number,
            "user%d@example.com" % number,
            "sent",
            "250 Ok %d" % number,
        )
    for attempt in range(2):  # one message deferred twice in the window
        lines += _message(
            since + (10 + attempt) * second, "CCCC00001", "slow@example.com", "deferred", THROTTLED, removed=False
        )
    lines += _message(since + 20 * second, "DDDD00001", "nobody@example.org", "bounced", SANDBOX)
    lines += _message(since + 21 * second, "DDDD00002", "soft@example.org", "SOFTBOUNCE", SANDBOX, removed=False)
    # An address verification probe is not mail.
    lines += _message(
        since + 22 * second,
        "EEEE00001",
        "probe@example.org",
        "undeliverable",
        SANDBOX,
        sender="double-bounce@relay.example.net",
    )
    # Expiries: the cause is the message's last deferral in what was read, unknown when that was before.
    for number, queue_id in enumerate(("AAAA00002", "CCCC00001")):
        lines.append(
            (
                since + (30 + number) * second,
                "postfix/qmgr[1113]: %s: from=<app@example.net>, status=expired, returned to sender" % queue_id,
            )
        )
    write_lines(path, lines)
    source = maillog.LogSource("file", path=str(path))
    result, last = delivery_stats.read_deliveries(source, since, (since + 3600 * second).timestamp())
    assert result["since"] == since.isoformat() and result["interval"] == 3600
    assert (result["sent"], result["deferred"], result["bounced"], result["expired"]) == (3, 3, 1, 2)
    assert result["deferred_messages"] == 2
    assert result["deferred_by_cause"] == {"throttled_454": 2, "ses_sandbox_554": 1}  # SOFTBOUNCE keeps the mail
    assert result["bounced_by_cause"] == {"ses_sandbox_554": 1}
    assert result["expired_by_cause"] == {"unknown": 1, "throttled_454": 1}
    assert result["notifications"] == {"sent": 1, "deferred": 0, "bounced": 0, "expired": 0}
    assert result["finished"] == 6 and result["bounce_rate"] == 0.5
    assert last["queue_id"] == "BBBB00002" and last["time"] == (since + 3 * second).isoformat()
    assert last["relay"] == "relay.example.test[192.0.2.25]:587" and last["age"] == 3600 - 3


def test_a_window_without_deliveries_finds_the_last_one_before_it(tmp_path):
    path = tmp_path / "mail.log"
    write_lines(
        path,
        _message(T0, "AAAA00001", "user@example.com", "sent", "250 Ok")
        + _message(T0 + datetime.timedelta(hours=2), "AAAA00002", "user@example.com", "deferred", THROTTLED),
    )
    since = T0 + datetime.timedelta(hours=1)
    result, last = delivery_stats.read_deliveries(
        maillog.LogSource("file", path=str(path)), since, (since + datetime.timedelta(hours=1, seconds=5)).timestamp()
    )
    assert result["sent"] == 0 and result["deferred"] == 1 and result["bounce_rate"] is None
    assert last["queue_id"] == "AAAA00001" and last["age"] == 2 * 3600 + 5


def test_the_bounded_read_of_a_large_log_gives_the_full_reads_answer(tmp_path):
    path = tmp_path / "mail.log"
    end = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.timezone.utc)
    maillog_gen.write_log(str(path), 8 * 1024 * 1024, end)
    since = end - datetime.timedelta(hours=1)
    source = maillog.LogSource("file", path=str(path))
    bounded, last = delivery_stats.read_deliveries(source, since, end.timestamp())
    full = DeliveryCounter(since)
    with open(path, encoding="utf-8") as handle:
        full.feed_lines(handle)
    assert bounded == full.result(end.timestamp())
    assert bounded["sent"] > 300 and bounded["sent"] == bounded["finished"]  # about 8,000 messages a day
    with open(path, encoding="utf-8") as handle:
        last_line = [line for line in handle.readlines()[-20:] if "status=sent" in line][-1]
    assert last["queue_id"] == last_line.split()[3].rstrip(":")
    assert source.bytes_read < path.stat().st_size / 10  # one day in the file, one hour read


def test_the_journal_window_gives_the_files_answer(tmp_path):
    fake = tmp_path / "journalctl"
    fake.write_text("#!/bin/sh\ncat %s\n" % fixture_path("providers/journal.json"))
    fake.chmod(0o755)
    source = maillog.LogSource("journal", journalctl=str(fake))
    since = datetime.datetime(2026, 12, 2, 0, 0, tzinfo=datetime.timezone.utc)  # before the capture
    result, last = delivery_stats.read_deliveries(source, since, CAPTURED.timestamp())
    expected, expected_last = delivery_stats.read_deliveries(
        maillog.LogSource("file", path=fixture_path("providers/debian12-mail.log")), since, CAPTURED.timestamp()
    )
    assert result == expected
    assert dict(last, time=None) == dict(expected_last, time=None)  # journald stamps a few microseconds earlier
    assert result["sent"] == 1 and last["relay"] == "none"  # a notice, discarded last


@pytest.mark.parametrize(
    "value, seconds",
    [("3600", 3600), (90, 90), ("90s", 90), ("30m", 1800), ("1h", 3600), (" 2d ", 172800), ("1w", 604800)],
)
def test_parse_interval(value, seconds):
    assert parse_interval(value) == seconds


@pytest.mark.parametrize("value", ["0", "0h", "1.5h", "-1h", "soon", "1ms", "", "1 hour"])
def test_parse_interval_refuses(value):
    with pytest.raises(ValueError):
        parse_interval(value)


# --- the health threshold and the textfile ---------------------------------------------------------


def _stats():
    return queue.queue_stats([], 0)


def _deliveries(sent, bounced, expired=0):
    finished = sent + bounced + expired
    return {
        "sent": sent,
        "deferred": 0,
        "bounced": bounced,
        "expired": expired,
        "finished": finished,
        "bounce_rate": round(float(bounced + expired) / finished, 4) if finished else None,
        "interval": 3600,
        "bounced_by_cause": {"ses_sandbox_554": bounced} if bounced else {},
        "deferred_by_cause": {},
        "expired_by_cause": {"connection_refused": expired} if expired else {},
        "deferred_messages": 0,
        "notifications": {"sent": bounced, "deferred": 0, "bounced": 0, "expired": 0},
        "since": None,
    }


@pytest.mark.parametrize(
    "sent, bounced, expired, minimum, problem",
    [
        (0, 1, 0, 20, False),  # one bounce of one message is not judged
        (15, 4, 0, 20, False),  # 21% of 19: below the minimum
        (15, 5, 0, 20, True),  # 25% of 20
        (16, 3, 1, 20, True),  # an expired message counts as returned
        (95, 5, 0, 20, False),  # exactly 5% is not over it
        (0, 0, 0, 0, False),  # nothing finished: no rate at all
    ],
)
def test_the_bounce_rate_is_judged_from_the_minimum_on(sent, bounced, expired, minimum, problem):
    problems = queue.health_problems(
        _stats(), True, deliveries=_deliveries(sent, bounced, expired), max_bounce_rate=0.05, min_deliveries=minimum
    )
    assert bool(problems) == problem
    if problem:
        finished = sent + bounced + expired
        percent = ("%.1f" % (100.0 * (bounced + expired) / finished)).rstrip("0").rstrip(".")
        assert problems[0].startswith(
            "bounce rate %s%% over 5%%: %d of %d deliveries in the last 3600s bounced or "
            "expired" % (percent, bounced + expired, finished)
        )
        assert "ses_sandbox_554=%d" % bounced in problems[0]


def test_without_a_limit_or_a_log_the_bounce_rate_is_no_problem():
    assert queue.health_problems(_stats(), True, deliveries=_deliveries(0, 50)) == []
    assert queue.health_problems(_stats(), True, deliveries=None, max_bounce_rate=0.0) == []


_SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? '
    r"(-?[0-9]+(?:\.[0-9]+)?)$"
)


def parse_exposition(text):
    """{name: {'type': ..., 'samples': {labels tuple: value}}} from the text format; asserts it is well formed."""
    families, current = {}, None
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in families, "family %s twice" % name
            current = families[name] = {"type": None, "samples": {}}
        elif line.startswith("# TYPE "):
            _hash, _type, name, kind = line.split()
            assert current is families[name] and kind in ("gauge", "counter")
            current["type"] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, line
            name, labels, value = match.groups()
            assert current is families.get(name), "sample %s outside its family" % line
            key = tuple(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or ""))
            assert key not in current["samples"], "duplicate sample %s" % line
            current["samples"][key] = float(value)
    return families


def test_the_textfile_has_the_window_as_gauges_with_every_status():
    deliveries = count_file("debian12-mail.log")
    deliveries["interval"] = 3600
    families = parse_exposition(queue.render_metrics(_stats(), True, False, 1764000000.5, deliveries))
    prefix = "smarthost_postfix_"
    window = [name for name in families if name.endswith("_last_interval")]
    assert window and all(families[name]["type"] == "gauge" for name in families)
    assert not [name for name in families if name.endswith("_total")]  # no counter that is not one
    assert families[prefix + "deliveries_interval_seconds"]["samples"] == {(): 3600}
    assert families[prefix + "deliveries_last_interval"]["samples"] == {
        (("status", "sent"),): 4,
        (("status", "deferred"),): 10,
        (("status", "bounced"),): 6,
        (("status", "expired"),): 0,
    }
    by_cause = families[prefix + "deliveries_by_cause_last_interval"]["samples"]
    assert by_cause[(("status", "bounced"), ("cause", "ses_sandbox_554"))] == 1
    assert sum(count for (status, _cause), count in by_cause.items() if status == ("status", "deferred")) == 10
    assert families[prefix + "deferred_messages_last_interval"]["samples"] == {(): 10}
    assert families[prefix + "notifications_last_interval"]["samples"][(("status", "bounced"),)] == 6
    assert families[prefix + "healthy"]["samples"] == {(): 0}


def test_without_a_log_the_textfile_has_no_delivery_figures():
    families = parse_exposition(queue.render_metrics(_stats(), None, True))
    assert not [name for name in families if "deliveries" in name or "notifications" in name]


def test_the_agents_warnings_give_the_cause_the_result_line_does_not_name():
    counter = DeliveryCounter()
    stamp = T0.isoformat()
    counter.feed_lines(
        [
            "%s relay-test postfix/smtp[2001]: warning: TLS library problem: error:0A000086:SSL routines::certificate "
            "verify failed:../ssl/statem/statem_clnt.c:2092:" % stamp,
            # Another agent's result in between takes nothing of it.
            "%s relay-test postfix/smtp[2002]: AAAA00001: to=<a@example.com>, "
            "relay=relay.example.test[192.0.2.25]:587, "
            "delay=0.2, delays=0/0/0.1/0.1, dsn=4.4.2, status=deferred (lost connection with relay.example.test"
            "[192.0.2.25] while receiving the HELO reply)" % stamp,
            "%s relay-test postfix/smtp[2001]: AAAA00002: to=<b@example.com>, "
            "relay=relay.example.test[192.0.2.25]:587, "
            "delay=0.2, delays=0/0/0.1/0.1, dsn=4.7.5, status=deferred (lost connection with relay.example.test"
            "[192.0.2.25] while performing the TLS handshake)" % stamp,
        ]
    )
    assert counter.result(T0.timestamp())["deferred_by_cause"] == {"unknown": 1, "certificate_verify_failed": 1}
