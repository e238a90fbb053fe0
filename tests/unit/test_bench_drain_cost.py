# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pure parts of benchmarks/drain_cost.py: the playbooks it times and the figure it derives; no processes."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "drain_cost.py"
_spec = importlib.util.spec_from_file_location("bench_drain_cost", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _modules(play):
    return [next(k for k in t if "." in k) for t in play[0]["tasks"]]


def test_the_drain_playbook_is_the_plain_one_with_a_drain_before_and_a_resume_after_each_restart():
    plain = bench.playbook(2, 8081, "t", 0, drain=False)
    drained = bench.playbook(2, 8081, "t", 0, drain=True)
    assert _modules(plain) == ["ansible.builtin.command"] * 2
    assert _modules(drained) == ["visionsuit.gpuworker.agent_drain", "ansible.builtin.command",
                                 "visionsuit.gpuworker.agent_drain"] * 2
    drain, _, resume = drained[0]["tasks"][:3]
    assert drain["visionsuit.gpuworker.agent_drain"] == {"url": "http://127.0.0.1:8081", "token": "t", "slot": 0,
                                                         "state": "drained", "timeout": 600}
    assert resume["visionsuit.gpuworker.agent_drain"]["state"] == "resumed"
    # the whole agent: no slot
    whole = bench.playbook(1, 8081, "t", None, drain=True)[0]["tasks"][0]
    assert "slot" not in whole["visionsuit.gpuworker.agent_drain"]
    assert drained[0]["connection"] == "local" and drained[0]["gather_facts"] is False


def test_extra_per_restart_is_the_median_round_difference_over_the_restarts():
    median, rounds = bench.extra_per_restart([10.0, 11.0, 10.0], [15.0, 13.0, 20.0], 10)
    assert rounds == pytest.approx([0.5, 0.2, 1.0])
    assert median == pytest.approx(0.5)


def test_table_has_one_row_per_figure():
    rows = [{"sequence": "agent (whole)", "what": "raw HTTP", "median_ms": 5.2, "per_round_ms": [5.0, 9.0]}]
    lines = bench.table(rows).splitlines()
    assert len(lines) == 3 and lines[2] == "| agent (whole) | raw HTTP | 5 ms | 5, 9 ms |"
