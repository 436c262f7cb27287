# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Authenticated submission on a relay server: applications log in with their own SASL user over
TLS (587 with STARTTLS, optionally implicit TLS) and may send only as their own addresses.

Everything the service needs is a -o override of its own master.cf entry, so port 25 keeps the
mynetworks-only rules of main.cf. Users live in a Cyrus sasldb that smtpd reads through libsasl2
(smtpd_sasl_type cyrus): no daemon to run, and the distributions package it. The service runs
unchrooted, so the database and its configuration sit at one path for both Debian (whose other
services run chrooted) and RHEL (which chroots nothing).
"""

from __future__ import annotations

from ansible_collections.smarthost.postfix.plugins.module_utils.sasldb import login, name_problem
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import validate as v
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.model import Plan
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.tls import tls_protocols, tls_syntax
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.validate import RelayPlanError

USER_KEYS = ("name", "password", "senders")
# The realm of users named without @domain: Postfix reports them, and the sender login map names
# them, as name@submission.
REALM = "submission"
SMTP_PORT = 25
# Postfix tells the role's submission services from any other by their syslog_name, so a service
# the role created can be removed again (a port changed, submission turned off) and one it did
# not create is never touched.
SYSLOG_NAME = "postfix/smarthost-submission"
SYSLOG_NAME_WRAPPER = "postfix/smarthost-submissions"
# The ports of the service names master.cf commonly uses (Postfix resolves them in /etc/services).
SERVICE_PORTS = {"smtp": 25, "submission": 587, "submissions": 465, "smtps": 465, "ssmtp": 465, "urd": 465}
SERVER_MINIMUM_TLS = "TLSv1.2"


def submission_section(inputs, plan):
    """The submission service(s), the sender login map and the users the role writes to the sasldb."""
    settings = inputs.settings
    users = v.as_list("relay_submission_users", settings["relay_submission_users"])
    port = v.integer("relay_submission_port", settings["relay_submission_port"], 1, 65535)
    wrapper_port = settings["relay_submission_tls_wrapper_port"]
    if wrapper_port is not None:
        wrapper_port = v.integer("relay_submission_tls_wrapper_port", wrapper_port, 1, 65535)
    for name, value in (("relay_submission_port", port), ("relay_submission_tls_wrapper_port", wrapper_port)):
        if value == SMTP_PORT:
            raise RelayPlanError(
                name,
                "port 25 is the relay's own smtpd, which takes mail from relay_mynetworks only; "
                "submission needs a port of its own (587, 465)",
            )
    if wrapper_port == port:
        raise RelayPlanError("relay_submission_tls_wrapper_port", "must differ from relay_submission_port (%d)" % port)

    found = _inet_services(inputs.facts)
    if not users:
        stale = [service["name"] for service in found if _ours(service)]
        if not stale:
            return Plan()
        # Submission was turned off: remove the services and the users the role created.
        return Plan(master_services=tuple(_absent(name) for name in stale), submission=_files(inputs, [], None, None))

    if inputs.mode != "relay_server":
        raise RelayPlanError(
            "relay_submission_users", "needs relay_mode relay_server: a %s listens on loopback only" % inputs.mode
        )
    cert = _host_path("relay_tls_server_cert", settings["relay_tls_server_cert"])
    key = _host_path("relay_tls_server_key", settings["relay_tls_server_key"])
    accounts = _users(users)

    path, table = inputs.indexed_map("submission_senders")
    files = _files(inputs, accounts, cert, key)
    protocols = tls_protocols(SERVER_MINIMUM_TLS, tls_syntax(inputs.facts)).replace(" ", "")
    options = _options(files, cert, key, table, protocols)
    services = [_service(port, dict(options, syslog_name=SYSLOG_NAME))]
    if wrapper_port is not None:
        wrapper_options = dict(options, syslog_name=SYSLOG_NAME_WRAPPER, smtpd_tls_wrappermode="yes")
        services.append(_service(wrapper_port, wrapper_options))
    wanted = {service["name"] for service in services}
    ports = {port: "relay_submission_port"}
    if wrapper_port is not None:
        ports[wrapper_port] = "relay_submission_tls_wrapper_port"
    for service in found:
        if not _ours(service):
            _refuse_conflict(service, ports, wanted)
        elif service["name"] not in wanted:
            services.append(_absent(service["name"]))
    return Plan(
        master_services=tuple(services),
        tables=({"path": path, "type": inputs.database_type, "entries": _sender_logins(accounts)},),
        submission=files,
    )


def _users(users):
    """[{name, login, password, senders}] validated; errors name the entry, never the password."""
    accounts = []
    seen = {}
    for index, user in enumerate(users):
        variable = "relay_submission_users[%d]" % index
        v.mapping(variable, user, USER_KEYS)
        for key in USER_KEYS:
            if user.get(key) in (None, "", []):
                raise RelayPlanError("%s.%s" % (variable, key), "required")
        name = v.text(variable + ".name", user["name"])
        problem = name_problem(name)
        if problem:
            raise RelayPlanError(variable + ".name", "%r %s" % (name, problem))
        account_login = login(name, REALM)
        if account_login.lower() in seen:
            raise RelayPlanError(
                variable + ".name",
                "%s is listed twice (also relay_submission_users[%d])" % (account_login, seen[account_login.lower()]),
            )
        seen[account_login.lower()] = index
        password = v.password(variable + ".password", user["password"])
        senders = v.as_list(variable + ".senders", user["senders"])
        senders = [
            v.address_pattern("%s.senders[%d]" % (variable, number), sender).lower()
            for number, sender in enumerate(senders)
        ]
        accounts.append({"name": name, "login": account_login, "password": password, "senders": senders})
    return accounts


def _sender_logins(accounts):
    """smtpd_sender_login_maps: each address or @domain -> the logins that may send as it."""
    owners = {}
    for account in accounts:
        for sender in account["senders"]:
            owners.setdefault(sender, [])
            if account["login"] not in owners[sender]:
                owners[sender].append(account["login"])
    return [{"key": sender, "value": ", ".join(logins)} for sender, logins in sorted(owners.items())]


def _files(inputs, accounts, cert, key):
    directory = inputs.path("submission")
    return {
        "directory": directory,
        "sasldb": directory + "/sasldb2",
        "config_file": directory + "/smtpd.conf",
        "realm": REALM,
        "users": [{"name": account["name"], "password": account["password"]} for account in accounts],
        "tls_cert": cert,
        "tls_key": key,
    }


def _options(files, cert, key, table, protocols):
    """The service's -o overrides: TLS required before AUTH, SASL users only, each sending as its own addresses."""
    return {
        "smtpd_tls_security_level": "encrypt",
        "smtpd_tls_auth_only": "yes",
        "smtpd_tls_cert_file": cert,
        "smtpd_tls_key_file": key,
        "smtpd_tls_mandatory_protocols": protocols,
        "smtpd_tls_protocols": protocols,
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "cyrus",
        "smtpd_sasl_path": "smtpd",
        "cyrus_sasl_config_path": files["directory"],
        "smtpd_sasl_local_domain": REALM,
        "smtpd_sasl_security_options": "noanonymous",
        "smtpd_sasl_tls_security_options": "noanonymous",
        "smtpd_sender_login_maps": table,
        "smtpd_client_restrictions": "permit_sasl_authenticated,reject",
        "smtpd_sender_restrictions": "reject_sender_login_mismatch",
        "smtpd_relay_restrictions": "permit_sasl_authenticated,reject",
        "smtpd_recipient_restrictions": "permit_sasl_authenticated,reject",
    }


