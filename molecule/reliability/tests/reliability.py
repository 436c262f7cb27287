# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers of the reliability scenario: batches of tagged mail, the queue, the log, file state.

Every wait here is bounded; a helper that gives up returns what it saw so the
test can report and assert on it.
"""

import collections
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "resources", "tests"))
import harness  # noqa: E402  pylint: disable=wrong-import-position

RELAY = "rel-relay"
RELAY_IP = "172.29.78.10"
ENCRYPT = "rel-encrypt"
ENCRYPT_IP = "172.29.78.11"
OUTSIDER = "rel-outsider"
RECIPIENT = "user@recipient.example.test"
SENDER = "root@example.test"
CONVERGE = os.path.join(harness.PROJECT_DIR, "molecule", "resources", "playbooks", "converge.yml")

# One message per call; several of these run side by side under xargs -P.
SUBMIT_SCRIPT = r"""#!/bin/sh
# rel-submit TAG RECIPIENT: one message through Postfix's sendmail, as a local program sends it.
printf 'From: %s\nTo: %s\nSubject: reliability %s\nX-Test-Tag: %s\n\nsent by the reliability tests\n' \
    "{sender}" "$2" "$1" "$1" | /usr/sbin/sendmail -f "{sender}" "$2"
""".replace("{sender}", SENDER)


def target(name=RELAY):
    return harness.host(name)


def wait_until(predicate, timeout, interval=1.0):
    """predicate()'s first truthy value within timeout seconds, else its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def submit(host, prefix, count, parallel=1, recipient=RECIPIENT):
    """Submit count messages tagged prefix-1..prefix-count with sendmail; return (seconds, failures)."""
    host.run(
        "test -x /usr/local/bin/rel-submit || { cat > /usr/local/bin/rel-submit <<'EOF'\n%sEOF\nchmod 0755 "
        "/usr/local/bin/rel-submit; }" % SUBMIT_SCRIPT
    )
    started = time.monotonic()
    result = host.run(
        "seq 1 %d | sed 's/^/%s-/' | xargs -P %d -I{} /usr/local/bin/rel-submit {} %s; echo \"xargs=$?\""
        % (count, prefix, parallel, recipient)
    )
    seconds = time.monotonic() - started
    failures = 0 if "xargs=0" in result.stdout else 1
    return seconds, failures, result.stderr[-2000:]


def tag_counts(prefix):
    """How many times the emulator received each tag of a batch: Counter(tag -> copies)."""
    counts = collections.Counter()
    for record in harness.records("messages"):
        tag = harness.record_tag(record) or ""
        if tag.startswith(prefix + "-"):
            counts[tag] += 1
    return counts


def arrival_figures(prefix, sent):
    """sent / arrived (distinct) / lost / duplicated (extra copies) for one batch."""
    counts = tag_counts(prefix)
    arrived = len(counts)
    return {
        "sent": sent,
        "arrived": arrived,
        "lost": sent - arrived,
        "duplicated": sum(copies - 1 for copies in counts.values()),
    }


def queue(host):
    """Postfix's queue as parsed postqueue -j records."""
    out = host.run("postqueue -j").stdout
    # Anything but a JSON object (a warning, a half-written line) is not a queue entry.
    entries = []
    for line in out.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return [entry for entry in entries if isinstance(entry, dict)]


def queue_counts(host):
    """Counter(queue name -> messages): active, deferred, incoming, hold, ..."""
    return collections.Counter(entry["queue_name"] for entry in queue(host))


def delay_reasons(host):
    return [recipient.get("delay_reason", "") for entry in queue(host) for recipient in entry.get("recipients", [])]


def flush(host):
    host.run("postqueue -f")


def wait_for_empty_queue(host, timeout, flush_every=None):
    """True once the queue is empty; flushes every flush_every seconds when given."""
    last_flush = [time.monotonic()]

    def empty():
        if flush_every and time.monotonic() - last_flush[0] >= flush_every:
            flush(host)
            last_flush[0] = time.monotonic()
        return not queue(host)

    return bool(wait_until(empty, timeout))


def wait_for_batch(host, prefix, sent, timeout, flush_every=None):
    """Wait until every tag arrived and the target's queue is empty; return the figures."""

    def done():
        if flush_every:
            flush(host)
        return len(tag_counts(prefix)) >= sent and not queue(host)

    wait_until(done, timeout, interval=flush_every or 1.0)
    return arrival_figures(prefix, sent)


def mail_log(host, since):
    """Postfix's log lines since an epoch time (journald on these images)."""
    return host.run("journalctl --no-pager -o cat --since @%s SYSLOG_FACILITY=2", str(int(since))).stdout


def bounced_lines(host, since):
    return [line for line in mail_log(host, since).splitlines() if "status=bounced" in line]


def bounce_notices_since(since):
    """Messages with the null sender (bounce notices) the emulator received since an epoch time."""
    return [
        record for record in harness.records("messages") if record.get("ts", 0) >= since and not record.get("mail_from")
    ]


def credentials_from(peer_ip, since):
    """AUTH records in which a client at peer_ip sent credentials, since an epoch time."""
    return [
        record
        for record in harness.records("auth")
        if record.get("peer") == peer_ip and record.get("ts", 0) >= since and record.get("credentials_received")
    ]


def postfix_files_checksum(host):
    """sha256 of every regular file under /etc/postfix, with owner and mode: one text to compare."""
    return host.run(
        "cd /etc/postfix && find . -type f -print0 | sort -z | xargs -0 stat -c '%n %U:%G %a' && "
        "find . -type f -print0 | sort -z | xargs -0 sha256sum"
    ).stdout


def owner_mode(host, path):
    """'owner:group octal-mode' of a file, e.g. 'root:root 600'."""
    return host.run("stat -c %s %s", "%U:%G %a", path).stdout.strip()


def file_sha256(host, path):
    return host.run("sha256sum %s", path).stdout.split()[0]


def postfix_running(host):
    return host.run("systemctl is-active postfix").stdout.strip() == "active" and host.run("postfix status").rc == 0


def settle(host):
    """Normal mode, empty queue, and no cached SMTP connection left from the previous test."""
    harness.emulator_mode("normal")
    assert wait_for_empty_queue(host, 90, flush_every=5), queue(host)
    # Postfix keeps a delivered-to connection for smtp_connection_cache_time_limit (2s);
    # a cached, already authenticated session would bypass the next test's failure mode.
    time.sleep(3)


def deliver_one(host, prefix, timeout=60):
    """Send one tagged message and wait for it: True when it arrived exactly once."""
    submit(host, prefix, 1)
    wait_until(lambda: tag_counts(prefix), timeout, interval=0.5)
    return arrival_figures(prefix, 1)


def docker(*args, timeout=120):
    return subprocess.run(
        ["docker"] + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def converge(*extra_args, limit=RELAY):
    """The scenario's converge playbook on one host with extra arguments: (rc, output)."""
    return harness.run_playbook(CONVERGE, "--limit", limit, *extra_args)


def fatal_excerpt(output, limit=800):
    """The failed task's report from a playbook's output, for short assertion messages."""
    start = output.find("fatal: [")
    return " ".join(output[start : start + limit * 2].split())[:limit] if start >= 0 else output[-limit:]


def provider_passwords():
    """Every test secret the emulator knows (passwords, OAuth 2.0 client secrets, refresh tokens)."""
    return harness.secrets()
