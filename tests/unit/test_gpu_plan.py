# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""gpu/plan.py: the install plan per recorded host and distribution, the driver -> CUDA wheel table, bad input,
and how errors and warnings name the overrides (the role's variable names come from the role, not the library).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ansible_collections.visionsuit.gpuworker.plugins.modules import gpu_facts
from tests.gpu_hosts import FIXTURES, KERNEL, detect_case
from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.gpu import plan as g
from visionsuit_gpuworker.gpu.detect import parse_lspci, parse_version, summarize

ROLE = Path(__file__).resolve().parents[2] / "roles" / "gpu_driver"
ROLE_VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
#: what the gpu_driver role calls each override (it hands this to the gpu_plan module)
ROLE_NAMES = ROLE_VARS["_gpu_driver_override_names"]


def plan_for(case, distro="Ubuntu", version="22.04", **overrides):
    overrides.setdefault("kernel", KERNEL)
    return g.plan(detect_case(case), distro, version, overrides)

# ------------------------------------------------------------------------------------------- recorded hosts


def test_h100_server_with_bmc():
    plan = plan_for("nvidia-h100", "Ubuntu", "22.04")
    assert plan["accelerator"] == "nvidia"
    assert plan["packages"] == ["linux-headers-6.8.0-45-generic", "nvidia-driver-550-server"]
    assert plan["nvidia"]["driver_source"] == "installed"
    assert plan["apt_repositories"] == [] and plan["apt_components"] is None
    assert plan["torch_index_url"] == "https://download.pytorch.org/whl/cu124"
    assert plan["torch_package_spec"] == ("torch torchvision torchaudio --index-url "
                                          "https://download.pytorch.org/whl/cu124")
    assert plan["blacklist_nouveau"] is True
    assert plan["reboot_required"] is False
    assert plan["warnings"] == []


def test_h100_with_a_foreign_driver_on_debian_is_kept():
    plan = plan_for("nvidia-h100", "Debian", "12.7")
    assert plan["packages"] == []
    assert plan["nvidia"]["driver_source"] == "existing"
    assert plan["torch_index_url"] == "https://download.pytorch.org/whl/cu124"
    assert len(plan["warnings"]) == 1 and "550.54.15" in plan["warnings"][0] and "keeping it" in plan["warnings"][0]


def test_mixed_geforce_desktop_fresh_install_ubuntu_24():
    plan = plan_for("nvidia-mixed", "Ubuntu", "24.04")
    assert plan["packages"] == ["linux-headers-6.8.0-45-generic", "nvidia-driver-570"]
    assert plan["nvidia"]["driver_source"] == "ubuntu-drivers"
    assert plan["torch_index_url"] == "https://download.pytorch.org/whl/cu128"
    assert plan["reboot_required"] is True
    assert len(plan["warnings"]) == 3
    assert "Secure Boot is enabled" in plan["warnings"][0]
    assert "mixed NVIDIA models (GeForce RTX 3090, GeForce RTX 4090)" in plan["warnings"][1]
    assert "nouveau" in plan["warnings"][2]


def test_mixed_geforce_branch_pin_and_debian():
    pinned = plan_for("nvidia-mixed", "Ubuntu", "22.04", nvidia_branch="580-open")
    assert pinned["packages"] == ["linux-headers-6.8.0-45-generic", "nvidia-driver-580-open"]
    assert pinned["nvidia"]["driver_source"] == "pinned"
    assert pinned["torch_index_url"] == "https://download.pytorch.org/whl/cu130"

    deb = plan_for("nvidia-mixed", "Debian", "12.7")
    assert deb["packages"] == ["linux-headers-amd64", "nvidia-driver", "firmware-misc-nonfree", "nvidia-smi"]
    assert deb["apt_components"] == {"components": ["main", "contrib", "non-free", "non-free-firmware"],
                                     "suites": ["bookworm", "bookworm-updates", "bookworm-security"]}
    assert deb["torch_index_url"] == "https://download.pytorch.org/whl/cu121"  # Debian 12 ships the 535 series
    assert "mokutil --import /var/lib/dkms/mok.pub" in deb["warnings"][0]


def test_ubuntu_without_ubuntu_drivers_uses_the_fallback_and_says_so():
    det = detect_case("nvidia-mixed")
    det["ubuntu_drivers"] = None
    plan = g.plan(det, "Ubuntu", "22.04", {"kernel": KERNEL})
    assert plan["nvidia"]["driver_source"] == "fallback"
    assert plan["packages"][-1] == "nvidia-driver-570"
    assert any("ubuntu-drivers gave no recommendation" in w for w in plan["warnings"])


def test_mi210_with_rocm_working():
    plan = plan_for("amd-mi210", "Ubuntu", "24.04")
    assert plan["packages"] == ["linux-headers-6.8.0-45-generic", "amdgpu-dkms", "hip-runtime-amd",
                                "rocm-hip-runtime", "rocminfo"]
    assert [r["path"] for r in plan["apt_repositories"]] == [
        "/etc/apt/sources.list.d/visionsuit-amdgpu.sources", "/etc/apt/sources.list.d/visionsuit-rocm.sources"]
    assert plan["apt_repositories"][1]["content"] == (
        "Types: deb\nURIs: https://repo.radeon.com/rocm/apt/6.2\nSuites: noble\nComponents: main\n"
        "Architectures: amd64\nSigned-By: /etc/apt/keyrings/rocm.asc\n")
    assert plan["apt_repositories"][0]["keyring_url"] == "https://repo.radeon.com/rocm/rocm.gpg.key"
    assert plan["apt_preferences"][0]["content"].startswith("Package: *\nPin: release o=repo.radeon.com")
    assert plan["rocm"]["installer_url"] == (
        "https://repo.radeon.com/amdgpu-install/6.2/ubuntu/noble/amdgpu-install_6.2.60200-1_all.deb")
    assert plan["torch_index_url"] == "https://download.pytorch.org/whl/rocm6.2"
    assert plan["service_groups"] == ["render", "video"]
    assert plan["reboot_required"] is False
    assert plan["warnings"] == []


@pytest.mark.parametrize(("version", "index"), [("5.6", "rocm5.6"), ("5.7", "rocm5.7"), ("6.0", "rocm6.0"),
                                                ("6.1", "rocm6.1"), ("6.2", "rocm6.2"), ("6.3", "rocm6.3")])
def test_rocm_version_table_on_jammy(version, index):
    plan = plan_for("amd-mi210", "Ubuntu", "22.04", rocm_version=version, amd_dkms=False)
    assert plan["packages"] == ["hip-runtime-amd", "rocm-hip-runtime", "rocminfo"]
    assert plan["torch_index_url"] == "https://download.pytorch.org/whl/" + index
    assert f"URIs: https://repo.radeon.com/amdgpu/{version}/ubuntu\nSuites: jammy\n" in (
        plan["apt_repositories"][0]["content"])


def test_mi210_on_debian_uses_the_jammy_repositories():
    plan = plan_for("amd-mi210", "Debian", "12.7")
    assert plan["packages"][0] == "linux-headers-amd64"
    assert all("Suites: jammy\n" in r["content"] for r in plan["apt_repositories"])
    assert len(plan["warnings"]) == 1 and "Debian 12" in plan["warnings"][0]


def test_rocm_release_without_packages_for_the_distribution():
    with pytest.raises(GpuWorkerError) as err:
        plan_for("amd-mi210", "Ubuntu", "24.04", rocm_version="6.1")
    assert err.value.field == "rocm_version"
    assert "allowed values on Ubuntu 24.04: 6.2, 6.3, 6.4" in str(err.value)


def test_amd_apu_only_is_cpu():
    plan = plan_for("amd-apu")
    assert plan["packages"] == [] and plan["apt_repositories"] == []
    assert plan["torch_index_url"] == "https://download.pytorch.org/whl/cpu"
    assert plan["reboot_required"] is False
    assert plan["warnings"] == ["no NVIDIA or AMD render GPU found; ignored: Phoenix1 (integrated): "
                                "installing CPU-only PyTorch"]


def test_amd_override_on_an_apu_host_warns():
    plan = plan_for("amd-apu", vendor="amd")
    assert plan["accelerator"] == "amd" and plan["vendor_source"] == "override"
    assert plan["warnings"][0].startswith("vendor=amd but no AMD GPU was detected")


def test_bmc_only_server_is_cpu():
    plan = plan_for("bmc-only", "Debian", "12")
    assert plan["torch_index_url"] == "https://download.pytorch.org/whl/cpu"
    assert plan["warnings"] == ["no NVIDIA or AMD render GPU found; ignored: ASPEED Graphics Family (bmc): "
                                "installing CPU-only PyTorch"]


@pytest.mark.parametrize(("case", "packages", "variant"), [
    ("nvidia-l40s-x2", ["nvidia-driver-550-server"], "cu124"),
    ("nvidia-hgx-h100", ["nvidia-driver-550-server"], "cu124"),
    ("nvidia-bmc-igpu", ["nvidia-driver-550"], "cu124"),
    ("amd-w7900-x4", ["amdgpu-dkms", "hip-runtime-amd", "rocm-hip-runtime", "rocminfo"], "rocm6.2"),
])
def test_multi_gpu_and_mixed_hosts_plan_one_driver_stack(case, packages, variant):
    """Several GPUs of one model (or a GPU beside a BMC and an iGPU) need the same stack as one GPU, no warning."""
    plan = plan_for(case)
    assert plan["packages"] == ["linux-headers-" + KERNEL] + packages
    assert plan["torch_variant"] == variant
    assert plan["warnings"] == [] and plan["reboot_required"] is False


def test_intel_igpu_plus_nvidia_on_debian():
    plan = plan_for("intel-nvidia", "Debian", "12.7")
    assert plan["packages"] == ["linux-headers-amd64", "nvidia-driver", "firmware-misc-nonfree", "nvidia-smi"]
    assert plan["nvidia"]["driver_source"] == "distribution"
    assert plan["torch_index_url"] == "https://download.pytorch.org/whl/cu121"
    assert plan["warnings"] == []


def test_no_display_device_at_all():
    det = detect_case("none")
    plan = plan_for("none", "Ubuntu", "24.04")
    assert plan["torch_index_url"] == "https://download.pytorch.org/whl/cpu"
    assert plan["warnings"] == ["no NVIDIA or AMD render GPU found: installing CPU-only PyTorch"]
    assert g.plan(det, "Ubuntu", "24.04", {"vendor": "cpu"})["warnings"] == []


def test_torch_overrides():
    plan = plan_for("nvidia-h100", torch_index_url="https://mirror.example/whl/cu126/",
                    torch_packages=["torch==2.5.1", "torchvision"])
    assert plan["torch_index_url"] == "https://mirror.example/whl/cu126/"
    assert plan["torch_variant"] == "cu126" and plan["torch_index_source"] == "override"
    assert plan["torch_pip_args"] == ["--index-url", "https://mirror.example/whl/cu126/"]
    assert plan["torch_packages"] == ["torch==2.5.1", "torchvision"]


def test_mixed_vendors_prefer_nvidia_and_warn():
    det = summarize(parse_lspci("0000:01:00.0 VGA compatible controller [0300]: NVIDIA Corporation AD102 "
                                "[GeForce RTX 4090] [10de:2684] (rev a1)\n"
                                "0000:02:00.0 VGA compatible controller [0300]: Advanced Micro Devices, Inc. "
                                "[AMD/ATI] Navi 31 [Radeon RX 7900 XTX] [1002:744c] (rev c8)\n"))
    plan = g.plan(det, "Ubuntu", "22.04", {"kernel": KERNEL})
    assert "mixed GPU vendors (amd, nvidia): setting up nvidia only; set vendor to choose" in plan["warnings"][0]
    assert g.plan(det, "Ubuntu", "22.04", {"vendor": "amd"})["torch_variant"] == "rocm6.2"


def test_driver_installed_but_not_usable_needs_a_reboot():
    det = gpu_facts.gather(str(FIXTURES / "nvidia-h100" / "sys"),
                           lambda tool, args: (9, "NVIDIA-SMI has failed because it couldn't communicate with the "
                                                  "NVIDIA driver.") if tool == "nvidia-smi" else None,
                           "/nonexistent")
    plan = g.plan(det, "Ubuntu", "22.04", {"kernel": KERNEL})
    assert plan["reboot_required"] is True
    assert plan["reboot_reasons"] == ["the NVIDIA driver is installed but nvidia-smi cannot talk to it"]

# ------------------------------------------------------------------------------------- driver -> CUDA wheels


@pytest.mark.parametrize(("driver", "variant"), [
    ("525.60.13", "cu121"), ("530.30.02", "cu121"), ("535.183.01", "cu121"), ("545.23.08", "cu121"),
    ("550.40.07", "cu121"), ("550.54.14", "cu124"), ("555.42.06", "cu124"), ("560.28.03", "cu126"),
    ("565.57.01", "cu126"), ("570.26", "cu128"), ("570.124.06", "cu128"), ("575.51.03", "cu129"),
    ("580.65.06", "cu130"), ("590.44.01", "cu130"),
    ("535", "cu121"), ("550", "cu124"), ("570", "cu128"), ("575", "cu129"), ("580", "cu130"),
])
def test_driver_to_cuda_wheel(driver, variant):
    assert g.choose_cuda_variant(driver) == (variant, [])


def test_driver_below_the_floor_warns():
    variant, warnings = g.choose_cuda_variant("520.61.05")
    assert variant == "cu118"
    assert warnings == ["NVIDIA driver 520.61.05 supports at most CUDA 11.8: using cu118, below the cu121 floor "
                        "(upgrade the driver to >= 525.60.13)"]
    variant, warnings = g.choose_cuda_variant("470.82.01")  # a Tesla T4 host on the old driver
    assert variant == "cu118" and "below the cu121 floor" in warnings[0]
    variant, warnings = g.choose_cuda_variant("418.87.01")
    assert variant == "cu121" and "older than 450.80.02" in warnings[0]
    variant, warnings = g.choose_cuda_variant("550.54.15", floor="cu126")
    assert variant == "cu124" and "below the cu126 floor" in warnings[0]


def test_compute_capability_limits_the_wheels():
    assert g.choose_cuda_variant("580.65.06", compute_caps=["7.0"]) == (
        "cu129", ["GPU compute capability 7.0 is too old for the cu130 wheels: using cu129"])
    assert g.choose_cuda_variant("580.65.06", compute_caps=["8.9", "6.1"])[0] == "cu126"
    assert g.choose_cuda_variant("580.65.06", compute_caps=["7.5"]) == ("cu130", [])


def test_unknown_driver_uses_the_floor():
    assert g.choose_cuda_variant(None, floor="cu124") == (
        "cu124", ["NVIDIA driver version unknown: using the cu124 floor wheels"])


def test_cuda_table_is_ordered_and_published():
    table = g.cuda_table()
    assert [t["variant"] for t in table] == ["cu118", "cu121", "cu124", "cu126", "cu128", "cu129", "cu130"]
    drivers = [parse_version(t["min_driver"]) for t in table]
    assert drivers == sorted(drivers)
    assert table[1]["index_url"] == "https://download.pytorch.org/whl/cu121"

# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("overrides", "field", "allowed"), [
    ({"vendor": "intel"}, "vendor", "allowed values: auto, nvidia, amd, cpu"),
    ({"rocm_version": "7.9"}, "rocm_version", "allowed values: 5.6, 5.7, 6.0, 6.1, 6.2, 6.3, 6.4"),
    ({"torch_floor_cuda": "cu122"}, "torch_floor_cuda", "cu118, cu121, cu124, cu126, cu128, cu129, cu130"),
    ({"nvidia_branch": "latest"}, "nvidia_branch", "570"),
    ({"torch_index_url": "download.pytorch.org/whl/cu121"}, "torch_index_url", "https://"),
    ({"torch_packages": []}, "torch_packages", "non-empty"),
    ({"vendr": "amd"}, "overrides", "allowed keys:"),
])
def test_bad_overrides(overrides, field, allowed):
    """The library names the override key; with the role's names, the role variable (what the operator sees)."""
    with pytest.raises(GpuWorkerError) as err:
        g.validate("Ubuntu", "22.04", overrides)
    assert err.value.field == field
    assert field in str(err.value) and allowed in str(err.value)
    with pytest.raises(GpuWorkerError) as err:
        g.validate("Ubuntu", "22.04", overrides, ROLE_NAMES)
    variable = "overrides" if field == "overrides" else "gpu_driver_" + field
    assert err.value.field == variable
    assert str(err.value).startswith(variable + ": ") and allowed in str(err.value)


