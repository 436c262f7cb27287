# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The emulator's OAuth 2.0 token endpoints (HTTPS) and AUTH XOAUTH2 with the tokens they issue."""

from __future__ import annotations

import base64
import json
import os
import smtplib
import socket
import subprocess
import sys
import time

import pytest
from emulator_harness import (
    EMULATOR_DIR,
    GOOGLE_CLIENT,
    MS_APP,
    MS_TOKEN_PATH,
    OFFICE365,
    connect,
    emulatorctl,
    google_form,
    google_token,
    login,
    microsoft_form,
    microsoft_token,
    send,
    token_request,
    xoauth2,
)

MAILBOX = MS_APP["mailboxes"][0]
ACCOUNT = GOOGLE_CLIENT["account"]
OFFICE365_HOST = "smtp.office365.com"
GMAIL_HOST = "smtp.gmail.com"


def google_request(emulator, **overrides):
    return token_request(emulator, "oauth2.googleapis.com", "/token", google_form(**overrides))


def jwt_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def auth_xoauth2(client, user, token):
    return client.docmd("AUTH", "XOAUTH2 " + xoauth2(user, token))


def stored_text(emulator):
    return "".join(
        open(os.path.join(emulator.state_dir, name), encoding="utf-8").read()
        for name in emulatorctl.RECORD_FILES.values()
    )


# -- Microsoft identity platform: client credentials grant --------------------------------------


def test_microsoft_client_credentials_grant(emulator):
    status, body, _elapsed = token_request(emulator, form=microsoft_form())
    assert status == 200
    assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert (body["token_type"], body["expires_in"], body["ext_expires_in"]) == ("Bearer", 3599, 3599)
    claims = jwt_claims(body["access_token"])
    assert claims["aud"] == "https://outlook.office365.com"
    assert (claims["tid"], claims["appid"]) == (MS_APP["tenant_id"], MS_APP["client_id"])
    assert claims["exp"] - claims["iat"] == 3599
    [request] = emulator.records("tokens")
    assert (request["endpoint"], request["grant_type"], request["client_id"], request["tenant"]) == (
        "microsoft",
        "client_credentials",
        MS_APP["client_id"],
        MS_APP["tenant_id"],
    )
    assert (request["success"], request["http_status"], request["error"]) == (True, 200, None)
    assert request["host"] == "login.microsoftonline.com:%d" % emulator.https_port


def test_microsoft_tenant_domain_and_client_secret_basic(emulator):
    basic = base64.b64encode(("%s:%s" % (MS_APP["client_id"], MS_APP["client_secret"])).encode()).decode()
    status, body, _elapsed = token_request(
        emulator,
        path="/%s/oauth2/v2.0/token" % MS_APP["tenant_domain"],
        form=microsoft_form(client_id=None, client_secret=None),
        headers={"Authorization": "Basic " + basic},
    )
    assert status == 200, body
    assert jwt_claims(body["access_token"])["tid"] == MS_APP["tenant_id"]


