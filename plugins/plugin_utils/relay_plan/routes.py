# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Mail that does not take the primary relay: per recipient domain (own transports, or local
delivery), per sender (sender-dependent relayhost and login), the fallback relay, and Amazon SES's
sandbox allow-list; the transport table they share."""

from __future__ import annotations

import re

from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import oauth2
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import validate as v
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.headers import route_header_checks
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.model import Plan, add_login, unix_service
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.relays import RELAY_KEYS, route_relay
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.tls import (
    UNENCRYPTED_LEVELS,
    UNENCRYPTED_LOGIN,
)
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.validate import RelayPlanError

SENDER_ROUTE_KEYS = ("sender",) + RELAY_KEYS
DOMAIN_ROUTE_KEYS = ("domain", "action", "transport", "tls_security_level", "headers") + RELAY_KEYS
# The fallback logs in with a password: smtp_fallback_relay is a next hop of the smtp transport,
# which has one TLS client certificate and cannot hand mail to an XOAUTH2 pipe transport.
FALLBACK_KEYS = ("provider", "host", "port", "username", "password", "ses_region", "mailgun_region")
DOMAIN_ROUTE_ACTIONS = ("relay", "local")
ROUTE_TLS_LEVELS = ("secure", "encrypt", "may", "none")
SANDBOX_REJECT = "error:5.7.1 recipient is not on relay_ses_sandbox_recipients (Amazon SES sandbox)"

# Services every master.cf already has: a route transport must not take their name.
RESERVED_SERVICES = frozenset(
    (
        "smtp",
        "smtps",
        "submission",
        "submissions",
        "relay",
        "local",
        "virtual",
        "lmtp",
        "error",
        "retry",
        "discard",
        "pipe",
        "pickup",
        "cleanup",
        "qmgr",
        "oqmgr",
        "tlsmgr",
        "rewrite",
        "bounce",
        "defer",
        "trace",
        "verify",
        "flush",
        "proxymap",
        "proxywrite",
        "showq",
        "anvil",
        "scache",
        "postlog",
        "tlsproxy",
        "dnsblog",
        "postscreen",
        "maildrop",
        "uucp",
        "ifmail",
        "bsmtp",
        "scalemail-backend",
        "mailman",
        "spawn",
    )
)


def domain_routes_section(inputs, plan):
    """Each relay_domain_routes item: its own smtp transport to its relay, or local delivery."""
    # Both lists are checked first: a route's transport depends on whether there are sender routes.
    domain_routes, _sender_routes = inputs.domain_routes, inputs.sender_routes
    transport, local_domains, logins, services, oauth2_relays, client_keys = (), (), plan.logins, {}, (), ()
    for index, item in enumerate(domain_routes):
        prefix = "relay_domain_routes[%d]" % index
        item = v.mapping(prefix, item, DOMAIN_ROUTE_KEYS)
        key = _route_domain(prefix, item, transport)
        action = v.choice(prefix + ".action", item.get("action") or "relay", DOMAIN_ROUTE_ACTIONS)
        if action == "local":
            _local_route(prefix, item, key)
            local_domains += (key,)
            transport += ({"key": key, "value": "local:"},)
            continue
        relay = route_relay(inputs.presets, item, prefix, "a relay route")
        if relay.nexthop == inputs.primary.nexthop:
            raise RelayPlanError(
                prefix + ".host", "%s is already the primary relay; no route is needed" % relay.nexthop
            )
        if relay.auth == "oauth2":
            name = _oauth2_route(prefix, item, relay)
            oauth2_relays += ((name, relay),)
            transport += ({"key": key, "value": "%s:%s" % (oauth2.transport_name(name), relay.nexthop)},)
            continue
        name, service, header_table = _route_service(inputs, prefix, item, relay)
        existing = services.get(name)
        if existing is not None and (existing["nexthop"] != relay.nexthop or existing["service"] != service):
            raise RelayPlanError(prefix + ".transport", "%s is already used by a route with different settings" % name)
        services[name] = {"nexthop": relay.nexthop, "service": service, "table": header_table}
        if relay.client_cert is not None:
            client_keys += (relay.client_cert[1],)
        if relay.has_credentials:
            logins = add_login(logins, relay.nexthop, relay, prefix + ".username")
        transport += ({"key": key, "value": "%s:%s" % (name, relay.nexthop)},)
    return Plan(
        transport=transport,
        local_domains=local_domains,
        master_services=tuple(services[name]["service"] for name in sorted(services)),
        tables=tuple(services[name]["table"] for name in sorted(services) if services[name]["table"]),
        logins=logins[len(plan.logins) :],
        oauth2_relays=oauth2_relays,
        client_keys=client_keys,
    )


def _oauth2_route(prefix, item, relay):
    """The account name of a domain route that sends OAuth 2.0 tokens (through msmtp, which verifies)."""
    if item.get("tls_security_level") not in (None, "secure"):
        raise RelayPlanError(
            prefix + ".tls_security_level",
            "auth oauth2 verifies the relay's certificate (secure); %s cannot be used" % item["tls_security_level"],
        )
    if item.get("headers"):
        raise RelayPlanError(
            prefix + ".headers",
            "smtp_header_checks apply to Postfix's smtp client only, not to the pipe transport of an OAuth 2.0 relay",
        )
    given = item.get("transport")
    if given is not None:
        given = v.service_name(prefix + ".transport", given)
    return oauth2.account_name(relay, given)


def _route_domain(prefix, item, transport):
    """The transport table key: the domain, or .domain for its subdomains; each routed once."""
    if item.get("domain") is None:
        raise RelayPlanError(prefix + ".domain", "required")
    domain = v.text(prefix + ".domain", item["domain"])
    key = (
        "." + v.domain(prefix + ".domain", domain[1:])
        if domain.startswith(".")
        else v.domain(prefix + ".domain", domain)
    )
    if any(entry["key"] == key for entry in transport):
        raise RelayPlanError(prefix + ".domain", "%s is routed twice" % key)
    return key


def _local_route(prefix, item, key):
    extra = sorted(k for k in item if k not in ("domain", "action") and item[k] is not None)
    if extra:
        raise RelayPlanError(prefix + "." + extra[0], "does not apply to action local")
    if key.startswith("."):
        raise RelayPlanError(prefix + ".domain", "local delivery needs an exact domain, not %s" % key)


def _route_service(inputs, prefix, item, relay):
    """(name, master.cf service, its header table or None) of a domain route's own smtp transport."""
    tls_level = item.get("tls_security_level")
    if tls_level is not None:
        v.choice(prefix + ".tls_security_level", tls_level, ROUTE_TLS_LEVELS)
        if tls_level in UNENCRYPTED_LEVELS and relay.has_credentials:
            raise RelayPlanError(prefix + ".tls_security_level", UNENCRYPTED_LOGIN % tls_level)
        if tls_level in UNENCRYPTED_LEVELS and relay.wrappermode:
            raise RelayPlanError(
                prefix + ".tls_security_level",
                "port %d uses TLS wrapper mode, which needs encrypt or stronger" % relay.port,
            )

    name = item.get("transport")
    if name is None:
        name = "route_" + re.sub(r"[^a-z0-9]+", "_", relay.host.lower()).strip("_") + "_%d" % relay.port
        name = name[:63]
    else:
        name = v.service_name(prefix + ".transport", name)
    if name in RESERVED_SERVICES:
        raise RelayPlanError(prefix + ".transport", "%r is a standard Postfix service; choose another name" % name)

    options = {"smtp_tls_wrappermode": "yes" if relay.wrappermode else "no"}
    if tls_level is not None:
        options["smtp_tls_security_level"] = tls_level
    if relay.client_cert is not None:
        options["smtp_tls_cert_file"], options["smtp_tls_key_file"] = relay.client_cert
    if inputs.sender_routes:
        # Otherwise a sender's own login would be offered to this route's relay.
        options["smtp_sender_dependent_authentication"] = "no"
    if inputs.fallback is not None:
        # A route names its relay: mail for the domain waits for it rather than leaving elsewhere.
        options["smtp_fallback_relay"] = ""
    header_option, header_table = route_header_checks(inputs, prefix, item, name)
    if header_option is not None:
        options["smtp_header_checks"] = header_option
    return name, unix_service(name, "smtp", options), header_table


