# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""queue_info and health.yml against a throwaway Postfix with real deferred mail in its queue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils import smtp_servers as servers
from ansible_collections.smarthost.postfix.tests.unit.plugins.modules.postfix_instance import (
    PostfixInstance,
    require_postfix_root,
)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))


SES_SANDBOX_REPLY = (
    "554 Message rejected: Email address is not verified. The following identities failed the check "
    "in region US-EAST-1: user@bounced.test"
)
SENDER = "app@ok.test"  # so the bounce's notice is delivered, to the ok server


@pytest.fixture(scope="module")
def instance():
    """Postfix with one message sent, one deferred by 454 throttling, one by a refused connection, and one
    bounced by the SES sandbox's 554 after DATA (its notice to the sender delivered)."""
    require_postfix_root()
    pki_dir = tempfile.mkdtemp(prefix="smarthost-pki-")
    pki = servers.make_pki(pki_dir)
    context = servers.server_context(pki["server_cert"], pki["server_key"])
    ok, ok_port = servers.start_smtp(servers.RelayHandler(), "starttls", context)
    throttled, throttled_port = servers.start_smtp(
        servers.RelayHandler(mail_reply="454 Throttling failure: Maximum sending rate exceeded."), "starttls", context
    )
    bouncing, bouncing_port = servers.start_smtp(
        servers.RelayHandler(data_reply=SES_SANDBOX_REPLY), "starttls", context
    )
    routes = {
        "ok.test": ok_port,
        "throttled.test": throttled_port,
        "refused.test": servers.free_port(),
        "bounced.test": bouncing_port,
    }
    postfix = PostfixInstance(routes, pki["ca"], servers.USERNAME, servers.PASSWORD).start()
    for recipient in ("user@ok.test", "user@throttled.test", "user@refused.test", "user@bounced.test"):
        message_id = "%s@queue-test.example.net" % uuid.uuid4()
        postfix.send(recipient, message_id, sender=SENDER)
        assert postfix.wait_for_attempt(message_id)["final"]
    deadline = time.monotonic() + 30
    while len(ok.handler.messages) < 2 and time.monotonic() < deadline:  # the message and the notice
        time.sleep(0.2)
    assert len(ok.handler.messages) == 2
    time.sleep(0.5)  # the notice's result line follows the server's reply
    yield postfix
    postfix.stop()
    ok.stop()
    throttled.stop()
    bouncing.stop()
    shutil.rmtree(pki_dir)


def test_queue_depth_causes_service_and_last_delivery(run_module, instance):
    result = run_module("queue_info", dict(config_dir=instance.config_dir, log_path=instance.log_path))
    assert result.get("failed") is not True, result
    assert result["queues"]["deferred"] == 2 and result["queue_depth"] == 2
    assert result["deferred_by_cause"] == {"throttled_454": 1, "connection_refused": 1}
    assert result["deferred_by_destination"] == {"127.0.0.1": 2}
    assert result["oldest_age"] is not None and result["oldest_age"] < 120
    assert result["service"] == {"running": True, "source": "postfix status"}
    assert result["last_delivery"]["relay"] == "127.0.0.1[127.0.0.1]:%d" % instance.routes["ok.test"]
    assert 0 <= result["last_delivery"]["age"] < 120
    assert result["healthy"] is True and result["problems"] == []
    assert result["changed"] is False and result["log_source"] == instance.log_path


def test_deliveries_of_the_interval_by_status_and_cause(run_module, instance):
    result = run_module("queue_info", dict(config_dir=instance.config_dir, log_path=instance.log_path, interval="1h"))
    deliveries = result["deliveries"]
    assert deliveries["interval"] == 3600
    assert (deliveries["sent"], deliveries["deferred"], deliveries["bounced"], deliveries["expired"]) == (1, 2, 1, 0)
    assert deliveries["deferred_by_cause"] == {"throttled_454": 1, "connection_refused": 1}
    assert deliveries["bounced_by_cause"] == {"ses_sandbox_554": 1}
    assert deliveries["deferred_messages"] == 2
    assert deliveries["notifications"] == {"sent": 1, "deferred": 0, "bounced": 0, "expired": 0}
    assert deliveries["finished"] == 2 and deliveries["bounce_rate"] == 0.5
    assert result["healthy"] is True  # no bounce limit asked for


def test_the_bounce_rate_fails_the_host_from_the_minimum_count_on(run_module, instance):
    args = dict(config_dir=instance.config_dir, log_path=instance.log_path, max_bounce_rate=0.05)
    assert run_module("queue_info", args)["healthy"] is True  # 2 finished deliveries, judged from 20 on
    judged = run_module("queue_info", dict(args, bounce_rate_min_deliveries=2))
    assert judged.get("failed") is not True and judged["healthy"] is False
    assert judged["problems"] == [
        "bounce rate 50% over 5%: 1 of 2 deliveries in the last 3600s bounced or expired (ses_sandbox_554=1)"
    ]


