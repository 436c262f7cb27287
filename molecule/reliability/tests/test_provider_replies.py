# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The providers' own replies: a daily quota a provider answers with 5xx although it clears by itself
is deferred (smtp_delivery_status_filter), never bounced, and every message leaves once it lifts."""

import time

import harness
import reliability as rel

GMAIL = "rel-gmail"


def test_gmails_daily_limit_defers_and_every_message_arrives_once_when_it_lifts(outcome):
    host = rel.target(GMAIL)
    harness.emulator_mode("normal")
    assert rel.wait_for_empty_queue(host, 90, flush_every=5), rel.queue(host)
    sent, allowed = 100, 10
    outcome.set(
        section="Faults",
        item="daily limit (Gmail 550 5.4.5)",
        tried="Gmail answers its 550-5.4.5 daily sending limit after %d messages; %d messages with sendmail; "
        "the limit lifted, postqueue -f" % (allowed, sent),
    )
    since = time.time()
    prefix = harness.new_tag()
    harness.emulator_mode("daily_limit", "--after", str(allowed), "--providers", "gmail")
    try:
        rel.submit(host, prefix, sent, parallel=4)

        def limit_reached():
            """(arrived, queue counts) once the allowed messages arrived and the rest wait deferred."""
            arrived, counts = rel.arrival_figures(prefix, sent)["arrived"], rel.queue_counts(host)
            return (arrived, counts) if arrived >= allowed and counts["deferred"] >= sent - allowed else None

        before_lift = rel.wait_until(limit_reached, 180)
        reasons = set(rel.delay_reasons(host))
    finally:
        harness.emulator_mode("normal")
    figures = rel.wait_for_batch(host, prefix, sent, timeout=300, flush_every=5)
    # The status filter turned Gmail's 5.4.5 into 4.4.5: deferred with the provider's text.
    filtered = [
        line
        for line in rel.mail_log(host, since).splitlines()
        if "dsn=4.4.5" in line and "status=deferred" in line and "Daily user sending limit exceeded" in line
    ]
    bounced = rel.bounced_lines(host, since)
    notices = rel.bounce_notices_since(since)
    outcome.set(**figures)
    outcome.set(deferred_dsn_445=len(filtered))
    outcome.set(
        happened="%s before the limit lifted (%s); %d bounced, %d bounce notices; in the end %d arrived"
        % (
            "%d arrived, %d deferred" % (before_lift[0], before_lift[1]["deferred"])
            if before_lift
            else "never settled",
            sorted(reasons)[0][:160] if reasons else "",
            len(bounced),
            len(notices),
            figures["arrived"],
        )
    )
    assert before_lift, (rel.arrival_figures(prefix, sent), rel.queue_counts(host))
    assert before_lift[0] == allowed
    assert any("Daily user sending limit exceeded" in reason for reason in reasons), reasons
    assert len(filtered) >= sent - allowed, filtered[:3]
    assert not bounced, bounced[:3]
    assert not notices
    assert figures["arrived"] == sent and figures["lost"] == 0 and figures["duplicated"] == 0, figures
