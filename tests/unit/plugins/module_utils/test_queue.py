# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Queue facts from real `postqueue -j` output (tests/unit/fixtures/postfix-logs, see capture/)."""

from __future__ import annotations

import os
import re
import stat

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils import queue
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import (
    Postfix,
    PostfixError,
    find_binary,
    run_subprocess,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "postfix-logs")


def read(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return handle.read()


def messages(name):
    parsed, warnings = queue.parse_postqueue(read(name))
    assert warnings == []
    return parsed


def by_recipient(parsed):
    return dict((m["recipients"][0]["address"], m) for m in parsed)


def test_deferred_snapshot_counts_and_causes():
    parsed = messages("postqueue-deferred.jsonl")
    recipients = by_recipient(parsed)
    oldest = recipients["user@ses-ok.test"]  # the no-worthy-mechs message, sent first
    now = max(m["arrival_time"] for m in parsed) + 100
    stats = queue.queue_stats(parsed, now)
    assert stats["queues"] == {"maildrop": 0, "incoming": 0, "active": 0, "deferred": 9, "hold": 1}
    assert stats["queue_depth"] == 9 and stats["total"] == 10  # the held 454 message is not depth
    assert stats["oldest_queue_id"] == oldest["queue_id"]
    assert stats["oldest_age"] == now - oldest["arrival_time"]
    assert stats["size_bytes"] == sum(m["message_size"] for m in parsed)
    assert stats["deferred_by_cause"] == {
        "no_worthy_mechs": 1,
        "auth_failed_535": 1,
        "tls_required_not_offered": 1,
        "certificate_verify_failed": 1,
        "tls_handshake_failed": 2,
        "connection_refused": 1,
        "no_greeting": 1,
        "connection_timeout": 1,
    }
    # Reasons that name no host fall back to the recipient's domain.
    assert stats["deferred_by_destination"] == {
        "127.0.0.1": 6,
        "broken-tls.test": 1,
        "reuse.test": 1,
        "rogue-cert.test": 1,
    }


# The deferred queue of the providers capture: recipient -> the cause of its delay reason.
PROVIDER_DEFERRALS = {
    "user@o365-concurrency.test": "too_many_connections",
    "user@o365-basic-5730.test": "basic_auth_disabled",
    "user@o365-basic-57139.test": "basic_auth_disabled",
    "user@o365-smtp-auth-off.test": "smtp_auth_disabled",
    "user@o365-535.test": "auth_failed_535",
    "user@gmail-app-password.test": "app_password_required",
    "user@gmail-daily-deferred.test": "daily_quota_exceeded",
    "user@gmail-ehlo.test": "throttled_454",
    "user@ses-daily.test": "daily_quota_exceeded",
    "user@ses-rate.test": "throttled_454",
    "user@oauth2-endpoint-down.test": "oauth2_token_endpoint_unreachable",
    "user@oauth2-endpoint-timeout.test": "oauth2_token_endpoint_unreachable",
    "user@oauth2-quota.test": "daily_quota_exceeded",
    "user@oauth2-certificate.test": "certificate_verify_failed",
    "user@oauth2-invalid-client.test": "oauth2_invalid_client",
    "user@oauth2-secret-expired.test": "oauth2_invalid_client",
    "user@oauth2-app-not-found.test": "oauth2_app_not_found",
    "user@oauth2-invalid-grant.test": "oauth2_invalid_grant",
    "user@oauth2-mailbox.test": "oauth2_mailbox_not_permitted",
    "user@oauth2-two-lines.test": "too_many_connections",
}


def test_the_providers_deferrals_are_counted_by_their_cause():
    parsed = messages("providers/postqueue-deferred.jsonl")
    recipients = by_recipient(parsed)
    assert sorted(recipients) == sorted(PROVIDER_DEFERRALS)
    for address, cause in PROVIDER_DEFERRALS.items():
        reason = recipients[address]["recipients"][0]["delay_reason"]
        assert queue.diagnose(reason)["cause"] == cause, reason
    stats = queue.queue_stats(parsed, max(m["arrival_time"] for m in parsed))
    expected = {}
    for cause in PROVIDER_DEFERRALS.values():
        expected[cause] = expected.get(cause, 0) + 1
    assert stats["deferred_by_cause"] == expected
    # A pipe(8) transport's reason names no host: those wait for the recipient's domain.
    assert stats["deferred_by_destination"]["127.0.0.1"] == 10
    assert stats["deferred_by_destination"]["oauth2-invalid-grant.test"] == 1


def test_active_messages_during_delivery_have_no_delay_reason():
    parsed = messages("postqueue-during-delivery.jsonl")
    active = [m for m in parsed if m["queue_name"] == "active"]
    assert sorted(m["recipients"][0]["address"] for m in active) == ["user@timeout.test", "user@wrapper.test"]
    assert all("delay_reason" not in m["recipients"][0] for m in active)
    stats = queue.queue_stats(parsed, max(m["arrival_time"] for m in parsed))
    assert stats["queues"]["active"] == 2 and stats["deferred_by_cause"]["throttled_454"] == 1


def test_mail_system_down_lists_maildrop_and_warns_on_stderr():
    parsed = messages("postqueue-mail-system-down.jsonl")
    stats = queue.queue_stats(parsed, max(m["arrival_time"] for m in parsed))
    assert stats["queues"]["maildrop"] == 1
    _none, warnings = queue.parse_postqueue(read("postqueue-mail-system-down.stderr"))
    assert len(warnings) == 1 and "Mail system is down" in warnings[0]


def test_empty_queue():
    stats = queue.queue_stats([], 1000)
    assert stats["queue_depth"] == 0 and stats["oldest_age"] is None and stats["deferred_by_cause"] == {}


def test_message_with_two_causes_counts_once_per_cause():
    message = {
        "queue_name": "deferred",
        "queue_id": "ABC123",
        "arrival_time": 10,
        "message_size": 1,
        "recipients": [
            {"address": "a@x.test", "delay_reason": "connect to relay.example[192.0.2.1]:587: Connection refused"},
            {"address": "b@x.test", "delay_reason": "connect to relay.example[192.0.2.1]:587: Connection refused"},
            {
                "address": "c@y.test",
                "delay_reason": "Host or domain name not found. Name service error for name=y.test type=MX: Host not "
                "found",
            },
        ],
    }
    stats = queue.queue_stats([message], 20)
    assert stats["deferred_by_cause"] == {"connection_refused": 1, "dns_failure": 1}
    assert stats["deferred_by_destination"] == {"relay.example": 1, "y.test": 1}


@pytest.mark.parametrize(
    "running, depth, age, expected",
    [
        (True, None, None, []),
        (False, None, None, ["Postfix is not running"]),
        (None, None, None, []),
        (True, 8, None, ["queue depth 9 exceeds 8"]),
        (True, 9, None, []),
        (True, None, 100, ["oldest message {oldest} is 106s old, over 100s"]),
    ],
)
def test_health_problems(running, depth, age, expected):
    parsed = messages("postqueue-deferred.jsonl")
    stats = queue.queue_stats(parsed, max(m["arrival_time"] for m in parsed) + 100)
    problems = queue.health_problems(stats, running, depth, age)
    assert problems == [text.format(oldest=stats["oldest_queue_id"]) for text in expected]


_SAMPLE = re.compile(r'^smarthost_postfix_[a-z_]+(\{[a-z]+="[^"]*"(,[a-z]+="[^"]*")*\})? -?[0-9.]+$')


def test_metrics_are_valid_textfile_format():
    parsed = messages("postqueue-deferred.jsonl")
    stats = queue.queue_stats(parsed, max(m["arrival_time"] for m in parsed) + 100)
    text = queue.render_metrics(stats, True, False, 1795316853.5)
    lines = text.splitlines()
    assert text.endswith("\n")
    for line in lines:
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or _SAMPLE.match(line), line
    assert 'smarthost_postfix_queue_messages{queue="deferred"} 9' in lines
    assert 'smarthost_postfix_queue_messages{queue="hold"} 1' in lines
    assert 'smarthost_postfix_deferred_messages{cause="tls_handshake_failed"} 2' in lines
    assert "smarthost_postfix_up 1" in lines and "smarthost_postfix_healthy 0" in lines
    assert "smarthost_postfix_last_delivery_timestamp_seconds 1795316853.500" in lines
    assert "smarthost_postfix_up" not in queue.render_metrics(stats, None, True)


def test_write_atomically_reports_change_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "postfix.prom"
    assert queue.write_atomically(str(path), "a 1\n") is True
    assert queue.write_atomically(str(path), "a 1\n") is False
    assert queue.write_atomically(str(path), "a 2\n") is True
    assert path.read_text() == "a 2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["postfix.prom"]


def test_read_queue_reports_postqueue_failure(tmp_path):
    if find_binary("postqueue") is None:
        pytest.skip("needs Postfix")
    with pytest.raises(PostfixError) as raised:
        queue.read_queue(Postfix(str(tmp_path / "no-such-config")), run_subprocess)
    assert raised.value.rc != 0 and "postqueue" in raised.value.cmd[0]


def test_postfix_running_of_a_stopped_instance(tmp_path, postfix_dir):
    if os.geteuid() != 0:
        pytest.skip("postfix status needs root")
    state = queue.postfix_running(Postfix(str(postfix_dir)), run_subprocess)
    assert state == {"running": False, "source": "postfix status"}
