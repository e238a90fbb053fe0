#!/usr/bin/env python3
# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Maintainer tool for roles/comfyui/vars/releases/<version>.yml (the pinned package set of a ComfyUI release).

  python3 rig/comfyui_pins.py resolve REQUIREMENTS --exclude-newer 2025-10-15 > resolved.txt
      universal resolution (Python 3.10-3.12, Linux) of a ComfyUI release's requirements.txt with uv, as PyPI
      stood on that date; torch, its CUDA libraries and Windows-only packages are left out (torch is pinned per
      wheel index in the release file). Paste the lines under `constraints:`.
  python3 rig/comfyui_pins.py check roles/comfyui/vars/releases/v0.3.64.yml REQUIREMENTS
      resolves REQUIREMENTS + the release's extra requirements against PyPI under the shipped constraints and
      the cpu torch pins, for Python 3.10, 3.11 and 3.12: exit 0 when pip would find a solution on each.

Needs `uv` (pip install uv) and PyPI; never run by the tests (they reach nothing but 127.0.0.1).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import yaml

LEFT_OUT = ("nvidia-", "torch==", "torchvision==", "torchaudio==", "triton==", "colorama==", "setuptools==")
PYTHONS = ("3.10", "3.11", "3.12")


def _uv():
    uv = shutil.which("uv")
    if not uv:
        sys.exit("comfyui_pins: uv is missing (pip install uv)")
    return uv


def resolve(args):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.txt")
        subprocess.run([_uv(), "pip", "compile", "--quiet", "--universal", "--python-version", PYTHONS[0],
                        "--exclude-newer", args.exclude_newer, "--no-header", "--no-annotate", args.requirements,
                        "-o", out], check=True)
        for line in open(out, encoding="utf-8"):
            line = line.strip()
            if line and not line.startswith(LEFT_OUT):
                print(line)


def check(args):
    release = yaml.safe_load(open(args.release, encoding="utf-8"))["_comfyui_release"]
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        constraints = os.path.join(tmp, "constraints.txt")
        with open(constraints, "w", encoding="utf-8") as fh:
            fh.write("\n".join(release["constraints"] + release["torch"]["cpu"]) + "\n")
        requirements = os.path.join(tmp, "requirements.txt")
        with open(requirements, "w", encoding="utf-8") as fh:
            fh.write(open(args.requirements, encoding="utf-8").read() + "\n" + "\n".join(release["requirements"]))
        for python in PYTHONS:
            proc = subprocess.run([_uv(), "pip", "compile", "--quiet", "--python-version", python,
                                   "--python-platform", "x86_64-manylinux_2_28", "--no-header", requirements,
                                   "-c", constraints, "-o", os.path.join(tmp, "out.txt")],
                                  capture_output=True, text=True)
            print("Python %s: %s" % (python, "resolves" if proc.returncode == 0 else "FAILS\n" + proc.stderr))
            failed = failed or proc.returncode != 0
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("resolve")
    r.add_argument("requirements")
    r.add_argument("--exclude-newer", required=True, help="YYYY-MM-DD: PyPI as it stood that day")
    c = sub.add_parser("check")
    c.add_argument("release")
    c.add_argument("requirements")
    args = parser.parse_args()
    if args.cmd == "resolve":
        resolve(args)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
