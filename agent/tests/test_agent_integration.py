# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The VisionSuit GPU agent against a real MinIO and the ComfyUI stand-in.

The agent runs in-process (its HTTP server on a free 127.0.0.1 port, worker threads) except for the restart
test, which runs it as a subprocess so it can be killed. Disk full is simulated with a 1 MiB tmpfs mounted on
the agent's cache dir when the test runs as root (mount allowed), else by making the free-space probe report
a full disk (monkeypatched ``shutil.disk_usage``); the test says which through its id.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rig.standin_fixtures import (  # noqa: F401
    TORCH_WEIGHTS_ONLY,
    checkpoint_bytes,
    comfy_standin,
    safetensors_bytes,
    standin_factory,
)
from visionsuit_gpu_agent.config import check
from visionsuit_gpu_agent.server import make_server
from visionsuit_gpu_agent.worker import Agent

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "agent" / "visionsuit_gpu_agent"

pytestmark = pytest.mark.integration
TOKEN = "t0ken-" + uuid.uuid4().hex


def model_bytes(tag: str, size: int = 0) -> bytes:
    """A LoRA-like safetensors file (no diffusion model inside): fine for LoraLoader, not for a checkpoint."""
    return safetensors_bytes({"w": tag.encode() + b"\0" * size})


def ckpt_bytes(tag: str, size: int = 0) -> bytes:
    """A checkpoint the stand-in (like ComfyUI) recognises as a model."""
    return checkpoint_bytes(tag.encode() + b"\0" * size)


def agent_config(tmp_path, minio, bucket, comfy, **over):
    base = Path(comfy.base_dir) if comfy is not None else tmp_path / "nocomfy"
    doc = {
        "server": {"listen": "127.0.0.1", "port": 0, "api_token": TOKEN},
        "state_dir": str(tmp_path / "state"),
        "minio": {"endpoint": minio.endpoint, "access_key": minio.access_key, "secret_key": minio.secret_key,
                  "bucket_checkpoints": bucket, "bucket_loras": bucket, "bucket_outputs": bucket,
                  "outputs_prefix": "out", "retries": 1, "backoff": 0.05, "timeout": 5},
        "comfyui": {"url": comfy.url if comfy is not None else "http://127.0.0.1:9",
                    "checkpoints_dir": str(base / "models" / "checkpoints"),
                    "loras_dir": str(base / "models" / "loras"), "output_dir": str(base / "output"),
                    "submit_retries": 1, "retry_delay": 0.05, "unreachable_grace": 1.0, "poll_interval": 0.1,
                    "health_interval": 0.5, "timeout": 5},
        "jobs": {"reserve_bytes": 0, "shutdown_grace": 5},
        "callback": {"attempts": 3, "backoff": 0.05, "timeout": 2},
        "defaults": {"steps": 2, "width": 64, "height": 64},
    }
    for dotted, value in over.items():
        section, _, key = dotted.partition("__")
        if key:
            doc.setdefault(section, {})[key] = value
        else:
            doc[section] = value
    return doc


class RunningAgent:
    def __init__(self, doc):
        self.cfg = check(doc)
        self.agent = Agent(self.cfg).start()
        self.httpd = make_server(self.agent)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.agent.stop(grace=10)
        self.agent.store.close()

    def request(self, method, path, body=None, token=TOKEN, headers=None):
        return http_request(self.port, method, path, body, token, headers)

    def post_job(self, envelope, token=TOKEN):
        return self.request("POST", "/jobs", envelope, token)

    def wait(self, job_id, timeout=30.0):
        return wait_job(self.port, job_id, timeout)


