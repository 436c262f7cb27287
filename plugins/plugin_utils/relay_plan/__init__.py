# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""The relay plan: role variables + provider preset + host facts -> desired Postfix state.

Controller side only (the filter smarthost.postfix.relay_plan is its one caller).
``relay_plan(settings, presets, facts)`` is a pure function. It reads nothing from disk and runs
nothing; it validates every input (each error names the variable at fault) and returns the dict
the relay role applies:

``packages``            OS packages to install
``main_cf``             every main.cf parameter the role owns; ``None`` removes one
``master_services``     entries for the postfix_config module's ``services`` option
``sasl_map``            ``{path, type, entries: [{key, username, password}]}`` (secret) for ``sasl_maps``
``tables``              ``[{path, type, entries}]`` for postfix_config's ``tables``
``relayhost``           the primary next hop, for messages and reports
``database_type``       the indexed map type every table uses
``aliases``             ``{path, map, compiled}`` of the alias database local delivery needs, or None
``probe``               ``{host, port, tls, verify, ca_file, authenticate}`` for relay_probe before a switch
``submission``          ``{directory, sasldb, config_file, realm, users: [{name, password}], tls_cert, tls_key}``
                        (secret) for the sasldb module, or None without authenticated submission
``pace_map``            ``{port, map, clones_path, clones}`` of the pace map the pacing clones are taken in
                        turn from, or None; ``pace_map_stale``: ``{clones_path}`` of an earlier run's pace
                        map that the role stops and removes, or None

``settings`` holds exactly the role's variables as the role passes them (roles/relay/vars/main.yml:
the plan has no default of its own), ``presets`` is keyed by provider name
(roles/relay/vars/presets.yml), and ``facts`` holds what the host tells: os_family,
postfix_version, default_database_type, tls_min_version_syntax, ca_file, packages,
map_type_packages, domain, fqdn.

The plan is built by SECTIONS, in that order: each section is a function of the inputs and the
plan so far that returns a Plan of what it adds, and may read only what earlier sections added.
"""

from __future__ import annotations

from ansible_collections.smarthost.postfix.plugins.module_utils.rules import INDEXED_TYPES
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import validate as v
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.extra import extra_parameters_section
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.headers import headers_section
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.limits import (
    connections_section,
    deferrals_section,
    limits_section,
    pacing_chooser_section,
    queue_section,
)
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.local import (
    MODES,
    aliases_section,
    mode_section,
)
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.model import Inputs, Plan, Settings
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.oauth2 import oauth2_section
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.relays import (
    primary_relay,
    probe_section,
    relayhost_section,
    sasl_auth_section,
)
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.rewriting import (
    local_mail_section,
    rewriting_section,
)
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.routes import (
    domain_routes_section,
    fallback_section,
    sender_routes_section,
    ses_sandbox_section,
    transport_section,
)
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.submission import submission_section
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.tls import (
    TLS_LEVELS,
    UNENCRYPTED_LEVELS,
    UNENCRYPTED_LOGIN,
    tls_section,
)
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.validate import RelayPlanError

__all__ = ["RelayPlanError", "SECTIONS", "relay_plan"]

# The order is the plan's one ordering rule. Routes come before the transport table they fill and
# the mode that lists their local domains; every OAuth 2.0 relay (primary and routes) is known
# before oauth2 builds their transports, and before rewriting and headers, which depend on
# whether one exists; the pacing chooser's resolver reads the sender routes' table too; every
# login is known before sasl_auth; the escape hatch comes after
# everything the role sets itself; the probe reads the final TLS settings. main.cf is written in
# this order.
SECTIONS = (
    relayhost_section,
    tls_section,
    limits_section,
    domain_routes_section,
    sender_routes_section,
    pacing_chooser_section,
    fallback_section,
    oauth2_section,
    ses_sandbox_section,
    transport_section,
    mode_section,
    submission_section,
    aliases_section,
    rewriting_section,
    local_mail_section,
    headers_section,
    deferrals_section,
    queue_section,
    connections_section,
    sasl_auth_section,
    extra_parameters_section,
    probe_section,
)


def relay_plan(settings, presets, facts):
    """Validate the role's variables and compute the desired Postfix state (see the package docstring)."""
    inputs = read_inputs(settings, presets, facts)
    plan = Plan()
    for section in SECTIONS:
        plan = plan.add(section(inputs, plan), section.__name__)
    return {
        "provider": inputs.primary.provider,
        "relayhost": inputs.primary.nexthop,
        "database_type": inputs.database_type,
        "packages": packages(
            inputs.facts,
            inputs.database_type,
            bool(plan.oauth2_accounts),
            bool(selinux_smtp_ports(plan)) and inputs.facts.get("selinux") in ("enforcing", "permissive"),
            bool(plan.submission and plan.submission["users"]),
        ),
        "main_cf": plan.main_cf,
        "master_services": list(plan.master_services),
        "sasl_map": {
            "path": inputs.path("sasl_passwd"),
            "type": inputs.database_type,
            "entries": [login.entry() for login in plan.logins],
        },
        "tables": list(plan.tables),
        "aliases": plan.aliases,
        "probe": plan.probe,
        "oauth2": list(plan.oauth2_accounts),
        "client_keys": sorted(set(plan.client_keys)),
        "selinux_smtp_ports": selinux_smtp_ports(plan),
        "submission": plan.submission,
        "pace_map": plan.pace_map,
        "pace_map_stale": plan.pace_map_stale,
    }


