# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The sync engine against a real MinIO: listing-only re-syncs, verification, resume, safety, failures.

``ByteProxy`` (also used by test_node_cli.py) is a TCP proxy on 127.0.0.1 in front of MinIO that counts the
bytes and request lines going through it, can slow the server->client stream down, rewrite bytes in it and lose
the reply to chosen requests (the server carries the request out, the client sees the connection drop).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
import zlib

import boto3
import pytest
from boto3.s3.transfer import TransferConfig

from rig.minio_server import MinioServer
from visionsuit_gpuworker.errors import GpuWorkerError, TransientError
from visionsuit_gpuworker.s3 import download as s3download
from visionsuit_gpuworker.s3 import localio
from visionsuit_gpuworker.s3.client import S3Client
from visionsuit_gpuworker.s3.download import INTEGRITY_EXIT_CODE, download, download_object
from visionsuit_gpuworker.s3.keys import STATE_FILE, TEMP_SUFFIX
from visionsuit_gpuworker.s3.sync import object_manifest
from visionsuit_gpuworker.s3.upload import upload

pytestmark = pytest.mark.integration
KiB = 1024
MiB = 1024 * 1024
_REQ = re.compile(rb"(GET|PUT|HEAD|POST|DELETE) (/\S*) HTTP/1\.1\r\n")


class ByteProxy:
    """Forward 127.0.0.1:<port> to the MinIO port; count, throttle and rewrite the traffic.

    ``drop_reply(method, target)`` (called once per request line, under the lock): when true, the request is
    forwarded but its reply is swallowed and the client's connection closed (a reply lost on the way back).
    """

    def __init__(self, target_port, rate=None, rewrite=None, drop_reply=None):
        self.target_port = target_port
        self.rate = rate  # bytes per second per connection, server -> client
        self.rewrite = rewrite or []
        self.drop_reply = drop_reply
        self.dropped = []  # (method, target) of the requests whose reply was lost
        self.down_bytes = 0
        self.requests = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.closed = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            self.conns += [client, server]
            lose = threading.Event()  # set: the reply now coming on this connection is to be lost
            threading.Thread(target=self._up, args=(client, server, lose), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, lose), daemon=True).start()

    def _up(self, src, dst, lose=None):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    seen = [(m.group(1).decode(), m.group(2).decode()) for m in _REQ.finditer(data)]
                    self.requests += seen
                    for req in seen:
                        if self.drop_reply is not None and lose is not None and self.drop_reply(*req):
                            self.dropped.append(req)
                            lose.set()  # before forwarding: no byte of its reply can come earlier
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(dst)

    def _down(self, src, dst, lose=None):
        try:
            while True:
                data = src.recv(16 * KiB if self.rate else 65536)
                if not data:
                    break
                if lose is not None and lose.is_set():
                    src.settimeout(0.5)  # swallow the whole reply (until the server goes quiet), then hang up
                    while src.recv(65536):
                        pass
                    break
                for old, new in self.rewrite:
                    data = data.replace(old, new)
                with self.lock:
                    self.down_bytes += len(data)
                dst.sendall(data)
                if self.rate:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            _close(dst)

    def ops(self):
        """Request lines seen, as S3 operation names (GET with list-type=2 is a listing)."""
        out = []
        for method, target in self.requests:
            if method == "GET" and "list-type=2" in target:
                out.append("ListObjectsV2")
            else:
                out.append(method)
        return out

    def close(self):
        self.closed = True
        _close(self.sock)
        for c in self.conns:
            _close(c)


def _close(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def client_for(endpoint, minio, **kw):
    kw.setdefault("retries", 2)
    kw.setdefault("backoff", 0.05)
    return S3Client(endpoint, minio.access_key, minio.secret_key, **kw)


@pytest.fixture
def client(minio):
    return client_for(minio.endpoint, minio)


@pytest.fixture
def proxy(minio):
    p = ByteProxy(minio.port)
    yield p
    p.close()


def put(s3, bucket, key, data, **kw):
    s3.put_object(Bucket=bucket, Key=key, Body=data, **kw)
    return data


def put_multipart(s3, bucket, key, data, part=5 * MiB):
    path = f"/tmp/vs-mp-{uuid.uuid4().hex}"  # noqa: S108
    with open(path, "wb") as f:
        f.write(data)
    try:
        s3.upload_file(path, bucket, key, Config=TransferConfig(multipart_threshold=part, multipart_chunksize=part))
    finally:
        os.unlink(path)
    return data


class FlakyGets:
    """Patch ``S3Client.get_object`` to raise TransientError from its ``after + 1``-th call on (a lost network);
    ``off()`` restores the real one, ``on()`` arms it again with the count reset."""

    def __init__(self, monkeypatch, after):
        self.monkeypatch, self.after, self.original = monkeypatch, after, S3Client.get_object
        self.on()

    def on(self):
        self.calls = []

        def get(client, *a, **kw):  # a plain function, so that it binds to the client like the real method
            self.calls.append(kw.get("start"))
            if len(self.calls) > self.after:
                raise TransientError("simulated network loss")
            return self.original(client, *a, **kw)

        self.monkeypatch.setattr(S3Client, "get_object", get)

    def off(self):
        self.monkeypatch.setattr(S3Client, "get_object", self.original)


def tree(root):
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root)] = open(full, "rb").read()
    return out


