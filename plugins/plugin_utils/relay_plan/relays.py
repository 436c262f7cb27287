# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Relays: a relay description (the primary's relay_* variables, or a route's keys) and the
provider preset together give a Relay; the primary relay's own section."""

from __future__ import annotations

import re

from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import oauth2
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import validate as v
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.model import Plan, Relay, add_login
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.validate import RelayPlanError

AUTH_MODES = ("password", "oauth2", "certificate", "none")
OAUTH2_KEYS = (
    "oauth2_tenant",
    "oauth2_client_id",
    "oauth2_client_secret",
    "oauth2_refresh_token",
    "oauth2_token_url",
    "oauth2_scope",
)
CERTIFICATE_KEYS = ("tls_client_cert", "tls_client_key")
RELAY_KEYS = (
    ("provider", "host", "port", "auth", "username", "password", "ses_region", "mailgun_region", "office365_domain")
    + OAUTH2_KEYS
    + CERTIFICATE_KEYS
)
# What each OAuth 2.0 flow needs besides the client id and secret, and the endpoint it asks.
OAUTH2_FLOWS = {
    "microsoft": {"requires": ("oauth2_tenant",), "ignores": ("oauth2_refresh_token",)},
    "google": {"requires": ("oauth2_refresh_token",), "ignores": ("oauth2_tenant",)},
}
# A tenant is its ID (a GUID) or one of its domains (contoso.onmicrosoft.com).
TENANT_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


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

    auth = _auth_mode(preset, provider, spec, names)
    if auth == "password":
        username, password = _credentials(preset, provider, spec, names)
        return Relay(provider, host, port, wrappermode, username, password)
    if auth == "oauth2":
        return Relay(
            provider,
            host,
            port,
            wrappermode,
            _oauth2_user(spec, names),
            None,
            auth,
            oauth2=_oauth2(preset, provider, spec, names),
        )
    if auth == "certificate":
        return Relay(provider, host, port, wrappermode, None, None, auth, client_cert=_client_cert(spec, names))
    return Relay(provider, host, port, wrappermode, None, None, auth)


def _auth_mode(preset, provider, spec, names):
    """The relay's auth mode: as given, else a SASL login where credentials are given or the
    provider needs them, else none. The mode decides which credentials are used; the others are
    ignored, so that a switch (password to oauth2) is one variable."""
    offered = preset.get("auth") or ["password"]
    mode = spec.get("auth")
    if mode is None and "certificate" in offered and spec.get("tls_client_cert") not in (None, ""):
        # A client certificate given to a provider that checks them: that is how this host authenticates.
        mode = "certificate"
    if mode is None:
        given = any(spec.get(key) not in (None, "") for key in ("username", "password"))
        mode = "password" if given or "none" not in offered else "none"
    v.choice(names["auth"], mode, AUTH_MODES)
    if mode not in offered:
        raise RelayPlanError(
            names["auth"], "%s is not offered by provider %s; choose %s" % (mode, provider, " or ".join(offered))
        )
    return mode


def _oauth2_user(spec, names):
    username = spec.get("username")
    if username in (None, ""):
        raise RelayPlanError(names["username"], "required with auth oauth2: the mailbox (or account) mail is sent as")
    username = v.username(names["username"], username)
    if "@" not in username:
        raise RelayPlanError(
            names["username"], "with auth oauth2 it is the mailbox's address, such as relay@contoso.com"
        )
    return username


def _oauth2(preset, provider, spec, names):
    """The token flow's settings; the client secret and refresh token are secrets."""
    flow = preset.get("oauth2")
    if flow not in OAUTH2_FLOWS:
        raise RelayPlanError(names["auth"], "provider %s has no OAuth 2.0 flow" % provider)
    settings = {"flow": flow}
    for key in ("oauth2_client_id", "oauth2_client_secret") + OAUTH2_FLOWS[flow]["requires"]:
        value = spec.get(key)
        if value in (None, ""):
            raise RelayPlanError(names[key], "required with auth oauth2 for provider %s" % provider)
        if key in ("oauth2_client_secret", "oauth2_refresh_token"):
            settings[key[len("oauth2_") :]] = v.password(names[key], value)
        else:
            settings[key[len("oauth2_") :]] = v.text(names[key], value).strip()
    if flow == "microsoft" and not TENANT_ID.match(settings["tenant"]):
        v.domain(names["oauth2_tenant"], settings["tenant"])
    scope = spec.get("oauth2_scope")
    if scope not in (None, ""):
        scope = v.text(names["oauth2_scope"], scope).strip()
        if any(char.isspace() for char in scope) or not scope.startswith("https://"):
            raise RelayPlanError(
                names["oauth2_scope"], "must be one https:// scope such as https://outlook.office365.us/.default"
            )
        settings["scope"] = scope
    url = spec.get("oauth2_token_url")
    if url not in (None, ""):
        url = v.text(names["oauth2_token_url"], url)
        if not url.startswith("https://") or any(char.isspace() for char in url):
            raise RelayPlanError(names["oauth2_token_url"], "must be an https:// URL (the client secret goes to it)")
        settings["token_url"] = url
    return settings


