# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""queue_info's reading of a large mail log: time and peak memory, before and after the delivery counts (issue 17).

Generates a Debian 12 style mail log of a busy relay (default 100 MB, one day; see
tests/unit/plugins/module_utils/maillog_gen.py) and runs each way of reading it in a fresh child process:

  last 16 MiB into a MailLog    what queue_info did for the last delivery: the tail read into a list, every
                                line parsed into per-message histories
  1h window, counted            interval: 1h - the file searched backwards for the window, its lines counted
  1d window, counted            interval: 1d - the whole file streamed and counted

Usage (from the repository root):
  PYTHONPATH=.build/collections .venv/bin/python benchmarks/queue_info_bench.py [--size-mb 100] [--runs 3] [--json FILE]
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
import datetime, json, os, sys, time
from ansible_collections.smarthost.postfix.plugins.module_utils import delivery_stats, maillog

def peak_rss_kib():
    with open('/proc/self/status') as status:
        return int(next(line for line in status if line.startswith('VmHWM:')).split()[1])

mode, path, end, hours = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
baseline = peak_rss_kib()
started = time.perf_counter()
if mode == 'old':
    # LogSource.read_tail as it was: the last 16 MiB as a list of lines, then MailLog.feed_lines.
    size = os.path.getsize(path)
    with open(path, 'rb') as handle:
        handle.seek(max(0, size - 16 * 1024 * 1024))
        lines = handle.read().decode('utf-8', 'replace').split('\n')[1:]
    log = maillog.MailLog()
    log.feed_lines(lines)
    sent = 1 if log.last_sent else 0
else:
    since = datetime.datetime.fromtimestamp(end - hours * 3600, datetime.timezone.utc)
    deliveries, last = delivery_stats.read_deliveries(maillog.LogSource('file', path=path), since, end)
    sent = deliveries['sent']
elapsed = time.perf_counter() - started
print(json.dumps({'seconds': elapsed, 'peak_rss_kib': peak_rss_kib(), 'baseline_rss_kib': baseline, 'sent': sent}))
"""

MODES = (
    ("last 16 MiB into a MailLog (before)", "old", 0),
    ("1h window, counted", "new", 1),
    ("1d window, counted (the whole log)", "new", 24),
)


def measure(mode, path, end, hours, runs):
    samples = []
    for _run in range(runs):
        output = subprocess.run(
            [sys.executable, "-c", CHILD, mode, path, str(end), str(hours)], check=True, capture_output=True, text=True
        ).stdout
        samples.append(json.loads(output))
    return {
        "seconds": statistics.median(s["seconds"] for s in samples),
        "peak_rss_mib": max(s["peak_rss_kib"] for s in samples) / 1024.0,
        "interpreter_rss_mib": min(s["baseline_rss_kib"] for s in samples) / 1024.0,
        "sent": samples[0]["sent"],
    }


def markdown(figures):
    """The figures as printed here and in docs/performance.md (benchmarks/report.py)."""
    lines = [
        "queue_info reading a %.0f MB log of one day (median of %d runs, peak RSS of the child):"
        % (figures["log_bytes"] / 1e6, figures["runs"]),
        "",
        "| read | time | peak RSS | deliveries counted |",
        "|---|---|---|---|",
    ]
    # In the order of MODES: results.json keeps its keys sorted.
    order = [mode[0] for mode in MODES if mode[0] in figures["modes"]]
    for label in order + sorted(set(figures["modes"]) - set(order)):
        result = figures["modes"][label]
        lines.append(
            "| %s | %.3f s | %.0f MB | %s |"
            % (label, result["seconds"], result["peak_rss_mib"], result["sent"] if "window" in label else "-")
        )
    lines += [
        "",
        "(a bare interpreter with the modules imported: %.0f MB)"
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
    with tempfile.TemporaryDirectory(prefix="queue-info-bench-") as directory:
        path = os.path.join(directory, "mail.log")
        end = datetime.datetime.now(datetime.timezone.utc)
        maillog_gen.write_log(path, args.size_mb * 1024 * 1024, end)
        size = os.path.getsize(path)
        figures = {
            "log_bytes": size,
            "runs": args.runs,
            "python": sys.version.split()[0],
            "cores": os.cpu_count(),
            "modes": {},
        }
        for label, mode, hours in MODES:
            figures["modes"][label] = measure(mode, path, end.timestamp() + 1, hours, args.runs)
    sys.stdout.write(markdown(figures))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
