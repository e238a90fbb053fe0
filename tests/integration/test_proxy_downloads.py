# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""visionsuit_proxy_env end to end on localhost: the environment that the comfyui role's install phase gets (the
expression of its main.yml, with the role's defaults) sends git, pip and get_url through a real forward proxy
(rig/http_proxy.py), pip to the PyPI mirror of PIP_INDEX_URL, while a loopback health check (service_ready) and a
loopback download go direct.

The mirror is a local http.server (a bare git repository served over git's dumb HTTP protocol, a PEP 503 index
with one wheel, a key file). It is addressed as mirror.test, a name only the proxy resolves (to 127.0.0.1): a
download that succeeds came through the proxy. The proxy connects to nothing else; no test reaches the internet.
"""
from __future__ import annotations

import functools
import http.server
import socket
import subprocess
import sys
import threading
import zipfile

import pytest
import yaml

from rig.http_proxy import ProxyServer
from tests.ansible_run import ROOT, run_tasks

SECRET_PASSWORD = "pr0xy-pw-never-shown"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _wheel(path):
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("demo_pkg/__init__.py", "")
        whl.writestr("demo_pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n")
        whl.writestr("demo_pkg-1.0.dist-info/WHEEL",
                     "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr("demo_pkg-1.0.dist-info/RECORD", "")


@pytest.fixture
def mirror(tmp_path):
    """A local mirror (git, PyPI index, a file) on 127.0.0.1 and the proxy in front of it; yields (port of the
    mirror, port of the proxy, the proxy's log)."""
    root = tmp_path / "mirror"
    (root / "simple" / "demo-pkg").mkdir(parents=True)
    _wheel(root / "simple" / "demo-pkg" / "demo_pkg-1.0-py3-none-any.whl")
    (root / "key.asc").write_text("a key\n")
    work = tmp_path / "work"
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-c", "init.defaultBranch=main"]
    subprocess.run(git + ["init", "-q", str(work)], check=True)
    (work / "main.py").write_text("print('comfy')\n")
    subprocess.run(git + ["-C", str(work), "add", "main.py"], check=True)
    subprocess.run(git + ["-C", str(work), "commit", "-qm", "one"], check=True)
    subprocess.run(git + ["clone", "-q", "--bare", str(work), str(root / "repo.git")], check=True)
    subprocess.run(["git", "-C", str(root / "repo.git"), "update-server-info"], check=True)

    site = _serve(functools.partial(_QuietHandler, directory=str(root)))
    log = tmp_path / "proxy.log"
    log.write_text("")
    proxy = ProxyServer(("127.0.0.1", 0), str(log), {"mirror.test": "127.0.0.1"})
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        yield site.server_address[1], proxy.server_address[1], log
    finally:
        for server in (proxy, site):
            server.shutdown()
            server.server_close()


def _install_environment():
    """The environment keyword of the comfyui role's install phase (roles/comfyui/tasks/main.yml)."""
    tasks = yaml.safe_load((ROOT / "roles" / "comfyui" / "tasks" / "main.yml").read_text())
    install = next(t for t in tasks if t["name"] == "Install")
    assert "environment" in install, "the comfyui role's install phase has no proxy environment"
    return install["environment"]


def test_downloads_go_through_the_proxy_and_loopback_does_not(tmp_path, mirror):
    port, proxy_port, log = mirror
    proxy_url = f"http://tester:{SECRET_PASSWORD}@127.0.0.1:{proxy_port}"
    site = f"http://mirror.test:{port}"
    defaults = yaml.safe_load((ROOT / "roles" / "comfyui" / "defaults" / "main.yml").read_text())
    role_vars = {k: v for k, v in defaults.items() if k in ("comfyui_proxy_env", "comfyui_minio_endpoint")}
    tasks = [{
        "name": "the install phase's environment",
        "vars": dict(role_vars, visionsuit_minio_endpoint="http://minio.test:9000", visionsuit_proxy_env={
            "HTTP_PROXY": proxy_url, "https_proxy": proxy_url, "no_proxy": "internal.example",
            "PIP_INDEX_URL": f"{site}/simple", "PIP_TRUSTED_HOST": "mirror.test"}),
        "environment": _install_environment(),
        "block": [
            {"name": "git", "ansible.builtin.git": {"repo": f"{site}/repo.git", "dest": str(tmp_path / "clone"),
                                                    "version": "main"}},
            {"name": "pip", "ansible.builtin.command": {"argv": [
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-cache-dir",
                "--disable-pip-version-check", "-d", str(tmp_path / "wheels"), "demo-pkg"]}},
            {"name": "get_url", "ansible.builtin.get_url": {"url": f"{site}/key.asc", "dest": str(tmp_path / "k1")}},
            {"name": "loopback get_url", "ansible.builtin.get_url": {
                "url": f"http://127.0.0.1:{port}/key.asc", "dest": str(tmp_path / "k2")}},
            {"name": "health check", "visionsuit.gpuworker.service_ready": {
                "url": f"http://127.0.0.1:{port}/key.asc", "timeout": 10}},
            {"name": "env", "ansible.builtin.command": {"argv": ["env"]}, "no_log": True},
        ],
    }]
    results, proc = run_tasks(tmp_path, tasks)
    output = proc.stdout + proc.stderr
    assert SECRET_PASSWORD not in output.replace(str(tmp_path), "")  # the proxy URL is never printed
    for name in ("git", "pip", "get_url", "loopback get_url", "health check"):
        assert name in results and not results[name].get("failed"), (
            name, {k: {f: r.get(f) for f in ("msg", "stderr")} for k, r in results.items()})
    assert (tmp_path / "clone" / "main.py").exists()
    assert (tmp_path / "wheels" / "demo_pkg-1.0-py3-none-any.whl").exists()

    lines = log.read_text().splitlines()
    assert f"GET mirror.test:{port} /repo.git/info/refs?service=git-upload-pack" in lines, lines
    assert f"GET mirror.test:{port} /simple/demo-pkg/" in lines, lines
    assert f"GET mirror.test:{port} /key.asc" in lines, lines
    assert not [line for line in lines if "127.0.0.1" in line or "localhost" in line], lines
    assert len([line for line in lines if line.endswith("/key.asc")]) == 1, lines


def test_rig_proxy_tunnels_connect_and_refuses_other_hosts(tmp_path, mirror):
    port, proxy_port, log = mirror
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock:
        sock.sendall(f"CONNECT mirror.test:{port} HTTP/1.1\r\nHost: mirror.test:{port}\r\n\r\n".encode())
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.0 200"), reply
        sock.sendall(b"GET /key.asc HTTP/1.0\r\nHost: mirror.test\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.0 200") and data.endswith(b"a key\n"), data
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock:
        sock.sendall(b"GET http://example.com/ HTTP/1.0\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.0 403")
    assert log.read_text().splitlines() == [f"CONNECT mirror.test:{port} ", "GET example.com:80 /"]