NESTED = {
    "model.safetensors": b"m" * 3000,
    "sdxl/a b/ü ñ.safetensors": b"unicode" * 500,
    "sdxl/deep/er/x.ckpt": b"",
    "sdxl/deep/y.bin": os.urandom(70 * KiB),
}


def test_download_nested_unicode_then_resync_issues_only_a_listing(s3, bucket, minio, proxy, tmp_path):
    for key, data in NESTED.items():
        put(s3, bucket, key, data)
    s3.put_object(Bucket=bucket, Key="sdxl/emptydir/", Body=b"")  # folder marker
    dest = tmp_path / "ckpt"
    c = client_for(proxy.endpoint, minio)
    r = download(c, bucket, "", str(dest), workers=3)
    assert r["files"] == 4 and r["changed"] and r["bytes"] == sum(len(v) for v in NESTED.values())
    assert sorted(r["transferred"]) == sorted(NESTED)
    got = tree(dest)
    assert got.pop(STATE_FILE)
    assert got == NESTED
    assert not [n for n in got if n.endswith(TEMP_SUFFIX)]

    proxy.requests.clear()
    r2 = download(c, bucket, "", str(dest), workers=3)
    assert r2["files"] == 0 and r2["skipped"] == 4 and not r2["changed"]
    assert r2["requests"] == {"ListObjectsV2": 1}
    assert proxy.ops() == ["ListObjectsV2"]

    # without the state file the local content is hashed: still nothing but the listing
    os.unlink(dest / STATE_FILE)
    proxy.requests.clear()
    r3 = download(c, bucket, "", str(dest))
    assert r3["files"] == 0 and sorted(r3["adopted"]) == sorted(NESTED) and proxy.ops() == ["ListObjectsV2"]

    # a changed object (same size) and a locally modified file are fetched again
    put(s3, bucket, "model.safetensors", b"n" * 3000)
    (dest / "sdxl" / "deep" / "y.bin").write_bytes(b"local edit")
    r4 = download(c, bucket, "", str(dest))
    assert sorted(r4["transferred"]) == ["model.safetensors", "sdxl/deep/y.bin"]
    assert (dest / "model.safetensors").read_bytes() == b"n" * 3000
    assert (dest / "sdxl" / "deep" / "y.bin").read_bytes() == NESTED["sdxl/deep/y.bin"]


def test_prefix_include_exclude_and_dry_run(s3, bucket, client, tmp_path):
    for key, data in NESTED.items():
        put(s3, bucket, key, data)
    dest = tmp_path / "d"
    plan = download(client, bucket, "/sdxl/", str(dest), include=["*.safetensors", "*.bin"],
                    exclude=["deep/er/*"], dry_run=True)
    assert plan["dry_run"] and plan["changed"] and plan["files"] == 2
    assert sorted(p["key"] for p in plan["plan"]) == ["sdxl/a b/ü ñ.safetensors", "sdxl/deep/y.bin"]
    assert plan["requests"] == {"ListObjectsV2": 1}
    assert not dest.exists()
    r = download(client, bucket, "sdxl", str(dest), include=["*.safetensors", "*.bin"], exclude=["deep/er/*"])
    assert sorted(tree(dest)) == sorted([STATE_FILE, "a b/ü ñ.safetensors", "deep/y.bin"])
    assert r["transferred"] == plan["transferred"]


def test_multipart_object_ranged_download_and_adoption(s3, bucket, client, tmp_path):
    data = put_multipart(s3, bucket, "big/model.safetensors", os.urandom(11 * MiB + 123))
    head = s3.head_object(Bucket=bucket, Key="big/model.safetensors")
    assert head["ETag"].strip('"').endswith("-3")
    dest = tmp_path / "d"
    r = download(client, bucket, "big", str(dest), multipart_threshold=MiB, part_size=MiB, workers=4)
    # no full-object checksum: the ranges follow the 3 parts (HEAD ?partNumber=1 gives their size), and each part's
    # MD5 is computed while it streams
    assert r["files"] == 1 and r["requests"] == {"ListObjectsV2": 1, "HeadObject": 2, "GetObject": 3}
    assert hashlib.sha256((dest / "model.safetensors").read_bytes()).digest() == hashlib.sha256(data).digest()
    assert sorted(os.listdir(dest)) == [STATE_FILE, "model.safetensors"]
    os.unlink(dest / STATE_FILE)
    r = download(client, bucket, "big", str(dest), multipart_threshold=MiB, part_size=MiB)
    assert r["adopted"] == ["model.safetensors"] and r["requests"] == {"ListObjectsV2": 1}


def _thread_nice():
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_transfer_threads_run_at_lower_priority_only(s3, bucket, client, tmp_path):
    """nice=N lowers the CPU priority of the transfer threads (the agent's /healthz stays fast), not the caller's."""
    put_multipart(s3, bucket, "nice/model.safetensors", os.urandom(3 * MiB + 5))
    base = _thread_nice()
    seen = set()

    def progress(done, total, key):
        seen.add((threading.get_ident() == main_ident, _thread_nice()))

    main_ident = threading.get_ident()
    r = download_object(client, bucket, "nice/model.safetensors", str(tmp_path / "d" / "m.safetensors"),
                        multipart_threshold=MiB, part_size=MiB, workers=3, nice=7, progress=progress)
    assert r["files"] == 1 and seen == {(False, min(19, base + 7))}, seen
    assert _thread_nice() == base
    seen.clear()
    r = upload(client, bucket, "nice-up", str(tmp_path / "d"), workers=2, nice=3, progress=progress)
    assert r["files"] == 1 and seen == {(False, min(19, base + 3))}, seen
    seen.clear()
    r = download(client, bucket, "nice", str(tmp_path / "e"), workers=2, progress=progress)
    assert r["files"] == 1 and seen == {(False, base)}, seen   # the default leaves the priority alone


