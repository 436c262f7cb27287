# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""OAuth 2.0 access tokens for SMTP XOAUTH2 relaying, and the Postfix pipe(8) command that uses them.

One standard-library file with two uses:

* imported (``relay_probe``): ``validate_config``, ``request_token``, ``classify_token_error``,
  ``CAUSES`` and ``xoauth2_initial_response`` fetch a token and explain a failure;
* run on the relay host (the role installs it as ``/usr/libexec/smarthost-postfix/oauth2-token``):

  ``token --config FILE``
      print a valid access token (msmtp's ``passwordeval``), from the cache when it is fresh;
  ``renew --config FILE [--force]``
      renew the cached token once it is past half its lifetime (a systemd timer runs this);
  ``deliver --config FILE -f SENDER -- RECIPIENT...``
      the pipe(8) command: hand the message on stdin to msmtp with XOAUTH2 over verified TLS, and
      turn msmtp's result into the exit status and the one-line reason Postfix logs.

Postfix's queue stays the only queue: every failure of the token plumbing, the network, TLS or
authentication exits EX_TEMPFAIL so the message is deferred; only the provider's permanent refusal
of the message or a recipient bounces. The client secret and refresh token never leave the config
file except in the token request; tokens leave the cache only towards msmtp.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import stat
import sys
import time
import urllib.parse

# http.client, ssl, subprocess and tempfile are imported where they are used: msmtp runs the token
# subcommand for every message, and on a cache hit it needs none of them (they cost ~40 ms a start).

# sysexits.h, as pipe(8) reads them.
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_CONFIG = 78

CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu
    "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL, Rocky, Alma, Fedora
    "/etc/ssl/ca-bundle.pem",  # SUSE
)
DEFAULT_CACHE_DIR = "/var/cache/smarthost-postfix/oauth2"
DEFAULT_MSMTP = "/usr/bin/msmtp"
# TLS 1.2 or newer, as the role requires of Postfix's own smtp client.
DEFAULT_TLS_PRIORITIES = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
MSMTP_ACCOUNT = "smarthost_oauth2"
LOG_PREFIX = "smarthost-oauth2"

PROVIDERS = {
    "microsoft": {
        "grant": "client_credentials",
        "required": ("tenant", "client_id", "client_secret"),
        "token_url": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        "scope": "https://outlook.office365.com/.default",
        "smtp_host": "smtp.office365.com",
        "smtp_port": 587,
    },
    "google": {
        "grant": "refresh_token",
        "required": ("client_id", "client_secret", "refresh_token"),
        "token_url": "https://oauth2.googleapis.com/token",
        "scope": None,  # the refresh token carries its scope (https://mail.google.com/)
        "smtp_host": "smtp.gmail.com",
        "smtp_port": 587,
    },
}
SECRET_OPTIONS = ("client_secret", "refresh_token")
STRING_OPTIONS = (
    "provider",
    "tenant",
    "client_id",
    "client_secret",
    "refresh_token",
    "scope",
    "token_url",
    "username",
    "smtp_host",
    "tls",
    "ca_file",
    "token_ca_file",
    "cache_file",
    "helo_name",
    "msmtp",
    "proxy",
    "tls_priorities",
)
NUMBER_OPTIONS = {  # name: (default, minimum, maximum)
    "smtp_port": (None, 1, 65535),
    "token_timeout": (20, 1, 300),
    "smtp_timeout": (60, 1, 3600),
    "delivery_timeout": (600, 10, 86400),
    "lock_timeout": (None, 1, 600),
    "failure_hold": (10, 0, 3600),
    # Seconds between deliveries of this account at least: the provider's rate (Exchange Online:
    # 30 messages a minute per mailbox). Postfix's rate delay cannot pace a transport that
    # delivers one recipient at a time, so the tool does.
    "send_interval": (None, 0, 86400),
}
OPTIONS = frozenset(STRING_OPTIONS) | frozenset(NUMBER_OPTIONS)
TLS_MODES = ("starttls", "implicit")

