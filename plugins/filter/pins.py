# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters for the comfyui role's pinned installs (plugins/module_utils/comfyui/pins.py): pip_constraints merges
the shipped (or operator's) constraint lines with the operator's overrides; pip_pin turns package names into
pinned requirement specs. Documentation: pip_constraints.yml and pip_pin.yml beside this file."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.visionsuit.gpuworker.plugins.module_utils.comfyui import pins
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.errors import GpuWorkerError


def _lines(value, name):
    if value is None:
        return []
    if isinstance(value, str):
        return value.splitlines()
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise AnsibleFilterError("%s: must be a list of requirement lines" % name)


def pip_constraints(base, overrides=None, name="comfyui_pip_constraints"):
    """``base`` constraint lines with every package named in ``overrides`` replaced by the override lines."""
    try:
        return pins.merge(_lines(base, "constraints"), _lines(overrides, name), field=name)
    except GpuWorkerError as err:
        raise AnsibleFilterError(str(err)) from None


def pip_pin(names, constraints=None):
    """``['torch']`` -> ``['torch==2.8.0']`` when ``constraints`` pin torch with ``==``; other names unchanged."""
    try:
        return pins.pin(_lines(names, "names"), _lines(constraints, "constraints"))
    except GpuWorkerError as err:
        raise AnsibleFilterError(str(err)) from None


class FilterModule(object):
    def filters(self):
        return {"pip_constraints": pip_constraints, "pip_pin": pip_pin}
