# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Accelerator detection (sysfs, lspci, nvidia-smi, rocminfo, mokutil) and the install plan per vendor/distro.

Everything here is pure: functions take text or a directory root and return plain dicts, so the same code
runs in the ``gpu_facts``/``gpu_plan`` modules, in the unit tests (against recorded fixtures) and on the nodes.

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
driver name.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ..errors import GpuWorkerError

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

#: PyTorch's published CUDA wheel indexes, oldest first: (variant, CUDA version, minimum Linux driver,
#: minimum compute capability of the GPUs the wheels still ship kernels for). Minimum drivers are NVIDIA's
#: "CUDA toolkit and corresponding driver versions" table; cu118/cu121 use the minor-version-compatibility
#: minimum of their CUDA major (11.x: 450.80.02, 12.x: 525.60.13), the later ones the GA toolkit driver.
CUDA_WHEELS = (
    ("cu118", "11.8", "450.80.02", (3, 7)),
    ("cu121", "12.1", "525.60.13", (5, 0)),
    ("cu124", "12.4", "550.54.14", (5, 0)),
    ("cu126", "12.6", "560.28.03", (5, 0)),
    ("cu128", "12.8", "570.26", (7, 0)),
    ("cu129", "12.9", "575.51.03", (7, 0)),
    ("cu130", "13.0", "580.65.06", (7, 5)),
)
CUDA_VARIANTS = tuple(w[0] for w in CUDA_WHEELS)
DEFAULT_CUDA_FLOOR = "cu121"

TORCH_INDEX_BASE = "https://download.pytorch.org/whl/"
TORCH_CPU_INDEX = TORCH_INDEX_BASE + "cpu"
DEFAULT_TORCH_PACKAGES = ("torch", "torchvision", "torchaudio")

#: ROCm releases this collection can install: the repo.radeon.com paths, the amdgpu-install package,
#: the matching PyTorch wheel index, and the Ubuntu suites AMD publishes packages for.
ROCM_RELEASES = {
    "5.6": {"build": "50600", "torch": "rocm5.6", "suites": ("jammy",)},
    "5.7": {"build": "50700", "torch": "rocm5.7", "suites": ("jammy",)},
    "6.0": {"build": "60000", "torch": "rocm6.0", "suites": ("jammy",)},
    "6.1": {"build": "60100", "torch": "rocm6.1", "suites": ("jammy",)},
    "6.2": {"build": "60200", "torch": "rocm6.2", "suites": ("jammy", "noble")},
    "6.3": {"build": "60300", "torch": "rocm6.3", "suites": ("jammy", "noble")},
    "6.4": {"build": "60400", "torch": "rocm6.4", "suites": ("jammy", "noble")},
}
DEFAULT_ROCM_VERSION = "6.2"
ROCM_TORCH_FLOOR = "rocm5.6"
ROCM_KEY_URL = "https://repo.radeon.com/rocm/rocm.gpg.key"
AMD_PACKAGES = ("hip-runtime-amd", "rocm-hip-runtime", "rocminfo")
AMD_GROUPS = ("render", "video")

#: supported distributions: (id, major) -> codename, apt suite for AMD's repositories, NVIDIA source
DISTROS = {
    ("ubuntu", "22"): {"name": "Ubuntu 22.04", "codename": "jammy", "rocm_suite": "jammy",
                       "nvidia": "ubuntu-drivers", "nvidia_default_branch": "570", "min_rocm": "5.6"},
    ("ubuntu", "24"): {"name": "Ubuntu 24.04", "codename": "noble", "rocm_suite": "noble",
                       "nvidia": "ubuntu-drivers", "nvidia_default_branch": "570", "min_rocm": "6.2"},
    # AMD documents Debian 12 with its Ubuntu 22.04 (jammy) repositories.
    ("debian", "12"): {"name": "Debian 12", "codename": "bookworm", "rocm_suite": "jammy",
                       "nvidia": "debian-non-free", "nvidia_default_branch": "535", "min_rocm": "6.2"},
}
SUPPORTED_DISTROS = ", ".join(d["name"] for d in DISTROS.values())

