# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The comfyui role's "Restart comfyui" handler drains the agent slot by slot (issue 16), run by ansible-playbook.

The real handler chain (clear the start limit, note the restart as pending, per unit: drain the slot, restart,
wait for /system_stats, resume; remove the note) runs on localhost against the real agent (HTTP server, two render
slots) and two ComfyUI stand-ins; ``systemctl`` is a stand-in on PATH that logs each call with the time (this
machine runs no systemd), so the order of the restarts can be compared with the job's ``finished_at``.
molecule/multigpu/verify.yml proves the same on a node with the real units.

One job renders on slot 1 (the second stand-in is slow): a run with a 1 s drain timeout restarts comfyui@0 (its
slot is idle), then fails naming the job before comfyui@1 is restarted, undoes the drain and leaves the note; the
next run waits for the job and restarts comfyui@1 only after it ended (``done``, first attempt), and ends with no
slot drained. Without an agent token the handler restarts the units and makes no HTTP call, as before.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from test_agent_drain_module import TOKEN, HttpAgent, _config, envelope

from rig.standin_fixtures import checkpoint_bytes, safetensors_bytes
from tests.ansible_run import LOCALHOST, repo_env, results, run, write_play

pytestmark = pytest.mark.integration

FAKE_SYSTEMCTL = """#!/bin/sh
# systemctl stand-in: log the call with the time; "show" describes a running unit
printf '%s %s\\n' "$(date +%s.%N)" "$*" >> "$SYSTEMCTL_LOG"
case "$1" in
  show) printf 'LoadState=loaded\\nActiveState=active\\nSubState=running\\nResult=success\\nNRestarts=0\\n' ;;
esac
exit 0
"""

PLAY = [{
    "name": "the comfyui role's restart handler under test",
    "hosts": "localhost",
    "gather_facts": False,
    "tasks": [
        {"name": "Load the comfyui role (its defaults, vars and handlers)",
         "ansible.builtin.include_role": {"name": "visionsuit.gpuworker.comfyui", "tasks_from": "footprint.yml",
                                          "public": True}},
        {"name": "Plan two instances on the stand-ins' ports",
         "ansible.builtin.set_fact": {"_comfyui_instance_plan": "{{ t_plan }}"}},
        {"name": "Change something", "ansible.builtin.command": "true", "changed_when": True,
         "notify": "Restart comfyui"},
    ],
}]


@pytest.fixture
def node(tmp_path, minio, s3, bucket, standin_factory):
    first = standin_factory()
    base = tmp_path / "comfy1"
    base.mkdir()
    os.symlink(first.base_dir / "models", base / "models")
    second = standin_factory(base_dir=base, args=["--output-directory", str(first.output_dir)])
    s3.put_object(Bucket=bucket, Key="ckpt/base.safetensors", Body=checkpoint_bytes(b"ckpt"))
    s3.put_object(Bucket=bucket, Key="loras/style", Body=safetensors_bytes({"w": b"lora"}))
    doc = _config(tmp_path, minio, bucket, first)
    del doc["comfyui"]["url"]
    doc["comfyui"]["instances"] = [{"url": first.url, "gpu": 0}, {"url": second.url, "gpu": 1}]
    agent = HttpAgent(doc)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    agent.comfy = (first, second)
    agent.bindir = bindir
    yield agent
    agent.stop()


def request(agent, method, path, body=None):
    status, _, doc = agent.request(method, path, body)
    return status, doc


def converge(tmp_path, node, log, **over):
    extra = {"t_plan": [{"index": i, "unit": f"comfyui@{i}.service", "port": c.port}
                        for i, c in enumerate(node.comfy)],
             "comfyui_drain_agent_url": node.url, "comfyui_drain_agent_token": TOKEN,
             "comfyui_config_dir": str(tmp_path / "etc"), "comfyui_wait_timeout": 30}
    extra.update(over)
    (tmp_path / "etc").mkdir(exist_ok=True)
    play = write_play(tmp_path, PLAY, "restart.yml")
    env = repo_env(PATH=f"{node.bindir}:{os.environ['PATH']}", SYSTEMCTL_LOG=str(log))
    r = run(play, "localhost,", env, *LOCALHOST, cwd=tmp_path, check=False, extra_vars=extra, timeout=240)
    return r, results(r.out)


