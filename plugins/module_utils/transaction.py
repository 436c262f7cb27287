# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One checked change of a Postfix instance: main.cf, master.cf and lookup tables together.

Every part is planned first, so bad input fails before a file is touched. Then each file
that is about to change is copied aside, the tables and then main.cf and master.cf are
written, and `postfix check` must accept the result; on any failure every file is put back
as it was. Postfix is never reloaded here: the caller reloads once the change is in place.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

from ansible_collections.smarthost.postfix.plugins.module_utils.config_plan import configure
from ansible_collections.smarthost.postfix.plugins.module_utils.files import (
    ROLLBACK_PREFIX,
    backup_file,
    disarm,
    locked,
    private_copy,
    recover,
    restore_records,
    write_manifest,
)
from ansible_collections.smarthost.postfix.plugins.module_utils.maps import (
    manage_table,
    resolve_map_type,
    table_entries,
)
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import RESTART_PARAMETERS, PostfixError
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import (
    COMPILED_SUFFIXES,
    ValidationError,
    compiled_path,
    physical_lines,
)
from ansible_collections.smarthost.postfix.plugins.module_utils.sasl import sasl_entries, sasl_masks
from ansible_collections.smarthost.postfix.plugins.module_utils.smtp_probe import probe as smtp_probe

SECRET_MODE = 0o600
TABLE_MODE = 0o644
REJECTED = (
    "postfix check rejected the new configuration, so the previous main.cf, master.cf and maps "
    "are back in place and Postfix keeps running them. Postfix said"
)


class Snapshot:
    """Copies of files about to change, kept in private directories beside them until restore().

    A copy beside the file stays on its file system, so restore() is a rename: each file gets
    back its bytes, mode, owner and times at once. The directories are 0700 (mkdtemp) and every
    copy is 0600 whatever the file's own mode, so a copy of a secret map is never readable by
    others. arm() writes each directory's manifest before the first write: a run killed between
    arm() and discard() is undone by the next run (files.recover).
    """

    def __init__(self):
        self._saved = {}  # path -> copy, or None when the file did not exist
        self._workdirs = {}  # directory -> (private directory for its copies, manifest records)

    def _workdir(self, path):
        directory = os.path.dirname(path) or "."
        if directory not in self._workdirs:
            self._workdirs[directory] = (tempfile.mkdtemp(prefix=ROLLBACK_PREFIX, dir=directory), [])
        return self._workdirs[directory]

    def keep(self, path):
        if path in self._saved:
            return
        workdir, records = self._workdir(path)
        record = {"name": os.path.basename(path), "copy": None, "mode": None, "uid": None, "gid": None}
        if os.path.lexists(path):
            record["copy"] = str(len(self._saved))
            st = private_copy(path, os.path.join(workdir, record["copy"]))
            record.update(mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid)
            self._saved[path] = os.path.join(workdir, record["copy"])
        else:
            self._saved[path] = None
        records.append(record)

    def arm(self):
        for workdir, records in self._workdirs.values():
            write_manifest(workdir, records)

    def restore(self):
        for workdir, records in self._workdirs.values():
            restore_records(workdir, records)

    def discard(self):
        for workdir, _records in self._workdirs.values():
            disarm(workdir)
            shutil.rmtree(workdir, ignore_errors=True)


def _table_specs(postfix, sasl_maps, tables):
    """Validated (path, type, pairs, mode, diff masks) of every table, in the order they are written."""
    specs, seen = [], set()
    for kind, items in (("sasl", sasl_maps or []), ("table", tables or [])):
        for item in items:
            path = item.get("path")
            if not path:
                raise ValidationError("every table needs a path")
            if path in seen:
                raise ValidationError("table %s is listed more than once" % path)
            seen.add(path)
            map_type = resolve_map_type(postfix, item.get("type"))
            try:
                if kind == "sasl":
                    pairs = sasl_entries(item.get("entries") or [])
                else:
                    pairs = table_entries(item.get("entries") or [], map_type)
            except ValidationError as exc:
                raise ValidationError("%s: %s" % (path, exc)) from None
            specs.append(
                {
                    "path": path,
                    "type": map_type,
                    "pairs": pairs,
                    "mode": SECRET_MODE if kind == "sasl" else TABLE_MODE,
                    "masks": sasl_masks if kind == "sasl" else None,
                }
            )
    return specs


def stale_compiled_files(path, map_type):
    """Compiled files of other table types beside a table (an old sasl_passwd.db keeps old passwords)."""
    candidates = set(path + suffix for suffix in COMPILED_SUFFIXES.values()) - set([compiled_path(path, map_type)])
    return sorted(name for name in candidates if os.path.lexists(name))


def _manage(postfix, spec, check_mode=False, backup=False, want_diff=False):
    """One table as a listed table is managed: exactly its entries, its mode, its diff masks."""
    return manage_table(
        postfix,
        spec["path"],
        spec["type"],
        spec["pairs"],
        exclusive=True,
        mode=spec["mode"],
        check_mode=check_mode,
        backup=backup,
        diff_masks=spec["masks"],
        recover_first=False,
        want_diff=want_diff,
    )


def _check(postfix):
    try:
        postfix.check()
    except PostfixError as exc:
        # What Postfix said stays apart from our words: only it is scrubbed of secrets.
        said = "; ".join(line.strip() for line in physical_lines(exc.stderr) if line.strip()) or "rc %s" % exc.rc
        raise PostfixError(REJECTED, exc.cmd, exc.rc, said) from None


def _directories(postfix, paths):
    return sorted(set([postfix.config_directory()] + [os.path.dirname(path) or "." for path in paths]))


