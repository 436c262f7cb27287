#!/usr/bin/python
# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mail_trace
short_description: Follow one message through the Postfix log and explain why it was not delivered
version_added: 0.1.0
author: "smarthost.postfix maintainers (@smarthost)"
description:
  - Finds a message in the mail log or the journal by queue id or Message-ID, and follows it until it is sent,
    bounced or deferred (or, with O(wait_for=sent), until it is sent or bounced), or until O(timeout) passes.
  - Returns where it went (relay, delay, DSN), the provider's message id from the relay's 250 reply, and for a
    deferral or bounce the reason with a diagnosis - a cause from a fixed vocabulary and the remedy.
  - Read-only; used by the C(smarthost.postfix.verify) playbook after it sends a test message.
options:
  queue_id:
    description:
      - Postfix queue id, for example C(4A5041806D6), or a long one like C(4jXDXY0BLpzCr0F).
      - Queue ids are reused over time; O(message_id) is the robust handle for a message you sent yourself.
    type: str
  message_id:
    description:
      - Value of the message's C(Message-ID) header, with or without angle brackets. Postfix's cleanup logs it, so
        a test message with a unique Message-ID can be found without knowing its queue id. (Other headers are not
        logged unless C(header_checks) say so, which is why a tag header cannot be used to find a message.)
    type: str
  log_source:
    description:
      - V(auto) uses O(log_path) when given, else Postfix's C(maillog_file) when set, else C(/var/log/mail.log) or
        C(/var/log/maillog), else the journal.
      - V(file) requires a readable log file; V(journal) reads the journal's mail facility with C(journalctl).
    type: str
    choices: [auto, file, journal]
    default: auto
  log_path:
    description: Mail log file to read.
    type: path
  config_dir:
    description: Postfix configuration directory, to find its C(maillog_file) in V(auto) mode. Default is Postfix's own.
    type: path
  since:
    description:
      - Read the log from this time on (a few seconds earlier, for clocks and whole-second log stamps), not from its
        start. ISO 8601 (V(2026-11-22T12:00:00+00:00); without a zone it is the managed host's local time, like
        C(ansible.builtin.command)'s RV(ansible.builtin.command#module:start)) or a Unix time in seconds.
      - A file is searched backwards from its end for that time, and a window that began before the last
        rotation starts in C(<log>.1); the journal is read with C(journalctl --since).
      - Default is O(lookback) seconds before now.
    type: str
  lookback:
    description:
      - Without O(since), how many seconds back the message may have been sent. V(0) reads the whole log.
    type: int
    default: 3600
  timeout:
    description: Seconds to wait for the message to reach a final status.
    type: int
    default: 60
  wait_for:
    description:
      - V(attempt) stops at the first delivery attempt's result - sent, deferred or bounced.
      - V(sent) keeps waiting through deferrals (Postfix retries on its own schedule) until the message is sent,
        bounced or expired.
    type: str
    choices: [attempt, sent]
    default: attempt
notes:
  - Reading C(/var/log/mail.log) or the journal usually needs root or the C(adm) / C(systemd-journal) group.
  - Only the lines that name the message's queue ids or its Message-ID are kept, so a long window costs time to scan
    but little memory (docs/performance.md).
  - Deliveries through a C(pipe(8)) transport (the OAuth token tool) report the transport's name as RV(relay) and
    the tool's line (or the command's output) as RV(reason).
attributes:
  check_mode:
    support: full
    description: Read-only; it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes.
  platform:
    support: N/A
    description: Linux hosts with Postfix (Debian and Red Hat families); runs on the managed host.
    platforms: posix
seealso:
  - module: smarthost.postfix.relay_probe
  - module: smarthost.postfix.queue_info
"""

EXAMPLES = r"""
- name: Send a test message
  ansible.builtin.command:
    argv: [/usr/sbin/sendmail, -t, -i]
    stdin: "{{ test_message }}"
  register: sent
  changed_when: true

- name: Follow it, reading the log from the moment it was sent
  smarthost.postfix.mail_trace:
    message_id: "smarthost-verify.{{ tag }}@{{ inventory_hostname }}"
    since: "{{ sent.start }}"
    timeout: 120
  become: true
  register: trace

- name: Explain a failure
  ansible.builtin.debug:
    msg: "{{ trace.status }}: {{ trace.diagnosis.cause }} - {{ trace.diagnosis.remedy }}"
  when: trace.status != 'sent'

