# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""smarthost.postfix.sasl_map with the real postconf/postmap, in-process and through ansible."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

PASSWORD = "S3cr3t-Pw:with#odd&chars"
OTHER_PASSWORD = "An0ther-Secret-Value"
SES_KEY = "[email-smtp.eu-west-1.amazonaws.com]:587"
DB_SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb", "texthash": None}


def mode_and_owner(path):
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def lookup(config_dir, map_name, key):
    return subprocess.run(
        ["postmap", "-c", str(config_dir), "-q", key, map_name], stdout=subprocess.PIPE, text=True, check=False
    ).stdout.strip()


@pytest.fixture
def sasl(run_module, postfix_dir):
    path = str(postfix_dir / "sasl_passwd")

    def run(check_mode=False, diff=False, **args):
        args.setdefault("path", path)
        result = run_module("sasl_map", dict(args, config_dir=str(postfix_dir)), check_mode=check_mode, diff=diff)
        dumped = json.dumps(result)
        assert PASSWORD not in dumped and OTHER_PASSWORD not in dumped
        return result

    run.path = path
    return run


def entry(key=SES_KEY, username="AKIAEXAMPLE", password=PASSWORD):
    return {"key": key, "username": username, "password": password}


def test_creates_root_0600_source_and_compiled_map(sasl, postfix_dir):
    result = sasl(entries=[entry()])
    assert result["changed"] and result["compiled"]
    assert result["keys_added"] == [SES_KEY]
    assert result["map"] == "hash:" + sasl.path and result["type"] == "hash"
    assert mode_and_owner(sasl.path) == (0o600, 0, 0)
    assert mode_and_owner(sasl.path + ".db") == (0o600, 0, 0)
    assert lookup(postfix_dir, result["map"], SES_KEY) == "AKIAEXAMPLE:" + PASSWORD
    assert open(sasl.path).read() == "%s AKIAEXAMPLE:%s\n" % (SES_KEY, PASSWORD)


def test_second_run_changes_nothing(sasl):
    sasl(entries=[entry()])
    before = os.stat(sasl.path + ".db").st_mtime_ns
    again = sasl(entries=[entry()])
    assert not again["changed"] and not again["compiled"]
    assert again["keys_added"] == again["keys_updated"] == again["keys_removed"] == []
    assert os.stat(sasl.path + ".db").st_mtime_ns == before


def test_check_mode_writes_nothing_and_matches_the_real_run(sasl, postfix_dir):
    checked = sasl(check_mode=True, diff=True, entries=[entry()])
    assert not os.path.exists(sasl.path) and not os.path.exists(sasl.path + ".db")
    applied = sasl(diff=True, entries=[entry()])
    for key in ("changed", "compiled", "keys_added", "keys_updated", "keys_removed", "map", "diff"):
        assert checked[key] == applied[key]


def test_diff_masks_passwords(sasl):
    sasl(entries=[entry(), entry("@example.com", "sender", OTHER_PASSWORD)])
    result = sasl(diff=True, entries=[entry(password="Changed-" + PASSWORD), entry("[b.example]", "bob", "pw-b")])
    assert result["diff"]["before"] == "%s AKIAEXAMPLE:********\n@example.com sender:********\n" % SES_KEY
    assert result["diff"]["after"] == (
        "%s AKIAEXAMPLE:******** (password changed)\n@example.com sender:********\n[b.example] bob:********\n" % SES_KEY
    )
    assert "pw-b" not in json.dumps(result)


def test_update_password_always_and_on_create(sasl, postfix_dir):
    sasl(entries=[entry()])
    kept = sasl(update_password="on_create", entries=[entry(username="NEWUSER", password=OTHER_PASSWORD)])
    assert kept["keys_updated"] == [SES_KEY]
    assert lookup(postfix_dir, "hash:" + sasl.path, SES_KEY) == "NEWUSER:" + PASSWORD
    assert not sasl(update_password="on_create", entries=[entry(username="NEWUSER", password="whatever")])["changed"]
    updated = sasl(entries=[entry(username="NEWUSER", password=OTHER_PASSWORD)])
    assert updated["keys_updated"] == [SES_KEY]
    assert lookup(postfix_dir, "hash:" + sasl.path, SES_KEY) == "NEWUSER:" + OTHER_PASSWORD


