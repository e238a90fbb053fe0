# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The recorded hosts of tests/fixtures/gpu as detections, through the gpu_facts module's own probe sequence.

Shared by tests/unit/test_gpu_detect.py, tests/unit/test_gpu_plan.py and tests/integration/test_gpu_driver_role.py.
"""
from __future__ import annotations

from pathlib import Path

from ansible_collections.visionsuit.gpuworker.plugins.modules import gpu_facts

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gpu"
#: the running kernel the recorded hosts are planned for (linux-headers-<kernel>)
KERNEL = "6.8.0-45-generic"
TOOL_FILES = {"lspci": "lspci.txt", "nvidia-smi": "nvidia-smi.txt", "rocminfo": "rocminfo.txt",
              "mokutil": "mokutil.txt", "ubuntu-drivers": "ubuntu-drivers.txt", "dpkg-query": "dpkg.txt"}
#: nvidia-smi's numbering query (gpu_facts.NVIDIA_INDEX_QUERY) has its own recording
INDEX_FILE = "nvidia-smi-index.txt"


def fixture_file(case, tool, args):
    """The recorded output of ``tool args`` on host ``case`` (it may not exist)."""
    if tool == "nvidia-smi" and args and args[0] == gpu_facts.NVIDIA_INDEX_QUERY:
        return FIXTURES / case / INDEX_FILE
    return FIXTURES / case / TOOL_FILES[tool]


def fixture_runner(case, calls=None, absent=()):
    """A stand-in for AnsibleModule.run_command: a tool exists when its recorded output exists (and is not absent)."""
    def run(tool, args):
        if calls is not None:
            calls.append((tool, list(args)))
        path = fixture_file(case, tool, args)
        if not path.exists() or tool in absent:
            return None
        return 0, path.read_text()
    return run


def detect_case(case, reboot_required_path="/nonexistent/reboot-required", absent=()):
    """The gpu_facts result of a recorded host; ``absent`` names tools to treat as not installed."""
    return gpu_facts.gather(str(FIXTURES / case / "sys"), fixture_runner(case, absent=absent), reboot_required_path)
