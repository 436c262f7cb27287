# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Count tasks and module invocations of a playbook run for the benchmarks, and time them.

Writes JSON to the file named by BENCH_COUNT_FILE when the run ends. A module
invocation is a task (or loop item) that ran a module on a managed host; tasks
the controller answers alone (set_fact, debug, assert, include_vars, ...) and
skipped tasks are counted as tasks but not as invocations.

The timeline says where a run's time goes: seconds from the moment this plugin
was loaded (early in ansible-playbook's start) to the playbook's start, to each
task's start and end, and to the end; with the controller process's own CPU
seconds (RUSAGE_SELF) and its finished workers' (RUSAGE_CHILDREN) at the end.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections import Counter

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: bench_count
type: aggregate
short_description: count tasks and module invocations (benchmarks only)
description: Writes task and module-invocation counts to the file named by BENCH_COUNT_FILE.
requirements: [enable in ANSIBLE_CALLBACKS_ENABLED]
"""

CONTROLLER_ONLY = {
    "set_fact",
    "debug",
    "assert",
    "fail",
    "include_vars",
    "meta",
    "validate_argument_spec",
    "include_tasks",
    "import_tasks",
    "include_role",
    "import_role",
    "group_by",
    "add_host",
    "pause",
}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_count"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.tasks = 0
        self.handlers = 0
        self.results = Counter()  # ok / changed / skipped / failed per task result
        self.invocations = Counter()  # module name -> runs on hosts (loop items counted singly)
        self.controller_only = Counter()  # action name -> results answered by the controller
        self.loaded = time.monotonic()
        self.marks = {}
        self.timeline = []  # [task name, action, start s, end s, status]
        self.current = None

    def _now(self):
        return round(time.monotonic() - self.loaded, 3)

    def v2_playbook_on_start(self, playbook):
        self.marks["playbook_start"] = self._now()
        self.marks["cpu_self_at_playbook_start"] = round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 3)

    def v2_playbook_on_play_start(self, play):
        self.marks.setdefault("play_start", self._now())

    def _close_task(self, status=None):
        if self.current is not None:
            self.current[3] = self._now()
            if status:
                self.current[4] = status
            self.current = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.tasks += 1
        self._close_task()
        self.current = [task.get_name(), self._short(task.action), self._now(), None, None]
        self.timeline.append(self.current)

    def v2_playbook_on_handler_task_start(self, task):
        self.handlers += 1
        self._close_task()
        self.current = [task.get_name(), self._short(task.action), self._now(), None, "handler"]
        self.timeline.append(self.current)

    @staticmethod
    def _short(action):
        return action.rsplit(".", 1)[-1]

    def _count(self, result, status):
        self.results[status] += 1
        action = result._task.action
        short = self._short(action)
        if short in CONTROLLER_ONLY:
            self.controller_only[short] += 1
            return
        items = result._result.get("results")
        if isinstance(items, list):
            ran = sum(1 for item in items if not item.get("skipped"))
        else:
            ran = 1
        if ran:
            self.invocations["setup" if short == "gather_facts" else short] += ran

    def _ended(self, status):
        if self.current is not None:
            self.current[3] = self._now()
            self.current[4] = self.current[4] or status

    def v2_runner_on_ok(self, result):
        status = "changed" if result._result.get("changed") else "ok"
        self._count(result, status)
        self._ended(status)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._count(result, "failed")
        self._ended("failed")

    def v2_runner_on_skipped(self, result):
        self.results["skipped"] += 1
        self._ended("skipped")

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("BENCH_COUNT_FILE")
        if not path:
            return
        self.marks["stats"] = self._now()
        self.marks["cpu_self"] = round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 3)
        self.marks["cpu_workers"] = round(sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]), 3)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(
                {
                    "tasks": self.tasks,
                    "handlers": self.handlers,
                    "results": dict(self.results),
                    "module_invocations": sum(self.invocations.values()),
                    "by_module": dict(sorted(self.invocations.items())),
                    "controller_only": dict(sorted(self.controller_only.items())),
                    "marks": self.marks,
                    "timeline": self.timeline,
                },
                handle,
                indent=1,
                sort_keys=True,
            )
