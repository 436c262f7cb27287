# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every provider preset, converged on Debian 12 and 13, delivers to its smarthost.

The expectations below are written independently of the presets (they are
what each provider documents), so a wrong endpoint, port, username rule or
TLS mode in a preset fails here.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "resources", "tests"))
import harness  # noqa: E402  pylint: disable=wrong-import-position

EXPECTED_ENDPOINT = {
    "sendgrid": "smtp.sendgrid.net",
    "office365": "smtp.office365.com",
    "gmail": "smtp.gmail.com",
    "google_workspace_relay": "smtp-relay.gmail.com",
    "brevo": "smtp-relay.brevo.com",
    "smtp2go": "mail.smtp2go.com",
    "postmark": "smtp.postmarkapp.com",
    "custom": "relay.example.test",
}
DEFAULT_PORT = 587
SENDER_DOMAIN = "example.test"

HOSTS = harness.inventory_hosts("relays")


def expected_endpoint(hostvars):
    provider = hostvars["relay_provider"]
    if provider == "ses":
        return "email-smtp.%s.amazonaws.com" % hostvars["relay_ses_region"]
    if provider == "mailgun":
        return "smtp.eu.mailgun.org" if hostvars.get("relay_mailgun_region") == "eu" else "smtp.mailgun.org"
    return EXPECTED_ENDPOINT[provider]


def expected_port(hostvars):
    return int(hostvars.get("relay_port", DEFAULT_PORT))


def expected_username(hostvars):
    provider = hostvars["relay_provider"]
    # SendGrid's username is the literal "apikey"; Postmark's is the server token
    # (the same value as the password). The preset must supply both by itself.
    if provider == "sendgrid":
        return "apikey"
    if provider == "postmark":
        return harness.providers()["postmark"]["password"]
    return harness.providers()[provider]["username"]


@pytest.fixture(scope="module")
def deliveries():
    """Send one tagged message from every target, then collect what the emulator received."""
    tags = {}
    for name in HOSTS:
        tag = harness.new_tag()
        harness.send_with_sendmail(harness.host(name), "root", "someone@recipient.example.test", tag)
        tags[name] = tag
    return {name: harness.wait_for_message(tag) for name, tag in tags.items()}


def is_redhat(target):
    return target.system_info.distribution.lower() in ("rocky", "redhat", "centos", "almalinux", "fedora")


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_postfix_installed_enabled_running(name):
    target = harness.host(name)
    assert target.package("postfix").is_installed
    # Without the SASL client mechanisms Postfix fails with "No worthy mechs found".
    assert target.package("cyrus-sasl-plain" if is_redhat(target) else "libsasl2-modules").is_installed
    service = target.service("postfix")
    assert service.is_enabled
    assert service.is_running
    assert target.run("postfix status").rc == 0


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_effective_configuration(name):
    hostvars = HOSTS[name]
    target = harness.host(name)
    port = expected_port(hostvars)

    def value(parameter):
        return target.check_output("postconf -h %s", parameter).strip()

    assert value("relayhost") == "[%s]:%d" % (expected_endpoint(hostvars), port)
    assert value("smtp_tls_security_level") == "secure"
    ca_bundle = "/etc/pki/tls/certs/ca-bundle.crt" if is_redhat(target) else "/etc/ssl/certs/ca-certificates.crt"
    assert value("smtp_tls_CAfile") == ca_bundle
    assert value("smtp_tls_wrappermode") == ("yes" if port == 465 else "no")
    assert value("smtp_sasl_auth_enable") == "yes"
    assert "noanonymous" in value("smtp_sasl_security_options")
    assert value("inet_interfaces") in ("loopback-only", "127.0.0.1", "localhost")
    # Minimum TLS 1.2 whatever syntax the installed Postfix takes.
    protocols = value("smtp_tls_mandatory_protocols")
    assert protocols == ">=TLSv1.2" or all(p in protocols for p in ("!SSLv2", "!SSLv3", "!TLSv1", "!TLSv1.1"))
    # The SASL key must be byte-identical to relayhost or Postfix never finds it.
    sasl_key = target.check_output("postmap -q %s %s", value("relayhost"), value("smtp_sasl_password_maps"))
    assert sasl_key.split(":", 1)[0] == expected_username(hostvars)
    assert target.run("postfix check").rc == 0


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_sasl_map_is_root_only(name):
    target = harness.host(name)
    map_spec = target.check_output("postconf -h smtp_sasl_password_maps").strip()
    map_type, path = map_spec.split(":", 1)
    compiled = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb"}.get(map_type)
    files = [path] + ([path + compiled] if compiled else [])
    for file_path in files:
        handle = target.file(file_path)
        assert handle.exists, file_path
        assert handle.user == "root", file_path
        assert handle.mode == 0o600, "%s is %o" % (file_path, handle.mode)


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_message_arrives_with_provider_identity_over_verified_tls(name, deliveries):
    hostvars = HOSTS[name]
    record = deliveries[name]
    assert record is not None, "no message from %s reached the emulator; queue:\n%s" % (
        name,
        harness.queue_report(harness.host(name)),
    )
    port = expected_port(hostvars)
    assert record["username"] == expected_username(hostvars)
    assert record["provider"] == hostvars["relay_provider"]
    assert record["certificate"] == "trusted"
    assert record["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert record["tls"] == ("implicit" if port == 465 else "starttls")
    assert record["local_port"] == port
    # Local addresses leave with the real sender domain, never @localhost.
    assert record["mail_from"].endswith("@" + SENDER_DOMAIN), record["mail_from"]
    assert record["rcpt_to"] == ["someone@recipient.example.test"]


def test_check_mode_on_converged_hosts_changes_nothing_and_shows_no_secret():
    harness.assert_check_mode_changes_nothing(HOSTS)


def test_provider_headers_arrive_and_replace_the_messages_own():
    """relay_headers: SES's configuration set and SendGrid's X-SMTPAPI reach the provider, once."""
    checks = {
        "d12-ses": ("x-ses-configuration-set", "fleet-events"),
        "d13-sendgrid": ("x-smtpapi", '{"category": ["molecule"]}'),
    }
    for name, (header, value) in checks.items():
        target = harness.host(name)
        tag = harness.new_tag()
        # The message brings its own copy of the header: the role's value replaces it.
        message = (
            "From: root@example.test\nTo: someone@recipient.example.test\nSubject: headers\n%s: from the app\n"
            "X-Test-Tag: %s\n\nheaders\n" % (header, tag)
        )
        result = target.run(
            "/usr/sbin/sendmail -f root@example.test someone@recipient.example.test <<'EOF'\n%sEOF", message
        )
        assert result.rc == 0, result.stderr
        record = harness.wait_for_message(tag)
        assert record is not None, harness.queue_report(target)
        assert record["headers"].get(header) == value, (name, record["headers"])


def test_mail_for_root_goes_to_the_ops_address_and_leaves_the_sender_alone():
    target = harness.host("d13-sendgrid")
    tag = harness.new_tag()
    # As cron does: to the bare local user.
    result = target.run(
        "printf 'Subject: cron output\\nX-Test-Tag: %s\\n\\nfrom cron\\n' | /usr/sbin/sendmail -f root root", tag
    )
    assert result.rc == 0, result.stderr
    record = harness.wait_for_message(tag)
    assert record is not None, harness.queue_report(target)
    assert record["rcpt_to"] == ["ops@example.test"]
    assert record["mail_from"] == "root@" + SENDER_DOMAIN
    assert record["provider"] == "sendgrid"
