# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gpu_driver role itself, run with ``ansible-playbook --check`` against localhost.

Detection is injected (``gpu_driver_detected``, built from the recorded hosts in tests/fixtures/gpu) and so are
the distribution facts, so the same machine plays Debian 12, Ubuntu 22.04 and Ubuntu 24.04 hosts.

These runs happen on the development machine, often as root: they must never change it. Every run is
``--check`` and the role has no task that opts out of check mode (asserted below); apt, get_url, template
and reboot only simulate.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import ansible_run
from tests.ansible_run import result, results
from tests.gpu_hosts import FIXTURES, KERNEL
from tests.gpu_hosts import detect_case as detection

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "gpu_driver"
PLAYBOOK_BIN = ansible_run.VENV_PLAYBOOK

PLAY = """
- name: gpu_driver under test
  hosts: localhost
  connection: local
  gather_facts: false
  pre_tasks:
    - name: Inject the distribution facts
      ansible.builtin.set_fact:
        distribution: "{{ t_distribution }}"
        distribution_version: "{{ t_version }}"
        distribution_major_version: "{{ t_version.split('.')[0] }}"
        kernel: "@KERNEL@"
        architecture: x86_64
        cacheable: true
  roles:
    - role: visionsuit.gpuworker.gpu_driver
""".replace("@KERNEL@", KERNEL)

DISTROS = {"debian12": ("Debian", "12.7"), "ubuntu2204": ("Ubuntu", "22.04"), "ubuntu2404": ("Ubuntu", "24.04")}

pytestmark = pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-playbook is not installed in the venv")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return ansible_run.local_workdir(tmp_path_factory.mktemp("gpu-driver-role"), PLAY)


def run_role(workdir, distro, extra, *args):
    """ansible-playbook --check with the JSON callback; returns (rc, parsed output, raw stdout)."""
    name, version = DISTROS[distro]
    r = ansible_run.run(workdir / "play.yml", workdir / "inventory", ansible_run.isolated_env(workdir), *args,
                        cwd=workdir, extra_vars=dict(extra, t_distribution=name, t_version=version))
    return r.rc, r.out, r.raw


def exported(output):
    facts = result(output, "Export the accelerator facts for the comfyui role")["ansible_facts"]
    return facts


def diff_after(res):
    """New file contents a task would write (check mode + --diff), one per loop item."""
    items = res.get("results", [res])
    out = []
    for item in items:
        diff = item.get("diff") or []
        out += [d["after"] for d in (diff if isinstance(diff, list) else [diff]) if "after" in d]
    return out

# ------------------------------------------------------------------------------------------------ safety


def test_no_task_opts_out_of_check_mode():
    import yaml
    for path in sorted((ROLE / "tasks").glob("*.yml")) + [ROLE / "handlers" / "main.yml"]:
        text = path.read_text()
        # check_mode: true (always a dry run, e.g. apt's check before the install) is the only one allowed
        assert text.count("check_mode:") == text.count("check_mode: true"), path
        for task in yaml.safe_load(text) or []:
            for sub in [task] + task.get("block", []):
                assert sub.get("check_mode", True) is True, (path, sub.get("name"))


# --------------------------------------------------------------------------------------------------- NVIDIA

NVIDIA_EXPECTED = {
    "debian12": (["linux-headers-amd64", "nvidia-driver", "firmware-misc-nonfree", "nvidia-smi"], "cu121"),
    "ubuntu2204": ([f"linux-headers-{KERNEL}", "nvidia-driver-570"], "cu128"),
    "ubuntu2404": ([f"linux-headers-{KERNEL}", "nvidia-driver-570"], "cu128"),
}


@pytest.mark.parametrize("distro", sorted(NVIDIA_EXPECTED))
def test_nvidia_fresh_host(workdir, distro):
    packages, cuda = NVIDIA_EXPECTED[distro]
    rc, out, raw = run_role(workdir, distro, {"gpu_driver_detected": detection("nvidia-mixed")}, "--diff")
    assert rc == 0, raw
    plan = result(out, "Report the GPU driver plan")["gpu_driver_plan"]
    assert plan["accelerator"] == "nvidia"
    assert plan["packages"] == packages
    assert plan["apt_repositories"] == []
    assert plan["torch_index_url"] == "https://download.pytorch.org/whl/" + cuda
    facts = exported(out)
    assert facts["gpu_driver_accelerator"] == "nvidia"
    assert facts["gpu_driver_torch_index_url"] == "https://download.pytorch.org/whl/" + cuda
    assert facts["gpu_driver_torch_packages"] == ["torch", "torchvision", "torchaudio"]
    assert facts["gpu_driver_reboot_required"] is True
    assert facts["gpu_driver_service_groups"] == []
    # the driver install ran (simulated: check mode) on the planned packages
    assert result(out, "Install the NVIDIA driver").get("skipped") is not True
    # nouveau blacklist rendered with the ansible_managed header
    [after] = diff_after(result(out, "Blacklist nouveau (NVIDIA)"))
    assert after.startswith("#\n# Ansible managed") and "blacklist nouveau\noptions nouveau modeset=0\n" in after
    reboot = result(out, "Report that a reboot is required")
    assert "REBOOT REQUIRED" in reboot["msg"] and "Check mode" in reboot["msg"]
    assert "Reboot the host" not in [n for n, r in results(out) if not r.get("skipped")]
    if distro == "debian12":
        assert plan["apt_components"]["components"] == ["main", "contrib", "non-free", "non-free-firmware"]
    else:
        assert plan["apt_components"] is None
        assert plan["nvidia"]["driver_source"] == "ubuntu-drivers"