# Causes the token plumbing and a delivery can fail with, and the remedy for each.
CAUSES = {
    "config_invalid": (
        "The OAuth 2.0 relay configuration is unusable: see the message for the option; fix it with the role "
        "variables (relay_oauth2_*) and converge again."
    ),
    "token_endpoint_unreachable": (
        "The token endpoint could not be reached (name resolution, connection refused or no route): check DNS, "
        "firewall and proxy rules for HTTPS to the identity provider (login.microsoftonline.com or "
        "oauth2.googleapis.com); mail waits in the queue."
    ),
    "token_endpoint_timeout": (
        "The token endpoint did not answer in time: the identity provider or the path to it is slow or blocked; mail "
        "waits in the queue and leaves once a token can be fetched."
    ),
    "token_endpoint_certificate_untrusted": (
        "The token endpoint's TLS certificate did not verify: update the CA bundle (ca-certificates) and check for an"
        " intercepting proxy."
    ),
    "token_endpoint_error": (
        "The token endpoint answered with a server error or throttled the request (HTTP 5xx or 429): an outage at the"
        " identity provider; mail waits in the queue."
    ),
    "invalid_client_secret": (
        "The client secret is wrong (AADSTS7000215): use the secret VALUE, not its ID, from Entra ID > App "
        "registrations > Certificates & secrets, set relay_oauth2_client_secret and converge."
    ),
    "client_secret_expired": (
        "The client secret has expired (AADSTS7000222): create a new secret for the app registration, set "
        "relay_oauth2_client_secret and converge."
    ),
    "application_not_found": (
        "No application with this client ID exists in the tenant (AADSTS700016): check relay_oauth2_client_id and "
        "relay_oauth2_tenant, and that the app is registered (and consented) in that tenant."
    ),
    "tenant_not_found": (
        "The tenant does not exist (AADSTS90002): check relay_oauth2_tenant (the tenant ID or the *.onmicrosoft.com "
        "domain) and the cloud of relay_oauth2_token_url."
    ),
    "invalid_scope": (
        "The identity provider refused the scope: Exchange Online needs https://outlook.office365.com/.default "
        "(client credentials); a Google refresh token must have been granted https://mail.google.com/."
    ),
    "invalid_grant": (
        "The refresh token was refused (revoked, expired, the password changed, or the OAuth consent screen is in "
        "testing and tokens expire after 7 days): authorise again, set relay_oauth2_refresh_token and converge."
    ),
    "invalid_client": (
        "The identity provider does not know this client ID or refused its secret (invalid_client): check "
        "relay_oauth2_client_id and relay_oauth2_client_secret."
    ),
    "unauthorized_client": (
        "The client may not use this grant (unauthorized_client): check the app registration and its permissions "
        "(SMTP.SendAsApp with admin consent for Exchange Online)."
    ),
    "token_request_rejected": ("The identity provider refused the token request: see the message for its error."),
    "token_response_invalid": (
        "The token endpoint answered without a usable access token: see the message; a proxy or a wrong "
        "relay_oauth2_token_url may answer instead of the identity provider."
    ),
    "token_lock_timeout": (
        "Another delivery held the token lock too long (it is fetching a token from a slow endpoint); mail waits in "
        "the queue."
    ),
    "token_cache_error": (
        "The token cache could not be written: check the cache directory, its owner (the delivery user) and free space."
    ),
    "xoauth2_rejected": (
        "The SMTP server refused the access token (535): for Exchange Online the service principal of the app must be"
        " registered (New-ServicePrincipal) and allowed on the mailbox (Add-MailboxPermission), and SMTP AUTH enabled"
        " for the mailbox; for Gmail the refresh token must carry https://mail.google.com/ for this account."
    ),
    "xoauth2_not_offered": (
        "The SMTP server does not offer AUTH XOAUTH2: check the host and port (smtp.office365.com:587, "
        "smtp.gmail.com:587) and that SMTP AUTH is enabled for the mailbox or tenant."
    ),
    "basic_auth_disabled": ("The server refuses basic authentication: set relay_auth: oauth2."),
    "not_authenticated": (
        "The SMTP server says the session is not authenticated: check that SMTP AUTH is enabled for the mailbox; the "
        "message is retried."
    ),
    "sending_quota_exceeded": (
        "The provider's sending quota for this account is used up (for example Gmail's daily limit or Exchange "
        "Online's recipient rate limit); mail is retried and leaves when the quota resets."
    ),
    "sender_throttled": (
        "The provider throttles this sender for a while after repeated errors (Exchange Online 5.2.25x): fix the "
        "underlying error; mail is retried."
    ),
    "provider_temporary": ("The provider deferred the message (4xx); it is retried."),
    "provider_refused": (
        "The provider refused the message or a recipient for good (5xx): the message is returned to the sender with "
        "the provider's reply."
    ),
    "recipient_syntax_unsupported": (
        "The recipient address needs quoting (spaces, quotes, parentheses, ...), which msmtp cannot pass on "
        "faithfully: the message is returned rather than sent to a mangled address."
    ),
    "smtp_unreachable": (
        "The SMTP server could not be reached (connection refused or no route): check the host, the port and the "
        "firewall; mail waits in the queue."
    ),
    "smtp_dns_failure": ("The SMTP server's name does not resolve on this host: check the host name and the resolver."),
    "smtp_timeout": ("The SMTP server stopped answering: network trouble or a firewall; mail waits in the queue."),
    "smtp_tls_failed": (
        "TLS with the SMTP server failed (handshake, STARTTLS refused or stripped): check the port and for a "
        "middlebox; nothing was sent in clear text."
    ),
    "smtp_certificate_untrusted": (
        "The SMTP server's certificate did not verify (issuer or name): update the CA bundle, check the host name and"
        " look for an intercepting proxy; nothing was sent."
    ),
    "msmtp_config_error": (
        "msmtp refused its configuration (see the message; a stray /etc/msmtprc is read too): fix it and the queue "
        "retries."
    ),
    "token_unavailable": ("msmtp could not get the access token from its passwordeval command: see the message."),
    "delivery_timeout": ("msmtp did not finish within delivery_timeout and was stopped; the message is retried."),
    "msmtp_failed": ("msmtp failed in an unexpected way: see the message; the message is retried."),
}

_AADSTS_CAUSES = (
    (7000215, "invalid_client_secret"),
    (7000222, "client_secret_expired"),
    (700016, "application_not_found"),
    (90002, "tenant_not_found"),
    (900023, "tenant_not_found"),  # the tenant is neither a GUID nor a domain
    (1002012, "invalid_scope"),
    (70011, "invalid_scope"),
)
_OAUTH_ERROR_CAUSES = {
    "invalid_grant": "invalid_grant",
    "invalid_client": "invalid_client",
    "unauthorized_client": "unauthorized_client",
    "invalid_scope": "invalid_scope",
    "invalid_tenant": "tenant_not_found",
}
_MAX_RESPONSE = 65536
_MIN_SECRET_LENGTH = 4


class ConfigError(Exception):
    """Bad configuration: option names the setting, message says what is wrong (never its secret value)."""

    def __init__(self, option, message):
        super().__init__("%s: %s" % (option, message))
        self.option = option
        self.message = message
        self.cause = "config_invalid"


class TokenError(Exception):
    """A classified token failure: cause is a key of CAUSES, detail the provider's or the system's text."""

    def __init__(self, cause, detail):
        super().__init__("%s: %s" % (cause, detail))
        self.cause = cause
        self.detail = detail


# --- configuration -------------------------------------------------------------------------------


def default_ca_file(candidates=CA_BUNDLES):
    """The first OS CA bundle present on this host, or None."""
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    return None


