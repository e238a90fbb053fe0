# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The comfyui role's preflight and pin computation, run by ansible-playbook on localhost (nothing installed):
which constraints a node gets for a version, a wheel index and the operator's file and overrides, and the
clear refusals (issue 12 item 12). Molecule proves the written file and the pip calls on a real host.
"""
from __future__ import annotations

import pytest

from tests import ansible_run

pytestmark = pytest.mark.integration


def preflight(tmp_path, **variables):
    """Run the role's preflight with ``variables``; return (failed message or None, computed pins)."""
    play = [{"hosts": "localhost", "gather_facts": True, "gather_subset": ["!all", "min"], "tasks": [
        {"name": "preflight", "ansible.builtin.include_role": {"name": "visionsuit.gpuworker.comfyui",
                                                                "tasks_from": "preflight.yml", "public": True}},
        {"name": "pins", "ansible.builtin.debug": {"msg": {
            "constraints": "{{ _comfyui_constraints }}",
            "torch": "{{ comfyui_torch_packages | visionsuit.gpuworker.pip_pin(_comfyui_constraints) }}",
            "args": "{{ _comfyui_constraints_args }}",
            "extra": "{{ (_comfyui_release.requirements | default([])) + comfyui_pip_extra_packages }}"}}},
    ]}]
    run = ansible_run.run(ansible_run.write_play(tmp_path, play), "localhost,", ansible_run.repo_env(),
                          *ansible_run.LOCALHOST, cwd=tmp_path, extra_vars=variables, check=False, timeout=180)
    for name, result in ansible_run.results(run.out):
        if result.get("failed"):
            return result["msg"], None
        if name == "pins":
            return None, result["msg"]
    raise AssertionError(ansible_run.tails(run.proc))


def test_v0_3_64_on_a_cpu_node_gets_the_shipped_set_and_pinned_torch(tmp_path):
    failed, pins = preflight(tmp_path, comfyui_version="v0.3.64")
    assert failed is None
    assert "transformers==4.57.1" in pins["constraints"] and "torch==2.8.0" in pins["constraints"]
    assert pins["torch"] == ["torch==2.8.0", "torchvision==0.23.0", "torchaudio==2.8.0"]
    assert pins["args"] == "-c /etc/comfyui/pip-constraints.txt"
    assert pins["extra"] == ["requests"]


def test_the_wheel_index_picks_the_torch_pins(tmp_path):
    _, pins = preflight(tmp_path, comfyui_version="v0.3.64",
                        comfyui_torch_index_url="https://download.pytorch.org/whl/cu124/")
    assert pins["torch"] == ["torch==2.6.0", "torchvision==0.21.0", "torchaudio==2.6.0"]


def test_an_explicit_torch_version_overrides_the_set(tmp_path):
    _, pins = preflight(tmp_path, comfyui_version="v0.3.64", comfyui_torch_packages=["torch==2.7.1", "torchvision"])
    assert pins["torch"] == ["torch==2.7.1", "torchvision==0.23.0"]
    assert "torch==2.7.1" in pins["constraints"] and "torch==2.8.0" not in pins["constraints"]


def test_an_unknown_wheel_index_is_refused_with_the_ways_out(tmp_path):
    failed, _ = preflight(tmp_path, comfyui_version="v0.3.64",
                          comfyui_torch_index_url="https://mirror.example/pytorch/nightly")
    assert "has no PyTorch pins for the wheel index https://mirror.example/pytorch/nightly (variant nightly" in failed
    assert "comfyui_torch_variant" in failed and "comfyui_pip_constraints_file" in failed


def test_a_version_without_a_set_is_refused_unless_unpinned_or_given_a_file(tmp_path):
    failed, _ = preflight(tmp_path, comfyui_version="0123abcd")
    assert "no pinned package set ships for comfyui_version 0123abcd" in failed
    assert "comfyui_pip_pinned to false" in failed
    failed, pins = preflight(tmp_path, comfyui_version="0123abcd", comfyui_pip_pinned=False)
    assert failed is None and pins["constraints"] == [] and pins["args"] == "" and pins["torch"] == [
        "torch", "torchvision", "torchaudio"]


def test_the_operators_file_replaces_the_set_and_overrides_extend_it(tmp_path):
    own = tmp_path / "freeze.txt"
    own.write_text("# pip freeze of a good node\nnumpy==1.26.4\nrequests==2.31.0\ntorch==2.5.1\n")
    failed, pins = preflight(tmp_path, comfyui_version="0123abcd", comfyui_pip_constraints_file=str(own),
                             comfyui_pip_constraints=["requests==2.32.5", "einops==0.8.1"])
    assert failed is None
    assert pins["constraints"] == ["numpy==1.26.4", "torch==2.5.1", "requests==2.32.5", "einops==0.8.1"]
    assert pins["torch"][0] == "torch==2.5.1"


def test_a_bad_override_names_the_list_item(tmp_path):
    failed, _ = preflight(tmp_path, comfyui_version="v0.3.64", comfyui_pip_constraints=["einops==0.8.1", "requests"])
    assert "comfyui_pip_constraints[1]: 'requests' pins no version" in failed
