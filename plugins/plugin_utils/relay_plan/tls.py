# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""TLS toward every relay: the level, the CA bundle, certificate pins, the minimum version in the
syntax the installed Postfix reads, and wrapper mode."""

from __future__ import annotations

from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import validate as v
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.model import Plan
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.validate import RelayPlanError

TLS_LEVELS = ("secure", "encrypt", "fingerprint")
# Levels where Postfix may talk to a relay without TLS at all. The primary relay never gets them;
# a domain route only without credentials. One sentence for both, so the rule reads the same.
UNENCRYPTED_LEVELS = ("may", "none")
UNENCRYPTED_LOGIN = (
    "%s lets Postfix log in without TLS, sending the password in clear; a relay with credentials "
    "needs secure, or encrypt where its certificate cannot be verified (encrypt does not verify it, "
    "see docs/security.md)"
)
TLS_MIN_VERSIONS = ("TLSv1.2", "TLSv1.3")


def tls_syntax(facts):
    """The TLS protocol syntax: "modern" (Postfix >= 3.6 takes >=TLSv1.2) or "legacy"; unknown versions
    get legacy, which every version reads."""
    syntax = facts.get("tls_min_version_syntax")
    if syntax in ("modern", "legacy"):
        return syntax
    version = v.postfix_version_tuple(facts.get("postfix_version"))
    return "modern" if version is not None and version >= (3, 6) else "legacy"


def tls_protocols(minimum, syntax):
    if syntax == "modern":
        return ">=" + minimum
    excluded = ["!SSLv2", "!SSLv3", "!TLSv1", "!TLSv1.1"]
    if minimum == "TLSv1.3":
        excluded.append("!TLSv1.2")
    return ", ".join(excluded)


def _debugging(inputs):
    """The switches the relay guides use when a delivery needs looking at, and the TLS session cache."""
    settings = inputs.settings
    level = settings["relay_tls_loglevel"]
    level = v.integer("relay_tls_loglevel", level, 0, 4) if level is not None else None
    cache = None
    if v.flag("relay_tls_session_cache", settings["relay_tls_session_cache"]):
        # A session cache needs a map type that takes updates in place: btree, or lmdb where there is no BDB.
        cache = "%s:${data_directory}/smtp_scache" % ("lmdb" if inputs.database_type == "lmdb" else "btree")
    return {
        "smtp_tls_loglevel": str(level) if level is not None else None,
        "smtp_tls_session_cache_database": cache,
        # Verbose logging of the sessions with the primary relay only.
        "debug_peer_list": inputs.primary.host if v.flag("relay_debug_relay", settings["relay_debug_relay"]) else None,
    }


def tls_section(inputs, plan):
    settings, facts = inputs.settings, inputs.facts
    fingerprints = v.as_list("relay_tls_fingerprints", settings["relay_tls_fingerprints"])
    if inputs.tls_level == "fingerprint" and not fingerprints:
        raise RelayPlanError("relay_tls_fingerprints", "required when relay_tls_security_level is fingerprint")
    if fingerprints and inputs.tls_level != "fingerprint":
        raise RelayPlanError(
            "relay_tls_fingerprints",
            "only used with relay_tls_security_level fingerprint (it is %s)" % inputs.tls_level,
        )

    ca_file = settings["relay_tls_ca_file"] or facts.get("ca_file")
    if ca_file is None:
        raise RelayPlanError("relay_tls_ca_file", "no CA bundle is known for this OS family; set relay_tls_ca_file")
    ca_file = v.text("relay_tls_ca_file", ca_file)
    if not ca_file.startswith("/"):
        raise RelayPlanError("relay_tls_ca_file", "must be an absolute path")

    if inputs.primary.auth == "oauth2" and inputs.tls_level != "secure":
        raise RelayPlanError(
            "relay_tls_security_level",
            "%s cannot be used with relay_auth oauth2: msmtp verifies the "
            "relay's certificate against the CA bundle (secure)" % inputs.tls_level,
        )
    client_cert = inputs.primary.client_cert or (None, None)
    main_cf = {
        "smtp_tls_security_level": inputs.tls_level,
        "smtp_tls_CAfile": ca_file,
        # The client certificate a relay_auth certificate relay checks (an Office 365 connector).
        "smtp_tls_cert_file": client_cert[0],
        "smtp_tls_key_file": client_cert[1],
        "smtp_tls_wrappermode": "yes" if inputs.primary.wrappermode else "no",
        "smtp_tls_fingerprint_digest": "sha256" if fingerprints else None,
        "smtp_tls_fingerprint_cert_match": [
            v.fingerprint("relay_tls_fingerprints[%d]" % index, value) for index, value in enumerate(fingerprints)
        ]
        or None,
    }
    minimum = v.choice("relay_tls_min_version", settings["relay_tls_min_version"], TLS_MIN_VERSIONS)
    protocols = tls_protocols(minimum, tls_syntax(facts))
    main_cf["smtp_tls_mandatory_protocols"] = protocols
    main_cf["smtp_tls_protocols"] = protocols
    main_cf.update(_debugging(inputs))
    return Plan(main_cf=main_cf, client_keys=(client_cert[1],) if client_cert[1] else ())
