# -*- coding: utf-8 -*-
# Copyright (c) 2025, smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Throughput and retries: the provider's published limits, the queue's timing, and how
connections to the relays are kept and reused."""

from __future__ import annotations

import math

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


def rate_delay(messages_per_second):
    """Postfix rate delay for a send rate, in whole seconds, rounded up.

    postconf(5) of Postfix 3.7 and 3.10 lists only s, m, h, d and w for rate delays; Postfix
    3.7.11 accepts "72ms" without a warning and then delivers one message and stops (measured
    by the benchmarks). So no unit below seconds: a rate above one message per second cannot be
    paced by a rate delay and is held to one per second, never above what was asked for.
    """
    return "%ds" % int(math.ceil(1.0 / messages_per_second))


def limits_section(inputs, plan):
    """The preset's published limits as Postfix settings, each overridable (0 switches it off)."""
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
    main_cf = {"smtp_destination_rate_delay": rate_delay(rate) if rate else None}

    for variable, parameter, key in LIMIT_PARAMETERS:
        value = settings[variable]
        if value is None:
            value = limits.get(key)
        if value is not None:
            value = v.integer(variable, value, 0) or None
        main_cf[parameter] = str(value) if value else None
    return Plan(main_cf=main_cf)


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
