# -*- coding: utf-8 -*-
# Copyright: smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The relay plan: role variables + provider preset + host facts -> desired Postfix state.

``relay_plan(settings, presets, facts)`` is a pure function. It reads nothing
from disk and runs nothing; it validates every input (each error names the
variable at fault) and returns the dict the relay role applies:

``packages``            OS packages to install
``main_cf``             every main.cf parameter the role owns; ``None`` removes one
``master_services``     entries for the postfix_config module's ``services`` option
``sasl_map``            ``{path, type, entries: [{key, username, password}]}`` (secret) for ``sasl_maps``
``tables``              ``[{path, type, entries}]`` for postfix_config's ``tables``
``relayhost``           the primary next hop, for messages and reports
``database_type``       the indexed map type every table uses
``aliases``             ``{path, map, compiled}`` of the alias database local delivery needs, or None
``probe``               ``{host, port, tls, verify, ca_file, authenticate}`` for relay_probe before a switch

``settings`` is keyed by the role's variable names (relay_provider, ...),
``presets`` by provider name (roles/relay/vars/presets.yml), and ``facts``
holds what the host tells: os_family, postfix_version, default_database_type,
tls_min_version_syntax, ca_file, packages, map_type_packages, domain, fqdn.
"""

from __future__ import annotations

import ipaddress
import math
import re

from ansible_collections.smarthost.postfix.plugins.module_utils.rules import compiled_path

MODES = ("null_client", "relay_server")
TLS_LEVELS = ("secure", "encrypt", "fingerprint")
ROUTE_TLS_LEVELS = ("secure", "encrypt", "may", "none")
TLS_MIN_VERSIONS = ("TLSv1.2", "TLSv1.3")
REWRITE_MAPS = ("generic", "sender_canonical")
DATABASE_TYPES = ("hash", "btree", "lmdb", "cdb")
DOMAIN_ROUTE_ACTIONS = ("relay", "local")

LOOPBACK_NETWORKS = ["127.0.0.0/8", "[::1]/128"]
ALIASES_PATH = "/etc/aliases"
LOCAL_TRANSPORT_DISABLED = "error:local delivery is disabled on this relay"
SANDBOX_REJECT = "error:5.7.1 recipient is not on relay_ses_sandbox_recipients (Amazon SES sandbox)"
DEFAULT_HEADER_CLEANUP = ["Received", "X-Originating-IP", "X-PHP-Originating-Script"]

# Services every master.cf already has: a route transport must not take their name.
RESERVED_SERVICES = frozenset((
    "smtp", "smtps", "submission", "submissions", "relay", "local", "virtual", "lmtp", "error", "retry",
    "discard", "pipe", "pickup", "cleanup", "qmgr", "oqmgr", "tlsmgr", "rewrite", "bounce", "defer",
    "trace", "verify", "flush", "proxymap", "proxywrite", "showq", "anvil", "scache", "postlog",
    "tlsproxy", "dnsblog", "postscreen", "maildrop", "uucp", "ifmail", "bsmtp", "scalemail-backend",
    "mailman", "spawn",
))

TIME_VALUE = re.compile(r"^[0-9]+[smhdw]?$")
TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
HOST_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")
PARAMETER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
LOCAL_PART = re.compile(r"^[^\s@<>()\[\],;:\"\\]+$")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

RELAY_KEYS = ("provider", "host", "port", "username", "password", "ses_region", "mailgun_region")
SENDER_ROUTE_KEYS = ("sender",) + RELAY_KEYS
DOMAIN_ROUTE_KEYS = ("domain", "action", "transport", "tls_security_level") + RELAY_KEYS
FALLBACK_KEYS = RELAY_KEYS


class RelayPlanError(ValueError):
    """A role variable (or a combination of them) that cannot work; the message names it."""

    def __init__(self, variable, problem):
        self.variable = variable
        super().__init__("%s: %s" % (variable, problem))


# ---------------------------------------------------------------- small validators

def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value):
    """An int or float (not a bool) or a numeric string, as a float; None when it is none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _integer(variable, value, minimum, maximum=None):
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not _is_int(value):
        raise RelayPlanError(variable, "must be a whole number, got %r" % (value,))
    if value < minimum or (maximum is not None and value > maximum):
        bounds = "%d-%d" % (minimum, maximum) if maximum is not None else "%d or more" % minimum
        raise RelayPlanError(variable, "%d is out of range; use %s" % (value, bounds))
    return value


def _text(variable, value, allow_empty=False):
    if not isinstance(value, str):
        raise RelayPlanError(variable, "must be a string, got %s" % type(value).__name__)
    if not allow_empty and not value.strip():
        raise RelayPlanError(variable, "must not be empty")
    if CONTROL_CHARACTERS.search(value):
        raise RelayPlanError(variable, "must not contain line breaks or control characters")
    return value


def _flag(variable, value):
    if not isinstance(value, bool):
        raise RelayPlanError(variable, "must be true or false, got %r" % (value,))
    return value


def _choice(variable, value, choices):
    if value not in choices:
        raise RelayPlanError(variable, "%r is not one of %s" % (value, ", ".join(choices)))
    return value


