#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: minio_bucket
short_description: Ensure a bucket exists (or not) on MinIO or another S3-compatible store
version_added: "0.1.0"
description:
  - Creates the bucket O(name) when O(state=present) and it is missing; deletes it when O(state=absent).
  - A bucket that still holds objects is deleted only with O(force=true), which empties it first.
  - Talks S3 (Signature V4, path-style) with the collection's stdlib client; nothing needs to be installed on the
    managed node.
  - The connection comes from O(endpoint), O(access_key) and O(secret_key), or, when O(endpoint) is not given,
    from the node's C(/etc/comfyui/minio.env) (O(env_file)).
author:
  - VisionSuit contributors (@visionsuit)
options:
  name:
    description: Name of the bucket.
    type: str
    required: true
    aliases: [bucket]
  state:
    description: Whether the bucket should exist.
    type: str
    choices: [present, absent]
    default: present
  force:
    description:
      - With O(state=absent), delete all objects of the bucket first. Without it a non-empty bucket makes the
        task fail.
    type: bool
    default: false
extends_documentation_fragment:
  - visionsuit.gpuworker.minio
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reports whether the bucket would be created or deleted (and how many objects O(force) would delete).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Errors name the endpoint and bucket and say how to fix them (wrong keys, missing bucket, TLS); the secret key
    is never part of a message.
seealso:
  - module: visionsuit.gpuworker.minio_sync
"""

EXAMPLES = r"""
- name: Create the models bucket
  visionsuit.gpuworker.minio_bucket:
    name: visionsuit-checkpoints
    endpoint: http://192.168.1.10:9000
    access_key: "{{ minio_access_key }}"
    secret_key: "{{ minio_secret_key }}"

- name: Create the outputs bucket with the node's minio.env
  visionsuit.gpuworker.minio_bucket:
    name: visionsuit-outputs

- name: Remove a scratch bucket and everything in it
  visionsuit.gpuworker.minio_bucket:
    name: scratch
    state: absent
    force: true
"""

RETURN = r"""
bucket:
  description: Name of the bucket.
  returned: always
  type: str
  sample: visionsuit-checkpoints
existed:
  description: Whether the bucket existed before the task.
  returned: always
  type: bool
  sample: false
deleted_objects:
  description: Number of objects deleted (or, in check mode, that would be deleted) by O(force).
  returned: when O(state=absent)
  type: int
  sample: 0
endpoint:
  description: The S3 endpoint used.
  returned: always
  type: str
  sample: http://192.168.1.10:9000
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.visionsuit.gpuworker.plugins.module_utils.ansible_common import run_module  # noqa: E402
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.errors import GpuWorkerError  # noqa: E402
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.s3.env import (  # noqa: E402
    CONNECTION_ARGUMENT_SPEC,
    client_from_module_params,
)


def _run(module):
    params = module.params
    name = params["name"]
    client = client_from_module_params(params, retries=3)
    result = {"changed": False, "bucket": name, "endpoint": client.endpoint}
    existed = client.bucket_exists(name)
    result["existed"] = existed
    if params["state"] == "present":
        if not existed:
            if not module.check_mode:
                client.create_bucket(name)
            result["changed"] = True
        return result
    result["deleted_objects"] = 0
    if not existed:
        return result
    keys = [obj["key"] for obj in client.list_objects(name)]
    if keys and not params["force"]:
        raise GpuWorkerError("bucket '%s' on %s is not empty (%d objects)" % (name, client.endpoint, len(keys)),
                             field="force", hint="set force: true to delete its objects too")
    result["deleted_objects"] = len(keys)
    if not module.check_mode:
        if keys:
            client.delete_objects(name, keys)
        client.delete_bucket(name)
    result["changed"] = True
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True, aliases=["bucket"]),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            force=dict(type="bool", default=False),
            **CONNECTION_ARGUMENT_SPEC
        ),
        required_together=[["access_key", "secret_key"]],
        supports_check_mode=True,
    )
    run_module(module, _run)


if __name__ == "__main__":
    main()
