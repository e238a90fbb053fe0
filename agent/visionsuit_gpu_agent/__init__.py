# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""VisionSuit GPU agent: takes render jobs over HTTP and runs them through ComfyUI with assets from MinIO.

Standard library only (PyYAML is used for the config file when it is importable; JSON is accepted either
way). The S3 sync engine and the ComfyUI client come from the library package ``visionsuit_gpuworker``
(distribution ``visionsuit-gpuworker``), a dependency of this one.
"""
import os as _os

from visionsuit_gpuworker.version import package_version as _package_version

# The installed distribution's version (importlib.metadata) -- the collection's, like the library's; run from a
# source tree without metadata, the version in agent/pyproject.toml. --version, /healthz and the User-Agent use it.
__version__ = _package_version("visionsuit-gpu-agent",
                               source_tree=_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), _os.pardir))
