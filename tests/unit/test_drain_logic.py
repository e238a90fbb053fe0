# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""agent_drain's logic (plugins/module_utils/service/drain.py) without sockets.

Most tests answer the module's calls with the real agent's request handling (``visionsuit_gpu_agent.handler``
on a real :class:`Agent` without threads: its drain state, queue and job store are the real ones; a running job
is a slot's ``current`` set by the test, as agent/tests/test_agent_drain.py does), so the module is checked
against the agent's actual contract. A scripted agent with a fake clock covers what needs hours or an old agent.
tests/integration/test_agent_drain_module.py runs the module with ansible-playbook against the agent's HTTP server
and the ComfyUI stand-in.
"""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from visionsuit_gpu_agent import handler
from visionsuit_gpu_agent.config import check
from visionsuit_gpu_agent.worker import Agent
from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.service import drain

TOKEN = "tok-Vq8Rz3KwYp2Ls7Dn5HjXc4Mb"
URL = "http://127.0.0.1:8081"
JOB = {"job_id": "new-1", "base_models": [{"key": "ckpt/a.safetensors"}], "parameters": {"prompt": "a cat"}}


class FakeS3:
    stats = {}


@pytest.fixture
def agents(tmp_path):
    made = []

    def make(slots=1):
        doc = {"server": {"api_token": TOKEN}, "state_dir": str(tmp_path / "state"),
               "minio": {"endpoint": "http://127.0.0.1:9000", "access_key": "a", "secret_key": "s"},
               "comfyui": {"instances": [{"url": f"http://127.0.0.1:{9 + i}", "gpu": i} for i in range(slots)]},
               "jobs": {"retry_after": 7}}
        agent = Agent(check(doc), s3=FakeS3())
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.store.close()


class Calls:
    """The module's ``call`` answered by the agent's request handling; records every request."""

    def __init__(self, agent, token=TOKEN):
        self.agent = agent
        self.token = token
        self.log = []

    def __call__(self, method, path, body=None, timeout=30.0):
        self.log.append((method, path, body, timeout))
        headers = {}
        raw = None
        if method == "POST":
            headers["Authorization"] = "Bearer " + self.token
            raw = json.dumps(body or {}).encode()
            headers.update({"Content-Type": "application/json", "Content-Length": str(len(raw))})
        resp = handler.handle(self.agent, method, path, headers, raw, "127.0.0.1")
        return resp.status, (json.loads(resp.body) if resp.body else None)

    @property
    def posts(self):
        return [(path, body) for method, path, body, _ in self.log if method == "POST"]


def post_job(agent, doc=JOB):
    raw = json.dumps(doc).encode()
    return handler.handle(agent, "POST", "/jobs", {"Authorization": "Bearer " + TOKEN, "Content-Length": str(len(raw)),
                                                   "Content-Type": "application/json"}, raw, "127.0.0.1")


def finish_later(agent, index, delay):
    def finish():
        time.sleep(delay)
        with agent.cond:
            agent.slots[index].current = None
            agent.cond.notify_all()
    thread = threading.Thread(target=finish, daemon=True)
    thread.start()
    return thread


def absent(method, path, body=None, timeout=30.0):
    raise drain.AgentAbsent("nothing listens at %s (connection refused)" % URL)


# ------------------------------------------------------------------------------------------------ idle agent
def test_drain_of_an_idle_agent_changes_once_and_refuses_new_jobs_until_resume(agents):
    agent = agents()
    calls = Calls(agent)
    out = drain.drain(calls, URL, slot=0, timeout=600)
    assert out["changed"] is True and out["agent"] == "present" and out["idle"] is True, out
    assert out["draining"] is True and out["drained_slots"] == [0] and out["accepting_jobs"] is False
    assert calls.posts == [("/drain", {"slot": 0, "timeout": 600})]
    assert calls.log[-1][3] == 600 + drain.HTTP_GRACE   # the client waits longer than the agent does
    resp = post_job(agent)
    assert resp.status == 503 and ("Retry-After", "7") in resp.headers   # the only slot is drained
    again = drain.drain(calls, URL, slot=0, timeout=600)
    assert again["changed"] is False and again["idle"] is True
    out = drain.resume(calls, URL, slot=0)
    assert out["changed"] is True and out["draining"] is False and out["accepting_jobs"] is True, out
    assert post_job(agent).status == 202
    assert drain.resume(calls, URL, slot=0)["changed"] is False


def test_drain_waits_for_the_running_job_and_answers_when_it_ended(agents):
    agent = agents()
    agent.slots[0].current = "run-1"
    thread = finish_later(agent, 0, 0.5)
    start = time.monotonic()
    out = drain.drain(Calls(agent), URL, timeout=30)
    thread.join()
    assert out["idle"] is True and out["changed"] is True and out["running"] == [], out
    assert 0.4 <= time.monotonic() - start < 10   # at the end of the job, not of the timeout


# ------------------------------------------------------------------------------------------------ not idle
def test_a_job_still_running_after_the_timeout_fails_naming_it_and_undoes_the_drain(agents):
    agent = agents(slots=2)
    agent.slots[1].current = "long-render-7"
    calls = Calls(agent)
    with pytest.raises(GpuWorkerError) as err:
        drain.drain(calls, URL, slot=1, timeout=1)
    text = str(err.value)
    assert "slot 1 of the agent at http://127.0.0.1:8081 still runs 1 job(s) after 1 s" in text, text
    assert "long-render-7 (slot 1)" in text
    assert "Raise visionsuit_drain_timeout (now 1 s)" in text and "-e visionsuit_force_restart=true" in text
    assert "the drain was undone (slot 1 takes jobs again)" in text
    assert err.value.details["running"] == [{"job_id": "long-render-7", "slot": 1}]
    assert err.value.details["undone"] is True
    assert agent.drain_state.active is False          # the node goes on taking jobs
    assert agent.slots[1].current == "long-render-7"  # and the job was not touched
    assert calls.posts == [("/drain", {"slot": 1, "timeout": 1}), ("/resume", {"slot": 1})]


def test_a_timeout_leaves_a_drain_made_before_in_place(agents):
    agent = agents()
    agent.drain()   # drained by hand before the run
    agent.slots[0].current = "long-1"
    with pytest.raises(GpuWorkerError) as err:
        drain.drain(Calls(agent), URL, timeout=0)
    assert "the agent stays drained, as it was before" in str(err.value)
    assert err.value.details["undone"] is False and agent.drain_state.all is True


def test_undoing_a_whole_agent_drain_keeps_the_slots_drained_before(agents):
    agent = agents(slots=3)
    agent.drain(slot=2)
    agent.slots[0].current = "a-1"
    agent.slots[1].current = "b-1"
    with pytest.raises(GpuWorkerError) as err:
        drain.drain(Calls(agent), URL, timeout=1)
    assert "still runs 2 job(s)" in str(err.value) and "a-1 (slot 0), b-1 (slot 1)" in str(err.value)
    assert agent.drain_state.all is False and agent.drain_state.drained_slots(3) == [2]


def test_force_warns_and_leaves_the_agent_drained_for_the_restart(agents):
    agent = agents()
    agent.slots[0].current = "long-1"
    out = drain.drain(Calls(agent), URL, slot=0, timeout=0, force=True)
    assert out["forced"] is True and out["idle"] is False and out["changed"] is True
    assert out["running"] == [{"job_id": "long-1", "slot": 0}]
    assert len(out["warnings"]) == 1 and "long-1 (slot 0)" in out["warnings"][0]
    assert "visionsuit_force_restart" in out["warnings"][0]
    assert agent.drain_state.drained(0)


# ------------------------------------------------------------------------------------------------ absent
def test_no_agent_listening_is_absent_and_changes_nothing():
    for out in (drain.drain(absent, URL, slot=0, timeout=600), drain.resume(absent, URL, slot=0),
                drain.drain(absent, URL, check_mode=True), drain.resume(absent, URL, check_mode=True)):
        assert out["agent"] == "absent" and out["changed"] is False, out
        assert "connection refused" in out["msg"]


def test_a_closed_port_is_absent_through_the_real_client():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = drain.AgentClient(f"http://127.0.0.1:{port}", TOKEN)
    out = drain.drain(client, client.url, timeout=5)
    assert out["agent"] == "absent" and out["changed"] is False


def test_a_slot_the_agent_does_not_have_is_nothing_to_drain(agents):
    agent = agents(slots=1)
    calls = Calls(agent)
    for out in (drain.drain(calls, URL, slot=1, timeout=600), drain.resume(calls, URL, slot=1)):
        assert out["changed"] is False and out["slot_known"] is False and "no slot 1" in out["msg"], out
    assert calls.posts == [] and not agent.drain_state.active


# ------------------------------------------------------------------------------------------------ check mode
def test_check_mode_reads_only_and_says_what_would_happen(agents):
    agent = agents(slots=2)
    agent.slots[0].current = "run-1"
    calls = Calls(agent)
    out = drain.drain(calls, URL, slot=0, timeout=600, check_mode=True)
    assert out["changed"] is True and out["idle"] is False and out["running"] == [{"job_id": "run-1", "slot": 0}]
    assert "would drain slot 0" in out["msg"] and "run-1 (slot 0)" in out["msg"] and "600 s" in out["msg"]
    assert drain.resume(calls, URL, slot=0, check_mode=True)["changed"] is False   # not drained
    agent.drain(slot=1)
    assert drain.drain(calls, URL, slot=1, check_mode=True)["changed"] is False
    assert drain.resume(calls, URL, slot=1, check_mode=True)["changed"] is True
    assert drain.resume(calls, URL, check_mode=True)["changed"] is True
    assert calls.posts == [] and agent.drain_state.drained_slots(2) == [1]   # GET /healthz only


# ------------------------------------------------------------------------------------------------ resume
def test_resume_of_the_whole_agent_ends_every_drain(agents):
    agent = agents(slots=2)
    agent.drain(slot=1)
    calls = Calls(agent)
    out = drain.resume(calls, URL)
    assert out["changed"] is True and out["drained_slots"] == [] and not agent.drain_state.active
    assert calls.posts == [("/resume", {})]
    assert drain.resume(calls, URL)["changed"] is False


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("state", ["drained", "resumed"])
def test_a_wrong_token_names_the_option_never_the_token(agents, state):
    agent = agents()
    calls = Calls(agent, token="wrong-" + TOKEN[::-1])
    with pytest.raises(GpuWorkerError) as err:
        if state == "drained":
            drain.drain(calls, URL, timeout=5)
        else:
            agent.drain()
            drain.resume(calls, URL)
    assert err.value.field == "token" and "HTTP 401" in str(err.value) and "gpu_agent_api_token" in str(err.value)
    assert TOKEN not in str(err.value) and TOKEN[::-1] not in str(err.value)


def test_force_turns_an_agent_that_cannot_be_drained_into_a_warning(agents):
    agent = agents()
    out = drain.drain(Calls(agent, token="wrong-" + TOKEN[::-1]), URL, slot=0, timeout=5, force=True)
    assert out["agent"] == "error" and out["forced"] is True and out["changed"] is False, out
    assert "HTTP 401" in out["warnings"][0] and "visionsuit_force_restart" in out["warnings"][0]
    assert TOKEN[::-1] not in out["warnings"][0] and not agent.drain_state.active


def test_the_allow_list_refusal_says_what_to_change():
    def forbidden(method, path, body=None, timeout=30.0):
        if method == "GET":
            return 200, {"status": "ok", "draining": False, "drained_slots": [], "running": [], "slots": [{"slot": 0}]}
        return 403, {"error": "client 10.1.2.3 is not in server.allowed_networks"}
    with pytest.raises(GpuWorkerError) as err:
        drain.drain(forbidden, URL, timeout=5)
    assert "HTTP 403" in str(err.value) and "gpu_agent_allowed_networks" in str(err.value)


# ------------------------------------------------------------------------------------------------ scripted agent
class Scripted:
    """An agent whose job ends at ``ends_at`` on a fake clock; a drain's wait advances the clock."""

    def __init__(self, ends_at, clock):
        self.ends_at = ends_at
        self.clock = clock
        self.posts = []

    def __call__(self, method, path, body=None, timeout=30.0):
        running = [] if self.clock.now >= self.ends_at else [{"job_id": "j", "slot": 0}]
        if method == "GET":
            return 200, {"status": "ok", "draining": False, "drained_slots": [], "running": running,
                         "slots": [{"slot": 0}], "queue_depth": 0}
        self.posts.append((path, body, timeout))
        wait = (body or {}).get("timeout", 0)
        self.clock.now = min(self.clock.now + wait, max(self.ends_at, self.clock.now))
        running = [] if self.clock.now >= self.ends_at else running
        return 200, {"slot": None, "draining": True, "drained_slots": [0], "accepting_jobs": False,
                     "idle": not running, "running": running, "queued": 0, "since": 1.0}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_a_wait_longer_than_the_agents_hour_is_asked_for_again():
    clock = Clock()
    agent = Scripted(clock.now + 5000, clock)
    out = drain.drain(agent, URL, timeout=7200, clock=clock, sleep=clock.sleep)
    assert out["idle"] is True and out["waited"] == 5000
    assert [(b["timeout"], t) for _, b, t in agent.posts] == [(3600, 3630.0), (3600, 3630.0)]


def test_an_old_agent_without_the_drain_api_is_unsupported_with_a_warning():
    def old(method, path, body=None, timeout=30.0):
        if method == "GET":
            return 200, {"status": "ok", "busy": True, "current_job": "j"}
        return 404, {"error": "no such endpoint /drain"}
    out = drain.drain(old, URL, slot=0, timeout=600)
    assert out["agent"] == "unsupported" and out["changed"] is False
    assert "no drain API" in out["warnings"][0]
    assert drain.resume(old, URL, slot=0)["agent"] == "unsupported"


def test_a_bad_url_names_the_option():
    with pytest.raises(GpuWorkerError) as err:
        drain.AgentClient("127.0.0.1:8081", TOKEN)
    assert err.value.field == "url"
