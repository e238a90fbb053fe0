# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Render slots: one per ComfyUI instance (``comfyui.instances``), fed from one queue.

Two stand-ins play two instances of one ComfyUI install: the second one's ``models`` is a link to the first one's
and it writes into the first one's output folder (``--output-directory``), as instances of one checkout share
models/ and output/. Each has its own port, log and render delay.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest
from test_agent_integration import (
    TOKEN,
    RunningAgent,
    _plain_prompt,
    _wait_running,
    agent_config,
    ckpt_bytes,
    envelope,
    list_keys,
    model_bytes,
)

from rig.standin_fixtures import free_port, standin_factory  # noqa: F401
from visionsuit_gpu_agent.config import ConfigError, check
from visionsuit_gpu_agent.jobs import SCHEMA_VERSION, JobStore
from visionsuit_gpu_agent.worker import Agent

# ---------------------------------------------------------------------------------------------- config


def _cfg(**comfyui):
    return {"server": {"api_token": TOKEN}, "state_dir": "/tmp/vs-agent-slots",
            "minio": {"endpoint": "http://127.0.0.1:9000", "access_key": "a", "secret_key": "s"},
            "comfyui": comfyui}


def _problems(doc):
    with pytest.raises(ConfigError) as err:
        check(doc)
    return err.value.problems


def test_config_url_alone_is_one_slot_without_gpu():
    assert check(_cfg(url="http://127.0.0.1:8188")).slots == [{"slot": 0, "url": "http://127.0.0.1:8188",
                                                                "gpu": None}]
    assert check(_cfg()).slots == [{"slot": 0, "url": "http://127.0.0.1:8188", "gpu": None}]


def test_config_instances_give_one_slot_each():
    cfg = check(_cfg(instances=[{"url": "http://127.0.0.1:8188", "gpu": 0}, {"url": "http://127.0.0.1:8189",
                                                                              "gpu": 1}]))
    assert cfg.slots == [{"slot": 0, "url": "http://127.0.0.1:8188", "gpu": 0},
                         {"slot": 1, "url": "http://127.0.0.1:8189", "gpu": 1}]
    assert check(_cfg(instances=[{"url": "http://h:8188", "gpu": None}])).slots[0]["gpu"] is None
    assert check(_cfg(instances=[{"url": "http://h:8188"}])).slots[0]["gpu"] is None


def test_config_url_and_instances_together_is_an_error_naming_both():
    problems = _problems(_cfg(url="http://127.0.0.1:8188", instances=[{"url": "http://127.0.0.1:8189", "gpu": 0}]))
    assert len(problems) == 1 and problems[0].startswith("comfyui.url/comfyui.instances: give one of them"), problems


@pytest.mark.parametrize(("instances", "expected"), [
    ([], "comfyui.instances: must list one instance at least"),
    ("http://h:8188", "comfyui.instances: must be a list"),
    (["http://h:8188"], "comfyui.instances[0]: must be a mapping with url and gpu"),
    ([{"gpu": 0}], "comfyui.instances[0].url: is required"),
    ([{"url": "ftp://h", "gpu": 0}], "comfyui.instances[0].url: must be a URL such as http://HOST:PORT"),
    ([{"url": "http://h:8188", "gpu": -1}], "comfyui.instances[0].gpu: must be a GPU index (0, 1, ...) or null"),
    ([{"url": "http://h:8188", "gpu": "0"}], "comfyui.instances[0].gpu: must be a GPU index (0, 1, ...) or null"),
    ([{"url": "http://h:8188", "gpu": True}], "comfyui.instances[0].gpu: must be a GPU index (0, 1, ...) or null"),
    ([{"url": "http://h:8188", "gpu": 0, "port": 1}], "comfyui.instances[0].port: unknown key"),
    ([{"url": "http://h:8188", "gpu": 0}, {"url": "http://h:8188/", "gpu": 1}],
     "comfyui.instances[1].url: is the URL of comfyui.instances[0] too"),
    ([{"url": "http://h:8188", "gpu": 0}, {"url": "http://h:8189", "gpu": 0}],
     "comfyui.instances[1].gpu: GPU 0 is the GPU of comfyui.instances[0] too"),
])
def test_config_instances_errors_name_the_item(instances, expected):
    problems = _problems(_cfg(instances=instances))
    assert any(p.startswith(expected) for p in problems), problems


