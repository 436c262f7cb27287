# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The plan's recorded behaviour: every case in corpus/cases.json gives exactly corpus/expected.json.

The corpus holds every preset, mode, route kind and validation error the tests know (inputs in
cases.json). expected.json is what the plan returned for each, passwords masked by a digest, so a
change that moves a secret to another entry still shows. Any change of the plan's behaviour shows
as a diff of expected.json: re-record it deliberately with

    RECORD_CORPUS=1 pytest tests/unit/plugins/plugin_utils/relay_plan/test_corpus.py

and review that diff like code. Recording also gives every case the variables the role passes
that it lacks (a new role variable), at their defaults.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re

import pytest
import yaml

from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import RelayPlanError, relay_plan

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", ".."))
CASES_PATH = os.path.join(HERE, "corpus", "cases.json")
EXPECTED_PATH = os.path.join(HERE, "corpus", "expected.json")

with open(os.path.join(ROOT, "roles", "relay", "vars", "presets.yml"), encoding="utf-8") as _handle:
    PRESETS = yaml.safe_load(_handle)["__relay_presets"]
with open(CASES_PATH, encoding="utf-8") as _handle:
    CORPUS = json.load(_handle)
CASES = CORPUS["cases"]


def masked(secret):
    return "<secret sha256:%s>" % hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


def outcome(case):
    """What the plan gives for one case, as plain JSON data with the passwords masked."""
    presets = PRESETS if case["presets"] == "presets.yml" else case["presets"]
    try:
        result = relay_plan(copy.deepcopy(case["settings"]), copy.deepcopy(presets), copy.deepcopy(case["facts"]))
    except RelayPlanError as exc:
        return {"error": str(exc), "variable": exc.variable}
    result = copy.deepcopy(result)
    for entry in result["sasl_map"]["entries"]:
        entry["password"] = masked(entry["password"])
    for user in (result.get("submission") or {}).get("users", []):
        user["password"] = masked(user["password"])
    return {"result": result}


def render(outcomes):
    return json.dumps(outcomes, indent=1, ensure_ascii=False) + "\n"


def recorded():
    with open(EXPECTED_PATH, encoding="utf-8") as handle:
        return handle.read()


def test_corpus_names_are_unique():
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names))


def add_new_variables():
    """Every case that holds the role's variables gets those it lacks, at their defaults."""
    with open(os.path.join(ROOT, "roles", "relay", "vars", "main.yml"), encoding="utf-8") as handle:
        passed = re.findall(r"'(relay_[a-z0-9_]+)': relay_", yaml.safe_load(handle)["__relay_settings"])
    with open(os.path.join(ROOT, "roles", "relay", "defaults", "main.yml"), encoding="utf-8") as handle:
        defaults = yaml.safe_load(handle)
    for case in CASES:
        settings = case["settings"]
        if isinstance(settings, dict) and all(str(key).startswith("relay_") for key in settings):
            case["settings"] = {name: settings.get(name, defaults.get(name)) for name in passed}
    with open(CASES_PATH, "w", encoding="utf-8") as handle:
        json.dump(CORPUS, handle, indent=1, ensure_ascii=False)


def test_the_plan_gives_the_recorded_output_for_every_case():
    if os.environ.get("RECORD_CORPUS"):
        add_new_variables()
    outcomes = {case["name"]: outcome(case) for case in CASES}
    text = render(outcomes)
    if os.environ.get("RECORD_CORPUS"):
        with open(EXPECTED_PATH, "w", encoding="utf-8") as handle:
            handle.write(text)
        pytest.skip("recorded %d cases into %s" % (len(outcomes), EXPECTED_PATH))
    expected = json.loads(recorded())
    assert sorted(expected) == sorted(outcomes), "cases.json and expected.json name different cases: re-record"
    for name in expected:
        assert outcomes[name] == expected[name], "case %s: the plan's output changed" % name
    # Byte-identical, key order included (main.cf is written in this order).
    assert text == recorded()
