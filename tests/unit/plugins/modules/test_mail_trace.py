# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mail_trace against a throwaway Postfix delivering to relays that answer like providers."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import uuid

import pytest

from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils import smtp_servers as servers
from ansible_collections.smarthost.postfix.tests.unit.plugins.modules.postfix_instance import (
    PostfixInstance,
    require_postfix_root,
)

SES_ID = "0100018c2f8e7a61-4be2b0aa-9f0e-4a7e-8c1d-2b7e5f0a9c31-000000"
RELAYS = {
    "ok.test": dict(data_reply="250 Ok " + SES_ID),
    "auth535.test": dict(accept=False),
    "throttled.test": dict(mail_reply="454 Throttling failure: Maximum sending rate exceeded."),
    "sandbox.test": dict(
        data_reply="554 Message rejected: Email address is not verified. The following identities "
        "failed the check in region EU-WEST-1: sender@example.net"
    ),
}
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    require_postfix_root()
    pki = servers.make_pki(str(tmp_path_factory.mktemp("pki")))
    context = servers.server_context(pki["server_cert"], pki["server_key"])
    controllers, routes = [], {}
    for domain, options in RELAYS.items():
        controller, port = servers.start_smtp(servers.RelayHandler(**options), "starttls", context)
        controllers.append(controller)
        routes[domain] = port
    routes["refused.test"] = servers.free_port()
    postfix = PostfixInstance(routes, pki["ca"], servers.USERNAME, servers.PASSWORD).start()
    yield postfix
    postfix.stop()
    for controller in controllers:
        controller.stop()


def trace(run_module, instance, recipient, **options):
    message_id = "%s@trace-test.example.net" % uuid.uuid4()
    instance.send(recipient, message_id)
    args = dict(message_id="<%s>" % message_id, log_source="file", log_path=instance.log_path, timeout=30)
    args.update(options)
    return run_module("mail_trace", args)


@pytest.mark.parametrize(
    "recipient, status, cause",
    [
        ("user@auth535.test", "deferred", "auth_failed_535"),
        ("user@throttled.test", "deferred", "throttled_454"),
        ("user@sandbox.test", "bounced", "ses_sandbox_554"),
        ("user@refused.test", "deferred", "connection_refused"),
    ],
)
def test_failures_are_diagnosed(run_module, instance, recipient, status, cause):
    result = trace(run_module, instance, recipient)
    assert result.get("failed") is not True, result
    assert result["found"] and result["final"] and not result["timed_out"]
    assert result["status"] == status
    assert result["diagnosis"]["cause"] == cause
    assert result["diagnosis"]["remedy"]
    assert result["changed"] is False


def test_sent_message_reports_relay_and_provider_id(run_module, instance):
    result = trace(run_module, instance, "user@ok.test")
    assert result["status"] == "sent", result
    assert result["provider_message_id"] == SES_ID
    assert result["relay"] == "127.0.0.1[127.0.0.1]:%d" % instance.routes["ok.test"]
    assert result["dsn"] == "2.0.0" and result["diagnosis"] is None
    assert any("Verified TLS connection established" in line for line in result["lines"])
    assert result["log_source"] == instance.log_path


def test_auto_source_finds_postfix_maillog_file_through_config_dir(run_module, instance):
    result = trace(
        run_module, instance, "user@ok.test", log_source="auto", log_path=None, config_dir=instance.config_dir
    )
    assert result["log_source"] == instance.log_path
    assert result["status"] == "sent"


def test_queue_id_can_be_followed_and_wait_for_sent_waits(run_module, instance):
    first = trace(run_module, instance, "user@throttled.test")
    again = run_module(
        "mail_trace",
        dict(queue_id=first["queue_id"], log_path=instance.log_path, timeout=2, wait_for="sent"),
        check_mode=True,
    )
    assert again["queue_id"] == first["queue_id"]
    assert again["status"] == "deferred" and again["timed_out"] is True and again["final"] is False


def test_unknown_message_times_out_as_not_found(run_module, instance):
    result = run_module("mail_trace", dict(message_id="never-sent@nowhere", log_path=instance.log_path, timeout=1))
    assert result["status"] == "not_found" and result["timed_out"] is True and result["found"] is False


def test_since_reads_from_the_send_and_finds_a_message_already_logged(run_module, instance):
    started = datetime.datetime.now().astimezone()
    first = trace(run_module, instance, "user@ok.test", since=started.strftime("%Y-%m-%d %H:%M:%S.%f"))
    assert first["status"] == "sent" and first["since"] == started.isoformat()
    # Traced again afterwards, the lines are all in the log before the module starts reading.
    again = run_module(
        "mail_trace",
        dict(message_id=first["message_id"], log_path=instance.log_path, timeout=0, since=str(started.timestamp())),
    )
    assert again["status"] == "sent" and again["queue_id"] == first["queue_id"]


def test_a_window_after_the_send_does_not_see_the_message(run_module, instance):
    first = trace(run_module, instance, "user@ok.test")
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)).isoformat()
    again = run_module(
        "mail_trace", dict(message_id=first["message_id"], log_path=instance.log_path, timeout=0, since=later)
    )
    assert again["status"] == "not_found"
    whole = run_module(
        "mail_trace", dict(message_id=first["message_id"], log_path=instance.log_path, timeout=0, lookback=0)
    )
    assert whole["status"] == "sent" and whole["since"] is None


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("since", "yesterday", "since: "),
        ("lookback", -5, "lookback: must be 0 or more"),
    ],
)
def test_a_bad_window_is_refused_naming_the_option(run_module, instance, option, value, message):
    result = run_module("mail_trace", {"message_id": "x@y", "log_path": instance.log_path, option: value})
    assert result["failed"] is True and result["msg"].startswith(message)


def test_queue_id_and_message_id_exclude_each_other(run_module, instance):
    result = run_module("mail_trace", dict(queue_id="ABCDEF123", message_id="x@y", log_path=instance.log_path))
    assert result["failed"] is True and "mutually exclusive" in result["msg"]


def _playbook(instance, recipient, extra=()):
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_PYTHON_INTERPRETER=os.path.join(REPO, ".venv", "bin", "python"),
    )
    variables = dict(
        relay_verify_sender="sender@example.net",
        relay_verify_recipient=recipient,
        relay_verify_config_dir=instance.config_dir,
        relay_verify_log_path=instance.log_path,
        relay_verify_timeout=30,
        relay_verify_become=False,
        relay_verify_hosts="localhost",
    )  # not a smarthost_* member
    cmd = [
        os.path.join(REPO, ".venv", "bin", "ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        os.path.join(REPO, "playbooks", "verify.yml"),
        "-e",
        json.dumps(variables),
    ] + list(extra)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False)


def test_verify_playbook_passes_a_delivered_message(instance):
    run = _playbook(instance, "user@ok.test")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "localhost: sent via 127.0.0.1[127.0.0.1]:%d" % instance.routes["ok.test"] in run.stdout
    assert SES_ID in run.stdout


def test_verify_playbook_fails_with_the_diagnosis(instance):
    run = _playbook(instance, "user@auth535.test")
    assert run.returncode != 0
    assert "localhost: deferred" in run.stdout and "auth_failed_535" in run.stdout
    assert "IAM" in run.stdout


def test_verify_playbook_sends_nothing_in_check_mode(instance):
    with open(instance.log_path) as handle:
        before = handle.read().count("message-id=<smarthost-verify.")
    run = _playbook(instance, "user@ok.test", ["--check"])
    assert run.returncode == 0, run.stdout + run.stderr
    with open(instance.log_path) as handle:
        assert handle.read().count("message-id=<smarthost-verify.") == before
