# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""The host's own side: who may submit mail (null client or relay server, never an open relay),
which domains are delivered here, and the alias database local delivery needs."""

from __future__ import annotations

from ansible_collections.smarthost.postfix.plugins.module_utils.rules import compiled_path
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import validate as v
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.model import Plan
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.validate import RelayPlanError

MODES = ("null_client", "relay_server")
INET_PROTOCOLS = ("all", "ipv4", "ipv6", "ipv4, ipv6")
LOOPBACK_NETWORKS = ["127.0.0.0/8", "[::1]/128"]
ALIASES_PATH = "/etc/aliases"
LOCAL_TRANSPORT_DISABLED = "error:local delivery is disabled on this relay"


def mode_section(inputs, plan):
    settings = inputs.settings
    interfaces = v.as_list("relay_inet_interfaces", v.split_words(settings["relay_inet_interfaces"]))
    for index, value in enumerate(interfaces):
        v.text("relay_inet_interfaces[%d]" % index, value)
    networks = v.as_list("relay_mynetworks", v.split_words(settings["relay_mynetworks"]))

    main_cf = {}
    if inputs.mode == "null_client":
        if interfaces and interfaces != ["loopback-only"] and not all(v.is_loopback(value) for value in interfaces):
            raise RelayPlanError(
                "relay_inet_interfaces",
                "a null_client listens on loopback only; use relay_mode relay_server to accept mail from the network",
            )
        if networks:
            raise RelayPlanError(
                "relay_mynetworks", "a null_client accepts mail from this host only; use relay_mode relay_server"
            )
        main_cf["inet_interfaces"] = ", ".join(interfaces) if interfaces else "loopback-only"
        main_cf["mynetworks"] = list(LOOPBACK_NETWORKS)
    else:
        if not networks:
            raise RelayPlanError(
                "relay_mynetworks",
                "required with relay_mode relay_server: the networks allowed to relay through this host",
            )
        main_cf["inet_interfaces"] = ", ".join(interfaces) if interfaces else "all"
        main_cf["mynetworks"] = v.public_bound(
            "relay_mynetworks",
            [v.network("relay_mynetworks[%d]" % index, value) for index, value in enumerate(networks)],
        )

    protocols = settings["relay_inet_protocols"]
    if protocols is not None:
        main_cf["inet_protocols"] = v.choice("relay_inet_protocols", protocols, INET_PROTOCOLS)

    # Never an open relay, and nothing but mynetworks may talk to smtpd at all.
    main_cf["smtpd_relay_restrictions"] = "permit_mynetworks, reject_unauth_destination"
    main_cf["smtpd_client_restrictions"] = "permit_mynetworks, reject"
    main_cf["mydestination"] = ", ".join(plan.local_domains)
    main_cf["local_transport"] = LOCAL_TRANSPORT_DISABLED

    hostname = settings["relay_myhostname"]
    if hostname is not None:
        main_cf["myhostname"] = v.domain("relay_myhostname", hostname)
    return Plan(main_cf=main_cf)


def aliases_section(inputs, plan):
    """The alias database local(8) reads, where some domain is delivered locally.

    A package installed without configuration never built it, and local
    delivery defers with "alias database unavailable" until it exists.
    """
    if not plan.local_domains:
        return Plan()
    alias_map = "%s:%s" % (inputs.database_type, ALIASES_PATH)
    return Plan(
        main_cf={"alias_maps": alias_map, "alias_database": alias_map},
        aliases={"path": ALIASES_PATH, "map": alias_map, "compiled": compiled_path(ALIASES_PATH, inputs.database_type)},
    )
