#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SMTP server that stands in for the smarthosts in smarthost.postfix's tests.

It answers like a provider's submission endpoint: STARTTLS on the plain ports (AUTH only after
it), implicit TLS on the wrapper ports, AUTH PLAIN/LOGIN against the credentials in
providers.json, and one JSON line per accepted message, per AUTH attempt, per connection and per
counted refusal in the state directory. Failure modes are switched at run time through the
mode file (see emulatorctl.py) without a restart. Works with aiosmtpd 1.4.3 (Debian 12) and
1.4.6.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
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

from aiosmtpd.smtp import SMTP, AuthResult

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import emulatorctl  # noqa: E402  (the mode and record-file format shared with the control tool)

log = logging.getLogger("emulator")

REPLY_AUTH_REQUIRED = "530 5.7.0 Authentication required"
REPLY_AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
REPLY_THROTTLED = "454 4.7.0 Throttling failure: Maximum sending rate exceeded."
REPLY_NOT_VERIFIED = ("554 Message rejected: Email address is not verified. "
                      "The following identities failed the check in region {region}: {addresses}")
SELECTED_HEADERS = ("subject", "from", "to", "cc", "date", "message-id")
TLS_VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
                "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
MODE_POLL_SECONDS = 0.2


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


class Providers:
    """providers.json: who may log in, and the listen ports."""

    def __init__(self, path):
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        self.listen = data["listen"]
        self.entries = data["providers"]
        self.by_username = {}
        for name, entry in self.entries.items():
            self.by_username.setdefault(entry["username"], []).append(name)

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