def _list(variable, value):
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise RelayPlanError(variable, "must be a list, got %s" % type(value).__name__)
    return list(value)


def _split(value):
    """A Postfix-style "a, b c" string as a list; anything else unchanged."""
    if isinstance(value, str):
        return [item for item in re.split(r"[\s,]+", value) if item]
    return value


def _mapping(variable, value, allowed_keys):
    if not isinstance(value, dict):
        raise RelayPlanError(variable, "must be a dictionary, got %s" % type(value).__name__)
    unknown = sorted(set(value) - set(allowed_keys))
    if unknown:
        raise RelayPlanError(variable, "unknown key(s) %s; allowed: %s" % (", ".join(unknown), ", ".join(allowed_keys)))
    return value


def _time_value(variable, value):
    if _is_int(value):
        value = "%ds" % value
    value = _text(variable, value)
    if not TIME_VALUE.match(value):
        raise RelayPlanError(variable, "%r is not a Postfix time value such as 30s, 10m, 5d" % value)
    return value


def _seconds(time_value):
    unit = time_value[-1]
    if unit.isdigit():
        return int(time_value)
    return int(time_value[:-1]) * TIME_UNITS[unit]


def _hostname(variable, value):
    """A DNS name or IP address as the user wrote it, without brackets or port."""
    value = _text(variable, value)
    if any(char.isspace() for char in value):
        raise RelayPlanError(variable, "must not contain whitespace")
    if value.startswith("[") or (":" in value and not _is_ip(value)):
        raise RelayPlanError(variable, "give the bare host name (%r); the role adds the brackets and the port itself" % value)
    if _is_ip(value):
        return value
    name = value[:-1] if value.endswith(".") else value
    if len(name) > 253 or not all(HOST_LABEL.match(label) for label in name.split(".")):
        raise RelayPlanError(variable, "%r is not a valid host name" % value)
    return value


def _is_ip(value):
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _domain(variable, value):
    value = _hostname(variable, value)
    if _is_ip(value):
        raise RelayPlanError(variable, "%r is an address, not a domain" % value)
    return value.rstrip(".")


def _address_pattern(variable, value):
    """user@domain or @domain, the forms Postfix looks up in address tables."""
    value = _text(variable, value)
    local, sep, domain = value.rpartition("@")
    if not sep or (local and not LOCAL_PART.match(local)):
        raise RelayPlanError(variable, "%r is not an address (user@example.com) or a domain pattern (@example.com)" % value)
    _domain(variable, domain)
    return value


def nexthop(host, port):
    """The bracketed next hop Postfix uses both as relayhost and as the SASL key."""
    return "[%s]:%d" % (host, port)


def postfix_version_tuple(version):
    if not version:
        return None
    parts = re.findall(r"\d+", str(version))
    return tuple(int(part) for part in parts[:3]) if parts else None


# ---------------------------------------------------------------- relays

class Relay:
    """One smarthost: where to connect and who to log in as."""

    def __init__(self, provider, host, port, wrappermode, username, password):
        self.provider = provider
        self.host = host
        self.port = port
        self.wrappermode = wrappermode
        self.username = username
        self.password = password

    @property
    def nexthop(self):
        return nexthop(self.host, self.port)

    @property
    def has_credentials(self):
        return self.username is not None


def _preset(presets, variable, provider):
    if not isinstance(provider, str) or provider not in presets:
        raise RelayPlanError(variable, "unknown provider %r; choose one of %s" % (provider, ", ".join(sorted(presets))))
    return presets[provider]


def resolve_relay(presets, spec, names, wrappermode=None):
    """Turn a relay description into a Relay, filling endpoint and user name from the preset.

    ``spec`` has the keys of RELAY_KEYS (missing means unset); ``names`` maps each key to
    the variable name used in error messages.
    """
    provider = spec.get("provider") or "custom"
    preset = _preset(presets, names["provider"], provider)

    host = spec.get("host")
    if host is not None:
        host = _hostname(names["host"], host)
    else:
        host = _preset_host(preset, provider, spec, names)

    port = spec.get("port")
    port = _integer(names["port"], port, 1, 65535) if port is not None else int(preset["port"])

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
        return preset["region_hosts"][_choice(names[key], region, sorted(preset["region_hosts"]))]
    if preset.get("host_template"):
        key = preset["region_setting"].replace("relay_", "", 1)
        region = spec.get(key)
        if region is None:
            raise RelayPlanError(names[key], "required for provider %s (for example us-east-1)" % provider)
        region = _text(names[key], region)
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
        _password(names["password"], password)
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
        _username(names["username"], username)
    return username, password


def _username(variable, value):
    # Values are never echoed: Postmark's user name is the server token.
    if not isinstance(value, str):
        raise RelayPlanError(variable, "must be a string")
    if ":" in value:
        raise RelayPlanError(variable, "must not contain ':' (Postfix splits user:password at the first colon)")
    if any(char.isspace() for char in value) or CONTROL_CHARACTERS.search(value):
        raise RelayPlanError(variable, "must not contain whitespace or control characters")
    return value


