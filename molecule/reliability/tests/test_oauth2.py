# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""OAuth 2.0 and client certificates: tokens fetched and renewed on the host, every failure of the
token plumbing deferred and delivered once it recovers, the secrets in no output and no file others
can read, and the Office 365 connector taking the host by its certificate.

oa-office365 uses Entra ID's client credentials grant, oa-gmail Google's refresh token grant, both
against the emulator's token endpoints under their real names; mail leaves through the role's pipe
transport and msmtp with AUTH XOAUTH2. Counts are by X-Test-Tag, so a duplicate shows.
"""

import time

import harness
import pytest
import reliability as rel

OFFICE365 = "oa-office365"
GMAIL = "oa-gmail"
CONNECTOR = "oa-connector"
SECTION = "OAuth 2.0 and certificates"
CONFIG = "/etc/smarthost-postfix/oauth2/relay.json"
CACHE = "/var/cache/smarthost-postfix/oauth2/relay.json"
SECRETS_SEARCHED = "/etc /var /tmp /root /home /run /usr/local"


def oauth2_of(provider):
    return harness.providers()[provider]["oauth2"]


def settle(host):
    """The emulator as it should be, the target's queue empty."""
    harness.emulator_mode("normal")
    harness.emulator_oauth("normal", "--token-lifetime", "3599")
    assert rel.wait_for_empty_queue(host, 120, flush_every=5), rel.queue(host)


def batch_records(prefix):
    return [
        record for record in harness.records("messages") if (harness.record_tag(record) or "").startswith(prefix + "-")
    ]


def token_requests(client_id, since):
    return [
        record
        for record in harness.records("tokens")
        if record.get("client_id") == client_id and record.get("ts", 0) >= since
    ]


@pytest.mark.parametrize(
    "name, provider, identity",
    [
        (OFFICE365, "office365", "mailboxes"),
        (GMAIL, "gmail", "account"),
    ],
)
def test_xoauth2_delivers_as_the_mailbox_over_verified_tls(outcome, name, provider, identity):
    host = rel.target(name)
    settle(host)
    expected_user = oauth2_of(provider)[identity][0] if identity == "mailboxes" else oauth2_of(provider)[identity]
    outcome.set(
        section=SECTION,
        item="%s XOAUTH2" % provider,
        tried="%s with relay_auth oauth2: one message with sendmail on %s" % (provider, name),
    )
    prefix = harness.new_tag()
    figures = rel.deliver_one(host, prefix)
    records = batch_records(prefix)
    record = records[0] if records else {}
    outcome.set(**figures)
    outcome.set(
        happened="arrived as %s with %s over %s %s, certificate %s, token %s"
        % (
            record.get("username"),
            record.get("auth_mechanism"),
            record.get("tls"),
            record.get("tls_version"),
            record.get("certificate"),
            record.get("token_status"),
        )
    )
    assert figures["arrived"] == 1 and figures["duplicated"] == 0, figures
    assert record["provider"] == provider
    assert record["auth_mechanism"] == "XOAUTH2" and record["access"] == "oauth2"
    assert record["username"] == expected_user
    assert record["token_status"] == "valid"
    assert record["tls"] == "starttls" and record["certificate"] == "trusted"
    assert record["tls_version"] in ("TLSv1.2", "TLSv1.3")


def test_mail_sent_after_the_token_expired_leaves_with_a_fresh_one(outcome):
    host = rel.target(OFFICE365)
    settle(host)
    client_id = oauth2_of("office365")["client_id"]
    outcome.set(
        section=SECTION,
        item="token expiry",
        tried="tokens issued for 20 s; one message, 25 s later another; no converge, no restart",
    )
    started_at = host.run("systemctl show -p ActiveEnterTimestampMonotonic postfix").stdout
    harness.emulator_oauth("normal", "--token-lifetime", "20")
    try:
        # The next delivery fetches a 20-second token.
        host.run("rm -f %s" % CACHE)
        since = time.time()
        first = rel.deliver_one(host, harness.new_tag())
        time.sleep(25)
        prefix = harness.new_tag()
        second = rel.deliver_one(host, prefix)
    finally:
        harness.emulator_oauth("normal", "--token-lifetime", "3599")
    issued = [record for record in token_requests(client_id, since) if record.get("success")]
    record = (batch_records(prefix) or [{}])[0]
    outcome.set(
        sent=2,
        arrived=first["arrived"] + second["arrived"],
        lost=first["lost"] + second["lost"],
        duplicated=first["duplicated"] + second["duplicated"],
        happened="%d tokens issued; the message after expiry arrived with a %s token"
        % (len(issued), record.get("token_status")),
    )
    assert first["arrived"] == 1 and second["arrived"] == 1, (first, second)
    assert len(issued) >= 2, issued
    assert record.get("token_status") == "valid"
    assert host.run("systemctl show -p ActiveEnterTimestampMonotonic postfix").stdout == started_at


