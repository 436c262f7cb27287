# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The provider emulator, run as a subprocess on 127.0.0.1 high ports and driven with smtplib."""

from __future__ import annotations

import base64
import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from emulator_harness import (
    EMULATOR_DIR,
    MESSAGE,
    PROVIDERS,
    SENDGRID,
    SES,
    Emulator,
    connect,
    emulatorctl,
    login,
    send,
    trusting,
)

# -- TLS and AUTH ------------------------------------------------------------------------------


def test_plain_port_offers_starttls_and_keeps_auth_for_tls(emulator):
    client = smtplib.SMTP("127.0.0.1", emulator.starttls_port, timeout=10)
    code, features = client.ehlo("client.example.test")
    assert code == 250
    assert b"STARTTLS" in features
    assert b"AUTH" not in features
    credentials = base64.b64encode(b"\0apikey\0" + SENDGRID["password"].encode()).decode()
    assert client.docmd("AUTH", "PLAIN " + credentials)[0] == 538
    assert client.mail("sender@example.test")[0] == 530
    client.quit()

    [attempt] = emulator.records("auth")
    assert attempt["tls"] == "none"
    assert attempt["success"] is False
    assert attempt["credentials_received"] is True
    assert attempt["username"] == "apikey"
    assert emulator.counters()["auth"]["credentials_received_in_clear"] == 1
    assert [r["code"] for r in emulator.records("replies")] == ["530"]


PASSWORD_PROVIDERS = sorted(p for p, entry in PROVIDERS.items() if "password" in entry["auth"])


@pytest.mark.parametrize("provider", PASSWORD_PROVIDERS)
def test_every_provider_logs_in_with_plain_after_starttls(emulator, provider):
    hostname = PROVIDERS[provider]["hostnames"][0]
    with connect(emulator, name=hostname) as client:
        assert login(client, provider)[0] == 235
        assert send(client)[0] == 250
    [message] = emulator.records()
    assert message["provider"] == provider
    assert message["username"] == PROVIDERS[provider]["username"]
    assert message["auth_mechanism"] == "PLAIN"
    assert message["tls"] == "starttls"
    assert message["sni"] == hostname


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_mechanisms_accept_right_and_refuse_wrong_credentials(emulator, mechanism):
    with connect(emulator) as client:
        client.user, client.password = SENDGRID["username"], "not-the-password"
        auth_object = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.auth(mechanism, auth_object)
        assert refused.value.smtp_code == 535
        assert refused.value.smtp_error == b"5.7.8 Authentication credentials invalid"
        assert login(client, "sendgrid", mechanism)[0] == 235
    wrong, right = emulator.records("auth")
    assert (wrong["success"], wrong["provider"], wrong["reason"]) == (False, None, "wrong password")
    assert wrong["username_providers"] == ["sendgrid"]
    assert (right["success"], right["provider"], right["mechanism"]) == (True, "sendgrid", mechanism)
    assert emulator.counters()["replies"]["535"] == 1


def test_unknown_username_is_refused_and_passwords_are_never_recorded(emulator):
    with connect(emulator) as client:
        client.user, client.password = "nobody@example.test", "secret-that-must-not-appear"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("PLAIN", client.auth_plain)
        login(client, "ses")
    [unknown, ok] = emulator.records("auth")
    assert unknown["reason"] == "unknown username"
    assert ok["provider"] == "ses"
    stored = "".join(
        open(os.path.join(emulator.state_dir, name), encoding="utf-8").read()
        for name in emulatorctl.RECORD_FILES.values()
    )
    assert "secret-that-must-not-appear" not in stored
    assert SES["password"] not in stored


def test_mail_before_auth_is_refused_with_530(emulator):
    with connect(emulator) as client:
        assert client.mail("sender@example.test") == (530, b"5.7.0 Authentication required")
    assert emulator.counters()["replies"]["530"] == 1
    assert emulator.records() == []


