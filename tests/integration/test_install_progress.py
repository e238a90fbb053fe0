# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Long installs made visible (issue 14): the comfyui role's PyTorch install (tasks/install-torch.yml) runs as an
async job with a wait that prints a line per check and a report of its duration; a venv that has the packages
skips the job (changed=0, no wait), pip's error reaches the failed task, and check mode installs nothing. Run on
localhost into a throwaway venv from a local wheelhouse (a hand-made wheel, no network).
"""
from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile

import pytest

from tests import ansible_run

pytestmark = pytest.mark.integration

WAIT = "Wait for the PyTorch install"


def make_wheel(directory, name, version):
    """A pure-Python wheel of ``name`` (one module) in ``directory``."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}.py": f"VERSION = {version!r}\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(venv, wheelhouse): an empty venv and a wheelhouse with fakepytorch 2.8.0."""
    base = tmp_path_factory.mktemp("torch")
    wheels = base / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "fakepytorch", "2.8.0")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    return venv, wheels


def install(tmp_path, site, packages, check=False):
    venv, wheels = site
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "torch", "ansible.builtin.include_role": {"name": "visionsuit.gpuworker.comfyui",
                                                           "tasks_from": "install-torch.yml"}}]}]
    variables = {"_comfyui_venv": str(venv), "_comfyui_constraints": [], "_comfyui_install_poll": 1,
                 "comfyui_torch_packages": packages, "comfyui_torch_index_url": wheels.as_uri(),
                 "comfyui_pip_extra_args": f"--no-index --find-links {wheels}", "comfyui_service_started": False,
                 "comfyui_install_timeout": 120}
    run = ansible_run.run(ansible_run.write_play(tmp_path, play), "localhost,", ansible_run.repo_env(),
                          *ansible_run.LOCALHOST, cwd=tmp_path, extra_vars=variables, check=check, timeout=180)
    return run, {name.split(" (a check")[0]: res for name, res in ansible_run.results(run.out)}


def test_the_install_is_an_async_job_with_a_wait_and_a_report_then_a_rerun_is_a_no_op(tmp_path, site):
    run, tasks = install(tmp_path, site, ["fakepytorch==2.8.0"])
    assert run.rc == 0, ansible_run.tails(run.proc)
    assert tasks["Compare the venv with the PyTorch pins"]["changed"] is True
    started = tasks[f"Install PyTorch from {site[1].as_uri()}"]
    assert started["ansible_job_id"] and started["changed"] is False
    wait = tasks[WAIT]
    assert wait["finished"] and wait["changed"] is True and "Successfully installed fakepytorch-2.8.0" in wait["stdout"]
    report = tasks["Report the PyTorch install"]["msg"]
    assert report.startswith("PyTorch installed in ") and report.endswith("Successfully installed fakepytorch-2.8.0")
    # the wait task says what it waits for (the line each check prints)
    names = [name for name, _ in ansible_run.results(run.out)]
    assert f"{WAIT} (a check every 1 s, up to 120 s): fakepytorch==2.8.0 from {site[1].as_uri()}" in names

    again, tasks = install(tmp_path, site, ["fakepytorch==2.8.0"])
    assert again.rc == 0, ansible_run.tails(again.proc)
    assert again.out["stats"]["localhost"]["changed"] == 0
    assert all(tasks[name].get("skipped") for name in (f"Install PyTorch from {site[1].as_uri()}", WAIT,
                                                       "Report the PyTorch install"))


def test_a_failed_install_fails_the_wait_with_pips_error(tmp_path, site):
    run, tasks = install(tmp_path, site, ["fakepytorch==9.9.9"])
    assert run.rc != 0
    wait = tasks[WAIT]
    assert wait["failed"] and wait["finished"]
    assert "No matching distribution found for fakepytorch==9.9.9" in wait["msg"]


def test_check_mode_answers_from_the_venv_and_installs_nothing(tmp_path, site):
    run, tasks = install(tmp_path, site, ["fakepytorch==2.8.0", "fakeaudio"], check=True)
    assert run.rc == 0, ansible_run.tails(run.proc)
    assert tasks["Compare the venv with the PyTorch pins"]["changed"] is True  # fakeaudio is missing
    assert all(tasks[name].get("skipped") for name in (f"Install PyTorch from {site[1].as_uri()}", WAIT))
    listed = subprocess.run([str(site[0] / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True).stdout
    assert "fakeaudio" not in listed
