# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
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
from collections import deque

from ansible_collections.smarthost.postfix.plugins.module_utils.provider_replies import (
    REPLY_CAUSES,
    classify_reply,
    tool_cause,
)

# Where distributions put the mail log; the first readable one wins in auto mode.
LOG_FILES = ("/var/log/mail.log", "/var/log/maillog")
LOG_SOURCES = ("auto", "file", "journal", "none")

# What Postfix itself reports about a delivery: cause -> remedy. The providers' own reply texts have
# their causes in provider_replies.REPLY_CAUSES, shared with relay_probe; diagnose() tries those first.
# Remedies name the role's variable where the role owns the setting, with the main.cf parameter it sets.
REMEDIES = {
    "no_worthy_mechs": "Postfix has no SASL client mechanism to log in with: the role installs libsasl2-modules "
    "(Debian, "
    "Ubuntu) or cyrus-sasl-plain (RHEL family) unless relay_install_packages is false; then install it, "
    "and check that no smtp_sasl_mechanism_filter in relay_extra_parameters excludes PLAIN and LOGIN.",
    "certificate_verify_failed": "The relay's certificate did not verify (no password was sent): run relay_probe "
    "against the "
    "same host and port to see which check failed and who issued the certificate; update "
    "ca-certificates, check relay_tls_ca_file (smtp_tls_CAfile) and the clock, and use the "
    "provider's documented relay_host. An unexpected issuer is an intercepting proxy.",
    "auth_failed_535": "The relay rejected the SMTP credentials (535): check relay_username (the provider's username "
    "rule) and "
    "relay_password, or create new ones. Amazon SES needs SMTP credentials, which are not IAM access "
    "keys and belong to one region (relay_ses_region). With relay_auth: oauth2, see "
    "oauth2_mailbox_not_permitted.",
    "auth_required_530": "The relay requires a login and Postfix sent none: set relay_username and relay_password, or "
    "add "
    "this host's address to the relay's allow-list if it admits hosts by IP; if main.cf or the SASL map "
    "was edited by hand, run the role again (the map key must equal relayhost exactly).",
    "starttls_required_530": "The relay requires STARTTLS and Postfix did not start TLS: a relay_domain_routes entry "
    "with "
    "tls_security_level: none, or an override outside the role, lowered "
    "smtp_tls_security_level; remove it (relay_tls_security_level).",
    "connection_timeout": "Postfix could not connect to the relay: the port is probably blocked (cloud providers block "
    "outbound 25) - set relay_port to 587 or 2525; port 465 needs wrapper mode "
    "(relay_tls_wrappermode, on by default there).",
    "no_greeting": "Postfix connected but got no SMTP greeting: the port speaks TLS first (465) and needs wrapper mode "
    "- "
    "relay_tls_wrappermode: true (smtp_tls_wrappermode) - or use 587 with STARTTLS; otherwise a middlebox "
    "holds the port.",
    "tls_required_not_offered": "Postfix requires TLS for this relay but the server offered no STARTTLS: use the "
    "provider's TLS port (relay_port 587, or 465 with wrapper mode) and check that no "
    "middlebox strips STARTTLS.",
    "tls_handshake_failed": "TLS could not start: with relay_tls_connection_reuse the role enables the tlsproxy "
    "service, so "
    "run the role again if master.cf was changed by hand; otherwise check relay_tls_min_version "
    "against the relay. The warning lines around it give the TLS library's reason.",
    "connection_refused": "The relay host refused the connection: check relay_host and relay_port (and host and port "
    "of the "
    "routes and the fallback).",
    "network_unreachable": "No route to the relay: check routing and firewall reject rules; on a host without working "
    "IPv6 "
    "set relay_inet_protocols: ipv4.",
    "dns_failure": "A name did not resolve: check relay_host's spelling and the region (relay_ses_region, "
    "relay_mailgun_region) and the resolver; a chrooted smtp on Debian uses "
    "/var/spool/postfix/etc/resolv.conf, copied when Postfix starts.",
    "recipient_rejected": "The receiving side rejected the recipient address: check the address; nothing is wrong with "
    "the relay.",
    "unknown": "No known pattern matched: read the reason, which quotes the remote server's reply.",
}

