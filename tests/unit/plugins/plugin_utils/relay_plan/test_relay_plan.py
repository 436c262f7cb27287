# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The relay plan, exhaustively: every preset, both modes, TLS, routes, and every validation error.

Expected values are written out from what each provider and Postfix document, not computed from
the presets, so a wrong endpoint, port or user name rule in roles/relay/vars/presets.yml fails here.
"""

from __future__ import annotations

import fractions
import math
import os

import pytest
import yaml

from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import RelayPlanError, relay_plan
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.limits import pacing_design, pacing_weights
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.tls import tls_protocols

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", ".."))

with open(os.path.join(ROOT, "roles", "relay", "vars", "presets.yml")) as _handle:
    PRESETS = yaml.safe_load(_handle)["__relay_presets"]
with open(os.path.join(ROOT, "roles", "relay", "vars", "main.yml")) as _handle:
    OS_FAMILIES = yaml.safe_load(_handle)["__relay_os_families"]
DEBIAN, REDHAT = OS_FAMILIES["Debian"], OS_FAMILIES["RedHat"]
with open(os.path.join(ROOT, "roles", "relay", "defaults", "main.yml")) as _handle:
    DEFAULTS = yaml.safe_load(_handle)

DEBIAN_CA = "/etc/ssl/certs/ca-certificates.crt"
REDHAT_CA = "/etc/pki/tls/certs/ca-bundle.crt"
PASSWORD = "s3cret-Password/with+symbols=="
FINGERPRINT = "3D:95:34:51:24:66:33:B9:D2:40:99:C0:C1:3D:95:34:51:24:66:33:B9:D2:40:99:C0:C1:3D:95:34:51:24:66"


def debian_facts(**overrides):
    facts = {
        "os_family": "Debian",
        "postfix_version": "3.7.11",
        "default_database_type": "hash",
        "tls_min_version_syntax": "modern",
        "ca_file": DEBIAN["ca_file"],
        "packages": DEBIAN["packages"],
        "map_type_packages": DEBIAN["map_type_packages"],
        "oauth2_packages": DEBIAN["oauth2_packages"],
        "domain": "example.com",
        "fqdn": "web1.example.com",
    }
    facts.update(overrides)
    return facts


def redhat_facts(**overrides):
    facts = debian_facts(
        os_family="RedHat",
        postfix_version="3.5.9",
        tls_min_version_syntax="legacy",
        ca_file=REDHAT["ca_file"],
        packages=REDHAT["packages"],
        map_type_packages=REDHAT["map_type_packages"],
        oauth2_packages=REDHAT["oauth2_packages"],
    )
    facts.update(overrides)
    return facts


def settings(**overrides):
    """The role's defaults plus the given variables, as the role passes them."""
    values = dict(DEFAULTS)
    values.update(overrides)
    return values


def plan(facts=None, **overrides):
    return relay_plan(settings(**overrides), PRESETS, debian_facts() if facts is None else facts)


def sasl(result):
    return dict((entry["key"], (entry["username"], entry["password"])) for entry in result["sasl_map"]["entries"])


def table(result, name):
    matches = [item for item in result["tables"] if os.path.basename(item["path"]) == name]
    assert len(matches) <= 1
    return matches[0] if matches else None


def table_dict(result, name):
    found = table(result, name)
    return None if found is None else dict((entry["key"], entry["value"]) for entry in found["entries"])


# ---------------------------------------------------------------- every preset

# provider -> (variables, relayhost, SASL user name, wrapper mode, rate delay, concurrency, recipient limit)
PRESET_CASES = {
    "ses": (
        dict(relay_ses_region="eu-west-1", relay_username="AKIAEXAMPLE"),
        "[email-smtp.eu-west-1.amazonaws.com]:587",
        "AKIAEXAMPLE",
        "no",
        "1s",
        None,
        "50",
    ),
    "sendgrid": (dict(), "[smtp.sendgrid.net]:587", "apikey", "no", None, None, "1000"),
    "mailgun": (
        dict(relay_username="postmaster@mg.example.com"),
        "[smtp.mailgun.org]:587",
        "postmaster@mg.example.com",
        "no",
        None,
        None,
        "1000",
    ),
    "office365": (
        dict(relay_username="relay@contoso.com"),
        "[smtp.office365.com]:587",
        "relay@contoso.com",
        "no",
        "2s",
        "3",
        "500",
    ),
    "gmail": (
        dict(relay_username="someone@gmail.com"),
        "[smtp.gmail.com]:587",
        "someone@gmail.com",
        "no",
        # A daily quota is not a rate: no pacing (the 550 5.4.5 daily-limit reply is deferred instead).
        None,
        None,
        "100",
    ),
    "google_workspace_relay": (
        dict(relay_username="relay@workspace.example.com"),
        "[smtp-relay.gmail.com]:587",
        "relay@workspace.example.com",
        "no",
        None,
        None,
        None,
    ),
    "brevo": (
        dict(relay_username="8a1b2c001@smtp-brevo.com"),
        "[smtp-relay.brevo.com]:587",
        "8a1b2c001@smtp-brevo.com",
        "no",
        None,
        None,
        None,
    ),
    "smtp2go": (dict(relay_username="app-user"), "[mail.smtp2go.com]:587", "app-user", "no", None, None, None),
    "postmark": (dict(), "[smtp.postmarkapp.com]:587", PASSWORD, "no", None, None, "50"),
    "custom": (
        dict(relay_host="mail.example.net", relay_username="relay-user"),
        "[mail.example.net]:587",
        "relay-user",
        "no",
        None,
        None,
        None,
    ),
}


def test_every_preset_has_a_case():
    # The connector takes no SASL login: its cases are under "auth modes" below.
    assert sorted(PRESET_CASES) == sorted(set(PRESETS) - {"office365_connector"})


@pytest.mark.parametrize("provider", sorted(PRESET_CASES))
def test_preset_main_cf(provider):
    variables, relayhost, username, wrapper, delay, concurrency, recipients = PRESET_CASES[provider]
    result = plan(relay_provider=provider, relay_password=PASSWORD, **variables)
    main_cf = result["main_cf"]

    assert result["provider"] == provider
    assert result["relayhost"] == relayhost
    assert main_cf["relayhost"] == relayhost
    # The SASL key is byte-identical to relayhost, or Postfix never finds the login.
    assert sasl(result) == {relayhost: (username, PASSWORD)}
    assert (result["sasl_map"]["path"], result["sasl_map"]["type"]) == ("/etc/postfix/sasl_passwd", "hash")
    assert main_cf["smtp_sasl_password_maps"] == "hash:/etc/postfix/sasl_passwd"
    assert main_cf["smtp_sasl_auth_enable"] == "yes"
    assert main_cf["smtp_sasl_security_options"] == "noanonymous"
    assert main_cf["smtp_sasl_tls_security_options"] == "noanonymous"
    assert main_cf["smtp_tls_security_level"] == "secure"
    assert main_cf["smtp_tls_CAfile"] == DEBIAN_CA
    assert main_cf["smtp_tls_wrappermode"] == wrapper
    assert main_cf["smtp_tls_mandatory_protocols"] == ">=TLSv1.2"
    assert main_cf["smtp_tls_protocols"] == ">=TLSv1.2"
    assert main_cf["smtp_destination_rate_delay"] == delay
    assert main_cf["smtp_destination_concurrency_limit"] == concurrency
    assert main_cf["smtp_destination_recipient_limit"] == recipients
    assert result["packages"] == ["postfix", "libsasl2-modules", "ca-certificates"]


@pytest.mark.parametrize(
    "provider, port, wrapper",
    [
        ("ses", 465, "yes"),
        ("ses", 2465, "yes"),
        ("ses", 2587, "no"),
        ("ses", 25, "no"),
        ("sendgrid", 465, "yes"),
        ("sendgrid", 2525, "no"),
        ("gmail", 465, "yes"),
        ("smtp2go", 8465, "yes"),
        ("smtp2go", 2525, "no"),
        ("custom", 465, "yes"),
        ("custom", 25, "no"),
    ],
)
def test_port_decides_wrapper_mode(provider, port, wrapper):
    extra = {"relay_ses_region": "us-east-1"} if provider == "ses" else {}
    if provider == "custom":
        extra["relay_host"] = "relay.example.com"
    if provider != "sendgrid":
        extra["relay_username"] = "u"
    result = plan(relay_provider=provider, relay_port=port, relay_password=PASSWORD, **extra)
    if provider == "sendgrid":
        assert sasl(result)[result["relayhost"]][0] == "apikey"
    assert result["relayhost"].endswith("]:%d" % port)
    assert result["main_cf"]["smtp_tls_wrappermode"] == wrapper
    # Wrapper mode still verifies the certificate.
    assert result["main_cf"]["smtp_tls_security_level"] == "secure"


def test_explicit_wrapper_mode_wins_over_port():
    result = plan(relay_provider="custom", relay_host="relay.example.com", relay_port=10465, relay_tls_wrappermode=True)
    assert result["main_cf"]["smtp_tls_wrappermode"] == "yes"
    result = plan(relay_provider="custom", relay_host="relay.example.com", relay_port=465, relay_tls_wrappermode=False)
    assert result["main_cf"]["smtp_tls_wrappermode"] == "no"


def test_port_given_as_text_is_accepted():
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_port="465")
    assert result["relayhost"] == "[smtp.sendgrid.net]:465"


@pytest.mark.parametrize(
    "region, host",
    [
        ("us-east-1", "email-smtp.us-east-1.amazonaws.com"),
        ("eu-central-1", "email-smtp.eu-central-1.amazonaws.com"),
        ("ap-southeast-2", "email-smtp.ap-southeast-2.amazonaws.com"),
        ("us-gov-west-1", "email-smtp.us-gov-west-1.amazonaws.com"),
    ],
)
def test_ses_endpoint_follows_the_region(region, host):
    result = plan(relay_provider="ses", relay_ses_region=region, relay_username="AKIA", relay_password=PASSWORD)
    assert result["relayhost"] == "[%s]:587" % host


def test_ses_host_override_needs_no_region():
    result = plan(
        relay_provider="ses",
        relay_host="vpce-1.email-smtp.us-east-1.vpce.amazonaws.com",
        relay_username="AKIA",
        relay_password=PASSWORD,
    )
    assert result["relayhost"] == "[vpce-1.email-smtp.us-east-1.vpce.amazonaws.com]:587"


@pytest.mark.parametrize("region, host", [("us", "smtp.mailgun.org"), ("eu", "smtp.eu.mailgun.org")])
def test_mailgun_regions(region, host):
    result = plan(
        relay_provider="mailgun",
        relay_mailgun_region=region,
        relay_username="postmaster@mg.example.com",
        relay_password=PASSWORD,
    )
    assert result["relayhost"] == "[%s]:587" % host


def test_mailgun_defaults_to_us_when_region_unset():
    result = plan(
        relay_provider="mailgun", relay_mailgun_region=None, relay_username="p@mg.example.com", relay_password=PASSWORD
    )
    assert result["relayhost"] == "[smtp.mailgun.org]:587"


def test_postmark_smtp_token_access_key_as_username():
    result = plan(relay_provider="postmark", relay_username="access-key-1", relay_password=PASSWORD)
    assert sasl(result) == {"[smtp.postmarkapp.com]:587": ("access-key-1", PASSWORD)}


