# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Security: no open relay, no listening null client, no password in any output, secrets 0600."""

import os
import time
import uuid

import harness
import reliability as rel

PORT_PROBE = r"""
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as sock:
        sock.settimeout(10)
        print("open", sock.recv(200).decode(errors="replace").strip())
except OSError as exc:
    print("closed", exc.__class__.__name__)
"""


def probe(client, address, port=25):
    return client.check_output("python3 -c %s %s %s", PORT_PROBE, address, str(port))


def test_open_relay_refused_from_outside_mynetworks(outcome):
    outsider = harness.host(rel.OUTSIDER)
    inside = harness.host(rel.ENCRYPT)
    refused_tag = harness.new_tag()
    allowed_tag = harness.new_tag()
    outcome.set(
        section="Security",
        item="open relay",
        tried="RCPT TO an outside domain over SMTP to rel-relay:25 from rel-outsider (outside mynetworks), "
        "and the same from rel-encrypt (inside) as the control",
    )
    code, text = harness.smtp_submit(
        outsider, rel.RELAY_IP, "spam@example.test", "victim@elsewhere.example.test", refused_tag
    )
    inside_code, inside_text = harness.smtp_submit(
        inside, rel.RELAY_IP, "app@example.test", "user@recipient.example.test", allowed_tag
    )
    relayed = harness.wait_for_message(refused_tag, timeout=5)
    control = harness.wait_for_message(allowed_tag, timeout=60)
    outcome.set(
        relayed_for_outsider=1 if relayed else 0,
        happened="outsider got %s %s, and its message %s the smarthost; inside client got %s and its message %s"
        % (
            code,
            text,
            "reached" if relayed else "never reached",
            inside_code,
            "arrived" if control else "did NOT arrive",
        ),
        outsider_reply="%s %s" % (code, text),
    )
    assert code == 554 and "5.7.1" in text and "Access denied" in text, (code, text)
    assert relayed is None
    assert inside_code == 250 and control is not None, (inside_code, inside_text)


def test_null_client_port_25_not_reachable_from_another_container(outcome):
    outsider = harness.host(rel.OUTSIDER)
    null_client = harness.host(rel.ENCRYPT)
    outcome.set(
        section="Security",
        item="null client listens on loopback only",
        tried="connect to rel-encrypt (null_client):25 from rel-outsider; control: from rel-encrypt itself "
        "to 127.0.0.1:25, and from rel-outsider to rel-relay:25",
    )
    remote = probe(outsider, rel.ENCRYPT_IP)
    local = probe(null_client, "127.0.0.1")
    relay_server = probe(outsider, rel.RELAY_IP)
    outcome.set(
        happened="from another container: %s; on the host itself: %s; relay_server from the outsider: %s"
        % (remote.strip(), local.strip()[:60], relay_server.strip()[:60])
    )
    assert remote.startswith("closed"), remote
    assert local.startswith("open 220"), local
    assert relay_server.startswith("open 220"), relay_server


def assert_no_secret(output, secrets, what):
    leaked = [secret for secret in secrets if secret and secret in output]
    assert not leaked, "%s printed %d password(s)" % (what, len(leaked))


def secret_files(host, secrets):
    """Every file under /etc/postfix holding one of the secrets (compiled maps too): path -> 'owner:group mode'."""
    files = {}
    for secret in secrets:
        found = host.run("grep -rlaF -- %s /etc/postfix || true", secret).stdout.split()
        for path in found:
            files[path] = rel.owner_mode(host, path)
    return files


def world_or_group_readable(modes):
    return {
        path: mode
        for path, mode in modes.items()
        if not mode.startswith("root:root ") or int(mode.split()[1], 8) & 0o077
    }


def test_converge_with_vvv_and_diff_prints_no_password_and_secret_files_stay_0600(outcome):
    host = rel.target()
    new_password = "Rel-Canary-%s" % uuid.uuid4().hex
    old_passwords = rel.provider_passwords()
    before_files = set(host.run("ls -1 /etc/postfix").stdout.split())
    outcome.set(
        section="Security",
        item="secrets in output and on disk",
        tried="converge -vvv --diff changing the password (relay_keep_backups true), then converge -vvv --diff "
        "back; grep all output for every password; owner and mode of every file holding one",
    )
    started = time.monotonic()
    # A password the emulator does not know: without the probe (which would refuse it) it is written.
    # The switch goes in as an operator types it, key=value: a string, which the role must read as a
    # boolean (ansible-core 2.19 refuses a bare string as a conditional).
    rc_change, changed_output = rel.converge(
        "-vvv",
        "--diff",
        "-e",
        "relay_password=%s" % new_password,
        "-e",
        "relay_keep_backups=true",
        "-e",
        "relay_probe_before_switch=false",
    )
    recap = harness.play_recap(changed_output).get(rel.RELAY, {})
    files_with_new = secret_files(host, [new_password])
    maps = {path: rel.owner_mode(host, path) for path in host.run("ls -1d /etc/postfix/sasl_passwd*").stdout.split()}
    rc_back, back_output = rel.converge("-vvv", "--diff")
    seconds = time.monotonic() - started
    files_with_old = secret_files(host, old_passwords)
    new_files = sorted(set(host.run("ls -1 /etc/postfix").stdout.split()) - before_files)
    figures = rel.deliver_one(host, harness.new_tag())
    holding = {}
    for found in (files_with_new, files_with_old, maps):
        holding.update(found)
    exposed = world_or_group_readable(holding)
    leaked = [secret for secret in [new_password] + old_passwords if secret in changed_output + back_output]
    outcome.set(seconds=seconds, **figures)
    outcome.set(
        happened="%d + %d lines of -vvv/diff output, %d password(s) in them; files holding a password: %s; "
        "backups left: %s; %d readable by anyone but root"
        % (
            changed_output.count("\n"),
            back_output.count("\n"),
            len(leaked),
            ", ".join("%s %s" % (os.path.basename(p), m) for p, m in sorted(holding.items())),
            ", ".join(new_files) or "none",
            len(exposed),
        ),
        secret_files=holding,
        backups_left=new_files,
    )
    for name in new_files:
        if name.startswith(("main.cf.", "master.cf.")):
            host.run("rm -f /etc/postfix/%s" % name)
    assert rc_change == 0, rel.fatal_excerpt(changed_output)
    assert recap.get("changed", 0) > 0, "the password change changed nothing, so there was no diff to leak from"
    assert rc_back == 0, rel.fatal_excerpt(back_output)
    assert "ESTABLISH" in changed_output, "the run was not verbose"
    assert_no_secret(changed_output, [new_password] + old_passwords, "converge -vvv --diff (new password)")
    assert_no_secret(back_output, [new_password] + old_passwords, "converge -vvv --diff (password restored)")
    assert maps.get("/etc/postfix/sasl_passwd") == "root:root 600", maps
    assert any(path.endswith((".db", ".lmdb", ".cdb")) and mode == "root:root 600" for path, mode in maps.items()), maps
    assert files_with_new, "the new password is in no file: the converge did not write it"
    assert not exposed, exposed
    assert figures["arrived"] == 1, figures