def http_request(port, method, path, body=None, token=TOKEN, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = "Bearer " + token
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return resp.status, dict(resp.getheaders()), parsed
    finally:
        conn.close()


def wait_job(port, job_id, timeout=30.0):
    deadline = time.monotonic() + timeout
    doc = None
    while time.monotonic() < deadline:
        status, _, doc = http_request(port, "GET", f"/jobs/{job_id}")
        assert status == 200, doc
        if doc["state"] in ("done", "failed"):
            return doc
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {doc}")


def leftovers(*dirs):
    """Temporary files (sync temp/sidecars, copy temps) anywhere under the given folders."""
    found = []
    for d in dirs:
        for root, _dirs, files in os.walk(d):
            found += [os.path.join(root, f) for f in files if ".vsync-part" in f or f.endswith(".vs-agent-tmp")]
    return found


@pytest.fixture
def env(tmp_path, minio, s3, bucket, comfy_standin):  # noqa: F811
    """Upload a checkpoint and two LoRAs, return a factory of running agents on this stand-in."""
    s3.put_object(Bucket=bucket, Key="ckpt/base-v1.safetensors", Body=ckpt_bytes("ckpt"),
                  Metadata={"original-filename": "sdxl_base.safetensors"})
    s3.put_object(Bucket=bucket, Key="loras/3f9a1c0d2b7e", Body=model_bytes("lora-a"),
                  Metadata={"original-filename": "style.safetensors"})
    s3.put_object(Bucket=bucket, Key="loras/77aa00ff", Body=model_bytes("lora-b"))
    agents = []

    def start(comfy=comfy_standin, **over):
        a = RunningAgent(agent_config(tmp_path, minio, bucket, comfy, **over))
        agents.append(a)
        return a

    start.bucket = bucket
    start.minio = minio
    start.comfy = comfy_standin
    start.tmp = tmp_path
    yield start
    for a in agents:
        a.stop()


def envelope(job_id=None, loras=(("loras/3f9a1c0d2b7e", 0.7),), **extra):
    env = {"base_models": [{"key": "ckpt/base-v1.safetensors"}],
           "loras": [{"key": k, "strength": s} for k, s in loras],
           "parameters": {"prompt": "a lighthouse at dusk", "seed": 42}}
    if job_id:
        env["job_id"] = job_id
    env.update(extra)
    return env


def list_keys(s3, bucket, prefix):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


# ---------------------------------------------------------------------------------------------- full job
def test_full_job_from_envelope_to_output_bucket(env, s3):
    agent = env()
    status, headers, doc = agent.post_job(envelope("job-full"))
    assert status == 202, doc
    assert headers["Location"] == "/jobs/job-full"
    assert doc["state"] == "queued"
    done = agent.wait("job-full")
    assert done["state"] == "done", done
    assert done["error"] is None
    keys = list_keys(s3, env.bucket, "out/job-full/")
    assert keys and keys == sorted(done["output_keys"])
    head = s3.head_object(Bucket=env.bucket, Key=keys[0])
    assert head["ContentType"] == "image/png"
    assert s3.get_object(Bucket=env.bucket, Key=keys[0])["Body"].read().startswith(b"\x89PNG")
    names = {a["kind"]: a["name"] for a in done["assets"]}
    assert names == {"checkpoint": "sdxl_base.safetensors", "lora": "style.safetensors"}
    for phase in ("queued_s", "staging_s", "rendering_s", "uploading_s", "cleanup_s", "total_s"):
        assert phase in done["timings"]
    assert done["progress"]["fraction"] == 1.0
    # clean-up: the LoRA is gone from ComfyUI, the persistent checkpoint stays, the job's output folder is gone
    models = Path(env.comfy.base_dir) / "models"
    assert not (models / "loras" / "style.safetensors").exists()
    assert (models / "checkpoints" / "sdxl_base.safetensors").exists()
    assert list((Path(env.comfy.base_dir) / "output" / "vs-agent").iterdir()) == []
    assert leftovers(agent.cfg["state_dir"], models) == []
    # health and metrics after the job
    status, _, health = agent.request("GET", "/healthz", token=None)
    assert status == 200 and health["status"] == "ok" and health["busy"] is False
    status, _, text = agent.request("GET", "/metrics", token=None)
    assert status == 200
    assert b'visionsuit_gpu_agent_jobs_total{outcome="done"} 1' in text
    assert b"visionsuit_gpu_agent_phase_seconds_count{phase=\"rendering\"} 1" in text


def test_cached_assets_are_not_downloaded_again(env):
    agent = env()
    assert agent.post_job(envelope("warm-1"))[0] == 202
    first = agent.wait("warm-1")
    assert first["state"] == "done", first
    gets_before = agent.agent.s3.stats["GetObject"]
    assert gets_before >= 2  # the checkpoint and the LoRA were fetched once
    assert agent.post_job(envelope("warm-2", parameters={"prompt": "again", "seed": 7}))[0] == 202
    second = agent.wait("warm-2")
    assert second["state"] == "done", second
    assert agent.agent.s3.stats["GetObject"] == gets_before, "a cached asset was downloaded again"
    assert all(a["cached"] for a in second["assets"])
    assert agent.agent.metrics.value("cache_hits_total") >= 2


def test_an_updated_object_is_downloaded_again(env, s3):
    agent = env()
    assert agent.post_job(envelope("etag-1"))[0] == 202
    assert agent.wait("etag-1")["state"] == "done"
    s3.put_object(Bucket=env.bucket, Key="loras/3f9a1c0d2b7e", Body=model_bytes("lora-a-v2"),
                  Metadata={"original-filename": "style.safetensors"})
    before = agent.agent.s3.stats["GetObject"]
    assert agent.post_job(envelope("etag-2"))[0] == 202
    doc = agent.wait("etag-2")
    assert doc["state"] == "done", doc
    assert agent.agent.s3.stats["GetObject"] == before + 1
    assert {a["kind"]: a["cached"] for a in doc["assets"]} == {"checkpoint": True, "lora": False}


# ---------------------------------------------------------------------------------------------- names
def test_rename_rules_hashed_key_no_metadata_and_collisions(env, s3):
    s3.put_object(Bucket=env.bucket, Key="loras/dup-one", Body=model_bytes("dup1"),
                  Metadata={"original-filename": "same.safetensors"})
    s3.put_object(Bucket=env.bucket, Key="loras/dup-two", Body=model_bytes("dup2"),
                  Metadata={"original-filename": "same.safetensors"})
    s3.put_object(Bucket=env.bucket, Key="loras/evil", Body=model_bytes("evil"),
                  Metadata={"original-filename": "../../etc/cron.d/evil"})
    loras_dir = Path(env.comfy.base_dir) / "models" / "loras"
    loras_dir.mkdir(parents=True, exist_ok=True)
    operator_file = loras_dir / "style.safetensors"   # a file the agent does not own, same name as a LoRA
    operator_file.write_bytes(model_bytes("operator"))
    agent = env()
    env_ = envelope("names", loras=[("loras/3f9a1c0d2b7e", 0.5), ("loras/77aa00ff", 0.6), ("loras/dup-one", 0.7),
                                    ("loras/dup-two", 0.8), ("loras/evil", 0.9)])
    assert agent.post_job(env_)[0] == 202
    doc = agent.wait("names")
    assert doc["state"] == "done", doc
    names = [a["name"] for a in doc["assets"] if a["kind"] == "lora"]
    assert names == ["style_2.safetensors", "LoraModel.safetensors", "same.safetensors", "same_2.safetensors",
                     "evil.safetensors"]
    assert operator_file.read_bytes() == model_bytes("operator")
    assert sorted(p.name for p in loras_dir.iterdir()) == ["style.safetensors"]
    assert not (Path(env.comfy.base_dir) / "etc").exists()


# ---------------------------------------------------------------------------------------------- faults
def _assert_clean(agent, env):
    models = Path(env.comfy.base_dir) / "models"
    assert leftovers(agent.cfg["state_dir"], models) == []
    assert not list((models / "loras").glob("*")) if (models / "loras").exists() else True
    out = Path(env.comfy.base_dir) / "output" / "vs-agent"
    assert not out.exists() or list(out.iterdir()) == []


def _next_job_works(agent, job_id):
    assert agent.post_job(envelope(job_id))[0] == 202
    doc = agent.wait(job_id)
    assert doc["state"] == "done", doc


def test_fault_object_missing(env):
    agent = env()
    assert agent.post_job(envelope("missing", loras=[("loras/nope", 1.0)]))[0] == 202
    doc = agent.wait("missing")
    assert doc["state"] == "failed" and doc["error_phase"] == "staging"
    assert "loras/nope" in doc["error"] and "does not exist" in doc["error"]
    _assert_clean(agent, env)
    _next_job_works(agent, "after-missing")


def test_fault_comfyui_down(env):
    agent = env(comfy=None)
    # models go to a folder of their own; ComfyUI's URL is a closed port
    assert agent.post_job(envelope("nocomfy"))[0] == 202
    doc = agent.wait("nocomfy")
    assert doc["state"] == "failed" and doc["error_phase"] == "rendering", doc
    assert "unreachable" in doc["error"]
    loras = Path(agent.cfg["comfyui.loras_dir"])
    assert not loras.exists() or list(loras.iterdir()) == []
    assert leftovers(agent.cfg["state_dir"]) == []
    status, _, health = agent.request("GET", "/healthz", token=None)
    assert status == 200 and health["busy"] is False and health["comfyui_reachable"] is not True


def test_fault_node_fails_then_next_job(env):
    agent = env()
    env.comfy.control(fail_node="3")
    assert agent.post_job(envelope("nodefail"))[0] == 202
    doc = agent.wait("nodefail")
    assert doc["state"] == "failed" and doc["error_phase"] == "rendering", doc
    assert "node 3" in doc["error"]
    _assert_clean(agent, env)
    env.comfy.control(fail_node=None)
    _next_job_works(agent, "after-nodefail")


def test_fault_comfyui_crashes_mid_render(env):
    agent = env()
    env.comfy.control(crash="3")
    assert agent.post_job(envelope("crash"))[0] == 202
    doc = agent.wait("crash")
    assert doc["state"] == "failed" and doc["error_phase"] == "rendering", doc
    assert "ComfyUI" in doc["error"]
    _assert_clean(agent, env)
    assert agent.request("GET", "/healthz", token=None)[0] == 200


def test_fault_minio_unreachable(tmp_path, comfy_standin):  # noqa: F811
    from rig.minio_server import MinioServer

    srv = MinioServer.start()
    agent = None
    try:
        import boto3
        from botocore.config import Config

        s3 = boto3.client("s3", endpoint_url=srv.endpoint, aws_access_key_id=srv.access_key,
                          aws_secret_access_key=srv.secret_key, region_name="us-east-1",
                          config=Config(s3={"addressing_style": "path"}))
        s3.create_bucket(Bucket="fault")
        s3.put_object(Bucket="fault", Key="ckpt/base-v1.safetensors", Body=ckpt_bytes("c"))
        s3.put_object(Bucket="fault", Key="loras/3f9a1c0d2b7e", Body=model_bytes("l"))
        agent = RunningAgent(agent_config(tmp_path, srv, "fault", comfy_standin))
        srv.pause()
        assert agent.post_job(envelope("nominio"))[0] == 202
        doc = agent.wait("nominio")
        assert doc["state"] == "failed" and doc["error_phase"] == "staging", doc
        assert srv.endpoint in doc["error"]
        assert leftovers(agent.cfg["state_dir"], Path(comfy_standin.base_dir) / "models") == []
        srv.resume()
        _next_job_works(agent, "minio-back")
    finally:
        if agent is not None:
            agent.stop()
        srv.stop()


@pytest.fixture
def small_cache_dir(tmp_path, monkeypatch):
    """(how, path): a 1 MiB tmpfs when mounting works, else a folder whose free space is reported as 0."""
    path = tmp_path / "state" / "cache"
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
                             capture_output=True).returncode == 0 if os.geteuid() == 0 else False
    if not mounted:
        real = shutil.disk_usage

        def fake(p):
            usage = real(p)
            return usage._replace(free=0) if str(p).startswith(str(path)) else usage

        monkeypatch.setattr(shutil, "disk_usage", fake)
    yield ("tmpfs" if mounted else "monkeypatched disk_usage"), path
    if mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_fault_disk_full(env, s3, small_cache_dir):
    how, _cache = small_cache_dir
    s3.put_object(Bucket=env.bucket, Key="ckpt/big.safetensors", Body=ckpt_bytes("big", 3 * 1024 * 1024),
                  Metadata={"original-filename": "big.safetensors"})
    agent = env()
    assert agent.post_job(envelope("diskfull", base_models=[{"key": "ckpt/big.safetensors"}]))[0] == 202
    doc = agent.wait("diskfull")
    assert doc["state"] == "failed" and doc["error_phase"] == "staging", (how, doc)
    assert "space" in doc["error"], (how, doc["error"])
    _assert_clean(agent, env)
    assert agent.request("GET", "/healthz", token=None)[2]["busy"] is False