def test_absent_and_exclusive(sasl, postfix_dir):
    sasl(entries=[entry(), entry("@example.com", "a", "pw-a"), entry("user@example.org", "b", "pw-b")])
    removed = sasl(state="absent", entries=[{"key": "@example.com"}, {"key": "never@there.example"}])
    assert removed["keys_removed"] == ["@example.com"] and removed["compiled"]
    assert lookup(postfix_dir, "hash:" + sasl.path, "@example.com") == ""
    assert not sasl(state="absent", entries=[{"key": "@example.com"}])["changed"]
    exclusive = sasl(exclusive=True, entries=[entry()])
    assert exclusive["keys_removed"] == ["user@example.org"]
    assert open(sasl.path).read() == "%s AKIAEXAMPLE:%s\n" % (SES_KEY, PASSWORD)


def test_comments_survive_and_keys_fold_case(sasl):
    with open(sasl.path, "w") as handle:
        handle.write("# managed by hand before\n[Email-SMTP.eu-west-1.amazonaws.com]:587 AKIAEXAMPLE:%s\n" % PASSWORD)
    os.chmod(sasl.path, 0o600)
    result = sasl(entries=[entry()])
    assert result["keys_added"] == [] and result["compiled"]  # only the missing compiled map
    assert open(sasl.path).read().startswith("# managed by hand before\n")


def test_rebuilds_a_stale_or_missing_compiled_map(sasl, postfix_dir, tmp_path):
    sasl(entries=[entry()])
    # A compiled map of other content (a run that lost a race wrote it last): times do not matter.
    other = tmp_path / "other"
    other.write_text("%s AKIAEXAMPLE:%s\n" % (SES_KEY, OTHER_PASSWORD))
    subprocess.run(["postmap", "-c", str(postfix_dir), "hash:%s" % other], check=True)
    shutil.copyfile(str(other) + ".db", sasl.path + ".db")
    future = time.time() + 100
    os.utime(sasl.path + ".db", (future, future))
    touched = sasl(entries=[entry()])
    assert touched["changed"] and touched["compiled"] and touched["keys_updated"] == []
    assert lookup(postfix_dir, "hash:" + sasl.path, SES_KEY) == "AKIAEXAMPLE:" + PASSWORD
    assert not sasl(entries=[entry()])["changed"]
    os.unlink(sasl.path + ".db")
    rebuilt = sasl(entries=[entry()])
    assert rebuilt["changed"] and rebuilt["compiled"]
    assert mode_and_owner(sasl.path + ".db") == (0o600, 0, 0)
    assert lookup(postfix_dir, "hash:" + sasl.path, SES_KEY) == "AKIAEXAMPLE:" + PASSWORD


def test_times_alone_never_rebuild(sasl):
    sasl(entries=[entry()])
    future = time.time() + 30
    os.utime(sasl.path, (future, future))
    past = time.time() - 100
    os.utime(sasl.path + ".db", (past, past))
    assert not sasl(entries=[entry()])["changed"]


def test_repairs_a_world_readable_map_and_foreign_owner(sasl):
    sasl(entries=[entry()])
    os.chmod(sasl.path + ".db", 0o644)
    os.chown(sasl.path, 65534, 65534)
    result = sasl(entries=[entry()])
    assert result["changed"] and not result["compiled"]
    assert mode_and_owner(sasl.path) == (0o600, 0, 0)
    assert mode_and_owner(sasl.path + ".db") == (0o600, 0, 0)


def test_backup_is_0600(sasl):
    sasl(entries=[entry()])
    result = sasl(backup=True, entries=[entry(password=OTHER_PASSWORD)])
    assert mode_and_owner(result["backup_file"]) == (0o600, 0, 0)
    assert open(result["backup_file"]).read() == "%s AKIAEXAMPLE:%s\n" % (SES_KEY, PASSWORD)
    assert sasl(backup=True, entries=[entry(password=OTHER_PASSWORD)])["backup_file"] is None


def test_backup_of_a_world_readable_map_is_still_0600(sasl):
    # An older tool left the map 0644: the module tightens the live file, and
    # the backup of the old password must not stay world-readable either.
    sasl(entries=[entry()])
    os.chmod(sasl.path, 0o644)
    result = sasl(backup=True, entries=[entry(password=OTHER_PASSWORD)])
    assert mode_and_owner(sasl.path) == (0o600, 0, 0)
    assert mode_and_owner(result["backup_file"]) == (0o600, 0, 0)