def _password(variable, value):
    if not isinstance(value, str):
        raise RelayPlanError(variable, "must be a string (quote it in YAML)")
    if "\n" in value or "\r" in value:
        raise RelayPlanError(variable, "must not contain a line break (check how the secret was pasted or looked up)")
    if CONTROL_CHARACTERS.search(value):
        raise RelayPlanError(variable, "must not contain control characters")
    if value != value.strip():
        raise RelayPlanError(variable, "must not start or end with whitespace (Postfix would drop it)")
    return value


def _relay_spec(item, prefix, keys):
    spec = dict((key, item.get(key)) for key in keys if key in item)
    names = dict((key, "%s.%s" % (prefix, key)) for key in keys)
    return spec, names


# ---------------------------------------------------------------- the plan

def relay_plan(settings, presets, facts):
    """Validate the role's variables and compute the desired Postfix state (see module docstring)."""
    if not isinstance(presets, dict) or not presets:
        raise RelayPlanError("presets", "the provider presets are missing (roles/relay/vars/presets.yml)")
    facts = facts or {}
    setting = _Settings(settings)

    mode = _choice("relay_mode", setting.get("relay_mode", "null_client"), MODES)
    config_dir = _text("relay_config_dir", setting.get("relay_config_dir", "/etc/postfix")).rstrip("/") or "/"
    database_type = _database_type(setting, facts)

    tls_level = _choice("relay_tls_security_level", setting.get("relay_tls_security_level", "secure"), TLS_LEVELS)
    wrappermode = setting.get("relay_tls_wrappermode")
    if wrappermode is not None:
        _flag("relay_tls_wrappermode", wrappermode)

    main_spec = {
        "provider": setting.get("relay_provider"),
        "host": setting.get("relay_host"),
        "port": setting.get("relay_port"),
        "username": setting.get("relay_username"),
        "password": setting.get("relay_password"),
        "ses_region": setting.get("relay_ses_region"),
        "mailgun_region": setting.get("relay_mailgun_region"),
    }
    if main_spec["provider"] is None:
        raise RelayPlanError("relay_provider", "required; choose one of %s" % ", ".join(sorted(presets)))
    if main_spec["provider"] == "custom" and main_spec["host"] in (None, ""):
        raise RelayPlanError("relay_host", "required when relay_provider is custom")
    main_names = dict((key, "relay_" + key) for key in RELAY_KEYS)
    primary = resolve_relay(presets, main_spec, main_names, wrappermode)
    preset = presets[primary.provider]

    sasl_path = config_dir + "/sasl_passwd"
    sasl_map_spec = "%s:%s" % (database_type, sasl_path)
    sasl_entries = _SaslEntries()
    if primary.has_credentials:
        sasl_entries.add(primary.nexthop, primary, "relay_username")

    main_cf = {}
    tables = []
    master_services = []
    packages = _packages(facts, database_type)

    # Where mail goes, and as whom.
    main_cf["relayhost"] = primary.nexthop
    main_cf["smtp_sasl_password_maps"] = sasl_map_spec
    main_cf["smtp_sasl_security_options"] = "noanonymous"
    main_cf["smtp_sasl_tls_security_options"] = "noanonymous"

    # TLS toward every relay.
    _tls(setting, facts, tls_level, primary, main_cf)

    # Throughput settings: the preset's published limits, overridable.
    _limits(setting, facts, preset, main_cf)

    # Mode: who may submit mail, and no local delivery.
    local_domains = []
    transport_entries = []

    domain_routes = _list("relay_domain_routes", setting.get("relay_domain_routes"))
    sender_routes = _list("relay_sender_routes", setting.get("relay_sender_routes"))
    fallback_value = setting.get("relay_fallback")

    route_services = {}
    for index, item in enumerate(domain_routes):
        _domain_route(presets, index, item, primary, bool(sender_routes), fallback_value is not None,
                      local_domains, transport_entries, route_services, sasl_entries)
    master_services.extend(route_services[name]["service"] for name in sorted(route_services))

    sender_entries = []
    for index, item in enumerate(sender_routes):
        sender_entries.append(_sender_route(presets, index, item, primary, sasl_entries))
    if sender_entries:
        path = config_dir + "/sender_relay"
        tables.append({"path": path, "type": database_type, "entries": sender_entries})
        main_cf["sender_dependent_relayhost_maps"] = "%s:%s" % (database_type, path)
        main_cf["smtp_sender_dependent_authentication"] = "yes"
    else:
        main_cf["sender_dependent_relayhost_maps"] = None
        main_cf["smtp_sender_dependent_authentication"] = None

    fallback = None
    if fallback_value is not None:
        fallback = _fallback(presets, fallback_value, primary, bool(sender_routes), sasl_entries)
        main_cf["smtp_fallback_relay"] = fallback.nexthop
    else:
        main_cf["smtp_fallback_relay"] = None

    # Amazon SES sandbox: only verified recipients leave; the rest fail here, not at SES.
    sandbox = _list("relay_ses_sandbox_recipients", setting.get("relay_ses_sandbox_recipients"))
    if sandbox:
        if primary.provider != "ses":
            raise RelayPlanError("relay_ses_sandbox_recipients", "only applies with relay_provider ses")
        if sender_routes:
            raise RelayPlanError("relay_ses_sandbox_recipients", "cannot be combined with relay_sender_routes "
                                 "(the allow-list would also stop mail routed to other relays per sender)")
        routed = set(entry["key"] for entry in transport_entries)
        for index, recipient in enumerate(sandbox):
            variable = "relay_ses_sandbox_recipients[%d]" % index
            recipient = _text(variable, recipient)
            key = _address_pattern(variable, recipient) if "@" in recipient else _domain(variable, recipient)
            if key.startswith("@"):
                key = key[1:]
            if key in routed:
                raise RelayPlanError(variable, "%s is already routed by relay_domain_routes" % key)
            routed.add(key)
            # ":" keeps transport and next hop unchanged: the recipient goes to the relay as usual.
            transport_entries.append({"key": key, "value": ":"})
        transport_entries.append({"key": "*", "value": SANDBOX_REJECT})

    if transport_entries:
        path = config_dir + "/transport"
        tables.append({"path": path, "type": database_type, "entries": transport_entries})
        main_cf["transport_maps"] = "%s:%s" % (database_type, path)
    else:
        main_cf["transport_maps"] = None

    _mode(setting, mode, local_domains, main_cf)
    aliases = _aliases(local_domains, database_type, main_cf)

    # Sender rewriting: local addresses leave with a real domain.
    _rewriting(setting, facts, mode, config_dir, database_type, main_cf, tables)

    # Header cleanup on the way out (smtp_header_checks leaves local copies alone).
    _header_cleanup(setting, config_dir, main_cf, tables)

    # Queue and connection tuning.
    _queue(setting, main_cf)
    _connections(setting, facts, primary, fallback, main_cf, master_services)

    main_cf["smtp_sasl_auth_enable"] = "yes" if sasl_entries.entries else "no"

    _extra_parameters(setting, main_cf)

    return {
        "provider": primary.provider,
        "relayhost": primary.nexthop,
        "database_type": database_type,
        "packages": packages,
        "main_cf": main_cf,
        "master_services": master_services,
        "sasl_map": {"path": sasl_path, "type": database_type, "entries": sasl_entries.entries},
        "tables": tables,
        "aliases": aliases,
        "probe": _probe(primary, main_cf),
    }


