# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The comfyui role's instances (issue 13), run through the role itself: its preflight plans them, its service tasks
write the units, env files and directories, and the gpu_agent role's config.yaml lists one render slot per instance.

The role runs with ``ansible-playbook --check --diff`` on localhost: the detection is a recorded host
(``gpu_driver_detection``/``gpu_driver_accelerator`` as gpu_driver exports them), and every path the service tasks
touch is moved under tmp_path (``comfyui_install_dir``, ``comfyui_config_dir`` and the unit directory), so the
"node" is a folder whose leftovers of an earlier layout the test lays out. Check mode writes nothing; the files
are read from the diffs, which are the role's own templates rendered by its own tasks. systemd is not needed: no
unit of these nodes is loaded, so nothing is stopped (molecule/multigpu runs the same on a systemd node).
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import ansible_run
from tests.gpu_hosts import detect_case

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = ansible_run.playbook_bin()
TOKEN = "tok-Vq8Rz3KwYp2Ls7Dn5HjXc4Mb"
TEMPLATES = ROOT / "roles" / "comfyui" / "templates"

PLAY = """
- name: comfyui instances under test
  hosts: localhost
  connection: local
  gather_facts: true
  gather_subset: ["!all", "min"]
  tasks:
    - name: Run the comfyui preflight
      ansible.builtin.include_role:
        name: visionsuit.gpuworker.comfyui
        tasks_from: preflight.yml
        public: true

    - name: Show the plan
      ansible.builtin.debug:
        msg: "{{ _comfyui_instance_plan }}"

    - name: Run the comfyui service tasks
      ansible.builtin.include_role:
        name: visionsuit.gpuworker.comfyui
        tasks_from: service.yml
        public: true
      when: t_service | default(false)

    - name: Render the single unit
      ansible.builtin.debug:
        msg:
          cpu: "{{ lookup('ansible.builtin.template', '@T@/comfyui.service.j2') }}"
          nvidia: >-
            {{ lookup('ansible.builtin.template', '@T@/comfyui.service.j2',
                      template_vars={'gpu_driver_accelerator': 'nvidia', 'comfyui_extra_args': []}) }}
      when: t_single | default(false)

    - name: Run the gpu_agent preflight
      ansible.builtin.include_role:
        name: visionsuit.gpuworker.gpu_agent
        tasks_from: preflight.yml
        public: true
      when: t_agent | default(false)

    - name: Render config.yaml
      ansible.builtin.debug:
        msg: "{{ lookup('ansible.builtin.template', '@ROOT@/roles/gpu_agent/templates/config.yaml.j2') }}"
      when: t_agent | default(false)
""".replace("@T@", str(TEMPLATES)).replace("@ROOT@", str(ROOT))

#: comfyui.service of a CPU node with the role's defaults, as the role wrote it before instances existed
SINGLE_CPU_UNIT = """#
# Ansible managed
#
[Unit]
Description=ComfyUI render node
Documentation=https://github.com/visionsuit/gpuworker
After=network-online.target
Wants=network-online.target
# A service that keeps crashing at start (an import error) stops after 5 starts in 5 minutes instead of
# restarting for good; the role's health wait then reports the journal. `systemctl reset-failed` clears it.
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=simple
User=comfyui
Group=comfyui
WorkingDirectory=/opt/comfyui
ExecStart=/opt/comfyui/venv/bin/python /opt/comfyui/main.py --listen 127.0.0.1 --port 8188 --cpu
Restart=on-failure
RestartSec=5
Environment=PYTHONUNBUFFERED=1
Environment=HOME=/opt/comfyui/user
NoNewPrivileges=true
PrivateTmp=true
ProtectSystem=strict
ProtectHome=true
ProtectKernelTunables=true
ProtectControlGroups=true
RestrictSUIDSGID=true
ReadWritePaths=/opt/comfyui/models /opt/comfyui/models/checkpoints /opt/comfyui/models/loras \
/opt/comfyui/models/vae /opt/comfyui/models/embeddings /opt/comfyui/output /opt/comfyui/input /opt/comfyui/user \
/opt/comfyui/temp<SP>

[Install]
WantedBy=multi-user.target
""".replace("<SP>", " ")  # the role writes ReadWritePaths with a trailing space
#: and of a GPU node (no --cpu, the GPU device groups)
SINGLE_GPU_UNIT = SINGLE_CPU_UNIT.replace(" --cpu\n", "\n").replace(
    "/opt/comfyui/temp \n\n", "/opt/comfyui/temp \nSupplementaryGroups=video render\n\n")
