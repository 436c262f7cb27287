# -*- coding: utf-8 -*-
# Copyright (c) 2025, smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Writing files the way a mail server's configuration needs: atomically, with mode and owner
in place before the content is visible, and backups that are never wider than the file.

atomic_write() is the one writer: maps, the SASL password map and the node_exporter textfile
all go through it.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time


def wanted_owner():
    """root:root when we can set it; otherwise leave ownership alone."""
    return (0, 0) if os.geteuid() == 0 else (None, None)


def attributes_differ(path, mode, uid, gid):
    st = os.stat(path)
    return (stat.S_IMODE(st.st_mode) != mode or (uid is not None and st.st_uid != uid)
            or (gid is not None and st.st_gid != gid))


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


def atomic_write(path, data, mode, uid=None, gid=None):
    """Replace path with data: temp file in the same directory, mode/owner set, fsync, rename.

    mkstemp creates the file 0600, and mode and owner are applied before the rename, so
    the content is never visible under the final name, nor readable by others, before it
    carries its final mode.
    """
    directory = os.path.dirname(path) or '.'
    fd, temp_path = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, 'wb') as handle:
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
    destination = '%s.%s.%s' % (path, os.getpid(), time.strftime('%Y-%m-%d@%H:%M:%S~'))
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'wb') as handle, open(path, 'rb') as source:
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
        with open(path, encoding='utf-8', errors='surrogateescape') as handle:
            return handle.read()
    except FileNotFoundError:
        return ''
