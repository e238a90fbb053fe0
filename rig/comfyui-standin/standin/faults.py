# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fault injection: settable from the command line, the environment and POST /standin/control.

``fail_message`` (run time only, POST /standin/control; shown in the state while set) is the text of the error
``fail_node`` raises instead of the stand-in's own one-line message, e.g. torch's multi-line "Weights only load
failed..." to test how clients show long ComfyUI errors.
"""
from __future__ import annotations

import threading

FIELDS = ("fail_node", "delay", "drop_ws_after", "html_responses", "crash", "history_lag", "history_lag_share",
          "previews")
ENV = {name: "COMFYUI_STANDIN_" + name.upper() for name in FIELDS}
RUNTIME_FIELDS = ("fail_message",)  # settable through POST /standin/control only


def _target(value):
    """A node id / class_type, True (any node: true/"any"/"*") or None (off: null/false/""/"off")."""
    if value is None or value is False or value == "":
        return None
    if value is True:
        return True
    text = str(value)
    if text.lower() in ("true", "yes", "any", "*"):
        return True
    if text.lower() in ("false", "no", "off", "none"):
        return None
    return text


def _flag(value, name):
    if value is None or value is False or value == "":
        return False
    if value is True:
        return True
    text = str(value).lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "none", "0"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _number(value, kind, name):
    if value is None or value == "":
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if number < 0:
        raise ValueError(f"{name} must not be negative")
    return number


class Faults:
    """Current fault settings; every read and update holds the lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.fail_node = None       # node id / class_type (True: any node) whose execution raises an error
        self.delay = 0.0            # seconds each executed node takes (KSampler: spread over its steps)
        self.drop_ws_after = None   # cut websocket connections after N messages of each prompt run
        self.html_responses = 0     # the next N /queue and /history responses are 502 text/html
        self.crash = None           # node id / class_type (True: any node): the process exits(1) there
        self.fail_message = None    # text of the fail_node error (None: the stand-in's own message)
        self.history_lag = 0.0      # seconds between execution_success and the history entry (0: none)
        self.history_lag_share = 1.0  # share (0..1) of runs that get the history_lag
        self.previews = False       # binary preview frames during sampling (ComfyUI: --preview-method auto)

    def update(self, values: dict):
        """Apply a partial update; ``{"reset": true}`` clears everything first. Raises ValueError."""
        unknown = set(values) - set(FIELDS) - set(RUNTIME_FIELDS) - {"reset"}
        if unknown:
            raise ValueError("unknown fault option(s): {}".format(", ".join(sorted(unknown))))
        parsed = {}
        if "fail_node" in values:
            parsed["fail_node"] = _target(values["fail_node"])
        if "crash" in values:
            parsed["crash"] = _target(values["crash"])
        if "delay" in values:
            parsed["delay"] = _number(values["delay"], float, "delay") or 0.0
        if "drop_ws_after" in values:
            parsed["drop_ws_after"] = _number(values["drop_ws_after"], int, "drop_ws_after")
        if "html_responses" in values:
            parsed["html_responses"] = _number(values["html_responses"], int, "html_responses") or 0
        if "history_lag" in values:
            parsed["history_lag"] = _number(values["history_lag"], float, "history_lag") or 0.0
        if "history_lag_share" in values:
            share = _number(values["history_lag_share"], float, "history_lag_share")
            if share is not None and share > 1:
                raise ValueError("history_lag_share must be between 0 and 1")
            parsed["history_lag_share"] = 1.0 if share is None else share
        if "previews" in values:
            parsed["previews"] = _flag(values["previews"], "previews")
        if "fail_message" in values:
            if values["fail_message"] not in (None, False) and not isinstance(values["fail_message"], str):
                raise ValueError("fail_message must be a string or null")
            parsed["fail_message"] = values["fail_message"] or None
        with self.lock:
            if values.get("reset"):
                self.fail_node, self.delay, self.drop_ws_after, self.html_responses, self.crash = (
                    None, 0.0, None, 0, None)
                self.fail_message = None
                self.history_lag, self.history_lag_share, self.previews = 0.0, 1.0, False
            for key, value in parsed.items():
                setattr(self, key, value)

    def snapshot(self) -> dict:
        with self.lock:
            state = {name: getattr(self, name) for name in FIELDS}
            if self.fail_message is not None:
                state["fail_message"] = self.fail_message
            return state

    def take_html_response(self) -> bool:
        with self.lock:
            if self.html_responses > 0:
                self.html_responses -= 1
                return True
            return False

    @staticmethod
    def matches(target, node_id, class_type) -> bool:
        return target is True or (target is not None and target in (node_id, class_type))
