# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The roles' preflights name what is wrong, and only that, and never show a secret.

The comfyui role writes minio.env (for itself, minio_helpers and gpu_agent): when an endpoint is set, its preflight
refuses empty MinIO keys by name, before anything is installed, instead of a file with empty keys that fails at the
first sync. A failing check names the variable at fault (not every rule of the role) and shows no value of a key:
the preflights have no ``no_log`` (it hid the reason on ansible-core 2.16) and their messages hold names only.

Run by the real ``ansible-playbook --check`` on localhost (the preflights only assert, stat and read facts; nothing
on the machine is changed), as tests/unit/test_gpu_agent_role.py does.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from rig.leaks import SECRET, leaked
from tests import ansible_run

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = ansible_run.playbook_bin()

ACCESS = "AKvisionsuitQ7mWz"
TOKEN = "tok-Vq8Rz3KwYp2Ls7Dn5HjXc4Mb"
ENDPOINT = "http://192.168.1.10:9000"

PLAY = """
- name: role preflights under test
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
      when: t_role == 'comfyui'

    - name: Run the gpu_agent preflight
      ansible.builtin.include_role:
        name: visionsuit.gpuworker.gpu_agent
        tasks_from: preflight.yml
        public: true
      when: t_role == 'gpu_agent'
"""

pytestmark = pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-playbook is not installed in the venv")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return ansible_run.local_workdir(tmp_path_factory.mktemp("role-preflights"), PLAY)


def run_play(workdir, role, extra):
    """ansible-playbook --check with the JSON callback: (rc, {task name: result}, raw output)."""
    r = ansible_run.run(workdir / "play.yml", workdir / "inventory", ansible_run.isolated_env(workdir), cwd=workdir,
                        extra_vars=dict(extra, t_role=role), binary=PLAYBOOK_BIN)
    return r.rc, dict(ansible_run.results(r.out)), r.raw


def failure(results):
    failed = [(name, res) for name, res in results.items() if res.get("failed")]
    assert len(failed) == 1, results
    return failed[0]


def minio(**over):
    values = {"visionsuit_minio_endpoint": ENDPOINT, "visionsuit_minio_access_key": ACCESS,
              "visionsuit_minio_secret_key": SECRET}
    values.update(over)
    return {k: v for k, v in values.items() if v is not None}


# ------------------------------------------------------------------------------------- comfyui: the MinIO keys
def test_comfyui_preflight_passes_with_the_fleets_connection_and_shows_no_key(workdir):
    rc, results, raw = run_play(workdir, "comfyui", minio())
    assert rc == 0, raw
    assert not results["Check the role's variables"].get("failed"), results
    assert leaked(raw) is None and ACCESS not in raw, raw


def test_comfyui_preflight_names_a_missing_access_key(workdir):
    rc, results, raw = run_play(workdir, "comfyui", minio(visionsuit_minio_access_key=None))
    assert rc != 0, raw
    name, res = failure(results)
    assert name == "Check the role's variables"
    msg = res["msg"]
    assert "visionsuit_minio_access_key" in msg and "is empty" in msg, msg
    assert "secret_key" not in msg, msg            # the secret key is fine: only what is wrong is named
    assert ENDPOINT in msg or "endpoint" in msg, msg  # why keys are needed: an endpoint is set
    assert leaked(raw) is None, raw


def test_comfyui_preflight_names_both_missing_keys(workdir):
    rc, results, raw = run_play(workdir, "comfyui", minio(visionsuit_minio_access_key=None,
                                                          visionsuit_minio_secret_key=""))
    assert rc != 0, raw
    _, res = failure(results)
    assert "visionsuit_minio_access_key" in res["msg"] and "visionsuit_minio_secret_key" in res["msg"], res["msg"]


def test_comfyui_preflight_names_the_role_variable_that_empties_a_key(workdir):
    """comfyui_minio_secret_key: '' overrides a fleet-wide key: the message names the override."""
    rc, results, raw = run_play(workdir, "comfyui", minio(comfyui_minio_secret_key=""))
    assert rc != 0, raw
    _, res = failure(results)
    assert "comfyui_minio_secret_key is empty" in res["msg"], res["msg"]
    assert "access_key" not in res["msg"], res["msg"]
    assert leaked(raw) is None, raw


def test_comfyui_preflight_names_the_comfyui_keys_when_the_role_variables_are_used(workdir):
    rc, results, raw = run_play(workdir, "comfyui", {"comfyui_minio_endpoint": ENDPOINT,
                                                     "comfyui_minio_secret_key": SECRET})
    assert rc != 0, raw
    _, res = failure(results)
    assert "visionsuit_minio_access_key" in res["msg"] and "comfyui_minio_access_key" in res["msg"], res["msg"]
    assert "secret_key" not in res["msg"], res["msg"]
    assert leaked(raw) is None, raw


def test_comfyui_preflight_needs_no_key_without_an_endpoint(workdir):
    rc, results, raw = run_play(workdir, "comfyui", {})
    assert rc == 0, raw


