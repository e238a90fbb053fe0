"""The sync engine against a real MinIO: listing-only re-syncs, verification, resume, safety, failures.

``ByteProxy`` (also used by test_node_cli.py) is a TCP proxy on 127.0.0.1 in front of MinIO that counts the
bytes and request lines going through it, can slow the server->client stream down and rewrite bytes in it.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import time
import uuid

import boto3
import pytest
from boto3.s3.transfer import TransferConfig

from ansible_collections.visionsuit.gpuworker.plugins.module_utils import s3sync
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.errors import GpuWorkerError, TransientError
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.s3client import S3Client
from rig.minio_server import MinioServer

pytestmark = pytest.mark.integration
KiB = 1024
MiB = 1024 * 1024
_REQ = re.compile(rb"(GET|PUT|HEAD|POST|DELETE) (/\S*) HTTP/1\.1\r\n")


class ByteProxy:
    """Forward 127.0.0.1:<port> to the MinIO port; count, throttle and rewrite the traffic."""

    def __init__(self, target_port, rate=None, rewrite=None):
        self.target_port = target_port
        self.rate = rate  # bytes per second per connection, server -> client
        self.rewrite = rewrite or []
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
            threading.Thread(target=self._up, args=(client, server), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    def _up(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.requests += [(m.group(1).decode(), m.group(2).decode()) for m in _REQ.finditer(data)]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(dst)

    def _down(self, src, dst):
        try:
            while True:
                data = src.recv(16 * KiB if self.rate else 65536)
                if not data:
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
    r = s3sync.download(c, bucket, "", str(dest), workers=3)
    assert r["files"] == 4 and r["changed"] and r["bytes"] == sum(len(v) for v in NESTED.values())
    assert sorted(r["transferred"]) == sorted(NESTED)
    got = tree(dest)
    assert got.pop(s3sync.STATE_FILE)
    assert got == NESTED
    assert not [n for n in got if n.endswith(s3sync.TEMP_SUFFIX)]

    proxy.requests.clear()
    r2 = s3sync.download(c, bucket, "", str(dest), workers=3)
    assert r2["files"] == 0 and r2["skipped"] == 4 and not r2["changed"]
    assert r2["requests"] == {"ListObjectsV2": 1}
    assert proxy.ops() == ["ListObjectsV2"]

    # without the state file the local content is hashed: still nothing but the listing
    os.unlink(dest / s3sync.STATE_FILE)
    proxy.requests.clear()
    r3 = s3sync.download(c, bucket, "", str(dest))
    assert r3["files"] == 0 and sorted(r3["adopted"]) == sorted(NESTED) and proxy.ops() == ["ListObjectsV2"]

    # a changed object (same size) and a locally modified file are fetched again
    put(s3, bucket, "model.safetensors", b"n" * 3000)
    (dest / "sdxl" / "deep" / "y.bin").write_bytes(b"local edit")
    r4 = s3sync.download(c, bucket, "", str(dest))
    assert sorted(r4["transferred"]) == ["model.safetensors", "sdxl/deep/y.bin"]
    assert (dest / "model.safetensors").read_bytes() == b"n" * 3000
    assert (dest / "sdxl" / "deep" / "y.bin").read_bytes() == NESTED["sdxl/deep/y.bin"]


def test_prefix_include_exclude_and_dry_run(s3, bucket, client, tmp_path):
    for key, data in NESTED.items():
        put(s3, bucket, key, data)
    dest = tmp_path / "d"
    plan = s3sync.download(client, bucket, "/sdxl/", str(dest), include=["*.safetensors", "*.bin"],
                           exclude=["deep/er/*"], dry_run=True)
    assert plan["dry_run"] and plan["changed"] and plan["files"] == 2
    assert sorted(p["key"] for p in plan["plan"]) == ["sdxl/a b/ü ñ.safetensors", "sdxl/deep/y.bin"]
    assert plan["requests"] == {"ListObjectsV2": 1}
    assert not dest.exists()
    r = s3sync.download(client, bucket, "sdxl", str(dest), include=["*.safetensors", "*.bin"], exclude=["deep/er/*"])
    assert sorted(tree(dest)) == sorted([s3sync.STATE_FILE, "a b/ü ñ.safetensors", "deep/y.bin"])
    assert r["transferred"] == plan["transferred"]


def test_multipart_object_ranged_download_and_adoption(s3, bucket, client, tmp_path):
    data = put_multipart(s3, bucket, "big/model.safetensors", os.urandom(11 * MiB + 123))
    head = s3.head_object(Bucket=bucket, Key="big/model.safetensors")
    assert head["ETag"].strip('"').endswith("-3")
    dest = tmp_path / "d"
    r = s3sync.download(client, bucket, "big", str(dest), multipart_threshold=MiB, part_size=MiB, workers=4)
    # no full-object checksum: the ranges follow the 3 parts (HEAD ?partNumber=1 gives their size), and each part's
    # MD5 is computed while it streams
    assert r["files"] == 1 and r["requests"] == {"ListObjectsV2": 1, "HeadObject": 2, "GetObject": 3}
    assert hashlib.sha256((dest / "model.safetensors").read_bytes()).digest() == hashlib.sha256(data).digest()
    assert sorted(os.listdir(dest)) == [s3sync.STATE_FILE, "model.safetensors"]
    os.unlink(dest / s3sync.STATE_FILE)
    r = s3sync.download(client, bucket, "big", str(dest), multipart_threshold=MiB, part_size=MiB)
    assert r["adopted"] == ["model.safetensors"] and r["requests"] == {"ListObjectsV2": 1}


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
        s3sync.download(client, bucket, "", str(dest), multipart_threshold=threshold, part_size=128 * KiB, workers=1)
    assert "integrity check failed for 'm.bin'" in str(e.value)
    assert e.value.exit_code == s3sync.INTEGRITY_EXIT_CODE
    assert hits
    left = os.listdir(dest)
    assert "m.bin" not in left and not [n for n in left if s3sync.TEMP_SUFFIX in n]
    monkeypatch.setattr(S3Client, "get_object", original)
    r = s3sync.download(client, bucket, "", str(dest), multipart_threshold=threshold, part_size=128 * KiB)
    assert "m.bin" in r["transferred"] and (dest / "m.bin").read_bytes() == data


def test_interrupted_ranged_download_resumes(s3, bucket, client, tmp_path, monkeypatch):
    data = put(s3, bucket, "r.bin", os.urandom(2 * MiB))
    original = S3Client.get_object
    calls = []

    def flaky(self, *a, **kw):
        calls.append(kw.get("start"))
        if len(calls) > 5:
            raise TransientError("simulated network loss")
        return original(self, *a, **kw)

    monkeypatch.setattr(S3Client, "get_object", flaky)
    dest = tmp_path / "d"
    with pytest.raises(TransientError):
        s3sync.download(client, bucket, "", str(dest), multipart_threshold=256 * KiB, part_size=128 * KiB, workers=1)
    assert not (dest / "r.bin").exists()
    assert (dest / ".r.bin.vsync-part").exists() and (dest / ".r.bin.vsync-part.json").exists()
    monkeypatch.setattr(S3Client, "get_object", original)
    before = client.stats["GetObject"]
    r = s3sync.download(client, bucket, "", str(dest), multipart_threshold=256 * KiB, part_size=128 * KiB)
    assert r["resumed"] == ["r.bin"]
    assert client.stats["GetObject"] - before == 16 - 5  # only the missing ranges
    assert (dest / "r.bin").read_bytes() == data
    assert sorted(os.listdir(dest)) == [s3sync.STATE_FILE, "r.bin"]

    # a temp file of an object that changed meanwhile is not resumed
    calls.clear()
    monkeypatch.setattr(S3Client, "get_object", flaky)
    (dest / "r.bin").unlink()
    with pytest.raises(TransientError):
        s3sync.download(client, bucket, "", str(dest), multipart_threshold=256 * KiB, part_size=128 * KiB, workers=1)
    new = put(s3, bucket, "r.bin", os.urandom(2 * MiB))
    monkeypatch.setattr(S3Client, "get_object", original)
    r = s3sync.download(client, bucket, "", str(dest), multipart_threshold=256 * KiB, part_size=128 * KiB)
    assert r["resumed"] == [] and (dest / "r.bin").read_bytes() == new


def test_object_deleted_after_the_listing_is_skipped(s3, bucket, client, tmp_path, monkeypatch):
    put(s3, bucket, "real.bin", b"r")
    original = S3Client.list_objects

    def with_ghost(self, *a, **kw):
        yield from original(self, *a, **kw)
        yield {"key": "ghost.bin", "size": 5, "etag": hashlib.md5(b"ghost").hexdigest(),  # noqa: S324
               "last_modified": None}

    monkeypatch.setattr(S3Client, "list_objects", with_ghost)
    r = s3sync.download(client, bucket, "", str(tmp_path))
    assert r["transferred"] == ["real.bin"] and r["vanished"] == ["ghost.bin"]
    assert sorted(os.listdir(tmp_path)) == [s3sync.STATE_FILE, "real.bin"]


def test_delete_only_touches_managed_files(s3, bucket, client, tmp_path):
    put(s3, bucket, "keep.bin", b"k")
    put(s3, bucket, "sub/gone.bin", b"g")
    dest = tmp_path / "d"
    s3sync.download(client, bucket, "", str(dest))
    (dest / "manual.safetensors").write_bytes(b"placed by hand")
    (dest / ".other.vsync-part").write_bytes(b"temp of someone")
    s3.delete_object(Bucket=bucket, Key="sub/gone.bin")
    r = s3sync.download(client, bucket, "", str(dest))
    assert r["deleted"] == 0 and (dest / "sub" / "gone.bin").exists()
    plan = s3sync.download(client, bucket, "", str(dest), delete=True, dry_run=True)
    assert plan["deleted"] == 1 and plan["deleted_paths"] == [str(dest / "sub" / "gone.bin")]
    assert (dest / "sub" / "gone.bin").exists()
    r = s3sync.download(client, bucket, "", str(dest), delete=True)
    assert r["deleted"] == 1 and not (dest / "sub").exists()
    assert sorted(os.listdir(dest)) == [".other.vsync-part", s3sync.STATE_FILE, "keep.bin", "manual.safetensors"]
    assert s3sync.download(client, bucket, "", str(dest), delete=True)["changed"] is False


def test_path_escape_key_is_refused(s3, bucket, minio, tmp_path):
    # MinIO itself refuses ".." keys, so a proxy rewrites the listing (same length) as a hostile server would
    put(s3, bucket, "fine.bin", b"f")
    put(s3, bucket, "zz/evil", b"e")
    p = ByteProxy(minio.port, rewrite=[(b"<Key>zz/evil</Key>", b"<Key>../evil</Key>")])
    try:
        dest = tmp_path / "inner" / "d"
        with pytest.raises(GpuWorkerError) as e:
            s3sync.download(client_for(p.endpoint, minio), bucket, "", str(dest))
        assert "refusing object key '../evil'" in str(e.value) and "escape" in str(e.value)
        assert not dest.exists() and not (tmp_path / "inner" / "evil").exists()
        assert [op for op in p.ops() if op != "ListObjectsV2"] == []
    finally:
        p.close()


def test_not_enough_free_space_is_refused(s3, bucket, client, tmp_path, monkeypatch):
    put(s3, bucket, "a.bin", b"x" * 5000)
    monkeypatch.setattr(s3sync.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(GpuWorkerError) as e:
        s3sync.download(client, bucket, "", str(tmp_path / "d"))
    assert "not enough free space" in str(e.value) and "4.9 KiB" in str(e.value)
    assert not (tmp_path / "d" / "a.bin").exists()


def test_owner_and_group_are_applied(s3, bucket, client, tmp_path):
    import grp
    import pwd
    put(s3, bucket, "sub/o.bin", b"o")
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    dest = tmp_path / "d"
    s3sync.download(client, bucket, "", str(dest), owner=user, group=group)
    st = os.stat(dest / "sub" / "o.bin")
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    with pytest.raises(GpuWorkerError) as e:
        s3sync.download(client, bucket, "", str(dest), owner="no-such-user-vs")
    assert "unknown user" in str(e.value)


def test_upload_nested_multipart_metadata_idempotent_and_delete(s3, bucket, client, tmp_path):
    src = tmp_path / "out"
    (src / "2026" / "a b").mkdir(parents=True)
    (src / "img.png").write_bytes(b"\x89PNG" + os.urandom(1000))
    (src / "2026" / "a b" / "ü.json").write_text('{"x": 1}')
    big = os.urandom(11 * MiB + 5)
    (src / "2026" / "video.mp4").write_bytes(big)
    plan = s3sync.upload(client, bucket, "renders", str(src), dry_run=True)
    assert plan["files"] == 3 and "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert not (src / s3sync.STATE_FILE).exists()
    r = s3sync.upload(client, bucket, "renders", str(src), multipart_threshold=5 * MiB, part_size=5 * MiB)
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

    r2 = s3sync.upload(client, bucket, "renders", str(src), multipart_threshold=5 * MiB, part_size=5 * MiB)
    assert not r2["changed"] and r2["skipped"] == 3 and r2["requests"] == {"ListObjectsV2": 1}
    os.unlink(src / s3sync.STATE_FILE)
    r3 = s3sync.upload(client, bucket, "renders", str(src), multipart_threshold=5 * MiB, part_size=5 * MiB)
    assert not r3["changed"] and len(r3["adopted"]) == 3

    (src / "img.png").unlink()
    r4 = s3sync.upload(client, bucket, "renders", str(src), delete=True, multipart_threshold=5 * MiB,
                       part_size=5 * MiB)
    assert r4["deleted_paths"] == ["renders/img.png"]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["renders/2026/a b/ü.json", "renders/2026/video.mp4"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads") is None


def test_wrong_credentials_and_missing_bucket(minio, bucket, tmp_path):
    bad = S3Client(minio.endpoint, minio.access_key, "wrong-secret-value", retries=0)
    with pytest.raises(GpuWorkerError) as e:
        s3sync.download(bad, bucket, "", str(tmp_path))
    msg = str(e.value)
    assert "rejected the credentials" in msg and minio.access_key in msg and "MINIO_SECRET_KEY" in msg
    assert "wrong-secret-value" not in msg and minio.secret_key not in msg
    unknown = S3Client(minio.endpoint, "nobody", minio.secret_key, retries=0)
    with pytest.raises(GpuWorkerError) as e:
        s3sync.download(unknown, bucket, "", str(tmp_path))
    assert "InvalidAccessKeyId" in str(e.value) and "MINIO_ACCESS_KEY" in str(e.value)
    good = client_for(minio.endpoint, minio)
    with pytest.raises(GpuWorkerError) as e:
        s3sync.download(good, "no-such-bucket-vs", "", str(tmp_path))
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
            s3sync.download(client, "models", "", str(dest), workers=1, progress=progress)
        msg = str(e.value)
        assert f"cannot reach MinIO at {srv.endpoint}" in msg and "MINIO_ENDPOINT" in msg
        assert "after 3 attempts" in msg
        for name in os.listdir(dest):
            if name in files:
                assert (dest / name).read_bytes() == files[name]  # complete files only under final names
            else:
                assert name == s3sync.STATE_FILE
        srv.resume()
        r = s3sync.download(client, "models", "", str(dest))
        assert tree(dest).items() >= files.items() and r["files"] + r["skipped"] == 12
    finally:
        srv.stop()


def test_object_manifest_reads_metadata(s3, bucket, client):
    put(s3, bucket, "ck/a.safetensors", b"a", Metadata={"original-filename": "A Model.safetensors"})
    put(s3, bucket, "ck/sub/b.ckpt", b"bb")
    m = s3sync.object_manifest(client, bucket, "ck")
    assert [(x["name"], x["original_filename"], x["size"]) for x in m] == [
        ("a.safetensors", "A Model.safetensors", 1), ("sub/b.ckpt", "b.ckpt", 2)]
    assert m[0]["etag"] == hashlib.md5(b"a").hexdigest() and m[0]["last_modified"]  # noqa: S324
