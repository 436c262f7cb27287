#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Control and read the provider emulator's state directory (standard library only).

Run inside the emulator container, e.g. ``docker exec emu emulatorctl mode throttle``.
The emulator itself imports the mode and path helpers from here, so the control side and
the server agree on one format.

    emulatorctl mode NAME [--rate N] [--burst N] [--providers a,b] [--at rcpt|data]
                          [--verified addr,@domain] [--region us-east-1]
    emulatorctl show-mode
    emulatorctl status
    emulatorctl reset
    emulatorctl records [messages|auth|connections|replies]
    emulatorctl counters
    emulatorctl wait --messages N [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

DEFAULT_STATE_DIR = "/var/lib/emulator"
STATE_DIR_ENV = "EMULATOR_STATE_DIR"
MODE_FILE = "mode.json"
STATUS_FILE = "status.json"
RECORD_FILES = {
    "messages": "messages.jsonl",
    "auth": "auth.jsonl",
    "connections": "connections.jsonl",
    "replies": "replies.jsonl",
}

MODES = ("normal", "auth_fail", "ses_sandbox", "throttle", "rate_limit", "no_starttls", "untrusted_cert", "down")
# Modes decided after the client identified itself; only these can be limited to some providers.
PROVIDER_SCOPED_MODES = ("auth_fail", "ses_sandbox", "throttle", "rate_limit")
SES_DEFAULT_RATE = 14.0
COUNTED_REPLY_CODES = ("454", "530", "535", "554")


def parse_mode(doc):
    """Validate a mode document and return it complete with defaults; ValueError names the bad field."""
    if isinstance(doc, str):
        doc = {"mode": doc}
    if not isinstance(doc, dict):
        raise ValueError("mode document must be a JSON object")
    unknown = set(doc) - {"mode", "rate", "burst", "providers", "at", "verified", "region", "serial"}
    if unknown:
        raise ValueError("unknown mode field(s): %s" % ", ".join(sorted(unknown)))
    name = doc.get("mode", "normal")
    if name not in MODES:
        raise ValueError("mode must be one of %s, not %r" % (", ".join(MODES), name))
    mode = {"mode": name}
    if isinstance(doc.get("serial"), int):
        mode["serial"] = doc["serial"]

    providers = doc.get("providers") or []
    if isinstance(providers, str):
        providers = [p for p in providers.split(",") if p]
    if not isinstance(providers, list) or not all(isinstance(p, str) for p in providers):
        raise ValueError("providers must be a list of provider names")
    if providers and name not in PROVIDER_SCOPED_MODES:
        raise ValueError("providers applies only to the modes %s" % ", ".join(PROVIDER_SCOPED_MODES))
    mode["providers"] = providers

    if name == "rate_limit":
        rate = _positive_number(doc.get("rate", SES_DEFAULT_RATE), "rate")
        burst = _positive_number(doc.get("burst", max(1.0, rate)), "burst")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        mode.update(rate=rate, burst=burst)
    elif "rate" in doc or "burst" in doc:
        raise ValueError("rate and burst apply only to the rate_limit mode")

    if name == "ses_sandbox":
        at = doc.get("at", "data")
        if at not in ("rcpt", "data"):
            raise ValueError("at must be 'rcpt' or 'data', not %r" % (at,))
        verified = doc.get("verified") or []
        if isinstance(verified, str):
            verified = [v for v in verified.split(",") if v]
        if not isinstance(verified, list) or not all(isinstance(v, str) for v in verified):
            raise ValueError("verified must be a list of addresses or @domains")
        region = doc.get("region", "us-east-1")
        if not isinstance(region, str) or not region:
            raise ValueError("region must be a non-empty string")
        mode.update(at=at, verified=[v.lower() for v in verified], region=region)
    elif any(k in doc for k in ("at", "verified", "region")):
        raise ValueError("at, verified and region apply only to the ses_sandbox mode")
    return mode


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


def read_mode(directory):
    """The mode in force: the mode file's, or normal when there is none."""
    try:
        with open(os.path.join(directory, MODE_FILE), encoding="utf-8") as handle:
            return parse_mode(json.load(handle))
    except FileNotFoundError:
        return parse_mode("normal")


def write_mode(directory, doc):
    """Validate and atomically replace the mode file; the server picks it up within a moment."""
    mode = parse_mode(doc)
    mode["serial"] = time.time_ns()
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mode.", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(mode, handle)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(directory, MODE_FILE))
    return mode


def read_status(directory):
    """What the running server last reported (pid, listening, applied mode), or None."""
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


def wait_until_applied(directory, mode, timeout=5.0):
    """Wait until a running server reports the mode as applied; False when no server applied it in time."""
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(directory)
        if status and status.get("mode", {}).get("serial") == mode["serial"]:
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
    by_code = dict.fromkeys(COUNTED_REPLY_CODES, 0)
    for reply in replies:
        by_code[reply["code"]] = by_code.get(reply["code"], 0) + 1
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
        },
        "replies": by_code,
        "mode": read_mode(directory),
    }