def test_implicit_tls_port(emulator):
    with connect(emulator, name="smtp.gmail.com", implicit=True) as client:
        features = client.ehlo_resp
        assert b"STARTTLS" not in features
        assert b"AUTH LOGIN PLAIN" in features
        assert login(client, "gmail", "LOGIN")[0] == 235
        assert send(client)[0] == 250
    [message] = emulator.records()
    assert (message["tls"], message["local_port"], message["provider"]) == ("implicit", emulator.implicit_port, "gmail")
    assert message["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert message["certificate"] == "trusted"


@pytest.mark.parametrize(
    "hostname", sorted({h for p in PROVIDERS.values() for h in p["hostnames"]} | {"emulator", "localhost"})
)
def test_certificate_verifies_for_every_provider_hostname(emulator, hostname):
    with connect(emulator, name=hostname) as client:
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")


def test_message_record_and_provider_reply(emulator):
    with connect(emulator) as client:
        login(client, "sendgrid")
        code, reply = send(client, rcpts=("one@example.net", "two@example.org"))
        # Records are readable while the session is still open.
        [message] = emulator.records()
    assert code == 250
    assert reply.decode() == "Ok: queued as " + message["id"]
    assert message["mail_from"] == "sender@example.test"
    assert message["rcpt_to"] == ["one@example.net", "two@example.org"]
    assert message["headers"] == {
        "from": "Sender <sender@example.test>",
        "to": "rcpt@example.net",
        "subject": "emulator check",
        "message-id": "<check-1@example.test>",
        "x-test-tag": "tag-42",
        "x-mailer": "pytest",
    }
    assert message["received_count"] == 2
    assert message["size"] == len(MESSAGE.encode())
    assert message["ehlo"] == "client.example.test"
    assert message["peer"] == "127.0.0.1"
    assert message["local_port"] == emulator.starttls_port
    assert message["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert message["tls_cipher"]
    [connection] = emulator.closed_connections(1)
    assert connection["connection"] == message["connection"]
    assert (connection["messages"], connection["auth_attempts"], connection["provider"]) == (1, 1, "sendgrid")


def test_pipelined_commands_are_answered_in_order(emulator):
    with connect(emulator) as client:
        assert client.has_extn("pipelining")
        login(client, "sendgrid")
        client.send(
            "MAIL FROM:<sender@example.test>\r\nRCPT TO:<one@example.net>\r\nRCPT TO:<two@example.net>\r\nDATA\r\n"
        )
        assert [client.getreply()[0] for _unused in range(4)] == [250, 250, 250, 354]
        client.send(MESSAGE + ".\r\n")
        assert client.getreply()[0] == 250
    [message] = emulator.records()
    assert message["rcpt_to"] == ["one@example.net", "two@example.net"]


def test_concurrent_sessions_write_whole_records(emulator):
    def worker():
        with connect(emulator) as client:
            login(client, "sendgrid")
            for _unused in range(25):
                assert send(client)[0] == 250

    threads = [threading.Thread(target=worker) for _unused in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    messages = emulator.records()
    assert len(messages) == 200
    assert len({m["id"] for m in messages}) == 200
    assert len(emulator.closed_connections(8)) == 8


# -- failure modes ----------------------------------------------------------------------------


def test_auth_fail_mode_refuses_valid_credentials(emulator):
    emulator.set_mode("auth_fail")
    with connect(emulator) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            login(client, "sendgrid")
        assert refused.value.smtp_code == 535
    [attempt] = emulator.records("auth")
    assert (attempt["success"], attempt["reason"]) == (False, "mode auth_fail")
    assert emulator.counters()["replies"]["535"] == 1


def test_mode_limited_to_providers_leaves_the_others_alone(emulator):
    emulator.set_mode("auth_fail", providers=["ses"])
    with connect(emulator) as client:
        assert login(client, "sendgrid")[0] == 235
    with connect(emulator, name=SES["hostnames"][0]) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            login(client, "ses")


def test_ses_sandbox_rejects_unverified_after_data(emulator):
    emulator.set_mode("ses_sandbox", verified=["sender@example.test", "@verified.example"])
    with connect(emulator, name=SES["hostnames"][0]) as client:
        login(client, "ses")
        code, text = send(client, rcpts=("ok@verified.example", "stranger@example.net"))
        assert code == 554
        assert text.decode() == (
            "Message rejected: Email address is not verified. The following identities "
            "failed the check in region US-EAST-1: stranger@example.net"
        )
        assert send(client, rcpts=("ok@verified.example",))[0] == 250
    assert [m["rcpt_to"] for m in emulator.records()] == [["ok@verified.example"]]
    [rejection] = emulator.records("replies")
    assert (rejection["code"], rejection["stage"]) == ("554", "data")


def test_ses_sandbox_can_reject_at_rcpt(emulator):
    emulator.set_mode("ses_sandbox", at="rcpt", region="eu-west-1")
    with connect(emulator, name=SES["hostnames"][1]) as client:
        login(client, "ses")
        client.mail("sender@example.test")
        code, text = client.rcpt("stranger@example.net")
    assert code == 554
    assert b"region EU-WEST-1: stranger@example.net" in text
    assert emulator.counters()["replies"]["554"] == 1


def test_throttle_mode_answers_454(emulator):
    emulator.set_mode("throttle")
    with connect(emulator) as client:
        login(client, "sendgrid")
        assert send(client) == (454, b"4.7.0 Throttling failure: Maximum sending rate exceeded.")
        assert send(client)[0] == 454
    counters = emulator.counters()
    assert (counters["messages"], counters["replies"]["454"]) == (0, 2)
    emulator.set_mode("normal")
    with connect(emulator) as client:
        login(client, "sendgrid")
        assert send(client)[0] == 250


def test_rate_limit_mode_is_a_token_bucket(emulator):
    emulator.set_mode("rate_limit", rate=5, burst=5)
    accepted = refused = 0
    with connect(emulator) as client:
        login(client, "sendgrid")
        started = time.monotonic()
        for _unused in range(30):
            code = send(client)[0]
            assert code in (250, 454)
            accepted += code == 250
            refused += code == 454
            client.rset()
        elapsed = time.monotonic() - started
        assert 5 <= accepted <= 5 + int(elapsed * 5) + 1
        assert refused == 30 - accepted
        time.sleep(0.5)  # refills two tokens
        assert send(client)[0] == 250
    assert emulator.counters()["replies"]["454"] == refused
    assert len(emulator.records()) == accepted + 1


def test_no_starttls_mode_offers_auth_in_clear_and_records_the_leak(emulator):
    emulator.set_mode("no_starttls")
    client = smtplib.SMTP("127.0.0.1", emulator.starttls_port, timeout=10)
    code, features = client.ehlo("client.example.test")
    assert b"STARTTLS" not in features
    assert b"AUTH" in features
    assert client.docmd("STARTTLS")[0] == 454
    assert login(client, "sendgrid")[0] == 235
    client.quit()
    [attempt] = emulator.records("auth")
    assert (attempt["tls"], attempt["success"]) == ("none", True)
    assert emulator.counters()["auth"]["credentials_received_in_clear"] == 1
    [connection] = emulator.closed_connections(1)
    assert (connection["mode"], connection["starttls_offered"]) == ("no_starttls", False)


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_untrusted_cert_mode_presents_the_rogue_certificate(emulator, implicit):
    emulator.set_mode("untrusted_cert")
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(emulator, implicit=implicit)
    # The same connection with the rogue CA trusted succeeds: the rogue certificate was served.
    with connect(emulator, implicit=implicit, context=trusting(emulator.certs, "rogue-ca.crt")) as client:
        assert client.sock.getpeercert()["issuer"][1][0][1] == "Rogue Interceptor CA"
    assert emulator.counters()["auth"]["attempts"] == 0
    if not implicit:
        refused = emulator.closed_connections(1)[0]
        assert refused["mode"] == "untrusted_cert"
        assert "SSL" in refused["error"]


def test_down_mode_refuses_connections_and_drops_open_sessions(emulator):
    client = connect(emulator)
    login(client, "sendgrid")
    emulator.set_mode("down")
    assert emulatorctl.read_status(emulator.state_dir)["listening"] is False
    for port in (emulator.starttls_port, emulator.implicit_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(client)
    emulator.set_mode("normal")
    with connect(emulator) as again:
        assert login(again, "sendgrid")[0] == 235


# -- control tool and process -------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"mode": "sleepy"}, "mode must be one of"),
        ({"mode": "no_starttls", "providers": ["ses"]}, "providers applies only"),
        ({"mode": "normal", "rate": 3}, "rate and burst apply only"),
        ({"mode": "rate_limit", "rate": 0}, "rate must be greater than 0"),
        ({"mode": "ses_sandbox", "at": "helo"}, "at must be"),
        ({"mode": "throttle", "colour": "red"}, "unknown mode field"),
    ],
)
def test_invalid_modes_are_refused(doc, message):
    with pytest.raises(ValueError, match=message):
        emulatorctl.parse_mode(doc)


def test_rate_limit_defaults_to_ses_rate():
    assert emulatorctl.parse_mode("rate_limit") == {"mode": "rate_limit", "providers": [], "rate": 14.0, "burst": 14.0}


def test_control_cli_sets_mode_and_prints_counters(emulator):
    ctl = [sys.executable, os.path.join(EMULATOR_DIR, "emulatorctl.py"), "--dir", emulator.state_dir]
    result = subprocess.run(ctl + ["mode", "rate_limit", "--rate", "2"], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)["rate"] == 2.0
    assert result.stderr == ""  # the running server acknowledged the mode
    assert emulatorctl.read_status(emulator.state_dir)["mode"]["mode"] == "rate_limit"
    refused = subprocess.run(ctl + ["mode", "rate_limit", "--rate", "-1"], capture_output=True, text=True, check=False)
    assert refused.returncode == 2
    assert "rate must be greater than 0" in refused.stderr
    with connect(emulator) as client:
        login(client, "sendgrid")
        send(client)
    counters = json.loads(subprocess.run(ctl + ["counters"], capture_output=True, text=True, check=True).stdout)
    assert (counters["messages"], counters["auth"]["succeeded"], counters["mode"]["mode"]) == (1, 1, "rate_limit")
    records = json.loads(subprocess.run(ctl + ["records", "auth"], capture_output=True, text=True, check=True).stdout)
    assert [r["provider"] for r in records] == ["sendgrid"]
    waited = subprocess.run(
        ctl + ["wait", "--messages", "2", "--timeout", "0.5"], capture_output=True, text=True, check=False
    )
    assert waited.returncode == 1
    subprocess.run(ctl + ["reset"], check=True, capture_output=True)
    assert emulator.records() == []


def test_sigterm_stops_cleanly_and_closes_open_sessions(certs, tmp_path):
    emulator = Emulator(certs, tmp_path)
    client = connect(emulator)
    pid = emulator.process.pid
    assert emulatorctl.read_status(emulator.state_dir)["pid"] == pid
    emulator.process.send_signal(signal.SIGTERM)
    assert emulator.process.wait(timeout=10) == 0
    emulator.stop()
    assert any("stopped" in line for line in emulator.output)
    assert len(emulator.records("connections")) == 1
    assert emulatorctl.read_status(emulator.state_dir) is None
    client.close()


def test_mode_file_survives_a_restart(certs, tmp_path):
    first = Emulator(certs, tmp_path, ["--mode", "throttle"])
    first.stop()
    second = Emulator(certs, tmp_path)
    try:
        with connect(second) as client:
            login(client, "sendgrid")
            assert send(client)[0] == 454
    finally:
        second.stop()


def test_providers_json_is_consistent():
    with open(os.path.join(EMULATOR_DIR, "providers.json"), encoding="utf-8") as handle:
        data = json.load(handle)
    hostnames = [h for p in data["providers"].values() for h in p["hostnames"]]
    assert len(hostnames) == len(set(hostnames))
    for name, provider in data["providers"].items():
        for kind in ("starttls", "implicit"):
            assert set(provider["ports"][kind]) <= set(data["listen"][kind]), (name, kind)
        assert "{id}" in provider["reply"] and provider["reply"].startswith("250 ")
    assert data["providers"]["sendgrid"]["username"] == "apikey"
    assert data["providers"]["postmark"]["username"] == data["providers"]["postmark"]["password"]
