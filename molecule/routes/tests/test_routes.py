# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Modes and routes, proven by where each message arrived and as whom."""

import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "resources", "tests"))
import harness  # noqa: E402  pylint: disable=wrong-import-position

RELAY = "rt-relay"
RELAY_IP = "172.29.77.10"


def providers():
    return harness.providers()


def test_client_inside_mynetworks_is_relayed_with_the_primary_identity():
    tag = harness.new_tag()
    code, text = harness.smtp_submit(
        harness.host("rt-client"), RELAY_IP, "app@example.test", "user@recipient.example.test", tag
    )
    assert code == 250, text
    record = harness.wait_for_message(tag)
    assert record is not None, harness.queue_report(harness.host(RELAY))
    assert record["provider"] == "ses"
    assert record["username"] == providers()["ses"]["username"]
    assert record["tls_version"] in ("TLSv1.2", "TLSv1.3")


def test_client_outside_mynetworks_is_refused_never_an_open_relay():
    tag = harness.new_tag()
    code, text = harness.smtp_submit(
        harness.host("rt-outsider"), RELAY_IP, "spam@example.test", "victim@elsewhere.example.test", tag
    )
    # The role refuses clients outside mynetworks outright ("Client host
    # rejected"), a step stricter than refusing only relaying.
    assert code == 554, (code, text)
    assert text.startswith("5.7.1") and (
        "Relay access denied" in text or "Client host rejected: Access denied" in text
    ), text
    assert harness.wait_for_message(tag, timeout=5) is None


def test_sender_dependent_route_uses_its_own_smarthost_and_credentials():
    tag = harness.new_tag()
    harness.send_with_sendmail(harness.host(RELAY), "news@marketing.example.test", "reader@recipient.example.test", tag)
    record = harness.wait_for_message(tag)
    assert record is not None, harness.queue_report(harness.host(RELAY))
    assert record["provider"] == "sendgrid"
    assert record["username"] == "apikey"
    assert record["mail_from"] == "news@marketing.example.test"


def test_domain_route_uses_its_transport_and_credentials():
    tag = harness.new_tag()
    harness.send_with_sendmail(harness.host(RELAY), "root", "someone@partner.example.test", tag)
    record = harness.wait_for_message(tag)
    assert record is not None, harness.queue_report(harness.host(RELAY))
    assert record["provider"] == "mailgun"
    assert record["username"] == providers()["mailgun"]["username"]


def test_local_domain_is_delivered_on_the_host_not_relayed():
    relay = harness.host(RELAY)
    tag = harness.new_tag()
    harness.send_with_sendmail(relay, "root", "root@intranet.example.test", tag)
    delivered = False
    for _unused in range(60):
        if relay.run("grep -rqs %s /var/mail/", tag).rc == 0:
            delivered = True
            break
        relay.run("sleep 0.5")
    assert delivered, relay.run("tail -n 30 /var/log/mail.log; postqueue -p").stdout
    assert harness.wait_for_message(tag, timeout=3) is None


def test_fallback_relay_takes_over_when_the_primary_is_down():
    relay = harness.host("rt-fallback")
    harness.emulator_mode("down")
    try:
        tag = harness.new_tag()
        harness.send_with_sendmail(relay, "root", "user@recipient.example.test", tag)
        record = harness.wait_for_message(tag, provider="fallback")
        assert record is not None, harness.queue_report(relay)
        assert record["provider"] == "fallback"
        assert record["username"] == providers()["fallback"]["username"]
        assert record["tls_version"] in ("TLSv1.2", "TLSv1.3")
    finally:
        harness.emulator_mode("normal")


def test_switch_to_a_relay_that_rejects_the_login_is_refused_before_any_change():
    target = harness.host("rt-fallback")
    before = target.check_output("cat /etc/postfix/main.cf /etc/postfix/sasl_passwd | sha256sum")
    wrong = "wrong-password-for-the-probe-test"
    converge = os.path.join(harness.PROJECT_DIR, "molecule", "resources", "playbooks", "converge.yml")
    rc, output = harness.run_playbook(
        converge,
        "--limit",
        "rt-fallback",
        "-e",
        "relay_provider=mailgun",
        "-e",
        "relay_username=nobody@example.test",
        "-e",
        "relay_password=" + wrong,
    )
    assert rc != 0, output[-2000:]
    assert "credentials_rejected" in output, output[-2000:]
    assert wrong not in output
    assert target.check_output("cat /etc/postfix/main.cf /etc/postfix/sasl_passwd | sha256sum") == before
    assert target.check_output("postconf -h relayhost") == "[smtp.sendgrid.net]:587"


def smtp_clones(target):
    """The pacing clones master.cf has and the smtp_pace* parameters main.cf sets."""
    services = [
        line.split()[0] for line in target.check_output("postconf -M").splitlines() if line.startswith("smtp_pace")
    ]
    parameters = [
        line.split(" = ")[0] for line in target.check_output("postconf -n").splitlines() if line.startswith("smtp_pace")
    ]
    return services, parameters


def delivered_through(target, since):
    """The syslog names of the smtp processes that delivered mail (status=sent) since the epoch second."""
    journal = target.run("journalctl --no-pager -o short-unix --since @%s SYSLOG_FACILITY=2", str(since)).stdout
    # "<time> <host> postfix/smtp_pace2/smtp[4242]: 4Fq...: to=<...>, relay=..., status=sent (250 ...)"
    return sorted({line.split()[2].split("[", 1)[0] for line in journal.splitlines() if " status=sent " in line})


