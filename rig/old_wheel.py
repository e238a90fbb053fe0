# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build a wheel of visionsuit-gpuworker as an *older release* would have shipped it: another version and one
extra module that the current release no longer has. Molecule installs it on a node and checks that converge
replaces the package whole (the extra module is gone, the version is the collection's).

    python3 rig/old_wheel.py OUT_DIR [VERSION] [EXTRA_MODULE]   -> prints the wheel's path
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _builder():
    spec = importlib.util.spec_from_file_location("_vs_wheel", ROOT / "plugins" / "plugin_utils" / "wheel.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build(out_dir: str, version: str = "0.0.1", extra: str = "removed_in_next_release") -> str:
    wheel = _builder()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        text = (ROOT / "pyproject.toml").read_text()
        current = wheel.load_project(str(ROOT))["version"]
        (src / "pyproject.toml").write_text(text.replace('version = "%s"' % current, 'version = "%s"' % version, 1))
        shutil.copytree(ROOT / "plugins" / "module_utils", src / "plugins" / "module_utils",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (src / "plugins" / "module_utils" / (extra + ".py")).write_text('"""Only in the old release."""\n')
        return wheel.build_wheel(str(src), out_dir)


if __name__ == "__main__":
    print(build(*sys.argv[1:]))
