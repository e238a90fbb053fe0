# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""gpu/distros.py is THE table of supported distributions: every role's Galaxy platforms and the gpu_driver role's
per-distribution vars files must list exactly the distributions it lists (one added or removed on one side only
fails here)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from visionsuit_gpuworker.gpu.distros import DISTROS, galaxy_platforms, resolve_distro, vars_name

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "main.yml").is_file())
GPU_DRIVER_VARS = ROOT / "roles" / "gpu_driver" / "vars"


def _platform_set(platforms):
    """[{name, versions}] -> {(name, version)}, failing on duplicates (a duplicate would hide a missing one)."""
    pairs = [(p["name"], str(v)) for p in platforms for v in p["versions"]]
    assert len(pairs) == len(set(pairs)), f"duplicate platform entries: {pairs}"
    return set(pairs)


def test_the_table_is_consistent():
    assert DISTROS
    for (distro_id, major), entry in DISTROS.items():
        assert entry["distribution"].lower() == distro_id
        assert entry["name"].startswith(entry["distribution"] + " " + major)
        assert resolve_distro(entry["distribution"], major + ".1")["codename"] == entry["codename"]
    assert resolve_distro("Debian", "12.7")["codename"] == "bookworm"
    assert resolve_distro("ubuntu", "24.04")["codename"] == "noble"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_role_platforms_are_the_table(role):
    meta = yaml.safe_load((role / "meta" / "main.yml").read_text())
    declared = _platform_set(meta["galaxy_info"]["platforms"])
    expected = _platform_set(galaxy_platforms())
    assert declared == expected, (
        f"{role.name}/meta/main.yml galaxy_info.platforms: not in gpu/distros.py: {sorted(declared - expected)}; "
        f"missing: {sorted(expected - declared)}")


def test_gpu_driver_vars_files_are_the_table():
    files = {p.stem for p in GPU_DRIVER_VARS.glob("*.yml")} - {"main"}
    expected = {vars_name(key) for key in DISTROS}
    assert files == expected, (
        f"roles/gpu_driver/vars: files without a gpu/distros.py entry: {sorted(files - expected)}; "
        f"entries without a file: {sorted(expected - files)}")
    for name in sorted(files):
        data = yaml.safe_load((GPU_DRIVER_VARS / f"{name}.yml").read_text())
        assert data["_gpu_driver_os"] == name
        assert data["_gpu_driver_prerequisites"], name
