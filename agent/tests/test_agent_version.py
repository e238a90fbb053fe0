# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""One version (issue 14 item 8): the agent's ``--version``, ``/healthz`` ``version`` and User-Agent come from the
installed distribution's metadata, which carries the collection's version (galaxy.yml); from a source tree
without metadata, from agent/pyproject.toml."""
from __future__ import annotations

import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import visionsuit_gpu_agent

ROOT = Path(__file__).resolve().parents[2]
GALAXY_VERSION = re.search(r"^version:\s*['\"]?([^'\"\s]+)", (ROOT / "galaxy.yml").read_text(), re.M).group(1)


def test_python_m_agent_prints_the_installed_version():
    proc = subprocess.run([sys.executable, "-m", "visionsuit_gpu_agent", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"visionsuit-gpu-agent {GALAXY_VERSION}\n"
    assert visionsuit_gpu_agent.__version__ == importlib.metadata.version("visionsuit-gpu-agent") == GALAXY_VERSION


def test_a_source_tree_without_metadata_reads_its_pyproject(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    try:
        assert importlib.reload(visionsuit_gpu_agent).__version__ == GALAXY_VERSION
    finally:
        monkeypatch.undo()
        importlib.reload(visionsuit_gpu_agent)


def test_the_documented_healthz_example_carries_the_collection_version():
    text = (ROOT / "agent" / "README.md").read_text()
    assert set(re.findall(r'"version": "([^"]+)"', text)) <= {GALAXY_VERSION}
