# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/provision.yml's rolling settings and its first play, run by the real ``ansible-playbook``.

``visionsuit_serial`` / ``visionsuit_max_fail_percentage`` are set in the inventory's group_vars/all (as the
example inventory does) or with ``-e``; play keywords are templated without inventory variables, so the rolling
play must read them through hostvars. The runs use provision.yml itself, ``--check --tags always`` on four
``ansible_connection=local`` hosts: what runs is the first play (endpoint prompt and checks, all on the
controller), fact gathering, the roles' argument checks and the summary. Nothing on the machine is changed.
The batches are read from the JSON callback (one play entry per batch).

``VISIONSUIT_ANSIBLE_PLAYBOOK`` may name another ansible-playbook (e.g. one of ansible-core 2.16).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import ansible_run

ROOT = Path(__file__).resolve().parents[2]
PROVISION = ROOT / "playbooks" / "provision.yml"
PLAYBOOK_BIN = ansible_run.playbook_bin()
ROLLING = "Provision VisionSuit GPU workers"
FIRST = "Check the rolling settings and ask for the MinIO endpoint when the inventory has none"
HOSTS = ("h1", "h2", "h3", "h4")

pytestmark = pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-playbook is not installed in the venv")


def make_inventory(tmp_path, all_vars=None, host_vars=None, hosts=HOSTS, endpoint=True):
    """An INI inventory of local hosts in group fleet, with group_vars/all/main.yml and per-host lines."""
    host_vars = host_vars or {}
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    lines = ["[fleet]"]
    for host in hosts:
        extra = " ".join(f"{k}={v}" for k, v in host_vars.get(host, {}).items())
        lines.append(f"{host} {extra}".rstrip())
    (inv / "hosts").write_text("\n".join(lines) + "\n")    # no .ini: 2.16 skips that extension in a directory
    base = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_become": False,     # the rolling play says become: true; nothing here needs root
    }
    if endpoint:
        base["visionsuit_minio_endpoint"] = "http://127.0.0.1:9000"
    base.update(all_vars or {})
    (inv / "group_vars" / "all" / "main.yml").write_text(yaml.safe_dump(base))
    return inv


def run_provision(tmp_path, inventory, *args):
    """provision.yml --check --tags always with the JSON callback: (rc, parsed output, raw output)."""
    r = ansible_run.run(PROVISION, inventory, ansible_run.isolated_env(tmp_path, ANSIBLE_FORKS="4"), *args,
                        cwd=tmp_path, tags="always", binary=PLAYBOOK_BIN, stdin=subprocess.DEVNULL)
    return r.rc, r.out, r.raw


def batches(out):
    """The hosts of each batch of the rolling play, in order (the JSON callback starts a play per batch)."""
    found = []
    for play in out["plays"]:
        if play["play"]["name"] != ROLLING:
            continue
        hosts = []
        for task in play["tasks"]:
            for host in task["hosts"]:
                if host not in hosts:
                    hosts.append(host)
        found.append(sorted(hosts))
    return found


def task_results(out, play_name, task_name):
    for play in out["plays"]:
        if play["play"]["name"] != play_name:
            continue
        for task in play["tasks"]:
            if task["task"]["name"] == task_name:
                return task["hosts"]
    raise AssertionError(f"no task {task_name!r} in play {play_name!r}")


# ---------------------------------------------------------------------------------------- serial from inventory
def test_serial_from_group_vars_all_makes_batches(tmp_path):
    inv = make_inventory(tmp_path, {"visionsuit_serial": 2})
    rc, out, raw = run_provision(tmp_path, inv)
    assert rc == 0, raw
    assert batches(out) == [["h1", "h2"], ["h3", "h4"]], raw


def test_serial_percentage_from_group_vars(tmp_path):
    inv = make_inventory(tmp_path, {"visionsuit_serial": "25%"})
    rc, out, raw = run_provision(tmp_path, inv)
    assert rc == 0, raw
    assert batches(out) == [["h1"], ["h2"], ["h3"], ["h4"]], raw


def test_serial_list_from_group_vars(tmp_path):
    inv = make_inventory(tmp_path, {"visionsuit_serial": [1, "50%"]})
    rc, out, raw = run_provision(tmp_path, inv)
    assert rc == 0, raw
    assert batches(out) == [["h1"], ["h2", "h3"], ["h4"]], raw


def test_extra_vars_override_the_inventory(tmp_path):
    inv = make_inventory(tmp_path, {"visionsuit_serial": 2})
    rc, out, raw = run_provision(tmp_path, inv, "-e", "visionsuit_serial=3")
    assert rc == 0, raw
    assert batches(out) == [["h1", "h2", "h3"], ["h4"]], raw


def test_extra_vars_alone(tmp_path):
    inv = make_inventory(tmp_path)
    rc, out, raw = run_provision(tmp_path, inv, "-e", "visionsuit_serial=1")
    assert rc == 0, raw
    assert batches(out) == [["h1"], ["h2"], ["h3"], ["h4"]], raw


