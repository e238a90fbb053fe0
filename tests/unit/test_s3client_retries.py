# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Which requests the S3 client sends again, and how it settles a CompleteMultipartUpload whose reply was lost.

A scripted HTTP server on 127.0.0.1 answers each request with the next step of a script: a reply, or ``LOSE``
(the request is read, then the connection is closed without a reply, as when the reply is lost on the way back).
"""
import hashlib
import http.server
import threading

import pytest

from visionsuit_gpuworker.errors import GpuWorkerError, TransientError
from visionsuit_gpuworker.s3.checksums import file_multipart_etag, multipart_etag
from visionsuit_gpuworker.s3.client import REPEATABLE_POSTS, S3Client

LOSE = "lose"
KEY = "models/big model.safetensors"
PARTS = [b"a" * 1000, b"b" * 1000, b"c" * 10]
PART_ETAGS = [hashlib.md5(p).hexdigest() for p in PARTS]  # noqa: S324 - S3 ETag
OBJECT_ETAG = "%s-3" % hashlib.md5(b"".join(hashlib.md5(p).digest() for p in PARTS)).hexdigest()  # noqa: S324


def error(status, code):
    return status, {}, ("<Error><Code>%s</Code><Message>m</Message></Error>" % code).encode()


def complete_ok(etag):
    return 200, {}, ("<CompleteMultipartUploadResult><ETag>\"%s\"</ETag></CompleteMultipartUploadResult>"
                     % etag).encode()


def head(etag):
    return 200, {"ETag": '"%s"' % etag, "Content-Length": "2010"}, b""


class Scripted:
    def __init__(self, steps):
        self.steps = list(steps)
        self.seen = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _step(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.seen.append((self.command, self.path))
                step = outer.steps.pop(0) if outer.steps else error(500, "ScriptExhausted")
                if step == LOSE:
                    self.close_connection = True
                    return
                status, headers, body = step
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _step  # noqa: N815

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.client = S3Client("http://127.0.0.1:%d" % self.server.server_address[1], "ak", "secret-sk",
                               retries=2, backoff=0.0, timeout=10)

    def methods(self):
        return [m for m, _p in self.seen]

    def close(self):
        self.client.close()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    servers = []

    def make(*steps):
        servers.append(Scripted(steps))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def complete(srv):
    parts = [(n + 1, e) for n, e in enumerate(PART_ETAGS)]
    return srv.client.complete_multipart_upload("bucket", KEY, "upload-1", parts)


def test_multipart_etag_is_md5_of_the_binary_part_md5s(tmp_path):
    assert multipart_etag(PART_ETAGS) == OBJECT_ETAG
    assert multipart_etag(['"%s"' % e for e in PART_ETAGS]) == OBJECT_ETAG
    path = tmp_path / "f"
    path.write_bytes(b"".join(PARTS))
    assert file_multipart_etag(str(path), 1000) == OBJECT_ETAG
    assert multipart_etag([PART_ETAGS[0], "not-an-md5"]) is None and multipart_etag([]) is None


def test_lost_complete_reply_accepted_when_the_object_has_the_multipart_etag(scripted):
    srv = scripted(LOSE, error(404, "NoSuchUpload"), head(OBJECT_ETAG))
    assert complete(srv) == OBJECT_ETAG
    assert srv.methods() == ["POST", "POST", "HEAD"] and "uploadId=upload-1" in srv.seen[1][1]
    assert srv.client.stats == {"CompleteMultipartUpload": 2, "HeadObject": 1}


@pytest.mark.parametrize("found,words", [
    (head("0" * 32 + "-3"), ["has ETag %s-3, not %s" % ("0" * 32, OBJECT_ETAG)]),
    (error(404, "NoSuchKey"), ["no object is there"]),
])
def test_lost_complete_reply_with_another_object_is_an_error_naming_the_key(scripted, found, words):
    srv = scripted(LOSE, error(404, "NoSuchUpload"), found)
    with pytest.raises(GpuWorkerError) as e:
        complete(srv)
    msg = str(e.value)
    assert "'%s' in bucket 'bucket'" % KEY in msg and "upload-1" in msg and "reply to CompleteMultipartUpload" in msg
    assert all(w in msg for w in words) and "does not exist" not in msg
    assert e.value.details["code"] == "NoSuchUpload" and e.value.details["key"] == KEY
    assert srv.methods() == ["POST", "POST", "HEAD"]


def test_part_etags_that_are_not_md5s_cannot_vouch_for_the_object(scripted):
    srv = scripted(LOSE, error(404, "NoSuchUpload"), head("whatever-3"))
    with pytest.raises(GpuWorkerError) as e:
        srv.client.complete_multipart_upload("bucket", KEY, "upload-1", [(1, "opaque1"), (2, "opaque2")])
    assert "cannot be checked" in str(e.value) and KEY in str(e.value)


def test_no_such_upload_on_the_first_attempt_is_not_taken_for_a_lost_reply(scripted):
    srv = scripted(error(404, "NoSuchUpload"))
    with pytest.raises(GpuWorkerError) as e:
        complete(srv)
    assert "does not know the multipart upload" in str(e.value) and KEY in str(e.value)
    assert e.value.details["code"] == "NoSuchUpload" and not e.value.details.get("repeated")
    assert srv.methods() == ["POST"]


def test_complete_is_repeated_after_a_5xx_and_then_succeeds(scripted):
    srv = scripted(error(500, "InternalError"), complete_ok(OBJECT_ETAG))
    assert complete(srv) == OBJECT_ETAG and srv.methods() == ["POST", "POST"]


def test_a_post_not_declared_repeatable_is_sent_once(scripted):
    assert "CompleteMultipartUpload" in REPEATABLE_POSTS and "SomePost" not in REPEATABLE_POSTS
    srv = scripted(LOSE, complete_ok("x"))
    with pytest.raises(TransientError) as e:
        srv.client.request("SomePost", "POST", "bucket", KEY, query={"x": ""}, body=b"<a/>")
    assert "not sent again: SomePost is not idempotent" in str(e.value) and srv.methods() == ["POST"]
    srv = scripted(error(500, "InternalError"), complete_ok("x"))
    with pytest.raises(TransientError):
        srv.client.request("SomePost", "POST", "bucket", KEY, query={"x": ""}, body=b"<a/>")
    assert srv.methods() == ["POST"]


def test_idempotent_requests_and_declared_posts_are_repeated(scripted):
    srv = scripted(LOSE, (200, {}, b""))
    srv.client.put_object("bucket", KEY, b"data")
    assert srv.methods() == ["PUT", "PUT"]
    srv = scripted(LOSE, (200, {}, b"<InitiateMultipartUploadResult><UploadId>u2</UploadId>"
                                   b"</InitiateMultipartUploadResult>"))
    assert srv.client.create_multipart_upload("bucket", KEY) == "u2" and srv.methods() == ["POST", "POST"]


def test_refused_connection_is_retried_for_any_request():
    # nothing reached a server: even a POST that is not declared repeatable is tried again
    srv = Scripted([])
    port = srv.server.server_address[1]
    srv.close()
    client = S3Client("http://127.0.0.1:%d" % port, "ak", "secret-sk", retries=2, backoff=0.0)
    with pytest.raises(TransientError) as e:
        client.request("SomePost", "POST", "bucket", KEY, body=b"x")
    assert "connection refused" in str(e.value) and "after 3 attempts" in str(e.value)
    assert client.stats == {"SomePost": 3}


def test_delete_bucket_whose_lost_reply_had_deleted_it_succeeds(scripted):
    srv = scripted(LOSE, error(404, "NoSuchBucket"))
    srv.client.delete_bucket("bucket")
    assert srv.methods() == ["DELETE", "DELETE"]
    srv = scripted(error(404, "NoSuchBucket"))
    with pytest.raises(GpuWorkerError) as e:
        srv.client.delete_bucket("bucket")
    assert "bucket 'bucket' does not exist" in str(e.value)