@pytest.mark.parametrize(
    "path, overrides, http_status, error, code, words",
    [
        (
            MS_TOKEN_PATH,
            {"client_secret": "wrong"},
            401,
            "invalid_client",
            7000215,
            "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client "
            "secret value, not the client secret ID, for a secret added to app '%s'." % MS_APP["client_id"],
        ),
        (
            MS_TOKEN_PATH,
            {"client_id": "11111111-2222-4333-8444-555555555555"},
            400,
            "unauthorized_client",
            700016,
            "AADSTS700016: Application with identifier '11111111-2222-4333-8444-555555555555' was not found in the "
            "directory '%s'." % MS_APP["tenant_id"],
        ),
        (
            "/99999999-0000-4000-a000-000000000000/oauth2/v2.0/token",
            {},
            400,
            "invalid_request",
            90002,
            "AADSTS90002: Tenant '99999999-0000-4000-a000-000000000000' not found.",
        ),
        (
            MS_TOKEN_PATH,
            {"scope": "https://outlook.office365.com/SMTP.Send"},
            400,
            "invalid_scope",
            1002012,
            "AADSTS1002012: The provided value for scope https://outlook.office365.com/SMTP.Send is not valid.",
        ),
        (
            MS_TOKEN_PATH,
            {"scope": None},
            400,
            "invalid_request",
            900144,
            "AADSTS900144: The request body must contain the following parameter: 'scope'.",
        ),
        (
            MS_TOKEN_PATH,
            {"grant_type": None},
            400,
            "invalid_request",
            900144,
            "AADSTS900144: The request body must contain the following parameter: 'grant_type'.",
        ),
        (
            MS_TOKEN_PATH,
            {"grant_type": "password"},
            400,
            "unsupported_grant_type",
            70003,
            "AADSTS70003: The app requested an unsupported grant type 'password'.",
        ),
        (
            MS_TOKEN_PATH,
            {"client_secret": None},
            401,
            "invalid_client",
            7000218,
            "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
        ),
    ],
)
def test_microsoft_errors_as_entra_id_sends_them(emulator, path, overrides, http_status, error, code, words):
    status, body, _elapsed = token_request(emulator, path=path, form=microsoft_form(**overrides))
    assert status == http_status
    assert list(body) == [
        "error",
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
        "error_uri",
    ]
    assert (body["error"], body["error_codes"]) == (error, [code])
    assert body["error_description"].startswith(words)
    description_lines = body["error_description"].split("\r\n")
    assert description_lines[1] == "Trace ID: " + body["trace_id"]
    assert description_lines[2] == "Correlation ID: " + body["correlation_id"]
    assert description_lines[3] == "Timestamp: " + body["timestamp"]
    [request] = emulator.records("tokens")
    assert (request["success"], request["error"], request["error_code"], request["http_status"]) == (
        False,
        error,
        code,
        http_status,
    )


def test_a_token_for_another_resource_is_issued_but_refused_by_smtp(emulator):
    token = microsoft_token(emulator, scope="https://graph.microsoft.com/.default")
    assert jwt_claims(token)["aud"] == "https://graph.microsoft.com"
    with connect(emulator, name=OFFICE365_HOST) as client:
        assert auth_xoauth2(client, MAILBOX, token) == (535, b"5.7.3 Authentication unsuccessful [emulator]")
    assert emulator.records("auth")[0]["token_status"] == "foreign"


# -- Google: refresh token grant ----------------------------------------------------------------


def test_google_refresh_token_grant(emulator):
    status, body, _elapsed = google_request(emulator)
    assert status == 200
    assert list(body) == ["access_token", "expires_in", "scope", "token_type"]
    assert (body["expires_in"], body["scope"], body["token_type"]) == (3599, "https://mail.google.com/", "Bearer")
    assert body["access_token"].startswith("ya29.")
    [request] = emulator.records("tokens")
    assert (request["endpoint"], request["grant_type"], request["client_id"], request["success"]) == (
        "google",
        "refresh_token",
        GOOGLE_CLIENT["client_id"],
        True,
    )
    assert (request["account"], request["refresh_token_known"]) == (ACCOUNT, True)


@pytest.mark.parametrize(
    "overrides, http_status, body",
    [
        (
            {"refresh_token": "1//0revoked"},
            400,
            {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
        ),
        (
            {"client_id": "0-unknown.apps.googleusercontent.com"},
            401,
            {"error": "invalid_client", "error_description": "The OAuth client was not found."},
        ),
        ({"client_secret": "GOCSPX-wrong"}, 401, {"error": "invalid_client", "error_description": "Unauthorized"}),
        (
            {"refresh_token": None},
            400,
            {"error": "invalid_request", "error_description": "Missing required parameter: refresh_token"},
        ),
        (
            {"grant_type": "authorization_code"},
            400,
            {"error": "unsupported_grant_type", "error_description": "Invalid grant_type: authorization_code"},
        ),
    ],
)
def test_google_errors_as_google_sends_them(emulator, overrides, http_status, body):
    status, answer, _elapsed = google_request(emulator, **overrides)
    assert (status, answer) == (http_status, body)
    assert emulator.records("tokens")[0]["error"] == body["error"]


# -- failure modes of the endpoint ---------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, microsoft_status, google_status",
    [
        ("invalid_grant", 200, 400),
        ("invalid_client_secret", 401, 401),
        ("app_not_found", 400, 200),
        ("tenant_not_found", 400, 200),
        ("invalid_scope", 400, 200),
        ("client_not_found", 200, 401),
        ("unauthorized_client", 200, 401),
    ],
)
def test_error_modes_answer_good_credentials_with_that_error(emulator, mode, microsoft_status, google_status):
    emulator.set_oauth(mode)
    microsoft = token_request(emulator, form=microsoft_form())
    google = google_request(emulator)
    assert (microsoft[0], google[0]) == (microsoft_status, google_status)
    for status, body, _elapsed in (microsoft, google):
        if status != 200:
            assert body["error"] == mode or mode in (
                "app_not_found",
                "tenant_not_found",
                "client_not_found",
                "invalid_client_secret",
            )
    records = emulator.records("tokens")
    assert [r["oauth_mode"] for r in records] == [mode, mode]


