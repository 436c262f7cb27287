#!/usr/bin/env python3
# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Control and read the provider emulator's state directory (standard library only).

Run inside the emulator container, e.g. ``docker exec emu emulatorctl mode throttle``.
The emulator itself imports the mode, settings and path helpers from here, so the control side
and the server agree on one format. Three independent settings, each in its own file and each
acknowledged by the running server (status.json): the SMTP mode (mode.json), the OAuth token
endpoint (oauth.json) and who may relay without AUTH (access.json).

    emulatorctl mode NAME [--providers a,b] [--rate N] [--burst N] [--at STAGE]
                          [--verified addr,@domain] [--region us-east-1]
                          [--after N] [--max-connections K] [--max-size BYTES]
    emulatorctl oauth MODE [--providers office365,gmail] [--delay SECONDS] [--token-lifetime SECONDS]
    emulatorctl access [--allow-ips PROVIDER=IP[,IP...]]... [--require-client-cert]
    emulatorctl show-mode | show-oauth | show-access
    emulatorctl status
    emulatorctl reset
    emulatorctl records [messages|auth|connections|replies|tokens]
    emulatorctl counters
    emulatorctl wait --messages N [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
REPLIES_PATH = os.path.join(HERE, "replies.json")
PROVIDERS_PATH = os.path.join(HERE, "providers.json")
DEFAULT_STATE_DIR = "/var/lib/emulator"
STATE_DIR_ENV = "EMULATOR_STATE_DIR"
MODE_FILE = "mode.json"
OAUTH_FILE = "oauth.json"
ACCESS_FILE = "access.json"
STATUS_FILE = "status.json"
RECORD_FILES = {
    "messages": "messages.jsonl",
    "auth": "auth.jsonl",
    "connections": "connections.jsonl",
    "replies": "replies.jsonl",
    "tokens": "tokens.jsonl",
}

MODES = (
    "normal",
    "auth_fail",
    "ses_sandbox",
    "throttle",
    "rate_limit",
    "no_starttls",
    "untrusted_cert",
    "down",
    "basic_auth_disabled",
    "app_password_required",
    "daily_limit",
    "concurrency_limit",
    "send_as_denied",
    "sender_identity",
    "try_again_later",
    "size_limit",
)
# Modes decided after the client identified itself; only these can be limited to some providers.
PROVIDER_SCOPED_MODES = (
    "auth_fail",
    "ses_sandbox",
    "throttle",
    "rate_limit",
    "basic_auth_disabled",
    "app_password_required",
    "daily_limit",
    "concurrency_limit",
    "send_as_denied",
    "sender_identity",
    "try_again_later",
    "size_limit",
)
# The replies.json case each provider-specific mode answers with; a case without a default text
# applies only to the providers it lists.
MODE_CASES = {
    "basic_auth_disabled": "basic_auth_disabled",
    "app_password_required": "app_password_required",
    "daily_limit": "daily_limit",
    "concurrency_limit": "concurrent_connections",
    "send_as_denied": "send_as_denied",
    "sender_identity": "sender_identity",
    "try_again_later": "try_again_later",
}
# --at: the SMTP stage a mode answers at (None: each provider's stage from replies.json).
AT_CHOICES = {
    "ses_sandbox": (("rcpt", "data"), "data"),
    "basic_auth_disabled": (("auth", "mail"), "auth"),
    "daily_limit": (("mail", "rcpt", "data_command", "data"), None),
    "try_again_later": (("ehlo", "mail"), "mail"),
}
VERIFIED_MODES = ("ses_sandbox", "send_as_denied", "sender_identity")
SES_DEFAULT_RATE = 14.0
EXCHANGE_CONCURRENT_CONNECTIONS = 3  # published per-mailbox limit for SMTP AUTH submission
COUNTED_REPLY_CODES = ("421", "432", "454", "530", "534", "535", "550", "552", "554")

OAUTH_PROVIDERS = ("office365", "gmail")
OAUTH_TRANSPORT_MODES = ("normal", "down", "slow", "http_500", "http_503")
DEFAULT_TOKEN_LIFETIME = 3599  # what Entra ID and Google answer in expires_in
DEFAULT_SLOW_DELAY = 5.0
ENDPOINT_OF = {"office365": "microsoft", "gmail": "google"}

_TABLES = {}


def load_json(path):
    """A JSON file once per process (replies.json, providers.json), or None when it is not there."""
    if path not in _TABLES:
        try:
            with open(path, encoding="utf-8") as handle:
                _TABLES[path] = json.load(handle)
        except FileNotFoundError:
            _TABLES[path] = None
    return _TABLES[path]


def oauth_error_modes(replies=None):
    """Error names the token endpoints answer, with the endpoints that have each: {name: (endpoint, ...)}."""
    replies = replies if replies is not None else load_json(REPLIES_PATH)
    names = {}
    for endpoint, table in ((replies or {}).get("token_endpoint") or {}).items():
        if isinstance(table, dict):
            for name in table.get("errors", {}):
                names.setdefault(name, []).append(endpoint)
    return {name: tuple(endpoints) for name, endpoints in names.items()}


def _string_list(value, field):
    if value is None:
        return []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("%s must be a list of strings" % field)
    return value


def _whole_number(value, field, minimum):
    if isinstance(value, bool):
        raise ValueError("%s must be a whole number" % field)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError("%s must be a whole number" % field) from None
    if number != float(value) or number < minimum:
        raise ValueError("%s must be a whole number of at least %d" % (field, minimum))
    return number


def _case_providers(case):
    """Providers with their own text for a replies.json case, and whether the case has a default text."""
    table = ((load_json(REPLIES_PATH) or {}).get("cases") or {}).get(case)
    if table is None:
        return None, True
    return sorted(table.get("providers", {})), "default" in table


def parse_mode(doc):
    """Validate a mode document and return it complete with defaults; ValueError names the bad field."""
    if isinstance(doc, str):
        doc = {"mode": doc}
    if not isinstance(doc, dict):
        raise ValueError("mode document must be a JSON object")
    unknown = set(doc) - {
        "mode",
        "rate",
        "burst",
        "providers",
        "at",
        "verified",
        "region",
        "serial",
        "after",
        "max_connections",
        "max_size",
    }
    if unknown:
        raise ValueError("unknown mode field(s): %s" % ", ".join(sorted(unknown)))
    name = doc.get("mode", "normal")
    if name not in MODES:
        raise ValueError("mode must be one of %s, not %r" % (", ".join(MODES), name))
    mode = {"mode": name}
    if isinstance(doc.get("serial"), int):
        mode["serial"] = doc["serial"]

    providers = _string_list(doc.get("providers"), "providers")
    if providers and name not in PROVIDER_SCOPED_MODES:
        raise ValueError("providers applies only to the modes %s" % ", ".join(PROVIDER_SCOPED_MODES))
    if name in MODE_CASES and providers:
        listed, has_default = _case_providers(MODE_CASES[name])
        missing = [p for p in providers if listed is not None and not has_default and p not in listed]
        if missing:
            raise ValueError(
                "%s has no reply text for %s in replies.json (it has: %s)"
                % (name, ", ".join(missing), ", ".join(listed))
            )
    mode["providers"] = providers

    if name == "rate_limit":
        rate = _positive_number(doc.get("rate", SES_DEFAULT_RATE), "rate")
        burst = _positive_number(doc.get("burst", max(1.0, rate)), "burst")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        mode.update(rate=rate, burst=burst)
    elif "rate" in doc or "burst" in doc:
        raise ValueError("rate and burst apply only to the rate_limit mode")

    if name in AT_CHOICES:
        choices, default = AT_CHOICES[name]
        at = doc.get("at", default)
        if at is not None and at not in choices:
            raise ValueError("at must be one of %s for %s, not %r" % (", ".join(choices), name, at))
        mode["at"] = at
    elif "at" in doc:
        raise ValueError("at applies only to the modes %s" % ", ".join(AT_CHOICES))

    if name in VERIFIED_MODES:
        mode["verified"] = [v.lower() for v in _string_list(doc.get("verified"), "verified")]
    elif "verified" in doc:
        raise ValueError("verified applies only to the modes %s" % ", ".join(VERIFIED_MODES))

    if name == "ses_sandbox":
        region = doc.get("region", "us-east-1")
        if not isinstance(region, str) or not region:
            raise ValueError("region must be a non-empty string")
        mode["region"] = region
    elif "region" in doc:
        raise ValueError("region applies only to the ses_sandbox mode")

    for field, mode_name, minimum, default in (
        ("after", "daily_limit", 0, 0),
        ("max_connections", "concurrency_limit", 1, EXCHANGE_CONCURRENT_CONNECTIONS),
        ("max_size", "size_limit", 1, None),
    ):
        if name == mode_name:
            if doc.get(field) is None and default is None:
                raise ValueError("%s needs %s" % (name, field))
            mode[field] = _whole_number(
                doc.get(field, default) if doc.get(field) is not None else default, field, minimum
            )
        elif field in doc:
            raise ValueError("%s applies only to the %s mode" % (field, mode_name))
    return mode


def parse_oauth(doc):
    """Validate the token endpoint's settings: its mode, the token lifetime, and for slow the delay."""
    if isinstance(doc, str):
        doc = {"mode": doc}
    if not isinstance(doc, dict):
        raise ValueError("oauth document must be a JSON object")
    unknown = set(doc) - {"mode", "providers", "delay", "token_lifetime", "serial"}
    if unknown:
        raise ValueError("unknown oauth field(s): %s" % ", ".join(sorted(unknown)))
    errors = oauth_error_modes()
    name = doc.get("mode", "normal")
    if name not in OAUTH_TRANSPORT_MODES and name not in errors:
        raise ValueError(
            "oauth mode must be one of %s, not %r" % (", ".join(list(OAUTH_TRANSPORT_MODES) + sorted(errors)), name)
        )
    settings = {"mode": name}
    if isinstance(doc.get("serial"), int):
        settings["serial"] = doc["serial"]
    providers = _string_list(doc.get("providers"), "providers")
    for provider in providers:
        if provider not in OAUTH_PROVIDERS:
            raise ValueError("providers must be among %s, not %r" % (", ".join(OAUTH_PROVIDERS), provider))
    if providers and name in ("normal", "down"):
        raise ValueError("providers does not apply to the oauth mode %s (one port serves both endpoints)" % name)
    if name in errors:
        serving = [p for p in OAUTH_PROVIDERS if ENDPOINT_OF[p] in errors[name]]
        missing = [p for p in providers if p not in serving]
        if missing:
            raise ValueError(
                "the oauth error %s has no reply for %s (it has: %s)" % (name, ", ".join(missing), ", ".join(serving))
            )
    settings["providers"] = providers
    if name == "slow":
        settings["delay"] = _positive_number(doc.get("delay", DEFAULT_SLOW_DELAY), "delay")
    elif "delay" in doc:
        raise ValueError("delay applies only to the oauth mode slow")
    lifetime = doc.get("token_lifetime")
    settings["token_lifetime"] = (
        DEFAULT_TOKEN_LIFETIME if lifetime is None else _whole_number(lifetime, "token_lifetime", 1)
    )
    return settings


def parse_access(doc):
    """Validate who may relay without AUTH: allow-listed addresses per provider, whether a certificate is required."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ValueError("access document must be a JSON object")
    unknown = set(doc) - {"allow_ips", "require_client_cert", "serial"}
    if unknown:
        raise ValueError("unknown access field(s): %s" % ", ".join(sorted(unknown)))
    settings = {}
    if isinstance(doc.get("serial"), int):
        settings["serial"] = doc["serial"]
    allow = doc.get("allow_ips") or {}
    if not isinstance(allow, dict):
        raise ValueError("allow_ips must map provider names to lists of addresses")
    providers = ((load_json(PROVIDERS_PATH) or {}).get("providers")) or {}
    settings["allow_ips"] = {}
    for provider, addresses in allow.items():
        if providers and "ip" not in providers.get(provider, {}).get("auth", []):
            takers = sorted(n for n, p in providers.items() if "ip" in p.get("auth", []))
            raise ValueError(
                "allow_ips: %s does not accept clients by address (these do: %s)" % (provider, ", ".join(takers))
            )
        checked = []
        for address in _string_list(addresses, "allow_ips.%s" % provider):
            try:
                checked.append(str(ipaddress.ip_network(address, strict=False)))
            except ValueError:
                raise ValueError("allow_ips.%s: %r is no IP address or network" % (provider, address)) from None
        settings["allow_ips"][provider] = checked
    required = doc.get("require_client_cert", False)
    if not isinstance(required, bool):
        raise ValueError("require_client_cert must be true or false")
    settings["require_client_cert"] = required
    return settings


def _positive_number(value, field):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError("%s must be a number" % field) from None
    if value <= 0:
        raise ValueError("%s must be greater than 0" % field)
    return float(value)


def state_dir(path=None):
    return path or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR


# One description per settings file: its name, its parser and its default document.
SETTINGS = {
    "mode": (MODE_FILE, parse_mode, "normal"),
    "oauth": (OAUTH_FILE, parse_oauth, "normal"),
    "access": (ACCESS_FILE, parse_access, None),
}


def read_settings(directory, kind):
    """The settings in force: the file's, or the defaults when there is none."""
    name, parse, default = SETTINGS[kind]
    try:
        with open(os.path.join(directory, name), encoding="utf-8") as handle:
            return parse(json.load(handle))
    except FileNotFoundError:
        return parse(default)


def write_settings(directory, kind, doc):
    """Validate and atomically replace a settings file; the server picks it up within a moment."""
    name, parse, _default = SETTINGS[kind]
    settings = parse(doc)
    settings["serial"] = time.time_ns()
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % kind, dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(settings, handle)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(directory, name))
    return settings


