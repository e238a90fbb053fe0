# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Workflow templates shipped with the agent and the filling of placeholders.

A template (``templates/<name>.json``) or an inline workflow is ComfyUI's API format in which string values
may hold placeholders ``{{name}}``. A value that is exactly one placeholder takes the parameter's type
(``"seed": "{{seed}}"`` becomes an integer); a placeholder inside a longer string is replaced as text.

Placeholders: ``prompt, negative_prompt, seed, steps, cfg, width, height, sampler, scheduler, batch_size,
denoise, job_id, filename_prefix, checkpoint`` (= ``checkpoint_0``), ``checkpoint_<i>``, ``lora_<i>``,
``lora_<i>_strength``, ``lora_<i>_strength_clip``.

LoRAs: when the workflow uses no ``{{lora_...}}`` placeholder, one ``LoraLoader`` per LoRA is chained after
the first checkpoint loader (the node with a ``ckpt_name`` input) and every consumer of the loader's MODEL
and CLIP outputs is rewired to the end of the chain. Every ``filename_prefix`` input is pointed at the job's
own output folder ``vs-agent/<job_id>.a<attempt>/`` so that the outputs of a job are found, uploaded and
removed without touching anything else (the attempt number makes a re-run after a restart a new prompt for
ComfyUI, whose cache would otherwise answer with the files of the interrupted run).
"""
from __future__ import annotations

import copy
import json
import os
import re

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
SCALAR_NAMES = ("prompt", "negative_prompt", "seed", "steps", "cfg", "width", "height", "sampler", "scheduler",
                "batch_size", "denoise", "job_id", "filename_prefix", "checkpoint")
INDEXED_RE = re.compile(r"^(checkpoint|lora)_(\d+)(_strength|_strength_clip)?$")
OUTPUT_SUBDIR = "vs-agent"


class WorkflowError(Exception):
    """A workflow that cannot be filled; ``field`` names the envelope field at fault."""

    def __init__(self, message, field="workflow"):
        super().__init__(message)
        self.field = field


def template_names():
    try:
        return sorted(n[:-5] for n in os.listdir(TEMPLATE_DIR) if n.endswith(".json"))
    except OSError:
        return []


def load_template(name):
    if name not in template_names():
        raise WorkflowError("unknown workflow template {!r} (shipped: {})".format(name, ", ".join(template_names())),
                            field="workflow.template")
    with open(os.path.join(TEMPLATE_DIR, name + ".json"), encoding="utf-8") as f:
        return json.load(f)


def placeholders(workflow):
    """The set of placeholder names used anywhere in the workflow."""
    found = set()

    def walk(value):
        if isinstance(value, str):
            found.update(m.group(1) for m in PLACEHOLDER_RE.finditer(value))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(workflow)
    return found


def check_placeholders(workflow, n_checkpoints, n_loras, field="workflow"):
    """Raise WorkflowError for unknown placeholders or indexes beyond the envelope's assets."""
    for name in sorted(placeholders(workflow)):
        if name in SCALAR_NAMES:
            continue
        m = INDEXED_RE.match(name)
        if not m:
            raise WorkflowError("unknown placeholder {{{{{}}}}} (known: {}, checkpoint_<i>, lora_<i>, "
                                "lora_<i>_strength, lora_<i>_strength_clip)".format(name, ", ".join(SCALAR_NAMES)),
                                field=field)
        index = int(m.group(2))
        count = n_checkpoints if m.group(1) == "checkpoint" else n_loras
        if index >= count:
            raise WorkflowError(f"placeholder {{{{{name}}}}} refers to {m.group(1)} {index} but the envelope has "
                                f"{count}", field=field)


def _is_link(value):
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _substitute(value, values):
    if isinstance(value, str):
        whole = PLACEHOLDER_RE.fullmatch(value.strip())
        if whole:
            return copy.deepcopy(values[whole.group(1)])
        return PLACEHOLDER_RE.sub(lambda m: str(values[m.group(1)]), value)
    if isinstance(value, dict):
        return {k: _substitute(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, values) for v in value]
    return value


def _node_ids(workflow):
    return [int(k) for k in workflow if str(k).isdigit()]


def chain_loras(workflow, loras):
    """Insert a LoraLoader chain after the first checkpoint loader (see the module docstring)."""
    if not loras:
        return workflow
    loader = None
    for node_id in sorted(workflow, key=lambda k: (0, int(k)) if str(k).isdigit() else (1, str(k))):
        if "ckpt_name" in (workflow[node_id].get("inputs") or {}):
            loader = node_id
            break
    if loader is None:
        raise WorkflowError("the workflow has no checkpoint loader (a node with a ckpt_name input) to chain the "
                            "LoRAs after; use {{lora_<i>}} placeholders instead", field="loras")
    next_id = max(_node_ids(workflow) or [0]) + 1
    chain = []
    model, clip = [loader, 0], [loader, 1]
    for i, lora in enumerate(loras):
        node_id = str(next_id + i)
        workflow[node_id] = {"class_type": "LoraLoader", "_meta": {"title": f"LoRA {i} (agent)"},
                             "inputs": {"model": model, "clip": clip, "lora_name": lora["name"],
                                        "strength_model": lora["strength"],
                                        "strength_clip": lora["strength_clip"]}}
        chain.append(node_id)
        model, clip = [node_id, 0], [node_id, 1]
    for node_id, node in workflow.items():
        if node_id in chain:
            continue
        inputs = node.get("inputs") or {}
        for name, value in inputs.items():
            if _is_link(value) and value[0] == loader and value[1] in (0, 1):
                inputs[name] = list(model if value[1] == 0 else clip)
    return workflow


def build(workflow, params, checkpoints, loras, job_id, run_dir=None):
    """Return the filled API-format workflow.

    :param params: the job parameters (defaults applied).
    :param checkpoints: list of ComfyUI names of the staged base models.
    :param loras: list of ``{"name", "strength", "strength_clip"}`` (staged names).
    :param run_dir: the folder under ``vs-agent/`` for the outputs (default: the job id).
    """
    run_dir = run_dir or job_id
    wf = copy.deepcopy(workflow)
    check_placeholders(wf, len(checkpoints), len(loras))
    prefix = f"{OUTPUT_SUBDIR}/{run_dir}/img"
    values = {
        "prompt": params["prompt"], "negative_prompt": params["negative_prompt"], "seed": params["seed"],
        "steps": params["steps"], "cfg": params["cfg"], "width": params["width"], "height": params["height"],
        "sampler": params["sampler"], "scheduler": params["scheduler"], "batch_size": params["batch_size"],
        "denoise": params["denoise"], "job_id": job_id, "filename_prefix": prefix,
    }
    for i, name in enumerate(checkpoints):
        values[f"checkpoint_{i}"] = name
    if checkpoints:
        values["checkpoint"] = checkpoints[0]
    for i, lora in enumerate(loras):
        values[f"lora_{i}"] = lora["name"]
        values[f"lora_{i}_strength"] = lora["strength"]
        values[f"lora_{i}_strength_clip"] = lora["strength_clip"]
    uses_lora_placeholders = any(n.startswith("lora_") for n in placeholders(wf))
    wf = _substitute(wf, values)
    if not uses_lora_placeholders:
        wf = chain_loras(wf, loras)
    for node in wf.values():
        inputs = node.get("inputs") or {}
        if isinstance(inputs.get("filename_prefix"), str):
            base = inputs["filename_prefix"].replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
            base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".") or "img"
            inputs["filename_prefix"] = f"{OUTPUT_SUBDIR}/{run_dir}/{base}"
    return wf