def test_error_mode_limited_to_one_provider(emulator):
    emulator.set_oauth("invalid_client_secret", providers=["gmail"])
    assert token_request(emulator, form=microsoft_form())[0] == 200
    assert google_request(emulator)[:2] == (401, {"error": "invalid_client", "error_description": "Unauthorized"})


@pytest.mark.parametrize("mode, status", [("http_500", 500), ("http_503", 503)])
def test_http_5xx_modes(emulator, mode, status):
    emulator.set_oauth(mode)
    answer = token_request(emulator, form=microsoft_form())
    assert answer[0] == status and "oauth mode " + mode in answer[1]
    assert emulator.records("tokens")[0]["error"] == "http_%d" % status


def test_slow_mode_delays_the_answer(emulator):
    emulator.set_oauth("slow", delay=1.0)
    status, _body, elapsed = google_request(emulator)
    assert status == 200 and elapsed >= 1.0
    emulator.set_oauth("normal")
    assert google_request(emulator)[2] < 1.0


def test_down_mode_refuses_connections_and_leaves_smtp_up(emulator):
    token = microsoft_token(emulator)
    emulator.set_oauth("down")
    assert emulatorctl.read_status(emulator.state_dir)["https_listening"] is False
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", emulator.https_port), timeout=5)
    # Tokens issued before the outage still work (the IdP is down, not Exchange).
    with connect(emulator, name=OFFICE365_HOST) as client:
        assert auth_xoauth2(client, MAILBOX, token)[0] == 235
    emulator.set_oauth("normal")
    assert token_request(emulator, form=microsoft_form())[0] == 200


def test_unknown_path_and_method(emulator):
    assert token_request(emulator, path="/common/oauth2/authorize")[0] == 404
    assert token_request(emulator, method="GET")[0] == 405


# -- token lifetime and XOAUTH2 ------------------------------------------------------------------


def test_xoauth2_office365_valid_token_and_message_record(emulator):
    token = microsoft_token(emulator)
    with connect(emulator, name=OFFICE365_HOST) as client:
        assert b"XOAUTH2" in client.esmtp_features["auth"].encode()
        assert auth_xoauth2(client, MAILBOX, token) == (235, b"2.7.0 Authentication successful")
        assert send(client, MAILBOX)[0] == 250
    [request] = emulator.records("tokens")
    [attempt] = emulator.records("auth")
    assert (attempt["mechanism"], attempt["username"], attempt["provider"], attempt["success"]) == (
        "XOAUTH2",
        MAILBOX,
        "office365",
        True,
    )
    assert (attempt["token_status"], attempt["token_client_id"]) == ("valid", MS_APP["client_id"])
    assert attempt["token_ref"] == request["token_ref"]
    [message] = emulator.records()
    assert (message["auth_mechanism"], message["username"], message["provider"], message["access"]) == (
        "XOAUTH2",
        MAILBOX,
        "office365",
        "oauth2",
    )
    assert (message["token_status"], message["token_ref"]) == ("valid", request["token_ref"])
    assert message["tls"] == "starttls"
    assert token not in json.dumps(emulator.records("auth") + emulator.records("messages"))


def test_xoauth2_two_step_form(emulator):
    token = microsoft_token(emulator)
    with connect(emulator, name=OFFICE365_HOST) as client:
        assert client.docmd("AUTH", "XOAUTH2") == (334, b"")
        assert client.docmd(xoauth2(MAILBOX, token)) == (235, b"2.7.0 Authentication successful")


