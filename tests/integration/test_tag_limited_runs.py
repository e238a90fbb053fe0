# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tag-limited runs of playbooks/provision.yml keep a GPU node a GPU node (issue 14 item 2).

``--tags comfyui`` (or any subset without ``gpu_driver``) used to leave ``gpu_driver_accelerator`` undefined: it is
exported by gpu_driver, whose tasks did not run, so the comfyui role fell back to a CPU node (``--cpu``, no
``SupplementaryGroups``, the CPU wheel index) and, with several instances, to one instance (the others removed).
The detection and the accelerator decision are read-only and now run on every tag subset.

The runs use provision.yml itself, ``--check --tags comfyui_preflight`` (the comfyui role's read-only part) on a
local host whose detection is a recorded host (``gpu_driver_detected``: two NVIDIA L40S, four AMD W7900), and a
last play that reports what the roles left for the host. Nothing on the machine is changed.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import ansible_run
from tests.gpu_hosts import detect_case

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = ansible_run.playbook_bin()
REPORT = "Report what the roles left for the host"


def _supported_distribution():
    """gpu_driver's preflight checks the machine's own distribution (provision.yml gathers its facts)."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return False
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    name = values.get("ID", "").strip('"')
    version = values.get("VERSION_ID", "").strip('"')
    return (name, version.split(".")[0]) in {("debian", "12")} or (name, version) in {("ubuntu", "22.04"),
                                                                                       ("ubuntu", "24.04")}


pytestmark = [
    pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-playbook is not installed in the venv"),
    pytest.mark.skipif(not _supported_distribution(), reason="gpu_driver plans for Debian 12 / Ubuntu 22.04, 24.04"),
]


def run_tagged(tmp_path, case, tags, **extra):
    """provision.yml --check --tags <tags> on one local host detected as ``case``; the report play's result."""
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts").write_text("[fleet]\nnode\n")
    values = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_become": False,
        "visionsuit_minio_endpoint": "http://127.0.0.1:9000",
        "visionsuit_minio_access_key": "test-access-key",
        "visionsuit_minio_secret_key": "test-secret-key",
        "gpu_driver_detected": detect_case(case),
    }
    values.update(extra)
    (inv / "group_vars" / "all" / "main.yml").write_text(yaml.safe_dump(values))
    play = [
        {"name": "Provision", "ansible.builtin.import_playbook": str(ROOT / "playbooks" / "provision.yml")},
        {"name": "Report", "hosts": "all", "gather_facts": False, "tags": ["always"], "tasks": [
            {"name": REPORT, "ansible.builtin.debug": {"msg": {
                "accelerator": "{{ gpu_driver_accelerator | default('undefined') }}",
                "torch_index_url": "{{ gpu_driver_torch_index_url | default('undefined') }}",
                "plan": "{{ _comfyui_instance_plan | default('undefined') }}",
            }}}]},
    ]
    pb = ansible_run.write_play(tmp_path, play, "tagged.yml")
    r = ansible_run.run(pb, inv, ansible_run.isolated_env(tmp_path), cwd=tmp_path, tags=tags, binary=PLAYBOOK_BIN,
                        stdin=subprocess.DEVNULL)
    assert r.rc == 0, r.raw[-4000:]
    return ansible_run.result(r.out, REPORT, host="node")["msg"], r


def test_a_comfyui_only_run_keeps_the_nvidia_accelerator_and_both_instances(tmp_path):
    seen, _ = run_tagged(tmp_path, "nvidia-l40s-x2", "comfyui_preflight")
    assert seen["accelerator"] == "nvidia", seen
    assert seen["torch_index_url"].startswith("https://download.pytorch.org/whl/cu"), seen
    plan = seen["plan"]
    assert [(i["unit"], i["port"], i["gpu"]) for i in plan] == [
        ("comfyui@0.service", 8188, 0), ("comfyui@1.service", 8189, 1)], plan
    assert plan[1]["env"] == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1"}, plan


def test_a_comfyui_only_run_keeps_the_amd_accelerator(tmp_path):
    seen, _ = run_tagged(tmp_path, "amd-w7900-x4", "comfyui_preflight", comfyui_instances=[2, 3])
    assert seen["accelerator"] == "amd", seen
    assert "rocm" in seen["torch_index_url"], seen
    assert [(i["unit"], i["gpu"], i["env"]) for i in seen["plan"]] == [
        ("comfyui@0.service", 2, {"HIP_VISIBLE_DEVICES": "2"}),
        ("comfyui@1.service", 3, {"HIP_VISIBLE_DEVICES": "3"})], seen


def test_a_comfyui_only_run_without_pinned_torch_keeps_the_gpu(tmp_path):
    """The silent downgrade: with nothing pinned to trip over (comfyui_torch_packages: [], as molecule runs), a
    comfyui-only run set a GPU node up as a CPU node."""
    seen, _ = run_tagged(tmp_path, "nvidia-l40s-x2", "comfyui_preflight", comfyui_torch_packages=[])
    assert seen["accelerator"] == "nvidia", seen
    assert len(seen["plan"]) == 2, seen


def test_a_run_limited_to_the_health_gate_checks_every_instance_and_the_summary_lists_them(tmp_path):
    """--tags health: no role runs, yet the gate checks each instance and the summary lists the GPUs and
    instances."""
    _, run = run_tagged(tmp_path, "nvidia-l40s-x2", "health")
    gate = ansible_run.result(run.out, "Health gate - ComfyUI answers", host="node")
    assert [(r["item"]["unit"], r["item"]["port"]) for r in gate["results"]] == [
        ("comfyui@0.service", 8188), ("comfyui@1.service", 8189)], gate
    summary = ansible_run.result(run.out, "Record this host's summary", host="node")["ansible_facts"][
        "visionsuit_summary"]
    assert summary["accelerator"] == "nvidia", summary
    assert summary["gpus"] == [{"index": 0, "model": "NVIDIA L40S"}, {"index": 1, "model": "NVIDIA L40S"}], summary
    assert summary["instances"] == [{"unit": "comfyui@0.service", "port": 8188, "gpu": 0},
                                    {"unit": "comfyui@1.service", "port": 8189, "gpu": 1}], summary
