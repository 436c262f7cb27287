# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Cyrus SASL's user database (sasldb2) for Postfix's SMTP server: which users it should hold,
whether they are there with the passwords asked for, and a rebuild that replaces it whole.

The database itself is written only by the distribution's own saslpasswd2, so its format (Berkeley
DB on Debian, GDBM on RHEL) is always the one the host's libsasl2 reads; passwords reach
saslpasswd2 on its standard input, never on its command line. Whether a password changed is known
without reading the database (sasldb keeps passwords in clear text, in a format the standard
library cannot open): a root-only digest file records a salted PBKDF2 digest of each password set,
and saslpasswd2 runs only when a user, a password, the realm or the listed users differ.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile

from ansible_collections.smarthost.postfix.plugins.module_utils.files import (
    atomic_write,
    attributes_differ,
    set_attributes,
)
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import ValidationError, password_problem

# A user name saslpasswd2, the sasldb keys and Postfix's login maps all take as it is.
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
REALM = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
DIGEST_FORMAT = 1
# The digest file is root-only and the database next to it holds the passwords in clear text for
# the postfix group, so the digest needs no more work than this to be no weaker than the database.
DIGEST_ITERATIONS = 10000
DB_MODE = 0o640
DIGEST_MODE = 0o600
CONFIG_MODE = 0o644


def login(name, realm):
    """The login Cyrus and Postfix see: a name with @ carries its realm, any other gets realm."""
    return name if "@" in name else "%s@%s" % (name, realm)


def name_problem(name):
    """None when name can be a sasldb user (user or user@realm), else why not."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    user, _at, realm = name.rpartition("@") if "@" in name else (name, "", None)
    if not USER_NAME.match(user):
        return 'must be letters, digits, ".", "_", "+" and "-" (with an optional @domain)'
    if realm is not None and not REALM.match(realm):
        return "has no usable domain after the @"
    return None


def digest(password, salt=None, iterations=DIGEST_ITERATIONS):
    salt = os.urandom(16) if salt is None else salt
    value = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return "pbkdf2-sha256$%d$%s$%s" % (
        iterations,
        base64.b64encode(salt).decode("ascii"),
        base64.b64encode(value).decode("ascii"),
    )


def digest_matches(password, recorded):
    """Whether recorded (a digest() string) was made from password; False for anything unreadable."""
    try:
        scheme, iterations, salt, value = recorded.split("$")
        if scheme != "pbkdf2-sha256":
            return False
        expected = digest(password, base64.b64decode(salt), int(iterations))
    except (AttributeError, ValueError, TypeError):
        return False
    return hmac.compare_digest(expected.rsplit("$", 1)[1], value)


def read_digests(path):
    """login -> digest from the digest file; {} when it is missing or unreadable (then every user is rewritten)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != DIGEST_FORMAT or not isinstance(data.get("users"), dict):
        return {}
    return data["users"]


def render_digests(digests):
    return (json.dumps({"format": DIGEST_FORMAT, "users": digests}, indent=1, sort_keys=True) + "\n").encode("utf-8")


def parse_listing(text):
    """The logins sasldblistusers2 prints ("user@realm: property" per line)."""
    logins = set()
    for line in text.splitlines():
        name, sep, _property = line.rpartition(": ")
        if sep and name:
            logins.add(name)
    return logins


def config_text(path, mechanisms):
    """The Cyrus application configuration (smtpd.conf) that makes smtpd check passwords against path."""
    return (
        "# Managed by smarthost.postfix: the users of %s, checked by libsasl2 inside smtpd.\n"
        "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\nmech_list: %s\n"
        % (path, path, " ".join(mechanisms))
    )


def desired_users(users, realm):
    """[(login, password)] from the module's users, validated; errors name the user, never the password."""
    pairs = []
    seen = set()
    for index, user in enumerate(users):
        name = user.get("name")
        problem = name_problem(name)
        if problem:
            raise ValidationError("users[%d].name %s" % (index, problem))
        if "@" not in name and not realm:
            raise ValidationError("users[%d].name %s has no @domain: set realm" % (index, name))
        problem = password_problem(user.get("password"))
        if problem:
            raise ValidationError("users[%d].password (user %s) %s" % (index, name, problem))
        key = login(name, realm).lower()
        if key in seen:
            raise ValidationError("users[%d].name %s is listed twice" % (index, login(name, realm)))
        seen.add(key)
        pairs.append((login(name, realm), user["password"]))
    return sorted(pairs)


@dataclasses.dataclass
class Change:
    added: list
    removed: list
    updated: list
    attributes: bool
    config: bool

    @property
    def database(self):
        return bool(self.added or self.removed or self.updated)

    @property
    def changed(self):
        return self.database or self.attributes or self.config


def compare(desired, listed, digests):
    """What differs between the desired (login, password) pairs and the database as listed.

    listed is the set of logins in the database (empty when there is none); a user counts as
    updated when the digest file has no digest of its password.
    """
    wanted = dict(desired)
    added = sorted(set(wanted) - listed)
    removed = sorted(listed - set(wanted))
    updated = sorted(name for name in set(wanted) & listed if not digest_matches(wanted[name], digests.get(name)))
    return added, removed, updated


