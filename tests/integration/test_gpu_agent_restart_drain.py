# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gpu_agent role's "Restart visionsuit-gpu-agent" handlers drain the whole agent first (issue 16), run by
ansible-playbook on localhost against the real agent (HTTP server, one slot) and the ComfyUI stand-in, with a
``systemctl`` stand-in that logs each call with the time (as tests/integration/test_comfyui_restart_drain.py).

A job renders: a 1 s drain timeout fails the host naming the job, before any restart, undoes the drain and leaves
the note of the pending restart; a longer one restarts only after the job ended (``done``, first attempt), waits
for /healthz and resumes the agent. The drain reaches the agent as it runs now - the address and token of the
config.yaml read before the run rewrites it - not as the run configures it (a new port or token).
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from test_agent_drain_module import TOKEN, HttpAgent, _config, envelope
from test_comfyui_restart_drain import FAKE_SYSTEMCTL, restarts

from rig.standin_fixtures import checkpoint_bytes, safetensors_bytes
from tests.ansible_run import LOCALHOST, repo_env, results, run, write_play

pytestmark = pytest.mark.integration

PLAY = [{
    "name": "the gpu_agent role's restart handlers under test",
    "hosts": "localhost",
    "gather_facts": False,
    "tasks": [
        {"name": "Load the gpu_agent role (its defaults, vars and handlers)",
         "ansible.builtin.include_role": {"name": "visionsuit.gpuworker.gpu_agent", "tasks_from": "footprint.yml",
                                          "public": True}},
        {"name": "Read the running agent's configuration (as tasks/main.yml does)",
         "ansible.builtin.slurp": {"src": "{{ t_running_config }}"},
         "register": "_gpu_agent_config_before", "failed_when": False, "no_log": True},
        {"name": "Show where the drain goes",
         "ansible.builtin.debug": {
             "msg": "{{ _gpu_agent_running_url }} {{ _gpu_agent_running_token == t_expect_token }}"}},
        {"name": "Change something", "ansible.builtin.command": "true", "changed_when": True,
         "notify": "Restart visionsuit-gpu-agent", "when": "t_notify | default(true)"},
    ],
}]


def converge(tmp_path, env, running_config, **over):
    extra = {"t_running_config": str(running_config), "t_expect_token": TOKEN,
             "gpu_agent_config_dir": str(tmp_path / "etc"), "gpu_agent_wait_timeout": 30}
    extra.update(over)
    (tmp_path / "etc").mkdir(exist_ok=True)
    play = write_play(tmp_path, PLAY, "agent-restart.yml")
    r = run(play, "localhost,", env, *LOCALHOST, cwd=tmp_path, check=False, extra_vars=extra, timeout=240)
    return r, results(r.out)


@pytest.fixture
def fake_systemd(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "systemctl.log"
    return log, repo_env(PATH=f"{bindir}:{os.environ['PATH']}", SYSTEMCTL_LOG=str(log))


def test_the_drain_goes_to_the_agent_as_it_runs_now(tmp_path, fake_systemd):
    _, env = fake_systemd
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"server": {"listen": "::1", "port": 9443, "api_token": TOKEN,
                                             "tls_cert": "/etc/visionsuit-gpu-agent/tls/agent.crt"}}))
    new = {"gpu_agent_port": 8081, "gpu_agent_api_token": "a-new-token-of-this-run-0123", "t_notify": False}
    r, res = converge(tmp_path, env, config, **new)
    assert r.rc == 0, r.raw[-2000:]
    assert dict(res)["Show where the drain goes"]["msg"] == "https://[::1]:9443 True"
    # no config.yaml yet (the first run): this run's settings
    r, res = converge(tmp_path, env, tmp_path / "none.yaml", **dict(new, t_expect_token=new["gpu_agent_api_token"]))
    assert dict(res)["Show where the drain goes"]["msg"] == "http://127.0.0.1:8081 True"