def _probe(primary, main_cf):
    """How relay_probe checks the primary before a host switches to it (no secret here:
    the login is the SASL entry keyed by relayhost)."""
    return {
        "host": primary.host.strip("[]"),
        "port": primary.port,
        "tls": "implicit" if primary.wrappermode else "starttls",
        # encrypt does not verify the certificate and fingerprint pins it
        # instead of trusting a CA: the probe must not be stricter than Postfix.
        "verify": main_cf.get("smtp_tls_security_level") in ("secure", "verify"),
        "ca_file": main_cf.get("smtp_tls_CAfile"),
        "authenticate": primary.has_credentials,
    }


def _aliases(local_domains, database_type, main_cf):
    """The alias database local(8) reads, where some domain is delivered locally.

    A package installed without configuration never built it, and local
    delivery defers with "alias database unavailable" until it exists.
    """
    if not local_domains:
        return None
    alias_map = "%s:%s" % (database_type, ALIASES_PATH)
    main_cf["alias_maps"] = alias_map
    main_cf["alias_database"] = alias_map
    return {"path": ALIASES_PATH, "map": alias_map, "compiled": compiled_path(ALIASES_PATH, database_type)}


class _Settings:
    """The role's variables; absent and None both mean "not set"."""

    def __init__(self, settings):
        if not isinstance(settings, dict):
            raise RelayPlanError("settings", "must be a dictionary of relay_* variables")
        unknown = sorted(key for key in settings if not str(key).startswith("relay_"))
        if unknown:
            raise RelayPlanError(unknown[0], "is not a relay_* variable")
        self._settings = settings

    def get(self, name, default=None):
        value = self._settings.get(name)
        return default if value is None else value


class _SaslEntries:
    """SASL map entries keyed by next hop or sender; one key must never carry two logins."""

    def __init__(self):
        self.entries = []
        self._by_key = {}

    def add(self, key, relay, variable):
        existing = self._by_key.get(key)
        if existing is not None:
            if (existing["username"], existing["password"]) != (relay.username, relay.password):
                raise RelayPlanError(variable, "%s already has other credentials in this configuration; "
                                     "Postfix keeps one login per next hop" % key)
            return
        entry = {"key": key, "username": relay.username, "password": relay.password}
        self._by_key[key] = entry
        self.entries.append(entry)


def _database_type(setting, facts):
    value = setting.get("relay_database_type")
    if value is None:
        value = facts.get("default_database_type") or "hash"
        return value
    return _choice("relay_database_type", value, DATABASE_TYPES)


def _packages(facts, database_type):
    packages = list(facts.get("packages") or [])
    extra = (facts.get("map_type_packages") or {}).get(database_type)
    if extra and extra not in packages:
        packages.append(extra)
    return packages


