# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""GPU agent: request handling without sockets (routing, auth, allow-list, limits), the job store's restart
rules, metrics text and ``--check-config``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from visionsuit_gpu_agent import config, handler
from visionsuit_gpu_agent.jobs import JobStore
from visionsuit_gpu_agent.metrics import Metrics
from visionsuit_gpu_agent.worker import Conflict, InvalidEnvelope, QueueFull

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "agent" / "visionsuit_gpu_agent"

TOKEN = "s3cret-token-0123456789"
ENVELOPE = {"job_id": "j1", "base_models": [{"key": "ckpt/a.safetensors"}], "parameters": {"prompt": "a cat"}}


def make_cfg(**server):
    return config.check({"server": dict({"api_token": TOKEN, "max_body_bytes": 2048}, **server),
                         "minio": {"endpoint": "http://127.0.0.1:9000", "access_key": "a", "secret_key": "b"}})


class FakeAgent:
    """The surface of worker.Agent that the handler uses."""

    def __init__(self, cfg, raise_on_submit=None):
        self.cfg = cfg
        self.metrics = Metrics()
        self.jobs = {}
        self.submitted = []
        self.raise_on_submit = raise_on_submit

    def health(self):
        return {"status": "ok", "busy": False, "queue_depth": len(self.jobs), "comfyui_reachable": True}

    def submit(self, envelope):
        if self.raise_on_submit:
            raise self.raise_on_submit
        from visionsuit_gpu_agent.envelope import validate
        problems = validate(envelope)
        if problems:
            raise InvalidEnvelope(problems)
        self.submitted.append(envelope)
        if envelope["job_id"] in self.jobs:
            return self.jobs[envelope["job_id"]], False
        doc = {"job_id": envelope["job_id"], "state": "queued"}
        self.jobs[envelope["job_id"]] = doc
        return doc, True

    def get_job(self, job_id):
        return self.jobs.get(job_id)

    def retry_after(self):
        return 17


def call(agent, method, path, body=None, token=TOKEN, headers=None, ip="127.0.0.1"):
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    if body is not None and "Content-Length" not in hdrs and "Transfer-Encoding" not in hdrs:
        hdrs["Content-Length"] = str(len(body))
    return handler.handle(agent, method, path, hdrs, body, ip)


@pytest.fixture
def agent():
    return FakeAgent(make_cfg())


def test_healthz_needs_no_auth(agent):
    resp = call(agent, "GET", "/healthz", token=None)
    assert resp.status == 200
    body = resp.json()
    assert body["status"] == "ok" and body["busy"] is False and "queue_depth" in body


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x", TOKEN[:-1]])
def test_jobs_need_the_bearer_token(agent, token):
    resp = call(agent, "POST", "/jobs", ENVELOPE, token=token)
    assert resp.status == 401
    assert ("WWW-Authenticate", 'Bearer realm="visionsuit-gpu-agent"') in resp.headers
    assert agent.submitted == []
    assert call(agent, "GET", "/jobs/j1", token=token).status == 401


def test_basic_scheme_is_refused(agent):
    resp = handler.handle(agent, "POST", "/jobs", {"Authorization": "Basic " + TOKEN, "Content-Length": "2"},
                          b"{}", "127.0.0.1")
    assert resp.status == 401


def test_accepted_then_idempotent(agent):
    resp = call(agent, "POST", "/jobs", ENVELOPE)
    assert resp.status == 202 and resp.json()["job_id"] == "j1"
    assert ("Location", "/jobs/j1") in resp.headers
    again = call(agent, "POST", "/jobs", ENVELOPE)
    assert again.status == 200 and again.json()["state"] == "queued"
    got = call(agent, "GET", "/jobs/j1")
    assert got.status == 200 and got.json()["job_id"] == "j1"
    assert call(agent, "GET", "/jobs/nope").status == 404


