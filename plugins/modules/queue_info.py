#!/usr/bin/python
# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: queue_info
short_description: Report Postfix queue depth, deliveries by status and cause, service state and last delivery
version_added: 0.1.0
author: "smarthost.postfix maintainers (@smarthost)"
description:
  - Reads the queue with C(postqueue -j) (Postfix 3.1 or later) and reports the number of messages per queue,
    the age of the oldest message, and deferred messages grouped by diagnosed cause and by relay or destination.
  - Counts, from the mail log or the journal, the deliveries of the last O(interval) (or since O(since)) by status
    (sent, deferred, bounced, expired) and by diagnosed cause (RV(deliveries)), because the queue alone does not
    show a relay that accepts mail and then bounces it. Also reports when the last delivery succeeded.
  - Reports whether Postfix runs (C(postfix status), or systemd when that cannot tell).
  - Compares the queue and the bounce rate with thresholds and returns RV(healthy) and RV(problems) without
    failing, so the playbook decides (see C(smarthost.postfix.health) playbook).
  - Optionally writes Prometheus node_exporter textfile-collector metrics. Nothing else is changed.
options:
  config_dir:
    description:
      - Postfix configuration directory of the instance to inspect (passed as C(-c)). Default is Postfix's own.
    type: path
  log_source:
    description:
      - Where to count deliveries and look for the last successful delivery.
      - V(auto) uses O(log_path) when given, else Postfix's C(maillog_file) when set, else C(/var/log/mail.log) or
        C(/var/log/maillog), else the journal.
      - V(file) requires a readable log file, V(journal) reads the journal's mail facility with C(journalctl),
        V(none) reads no log (RV(deliveries) and RV(last_delivery) are V(null)).
      - Only the window is read; a file is searched backwards for its start, the journal with C(--since). When the
        window holds no successful delivery, at most 16 MiB of a file (50000 journal entries) before it are
        searched for the last one.
    type: str
    choices: [auto, file, journal, none]
    default: auto
  log_path:
    description: Mail log file to read, for example C(/var/log/maillog).
    type: path
  interval:
    description:
      - Count the deliveries logged in this last stretch of time, up to now, in Postfix's time units
        (C(3600), C(90s), C(30m), C(1h), C(1d), C(1w)).
      - A textfile exporter run from a timer should use its period, so that the windows follow each other.
      - Default C(1h) when O(since) is not given.
    type: str
  since:
    description:
      - Count the deliveries logged since this time instead - a Unix time or ISO 8601 (without a zone it is the
        host's local time), as M(smarthost.postfix.mail_trace) takes it.
    type: str
  max_bounce_rate:
    description:
      - Highest acceptable share, from 0 to 1, of the deliveries finished in the window that bounced or expired,
        that is (bounced + expired) / (sent + bounced + expired), Postfix's own notices not counted. Unset means no
        limit.
      - Only judged once at least O(bounce_rate_min_deliveries) deliveries finished, so that one bounce of one
        message is not a rate of 100%.
    type: float
  bounce_rate_min_deliveries:
    description: Finished deliveries in the window below which O(max_bounce_rate) is not judged.
    type: int
    default: 20
  max_queue_depth:
    description:
      - Highest acceptable number of messages waiting for delivery (all queues except hold). Unset means no limit.
    type: int
  max_oldest_age:
    description:
      - Highest acceptable age in seconds of the oldest message outside the hold queue. Unset means no limit.
    type: int
  textfile_path:
    description:
      - Write node_exporter textfile-collector metrics to this file (it should end in C(.prom) and live in the
        collector's directory). It is replaced atomically; in check mode it is not written.
    type: path
notes:
  - C(postqueue -j) and C(postfix status) need root to report everything; use C(become).
  - The delivery figures describe one window and are exported as gauges (C(smarthost_postfix_deliveries_last_interval)
    and the others named C(..._last_interval), with C(smarthost_postfix_deliveries_interval_seconds)), not as
    counters. A counter must only grow, and each log line count once, across calls; this module keeps no state
    between calls (a run from cron, one from C(health.yml) and one in check mode read windows of their own), and a
    carried-over total would break on log rotation, journal vacuuming and a lost state file. Divide by the interval
    for a rate; a log-following exporter gives true counters where they are needed.
  - One delivery is one log line - one recipient and one attempt - so a message deferred three times in the window
    counts three deferrals (RV(deliveries.deferred_messages) counts it once). An expired message counts once.
  - With Postfix stopped, C(postqueue) run by root reads the queue directly and warns; the warning is returned in
    RV(warnings_postqueue).
attributes:
  check_mode:
    support: full
    description: Read-only in check mode; the metrics file is not written but C(changed) says whether it would be.
  diff_mode:
    support: none
    description: The metrics file is a measurement, not configuration; no diff is shown.
  platform:
    support: N/A
    description: Linux hosts with Postfix (Debian and Red Hat families); runs on the managed host.
    platforms: posix
seealso:
  - module: smarthost.postfix.mail_trace
"""

EXAMPLES = r"""
- name: Queue facts with thresholds
  smarthost.postfix.queue_info:
    max_queue_depth: 500
    max_oldest_age: 3600
  become: true
  register: queue

- name: Fail when the host is backing up
  ansible.builtin.fail:
    msg: "{{ queue.problems | join('; ') }}"
  when: not queue.healthy

- name: Fail when more than 5% of the last hour's deliveries bounced (judged from 20 on)
  smarthost.postfix.queue_info:
    interval: 1h
    max_bounce_rate: 0.05
  become: true
  register: deliveries
  failed_when: not deliveries.healthy

- name: Export metrics for node_exporter, from a job that runs every 5 minutes
  smarthost.postfix.queue_info:
    interval: 5m
    textfile_path: /var/lib/prometheus/node-exporter/postfix.prom
  become: true
"""

RETURN = r"""
queues:
  description: Messages per queue.
  returned: always
  type: dict
  sample: {maildrop: 0, incoming: 0, active: 1, deferred: 12, hold: 0}
queue_depth:
  description: Messages waiting for delivery, all queues except hold.
  returned: always
  type: int
  sample: 13
total:
  description: Messages in all queues, hold included.
  returned: always
  type: int
  sample: 13
size_bytes:
  description: Sum of the message sizes.
  returned: always
  type: int
  sample: 48211
oldest_age:
  description: Age in seconds of the oldest message outside hold; V(null) when the queue is empty.
  returned: always
  type: int
  sample: 5400
oldest_queue_id:
  description: Queue id of that message.
  returned: always
  type: str
  sample: 4A5041806D6
deferred_by_cause:
  description:
    - Deferred messages per diagnosed cause of their delay reasons (the vocabulary of
      M(smarthost.postfix.mail_trace)'s RV(smarthost.postfix.mail_trace#module:diagnosis.cause)).
  returned: always
  type: dict
  sample: {auth_failed_535: 10, throttled_454: 2}
deferred_by_destination:
  description: Deferred messages per relay host (from the delay reason) or recipient domain.
  returned: always
  type: dict
  sample: {email-smtp.eu-west-1.amazonaws.com: 12}
service:
  description: Whether Postfix runs.
  returned: always
  type: dict
  contains:
    running:
      description: V(true), V(false), or V(null) when it could not be determined.
      type: bool
      sample: true
    source:
      description: C(postfix status) or C(systemd).
      type: str
      sample: postfix status
deliveries:
  description:
    - The deliveries Postfix logged in the window, by status and by diagnosed cause (the vocabulary of
      M(smarthost.postfix.mail_trace)'s RV(smarthost.postfix.mail_trace#module:diagnosis.cause) and
      C(docs/troubleshooting.md)); V(null) with O(log_source=none).
    - Deliveries of Postfix's own notices (the null sender) are only in RV(deliveries.notifications).
  returned: always
  type: dict
  contains:
    since:
      description: Start of the window, ISO 8601; it ends when the log was read.
      type: str
      sample: "2026-11-22T02:07:38+00:00"
    interval:
      description: Length of the window in seconds.
      type: int
      sample: 3600
    sent:
      description: Recipients delivered.
      type: int
      sample: 1180
    deferred:
      description: Delivery attempts deferred (one per recipient and attempt).
      type: int
      sample: 30
    bounced:
      description: Recipients bounced.
      type: int
      sample: 12
    expired:
      description: Messages returned to their sender after C(maximal_queue_lifetime).
      type: int
      sample: 0
    finished:
      description: RV(deliveries.sent) + RV(deliveries.bounced) + RV(deliveries.expired).
      type: int
      sample: 1192
    bounce_rate:
      description: (bounced + expired) / finished, rounded to 4 places; V(null) when nothing finished.
      type: float
      sample: 0.0101
    deferred_messages:
      description: Distinct messages deferred at least once in the window.
      type: int
      sample: 10
    deferred_by_cause:
      description: RV(deliveries.deferred) per diagnosed cause.
      type: dict
      sample: {throttled_454: 30}
    bounced_by_cause:
      description: RV(deliveries.bounced) per diagnosed cause.
      type: dict
      sample: {ses_sandbox_554: 12}
    expired_by_cause:
      description: RV(deliveries.expired) per the cause of the message's last deferral in the window (V(unknown)
        when it was deferred only before).
      type: dict
      sample: {}
    notifications:
      description: Deliveries of Postfix's bounce and delay notices, per status.
      type: dict
      sample: {sent: 12, deferred: 0, bounced: 0, expired: 0}
last_delivery:
  description:
    - The last successful delivery found in the log - in the window, else in the stretch before it that
      O(log_source) describes; V(null) when none was found or O(log_source=none).
  returned: always
  type: dict
  contains:
    time:
      description: When, ISO 8601.
      type: str
      sample: "2026-11-22T03:07:38.686616+00:00"
    age:
      description: Seconds since then.
      type: int
      sample: 42
    queue_id:
      description: Queue id of the delivered message.
      type: str
      sample: 2985118041D
    relay:
      description: Where it went.
      type: str
      sample: "email-smtp.eu-west-1.amazonaws.com[52.18.1.2]:587"
log_source:
  description: The log that was searched (a path or C(journal)); V(null) with O(log_source=none).
  returned: always
  type: str
  sample: /var/log/mail.log
healthy:
  description: V(true) when RV(problems) is empty.
  returned: always
  type: bool
  sample: false
problems:
  description: Thresholds exceeded and Postfix not running, one sentence each.
  returned: always
  type: list
  elements: str
  sample:
    - "queue depth 812 exceeds 500"
    - "bounce rate 24% over 5%: 6 of 25 deliveries in the last 3600s bounced or expired (ses_sandbox_554=6)"
warnings_postqueue:
  description: What C(postqueue) printed besides the queue, such as "Mail system is down".
  returned: always
  type: list
  elements: str
  sample: []
textfile_path:
  description: The metrics file written (or that would be written in check mode); V(null) without O(textfile_path).
  returned: always
  type: str
  sample: /var/lib/prometheus/node-exporter/postfix.prom
"""

import datetime
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.smarthost.postfix.plugins.module_utils.delivery_stats import parse_interval, read_deliveries
from ansible_collections.smarthost.postfix.plugins.module_utils.maillog import LOG_SOURCES, open_log_source, parse_since
from ansible_collections.smarthost.postfix.plugins.module_utils.module_support import module_runner
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix, PostfixError
from ansible_collections.smarthost.postfix.plugins.module_utils.queue import (
    health_problems,
    postfix_running,
    queue_stats,
    read_queue,
    render_metrics,
    write_atomically,
)

DEFAULT_INTERVAL = "1h"


def check_options(params, now):
    """The aware datetime deliveries are counted from; raises ValueError naming the option."""
    if params["max_bounce_rate"] is not None and not 0 <= params["max_bounce_rate"] <= 1:
        raise ValueError("max_bounce_rate: must be a share from 0 to 1, not %s" % params["max_bounce_rate"])
    if params["bounce_rate_min_deliveries"] < 0:
        raise ValueError("bounce_rate_min_deliveries: must be 0 or more, not %d" % params["bounce_rate_min_deliveries"])
    if params["since"]:
        try:
            return parse_since(params["since"])
        except ValueError as error:
            raise ValueError("since: %s" % error) from None
    try:
        seconds = parse_interval(params["interval"] or DEFAULT_INTERVAL)
    except ValueError as error:
        raise ValueError("interval: %s" % error) from None
    return datetime.datetime.fromtimestamp(now - seconds, datetime.timezone.utc)


def read_log(postfix, log_source, log_path, since, now):
    """(the window's deliveries, the last successful delivery, description of the log read); all None without a log."""
    maillog_file = None
    if log_source == "auto" and not log_path:
        try:
            maillog_file = postfix.postconf("-h", "maillog_file").strip() or None
        except PostfixError:
            maillog_file = None
    source = open_log_source(log_source, log_path, maillog_file)
    if source is None:
        return None, None, None
    deliveries, last = read_deliveries(source, since, now)
    return deliveries, last, source.describe()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            config_dir=dict(type="path"),
            log_source=dict(type="str", choices=list(LOG_SOURCES), default="auto"),
            log_path=dict(type="path"),
            interval=dict(type="str"),
            since=dict(type="str"),
            max_queue_depth=dict(type="int"),
            max_oldest_age=dict(type="int"),
            max_bounce_rate=dict(type="float"),
            bounce_rate_min_deliveries=dict(type="int", default=20),
            textfile_path=dict(type="path"),
        ),
        mutually_exclusive=[("interval", "since")],
        supports_check_mode=True,
    )
    params = module.params
    now = time.time()
    try:
        since = check_options(params, now)
    except ValueError as error:
        module.fail_json(msg=str(error))
    runner = module_runner(module)
    postfix = Postfix(params["config_dir"], runner=runner)
    try:
        messages, warnings = read_queue(postfix, runner)
    except PostfixError as error:
        module.fail_json(msg=str(error), cmd=error.cmd, rc=error.rc)
    stats = queue_stats(messages, now)
    service = postfix_running(postfix, runner)
    try:
        deliveries, delivery, log_read = read_log(postfix, params["log_source"], params["log_path"], since, now)
    except OSError as error:
        module.fail_json(msg="cannot read the mail log: %s" % error, **stats)
    problems = health_problems(
        stats,
        service["running"],
        params["max_queue_depth"],
        params["max_oldest_age"],
        deliveries,
        params["max_bounce_rate"],
        params["bounce_rate_min_deliveries"],
    )
    result = dict(
        stats,
        service=service,
        deliveries=deliveries,
        last_delivery=delivery,
        log_source=log_read,
        healthy=not problems,
        problems=problems,
        warnings_postqueue=warnings,
        textfile_path=params["textfile_path"],
        changed=False,
    )
    if params["textfile_path"]:
        sent_at = (
            datetime.datetime.fromisoformat(delivery["time"]).timestamp() if delivery and delivery["time"] else None
        )
        content = render_metrics(stats, service["running"], not problems, sent_at, deliveries)
        if module.check_mode:
            try:
                with open(params["textfile_path"]) as handle:
                    result["changed"] = handle.read() != content
            except OSError:
                result["changed"] = True
        else:
            try:
                result["changed"] = write_atomically(params["textfile_path"], content)
            except OSError as error:
                module.fail_json(msg="cannot write %s: %s" % (params["textfile_path"], error), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
