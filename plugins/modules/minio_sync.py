#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: minio_sync
short_description: Mirror a MinIO/S3 bucket folder to a directory on the node, or a directory to a bucket
version_added: "0.1.0"
description:
  - With O(direction=download), copies the objects under O(bucket)/O(prefix) into O(path), keeping sub-folders;
    with O(direction=upload), copies the files under O(path) to O(bucket)/O(prefix).
  - Unchanged files are recognised from one bucket listing (a state file C(.visionsuit-sync.json) in O(path)
    records size, mtime and ETag; without it the local MD5 or multipart ETag is compared), so a repeated run issues
    no other request and reports C(changed=false).
  - Downloads run in parallel (O(workers)); large objects are fetched as ranged parts. Every downloaded byte is
    verified (S3 checksum, MD5 or multipart ETag, and size) before the file is atomically renamed from a hidden
    temp name to its final name. An interrupted download resumes on the next run when the object is unchanged.
  - Object keys that would escape O(path) (C(..) segments, absolute paths, NUL) make the task fail before
    anything is transferred.
  - The connection comes from O(endpoint), O(access_key) and O(secret_key), or, when O(endpoint) is not given,
    from the node's C(/etc/comfyui/minio.env) (O(env_file)).
author:
  - VisionSuit contributors (@visionsuit)
options:
  direction:
    description: V(download) copies bucket -> O(path), V(upload) copies O(path) -> bucket.
    type: str
    choices: [download, upload]
    default: download
  bucket:
    description: Name of the bucket.
    type: str
    required: true
  prefix:
    description: Folder inside the bucket (for example V(sdxl)); empty means the whole bucket.
    type: str
    default: ""
  path:
    description: Local directory (created for downloads when missing).
    type: path
    required: true
  delete:
    description:
      - Download - delete local files whose object left the bucket. Only files this sync placed (recorded in its
        state file) are deleted, never files put there by other means, temp or state files.
      - Upload - delete objects under O(prefix) whose local file is gone.
    type: bool
    default: false
  include:
    description: Only files whose path relative to O(path) or whose name matches one of these globs.
    type: list
    elements: str
    default: []
  exclude:
    description: Skip files whose relative path or name matches one of these globs.
    type: list
    elements: str
    default: []
  workers:
    description: Parallel transfers.
    type: int
    default: 4
  multipart_threshold:
    description: Objects larger than this many bytes are transferred in parts (ranged GET / multipart upload).
    type: int
    default: 67108864
  part_size:
    description: Size in bytes of a ranged GET part or upload part (uploads use at least 5 MiB).
    type: int
    default: 16777216
  owner:
    description: User that should own downloaded files and created folders (for example the ComfyUI service user).
    type: str
  group:
    description: Group that should own downloaded files and created folders.
    type: str
  original_filename:
    description: For uploads, record each file's name in the C(x-amz-meta-original-filename) metadata.
    type: bool
    default: true
extends_documentation_fragment:
  - visionsuit.gpuworker.minio
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Lists exactly which files would be transferred or deleted (RV(plan), RV(transferred)) and moves nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: The diff shows the file list of the target side (O(path) for downloads, the bucket for uploads)
      before and after.
notes:
  - Errors name the endpoint, bucket or key and say how to fix them; the secret key is never part of a message.
  - An integrity failure removes the partial download and fails the task; nothing is left under the final name.
seealso:
  - module: visionsuit.gpuworker.minio_bucket
"""

EXAMPLES = r"""
- name: Place the checkpoints on the node, owned by the ComfyUI user
  visionsuit.gpuworker.minio_sync:
    bucket: visionsuit-checkpoints
    prefix: sdxl
    path: /opt/comfyui/models/checkpoints
    include: ["*.safetensors"]
    owner: comfyui
    group: comfyui

- name: Upload the renders with explicit credentials
  visionsuit.gpuworker.minio_sync:
    direction: upload
    bucket: visionsuit-outputs
    path: /opt/comfyui/output
    endpoint: http://192.168.1.10:9000
    access_key: "{{ minio_access_key }}"
    secret_key: "{{ minio_secret_key }}"

