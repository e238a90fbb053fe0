# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pytest fixtures for the ComfyUI stand-in (rig/comfyui-standin): a real subprocess on a free port.

    def test_x(comfy_standin):                       # default options
        status, body = comfy_standin.post_json("/prompt", {...})

    def test_y(standin_factory):
        srv = standin_factory(delay=0.2, fail_node="3")  # fault options as on the command line
        srv.control(fail_node=None)                      # ... or changed at runtime (POST /standin/control)

Every server is stopped (SIGTERM, then SIGKILL) when the test ends, whatever happened.
"""
from __future__ import annotations

import base64
import http.client
import importlib.util
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STANDIN_DIR = ROOT / "rig" / "comfyui-standin"
STANDIN_MAIN = STANDIN_DIR / "main.py"
FAULT_FLAGS = ("fail_node", "delay", "drop_ws_after", "html_responses", "crash", "history_lag", "history_lag_share",
               "previews")


def safetensors_bytes(tensors=None, metadata=None) -> bytes:
    """A small valid safetensors file (written independently of the stand-in's own code)."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name, raw in (tensors or {}).items():
        header[name] = {"dtype": "U8", "shape": [len(raw)], "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + data


def _standin_models():
    """The stand-in's own ``standin/models.py`` (standard library only, no relative imports), loaded by path
    without writing bytecode into the stand-in's tree."""
    spec = importlib.util.spec_from_file_location("comfyui_standin_models", STANDIN_DIR / "standin" / "models.py")
    module = importlib.util.module_from_spec(spec)
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


_MODELS = _standin_models()
# A small checkpoint the stand-in's CheckpointLoaderSimple recognises (a tensor under "model.diffusion_model."),
# as a real ComfyUI needs: checkpoint_bytes(data=b"...", tensors=None, metadata=None). A safetensors file without
# such a key fails at execution with ComfyUI's "ERROR: Could not detect model type of: <path>".
checkpoint_bytes = _MODELS.checkpoint_bytes
CHECKPOINT_KEY_PREFIX = _MODELS.CHECKPOINT_KEY_PREFIX


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    @property
    def content_type(self):
        return self.headers.get("Content-Type")

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class StandinServer:
    """A running stand-in; ``url``, ``port``, ``base_dir``, ``output_dir``, ``proc`` and HTTP helpers."""

    def __init__(self, base_dir: Path, port: int, args, env, log_path: Path):
        self.base_dir, self.port, self.host = Path(base_dir), port, "127.0.0.1"
        self.url = f"http://{self.host}:{port}"
        self.output_dir = self.base_dir / "output"
        self.input_dir = self.base_dir / "input"
        self.log_path = log_path
        cmd = [sys.executable, str(STANDIN_MAIN), "--listen", self.host, "--port", str(port),
               "--base-directory", str(self.base_dir), "--cpu", "--disable-auto-launch"] + list(args)
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(STANDIN_DIR))

    # ------------------------------------------------------------------ lifecycle
    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stand-in exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.request("GET", "/system_stats", timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"stand-in did not answer /system_stats within {timeout}s:\n{self.log()}")

    def stop(self, timeout=10.0):
        """SIGTERM and wait (then SIGKILL); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        try:
            self._log.flush()
        except ValueError:
            pass
        return self.log_path.read_text(errors="replace")

    # ------------------------------------------------------------------ HTTP
    def request(self, method, path, body=None, headers=None, timeout=10.0) -> Response:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode("utf-8")
        elif isinstance(body, str):
            body = body.encode("utf-8")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Response(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def get(self, path, **kw) -> Response:
        return self.request("GET", path, **kw)

    def get_json(self, path):
        resp = self.get(path)
        assert resp.status == 200, (path, resp.status, resp.body[:300])
        return resp.json()

    def post_json(self, path, obj):
        """(status, parsed JSON body or raw bytes when it is not JSON)."""
        resp = self.request("POST", path, body=obj, headers={"Content-Type": "application/json"})
        try:
            return resp.status, resp.json()
        except ValueError:
            return resp.status, resp.body

    def control(self, **faults):
        """Change fault options at runtime (None switches one off; reset=True clears all); returns the state."""
        status, body = self.post_json("/standin/control", faults)
        assert status == 200, body
        return body

    def state(self):
        return self.get_json("/standin/state")

    # ------------------------------------------------------------------ helpers
    def add_model(self, folder, name, valid=True, content=None) -> Path:
        """Drop a model file into models/<folder>/<name>: a small valid safetensors file (in ``checkpoints``, one
        that CheckpointLoaderSimple recognises: :func:`checkpoint_bytes`), or junk."""
        path = self.base_dir / "models" / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None and not valid:
            content = b"this is not a model file\n" * 4
        elif content is None and folder == "checkpoints":
            content = checkpoint_bytes(b"\x01\x02\x03\x04", metadata={"standin": "1"})
        elif content is None:
            content = safetensors_bytes({"w": b"\x01\x02\x03\x04"}, {"standin": "1"})
        path.write_bytes(content)
        return path

    def submit(self, prompt, client_id=None, **extra):
        body = dict(extra, prompt=prompt)
        if client_id is not None:
            body["client_id"] = client_id
        status, resp = self.post_json("/prompt", body)
        assert status == 200, resp
        return resp["prompt_id"]

    def wait_history(self, prompt_id, timeout=20.0):
        """The history entry of ``prompt_id`` once it has finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = self.get_json(f"/history/{prompt_id}")
            if prompt_id in hist:
                return hist[prompt_id]
            time.sleep(0.03)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout}s")

    def wait_idle(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get_json("/prompt")["exec_info"]["queue_remaining"] == 0:
                return
            time.sleep(0.03)
        raise AssertionError(f"queue not empty after {timeout}s")

    def ws(self, client_id=None, timeout=10.0) -> WsClient:
        return WsClient(self.host, self.port, "/ws?clientId=%s" % (client_id or uuid.uuid4().hex), timeout)


class WsClient:
    """Minimal RFC 6455 client for tests: masked frames out, text frames in."""

    def __init__(self, host, port, path, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.binary = []  # payloads of the binary frames seen by recv() (preview images)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status_line = head.split(b"\r\n")[0].decode()
        self.handshake_headers = head.decode("latin-1")
        if " 101 " not in self.status_line + " ":
            raise ConnectionError(f"handshake refused: {self.status_line}")
        self.close_code = None

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send_frame(self, opcode, payload=b"", fin=True, masked=True):
        head = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        mask_bit = 0x80 if masked else 0
        if n < 126:
            head += bytes([mask_bit | n])
        elif n < 65536:
            head += bytes([mask_bit | 126]) + struct.pack(">H", n)
        else:
            head += bytes([mask_bit | 127]) + struct.pack(">Q", n)
        if masked:
            mask = os.urandom(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            head += mask
        self.sock.sendall(head + payload)

    def send_json(self, obj):
        self.send_frame(0x1, json.dumps(obj).encode())

    def recv_frame(self, timeout=None):
        if timeout is not None:
            self.sock.settimeout(timeout)
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", self._read(8))
        assert not b1 & 0x80, "server frames must not be masked"
        return b0 & 0x0F, self._read(n)

    def recv(self, timeout=10.0):
        """The next JSON message; pings are answered, a close frame raises ConnectionError."""
        while True:
            opcode, payload = self.recv_frame(timeout)
            if opcode == 0x1:
                return json.loads(payload.decode())
            if opcode == 0x2:  # binary (preview images): kept in ``binary``, never returned
                self.binary.append(payload)
            elif opcode == 0x9:
                self.send_frame(0xA, payload)
            elif opcode == 0x8:
                self.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                raise ConnectionError(f"closed by server ({self.close_code})")

    def recv_until(self, predicate, timeout=15.0):
        """All messages up to and including the first one for which predicate(msg) is true."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                got = [m.get("type") for m in out]
                raise AssertionError(f"no matching websocket message in {timeout}s; got {got}")
            msg = self.recv(left)
            out.append(msg)
            if predicate(msg):
                return out

    def close(self):
        try:
            self.send_frame(0x8, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def fault_args(**options):
    """Command-line flags for fault options, e.g. fault_args(delay=0.5) -> ["--standin-delay", "0.5"]."""
    args = []
    for name, value in options.items():
        if name not in FAULT_FLAGS:
            raise TypeError(f"unknown stand-in option {name!r}")
        if value is not None:
            args += ["--standin-" + name.replace("_", "-"), str(value)]
    return args


# The files a fresh ComfyUI 0.3.64 checkout has in its run-time folders (the stand-in's tree has them too).
CHECKOUT_PLACEHOLDERS = ("output/_output_images_will_be_put_here", "input/example.png")


def seed_checkout_files(base_dir) -> None:
    """Give ``base_dir`` the placeholder files a fresh checkout has in output/ and input/, unless present.
    (models/*/put_*_here are left out: tests count the files of model folders.)"""
    base_dir = Path(base_dir)
    for rel in CHECKOUT_PLACEHOLDERS:
        src, dst = STANDIN_DIR / rel, base_dir / rel
        if src.is_file() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())


def start_standin(base_dir, args=(), env=None, attempts=3, **faults) -> StandinServer:
    """Start a stand-in on a free port (a few attempts in case the port was taken meanwhile); a base directory
    that is not the stand-in's own gets the placeholder files of a fresh ComfyUI checkout first."""
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    if base_dir.resolve() != STANDIN_DIR.resolve():
        seed_checkout_files(base_dir)
    full_env = dict(os.environ)
    for key in list(full_env):
        if key.startswith("COMFYUI_STANDIN_"):
            del full_env[key]
    full_env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep the stand-in's source tree clean
    full_env.update(env or {})
    last = None
    for attempt in range(attempts):
        srv = StandinServer(base_dir, free_port(), list(args) + fault_args(**faults), full_env,
                            base_dir.parent / f"{base_dir.name}-standin-{attempt}.log")
        try:
            return srv.wait_ready()
        except RuntimeError as exc:
            srv.stop()
            last = exc
    raise last


@pytest.fixture
def standin_factory(tmp_path_factory):
    """Call it to start stand-ins: ``standin_factory(delay=0.1, args=["--cache-none"], env={...})``."""
    started = []

    def factory(args=(), env=None, base_dir=None, **faults):
        base = Path(base_dir) if base_dir else tmp_path_factory.mktemp("comfy") / "base"
        srv = start_standin(base, args=args, env=env, **faults)
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.stop()


@pytest.fixture
def comfy_standin(standin_factory):
    """One stand-in with default options (temp base dir, free port); stopped after the test."""
    return standin_factory()


# A recorded ComfyUI error for the fail_message fault: torch.load(weights_only=True) refusing a pickled
# checkpoint, as ComfyUI reports it (3 newlines, ~600 chars)
TORCH_WEIGHTS_ONLY = (
    "Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will likely succeed, "
    "but it can result in arbitrary code execution. Do it only if you got the file from a trusted source.\n"
    " Please file an issue with the following so that we can make `weights_only=True` compatible with your use "
    "case: WeightsUnpickler error: Unsupported global: GLOBAL pytorch_lightning.callbacks.model_checkpoint."
    "ModelCheckpoint was not an allowed global by default. Please use `torch.serialization.add_safe_globals("
    "[ModelCheckpoint])` to allowlist this global if you trust this class/function.\n\n"
    "Check the documentation of torch.load to learn more about types accepted by default with weights_only "
    "https://pytorch.org/docs/stable/generated/torch.load.html.")