def test_identity_provider_down_defers_then_delivers_once(outcome):
    host = rel.target(OFFICE365)
    settle(host)
    outcome.set(
        section=SECTION,
        item="token endpoint down",
        tried="no cached token, the token endpoint refusing connections; one message; endpoint back, postqueue -f",
    )
    host.run("rm -f %s" % CACHE)
    since = time.time()
    prefix = harness.new_tag()
    harness.emulator_oauth("down")
    try:
        rel.submit(host, prefix, 1)
        deferred = rel.wait_until(lambda: rel.queue_counts(host)["deferred"] >= 1, 60)
        reasons = rel.delay_reasons(host)
    finally:
        harness.emulator_oauth("normal")
    rel.flush(host)
    figures = rel.wait_for_batch(host, prefix, 1, timeout=90, flush_every=5)
    bounced = rel.bounced_lines(host, since)
    outcome.set(**figures)
    outcome.set(
        happened="deferred (%s), %d bounced; after the flush %d arrived"
        % ((reasons or [""])[0][:160], len(bounced), figures["arrived"])
    )
    assert deferred, rel.queue(host)
    assert any("token" in reason.lower() for reason in reasons), reasons
    assert not bounced, bounced
    assert figures["arrived"] == 1 and figures["duplicated"] == 0, figures


@pytest.mark.parametrize("cached", [True, False], ids=["valid-token-cached", "no-token"])
def test_200_messages_during_an_identity_provider_outage_all_arrive_once(outcome, cached):
    host = rel.target(OFFICE365)
    settle(host)
    sent = 200
    outcome.set(
        section=SECTION,
        item="IdP outage, %s" % ("token cached" if cached else "no token"),
        tried="token endpoint down, %s; %d messages with sendmail; endpoint back, postqueue -f"
        % ("a valid token cached" if cached else "no cached token", sent),
    )
    if cached:
        assert rel.deliver_one(host, harness.new_tag())["arrived"] == 1
    else:
        host.run("rm -f %s" % CACHE)
    since = time.time()
    prefix = harness.new_tag()
    harness.emulator_oauth("down")
    try:
        rel.submit(host, prefix, sent, parallel=4)
        if cached:
            # The cached token carries the whole batch through the outage.
            rel.wait_for_batch(host, prefix, sent, timeout=240, flush_every=10)
            queued = rel.queue_counts(host)
        else:
            # Retried every few seconds (backoff 5s here), deferred mail moves back to the active queue:
            # the counts when all of it was deferred at once are the ones to keep.
            def all_deferred():
                counts = rel.queue_counts(host)
                return counts if counts["deferred"] >= sent else None

            queued = rel.wait_until(all_deferred, 180) or rel.queue_counts(host)
        during = rel.arrival_figures(prefix, sent)
    finally:
        harness.emulator_oauth("normal")
    figures = rel.wait_for_batch(host, prefix, sent, timeout=300, flush_every=5)
    bounced = rel.bounced_lines(host, since)
    outcome.set(**figures)
    outcome.set(
        happened="%d arrived during the outage, %d deferred; %d bounced; in the end %d arrived"
        % (during["arrived"], queued["deferred"], len(bounced), figures["arrived"])
    )
    if cached:
        assert during["arrived"] == sent, during
    else:
        assert during["arrived"] == 0 and queued["deferred"] == sent, (during, queued)
    assert not bounced, bounced[:5]
    assert figures["arrived"] == sent and figures["lost"] == 0 and figures["duplicated"] == 0, figures


