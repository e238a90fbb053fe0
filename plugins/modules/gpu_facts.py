#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Detect the accelerators of a host (NVIDIA, AMD, none) without changing anything
version_added: "1.0.0"
description:
  - Reads the PCI display functions from sysfs (C(/sys/bus/pci/devices/*)) and cross-checks them with
    C(lspci -nn) when it is installed.
  - Classifies each function as a render GPU (NVIDIA CUDA, AMD ROCm) or not (server BMC VGA such as ASPEED or
    Matrox, Intel integrated graphics, AMD APU graphics, hypervisor display adapters).
  - Runs C(nvidia-smi), C(rocminfo), C(mokutil --sb-state), C(ubuntu-drivers devices) and C(dpkg-query) when
    they are present, to report the driver state, Secure Boot and whether a reboot is pending.
  - Returns the result as the fact C(gpu_worker), the input of M(visionsuit.gpuworker.gpu_plan) and of the
    C(visionsuit.gpuworker.gpu_driver) role.
  - Read-only; it runs the same way in check mode.
author:
  - VisionSuit contributors (@visionsuit)
options:
  sysfs_root:
    description:
      - Root of the sysfs tree to read, normally C(/sys). Tests point it at a recorded tree.
      - In a recorded tree C(driver) may be a plain file holding the driver name instead of a symlink.
    type: path
    default: /sys
  run_commands:
    description:
      - Run C(lspci), C(nvidia-smi), C(rocminfo), C(mokutil), C(ubuntu-drivers) and C(dpkg-query) when they are
        installed. With C(false) only sysfs is read.
    type: bool
    default: true
  reboot_required_path:
    description: File whose existence means the distribution asks for a reboot.
    type: path
    default: /var/run/reboot-required
attributes:
  check_mode:
    support: full
    description: The module never changes anything.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
  facts:
    support: full
    description: Sets the C(gpu_worker) fact.
notes:
  - C(ubuntu-drivers devices) is only run when an NVIDIA GPU was found; it is read-only.
seealso:
  - module: visionsuit.gpuworker.gpu_plan
"""

EXAMPLES = r"""
- name: Detect the accelerators
  visionsuit.gpuworker.gpu_facts:

- name: Show what was found
  ansible.builtin.debug:
    msg: >-
      {{ ansible_facts['gpu_worker']['accelerator'] }}:
      {{ ansible_facts['gpu_worker']['render_gpus'] | map(attribute='name') | join(', ') }}

- name: Read a recorded sysfs tree only (tests)
  visionsuit.gpuworker.gpu_facts:
    sysfs_root: /tmp/fixtures/h100/sys
    run_commands: false
"""

RETURN = r"""
ansible_facts:
  description: Facts set by the module.
  returned: always
  type: dict
  contains:
    gpu_worker:
      description: The detection.
      returned: always
      type: dict
      contains:
        accelerator:
          description: The accelerator found, C(nvidia) preferred over C(amd) when both are present; C(cpu) if none.
          type: str
          sample: nvidia
        vendors:
          description: Vendors of the render GPUs found.
          type: list
          elements: str
          sample: [nvidia]
        devices:
          description:
            - Every PCI display function (class 0300, 0302, 0380) with C(address), C(vendor_id), C(device_id),
              C(class_id), C(vendor), C(kind) (discrete, integrated, bmc, virtual, other), C(render_capable),
              C(reason), C(driver), C(name), C(vram_bytes), C(source).
          type: list
          elements: dict
        render_gpus:
          description: The subset of C(devices) that can run CUDA/ROCm.
          type: list
          elements: dict
        render_gpu_count:
          description: Number of render GPUs.
          type: int
          sample: 1
        nvidia:
          description:
            - C(smi_present), C(smi_ok), C(gpus) (name, driver_version, memory_total_mib, compute_cap),
              C(driver_version), C(module_loaded), C(installed_packages), C(nouveau_bound).
          type: dict
        amd:
          description:
            - C(rocminfo_present), C(rocminfo_ok), C(gpus) (gfx, name, compute_units), C(kfd_loaded),
              C(module_loaded).
          type: dict
        secure_boot:
          description: Secure Boot state from C(mokutil --sb-state); null when unknown.
          type: bool
        reboot_pending:
          description: A reboot is pending (reboot-required file, or a driver installed but not usable).
          type: bool
        reboot_pending_reasons:
          description: Why a reboot is pending.
          type: list
          elements: str
        ubuntu_drivers:
          description:
            - C(recommended) driver package and all C(packages) listed by C(ubuntu-drivers devices); null when
              not run.
          type: dict
        tools:
          description: Which helper commands were found.
          type: dict
        warnings:
          description: Inconsistencies noticed (sysfs vs lspci, GPUs bound to vfio-pci).
          type: list
          elements: str
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.visionsuit.gpuworker.plugins.module_utils.ansible_common import run_module  # noqa: E402
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.gpu.detect import detect, parse_sysfs  # noqa: E402

NVIDIA_QUERY = "--query-gpu=name,driver_version,memory.total,compute_cap"
NVIDIA_QUERY_OLD = "--query-gpu=name,driver_version,memory.total"


def gather(sysfs_root, run, reboot_required_path):
    """Run the probes through ``run(tool, args) -> (rc, stdout) or None`` and build the detection."""
    texts = {}
    tools = {}

    def probe(key, tool, args):
        result = run(tool, args)
        tools[tool] = result is not None
        if result is not None and result[0] == 0:
            texts[key] = result[1]
        return result

    probe("lspci", "lspci", ["-nn", "-D"])
    smi = probe("nvidia_smi", "nvidia-smi", [NVIDIA_QUERY, "--format=csv,noheader"])
    if smi is not None and smi[0] != 0 and "Field" in (smi[1] or ""):
        probe("nvidia_smi", "nvidia-smi", [NVIDIA_QUERY_OLD, "--format=csv,noheader"])
    probe("rocminfo", "rocminfo", [])
    probe("mokutil", "mokutil", ["--sb-state"])
    probe("dpkg", "dpkg-query", ["-W", "-f=${Package}\\t${Status}\\n", "nvidia-driver*"])
    if any(d["vendor"] == "nvidia" for d in parse_sysfs(sysfs_root)) or "NVIDIA" in texts.get("lspci", ""):
        probe("ubuntu_drivers", "ubuntu-drivers", ["devices"])
    return detect(sysfs_root=sysfs_root, lspci_text=texts.get("lspci"), nvidia_smi_text=texts.get("nvidia_smi"),
                  rocminfo_text=texts.get("rocminfo"), mokutil_text=texts.get("mokutil"),
                  ubuntu_drivers_text=texts.get("ubuntu_drivers"), dpkg_text=texts.get("dpkg"),
                  reboot_required_file=os.path.exists(reboot_required_path), tools=tools)


def main_func(module):
    params = module.params

    def run(tool, args):
        if not params["run_commands"]:
            return None
        path = module.get_bin_path(tool)
        if not path:
            return None
        rc, out, err = module.run_command([path] + list(args), environ_update={"LC_ALL": "C"})
        # mokutil prints its state on stderr on some versions; keep both
        return rc, (out or "") + (err or "" if tool == "mokutil" else "")

    facts = gather(params["sysfs_root"], run, params["reboot_required_path"])
    return {"changed": False, "ansible_facts": {"gpu_worker": facts}}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sysfs_root=dict(type="path", default="/sys"),
            run_commands=dict(type="bool", default=True),
            reboot_required_path=dict(type="path", default="/var/run/reboot-required"),
        ),
        supports_check_mode=True,
    )
    run_module(module, main_func)


if __name__ == "__main__":
    main()
