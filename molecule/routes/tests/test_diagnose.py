# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The emulator's failure modes, produced for real and classified by relay_probe and verify.yml.

rt-relay relays to "SES" with no fallback, so each mode's failure is what
Postfix meets. The probe never sends mail, so modes that refuse mail (not
the connection or the login) must leave it reporting ok.
"""

import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "resources", "tests"))
import harness  # noqa: E402  pylint: disable=wrong-import-position

HOST = "rt-relay"
SES = "email-smtp.us-east-1.amazonaws.com"

# mode, emulator options, probe cause (None: the probe succeeds), verify status, verify cause
CASES = [
    ("auth_fail", ["--providers", "ses"], "credentials_rejected", "deferred", "auth_failed_535"),
    ("ses_sandbox", ["--providers", "ses"], None, "bounced", "ses_sandbox_554"),
    ("throttle", ["--providers", "ses"], None, "deferred", "throttled_454"),
    ("no_starttls", [], "starttls_not_offered", "deferred", "tls_required_not_offered"),
    ("untrusted_cert", [], "certificate_untrusted", "deferred", "certificate_verify_failed"),
    ("down", [], "connection_refused", "deferred", "connection_refused"),
]


def probe():
    """relay_probe from the target to SES with the preset's port and the test login."""
    ses = harness.providers()["ses"]
    args = {
        "host": SES,
        "port": 587,
        "username": ses["username"],
        "password": ses["password"],
        "timeout": 10,
        "fail_on_error": False,
    }
    env = dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json")
    proc = subprocess.run(
        ["ansible", "-i", harness.INVENTORY_FILE, HOST, "-m", "smarthost.postfix.relay_probe", "-a", json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        check=False,
    )
    assert ses["password"] not in proc.stdout
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    return result["plays"][0]["tasks"][0]["hosts"][HOST]


def verify():
    rc, output = harness.run_playbook(
        "playbooks/verify.yml",
        "-e",
        "relay_verify_hosts=" + HOST,
        "-e",
        "relay_verify_sender=root@example.test",
        "-e",
        "relay_verify_recipient=user@recipient.example.test",
        "-e",
        "relay_verify_become=false",
        "-e",
        "relay_verify_timeout=60",
    )
    return rc, output


@pytest.mark.parametrize("mode, options, probe_cause, status, cause", CASES, ids=[case[0] for case in CASES])
def test_failure_is_classified_by_probe_and_verify(mode, options, probe_cause, status, cause):
    target = harness.host(HOST)
    harness.emulator_mode(mode, *options)
    try:
        probed = probe()
        if probe_cause is None:
            assert probed["ok"], probed
        else:
            assert not probed["ok"] and probed["cause"] == probe_cause, probed
            assert probed["remedy"]
        rc, output = verify()
        assert rc != 0, output[-2000:]
        assert "%s: %s" % (HOST, status) in output, output[-2000:]
        assert "- %s:" % cause in output, output[-2000:]
    finally:
        harness.emulator_mode("normal")
        target.run("postsuper -d ALL")


def test_verify_reports_sent_with_the_provider_message_id_when_all_is_well():
    rc, output = verify()
    assert rc == 0, output[-2000:]
    assert "%s: sent via %s" % (HOST, SES) in output, output[-2000:]
    assert "provider id -," not in output
