# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Deliveries over a window of the Postfix mail log: how many were sent, deferred, bounced or expired, and why.

What the queue cannot show: a relay that accepts mail and then bounces all of it has an empty queue.
The counts come from the log lines Postfix writes for each recipient (one per delivery attempt) and
for each expired message, diagnosed with maillog.diagnose() - the causes of mail_trace and
docs/troubleshooting.md. Postfix's own notices (bounces, delay warnings: the null sender) are counted
apart, so that one bounce does not also count as the delivery of its notice.

The counts describe one window; they are not counters that grow across calls (queue_info's
documentation says why).
"""

from __future__ import annotations

import datetime
import re

from ansible_collections.smarthost.postfix.plugins.module_utils.maillog import diagnose, parse_event, parse_line

STATUSES = ("sent", "deferred", "bounced", "expired")
FAILURES = ("deferred", "bounced", "expired")
# soft_bounce = yes logs a would-be bounce as SOFTBOUNCE and keeps the mail: a deferral. Address
# verification probes (deliverable, undeliverable) are not mail and are not counted.
_COUNTED_STATUS = {"sent": "sent", "deferred": "deferred", "bounced": "bounced", "softbounce": "deferred"}

# The lines counting needs: results, the queue manager's sender and expiry lines, removals, and the
# delivery agents' warnings (a cause the result line does not name). One search per line skips the rest
# (smtpd, cleanup, pickup, ...). The journal's JSON has the program in "SYSLOG_IDENTIFIER":"postfix/smtp".
_WANTED = re.compile(r'status=|: from=<|: removed|postfix[^\s\[:"]*/[ls]mtp\b')
_CONTEXT_LINES = 5
_DIAGNOSIS_CACHE = 4096

_INTERVAL_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_interval(value):
    """Seconds in a Postfix-style time: 3600, 90s, 30m, 1h, 1d, 1w. Raises ValueError unless above zero."""
    match = _INTERVAL_RE.match(str(value))
    if not match:
        raise ValueError("%r is not a time such as 3600, 90s, 30m, 1h, 1d or 1w" % (value,))
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("%r is not longer than zero" % (value,))
    return seconds


class DeliveryCounter:
    """Counts the deliveries of records fed in log order, from since (an aware datetime) on.

    Records before since are read only for what they tell about later lines (a message's sender, the
    cause of its last deferral), so a window can start just before it and miss nothing.
    """

    def __init__(self, since=None):
        self.since = since
        self.counts = dict((status, 0) for status in STATUSES)
        self.by_cause = dict((status, {}) for status in FAILURES)
        self.notifications = dict((status, 0) for status in STATUSES)
        self.deferred_queue_ids = set()
        self.last_sent = None
        self._senders = {}  # queue id -> envelope sender, from qmgr's line; forgotten when removed
        self._last_deferral = {}  # queue id -> cause of its latest deferral, for an expiry
        self._context = {}  # (program, pid) -> the agent's recent lines without a queue id
        self._diagnoses = {}

    def feed_lines(self, lines, now=None):
        for line in lines:
            if not _WANTED.search(line):
                continue
            record = parse_line(line, now)
            if record is not None:
                self.feed(record)

    def feed(self, record):
        event = parse_event(record)
        if event is None:
            return
        agent = (record.program, record.pid)
        if event["type"] == "context":
            recent = self._context.setdefault(agent, [])
            recent.append(event["text"])
            del recent[:-_CONTEXT_LINES]
            return
        context = self._context.pop(agent, [])
        queue_id = event["queue_id"]
        in_window = self.since is None or record.time is None or record.time >= self.since
        kind = event["type"]
        if kind == "queued":
            self._senders[queue_id] = event["sender"]
        elif kind == "removed":
            self._senders.pop(queue_id, None)
            self._last_deferral.pop(queue_id, None)
        elif kind == "delivery":
            self._delivery(event, record, context, in_window)
        elif kind == "expired" and in_window:
            self._count("expired", self._last_deferral.get(queue_id, "unknown"), event["sender"] == "")

    def _delivery(self, event, record, context, in_window):
        status = _COUNTED_STATUS.get(event["status"].lower())
        if status is None:
            return
        cause = None if status == "sent" else self._cause(event["reason"], context)
        if status == "deferred":
            self._last_deferral[event["queue_id"]] = cause
        if status == "sent":  # the last delivery is a fact of the log, counted or not
            self.last_sent = {"time": record.time, "queue_id": event["queue_id"], "relay": event["relay"]}
        if not in_window:
            return
        notice = self._senders.get(event["queue_id"]) == ""
        self._count(status, cause, notice)
        if status == "deferred" and not notice:
            self.deferred_queue_ids.add(event["queue_id"])

    def _count(self, status, cause, notice):
        if notice:
            self.notifications[status] += 1
            return
        self.counts[status] += 1
        if cause is not None:
            causes = self.by_cause[status]
            causes[cause] = causes.get(cause, 0) + 1

    def _cause(self, reason, context):
        """The cause of a reason, else of the agent's warnings before it (as mail_trace does)."""
        key = (reason, tuple(context))
        cause = self._diagnoses.get(key)
        if cause is None:
            cause = diagnose(reason)["cause"]
            if cause == "unknown" and context:
                cause = diagnose("\n".join(context))["cause"]
            if len(self._diagnoses) >= _DIAGNOSIS_CACHE:
                self._diagnoses.clear()
            self._diagnoses[key] = cause
        return cause

    def result(self, now):
        """The window's figures: counts per status and cause, the bounce rate, and Postfix's own notices.

        now is a Unix timestamp, the window's end.
        """
        finished = self.counts["sent"] + self.counts["bounced"] + self.counts["expired"]
        failed = self.counts["bounced"] + self.counts["expired"]
        since = self.since
        return dict(
            self.counts,
            since=since.isoformat() if since else None,
            interval=max(0, int(round(now - since.timestamp()))) if since else None,
            deferred_messages=len(self.deferred_queue_ids),
            deferred_by_cause=dict(self.by_cause["deferred"]),
            bounced_by_cause=dict(self.by_cause["bounced"]),
            expired_by_cause=dict(self.by_cause["expired"]),
            finished=finished,
            bounce_rate=round(float(failed) / finished, 4) if finished else None,
            notifications=dict(self.notifications),
        )