def restarts(log):
    """[(time, unit)] of each `systemctl restart` logged."""
    out = []
    for line in Path(log).read_text().splitlines() if Path(log).exists() else []:
        ts, _, args = line.partition(" ")
        words = args.replace("'", "").split()
        if words[:1] == ["restart"]:
            out.append((float(ts), words[1]))
    return out


def test_the_restart_handler_drains_slot_by_slot_and_waits_for_the_running_job(tmp_path, node):
    first, second = node.comfy
    second.control(delay=2.5)   # slot 1 renders for ~20 s: through both runs below
    # the job on slot 1: slot 0 takes no job while it is posted
    assert request(node, "POST", "/drain", {"slot": 0})[0] == 200
    assert request(node, "POST", "/jobs", envelope("slot1-long"))[0] == 202
    job = node.wait("slot1-long", ("rendering",), timeout=60)
    assert job["slot"] == 1, job
    assert request(node, "POST", "/resume", {"slot": 0})[0] == 200

    log = tmp_path / "systemctl-1.log"
    r, res = converge(tmp_path, node, log, comfyui_drain_timeout=1)
    assert r.rc != 0
    failed = [x for name, x in res if x.get("failed")]
    assert len(failed) == 1, res
    msg = failed[0]["msg"]
    assert "slot 1 of the agent at" in msg and "slot1-long (slot 1)" in msg, msg
    assert "visionsuit_drain_timeout (now 1 s)" in msg and "-e visionsuit_force_restart=true" in msg
    assert [u for _, u in restarts(log)] == ["comfyui@0.service"]        # slot 0 restarted, slot 1 not
    assert (tmp_path / "etc" / "restart-pending").exists()                 # the next run owes the restart
    health = request(node, "GET", "/healthz")[1]
    assert health["drained_slots"] == [], health                            # the drain was undone
    assert node.job("slot1-long")["state"] not in ("done", "failed")        # the job goes on
    assert TOKEN not in r.raw

    log = tmp_path / "systemctl-2.log"
    r, res = converge(tmp_path, node, log, comfyui_drain_timeout=120)
    assert r.rc == 0, r.raw[-3000:]
    done = node.job("slot1-long")
    assert done["state"] == "done" and done["attempts"] == 1, done
    times = dict((u, t) for t, u in restarts(log))
    assert sorted(times) == ["comfyui@0.service", "comfyui@1.service"], times
    assert times["comfyui@0.service"] < done["finished_at"]     # the other slot did not wait for the job
    assert times["comfyui@1.service"] >= done["finished_at"]    # its own slot restarted after the job ended
    names = [name for name, _ in res]
    assert names.count("Resume the agent's render slot of the instance - comfyui@1.service") == 1, names
    assert not (tmp_path / "etc" / "restart-pending").exists()
    health = request(node, "GET", "/healthz")[1]
    assert health["drained_slots"] == [] and health["draining"] is False, health


def test_without_an_agent_token_the_handler_only_restarts(tmp_path, node):
    log = tmp_path / "systemctl.log"
    # the agent is drained by hand: a handler that made HTTP calls would resume it
    assert request(node, "POST", "/drain", {"slot": 1})[0] == 200
    r, res = converge(tmp_path, node, log, comfyui_drain_agent_token="")
    assert r.rc == 0, r.raw[-3000:]
    assert [u for _, u in restarts(log)] == ["comfyui@0.service", "comfyui@1.service"]
    ran = {name: x for name, x in res}
    for name in ("Drain the agent's render slot of the instance, then wait for its job - comfyui@1.service",
                 "Wait until the restarted instance answers /system_stats - comfyui@1.service",
                 "Resume the agent's render slot of the instance - comfyui@1.service"):
        assert ran[name].get("skipped") is True, (name, ran[name])
    assert request(node, "GET", "/healthz")[1]["drained_slots"] == [1]
