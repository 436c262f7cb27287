# -*- coding: utf-8 -*-
# Copyright (c) 2025, smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Throughput and retries: the provider's published limits, the queue's timing, and how
connections to the relays are kept and reused."""

from __future__ import annotations

import math
import re

from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import oauth2
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import validate as v
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.model import Plan
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.validate import RelayPlanError

QUEUE_PARAMETERS = (
    ("relay_maximal_queue_lifetime", "maximal_queue_lifetime"),
    ("relay_bounce_queue_lifetime", "bounce_queue_lifetime"),
    ("relay_minimal_backoff_time", "minimal_backoff_time"),
    ("relay_maximal_backoff_time", "maximal_backoff_time"),
    ("relay_queue_run_delay", "queue_run_delay"),
)
LIMIT_PARAMETERS = (
    ("relay_destination_concurrency_limit", "smtp_destination_concurrency_limit", "destination_concurrency_limit"),
    ("relay_destination_recipient_limit", "smtp_destination_recipient_limit", "destination_recipient_limit"),
)
# One message a day: a slower rate is a typo (1e-300 gave a 301-digit rate delay).
MIN_SEND_RATE = 1.0 / 86400
TLSPROXY_SERVICE = {
    "name": "tlsproxy", "type": "unix", "private": "-", "unpriv": "-", "chroot": "n",
    "wakeup": "-", "maxproc": "0", "command": "tlsproxy", "state": "present",
}


# Postfix's own mailbox_size_limit default: message_size_limit may not exceed it.
MAILBOX_SIZE_LIMIT_DEFAULT = 51200000
# Words in a provider's reply text, as presets.yml spells them (no regular expression syntax).
REPLY_TEXT = re.compile(r"^[A-Za-z0-9 _:.-]+$")


def rate_delay(messages_per_second):
    """Postfix rate delay for a send rate, in whole seconds, rounded up.

    postconf(5) of Postfix 3.7 and 3.10 lists only s, m, h, d and w for rate delays; Postfix
    3.7.11 accepts "72ms" without a warning and then delivers one message and stops (measured
    by the benchmarks). So no unit below seconds: a rate above one message per second cannot be
    paced by a rate delay and is held to one per second, never above what was asked for.
    """
    return "%ds" % int(math.ceil(1.0 / messages_per_second))


def limits_section(inputs, plan):
    """The preset's published limits as Postfix settings, each overridable (0 switches it off).

    They apply to the transport that carries the primary relay. An OAuth 2.0 pipe transport is
    paced by its account instead (a rate delay with one recipient per delivery would pace each
    recipient, not the relay), and delivers one recipient at a time.
    """
    settings = inputs.settings
    limits = inputs.preset.get("postfix") or {}

    rate = settings["relay_max_send_rate"]
    if rate is None:
        rate = limits.get("max_send_rate")
    if rate is not None:
        rate_number = v.number(rate)
        if rate_number is None or not math.isfinite(rate_number) or rate_number < 0:
            raise RelayPlanError("relay_max_send_rate",
                                 "must be a number of messages per second, 0 or more; got %r" % (rate,))
        if 0 < rate_number < MIN_SEND_RATE:
            raise RelayPlanError("relay_max_send_rate", "%r is slower than one message a day; use 0 for no pacing or "
                                 "at least %.6f (1/86400)" % (rate, MIN_SEND_RATE))
        rate = rate_number or None
    size = settings["relay_message_size_limit"]
    if size is None:
        size = limits.get("message_size_limit")
    size = v.integer("relay_message_size_limit", size, 0) if size is not None else None
    sizes = {
        # Refused at submission on this host, with a clear reason, rather than bounced by the provider later.
        "message_size_limit": str(size) if size else None,
        # Postfix refuses a message_size_limit above mailbox_size_limit.
        "mailbox_size_limit": str(size) if size and size > MAILBOX_SIZE_LIMIT_DEFAULT else None,
    }

    values = {}
    for variable, parameter, key in LIMIT_PARAMETERS:
        value = settings[variable]
        if value is None:
            value = limits.get(key)
        if value is not None:
            value = v.integer(variable, value, 0) or None
        values[parameter] = str(value) if value else None

    if inputs.primary.auth != "oauth2":
        main_cf = {"smtp_destination_rate_delay": rate_delay(rate) if rate else None}
        main_cf.update(values)
        main_cf.update(sizes)
        return Plan(main_cf=main_cf)
    transport = oauth2.transport_name(oauth2.PRIMARY_ACCOUNT)
    main_cf = {parameter: None for parameter in ["smtp_destination_rate_delay"] + list(values)}
    main_cf["%s_destination_concurrency_limit" % transport] = values["smtp_destination_concurrency_limit"]
    main_cf.update(sizes)
    return Plan(main_cf=main_cf, send_rates=((transport, rate),) if rate else ())


def deferrals_section(inputs, plan):
    """Replies a provider sends as 5xx although they clear by themselves (daily quotas) are deferred,
    not bounced: smtp_delivery_status_filter (Postfix 3.0+) turns them into 4xx for every smtp
    transport. The OAuth 2.0 pipe transport's tool maps them itself."""
    providers = [inputs.primary.provider]
    for item in list(inputs.domain_routes) + list(inputs.sender_routes) + [inputs.fallback or {}]:
        if isinstance(item, dict):
            providers.append(item.get("provider") or "custom")
    texts = []
    for provider in providers:
        for text in inputs.presets[provider].get("deferrable_replies") or []:
            if not REPLY_TEXT.match(text):
                raise RelayPlanError("presets", "%s: deferrable reply %r must be plain words" % (provider, text))
            if text not in texts:
                texts.append(text)
    if not texts:
        return Plan(main_cf={"smtp_delivery_status_filter": None})
    path = inputs.path("smtp_dsn_filter")
    # The filter sees "<enhanced status> <text>": 5.4.5 ... becomes 4.4.5 ... with the same text.
    entries = [{"key": r"/^5(\.[0-9]+\.[0-9]+ .*%s.*)$/" % text.replace(".", r"\."), "value": "4$1"}
               for text in texts]
    return Plan(
        main_cf={"smtp_delivery_status_filter": "regexp:" + path},
        tables=({"path": path, "type": "regexp", "entries": entries},),
    )


