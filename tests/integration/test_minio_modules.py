# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""minio_bucket and minio_sync run by ansible-playbook (JSON callback) against a real MinIO."""
from __future__ import annotations

import sys
import uuid

import pytest

from tests.ansible_run import run_tasks

pytestmark = pytest.mark.integration


@pytest.fixture
def conn(minio):
    return {"endpoint": minio.endpoint, "access_key": minio.access_key, "secret_key": minio.secret_key}


def test_minio_bucket_check_mode_idempotence_and_force(conn, s3, minio, tmp_path):
    name = "mb-" + uuid.uuid4().hex[:10]
    b = dict(conn, name=name)
    put_code = (f"import boto3; boto3.client('s3', endpoint_url={minio.endpoint!r}, "
                f"aws_access_key_id={minio.access_key!r}, aws_secret_access_key={minio.secret_key!r}, "
                f"region_name='us-east-1').put_object(Bucket={name!r}, Key='a/b.bin', Body=b'x')")
    tasks = [
        {"name": "check", "visionsuit.gpuworker.minio_bucket": b, "check_mode": True},
        {"name": "create", "visionsuit.gpuworker.minio_bucket": b},
        {"name": "again", "visionsuit.gpuworker.minio_bucket": b},
        {"name": "put", "ansible.builtin.command": {"argv": [sys.executable, "-c", put_code]}, "no_log": True},
        {"name": "absent refused", "visionsuit.gpuworker.minio_bucket": dict(b, state="absent"),
         "ignore_errors": True},
        {"name": "absent check", "visionsuit.gpuworker.minio_bucket": dict(b, state="absent", force=True),
         "check_mode": True},
        {"name": "absent", "visionsuit.gpuworker.minio_bucket": dict(b, state="absent", force=True)},
        {"name": "absent again", "visionsuit.gpuworker.minio_bucket": dict(b, state="absent")},
    ]
    r, proc = run_tasks(tmp_path, tasks)
    assert r["check"]["changed"] is True and r["check"]["existed"] is False
    assert r["create"]["changed"] is True
    assert r["again"]["changed"] is False and r["again"]["existed"] is True
    assert r["absent refused"]["failed"] and "is not empty (1 objects)" in r["absent refused"]["msg"]
    assert "force: true" in r["absent refused"]["msg"]
    assert r["absent check"]["changed"] and r["absent check"]["deleted_objects"] == 1
    assert r["absent"]["changed"] and r["absent"]["deleted_objects"] == 1
    assert r["absent again"]["changed"] is False
    assert name not in [x["Name"] for x in s3.list_buckets()["Buckets"]]
    assert minio.secret_key not in proc.stdout


def test_minio_sync_check_diff_idempotence_upload_and_env_file(conn, s3, bucket, minio, tmp_path):
    s3.put_object(Bucket=bucket, Key="ck/sdxl/a b.safetensors", Body=b"a" * 100)
    s3.put_object(Bucket=bucket, Key="ck/ü.safetensors", Body=b"u" * 10)
    s3.put_object(Bucket=bucket, Key="other/z.bin", Body=b"z")
    dest = tmp_path / "models"
    sync = dict(conn, bucket=bucket, prefix="ck", path=str(dest))
    env_file = tmp_path / "minio.env"
    env_file.write_text(f"MINIO_ENDPOINT={minio.endpoint}\nMINIO_ACCESS_KEY={minio.access_key}\nMINIO_SECRET_KEY={minio.secret_key}\n")
    src = tmp_path / "out"
    src.mkdir()
    (src / "r.png").write_bytes(b"png")
    tasks = [
        {"name": "check", "visionsuit.gpuworker.minio_sync": sync, "check_mode": True, "diff": True},
        {"name": "sync", "visionsuit.gpuworker.minio_sync": sync, "diff": True},
        {"name": "again", "visionsuit.gpuworker.minio_sync": sync},
        {"name": "upload", "visionsuit.gpuworker.minio_sync": {
            "direction": "upload", "bucket": bucket, "prefix": "renders", "path": str(src),
            "env_file": str(env_file)}},
        {"name": "upload again", "visionsuit.gpuworker.minio_sync": {
            "direction": "upload", "bucket": bucket, "prefix": "renders", "path": str(src),
            "env_file": str(env_file)}},
        {"name": "wrong secret", "visionsuit.gpuworker.minio_sync": dict(sync, secret_key="not-the-secret-123"),
         "ignore_errors": True},
        {"name": "missing bucket", "visionsuit.gpuworker.minio_sync": dict(sync, bucket="no-such-bucket-x"),
         "ignore_errors": True},
        {"name": "bad env file", "visionsuit.gpuworker.minio_sync": {
            "bucket": bucket, "path": str(dest), "env_file": str(tmp_path / "nope.env")}, "ignore_errors": True},
        {"name": "bad endpoint", "visionsuit.gpuworker.minio_sync": dict(sync, endpoint="ftp://127.0.0.1:1"),
         "ignore_errors": True},
    ]
    r, proc = run_tasks(tmp_path, tasks)
    check = r["check"]
    assert check["changed"] is True and check["files"] == 2
    assert check["transferred"] == ["ck/sdxl/a b.safetensors", "ck/ü.safetensors"]
    assert [p["action"] for p in check["plan"]] == ["download", "download"]
    assert check["diff"]["before"] == "" and check["diff"]["after"] == "sdxl/a b.safetensors\nü.safetensors\n"
    assert check["requests"] == {"ListObjectsV2": 1}
    assert r["sync"]["changed"] is True and r["sync"]["files"] == 2 and r["sync"]["bytes"] == 110
    assert r["sync"]["requests"] == {"ListObjectsV2": 1, "GetObject": 2}  # no HEAD per object
    assert (dest / "sdxl" / "a b.safetensors").read_bytes() == b"a" * 100
    assert r["again"]["changed"] is False and r["again"]["unchanged"] == 2 and r["again"]["files"] == 0
    assert r["again"]["requests"] == {"ListObjectsV2": 1}
    assert r["upload"]["changed"] and r["upload"]["transferred"] == ["renders/r.png"]
    assert s3.head_object(Bucket=bucket, Key="renders/r.png")["Metadata"] == {"original-filename": "r.png"}
    head = s3.head_object(Bucket=bucket, Key="renders/r.png", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] and head["ChecksumType"] == "FULL_OBJECT"  # what downloads verify against
    assert r["upload again"]["changed"] is False
    assert r["wrong secret"]["failed"] and "rejected the credentials" in r["wrong secret"]["msg"]
    assert "not-the-secret-123" not in proc.stdout and minio.secret_key not in proc.stdout
    assert "bucket 'no-such-bucket-x' does not exist" in r["missing bucket"]["msg"]
    assert "nope.env does not exist" in r["bad env file"]["msg"]
    assert "scheme" in r["bad endpoint"]["msg"] and r["bad endpoint"]["field"] == "endpoint"