def _number(raw, name):
    default, minimum, maximum = NUMBER_OPTIONS[name]
    value = raw.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, "must be a number")
    if not minimum <= value <= maximum:
        raise ConfigError(name, "must be between %s and %s; got %s" % (minimum, maximum, value))
    return value


def validate_config(raw, source="config", default_cache_file=None):
    """Check a config mapping and return it complete with defaults.

    Raises ConfigError naming the option. Secret values never appear in the message.
    """
    if not isinstance(raw, dict):
        raise ConfigError(source, "must be a JSON object")
    unknown = sorted(set(raw) - OPTIONS)
    if unknown:
        raise ConfigError(unknown[0], "unknown option (known: %s)" % ", ".join(sorted(OPTIONS)))
    for name in STRING_OPTIONS:
        value = raw.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(name, "must be a non-empty string")
        if any(ord(char) < 32 or ord(char) == 127 for char in value):
            raise ConfigError(name, "must not contain control characters or line breaks")
    provider = raw.get("provider")
    if provider not in PROVIDERS:
        raise ConfigError("provider", "must be one of %s; got %r" % (", ".join(sorted(PROVIDERS)), provider))
    spec = PROVIDERS[provider]
    for name in spec["required"] + ("username",):
        if raw.get(name) is None:
            raise ConfigError(name, "required for provider %s" % provider)
    if provider == "microsoft" and not re.match(r"^[A-Za-z0-9][A-Za-z0-9.-]*$", raw["tenant"]):
        raise ConfigError(
            "tenant", "must be a tenant ID (GUID) or a domain such as contoso.onmicrosoft.com; got %r" % raw["tenant"]
        )
    if provider == "google" and raw.get("tenant") is not None:
        raise ConfigError("tenant", "applies to provider microsoft only")
    if provider == "microsoft" and raw.get("refresh_token") is not None:
        raise ConfigError(
            "refresh_token", "applies to provider google only (Microsoft uses the client credentials grant)"
        )
    username = raw["username"]
    if "@" not in username or re.search(r"\s", username):
        raise ConfigError("username", "must be the mailbox address the token sends as; got %r" % username)

    config = dict((name, raw.get(name)) for name in STRING_OPTIONS)
    for name in NUMBER_OPTIONS:
        config[name] = _number(raw, name)
    config["token_url"] = raw.get("token_url") or spec["token_url"].format(
        tenant=urllib.parse.quote(raw.get("tenant") or "")
    )
    parts = urllib.parse.urlsplit(config["token_url"])
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError("token_url", "must be an https:// URL; got %r" % config["token_url"])
    if parts.username or parts.password:
        raise ConfigError("token_url", "must not carry credentials")
    config["scope"] = raw.get("scope") or spec["scope"]
    config["smtp_host"] = raw.get("smtp_host") or spec["smtp_host"]
    config["smtp_port"] = config["smtp_port"] or spec["smtp_port"]
    config["tls"] = raw.get("tls") or ("implicit" if config["smtp_port"] == 465 else "starttls")
    if config["tls"] not in TLS_MODES:
        raise ConfigError("tls", "must be one of %s; got %r" % (", ".join(TLS_MODES), config["tls"]))
    config["ca_file"] = raw.get("ca_file") or default_ca_file()
    if config["ca_file"] is None:
        raise ConfigError("ca_file", "no CA bundle found on this host (%s); set ca_file" % ", ".join(CA_BUNDLES))
    config["token_ca_file"] = raw.get("token_ca_file") or config["ca_file"]
    if not config["cache_file"]:
        config["cache_file"] = default_cache_file or os.path.join(DEFAULT_CACHE_DIR, "%s.json" % provider)
    if not os.path.isabs(config["cache_file"]):
        raise ConfigError("cache_file", "must be an absolute path")
    config["helo_name"] = raw.get("helo_name") or socket.getfqdn()
    config["msmtp"] = raw.get("msmtp") or DEFAULT_MSMTP
    config["tls_priorities"] = raw.get("tls_priorities") or DEFAULT_TLS_PRIORITIES
    if config["proxy"] is not None and not re.match(r"^[A-Za-z0-9.:\[\]-]+:[0-9]+$", config["proxy"]):
        raise ConfigError("proxy", "must be host:port of an HTTPS (CONNECT) proxy; got %r" % config["proxy"])
    if config["lock_timeout"] is None:
        config["lock_timeout"] = config["token_timeout"] + 10
    return config


def check_config_mode(path, info, euid=None):
    """Refuse a config file others can read or that someone but root or us can change."""
    euid = os.geteuid() if euid is None else euid
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(path, "is not a regular file")
    if info.st_uid not in (0, euid):
        raise ConfigError(
            path, "must be owned by root or by the delivery user (uid %d), not uid %d" % (euid, info.st_uid)
        )
    if info.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise ConfigError(
            path,
            "holds secrets: mode must be 0600 or 0640 (no access for others, no group write); is "
            "%04o" % stat.S_IMODE(info.st_mode),
        )


def load_config(path):
    """Read, check and complete a JSON config file."""
    try:
        with open(path, encoding="utf-8") as handle:
            check_config_mode(path, os.fstat(handle.fileno()))
            text = handle.read()
    except OSError as error:
        raise ConfigError(path, "cannot be read: %s" % (error.strerror or error)) from None
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise ConfigError(path, "is not valid JSON: %s" % error) from None  # json's message quotes no value
    stem = os.path.splitext(os.path.basename(path))[0]
    return validate_config(raw, path, os.path.join(DEFAULT_CACHE_DIR, stem + ".json"))


def secret_values(config):
    return [config[name] for name in SECRET_OPTIONS if config.get(name) and len(config[name]) >= _MIN_SECRET_LENGTH]


