# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A throwaway OAuth 2.0 identity provider and XOAUTH2 submission server for the oauth2 proof.

One process, run inside the proof container (python3 fake_provider.py --dir DIR):

* HTTPS token endpoint on 127.0.0.4:443 for login.microsoftonline.com (the client credentials
  grant on /<tenant>/oauth2/v2.0/token) and oauth2.googleapis.com (the refresh token grant on
  /token), answering with the JSON bodies and AADSTS codes the providers publish;
* SMTP with STARTTLS and AUTH XOAUTH2 on 127.0.0.2:587 (smtp.office365.com: 535 5.7.3 for a bad
  token) and 127.0.0.3:587 (smtp.gmail.com: the 334 JSON error challenge, then 535-5.7.8). Only
  tokens this process issued and that have not expired are accepted;
* a plain HTTP control port on 127.0.0.1:8080: POST /control {"token": "ok"|"down"|"slow"|"http503",
  "lifetime": seconds, "smtp": "ok"|"auth535"|"quota"|"ms_quota"|"mail432"|"data451", "slow_seconds": n};
  POST /expire-tokens; GET /state; GET /issued (the tokens, for the proof's leak search);
  GET /deliveries.

Every accepted message is appended to DIR/deliveries.jsonl with its TLS version, the SASL
mechanism and user, and a fingerprint of the token (never the token itself).
The identities are the fake, public values in accounts.json next to this file.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import datetime
import hashlib
import json
import os
import secrets
import ssl
import threading
import time
import uuid
from email.parser import BytesHeaderParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN_ADDRESS = ("127.0.0.4", 443)
SMTP_ADDRESSES = {"office365": ("127.0.0.2", 587), "gmail": ("127.0.0.3", 587)}
CONTROL_ADDRESS = ("127.0.0.1", 8080)
# Real access tokens are JWTs of 1-2.5 kB: the AUTH line must carry one that long.
SMTP_COMMAND_LIMIT = 8192


def fingerprint(token):
    return hashlib.sha256(token.encode()).hexdigest()[:12]


class State:
    """Issued tokens, failure modes and the delivery record, shared by all listeners."""

    def __init__(self, directory, accounts):
        self.directory = directory
        self.accounts = accounts
        self.lock = threading.Lock()
        self.tokens = {}
        self.control = {"token": "ok", "lifetime": 3599, "smtp": "ok", "slow_seconds": 60}
        self.counters = {"token_requests": 0, "tokens_issued": 0, "auth_ok": 0, "auth_failed": 0, "delivered": 0}
        self.deliveries_path = os.path.join(directory, "deliveries.jsonl")

    def count(self, name):
        with self.lock:
            self.counters[name] += 1

    def issue(self, principal):
        lifetime = int(self.control["lifetime"])
        if principal["kind"] == "microsoft":
            claims = {
                "aud": "https://outlook.office365.com",
                "iss": "https://sts.windows.net/%s/" % principal["tenant_id"],
                "appid": principal["client_id"],
                "tid": principal["tenant_id"],
                "roles": ["SMTP.SendAsApp"],
                "exp": int(time.time()) + lifetime,
                "jti": secrets.token_hex(8),
                "pad": secrets.token_urlsafe(900),
            }
            header = {"typ": "JWT", "alg": "RS256", "kid": "proof"}
            token = (
                ".".join(
                    base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
                    for part in (header, claims)
                )
                + "."
                + secrets.token_urlsafe(256)
            )
        else:
            token = "ya29.a0" + secrets.token_urlsafe(160)
        with self.lock:
            self.tokens[token] = dict(principal, expires_at=time.time() + lifetime)
            self.counters["tokens_issued"] += 1
        return token, lifetime

    def check_token(self, token, user, flavor):
        """None when the token may send as user on this host, else why not."""
        with self.lock:
            grant = self.tokens.get(token)
        if grant is None:
            return "unknown token"
        if grant["expires_at"] <= time.time():
            return "expired token"
        if grant["kind"] != {"office365": "microsoft", "gmail": "google"}[flavor]:
            return "token for another provider"
        if user.lower() not in [mailbox.lower() for mailbox in grant["mailboxes"]]:
            return "token does not grant %s" % user
        return None

    def record(self, entry):
        line = json.dumps(entry, sort_keys=True)
        with self.lock:
            self.counters["delivered"] += 1
            with open(self.deliveries_path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")


def _server_context(directory):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(os.path.join(directory, "server.crt"), os.path.join(directory, "server.key"))
    return context


# --- token endpoint -------------------------------------------------------------------------------


def _aad_error(status, error, code, text):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    body = {
        "error": error,
        "error_description": "AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s"
        % (code, text, trace, correlation, now),
        "error_codes": [code],
        "timestamp": now,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": "https://login.microsoftonline.com/error?code=%d" % code,
    }
    return status, body


def microsoft_grant(accounts, tenant, form):
    """(status, body, principal) for a client credentials request, in Entra ID's order of checks."""
    tenants = accounts["microsoft"]["tenants"]
    tenant_id = tenants.get(tenant.lower(), tenant if tenant in tenants.values() else None)
    if tenant_id is None:
        return _aad_error(
            400,
            "invalid_tenant",
            90002,
            "Tenant '%s' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud. Check with your subscription administrator, this may happen "
            "if there are no active subscriptions for the tenant." % tenant,
        ) + (None,)
    if form.get("grant_type") != "client_credentials":
        return _aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.") + (
            None,
        )
    client_id = form.get("client_id", "")
    app = next(
        (
            app
            for app in accounts["microsoft"]["apps"]
            if app["tenant_id"] == tenant_id and app["client_id"] == client_id
        ),
        None,
    )
    if app is None:
        return _aad_error(
            400,
            "unauthorized_client",
            700016,
            "Application with identifier '%s' was not found in the directory "
            "'Contoso'. This can happen if the application has not been installed by the administrator of the "
            "tenant or consented to by any user in the tenant. You may have sent your authentication request to "
            "the wrong tenant." % client_id,
        ) + (None,)
    if not secrets.compare_digest(form.get("client_secret", ""), app["client_secret"]):
        return _aad_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the "
            "request is the client secret value, not the client secret ID, for a secret added to app '%s'." % client_id,
        ) + (None,)
    if form.get("scope") != "https://outlook.office365.com/.default":
        return _aad_error(
            400,
            "invalid_scope",
            1002012,
            "The provided value for scope %s is not valid. Client credential flows "
            "must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            % form.get("scope", ""),
        ) + (None,)
    principal = {"kind": "microsoft", "tenant_id": tenant_id, "client_id": client_id, "mailboxes": app["mailboxes"]}
    return 200, None, principal


