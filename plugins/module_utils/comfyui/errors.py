# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ComfyUI client's errors, their exit codes, and the readable text of ComfyUI's failure structures.

Failures are :class:`GpuWorkerError` subclasses with the exit code of the node commands:
``WorkflowInputError`` (2), ``WorkflowValidationError`` (3), ``WorkflowExecutionError`` (4),
``WorkflowTimeoutError`` (5), ``ComfyConnectionError`` (6).

The renderers (:func:`render_validation_errors`, :func:`describe_failure`) live here, with the exceptions whose
messages they build: :mod:`.workflow` raises these exceptions, so the renderers cannot live there without an
import cycle.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import GpuWorkerError
from .nodes import combo_options, node_sort_key

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_VALIDATION = 3
EXIT_EXECUTION = 4
EXIT_TIMEOUT = 5
EXIT_UNREACHABLE = 6

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
        options = combo_options(extra.get("input_config")) or []
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
    for node_id in sorted(node_errors or {}, key=node_sort_key):
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