def test_fault_output_upload_fails(env):
    agent = env()
    assert agent.post_job(envelope("noupload", output={"bucket": "no-such-bucket-" + uuid.uuid4().hex[:8]}))[0] == 202
    doc = agent.wait("noupload")
    assert doc["state"] == "failed" and doc["error_phase"] == "uploading", doc
    assert "does not exist" in doc["error"]
    _assert_clean(agent, env)
    _next_job_works(agent, "after-noupload")


# ---------------------------------------------------------------------------------------------- API
def test_auth_and_allow_list(env):
    agent = env()
    assert agent.post_job(envelope("auth"), token=None)[0] == 401
    status, headers, body = agent.post_job(envelope("auth"), token="wrong-" + TOKEN)
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
    assert agent.request("GET", "/jobs/auth", token=None)[0] == 401
    assert agent.request("GET", "/jobs/auth")[0] == 404   # nothing was queued by the refused POSTs
    other = env(server__allowed_networks=["10.0.0.0/8"])
    status, _, body = other.post_job(envelope("net"))
    assert status == 403 and "allowed_networks" in body["error"]
    assert other.request("GET", "/healthz", token=None)[0] == 200


def test_bad_requests(env):
    agent = env()
    status, _, body = agent.request("POST", "/jobs", b"{not json", headers={"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in body["error"]
    bad = {"base_models": [{"key": "../etc/passwd"}], "parameters": {"prompt": "x", "steps": 0, "width": 100},
           "callback_url": "ftp://x"}
    status, _, body = agent.post_job(bad)
    assert status == 400
    fields = " ".join(body["problems"])
    for field in ("base_models[0].key", "parameters.steps", "parameters.width", "callback_url"):
        assert field in fields, body
    # 413 from the Content-Length alone: the answer comes before the client has sent any of the body
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    try:
        conn.putrequest("POST", "/jobs")
        conn.putheader("Authorization", "Bearer " + TOKEN)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(agent.cfg["server.max_body_bytes"] + 10))
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413 and "max_body_bytes" in json.loads(resp.read())["error"]
    finally:
        conn.close()


def test_chunked_body_over_the_limit_is_refused(env):
    agent = env(server__max_body_bytes=4096)
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    try:
        conn.putrequest("POST", "/jobs")
        conn.putheader("Authorization", "Bearer " + TOKEN)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        with contextlib.suppress(OSError):
            for _ in range(8):
                chunk = b"x" * 1024
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        assert resp.status == 413
    finally:
        conn.close()
    # a small chunked envelope is accepted
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    try:
        body = json.dumps(envelope("chunked-ok")).encode()
        conn.putrequest("POST", "/jobs")
        conn.putheader("Authorization", "Bearer " + TOKEN)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        assert conn.getresponse().status == 202
    finally:
        conn.close()
    assert agent.wait("chunked-ok")["state"] == "done"


def test_same_job_id_renders_once(env):
    agent = env()
    env.comfy.control(delay=0.05)
    assert agent.post_job(envelope("twice"))[0] == 202
    status, _, doc = agent.post_job(envelope("twice"))
    assert status == 200 and doc["job_id"] == "twice"
    assert agent.wait("twice")["state"] == "done"
    status, _, doc = agent.post_job(envelope("twice"))
    assert status == 200 and doc["state"] == "done"
    status, _, body = agent.post_job(envelope("twice", parameters={"prompt": "something else"}))
    assert status == 409
    assert agent.agent.metrics.value("jobs_accepted_total") == 1
    assert agent.agent.metrics.value("jobs_total", outcome="done") == 1


def test_queue_bound_answers_429(env):
    agent = env(jobs__max_queue=1)
    env.comfy.control(delay=0.3)
    assert agent.post_job(envelope("q1"))[0] == 202
    deadline = time.monotonic() + 20
    while agent.request("GET", "/jobs/q1")[2]["state"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert agent.post_job(envelope("q2"))[0] == 202
    status, headers, body = agent.post_job(envelope("q3"))
    assert status == 429 and int(headers["Retry-After"]) >= 1
    env.comfy.control(delay=0)
    assert agent.wait("q1")["state"] == "done"
    assert agent.wait("q2")["state"] == "done"
    assert agent.request("GET", "/jobs/q3")[0] == 404


def test_callback_is_retried_and_signed(env):
    received, answers = [], [500, 200]

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers, body))
            self.send_response(answers.pop(0) if answers else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        agent = env()
        url = f"http://127.0.0.1:{hook.server_address[1]}/done?x=1"
        assert agent.post_job(envelope("cb", callback_url=url))[0] == 202
        assert agent.wait("cb")["state"] == "done"
        deadline = time.monotonic() + 10
        while agent.request("GET", "/jobs/cb")[2]["callback"]["state"] != "delivered" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.request("GET", "/jobs/cb")[2]["callback"]["state"] == "delivered"
        assert len(received) == 2
        headers, body = received[-1]
        doc = json.loads(body)
        assert doc["job_id"] == "cb" and doc["state"] == "done" and doc["output_keys"]
        sig = hmac.new(TOKEN.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-VisionSuit-Signature"] == "sha256=" + sig
    finally:
        hook.shutdown()
        hook.server_close()


def test_inline_workflow_with_placeholders(env, s3):
    agent = env()
    wf = json.loads((ROOT / "roles" / "minio_helpers" / "files" / "validation.json").read_text())
    wf["4"]["inputs"]["ckpt_name"] = "{{checkpoint}}"
    wf["10"]["inputs"].update(lora_name="{{lora_0}}", strength_model="{{lora_0_strength}}",
                              strength_clip="{{lora_0_strength_clip}}")
    wf["6"]["inputs"]["text"] = "{{prompt}}, highly detailed"
    wf["3"]["inputs"].update(seed="{{seed}}", steps="{{steps}}")
    wf["5"]["inputs"].update(width=64, height=64)
    assert agent.post_job(envelope("inline", workflow={"inline": wf}))[0] == 202
    doc = agent.wait("inline")
    assert doc["state"] == "done", doc
    assert list_keys(s3, env.bucket, "out/inline/")


# ---------------------------------------------------------------------------------------------- restart
def test_restart_mid_queue(env, tmp_path):
    cfg = agent_config(tmp_path, env.minio, env.bucket, env.comfy)
    cfg["server"]["port"] = _free_port()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    env.comfy.control(delay=0.15)
    proc = _spawn(path)
    try:
        port = cfg["server"]["port"]
        for i in range(3):
            assert http_request(port, "POST", "/jobs", envelope(f"r{i}"))[0] == 202
        deadline = time.monotonic() + 20
        while http_request(port, "GET", "/jobs/r0")[2]["state"] != "rendering" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert http_request(port, "GET", "/jobs/r0")[2]["state"] == "rendering"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        env.comfy.control(delay=0)
        proc = _spawn(path)
        docs = [wait_job(port, f"r{i}", 60) for i in range(3)]
        assert [d["state"] for d in docs] == ["done", "done", "done"], docs
        assert docs[0]["attempts"] == 2 and any("restarted" in n for n in docs[0]["notes"])
        assert docs[1]["attempts"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(config_path):
    env = dict(os.environ)
    log = open(str(config_path) + ".log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen([sys.executable, "-m", "visionsuit_gpu_agent", "--config", str(config_path)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    cfg = json.loads(Path(config_path).read_text())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(Path(str(config_path) + ".log").read_text())
        with contextlib.suppress(OSError):
            if http_request(cfg["server"]["port"], "GET", "/healthz", token=None)[0] == 200:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("agent did not start: " + Path(str(config_path) + ".log").read_text())


# ---------------------------------------------------------------------------------------------- TLS
def test_https_when_cert_and_key_are_configured(env, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    import ssl

    cert, key = tmp_path / "agent.crt", tmp_path / "agent.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    agent = env(server__tls_cert=str(cert), server__tls_key=str(key))
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", agent.port, timeout=10, context=ctx)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
        conn.request("POST", "/jobs", body=json.dumps(envelope("tls")).encode(),
                     headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 202, resp.read()
        resp.read()
    finally:
        conn.close()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        http_request(agent.port, "GET", "/healthz", token=None)   # plain HTTP is not served


# ---------------------------------------------------------------------------------------------- one agent per state dir
def _run_second(config_path):
    """Start another agent on ``config_path`` and wait for it to exit (it must not stay up)."""
    return subprocess.run([sys.executable, "-m", "visionsuit_gpu_agent", "--config", str(config_path)],
                          env=dict(os.environ), capture_output=True, text=True, timeout=60)


def _db_rows(state_dir):
    import sqlite3

    db = sqlite3.connect(f"file:{state_dir}/jobs.sqlite3?mode=ro", uri=True, timeout=10)
    try:
        jobs = []
        for job_id, state, attempts, doc in db.execute("SELECT id, state, attempts, doc FROM jobs ORDER BY seq"):
            doc = json.loads(doc)
            jobs.append((job_id, state, attempts, doc.get("notes"), doc.get("error")))
        surfaced = db.execute("SELECT path, job_id, persistent FROM surfaced ORDER BY path").fetchall()
        return jobs, surfaced
    finally:
        db.close()


def _one_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


def test_second_agent_on_the_same_config_changes_nothing(env, tmp_path):
    cfg = agent_config(tmp_path, env.minio, env.bucket, env.comfy)
    port = cfg["server"]["port"] = _free_port()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    state_dir = cfg["state_dir"]
    loras_dir = Path(env.comfy.base_dir) / "models" / "loras"
    env.comfy.control(delay=4.0)   # each node takes 4 s: r0 stays in ComfyUI while the second agent tries
    proc = _spawn(path)
    try:
        for i in range(2):
            assert http_request(port, "POST", "/jobs", envelope(f"s{i}"))[0] == 202
        deadline = time.monotonic() + 30
        while http_request(port, "GET", "/jobs/s0")[2]["prompt_id"] is None and time.monotonic() < deadline:
            time.sleep(0.02)
        running = http_request(port, "GET", "/jobs/s0")[2]
        assert running["state"] == "rendering" and running["prompt_id"], running
        links = sorted(p.name for p in loras_dir.iterdir())
        assert links == ["style.safetensors"]
        before = _db_rows(state_dir)
        assert [row[:3] for row in before[0]] == [("s0", "rendering", 1), ("s1", "queued", 0)]

        second = _run_second(path)
        assert second.returncode == 1, second.stderr
        line = _one_line(second.stderr)
        assert f"another agent holds {state_dir}" in line, line

        other = dict(cfg, state_dir=str(tmp_path / "other-state"))
        other_path = tmp_path / "other.json"
        other_path.write_text(json.dumps(other))
        third = _run_second(other_path)
        assert third.returncode == 1, third.stderr
        line = _one_line(third.stderr)
        assert f"port {port} is in use" in line, line
        assert not (tmp_path / "other-state" / "jobs.sqlite3").exists()   # bound (or failed) before any state

        # the running agent's state is untouched: job rows, recorded links, the LoRA link itself
        assert _db_rows(state_dir) == before
        assert sorted(p.name for p in loras_dir.iterdir()) == links
        assert http_request(port, "GET", "/jobs/s0")[2]["state"] == "rendering"
        env.comfy.control(delay=0)
        docs = [wait_job(port, f"s{i}", 60) for i in range(2)]
        assert [(d["state"], d["attempts"], d["notes"]) for d in docs] == [("done", 1, []), ("done", 1, [])], docs
    finally:
        env.comfy.control(delay=0)
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


# ---------------------------------------------------------------------------------------------- model-free job
def test_model_free_job_stages_and_links_nothing(env, s3):
    agent = env()
    wf = {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 255}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "plain"}}}
    status, _, doc = agent.post_job({"job_id": "nomodel", "base_models": [], "workflow": {"inline": wf},
                                     "parameters": {"prompt": "unused"}})
    assert status == 202, doc
    done = agent.wait("nomodel")
    assert done["state"] == "done", done
    assert done["assets"] == [] and done["error"] is None
    keys = list_keys(s3, env.bucket, "out/nomodel/")
    assert keys and keys == sorted(done["output_keys"])
    models = Path(env.comfy.base_dir) / "models"
    for sub in ("checkpoints", "loras"):
        folder = models / sub
        assert not folder.exists() or list(folder.iterdir()) == [], sub
    cache = Path(agent.cfg["state_dir"]) / "cache"
    assert [p for p in cache.rglob("*") if p.is_file()] == []
    assert agent.agent.s3.stats.get("GetObject", 0) == 0 and agent.agent.s3.stats.get("HeadObject", 0) == 0
    assert agent.agent.store.surfaced() == []


# -------------------------------------------------------------------------------------------- partial runs, long errors


def test_partly_rejected_workflow_fails_the_job_naming_the_node(env, s3):
    agent = env()
    wf = {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 255}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "ok"}},
          "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "missing.safetensors"}},
          "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
          "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
          "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "bad"}}}
    status, _, doc = agent.post_job({"job_id": "partial", "base_models": [], "workflow": {"inline": wf},
                                     "parameters": {"prompt": "unused"}})
    assert status == 202, doc
    doc = agent.wait("partial")
    assert doc["state"] == "failed" and doc["error_phase"] == "rendering", doc
    assert "\n" not in doc["error"]
    assert doc["error"].startswith("rendering failed: ComfyUI rejected part of the workflow and dropped output "
                                   "node 9 (SaveImage): node 4 (CheckpointLoaderSimple) input ckpt_name: value "
                                   "'missing.safetensors' not in list"), doc["error"]
    assert doc["prompt_id"] and doc["outputs"] == [] and list_keys(s3, env.bucket, "out/partial/") == []
    assert agent.agent.metrics.value("jobs_total", outcome="failed") == 1
    _assert_clean(agent, env)
    _next_job_works(agent, "after-partial")


def test_multiline_comfyui_error_is_one_line_with_the_full_text_beside(env):
    agent = env()
    env.comfy.control(fail_node="CheckpointLoaderSimple", fail_message=TORCH_WEIGHTS_ONLY)
    assert agent.post_job(envelope("torchload"))[0] == 202
    doc = agent.wait("torchload")
    assert doc["state"] == "failed" and doc["error_phase"] == "rendering", doc
    assert "\n" not in doc["error"]
    assert doc["error"].startswith("rendering failed: workflow "), doc["error"]
    assert doc["error"].endswith(
        " failed on node 4 (CheckpointLoaderSimple) loading ckpt_name 'sdxl_base.safetensors': standin.executor."
        "InjectedFailure: Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` "
        "will likely succeed, but it can result in arbitrary code execution. Do it only if you got the file from a "
        "trusted source. (+2 more lines)"), doc["error"]
    assert doc["error_detail"] == TORCH_WEIGHTS_ONLY
    _assert_clean(agent, env)
    env.comfy.control(reset=True)
    _next_job_works(agent, "after-torchload")
    done = agent.wait("after-torchload")
    assert done["error"] is None and done["error_detail"] is None


def test_a_checkpoint_without_a_model_fails_the_job_in_one_line_naming_the_node_and_the_file(env, s3):
    # a LoRA-like file as base model: ComfyUI's "ERROR: Could not detect model type of: <path>\n<hint>"
    s3.put_object(Bucket=env.bucket, Key="ckpt/not-a-model.safetensors", Body=model_bytes("vae-only"),
                  Metadata={"original-filename": "vae_only.safetensors"})
    agent = env()
    body = envelope("nomodel", base_models=[{"key": "ckpt/not-a-model.safetensors"}])
    assert agent.post_job(body)[0] == 202
    doc = agent.wait("nomodel")
    assert doc["state"] == "failed" and doc["error_phase"] == "rendering", doc
    path = Path(env.comfy.base_dir) / "models" / "checkpoints" / "vae_only.safetensors"
    assert "\n" not in doc["error"]
    assert doc["error"].startswith("rendering failed: workflow "), doc["error"]
    assert doc["error"].endswith(
        " failed on node 4 (CheckpointLoaderSimple) loading ckpt_name 'vae_only.safetensors': RuntimeError: "
        f"ERROR: Could not detect model type of: {path}"), doc["error"]
    assert doc["error_detail"] == f"ERROR: Could not detect model type of: {path}"
    _assert_clean(agent, env)
    _next_job_works(agent, "after-nomodel")


# ---------------------------------------------------------------------------------------------- cancelling prompts
OTHER_CLIENT = "another-comfyui-user"


def _plain_prompt(prefix):
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 7}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}


