# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real SMTP servers on 127.0.0.1 for the relay probe tests.

Every failure the probe classifies is produced by a real socket here: a test
PKI made with the openssl CLI, aiosmtpd servers speaking STARTTLS or implicit
TLS, a silent listener and a listener whose accept queue is full.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

RELAY_NAME = "relay.test"
USERNAME = "AKIAPROBETEST"
PASSWORD = "pr0be-Secret/with+base64=chars"


def _openssl(*args, cwd):
    subprocess.run(("openssl",) + args, cwd=cwd, check=True, capture_output=True)


def _signed_by_ca(directory, name, subject, san):
    extensions = os.path.join(directory, name + ".ext")
    with open(extensions, "w") as handle:
        # keyUsage and authorityKeyIdentifier: Python 3.13 verifies strictly (VERIFY_X509_STRICT).
        handle.write(
            "subjectAltName = %s\nextendedKeyUsage = serverAuth\nkeyUsage = critical, digitalSignature, "
            "keyEncipherment\nauthorityKeyIdentifier = keyid, issuer\n" % san
        )
    _openssl(
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        subject,
        "-keyout",
        name + ".key",
        "-out",
        name + ".csr",
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        name + ".csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        extensions,
        "-out",
        name + ".crt",
        cwd=directory,
    )


def make_pki(directory):
    """Create a test CA, a relay certificate it signs, a wrong-name one and a rogue self-signed one.

    Returns a dict of absolute paths: ca, server_cert/server_key, wrong_name_cert/wrong_name_key,
    rogue_cert/rogue_key.
    """
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=Smarthost Test CA",
        "-addext",
        "basicConstraints = critical, CA:TRUE",
        "-addext",
        "keyUsage = critical, keyCertSign, cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=directory,
    )
    _signed_by_ca(
        directory, "server", "/O=Relay Test/CN=" + RELAY_NAME, "DNS:%s, DNS:localhost, IP:127.0.0.1" % RELAY_NAME
    )
    _signed_by_ca(directory, "wrong_name", "/CN=other.test", "DNS:other.test")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=" + RELAY_NAME,
        "-addext",
        "subjectAltName = DNS:%s" % RELAY_NAME,
        "-keyout",
        "rogue.key",
        "-out",
        "rogue.crt",
        cwd=directory,
    )
    paths = {"ca": "ca.crt"}
    for name in ("server", "wrong_name", "rogue"):
        paths[name + "_cert"] = name + ".crt"
        paths[name + "_key"] = name + ".key"
    return dict((key, os.path.join(directory, value)) for key, value in paths.items())


def server_context(cert, key):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RelayHandler:
    """Answers like a smarthost: optionally hides AUTH, accepts or rejects credentials, and
    answers MAIL FROM or the end of DATA with the reply a provider would give."""

    def __init__(self, offer_auth=True, accept=True, mail_reply=None, data_reply="250 Ok"):
        self.offer_auth = offer_auth
        self.accept = accept
        self.mail_reply = mail_reply
        self.data_reply = data_reply
        self.logins = []
        self.messages = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.offer_auth:
            return responses
        return [line for line in responses if not line[4:].startswith("AUTH")]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return self.data_reply

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((mechanism, auth_data.login, auth_data.password))
        if self.accept and auth_data.login == USERNAME.encode() and auth_data.password == PASSWORD.encode():
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    # Offered when a test excludes PLAIN and LOGIN: a mechanism the probe does not speak.
    async def auth_XOAUTH2(self, server, args):
        return AuthResult(success=False, handled=False)


def start_smtp(handler, tls=None, context=None, exclude_mechanisms=()):
    """Start an aiosmtpd server; tls is None (plaintext), 'starttls' or 'implicit'. Returns (controller, port)."""
    port = free_port()
    options = dict(
        hostname="127.0.0.1",
        port=port,
        ready_timeout=10,
        server_hostname=RELAY_NAME,
        authenticator=handler.authenticate,
        auth_exclude_mechanism=list(exclude_mechanisms),
    )
    if tls == "implicit":
        # aiosmtpd only knows TLS it negotiated itself (STARTTLS), so AUTH must not wait for it here.
        options.update(ssl_context=context, auth_require_tls=False)
    elif tls == "starttls":
        options.update(tls_context=context, require_starttls=True)
    else:
        options.update(auth_require_tls=False)
    controller = Controller(handler, **options)
    controller.start()
    return controller, port


class SilentListener:
    """Accepts TCP connections and never says a word: a tarpit."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.port = self.socket.getsockname()[1]
        self.accepted = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                connection, _address = self.socket.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self):
        for connection in self.accepted:
            connection.close()
        self.socket.close()


class FullBacklogListener:
    """A listener that never accepts and whose accept queue is full: Linux drops new SYNs,
    so a client's connect() times out exactly as it does behind a dropping firewall."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(0)
        self.port = self.socket.getsockname()[1]
        self.fillers = []
        while True:
            filler = socket.socket()
            filler.settimeout(0.5)
            try:
                filler.connect(("127.0.0.1", self.port))
            except socket.timeout:
                filler.close()
                break
            self.fillers.append(filler)

    def close(self):
        for filler in self.fillers:
            filler.close()
        self.socket.close()


class ScriptedServer:
    """A hand-rolled SMTP server for replies aiosmtpd will not give: a refusing greeting, or an
    AUTH reply that echoes what the client sent. reply(line, tls) returns the reply to a command;
    with a context, STARTTLS is honoured."""

    def __init__(self, greeting, reply, context=None):
        self.greeting = greeting
        self.reply = reply
        self.context = context
        self.received = []
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.port = self.socket.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _address = self.socket.accept()
            except OSError:
                return
            try:
                self._converse(connection)
            except (OSError, ssl.SSLError):
                pass
            finally:
                connection.close()

    def _converse(self, connection):
        connection.sendall(self.greeting.encode() + b"\r\n")
        tls = False
        reader = connection.makefile("rb")
        while True:
            raw = reader.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\r\n")
            self.received.append(line)
            if line.upper() == "STARTTLS" and self.context and not tls:
                connection.sendall(b"220 go ahead\r\n")
                connection = self.context.wrap_socket(connection, server_side=True)
                reader = connection.makefile("rb")
                tls = True
                continue
            connection.sendall(self.reply(line, tls).encode() + b"\r\n")
            if line.upper() == "QUIT":
                return

    def close(self):
        self.socket.close()
