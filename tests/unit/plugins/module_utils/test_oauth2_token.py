# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""oauth2_token: configuration, token requests against a real local HTTPS endpoint, the cache and its
lock, the renewal, and the exit mapping from msmtp's real output (captured by tests/oauth2-proof).

Error bodies are the ones Entra ID and Google publish (AADSTS codes, RFC 6749 error fields); every
secret is a fake value. Expectations come from what Postfix must do with each outcome (defer or
bounce), not from the code under test.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import glob
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils import oauth2_token as oauth2
from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils import smtp_servers as servers

SCRIPT = oauth2.__file__
FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "msmtp")
SECRET = "Fk8Q~unitTestSecret.NotReal_0123456789abcd"
REFRESH = "1//0gUnitTestRefreshTokenNotReal-AbCdEf0123"
TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "3c9d2e7f-1a4b-4c8d-b5e6-7f8091a2b3c4"


# --- a real HTTPS token endpoint on 127.0.0.1 -----------------------------------------------------


class TokenEndpoint:
    """An HTTPS server answering every POST with self.answer(path, form) -> (status, body[, delay])."""

    def __init__(self, cert, key):
        self.requests = []
        self.answer = lambda path, form: (200, {"token_type": "Bearer", "expires_in": 3599, "access_token": "tok-1"})
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = dict((k, v[0]) for k, v in parse_qs(self.rfile.read(length).decode()).items())
                endpoint.requests.append({"path": self.path, "form": form, "headers": dict(self.headers)})
                answer = endpoint.answer(self.path, form)
                status, body = answer[:2]
                if len(answer) > 2:
                    time.sleep(answer[2])
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, client_address):
                try:
                    request = context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                ThreadingHTTPServer.finish_request(self, request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "https://127.0.0.1:%d%s" % (self.port, path)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return servers.make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def endpoint(pki):
    server = TokenEndpoint(pki["server_cert"], pki["server_key"])
    yield server
    server.stop()


def microsoft(tmp_path, endpoint=None, pki=None, **overrides):
    raw = {
        "provider": "microsoft",
        "tenant": TENANT,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "username": "relay@contoso.com",
        "cache_file": str(tmp_path / "cache" / "office365.json"),
        "ca_file": pki["ca"] if pki else "/etc/ssl/certs/ca-certificates.crt",
        "helo_name": "relay.test",
    }
    if endpoint is not None:
        raw["token_url"] = endpoint.url("/%s/oauth2/v2.0/token" % TENANT)
    raw.update(overrides)
    return oauth2.validate_config(raw)


def google(tmp_path, endpoint=None, pki=None, **overrides):
    raw = {
        "provider": "google",
        "client_id": "123-unit.apps.googleusercontent.com",
        "client_secret": "GOCSPX-unitNotReal01",
        "refresh_token": REFRESH,
        "username": "relay@gmail.example",
        "cache_file": str(tmp_path / "cache" / "gmail.json"),
        "ca_file": pki["ca"] if pki else "/etc/ssl/certs/ca-certificates.crt",
        "helo_name": "relay.test",
    }
    if endpoint is not None:
        raw["token_url"] = endpoint.url("/token")
    raw.update(overrides)
    return oauth2.validate_config(raw)


def aad_error(error, code, text):
    """An Entra ID error body as the endpoint sends it (trace lines after the first)."""
    return {
        "error": error,
        "error_codes": [code],
        "timestamp": "2026-12-01 10:00:00Z",
        "error_description": "AADSTS%d: %s\r\nTrace ID: 6f6c4645-0202-4486-b625-fa957dfc4700\r\n"
        "Correlation ID: 5fc87507-4086-4e77-b415-cee677eb232e\r\nTimestamp: 2026-12-01 "
        "10:00:00Z" % (code, text),
        "trace_id": "6f6c4645-0202-4486-b625-fa957dfc4700",
        "correlation_id": "5fc87507-4086-4e77-b415-cee677eb232e",
        "error_uri": "https://login.microsoftonline.com/error?code=%d" % code,
    }


# --- configuration --------------------------------------------------------------------------------


def test_microsoft_defaults_are_exchange_online(tmp_path):
    config = microsoft(tmp_path, token_url=None)
    assert config["token_url"] == "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    assert config["scope"] == "https://outlook.office365.com/.default"
    assert (config["smtp_host"], config["smtp_port"], config["tls"]) == ("smtp.office365.com", 587, "starttls")
    assert config["lock_timeout"] == config["token_timeout"] + 10


def test_google_defaults_and_implicit_tls_on_465(tmp_path):
    config = google(tmp_path, smtp_port=465)
    assert config["token_url"] == "https://oauth2.googleapis.com/token"
    assert config["scope"] is None
    assert (config["smtp_host"], config["smtp_port"], config["tls"]) == ("smtp.gmail.com", 465, "implicit")


def test_token_url_override_for_national_clouds(tmp_path):
    config = microsoft(tmp_path, token_url="https://login.microsoftonline.us/contoso.onmicrosoft.us/oauth2/v2.0/token")
    assert config["token_url"].startswith("https://login.microsoftonline.us/")


@pytest.mark.parametrize(
    "overrides, option",
    [
        ({"client_secret": None}, "client_secret"),
        ({"tenant": None}, "tenant"),
        ({"username": None}, "username"),
        ({"username": "not-an-address"}, "username"),
        ({"tenant": "contoso/../evil"}, "tenant"),
        ({"provider": "yahoo"}, "provider"),
        ({"tls": "none"}, "tls"),
        ({"token_url": "http://login.microsoftonline.com/x/oauth2/v2.0/token"}, "token_url"),
        ({"token_url": "https://user:pw@login.example/token"}, "token_url"),
        ({"smtp_port": 0}, "smtp_port"),
        ({"smtp_port": "587"}, "smtp_port"),
        ({"token_timeout": True}, "token_timeout"),
        ({"proxy": "http://proxy:3128"}, "proxy"),
        ({"refresh_token": REFRESH}, "refresh_token"),
        ({"cache_file": "relative.json"}, "cache_file"),
        ({"smtp_hots": "typo"}, "smtp_hots"),
    ],
)
def test_bad_configuration_names_the_option(tmp_path, overrides, option):
    with pytest.raises(oauth2.ConfigError) as caught:
        microsoft(tmp_path, **overrides)
    assert caught.value.option == option


@pytest.mark.parametrize("bad_secret", [SECRET + "\n", "tab\tinside-" + SECRET])
def test_a_rejected_secret_is_never_quoted(tmp_path, bad_secret):
    with pytest.raises(oauth2.ConfigError) as caught:
        microsoft(tmp_path, client_secret=bad_secret)
    assert caught.value.option == "client_secret"
    assert SECRET not in str(caught.value)


def write_config(path, raw, mode=0o640):
    path.write_text(json.dumps(raw), encoding="utf-8")
    path.chmod(mode)
    return str(path)


def raw_microsoft(tmp_path, **overrides):
    raw = {
        "provider": "microsoft",
        "tenant": TENANT,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "username": "relay@contoso.com",
        "cache_file": str(tmp_path / "cache" / "office365.json"),
        "ca_file": "/etc/ssl/certs/ca-certificates.crt",
        "helo_name": "relay.test",
    }
    raw.update(overrides)
    return raw


@pytest.mark.parametrize(
    "mode, accepted", [(0o600, True), (0o640, True), (0o644, False), (0o660, False), (0o604, False)]
)
def test_config_file_must_be_private(tmp_path, mode, accepted):
    path = write_config(tmp_path / "office365.json", raw_microsoft(tmp_path), mode)
    if accepted:
        assert oauth2.load_config(path)["client_secret"] == SECRET
    else:
        with pytest.raises(oauth2.ConfigError) as caught:
            oauth2.load_config(path)
        assert "mode" in str(caught.value) and SECRET not in str(caught.value)


def test_config_owned_by_someone_else_is_refused(tmp_path):
    path = write_config(tmp_path / "office365.json", raw_microsoft(tmp_path), 0o600)
    real = os.stat(path)
    foreign = os.stat_result(
        (
            real.st_mode,
            real.st_ino,
            real.st_dev,
            real.st_nlink,
            4242,
            real.st_gid,
            real.st_size,
            real.st_atime,
            real.st_mtime,
            real.st_ctime,
        )
    )
    with pytest.raises(oauth2.ConfigError) as caught:
        oauth2.check_config_mode(path, foreign, euid=1000)
    assert "uid 4242" in str(caught.value)
    oauth2.check_config_mode(path, real, euid=real.st_uid)  # its owner may


def test_config_file_names_the_default_cache(tmp_path):
    raw = raw_microsoft(tmp_path)
    del raw["cache_file"]
    config = oauth2.load_config(write_config(tmp_path / "sales.json", raw))
    assert config["cache_file"] == "/var/cache/smarthost-postfix/oauth2/sales.json"


def test_invalid_json_names_the_file_without_content(tmp_path):
    path = tmp_path / "office365.json"
    path.write_text('{"client_secret": "%s",' % SECRET, encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(oauth2.ConfigError) as caught:
        oauth2.load_config(str(path))
    assert str(path) in str(caught.value) and SECRET not in str(caught.value)


# --- token requests over real HTTPS ---------------------------------------------------------------


def test_microsoft_client_credentials_request(tmp_path, endpoint, pki):
    endpoint.answer = lambda path, form: (
        200,
        {
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": "eyJ0eXAiOiJKV1Qi.eyJhdWQiOiJodHRwczovL291dGxvb2sub2ZmaWNlMzY1LmNvbSJ9.sig",
        },
    )
    record = oauth2.request_token(microsoft(tmp_path, endpoint, pki), now=1000.0)
    assert record == {
        "access_token": "eyJ0eXAiOiJKV1Qi.eyJhdWQiOiJodHRwczovL291dGxvb2sub2ZmaWNlMzY1LmNvbSJ9.sig",
        "obtained_at": 1000.0,
        "expires_at": 4599.0,
        "lifetime": 3599,
    }
    request = endpoint.requests[0]
    assert request["path"] == "/%s/oauth2/v2.0/token" % TENANT
    assert request["form"] == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "scope": "https://outlook.office365.com/.default",
    }
    assert request["headers"]["Content-Type"] == "application/x-www-form-urlencoded"


def test_google_refresh_token_request(tmp_path, endpoint, pki):
    endpoint.answer = lambda path, form: (
        200,
        {
            "access_token": "ya29.a0unit",
            "expires_in": 3599,
            "scope": "https://mail.google.com/",
            "token_type": "Bearer",
        },
    )
    record = oauth2.request_token(google(tmp_path, endpoint, pki))
    assert record["access_token"] == "ya29.a0unit" and record["lifetime"] == 3599
    assert endpoint.requests[0]["form"] == {
        "grant_type": "refresh_token",
        "client_id": "123-unit.apps.googleusercontent.com",
        "client_secret": "GOCSPX-unitNotReal01",
        "refresh_token": REFRESH,
    }


def test_expires_in_as_a_string_is_accepted(tmp_path, endpoint, pki):
    endpoint.answer = lambda path, form: (200, {"token_type": "Bearer", "expires_in": "3599", "access_token": "x"})
    assert oauth2.request_token(microsoft(tmp_path, endpoint, pki))["lifetime"] == 3599


MICROSOFT_ERRORS = [
    (
        401,
        aad_error(
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the "
            "request is "
            "the client secret value, not the client secret ID, for a secret added "
            "to app "
            "'%s'." % CLIENT_ID,
        ),
        "invalid_client_secret",
    ),
    (
        401,
        aad_error("invalid_client", 7000222, "The provided client secret keys for app '%s' are expired." % CLIENT_ID),
        "client_secret_expired",
    ),
    (
        400,
        aad_error(
            "unauthorized_client",
            700016,
            "Application with identifier '%s' was not found in the directory "
            "'Contoso'. This can happen if the application has not been "
            "installed by the "
            "administrator of the tenant." % CLIENT_ID,
        ),
        "application_not_found",
    ),
    (
        400,
        aad_error(
            "invalid_tenant",
            90002,
            "Tenant 'contoso.onmicrosoft.com' not found. Check to make sure you have "
            "the "
            "correct tenant ID and are signing into the correct cloud.",
        ),
        "tenant_not_found",
    ),
    (
        400,
        aad_error(
            "invalid_request",
            90002,
            "Tenant 'contoso.onmicrosoft.com' not found. This may happen if there "
            "are no "
            "active subscriptions for the tenant.",
        ),
        "tenant_not_found",
    ),
    (
        400,
        aad_error("invalid_scope", 1002012, "The provided value for scope https://graph.microsoft.com is not valid."),
        "invalid_scope",
    ),
]
GOOGLE_ERRORS = [
    (400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, "invalid_grant"),
    (400, {"error": "invalid_grant", "error_description": "Bad Request"}, "invalid_grant"),
    (401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}, "invalid_client"),
    (401, {"error": "invalid_client", "error_description": "Unauthorized"}, "invalid_client"),
    (400, {"error": "unauthorized_client", "error_description": "Unauthorized"}, "unauthorized_client"),
]
SERVER_ERRORS = [
    (503, b"<html><body><h1>Service Unavailable</h1></body></html>", "token_endpoint_error"),
    (
        500,
        {"error": "server_error", "error_description": "AADSTS50000: There was an error issuing a token."},
        "token_endpoint_error",
    ),
    (
        429,
        {
            "error": "temporarily_unavailable",
            "error_description": "AADSTS50196: The server terminated an operation "
            "because it encountered a client request loop.",
        },
        "token_endpoint_error",
    ),
    (
        400,
        {
            "error": "invalid_request",
            "error_description": "AADSTS900144: The request body must contain the following parameter: 'grant_type'.",
        },
        "token_request_rejected",
    ),
    (404, b"Not Found", "token_request_rejected"),
]


