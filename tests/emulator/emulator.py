#!/usr/bin/env python3
# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""SMTP server that stands in for the smarthosts in smarthost.postfix's tests.

It answers like a provider's submission endpoint: STARTTLS on the plain ports (AUTH only after
it), implicit TLS on the wrapper ports, AUTH PLAIN/LOGIN against the credentials in
providers.json, AUTH XOAUTH2 with tokens from its own OAuth 2.0 token endpoints (oauth.py, HTTPS
in the same process), TLS client certificates from the test CA, and one JSON line per accepted
message, per AUTH attempt, per connection, per token request and per counted refusal in the
state directory. Refusals use the providers' published texts from replies.json. Failure modes
are switched at run time through settings files (see emulatorctl.py) without a restart. Works
with aiosmtpd 1.4.3 (Debian 12) and 1.4.6.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import hmac
import ipaddress
import itertools
import json
import logging
import os
import re
import secrets
import signal
import ssl
import sys
import time
import warnings
from email.utils import getaddresses

from aiosmtpd.smtp import MISSING, SMTP, AuthResult

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import emulatorctl  # noqa: E402  (the settings and record-file formats shared with the control tool)
import oauth  # noqa: E402

log = logging.getLogger("emulator")

REPLY_AUTH_REQUIRED = "530 5.7.0 Authentication required"
SELECTED_HEADERS = ("subject", "from", "to", "cc", "date", "message-id")
TLS_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
MODE_POLL_SECONDS = 0.2
AUTH_LINE_LIMIT = 12288
# aiosmtpd's own size refusals, answered instead with the provider's text.
AIOSMTPD_TOO_MUCH_DATA = "552 Error: Too much mail data"
AIOSMTPD_SIZE_PARAMETER = "552 Error: message size exceeds fixed maximum message size"
# What a token must be issued for to be accepted by the provider's SMTP server.
TOKEN_AUDIENCES = {"office365": "https://outlook.office365.com", "gmail": "https://mail.google.com/"}
DN_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "emailAddress": "emailAddress",
}


