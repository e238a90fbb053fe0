# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The node_packages role in check mode on a node without its venv (a dry run of the first provision, issue 14).

In check mode a copy that would change returns no ``dest``; the role once read the wheels' paths on the node from
it and failed there. Its own tasks (roles/node_packages/tasks/main.yml, less the apt task) run here with the real
``ansible-playbook --check`` on localhost, every path under tmp_path: nothing is written (check mode; the one task
that runs for real, the version probe, only runs the venv's python, which is not there).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests import ansible_run

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "node_packages"

pytestmark = pytest.mark.skipif(not ansible_run.VENV_PLAYBOOK.exists(),
                                reason="ansible-playbook is not installed in the venv")


def role_tasks():
    """The role's tasks without the apt one (it would ask this machine's package manager)."""
    tasks = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
    kept = [t for t in tasks if "ansible.builtin.apt" not in t]
    assert len(kept) == len(tasks) - 1
    return kept


def test_a_dry_run_without_the_venv_says_it_would_install_and_writes_nothing(tmp_path):
    venv = tmp_path / "node" / "venv"
    play = [{"name": "node_packages in check mode", "hosts": "localhost", "gather_facts": False,
             "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
             "tasks": role_tasks()}]
    extra = {"node_packages_venv": str(venv), "node_packages_names": ["visionsuit-gpuworker", "visionsuit-gpu-agent"]}
    r = ansible_run.run(ansible_run.write_play(tmp_path, play), "localhost,", ansible_run.isolated_env(tmp_path),
                        *ansible_run.LOCALHOST, cwd=tmp_path, extra_vars=extra)
    assert r.rc == 0, ansible_run.tails(r.proc, 4000)
    res = dict(ansible_run.results(r.out))
    assert res["Create the virtual environment"]["changed"] is True
    assert [i["changed"] for i in res["Copy the wheels"]["results"]] == [True, True]
    install = res["Install the packages (replacing the installed version whole)"]
    assert not install.get("failed") and install.get("skipped") is True, install   # check mode: not run
    assert res["Tell the calling role whether the packages changed"]["ansible_facts"]["node_packages_changed"] is True
    assert not (tmp_path / "node").exists()
