# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The node commands' output pieces that need no server (issue 14 item 8): the terminal progress bar's rate and
ETA, the --bwlimit value parser and the token bucket behind it (fake clocks: nothing here depends on timing)."""
from __future__ import annotations

import argparse
import io
import threading

import pytest

from visionsuit_gpuworker.cli.common import parse_rate
from visionsuit_gpuworker.cli.node import ProgressBar
from visionsuit_gpuworker.errors import error_class
from visionsuit_gpuworker.s3.transfer import RateLimiter

MiB = 1024 * 1024


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.lock = threading.Lock()

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        with self.lock:
            self.now += seconds


def _last_frame(stream):
    return stream.getvalue().split("\r")[-1]


def test_progress_bar_shows_bytes_rate_over_a_sliding_window_and_eta():
    clock, out = FakeClock(), io.StringIO()
    bar = ProgressBar("checkpoints", stream=out, clock=clock)
    bar(0, 20 * MiB, "a.safetensors")
    assert "ETA --:--" in _last_frame(out)  # no rate yet
    for second in range(1, 7):  # 1 MiB/s for 6 s
        clock.now += 1
        bar(second * MiB, 20 * MiB, "a.safetensors")
    frame = _last_frame(out)
    assert "6.0 MiB/20.0 MiB" in frame and "1.0 MiB/s" in frame and "ETA 0:14" in frame
    clock.now += 1
    bar(16 * MiB, 20 * MiB, "b.safetensors")  # 10 MiB in the last second
    frame = _last_frame(out)
    # the rate covers the last 5 s only (2 MiB at t+2 -> 16 MiB at t+7), not the run's average (16/7)
    assert "2.8 MiB/s" in frame and "ETA 0:01" in frame and "b.safetensors" in frame
    bar.close()
    assert out.getvalue().endswith("\n")


def test_progress_bar_log_lines_go_above_the_bar():
    out = io.StringIO()
    bar = ProgressBar("loras", stream=out, clock=FakeClock())
    bar(1, 2, "x")
    bar.log("loras: downloaded x")
    assert out.getvalue().endswith("\r\x1b[Kloras: downloaded x\n")


@pytest.mark.parametrize(("text", "rate"), [("10M", 10 * MiB), ("512K", 512 * 1024), ("0", 0), ("off", 0),
                                            ("1.5G", 1536 * MiB), ("2M/s", 2 * MiB), ("4MiB/s", 4 * MiB),
                                            ("65536", 65536)])
def test_bwlimit_values(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "-1M", "10Q", "1", "0.5K", ""])
def test_bad_bwlimit_values_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_rate(text)


def test_rate_limiter_holds_all_workers_together_to_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(MiB, clock=clock, sleep=clock.sleep)
    start = clock.now
    threads = [threading.Thread(target=lambda: [limiter.consume(64 * 1024) for _ in range(16)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 4 MiB at 1 MiB/s, less the burst (a quarter of a second): the sleeps add up to at least 3.75 s
    assert clock.now - start >= 3.75 - 1e-6


def test_rate_limiter_zero_is_no_limit_and_a_cancelled_run_stops_waiting():
    clock = FakeClock()
    RateLimiter(0, clock=clock, sleep=clock.sleep).consume(100 * MiB)
    assert clock.now == 100.0
    limiter = RateLimiter(1024 * 1024, clock=clock, sleep=clock.sleep)
    from visionsuit_gpuworker.s3.client import Cancelled
    with pytest.raises(Cancelled):
        limiter.consume(50 * MiB, cancelled=lambda: clock.now > 101)
    assert clock.now < 102


def test_error_classes():
    assert [error_class(c) for c in (0, 1, 2, 3, 4, 6, 7, 130)] == [
        None, "fatal", "fatal", "fatal", "retryable", "retryable", "fatal", "retryable"]
