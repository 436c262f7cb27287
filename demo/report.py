# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Send a tagged message from each demo host and print where it went and how."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "molecule", "resources", "tests"))
import harness  # noqa: E402  pylint: disable=wrong-import-position


def main(names):
    sent = {}
    for name in names:
        target = harness.host(name)
        tag = harness.send_with_sendmail(
            target, "root", "demo-recipient@example.test", harness.new_tag(), "smarthost.postfix demo"
        )
        sent[name] = (target, tag)
    rows = [("host", "relay (as the host sees it)", "port", "TLS", "authenticated as", "envelope sender", "result")]
    failures = 0
    for name, (target, tag) in sent.items():
        relayhost = target.check_output("postconf -h relayhost")
        record = harness.wait_for_message(tag, timeout=60)
        if record is None:
            failures += 1
            rows.append((name, relayhost, "-", "-", "-", "-", "NOT DELIVERED (see postqueue -p)"))
            continue
        rows.append(
            (
                name,
                relayhost,
                str(record["local_port"]),
                "%s (%s)" % (record["tls_version"], record["tls"]),
                "%s [%s]" % (record["username"], record["provider"]),
                record["mail_from"],
                "delivered",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if index == 0:
            print("  ".join("-" * w for w in widths))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
