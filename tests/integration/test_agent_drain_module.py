# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""agent_drain run by ansible-playbook against the real agent (its HTTP server, worker thread, job store), the
ComfyUI stand-in rendering slowly (``delay`` per node) and a real MinIO.

One job renders while the module drains: a short timeout fails naming the job and undoes the drain (the job goes
on and ends ``done`` on its first attempt), ``force`` warns and keeps the drain, a longer timeout returns once the
job ended; while drained a new job is refused with 503 + Retry-After; resume lets it in. Check mode reads only.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import uuid

import pytest

from rig.standin_fixtures import checkpoint_bytes, safetensors_bytes
from tests.ansible_run import run_tasks
from visionsuit_gpu_agent.config import check
from visionsuit_gpu_agent.server import make_server
from visionsuit_gpu_agent.worker import Agent

pytestmark = pytest.mark.integration
TOKEN = "drain-" + uuid.uuid4().hex


def _config(tmp_path, minio, bucket, comfy):
    base = comfy.base_dir
    return {
        "server": {"listen": "127.0.0.1", "port": 0, "api_token": TOKEN},
        "state_dir": str(tmp_path / "state"),
        "minio": {"endpoint": minio.endpoint, "access_key": minio.access_key, "secret_key": minio.secret_key,
                  "bucket_checkpoints": bucket, "bucket_loras": bucket, "bucket_outputs": bucket,
                  "outputs_prefix": "out", "retries": 1, "backoff": 0.05, "timeout": 5},
        "comfyui": {"url": comfy.url, "checkpoints_dir": str(base / "models" / "checkpoints"),
                    "loras_dir": str(base / "models" / "loras"), "output_dir": str(base / "output"),
                    "submit_retries": 1, "retry_delay": 0.05, "unreachable_grace": 1.0, "poll_interval": 0.1,
                    "health_interval": 0.5, "timeout": 120},
        "jobs": {"reserve_bytes": 0, "shutdown_grace": 5, "retry_after": 9},
        "callback": {"attempts": 1, "backoff": 0.05, "timeout": 2},
        "defaults": {"steps": 2, "width": 64, "height": 64},
    }


class HttpAgent:
    def __init__(self, doc):
        self.agent = Agent(check(doc)).start()
        self.httpd = make_server(self.agent)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.agent.stop(grace=10)
        self.agent.store.close()

    def request(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        headers = {"Authorization": "Bearer " + TOKEN}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, dict(resp.getheaders()), json.loads(raw) if raw else None
        finally:
            conn.close()

    def job(self, job_id):
        return self.request("GET", f"/jobs/{job_id}")[2]

    def wait(self, job_id, states, timeout=60.0):
        deadline = time.monotonic() + timeout
        doc = None
        while time.monotonic() < deadline:
            doc = self.job(job_id)
            if doc["state"] in states:
                return doc
            time.sleep(0.05)
        raise AssertionError(f"{job_id} not in {states} after {timeout} s: {doc}")


@pytest.fixture
def agent(tmp_path, minio, s3, bucket, comfy_standin):
    s3.put_object(Bucket=bucket, Key="ckpt/base.safetensors", Body=checkpoint_bytes(b"ckpt"))
    s3.put_object(Bucket=bucket, Key="loras/style", Body=safetensors_bytes({"w": b"lora"}))
    running = HttpAgent(_config(tmp_path, minio, bucket, comfy_standin))
    running.comfy = comfy_standin
    yield running
    running.stop()


def envelope(job_id):
    return {"job_id": job_id, "base_models": [{"key": "ckpt/base.safetensors"}],
            "loras": [{"key": "loras/style", "strength": 0.7}],
            "parameters": {"prompt": "a lighthouse at dusk", "seed": 42}}


def task(name, url, **options):
    return {"name": name, "visionsuit.gpuworker.agent_drain": dict({"url": url, "token": TOKEN}, **options)}


def test_drain_with_a_running_job_times_out_naming_it_then_waits_for_it_and_resume_lets_jobs_in(agent, tmp_path):
    agent.comfy.control(delay=3.0)   # each node 3 s: the job renders for ~20 s unless the delay is lowered
    assert agent.request("POST", "/jobs", envelope("long-1"))[0] == 202
    agent.wait("long-1", ("rendering",))

    results, proc = run_tasks(tmp_path, [
        dict(task("check", agent.url, slot=0, timeout=600), check_mode=True),
        dict(task("too short", agent.url, slot=0, timeout=1), ignore_errors=True),
        task("forced", agent.url, slot=0, timeout=0, force=True),
    ])
    check = results["check"]
    assert check["changed"] is True and check["idle"] is False, check
    assert check["running"] == [{"job_id": "long-1", "slot": 0}] and "would drain slot 0" in check["msg"]
    short = results["too short"]
    assert short["failed"] is True, short
    assert "long-1 (slot 0)" in short["msg"] and "visionsuit_drain_timeout (now 1 s)" in short["msg"]
    assert "-e visionsuit_force_restart=true" in short["msg"] and short["undone"] is True
    forced = results["forced"]
    assert forced["forced"] is True and forced["changed"] is True and not forced.get("failed"), forced
    assert any("long-1 (slot 0)" in w for w in forced.get("warnings", [])), forced
    assert TOKEN not in proc.stdout + proc.stderr
    assert agent.job("long-1")["state"] == "rendering"   # untouched by all of it
    status, headers, body = agent.request("POST", "/jobs", envelope("new-1"))
    assert status == 503 and headers.get("Retry-After") == "9" and body["draining"] is True, (status, body)

    agent.comfy.control(delay=0.05)   # the rest of the job goes fast
    results, _ = run_tasks(tmp_path, [task("drain", agent.url, slot=0, timeout=120),
                                      task("again", agent.url, slot=0, timeout=120)])
    assert results["drain"]["idle"] is True and results["drain"]["running"] == [], results["drain"]
    assert results["drain"]["changed"] is False   # drained since the forced task
    assert results["again"]["changed"] is False and results["again"]["idle"] is True
    done = agent.job("long-1")
    assert done["state"] == "done" and done["attempts"] == 1, done
    assert agent.request("POST", "/jobs", envelope("new-1"))[0] == 503

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    results, _ = run_tasks(tmp_path, [
        dict(task("resume check", agent.url, slot=0, state="resumed"), check_mode=True),
        task("resume", agent.url, slot=0, state="resumed"),
        task("resume again", agent.url, slot=0, state="resumed"),
        task("no agent", closed, slot=0, timeout=600),
    ])
    assert results["resume check"]["changed"] is True
    assert results["resume"]["changed"] is True and results["resume"]["accepting_jobs"] is True
    assert results["resume again"]["changed"] is False
    assert results["no agent"]["agent"] == "absent" and results["no agent"]["changed"] is False
    assert agent.request("POST", "/jobs", envelope("new-1"))[0] == 202
    assert agent.wait("new-1", ("done", "failed"))["state"] == "done"
