# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters on the MinIO endpoint: the library's one endpoint rule (plugins/module_utils/s3/endpoint.py) for
playbooks and roles. Documentation: minio_endpoint_error.yml beside this file."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.visionsuit.gpuworker.plugins.module_utils.errors import GpuWorkerError
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.s3.endpoint import parse_endpoint


def minio_endpoint_error(value, name="endpoint"):
    """'' when ``value`` is a valid S3 endpoint URL, else the one-line reason (naming ``name`` and the fix)."""
    try:
        parse_endpoint(value, field=name)
    except GpuWorkerError as err:
        return str(err)
    return ""


class FilterModule(object):
    def filters(self):
        return {"minio_endpoint_error": minio_endpoint_error}