# Ports SELinux's policy already labels smtp_port_t, which Postfix's smtp client may connect to.
SMTP_PORTS_LABELLED = (25, 465, 587)


def selinux_smtp_ports(plan):
    """Ports of every next hop the plan names that an enforcing SELinux would refuse (2525, 2587, 8465...)."""
    nexthops = [plan.main_cf.get("relayhost"), plan.main_cf.get("smtp_fallback_relay")]
    nexthops += [account["nexthop"] for account in plan.oauth2_accounts]
    for table in plan.tables:
        if table["path"].rsplit("/", 1)[-1] in ("transport", "sender_relay", "sender_transport"):
            nexthops += [entry["value"] for entry in table["entries"]]
    ports = set()
    for nexthop in nexthops:
        if nexthop and nexthop.rsplit("]:", 1)[-1].isdigit() and "]:" in nexthop:
            ports.add(int(nexthop.rsplit("]:", 1)[-1]))
    return sorted(port for port in ports if port not in SMTP_PORTS_LABELLED)


def read_inputs(settings, presets, facts):
    """What every section shares, validated in a fixed order before any section runs."""
    if not isinstance(presets, dict) or not presets:
        raise RelayPlanError("presets", "the provider presets are missing (roles/relay/vars/presets.yml)")
    facts = facts or {}
    settings = Settings(settings)
    mode = v.choice("relay_mode", settings["relay_mode"], MODES)
    config_dir = v.absolute_path("relay_config_dir", settings["relay_config_dir"]).rstrip("/") or "/"
    database_type = _database_type(settings, facts)
    tls_level = settings["relay_tls_security_level"]
    if tls_level in UNENCRYPTED_LEVELS:
        raise RelayPlanError("relay_tls_security_level", UNENCRYPTED_LOGIN % tls_level)
    tls_level = v.choice("relay_tls_security_level", tls_level, TLS_LEVELS)
    wrappermode = settings["relay_tls_wrappermode"]
    if wrappermode is not None:
        v.flag("relay_tls_wrappermode", wrappermode)
    primary = primary_relay(settings, presets, wrappermode)
    return Inputs(settings, presets, facts, mode, config_dir, database_type, tls_level, primary)


def _database_type(settings, facts):
    value = settings["relay_database_type"]
    if value is None:
        return facts.get("default_database_type") or "hash"
    return v.choice("relay_database_type", value, INDEXED_TYPES)


def packages(facts, database_type, oauth2=False, selinux_labels=False, submission=False):
    """The OS family's packages, the one that provides the map type where it is separate, msmtp
    where an OAuth 2.0 relay needs it, semanage where ports need an SELinux label, and the Cyrus
    SASL tools where submission users are kept."""
    names = list(facts.get("packages") or [])
    extras = [(facts.get("map_type_packages") or {}).get(database_type)]
    if oauth2:
        extras += list(facts.get("oauth2_packages") or [])
    if selinux_labels:
        extras += list(facts.get("selinux_packages") or [])
    if submission:
        extras += list(facts.get("submission_packages") or [])
    for extra in extras:
        if extra and extra not in names:
            names.append(extra)
    return names
