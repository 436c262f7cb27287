# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""smarthost.postfix.sasldb with the real saslpasswd2 and sasldblistusers2 (Debian sasl2-bin).

The tools run through logging wrappers, which prove that a password never reaches a command line
and that a run with nothing to change runs no saslpasswd2 at all.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
import textwrap

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils import sasldb
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import ValidationError

APP_PASSWORD = "App-S3cret with spaces & symbols"
CRM_PASSWORD = "Crm-S3cret:colon#hash"
NEW_PASSWORD = "An0ther-Secret-Value"
SECRETS = (APP_PASSWORD, CRM_PASSWORD, NEW_PASSWORD)

pytestmark = pytest.mark.skipif(
    shutil.which("saslpasswd2") is None or shutil.which("sasldblistusers2") is None,
    reason="needs saslpasswd2 and sasldblistusers2 (Debian package sasl2-bin)",
)


@pytest.fixture
def sasl_tools(tmp_path, monkeypatch):
    """Wrappers for saslpasswd2 and sasldblistusers2 that log each argv, then run the real tool."""
    bin_dir = tmp_path / "wrappers"
    bin_dir.mkdir()
    log = tmp_path / "sasl-calls.log"
    for tool in ("saslpasswd2", "sasldblistusers2"):
        script = textwrap.dedent("""\
            #!/bin/sh
            { printf '%%s' %s; for arg in "$@"; do printf '\\037%%s' "$arg"; done; printf '\\n'; } >> %s
            exec %s "$@"
            """) % (tool, log, shutil.which(tool))
        (bin_dir / tool).write_text(script, encoding="utf-8")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", "%s%s%s" % (bin_dir, os.pathsep, os.environ.get("PATH", "")))

    def calls(tool):
        if not log.exists():
            return []
        lines = log.read_text(encoding="utf-8").splitlines()
        return [line.split("\x1f")[1:] for line in lines if line.split("\x1f")[0] == tool]

    calls.log = log
    return calls


@pytest.fixture
def group():
    """A group the database may be given: postfix where it exists, else the test's own."""
    try:
        return "postfix", grp.getgrnam("postfix").gr_gid
    except KeyError:
        gid = os.getgid()
        return grp.getgrgid(gid).gr_name, gid


@pytest.fixture
def users_db(run_module, tmp_path, group, sasl_tools):
    directory = tmp_path / "submission"

    def run(users, check_mode=False, diff=False, **args):
        args.setdefault("path", str(directory / "sasldb2"))
        args.setdefault("config_file", str(directory / "smtpd.conf"))
        args.setdefault("realm", "submission")
        args.setdefault("group", group[0])
        result = run_module("sasldb", dict(args, users=users), check_mode=check_mode, diff=diff)
        dumped = json.dumps(result)
        assert not any(secret in dumped for secret in SECRETS), "a password in the module result"
        return result

    run.path = str(directory / "sasldb2")
    run.directory = directory
    return run


def users(app=APP_PASSWORD, crm=CRM_PASSWORD):
    return [{"name": "billing-app", "password": app}, {"name": "crm@example.org", "password": crm}]


def listed(path):
    out = subprocess.run(["sasldblistusers2", "-f", path], stdout=subprocess.PIPE, text=True, check=True).stdout
    return sorted(line.split(": ")[0] for line in out.splitlines())


def stored_passwords(path):
    """login -> password as Berkeley DB holds it (db_dump -p), or None where db_dump is missing."""
    if shutil.which("db_dump") is None:
        return None
    out = subprocess.run(["db_dump", "-p", path], stdout=subprocess.PIPE, text=True, check=True).stdout
    lines = [line[1:] for line in out.splitlines() if line.startswith(" ")]
    stored = {}
    for key, value in zip(lines[::2], lines[1::2]):
        user, realm, _property = key.split("\\00")
        stored["%s@%s" % (user, realm)] = value
    return stored