VENDOR_CHOICES = ("auto", "nvidia", "amd", "cpu")

OVERRIDE_KEYS = {
    "vendor": "gpu_driver_vendor",
    "nvidia_branch": "gpu_driver_nvidia_branch",
    "rocm_version": "gpu_driver_rocm_version",
    "amd_dkms": "gpu_driver_amd_dkms",
    "torch_index_url": "gpu_driver_torch_index_url",
    "torch_floor_cuda": "gpu_driver_torch_floor_cuda",
    "torch_packages": "gpu_driver_torch_packages",
    "blacklist_nouveau": "gpu_driver_blacklist_nouveau",
    "keyring_dir": "gpu_driver_keyring_dir",
    "kernel": "ansible_facts.kernel",
    "architecture": "ansible_facts.architecture",
}

SOURCES_DIR = "/etc/apt/sources.list.d"
#: Debian components the non-free NVIDIA driver needs (nvidia-driver, firmware-misc-nonfree)
DEBIAN_COMPONENTS = ("main", "contrib", "non-free", "non-free-firmware")
PREFERENCES_DIR = "/etc/apt/preferences.d"

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
    address = address.strip().lower()
    if re.match(r"^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$", address):
        address = "0000:" + address
    return address

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
                   subsystem_vendor_id=None, source="sysfs"):
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
                                      vram_bytes=vram_bytes, subsystem_vendor_id=subsystem))
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


def parse_rocminfo(text):
    """Parse ``rocminfo``: the GPU agents (gfx target, marketing name, compute units) and the kfd state."""
    text = text or ""
    agents = []
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if re.match(r"^Agent \d+$", line):
            current = {}
            agents.append(current)
            continue
        if current is None or ":" not in line:
            continue
        key, dummy, value = line.partition(":")
        key = key.strip()
        if key in ("Name", "Marketing Name", "Device Type", "Compute Unit", "Uuid") and key not in current:
            current[key] = value.strip()
    gpus = []
    for agent in agents:
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


def driver_branch(package_or_branch):
    """``'nvidia-driver-570-server'`` / ``'570-open'`` / ``'570'`` -> ``'570'``; None if there is none."""
    match = re.search(r"(\d{3})", str(package_or_branch or ""))
    return match.group(1) if match else None

# ------------------------------------------------------------------------------------------- detection


def summarize(devices, nvidia_smi_text=None, rocminfo_text=None, mokutil_text=None, ubuntu_drivers_text=None,
              sysfs_root="/sys", reboot_required_file=False, tools=None, extra_warnings=None, dpkg_text=None):
    """Build the detection dict (``ansible_facts.gpu_worker``) from already collected pieces."""
    tools = tools or {}
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
           ubuntu_drivers_text=None, reboot_required_file=False, tools=None, dpkg_text=None):
    """Full detection from a sysfs root plus the text output of the optional tools."""
    sysfs_devices = parse_sysfs(sysfs_root)
    lspci_devices = parse_lspci(lspci_text) if lspci_text else []
    devices, warnings = merge_devices(sysfs_devices, lspci_devices)
    return summarize(devices, nvidia_smi_text=nvidia_smi_text, rocminfo_text=rocminfo_text,
                     mokutil_text=mokutil_text, ubuntu_drivers_text=ubuntu_drivers_text, sysfs_root=sysfs_root,
                     reboot_required_file=reboot_required_file, tools=tools, extra_warnings=warnings,
                     dpkg_text=dpkg_text)

# ------------------------------------------------------------------------------------- CUDA wheel choice


def _branch_version(branch):
    """A bare branch (``'570'``) stands for its newest release."""
    return (int(branch), 999, 999)


