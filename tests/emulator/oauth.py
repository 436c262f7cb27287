# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""OAuth 2.0 for the provider emulator: the token endpoints and the tokens they issue.

Two endpoints on one HTTPS port, told apart by path as the real ones are by host:

* Microsoft identity platform, client credentials grant:
  ``POST /<tenant>/oauth2/v2.0/token`` (login.microsoftonline.com) with client_id, client_secret,
  scope=https://outlook.office365.com/.default, grant_type=client_credentials.
* Google OAuth 2.0, refresh token grant: ``POST /token`` (oauth2.googleapis.com) with client_id,
  client_secret, refresh_token, grant_type=refresh_token.

Credentials come from providers.json, reply texts from replies.json (token_endpoint). Issued
tokens are kept in the state directory, so SMTP's AUTH XOAUTH2 accepts only tokens issued here,
not expired, for the provider, client and mailbox they belong to, also across a restart. One JSON
line per token request goes to tokens.jsonl; secrets and refresh tokens are never written.
Standard library only (asyncio), as Debian 12's python3 ships it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import ssl
import tempfile
import time
import uuid
from urllib.parse import parse_qs, unquote_plus

log = logging.getLogger("emulator.oauth")

MICROSOFT_PATH = re.compile(r"^/([^/?#]+)/oauth2/v2\.0/token$")
GOOGLE_PATH = "/token"
MAX_HEAD = 16384
MAX_BODY = 65536
READ_TIMEOUT = 30.0
TOKENS_FILE = "issued-tokens.json"
# Expired tokens are kept this long, so a late use is reported as expired rather than unknown.
EXPIRED_KEPT_SECONDS = 86400
HTTP_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def token_ref(token):
    """A short, stable reference to a token for the records (the token itself is a credential)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def parse_xoauth2(blob):
    """(user, token) from a decoded XOAUTH2 initial response, or None when it is not one.

    The format is "user=" {User} "^Aauth=Bearer " {Access Token} "^A^A" (Google's and Microsoft's
    protocol pages); the order of the two fields is not checked.
    """
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.endswith("\x01\x01"):
        return None
    fields = {}
    for part in text[:-2].split("\x01"):
        key, sep, value = part.partition("=")
        if not sep:
            return None
        fields[key.lower()] = value
    scheme, _sep, token = fields.get("auth", "").partition(" ")
    if "user" not in fields or scheme.lower() != "bearer" or not token:
        return None
    return fields["user"], token


def xoauth2_user(blob):
    """The user= value of a (possibly malformed) XOAUTH2 response, for the records; never the token."""
    try:
        text = blob.decode("utf-8", "replace")
    except AttributeError:
        return None
    match = re.search(r"(?:^|\x01)user=([^\x01]*)", text)
    return match.group(1) if match else None


class Clients:
    """The OAuth clients of providers.json: Entra ID apps per tenant, Google clients and their refresh tokens."""

    def __init__(self, providers):
        self.microsoft = {}
        self.tenants = {}
        self.google = {}
        office365 = providers.get("office365", {}).get("oauth2")
        if office365:
            tenant = office365["tenant_id"].lower()
            self.tenants[tenant] = tenant
            self.tenants[office365["tenant_domain"].lower()] = tenant
            for app in [office365] + office365.get("extra_clients", []):
                self.microsoft[app["client_id"].lower()] = {
                    "client_id": app["client_id"],
                    "secret": app["client_secret"],
                    "tenant": tenant,
                    "mailboxes": [m.lower() for m in app.get("mailboxes", [])],
                }
        gmail = providers.get("gmail", {}).get("oauth2")
        if gmail:
            self.google[gmail["client_id"]] = {
                "client_id": gmail["client_id"],
                "secret": gmail["client_secret"],
                "refresh_tokens": {gmail["refresh_token"]: gmail["account"].lower()},
                "scope": gmail["scope"],
            }
        self.mailbox_owner = {}
        for app in self.microsoft.values():
            for mailbox in app["mailboxes"]:
                self.mailbox_owner.setdefault(mailbox, "office365")
        for client in self.google.values():
            for account in client["refresh_tokens"].values():
                self.mailbox_owner.setdefault(account, "gmail")


class TokenStore:
    """Tokens issued here: what each was issued for and until when, persisted in the state directory."""

    def __init__(self, directory):
        self.path = os.path.join(directory, TOKENS_FILE)
        self.tokens = {}
        try:
            with open(self.path, encoding="utf-8") as handle:
                self.tokens = json.load(handle)
        except FileNotFoundError:
            pass
        except ValueError as error:
            log.error("ignoring unreadable %s: %s", self.path, error)

    def issue(self, provider, client_id, audience, mailboxes, lifetime, subject):
        now = time.time()
        if provider == "office365":
            # A JWT-shaped token, as Entra ID issues; signed with nothing anyone could verify.
            header = {"typ": "JWT", "alg": "RS256", "kid": "smarthost-emulator"}
            claims = {
                "aud": audience,
                "iss": "https://sts.windows.net/%s/" % subject,
                "iat": int(now),
                "nbf": int(now),
                "exp": int(now + lifetime),
                "appid": client_id,
                "tid": subject,
                "roles": ["SMTP.SendAsApp"],
                "ver": "1.0",
                "jti": secrets.token_hex(8),
            }
            token = ".".join(
                [
                    _b64url(json.dumps(header).encode()),
                    _b64url(json.dumps(claims).encode()),
                    _b64url(secrets.token_bytes(64)),
                ]
            )
        else:
            token = "ya29.emulator-" + secrets.token_urlsafe(48)
        self.tokens[token] = {
            "provider": provider,
            "client_id": client_id,
            "audience": audience,
            "mailboxes": mailboxes,
            "issued": now,
            "expires": now + lifetime,
        }
        self._save(now)
        return token

    def _save(self, now):
        self.tokens = {t: r for t, r in self.tokens.items() if r["expires"] + EXPIRED_KEPT_SECONDS > now}
        fd, tmp = tempfile.mkstemp(prefix=".tokens.", dir=os.path.dirname(self.path))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.tokens, handle)
        os.replace(tmp, self.path)

    def check(self, token, user, provider_hint=None):
        """(status, record): valid, expired, unknown, foreign (another provider's), wrong_user."""
        record = self.tokens.get(token) if token else None
        if record is None:
            return "unknown", None
        if provider_hint and record["provider"] != provider_hint:
            return "foreign", record
        if record["expires"] <= time.time():
            return "expired", record
        if (user or "").lower() not in record["mailboxes"]:
            return "wrong_user", record
        return "valid", record


class Response:
    def __init__(self, status, body, content_type="application/json; charset=utf-8"):
        self.status = status
        self.body = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode("utf-8")
        self.content_type = content_type

    def encode(self):
        head = [
            "HTTP/1.1 %d %s" % (self.status, HTTP_REASONS.get(self.status, "Status")),
            "Content-Type: %s" % self.content_type,
            "Content-Length: %d" % len(self.body),
            "Cache-Control: no-store",
            "Pragma: no-cache",
            "Connection: close",
            "",
            "",
        ]
        return "\r\n".join(head).encode("ascii") + self.body


class TokenEndpoint:
    """The HTTPS side: parse one request per connection, answer it, record it.

    `settings()` returns the oauth settings in force (emulatorctl.parse_oauth), `record(dict)`
    writes a tokens.jsonl line.
    """

    def __init__(self, replies, providers, store, settings, record):
        table = replies["token_endpoint"]
        self.errors = {"microsoft": table["microsoft"]["errors"], "google": table["google"]["errors"]}
        self.clients = Clients(providers)
        self.store = store
        self.settings = settings
        self.record = record

    # -- replies -----------------------------------------------------------------------------

    def microsoft_error(self, name, **values):
        entry = self.errors["microsoft"][name]
        now = time.gmtime()
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", now)
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        description = "AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s" % (
            entry["code"],
            entry["description"].format(**values),
            trace,
            correlation,
            stamp,
        )
        body = {
            "error": entry["error"],
            "error_description": description,
            "error_codes": [entry["code"]],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": "https://login.microsoftonline.com/error?code=%d" % entry["code"],
        }
        return Response(entry["http_status"], body), entry

    def google_error(self, name, **values):
        entry = self.errors["google"][name]
        body = {"error": entry["error"], "error_description": entry["description"].format(**values)}
        return Response(entry["http_status"], body), entry

    def error(self, endpoint, name, **values):
        return self.microsoft_error(name, **values) if endpoint == "microsoft" else self.google_error(name, **values)

    # -- grants ------------------------------------------------------------------------------

    @staticmethod
    def client_credentials(form, headers):
        """client_id and client_secret from the form or from HTTP Basic (client_secret_basic)."""
        client_id, secret = form.get("client_id"), form.get("client_secret")
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                decoded = ""
            user, sep, password = decoded.partition(":")
            if sep:
                client_id, secret = client_id or unquote_plus(user), secret or unquote_plus(password)
        return client_id, secret

    def microsoft_grant(self, tenant, form, headers, facts, lifetime):
        grant = form.get("grant_type")
        if not grant:
            return self.microsoft_error("missing_parameter", parameter="grant_type")
        if grant != "client_credentials":
            return self.microsoft_error("unsupported_grant_type", grant_type=grant)
        tenant_key = self.clients.tenants.get(tenant.lower())
        if tenant_key is None:
            return self.microsoft_error("tenant_not_found", tenant=tenant)
        client_id, secret = self.client_credentials(form, headers)
        facts["client_id"] = client_id
        if not client_id:
            return self.microsoft_error("missing_parameter", parameter="client_id")
        app = self.clients.microsoft.get(client_id.lower())
        if app is None or app["tenant"] != tenant_key:
            return self.microsoft_error("app_not_found", client_id=client_id, tenant=tenant)
        if not secret:
            return self.microsoft_error("missing_client_secret")
        if not hmac.compare_digest(app["secret"].encode("utf-8"), secret.encode("utf-8")):
            return self.microsoft_error("invalid_client_secret", client_id=app["client_id"])
        scope = form.get("scope")
        facts["scope"] = scope
        if not scope:
            return self.microsoft_error("missing_parameter", parameter="scope")
        if len(scope.split()) != 1 or not scope.endswith("/.default"):
            return self.microsoft_error("invalid_scope", scope=scope)
        audience = scope[: -len("/.default")]
        token = self.store.issue("office365", app["client_id"], audience, app["mailboxes"], lifetime, tenant_key)
        facts.update(token_ref=token_ref(token), expires_in=lifetime, audience=audience)
        return Response(
            200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}
        ), None

    def google_grant(self, form, headers, facts, lifetime):
        grant = form.get("grant_type")
        if grant != "refresh_token":
            return self.google_error("unsupported_grant_type", grant_type=grant or "")
        client_id, secret = self.client_credentials(form, headers)
        facts["client_id"] = client_id
        if not client_id:
            return self.google_error("missing_client_id")
        client = self.clients.google.get(client_id)
        if client is None:
            return self.google_error("client_not_found")
        if not secret or not hmac.compare_digest(client["secret"].encode("utf-8"), secret.encode("utf-8")):
            return self.google_error("invalid_client_secret")
        refresh_token = form.get("refresh_token")
        if not refresh_token:
            return self.google_error("missing_refresh_token")
        account = client["refresh_tokens"].get(refresh_token)
        facts["refresh_token_known"] = account is not None
        if account is None:
            return self.google_error("invalid_grant")
        token = self.store.issue("gmail", client_id, client["scope"], [account], lifetime, account)
        facts.update(token_ref=token_ref(token), expires_in=lifetime, scope=client["scope"], account=account)
        return Response(
            200, {"access_token": token, "expires_in": lifetime, "scope": client["scope"], "token_type": "Bearer"}
        ), None

    def answer(self, method, path, headers, body, facts):
        """The response to one request; `facts` collects what the record says about it."""
        settings = self.settings()
        target = path.split("?", 1)[0]
        match = MICROSOFT_PATH.match(target)
        if match:
            endpoint, provider = "microsoft", "office365"
            facts["tenant"] = unquote_plus(match.group(1))
        elif target == GOOGLE_PATH:
            endpoint, provider = "google", "gmail"
        else:
            return Response(
                404, {"error": "not_found", "error_description": "emulator: no token endpoint at %s" % target}
            ), None
        facts.update(endpoint=endpoint, provider=provider)
        if method != "POST":
            return Response(405, {"error": "invalid_request", "error_description": "emulator: use POST"}), None
        try:
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            form = {}
        facts["grant_type"] = form.get("grant_type")
        mode = settings["mode"]
        applies = not settings["providers"] or provider in settings["providers"]
        if applies and mode in ("http_500", "http_503"):
            status = int(mode[5:])
            text = "emulator: token endpoint answers HTTP %d (oauth mode %s)\n" % (status, mode)
            return Response(status, text.encode(), "text/plain; charset=utf-8"), None
        if applies and mode in self.errors[endpoint]:
            values = {
                "client_id": form.get("client_id") or "",
                "tenant": facts.get("tenant", ""),
                "scope": form.get("scope") or "",
                "grant_type": form.get("grant_type") or "",
                "parameter": "grant_type",
            }
            facts["client_id"] = form.get("client_id")
            return self.error(endpoint, mode, **values)
        lifetime = settings["token_lifetime"]
        if endpoint == "microsoft":
            return self.microsoft_grant(facts["tenant"], form, headers, facts, lifetime)
        return self.google_grant(form, headers, facts, lifetime)

    # -- HTTP --------------------------------------------------------------------------------

    async def handle(self, reader, writer):
        peer = writer.get_extra_info("peername") or ("", 0)
        started = time.time()
        facts = {"peer": peer[0]}
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except (
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                asyncio.TimeoutError,
                ConnectionError,
                ssl.SSLError,
            ) as error:
                log.info("%s: no request (%s)", peer[0], type(error).__name__)
                return
            lines = head.decode("iso-8859-1").split("\r\n")
            method, _sep, rest = lines[0].partition(" ")
            path = rest.rpartition(" ")[0] or rest
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            facts.update(method=method, path=path.split("?", 1)[0], host=headers.get("host"))
            response, refusal = None, None
            if "chunked" in headers.get("transfer-encoding", "").lower():
                response = Response(
                    411, {"error": "invalid_request", "error_description": "emulator: send Content-Length"}
                )
                body = b""
            else:
                try:
                    length = int(headers.get("content-length", "0"))
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY:
                    response = Response(
                        413, {"error": "invalid_request", "error_description": "emulator: body too large"}
                    )
                    body = b""
                else:
                    body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT)
            if response is None:
                response, refusal = self.answer(method, path, headers, body, facts)
            settings = self.settings()
            if settings["mode"] == "slow" and (
                not settings["providers"] or facts.get("provider") in settings["providers"]
            ):
                await asyncio.sleep(settings["delay"])
            if refusal:
                error = refusal["error"]
            else:
                error = None if response.status == 200 else "http_%d" % response.status
            facts.update(
                http_status=response.status,
                success=response.status == 200,
                error=error,
                error_code=refusal.get("code") if refusal else None,
            )
            # Recorded before the answer leaves, so a client that has its answer finds the record.
            self._record(facts, started)
            writer.write(response.encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, ssl.SSLError) as error:
            if "method" in facts and "http_status" not in facts:
                facts.update(success=False, error="connection: %s" % type(error).__name__)
                self._record(facts, started)
        finally:
            writer.close()

    def _record(self, facts, started):
        facts.update(oauth_mode=self.settings()["mode"], duration=round(time.time() - started, 3))
        self.record(facts)
