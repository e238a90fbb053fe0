# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rollback role removes every ComfyUI instance on a node, planned or not (issue 13): the comfyui footprint
names the template unit and the instances' glob (``unit_globs``), and rollback stops every loaded instance
``systemctl list-units`` reports for it. Run by the real ``ansible-playbook --check`` on localhost: the roles'
footprint tasks only set facts; the list-units output is a recorded one.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests import ansible_run

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = ansible_run.playbook_bin()

#: systemctl list-units --all --plain --no-legend --full 'comfyui@*.service' on a node that ran three instances,
#: one failed, plus a unit a dangling link names (not loaded: nothing to stop)
LIST_UNITS = (
    "comfyui@0.service loaded active running ComfyUI render node (instance 0)\n"
    "comfyui@1.service loaded failed failed ComfyUI render node (instance 1)\n"
    "comfyui@2.service loaded inactive dead ComfyUI render node (instance 2)\n"
    "comfyui@7.service not-found inactive dead comfyui@7.service\n")

PLAY = """
- name: rollback's view of the node under test
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Read what the roles install
      ansible.builtin.include_role:
        name: "visionsuit.gpuworker.{{ item }}"
        tasks_from: footprint.yml
        public: true
      loop: [comfyui, minio_helpers, gpu_agent]

    - name: Load rollback's variables
      ansible.builtin.include_vars:
        file: "@ROOT@/roles/rollback/vars/main.yml"

    - name: Show what rollback removes
      ansible.builtin.debug:
        msg:
          units: "{{ _rollback_units }}"
          globs: "{{ _rollback_unit_globs }}"
          instances: "{{ _rollback_instances }}"
      vars:
        _rollback_instance_list: {stdout: "{{ t_list_units }}"}
""".replace("@ROOT@", str(ROOT))

pytestmark = pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-playbook is not installed in the venv")


def test_rollback_stops_every_loaded_instance_and_removes_the_template_unit(tmp_path):
    ansible_run.local_workdir(tmp_path, PLAY)
    r = ansible_run.run(tmp_path / "play.yml", tmp_path / "inventory", ansible_run.isolated_env(tmp_path),
                        cwd=tmp_path, extra_vars={"t_list_units": LIST_UNITS}, binary=PLAYBOOK_BIN)
    assert r.rc == 0, r.raw[-3000:]
    seen = ansible_run.result(r.out, "Show what rollback removes")["msg"]
    assert seen["globs"] == ["comfyui@*.service"]
    assert {"comfyui.service", "comfyui@.service", "visionsuit-gpu-agent.service"} <= set(seen["units"])
    assert seen["instances"] == ["comfyui@0.service", "comfyui@1.service", "comfyui@2.service"]


def test_rollback_does_not_stop_or_disable_a_template_unit_itself():
    """``systemctl stop comfyui@.service`` is an error (no instance name): the unit-file loop leaves templates to
    the instances' task and only deletes their file."""
    tasks = yaml.safe_load((ROOT / "roles" / "rollback" / "tasks" / "services.yml").read_text())
    stop = next(t for t in tasks if t["name"] == "Stop and disable the collection's units")
    remove = next(t for t in tasks if t["name"] == "Remove the unit files")
    assert "rejectattr('path', 'search', '@[.][^/]+$')" in stop["loop"]
    assert remove["loop"] == "{{ _rollback_unit_files.files }}"
    names = [t["name"] for t in tasks]
    assert names.index("Stop and disable the instances of the collection's template units") < names.index(
        "Remove the unit files")