def choose_cuda_variant(driver_version, floor=DEFAULT_CUDA_FLOOR, compute_caps=None):
    """Newest PyTorch CUDA wheel index the driver (and the GPUs) support. Returns ``(variant, warnings)``.

    ``driver_version`` is a full version (``'550.54.15'``), a branch (``'570'``) or None (unknown: floor).
    Never below ``floor`` unless the driver is too old for it, which is warned about.
    """
    if floor not in CUDA_VARIANTS:
        raise GpuWorkerError("unknown CUDA wheel floor %r" % (floor,), field="gpu_driver_torch_floor_cuda",
                             hint="allowed values: %s" % ", ".join(CUDA_VARIANTS))
    floor_idx = CUDA_VARIANTS.index(floor)
    if driver_version in (None, ""):
        return floor, ["NVIDIA driver version unknown: using the %s floor wheels" % floor]
    text = str(driver_version).strip()
    version = _branch_version(text) if re.match(r"^\d+$", text) else parse_version(text)
    if version is None:
        raise GpuWorkerError("cannot read NVIDIA driver version %r" % (driver_version,),
                             field="nvidia_driver_version", hint="expected e.g. 550.54.15 or a branch like 550")
    caps = [parse_version(c) for c in (compute_caps or []) if parse_version(c)]
    min_cap = min(caps) if caps else None
    warnings = []
    by_driver = [w for w in CUDA_WHEELS if version >= parse_version(w[2])]
    if not by_driver:
        warnings.append("NVIDIA driver %s is older than %s, the minimum for any PyTorch CUDA wheel; using %s "
                        "anyway: upgrade the driver" % (text, CUDA_WHEELS[0][2], floor))
        return floor, warnings
    usable = [w for w in by_driver if min_cap is None or min_cap >= w[3]]
    if not usable:
        usable = by_driver[:1]
    if len(usable) < len(by_driver):
        warnings.append("GPU compute capability %s is too old for the %s wheels: using %s" % (
            ".".join(str(p) for p in min_cap), by_driver[-1][0], usable[-1][0]))
    best = usable[-1]
    if CUDA_VARIANTS.index(best[0]) < floor_idx:
        need = CUDA_WHEELS[floor_idx][2]
        if by_driver[-1][0] == best[0]:
            warnings.append("NVIDIA driver %s supports at most CUDA %s: using %s, below the %s floor "
                            "(upgrade the driver to >= %s)" % (text, best[1], best[0], floor, need))
    return best[0], warnings


def cuda_table():
    """The wheel table as dicts (for documentation and the module's return)."""
    return [{"variant": w[0], "cuda": w[1], "min_driver": w[2],
             "min_compute_capability": "%d.%d" % w[3], "index_url": TORCH_INDEX_BASE + w[0]} for w in CUDA_WHEELS]

# ---------------------------------------------------------------------------------------------- validation


def resolve_distro(distro_id, distro_version):
    """-> the :data:`DISTROS` entry; GpuWorkerError naming the facts and the supported list otherwise."""
    key = (str(distro_id or "").strip().lower(), str(distro_version or "").strip().split(".", 1)[0])
    if key not in DISTROS:
        raise GpuWorkerError(
            "%s %s is not supported" % (distro_id or "unknown", distro_version or ""),
            field="ansible_distribution/ansible_distribution_version",
            hint="supported distributions: %s" % SUPPORTED_DISTROS)
    entry = dict(DISTROS[key])
    entry["id"], entry["major"] = key
    return entry


def _choice(value, choices, field):
    if value not in choices:
        raise GpuWorkerError("unknown value %r" % (value,), field=field,
                             hint="allowed values: %s" % ", ".join(choices))
    return value


