#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: queue_info
short_description: Report Postfix queue depth, stuck mail by cause, service state and last delivery
version_added: 0.1.0
author: "smarthost.postfix maintainers (@smarthost)"
description:
  - Reads the queue with C(postqueue -j) (Postfix 3.1 or later) and reports the number of messages per queue,
    the age of the oldest message, and deferred messages grouped by diagnosed cause and by relay or destination.
  - Reports whether Postfix runs (C(postfix status), or systemd when that cannot tell) and, from the mail log or
    the journal, when the last delivery succeeded.
  - Compares the queue with thresholds and returns RV(healthy) and RV(problems) without failing, so the playbook
    decides (see C(smarthost.postfix.health) playbook).
  - Optionally writes Prometheus node_exporter textfile-collector metrics. Nothing else is changed.
options:
  config_dir:
    description:
      - Postfix configuration directory of the instance to inspect (passed as C(-c)). Default is Postfix's own.
    type: path
  log_source:
    description:
      - Where to look for the last successful delivery.
      - V(auto) uses O(log_path) when given, else Postfix's C(maillog_file) when set, else C(/var/log/mail.log) or
        C(/var/log/maillog), else the journal.
      - V(file) requires a readable log file, V(journal) reads the journal's mail facility with C(journalctl),
        V(none) skips the search.
      - Only the end of the log is read (16 MiB of a file, 50000 journal entries).
    type: str
    choices: [auto, file, journal, none]
    default: auto
  log_path:
    description: Mail log file to read, for example C(/var/log/maillog).
    type: path
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
'''

EXAMPLES = r'''
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

- name: Export metrics for node_exporter
  smarthost.postfix.queue_info:
    textfile_path: /var/lib/prometheus/node-exporter/postfix.prom
  become: true
'''

RETURN = r'''
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
last_delivery:
  description: The last successful delivery found in the log; V(null) when none was found or O(log_source=none).
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
  sample: ["queue depth 812 exceeds 500"]
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
'''

import datetime
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.smarthost.postfix.plugins.module_utils.maillog import LOG_SOURCES, MailLog, open_log_source
from ansible_collections.smarthost.postfix.plugins.module_utils.module_support import module_runner
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix, PostfixError
from ansible_collections.smarthost.postfix.plugins.module_utils.queue import (
    health_problems, queue_stats, read_queue, render_metrics, postfix_running, write_atomically)


def last_delivery(postfix, log_source, log_path, now):
    """(last successful delivery or None, description of the log read)."""
    maillog_file = None
    if log_source == 'auto' and not log_path:
        try:
            maillog_file = postfix.postconf('-h', 'maillog_file').strip() or None
        except PostfixError:
            maillog_file = None
    source = open_log_source(log_source, log_path, maillog_file)
    if source is None:
        return None, None
    log = MailLog()
    log.feed_lines(source.read_tail())
    sent = log.last_sent
    if sent is None:
        return None, source.describe()
    when = datetime.datetime.fromisoformat(sent['time']) if sent['time'] else None
    return {
        'time': sent['time'],
        'age': max(0, int(now - when.timestamp())) if when else None,
        'queue_id': sent['queue_id'],
        'relay': sent['relay'],
    }, source.describe()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            config_dir=dict(type='path'),
            log_source=dict(type='str', choices=list(LOG_SOURCES), default='auto'),
            log_path=dict(type='path'),
            max_queue_depth=dict(type='int'),
            max_oldest_age=dict(type='int'),
            textfile_path=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    params = module.params
    runner = module_runner(module)
    postfix = Postfix(params['config_dir'], runner=runner)
    now = time.time()
    try:
        messages, warnings = read_queue(postfix, runner)
    except PostfixError as error:
        module.fail_json(msg=str(error), cmd=error.cmd, rc=error.rc)
    stats = queue_stats(messages, now)
    service = postfix_running(postfix, runner)
    try:
        delivery, log_read = last_delivery(postfix, params['log_source'], params['log_path'], now)
    except OSError as error:
        module.fail_json(msg='cannot read the mail log: %s' % error, **stats)
    problems = health_problems(stats, service['running'], params['max_queue_depth'], params['max_oldest_age'])
    result = dict(stats, service=service, last_delivery=delivery, log_source=log_read, healthy=not problems,
                  problems=problems, warnings_postqueue=warnings, textfile_path=params['textfile_path'], changed=False)
    if params['textfile_path']:
        content = render_metrics(stats, service['running'], not problems,
                                 datetime.datetime.fromisoformat(delivery['time']).timestamp() if delivery and delivery['time'] else None)
        if module.check_mode:
            try:
                with open(params['textfile_path']) as handle:
                    result['changed'] = handle.read() != content
            except (IOError, OSError):
                result['changed'] = True
        else:
            try:
                result['changed'] = write_atomically(params['textfile_path'], content)
            except (IOError, OSError) as error:
                module.fail_json(msg='cannot write %s: %s' % (params['textfile_path'], error), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
