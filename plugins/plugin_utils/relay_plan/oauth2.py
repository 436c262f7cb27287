# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Relays that authenticate with OAuth 2.0 (XOAUTH2).

Postfix's smtp client has no XOAUTH2 that the distributions package, so each such relay gets a
pipe(8) transport of its own: module_utils/oauth2_token.py, installed on the host, hands the
message to msmtp with a token it fetches and renews, and maps every failure that can clear to a
deferral. An account is one relay identity: its transport, its configuration file (secret,
readable by the delivering user only), its token cache and its renewal timer share its name.
"""

from __future__ import annotations

import re

from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.model import Plan

USER = "smarthost-oauth2"
TOOL = "/usr/libexec/smarthost-postfix/oauth2-token"
CONFIG_DIR = "/etc/smarthost-postfix/oauth2"
CACHE_DIR = "/var/cache/smarthost-postfix/oauth2"
PRIMARY_ACCOUNT = "relay"
# Deliveries to one account at a time; Exchange Online allows 3 concurrent connections per mailbox.
DEFAULT_PROCESS_LIMIT = 3


def account_name(relay, given=None):
    """The account's name: the route's transport name, else 'relay' for the primary or the relay's host and port."""
    if given is not None:
        return given
    return ("%s_%d" % (re.sub(r"[^a-z0-9]+", "_", relay.host.lower()).strip("_"), relay.port))[:55]


def transport_name(account):
    # An underscore, not a dash: <transport>_destination_recipient_limit must be a parameter name.
    return "oauth2_" + account


def account(name, relay, ca_file, rate=None):
    """An account as the role installs it: its name, transport and configuration (with secrets)."""
    settings = relay.oauth2
    config = {
        "provider": settings["flow"],
        "username": relay.username,
        "client_id": settings["client_id"],
        "client_secret": settings["client_secret"],
        "smtp_host": relay.host,
        "smtp_port": relay.port,
        "tls": "implicit" if relay.wrappermode else "starttls",
        "ca_file": ca_file,
        "cache_file": "%s/%s.json" % (CACHE_DIR, name),
    }
    for key in ("tenant", "refresh_token", "token_url", "scope"):
        if settings.get(key) is not None:
            config[key] = settings[key]
    if rate:
        # The preset's published rate (Exchange Online: 30 messages a minute per mailbox).
        config["send_interval"] = round(1.0 / rate, 3)
    return {
        "name": name,
        "transport": transport_name(name),
        "nexthop": relay.nexthop,
        "config_path": "%s/%s.json" % (CONFIG_DIR, name),
        "config": config,
    }


def service(account_entry):
    """The pipe(8) entry: the message on stdin, the envelope on the command line, as the delivering user.

    flags=q quotes the addresses for the command line; null_sender= passes the null sender as an
    empty argument, so bounces leave with MAIL FROM:<>.
    """
    return {
        "name": account_entry["transport"],
        "type": "unix",
        "private": "-",
        "unpriv": "n",
        "chroot": "n",
        "wakeup": "-",
        "maxproc": str(DEFAULT_PROCESS_LIMIT),
        "state": "present",
        "command": "pipe flags=q null_sender= user=%s argv=%s deliver --config %s -f ${sender} -- ${recipient}"
        % (USER, TOOL, account_entry["config_path"]),
        "exclusive_options": True,
        "options": {},
    }


def oauth2_section(inputs, plan):
    """The accounts of every OAuth 2.0 relay the sections before registered, and their pipe transports.

    One recipient per delivery: msmtp's result is one exit status for all recipients, and a
    recipient the provider refuses must not take the others with it.
    """
    rates = dict(plan.send_rates)
    accounts = tuple(
        account(name, relay, plan.main_cf["smtp_tls_CAfile"], rates.get(transport_name(name)))
        for name, relay in plan.oauth2_relays
    )
    main_cf = {"%s_destination_recipient_limit" % entry["transport"]: "1" for entry in accounts}
    return Plan(main_cf=main_cf, master_services=tuple(service(entry) for entry in accounts), oauth2_accounts=accounts)