def test_failed_converge_prints_no_password(outcome, failed_converge):
    output = failed_converge["output"]
    secrets = rel.provider_passwords()
    leaked = [secret for secret in secrets if secret in output]
    outcome.set(
        section="Security",
        item="secrets in a failed converge",
        tried="the converge Postfix rejects (bad relay_extra_parameters), run with -vvv and --diff; grep its output",
        happened="rc %d, %d lines of output, %d password(s) in it"
        % (failed_converge["rc"], output.count("\n"), len(leaked)),
    )
    assert failed_converge["rc"] != 0
    assert "ESTABLISH" in output, "the run was not verbose"
    assert_no_secret(output, secrets, "a failed converge with -vvv --diff")


def test_secret_files_root_0600_on_every_target(outcome):
    modes = {}
    for name in (rel.RELAY, rel.ENCRYPT):
        host = harness.host(name)
        for path in host.run("ls -1d /etc/postfix/sasl_passwd*").stdout.split():
            modes["%s:%s" % (name, path)] = rel.owner_mode(host, path)
    outcome.set(
        section="Security",
        item="sasl map modes",
        tried="owner and mode of the SASL map and its compiled form on both targets",
        happened=", ".join("%s %s" % (path, mode) for path, mode in sorted(modes.items())),
    )
    assert len(modes) >= 4, modes
    assert all(mode == "root:root 600" for mode in modes.values()), modes


def test_sasl_map_backups_are_never_world_readable(outcome):
    """Backups sasl_map makes (backup: true), also of a map another tool left world-readable."""
    host = rel.target()
    playbook = os.path.join(os.path.dirname(__file__), "sasl_backup.yml")
    directory = "/root/rel-sasl-backup"
    path = directory + "/sasl_passwd"
    passwords = ["Rel-Canary-Backup-%d-%s" % (index, uuid.uuid4().hex[:8]) for index in range(3)]
    host.run("rm -rf %s && mkdir -m 0755 %s", directory, directory)
    outcome.set(
        section="Security",
        item="backups of the sasl map",
        tried="sasl_map with backup: true on a scratch map: a password change on a 0600 map, then a password "
        "change on a map another tool left 0644 (as older roles did)",
    )
    outputs = []

    def write(password):
        rc, output = harness.run_playbook(playbook, "-e", "map_path=%s" % path, "-e", "map_password=%s" % password)
        outputs.append(output)
        assert rc == 0, rel.fatal_excerpt(output)

    write(passwords[0])
    write(passwords[1])
    after_change = {
        name: rel.owner_mode(host, "%s/%s" % (directory, name))
        for name in host.run("ls -1 %s", directory).stdout.split()
    }
    host.run("chmod 0644 %s %s.db", path, path)
    write(passwords[2])
    after_loose = {
        name: rel.owner_mode(host, "%s/%s" % (directory, name))
        for name in host.run("ls -1 %s", directory).stdout.split()
    }
    host.run("rm -rf %s", directory)
    backups = {name: mode for name, mode in after_loose.items() if name.endswith("~")}
    exposed = {name: mode for name, mode in backups.items() if int(mode.split()[1], 8) & 0o077}
    leaked = [secret for secret in passwords if any(secret in output for output in outputs)]
    outcome.set(
        happened="after a change on a 0600 map: %s; after a change on a 0644 map: %s; %d backup(s) readable by "
        "others; %d password(s) printed"
        % (
            ", ".join("%s %s" % (n, m) for n, m in sorted(after_change.items())),
            ", ".join("%s %s" % (n, m) for n, m in sorted(after_loose.items())),
            len(exposed),
            len(leaked),
        ),
        backups=backups,
    )
    assert len(backups) == 2, after_loose
    assert after_loose["sasl_passwd"] == "root:root 600", after_loose
    assert not leaked
    assert not exposed, "sasl_map keeps the source's mode on its backup: %s" % exposed