def test_sendgrid_accepts_the_literal_apikey_username():
    result = plan(relay_provider="sendgrid", relay_username="apikey", relay_password=PASSWORD)
    assert sasl(result) == {"[smtp.sendgrid.net]:587": ("apikey", PASSWORD)}


@pytest.mark.parametrize(
    "provider, extra",
    [
        ("google_workspace_relay", {}),
        ("custom", {"relay_host": "10.1.2.3"}),
    ],
)
def test_ip_authenticated_relays_need_no_credentials(provider, extra):
    result = plan(relay_provider=provider, **extra)
    assert result["sasl_map"]["entries"] == []
    assert result["main_cf"]["smtp_sasl_auth_enable"] == "no"
    # The map is still referenced (and empty), so a later login needs no other change.
    assert result["main_cf"]["smtp_sasl_password_maps"] == "hash:/etc/postfix/sasl_passwd"


def test_custom_relay_by_ipv4_address():
    result = plan(relay_provider="custom", relay_host="192.0.2.10", relay_port=25)
    assert result["relayhost"] == "[192.0.2.10]:25"


# ---------------------------------------------------------------- host facts


def test_redhat_family_packages_ca_bundle_and_legacy_tls_syntax():
    result = plan(facts=redhat_facts(), relay_provider="sendgrid", relay_password=PASSWORD)
    assert result["packages"] == ["postfix", "cyrus-sasl-plain", "ca-certificates"]
    assert result["main_cf"]["smtp_tls_CAfile"] == REDHAT_CA
    assert result["main_cf"]["smtp_tls_mandatory_protocols"] == "!SSLv2, !SSLv3, !TLSv1, !TLSv1.1"
    assert result["main_cf"]["smtp_tls_protocols"] == "!SSLv2, !SSLv3, !TLSv1, !TLSv1.1"


@pytest.mark.parametrize(
    "version, expected",
    [
        ("3.5.9", "!SSLv2, !SSLv3, !TLSv1, !TLSv1.1"),
        ("3.6.4", ">=TLSv1.2"),
        ("3.10.2", ">=TLSv1.2"),
        (None, "!SSLv2, !SSLv3, !TLSv1, !TLSv1.1"),
    ],
)
def test_tls_syntax_from_version_when_postfix_info_gave_none(version, expected):
    facts = debian_facts(postfix_version=version, tls_min_version_syntax=None)
    result = plan(facts=facts, relay_provider="sendgrid", relay_password=PASSWORD)
    assert result["main_cf"]["smtp_tls_mandatory_protocols"] == expected


def test_tls_syntax_from_postfix_info_wins():
    facts = debian_facts(postfix_version="3.7.11", tls_min_version_syntax="legacy")
    result = plan(facts=facts, relay_provider="sendgrid", relay_password=PASSWORD)
    assert result["main_cf"]["smtp_tls_mandatory_protocols"] == "!SSLv2, !SSLv3, !TLSv1, !TLSv1.1"


@pytest.mark.parametrize(
    "syntax, expected",
    [
        ("modern", ">=TLSv1.3"),
        ("legacy", "!SSLv2, !SSLv3, !TLSv1, !TLSv1.1, !TLSv1.2"),
    ],
)
def test_minimum_tls_1_3(syntax, expected):
    result = plan(
        facts=debian_facts(tls_min_version_syntax=syntax),
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_tls_min_version="TLSv1.3",
    )
    assert result["main_cf"]["smtp_tls_mandatory_protocols"] == expected
    assert tls_protocols("TLSv1.3", syntax) == expected


@pytest.mark.parametrize(
    "facts, setting, expected_type, extra_package",
    [
        (debian_facts(default_database_type="hash"), None, "hash", None),
        (debian_facts(default_database_type="lmdb"), None, "lmdb", "postfix-lmdb"),
        (redhat_facts(default_database_type="lmdb"), None, "lmdb", "postfix-lmdb"),
        (debian_facts(default_database_type="hash"), "lmdb", "lmdb", "postfix-lmdb"),
        (debian_facts(default_database_type="hash"), "cdb", "cdb", "postfix-cdb"),
        (debian_facts(default_database_type=None), None, "hash", None),
    ],
)
def test_database_type_from_facts_or_setting(facts, setting, expected_type, extra_package):
    result = plan(
        facts=facts,
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_database_type=setting,
        relay_domain_routes=[{"domain": "partner.example.org", "host": "mx.partner.example.org"}],
    )
    assert result["database_type"] == expected_type
    assert result["sasl_map"]["type"] == expected_type
    assert result["main_cf"]["smtp_sasl_password_maps"] == "%s:/etc/postfix/sasl_passwd" % expected_type
    assert result["main_cf"]["transport_maps"] == "%s:/etc/postfix/transport" % expected_type
    assert result["main_cf"]["smtp_generic_maps"] == "%s:/etc/postfix/generic" % expected_type
    assert all(item["type"] == expected_type for item in result["tables"])
    if extra_package:
        assert result["packages"][-1] == extra_package
    else:
        assert not any(name.startswith("postfix-") for name in result["packages"])


def test_config_dir_moves_every_table():
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_config_dir="/etc/postfix-out/")
    assert result["sasl_map"]["path"] == "/etc/postfix-out/sasl_passwd"
    assert table(result, "generic")["path"] == "/etc/postfix-out/generic"


def test_ca_file_setting_overrides_the_os_bundle():
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_tls_ca_file="/etc/ssl/private-ca.pem")
    assert result["main_cf"]["smtp_tls_CAfile"] == "/etc/ssl/private-ca.pem"


# ---------------------------------------------------------------- TLS levels


def test_encrypt_level_on_request():
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_tls_security_level="encrypt")
    assert result["main_cf"]["smtp_tls_security_level"] == "encrypt"
    assert result["main_cf"]["smtp_tls_fingerprint_cert_match"] is None


def test_fingerprint_pinning():
    lower = FINGERPRINT.replace(":", "").lower()
    result = plan(
        relay_provider="custom",
        relay_host="relay.example.com",
        relay_tls_security_level="fingerprint",
        relay_tls_fingerprints=[FINGERPRINT, lower],
    )
    main_cf = result["main_cf"]
    assert main_cf["smtp_tls_security_level"] == "fingerprint"
    assert main_cf["smtp_tls_fingerprint_digest"] == "sha256"
    assert main_cf["smtp_tls_fingerprint_cert_match"] == [FINGERPRINT, FINGERPRINT]


def test_wrapper_mode_with_encrypt_level():
    result = plan(
        relay_provider="sendgrid", relay_password=PASSWORD, relay_port=465, relay_tls_security_level="encrypt"
    )
    assert result["main_cf"]["smtp_tls_wrappermode"] == "yes"
    assert result["main_cf"]["smtp_tls_security_level"] == "encrypt"


def test_tls_connection_reuse_enables_tlsproxy():
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_tls_connection_reuse=True)
    assert result["main_cf"]["smtp_tls_connection_reuse"] == "yes"
    tlsproxy = [service for service in result["master_services"] if service["name"] == "tlsproxy"]
    assert tlsproxy == [
        {
            "name": "tlsproxy",
            "type": "unix",
            "private": "-",
            "unpriv": "-",
            "chroot": "n",
            "wakeup": "-",
            "maxproc": "0",
            "command": "tlsproxy",
            "state": "present",
        }
    ]


def test_tls_connection_reuse_by_default_and_off_on_request():
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD)
    assert result["main_cf"]["smtp_tls_connection_reuse"] == "yes"
    assert [service["name"] for service in result["master_services"]] == ["tlsproxy"]
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_tls_connection_reuse=False)
    assert result["main_cf"]["smtp_tls_connection_reuse"] is None
    assert result["master_services"] == []


# ---------------------------------------------------------------- modes


def test_null_client_defaults():
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD)
    main_cf = result["main_cf"]
    assert main_cf["inet_interfaces"] == "loopback-only"
    assert main_cf["mynetworks"] == ["127.0.0.0/8", "[::1]/128"]
    assert main_cf["mydestination"] == ""
    assert main_cf["local_transport"].startswith("error:")
    assert main_cf["smtpd_relay_restrictions"] == "permit_mynetworks, reject_unauth_destination"
    assert main_cf["smtpd_client_restrictions"] == "permit_mynetworks, reject"
    assert main_cf["myorigin"] == "example.com"
    assert main_cf["smtp_generic_maps"] == "hash:/etc/postfix/generic"
    assert main_cf["sender_canonical_maps"] is None
    assert "inet_protocols" not in main_cf
    assert "myhostname" not in main_cf
    assert table_dict(result, "generic") == {
        "@localhost": "@example.com",
        "@localhost.localdomain": "@example.com",
        "@web1.example.com": "@example.com",
    }


def test_sender_domain_setting_wins_over_host_domain():
    result = plan(
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_sender_domain="mail.example.org",
        relay_myhostname="relay1.internal.example.net",
    )
    assert result["main_cf"]["myorigin"] == "mail.example.org"
    assert result["main_cf"]["myhostname"] == "relay1.internal.example.net"
    assert table_dict(result, "generic") == {
        "@localhost": "@mail.example.org",
        "@localhost.localdomain": "@mail.example.org",
        "@relay1.internal.example.net": "@mail.example.org",
        "@web1.example.com": "@mail.example.org",
    }


def test_relay_server_mode():
    result = plan(
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_mode="relay_server",
        relay_mynetworks=["10.0.0.0/8", "192.168.10.7", "2001:db8::/32", "[2001:db8:1::]/48"],
    )
    main_cf = result["main_cf"]
    assert main_cf["inet_interfaces"] == "all"
    assert main_cf["mynetworks"] == ["10.0.0.0/8", "192.168.10.7", "[2001:db8::]/32", "[2001:db8:1::]/48"]
    # Never an open relay: only mynetworks may relay, and nobody else may even connect.
    assert main_cf["smtpd_relay_restrictions"] == "permit_mynetworks, reject_unauth_destination"
    assert main_cf["smtpd_client_restrictions"] == "permit_mynetworks, reject"
    assert main_cf["mydestination"] == ""


def test_relay_server_networks_as_a_string_and_listen_addresses():
    result = plan(
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_mode="relay_server",
        relay_mynetworks="10.0.0.0/8, 172.16.0.0/12",
        relay_inet_interfaces=["127.0.0.1", "10.0.0.5"],
        relay_inet_protocols="ipv4",
    )
    assert result["main_cf"]["mynetworks"] == ["10.0.0.0/8", "172.16.0.0/12"]
    assert result["main_cf"]["inet_interfaces"] == "127.0.0.1, 10.0.0.5"
    assert result["main_cf"]["inet_protocols"] == "ipv4"


def test_relay_server_without_a_domain_skips_the_local_rewrite():
    result = plan(
        facts=debian_facts(domain="", fqdn="relay1"),
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_mode="relay_server",
        relay_mynetworks=["10.0.0.0/8"],
    )
    assert result["main_cf"]["myorigin"] is None
    assert table(result, "generic") is None
    assert result["main_cf"]["smtp_generic_maps"] is None


def test_null_client_may_list_loopback_interfaces():
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_inet_interfaces=["127.0.0.1", "[::1]"])
    assert result["main_cf"]["inet_interfaces"] == "127.0.0.1, [::1]"


# ---------------------------------------------------------------- rewriting and headers


