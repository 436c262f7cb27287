# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""relay_extra_parameters, the escape hatch: any main.cf parameter the role does not set itself and
does not own. It runs last, so that everything the role sets is known and refused here.

ROLE_OWNED is the one list of what the escape hatch may never touch (docs/security.md lists it
too): the role promises verified TLS to the relay, the password never in clear, mail only to the
relays it names and relaying only for relay_mynetworks, and each of these parameters can break
that promise while main.cf still looks right (a TLS policy map entry `=none` overrides
smtp_tls_security_level = secure, and the SASL password goes in clear). There is no opt-in: a
configuration that needs one of them is not one this role can vouch for; the postconf module
sets them outside the role, visibly.
"""

from __future__ import annotations

from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import referenced_names
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import is_parameter_name
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import validate as v
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.model import Plan
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.validate import RelayPlanError

_CLIENT_TLS = (
    "security_level",
    "policy_maps",
    "per_site",
    "secure_cert_match",
    "verify_cert_match",
    "fingerprint_cert_match",
    "fingerprint_digest",
    "CAfile",
    "CApath",
    "trust_anchor_file",
    "mandatory_ciphers",
    "ciphers",
    "mandatory_exclude_ciphers",
    "exclude_ciphers",
    "mandatory_protocols",
    "protocols",
    "enforce_peername",
    "wrappermode",
    "dane_insecure_mx_policy",
    "force_insecure_host_tlsa_lookup",
    "connection_reuse",
    # The client certificate is how a relay_auth certificate host authenticates.
    "cert_file",
    "key_file",
    "chain_files",
    "eccert_file",
    "eckey_file",
    "dcert_file",
    "dkey_file",
)

# name -> what it decides; every name here is refused in relay_extra_parameters.
ROLE_OWNED = dict(
    [("%s_tls_%s" % (client, name), "TLS toward the relay") for client in ("smtp", "lmtp") for name in _CLIENT_TLS]
    + [
        ("%s_%s" % (client, name), "TLS toward the relay")
        for client in ("smtp", "lmtp")
        for name in ("use_tls", "enforce_tls")
    ]
    + [
        (name, "the meaning of the TLS cipher grades and which certificates are trusted")
        for name in (
            "tls_high_cipherlist",
            "tls_medium_cipherlist",
            "tls_low_cipherlist",
            "tls_export_cipherlist",
            "tls_null_cipherlist",
            "tls_ssl_options",
            "tls_append_default_CA",
            "tls_config_file",
            "tls_config_name",
            "tls_legacy_public_key_fingerprints",
            "tls_dane_digests",
        )
    ]
    + [
        (name, "where mail goes next")
        for name in (
            "relayhost",
            "default_transport",
            "relay_transport",
            "sender_dependent_default_transport_maps",
            "sender_dependent_relayhost_maps",
            "transport_maps",
            "smtp_fallback_relay",
            "fallback_relay",
            "fallback_transport",
            "fallback_transport_maps",
            "local_transport",
            "virtual_transport",
            "mailbox_transport",
            "mailbox_transport_maps",
            "smtp_sender_dependent_authentication",
        )
    ]
    + [
        (name, "who may relay through this host")
        for name in (
            "mynetworks",
            "mynetworks_style",
            "inet_interfaces",
            "smtpd_client_restrictions",
            "smtpd_relay_restrictions",
            # XCLIENT and the HAProxy protocol let a client claim another address, mynetworks included.
            "smtpd_authorized_xclient_hosts",
            "smtpd_upstream_proxy_protocol",
            "postscreen_upstream_proxy_protocol",
        )
    ]
)
# Whole families: the SASL client (mechanisms, security options, the password maps) and the
# settings tlsproxy uses for reused TLS connections (they default to the smtp_tls_* above).
ROLE_OWNED_PREFIXES = {
    "smtp_sasl_": "the SASL login and its mechanisms",
    "lmtp_sasl_": "the SASL login and its mechanisms",
    "tlsproxy_client_": "TLS toward the relay (reused connections)",
}


def role_owned(name):
    """What the parameter decides when the role owns it, else None."""
    if name in ROLE_OWNED:
        return ROLE_OWNED[name]
    return next((what for prefix, what in ROLE_OWNED_PREFIXES.items() if name.startswith(prefix)), None)


def extra_parameters_section(inputs, plan):
    extra = inputs.settings["relay_extra_parameters"]
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise RelayPlanError("relay_extra_parameters", "must be a dictionary of main.cf parameter names to values")
    # Names the role's own values refer to as $name: defining one here would change them.
    referenced = {}
    for parameter, value in plan.main_cf.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            for name in referenced_names(item if isinstance(item, str) else ""):
                referenced.setdefault(name, parameter)
    main_cf = {}
    for name in sorted(extra, key=str):
        variable = "relay_extra_parameters.%s" % name
        if not is_parameter_name(name):
            raise RelayPlanError(variable, "is not a main.cf parameter name")
        if name in plan.main_cf:
            raise RelayPlanError(
                variable,
                "%s is set by the role itself; use the role variable for it (see the role's argument_specs)" % name,
            )
        owned = role_owned(name)
        if owned:
            raise RelayPlanError(
                variable,
                "%s decides %s, which the role owns (docs/security.md lists what it owns); "
                "use the role's variables for it" % (name, owned),
            )
        if name in referenced:
            raise RelayPlanError(
                variable,
                "the role's own %s refers to $%s; setting it here would change that "
                "value behind the role's back" % (referenced[name], name),
            )
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