def mode_and_owner(path):
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_creates_the_users_root_owned_for_the_group_then_changes_nothing(users_db, sasl_tools, group):
    first = users_db(users())
    assert first["changed"] and first["config_changed"]
    assert first["users"] == first["users_added"] == ["billing-app@submission", "crm@example.org"]
    assert listed(users_db.path) == ["billing-app@submission", "crm@example.org"]
    assert mode_and_owner(users_db.path) == (0o640, 0, group[1])
    assert mode_and_owner(users_db.path + ".digest") == (0o600, 0, 0)
    assert mode_and_owner(str(users_db.directory / "smtpd.conf")) == (0o644, 0, 0)
    assert (users_db.directory / "smtpd.conf").read_text() == (
        "# Managed by smarthost.postfix: the users of %s, checked by libsasl2 inside smtpd.\n"
        "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\nmech_list: PLAIN LOGIN\n"
        % (users_db.path, users_db.path)
    )
    stored = stored_passwords(users_db.path)
    if stored is not None:
        assert stored == {"billing-app@submission": APP_PASSWORD, "crm@example.org": CRM_PASSWORD}
    assert len(sasl_tools("saslpasswd2")) == 2

    sasl_tools.log.unlink()
    second = users_db(users())
    assert second["changed"] is False
    assert second["users_added"] == second["users_removed"] == second["users_updated"] == []
    assert sasl_tools("saslpasswd2") == []


def test_no_password_ever_reaches_a_command_line(users_db, sasl_tools):
    users_db(users())
    users_db(users(app=NEW_PASSWORD))
    calls = sasl_tools.log.read_text(encoding="utf-8")
    assert sasl_tools("saslpasswd2") and not any(secret in calls for secret in SECRETS)
    for argv in sasl_tools("saslpasswd2"):
        assert "-p" in argv and argv[-1] in ("billing-app", "crm")
    assert not any(secret in open(users_db.path + ".digest").read() for secret in SECRETS)


def test_a_changed_password_is_rewritten_and_only_then(users_db):
    users_db(users())
    checked = users_db(users(app=NEW_PASSWORD), check_mode=True, diff=True)
    assert checked["changed"] and checked["users_updated"] == ["billing-app@submission"]
    assert checked["diff"]["after"] == "billing-app@submission (password changed)\ncrm@example.org\n"
    stored = stored_passwords(users_db.path)
    if stored is not None:
        assert stored["billing-app@submission"] == APP_PASSWORD, "check mode wrote"
    result = users_db(users(app=NEW_PASSWORD))
    assert result["changed"] and result["users_updated"] == ["billing-app@submission"]
    stored = stored_passwords(users_db.path)
    if stored is not None:
        assert stored == {"billing-app@submission": NEW_PASSWORD, "crm@example.org": CRM_PASSWORD}
    assert users_db(users(app=NEW_PASSWORD))["changed"] is False


def test_a_user_left_out_is_removed(users_db):
    users_db(users())
    result = users_db(users()[:1], diff=True)
    assert result["changed"] and result["users_removed"] == ["crm@example.org"]
    assert result["diff"]["before"] == "billing-app@submission\ncrm@example.org\n"
    assert result["diff"]["after"] == "billing-app@submission\n"
    assert listed(users_db.path) == ["billing-app@submission"]


def test_a_user_added_behind_the_modules_back_is_removed(users_db):
    users_db(users())
    subprocess.run(
        ["saslpasswd2", "-f", users_db.path, "-u", "submission", "-c", "-p", "intruder"],
        input="intruder-password",
        text=True,
        check=True,
    )
    result = users_db(users())
    assert result["changed"] and result["users_removed"] == ["intruder@submission"]
    assert listed(users_db.path) == ["billing-app@submission", "crm@example.org"]


def test_a_lost_digest_file_rewrites_every_user(users_db):
    users_db(users())
    os.unlink(users_db.path + ".digest")
    result = users_db(users())
    assert result["changed"] and result["users_updated"] == ["billing-app@submission", "crm@example.org"]
    assert users_db(users())["changed"] is False


