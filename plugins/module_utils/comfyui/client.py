# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ComfyUI HTTP client (``POST /prompt``, ``/history/<id>``, ``/object_info``, ``/ws?clientId=``) and the
submit-and-wait helpers built on it.

Stdlib only, so the same code serves the ``comfyui_workflow`` module, the ``test-run-workflow`` node command and
the GPU agent. Shapes follow ComfyUI 0.3.x. The rest of the client is split by concern: :mod:`.errors` (the
typed errors and exit codes), :mod:`.workflow` (loading, overrides, pre-check, history parsing),
:mod:`.websocket` (the progress socket).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import http.client as http_client
import json
import ssl
import time
import uuid
from urllib.parse import quote, urlencode, urlsplit

from .errors import (
    EXIT_VALIDATION,
    ComfyConnectionError,
    ComfyError,
    WorkflowExecutionError,
    WorkflowInputError,
    WorkflowTimeoutError,
    WorkflowValidationError,
)
from .websocket import WebSocket, WebSocketClosed
from .workflow import result_from_history, validate_against_object_info

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8188


def base_url_from(url=None, host=None, port=None):
    """``url`` if given, else ``http://host:port`` (defaults 127.0.0.1:8188)."""
    if url:
        if "://" not in url:
            url = "http://" + url
        return url.rstrip("/")
    host = host or DEFAULT_HOST
    if ":" in host and not host.startswith("["):
        host = "[%s]" % host
    return "http://%s:%d" % (host, int(port or DEFAULT_PORT))


class _NotJson(Exception):
    """An answer that is not the JSON we expected (HTML error page from a proxy, truncated body...)."""


