# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark helper callback (not shipped with the collection): one JSON line per task result, written to the file
named by VISIONSUIT_TASK_RECORD: host, task, action, status (ok/changed/skipped/failed), seconds on the node and
whether the task needed the node at all (``remote``: not a controller-only action such as set_fact or debug)."""
from __future__ import annotations

DOCUMENTATION = r"""
name: task_record
type: aggregate
short_description: one JSON line per task result (benchmarks/provision.py)
description: Writes host, task, action, status and duration of every task result to $VISIONSUIT_TASK_RECORD.
requirements: [enable in callbacks_enabled]
"""

import json  # noqa: E402 (after DOCUMENTATION, as Ansible's own plugins)
import os  # noqa: E402
import time  # noqa: E402

from ansible.plugins.callback import CallbackBase  # noqa: E402

# actions that never reach the node (their work is on the controller)
LOCAL = {"set_fact", "debug", "assert", "fail", "meta", "include_tasks", "import_tasks", "include_role",
         "import_role", "include_vars", "add_host", "group_by", "set_stats", "pause", "validate_argument_spec"}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._path = os.environ.get("VISIONSUIT_TASK_RECORD")
        self._start = {}

    def _task_start(self, task):
        self._start[task._uuid] = time.monotonic()

    v2_playbook_on_task_start = lambda self, task, is_conditional: self._task_start(task)  # noqa: E731
    v2_playbook_on_handler_task_start = lambda self, task: self._task_start(task)  # noqa: E731

    def _write(self, result, status):
        if not self._path:
            return
        task = result._task
        action = task.action.rsplit(".", 1)[-1]
        delegated = (result._result.get("_ansible_delegated_vars") or {}).get("ansible_host")
        if status != "skipped" and result._result.get("changed"):
            status = "changed"
        record = {"host": result._host.get_name(), "task": task.get_name(), "action": action, "status": status,
                  "s": round(time.monotonic() - self._start.get(task._uuid, time.monotonic()), 3),
                  "remote": status != "skipped" and action not in LOCAL and delegated not in ("localhost", "127.0.0.1"),
                  "items": sum(1 for r in result._result["results"] if not r.get("skipped"))
                  if isinstance(result._result.get("results"), list) else None}
        with open(self._path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")

    def v2_runner_on_ok(self, result):
        self._write(result, "ok")

    def v2_runner_on_skipped(self, result):
        self._write(result, "skipped")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(result, "failed")
