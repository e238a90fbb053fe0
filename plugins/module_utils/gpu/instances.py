# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How many ComfyUI instances a host runs, and on which GPU each one runs.

Pure: :func:`plan_instances` takes the render GPUs of a detection (``render_gpus`` of the ``gpu_worker`` fact,
:mod:`.detect`) and the accelerator the host is set up for, and returns one record per instance. Roles reach
it through the filter ``visionsuit.gpuworker.comfyui_instance_plan``.

Rules:

* ``instances`` is ``auto`` (one instance per render GPU of the accelerator's vendor that has an index; one on a
  CPU host or when no GPU has one), a number N (N >= 1; at most the number of such GPUs on a GPU host, any on a
  CPU host - CPU instances have no device to share, which is what the test containers run), or a list of GPU
  indexes (each one a GPU of the host, no duplicates; instance *i* runs on the *i*-th of the list).
* One instance keeps today's single service exactly: unit ``comfyui.service``, port ``base_port``, temp and user
  directories ``<install_dir>/temp`` and ``<install_dir>/user``, and no device variable - it sees every GPU, as
  before - unless a list pins it to one GPU.
* Several instances: instance *i* is ``comfyui@<i>.service`` on port ``base_port + i`` with its own
  ``<install_dir>/instances/<i>/temp`` and ``.../user`` (ComfyUI empties its temp directory at start, so
  instances must not share one; ``--temp-directory`` takes the parent, ``instance_dir``), pinned to one GPU.
* Pinning: NVIDIA ``CUDA_VISIBLE_DEVICES=<index>`` with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (the index is
  nvidia-smi's, which is PCI bus order; CUDA's default order, fastest first, can differ on mixed models); AMD
  ``HIP_VISIBLE_DEVICES=<index>`` (the HIP order rocminfo lists); CPU nothing.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ..errors import GpuWorkerError

ACCELERATORS = ("nvidia", "amd", "cpu")
MAX_PORT = 65535
#: what errors call the inputs: the comfyui role's variables (a caller may pass its own names)
FIELD_NAMES = {"instances": "comfyui_instances", "base_port": "comfyui_port", "install_dir": "comfyui_install_dir",
               "accelerator": "accelerator"}
ALLOWED = "auto, a number of instances (1 or more), or a list of GPU indexes"


def _int(value):
    """An int from an int or a string of digits; None otherwise (booleans are not numbers here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.match(r"^\s*-?\d+\s*$", value):
        return int(value)
    return None


def usable_gpus(gpus, accelerator):
    """The GPUs instances can be pinned to: render GPUs of the accelerator's vendor with an index, by index."""
    found = {}
    for gpu in gpus or []:
        if not isinstance(gpu, dict) or gpu.get("render_capable") is False:
            continue
        if gpu.get("vendor") not in (None, accelerator):
            continue
        index = _int(gpu.get("index"))
        if index is not None and index >= 0 and index not in found:
            found[index] = gpu
    return [found[i] for i in sorted(found)]


def _env(accelerator, gpu_index):
    if gpu_index is None or accelerator == "cpu":
        return {}
    if accelerator == "nvidia":
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(gpu_index)}
    return {"HIP_VISIBLE_DEVICES": str(gpu_index)}


