# -*- coding: utf-8 -*-
# Copyright (c) 2025, smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""What leaves with the mail: the sender domain and address rewriting (local addresses leave with
a real domain), and the headers removed on the way out."""

from __future__ import annotations

import re

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
        raise RelayPlanError("relay_sender_rewrite_map", "generic (smtp_generic_maps) applies to Postfix's smtp client "
                             "only, and an OAuth 2.0 relay takes mail through a pipe transport: use sender_canonical "
                             "or leave it unset")
    parameter = REWRITE_PARAMETERS[map_kind]
    other = REWRITE_PARAMETERS["sender_canonical" if map_kind == "generic" else "generic"]

    sender_domain = settings["relay_sender_domain"]
    if sender_domain is not None:
        sender_domain = v.domain("relay_sender_domain", sender_domain)
    elif facts.get("domain"):
        sender_domain = str(facts["domain"])
    if sender_domain is None and inputs.mode == "null_client":
        raise RelayPlanError("relay_sender_domain", "required: this host has no DNS domain, and a null client must send "
                             "local mail (root, cron) from a real domain the provider accepts")

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


def headers_section(inputs, plan):
    """Header cleanup on the way out (smtp_header_checks leaves local copies alone)."""
    settings = inputs.settings
    if not v.flag("relay_header_cleanup", settings["relay_header_cleanup"]):
        return Plan(main_cf={"smtp_header_checks": None})
    if plan.oauth2_relays:
        raise RelayPlanError("relay_header_cleanup", "smtp_header_checks apply to Postfix's smtp client only, and an "
                             "OAuth 2.0 relay takes mail through a pipe transport, which would send the headers as "
                             "they are")
    headers = v.as_list("relay_header_cleanup_headers", settings["relay_header_cleanup_headers"])
    if not headers:
        raise RelayPlanError("relay_header_cleanup_headers", "must name at least one header when relay_header_cleanup is true")
    entries = []
    for index, header in enumerate(headers):
        header = v.header_name("relay_header_cleanup_headers[%d]" % index, header)
        entries.append({"key": "/^%s:/" % re.escape(header).replace("\\-", "-"), "value": "IGNORE"})
    path = inputs.path("smtp_header_checks")
    return Plan(
        main_cf={"smtp_header_checks": "regexp:" + path},
        tables=({"path": path, "type": "regexp", "entries": entries},),
    )