def test_no_setting_is_one_batch(tmp_path):
    inv = make_inventory(tmp_path)
    rc, out, raw = run_provision(tmp_path, inv)
    assert rc == 0, raw
    assert batches(out) == [list(HOSTS)], raw


# ------------------------------------------------------------------------------ max_fail_percentage from inventory
BROKEN = {"h2": {"ansible_python_interpreter": "/nonexistent/python3"}}   # fails at fact gathering


def test_max_fail_percentage_zero_from_the_inventory_stops_after_the_failing_batch(tmp_path):
    inv = make_inventory(tmp_path, {"visionsuit_serial": 2, "visionsuit_max_fail_percentage": 0}, BROKEN)
    rc, out, raw = run_provision(tmp_path, inv)
    assert rc != 0, raw
    assert batches(out) == [["h1", "h2"]], raw          # h3, h4 never started
    assert out["stats"]["h2"]["failures"] >= 1, out["stats"]


def test_max_fail_percentage_from_the_inventory_lets_the_run_go_on(tmp_path):
    # one failure in a batch of two is 50%, not more than 50: the next batch runs
    inv = make_inventory(tmp_path, {"visionsuit_serial": 2, "visionsuit_max_fail_percentage": 50}, BROKEN)
    rc, out, raw = run_provision(tmp_path, inv)
    assert rc != 0, raw                                   # h2 failed
    assert batches(out) == [["h1", "h2"], ["h3", "h4"]], raw
    assert out["stats"]["h4"]["failures"] == 0 and out["stats"]["h4"]["ok"] > 0, out["stats"]


def test_max_fail_percentage_extra_var_overrides_the_inventory(tmp_path):
    inv = make_inventory(tmp_path, {"visionsuit_serial": 2, "visionsuit_max_fail_percentage": 50}, BROKEN)
    rc, out, raw = run_provision(tmp_path, inv, "-e", "visionsuit_max_fail_percentage=0")
    assert rc != 0, raw
    assert batches(out) == [["h1", "h2"]], raw


# --------------------------------------------------------------------------------- settings that differ per host
def test_different_serial_per_host_is_refused_by_name(tmp_path):
    inv = make_inventory(tmp_path, {"visionsuit_serial": 2}, {"h3": {"visionsuit_serial": 1}})
    rc, out, raw = run_provision(tmp_path, inv)
    assert rc != 0, raw
    res = task_results(out, FIRST, "Check that every host has the same rolling settings")
    failed = [r for r in res.values() if r.get("failed")]
    assert failed, res
    msg = failed[0]["msg"]
    assert "visionsuit_serial (2, 1) must be the same for every host of the run" in msg, msg
    assert "visionsuit_max_fail_percentage" not in msg, msg
    assert batches(out) == [], raw


def test_the_example_inventory_runs_in_batches_of_its_group_vars_all(tmp_path):
    """inventories/example as it is (visionsuit_serial: 2 in group_vars/all, keys in vault), its hosts made local."""
    example = ROOT / "inventories" / "example"
    rc, out, raw = run_provision(
        tmp_path, example, "--vault-password-file", str(example / "vault-password.example.txt"),
        "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}",
        "-e", "ansible_become=false")
    assert rc == 0, raw
    assert sorted(out["stats"]) == ["render-amd-01", "render-cpu-01", "render-nv-01", "render-nv-02"], out["stats"]
    assert [len(batch) for batch in batches(out)] == [2, 2], raw


def test_the_example_inventory_sets_the_rolling_settings_in_group_vars_all():
    """The example says group_vars/all; the playbook's header and the README say the inventory works."""
    example = yaml.safe_load((ROOT / "inventories" / "example" / "group_vars" / "all" / "main.yml").read_text())
    assert "visionsuit_serial" in example and "visionsuit_max_fail_percentage" in example
    header = PROVISION.read_text().split("\n- name:", 1)[0]
    assert "only take extra vars" not in header
    assert "group_vars/all" in header


# ------------------------------------------------------------------------------------ the endpoint prompt (item 4)
def test_an_endpoint_for_some_hosts_only_gives_a_clear_error_for_the_others(tmp_path):
    """h1 has an endpoint, h2 none, stdin is not a terminal: no Jinja error; h2 fails naming the variable."""
    inv = make_inventory(tmp_path, hosts=("h1", "h2"), endpoint=False,
                         host_vars={"h1": {"visionsuit_minio_endpoint": "http://10.0.0.5:9000"}})
    rc, out, raw = run_provision(tmp_path, inv)
    assert rc != 0, raw
    assert "has no attribute" not in raw and "is undefined" not in raw, raw   # the old Jinja crash
    check = task_results(out, FIRST, "Check the MinIO endpoint")
    assert not check["h1"].get("failed"), check
    assert check["h2"].get("failed"), check
    assert ("visionsuit_minio_endpoint is not set for h2 and no URL was given at the prompt"
            in check["h2"]["msg"]), check["h2"]
    prompt = task_results(out, FIRST, "Prompt for the MinIO endpoint URL")
    assert list(prompt) == ["h1"], prompt       # asked once (run_once), for the hosts without one
    assert batches(out) == [["h1"]], raw        # h1 goes on