@pytest.mark.parametrize("mode", ["corrupt-single", "corrupt-ranged", "truncate-single", "truncate-ranged"])
def test_corrupted_or_truncated_download_is_caught(s3, bucket, client, tmp_path, monkeypatch, mode):
    data = put(s3, bucket, "m.bin", os.urandom(600 * KiB))
    put(s3, bucket, "plain.bin", b"plain")  # boto3 stores a CRC32 checksum; our verification uses it
    original = S3Client.get_object
    hits = []

    def bad_get(self, bucket_, key, write, start=0, end=None, **kw):
        def tampered(pos, chunk):
            if key == "m.bin" and not hits:
                hits.append(pos)
                if mode.startswith("corrupt"):
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                else:
                    chunk = chunk[:-10]
            write(pos, chunk)
        return original(self, bucket_, key, tampered, start=start, end=end, **kw)

    monkeypatch.setattr(S3Client, "get_object", bad_get)
    dest = tmp_path / "d"
    threshold = MiB if mode.endswith("single") else 100 * KiB
    with pytest.raises(GpuWorkerError) as e:
        download(client, bucket, "", str(dest), multipart_threshold=threshold, part_size=128 * KiB, workers=1)
    assert "integrity check failed for 'm.bin'" in str(e.value)
    assert e.value.exit_code == INTEGRITY_EXIT_CODE
    assert hits
    left = os.listdir(dest)
    assert "m.bin" not in left and not [n for n in left if TEMP_SUFFIX in n]
    monkeypatch.setattr(S3Client, "get_object", original)
    r = download(client, bucket, "", str(dest), multipart_threshold=threshold, part_size=128 * KiB)
    assert "m.bin" in r["transferred"] and (dest / "m.bin").read_bytes() == data


def test_interrupted_ranged_download_resumes(s3, bucket, client, tmp_path, monkeypatch):
    data = put(s3, bucket, "r.bin", os.urandom(2 * MiB))
    flaky = FlakyGets(monkeypatch, after=5)
    dest = tmp_path / "d"
    with pytest.raises(TransientError):
        download(client, bucket, "", str(dest), multipart_threshold=256 * KiB, part_size=128 * KiB, workers=1)
    assert not (dest / "r.bin").exists()
    assert (dest / ".r.bin.vsync-part").exists() and (dest / ".r.bin.vsync-part.json").exists()
    flaky.off()
    before = client.stats["GetObject"]
    r = download(client, bucket, "", str(dest), multipart_threshold=256 * KiB, part_size=128 * KiB)
    assert r["resumed"] == ["r.bin"]
    assert client.stats["GetObject"] - before == 16 - 5  # only the missing ranges
    assert (dest / "r.bin").read_bytes() == data
    assert sorted(os.listdir(dest)) == [STATE_FILE, "r.bin"]

    # a temp file of an object that changed meanwhile is not resumed
    flaky.on()
    (dest / "r.bin").unlink()
    with pytest.raises(TransientError):
        download(client, bucket, "", str(dest), multipart_threshold=256 * KiB, part_size=128 * KiB, workers=1)
    new = put(s3, bucket, "r.bin", os.urandom(2 * MiB))
    flaky.off()
    r = download(client, bucket, "", str(dest), multipart_threshold=256 * KiB, part_size=128 * KiB)
    assert r["resumed"] == [] and (dest / "r.bin").read_bytes() == new


def test_object_deleted_after_the_listing_is_skipped(s3, bucket, client, tmp_path, monkeypatch):
    put(s3, bucket, "real.bin", b"r")
    original = S3Client.list_objects

    def with_ghost(self, *a, **kw):
        yield from original(self, *a, **kw)
        yield {"key": "ghost.bin", "size": 5, "etag": hashlib.md5(b"ghost").hexdigest(),  # noqa: S324
               "last_modified": None}

    monkeypatch.setattr(S3Client, "list_objects", with_ghost)
    r = download(client, bucket, "", str(tmp_path))
    assert r["transferred"] == ["real.bin"] and r["vanished"] == ["ghost.bin"]
    assert sorted(os.listdir(tmp_path)) == [STATE_FILE, "real.bin"]


def test_delete_only_touches_managed_files(s3, bucket, client, tmp_path):
    put(s3, bucket, "keep.bin", b"k")
    put(s3, bucket, "sub/gone.bin", b"g")
    dest = tmp_path / "d"
    download(client, bucket, "", str(dest))
    (dest / "manual.safetensors").write_bytes(b"placed by hand")
    (dest / ".other.vsync-part").write_bytes(b"temp of someone")
    s3.delete_object(Bucket=bucket, Key="sub/gone.bin")
    r = download(client, bucket, "", str(dest))
    assert r["deleted"] == 0 and (dest / "sub" / "gone.bin").exists()
    plan = download(client, bucket, "", str(dest), delete=True, dry_run=True)
    assert plan["deleted"] == 1 and plan["deleted_paths"] == [str(dest / "sub" / "gone.bin")]
    assert (dest / "sub" / "gone.bin").exists()
    r = download(client, bucket, "", str(dest), delete=True)
    assert r["deleted"] == 1 and not (dest / "sub").exists()
    assert sorted(os.listdir(dest)) == [".other.vsync-part", STATE_FILE, "keep.bin", "manual.safetensors"]
    assert download(client, bucket, "", str(dest), delete=True)["changed"] is False


