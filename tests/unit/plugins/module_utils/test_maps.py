# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Lookup-table machinery: parsing, planning, compiling with postmap (real binary, temporary dirs)."""

from __future__ import annotations

import os
import stat
import subprocess
import time

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils.files import atomic_write
from ansible_collections.smarthost.postfix.plugins.module_utils.maps import (
    Entry,
    compile_table,
    compiled_state,
    ensure_table,
    manage_table,
    parse_table,
    render_table,
    resolve_map_type,
    source_entries,
    table_entries,
    validate_entries,
)
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import ValidationError, compiled_path
from ansible_collections.smarthost.postfix.plugins.module_utils.sasl import keep_password
from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils.postfix_cli import lookup


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def entries_of(items):
    return [(item.key, item.value) for item in items if isinstance(item, Entry)]


# --------------------------------------------------------------------------- parse and render

TABLE = """\
# transport routes
example.org   smtp:[relay.example]:587

example.net smtp:[one.example]
    :2525
# trailing comment
"""


def test_parse_table_reads_like_postmap():
    items = parse_table(TABLE, "hash")
    # A continuation line is appended as it is, its indent included (measured with postmap -s).
    assert entries_of(items) == [
        ("example.org", "smtp:[relay.example]:587"),
        ("example.net", "smtp:[one.example]    :2525"),
    ]
    assert items[0] == "# transport routes"
    assert items[2] == ""


# Lines Python's str.splitlines() breaks and Postfix does not; \v and \f are white space to
# Postfix (key/value separators), U+001C and U+00A0 are not; a comment inside an entry is skipped.
ODD_TABLE = (
    "k1 a\u2028TAIL\nk2 b\x85c\u2029d\nk3\x0bv3\nk4 x\x1cy\nk5 p\xa0q\nk6 first\n#note\n\tsecond\nK1 duplicate\nk7\n"
)


def test_parse_table_splits_lines_and_words_exactly_as_postmap(postfix_dir, tmp_path):
    path = tmp_path / "table"
    path.write_bytes(ODD_TABLE.encode("utf-8"))
    subprocess.run(["postmap", "-c", str(postfix_dir), "hash:%s" % path], check=True, stderr=subprocess.DEVNULL)
    dumped = Postfix(str(postfix_dir)).dump_map("hash:%s" % path)
    items = parse_table(ODD_TABLE, "hash")
    assert source_entries(items, "hash") == dumped
    assert dumped["k1"] == "a\u2028TAIL" and dumped["k6"] == "first\tsecond" and dumped["k3"] == "v3"
    assert render_table(items) == ODD_TABLE  # written back byte for byte


def test_render_of_unchanged_table_is_byte_identical():
    assert render_table(parse_table(TABLE, "hash")) == TABLE


def test_parse_patterns_keep_whitespace_and_flags():
    items = parse_table("/^Subject: .*win/i    REJECT spam\n!/^From:/ DUNNO\n#/x/ IGNORE\n", "regexp")
    assert entries_of(items) == [("/^Subject: .*win/i", "REJECT spam"), ("!/^From:/", "DUNNO")]


def test_render_with_mask_shows_masked_values_and_commented_out_entries():
    items = parse_table("# plain note\n#[old]:587 olduser:oldpw\n\n[a]:587 user:pw\n", "hash")
    shown = render_table(items, lambda key, value: value.partition(":")[0] + ":***")
    assert shown == "# plain note\n# [old]:587 olduser:***\n\n[a]:587 user:***\n"


@pytest.mark.parametrize(
    "map_type, suffix",
    [
        ("hash", ".db"),
        ("btree", ".db"),
        ("lmdb", ".lmdb"),
        ("cdb", ".cdb"),
        ("texthash", None),
        ("regexp", None),
        ("pcre", None),
        ("cidr", None),
        ("inline", None),
    ],
)
def test_compiled_path(map_type, suffix):
    assert compiled_path("/etc/postfix/x", map_type) == (None if suffix is None else "/etc/postfix/x" + suffix)


# --------------------------------------------------------------------------- planning