@pytest.mark.parametrize("status, body, cause", MICROSOFT_ERRORS + GOOGLE_ERRORS + SERVER_ERRORS)
def test_endpoint_errors_are_classified(tmp_path, endpoint, pki, status, body, cause):
    endpoint.answer = lambda path, form: (status, body)
    with pytest.raises(oauth2.TokenError) as caught:
        oauth2.request_token(microsoft(tmp_path, endpoint, pki))
    assert caught.value.cause == cause
    assert cause in oauth2.CAUSES
    assert "HTTP %d" % status in caught.value.detail
    assert "Trace ID" not in caught.value.detail  # first line only
    assert SECRET not in str(caught.value)


def test_the_provider_text_is_kept_verbatim_for_diagnosis(tmp_path, endpoint, pki):
    endpoint.answer = lambda path, form: MICROSOFT_ERRORS[0][:2]
    with pytest.raises(oauth2.TokenError) as caught:
        oauth2.request_token(microsoft(tmp_path, endpoint, pki))
    assert caught.value.detail.startswith("HTTP 401 invalid_client: AADSTS7000215: Invalid client secret provided.")


def test_a_secret_echoed_by_the_endpoint_is_masked(tmp_path, endpoint, pki):
    endpoint.answer = lambda path, form: (
        400,
        {"error": "invalid_request", "error_description": "bad client_secret %s" % form["client_secret"]},
    )
    with pytest.raises(oauth2.TokenError) as caught:
        oauth2.request_token(microsoft(tmp_path, endpoint, pki))
    assert SECRET not in str(caught.value) and "********" in caught.value.detail


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"<html>proxy login</html>", "not JSON"),
        ({"token_type": "Bearer", "expires_in": 3599}, "no access_token"),
        ({"token_type": "mac", "expires_in": 3599, "access_token": "x"}, "not Bearer"),
        ({"token_type": "Bearer", "expires_in": "soon", "access_token": "x"}, "not a number"),
        ({"token_type": "Bearer", "expires_in": 0, "access_token": "x"}, "expires_in is 0"),
    ],
)
def test_unusable_success_answers(tmp_path, endpoint, pki, body, reason):
    endpoint.answer = lambda path, form: (200, body)
    with pytest.raises(oauth2.TokenError) as caught:
        oauth2.request_token(microsoft(tmp_path, endpoint, pki))
    assert caught.value.cause == "token_response_invalid" and reason in caught.value.detail