def test_config_instances_error_masks_url_passwords():
    problems = _problems(_cfg(instances=[{"url": "http://u:hunter2@h:99999", "gpu": 0}]))
    assert problems and "hunter2" not in "\n".join(problems), problems


# ---------------------------------------------------------------------------------------------- scheduler (no sockets)
def test_the_next_job_goes_to_the_least_busy_free_slot_that_is_up(tmp_path):
    doc = _cfg(instances=[{"url": f"http://127.0.0.1:{9 + i}", "gpu": i} for i in range(3)])
    doc["state_dir"] = str(tmp_path / "state")
    agent = Agent(check(doc), s3=type("S3", (), {"stats": {}})())
    try:
        s0, s1, s2 = agent.slots
        assert not any(agent._takes_next(s) for s in agent.slots)   # nothing queued
        agent.queue.append("j")
        assert [agent._takes_next(s) for s in agent.slots] == [True, False, False]   # all equal: lowest index
        s0.started = 1
        assert [agent._takes_next(s) for s in agent.slots] == [False, True, False]   # least busy
        s1.reachable = False
        assert [agent._takes_next(s) for s in agent.slots] == [False, False, True]   # a down slot is skipped
        s2.current = "other"
        assert [agent._takes_next(s) for s in agent.slots] == [True, False, False]
        s0.current = "x"
        assert not any(agent._takes_next(s) for s in agent.slots)   # s1 is down: it waits for s0 or s2
        s0.reachable = s2.reachable = False
        s0.current = None
        assert [agent._takes_next(s) for s in agent.slots] == [False, True, False]   # all down: fails as today
        s1.settling = True   # cancelling its prompts first: not free
        assert [agent._takes_next(s) for s in agent.slots] == [True, False, False]
    finally:
        agent.store.close()


# ---------------------------------------------------------------------------------------------- two instances
@pytest.fixture
def two_comfy(standin_factory, tmp_path_factory):  # noqa: F811
    """Two stand-ins sharing one install's models/ and output/ (the first one's), each on its own port."""
    first = standin_factory()
    base = tmp_path_factory.mktemp("comfy1") / "base"
    base.mkdir()
    os.symlink(first.base_dir / "models", base / "models")
    second = standin_factory(base_dir=base, args=["--output-directory", str(first.output_dir)])
    return first, second


@pytest.fixture
def slots_env(tmp_path, minio, s3, bucket, two_comfy):
    s3.put_object(Bucket=bucket, Key="ckpt/base-v1.safetensors", Body=ckpt_bytes("ckpt"),
                  Metadata={"original-filename": "sdxl_base.safetensors"})
    s3.put_object(Bucket=bucket, Key="loras/3f9a1c0d2b7e", Body=model_bytes("lora-a"),
                  Metadata={"original-filename": "style.safetensors"})
    agents = []

    def start(urls=None, **over):
        doc = agent_config(tmp_path, minio, bucket, two_comfy[0], **over)
        del doc["comfyui"]["url"]
        doc["comfyui"]["instances"] = [{"url": u, "gpu": i} for i, u in
                                       enumerate(urls or [c.url for c in two_comfy])]
        a = RunningAgent(doc)
        agents.append(a)
        return a

    start.comfy = two_comfy
    start.bucket = bucket
    start.doc = lambda: agent_config(tmp_path, minio, bucket, two_comfy[0])
    yield start
    for a in agents:
        a.stop()