class ModeFile:
    """The mode in force, re-read whenever the mode file changes (a stat per look)."""

    def __init__(self, directory, on_change):
        self.path = os.path.join(directory, emulatorctl.MODE_FILE)
        self.directory = directory
        self.on_change = on_change
        self.identity = None
        self.mode = emulatorctl.parse_mode("normal")

    def current(self):
        try:
            st = os.stat(self.path)
            identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            identity = None
        if identity != self.identity:
            self.identity = identity
            try:
                mode = emulatorctl.read_mode(self.directory)
            except (ValueError, OSError) as error:
                log.error("ignoring unreadable mode file %s: %s", self.path, error)
            else:
                if mode != self.mode:
                    self.mode = mode
                    self.on_change(mode)
        return self.mode


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
        self.fds = {kind: os.open(os.path.join(directory, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    for kind, name in emulatorctl.RECORD_FILES.items()}

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
        self.state_dir = args.state_dir
        self.records = RecordLog(self.state_dir)
        if args.mode:
            emulatorctl.write_mode(self.state_dir, args.mode)
        self.bucket = None
        self.mode_file = ModeFile(self.state_dir, self._mode_changed)
        self.tls_context = self._server_context("server")
        self.rogue_context = self._server_context("rogue")
        self.tls_context.sni_callback = self._client_hello
        self.listen = {
            "starttls": args.starttls_ports if args.starttls_ports is not None else self.providers.listen["starttls"],
            "implicit": args.implicit_ports if args.implicit_ports is not None else self.providers.listen["implicit"],
        }
        self.servers = []
        self.sessions = set()
        self.connection_ids = itertools.count(1)
        self.message_ids = itertools.count(1)
        # Unique across restarts of the same container: start time plus a random tag.
        self.id_prefix = "%011x%s" % (int(time.time() * 1000), secrets.token_hex(3))
        self.stopping = None

    # -- configuration -------------------------------------------------------------------

    def _server_context(self, name):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.path.join(self.args.certs, name + ".crt"), os.path.join(self.args.certs, name + ".key"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated, and offered on purpose
            context.minimum_version = TLS_VERSIONS[self.args.tls_min]
        if context.minimum_version < ssl.TLSVersion.TLSv1_2:
            # Offer what an old client might ask for, so the records show what the client chose.
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
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
        print("emulator: mode %s" % json.dumps({k: v for k, v in mode.items() if k != "serial"}, sort_keys=True), flush=True)

    def mode_for(self, provider):
        """The mode name that applies to a client identified as `provider` (None before AUTH)."""
        mode = self.mode_file.current()
        if mode["providers"] and provider not in mode["providers"]:
            return "normal", mode
        return mode["mode"], mode

    # -- listeners -----------------------------------------------------------------------

    async def start_listening(self):
        loop = asyncio.get_running_loop()
        for kind, ports in (("starttls", self.listen["starttls"]), ("implicit", self.listen["implicit"])):
            for port in ports:
                server = await loop.create_server(
                    lambda kind=kind, port=port: Session(self, kind, port),
                    host=self.args.host, port=port, reuse_address=True, backlog=512,
                    ssl=self.tls_context if kind == "implicit" else None)
                self.servers.append(server)

    async def stop_listening(self):
        servers, self.servers = self.servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()

    def drop_sessions(self):
        # abort, not close: a TLS close waits for the client's close_notify, which an idle client never sends.
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.abort()

    def write_status(self):
        status = {
            "pid": os.getpid(),
            "listening": bool(self.servers),
            "host": self.args.host,
            "ports": self.listen,
            "mode": self.mode_file.mode,
        }
        tmp = os.path.join(self.state_dir, ".status.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(status, handle)
        os.replace(tmp, os.path.join(self.state_dir, emulatorctl.STATUS_FILE))

    async def run(self):
        self.stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        mode = self.mode_file.current()
        if mode["mode"] != "down":
            await self.start_listening()
        self.write_status()
        print("emulator: listening on %s starttls=%s implicit=%s state=%s mode=%s" % (
            self.args.host, ",".join(map(str, self.listen["starttls"])), ",".join(map(str, self.listen["implicit"])),
            self.state_dir, mode["mode"]), flush=True)
        applied = mode
        while not self.stopping.is_set():
            mode = self.mode_file.current()
            if mode is not applied:
                # down stops listening and drops open sessions (as a stopped server would); any other mode listens.
                if mode["mode"] == "down" and self.servers:
                    await self.stop_listening()
                    self.drop_sessions()
                elif mode["mode"] != "down" and not self.servers:
                    await self.start_listening()
                applied = mode
                self.write_status()
            try:
                await asyncio.wait_for(self.stopping.wait(), MODE_POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
        await self.stop_listening()
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
            "time": utc_stamp(now), "ts": now, "code": reply[:3], "reply": reply, "stage": stage,
            "connection": session.connection_id, "peer": session.peer_host, "local_port": session.port,
            "username": session.username, "provider": session.provider,
        }
        record.update(extra)
        session.replies[record["code"]] = session.replies.get(record["code"], 0) + 1
        self.records.write("replies", record)

    def record_auth(self, session, mechanism, username, success, provider, named, reason, credentials_received):
        now = time.time()
        record = {
            "time": utc_stamp(now), "ts": now, "connection": session.connection_id,
            "peer": session.peer_host, "local_port": session.port,
            "mechanism": mechanism, "username": username, "success": success, "provider": provider,
            "username_providers": named, "reason": reason, "credentials_received": credentials_received,
        }
        record.update(session.tls_facts())
        session.auth_tries += 1
        self.records.write("auth", record)

    # -- AUTH ------------------------------------------------------------------------------

    def authenticate(self, server, _session, _envelope, mechanism, auth_data):
        username = auth_data.login.decode("utf-8", "replace")
        provider, named = self.providers.match(username, auth_data.password)
        scope = provider or (named[0] if named else None)
        if provider and self.mode_for(scope)[0] == "auth_fail":
            provider_ok, reason = False, "mode auth_fail"
        elif provider:
            provider_ok, reason = True, "ok"
        else:
            provider_ok, reason = False, "wrong password" if named else "unknown username"
        self.record_auth(server, mechanism, username, provider_ok, provider if provider_ok else None, named, reason, True)
        if not provider_ok:
            self.count_reply(server, REPLY_AUTH_INVALID, "auth", attempted_username=username)
            return AuthResult(success=False, handled=False, message=REPLY_AUTH_INVALID)
        server.username, server.provider, server.mechanism = username, provider, mechanism
        return AuthResult(success=True, handled=False)

    # -- SMTP hooks --------------------------------------------------------------------------

    async def handle_EHLO(self, _server, session, _envelope, hostname, responses):
        # Providers advertise PIPELINING, and Postfix batches MAIL/RCPT/DATA when they do.
        session.host_name = hostname
        return responses[:-1] + ["250-PIPELINING"] + responses[-1:]

    async def handle_MAIL(self, server, _session, envelope, address, mail_options):
        name, _mode = self.mode_for(server.provider)
        if name == "throttle" or (name == "rate_limit" and self.bucket is not None and not self.bucket.take()):
            self.count_reply(server, REPLY_THROTTLED, "mail", mail_from=address, mode=name)
            return REPLY_THROTTLED
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, _session, envelope, address, rcpt_options):
        name, mode = self.mode_for(server.provider)
        if name == "ses_sandbox" and mode["at"] == "rcpt" and not self.verified(address, mode):
            reply = REPLY_NOT_VERIFIED.format(region=mode["region"].upper(), addresses=address)
            self.count_reply(server, reply, "rcpt", mail_from=envelope.mail_from, rcpt_to=[address], mode=name)
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        name, mode = self.mode_for(server.provider)
        if name == "ses_sandbox" and mode["at"] == "data":
            failed = [a for a in [envelope.mail_from] + envelope.rcpt_tos if not self.verified(a, mode)]
            if failed:
                reply = REPLY_NOT_VERIFIED.format(region=mode["region"].upper(), addresses=", ".join(failed))
                self.count_reply(server, reply, "data", mail_from=envelope.mail_from, rcpt_to=envelope.rcpt_tos, mode=name)
                return reply
        now = time.time()
        message_id = "%s-%08x" % (self.id_prefix, next(self.message_ids))
        headers, received = header_summary(envelope.original_content)
        record = {
            "time": utc_stamp(now), "ts": now, "id": message_id, "connection": server.connection_id,
            "peer": server.peer_host, "peer_port": server.peer_port, "local_port": server.port,
            "ehlo": session.host_name, "username": server.username, "provider": server.provider,
            "auth_mechanism": server.mechanism, "mail_from": envelope.mail_from, "rcpt_to": envelope.rcpt_tos,
            "mail_options": envelope.mail_options, "headers": headers, "received_count": received,
            "size": len(envelope.original_content),
        }
        record.update(server.tls_facts())
        self.records.write("messages", record)
        server.messages += 1
        return self.providers.reply(server.provider, message_id)

    @staticmethod
    def verified(address, mode):
        address = address.lower()
        domain = address.rpartition("@")[2]
        return address in mode["verified"] or "@" + domain in mode["verified"] or domain in mode["verified"]


def initial_response_username(mechanism, argument):
    """The username an AUTH command already carries (initial response), or None; the password is never kept."""
    try:
        decoded = base64.b64decode(argument, validate=True)
    except (binascii.Error, ValueError):
        return None
    if mechanism.upper() == "PLAIN":
        parts = decoded.split(b"\0")
        return parts[1].decode("utf-8", "replace") if len(parts) == 3 else None
    return decoded.decode("utf-8", "replace")


class Session(SMTP):
    """One client connection; its mode-dependent offer (STARTTLS, AUTH in clear) is fixed when it connects."""

    def __init__(self, emulator, kind, port):
        self.emulator = emulator
        self.kind = kind
        self.port = port
        self.connection_id = None
        self.peer_host = self.peer_port = None
        self.opened = None
        self.username = self.provider = self.mechanism = None
        self.tls = "implicit" if kind == "implicit" else "none"
        self.tls_version = self.tls_cipher = self.sni = self.certificate = None
        self.session_error = None
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
            timeout=emulator.args.timeout,
            loop=asyncio.get_running_loop(),
        )

    def tls_facts(self):
        return {"tls": self.tls, "tls_version": self.tls_version, "tls_cipher": self.tls_cipher,
                "sni": self.sni, "certificate": self.certificate}

    def _note_tls(self, transport):
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        self.tls_version = ssl_object.version()
        self.tls_cipher = (ssl_object.cipher() or (None,))[0]
        self.sni = getattr(ssl_object, "emulator_sni", None)
        self.certificate = getattr(ssl_object, "emulator_certificate", "trusted")

    def connection_made(self, transport):
        if self.transport is None:
            self.connection_id = "%s-c%06d" % (self.emulator.id_prefix, next(self.emulator.connection_ids))
            self.opened = time.time()
            peer = transport.get_extra_info("peername") or ("", 0)
            self.peer_host, self.peer_port = peer[0], peer[1]
            self.emulator.sessions.add(self)
        else:
            self.tls = "starttls"
        self._note_tls(transport)
        super().connection_made(transport)

    def connection_lost(self, error):
        if self in self.emulator.sessions:
            self.emulator.sessions.discard(self)
            now = time.time()
            record = {
                "time": utc_stamp(self.opened), "ts": self.opened, "closed": utc_stamp(now), "duration": round(now - self.opened, 3),
                "connection": self.connection_id, "peer": self.peer_host, "peer_port": self.peer_port, "local_port": self.port,
                "mode": self.mode_at_connect, "starttls_offered": self.starttls_offered,
                "ehlo": self.session.host_name if self.session else None,
                "auth_attempts": self.auth_tries, "username": self.username, "provider": self.provider,
                "messages": self.messages, "replies": self.replies, "error": self.session_error,
            }
            record.update(self.tls_facts())
            self.emulator.records.write("connections", record)
        super().connection_lost(error)

    async def handle_exception(self, error):
        # A failed STARTTLS handshake (e.g. a client refusing the rogue certificate) is expected
        # here: keep it as one log line and in the connection record instead of a traceback.
        cause = error.__cause__ or error
        self.session_error = "%s: %s" % (type(cause).__name__, cause)
        log.warning("%s %s:%s: %s", self.connection_id, self.peer_host, self.peer_port, self.session_error)
        return "451 4.3.0 Error: %s" % type(cause).__name__

    async def check_auth_needed(self, caller_method):
        needed = await super().check_auth_needed(caller_method)
        if needed:
            self.emulator.count_reply(self, REPLY_AUTH_REQUIRED, caller_method.lower())
        return needed

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


def parse_ports(text):
    return [int(p) for p in text.split(",") if p.strip()] if text is not None else None


def build_parser():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description="SMTP provider emulator for smarthost.postfix tests.")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--starttls-ports", type=parse_ports, help="comma-separated STARTTLS ports (default: providers.json listen)")
    parser.add_argument("--implicit-ports", type=parse_ports, help="comma-separated implicit-TLS ports (default: providers.json listen)")
    parser.add_argument("--certs", default="/etc/emulator/certs", help="directory with server.crt/key and rogue.crt/key")
    parser.add_argument("--state-dir", default=emulatorctl.state_dir(), help="records, mode and status files")
    parser.add_argument("--providers", default=os.path.join(here, "providers.json"))
    parser.add_argument("--mode", help="mode to start in (written to the mode file); default: the mode file's, else normal")
    parser.add_argument("--hostname", default="emulator", help="name in the greeting and EHLO reply")
    parser.add_argument("--tls-min", default="TLSv1", choices=sorted(TLS_VERSIONS),
                        help="lowest TLS version accepted (default TLSv1: records show what clients choose)")
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
