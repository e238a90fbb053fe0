# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The arithmetic of benchmarks/agent_slots.py (jobs/min, scaling, overhead) on made-up job documents; no processes."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "agent_slots.py"
_spec = importlib.util.spec_from_file_location("bench_agent_slots", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _doc(slot, started, render=1.0, pre=0.010, notice=0.002, post=0.008, accepted=100.0):
    submitted = started + pre
    comfy_done = submitted + render + notice
    return {"slot": slot, "timings": {"comfyui_execution_s": render},
            "marks": {"accepted": accepted, "started": started, "submitted": submitted, "comfy_done": comfy_done,
                      "finished": comfy_done + post}}


def test_overhead_is_the_slot_time_minus_comfyuis_own_run_time():
    f = bench.job_figures(_doc(0, 101.0, render=1.0, pre=0.010, notice=0.002, post=0.008))
    assert f["overhead"] == pytest.approx(0.020)
    assert (f["pre"], f["notice"], f["post"]) == pytest.approx((0.010, 0.002, 0.008))
    assert f["held"] == pytest.approx(1.020) and f["queued"] == pytest.approx(1.0)


def test_jobs_per_minute_scaling_and_dispatch_gaps():
    t0 = 100.0
    # one slot: 4 jobs back to back, 0.03 s between the end of one and the start of the next
    one, start = [], t0
    for _ in range(4):
        one.append(_doc(0, start))
        start = one[-1]["marks"]["finished"] + 0.03
    # two slots: the same per slot, both at once
    two = []
    for slot in (0, 1):
        start = t0
        for _ in range(4):
            two.append(_doc(slot, start))
            start = two[-1]["marks"]["finished"] + 0.03
    runs = bench.add_scaling([bench.summarise(one, t0, 1), bench.summarise(two, t0, 2)])
    r1, r2 = runs
    assert r1["makespan_s"] == pytest.approx(4 * 1.02 + 3 * 0.03)
    assert r1["jobs_per_min"] == pytest.approx(4 / r1["makespan_s"] * 60)
    assert r2["jobs_per_min"] == pytest.approx(2 * r1["jobs_per_min"]) and r2["scaling"] == pytest.approx(1.0)
    assert r1["ideal_jobs_per_min"] == pytest.approx(60) and r2["ideal_jobs_per_min"] == pytest.approx(120)
    assert r2["jobs_per_slot"] == [4, 4] and r2["dispatch_gap_median_s"] == pytest.approx(0.03)
    assert r2["overhead"]["median_s"] == pytest.approx(0.020) and r2["overhead"]["p95_s"] == pytest.approx(0.020)
    assert r1["slot_busy_share"] == pytest.approx(4 * 1.02 / r1["makespan_s"])
    assert "| 2 | 8 |" in bench.tables(runs)


def test_percentile_interpolates():
    assert bench.pct([1, 2, 3, 4, 5], 0.5) == 3 and bench.pct([0, 10], 0.95) == pytest.approx(9.5)