def _metric(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    m = re.search(rf"^visionsuit_gpu_agent_{name}{{{re.escape(want)}}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def _wait_state(agent, job_id, states, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = agent.request("GET", f"/jobs/{job_id}")[2]
        if doc["state"] in states:
            return doc
        time.sleep(0.02)
    raise AssertionError(f"{job_id} never reached {states}: {doc}")


def test_two_jobs_overlap_on_two_slots(slots_env):
    for c in slots_env.comfy:
        c.control(delay=0.4)
    agent = slots_env()
    assert agent.post_job(envelope("ov-a"))[0] == 202
    assert agent.post_job(envelope("ov-b"))[0] == 202
    _wait_state(agent, "ov-a", ("rendering",))
    _wait_state(agent, "ov-b", ("rendering",))
    health = agent.request("GET", "/healthz", token=None)[2]
    assert health["busy"] is True and sorted(health["current_jobs"]) == ["ov-a", "ov-b"], health
    assert [(s["slot"], s["gpu"], s["busy"]) for s in health["slots"]] == [(0, 0, True), (1, 1, True)], health
    a, b = agent.wait("ov-a", 60), agent.wait("ov-b", 60)
    assert a["state"] == b["state"] == "done", (a, b)
    assert {(a["slot"], a["gpu"]), (b["slot"], b["gpu"])} == {(0, 0), (1, 1)}
    # both renders ran at the same time, one on each ComfyUI
    assert max(a["marks"]["submitted"], b["marks"]["submitted"]) < min(a["marks"]["comfy_done"],
                                                                       b["marks"]["comfy_done"]), (a, b)
    for job, comfy in ((a, slots_env.comfy[a["slot"]]), (b, slots_env.comfy[b["slot"]])):
        assert comfy.get_json(f"/history/{job['prompt_id']}")[job["prompt_id"]]["status"]["status_str"] == "success"
    text = agent.request("GET", "/metrics", token=None)[2].decode()
    for i in (0, 1):
        assert _metric(text, "slot_jobs_total", slot=i, gpu=i) == 1, text
        assert _metric(text, "slot_failures_total", slot=i, gpu=i) == 0
        assert _metric(text, "slot_busy", slot=i, gpu=i) == 0
        assert _metric(text, "slot_up", slot=i, gpu=i) == 1


def test_six_jobs_all_finish_with_outputs_in_minio(slots_env, s3):
    for c in slots_env.comfy:
        c.control(delay=0.1)
    agent = slots_env()
    t0 = time.monotonic()
    for i in range(6):
        assert agent.post_job(envelope(f"six-{i}"))[0] == 202
    docs = [agent.wait(f"six-{i}", 90) for i in range(6)]
    elapsed = time.monotonic() - t0
    assert [d["state"] for d in docs] == ["done"] * 6, docs
    for d in docs:
        keys = list_keys(s3, slots_env.bucket, f"out/{d['job_id']}/")
        assert keys and keys == sorted(d["output_keys"])
    per_slot = [sum(1 for d in docs if d["slot"] == i) for i in (0, 1)]
    assert min(per_slot) >= 2, per_slot   # both slots worked
    print(f"6 jobs on 2 slots: {elapsed:.2f}s, per slot {per_slot}")
    assert not list((Path(slots_env.comfy[0].base_dir) / "models" / "loras").iterdir())


def test_a_lora_shared_by_two_running_jobs_survives_the_first_clean_up_and_is_downloaded_once(slots_env):
    fast, slow = slots_env.comfy
    fast.control(delay=0.05)
    slow.control(delay=0.8)
    agent = slots_env()
    loras = Path(fast.base_dir) / "models" / "loras"
    assert agent.post_job(envelope("share-a"))[0] == 202   # slot 0 (fast)
    assert agent.post_job(envelope("share-b"))[0] == 202   # slot 1 (slow)
    a = agent.wait("share-a", 60)
    b = agent.request("GET", "/jobs/share-b")[2]
    assert a["state"] == "done" and a["slot"] == 0, a
    assert b["state"] == "rendering" and b["slot"] == 1, b   # still running when a's clean-up ran
    lora_a = [x for x in a["assets"] if x["kind"] == "lora"][0]
    lora_b = [x for x in b["assets"] if x["kind"] == "lora"][0]
    assert lora_a["name"] == lora_b["name"] == "style.safetensors"   # one surfaced file, shared
    assert (loras / "style.safetensors").exists(), "removed by the first job's clean-up"
    rows = agent.agent.store.surfaced(persistent=False)
    assert [(Path(r["path"]).name, r["job_id"]) for r in rows] == [("style.safetensors", "share-b")]
    b = agent.wait("share-b", 60)
    assert b["state"] == "done", b
    assert not list(loras.iterdir())   # removed by the last user's clean-up
    assert agent.agent.store.surfaced(persistent=False) == []
    # two objects (checkpoint, LoRA), two jobs: each object downloaded once, found in the cache the second time
    metrics = agent.agent.metrics
    assert metrics.value("cache_misses_total") == 2 and metrics.value("cache_hits_total") == 2
    assert agent.agent.s3.stats.get("GetObject") == 2, agent.agent.s3.stats   # one GET per object


def test_a_slot_whose_comfyui_is_down_is_skipped_and_shown_unhealthy(slots_env):
    up = slots_env.comfy[0]
    up.control(delay=0.1)
    agent = slots_env(urls=[up.url, f"http://127.0.0.1:{free_port()}"])
    health = agent.request("GET", "/healthz", token=None)[2]
    assert health["status"] == "ok" and health["comfyui_reachable"] is False, health
    assert [(s["slot"], s["comfyui_reachable"]) for s in health["slots"]] == [(0, True), (1, False)], health
    for i in range(3):
        assert agent.post_job(envelope(f"down-{i}"))[0] == 202
    docs = [agent.wait(f"down-{i}", 60) for i in range(3)]
    assert [(d["state"], d["slot"]) for d in docs] == [("done", 0)] * 3, docs
    text = agent.request("GET", "/metrics", token=None)[2].decode()
    assert _metric(text, "slot_up", slot=1, gpu=1) == 0 and _metric(text, "slot_jobs_total", slot=1, gpu=1) == 0
    assert _metric(text, "slot_jobs_total", slot=0, gpu=0) == 3
    assert "visionsuit_gpu_agent_comfyui_up 0" in text


def test_a_timeout_on_slot_1_does_not_interrupt_slot_0(slots_env):
    comfy0, comfy1 = slots_env.comfy
    comfy0.control(delay=0.5)
    comfy1.control(delay=2.0)
    agent = slots_env()
    assert agent.post_job(envelope("long"))[0] == 202            # slot 0
    assert agent.post_job(envelope("tmo", timeout=3))[0] == 202  # slot 1
    tmo = agent.wait("tmo", 40)
    long = agent.wait("long", 40)
    assert long["state"] == "done" and long["slot"] == 0, long
    assert tmo["state"] == "failed" and tmo["slot"] == 1 and "did not finish within 3s" in tmo["error"], tmo
    assert f"Interrupting prompt {tmo['prompt_id']}" in comfy1.log() or \
        f"Prompt {tmo['prompt_id']} is not currently running" in comfy1.log()
    assert "nterrupt" not in comfy0.log(), comfy0.log()
    assert tmo["prompt_id"] not in comfy0.log()
    assert "Global interrupt" not in comfy1.log()
    hist = comfy0.get_json(f"/history/{long['prompt_id']}")[long["prompt_id"]]
    assert hist["status"]["status_str"] == "success"


def test_recovery_cancels_the_recorded_prompt_on_its_own_instance(slots_env):
    comfy0, comfy1 = slots_env.comfy
    comfy0.control(delay=1.0)
    comfy1.control(delay=1.0)
    doc = slots_env.doc()
    del doc["comfyui"]["url"]
    doc["comfyui"]["instances"] = [{"url": comfy0.url, "gpu": 0}, {"url": comfy1.url, "gpu": 1}]
    # the state a crash leaves: job "crash" rendering on slot 1, its prompt running in instance 1; instance 0
    # runs another client's prompt at the same time
    first = Agent(check(doc))
    first.submit(envelope("crash"))
    attempt = first.store.start_attempt("crash")
    orphan = comfy1.submit(_plain_prompt("vs-agent/crash.a1/img"))
    other = comfy0.submit(_plain_prompt("other/img"))
    first.store.record_prompt(orphan, "crash", attempt, "crash.a1", 1, comfy1.url)
    first.store.update("crash", state="rendering", prompt_id=orphan, slot=1, gpu=1)
    first.store.close()
    _wait_running(comfy1, orphan)
    _wait_running(comfy0, other)
    comfy0.control(delay=0.05)
    agent = RunningAgent(doc)   # the restart
    hist = comfy1.wait_history(orphan, 20)
    assert hist["status"]["status_str"] == "error" and hist["outputs"] == {}, hist["status"]
    assert f"Interrupting prompt {orphan}" in comfy1.log()
    assert orphan not in comfy0.log() and "nterrupt" not in comfy0.log()
    comfy1.control(delay=0.05)
    done = agent.wait("crash", 60)
    assert done["state"] == "done" and done["attempts"] == 2, done
    assert any(orphan in n and "interrupted" in n for n in done["notes"]), done["notes"]
    assert comfy0.wait_history(other, 20)["status"]["status_str"] == "success"
    assert agent.agent.store.prompts() == []


# ---------------------------------------------------------------------------------------------- schema 2 -> 3
_V2_PROMPTS = """
CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, state TEXT NOT NULL,
    spec TEXT NOT NULL, doc TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
    updated REAL NOT NULL, callback_state TEXT);
CREATE TABLE prompts (prompt_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, attempt INTEGER NOT NULL, run_dir TEXT,
    state TEXT NOT NULL, reason TEXT, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE surfaced (path TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL, etag TEXT, cache_path TEXT,
    persistent INTEGER NOT NULL, job_id TEXT, created REAL NOT NULL);
PRAGMA user_version = 2;
"""


def test_a_schema_2_database_gets_the_slot_columns(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(str(path))
    db.executescript(_V2_PROMPTS)
    doc = {"job_id": "old", "state": "rendering", "created_at": 1.0, "attempts": 1, "prompt_id": "p-old", "notes": []}
    db.execute("INSERT INTO jobs (seq, id, state, spec, doc, attempts, created, updated) VALUES "
               "(1, 'old', 'rendering', ?, ?, 1, 1, 1)", (json.dumps({"job_id": "old"}), json.dumps(doc)))
    db.execute("INSERT INTO prompts VALUES ('p-old', 'old', 1, 'old.a1', 'submitted', NULL, 1, 1)")
    db.commit()
    db.close()
    store = JobStore(str(path))
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert store.recover() == (["old"], [])
        assert [(p["prompt_id"], p["state"], p["slot"], p["url"]) for p in store.prompts()] == [
            ("p-old", "cancel", None, None)]   # no URL: slot 0 cancels it (the one ComfyUI of a schema-2 node)
        store.record_prompt("p-new", "old", 2, "old.a2", 1, "http://127.0.0.1:8189")
        assert [(p["slot"], p["url"]) for p in store.prompts() if p["prompt_id"] == "p-new"] == [
            (1, "http://127.0.0.1:8189")]
    finally:
        store.close()
    store = JobStore(str(path))   # opened again: nothing migrated twice
    try:
        assert len(store.prompts()) == 2
    finally:
        store.close()


def test_prompts_without_a_known_url_are_settled_by_slot_0(tmp_path):
    doc = _cfg(instances=[{"url": "http://127.0.0.1:9", "gpu": 0}, {"url": "http://127.0.0.1:10", "gpu": 1}])
    doc["state_dir"] = str(tmp_path / "state")
    agent = Agent(check(doc), s3=type("S3", (), {"stats": {}})())
    try:
        for pid, url in (("p-none", None), ("p-1", "http://127.0.0.1:10"), ("p-gone", "http://127.0.0.1:11")):
            agent.store.record_prompt(pid, "j", 1, "j.a1", None, url)
            agent.store.cancel_prompt(pid, "restart")
        # nothing answers on ports 9-11: each slot tries its own rows once, then backs off
        assert agent._settle_prompts(slot=agent.slots[0]) == 2
        assert agent._settle_prompts(slot=agent.slots[1]) == 1
    finally:
        agent.store.close()


def test_healthz_of_one_slot_keeps_its_fields(tmp_path):
    doc = _cfg(url="http://127.0.0.1:9")
    doc["state_dir"] = str(tmp_path / "state")
    agent = Agent(check(doc), s3=type("S3", (), {"stats": {}})())
    try:
        health = agent.health()
        for key in ("status", "busy", "current_job", "queue_depth", "max_queue", "comfyui_reachable",
                    "comfyui_checked_at", "version", "uptime_s"):
            assert key in health
        assert health["slots"] == [{"slot": 0, "gpu": None, "busy": False, "current_job": None,
                                    "comfyui_reachable": None, "comfyui_checked_at": None, "jobs": 0,
                                    "failures": 0, "draining": False}]
        assert health["draining"] is False and health["drained_slots"] == [] and health["running"] == []
        assert agent.probe_comfy() is False and agent.health()["comfyui_reachable"] is False
    finally:
        agent.store.close()