def test_allow_list():
    agent = FakeAgent(make_cfg(allowed_networks=["10.1.0.0/16", "fd00::/8"]))
    assert call(agent, "POST", "/jobs", ENVELOPE, ip="192.168.1.5").status == 403
    assert call(agent, "GET", "/jobs/j1", ip="192.168.1.5").status == 403
    assert call(agent, "POST", "/jobs", ENVELOPE, ip="10.1.2.3").status == 202
    assert call(agent, "GET", "/jobs/j1", ip="::ffff:10.1.2.3").status == 200
    assert call(agent, "GET", "/jobs/j1", ip="fd00::1").status == 200
    assert call(agent, "GET", "/healthz", ip="192.168.1.5", token=None).status == 200


def test_oversized_body_is_refused_before_reading(agent):
    early = handler.check_head(agent, "POST", "/jobs", {"Authorization": "Bearer " + TOKEN,
                                                        "Content-Length": "4096"}, "127.0.0.1")
    assert early is not None and early.status == 413 and early.close
    assert call(agent, "POST", "/jobs", b"x" * 4096).status == 413
    # an unauthenticated client learns nothing about limits
    early = handler.check_head(agent, "POST", "/jobs", {"Content-Length": "99999999"}, "127.0.0.1")
    assert early.status == 401


def test_chunked_body_over_the_limit_after_reading(agent):
    resp = call(agent, "POST", "/jobs", b"x" * 4096, headers={"Transfer-Encoding": "chunked"})
    assert resp.status == 413


@pytest.mark.parametrize("body,fragment", [
    (b"{not json", "not valid JSON"),
    (b"", "empty"),
    (b"\xff\xfe", "UTF-8"),
    (b"[1, 2]", "must be an object"),
])
def test_malformed_bodies(agent, body, fragment):
    resp = call(agent, "POST", "/jobs", body)
    assert resp.status == 400
    assert fragment in resp.json()["error"]


def test_schema_invalid_envelope_names_fields(agent):
    bad = {"base_models": [{"key": "../x"}], "parameters": {"prompt": "p", "steps": 0}}
    resp = call(agent, "POST", "/jobs", bad)
    assert resp.status == 400
    problems = resp.json()["problems"]
    assert any(p.startswith("base_models[0].key") for p in problems)
    assert any(p.startswith("parameters.steps") for p in problems)
    assert agent.metrics.value("jobs_rejected_total", reason="invalid") == 1


def test_queue_full_gives_429_with_retry_after():
    agent = FakeAgent(make_cfg(), raise_on_submit=QueueFull("full"))
    resp = call(agent, "POST", "/jobs", ENVELOPE)
    assert resp.status == 429 and ("Retry-After", "17") in resp.headers


def test_conflicting_reuse_of_a_job_id_gives_409():
    agent = FakeAgent(make_cfg(), raise_on_submit=Conflict("used"))
    assert call(agent, "POST", "/jobs", ENVELOPE).status == 409


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/nope", 404), ("DELETE", "/jobs", 405), ("GET", "/jobs", 405), ("POST", "/healthz", 405),
    ("GET", "/jobs/../etc", 404),
])
def test_routing(agent, method, path, status):
    assert call(agent, method, path, token=TOKEN).status == status


def test_content_type_and_length_rules(agent):
    assert call(agent, "POST", "/jobs", ENVELOPE, headers={"Content-Type": "text/plain"}).status == 415
    assert call(agent, "POST", "/jobs", ENVELOPE, headers={"Content-Type": "application/json; charset=utf-8"}
                ).status == 202
    resp = handler.handle(agent, "POST", "/jobs", {"Authorization": "Bearer " + TOKEN}, None, "127.0.0.1")
    assert resp.status == 411
    assert call(agent, "POST", "/jobs", b"{}", headers={"Content-Length": "-1"}).status == 400