def mask(text, values):
    """text with every secret or token in values replaced by ********."""
    for value in sorted(
        (value for value in values if value and len(value) >= _MIN_SECRET_LENGTH), key=len, reverse=True
    ):
        text = text.replace(value, "********")
    return text


# --- token endpoint ------------------------------------------------------------------------------


def token_request_body(config):
    """The form the token endpoint expects (contains the secret: never log it)."""
    form = [("client_id", config["client_id"]), ("client_secret", config["client_secret"])]
    if PROVIDERS[config["provider"]]["grant"] == "client_credentials":
        form = [("grant_type", "client_credentials")] + form + [("scope", config["scope"])]
    else:
        form = [("grant_type", "refresh_token")] + form + [("refresh_token", config["refresh_token"])]
        if config.get("scope"):
            form.append(("scope", config["scope"]))
    return urllib.parse.urlencode(form).encode("ascii")


def _first_line(text, limit=300):
    line = (text or "").replace("\r", "\n").split("\n")[0].strip()
    return line if len(line) <= limit else line[:limit] + "..."


def classify_token_error(status, body):
    """(cause, detail) for a token endpoint's HTTP error answer.

    Entra ID's numeric error_codes (or the AADSTS number in the description) are more precise than
    the OAuth error field, so they win; then the OAuth error (RFC 6749 5.2); then the HTTP status.
    The detail is the provider's own text, first line only (Entra ID appends trace IDs).
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    error = description = None
    codes = []
    if isinstance(data, dict):
        error = data.get("error") if isinstance(data.get("error"), str) else None
        description = data.get("error_description") if isinstance(data.get("error_description"), str) else None
        codes = [code for code in data.get("error_codes") or [] if isinstance(code, int)]
    codes += [int(number) for number in re.findall(r"\bAADSTS(\d+)", description or "")]
    if error:
        detail = (
            "HTTP %d %s: %s" % (status, error, _first_line(description))
            if description
            else "HTTP %d %s" % (status, error)
        )
    else:
        detail = "HTTP %d: %s" % (status, _first_line(text) or "empty answer")
    for code, cause in _AADSTS_CAUSES:
        if code in codes:
            return cause, detail
    if error in _OAUTH_ERROR_CAUSES:
        return _OAUTH_ERROR_CAUSES[error], detail
    if status >= 500 or status == 429:
        return "token_endpoint_error", detail
    if error:
        return "token_request_rejected", detail
    return ("token_request_rejected" if 400 <= status < 500 else "token_response_invalid"), detail


def classify_transport_error(error, url):
    """(cause, detail) for an exception raised while talking to the token endpoint."""
    import http.client
    import ssl

    host = urllib.parse.urlsplit(url).hostname
    if isinstance(error, ssl.SSLCertVerificationError):
        return "token_endpoint_certificate_untrusted", "%s: %s" % (host, error.verify_message or error.reason)
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "token_endpoint_timeout", "%s: no answer within the timeout" % host
    if isinstance(error, socket.gaierror):
        return "token_endpoint_unreachable", "%s: name does not resolve (%s)" % (host, error.strerror or error)
    if isinstance(error, ssl.SSLError):
        return "token_endpoint_unreachable", "%s: TLS failed: %s" % (host, error.reason or error)
    if isinstance(error, http.client.HTTPException):
        return "token_endpoint_error", "%s: broken HTTP answer (%s)" % (host, type(error).__name__)
    if isinstance(error, OSError):
        return "token_endpoint_unreachable", "%s: %s" % (host, error.strerror or error)
    return "token_endpoint_error", "%s: %s" % (host, type(error).__name__)


def _https_post(url, body, ca_file, timeout, proxy=None):
    """(status, body) of one HTTPS POST with a verified certificate and host name; no redirects."""
    import http.client
    import ssl

    parts = urllib.parse.urlsplit(url)
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    port = parts.port or 443
    if proxy:
        proxy_host, proxy_port = proxy.rsplit(":", 1)
        connection = http.client.HTTPSConnection(
            proxy_host.strip("[]"), int(proxy_port), timeout=timeout, context=context
        )
        connection.set_tunnel(parts.hostname, port)
    else:
        connection = http.client.HTTPSConnection(parts.hostname, port, timeout=timeout, context=context)
    path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
        "User-Agent": "smarthost-postfix-oauth2/1",
    }
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(_MAX_RESPONSE)
    finally:
        connection.close()


def parse_token_response(body, now):
    """The cache record for a successful token answer, or TokenError('token_response_invalid')."""
    try:
        data = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        raise TokenError("token_response_invalid", "the answer is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("access_token"), str) or not data["access_token"]:
        raise TokenError("token_response_invalid", "the answer has no access_token")
    token_type = data.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenError("token_response_invalid", "token_type is %r, not Bearer" % (token_type,))
    lifetime = data.get("expires_in", 3600)
    try:
        lifetime = int(lifetime)  # Entra ID v1 endpoints send it as a string
    except (TypeError, ValueError):
        raise TokenError("token_response_invalid", "expires_in is not a number") from None
    if lifetime <= 0:
        raise TokenError("token_response_invalid", "expires_in is %d" % lifetime)
    return {
        "access_token": data["access_token"],
        "obtained_at": now,
        "expires_at": now + lifetime,
        "lifetime": lifetime,
    }


def request_token(config, now=None):
    """Fetch a new access token from the config's endpoint; returns the cache record.

    Raises TokenError with a cause from CAUSES. No secret appears in the error.
    """
    url = config["token_url"]
    started = time.time() if now is None else now
    try:
        status, body = _https_post(
            url, token_request_body(config), config["token_ca_file"], config["token_timeout"], config.get("proxy")
        )
    except Exception as error:  # every transport failure is classified, none may escape unexplained
        cause, detail = classify_transport_error(error, url)
        raise TokenError(cause, mask(detail, secret_values(config))) from None
    if status != 200:
        cause, detail = classify_token_error(status, body)
        raise TokenError(cause, mask(detail, secret_values(config)))
    return parse_token_response(body, started)


def xoauth2_initial_response(username, token):
    """The SASL XOAUTH2 initial client response, base64 (what AUTH XOAUTH2 sends)."""
    return base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (username, token)).encode("utf-8")).decode("ascii")


# --- cache ---------------------------------------------------------------------------------------


def cache_identity(config):
    """Fingerprint of everything a token depends on, so a changed client, secret or tenant fetches anew."""
    material = json.dumps(
        [config.get(name) for name in ("provider", "token_url", "client_id", "client_secret", "refresh_token", "scope")]
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def refresh_margin(lifetime):
    """Renew when less than this remains: max(300 s, 10 %), but never more than half the lifetime."""
    return min(max(300.0, lifetime * 0.1), lifetime * 0.5)


def last_resort_margin(lifetime):
    """While the endpoint fails, a cached token is still used until this little is left."""
    return min(60.0, lifetime * 0.25)


def token_phase(record, now):
    """'fresh' (use it), 'refresh' (renew, but usable if the endpoint fails) or 'expired'."""
    remaining = record["expires_at"] - now
    if remaining > refresh_margin(record["lifetime"]):
        return "fresh"
    if remaining > last_resort_margin(record["lifetime"]):
        return "refresh"
    return "expired"


def read_cache(path):
    """The cache document, or an empty one when missing or unreadable as JSON (a corrupt cache is refetched)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_token(cache, identity):
    record = cache.get("token")
    if cache.get("identity") != identity or not isinstance(record, dict):
        return None
    if not isinstance(record.get("access_token"), str) or not all(
        isinstance(record.get(key), (int, float)) for key in ("obtained_at", "expires_at", "lifetime")
    ):
        return None
    return record


