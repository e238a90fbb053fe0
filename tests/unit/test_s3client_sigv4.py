# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""SigV4 signing of the stdlib S3 client: the AWS documentation vectors and a cross-check with botocore."""
import pytest

from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.s3.client import S3Client
from visionsuit_gpuworker.s3.sigv4 import (
    canonical_query,
    decode_metadata_value,
    encode_metadata_value,
    sign_v4,
    uri_encode,
)

AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
DATE = "20130524T000000Z"


def _sig(auth):
    return auth.rsplit("Signature=", 1)[1]


def test_aws_documented_get_object_vector():
    # "Example: GET Object" of the AWS SigV4 header-auth documentation
    auth = sign_v4("GET", "/test.txt", {}, {
        "host": "examplebucket.s3.amazonaws.com", "range": "bytes=0-9",
        "x-amz-content-sha256": EMPTY, "x-amz-date": DATE}, EMPTY, AK, SK, "us-east-1", DATE)
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                           "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, ")
    assert _sig(auth) == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"


def test_aws_documented_list_objects_vector():
    # "Example: GET Bucket (List Objects)": query parameters are sorted and encoded
    auth = sign_v4("GET", "/", {"max-keys": "2", "prefix": "J"}, {
        "host": "examplebucket.s3.amazonaws.com", "x-amz-content-sha256": EMPTY, "x-amz-date": DATE},
        EMPTY, AK, SK, "us-east-1", DATE)
    assert _sig(auth) == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"


def test_a_changed_secret_changes_the_signature():
    headers = {"host": "h", "x-amz-content-sha256": EMPTY, "x-amz-date": DATE}
    a = sign_v4("GET", "/b/k", {}, headers, EMPTY, AK, SK, "us-east-1", DATE)
    b = sign_v4("GET", "/b/k", {}, headers, EMPTY, AK, SK + "x", "us-east-1", DATE)
    assert _sig(a) != _sig(b)
    assert SK not in a


@pytest.mark.parametrize("key,query", [
    ("models/a b/ü.safetensors", {}),
    ("x+y=z&(1)~!.bin", {"partNumber": "3", "uploadId": "a/b+c=="}),
    ("dir/", {"list-type": "2", "prefix": "a b/ü", "encoding-type": "url", "continuation-token": "1+2/3="}),
])
def test_matches_botocore_for_unicode_keys_and_queries(key, query):
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    path = S3Client.object_path("bucket", key)
    qs = canonical_query(query)
    url = "http://127.0.0.1:9000" + path + ("?" + qs if qs else "")
    headers = {"x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-date": DATE, "content-type": "image/png",
               "x-amz-meta-original-filename": "a  b.png"}
    req = AWSRequest(method="PUT", url=url, headers=dict(headers))
    req.context["timestamp"] = DATE
    auth = S3SigV4Auth(Credentials(AK, SK), "s3", "eu-west-1")
    expected = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
    ours = sign_v4("PUT", path, query, dict(headers, host="127.0.0.1:9000"), "UNSIGNED-PAYLOAD", AK, SK,
                   "eu-west-1", DATE)
    assert _sig(ours) == expected


def test_uri_encoding_of_keys():
    assert S3Client.object_path("b", "a b/ü+%.bin") == "/b/a%20b/%C3%BC%2B%25.bin"
    assert uri_encode("a/b~c") == "a%2Fb~c"


def test_metadata_values_round_trip_unicode():
    assert encode_metadata_value("plain.png") == "plain.png"
    enc = encode_metadata_value("Bild ü.png")
    assert enc.isascii() and enc != "Bild ü.png"
    assert decode_metadata_value(enc) == "Bild ü.png"


@pytest.mark.parametrize("endpoint", ["ftp://h:21", "http://", "http://h:9000/path", "http://h:notaport"])
def test_client_refuses_bad_endpoints(endpoint):
    with pytest.raises(GpuWorkerError) as e:
        S3Client(endpoint, AK, SK)
    assert "endpoint" in str(e.value)


def test_client_repr_hides_the_secret():
    c = S3Client("http://127.0.0.1:9000", AK, SK)
    assert SK not in repr(c) and c.host_header == "127.0.0.1:9000" and c.region == "us-east-1"
    assert S3Client("https://minio.lan", AK, SK).host_header == "minio.lan"
