# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
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


# ------------------------------------------------------------------------------- multi-GPU hosts: numbering

GPU_KEYS = ("index", "index_source", "pci_address", "vendor", "model", "memory_mib", "numa_node")


def numbering(det):
    return [(g["index"], g["pci_address"], g["model"], g["memory_mib"], g["numa_node"], g["index_source"])
            for g in det["render_gpus"]]


@pytest.mark.parametrize("case", sorted(p.name for p in FIXTURES.iterdir() if (p / "sys").is_dir()))
def test_every_record_carries_the_numbering_keys(case):
    det = detect_case(case)
    for dev in det["devices"]:
        assert set(GPU_KEYS) <= set(dev), dev
        assert dev["pci_address"] == dev["address"]
        if not dev["render_capable"]:
            assert dev["index"] is None and dev["index_source"] is None
    indexes = [g["index"] for g in det["render_gpus"] if g["vendor"] == det["accelerator"]]
    assert sorted(indexes) == list(range(len(indexes)))  # 0..n-1, no gaps, no duplicates


def test_two_l40s_one_per_socket():
    det = detect_case("nvidia-l40s-x2")
    assert det["accelerator"] == "nvidia" and det["render_gpu_count"] == 2
    assert numbering(det) == [(0, "0000:4a:00.0", "NVIDIA L40S", 46068, 0, "nvidia-smi"),
                              (1, "0000:ca:00.0", "NVIDIA L40S", 46068, 1, "nvidia-smi")]
    assert [g["name"] for g in det["render_gpus"]] == ["L40S", "L40S"]  # the lspci/PCI-id name stays
    bmc = by_address(det)["0000:03:00.0"]
    assert (bmc["kind"], bmc["index"], bmc["numa_node"]) == ("bmc", None, 0)
    assert det["warnings"] == []


def test_hgx_h100_eight_gpus_numa_split():
    det = detect_case("nvidia-hgx-h100")
    assert det["render_gpu_count"] == 8
    assert [d["kind"] for d in det["devices"]] == ["bmc"] + ["discrete"] * 8  # NVSwitches (class 0680) dropped
    assert [g["index"] for g in det["render_gpus"]] == list(range(8))
    assert [g["pci_address"][5:7] for g in det["render_gpus"]] == ["1b", "43", "52", "61", "9d", "c3", "d1", "df"]
    assert [g["numa_node"] for g in det["render_gpus"]] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert {(g["model"], g["memory_mib"], g["index_source"]) for g in det["render_gpus"]} == {
        ("NVIDIA H100 80GB HBM3", 81559, "nvidia-smi")}
    assert len(det["nvidia"]["gpus"]) == 8 and det["warnings"] == []


def test_four_w7900_numbered_by_rocminfo():
    det = detect_case("amd-w7900-x4")
    assert det["accelerator"] == "amd" and det["render_gpu_count"] == 4
    assert numbering(det) == [(i, "0000:%s:00.0" % bus, "AMD Radeon PRO W7900", 49152, 0, "rocminfo")
                              for i, bus in enumerate(["03", "43", "83", "c3"])]
    assert len(det["devices"]) == 5  # + the ASPEED BMC; the HDMI audio functions are not display devices
    assert det["amd"]["rocminfo_ok"] is True and len(det["amd"]["gpus"]) == 4
    assert set(det["amd"]["gpus"][0]) == {"gfx", "name", "compute_units", "uuid"}  # unchanged shape
    assert det["warnings"] == []


def test_nvidia_with_bmc_and_igpu():
    det = detect_case("nvidia-bmc-igpu")
    assert det["accelerator"] == "nvidia" and det["vendors"] == ["nvidia"]
    assert [(d["vendor"], d["kind"], d["render_capable"]) for d in det["devices"]] == [
        ("intel", "integrated", False), ("nvidia", "discrete", True), ("aspeed", "bmc", False)]
    assert numbering(det) == [(0, "0000:01:00.0", "NVIDIA RTX 4000 Ada Generation", 20475, None, "nvidia-smi")]
    assert all(d["numa_node"] is None for d in det["devices"])  # sysfs says -1: no affinity known


def test_numbering_predicted_in_pci_order_without_the_runtime():
    mixed = detect_case("nvidia-mixed")  # nouveau, no nvidia-smi yet
    assert numbering(mixed) == [(0, "0000:01:00.0", "GeForce RTX 4090", None, None, "pci-order"),
                                (1, "0000:05:00.0", "GeForce RTX 3090", None, None, "pci-order")]
    mi210 = detect_case("amd-mi210")  # this rocminfo prints no BDFID
    assert numbering(mi210) == [(0, "0000:c1:00.0", "Instinct MI210", 65520, None, "pci-order")]
    # nvidia-smi working but the numbering query unanswered: PCI order, models and memory from the first query
    det = g.detect(str(FIXTURES / "nvidia-l40s-x2" / "sys"),
                   nvidia_smi_text=(FIXTURES / "nvidia-l40s-x2" / "nvidia-smi.txt").read_text())
    assert numbering(det) == [(0, "0000:4a:00.0", "NVIDIA L40S", 46068, 0, "pci-order"),
                              (1, "0000:ca:00.0", "NVIDIA L40S", 46068, 1, "pci-order")]