#: the comfyui section of config.yaml with one instance, as before instances existed
SINGLE_AGENT_COMFYUI = ('comfyui:\n  url: "http://127.0.0.1:8188"\n'
                        '  checkpoints_dir: "/opt/comfyui/models/checkpoints"\n'
                        '  loras_dir: "/opt/comfyui/models/loras"\n  output_dir: "/opt/comfyui/output"\njobs:\n')

pytestmark = pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-playbook is not installed in the venv")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return ansible_run.local_workdir(tmp_path_factory.mktemp("comfyui-instances"), PLAY)


class Node:
    """A node laid out under a folder: install dir, config dir and unit dir."""

    def __init__(self, base):
        self.base = Path(base)
        self.opt, self.etc, self.units = self.base / "opt", self.base / "etc", self.base / "units"
        for d in (self.opt, self.etc, self.units):
            d.mkdir(parents=True, exist_ok=True)

    def variables(self, owned=False):
        """The role's paths on this node; ``owned``: the service account is this test's (the role would chgrp
        the directories that exist already, and this machine has no comfyui group)."""
        found = {"comfyui_install_dir": str(self.opt), "comfyui_config_dir": str(self.etc),
                 "_comfyui_unit_dir": str(self.units),
                 # this machine runs no systemd: enable/start and the restart handler are left out, as the role
                 # does in check mode on a node without the unit file yet
                 "_comfyui_units_pending": True}
        if owned:
            found.update(comfyui_user=pwd.getpwuid(os.getuid()).pw_name,
                         comfyui_group=grp.getgrgid(os.getgid()).gr_name)
        return found

    def add_instances(self, *numbers):
        """Leftovers of an earlier run with several instances: env files and instance directories."""
        (self.etc / "instances").mkdir(exist_ok=True)
        for n in numbers:
            (self.etc / "instances" / f"{n}.env").write_text(f'COMFYUI_PORT="{8188 + n}"\n')
            for sub in ("temp", "user"):
                (self.opt / "instances" / str(n) / sub).mkdir(parents=True, exist_ok=True)


def detected(case):
    det = detect_case(case)
    return {"gpu_driver_detection": det, "gpu_driver_accelerator": det["accelerator"]}


def agent_vars(tmp_path):
    env = tmp_path / "minio.env"
    env.write_text('MINIO_ENDPOINT="http://192.168.1.10:9000"\nMINIO_ACCESS_KEY="access"\nMINIO_SECRET_KEY="secret-0"\n')
    return {"t_agent": True, "gpu_agent_api_token": TOKEN, "gpu_agent_minio_env_file": str(env)}


def run_role(workdir, extra):
    """ansible-playbook --check --diff: (rc, {task name: result}, raw output)."""
    r = ansible_run.run(workdir / "play.yml", workdir / "inventory", ansible_run.isolated_env(workdir), "--diff",
                        cwd=workdir, extra_vars=dict({"ansible_managed": "Ansible managed"}, **extra),
                        binary=PLAYBOOK_BIN)
    return r.rc, dict(ansible_run.results(r.out)), r.raw


def items(res):
    return res.get("results", [res])


def written(res):
    """The new contents a template task would write in check mode with --diff, one per loop item, in order."""
    return [d["after"] for item in items(res) for d in (item.get("diff") or []) if "after" in d]


def changed_paths(res):
    return sorted(item["path"] for item in items(res) if item.get("changed"))