DIAGNOSIS_RULES = (
    ("no_worthy_mechs", re.compile(r"no worthy mechs|no mechanism available", re.I)),
    ("auth_failed_535", re.compile(r"said: 535\b|SASL authentication failed.*\b535\b", re.I)),
    ("auth_required_530", re.compile(r"said: 530[ -].*authenticat", re.I)),
    ("starttls_required_530", re.compile(r"said: 530[ -].*STARTTLS", re.I)),
    (
        "certificate_verify_failed",
        re.compile(r"certificate not verified|certificate verification failed|certificate verify failed", re.I),
    ),
    (
        "tls_required_not_offered",
        re.compile(r"TLS is required, but (was not offered|our TLS engine is unavailable)", re.I),
    ),
    ("tls_handshake_failed", re.compile(r"Cannot start TLS|TLS handshake fail", re.I)),
    (
        "no_greeting",
        re.compile(r"(timed out|lost connection with \S+) while receiving the initial server greeting", re.I),
    ),
    ("connection_timeout", re.compile(r"connect to \S+: Connection timed out", re.I)),
    ("connection_refused", re.compile(r"Connection refused", re.I)),
    ("network_unreachable", re.compile(r"No route to host|Network is unreachable", re.I)),
    ("dns_failure", re.compile(r"Host or domain name not found|Name service error|Host not found", re.I)),
    ("recipient_rejected", re.compile(r"said: 55[0-3] .*in reply to RCPT TO command", re.I)),
)

# Every cause diagnose() can return: the providers' replies and Postfix's own.
CAUSES = dict(REPLY_CAUSES, **REMEDIES)

FINAL_STATUSES = ("sent", "bounced", "expired")

# How much of the log before a window queue_info reads for the last delivery when the window has none.
LOOKBACK_BYTES = 16 * 1024 * 1024
LOOKBACK_ENTRIES = 50000

# Short queue ids are hex; long ones (enable_long_queue_ids) are the time in base 52 (digits and
# consonants, 'z' included: at least 10 characters), then 'z', then the inode in base 51 (no 'z').
_QUEUE_ID = r"(?:[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]+)"
_QUEUE_ID_RE = re.compile(r"^(%s): (.*)$" % _QUEUE_ID)
_SYSLOG_RE = re.compile(
    r"^(?P<stamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"  # RFC 3339, short-iso
    r"|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?)"  # traditional syslog / postlogd
    r" (?P<host>\S+) (?P<program>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<message>.*)$"
)
_DELIVERY_RE = re.compile(
    r"^to=<(?P<to>[^>]*)>, (?:orig_to=<(?P<orig_to>[^>]*)>, )?relay=(?P<relay>[^,]+), (?:conn_use=\d+, )?"
    r"delay=(?P<delay>[\d.]+), delays=(?P<delays>[\d./]+), dsn=(?P<dsn>[\d.]+), status=(?P<status>\w+)"
    r"(?: \((?P<reason>.*)\))?$"
)
_QUEUED_RE = re.compile(r"^from=<(?P<sender>[^>]*)>, size=(?P<size>\d+), nrcpt=(?P<nrcpt>\d+)")
_EXPIRED_RE = re.compile(r"^from=<(?P<sender>[^>]*)>, status=expired")
_MESSAGE_ID_RE = re.compile(r"^message-id=<?(?P<message_id>[^>\s]*)>?")
_NOTIFICATION_RE = re.compile(r"^sender (?:non-)?delivery(?: status)? notification: (?P<queue_id>%s)$" % _QUEUE_ID)


