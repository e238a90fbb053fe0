# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Accelerator detection: sysfs, lspci, nvidia-smi, rocminfo, mokutil, ubuntu-drivers and dpkg output.

Everything here is pure: functions take text or a directory root and return plain dicts, so the same code
runs in the ``gpu_facts`` module, in the unit tests (against recorded fixtures) and on the nodes. What to install
for a detection is :mod:`.plan`.

Classification rules (documented in ``roles/gpu_driver/README.md``):

* only PCI display-class functions count: ``0x0300`` VGA, ``0x0302`` 3D controller, ``0x0380`` display
  controller (Instinct accelerators and many datacenter NVIDIA boards use 0x0302/0x0380);
* ``10de`` NVIDIA: every display function is a render GPU (CUDA);
* ``1002`` AMD: a render GPU (ROCm) unless it is APU graphics: the device id is in :data:`AMD_APU_DEVICE_IDS`,
  or the id is unknown and the amdgpu driver reports a VRAM carve-out of at most 1 GiB
  (``mem_info_vram_total``). The PCI bus number is *not* used for AMD: passthrough GPUs in VMs often sit
  on bus 00;
* ``8086`` Intel: never a render GPU (no CUDA/ROCm); on bus 00 it is the integrated GPU, elsewhere an Arc/Flex
  card that this collection does not drive;
* server BMC VGA (:data:`BMC_VENDORS`: ASPEED, Matrox, HiSilicon, Nuvoton) and hypervisor display adapters
  (:data:`VIRTUAL_VENDORS`) are never render GPUs.

The sysfs tree is read from ``<root>/bus/pci/devices/<address>/``: files ``vendor``, ``device``, ``class``,
optional ``subsystem_vendor``/``subsystem_device``, optional ``mem_info_vram_total`` (bytes, amdgpu) and
``driver``, a symlink to the bound driver (as in sysfs) or, in recorded fixtures, a plain file holding the
driver name, and optional ``numa_node`` (``-1`` when the platform does not say).

GPU numbering (``index`` of each render GPU, what ``CUDA_VISIBLE_DEVICES`` / ``HIP_VISIBLE_DEVICES`` select; see
:func:`number_gpus`):

* NVIDIA: the index ``nvidia-smi --query-gpu=index,pci.bus_id,...`` prints for the GPU's bus id. NVML numbers the
  GPUs in PCI bus order; CUDA uses the same numbering only with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (its default,
  FASTEST_FIRST, reorders mixed models), so whoever pins a process by index sets that too
  (:mod:`.instances` does). Without nvidia-smi (no driver yet) the index is the position in PCI bus order among
  the NVIDIA GPUs not reserved for passthrough (``vfio-pci``) - what NVML will number once the driver runs;
