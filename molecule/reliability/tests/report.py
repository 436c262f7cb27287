# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Render docs/reliability.md from the reliability scenario's results file.

    python3 molecule/reliability/tests/report.py RELIABILITY_JSON [OUTPUT_MD]

The verify step calls render() itself at the end of the session (conftest.py);
the command line is for re-rendering a kept results file. Nothing in the
document is written by hand: every row and figure comes from the JSON.
"""

import json
import sys

SECTIONS = (
    "Faults",
    "Delivery metrics",
    "Load",
    "Security",
    "OAuth 2.0 and certificates",
    "Bad input",
    "Decommission",
)
COUNTS = ("sent", "arrived", "lost", "duplicated")


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return "%.1f" % value
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows):
    lines = [
        "| what was tried | what happened | sent | arrived | lost | duplicated | seconds | result |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            "| %s |"
            % " | ".join(
                _cell(value)
                for value in (
                    row.get("tried"),
                    row.get("happened"),
                    row.get("sent"),
                    row.get("arrived"),
                    row.get("lost"),
                    row.get("duplicated"),
                    row.get("seconds"),
                    row.get("result"),
                )
            )
        )
    return lines


def _short_message(message):
    """The refusal itself, without the Ansible wrapping around a failed filter or argument check."""
    for marker in ("relay_plan failed: ", "Validation of arguments failed: "):
        if marker in message:
            return message.split(marker, 1)[1]
    return message


def _bad_input_table(cases):
    lines = [
        "| case | -e overrides | named variable | Postfix files unchanged | message |",
        "|---|---|---|---|---|",
    ]
    for case in cases:
        lines.append(
            "| %s |"
            % " | ".join(
                _cell(value)
                for value in (
                    case.get("case"),
                    "`%s`" % case.get("overrides"),
                    case.get("variable"),
                    case.get("unchanged"),
                    _short_message(case.get("message") or "")[:200],
                )
            )
        )
    return lines


def render_markdown(data):
    results = data["results"]
    passed = sum(1 for row in results if row.get("result") == "passed")
    lines = [
        "# Reliability and security",
        "",
        "Produced by the `reliability` molecule scenario (`molecule test -s reliability`, part of",
        "`make test`) from its results file; do not edit by hand. Re-render a kept results file with",
        "`python3 molecule/reliability/tests/report.py <ephemeral dir>/reliability.json`.",
        "",
        "Run %s to %s: %d of %d checks passed. Postfix %s."
        % (
            data.get("started"),
            data.get("finished"),
            passed,
            len(results),
            ", ".join(
                "%s on %s" % (version, name) for name, version in sorted((data.get("postfix_versions") or {}).items())
            ),
        ),
        "Targets: `rel-relay` (Debian 13, relay_server, `relay_tls_security_level: secure`), `rel-encrypt`",
        "(Debian 12, null_client, `encrypt`), `rel-outsider` (Debian 12, outside mynetworks, no Postfix role);",
        "`oa-office365` (Debian 12) and `oa-gmail` (Debian 13) relay with OAuth 2.0 (XOAUTH2 through msmtp, tokens",
        "from the emulator's Entra ID and Google endpoints), `oa-connector` (Debian 12) with a TLS client certificate;",
        "the provider emulator answers as `relay.example.test`. Times are measured, not asserted; counts",
        "of lost and duplicated messages are asserted to be zero.",
        "",
    ]
    for section in SECTIONS:
        rows = [row for row in results if row.get("section") == section]
        if not rows:
            continue
        lines += ["## %s" % section, ""] + _table(rows) + [""]
        for row in rows:
            if row.get("failure"):
                lines.append("* **%s failed:** %s" % (row["test"], _cell(row["failure"])))
            if row.get("cases"):
                lines += ["", "### %s" % row.get("item")] + [""] + _bad_input_table(row["cases"])
        lines.append("")
    lines += [
        "## Raw results",
        "",
        "```json",
        json.dumps(data, indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def render(json_path, markdown_path):
    with open(json_path) as handle:
        data = json.load(handle)
    with open(markdown_path, "w") as handle:
        handle.write(render_markdown(data))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    render(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else "docs/reliability.md")