def sent_per_clone(target, since, recipients):
    """{syslog name: deliveries} of the messages to recipients sent since the epoch second."""
    journal = target.run("journalctl --no-pager -o short-unix --since @%s SYSLOG_FACILITY=2", str(since)).stdout
    counts = {}
    for line in journal.splitlines():
        if " status=sent " in line and any("to=<%s>" % recipient in line for recipient in recipients):
            name = line.split()[2].split("[", 1)[0]
            counts[name] = counts.get(name, 0) + 1
    return counts


def queued_recipients(target):
    return target.run("postqueue -j").stdout


def pace_map_state(target):
    """(socket, service) as systemctl tells them, and whether anything listens on the pace map's port."""
    active = [target.run("systemctl is-active %s", unit).stdout.strip() for unit in PACE_MAP_UNITS]
    listening = ":10039 " in target.check_output("ss -ltn")
    return active, listening


PACE_MAP_UNITS = ("smarthost-pace-map.socket", "smarthost-pace-map.service")


def send_and_wait(target, recipients):
    tags = [harness.send_with_sendmail(target, "root", recipient, harness.new_tag()) for recipient in recipients]
    records = [harness.wait_for_message(tag) for tag in tags]
    assert all(records), harness.queue_report(target)
    return records


def test_a_paced_relay_delivers_through_its_clones_in_turn_and_leaves_none_behind_when_paced_less():
    """relay_max_send_rate 3.5 makes four clones that carry the primary's mail, each message taking
    the next clone in turn from the pace map (two turns for each 1 s clone, one for the 2 s one);
    a pace map that cannot answer defers mail and loses none; converging back to the preset's one
    message a second (one rate delay on smtp) removes the clones and the pace map."""
    target = harness.host(RELAY)
    converge = os.path.join(harness.PROJECT_DIR, "molecule", "resources", "playbooks", "converge.yml")
    try:
        rc, output = harness.run_playbook(converge, "--limit", RELAY, "-e", "relay_max_send_rate=3.5")
        assert rc == 0, output[-2000:]
        services, parameters = smtp_clones(target)
        assert services == ["smtp_pace1", "smtp_pace2", "smtp_pace3", "smtp_pace4"]
        assert len(parameters) == 12
        assert pace_map_state(target)[1]
        # Converged again: the pace map's tasks change nothing and ask it nothing.
        rc, output = harness.run_playbook(converge, "--limit", RELAY, "-e", "relay_max_send_rate=3.5")
        assert rc == 0 and harness.play_recap(output)[RELAY]["changed"] == 0, output[-2000:]
        assert re.search(r"Check that the pace map answers\] \**\nskipping: ", output), output[-2000:]
        # One full turn of seven distinct recipients: every clone its exact share, whatever turn it starts at.
        recipients = ["pace%d@recipient.example.test" % number for number in range(1, 8)]
        since = int(target.check_output("date +%s"))
        records = send_and_wait(target, recipients)
        assert {record["provider"] for record in records} == {"ses"}
        assert {record["username"] for record in records} == {providers()["ses"]["username"]}
        assert {record["tls_version"] for record in records} <= {"TLSv1.2", "TLSv1.3"}
        per_clone = sent_per_clone(target, since, recipients)
        assert per_clone == {
            "postfix/smtp_pace1/smtp": 2,
            "postfix/smtp_pace2/smtp": 2,
            "postfix/smtp_pace3/smtp": 2,
            "postfix/smtp_pace4/smtp": 1,
        }, per_clone

        # The server killed: systemd keeps the socket and starts it again on the next lookup.
        target.run("systemctl kill --signal=SIGKILL smarthost-pace-map.service")
        send_and_wait(target, ["after-kill@recipient.example.test"])

        # No pace map at all: the message waits in the queue, then leaves once it answers again.
        target.check_output("systemctl stop %s %s" % PACE_MAP_UNITS)
        tag = harness.send_with_sendmail(target, "root", "paused@recipient.example.test", harness.new_tag())
        assert harness.wait_for_message(tag, timeout=15) is None
        assert "paused@recipient.example.test" in queued_recipients(target), harness.queue_report(target)
        target.check_output("systemctl start smarthost-pace-map.socket")
        # The queue manager's resolver cache keeps the failed answer for its address a while (30 s
        # measured): flushed every 5 s, the message leaves once the cache lets the lookup through.
        record = None
        for _attempt in range(18):
            target.check_output("postqueue -f")
            record = harness.wait_for_message(tag, timeout=5)
            if record is not None:
                break
        assert record is not None, harness.queue_report(target)
    finally:
        rc, output = harness.run_playbook(converge, "--limit", RELAY)
    assert rc == 0, output[-2000:]
    assert smtp_clones(target) == ([], [])
    assert "pace_rewrite" not in target.check_output("postconf -M")
    assert "rewrite_service_name" not in target.check_output("postconf -P")
    assert pace_map_state(target) == (["inactive", "inactive"], False)
    assert not target.file("/etc/systemd/system/smarthost-pace-map.socket").exists
    assert not target.file("/etc/postfix/pace_clones").exists
    assert target.check_output("postconf -h smtp_destination_rate_delay") == "1s"
    since = int(target.check_output("date +%s"))
    tag = harness.send_with_sendmail(target, "root", "user@recipient.example.test", harness.new_tag())
    record = harness.wait_for_message(tag)
    assert record is not None, harness.queue_report(target)
    assert delivered_through(target, since) == ["postfix/smtp"]


def test_check_mode_changes_nothing():
    harness.assert_check_mode_changes_nothing(harness.inventory_hosts("relays"))
