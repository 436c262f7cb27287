# -*- coding: utf-8 -*-
# Copyright (c) 2025, smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
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
UNENCRYPTED_LOGIN = ("%s lets Postfix log in without TLS, sending the password in clear; a relay with credentials "
                     "needs secure, or encrypt where its certificate cannot be verified (encrypt does not verify it, "
                     "see docs/security.md)")
TLS_MIN_VERSIONS = ("TLSv1.2", "TLSv1.3")


def tls_syntax(facts):
    """"modern" (Postfix >= 3.6 takes >=TLSv1.2) or "legacy"; unknown versions get legacy, which every version reads."""
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


def tls_section(inputs, plan):
    settings, facts = inputs.settings, inputs.facts
    fingerprints = v.as_list("relay_tls_fingerprints", settings["relay_tls_fingerprints"])
    if inputs.tls_level == "fingerprint" and not fingerprints:
        raise RelayPlanError("relay_tls_fingerprints", "required when relay_tls_security_level is fingerprint")
    if fingerprints and inputs.tls_level != "fingerprint":
        raise RelayPlanError("relay_tls_fingerprints",
                             "only used with relay_tls_security_level fingerprint (it is %s)" % inputs.tls_level)

    ca_file = settings["relay_tls_ca_file"] or facts.get("ca_file")
    if ca_file is None:
        raise RelayPlanError("relay_tls_ca_file", "no CA bundle is known for this OS family; set relay_tls_ca_file")
    ca_file = v.text("relay_tls_ca_file", ca_file)
    if not ca_file.startswith("/"):
        raise RelayPlanError("relay_tls_ca_file", "must be an absolute path")

    main_cf = {
        "smtp_tls_security_level": inputs.tls_level,
        "smtp_tls_CAfile": ca_file,
        "smtp_tls_wrappermode": "yes" if inputs.primary.wrappermode else "no",
        "smtp_tls_fingerprint_digest": "sha256" if fingerprints else None,
        "smtp_tls_fingerprint_cert_match": [
            v.fingerprint("relay_tls_fingerprints[%d]" % index, value) for index, value in enumerate(fingerprints)
        ] or None,
    }
    minimum = v.choice("relay_tls_min_version", settings["relay_tls_min_version"], TLS_MIN_VERSIONS)
    protocols = tls_protocols(minimum, tls_syntax(facts))
    main_cf["smtp_tls_mandatory_protocols"] = protocols
    main_cf["smtp_tls_protocols"] = protocols
    return Plan(main_cf=main_cf)
