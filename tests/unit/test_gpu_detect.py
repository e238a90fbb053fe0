"""gpu_detect: classification of recorded hosts, the install plan per distribution, the driver -> CUDA table."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.visionsuit.gpuworker.plugins.modules import gpu_facts
from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.gpu import detect as g

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
KERNEL = "6.8.0-45-generic"
TOOL_FILES = {"lspci": "lspci.txt", "nvidia-smi": "nvidia-smi.txt", "rocminfo": "rocminfo.txt",
              "mokutil": "mokutil.txt", "ubuntu-drivers": "ubuntu-drivers.txt", "dpkg-query": "dpkg.txt"}


def fixture_runner(case, calls=None):
    """A stand-in for AnsibleModule.run_command: a tool exists when its recorded output exists."""
    def run(tool, args):
        if calls is not None:
            calls.append((tool, list(args)))
        path = FIXTURES / case / TOOL_FILES[tool]
        if not path.exists():
            return None
        return 0, path.read_text()
    return run


def detect_case(case, reboot_required_path="/nonexistent/reboot-required"):
    """Detection of a recorded host through the module's own probe sequence."""
    return gpu_facts.gather(str(FIXTURES / case / "sys"), fixture_runner(case), reboot_required_path)


def plan_for(case, distro="Ubuntu", version="22.04", **overrides):
    overrides.setdefault("kernel", KERNEL)
    return g.plan(detect_case(case), distro, version, overrides)


def by_address(detection):
    return {d["address"]: d for d in detection["devices"]}

# ------------------------------------------------------------------------------------------- recorded hosts


def test_h100_server_with_bmc():
    det = detect_case("nvidia-h100")
    assert det["accelerator"] == "nvidia"
    assert det["vendors"] == ["nvidia"]
    devs = by_address(det)
    assert set(devs) == {"0000:02:00.0", "0000:19:00.0"}  # host bridge dropped
    assert devs["0000:02:00.0"]["kind"] == "bmc" and not devs["0000:02:00.0"]["render_capable"]
    gpu = devs["0000:19:00.0"]
    assert (gpu["vendor_id"], gpu["device_id"], gpu["class_id"]) == ("10de", "2330", "0302")
    assert gpu["driver"] == "nvidia" and gpu["source"] == "sysfs+lspci"
    assert det["render_gpu_count"] == 1
    assert det["nvidia"]["smi_ok"] is True
    assert det["nvidia"]["gpus"] == [{"name": "NVIDIA H100 80GB HBM3", "driver_version": "550.54.15",
                                      "memory_total_mib": 81559, "compute_cap": "9.0"}]
    assert det["nvidia"]["installed_packages"] == ["nvidia-driver-550-server"]
    assert det["nvidia"]["module_loaded"] is True
    assert det["secure_boot"] is False
    assert det["reboot_pending"] is False
    assert det["warnings"] == []

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
    det = detect_case("nvidia-mixed")
    assert det["accelerator"] == "nvidia"
    assert [d["name"] for d in det["render_gpus"]] == ["GeForce RTX 4090", "GeForce RTX 3090"]
    assert len(det["devices"]) == 2  # the HDMI audio functions (class 0403) are not display devices
    assert det["nvidia"]["nouveau_bound"] is True
    assert det["nvidia"]["smi_present"] is False and det["nvidia"]["smi_ok"] is False
    assert det["secure_boot"] is True
    assert det["ubuntu_drivers"]["recommended"] == "nvidia-driver-570"

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
    det = detect_case("amd-mi210")
    assert det["accelerator"] == "amd"
    gpu = by_address(det)["0000:c1:00.0"]
    assert (gpu["class_id"], gpu["kind"], gpu["name"]) == ("0380", "discrete", "Instinct MI210")
    assert gpu["vram_bytes"] == 68702699520
    assert det["amd"]["rocminfo_ok"] is True and det["amd"]["kfd_loaded"] is True
    assert det["amd"]["gpus"] == [{"gfx": "gfx90a", "name": "AMD Instinct MI210", "compute_units": 104,
                                   "uuid": "GPU-3f8e2b1c5d6a7e90"}]

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
    assert err.value.field == "gpu_driver_rocm_version"
    assert "allowed values on Ubuntu 24.04: 6.2, 6.3, 6.4" in str(err.value)


