# -*- coding: utf-8 -*-
# Copyright (c) 2025, smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""relay_extra_parameters, the escape hatch: any main.cf parameter the role does not set itself.
It runs last, so that everything the role sets is known and refused here."""

from __future__ import annotations

from ansible_collections.smarthost.postfix.plugins.module_utils.rules import is_parameter_name
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import validate as v
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.model import Plan
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.validate import RelayPlanError


def extra_parameters_section(inputs, plan):
    extra = inputs.settings["relay_extra_parameters"]
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise RelayPlanError("relay_extra_parameters", "must be a dictionary of main.cf parameter names to values")
    main_cf = {}
    for name in sorted(extra, key=str):
        variable = "relay_extra_parameters.%s" % name
        if not is_parameter_name(name):
            raise RelayPlanError(variable, "is not a main.cf parameter name")
        if name in plan.main_cf:
            raise RelayPlanError(variable, "%s is set by the role itself; use the role variable for it "
                                 "(see the role's argument_specs)" % name)
        main_cf[name] = _value(variable, extra[name])
    return Plan(main_cf=main_cf)


def _value(variable, value):
    if isinstance(value, (list, tuple)):
        return [v.text(variable, str(item)) for item in value]
    if isinstance(value, bool) or v.is_int(value):
        return value
    if value is None:
        raise RelayPlanError(variable, "has no value")
    return v.text(variable, str(value), allow_empty=True)