def _rocminfo(*agents):
    """A rocminfo text with GPU agents ``(marketing name, BDFID or None)``, after one CPU agent."""
    lines = ["ROCk module version 6.10.5 is loaded", "*******", "Agent 1", "*******",
             "  Name: AMD EPYC 9654", "  Device Type: CPU", "  BDFID: 0"]
    for number, (name, bdfid) in enumerate(agents, start=2):
        lines += ["*******", "Agent %d" % number, "*******", "  Name: gfx1100", "  Marketing Name: " + name,
                  "  Device Type: GPU"] + (["  BDFID: %d" % bdfid] if bdfid is not None else [])
    return "\n".join(lines) + "\n"


def test_hip_order_comes_from_rocminfo_not_from_the_bus():
    sysfs = str(FIXTURES / "amd-w7900-x4" / "sys")
    # the runtime enumerates c3 first and 03 last: HIP index = rocminfo's order
    text = _rocminfo(("W7900 c3", 0xc300), ("W7900 43", 0x4300), ("W7900 83", 0x8300), ("W7900 03", 0x0300))
    det = g.detect(sysfs, rocminfo_text=text)
    assert [(x["pci_address"][5:7], x["index"], x["model"]) for x in det["render_gpus"]] == [
        ("03", 3, "W7900 03"), ("43", 1, "W7900 43"), ("83", 2, "W7900 83"), ("c3", 0, "W7900 c3")]
    # an APU's GPU agent counts in HIP's numbering even though it is not a render GPU here
    text = _rocminfo(("AMD Radeon Graphics", 0xc500), ("a", 0x0300), ("b", 0x4300), ("c", 0x8300), ("d", 0xc300))
    assert [x["index"] for x in g.detect(sysfs, rocminfo_text=text)["render_gpus"]] == [1, 2, 3, 4]
    # a GPU that rocminfo does not list has no index and is reported
    det = g.detect(sysfs, rocminfo_text=_rocminfo(("a", 0x0300), ("b", 0x4300), ("c", 0x8300)))
    assert [x["index"] for x in det["render_gpus"]] == [0, 1, 2, None]
    assert det["warnings"] == ["0000:c3:00.0 Radeon Pro W7900 is not a GPU agent of rocminfo: it has no index "
                               "and nothing runs on it"]
    # an agent without BDFID (old rocminfo): PCI order for all
    det = g.detect(sysfs, rocminfo_text=_rocminfo(("a", 0x0300), ("b", None)))
    assert {x["index_source"] for x in det["render_gpus"]} == {"pci-order"}


def test_passthrough_gpus_get_no_index():
    devices = [g._device_record("0000:%s:00.0" % bus, "10de", "2330", "0302", driver=driver)
               for bus, driver in (("1b", "nvidia"), ("43", "vfio-pci"), ("52", "nvidia"))]
    det = g.summarize(devices)
    assert [(x["index"], x["index_source"]) for x in det["render_gpus"]] == [(0, "pci-order"), (None, None),
                                                                           (1, "pci-order")]
    smi = "0, 00000000:1B:00.0, NVIDIA H100 80GB HBM3, 81559\n1, 00000000:52:00.0, NVIDIA H100 80GB HBM3, 81559\n"
    det = g.summarize(devices, nvidia_smi_gpus_text=smi)
    assert [x["index"] for x in det["render_gpus"]] == [0, None, 1]
    assert det["warnings"] == ["0000:43:00.0 H100 SXM5 80GB is bound to vfio-pci (reserved for VM passthrough)"]
    assert "index" in det["devices"][0] and devices[0]["index"] is None  # the input records are not modified


