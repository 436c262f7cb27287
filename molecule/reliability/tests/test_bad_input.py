# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Bad input: every invalid variable combination is refused before anything changes.

Each case is one ansible-playbook run against the converged rel-relay with -e
overrides (the role through the scenario's converge playbook, or one module
through module_input.yml). Each must fail, with a message that names the
variable (or the module's entry or parameter) at fault, change nothing
(recap changed=0, and every file under /etc/postfix byte-identical with the
same owner and mode), and print no password given to it.
"""

import concurrent.futures
import json
import os
import re
import time

import harness
import reliability as rel

MODULE_PLAYBOOK = os.path.join(os.path.dirname(__file__), "module_input.yml")
CANARY = "Rel-Canary-BadInput"
ROUTE = {"host": "other.example.test", "username": "route-user", "password": CANARY + "-route"}

# (case, overrides, what the message must name)
ROLE_CASES = [
    # relay_password is given where the scenario's group_vars would look the provider up.
    ("unknown provider", {"relay_provider": "nosuch", "relay_password": CANARY + "-0"}, "relay_provider"),
    ("provider unset", {"relay_provider": None, "relay_password": CANARY + "-1"}, "relay_provider"),
    (
        "missing password (provider needs one)",
        {"relay_provider": "sendgrid", "relay_username": None, "relay_password": None},
        "relay_password",
    ),
    ("username without password", {"relay_password": None}, "relay_password"),
    ("':' in username", {"relay_username": "relay:user"}, "relay_username"),
    ("whitespace in username", {"relay_username": "relay user"}, "relay_username"),
    ("newline in password", {"relay_password": CANARY + "-2\nsecond-line"}, "relay_password"),
    ("password with surrounding whitespace", {"relay_password": " " + CANARY + "-3 "}, "relay_password"),
    ("port out of range", {"relay_port": 70000}, "relay_port"),
    ("port not a number", {"relay_port": "smtp"}, "relay_port"),
    (
        "bad SES region",
        {"relay_provider": "ses", "relay_host": None, "relay_ses_region": "us_east_1"},
        "relay_ses_region",
    ),
    ("SES without region", {"relay_provider": "ses", "relay_host": None}, "relay_ses_region"),
    ("bad Mailgun region", {"relay_provider": "mailgun", "relay_mailgun_region": "asia"}, "relay_mailgun_region"),
    ("custom without host", {"relay_host": None}, "relay_host"),
    ("host with brackets and port", {"relay_host": "[relay.example.test]:587"}, "relay_host"),
    ("host not a host name", {"relay_host": "relay example test"}, "relay_host"),
    ("SendGrid with a user name", {"relay_provider": "sendgrid", "relay_username": "someone"}, "relay_username"),
    ("fallback without credentials", {"relay_fallback": {"host": "fallback.example.test"}}, "relay_fallback.password"),
    ("fallback is the primary", {"relay_fallback": dict(ROUTE, host="relay.example.test")}, "relay_fallback.host"),
    ("fallback wrapper mode differs", {"relay_fallback": dict(ROUTE, port=465)}, "relay_fallback.port"),
    (
        "fallback with sender routes",
        {
            "relay_fallback": ROUTE,
            "relay_sender_routes": [dict(ROUTE, sender="@m.example.test", host="third.example.test")],
        },
        "relay_fallback",
    ),
    ("fallback unknown key", {"relay_fallback": dict(ROUTE, hots="x")}, "hots"),
    ("unknown mode", {"relay_mode": "open_relay"}, "relay_mode"),
    ("relay_server without mynetworks", {"relay_mynetworks": []}, "relay_mynetworks"),
    ("mynetworks 0.0.0.0/0", {"relay_mynetworks": ["0.0.0.0/0"]}, "relay_mynetworks[0]"),
    ("mynetworks not a network", {"relay_mynetworks": ["10.0.0.0/33"]}, "relay_mynetworks[0]"),
    ("null_client with mynetworks", {"relay_mode": "null_client"}, "relay_mynetworks"),
    (
        "null_client listening on all",
        {"relay_mode": "null_client", "relay_mynetworks": [], "relay_inet_interfaces": ["all"]},
        "relay_inet_interfaces",
    ),
    ("bad inet_protocols", {"relay_inet_protocols": "ipv5"}, "relay_inet_protocols"),
    ("TLS level none", {"relay_tls_security_level": "none"}, "relay_tls_security_level"),
    ("fingerprint level without fingerprints", {"relay_tls_security_level": "fingerprint"}, "relay_tls_fingerprints"),
    (
        "malformed fingerprint",
        {"relay_tls_security_level": "fingerprint", "relay_tls_fingerprints": ["zz:11"]},
        "relay_tls_fingerprints[0]",
    ),
    ("fingerprints with secure", {"relay_tls_fingerprints": ["AB" * 32]}, "relay_tls_fingerprints"),
    ("relative CA file", {"relay_tls_ca_file": "certs/ca.pem"}, "relay_tls_ca_file"),
    ("TLS minimum TLSv1", {"relay_tls_min_version": "TLSv1"}, "relay_tls_min_version"),
    ("wrapper mode not a boolean", {"relay_tls_wrappermode": "sometimes"}, "relay_tls_wrappermode"),
    ("negative send rate", {"relay_max_send_rate": -1}, "relay_max_send_rate"),
    (
        "concurrency not a number",
        {"relay_destination_concurrency_limit": "lots"},
        "relay_destination_concurrency_limit",
    ),
    ("negative recipient limit", {"relay_destination_recipient_limit": -5}, "relay_destination_recipient_limit"),
    ("bad time value", {"relay_queue_run_delay": "5 minutes"}, "relay_queue_run_delay"),
    (
        "minimal backoff above maximal",
        {"relay_minimal_backoff_time": "1h", "relay_maximal_backoff_time": "10m"},
        "relay_minimal_backoff_time",
    ),
    (
        "extra parameter the role owns",
        {"relay_extra_parameters": {"relayhost": "[evil.example.test]:25"}},
        "relay_extra_parameters.relayhost",
    ),
    ("extra parameter bad name", {"relay_extra_parameters": {"Bad-Name": "x"}}, "relay_extra_parameters.Bad-Name"),
    (
        "extra parameter without value",
        {"relay_extra_parameters": {"header_size_limit": None}},
        "relay_extra_parameters.header_size_limit",
    ),
    (
        "extra parameter injecting a line",
        {"relay_extra_parameters": {"smtpd_banner": "x\nrelayhost = [evil.example.test]:25"}},
        "relay_extra_parameters.smtpd_banner",
    ),
    ("unknown database type", {"relay_database_type": "dbm"}, "relay_database_type"),
    ("sender domain is an address", {"relay_sender_domain": "root@example.test"}, "relay_sender_domain"),
    ("unknown rewrite map", {"relay_sender_rewrite_map": "canonical"}, "relay_sender_rewrite_map"),
    (
        "rewrite match not an address",
        {"relay_sender_rewrites": [{"match": "not-an-address", "replace": "@example.test"}]},
        "relay_sender_rewrites[0].match",
    ),
    ("rewrite without replace", {"relay_sender_rewrites": [{"match": "@old.example.test"}]}, "replace"),
    (
        "header cleanup without headers",
        {"relay_header_cleanup": True, "relay_header_cleanup_headers": []},
        "relay_header_cleanup_headers",
    ),
    (
        "header cleanup bad header",
        {"relay_header_cleanup": True, "relay_header_cleanup_headers": ["X Bad"]},
        "relay_header_cleanup_headers[0]",
    ),
    (
        "SES sandbox list without SES",
        {"relay_ses_sandbox_recipients": ["a@example.test"]},
        "relay_ses_sandbox_recipients",
    ),
    (
        "domain route without host",
        {"relay_domain_routes": [{"domain": "partner.example.test"}]},
        "relay_domain_routes[0].host",
    ),
    (
        "domain route to the primary",
        {"relay_domain_routes": [dict(ROUTE, domain="p.example.test", host="relay.example.test")]},
        "relay_domain_routes[0].host",
    ),
    (
        "domain route password over plain text",
        {"relay_domain_routes": [dict(ROUTE, domain="p.example.test", tls_security_level="none")]},
        "relay_domain_routes[0].tls_security_level",
    ),
    (
        "domain route reserved transport",
        {"relay_domain_routes": [dict(ROUTE, domain="p.example.test", transport="smtp")]},
        "relay_domain_routes[0].transport",
    ),
    (
        "domain route local with a host",
        {"relay_domain_routes": [{"domain": "p.example.test", "action": "local", "host": "x.example.test"}]},
        "relay_domain_routes[0].host",
    ),
    (
        "domain routed twice",
        {
            "relay_domain_routes": [
                {"domain": "p.example.test", "action": "local"},
                {"domain": "p.example.test", "action": "local"},
            ]
        },
        "relay_domain_routes[1].domain",
    ),
    (
        "sender route bad sender",
        {"relay_sender_routes": [dict(ROUTE, sender="nobody")]},
        "relay_sender_routes[0].sender",
    ),
    (
        "sender route wrapper mode differs",
        {"relay_sender_routes": [dict(ROUTE, sender="@m.example.test", port=465)]},
        "relay_sender_routes[0].port",
    ),
    (
        "sender route unknown provider",
        {"relay_sender_routes": [dict(ROUTE, sender="@m.example.test", provider="nosuch")]},
        "provider",
    ),
    (
        "two logins for one relay",
        {
            "relay_domain_routes": [
                dict(ROUTE, domain="a.example.test"),
                dict(ROUTE, domain="b.example.test", username="other-user"),
            ]
        },
        "relay_domain_routes[1].username",
    ),
    ("TLS connection reuse not a boolean", {"relay_tls_connection_reuse": "sometimes"}, "relay_tls_connection_reuse"),
    # issue 18: the side doors
    (
        "escape hatch: a TLS policy map saying none",
        {"relay_extra_parameters": {"smtp_tls_policy_maps": "inline:{ [relay.example.test]:587=none }"}},
        "relay_extra_parameters.smtp_tls_policy_maps",
    ),
    (
        "escape hatch: another next hop",
        {"relay_extra_parameters": {"default_transport": "smtp:[evil.example.test]:25"}},
        "relay_extra_parameters.default_transport",
    ),
    (
        "escape hatch: tlsproxy's TLS level",
        {"relay_extra_parameters": {"tlsproxy_client_security_level": "none"}},
        "relay_extra_parameters.tlsproxy_client_security_level",
    ),
    ("mynetworks: the Internet in two halves", {"relay_mynetworks": ["0.0.0.0/1", "128.0.0.0/1"]}, "relay_mynetworks"),
    ("mynetworks: half of IPv6", {"relay_mynetworks": ["[8000::]/1"]}, "relay_mynetworks"),
    ("send rate nan", {"relay_max_send_rate": "nan"}, "relay_max_send_rate"),
    ("send rate 1e-300", {"relay_max_send_rate": 1e-300}, "relay_max_send_rate"),
    ("pacing chooser unknown", {"relay_max_send_rate": 14, "relay_pacing_chooser": "fair"}, "relay_pacing_chooser"),
    ("pace map port 0", {"relay_max_send_rate": 14, "relay_pacing_map_port": 0}, "relay_pacing_map_port"),
    (
        "sender routes differing only in case",
        {"relay_sender_routes": [dict(ROUTE, sender="@m.example.test"), dict(ROUTE, sender="@M.example.test")]},
        "relay_sender_routes[1].sender",
    ),
    ("port in Arabic-Indic digits", {"relay_port": "\u0665\u0668\u0667"}, "relay_port"),
    ("relative config dir", {"relay_config_dir": "etc/postfix"}, "relay_config_dir"),
    ("U+2028 in password", {"relay_password": CANARY + "-4\u2028TAIL"}, "relay_password"),
]

MODULE_CASES = [
    (
        "sasl_map: ':' in username",
        {
            "module_under_test": "sasl_map",
            "entries": [{"key": "[relay.example.test]:587", "username": "a:b", "password": CANARY + "-m1"}],
        },
        "[relay.example.test]:587",
    ),
    (
        "sasl_map: newline in password",
        {
            "module_under_test": "sasl_map",
            "entries": [{"key": "[other.example.test]:587", "username": "u", "password": CANARY + "-m2\nx"}],
        },
        "[other.example.test]:587",
    ),
    (
        "sasl_map: password with surrounding whitespace",
        {
            "module_under_test": "sasl_map",
            "entries": [{"key": "[other.example.test]:587", "username": "u", "password": " " + CANARY + "-m3"}],
        },
        "[other.example.test]:587",
    ),
    (
        "sasl_map: missing password",
        {"module_under_test": "sasl_map", "entries": [{"key": "[other.example.test]:587", "username": "u"}]},
        "[other.example.test]:587",
    ),
    (
        "lookup_table: newline in key",
        {
            "module_under_test": "lookup_table",
            "entries": [{"key": "a@example.test\nrelayhost", "value": "b@example.test"}],
        },
        "line break",
    ),
    (
        "lookup_table: empty value",
        {"module_under_test": "lookup_table", "entries": [{"key": "a@example.test", "value": ""}]},
        "a@example.test",
    ),
    (
        "lookup_table: key listed twice",
        {
            "module_under_test": "lookup_table",
            "entries": [
                {"key": "a@example.test", "value": "b@example.test"},
                {"key": "a@example.test", "value": "c@example.test"},
            ],
        },
        "a@example.test",
    ),
    ("postconf: bad parameter name", {"module_under_test": "postconf", "parameters": {"bad-name": "x"}}, "bad-name"),
    (
        "postconf: -o in a service command",
        {
            "module_under_test": "postconf",
            "services": [{"name": "relay2", "type": "unix", "command": "smtp -o smtp_tls_security_level=none"}],
        },
        "relay2",
    ),
    (
        "postconf: new service without command",
        {"module_under_test": "postconf", "services": [{"name": "relay3", "type": "unix"}]},
        "relay3",
    ),
    # issue 18: nothing written before everything is validated, no line folded into another
    (
        "sasl_map: NUL in password",
        {
            "module_under_test": "sasl_map",
            "entries": [{"key": "[other.example.test]:587", "username": "u", "password": CANARY + "-m4\u0000a"}],
        },
        "[other.example.test]:587",
    ),
    (
        "sasl_map: U+2028 in password",
        {
            "module_under_test": "sasl_map",
            "entries": [{"key": "[other.example.test]:587", "username": "u", "password": CANARY + "-m5\u2028TAIL"}],
        },
        "[other.example.test]:587",
    ),
    (
        "postconf: a parameter and a bad service name",
        {
            "module_under_test": "postconf",
            "parameters": {"smtp_helo_name": "changed.example.test"},
            "services": [{"name": "my=svc", "command": "smtp"}],
        },
        "my=svc",
    ),
    (
        "postconf: a line break in relayhost",
        {
            "module_under_test": "postconf",
            "parameters": {"relayhost": "[relay.example.test]:587\nsmtp_tls_security_level = none"},
        },
        "relayhost",
    ),
    (
        "postconf: unknown -o override name",
        {
            "module_under_test": "postconf",
            "services": [{"name": "relay4", "command": "smtp", "options": {"smtp_tls_securty_level": "secure"}}],
        },
        "smtp_tls_securty_level",
    ),
]


def failure_message(output):
    """The msg of the failed task, whitespace-normalised (the yaml callback folds long lines).

    Only the msg counts: the rest of a failed argument validation lists every variable.
    """
    lines = output.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("fatal: [%s]" % rel.RELAY)]
    if not starts:
        return ""
    collected = []
    inside = False
    for line in lines[starts[0] + 1 :]:
        if not line.strip() or not line.startswith("    "):
            if inside or not line.strip():
                break
        stripped = line.strip()
        if line.startswith("    msg:"):
            inside = True
            collected.append(stripped[len("msg:") :].strip().lstrip("|-").strip("'\""))
        elif inside and line.startswith("        "):
            collected.append(stripped.rstrip("'\""))
        elif inside:
            break
    return " ".join(" ".join(collected).split()).replace("''", "'")


def strings_in(value):
    """Every string inside a JSON-like value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def run_case(case, overrides, expected, playbook, checksum_before):
    host = rel.target()
    started = time.monotonic()
    if playbook is None:
        rc, output = rel.converge("-e", json.dumps(overrides))
    else:
        rc, output = harness.run_playbook(playbook, "-e", json.dumps(overrides))
    seconds = time.monotonic() - started
    recap = harness.play_recap(output).get(rel.RELAY, {})
    message = failure_message(output)
    secrets = [value for value in strings_in(overrides) if CANARY in value] + rel.provider_passwords()
    # Up to the first line break or NUL: the part that would show if the value leaked.
    secrets = [re.split("[\n\u2028\x00]", secret)[0].strip() for secret in secrets]
    return {
        "case": case,
        "overrides": json.dumps(overrides, sort_keys=True),
        "variable": expected,
        "rc": rc,
        "failed": recap.get("failed"),
        "changed": recap.get("changed"),
        "named": expected in message,
        "message": message[:400],
        "leaked": sum(1 for secret in secrets if secret and secret in output),
        "unchanged": rel.postfix_files_checksum(host) == checksum_before,
        "seconds": round(seconds, 1),
        "output_tail": "" if expected in message else output[-1500:],
    }


def refusals(cases, playbook, outcome, item, tried):
    host = rel.target()
    checksum_before = rel.postfix_files_checksum(host)
    started = time.monotonic()
    # Four runs at a time: each is mostly ansible-playbook start-up and fact gathering.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: run_case(case[0], case[1], case[2], playbook, checksum_before), cases))
    seconds = time.monotonic() - started
    unchanged_at_end = rel.postfix_files_checksum(host) == checksum_before
    bad = [
        result
        for result in results
        if not (
            result["rc"] != 0
            and result["failed"] == 1
            and result["changed"] == 0
            and result["named"]
            and not result["leaked"]
            and result["unchanged"]
        )
    ]
    outcome.set(
        section="Bad input",
        item=item,
        tried=tried,
        seconds=seconds,
        cases=[dict((key, value) for key, value in result.items() if key != "output_tail") for result in results],
    )
    outcome.set(
        happened="%d of %d refused before any change with a message naming the variable; /etc/postfix %s; "
        "%d password(s) printed"
        % (
            len(results) - len(bad),
            len(results),
            "byte-identical" if unchanged_at_end else "CHANGED",
            sum(result["leaked"] for result in results),
        )
    )
    assert unchanged_at_end
    assert not bad, json.dumps(bad, indent=1)[:6000]


def test_role_refuses_every_invalid_variable_combination(outcome):
    refusals(
        ROLE_CASES,
        None,
        outcome,
        "role variables",
        "%d invalid variable combinations, each an ansible-playbook run of the converge playbook against the "
        "converged rel-relay with -e overrides" % len(ROLE_CASES),
    )


def test_modules_refuse_invalid_arguments(outcome):
    refusals(
        MODULE_CASES,
        MODULE_PLAYBOOK,
        outcome,
        "module arguments",
        "%d invalid module arguments (sasl_map, lookup_table, postconf) against rel-relay's live files"
        % len(MODULE_CASES),
    )