def test_the_agent_restarts_only_after_its_running_job_ended(tmp_path, minio, s3, bucket, comfy_standin,
                                                             fake_systemd):
    log, env = fake_systemd
    s3.put_object(Bucket=bucket, Key="ckpt/base.safetensors", Body=checkpoint_bytes(b"ckpt"))
    s3.put_object(Bucket=bucket, Key="loras/style", Body=safetensors_bytes({"w": b"lora"}))
    agent = HttpAgent(_config(tmp_path, minio, bucket, comfy_standin))
    try:
        config = tmp_path / "config.yaml"
        config.write_text(json.dumps({"server": {"listen": "127.0.0.1", "port": agent.port, "api_token": TOKEN,
                                                 "tls_cert": ""}}))
        this_run = {"gpu_agent_listen": "127.0.0.1", "gpu_agent_port": agent.port, "gpu_agent_api_token": TOKEN}
        comfy_standin.control(delay=2.5)   # ~20 s of rendering: through both runs
        assert agent.request("POST", "/jobs", envelope("agent-long"))[0] == 202
        agent.wait("agent-long", ("rendering",))

        r, res = converge(tmp_path, env, config, gpu_agent_drain_timeout=1, **this_run)
        assert r.rc != 0
        failed = [x for _, x in res if x.get("failed")]
        assert len(failed) == 1 and "agent-long (slot 0)" in failed[0]["msg"], res
        assert "the agent at http://127.0.0.1:%d still runs" % agent.port in failed[0]["msg"]
        assert "visionsuit_drain_timeout (now 1 s)" in failed[0]["msg"]
        assert restarts(log) == []                                   # not restarted
        assert (tmp_path / "etc" / "restart-pending").exists()
        assert agent.request("GET", "/healthz")[2]["draining"] is False   # undone: jobs come in
        assert TOKEN not in r.raw

        r, res = converge(tmp_path, env, config, gpu_agent_drain_timeout=120, **this_run)
        assert r.rc == 0, r.raw[-3000:]
        done = agent.job("agent-long")
        assert done["state"] == "done" and done["attempts"] == 1, done
        [(when, unit)] = restarts(log)
        assert unit == "visionsuit-gpu-agent.service" and when >= done["finished_at"]
        ran = dict(res)
        assert ran["Drain the agent before its restart"]["changed"] is True
        assert ran["Wait until the restarted agent answers /healthz"]["ready"] is True
        assert ran["Resume the agent after its restart"]["changed"] is True   # the drain of this run
        assert not (tmp_path / "etc" / "restart-pending").exists()
        health = agent.request("GET", "/healthz")[2]
        assert health["draining"] is False and health["drained_slots"] == [], health
        assert TOKEN not in r.raw
    finally:
        agent.stop()


ALLOW_PLAY = [{
    "name": "config.yaml's allow-list",
    "hosts": "localhost",
    "gather_facts": False,
    "tasks": [
        {"name": "Load the gpu_agent role (its defaults and vars)",
         "ansible.builtin.include_role": {"name": "visionsuit.gpuworker.gpu_agent", "tasks_from": "footprint.yml",
                                          "public": True}},
        {"name": "Render the allow-list",
         "ansible.builtin.debug": {"msg": "{{ (lookup('ansible.builtin.template', t_template) | from_yaml)"
                                          ".server.allowed_networks }}"}},
    ],
}]


@pytest.mark.parametrize("networks, rendered", [
    (["10.20.0.0/16"], ["10.20.0.0/16", "127.0.0.0/8", "::1/128"]),   # the node itself may drain the agent
    (["10.20.0.0/16", "127.0.0.0/8"], ["10.20.0.0/16", "127.0.0.0/8", "::1/128"]),
    ([], []),                                                             # no allow-list stays none
])
def test_an_allow_list_lets_the_node_itself_drain_the_agent(tmp_path, networks, rendered):
    template = Path(__file__).resolve().parents[2] / "roles" / "gpu_agent" / "templates" / "config.yaml.j2"
    play = write_play(tmp_path, ALLOW_PLAY, "allow.yml")
    r = run(play, "localhost,", repo_env(), *LOCALHOST, cwd=tmp_path, check=True, timeout=120,
            extra_vars={"t_template": str(template), "gpu_agent_allowed_networks": networks,
                        "gpu_agent_api_token": TOKEN})
    assert r.rc == 0, r.raw[-2000:]
    assert dict(results(r.out))["Render the allow-list"]["msg"] == rendered