def _owned_like_directory(fd, directory):
    """Run by root (an operator trying it by hand), keep the file the delivery user's, or its deliveries fail."""
    if os.geteuid() == 0:
        info = os.stat(directory)
        if info.st_uid != 0:
            os.fchown(fd, info.st_uid, info.st_gid)


def write_private(path, text):
    """Replace path atomically with text, mode 0600."""
    import tempfile

    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            _owned_like_directory(handle.fileno(), directory)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_cache(path, document):
    try:
        write_private(path, json.dumps(document, sort_keys=True))
    except OSError as error:
        raise TokenError("token_cache_error", "%s: %s" % (path, error.strerror or error)) from None


@contextlib.contextmanager
def cache_lock(path, timeout):
    """An exclusive flock on path + '.lock', so concurrent deliveries fetch one token, not one each."""
    lock_path = path + ".lock"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        _owned_like_directory(fd, os.path.dirname(path))
    except OSError as error:
        raise TokenError("token_cache_error", "%s: %s" % (lock_path, error.strerror or error)) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    raise TokenError("token_lock_timeout", "no lock on %s within %s s" % (lock_path, timeout)) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fetch_and_store(config, path, identity, record, now, fetch):
    """Fetch under the lock; store the new token, or the failure next to the old token. Raises TokenError."""
    try:
        fresh = fetch(config)
    except TokenError as error:
        failure = {"cause": error.cause, "detail": error.detail, "at": now}
        write_cache(path, {"version": 1, "identity": identity, "token": record, "failure": failure})
        raise
    write_cache(path, {"version": 1, "identity": identity, "token": fresh})
    return fresh


def get_token(config, clock=time.time, fetch=request_token):
    """A token record that is valid now: the cached one while fresh, else a new one.

    When the endpoint fails, a cached token that is still valid beyond last_resort_margin is used,
    so an identity provider outage shorter than the token's remaining life delays nothing. A failure
    is remembered for failure_hold seconds so that a queue full of mail does not hammer a dead
    endpoint. Raises TokenError.
    """
    path = config["cache_file"]
    identity = cache_identity(config)
    record = cached_token(read_cache(path), identity)
    if record is not None and token_phase(record, clock()) == "fresh":
        return record
    with cache_lock(path, config["lock_timeout"]):
        cache = read_cache(path)
        record = cached_token(cache, identity)
        now = clock()
        if record is not None and token_phase(record, now) == "fresh":
            return record  # another process renewed it while we waited
        failure = cache.get("failure") if cache.get("identity") == identity else None
        held = (
            isinstance(failure, dict)
            and isinstance(failure.get("at"), (int, float))
            and 0 <= now - failure["at"] < config["failure_hold"]
        )
        if not held:
            try:
                return _fetch_and_store(config, path, identity, record, now, fetch)
            except TokenError as error:
                failure = {"cause": error.cause, "detail": error.detail, "at": now}
        if record is not None and token_phase(record, now) != "expired":
            return record
        detail = failure["detail"]
        if held:
            detail += " (last attempt %d s ago; retried after %s s)" % (now - failure["at"], config["failure_hold"])
        raise TokenError(failure.get("cause", "token_endpoint_error"), detail)


def renew_token(config, clock=time.time, fetch=request_token):
    """Fetch a new token now and cache it (the timer's renewal): no fallback, no failure hold. Raises TokenError."""
    path = config["cache_file"]
    identity = cache_identity(config)
    with cache_lock(path, config["lock_timeout"]):
        record = cached_token(read_cache(path), identity)
        return _fetch_and_store(config, path, identity, record, clock(), fetch)


def forget_token(config, token):
    """Drop token from the cache if it is still the cached one (the SMTP server refused it)."""
    path = config["cache_file"]
    identity = cache_identity(config)
    with cache_lock(path, config["lock_timeout"]):
        cache = read_cache(path)
        record = cached_token(cache, identity)
        if record is not None and record["access_token"] == token:
            write_cache(path, {"version": 1, "identity": identity, "token": None})