def test_amd_apu_only_is_cpu():
    det = detect_case("amd-apu")
    assert det["accelerator"] == "cpu"
    apu = by_address(det)["0000:c4:00.0"]
    assert apu["kind"] == "integrated" and apu["render_capable"] is False
    assert "Phoenix" in apu["reason"]
    plan = plan_for("amd-apu")
    assert plan["packages"] == [] and plan["apt_repositories"] == []
    assert plan["torch_index_url"] == "https://download.pytorch.org/whl/cpu"
    assert plan["reboot_required"] is False
    assert plan["warnings"] == ["no NVIDIA or AMD render GPU found; ignored: Phoenix1 (integrated): "
                                "installing CPU-only PyTorch"]


def test_amd_override_on_an_apu_host_warns():
    plan = plan_for("amd-apu", vendor="amd")
    assert plan["accelerator"] == "amd" and plan["vendor_source"] == "override"
    assert "no AMD GPU was detected" in plan["warnings"][0]


def test_bmc_only_server_is_cpu():
    det = detect_case("bmc-only")
    assert det["accelerator"] == "cpu"
    assert [(d["vendor"], d["kind"]) for d in det["devices"]] == [("aspeed", "bmc")]
    assert det["secure_boot"] is None  # "EFI variables are not supported"
    plan = plan_for("bmc-only", "Debian", "12")
    assert plan["torch_index_url"] == "https://download.pytorch.org/whl/cpu"
    assert plan["warnings"] == ["no NVIDIA or AMD render GPU found; ignored: ASPEED Graphics Family (bmc): "
                                "installing CPU-only PyTorch"]


def test_intel_igpu_plus_nvidia_on_debian():
    det = detect_case("intel-nvidia")
    assert det["accelerator"] == "nvidia"
    igpu = by_address(det)["0000:00:02.0"]
    assert (igpu["vendor"], igpu["kind"], igpu["render_capable"], igpu["name"]) == (
        "intel", "integrated", False, "UHD Graphics 770")
    assert [d["name"] for d in det["render_gpus"]] == ["GeForce RTX 4070"]
    assert det["nvidia"]["gpus"][0]["compute_cap"] is None  # 3-column nvidia-smi output
    plan = plan_for("intel-nvidia", "Debian", "12.7")
    assert plan["packages"] == ["linux-headers-amd64", "nvidia-driver", "firmware-misc-nonfree", "nvidia-smi"]
    assert plan["nvidia"]["driver_source"] == "distribution"
    assert plan["torch_index_url"] == "https://download.pytorch.org/whl/cu121"
    assert plan["warnings"] == []


def test_no_display_device_at_all():
    det = detect_case("none")
    assert det["accelerator"] == "cpu" and det["devices"] == []
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
    nvidia = g.parse_lspci("0000:01:00.0 VGA compatible controller [0300]: NVIDIA Corporation AD102 "
                           "[GeForce RTX 4090] [10de:2684] (rev a1)\n"
                           "0000:02:00.0 VGA compatible controller [0300]: Advanced Micro Devices, Inc. "
                           "[AMD/ATI] Navi 31 [Radeon RX 7900 XTX] [1002:744c] (rev c8)\n")
    det = g.summarize(nvidia)
    assert det["accelerator"] == "nvidia" and det["vendors"] == ["amd", "nvidia"]
    plan = g.plan(det, "Ubuntu", "22.04", {"kernel": KERNEL})
    assert "mixed GPU vendors (amd, nvidia): setting up nvidia only" in plan["warnings"][0]
    assert g.plan(det, "Ubuntu", "22.04", {"vendor": "amd"})["torch_variant"] == "rocm6.2"

# ------------------------------------------------------------------------------------- module probe sequence


def test_gpu_facts_probes_only_what_exists_and_reads_reboot_required(tmp_path):
    calls = []
    flag = tmp_path / "reboot-required"
    flag.write_text("*** System restart required ***\n")
    det = gpu_facts.gather(str(FIXTURES / "nvidia-mixed" / "sys"), fixture_runner("nvidia-mixed", calls), str(flag))
    tools = [c[0] for c in calls]
    assert tools == ["lspci", "nvidia-smi", "rocminfo", "mokutil", "dpkg-query", "ubuntu-drivers"]
    assert det["tools"]["lspci"] is True and det["tools"]["nvidia-smi"] is False
    assert det["reboot_pending"] is True
    assert det["reboot_pending_reasons"] == ["/var/run/reboot-required exists"]
    # no NVIDIA GPU -> ubuntu-drivers is not run
    calls.clear()
    gpu_facts.gather(str(FIXTURES / "amd-mi210" / "sys"), fixture_runner("amd-mi210", calls), str(flag))
    assert "ubuntu-drivers" not in [c[0] for c in calls]