def test_sender_rewrites_come_first_and_keep_the_local_rewrite():
    result = plan(
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_sender_rewrites=[
            {"match": "www-data@example.com", "replace": "noreply@example.com"},
            {"match": "@localhost", "replace": "@ops.example.com"},
        ],
    )
    entries = table(result, "generic")["entries"]
    assert entries[0] == {"key": "www-data@example.com", "value": "noreply@example.com"}
    assert entries[1] == {"key": "@localhost", "value": "@ops.example.com"}
    assert [entry["key"] for entry in entries].count("@localhost") == 1


def test_sender_canonical_instead_of_generic():
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_sender_rewrite_map="sender_canonical")
    assert result["main_cf"]["sender_canonical_maps"] == "hash:/etc/postfix/sender_canonical"
    assert result["main_cf"]["smtp_generic_maps"] is None
    assert table(result, "sender_canonical")["path"] == "/etc/postfix/sender_canonical"


def test_local_rewrite_can_be_switched_off():
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_rewrite_local_addresses=False)
    assert result["main_cf"]["smtp_generic_maps"] is None
    assert result["main_cf"]["myorigin"] == "example.com"


def test_header_cleanup():
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_header_cleanup=True)
    assert result["main_cf"]["smtp_header_checks"] == "regexp:/etc/postfix/smtp_header_checks"
    found = table(result, "smtp_header_checks")
    assert found["type"] == "regexp"
    assert found["entries"] == [
        {"key": "/^Received:/", "value": "IGNORE"},
        {"key": "/^X-Originating-IP:/", "value": "IGNORE"},
        {"key": "/^X-PHP-Originating-Script:/", "value": "IGNORE"},
    ]


def test_header_cleanup_off_removes_the_parameter():
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD)
    assert result["main_cf"]["smtp_header_checks"] is None
    assert table(result, "smtp_header_checks") is None


# ---------------------------------------------------------------- routes


def test_per_sender_routing():
    result = plan(
        relay_provider="ses",
        relay_ses_region="us-east-1",
        relay_username="AKIA",
        relay_password=PASSWORD,
        relay_sender_routes=[
            {"sender": "@marketing.example.com", "provider": "sendgrid", "password": "sg-key"},
            {
                "sender": "billing@example.com",
                "host": "smtp.billing.example.net",
                "username": "billing",
                "password": "bill-pass",
            },
        ],
    )
    main_cf = result["main_cf"]
    assert main_cf["sender_dependent_relayhost_maps"] == "hash:/etc/postfix/sender_relay"
    assert main_cf["smtp_sender_dependent_authentication"] == "yes"
    assert table_dict(result, "sender_relay") == {
        "@marketing.example.com": "[smtp.sendgrid.net]:587",
        "billing@example.com": "[smtp.billing.example.net]:587",
    }
    assert sasl(result) == {
        "[email-smtp.us-east-1.amazonaws.com]:587": ("AKIA", PASSWORD),
        "@marketing.example.com": ("apikey", "sg-key"),
        "billing@example.com": ("billing", "bill-pass"),
    }


def test_per_domain_routing_with_own_transports_and_local_delivery():
    result = plan(
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_domain_routes=[
            {
                "domain": "partner.example.org",
                "provider": "mailgun",
                "mailgun_region": "eu",
                "username": "postmaster@mg.example.com",
                "password": "mg-pass",
            },
            {
                "domain": ".eu.example.com",
                "provider": "mailgun",
                "mailgun_region": "eu",
                "username": "postmaster@mg.example.com",
                "password": "mg-pass",
            },
            {
                "domain": "legacy.example.com",
                "host": "smtps.legacy.example.com",
                "port": 465,
                "username": "legacy",
                "password": "legacy-pass",
            },
            {"domain": "intranet.example.com", "action": "local"},
            {
                "domain": "lab.example.com",
                "host": "10.9.8.7",
                "port": 25,
                "tls_security_level": "may",
                "transport": "lab",
            },
        ],
    )
    assert result["main_cf"]["transport_maps"] == "hash:/etc/postfix/transport"
    assert table_dict(result, "transport") == {
        "partner.example.org": "route_smtp_eu_mailgun_org_587:[smtp.eu.mailgun.org]:587",
        ".eu.example.com": "route_smtp_eu_mailgun_org_587:[smtp.eu.mailgun.org]:587",
        "legacy.example.com": "route_smtps_legacy_example_com_465:[smtps.legacy.example.com]:465",
        "intranet.example.com": "local:",
        "lab.example.com": "lab:[10.9.8.7]:25",
    }
    services = dict((service["name"], service) for service in result["master_services"])
    assert sorted(services) == [
        "lab",
        "route_smtp_eu_mailgun_org_587",
        "route_smtps_legacy_example_com_465",
        "tlsproxy",
    ]
    del services["tlsproxy"]
    assert services["route_smtp_eu_mailgun_org_587"]["command"] == "smtp"
    assert services["route_smtp_eu_mailgun_org_587"]["options"] == {"smtp_tls_wrappermode": "no"}
    assert services["route_smtps_legacy_example_com_465"]["options"] == {"smtp_tls_wrappermode": "yes"}
    assert services["lab"]["options"] == {"smtp_tls_wrappermode": "no", "smtp_tls_security_level": "may"}
    assert all(service["exclusive_options"] for service in services.values())
    assert result["main_cf"]["mydestination"] == "intranet.example.com"
    assert sasl(result) == {
        "[smtp.sendgrid.net]:587": ("apikey", PASSWORD),
        "[smtp.eu.mailgun.org]:587": ("postmaster@mg.example.com", "mg-pass"),
        "[smtps.legacy.example.com]:465": ("legacy", "legacy-pass"),
    }


def test_local_delivery_gets_an_alias_database_of_the_host_type():
    routes = [{"domain": "intranet.example.com", "action": "local"}]
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_domain_routes=routes)
    assert result["aliases"] == {"path": "/etc/aliases", "map": "hash:/etc/aliases", "compiled": "/etc/aliases.db"}
    assert result["main_cf"]["alias_maps"] == "hash:/etc/aliases"
    assert result["main_cf"]["alias_database"] == "hash:/etc/aliases"
    lmdb = plan(
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_domain_routes=routes,
        facts=debian_facts(default_database_type="lmdb"),
    )
    assert lmdb["aliases"]["compiled"] == "/etc/aliases.lmdb"
    assert lmdb["main_cf"]["alias_maps"] == "lmdb:/etc/aliases"


def test_probe_follows_the_primary_relay_and_tls_level():
    result = plan(relay_provider="gmail", relay_username="me@example.com", relay_password=PASSWORD, relay_port=465)
    assert result["probe"] == {
        "host": "smtp.gmail.com",
        "port": 465,
        "tls": "implicit",
        "verify": True,
        "ca_file": "/etc/ssl/certs/ca-certificates.crt",
        "authenticate": True,
        "auth": "password",
        "oauth2_account": None,
    }
    assert PASSWORD not in str(result["probe"])
    encrypt = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_tls_security_level="encrypt")
    assert encrypt["probe"]["tls"] == "starttls" and encrypt["probe"]["verify"] is False


def test_no_alias_database_without_local_delivery():
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD)
    assert result["aliases"] is None
    assert "alias_maps" not in result["main_cf"]


def test_domain_routes_do_not_fall_back_to_the_fallback_relay():
    result = plan(
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_fallback={"host": "backup.example.com", "username": "b", "password": "bp"},
        relay_domain_routes=[{"domain": "b.example.org", "host": "smtp.b.example.net"}],
    )
    assert result["master_services"][0]["options"]["smtp_fallback_relay"] == ""


def test_domain_routes_never_get_a_senders_login():
    result = plan(
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_sender_routes=[
            {"sender": "@a.example.com", "host": "smtp.a.example.net", "username": "a", "password": "pa"}
        ],
        relay_domain_routes=[
            {"domain": "b.example.org", "host": "smtp.b.example.net", "username": "b", "password": "pb"}
        ],
    )
    service = result["master_services"][0]
    assert service["options"]["smtp_sender_dependent_authentication"] == "no"


def test_fallback_relay():
    result = plan(
        relay_provider="ses",
        relay_ses_region="eu-west-1",
        relay_username="AKIA",
        relay_password=PASSWORD,
        relay_fallback={"provider": "smtp2go", "username": "fallback-user", "password": "fb-pass"},
        relay_connection_cache=True,
    )
    assert result["main_cf"]["smtp_fallback_relay"] == "[mail.smtp2go.com]:587"
    assert sasl(result)["[mail.smtp2go.com]:587"] == ("fallback-user", "fb-pass")
    assert result["main_cf"]["smtp_connection_cache_destinations"] == [
        "[email-smtp.eu-west-1.amazonaws.com]:587",
        "[mail.smtp2go.com]:587",
    ]


def test_ses_sandbox_allow_list():
    result = plan(
        relay_provider="ses",
        relay_ses_region="us-east-1",
        relay_username="AKIA",
        relay_password=PASSWORD,
        relay_ses_sandbox_recipients=["ops@example.com", "verified.example.org", "@team.example.net"],
    )
    entries = table(result, "transport")["entries"]
    assert entries[:3] == [
        {"key": "ops@example.com", "value": ":"},
        {"key": "verified.example.org", "value": ":"},
        {"key": "team.example.net", "value": ":"},
    ]
    assert entries[-1]["key"] == "*"
    assert entries[-1]["value"].startswith("error:")
    assert result["main_cf"]["transport_maps"] == "hash:/etc/postfix/transport"


def test_unused_features_are_removed_from_main_cf():
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD)
    for name in (
        "sender_dependent_relayhost_maps",
        "smtp_sender_dependent_authentication",
        "smtp_fallback_relay",
        "transport_maps",
        "smtp_header_checks",
        "smtp_connection_cache_destinations",
        "smtp_tls_fingerprint_digest",
        "maximal_queue_lifetime",
    ):
        assert name in result["main_cf"] and result["main_cf"][name] is None, name
    assert [os.path.basename(item["path"]) for item in result["tables"]] == ["generic"]


# ---------------------------------------------------------------- limits and tuning


@pytest.mark.parametrize(
    "rate, delays",
    [
        # Whole seconds only (Postfix 3.7.11 stalls after one delivery with "72ms"): one clone per whole
        # message a second at 1 s, then the fraction left with the fewest slower clones that reach 95%.
        (14, (1,) * 14),
        (3.5, (1, 1, 1, 2)),
        (1, (1,)),
        (0.5, (2,)),
        (0.3, (4, 20)),
        (1.9, (1, 2, 3)),
        (13.7, (1,) * 13 + (2,)),
        (0.0058, (173,)),
        (0.023, (44,)),
    ],
)
def test_pacing_design(rate, delays):
    assert pacing_design(rate) == delays


@pytest.mark.parametrize("rate", [0.7, 0.95, 1.3, 2.2, 6.6, 9.9, 13.7, 14, 17.5, 33, 49.5, 0.3, 0.023])
def test_pacing_design_never_exceeds_and_reaches_ninety_five_percent(rate):
    exact = fractions.Fraction(repr(rate)) if isinstance(rate, float) else fractions.Fraction(rate)
    paced = sum(fractions.Fraction(1, delay) for delay in pacing_design(rate))
    assert fractions.Fraction(95, 100) * exact <= paced <= exact
    # What one tick can release at once: the clones, at most two more than the rate rounded up.
    assert len(pacing_design(rate)) <= math.ceil(rate) + 2


