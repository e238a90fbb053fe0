# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every tracked source file names its license (issue 14, release practice): an SPDX identifier near its top.

Source files: Python, shell, Go, Jinja templates, the YAML of roles, playbooks, molecule, plugins, agent, rig,
benchmarks and tests, and the ``dev`` and ``.ci/run`` scripts. Not: recorded test data (tests/fixtures), the
generated changelog (changelogs/), empty files (empty ``__init__.py``: ansible-test wants those empty).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPDX = "SPDX-License-Identifier: GPL-3.0-or-later"
#: how many lines from the top the identifier may be (after a shebang, a coding line, a copyright line, or a
#: template's first ``{{ ansible_managed | comment }}`` line)
HEAD_LINES = 6

SOURCE_SUFFIXES = {".py", ".sh", ".go", ".j2"}
YAML_DIRS = ("roles/", "playbooks/", "molecule/", "plugins/", "agent/", "rig/", "benchmarks/", "tests/")
NAMED = {"dev", ".ci/run", "provision.yml", "rollback.yml"}
EXCLUDED_DIRS = ("tests/fixtures/", "changelogs/")


def tracked_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [p for p in out.decode().split("\0") if p]


def is_source(path):
    if path.startswith(EXCLUDED_DIRS):
        return False
    suffix = Path(path).suffix
    return (path in NAMED or suffix in SOURCE_SUFFIXES
            or (suffix in (".yml", ".yaml") and path.startswith(YAML_DIRS)))


def lacks_header(path):
    full = ROOT / path
    if not full.is_file() or full.stat().st_size == 0:
        return False
    head = full.read_text(encoding="utf-8", errors="replace").splitlines()[:HEAD_LINES]
    return not any(SPDX in line for line in head)


def test_every_source_file_has_a_license_header():
    missing = [p for p in tracked_files() if is_source(p) and lacks_header(p)]
    assert not missing, (f"{len(missing)} source file(s) without '# {SPDX}' in their first {HEAD_LINES} lines "
                         "(see tests/unit/test_license_headers.py):\n  " + "\n  ".join(missing))


def test_the_rule_sees_sources_and_skips_data():
    assert is_source("plugins/modules/gpu_plan.py") and is_source("roles/comfyui/tasks/main.yml")
    assert is_source("roles/comfyui/templates/comfyui.service.j2") and is_source("dev")
    assert not is_source("tests/fixtures/gpu/nvidia-l40s-x2/lspci.txt") and not is_source("changelogs/changelog.yaml")
    assert not is_source("inventories/example/hosts.yml") and not is_source("README.md")
