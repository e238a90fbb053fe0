# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""POST /prompt validation with ComfyUI's error types and body shapes."""
from __future__ import annotations

import traceback

from .nodes import NODES


def _error(kind, message, details="", extra_info=None):
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info or {}}


def _type_name(exc):
    cls = type(exc)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def is_link(value):
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def types_match(received, expected):
    if received == "*" or expected == "*" or received == expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    return bool(set(received.split(",")) & set(expected.split(",")))


class Validator:
    def __init__(self, layout, ctx_factory):
        self.layout = layout
        self.ctx_factory = ctx_factory  # node_id -> context object for custom validation

    def validate_prompt(self, prompt, partial_targets=None):
        """(ok, error, good_outputs, node_errors) exactly like ComfyUI's validate_prompt."""
        if not isinstance(prompt, dict):
            prompt = {}
        outputs = []
        for node_id, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return False, _error("invalid_prompt",
                                     "Cannot execute because a node is missing the class_type property.",
                                     f"Node ID '#{node_id}'"), [], {}
            definition = NODES.get(node["class_type"])
            if definition is None:
                return False, _error("invalid_prompt",
                                     "Cannot execute because node {} does not exist.".format(node["class_type"]),
                                     f"Node ID '#{node_id}'"), [], {}
            if definition.output_node and (partial_targets is None or node_id in partial_targets):
                outputs.append(node_id)
        if not outputs:
            return False, _error("prompt_no_outputs", "Prompt has no outputs"), [], {}

        good, failed, node_errors, validated = [], [], {}, {}
        for out in outputs:
            try:
                valid, reasons = self._validate_node(prompt, out, validated)
            except Exception as exc:  # noqa: BLE001 - reported to the client like ComfyUI does
                valid = False
                reasons = [_error("exception_during_validation", "Exception when validating node", str(exc),
                                  {"exception_type": _type_name(exc),
                                   "traceback": traceback.format_tb(exc.__traceback__)})]
                validated[out] = (False, reasons)
            if valid:
                good.append(out)
                continue
            failed.append((out, reasons))
            for node_id, (ok, node_reasons) in validated.items():
                if ok or not node_reasons:
                    continue
                entry = node_errors.setdefault(node_id, {"errors": node_reasons, "dependent_outputs": [],
                                                         "class_type": prompt[node_id]["class_type"]})
                entry["dependent_outputs"].append(out)
        if not good:
            details = "\n".join("{}: {}".format(r["message"], r["details"]) for _, rs in failed for r in rs)
            return False, _error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                 details), [], node_errors
        return True, None, good, node_errors

    def _validate_node(self, prompt, node_id, validated):
        if node_id in validated:
            return validated[node_id]
        node = prompt[node_id]
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            inputs = node["inputs"] = {}
        definition = NODES[node["class_type"]]
        spec = definition.input_types(self.layout)
        errors, valid = [], True
        for category in ("required", "optional"):
            for name, config in spec.get(category, {}).items():
                kind, opts = config[0], (config[1] if len(config) > 1 else {})
                info = [kind, opts] if len(config) > 1 else [kind, {}]
                if name not in inputs:
                    if category == "required":
                        errors.append(_error("required_input_missing", "Required input is missing", name,
                                             {"input_name": name}))
                    continue
                value = inputs[name]
                if isinstance(value, list):
                    if len(value) != 2:
                        errors.append(_error("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                             "[node_id, slot_index]", name,
                                             {"input_name": name, "input_config": info, "received_value": value}))
                        continue
                    source_id = value[0]
                    source_def = NODES[prompt[source_id]["class_type"]]
                    received = source_def.outputs[value[1]]
                    if not types_match(received, kind):
                        errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                             f"{name}, received_type({received}) mismatch input_type({kind})",
                                             {"input_name": name, "input_config": info, "received_type": received,
                                              "linked_node": value}))
                        continue
                    try:
                        ok, _ = self._validate_node(prompt, source_id, validated)
                        if not ok:
                            valid = False
                    except Exception as exc:  # noqa: BLE001
                        valid = False
                        validated[source_id] = (False, [_error(
                            "exception_during_inner_validation", "Exception when validating inner node", str(exc),
                            {"input_name": name, "input_config": info, "exception_message": str(exc),
                             "exception_type": _type_name(exc), "traceback": traceback.format_tb(exc.__traceback__),
                             "linked_node": value})])
                    continue
                error = self._check_value(inputs, name, kind, opts, info, definition)
                if error is not None:
                    errors.append(error)
        if definition.validate is not None:
            for name in ("image",):
                if name in inputs and not isinstance(inputs[name], list):
                    result = definition.validate(self.ctx_factory(node_id), inputs[name])
                    if result is not True:
                        details = name if result is False else f"{name} - {result}"
                        errors.append(_error("custom_validation_failed", "Custom validation failed for node",
                                             details, {"input_name": name}))
        result = (not errors and valid, errors)
        validated[node_id] = result
        return result

    def _check_value(self, inputs, name, kind, opts, info, definition):
        value = inputs[name]
        if isinstance(value, dict) and "__value__" in value:
            value = inputs[name] = value["__value__"]
        try:
            if kind == "INT":
                value = int(value)
            elif kind == "FLOAT":
                value = float(value)
            elif kind == "STRING":
                value = str(value)
            elif kind == "BOOLEAN":
                value = bool(value)
        except (TypeError, ValueError, OverflowError) as exc:
            return _error("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                          f"{name}, {value}, {exc}",
                          {"input_name": name, "input_config": info, "received_value": value,
                           "exception_message": str(exc)})
        inputs[name] = value
        if definition.validate is not None:
            return None  # the node checks this input itself (LoadImage)
        if "min" in opts and value < opts["min"]:
            return _error("value_smaller_than_min", "Value {} smaller than min of {}".format(value, opts["min"]), name,
                          {"input_name": name, "input_config": info, "received_value": value})
        if "max" in opts and value > opts["max"]:
            return _error("value_bigger_than_max", "Value {} bigger than max of {}".format(value, opts["max"]), name,
                          {"input_name": name, "input_config": info, "received_value": value})
        if isinstance(kind, list) and value not in kind:
            if len(kind) > 20:
                listing, config = f"(list of length {len(kind)})", None
            else:
                listing, config = str(kind), info
            return _error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {listing}",
                          {"input_name": name, "input_config": config, "received_value": value})
        return None
