#!/usr/bin/env python3
# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Rough throughput check of the emulator: N client processes, STARTTLS + AUTH, M messages each.

    loadgen.py --port 587 --ca CERTS/ca.crt [--connections 4] [--messages 2000]
               [--per-connection 0] [--provider sendgrid] [--host 127.0.0.1]

--per-connection K opens a new TLS connection every K messages (1 = one message per connection,
as Postfix does without TLS connection reuse); 0 keeps one connection per client. Prints one
JSON line: messages, seconds, messages_per_second, replies by code. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import smtplib
import ssl
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BODY = (
    "From: load@example.test\r\nTo: sink@example.net\r\nSubject: load {n}\r\nX-Test-Tag: load\r\n\r\n"
    + "x" * 900
    + "\r\n"
)


def worker(options, count, queue):
    with open(os.path.join(HERE, "providers.json"), encoding="utf-8") as handle:
        entry = json.load(handle)["providers"][options.provider]
    context = ssl.create_default_context(cafile=options.ca)
    codes = {}
    client = None
    for n in range(count):
        if client is None:
            client = smtplib.SMTP(timeout=30)
            client._host = entry["hostnames"][0]  # TLS server name; the socket goes to --host
            client.connect(options.host, options.port)
            client.starttls(context=context)
            client.login(entry["username"], entry["password"])
        client.mail("load@example.test")
        client.rcpt("sink@example.net")
        code = client.data(BODY.format(n=n))[0]
        codes[code] = codes.get(code, 0) + 1
        if options.per_connection and (n + 1) % options.per_connection == 0:
            client.quit()
            client = None
    if client is not None:
        client.quit()
    queue.put(codes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=587)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--provider", default="sendgrid")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--per-connection", type=int, default=0)
    options = parser.parse_args()

    queue = multiprocessing.Queue()
    shares = [
        options.messages // options.connections + (i < options.messages % options.connections)
        for i in range(options.connections)
    ]
    processes = [multiprocessing.Process(target=worker, args=(options, share, queue)) for share in shares]
    started = time.monotonic()
    for process in processes:
        process.start()
    replies = {}
    for _unused in processes:
        for code, count in queue.get().items():
            replies[str(code)] = replies.get(str(code), 0) + count
    for process in processes:
        process.join()
    seconds = time.monotonic() - started
    print(
        json.dumps(
            {
                "messages": options.messages,
                "connections": options.connections,
                "per_connection": options.per_connection,
                "seconds": round(seconds, 2),
                "messages_per_second": round(options.messages / seconds, 1),
                "replies": replies,
            }
        )
    )


if __name__ == "__main__":
    main()