def _wait_running(comfy, prompt_id, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if prompt_id and comfy.state()["queue_running"] == [prompt_id]:
            return
        time.sleep(0.02)
    raise AssertionError(f"prompt {prompt_id} did not start in {timeout}s: {comfy.state()}")


def _agent_outputs(comfy):
    out = Path(comfy.base_dir) / "output" / "vs-agent"
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) if out.exists() else []


def test_timeout_while_queued_cancels_only_its_own_prompt(env):
    agent = env()
    comfy = env.comfy
    comfy.control(delay=4.0)   # each node takes 4 s: the other client's 2-node prompt runs about 8 s
    try:
        other = comfy.submit(_plain_prompt("other/img"), client_id=OTHER_CLIENT)
        _wait_running(comfy, other)
        assert agent.post_job(envelope("tmo", timeout=3))[0] == 202
        doc = agent.wait("tmo", 40)
        assert doc["state"] == "failed" and doc["error_phase"] == "rendering", doc
        assert "did not finish within 3s" in doc["error"] and "pending (1 ahead)" in doc["error"], doc["error"]
        assert "\n" not in doc["error"]
        own = doc["prompt_id"]
        assert own and own != other
        # the other client's run goes on to its end
        hist = comfy.wait_history(other, 30)
        assert hist["status"]["status_str"] == "success", hist["status"]
        assert (comfy.output_dir / "other" / "img_00001_.png").is_file()
    finally:
        comfy.control(delay=0)
    # the job's own prompt never runs: neither queued nor in the history, and no output appears afterwards
    time.sleep(2.0)
    state = comfy.state()
    assert own not in state["queue_running"] + state["queue_pending"]
    assert comfy.get_json(f"/history/{own}") == {}
    assert state["executed"] == 1
    assert _agent_outputs(comfy) == []
    assert "Global interrupt" not in comfy.log()
    assert f"Prompt {own} is not currently running, skipping interrupt" in comfy.log()
    assert any(own in n and "removed from ComfyUI's queue before it ran" in n for n in doc["notes"]), doc["notes"]
    assert agent.agent.store.prompts() == []
    _assert_clean(agent, env)
    _next_job_works(agent, "after-tmo")


