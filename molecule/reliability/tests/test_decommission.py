# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Decommission (relay_state: absent), run last (conftest.py): oa-office365 goes back to a local-only
Postfix, rel-gmail loses Postfix altogether. Afterwards no secret of any provider is in any file of
either host, the message that could not leave is on hold (not bounced, not sent), local mail to root
is still delivered, and a second run changes nothing."""

import json
import time

import harness
import reliability as rel

LOCAL_ONLY = "oa-office365"
REMOVED = "rel-gmail"
SECTION = "Decommission"
SEARCHED = "/etc /var /tmp /root /home /run /usr/local /usr/libexec"
# What the role wrote for an OAuth 2.0 relay besides its maps: all of it must go.
OAUTH2_LEFTOVERS = (
    "/etc/smarthost-postfix",
    "/var/cache/smarthost-postfix",
    "/usr/libexec/smarthost-postfix",
    "/etc/systemd/system/smarthost-oauth2-renew@.service",
    "/etc/systemd/system/smarthost-oauth2-renew@.timer",
)
ABSENT = [
    "-e",
    "relay_state=absent",
    "-e",
    json.dumps(
        {
            "relay_absent_postfix": "{{ 'remove' if inventory_hostname == '%s' else 'local_only' }}" % REMOVED,
            "relay_absent_drain_timeout": 10,
        }
    ),
]


def files_with_secrets(host):
    """{secret's first characters: files under SEARCHED that hold it} for every secret the emulator knows."""
    found = {}
    for secret in rel.provider_passwords():
        files = host.run("grep -rlF -- %s " + SEARCHED + " 2>/dev/null", secret).stdout.split()
        if files:
            found[secret[:4] + "..."] = files
    return found


def test_decommission_removes_every_secret_holds_what_could_not_leave_and_changes_nothing_twice(outcome):
    local_only, removed = rel.target(LOCAL_ONLY), rel.target(REMOVED)
    harness.emulator_mode("normal")
    for host in (local_only, removed):
        assert rel.wait_for_empty_queue(host, 120, flush_every=5), rel.queue(host)
    outcome.set(
        section=SECTION,
        item="relay_state absent",
        tried="%s (OAuth 2.0, local_only) with one message Office 365 keeps throttling, %s (password, remove): "
        "converge with relay_state absent and a 10 s drain, twice; grep %s for every provider secret"
        % (LOCAL_ONLY, REMOVED, SEARCHED),
    )
    before = {name: files_with_secrets(host) for name, host in ((LOCAL_ONLY, local_only), (REMOVED, removed))}
    # The search finds what it looks for: both hosts hold their secrets while they relay.
    assert before[LOCAL_ONLY] and before[REMOVED], before

    since = time.time()
    prefix = harness.new_tag()
    harness.emulator_mode("throttle", "--providers", "office365")
    try:
        rel.submit(local_only, prefix, 1)
        assert rel.wait_until(lambda: rel.queue_counts(local_only)["deferred"], 60), rel.queue(local_only)
        started = time.monotonic()
        rc, output = rel.converge(*ABSENT, limit="%s,%s" % (LOCAL_ONLY, REMOVED))
        seconds = time.monotonic() - started
    finally:
        harness.emulator_mode("normal")
    assert rc == 0, rel.fatal_excerpt(output)
    rc_again, output_again = rel.converge(*ABSENT, limit="%s,%s" % (LOCAL_ONLY, REMOVED))
    recap = harness.play_recap(output_again)

    after = {name: files_with_secrets(host) for name, host in ((LOCAL_ONLY, local_only), (REMOVED, removed))}
    leftovers = [path for path in OAUTH2_LEFTOVERS if local_only.file(path).exists]
    oauth2_user = local_only.run("id smarthost-oauth2").rc == 0
    held = rel.queue_counts(local_only)
    local_tag = harness.new_tag()
    local_only.run("printf 'Subject: local\\nX-Test-Tag: %s\\n\\ncron output\\n' | /usr/sbin/sendmail root", local_tag)
    delivered_locally = rel.wait_until(
        lambda: local_only.run("grep -c -- %s /var/mail/root", local_tag).stdout.strip() == "1", 30
    )
    relayhost = local_only.run("postconf -h relayhost").stdout.strip()
    postfix_removed = removed.run("dpkg-query -W -f='${Status}' postfix").stdout.strip() != "install ok installed"
    outcome.set(
        sent=1,
        arrived=len(rel.tag_counts(prefix)),
        seconds=round(seconds, 1),
        happened="secrets before %s, after %s; OAuth 2.0 leftovers %s, its user %s; queue %s; bounced %d; "
        "local mail to root delivered: %s; relayhost %r; Postfix removed from %s: %s; second run %s"
        % (
            {name: sorted(found) for name, found in before.items()},
            after,
            leftovers,
            "kept" if oauth2_user else "removed",
            dict(held),
            len(rel.bounced_lines(local_only, since)),
            bool(delivered_locally),
            relayhost,
            REMOVED,
            postfix_removed,
            {name: counts["changed"] for name, counts in recap.items()},
        ),
    )
    assert after == {LOCAL_ONLY: {}, REMOVED: {}}, after
    assert not leftovers and not oauth2_user, (leftovers, oauth2_user)
    # Held, never bounced nor sent: postsuper -H ALL gives it back once the host relays again.
    assert dict(held) == {"hold": 1}, rel.queue(local_only)
    assert not rel.bounced_lines(local_only, since)
    assert not rel.tag_counts(prefix)
    assert delivered_locally and relayhost == "" and rel.postfix_running(local_only)
    assert local_only.run("postconf -h inet_interfaces").stdout.strip() == "loopback-only"
    assert postfix_removed
    assert rc_again == 0 and {name: counts["changed"] for name, counts in recap.items()} == {
        LOCAL_ONLY: 0,
        REMOVED: 0,
    }, rel.fatal_excerpt(output_again)