class LogRecord:
    """One Postfix log line: time (aware datetime or None), program (postfix/smtp), pid, message, raw line."""

    __slots__ = ("time", "host", "program", "pid", "message", "raw")

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
        return self.program.rsplit("/", 1)[-1]


def _parse_stamp(stamp, now):
    if stamp[0].isdigit():
        text = stamp.replace("Z", "+00:00")
        if re.search(r"[+-]\d\d\d\d$", text):  # short-iso writes +0000
            text = text[:-2] + ":" + text[-2:]
        parsed = _fromisoformat(text)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)
    # Traditional syslog has no year and no zone: assume local time within the past year.
    now = now or datetime.datetime.now().astimezone()
    fmt = "%Y %b %d %H:%M:%S.%f" if "." in stamp else "%Y %b %d %H:%M:%S"
    parsed = datetime.datetime.strptime("%d %s" % (now.year, " ".join(stamp.split())), fmt).replace(tzinfo=now.tzinfo)
    if parsed > now + datetime.timedelta(days=1):
        parsed = parsed.replace(year=parsed.year - 1)
    return parsed


def _fromisoformat(text):
    # Python 3.8-3.10 fromisoformat() takes exactly 0, 3 or 6 fraction digits.
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$", text)
    fraction = (match.group(2) or "")[:6]
    return datetime.datetime.fromisoformat(
        match.group(1) + ("." + fraction.ljust(6, "0") if fraction else "") + match.group(3)
    )


def _journal_record(line):
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # journald stores non-UTF-8 messages as byte arrays
        message = bytes(message).decode("utf-8", "replace")
    program = entry.get("SYSLOG_IDENTIFIER")
    if not isinstance(message, str) or not program:
        return None
    stamp = entry.get("__REALTIME_TIMESTAMP")
    when = datetime.datetime.fromtimestamp(int(stamp) / 1e6, datetime.timezone.utc) if stamp else None
    pid = entry.get("SYSLOG_PID") or entry.get("_PID")
    return LogRecord(when, entry.get("_HOSTNAME"), program, int(pid) if pid else None, message, message)


def parse_line(line, now=None):
    """A LogRecord for a syslog-style or journal JSON line, or None for anything else.

    now anchors the year of traditional syslog timestamps (default: the current local time).
    """
    line = line.rstrip("\r\n")
    if line.startswith("{"):
        return _journal_record(line)
    match = _SYSLOG_RE.match(line)
    if not match:
        return None
    try:
        when = _parse_stamp(match.group("stamp"), now)
    except ValueError:
        when = None
    pid = match.group("pid")
    return LogRecord(
        when, match.group("host"), match.group("program"), int(pid) if pid else None, match.group("message"), line
    )


def provider_message_id(reply):
    """The id a relay gave the message in its 250 reply, or None.

    Covers "queued as ID" (Postfix-based relays, SendGrid, Brevo), "id=ID" (SMTP2GO), "<ID>"
    (Office 365 and others), "Ok ID" (Amazon SES) and Gmail's "... ID - gsmtp".
    """
    if not reply:
        return None
    text = reply.strip()
    for pattern in (r"queued as <?([^\s>]+)>?", r"\bid=<?([^\s>,;]+)>?", r"<([^\s>]+)>", r"(\S+) - gsmtp\s*$"):
        match = re.search(pattern, text, re.I)
        if match:
            return match.group(1)
    match = re.match(r"^25\d(?:[ -]2\.\d{1,3}\.\d{1,3})?\s+(?:ok|accepted|queued)\b[:,]?\s+(\S+)\s*$", text, re.I)
    if match:
        return match.group(1)
    return None


def diagnose(reason_text):
    """{cause, remedy} for a deferral or bounce reason; cause is a key of CAUSES.

    The providers' published texts decide first (a 535 from Exchange Online can mean Basic auth is
    disabled), then what Postfix reports about the connection, TLS and login.
    """
    text = reason_text or ""
    cause = classify_reply(text)
    if cause is None and tool_cause(text) in REMEDIES:
        cause = tool_cause(text)  # the token tool says what failed where Postfix's smtp client would have
    if cause is None:
        cause = next((name for name, pattern in DIAGNOSIS_RULES if pattern.search(text)), "unknown")
    return {"cause": cause, "remedy": CAUSES[cause]}