def test_gpu_facts_falls_back_to_the_old_nvidia_smi_query():
    answers = {"--query-gpu=name,driver_version,memory.total,compute_cap":
               (6, 'Field "compute_cap" is not a valid field to query.'),
               "--query-gpu=name,driver_version,memory.total": (0, "Tesla T4, 470.82.01, 15109 MiB\n")}

    def run(tool, args):
        if tool == "nvidia-smi":
            return answers[args[0]]
        return None
    det = gpu_facts.gather(str(FIXTURES / "nvidia-h100" / "sys"), run, "/nonexistent")
    assert det["nvidia"]["gpus"] == [{"name": "Tesla T4", "driver_version": "470.82.01",
                                      "memory_total_mib": 15109, "compute_cap": None}]
    variant, warnings = g.choose_cuda_variant(det["nvidia"]["driver_version"])
    assert variant == "cu118" and "below the cu121 floor" in warnings[0]


def test_driver_installed_but_not_usable_is_a_pending_reboot():
    det = gpu_facts.gather(str(FIXTURES / "nvidia-h100" / "sys"),
                           lambda tool, args: (9, "NVIDIA-SMI has failed because it couldn't communicate with the "
                                                  "NVIDIA driver.") if tool == "nvidia-smi" else None,
                           "/nonexistent")
    assert det["nvidia"]["smi_present"] is True and det["nvidia"]["smi_ok"] is False
    assert det["reboot_pending"] is True
    plan = g.plan(det, "Ubuntu", "22.04", {"kernel": KERNEL})
    assert plan["reboot_required"] is True
    assert plan["reboot_reasons"] == ["the NVIDIA driver is installed but nvidia-smi cannot talk to it"]

# ------------------------------------------------------------------------------------------------ parsers


def test_sysfs_driver_symlink_and_vram_heuristic(tmp_path):
    root = tmp_path / "sys"
    devices = root / "bus" / "pci" / "devices"
    drivers = root / "bus" / "pci" / "drivers" / "amdgpu"
    drivers.mkdir(parents=True)
    for addr, device, vram in (("0000:03:00.0", "0x7480", "8573157376"), ("0000:07:00.0", "0x1234", "268435456")):
        d = devices / addr
        d.mkdir(parents=True)
        (d / "vendor").write_text("0x1002\n")
        (d / "device").write_text(device + "\n")
        (d / "class").write_text("0x030000\n")
        (d / "mem_info_vram_total").write_text(vram + "\n")
        os.symlink(os.path.relpath(drivers, d), d / "driver")
    found = {d["address"]: d for d in g.parse_sysfs(str(root))}
    assert found["0000:03:00.0"]["driver"] == "amdgpu"
    assert found["0000:03:00.0"]["render_capable"] is True
    assert found["0000:07:00.0"]["kind"] == "integrated"  # unknown id, 256 MiB carve-out
    assert "256 MiB" in found["0000:07:00.0"]["reason"]


def test_sysfs_missing_tree_is_empty(tmp_path):
    assert g.parse_sysfs(str(tmp_path)) == []


@pytest.mark.parametrize(("vendor", "device", "address", "kind", "render"), [
    ("10de", "2330", "0000:00:05.0", "discrete", True),   # passthrough GPU on bus 00 in a VM
    ("1002", "744c", "0000:00:06.0", "discrete", True),   # same for AMD: the bus number is not used
    ("1002", "15bf", "0000:c4:00.0", "integrated", False),
    ("8086", "a780", "0000:00:02.0", "integrated", False),
    ("8086", "56a0", "0000:03:00.0", "discrete", False),  # Intel Arc: not CUDA/ROCm
    ("1a03", "2000", "0000:02:00.0", "bmc", False),
    ("102b", "0536", "0000:03:00.0", "bmc", False),       # Matrox G200eW3
    ("1234", "1111", "0000:00:02.0", "virtual", False),   # QEMU stdvga
    ("abcd", "0001", "0000:04:00.0", "other", False),
])
def test_classify(vendor, device, address, kind, render):
    _vendor, got_kind, got_render, _reason = g.classify(vendor, device, "0300", address)
    assert (got_kind, got_render) == (kind, render)