- name: Wait until a queued message finally leaves
  smarthost.postfix.mail_trace:
    queue_id: 4A5041806D6
    wait_for: sent
    timeout: 900
    log_source: journal
"""

RETURN = r"""
found:
  description: Whether the message appeared in the log.
  returned: always
  type: bool
  sample: true
status:
  description:
    - V(sent), V(deferred), V(bounced), V(expired) (returned to sender after maximal_queue_lifetime), V(queued)
      (accepted, no delivery attempt logged yet) or V(not_found).
    - With several recipients the worst state wins - bounced, then deferred, then sent.
  returned: always
  type: str
  sample: sent
final:
  description: Whether the status can no longer change for the purpose of O(wait_for).
  returned: always
  type: bool
  sample: true
timed_out:
  description: Whether O(timeout) passed before the status became final.
  returned: always
  type: bool
  sample: false
elapsed:
  description: Seconds spent waiting.
  returned: always
  type: float
  sample: 2.1
queue_id:
  description: The queue id whose delivery is reported (after a local content filter, the re-injected one).
  returned: always
  type: str
  sample: 2985118041D
queue_ids:
  description: Every queue id the message went through.
  returned: always
  type: list
  elements: str
  sample: [2985118041D]
message_id:
  description: The Message-ID Postfix logged for it.
  returned: always
  type: str
  sample: smarthost-verify.1b4e28ba@web1.example.net
relay:
  description: Relay of the reported delivery, C(host[address]:port), or C(none) when no connection was made.
  returned: always
  type: str
  sample: "email-smtp.eu-west-1.amazonaws.com[52.18.1.2]:587"
delay:
  description: Seconds from arrival to this delivery's result.
  returned: always
  type: float
  sample: 0.45
delays:
  description: Postfix's C(a/b/c/d) split - before the queue manager, in it, connection setup, transmission.
  returned: always
  type: str
  sample: 0.02/0.01/0.3/0.12
dsn:
  description: Delivery status code.
  returned: always
  type: str
  sample: 2.0.0
provider_message_id:
  description: The id the relay gave the message in its 250 reply, when it gave one.
  returned: always
  type: str
  sample: 0100018c9f3e4b1a-6d2f3c4e-8a7b-4c1d-9e2f-3a4b5c6d7e8f-000000
reason:
  description: Postfix's explanation in parentheses - for a sent message the relay's 250 reply, otherwise why it failed.
  returned: always
  type: str
  sample: >-
    SASL authentication failed; server email-smtp.eu-west-1.amazonaws.com[52.18.1.2] said:
    535 Authentication Credentials Invalid
diagnosis:
  description: For a deferred, bounced or expired message, what the reason means; V(null) otherwise.
  returned: always
  type: dict
  contains:
    cause:
      description:
        - Causes from the relay's reply (the providers' published texts, shared with M(smarthost.postfix.relay_probe)
          and M(smarthost.postfix.queue_info)) come first.
        - V(too_many_connections) - more simultaneous connections than the relay allows (Exchange Online 432 4.3.2).
        - V(throttled_454) - the relay asks to slow down (SES rate, Gmail 421 4.7.0, other 4xx about a rate).
        - V(daily_quota_exceeded) - the daily quota is used up (Gmail 550 5.4.5, SES daily quota); clears by itself.
        - V(basic_auth_disabled) - Exchange Online refuses passwords (550 5.7.30, 535 5.7.139); use OAuth.
        - V(smtp_auth_disabled) - SMTP AUTH is switched off for the tenant or mailbox.
        - V(app_password_required) - Gmail wants an app password or OAuth (534-5.7.9).
        - V(send_as_denied) - the mailbox may not send as the From address (554 5.2.252).
        - V(ses_sandbox_554) - SES refused an unverified address (sandbox).
        - V(sender_identity_not_verified) - SendGrid refused an unverified From address.
        - V(message_too_large) - the relay refused the message's size (552 5.3.4, Gmail 552 5.2.3).
        - V(oauth2_token_endpoint_unreachable), V(oauth2_invalid_client) (AADSTS7000215, AADSTS7000222),
          V(oauth2_app_not_found) (AADSTS700016), V(oauth2_invalid_grant) (Google), V(oauth2_mailbox_not_permitted)
          (535 5.7.3 after a token) - the OAuth token tool could not log in.
        - Causes from what Postfix reports itself follow.
        - V(no_worthy_mechs) - no SASL client mechanism installed (libsasl2-modules / cyrus-sasl-plain).
        - V(certificate_verify_failed) - the relay's certificate did not verify (CA file, clock, name).
        - V(auth_failed_535) - credentials rejected (SES needs SMTP credentials, not IAM keys).
        - V(auth_required_530) - the relay wants a login and Postfix sent none (sasl_passwd key does not match
          relayhost).
        - V(starttls_required_530) - the relay wants STARTTLS and Postfix did not use TLS.
        - V(connection_timeout) - no TCP connection (blocked port; 465 needs wrapper mode).
        - V(no_greeting) - connected but no SMTP greeting (465 without wrapper mode).
        - V(tls_required_not_offered) - TLS required but the relay offered no STARTTLS.
        - V(tls_handshake_failed) - TLS did not start (tlsproxy missing with connection reuse, protocol mismatch).
        - V(connection_refused), V(network_unreachable), V(dns_failure).
        - V(recipient_rejected) - the recipient address was refused.
        - V(unknown) - read RV(reason).
      type: str
      sample: auth_failed_535
    remedy:
      description: What to do about it.
      type: str
      sample: "The relay rejected the SMTP credentials (535): regenerate them. ..."