def test_xoauth2_gmail_valid_token(emulator):
    token = google_token(emulator)
    with connect(emulator, name=GMAIL_HOST, implicit=True) as client:
        assert auth_xoauth2(client, ACCOUNT, token) == (235, b"2.7.0 Accepted")
        assert send(client, ACCOUNT)[0] == 250
    assert emulator.records()[0]["provider"] == "gmail"


def test_token_lifetime_and_expiry(emulator):
    emulator.set_oauth("normal", token_lifetime=2)
    status, body, _elapsed = token_request(emulator, form=microsoft_form())
    assert (status, body["expires_in"], body["ext_expires_in"]) == (200, 2, 2)
    token = body["access_token"]
    with connect(emulator, name=OFFICE365_HOST) as client:
        assert auth_xoauth2(client, MAILBOX, token)[0] == 235
    time.sleep(2.2)
    with connect(emulator, name=OFFICE365_HOST) as client:
        assert auth_xoauth2(client, MAILBOX, token) == (535, b"5.7.3 Authentication unsuccessful [emulator]")
        assert auth_xoauth2(client, MAILBOX, microsoft_token(emulator))[0] == 235
    statuses = [a["token_status"] for a in emulator.records("auth")]
    assert statuses == ["valid", "expired", "valid"]
    assert emulator.records("auth")[1]["token_expires_in"] <= 0
    # The lifetime stays when the mode changes without naming one.
    emulator.set_oauth("down")
    emulator.set_oauth("normal")
    assert emulatorctl.read_settings(emulator.state_dir, "oauth")["token_lifetime"] == 2


def test_gmail_refuses_a_bad_token_with_the_334_challenge_first(emulator):
    with connect(emulator, name=GMAIL_HOST) as client:
        code, challenge = auth_xoauth2(client, ACCOUNT, "ya29.not-issued-here")
        assert code == 334
        assert json.loads(base64.b64decode(challenge)) == {
            "status": "400",
            "schemes": "Bearer",
            "scope": "https://mail.google.com/",
        }
        code, text = client.docmd("")
        assert code == 535
        lines = text.decode().split("\n")
        assert lines[0] == "5.7.8 Username and Password not accepted. For more information, go to"
        assert lines[1].startswith("5.7.8  https://support.google.com/mail/?p=BadCredentials ")
    [attempt] = emulator.records("auth")
    assert (attempt["token_status"], attempt["success"], attempt["provider"]) == ("unknown", False, None)
    [reply] = emulator.records("replies")
    assert (reply["code"], reply["provider"], reply["token_status"]) == ("535", "gmail", "unknown")


@pytest.mark.parametrize("case", ["unknown", "wrong_user", "foreign", "unregistered_app", "malformed"])
def test_office365_refuses_tokens_it_did_not_issue_for_this_mailbox(emulator, case):
    if case == "unknown":
        user, token = MAILBOX, "eyJ0eXAiOiJKV1QifQ.e30.not-issued-here"
    elif case == "wrong_user":
        user, token = "ceo@contoso.example.test", microsoft_token(emulator)
    elif case == "foreign":
        user, token = MAILBOX, google_token(emulator)
    else:
        extra = OFFICE365["oauth2"]["extra_clients"][0]
        user = MAILBOX
        token = microsoft_token(emulator, client_id=extra["client_id"], client_secret=extra["client_secret"])
    with connect(emulator, name=OFFICE365_HOST) as client:
        if case == "malformed":
            answer = client.docmd("AUTH", "XOAUTH2 " + base64.b64encode(b"user=%s\x01" % MAILBOX.encode()).decode())
        else:
            answer = auth_xoauth2(client, user, token)
        # No 334 challenge from Exchange Online: a plain 535 5.7.3 (also after a good token without
        # mailbox permission).
        assert answer == (535, b"5.7.3 Authentication unsuccessful [emulator]")
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail(MAILBOX, ["rcpt@example.net"], "Subject: x\r\n\r\nx\r\n")
    expected = {
        "unknown": "unknown",
        "wrong_user": "wrong_user",
        "foreign": "foreign",
        "unregistered_app": "wrong_user",
        "malformed": "malformed",
    }[case]
    assert emulator.records("auth")[0]["token_status"] == expected
    assert emulator.records() == []


