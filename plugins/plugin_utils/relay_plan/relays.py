# -*- coding: utf-8 -*-
# Copyright (c) 2025, smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Relays: a relay description (the primary's relay_* variables, or a route's keys) and the
provider preset together give a Relay; the primary relay's own section."""

from __future__ import annotations

import re

from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import validate as v
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.model import Plan, Relay, add_login
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.validate import RelayPlanError

RELAY_KEYS = ("provider", "host", "port", "username", "password", "ses_region", "mailgun_region")


def preset_of(presets, variable, provider):
    if not isinstance(provider, str) or provider not in presets:
        raise RelayPlanError(variable, "unknown provider %r; choose one of %s" % (provider, ", ".join(sorted(presets))))
    return presets[provider]


def resolve_relay(presets, spec, names, wrappermode=None):
    """Turn a relay description into a Relay, filling endpoint and user name from the preset.

    ``spec`` has the keys of RELAY_KEYS (missing means unset); ``names`` maps each key to
    the variable name used in error messages.
    """
    provider = spec.get("provider") or "custom"
    preset = preset_of(presets, names["provider"], provider)

    host = spec.get("host")
    if host is not None:
        host = v.hostname(names["host"], host)
    else:
        host = _preset_host(preset, provider, spec, names)

    port = spec.get("port")
    port = v.integer(names["port"], port, 1, 65535) if port is not None else int(preset["port"])

    if wrappermode is None:
        wrappermode = port in preset.get("tls_wrapper_ports", [465])

    username, password = _credentials(preset, provider, spec, names)
    return Relay(provider, host, port, wrappermode, username, password)


def _preset_host(preset, provider, spec, names):
    if preset.get("region_hosts"):
        key = preset["region_setting"].replace("relay_", "", 1)
        region = spec.get(key)
        if region is None:
            region = preset["region_default"]
        return preset["region_hosts"][v.choice(names[key], region, sorted(preset["region_hosts"]))]
    if preset.get("host_template"):
        key = preset["region_setting"].replace("relay_", "", 1)
        region = spec.get(key)
        if region is None:
            raise RelayPlanError(names[key], "required for provider %s (for example us-east-1)" % provider)
        region = v.text(names[key], region)
        if not re.match(preset["region_pattern"], region):
            raise RelayPlanError(names[key], "%r is not a region name such as us-east-1 or eu-west-2" % region)
        return preset["host_template"].format(region=region)
    if preset.get("host"):
        return preset["host"]
    raise RelayPlanError(names["host"], "required for provider %s" % provider)


def _credentials(preset, provider, spec, names):
    username = spec.get("username")
    password = spec.get("password")
    if username == "":
        username = None
    if password == "":
        password = None

    if password is not None:
        v.password(names["password"], password)
    if preset.get("username") and username is not None and username != preset["username"]:
        raise RelayPlanError(names["username"], "%s always uses the literal user name %r; leave it unset" % (provider, preset["username"]))
    if preset.get("username"):
        username = preset["username"] if password is not None else username
    elif preset.get("username_is_password") and username is None:
        username = password

    if preset.get("credentials") == "required":
        if password is None:
            raise RelayPlanError(names["password"], "required for provider %s" % provider)
        if username is None:
            raise RelayPlanError(names["username"], "required for provider %s" % provider)
    if username is not None and password is None:
        raise RelayPlanError(names["password"], "required when %s is set" % names["username"])
    if password is not None and username is None:
        raise RelayPlanError(names["username"], "required when %s is set" % names["password"])
    if username is not None:
        v.username(names["username"], username)
    return username, password


def route_spec(item, prefix, keys=RELAY_KEYS):
    """A route's relay description and the variable names its keys stand for."""
    spec = {key: item.get(key) for key in keys if key in item}
    names = {key: "%s.%s" % (prefix, key) for key in keys}
    return spec, names


def route_relay(presets, item, prefix, what):
    """The Relay of a route item (sender, domain or fallback): a host or a provider is required."""
    spec, names = route_spec(item, prefix)
    if spec.get("provider") in (None, "custom") and item.get("host") is None:
        raise RelayPlanError(prefix + ".host", "required for %s without a provider" % what)
    return resolve_relay(presets, spec, names)


def primary_relay(settings, presets, wrappermode):
    """The relay_* variables as the primary Relay."""
    spec = {key: settings["relay_" + key] for key in RELAY_KEYS}
    if spec["provider"] is None:
        raise RelayPlanError("relay_provider", "required; choose one of %s" % ", ".join(sorted(presets)))
    if spec["provider"] == "custom" and spec["host"] in (None, ""):
        raise RelayPlanError("relay_host", "required when relay_provider is custom")
    names = {key: "relay_" + key for key in RELAY_KEYS}
    return resolve_relay(presets, spec, names, wrappermode)


def relayhost_section(inputs, plan):
    """Where mail goes, and as whom: relayhost and the SASL map every login goes into."""
    primary = inputs.primary
    _path, sasl_map = inputs.indexed_map("sasl_passwd")
    logins = add_login((), primary.nexthop, primary, "relay_username") if primary.has_credentials else ()
    return Plan(
        main_cf={
            "relayhost": primary.nexthop,
            "smtp_sasl_password_maps": sasl_map,
            "smtp_sasl_security_options": "noanonymous",
            "smtp_sasl_tls_security_options": "noanonymous",
        },
        logins=logins,
    )


def sasl_auth_section(inputs, plan):
    """SASL on exactly when some relay (primary, route or fallback) has a login: after every route."""
    return Plan(main_cf={"smtp_sasl_auth_enable": "yes" if plan.logins else "no"})


def probe_section(inputs, plan):
    """How relay_probe checks the primary before a host switches to it (no secret here: the login is
    the SASL entry keyed by relayhost)."""
    main_cf = plan.main_cf
    return Plan(probe={
        "host": inputs.primary.host.strip("[]"),
        "port": inputs.primary.port,
        "tls": "implicit" if inputs.primary.wrappermode else "starttls",
        # encrypt does not verify the certificate and fingerprint pins it
        # instead of trusting a CA: the probe must not be stricter than Postfix.
        "verify": main_cf.get("smtp_tls_security_level") in ("secure", "verify"),
        "ca_file": main_cf.get("smtp_tls_CAfile"),
        "authenticate": inputs.primary.has_credentials,
    })