def sender_routes_section(inputs, plan):
    """Each relay_sender_routes item: a sender-dependent relayhost with its own login.

    Where OAuth 2.0 is involved (the primary or a route), a sender's relay may need another
    transport than the default one, so every route names its transport and next hop in
    sender_dependent_default_transport_maps instead.
    """
    entries, logins, oauth2_relays = [], plan.logins, ()
    for index, item in enumerate(inputs.sender_routes):
        prefix = "relay_sender_routes[%d]" % index
        item = v.mapping(prefix, item, SENDER_ROUTE_KEYS)
        if item.get("sender") is None:
            raise RelayPlanError(prefix + ".sender", "required")
        sender = v.address_pattern(prefix + ".sender", item["sender"])
        # Postfix looks senders up case-insensitively: @A.example and @a.example are one key.
        twin = next((entry["key"] for entry in entries if entry["key"].casefold() == sender.casefold()), None)
        if twin is not None:
            raise RelayPlanError(
                prefix + ".sender", "%s is routed twice (as %s; Postfix compares senders without case)" % (sender, twin)
            )
        relay = route_relay(inputs.presets, item, prefix, "a sender route")
        if relay.auth == "oauth2":
            name = oauth2.account_name(relay)
            oauth2_relays += ((name, relay),)
            entries.append({"key": sender, "value": relay.nexthop, "transport": oauth2.transport_name(name)})
            continue
        if relay.auth == "certificate":
            raise RelayPlanError(
                prefix + ".auth",
                "a sender route shares the smtp transport's one client certificate; "
                "use relay_domain_routes for a relay that checks certificates",
            )
        if relay.wrappermode != inputs.primary.wrappermode:
            raise RelayPlanError(
                prefix + ".port",
                "TLS wrapper mode is one setting for the smtp transport; port %d and the "
                "primary relay's port %d need different modes (use relay_domain_routes or a matching "
                "port)" % (relay.port, inputs.primary.port),
            )
        if relay.has_credentials:
            logins = add_login(logins, sender, relay, prefix + ".username")
        entries.append({"key": sender, "value": relay.nexthop, "transport": "smtp"})
    # The pacing clones take every message that no sender route names (last in the list); the pace
    # map is the queue manager's alone (limits.pacing_chooser_section).
    pacing = ["randmap:{%s}" % ", ".join(plan.pacing)] if plan.pacing and plan.pace_map is None else []
    main_cf = {
        "sender_dependent_relayhost_maps": None,
        "sender_dependent_default_transport_maps": ", ".join(pacing) or None,
        "smtp_sender_dependent_authentication": None,
    }
    if not entries:
        return Plan(main_cf=main_cf)
    if oauth2_relays or inputs.primary.auth == "oauth2":
        path, table = inputs.indexed_map("sender_transport")
        main_cf["sender_dependent_default_transport_maps"] = ", ".join([table] + pacing)
        rows = [{"key": entry["key"], "value": "%s:%s" % (entry["transport"], entry["value"])} for entry in entries]
    else:
        path, table = inputs.indexed_map("sender_relay")
        main_cf["sender_dependent_relayhost_maps"] = table
        rows = [{"key": entry["key"], "value": entry["value"]} for entry in entries]
    main_cf["smtp_sender_dependent_authentication"] = "yes"
    return Plan(
        main_cf=main_cf,
        tables=({"path": path, "type": inputs.database_type, "entries": rows},),
        logins=logins[len(plan.logins) :],
        oauth2_relays=oauth2_relays,
    )