def test_connection_refused(tmp_path, pki):
    port = servers.free_port()
    config = microsoft(tmp_path, pki=pki, token_url="https://127.0.0.1:%d/t/oauth2/v2.0/token" % port)
    with pytest.raises(oauth2.TokenError) as caught:
        oauth2.request_token(config)
    assert caught.value.cause == "token_endpoint_unreachable" and "refused" in caught.value.detail.lower()


def test_silent_endpoint_times_out(tmp_path, pki):
    silent = servers.SilentListener()
    config = microsoft(tmp_path, pki=pki, token_timeout=1, token_url="https://127.0.0.1:%d/t" % silent.port)
    started = time.monotonic()
    with pytest.raises(oauth2.TokenError) as caught:
        oauth2.request_token(config)
    assert caught.value.cause == "token_endpoint_timeout"
    assert time.monotonic() - started < 5


def test_slow_answer_times_out(tmp_path, endpoint, pki):
    endpoint.answer = lambda path, form: (200, {"token_type": "Bearer", "expires_in": 3599, "access_token": "x"}, 3)
    with pytest.raises(oauth2.TokenError) as caught:
        oauth2.request_token(microsoft(tmp_path, endpoint, pki, token_timeout=1))
    assert caught.value.cause == "token_endpoint_timeout"


@pytest.mark.parametrize("cert", ["rogue", "wrong_name"])
def test_untrusted_endpoint_certificate(tmp_path, pki, cert):
    server = TokenEndpoint(pki[cert + "_cert"], pki[cert + "_key"])
    try:
        with pytest.raises(oauth2.TokenError) as caught:
            oauth2.request_token(microsoft(tmp_path, server, pki))
        assert caught.value.cause == "token_endpoint_certificate_untrusted"
        assert server.requests == []  # the secret was never sent
    finally:
        server.stop()


def test_unresolvable_endpoint(tmp_path, pki):
    config = microsoft(
        tmp_path, pki=pki, token_url="https://login.nonexistent.invalid/t/oauth2/v2.0/token", token_timeout=5
    )
    with pytest.raises(oauth2.TokenError) as caught:
        oauth2.request_token(config)
    assert caught.value.cause == "token_endpoint_unreachable"


def test_https_proxy_is_used_with_connect(tmp_path, endpoint, pki):
    """A CONNECT proxy on 127.0.0.1 that tunnels to the endpoint and records the target."""
    targets = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def tunnel():
        client = listener.accept()[0]
        request = b""
        while b"\r\n\r\n" not in request:
            request += client.recv(4096)
        targets.append(request.split(b"\r\n")[0].decode())
        upstream = socket.create_connection(("127.0.0.1", endpoint.port))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        pipes = [
            threading.Thread(target=_pump, args=(client, upstream)),
            threading.Thread(target=_pump, args=(upstream, client)),
        ]
        for pipe in pipes:
            pipe.start()
        for pipe in pipes:
            pipe.join(10)

    thread = threading.Thread(target=tunnel, daemon=True)
    thread.start()
    config = microsoft(tmp_path, endpoint, pki, proxy="127.0.0.1:%d" % listener.getsockname()[1])
    assert oauth2.request_token(config)["access_token"] == "tok-1"
    assert [target.rsplit(" ", 1)[0] for target in targets] == [
        "CONNECT 127.0.0.1:%d" % endpoint.port
    ]  # HTTP/1.0, 1.1 in 3.13
    listener.close()


def _pump(source, target):
    with contextlib.suppress(OSError):
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def test_xoauth2_initial_response_is_the_published_format():
    # Google's example: user=someuser@example.com^Aauth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg^A^A
    response = oauth2.xoauth2_initial_response("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
    assert response == (
        "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52"
        "YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
    )


# --- cache, lock and expiry -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "lifetime, margin", [(3600, 360), (3599, 359.9), (5400, 540), (1000, 300), (600, 300), (20, 10)]
)
def test_refresh_margin(lifetime, margin):
    assert oauth2.refresh_margin(lifetime) == pytest.approx(margin)


