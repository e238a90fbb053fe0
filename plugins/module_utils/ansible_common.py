# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Glue between the collection's library code and AnsibleModule (the only file here importing ansible)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .errors import GpuWorkerError


def run_module(module, func):
    """Call ``func(module)`` which returns the result dict; turn GpuWorkerError into fail_json."""
    try:
        result = func(module)
    except GpuWorkerError as err:
        extra = dict(err.details)
        if err.field:
            extra["field"] = err.field
        module.fail_json(msg=str(err), **extra)
    module.exit_json(**result)