@pytest.mark.parametrize("delays, weights", [((1, 1, 1, 2), (2, 2, 2, 1)), ((1, 2, 3), (6, 3, 2)), ((44,), (1,))])
def test_pacing_weights_follow_speed(delays, weights):
    assert pacing_weights(delays) == weights


def ses(**overrides):
    return plan(
        relay_provider="ses", relay_ses_region="us-east-1", relay_username="AKIA", relay_password=PASSWORD, **overrides
    )


def test_a_production_ses_rate_is_paced_by_clones_of_the_smtp_transport():
    result = ses(relay_max_send_rate=14)
    main_cf = result["main_cf"]
    clones = [item for item in result["master_services"] if item["name"].startswith("smtp_pace")]
    assert [item["name"] for item in clones] == ["smtp_pace%d" % index for index in range(1, 15)]
    assert all(
        item["command"] == "smtp" and item["options"] == {"syslog_name": "postfix/%s" % item["name"]} for item in clones
    )
    # The queue manager takes the clones in turn from the pace map; each keeps one message a second.
    assert result["pace_map"] == {
        "port": 10039,
        "map": "socketmap:inet:127.0.0.1:10039:pace",
        "clones_path": "/etc/postfix/pace_clones",
        "clones": ["smtp_pace%d" % index for index in range(1, 15)],
    }
    services = {item["name"]: item for item in result["master_services"]}
    assert services["pace_rewrite"]["command"] == "trivial-rewrite"
    assert services["pace_rewrite"]["options"] == {
        "sender_dependent_default_transport_maps": ["socketmap:inet:127.0.0.1:10039:pace"],
        "syslog_name": "postfix/pace_rewrite",
    }
    # Only the queue manager asks it: smtpd and the rest resolve through main.cf, which has no pace map.
    assert services["qmgr"] == {
        "name": "qmgr",
        "type": "unix",
        "state": "present",
        "options": {"rewrite_service_name": "pace_rewrite"},
    }
    assert main_cf["sender_dependent_default_transport_maps"] is None
    assert all(main_cf["smtp_pace%d_destination_rate_delay" % index] == "1s" for index in range(1, 15))
    assert main_cf["smtp_pace7_destination_recipient_limit"] == "50"
    assert main_cf["smtp_destination_rate_delay"] is None
    assert result["pace_map_stale"] is None


def test_random_choice_is_randmap_in_main_cf_and_installs_nothing():
    result = ses(relay_max_send_rate=14, relay_pacing_chooser="random")
    assert result["main_cf"]["sender_dependent_default_transport_maps"] == "randmap:{%s}" % ", ".join(
        "smtp_pace%d" % index for index in range(1, 15)
    )
    assert result["pace_map"] is None
    assert not {"qmgr", "pace_rewrite"} & {item["name"] for item in result["master_services"]}


def test_selinux_hosts_pick_at_random_unless_told():
    """SELinux's policy has no rule for trivial-rewrite to reach the pace map's port."""
    facts = debian_facts(selinux="enforcing")
    assert ses(relay_max_send_rate=14, facts=facts)["pace_map"] is None
    assert ses(relay_max_send_rate=14, facts=facts, relay_pacing_chooser="turns")["pace_map"] is not None


def test_a_fractional_rate_and_the_sandbox_rate():
    result = ses(relay_max_send_rate=3.5)
    main_cf = result["main_cf"]
    # Three clones at 1 s and one at 2 s, which takes half as many turns: 3 or 4 a second, never 7.
    assert result["pace_map"]["clones"] == [
        "smtp_pace1",
        "smtp_pace1",
        "smtp_pace2",
        "smtp_pace2",
        "smtp_pace3",
        "smtp_pace3",
        "smtp_pace4",
    ]
    assert ses(relay_max_send_rate=3.5, relay_pacing_chooser="random")["main_cf"][
        "sender_dependent_default_transport_maps"
    ] == ("randmap:{smtp_pace1, smtp_pace1, smtp_pace2, smtp_pace2, smtp_pace3, smtp_pace3, smtp_pace4}")
    assert [main_cf["smtp_pace%d_destination_rate_delay" % index] for index in range(1, 5)] == ["1s", "1s", "1s", "2s"]
    assert "smtp_pace5_destination_rate_delay" not in main_cf
    sandbox = ses()
    assert sandbox["main_cf"]["smtp_destination_rate_delay"] == "1s"
    assert sandbox["main_cf"]["sender_dependent_default_transport_maps"] is None
    # One clone needs no choice, so nothing to install.
    assert sandbox["pace_map"] is None


def clones_found(count, marked=True):
    """postfix_info's unix services after a run that made count clones (and Postfix's own smtp)."""
    found = [
        {"name": "smtp", "syslog_name": None},
        {"name": "relay", "syslog_name": "postfix/$service_name"},
        {"name": "qmgr", "syslog_name": None},
    ]
    return found + [
        {"name": "smtp_pace%d" % index, "syslog_name": "postfix/smtp_pace%d" % index if marked else None}
        for index in range(1, count + 1)
    ]


@pytest.mark.parametrize(
    "rate, kept",
    [
        (14, 14),  # the same design: nothing to remove
        (3.5, 4),  # fewer clones: 5 to 14 go
        (0.5, 0),  # one rate delay on smtp itself
        (0, 0),  # no pacing
    ],
)
def test_a_lower_rate_removes_the_clones_and_parameters_it_no_longer_uses(rate, kept):
    result = ses(relay_max_send_rate=rate, facts=debian_facts(unix_services=clones_found(14)))
    main_cf = result["main_cf"]
    removed = [item["name"] for item in result["master_services"] if item.get("state") == "absent"]
    assert removed == ["smtp_pace%d" % index for index in range(kept + 1, 15)]
    assert all(
        item == {"name": item["name"], "type": "unix", "state": "absent"}
        for item in result["master_services"]
        if item["name"] in removed
    )
    for index in range(kept + 1, 15):
        for limit in ("rate_delay", "recipient_limit", "concurrency_failed_cohort_limit"):
            assert main_cf["smtp_pace%d_destination_%s" % (index, limit)] is None
    assert all(main_cf["smtp_pace%d_destination_rate_delay" % index] for index in range(1, kept + 1))
    # Postfix's own services are never the role's to remove.
    assert not {"smtp", "relay", "qmgr"} & set(removed)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(relay_max_send_rate=0.5),
        dict(relay_max_send_rate=0),
        dict(relay_max_send_rate=14, relay_pacing_chooser="random"),
    ],
)
def test_without_turns_an_earlier_pace_map_goes(overrides):
    """The pace_rewrite service and the queue manager's override go; the role stops the pace map."""
    found = clones_found(14) + [{"name": "pace_rewrite", "syslog_name": "postfix/pace_rewrite"}]
    result = ses(facts=debian_facts(unix_services=found), **overrides)
    services = {item["name"]: item for item in result["master_services"]}
    assert services["pace_rewrite"] == {"name": "pace_rewrite", "type": "unix", "state": "absent"}
    assert services["qmgr"]["options"] == {"rewrite_service_name": None}
    assert services["qmgr"]["state"] == "present"
    assert result["pace_map_stale"] == {"clones_path": "/etc/postfix/pace_clones"}
    assert result["pace_map"] is None


def test_turns_kept_leave_the_pace_map_running():
    found = clones_found(14) + [{"name": "pace_rewrite", "syslog_name": "postfix/pace_rewrite"}]
    result = ses(relay_max_send_rate=14, facts=debian_facts(unix_services=found))
    assert result["pace_map_stale"] is None
    assert [item["name"] for item in result["master_services"] if item.get("state") == "absent"] == []


def test_turns_need_the_queue_managers_service():
    found = [item for item in clones_found(0) if item["name"] != "qmgr"]
    with pytest.raises(RelayPlanError) as raised:
        ses(relay_max_send_rate=14, facts=debian_facts(unix_services=found))
    assert raised.value.variable == "relay_pacing_chooser"
    assert "random" in str(raised.value)


def test_only_clones_the_role_marked_are_removed():
    """A service an operator named smtp_pace1 by hand, without the role's syslog_name, stays."""
    result = ses(relay_max_send_rate=0, facts=debian_facts(unix_services=clones_found(2, marked=False)))
    assert not [item for item in result["master_services"] if item["name"].startswith("smtp_pace")]
    assert "smtp_pace1_destination_rate_delay" not in result["main_cf"]


def test_an_oauth2_relay_removes_the_clones_of_an_earlier_paced_one():
    result = plan(
        relay_provider="office365",
        relay_auth="oauth2",
        relay_username="relay@contoso.com",
        relay_oauth2_tenant="contoso.onmicrosoft.com",
        relay_oauth2_client_id="id",
        relay_oauth2_client_secret="s-Secret1",
        facts=debian_facts(unix_services=clones_found(3)),
    )
    removed = [item["name"] for item in result["master_services"] if item.get("state") == "absent"]
    assert removed == ["smtp_pace1", "smtp_pace2", "smtp_pace3"]
    assert result["main_cf"]["smtp_pace3_destination_concurrency_failed_cohort_limit"] is None


def test_pacing_keeps_sender_routes_in_front_of_the_clones():
    senders = [
        {
            "sender": "@contoso.com",
            "provider": "office365",
            "auth": "oauth2",
            "username": "relay@contoso.com",
            "oauth2_tenant": "contoso.onmicrosoft.com",
            "oauth2_client_id": "id",
            "oauth2_client_secret": "s-Secret1",
        }
    ]
    result = ses(relay_max_send_rate=3.5, relay_sender_routes=senders)
    # main.cf keeps the sender table for every resolver; the queue manager's adds the pace map after it.
    assert result["main_cf"]["sender_dependent_default_transport_maps"] == "hash:/etc/postfix/sender_transport"
    rewrite = next(item for item in result["master_services"] if item["name"] == "pace_rewrite")
    assert rewrite["options"]["sender_dependent_default_transport_maps"] == [
        "hash:/etc/postfix/sender_transport",
        "socketmap:inet:127.0.0.1:10039:pace",
    ]
    main_cf = ses(relay_max_send_rate=3.5, relay_sender_routes=senders, relay_pacing_chooser="random")["main_cf"]
    assert main_cf["sender_dependent_default_transport_maps"].startswith(
        "hash:/etc/postfix/sender_transport, randmap:{"
    )


@pytest.mark.parametrize(
    "overrides, variable",
    [
        (dict(relay_max_send_rate=14, relay_destination_recipient_limit=1), "relay_destination_recipient_limit"),
        (dict(relay_max_send_rate=500), "relay_max_send_rate"),
        (dict(relay_max_send_rate=1e9), "relay_max_send_rate"),
        (dict(relay_max_send_rate=14, relay_pacing_chooser="fair"), "relay_pacing_chooser"),
        (dict(relay_max_send_rate=14, relay_pacing_map_port=0), "relay_pacing_map_port"),
        (dict(relay_max_send_rate=14, relay_pacing_map_port=70000), "relay_pacing_map_port"),
    ],
)
def test_pacing_that_cannot_work_is_refused(overrides, variable):
    with pytest.raises(RelayPlanError) as raised:
        ses(**overrides)
    assert raised.value.variable == variable


def test_pacing_above_one_per_second_needs_randmap():
    with pytest.raises(RelayPlanError) as raised:
        ses(relay_max_send_rate=14, facts=debian_facts(postfix_version="2.11.3"))
    assert "Postfix 3.0" in str(raised.value)