def _choose(instances, indexes, accelerator, field):
    """The GPU of each instance (None: not pinned) from the ``instances`` setting; raises on bad input."""
    hint = "allowed: %s" % ALLOWED
    where = ("this host's %s GPUs: %s" % (accelerator, ", ".join(str(i) for i in indexes)) if indexes
             else "this host has no %s GPU with an index" % accelerator if accelerator != "cpu"
             else "this is a CPU host")
    if isinstance(instances, str) and instances.strip().lower() == "auto":
        return [None] if len(indexes) < 2 else list(indexes)
    if isinstance(instances, (list, tuple)):
        if not instances:
            raise GpuWorkerError("the list of GPU indexes is empty", field=field, hint=hint)
        chosen = []
        for item in instances:
            index = _int(item)
            if index is None:
                raise GpuWorkerError("%r is not a GPU index" % (item,), field=field, hint=hint)
            if index not in indexes:
                raise GpuWorkerError("GPU %d does not exist (%s)" % (index, where), field=field, hint=hint)
            if index in chosen:
                raise GpuWorkerError("GPU %d is listed twice" % index, field=field, hint=hint)
            chosen.append(index)
        return chosen
    count = _int(instances)
    if count is None:
        raise GpuWorkerError("%r is not a valid value" % (instances,), field=field, hint=hint)
    if count < 1:
        raise GpuWorkerError("%d instances: at least 1 is needed" % count, field=field, hint=hint)
    if count == 1:
        return [None]
    if accelerator == "cpu":
        return [None] * count
    if count > len(indexes):
        raise GpuWorkerError("%d instances but only %d GPU(s) to run them on (%s)" % (count, len(indexes), where),
                             field=field, hint=hint)
    return list(indexes[:count])


def plan_instances(gpus, accelerator, instances="auto", base_port=8188, install_dir="/opt/comfyui", names=None):
    """The ComfyUI instances of a host (rules in the module docstring).

    :param gpus: the render GPUs of a detection (``render_gpus``); records of another vendor, without an index
        or with ``render_capable`` false are ignored.
    :param accelerator: ``nvidia``, ``amd`` or ``cpu`` - what the host is set up for.
    :param instances: ``auto``, a number, or a list of GPU indexes.
    :param base_port: the port of instance 0 (the single instance's port).
    :param install_dir: the ComfyUI checkout.
    :param names: what errors call ``instances``, ``base_port``, ``install_dir`` and ``accelerator``
        (:data:`FIELD_NAMES` by default).
    :returns: ``[{index, gpu, unit, port, env, instance_dir, temp_dir, user_dir}]``, ``index`` 0, 1, ...
    :raises GpuWorkerError: bad input, naming the field and the allowed values.
    """
    fields = dict(FIELD_NAMES)
    fields.update(names or {})
    if accelerator not in ACCELERATORS:
        raise GpuWorkerError("%r is not a known value" % (accelerator,), field=fields["accelerator"],
                             hint="allowed: %s" % ", ".join(ACCELERATORS))
    port = _int(base_port)
    if port is None or not 1 <= port <= MAX_PORT:
        raise GpuWorkerError("%r is not a TCP port" % (base_port,), field=fields["base_port"],
                             hint="allowed: 1 to %d" % MAX_PORT)
    if not isinstance(install_dir, str) or not install_dir.startswith("/") or install_dir.rstrip("/") == "":
        raise GpuWorkerError("%r is not an absolute directory" % (install_dir,), field=fields["install_dir"])
    install_dir = install_dir.rstrip("/")

    indexes = [int(g["index"]) for g in usable_gpus(gpus, accelerator)] if accelerator != "cpu" else []
    chosen = _choose(instances, indexes, accelerator, fields["instances"])
    last = port + len(chosen) - 1
    if last > MAX_PORT:
        raise GpuWorkerError("%d instances from port %d need ports up to %d, above %d" % (
            len(chosen), port, last, MAX_PORT), field=fields["instances"],
            hint="lower %s or %s" % (fields["base_port"], fields["instances"]))

    plan = []
    single = len(chosen) == 1
    for number, gpu in enumerate(chosen):
        base = install_dir if single else "%s/instances/%d" % (install_dir, number)
        plan.append({
            "index": number,
            "gpu": gpu,
            "unit": "comfyui.service" if single else "comfyui@%d.service" % number,
            "port": port + number,
            "env": _env(accelerator, gpu),
            "instance_dir": base,
            "temp_dir": base + "/temp",
            "user_dir": base + "/user",
        })
    return plan
