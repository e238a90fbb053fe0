# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one version: the collection's (galaxy.yml), carried by pyproject.toml (tests/unit/test_packaging.py keeps
them equal) into the installed distribution's metadata, which is what :func:`package_version` reads. Run from a
source tree without metadata, it reads the ``[project]`` version of the tree's pyproject.toml instead."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

DISTRIBUTION = "visionsuit-gpuworker"
UNKNOWN = "0+unknown"


def pyproject_version(path):
    """The ``version`` of the ``[project]`` table of the pyproject.toml at ``path``; None when unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (IOError, OSError, UnicodeDecodeError):
        return None
    table = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            table = stripped
            continue
        match = re.match(r"""version\s*=\s*["']([^"']+)["']\s*(#.*)?$""", stripped)
        if table == "[project]" and match:
            return match.group(1)
    return None


def package_version(distribution=DISTRIBUTION, source_tree=None):
    """The installed version of ``distribution`` (importlib.metadata); from a source tree without metadata the
    version in ``source_tree``/pyproject.toml (default: the collection root above plugins/module_utils)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8 is not a node Python
        PackageNotFoundError, version = None, None
    if version is not None:
        try:
            return version(distribution)
        except PackageNotFoundError:
            pass
    if source_tree is None:
        source_tree = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)
    return pyproject_version(os.path.join(source_tree, "pyproject.toml")) or UNKNOWN