def test_outputs_written_after_the_timeout_are_removed_later(env, monkeypatch):
    # The timeout comes while SaveImage runs: the interrupt takes effect between nodes only, so the file is written
    # after the job's clean-up. The agent waits only a moment for the cancel here; the idle sweep removes it later.
    monkeypatch.setattr(Agent, "CANCEL_WAIT_S", 0.2)
    agent = env()
    comfy = env.comfy
    comfy.control(delay=3.0)   # node 1: 0-3 s, SaveImage: 3-6 s, then it writes; the job times out at 4.5 s
    try:
        status, _, doc = agent.post_job({"job_id": "late", "base_models": [], "timeout": 4.5,
                                         "workflow": {"inline": _plain_prompt("ignored")},
                                         "parameters": {"prompt": "unused"}})
        assert status == 202, doc
        doc = agent.wait("late", 30)
        assert doc["state"] == "failed" and "did not finish within 4.5s" in doc["error"], doc
        own = doc["prompt_id"]
        hist = comfy.wait_history(own, 20)
    finally:
        comfy.control(delay=0)
    assert hist["status"]["status_str"] == "success"   # SaveImage had started: it wrote its file
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (_agent_outputs(comfy) or agent.agent.store.prompts()):
        time.sleep(0.1)
    assert _agent_outputs(comfy) == []
    assert agent.agent.store.prompts() == []
    notes = agent.request("GET", "/jobs/late")[2]["notes"]
    assert any(own in n and "(the job timed out) cancelled" in n and "the 1 output file(s) it wrote were removed" in n
               for n in notes), notes
    assert "Global interrupt" not in comfy.log()


