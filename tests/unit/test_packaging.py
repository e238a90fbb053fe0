# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The node packages: one version (the collection's), a reproducible wheel that matches what setuptools builds
from the same pyproject.toml, and a layout the roles rely on (console scripts, package data)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from ansible_collections.visionsuit.gpuworker.plugins.lookup import node_wheel
from ansible_collections.visionsuit.gpuworker.plugins.plugin_utils import wheel

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = {name: ROOT / folder for name, folder in node_wheel.PROJECTS.items()}
GALAXY_VERSION = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_every_node_package_carries_the_collection_version(name):
    project = wheel.load_project(str(PROJECTS[name]))
    assert project["name"] == name
    assert project["version"] == GALAXY_VERSION, f"{name}: set version = \"{GALAXY_VERSION}\" in its pyproject.toml"


def test_the_agent_depends_on_the_library_of_the_same_release():
    deps = wheel.load_project(str(PROJECTS["visionsuit-gpu-agent"]))["dependencies"]
    assert deps == [f"visionsuit-gpuworker=={GALAXY_VERSION}"]


def test_every_library_subpackage_is_listed(tmp_path):
    """A new subpackage under plugins/module_utils that is not in pyproject.toml would be left off the nodes."""
    listed = wheel.load_project(str(ROOT))["packages"]
    on_disk = sorted("visionsuit_gpuworker" + ("." + ".".join(p.parent.relative_to(ROOT / "plugins" / "module_utils")
                                                                .parts) if p.parent != ROOT / "plugins" / "module_utils"
                                                else "")
                     for p in (ROOT / "plugins" / "module_utils").rglob("__init__.py"))
    assert sorted(listed) == on_disk


def test_unlisted_subpackage_is_refused(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "p"\nversion = "1"\n[tool.setuptools]\npackages = ["pkg"]\n')
    with pytest.raises(wheel.WheelError, match=r"pkg\.sub .* is not listed"):
        wheel.wheel_bytes(wheel.load_project(str(tmp_path)))


def test_unsupported_setuptools_keys_are_refused(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "p"\nversion = "1"\n[tool.setuptools]\npackages = ["pkg"]\ninclude-package-data = true\n')
    with pytest.raises(wheel.WheelError, match="include-package-data"):
        wheel.load_project(str(tmp_path))


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_the_wheel_is_reproducible(name, tmp_path):
    project = wheel.load_project(str(PROJECTS[name]))
    first = wheel.wheel_bytes(project)
    assert first == wheel.wheel_bytes(project)
    path = Path(node_wheel.wheel_path(name, root=str(ROOT), cache=str(tmp_path)))
    assert path.read_bytes() == first and path.name == wheel.wheel_filename(project)
    # a second lookup reuses the file (the role's copy then sees an unchanged source)
    mtime = path.stat().st_mtime_ns
    assert node_wheel.wheel_path(name, root=str(ROOT), cache=str(tmp_path)) == str(path)
    assert path.stat().st_mtime_ns == mtime


def _contents(path):
    with zipfile.ZipFile(path) as zf:
        names = {n for n in zf.namelist() if ".dist-info/" not in n}
        info = {n.split("/", 1)[1]: zf.read(n).decode() for n in zf.namelist() if ".dist-info/" in n}
    return names, info


def _fields(metadata):
    keep = ("Name", "Version", "Requires-Python", "Requires-Dist", "Summary")
    return sorted(line for line in metadata.splitlines() if line.split(":", 1)[0] in keep)


def _entry_points(text):
    return sorted(re.sub(r"\s+", "", line) for line in text.splitlines() if "=" in line)


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_same_files_and_metadata_as_setuptools(name, tmp_path):
    """The controller's stdlib builder and setuptools (editable installs in development) read the same
    pyproject.toml; they must ship the same files, version, dependencies and commands."""
    ours = node_wheel.wheel_path(name, root=str(ROOT), cache=str(tmp_path / "ours"))
    # setuptools builds in the project folder (build/, *.egg-info): give it a copy of what it reads
    src = tmp_path / "src"
    project = wheel.load_project(str(PROJECTS[name]))
    src.mkdir()
    shutil.copy(PROJECTS[name] / "pyproject.toml", src / "pyproject.toml")
    for package in project["packages"]:
        folder = Path(wheel._package_folder(project, package))
        dest = src / folder.relative_to(PROJECTS[name])
        dest.mkdir(parents=True, exist_ok=True)
        for f in folder.iterdir():
            if f.is_file():
                shutil.copy(f, dest / f.name)
        for pattern in project["package_data"].get(package, []):
            for f in folder.glob(pattern):
                (dest / f.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, dest / f.relative_to(folder))
    out = tmp_path / "setuptools"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    (theirs,) = out.glob("*.whl")
    our_files, our_info = _contents(ours)
    their_files, their_info = _contents(theirs)
    assert our_files == their_files
    assert _fields(our_info["METADATA"]) == _fields(their_info["METADATA"])
    assert _entry_points(our_info.get("entry_points.txt", "")) == _entry_points(their_info.get("entry_points.txt", ""))


def test_node_commands_are_the_libraries_console_scripts():
    """minio_helpers links exactly the library's console scripts into the bin dir (and rollback removes them)."""
    scripts = wheel.load_project(str(ROOT))["scripts"]
    role_vars = yaml.safe_load((ROOT / "roles" / "minio_helpers" / "vars" / "main.yml").read_text())
    assert sorted(role_vars["_minio_helpers_commands"]) == sorted(scripts)


def test_no_role_reads_another_roles_files_by_path():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "roles").rglob("*.yml")
                 if re.search(r"role_path\s*\|\s*dirname", p.read_text())]
    assert offenders == []


def test_no_python_is_copied_by_fileglob():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "roles").rglob("*.yml")
                 if "with_fileglob" in p.read_text() or re.search(r"fileglob.*\.py", p.read_text())]
    assert offenders == []
