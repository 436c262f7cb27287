# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Collects what each reliability test tried and measured, and renders docs/reliability.md.

Every test takes the ``outcome`` fixture and fills it (what was tried, what
happened, messages sent/arrived/lost/duplicated, seconds) before it asserts,
so a failing test is reported with its figures too. At the end of the session
the results go to reliability.json in the scenario's ephemeral directory and
report.py renders docs/reliability.md from that file.
"""

import datetime
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "resources", "tests"))
import harness  # noqa: E402  pylint: disable=wrong-import-position
import report  # noqa: E402  pylint: disable=wrong-import-position

RESULTS = []
STARTED = datetime.datetime.now(datetime.timezone.utc)


class Outcome(dict):
    """One row of the reliability table; a test sets its fields as it learns them."""

    def set(self, **fields):
        self.update(fields)


def pytest_collection_modifyitems(items):
    """The decommission takes two hosts out of service: it runs after every other test."""
    items.sort(key=lambda item: item.fspath.basename == "test_decommission.py")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report_ = (yield).get_result()
    if report_.when == "call" or (report_.when == "setup" and report_.outcome != "passed"):
        item.reliability_result = report_.outcome
        if report_.outcome == "failed":
            crash = getattr(report_.longrepr, "reprcrash", None)
            message = crash.message if crash is not None else str(report_.longrepr).strip().splitlines()[-1]
            item.reliability_failure = " ".join(message.split())[:300]


@pytest.fixture
def outcome(request):
    """The test's row; its result (passed/failed) is added when the test ends."""
    row = Outcome(test=request.node.name, section=None, item=None, tried=None, happened=None)
    yield row
    row["result"] = getattr(request.node, "reliability_result", "error")
    if hasattr(request.node, "reliability_failure"):
        row["failure"] = request.node.reliability_failure
    RESULTS.append(dict(row))


def pytest_sessionfinish(session, exitstatus):
    if not RESULTS or not harness.EPHEMERAL_DIR:
        return
    versions = {}
    for name in ("rel-relay", "rel-encrypt"):
        try:
            versions[name] = harness.host(name).run("postconf -h mail_version").stdout.strip()
        except Exception:  # pylint: disable=broad-except
            versions[name] = None
    data = {
        "scenario": harness.SCENARIO,
        "postfix_versions": versions,
        "started": STARTED.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "pytest_exit_status": int(exitstatus),
        "results": RESULTS,
    }
    json_path = os.path.join(harness.EPHEMERAL_DIR, "reliability.json")
    with open(json_path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    report.render(json_path, os.path.join(harness.PROJECT_DIR, "docs", "reliability.md"))


@pytest.fixture(scope="session")
def failed_converge():
    """One converge that Postfix rejects (a bad extra parameter), run with -vvv and diff mode.

    The rollback test checks what it left on the host; the secrets test greps its output.
    """
    import re
    import time

    import reliability as rel

    host = rel.target()
    before = {name: rel.file_sha256(host, "/etc/postfix/%s" % name) for name in ("main.cf", "master.cf")}
    started = time.monotonic()
    rc, output = rel.converge("-vvv", "--diff", "-e", '{"relay_extra_parameters": {"default_process_limit": "many"}}')
    seconds = time.monotonic() - started
    after = {name: rel.file_sha256(host, "/etc/postfix/%s" % name) for name in ("main.cf", "master.cf")}
    said = re.search(r"Postfix said:\s*(.*?fatal:[^\n'\"]*)", output, re.S)
    return {
        "rc": rc,
        "output": output,
        "seconds": seconds,
        "postfix_said": " ".join(said.group(1).split())[:300] if said else "",
        "main_cf_before": before["main.cf"],
        "main_cf_after": after["main.cf"],
        "master_cf_before": before["master.cf"],
        "master_cf_after": after["master.cf"],
    }
