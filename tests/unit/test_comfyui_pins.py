# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pinned ComfyUI installs: the constraint-line rules (plugins/module_utils/comfyui/pins.py) and the package set
shipped for v0.3.64 (roles/comfyui/vars/releases/v0.3.64.yml).

Issue 12 item 12: the role installed unpinned torch and ComfyUI's requirements.txt; a fresh 0.3.64 install then
resolved transformers 5.x (no `requests` any more) and ComfyUI died at start.
"""
from pathlib import Path

import pytest
import yaml

from visionsuit_gpuworker.comfyui import pins
from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.gpu import plan

ROOT = Path(__file__).resolve().parents[2]
RELEASES = ROOT / "roles" / "comfyui" / "vars" / "releases"


def release(version):
    return yaml.safe_load((RELEASES / f"{version}.yml").read_text())["_comfyui_release"]


@pytest.mark.parametrize("line, parsed", [
    ("numpy==2.2.6", ("numpy", "==2.2.6", "")),
    ("numpy == 2.2.6 ; python_full_version < '3.11'", ("numpy", "==2.2.6", "python_full_version < '3.11'")),
    ("PyYAML==6.0.2   # comment", ("PyYAML", "==6.0.2", "")),
    ("uvicorn[standard]>=0.30,<1", ("uvicorn", ">=0.30,<1", "")),
    ("requests", ("requests", "", "")),
    ("# only a comment", None),
    ("   ", None),
])
def test_parse_line(line, parsed):
    assert pins.parse_line(line) == parsed


@pytest.mark.parametrize("line", ["--index-url https://x", "-r other.txt", "https://x/y.whl", "./local",
                                  "torch==", "name==1.0 extra"])
def test_parse_line_refuses_what_is_no_requirement(line):
    with pytest.raises(GpuWorkerError) as err:
        pins.parse_line(line, "comfyui_pip_constraints[0]")
    assert str(err.value).startswith("comfyui_pip_constraints[0]: not a requirement line")


def test_merge_replaces_every_line_of_an_overridden_package_markers_included():
    base = ["numpy==2.2.6 ; python_full_version < '3.11'", "numpy==2.3.4 ; python_full_version >= '3.11'",
            "Requests==2.32.5", "# comment", "typing_extensions==4.15.0"]
    out = pins.merge(base, ["numpy==2.1.0", "requests==2.32.4", "typing-extensions==4.14.0", "new-pkg>=1"])
    assert out == ["numpy==2.1.0", "requests==2.32.4", "typing-extensions==4.14.0", "new-pkg>=1"]
    assert pins.merge(base[:3], []) == base[:3]


def test_merge_refuses_an_override_without_a_version():
    with pytest.raises(GpuWorkerError) as err:
        pins.merge(["a==1"], ["b==2", "requests"], field="comfyui_pip_constraints")
    assert str(err.value) == ("comfyui_pip_constraints[1]: 'requests' pins no version "
                              "(write it as requests==<version>)")


def test_pin_uses_marker_free_exact_pins_only():
    constraints = ["torch==2.8.0", "torchvision==0.23.0", "numpy==2.2.6 ; python_version < '3.11'", "scipy>=1"]
    assert pins.pin(["torch", "TorchVision", "torchaudio", "numpy", "scipy", "torch==2.5.1"], constraints) == [
        "torch==2.8.0", "TorchVision==0.23.0", "torchaudio", "numpy", "scipy", "torch==2.5.1"]


# ------------------------------------------------------------------------------------- the shipped v0.3.64 set
def test_v0_3_64_pins_transformers_4_and_installs_requests():
    rel = release("v0.3.64")
    lines = {pins.parse_line(line)[0].lower(): pins.parse_line(line)[1] for line in rel["constraints"]}
    assert lines["transformers"].startswith("==4."), "transformers 5.x dropped requests: ComfyUI 0.3.64 dies"
    assert "requests" in [r.lower() for r in rel["requirements"]]
    assert lines["requests"].startswith("==")
    # the versions the real 0.3.64 reports in /system_stats (captures in ../shared/comfyui-api/)
    assert lines["comfyui-frontend-package"] == "==1.27.10"
    assert lines["comfyui-workflow-templates"] == "==0.1.95"


def test_v0_3_64_every_constraint_is_an_exact_pin_and_no_torch():
    rel = release("v0.3.64")
    seen = {}
    for line in rel["constraints"]:
        name, spec, marker = pins.parse_line(line)
        assert spec.startswith("==") and "," not in spec, line
        assert name.lower() not in ("torch", "torchvision", "torchaudio"), "torch is pinned per wheel index"
        seen.setdefault(pins.canonical_name(name), []).append(marker)
    for name, markers in seen.items():
        assert len(markers) == 1 or all(markers), f"{name} pinned twice without markers"


def test_v0_3_64_has_torch_pins_for_every_wheel_index_the_gpu_plan_can_choose():
    rel = release("v0.3.64")
    variants = {"cpu"} | set(plan.CUDA_VARIANTS) | {r["torch"] for r in plan.ROCM_RELEASES.values()}
    assert variants <= set(rel["torch"]), sorted(variants - set(rel["torch"]))
    for variant, specs in rel["torch"].items():
        names = [pins.parse_line(s)[0] for s in specs]
        assert names == ["torch", "torchvision", "torchaudio"], variant
        torch_v = pins.parse_line(specs[0])[1]
        assert pins.parse_line(specs[2])[1] == torch_v, f"{variant}: torchaudio follows torch's version"


def test_every_release_file_is_named_after_its_version():
    for path in RELEASES.glob("*.yml"):
        assert release(path.stem)["comfyui_version"] == path.stem