def fallback_section(inputs, plan):
    """relay_fallback: a second smarthost, with its own login, for when the primary is unreachable."""
    if inputs.fallback is None:
        return Plan(main_cf={"smtp_fallback_relay": None})
    value = v.mapping("relay_fallback", inputs.fallback, FALLBACK_KEYS)
    if inputs.primary.auth == "oauth2":
        raise RelayPlanError(
            "relay_fallback",
            "cannot be combined with relay_auth oauth2: smtp_fallback_relay is a next "
            "hop of Postfix's smtp transport, and an OAuth 2.0 relay is reached through a pipe transport",
        )
    if inputs.sender_routes:
        raise RelayPlanError(
            "relay_fallback",
            "cannot be combined with relay_sender_routes: Postfix would offer a "
            "sender's own login to the fallback relay",
        )
    relay = route_relay(inputs.presets, value, "relay_fallback", "a fallback relay")
    if not relay.has_credentials:
        raise RelayPlanError("relay_fallback.password", "a fallback relay needs its own credentials")
    if relay.nexthop == inputs.primary.nexthop:
        raise RelayPlanError("relay_fallback.host", "%s is the primary relay itself" % relay.nexthop)
    if relay.wrappermode != inputs.primary.wrappermode:
        raise RelayPlanError(
            "relay_fallback.port",
            "TLS wrapper mode is one setting for the smtp transport; port %d and the "
            "primary relay's port %d need different modes" % (relay.port, inputs.primary.port),
        )
    return Plan(
        main_cf={"smtp_fallback_relay": relay.nexthop},
        fallback=relay,
        logins=add_login(plan.logins, relay.nexthop, relay, "relay_fallback.username")[len(plan.logins) :],
    )


def ses_sandbox_section(inputs, plan):
    """Amazon SES sandbox: only verified recipients leave; the rest fail here, not at SES."""
    sandbox = v.as_list("relay_ses_sandbox_recipients", inputs.settings["relay_ses_sandbox_recipients"])
    if not sandbox:
        return Plan()
    if inputs.primary.provider != "ses":
        raise RelayPlanError("relay_ses_sandbox_recipients", "only applies with relay_provider ses")
    if inputs.sender_routes:
        raise RelayPlanError(
            "relay_ses_sandbox_recipients",
            "cannot be combined with relay_sender_routes "
            "(the allow-list would also stop mail routed to other relays per sender)",
        )
    routed = set(entry["key"] for entry in plan.transport)
    transport = []
    for index, recipient in enumerate(sandbox):
        variable = "relay_ses_sandbox_recipients[%d]" % index
        recipient = v.text(variable, recipient)
        key = v.address_pattern(variable, recipient) if "@" in recipient else v.domain(variable, recipient)
        if key.startswith("@"):
            key = key[1:]
        if key in routed:
            raise RelayPlanError(variable, "%s is already routed by relay_domain_routes" % key)
        routed.add(key)
        # ":" keeps transport and next hop unchanged: the recipient goes to the relay as usual.
        transport.append({"key": key, "value": ":"})
    transport.append({"key": "*", "value": SANDBOX_REJECT})
    return Plan(transport=tuple(transport))


def transport_section(inputs, plan):
    """The transport table every route above adds to (after the last of them)."""
    if not plan.transport:
        return Plan(main_cf={"transport_maps": None})
    path, table = inputs.indexed_map("transport")
    return Plan(
        main_cf={"transport_maps": table},
        tables=({"path": path, "type": inputs.database_type, "entries": list(plan.transport)},),
    )
