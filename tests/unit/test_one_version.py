# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""One version (issue 14 item 8): the library's package_version() (node commands' --version) and the modules'
version_added derive from the collection's version (galaxy.yml)."""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import yaml

from visionsuit_gpuworker import version as version_mod

ROOT = Path(__file__).resolve().parents[2]
GALAXY_VERSION = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]


def test_the_library_reports_the_installed_metadata():
    assert version_mod.package_version() == importlib.metadata.version("visionsuit-gpuworker") == GALAXY_VERSION


def test_without_metadata_the_source_trees_pyproject_is_read(monkeypatch, tmp_path):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert version_mod.package_version() == GALAXY_VERSION
    (tmp_path / "pyproject.toml").write_text('[tool.x]\nversion = "9"\n[project]\nname = "p"\nversion = "2.3.4"\n')
    assert version_mod.package_version(source_tree=str(tmp_path)) == "2.3.4"
    assert version_mod.package_version(source_tree=str(tmp_path / "nowhere")) == version_mod.UNKNOWN


@pytest.mark.parametrize("module", sorted(p.name for p in (ROOT / "plugins" / "modules").glob("*.py")))
def test_version_added_is_not_ahead_of_the_collection(module):
    added = re.findall(r'^version_added:\s*"?([^"\s]+)"?', (ROOT / "plugins" / "modules" / module).read_text(), re.M)
    assert all(v == GALAXY_VERSION for v in added), (module, added)


def _version_key(version):
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def test_the_changelog_is_not_ahead_of_the_collection():
    """changelogs/changelog.yaml (CHANGELOG.md is generated from it) releases no version galaxy.yml has not reached;
    the unreleased changes wait as fragments for galaxy.yml's version."""
    releases = yaml.safe_load((ROOT / "changelogs" / "changelog.yaml").read_text())["releases"]
    assert releases, "changelogs/changelog.yaml has no release"
    newest = max(releases, key=_version_key)
    assert _version_key(newest) <= _version_key(GALAXY_VERSION), (newest, GALAXY_VERSION)
    assert f"## v{newest}".replace(".", "\\.") in (ROOT / "CHANGELOG.md").read_text()