def test_warnings_name_the_overrides_as_the_caller_does():
    names = {"vendor": "gpu_driver_vendor", "nvidia_branch": "gpu_driver_nvidia_branch",
             "amd_dkms": "gpu_driver_amd_dkms"}
    plan = g.plan(detect_case("amd-apu"), "Ubuntu", "22.04", {"vendor": "amd"}, names)
    assert plan["warnings"][0].startswith("gpu_driver_vendor=amd but no AMD GPU was detected")
    deb = g.plan(detect_case("nvidia-mixed"), "Debian", "12.7", {"nvidia_branch": "570"}, names)
    assert "gpu_driver_nvidia_branch=570 is ignored on Debian 12" in deb["warnings"][0]
    det = detect_case("amd-mi210")
    det["secure_boot"] = True
    amd = g.plan(det, "Ubuntu", "24.04", {}, names)
    assert "set gpu_driver_amd_dkms: false" in amd["warnings"][0]
    assert "set amd_dkms: false" in g.plan(det, "Ubuntu", "24.04", {})["warnings"][0]


def test_the_role_names_every_override_and_nothing_else():
    """The role hands gpu_plan the overrides and their names: same keys, the library's keys, real variables."""
    assert set(ROLE_VARS["_gpu_driver_overrides"]) == set(g.OVERRIDE_KEYS)
    assert set(ROLE_NAMES) == set(g.OVERRIDE_KEYS)
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    for key, name in ROLE_NAMES.items():
        assert name in defaults or name.startswith("ansible_facts."), (key, name)
    assert "gpu_driver_" not in Path(g.__file__).read_text()  # the library knows no role variable


@pytest.mark.parametrize(("distro", "version"), [("Debian", "11"), ("Ubuntu", "20.04"), ("CentOS", "9"), ("", "")])
def test_unsupported_distribution(distro, version):
    with pytest.raises(GpuWorkerError) as err:
        g.plan({}, distro, version, {})
    assert "ansible_distribution" in str(err.value)
    assert "supported distributions: Ubuntu 22.04, Ubuntu 24.04, Debian 12" in str(err.value)


def test_rocm_on_arm_is_refused():
    with pytest.raises(GpuWorkerError) as err:
        g.validate("Ubuntu", "22.04", {"vendor": "amd", "architecture": "aarch64"})
    assert "x86_64 only" in str(err.value)
    assert err.value.field == "architecture"


def test_bad_driver_version_text():
    with pytest.raises(GpuWorkerError):
        g.choose_cuda_variant("unknown")
