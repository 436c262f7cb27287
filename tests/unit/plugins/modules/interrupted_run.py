# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a module's main() in this process and stop at a named stage, so a test can SIGKILL it there.

    python interrupted_run.py MODULE ARGS_JSON STAGE MARKER

At STAGE the process writes MARKER and sleeps; the test kills it with SIGKILL, which no cleanup
survives. The stages are found by wrapping the functions the module calls, so the collection
itself carries no test hook:

    temp-written   the atomic writer's temporary file is complete, not yet renamed over the table
    postmap-built  postmap built the map in its private directory, not yet renamed into place
    copying        postfix_config copied the first file aside, the rollback manifest not yet written
    checking       postfix_config wrote every file and runs postfix check
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time


def pause_here(marker):
    with open(marker, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(600)


def arm(stage, marker):
    from ansible_collections.smarthost.postfix.plugins.module_utils import postfix, transaction

    real_rename = os.rename

    def rename(source, destination, *args, **kwargs):
        name = os.path.basename(str(source))
        parent = os.path.basename(os.path.dirname(str(source)))
        if stage == "temp-written" and name.startswith(".sasl_passwd."):
            pause_here(marker)
        if stage == "postmap-built" and parent.startswith(".postmap-"):
            pause_here(marker)
        return real_rename(source, destination, *args, **kwargs)

    os.rename = rename

    if stage == "copying":
        real_copy = transaction.private_copy

        def private_copy(source, destination):
            result = real_copy(source, destination)
            pause_here(marker)
            return result

        transaction.private_copy = private_copy
    if stage == "checking":
        postfix.Postfix.check = lambda self: pause_here(marker)


def main():
    module_name, args_path, stage, marker = sys.argv[1:5]
    with open(args_path) as handle:
        args = json.load(handle)
    arm(stage, marker)
    try:
        from ansible.module_utils.testing import patch_module_args
    except ImportError:  # ansible-core < 2.19
        from unittest import mock

        from ansible.module_utils import basic

        def patch_module_args(module_args):
            return mock.patch.object(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": module_args}).encode())

    module = importlib.import_module("ansible_collections.smarthost.postfix.plugins.modules." + module_name)
    with patch_module_args(args):
        module.main()


if __name__ == "__main__":
    main()