# ------------------------------------------------------------------- comfyui: only the failing rule is named
def test_comfyui_preflight_names_only_the_variable_at_fault(workdir):
    rc, results, raw = run_play(workdir, "comfyui", minio(comfyui_port=70000))
    assert rc != 0, raw
    name, res = failure(results)
    assert name == "Check the role's variables"
    msg = res["msg"]
    assert "comfyui_port must be 1-65535 (got 70000)" in msg, msg
    for other in ("comfyui_git_url", "comfyui_version", "comfyui_install_dir", "endpoint", "key"):
        assert other not in msg, (other, msg)
    assert leaked(raw) is None, raw


def test_comfyui_preflight_lists_each_problem(workdir):
    rc, results, raw = run_play(workdir, "comfyui", minio(comfyui_version="main", comfyui_install_dir="opt/comfyui",
                                                          visionsuit_minio_endpoint="ftp://h:9000"))
    assert rc != 0, raw
    _, res = failure(results)
    msg = res["msg"]
    for needle in ("comfyui_version must be a tag or commit, not the moving branch 'main'",
                   "comfyui_install_dir must be an absolute path (got 'opt/comfyui')",
                   "only http and https"):
        assert needle in msg, (needle, msg)
    assert "comfyui_port" not in msg and "access_key" not in msg, msg
    assert leaked(raw) is None, raw


# ---------------------------------------------------------------------------- gpu_agent: the failing rule only
def test_gpu_agent_preflight_names_only_the_variable_at_fault(workdir, tmp_path):
    rc, results, raw = run_play(workdir, "gpu_agent", minio(gpu_agent_api_token=TOKEN, gpu_agent_port=0,
                                                            gpu_agent_minio_env_file=str(tmp_path / "minio.env")))
    assert rc != 0, raw
    name, res = failure(results)
    assert name == "Check the role's variables"
    msg = res["msg"]
    assert "gpu_agent_port must be 1-65535 (got 0)" in msg, msg
    for other in ("gpu_agent_api_token", "gpu_agent_tls", "gpu_agent_surface_mode", "gpu_agent_max_queue",
                  "gpu_agent_minio_env_file"):
        assert other not in msg, (other, msg)
    assert TOKEN not in raw and leaked(raw) is None, raw


def test_gpu_agent_preflight_names_a_short_token_without_showing_it(workdir, tmp_path):
    short = "tok-Vq8Rz3Kw"
    rc, results, raw = run_play(workdir, "gpu_agent", minio(gpu_agent_api_token=short,
                                                            gpu_agent_minio_env_file=str(tmp_path / "minio.env")))
    assert rc != 0, raw
    _, res = failure(results)
    assert "gpu_agent_api_token is required (16 characters at least" in res["msg"], res["msg"]
    assert "gpu_agent_port" not in res["msg"], res["msg"]
    assert short not in raw, raw


# ------------------------------------------------------------------------------------ every preflight, statically
PREFLIGHTS = sorted((ROOT / "roles").glob("*/tasks/preflight.yml"))
SECRETISH = re.compile(r"\b\w*(secret|token|password|passwd|access_key)\w*\b")


def _tasks(path):
    for task in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from (t for t in task.get(key, []) or [])


@pytest.mark.parametrize("path", PREFLIGHTS, ids=lambda p: p.parts[-3])
def test_no_preflight_hides_its_reason_or_templates_a_secret(path):
    """no_log would hide the message (2.16 shows only 'censored'); a message may measure a secret, never show it."""
    for task in _tasks(path):
        assert not task.get("no_log"), (path, task.get("name"))
        for module in ("ansible.builtin.assert", "ansible.builtin.fail"):
            args = task.get(module) or {}
            for key in ("msg", "fail_msg", "success_msg"):
                text = str(args.get(key, ""))
                for expr in re.findall(r"{{(.*?)}}", text, flags=re.S):
                    for match in SECRETISH.finditer(expr):
                        rest = expr[match.end():].lstrip()
                        assert rest.startswith("| length"), (path, task.get("name"), match.group(0))


def test_gpu_agent_preflight_lists_each_problem(workdir, tmp_path):
    rc, results, raw = run_play(workdir, "gpu_agent", minio(
        gpu_agent_api_token=TOKEN, gpu_agent_minio_env_file=str(tmp_path / "minio.env"),
        gpu_agent_state_dir="var/lib/agent", gpu_agent_tls_cert="/etc/ssl/agent.pem", gpu_agent_surface_mode="hard",
        gpu_agent_max_queue=0))
    assert rc != 0, raw
    _, res = failure(results)
    msg = res["msg"]
    for needle in ("gpu_agent_state_dir must be an absolute path (got 'var/lib/agent')",
                   "gpu_agent_tls_cert and gpu_agent_tls_key must be both set or both empty (only gpu_agent_tls_cert",
                   "gpu_agent_surface_mode must be symlink or copy (got 'hard')",
                   "gpu_agent_max_queue must be positive (got 0)"):
        assert needle in msg, (needle, msg)
    for other in ("gpu_agent_api_token", "gpu_agent_port", "gpu_agent_install_dir", "gpu_agent_comfyui_dir"):
        assert other not in msg, (other, msg)
    assert TOKEN not in raw and leaked(raw) is None, raw