def test_limits_can_be_overridden_and_switched_off():
    result = plan(
        relay_provider="office365",
        relay_username="u@contoso.com",
        relay_password=PASSWORD,
        relay_max_send_rate=0,
        relay_destination_concurrency_limit=0,
        relay_destination_recipient_limit=100,
    )
    assert result["main_cf"]["smtp_destination_rate_delay"] is None
    assert result["main_cf"]["smtp_destination_concurrency_limit"] is None
    assert result["main_cf"]["smtp_destination_recipient_limit"] == "100"


def test_queue_and_connection_tuning():
    result = plan(
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_maximal_queue_lifetime="2d",
        relay_bounce_queue_lifetime="1d",
        relay_minimal_backoff_time="5m",
        relay_maximal_backoff_time="30m",
        relay_queue_run_delay=300,
        relay_connection_cache=True,
        relay_connection_cache_time_limit="10s",
    )
    main_cf = result["main_cf"]
    assert main_cf["maximal_queue_lifetime"] == "2d"
    assert main_cf["bounce_queue_lifetime"] == "1d"
    assert main_cf["minimal_backoff_time"] == "5m"
    assert main_cf["maximal_backoff_time"] == "30m"
    assert main_cf["queue_run_delay"] == "300s"
    assert main_cf["smtp_connection_cache_destinations"] == ["[smtp.sendgrid.net]:587"]
    assert main_cf["smtp_connection_cache_time_limit"] == "10s"


def test_extra_parameters_pass_through():
    result = plan(
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_extra_parameters={
            "header_size_limit": 204800,
            "smtputf8_enable": False,
            "smtp_helo_timeout": "60s",
            "smtpd_tls_exclude_ciphers": ["aNULL", "MD5"],
        },
    )
    main_cf = result["main_cf"]
    assert main_cf["header_size_limit"] == 204800
    assert main_cf["smtputf8_enable"] is False
    assert main_cf["smtp_helo_timeout"] == "60s"
    assert main_cf["smtpd_tls_exclude_ciphers"] == ["aNULL", "MD5"]


def test_redhat_smoke_with_everything():
    """All features together on the Red Hat family: nothing collides."""
    result = relay_plan(
        settings(
            relay_provider="custom",
            relay_host="relay.example.com",
            relay_port=465,
            relay_username="u",
            relay_password=PASSWORD,
            relay_mode="relay_server",
            relay_mynetworks=["10.0.0.0/8"],
            relay_header_cleanup=True,
            relay_domain_routes=[{"domain": "example.org", "provider": "sendgrid", "port": 465, "password": "sg"}],
            relay_fallback={"host": "backup.example.com", "port": 465, "username": "b", "password": "bp"},
            relay_tls_connection_reuse=True,
        ),
        PRESETS,
        redhat_facts(default_database_type="lmdb"),
    )
    assert result["packages"] == ["postfix", "cyrus-sasl-plain", "ca-certificates", "postfix-lmdb"]
    assert result["main_cf"]["smtp_tls_wrappermode"] == "yes"
    assert result["main_cf"]["smtp_fallback_relay"] == "[backup.example.com]:465"
    assert sorted(service["name"] for service in result["master_services"]) == [
        "route_smtp_sendgrid_net_465",
        "tlsproxy",
    ]


# ---------------------------------------------------------------- validation errors

VALID = dict(relay_provider="sendgrid", relay_password=PASSWORD)