def renew_due(record, now):
    """A token is renewed by the timer once it is past half its lifetime."""
    return record is None or now - record["obtained_at"] >= record["lifetime"] / 2.0


# --- msmtp ---------------------------------------------------------------------------------------


def msmtp_quote(value):
    """A msmtprc argument in double quotes, with msmtp's backslash escapes."""
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


def token_command(config_path, script=None, interpreter=None):
    """The passwordeval command line: this script's token subcommand (run by msmtp through /bin/sh)."""
    script = os.path.realpath(script or __file__)
    interpreter = interpreter or sys.executable or "/usr/bin/python3"
    return " ".join(
        _sh_quote(part) for part in (interpreter, "-I", script, "token", "--config", os.path.abspath(config_path))
    )


def _sh_quote(value):
    return value if re.match(r"^[A-Za-z0-9_@%+=:,./-]+$", value) else "'%s'" % value.replace("'", "'\\''")


def msmtp_config_text(config, passwordeval):
    """The msmtp account for this relay: XOAUTH2, TLS verified against ca_file, the message relayed unchanged."""
    lines = [
        "# Written by smarthost-oauth2 from its JSON configuration; changes here are overwritten.",
        "account %s" % MSMTP_ACCOUNT,
        "host %s" % msmtp_quote(config["smtp_host"]),
        "port %d" % config["smtp_port"],
        "tls on",
        "tls_starttls %s" % ("on" if config["tls"] == "starttls" else "off"),
        "tls_certcheck on",
        "tls_trust_file %s" % msmtp_quote(config["ca_file"]),
    ]
    if config["tls_priorities"] != "system":
        lines.append("tls_priorities %s" % msmtp_quote(config["tls_priorities"]))
    lines += [
        "auth xoauth2",
        "user %s" % msmtp_quote(config["username"]),
        "passwordeval %s" % msmtp_quote(passwordeval),
        "domain %s" % msmtp_quote(config["helo_name"]),
        "timeout %d" % config["smtp_timeout"],
        # Postfix already completed the headers; relay the message as it is.
        "set_from_header off",
        "set_date_header off",
        "set_msgid_header off",
        "syslog off",
        "logfile -",
    ]
    return "\n".join(lines) + "\n"


def ensure_msmtp_config(config, passwordeval):
    """The path of the msmtprc for config, rewritten only when its content changes."""
    path = config["cache_file"] + ".msmtprc"
    text = msmtp_config_text(config, passwordeval)
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                return path
    except OSError:
        pass
    write_private(path, text)
    return path


# msmtp parses command-line recipients like header addresses (measured with 1.8.23 and 1.8.28): white space,
# quotes, parentheses, angle brackets, commas, colons and semicolons change the address it sends (a quoted
# local part loses its quotes or its words, "a:b@x" becomes "b@x", an IPv6 literal is cut). Dots, the other
# atext characters, brackets in the local part, backslashes and UTF-8 pass unchanged.
_MANGLED_BY_MSMTP = re.compile(r'[\s"(),:;<>\x00-\x1f\x7f]')


def address_passes_unchanged(address):
    """True when msmtp will send exactly this recipient address."""
    return bool(address) and not _MANGLED_BY_MSMTP.search(address)


def msmtp_argv(config, msmtprc, sender, recipients):
    return [config["msmtp"], "--file=%s" % msmtprc, "--account=%s" % MSMTP_ACCOUNT, "-f", sender, "--"] + list(
        recipients
    )


def msmtp_environment(config):
    """A minimal environment: C locale so msmtp's messages can be classified, nothing secret."""
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LC_ALL": "C",
        "LANG": "C",
        "HOME": os.path.dirname(config["cache_file"]),
    }


class Outcome:
    """What a delivery attempt means for Postfix: exit status, enhanced status code, cause and text."""

    def __init__(self, status, dsn, cause, text):
        self.status = status
        self.dsn = dsn
        self.cause = cause
        self.text = text

    @property
    def temporary(self):
        return self.status == EX_TEMPFAIL

    def line(self):
        """The single line pipe(8) puts into the log and DSN: it starts with the enhanced status code."""
        text = " ".join(self.text.split())
        if self.status == EX_OK:
            return "%s %s" % (LOG_PREFIX, text)
        return "%s %s %s: %s" % (self.dsn, LOG_PREFIX, self.cause, text)

    def __repr__(self):
        return "Outcome(%r, %r, %r, %r)" % (self.status, self.dsn, self.cause, self.text)


def temporary(cause, text, dsn="4.3.0"):
    return Outcome(EX_TEMPFAIL, dsn, cause, text)


# 5xx replies that clear by themselves or without touching the message: deferred, never bounced.
_SELF_CLEARING_REFUSALS = (
    (re.compile(r"\b5\.4\.5\b.*(limit|quota)", re.I), "sending_quota_exceeded"),  # Gmail daily sending limit
    (re.compile(r"SubmissionQuotaExceeded|RecipientRateLimitExceeded|\b5\.2\.203\b", re.I), "sending_quota_exceeded"),
    (
        re.compile(r"\b5\.2\.25[1-5]\b.*throttled", re.I),
        "sender_throttled",
    ),  # Exchange Online continuous error throttling
    (re.compile(r"\b5\.7\.57\b", re.I), "not_authenticated"),
    (re.compile(r"\b5\.7\.(30|139)\b", re.I), "basic_auth_disabled"),
)
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MSMTP_PHASES = (
    ("envelope from address", "MAIL FROM"),
    ("recipient address", "RCPT TO"),
    ("the server did not accept the mail", "DATA"),
    ("authentication failed", "AUTH"),
)


def _reply(lines):
    """A multi-line SMTP reply on one line, as Postfix's smtp client logs it."""
    return " ".join(line.strip() for line in lines if line.strip())


