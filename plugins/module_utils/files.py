# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Writing files the way a mail server's configuration needs: atomically, with mode and owner
in place before the content is visible, and backups that are never wider than the file.

atomic_write() is the one writer: maps, the SASL password map and the node_exporter textfile
all go through it. Every run that writes holds locked() on the directories it writes in, and
first calls recover() there: a run that was killed (SIGKILL, a lost connection, a power cut)
leaves temporary files and rollback directories behind, and only the next run can finish them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
import time

from ansible_collections.smarthost.postfix.plugins.module_utils.rules import ValidationError

# Private work directories beside the files they concern (mkdtemp: 0700, same file system).
ROLLBACK_PREFIX = ".smarthost-rollback-"
POSTMAP_PREFIX = ".postmap-"
# In a rollback directory, written once every copy is in it and before anything changes.
MANIFEST = "manifest.json"
# tempfile's random part: eight characters of [a-z0-9_].
_RANDOM_PART = r"[a-z0-9_]{8}"
# How long a run waits for another one to finish with a directory.
LOCK_TIMEOUT = 300


class Busy(ValidationError):
    """Another run kept a directory locked for longer than we wait."""


def wanted_owner():
    """root:root when we can set it; otherwise leave ownership alone."""
    return (0, 0) if os.geteuid() == 0 else (None, None)


def attributes_differ(path, mode, uid, gid):
    st = os.stat(path)
    return (
        stat.S_IMODE(st.st_mode) != mode
        or (uid is not None and st.st_uid != uid)
        or (gid is not None and st.st_gid != gid)
    )


def set_attributes(path, mode, uid, gid):
    if uid is not None:
        os.chown(path, uid, gid)
    os.chmod(path, mode)


