#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: gpu_plan
short_description: Decide the driver stack and PyTorch wheel index for a detected accelerator
version_added: "0.1.0"
description:
  - Pure computation over the output of M(visionsuit.gpuworker.gpu_facts) and the distribution facts
    (no probes, no changes) - which apt packages, apt repositories (deb822) and PyTorch wheel index a host needs.
  - "NVIDIA: the Ubuntu driver recommended by C(ubuntu-drivers) (or a pinned branch, or the one already installed),
    Debian's non-free C(nvidia-driver); the newest PyTorch CUDA wheel index the driver supports, never below the
    floor unless the driver is too old."
  - "AMD: the AMDGPU and ROCm repositories of the pinned ROCm release and the matching PyTorch ROCm wheels."
  - "No render GPU: CPU-only PyTorch wheels."
  - Bad overrides, an unsupported distribution or ROCm release fail with a message naming the override (as
    O(override_names) calls it, so the role variable for the C(gpu_driver) role) and the allowed values.
author:
  - VisionSuit contributors (@visionsuit)
options:
  detection:
    description: The C(gpu_worker) fact from M(visionsuit.gpuworker.gpu_facts); may be empty with O(validate_only).
    type: dict
    default: {}
  distribution:
    description: The distribution, as C(ansible_facts.distribution) (Ubuntu, Debian).
    type: str
    required: true
  distribution_version:
    description: The distribution version, as C(ansible_facts.distribution_version) (22.04, 24.04, 12.x).
    type: str
    required: true
  overrides:
    description:
      - The settings to apply, by key - vendor, nvidia_branch, rocm_version, amd_dkms, torch_index_url,
        torch_floor_cuda, torch_packages, blacklist_nouveau, keyring_dir, kernel, architecture.
    type: dict
    default: {}
  override_names:
    description:
      - What the caller calls each key of O(overrides) in error messages and warnings (the C(gpu_driver) role
        passes the names of its variables, e.g. C(gpu_driver_vendor) for C(vendor)); a key not given here is
        named as itself.
    type: dict
    default: {}
  validate_only:
    description: Only check the distribution and the overrides; return no plan.
    type: bool
    default: false
  emit_warnings:
    description: Also report the plan's warnings as Ansible warnings.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: The module never changes anything.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
seealso:
  - module: visionsuit.gpuworker.gpu_facts
"""

EXAMPLES = r"""
- name: Plan the driver stack
  visionsuit.gpuworker.gpu_plan:
    detection: "{{ ansible_facts['gpu_worker'] }}"
    distribution: "{{ ansible_facts['distribution'] }}"
    distribution_version: "{{ ansible_facts['distribution_version'] }}"
    overrides:
      vendor: auto
      rocm_version: "6.2"
      torch_floor_cuda: cu121
    override_names:
      vendor: my_gpu_vendor
  register: gpu_plan

- name: Show the PyTorch index
  ansible.builtin.debug:
    var: gpu_plan.plan.torch_index_url
"""

RETURN = r"""
plan:
  description: The install plan; absent with O(validate_only).
  returned: success and not validate_only
  type: dict
  contains:
    accelerator:
      description: nvidia, amd or cpu.
      type: str
      sample: nvidia
    packages:
      description: apt packages to install.
      type: list
      elements: str
      sample: [linux-headers-6.8.0-45-generic, nvidia-driver-570]
    apt_repositories:
      description: Repositories to add, each with C(name), C(path), deb822 C(content), C(keyring_url), C(keyring_path).
      type: list
      elements: dict
    apt_preferences:
      description: apt pinning files (C(path), C(content)).
      type: list
      elements: dict
    apt_components:
      description: Debian components to enable in the existing sources (C(components), C(suites)); null otherwise.
      type: dict
    torch_index_url:
      description: PyTorch wheel index.
      type: str
      sample: https://download.pytorch.org/whl/cu128
    torch_variant:
      description: Last path element of the index (cu128, rocm6.2, cpu).
      type: str
    torch_packages:
      description: PyTorch packages to install from the index.
      type: list
      elements: str
    reboot_required:
      description: The runtime (nvidia-smi / rocminfo) does not see the GPU.
      type: bool
    warnings:
      description: Things the operator should know.
      type: list
      elements: str
distribution:
  description: The resolved distribution name.
  returned: always
  type: str
  sample: Ubuntu 22.04
cuda_wheels:
  description: The PyTorch CUDA wheel table (variant, cuda, min_driver, min_compute_capability, index_url).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.visionsuit.gpuworker.plugins.module_utils.ansible_common import run_module  # noqa: E402
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.errors import GpuWorkerError  # noqa: E402
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.gpu.plan import (  # noqa: E402
    OVERRIDE_KEYS,
    cuda_table,
    plan,
    validate,
)


def main_func(module):
    params = module.params
    names = params["override_names"]
    unknown = sorted(set(names) - set(OVERRIDE_KEYS))
    if unknown:
        raise GpuWorkerError("unknown key(s): %s" % ", ".join(unknown), field="override_names",
                             hint="the keys are those of overrides: %s" % ", ".join(OVERRIDE_KEYS))
    distro, _opts = validate(params["distribution"], params["distribution_version"], params["overrides"], names)
    result = {"changed": False, "distribution": distro["name"], "cuda_wheels": cuda_table()}
    if params["validate_only"]:
        return result
    result["plan"] = plan(params["detection"], params["distribution"], params["distribution_version"],
                          params["overrides"], names)
    if params["emit_warnings"]:
        for warning in result["plan"]["warnings"]:
            module.warn(warning)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            detection=dict(type="dict", default={}),
            distribution=dict(type="str", required=True),
            distribution_version=dict(type="str", required=True),
            overrides=dict(type="dict", default={}),
            override_names=dict(type="dict", default={}),
            validate_only=dict(type="bool", default=False),
            emit_warnings=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    run_module(module, main_func)


if __name__ == "__main__":
    main()
