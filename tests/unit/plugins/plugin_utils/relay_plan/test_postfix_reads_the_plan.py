# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the plan writes, read back by the real Postfix: tables through `postmap -q`, limits through
`postfix check` on a throwaway config dir."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from ansible_collections.smarthost.postfix.plugins.module_utils.maps import Entry, render_table
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix, describe
from ansible_collections.smarthost.postfix.plugins.module_utils.transaction import apply_configuration
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import relay_plan
from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils.postfix_cli import lookup, postconf

HERE = os.path.dirname(os.path.abspath(__file__))
ROLE = os.path.join(HERE, "..", "..", "..", "..", "..", "roles", "relay")
with open(os.path.join(ROLE, "vars", "presets.yml"), encoding="utf-8") as _handle:
    PRESETS = yaml.safe_load(_handle)["__relay_presets"]
with open(os.path.join(ROLE, "defaults", "main.yml"), encoding="utf-8") as _handle:
    DEFAULTS = yaml.safe_load(_handle)
FACTS = {
    "os_family": "Debian",
    "postfix_version": "3.7.11",
    "default_database_type": "hash",
    "ca_file": "/etc/ssl/certs/ca-certificates.crt",
    "domain": "example.com",
}

# The texts as the providers send them and Postfix logs them (multi-line replies joined with spaces).
GMAIL_DAILY = (
    "5.4.5 host smtp.gmail.com[192.0.2.10] said: 550-5.4.5 Daily user sending limit exceeded. For more "
    "information on Gmail 550-5.4.5 sending limits go to 550 5.4.5  https://support.google.com/a/answer/166852 "
    "a1b2c3 - gsmtp (in reply to MAIL FROM command)"
)
WORKSPACE_DAILY = (
    "5.4.5 host smtp-relay.gmail.com[192.0.2.11] said: 550-5.4.5 Daily SMTP relay limit exceeded for "
    "user. For more information on SMTP 550-5.4.5 relay sending limits (in reply to MAIL FROM command)"
)
EXCHANGE_QUOTA = (
    "5.2.0 host smtp.office365.com[192.0.2.12] said: 554 5.2.0 "
    "STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a "
    "permanent exception with message Cannot submit message. (in reply to end of DATA command)"
)
RECIPIENT_REFUSED = "5.1.1 host smtp.gmail.com[192.0.2.10] said: 550 5.1.1 The email account does not exist."


def plan(facts=None, **overrides):
    settings = dict(DEFAULTS, relay_sender_domain="example.com")
    settings.update(overrides)
    return relay_plan(settings, PRESETS, facts or FACTS)


def paced_ses(postfix_dir, rate, facts=None):
    """The SES preset's plan at relay_max_send_rate: rate, writing into postfix_dir."""
    return plan(
        facts,
        relay_provider="ses",
        relay_ses_region="us-east-1",
        relay_username="AKIA",
        relay_password="p-Secret",
        relay_max_send_rate=rate,
        relay_config_dir=str(postfix_dir),
        relay_tls_connection_reuse=False,
    )


def apply_plan(postfix, result):
    """Write a plan's main.cf, master.cf and maps as postfix_config does: checked by postfix check."""
    return apply_configuration(
        postfix,
        parameters=result["main_cf"],
        services=result["master_services"],
        sasl_maps=[result["sasl_map"]],
        tables=result["tables"],
    )


def write_tables(result, directory):
    paths = {}
    for table in result["tables"]:
        path = os.path.join(str(directory), os.path.basename(table["path"]))
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(render_table([Entry(entry["key"], entry["value"]) for entry in table["entries"]]))
        paths[os.path.basename(path)] = "%s:%s" % (table["type"], path)
    return paths


@pytest.mark.parametrize(
    "text, deferred",
    [
        (GMAIL_DAILY, "4.4.5 " + GMAIL_DAILY[len("5.4.5 ") :]),
        (WORKSPACE_DAILY, "4.4.5 " + WORKSPACE_DAILY[len("5.4.5 ") :]),
        (EXCHANGE_QUOTA, "4.2.0 " + EXCHANGE_QUOTA[len("5.2.0 ") :]),
        (RECIPIENT_REFUSED, ""),
    ],
)
def test_quota_replies_become_deferrals_and_nothing_else_changes(postfix_dir, text, deferred):
    routes = [
        {"domain": "ws.example.com", "provider": "google_workspace_relay"},
        {"domain": "contoso.com", "provider": "office365", "username": "m@contoso.com", "password": "p-Secret"},
    ]
    result = plan(
        relay_provider="gmail", relay_username="me@gmail.com", relay_password="p-Secret", relay_domain_routes=routes
    )
    maps = write_tables(result, postfix_dir)
    assert result["main_cf"]["smtp_delivery_status_filter"].endswith("/smtp_dsn_filter")
    assert lookup(postfix_dir, maps["smtp_dsn_filter"], text) == deferred


def test_no_filter_where_no_provider_sends_such_replies():
    assert plan(relay_provider="sendgrid", relay_password="key")["main_cf"]["smtp_delivery_status_filter"] is None


