# -*- coding: utf-8 -*-
# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Postfix mail log parsing and delivery diagnosis.

Reads the formats Postfix logs end up in - traditional syslog (RHEL /var/log/maillog,
postlogd's maillog_file), RFC 3339 (Debian 12 rsyslog /var/log/mail.log), `journalctl
-o short-iso` and `journalctl -o json` - into one record type, follows messages by
queue id, and maps a deferral or bounce reason to a cause with a remedy.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import time

from ansible_collections.smarthost.postfix.plugins.module_utils.rules import physical_lines

# Where distributions put the mail log; the first readable one wins in auto mode.
LOG_FILES = ('/var/log/mail.log', '/var/log/maillog')
LOG_SOURCES = ('auto', 'file', 'journal', 'none')

# The fixed vocabulary of delivery diagnoses: cause -> remedy. DIAGNOSIS_RULES decides which applies.
REMEDIES = {
    'no_worthy_mechs': 'Postfix has no SASL client mechanism to log in with: install libsasl2-modules (Debian, Ubuntu) or '
                       'cyrus-sasl-plain (RHEL family), and check that smtp_sasl_mechanism_filter does not exclude PLAIN/LOGIN.',
    'certificate_verify_failed': "The relay's certificate did not verify: set smtp_tls_CAfile to the OS CA bundle "
                                 '(/etc/ssl/certs/ca-certificates.crt on Debian, /etc/pki/tls/certs/ca-bundle.crt on RHEL; a '
                                 'chrooted smtp cannot read CApath), update ca-certificates, check the clock, and make '
                                 "smtp_tls_secure_cert_match match the certificate's name.",
    'auth_failed_535': 'The relay rejected the SMTP credentials (535): regenerate them. Amazon SES needs SMTP credentials, '
                       'which are not IAM access keys and are tied to a region; also check the provider\'s username rule '
                       'and that the sasl_passwd key matches relayhost exactly (brackets and port included).',
    'auth_required_530': 'The relay requires a login and Postfix did not send one: check smtp_sasl_auth_enable = yes and '
                         'that the sasl_passwd key matches the relayhost value exactly (brackets and port included), '
                         'rebuilt with postmap; Postfix only logs in over TLS unless smtp_sasl_tls_security_options allow.',
    'starttls_required_530': 'The relay requires STARTTLS and Postfix did not start TLS: set smtp_tls_security_level = '
                             'secure (or encrypt) for this relay, globally or in smtp_tls_policy_maps.',
    'ses_sandbox_554': 'Amazon SES refused an unverified address (554 Email address is not verified): verify the sender '
                       'identity in this SES region, and while the account is in the SES sandbox verify recipients too '
                       'or request production access.',
    'throttled_454': 'The relay is throttling this sender: slow Postfix down with default_destination_rate_delay (or '
                     '<transport>_destination_rate_delay) and a lower smtp_destination_concurrency_limit, or raise the '
                     'provider quota. Deferred mail is retried automatically.',
    'connection_timeout': 'Postfix could not connect to the relay: the port is probably blocked (cloud providers block '
                          'outbound 25) - use 587 or 2525; for port 465 set smtp_tls_wrappermode = yes.',
    'no_greeting': 'Postfix connected but got no SMTP greeting: port 465 speaks TLS first and needs smtp_tls_wrappermode = '
                   'yes with smtp_tls_security_level = encrypt (or use 587 with STARTTLS); otherwise a middlebox holds the port.',
    'tls_required_not_offered': 'Postfix requires TLS for this relay but the server offered no STARTTLS: use the provider\'s '
                                'TLS port (587, or 465 with wrapper mode) and check that no middlebox strips STARTTLS.',
    'tls_handshake_failed': 'TLS could not start: with smtp_tls_connection_reuse = yes the tlsproxy service must be enabled '
                            'in master.cf; otherwise compare smtp_tls_mandatory_protocols and ciphers with the relay. '
                            'The warning lines around it give the TLS library\'s reason.',
    'connection_refused': 'The relay host refused the connection: check the relay host and port (relayhost, transport maps).',
    'network_unreachable': 'No route to the relay: check routing, IPv6 connectivity (inet_protocols) and firewall reject rules.',
    'dns_failure': 'A name did not resolve: check the relayhost spelling ([host] skips the MX lookup) and the resolver; a '
                   'chrooted smtp on Debian uses /var/spool/postfix/etc/resolv.conf.',
    'recipient_rejected': 'The receiving side rejected the recipient address: check the address; nothing is wrong with the relay.',
    'unknown': 'No known pattern matched: read the reason, which quotes the remote server\'s reply.',
}

DIAGNOSIS_RULES = (
    ('no_worthy_mechs', re.compile(r'no worthy mechs|no mechanism available', re.I)),
    ('auth_failed_535', re.compile(r'said: 535\b|SASL authentication failed.*\b535\b', re.I)),
    ('auth_required_530', re.compile(r'said: 530[ -].*authenticat', re.I)),
    ('starttls_required_530', re.compile(r'said: 530[ -].*STARTTLS', re.I)),
    ('ses_sandbox_554', re.compile(r'Email address is not verified', re.I)),
    ('throttled_454', re.compile(r'said: 4[25]\d\b.*(throttl|rate|too many|exceed|quota|limit)', re.I)),
    ('certificate_verify_failed', re.compile(r'certificate not verified|certificate verification failed|certificate verify failed', re.I)),
    ('tls_required_not_offered', re.compile(r'TLS is required, but (was not offered|our TLS engine is unavailable)', re.I)),
    ('tls_handshake_failed', re.compile(r'Cannot start TLS|TLS handshake fail', re.I)),
    ('no_greeting', re.compile(r'(timed out|lost connection with \S+) while receiving the initial server greeting', re.I)),
    ('connection_timeout', re.compile(r'connect to \S+: Connection timed out', re.I)),
    ('connection_refused', re.compile(r'Connection refused', re.I)),
    ('network_unreachable', re.compile(r'No route to host|Network is unreachable', re.I)),
    ('dns_failure', re.compile(r'Host or domain name not found|Name service error|Host not found', re.I)),
    ('recipient_rejected', re.compile(r'said: 55[0-3] .*in reply to RCPT TO command', re.I)),
)

FINAL_STATUSES = ('sent', 'bounced', 'expired')

# How much of the end of the log a health check reads to find the last delivery.
TAIL_BYTES = 16 * 1024 * 1024
TAIL_ENTRIES = 50000

# Short queue ids are hex; long ones (enable_long_queue_ids) are the time in base 52 (digits and
# consonants, 'z' included: at least 10 characters), then 'z', then the inode in base 51 (no 'z').
_QUEUE_ID = r'(?:[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]+)'
_QUEUE_ID_RE = re.compile(r'^(%s): (.*)$' % _QUEUE_ID)
_SYSLOG_RE = re.compile(
    r'^(?P<stamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?'  # RFC 3339, short-iso
    r'|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?)'  # traditional syslog / postlogd
    r' (?P<host>\S+) (?P<program>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<message>.*)$')
_DELIVERY_RE = re.compile(
    r'^to=<(?P<to>[^>]*)>, (?:orig_to=<(?P<orig_to>[^>]*)>, )?relay=(?P<relay>[^,]+), (?:conn_use=\d+, )?'
    r'delay=(?P<delay>[\d.]+), delays=(?P<delays>[\d./]+), dsn=(?P<dsn>[\d.]+), status=(?P<status>\w+)'
    r'(?: \((?P<reason>.*)\))?$')
_QUEUED_RE = re.compile(r'^from=<(?P<sender>[^>]*)>, size=(?P<size>\d+), nrcpt=(?P<nrcpt>\d+)')
_EXPIRED_RE = re.compile(r'^from=<(?P<sender>[^>]*)>, status=expired')
_MESSAGE_ID_RE = re.compile(r'^message-id=<?(?P<message_id>[^>\s]*)>?')
_NOTIFICATION_RE = re.compile(r'^sender (?:non-)?delivery(?: status)? notification: (?P<queue_id>%s)$' % _QUEUE_ID)


class LogRecord(object):
    """One Postfix log line: time (aware datetime or None), program (postfix/smtp), pid, message, raw line."""

    __slots__ = ('time', 'host', 'program', 'pid', 'message', 'raw')

    def __init__(self, time, host, program, pid, message, raw):
        self.time = time
        self.host = host
        self.program = program
        self.pid = pid
        self.message = message
        self.raw = raw

    @property
    def service(self):
        """The Postfix daemon: smtp for postfix/smtp and postfix-out/smtp."""
        return self.program.rsplit('/', 1)[-1]


def _parse_stamp(stamp, now):
    if stamp[0].isdigit():
        text = stamp.replace('Z', '+00:00')
        if re.search(r'[+-]\d\d\d\d$', text):  # short-iso writes +0000
            text = text[:-2] + ':' + text[-2:]
        parsed = _fromisoformat(text)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)
    # Traditional syslog has no year and no zone: assume local time within the past year.
    now = now or datetime.datetime.now().astimezone()
    fmt = '%Y %b %d %H:%M:%S.%f' if '.' in stamp else '%Y %b %d %H:%M:%S'
    parsed = datetime.datetime.strptime('%d %s' % (now.year, ' '.join(stamp.split())), fmt).replace(tzinfo=now.tzinfo)
    if parsed > now + datetime.timedelta(days=1):
        parsed = parsed.replace(year=parsed.year - 1)
    return parsed


def _fromisoformat(text):
    # Python 3.8-3.10 fromisoformat() takes exactly 0, 3 or 6 fraction digits.
    match = re.match(r'^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$', text)
    fraction = (match.group(2) or '')[:6]
    return datetime.datetime.fromisoformat(match.group(1) + ('.' + fraction.ljust(6, '0') if fraction else '') + match.group(3))


def _journal_record(line):
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    message = entry.get('MESSAGE')
    if isinstance(message, list):  # journald stores non-UTF-8 messages as byte arrays
        message = bytes(message).decode('utf-8', 'replace')
    program = entry.get('SYSLOG_IDENTIFIER')
    if not isinstance(message, str) or not program:
        return None
    stamp = entry.get('__REALTIME_TIMESTAMP')
    when = datetime.datetime.fromtimestamp(int(stamp) / 1e6, datetime.timezone.utc) if stamp else None
    pid = entry.get('SYSLOG_PID') or entry.get('_PID')
    return LogRecord(when, entry.get('_HOSTNAME'), program, int(pid) if pid else None, message, message)


def parse_line(line, now=None):
    """A LogRecord for a syslog-style or journal JSON line, or None for anything else.

    now anchors the year of traditional syslog timestamps (default: the current local time).
    """
    line = line.rstrip('\r\n')
    if line.startswith('{'):
        return _journal_record(line)
    match = _SYSLOG_RE.match(line)
    if not match:
        return None
    try:
        when = _parse_stamp(match.group('stamp'), now)
    except ValueError:
        when = None
    pid = match.group('pid')
    return LogRecord(when, match.group('host'), match.group('program'), int(pid) if pid else None, match.group('message'), line)


def provider_message_id(reply):
    """The id a relay gave the message in its 250 reply, or None.

    Covers "queued as ID" (Postfix-based relays, SendGrid, Brevo), "id=ID" (SMTP2GO), "<ID>"
    (Office 365 and others), "Ok ID" (Amazon SES) and Gmail's "... ID - gsmtp".
    """
    if not reply:
        return None
    text = reply.strip()
    for pattern in (r'queued as <?([^\s>]+)>?', r'\bid=<?([^\s>,;]+)>?', r'<([^\s>]+)>', r'(\S+) - gsmtp\s*$'):
        match = re.search(pattern, text, re.I)
        if match:
            return match.group(1)
    match = re.match(r'^25\d(?:[ -]2\.\d{1,3}\.\d{1,3})?\s+(?:ok|accepted|queued)\b[:,]?\s+(\S+)\s*$', text, re.I)
    if match:
        return match.group(1)
    return None


def diagnose(reason_text):
    """{cause, remedy} for a deferral or bounce reason; cause is a key of REMEDIES."""
    text = reason_text or ''
    for cause, pattern in DIAGNOSIS_RULES:
        if pattern.search(text):
            return {'cause': cause, 'remedy': REMEDIES[cause]}
    return {'cause': 'unknown', 'remedy': REMEDIES['unknown']}


def parse_event(record):
    """The delivery event a record carries, as a dict with a 'type', or None.

    Types: message_id, pickup, queued, delivery, notification, expired, removed - all with
    queue_id - and context (a delivery agent's line without queue id, like a TLS warning).
    """
    if '/' not in record.program:
        return None
    match = _QUEUE_ID_RE.match(record.message)
    if not match:
        if record.service in ('smtp', 'lmtp'):
            return {'type': 'context', 'text': record.message}
        return None
    queue_id, rest = match.groups()
    event = {'queue_id': queue_id}
    if record.service == 'cleanup':
        found = _MESSAGE_ID_RE.match(rest)
        if found:
            event.update(type='message_id', message_id=found.group('message_id'))
            return event
        return None
    if rest == 'removed':
        event['type'] = 'removed'
        return event
    found = _DELIVERY_RE.match(rest)
    if found:
        event.update(found.groupdict(), type='delivery')
        event['delay'] = float(event['delay'])
        event['provider_message_id'] = provider_message_id(event['reason']) if event['status'] == 'sent' else None
        return event
    found = _QUEUED_RE.match(rest)
    if found and record.service == 'qmgr':
        event.update(type='queued', sender=found.group('sender'), size=int(found.group('size')), nrcpt=int(found.group('nrcpt')))
        return event
    found = _EXPIRED_RE.match(rest)
    if found:
        event.update(type='expired', sender=found.group('sender'))
        return event
    if record.service == 'pickup':
        sender = re.search(r'from=<([^>]*)>', rest)
        event.update(type='pickup', sender=sender.group(1) if sender else None)
        return event
    found = _NOTIFICATION_RE.match(rest)
    if found:
        event.update(type='notification', notice_queue_id=found.group('queue_id'))
        return event
    return None


def _iso(when):
    return when.isoformat() if when else None


class MailLog(object):
    """Per-queue-id histories built from log records fed in order."""

    def __init__(self):
        self.messages = {}
        self.by_message_id = {}
        self.last_sent = None
        self._context = {}

    def feed(self, record):
        event = parse_event(record)
        if event is None:
            return
        agent = (record.program, record.pid)
        if event['type'] == 'context':
            self._context.setdefault(agent, []).append(record.raw)
            return
        history = self.messages.get(event['queue_id'])
        kind = event['type']
        if history is not None and history['removed'] and kind in ('pickup', 'message_id'):
            history = None  # Postfix reused the queue id for a new message
        if history is None:
            history = self.messages[event['queue_id']] = {
                'queue_id': event['queue_id'], 'message_id': None, 'sender': None, 'nrcpt': None, 'deliveries': [],
                'removed': False, 'expired': False, 'notification_queue_id': None, 'lines': [], 'first_seen': _iso(record.time),
            }
        context = self._context.pop(agent, []) if kind == 'delivery' else []
        history['lines'].extend(context + [record.raw])
        if kind == 'message_id':
            history['message_id'] = event['message_id']
            self.by_message_id.setdefault(event['message_id'], []).append(event['queue_id'])
        elif kind in ('queued', 'pickup'):
            history['sender'] = event['sender']
            if kind == 'queued':
                history['nrcpt'] = event['nrcpt']
        elif kind == 'delivery':
            delivery = dict((key, event[key]) for key in ('to', 'orig_to', 'relay', 'delay', 'delays', 'dsn', 'status',
                                                          'reason', 'provider_message_id'))
            delivery['time'] = _iso(record.time)
            delivery['context'] = context
            history['deliveries'].append(delivery)
            if delivery['status'] == 'sent':
                self.last_sent = dict(delivery, queue_id=event['queue_id'])
        elif kind == 'notification':
            history['notification_queue_id'] = event['notice_queue_id']
        elif kind == 'expired':
            history['expired'] = True
        elif kind == 'removed':
            history['removed'] = True

    def feed_lines(self, lines, now=None):
        for line in lines:
            record = parse_line(line, now)
            if record is not None:
                self.feed(record)


def recipient_states(history):
    """The latest delivery per recipient, in first-attempt order."""
    latest = {}
    for delivery in history['deliveries']:
        latest[delivery['to']] = delivery
    return list(latest.values())


def summarize(history, wait_for='attempt'):
    """(status, final, delivery) for one queue id.

    status is the worst recipient state - bounced, then deferred, then sent - or expired,
    queued (seen, no attempt yet). final says whether waiting longer can change the answer:
    with wait_for='attempt' a deferral is final, with wait_for='sent' only sent/bounced/expired are.
    delivery is the latest delivery event that decided the status (None before any attempt).
    """
    if history['expired']:
        bounced = [d for d in history['deliveries'] if d['status'] != 'sent']
        return 'expired', True, (bounced[-1] if bounced else None)
    states = recipient_states(history)
    if not states:
        return 'queued', history['removed'], None
    for status in ('bounced', 'deferred', 'sent'):
        matching = [d for d in states if d['status'] == status]
        if matching:
            break
    else:
        status, matching = states[-1]['status'], states[-1:]
    attempted_all = history['nrcpt'] is None or len(states) >= history['nrcpt']
    pending = [d for d in states if d['status'] not in FINAL_STATUSES]
    final = history['removed'] or (attempted_all and (not pending or wait_for != 'sent'))
    return status, final, matching[-1]


def followed_queue_ids(log, queue_id=None, message_id=None):
    """The queue ids to follow: the one given, or every one that carried message_id (a local content
    filter re-injects a message under a new queue id with the same Message-ID; the last one decides)."""
    return [queue_id] if queue_id else list(log.by_message_id.get(message_id, []))


def trace_result(log, queue_ids, wait_for='attempt'):
    """Where the message stands in the log: status, delivery details, diagnosis, the lines matched, final."""
    result = {
        'found': False, 'final': False, 'status': 'not_found', 'queue_id': None, 'queue_ids': queue_ids,
        'message_id': None, 'relay': None, 'delay': None, 'delays': None, 'dsn': None, 'provider_message_id': None,
        'reason': None, 'diagnosis': None, 'recipients': [], 'lines': [],
    }
    histories = [log.messages[queue_id] for queue_id in queue_ids if queue_id in log.messages]
    if not histories:
        return result
    for history in histories:
        result['lines'].extend(history['lines'])
    history = histories[-1]
    status, final, delivery = summarize(history, wait_for)
    result.update(found=True, final=final, status=status, queue_id=history['queue_id'],
                  message_id=next((h['message_id'] for h in histories if h['message_id']), None),
                  recipients=[dict((key, d[key]) for key in ('to', 'status', 'relay', 'dsn', 'reason')) for d in recipient_states(history)])
    if delivery is not None:
        for key in ('relay', 'delay', 'delays', 'dsn', 'provider_message_id', 'reason'):
            result[key] = delivery[key]
        if status != 'sent':
            diagnosis = diagnose(delivery['reason'])
            if diagnosis['cause'] == 'unknown':
                diagnosis = diagnose('\n'.join(delivery['context']))
            result['diagnosis'] = diagnosis
    return result


def trace(source, queue_id=None, message_id=None, timeout=60, wait_for='attempt', poll_interval=1.0):
    """Follow a message in the log until its status is final or timeout seconds pass."""
    log = MailLog()
    started = time.monotonic()
    while True:
        log.feed_lines(source.read())
        result = trace_result(log, followed_queue_ids(log, queue_id, message_id), wait_for)
        elapsed = time.monotonic() - started
        if result['final'] or elapsed >= timeout:
            result['timed_out'] = not result['final']
            result['elapsed'] = round(elapsed, 1)
            return result
        time.sleep(min(poll_interval, max(0.0, timeout - elapsed)))


# --- reading the log ---------------------------------------------------------------------------

class LogSource(object):
    """Incremental reader of a log file or the journal's mail facility: each read() returns new lines."""

    def __init__(self, kind, path=None, journalctl=None):
        self.kind = kind
        self.path = path
        self.journalctl = journalctl
        self.offset = 0
        self.cursor = None

    def describe(self):
        return self.path if self.kind == 'file' else 'journal'

    def read(self):
        return self._read_file() if self.kind == 'file' else self._read_journal()

    def read_tail(self, max_bytes=TAIL_BYTES, max_entries=TAIL_ENTRIES):
        """Only the end of the log (a large mail log is not read whole for a health check)."""
        if self.kind == 'journal':
            return self._read_journal(['--lines=%d' % max_entries])
        size = os.path.getsize(self.path)
        self.offset = max(0, size - max_bytes)
        lines = self._read_file()
        return lines[1:] if size > max_bytes else lines  # the first line is probably cut

    def _read_file(self):
        size = os.path.getsize(self.path)
        if size < self.offset:  # rotated or truncated: start over
            self.offset = 0
        with open(self.path, 'rb') as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data.rfind(b'\n') + 1  # keep a half-written last line for the next read
        self.offset += complete
        return physical_lines(data[:complete].decode('utf-8', 'replace'))

    def _read_journal(self, extra=()):
        cmd = [self.journalctl, '--no-pager', '-o', 'json', 'SYSLOG_FACILITY=2'] + list(extra)
        if self.cursor:
            cmd.append('--after-cursor=' + self.cursor)
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        if proc.returncode != 0:
            raise OSError('journalctl failed (rc=%s): %s' % (proc.returncode, proc.stderr.decode('utf-8', 'replace').strip()))
        lines = physical_lines(proc.stdout.decode('utf-8', 'replace'))
        for line in reversed(lines):
            try:
                self.cursor = json.loads(line)['__CURSOR']
                break
            except (ValueError, KeyError, TypeError):
                continue
        return lines


def open_log_source(log_source='auto', log_path=None, maillog_file=None):
    """The LogSource to read, or None for log_source 'none'.

    auto prefers log_path, then Postfix's own maillog_file (postlogd), then /var/log/mail.log and
    /var/log/maillog, then the journal. Raises OSError when the requested source is unavailable.
    """
    if log_source == 'none':
        return None
    if log_source in ('auto', 'file'):
        candidates = [log_path] if log_path else ([maillog_file] if maillog_file else []) + list(LOG_FILES)
        for candidate in candidates:
            if candidate and os.path.isfile(candidate) and os.access(candidate, os.R_OK):
                return LogSource('file', path=candidate)
        if log_source == 'file':
            raise OSError('no readable mail log among %s' % ', '.join(c for c in candidates if c))
    journalctl = shutil.which('journalctl') or next((p for p in ('/usr/bin/journalctl', '/bin/journalctl') if os.path.exists(p)), None)
    if journalctl is None:
        raise OSError('no readable mail log file and no journalctl on this host')
    return LogSource('journal', journalctl=journalctl)
