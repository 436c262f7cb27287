# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Planning main.cf and master.cf changes: from the desired state and what postconf reports now
to the fewest postconf invocations, with the diff. Running postconf is postfix.py's job."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re

from ansible_collections.smarthost.postfix.plugins.module_utils.files import locked, read_text, recover
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import (
    MASTER_FIELDS,
    SERVICE_TYPES,
    MasterEntry,
    PostfixError,
    normalize_whitespace,
    referenced_names,
    split_command,
)
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import (
    ValidationError,
    is_parameter_name,
    strip_postfix_space,
    text_problem,
)

# master(8) service names: a unix/fifo/pass service is a socket or FIFO file name; an inet service
# is [host:]port. Nothing that postconf -M would read as its own syntax (=, /, #, braces, commas,
# $) and no more than 64 characters for the name or port, so that the socket path fits.
_LOCAL_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_INET_SERVICE_NAME = re.compile(
    r"^(?:(?:\[[0-9A-Fa-f:.]{2,45}\]|\*|[A-Za-z0-9][A-Za-z0-9._-]{0,252}):)?"
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
)

_FIELD_PATTERNS = {
    "private": re.compile(r"^[yn-]$"),
    "unpriv": re.compile(r"^[yn-]$"),
    "chroot": re.compile(r"^[yn-]$"),
    "wakeup": re.compile(r"^(-|[0-9]+\??)$"),
    "maxproc": re.compile(r"^(-|[0-9]+)$"),
}