@pytest.mark.parametrize(
    "provider, extra, size",
    [
        ("ses", {"relay_ses_region": "us-east-1", "relay_username": "AKIA"}, "40000000"),
        ("smtp2go", {"relay_username": "u"}, "50000000"),
        ("postmark", {}, "10000000"),
    ],
)
def test_message_size_limits_postfix_accepts(postfix_dir, provider, extra, size):
    main_cf = plan(relay_provider=provider, relay_password="p-Secret", **extra)["main_cf"]
    assert main_cf["message_size_limit"] == size
    big = plan(relay_provider=provider, relay_password="p-Secret", relay_message_size_limit=80000000, **extra)[
        "main_cf"
    ]
    assert (big["message_size_limit"], big["mailbox_size_limit"]) == ("80000000", "80000000")
    postconf(
        postfix_dir,
        "-e",
        "message_size_limit=%s" % big["message_size_limit"],
        "mailbox_size_limit=%s" % big["mailbox_size_limit"],
    )
    # postconf reads back what Postfix would run with.
    assert postconf(postfix_dir, "-h", "message_size_limit").strip() == "80000000"
    off = plan(relay_provider=provider, relay_password="p-Secret", relay_message_size_limit=0, **extra)["main_cf"]
    assert (off["message_size_limit"], off["mailbox_size_limit"]) == (None, None)


def test_added_headers_replace_the_messages_own_and_keep_a_dollar(postfix_dir):
    headers = [
        {"name": "X-SES-CONFIGURATION-SET", "value": "fleet-events"},
        {"name": "X-SMTPAPI", "value": '{"unique_args": {"cost": "$5"}}'},
    ]
    result = plan(
        relay_provider="ses",
        relay_ses_region="us-east-1",
        relay_username="AKIA",
        relay_password="p-Secret",
        relay_headers=headers,
        relay_header_cleanup=True,
    )
    checks = write_tables(result, postfix_dir)["smtp_header_checks"]
    assert result["main_cf"]["always_add_missing_headers"] == "yes"
    assert lookup(postfix_dir, checks, "From: root@example.com") == "PREPEND X-SES-CONFIGURATION-SET: fleet-events"
    assert (
        lookup(postfix_dir, checks, "Date: Wed, 2 Dec 2026 10:00:00 +0000")
        == 'PREPEND X-SMTPAPI: {"unique_args": {"cost": "$5"}}'
    )
    assert lookup(postfix_dir, checks, "X-SES-CONFIGURATION-SET: the application's own") == "IGNORE"
    assert lookup(postfix_dir, checks, "Received: from web1 by relay") == "IGNORE"
    assert lookup(postfix_dir, checks, "Subject: hello") == ""


def test_local_users_go_to_the_ops_address(postfix_dir):
    result = plan(relay_provider="sendgrid", relay_password="key", relay_local_mail_to="ops@example.com")
    virtual = write_tables(result, postfix_dir)["virtual"]
    # postmap compiles the indexed map first.
    subprocess.run(["postmap", "-c", str(postfix_dir), virtual], check=True)
    for address in ("root", "root@localhost", "postmaster", "abuse@localhost.localdomain"):
        assert lookup(postfix_dir, virtual, address) == "ops@example.com"
    assert lookup(postfix_dir, virtual, "www-data") == ""


def test_postfix_takes_the_pacing_clones(postfix_dir):
    """The clones, their per-transport limits and the queue manager's pace map: postfix_config and
    postfix check accept them."""
    applied = apply_plan(Postfix(str(postfix_dir)), paced_ses(postfix_dir, 3.5))
    assert applied["checked"]
    assert postconf(postfix_dir, "-h", "sender_dependent_default_transport_maps").strip() == ""
    rewrite = postconf(postfix_dir, "-M", "pace_rewrite/unix").split()
    assert rewrite[7] == "trivial-rewrite"
    assert "sender_dependent_default_transport_maps=socketmap:inet:127.0.0.1:10039:pace" in rewrite
    assert postconf(postfix_dir, "-P", "qmgr/unix/rewrite_service_name").strip().endswith("= pace_rewrite")
    assert postconf(postfix_dir, "-h", "smtp_pace4_destination_rate_delay").strip() == "2s"
    service = postconf(postfix_dir, "-M", "smtp_pace4/unix").split()
    assert service[:2] == ["smtp_pace4", "unix"]
    assert service[-1] == "syslog_name=postfix/smtp_pace4"


def test_a_lower_rate_leaves_no_clone_behind(postfix_dir):
    """14/s then 3.5/s then unpaced on one config dir, each plan drawn from what postfix_info reads
    there: master.cf and main.cf end with exactly the clones the last design uses."""

    def converge(rate):
        postfix = Postfix(str(postfix_dir))
        facts = dict(FACTS, unix_services=describe(postfix)["unix_services"])
        assert apply_plan(postfix, paced_ses(postfix_dir, rate, facts))["checked"]

    def clones():
        services = sorted(
            line.split()[0] for line in postconf(postfix_dir, "-M").splitlines() if line.startswith("smtp_pace")
        )
        parameters = sorted(
            line.split(" = ")[0] for line in postconf(postfix_dir, "-n").splitlines() if line.startswith("smtp_pace")
        )
        return services, parameters

    converge(14)
    services, parameters = clones()
    assert len(services) == 14 and len(parameters) == 42
    converge(3.5)
    assert clones()[0] == ["smtp_pace1", "smtp_pace2", "smtp_pace3", "smtp_pace4"]
    assert len(clones()[1]) == 12
    converge(0)
    assert clones() == ([], [])
    assert postconf(postfix_dir, "-h", "sender_dependent_default_transport_maps").strip() == ""
    # The pace map's resolver went with the clones, and the queue manager resolves as Postfix ships it.
    assert "pace_rewrite" not in postconf(postfix_dir, "-M")
    assert "rewrite_service_name" not in postconf(postfix_dir, "-P")