def test_restart_cancels_the_prompt_of_the_killed_attempt(env, tmp_path):
    cfg = agent_config(tmp_path, env.minio, env.bucket, env.comfy)
    port = cfg["server"]["port"] = _free_port()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    comfy = env.comfy
    comfy.control(delay=2.0)   # 7 nodes of about 2 s: attempt 1's prompt still runs when the new agent starts
    proc = _spawn(path)
    try:
        assert http_request(port, "POST", "/jobs", envelope("orphan"))[0] == 202
        deadline = time.monotonic() + 30
        first = None
        while not first and time.monotonic() < deadline:
            first = http_request(port, "GET", "/jobs/orphan")[2]["prompt_id"]
            time.sleep(0.02)
        _wait_running(comfy, first)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert comfy.state()["queue_running"] == [first]   # ComfyUI goes on with the killed attempt's prompt
        proc = _spawn(path)
        hist = comfy.wait_history(first, 20)
        comfy.control(delay=0)
        # attempt 1's prompt was interrupted (not run to its end behind which attempt 2 would wait)
        assert hist["status"]["status_str"] == "error", hist["status"]
        assert hist["status"]["messages"][-1][0] == "execution_interrupted" and hist["outputs"] == {}
        doc = wait_job(port, "orphan", 60)
        assert doc["state"] == "done" and doc["attempts"] == 2, doc
        second = doc["prompt_id"]
        assert second and second != first
        assert any("restarted" in n for n in doc["notes"]), doc["notes"]
        assert any(first in n and "attempt 1" in n and "interrupted" in n for n in doc["notes"]), doc["notes"]
        run2 = comfy.get_json(f"/history/{second}")[second]["status"]["messages"]
        assert run2[0][0] == "execution_start" and run2[0][1]["timestamp"] >= hist["status"]["messages"][-1][1][
            "timestamp"]
        time.sleep(1.0)
        assert _agent_outputs(comfy) == []   # nothing of attempt 1 appeared after the clean-up
        assert "Global interrupt" not in comfy.log()
        assert f"Interrupting prompt {first}" in comfy.log()
    finally:
        comfy.control(delay=0)
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


