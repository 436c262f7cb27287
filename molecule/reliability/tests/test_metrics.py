# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Delivery metrics (issue 17): what the queue does not show, counted from Postfix's log on a real relay.

Some mail is deferred (the smarthost throttles), some bounced (the SES sandbox refuses an unverified
recipient), the rest sent; queue_info must count each by status and cause, write them to the textfile,
and health.yml must fail the host on its bounce rate with the playbook's default thresholds.
"""

import datetime
import json
import os
import re
import tempfile
import time

import harness
import reliability as rel

DEFERRED = 5  # throttled first, delivered on the retry
BOUNCED = 6
SENT = 14  # sent at once
UNVERIFIED = "user@unverified.example.test"
TEXTFILE = "/tmp/smarthost_postfix.prom"
QUEUE_INFO = os.path.join(os.path.dirname(__file__), "queue_info.yml")
HEALTH = os.path.join(harness.PROJECT_DIR, "playbooks", "health.yml")


def queue_info(since):
    """queue_info's result on rel-relay for the deliveries since an epoch time."""
    with tempfile.TemporaryDirectory(prefix="met-") as directory:
        path = os.path.join(directory, "result.json")
        rc, output = harness.run_playbook(
            QUEUE_INFO, "-e", json.dumps({"since": "%.3f" % since, "textfile_path": TEXTFILE, "result_path": path})
        )
        assert rc == 0, rel.fatal_excerpt(output)
        with open(path) as handle:
            return json.load(handle)


def arrived(prefix, count):
    return len(rel.tag_counts(prefix)) >= count


