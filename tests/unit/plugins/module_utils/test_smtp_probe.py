# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The relay probe against real servers on 127.0.0.1: every cause is produced on the wire."""

from __future__ import annotations

import base64
import datetime
import importlib.util
import json
import os
import ssl
import subprocess
import time
import warnings

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils import smtp_probe
from ansible_collections.smarthost.postfix.plugins.module_utils.provider_replies import REPLY_CAUSES
from ansible_collections.smarthost.postfix.plugins.module_utils.smtp_probe import CAUSES, probe
from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils import smtp_servers as servers
from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils.smtp_servers import (
    PASSWORD,
    RELAY_NAME,
    USERNAME,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return servers.make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def start(pki):
    """start(tls, cert='server', **handler_options) -> (handler, port); servers stop with the module."""
    controllers = []

    def start_server(tls="starttls", cert="server", exclude=(), context=None, **handler_options):
        handler = servers.RelayHandler(**handler_options)
        if context is None and tls:
            context = servers.server_context(pki[cert + "_cert"], pki[cert + "_key"])
        controller, port = servers.start_smtp(handler, tls, context, exclude_mechanisms=exclude)
        controllers.append(controller)
        return handler, port

    yield start_server
    for controller in controllers:
        controller.stop()


@pytest.fixture(scope="module")
def relay(start):
    return start("starttls")


def run(port, pki, **options):
    options.setdefault("tls", "starttls")
    options.setdefault("ca_file", pki["ca"])
    options.setdefault("server_name", RELAY_NAME)
    options.setdefault("timeout", 3)
    options.setdefault("helo_name", "probe.test")
    return probe("127.0.0.1", port, **options)


def assert_cause(result, cause):
    assert result["ok"] is False, result
    assert result["cause"] == cause, result
    assert result["remedy"] == smtp_probe.remedy_for(cause) == (CAUSES.get(cause) or REPLY_CAUSES[cause])
    assert result["message"]


def _load_capture_replies():
    """The providers' texts the log fixtures were captured with (fixtures/postfix-logs/capture)."""
    path = os.path.join(
        os.path.dirname(__file__), "..", "..", "fixtures", "postfix-logs", "capture", "provider_replies.py"
    )
    spec = importlib.util.spec_from_file_location("capture_provider_replies", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.REPLIES


PROVIDER_REPLIES = _load_capture_replies()


def provider_reply(step, text):
    """A ScriptedServer reply function answering one step with a provider's text, like the capture's stand-ins."""

    def reply(line, tls):
        verb = line.split(" ")[0].upper()
        if verb == "EHLO":
            if step == "ehlo" and not tls:
                return text
            return "250-relay.test\r\n250 AUTH PLAIN LOGIN" if tls else "250-relay.test\r\n250 STARTTLS"
        if verb == "AUTH" and step == "auth":
            return text
        return "221 2.0.0 Bye" if verb == "QUIT" else "235 2.7.0 Authentication successful"

    return reply


# Every capture text the probe meets before it would send mail: at EHLO or in reply to AUTH.
@pytest.mark.parametrize(
    "port, cause",
    [
        (10042, "basic_auth_disabled"),  # Exchange Online 550 5.7.30
        (10043, "basic_auth_disabled"),  # Exchange Online 535 5.7.139 ... basic authentication is disabled
        (10044, "smtp_auth_disabled"),
        (10045, "credentials_rejected"),  # 535 5.7.3 to a password is a wrong password, not an OAuth permission
        (10046, "app_password_required"),  # Gmail's two-line 534-5.7.9
        (10048, "throttled_454"),  # Gmail's 421 4.7.0 to EHLO
    ],
)
def test_provider_refusals_during_the_probe_get_the_delivery_causes(pki, port, cause):
    step, text = PROVIDER_REPLIES[port]
    context = servers.server_context(pki["server_cert"], pki["server_key"])
    server = servers.ScriptedServer("220 relay.test ESMTP", provider_reply(step, text), context)
    try:
        result = run(server.port, pki, username=USERNAME, password=PASSWORD)
    finally:
        server.close()
    assert_cause(result, cause)
    assert text.split("\r\n")[0][4:] in result["message"]  # the provider's words are quoted
    assert PASSWORD not in json.dumps(result)


@pytest.mark.parametrize("step", ["greeting", "ehlo", "auth"])
def test_exchange_onlines_connection_limit_is_named_wherever_it_comes(pki, step):
    text = PROVIDER_REPLIES[10040][1]
    context = servers.server_context(pki["server_cert"], pki["server_key"])
    greeting = text if step == "greeting" else "220 relay.test ESMTP"
    server = servers.ScriptedServer(greeting, provider_reply(step, text), context)
    try:
        result = run(server.port, pki, username=USERNAME, password=PASSWORD)
    finally:
        server.close()
    assert_cause(result, "too_many_connections")
    assert "relay_destination_concurrency_limit" in result["remedy"]


def test_a_refusal_that_is_no_provider_text_keeps_the_probes_own_cause(pki):
    context = servers.server_context(pki["server_cert"], pki["server_key"])
    server = servers.ScriptedServer(
        "220 relay.test ESMTP", provider_reply("auth", "535 5.7.8 Bad credentials"), context
    )
    try:
        result = run(server.port, pki, username=USERNAME, password=PASSWORD)
    finally:
        server.close()
    assert_cause(result, "credentials_rejected")


def test_starttls_relay_with_good_credentials_passes_without_sending_mail(relay, pki):
    handler, port = relay
    result = run(port, pki, username=USERNAME, password=PASSWORD)
    assert result["ok"] is True, result
    assert result["cause"] is None and result["remedy"] is None
    assert result["tls_mode"] == "starttls"
    assert result["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert result["tls"]["verified"] is True and result["tls"]["bits"] >= 128
    assert result["banner"].startswith("220 ")
    assert {"PLAIN", "LOGIN"} <= set(result["auth_mechanisms"])
    assert result["authenticated"] is True and result["auth_mechanism"] == "PLAIN"
    assert ("PLAIN", USERNAME.encode(), PASSWORD.encode()) in handler.logins
    assert handler.messages == []
    assert {"dns", "connect", "tls", "auth", "total"} <= set(result["timings_ms"])
    certificate = result["certificate"]
    assert certificate["subject"] == "O=Relay Test, CN=relay.test"
    assert certificate["issuer"] == "CN=Smarthost Test CA"
    assert certificate["subject_alt_names"] == ["DNS:relay.test", "DNS:localhost", "IP:127.0.0.1"]
    assert certificate["self_signed"] is False
    assert 28 <= certificate["days_left"] <= 30


def test_login_is_used_when_plain_is_not_offered(start, pki):
    handler, port = start("starttls", exclude=("PLAIN",))
    result = run(port, pki, username=USERNAME, password=PASSWORD)
    assert result["ok"] is True, result
    assert result["auth_mechanism"] == "LOGIN"
    assert "PLAIN" not in result["auth_mechanisms"]
    assert [login[0] for login in handler.logins] == ["LOGIN"]


def test_without_username_only_mechanisms_are_reported(relay, pki):
    handler, port = relay
    before = len(handler.logins)
    result = run(port, pki)
    assert result["ok"] is True
    assert result["authenticated"] is None and result["auth_mechanism"] is None
    assert "auth" not in result["timings_ms"]
    assert len(handler.logins) == before


def test_implicit_tls_relay_passes(start, pki):
    _handler, port = start("implicit")
    result = run(port, pki, tls="implicit", username=USERNAME, password=PASSWORD)
    assert result["ok"] is True, result
    assert result["tls_mode"] == "implicit" and result["authenticated"] is True


def test_ip_address_is_verified_against_the_ip_san(relay, pki):
    _handler, port = relay
    assert run(port, pki, server_name=None)["ok"] is True  # host 127.0.0.1 is on the certificate as IP:127.0.0.1


def test_wrong_password_is_credentials_rejected_and_never_echoed(relay, pki):
    _handler, port = relay
    result = run(port, pki, username=USERNAME, password="Wr0ng-" + PASSWORD)
    assert_cause(result, "credentials_rejected")
    assert "535" in result["message"]
    assert result["authenticated"] is False
    assert PASSWORD not in json.dumps(result)


def echo_reply(line, tls):
    if line.startswith("EHLO"):
        return "250-echo.test\r\n250 AUTH PLAIN LOGIN" if tls else "250-echo.test\r\n250 STARTTLS"
    if line.startswith("AUTH"):
        return "535 5.7.8 rejected: %s" % line
    return "221 bye" if line == "QUIT" else "250 ok"


def test_password_echoed_by_the_server_is_redacted(pki):
    context = servers.server_context(pki["server_cert"], pki["server_key"])
    echoing = servers.ScriptedServer("220 echo.test ESMTP", echo_reply, context)
    try:
        result = run(echoing.port, pki, username=USERNAME, password=PASSWORD)
    finally:
        echoing.close()
    assert_cause(result, "credentials_rejected")
    assert any(line.startswith("AUTH PLAIN ") for line in echoing.received)  # the secret was sent and echoed
    text = json.dumps(result)
    assert PASSWORD not in text
    for form in smtp_probe._secret_forms(USERNAME, PASSWORD):
        assert form not in text
    assert "rejected: AUTH PLAIN ********" in result["message"]


def test_starttls_is_required_before_any_secret_is_sent():
    plaintext = servers.ScriptedServer("220 plain.test ESMTP", echo_reply)
    try:
        result = probe(
            "127.0.0.1",
            plaintext.port,
            tls="starttls",
            username=USERNAME,
            password=PASSWORD,
            timeout=3,
            helo_name="probe.test",
        )
    finally:
        plaintext.close()
    assert_cause(result, "unexpected_reply")  # STARTTLS offered, but the server does not do it: 250 instead of 220
    assert not any(line.startswith("AUTH") for line in plaintext.received)


def test_secret_forms_are_removed_from_messages():
    token = base64.b64encode(b"\0" + USERNAME.encode() + b"\0" + PASSWORD.encode()).decode()
    text = "said: 535 %s / %s / %s" % (PASSWORD, base64.b64encode(PASSWORD.encode()).decode(), token)
    redacted = smtp_probe._redact(text, smtp_probe._secret_forms(USERNAME, PASSWORD))
    assert PASSWORD not in redacted and token not in redacted
    assert redacted == "said: 535 ******** / ******** / ********"


def test_refused_port(pki):
    result = run(servers.free_port(), pki)
    assert_cause(result, "connection_refused")
    assert "connect" not in result["timings_ms"]


def test_dropped_connection_attempt_is_connection_timeout(pki):
    listener = servers.FullBacklogListener()
    try:
        started = time.monotonic()
        result = run(listener.port, pki, timeout=1)
    finally:
        listener.close()
    assert_cause(result, "connection_timeout")
    assert time.monotonic() - started < 5


def test_silent_server_is_greeting_timeout(pki):
    listener = servers.SilentListener()
    try:
        result = run(listener.port, pki, timeout=1)
    finally:
        listener.close()
    assert_cause(result, "greeting_timeout")
    assert "connect" in result["timings_ms"]


def test_unresolvable_name_is_dns_failure(pki):
    result = probe("relay.invalid", 587, ca_file=pki["ca"], timeout=2, helo_name="probe.test")
    assert_cause(result, "dns_failure")
    assert "relay.invalid" in result["message"]


def test_plaintext_server_in_starttls_mode_is_starttls_not_offered(start, pki):
    _handler, port = start(None)
    result = run(port, pki, username=USERNAME, password=PASSWORD)
    assert_cause(result, "starttls_not_offered")
    assert "AUTH" in result["capabilities"]  # offered in clear text, and the probe did not use it
    assert result["authenticated"] is None


def test_starttls_against_implicit_tls_port_is_wrapper_mode_expected(start, pki):
    _handler, port = start("implicit")
    result = run(port, pki, tls="starttls", timeout=1)
    assert_cause(result, "wrapper_mode_expected")


def test_implicit_tls_against_plaintext_port_is_starttls_expected(relay, pki):
    _handler, port = relay
    result = run(port, pki, tls="implicit")
    assert_cause(result, "starttls_expected")


def test_self_signed_certificate_is_untrusted_and_still_described(start, pki):
    _handler, port = start("starttls", cert="rogue")
    result = run(port, pki, username=USERNAME, password=PASSWORD)
    assert_cause(result, "certificate_untrusted")
    assert "self-signed" in result["message"]
    assert result["authenticated"] is None  # credentials never reach an unverified server
    assert result["certificate"]["self_signed"] is True
    assert result["certificate"]["issuer"] == "CN=relay.test"


def test_certificate_from_a_ca_missing_in_the_bundle_is_untrusted(relay):
    _handler, port = relay
    result = probe("127.0.0.1", port, tls="starttls", server_name=RELAY_NAME, timeout=3, helo_name="probe.test")
    assert result["ca_file"] == smtp_probe.default_ca_file()
    assert_cause(result, "certificate_untrusted")
    assert result["certificate"]["issuer"] == "CN=Smarthost Test CA"


def test_certificate_for_another_name_is_name_mismatch(start, pki):
    _handler, port = start("starttls", cert="wrong_name")
    result = run(port, pki)
    assert_cause(result, "certificate_name_mismatch")
    assert result["certificate"]["subject_alt_names"] == ["DNS:other.test"]


def test_server_name_not_on_the_certificate_is_name_mismatch(relay, pki):
    _handler, port = relay
    result = run(port, pki, server_name="email-smtp.example.test")
    assert_cause(result, "certificate_name_mismatch")
    assert "email-smtp.example.test" in result["message"]


def test_verify_false_accepts_the_rogue_certificate_and_says_so(start, pki):
    _handler, port = start("starttls", cert="rogue")
    result = run(port, pki, verify=False)
    assert result["ok"] is True
    assert result["tls"]["verified"] is False and result["ca_file"] is None
    assert result["certificate"]["self_signed"] is True


def test_old_tls_only_server_is_tls_handshake_failed(start, pki):
    context = servers.server_context(pki["server_cert"], pki["server_key"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    _handler, port = start("starttls", context=context)
    result = run(port, pki)
    assert_cause(result, "tls_handshake_failed")


def test_no_auth_after_tls_with_credentials_is_auth_not_offered(start, pki):
    _handler, port = start("starttls", offer_auth=False)
    assert_cause(run(port, pki, username=USERNAME, password=PASSWORD), "auth_not_offered")
    assert run(port, pki)["ok"] is True  # an IP-allowlisted relay needs no AUTH


def test_only_unknown_mechanisms_is_auth_mechanism_unsupported(start, pki):
    _handler, port = start("starttls", exclude=("PLAIN", "LOGIN"))
    result = run(port, pki, username=USERNAME, password=PASSWORD)
    assert_cause(result, "auth_mechanism_unsupported")
    assert result["auth_mechanisms"] == ["XOAUTH2"]


def test_refusing_greeting_is_unexpected_reply():
    refusing = servers.ScriptedServer("554 5.7.1 no SMTP service for you", lambda line, tls: "221 bye")
    try:
        result = probe("127.0.0.1", refusing.port, tls="starttls", timeout=3, helo_name="probe.test")
    finally:
        refusing.close()
    assert_cause(result, "unexpected_reply")
    assert "554 5.7.1 no SMTP service for you" in result["message"]


def test_missing_ca_file_raises_value_error(relay, tmp_path):
    with pytest.raises(ValueError, match="cannot load the CA file"):
        probe("127.0.0.1", relay[1], ca_file=str(tmp_path / "missing.pem"))


@pytest.mark.parametrize(
    "tls, port, expected",
    [
        ("auto", 465, "implicit"),
        ("auto", 587, "starttls"),
        ("auto", 2525, "starttls"),
        ("starttls", 465, "starttls"),
        ("implicit", 587, "implicit"),
    ],
)
def test_auto_means_implicit_only_on_465(tls, port, expected):
    assert smtp_probe.effective_tls_mode(tls, port) == expected


def test_default_ca_file_is_the_first_bundle_present(tmp_path):
    present = tmp_path / "ca-bundle.crt"
    present.write_text("")
    assert smtp_probe.default_ca_file([str(tmp_path / "missing.crt"), str(present)]) == str(present)
    assert smtp_probe.default_ca_file([str(tmp_path / "missing.crt")]) is None


def _openssl_field(path, option):
    out = subprocess.run(
        ["openssl", "x509", "-in", path, "-noout", option, "-nameopt", "sep_comma_plus_space,sname"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return out.split("=", 1)[1].strip()


@pytest.mark.parametrize("name", ["server", "wrong_name", "rogue"])
def test_certificate_decoder_agrees_with_openssl(pki, name):
    path = pki[name + "_cert"]
    with open(path) as handle:
        der = ssl.PEM_cert_to_DER_cert(handle.read())
    described = smtp_probe.describe_certificate(der)
    assert described["subject"] == _openssl_field(path, "-subject")
    assert described["issuer"] == _openssl_field(path, "-issuer")
    not_after = datetime.datetime.strptime(_openssl_field(path, "-enddate"), "%b %d %H:%M:%S %Y %Z")
    assert described["not_after"] == not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    sans = (
        subprocess.run(
            ["openssl", "x509", "-in", path, "-noout", "-ext", "subjectAltName"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.splitlines()[1]
        .strip()
    )
    assert described["subject_alt_names"] == [san.strip().replace("IP Address:", "IP:") for san in sans.split(",")]


# --- XOAUTH2: the probe logs in with a bearer token instead of a password --------------------------

GOOD_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.probe-good-token.sig"
# Gmail's XOAUTH2 error challenge (developers.google.com/gmail/imap/xoauth2-protocol) and its final reply.
GMAIL_CHALLENGE = base64.b64encode(
    b'{"status":"401","schemes":"bearer mac","scope":"https://mail.google.com/"}'
).decode()


def xoauth2_reply(style):
    """Answers AUTH XOAUTH2 like Exchange Online ('o365') or Gmail ('gmail'): 235 for GOOD_TOKEN only."""
    state = {}

    def reply(line, tls):
        if line.startswith("EHLO"):
            return "250-relay.test\r\n250 AUTH LOGIN XOAUTH2" if tls else "250-relay.test\r\n250 STARTTLS"
        if line.startswith("AUTH XOAUTH2 "):
            decoded = base64.b64decode(line.split(" ", 2)[2]).decode()
            state["login"] = decoded
            if decoded == "user=%s\x01auth=Bearer %s\x01\x01" % (USERNAME, GOOD_TOKEN):
                return "235 2.7.0 Authentication successful"
            if style == "gmail":
                return "334 " + GMAIL_CHALLENGE
            return "535 5.7.3 Authentication unsuccessful [AM0PR06CA0126.eurprd06.prod.outlook.com]"
        if line == "" and style == "gmail":
            return (
                "535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
                "535 5.7.8  https://support.google.com/mail/?p=BadCredentials - gsmtp"
            )
        return "221 bye" if line == "QUIT" else "250 ok"

    return reply, state


@pytest.fixture
def xoauth2_server(pki):
    servers_started = []

    def start(style):
        reply, state = xoauth2_reply(style)
        context = servers.server_context(pki["server_cert"], pki["server_key"])
        server = servers.ScriptedServer("220 relay.test ESMTP", reply, context)
        servers_started.append(server)
        return server, state

    yield start
    for server in servers_started:
        server.close()


def test_xoauth2_with_a_good_token_authenticates(pki, xoauth2_server):
    server, state = xoauth2_server("o365")
    result = run(server.port, pki, username=USERNAME, oauth2_token=GOOD_TOKEN)
    assert result["ok"] is True and result["authenticated"] is True and result["auth_mechanism"] == "XOAUTH2", result
    assert state["login"].startswith("user=%s\x01auth=Bearer " % USERNAME)
    assert not any(line.startswith(("MAIL", "RCPT", "DATA")) for line in server.received)


def test_exchange_refusing_a_token_is_the_mailbox_permission_and_the_token_is_never_echoed(pki, xoauth2_server):
    server, _state = xoauth2_server("o365")
    result = run(server.port, pki, username=USERNAME, oauth2_token=lambda: "eyJ.other-token.sig")
    assert_cause(result, "oauth2_mailbox_not_permitted")
    assert "New-ServicePrincipal" in result["remedy"] and "Add-MailboxPermission" in result["remedy"]
    assert "eyJ.other-token.sig" not in json.dumps(result) and "token" in result["timings_ms"]


def test_gmails_challenge_is_answered_and_quoted(pki, xoauth2_server):
    server, _state = xoauth2_server("gmail")
    result = run(server.port, pki, username=USERNAME, oauth2_token="expired-token")
    assert_cause(result, "credentials_rejected")
    assert '"status":"401"' in result["message"] and "535 5.7.8" in result["message"]
    assert "" in server.received  # the empty line that acknowledges the challenge


def test_a_server_without_xoauth2_is_named(pki):
    server = servers.ScriptedServer(
        "220 relay.test ESMTP", echo_reply, servers.server_context(pki["server_cert"], pki["server_key"])
    )
    try:
        result = run(server.port, pki, username=USERNAME, oauth2_token=GOOD_TOKEN)
    finally:
        server.close()
    assert_cause(result, "auth_mechanism_unsupported")
    assert "not XOAUTH2" in result["message"]


@pytest.mark.parametrize(
    "failure, cause",
    [
        (
            smtp_probe.ProbeFailure("oauth2_invalid_client", "AADSTS7000215: Invalid client secret provided."),
            "oauth2_invalid_client",
        ),
        (ConnectionRefusedError(111, "Connection refused"), "oauth2_token_endpoint_unreachable"),
    ],
)
def test_a_token_that_cannot_be_had_fails_before_connecting(pki, failure, cause):
    def provider():
        raise failure

    listener = servers.SilentListener()
    try:
        result = run(listener.port, pki, username=USERNAME, oauth2_token=provider)
    finally:
        listener.close()
    assert_cause(result, cause)
    assert listener.accepted == [] and "connect" not in result["timings_ms"]