_OLD_SCHEMA = """
CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, state TEXT NOT NULL,
    spec TEXT NOT NULL, doc TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
    updated REAL NOT NULL, callback_state TEXT);
CREATE TABLE surfaced (path TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL, etag TEXT, cache_path TEXT,
    persistent INTEGER NOT NULL, job_id TEXT, created REAL NOT NULL);
"""


def test_a_database_of_the_previous_version_is_migrated(tmp_path):
    import sqlite3

    from visionsuit_gpu_agent.jobs import JobStore

    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(str(path))
    db.executescript(_OLD_SCHEMA)
    for seq, (job_id, state, prompt_id) in enumerate((("old", "rendering", "p-old"), ("idle", "queued", None),
                                                       ("fin", "done", "p-fin")), 1):
        doc = {"job_id": job_id, "state": state, "created_at": 1.0, "attempts": 1 if prompt_id else 0,
               "prompt_id": prompt_id, "notes": []}
        db.execute("INSERT INTO jobs (seq, id, state, spec, doc, attempts, created, updated, callback_state) "
                   "VALUES (?, ?, ?, ?, ?, ?, 1, 1, NULL)",
                   (seq, job_id, state, json.dumps({"job_id": job_id}), json.dumps(doc), doc["attempts"]))
    db.commit()
    db.close()
    store = JobStore(str(path))
    try:
        assert store.recover() == (["old"], [])
        # the prompt id recorded in the old job document is cancelled like one of this version's
        assert [(p["prompt_id"], p["job_id"], p["attempt"], p["run_dir"], p["state"], p["reason"])
                for p in store.prompts()] == [("p-old", "old", 1, "old.a1", "cancel", "restart")]
        assert store.queued_ids() == ["old", "idle"] and store.get("fin")["state"] == "done"
    finally:
        store.close()
    store = JobStore(str(path))   # opened again: migrated once, nothing added twice
    try:
        assert [p["prompt_id"] for p in store.prompts()] == ["p-old"]
        assert store.db.execute("PRAGMA user_version").fetchone()[0] >= 2
    finally:
        store.close()