def parse_event(record):
    """The delivery event a record carries, as a dict with a 'type', or None.

    Types: message_id, pickup, queued, delivery, notification, expired, removed - all with
    queue_id - and context (a delivery agent's line without queue id, like a TLS warning).
    """
    if "/" not in record.program:
        return None
    match = _QUEUE_ID_RE.match(record.message)
    if not match:
        if record.service in ("smtp", "lmtp"):
            return {"type": "context", "text": record.message}
        return None
    queue_id, rest = match.groups()
    event = {"queue_id": queue_id}
    if record.service == "cleanup":
        found = _MESSAGE_ID_RE.match(rest)
        if found:
            event.update(type="message_id", message_id=found.group("message_id"))
            return event
        return None
    if rest == "removed":
        event["type"] = "removed"
        return event
    found = _DELIVERY_RE.match(rest)
    if found:
        event.update(found.groupdict(), type="delivery")
        event["delay"] = float(event["delay"])
        event["provider_message_id"] = provider_message_id(event["reason"]) if event["status"] == "sent" else None
        return event
    found = _QUEUED_RE.match(rest)
    if found and record.service == "qmgr":
        event.update(
            type="queued", sender=found.group("sender"), size=int(found.group("size")), nrcpt=int(found.group("nrcpt"))
        )
        return event
    found = _EXPIRED_RE.match(rest)
    if found:
        event.update(type="expired", sender=found.group("sender"))
        return event
    if record.service == "pickup":
        sender = re.search(r"from=<([^>]*)>", rest)
        event.update(type="pickup", sender=sender.group(1) if sender else None)
        return event
    found = _NOTIFICATION_RE.match(rest)
    if found:
        event.update(type="notification", notice_queue_id=found.group("queue_id"))
        return event
    return None


def _iso(when):
    return when.isoformat() if when else None


class MailLog:
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
        if event["type"] == "context":
            self._context.setdefault(agent, []).append(record.raw)
            return
        history = self.messages.get(event["queue_id"])
        kind = event["type"]
        if history is not None and history["removed"] and kind in ("pickup", "message_id"):
            history = None  # Postfix reused the queue id for a new message
        if history is None:
            history = self.messages[event["queue_id"]] = {
                "queue_id": event["queue_id"],
                "message_id": None,
                "sender": None,
                "nrcpt": None,
                "deliveries": [],
                "removed": False,
                "expired": False,
                "notification_queue_id": None,
                "lines": [],
                "first_seen": _iso(record.time),
            }
        context = self._context.pop(agent, []) if kind == "delivery" else []
        history["lines"].extend(context + [record.raw])
        if kind == "message_id":
            history["message_id"] = event["message_id"]
            self.by_message_id.setdefault(event["message_id"], []).append(event["queue_id"])
        elif kind in ("queued", "pickup"):
            history["sender"] = event["sender"]
            if kind == "queued":
                history["nrcpt"] = event["nrcpt"]
        elif kind == "delivery":
            delivery = dict(
                (key, event[key])
                for key in (
                    "to",
                    "orig_to",
                    "relay",
                    "delay",
                    "delays",
                    "dsn",
                    "status",
                    "reason",
                    "provider_message_id",
                )
            )
            delivery["time"] = _iso(record.time)
            delivery["context"] = context
            history["deliveries"].append(delivery)
            if delivery["status"] == "sent":
                self.last_sent = dict(delivery, queue_id=event["queue_id"])
        elif kind == "notification":
            history["notification_queue_id"] = event["notice_queue_id"]
        elif kind == "expired":
            history["expired"] = True
        elif kind == "removed":
            history["removed"] = True

    def feed_lines(self, lines, now=None):
        for line in lines:
            record = parse_line(line, now)
            if record is not None:
                self.feed(record)