def read_mode(directory):
    """The mode in force: the mode file's, or normal when there is none."""
    return read_settings(directory, "mode")


def write_mode(directory, doc):
    """Validate and atomically replace the mode file; the server picks it up within a moment."""
    return write_settings(directory, "mode", doc)


def write_oauth(directory, doc):
    """Set the token endpoint's mode; the token lifetime stays as it was unless the document names one."""
    if isinstance(doc, str):
        doc = {"mode": doc}
    if doc.get("token_lifetime") is None:
        doc = dict(doc, token_lifetime=read_settings(directory, "oauth")["token_lifetime"])
    return write_settings(directory, "oauth", doc)


def read_status(directory):
    """What the running server last reported (pid, listening, applied settings), or None."""
    try:
        with open(os.path.join(directory, STATUS_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return None


def server_running(status):
    if not status:
        return False
    try:
        os.kill(status["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until_applied(directory, settings, timeout=5.0, kind="mode"):
    """Wait until a running server reports the settings as applied; False when no server applied them in time."""
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(directory)
        if status and (status.get(kind) or {}).get("serial") == settings["serial"]:
            return True
        if time.monotonic() >= deadline or not server_running(status):
            return False
        time.sleep(0.05)


def read_records(directory, kind):
    """Every complete JSON line of one record file (a line still being written is skipped)."""
    path = os.path.join(directory, RECORD_FILES[kind])
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n")[:-1]:
        if line.strip():
            records.append(json.loads(line))
    return records


def reset_records(directory):
    """Empty the record files in place: the server keeps appending to the same open files."""
    for name in RECORD_FILES.values():
        path = os.path.join(directory, name)
        if os.path.exists(path):
            os.truncate(path, 0)


def counters(directory):
    messages = read_records(directory, "messages")
    auth = read_records(directory, "auth")
    replies = read_records(directory, "replies")
    tokens = read_records(directory, "tokens")
    by_code = dict.fromkeys(COUNTED_REPLY_CODES, 0)
    for reply in replies:
        by_code[reply["code"]] = by_code.get(reply["code"], 0) + 1
    xoauth2 = [a for a in auth if a.get("mechanism") == "XOAUTH2"]
    return {
        "messages": len(messages),
        "recipients": sum(len(m["rcpt_to"]) for m in messages),
        "connections": len(read_records(directory, "connections")),
        "auth": {
            "attempts": len(auth),
            "succeeded": sum(1 for a in auth if a["success"]),
            "failed": sum(1 for a in auth if not a["success"]),
            "credentials_received": sum(1 for a in auth if a["credentials_received"]),
            "credentials_received_in_clear": sum(1 for a in auth if a["credentials_received"] and a["tls"] == "none"),
            "xoauth2": len(xoauth2),
            "xoauth2_succeeded": sum(1 for a in xoauth2 if a["success"]),
        },
        "tokens": {
            "requests": len(tokens),
            "issued": sum(1 for t in tokens if t["success"]),
            "refused": sum(1 for t in tokens if not t["success"]),
        },
        "replies": by_code,
        "mode": read_mode(directory),
        "oauth": read_settings(directory, "oauth"),
    }


def wait_for_messages(directory, count, timeout):
    deadline = time.monotonic() + timeout
    while True:
        seen = len(read_records(directory, "messages"))
        if seen >= count or time.monotonic() >= deadline:
            return seen
        time.sleep(0.2)


def _allow_ips(text):
    provider, sep, addresses = text.partition("=")
    if not sep or not provider:
        raise argparse.ArgumentTypeError("expected PROVIDER=IP[,IP...], not %r" % text)
    return provider, [a for a in addresses.split(",") if a]


def build_parser():
    parser = argparse.ArgumentParser(prog="emulatorctl", description="Control the SMTP provider emulator.")
    parser.add_argument("--dir", help="state directory (default $%s or %s)" % (STATE_DIR_ENV, DEFAULT_STATE_DIR))
    commands = parser.add_subparsers(dest="command", required=True)

    mode = commands.add_parser("mode", help="set the SMTP failure mode")
    mode.add_argument("name", choices=MODES)
    mode.add_argument("--providers", help="comma-separated providers the mode applies to (default all)")
    mode.add_argument(
        "--rate", type=float, help="rate_limit: messages per second (default %g, SES's)" % SES_DEFAULT_RATE
    )
    mode.add_argument("--burst", type=float, help="rate_limit: bucket size (default: one second's worth)")
    stages = sorted({stage for choices, _default in AT_CHOICES.values() for stage in choices})
    mode.add_argument(
        "--at",
        choices=stages,
        help="stage: ses_sandbox rcpt|data (default data); basic_auth_disabled auth|mail (default auth); "
        "daily_limit mail|rcpt|data_command|data (default: the provider's); "
        "try_again_later ehlo|mail (default mail)",
    )
    mode.add_argument(
        "--verified",
        help="ses_sandbox, send_as_denied, sender_identity: comma-separated addresses or @domains that pass",
    )
    mode.add_argument("--region", help="ses_sandbox: region named in the reply (default us-east-1)")
    mode.add_argument(
        "--after", type=int, help="daily_limit: messages accepted per provider before the limit (default 0)"
    )
    mode.add_argument(
        "--max-connections",
        type=int,
        dest="max_connections",
        help="concurrency_limit: concurrent sessions per mailbox (default %d, Exchange Online's)"
        % EXCHANGE_CONCURRENT_CONNECTIONS,
    )
    mode.add_argument("--max-size", type=int, dest="max_size", help="size_limit: largest message in bytes")

    oauth = commands.add_parser("oauth", help="set the OAuth token endpoint's mode and token lifetime")
    oauth.add_argument(
        "name",
        metavar="MODE",
        help="normal, down, slow, http_500, http_503, or an error: %s" % ", ".join(sorted(oauth_error_modes())),
    )
    oauth.add_argument("--providers", help="comma-separated office365,gmail (default both)")
    oauth.add_argument("--delay", type=float, help="slow: seconds before each answer (default %g)" % DEFAULT_SLOW_DELAY)
    oauth.add_argument(
        "--token-lifetime",
        type=int,
        dest="token_lifetime",
        help="seconds a new token lives (default %d; kept until set again)" % DEFAULT_TOKEN_LIFETIME,
    )

    access = commands.add_parser("access", help="set who may relay without AUTH (replaces the previous setting)")
    access.add_argument(
        "--allow-ips",
        type=_allow_ips,
        action="append",
        default=[],
        dest="allow_ips",
        metavar="PROVIDER=IP[,IP...]",
        help="addresses or networks a provider accepts without AUTH (office365_connector, "
        "google_workspace_relay); repeatable",
    )
    access.add_argument(
        "--require-client-cert",
        action="store_true",
        dest="require_client_cert",
        help="accept no client by address: a verified client certificate only",
    )

    commands.add_parser("show-mode", help="print the SMTP mode in force")
    commands.add_parser("show-oauth", help="print the token endpoint's settings in force")
    commands.add_parser("show-access", help="print the access settings in force")
    commands.add_parser(
        "status", help="print what the running server reports (pid, ports, listening, applied settings)"
    )
    commands.add_parser("reset", help="empty every record file")
    records = commands.add_parser("records", help="print records as a JSON array")
    records.add_argument("kind", nargs="?", default="messages", choices=sorted(RECORD_FILES))
    commands.add_parser("counters", help="print counts of messages, AUTH attempts, token requests and refusals")
    wait = commands.add_parser("wait", help="wait until N messages are recorded; exit 1 on timeout")
    wait.add_argument("--messages", type=int, required=True)
    wait.add_argument("--timeout", type=float, default=60.0)
    return parser


def _set(directory, kind, doc):
    """Write settings, wait for the server's acknowledgement; (settings, exit status)."""
    try:
        result = write_oauth(directory, doc) if kind == "oauth" else write_settings(directory, kind, doc)
    except ValueError as error:
        print("emulatorctl: %s" % error, file=sys.stderr)
        return None, 2
    if not wait_until_applied(directory, result, kind=kind):
        print(
            "emulatorctl: no running emulator applied the %s settings yet; they apply when one starts" % kind,
            file=sys.stderr,
        )
    return result, 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    directory = state_dir(args.dir)
    if args.command == "mode":
        doc = {"mode": args.name}
        for field in ("rate", "burst", "providers", "at", "verified", "region", "after", "max_connections", "max_size"):
            if getattr(args, field) is not None:
                doc[field] = getattr(args, field)
        result, status = _set(directory, "mode", doc)
    elif args.command == "oauth":
        doc = {"mode": args.name}
        for field in ("providers", "delay", "token_lifetime"):
            if getattr(args, field) is not None:
                doc[field] = getattr(args, field)
        result, status = _set(directory, "oauth", doc)
    elif args.command == "access":
        allow = {}
        for provider, addresses in args.allow_ips:
            allow.setdefault(provider, []).extend(addresses)
        doc = {"allow_ips": allow, "require_client_cert": args.require_client_cert}
        result, status = _set(directory, "access", doc)
    else:
        status = 0
        if args.command == "show-mode":
            result = read_mode(directory)
        elif args.command == "show-oauth":
            result = read_settings(directory, "oauth")
        elif args.command == "show-access":
            result = read_settings(directory, "access")
        elif args.command == "status":
            result = read_status(directory) or {}
            result["running"] = server_running(result)
        elif args.command == "reset":
            reset_records(directory)
            result = {"reset": sorted(RECORD_FILES)}
        elif args.command == "records":
            result = read_records(directory, args.kind)
        elif args.command == "counters":
            result = counters(directory)
        else:
            seen = wait_for_messages(directory, args.messages, args.timeout)
            print(json.dumps({"messages": seen, "wanted": args.messages}))
            return 0 if seen >= args.messages else 1
    if status:
        return status
    print(json.dumps(result, indent=None, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