def read_deliveries(source, since, now):
    """(the window's figures, the last successful delivery or None) from a LogSource.

    The window is since (an aware datetime) to the end of the log; now (a Unix timestamp) is its end in
    the figures. When nothing was sent in the window, the last delivery is looked for in a bounded stretch
    of the log before it (LogSource.iter_before), so a quiet host still shows when it last delivered.
    """
    reference = datetime.datetime.fromtimestamp(now).astimezone()  # the year of traditional syslog stamps
    counter = DeliveryCounter(since)
    source.start_at(since, reference)
    counter.feed_lines(source.iter_lines(), reference)
    last_sent = counter.last_sent
    if last_sent is None:
        last_sent = _last_sent(source.iter_before(), reference)
    return counter.result(now), _delivery_summary(last_sent, now)


def _last_sent(lines, now):
    last = None
    for line in lines:
        if "status=sent" not in line:
            continue
        record = parse_line(line, now)
        event = parse_event(record) if record is not None else None
        if event and event["type"] == "delivery" and event["status"] == "sent":
            last = {"time": record.time, "queue_id": event["queue_id"], "relay": event["relay"]}
    return last


def _delivery_summary(sent, now):
    if sent is None:
        return None
    when = sent["time"]
    return {
        "time": when.isoformat() if when else None,
        "age": max(0, int(now - when.timestamp())) if when else None,
        "queue_id": sent["queue_id"],
        "relay": sent["relay"],
    }