def normalize_overrides(overrides, distro):
    """Check the user-facing overrides; returns a dict with every key filled in."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise GpuWorkerError("unknown override(s): %s" % ", ".join(unknown), field="overrides",
                             hint="allowed keys: %s" % ", ".join(sorted(OVERRIDE_KEYS)))
    out = {
        "vendor": overrides.get("vendor") or "auto",
        "nvidia_branch": str(overrides.get("nvidia_branch") or "").strip(),
        "rocm_version": str(overrides.get("rocm_version") or DEFAULT_ROCM_VERSION).strip(),
        "amd_dkms": bool(overrides.get("amd_dkms", True)),
        "torch_index_url": str(overrides.get("torch_index_url") or "").strip(),
        "torch_floor_cuda": overrides.get("torch_floor_cuda") or DEFAULT_CUDA_FLOOR,
        "torch_packages": list(DEFAULT_TORCH_PACKAGES if overrides.get("torch_packages") is None
                               else overrides["torch_packages"]),
        "blacklist_nouveau": bool(overrides.get("blacklist_nouveau", True)),
        "keyring_dir": (overrides.get("keyring_dir") or "/etc/apt/keyrings").rstrip("/"),
        "kernel": overrides.get("kernel") or "",
        "architecture": overrides.get("architecture") or "x86_64",
    }
    _choice(out["vendor"], VENDOR_CHOICES, OVERRIDE_KEYS["vendor"])
    _choice(out["torch_floor_cuda"], CUDA_VARIANTS, OVERRIDE_KEYS["torch_floor_cuda"])
    _choice(out["rocm_version"], sorted(ROCM_RELEASES, key=parse_version), OVERRIDE_KEYS["rocm_version"])
    if out["nvidia_branch"] and not re.match(r"^\d{3}(-(server|open|server-open))?$", out["nvidia_branch"]):
        raise GpuWorkerError("invalid NVIDIA driver branch %r" % (out["nvidia_branch"],),
                             field=OVERRIDE_KEYS["nvidia_branch"],
                             hint="use a branch number such as 570, optionally with -server/-open/-server-open, "
                                  "or leave it empty for the recommended driver")
    url = out["torch_index_url"]
    if url and not re.match(r"^https?://\S+$", url):
        raise GpuWorkerError("not an http(s) URL: %r" % (url,), field=OVERRIDE_KEYS["torch_index_url"],
                             hint="e.g. https://download.pytorch.org/whl/cu124, or empty for automatic")
    if not out["torch_packages"] or not all(isinstance(p, str) and p.strip() for p in out["torch_packages"]):
        raise GpuWorkerError("must be a non-empty list of package names", field=OVERRIDE_KEYS["torch_packages"])
    return out


def validate(distro_id, distro_version, overrides=None):
    """Preflight: the distribution and overrides are usable (the checks ``plan`` also does)."""
    distro = resolve_distro(distro_id, distro_version)
    opts = normalize_overrides(overrides, distro)
    if opts["vendor"] == "amd":
        _check_rocm(opts, distro)
    return distro, opts


def _check_rocm(opts, distro):
    release = ROCM_RELEASES[opts["rocm_version"]]
    ok = [v for v in sorted(ROCM_RELEASES, key=parse_version)
          if parse_version(v) >= parse_version(distro["min_rocm"]) and distro["rocm_suite"] in
          ROCM_RELEASES[v]["suites"]]
    if opts["rocm_version"] not in ok or distro["rocm_suite"] not in release["suites"]:
        raise GpuWorkerError("ROCm %s has no packages for %s" % (opts["rocm_version"], distro["name"]),
                             field=OVERRIDE_KEYS["rocm_version"],
                             hint="allowed values on %s: %s" % (distro["name"], ", ".join(ok)))
    if opts["architecture"] not in ("x86_64", "amd64"):
        raise GpuWorkerError("ROCm packages exist for x86_64 only, not %s" % opts["architecture"],
                             field=OVERRIDE_KEYS["architecture"])

# ---------------------------------------------------------------------------------------------------- plan


def deb822(types, uris, suites, components, signed_by=None, architectures=None):
    """Render a deb822 ``.sources`` stanza (without the ansible_managed header the template adds)."""
    lines = ["Types: %s" % types, "URIs: %s" % uris, "Suites: %s" % suites]
    if components:
        lines.append("Components: %s" % components)
    if architectures:
        lines.append("Architectures: %s" % architectures)
    if signed_by:
        lines.append("Signed-By: %s" % signed_by)
    return "\n".join(lines) + "\n"


def _repo(name, content, keyring_url=None, keyring_path=None):
    return {"name": name, "path": "%s/visionsuit-%s.sources" % (SOURCES_DIR, name), "content": content,
            "keyring_url": keyring_url, "keyring_path": keyring_path}


def _deb_arch(architecture):
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(architecture, architecture)


def _headers_package(distro, opts):
    if distro["id"] == "debian":
        return "linux-headers-%s" % _deb_arch(opts["architecture"])
    return "linux-headers-%s" % opts["kernel"] if opts["kernel"] else "linux-headers-generic"


def resolve_vendor(detection, opts, warnings):
    """The accelerator to set up: the override, else what was detected (NVIDIA first when mixed)."""
    detected = detection.get("accelerator") or "cpu"
    vendors = detection.get("vendors") or []
    if opts["vendor"] != "auto":
        if opts["vendor"] != "cpu" and opts["vendor"] not in vendors:
            warnings.append("gpu_driver_vendor=%s but no %s GPU was detected: installing its stack anyway" % (
                opts["vendor"], opts["vendor"].upper() if opts["vendor"] == "amd" else "NVIDIA"))
        return opts["vendor"], "override"
    if len([v for v in vendors if v in ("nvidia", "amd")]) > 1:
        warnings.append("mixed GPU vendors (%s): setting up %s only; set gpu_driver_vendor to choose" % (
            ", ".join(vendors), detected))
    return detected, "detected"


def runtime_ok(accelerator, detection):
    """True when the accelerator's runtime already works (nvidia-smi / rocminfo list GPUs)."""
    if accelerator == "nvidia":
        return bool((detection.get("nvidia") or {}).get("smi_ok"))
    if accelerator == "amd":
        return bool((detection.get("amd") or {}).get("rocminfo_ok"))
    return True