def recipient_states(history):
    """The latest delivery per recipient, in first-attempt order."""
    latest = {}
    for delivery in history["deliveries"]:
        latest[delivery["to"]] = delivery
    return list(latest.values())


def summarize(history, wait_for="attempt"):
    """(status, final, delivery) for one queue id.

    status is the worst recipient state - bounced, then deferred, then sent - or expired,
    queued (seen, no attempt yet). final says whether waiting longer can change the answer:
    with wait_for='attempt' a deferral is final, with wait_for='sent' only sent/bounced/expired are.
    delivery is the latest delivery event that decided the status (None before any attempt).
    """
    if history["expired"]:
        bounced = [d for d in history["deliveries"] if d["status"] != "sent"]
        return "expired", True, (bounced[-1] if bounced else None)
    states = recipient_states(history)
    if not states:
        return "queued", history["removed"], None
    for status in ("bounced", "deferred", "sent"):
        matching = [d for d in states if d["status"] == status]
        if matching:
            break
    else:
        status, matching = states[-1]["status"], states[-1:]
    attempted_all = history["nrcpt"] is None or len(states) >= history["nrcpt"]
    pending = [d for d in states if d["status"] not in FINAL_STATUSES]
    final = history["removed"] or (attempted_all and (not pending or wait_for != "sent"))
    return status, final, matching[-1]


def followed_queue_ids(log, queue_id=None, message_id=None):
    """The queue ids to follow: the one given, or every one that carried message_id (a local content
    filter re-injects a message under a new queue id with the same Message-ID; the last one decides)."""
    return [queue_id] if queue_id else list(log.by_message_id.get(message_id, []))


def trace_result(log, queue_ids, wait_for="attempt"):
    """Where the message stands in the log: status, delivery details, diagnosis, the lines matched, final."""
    result = {
        "found": False,
        "final": False,
        "status": "not_found",
        "queue_id": None,
        "queue_ids": queue_ids,
        "message_id": None,
        "relay": None,
        "delay": None,
        "delays": None,
        "dsn": None,
        "provider_message_id": None,
        "reason": None,
        "diagnosis": None,
        "recipients": [],
        "lines": [],
    }
    histories = [log.messages[queue_id] for queue_id in queue_ids if queue_id in log.messages]
    if not histories:
        return result
    for history in histories:
        result["lines"].extend(history["lines"])
    history = histories[-1]
    status, final, delivery = summarize(history, wait_for)
    result.update(
        found=True,
        final=final,
        status=status,
        queue_id=history["queue_id"],
        message_id=next((h["message_id"] for h in histories if h["message_id"]), None),
        recipients=[
            dict((key, d[key]) for key in ("to", "status", "relay", "dsn", "reason")) for d in recipient_states(history)
        ],
    )
    if delivery is not None:
        for key in ("relay", "delay", "delays", "dsn", "provider_message_id", "reason"):
            result[key] = delivery[key]
        if status != "sent":
            diagnosis = diagnose(delivery["reason"])
            if diagnosis["cause"] == "unknown":
                diagnosis = diagnose("\n".join(delivery["context"]))
            result["diagnosis"] = diagnosis
    return result