def test_lspci_without_domain_and_cross_check_warnings():
    lspci = g.parse_lspci("01:00.0 VGA compatible controller [0300]: NVIDIA Corporation AD102 "
                          "[GeForce RTX 4090] [10de:2684] (rev a1)\nnot an lspci line\n"
                          "01:00.1 Audio device [0403]: NVIDIA Corporation AD102 HDMI [10de:22ba] (rev a1)\n")
    assert [(d["address"], d["name"]) for d in lspci] == [("0000:01:00.0", "GeForce RTX 4090")]
    sysfs = [g._device_record("0000:05:00.0", "10de", "2204", "0300")]
    merged, warnings = g.merge_devices(sysfs, lspci)
    assert [d["address"] for d in merged] == ["0000:01:00.0", "0000:05:00.0"]
    assert warnings == ["lspci lists 0000:01:00.0 GeForce RTX 4090 (10de:2684) which sysfs does not show",
                        "sysfs shows 0000:05:00.0 (10de:2204) which lspci does not list"]


def test_nvidia_smi_errors_and_rocminfo_without_kfd():
    assert g.parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.") == []
    assert g.parse_nvidia_smi("") == []
    roc = g.parse_rocminfo("ROCk module is NOT loaded, possibly no GPU devices\n")
    assert roc == {"gpus": [], "kfd_loaded": False}


@pytest.mark.parametrize(("text", "state"), [
    ("SecureBoot enabled\n", True), ("SecureBoot disabled\nPlatform is in Setup Mode\n", False),
    ("This system doesn't support Secure Boot\n", False), ("EFI variables are not supported on this system\n", None)])
def test_mokutil(text, state):
    assert g.parse_mokutil(text) is state


def test_ubuntu_drivers_list_output_without_markers():
    parsed = g.parse_ubuntu_drivers("nvidia-driver-535, (kernel modules provided by linux-modules-nvidia-535)\n"
                                    "nvidia-driver-570-server, (kernel modules provided by ...)\n"
                                    "nvidia-driver-570\n")
    assert parsed["recommended"] == "nvidia-driver-570"
    assert parsed["packages"] == ["nvidia-driver-535", "nvidia-driver-570-server", "nvidia-driver-570"]
    assert g.parse_ubuntu_drivers("") == {"recommended": None, "packages": []}

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
    drivers = [g.parse_version(t["min_driver"]) for t in table]
    assert drivers == sorted(drivers)
    assert table[1]["index_url"] == "https://download.pytorch.org/whl/cu121"

# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("overrides", "field", "allowed"), [
    ({"vendor": "intel"}, "gpu_driver_vendor", "allowed values: auto, nvidia, amd, cpu"),
    ({"rocm_version": "7.9"}, "gpu_driver_rocm_version", "allowed values: 5.6, 5.7, 6.0, 6.1, 6.2, 6.3, 6.4"),
    ({"torch_floor_cuda": "cu122"}, "gpu_driver_torch_floor_cuda", "cu118, cu121, cu124, cu126, cu128, cu129, cu130"),
    ({"nvidia_branch": "latest"}, "gpu_driver_nvidia_branch", "570"),
    ({"torch_index_url": "download.pytorch.org/whl/cu121"}, "gpu_driver_torch_index_url", "https://"),
    ({"torch_packages": []}, "gpu_driver_torch_packages", "non-empty"),
    ({"vendr": "amd"}, "overrides", "allowed keys:"),
])
def test_bad_overrides(overrides, field, allowed):
    with pytest.raises(GpuWorkerError) as err:
        g.validate("Ubuntu", "22.04", overrides)
    assert err.value.field == field
    assert field in str(err.value) and allowed in str(err.value)


@pytest.mark.parametrize(("distro", "version"), [("Debian", "11"), ("Ubuntu", "20.04"), ("CentOS", "9"), ("", "")])
def test_unsupported_distribution(distro, version):
    with pytest.raises(GpuWorkerError) as err:
        g.plan({}, distro, version, {})
    assert "ansible_distribution" in str(err.value)
    assert "supported distributions: Ubuntu 22.04, Ubuntu 24.04, Debian 12" in str(err.value)


def test_supported_distribution_versions():
    assert g.resolve_distro("Debian", "12.7")["codename"] == "bookworm"
    assert g.resolve_distro("ubuntu", "24.04")["codename"] == "noble"


def test_rocm_on_arm_is_refused():
    with pytest.raises(GpuWorkerError) as err:
        g.validate("Ubuntu", "22.04", {"vendor": "amd", "architecture": "aarch64"})
    assert "x86_64 only" in str(err.value)


def test_bad_driver_version_text():
    with pytest.raises(GpuWorkerError):
        g.choose_cuda_variant("unknown")