# (overrides, variable named in the message, a phrase of the message)
ERRORS = [
    (dict(relay_provider=None), "relay_provider", "required"),
    (dict(relay_provider="mandrill"), "relay_provider", "unknown provider"),
    (dict(relay_provider="custom"), "relay_host", "required when relay_provider is custom"),
    (dict(relay_provider="custom", relay_host=""), "relay_host", "required when relay_provider is custom"),
    (dict(relay_provider="custom", relay_host="[relay.example.com]:587"), "relay_host", "bare host name"),
    (dict(relay_provider="custom", relay_host="relay.example.com:587"), "relay_host", "bare host name"),
    (dict(relay_provider="custom", relay_host="relay example.com"), "relay_host", "whitespace"),
    (dict(relay_provider="custom", relay_host="relay_.-bad"), "relay_host", "not a valid host name"),
    (dict(relay_port=0), "relay_port", "out of range"),
    (dict(relay_port=65536), "relay_port", "out of range"),
    (dict(relay_port="smtp"), "relay_port", "whole number"),
    (dict(relay_port=True), "relay_port", "whole number"),
    (dict(relay_password=None), "relay_password", "required for provider sendgrid"),
    (dict(relay_password=" leading"), "relay_password", "whitespace"),
    (dict(relay_password="trailing "), "relay_password", "whitespace"),
    (dict(relay_password="two\nlines"), "relay_password", "line break"),
    (dict(relay_password="cr\rhere"), "relay_password", "line break"),
    (dict(relay_password="tab\there"), "relay_password", "control characters"),
    (dict(relay_password=12345), "relay_password", "must be a string"),
    (dict(relay_username="someone"), "relay_username", "literal user name 'apikey'"),
    (dict(relay_provider="mailgun", relay_username=None), "relay_username", "required for provider mailgun"),
    (dict(relay_provider="mailgun", relay_username="user:name"), "relay_username", "':'"),
    (dict(relay_provider="mailgun", relay_username="user name"), "relay_username", "whitespace"),
    (
        dict(relay_provider="custom", relay_host="r.example.com", relay_username="u", relay_password=None),
        "relay_password",
        "required when relay_username is set",
    ),
    (
        dict(relay_provider="custom", relay_host="r.example.com", relay_username=None),
        "relay_username",
        "required when relay_password is set",
    ),
    (dict(relay_provider="ses", relay_username="AKIA"), "relay_ses_region", "required for provider ses"),
    (
        dict(relay_provider="ses", relay_username="AKIA", relay_ses_region="US-East-1"),
        "relay_ses_region",
        "not a region",
    ),
    (dict(relay_provider="ses", relay_username="AKIA", relay_ses_region="us-east"), "relay_ses_region", "not a region"),
    (
        dict(relay_provider="ses", relay_username="AKIA", relay_ses_region="email-smtp.us-east-1.amazonaws.com"),
        "relay_ses_region",
        "not a region",
    ),
    (
        dict(relay_provider="mailgun", relay_username="p@mg.example.com", relay_mailgun_region="asia"),
        "relay_mailgun_region",
        "not one of",
    ),
    (dict(relay_mode="open_relay"), "relay_mode", "not one of"),
    (dict(relay_mode="relay_server"), "relay_mynetworks", "required with relay_mode relay_server"),
    (dict(relay_mode="relay_server", relay_mynetworks=["0.0.0.0/0"]), "relay_mynetworks[0]", "whole Internet"),
    (dict(relay_mode="relay_server", relay_mynetworks=["10.0.0.0/8", "::/0"]), "relay_mynetworks[1]", "whole Internet"),
    (dict(relay_mode="relay_server", relay_mynetworks=["intranet"]), "relay_mynetworks[0]", "not an IP network"),
    (dict(relay_mynetworks=["10.0.0.0/8"]), "relay_mynetworks", "null_client accepts mail from this host only"),
    (dict(relay_inet_interfaces=["all"]), "relay_inet_interfaces", "loopback only"),
    (dict(relay_inet_protocols="ipv5"), "relay_inet_protocols", "not one of"),
    (dict(relay_tls_security_level="may"), "relay_tls_security_level", "sending the password in clear"),
    (dict(relay_tls_security_level="none"), "relay_tls_security_level", "sending the password in clear"),
    (dict(relay_tls_security_level="fingerprint"), "relay_tls_fingerprints", "required when"),
    (dict(relay_tls_fingerprints=[FINGERPRINT]), "relay_tls_fingerprints", "only used with"),
    (
        dict(relay_tls_security_level="fingerprint", relay_tls_fingerprints=["AB:CD"]),
        "relay_tls_fingerprints[0]",
        "SHA-256",
    ),
    (dict(relay_tls_min_version="TLSv1.1"), "relay_tls_min_version", "not one of"),
    (dict(relay_tls_ca_file="certs/ca.pem"), "relay_tls_ca_file", "absolute path"),
    (dict(relay_tls_wrappermode="sometimes"), "relay_tls_wrappermode", "true or false"),
    (dict(relay_database_type="dbm"), "relay_database_type", "not one of"),
    (dict(relay_max_send_rate=-1), "relay_max_send_rate", "messages per second"),
    (dict(relay_max_send_rate="fast"), "relay_max_send_rate", "messages per second"),
    (dict(relay_destination_concurrency_limit=-2), "relay_destination_concurrency_limit", "out of range"),
    (dict(relay_destination_recipient_limit="many"), "relay_destination_recipient_limit", "whole number"),
    (dict(relay_maximal_queue_lifetime="5 days"), "relay_maximal_queue_lifetime", "time value"),
    (dict(relay_queue_run_delay="72ms"), "relay_queue_run_delay", "time value"),
    (
        dict(relay_minimal_backoff_time="2h", relay_maximal_backoff_time="30m"),
        "relay_minimal_backoff_time",
        "longer than",
    ),
    (dict(relay_connection_cache_time_limit="soon"), "relay_connection_cache_time_limit", "time value"),
    (dict(relay_connection_cache="yes"), "relay_connection_cache", "true or false"),
    (dict(relay_sender_domain="not a domain"), "relay_sender_domain", "whitespace"),
    (dict(relay_sender_domain="192.0.2.1"), "relay_sender_domain", "not a domain"),
    (dict(relay_sender_rewrite_map="canonical"), "relay_sender_rewrite_map", "not one of"),
    (dict(relay_sender_rewrites=[{"match": "a@example.com"}]), "relay_sender_rewrites[0]", "both match and replace"),
    (
        dict(relay_sender_rewrites=[{"match": "nobody", "replace": "x@example.com"}]),
        "relay_sender_rewrites[0].match",
        "not an address",
    ),
    (
        dict(relay_sender_rewrites=[{"match": "a@example.com", "replace": "b@example.com", "when": "x"}]),
        "relay_sender_rewrites[0]",
        "unknown key",
    ),
    (
        dict(
            relay_sender_rewrites=[
                {"match": "a@example.com", "replace": "b@example.com"},
                {"match": "a@example.com", "replace": "c@example.com"},
            ]
        ),
        "relay_sender_rewrites[1].match",
        "rewritten twice",
    ),
    (dict(relay_header_cleanup=True, relay_header_cleanup_headers=[]), "relay_header_cleanup_headers", "at least one"),
    (
        dict(relay_header_cleanup=True, relay_header_cleanup_headers=["X Bad"]),
        "relay_header_cleanup_headers[0]",
        "not a header name",
    ),
    (
        dict(relay_extra_parameters={"relayhost": "[evil.example.com]:25"}),
        "relay_extra_parameters.relayhost",
        "set by the role itself",
    ),
    (
        dict(relay_extra_parameters={"smtp_tls_security_level": "may"}),
        "relay_extra_parameters.smtp_tls_security_level",
        "set by the role itself",
    ),
    (dict(relay_extra_parameters={"Bad-Name": "x"}), "relay_extra_parameters.Bad-Name", "not a main.cf parameter"),
    (dict(relay_extra_parameters={"header_size_limit": None}), "relay_extra_parameters.header_size_limit", "no value"),
    (dict(relay_extra_parameters={"smtpd_banner": "two\nlines"}), "relay_extra_parameters.smtpd_banner", "line breaks"),
    (dict(relay_extra_parameters=["header_size_limit"]), "relay_extra_parameters", "dictionary"),
    (
        dict(relay_ses_sandbox_recipients=["a@example.com"]),
        "relay_ses_sandbox_recipients",
        "only applies with relay_provider ses",
    ),
    (
        dict(
            relay_provider="ses",
            relay_ses_region="us-east-1",
            relay_username="AKIA",
            relay_ses_sandbox_recipients=["not an address"],
        ),
        "relay_ses_sandbox_recipients[0]",
        "whitespace",
    ),
    (
        dict(
            relay_provider="ses",
            relay_ses_region="us-east-1",
            relay_username="AKIA",
            relay_ses_sandbox_recipients=["a@example.com"],
            relay_sender_routes=[{"sender": "@x.example.com", "provider": "sendgrid", "password": "p"}],
        ),
        "relay_ses_sandbox_recipients",
        "cannot be combined with relay_sender_routes",
    ),
    (
        dict(
            relay_provider="ses",
            relay_ses_region="us-east-1",
            relay_username="AKIA",
            relay_ses_sandbox_recipients=["partner.example.org"],
            relay_domain_routes=[{"domain": "partner.example.org", "host": "mx.partner.example.org"}],
        ),
        "relay_ses_sandbox_recipients[0]",
        "already routed",
    ),
    (dict(relay_tls_connection_reuse=True), None, None),  # valid; the case below needs an old version
    (dict(relay_sender_routes="@a.example.com"), "relay_sender_routes", "must be a list"),
    (dict(relay_sender_routes=[{"host": "smtp.x.example.com"}]), "relay_sender_routes[0].sender", "required"),
    (
        dict(relay_sender_routes=[{"sender": "nobody", "host": "smtp.x.example.com"}]),
        "relay_sender_routes[0].sender",
        "not an address",
    ),
    (dict(relay_sender_routes=[{"sender": "@a.example.com"}]), "relay_sender_routes[0].host", "required"),
    (
        dict(relay_sender_routes=[{"sender": "@a.example.com", "provider": "sparkpost"}]),
        "relay_sender_routes[0].provider",
        "unknown provider",
    ),
    (
        dict(relay_sender_routes=[{"sender": "@a.example.com", "provider": "sendgrid", "port": 465, "password": "p"}]),
        "relay_sender_routes[0].port",
        "wrapper mode",
    ),
    (
        dict(relay_sender_routes=[{"sender": "@a.example.com", "provider": "sendgrid"}]),
        "relay_sender_routes[0].password",
        "required for provider sendgrid",
    ),
    (
        dict(
            relay_sender_routes=[
                {"sender": "@a.example.com", "provider": "mailgun", "username": "u:x", "password": "p"}
            ]
        ),
        "relay_sender_routes[0].username",
        "':'",
    ),
    (
        dict(relay_sender_routes=[{"sender": "@a.example.com", "host": "smtp.x.example.com", "pasword": "p"}]),
        "relay_sender_routes[0]",
        "unknown key",
    ),
    (
        dict(relay_sender_routes=[{"sender": "@a.example.com", "provider": "ses", "username": "A", "password": "p"}]),
        "relay_sender_routes[0].ses_region",
        "required for provider ses",
    ),
    (
        dict(
            relay_sender_routes=[
                {"sender": "@a.example.com", "host": "smtp.x.example.com", "username": "a", "password": "1"},
                {"sender": "@a.example.com", "host": "smtp.y.example.com", "username": "b", "password": "2"},
            ]
        ),
        "relay_sender_routes[1].sender",
        "routed twice",
    ),
    (dict(relay_domain_routes=[{"host": "smtp.x.example.com"}]), "relay_domain_routes[0].domain", "required"),
    (dict(relay_domain_routes=[{"domain": "x.example.com"}]), "relay_domain_routes[0].host", "required"),
    (
        dict(relay_domain_routes=[{"domain": "x.example.com", "action": "bounce"}]),
        "relay_domain_routes[0].action",
        "not one of",
    ),
    (
        dict(relay_domain_routes=[{"domain": "x.example.com", "action": "local", "host": "smtp.x.example.com"}]),
        "relay_domain_routes[0].host",
        "does not apply to action local",
    ),
    (
        dict(relay_domain_routes=[{"domain": ".x.example.com", "action": "local"}]),
        "relay_domain_routes[0].domain",
        "exact domain",
    ),
    (
        dict(
            relay_domain_routes=[
                {"domain": "x.example.com", "action": "local"},
                {"domain": "x.example.com", "action": "local"},
            ]
        ),
        "relay_domain_routes[1].domain",
        "routed twice",
    ),
    (
        dict(relay_domain_routes=[{"domain": "x.example.com", "provider": "sendgrid", "password": PASSWORD}]),
        "relay_domain_routes[0].host",
        "already the primary relay",
    ),
    (
        dict(relay_domain_routes=[{"domain": "x.example.com", "host": "smtp.x.example.com", "transport": "smtp"}]),
        "relay_domain_routes[0].transport",
        "standard Postfix service",
    ),
    (
        dict(relay_domain_routes=[{"domain": "x.example.com", "host": "smtp.x.example.com", "transport": "Bad Name"}]),
        "relay_domain_routes[0].transport",
        "not a usable master.cf service name",
    ),
    (
        dict(
            relay_domain_routes=[
                {"domain": "x.example.com", "host": "smtp.x.example.com", "transport": "t1"},
                {"domain": "y.example.com", "host": "smtp.y.example.com", "transport": "t1"},
            ]
        ),
        "relay_domain_routes[1].transport",
        "different settings",
    ),
    (
        dict(
            relay_domain_routes=[
                {
                    "domain": "x.example.com",
                    "host": "smtp.x.example.com",
                    "username": "u",
                    "password": "p",
                    "tls_security_level": "may",
                }
            ]
        ),
        "relay_domain_routes[0].tls_security_level",
        "sending the password in clear",
    ),
    (
        dict(
            relay_domain_routes=[
                {"domain": "x.example.com", "host": "smtp.x.example.com", "port": 465, "tls_security_level": "none"}
            ]
        ),
        "relay_domain_routes[0].tls_security_level",
        "wrapper mode",
    ),
    (
        dict(
            relay_domain_routes=[
                {"domain": "x.example.com", "host": "smtp.x.example.com", "tls_security_level": "dane"}
            ]
        ),
        "relay_domain_routes[0].tls_security_level",
        "not one of",
    ),
    (
        dict(relay_domain_routes=[{"domain": "x.example.com", "host": "smtp.x.example.com", "port": 99999}]),
        "relay_domain_routes[0].port",
        "out of range",
    ),
    (
        dict(
            relay_domain_routes=[
                {"domain": "x.example.com", "host": "smtp.x.example.com", "username": "u", "password": "p\n"}
            ]
        ),
        "relay_domain_routes[0].password",
        "line break",
    ),
    (dict(relay_fallback={"host": "backup.example.com"}), "relay_fallback.password", "own credentials"),
    (dict(relay_fallback={"port": 587}), "relay_fallback.host", "required"),
    (
        dict(relay_fallback={"provider": "sendgrid", "password": PASSWORD}),
        "relay_fallback.host",
        "primary relay itself",
    ),
    (
        dict(relay_fallback={"host": "backup.example.com", "port": 465, "username": "b", "password": "p"}),
        "relay_fallback.port",
        "wrapper mode",
    ),
    (
        dict(relay_fallback={"host": "backup.example.com", "username": "b", "password": "p", "priority": 1}),
        "relay_fallback",
        "unknown key",
    ),
    (
        dict(
            relay_fallback={"host": "backup.example.com", "username": "b", "password": "p"},
            relay_sender_routes=[{"sender": "@a.example.com", "host": "smtp.x.example.com"}],
        ),
        "relay_fallback",
        "cannot be combined with relay_sender_routes",
    ),
    (dict(relay_fallback="backup.example.com"), "relay_fallback", "dictionary"),
    # issue 18: the side doors
    (
        dict(relay_extra_parameters={"smtp_tls_policy_maps": "inline:{ [smtp.sendgrid.net]:587=none }"}),
        "relay_extra_parameters.smtp_tls_policy_maps",
        "which the role owns",
    ),
    (
        dict(relay_extra_parameters={"smtp_tls_secure_cert_match": "nexthop"}),
        "relay_extra_parameters.smtp_tls_secure_cert_match",
        "which the role owns",
    ),
    (
        dict(relay_extra_parameters={"smtp_tls_mandatory_ciphers": "null"}),
        "relay_extra_parameters.smtp_tls_mandatory_ciphers",
        "which the role owns",
    ),
    (
        dict(relay_extra_parameters={"smtp_use_tls": False}),
        "relay_extra_parameters.smtp_use_tls",
        "which the role owns",
    ),
    (
        dict(relay_extra_parameters={"smtp_enforce_tls": False}),
        "relay_extra_parameters.smtp_enforce_tls",
        "which the role owns",
    ),
    (
        dict(relay_extra_parameters={"lmtp_tls_security_level": "none"}),
        "relay_extra_parameters.lmtp_tls_security_level",
        "which the role owns",
    ),
    (
        dict(relay_extra_parameters={"default_transport": "smtp:[evil.example]:25"}),
        "relay_extra_parameters.default_transport",
        "set by the role itself",
    ),
    (
        dict(relay_extra_parameters={"sender_dependent_default_transport_maps": "inline:{ @x=smtp:[evil.example] }"}),
        "relay_extra_parameters.sender_dependent_default_transport_maps",
        "set by the role itself",
    ),
    (
        dict(relay_extra_parameters={"smtp_sasl_mechanism_filter": "login"}),
        "relay_extra_parameters.smtp_sasl_mechanism_filter",
        "SASL login",
    ),
    (
        dict(relay_extra_parameters={"tlsproxy_client_security_level": "none"}),
        "relay_extra_parameters.tlsproxy_client_security_level",
        "reused connections",
    ),
    (
        dict(relay_extra_parameters={"tls_medium_cipherlist": "eNULL"}),
        "relay_extra_parameters.tls_medium_cipherlist",
        "cipher grades",
    ),
    (
        dict(relay_extra_parameters={"smtpd_authorized_xclient_hosts": "0.0.0.0/0"}),
        "relay_extra_parameters.smtpd_authorized_xclient_hosts",
        "who may relay",
    ),
    (
        dict(relay_tls_ca_file="/etc/ssl/$my_ca", relay_extra_parameters={"my_ca": "/tmp/attacker-ca.pem"}),
        "relay_extra_parameters.my_ca",
        "refers to $my_ca",
    ),
    (
        dict(relay_mode="relay_server", relay_mynetworks=["0.0.0.0/1", "128.0.0.0/1"]),
        "relay_mynetworks",
        "more than a /8",
    ),
    (dict(relay_mode="relay_server", relay_mynetworks=["::/1"]), "relay_mynetworks", "public IPv4 addresses"),
    (dict(relay_mode="relay_server", relay_mynetworks=["[8000::]/1"]), "relay_mynetworks", "public IPv6 addresses"),
    (
        dict(relay_mode="relay_server", relay_mynetworks=["[::ffff:0.0.0.0]/97"]),
        "relay_mynetworks",
        "public IPv4 addresses",
    ),
    (
        dict(relay_mode="relay_server", relay_mynetworks=["8.0.0.0/8", "9.0.0.0/16"]),
        "relay_mynetworks",
        "more than a /8",
    ),
    (
        dict(
            relay_domain_routes=[
                {
                    "domain": "x.example.com",
                    "host": "smtp.x.example.com",
                    "username": "u",
                    "password": "p",
                    "tls_security_level": "none",
                }
            ]
        ),
        "relay_domain_routes[0].tls_security_level",
        "sending the password in clear",
    ),
    (dict(relay_max_send_rate="nan"), "relay_max_send_rate", "messages per second"),
    (dict(relay_max_send_rate="inf"), "relay_max_send_rate", "messages per second"),
    (dict(relay_max_send_rate=float("inf")), "relay_max_send_rate", "messages per second"),
    (dict(relay_max_send_rate=1e-300), "relay_max_send_rate", "slower than one message a day"),
    (
        dict(
            relay_sender_routes=[
                {"sender": "@a.example", "host": "smtp.x.example.com"},
                {"sender": "@A.example", "host": "smtp.y.example.com"},
            ]
        ),
        "relay_sender_routes[1].sender",
        "routed twice",
    ),
    (dict(relay_port="\u0665\u0668\u0667"), "relay_port", "whole number"),
    (dict(relay_config_dir="etc/postfix"), "relay_config_dir", "absolute path"),
    (dict(relay_password="Head\u2028TAILSECRET"), "relay_password", "U+2028"),
    (dict(relay_password="Head\x85TAILSECRET"), "relay_password", "U+0085"),
    (
        dict(relay_extra_parameters={"smtpd_banner": "one\u2029two"}),
        "relay_extra_parameters.smtpd_banner",
        "line breaks",
    ),
]


