# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A large Debian 12 style mail log of a busy relay, for mail_trace's memory test and its benchmark.

Every message gets the lines Postfix 3.7 writes for a relayed message (pickup, cleanup, qmgr, the smtp
client's TLS line and result, removed), in the RFC 3339 format of rsyslog on Debian 12, spread evenly
over a day that ends at `end`. The last message carries the Message-ID that is traced.
"""

from __future__ import annotations

import datetime

TRACED_MESSAGE_ID = "smarthost-verify.0f6a2c1e@web1.example.net"
_SES_ID = "0100018c9f3e4b1a-6d2f3c4e-8a7b-4c1d-9e2f-3a4b5c6d7e8f-%06d"
_LINES = (
    "%(t)s web1 postfix/pickup[1154]: %(q)s: uid=0 from=<app@example.net>\n"
    "%(t)s web1 postfix/cleanup[1167]: %(q)s: message-id=<%(m)s>\n"
    "%(t)s web1 postfix/qmgr[1113]: %(q)s: from=<app@example.net>, size=%(size)d, nrcpt=1 (queue active)\n"
    "%(t)s web1 postfix/smtp[%(pid)d]: Verified TLS connection established to email-smtp.eu-west-1.amazonaws.com"
    "[52.18.1.2]:587: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n"
    "%(t)s web1 postfix/smtp[%(pid)d]: %(q)s: to=<user%(n)d@example.com>, relay=email-smtp.eu-west-1.amazonaws.com"
    "[52.18.1.2]:587, delay=0.45, delays=0.02/0.01/0.3/0.12, dsn=2.0.0, status=sent (250 Ok %(ses)s)\n"
    "%(t)s web1 postfix/qmgr[1113]: %(q)s: removed\n"
)


def write_log(path, size_bytes, end, traced_message_id=TRACED_MESSAGE_ID):
    """Write about size_bytes of log to path ending at end (aware datetime); returns the traced message's time."""
    per_message = len(_LINES % _fields(0, end, "x" * 40))
    count = max(1, size_bytes // per_message)
    start = end - datetime.timedelta(days=1)
    step = (end - start) / count
    with open(path, "w", encoding="utf-8") as handle:
        chunk = []
        for number in range(count):
            when = start + step * (number + 1)
            message_id = traced_message_id if number == count - 1 else "n.%d@web1.example.net" % number
            chunk.append(_LINES % _fields(number, when, message_id))
            if len(chunk) == 2000:
                handle.write("".join(chunk))
                chunk = []
        handle.write("".join(chunk))
    return when


def _fields(number, when, message_id):
    return {
        "t": when.isoformat(timespec="microseconds"),
        "q": "%011X" % (0x1000000000 + number),
        "m": message_id,
        "size": 1200 + number % 5000,
        "pid": 2000 + number % 40,
        "n": number,
        "ses": _SES_ID % (number % 1000000),
    }
