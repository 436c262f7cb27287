# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""The values the plan is made of: the settings it reads, a relay, the inputs every section
shares, and the Plan that the sections add to."""

from __future__ import annotations

import dataclasses

from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.validate import RelayPlanError, as_list


class Settings:
    """The role's variables exactly as the role passes them (roles/relay/vars/main.yml).

    The plan has no default of its own: defaults/main.yml holds every default, and a variable the
    role does not pass is an error, so the two cannot drift apart. None means "not set".
    """

    def __init__(self, settings):
        if not isinstance(settings, dict):
            raise RelayPlanError("settings", "must be a dictionary of relay_* variables")
        unknown = sorted(key for key in settings if not str(key).startswith("relay_"))
        if unknown:
            raise RelayPlanError(unknown[0], "is not a relay_* variable")
        self._settings = settings
        self.read = set()

    def __getitem__(self, name):
        if name not in self._settings:
            raise RelayPlanError(
                name, "is not passed to the plan (roles/relay/vars/main.yml lists what the role passes)"
            )
        self.read.add(name)
        return self._settings[name]


@dataclasses.dataclass(frozen=True)
class Relay:
    """One smarthost: where to connect and how to authenticate.

    auth is one of AUTH_MODES. A SASL login (password) has username and password; oauth2 has
    username (the mailbox) and oauth2, the token flow's settings with its secrets; certificate has
    client_cert, the (certificate, key) paths on the host.
    """

    provider: str
    host: str
    port: int
    wrappermode: bool
    username: str | None
    password: str | None
    auth: str = "password"
    oauth2: dict | None = None
    client_cert: tuple | None = None

    @property
    def nexthop(self):
        return nexthop(self.host, self.port)

    @property
    def has_credentials(self):
        """A SASL login for the password map (OAuth 2.0 tokens never go there)."""
        return self.auth == "password" and self.username is not None


def nexthop(host, port):
    """The bracketed next hop Postfix uses both as relayhost and as the SASL key."""
    return "[%s]:%d" % (host, port)


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What every section reads: the settings, presets and facts, and what the plan derives from
    them before any section runs (mode, where the files go, the map type, the primary relay)."""

    settings: Settings
    presets: dict
    facts: dict
    mode: str
    config_dir: str
    database_type: str
    tls_level: str
    primary: Relay

    @property
    def preset(self):
        return self.presets[self.primary.provider]

    @property
    def domain_routes(self):
        return as_list("relay_domain_routes", self.settings["relay_domain_routes"])

    @property
    def sender_routes(self):
        return as_list("relay_sender_routes", self.settings["relay_sender_routes"])

    @property
    def fallback(self):
        """relay_fallback as given (the fallback section validates it)."""
        return self.settings["relay_fallback"]

    def path(self, name):
        return "%s/%s" % (self.config_dir, name)

    def indexed_map(self, name):
        """(path, "type:path") of a table of the host's indexed map type in the config directory."""
        path = self.path(name)
        return path, "%s:%s" % (self.database_type, path)


def unix_service(name, command, options):
    """A postfix_config `services` item for a private unix service the plan owns whole (not
    chrooted, Postfix's default limits): exactly these -o options, nothing an earlier run left."""
    return {
        "name": name,
        "type": "unix",
        "private": "-",
        "unpriv": "-",
        "chroot": "n",
        "wakeup": "-",
        "maxproc": "-",
        "command": command,
        "options": options,
        "exclusive_options": True,
        "state": "present",
    }


@dataclasses.dataclass(frozen=True)
class Login:
    """One entry of the SASL password map, with the variable that asked for it (for errors)."""

    key: str
    username: str
    password: str
    variable: str

    def entry(self):
        return {"key": self.key, "username": self.username, "password": self.password}


def add_login(logins, key, relay, variable):
    """logins with one more; a key already there must carry the same credentials (one login per next hop)."""
    for login in logins:
        if login.key == key:
            if (login.username, login.password) != (relay.username, relay.password):
                raise RelayPlanError(
                    variable,
                    "%s already has other credentials in this configuration; "
                    "Postfix keeps one login per next hop" % key,
                )
            return logins
    return logins + (Login(key, relay.username, relay.password, variable),)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the plan builds. A section returns a Plan of what it adds; Plan.add() joins them.

    main_cf: parameter -> value (None removes it); tables: [{path, type, entries}];
    master_services: postfix_config `services` items; logins: the SASL map's entries;
    transport: transport_maps entries; local_domains: domains delivered here; fallback: the
    fallback Relay; oauth2_relays: (account name, Relay) of each OAuth 2.0 relay, which
    oauth2_accounts turns into what the role installs; send_rates: (transport, messages per
    second) paced outside Postfix; pacing: the smtp transport's pacing clones, a clone as often as
    it is fast (randmap's entries, or the pace map's turns); pace_map: the pace map's port, table,
    clones file and clones, or None; pace_map_stale: ``{clones_path}`` of an earlier run's pace map
    that is to be stopped, or None;
    client_keys: TLS client keys on the host (kept root-only);
    submission: the sasldb users and files of authenticated submission (secret), or None;
    aliases, probe: see the package docstring.
    """

    main_cf: dict = dataclasses.field(default_factory=dict)
    tables: tuple = ()
    master_services: tuple = ()
    logins: tuple = ()
    transport: tuple = ()
    local_domains: tuple = ()
    fallback: Relay | None = None
    aliases: dict | None = None
    probe: dict | None = None
    oauth2_relays: tuple = ()
    oauth2_accounts: tuple = ()
    send_rates: tuple = ()
    client_keys: tuple = ()
    pacing: tuple = ()
    pace_map: dict | None = None
    pace_map_stale: dict | None = None
    submission: dict | None = None

    def add(self, part, section):
        """This plan with part added; a section may not set what an earlier one set."""
        twice = sorted(set(self.main_cf) & set(part.main_cf))
        if twice:
            raise ValueError("plan section %s sets main.cf %s again" % (section, ", ".join(twice)))
        for name in ("fallback", "aliases", "probe", "submission", "pace_map", "pace_map_stale"):
            if getattr(self, name) is not None and getattr(part, name) is not None:
                raise ValueError("plan section %s sets %s again" % (section, name))
        logins = self.logins
        for login in part.logins:
            logins = add_login(logins, login.key, login, login.variable)
        return Plan(
            main_cf=dict(self.main_cf, **part.main_cf),
            tables=self.tables + tuple(part.tables),
            master_services=self.master_services + tuple(part.master_services),
            logins=logins,
            transport=self.transport + tuple(part.transport),
            local_domains=self.local_domains + tuple(part.local_domains),
            fallback=part.fallback or self.fallback,
            aliases=part.aliases or self.aliases,
            probe=part.probe or self.probe,
            oauth2_relays=_add_oauth2_relays(self.oauth2_relays, part.oauth2_relays, section),
            oauth2_accounts=self.oauth2_accounts + tuple(part.oauth2_accounts),
            send_rates=self.send_rates + tuple(part.send_rates),
            client_keys=self.client_keys + tuple(part.client_keys),
            pacing=self.pacing + tuple(part.pacing),
            pace_map=part.pace_map or self.pace_map,
            pace_map_stale=part.pace_map_stale or self.pace_map_stale,
            submission=part.submission or self.submission,
        )


def _add_oauth2_relays(known, added, section):
    """OAuth 2.0 relays by account name; a name stands for one relay identity only."""
    relays = dict(known)
    for name, relay in added:
        if name in relays and relays[name] != relay:
            raise ValueError("plan section %s registers OAuth 2.0 account %s twice" % (section, name))
        relays[name] = relay
    return tuple(relays.items())
