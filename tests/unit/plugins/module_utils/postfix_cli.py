# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ask the real postconf and postmap directly, independent of the code under test."""

from __future__ import annotations

import subprocess


def postconf(config_dir, *args):
    return subprocess.run(
        ["postconf", "-c", str(config_dir)] + list(args),
        check=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ).stdout


def lookup(config_dir, map_name, key):
    """What `postmap -q` answers for key in map_name ('' when nothing)."""
    return subprocess.run(
        ["postmap", "-c", str(config_dir), "-q", key, map_name], stdout=subprocess.PIPE, text=True, check=False
    ).stdout.strip()
