# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Load: 2,000 messages submitted concurrently with sendmail on one target arrive once each.

Time and rate are measured and reported, never asserted: they depend on the
machine. What is asserted is that nothing is lost and nothing is duplicated.
"""

import time

import harness
import reliability as rel

MESSAGES = 2000
SUBMITTERS = 32


def test_2000_concurrent_sendmail_submissions_all_arrive_once(outcome):
    host = rel.target()
    harness.emulator_mode("normal")
    assert rel.wait_for_empty_queue(host, 90, flush_every=5), rel.queue(host)
    prefix = harness.new_tag()
    outcome.set(
        section="Load",
        item="2,000 concurrent submissions",
        tried="%d messages submitted with sendmail by %d concurrent submitters on rel-relay "
        "(Debian 13, the role's defaults: TLS connections reused through tlsproxy)" % (MESSAGES, SUBMITTERS),
    )
    wall_start = time.time()
    started = time.monotonic()
    submit_seconds, failures, stderr = rel.submit(host, prefix, MESSAGES, parallel=SUBMITTERS)
    figures = rel.wait_for_batch(host, prefix, MESSAGES, timeout=420)
    done_seconds = time.monotonic() - started
    arrival_times = [
        record["ts"]
        for record in harness.records("messages")
        if (harness.record_tag(record) or "").startswith(prefix + "-")
    ]
    last_arrival = (max(arrival_times) - wall_start) if arrival_times else None
    seconds = last_arrival if last_arrival is not None else done_seconds
    rate = figures["arrived"] / seconds if seconds else None
    connections = len(
        set(
            record.get("connection")
            for record in harness.records("messages")
            if (harness.record_tag(record) or "").startswith(prefix + "-")
        )
    )
    outcome.set(
        seconds=seconds,
        submit_seconds=round(submit_seconds, 1),
        delivery_rate_per_second=round(rate or 0, 1),
        submit_rate_per_second=round(MESSAGES / submit_seconds, 1),
        smtp_connections=connections,
        **figures,
    )
    outcome.set(
        happened="submitted in %.1fs (%.0f msg/s into Postfix); last arrival after %.1fs: %.0f msg/s end to end "
        "over %d SMTP sessions; %d lost, %d duplicated"
        % (
            submit_seconds,
            MESSAGES / submit_seconds,
            seconds,
            rate or 0,
            connections,
            figures["lost"],
            figures["duplicated"],
        )
    )
    assert failures == 0, stderr
    assert figures["arrived"] == MESSAGES and figures["lost"] == 0, figures
    assert figures["duplicated"] == 0, figures
