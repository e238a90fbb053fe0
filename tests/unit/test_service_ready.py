# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""service_ready: one wall-clock deadline, early stop when the unit gave up, a message that says why.

The wait used to be `uri` + `until` + `retries: timeout/2` + `delay: 2`: with ~2.9 s per try over the
connection, `comfyui_wait_timeout: 120` lasted 177 s and ended with "Connection refused" only (issue 12 item 12).
These tests drive the pure code with a fake clock and probe; test_service_ready_module runs the module for real.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from visionsuit_gpuworker.service import ready


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def refusing_probe(clock, cost):
    def probe(url, timeout, validate_certs):
        clock.now += min(cost, timeout)
        raise OSError("Connection refused")

    return probe


def test_wait_honours_its_timeout_however_long_a_try_takes():
    clock = FakeClock()
    result = ready.wait_ready("http://127.0.0.1:8188/system_stats", 120, interval=2, request_timeout=5,
                              probe=refusing_probe(clock, 2.9), clock=clock, sleep=clock.sleep)
    assert result["ready"] is False
    assert result["elapsed"] <= 120, result
    assert result["elapsed"] > 115, result  # it used the time it was given
    assert result["last_error"] == "Connection refused"


def test_one_try_never_outlives_the_deadline():
    clock = FakeClock()
    seen = []

    def probe(url, timeout, validate_certs):
        seen.append(timeout)
        clock.now += timeout
        raise OSError("timed out")

    result = ready.wait_ready("http://x/", 12, interval=1, request_timeout=5, probe=probe, clock=clock,
                              sleep=clock.sleep)
    assert result["elapsed"] <= 12 + 0.1
    assert seen[0] == 5 and seen[-1] < 5  # the last try got only the time left


def test_ready_when_the_answer_comes():
    clock = FakeClock()
    answers = iter([OSError("Connection refused"), (503, b"{}"), (200, b'{"status": "starting"}'),
                    (200, b'{"status": "ok", "busy": false}')])

    def probe(url, timeout, validate_certs):
        clock.now += 0.01
        item = next(answers)
        if isinstance(item, Exception):
            raise item
        return item

    result = ready.wait_ready("http://x/healthz", 30, expect_json={"status": "ok"}, probe=probe, clock=clock,
                              sleep=clock.sleep)
    assert result["ready"] is True and result["attempts"] == 4
    assert result["json"] == {"status": "ok", "busy": False}


def test_a_unit_that_gave_up_ends_the_wait_early():
    clock = FakeClock()
    states = iter([{"ActiveState": "activating", "SubState": "auto-restart"},
                   {"ActiveState": "failed", "Result": "start-limit-hit"}])
    result = ready.wait_ready("http://x/", 120, interval=1, probe=refusing_probe(clock, 0.01),
                              gave_up=lambda: ready.unit_gave_up(next(states)), clock=clock, sleep=clock.sleep)
    assert result["ready"] is False and result["attempts"] == 2
    assert result["elapsed"] < 5


@pytest.mark.parametrize("state, gave_up", [
    ({"LoadState": "loaded", "ActiveState": "activating", "SubState": "auto-restart"}, False),
    ({"LoadState": "loaded", "ActiveState": "active", "SubState": "running"}, False),
    ({"LoadState": "loaded", "ActiveState": "failed", "Result": "start-limit-hit"}, True),
    ({"LoadState": "loaded", "ActiveState": "inactive", "SubState": "dead"}, True),
    ({"LoadState": "not-found", "ActiveState": "inactive"}, True),
    ({}, False),
])
def test_unit_gave_up(state, gave_up):
    assert ready.unit_gave_up(state) is gave_up


def test_the_message_names_the_unit_state_and_the_journal():
    show = ("LoadState=loaded\nActiveState=failed\nSubState=failed\nResult=start-limit-hit\nNRestarts=5\n")
    journal = ready.journal_lines(
        "Traceback (most recent call last):\n  File \"/opt/comfyui/main.py\", line 11, in <module>\n\n"
        "ModuleNotFoundError: No module named 'requests'\n" + "x" * 1000 + "\n", keep=3)
    assert journal[1] == "ModuleNotFoundError: No module named 'requests'"
    assert journal[2].endswith("...") and len(journal[2]) == ready.JOURNAL_LINE_MAX + 3
    result = {"ready": False, "attempts": 9, "elapsed": 31.5, "status": None, "json": None,
              "last_error": "Connection refused"}
    msg = ready.explain("http://127.0.0.1:8188/system_stats", result, 120, "comfyui.service",
                        ready.parse_unit_show(show), journal)
    assert "within 120 s (9 tries, last: Connection refused)" in msg
    assert "comfyui.service: failed (start-limit-hit), 5 restarts" in msg
    assert "stopped waiting after 31.5 s" in msg
    assert "No module named 'requests'" in msg


def test_the_message_without_journal_says_where_to_look():
    result = {"ready": False, "attempts": 1, "elapsed": 0.2, "status": 500, "json": None, "last_error": "HTTP 500"}
    msg = ready.explain("http://x/", result, 10, "a.service", {"LoadState": "not-found"}, [])
    assert "a.service: no such unit" in msg and "See journalctl -u a.service" in msg
    assert "1 try" in msg


class _Handler(BaseHTTPRequestHandler):
    calls = 0
    ready_after = 2

    def do_GET(self):  # noqa: N802
        type(self).calls += 1
        if type(self).calls <= self.ready_after:
            self.send_response(503)
            self.end_headers()
            return
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_probe_http_against_a_real_server_on_loopback():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = "http://127.0.0.1:%d/healthz" % server.server_address[1]
        result = ready.wait_ready(url, 30, interval=0.05, expect_json={"status": "ok"})
        assert result["ready"] is True and result["attempts"] == 3 and result["status"] == 200
    finally:
        server.shutdown()
        server.server_close()
    # nothing listens there any more: refused, reported as the last error
    result = ready.wait_ready(url, 0.3, interval=0.1)
    assert result["ready"] is False and result["status"] is None and result["last_error"]