def agent_check(tmp_path, config_text):
    """The agent's own --check-config on the rendered config.yaml (the role's validate:)."""
    path = tmp_path / "config.yaml"
    path.write_text(config_text)
    proc = subprocess.run([sys.executable, "-m", "visionsuit_gpu_agent", "--check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from visionsuit_gpu_agent import config as agent_config
    return agent_config.load(str(path)).slots


# --------------------------------------------------------------------------------------- one instance: unchanged
def test_one_instance_renders_exactly_todays_unit_and_agent_config(workdir, tmp_path):
    rc, res, raw = run_role(workdir, dict(agent_vars(tmp_path), t_single=True))
    assert rc == 0, raw
    assert [p["unit"] for p in res["Show the plan"]["msg"]] == ["comfyui.service"]
    units = res["Render the single unit"]["msg"]
    assert units["cpu"] == SINGLE_CPU_UNIT
    assert units["nvidia"] == SINGLE_GPU_UNIT
    config = res["Render config.yaml"]["msg"]
    assert SINGLE_AGENT_COMFYUI in config and "instances" not in config, config


def test_a_one_item_list_pins_the_single_unit_to_that_gpu(workdir):
    rc, res, raw = run_role(workdir, dict(detected("nvidia-l40s-x2"), comfyui_instances=[1], t_single=True))
    assert rc == 0, raw
    assert [(p["unit"], p["port"], p["gpu"]) for p in res["Show the plan"]["msg"]] == [("comfyui.service", 8188, 1)]
    unit = res["Render the single unit"]["msg"]["nvidia"]
    assert unit == SINGLE_GPU_UNIT.replace(
        "Environment=HOME=/opt/comfyui/user\n",
        "Environment=HOME=/opt/comfyui/user\nEnvironment=CUDA_DEVICE_ORDER=PCI_BUS_ID\n"
        "Environment=CUDA_VISIBLE_DEVICES=1\n"), unit


def test_one_gpu_host_keeps_comfyui_service_through_the_service_tasks(workdir, tmp_path):
    """A one-GPU node (auto): comfyui.service as before; leftovers of two instances go (env files, their temp
    directories, the template unit, the env files' directory); their user directories stay."""
    node = Node(tmp_path / "node")
    node.add_instances(0, 1)
    (node.units / "comfyui@.service").write_text("[Unit]\n")
    rc, res, raw = run_role(workdir, dict(node.variables(), t_service=True, **detected("nvidia-h100")))
    assert rc == 0, raw
    [unit] = written(res["Install the comfyui systemd unit"])
    assert unit == SINGLE_GPU_UNIT.replace("/opt/comfyui", str(node.opt)), unit
    assert res["Install the comfyui@ template unit"].get("skipped")
    assert res["Write each instance's env file"].get("skipped") or items(res["Write each instance's env file"]) == []
    stale = res["Work out the units the plan no longer has"]["ansible_facts"]
    assert stale["_comfyui_stale_instances"] == ["0", "1"] and stale["_comfyui_stale_units"] == []
    assert changed_paths(res["Remove the unit file the plan does not use"]) == [str(node.units / "comfyui@.service")]
    assert changed_paths(res["Remove the env files of the instances the plan no longer has"]) == [
        str(node.etc / "instances" / "0.env"), str(node.etc / "instances" / "1.env")]
    assert changed_paths(res["Remove the directory of the instances' env files (one instance)"]) == [
        str(node.etc / "instances")]
    assert changed_paths(res["Remove the temp directories of the instances the plan no longer has"]) == [
        str(node.opt / "instances" / "0" / "temp"), str(node.opt / "instances" / "1" / "temp")]
    waits = items(res["Wait until ComfyUI answers /system_stats"])
    assert [w["item"]["unit"] for w in waits] == ["comfyui.service"]


# ------------------------------------------------------------------------------------------- several instances
def test_two_nvidia_gpus_get_two_pinned_instances_and_two_agent_slots(workdir, tmp_path):
    node = Node(tmp_path / "node")
    rc, res, raw = run_role(workdir, dict(node.variables(), t_service=True, **detected("nvidia-l40s-x2"),
                                          comfyui_environment={"COMFYUI_STANDIN_DELAY": "0.5"}, **agent_vars(tmp_path)))
    assert rc == 0, raw
    plan = res["Show the plan"]["msg"]
    assert [(p["unit"], p["port"], p["gpu"]) for p in plan] == [("comfyui@0.service", 8188, 0),
                                                                ("comfyui@1.service", 8189, 1)]

    # one template unit: the hardening of comfyui.service, the instance's env file, its directory writable
    [template] = written(res["Install the comfyui@ template unit"])
    assert res["Install the comfyui systemd unit"].get("skipped")
    lines = template.splitlines()
    assert "Description=ComfyUI render node (instance %i)" in lines
    assert f"EnvironmentFile={node.etc}/environment.env" in lines          # comfyui_environment
    assert f"EnvironmentFile={node.etc}/instances/%i.env" in lines
    assert lines.index(f"EnvironmentFile={node.etc}/environment.env") < lines.index(
        f"EnvironmentFile={node.etc}/instances/%i.env")                   # the instance's own file wins
    assert (f"ExecStart={node.opt}/venv/bin/python {node.opt}/main.py --listen 127.0.0.1 --port ${{COMFYUI_PORT}} "
            "--temp-directory ${COMFYUI_INSTANCE_DIR} --user-directory ${COMFYUI_USER_DIR}") in lines
    assert f"Environment=HOME={node.opt}/instances/%i/user" in lines
    [rw] = [line for line in lines if line.startswith("ReadWritePaths=")]
    assert rw.split("=", 1)[1].split() == [f"{node.opt}/{d}" for d in (
        "models", "models/checkpoints", "models/loras", "models/vae", "models/embeddings", "output", "input",
        "user", "temp", "instances/%i")]
    single = SINGLE_GPU_UNIT.replace("/opt/comfyui", str(node.opt)).splitlines()
    for same in [line for line in single if line.startswith(("Protect", "Private", "NoNew", "Restrict", "User=",
                                                             "Group=", "StartLimit", "Restart", "Supplementary"))]:
        assert same in lines, same

    # one env file per instance: port, its own directories, its GPU
    envs = written(res["Write each instance's env file"])
    assert [i["_comfyui_instance"]["index"] for i in items(res["Write each instance's env file"])] == [0, 1]
    assert len(envs) == 2 and "comfyui@0.service" in envs[0] and "comfyui@1.service" in envs[1]
    one = [line for line in envs[1].splitlines() if not line.startswith("#")]
    assert one == ['COMFYUI_PORT="8189"', f'COMFYUI_INSTANCE_DIR="{node.opt}/instances/1"',
                   f'COMFYUI_USER_DIR="{node.opt}/instances/1/user"', 'CUDA_DEVICE_ORDER="PCI_BUS_ID"',
                   'CUDA_VISIBLE_DEVICES="1"']
    [extra] = written(res["Write the extra environment of the ComfyUI units (comfyui_environment)"])
    assert 'COMFYUI_STANDIN_DELAY="0.5"' in extra.splitlines()
    assert changed_paths(res["Create each instance's temp and user directories"]) == sorted(
        f"{node.opt}/instances/{i}/{d}" for i in (0, 1) for d in ("temp", "user"))

    # a fresh node in check mode: nothing to enable or restart yet, nothing stale; each instance is waited for
    assert res["Enable and start comfyui"].get("skipped")
    assert res["Work out the units the plan no longer has"]["ansible_facts"]["_comfyui_stale_units"] == []
    assert [w["item"]["unit"] for w in items(res["Wait until ComfyUI answers /system_stats"])] == [
        "comfyui@0.service", "comfyui@1.service"]

    # the agent: one slot per instance, accepted by the agent's own check
    config = yaml.safe_load(res["Render config.yaml"]["msg"])
    assert "url" not in config["comfyui"]
    assert config["comfyui"]["instances"] == [{"url": "http://127.0.0.1:8188", "gpu": 0},
                                              {"url": "http://127.0.0.1:8189", "gpu": 1}]
    assert agent_check(tmp_path, res["Render config.yaml"]["msg"]) == [
        {"slot": 0, "url": "http://127.0.0.1:8188", "gpu": 0}, {"slot": 1, "url": "http://127.0.0.1:8189", "gpu": 1}]


def test_four_amd_gpus_listed_instances_scale_down_and_keep_user_dirs(workdir, tmp_path):
    """comfyui_instances [1, 3] on a node that ran four instances: HIP pinning, ports from comfyui_port, instances
    2 and 3 lose their env file and temp directory (not their user directory), 0 and 1 are rewritten."""
    node = Node(tmp_path / "node")
    node.add_instances(0, 1, 2, 3)
    (node.units / "comfyui@.service").write_text("[Unit]\n")
    rc, res, raw = run_role(workdir, dict(node.variables(owned=True), t_service=True, **detected("amd-w7900-x4"),
                                          comfyui_instances=[1, 3], comfyui_port=9000, **agent_vars(tmp_path)))
    assert rc == 0, raw
    envs = written(res["Write each instance's env file"])
    body = {f"{i}.env": [line for line in v.splitlines() if not line.startswith("#")] for i, v in enumerate(envs)}
    assert body["0.env"][0] == 'COMFYUI_PORT="9000"' and body["0.env"][-1] == 'HIP_VISIBLE_DEVICES="1"'
    assert body["1.env"][0] == 'COMFYUI_PORT="9001"' and body["1.env"][-1] == 'HIP_VISIBLE_DEVICES="3"'
    assert not any("CUDA" in line for lines in body.values() for line in lines)
    facts = res["Work out the units the plan no longer has"]["ansible_facts"]
    assert facts["_comfyui_stale_instances"] == ["2", "3"]
    assert changed_paths(res["Remove the env files of the instances the plan no longer has"]) == [
        str(node.etc / "instances" / "2.env"), str(node.etc / "instances" / "3.env")]
    assert changed_paths(res["Remove the temp directories of the instances the plan no longer has"]) == [
        str(node.opt / "instances" / "2" / "temp"), str(node.opt / "instances" / "3" / "temp")]
    assert not changed_paths(res["Remove the unit file the plan does not use"])   # no comfyui.service there
    assert res["Remove the directory of the instances' env files (one instance)"].get("skipped")
    removed = json.dumps([res[name] for name in res if name.startswith("Remove")])
    assert "/user" not in removed
    config = yaml.safe_load(res["Render config.yaml"]["msg"])
    assert config["comfyui"]["instances"] == [{"url": "http://127.0.0.1:9000", "gpu": 1},
                                              {"url": "http://127.0.0.1:9001", "gpu": 3}]
    assert [s["gpu"] for s in agent_check(tmp_path, res["Render config.yaml"]["msg"])] == [1, 3]


# ------------------------------------------------------------------------------------------------- preflight
def test_a_bad_instance_count_fails_the_preflight_naming_the_variable(workdir):
    rc, res, raw = run_role(workdir, dict(detected("nvidia-l40s-x2"), comfyui_instances=3))
    assert rc != 0
    failed = res["Plan the ComfyUI instances"]
    assert failed.get("failed"), res
    assert "comfyui_instances" in failed["msg"] and "3 instances but only 2 GPU(s)" in failed["msg"], failed["msg"]
    assert "auto, a number of instances (1 or more), or a list of GPU indexes" in failed["msg"], failed["msg"]


def test_bad_extra_environment_is_named_without_its_value(workdir):
    rc, res, raw = run_role(workdir, {"comfyui_environment": {"GOOD": "1", "bad-name": "x", "HF_TOKEN": "sec\nret",
                                                              "LIST": ["a"]}})
    assert rc != 0
    msg = res["Check the role's variables"]["msg"]
    assert "comfyui_environment: 'bad-name' is not a variable name" in msg, msg
    assert "comfyui_environment.HF_TOKEN holds a control character" in msg, msg
    assert "comfyui_environment.LIST must be a string or a number" in msg, msg
    assert "GOOD" not in msg and "sec" not in msg.replace("comfyui_environment", ""), msg


def test_without_the_accelerator_a_node_set_up_for_a_gpu_is_refused(workdir, tmp_path):
    """gpu_driver skipped (no gpu_driver_accelerator): a unit written for a GPU is never silently made a CPU one."""
    node = Node(tmp_path / "node")
    (node.units / "comfyui.service").write_text(SINGLE_GPU_UNIT)
    rc, res, raw = run_role(workdir, node.variables())
    assert rc != 0
    msg = res["Refuse to set a GPU node up as a CPU node"]["msg"]
    assert "gpu_driver_accelerator is not set" in msg and str(node.units / "comfyui.service") in msg, msg
    # a CPU node's unit is no reason to stop
    (node.units / "comfyui.service").write_text(SINGLE_CPU_UNIT)
    rc, res, raw = run_role(workdir, node.variables())
    assert rc == 0, raw
