# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: node_wheel
author:
  - VisionSuit contributors (@visionsuit)
version_added: 0.1.0
short_description: Build the wheel of one of the collection's node packages on the controller
description:
  - Builds the wheel of a Python package that this collection ships for its nodes and returns the wheel's path on
    the controller, to be copied to a node and installed with C(pip install --no-index).
  - C(visionsuit-gpuworker) is the shared library (S3 sync engine, ComfyUI client, GPU detection, node commands),
    built from the collection's C(plugins/module_utils) and C(pyproject.toml); C(visionsuit-gpu-agent) is the GPU
    agent, built from C(agent/pyproject.toml). Both carry the collection's version.
  - Standard library only (Python 3.11+ on the controller, or the C(tomli) package); no network. The wheel is
    reproducible, so an unchanged collection gives an unchanged file and the copy to the node reports no change.
  - Wheels are kept in C($XDG_CACHE_HOME/visionsuit-gpuworker/wheels) (default C(~/.cache)), one folder per content.
options:
  _terms:
    description: Distribution names, C(visionsuit-gpuworker) or C(visionsuit-gpu-agent).
    required: true
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Copy the library wheel to the node
  ansible.builtin.copy:
    src: "{{ lookup('visionsuit.gpuworker.node_wheel', 'visionsuit-gpuworker') }}"
    dest: /opt/visionsuit-gpuworker/wheels/
    mode: "0644"
"""

RETURN = r"""
_raw:
  description: The path of each wheel on the controller, in the order of the terms.
  type: list
  elements: path
"""

import hashlib  # noqa: E402
import os  # noqa: E402

from ansible.errors import AnsibleLookupError  # noqa: E402
from ansible.plugins.lookup import LookupBase  # noqa: E402

from ansible_collections.visionsuit.gpuworker.plugins.plugin_utils.wheel import (  # noqa: E402
    WheelError,
    build_wheel,
    load_project,
    wheel_bytes,
    wheel_filename,
)

# Distribution name -> project folder, relative to the collection root.
PROJECTS = {"visionsuit-gpuworker": ".", "visionsuit-gpu-agent": "agent"}
COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "visionsuit-gpuworker", "wheels")


def wheel_path(name, root=COLLECTION_ROOT, cache=None):
    if name not in PROJECTS:
        raise WheelError("unknown node package %r; one of: %s" % (name, ", ".join(sorted(PROJECTS))))
    project = load_project(os.path.join(root, PROJECTS[name]))
    if project["name"] != name:
        raise WheelError("%s/pyproject.toml names %r, expected %r" % (PROJECTS[name], project["name"], name))
    digest = hashlib.sha256(wheel_bytes(project)).hexdigest()[:16]
    folder = os.path.join(cache or cache_dir(), digest)
    path = os.path.join(folder, wheel_filename(project))
    if not os.path.isfile(path):
        path = build_wheel(project["dir"], folder)
    return path


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        try:
            return [wheel_path(str(term)) for term in terms]
        except (WheelError, OSError) as err:
            raise AnsibleLookupError("visionsuit.gpuworker.node_wheel: %s" % err)
