# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""TLS client certificates (Office 365 connector, custom mTLS) and relaying by allow-listed address."""

from __future__ import annotations

import os
import smtplib
import ssl
import subprocess

import pytest
from emulator_harness import PROVIDERS, connect, login, send, trusting

CONNECTOR_HOST = PROVIDERS["office365_connector"]["hostnames"][0]
CLIENT_SUBJECT = "CN=relay.example.test,O=smarthost test"
TEST_CA = "CN=smarthost.postfix emulator test CA,O=smarthost.postfix tests"
ROGUE_CA = "CN=Rogue Interceptor CA,O=Rogue Interceptor"


def presenting(certs, name="client"):
    context = trusting(certs)
    context.load_cert_chain(os.path.join(certs, name + ".crt"), os.path.join(certs, name + ".key"))
    return context


def test_make_certs_issues_client_certificates(certs):
    def subject_and_issuer(name):
        shown = subprocess.run(
            [
                "openssl",
                "x509",
                "-in",
                os.path.join(certs, name),
                "-noout",
                "-subject",
                "-issuer",
                "-nameopt",
                "RFC2253",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return shown.stdout.split("\n")[:2]

    assert subject_and_issuer("client.crt") == ["subject=" + CLIENT_SUBJECT, "issuer=" + TEST_CA]
    assert subject_and_issuer("rogue-client.crt") == ["subject=" + CLIENT_SUBJECT, "issuer=" + ROGUE_CA]
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            os.path.join(certs, "ca.crt"),
            "-purpose",
            "sslclient",
            os.path.join(certs, "client.crt"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    assert oct(os.stat(os.path.join(certs, "client.key")).st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_connector_accepts_a_verified_client_certificate_without_auth(emulator, implicit):
    with connect(emulator, name=CONNECTOR_HOST, implicit=implicit, context=presenting(emulator.certs)) as client:
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        code, text = send(client, "scanner@contoso.example.test")
        assert code == 250
        assert text.decode().startswith("2.6.0 <") and text.decode().endswith("Queued mail for delivery")
    [message] = emulator.records()
    assert (message["provider"], message["access"], message["auth_mechanism"], message["username"]) == (
        "office365_connector",
        "client_certificate",
        None,
        None,
    )
    assert (message["client_cert_subject"], message["client_cert_issuer"], message["client_cert_verified"]) == (
        CLIENT_SUBJECT,
        TEST_CA,
        True,
    )
    [connection] = emulator.closed_connections(1)
    assert (connection["client_cert_subject"], connection["client_cert_verified"], connection["access"]) == (
        CLIENT_SUBJECT,
        True,
        "client_certificate",
    )
    assert emulator.records("auth") == []


def test_a_verified_certificate_works_without_sni(emulator):
    with connect(emulator, name="emulator", context=presenting(emulator.certs)) as client:
        assert send(client)[0] == 250
    assert emulator.records()[0]["provider"] == "office365_connector"


def test_rogue_client_certificate_is_recorded_unverified_and_refused(emulator):
    with connect(emulator, name=CONNECTOR_HOST, context=presenting(emulator.certs, "rogue-client")) as client:
        assert client.mail("scanner@contoso.example.test")[0] == 250
        code, text = client.rcpt("someone@example.net")
        assert (code, text) == (550, b"5.7.64 TenantAttribution; Relay Access Denied [emulator]")
    [connection] = emulator.closed_connections(1)
    assert connection["client_cert_subject"] == CLIENT_SUBJECT
    assert (connection["client_cert_issuer"], connection["client_cert_verified"]) == (ROGUE_CA, False)
    assert connection["access"] == "denied"
    [refusal] = emulator.records("replies")
    assert (refusal["code"], refusal["stage"], refusal["provider"]) == ("550", "rcpt", "office365_connector")
    assert emulator.records() == []


def test_no_certificate_no_sni_means_authentication_required(emulator):
    with connect(emulator, name="emulator") as client:
        assert client.mail("sender@example.test")[0] == 530
    [connection] = emulator.closed_connections(1)
    assert connection["client_cert_subject"] is None and connection["client_cert_verified"] is None


def test_password_clients_are_unaffected_and_their_certificate_recorded(emulator):
    with connect(emulator, context=presenting(emulator.certs)) as client:
        assert login(client, "sendgrid")[0] == 235
        assert send(client)[0] == 250
    [message] = emulator.records()
    assert (message["provider"], message["access"]) == ("sendgrid", "password")
    assert message["client_cert_subject"] == CLIENT_SUBJECT


def test_custom_relay_by_sni_takes_a_certificate(emulator):
    with connect(emulator, name="relay.example.test", context=presenting(emulator.certs)) as client:
        assert send(client)[0] == 250
    assert emulator.records()[0]["provider"] == "custom"


def test_allow_listed_address_relays_without_certificate(emulator):
    emulator.set_access(allow_ips={"office365_connector": ["127.0.0.0/8"]})
    with connect(emulator, name=CONNECTOR_HOST) as client:
        assert send(client, "scanner@contoso.example.test")[0] == 250
    [message] = emulator.records()
    assert (message["provider"], message["access"], message["client_cert_subject"]) == (
        "office365_connector",
        "ip",
        None,
    )
    # --require-client-cert: the address no longer counts.
    emulator.set_access(allow_ips={"office365_connector": ["127.0.0.0/8"]}, require_client_cert=True)
    with connect(emulator, name=CONNECTOR_HOST) as client:
        client.mail("scanner@contoso.example.test")
        assert client.rcpt("someone@example.net")[0] == 550
    with connect(emulator, name=CONNECTOR_HOST, context=presenting(emulator.certs)) as client:
        assert send(client, "scanner@contoso.example.test")[0] == 250


def test_workspace_relay_by_address(emulator):
    emulator.set_access(allow_ips={"google_workspace_relay": ["127.0.0.1"]})
    with connect(emulator, name="smtp-relay.gmail.com") as client:
        assert send(client)[0] == 250
    assert emulator.records()[0]["provider"] == "google_workspace_relay"


def test_a_certificate_from_an_unknown_ca_fails_the_handshake(emulator, tmp_path):
    key, crt = tmp_path / "self.key", tmp_path / "self.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-subj",
            "/CN=stranger.example.test",
            "-days",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    context = trusting(emulator.certs)
    context.load_cert_chain(str(crt), str(key))
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionResetError)):
        client = connect(emulator, name=CONNECTOR_HOST, context=context)
        client.mail("x@example.test")  # TLS 1.3: the refusal arrives with the first read
    assert emulator.records() == []


def test_access_settings_are_validated():
    import emulatorctl

    with pytest.raises(ValueError, match="ses does not accept clients by address"):
        emulatorctl.parse_access({"allow_ips": {"ses": ["10.0.0.1"]}})
    with pytest.raises(ValueError, match="is no IP address"):
        emulatorctl.parse_access({"allow_ips": {"office365_connector": ["relay.example.test"]}})