def _enhanced(reply, klass):
    match = _ENHANCED.search(reply)
    if match is None:
        return None
    return "%s.%s.%s" % (klass, match.group(2), match.group(3))


def classify_msmtp(returncode, stderr, log_line=""):
    """The Outcome of one msmtp run, from its exit status and its (C locale) stderr.

    msmtp's exit status alone is misleading for pipe(8): it exits 69 for a 4xx at MAIL or DATA
    (EX_UNAVAILABLE, a bounce), 65 for any refused MAIL FROM or RCPT TO, 77 for a 535, 78 for a
    failed passwordeval, 69 for an untrusted certificate and 68 for a name that does not resolve.
    The reply code and the phase decide instead.
    """
    lines = [line for line in stderr.splitlines() if line.strip()]
    server = [line.split("server message: ", 1)[1] for line in lines if line.startswith("msmtp: server message: ")]
    errors = [
        line[len("msmtp: ") :]
        for line in lines
        if line.startswith("msmtp: ")
        and "server message: " not in line
        and not line.startswith("msmtp: could not send mail")
    ]
    others = [line for line in lines if not line.startswith("msmtp: ")]  # e.g. the token command's own stderr
    reply = _reply(server)
    first_error = errors[0] if errors else ""
    if returncode == 0:
        match = re.search(r"smtpmsg='(.*?)'(?: errormsg=| exitcode=|$)", log_line or "")
        return Outcome(EX_OK, "2.0.0", "sent", "sent: %s" % (match.group(1) if match else "accepted"))
    phase = next((name for prefix, name in _MSMTP_PHASES if first_error.startswith(prefix)), None)
    said = "%s (%s): %s" % (first_error, phase, reply) if reply else first_error
    if phase == "AUTH":
        for pattern, cause in _SELF_CLEARING_REFUSALS:
            if pattern.search(reply):
                return temporary(cause, said, _enhanced(reply, "4") or "4.7.0")
        return temporary("xoauth2_rejected", said, _enhanced(reply, "4") or "4.7.0")
    if phase is not None and reply[:1] in ("4", "5"):
        if reply[:1] == "4":
            return temporary("provider_temporary", said, _enhanced(reply, "4") or "4.0.0")
        for pattern, cause in _SELF_CLEARING_REFUSALS:
            if pattern.search(reply):
                return temporary(cause, said, _enhanced(reply, "4") or "4.0.0")
        return Outcome(EX_UNAVAILABLE, _enhanced(reply, "5") or "5.0.0", "provider_refused", said)
    if first_error.startswith("cannot read output of") or first_error.startswith("cannot get password"):
        detail = "; ".join(others) if others else first_error
        return temporary("token_unavailable", detail, "4.7.0")
    if first_error.startswith("TLS certificate verification failed"):
        return temporary("smtp_certificate_untrusted", first_error, "4.7.5")
    if first_error.startswith("TLS") or "STARTTLS" in first_error or "does not support TLS" in first_error:
        return temporary("smtp_tls_failed", first_error, "4.7.5")
    if "does not support authentication" in first_error or "authentication method" in first_error:
        return temporary("xoauth2_not_offered", said, "4.7.0")
    if first_error.startswith("cannot locate host"):
        return temporary("smtp_dns_failure", first_error, "4.4.3")
    if first_error.startswith("cannot connect to"):
        return temporary("smtp_unreachable", first_error, "4.4.1")
    if first_error.startswith("network read error") or first_error.startswith("network write error"):
        return temporary("smtp_timeout" if "timed out" in first_error else "smtp_unreachable", first_error, "4.4.2")
    if (
        re.match(r"^\S+: line \d+: ", first_error)
        or first_error.startswith("cannot set X509")
        or returncode == EX_CONFIG
    ):
        return temporary("msmtp_config_error", first_error or "exit status %d" % returncode, "4.3.5")
    if reply[:1] == "4":
        return temporary("provider_temporary", said, _enhanced(reply, "4") or "4.0.0")
    return temporary("msmtp_failed", said or "exit status %d without a message" % returncode, "4.3.0")


def pace(config, clock=time.time, sleep=time.sleep):
    """Hold this delivery until send_interval seconds after the account's previous one began.

    The lock on <cache>.pace is held while waiting, so concurrent deliveries of the account leave one
    after another at the provider's rate; the file holds when the last one left.
    """
    interval = config.get("send_interval")
    if not interval:
        return 0.0
    path = config["cache_file"] + ".pace"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            last = float(os.pread(fd, 64, 0).decode("ascii").strip() or 0)
        except ValueError:
            last = 0.0
        wait = min(max(last + interval - clock(), 0.0), interval)
        if wait:
            sleep(wait)
        stamp = ("%.3f" % clock()).encode("ascii")
        os.ftruncate(fd, 0)
        os.pwrite(fd, stamp, 0)
        return wait
    finally:
        os.close(fd)