def test_ensure_present_updates_in_place_and_appends():
    items = parse_table("# keep me\nA.example old\nb.example same\n", "hash")
    change = ensure_table(items, [("a.example", "new"), ("b.example", "same"), ("c.example", "added")], "hash")
    assert render_table(change.items) == "# keep me\nA.example new\nb.example same\nc.example added\n"
    assert (change.added, change.removed, change.updated) == (["c.example"], [], ["A.example"])


def test_ensure_absent_and_exclusive():
    items = parse_table("a x\n# c\nb y\nc z\n", "hash")
    absent = ensure_table(items, [("b", None), ("missing", None)], "hash", state="absent")
    assert render_table(absent.items) == "a x\n# c\nc z\n"
    assert absent.removed == ["b"]
    exclusive = ensure_table(items, [("c", "z")], "hash", exclusive=True)
    assert render_table(exclusive.items) == "# c\nc z\n"
    assert exclusive.removed == ["a", "b"] and not exclusive.added and not exclusive.updated


def test_ensure_drops_later_duplicates_of_managed_keys():
    change = ensure_table(parse_table("a 1\nb 2\nA 3\n", "hash"), [("a", "1")], "hash")
    assert render_table(change.items) == "a 1\nb 2\n"


def test_ensure_merge_decides_existing_values():
    items = parse_table("[a]:587 olduser:oldpw\n", "hash")
    change = ensure_table(items, [("[a]:587", "newuser:newpw"), ("[b]", "u:p")], "hash", merge=keep_password)
    assert entries_of(change.items) == [("[a]:587", "newuser:oldpw"), ("[b]", "u:p")]


def test_first_match_tables_follow_the_given_order_when_exclusive():
    items = parse_table("# header\n/b/ B\n/a/ A\n", "regexp")
    change = ensure_table(items, [("/a/", "A"), ("/b/", "B")], "regexp", exclusive=True)
    assert change.reordered
    assert render_table(change.items) == "# header\n/a/ A\n/b/ B\n"
    # without exclusive, existing order stays and new entries are appended
    kept = ensure_table(items, [("/a/", "A"), ("/c/", "C")], "regexp")
    assert render_table(kept.items) == "# header\n/b/ B\n/a/ A\n/c/ C\n"


def test_pattern_keys_are_case_sensitive_indexed_keys_are_not():
    assert ensure_table(parse_table("/A/ x\n", "regexp"), [("/a/", "x")], "regexp").added == ["/a/"]
    assert ensure_table(parse_table("A x\n", "hash"), [("a", "x")], "hash").added == []


@pytest.mark.parametrize(
    "map_type, key, value, message",
    [
        ("hash", "", "v", "empty key"),
        ("hash", "a b", "v", "cannot contain whitespace"),
        ("hash", "a\nb", "v", "line break"),
        ("hash", "a", "v\nw", "line break"),
        ("hash", "a", "", "value is empty"),
        ("hash", "#a", "v", "comment"),
        ("regexp", "no-slashes", "v", "one /pattern/"),
        ("pcre", "/a/ extra", "v", "one /pattern/"),
        ("cidr", "10.0.0.1/8", "REJECT", "host bits"),
        ("cidr", "not-an-ip", "REJECT", "host bits"),
    ],
)
def test_validate_entries(map_type, key, value, message):
    with pytest.raises(ValidationError, match=message):
        validate_entries([(key, value)], map_type)


def test_validate_rejects_duplicates_by_lookup_identity():
    with pytest.raises(ValidationError, match="more than once"):
        validate_entries([("Example.org", "a"), ("example.ORG", "b")], "hash")
    validate_entries([("/A/", "a"), ("/a/", "b")], "regexp")


def test_table_entries_strip_values_like_postmap():
    assert table_entries([{"key": "a", "value": "  x  "}], "hash") == [("a", "x")]
    assert table_entries([{"key": "a", "value": None}], "hash", "absent") == [("a", None)]


# --------------------------------------------------------------------------- files


def test_compile_builds_in_a_private_directory(postfix_dir, tmp_path, tool_log):
    path = str(tmp_path / "sasl_passwd")
    atomic_write(path, b"[a.example]:587 user:pw\n", 0o600, 0, 0)
    compile_table(Postfix(str(postfix_dir)), path, "hash", 0o600, 0, 0)
    assert mode_of(path + ".db") == 0o600
    assert lookup(postfix_dir, "hash:" + path, "[a.example]:587") == "user:pw"
    build = tool_log.calls("postmap")[0]
    assert build[-2].startswith("hash:") and not build[-2].endswith(":" + path)
    assert build[-1] == "dirmode=700"
    assert not [name for name in os.listdir(str(tmp_path)) if name.startswith(".postmap-")]


