# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""smarthost.postfix.lookup_table with the real postconf/postmap on temporary files."""

from __future__ import annotations

import os
import stat
import subprocess
import time

import pytest

SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb"}


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def settled(path):
    """Postfix waits for a text table younger than ~2 s to settle; pretend time has passed."""
    past = time.time() - 60
    os.utime(path, (past, past))


def lookup(config_dir, map_name, key):
    return subprocess.run(
        ["postmap", "-c", str(config_dir), "-q", key, map_name], stdout=subprocess.PIPE, text=True, check=False
    ).stdout.strip()


@pytest.fixture
def table(run_module, postfix_dir):
    def run(name, check_mode=False, diff=False, **args):
        args = dict(args, path=str(postfix_dir / name), config_dir=str(postfix_dir))
        return run_module("lookup_table", args, check_mode=check_mode, diff=diff)

    return run


TRANSPORT = [
    {"key": "example.org", "value": "smtp:[smtp.sendgrid.net]:587"},
    {"key": ".example.org", "value": "smtp:[smtp.sendgrid.net]:587"},
]


def test_transport_table_compiled_idempotent(table, postfix_dir):
    path = str(postfix_dir / "transport")
    first = table("transport", entries=TRANSPORT)
    assert first["changed"] and first["compiled"] and first["map"] == "hash:" + path
    assert first["keys_added"] == ["example.org", ".example.org"]
    assert (mode_of(path), mode_of(path + ".db")) == (0o644, 0o644)
    assert os.stat(path).st_uid == 0 and os.stat(path + ".db").st_uid == 0
    assert lookup(postfix_dir, first["map"], "example.org") == "smtp:[smtp.sendgrid.net]:587"
    second = table("transport", entries=TRANSPORT)
    assert not second["changed"] and not second["compiled"]


def test_mode_option_applies_to_source_and_map(table, postfix_dir):
    path = str(postfix_dir / "generic")
    table("generic", mode="0640", entries=[{"key": "root@host.internal", "value": "ops@example.com"}])
    assert (mode_of(path), mode_of(path + ".db")) == (0o640, 0o640)
    changed = table("generic", mode="0600", entries=[{"key": "root@host.internal", "value": "ops@example.com"}])
    assert changed["changed"] and not changed["compiled"]
    assert (mode_of(path), mode_of(path + ".db")) == (0o600, 0o600)


def test_check_mode_and_diff(table, postfix_dir):
    path = postfix_dir / "sender_dependent_relayhost"
    entries = [{"key": "@example.com", "value": "[email-smtp.eu-west-1.amazonaws.com]:587"}]
    checked = table("sender_dependent_relayhost", check_mode=True, diff=True, entries=entries)
    assert not path.exists()
    assert checked["diff"] == {
        "before_header": str(path),
        "after_header": str(path),
        "before": "",
        "after": "@example.com [email-smtp.eu-west-1.amazonaws.com]:587\n",
    }
    applied = table("sender_dependent_relayhost", diff=True, entries=entries)
    for key in ("changed", "compiled", "keys_added", "diff"):
        assert checked[key] == applied[key]
    update = table(
        "sender_dependent_relayhost",
        check_mode=True,
        diff=True,
        entries=[{"key": "@example.com", "value": "[smtp.sendgrid.net]:587"}],
    )
    assert update["keys_updated"] == ["@example.com"]
    assert update["diff"]["before"] == "@example.com [email-smtp.eu-west-1.amazonaws.com]:587\n"
    assert update["diff"]["after"] == "@example.com [smtp.sendgrid.net]:587\n"
    assert lookup(postfix_dir, "hash:%s" % path, "@example.com") == "[email-smtp.eu-west-1.amazonaws.com]:587"


def test_absent_and_exclusive(table, postfix_dir):
    table(
        "access",
        entries=[
            {"key": "192.0.2.1", "value": "REJECT"},
            {"key": "spam.example", "value": "REJECT"},
            {"key": "ok.example", "value": "OK"},
        ],
    )
    removed = table("access", state="absent", entries=[{"key": "spam.example"}])
    assert removed["keys_removed"] == ["spam.example"]
    assert lookup(postfix_dir, "hash:%s" % (postfix_dir / "access"), "spam.example") == ""
    exclusive = table("access", exclusive=True, entries=[{"key": "ok.example", "value": "OK"}])
    assert exclusive["keys_removed"] == ["192.0.2.1"]
    assert (postfix_dir / "access").read_text() == "ok.example OK\n"


def test_regexp_written_not_compiled_order_kept(table, postfix_dir):
    path = postfix_dir / "header_checks"
    rules = [{"key": "/^Received:.*internal/", "value": "IGNORE"}, {"key": "/^X-Mailer:/i", "value": "IGNORE"}]
    result = table("header_checks", type="regexp", entries=rules)
    assert result["changed"] and not result["compiled"] and result["map"] == "regexp:%s" % path
    assert path.read_text() == "/^Received:.*internal/ IGNORE\n/^X-Mailer:/i IGNORE\n"
    assert sorted(os.listdir(str(postfix_dir))) == ["header_checks", "main.cf", "master.cf"]
    settled(str(path))
    assert lookup(postfix_dir, "regexp:%s" % path, "Received: from a.internal") == "IGNORE"
    reordered = table("header_checks", type="regexp", exclusive=True, entries=list(reversed(rules)))
    assert reordered["changed"]
    assert path.read_text() == "/^X-Mailer:/i IGNORE\n/^Received:.*internal/ IGNORE\n"
    assert not table("header_checks", type="regexp", exclusive=True, entries=list(reversed(rules)))["changed"]