def _tls(setting, facts, tls_level, primary, main_cf):
    fingerprints = _list("relay_tls_fingerprints", setting.get("relay_tls_fingerprints"))
    if tls_level == "fingerprint" and not fingerprints:
        raise RelayPlanError("relay_tls_fingerprints", "required when relay_tls_security_level is fingerprint")
    if fingerprints and tls_level != "fingerprint":
        raise RelayPlanError("relay_tls_fingerprints", "only used with relay_tls_security_level fingerprint (it is %s)" % tls_level)

    ca_file = setting.get("relay_tls_ca_file") or facts.get("ca_file")
    if ca_file is None:
        raise RelayPlanError("relay_tls_ca_file", "no CA bundle is known for this OS family; set relay_tls_ca_file")
    ca_file = _text("relay_tls_ca_file", ca_file)
    if not ca_file.startswith("/"):
        raise RelayPlanError("relay_tls_ca_file", "must be an absolute path")

    main_cf["smtp_tls_security_level"] = tls_level
    main_cf["smtp_tls_CAfile"] = ca_file
    main_cf["smtp_tls_wrappermode"] = "yes" if primary.wrappermode else "no"
    if fingerprints:
        main_cf["smtp_tls_fingerprint_digest"] = "sha256"
        main_cf["smtp_tls_fingerprint_cert_match"] = [
            _fingerprint("relay_tls_fingerprints[%d]" % index, value) for index, value in enumerate(fingerprints)
        ]
    else:
        main_cf["smtp_tls_fingerprint_digest"] = None
        main_cf["smtp_tls_fingerprint_cert_match"] = None

    minimum = _choice("relay_tls_min_version", setting.get("relay_tls_min_version", "TLSv1.2"), TLS_MIN_VERSIONS)
    protocols = tls_protocols(minimum, tls_syntax(facts))
    main_cf["smtp_tls_mandatory_protocols"] = protocols
    main_cf["smtp_tls_protocols"] = protocols


def _fingerprint(variable, value):
    value = _text(variable, value)
    digits = value.replace(":", "").strip().upper()
    if not re.match(r"^[0-9A-F]{64}$", digits):
        raise RelayPlanError(variable, "%r is not a SHA-256 fingerprint (64 hex digits, colons optional)" % value)
    return ":".join(digits[i:i + 2] for i in range(0, 64, 2))


def tls_syntax(facts):
    """"modern" (Postfix >= 3.6 takes >=TLSv1.2) or "legacy"; unknown versions get legacy, which every version reads."""
    syntax = facts.get("tls_min_version_syntax")
    if syntax in ("modern", "legacy"):
        return syntax
    version = postfix_version_tuple(facts.get("postfix_version"))
    return "modern" if version is not None and version >= (3, 6) else "legacy"


def tls_protocols(minimum, syntax):
    if syntax == "modern":
        return ">=" + minimum
    excluded = ["!SSLv2", "!SSLv3", "!TLSv1", "!TLSv1.1"]
    if minimum == "TLSv1.3":
        excluded.append("!TLSv1.2")
    return ", ".join(excluded)


def rate_delay(messages_per_second):
    """Postfix rate delay for a send rate, in whole seconds, rounded up.

    postconf(5) of Postfix 3.7 and 3.10 lists only s, m, h, d and w for rate delays; Postfix
    3.7.11 accepts "72ms" without a warning and then delivers one message and stops (measured
    by the benchmarks). So no unit below seconds: a rate above one message per second cannot be
    paced by a rate delay and is held to one per second, never above what was asked for.
    """
    return "%ds" % int(math.ceil(1.0 / messages_per_second))


def _limits(setting, facts, preset, main_cf):
    limits = preset.get("postfix") or {}

    rate = setting.get("relay_max_send_rate")
    if rate is None:
        rate = limits.get("max_send_rate")
    if rate is not None:
        number = _number(rate)
        if number is None or number < 0:
            raise RelayPlanError("relay_max_send_rate", "must be a number of messages per second, 0 or more; got %r" % (rate,))
        rate = number or None
    main_cf["smtp_destination_rate_delay"] = rate_delay(rate) if rate else None

    for variable, parameter, key in (
        ("relay_destination_concurrency_limit", "smtp_destination_concurrency_limit", "destination_concurrency_limit"),
        ("relay_destination_recipient_limit", "smtp_destination_recipient_limit", "destination_recipient_limit"),
    ):
        value = setting.get(variable)
        if value is None:
            value = limits.get(key)
        if value is not None:
            value = _integer(variable, value, 0) or None
        main_cf[parameter] = str(value) if value else None