def test_nvidia_debian_components_are_added_to_the_existing_sources(workdir, tmp_path):
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb deb-src\nURIs: mirror+file:///etc/apt/mirrors/debian.list\n"
                      "Suites: bookworm bookworm-updates bookworm-backports\nComponents: main\n"
                      "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
                      "Types: deb\nURIs: https://packages.example/custom\nSuites: stable\nComponents: extra\n")
    legacy = tmp_path / "sources.list"
    legacy.write_text("deb http://deb.debian.org/debian/ bookworm main non-free-firmware\n"
                      "deb [arch=amd64] http://security.debian.org/debian-security bookworm-security main\n"
                      "deb http://deb.debian.org/debian/ trixie main\n")
    before = (deb822.read_text(), legacy.read_text())
    rc, out, raw = run_role(workdir, "debian12", {
        "gpu_driver_detected": detection("nvidia-mixed"),
        "_gpu_driver_debian_sources_deb822": str(deb822), "_gpu_driver_debian_sources_list": str(legacy)}, "--diff")
    assert rc == 0, raw
    [after_deb822] = diff_after(result(out, "Add the components to the deb822 Debian sources"))
    assert "Components: main contrib non-free non-free-firmware\n" in after_deb822
    assert "Components: extra\n" in after_deb822
    [after_list] = diff_after(result(out, "Add the components to the one-line Debian sources"))
    assert after_list == (
        "deb http://deb.debian.org/debian/ bookworm main contrib non-free non-free-firmware\n"
        "deb [arch=amd64] http://security.debian.org/debian-security bookworm-security main contrib non-free "
        "non-free-firmware\n"
        "deb http://deb.debian.org/debian/ trixie main\n")
    assert (deb822.read_text(), legacy.read_text()) == before  # check mode wrote nothing


def test_nvidia_working_driver_needs_no_reboot(workdir):
    rc, out, raw = run_role(workdir, "ubuntu2204", {"gpu_driver_detected": detection("nvidia-h100")})
    assert rc == 0, raw
    facts = exported(out)
    assert facts["gpu_driver_torch_index_url"] == "https://download.pytorch.org/whl/cu124"
    assert facts["gpu_driver_reboot_required"] is False
    assert facts["gpu_driver_plan"]["packages"] == [f"linux-headers-{KERNEL}", "nvidia-driver-550-server"]
    assert result(out, "Report that a reboot is required").get("skipped") is True


def test_torch_index_override_and_floor(workdir):
    rc, out, raw = run_role(workdir, "ubuntu2204", {"gpu_driver_detected": detection("nvidia-h100"),
                                                    "gpu_driver_torch_index_url": "https://mirror.example/whl/cu121"})
    assert rc == 0, raw
    assert exported(out)["gpu_driver_torch_index_url"] == "https://mirror.example/whl/cu121"
    rc, out, raw = run_role(workdir, "ubuntu2204", {"gpu_driver_detected": detection("nvidia-h100"),
                                                    "gpu_driver_torch_floor_cuda": "cu126"})
    assert rc == 0, raw
    facts = exported(out)
    assert facts["gpu_driver_torch_index_url"] == "https://download.pytorch.org/whl/cu124"
    assert any("below the cu126 floor" in w for w in facts["gpu_driver_plan"]["warnings"])

# ------------------------------------------------------------------------------------------------------ AMD

AMD_SUITES = {"debian12": "jammy", "ubuntu2204": "jammy", "ubuntu2404": "noble"}


