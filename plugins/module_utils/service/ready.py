# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Wait until a service answers over HTTP, within a wall-clock deadline; when it does not, say why.

The roles start ComfyUI and the agent, then wait for ``/system_stats`` / ``/healthz``. A retry loop in YAML
("60 tries, 2 s apart") does not honour its timeout (each try costs a task round trip) and ends with the last
"Connection refused", which says nothing about *why*. :func:`wait_ready` keeps one monotonic deadline, stops
early when the unit has given up (failed, inactive, start limit hit), and :func:`explain` turns the unit's state
and the tail of its journal into the message the operator reads (e.g. ComfyUI's ``ModuleNotFoundError``).

Pure where it matters: the probe, the unit reader, the clock and sleep are parameters, so tests need no
sockets and no systemd.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import ssl
import time

try:  # Python 3 (every node); the guard keeps ansible-test's compile check for old interpreters quiet
    import http.client as http_client
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover
    http_client = urlsplit = None

#: unit states in which waiting longer cannot help: the service is not (re)starting any more
GAVE_UP_STATES = ("failed", "inactive")
#: most characters of one journal line kept in the message (a traceback line can be very long)
JOURNAL_LINE_MAX = 300


def probe_http(url, timeout, validate_certs=True):
    """One GET of ``url``: ``(status, body_bytes)``; an HTTP error status is an answer too. Raises OSError
    (connection refused, timeout, TLS failure) when nothing answered."""
    parts = urlsplit(url)
    path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    if parts.scheme == "https":
        context = ssl.create_default_context()
        if not validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        conn = http_client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout, context=context)
    else:
        conn = http_client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json", "User-Agent": "visionsuit-service-ready"})
        response = conn.getresponse()
        return response.status, response.read(65536)
    except http_client.HTTPException as err:
        raise OSError("bad HTTP answer: %s" % (err.__class__.__name__,))
    except OSError as err:
        raise OSError(err.strerror or str(err) or err.__class__.__name__)
    finally:
        conn.close()


def _json_or_none(body):
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None


def json_mismatch(document, expect):
    """'' when every key of ``expect`` has that value in ``document`` (top level), else what differs."""
    if not expect:
        return ""
    if not isinstance(document, dict):
        return "answer is not a JSON object"
    for key in sorted(expect):
        if document.get(key) != expect[key]:
            return "%s is %s, expected %s" % (key, json.dumps(document.get(key)), json.dumps(expect[key]))
    return ""


def wait_ready(url, timeout, interval=1.0, request_timeout=5.0, status_code=200, expect_json=None,
               validate_certs=True, probe=probe_http, gave_up=None, clock=time.monotonic, sleep=time.sleep):
    """Probe ``url`` until it answers ``status_code`` (and ``expect_json``) or ``timeout`` seconds pass.

    ``gave_up()``, when given, is asked after each failed try; a true answer (the unit is failed or inactive)
    ends the wait early. Returns a dict: ``ready``, ``attempts``, ``elapsed`` (s), ``status``, ``json`` (the
    parsed answer or None) and ``last_error`` ('' when ready).
    """
    start = clock()
    deadline = start + max(0.0, float(timeout))
    attempts = 0
    status = None
    document = None
    last_error = "no try made"
    while True:
        attempts += 1
        remaining = deadline - clock()
        try:
            status, body = probe(url, max(0.1, min(float(request_timeout), remaining)), validate_certs)
            document = _json_or_none(body)
            mismatch = json_mismatch(document, expect_json) if status == status_code else ""
            if status == status_code and not mismatch:
                return {"ready": True, "attempts": attempts, "elapsed": round(clock() - start, 2),
                        "status": status, "json": document, "last_error": ""}
            last_error = mismatch or "HTTP %s" % status
        except OSError as err:
            last_error = str(err) or err.__class__.__name__
        if gave_up is not None and gave_up():
            break
        if clock() + interval > deadline:
            break
        sleep(interval)
    return {"ready": False, "attempts": attempts, "elapsed": round(clock() - start, 2), "status": status,
            "json": document, "last_error": last_error}


def parse_unit_show(text):
    """``systemctl show -p A -p B UNIT`` output -> {A: value, ...}."""
    out = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def unit_gave_up(state):
    """True when the unit is not (re)starting any more: failed, inactive, or not loaded at all."""
    if not state:
        return False
    if state.get("LoadState") == "not-found":
        return True
    return state.get("ActiveState") in GAVE_UP_STATES


def describe_unit(unit, state):
    """'comfyui.service: failed (start-limit-hit), 5 restarts' from a :func:`parse_unit_show` dict."""
    if not state:
        return "%s: state unknown" % unit
    if state.get("LoadState") == "not-found":
        return "%s: no such unit" % unit
    text = "%s: %s" % (unit, state.get("ActiveState", "?"))
    sub = state.get("SubState")
    result = state.get("Result")
    detail = [part for part in (sub if sub and sub != state.get("ActiveState") else "",
                                result if result and result != "success" else "") if part]
    if detail:
        text += " (%s)" % ", ".join(detail)
    restarts = state.get("NRestarts")
    if restarts not in (None, "", "0"):
        text += ", %s restart%s" % (restarts, "" if restarts == "1" else "s")
    return text


def journal_lines(text, keep):
    """The last ``keep`` non-empty lines of ``journalctl -o cat`` output, each cut to JOURNAL_LINE_MAX."""
    lines = [line.rstrip() for line in (text or "").splitlines() if line.strip()]
    lines = lines[-keep:] if keep > 0 else []
    return [line if len(line) <= JOURNAL_LINE_MAX else line[:JOURNAL_LINE_MAX] + "..." for line in lines]


def explain(url, result, timeout, unit=None, state=None, journal=None):
    """The one message for a wait that failed: what did not answer, how long, the unit's state, its journal."""
    msg = "%s did not answer as expected within %s s (%d tr%s, last: %s)" % (
        url, timeout, result["attempts"], "y" if result["attempts"] == 1 else "ies", result["last_error"])
    if unit:
        msg += "; " + describe_unit(unit, state)
        if unit_gave_up(state) and result["elapsed"] < float(timeout):
            msg += " - stopped waiting after %s s: the unit is not starting any more" % result["elapsed"]
        if journal:
            msg += ". Last journal lines (journalctl -u %s):\n  %s" % (unit, "\n  ".join(journal))
        else:
            msg += ". See journalctl -u %s" % unit
    return msg
