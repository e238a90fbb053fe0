# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The filter comfyui_instance_plan: the library's instance planning (plugins/module_utils/gpu/instances.py) for
roles. Documentation: comfyui_instance_plan.yml beside this file."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.visionsuit.gpuworker.plugins.module_utils.errors import GpuWorkerError
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.gpu.instances import plan_instances


def _accelerator_of(gpus):
    vendors = set(g.get("vendor") for g in gpus if isinstance(g, dict) and g.get("render_capable", True))
    return "nvidia" if "nvidia" in vendors else "amd" if "amd" in vendors else "cpu"


def comfyui_instance_plan(detection, instances="auto", base_port=8188, install_dir="/opt/comfyui", accelerator=None,
                          names=None):
    """The ComfyUI instances for a gpu_facts detection (or a list of its render GPUs)."""
    if detection is None or detection == "":
        detection = {}
    if isinstance(detection, dict):
        gpus = detection.get("render_gpus") or []
        accelerator = accelerator or detection.get("accelerator") or "cpu"
    elif isinstance(detection, (list, tuple)):
        gpus = list(detection)
        accelerator = accelerator or _accelerator_of(gpus)
    else:
        raise AnsibleFilterError("comfyui_instance_plan: the input must be the gpu_worker fact of "
                                 "visionsuit.gpuworker.gpu_facts or its render_gpus list")
    try:
        return plan_instances(gpus, accelerator, instances=instances, base_port=base_port, install_dir=install_dir,
                              names=names)
    except GpuWorkerError as err:
        raise AnsibleFilterError(str(err)) from None


class FilterModule(object):
    def filters(self):
        return {"comfyui_instance_plan": comfyui_instance_plan}