@pytest.mark.parametrize("distro", sorted(AMD_SUITES))
def test_amd_fresh_host(workdir, distro):
    suite = AMD_SUITES[distro]
    headers = "linux-headers-amd64" if distro == "debian12" else f"linux-headers-{KERNEL}"
    det = detection("amd-mi210", absent=("rocminfo",))
    rc, out, raw = run_role(workdir, distro, {"gpu_driver_detected": det}, "--diff")
    assert rc == 0, raw
    plan = result(out, "Report the GPU driver plan")["gpu_driver_plan"]
    assert plan["packages"] == [headers, "amdgpu-dkms", "hip-runtime-amd", "rocm-hip-runtime", "rocminfo"]
    files = diff_after(result(out, "Add the AMDGPU and ROCm repositories"))
    header = "#\n# Ansible managed\n#\n"
    assert files == [
        header + "# amdgpu repository for the amd driver stack\nTypes: deb\n"
        f"URIs: https://repo.radeon.com/amdgpu/6.2/ubuntu\nSuites: {suite}\nComponents: main\nArchitectures: amd64\n"
        "Signed-By: /etc/apt/keyrings/rocm.asc\n",
        header + "# rocm repository for the amd driver stack\nTypes: deb\n"
        f"URIs: https://repo.radeon.com/rocm/apt/6.2\nSuites: {suite}\nComponents: main\nArchitectures: amd64\n"
        "Signed-By: /etc/apt/keyrings/rocm.asc\n"]
    assert [r["item"]["path"] for r in result(out, "Add the AMDGPU and ROCm repositories")["results"]] == [
        "/etc/apt/sources.list.d/visionsuit-amdgpu.sources", "/etc/apt/sources.list.d/visionsuit-rocm.sources"]
    assert diff_after(result(out, "Prefer repo.radeon.com packages")) == [
        header + "Package: *\nPin: release o=repo.radeon.com\nPin-Priority: 600\n"]
    key = result(out, "Download the ROCm signing key")["results"]
    assert [(r["item"]["keyring_url"], r["item"]["keyring_path"]) for r in key] == [
        ("https://repo.radeon.com/rocm/rocm.gpg.key", "/etc/apt/keyrings/rocm.asc")]
    facts = exported(out)
    assert facts["gpu_driver_accelerator"] == "amd"
    assert facts["gpu_driver_torch_index_url"] == "https://download.pytorch.org/whl/rocm6.2"
    assert facts["gpu_driver_service_groups"] == ["render", "video"]
    assert facts["gpu_driver_reboot_required"] is True


def test_amd_rocm_version_pin(workdir):
    rc, out, raw = run_role(workdir, "ubuntu2204", {"gpu_driver_detected": detection("amd-mi210"),
                                                    "gpu_driver_rocm_version": "6.0", "gpu_driver_amd_dkms": False})
    assert rc == 0, raw
    facts = exported(out)
    assert facts["gpu_driver_torch_index_url"] == "https://download.pytorch.org/whl/rocm6.0"
    assert facts["gpu_driver_plan"]["packages"] == ["hip-runtime-amd", "rocm-hip-runtime", "rocminfo"]
    assert facts["gpu_driver_reboot_required"] is False

def test_warnings_name_the_role_variables(workdir):
    """The library names overrides by key; the role hands gpu_plan its variable names for the operator."""
    rc, out, raw = run_role(workdir, "ubuntu2204", {"gpu_driver_detected": detection("nvidia-h100"),
                                                    "gpu_driver_vendor": "amd"})
    assert rc == 0, raw
    warnings = exported(out)["gpu_driver_plan"]["warnings"]
    assert warnings[0].startswith("gpu_driver_vendor=amd but no AMD GPU was detected"), warnings

# ------------------------------------------------------------------------------------------------------ CPU


@pytest.mark.parametrize(("case", "distro"), [("bmc-only", "ubuntu2404"), ("amd-apu", "debian12"),
                                              ("none", "ubuntu2204")])
def test_cpu_host_installs_nothing_but_sets_facts(workdir, case, distro):
    rc, out, raw = run_role(workdir, distro, {"gpu_driver_detected": detection(case)})
    assert rc == 0, raw
    facts = exported(out)
    assert facts["gpu_driver_accelerator"] == "cpu"
    assert facts["gpu_driver_torch_index_url"] == "https://download.pytorch.org/whl/cpu"
    assert facts["gpu_driver_reboot_required"] is False
    assert facts["gpu_driver_plan"]["packages"] == []
    names = [n for n, r in results(out) if not r.get("skipped")]
    assert "Nothing to install for CPU-only PyTorch" in names
    assert not set(names) & {"Install the NVIDIA driver", "Install the ROCm runtime", "Download the ROCm signing key",
                             "Add the AMDGPU and ROCm repositories", "Blacklist nouveau (NVIDIA)"}
    assert not [n for n, r in results(out) if r.get("changed")]

# ------------------------------------------------------------------------------------------------ bad input