def test_535_after_a_good_token_defers_then_delivers(outcome):
    host = rel.target(OFFICE365)
    settle(host)
    outcome.set(
        section=SECTION,
        item="535 after a token",
        tried="the emulator answers Exchange's 535 5.7.3 to a valid token (no mailbox permission); "
        "one message; then normal again, postqueue -f",
    )
    since = time.time()
    prefix = harness.new_tag()
    harness.emulator_mode("auth_fail", "--providers", "office365")
    try:
        rel.submit(host, prefix, 1)
        deferred = rel.wait_until(lambda: rel.queue_counts(host)["deferred"] >= 1, 60)
        reasons = rel.delay_reasons(host)
    finally:
        harness.emulator_mode("normal")
    figures = rel.wait_for_batch(host, prefix, 1, timeout=90, flush_every=5)
    bounced = rel.bounced_lines(host, since)
    outcome.set(**figures)
    outcome.set(
        happened="deferred (%s), %d bounced, then %d arrived"
        % ((reasons or [""])[0][:160], len(bounced), figures["arrived"])
    )
    assert deferred, rel.queue(host)
    assert any("5.7.3" in reason for reason in reasons), reasons
    assert not bounced
    assert figures["arrived"] == 1


def test_secrets_only_in_the_delivering_users_file(outcome):
    hosts = {OFFICE365: oauth2_of("office365")["client_secret"], GMAIL: oauth2_of("gmail")["refresh_token"]}
    outcome.set(
        section=SECTION,
        item="secrets on the host",
        tried="grep every file under %s, the journal and ps during 20 deliveries for the client secret "
        "and the refresh token" % SECRETS_SEARCHED,
    )
    findings = {}
    for name, secret in hosts.items():
        host = rel.target(name)
        files = host.run("grep -rlF -- %s " + SECRETS_SEARCHED + " 2>/dev/null", secret).stdout.split()
        journal = host.run("journalctl --no-pager -o cat | grep -cF -- %s", secret).stdout.strip()
        # Sampled by a command that holds no secret itself (its own argv is sampled too), searched after.
        host.run(
            "for i in $(seq 1 20); do printf 'Subject: ps\\n\\nx\\n' | /usr/sbin/sendmail root@recipient.example.test; "
            "done & for i in $(seq 1 100); do ps -eo args; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; "
            "sleep 0.05; done > /root/oauth2-ps-samples; wait"
        )
        seen_in_ps = host.run(
            "grep -cF -- %s /root/oauth2-ps-samples; rm -f /root/oauth2-ps-samples", secret
        ).stdout.strip()
        findings[name] = {
            "files": files,
            "journal": journal,
            "ps": seen_in_ps,
            "config": rel.owner_mode(host, CONFIG),
            "cache": rel.owner_mode(host, CACHE),
            "config_dir": rel.owner_mode(host, "/etc/smarthost-postfix/oauth2"),
        }
    outcome.set(
        happened="; ".join(
            "%s: found in %s, journal %s, ps/environ %s, config %s"
            % (name, f["files"], f["journal"], f["ps"], f["config"])
            for name, f in findings.items()
        )
    )
    for name, found in findings.items():
        assert found["files"] == [CONFIG], (name, found)
        assert found["journal"] == "0" and found["ps"] == "0", (name, found)
        assert found["config"] == "smarthost-oauth2:smarthost-oauth2 600", (name, found)
        assert found["cache"] == "smarthost-oauth2:smarthost-oauth2 600", (name, found)
        assert found["config_dir"] == "root:smarthost-oauth2 750", (name, found)


def test_the_connector_takes_the_host_by_its_client_certificate(outcome):
    host = rel.target(CONNECTOR)
    settle(host)
    outcome.set(
        section=SECTION,
        item="connector certificate",
        tried="office365_connector with relay_auth certificate (CN=relay.example.test); one message",
    )
    prefix = harness.new_tag()
    figures = rel.deliver_one(host, prefix)
    record = (batch_records(prefix) or [{}])[0]
    key = rel.owner_mode(host, "/etc/ssl/client.key")
    outcome.set(**figures)
    outcome.set(
        happened="arrived with access %s, client certificate %s (verified %s), AUTH %s; key %s"
        % (
            record.get("access"),
            record.get("client_cert_subject"),
            record.get("client_cert_verified"),
            record.get("auth_mechanism"),
            key,
        )
    )
    assert figures["arrived"] == 1, figures
    assert record["provider"] == "office365_connector" and record["local_port"] == 25
    assert record["access"] == "client_certificate" and record["client_cert_verified"] is True
    assert "relay.example.test" in record["client_cert_subject"]
    assert record["auth_mechanism"] is None
    assert record["tls"] == "starttls" and record["certificate"] == "trusted"
    # Copied 0644 in prepare: the role keeps a client key root-only.
    assert key == "root:root 600"