def test_a_widened_mode_is_put_back(users_db):
    users_db(users())
    os.chmod(users_db.path, 0o644)
    assert users_db(users(), check_mode=True)["changed"]
    assert users_db(users())["changed"]
    assert stat.S_IMODE(os.stat(users_db.path).st_mode) == 0o640


def test_no_users_removes_the_database_its_digest_and_config(users_db):
    users_db(users())
    result = users_db([])
    assert result["changed"] and result["users_removed"] == ["billing-app@submission", "crm@example.org"]
    assert sorted(os.listdir(users_db.directory)) == []
    assert users_db([])["changed"] is False
    assert users_db([], state="absent")["changed"] is False


@pytest.mark.parametrize(
    "given, message",
    [
        ([{"name": "app one", "password": APP_PASSWORD}], "users[0].name must be letters"),
        (
            [{"name": "app", "password": APP_PASSWORD + "\n"}],
            "users[0].password (user app) must not contain a line break",
        ),
        (
            [{"name": "app", "password": APP_PASSWORD}, {"name": "APP@submission", "password": CRM_PASSWORD}],
            "users[1].name APP@submission is listed twice",
        ),
    ],
)
def test_bad_users_fail_before_anything_is_written(users_db, given, message):
    result = users_db(given)
    assert result.get("failed") and message in result["msg"], result
    assert not users_db.directory.exists()


def test_a_name_without_domain_needs_a_realm(users_db):
    result = users_db([{"name": "app", "password": APP_PASSWORD}], realm=None)
    assert result.get("failed") and "set realm" in result["msg"]


# ---------------------------------------------------------------- the pieces


def test_digest_matches_only_its_password():
    recorded = sasldb.digest(APP_PASSWORD)
    assert sasldb.digest_matches(APP_PASSWORD, recorded)
    assert not sasldb.digest_matches(NEW_PASSWORD, recorded)
    assert sasldb.digest(APP_PASSWORD) != recorded, "the salt must differ per digest"
    for broken in (None, "", "md5$1$x$y", "pbkdf2-sha256$x$y$z", recorded[:-4]):
        assert not sasldb.digest_matches(APP_PASSWORD, broken)


def test_logins_and_listing():
    assert sasldb.login("app", "submission") == "app@submission"
    assert sasldb.login("crm@example.org", "submission") == "crm@example.org"
    assert sasldb.parse_listing("app@submission: userPassword\ncrm@example.org: userPassword\n\n") == {
        "app@submission",
        "crm@example.org",
    }


def test_compare_finds_added_removed_and_updated():
    digests = {"a@r": sasldb.digest("one"), "b@r": sasldb.digest("two")}
    desired = [("a@r", "one"), ("b@r", "changed"), ("c@r", "three")]
    added, removed, updated = sasldb.compare(desired, {"a@r", "b@r", "x@r"}, digests)
    assert (added, removed, updated) == (["c@r"], ["x@r"], ["b@r"])


def test_desired_users_refuses_what_saslpasswd2_or_postfix_would_misread():
    with pytest.raises(ValidationError):
        sasldb.desired_users([{"name": "a:b", "password": "x"}], "submission")
    with pytest.raises(ValidationError) as error:
        sasldb.desired_users([{"name": "app", "password": " " + APP_PASSWORD}], "submission")
    assert APP_PASSWORD not in str(error.value)


def test_missing_cyrus_tools_are_named_with_their_package(users_db, monkeypatch, tmp_path):
    users_db(users())
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(
        os.path,
        "exists",
        lambda path, _real=os.path.exists: (
            False if path in ("/usr/sbin/sasldblistusers2", "/sbin/sasldblistusers2") else _real(path)
        ),
    )
    result = users_db(users())
    assert result.get("failed")
    assert "sasldblistusers2 not found: install sasl2-bin (Debian) or cyrus-sasl (RHEL)" in result["msg"]
