# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Harness for the emulator's unit tests: the emulator as a subprocess on 127.0.0.1 high ports, smtplib clients."""

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
from http.client import HTTPSConnection
from urllib.parse import urlencode

EMULATOR_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "emulator"))
sys.path.insert(0, EMULATOR_DIR)
import emulatorctl  # noqa: E402

with open(os.path.join(EMULATOR_DIR, "providers.json"), encoding="utf-8") as _handle:
    PROVIDERS = json.load(_handle)["providers"]

SENDGRID = PROVIDERS["sendgrid"]
SES = PROVIDERS["ses"]
OFFICE365 = PROVIDERS["office365"]
GMAIL = PROVIDERS["gmail"]
MS_APP = OFFICE365["oauth2"]
GOOGLE_CLIENT = GMAIL["oauth2"]
MS_TOKEN_PATH = "/%s/oauth2/v2.0/token" % MS_APP["tenant_id"]
MESSAGE = (
    "From: Sender <sender@example.test>\r\n"
    "To: rcpt@example.net\r\n"
    "Subject: emulator check\r\n"
    "Message-ID: <check-1@example.test>\r\n"
    "X-Test-Tag: tag-42\r\n"
    "X-Mailer: pytest\r\n"
    "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    "Received: from c\r\n\tby d; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    "\r\n"
    "body line\r\n"
)