def test_pcre_if_available(table, postfix_dir, map_types):
    if "pcre" not in map_types:
        pytest.skip("this Postfix has no pcre support (postconf -m: %s)" % " ".join(map_types))
    result = table("body_checks", type="pcre", entries=[{"key": "/^secret\\s+token/", "value": "REJECT"}])
    assert not result["compiled"]
    settled(str(postfix_dir / "body_checks"))
    assert lookup(postfix_dir, "pcre:%s" % (postfix_dir / "body_checks"), "secret  token") == "REJECT"


def test_cidr_table(table, postfix_dir):
    result = table(
        "client_access",
        type="cidr",
        entries=[{"key": "192.0.2.0/24", "value": "OK"}, {"key": "2001:db8::/32", "value": "REJECT"}],
    )
    assert not result["compiled"]
    settled(str(postfix_dir / "client_access"))
    assert lookup(postfix_dir, "cidr:%s" % (postfix_dir / "client_access"), "192.0.2.77") == "OK"


@pytest.mark.parametrize("map_type", ["hash", "btree", "lmdb", "cdb", "texthash"])
def test_database_types(table, postfix_dir, map_types, map_type):
    if map_type not in map_types:
        pytest.skip("this Postfix has no %s support (postconf -m: %s)" % (map_type, " ".join(map_types)))
    result = table("transport", type=map_type, entries=TRANSPORT)
    path = str(postfix_dir / "transport")
    assert result["compiled"] == (map_type in SUFFIX)
    if map_type in SUFFIX:
        assert mode_of(path + SUFFIX[map_type]) == 0o644
    else:
        settled(path)
    assert lookup(postfix_dir, "%s:%s" % (map_type, path), "example.org") == "smtp:[smtp.sendgrid.net]:587"
    assert not table("transport", type=map_type, entries=TRANSPORT)["changed"]


def test_stale_map_is_rebuilt(table, postfix_dir):
    path = str(postfix_dir / "transport")
    table("transport", entries=TRANSPORT)
    past = time.time() - 100
    os.utime(path + ".db", (past, past))
    assert not table("transport", entries=TRANSPORT)["changed"]  # an old map of the same content is current
    # A map compiled from other content (an older copy of the source) is stale, whatever its time.
    other = str(postfix_dir / "other")
    with open(other, "w") as handle:
        handle.write("example.org error:old route\n")
    subprocess.run(["postmap", "-c", str(postfix_dir), "hash:" + other], check=True)
    os.rename(other + ".db", path + ".db")
    result = table("transport", entries=TRANSPORT)
    assert result["changed"] and result["compiled"] and not result["keys_updated"]
    assert lookup(postfix_dir, "hash:" + path, "example.org") == "smtp:[smtp.sendgrid.net]:587"
    os.unlink(path + ".db")
    assert table("transport", entries=TRANSPORT)["compiled"]
    assert os.path.exists(path + ".db")


def test_backup_keeps_previous_content_and_mode(table, postfix_dir):
    table("transport", mode="0640", entries=TRANSPORT)
    before = (postfix_dir / "transport").read_text()
    result = table("transport", mode="0640", backup=True, entries=[{"key": "example.org", "value": "error:gone"}])
    assert open(result["backup_file"]).read() == before
    assert mode_of(result["backup_file"]) == 0o640


@pytest.mark.parametrize(
    "map_type, entries, message",
    [
        ("hash", [{"key": "two words", "value": "x"}], "cannot contain whitespace"),
        ("hash", [{"key": "", "value": "x"}], "empty key"),
        ("hash", [{"key": "a", "value": "x\ny"}], "line break"),
        ("hash", [{"key": "a\nb", "value": "x"}], "line break"),
        ("hash", [{"key": "a", "value": ""}], "value is empty"),
        ("hash", [{"key": "a"}], "value is empty"),
        ("hash", [{"key": "a", "value": "1"}, {"key": "A", "value": "2"}], "more than once"),
        ("regexp", [{"key": "Subject: x", "value": "IGNORE"}], "one /pattern/"),
        ("cidr", [{"key": "192.0.2.1/24", "value": "OK"}], "host bits"),
    ],
)
def test_validation_errors(table, postfix_dir, map_type, entries, message):
    result = table("checked", type=map_type, entries=entries)
    assert result["failed"] and message in result["msg"]
    assert not (postfix_dir / "checked").exists()


def test_bad_mode_fails(table, postfix_dir):
    result = table("transport", mode="rw-r--r--", entries=TRANSPORT)
    assert result["failed"] and "octal" in result["msg"]
    assert not (postfix_dir / "transport").exists()
