# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mail_trace's first pass over a large mail log: time and peak memory, before and after issue 14.

Generates a Debian 12 style mail log of a busy relay (default 100 MB, about 600,000 lines; see
tests/unit/plugins/module_utils/maillog_gen.py) whose last message is the one traced, then runs each
way of making the first pass in a fresh child process and reports its wall time and peak RSS
(VmHWM, the child's own; getrusage would count the parent it was forked from):

  whole log, read at once   what mail_trace did before: the file read whole, every line parsed into a
                            MailLog (this is what cost 10.6 s and 332 MB on a managed host)
  since the send            what verify.yml does now: the log is searched backwards for the send time
                            and only the lines of the traced message are kept
  whole log, streamed       lookback: 0 - the whole log scanned, only the traced message's lines kept

Usage (from the repository root):
  PYTHONPATH=.build/collections .venv/bin/python benchmarks/mail_trace_bench.py [--size-mb 100] [--runs 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
from ansible_collections.smarthost.postfix.plugins.module_utils import maillog

def peak_rss_kib():
    with open('/proc/self/status') as status:
        return int(next(line for line in status if line.startswith('VmHWM:')).split()[1])

mode, path, since, message_id = sys.argv[1:5]
baseline = peak_rss_kib()
started = time.perf_counter()
if mode == 'old':
    # The first pass as it was: LogSource._read_file from offset 0, then MailLog.feed_lines.
    with open(path, 'rb') as handle:
        data = handle.read()
    lines = data[:data.rfind(b'\n') + 1].decode('utf-8', 'replace').splitlines()
    log = maillog.MailLog()
    log.feed_lines(lines)
    result = maillog.trace_result(log, maillog.followed_queue_ids(log, message_id=message_id))
else:
    source = maillog.LogSource('file', path=path)
    if since != '-':
        source.start_at(maillog.parse_since(since))
    result = maillog.trace(source, message_id=message_id, timeout=0)
elapsed = time.perf_counter() - started
print(json.dumps({'seconds': elapsed, 'peak_rss_kib': peak_rss_kib(), 'baseline_rss_kib': baseline,
                  'status': result['status']}))
"""

MODES = (
    ("whole log, read at once (before)", "old", False),
    ("since the send (verify.yml)", "new", True),
    ("whole log, streamed (lookback: 0)", "new", False),
)


def measure(mode, path, since, message_id, runs):
    samples = []
    for _run in range(runs):
        output = subprocess.run(
            [sys.executable, "-c", CHILD, mode, path, since, message_id],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        sample = json.loads(output)
        if sample["status"] != "sent":
            raise SystemExit("the traced message was not found as sent: %s" % sample)
        samples.append(sample)
    return {
        "seconds": statistics.median(s["seconds"] for s in samples),
        "peak_rss_mib": max(s["peak_rss_kib"] for s in samples) / 1024.0,
        "interpreter_rss_mib": min(s["baseline_rss_kib"] for s in samples) / 1024.0,
    }


def markdown(figures):
    """The figures as printed here and in docs/performance.md (benchmarks/report.py)."""
    lines = [
        "mail_trace first pass on a %.0f MB log of %d lines (median of %d runs, peak RSS of the child):"
        % (figures["log_bytes"] / 1e6, figures["log_lines"], figures["runs"]),
        "",
        "| first pass | time | peak RSS |",
        "|---|---|---|",
    ]
    # In the order of MODES: results.json keeps its keys sorted.
    order = [mode[0] for mode in MODES if mode[0] in figures["modes"]]
    for label in order + sorted(set(figures["modes"]) - set(order)):
        result = figures["modes"][label]
        lines.append("| %s | %.3f s | %.0f MB |" % (label, result["seconds"], result["peak_rss_mib"]))
    lines += [
        "",
        "(a bare interpreter with the module imported: %.0f MB)"
        % min(r["interpreter_rss_mib"] for r in figures["modes"].values()),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    # Imported here: report.py imports this file for markdown() without the collection on its path.
    from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils import maillog_gen

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3, help="runs per mode; the median time and the highest RSS count")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mail-trace-bench-") as directory:
        path = os.path.join(directory, "mail.log")
        end = datetime.datetime.now(datetime.timezone.utc)
        sent_at = maillog_gen.write_log(path, args.size_mb * 1024 * 1024, end)
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            line_count = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
        figures = {
            "log_bytes": size,
            "log_lines": line_count,
            "runs": args.runs,
            "python": sys.version.split()[0],
            "cores": os.cpu_count(),
            "modes": {},
        }
        for label, mode, with_since in MODES:
            since = sent_at.isoformat() if with_since else "-"
            figures["modes"][label] = measure(mode, path, since, maillog_gen.TRACED_MESSAGE_ID, args.runs)
    sys.stdout.write(markdown(figures))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