def test_deferred_bounced_and_sent_are_counted_by_cause_and_health_fails_on_the_bounce_rate(outcome):
    host = rel.target()
    rel.settle(host)
    deferred_tag, bounced_tag, sent_tag = harness.new_tag(), harness.new_tag(), harness.new_tag()
    outcome.set(
        section="Delivery metrics",
        item="deliveries by status and cause",
        tried="%d messages while the smarthost throttles (454), then SES sandbox mode: %d to an unverified "
        "recipient (554 after DATA), %d to a verified one, the throttled ones retried; queue_info since "
        "the start, then health.yml with its default thresholds" % (DEFERRED, BOUNCED, SENT),
        sent=DEFERRED + BOUNCED + SENT,
    )
    started = time.monotonic()
    since = time.time()
    harness.emulator_mode("throttle")
    try:
        rel.submit(host, deferred_tag, DEFERRED)
        rel.wait_until(lambda: rel.queue_counts(host)["deferred"] >= DEFERRED, 60)
        deferred_while_throttled = rel.queue_counts(host)["deferred"]
        # The sender and the verified domain pass; the null sender of the bounces' notices does not.
        harness.emulator_mode("ses_sandbox", "--verified", "%s,@recipient.example.test" % rel.SENDER)
        rel.submit(host, bounced_tag, BOUNCED, recipient=UNVERIFIED)
        rel.submit(host, sent_tag, SENT)
        rel.flush(host)
        rel.wait_until(
            lambda: arrived(sent_tag, SENT) and arrived(deferred_tag, DEFERRED) and not rel.queue(host), 90, interval=2
        )
        left = rel.queue(host)
    finally:
        harness.emulator_mode("normal")
    result = queue_info(since)
    deliveries = result["deliveries"]
    textfile = host.run("cat %s", TEXTFILE).stdout.splitlines()
    # The playbook's default thresholds; the scenario connects as root and its images have no sudo.
    health_rc, health_output = harness.run_playbook(
        HEALTH,
        "-e",
        json.dumps(
            {"relay_health_hosts": rel.RELAY, "relay_health_since": "%.3f" % since, "relay_health_become": False}
        ),
    )
    health_problem = re.search(r"bounce rate [^;\]\n]*\)", health_output)
    table_row = re.search(r"rel-relay\S*\s+running(?:\s+\S+){6}\s+(\d+)\s+(\d+)\s", health_output)
    recap = harness.play_recap(health_output).get(rel.RELAY, {})
    # A window with nothing in it: the last delivery is found in the journal before it.
    quiet_since = time.time() + 1
    quiet = queue_info(quiet_since)
    seconds = time.monotonic() - started
    deferred_figures, sent_figures = rel.arrival_figures(deferred_tag, DEFERRED), rel.arrival_figures(sent_tag, SENT)
    bounced_arrivals = len(rel.tag_counts(bounced_tag))
    outcome.set(
        seconds=seconds,
        arrived=deferred_figures["arrived"] + sent_figures["arrived"] + bounced_arrivals,
        lost=deferred_figures["lost"] + sent_figures["lost"],
        duplicated=deferred_figures["duplicated"] + sent_figures["duplicated"],
        deliveries=deliveries,
    )
    outcome.set(
        happened="%d deferred while throttled; queue_info counted sent %d, deferred %d (%d messages, %s), "
        "bounced %d (%s), notices %s, bounce rate %s; health.yml rc %d: %s"
        % (
            deferred_while_throttled,
            deliveries["sent"],
            deliveries["deferred"],
            deliveries["deferred_messages"],
            deliveries["deferred_by_cause"],
            deliveries["bounced"],
            deliveries["bounced_by_cause"],
            deliveries["notifications"],
            deliveries["bounce_rate"],
            health_rc,
            health_problem.group(0) if health_problem else "no bounce-rate problem",
        )
    )
    assert deferred_while_throttled == DEFERRED
    assert not left, left
    assert deferred_figures["lost"] == sent_figures["lost"] == 0, (deferred_figures, sent_figures)
    assert deferred_figures["duplicated"] == sent_figures["duplicated"] == 0, (deferred_figures, sent_figures)
    assert bounced_arrivals == 0
    assert deliveries["sent"] == DEFERRED + SENT
    assert deliveries["bounced"] == BOUNCED and deliveries["bounced_by_cause"] == {"ses_sandbox_554": BOUNCED}
    assert deliveries["deferred_messages"] == DEFERRED and deliveries["deferred"] >= DEFERRED
    assert set(deliveries["deferred_by_cause"]) == {"throttled_454"}, deliveries["deferred_by_cause"]
    assert deliveries["expired"] == 0
    # Each bounce's notice went to the smarthost too and was refused (the null sender is not verified):
    # counted as a notice, not as one more bounce of the relay's mail.
    assert deliveries["notifications"] == {"sent": 0, "deferred": 0, "bounced": BOUNCED, "expired": 0}
    assert deliveries["bounce_rate"] == round(float(BOUNCED) / (BOUNCED + DEFERRED + SENT), 4)
    assert result["log_source"] == "journal"  # the Debian 13 image logs to the journal only
    assert 'smarthost_postfix_deliveries_last_interval{status="bounced"} %d' % BOUNCED in textfile
    assert (
        'smarthost_postfix_deliveries_by_cause_last_interval{status="bounced",cause="ses_sandbox_554"} %d' % BOUNCED
        in textfile
    )
    assert 'smarthost_postfix_deliveries_last_interval{status="sent"} %d' % (DEFERRED + SENT) in textfile
    assert quiet["deliveries"]["sent"] == quiet["deliveries"]["bounced"] == 0, quiet["deliveries"]
    assert quiet["last_delivery"], quiet
    last_sent = datetime.datetime.fromisoformat(quiet["last_delivery"]["time"]).timestamp()
    assert since <= last_sent <= quiet_since, (since, quiet["last_delivery"], quiet_since)
    assert health_rc != 0 and recap.get("failed") == 1, health_output[-3000:]
    assert table_row and table_row.groups() == (str(DEFERRED + SENT), str(BOUNCED)), health_output[-3000:]
    assert "bounce rate 24%% over 5%%: %d of %d deliveries" % (BOUNCED, BOUNCED + DEFERRED + SENT) in health_output, (
        health_output[-3000:]
    )
