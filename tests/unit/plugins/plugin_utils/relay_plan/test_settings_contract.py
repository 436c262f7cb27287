# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One source of truth per role variable: argument_specs names and documents it, defaults/main.yml
holds its default, vars/main.yml passes it to the plan, and the plan reads it, with no default of
its own. Each test fails when two of them name different sets."""

from __future__ import annotations

import copy
import glob
import json
import os
import re

import yaml

from ansible_collections.smarthost.postfix.plugins.module_utils.rules import INDEXED_TYPES
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import (
    RelayPlanError,
    model,
    read_inputs,
    relay_plan,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", ".."))
ROLE = os.path.join(ROOT, "roles", "relay")


def _yaml(*parts):
    with open(os.path.join(ROLE, *parts), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


SPECS = _yaml("meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
DEFAULTS = _yaml("defaults", "main.yml")
PASSED = re.findall(r"'(relay_[a-z0-9_]+)': relay_[a-z0-9_]+\b", _yaml("vars", "main.yml")["__relay_settings"])
PRESETS = _yaml("vars", "presets.yml")["__relay_presets"]
with open(os.path.join(HERE, "corpus", "cases.json"), encoding="utf-8") as _handle:
    CORPUS = json.load(_handle)["cases"]

# Variables the role's tasks use themselves; the plan never sees them.
ROLE_ONLY = {
    "relay_install_packages",
    "relay_remove_conflicting_mta",
    "relay_keep_backups",
    "relay_probe_before_switch",
    "relay_manage_selinux",
    "relay_manage_firewall",
    "relay_state",
    "relay_absent_postfix",
    "relay_absent_drain_timeout",
}


def test_argument_specs_and_defaults_name_the_same_variables():
    required = {name for name, spec in SPECS.items() if spec.get("required")}
    assert required == {"relay_provider"}
    assert set(SPECS) - required == set(DEFAULTS)


def test_the_role_passes_every_variable_but_its_own_to_the_plan():
    assert len(PASSED) == len(set(PASSED))
    assert set(PASSED) == set(SPECS) - ROLE_ONLY


def test_role_only_variables_are_used_by_the_tasks():
    tasks = ""
    for path in glob.glob(os.path.join(ROLE, "tasks", "*.yml")) + glob.glob(os.path.join(ROLE, "vars", "main.yml")):
        with open(path, encoding="utf-8") as handle:
            tasks += handle.read()
    for name in ROLE_ONLY:
        assert re.search(r"\b%s\b" % name, tasks), name


def _plan(case, settings=None):
    presets = PRESETS if case["presets"] == "presets.yml" else case["presets"]
    return relay_plan(copy.deepcopy(settings or case["settings"]), presets, case["facts"])


def _reads_per_case():
    """{case name: the variables the plan read for it}."""
    reads = {}
    original = model.Settings.__init__

    def recording(self, settings):
        original(self, settings)
        self.read = reads.setdefault(current[0], set())

    current = [None]
    model.Settings.__init__ = recording
    try:
        for case in CORPUS:
            current[0] = case["name"]
            try:
                _plan(case)
            except RelayPlanError:
                pass
    finally:
        model.Settings.__init__ = original
    return reads


READS = _reads_per_case()


def test_the_plan_reads_exactly_what_the_role_passes():
    """Across the corpus the plan reads every variable the role passes (and reading another one fails)."""
    assert set().union(*READS.values()) == set(PASSED)


def test_the_plan_has_no_default_of_its_own():
    """Without a variable it would read, the plan stops and names it instead of assuming a default."""
    cases = {case["name"]: case for case in CORPUS}
    for name in PASSED:
        reader = next(case for case_name, case in cases.items() if name in READS.get(case_name, ()))
        partial = dict(reader["settings"])
        del partial[name]
        try:
            _plan(reader, partial)
        except RelayPlanError as exc:
            assert exc.variable == name and "is not passed to the plan" in str(exc), str(exc)
        else:
            raise AssertionError("%s: the plan went on without it" % name)


def test_map_types_documented_are_the_indexed_types():
    # No choices in argument_specs: null (the host's default type) would not pass them.
    description = " ".join(SPECS["relay_database_type"]["description"])
    assert all("V(%s)" % kind in description for kind in INDEXED_TYPES)


def test_inputs_are_read_before_any_section():
    # The fixed order of the first checks: mode before the provider.
    settings = {name: DEFAULTS.get(name) for name in PASSED}
    settings.update(relay_mode="open_relay", relay_provider=None)
    try:
        read_inputs(settings, PRESETS, {})
    except RelayPlanError as exc:
        assert exc.variable == "relay_mode"
    else:
        raise AssertionError("an unknown mode was accepted")
