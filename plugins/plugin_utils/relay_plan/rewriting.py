# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Addresses: the sender domain and address rewriting (local addresses leave with a real domain),
and where mail for the host's own users (root, postmaster) goes."""

from __future__ import annotations

from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import validate as v
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.model import Plan
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.validate import RelayPlanError

REWRITE_MAPS = ("generic", "sender_canonical")
REWRITE_PARAMETERS = {"generic": "smtp_generic_maps", "sender_canonical": "sender_canonical_maps"}


def rewriting_section(inputs, plan):
    settings, facts = inputs.settings, inputs.facts
    map_kind = settings["relay_sender_rewrite_map"]
    if map_kind is None:
        # The smtp client's generic maps do not apply to the pipe transport of an OAuth 2.0 relay.
        map_kind = "sender_canonical" if plan.oauth2_relays else "generic"
    v.choice("relay_sender_rewrite_map", map_kind, REWRITE_MAPS)
    if map_kind == "generic" and plan.oauth2_relays:
        raise RelayPlanError(
            "relay_sender_rewrite_map",
            "generic (smtp_generic_maps) applies to Postfix's smtp client "
            "only, and an OAuth 2.0 relay takes mail through a pipe transport: use sender_canonical "
            "or leave it unset",
        )
    parameter = REWRITE_PARAMETERS[map_kind]
    other = REWRITE_PARAMETERS["sender_canonical" if map_kind == "generic" else "generic"]

    sender_domain = settings["relay_sender_domain"]
    if sender_domain is not None:
        sender_domain = v.domain("relay_sender_domain", sender_domain)
    elif facts.get("domain"):
        sender_domain = str(facts["domain"])
    if sender_domain is None and inputs.mode == "null_client":
        raise RelayPlanError(
            "relay_sender_domain",
            "required: this host has no DNS domain, and a null client must send "
            "local mail (root, cron) from a real domain the provider accepts",
        )

    entries = _explicit_rewrites(settings)
    seen = set(entry["key"] for entry in entries)
    if sender_domain is not None and v.flag("relay_rewrite_local_addresses", settings["relay_rewrite_local_addresses"]):
        for name in _local_names(settings, facts):
            key = "@" + name
            if name != sender_domain and key not in seen:
                seen.add(key)
                # "@domain" as the result keeps the user part: root@localhost -> root@example.com.
                entries.append({"key": key, "value": "@" + sender_domain})

    main_cf = {"myorigin": sender_domain}
    tables = ()
    if entries:
        path, table = inputs.indexed_map(map_kind)
        tables = ({"path": path, "type": inputs.database_type, "entries": entries},)
        main_cf[parameter] = table
    else:
        main_cf[parameter] = None
    main_cf[other] = None
    return Plan(main_cf=main_cf, tables=tables)


def _explicit_rewrites(settings):
    entries, seen = [], set()
    for index, item in enumerate(v.as_list("relay_sender_rewrites", settings["relay_sender_rewrites"])):
        prefix = "relay_sender_rewrites[%d]" % index
        item = v.mapping(prefix, item, ("match", "replace"))
        if item.get("match") is None or item.get("replace") is None:
            raise RelayPlanError(prefix, "needs both match and replace")
        match = v.address_pattern(prefix + ".match", item["match"])
        replace = v.address_pattern(prefix + ".replace", item["replace"])
        if match in seen:
            raise RelayPlanError(prefix + ".match", "%s is rewritten twice" % match)
        seen.add(match)
        entries.append({"key": match, "value": replace})
    return entries


def _local_names(settings, facts):
    """The names local mail leaves with unless rewritten: localhost and the host's own names."""
    names = ["localhost", "localhost.localdomain"]
    for name in (settings["relay_myhostname"], facts.get("fqdn")):
        if name and "." in str(name) and str(name) not in names:
            names.append(str(name))
    return names


def local_mail_section(inputs, plan):
    """relay_local_mail_to: mail for the host's own users (root, postmaster, ...) goes to one address.

    virtual_alias_maps rewrite recipients only, at the queue's entrance, so senders stay as they are.
    A bare user name matches user@$myorigin (where unqualified addresses end up) and the host's own
    names are listed too, since a null client delivers none of them locally.
    """
    settings = inputs.settings
    target = settings["relay_local_mail_to"]
    if target is None:
        return Plan(main_cf={"virtual_alias_maps": None})
    target = v.address_pattern("relay_local_mail_to", target)
    if target.startswith("@"):
        raise RelayPlanError("relay_local_mail_to", "must be one address such as ops@example.com, not %s" % target)
    users = v.as_list("relay_local_mail_users", settings["relay_local_mail_users"])
    if not users:
        raise RelayPlanError("relay_local_mail_users", "must name at least one user when relay_local_mail_to is set")
    entries, seen = [], set()
    for index, user in enumerate(users):
        variable = "relay_local_mail_users[%d]" % index
        user = v.text(variable, user)
        if "@" in user or not v.LOCAL_PART.match(user):
            raise RelayPlanError(variable, "%r is not a user name (root, postmaster, www-data)" % user)
        if user.lower() in seen:
            raise RelayPlanError(variable, "%s is listed twice" % user)
        seen.add(user.lower())
        entries.append({"key": user, "value": target})
        entries.extend(
            {"key": "%s@%s" % (user, name), "value": target} for name in _local_names(settings, inputs.facts)
        )
    path, table = inputs.indexed_map("virtual")
    return Plan(
        main_cf={"virtual_alias_maps": table},
        tables=({"path": path, "type": inputs.database_type, "entries": entries},),
    )