def test_cancel_waits_for_comfyui_with_back_off_and_gives_up_in_the_end(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from visionsuit_gpuworker.comfyui.client import ComfyClient

    calls = []
    real_cancel = ComfyClient.cancel

    def spy(self, prompt_id, **kw):
        calls.append(prompt_id)
        return real_cancel(self, prompt_id, **kw)

    monkeypatch.setattr(ComfyClient, "cancel", spy)
    nowhere = SimpleNamespace(endpoint="http://127.0.0.1:9", access_key="a", secret_key="not-a-real-secret")
    agent = Agent(check(agent_config(tmp_path, nowhere, "bkt", None)), s3=SimpleNamespace(stats={}))  # ComfyUI: port 9
    store = agent.store
    try:
        out = Path(agent.cfg["comfyui.output_dir"]) / "vs-agent"
        for job_id in ("old", "young"):
            store.add({"job_id": job_id, "callback_url": None},
                      {"job_id": job_id, "state": "failed", "created_at": 0.0, "notes": []})
            (out / f"{job_id}.a1").mkdir(parents=True)
            (out / f"{job_id}.a1" / "img_00001_.png").write_bytes(b"late")
            store.record_prompt(f"p-{job_id}", job_id, 1, f"{job_id}.a1")
            store.cancel_prompt(f"p-{job_id}", "timeout")
        store.db.execute("UPDATE prompts SET created = created - ? WHERE prompt_id = 'p-old'",
                         (Agent.CANCEL_GIVE_UP_S + 1,))
        # ComfyUI cannot be reached: one try for both, the old one is given up (outputs removed), the young one waits
        assert agent._settle_prompts() == 1 and calls == ["p-old"]
        assert [p["prompt_id"] for p in store.prompts()] == ["p-young"]
        assert not (out / "old.a1").exists() and (out / "young.a1" / "img_00001_.png").exists()
        note = store.get("old")["notes"][-1]
        assert "p-old" in note and "given up" in note and "the 1 output file(s) it wrote were removed" in note
        assert agent._settle_prompts() == 1 and calls == ["p-old"]   # within the back-off: not tried again
        agent._settle_after = 0.0
        assert agent._settle_prompts() == 1 and calls == ["p-old", "p-young"]
        assert store.get("young")["notes"] == []
    finally:
        store.close()