def test_path_escape_key_is_refused(s3, bucket, minio, tmp_path):
    # MinIO itself refuses ".." keys, so a proxy rewrites the listing (same length) as a hostile server would
    put(s3, bucket, "fine.bin", b"f")
    put(s3, bucket, "zz/evil", b"e")
    p = ByteProxy(minio.port, rewrite=[(b"<Key>zz/evil</Key>", b"<Key>../evil</Key>")])
    try:
        dest = tmp_path / "inner" / "d"
        with pytest.raises(GpuWorkerError) as e:
            download(client_for(p.endpoint, minio), bucket, "", str(dest))
        assert "refusing object key '../evil'" in str(e.value) and "escape" in str(e.value)
        assert not dest.exists() and not (tmp_path / "inner" / "evil").exists()
        assert [op for op in p.ops() if op != "ListObjectsV2"] == []
    finally:
        p.close()


def test_not_enough_free_space_is_refused(s3, bucket, client, tmp_path, monkeypatch):
    put(s3, bucket, "a.bin", b"x" * 5000)
    monkeypatch.setattr(localio.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(GpuWorkerError) as e:
        download(client, bucket, "", str(tmp_path / "d"))
    assert "not enough free space" in str(e.value) and "4.9 KiB" in str(e.value)
    assert not (tmp_path / "d" / "a.bin").exists()


def test_owner_and_group_are_applied(s3, bucket, client, tmp_path):
    import grp
    import pwd
    put(s3, bucket, "sub/o.bin", b"o")
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    dest = tmp_path / "d"
    download(client, bucket, "", str(dest), owner=user, group=group)
    st = os.stat(dest / "sub" / "o.bin")
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    with pytest.raises(GpuWorkerError) as e:
        download(client, bucket, "", str(dest), owner="no-such-user-vs")
    assert "unknown user" in str(e.value)


def test_upload_nested_multipart_metadata_idempotent_and_delete(s3, bucket, client, tmp_path):
    src = tmp_path / "out"
    (src / "2026" / "a b").mkdir(parents=True)
    (src / "img.png").write_bytes(b"\x89PNG" + os.urandom(1000))
    (src / "2026" / "a b" / "ü.json").write_text('{"x": 1}')
    big = os.urandom(11 * MiB + 5)
    (src / "2026" / "video.mp4").write_bytes(big)
    plan = upload(client, bucket, "renders", str(src), dry_run=True)
    assert plan["files"] == 3 and "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert not (src / STATE_FILE).exists()
    r = upload(client, bucket, "renders", str(src), multipart_threshold=5 * MiB, part_size=5 * MiB)
    assert sorted(r["transferred"]) == ["renders/2026/a b/ü.json", "renders/2026/video.mp4", "renders/img.png"]
    assert r["requests"]["UploadPart"] == 3 and r["requests"]["CompleteMultipartUpload"] == 1
    head = s3.head_object(Bucket=bucket, Key="renders/2026/a b/ü.json")
    assert head["ContentType"] == "application/json"
    assert s3.head_object(Bucket=bucket, Key="renders/img.png")["ContentType"] == "image/png"
    assert s3.get_object(Bucket=bucket, Key="renders/2026/video.mp4")["Body"].read() == big
    assert s3.head_object(Bucket=bucket, Key="renders/img.png")["Metadata"] == {"original-filename": "img.png"}
    # the engine decodes what it encoded for non-ASCII names
    info = client.head_object(bucket, "renders/2026/a b/ü.json")
    assert info["metadata"]["original-filename"] == "ü.json"

    r2 = upload(client, bucket, "renders", str(src), multipart_threshold=5 * MiB, part_size=5 * MiB)
    assert not r2["changed"] and r2["skipped"] == 3 and r2["requests"] == {"ListObjectsV2": 1}
    os.unlink(src / STATE_FILE)
    r3 = upload(client, bucket, "renders", str(src), multipart_threshold=5 * MiB, part_size=5 * MiB)
    assert not r3["changed"] and len(r3["adopted"]) == 3

    (src / "img.png").unlink()
    r4 = upload(client, bucket, "renders", str(src), delete=True, multipart_threshold=5 * MiB,
                part_size=5 * MiB)
    assert r4["deleted_paths"] == ["renders/img.png"]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["renders/2026/a b/ü.json", "renders/2026/video.mp4"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads") is None


def test_wrong_credentials_and_missing_bucket(minio, bucket, tmp_path):
    bad = S3Client(minio.endpoint, minio.access_key, "wrong-secret-value", retries=0)
    with pytest.raises(GpuWorkerError) as e:
        download(bad, bucket, "", str(tmp_path))
    msg = str(e.value)
    assert "rejected the credentials" in msg and minio.access_key in msg and "MINIO_SECRET_KEY" in msg
    assert "wrong-secret-value" not in msg and minio.secret_key not in msg
    unknown = S3Client(minio.endpoint, "nobody", minio.secret_key, retries=0)
    with pytest.raises(GpuWorkerError) as e:
        download(unknown, bucket, "", str(tmp_path))
    assert "InvalidAccessKeyId" in str(e.value) and "MINIO_ACCESS_KEY" in str(e.value)
    good = client_for(minio.endpoint, minio)
    with pytest.raises(GpuWorkerError) as e:
        download(good, "no-such-bucket-vs", "", str(tmp_path))
    assert f"bucket 'no-such-bucket-vs' does not exist on {minio.endpoint}" in str(e.value)
    assert "test-create-buckets" in str(e.value)


def test_minio_stopped_mid_sync_fails_clearly_then_recovers(tmp_path):
    srv = MinioServer.start()
    try:
        s3 = boto3.client("s3", endpoint_url=srv.endpoint, aws_access_key_id=srv.access_key,
                          aws_secret_access_key=srv.secret_key, region_name="us-east-1")
        s3.create_bucket(Bucket="models")
        files = {f"f{i:02d}.bin": os.urandom(64 * KiB) for i in range(12)}
        for key, data in files.items():
            s3.put_object(Bucket="models", Key=key, Body=data)
        client = client_for(srv.endpoint, srv, retries=2, backoff=0.05)
        paused = []

        def progress(done, total, key):
            if not paused:
                paused.append(key)
                srv.pause()

        dest = tmp_path / "d"
        with pytest.raises(GpuWorkerError) as e:
            download(client, "models", "", str(dest), workers=1, progress=progress)
        msg = str(e.value)
        assert f"cannot reach MinIO at {srv.endpoint}" in msg and "MINIO_ENDPOINT" in msg
        assert "after 3 attempts" in msg
        for name in os.listdir(dest):
            if name in files:
                assert (dest / name).read_bytes() == files[name]  # complete files only under final names
            else:
                assert name == STATE_FILE
        srv.resume()
        r = download(client, "models", "", str(dest))
        assert tree(dest).items() >= files.items() and r["files"] + r["skipped"] == 12
    finally:
        srv.stop()


def test_object_manifest_reads_metadata(s3, bucket, client):
    put(s3, bucket, "ck/a.safetensors", b"a", Metadata={"original-filename": "A Model.safetensors"})
    put(s3, bucket, "ck/sub/b.ckpt", b"bb")
    m = object_manifest(client, bucket, "ck")
    assert [(x["name"], x["original_filename"], x["size"]) for x in m] == [
        ("a.safetensors", "A Model.safetensors", 1), ("sub/b.ckpt", "b.ckpt", 2)]
    assert m[0]["etag"] == hashlib.md5(b"a").hexdigest() and m[0]["last_modified"]  # noqa: S324


# ---------------------------------------------------------------------------------------------- checksums, requests
def put_plain(client, bucket, key, data):
    """An object without any checksum (only its MD5 ETag): our client's PutObject without checksum_crc32."""
    client.put_object(bucket, key, data)
    return data


def put_plain_multipart(client, bucket, key, data, part=5 * MiB):
    """A multipart object without any checksum (its ETag is <md5 of the part MD5s>-<parts>)."""
    upload_id = client.create_multipart_upload(bucket, key)
    parts = [(n + 1, client.upload_part(bucket, key, upload_id, n + 1, data[off:off + part]))
             for n, off in enumerate(range(0, len(data), part))]
    client.complete_multipart_upload(bucket, key, upload_id, parts)
    return data


def checksum_head(s3, bucket, key):
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    return head.get("ChecksumCRC32"), head.get("ChecksumType"), head["ETag"].strip('"')


def crc_b64(data):
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")


def test_upload_stores_a_full_object_crc32_that_the_server_checks(s3, bucket, client, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    small, big = os.urandom(3000), os.urandom(11 * MiB + 7)
    (src / "small.png").write_bytes(small)
    (src / "big.safetensors").write_bytes(big)
    r = upload(client, bucket, "m", str(src), multipart_threshold=5 * MiB, part_size=5 * MiB)
    assert r["requests"] == {"ListObjectsV2": 1, "PutObject": 1, "CreateMultipartUpload": 1, "UploadPart": 3,
                             "CompleteMultipartUpload": 1}
    assert checksum_head(s3, bucket, "m/small.png")[:2] == (crc_b64(small), "FULL_OBJECT")
    crc, ctype, etag = checksum_head(s3, bucket, "m/big.safetensors")
    assert (crc, ctype) == (crc_b64(big), "FULL_OBJECT") and etag.endswith("-3")
    # the multipart ETag is unchanged (MD5 of the part MD5s): re-syncs and adoption still work from the listing
    assert upload(client, bucket, "m", str(src), multipart_threshold=5 * MiB,
                  part_size=5 * MiB)["requests"] == {"ListObjectsV2": 1}
    # the server verifies what it receives
    with pytest.raises(GpuWorkerError) as e:
        client.put_object(bucket, "bad", b"payload", checksum_crc32=crc_b64(b"other payload"))
    assert "XAmzContentChecksumMismatch" in str(e.value)


def test_crc32_object_downloads_verified_by_combined_range_crcs(s3, bucket, client, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(11 * MiB + 7)
    (src / "model.safetensors").write_bytes(data)
    upload(client, bucket, "", str(src), multipart_threshold=5 * MiB, part_size=5 * MiB)
    read_back = []
    original = s3download._Download._range_from_file
    monkeypatch.setattr(s3download._Download, "_range_from_file",
                        lambda self, *a: read_back.append(a[1:3]) or original(self, *a))
    dest = tmp_path / "d"
    r = download(client, bucket, "", str(dest), multipart_threshold=MiB, part_size=2 * MiB, workers=3)
    # one HEAD (it has the full-object CRC32: no HEAD ?partNumber=1), ranges of part_size, nothing read back
    assert r["requests"] == {"ListObjectsV2": 1, "HeadObject": 1, "GetObject": 6}
    assert read_back == []
    assert (dest / "model.safetensors").read_bytes() == data


def test_small_objects_take_one_get_each_and_no_head(s3, bucket, client, minio, proxy, tmp_path):
    files = {f"d{i % 2}/f{i}.bin": os.urandom(1000 + i) for i in range(6)}
    for key, data in files.items():
        put_plain(client, bucket, key, data)
    files["crc.bin"] = os.urandom(500)
    client.put_object(bucket, "crc.bin", files["crc.bin"], checksum_crc32=crc_b64(files["crc.bin"]))
    files["empty.bin"] = put_plain(client, bucket, "empty.bin", b"")
    c = client_for(proxy.endpoint, minio)
    dest = tmp_path / "d"
    r = download(c, bucket, "", str(dest), workers=3)
    assert r["requests"] == {"ListObjectsV2": 1, "GetObject": 7}  # the empty object needs no request at all
    assert [m for m, _t in proxy.requests if m == "HEAD"] == []
    got = tree(dest)
    got.pop(STATE_FILE)
    assert got == {k.replace("/", os.sep): v for k, v in files.items()}
    assert not [n for n in got if n.endswith(TEMP_SUFFIX)]


def test_object_replaced_after_the_listing_is_fetched_current(s3, bucket, client, tmp_path, monkeypatch):
    put_plain(client, bucket, "a.bin", b"old" * 100)
    original = S3Client.list_objects

    def listing_then_replace(self, *a, **kw):
        items = list(original(self, *a, **kw))
        put(s3, bucket, "a.bin", b"new content")
        return iter(items)

    monkeypatch.setattr(S3Client, "list_objects", listing_then_replace)
    dest = tmp_path / "d"
    r = download(client, bucket, "", str(dest))
    # the GET (If-Match: the listed ETag) fails with 412, a HEAD gives the current version, which is fetched
    assert r["transferred"] == ["a.bin"] and (dest / "a.bin").read_bytes() == b"new content"
    assert r["requests"] == {"ListObjectsV2": 1, "GetObject": 2, "HeadObject": 1}


@pytest.mark.parametrize("kind", ["crc32", "parts", "sequential"])
@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_every_ranged_verification_mode_catches_damage(s3, bucket, client, tmp_path, monkeypatch, kind, damage):
    data = os.urandom(11 * MiB + 99)
    if kind == "crc32":
        client.put_object(bucket, "o.bin", data, checksum_crc32=crc_b64(data))
        expect = "x-amz-checksum-crc32"
    elif kind == "parts":
        put_plain_multipart(client, bucket, "o.bin", data, part=5 * MiB)
        expect = "multipart ETag"
    else:
        put_plain(client, bucket, "o.bin", data)
        expect = "MD5"
    original = S3Client.get_object
    hits = []

    def bad_get(self, bucket_, key, write, start=0, end=None, **kw):
        def tampered(pos, chunk):
            if start and not hits:  # a chunk in the middle of the object
                hits.append(pos)
                chunk = bytes([chunk[0] ^ 0x01]) + bytes(chunk[1:]) if damage == "corrupt" else chunk[:-10]
            write(pos, chunk)
        return original(self, bucket_, key, tampered, start=start, end=end, **kw)

    monkeypatch.setattr(S3Client, "get_object", bad_get)
    dest = tmp_path / "d"
    with pytest.raises(GpuWorkerError) as e:
        download(client, bucket, "", str(dest), multipart_threshold=MiB, part_size=MiB, workers=2)
    assert "integrity check failed for 'o.bin'" in str(e.value) and expect in str(e.value)
    assert e.value.exit_code == INTEGRITY_EXIT_CODE and hits
    assert [n for n in os.listdir(dest) if n != STATE_FILE] == []
    monkeypatch.setattr(S3Client, "get_object", original)
    r = download(client, bucket, "", str(dest), multipart_threshold=MiB, part_size=MiB, workers=2)
    assert r["transferred"] == ["o.bin"] and (dest / "o.bin").read_bytes() == data


def test_ranged_download_fsyncs_the_file_once(s3, bucket, client, tmp_path, monkeypatch):
    import stat as stat_mod
    data = os.urandom(5 * MiB)
    client.put_object(bucket, "x/o.bin", data, checksum_crc32=crc_b64(data))
    syncs = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def fsync(fd):
        syncs.append("dir" if stat_mod.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real_fsync(fd)

    def fdatasync(fd):
        syncs.append("fdatasync")
        return real_fdatasync(fd)

    # download.py fsyncs/fdatasyncs the file, localio.py the folder: both through the os module
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    dest = tmp_path / "d"
    r = download(client, bucket, "", str(dest), multipart_threshold=MiB, part_size=256 * KiB, workers=4)
    assert r["requests"]["GetObject"] == 20
    assert syncs == ["file", "dir"]  # one fsync of the file before its rename, one of its folder after
    assert (dest / "x" / "o.bin").read_bytes() == data


def test_resumed_ranges_are_hashed_from_disk(s3, bucket, client, tmp_path, monkeypatch):
    """What a crash could leave wrong in recorded ranges is caught before the rename."""
    data = os.urandom(2 * MiB)
    client.put_object(bucket, "r.bin", data, checksum_crc32=crc_b64(data))
    flaky = FlakyGets(monkeypatch, after=5)
    dest = tmp_path / "d"
    opts = {"multipart_threshold": 256 * KiB, "part_size": 128 * KiB, "workers": 1}
    with pytest.raises(TransientError):
        download(client, bucket, "", str(dest), **opts)
    side = json.loads((dest / ".r.bin.vsync-part.json").read_text())
    assert sorted(side["done"]) == [0, 1, 2, 3, 4] and side["flushed"] == side["done"]  # flushed at the failure
    with open(dest / ".r.bin.vsync-part", "r+b") as f:  # a recorded range that did not reach the disk intact
        f.seek(3 * 128 * KiB + 5)
        f.write(b"\0" * 100)
    flaky.off()
    with pytest.raises(GpuWorkerError) as e:
        download(client, bucket, "", str(dest), **opts)
    assert "integrity check failed for 'r.bin'" in str(e.value) and "resumed" in str(e.value)
    assert [n for n in os.listdir(dest) if n != STATE_FILE] == []
    r = download(client, bucket, "", str(dest), **opts)
    assert r["resumed"] == [] and (dest / "r.bin").read_bytes() == data


def test_after_a_machine_restart_only_flushed_ranges_are_resumed(s3, bucket, client, tmp_path, monkeypatch):
    data = os.urandom(MiB)
    client.put_object(bucket, "r.bin", data, checksum_crc32=crc_b64(data))
    dest = tmp_path / "d"
    dest.mkdir()
    tmp, side = dest / ".r.bin.vsync-part", dest / ".r.bin.vsync-part.json"
    tmp.write_bytes(data[:3 * 128 * KiB] + b"\0" * (MiB - 3 * 128 * KiB))
    doc = {"key": "r.bin", "etag": hashlib.md5(data).hexdigest(), "size": MiB,  # noqa: S324
           "range_size": 128 * KiB, "done": [0, 1, 2, 3, 4], "flushed": [0, 1], "boot_id": "an-earlier-boot"}
    side.write_text(json.dumps(doc))
    before = client.stats["GetObject"]
    r = download(client, bucket, "", str(dest), multipart_threshold=256 * KiB, part_size=128 * KiB)
    assert r["resumed"] == ["r.bin"] and client.stats["GetObject"] - before == 8 - 2
    assert (dest / "r.bin").read_bytes() == data


def test_file_writer_falls_back_to_the_page_cache(tmp_path):
    path = tmp_path / "w.bin"
    w = localio.FileWriter(str(path), True, create=True)
    try:
        aligned = localio.thread_buffer()
        view = memoryview(aligned)
        view[:8192] = b"a" * 8192
        w.write(0, view[:8192])                 # page-aligned: O_DIRECT where supported
        w.write(8192, b"b" * 5000)              # unaligned memory and length: page cache
        w.write(13192, view[:4096])             # unaligned offset: page cache
    finally:
        w.close()
    assert path.read_bytes() == b"a" * 8192 + b"b" * 5000 + b"a" * 4096


# ---------------------------------------------------------------------------------------------- download_object
def test_download_object_fetches_skips_and_adopts_without_a_listing(s3, bucket, client, minio, proxy, tmp_path):
    data = os.urandom(70 * KiB)
    put_plain(client, bucket, "models/sdxl/a.safetensors", data)
    etag = hashlib.md5(data).hexdigest()  # noqa: S324
    c = client_for(proxy.endpoint, minio)
    path = tmp_path / "cache" / "a.safetensors"
    r = download_object(c, bucket, "models/sdxl/a.safetensors", str(path))
    assert r["files"] == 1 and r["bytes"] == len(data) and r["etag"] == etag and r["size"] == len(data)
    assert r["requests"] == {"HeadObject": 1, "GetObject": 1}
    assert path.read_bytes() == data and sorted(os.listdir(path.parent)) == [STATE_FILE, "a.safetensors"]

    # known version: no request at all; unknown: one HEAD
    r = download_object(c, bucket, "models/sdxl/a.safetensors", str(path), expected_etag=etag,
                        expected_size=len(data))
    assert r["files"] == 0 and r["skipped"] == 1 and r["requests"] == {} and not r["changed"]
    r = download_object(c, bucket, "models/sdxl/a.safetensors", str(path))
    assert r["skipped"] == 1 and r["requests"] == {"HeadObject": 1}
    # the record is the one download() of the key's folder keeps: a listing sync sees the file as current
    r = download(c, bucket, "models/sdxl", str(path.parent))
    assert r["skipped"] == 1 and r["adopted"] == [] and r["requests"] == {"ListObjectsV2": 1}

    # without a record the content is hashed and adopted
    os.unlink(path.parent / STATE_FILE)
    r = download_object(c, bucket, "models/sdxl/a.safetensors", str(path), expected_etag=etag,
                        expected_size=len(data))
    assert r["adopted"] == ["a.safetensors"] and r["requests"] == {}
    # a local edit is replaced
    path.write_bytes(b"x" * len(data))
    r = download_object(c, bucket, "models/sdxl/a.safetensors", str(path), expected_etag=etag,
                        expected_size=len(data))
    assert r["files"] == 1 and r["requests"] == {"GetObject": 1} and path.read_bytes() == data


def test_download_object_ranged_with_object_info_resumes_and_verifies(s3, bucket, client, tmp_path, monkeypatch):
    data = os.urandom(3 * MiB + 5)
    client.put_object(bucket, "big.bin", data, checksum_crc32=crc_b64(data))
    info = client.head_object(bucket, "big.bin")
    path = tmp_path / "big.bin"
    # one worker: the four ranges fetched before the failure are complete and recorded, deterministically
    opts = {"multipart_threshold": 256 * KiB, "part_size": 256 * KiB, "workers": 1}
    flaky = FlakyGets(monkeypatch, after=4)
    with pytest.raises(TransientError):
        download_object(client, bucket, "big.bin", str(path), object_info=info, **opts)
    assert not path.exists() and (tmp_path / ".big.bin.vsync-part.json").exists()
    flaky.off()
    before = dict(client.stats)
    r = download_object(client, bucket, "big.bin", str(path), object_info=info, **opts)
    assert r["resumed"] == ["big.bin"] and r["files"] == 1
    assert "HeadObject" not in r["requests"] and r["requests"]["GetObject"] == 13 - 4
    assert client.stats["GetObject"] - before.get("GetObject", 0) == 9
    assert path.read_bytes() == data and sorted(os.listdir(tmp_path)) == [STATE_FILE, "big.bin"]


def test_download_object_pinned_version_missing_object_and_corruption(s3, bucket, client, tmp_path, monkeypatch):
    old = put_plain(client, bucket, "m.bin", b"old" * 1000)
    old_etag = hashlib.md5(old).hexdigest()  # noqa: S324
    put_plain(client, bucket, "m.bin", b"new" * 1000)
    path = tmp_path / "m.bin"
    with pytest.raises(GpuWorkerError) as e:
        download_object(client, bucket, "m.bin", str(path), expected_etag=old_etag, expected_size=3000)
    assert "changed on the server" in str(e.value) and e.value.details["status"] == 412
    assert os.listdir(tmp_path) == []
    with pytest.raises(GpuWorkerError) as e:
        download_object(client, bucket, "nope.bin", str(tmp_path / "nope.bin"))
    assert e.value.details["status"] == 404 and "does not exist" in str(e.value)
    with pytest.raises(GpuWorkerError) as e:
        download_object(client, bucket, "../m.bin", str(tmp_path / "x.bin"))
    assert "escape" in str(e.value)

    original = S3Client.get_object

    def bad_get(self, bucket_, key, write, **kw):
        return original(self, bucket_, key, lambda pos, chunk: write(pos, b"X" + bytes(chunk[1:])), **kw)

    monkeypatch.setattr(S3Client, "get_object", bad_get)
    with pytest.raises(GpuWorkerError) as e:
        download_object(client, bucket, "m.bin", str(path))
    assert e.value.exit_code == INTEGRITY_EXIT_CODE and "MD5" in str(e.value)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------- lost replies
def once(match):
    """A ``drop_reply`` predicate true for the first request that ``match(method, target)`` accepts only."""
    left = [1]

    def predicate(method, target):
        if left[0] and match(method, target):
            left[0] -= 1
            return True
        return False

    return predicate


def is_complete(method, target):
    return method == "POST" and "uploadId=" in target


def test_upload_survives_a_lost_complete_multipart_reply(s3, bucket, minio, tmp_path):
    # MinIO completes the upload but the reply never arrives: the retried Complete answers NoSuchUpload, and the
    # object that is there is accepted because its ETag is the multipart ETag of the parts we sent
    src = tmp_path / "src"
    src.mkdir()
    part = 5 * MiB
    big = os.urandom(11 * MiB + 3)
    (src / "big.safetensors").write_bytes(big)
    p = ByteProxy(minio.port, drop_reply=once(is_complete))
    try:
        c = client_for(p.endpoint, minio)
        r = upload(c, bucket, "lost", str(src), multipart_threshold=part, part_size=part, workers=2)
    finally:
        p.close()
    assert [m for m, _t in p.dropped] == ["POST"] and is_complete(*p.dropped[0])
    assert r["transferred"] == ["lost/big.safetensors"]
    assert r["requests"]["CompleteMultipartUpload"] == 2 and r["requests"]["HeadObject"] == 1
    assert s3.get_object(Bucket=bucket, Key="lost/big.safetensors")["Body"].read() == big
    md5s = b"".join(hashlib.md5(big[o:o + part]).digest() for o in range(0, len(big), part))  # noqa: S324
    etag = "%s-3" % hashlib.md5(md5s).hexdigest()  # noqa: S324
    assert checksum_head(s3, bucket, "lost/big.safetensors") == (crc_b64(big), "FULL_OBJECT", etag)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads") is None
    # the ETag was recorded: the next sync issues only a listing
    again = upload(client_for(minio.endpoint, minio), bucket, "lost", str(src), multipart_threshold=part,
                   part_size=part)
    assert not again["changed"] and again["requests"] == {"ListObjectsV2": 1}
