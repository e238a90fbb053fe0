# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gpu_agent role's MinIO connection: one source of credentials per node (the node's minio.env).

config.yaml names the env file (``minio.env_file``) and holds no MinIO key; the agent reads the connection from
the file the comfyui role writes (the role writes it with that role's template when it is missing). The role's
preflight and its config template are run by the real ``ansible-playbook`` (``--check``, localhost, nothing on the
machine is changed: the preflight only asserts and stats, the templates are rendered by lookups); the rendered
config.yaml and minio.env are then checked by the agent's own ``--check-config``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rig.leaks import SECRET, leaked
from tests import ansible_run

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "gpu_agent"
PLAYBOOK_BIN = ansible_run.VENV_PLAYBOOK

ACCESS = "visionsuit-access"
TOKEN = "tok-Vq8Rz3KwYp2Ls7Dn5HjXc4Mb"
REMOVED = ("gpu_agent_minio_endpoint", "gpu_agent_minio_access_key", "gpu_agent_minio_secret_key",
           "gpu_agent_minio_region", "gpu_agent_minio_ca_bundle", "gpu_agent_minio_bucket_checkpoints",
           "gpu_agent_minio_bucket_loras", "gpu_agent_minio_bucket_outputs", "gpu_agent_minio_outputs_prefix")

PLAY = """
- name: gpu_agent preflight and templates under test
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Run the role's preflight (its defaults and vars stay visible to the play)
      ansible.builtin.include_role:
        name: visionsuit.gpuworker.gpu_agent
        tasks_from: preflight.yml
        public: true

    - name: Render config.yaml
      ansible.builtin.debug:
        msg: "{{ lookup('ansible.builtin.template', '@ROOT@/roles/gpu_agent/templates/config.yaml.j2') }}"
      when: t_render | default(false)

    - name: Load the comfyui role's defaults and vars (its footprint task changes nothing)
      ansible.builtin.include_role:
        name: visionsuit.gpuworker.comfyui
        tasks_from: footprint.yml
        public: true
      when: t_render | default(false)

    - name: Render minio.env
      ansible.builtin.debug:
        msg: "{{ lookup('ansible.builtin.template', '@ROOT@/roles/comfyui/templates/minio.env.j2') }}"
      when: t_render | default(false)
""".replace("@ROOT@", str(ROOT))

pytestmark = pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-playbook is not installed in the venv")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return ansible_run.local_workdir(tmp_path_factory.mktemp("gpu-agent-role"), PLAY)


def run_play(workdir, extra):
    """ansible-playbook --check with the JSON callback; returns (rc, {task name: result}, raw output)."""
    r = ansible_run.run(workdir / "play.yml", workdir / "inventory", ansible_run.isolated_env(workdir), cwd=workdir,
                        extra_vars=dict({"ansible_managed": "Ansible managed"}, **extra))
    return r.rc, dict(ansible_run.results(r.out)), r.raw


def fleet_vars(tmp_path, **over):
    """The inventory of a fleet: visionsuit_minio_* and the agent's token; the env file in tmp_path."""
    values = {
        "gpu_agent_api_token": TOKEN,
        "gpu_agent_minio_env_file": str(tmp_path / "minio.env"),
        "visionsuit_minio_endpoint": "http://192.168.1.10:9000",
        "visionsuit_minio_access_key": ACCESS,
        "visionsuit_minio_secret_key": SECRET,
        "visionsuit_minio_outputs_prefix": "renders",
        "t_render": True,
    }
    values.update(over)
    return values


def failure(results):
    failed = [(name, res) for name, res in results.items() if res.get("failed")]
    assert len(failed) == 1, results
    return failed[0]


# ------------------------------------------------------------------------------------------ the config template
def test_config_template_names_the_env_file_and_holds_no_minio_key(workdir, tmp_path):
    rc, results, raw = run_play(workdir, fleet_vars(tmp_path))
    assert rc == 0, raw
    rendered = results["Render config.yaml"]["msg"]
    config = yaml.safe_load(rendered)
    assert config["minio"] == {"env_file": str(tmp_path / "minio.env")}, rendered
    assert leaked(rendered) is None and ACCESS not in rendered and "192.168.1.10" not in rendered, rendered
    for key in ("secret_key:", "access_key:", "endpoint:", "region:", "bucket_", "prefix:"):
        assert key not in rendered, rendered
    assert "env_file sha256: none yet" in rendered   # no checksum registered in this play
    others = {name: res for name, res in results.items() if name != "Render minio.env"}
    assert leaked(json.dumps(others)) is None, others  # nor in any other task's result (the preflight's)
    assert config["server"]["api_token"] == TOKEN


def test_rendered_config_and_minio_env_pass_the_agents_check(workdir, tmp_path):
    """What the role writes on a node, checked by the agent as the role's validate: does (the env file from the
    comfyui role's template with the fleet's visionsuit_minio_* values)."""
    rc, results, raw = run_play(workdir, fleet_vars(tmp_path))
    assert rc == 0, raw
    (tmp_path / "minio.env").write_text(results["Render minio.env"]["msg"])
    config_path = tmp_path / "config.yaml"
    config_path.write_text(results["Render config.yaml"]["msg"])
    proc = subprocess.run([sys.executable, "-m", "visionsuit_gpu_agent", "--check-config", "--config",
                           str(config_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "MinIO http://192.168.1.10:9000 from {}".format(tmp_path / "minio.env") in proc.stdout, proc.stdout
    assert leaked(proc.stdout + proc.stderr) is None and TOKEN not in proc.stdout + proc.stderr

    from visionsuit_gpu_agent import config as agent_config
    cfg = agent_config.load(str(config_path))
    assert (cfg["minio.access_key"], cfg["minio.secret_key"], cfg["minio.outputs_prefix"]) == (
        ACCESS, SECRET, "renders")


def test_config_template_carries_the_env_files_checksum(workdir, tmp_path):
    """The agent reads minio.env at start only: a changed file must change config.yaml (and so restart it)."""
    digest = "0" * 63 + "1"
    rc, results, raw = run_play(workdir, fleet_vars(tmp_path, _gpu_agent_env_file={"stat": {
        "exists": True, "checksum": digest}}))
    assert rc == 0, raw
    assert f"# env_file sha256: {digest}\n" in results["Render config.yaml"]["msg"]


# ---------------------------------------------------------------------------------------------- the preflight
def test_preflight_refuses_the_removed_variables_by_name_never_by_value(workdir, tmp_path):
    rc, results, raw = run_play(workdir, fleet_vars(tmp_path, gpu_agent_minio_secret_key=SECRET,
                                                    gpu_agent_minio_endpoint="http://10.0.0.1:9000"))
    assert rc != 0
    name, res = failure(results)
    assert name == "Refuse the removed gpu_agent_minio_* variables"
    message = res["msg"]
    for needle in ("gpu_agent_minio_endpoint, gpu_agent_minio_secret_key are no longer used",
                   "visionsuit_minio_endpoint, visionsuit_minio_secret_key", "comfyui_minio_",
                   str(tmp_path / "minio.env")):
        assert needle in message, message
    assert leaked(raw) is None and "10.0.0.1" not in raw, raw


def test_preflight_refuses_each_removed_variable(workdir, tmp_path):
    rc, results, raw = run_play(workdir, fleet_vars(tmp_path, t_render=False, **dict.fromkeys(REMOVED, "")))
    assert rc != 0
    name, res = failure(results)
    assert name == "Refuse the removed gpu_agent_minio_* variables"
    assert "{} are no longer used".format(", ".join(REMOVED)) in res["msg"], res["msg"]
    assert "Set {} (or".format(", ".join(v.replace("gpu_agent_", "visionsuit_") for v in REMOVED)) in res["msg"]
    rc, results, raw = run_play(workdir, fleet_vars(tmp_path, t_render=False, gpu_agent_minio_region=None))
    assert rc != 0 and "gpu_agent_minio_region is no longer used" in failure(results)[1]["msg"]


def test_preflight_shows_its_message_without_the_token(workdir, tmp_path):
    short = "tok-Vq8Rz3Kw"
    rc, results, raw = run_play(workdir, fleet_vars(tmp_path, t_render=False, gpu_agent_api_token=short))
    assert rc != 0
    name, res = failure(results)
    assert name == "Check the role's variables"
    assert "gpu_agent_api_token is required (16 characters at least" in res["msg"], res
    assert short not in raw and leaked(raw) is None, raw


def test_preflight_checks_the_variables_the_missing_env_file_is_written_from(workdir, tmp_path):
    rc, results, raw = run_play(workdir, fleet_vars(tmp_path, visionsuit_minio_endpoint="ftp://h:9000",
                                                    visionsuit_minio_access_key=""))
    assert rc != 0
    name, res = failure(results)
    assert name == "Check the MinIO variables the env file will be written from"
    message = res["msg"]
    for needle in (str(tmp_path / "minio.env") + " does not exist yet", "visionsuit_minio_endpoint",
                   "only http and https", "the access key is missing", "the secret key is set"):
        assert needle in message, message
    assert leaked(raw) is None, raw


def test_preflight_leaves_an_existing_env_file_to_the_agents_check(workdir, tmp_path):
    """The file is there (written by the comfyui role or by hand): no visionsuit_minio_* is needed; configure's
    validate (--check-config) reads the file."""
    (tmp_path / "minio.env").write_text("MINIO_ENDPOINT=http://192.168.1.10:9000\n")
    extra = fleet_vars(tmp_path, t_render=False)
    for name in [k for k in extra if k.startswith("visionsuit_minio_")]:
        del extra[name]
    rc, results, raw = run_play(workdir, extra)
    assert rc == 0, raw
    assert results["Check the MinIO variables the env file will be written from"].get("skipped"), results


# ------------------------------------------------------------------------------------------- static wiring
def _tasks(path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_configure_includes_the_comfyui_env_file_task_before_the_config_is_validated():
    tasks = _tasks(ROLE / "tasks" / "configure.yml")
    names = [t["name"] for t in tasks]
    include = next(t for t in tasks if "ansible.builtin.include_role" in t)
    assert include["ansible.builtin.include_role"]["name"] == "visionsuit.gpuworker.comfyui"
    assert include["ansible.builtin.include_role"]["tasks_from"] == "minio_env.yml"
    assert include["when"] == "not _gpu_agent_env.stat.exists"
    template = next(t for t in tasks if "ansible.builtin.template" in t)
    assert "--check-config" in template["ansible.builtin.template"]["validate"]
    assert names.index(include["name"]) < names.index(template["name"])
    checksum = next(t for t in tasks if t.get("register") == "_gpu_agent_env_file")
    assert names.index(include["name"]) < names.index(checksum["name"]) < names.index(template["name"])


def test_the_agent_user_can_read_the_env_file():
    """minio.env is root:<comfyui_group> 0640 in root:<comfyui_group> 0750; the agent runs in that group."""
    env_tasks = _tasks(ROOT / "roles" / "comfyui" / "tasks" / "minio_env.yml")
    env_task = next(t["ansible.builtin.template"] for t in env_tasks if "ansible.builtin.template" in t)
    assert (env_task["owner"], env_task["group"], env_task["mode"]) == ("root", "{{ comfyui_group }}", "0640")
    dirs = [t["ansible.builtin.file"] for path in ("minio_env.yml", "configure.yml")
            for t in _tasks(ROOT / "roles" / "comfyui" / "tasks" / path) if "ansible.builtin.file" in t
            and t["ansible.builtin.file"].get("path") == "{{ comfyui_config_dir }}"]
    assert dirs and all((d["group"], d["mode"]) == ("{{ comfyui_group }}", "0750") for d in dirs), dirs
    assert yaml.safe_load((ROOT / "roles" / "comfyui" / "vars" / "main.yml").read_text())[
        "_comfyui_env_file"] == "{{ comfyui_config_dir }}/minio.env"
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert defaults["gpu_agent_comfyui_group"] == "{{ comfyui_group | default('comfyui') }}"
    unit = (ROLE / "templates" / "visionsuit-gpu-agent.service.j2").read_text()
    assert "SupplementaryGroups={{ gpu_agent_comfyui_group }}\n" in unit
    assert "User={{ gpu_agent_user }}\n" in unit


def test_the_env_file_default_is_the_one_minio_helpers_uses():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    helpers = yaml.safe_load((ROOT / "roles" / "minio_helpers" / "defaults" / "main.yml").read_text())
    comfyui = yaml.safe_load((ROOT / "roles" / "comfyui" / "defaults" / "main.yml").read_text())
    # both follow the comfyui role's config dir (the file it writes), /etc/comfyui by default
    assert defaults["gpu_agent_minio_env_file"] == helpers["minio_helpers_env_file"] == \
        "{{ comfyui_config_dir | default('%s') }}/minio.env" % comfyui["comfyui_config_dir"]


def test_no_connection_variable_of_the_agent_is_left():
    for path in (ROLE / "defaults" / "main.yml", ROLE / "meta" / "argument_specs.yml", ROLE / "README.md",
                 ROLE / "templates" / "config.yaml.j2"):
        text = path.read_text(encoding="utf-8")
        for name in REMOVED:
            assert name not in text, (path, name)
    vars_main = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    assert tuple(vars_main["_gpu_agent_removed_minio_vars"]) == REMOVED