def test_nvidia_smi_and_the_bus_disagree():
    devices = [g._device_record("0000:1b:00.0", "10de", "2330", "0302", driver="nvidia"),
               g._device_record("0000:43:00.0", "10de", "2330", "0302", driver="nvidia")]
    det = g.summarize(devices, nvidia_smi_gpus_text="0, 00000000:1B:00.0, NVIDIA H100 80GB HBM3, 81559\n"
                                                    "1, 00000000:99:00.0, NVIDIA H100 80GB HBM3, 81559\n")
    assert [x["index"] for x in det["render_gpus"]] == [0, None]
    assert det["warnings"] == [
        "nvidia-smi lists GPU 1 at 0000:99:00.0, which is not an NVIDIA GPU found on the PCI bus",
        "0000:43:00.0 H100 SXM5 80GB is not listed by nvidia-smi: it has no index and nothing runs on it"]

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
    # a working nvidia-smi is asked for the numbering too
    calls.clear()
    gpu_facts.gather(str(FIXTURES / "nvidia-l40s-x2" / "sys"), fixture_runner("nvidia-l40s-x2", calls), str(flag))
    assert [c for c in calls if c[0] == "nvidia-smi"] == [
        ("nvidia-smi", [gpu_facts.NVIDIA_QUERY, "--format=csv,noheader"]),
        ("nvidia-smi", [gpu_facts.NVIDIA_INDEX_QUERY, "--format=csv,noheader,nounits"])]
    # no NVIDIA GPU -> ubuntu-drivers is not run
    calls.clear()
    gpu_facts.gather(str(FIXTURES / "amd-mi210" / "sys"), fixture_runner("amd-mi210", calls), str(flag))
    assert "ubuntu-drivers" not in [c[0] for c in calls]


def test_gpu_facts_falls_back_to_the_old_nvidia_smi_query():
    answers = {"--query-gpu=name,driver_version,memory.total,compute_cap":
               (6, 'Field "compute_cap" is not a valid field to query.'),
               "--query-gpu=name,driver_version,memory.total": (0, "Tesla T4, 470.82.01, 15109 MiB\n"),
               # the numbering query, asked of a working nvidia-smi (index and pci.bus_id are old fields)
               gpu_facts.NVIDIA_INDEX_QUERY: (0, "0, 00000000:19:00.0, Tesla T4, 15109\n")}

    def run(tool, args):
        if tool == "nvidia-smi":
            return answers[args[0]]
        return None
    det = gpu_facts.gather(str(FIXTURES / "nvidia-h100" / "sys"), run, "/nonexistent")
    assert det["nvidia"]["gpus"] == [{"name": "Tesla T4", "driver_version": "470.82.01",
                                      "memory_total_mib": 15109, "compute_cap": None}]
    assert [(g["index"], g["model"], g["memory_mib"]) for g in det["render_gpus"]] == [(0, "Tesla T4", 15109)]


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


def test_nvidia_smi_numbering_query():
    text = ("0, 00000000:1B:00.0, NVIDIA H100 80GB HBM3, 81559\n"
            "1, 00000001:43:00.0, NVIDIA H100 80GB HBM3, 81559 MiB\n"  # without nounits; a second PCI domain
            "2, 00000000:52:00.0, NVIDIA H100 80GB HBM3, [N/A]\n")
    assert g.parse_nvidia_smi_gpus(text) == [
        {"index": 0, "pci_address": "0000:1b:00.0", "name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559},
        {"index": 1, "pci_address": "0001:43:00.0", "name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559},
        {"index": 2, "pci_address": "0000:52:00.0", "name": "NVIDIA H100 80GB HBM3", "memory_mib": None}]
    assert g.parse_nvidia_smi_gpus("NVIDIA-SMI has failed because it couldn't communicate with the driver.") == []
    assert g.parse_nvidia_smi_gpus("NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB, 9.0\n") == []  # the other query
    assert g.parse_nvidia_smi_gpus(None) == []


def test_rocminfo_order_and_bdfid():
    text = (FIXTURES / "amd-w7900-x4" / "rocminfo.txt").read_text()
    assert g.parse_rocminfo_order(text) == [
        {"index": i, "pci_function": "%s:00.0" % bus, "name": "AMD Radeon PRO W7900"}
        for i, bus in enumerate(["03", "43", "83", "c3"])]
    assert g.parse_rocminfo_order(_rocminfo(("x", 0x0119))) == [{"index": 0, "pci_function": "01:03.1", "name": "x"}]
    assert g.parse_rocminfo_order("") == []


@pytest.mark.parametrize(("text", "node"), [("0", 0), ("1\n", 1), ("-1", None), ("", None), (None, None),
                                            ("x", None)])
def test_numa_node(text, node):
    assert g.parse_numa_node(text) == node


@pytest.mark.parametrize(("address", "normal"), [
    ("00000000:1B:00.0", "0000:1b:00.0"), ("c1:00.0", "0000:c1:00.0"), ("0000:C1:00.0", "0000:c1:00.0"),
    ("00010000:01:00.0", "10000:01:00.0"),  # a VMD domain: 5 digits in sysfs too
])
def test_normalize_address(address, normal):
    assert g.normalize_address(address) == normal