def apply_configuration(
    postfix,
    parameters=None,
    services=None,
    sasl_maps=None,
    tables=None,
    allow_unknown=False,
    check=True,
    check_mode=False,
    backup=False,
    want_diff=True,
    before_write=None,
):
    """Bring main.cf, master.cf and the listed tables to the requested state as one change.

    Tables hold exactly the listed entries (comments are kept). Returns the module result,
    with a `diff` list of every file's before and after. The whole change holds the lock on
    every directory it writes in, and first finishes what a killed run left there.
    before_write(result), when given, sees the planned change (in check mode too) before any file
    is written, and may stop it by raising.
    """
    specs = _table_specs(postfix, sasl_maps, tables)
    directories = _directories(postfix, [spec["path"] for spec in specs])
    for directory in directories:
        if not os.path.isdir(directory):
            raise ValidationError("directory %s does not exist" % directory)
    with locked(directories):
        recovered = []
        for directory in directories:
            names = [
                os.path.basename(spec["path"]) for spec in specs if (os.path.dirname(spec["path"]) or ".") == directory
            ]
            recovered += recover(directory, names, check_mode)
        result = _apply_locked(
            postfix, specs, parameters, services, allow_unknown, check, check_mode, backup, want_diff, before_write
        )
    result["_warnings"] = recovered + result["_warnings"]
    result["changed"] = result["changed"] or bool(recovered)
    return result


def _apply_locked(
    postfix, specs, parameters, services, allow_unknown, check, check_mode, backup, want_diff, before_write
):
    planned = {spec["path"]: _manage(postfix, spec, check_mode=True, want_diff=want_diff) for spec in specs}
    config = configure(postfix, parameters=parameters, services=services, allow_unknown=allow_unknown, check_mode=True)
    stale = [name for spec in specs for name in stale_compiled_files(spec["path"], spec["type"])]

    changed_tables = [spec for spec in specs if planned[spec["path"]]["changed"]]
    result = {
        "changed": bool(changed_tables or config["changed"] or stale),
        "changed_parameters": config["changed_parameters"],
        "changed_services": config["changed_services"],
        "restart_needed": any(name in RESTART_PARAMETERS for name in config["changed_parameters"]),
        "tables": {path: _table_summary(outcome) for path, outcome in planned.items()},
        "removed_files": stale,
        "backup_files": [],
        "checked": False,
        "diff": [outcome["diff"] for outcome in planned.values() if outcome["changed"] and outcome["diff"]]
        + config["diff"],
        "_warnings": [warning for outcome in planned.values() for warning in outcome["_warnings"]],
    }
    if result["changed"] and before_write is not None:
        before_write(result)
    if check_mode or not result["changed"]:
        return result

    snapshot = Snapshot()
    try:
        for spec in changed_tables:
            for name in (spec["path"], compiled_path(spec["path"], spec["type"])):
                if name:
                    snapshot.keep(name)
        if config["changed"]:
            snapshot.keep(postfix.main_cf_path())
            snapshot.keep(postfix.master_cf_path())
        snapshot.arm()
        try:
            written = [_manage(postfix, spec, backup=backup) for spec in changed_tables]
            applied = (
                configure(
                    postfix,
                    parameters=parameters,
                    services=services,
                    allow_unknown=allow_unknown,
                    backup=backup_file if backup else None,
                    recover_first=False,
                )
                if config["changed"]
                else {"backup_files": {}}
            )
            if check and (changed_tables or config["changed"]):
                _check(postfix)
                result["checked"] = True
        except BaseException as exc:
            snapshot.restore()
            if isinstance(exc, PostfixError):
                exc.applied = []  # every file is back as it was
            raise
    finally:
        snapshot.discard()

    for outcome in written:
        if outcome["backup_file"]:
            result["backup_files"].append(outcome["backup_file"])
    result["backup_files"].extend(applied["backup_files"].values())
    for name in stale:
        os.unlink(name)
    return result


def _table_summary(outcome):
    return {
        key: outcome[key]
        for key in ("map", "type", "changed", "keys_added", "keys_removed", "keys_updated", "compiled")
    }


def login_to_probe(probe, result, sasl_maps):
    """(username, password) to probe the relay with when the change switches relayhost or changes the
    login under probe["key"] in the first SASL map; None when neither changes."""
    login = None
    for entry in (sasl_maps[0].get("entries") or []) if sasl_maps else []:
        if entry["key"].lower() == probe["key"].lower():
            login = (entry["username"], entry["password"])
    summary = result["tables"].get(sasl_maps[0]["path"], {}) if sasl_maps else {}
    changed_keys = [key.lower() for key in summary.get("keys_added", []) + summary.get("keys_updated", [])]
    if "relayhost" in result["changed_parameters"] or probe["key"].lower() in changed_keys:
        return login or (None, None)
    return None


def probe_before_write(probe, sasl_maps, run_probe=None):
    """before_write for apply_configuration: probe the relay with the new login (a switch, or a rotated
    key) and refuse the change when the relay does not take it, naming the cause and its remedy."""
    if not probe:
        return None

    def check(result):
        login = login_to_probe(probe, result, sasl_maps)
        if login is None:
            return
        username, password = login
        outcome = (run_probe or smtp_probe)(
            probe["host"],
            port=probe["port"],
            tls=probe.get("tls") or "starttls",
            username=username,
            password=password,
            ca_file=probe.get("ca_file"),
            verify=probe.get("verify", True),
        )
        result["probed"] = {key: outcome.get(key) for key in ("ok", "cause", "auth_mechanism", "authenticated")}
        if not outcome["ok"]:
            raise ValidationError(
                "relay %s port %s refused the new configuration before anything was written (%s): %s - %s"
                % (probe["host"], probe["port"], outcome["cause"], outcome["message"], outcome["remedy"])
            )

    return check