def test_default_type_follows_default_database_type(sasl, postfix_dir, settle):
    subprocess.run(["postconf", "-c", str(postfix_dir), "-e", "default_database_type=btree"], check=True)
    settle()
    result = sasl(entries=[entry()])
    assert result["type"] == "btree" and result["map"] == "btree:" + sasl.path
    assert lookup(postfix_dir, result["map"], SES_KEY) == "AKIAEXAMPLE:" + PASSWORD


@pytest.mark.parametrize("map_type", ["hash", "btree", "lmdb", "cdb", "texthash"])
def test_database_types(sasl, postfix_dir, map_types, map_type):
    if map_type not in map_types:
        pytest.skip("this Postfix has no %s support (postconf -m: %s)" % (map_type, " ".join(map_types)))
    result = sasl(type=map_type, entries=[entry()])
    assert result["map"] == "%s:%s" % (map_type, sasl.path)
    suffix = DB_SUFFIX[map_type]
    assert result["compiled"] == (suffix is not None)
    if suffix:
        assert mode_and_owner(sasl.path + suffix) == (0o600, 0, 0)
    else:
        assert sorted(name for name in os.listdir(str(postfix_dir)) if name.startswith("sasl_passwd")) == [
            "sasl_passwd"
        ]
        # Postfix waits for a text table younger than ~2 s to settle; pretend time has passed.
        os.utime(sasl.path, (time.time() - 60, time.time() - 60))
    assert lookup(postfix_dir, result["map"], SES_KEY) == "AKIAEXAMPLE:" + PASSWORD
    assert not sasl(type=map_type, entries=[entry()])["changed"]


def test_unavailable_type_is_refused(sasl, map_types):
    missing = [name for name in ("lmdb", "cdb", "btree") if name not in map_types]
    if not missing:
        pytest.skip("every selectable type is available here")
    result = sasl(type=missing[0], entries=[entry()])
    assert result["failed"] and "postconf -m lists" in result["msg"]
    assert not os.path.exists(sasl.path)


@pytest.mark.parametrize(
    "bad, message",
    [
        (entry(username="bad:user"), "must not contain ':'"),
        (entry(username="bad user"), "whitespace"),
        (entry(username=""), "username is missing"),
        (entry(password=""), "password is missing"),
        (entry(password=PASSWORD + "\nsecond line"), "line break"),
        (entry(password=" " + PASSWORD), "start or end with whitespace"),
        (entry(password=PASSWORD + " "), "start or end with whitespace"),
        (entry(key="[smtp.example.com]:70000"), "invalid port"),
        (entry(key="2001:db8::25"), "in brackets"),
        (entry(key="smtp example.com"), "invalid host"),
        ({"key": SES_KEY, "username": "only-user"}, "password is missing"),
    ],
)
def test_validation_errors_name_the_key_and_write_nothing(sasl, bad, message):
    result = sasl(entries=[entry("@example.com", "fine", OTHER_PASSWORD), bad])
    assert result["failed"]
    assert message in result["msg"]
    assert bad["key"] in result["msg"]
    assert not os.path.exists(sasl.path)


def test_duplicate_keys_fail(sasl):
    result = sasl(entries=[entry(), entry(key=SES_KEY.upper(), password=OTHER_PASSWORD)])
    assert result["failed"] and "more than once" in result["msg"]


# --------------------------------------------------------------------------- through real ansible


def collections_root():
    import ansible_collections.smarthost.postfix.plugins.modules.sasl_map as module

    return os.path.abspath(os.path.join(os.path.dirname(module.__file__), "..", "..", "..", "..", ".."))