def failure(out):
    failed = [(n, r) for n, r in results(out) if r.get("failed") and not r.get("ignore_errors")]
    assert failed, "nothing failed"
    return failed[0]


@pytest.mark.parametrize(("extra", "distro", "task", "needles"), [
    ({"gpu_driver_vendor": "intel"}, "ubuntu2204", "Validating arguments against arg spec",
     ["gpu_driver_vendor", "auto, nvidia, amd, cpu"]),
    ({"gpu_driver_rocm_version": "7.9"}, "ubuntu2204", "Check the distribution and the role variables",
     ["gpu_driver_rocm_version", "5.6, 5.7, 6.0, 6.1, 6.2, 6.3, 6.4"]),
    ({"gpu_driver_rocm_version": "6.1", "gpu_driver_vendor": "amd"}, "ubuntu2404",
     "Check the distribution and the role variables", ["gpu_driver_rocm_version", "6.2, 6.3, 6.4"]),
    ({"t_version": "11.9"}, "debian12", "Check the distribution and the role variables",
     ["ansible_distribution", "Ubuntu 22.04, Ubuntu 24.04, Debian 12"]),
    ({"gpu_driver_detected": {"accelerator": "tpu"}}, "ubuntu2204", "Check the injected detection",
     ["gpu_driver_detected", "nvidia, amd, cpu"]),
])
def test_bad_input_fails_in_preflight(workdir, extra, distro, task, needles):
    extra = dict({"gpu_driver_detected": detection("nvidia-h100")}, **extra)
    name, version = DISTROS[distro]
    if "t_version" in extra:
        DISTROS["_custom"] = (name, extra.pop("t_version"))
        distro = "_custom"
    try:
        rc, out, raw = run_role(workdir, distro, extra)
    finally:
        DISTROS.pop("_custom", None)
    assert rc != 0
    failed_name, failed = failure(out)
    assert failed_name.startswith(task)
    for needle in needles:
        assert needle in failed["msg"], failed["msg"]
    ran = [n for n, _ in results(out)]
    assert "Plan the driver stack" not in ran and "Install the driver stack" not in ran

# ------------------------------------------------------------------------------------------ gpu_facts module


def test_gpu_facts_module_on_a_recorded_tree(workdir):
    play = workdir / "facts.yml"
    play.write_text("""
- name: gpu_facts on a recorded sysfs tree
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Detect
      visionsuit.gpuworker.gpu_facts:
        sysfs_root: @ROOT@
        run_commands: false
        reboot_required_path: /nonexistent/reboot-required
""".replace("@ROOT@", str(FIXTURES / "intel-nvidia" / "sys")))
    run = ansible_run.run(play, workdir / "inventory", ansible_run.isolated_env(workdir), cwd=workdir, timeout=120)
    assert run.rc == 0, run.raw
    out = run.out
    res = result(out, "Detect")
    assert res["changed"] is False
    facts = res["ansible_facts"]["gpu_worker"]
    assert facts["accelerator"] == "nvidia"
    assert [(d["address"], d["kind"], d["driver"]) for d in facts["devices"]] == [
        ("0000:00:02.0", "integrated", "i915"), ("0000:01:00.0", "discrete", "nvidia")]
    assert facts["nvidia"]["driver_version"] == "535.183.01"  # from sys/module/nvidia/version
    assert not any(facts["tools"].values())  # run_commands: false


def test_rerun_in_the_same_play_is_not_mistaken_for_an_override(workdir):
    """gpu_driver_torch_index_url is input and output: the value exported by a first run is not an override."""
    play = workdir / "twice.yml"
    first, second = detection("nvidia-h100"), detection("nvidia-mixed")
    play.write_text(PLAY.replace(
        "    - role: visionsuit.gpuworker.gpu_driver\n",
        f"    - role: visionsuit.gpuworker.gpu_driver\n      gpu_driver_detected: {json.dumps(first)}\n"
        f"    - role: visionsuit.gpuworker.gpu_driver\n      gpu_driver_detected: {json.dumps(second)}\n"))
    (workdir / "play.yml").rename(workdir / "play.yml.orig")
    play.rename(workdir / "play.yml")
    try:
        rc, out, raw = run_role(workdir, "ubuntu2204", {})
    finally:
        (workdir / "play.yml").unlink()
        (workdir / "play.yml.orig").rename(workdir / "play.yml")
    assert rc == 0, raw
    urls = [r["ansible_facts"]["gpu_driver_torch_index_url"] for n, r in results(out)
            if n == "Export the accelerator facts for the comfyui role"]
    assert urls == ["https://download.pytorch.org/whl/cu124", "https://download.pytorch.org/whl/cu128"]
