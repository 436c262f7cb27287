# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Authenticated submission on rt-relay, from rt-outsider (outside relay_mynetworks) with Python's smtplib.

A logged-in application relays over verified TLS; a wrong password, AUTH before STARTTLS, a client
that does not log in and a user sending as another user's address are refused, and none of those
messages reaches the smarthost.
"""

import json
import os
import sys

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "resources", "tests"))
import harness  # noqa: E402  pylint: disable=wrong-import-position

RELAY = "rt-relay"
RELAY_IP = "172.29.77.10"
APP = "rt-outsider"

with open(os.path.join(os.path.dirname(__file__), "..", "host_vars", "rt-relay.yml")) as _handle:
    USERS = {user["name"]: user for user in yaml.safe_load(_handle)["relay_submission_users"]}
BILLING, CRM = USERS["billing-app"], USERS["crm@example.test"]

# One SMTP session from the application host: JSON in, JSON out ({stage, code, text}), so a test
# sees where the server refused. The client verifies the relay's certificate against the host's
# CA bundle (the test CA is in it), by the relay's IP address.
CLIENT = r"""
import base64, json, smtplib, ssl, sys
spec = json.loads(sys.argv[1])
context = ssl.create_default_context()
stage = "connect"
def result(stage, code, text):
    print(json.dumps({"stage": stage, "code": code, "text": text.decode() if isinstance(text, bytes) else text}))
    sys.exit(0)
try:
    if spec["tls"] == "implicit":
        smtp = smtplib.SMTP_SSL(spec["host"], spec["port"], context=context, timeout=30)
    else:
        smtp = smtplib.SMTP(spec["host"], spec["port"], timeout=30)
    smtp.ehlo("app.example.net")
    if spec["tls"] == "starttls":
        stage = "starttls"
        smtp.starttls(context=context)
        smtp.ehlo("app.example.net")
    if spec.get("user"):
        stage = "auth"
        if spec["tls"] == "none":
            # Sent by hand: smtplib would not offer AUTH the server did not advertise.
            login = base64.b64encode(("\0%s\0%s" % (spec["user"], spec["password"])).encode()).decode()
            code, text = smtp.docmd("AUTH", "PLAIN " + login)
            if code != 235:
                result(stage, code, text)
        else:
            smtp.login(spec["user"], spec["password"])
    stage = "mail"
    message = "From: %s\nTo: %s\nSubject: submission test\nX-Test-Tag: %s\n\nsent by an application\n" % (
        spec["sender"], spec["recipient"], spec["tag"])
    smtp.sendmail(spec["sender"], [spec["recipient"]], message)
    smtp.quit()
    result("done", 250, "")
except smtplib.SMTPAuthenticationError as exc:
    result(stage, exc.smtp_code, exc.smtp_error)
except smtplib.SMTPRecipientsRefused as exc:
    code, text = list(exc.recipients.values())[0]
    result("rcpt", code, text)
except smtplib.SMTPResponseException as exc:
    result(stage, exc.smtp_code, exc.smtp_error)
except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
    result(stage, None, "%s: %s" % (type(exc).__name__, exc))
"""


def submit(tls="starttls", port=587, user=None, password=None, sender="billing@example.test", tag=None):
    spec = {
        "host": RELAY_IP,
        "port": port,
        "tls": tls,
        "user": user,
        "password": password,
        "sender": sender,
        "recipient": "customer@recipient.example.test",
        "tag": tag or harness.new_tag(),
    }
    out = harness.host(APP).check_output("python3 -c %s %s", CLIENT, json.dumps(spec))
    return json.loads(out), spec["tag"]


def test_a_logged_in_app_relays_through_the_smarthost_over_verified_tls():
    outcome, tag = submit(user=BILLING["name"], password=BILLING["password"])
    assert outcome == {"stage": "done", "code": 250, "text": ""}, outcome
    record = harness.wait_for_message(tag)
    assert record is not None, harness.queue_report(harness.host(RELAY))
    assert record["provider"] == "ses" and record["username"] == harness.providers()["ses"]["username"]
    assert record["mail_from"] == "billing@example.test"
    assert record["tls_version"] in ("TLSv1.2", "TLSv1.3")
    log = (
        harness.host(RELAY)
        .run(
            "{ journalctl -q --no-pager; cat /var/log/mail.log; } 2>/dev/null | grep smarthost-submission | tail -n 50"
        )
        .stdout
    )
    assert "sasl_method=PLAIN, sasl_username=billing-app@submission" in log, log


def test_implicit_tls_takes_a_user_named_with_its_domain():
    outcome, tag = submit(
        tls="implicit", port=465, user=CRM["name"], password=CRM["password"], sender="orders@crm.example.test"
    )
    assert outcome["code"] == 250, outcome
    record = harness.wait_for_message(tag)
    assert record is not None, harness.queue_report(harness.host(RELAY))
    assert record["mail_from"] == "orders@crm.example.test"


def test_a_wrong_password_is_refused():
    outcome, tag = submit(user=BILLING["name"], password="not-" + BILLING["password"])
    assert (outcome["stage"], outcome["code"]) == ("auth", 535), outcome
    assert outcome["text"].startswith("5.7.8"), outcome
    assert harness.wait_for_message(tag, timeout=3) is None


def test_auth_before_starttls_is_refused():
    outcome, tag = submit(tls="none", user=BILLING["name"], password=BILLING["password"])
    assert (outcome["stage"], outcome["code"]) == ("auth", 530), outcome
    assert "Must issue a STARTTLS command first" in outcome["text"], outcome
    assert harness.wait_for_message(tag, timeout=3) is None


def test_a_client_that_does_not_log_in_is_refused_even_over_tls():
    outcome, tag = submit(sender="spam@example.net")
    assert (outcome["stage"], outcome["code"]) == ("rcpt", 554), outcome
    assert "Client host rejected: Access denied" in outcome["text"], outcome
    outcome, _tag = submit(tls="none", sender="spam@example.net")
    assert (outcome["stage"], outcome["code"]) == ("mail", 530), outcome
    assert harness.wait_for_message(tag, timeout=3) is None


def test_a_user_cannot_send_as_another_users_address():
    outcome, tag = submit(user=BILLING["name"], password=BILLING["password"], sender="orders@crm.example.test")
    assert (outcome["stage"], outcome["code"]) == ("rcpt", 553), outcome
    assert "Sender address rejected: not owned by user billing-app@submission" in outcome["text"], outcome
    outcome, _tag = submit(user=CRM["name"], password=CRM["password"], sender="billing@example.test")
    assert outcome["code"] == 553 and "not owned by user crm@example.test" in outcome["text"], outcome
    assert harness.wait_for_message(tag, timeout=3) is None


def test_the_users_are_root_owned_and_no_password_is_logged():
    relay = harness.host(RELAY)
    assert relay.file("/etc/postfix/submission/sasldb2").mode == 0o640
    assert relay.file("/etc/postfix/submission/sasldb2").group == "postfix"
    digest = relay.file("/etc/postfix/submission/sasldb2.digest")
    assert (digest.mode, digest.user, digest.group) == (0o600, "root", "root")
    listed = relay.check_output("sasldblistusers2 -f /etc/postfix/submission/sasldb2")
    assert sorted(line.split(":")[0] for line in listed.splitlines()) == ["billing-app@submission", "crm@example.test"]
    logs = relay.run("journalctl -q --no-pager; cat /var/log/mail.log 2>/dev/null").stdout
    for user in USERS.values():
        assert user["password"] not in logs