class Follower:
    """Feeds a MailLog only the lines that can belong to one message, so a large window costs little.

    A line matters when it names a followed queue id or carries the Message-ID; the queue id is learnt
    from cleanup's message-id line, and the earlier lines of that queue id (pickup, smtpd) and the
    delivery agent's warnings before its result line are taken from a short memory of recent lines.
    """

    RECENT_LINES = 2000

    def __init__(self, log, queue_id=None, message_id=None, now=None):
        self.log = log
        self.message_id = message_id
        self.queue_ids = set([queue_id]) if queue_id else set()
        # The journal's JSON escapes a Message-ID's quotes and backslashes.
        self.needles = sorted(set([message_id, json.dumps(message_id)[1:-1]])) if message_id else []
        self.recent = deque(maxlen=self.RECENT_LINES)
        self.now = now
        self._matters = None
        self._compile()

    def _compile(self):
        # One regular expression for all the strings that make a line matter: one C call per line.
        words = self.needles + sorted(self.queue_ids)
        self._matters = re.compile("|".join(re.escape(word) for word in words)).search if words else (lambda line: None)

    def feed(self, lines):
        for line in lines:
            if not self._matters(line):
                self.recent.append(line)
                continue
            record = parse_line(line, self.now)
            if record is None:
                continue
            event = parse_event(record)
            if (
                event
                and event["type"] == "message_id"
                and event["message_id"] == self.message_id
                and event["queue_id"] not in self.queue_ids
            ):
                self.queue_ids.add(event["queue_id"])
                self._compile()
                for earlier in [old for old in self.recent if event["queue_id"] in old]:
                    self._feed_line(earlier)
            elif event and event["type"] == "delivery" and event["queue_id"] in self.queue_ids:
                for warning in self._agent_context(record):
                    self.log.feed(warning)
            self.log.feed(record)

    def _feed_line(self, line):
        record = parse_line(line, self.now)
        if record is not None:
            self.log.feed(record)

    def _agent_context(self, delivery):
        """The delivery agent's lines since its previous queue id line, oldest first."""
        context = []
        pid = str(delivery.pid)
        for line in reversed(self.recent):
            if pid not in line:
                continue
            record = parse_line(line, self.now)
            if record is None or (record.program, record.pid) != (delivery.program, delivery.pid):
                continue
            if _QUEUE_ID_RE.match(record.message):
                break
            context.append(record)
        return context[::-1]


def trace(source, queue_id=None, message_id=None, timeout=60, wait_for="attempt", poll_interval=1.0):
    """Follow a message in the log until its status is final or timeout seconds pass.

    source is read from where it was positioned (LogSource.start_at) and then followed as it grows.
    """
    log = MailLog()
    follower = Follower(log, queue_id, message_id)
    started = time.monotonic()
    while True:
        follower.feed(source.iter_lines())
        result = trace_result(log, followed_queue_ids(log, queue_id, message_id), wait_for)
        elapsed = time.monotonic() - started
        if result["final"] or elapsed >= timeout:
            result["timed_out"] = not result["final"]
            result["elapsed"] = round(elapsed, 1)
            return result
        time.sleep(min(poll_interval, max(0.0, timeout - elapsed)))


def parse_since(value, now=None):
    """An aware datetime from a Unix time or an ISO 8601 text; without a zone it is this host's local time.

    Accepts what ansible.builtin.command returns as start ("2026-11-22 12:00:00.123456"). Raises ValueError.
    """
    text = str(value).strip()
    if re.match(r"^\d+(\.\d+)?$", text):
        return datetime.datetime.fromtimestamp(float(text), datetime.timezone.utc)
    text = text.replace(" ", "T", 1).replace("Z", "+00:00")
    if re.search(r"[+-]\d\d\d\d$", text):
        text = text[:-2] + ":" + text[-2:]
    try:
        parsed = _fromisoformat(text) if "T" in text else datetime.datetime.fromisoformat(text)
    except (AttributeError, ValueError):
        raise ValueError("%r is neither a Unix time nor an ISO 8601 date and time" % value) from None
    return parsed if parsed.tzinfo else parsed.astimezone()


# --- reading the log ---------------------------------------------------------------------------

# How far before `since` a line may be logged and still belong to the window: whole-second syslog
# stamps and a clock that ticks between the send and the log line.
SINCE_MARGIN = datetime.timedelta(seconds=5)
READ_BLOCK = 1024 * 1024
SEEK_BLOCK = 64 * 1024


