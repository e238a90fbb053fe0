# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared pytest set-up (tests/ and agent/tests/): the collection path, the stand-in fixtures and a real MinIO."""
from __future__ import annotations

import contextlib
import os
import sys
import uuid
from pathlib import Path

import pytest

pytest_plugins = ["rig.standin_fixtures"]

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent / "shared"

# The node packages (visionsuit_gpuworker, visionsuit_gpu_agent) are installed editable in the venv
# (`make venv`) and imported by those names. Ansible plugins are loaded as ansible_collections.visionsuit.gpuworker.*
# (the modules' and lookup's tests); ansible.cfg finds the checkout through the link .build/collections/...
_COLL_PARENT = ROOT / ".build" / "collections"
_COLL = _COLL_PARENT / "ansible_collections" / "visionsuit" / "gpuworker"
if not _COLL.exists():
    _COLL.parent.mkdir(parents=True, exist_ok=True)
    try:
        _COLL.symlink_to(ROOT, target_is_directory=True)
    except FileExistsError:
        pass
for p in (str(_COLL_PARENT), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

from rig.minio_server import MinioServer  # noqa: E402


@pytest.fixture(scope="session")
def minio():
    """A real MinIO server on 127.0.0.1 (free port, temporary data dir, random credentials)."""
    srv = MinioServer.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def s3(minio):
    """An independent boto3 client (classic transfer, path-style) to set up and check the store."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=minio.endpoint, aws_access_key_id=minio.access_key,
        aws_secret_access_key=minio.secret_key, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))


@pytest.fixture
def bucket(s3):
    """A fresh, empty bucket per test."""
    name = "t-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    yield name
    with contextlib.suppress(Exception):  # the server may have been stopped by the test
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=name):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=name, Key=obj["Key"])
        s3.delete_bucket(Bucket=name)


@pytest.fixture(scope="session")
def shared_captures() -> Path | None:
    d = Path(os.environ.get("VISIONSUIT_COMFYUI_CAPTURES", SHARED / "comfyui-api"))
    return d if d.is_dir() else None
