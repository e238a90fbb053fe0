# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Workflow handling, pure: load an API-format workflow, apply overrides, check it against ``/object_info``,
read a run's result and outputs from ``/history``, refuse a run that ComfyUI only partly accepted.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json

from .errors import WorkflowInputError, WorkflowPartlyRejectedError
from .nodes import combo_options, is_link, node_sort_key

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
                % (key, ", ".join(sorted(result, key=node_sort_key))), field="overrides")
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

    for node_id in sorted(workflow, key=node_sort_key):
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
            if is_link(value) and value[0] not in workflow:
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
            if is_link(value):
                continue
            options = combo_options(spec)
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


def check_partial_run(node_errors, workflow=None, result=None, allow_partial=False):
    """Refuse a run that ComfyUI only partly accepted.

    ``node_errors`` is what ComfyUI's HTTP 200 answer to ``POST /prompt`` held (``ComfyClient.last_node_errors``):
    non-empty means it dropped the outputs behind invalid nodes and ran the rest. Raises
    :class:`WorkflowPartlyRejectedError` (exit code 8) unless ``allow_partial``; then returns that error unraised
    (its ``summary``, ``lines`` and ``dropped_outputs`` describe what was dropped, for a warning). None when
    nothing was dropped.
    """
    if not node_errors:
        return None
    err = WorkflowPartlyRejectedError(node_errors, workflow, result)
    if not allow_partial:
        raise err
    return err


def collect_outputs(outputs):
    """Flatten ``/history`` outputs ``{node_id: {kind: [items]}}`` into a list of dicts.

    File outputs (images, gifs, audio, video, 3d ...) give ``node_id, kind, filename, subfolder, type``;
    text outputs give ``node_id, kind, text``; flags such as ``animated: [false]`` are left out.
    """
    flat = []
    for node_id in sorted(outputs or {}, key=node_sort_key):
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


def _scalar_inputs(current_inputs):
    """The plain values of an execution_error's ``current_inputs`` ({name: [value, ...]}); object and tensor
    reprs are left out (they can be long)."""
    kept = {}
    for name, values in (current_inputs or {}).items() if isinstance(current_inputs, dict) else ():
        if not isinstance(values, list):
            values = [values]
        if all(v is None or isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 500
                                                                  and not v.startswith("<")) for v in values):
            kept[name] = values
    return kept


def _error_details(data):
    return {"node_id": data.get("node_id"), "node_type": data.get("node_type"),
            "exception_type": data.get("exception_type"),
            "exception_message": (data.get("exception_message") or "").strip(),
            "traceback": data.get("traceback") or [],
            "current_inputs": _scalar_inputs(data.get("current_inputs")),
            "executed": data.get("executed", [])}