def _client_cert(spec, names):
    paths = []
    for key in CERTIFICATE_KEYS:
        value = spec.get(key)
        if value in (None, ""):
            raise RelayPlanError(names[key], "required with auth certificate")
        value = v.text(names[key], value)
        if not value.startswith("/"):
            raise RelayPlanError(names[key], "must be an absolute path on the host")
        paths.append(value)
    return tuple(paths)


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
            example = "contoso.com" if preset.get("region_transform") == "domain_dashes" else "us-east-1"
            raise RelayPlanError(names[key], "required for provider %s (for example %s)" % (provider, example))
        if preset.get("region_transform") == "domain_dashes":
            # The MX endpoint Microsoft gives a domain: contoso.com -> contoso-com.
            region = v.domain(names[key], region).lower().replace(".", "-")
        else:
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
        raise RelayPlanError(
            names["username"],
            "%s always uses the literal user name %r; leave it unset" % (provider, preset["username"]),
        )
    if preset.get("username"):
        username = preset["username"] if password is not None else username
    elif preset.get("username_is_password") and username is None:
        username = password

    if "none" not in (preset.get("auth") or ["password"]):
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
    """Where mail goes, and as whom: relayhost and the SASL map every login goes into.

    An OAuth 2.0 primary keeps relayhost (its next hop) and makes its pipe transport the default
    transport, which takes relayhost as the next hop.
    """
    primary = inputs.primary
    _path, sasl_map = inputs.indexed_map("sasl_passwd")
    logins = add_login((), primary.nexthop, primary, "relay_username") if primary.has_credentials else ()
    oauth2_relays = ()
    default_transport = None
    if primary.auth == "oauth2":
        oauth2_relays = ((oauth2.PRIMARY_ACCOUNT, primary),)
        default_transport = oauth2.transport_name(oauth2.PRIMARY_ACCOUNT)
    return Plan(
        main_cf={
            "relayhost": primary.nexthop,
            "smtp_sasl_password_maps": sasl_map,
            "smtp_sasl_security_options": "noanonymous",
            "smtp_sasl_tls_security_options": "noanonymous",
            "default_transport": default_transport,
        },
        logins=logins,
        oauth2_relays=oauth2_relays,
    )


def primary_transport(inputs):
    """The master.cf transport that carries mail to the primary relay."""
    if inputs.primary.auth == "oauth2":
        return oauth2.transport_name(oauth2.PRIMARY_ACCOUNT)
    return "smtp"


def sasl_auth_section(inputs, plan):
    """SASL on exactly when some relay (primary, route or fallback) has a login: after every route."""
    return Plan(main_cf={"smtp_sasl_auth_enable": "yes" if plan.logins else "no"})


def probe_section(inputs, plan):
    """How relay_probe checks the primary before a host switches to it (no secret here: the login is
    the SASL entry keyed by relayhost)."""
    main_cf = plan.main_cf
    return Plan(
        probe={
            "host": inputs.primary.host.strip("[]"),
            "port": inputs.primary.port,
            "tls": "implicit" if inputs.primary.wrappermode else "starttls",
            # encrypt does not verify the certificate and fingerprint pins it
            # instead of trusting a CA: the probe must not be stricter than Postfix.
            "verify": main_cf.get("smtp_tls_security_level") in ("secure", "verify"),
            "ca_file": main_cf.get("smtp_tls_CAfile"),
            "authenticate": inputs.primary.has_credentials,
            "auth": inputs.primary.auth,
            "oauth2_account": oauth2.PRIMARY_ACCOUNT if inputs.primary.auth == "oauth2" else None,
        }
    )
