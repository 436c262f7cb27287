# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Authenticated submission in the plan: the service's overrides, the sender login map, the users
the sasldb gets, what stays as it was on port 25, and every validation error.

The expected overrides are written out from Postfix's documentation (SASL_README, TLS_README,
postconf(5)), not computed from the section, so a weakened restriction fails here.
"""

from __future__ import annotations

import copy
import subprocess

import pytest

from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import RelayPlanError, relay_plan
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.submission import service_port
from ansible_collections.smarthost.postfix.tests.unit.plugins.plugin_utils.relay_plan.test_relay_plan import (
    DEBIAN,
    PASSWORD,
    PRESETS,
    REDHAT,
    settings,
)
from ansible_collections.smarthost.postfix.tests.unit.plugins.plugin_utils.relay_plan.test_relay_plan import (
    debian_facts as _debian_facts,
)
from ansible_collections.smarthost.postfix.tests.unit.plugins.plugin_utils.relay_plan.test_relay_plan import (
    redhat_facts as _redhat_facts,
)

APP_PASSWORD = "app-Secret/with+symbols=="
CRM_PASSWORD = "crm secret with spaces inside"
USERS = [
    {"name": "billing-app", "password": APP_PASSWORD, "senders": ["billing@example.com", "Invoices@Example.com"]},
    {"name": "crm@example.org", "password": CRM_PASSWORD, "senders": ["@example.org", "billing@example.com"]},
]
CERT = "/etc/ssl/certs/relay.example.com.pem"
KEY = "/etc/ssl/private/relay.example.com.key"
RELAY = dict(
    relay_provider="sendgrid",
    relay_password=PASSWORD,
    relay_mode="relay_server",
    relay_mynetworks=["10.0.0.0/8"],
    relay_sender_domain="example.com",
)
SUBMISSION = dict(RELAY, relay_submission_users=USERS, relay_tls_server_cert=CERT, relay_tls_server_key=KEY)

# What Postfix's SASL_README and TLS_README give a submission service, and this role's choices:
# TLS before anything (encrypt), AUTH only over TLS, TLS 1.2 or later, no anonymous login, SASL
# users only, each sending as its own senders.
EXPECTED_OPTIONS = {
    "smtpd_tls_security_level": "encrypt",
    "smtpd_tls_auth_only": "yes",
    "smtpd_tls_cert_file": CERT,
    "smtpd_tls_key_file": KEY,
    "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
    "smtpd_tls_protocols": ">=TLSv1.2",
    "smtpd_sasl_auth_enable": "yes",
    "smtpd_sasl_type": "cyrus",
    "smtpd_sasl_path": "smtpd",
    "cyrus_sasl_config_path": "/etc/postfix/submission",
    "smtpd_sasl_local_domain": "submission",
    "smtpd_sasl_security_options": "noanonymous",
    "smtpd_sasl_tls_security_options": "noanonymous",
    "smtpd_sender_login_maps": "hash:/etc/postfix/submission_senders",
    "smtpd_client_restrictions": "permit_sasl_authenticated,reject",
    "smtpd_sender_restrictions": "reject_sender_login_mismatch",
    "smtpd_relay_restrictions": "permit_sasl_authenticated,reject",
    "smtpd_recipient_restrictions": "permit_sasl_authenticated,reject",
    "syslog_name": "postfix/smarthost-submission",
}


def debian_facts(**overrides):
    return _debian_facts(**dict({"submission_packages": DEBIAN["submission_packages"]}, **overrides))


def redhat_facts(**overrides):
    return _redhat_facts(**dict({"submission_packages": REDHAT["submission_packages"]}, **overrides))


def plan(facts=None, **overrides):
    return relay_plan(settings(**copy.deepcopy(overrides)), PRESETS, debian_facts() if facts is None else facts)


def services(result, name=None):
    found = {service["name"]: service for service in result["master_services"] if service["type"] == "inet"}
    return found if name is None else found.get(name)


def senders_table(result):
    matches = [item for item in result["tables"] if item["path"] == "/etc/postfix/submission_senders"]
    assert len(matches) <= 1
    return None if not matches else {entry["key"]: entry["value"] for entry in matches[0]["entries"]}


def test_without_users_there_is_no_submission_at_all():
    result = plan(**RELAY)
    assert result["submission"] is None
    assert services(result) == {}
    assert senders_table(result) is None
    assert "sasl2-bin" not in result["packages"]


def test_the_submission_service_takes_sasl_users_over_tls_only():
    result = plan(**SUBMISSION)
    service = services(result, "587")
    assert {key: service[key] for key in ("type", "private", "chroot", "command", "state", "exclusive_options")} == {
        "type": "inet",
        "private": "n",
        "chroot": "n",
        "command": "smtpd",
        "state": "present",
        "exclusive_options": True,
    }
    assert service["options"] == EXPECTED_OPTIONS
    # Nothing but a SASL login passes, and no option value has whitespace (postconf -P refuses it).
    for name in ("smtpd_client_restrictions", "smtpd_relay_restrictions", "smtpd_recipient_restrictions"):
        assert service["options"][name].split(",") == ["permit_sasl_authenticated", "reject"]
    assert not any(" " in str(value) for value in service["options"].values())
    assert set(services(result)) == {"587"}


def test_port_25_keeps_its_mynetworks_only_rules():
    with_submission, without = plan(**SUBMISSION), plan(**RELAY)
    assert with_submission["main_cf"] == without["main_cf"]
    main_cf = with_submission["main_cf"]
    assert main_cf["smtpd_client_restrictions"] == "permit_mynetworks, reject"
    assert main_cf["smtpd_relay_restrictions"] == "permit_mynetworks, reject_unauth_destination"
    assert not any(name.startswith("smtpd_sasl") or name == "smtpd_sender_login_maps" for name in main_cf)


def test_the_users_and_files_the_sasldb_module_gets():
    result = plan(**SUBMISSION)
    assert result["submission"] == {
        "directory": "/etc/postfix/submission",
        "sasldb": "/etc/postfix/submission/sasldb2",
        "config_file": "/etc/postfix/submission/smtpd.conf",
        "realm": "submission",
        "users": [
            {"name": "billing-app", "password": APP_PASSWORD},
            {"name": "crm@example.org", "password": CRM_PASSWORD},
        ],
        "tls_cert": CERT,
        "tls_key": KEY,
    }
    assert result["packages"] == ["postfix", "libsasl2-modules", "ca-certificates", "sasl2-bin"]


def test_each_sender_names_the_logins_that_own_it():
    assert senders_table(plan(**SUBMISSION)) == {
        # A name without @ is the login name@submission (smtpd_sasl_local_domain); keys are lower case.
        "billing@example.com": "billing-app@submission, crm@example.org",
        "invoices@example.com": "billing-app@submission",
        "@example.org": "crm@example.org",
    }


def test_the_implicit_tls_port_is_a_second_service_with_wrapper_mode():
    result = plan(relay_submission_tls_wrapper_port=465, **SUBMISSION)
    assert set(services(result)) == {"587", "465"}
    wrapper = services(result, "465")["options"]
    assert wrapper == dict(EXPECTED_OPTIONS, smtpd_tls_wrappermode="yes", syslog_name="postfix/smarthost-submissions")


def test_another_port_and_map_type_and_the_legacy_tls_syntax():
    facts = redhat_facts(default_database_type="lmdb")
    result = plan(facts, relay_submission_port=2587, **SUBMISSION)
    options = services(result, "2587")["options"]
    assert options["smtpd_tls_mandatory_protocols"] == "!SSLv2,!SSLv3,!TLSv1,!TLSv1.1"
    assert options["smtpd_sender_login_maps"] == "lmdb:/etc/postfix/submission_senders"
    assert "cyrus-sasl" in result["packages"] and "postfix-lmdb" in result["packages"]


def test_services_the_role_created_and_no_longer_wants_are_removed():
    facts = debian_facts(
        inet_services=[
            {"name": "smtp", "syslog_name": None},
            {"name": "2587", "syslog_name": "postfix/smarthost-submission"},
            {"name": "465", "syslog_name": "postfix/smarthost-submissions"},
            {"name": "587", "syslog_name": "postfix/smarthost-submission"},
        ]
    )
    result = plan(facts, **SUBMISSION)
    assert services(result, "587")["state"] == "present"
    assert services(result, "2587") == {"name": "2587", "type": "inet", "state": "absent"}
    assert services(result, "465") == {"name": "465", "type": "inet", "state": "absent"}
    assert "smtp" not in services(result)


def test_turning_submission_off_removes_its_services_and_users():
    facts = debian_facts(
        inet_services=[
            {"name": "smtp", "syslog_name": None},
            {"name": "587", "syslog_name": "postfix/smarthost-submission"},
        ]
    )
    result = plan(facts, **RELAY)
    assert services(result) == {"587": {"name": "587", "type": "inet", "state": "absent"}}
    assert result["submission"]["users"] == [] and result["submission"]["sasldb"] == "/etc/postfix/submission/sasldb2"
    # Removing needs no Cyrus tools.
    assert "sasl2-bin" not in result["packages"]


@pytest.mark.parametrize(
    "found, variable",
    [
        ({"name": "submission", "syslog_name": "postfix/submission"}, "relay_submission_port"),
        ({"name": "587", "syslog_name": None}, "relay_submission_port"),
        ({"name": "127.0.0.1:587", "syslog_name": None}, "relay_submission_port"),
        ({"name": "smtps", "syslog_name": "postfix/smtps"}, "relay_submission_tls_wrapper_port"),
        ({"name": "submissions", "syslog_name": None}, "relay_submission_tls_wrapper_port"),
    ],
)
def test_a_port_another_service_holds_is_refused_before_any_change(found, variable):
    facts = debian_facts(inet_services=[{"name": "smtp", "syslog_name": None}, found])
    with pytest.raises(RelayPlanError) as error:
        plan(facts, relay_submission_tls_wrapper_port=465, **SUBMISSION)
    assert error.value.variable == variable
    assert "already has the service %s" % found["name"] in str(error.value)


def test_services_on_other_ports_are_left_alone():
    facts = debian_facts(
        inet_services=[
            {"name": "smtp", "syslog_name": None},
            {"name": "dovecot", "syslog_name": None},
            {"name": "10025", "syslog_name": "postfix/content-filter"},
        ]
    )
    result = plan(facts, **SUBMISSION)
    assert set(services(result)) == {"587"}


@pytest.mark.parametrize(
    "name, port",
    [
        ("submission", 587),
        ("587", 587),
        ("[::1]:587", 587),
        ("0.0.0.0:465", 465),
        ("smtps", 465),
        ("smtp", 25),
        ("dovecot", None),
    ],
)
def test_service_ports(name, port):
    assert service_port(name) == port


def _user(**overrides):
    user = {"name": "app", "password": APP_PASSWORD, "senders": ["app@example.com"]}
    user.update(overrides)
    return user


ERRORS = [
    (
        dict(
            RELAY,
            relay_mode="null_client",
            relay_mynetworks=[],
            relay_submission_users=[_user()],
            relay_tls_server_cert=CERT,
            relay_tls_server_key=KEY,
        ),
        "relay_submission_users",
        "needs relay_mode relay_server",
    ),
    (dict(SUBMISSION, relay_tls_server_cert=None), "relay_tls_server_cert", "required with relay_submission_users"),
    (dict(SUBMISSION, relay_tls_server_key=None), "relay_tls_server_key", "required with relay_submission_users"),
    (dict(SUBMISSION, relay_tls_server_key="private/relay.key"), "relay_tls_server_key", "absolute path"),
    (dict(SUBMISSION, relay_tls_server_cert="/etc/ssl/my cert.pem"), "relay_tls_server_cert", "whitespace"),
    (dict(SUBMISSION, relay_submission_port=25), "relay_submission_port", "port 25 is the relay's own smtpd"),
    (dict(SUBMISSION, relay_submission_port=0), "relay_submission_port", "out of range"),
    (dict(SUBMISSION, relay_submission_port=65536), "relay_submission_port", "out of range"),
    (dict(SUBMISSION, relay_submission_port="587x"), "relay_submission_port", "whole number"),
    (dict(SUBMISSION, relay_submission_tls_wrapper_port=25), "relay_submission_tls_wrapper_port", "port 25"),
    (dict(SUBMISSION, relay_submission_tls_wrapper_port=587), "relay_submission_tls_wrapper_port", "must differ"),
    (dict(RELAY, relay_submission_port=25), "relay_submission_port", "port 25"),
    (dict(SUBMISSION, relay_submission_users="app"), "relay_submission_users", "must be a list"),
    (dict(SUBMISSION, relay_submission_users=["app"]), "relay_submission_users[0]", "must be a dictionary"),
    (
        dict(SUBMISSION, relay_submission_users=[_user(sender=["a@example.com"])]),
        "relay_submission_users[0]",
        "unknown key(s) sender",
    ),
    (dict(SUBMISSION, relay_submission_users=[_user(name=None)]), "relay_submission_users[0].name", "required"),
    (dict(SUBMISSION, relay_submission_users=[_user(name="app one")]), "relay_submission_users[0].name", "letters"),
    (dict(SUBMISSION, relay_submission_users=[_user(name="app:x")]), "relay_submission_users[0].name", "letters"),
    (dict(SUBMISSION, relay_submission_users=[_user(name="app@")]), "relay_submission_users[0].name", "domain"),
    (
        dict(SUBMISSION, relay_submission_users=[_user(), _user(name="APP")]),
        "relay_submission_users[1].name",
        "APP@submission is listed twice",
    ),
    (
        dict(SUBMISSION, relay_submission_users=[_user(), _user(name="app@submission")]),
        "relay_submission_users[1].name",
        "listed twice (also relay_submission_users[0])",
    ),
    (dict(SUBMISSION, relay_submission_users=[_user(password=None)]), "relay_submission_users[0].password", "required"),
    (
        dict(SUBMISSION, relay_submission_users=[_user(password=APP_PASSWORD + "\n")]),
        "relay_submission_users[0].password",
        "line break",
    ),
    (
        dict(SUBMISSION, relay_submission_users=[_user(password=" " + APP_PASSWORD)]),
        "relay_submission_users[0].password",
        "whitespace",
    ),
    (
        dict(SUBMISSION, relay_submission_users=[_user(password=12345678)]),
        "relay_submission_users[0].password",
        "must be a string",
    ),
    (dict(SUBMISSION, relay_submission_users=[_user(senders=[])]), "relay_submission_users[0].senders", "required"),
    (
        dict(SUBMISSION, relay_submission_users=[_user(senders="app@example.com")]),
        "relay_submission_users[0].senders",
        "must be a list",
    ),
    (
        dict(SUBMISSION, relay_submission_users=[_user(senders=["app@example.com", "app"])]),
        "relay_submission_users[0].senders[1]",
        "not an address",
    ),
    (
        dict(SUBMISSION, relay_submission_users=[_user(senders=["app@exa mple.com"])]),
        "relay_submission_users[0].senders[0]",
        "whitespace",
    ),
]


@pytest.mark.parametrize("overrides, variable, text", ERRORS)
def test_bad_submission_settings_are_refused_naming_the_variable(overrides, variable, text):
    with pytest.raises(RelayPlanError) as error:
        plan(**overrides)
    assert error.value.variable == variable, str(error.value)
    assert text in str(error.value)
    assert APP_PASSWORD not in str(error.value) and CRM_PASSWORD not in str(error.value)


def test_postfix_takes_the_service_and_the_map_as_planned(run_module, postfix_dir):
    """The real postconf writes every override as planned, postfix check accepts it, and
    postmap finds each sender's owners; a second run changes nothing."""
    result = plan(
        debian_facts(inet_services=[{"name": "smtp", "syslog_name": None}]),
        relay_config_dir=str(postfix_dir),
        relay_submission_tls_wrapper_port=465,
        **SUBMISSION,
    )
    args = dict(config_dir=str(postfix_dir), parameters={}, services=result["master_services"], tables=result["tables"])
    first = run_module("postfix_config", args)
    assert first["changed"] and first["checked"], first
    assert {"465/inet", "587/inet"} <= set(first["changed_services"])
    listed = subprocess.run(
        ["postconf", "-c", str(postfix_dir), "-P"], stdout=subprocess.PIPE, text=True, check=True
    ).stdout
    written = dict(line.split(" = ", 1) for line in listed.splitlines() if line.startswith("587/inet/"))
    expected = dict(
        EXPECTED_OPTIONS,
        cyrus_sasl_config_path=str(postfix_dir) + "/submission",
        smtpd_sender_login_maps="hash:%s/submission_senders" % postfix_dir,
    )
    assert written == {"587/inet/%s" % name: value for name, value in expected.items()}
    entry = subprocess.run(
        ["postconf", "-c", str(postfix_dir), "-M", "587/inet"], stdout=subprocess.PIPE, text=True, check=True
    ).stdout.split()
    assert entry[:7] == ["587", "inet", "n", "-", "n", "-", "-"] and entry[7] == "smtpd"
    table = "hash:%s/submission_senders" % postfix_dir
    assert lookup(postfix_dir, table, "billing@example.com") == "billing-app@submission, crm@example.org"
    assert lookup(postfix_dir, table, "@example.org") == "crm@example.org"
    assert run_module("postfix_config", args)["changed"] is False


def lookup(config_dir, table, key):
    return subprocess.run(
        ["postmap", "-c", str(config_dir), "-q", key, table], stdout=subprocess.PIPE, text=True, check=False
    ).stdout.strip()