def google_grant(accounts, form):
    client = next(
        (client for client in accounts["google"]["clients"] if client["client_id"] == form.get("client_id")), None
    )
    if client is None:
        return 401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}, None
    if not secrets.compare_digest(form.get("client_secret", ""), client["client_secret"]):
        return 401, {"error": "invalid_client", "error_description": "Unauthorized"}, None
    if form.get("grant_type") != "refresh_token":
        return (
            400,
            {"error": "unsupported_grant_type", "error_description": "Invalid grant_type: %s" % form.get("grant_type")},
            None,
        )
    account = client["refresh_tokens"].get(form.get("refresh_token", ""))
    if account is None:
        return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, None
    return 200, None, {"kind": "google", "client_id": client["client_id"], "mailboxes": [account]}


class TokenHandler(BaseHTTPRequestHandler):
    server_version = "ESTS"
    sys_version = ""

    def log_message(self, fmt, *args):  # the request line is enough, and carries no secret
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Cache-Control", "no-store, no-cache")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        state = self.server.state
        state.count("token_requests")
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(
            (key, values[0]) for key, values in parse_qs(self.rfile.read(length).decode("utf-8", "replace")).items()
        )
        mode = state.control["token"]
        if mode == "slow":
            time.sleep(float(state.control["slow_seconds"]))
        if mode == "http503":
            data = b"<html><body><h1>Service Unavailable</h1></body></html>"
            self.send_response(503)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        parts = self.path.split("?")[0].strip("/").split("/")
        if host == "login.microsoftonline.com" and len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            status, body, principal = microsoft_grant(state.accounts, parts[0], form)
        elif host == "oauth2.googleapis.com" and parts == ["token"]:
            status, body, principal = google_grant(state.accounts, form)
        else:
            self._send(404, {"error": "not_found"})
            return
        if principal is None:
            self._send(status, body)
            return
        token, lifetime = state.issue(principal)
        if principal["kind"] == "microsoft":
            self._send(
                200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}
            )
        else:
            self._send(
                200,
                {
                    "access_token": token,
                    "expires_in": lifetime,
                    "scope": "https://mail.google.com/",
                    "token_type": "Bearer",
                },
            )


class TLSHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, context, state):
        ThreadingHTTPServer.__init__(self, address, handler)
        self.context = context
        self.state = state

    def finish_request(self, request, client_address):
        # The handshake runs in the request's thread, so a slow client cannot stall the listener.
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        ThreadingHTTPServer.finish_request(self, request, client_address)


class TokenListener:
    """The token endpoint; stop() closes the port, so clients see connection refused."""

    def __init__(self, state, context):
        self.state, self.context, self.server, self.thread = state, context, None, None

    def start(self):
        if self.server is None:
            self.server = TLSHTTPServer(TOKEN_ADDRESS, TokenHandler, self.context, self.state)
            self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
            self.thread.start()

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


# --- SMTP -------------------------------------------------------------------------------------------

GOOGLE_BAD_CREDENTIALS = (
    "535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
    "535 5.7.8  https://support.google.com/mail/?p=BadCredentials d9443c01a7336-proof.0 - gsmtp"
)
GOOGLE_DAILY_LIMIT = (
    "550-5.4.5 Daily user sending limit exceeded. For more information on Gmail\r\n"
    "550-5.4.5 sending limits go to\r\n"
    "550 5.4.5  https://support.google.com/a/answer/166852 d9443c01a7336-proof.0 - gsmtp"
)


class LongLineSMTP(SMTP):
    command_size_limit = SMTP_COMMAND_LIMIT
    command_size_limits = collections.defaultdict(lambda: SMTP_COMMAND_LIMIT)
    line_length_limit = SMTP_COMMAND_LIMIT


class SubmissionHandler:
    def __init__(self, state, flavor):
        self.state = state
        self.flavor = flavor

    async def auth_XOAUTH2(self, server, args):
        if len(args) == 2:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            blob = await server.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        fields = dict(part.split("=", 1) for part in blob.decode("utf-8", "replace").split("\x01") if "=" in part)
        user, auth = fields.get("user", ""), fields.get("auth", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        refusal = self.state.check_token(token, user, self.flavor)
        if refusal is None and self.state.control["smtp"] == "auth535":
            refusal = "told to refuse"
        if refusal is not None:
            self.state.count("auth_failed")
            if self.flavor == "office365":
                await server.push("535 5.7.3 Authentication unsuccessful [PROOF01CA0001.namprd00.prod.outlook.com]")
            else:
                error = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})
                await server.challenge_auth(error)  # the client answers with an empty line
                await server.push(GOOGLE_BAD_CREDENTIALS)
            return AuthResult(success=False, handled=True)
        self.state.count("auth_ok")
        message = "235 2.7.0 Authentication successful" if self.flavor == "office365" else "235 2.7.0 Accepted"
        return AuthResult(success=True, message=message, auth_data={"user": user, "token": fingerprint(token)})

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if not session.authenticated:
            if self.flavor == "office365":
                return "530 5.7.57 Client not authenticated to send mail. [PROOF01CA0001.namprd00.prod.outlook.com]"
            return (
                "530-5.7.0 Authentication Required. Learn more at\r\n"
                "530 5.7.0  https://support.google.com/mail/?p=WantAuthError - gsmtp"
            )
        mode = self.state.control["smtp"]
        if mode == "quota":
            return GOOGLE_DAILY_LIMIT
        if mode == "mail432":
            return (
                "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded "
                "[Hostname=PROOF01MB0001.namprd00.prod.outlook.com]"
            )
        envelope.mail_from = address  # '<>' for the null sender: aiosmtpd needs a true value
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0].lower().startswith("refused"):
            if self.flavor == "office365":
                return "550 5.7.1 RESOLVER.RST.NotAuthorized; not authorized"
            return (
                "550-5.7.1 The user or domain that you are sending to (or from) has a policy that\r\n"
                "550 5.7.1 prohibited the mail that you sent. d9443c01a7336-proof.0 - gsmtp"
            )
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server, session, envelope):
        auth = session.auth_data or {}
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        mode = self.state.control["smtp"]
        if mode == "data451":
            return (
                "451 4.7.500 Server busy. Please try again later from [192.0.2.25]. (S77714) "
                "[PROOF01CA0001.namprd00.prod.outlook.com]"
            )
        if mode == "ms_quota":
            return (
                "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message "
                "due to a "
                "permanent exception with message [BeginDiagnosticData]The message can't be submitted because the "
                "sender's "
                "submission quota was exceeded."
            )
        if self.flavor == "office365" and sender and sender.lower() != auth.get("user", "").lower():
            return (
                "554 5.2.252 SendAsDenied; %s not allowed to send as %s; STOREDRV.Submission.Exception:"
                "SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent "
                "exception "
                "with message [BeginDiagnosticData]Cannot submit message." % (auth.get("user"), sender)
            )
        ssl_object = server.transport.get_extra_info("ssl_object")
        headers = BytesHeaderParser().parsebytes(envelope.original_content or envelope.content)
        self.state.record(
            {
                "server": self.flavor,
                "received_at": time.time(),
                "mail_from": sender,
                "rcpt_tos": list(envelope.rcpt_tos),
                "tls_version": ssl_object.version() if ssl_object else None,
                "cipher": ssl_object.cipher()[0] if ssl_object else None,
                "auth_mechanism": "XOAUTH2" if session.authenticated else None,
                "auth_user": auth.get("user"),
                "token": auth.get("token"),
                "message_id": headers.get("Message-ID"),
                "subject": headers.get("Subject"),
                "size": len(envelope.original_content or envelope.content or b""),
            }
        )
        if self.flavor == "office365":
            return "250 2.0.0 OK <%s> [Hostname=PROOF01MB0001.namprd00.prod.outlook.com]" % uuid.uuid4()
        return "250 2.0.0 OK  %d d9443c01a7336-proof.0 - gsmtp" % int(time.time())