def _mode(setting, mode, local_domains, main_cf):
    interfaces = _list("relay_inet_interfaces", _split(setting.get("relay_inet_interfaces")))
    for index, value in enumerate(interfaces):
        _text("relay_inet_interfaces[%d]" % index, value)
    networks = _list("relay_mynetworks", _split(setting.get("relay_mynetworks")))

    if mode == "null_client":
        if interfaces and interfaces != ["loopback-only"] and not all(_is_loopback(value) for value in interfaces):
            raise RelayPlanError("relay_inet_interfaces", "a null_client listens on loopback only; use relay_mode relay_server to accept mail from the network")
        if networks:
            raise RelayPlanError("relay_mynetworks", "a null_client accepts mail from this host only; use relay_mode relay_server")
        main_cf["inet_interfaces"] = ", ".join(interfaces) if interfaces else "loopback-only"
        main_cf["mynetworks"] = list(LOOPBACK_NETWORKS)
    else:
        if not networks:
            raise RelayPlanError("relay_mynetworks", "required with relay_mode relay_server: the networks allowed to relay through this host")
        main_cf["inet_interfaces"] = ", ".join(interfaces) if interfaces else "all"
        main_cf["mynetworks"] = [_network("relay_mynetworks[%d]" % index, value) for index, value in enumerate(networks)]

    protocols = setting.get("relay_inet_protocols")
    if protocols is not None:
        main_cf["inet_protocols"] = _choice("relay_inet_protocols", protocols, ("all", "ipv4", "ipv6", "ipv4, ipv6"))

    # Never an open relay, and nothing but mynetworks may talk to smtpd at all.
    main_cf["smtpd_relay_restrictions"] = "permit_mynetworks, reject_unauth_destination"
    main_cf["smtpd_client_restrictions"] = "permit_mynetworks, reject"
    main_cf["mydestination"] = ", ".join(local_domains)
    main_cf["local_transport"] = LOCAL_TRANSPORT_DISABLED

    hostname = setting.get("relay_myhostname")
    if hostname is not None:
        main_cf["myhostname"] = _domain("relay_myhostname", hostname)


def _is_loopback(value):
    if value in ("localhost", "loopback-only"):
        return True
    try:
        return ipaddress.ip_address(value.strip("[]")).is_loopback
    except ValueError:
        return False


def _network(variable, value):
    value = _text(variable, value).strip()
    bare = value.replace("[", "").replace("]", "")
    try:
        network = ipaddress.ip_network(bare, strict=False)
    except ValueError:
        raise RelayPlanError(variable, "%r is not an IP network such as 10.0.0.0/8 or [2001:db8::]/32" % value)
    if network.prefixlen == 0:
        raise RelayPlanError(variable, "%r would let the whole Internet relay through this host" % value)
    if network.version == 6:
        return "[%s]/%d" % (network.network_address, network.prefixlen)
    return str(network) if "/" in bare else str(network.network_address)


def _domain_route(presets, index, item, primary, has_sender_routes, has_fallback, local_domains, transport_entries, route_services,
                  sasl_entries):
    prefix = "relay_domain_routes[%d]" % index
    item = _mapping(prefix, item, DOMAIN_ROUTE_KEYS)
    if item.get("domain") is None:
        raise RelayPlanError(prefix + ".domain", "required")
    domain = _text(prefix + ".domain", item["domain"])
    key = "." + _domain(prefix + ".domain", domain[1:]) if domain.startswith(".") else _domain(prefix + ".domain", domain)
    if any(entry["key"] == key for entry in transport_entries):
        raise RelayPlanError(prefix + ".domain", "%s is routed twice" % key)
    action = _choice(prefix + ".action", item.get("action") or "relay", DOMAIN_ROUTE_ACTIONS)

    if action == "local":
        extra = sorted(k for k in item if k not in ("domain", "action") and item[k] is not None)
        if extra:
            raise RelayPlanError(prefix + "." + extra[0], "does not apply to action local")
        if key.startswith("."):
            raise RelayPlanError(prefix + ".domain", "local delivery needs an exact domain, not %s" % key)
        local_domains.append(key)
        transport_entries.append({"key": key, "value": "local:"})
        return

    spec, names = _relay_spec(item, prefix, RELAY_KEYS)
    if spec.get("provider") in (None, "custom") and item.get("host") is None:
        raise RelayPlanError(prefix + ".host", "required for a relay route without a provider")
    relay = resolve_relay(presets, spec, names)
    if relay.nexthop == primary.nexthop:
        raise RelayPlanError(prefix + ".host", "%s is already the primary relay; no route is needed" % relay.nexthop)

    tls_level = item.get("tls_security_level")
    if tls_level is not None:
        _choice(prefix + ".tls_security_level", tls_level, ROUTE_TLS_LEVELS)
        if tls_level in ("may", "none") and relay.has_credentials:
            raise RelayPlanError(prefix + ".tls_security_level", "%s would send the password without verified TLS" % tls_level)
        if tls_level in ("may", "none") and relay.wrappermode:
            raise RelayPlanError(prefix + ".tls_security_level", "port %d uses TLS wrapper mode, which needs encrypt or stronger" % relay.port)

    name = item.get("transport")
    if name is None:
        name = "route_" + re.sub(r"[^a-z0-9]+", "_", relay.host.lower()).strip("_") + "_%d" % relay.port
        name = name[:63]
    else:
        name = _text(prefix + ".transport", name)
        if not SERVICE_NAME.match(name):
            raise RelayPlanError(prefix + ".transport", "%r is not a usable master.cf service name (lowercase letters, digits, _ and -)" % name)
    if name in RESERVED_SERVICES:
        raise RelayPlanError(prefix + ".transport", "%r is a standard Postfix service; choose another name" % name)

    options = {"smtp_tls_wrappermode": "yes" if relay.wrappermode else "no"}
    if tls_level is not None:
        options["smtp_tls_security_level"] = tls_level
    if has_sender_routes:
        # Otherwise a sender's own login would be offered to this route's relay.
        options["smtp_sender_dependent_authentication"] = "no"
    if has_fallback:
        # A route names its relay: mail for the domain waits for it rather than leaving elsewhere.
        options["smtp_fallback_relay"] = ""
    service = {
        "name": name,
        "type": "unix",
        "private": "-",
        "unpriv": "-",
        "chroot": "n",
        "wakeup": "-",
        "maxproc": "-",
        "command": "smtp",
        "options": options,
        "exclusive_options": True,
        "state": "present",
    }
    existing = route_services.get(name)
    if existing is not None and (existing["nexthop"] != relay.nexthop or existing["service"] != service):
        raise RelayPlanError(prefix + ".transport", "%s is already used by a route with different settings" % name)
    route_services[name] = {"nexthop": relay.nexthop, "service": service}
    if relay.has_credentials:
        sasl_entries.add(relay.nexthop, relay, prefix + ".username")
    transport_entries.append({"key": key, "value": "%s:%s" % (name, relay.nexthop)})