def test_password_never_appears_in_ansible_output(postfix_dir, tmp_path):
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    if not os.path.exists(ansible):
        ansible = shutil.which("ansible")
    if not ansible:
        pytest.skip("ansible is not installed next to this Python")
    config = tmp_path / "ansible.cfg"
    config.write_text("")
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(config),
        ANSIBLE_HOME=str(tmp_path / "home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
        ANSIBLE_COLLECTIONS_PATH=collections_root(),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )

    def start(name, entries, *extra):
        args = {"path": str(postfix_dir / name), "config_dir": str(postfix_dir), "entries": entries}
        command = [
            ansible,
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            "ansible_python_interpreter=%s" % sys.executable,
            "-m",
            "smarthost.postfix.sasl_map",
            "-a",
            json.dumps(args),
            "-vvv",
            "--diff",
        ] + list(extra)
        return subprocess.Popen(
            command,
            env=env,
            cwd=str(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            universal_newlines=True,
        )

    good = [entry(), entry("@example.com", "sender", OTHER_PASSWORD)]
    runs = {
        "success": start("ok_passwd", good),
        "check+diff": start("check_passwd", good, "--check"),
        # a valid entry with the password plus an invalid one: the failure must not echo it
        "failure": start("bad_passwd", [entry(), entry("[b.example]:0", "user", OTHER_PASSWORD)]),
    }
    outputs = {name: proc.communicate(timeout=120)[0] for name, proc in runs.items()}
    codes = {name: proc.returncode for name, proc in runs.items()}
    assert codes == {"success": 0, "check+diff": 0, "failure": 2}, outputs
    assert "AKIAEXAMPLE:********" in outputs["check+diff"]
    assert "invalid port" in outputs["failure"]
    for name, output in outputs.items():
        assert PASSWORD not in output, name
        assert OTHER_PASSWORD not in output, name
    assert lookup(postfix_dir, "hash:%s" % (postfix_dir / "ok_passwd"), SES_KEY) == "AKIAEXAMPLE:" + PASSWORD


# --------------------------------------------------------------------------- lines as Postfix splits them


@pytest.mark.parametrize("char", ["\u2028", "\x85", "\u2029", "\x1c", "\x1d", "\x1e"])
def test_a_map_with_odd_line_breaks_is_read_as_postfix_reads_it(sasl, postfix_dir, char):
    """An older version (or another tool) wrote a password with a code point str.splitlines() breaks
    at: it is one entry to Postfix, so it is one entry to us; its tail never shows, the file never grows."""
    written = "%s AKIAEXAMPLE:Head%sTAILSECRET\n" % (SES_KEY, char)
    with open(sasl.path, "w", encoding="utf-8") as handle:
        handle.write(written)
    os.chmod(sasl.path, 0o600)
    first = sasl(diff=True, update_password="on_create", entries=[entry()])
    assert first["keys_added"] == [] and first["keys_removed"] == [] and first["compiled"]
    for _run in range(2):
        again = sasl(diff=True, update_password="on_create", exclusive=True, entries=[entry()])
        assert not again["changed"], again
        assert "TAILSECRET" not in json.dumps(again)
    assert open(sasl.path, encoding="utf-8").read() == written
    assert lookup(postfix_dir, "hash:" + sasl.path, SES_KEY) == "AKIAEXAMPLE:Head%sTAILSECRET" % char


def test_a_password_fragment_on_its_own_line_is_never_echoed(sasl):
    with open(sasl.path, "w") as handle:
        handle.write("%s AKIAEXAMPLE:Head\nTAILSECRET\n" % SES_KEY)
    os.chmod(sasl.path, 0o600)
    result = sasl(diff=True, exclusive=True, entries=[entry()])
    assert result["keys_removed"] == ["(line 2: not a SASL entry)"]
    assert "TAILSECRET" not in json.dumps(result) and "Head" not in json.dumps(result)


@pytest.mark.parametrize("field", ["username", "password"])
@pytest.mark.parametrize("char", ["\x00", "\u2028", "\x0b", "\x0c", "\x85"])
def test_nul_and_line_breaks_are_refused_in_logins(sasl, field, char):
    bad = entry(**{field: "u1%sTAILSECRET" % char})
    result = sasl(entries=[bad])
    assert result["failed"] and SES_KEY in result["msg"] and field in result["msg"]
    assert "TAILSECRET" not in result["msg"]
    if field == "password":
        assert "TAILSECRET" not in json.dumps(result)
    assert not os.path.exists(sasl.path)


def test_a_password_that_is_a_common_word_does_not_mask_the_message(sasl):
    result = sasl(entries=[entry(password="whitespace"), entry(key="[b.example]:587", password=" leading")])
    assert result["failed"]
    assert (
        result["msg"]
        == "entry '[b.example]:587': password must not start or end with whitespace (Postfix would drop it)"
    )


def test_without_main_cf_the_map_is_built_through_built_in_defaults(sasl, postfix_dir):
    """Debian's "No configuration" leaves no main.cf: check mode and the real run agree, and work."""
    os.unlink(str(postfix_dir / "main.cf"))
    checked = sasl(check_mode=True, entries=[entry()])
    applied = sasl(entries=[entry()])
    assert not checked.get("failed") and not applied.get("failed"), applied
    assert checked["changed"] == applied["changed"] and applied["compiled"]
    assert not os.path.exists(str(postfix_dir / "main.cf"))
    assert mode_and_owner(sasl.path + ".db") == (0o600, 0, 0)
    assert not sasl(entries=[entry()])["changed"]