def plan(detection, distro_id, distro_version, overrides=None):
    """What to install for this host: packages, apt repositories, PyTorch wheel index, warnings.

    :param detection: the ``gpu_facts`` dict (``ansible_facts.gpu_worker``), possibly injected.
    :param distro_id: ``ansible_facts.distribution`` (Ubuntu, Debian).
    :param distro_version: ``ansible_facts.distribution_version`` (22.04, 12.5, ...).
    :param overrides: role variables without the ``gpu_driver_`` prefix (see :data:`OVERRIDE_KEYS`).
    """
    detection = detection or {}
    distro, opts = validate(distro_id, distro_version, overrides)
    warnings = []
    accelerator, source = resolve_vendor(detection, opts, warnings)
    result = {
        "accelerator": accelerator,
        "vendor_source": source,
        "distribution": distro["name"],
        "codename": distro["codename"],
        "packages": [],
        "apt_repositories": [],
        "apt_preferences": [],
        "apt_components": None,
        "blacklist_nouveau": False,
        "service_groups": [],
        "nvidia": None,
        "rocm": None,
        "torch_variant": None,
        "torch_index_url": None,
        "torch_packages": opts["torch_packages"],
        "runtime_check": None,
        "warnings": warnings,
    }
    if accelerator == "nvidia":
        _plan_nvidia(result, detection, distro, opts)
    elif accelerator == "amd":
        _plan_amd(result, detection, distro, opts)
    else:
        result["torch_variant"] = "cpu"
        result["torch_index_url"] = TORCH_CPU_INDEX
        if source == "detected":
            others = [d for d in detection.get("devices") or [] if not d.get("render_capable")]
            seen = ", ".join("%s (%s)" % (d["name"], d["kind"]) for d in others)
            warnings.append("no NVIDIA or AMD render GPU found%s: installing CPU-only PyTorch" % (
                "; ignored: " + seen if seen else ""))
    if opts["torch_index_url"]:
        result["torch_index_url"] = opts["torch_index_url"]
        result["torch_variant"] = opts["torch_index_url"].rstrip("/").rsplit("/", 1)[-1]
        result["torch_index_source"] = "override"
    else:
        result["torch_index_source"] = "auto"
    result["torch_pip_args"] = ["--index-url", result["torch_index_url"]]
    result["torch_package_spec"] = "%s --index-url %s" % (" ".join(result["torch_packages"]),
                                                          result["torch_index_url"])
    ok = runtime_ok(accelerator, detection)
    result["runtime_ok"] = ok
    result["reboot_required"] = not ok
    result["reboot_reasons"] = []
    if not ok:
        result["reboot_reasons"] = list(detection.get("reboot_pending_reasons") or []) or [
            "%s does not see the GPU yet: the kernel driver loads after a reboot" % result["runtime_check"]]
    for extra in detection.get("warnings") or []:
        if extra not in warnings:
            warnings.append(extra)
    return result


