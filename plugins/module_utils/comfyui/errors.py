# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ComfyUI client's errors, their exit codes, and the readable text of ComfyUI's failure structures.

Failures are :class:`GpuWorkerError` subclasses with the exit code of the node commands (the one table,
:data:`..errors.EXIT_CODES`): ``WorkflowInputError`` (2), ``WorkflowValidationError`` (8, and its
``WorkflowPartlyRejectedError``), ``WorkflowExecutionError`` (9), ``WorkflowTimeoutError`` (5),
``ComfyConnectionError`` (6).

Messages are one line: a multi-line ComfyUI error (torch's "Weights only load failed...") is cut to its first
meaningful line (:func:`one_line`); the full text stays available (:func:`failure_detail`).

The renderers (:func:`render_validation_errors`, :func:`describe_failure`) live here, with the exceptions whose
messages they build: :mod:`.workflow` raises these exceptions, so the renderers cannot live there without an
import cycle.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import (
    EXIT_EXECUTION,
    EXIT_OK,
    EXIT_TEMPORARY,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    EXIT_VALIDATION,
    GpuWorkerError,
)
from .nodes import combo_options, node_sort_key

# the codes of the one exit code table (..errors.EXIT_CODES) that the ComfyUI client's errors carry
EXIT_UNREACHABLE = EXIT_TEMPORARY
__all__ = ["EXIT_OK", "EXIT_USAGE", "EXIT_VALIDATION", "EXIT_EXECUTION", "EXIT_TIMEOUT", "EXIT_UNREACHABLE"]

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
# Inputs that name the file a failing node was reading (shown in the one-line failure message).
_FILE_INPUTS = tuple(_MODEL_INPUT_HINTS) + ("image", "video", "audio")
_MESSAGE_LIMIT = 300
PRECHECK_SUMMARY = "the local pre-check against ComfyUI's /object_info found problems (nothing was queued)"


def one_line(text, limit=None):
    """The first meaningful (non-blank) line of ``text``, cut at ``limit`` characters, saying how many lines follow."""
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    if limit and len(first) > limit:
        first = first[:limit - 3].rstrip() + "..."
    if len(lines) > 1:
        first += " (+%d more line%s)" % (len(lines) - 1, "s" if len(lines) > 2 else "")
    return first


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
    """ComfyUI (or our pre-check) rejected the workflow: exit code 8.

    ``node_errors`` is ComfyUI's raw structure, ``lines`` one readable line per problem, ``summary`` who found
    the problems ("ComfyUI rejected the workflow", or the local pre-check for a ``source`` naming it).
    """

    def __init__(self, error, node_errors, workflow=None, source="ComfyUI", summary=None):
        self.error = error or {}
        self.node_errors = node_errors or {}
        self.lines = render_validation_errors(self.error, self.node_errors, workflow)
        if summary is None:
            summary = PRECHECK_SUMMARY if "pre-check" in source else "%s rejected the workflow" % source
        self.summary = summary
        message = "%s: %s" % (summary, "; ".join(self.lines)) if self.lines else summary
        super(WorkflowValidationError, self).__init__(
            message, exit_code=EXIT_VALIDATION,
            details={"node_errors": self.node_errors, "error": self.error, "problems": self.lines})


class WorkflowPartlyRejectedError(WorkflowValidationError):
    """ComfyUI accepted the workflow (HTTP 200) but dropped the outputs behind invalid nodes (``node_errors`` of
    its answer) and ran the rest: exit code 8, like any rejection.

    ``result`` is the run of the rest (or ``{prompt_id, status: queued}``), ``dropped_outputs`` the output node ids
    ComfyUI left out. ``details``: the result with ``status: partial``, ``run_status`` (the rest's status),
    ``node_errors``, ``problems`` and ``dropped_outputs``.
    """

    def __init__(self, node_errors, workflow=None, result=None):
        workflow = workflow or {}
        self.result = dict(result or {})
        dropped = set()
        for entry in (node_errors or {}).values():
            dropped.update(str(o) for o in (entry or {}).get("dependent_outputs") or [])
        self.dropped_outputs = sorted(dropped, key=node_sort_key)
        named = ", ".join("%s (%s)" % (o, (workflow.get(o) or {}).get("class_type") or "?")
                          for o in self.dropped_outputs)
        summary = "ComfyUI rejected part of the workflow and dropped output node%s %s" % (
            "s" if len(self.dropped_outputs) > 1 else "", named or "(none named)")
        super(WorkflowPartlyRejectedError, self).__init__({}, node_errors, workflow, summary=summary)
        self.details = dict(self.result, status="partial", run_status=self.result.get("status"),
                            node_errors=self.node_errors, problems=self.lines, dropped_outputs=self.dropped_outputs)


class WorkflowExecutionError(ComfyError):
    """The workflow was accepted but failed (or was interrupted) while running: exit code 9.

    The message is one line; ``details["error_detail"]`` holds ComfyUI's full exception text of a failed node.
    """

    def __init__(self, result):
        self.result = result
        details = dict(result)
        full = ((result.get("error") or {}).get("exception_message") or "").strip()
        if full and result.get("status") == "error":
            details["error_detail"] = full
        super(WorkflowExecutionError, self).__init__(
            describe_failure(result), exit_code=EXIT_EXECUTION, details=details)


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


def _flat(text):
    """Several lines joined into one (validation problems are short: nothing is left out)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


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
            lines.append(_flat(_render_node_error(node_id, class_type, err or {})))
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
        lines.append(_flat(text))
    return lines


def _file_input(current_inputs):
    """``ckpt_name 'x.safetensors'`` for the first model/file input of an execution_error's ``current_inputs``."""
    for name in _FILE_INPUTS:
        value = (current_inputs or {}).get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, str) and value:
            return "%s %r" % (name, value)
    return None


def describe_failure(result):
    """One line for a failed/interrupted run result: the node, the file it was loading (when one of its inputs
    names a model or file), the exception type and the first meaningful line of ComfyUI's message."""
    err = result.get("error") or {}
    if result.get("status") == "interrupted":
        return "workflow %s was interrupted at node %s (%s)" % (
            result.get("prompt_id"), err.get("node_id"), err.get("node_type"))
    message = one_line(err.get("exception_message"), _MESSAGE_LIMIT)
    if err.get("node_id") is not None:
        where = "node %s (%s)" % (err.get("node_id"), err.get("node_type"))
        loading = _file_input(err.get("current_inputs"))
        if loading:
            where += " loading %s" % loading
        return "workflow %s failed on %s: %s: %s" % (
            result.get("prompt_id"), where, err.get("exception_type") or "error", message)
    return "workflow %s failed: %s" % (result.get("prompt_id"), message or "unknown error")


def failure_detail(err):
    """The full text behind an error's one-line message, or None when the line says it all.

    ComfyUI's complete exception message for a node that failed (:class:`WorkflowExecutionError`), else the
    text of any error whose message has more than one line.
    """
    detail = (getattr(err, "details", None) or {}).get("error_detail")
    if detail:
        return detail
    text = str(err)
    return text if "\n" in text.strip() else None
