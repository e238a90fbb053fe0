# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Draining (issue 16): ``POST /drain`` / ``POST /resume``, so that ComfyUI or the agent restarts under no job.

The request handling runs without sockets against a real :class:`Agent` without threads (its drain state, queue,
scheduler and job store are the real ones; a running job is a slot's ``current`` set by the test). The last tests
run the agent's HTTP server with the ComfyUI stand-in and a real MinIO, as the other integration tests do: one
slot (drain with a job running and one queued, the drain kept over an agent restart, resume), and two slots (one
slot drained while the other renders).
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from test_agent_integration import TOKEN, RunningAgent, env, envelope  # noqa: F401
from test_agent_slots import _metric, _wait_state, slots_env, two_comfy  # noqa: F401

from visionsuit_gpu_agent import handler
from visionsuit_gpu_agent.config import check
from visionsuit_gpu_agent.drain import FILE_NAME, DrainState
from visionsuit_gpu_agent.worker import Agent

JOB = {"job_id": "d1", "base_models": [{"key": "ckpt/a.safetensors"}], "parameters": {"prompt": "a cat"}}


class FakeS3:
    stats = {}


def make_agent(state_dir, slots=1, **jobs):
    doc = {"server": {"api_token": TOKEN}, "state_dir": str(state_dir),
           "minio": {"endpoint": "http://127.0.0.1:9000", "access_key": "a", "secret_key": "s"},
           "comfyui": {"instances": [{"url": f"http://127.0.0.1:{9 + i}", "gpu": i} for i in range(slots)]},
           "jobs": dict({"retry_after": 7}, **jobs)}
    return Agent(check(doc), s3=FakeS3())


@pytest.fixture
def agents(tmp_path):
    made = []

    def make(slots=1, **jobs):
        a = make_agent(tmp_path / "state", slots, **jobs)
        made.append(a)
        return a

    yield make
    for a in made:
        a.store.close()


def call(agent, method, path, body=None, token=TOKEN, headers=None):
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    if body is not None:
        hdrs.setdefault("Content-Length", str(len(body)))
    return handler.handle(agent, method, path, hdrs, body, "127.0.0.1")


# ---------------------------------------------------------------------------------------------- no sockets
@pytest.mark.parametrize("path", ["/drain", "/resume"])
@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x"])
def test_drain_and_resume_need_the_bearer_token(agents, path, token):
    agent = agents()
    if path == "/resume":
        agent.drain()
    resp = call(agent, "POST", path, {}, token=token)
    assert resp.status == 401 and resp.close
    assert ("WWW-Authenticate", 'Bearer realm="visionsuit-gpu-agent"') in resp.headers
    assert agent.drain_state.active is (path == "/resume")   # nothing changed
    early = handler.check_head(agent, "POST", path, {}, "127.0.0.1")   # refused before any body is read
    assert early is not None and early.status == 401


def test_drain_is_refused_outside_the_allowed_networks(tmp_path):
    doc = {"server": {"api_token": TOKEN, "allowed_networks": ["10.0.0.0/8"]}, "state_dir": str(tmp_path / "state"),
           "minio": {"endpoint": "http://127.0.0.1:9000", "access_key": "a", "secret_key": "s"}}
    agent = Agent(check(doc), s3=FakeS3())
    try:
        assert handler.handle(agent, "POST", "/drain", {"Authorization": "Bearer " + TOKEN}, b"", "192.168.1.5"
                              ).status == 403
        assert not agent.drain_state.active
    finally:
        agent.store.close()


def test_post_jobs_while_draining_is_503_with_retry_after_and_the_job_is_not_stored(agents):
    agent = agents()
    resp = call(agent, "POST", "/drain")   # no body at all: {}
    assert resp.status == 200, resp.body
    assert resp.json() == {"slot": None, "draining": True, "drained_slots": [0], "accepting_jobs": False,
                           "idle": True, "running": [], "queued": 0, "since": resp.json()["since"]}
    resp = call(agent, "POST", "/jobs", JOB)
    assert resp.status == 503, resp.body
    assert ("Retry-After", "7") in resp.headers   # jobs.retry_after
    body = resp.json()
    assert body["draining"] is True and "draining" in body["error"] and "POST /resume" in body["error"]
    assert agent.store.get("d1") is None and list(agent.queue) == []
    assert call(agent, "GET", "/jobs/d1").status == 404
    assert agent.metrics.value("jobs_rejected_total", reason="draining") == 1
    assert agent.metrics.value("jobs_accepted_total") == 0
    resume = call(agent, "POST", "/resume", {})
    assert resume.status == 200 and resume.json()["draining"] is False and resume.json()["accepting_jobs"] is True
    assert call(agent, "POST", "/jobs", JOB).status == 202
    assert list(agent.queue) == ["d1"]


def test_a_job_known_before_the_drain_is_answered_as_before(agents):
    agent = agents()
    assert call(agent, "POST", "/jobs", JOB).status == 202
    call(agent, "POST", "/drain")
    again = call(agent, "POST", "/jobs", JOB)   # the same envelope again: idempotent, nothing new stored
    assert again.status == 200 and again.json()["state"] == "queued"
    assert list(agent.queue) == ["d1"]


def test_a_queued_job_does_not_start_while_draining_and_starts_after_resume(agents):
    agent = agents(slots=2)
    assert call(agent, "POST", "/jobs", JOB).status == 202
    assert [agent._takes_next(s) for s in agent.slots] == [True, False]
    doc = call(agent, "POST", "/drain").json()
    assert doc["queued"] == 1 and doc["idle"] is True and doc["drained_slots"] == [0, 1]
    assert not any(agent._takes_next(s) for s in agent.slots)          # kept, not started
    for s in agent.slots:
        s.reachable = False                                            # not even in the all-down fallback
    assert not any(agent._takes_next(s) for s in agent.slots)
    for s in agent.slots:
        s.reachable = True
    assert agent.store.get("d1")["state"] == "queued" and list(agent.queue) == ["d1"]
    health = call(agent, "GET", "/healthz", token=None).json()
    assert health["draining"] is True and health["drained_slots"] == [0, 1] and health["queue_depth"] == 1
    assert [s["draining"] for s in health["slots"]] == [True, True]
    assert call(agent, "POST", "/resume").json()["queued"] == 1
    assert [agent._takes_next(s) for s in agent.slots] == [True, False]


def _finish_later(agent, slot, delay):
    def finish():
        time.sleep(delay)
        with agent.cond:
            slot.current = None
            agent.cond.notify_all()
    t = threading.Thread(target=finish, daemon=True)
    t.start()
    return t


def test_drain_with_timeout_answers_idle_once_the_running_job_ended(agents):
    agent = agents()
    agent.slots[0].current = "running-1"
    assert call(agent, "POST", "/jobs", JOB).status == 202
    t = _finish_later(agent, agent.slots[0], 0.4)
    t0 = time.monotonic()
    resp = call(agent, "POST", "/drain", {"timeout": 20})
    elapsed = time.monotonic() - t0
    t.join()
    assert resp.status == 200
    doc = resp.json()
    assert doc["idle"] is True and doc["running"] == [] and doc["queued"] == 1 and doc["draining"] is True, doc
    assert 0.3 <= elapsed < 5, elapsed   # answered when the job ended, not at the timeout


def test_drain_with_timeout_answers_not_idle_when_the_timeout_passes_first(agents):
    agent = agents()
    agent.slots[0].current = "long-1"
    t0 = time.monotonic()
    doc = call(agent, "POST", "/drain", {"timeout": 0.3}).json()
    assert time.monotonic() - t0 >= 0.3
    assert doc["idle"] is False and doc["running"] == [{"job_id": "long-1", "slot": 0}], doc
    doc = call(agent, "POST", "/drain").json()   # without timeout: at once, the same document
    assert doc["idle"] is False and doc["running"] == [{"job_id": "long-1", "slot": 0}]
    health = call(agent, "GET", "/healthz", token=None).json()
    assert health["running"] == [{"job_id": "long-1", "slot": 0}] and health["slots"][0]["current_job"] == "long-1"


def test_drain_wait_ends_when_the_agent_stops(agents):
    agent = agents()
    agent.slots[0].current = "long-1"
    threading.Timer(0.2, agent.stop, kwargs={"grace": 0}).start()
    t0 = time.monotonic()
    doc = call(agent, "POST", "/drain", {"timeout": 60}).json()
    assert time.monotonic() - t0 < 10 and doc["idle"] is False


def test_the_drain_survives_an_agent_restart_and_only_resume_ends_it(agents, tmp_path):
    state = tmp_path / "state"
    first = agents()
    assert call(first, "POST", "/jobs", JOB).status == 202
    call(first, "POST", "/drain", {"timeout": 0})
    saved = json.loads((state / FILE_NAME).read_text())
    assert saved["all"] is True and saved["slots"] == [] and saved["version"] == 1
    assert [p.name for p in state.iterdir() if p.name.endswith(".tmp")] == []   # written through a renamed temp
    first.store.close()

    second = agents().start(threads=False)   # a new agent on the same state dir
    assert second.drain_state.refuses_jobs(1) and list(second.queue) == ["d1"]
    assert not second._takes_next(second.slots[0])
    assert call(second, "GET", "/healthz", token=None).json()["draining"] is True
    assert call(second, "POST", "/jobs", dict(JOB, job_id="d2")).status == 503
    assert "visionsuit_gpu_agent_draining 1" in call(second, "GET", "/metrics", token=None).body.decode()
    assert call(second, "POST", "/resume").status == 200
    assert not (state / FILE_NAME).exists()
    assert second._takes_next(second.slots[0])
    second.store.close()

    third = agents()
    assert not third.drain_state.active and call(third, "GET", "/healthz", token=None).json()["draining"] is False
    assert "visionsuit_gpu_agent_draining 0" in call(third, "GET", "/metrics", token=None).body.decode()


def test_an_unreadable_drain_file_keeps_the_agent_drained_until_resume(agents, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_text("{not json")
    (state / ("." + FILE_NAME + ".abc.tmp")).write_text("half")   # a write cut short
    agent = agents()
    assert agent.drain_state.refuses_jobs(1) and "not valid JSON" in agent.drain_state.problem
    assert not (state / ("." + FILE_NAME + ".abc.tmp")).exists()
    assert call(agent, "POST", "/jobs", JOB).status == 503
    assert call(agent, "POST", "/resume").json()["draining"] is False
    assert not (state / FILE_NAME).exists()
    assert call(agent, "POST", "/jobs", JOB).status == 202


def test_a_drain_that_cannot_be_saved_changes_nothing(agents, monkeypatch):
    agent = agents()

    def fail(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DrainState, "save", fail)
    resp = call(agent, "POST", "/drain")
    assert resp.status == 500 and "No space left on device" in resp.json()["error"]
    assert not agent.drain_state.active and call(agent, "POST", "/jobs", JOB).status == 202


@pytest.mark.parametrize("body,fragment", [
    ({"timeout": -1}, "timeout: must be a number of seconds"),
    ({"timeout": "60"}, "timeout: must be a number of seconds"),
    ({"timeout": 99999}, "timeout: must be a number of seconds"),
    ({"timeout": True}, "timeout: must be a number of seconds"),
    (b'{"timeout": NaN}', "timeout: must be a number of seconds"),
    ({"slot": -1}, "slot: must be a slot index"),
    ({"slot": "0"}, "slot: must be a slot index"),
    ({"slot": 5}, "slot: no slot 5 here (slots 0-1)"),
    ({"wait": 5}, "wait: unknown key"),
    (b"[1]", "must be an object"),
    (b"{nope", "not valid JSON"),
])
def test_bad_drain_bodies_are_400s_and_change_nothing(agents, body, fragment):
    agent = agents(slots=2)
    resp = call(agent, "POST", "/drain", body)
    assert resp.status == 400 and fragment in resp.body.decode(), resp.body
    assert not agent.drain_state.active


def test_drain_routing_and_content_rules(agents):
    agent = agents()
    assert call(agent, "GET", "/drain").status == 405
    assert call(agent, "GET", "/resume").status == 405
    assert call(agent, "POST", "/resume", {"timeout": 5}).status == 400   # /resume waits for nothing
    assert call(agent, "POST", "/drain", b'{"timeout": 0}', headers={"Content-Type": "text/plain"}).status == 415
    assert call(agent, "POST", "/drain", b"", headers={"Content-Type": "application/x-www-form-urlencoded"}
                ).status == 200   # no body: its type does not matter
    assert "POST /drain" in call(agent, "GET", "/nope").json()["error"]


def test_one_slot_drained_takes_no_job_while_the_others_do(agents):
    agent = agents(slots=3)
    resp = call(agent, "POST", "/drain", {"slot": 0})
    doc = resp.json()
    assert doc["slot"] == 0 and doc["draining"] is True and doc["drained_slots"] == [0], doc
    assert doc["accepting_jobs"] is True and doc["idle"] is True
    assert call(agent, "POST", "/jobs", JOB).status == 202                     # the agent still takes jobs
    assert [agent._takes_next(s) for s in agent.slots] == [False, True, False]  # the next free slot that is open
    agent.slots[1].current = "x"
    assert [agent._takes_next(s) for s in agent.slots] == [False, False, True]
    agent.slots[2].current = "y"
    assert not any(agent._takes_next(s) for s in agent.slots)                   # it waits for slot 1 or 2
    # idle refers to the drained slot only
    agent.slots[0].current = "z"
    doc = call(agent, "POST", "/drain", {"slot": 0, "timeout": 0.1}).json()
    assert doc["idle"] is False and doc["running"] == [{"job_id": "z", "slot": 0}], doc
    assert call(agent, "POST", "/drain", {"slot": 1, "timeout": 0}).json()["running"] == [{"job_id": "x", "slot": 1}]
    health = call(agent, "GET", "/healthz", token=None).json()
    assert health["draining"] is False and health["drained_slots"] == [0, 1]
    assert [s["draining"] for s in health["slots"]] == [True, True, False]
    text = call(agent, "GET", "/metrics", token=None).body.decode()
    assert _metric(text, "slot_draining", slot=0, gpu=0) == 1 and _metric(text, "slot_draining", slot=2, gpu=2) == 0
    assert "visionsuit_gpu_agent_draining 0" in text
    # every slot drained: the agent takes no new job
    call(agent, "POST", "/drain", {"slot": 2})
    assert call(agent, "POST", "/jobs", dict(JOB, job_id="d2")).status == 503
    assert call(agent, "GET", "/healthz", token=None).json()["draining"] is True
    # resume one slot: jobs are taken again, on that slot only
    doc = call(agent, "POST", "/resume", {"slot": 2}).json()
    assert doc["draining"] is False and doc["drained_slots"] == [0, 1] and doc["accepting_jobs"] is True
    agent.slots[2].current = None
    assert [agent._takes_next(s) for s in agent.slots] == [False, False, True]
    assert call(agent, "POST", "/resume").json()["drained_slots"] == []


def test_resuming_one_slot_of_a_drained_agent_leaves_the_others_drained(agents, tmp_path):
    agent = agents(slots=2)
    call(agent, "POST", "/drain")
    doc = call(agent, "POST", "/resume", {"slot": 1}).json()
    assert doc["drained_slots"] == [0] and doc["accepting_jobs"] is True
    saved = json.loads((tmp_path / "state" / FILE_NAME).read_text())
    assert saved["all"] is False and saved["slots"] == [0]
    agent.store.close()
    again = agents(slots=2)   # per-slot drains survive a restart too
    assert again.drain_state.drained_slots(2) == [0] and call(again, "POST", "/jobs", JOB).status == 202


def test_a_saved_slot_this_configuration_lacks_is_dropped(agents, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_text(json.dumps({"version": 1, "all": False, "slots": [1, 4], "since": 1.0}))
    agent = agents(slots=2)
    assert agent.drain_state.drained_slots(2) == [1]


# ---------------------------------------------------------------------------------------------- HTTP + ComfyUI
@pytest.mark.integration
def test_drain_over_http_with_a_running_and_a_queued_job_kept_over_a_restart(env):  # noqa: F811
    env.comfy.control(delay=1.0)
    agent = env()
    assert agent.post_job(envelope("run-1"))[0] == 202
    assert agent.post_job(envelope("wait-1"))[0] == 202   # queued behind it (one slot)
    _wait_state(agent, "run-1", ("rendering",))
    status, _, doc = agent.request("POST", "/drain", {"timeout": 0.2})
    assert status == 200 and doc["idle"] is False and doc["running"] == [{"job_id": "run-1", "slot": 0}], doc
    status, headers, body = agent.post_job(envelope("new-1"))
    assert status == 503 and headers.get("Retry-After") == "10" and "draining" in body["error"], (status, body)
    assert agent.request("GET", "/jobs/new-1")[0] == 404
    status, _, doc = agent.request("POST", "/drain", {"timeout": 30})   # waits for run-1 to end
    assert status == 200 and doc["idle"] is True and doc["running"] == [] and doc["queued"] == 1, doc
    assert agent.request("GET", "/jobs/run-1")[2]["state"] == "done"   # finished normally during the drain
    time.sleep(1.0)
    assert agent.request("GET", "/jobs/wait-1")[2]["state"] == "queued"
    health = agent.request("GET", "/healthz", token=None)[2]
    assert health["draining"] is True and health["slots"][0]["draining"] is True and health["busy"] is False
    assert _metric(agent.request("GET", "/metrics", token=None)[2].decode(), "slot_draining", slot=0, gpu="") == 1
    assert agent.request("POST", "/resume", token=None)[0] == 401
    assert agent.request("POST", "/drain", token="nope")[0] == 401

    agent.stop()   # the agent restarts (a new one on the same state dir): still drained, wait-1 still queued
    agent = env()
    health = agent.request("GET", "/healthz", token=None)[2]
    assert health["draining"] is True and health["queue_depth"] == 1, health
    env.comfy.control(delay=0.05)
    time.sleep(1.0)
    assert agent.request("GET", "/jobs/wait-1")[2]["state"] == "queued"
    assert agent.post_job(envelope("new-1"))[0] == 503
    status, _, doc = agent.request("POST", "/resume")
    assert status == 200 and doc["draining"] is False, doc
    assert agent.wait("wait-1", 60)["state"] == "done"
    assert agent.post_job(envelope("new-1"))[0] == 202
    assert agent.wait("new-1", 60)["state"] == "done"
    assert not (Path(env.tmp) / "state" / FILE_NAME).exists()
    assert os.listdir(Path(env.tmp) / "state")   # the state dir is still there


@pytest.mark.integration
def test_one_slot_drained_over_http_while_the_other_renders(slots_env):  # noqa: F811
    for c in slots_env.comfy:
        c.control(delay=0.1)
    agent = slots_env()
    status, _, doc = agent.request("POST", "/drain", {"slot": 0, "timeout": 5})
    assert status == 200 and doc["idle"] is True and doc["accepting_jobs"] is True, doc
    for i in range(3):
        assert agent.post_job(envelope(f"one-{i}"))[0] == 202
    docs = [agent.wait(f"one-{i}", 60) for i in range(3)]
    assert [(d["state"], d["slot"]) for d in docs] == [("done", 1)] * 3, docs
    assert agent.request("POST", "/resume", {"slot": 0})[2]["drained_slots"] == []
    assert agent.post_job(envelope("one-3"))[0] == 202
    assert agent.post_job(envelope("one-4"))[0] == 202
    docs = [agent.wait(f"one-{i}", 60) for i in (3, 4)]
    assert 0 in {d["slot"] for d in docs}, docs   # slot 0 takes jobs again