def utc_stamp(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".%03dZ" % (int(ts * 1000) % 1000)


def header_summary(content):
    """Selected headers (lower-case names, first occurrence), every X-* header, and the Received count."""
    end = content.find(b"\r\n\r\n")
    if end < 0:
        end = content.find(b"\n\n")
    block = content if end < 0 else content[:end]
    fields = []
    for line in re.split(r"\r?\n", block.decode("utf-8", "replace")):
        if line[:1] in (" ", "\t") and fields:
            fields[-1][1] += " " + line.strip()
        elif ":" in line:
            name, _sep, value = line.partition(":")
            fields.append([name.strip().lower(), value.strip()])
    headers = {}
    received = 0
    for name, value in fields:
        if name == "received":
            received += 1
        elif (name in SELECTED_HEADERS or name.startswith("x-")) and name not in headers:
            headers[name] = value
    return headers, received


def distinguished_name(rdns):
    """An RFC 4514 string (most specific first) from ssl's decoded subject or issuer."""
    parts = []
    for rdn in reversed(rdns or ()):
        parts.append("+".join("%s=%s" % (DN_NAMES.get(key, key), value) for key, value in rdn))
    return ",".join(parts)


def certificate_names(cert):
    names = [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
    names += [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return [n.lower() for n in names]


class Providers:
    """providers.json: who may log in, under which names, and the listen ports."""

    def __init__(self, path):
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        self.listen = data["listen"]
        self.entries = data["providers"]
        self.by_username = {}
        self.by_hostname = {}
        for name, entry in self.entries.items():
            if entry.get("username"):
                self.by_username.setdefault(entry["username"], []).append(name)
            for hostname in entry["hostnames"]:
                self.by_hostname[hostname.lower()] = name
        self.certificate_takers = [n for n, e in self.entries.items() if "certificate" in e.get("auth", [])]

    def match(self, username, password):
        """(provider whose username and password match or None, providers that use this username)."""
        named = self.by_username.get(username, [])
        for name in named:
            if hmac.compare_digest(self.entries[name]["password"].encode("utf-8"), password):
                return name, named
        return None, named

    def reply(self, provider, message_id):
        template = self.entries.get(provider, {}).get("reply", "250 Ok {id}")
        return template.format(id=message_id)

    def certificate_provider(self, names, sni_provider):
        """Who a verified client certificate relays to without AUTH: the SNI's provider if it takes
        certificates, else the first provider that takes this certificate's names (or any name)."""

        def takes(provider):
            wanted = [n.lower() for n in self.entries[provider].get("client_certificate_names", [])]
            return not wanted or any(n in wanted for n in names)

        if sni_provider in self.certificate_takers:
            return sni_provider if takes(sni_provider) else None
        return next((p for p in self.certificate_takers if takes(p)), None)


class Replies:
    """replies.json: each provider's published reply text per case, and the stage it answers at."""

    def __init__(self, path):
        with open(path, encoding="utf-8") as handle:
            self.data = json.load(handle)
        self.cases = self.data["cases"]
        sample = dict.fromkeys(("server", "sid", "mailbox", "address", "region", "addresses"), "x")
        for table in self.cases.values():  # a bad placeholder fails at start, not in a test
            for entry in list(table.get("providers", {}).values()) + [table.get("default")]:
                variants = entry.get("stages", {}).values() if entry and "stages" in entry else [entry]
                for variant in variants:
                    if variant and "reply" in variant:
                        self.join(variant["reply"]).format(**sample)
        sizes = self.cases["message_too_large"]
        sizes = list(sizes["providers"].values()) + [sizes["default"]]
        self.largest_size = max(e["max_size"] for e in sizes)
        self.largest_advertised = max(e["advertised_size"] for e in sizes)

    @staticmethod
    def join(reply):
        return "\r\n".join(reply) if isinstance(reply, list) else reply

    def has(self, case, provider):
        table = self.cases[case]
        return provider in table.get("providers", {}) or "default" in table

    def entry(self, case, provider, stage=None):
        """The entry answering `case` for `provider` (its own, the default, or for a session whose
        provider is not known yet the first listed), resolved to `stage` where it has several."""
        table = self.cases[case]
        listed = table.get("providers", {})
        entry = listed.get(provider) or table.get("default")
        if entry is None and provider is None and listed:
            entry = next(iter(listed.values()))
        if entry and "stages" in entry:
            entry = entry["stages"].get(stage or self.stage(case, provider))
        return entry

    def stage(self, case, provider):
        table = self.cases[case]
        entry = table.get("providers", {}).get(provider) or table.get("default") or {}
        return entry.get("stage") or table.get("stage")

    def text(self, case, provider, stage=None, **values):
        entry = self.entry(case, provider, stage)
        filled = dict.fromkeys(("server", "sid", "mailbox", "address", "region", "addresses"), "")
        filled.update(values)
        return self.join(entry["reply"]).format(**filled)


class SettingsFile:
    """One settings file (mode, oauth, access), re-read whenever it changes (a stat per look)."""

    def __init__(self, directory, kind, on_change=None):
        self.kind = kind
        self.path = os.path.join(directory, emulatorctl.SETTINGS[kind][0])
        self.directory = directory
        self.on_change = on_change
        self.identity = None
        self.settings = emulatorctl.read_settings("/nonexistent", kind)

    def current(self):
        try:
            st = os.stat(self.path)
            identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            identity = None
        if identity != self.identity:
            self.identity = identity
            try:
                settings = emulatorctl.read_settings(self.directory, self.kind)
            except (ValueError, OSError) as error:
                log.error("ignoring unreadable %s: %s", self.path, error)
            else:
                if settings != self.settings:
                    self.settings = settings
                    if self.on_change:
                        self.on_change(settings)
        return self.settings

    @property
    def mode(self):  # the last settings read, without a stat
        return self.settings


class TokenBucket:
    """Accepted-message budget for rate_limit: `rate` tokens a second, at most `burst` saved."""

    def __init__(self, rate, burst):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self):
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class RecordLog:
    """Append-only JSON-lines files: one os.write per record on an O_APPEND descriptor, no fsync.

    A single write keeps each line whole for readers; O_APPEND keeps appending after
    emulatorctl truncates a file in place.
    """

    def __init__(self, directory):
        os.makedirs(directory, exist_ok=True)
        self.fds = {
            kind: os.open(os.path.join(directory, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            for kind, name in emulatorctl.RECORD_FILES.items()
        }

    def write(self, kind, record):
        os.write(self.fds[kind], (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8"))

    def close(self):
        for fd in self.fds.values():
            os.close(fd)


class Emulator:
    """Listeners, shared state and the SMTP hooks (aiosmtpd calls the handle_* methods)."""

    def __init__(self, args):
        self.args = args
        self.providers = Providers(args.providers)
        self.replies = Replies(args.replies)
        self.state_dir = args.state_dir
        self.records = RecordLog(self.state_dir)
        if args.mode:
            emulatorctl.write_mode(self.state_dir, args.mode)
        self.bucket = None
        self.daily_passed = {}
        self.mode_file = SettingsFile(self.state_dir, "mode", self._mode_changed)
        self.oauth_file = SettingsFile(self.state_dir, "oauth", self._settings_changed)
        self.access_file = SettingsFile(self.state_dir, "access", self._settings_changed)
        self.test_ca_subjects = self._ca_subjects("ca.crt")
        self.tls_context = self._server_context("server")
        # No session resumption: untrusted_cert swaps the certificate in the SNI callback, and OpenSSL
        # would resume a session issued under the real certificate (its tickets belong to the first
        # context) without presenting any certificate - something no real man in the middle can do.
        self.tls_context.options |= ssl.OP_NO_TICKET
        self.tls_context.num_tickets = 0
        self.rogue_context = self._server_context("rogue")
        self.tls_context.sni_callback = self._client_hello
        self.https_context = self._server_context("server", client_certificates=False)
        self.token_store = oauth.TokenStore(self.state_dir)
        with open(args.providers, encoding="utf-8") as handle:
            provider_data = json.load(handle)["providers"]
        self.clients = oauth.Clients(provider_data)
        self.token_endpoint = oauth.TokenEndpoint(
            self.replies.data, provider_data, self.token_store, self.oauth_file.current, self.record_token_request
        )
        self.listen = {
            "starttls": args.starttls_ports if args.starttls_ports is not None else self.providers.listen["starttls"],
            "implicit": args.implicit_ports if args.implicit_ports is not None else self.providers.listen["implicit"],
            "https": args.https_ports if args.https_ports is not None else self.providers.listen.get("https", []),
        }
        self.servers = []
        self.https_servers = []
        self.sessions = set()
        self.connection_ids = itertools.count(1)
        self.message_ids = itertools.count(1)
        # Unique across restarts of the same container: start time plus a random tag.
        self.id_prefix = "%011x%s" % (int(time.time() * 1000), secrets.token_hex(3))
        self.stopping = None

    # -- configuration -------------------------------------------------------------------

    def _ca_subjects(self, name):
        path = os.path.join(self.args.certs, name)
        if not os.path.exists(path):
            return []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_verify_locations(path)
        return [cert["subject"] for cert in context.get_ca_certs()]

    def _server_context(self, name, client_certificates=True):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(
            os.path.join(self.args.certs, name + ".crt"), os.path.join(self.args.certs, name + ".key")
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated, and offered on purpose
            context.minimum_version = TLS_VERSIONS[self.args.tls_min]
        if context.minimum_version < ssl.TLSVersion.TLSv1_2:
            # Offer what an old client might ask for, so the records show what the client chose.
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        cas = [os.path.join(self.args.certs, ca) for ca in ("ca.crt", "rogue-ca.crt")]
        if client_certificates and all(os.path.exists(ca) for ca in cas):
            # Ask for a client certificate, optional. Both CAs are trusted for the handshake only, so
            # a rogue client certificate is recorded too; "verified" means issued by the test CA.
            context.verify_mode = ssl.CERT_OPTIONAL
            for ca in cas:
                context.load_verify_locations(ca)
        return context

    def _client_hello(self, ssl_object, server_name, _context):
        """Every TLS handshake passes here: note SNI, and present the rogue certificate in untrusted_cert mode."""
        ssl_object.emulator_sni = server_name
        if self.mode_file.current()["mode"] == "untrusted_cert":
            ssl_object.context = self.rogue_context
            ssl_object.emulator_certificate = "rogue"
        return None

    def _mode_changed(self, mode):
        self.bucket = TokenBucket(mode["rate"], mode["burst"]) if mode["mode"] == "rate_limit" else None
        self.daily_passed = {}
        print(
            "emulator: mode %s" % json.dumps({k: v for k, v in mode.items() if k != "serial"}, sort_keys=True),
            flush=True,
        )

    @staticmethod
    def _settings_changed(settings):
        shown = {k: v for k, v in settings.items() if k != "serial"}
        print("emulator: settings %s" % json.dumps(shown, sort_keys=True), flush=True)

    def mode_for(self, provider):
        """The mode name that applies to a client identified as `provider` (None: not known yet)."""
        mode = self.mode_file.current()
        if mode["providers"] and provider not in mode["providers"]:
            return "normal", mode
        case = emulatorctl.MODE_CASES.get(mode["mode"])
        if case and provider is not None and not self.replies.has(case, provider):
            return "normal", mode
        return mode["mode"], mode

    # -- listeners -----------------------------------------------------------------------

    async def start_listening(self):
        loop = asyncio.get_running_loop()
        for kind, ports in (("starttls", self.listen["starttls"]), ("implicit", self.listen["implicit"])):
            for port in ports:
                server = await loop.create_server(
                    lambda kind=kind, port=port: Session(self, kind, port),
                    host=self.args.host,
                    port=port,
                    reuse_address=True,
                    backlog=512,
                    ssl=self.tls_context if kind == "implicit" else None,
                )
                self.servers.append(server)

    async def start_https(self):
        for port in self.listen["https"]:
            server = await asyncio.start_server(
                self.token_endpoint.handle,
                host=self.args.host,
                port=port,
                ssl=self.https_context,
                reuse_address=True,
                backlog=128,
                limit=oauth.MAX_HEAD,
            )
            self.https_servers.append(server)

    @staticmethod
    async def stop_servers(servers):
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()

    async def stop_listening(self):
        servers, self.servers = self.servers, []
        await self.stop_servers(servers)

    async def stop_https(self):
        servers, self.https_servers = self.https_servers, []
        await self.stop_servers(servers)

    def drop_sessions(self):
        # abort, not close: a TLS close waits for the client's close_notify, which an idle client never sends.
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.abort()

    def write_status(self):
        status = {
            "pid": os.getpid(),
            "listening": bool(self.servers),
            "https_listening": bool(self.https_servers),
            "host": self.args.host,
            "ports": self.listen,
            "mode": self.mode_file.mode,
            "oauth": self.oauth_file.mode,
            "access": self.access_file.mode,
        }
        tmp = os.path.join(self.state_dir, ".status.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(status, handle)
        os.replace(tmp, os.path.join(self.state_dir, emulatorctl.STATUS_FILE))

    async def apply_settings(self):
        """Start or stop listeners as the mode and the oauth settings say; True when anything changed."""
        changed = False
        if self.mode_file.current()["mode"] == "down":
            # down stops listening and drops open sessions (as a stopped server would).
            if self.servers:
                await self.stop_listening()
                self.drop_sessions()
                changed = True
        elif not self.servers:
            await self.start_listening()
            changed = True
        if self.oauth_file.current()["mode"] == "down":
            if self.https_servers:
                await self.stop_https()
                changed = True
        elif not self.https_servers and self.listen["https"]:
            await self.start_https()
            changed = True
        return changed

    async def run(self):
        self.stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        await self.apply_settings()
        self.access_file.current()
        self.write_status()
        print(
            "emulator: listening on %s starttls=%s implicit=%s https=%s state=%s mode=%s"
            % (
                self.args.host,
                ",".join(map(str, self.listen["starttls"])),
                ",".join(map(str, self.listen["implicit"])),
                ",".join(map(str, self.listen["https"])),
                self.state_dir,
                self.mode_file.mode["mode"],
            ),
            flush=True,
        )
        applied = (self.mode_file.mode, self.oauth_file.mode, self.access_file.mode)
        while not self.stopping.is_set():
            current = (self.mode_file.current(), self.oauth_file.current(), self.access_file.current())
            if any(a is not c for a, c in zip(applied, current)):
                await self.apply_settings()
                applied = current
                self.write_status()
            try:
                await asyncio.wait_for(self.stopping.wait(), MODE_POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
        await self.stop_listening()
        await self.stop_https()
        self.drop_sessions()
        for _unused in range(20):
            if not self.sessions:
                break
            await asyncio.sleep(0.1)
        self.records.close()
        try:
            os.unlink(os.path.join(self.state_dir, emulatorctl.STATUS_FILE))
        except FileNotFoundError:
            pass
        print("emulator: stopped", flush=True)

    # -- records -------------------------------------------------------------------------

    def count_reply(self, session, reply, stage, **extra):
        now = time.time()
        record = {
            "time": utc_stamp(now),
            "ts": now,
            "code": reply[:3],
            "reply": reply,
            "stage": stage,
            "connection": session.connection_id,
            "peer": session.peer_host,
            "local_port": session.port,
            "username": session.username,
            "provider": session.provider or session.sni_provider,
        }
        record.update(extra)
        session.replies[record["code"]] = session.replies.get(record["code"], 0) + 1
        self.records.write("replies", record)

    def record_auth(
        self, session, mechanism, username, success, provider, named, reason, credentials_received, token=None
    ):
        now = time.time()
        record = {
            "time": utc_stamp(now),
            "ts": now,
            "connection": session.connection_id,
            "peer": session.peer_host,
            "local_port": session.port,
            "mechanism": mechanism,
            "username": username,
            "success": success,
            "provider": provider,
            "username_providers": named,
            "reason": reason,
            "credentials_received": credentials_received,
        }
        record.update(token or {"token_status": None, "token_ref": None, "token_client_id": None})
        record.update(session.tls_facts())
        session.auth_tries += 1
        self.records.write("auth", record)

    def record_token_request(self, facts):
        now = time.time()
        record = {"time": utc_stamp(now), "ts": now}
        record.update(facts)
        self.records.write("tokens", record)

    # -- AUTH ------------------------------------------------------------------------------

    def authenticated(self, session, username, provider, mechanism, access, token=None):
        session.username, session.provider, session.mechanism = username, provider, mechanism
        session.mailbox, session.access, session.authed_at = username.lower(), access, time.monotonic()
        session.token = token or {}
        return self.replies.text("auth_succeeded", provider)

    def authenticate(self, server, _session, _envelope, mechanism, auth_data):
        """AUTH PLAIN and LOGIN (called by aiosmtpd)."""
        username = auth_data.login.decode("utf-8", "replace")
        provider, named = self.providers.match(username, auth_data.password)
        scope = provider or (named[0] if named else None)
        name, mode = self.mode_for(scope)
        case, stage = "auth_failed", "auth"
        if scope and name == "basic_auth_disabled" and mode["at"] == "auth":
            reason, case = "mode basic_auth_disabled", "basic_auth_disabled"
        elif scope and name == "app_password_required":
            reason, case = "mode app_password_required", "app_password_required"
        elif provider and name == "auth_fail":
            reason = "mode auth_fail"
        elif provider:
            reason = "ok"
        else:
            reason = "wrong password" if named else "unknown username"
        success = reason == "ok"
        self.record_auth(server, mechanism, username, success, provider if success else None, named, reason, True)
        if not success:
            reply = self.replies.text(case, scope, stage, server=self.args.hostname, sid=server.sid)
            self.count_reply(server, reply, "auth", attempted_username=username, provider=scope)
            return AuthResult(success=False, handled=False, message=reply)
        return AuthResult(
            success=True, handled=False, message=self.authenticated(server, username, provider, mechanism, "password")
        )

    async def authenticate_xoauth2(self, session, blob):
        """AUTH XOAUTH2: a token issued here, not expired, of the provider, for this user=."""
        parsed = oauth.parse_xoauth2(blob)
        user, token = parsed if parsed else (oauth.xoauth2_user(blob), None)
        hint = session.sni_provider if session.sni_provider in emulatorctl.OAUTH_PROVIDERS else None
        if parsed is None:
            status, issued = "malformed", None
        else:
            status, issued = self.token_store.check(token, user, hint)
            if issued and status != "foreign" and issued["audience"] != TOKEN_AUDIENCES[issued["provider"]]:
                status = "foreign"  # e.g. an Entra ID token for Microsoft Graph, not for Exchange Online
        # The server the client reached answers: the SNI's provider, else the token's, else the mailbox's.
        provider = hint or (issued or {}).get("provider") or self.clients.mailbox_owner.get((user or "").lower())
        name, _mode = self.mode_for(provider)
        reason = {
            "valid": "ok",
            "expired": "token expired",
            "unknown": "token unknown",
            "malformed": "malformed",
            "foreign": "token of another provider or audience",
            "wrong_user": "user not allowed for token",
        }[status]
        if status == "valid" and name == "auth_fail":
            reason = "mode auth_fail"
        success = reason == "ok"
        facts = {
            "token_status": status,
            "token_ref": oauth.token_ref(token) if token else None,
            "token_client_id": (issued or {}).get("client_id"),
        }
        if issued:
            facts["token_expires_in"] = round(issued["expires"] - time.time(), 1)
        self.record_auth(session, "XOAUTH2", user, success, provider if success else None, [], reason, True, facts)
        if success:
            return AuthResult(
                success=True,
                handled=False,
                message=self.authenticated(session, user, provider, "XOAUTH2", "oauth2", facts),
            )
        entry = self.replies.entry("xoauth2_failed", provider)
        if entry.get("challenge") is not None:
            # Google first answers a 334 with a JSON error and waits for the client's empty line.
            answer = await session.challenge_auth(json.dumps(entry["challenge"], separators=(",", ":")))
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
        reply = self.replies.text("xoauth2_failed", provider, server=self.args.hostname, sid=session.sid)
        self.count_reply(session, reply, "auth", attempted_username=user, token_status=status, provider=provider)
        return AuthResult(success=False, handled=False, message=reply)

    def grant_access(self, session):
        """Relay without AUTH: a verified client certificate or an allow-listed address (access.json)."""
        settings = self.access_file.current()
        cert = session.client_cert
        if cert and cert["verified"]:
            provider = self.providers.certificate_provider(cert["names"], session.sni_provider)
            if provider:
                session.provider, session.access = provider, "client_certificate"
                return
        if not settings["require_client_cert"] and session.peer_host:
            address = ipaddress.ip_address(session.peer_host)
            for provider, networks in settings["allow_ips"].items():
                allowed = any(address in ipaddress.ip_network(n) for n in networks)
                if allowed and session.sni_provider in (None, provider):
                    session.provider, session.access = provider, "ip"
                    return
        if (
            session.sni_provider
            and "certificate" in self.providers.entries[session.sni_provider].get("auth", [])
            and not self.providers.entries[session.sni_provider].get("username")
        ):
            # A client that reached a no-AUTH relay but is not recognised: refused at RCPT, as Exchange does.
            session.provider, session.access = session.sni_provider, "denied"

    # -- the providers' refusals --------------------------------------------------------------

    def refusal(self, session, stage, envelope=None, address=None):
        """The provider's reply refusing this stage under the mode in force, or None. Counted here."""
        provider = session.provider or session.sni_provider
        if session.access == "denied" and stage == "rcpt":
            reply = self.replies.text("relay_access_denied", provider, server=self.args.hostname)
            self.count_reply(session, reply, stage, rcpt_to=[address])
            return reply
        name, mode = self.mode_for(provider if stage != "ehlo" else session.sni_provider)
        reply, extra = None, {}
        values = {"server": self.args.hostname, "sid": session.sid}
        if name in ("throttle", "rate_limit") and stage == "mail":
            if name == "throttle" or (self.bucket is not None and not self.bucket.take()):
                reply = self.replies.text("throttled", provider)
        elif name == "ses_sandbox" and stage == mode["at"]:
            addresses = [address] if stage == "rcpt" else [envelope.mail_from] + envelope.rcpt_tos
            failed = [a for a in addresses if not self.verified(a, mode)]
            if failed:
                reply = self.replies.text(
                    "ses_not_verified", provider, region=mode["region"].upper(), addresses=", ".join(failed)
                )
        elif (
            name == "basic_auth_disabled"
            and mode["at"] == "mail"
            and stage == "mail"
            and session.mechanism in ("PLAIN", "LOGIN")
        ):
            reply = self.replies.text("basic_auth_disabled", provider, "mail", **values)
        elif name == "daily_limit" and stage == (mode["at"] or self.replies.stage("daily_limit", provider)):
            # Counted where the limit is checked, so concurrent sessions never get more than `after` through.
            passed = self.daily_passed.get(provider, 0)
            if passed >= mode["after"]:
                reply = self.replies.text("daily_limit", provider, **values)
                extra = {"accepted_before_limit": passed}
            else:
                self.daily_passed[provider] = passed + 1
        elif name == "concurrency_limit" and stage == self.replies.stage("concurrent_connections", provider):
            rank = self.concurrency_rank(session)
            if rank >= mode["max_connections"]:
                reply = self.replies.text("concurrent_connections", provider, **values)
                extra = {"concurrent_rank": rank + 1}
        elif name in ("send_as_denied", "sender_identity") and stage == "data":
            sender = self.header_sender(envelope)
            allowed = self.verified(sender, mode) or (name == "send_as_denied" and sender == session.mailbox)
            if not allowed:
                case = name
                reply = self.replies.text(case, provider, mailbox=session.mailbox or "", address=sender, **values)
                extra = {"from_address": sender}
        elif name == "try_again_later" and stage == mode["at"]:
            reply = self.replies.text("try_again_later", provider, stage, **values)
            session.close_after_reply = True
        if reply:
            if stage == "mail":
                extra["mail_from"] = address
            elif envelope is not None:
                extra.update(mail_from=envelope.mail_from, rcpt_to=[address] if stage == "rcpt" else envelope.rcpt_tos)
            self.count_reply(session, reply, stage, mode=name, **extra)
        return reply

    def concurrency_rank(self, session):
        """0 for the longest-authenticated open session of this mailbox, 1 for the next, ..."""
        peers = sorted(
            (
                s
                for s in self.sessions
                if s.provider == session.provider and s.mailbox == session.mailbox and s.authed_at is not None
            ),
            key=lambda s: s.authed_at,
        )
        return peers.index(session) if session in peers else len(peers)

    @staticmethod
    def header_sender(envelope):
        """The From header's address (lower case), else the envelope sender."""
        headers, _received = header_summary(envelope.original_content or b"")
        addresses = [a for _name, a in getaddresses([headers.get("from", "")]) if a]
        return (addresses[0] if addresses else envelope.mail_from or "").lower()

    def size_limits(self, session):
        """(advertised, enforced) message size for this session's provider under the mode in force."""
        provider = session.provider or session.sni_provider
        name, mode = self.mode_for(provider)
        if name == "size_limit":
            return mode["max_size"], mode["max_size"]
        if provider is None:
            return self.replies.largest_advertised, self.replies.largest_size
        entry = self.replies.entry("message_too_large", provider)
        return entry["advertised_size"], entry["max_size"]

    def size_refusal(self, session, stage):
        provider = session.provider or session.sni_provider
        reply = self.replies.text("message_too_large", provider, server=self.args.hostname, sid=session.sid)
        self.count_reply(session, reply, stage, max_size=session.data_size_limit)
        return reply

    # -- SMTP hooks --------------------------------------------------------------------------

    async def handle_EHLO(self, server, session, _envelope, hostname, responses):
        # Providers advertise PIPELINING, and Postfix batches MAIL/RCPT/DATA when they do.
        session.host_name = hostname
        advertised, _enforced = self.size_limits(server)
        responses = ["250-SIZE %d" % advertised if r.startswith("250-SIZE ") else r for r in responses]
        return responses[:-1] + ["250-PIPELINING"] + responses[-1:]

    async def handle_MAIL(self, server, _session, envelope, address, mail_options):
        reply = self.refusal(server, "mail", envelope, address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, _session, envelope, address, rcpt_options):
        reply = self.refusal(server, "rcpt", envelope, address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        reply = self.refusal(server, "data", envelope)
        if reply:
            return reply
        now = time.time()
        message_id = "%s-%08x" % (self.id_prefix, next(self.message_ids))
        headers, received = header_summary(envelope.original_content)
        record = {
            "time": utc_stamp(now),
            "ts": now,
            "id": message_id,
            "connection": server.connection_id,
            "peer": server.peer_host,
            "peer_port": server.peer_port,
            "local_port": server.port,
            "ehlo": session.host_name,
            "username": server.username,
            "provider": server.provider,
            "auth_mechanism": server.mechanism,
            "access": server.access,
            "mail_from": envelope.mail_from,
            "rcpt_to": envelope.rcpt_tos,
            "mail_options": envelope.mail_options,
            "headers": headers,
            "received_count": received,
            "size": len(envelope.original_content),
            "token_status": server.token.get("token_status"),
            "token_ref": server.token.get("token_ref"),
            "token_client_id": server.token.get("token_client_id"),
        }
        record.update(server.tls_facts())
        self.records.write("messages", record)
        server.messages += 1
        return self.providers.reply(server.provider, message_id)

    @staticmethod
    def verified(address, mode):
        address = (address or "").lower()
        domain = address.rpartition("@")[2]
        verified = mode.get("verified", [])
        return address in verified or "@" + domain in verified or domain in verified


def initial_response_username(mechanism, argument):
    """The username an AUTH command already carries (initial response), or None; the password is never kept."""
    try:
        decoded = base64.b64decode(argument, validate=True)
    except (binascii.Error, ValueError):
        return None
    if (mechanism or "").upper() == "PLAIN":
        parts = decoded.split(b"\0")
        return parts[1].decode("utf-8", "replace") if len(parts) == 3 else None
    if (mechanism or "").upper() == "XOAUTH2":
        return oauth.xoauth2_user(decoded)
    return decoded.decode("utf-8", "replace")


class Session(SMTP):
    """One client connection; its mode-dependent offer (STARTTLS, AUTH in clear) is fixed when it connects."""

    def __init__(self, emulator, kind, port):
        self.emulator = emulator
        self.kind = kind
        self.port = port
        self.connection_id = None
        self.sid = None
        self.peer_host = self.peer_port = None
        self.opened = None
        self.username = self.provider = self.mechanism = self.mailbox = self.access = None
        self.authed_at = None
        self.token = {}
        self.tls = "implicit" if kind == "implicit" else "none"
        self.tls_version = self.tls_cipher = self.sni = self.certificate = self.client_cert = None
        self.session_error = None
        self.close_after_reply = False
        self.auth_tries = 0  # no auth_ prefix: aiosmtpd takes auth_* members for mechanisms
        self.messages = 0
        self.replies = {}
        self.mode_at_connect = emulator.mode_file.current()["mode"]
        # no_starttls plays the stripping attacker: no STARTTLS, and AUTH offered in the clear, so a
        # client that would leak its password does so and the auth record shows it.
        self.starttls_offered = kind == "starttls" and self.mode_at_connect != "no_starttls"
        super().__init__(
            emulator,
            hostname=emulator.args.hostname,
            ident="ESMTP smarthost.postfix provider emulator",
            tls_context=emulator.tls_context if self.starttls_offered else None,
            require_starttls=False,
            auth_required=True,
            auth_require_tls=self.starttls_offered,
            authenticator=emulator.authenticate,
            enable_SMTPUTF8=True,
            decode_data=False,
            data_size_limit=emulator.replies.largest_advertised,
            timeout=emulator.args.timeout,
            loop=asyncio.get_running_loop(),
        )
        # aiosmtpd keeps these limits in one dict shared by every session (and clears it per
        # session); give each session its own, with room for an XOAUTH2 line (Entra ID tokens are
        # over a kilobyte; RFC 4954 allows 12288 octets).
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self.command_size_limits["AUTH"] = AUTH_LINE_LIMIT

    @property
    def sni_provider(self):
        return self.emulator.providers.by_hostname.get((self.sni or "").lower())

    def tls_facts(self):
        cert = self.client_cert or {}
        return {
            "tls": self.tls,
            "tls_version": self.tls_version,
            "tls_cipher": self.tls_cipher,
            "sni": self.sni,
            "certificate": self.certificate,
            "client_cert_subject": cert.get("subject"),
            "client_cert_issuer": cert.get("issuer"),
            "client_cert_verified": cert.get("verified"),
        }

    def _note_tls(self, transport):
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        self.tls_version = ssl_object.version()
        self.tls_cipher = (ssl_object.cipher() or (None,))[0]
        self.sni = getattr(ssl_object, "emulator_sni", None)
        self.certificate = getattr(ssl_object, "emulator_certificate", "trusted")
        peer = ssl_object.getpeercert()
        if peer:
            self.client_cert = {
                "subject": distinguished_name(peer.get("subject")),
                "issuer": distinguished_name(peer.get("issuer")),
                "verified": peer.get("issuer") in self.emulator.test_ca_subjects,
                "names": certificate_names(peer),
            }

    def connection_made(self, transport):
        if self.transport is None:
            number = next(self.emulator.connection_ids)
            self.connection_id = "%s-c%06d" % (self.emulator.id_prefix, number)
            self.sid = "%s.%d" % (secrets.token_hex(6), number)
            self.opened = time.time()
            peer = transport.get_extra_info("peername") or ("", 0)
            self.peer_host, self.peer_port = peer[0], peer[1]
            self.emulator.sessions.add(self)
        else:
            self.tls = "starttls"
        self._note_tls(transport)
        super().connection_made(transport)
        # The reader's limit is aiosmtpd's line_length_limit (1001) and also caps command lines;
        # DATA lines keep their RFC 5321 limit through aiosmtpd's own check of line_length_limit.
        if getattr(self, "_reader", None) is not None:
            self._reader._limit = AUTH_LINE_LIMIT + 2

    def connection_lost(self, error):
        if self in self.emulator.sessions:
            self.emulator.sessions.discard(self)
            now = time.time()
            record = {
                "time": utc_stamp(self.opened),
                "ts": self.opened,
                "closed": utc_stamp(now),
                "duration": round(now - self.opened, 3),
                "connection": self.connection_id,
                "peer": self.peer_host,
                "peer_port": self.peer_port,
                "local_port": self.port,
                "mode": self.mode_at_connect,
                "starttls_offered": self.starttls_offered,
                "ehlo": self.session.host_name if self.session else None,
                "auth_attempts": self.auth_tries,
                "username": self.username,
                "provider": self.provider,
                "auth_mechanism": self.mechanism,
                "access": self.access,
                "token_status": self.token.get("token_status"),
                "messages": self.messages,
                "replies": self.replies,
                "error": self.session_error,
            }
            record.update(self.tls_facts())
            self.emulator.records.write("connections", record)
        super().connection_lost(error)

    async def push(self, status):
        if status == AIOSMTPD_TOO_MUCH_DATA:
            status = self.emulator.size_refusal(self, "data")
        elif status == AIOSMTPD_SIZE_PARAMETER:
            status = self.emulator.size_refusal(self, "mail")
        await super().push(status)
        if self.close_after_reply and self.transport is not None:
            # Replies that close the connection (421): the client sees the close after the text.
            self.close_after_reply = False
            self.transport.close()

    async def handle_exception(self, error):
        # A failed STARTTLS handshake (e.g. a client refusing the rogue certificate) is expected
        # here: keep it as one log line and in the connection record instead of a traceback.
        cause = error.__cause__ or error
        self.session_error = "%s: %s" % (type(cause).__name__, cause)
        log.warning("%s %s:%s: %s", self.connection_id, self.peer_host, self.peer_port, self.session_error)
        return "451 4.3.0 Error: %s" % type(cause).__name__

    async def check_auth_needed(self, caller_method):
        if not self.session.authenticated:
            if self.access is None:
                self.emulator.grant_access(self)
            if self.access in ("client_certificate", "ip", "denied"):
                return False
        needed = await super().check_auth_needed(caller_method)
        if needed:
            self.emulator.count_reply(self, REPLY_AUTH_REQUIRED, caller_method.lower())
        return needed

    async def smtp_EHLO(self, hostname):
        if hostname:
            reply = self.emulator.refusal(self, "ehlo")
            if reply:
                await self.push(reply)
                return
        await super().smtp_EHLO(hostname)

    async def smtp_MAIL(self, arg):
        # The size a MAIL FROM SIZE= may announce, and DATA may carry, is the provider's.
        self.data_size_limit = self.emulator.size_limits(self)[1]
        await super().smtp_MAIL(arg)

    async def smtp_DATA(self, arg):
        self.data_size_limit = self.emulator.size_limits(self)[1]
        if not arg and self.envelope.rcpt_tos and (self.session.authenticated or self.access):
            reply = self.emulator.refusal(self, "data_command", self.envelope)
            if reply:
                await self.push(reply)
                return
        await super().smtp_DATA(arg)

    async def smtp_AUTH(self, arg):
        # AUTH refused before any credential exchange (in the clear, unknown mechanism, syntax) never
        # reaches the authenticator; record it too, with whatever credential the command line carried.
        args = (arg or "").split()
        mechanism = args[0] if args else None
        in_clear_refused = self._auth_require_tls and not self._tls_protocol
        if in_clear_refused or mechanism not in self._auth_methods or self.session.authenticated:
            username = initial_response_username(mechanism, args[1]) if len(args) > 1 else None
            reason = "refused: not over TLS" if in_clear_refused else "refused before credentials"
            self.emulator.record_auth(self, mechanism, username, False, None, [], reason, len(args) > 1)
        await super().smtp_AUTH(arg)

    async def auth_XOAUTH2(self, _server, args):
        """SASL XOAUTH2: the initial response on the AUTH line, or after an empty 334."""
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        return await self.emulator.authenticate_xoauth2(self, blob)


def parse_ports(text):
    return [int(p) for p in text.split(",") if p.strip()] if text is not None else None


def build_parser():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description="SMTP provider emulator for smarthost.postfix tests.")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument(
        "--starttls-ports", type=parse_ports, help="comma-separated STARTTLS ports (default: providers.json listen)"
    )
    parser.add_argument(
        "--implicit-ports", type=parse_ports, help="comma-separated implicit-TLS ports (default: providers.json listen)"
    )
    parser.add_argument(
        "--https-ports",
        type=parse_ports,
        help="comma-separated ports of the OAuth token endpoints (default: providers.json listen; '' for none)",
    )
    parser.add_argument(
        "--certs",
        default="/etc/emulator/certs",
        help="directory with server.crt/key, rogue.crt/key, and ca.crt/rogue-ca.crt for client certificates",
    )
    parser.add_argument("--state-dir", default=emulatorctl.state_dir(), help="records, settings and status files")
    parser.add_argument("--providers", default=os.path.join(here, "providers.json"))
    parser.add_argument("--replies", default=os.path.join(here, "replies.json"))
    parser.add_argument(
        "--mode", help="mode to start in (written to the mode file); default: the mode file's, else normal"
    )
    parser.add_argument("--hostname", default="emulator", help="name in the greeting, EHLO reply and provider texts")
    parser.add_argument(
        "--tls-min",
        default="TLSv1",
        choices=sorted(TLS_VERSIONS),
        help="lowest TLS version accepted (default TLSv1: records show what clients choose)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="idle session timeout in seconds")
    parser.add_argument("--verbose", action="store_true", help="log every SMTP command (slow)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    # aiosmtpd logs every command at INFO and warns about AUTH without STARTTLS on implicit-TLS ports.
    logging.getLogger("mail.log").setLevel(logging.INFO if args.verbose else logging.ERROR)
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    emulator = Emulator(args)
    asyncio.run(emulator.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
