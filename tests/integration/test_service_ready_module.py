# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The service_ready module run by ansible-playbook: a failed wait names the unit state and the journal tail,
stops early when the unit gave up, and check mode makes one try and never fails.

systemctl and journalctl are stand-ins on PATH (this machine runs no systemd); molecule proves the same
with the real comfyui.service (molecule/default/verify.yml, "a ComfyUI that cannot start").
"""
from __future__ import annotations

import os
import socket
import stat

import pytest

from tests.ansible_run import run_tasks

pytestmark = pytest.mark.integration

FAKE_SYSTEMCTL = """#!/bin/sh
# systemctl show ... UNIT: a unit that hit its start limit
printf 'LoadState=loaded\\nActiveState=failed\\nSubState=failed\\nResult=start-limit-hit\\nNRestarts=5\\n'
"""
FAKE_JOURNALCTL = """#!/bin/sh
printf 'Traceback (most recent call last):\\n  File "/opt/comfyui/app/frontend_management.py", line 13\\n'
printf "ModuleNotFoundError: No module named 'requests'\\n"
"""


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fake_systemd(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in (("systemctl", FAKE_SYSTEMCTL), ("journalctl", FAKE_JOURNALCTL)):
        path = bindir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


def test_a_failed_wait_reports_unit_state_and_journal(tmp_path, fake_systemd):
    url = f"http://127.0.0.1:{_closed_port()}/system_stats"
    tasks = [
        {"name": "wait", "visionsuit.gpuworker.service_ready": {"url": url, "unit": "comfyui.service",
                                                               "timeout": 60, "journal_lines": 5},
         "ignore_errors": True},
        {"name": "check", "visionsuit.gpuworker.service_ready": {"url": url, "unit": "comfyui.service",
                                                                "timeout": 60}, "check_mode": True},
    ]
    results, proc = run_tasks(tmp_path, tasks, extra_env=fake_systemd)
    wait = results["wait"]
    assert wait["failed"] is True, wait
    assert "comfyui.service: failed (start-limit-hit), 5 restarts" in wait["msg"]
    assert "No module named 'requests'" in wait["msg"]
    assert "stopped waiting after" in wait["msg"]
    assert wait["attempts"] == 1 and wait["elapsed"] < 30  # the unit gave up: no 60 s of waiting
    assert wait["unit_state"]["Result"] == "start-limit-hit"
    assert wait["journal"][-1] == "ModuleNotFoundError: No module named 'requests'"
    check = results["check"]
    assert not check.get("failed") and check["ready"] is False and check["changed"] is False
    assert "check mode: one try" in check["msg"]


def test_bad_url_names_the_option(tmp_path):
    results, _ = run_tasks(tmp_path, [{"name": "bad", "visionsuit.gpuworker.service_ready": {"url": "ftp://x"},
                                          "ignore_errors": True}])
    assert results["bad"]["failed"] is True and results["bad"]["msg"].startswith("url: not an http(s) URL")
