# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Headers on the way out, in one smtp_header_checks table per relay: the cleanup (headers removed)
and the provider's own headers added (SES X-SES-CONFIGURATION-SET, SendGrid X-SMTPAPI).

smtp_header_checks apply as mail leaves through Postfix's smtp client, so local copies keep their
headers. Each header line is checked on its own, first match wins: an added header replaces one
the message already has (IGNORE), and is prepended once, before From:, Date: or Message-ID:, which
every message has once cleanup added what is missing (always_add_missing_headers).
"""

from __future__ import annotations

import re

from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import validate as v
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.model import Plan
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.validate import RelayPlanError

# Header lines stay well inside RFC 5322's 998 characters.
MAX_HEADER_VALUE = 900
# Headers every message has exactly once once cleanup has seen it (always_add_missing_headers):
# each added header is prepended before one of them.
ANCHORS = ("From", "Date", "Message-ID")
MESSAGE_HEADERS = ("from", "to", "cc", "bcc", "subject", "date", "message-id", "received", "sender", "reply-to")


def _pattern(header):
    return "/^%s:/" % re.escape(header).replace("\\-", "-")


def cleanup_entries(inputs):
    """The headers relay_header_cleanup removes, as IGNORE entries ([] when it is off)."""
    settings = inputs.settings
    if not v.flag("relay_header_cleanup", settings["relay_header_cleanup"]):
        return []
    headers = v.as_list("relay_header_cleanup_headers", settings["relay_header_cleanup_headers"])
    if not headers:
        raise RelayPlanError(
            "relay_header_cleanup_headers", "must name at least one header when relay_header_cleanup is true"
        )
    return [
        {"key": _pattern(v.header_name("relay_header_cleanup_headers[%d]" % index, header)), "value": "IGNORE"}
        for index, header in enumerate(headers)
    ]


def added_header_entries(variable, headers):
    """IGNORE for each added header the message may carry already, then one PREPEND per header,
    each before one of ANCHORS (one action adds one line, and a table's first match wins)."""
    ignore, prepend, seen = [], [], set()
    headers = v.as_list(variable, headers)
    if len(headers) > len(ANCHORS):
        raise RelayPlanError(
            variable,
            "at most %d headers per relay (each is added before one of %s)" % (len(ANCHORS), ", ".join(ANCHORS)),
        )
    for index, item in enumerate(headers):
        prefix = "%s[%d]" % (variable, index)
        item = v.mapping(prefix, item, ("name", "value"))
        if item.get("name") is None or item.get("value") is None:
            raise RelayPlanError(prefix, "needs both name and value")
        name = v.header_name(prefix + ".name", item["name"])
        value = v.text(prefix + ".value", str(item["value"])).strip()
        if not value or len(value) > MAX_HEADER_VALUE:
            raise RelayPlanError(prefix + ".value", "must be 1 to %d characters" % MAX_HEADER_VALUE)
        if name.lower() in seen:
            raise RelayPlanError(prefix + ".name", "%s is added twice" % name)
        if name.lower() in MESSAGE_HEADERS:
            raise RelayPlanError(prefix + ".name", "%s is part of the message itself; add provider headers only" % name)
        seen.add(name.lower())
        ignore.append({"key": _pattern(name), "value": "IGNORE"})
        # "$" would start a $1-style substitution in a regexp table's result: "$$" is a literal one.
        prepend.append({"key": _pattern(ANCHORS[index]), "value": "PREPEND %s: %s" % (name, value.replace("$", "$$"))})
    return prepend + ignore


def header_checks(inputs, name, cleanup, added):
    """(main.cf/-o value, table) of one smtp_header_checks table, or (None, None) without entries."""
    entries = added + cleanup
    if not entries:
        return None, None
    anchors = set(entry["key"] for entry in added if entry["value"].startswith("PREPEND"))
    removed = [entry["key"] for entry in cleanup if entry["key"] in anchors]
    if removed:
        raise RelayPlanError(
            "relay_header_cleanup_headers",
            "%s carries an added header; it cannot be removed too" % removed[0].strip("/^:"),
        )
    path = inputs.path(name)
    return "regexp:" + path, {"path": path, "type": "regexp", "entries": entries}


def headers_section(inputs, plan):
    """The smtp transport's table: the cleanup and relay_headers (the primary's and the sender routes')."""
    cleanup = cleanup_entries(inputs)
    added = added_header_entries("relay_headers", inputs.settings["relay_headers"])
    if (cleanup or added) and plan.oauth2_relays:
        variable = "relay_header_cleanup" if cleanup else "relay_headers"
        raise RelayPlanError(
            variable,
            "smtp_header_checks apply to Postfix's smtp client only, and an OAuth 2.0 relay "
            "takes mail through a pipe transport, which would send the headers as they are",
        )
    value, table = header_checks(inputs, "smtp_header_checks", cleanup, added)
    routes_add = any(table_["path"].rsplit("/", 1)[-1].startswith("smtp_header_checks_") for table_ in plan.tables)
    main_cf = {
        "smtp_header_checks": value,
        # Every message then has the headers the added ones are prepended to.
        "always_add_missing_headers": "yes" if added or routes_add else None,
    }
    return Plan(main_cf=main_cf, tables=(table,) if table else ())


def route_header_checks(inputs, prefix, item, service_name):
    """(-o value, table) of a domain route's own table: the cleanup and the route's headers, and never
    the primary's (relay_headers are the primary provider's). (None, None) where the global one fits."""
    added = added_header_entries(prefix + ".headers", item.get("headers"))
    if not added and not inputs.settings["relay_headers"]:
        return None, None
    cleanup = cleanup_entries(inputs)
    value, table = header_checks(inputs, "smtp_header_checks_" + service_name, cleanup, added)
    # An empty value switches the global table off for this transport.
    return value or "", table