def _sender_route(presets, index, item, primary, sasl_entries):
    prefix = "relay_sender_routes[%d]" % index
    item = _mapping(prefix, item, SENDER_ROUTE_KEYS)
    if item.get("sender") is None:
        raise RelayPlanError(prefix + ".sender", "required")
    sender = _address_pattern(prefix + ".sender", item["sender"])
    spec, names = _relay_spec(item, prefix, RELAY_KEYS)
    if spec.get("provider") in (None, "custom") and item.get("host") is None:
        raise RelayPlanError(prefix + ".host", "required for a sender route without a provider")
    relay = resolve_relay(presets, spec, names)
    if relay.wrappermode != primary.wrappermode:
        raise RelayPlanError(prefix + ".port", "TLS wrapper mode is one setting for the smtp transport; port %d and the "
                             "primary relay's port %d need different modes (use relay_domain_routes or a matching port)" % (relay.port, primary.port))
    if relay.has_credentials:
        sasl_entries.add(sender, relay, prefix + ".username")
    return {"key": sender, "value": relay.nexthop}


def _fallback(presets, value, primary, has_sender_routes, sasl_entries):
    value = _mapping("relay_fallback", value, FALLBACK_KEYS)
    if has_sender_routes:
        raise RelayPlanError("relay_fallback", "cannot be combined with relay_sender_routes: Postfix would offer a "
                             "sender's own login to the fallback relay")
    spec, names = _relay_spec(value, "relay_fallback", FALLBACK_KEYS)
    if spec.get("provider") in (None, "custom") and value.get("host") is None:
        raise RelayPlanError("relay_fallback.host", "required for a fallback relay without a provider")
    relay = resolve_relay(presets, spec, names)
    if not relay.has_credentials:
        raise RelayPlanError("relay_fallback.password", "a fallback relay needs its own credentials")
    if relay.nexthop == primary.nexthop:
        raise RelayPlanError("relay_fallback.host", "%s is the primary relay itself" % relay.nexthop)
    if relay.wrappermode != primary.wrappermode:
        raise RelayPlanError("relay_fallback.port", "TLS wrapper mode is one setting for the smtp transport; port %d and the "
                             "primary relay's port %d need different modes" % (relay.port, primary.port))
    sasl_entries.add(relay.nexthop, relay, "relay_fallback.username")
    return relay


def _rewriting(setting, facts, mode, config_dir, database_type, main_cf, tables):
    map_kind = _choice("relay_sender_rewrite_map", setting.get("relay_sender_rewrite_map", "generic"), REWRITE_MAPS)
    parameter = "smtp_generic_maps" if map_kind == "generic" else "sender_canonical_maps"
    other = "sender_canonical_maps" if map_kind == "generic" else "smtp_generic_maps"

    sender_domain = setting.get("relay_sender_domain")
    if sender_domain is not None:
        sender_domain = _domain("relay_sender_domain", sender_domain)
    elif facts.get("domain"):
        sender_domain = str(facts["domain"])
    if sender_domain is None and mode == "null_client":
        raise RelayPlanError("relay_sender_domain", "required: this host has no DNS domain, and a null client must send "
                             "local mail (root, cron) from a real domain the provider accepts")
    main_cf["myorigin"] = sender_domain

    entries = []
    seen = set()
    for index, item in enumerate(_list("relay_sender_rewrites", setting.get("relay_sender_rewrites"))):
        prefix = "relay_sender_rewrites[%d]" % index
        item = _mapping(prefix, item, ("match", "replace"))
        if item.get("match") is None or item.get("replace") is None:
            raise RelayPlanError(prefix, "needs both match and replace")
        match = _address_pattern(prefix + ".match", item["match"])
        replace = _address_pattern(prefix + ".replace", item["replace"])
        if match in seen:
            raise RelayPlanError(prefix + ".match", "%s is rewritten twice" % match)
        seen.add(match)
        entries.append({"key": match, "value": replace})

    if sender_domain is not None and _flag("relay_rewrite_local_addresses", setting.get("relay_rewrite_local_addresses", True)):
        local_names = ["localhost", "localhost.localdomain"]
        for name in (setting.get("relay_myhostname"), facts.get("fqdn")):
            if name and "." in str(name) and str(name) not in local_names:
                local_names.append(str(name))
        for name in local_names:
            key = "@" + name
            if name != sender_domain and key not in seen:
                seen.add(key)
                # "@domain" as the result keeps the user part: root@localhost -> root@example.com.
                entries.append({"key": key, "value": "@" + sender_domain})

    if entries:
        path = "%s/%s" % (config_dir, map_kind)
        tables.append({"path": path, "type": database_type, "entries": entries})
        main_cf[parameter] = "%s:%s" % (database_type, path)
    else:
        main_cf[parameter] = None
    main_cf[other] = None