recipients:
  description: The latest state per recipient.
  returned: always
  type: list
  elements: dict
  sample:
    - {to: ops@example.com, status: sent, relay: "smtp.example.net[198.51.100.7]:587", dsn: 2.0.0, reason: "250 Ok"}
lines:
  description: The log lines that belong to the message, including TLS and SASL warnings of the delivery process.
  returned: always
  type: list
  elements: str
  sample: ["2026-11-22T03:06:30.665619+00:00 web1 postfix/cleanup[1167]: A07FA1801E5: message-id=<...>"]
since:
  description: Where the window read began (O(since), or O(lookback) before now), ISO 8601; V(null) with O(lookback=0).
  returned: always
  type: str
  sample: "2026-11-22T03:06:25.102113+00:00"
log_source:
  description: The log read, a path or C(journal).
  returned: always
  type: str
  sample: /var/log/mail.log
"""

import datetime

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.smarthost.postfix.plugins.module_utils.maillog import open_log_source, parse_since, trace
from ansible_collections.smarthost.postfix.plugins.module_utils.module_support import module_runner
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix, PostfixError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            queue_id=dict(type="str"),
            message_id=dict(type="str"),
            log_source=dict(type="str", choices=["auto", "file", "journal"], default="auto"),
            log_path=dict(type="path"),
            config_dir=dict(type="path"),
            since=dict(type="str"),
            lookback=dict(type="int", default=3600),
            timeout=dict(type="int", default=60),
            wait_for=dict(type="str", choices=["attempt", "sent"], default="attempt"),
        ),
        mutually_exclusive=[("queue_id", "message_id")],
        required_one_of=[("queue_id", "message_id")],
        supports_check_mode=True,
    )
    params = module.params
    message_id = params["message_id"].strip().strip("<>") if params["message_id"] else None
    try:
        since = window_start(params["since"], params["lookback"])
    except ValueError as error:
        module.fail_json(msg=str(error))
    maillog_file = None
    if params["log_source"] == "auto" and not params["log_path"]:
        try:
            maillog_file = (
                Postfix(params["config_dir"], runner=module_runner(module)).postconf("-h", "maillog_file").strip()
                or None
            )
        except PostfixError:
            maillog_file = None  # Postfix < 3.4 or not installed: the syslog files and the journal remain
    try:
        source = open_log_source(params["log_source"], params["log_path"], maillog_file)
        source.start_at(since)
        result = trace(
            source,
            queue_id=params["queue_id"],
            message_id=message_id,
            timeout=params["timeout"],
            wait_for=params["wait_for"],
        )
    except OSError as error:
        module.fail_json(msg="cannot read the mail log: %s" % error)
    module.exit_json(changed=False, log_source=source.describe(), since=since.isoformat() if since else None, **result)


def window_start(since, lookback, now=None):
    """The aware datetime the log is read from, or None for the whole log; raises ValueError."""
    if since:
        try:
            return parse_since(since)
        except ValueError as error:
            raise ValueError("since: %s" % error) from None
    if lookback < 0:
        raise ValueError("lookback: must be 0 or more seconds, not %d" % lookback)
    if lookback == 0:
        return None
    return (now or datetime.datetime.now(datetime.timezone.utc)) - datetime.timedelta(seconds=lookback)


if __name__ == "__main__":
    main()
