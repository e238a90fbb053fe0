# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a play with the real ``ansible-playbook`` and read its JSON callback output.

Shared by the tests that run roles, modules or playbooks/provision.yml on localhost (or on local hosts of an
inventory). Two environments:

- ``isolated_env(workdir)``: the ``ansible.posix.json`` callback, no ansible.cfg (a missing one in ``workdir``),
  the checkout's collections and roles; the runs that must be ``--check``.
- ``repo_env()``: the ``json`` callback and the repository's ansible.cfg (the module tests).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import NamedTuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
SITE_PACKAGES = next((p for p in sys.path if p.endswith("site-packages") and os.path.isdir(
    os.path.join(p, "ansible_collections"))), "")
#: arguments that run an inline ``localhost,`` inventory locally with this interpreter
LOCALHOST = ("-c", "local", "-e", f"ansible_python_interpreter={sys.executable}")


def playbook_bin():
    """``VISIONSUIT_ANSIBLE_PLAYBOOK`` (e.g. an ansible-core 2.16 one) or the venv's ansible-playbook."""
    return Path(os.environ.get("VISIONSUIT_ANSIBLE_PLAYBOOK") or VENV_PLAYBOOK)


def isolated_env(workdir, **extra):
    """os.environ with the ANSIBLE_* settings of a run that ignores the repository's ansible.cfg."""
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": "{}:{}".format(ROOT / ".build" / "collections", SITE_PACKAGES),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOCAL_TEMP": str(Path(workdir) / "tmp"),
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CONFIG": str(Path(workdir) / "none.cfg"),  # not the repo's ansible.cfg
    }, **extra)
    return env


def repo_env(**extra):
    """os.environ with the repository's ansible.cfg and the ``json`` callback."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".build" / "collections"), ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1")
    env.update(extra)
    return env


def write_play(directory, play, name="play.yml"):
    """Write ``play`` (YAML text, or a list of plays to dump) to ``directory/name``; returns the path."""
    path = Path(directory) / name
    path.write_text(play if isinstance(play, str) else yaml.safe_dump(play, sort_keys=False))
    return path


def local_workdir(directory, play):
    """``directory`` with play.yml and an inventory of localhost (local connection, this interpreter)."""
    write_play(directory, play)
    (Path(directory) / "inventory").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    return directory


class Run(NamedTuple):
    rc: int
    out: dict         # the parsed JSON callback output
    raw: str          # stdout + stderr
    proc: subprocess.CompletedProcess


def tails(proc, size=2000):
    return f"--- stdout (tail) ---\n{proc.stdout[-size:]}\n--- stderr (tail) ---\n{proc.stderr[-size:]}"


def parse(proc):
    """The JSON callback's document on ``proc.stdout`` (anything before its first ``{`` is skipped)."""
    start = proc.stdout.find("{")
    try:
        if start < 0:
            raise ValueError("no JSON object")
        return json.loads(proc.stdout[start:])
    except ValueError as exc:
        raise AssertionError(f"ansible-playbook (rc {proc.returncode}) printed no JSON ({exc}):\n"
                             f"{tails(proc)}") from None


def run(playbook, inventory, env, *args, cwd, extra_vars=None, check=True, tags=None, limit=None,
        binary=VENV_PLAYBOOK, timeout=240, stdin=None):
    """ansible-playbook [--check] [--tags] [--limit] -i inventory playbook [-e @cwd/vars.json] *args."""
    cmd = [str(binary)] + (["--check"] if check else []) + (["--tags", tags] if tags else []) + (
        ["--limit", limit] if limit else []) + ["-i", str(inventory), str(playbook)]
    if extra_vars is not None:
        vars_file = Path(cwd) / "vars.json"
        vars_file.write_text(json.dumps(extra_vars))
        cmd += ["-e", f"@{vars_file}"]
    cmd += [str(a) for a in args]
    if check:
        assert "--check" in cmd  # never without: this is the development machine
    proc = subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout, stdin=stdin)
    return Run(proc.returncode, parse(proc), proc.stdout + proc.stderr, proc)


def results(out, host="localhost"):
    """[(task name without its role prefix, result of ``host``)], in play order, over every play."""
    found = []
    for play in out["plays"]:
        for task in play["tasks"]:
            res = task["hosts"].get(host)
            if res is not None:
                found.append((task["task"]["name"].split(" : ", 1)[-1], res))
    return found


def result(out, name, host="localhost"):
    """The last result of task ``name`` on ``host``."""
    found = [r for n, r in results(out, host) if n == name]
    assert found, f"task {name!r} did not run: {[n for n, _ in results(out, host)]}"
    return found[-1]


def run_tasks(tmp_path, tasks, extra_env=None):
    """Run ``tasks`` on localhost (repo_env, not --check); return ({task name: result}, the process)."""
    pb = write_play(tmp_path, [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}],
                    f"play-{uuid.uuid4().hex[:6]}.yml")
    r = run(pb, "localhost,", repo_env(**(extra_env or {})), *LOCALHOST, cwd=tmp_path, check=False, timeout=180)
    return dict(results(r.out)), r.proc