def _plan_nvidia(result, detection, distro, opts):
    warnings = result["warnings"]
    nv = detection.get("nvidia") or {}
    installed = nv.get("driver_version") if nv.get("smi_ok") else None
    branch_pin = opts["nvidia_branch"]
    owned = nv.get("installed_packages") or []
    components = None
    foreign = "NVIDIA driver %s is installed outside the distribution's driver packages: keeping it" % installed
    if distro["nvidia"] == "debian-non-free":
        if branch_pin:
            warnings.append("gpu_driver_nvidia_branch=%s is ignored on %s: only the distribution's nvidia-driver "
                            "(%s series) is available" % (branch_pin, distro["name"], distro["nvidia_default_branch"]))
        if installed and "nvidia-driver" not in owned:
            package, source, branch = None, "existing", driver_branch(installed)
            warnings.append(foreign + " (remove it to use Debian's nvidia-driver)")
        else:
            package, source = "nvidia-driver", "distribution"
            branch = driver_branch(installed) or distro["nvidia_default_branch"]
    else:
        ud = detection.get("ubuntu_drivers") or {}
        kept = [p for p in owned if driver_branch(p)]
        if branch_pin:
            package, source = "nvidia-driver-%s" % branch_pin, "pinned"
        elif kept:
            # an installed driver stays (no churn on re-runs); pin gpu_driver_nvidia_branch to change it
            package, source = kept[0], "installed"
        elif installed:
            package, source = None, "existing"
            warnings.append(foreign + " (set gpu_driver_nvidia_branch to replace it)")
        elif ud.get("recommended"):
            package, source = ud["recommended"], "ubuntu-drivers"
        else:
            package, source = "nvidia-driver-%s" % distro["nvidia_default_branch"], "fallback"
            warnings.append("ubuntu-drivers gave no recommendation (not installed yet, or check mode): assuming "
                            "%s" % package)
        branch = driver_branch(package) if package else driver_branch(installed)
    if package is None:
        packages = []
    elif distro["id"] == "debian":
        # Enabled in the existing Debian sources (a second .sources file for the same suites would clash over
        # Signed-By); see roles/gpu_driver/tasks/install-nvidia.yml.
        components = {"components": list(DEBIAN_COMPONENTS),
                      "suites": [distro["codename"], "%s-updates" % distro["codename"],
                                 "%s-security" % distro["codename"]]}
        packages = [_headers_package(distro, opts), "nvidia-driver", "firmware-misc-nonfree", "nvidia-smi"]
    else:
        packages = [_headers_package(distro, opts), package]
    expected = installed or branch
    if installed and source == "pinned" and driver_branch(installed) != branch:
        warnings.append("NVIDIA driver %s is loaded but %s is pinned: the new driver takes effect after a "
                        "reboot" % (installed, package))
        expected = branch
    caps = [g.get("compute_cap") for g in nv.get("gpus") or [] if g.get("compute_cap")]
    variant, cuda_warnings = choose_cuda_variant(expected, opts["torch_floor_cuda"], caps)
    warnings.extend(cuda_warnings)
    if detection.get("secure_boot"):
        if distro["id"] == "debian":
            warnings.append("Secure Boot is enabled: the DKMS-built nvidia module is unsigned for your firmware; "
                            "enroll the DKMS MOK key (mokutil --import /var/lib/dkms/mok.pub) at the next boot "
                            "or disable Secure Boot, otherwise the module will not load")
        else:
            warnings.append("Secure Boot is enabled: if %s builds its module with DKMS, enroll the MOK key "
                            "(mokutil --import /var/lib/shim-signed/mok/MOK.der) at the next boot or use the "
                            "Canonical-signed linux-modules-nvidia-%s-* packages" % (package, branch))
    names = sorted(set(d["name"] for d in detection.get("render_gpus") or [] if d.get("vendor") == "nvidia"))
    if len(names) > 1:
        warnings.append("mixed NVIDIA models (%s): ComfyUI uses the first CUDA device unless "
                        "CUDA_VISIBLE_DEVICES selects one" % ", ".join(names))
    if nv.get("nouveau_bound"):
        warnings.append("nouveau is driving the NVIDIA GPU now: it is blacklisted and a reboot is needed")
    result.update({
        "packages": packages,
        "apt_components": components,
        "blacklist_nouveau": opts["blacklist_nouveau"],
        "nvidia": {"driver_package": package, "driver_source": source, "driver_branch": branch,
                   "installed_driver_version": installed, "cuda_wheel": variant},
        "torch_variant": variant,
        "torch_index_url": TORCH_INDEX_BASE + variant,
        "runtime_check": "nvidia-smi",
    })


