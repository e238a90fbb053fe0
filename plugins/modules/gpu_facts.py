#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Detect the accelerators of a host (NVIDIA, AMD, none) without changing anything
version_added: "0.1.0"
description:
  - Reads the PCI display functions from sysfs (C(/sys/bus/pci/devices/*)) and cross-checks them with
    C(lspci -nn) when it is installed.
  - Classifies each function as a render GPU (NVIDIA CUDA, AMD ROCm) or not (server BMC VGA such as ASPEED or
    Matrox, Intel integrated graphics, AMD APU graphics, hypervisor display adapters).
  - Runs C(nvidia-smi), C(rocminfo), C(mokutil --sb-state), C(ubuntu-drivers devices) and C(dpkg-query) when
    they are present, to report the driver state, Secure Boot and whether a reboot is pending.
  - Numbers every render GPU as its driver does - the C(index) that C(CUDA_VISIBLE_DEVICES) (with
    C(CUDA_DEVICE_ORDER=PCI_BUS_ID)) or C(HIP_VISIBLE_DEVICES) selects - and reports its PCI address, model,
    memory and NUMA node. NVIDIA - the index C(nvidia-smi --query-gpu=index,pci.bus_id,name,memory.total) gives
    each bus id (asked only of a working C(nvidia-smi)); AMD - the GPU's position among the GPU agents of
    C(rocminfo), matched by C(BDFID); without that runtime, the position in PCI bus order (C(index_source)
    C(pci-order), a prediction). GPUs bound to C(vfio-pci) get no index.
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

- name: Show the GPUs by the driver's numbering
  ansible.builtin.debug:
    msg: "GPU {{ item['index'] }}: {{ item['model'] }} at {{ item['pci_address'] }}, NUMA node {{ item['numa_node'] }}"
  loop: "{{ ansible_facts['gpu_worker']['render_gpus'] | selectattr('index', 'number') | sort(attribute='index') }}"

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
              C(reason), C(driver), C(name), C(vram_bytes), C(source), and the keys described under
              C(render_gpus) (null where they do not apply).
            - Display-only devices (server BMC VGA such as ASPEED or Matrox, Intel or AMD integrated graphics,
              hypervisor adapters) are the ones with C(render_capable) false; they never get an C(index).
          type: list
          elements: dict
        render_gpus:
          description:
            - The subset of C(devices) that can run CUDA/ROCm, in PCI address order, each with the keys of
              C(devices) and
            - C(index) - the driver's number of the GPU (see the description); null for a GPU the running driver
              does not show (C(vfio-pci), missing from C(nvidia-smi)/C(rocminfo)).
            - C(index_source) - C(nvidia-smi), C(rocminfo) or C(pci-order) (predicted; no runtime yet).
            - C(pci_address) - the PCI address as sysfs writes it (C(0000:1b:00.0)), the same as C(address).
            - C(model) - the name the runtime reports (C(NVIDIA H100 80GB HBM3), C(AMD Radeon PRO W7900)), else
              C(name).
            - C(memory_mib) - memory in MiB, from C(nvidia-smi) (C(memory.total)) or amdgpu's
              C(mem_info_vram_total); null when unknown.
            - C(numa_node) - the NUMA node of the device (sysfs C(numa_node)); null when the platform gives none
              (C(-1)).
          type: list
          elements: dict
          sample:
            - address: "0000:1b:00.0"
              pci_address: "0000:1b:00.0"
              vendor: nvidia
              kind: discrete
              render_capable: true
              driver: nvidia
              name: H100 SXM5 80GB
              index: 0
              index_source: nvidia-smi
              model: NVIDIA H100 80GB HBM3
              memory_mib: 81559
              numa_node: 0
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
          description:
            - Inconsistencies noticed (sysfs vs lspci, GPUs bound to vfio-pci, a render GPU the runtime does not
              list or a GPU the runtime lists that the PCI bus does not show).
          type: list
          elements: str
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.visionsuit.gpuworker.plugins.module_utils.ansible_common import run_module  # noqa: E402
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.gpu.detect import (  # noqa: E402
    detect,
    parse_nvidia_smi,
    parse_sysfs,
)

NVIDIA_QUERY = "--query-gpu=name,driver_version,memory.total,compute_cap"
NVIDIA_QUERY_OLD = "--query-gpu=name,driver_version,memory.total"
#: the numbering: nvidia-smi's index of each GPU by PCI bus id (see gpu/detect.py, "GPU numbering")
NVIDIA_INDEX_QUERY = "--query-gpu=index,pci.bus_id,name,memory.total"


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
    if parse_nvidia_smi(texts.get("nvidia_smi")):  # only ask a working nvidia-smi for the numbering
        probe("nvidia_smi_gpus", "nvidia-smi", [NVIDIA_INDEX_QUERY, "--format=csv,noheader,nounits"])
    probe("rocminfo", "rocminfo", [])
    probe("mokutil", "mokutil", ["--sb-state"])
    probe("dpkg", "dpkg-query", ["-W", "-f=${Package}\\t${Status}\\n", "nvidia-driver*"])
    if any(d["vendor"] == "nvidia" for d in parse_sysfs(sysfs_root)) or "NVIDIA" in texts.get("lspci", ""):
        probe("ubuntu_drivers", "ubuntu-drivers", ["devices"])
    return detect(sysfs_root=sysfs_root, lspci_text=texts.get("lspci"), nvidia_smi_text=texts.get("nvidia_smi"),
                  rocminfo_text=texts.get("rocminfo"), mokutil_text=texts.get("mokutil"),
                  ubuntu_drivers_text=texts.get("ubuntu_drivers"), dpkg_text=texts.get("dpkg"),
                  nvidia_smi_gpus_text=texts.get("nvidia_smi_gpus"),
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