class ComfyClient:
    """Client of one ComfyUI server.

    :param base_url: ``http://host:port`` (a path prefix such as ``/comfy`` behind a proxy is kept).
    :param timeout: seconds for each HTTP request and the websocket handshake.
    :param client_id: the websocket/queue client id (a random one by default); ComfyUI only sends the
        progress messages of a run to the client id that submitted it.
    """

    def __init__(self, base_url, timeout=30.0, client_id=None, ssl_context=None):
        self.base_url = base_url_from(base_url)
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https"):
            raise WorkflowInputError("ComfyUI URL %r: scheme must be http or https" % base_url)
        self.secure = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.secure else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = float(timeout)
        self.client_id = client_id or str(uuid.uuid4())
        self.ssl_context = ssl_context
        self.last_node_errors = {}

    # -- transport --------------------------------------------------------------------------------
    def _request(self, method, path, body=None, headers=None):
        """Return ``(status, content_type, bytes)``; ComfyConnectionError when the server cannot be reached."""
        if self.secure:
            conn = http_client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=self.ssl_context or ssl.create_default_context())
        else:
            conn = http_client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        hdrs = {"Accept": "application/json"}
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        try:
            conn.request(method, self.prefix + path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheader("Content-Type") or "", data
        except (OSError, http_client.HTTPException) as err:
            raise ComfyConnectionError(
                "cannot reach ComfyUI at %s (%s: %s)" % (self.base_url, type(err).__name__, err),
                hint="is the comfyui service running and listening on that address?") from err
        finally:
            conn.close()

    def _get_json(self, path):
        status, ctype, data = self._request("GET", path)
        if status != 200:
            raise _NotJson("GET %s answered HTTP %d" % (path, status))
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError:
            raise _NotJson("GET %s answered HTTP 200 with %s that is not JSON" % (path, ctype or "a body")) from None

    def _get(self, path):
        """GET a JSON document; a non-JSON answer means we are not talking to (a healthy) ComfyUI."""
        try:
            return self._get_json(path)
        except _NotJson as err:
            raise ComfyConnectionError("ComfyUI at %s: %s" % (self.base_url, err),
                                       hint="is this address ComfyUI (not a proxy error page)?") from err

    # -- API ----------------------------------------------------------------------------------------
    def system_stats(self):
        return self._get("/system_stats")

    def object_info(self, node=None):
        """All node definitions, or ``{name: definition}`` for one class ({} when it is unknown)."""
        return self._get("/object_info" + ("/" + quote(node, safe="") if node else ""))

    def queue(self):
        return self._get("/queue")

    def history(self, prompt_id):
        """The history entry of ``prompt_id``, or None while it is not finished (unknown ids too)."""
        data = self._get("/history/" + quote(str(prompt_id), safe=""))
        if not isinstance(data, dict):
            return None
        return data.get(prompt_id)

    def view(self, filename, subfolder="", type="output"):  # noqa: A002 - ComfyUI's parameter name
        query = urlencode({"filename": filename, "subfolder": subfolder or "", "type": type or "output"})
        status, _ctype, data = self._request("GET", "/view?" + query, headers={"Accept": "*/*"})
        if status == 404:
            raise ComfyError("ComfyUI has no %s file %r in %r" % (type, filename, subfolder or "/"))
        if status != 200:
            raise ComfyConnectionError("GET /view for %r answered HTTP %d" % (filename, status))
        return data

    def interrupt(self, prompt_id=None):
        """``POST /interrupt``. With ``prompt_id``, ComfyUI (0.3.64) interrupts only when that prompt is the running
        one and skips it otherwise; without it the interrupt is global: it stops whatever runs, another client's
        prompt included. Prefer :meth:`cancel` to stop one prompt of ours."""
        body = json.dumps({"prompt_id": prompt_id}).encode("utf-8") if prompt_id else b""
        status, _ctype, _data = self._request("POST", "/interrupt", body=body)
        if status != 200:
            raise ComfyConnectionError("POST /interrupt answered HTTP %d" % status)

    def delete_from_queue(self, prompt_ids):
        """``POST /queue {"delete": [...]}``: remove pending prompts (a running one is not touched; unknown ids are
        ignored)."""
        prompt_ids = [str(p) for p in prompt_ids or ()]
        if not prompt_ids:
            return
        body = json.dumps({"delete": prompt_ids}).encode("utf-8")
        status, _ctype, _data = self._request("POST", "/queue", body=body)
        if status != 200:
            raise ComfyConnectionError("POST /queue (delete) answered HTTP %d" % status)

    def queue_state(self, prompt_id):
        """Where ``prompt_id`` is: ``running``, ``pending (N ahead)`` (N counts the running prompt too), ``absent``
        (finished, deleted or unknown), or None for an answer that is not ComfyUI's queue.

        Raises :class:`ComfyConnectionError` when ComfyUI cannot be reached.
        """
        data = self.queue()
        if not isinstance(data, dict):
            return None
        running = [i for i in data.get("queue_running") or [] if isinstance(i, list) and len(i) > 1]
        if any(item[1] == prompt_id for item in running):
            return "running"
        pending = [i for i in data.get("queue_pending") or [] if isinstance(i, list) and len(i) > 1]
        pending.sort(key=lambda i: i[0] if isinstance(i[0], (int, float)) else 0)
        for pos, item in enumerate(pending):
            if item[1] == prompt_id:
                return "pending (%d ahead)" % (len(running) + pos)
        return "absent"

    def cancel(self, prompt_id, wait=10.0, interval=0.25):
        """Make sure ``prompt_id`` does not run, or stops running, without touching any other prompt.

        Deletes it from the pending queue first (so it cannot start between the two calls), then sends a targeted
        interrupt (acting only if it runs), and waits up to ``wait`` seconds for it to leave the queue, repeating
        the targeted interrupt meanwhile (an interrupt takes effect between nodes, and one that lands just
        before a prompt starts is reset by ComfyUI). Never sends a global interrupt.

        Returns ``deleted`` (removed before it ran), ``interrupted``, ``finished`` (it ended on its own: success
        or error), ``gone`` (neither queued nor in the history: unknown, or ComfyUI restarted), or ``running`` /
        ``pending`` when it was still queued after ``wait`` seconds. Raises :class:`ComfyConnectionError` when
        ComfyUI cannot be reached.
        """
        deadline = time.time() + max(0.0, float(wait))
        before = self.queue_state(prompt_id)
        while True:
            self.delete_from_queue([prompt_id])
            self.interrupt(prompt_id)
            where = self.queue_state(prompt_id)
            if where == "absent":
                break
            if time.time() >= deadline:
                return "running" if where == "running" else "pending"
            time.sleep(max(0.01, min(float(interval), deadline - time.time())))
        result = result_from_history(prompt_id, self.history(prompt_id))
        if result is None:
            return "gone" if before == "absent" else "deleted"
        if result["status"] == "interrupted":
            return "interrupted"
        return "finished"

    def submit(self, workflow, client_id=None, extra_data=None, prompt_id=None):
        """Queue ``workflow`` (API format); return the prompt id.

        ``prompt_id``: the id to give the prompt (ComfyUI takes the one sent), so that a caller can record it
        before submitting; ComfyUI makes one up when it is not given.

        Raises :class:`WorkflowValidationError` when ComfyUI rejects it (400 with node_errors).
        """
        payload = {"prompt": workflow, "client_id": client_id or self.client_id}
        if prompt_id:
            payload["prompt_id"] = str(prompt_id)
        if extra_data:
            payload["extra_data"] = extra_data
        body = json.dumps(payload).encode("utf-8")
        status, ctype, data = self._request("POST", "/prompt", body=body)
        try:
            answer = json.loads(data.decode("utf-8")) if data else None
        except ValueError:
            answer = None
        if status == 200 and isinstance(answer, dict) and answer.get("prompt_id"):
            # node_errors in a 200 answer: accepted, but some outputs were dropped as invalid.
            self.last_node_errors = answer.get("node_errors") or {}
            return answer["prompt_id"]
        if status == 400 and isinstance(answer, dict) and ("error" in answer or "node_errors" in answer):
            error = answer.get("error")
            if isinstance(error, str):
                error = {"type": "error", "message": error}
            raise WorkflowValidationError(error, answer.get("node_errors") or {}, workflow)
        snippet = data[:200].decode("utf-8", "replace").strip().replace("\n", " ")
        if status == 500 and ctype.startswith("text/plain"):
            # ComfyUI's own answer when the /prompt handler raised (unreadable body, odd workflow).
            raise ComfyError("ComfyUI at %s failed to process the workflow (HTTP 500: %s)"
                             % (self.base_url, snippet or "empty body"), exit_code=EXIT_VALIDATION,
                             hint="see the ComfyUI log for the traceback")
        raise ComfyConnectionError(
            "ComfyUI at %s answered POST /prompt with HTTP %d (%s): %s"
            % (self.base_url, status, ctype or "no content type", snippet or "empty body"),
            hint="is this address ComfyUI, and is it healthy?")

    def ws_url(self):
        scheme = "wss" if self.secure else "ws"
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d%s/ws?clientId=%s" % (scheme, host, self.port, self.prefix, quote(self.client_id))

    def connect_ws(self):
        """Open the websocket for our client id (do it before submit so no message is missed)."""
        return WebSocket(self.ws_url(), timeout=self.timeout, ssl_context=self.ssl_context)

    # -- waiting ------------------------------------------------------------------------------------
    def _poll_once(self, prompt_id):
        """The finished result from /history, or None (not finished, or a transient/non-JSON answer)."""
        try:
            entry = self._get_json("/history/" + quote(str(prompt_id), safe=""))
        except _NotJson:
            return None
        if not isinstance(entry, dict):
            return None
        return result_from_history(prompt_id, entry.get(prompt_id))

    def _queue_state(self, prompt_id):
        """:meth:`queue_state`, or None when unknown (ComfyUI unreachable, an answer that is not JSON)."""
        try:
            return self.queue_state(prompt_id)
        except ComfyConnectionError:
            return None

    def wait(self, prompt_id, timeout=600.0, interval=1.0, on_progress=None, ws=None, use_websocket=True,
             unreachable_grace=60.0):
        """Follow a run until it ends; return the result dict.

        The websocket (``ws`` if one was opened before submitting, else a new one) gives the progress;
        ``/history`` is checked every ``interval`` seconds of websocket silence, and is the only source
        once the socket drops or cannot be opened. Non-JSON answers while polling are ignored.

        Result: ``prompt_id, status`` (success / error / interrupted), ``outputs`` (see
        :func:`.workflow.collect_outputs`), ``error`` (node_id, node_type, exception_type, exception_message,
        traceback) or None, ``timings`` (wait_s, execution_s), ``via`` (websocket / polling).

        Raises :class:`WorkflowTimeoutError` after ``timeout`` seconds, :class:`ComfyConnectionError`
        when ComfyUI stays unreachable for ``unreachable_grace`` seconds.
        """
        started = time.time()
        deadline = started + float(timeout)
        interval = max(0.05, float(interval))
        progress = on_progress or (lambda event: None)
        state = {"via": "polling", "unreachable_since": None, "absent": 0, "last": "queued", "timeout": timeout}

        if ws is None and use_websocket:
            try:
                ws = self.connect_ws()
            except (OSError, WebSocketClosed, ValueError):
                ws = None
        if ws is not None:
            state["via"] = "websocket"
        try:
            result = self._wait_loop(prompt_id, deadline, interval, progress, ws, state, unreachable_grace)
        finally:
            if ws is not None:
                ws.close()
        result["via"] = state["via"]
        result["timings"]["wait_s"] = round(time.time() - started, 3)
        return result

    def _check(self, prompt_id, state, grace):
        """One /history poll with the unreachable bookkeeping; the result or None."""
        try:
            result = self._poll_once(prompt_id)
        except ComfyConnectionError:
            now = time.time()
            if state["unreachable_since"] is None:
                state["unreachable_since"] = now
            elif now - state["unreachable_since"] > grace:
                raise
            return None
        state["unreachable_since"] = None
        return result

    def _wait_loop(self, prompt_id, deadline, interval, progress, ws, state, grace):
        polls = 0
        while True:
            result = self._check(prompt_id, state, grace)
            polls += 1
            if result is not None:
                return result
            if ws is None and polls % 5 == 0 and state["unreachable_since"] is None:
                # A prompt that is neither queued nor in the history twice in a row is lost
                # (queue cleared, ComfyUI restarted).
                qs = self._queue_state(prompt_id)
                if qs:
                    state["last"] = qs
                if qs == "absent":
                    result = self._check(prompt_id, state, grace)
                    if result is not None:
                        return result
                    state["absent"] += 1
                    if state["absent"] >= 2:
                        return {"prompt_id": prompt_id, "status": "error", "outputs": [], "timings": {},
                                "cached_nodes": [],
                                "error": {"node_id": None, "node_type": None, "exception_type": "lost",
                                          "exception_message": "the prompt is neither queued nor in the "
                                          "history (queue cleared or ComfyUI restarted?)"}}
                else:
                    state["absent"] = 0
            now = time.time()
            if now >= deadline:
                if state["unreachable_since"] is not None:
                    raise ComfyConnectionError(
                        "lost ComfyUI at %s while waiting for workflow %s (unreachable for %ds)"
                        % (self.base_url, prompt_id, now - state["unreachable_since"]),
                        details={"prompt_id": prompt_id})
                qs = self._queue_state(prompt_id) or state["last"]
                raise WorkflowTimeoutError(
                    "workflow %s did not finish within %gs (last known state: %s)"
                    % (prompt_id, state["timeout"], qs), details={"prompt_id": prompt_id, "state": qs})
            if ws is not None:
                ws = self._follow_ws(ws, prompt_id, min(deadline, now + interval), progress, state)
                if ws is None:
                    state["via"] = "websocket+polling"
                    time.sleep(min(interval, max(0.0, deadline - time.time())))
            else:
                time.sleep(min(interval, max(0.0, deadline - time.time())))

    def _follow_ws(self, ws, prompt_id, until, progress, state):
        """Read websocket messages until ``until`` or the end of our run; the socket, or None if it broke."""
        while True:
            remaining = until - time.time()
            if remaining <= 0:
                return ws
            try:
                msg = ws.recv(timeout=remaining)
            except WebSocketClosed:
                ws.close()
                return None
            if msg is None:
                return ws
            opcode, payload = msg
            if opcode != WebSocket.OP_TEXT:
                continue  # binary previews
            try:
                event = json.loads(payload.decode("utf-8"))
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            etype = event.get("type")
            data = event.get("data") if isinstance(event.get("data"), dict) else {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if etype == "status" or data.get("prompt_id") != prompt_id:
                continue
            report = dict(data)
            report["type"] = etype
            try:
                progress(report)
            except Exception:  # noqa: BLE001,S110 - a progress printer must not break the run
                pass
            if etype == "executing":
                state["last"] = "running node %s" % data.get("node") if data.get("node") else "finished"
            if etype in ("execution_success", "execution_error", "execution_interrupted") or (
                    etype == "executing" and data.get("node") is None):
                return ws  # the caller checks /history at once


def run_workflow(client, workflow, timeout=600.0, interval=1.0, on_progress=None, use_websocket=True,
                 extra_data=None):
    """Submit and wait: open the websocket first (no message lost), submit, follow; return the result.

    Raises the client's typed errors; a failed or interrupted run is returned with its status (use
    :func:`raise_for_result` to turn it into :class:`WorkflowExecutionError`).
    """
    ws = None
    if use_websocket:
        try:
            ws = client.connect_ws()
        except (OSError, WebSocketClosed, ValueError):
            ws = None
    try:
        prompt_id = client.submit(workflow, extra_data=extra_data)
    except Exception:
        if ws is not None:
            ws.close()
        raise
    return client.wait(prompt_id, timeout=timeout, interval=interval, on_progress=on_progress, ws=ws,
                       use_websocket=use_websocket)


def raise_for_result(result):
    if result.get("status") != "success":
        raise WorkflowExecutionError(result)
    return result


def check_workflow(client, workflow):
    """Validate against the server's ``/object_info`` (class types, inputs, model drop-downs).

    Fetches only the classes the workflow uses. Raises :class:`WorkflowValidationError`.
    """
    infos = {}
    for class_type in sorted({n.get("class_type") for n in workflow.values()}):
        data = client.object_info(class_type)
        if isinstance(data, dict) and data.get(class_type):
            infos[class_type] = data[class_type]
    error, node_errors = validate_against_object_info(workflow, infos)
    if error or node_errors:
        raise WorkflowValidationError(error, node_errors, workflow, source="the pre-check against ComfyUI")
    return infos