class SaslDb:
    """One sasldb2 file, its digest file and (optionally) the Cyrus application config naming it."""

    def __init__(self, path, run, group_id=None, config_file=None, mechanisms=("PLAIN", "LOGIN")):
        self.path = path
        self.digest_path = path + ".digest"
        self.run = run
        self.group_id = group_id
        self.config_file = config_file
        self.mechanisms = list(mechanisms)

    def _owner(self):
        return (0, self.group_id if self.group_id is not None else 0) if os.geteuid() == 0 else (None, None)

    def listed(self):
        """The logins in the database now (empty when there is none)."""
        if not os.path.exists(self.path):
            return set()
        rc, out, err = self.run(["sasldblistusers2", "-f", self.path])
        if rc != 0:
            raise ValidationError("sasldblistusers2 cannot read %s: %s" % (self.path, (err or out).strip()))
        return parse_listing(out)

    def _config_differs(self, present):
        if self.config_file is None:
            return False
        if not present:
            return os.path.exists(self.config_file)
        try:
            with open(self.config_file, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return True
        uid, _gid = self._owner()
        return text != config_text(self.path, self.mechanisms) or attributes_differ(
            self.config_file, CONFIG_MODE, uid, 0 if uid is not None else None
        )

    def _attributes_differ(self, present):
        if not present:
            return os.path.exists(self.digest_path)
        uid, gid = self._owner()
        root_group = 0 if uid is not None else None
        for path, mode, group in ((self.path, DB_MODE, gid), (self.digest_path, DIGEST_MODE, root_group)):
            if os.path.exists(path) and attributes_differ(path, mode, uid, group):
                return True
        return not os.path.exists(self.digest_path)

    def compare(self, desired):
        added, removed, updated = compare(desired, self.listed(), read_digests(self.digest_path))
        present = bool(desired)
        return Change(added, removed, updated, self._attributes_differ(present), self._config_differs(present))

    def build(self, desired):
        """Write a new database with exactly desired in a private directory, then rename it into place."""
        directory = os.path.dirname(self.path) or "."
        private = tempfile.mkdtemp(prefix=".%s." % os.path.basename(self.path), dir=directory)
        try:
            fresh = os.path.join(private, os.path.basename(self.path))
            digests = {}
            for name, password in desired:
                user, realm = name.rsplit("@", 1)
                # -p: the password is read from standard input, so it never shows in a process list.
                rc, out, err = self.run(["saslpasswd2", "-f", fresh, "-u", realm, "-c", "-p", user], data=password)
                if rc != 0:
                    raise ValidationError("saslpasswd2 could not add %s: %s" % (name, (err or out).strip()))
                digests[name] = digest(password)
            uid, gid = self._owner()
            set_attributes(fresh, DB_MODE, uid, gid)
            os.rename(fresh, self.path)
        finally:
            shutil.rmtree(private, ignore_errors=True)
        return digests

    def apply(self, desired, change):
        """Bring the files to the desired state (change is what compare() found)."""
        uid, gid = self._owner()
        root_group = 0 if uid is not None else None
        if not desired:
            for path in (self.path, self.digest_path) + ((self.config_file,) if self.config_file else ()):
                if os.path.exists(path):
                    os.unlink(path)
            return
        directory = os.path.dirname(self.path) or "."
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        if change.database or not os.path.exists(self.digest_path):
            digests = self.build(desired)
            atomic_write(self.digest_path, render_digests(digests), DIGEST_MODE, uid, root_group)
        else:
            set_attributes(self.path, DB_MODE, uid, gid)
            set_attributes(self.digest_path, DIGEST_MODE, uid, root_group)
        if self.config_file is not None and change.config:
            atomic_write(
                self.config_file, config_text(self.path, self.mechanisms).encode("utf-8"), CONFIG_MODE, uid, root_group
            )


def diff_lines(logins, change, after):
    """The users as a diff shows them: names only, a changed password marked, never the password."""
    lines = []
    for name in sorted(logins):
        marker = " (password changed)" if after and name in change.updated else ""
        lines.append("%s%s\n" % (name, marker))
    return "".join(lines)


def manage_sasldb(db, users, realm, state, check_mode):
    """The module's work: compare, then (outside check mode) rebuild what differs. Returns the result with a diff."""
    desired = desired_users(users, realm) if state == "present" else []
    before = db.listed()
    change = db.compare(desired)
    if change.changed and not check_mode:
        db.apply(desired, change)
    after = set(name for name, _password in desired)
    return {
        "changed": change.changed,
        "users": sorted(after),
        "users_added": change.added,
        "users_removed": change.removed,
        "users_updated": change.updated,
        "config_changed": change.config,
        "diff": {
            "before_header": db.path,
            "after_header": db.path,
            "before": diff_lines(before, change, False),
            "after": diff_lines(after, change, True),
        },
    }