def record(obtained, lifetime, token="cached"):
    return {"access_token": token, "obtained_at": obtained, "expires_at": obtained + lifetime, "lifetime": lifetime}


@pytest.mark.parametrize(
    "age, phase",
    [(0, "fresh"), (3239, "fresh"), (3241, "refresh"), (3539, "refresh"), (3541, "expired"), (4000, "expired")],
)
def test_token_phase_for_an_hour_token(age, phase):
    assert oauth2.token_phase(record(0, 3600), age) == phase


class Fetcher:
    """Stands in for the endpoint in the cache tests (the HTTP path is tested above, for real)."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self, config):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_fresh_cached_token_is_reused_without_a_request(tmp_path):
    config = microsoft(tmp_path)
    fetch = Fetcher(record(1000, 3600, "first"))
    assert oauth2.get_token(config, clock=lambda: 1000, fetch=fetch)["access_token"] == "first"
    assert oauth2.get_token(config, clock=lambda: 4000, fetch=fetch)["access_token"] == "first"
    assert fetch.calls == 1


def test_token_is_renewed_inside_the_margin(tmp_path):
    config = microsoft(tmp_path)
    fetch = Fetcher(record(1000, 3600, "first"), record(4300, 3600, "second"))
    oauth2.get_token(config, clock=lambda: 1000, fetch=fetch)
    assert oauth2.get_token(config, clock=lambda: 4300, fetch=fetch)["access_token"] == "second"


def test_endpoint_failure_falls_back_to_a_still_valid_token(tmp_path):
    config = microsoft(tmp_path)
    down = oauth2.TokenError("token_endpoint_unreachable", "login.microsoftonline.com: Connection refused")
    fetch = Fetcher(record(1000, 3600, "first"), down)
    oauth2.get_token(config, clock=lambda: 1000, fetch=fetch)
    assert oauth2.get_token(config, clock=lambda: 4400, fetch=fetch)["access_token"] == "first"
    assert oauth2.read_cache(config["cache_file"])["failure"]["cause"] == "token_endpoint_unreachable"


def test_endpoint_failure_with_an_expired_token_raises_its_cause(tmp_path):
    config = microsoft(tmp_path)
    down = oauth2.TokenError("invalid_grant", "HTTP 400 invalid_grant: Token has been expired or revoked.")
    fetch = Fetcher(record(1000, 3600, "first"), down)
    oauth2.get_token(config, clock=lambda: 1000, fetch=fetch)
    with pytest.raises(oauth2.TokenError) as caught:
        oauth2.get_token(config, clock=lambda: 4570, fetch=fetch)
    assert caught.value.cause == "invalid_grant"


def test_a_recent_failure_is_not_retried_within_the_hold(tmp_path):
    config = microsoft(tmp_path, failure_hold=10)
    down = oauth2.TokenError("token_endpoint_unreachable", "refused")
    fetch = Fetcher(down, down, record(1011, 3600, "back"))
    for now in (1000, 1005, 1009):
        with pytest.raises(oauth2.TokenError):
            oauth2.get_token(config, clock=lambda: now, fetch=fetch)
    assert fetch.calls == 1
    with pytest.raises(oauth2.TokenError) as caught:
        oauth2.get_token(config, clock=lambda: 1010.5, fetch=fetch)
    assert fetch.calls == 2 and "last attempt" not in caught.value.detail
    assert oauth2.get_token(config, clock=lambda: 1021, fetch=fetch)["access_token"] == "back"


def test_a_changed_secret_fetches_a_new_token(tmp_path):
    fetch = Fetcher(record(1000, 3600, "old-secret"), record(1001, 3600, "new-secret"))
    oauth2.get_token(microsoft(tmp_path), clock=lambda: 1000, fetch=fetch)
    rotated = microsoft(tmp_path, client_secret="Zz9Q~rotatedSecret.NotReal_9876543210zyxw")
    assert oauth2.get_token(rotated, clock=lambda: 1001, fetch=fetch)["access_token"] == "new-secret"


@pytest.mark.parametrize(
    "content", ["", '{"version": 1, "token": ', "[1, 2]", '{"identity": "x", "token": {"access_token": 1}}']
)
def test_a_corrupt_cache_is_refetched(tmp_path, content):
    config = microsoft(tmp_path)
    os.makedirs(os.path.dirname(config["cache_file"]))
    with open(config["cache_file"], "w") as handle:
        handle.write(content)
    fetch = Fetcher(record(1000, 3600, "new"))
    assert oauth2.get_token(config, clock=lambda: 1000, fetch=fetch)["access_token"] == "new"


def test_cache_is_private_and_written_atomically(tmp_path):
    config = microsoft(tmp_path)
    oauth2.get_token(config, clock=lambda: 1000, fetch=Fetcher(record(1000, 3600)))
    directory = os.path.dirname(config["cache_file"])
    assert stat.S_IMODE(os.stat(config["cache_file"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert sorted(os.listdir(directory)) == ["office365.json", "office365.json.lock"]  # no temporary left behind


def test_lock_timeout_is_a_named_cause(tmp_path):
    config = microsoft(tmp_path, lock_timeout=1)
    os.makedirs(os.path.dirname(config["cache_file"]))
    with open(config["cache_file"] + ".lock", "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(oauth2.TokenError) as caught:
            oauth2.get_token(config, clock=lambda: 1000, fetch=Fetcher(record(1000, 3600)))
    assert caught.value.cause == "token_lock_timeout"


def test_concurrent_token_commands_fetch_one_token(tmp_path, endpoint, pki):
    """Eight real `token` processes at once against a slow endpoint: one request, one token for all."""
    endpoint.answer = lambda path, form: (
        200,
        {"token_type": "Bearer", "expires_in": 3599, "access_token": "shared"},
        1,
    )
    path = write_config(
        tmp_path / "office365.json",
        raw_microsoft(tmp_path, ca_file=pki["ca"], token_url=endpoint.url("/t/oauth2/v2.0/token")),
        0o600,
    )
    processes = [
        subprocess.Popen(
            [sys.executable, SCRIPT, "token", "--config", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for unused in range(8)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0] * 8, outputs
    assert [out.decode() for out, unused in outputs] == ["shared\n"] * 8
    assert len(endpoint.requests) == 1


def test_forget_token_drops_only_the_refused_token(tmp_path):
    config = microsoft(tmp_path)
    oauth2.get_token(config, clock=lambda: 1000, fetch=Fetcher(record(1000, 3600, "current")))
    oauth2.forget_token(config, "some-older-token")
    assert oauth2.cached_token(oauth2.read_cache(config["cache_file"]), oauth2.cache_identity(config)) is not None
    oauth2.forget_token(config, "current")
    assert oauth2.cached_token(oauth2.read_cache(config["cache_file"]), oauth2.cache_identity(config)) is None


# --- the command line: token and renew ------------------------------------------------------------


def run_script(*args, stdin=b""):
    result = subprocess.run(
        [sys.executable, SCRIPT] + list(args),
        input=stdin,
        capture_output=True,
        check=False,
        timeout=60,
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_token_command_prints_only_the_token(tmp_path, endpoint, pki):
    path = write_config(
        tmp_path / "office365.json",
        raw_microsoft(tmp_path, ca_file=pki["ca"], token_url=endpoint.url("/t/oauth2/v2.0/token")),
    )
    assert run_script("token", "--config", path) == (0, "tok-1\n", "")


def test_token_command_failure_is_one_line_without_the_secret(tmp_path, endpoint, pki):
    endpoint.answer = lambda path, form: MICROSOFT_ERRORS[0][:2]
    path = write_config(
        tmp_path / "office365.json",
        raw_microsoft(tmp_path, ca_file=pki["ca"], token_url=endpoint.url("/t/oauth2/v2.0/token")),
    )
    code, out, err = run_script("token", "--config", path)
    assert (code, out) == (75, "")
    assert err.count("\n") == 1 and "invalid_client_secret" in err and "AADSTS7000215" in err and SECRET not in err


def test_renew_is_due_after_half_the_lifetime():
    assert oauth2.renew_due(None, 0)
    assert not oauth2.renew_due(record(1000, 3600), 2799)
    assert oauth2.renew_due(record(1000, 3600), 2800)


def test_renew_command(tmp_path, endpoint, pki):
    path = write_config(
        tmp_path / "office365.json",
        raw_microsoft(tmp_path, ca_file=pki["ca"], token_url=endpoint.url("/t/oauth2/v2.0/token")),
    )
    code, out, unused = run_script("renew", "--config", path)
    assert code == 0 and "renewed" in out
    code, out, unused = run_script("renew", "--config", path)
    assert code == 0 and "not due" in out and len(endpoint.requests) == 1
    endpoint.answer = lambda p, form: (503, b"down")
    code, out, err = run_script("renew", "--config", path, "--force")
    assert code == 75 and out == ""
    assert "renew failed: token_endpoint_error" in err and "valid for" in err  # the old token still serves
    cache = oauth2.read_cache(json.load(open(path))["cache_file"])
    assert cache["token"]["access_token"] == "tok-1" and cache["failure"]["cause"] == "token_endpoint_error"


def test_renew_with_a_broken_config_exits_ex_config(tmp_path):
    path = write_config(tmp_path / "office365.json", raw_microsoft(tmp_path, client_secret=None))
    code, unused, err = run_script("renew", "--config", path)
    assert code == 78 and "client_secret: required" in err


# --- msmtp: configuration, argv, addresses --------------------------------------------------------


def test_msmtp_configuration_verifies_tls_and_uses_xoauth2(tmp_path):
    config = microsoft(tmp_path)
    text = oauth2.msmtp_config_text(
        config,
        oauth2.token_command(
            "/etc/smarthost-postfix/oauth2/office365.json",
            "/usr/libexec/smarthost-postfix/oauth2-token",
            "/usr/bin/python3",
        ),
    )
    lines = text.splitlines()
    for line in (
        'host "smtp.office365.com"',
        "port 587",
        "tls on",
        "tls_starttls on",
        "tls_certcheck on",
        'tls_trust_file "/etc/ssl/certs/ca-certificates.crt"',
        "auth xoauth2",
        'user "relay@contoso.com"',
        'passwordeval "/usr/bin/python3 -I /usr/libexec/smarthost-postfix/oauth2-token token --config '
        '/etc/smarthost-postfix/oauth2/office365.json"',
        "set_from_header off",
        "set_date_header off",
        "set_msgid_header off",
    ):
        assert line in lines
    assert SECRET not in text


def test_msmtp_quoting():
    assert oauth2.msmtp_quote('a "b" \\c') == '"a \\"b\\" \\\\c"'
    assert oauth2.token_command("/etc/o a/x's.json", "/s", "/py") == "/py -I /s token --config '/etc/o a/x'\\''s.json'"


def test_msmtp_configuration_is_rewritten_only_when_it_changes(tmp_path):
    config = microsoft(tmp_path)
    os.makedirs(os.path.dirname(config["cache_file"]))
    path = oauth2.ensure_msmtp_config(config, "cmd")
    first = os.stat(path)
    assert oauth2.ensure_msmtp_config(config, "cmd") == path and os.stat(path).st_ino == first.st_ino
    oauth2.ensure_msmtp_config(config, "other")
    assert os.stat(path).st_ino != first.st_ino and stat.S_IMODE(os.stat(path).st_mode) == 0o600


# Measured with msmtp 1.8.23 and 1.8.28 (tests/oauth2-proof): these reach the server unchanged...
PASSED_UNCHANGED = [
    "a..b@x.org",
    ".a@x.org",
    "a%b@x.org",
    "a!b@x.org",
    "a{b}@x.org",
    "a/b@x.org",
    "a=b@x.org",
    "o'brien+t@x.org",
    "a`b@x.org",
    "a|b@x.org",
    "a~b@x.org",
    "a$b@x.org",
    "a&b@x.org",
    "a*b@x.org",
    "a^b@x.org",
    "jörg@bücher.de",
    "a@[192.0.2.1]",
    "-lead@x.org",
    "a[b]@x.org",
    "a\\b@x.org",
    "postmaster",
]
# ...and these are altered: '"john doe"@x' -> '@x', 'john doe@x' -> 'doe@x', 'a:b@x' -> 'b@x', 'a(c)@x' -> 'a@x'.
ALTERED = [
    '"john doe"@example.org',
    "john doe@example.org",
    "a:b@x.org",
    "a;b@x.org",
    "a(comment)@x.org",
    "<angle@x.org>",
    "Name <n@x.org>",
    "a,b@x.org",
    '"x\\"y"@x.org',
    "a@[IPv6:2001:db8::1]",
    "",
]


@pytest.mark.parametrize("address", PASSED_UNCHANGED)
def test_addresses_msmtp_passes_unchanged(address):
    assert oauth2.address_passes_unchanged(address)


@pytest.mark.parametrize("address", ALTERED)
def test_addresses_msmtp_would_alter(address):
    assert not oauth2.address_passes_unchanged(address)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--config", "c.json", "-f", "", "--", "a@x"], ("c.json", "", ["a@x"])),
        (["--config", "c.json", "-f", "-dash@x", "--", "-b@x", "c@x"], ("c.json", "-dash@x", ["-b@x", "c@x"])),
        (["-f", "s@x", "--config", "c.json", "--"], ("c.json", "s@x", [])),
    ],
)
def test_deliver_arguments(argv, expected):
    assert oauth2.parse_deliver_arguments(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--config", "c.json", "-f", "s@x", "a@x"],
        ["--config", "c.json", "--", "a@x"],
        ["--config"],
        ["-x", "y", "--"],
    ],
)
def test_bad_deliver_arguments_defer(argv, capsys):
    assert oauth2.main(["deliver"] + argv) == 75
    out = capsys.readouterr().out
    assert out.startswith("4.3.5 smarthost-oauth2 config_invalid: argv: usage:") and out.count("\n") == 1


def test_deliver_with_a_broken_config_defers(tmp_path, capsys):
    path = write_config(tmp_path / "office365.json", raw_microsoft(tmp_path), 0o644)
    assert oauth2.main(["deliver", "--config", path, "-f", "s@x", "--", "a@x"]) == 75
    out = capsys.readouterr().out
    assert out.startswith("4.3.5 smarthost-oauth2 config_invalid:") and SECRET not in out


def test_deliver_refuses_an_address_msmtp_would_alter_before_any_token(tmp_path, capsys, endpoint, pki):
    path = write_config(
        tmp_path / "office365.json",
        raw_microsoft(tmp_path, ca_file=pki["ca"], token_url=endpoint.url("/t/oauth2/v2.0/token")),
    )
    assert oauth2.main(["deliver", "--config", path, "-f", "s@x", "--", '"john doe"@example.org']) == oauth2.EX_DATAERR
    assert capsys.readouterr().out.startswith("5.1.3 smarthost-oauth2 recipient_syntax_unsupported:")
    assert endpoint.requests == []


def test_deliver_defers_when_no_token_can_be_had(tmp_path, capsys, endpoint, pki):
    endpoint.answer = lambda path, form: MICROSOFT_ERRORS[2][:2]
    path = write_config(
        tmp_path / "office365.json",
        raw_microsoft(tmp_path, ca_file=pki["ca"], token_url=endpoint.url("/t/oauth2/v2.0/token")),
    )
    assert oauth2.main(["deliver", "--config", path, "-f", "s@x", "--", "a@x"]) == 75
    out = capsys.readouterr().out
    assert out.startswith("4.7.0 smarthost-oauth2 application_not_found: HTTP 400 unauthorized_client: AADSTS700016:")


# --- the exit mapping, from msmtp's real output ---------------------------------------------------

# What Postfix must do with each case the proof captured: (exit status, cause).
EXPECTED = {
    "sent": (0, "sent"),
    "535 5.7.3 after a token": (75, "xoauth2_rejected"),
    "gmail 334 then 535-5.7.8": (75, "xoauth2_rejected"),
    "550 5.4.5 at MAIL": (75, "sending_quota_exceeded"),
    "432 4.3.2 at MAIL": (75, "provider_temporary"),
    "550 5.7.1 at RCPT": (69, "provider_refused"),
    "451 4.7.500 at DATA": (75, "provider_temporary"),
    "554 5.2.252 at DATA": (69, "provider_refused"),
    "554 5.2.0 quota at DATA": (75, "sending_quota_exceeded"),
    "passwordeval fails": (75, "token_unavailable"),
    "connection refused": (75, "smtp_unreachable"),
    "untrusted certificate": (75, "smtp_certificate_untrusted"),
    "name mismatch": (75, "smtp_certificate_untrusted"),
    "unknown host": (75, "smtp_dns_failure"),
    "silent server (timeout)": (75, "smtp_timeout"),
    "no STARTTLS offered": (75, "smtp_tls_failed"),
    "missing trust file": (75, "msmtp_config_error"),
}


def captured_cases():
    cases = []
    for path in sorted(glob.glob(os.path.join(FIXTURES, "msmtp-*.json"))):
        with open(path, encoding="utf-8") as handle:
            for row in json.load(handle):
                cases.append(pytest.param(row, id="%s: %s" % (os.path.basename(path)[:-5], row["case"])))
    return cases


def test_fixtures_cover_both_debian_releases():
    names = sorted(os.path.basename(path) for path in glob.glob(os.path.join(FIXTURES, "msmtp-*.json")))
    assert names == ["msmtp-1.8.23.json", "msmtp-1.8.28.json"]


@pytest.mark.parametrize("row", captured_cases())
def test_exit_mapping_from_real_msmtp_output(row):
    outcome = oauth2.classify_msmtp(row["msmtp_exit"], "\n".join(row["msmtp_stderr"]), row.get("msmtp_stdout", ""))
    assert (outcome.status, outcome.cause) == EXPECTED[row["case"]]
    line = outcome.line()
    assert "\n" not in line
    if outcome.status == 75:
        assert line.startswith("4.")  # pipe(8) lets a leading status code override the exit status
    elif outcome.status == 69:
        assert line.startswith("5.")
    for reply in [text.split("server message: ", 1)[1] for text in row["msmtp_stderr"] if "server message: " in text][
        :1
    ]:
        assert reply.split()[0] in line  # the provider's reply code stays in the text for log diagnosis


def test_msmtp_exit_status_alone_would_bounce():
    """Why the mapping reads the reply: msmtp exits 69 (bounce) for a 4xx at DATA and 65 for a quota at MAIL."""
    rows = dict((row.values[0]["case"], row.values[0]) for row in captured_cases())
    assert rows["451 4.7.500 at DATA"]["msmtp_exit"] == 69
    assert rows["550 5.4.5 at MAIL"]["msmtp_exit"] == 65
    assert rows["535 5.7.3 after a token"]["msmtp_exit"] == 77
    assert rows["passwordeval fails"]["msmtp_exit"] == 78


@pytest.mark.parametrize(
    "stderr, status, cause, dsn",
    [
        (
            "msmtp: envelope from address s@x not accepted by the server\nmsmtp: server message: 550 5.2.252 Sender "
            "throttled due to "
            "continuous send as denied errors.\nmsmtp: could not send mail (account a from f)",
            75,
            "sender_throttled",
            "4.2.252",
        ),
        (
            "msmtp: envelope from address s@x not accepted by the server\nmsmtp: server message: 530 5.7.57 Client not "
            "authenticated "
            "to send mail.\nmsmtp: could not send mail (account a from f)",
            75,
            "not_authenticated",
            "4.7.57",
        ),
        (
            "msmtp: authentication failed (method XOAUTH2)\nmsmtp: server message: 535 5.7.139 Authentication "
            "unsuccessful, "
            "basic "
            "authentication is disabled.\nmsmtp: could not send mail (account a from f)",
            75,
            "basic_auth_disabled",
            "4.7.139",
        ),
        (
            "msmtp: recipient address r@x not accepted by the server\nmsmtp: server message: 550 5.1.10 "
            "RESOLVER.ADR.RecipientNotFound; "
            "Recipient not found by SMTP address lookup\nmsmtp: could not send mail (account a from f)",
            69,
            "provider_refused",
            "5.1.10",
        ),
        (
            "msmtp: the server did not accept the mail\nmsmtp: server message: 552 Message size exceeds fixed maximum "
            "message size\n"
            "msmtp: could not send mail (account a from f)",
            69,
            "provider_refused",
            "5.0.0",
        ),
        (
            "smarthost-oauth2 token: token_endpoint_unreachable: login.microsoftonline.com: Connection refused\n"
            "msmtp: cannot read output of '/usr/bin/python3 -I /x token --config /c'",
            75,
            "token_unavailable",
            "4.7.0",
        ),
        ("", 75, "msmtp_failed", "4.3.0"),
    ],
)
def test_exit_mapping_of_other_published_replies(stderr, status, cause, dsn):
    outcome = oauth2.classify_msmtp(69 if status == 69 else 65, stderr)
    assert (outcome.status, outcome.cause, outcome.dsn) == (status, cause, dsn)


# --- deliver end to end: a replaying msmtp here, Debian's real one where installed ----------------

REPLAY_MSMTP = """#!%(python)s
# Plays msmtp for deliver's plumbing: runs the passwordeval command of its --file as msmtp does
# (through /bin/sh), records what it was given, then answers as the real msmtp did in the proof.
import json, os, subprocess, sys
argv = sys.argv[1:]
rc = [a for a in argv if a.startswith('--file=')][0][len('--file='):]
text = open(rc).read()
command = json.loads([l.split(' ', 1)[1] for l in text.splitlines() if l.startswith('passwordeval ')][0])
token = subprocess.run(['/bin/sh', '-c', command], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
record = {'argv': argv, 'env': dict(os.environ), 'stdin': sys.stdin.read(), 'token_rc': token.returncode,
          'token': token.stdout.decode().strip(), 'msmtprc': text, 'rc_mode': os.stat(rc).st_mode & 0o777}
json.dump(record, open(%(record)r, 'w'))
answer = json.load(open(%(answer)r))
sys.stderr.write(answer['stderr'].replace('TOKEN', record['token']))
sys.stdout.write(answer['stdout'])
sys.exit(answer['exit'])
"""


@pytest.fixture
def replay(tmp_path, endpoint, pki):
    """(config_path, answer(exit, stderr, stdout), recorded()) with a replaying msmtp on the config."""
    record, answer = tmp_path / "record.json", tmp_path / "answer.json"
    fake = tmp_path / "msmtp"
    fake.write_text(REPLAY_MSMTP % {"python": sys.executable, "record": str(record), "answer": str(answer)})
    fake.chmod(0o755)
    path = write_config(
        tmp_path / "office365.json",
        raw_microsoft(tmp_path, ca_file=pki["ca"], msmtp=str(fake), token_url=endpoint.url("/t/oauth2/v2.0/token")),
    )

    def set_answer(exit_status, stderr="", stdout=""):
        answer.write_text(json.dumps({"exit": exit_status, "stderr": stderr, "stdout": stdout}))

    return path, set_answer, lambda: json.loads(record.read_text())


def deliver_cli(path, sender, recipients, message=b"Subject: t\n\nbody\n"):
    return run_script("deliver", "--config", path, "-f", sender, "--", *recipients, stdin=message)


def test_deliver_plumbing_argv_environment_stdin_and_token(replay):
    path, answer, recorded = replay
    answer(
        0,
        "",
        "Dec 01 10:00:00 host=smtp.office365.com tls=on auth=on user=relay@contoso.com "
        "from=relay@contoso.com "
        "recipients=a@example.org mailsize=20 smtpstatus=250 smtpmsg='250 2.0.0 OK <id> [Hostname=X]' "
        "exitcode=EX_OK",
    )
    code, out, err = deliver_cli(path, "", ["a@example.org"], b"Subject: t\n\nbody\n")
    assert (code, out, err) == (0, "smarthost-oauth2 sent: 250 2.0.0 OK <id> [Hostname=X]\n", "")
    seen = recorded()
    cache = json.load(open(path))["cache_file"]
    assert seen["argv"] == ["--file=%s.msmtprc" % cache, "--account=smarthost_oauth2", "-f", "", "--", "a@example.org"]
    assert seen["stdin"] == "Subject: t\n\nbody\n"
    assert (seen["token_rc"], seen["token"]) == (0, "tok-1")  # passwordeval ran the token subcommand from the cache
    assert set(seen["env"]) <= {"PATH", "LC_ALL", "LANG", "HOME"} and seen["env"]["LC_ALL"] == "C"
    assert seen["rc_mode"] == 0o600 and "auth xoauth2" in seen["msmtprc"]
    flat = json.dumps(seen["argv"]) + json.dumps(seen["env"]) + seen["msmtprc"]
    assert SECRET not in flat and "tok-1" not in flat


def test_deliver_maps_a_535_to_deferred_and_masks_the_token(replay):
    path, answer = replay[:2]
    answer(
        77,
        "msmtp: authentication failed (method XOAUTH2)\nmsmtp: server message: 535 5.7.3 Authentication "
        "unsuccessful "
        "TOKEN\nmsmtp: could not send mail (account smarthost_oauth2 from x)\n",
    )
    code, out, unused = deliver_cli(path, "relay@contoso.com", ["a@example.org"])
    assert code == 75 and out.startswith("4.7.3 smarthost-oauth2 xoauth2_rejected:") and "535 5.7.3" in out
    assert "tok-1" not in out and "********" in out


def test_deliver_forgets_an_older_token_the_server_refused(replay, tmp_path):
    path, answer = replay[:2]
    config = oauth2.load_config(path)
    old = time.time() - 120
    oauth2.get_token(config, clock=lambda: old, fetch=Fetcher(record(old, 3600, "revoked-early")))
    answer(
        77,
        "msmtp: authentication failed (method XOAUTH2)\nmsmtp: server message: 535 5.7.3 Authentication unsuccessful\n",
    )
    assert deliver_cli(path, "relay@contoso.com", ["a@example.org"])[0] == 75
    assert oauth2.read_cache(config["cache_file"])["token"] is None  # the next attempt fetches a new one


def test_deliver_bounces_a_permanent_refusal_with_the_provider_code(replay):
    path, answer = replay[:2]
    answer(
        65,
        "msmtp: recipient address refused@example.org not accepted by the server\nmsmtp: server message: 550 "
        "5.7.1 "
        "RESOLVER.RST.NotAuthorized; not authorized\nmsmtp: could not send mail (account smarthost_oauth2 from "
        "x)\n",
    )
    code, out, unused = deliver_cli(path, "relay@contoso.com", ["refused@example.org"])
    assert (
        code == 69
        and out.startswith("5.7.1 smarthost-oauth2 provider_refused:")
        and "RESOLVER.RST.NotAuthorized" in out
    )


def test_deliver_stops_a_hung_msmtp(replay, tmp_path):
    path, answer = replay[:2]
    raw = json.load(open(path))
    raw["delivery_timeout"] = 10
    hung = tmp_path / "hung-msmtp"
    hung.write_text("#!/bin/sh\nexec sleep 60\n")
    hung.chmod(0o755)
    raw["msmtp"] = str(hung)
    write_config(tmp_path / "office365.json", raw)
    started = time.monotonic()
    code, out, unused = deliver_cli(path, "relay@contoso.com", ["a@example.org"])
    assert code == 75 and out.startswith("4.4.2 smarthost-oauth2 delivery_timeout:") and time.monotonic() - started < 30


def test_deliver_without_msmtp_defers(replay, tmp_path):
    path = replay[0]
    raw = json.load(open(path))
    raw["msmtp"] = str(tmp_path / "not-installed")
    write_config(tmp_path / "office365.json", raw)
    code, out, unused = deliver_cli(path, "relay@contoso.com", ["a@example.org"])
    assert code == 75 and out.startswith("4.3.5 smarthost-oauth2 msmtp_config_error: cannot run")


class XOAuth2Handler:
    """aiosmtpd handler accepting AUTH XOAUTH2 with one token for one user."""

    def __init__(self, user, token):
        self.user, self.token, self.seen, self.messages = user, token, [], []

    async def auth_XOAUTH2(self, server, args):
        from aiosmtpd.smtp import AuthResult

        blob = base64.b64decode(args[1]) if len(args) == 2 else await server.challenge_auth("")
        self.seen.append(blob)
        if blob == ("user=%s\x01auth=Bearer %s\x01\x01" % (self.user, self.token)).encode():
            return AuthResult(success=True)
        await server.push("535 5.7.3 Authentication unsuccessful")
        return AuthResult(success=False, handled=True)

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 2.0.0 OK queued"


@pytest.mark.skipif(not os.path.exists("/usr/bin/msmtp"), reason="needs Debian's msmtp (apt-get install msmtp)")
@pytest.mark.parametrize("accept", [True, False])
def test_deliver_with_the_real_msmtp(tmp_path, endpoint, pki, accept):
    from aiosmtpd.controller import Controller

    handler = XOAuth2Handler("relay@contoso.com", "tok-1" if accept else "another-token")
    port = servers.free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=servers.server_context(pki["server_cert"], pki["server_key"]),
        require_starttls=True,
        server_hostname=servers.RELAY_NAME,
    )
    controller.start()
    try:
        path = write_config(
            tmp_path / "office365.json",
            raw_microsoft(
                tmp_path,
                ca_file=pki["ca"],
                token_url=endpoint.url("/t/oauth2/v2.0/token"),
                smtp_host="127.0.0.1",
                smtp_port=port,
            ),
        )
        code, out, unused = deliver_cli(path, "relay@contoso.com", ["a@example.org"])
    finally:
        controller.stop()
    if accept:
        assert code == 0 and out.startswith("smarthost-oauth2 sent: 250 2.0.0 OK queued")
        assert len(handler.messages) == 1 and handler.messages[0].rcpt_tos == ["a@example.org"]
    else:
        assert code == 75 and out.startswith("4.7.3 smarthost-oauth2 xoauth2_rejected:") and handler.messages == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another user")
def test_root_running_it_by_hand_leaves_the_cache_to_the_delivery_user(tmp_path):
    config = microsoft(tmp_path)
    directory = os.path.dirname(config["cache_file"])
    os.makedirs(directory, mode=0o700)
    os.chown(directory, 4242, 4242)
    oauth2.get_token(config, clock=lambda: 1000, fetch=Fetcher(record(1000, 3600)))
    owners = set(
        (os.stat(os.path.join(directory, name)).st_uid, os.stat(os.path.join(directory, name)).st_gid)
        for name in os.listdir(directory)
    )
    assert owners == {(4242, 4242)}


def test_pace_keeps_the_accounts_interval_between_deliveries(tmp_path):
    clock = [1000.0]
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        clock[0] += seconds

    config = {"send_interval": 2.0, "cache_file": str(tmp_path / "relay.json")}
    assert oauth2.pace(config, clock=lambda: clock[0], sleep=sleep) == 0.0
    clock[0] += 0.5
    assert oauth2.pace(config, clock=lambda: clock[0], sleep=sleep) == 1.5
    clock[0] += 5
    assert oauth2.pace(config, clock=lambda: clock[0], sleep=sleep) == 0.0
    assert waits == [1.5]
    assert oauth2.pace({"send_interval": None, "cache_file": config["cache_file"]}) == 0.0


def test_send_interval_is_an_option():
    assert "send_interval" in oauth2.OPTIONS


# --- relay_probe's token provider ------------------------------------------------------------------


def probe_account(tmp_path, endpoint, pki):
    raw = dict(microsoft(tmp_path, endpoint, pki))
    return {
        key: raw[key]
        for key in (
            "provider",
            "tenant",
            "client_id",
            "client_secret",
            "username",
            "token_url",
            "ca_file",
            "cache_file",
        )
    }


def test_the_probe_fetches_a_fresh_token_and_leaves_the_cache_alone(tmp_path, endpoint, pki):
    from ansible_collections.smarthost.postfix.plugins.module_utils.smtp_probe import oauth2_bearer

    account = probe_account(tmp_path, endpoint, pki)
    assert oauth2_bearer(account)() == "tok-1"
    assert endpoint.requests[0]["form"]["client_secret"] == SECRET
    assert not os.path.exists(account["cache_file"])


def test_the_probe_names_the_diagnosis_cause_of_a_refused_secret(tmp_path, endpoint, pki):
    from ansible_collections.smarthost.postfix.plugins.module_utils.smtp_probe import ProbeFailure, oauth2_bearer

    endpoint.answer = lambda path, form: MICROSOFT_ERRORS[0][:2]
    with pytest.raises(ProbeFailure) as caught:
        oauth2_bearer(probe_account(tmp_path, endpoint, pki))()
    assert caught.value.cause == "oauth2_invalid_client"
    assert "AADSTS7000215" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_every_tool_cause_the_diagnosis_maps_is_one_the_tool_has():
    from ansible_collections.smarthost.postfix.plugins.module_utils import maillog, smtp_probe
    from ansible_collections.smarthost.postfix.plugins.module_utils.provider_replies import (
        REPLY_CAUSES,
        TOKEN_TOOL_CAUSES,
    )

    assert set(TOKEN_TOOL_CAUSES) <= set(oauth2.CAUSES)
    known = set(REPLY_CAUSES) | set(maillog.REMEDIES) | set(smtp_probe.CAUSES)
    assert set(TOKEN_TOOL_CAUSES.values()) <= known