def _fsync_directory(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- locking

_held = {}  # real path of a directory -> [file descriptor, how many times this process holds it]


@contextlib.contextmanager
def locked(directories, timeout=LOCK_TIMEOUT):
    """Hold an exclusive flock on each directory while the block runs.

    Two runs on one host (two playbooks at once) would otherwise interleave read, write, postmap
    and rename, and lose each other's changes. The lock is on the directory itself (no lock file
    to leave behind), taken in sorted order so two runs never wait on each other in a circle, and
    re-entrant within the process (flock would otherwise block on a second descriptor of our own).
    """
    paths = sorted(set(os.path.realpath(directory or ".") for directory in directories))
    taken = []
    try:
        for path in paths:
            _acquire(path, timeout)
            taken.append(path)
        yield
    finally:
        for path in reversed(taken):
            _release(path)


def _acquire(path, timeout):
    held = _held.get(path)
    if held is not None:
        held[1] += 1
        return
    fd = os.open(path, os.O_RDONLY)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            if time.monotonic() >= deadline:
                os.close(fd)
                raise Busy(
                    "another run has been changing %s for %d seconds; try again when it has finished" % (path, timeout)
                ) from None
            time.sleep(0.02)
    _held[path] = [fd, 1]


def _release(path):
    held = _held[path]
    held[1] -= 1
    if held[1] == 0:
        del _held[path]
        os.close(held[0])  # closing the descriptor releases the flock


# --------------------------------------------------------------------------- writing


def private_copy(source, destination):
    """Copy source to destination created 0600 (never wider, not even briefly), with its times."""
    st = os.stat(source)
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle, open(source, "rb") as original:
        shutil.copyfileobj(original, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.utime(destination, ns=(st.st_atime_ns, st.st_mtime_ns))
    return st


@contextlib.contextmanager
def private_umask():
    """Files created meanwhile (by us or a child such as postmap) get no permission for others."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def atomic_write(path, data, mode, uid=None, gid=None):
    """Replace path with data: temp file in the same directory, mode/owner set, fsync, rename.

    mkstemp creates the file 0600, and mode and owner are applied before the rename, so
    the content is never visible under the final name, nor readable by others, before it
    carries its final mode.
    """
    directory = os.path.dirname(path) or "."
    fd, temp_path = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if uid is not None:
                os.fchown(handle.fileno(), uid, gid)
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.rename(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        raise
    _fsync_directory(directory)


def backup_file(path, mode=None):
    """Copy path to path.PID.YYYY-MM-DD@HH:MM:SS~ (AnsibleModule.backup_local's naming).

    Unlike shutil.copy2, the copy is created 0600 and only then given the source's owner and
    mode, so a backup of a secret table is never readable by others, not even briefly. With
    mode (the mode the table is being given), the backup gets no permission beyond it: a
    SASL map that an older tool left 0644 is backed up 0600, not as a world-readable copy
    of the old password.
    """
    st = os.stat(path)
    destination = "%s.%s.%s" % (path, os.getpid(), time.strftime("%Y-%m-%d@%H:%M:%S~"))
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle, open(path, "rb") as source:
        shutil.copyfileobj(source, handle)
        if os.geteuid() == 0:
            os.fchown(handle.fileno(), st.st_uid, st.st_gid)
        backup_mode = stat.S_IMODE(st.st_mode)
        if mode is not None:
            backup_mode &= mode
        os.fchmod(handle.fileno(), backup_mode)
        os.fsync(handle.fileno())
    return destination


def read_text(path):
    """The text of a file as Postfix reads it (bytes that are not UTF-8 survive a round trip), '' when missing."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------- rollback directories


def write_manifest(workdir, records):
    """Arm a rollback directory: records are {name, copy, mode, uid, gid} of files in its parent
    directory (copy None: the file did not exist). From now on an interrupted run is undone."""
    atomic_write(os.path.join(workdir, MANIFEST), json.dumps(records).encode("utf-8"), 0o600)


def disarm(workdir):
    """The change is complete: a run killed from here on must not be undone."""
    try:
        os.unlink(os.path.join(workdir, MANIFEST))
    except FileNotFoundError:
        pass


def restore_records(workdir, records):
    """Put back the files a rollback directory holds: bytes, mode, owner and times at once (rename)."""
    directory = os.path.dirname(workdir)
    for record in records:
        path = os.path.join(directory, record["name"])
        if record["copy"] is None:
            if os.path.lexists(path):
                os.unlink(path)
            continue
        copy = os.path.join(workdir, record["copy"])
        if not os.path.exists(copy):
            continue  # already put back by a restore that was itself interrupted
        set_attributes(copy, record["mode"], record["uid"] if os.geteuid() == 0 else None, record["gid"])
        os.rename(copy, path)


def recover(directory, names=(), check_mode=False):
    """Finish in directory what killed runs left behind; return what was (or would be) done.

    - a rollback directory with a manifest: the change it guarded never completed, so its files
      are put back as they were before it started; without a manifest the change had not begun;
    - a postmap work directory (a 0600 copy of a table being compiled): removed;
    - a temporary file of one of names (the atomic writer's, about to replace that file): removed.
    Call it holding locked(directory), so that no live run owns what it finds. In check mode
    nothing is touched.
    """
    actions = []

    def did(done, to_do):
        return "would " + to_do if check_mode else done

    temp_re = re.compile(r"^\.(%s)\.%s$" % ("|".join(re.escape(name) for name in names) or "(?!)", _RANDOM_PART))
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if re.match(r"^%s%s$" % (re.escape(ROLLBACK_PREFIX), _RANDOM_PART), name) and os.path.isdir(path):
            try:
                with open(os.path.join(path, MANIFEST), encoding="utf-8") as handle:
                    records = json.load(handle)
            except (FileNotFoundError, ValueError):
                records = None
            if records:
                actions.append(
                    "%s %s as they were before an interrupted change (from %s)"
                    % (did("put back", "put back"), ", ".join(sorted(record["name"] for record in records)), path)
                )
                if not check_mode:
                    restore_records(path, records)
            else:
                actions.append(
                    "%s %s, left by an interrupted change that had not begun" % (did("removed", "remove"), path)
                )
            if not check_mode:
                shutil.rmtree(path)
        elif re.match(r"^%s%s$" % (re.escape(POSTMAP_PREFIX), _RANDOM_PART), name) and os.path.isdir(path):
            actions.append("%s %s, left by an interrupted postmap" % (did("removed", "remove"), path))
            if not check_mode:
                shutil.rmtree(path)
        elif temp_re.match(name) and os.path.isfile(path):
            actions.append("%s %s, left by an interrupted write" % (did("removed", "remove"), path))
            if not check_mode:
                os.unlink(path)
    return actions
