# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Postfix queue facts from `postqueue -j` (Postfix 3.1 and later), health checks and textfile metrics
(the queue's, and the delivery counts of delivery_stats)."""

from __future__ import annotations

import json
import os
import re

from ansible_collections.smarthost.postfix.plugins.module_utils.delivery_stats import FAILURES, STATUSES
from ansible_collections.smarthost.postfix.plugins.module_utils.files import atomic_write, read_text, wanted_owner
from ansible_collections.smarthost.postfix.plugins.module_utils.host import service_state
from ansible_collections.smarthost.postfix.plugins.module_utils.maillog import diagnose
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import PostfixError
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import physical_lines

QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
# Messages on hold were parked by an operator on purpose; they do not count towards the depth.
DEPTH_QUEUES = ("maildrop", "incoming", "active", "deferred")

_DESTINATION_PATTERNS = (
    re.compile(r"\b(?:connect to|conversation with|host|server|by host) ([^\s\[\]]+)\["),
    re.compile(r"Name service error for name=(\S+)"),
)


def parse_postqueue(text):
    """(messages, warnings) from `postqueue -j` output; lines that are not JSON objects are warnings.

    postqueue prints "warning: Mail system is down -- accessing queue directly" and still lists the
    queue when run as root with the master stopped, so the warning does not mean failure.
    """
    messages, warnings = [], []
    for line in physical_lines(text):  # an address with U+2028 stays on its JSON line
        line = line.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if isinstance(message, dict) and "queue_name" in message:
            messages.append(message)
        else:
            warnings.append(line)
    return messages, warnings


def read_queue(postfix, runner):
    """(messages, warnings) of `postqueue -j` for the instance postfix points at; raises PostfixError."""
    cmd = postfix.command("postqueue", "-j")
    rc, out, err = runner(cmd)
    if rc != 0:
        hint = " (postqueue -j needs Postfix 3.1 or later)" if "invalid option" in (err or "") else ""
        raise PostfixError("postqueue -j failed%s" % hint, cmd, rc, err)
    messages, warnings = parse_postqueue(out)
    return messages, warnings + [line for line in physical_lines(err) if line.strip()]


def postfix_running(postfix, runner, privileged=None):
    """{running, source}: `postfix status` (exit 0 = running) and, when it cannot tell, systemd.

    `postfix status` is for root only; run unprivileged, it fails whatever the state, and
    systemd's postfix.service answers instead (host.service_state, the one place that asks
    systemd). running is None when neither can tell.
    """
    privileged = os.geteuid() == 0 if privileged is None else privileged
    try:
        rc, out, err = runner(postfix.command("postfix", "status"))
    except PostfixError:
        rc, out, err = None, "", ""
    if rc == 0:
        return {"running": True, "source": "postfix status"}
    if rc is not None and (privileged or "is not running" in out + err):
        return {"running": False, "source": "postfix status"}
    if postfix.config_dir is None:
        unit = service_state("postfix", runner)
        if unit is not None:
            return {"running": unit["active"], "source": "systemd"}
    return {"running": None, "source": None}


def destination(recipient):
    """The relay or destination a deferred recipient waits for: from its delay reason, else its domain."""
    reason = recipient.get("delay_reason") or ""
    for pattern in _DESTINATION_PATTERNS:
        match = pattern.search(reason)
        if match:
            return match.group(1)
    address = recipient.get("address") or ""
    return address.rpartition("@")[2] or address or "unknown"


def queue_stats(messages, now):
    """Counts per queue, depth, oldest message, and deferred messages grouped by cause and destination.

    now is a Unix timestamp; a message is counted once per distinct cause (or destination) among its
    recipients.
    """
    counts = dict((name, 0) for name in QUEUES)
    oldest = None
    by_cause, by_destination = {}, {}
    size = 0
    for message in messages:
        name = message.get("queue_name")
        counts[name] = counts.get(name, 0) + 1
        size += int(message.get("message_size") or 0)
        arrival = message.get("arrival_time")
        if name != "hold" and arrival is not None and (oldest is None or arrival < oldest["arrival_time"]):
            oldest = message
        if name != "deferred":
            continue
        recipients = [r for r in message.get("recipients") or [] if r.get("delay_reason")]
        for cause in set(diagnose(r["delay_reason"])["cause"] for r in recipients):
            by_cause[cause] = by_cause.get(cause, 0) + 1
        for target in set(destination(r) for r in recipients):
            by_destination[target] = by_destination.get(target, 0) + 1
    return {
        "queues": counts,
        "queue_depth": sum(counts.get(name, 0) for name in DEPTH_QUEUES),
        "total": len(messages),
        "size_bytes": size,
        "oldest_age": max(0, int(now - oldest["arrival_time"])) if oldest else None,
        "oldest_queue_id": oldest["queue_id"] if oldest else None,
        "deferred_by_cause": by_cause,
        "deferred_by_destination": by_destination,
    }


def health_problems(
    stats, running, max_queue_depth=None, max_oldest_age=None, deliveries=None, max_bounce_rate=None, min_deliveries=0
):
    """Human-readable problems; an empty list means healthy. running None means the state is unknown.

    deliveries are delivery_stats' figures for a window of the log (None when the log was not read); the
    bounce rate counts once at least min_deliveries deliveries finished (sent, bounced or expired) in it.
    """
    problems = []
    if running is False:
        problems.append("Postfix is not running")
    if max_queue_depth is not None and stats["queue_depth"] > max_queue_depth:
        problems.append("queue depth %d exceeds %d" % (stats["queue_depth"], max_queue_depth))
    if max_oldest_age is not None and stats["oldest_age"] is not None and stats["oldest_age"] > max_oldest_age:
        problems.append(
            "oldest message %s is %ds old, over %ds" % (stats["oldest_queue_id"], stats["oldest_age"], max_oldest_age)
        )
    rate = deliveries["bounce_rate"] if deliveries else None
    if (
        max_bounce_rate is not None
        and rate is not None
        and deliveries["finished"] >= max(1, min_deliveries)
        and rate > max_bounce_rate
    ):
        causes = dict(deliveries["bounced_by_cause"])
        for cause, count in deliveries["expired_by_cause"].items():
            causes["expired: %s" % cause] = count
        problems.append(
            "bounce rate %s over %s: %d of %d deliveries in the last %ds bounced or expired (%s)"
            % (
                _percent(rate),
                _percent(max_bounce_rate),
                deliveries["bounced"] + deliveries["expired"],
                deliveries["finished"],
                deliveries["interval"],
                ", ".join("%s=%d" % item for item in sorted(causes.items(), key=lambda item: (-item[1], item[0]))),
            )
        )
    return problems


def _percent(fraction):
    return ("%.1f" % (fraction * 100)).rstrip("0").rstrip(".") + "%"


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(stats, running, healthy, last_delivery_timestamp=None, deliveries=None):
    """node_exporter textfile-collector metrics for one host, as text.

    The delivery figures are gauges over the window they were counted in (its length is
    smarthost_postfix_deliveries_interval_seconds), not counters: each run reads a window of the log
    and keeps nothing between runs, so a sum across runs would neither be monotonic nor count each
    line once.
    """
    lines = []

    def gauge(name, help_text, samples):
        lines.append("# HELP smarthost_postfix_%s %s" % (name, help_text))
        lines.append("# TYPE smarthost_postfix_%s gauge" % name)
        for labels, value in samples:
            label_text = "{%s}" % ",".join('%s="%s"' % (key, _label(val)) for key, val in labels) if labels else ""
            lines.append("smarthost_postfix_%s%s %s" % (name, label_text, value))

    gauge(
        "queue_messages",
        "Messages in each Postfix queue.",
        [((("queue", name),), stats["queues"][name]) for name in QUEUES],
    )
    gauge("queue_depth", "Messages waiting for delivery (all queues but hold).", [((), stats["queue_depth"])])
    gauge(
        "queue_oldest_message_age_seconds",
        "Age of the oldest message outside hold; 0 when the queue is empty.",
        [((), stats["oldest_age"] or 0)],
    )
    gauge(
        "deferred_messages",
        "Deferred messages by diagnosed cause.",
        [((("cause", cause),), count) for cause, count in sorted(stats["deferred_by_cause"].items())],
    )
    if deliveries is not None:
        gauge(
            "deliveries_interval_seconds",
            "Length of the window of the mail log the deliveries were counted in.",
            [((), deliveries["interval"])],
        )
        gauge(
            "deliveries_last_interval",
            "Deliveries in the last interval by status: one per recipient and attempt "
            "(deferred counts each retry), expired one per message; without Postfix's own notices.",
            [((("status", status),), deliveries[status]) for status in STATUSES],
        )
        gauge(
            "deliveries_by_cause_last_interval",
            "Deferred, bounced and expired deliveries in the last interval by diagnosed cause.",
            [
                ((("status", status), ("cause", cause)), count)
                for status in FAILURES
                for cause, count in sorted(deliveries["%s_by_cause" % status].items())
            ],
        )
        gauge(
            "deferred_messages_last_interval",
            "Distinct messages deferred at least once in the last interval.",
            [((), deliveries["deferred_messages"])],
        )
        gauge(
            "notifications_last_interval",
            "Deliveries of Postfix's own notices (null sender: bounces, delay "
            "warnings) in the last interval by status.",
            [((("status", status),), deliveries["notifications"][status]) for status in STATUSES],
        )
    if running is not None:
        gauge("up", "Whether the Postfix master process runs.", [((), 1 if running else 0)])
    gauge(
        "healthy", "Whether the host is within the configured thresholds and Postfix runs.", [((), 1 if healthy else 0)]
    )
    if last_delivery_timestamp is not None:
        gauge(
            "last_delivery_timestamp_seconds",
            "Unix time of the last successful delivery found in the mail log.",
            [((), "%.3f" % last_delivery_timestamp)],
        )
    return "\n".join(lines) + "\n"


def write_atomically(path, content, mode=0o644):
    """Replace path with content in one rename (node_exporter must never read half a file). Returns changed."""
    if read_text(path) == content and os.path.exists(path):
        return False
    uid, gid = wanted_owner()
    atomic_write(path, content.encode("utf-8"), mode, uid, gid)
    return True