def _header_cleanup(setting, config_dir, main_cf, tables):
    if not _flag("relay_header_cleanup", setting.get("relay_header_cleanup", False)):
        main_cf["smtp_header_checks"] = None
        return
    headers = _list("relay_header_cleanup_headers", setting.get("relay_header_cleanup_headers", DEFAULT_HEADER_CLEANUP))
    if not headers:
        raise RelayPlanError("relay_header_cleanup_headers", "must name at least one header when relay_header_cleanup is true")
    entries = []
    for index, header in enumerate(headers):
        variable = "relay_header_cleanup_headers[%d]" % index
        header = _text(variable, header).rstrip(":")
        if not HEADER_NAME.match(header):
            raise RelayPlanError(variable, "%r is not a header name" % header)
        entries.append({"key": "/^%s:/" % re.escape(header).replace("\\-", "-"), "value": "IGNORE"})
    path = config_dir + "/smtp_header_checks"
    tables.append({"path": path, "type": "regexp", "entries": entries})
    main_cf["smtp_header_checks"] = "regexp:" + path


def _queue(setting, main_cf):
    for variable, parameter in (
        ("relay_maximal_queue_lifetime", "maximal_queue_lifetime"),
        ("relay_bounce_queue_lifetime", "bounce_queue_lifetime"),
        ("relay_minimal_backoff_time", "minimal_backoff_time"),
        ("relay_maximal_backoff_time", "maximal_backoff_time"),
        ("relay_queue_run_delay", "queue_run_delay"),
    ):
        value = setting.get(variable)
        main_cf[parameter] = _time_value(variable, value) if value is not None else None
    minimal, maximal = main_cf["minimal_backoff_time"], main_cf["maximal_backoff_time"]
    if minimal and maximal and _seconds(minimal) > _seconds(maximal):
        raise RelayPlanError("relay_minimal_backoff_time", "%s is longer than relay_maximal_backoff_time %s" % (minimal, maximal))


def _connections(setting, facts, primary, fallback, main_cf, master_services):
    if _flag("relay_connection_cache", setting.get("relay_connection_cache", False)):
        destinations = [primary.nexthop] + ([fallback.nexthop] if fallback else [])
        main_cf["smtp_connection_cache_destinations"] = destinations
    else:
        main_cf["smtp_connection_cache_destinations"] = None
    limit = setting.get("relay_connection_cache_time_limit")
    main_cf["smtp_connection_cache_time_limit"] = _time_value("relay_connection_cache_time_limit", limit) if limit is not None else None

    if _flag("relay_tls_connection_reuse", setting.get("relay_tls_connection_reuse", True)):
        version = postfix_version_tuple(facts.get("postfix_version"))
        if version is not None and version < (3, 4):
            raise RelayPlanError("relay_tls_connection_reuse", "needs Postfix 3.4 or later (this host has %s); set it to false" % facts.get("postfix_version"))
        main_cf["smtp_tls_connection_reuse"] = "yes"
        # The tlsproxy service must exist, or every TLS delivery fails with "Cannot start TLS".
        master_services.append({
            "name": "tlsproxy", "type": "unix", "private": "-", "unpriv": "-", "chroot": "n",
            "wakeup": "-", "maxproc": "0", "command": "tlsproxy", "state": "present",
        })
    else:
        main_cf["smtp_tls_connection_reuse"] = None


def _extra_parameters(setting, main_cf):
    extra = setting.get("relay_extra_parameters", {})
    if not isinstance(extra, dict):
        raise RelayPlanError("relay_extra_parameters", "must be a dictionary of main.cf parameter names to values")
    for name in sorted(extra):
        variable = "relay_extra_parameters.%s" % name
        if not isinstance(name, str) or not PARAMETER_NAME.match(name):
            raise RelayPlanError(variable, "is not a main.cf parameter name")
        if name in main_cf:
            raise RelayPlanError(variable, "%s is set by the role itself; use the role variable for it "
                                 "(see the role's argument_specs)" % name)
        value = extra[name]
        if isinstance(value, (list, tuple)):
            value = [_text(variable, str(item)) for item in value]
        elif isinstance(value, bool) or _is_int(value):
            pass
        elif value is None:
            raise RelayPlanError(variable, "has no value")
        else:
            value = _text(variable, str(value), allow_empty=True)
        main_cf[name] = value
