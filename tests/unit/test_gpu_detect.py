"""gpu/detect.py: classification of recorded hosts, the gpu_facts probe sequence, the tool output parsers.

What gets installed for these detections is tests/unit/test_gpu_plan.py.
"""
from __future__ import annotations

import os

import pytest

from ansible_collections.visionsuit.gpuworker.plugins.modules import gpu_facts
from tests.gpu_hosts import FIXTURES, detect_case, fixture_runner
from visionsuit_gpuworker.gpu import detect as g


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


def test_mixed_geforce_desktop():
    det = detect_case("nvidia-mixed")
    assert det["accelerator"] == "nvidia"
    assert [d["name"] for d in det["render_gpus"]] == ["GeForce RTX 4090", "GeForce RTX 3090"]
    assert len(det["devices"]) == 2  # the HDMI audio functions (class 0403) are not display devices
    assert det["nvidia"]["nouveau_bound"] is True
    assert det["nvidia"]["smi_present"] is False and det["nvidia"]["smi_ok"] is False
    assert det["secure_boot"] is True
    assert det["ubuntu_drivers"]["recommended"] == "nvidia-driver-570"


def test_mi210_with_rocm_working():
    det = detect_case("amd-mi210")
    assert det["accelerator"] == "amd"
    gpu = by_address(det)["0000:c1:00.0"]
    assert (gpu["class_id"], gpu["kind"], gpu["name"]) == ("0380", "discrete", "Instinct MI210")
    assert gpu["vram_bytes"] == 68702699520
    assert det["amd"]["rocminfo_ok"] is True and det["amd"]["kfd_loaded"] is True
    assert det["amd"]["gpus"] == [{"gfx": "gfx90a", "name": "AMD Instinct MI210", "compute_units": 104,
                                   "uuid": "GPU-3f8e2b1c5d6a7e90"}]


def test_amd_apu_only_is_cpu():
    det = detect_case("amd-apu")
    assert det["accelerator"] == "cpu"
    apu = by_address(det)["0000:c4:00.0"]
    assert apu["kind"] == "integrated" and apu["render_capable"] is False
    assert "Phoenix" in apu["reason"]


def test_bmc_only_server_is_cpu():
    det = detect_case("bmc-only")
    assert det["accelerator"] == "cpu"
    assert [(d["vendor"], d["kind"]) for d in det["devices"]] == [("aspeed", "bmc")]
    assert det["secure_boot"] is None  # "EFI variables are not supported"


def test_intel_igpu_plus_nvidia():
    det = detect_case("intel-nvidia")
    assert det["accelerator"] == "nvidia"
    igpu = by_address(det)["0000:00:02.0"]
    assert (igpu["vendor"], igpu["kind"], igpu["render_capable"], igpu["name"]) == (
        "intel", "integrated", False, "UHD Graphics 770")
    assert [d["name"] for d in det["render_gpus"]] == ["GeForce RTX 4070"]
    assert det["nvidia"]["gpus"][0]["compute_cap"] is None  # 3-column nvidia-smi output


def test_no_display_device_at_all():
    det = detect_case("none")
    assert det["accelerator"] == "cpu" and det["devices"] == []


def test_mixed_vendors_prefer_nvidia():
    nvidia = g.parse_lspci("0000:01:00.0 VGA compatible controller [0300]: NVIDIA Corporation AD102 "
                           "[GeForce RTX 4090] [10de:2684] (rev a1)\n"
                           "0000:02:00.0 VGA compatible controller [0300]: Advanced Micro Devices, Inc. "
                           "[AMD/ATI] Navi 31 [Radeon RX 7900 XTX] [1002:744c] (rev c8)\n")
    det = g.summarize(nvidia)
    assert det["accelerator"] == "nvidia" and det["vendors"] == ["amd", "nvidia"]

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


def test_driver_installed_but_not_usable_is_a_pending_reboot():
    det = gpu_facts.gather(str(FIXTURES / "nvidia-h100" / "sys"),
                           lambda tool, args: (9, "NVIDIA-SMI has failed because it couldn't communicate with the "
                                                  "NVIDIA driver.") if tool == "nvidia-smi" else None,
                           "/nonexistent")
    assert det["nvidia"]["smi_present"] is True and det["nvidia"]["smi_ok"] is False
    assert det["reboot_pending"] is True
    assert det["reboot_pending_reasons"] == ["the NVIDIA driver is installed but nvidia-smi cannot talk to it"]

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
