# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Faults: the smarthost down, refusing, throttling or impersonated; a rejected configuration; a restart.

Each test starts from an empty queue and the emulator in normal mode, and
leaves it so. Counts are by X-Test-Tag, so a message delivered twice shows.
"""

import time

import harness
import reliability as rel


def settle(host):
    """Normal mode, empty queue, and no cached SMTP connection left from the previous test."""
    harness.emulator_mode("normal")
    assert rel.wait_for_empty_queue(host, 90, flush_every=5), rel.queue(host)
    # Postfix keeps a delivered-to connection for smtp_connection_cache_time_limit (2s);
    # a cached, already authenticated session would bypass the next test's failure mode.
    time.sleep(3)


def first_reason(reasons):
    return sorted(reasons)[0][:200] if reasons else ""


def test_smarthost_down_200_messages_deferred_none_bounced_then_all_delivered_once(outcome):
    host = rel.target()
    settle(host)
    prefix = harness.new_tag()
    sent = 200
    outcome.set(
        section="Faults",
        item="smarthost down",
        tried="Smarthost down (emulator refuses connections); %d messages submitted with sendmail; "
        "emulator back, postqueue -f" % sent,
    )
    since = time.time()
    harness.emulator_mode("down")
    try:
        submit_seconds, failures, stderr = rel.submit(host, prefix, sent, parallel=4)
        rel.wait_until(lambda: rel.queue_counts(host)["deferred"] >= sent, 120)
        counts = rel.queue_counts(host)
        reasons = set(rel.delay_reasons(host))
    finally:
        harness.emulator_mode("normal")
    started = time.monotonic()
    rel.flush(host)
    figures = rel.wait_for_batch(host, prefix, sent, timeout=240, flush_every=5)
    seconds = time.monotonic() - started
    bounced = rel.bounced_lines(host, since)
    notices = rel.bounce_notices_since(since)
    outcome.set(seconds=seconds, **figures)
    outcome.set(
        happened="%d of %d deferred while down (%s), %d bounced, %d bounce notices; after the flush %d arrived "
        "(%.1fs)"
        % (counts["deferred"], sent, first_reason(reasons), len(bounced), len(notices), figures["arrived"], seconds),
        deferred_while_down=counts["deferred"],
        queue_while_down=dict(counts),
        submit_seconds=submit_seconds,
        bounced=len(bounced),
        bounce_notices=len(notices),
    )
    assert failures == 0, stderr
    assert counts["deferred"] == sent, counts
    assert all("Connection refused" in reason or "temporarily suspended" in reason for reason in reasons), reasons
    assert not bounced, bounced[:5]
    assert not notices
    assert figures["arrived"] == sent and figures["lost"] == 0, figures
    assert figures["duplicated"] == 0, figures


def test_wrong_credentials_535_deferred_not_bounced_reason_visible(outcome):
    host = rel.target()
    settle(host)
    prefix = harness.new_tag()
    sent = 5
    outcome.set(
        section="Faults",
        item="535 wrong credentials",
        tried="Smarthost answers AUTH with 535 5.7.8 (emulator mode auth_fail); %d messages; then normal and postqueue "
        "-f" % sent,
    )
    since = time.time()
    harness.emulator_mode("auth_fail")
    try:
        rel.submit(host, prefix, sent)
        rel.wait_until(lambda: rel.queue_counts(host)["deferred"] >= sent, 90)
        counts = rel.queue_counts(host)
        reasons = set(rel.delay_reasons(host))
        log_lines = [line for line in rel.mail_log(host, since).splitlines() if "535" in line]
        arrived_while_failing = len(rel.tag_counts(prefix))
    finally:
        harness.emulator_mode("normal")
    started = time.monotonic()
    figures = rel.wait_for_batch(host, prefix, sent, timeout=120, flush_every=5)
    seconds = time.monotonic() - started
    bounced = rel.bounced_lines(host, since)
    outcome.set(seconds=seconds, **figures)
    outcome.set(
        happened="%d of %d deferred, %d bounced; postqueue shows: %s; after the fix all retried"
        % (counts["deferred"], sent, len(bounced), first_reason(reasons)),
        log_lines_with_535=len(log_lines),
    )
    assert counts["deferred"] == sent, counts
    assert arrived_while_failing == 0
    assert reasons and all("535" in reason for reason in reasons), reasons
    assert log_lines, "the 535 is not in Postfix's log"
    assert not bounced, bounced[:5]
    assert figures["lost"] == 0 and figures["duplicated"] == 0, figures


def test_throttling_454_deferred_then_retried_by_postfix_until_delivered(outcome):
    host = rel.target()
    settle(host)
    prefix = harness.new_tag()
    sent = 20
    outcome.set(
        section="Faults",
        item="454 throttling",
        tried="Smarthost answers MAIL FROM with 454 4.7.0 throttling (emulator mode throttle); %d messages; "
        "throttling ends; no flush: Postfix's own retry (minimal_backoff_time 5s)" % sent,
    )
    since = time.time()
    harness.emulator_mode("throttle")
    try:
        rel.submit(host, prefix, sent)
        rel.wait_until(lambda: rel.queue_counts(host)["deferred"] >= sent, 90)
        counts = rel.queue_counts(host)
        reasons = set(rel.delay_reasons(host))
        throttled = [
            record
            for record in harness.records("replies")
            if record.get("code") == "454" and record.get("peer") == rel.RELAY_IP and record.get("ts", 0) >= since
        ]
    finally:
        harness.emulator_mode("normal")
    started = time.monotonic()
    figures = rel.wait_for_batch(host, prefix, sent, timeout=120)
    seconds = time.monotonic() - started
    bounced = rel.bounced_lines(host, since)
    outcome.set(seconds=seconds, **figures)
    outcome.set(
        happened="%d of %d deferred with %s; %d 454 replies seen by the smarthost; %d bounced; "
        "retried without a flush, all delivered %.1fs after throttling ended"
        % (counts["deferred"], sent, first_reason(reasons), len(throttled), len(bounced), seconds)
    )
    assert counts["deferred"] == sent, counts
    assert reasons and all("454" in reason for reason in reasons), reasons
    assert throttled
    assert not bounced, bounced[:5]
    assert figures["lost"] == 0 and figures["duplicated"] == 0, figures


def impersonation(outcome, name, ip, mode, level, expect_delivery):
    """Run one man-in-the-middle case; return what was observed."""
    host = rel.target(name)
    settle(host)
    prefix = harness.new_tag()
    since = time.time()
    harness.emulator_mode(mode)
    try:
        rel.submit(host, prefix, 1)
        if expect_delivery:
            rel.wait_until(lambda: rel.tag_counts(prefix), 60)
        else:
            rel.wait_until(lambda: rel.queue_counts(host)["deferred"] >= 1, 60)
        counts = rel.queue_counts(host)
        reasons = set(rel.delay_reasons(host))
        credentials = rel.credentials_from(ip, since)
        intercepted = [
            record for record in harness.records("messages") if (harness.record_tag(record) or "").startswith(prefix)
        ]
    finally:
        harness.emulator_mode("normal")
    figures = rel.wait_for_batch(host, prefix, 1, timeout=60, flush_every=5)
    outcome.set(**figures)
    outcome.set(
        section="Faults",
        tls_level=level,
        credentials_received=len(credentials),
        queued_while_attacked=counts["deferred"],
        intercepted=len(intercepted),
        reason=first_reason(reasons),
    )
    return counts, reasons, credentials, intercepted, figures


def test_no_starttls_secure_sends_no_credentials_and_keeps_mail_queued(outcome):
    outcome.set(
        item="no STARTTLS (secure)",
        tried="rel-relay, relay_tls_security_level secure; the smarthost strips STARTTLS and offers AUTH in clear",
    )
    counts, reasons, credentials, intercepted, figures = impersonation(
        outcome, rel.RELAY, rel.RELAY_IP, "no_starttls", "secure", expect_delivery=False
    )
    outcome.set(
        happened="%d credentials received by the attacker, %d message(s) intercepted, %d queued: %s"
        % (len(credentials), len(intercepted), counts["deferred"], first_reason(reasons))
    )
    assert not credentials, credentials
    assert not intercepted
    assert counts["deferred"] == 1 and any("TLS" in reason for reason in reasons), (counts, reasons)
    assert figures["lost"] == 0 and figures["duplicated"] == 0, figures


def test_untrusted_certificate_secure_sends_no_credentials_and_keeps_mail_queued(outcome):
    outcome.set(
        item="untrusted certificate (secure)",
        tried="rel-relay, relay_tls_security_level secure; the smarthost presents a rogue CA's certificate "
        "and accepts AUTH (a man in the middle)",
    )
    counts, reasons, credentials, intercepted, figures = impersonation(
        outcome, rel.RELAY, rel.RELAY_IP, "untrusted_cert", "secure", expect_delivery=False
    )
    outcome.set(
        happened="%d credentials received by the attacker, %d message(s) intercepted, %d queued: %s"
        % (len(credentials), len(intercepted), counts["deferred"], first_reason(reasons))
    )
    assert not credentials, credentials
    assert not intercepted
    assert counts["deferred"] == 1 and any("certificate" in reason.lower() for reason in reasons), (counts, reasons)
    assert figures["lost"] == 0 and figures["duplicated"] == 0, figures


def test_no_starttls_encrypt_also_sends_no_credentials(outcome):
    outcome.set(
        item="no STARTTLS (encrypt)",
        tried="rel-encrypt, relay_tls_security_level encrypt; the smarthost strips STARTTLS",
    )
    counts, reasons, credentials, intercepted, figures = impersonation(
        outcome, rel.ENCRYPT, rel.ENCRYPT_IP, "no_starttls", "encrypt", expect_delivery=False
    )
    outcome.set(
        happened="%d credentials received, %d intercepted, %d queued: %s"
        % (len(credentials), len(intercepted), counts["deferred"], first_reason(reasons))
    )
    assert not credentials, credentials
    assert not intercepted
    assert counts["deferred"] == 1, counts
    assert figures["lost"] == 0 and figures["duplicated"] == 0, figures


def test_untrusted_certificate_encrypt_hands_the_password_to_the_man_in_the_middle(outcome):
    """The documented risk of encrypt: this test passes when the attack SUCCEEDS there."""
    outcome.set(
        item="untrusted certificate (encrypt) - the documented risk",
        tried="rel-encrypt, relay_tls_security_level encrypt; the smarthost presents a rogue certificate "
        "(a man in the middle). Expected: the attack works, which is why secure is the default",
    )
    counts, reasons, credentials, intercepted, figures = impersonation(
        outcome, rel.ENCRYPT, rel.ENCRYPT_IP, "untrusted_cert", "encrypt", expect_delivery=True
    )
    certificates = sorted(set(record.get("certificate") for record in intercepted))
    outcome.set(
        happened="RISK CONFIRMED: the man in the middle received %d credential(s) (user %s) and %d message(s) "
        "over a %s certificate"
        % (
            len(credentials),
            ", ".join(sorted(set(c.get("username") or "" for c in credentials))),
            len(intercepted),
            "/".join(str(c) for c in certificates),
        )
    )
    assert credentials, "encrypt did not send credentials to the rogue certificate: the documented risk no longer holds"
    assert intercepted and certificates == ["rogue"], intercepted
    assert figures["lost"] == 0 and figures["duplicated"] == 0, figures


def test_configuration_postfix_rejects_is_rolled_back_and_postfix_still_relays(outcome, failed_converge):
    host = rel.target()
    settle(host)
    run = failed_converge
    prefix = harness.new_tag()
    figures = rel.deliver_one(host, prefix)
    running = rel.postfix_running(host)
    effective = host.run("postconf -h default_process_limit").stdout.strip()
    outcome.set(
        section="Faults",
        item="rejected configuration",
        tried="converge with relay_extra_parameters {default_process_limit: many}, which postfix check rejects",
        seconds=run["seconds"],
        **figures,
    )
    outcome.set(
        happened="role failed (rc %d) with Postfix's message: %s; main.cf %s, master.cf %s; Postfix %s; "
        "a message sent afterwards arrived %d time(s)"
        % (
            run["rc"],
            run["postfix_said"] or "(none)",
            "byte-identical" if run["main_cf_before"] == run["main_cf_after"] else "CHANGED",
            "byte-identical" if run["master_cf_before"] == run["master_cf_after"] else "CHANGED",
            "running" if running else "NOT running",
            figures["arrived"] + figures["duplicated"],
        ),
        default_process_limit_after=effective,
    )
    assert run["rc"] != 0
    assert "postfix check rejected" in run["output"], rel.fatal_excerpt(run["output"])
    assert "default_process_limit" in run["postfix_said"], rel.fatal_excerpt(run["output"])
    assert run["main_cf_before"] == run["main_cf_after"]
    assert run["master_cf_before"] == run["master_cf_after"]
    assert effective == "100"
    assert running
    assert figures["arrived"] == 1 and figures["duplicated"] == 0, figures


def test_rejected_configuration_with_a_credential_change_restores_the_credentials_too(outcome):
    """The same rollback when the failed run also changed the password: the old one must be back."""
    host = rel.target()
    settle(host)
    wrong_password = "Rel-Canary-Rollback-%s" % harness.new_tag()[-12:]
    maps_before = {name: rel.file_sha256(host, "/etc/postfix/%s" % name) for name in ("sasl_passwd", "sasl_passwd.db")}
    outcome.set(
        section="Faults",
        item="rejected configuration with a password change",
        tried="converge changing relay_password AND adding a relay_extra_parameters entry postfix check rejects",
    )
    # The probe would refuse the unknown password before any write; this test is about the write's rollback.
    rc, output = rel.converge(
        "-e",
        "relay_password=%s" % wrong_password,
        "-e",
        '{"relay_extra_parameters": {"default_process_limit": "many"}}',
        "-e",
        '{"relay_probe_before_switch": false}',
    )
    maps_after = {name: rel.file_sha256(host, "/etc/postfix/%s" % name) for name in maps_before}
    new_password_live = host.run("grep -qF -- %s /etc/postfix/sasl_passwd", wrong_password).rc == 0
    prefix = harness.new_tag()
    try:
        figures = rel.deliver_one(host, prefix, timeout=30)
        reasons = set(rel.delay_reasons(host))
    finally:
        # Put the scenario's own credentials back whatever happened.
        restore_rc, restore_output = rel.converge()
        rel.flush(host)
    figures = rel.wait_for_batch(host, prefix, 1, timeout=60, flush_every=5) if restore_rc == 0 else figures
    outcome.set(
        happened="role failed (rc %d); main.cf/master.cf restored, SASL map %s (the new password %s live); "
        "a message sent afterwards: %s"
        % (
            rc,
            "unchanged" if maps_before == maps_after else "NOT restored",
            "is" if new_password_live else "is not",
            "delivered" if not reasons else "deferred: %s" % sorted(reasons)[0][:160],
        ),
        sasl_map_restored=maps_before == maps_after,
    )
    assert rc != 0 and "postfix check rejected" in output, rel.fatal_excerpt(output)
    assert restore_rc == 0, rel.fatal_excerpt(restore_output)
    assert maps_before == maps_after, (
        "the failed run left its new SASL credentials in place (only main.cf and master.cf are restored)"
    )
    assert not reasons, reasons


def test_a_rotated_password_the_relay_refuses_is_never_written(outcome):
    """Rotation is probed: a mistyped new password fails the run before any write; the old one keeps relaying."""
    host = rel.target()
    settle(host)
    mistyped = "Rel-Canary-Rotation-%s" % harness.new_tag()[-12:]
    before = rel.postfix_files_checksum(host)
    outcome.set(
        section="Faults",
        item="rotation to a password the relay refuses",
        tried="converge with a new relay_password the smarthost does not know (the probe on, the default); "
        "then one message with sendmail",
    )
    rc, output = rel.converge("-e", "relay_password=%s" % mistyped)
    unchanged = rel.postfix_files_checksum(host) == before
    figures = rel.deliver_one(host, harness.new_tag())
    refusal = rel.fatal_excerpt(output, limit=300)
    outcome.set(
        **figures,
        happened="role failed (rc %d) naming %s; /etc/postfix %s; the password printed %d time(s); "
        "a message sent afterwards arrived %d time(s)"
        % (
            rc,
            "credentials_rejected" if "credentials_rejected" in output else "no cause",
            "byte-identical" if unchanged else "CHANGED",
            output.count(mistyped),
            figures["arrived"],
        ),
    )
    assert rc != 0 and "refused the new configuration before anything was written" in output, refusal
    assert "credentials_rejected" in output and "check relay_username and relay_password" in output, refusal
    assert unchanged
    assert mistyped not in output
    assert figures["arrived"] == 1 and figures["duplicated"] == 0, figures


def test_restart_with_mail_queued_loses_nothing(outcome):
    host = rel.target()
    settle(host)
    prefix = harness.new_tag()
    sent = 50
    outcome.set(
        section="Faults",
        item="restart with mail queued",
        tried="Smarthost down, %d messages queued; the container is shut down through systemd (SIGRTMIN+3) "
        "and started again; smarthost back, postqueue -f" % sent,
    )
    harness.emulator_mode("down")
    try:
        rel.submit(host, prefix, sent, parallel=4)
        rel.wait_until(lambda: rel.queue_counts(host)["deferred"] >= sent, 90)
        before = rel.queue_counts(host)
        started = time.monotonic()
        rel.docker("kill", "--signal", "SIGRTMIN+3", rel.RELAY)
        stopped = rel.wait_until(
            lambda: rel.docker("inspect", "-f", "{{.State.Running}}", rel.RELAY).stdout.strip() == "false", 60
        )
        if not stopped:
            rel.docker("stop", rel.RELAY)
        rel.docker("start", rel.RELAY)
        host = rel.target()
        back = rel.wait_until(lambda: rel.postfix_running(host), 120)
        restart_seconds = time.monotonic() - started
        after = rel.queue_counts(host)
    finally:
        harness.emulator_mode("normal")
    started = time.monotonic()
    figures = rel.wait_for_batch(host, prefix, sent, timeout=120, flush_every=5)
    seconds = time.monotonic() - started
    outcome.set(seconds=seconds, **figures)
    happened = (
        "%d queued before the restart, %d after it (clean shutdown: %s, Postfix back in %.1fs); %d arrived after the "
        "flush" % (sum(before.values()), sum(after.values()), bool(stopped), restart_seconds, figures["arrived"])
    )
    outcome.set(
        happened=happened,
        restart_seconds=restart_seconds,
        queued_before=sum(before.values()),
        queued_after=sum(after.values()),
    )
    assert back, "Postfix did not come back after the restart"
    assert sum(before.values()) == sent and sum(after.values()) == sent, (before, after)
    assert figures["arrived"] == sent and figures["lost"] == 0 and figures["duplicated"] == 0, figures
