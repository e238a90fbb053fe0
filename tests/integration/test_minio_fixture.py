# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rig's MinIO fixture is a real S3 server: round-trips data and rejects bad credentials."""
import hashlib

import boto3
import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.integration


def test_roundtrip_and_etag(s3, bucket):
    body = b"visionsuit" * 1000
    s3.put_object(Bucket=bucket, Key="dir/a b/ü.bin", Body=body)
    got = s3.get_object(Bucket=bucket, Key="dir/a b/ü.bin")
    assert got["Body"].read() == body
    assert got["ETag"].strip('"') == hashlib.md5(body).hexdigest()  # noqa: S324
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["dir/a b/ü.bin"]


def test_wrong_credentials_are_refused(minio, bucket):
    bad = boto3.client("s3", endpoint_url=minio.endpoint, aws_access_key_id=minio.access_key,
                       aws_secret_access_key="wrong-secret", region_name="us-east-1")
    with pytest.raises(ClientError) as e:
        bad.list_objects_v2(Bucket=bucket)
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
