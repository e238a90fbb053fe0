# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ComfyUI client: HTTP API, a small websocket client, workflow loading/overrides/validation.

Stdlib only, so the same file serves the ``comfyui_workflow`` module, the ``test-run-workflow`` node
command and the GPU agent. Shapes follow ComfyUI 0.3.x (``POST /prompt``, ``/history/<id>``,
``/object_info``, ``/ws?clientId=``).

Failures are :class:`GpuWorkerError` subclasses with the exit code of the node commands:
``WorkflowInputError`` (2), ``WorkflowValidationError`` (3), ``WorkflowExecutionError`` (4),
``WorkflowTimeoutError`` (5), ``ComfyConnectionError`` (6).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import copy
import hashlib
import http.client as http_client
import json
import os
import socket
import ssl
import struct
import time
import uuid
from urllib.parse import quote, urlencode, urlsplit

from ..errors import GpuWorkerError

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_VALIDATION = 3
EXIT_EXECUTION = 4
EXIT_TIMEOUT = 5
EXIT_UNREACHABLE = 6

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8188

# Hints for a model drop-down value that is not on the node: input name -> (what, sync command).
_MODEL_INPUT_HINTS = {
    "ckpt_name": ("checkpoint", "sync-checkpoints"),
    "lora_name": ("LoRA", "sync-loras"),
    "vae_name": ("VAE", None),
    "control_net_name": ("ControlNet model", None),
    "unet_name": ("diffusion model", None),
    "clip_name": ("CLIP model", None),
    "upscale_model_name": ("upscale model", None),
    "embedding_name": ("embedding", None),
}


class ComfyError(GpuWorkerError):
    """Base class of the ComfyUI client's errors."""


class WorkflowInputError(ComfyError):
    """The workflow given to us is unusable (not JSON, UI format, bad override): exit code 2."""

    def __init__(self, message, field=None, hint=None, details=None):
        super(WorkflowInputError, self).__init__(message, field=field, hint=hint, exit_code=EXIT_USAGE,
                                                 details=details)


class ComfyConnectionError(ComfyError):
    """ComfyUI cannot be reached, or answers something that is not ComfyUI: exit code 6."""

    def __init__(self, message, hint=None, details=None):
        super(ComfyConnectionError, self).__init__(message, hint=hint, exit_code=EXIT_UNREACHABLE,
                                                   details=details)


class WorkflowValidationError(ComfyError):
    """ComfyUI (or our pre-check) rejected the workflow: exit code 3.

    ``node_errors`` is ComfyUI's raw structure, ``lines`` one readable line per problem.
    """

    def __init__(self, error, node_errors, workflow=None, source="ComfyUI"):
        self.error = error or {}
        self.node_errors = node_errors or {}
        self.lines = render_validation_errors(self.error, self.node_errors, workflow)
        summary = "%s rejected the workflow" % source
        message = "%s: %s" % (summary, "; ".join(self.lines)) if self.lines else summary
        super(WorkflowValidationError, self).__init__(
            message, exit_code=EXIT_VALIDATION,
            details={"node_errors": self.node_errors, "error": self.error, "problems": self.lines})


class WorkflowExecutionError(ComfyError):
    """The workflow was accepted but failed (or was interrupted) while running: exit code 4."""

    def __init__(self, result):
        self.result = result
        super(WorkflowExecutionError, self).__init__(
            describe_failure(result), exit_code=EXIT_EXECUTION, details=dict(result))


class WorkflowTimeoutError(ComfyError):
    """The run did not finish in time: exit code 5."""

    def __init__(self, message, details=None):
        super(WorkflowTimeoutError, self).__init__(
            message, exit_code=EXIT_TIMEOUT, details=details,
            hint="raise the timeout, or look at the ComfyUI log and queue")


# --------------------------------------------------------------------------------------------------
# Workflow helpers (pure)
# --------------------------------------------------------------------------------------------------

_API_FORMAT_HINT = ("export the API format: in ComfyUI enable the dev mode options (Settings) and use "
                    "'Save (API Format)', or Workflow > Export (API) in the new frontend")


