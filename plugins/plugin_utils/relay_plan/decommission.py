# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Decommission (relay_state: absent): from the plan of what the role wrote to what undoes it.

``decommission(plan)`` is a pure function of relay_plan()'s result for the same inventory, so the
role undoes exactly what it would write: every main.cf parameter the plan owns goes back to
Postfix's default except the few that make a local-only Postfix (Debian's "Local only"
configuration), every master.cf service the plan adds is removed, and every file the plan writes
that can hold a secret is listed with the files Postfix and the role build from it.
"""

from __future__ import annotations

from ansible_collections.smarthost.postfix.plugins.module_utils.rules import COMPILED_SUFFIXES

# Where local-only mail goes when the role no longer relays: local delivery for the host itself,
# a clear refusal for anything else (Postfix's error(8) transport, as Debian's "Local only").
NO_RELAY_REASON = "this host no longer relays mail (smarthost.postfix relay_state absent)"
ALIASES = "/etc/aliases"


def local_only_parameters(database_type):
    """main.cf of a Postfix that delivers to the host's own users and relays nothing."""
    aliases = "%s:%s" % (database_type, ALIASES)
    return {
        "inet_interfaces": "loopback-only",
        "mydestination": "$myhostname, localhost.$mydomain, localhost",
        "alias_maps": aliases,
        "alias_database": aliases,
        "default_transport": "error:" + NO_RELAY_REASON,
        "relay_transport": "error:" + NO_RELAY_REASON,
    }


def with_compiled(path):
    """A map's source and every file postmap may have built from it, whatever type it had before."""
    return [path] + sorted({path + suffix for suffix in COMPILED_SUFFIXES.values()})


def _undone(service):
    """A service the plan adds goes; one it only gives options to (qmgr's pace rewrite) keeps its
    line without them."""
    if service.get("command") is None and service.get("state", "present") == "present":
        options = dict.fromkeys(service.get("options") or {})
        return {"name": service["name"], "type": service["type"], "state": "present", "options": options}
    return {"name": service["name"], "type": service["type"], "state": "absent"}


def decommission(plan):
    """What undoes ``plan`` (relay_plan()'s result): see the module docstring.

    Returns ``main_cf`` and ``master_services`` for postfix_config (the services as
    ``state: absent``, or without their options where the plan only gives an existing service
    options), ``aliases`` for the local delivery that remains, ``secret_files`` (maps, compiled
    maps), ``secret_directories``, ``other_files`` (the pace map's list of clones), and
    ``backup_directories`` with ``backup_patterns`` (where postfix_config's backups of those files
    are and the names they take) for a find.
    """
    main_cf = dict.fromkeys(plan["main_cf"])
    main_cf.update(local_only_parameters(plan["database_type"]))
    # tlsproxy too: the stock master.cf has it commented out, the plan enables it for reused TLS.
    # A service's state absent in the plan (a stale clone) is already gone and stays so.
    services = [_undone(service) for service in plan["master_services"]]
    maps = [plan["sasl_map"]["path"]] + [table["path"] for table in plan["tables"]]
    files = [name for path in maps for name in with_compiled(path)]
    directories = [plan["submission"]["directory"]] if plan.get("submission") else []
    # The pace map's list of clones holds no secret; it goes with the rest all the same.
    pace_map = plan.get("pace_map") or plan.get("pace_map_stale")
    other_files = [pace_map["clones_path"]] if pace_map else []
    compiled = COMPILED_SUFFIXES.get(plan["database_type"])
    return {
        "main_cf": main_cf,
        "master_services": services,
        "aliases": {
            "path": ALIASES,
            "map": "%s:%s" % (plan["database_type"], ALIASES),
            "compiled": ALIASES + compiled if compiled else None,
        },
        "secret_files": files,
        "secret_directories": directories,
        "other_files": other_files,
        "backup_directories": sorted({path.rsplit("/", 1)[0] for path in files}),
        "backup_patterns": sorted({"%s.*~" % path.rsplit("/", 1)[-1] for path in files}),
    }
