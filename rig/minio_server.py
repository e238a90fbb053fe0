#!/usr/bin/env python3
# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Start and stop a real MinIO server on 127.0.0.1 for tests, the demo and molecule.

Library use (pytest fixture)::

    with MinioServer.start() as srv:
        srv.endpoint, srv.access_key, srv.secret_key

Command line (demo, molecule)::

    rig/minio_server.py start --state-dir DIR [--port N] [--address 0.0.0.0]
    rig/minio_server.py stop --state-dir DIR

``start`` writes ``DIR/minio.json`` (endpoint, keys, pid) with mode 0600 and prints the endpoint.
The binary comes from rig/build-minio.sh (built once into ~/.cache/visionsuit-gpuworker).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def minio_binary() -> str:
    env = os.environ.get("VISIONSUIT_MINIO_BIN")
    if env:
        return env
    out = subprocess.run([str(HERE / "build-minio.sh")], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def _certs_args(certs_dir):
    return ["--certs-dir", certs_dir] if certs_dir else []


@dataclass
class MinioServer:
    endpoint: str
    access_key: str
    secret_key: str
    data_dir: str
    pid: int
    port: int
    address: str = "127.0.0.1"
    owns_data_dir: bool = False
    certs_dir: str | None = None  # MinIO's --certs-dir (public.crt, private.key): the server speaks https
    ca_file: str | None = None  # the CA that signed public.crt, used to wait for readiness
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @classmethod
    def start(cls, data_dir: str | None = None, port: int | None = None, address: str = "127.0.0.1",
              log_path: str | None = None, timeout: float = 60.0, certs_dir: str | None = None,
              ca_file: str | None = None) -> MinioServer:
        binary = minio_binary()
        owns = data_dir is None
        data_dir = data_dir or tempfile.mkdtemp(prefix="vs-minio-")
        port = port or free_port()
        console = free_port()
        access_key = "vs" + secrets.token_hex(6)
        secret_key = secrets.token_urlsafe(24)
        env = dict(os.environ, MINIO_ROOT_USER=access_key, MINIO_ROOT_PASSWORD=secret_key,
                   MINIO_BROWSER="off", MINIO_UPDATE="off", MINIO_CI_CD="1")
        log = open(log_path or os.path.join(data_dir, ".minio.log"), "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [binary, "server", "--quiet", "--address", f"{address}:{port}",
             "--console-address", f"127.0.0.1:{console}", *_certs_args(certs_dir), os.path.join(data_dir, "data")],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        host = "127.0.0.1" if address in ("0.0.0.0", "") else address  # noqa: S104
        scheme = "https" if certs_dir else "http"
        srv = cls(endpoint=f"{scheme}://{host}:{port}", access_key=access_key, secret_key=secret_key,
                  data_dir=data_dir, pid=proc.pid, port=port, address=address, owns_data_dir=owns,
                  certs_dir=certs_dir, ca_file=ca_file, _proc=proc)
        srv.wait_ready(timeout)
        return srv

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"minio exited with {self._proc.returncode}; see {self.data_dir}/.minio.log")
            try:
                context = ssl.create_default_context(cafile=self.ca_file) if self.certs_dir else None
                with urllib.request.urlopen(self.endpoint + "/minio/health/ready", timeout=2, context=context) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"minio did not become ready on {self.endpoint} within {timeout}s")

    def pause(self) -> None:
        """Stop the server process but keep the data (for fault-injection tests)."""
        self._terminate()

    def resume(self, timeout: float = 60.0) -> None:
        binary = minio_binary()
        env = dict(os.environ, MINIO_ROOT_USER=self.access_key, MINIO_ROOT_PASSWORD=self.secret_key,
                   MINIO_BROWSER="off", MINIO_UPDATE="off", MINIO_CI_CD="1")
        log = open(os.path.join(self.data_dir, ".minio.log"), "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [binary, "server", "--quiet", "--address", f"{self.address}:{self.port}",
             "--console-address", f"127.0.0.1:{free_port()}", *_certs_args(self.certs_dir),
             os.path.join(self.data_dir, "data")],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.pid = self._proc.pid
        self.wait_ready(timeout)

    def _terminate(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(100):
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            if self._proc is not None and self._proc.poll() is not None:
                break
            time.sleep(0.05)
        else:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._proc is not None:
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        self._terminate()
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> MinioServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("--state-dir", required=True)
    s.add_argument("--port", type=int)
    s.add_argument("--address", default="127.0.0.1")
    t = sub.add_parser("stop")
    t.add_argument("--state-dir", required=True)
    args = p.parse_args(argv)
    state = Path(args.state_dir)
    info = state / "minio.json"
    if args.cmd == "start":
        if info.exists():
            try:
                endpoint = json.loads(info.read_text())["endpoint"]
                with urllib.request.urlopen(endpoint + "/minio/health/live", timeout=2):
                    pass
                print(endpoint)
                return 0
            except (OSError, ValueError, KeyError):
                info.unlink()  # left by a run that was killed: start a fresh server
        state.mkdir(parents=True, exist_ok=True)
        srv = MinioServer.start(data_dir=str(state), port=args.port, address=args.address)
        tmp = info.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(srv.as_dict(), f, indent=2)
        os.replace(tmp, info)
        print(srv.endpoint)
        return 0
    try:
        d = json.loads(info.read_text())
    except (OSError, ValueError):
        info.unlink(missing_ok=True)
        return 0
    d.pop("owns_data_dir", None)
    MinioServer(**d, owns_data_dir=False).stop()
    info.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
