# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The distributions this collection supports: the one table.

Everything else that lists distributions follows it, and ``tests/unit/test_distros.py`` checks that they do:
the ``galaxy_info.platforms`` of every role (``roles/*/meta/main.yml``, see :func:`galaxy_platforms`) and the
per-distribution variables of the gpu_driver role (``roles/gpu_driver/vars/<Distribution>-<major>.yml``, see
:func:`vars_name`). To support a distribution, add it here, then make those files agree.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import GpuWorkerError

#: (``ansible_facts.distribution`` in lower case, major version) -> ``distribution`` (as Ansible and Galaxy spell
#: it), ``name``, ``codename`` (the apt suite, and the Galaxy platform version), ``rocm_suite`` (the suite of AMD's
#: repositories), ``nvidia`` (where the NVIDIA driver comes from), ``nvidia_default_branch``, ``min_rocm``.
DISTROS = {
    ("ubuntu", "22"): {"distribution": "Ubuntu", "name": "Ubuntu 22.04", "codename": "jammy", "rocm_suite": "jammy",
                       "nvidia": "ubuntu-drivers", "nvidia_default_branch": "570", "min_rocm": "5.6"},
    ("ubuntu", "24"): {"distribution": "Ubuntu", "name": "Ubuntu 24.04", "codename": "noble", "rocm_suite": "noble",
                       "nvidia": "ubuntu-drivers", "nvidia_default_branch": "570", "min_rocm": "6.2"},
    # AMD documents Debian 12 with its Ubuntu 22.04 (jammy) repositories.
    ("debian", "12"): {"distribution": "Debian", "name": "Debian 12", "codename": "bookworm", "rocm_suite": "jammy",
                       "nvidia": "debian-non-free", "nvidia_default_branch": "535", "min_rocm": "6.2"},
}
SUPPORTED_DISTROS = ", ".join(d["name"] for d in DISTROS.values())


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


def galaxy_platforms():
    """The ``galaxy_info.platforms`` of a role that runs on every supported distribution."""
    versions = {}
    for entry in DISTROS.values():
        versions.setdefault(entry["distribution"], []).append(entry["codename"])
    return [{"name": name, "versions": versions[name]} for name in sorted(versions)]


def vars_name(key):
    """``('ubuntu', '22')`` -> ``'Ubuntu-22'``: the role vars file a distribution loads (``<distribution>-<major>``)."""
    return "%s-%s" % (DISTROS[key]["distribution"], key[1])