def test_auth_fail_mode_refuses_a_valid_token(emulator):
    token = microsoft_token(emulator)
    emulator.set_mode("auth_fail", providers=["office365"])
    with connect(emulator, name=OFFICE365_HOST) as client:
        assert auth_xoauth2(client, MAILBOX, token)[0] == 535
    assert emulator.records("auth")[0]["reason"] == "mode auth_fail"


def test_basic_auth_disabled_keeps_xoauth2_working(emulator):
    emulator.set_mode("basic_auth_disabled")
    token = microsoft_token(emulator)
    with connect(emulator, name=OFFICE365_HOST) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            login(client, "office365")
        assert auth_xoauth2(client, MAILBOX, token)[0] == 235
        assert send(client, MAILBOX)[0] == 250
    emulator.set_mode("basic_auth_disabled", at="mail")
    with connect(emulator, name=OFFICE365_HOST) as client:
        assert auth_xoauth2(client, MAILBOX, token)[0] == 235
        assert send(client, MAILBOX)[0] == 250


def test_xoauth2_in_the_clear_is_refused_and_its_user_recorded(emulator):
    client = smtplib.SMTP("127.0.0.1", emulator.starttls_port, timeout=10)
    client.ehlo("client.example.test")
    assert auth_xoauth2(client, MAILBOX, "eyJ.e30.x")[0] == 538
    client.quit()
    [attempt] = emulator.records("auth")
    assert (attempt["mechanism"], attempt["username"], attempt["tls"]) == ("XOAUTH2", MAILBOX, "none")


def test_tokens_survive_a_restart(certs, tmp_path):
    from emulator_harness import Emulator

    first = Emulator(certs, tmp_path)
    try:
        token = microsoft_token(first)
    finally:
        first.stop()
    second = Emulator(certs, tmp_path)
    try:
        with connect(second, name=OFFICE365_HOST) as client:
            assert auth_xoauth2(client, MAILBOX, token)[0] == 235
    finally:
        second.stop()


def test_no_secret_reaches_any_record(emulator):
    microsoft_token(emulator)
    google_token(emulator)
    token_request(emulator, form=microsoft_form(client_secret="typo-" + MS_APP["client_secret"]))
    google_request(emulator, refresh_token=GOOGLE_CLIENT["refresh_token"] + "x")
    stored = stored_text(emulator)
    for secret in (MS_APP["client_secret"], GOOGLE_CLIENT["client_secret"], GOOGLE_CLIENT["refresh_token"]):
        assert secret not in stored
    assert len(emulator.records("tokens")) == 4


def test_control_cli_oauth_and_counters(emulator):
    ctl = [sys.executable, os.path.join(EMULATOR_DIR, "emulatorctl.py"), "--dir", emulator.state_dir]
    result = subprocess.run(
        ctl + ["oauth", "slow", "--delay", "0.5", "--token-lifetime", "20"], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout)["token_lifetime"] == 20 and result.stderr == ""
    assert emulatorctl.read_status(emulator.state_dir)["oauth"]["mode"] == "slow"
    refused = subprocess.run(
        ctl + ["oauth", "down", "--providers", "gmail"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2 and "does not apply" in refused.stderr
    refused = subprocess.run(
        ctl + ["oauth", "tenant_not_found", "--providers", "gmail"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2 and "has no reply for gmail" in refused.stderr
    subprocess.run(ctl + ["oauth", "normal"], capture_output=True, text=True, check=True)
    assert token_request(emulator, form=microsoft_form())[1]["expires_in"] == 20
    counters = json.loads(subprocess.run(ctl + ["counters"], capture_output=True, text=True, check=True).stdout)
    assert counters["tokens"] == {"requests": 1, "issued": 1, "refused": 0}
    assert (
        json.loads(subprocess.run(ctl + ["records", "tokens"], capture_output=True, text=True, check=True).stdout)[0][
            "expires_in"
        ]
        == 20
    )