class LogSource:
    """Incremental reader of a log file or the journal's mail facility.

    start_at(since) positions the reader shortly before a time; iter_lines() then yields every complete
    line written since the last call, in order. A file is followed across rotation (renamed: the old
    file is read to its end, then the new one from its start) and truncation (copytruncate).
    """

    def __init__(self, kind, path=None, journalctl=None):
        self.kind = kind
        self.path = path
        self.journalctl = journalctl
        self.offset = 0
        self.cursor = None
        self.since = None
        self.bytes_read = 0
        self._handle = None
        self._partial = b""
        self._before = []  # (path, offset): the rotated file to read first when the window starts in it
        self._window_begins = (path, 0)  # (path, offset) where start_at() put the window; iter_before() reads up to it

    def describe(self):
        return self.path if self.kind == "file" else "journal"

    def start_at(self, since, now=None):
        """Read from shortly before since (an aware datetime) instead of the start of the log."""
        self.since = since
        if self.kind != "file" or since is None:
            return
        limit = since - SINCE_MARGIN
        with open(self.path, "rb") as handle:
            self.offset, starts_after = _window_start(handle, os.fstat(handle.fileno()).st_size, limit, now)
        rotated = self.path + ".1"  # logrotate's delaycompress (Debian) and dateext-less RHEL keep it plain
        if self.offset == 0 and starts_after and os.path.isfile(rotated) and os.access(rotated, os.R_OK):
            with open(rotated, "rb") as handle:
                self._before = [(rotated, _window_start(handle, os.fstat(handle.fileno()).st_size, limit, now)[0])]
        self._window_begins = self._before[0] if self._before else (self.path, self.offset)

    def read(self):
        return list(self.iter_lines())

    def iter_lines(self):
        return self._iter_file() if self.kind == "file" else self._iter_journal()

    def iter_before(self, max_bytes=LOOKBACK_BYTES, max_entries=LOOKBACK_ENTRIES):
        """The lines logged before the window start_at() chose, oldest first: at most the max_bytes of a file
        that precede it (a line cut there is skipped), or the journal's last max_entries before it.

        Streamed, and independent of the window's own reading (the journal's cursor is not moved).
        """
        if self.kind == "journal":
            if self.since is None:
                return iter(())
            until = "--until=@%d" % int((self.since - SINCE_MARGIN).timestamp())
            return self._iter_journal([until, "--lines=%d" % max_entries], window=False)
        path, end = self._window_begins
        return self._iter_range(path, max(0, end - max_bytes), end)

    # -- files

    def _iter_range(self, path, start, end):
        with open(path, "rb") as handle:
            handle.seek(start)
            remaining, partial, cut = end - start, b"", start > 0
            while remaining > 0:
                data = handle.read(min(READ_BLOCK, remaining))
                if not data:
                    return
                remaining -= len(data)
                self.bytes_read += len(data)
                data = partial + data
                complete = data.rfind(b"\n") + 1
                partial = data[complete:]
                if not complete:
                    continue
                lines = data[: complete - 1].decode("utf-8", "replace").split("\n")
                if cut:
                    lines, cut = lines[1:], False
                yield from lines

    def _iter_file(self):
        while self._before:
            path, offset = self._before.pop(0)
            with open(path, "rb") as handle:
                handle.seek(offset)
                yield from self._drain(handle)
            self._partial = b""
        if self._handle is None:
            self._handle = open(self.path, "rb")
            self._handle.seek(self.offset)
        while True:
            yield from self._drain(self._handle)
            try:
                current = os.stat(self.path)
            except OSError:
                return  # rotated away and not created again yet: keep following the old file
            opened = os.fstat(self._handle.fileno())
            if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
                self._handle.close()  # rotated: the old file is read to its end, the new one starts now
                self._handle = open(self.path, "rb")
                self._partial = b""
            elif current.st_size < self._handle.tell():
                self._handle.seek(0)  # truncated in place
                self._partial = b""
            else:
                return

    def _drain(self, handle):
        """The complete lines from handle's position to its end; a half-written last line waits."""
        while True:
            data = handle.read(READ_BLOCK)
            if not data:
                return
            self.bytes_read += len(data)
            data = self._partial + data
            complete = data.rfind(b"\n") + 1
            self._partial = data[complete:]
            self.offset = handle.tell() - len(self._partial)
            if complete:
                yield from data[: complete - 1].decode("utf-8", "replace").split("\n")

    # -- the journal

    def _iter_journal(self, extra=(), window=True):
        cmd = [self.journalctl, "--no-pager", "-o", "json", "SYSLOG_FACILITY=2"] + list(extra)
        if window and self.cursor:
            cmd.append("--after-cursor=" + self.cursor)
        elif window and self.since is not None:
            cmd.append("--since=@%d" % int((self.since - SINCE_MARGIN).timestamp()))
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        last = None
        try:
            for raw in proc.stdout:
                self.bytes_read += len(raw)
                last = raw
                yield raw.decode("utf-8", "replace").rstrip("\n")
        finally:
            proc.stdout.close()
            error = proc.stderr.read()
            proc.stderr.close()
            returncode = proc.wait()
        if returncode != 0:
            raise OSError("journalctl failed (rc=%s): %s" % (returncode, error.decode("utf-8", "replace").strip()))
        if last is not None and window:
            try:
                self.cursor = json.loads(last.decode("utf-8", "replace"))["__CURSOR"]
            except (ValueError, KeyError, TypeError):
                pass


