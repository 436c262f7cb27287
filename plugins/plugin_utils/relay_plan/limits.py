# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Throughput and retries: the provider's published limits, the queue's timing, and how
connections to the relays are kept and reused."""

from __future__ import annotations

import fractions
import math
import re

from ansible_collections.smarthost.postfix.plugins.module_utils.pace_map import MAP_NAME as PACE_MAP_NAME
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import oauth2
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import validate as v
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.model import Plan, unix_service
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
    "name": "tlsproxy",
    "type": "unix",
    "private": "-",
    "unpriv": "-",
    "chroot": "n",
    "wakeup": "-",
    "maxproc": "0",
    "command": "tlsproxy",
    "state": "present",
}


# Postfix's own mailbox_size_limit default: message_size_limit may not exceed it.
MAILBOX_SIZE_LIMIT_DEFAULT = 51200000
# Words in a provider's reply text, as presets.yml spells them (no regular expression syntax).
REPLY_TEXT = re.compile(r"^[A-Za-z0-9 _:.-]+$")


# Pacing above one message a second takes clones of the smtp transport, each paced on its own.
MAX_PACING_CLONES = 50
# A design is taken once it reaches this share of the rate asked for (never above it): each clone
# more is one more message that a tick can release at once.
PACING_CLOSE_ENOUGH = fractions.Fraction(95, 100)
PACING_CLONE = "smtp_pace%d"
CLONE_NAME = re.compile(r"^smtp_pace[1-9][0-9]*$")
# How a message picks its clone: in turn (the pace map, a socketmap server on the host) or at random
# (randmap, in Postfix itself).
PACING_CHOOSERS = ("turns", "random")
# The queue manager's own trivial-rewrite, the one resolver that asks the pace map: smtpd resolves
# every recipient too, and through a shared service would take every other turn (measured).
PACE_REWRITE = "pace_rewrite"
# Where the pace map lists the clones, one a line, in its turn (in relay_config_dir).
PACE_CLONES_FILE = "pace_clones"


def pacing_design(messages_per_second):
    """The whole-second rate delays of the clones that pace messages_per_second: never above the
    rate, within 5% of it, and as few clones firing at once as that takes.

    The queue manager's timers tick in whole seconds, so every clone that is due fires at the same
    tick: K clones at one delay D send K messages in one second, then none for D - 1 seconds. One
    clone per whole message a second at 1 s, then each further clone at the shortest delay that
    does not overshoot what is left (ceil(1 / left)), keeps what a tick releases near the rate
    itself: 14/s is 14 x 1 s; 3.5/s is 3 x 1 s + 2 s (3 or 4 a second, where 7 x 2 s would send 7
    at once); 0.5/s is one clone at 2 s; 0.0058/s one at 173 s.
    """
    # Exact arithmetic on the rate as meant (3.5 is 7/2, 0.023 is 23/1000, 1/86400 a day): never above it.
    target = fractions.Fraction(messages_per_second).limit_denominator(10**6)
    delays = [1] * int(target)
    total = fractions.Fraction(len(delays))
    while total < PACING_CLOSE_ENOUGH * target:
        delay = math.ceil(1 / (target - total))
        delays.append(delay)
        total += fractions.Fraction(1, delay)
    return tuple(delays)


def pacing_weights(delays):
    """randmap entries per clone in proportion to its speed (1/delay), in the smallest whole numbers."""
    common = math.lcm(*delays)
    counts = [common // delay for delay in delays]
    divisor = math.gcd(*counts)
    return tuple(count // divisor for count in counts)


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
            raise RelayPlanError(
                "relay_max_send_rate", "must be a number of messages per second, 0 or more; got %r" % (rate,)
            )
        if 0 < rate_number < MIN_SEND_RATE:
            raise RelayPlanError(
                "relay_max_send_rate",
                "%r is slower than one message a day; use 0 for no pacing or "
                "at least %.6f (1/86400)" % (rate, MIN_SEND_RATE),
            )
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
        if rate and values["smtp_destination_recipient_limit"] == "1":
            raise RelayPlanError(
                "relay_destination_recipient_limit",
                "1 cannot be paced: with one recipient per "
                "delivery Postfix takes each recipient as a destination of its own, so "
                "relay_max_send_rate would pace nothing (use 2 or more, or 0 for Postfix's default)",
            )
        pacing = _pacing(inputs, rate, values["smtp_destination_recipient_limit"])
        main_cf = {"smtp_destination_rate_delay": None, **values, **sizes}
        main_cf.update(pacing.main_cf)
        return Plan(
            main_cf=main_cf, master_services=pacing.master_services, pacing=pacing.pacing, pace_map=pacing.pace_map
        )
    transport = oauth2.transport_name(oauth2.PRIMARY_ACCOUNT)
    stale = _stale_clones_removed(inputs.facts, ())
    main_cf = dict(stale.main_cf, **dict.fromkeys(["smtp_destination_rate_delay"] + list(values)))
    main_cf["%s_destination_concurrency_limit" % transport] = values["smtp_destination_concurrency_limit"]
    main_cf.update(sizes)
    return Plan(main_cf=main_cf, master_services=stale.master_services, send_rates=((transport, rate),) if rate else ())


def _pacing(inputs, rate, recipient_limit):
    """Pace the smtp transport at rate: one rate delay, or clones that each keep their own delay
    and limits. A message takes the next clone in turn from the pace map, or one at random from
    randmap (Postfix 3.0+); either lists each clone as often as its share of the rate. Clones an
    earlier run made that this design does not use are removed with their parameters."""
    delays = _pacing_delays(inputs, rate)
    single = len(delays) == 1
    names = () if single else tuple(PACING_CLONE % index for index in range(1, len(delays) + 1))
    stale = _stale_clones_removed(inputs.facts, names)
    main_cf = dict(stale.main_cf, smtp_destination_rate_delay="%ds" % delays[0] if single else None)
    services = list(stale.master_services)
    for name, delay in zip(names, delays):
        rate_delay, recipients, failed_cohort = _clone_parameters(name)
        main_cf[rate_delay] = "%ds" % delay
        main_cf[recipients] = recipient_limit
        # A throttled session must not mark the relay dead for the clone (concurrency is 1 per clone).
        main_cf[failed_cohort] = "10"
        # The clone that delivered shows in the log (postfix/smtp_pace3/smtp[pid]): an uneven share of
        # a burst is visible to whoever reads it, and the next run knows it as ours.
        services.append(unix_service(name, "smtp", {"syslog_name": "postfix/%s" % name}))
    # A clone appears in the list as often as it is fast: in turn or at random, its share is its speed.
    entries = tuple(name for name, weight in zip(names, pacing_weights(delays)) for _copy in range(weight))
    pace_map = None
    if entries and pacing_chooser(inputs) == "turns":
        port = v.integer("relay_pacing_map_port", inputs.settings["relay_pacing_map_port"], 1, 65535)
        pace_map = {
            "port": port,
            "map": "socketmap:inet:127.0.0.1:%d:%s" % (port, PACE_MAP_NAME),
            "clones_path": inputs.path(PACE_CLONES_FILE),
            "clones": list(entries),
        }
    return Plan(main_cf=main_cf, master_services=tuple(services), pacing=entries, pace_map=pace_map)


def pacing_chooser(inputs):
    """relay_pacing_chooser; unset: in turn, except where SELinux is on.

    SELinux's policy has no rule that lets Postfix's trivial-rewrite connect to the pace map's port
    (and no Red Hat image can be had here to write one against), so such hosts keep randmap.
    """
    chooser = inputs.settings["relay_pacing_chooser"]
    if chooser is None:
        return "random" if inputs.facts.get("selinux") in ("enforcing", "permissive") else "turns"
    return v.choice("relay_pacing_chooser", chooser, PACING_CHOOSERS)


def pacing_chooser_section(inputs, plan):
    """With the pace map, the queue manager resolves through a trivial-rewrite service of its own
    whose sender_dependent_default_transport_maps ends in the pace map: every delivery takes one
    turn, and nothing else (smtpd's recipient checks, sendmail -bv) takes one. main.cf keeps the
    sender routes' table, which every other resolver reads. Without it, an earlier run's service
    and the queue manager's override go, and the role stops the pace map (pace_map_stale)."""
    qmgr = {"name": "qmgr", "type": "unix", "state": "present"}
    if plan.pace_map is None:
        if not _ours(inputs.facts, PACE_REWRITE):
            return Plan()
        return Plan(
            master_services=(
                dict(qmgr, options={"rewrite_service_name": None}),
                {"name": PACE_REWRITE, "type": "unix", "state": "absent"},
            ),
            pace_map_stale={"clones_path": inputs.path(PACE_CLONES_FILE)},
        )
    found = [service.get("name") for service in inputs.facts.get("unix_services") or [] if isinstance(service, dict)]
    if found and "qmgr" not in found:
        raise RelayPlanError(
            "relay_pacing_chooser",
            "turns needs the queue manager's qmgr unix service in master.cf, which this host lacks; use random",
        )
    # A master.cf override takes no whitespace: main.cf's list, comma-separated.
    tables = (plan.main_cf.get("sender_dependent_default_transport_maps") or "").split(", ")
    options = {
        "sender_dependent_default_transport_maps": [table for table in tables if table] + [plan.pace_map["map"]],
        "syslog_name": "postfix/%s" % PACE_REWRITE,
    }
    service = unix_service(PACE_REWRITE, "trivial-rewrite", options)
    return Plan(master_services=(service, dict(qmgr, options={"rewrite_service_name": PACE_REWRITE})))


def _ours(facts, name):
    """Whether master.cf has the unix service name with the syslog_name the role gives it."""
    return any(
        isinstance(service, dict) and service.get("name") == name and service.get("syslog_name") == "postfix/" + name
        for service in facts.get("unix_services") or []
    )


def _pacing_delays(inputs, rate):
    """pacing_design(rate), () without a rate; refused where clones cannot hold it or Postfix lacks randmap."""
    if not rate:
        return ()
    # Refused before a design is drawn: 1e9 would be a billion clones.
    delays = pacing_design(rate) if rate < MAX_PACING_CLONES + 1 else None
    if delays is None or len(delays) > MAX_PACING_CLONES:
        raise RelayPlanError(
            "relay_max_send_rate",
            "%g messages a second is more than %d paced clones of the smtp "
            "transport can hold; use 0 and let the provider's throttling replies pace the host"
            % (rate, MAX_PACING_CLONES),
        )
    version = v.postfix_version_tuple(inputs.facts.get("postfix_version"))
    if len(delays) > 1 and version is not None and version < (3, 0):
        raise RelayPlanError(
            "relay_max_send_rate",
            "pacing above one message a second needs Postfix 3.0 or later "
            "(randmap); this host has %s" % inputs.facts.get("postfix_version"),
        )
    return delays


def _clone_parameters(name):
    """The main.cf parameters a pacing clone is written with: rate delay, recipient limit, failed cohort limit."""
    return tuple(
        "%s_destination_%s" % (name, limit)
        for limit in ("rate_delay", "recipient_limit", "concurrency_failed_cohort_limit")
    )


def _stale_clones_removed(facts, wanted):
    """Pacing clones master.cf has (postfix_info's unix services, marked by their syslog_name) that
    are not wanted, removed with their parameters: a lower rate, no rate or an OAuth 2.0 relay
    leaves no clone behind."""
    found = facts.get("unix_services") or []
    names = [str(service.get("name") or "") for service in found if isinstance(service, dict)]
    stale = [name for name in names if CLONE_NAME.match(name) and name not in wanted and _ours(facts, name)]
    return Plan(
        main_cf={parameter: None for name in stale for parameter in _clone_parameters(name)},
        master_services=tuple({"name": name, "type": "unix", "state": "absent"} for name in stale),
    )


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
    entries = [{"key": r"/^5(\.[0-9]+\.[0-9]+ .*%s.*)$/" % text.replace(".", r"\."), "value": "4$1"} for text in texts]
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
        raise RelayPlanError(
            "relay_minimal_backoff_time", "%s is longer than relay_maximal_backoff_time %s" % (minimal, maximal)
        )
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
        v.time_value("relay_connection_cache_time_limit", limit) if limit is not None else None
    )

    services = ()
    if v.flag("relay_tls_connection_reuse", settings["relay_tls_connection_reuse"]):
        version = v.postfix_version_tuple(inputs.facts.get("postfix_version"))
        if version is not None and version < (3, 4):
            raise RelayPlanError(
                "relay_tls_connection_reuse",
                "needs Postfix 3.4 or later (this host has %s); set it to false" % inputs.facts.get("postfix_version"),
            )
        main_cf["smtp_tls_connection_reuse"] = "yes"
        # The tlsproxy service must exist, or every TLS delivery fails with "Cannot start TLS".
        services = (dict(TLSPROXY_SERVICE),)
    else:
        main_cf["smtp_tls_connection_reuse"] = None
    return Plan(main_cf=main_cf, master_services=services)