- name: Show what a mirror with deletion would do
  visionsuit.gpuworker.minio_sync:
    bucket: visionsuit-loras
    path: /opt/comfyui/models/loras
    delete: true
  check_mode: true
  diff: true
"""

RETURN = r"""
files:
  description: Number of files transferred (in check mode, that would be transferred).
  returned: always
  type: int
  sample: 2
bytes:
  description: Bytes transferred (in check mode, that would be transferred).
  returned: always
  type: int
  sample: 6938041344
unchanged:
  description:
    - Number of files already up to date (the engine's C(skipped) count; renamed because Ansible reserves
      C(skipped) for skipped tasks).
  returned: always
  type: int
  sample: 14
deleted:
  description: Number of files (download) or objects (upload) deleted, or that would be deleted.
  returned: always
  type: int
  sample: 0
transferred:
  description: Object keys transferred (in check mode, that would be transferred), sorted.
  returned: always
  type: list
  elements: str
  sample: [sdxl/juggernaut.safetensors]
deleted_paths:
  description: Local paths (download) or object keys (upload) deleted, or that would be deleted.
  returned: always
  type: list
  elements: str
  sample: []
resumed:
  description: Keys whose interrupted download was resumed.
  returned: always
  type: list
  elements: str
  sample: []
plan:
  description: The actions of the run, each with C(action) (download, upload, delete), C(key), C(path), C(size).
  returned: always
  type: list
  elements: dict
  sample: [{action: download, key: sdxl/a.safetensors, path: /opt/comfyui/models/checkpoints/a.safetensors,
            size: 1024}]
seconds:
  description: Duration of the sync.
  returned: always
  type: float
  sample: 12.5
requests:
  description: HTTP requests issued, by S3 operation.
  returned: always
  type: dict
  sample: {ListObjectsV2: 1}
endpoint:
  description: The S3 endpoint used.
  returned: always
  type: str
  sample: http://192.168.1.10:9000
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.visionsuit.gpuworker.plugins.module_utils.ansible_common import run_module  # noqa: E402
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.s3.env import (  # noqa: E402
    CONNECTION_ARGUMENT_SPEC,
    client_from_module_params,
)
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.s3.sync import sync  # noqa: E402


def _run(module):
    p = module.params
    client = client_from_module_params(p, retries=3)
    options = dict(include=p["include"] or None, exclude=p["exclude"] or None, delete=p["delete"],
                   dry_run=module.check_mode, workers=p["workers"], multipart_threshold=p["multipart_threshold"],
                   part_size=p["part_size"])
    if p["direction"] == "download":
        options.update(owner=p["owner"], group=p["group"])
    else:
        options.update(original_filename=p["original_filename"])
    try:
        res = sync(client, p["direction"], p["bucket"], p["prefix"], p["path"], **options)
    finally:
        client.close()
    result = {k: res[k] for k in ("files", "bytes", "deleted", "transferred", "deleted_paths", "resumed",
                                  "plan", "seconds", "requests")}
    result["unchanged"] = res["skipped"]
    result["changed"] = res["changed"]
    result["endpoint"] = client.endpoint
    if module._diff:
        target = p["path"] if p["direction"] == "download" else "s3://%s/%s" % (p["bucket"], res["prefix"])
        result["diff"] = {
            "before_header": target, "after_header": target,
            "before": "".join(x + "\n" for x in res["before"]),
            "after": "".join(x + "\n" for x in res["after"]),
        }
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            direction=dict(type="str", choices=["download", "upload"], default="download"),
            bucket=dict(type="str", required=True),
            prefix=dict(type="str", default=""),
            path=dict(type="path", required=True),
            delete=dict(type="bool", default=False),
            include=dict(type="list", elements="str", default=[]),
            exclude=dict(type="list", elements="str", default=[]),
            workers=dict(type="int", default=4),
            multipart_threshold=dict(type="int", default=64 * 1024 * 1024),
            part_size=dict(type="int", default=16 * 1024 * 1024),
            owner=dict(type="str"),
            group=dict(type="str"),
            original_filename=dict(type="bool", default=True),
            **CONNECTION_ARGUMENT_SPEC
        ),
        required_together=[["access_key", "secret_key"]],
        supports_check_mode=True,
    )
    run_module(module, _run)


if __name__ == "__main__":
    main()