* AMD: the position of the GPU's agent among the GPU agents of ``rocminfo`` (matched by its ``BDFID``), which is
  the HIP/ROCr enumeration order that ``HIP_VISIBLE_DEVICES`` indexes (an APU's GPU agent counts there too).
  Without rocminfo, or a rocminfo too old to print ``BDFID``, the position in PCI bus order among the AMD render
  GPUs not on ``vfio-pci`` (the order amdgpu probes them in, hence the render nodes' order);
* ``index_source`` says which of ``nvidia-smi``, ``rocminfo`` or ``pci-order`` (a prediction) numbered a GPU;
  a render GPU the running driver does not show (bound to ``vfio-pci``, or missing from nvidia-smi) has no index.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

# --------------------------------------------------------------------------------------------- constants

VENDOR_NVIDIA = "10de"
VENDOR_AMD = "1002"
VENDOR_INTEL = "8086"
VENDOR_ASPEED = "1a03"

VENDOR_NAMES = {
    VENDOR_NVIDIA: "nvidia",
    VENDOR_AMD: "amd",
    VENDOR_INTEL: "intel",
    VENDOR_ASPEED: "aspeed",
    "102b": "matrox",
    "19e5": "hisilicon",
    "1050": "nuvoton",
    "1234": "qemu",
    "1b36": "redhat",
    "1af4": "virtio",
    "15ad": "vmware",
    "1414": "microsoft",
    "80ee": "virtualbox",
    "1013": "cirrus",
}

#: vendors whose VGA function is a baseboard management controller's framebuffer, never a render GPU
BMC_VENDORS = frozenset(["1a03", "102b", "19e5", "1050"])
#: hypervisor display adapters (QEMU stdvga, QXL, virtio-gpu, VMware SVGA, Hyper-V, VirtualBox, Cirrus)
VIRTUAL_VENDORS = frozenset(["1234", "1b36", "1af4", "15ad", "1414", "80ee", "1013"])

CLASS_VGA = "0300"
CLASS_3D = "0302"
CLASS_DISPLAY = "0380"
DISPLAY_CLASSES = {CLASS_VGA: "VGA compatible controller", CLASS_3D: "3D controller",
                   CLASS_DISPLAY: "Display controller"}

#: AMD APU (integrated Radeon graphics) PCI device ids. They share system memory and are not ROCm render
#: targets for this collection. Keep sorted by generation; add new ones here (and to the README).
AMD_APU_DEVICE_IDS = {
    "9874": "Carrizo",
    "98e4": "Stoney",
    "15dd": "Raven Ridge",
    "15d8": "Picasso",
    "1636": "Renoir",
    "164c": "Lucienne",
    "1638": "Cezanne",
    "15e7": "Barcelo",
    "163f": "Van Gogh",
    "1681": "Rembrandt (Radeon 680M)",
    "1506": "Mendocino",
    "164e": "Raphael (Ryzen 7000 iGPU)",
    "15bf": "Phoenix (Radeon 780M)",
    "15c8": "Phoenix2",
    "1900": "Hawk Point",
    "150e": "Strix Point (Radeon 890M)",
    "1586": "Strix Halo (Radeon 8060S)",
    "13c0": "Granite Ridge (Ryzen 9000 iGPU)",
}

#: a VRAM carve-out at or below this many bytes marks an unknown AMD device as APU graphics
AMD_APU_MAX_VRAM = 1 << 30

#: friendly names when neither lspci nor nvidia-smi/rocminfo gave one
KNOWN_DEVICES = {
    ("10de", "2330"): "H100 SXM5 80GB",
    ("10de", "2331"): "H100 PCIe",
    ("10de", "2335"): "H200",
    ("10de", "20b0"): "A100 SXM4 40GB",
    ("10de", "20b2"): "A100 SXM4 80GB",
    ("10de", "20b5"): "A100 PCIe 80GB",
    ("10de", "26b5"): "L40",
    ("10de", "26b9"): "L40S",
    ("10de", "27b8"): "L4",
    ("10de", "1eb8"): "Tesla T4",
    ("10de", "2684"): "GeForce RTX 4090",
    ("10de", "2204"): "GeForce RTX 3090",
    ("10de", "2b85"): "GeForce RTX 5090",
    ("1002", "740f"): "Instinct MI210",
    ("1002", "740c"): "Instinct MI250X/MI250",
    ("1002", "74a1"): "Instinct MI300X",
    ("1002", "744c"): "Radeon RX 7900 XTX/XT",
    ("1002", "7448"): "Radeon Pro W7900",
    ("1a03", "2000"): "ASPEED Graphics Family",
}

# ------------------------------------------------------------------------------------------------ helpers


def _hexid(value, width=4):
    """``'0x10DE\\n'`` -> ``'10de'``; class ``'0x030200'`` -> ``'0302'`` when width=4."""
    text = (value or "").strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    if not re.match(r"^[0-9a-f]+$", text):
        return None
    if len(text) > width:
        text = text[:width]
    return text.rjust(width, "0")


def _read(path):
    try:
        with open(path, "r") as handle:
            return handle.read().strip()
    except (IOError, OSError, UnicodeDecodeError):
        return None


def parse_version(text):
    """``'550.54.15'`` -> ``(550, 54, 15)``; ``None`` when there is no leading number."""
    match = re.match(r"^\s*(\d+(?:\.\d+)*)", str(text or ""))
    if not match:
        return None
    return tuple(int(p) for p in match.group(1).split("."))


def _bus(address):
    """``'0000:c4:00.0'`` / ``'c4:00.0'`` -> ``0xc4``."""
    parts = address.split(":")
    try:
        return int(parts[-2], 16)
    except (IndexError, ValueError):
        return None


def normalize_address(address):
    """``'c1:00.0'`` -> ``'0000:c1:00.0'``; nvidia-smi's ``'00000000:1B:00.0'`` -> ``'0000:1b:00.0'``."""
    address = address.strip().lower()
    if re.match(r"^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$", address):
        address = "0000:" + address
    match = re.match(r"^([0-9a-f]{5,8}):([0-9a-f]{2}:[0-9a-f]{2}\.[0-7])$", address)
    if match:  # NVML prints the domain with 8 digits, sysfs with 4 (5 for VMD domains such as 10000)
        address = "%04x:%s" % (int(match.group(1), 16), match.group(2))
    return address


def parse_numa_node(text):
    """sysfs ``numa_node``: ``'1'`` -> 1; ``'-1'`` (no affinity known), empty or missing -> None."""
    text = (text or "").strip()
    if not re.match(r"^-?\d+$", text):
        return None
    node = int(text)
    return node if node >= 0 else None

# ------------------------------------------------------------------------------------------ classification


def classify(vendor_id, device_id, class_id, address, vram_bytes=None):
    """Classify one PCI display function. Returns ``(vendor, kind, render_capable, reason)``."""
    vendor = VENDOR_NAMES.get(vendor_id, "other")
    if vendor_id == VENDOR_NVIDIA:
        return vendor, "discrete", True, "NVIDIA GPU (CUDA)"
    if vendor_id == VENDOR_AMD:
        if device_id in AMD_APU_DEVICE_IDS:
            return vendor, "integrated", False, "AMD APU graphics (%s) share system memory" % (
                AMD_APU_DEVICE_IDS[device_id])
        if vram_bytes is not None and vram_bytes <= AMD_APU_MAX_VRAM:
            return vendor, "integrated", False, "AMD graphics with a %d MiB VRAM carve-out (APU)" % (
                vram_bytes // (1 << 20))
        return vendor, "discrete", True, "AMD GPU (ROCm)"
    if vendor_id == VENDOR_INTEL:
        if _bus(address) == 0:
            return vendor, "integrated", False, "Intel integrated graphics (no CUDA/ROCm)"
        return vendor, "discrete", False, "Intel discrete GPU (XPU is not supported by this collection)"
    if vendor_id in BMC_VENDORS:
        return vendor, "bmc", False, "server BMC/management VGA"
    if vendor_id in VIRTUAL_VENDORS:
        return vendor, "virtual", False, "hypervisor display adapter"
    return vendor, "other", False, "unknown display vendor %s" % vendor_id


def _device_record(address, vendor_id, device_id, class_id, driver=None, name=None, vram_bytes=None,
                   subsystem_vendor_id=None, source="sysfs", numa_node=None):
    vendor, kind, render, reason = classify(vendor_id, device_id, class_id, address, vram_bytes)
    return {
        "address": address,
        "vendor_id": vendor_id,
        "device_id": device_id,
        "class_id": class_id,
        "class_name": DISPLAY_CLASSES.get(class_id, class_id),
        "subsystem_vendor_id": subsystem_vendor_id,
        "vendor": vendor,
        "kind": kind,
        "render_capable": render,
        "reason": reason,
        "driver": driver,
        "name": name or KNOWN_DEVICES.get((vendor_id, device_id)) or "%s:%s" % (vendor_id, device_id),
        "vram_bytes": vram_bytes,
        "source": source,
        # filled in by number_gpus (summarize); the same keys on every record, None where they do not apply
        "index": None,
        "index_source": None,
        "pci_address": address,
        "model": None,
        "memory_mib": None,
        "numa_node": numa_node,
    }

# ------------------------------------------------------------------------------------------------- sysfs


def parse_sysfs(root="/sys"):
    """Read the display-class PCI functions under ``<root>/bus/pci/devices``; sorted by address."""
    base = os.path.join(root, "bus", "pci", "devices")
    if not os.path.isdir(base):
        return []
    devices = []
    for entry in sorted(os.listdir(base)):
        path = os.path.join(base, entry)
        class_id = _hexid(_read(os.path.join(path, "class")))
        if class_id not in DISPLAY_CLASSES:
            continue
        vendor_id = _hexid(_read(os.path.join(path, "vendor")))
        device_id = _hexid(_read(os.path.join(path, "device")))
        if not vendor_id or not device_id:
            continue
        driver_path = os.path.join(path, "driver")
        driver = None
        if os.path.islink(driver_path):
            driver = os.path.basename(os.readlink(driver_path).rstrip("/"))
        elif os.path.isfile(driver_path):
            driver = _read(driver_path) or None
        vram = _read(os.path.join(path, "mem_info_vram_total"))
        vram_bytes = int(vram) if vram and vram.isdigit() else None
        subsystem = _hexid(_read(os.path.join(path, "subsystem_vendor")))
        devices.append(_device_record(normalize_address(entry), vendor_id, device_id, class_id, driver=driver,
                                      vram_bytes=vram_bytes, subsystem_vendor_id=subsystem,
                                      numa_node=parse_numa_node(_read(os.path.join(path, "numa_node")))))
    return devices

# ------------------------------------------------------------------------------------------------- lspci


_LSPCI_RE = re.compile(
    r"^(?P<addr>(?:[0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])\s+"
    r"(?P<classname>[^\[]*?)\s*\[(?P<class>[0-9a-f]{4})\]:\s+"
    r"(?P<desc>.*?)\s*\[(?P<vendor>[0-9a-f]{4}):(?P<device>[0-9a-f]{4})\]"
    r"(?:\s*\(rev [0-9a-f]+\))?(?:\s*\(prog-if [^)]*\))?\s*$",
    re.IGNORECASE)


def parse_lspci(text):
    """Parse ``lspci -nn`` (optionally ``-D``) output; returns the display-class functions only."""
    devices = []
    for line in (text or "").splitlines():
        match = _LSPCI_RE.match(line.strip())
        if not match:
            continue
        class_id = match.group("class").lower()
        if class_id not in DISPLAY_CLASSES:
            continue
        desc = match.group("desc").strip()
        if desc.endswith("]"):  # "NVIDIA Corporation AD102 [GeForce RTX 4090]"
            name = desc[desc.rindex("[") + 1:-1]
        elif "] " in desc:  # "Advanced Micro Devices, Inc. [AMD/ATI] Phoenix1"
            name = desc[desc.rindex("] ") + 2:]
        else:  # "ASPEED Technology, Inc. ASPEED Graphics Family"
            name = desc
        devices.append(_device_record(normalize_address(match.group("addr")), match.group("vendor").lower(),
                                      match.group("device").lower(), class_id, name=name, source="lspci"))
    return devices


def merge_devices(sysfs_devices, lspci_devices):
    """Cross-check sysfs against lspci: lspci names enrich sysfs records, disagreements become warnings.

    Returns ``(devices, warnings)``. sysfs wins where both know a device (it has the bound driver); devices
    only lspci lists are kept (a container without /sys/bus/pci still gets a detection).
    """
    warnings = []
    by_addr = dict((d["address"], dict(d)) for d in sysfs_devices)
    if not lspci_devices:
        return [by_addr[a] for a in sorted(by_addr)], warnings
    seen = set()
    for dev in lspci_devices:
        addr = dev["address"]
        seen.add(addr)
        if addr not in by_addr:
            if sysfs_devices:
                warnings.append("lspci lists %s %s (%s:%s) which sysfs does not show" % (
                    addr, dev["name"], dev["vendor_id"], dev["device_id"]))
            by_addr[addr] = dict(dev)
            continue
        rec = by_addr[addr]
        if (rec["vendor_id"], rec["device_id"]) != (dev["vendor_id"], dev["device_id"]):
            warnings.append("sysfs and lspci disagree about %s: %s:%s vs %s:%s" % (
                addr, rec["vendor_id"], rec["device_id"], dev["vendor_id"], dev["device_id"]))
            continue
        if not KNOWN_DEVICES.get((rec["vendor_id"], rec["device_id"])) or rec["name"] == "%s:%s" % (
                rec["vendor_id"], rec["device_id"]):
            rec["name"] = dev["name"]
        rec["source"] = "sysfs+lspci"
    for addr in sorted(set(by_addr) - seen):
        if by_addr[addr]["source"] == "sysfs":
            warnings.append("sysfs shows %s (%s:%s) which lspci does not list" % (
                addr, by_addr[addr]["vendor_id"], by_addr[addr]["device_id"]))
    return [by_addr[a] for a in sorted(by_addr)], warnings

# ------------------------------------------------------------------------------------ runtime tool output


def parse_nvidia_smi(text):
    """Parse ``nvidia-smi --query-gpu=name,driver_version,memory.total[,compute_cap] --format=csv,noheader``.

    Lines that are not CSV records (error banners such as "NVIDIA-SMI has failed ...") are skipped, so an
    empty list means the driver is not usable.
    """
    gpus = []
    for line in (text or "").splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3 or not parse_version(fields[1]):
            continue
        mem = re.match(r"^(\d+)\s*MiB$", fields[2])
        gpu = {"name": fields[0], "driver_version": fields[1],
               "memory_total_mib": int(mem.group(1)) if mem else None, "compute_cap": None}
        if len(fields) > 3 and re.match(r"^\d+\.\d+$", fields[3]):
            gpu["compute_cap"] = fields[3]
        gpus.append(gpu)
    return gpus


def parse_nvidia_smi_gpus(text):
    """Parse ``nvidia-smi --query-gpu=index,pci.bus_id,name,memory.total --format=csv,noheader,nounits``.

    Returns ``[{index, pci_address, name, memory_mib}]`` in nvidia-smi's order; the bus id is normalized to the
    sysfs form (``00000000:1B:00.0`` -> ``0000:1b:00.0``). Lines that are not such records (error banners, the
    output of another query) are skipped. ``memory.total`` may carry its unit (without ``nounits``) or be
    ``[N/A]``.
    """
    gpus = []
    for line in (text or "").splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 4 or not fields[0].isdigit():
            continue
        address = normalize_address(fields[1])
        if not re.match(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$", address):
            continue
        mem = re.match(r"^(\d+)(?:\s*MiB)?$", fields[3])
        gpus.append({"index": int(fields[0]), "pci_address": address, "name": fields[2],
                     "memory_mib": int(mem.group(1)) if mem else None})
    return gpus


_ROCMINFO_KEYS = ("Name", "Marketing Name", "Device Type", "Compute Unit", "Uuid", "BDFID")


def _rocminfo_agents(text):
    agents = []
    current = None
    for raw in (text or "").splitlines():
        line = raw.strip()
        if re.match(r"^Agent \d+$", line):
            current = {}
            agents.append(current)
            continue
        if current is None or ":" not in line:
            continue
        key, dummy, value = line.partition(":")
        key = key.strip()
        if key in _ROCMINFO_KEYS and key not in current:
            current[key] = value.strip()
    return agents


def parse_rocminfo(text):
    """Parse ``rocminfo``: the GPU agents (gfx target, marketing name, compute units) and the kfd state."""
    text = text or ""
    gpus = []
    for agent in _rocminfo_agents(text):
        if agent.get("Device Type") != "GPU":
            continue
        cu = agent.get("Compute Unit", "")
        gpus.append({"gfx": agent.get("Name"), "name": agent.get("Marketing Name") or agent.get("Name"),
                     "compute_units": int(cu) if cu.isdigit() else None, "uuid": agent.get("Uuid")})
    kfd = None
    if re.search(r"ROCk module (version \S+ )?is loaded", text):
        kfd = True
    elif "ROCk module is NOT loaded" in text:
        kfd = False
    return {"gpus": gpus, "kfd_loaded": kfd}


def parse_rocminfo_order(text):
    """The GPU agents of ``rocminfo`` in its order - the HIP device order - with their PCI function.

    Returns ``[{index, pci_function, name}]``: ``pci_function`` is ``'bb:dd.f'`` decoded from ``BDFID``
    (``bus << 8 | device << 3 | function``; rocminfo prints no PCI domain), None when this rocminfo does not
    print it.
    """
    order = []
    for agent in _rocminfo_agents(text):
        if agent.get("Device Type") != "GPU":
            continue
        bdf = agent.get("BDFID", "")
        function = None
        if bdf.isdigit():
            value = int(bdf)
            function = "%02x:%02x.%x" % ((value >> 8) & 0xff, (value >> 3) & 0x1f, value & 0x7)
        order.append({"index": len(order), "pci_function": function,
                      "name": agent.get("Marketing Name") or agent.get("Name")})
    return order


def parse_mokutil(text):
    """``mokutil --sb-state`` -> True (enabled), False (disabled) or None (unknown / no EFI)."""
    text = (text or "").lower()
    if "secureboot enabled" in text:
        return True
    if "secureboot disabled" in text or "doesn't support secure boot" in text:
        return False
    return None


_UBUNTU_DRIVER_RE = re.compile(r"(nvidia-driver-\d+(?:-[a-z]+)*)")


def parse_ubuntu_drivers(text):
    """Parse ``ubuntu-drivers devices`` (or ``ubuntu-drivers list``): ``{recommended, packages}``."""
    packages = []
    recommended = None
    for line in (text or "").splitlines():
        match = _UBUNTU_DRIVER_RE.search(line)
        if not match:
            continue
        pkg = match.group(1)
        if pkg not in packages:
            packages.append(pkg)
        if "recommended" in line and recommended is None:
            recommended = pkg
    if recommended is None and packages:
        # ``list`` output has no markers; prefer the newest non-open, non-server branch, like ubuntu-drivers
        plain = [p for p in packages if re.match(r"^nvidia-driver-\d+$", p)] or packages
        recommended = sorted(plain, key=lambda p: parse_version(p.split("-")[2]) or (0,))[-1]
    return {"recommended": recommended, "packages": packages}


def parse_dpkg_installed(text):
    """``dpkg-query -W -f='${Package}\\t${Status}\\n' ...`` -> names of the packages installed ok."""
    names = []
    for line in (text or "").splitlines():
        name, dummy, status = line.partition("\t")
        if status.strip().endswith("install ok installed") and name.strip():
            names.append(name.strip())
    return names


# ------------------------------------------------------------------------------------------- numbering

MIB = 1 << 20


def _number_in_pci_order(candidates):
    """Index the GPUs by PCI bus order, leaving out those reserved for passthrough; returns the indexed ones."""
    usable = [d for d in sorted(candidates, key=lambda d: d["address"]) if d.get("driver") != "vfio-pci"]
    for position, dev in enumerate(usable):
        dev["index"], dev["index_source"] = position, "pci-order"
    return usable


def number_gpus(devices, nvidia_smi_gpus=None, rocminfo_order=None, nvidia_smi=None):
    """Fill ``index``, ``index_source``, ``model`` and ``memory_mib`` of the device records, in place.

    ``nvidia_smi_gpus`` is :func:`parse_nvidia_smi_gpus`' result, ``rocminfo_order`` :func:`parse_rocminfo_order`'s,
    ``nvidia_smi`` :func:`parse_nvidia_smi`'s (models and memory when only that query answered). The numbering
    rules are in the module docstring. Returns warnings (a runtime that does not show a render GPU, or lists
    one the PCI bus does not show).
    """
    warnings = []
    for dev in devices:
        dev["index"], dev["index_source"] = None, None
        dev["pci_address"] = dev["address"]
        dev["model"] = dev.get("name")
        dev["memory_mib"] = dev["vram_bytes"] // MIB if dev.get("vram_bytes") else None
        dev.setdefault("numa_node", None)
    nvidia = [d for d in devices if d.get("render_capable") and d.get("vendor") == "nvidia"]
    amd = [d for d in devices if d.get("render_capable") and d.get("vendor") == "amd"]

    if nvidia_smi_gpus:
        by_address = dict((d["address"], d) for d in nvidia)
        for gpu in nvidia_smi_gpus:
            dev = by_address.get(gpu["pci_address"])
            if dev is None:
                warnings.append("nvidia-smi lists GPU %d at %s, which is not an NVIDIA GPU found on the PCI bus" % (
                    gpu["index"], gpu["pci_address"]))
                continue
            dev.update(index=gpu["index"], index_source="nvidia-smi", model=gpu["name"],
                       memory_mib=gpu["memory_mib"])
        for dev in nvidia:
            if dev["index"] is None and dev.get("driver") != "vfio-pci":
                warnings.append("%s %s is not listed by nvidia-smi: it has no index and nothing runs on it" % (
                    dev["address"], dev["name"]))
    else:
        indexed = _number_in_pci_order(nvidia)
        rows = nvidia_smi or []
        if rows and len(rows) == len(indexed):  # nvidia-smi lists the GPUs in the same (NVML, PCI bus) order
            for dev, row in zip(indexed, rows):
                dev.update(model=row["name"], memory_mib=row["memory_total_mib"])

    order = rocminfo_order or []
    if order and all(agent["pci_function"] for agent in order):
        by_function = {}
        for dev in amd:
            by_function.setdefault(dev["address"].split(":", 1)[1], []).append(dev)
        for agent in order:
            matches = by_function.get(agent["pci_function"]) or []
            if len(matches) == 1:  # rocminfo prints no PCI domain: a function on two domains stays unnumbered
                matches[0].update(index=agent["index"], index_source="rocminfo",
                                  model=agent["name"] or matches[0]["model"])
        for dev in amd:
            if dev["index"] is None and dev.get("driver") != "vfio-pci":
                warnings.append("%s %s is not a GPU agent of rocminfo: it has no index and nothing runs on it" % (
                    dev["address"], dev["name"]))
    else:
        _number_in_pci_order(amd)
    return warnings

# ------------------------------------------------------------------------------------------- detection


def summarize(devices, nvidia_smi_text=None, rocminfo_text=None, mokutil_text=None, ubuntu_drivers_text=None,
              sysfs_root="/sys", reboot_required_file=False, tools=None, extra_warnings=None, dpkg_text=None,
              nvidia_smi_gpus_text=None):
    """Build the detection dict (``ansible_facts.gpu_worker``) from already collected pieces.

    ``devices`` are not modified: the records of the result are copies with the numbering of :func:`number_gpus`.
    """
    tools = tools or {}
    devices = [dict(d) for d in devices]
    render = [d for d in devices if d["render_capable"]]
    vendors = sorted(set(d["vendor"] for d in render))
    if "nvidia" in vendors:
        accelerator = "nvidia"
    elif "amd" in vendors:
        accelerator = "amd"
    else:
        accelerator = "cpu"
    smi = parse_nvidia_smi(nvidia_smi_text)
    roc = parse_rocminfo(rocminfo_text)
    nvidia_module = os.path.isdir(os.path.join(sysfs_root, "module", "nvidia"))
    amdgpu_module = os.path.isdir(os.path.join(sysfs_root, "module", "amdgpu"))
    module_version = _read(os.path.join(sysfs_root, "module", "nvidia", "version"))
    nvidia_driver = smi[0]["driver_version"] if smi else None
    nvidia = {
        "smi_present": bool(tools.get("nvidia-smi")),
        "smi_ok": bool(smi),
        "gpus": smi,
        "driver_version": nvidia_driver or module_version,
        "module_loaded": nvidia_module,
        "installed_packages": parse_dpkg_installed(dpkg_text),
        "nouveau_bound": any(d["driver"] == "nouveau" for d in devices if d["vendor"] == "nvidia"),
    }
    amd = {
        "rocminfo_present": bool(tools.get("rocminfo")),
        "rocminfo_ok": bool(roc["gpus"]),
        "gpus": roc["gpus"],
        "kfd_loaded": roc["kfd_loaded"],
        "module_loaded": amdgpu_module,
    }
    pending_reasons = []
    if reboot_required_file:
        pending_reasons.append("/var/run/reboot-required exists")
    if accelerator == "nvidia" and tools.get("nvidia-smi") and not smi:
        pending_reasons.append("the NVIDIA driver is installed but nvidia-smi cannot talk to it")
    if accelerator == "amd" and tools.get("rocminfo") and not roc["gpus"]:
        pending_reasons.append("ROCm is installed but rocminfo sees no GPU agent")
    warnings = list(extra_warnings or [])
    warnings.extend(number_gpus(devices, nvidia_smi_gpus=parse_nvidia_smi_gpus(nvidia_smi_gpus_text),
                                rocminfo_order=parse_rocminfo_order(rocminfo_text), nvidia_smi=smi))
    for dev in render:
        if dev["driver"] == "vfio-pci":
            warnings.append("%s %s is bound to vfio-pci (reserved for VM passthrough)" % (
                dev["address"], dev["name"]))
    ud = parse_ubuntu_drivers(ubuntu_drivers_text) if ubuntu_drivers_text else None
    return {
        "accelerator": accelerator,
        "vendors": vendors,
        "devices": devices,
        "render_gpus": render,
        "render_gpu_count": len(render),
        "nvidia": nvidia,
        "amd": amd,
        "secure_boot": parse_mokutil(mokutil_text) if mokutil_text is not None else None,
        "reboot_pending": bool(pending_reasons),
        "reboot_pending_reasons": pending_reasons,
        "ubuntu_drivers": ud,
        "tools": dict((k, bool(v)) for k, v in sorted(tools.items())),
        "warnings": warnings,
    }


def detect(sysfs_root="/sys", lspci_text=None, nvidia_smi_text=None, rocminfo_text=None, mokutil_text=None,
           ubuntu_drivers_text=None, reboot_required_file=False, tools=None, dpkg_text=None,
           nvidia_smi_gpus_text=None):
    """Full detection from a sysfs root plus the text output of the optional tools."""
    sysfs_devices = parse_sysfs(sysfs_root)
    lspci_devices = parse_lspci(lspci_text) if lspci_text else []
    devices, warnings = merge_devices(sysfs_devices, lspci_devices)
    return summarize(devices, nvidia_smi_text=nvidia_smi_text, rocminfo_text=rocminfo_text,
                     mokutil_text=mokutil_text, ubuntu_drivers_text=ubuntu_drivers_text, sysfs_root=sysfs_root,
                     reboot_required_file=reboot_required_file, tools=tools, extra_warnings=warnings,
                     dpkg_text=dpkg_text, nvidia_smi_gpus_text=nvidia_smi_gpus_text)