class SubmissionController(Controller):
    def __init__(self, handler, address, context, ident):
        self.context = context
        self.ident = ident
        Controller.__init__(self, handler, hostname=address[0], port=address[1])

    def factory(self):
        return LongLineSMTP(
            self.handler,
            tls_context=self.context,
            require_starttls=True,
            auth_require_tls=True,
            auth_exclude_mechanism=["PLAIN"],
            ident=self.ident,
            hostname=self.ident.split()[0],
        )


# --- control ----------------------------------------------------------------------------------------


class ControlHandler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def _json(self, status, body):
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        state = self.server.state
        if self.path == "/state":
            with state.lock:
                self._json(
                    200,
                    {
                        "control": state.control,
                        "counters": state.counters,
                        "token_listener": self.server.token_listener.server is not None,
                    },
                )
        elif self.path == "/issued":  # for the proof's leak search only
            with state.lock:
                self._json(200, list(state.tokens))
        elif self.path == "/deliveries":
            with open(state.deliveries_path, encoding="utf-8") as handle:
                self._json(200, [json.loads(line) for line in handle if line.strip()])
        else:
            self._json(404, {})

    def do_POST(self):
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        change = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/control":
            with state.lock:
                state.control.update(change)
            if change.get("token") == "down":
                self.server.token_listener.stop()
            elif "token" in change:
                self.server.token_listener.start()
            self._json(200, state.control)
        elif self.path == "/expire-tokens":
            with state.lock:
                for grant in state.tokens.values():
                    grant["expires_at"] = 0
            self._json(200, {"expired": len(state.tokens)})
        else:
            self._json(404, {})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", required=True, help="directory with server.crt/server.key; deliveries.jsonl is written here"
    )
    parser.add_argument("--accounts", default=os.path.join(HERE, "accounts.json"))
    args = parser.parse_args()
    with open(args.accounts, encoding="utf-8") as handle:
        accounts = json.load(handle)
    state = State(args.dir, accounts)
    open(state.deliveries_path, "a").close()
    context = _server_context(args.dir)
    token_listener = TokenListener(state, context)
    token_listener.start()
    controllers = []
    for flavor, address in SMTP_ADDRESSES.items():
        ident = {
            "office365": "PROOF01CA0001.outlook.office365.com Microsoft ESMTP MAIL Service ready",
            "gmail": "smtp.gmail.com ESMTP d9443c01a7336-proof.0 - gsmtp",
        }[flavor]
        controller = SubmissionController(SubmissionHandler(state, flavor), address, context, ident)
        controller.start()
        controllers.append(controller)
    control = ThreadingHTTPServer(CONTROL_ADDRESS, ControlHandler)
    control.state = state
    control.token_listener = token_listener
    print("fake provider ready", flush=True)
    control.serve_forever()


if __name__ == "__main__":
    main()