def test_large_private_and_bounded_public_networks_are_fine():
    networks = [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
        "[fe80::]/10",
        "8.0.0.0/8",
        "2001:db8::/32",
        "[2a00::]/16",
    ]
    result = plan(**dict(VALID, relay_mode="relay_server", relay_mynetworks=networks))
    assert len(result["main_cf"]["mynetworks"]) == len(networks)


def test_the_public_count_merges_overlaps_and_subtracts_private_space():
    import ipaddress

    from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.validate import public_addresses

    nets = [ipaddress.ip_network(n) for n in ("8.0.0.0/8", "8.1.0.0/16", "10.0.0.0/8", "::ffff:9.0.0.0/120")]
    assert public_addresses(nets) == {4: 2**24 + 256, 6: 0}
    assert public_addresses([ipaddress.ip_network("0.0.0.0/0")])[4] < 2**32


def test_the_role_owned_list_covers_what_the_role_sets_about_tls_and_relaying():
    from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan.extra import role_owned

    main_cf = plan(**dict(VALID, relay_mode="relay_server", relay_mynetworks=["10.0.0.0/8"]))["main_cf"]
    for name in main_cf:
        # Logging and the session cache change no security property (relay_tls_loglevel, relay_tls_session_cache).
        if name in ("smtp_tls_loglevel", "smtp_tls_session_cache_database"):
            continue
        if name.startswith(("smtp_tls_", "smtp_sasl_", "tls_")) or name in (
            "relayhost",
            "mynetworks",
            "transport_maps",
        ):
            assert role_owned(name), name
    for harmless in (
        "smtp_tls_loglevel",
        "smtp_tls_session_cache_database",
        "smtpd_tls_cert_file",
        "message_size_limit",
    ):
        assert role_owned(harmless) is None, harmless


@pytest.mark.parametrize("overrides, variable, phrase", [case for case in ERRORS if case[1] is not None])
def test_validation_error_names_the_variable(overrides, variable, phrase):
    values = dict(VALID)
    values.update(overrides)
    with pytest.raises(RelayPlanError) as raised:
        plan(**values)
    message = str(raised.value)
    assert raised.value.variable == variable
    assert message.startswith(variable + ": "), message
    assert phrase in message, message


@pytest.mark.parametrize("overrides, variable, phrase", ERRORS)
def test_validation_errors_never_echo_a_secret(overrides, variable, phrase):
    values = dict(VALID)
    values.update(overrides)
    secrets = [secret.strip() for secret in _passwords(values) if len(secret.strip()) > 3]
    try:
        plan(**values)
    except RelayPlanError as exc:
        for secret in secrets:
            assert secret not in str(exc), str(exc)