def free_ports(count):
    sockets = [socket.socket() for _unused in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


class Emulator:
    """A running emulator process and its state directory."""

    def __init__(self, certs, state_dir, extra_args=()):
        self.starttls_port, self.implicit_port, self.https_port = free_ports(3)
        self.state_dir = str(state_dir)
        self.certs = certs
        self.process = subprocess.Popen(
            [
                sys.executable,
                os.path.join(EMULATOR_DIR, "emulator.py"),
                "--host",
                "127.0.0.1",
                "--starttls-ports",
                str(self.starttls_port),
                "--implicit-ports",
                str(self.implicit_port),
                "--https-ports",
                str(self.https_port),
                "--certs",
                certs,
                "--state-dir",
                self.state_dir,
                *extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        line = self.process.stdout.readline()
        while line and "listening" not in line:
            line = self.process.stdout.readline()
        assert "listening" in line, "emulator did not start"
        self.output = []
        self.reader = threading.Thread(target=lambda: self.output.extend(self.process.stdout), daemon=True)
        self.reader.start()

    def set_mode(self, name, **options):
        mode = emulatorctl.write_mode(self.state_dir, dict(options, mode=name))
        assert emulatorctl.wait_until_applied(self.state_dir, mode), "mode %s not applied" % name

    def set_oauth(self, name, **options):
        settings = emulatorctl.write_oauth(self.state_dir, dict(options, mode=name))
        assert emulatorctl.wait_until_applied(self.state_dir, settings, kind="oauth"), "oauth %s not applied" % name

    def set_access(self, **options):
        settings = emulatorctl.write_settings(self.state_dir, "access", options)
        assert emulatorctl.wait_until_applied(self.state_dir, settings, kind="access"), "access not applied"

    def restore_defaults(self):
        """Normal mode, default token endpoint and access settings.

        The mode is always written: waiting for the server to apply it also lets the previous
        test's connections close (and write their records) before the records are reset. The
        other two are written only when they differ, since every write waits for the server.
        """
        self.set_mode("normal")
        lifetime = emulatorctl.DEFAULT_TOKEN_LIFETIME
        for kind, setter in (
            ("oauth", lambda: self.set_oauth("normal", token_lifetime=lifetime)),
            ("access", self.set_access),
        ):
            current = emulatorctl.read_settings(self.state_dir, kind)
            current.pop("serial", None)
            if current != emulatorctl.read_settings("/nonexistent", kind):
                setter()

    def records(self, kind="messages"):
        return emulatorctl.read_records(self.state_dir, kind)

    def closed_connections(self, count):
        """Connection records, once `count` are there: each is written when the server sees the close."""
        deadline = time.monotonic() + 5
        while len(self.records("connections")) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.records("connections")

    def counters(self):
        return emulatorctl.counters(self.state_dir)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
        self.reader.join(timeout=5)


def trusting(certs, ca="ca.crt"):
    context = ssl.create_default_context(cafile=os.path.join(certs, ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def connect(emulator, name="smtp.sendgrid.net", implicit=False, context=None):
    """An smtplib client that connects to 127.0.0.1 but sends SNI and verifies the certificate for `name`."""
    context = context or trusting(emulator.certs)
    client = smtplib.SMTP_SSL(context=context, timeout=10) if implicit else smtplib.SMTP(timeout=10)
    client._host = name  # smtplib takes the TLS server name from here; the socket goes to 127.0.0.1
    client.connect("127.0.0.1", emulator.implicit_port if implicit else emulator.starttls_port)
    client.ehlo("client.example.test")
    if not implicit:
        client.starttls(context=context)
        client.ehlo("client.example.test")
    return client


def login(client, provider, mechanism="PLAIN"):
    entry = PROVIDERS[provider]
    client.user, client.password = entry["username"], entry["password"]
    auth_object = client.auth_plain if mechanism == "PLAIN" else client.auth_login
    return client.auth(mechanism, auth_object, initial_response_ok=mechanism == "PLAIN")


def send(client, sender="sender@example.test", rcpts=("rcpt@example.net",), message=MESSAGE):
    """MAIL, RCPT and DATA by hand, returning the final reply (code, text)."""
    code, text = client.mail(sender)
    if code != 250:
        return code, text
    for rcpt in rcpts:
        code, text = client.rcpt(rcpt)
        if code != 250:
            return code, text
    try:
        return client.data(message)
    except smtplib.SMTPDataError as refused:  # a refusal of the DATA command itself (e.g. Gmail's 550 5.4.5)
        return refused.smtp_code, refused.smtp_error


class _LoopbackHTTPS(HTTPSConnection):
    """HTTPS to 127.0.0.1 that sends SNI and verifies the certificate for the real host name."""

    def __init__(self, name, port, context):
        super().__init__(name, port, context=context, timeout=10)
        self._context = context

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def token_request(
    emulator, host="login.microsoftonline.com", path=MS_TOKEN_PATH, form=None, headers=None, method="POST"
):
    """One request to the emulator's token endpoint: (HTTP status, JSON body or text, elapsed seconds)."""
    connection = _LoopbackHTTPS(host, emulator.https_port, trusting(emulator.certs))
    body = urlencode(form or {})
    started = time.monotonic()
    try:
        connection.request(
            method,
            path,
            body=body,
            headers=dict({"Content-Type": "application/x-www-form-urlencoded"}, **(headers or {})),
        )
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    elapsed = time.monotonic() - started
    text = data.decode("utf-8")
    return (
        response.status,
        (json.loads(text) if response.getheader("Content-Type", "").startswith("application/json") else text),
        elapsed,
    )


def microsoft_form(**overrides):
    form = {
        "client_id": MS_APP["client_id"],
        "client_secret": MS_APP["client_secret"],
        "scope": MS_APP["scope"],
        "grant_type": "client_credentials",
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def google_form(**overrides):
    form = {
        "client_id": GOOGLE_CLIENT["client_id"],
        "client_secret": GOOGLE_CLIENT["client_secret"],
        "refresh_token": GOOGLE_CLIENT["refresh_token"],
        "grant_type": "refresh_token",
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def microsoft_token(emulator, **overrides):
    status, body, _elapsed = token_request(emulator, form=microsoft_form(**overrides))
    assert status == 200, body
    return body["access_token"]


def google_token(emulator, **overrides):
    status, body, _elapsed = token_request(emulator, "oauth2.googleapis.com", "/token", google_form(**overrides))
    assert status == 200, body
    return body["access_token"]


def xoauth2(user, token):
    return base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (user, token)).encode()).decode()