def deliver(config_path, sender, recipients, stdin=None, script=None):
    """Run msmtp for one message; returns the Outcome (never raises for expected failures)."""
    import subprocess

    try:
        config = load_config(config_path)
    except ConfigError as error:
        return temporary("config_invalid", str(error), "4.3.5")
    secrets = secret_values(config)
    if not recipients:
        return Outcome(EX_USAGE, "5.3.0", "config_invalid", "no recipient on the command line (check master.cf argv)")
    for recipient in recipients:
        if not address_passes_unchanged(recipient):
            return Outcome(
                EX_DATAERR,
                "5.1.3",
                "recipient_syntax_unsupported",
                "recipient %s cannot be passed to msmtp unchanged" % recipient,
            )
    try:
        record = get_token(config)
    except TokenError as error:
        return temporary(error.cause, mask(error.detail, secrets), "4.7.0")
    secrets.append(record["access_token"])
    try:
        pace(config)
    except OSError as error:
        return temporary("token_cache_error", "cannot pace the deliveries: %s" % (error.strerror or error), "4.3.0")
    try:
        msmtprc = ensure_msmtp_config(config, token_command(config_path, script))
    except OSError as error:
        return temporary(
            "token_cache_error", "cannot write the msmtp configuration: %s" % (error.strerror or error), "4.3.0"
        )
    argv = msmtp_argv(config, msmtprc, sender, recipients)
    try:
        result = subprocess.run(
            argv,
            stdin=stdin,
            capture_output=True,
            check=False,
            env=msmtp_environment(config),
            timeout=config["delivery_timeout"],
        )
    except subprocess.TimeoutExpired:
        return temporary("delivery_timeout", "msmtp did not finish within %s s" % config["delivery_timeout"], "4.4.2")
    except OSError as error:
        return temporary("msmtp_config_error", "cannot run %s: %s" % (argv[0], error.strerror or error), "4.3.5")
    outcome = classify_msmtp(
        result.returncode, result.stderr.decode("utf-8", "replace"), result.stdout.decode("utf-8", "replace").strip()
    )
    if outcome.cause == "xoauth2_rejected" and time.time() - record["obtained_at"] > 60:
        # Possibly revoked early: the next attempt fetches a new token. A token refused right after it
        # was issued points at permissions, and fetching again would only load the endpoint.
        with contextlib.suppress(TokenError):
            forget_token(config, record["access_token"])
    outcome.text = mask(outcome.text, secrets)
    return outcome


# --- command line --------------------------------------------------------------------------------


def _describe(error):
    return "%s: %s" % (error.cause, error.detail if isinstance(error, TokenError) else error)


def command_token(args, out, err):
    try:
        config = load_config(args.config)
        record = get_token(config)
    except (ConfigError, TokenError) as error:
        err.write("%s token: %s\n" % (LOG_PREFIX, mask(_describe(error), _secrets_of(args.config))))
        return EX_TEMPFAIL
    out.write(record["access_token"] + "\n")
    return EX_OK


def command_renew(args, out, err, clock=time.time):
    try:
        config = load_config(args.config)
    except ConfigError as error:
        err.write("%s renew: %s\n" % (LOG_PREFIX, _describe(error)))
        return EX_CONFIG
    record = cached_token(read_cache(config["cache_file"]), cache_identity(config))
    now = clock()
    if not args.force and not renew_due(record, now):
        out.write(
            "%s renew: not due; the cached token is valid for %d s more, renewal due in %d s\n"
            % (LOG_PREFIX, record["expires_at"] - now, record["obtained_at"] + record["lifetime"] / 2.0 - now)
        )
        return EX_OK
    try:
        fresh = renew_token(config, clock=clock)
    except TokenError as error:
        left = (
            " (the cached token is valid for %d s more)" % (record["expires_at"] - now)
            if record and record["expires_at"] > now
            else " (no valid token is cached: deliveries are deferred)"
        )
        err.write("%s renew failed: %s%s\n" % (LOG_PREFIX, mask(_describe(error), secret_values(config)), left))
        return EX_TEMPFAIL
    out.write("%s renew: renewed; the new token is valid for %d s\n" % (LOG_PREFIX, fresh["lifetime"]))
    return EX_OK


def parse_deliver_arguments(argv):
    """(config, sender, recipients) from ``--config FILE -f SENDER -- RECIPIENT...``.

    Parsed by hand because pipe(8) expands the sender into its own argument, which may be empty
    (the null sender) or start with a dash; an option parser would take either for a mistake.
    """
    config = sender = None
    index = 0
    while index < len(argv):
        argument = argv[index]
        if argument == "--":
            if config is None or sender is None:
                break
            return config, sender, argv[index + 1 :]
        if argument == "--config" and index + 1 < len(argv):
            config = argv[index + 1]
        elif argument == "-f" and index + 1 < len(argv):
            sender = argv[index + 1]
        else:
            break
        index += 2
    raise ConfigError("argv", "usage: deliver --config FILE -f SENDER -- RECIPIENT... (check the master.cf entry)")


def command_deliver(argv, out, err):
    try:
        config_path, sender, recipients = parse_deliver_arguments(argv)
    except ConfigError as error:
        outcome = temporary("config_invalid", str(error), "4.3.5")
    else:
        outcome = deliver(config_path, sender, recipients)
    out.write(outcome.line() + "\n")
    out.flush()
    return outcome.status


def _secrets_of(path):
    try:
        return secret_values(load_config(path))
    except ConfigError:
        return []


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, "%s: %s\n" % (self.prog, message))


def argument_parser():
    parser = _Parser(prog="oauth2-token", description="OAuth 2.0 tokens and XOAUTH2 delivery for Postfix.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    token = commands.add_parser("token", help="print a valid access token (msmtp's passwordeval)")
    token.add_argument("--config", required=True)
    renew = commands.add_parser("renew", help="renew the cached token once it is past half its lifetime")
    renew.add_argument("--config", required=True)
    renew.add_argument("--force", action="store_true", help="renew now")
    commands.add_parser(
        "deliver", help="the pipe(8) command: deliver --config FILE -f SENDER -- RECIPIENT...", add_help=False
    )
    return parser


def main(argv=None, out=None, err=None):
    out = out or sys.stdout
    err = err or sys.stderr
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["deliver"]:
            return command_deliver(argv[1:], out, err)
        args = argument_parser().parse_args(argv)
        return {"token": command_token, "renew": command_renew}[args.command](args, out, err)
    except Exception as error:  # the mail path must defer, never bounce, on a bug of ours
        out.write("4.3.0 %s internal_error: %s\n" % (LOG_PREFIX, type(error).__name__))
        return EX_TEMPFAIL


if __name__ == "__main__":
    raise SystemExit(main())