def test_staleness_is_judged_by_content_not_by_time(postfix_dir, tmp_path):
    path = str(tmp_path / "transport")
    postfix = Postfix(str(postfix_dir))
    atomic_write(path, b"a b\n", 0o644)
    items = parse_table("a b\n", "hash")
    assert compiled_state(postfix, path, "hash", items)[0]  # no compiled map yet
    compile_table(postfix, path, "hash", 0o644)
    assert compiled_state(postfix, path, "hash", items) == (False, {"a": "b"})
    # A source dated in the future, or a map older than its source, is not stale by itself...
    future = time.time() + 10
    os.utime(path, (future, future))
    assert not compiled_state(postfix, path, "hash", items)[0]
    # ...but a map built from other content is, whatever the times say (two runs that raced).
    atomic_write(path, b"a c\n", 0o644)
    os.utime(path + ".db", (future + 10, future + 10))
    assert compiled_state(postfix, path, "hash", parse_table("a c\n", "hash"))[0]
    assert compiled_state(postfix, path, "regexp", items) == (False, None)


def test_the_compiled_map_and_every_copy_of_the_source_are_0600(postfix_dir, tmp_path, monkeypatch):
    """postmap's private copy of a secret was made with shutil.copyfile (0644); check it at the
    moment postmap runs, and the map postmap builds before its mode is set."""
    path = str(tmp_path / "sasl_passwd")
    atomic_write(path, b"[a.example]:587 user:pw\n", 0o600)
    postfix = Postfix(str(postfix_dir))
    seen = {}
    real_postmap = postfix.postmap

    def postmap(*args):
        source = args[-1].split(":", 1)[1]
        seen["source"] = mode_of(source)
        out = real_postmap(*args)
        seen["built"] = mode_of(source + ".db")
        return out

    monkeypatch.setattr(postfix, "postmap", postmap)
    os.umask(0o022)
    compile_table(postfix, path, "hash", 0o600)
    assert seen == {"source": 0o600, "built": 0o600}
    assert os.umask(0o022) == 0o022  # the umask is put back


def test_resolve_map_type(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    assert resolve_map_type(postfix) == postfix.default_database_type()
    with pytest.raises(ValidationError, match="postconf -m lists"):
        resolve_map_type(postfix, "nosuchtype")


def test_manage_table_check_mode_writes_nothing(postfix_dir, tmp_path):
    path = str(tmp_path / "transport")
    postfix = Postfix(str(postfix_dir))
    checked = manage_table(postfix, path, "hash", [("a.example", "smtp:[r]:587")], check_mode=True)
    assert checked["changed"] and checked["compiled"] and checked["keys_added"] == ["a.example"]
    assert not os.path.exists(path) and not os.path.exists(path + ".db")
    applied = manage_table(postfix, path, "hash", [("a.example", "smtp:[r]:587")])
    assert {k: v for k, v in applied.items() if k != "backup_file"} == {
        k: v for k, v in checked.items() if k != "backup_file"
    }
    again = manage_table(postfix, path, "hash", [("a.example", "smtp:[r]:587")])
    assert not again["changed"] and not again["compiled"]


def test_manage_table_fixes_modes_of_existing_files(postfix_dir, tmp_path):
    path = str(tmp_path / "sasl_passwd")
    postfix = Postfix(str(postfix_dir))
    manage_table(postfix, path, "hash", [("[a]", "u:p")], mode=0o600)
    os.chmod(path + ".db", 0o644)
    result = manage_table(postfix, path, "hash", [("[a]", "u:p")], mode=0o600)
    assert result["changed"] and not result["compiled"]
    assert mode_of(path + ".db") == 0o600
    os.chmod(path, 0o644)
    assert manage_table(postfix, path, "hash", [("[a]", "u:p")], mode=0o600)["changed"]
    assert mode_of(path) == 0o600


def test_manage_table_needs_an_existing_directory(postfix_dir, tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        manage_table(Postfix(str(postfix_dir)), str(tmp_path / "no" / "table"), "hash", [("a", "b")])