def load_workflow(text_or_obj, source="workflow"):
    """Return the API-format workflow ``{node_id: {class_type, inputs}}`` from JSON text, bytes or a dict.

    Raises :class:`WorkflowInputError` for text that is not JSON, for the UI (graph) format and for
    structures that are not a workflow. A POST body ``{"prompt": {...}}`` is accepted too.
    """
    obj = text_or_obj
    if isinstance(obj, bytes):
        try:
            obj = obj.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise WorkflowInputError("%s is not JSON (not even UTF-8 text)" % source, hint=_API_FORMAT_HINT) from None
    if isinstance(obj, str):
        text = obj.lstrip("\ufeff").strip()
        if not text:
            raise WorkflowInputError("%s is empty" % source, hint=_API_FORMAT_HINT)
        try:
            obj = json.loads(text)
        except ValueError as err:
            raise WorkflowInputError("%s is not JSON (%s)" % (source, err),
                                     hint="give the API-format JSON file of the workflow") from None
    if not isinstance(obj, dict):
        raise WorkflowInputError("%s is JSON but not an object (got %s)" % (source, type(obj).__name__),
                                 hint=_API_FORMAT_HINT)
    if "prompt" in obj and isinstance(obj.get("prompt"), dict) and "class_type" not in obj["prompt"]:
        obj = obj["prompt"]  # a saved POST /prompt body
    ui_keys = [k for k in ("nodes", "links", "version", "last_node_id", "last_link_id") if k in obj]
    if ui_keys and ("nodes" in obj or "links" in obj):
        raise WorkflowInputError(
            "%s is in the ComfyUI UI (graph) format (top-level keys %s), not the API format "
            "{node_id: {class_type, inputs}} that /prompt accepts" % (source, ", ".join(ui_keys)),
            hint=_API_FORMAT_HINT)
    if not obj:
        raise WorkflowInputError("%s has no nodes" % source, hint=_API_FORMAT_HINT)
    for node_id, node in obj.items():
        if not isinstance(node, dict) or "class_type" not in node:
            raise WorkflowInputError(
                "%s is not in the API format: node %r has no class_type" % (source, node_id), hint=_API_FORMAT_HINT)
        if not isinstance(node.get("inputs", {}), dict):
            raise WorkflowInputError("%s: node %s (%s) has inputs that are not an object"
                                     % (source, node_id, node.get("class_type")))
    return obj


def _coerce_like(value, current):
    """Convert a text override to the type of the value it replaces (for ``--set 3.seed=42``)."""
    if not isinstance(value, str) or isinstance(current, str) or current is None:
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    if isinstance(current, bool):
        return parsed if isinstance(parsed, bool) else value
    if isinstance(current, (int, float)) and isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
        return parsed
    if isinstance(current, list) and isinstance(parsed, list):
        return parsed
    return value


def apply_overrides(workflow, overrides, coerce=False):
    """Return a copy of ``workflow`` with ``{"3": {"seed": 42}}`` applied.

    Node ids and input names must exist (a typo would silently do nothing otherwise). ``coerce``
    converts text values to the type of the replaced value (for command-line ``--set``).
    """
    result = copy.deepcopy(workflow)
    if not overrides:
        return result
    if not isinstance(overrides, dict):
        raise WorkflowInputError("overrides must be a mapping {node_id: {input: value}}")
    for node_id, inputs in overrides.items():
        key = str(node_id)
        if key not in result:
            raise WorkflowInputError(
                "override for node %s: no such node in the workflow (nodes: %s)"
                % (key, ", ".join(sorted(result, key=_node_sort_key))), field="overrides")
        if not isinstance(inputs, dict):
            raise WorkflowInputError("override for node %s must be a mapping {input: value}" % key,
                                     field="overrides")
        node_inputs = result[key].setdefault("inputs", {})
        for name, value in inputs.items():
            if name not in node_inputs:
                raise WorkflowInputError(
                    "override for node %s (%s): no input %r (inputs: %s)"
                    % (key, result[key].get("class_type"), name, ", ".join(sorted(node_inputs)) or "none"),
                    field="overrides")
            node_inputs[name] = _coerce_like(value, node_inputs[name]) if coerce else value
    return result


def parse_set_options(items):
    """``["3.seed=42", "6.text=a cat"]`` -> ``{"3": {"seed": "42"}, "6": {"text": "a cat"}}``."""
    overrides = {}
    for item in items or ():
        head, sep, value = item.partition("=")
        node_id, dot, name = head.partition(".")
        if not sep or not dot or not node_id.strip() or not name.strip():
            raise WorkflowInputError("bad --set %r: expected NODE_ID.INPUT=VALUE, e.g. 3.seed=42" % item)
        overrides.setdefault(node_id.strip(), {})[name.strip()] = value
    return overrides