def _service(port, options):
    # Unchrooted (chroot n): libsasl2 opens the sasldb on every login, and inside Debian's chroot
    # /var/spool/postfix the configured path would name another file.
    return {
        "name": str(port),
        "type": "inet",
        "private": "n",
        "unpriv": "-",
        "chroot": "n",
        "wakeup": "-",
        "maxproc": "-",
        "command": "smtpd",
        "state": "present",
        "exclusive_options": True,
        "options": options,
    }


def _absent(name):
    return {"name": name, "type": "inet", "state": "absent"}


def _host_path(variable, value):
    if value in (None, ""):
        raise RelayPlanError(variable, "required with relay_submission_users: the submission service offers TLS only")
    value = v.text(variable, value)
    if not value.startswith("/"):
        raise RelayPlanError(variable, "must be an absolute path on the host")
    if any(char.isspace() for char in value):
        raise RelayPlanError(variable, "must not contain whitespace (it becomes a master.cf -o value)")
    return value


def _inet_services(facts):
    """The master.cf inet services postfix_info found: [{name, syslog_name}] (none before Postfix is installed)."""
    found = facts.get("inet_services") or []
    return [service for service in found if isinstance(service, dict) and service.get("name")]


def _ours(service):
    return str(service.get("syslog_name") or "") in (SYSLOG_NAME, SYSLOG_NAME_WRAPPER)


def service_port(name):
    """The port a master.cf inet service name listens on ([host:]port or a service name), or None."""
    port = str(name).rsplit(":", 1)[-1]
    if port.isdigit():
        return int(port)
    return SERVICE_PORTS.get(port)


def _refuse_conflict(service, ports, wanted):
    """A service the role did not create that listens where a submission service would: stop before any change."""
    port = service_port(service["name"])
    if service["name"] in wanted or port in ports:
        variable = ports.get(port, "relay_submission_port")
        raise RelayPlanError(
            variable,
            "master.cf already has the service %s listening on port %s; remove it or choose "
            "another port (the role manages only the submission services it created)" % (service["name"], port),
        )