def _passwords(value, key=None):
    """Every value stored under a password key, at any depth."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _passwords(item, name)
    elif isinstance(value, list):
        for item in value:
            yield from _passwords(item, key)
    elif isinstance(value, str) and key in ("relay_password", "password"):
        yield value


def test_password_with_a_line_break_is_not_echoed():
    with pytest.raises(RelayPlanError) as raised:
        plan(relay_provider="sendgrid", relay_password="SG.real-looking-key\n")
    assert "SG.real-looking-key" not in str(raised.value)


def test_tls_connection_reuse_needs_postfix_3_4():
    with pytest.raises(RelayPlanError) as raised:
        plan(
            facts=debian_facts(postfix_version="3.3.0"),
            relay_provider="sendgrid",
            relay_password=PASSWORD,
            relay_tls_connection_reuse=True,
        )
    assert str(raised.value).startswith("relay_tls_connection_reuse: ")


def test_null_client_without_any_domain_is_an_error():
    with pytest.raises(RelayPlanError) as raised:
        plan(facts=debian_facts(domain="", fqdn="web1"), relay_sender_domain=None, **VALID)
    assert str(raised.value).startswith("relay_sender_domain: required")


def test_missing_ca_bundle_is_an_error():
    with pytest.raises(RelayPlanError) as raised:
        plan(facts=debian_facts(ca_file=None), **VALID)
    assert str(raised.value).startswith("relay_tls_ca_file: ")


def test_settings_must_be_relay_variables():
    with pytest.raises(RelayPlanError) as raised:
        relay_plan({"relay_provider": "sendgrid", "provider": "ses"}, PRESETS, debian_facts())
    assert str(raised.value).startswith("provider: ")


def test_presets_are_required():
    with pytest.raises(RelayPlanError) as raised:
        relay_plan(settings(**VALID), {}, debian_facts())
    assert str(raised.value).startswith("presets: ")


def test_the_plan_does_not_change_its_inputs():
    values = settings(
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_domain_routes=[{"domain": "x.example.com", "host": "smtp.x.example.com"}],
    )
    snapshot = yaml.safe_dump(values)
    facts = debian_facts()
    facts_snapshot = yaml.safe_dump(facts)
    relay_plan(values, PRESETS, facts)
    assert yaml.safe_dump(values) == snapshot
    assert yaml.safe_dump(facts) == facts_snapshot


def test_the_plan_is_deterministic():
    values = settings(
        relay_provider="sendgrid",
        relay_password=PASSWORD,
        relay_header_cleanup=True,
        relay_domain_routes=[
            {"domain": "b.example.com", "host": "smtp.b.example.com"},
            {"domain": "a.example.com", "host": "smtp.a.example.com"},
        ],
    )
    assert relay_plan(values, PRESETS, debian_facts()) == relay_plan(values, PRESETS, debian_facts())


# ---------------------------------------------------------------- auth modes

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "00000000-1111-2222-3333-444444444444"
CLIENT_SECRET = "client~Secret.value-1"
REFRESH_TOKEN = "1//refresh-Token-value"
MAILBOX = "relay@contoso.com"


def office365_oauth2(**overrides):
    values = dict(
        relay_provider="office365",
        relay_auth="oauth2",
        relay_username=MAILBOX,
        relay_oauth2_tenant=TENANT,
        relay_oauth2_client_id=CLIENT_ID,
        relay_oauth2_client_secret=CLIENT_SECRET,
    )
    values.update(overrides)
    return plan(**values)


def test_office365_oauth2_goes_through_its_own_pipe_transport():
    result = office365_oauth2()
    main_cf = result["main_cf"]
    # relayhost stays the next hop; the pipe transport is the default transport and takes it.
    assert main_cf["relayhost"] == "[smtp.office365.com]:587"
    assert main_cf["default_transport"] == "oauth2_relay"
    # No password anywhere: no SASL map entry, SASL off for Postfix's own smtp client.
    assert result["sasl_map"]["entries"] == []
    assert main_cf["smtp_sasl_auth_enable"] == "no"
    service = next(item for item in result["master_services"] if item["name"] == "oauth2_relay")
    assert service["type"] == "unix" and service["unpriv"] == "n" and service["chroot"] == "n"
    assert service["command"] == (
        "pipe flags=q null_sender= user=smarthost-oauth2 argv=/usr/libexec/smarthost-postfix/oauth2-token deliver "
        "--config /etc/smarthost-postfix/oauth2/relay.json -f ${sender} -- ${recipient}"
    )
    assert CLIENT_SECRET not in str(result["master_services"]) + str(main_cf)
    # One recipient per delivery; the preset's concurrency on the pipe, its rate in the account.
    assert main_cf["oauth2_relay_destination_recipient_limit"] == "1"
    assert main_cf["oauth2_relay_destination_concurrency_limit"] == "3"
    assert main_cf["smtp_destination_rate_delay"] is None
    assert main_cf["smtp_destination_concurrency_limit"] is None
    assert main_cf["smtp_destination_recipient_limit"] is None
    assert result["oauth2"] == [
        {
            "name": "relay",
            "transport": "oauth2_relay",
            "nexthop": "[smtp.office365.com]:587",
            "config_path": "/etc/smarthost-postfix/oauth2/relay.json",
            "config": {
                "provider": "microsoft",
                "username": MAILBOX,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "smtp_host": "smtp.office365.com",
                "smtp_port": 587,
                "tls": "starttls",
                "ca_file": DEBIAN_CA,
                "cache_file": "/var/cache/smarthost-postfix/oauth2/relay.json",
                "tenant": TENANT,
                "send_interval": 2.0,
            },
        }
    ]
    assert result["packages"] == ["postfix", "libsasl2-modules", "ca-certificates", "msmtp"]
    # The smtp client's generic maps would not apply to the pipe: sender_canonical instead.
    assert main_cf["sender_canonical_maps"] == "hash:/etc/postfix/sender_canonical"
    assert main_cf["smtp_generic_maps"] is None
    assert result["probe"]["auth"] == "oauth2" and result["probe"]["oauth2_account"] == "relay"
    assert result["probe"]["authenticate"] is False


def test_switching_to_oauth2_is_one_variable():
    # The password stays in the inventory and is no longer used: the SASL map loses its entry.
    result = office365_oauth2(relay_password=PASSWORD)
    assert result["sasl_map"]["entries"] == []
    assert PASSWORD not in str(result)
    back = office365_oauth2(relay_password=PASSWORD, relay_auth="password")
    assert sasl(back) == {"[smtp.office365.com]:587": (MAILBOX, PASSWORD)}
    assert back["main_cf"]["default_transport"] is None
    assert back["oauth2"] == []


def test_gmail_oauth2_uses_the_refresh_token_grant():
    result = plan(
        relay_provider="gmail",
        relay_auth="oauth2",
        relay_username="me@example.com",
        relay_oauth2_client_id="id.apps.googleusercontent.com",
        relay_oauth2_client_secret=CLIENT_SECRET,
        relay_oauth2_refresh_token=REFRESH_TOKEN,
        relay_oauth2_tenant="ignored.example.com",
    )
    config = result["oauth2"][0]["config"]
    assert config["provider"] == "google"
    assert config["refresh_token"] == REFRESH_TOKEN
    assert "tenant" not in config
    assert (config["smtp_host"], config["smtp_port"]) == ("smtp.gmail.com", 587)


def test_token_url_override():
    result = office365_oauth2(relay_oauth2_token_url="https://login.microsoftonline.us/contoso/oauth2/v2.0/token")
    assert result["oauth2"][0]["config"]["token_url"] == "https://login.microsoftonline.us/contoso/oauth2/v2.0/token"


@pytest.mark.parametrize(
    "overrides, variable, message",
    [
        (
            dict(relay_provider="sendgrid", relay_username=None),
            "relay_auth",
            "oauth2 is not offered by provider sendgrid",
        ),
        (dict(relay_username=None), "relay_username", "the mailbox"),
        (dict(relay_oauth2_client_secret=None), "relay_oauth2_client_secret", "required with auth oauth2"),
        (dict(relay_oauth2_client_id=""), "relay_oauth2_client_id", "required"),
        (dict(relay_oauth2_tenant=None), "relay_oauth2_tenant", "required"),
        (dict(relay_oauth2_tenant="not a tenant"), "relay_oauth2_tenant", "whitespace"),
        (dict(relay_oauth2_client_secret=CLIENT_SECRET + "\n"), "relay_oauth2_client_secret", "line break"),
        (dict(relay_oauth2_token_url="http://login.example.com/token"), "relay_oauth2_token_url", "https://"),
        (dict(relay_tls_security_level="encrypt"), "relay_tls_security_level", "msmtp verifies"),
        (
            dict(relay_fallback={"host": "fallback.example.com", "username": "u", "password": "p"}),
            "relay_fallback",
            "pipe transport",
        ),
        (dict(relay_header_cleanup=True), "relay_header_cleanup", "pipe transport"),
        (dict(relay_sender_rewrite_map="generic"), "relay_sender_rewrite_map", "sender_canonical"),
        (dict(relay_auth="kerberos"), "relay_auth", "not one of"),
    ],
)
def test_oauth2_errors_name_the_variable_never_the_secret(overrides, variable, message):
    with pytest.raises(RelayPlanError) as raised:
        office365_oauth2(**overrides)
    assert raised.value.variable == variable
    assert message in str(raised.value)
    assert CLIENT_SECRET not in str(raised.value)


def test_gmail_oauth2_needs_the_refresh_token():
    with pytest.raises(RelayPlanError) as raised:
        plan(
            relay_provider="gmail",
            relay_auth="oauth2",
            relay_username="me@example.com",
            relay_oauth2_client_id="id",
            relay_oauth2_client_secret=CLIENT_SECRET,
        )
    assert raised.value.variable == "relay_oauth2_refresh_token"


def test_an_oauth2_domain_route_beside_a_password_primary():
    routes = [
        {
            "domain": "contoso.com",
            "provider": "office365",
            "auth": "oauth2",
            "username": MAILBOX,
            "oauth2_tenant": TENANT,
            "oauth2_client_id": CLIENT_ID,
            "oauth2_client_secret": CLIENT_SECRET,
        }
    ]
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_domain_routes=routes)
    assert table_dict(result, "transport") == {"contoso.com": "oauth2_smtp_office365_com_587:[smtp.office365.com]:587"}
    assert [entry["name"] for entry in result["oauth2"]] == ["smtp_office365_com_587"]
    assert result["main_cf"]["default_transport"] is None
    assert sasl(result) == {"[smtp.sendgrid.net]:587": ("apikey", PASSWORD)}
    # An OAuth 2.0 relay takes mail: generic maps would miss it.
    assert result["main_cf"]["sender_canonical_maps"] == "hash:/etc/postfix/sender_canonical"
    with pytest.raises(RelayPlanError) as raised:
        plan(
            relay_provider="sendgrid",
            relay_password=PASSWORD,
            relay_domain_routes=[dict(routes[0], tls_security_level="encrypt")],
        )
    assert raised.value.variable == "relay_domain_routes[0].tls_security_level"


def test_sender_routes_name_their_transport_when_oauth2_is_involved():
    senders = [{"sender": "@marketing.example.com", "provider": "sendgrid", "password": "sg-Secret"}]
    result = office365_oauth2(relay_sender_routes=senders)
    assert result["main_cf"]["sender_dependent_relayhost_maps"] is None
    assert result["main_cf"]["sender_dependent_default_transport_maps"] == "hash:/etc/postfix/sender_transport"
    assert table_dict(result, "sender_transport") == {"@marketing.example.com": "smtp:[smtp.sendgrid.net]:587"}
    assert result["main_cf"]["smtp_sender_dependent_authentication"] == "yes"
    assert sasl(result) == {"@marketing.example.com": ("apikey", "sg-Secret")}
    oauth_sender = [
        {
            "sender": "@contoso.com",
            "provider": "office365",
            "auth": "oauth2",
            "username": MAILBOX,
            "oauth2_tenant": TENANT,
            "oauth2_client_id": CLIENT_ID,
            "oauth2_client_secret": CLIENT_SECRET,
        }
    ]
    mixed = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_sender_routes=oauth_sender)
    assert table_dict(mixed, "sender_transport") == {
        "@contoso.com": "oauth2_smtp_office365_com_587:[smtp.office365.com]:587"
    }
    assert mixed["main_cf"]["default_transport"] is None


def test_certificate_auth_on_a_custom_relay():
    result = plan(
        relay_provider="custom",
        relay_host="mtls.example.net",
        relay_auth="certificate",
        relay_tls_client_cert="/etc/ssl/relay.crt",
        relay_tls_client_key="/etc/ssl/private/relay.key",
    )
    main_cf = result["main_cf"]
    assert (main_cf["smtp_tls_cert_file"], main_cf["smtp_tls_key_file"]) == (
        "/etc/ssl/relay.crt",
        "/etc/ssl/private/relay.key",
    )
    assert result["sasl_map"]["entries"] == []
    assert main_cf["smtp_sasl_auth_enable"] == "no"
    assert result["client_keys"] == ["/etc/ssl/private/relay.key"]
    assert result["probe"]["auth"] == "certificate"
    password = plan(relay_provider="custom", relay_host="mtls.example.net", relay_username="u", relay_password=PASSWORD)
    assert (password["main_cf"]["smtp_tls_cert_file"], password["main_cf"]["smtp_tls_key_file"]) == (None, None)
    assert password["client_keys"] == []


@pytest.mark.parametrize(
    "overrides, variable",
    [
        (dict(relay_tls_client_key=None), "relay_tls_client_key"),
        (dict(relay_tls_client_cert="relay.crt"), "relay_tls_client_cert"),
        (dict(relay_provider="sendgrid", relay_host=None), "relay_auth"),
    ],
)
def test_certificate_errors(overrides, variable):
    values = dict(
        relay_provider="custom",
        relay_host="mtls.example.net",
        relay_auth="certificate",
        relay_tls_client_cert="/etc/ssl/relay.crt",
        relay_tls_client_key="/etc/ssl/private/relay.key",
    )
    values.update(overrides)
    with pytest.raises(RelayPlanError) as raised:
        plan(**values)
    assert raised.value.variable == variable


def test_a_domain_route_with_its_own_client_certificate():
    routes = [
        {
            "domain": "partner.example.org",
            "host": "mx.partner.example.org",
            "port": 25,
            "auth": "certificate",
            "tls_client_cert": "/etc/ssl/p.crt",
            "tls_client_key": "/etc/ssl/private/p.key",
        }
    ]
    result = plan(relay_provider="sendgrid", relay_password=PASSWORD, relay_domain_routes=routes)
    service = next(item for item in result["master_services"] if item["name"].startswith("route_"))
    assert service["options"]["smtp_tls_cert_file"] == "/etc/ssl/p.crt"
    assert service["options"]["smtp_tls_key_file"] == "/etc/ssl/private/p.key"
    assert result["client_keys"] == ["/etc/ssl/private/p.key"]


def test_office365_connector_from_the_accepted_domain():
    result = plan(relay_provider="office365_connector", relay_office365_domain="Contoso.co.uk")
    assert result["relayhost"] == "[contoso-co-uk.mail.protection.outlook.com]:25"
    assert result["main_cf"]["smtp_tls_security_level"] == "secure"
    assert result["main_cf"]["smtp_tls_wrappermode"] == "no"
    assert result["sasl_map"]["entries"] == []
    assert result["probe"]["auth"] == "none"
    certificate = plan(
        relay_provider="office365_connector",
        relay_office365_domain="contoso.com",
        relay_auth="certificate",
        relay_tls_client_cert="/etc/ssl/relay.crt",
        relay_tls_client_key="/etc/ssl/private/relay.key",
    )
    assert certificate["main_cf"]["smtp_tls_cert_file"] == "/etc/ssl/relay.crt"
    with pytest.raises(RelayPlanError) as raised:
        plan(
            relay_provider="office365_connector",
            relay_office365_domain="contoso.com",
            relay_username="u",
            relay_password=PASSWORD,
        )
    assert raised.value.variable == "relay_auth" and "choose none or certificate" in str(raised.value)
    with pytest.raises(RelayPlanError) as raised:
        plan(relay_provider="office365_connector")
    assert raised.value.variable == "relay_office365_domain"


def test_a_client_certificate_given_to_a_connector_is_how_it_authenticates():
    result = plan(
        relay_provider="office365_connector",
        relay_office365_domain="contoso.com",
        relay_tls_client_cert="/etc/ssl/relay.crt",
        relay_tls_client_key="/etc/ssl/private/relay.key",
    )
    assert result["probe"]["auth"] == "certificate"
    assert result["main_cf"]["smtp_tls_cert_file"] == "/etc/ssl/relay.crt"
    assert result["main_cf"]["message_size_limit"] == "35000000"


def test_a_national_cloud_sets_its_scope_and_token_endpoint():
    result = office365_oauth2(
        relay_host="smtp.office365.us",
        relay_oauth2_scope="https://outlook.office365.us/.default",
        relay_oauth2_token_url="https://login.microsoftonline.us/contoso/oauth2/v2.0/token",
    )
    config = result["oauth2"][0]["config"]
    assert (config["scope"], config["smtp_host"]) == ("https://outlook.office365.us/.default", "smtp.office365.us")
    with pytest.raises(RelayPlanError) as raised:
        office365_oauth2(relay_oauth2_scope="outlook scope")
    assert raised.value.variable == "relay_oauth2_scope"


def test_every_planned_account_is_a_configuration_the_token_tool_accepts():
    from ansible_collections.smarthost.postfix.plugins.module_utils import oauth2_token

    gmail = plan(
        relay_provider="gmail",
        relay_auth="oauth2",
        relay_username="me@example.com",
        relay_oauth2_client_id="id",
        relay_oauth2_client_secret=CLIENT_SECRET,
        relay_oauth2_refresh_token=REFRESH_TOKEN,
    )
    for result in (
        office365_oauth2(),
        office365_oauth2(relay_oauth2_scope="https://outlook.office365.us/.default"),
        gmail,
    ):
        for account in result["oauth2"]:
            config = oauth2_token.validate_config(dict(account["config"]))
            assert config["cache_file"] == account["config"]["cache_file"]
    with pytest.raises(RelayPlanError) as raised:
        office365_oauth2(relay_username="relay")
    assert raised.value.variable == "relay_username"