def _node_sort_key(node_id):
    text = str(node_id)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def _is_link(value):
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def _combo_options(spec):
    """The allowed values of a drop-down input spec, or None when the input is not a drop-down."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        return options if isinstance(options, list) else None
    return None


def validate_against_object_info(workflow, object_info):
    """Check a workflow against ``/object_info`` data without running it.

    Returns ``(error, node_errors)`` in the shape ComfyUI's ``POST /prompt`` uses, so the same renderer
    applies; both empty when nothing was found. Checks: class types exist, links point to existing
    nodes, required inputs are present, drop-down values (models) are in the list, numbers in range.
    """
    node_errors = {}
    missing_classes = []

    def add(node_id, err):
        entry = node_errors.setdefault(node_id, {"errors": [], "dependent_outputs": [],
                                                 "class_type": workflow[node_id].get("class_type")})
        entry["errors"].append(err)

    for node_id in sorted(workflow, key=_node_sort_key):
        node = workflow[node_id]
        class_type = node.get("class_type")
        info = object_info.get(class_type)
        if not info:
            missing_classes.append((node_id, class_type))
            continue
        inputs = node.get("inputs", {})
        spec_required = (info.get("input") or {}).get("required") or {}
        spec_optional = (info.get("input") or {}).get("optional") or {}
        for name, value in inputs.items():
            if _is_link(value) and value[0] not in workflow:
                add(node_id, {"type": "bad_link", "message": "Input links to a node that is not in the workflow",
                              "details": "%s -> node %s" % (name, value[0]),
                              "extra_info": {"input_name": name, "received_value": value}})
        for name, spec in list(spec_required.items()) + list(spec_optional.items()):
            required = name in spec_required
            if name not in inputs:
                if required:
                    add(node_id, {"type": "required_input_missing", "message": "Required input is missing",
                                  "details": name, "extra_info": {"input_name": name}})
                continue
            value = inputs[name]
            if _is_link(value):
                continue
            options = _combo_options(spec)
            if options is not None:
                if value not in options:
                    add(node_id, {"type": "value_not_in_list", "message": "Value not in list",
                                  "details": "%s: %r not in %r" % (name, value, options),
                                  "extra_info": {"input_name": name, "input_config": spec,
                                                 "received_value": value}})
                continue
            conf = spec[1] if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict) else {}
            if spec and spec[0] in ("INT", "FLOAT") and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                if "max" in conf and value > conf["max"]:
                    add(node_id, {"type": "value_bigger_than_max",
                                  "message": "Value %s bigger than max of %s" % (value, conf["max"]),
                                  "details": name, "extra_info": {"input_name": name, "received_value": value}})
                if "min" in conf and value < conf["min"]:
                    add(node_id, {"type": "value_smaller_than_min",
                                  "message": "Value %s smaller than min of %s" % (value, conf["min"]),
                                  "details": name, "extra_info": {"input_name": name, "received_value": value}})
    error = {}
    if missing_classes:
        node_id, class_type = missing_classes[0]
        others = ", ".join("%s (node %s)" % (c, n) for n, c in missing_classes)
        error = {"type": "invalid_prompt",
                 "message": "Cannot execute because node %s does not exist." % class_type,
                 "details": "Node ID '#%s'" % node_id, "extra_info": {"missing_class_types": others}}
    elif node_errors:
        error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                 "details": "", "extra_info": {}}
    return error, node_errors


def _short_list(values, limit=8):
    shown = ", ".join(repr(v) for v in values[:limit])
    if len(values) > limit:
        shown += ", ... (%d in all)" % len(values)
    return shown or "none"


def _render_node_error(node_id, class_type, err):
    extra = err.get("extra_info") or {}
    name = extra.get("input_name")
    etype = err.get("type")
    where = "node %s (%s)" % (node_id, class_type or "?")
    if name:
        where += " input %s" % name
    if etype == "value_not_in_list":
        value = extra.get("received_value")
        options = _combo_options(extra.get("input_config")) or []
        text = "%s: value %r not in list (available: %s)" % (where, value, _short_list(options))
        what, command = _MODEL_INPUT_HINTS.get(name, (None, None))
        if what:
            text += " — the %s is not present on the node" % what
            if command:
                text += "; sync it with %s" % command
        return text
    if etype == "required_input_missing":
        return "%s: required input is missing" % where
    if etype in ("invalid_input_type", "return_type_mismatch"):
        received = extra.get("received_value")
        text = "%s: %s" % (where, err.get("message"))
        if received is not None:
            text += " (received %r)" % (received,)
        return text
    if etype == "exception_during_validation":
        exc = extra.get("exception_type") or "exception"
        text = "%s: exception during validation: %s %s" % (where, exc, err.get("details") or "")
        if exc == "KeyError":
            text += " — probably a link to node %s, which is not in the workflow" % (
                str(err.get("details") or "").strip("'\""))
        return text.rstrip()
    message = err.get("message") or etype or "invalid"
    details = err.get("details")
    if details and details != name and details not in message:
        message = "%s: %s" % (message, details)
    return "%s: %s" % (where, message)


def render_validation_errors(error, node_errors, workflow=None):
    """Readable lines for a ComfyUI validation failure (``error`` + ``node_errors`` of a 400 answer)."""
    lines = []
    workflow = workflow or {}
    for node_id in sorted(node_errors or {}, key=_node_sort_key):
        entry = node_errors[node_id] or {}
        class_type = entry.get("class_type") or (workflow.get(node_id) or {}).get("class_type")
        for err in entry.get("errors") or []:
            lines.append(_render_node_error(node_id, class_type, err or {}))
    if not lines and error:
        etype = error.get("type")
        text = error.get("message") or etype or "invalid prompt"
        details = error.get("details")
        if details and details not in text:
            text = "%s (%s)" % (text, details)
        if etype == "invalid_prompt" and "does not exist" in text:
            text += " — the node type is not installed on this ComfyUI (custom node missing?)"
            missing = (error.get("extra_info") or {}).get("missing_class_types")
            if missing:
                text += "; unknown: %s" % missing
        elif etype == "prompt_no_outputs":
            text += " — add an output node such as SaveImage"
        lines.append(text)
    return lines


def describe_failure(result):
    """One line for a failed/interrupted run result."""
    err = result.get("error") or {}
    if result.get("status") == "interrupted":
        return "workflow %s was interrupted at node %s (%s)" % (
            result.get("prompt_id"), err.get("node_id"), err.get("node_type"))
    if err.get("node_id") is not None:
        message = (err.get("exception_message") or "").strip()
        return "workflow %s failed on node %s (%s): %s: %s" % (
            result.get("prompt_id"), err.get("node_id"), err.get("node_type"),
            err.get("exception_type") or "error", message)
    return "workflow %s failed: %s" % (result.get("prompt_id"), err.get("exception_message") or "unknown error")


def collect_outputs(outputs):
    """Flatten ``/history`` outputs ``{node_id: {kind: [items]}}`` into a list of dicts.

    File outputs (images, gifs, audio, video, 3d ...) give ``node_id, kind, filename, subfolder, type``;
    text outputs give ``node_id, kind, text``; flags such as ``animated: [false]`` are left out.
    """
    flat = []
    for node_id in sorted(outputs or {}, key=_node_sort_key):
        node_out = outputs[node_id] or {}
        if not isinstance(node_out, dict):
            continue
        for kind, items in node_out.items():
            if not isinstance(items, list):
                items = [items]
            for item in items:
                if isinstance(item, dict) and item.get("filename"):
                    flat.append({"node_id": str(node_id), "kind": kind, "filename": item.get("filename"),
                                 "subfolder": item.get("subfolder") or "", "type": item.get("type") or "output"})
                elif isinstance(item, str):
                    flat.append({"node_id": str(node_id), "kind": kind, "filename": None, "subfolder": "",
                                 "type": None, "text": item})
    return flat


def output_identifier(output):
    """The asset identifier of an output: ``subfolder/filename`` relative to its ComfyUI folder.

    Files of type ``output`` are the ones in ComfyUI's output directory (what the MinIO export
    uploads); other types (``temp`` previews, ``input``) are prefixed with ``<type>:``.
    """
    if not output.get("filename"):
        return None
    path = "/".join(p for p in (output.get("subfolder") or "", output["filename"]) if p)
    kind = output.get("type") or "output"
    return path if kind == "output" else "%s:%s" % (kind, path)


def result_from_history(prompt_id, entry):
    """Turn one ``/history/<id>`` entry into the run result; None while it is not finished."""
    if not entry:
        return None
    status = entry.get("status") or {}
    messages = status.get("messages") or []
    by_type = {}
    for item in messages:
        if isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict):
            by_type[item[0]] = item[1]
    result = {"prompt_id": prompt_id, "status": None, "outputs": collect_outputs(entry.get("outputs")),
              "error": None, "timings": {}, "cached_nodes": (by_type.get("execution_cached") or {}).get("nodes", [])}
    if "execution_interrupted" in by_type:
        data = by_type["execution_interrupted"]
        result["status"] = "interrupted"
        result["error"] = {"node_id": data.get("node_id"), "node_type": data.get("node_type"),
                           "exception_type": "interrupted", "exception_message": "execution was interrupted",
                           "executed": data.get("executed", [])}
        end = data
    elif "execution_error" in by_type:
        result["status"] = "error"
        result["error"] = _error_details(by_type["execution_error"])
        end = by_type["execution_error"]
    elif status.get("status_str") == "success" or "execution_success" in by_type or status.get("completed"):
        result["status"] = "success"
        end = by_type.get("execution_success") or {}
    elif status.get("status_str") == "error":
        result["status"] = "error"
        result["error"] = {"node_id": None, "node_type": None, "exception_type": None,
                           "exception_message": "ComfyUI reports the run failed (no details in the history)"}
        end = {}
    else:
        return None
    start = (by_type.get("execution_start") or {}).get("timestamp")
    if isinstance(start, (int, float)) and isinstance(end.get("timestamp"), (int, float)):
        result["timings"]["execution_s"] = round((end["timestamp"] - start) / 1000.0, 3)
    return result


def _error_details(data):
    return {"node_id": data.get("node_id"), "node_type": data.get("node_type"),
            "exception_type": data.get("exception_type"),
            "exception_message": (data.get("exception_message") or "").strip(),
            "traceback": data.get("traceback") or [],
            "executed": data.get("executed", [])}


# --------------------------------------------------------------------------------------------------
# A small websocket client (RFC 6455): enough for ComfyUI's /ws
# --------------------------------------------------------------------------------------------------

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketClosed(Exception):
    """The websocket is closed (close frame, EOF, or protocol error)."""


class WebSocket:
    """A blocking websocket client connection. ``recv(timeout)`` returns ``(opcode, payload)`` or None."""

    OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

    def __init__(self, url, timeout=10.0, ssl_context=None):
        parts = urlsplit(url)
        secure = parts.scheme in ("wss", "https")
        host = parts.hostname
        port = parts.port or (443 if secure else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self._buf = b""
        self._frag_op = None
        self._frag = []
        self.closed = False
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if secure:
                ctx = ssl_context or ssl.create_default_context()
                sock = ctx.wrap_socket(sock, server_hostname=host)
            self.sock = sock
            self._handshake(host, port, path, secure, timeout)
        except Exception:
            sock.close()
            raise

    def _handshake(self, host, port, path, secure, timeout):
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        default_port = 443 if secure else 80
        host_header = host if port == default_port else "%s:%d" % (host, port)
        if ":" in host and not host.startswith("["):
            host_header = "[%s]" % host if port == default_port else "[%s]:%d" % (host, port)
        request = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, host_header, key))
        self.sock.sendall(request.encode("ascii"))
        deadline = time.time() + timeout
        while b"\r\n\r\n" not in self._buf:
            if len(self._buf) > 65536:
                raise WebSocketClosed("websocket handshake answer too long")
            self._read_some(deadline)
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            raise WebSocketClosed("websocket upgrade refused: %s" % lines[0])
        headers = {}
        for line in lines[1:]:
            name, _sep, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode("ascii")).digest())  # noqa: S324
        if headers.get("sec-websocket-accept", "").encode("ascii") != expected:
            raise WebSocketClosed("websocket handshake: bad Sec-WebSocket-Accept")

    def _read_some(self, deadline):
        remaining = deadline - time.time() if deadline is not None else None
        if remaining is not None and remaining <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            raise WebSocketClosed("connection closed by the server")
        self._buf += data

    def _parse_frame(self):
        """One complete frame from the buffer as (fin, opcode, payload), or None when incomplete."""
        buf = self._buf
        if len(buf) < 2:
            return None
        b1, b2 = struct.unpack("!BB", buf[:2])
        fin, opcode, masked, length = b1 & 0x80, b1 & 0x0F, b2 & 0x80, b2 & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = struct.unpack("!H", buf[2:4])[0]
            pos = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = struct.unpack("!Q", buf[2:10])[0]
            pos = 10
        mask = None
        if masked:
            if len(buf) < pos + 4:
                return None
            mask = buf[pos:pos + 4]
            pos += 4
        if len(buf) < pos + length:
            return None
        payload = buf[pos:pos + length]
        if mask:
            payload = _apply_mask(payload, mask)
        self._buf = buf[pos + length:]
        return bool(fin), opcode, payload

    def send(self, payload, opcode=OP_TEXT):
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        header = struct.pack("!B", 0x80 | opcode)
        length = len(payload)
        if length < 126:
            header += struct.pack("!B", 0x80 | length)
        elif length < 65536:
            header += struct.pack("!BH", 0x80 | 126, length)
        else:
            header += struct.pack("!BQ", 0x80 | 127, length)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + _apply_mask(payload, mask))

    def recv(self, timeout=None):
        """The next data message ``(opcode, bytes)``; None on timeout; WebSocketClosed when closed."""
        deadline = time.time() + timeout if timeout is not None else None
        while True:
            if self.closed:
                raise WebSocketClosed("websocket closed")
            frame = self._parse_frame()
            if frame is None:
                try:
                    self._read_some(deadline)
                except socket.timeout:
                    return None
                except (OSError, ValueError) as err:
                    self.closed = True
                    raise WebSocketClosed(str(err)) from err
                continue
            fin, opcode, payload = frame
            if opcode == self.OP_PING:
                self._safe_send(payload, self.OP_PONG)
            elif opcode == self.OP_PONG:
                continue
            elif opcode == self.OP_CLOSE:
                self._safe_send(payload[:2], self.OP_CLOSE)
                self.closed = True
                raise WebSocketClosed("close frame from the server")
            elif opcode == self.OP_CONT:
                if self._frag_op is None:
                    self.closed = True
                    raise WebSocketClosed("unexpected continuation frame")
                self._frag.append(payload)
                if fin:
                    op, data = self._frag_op, b"".join(self._frag)
                    self._frag_op, self._frag = None, []
                    return op, data
            elif opcode in (self.OP_TEXT, self.OP_BINARY):
                if fin:
                    return opcode, payload
                self._frag_op, self._frag = opcode, [payload]
            else:
                self.closed = True
                raise WebSocketClosed("unknown websocket opcode %d" % opcode)

    def _safe_send(self, payload, opcode):
        try:
            self.send(payload, opcode)
        except (OSError, ValueError):
            self.closed = True

    def close(self):
        if not self.closed:
            self._safe_send(struct.pack("!H", 1000), self.OP_CLOSE)
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


def _apply_mask(data, mask):
    if not data:
        return data
    # XOR with the repeated 4-byte key, as one big-integer operation (fast without numpy).
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


# --------------------------------------------------------------------------------------------------
# The HTTP client
# --------------------------------------------------------------------------------------------------

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

    def interrupt(self):
        status, _ctype, _data = self._request("POST", "/interrupt", body=b"")
        if status != 200:
            raise ComfyConnectionError("POST /interrupt answered HTTP %d" % status)

    def submit(self, workflow, client_id=None, extra_data=None):
        """Queue ``workflow`` (API format); return the prompt id.

        Raises :class:`WorkflowValidationError` when ComfyUI rejects it (400 with node_errors).
        """
        payload = {"prompt": workflow, "client_id": client_id or self.client_id}
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
        """'running', 'pending (N ahead)', 'absent' or None when unknown."""
        try:
            data = self._get_json("/queue")
        except (_NotJson, ComfyConnectionError):
            return None
        if not isinstance(data, dict):
            return None
        for item in data.get("queue_running") or []:
            if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                return "running"
        pending = [i for i in data.get("queue_pending") or [] if isinstance(i, list) and len(i) > 1]
        pending.sort(key=lambda i: i[0] if isinstance(i[0], (int, float)) else 0)
        for pos, item in enumerate(pending):
            if item[1] == prompt_id:
                return "pending (%d ahead)" % pos
        return "absent"

    def wait(self, prompt_id, timeout=600.0, interval=1.0, on_progress=None, ws=None, use_websocket=True,
             unreachable_grace=60.0):
        """Follow a run until it ends; return the result dict.

        The websocket (``ws`` if one was opened before submitting, else a new one) gives the progress;
        ``/history`` is checked every ``interval`` seconds of websocket silence, and is the only source
        once the socket drops or cannot be opened. Non-JSON answers while polling are ignored.

        Result: ``prompt_id, status`` (success / error / interrupted), ``outputs`` (see
        :func:`collect_outputs`), ``error`` (node_id, node_type, exception_type, exception_message,
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