def format_parameter_value(value, separator=", "):
    """Turn an Ansible value into the text Postfix stores: bool -> yes/no, list -> joined."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return separator.join(format_parameter_value(item, separator) for item in value if item is not None)
    return normalize_whitespace(str(value))


def value_problem(value):
    """None when an Ansible value can become one main.cf or master.cf value, else why not.

    A line break inside the value is refused: folded into one line it would silently turn
    `[relay]:587\\nsmtp_tls_security_level = none` into a relayhost of junk next hops. White space
    at the ends (a YAML block's last newline) is dropped, as Postfix drops it.
    """
    if isinstance(value, (list, tuple)):
        return next((problem for problem in (value_problem(item) for item in value) if problem), None)
    if value is None or isinstance(value, bool):
        return None
    return text_problem(strip_postfix_space(str(value)))


def normalize_parameters(parameters):
    """Validate names and format values; None stays None (meaning: remove)."""
    normalized = {}
    bad = sorted(name for name in parameters if not is_parameter_name(str(name)))
    if bad:
        raise ValidationError("invalid main.cf parameter name(s): %s" % ", ".join(bad))
    for name, value in parameters.items():
        problem = value_problem(value)
        if problem:
            raise ValidationError("main.cf parameter %s: the value %s" % (name, problem))
        normalized[name] = format_parameter_value(value)
    return normalized


def plan_parameters(current, desired, state):
    """Return (to_set, to_remove) turning `current` main.cf settings into `desired`."""
    to_set, to_remove = {}, []
    for name, value in desired.items():
        if state == "absent" or value is None:
            if name in current:
                to_remove.append(name)
        elif current.get(name) != value:
            to_set[name] = value
    return to_set, to_remove


def parameters_diff(current, to_set, to_remove):
    """Before/after text of exactly the main.cf lines that change."""
    names = list(to_set) + list(to_remove)
    before = "".join(("%s = %s" % (name, current[name])).rstrip() + "\n" for name in names if name in current)
    after = "".join(("%s = %s" % (name, value)).rstrip() + "\n" for name, value in to_set.items())
    return before, after


def find_unknown_parameters(
    postfix, names, settings_after, override_values=(), services_to_define=(), master_entries=None
):
    """Names Postfix would not recognise once this call is applied.

    Known are: what `postconf -H` lists (built-in names, names derived from master.cf
    services, user-defined names something refers to); names referred to as $name by a
    main.cf value (as it will be), by a -o override (existing or new) or listed in
    smtpd_restriction_classes; and names derived from services this call defines, which
    postconf itself reports for a scratch master.cf holding just those services.
    master_entries: the current master.cf if already read (it is read only when needed).
    """
    unknown = set(names) - postfix.parameter_names()
    for value in list(settings_after.values()) + list(override_values):
        unknown -= referenced_names(value)
    unknown -= set(re.split(r"[\s,]+", settings_after.get("smtpd_restriction_classes", "")))
    if unknown:
        if master_entries is None:
            master_entries = postfix.master_entries()
        for entry in master_entries.values():
            for value in entry.options.values():
                unknown -= referenced_names(value)
    if unknown and services_to_define:
        master_cf = "".join(entry.line() + "\n" for entry in services_to_define)
        with postfix.scratch(master_cf) as scratch:
            unknown -= scratch.parameter_names()
    return sorted(unknown)


@dataclasses.dataclass
class ServicePlan:
    """The postconf edits that turn the current master.cf into the desired one."""

    remove: list = dataclasses.field(default_factory=list)  # -MX name/type
    replace: list = dataclasses.field(default_factory=list)  # -M name/type=line (MasterEntry)
    fields: dict = dataclasses.field(default_factory=dict)  # -F name/type/field=value
    remove_options: list = dataclasses.field(default_factory=list)  # -PX name/type/option
    set_options: dict = dataclasses.field(default_factory=dict)  # -P name/type/option=value
    changes: list = dataclasses.field(default_factory=list)  # (key, before entry|None, after entry|None)

    @property
    def changed_services(self):
        return [key for key, _before, _after in self.changes]


def normalize_service(spec):
    """Validate one `services` item and return it with formatted values."""
    name = (spec.get("name") or "").strip()
    service_type = spec.get("type") or "unix"
    if service_type not in SERVICE_TYPES:
        raise ValidationError("service %r: type must be one of %s" % (name, ", ".join(SERVICE_TYPES)))
    pattern = _INET_SERVICE_NAME if service_type == "inet" else _LOCAL_SERVICE_NAME
    if not pattern.match(name):
        raise ValidationError(
            "invalid master.cf service name %r: %s"
            % (
                name[:80] + ("..." if len(name) > 80 else ""),
                "[host:]port for inet" if service_type == "inet" else 'letters, digits, ".", "_" and "-", at most 64',
            )
        )
    key = "%s/%s" % (name, service_type)
    fields = {}
    for field, _postconf_name in MASTER_FIELDS:
        value = spec.get(field)
        if value is None:
            continue
        value = format_parameter_value(value)
        if not _FIELD_PATTERNS[field].match(value):
            raise ValidationError("service %s: invalid %s %r" % (key, field, value))
        fields[field] = value
    command = spec.get("command")
    if command is not None:
        problem = value_problem(command)
        if problem:
            raise ValidationError("service %s: the command %s" % (key, problem))
        if command.count("{") != command.count("}"):
            raise ValidationError("service %s: the command has unbalanced braces" % key)
        command = normalize_whitespace(command)
        stripped, overrides = split_command(command)
        if overrides:
            raise ValidationError("service %s: put -o overrides into options, not into command" % key)
        if not stripped:
            raise ValidationError("service %s: command is empty" % key)
        command = stripped
    options = {}
    for option, value in (spec.get("options") or {}).items():
        if not is_parameter_name(str(option)):
            raise ValidationError("service %s: invalid option name %r" % (key, option))
        problem = value_problem(value)
        if problem:
            raise ValidationError("service %s: option %s %s" % (key, option, problem))
        value = format_parameter_value(value, separator=",")
        # postconf -P refuses whitespace in override values.
        if value is not None and re.search(r"\s", value):
            raise ValidationError("service %s: option %s must not contain whitespace" % (key, option))
        options[option] = value
    return {
        "name": name,
        "type": service_type,
        "key": key,
        "state": spec.get("state") or "present",
        "fields": fields,
        "command": command,
        "options": options,
        "exclusive_options": bool(spec.get("exclusive_options")),
    }


def plan_services(current_entries, services):
    """Plan master.cf edits. `services` are normalize_service() results."""
    plan = ServicePlan()
    seen = set()
    for spec in services:
        key = spec["key"]
        if key in seen:
            raise ValidationError("service %s is listed more than once" % key)
        seen.add(key)
        current = current_entries.get(key)
        if spec["state"] == "absent":
            if current is not None:
                plan.remove.append(key)
                plan.changes.append((key, current, None))
            continue
        if current is None:
            if spec["command"] is None:
                raise ValidationError("service %s is not in master.cf: give its command to create it" % key)
            entry = MasterEntry(
                spec["name"],
                spec["type"],
                command=spec["command"],
                options={k: v for k, v in spec["options"].items() if v is not None},
                **spec["fields"],
            )
            plan.replace.append(entry)
            plan.changes.append((key, None, entry))
            continue
        desired = dataclasses.replace(current, options=dict(current.options), **spec["fields"])
        if spec["command"] is not None:
            desired.command = spec["command"]
        for option, value in spec["options"].items():
            if value is None:
                desired.options.pop(option, None)
            else:
                desired.options[option] = value
        if spec["exclusive_options"]:
            wanted = {option for option, value in spec["options"].items() if value is not None}
            desired.options = {k: v for k, v in desired.options.items() if k in wanted}
        if desired == current:
            continue
        plan.changes.append((key, current, desired))
        if desired.command != current.command:
            # A new command field replaces the overrides too: rewrite the whole entry.
            plan.replace.append(desired)
            continue
        for field, postconf_name in MASTER_FIELDS:
            if getattr(desired, field) != getattr(current, field):
                plan.fields["%s/%s" % (key, postconf_name)] = getattr(desired, field)
        for option in current.options:
            if option not in desired.options:
                plan.remove_options.append("%s/%s" % (key, option))
        for option, value in desired.options.items():
            if current.options.get(option) != value:
                plan.set_options["%s/%s" % (key, option)] = value
    return plan


def services_diff(plan):
    """Before/after text of exactly the master.cf entries that change."""
    before = "".join(entry.render() for _key, entry, _after in plan.changes if entry is not None)
    after = "".join(entry.render() for _key, _before, entry in plan.changes if entry is not None)
    return before, after


def configure(
    postfix,
    parameters=None,
    state="present",
    services=None,
    allow_unknown=False,
    check_mode=False,
    backup=None,
    recover_first=True,
):
    """Bring main.cf and master.cf to the requested state.

    Everything is validated before the first write. `backup` is called with a file path before
    that file is changed and returns the backup path. Under the lock on the configuration
    directory, after what a killed run left there is finished (recover_first=False when the
    caller did that). When a postconf edit fails after others succeeded, the PostfixError says
    which were applied (exc.applied) instead of pretending nothing changed. Returns the module
    result (without the Ansible plumbing).
    """
    desired = normalize_parameters(parameters or {})
    service_specs = [normalize_service(spec) for spec in services or []]
    if not os.path.isdir(postfix.config_directory()):
        raise ValidationError("config directory %s does not exist" % postfix.config_directory())
    with locked([postfix.config_directory()]):
        recovered = recover(postfix.config_directory(), (), check_mode) if recover_first else []
        result = _configure_locked(postfix, desired, state, service_specs, allow_unknown, check_mode, backup)
    result["_warnings"] = recovered
    result["changed"] = result["changed"] or bool(recovered)
    return result


def _configure_locked(postfix, desired, state, service_specs, allow_unknown, check_mode, backup):
    main_cf = postfix.main_cf_path()
    master_cf = postfix.master_cf_path()

    with contextlib.ExitStack() as stack:
        reader = postfix
        if not os.path.exists(main_cf):
            # postconf refuses to work without main.cf (Debian's "No configuration" leaves
            # none): start from an empty one, or in check mode read through a scratch copy.
            if check_mode:
                reader = stack.enter_context(postfix.scratch(read_text(master_cf)))
            else:
                os.close(os.open(main_cf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        current = reader.explicit_settings() if desired else {}
        to_set, to_remove = plan_parameters(current, desired, state)
        entries = reader.master_entries() if service_specs else None
        plan = plan_services(entries, service_specs) if service_specs else ServicePlan()

        if not allow_unknown and state == "present":
            settings_after = dict(current, **to_set)
            for name in to_remove:
                settings_after.pop(name, None)
            # -o names are main.cf names too: a typo there is ignored by Postfix just the same.
            option_names = [
                option
                for spec in service_specs
                if spec["state"] == "present"
                for option, value in spec["options"].items()
                if value is not None
            ]
            unknown = find_unknown_parameters(
                reader,
                [name for name, value in desired.items() if value is not None] + option_names,
                settings_after,
                [value for spec in service_specs for value in spec["options"].values() if value is not None],
                plan.replace,
                entries,
            )
            if unknown:
                raise ValidationError(
                    "unknown main.cf parameter name(s): %s (Postfix would ignore them; set allow_unknown: true "
                    "to write them anyway)" % ", ".join(unknown)
                )

    result = {
        "changed": bool(to_set or to_remove or plan.changes),
        "changed_parameters": list(to_set) + list(to_remove),
        "changed_services": plan.changed_services,
        "backup_files": {},
        "diff": [],
    }
    if to_set or to_remove:
        before, after = parameters_diff(current, to_set, to_remove)
        result["diff"].append({"before_header": main_cf, "after_header": main_cf, "before": before, "after": after})
    if plan.changes:
        before, after = services_diff(plan)
        result["diff"].append({"before_header": master_cf, "after_header": master_cf, "before": before, "after": after})
    if check_mode or not result["changed"]:
        return result

    if backup is not None:
        if (to_set or to_remove) and os.path.exists(main_cf):
            result["backup_files"]["main_cf"] = backup(main_cf)
        if plan.changes and os.path.exists(master_cf):
            result["backup_files"]["master_cf"] = backup(master_cf)
    applied = []
    for what, arguments in postfix.edits(to_set, to_remove, plan):
        try:
            postfix.postconf(*arguments)
        except PostfixError as exc:
            if applied:
                exc.message = "%s; then %s, so the change is partial" % ("; ".join(applied), exc.message)
                exc.applied = applied
            raise
        applied.append(what)
    return result
