# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Import every module of the node packages as installed in this interpreter's environment (issue 14).

Run by rig/node_python.sh with each node Python (3.10 Ubuntu 22.04, 3.11 Debian 12, 3.12 Ubuntu 24.04), in
isolated mode (``python -I``) from outside the checkout, so the installed wheels are what gets imported, never
the source tree. ``compileall`` would only parse the files; importing also runs the module bodies (stdlib
names such as ``tomllib`` or ``datetime.UTC`` that a version lacks, annotations evaluated at import time,
``dataclass`` options). ``__main__`` modules are not imported (that would run the program). Standard library
only, Python 3.9+.
"""
import importlib
import os
import pkgutil
import sys
import traceback

PACKAGES = ("visionsuit_gpuworker", "visionsuit_gpu_agent")


def main():
    prefix = os.path.realpath(sys.prefix)
    imported, failed = [], []
    for top in PACKAGES:
        try:
            package = importlib.import_module(top)
        except Exception:  # noqa: BLE001 - every failure is reported below
            failed.append((top, traceback.format_exc()))
            continue
        names = [top] + [info.name for info in pkgutil.walk_packages(package.__path__, top + ".")]
        for name in names:
            if name.endswith(".__main__"):
                continue
            try:
                module = importlib.import_module(name)
            except Exception:  # noqa: BLE001
                failed.append((name, traceback.format_exc()))
                continue
            where = os.path.realpath(getattr(module, "__file__", "") or "")
            if not where.startswith(prefix + os.sep):
                failed.append((name, "imported from %s, not from the environment %s\n" % (where, prefix)))
                continue
            imported.append(name)
    for name, error in failed:
        sys.stderr.write("FAILED to import %s on Python %s:\n%s" % (name, sys.version.split()[0], error))
    print("   Python %s: imported %d node modules%s" % (
        sys.version.split()[0], len(imported), ", %d failed" % len(failed) if failed else ""))
    return 1 if failed or not imported else 0


if __name__ == "__main__":
    sys.exit(main())