def queue_section(inputs, plan):
    """Queue lifetimes and retry timing; unset leaves Postfix's defaults."""
    main_cf = {}
    for variable, parameter in QUEUE_PARAMETERS:
        value = inputs.settings[variable]
        main_cf[parameter] = v.time_value(variable, value) if value is not None else None
    minimal, maximal = main_cf["minimal_backoff_time"], main_cf["maximal_backoff_time"]
    if minimal and maximal and v.seconds(minimal) > v.seconds(maximal):
        raise RelayPlanError("relay_minimal_backoff_time",
                             "%s is longer than relay_maximal_backoff_time %s" % (minimal, maximal))
    return Plan(main_cf=main_cf)


def connections_section(inputs, plan):
    """Connection caching toward the relays (the fallback included) and TLS connection reuse."""
    settings = inputs.settings
    main_cf = {}
    if v.flag("relay_connection_cache", settings["relay_connection_cache"]):
        destinations = [inputs.primary.nexthop] + ([plan.fallback.nexthop] if plan.fallback else [])
        main_cf["smtp_connection_cache_destinations"] = destinations
    else:
        main_cf["smtp_connection_cache_destinations"] = None
    limit = settings["relay_connection_cache_time_limit"]
    main_cf["smtp_connection_cache_time_limit"] = (
        v.time_value("relay_connection_cache_time_limit", limit) if limit is not None else None)

    services = ()
    if v.flag("relay_tls_connection_reuse", settings["relay_tls_connection_reuse"]):
        version = v.postfix_version_tuple(inputs.facts.get("postfix_version"))
        if version is not None and version < (3, 4):
            raise RelayPlanError("relay_tls_connection_reuse", "needs Postfix 3.4 or later (this host has %s); set it to "
                                 "false" % inputs.facts.get("postfix_version"))
        main_cf["smtp_tls_connection_reuse"] = "yes"
        # The tlsproxy service must exist, or every TLS delivery fails with "Cannot start TLS".
        services = (dict(TLSPROXY_SERVICE),)
    else:
        main_cf["smtp_tls_connection_reuse"] = None
    return Plan(main_cf=main_cf, master_services=services)