def test_endpoint_in_the_inventory_asks_nothing(tmp_path):
    inv = make_inventory(tmp_path, hosts=("h1", "h2"))
    rc, out, raw = run_provision(tmp_path, inv)
    assert rc == 0, raw
    prompt = task_results(out, FIRST, "Prompt for the MinIO endpoint URL")
    assert all(r.get("skipped") for r in prompt.values()), prompt


def run_provision_on_a_terminal(tmp_path, inventory, answer):
    """provision.yml --check --tags always on a pseudo-terminal (its controlling terminal, as an operator's shell
    gives it): types ``answer`` at the first prompt. Returns (rc, parsed JSON output, the prompt lines seen)."""
    import pty
    import select
    import time

    env = ansible_run.isolated_env(tmp_path)
    cmd = [str(PLAYBOOK_BIN), "--check", "--tags", "always", "-i", str(inventory), str(PROVISION)]
    pid, fd = pty.fork()
    if pid == 0:  # the child: a new session whose controlling terminal is the pty
        os.chdir(str(tmp_path))
        os.execve(cmd[0], cmd, env)  # noqa: S606 - a fixed argv, no shell
    data, answered, deadline = b"", False, time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:     # EIO: the child closed the terminal
                break
            if not chunk:
                break
            data += chunk
            if not answered and b"MinIO endpoint URL for" in data and data.rstrip().endswith(b":"):
                time.sleep(0.5)     # the prompt flushes its input once it is shown
                os.write(fd, answer.encode() + b"\r")
                answered = True
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = data.decode(errors="replace")
    start = text.rfind("{", 0, max(text.find('"custom_stats"'), 0))   # after the prompt's terminal codes
    assert answered and start >= 0, text
    prompts = [line for line in text.splitlines() if "MinIO endpoint URL for" in line]
    return os.waitstatus_to_exitcode(status), json.loads(text[start:]), prompts


def test_the_prompt_answer_goes_to_the_hosts_without_an_endpoint(tmp_path):
    inv = make_inventory(tmp_path, hosts=("h1", "h2", "h3"), endpoint=False,
                         host_vars={"h1": {"visionsuit_minio_endpoint": "http://10.0.0.5:9000"}})
    rc, out, prompts = run_provision_on_a_terminal(tmp_path, inv, "http://10.0.0.9:9000")
    assert rc == 0, out
    assert len(prompts) == 1 and "2 render node(s) without one in the inventory (h2, h3" in prompts[0], prompts
    used = task_results(out, FIRST, "Use the answer for the hosts without an endpoint")
    assert used["h1"].get("skipped"), used
    for host in ("h2", "h3"):
        assert used[host]["ansible_facts"]["visionsuit_minio_endpoint"] == "http://10.0.0.9:9000", used
    assert batches(out) == [["h1", "h2", "h3"]]


def summary_warnings(out, host):
    for play in out["plays"]:
        if play["play"]["name"] != "Summary":
            continue
        for task in play["tasks"]:
            if host in task["hosts"]:
                return task["hosts"][host]["msg"]["warnings"]
    raise AssertionError("no summary for %s" % host)


def test_the_summary_warns_about_an_exposed_agent(tmp_path):
    """Issue 14 item 9: the agent listens on 0.0.0.0 over plain HTTP with no allow-list and an open /metrics by
    default (a dispatcher on another host must reach it); the summary says so, per setting, and is quiet when
    the operator closed each one (or keeps the agent on loopback)."""
    inv = make_inventory(tmp_path, all_vars={"gpu_agent_enabled": True}, hosts=("h1", "h2", "h3"), host_vars={
        "h2": {"gpu_agent_listen": "127.0.0.1"},
        "h3": {"gpu_agent_allowed_networks": "['10.0.0.0/8']", "gpu_agent_tls_cert": "/etc/ssl/a.pem",
               "gpu_agent_metrics_require_auth": "true"}})
    rc, out, raw = run_provision(tmp_path, inv)
    h1 = summary_warnings(out, "h1")
    assert [w.split(":")[0] for w in h1] == [
        "the agent listens on 0.0.0.0 with no allow-list", "the agent API is plain HTTP on a non-loopback address",
        "the agent serves /metrics without the token (gpu_agent_metrics_require_auth"], h1
    assert "set gpu_agent_allowed_networks" in h1[0] and "port 8081" in h1[0]
    assert summary_warnings(out, "h2") == []
    assert summary_warnings(out, "h3") == []