def wait_for_messages(directory, count, timeout):
    deadline = time.monotonic() + timeout
    while True:
        seen = len(read_records(directory, "messages"))
        if seen >= count or time.monotonic() >= deadline:
            return seen
        time.sleep(0.2)


def build_parser():
    parser = argparse.ArgumentParser(prog="emulatorctl", description="Control the SMTP provider emulator.")
    parser.add_argument("--dir", help="state directory (default $%s or %s)" % (STATE_DIR_ENV, DEFAULT_STATE_DIR))
    commands = parser.add_subparsers(dest="command", required=True)

    mode = commands.add_parser("mode", help="set the failure mode")
    mode.add_argument("name", choices=MODES)
    mode.add_argument("--rate", type=float, help="rate_limit: messages per second (default %g, SES's)" % SES_DEFAULT_RATE)
    mode.add_argument("--burst", type=float, help="rate_limit: bucket size (default: one second's worth)")
    mode.add_argument("--providers", help="comma-separated providers the mode applies to (default all)")
    mode.add_argument("--at", choices=("rcpt", "data"), help="ses_sandbox: reject at RCPT or after DATA (default data)")
    mode.add_argument("--verified", help="ses_sandbox: comma-separated verified addresses or @domains")
    mode.add_argument("--region", help="ses_sandbox: region named in the reply (default us-east-1)")

    commands.add_parser("show-mode", help="print the mode in force")
    commands.add_parser("status", help="print what the running server reports (pid, ports, listening, applied mode)")
    commands.add_parser("reset", help="empty every record file")
    records = commands.add_parser("records", help="print records as a JSON array")
    records.add_argument("kind", nargs="?", default="messages", choices=sorted(RECORD_FILES))
    commands.add_parser("counters", help="print counts of messages, AUTH attempts and 454/530/535/554 replies")
    wait = commands.add_parser("wait", help="wait until N messages are recorded; exit 1 on timeout")
    wait.add_argument("--messages", type=int, required=True)
    wait.add_argument("--timeout", type=float, default=60.0)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    directory = state_dir(args.dir)
    if args.command == "mode":
        doc = {"mode": args.name}
        for field in ("rate", "burst", "providers", "at", "verified", "region"):
            if getattr(args, field) is not None:
                doc[field] = getattr(args, field)
        try:
            result = write_mode(directory, doc)
        except ValueError as error:
            print("emulatorctl: %s" % error, file=sys.stderr)
            return 2
        if not wait_until_applied(directory, result):
            print("emulatorctl: no running emulator applied the mode yet; it applies when one starts", file=sys.stderr)
    elif args.command == "show-mode":
        result = read_mode(directory)
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
    print(json.dumps(result, indent=None, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