def _plan_amd(result, detection, distro, opts):
    warnings = result["warnings"]
    _check_rocm(opts, distro)
    version = opts["rocm_version"]
    release = ROCM_RELEASES[version]
    suite = distro["rocm_suite"]
    keyring = "%s/rocm.asc" % opts["keyring_dir"]
    amdgpu_url = "https://repo.radeon.com/amdgpu/%s/ubuntu" % version
    rocm_url = "https://repo.radeon.com/rocm/apt/%s" % version
    repos = [
        _repo("amdgpu", deb822("deb", amdgpu_url, suite, "main", keyring, "amd64"), ROCM_KEY_URL, keyring),
        _repo("rocm", deb822("deb", rocm_url, suite, "main", keyring, "amd64"), ROCM_KEY_URL, keyring),
    ]
    prefs = [{"name": "rocm", "path": "%s/visionsuit-rocm-pin-600" % PREFERENCES_DIR,
              "content": "Package: *\nPin: release o=repo.radeon.com\nPin-Priority: 600\n"}]
    packages = []
    if opts["amd_dkms"]:
        packages += [_headers_package(distro, opts), "amdgpu-dkms"]
        if detection.get("secure_boot"):
            warnings.append("Secure Boot is enabled: amdgpu-dkms builds an unsigned module; enroll the DKMS MOK "
                            "key at the next boot or set gpu_driver_amd_dkms: false to use the in-kernel amdgpu")
    packages += list(AMD_PACKAGES)
    if distro["id"] == "debian":
        warnings.append("ROCm on Debian 12 uses AMD's Ubuntu 22.04 (jammy) packages; AMD supports it for "
                        "Instinct accelerators and best-effort for Radeon")
    names = sorted(set(d["name"] for d in detection.get("render_gpus") or [] if d.get("vendor") == "amd"))
    if len(names) > 1:
        warnings.append("mixed AMD models (%s): ComfyUI uses the first HIP device unless HIP_VISIBLE_DEVICES "
                        "selects one" % ", ".join(names))
    result.update({
        "packages": packages,
        "apt_repositories": repos,
        "apt_preferences": prefs,
        "service_groups": list(AMD_GROUPS),
        "rocm": {"version": version, "amdgpu_repo_url": amdgpu_url, "rocm_repo_url": rocm_url, "suite": suite,
                 "installer_url": "https://repo.radeon.com/amdgpu-install/%s/ubuntu/%s/amdgpu-install_%s.%s-1_all.deb"
                 % (version, suite, version, release["build"]),
                 "keyring_url": ROCM_KEY_URL, "keyring_path": keyring},
        "torch_variant": release["torch"],
        "torch_index_url": TORCH_INDEX_BASE + release["torch"],
        "runtime_check": "rocminfo",
    })