def test_metrics_text(agent):
    agent.metrics.inc("jobs_total", outcome="done")
    agent.metrics.observe("phase_seconds", 0.3, phase="rendering")
    agent.metrics.gauge("queue_depth", lambda: 2)
    resp = call(agent, "GET", "/metrics", token=None)
    assert resp.status == 200
    text = resp.body.decode()
    assert 'visionsuit_gpu_agent_jobs_total{outcome="done"} 1' in text
    assert 'visionsuit_gpu_agent_phase_seconds_bucket{phase="rendering",le="0.5"} 1' in text
    assert 'visionsuit_gpu_agent_phase_seconds_bucket{phase="rendering",le="0.25"} 0' in text
    assert "visionsuit_gpu_agent_queue_depth 2" in text
    assert "# TYPE visionsuit_gpu_agent_phase_seconds histogram" in text
    locked = FakeAgent(make_cfg(metrics_require_auth=True))
    assert call(locked, "GET", "/metrics", token=None).status == 401


# ---------------------------------------------------------------------------------------------- job store
def _spec(job_id):
    return {"job_id": job_id, "callback_url": None}


def _doc(job_id):
    return {"job_id": job_id, "state": "queued", "created_at": 0}


def test_store_survives_reopen_and_recovers(tmp_path):
    db = str(tmp_path / "jobs.sqlite3")
    store = JobStore(db)
    for j in ("a", "b", "c", "d"):
        store.add(_spec(j), _doc(j))
    store.start_attempt("a")
    store.update("a", state="rendering")
    store.start_attempt("b")
    store.start_attempt("b")
    store.update("b", state="uploading")
    store.update("d", state="done", finished_at=1.0)
    store.close()
    assert oct(os.stat(db).st_mode & 0o777) == oct(0o600)

    store = JobStore(db)
    requeued, failed = store.recover()
    assert requeued == ["a"] and failed == ["b"]
    assert store.get("a")["state"] == "queued" and "restarted" in store.get("a")["notes"][0]
    assert store.get("b")["state"] == "failed" and "twice" in store.get("b")["error"]
    assert store.queued_ids() == ["a", "c"]
    assert store.get("d")["state"] == "done"
    doc, created = store.add(_spec("c"), _doc("c"))
    assert created is False
    assert store.purge(0) == 2 and store.get("d") is None  # b (failed) and d (done): finished long ago
    store.close()


def test_store_records_surfaced_files(tmp_path):
    store = JobStore(str(tmp_path / "jobs.sqlite3"))
    store.add_surfaced("/m/loras/a.safetensors", "b", "k1", "e1", "/c/b/k1", False, "j1")
    store.add_surfaced("/m/ckpt/c.safetensors", "b", "k2", "e2", "/c/b/k2", True, "j1")
    assert [r["path"] for r in store.surfaced(job_id="j1", persistent=False)] == ["/m/loras/a.safetensors"]
    assert store.pinned_cache_paths() == {"/c/b/k1", "/c/b/k2"}
    store.remove_surfaced("/m/loras/a.safetensors")
    assert store.surfaced(persistent=False) == []


# ---------------------------------------------------------------------------------------------- entry point
def _run(*args):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "visionsuit_gpu_agent", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_check_config_accepts_a_good_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"server:\n  api_token: {json.dumps(TOKEN)}\n"
                    "minio:\n  endpoint: http://127.0.0.1:9000\n  access_key: a\n  secret_key: verysecret\n")
    proc = _run("--check-config", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "configuration OK" in proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr and "verysecret" not in proc.stdout + proc.stderr


def test_check_config_names_each_bad_key(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("server:\n  port: http\n  api_token: short\nminio:\n  endpoint: nowhere\n"
                    "jobs:\n  max_queue: 0\n")
    proc = _run("--check-config", "--config", str(path))
    assert proc.returncode == 1
    for key in ("server.port", "server.api_token", "minio.endpoint", "minio.access_key", "jobs.max_queue"):
        assert key in proc.stderr, proc.stderr
    assert "short" not in proc.stderr
    path.write_text("server: [unclosed\n")
    proc = _run("--check-config", "--config", str(path))
    assert proc.returncode == 1 and "not valid YAML" in proc.stderr
    proc = _run("--check-config", "--config", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 1 and "cannot read" in proc.stderr