def _first_time(handle, offset, now):
    """The time of the first complete, parsable line at or after offset, and that line's offset."""
    handle.seek(offset)
    data = handle.read(SEEK_BLOCK)
    start = 0
    if offset:
        start = data.find(b"\n") + 1  # a line cut by the offset does not count
        if not start:
            return None, None
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return None, None
        record = parse_line(data[start:end].decode("utf-8", "replace"), now)
        if record is not None and record.time is not None:
            return record.time, offset + start
        start = end + 1


def _window_start(handle, size, limit, now=None):
    """(offset of the first line logged at or after limit, whether the whole file is newer than limit).

    Steps back from the end in growing blocks, reading one small block at each step, until a line
    older than limit; then reads forward from there to the first line that is not. A window at the
    end of a large file costs a few small reads.
    """
    step = SEEK_BLOCK
    position = size
    while position > 0:
        position = max(0, position - step)
        when, line_offset = _first_time(handle, position, now)
        if when is not None and when < limit:
            return _first_line_at(handle, line_offset, limit, now), False
        step *= 2
    return 0, True


def _first_line_at(handle, offset, limit, now):
    handle.seek(offset)
    for line in iter(handle.readline, b""):
        record = parse_line(line.decode("utf-8", "replace"), now)
        if record is not None and record.time is not None and record.time >= limit:
            return offset
        offset += len(line)
    return offset


def open_log_source(log_source="auto", log_path=None, maillog_file=None):
    """The LogSource to read, or None for log_source 'none'.

    auto prefers log_path, then Postfix's own maillog_file (postlogd), then /var/log/mail.log and
    /var/log/maillog, then the journal. Raises OSError when the requested source is unavailable.
    """
    if log_source == "none":
        return None
    if log_source in ("auto", "file"):
        candidates = [log_path] if log_path else ([maillog_file] if maillog_file else []) + list(LOG_FILES)
        for candidate in candidates:
            if candidate and os.path.isfile(candidate) and os.access(candidate, os.R_OK):
                return LogSource("file", path=candidate)
        if log_source == "file":
            raise OSError("no readable mail log among %s" % ", ".join(c for c in candidates if c))
    journalctl = shutil.which("journalctl") or next(
        (p for p in ("/usr/bin/journalctl", "/bin/journalctl") if os.path.exists(p)), None
    )
    if journalctl is None:
        raise OSError("no readable mail log file and no journalctl on this host")
    return LogSource("journal", journalctl=journalctl)