def test_since_a_later_time_counts_nothing_and_still_finds_the_last_delivery(run_module, instance):
    since = time.time() + 1
    result = run_module(
        "queue_info", dict(config_dir=instance.config_dir, log_path=instance.log_path, since=str(since))
    )
    deliveries = result["deliveries"]
    assert deliveries["sent"] == deliveries["deferred"] == deliveries["bounced"] == 0
    assert deliveries["bounce_rate"] is None
    assert result["last_delivery"]["relay"] == "127.0.0.1[127.0.0.1]:%d" % instance.routes["ok.test"]


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(interval="soon"), "interval: "),
        (dict(interval="0s"), "interval: "),
        (dict(since="yesterday"), "since: "),
        (dict(max_bounce_rate=5.0), "max_bounce_rate: must be a share from 0 to 1"),
        (dict(bounce_rate_min_deliveries=-1), "bounce_rate_min_deliveries: "),
        (dict(interval="1h", since="1700000000"), "mutually exclusive"),
    ],
)
def test_bad_window_or_threshold_fails_naming_the_option_before_anything_is_written(
    run_module, instance, tmp_path, args, message
):
    path = tmp_path / "smarthost_postfix.prom"
    result = run_module("queue_info", dict(args, config_dir=instance.config_dir, textfile_path=str(path)))
    assert result["failed"] is True and message in result["msg"], result["msg"]
    assert not path.exists()


def test_auto_log_source_uses_postfix_maillog_file(run_module, instance):
    result = run_module("queue_info", dict(config_dir=instance.config_dir))
    assert result["log_source"] == instance.log_path and result["last_delivery"] is not None


def test_thresholds_make_problems_without_failing(run_module, instance):
    time.sleep(1.1)  # every message is at least a second old
    result = run_module(
        "queue_info", dict(config_dir=instance.config_dir, log_source="none", max_queue_depth=1, max_oldest_age=0)
    )
    assert result.get("failed") is not True
    assert result["healthy"] is False
    assert result["problems"][0] == "queue depth 2 exceeds 1"
    assert result["problems"][1].startswith("oldest message ")
    assert result["last_delivery"] is None and result["log_source"] is None


def test_textfile_metrics_written_atomically_and_not_in_check_mode(run_module, instance, tmp_path):
    path = tmp_path / "smarthost_postfix.prom"
    checked = run_module(
        "queue_info", dict(config_dir=instance.config_dir, log_source="none", textfile_path=str(path)), check_mode=True
    )
    assert checked["changed"] is True and not path.exists()
    written = run_module("queue_info", dict(config_dir=instance.config_dir, log_source="none", textfile_path=str(path)))
    assert written["changed"] is True
    text = path.read_text()
    assert 'smarthost_postfix_queue_messages{queue="deferred"} 2' in text.splitlines()
    assert "smarthost_postfix_up 1" in text.splitlines()
    assert "smarthost_postfix_deliveries_last_interval" not in text  # no log read, no delivery figures


def test_textfile_metrics_carry_the_deliveries_of_the_window(run_module, instance, tmp_path):
    path = tmp_path / "smarthost_postfix.prom"
    result = run_module(
        "queue_info",
        dict(config_dir=instance.config_dir, log_path=instance.log_path, interval="30m", textfile_path=str(path)),
    )
    lines = path.read_text().splitlines()
    assert result["changed"] is True
    assert "smarthost_postfix_deliveries_interval_seconds 1800" in lines
    for status, count in (("sent", 1), ("deferred", 2), ("bounced", 1), ("expired", 0)):
        assert 'smarthost_postfix_deliveries_last_interval{status="%s"} %d' % (status, count) in lines
    assert 'smarthost_postfix_deliveries_by_cause_last_interval{status="bounced",cause="ses_sandbox_554"} 1' in lines
    assert 'smarthost_postfix_notifications_last_interval{status="sent"} 1' in lines
    assert "# TYPE smarthost_postfix_deliveries_last_interval gauge" in lines


def test_stopped_postfix_is_a_problem(run_module):
    require_postfix_root()
    stopped = PostfixInstance({}, "/dev/null", "unused", "unused").start()
    stopped.stop(remove=False)
    try:
        result = run_module("queue_info", dict(config_dir=stopped.config_dir, log_source="none"))
    finally:
        stopped.stop()
    assert result.get("failed") is not True, result
    assert result["service"]["running"] is False
    assert result["problems"] == ["Postfix is not running"] and result["healthy"] is False
    assert any("Mail system is down" in warning for warning in result["warnings_postqueue"])


def _health(instance, extra):
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PYTHON_INTERPRETER=os.path.join(REPO, ".venv", "bin", "python"),
    )
    variables = dict(
        relay_health_config_dir=instance.config_dir,
        relay_health_log_path=instance.log_path,
        relay_health_become=False,
        relay_health_hosts="localhost",
        **extra,
    )  # not a smarthost_* member
    cmd = [
        os.path.join(REPO, ".venv", "bin", "ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        os.path.join(REPO, "playbooks", "health.yml"),
        "-e",
        json.dumps(variables),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False)


def test_health_playbook_prints_the_fleet_table(instance):
    run = _health(instance, {})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "HOST" in run.stdout and "DEFERRED" in run.stdout
    row = next(line for line in run.stdout.splitlines() if line.strip().startswith('"localhost'))
    assert row.split()[1:5] == ["running", "0", "2", "0"]
    assert "ok [" in row and "throttled_454=1" in row


def test_health_playbook_fails_hosts_over_thresholds(instance):
    run = _health(instance, dict(relay_health_max_queue_depth=1))
    assert run.returncode != 0
    assert "queue depth 2 exceeds 1" in run.stdout


def test_health_playbook_fails_a_host_that_bounces_and_shows_the_deliveries(instance):
    run = _health(instance, dict(relay_health_bounce_rate_min_deliveries=2))
    assert run.returncode != 0, run.stdout
    assert "bounce rate 50% over 5%: 1 of 2 deliveries" in run.stdout
    row = next(line for line in run.stdout.splitlines() if line.strip().startswith('"localhost'))
    assert row.split()[8:10] == ["1", "1"]  # SENT and BOUNCED, after LAST SENT's age
    assert "bounced ses_sandbox_554=1" in row
    assert "deliveries in the last 1h" in run.stdout
