# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The dispatch envelope: validation against ``envelope.schema.json`` and the defaults from the config.

:func:`validate` returns the list of problems (``"parameters.steps: must be at most 1000 (got 5000)"``), each
naming the field at fault; :func:`normalize` turns a valid envelope into the job specification the worker
runs (every default resolved, so a job re-run after a restart does not depend on a changed config).

The validator implements the part of JSON Schema 2020-12 the schema uses (type, properties, required,
additionalProperties, items, min/maxItems, min/maxProperties, minimum, maximum, exclusiveMinimum,
multipleOf, min/maxLength, pattern, enum, oneOf, local ``$ref``), with the standard library only.

Before the schema, :func:`validate` walks the envelope once without recursion and refuses what JSON Schema
does not express: nesting deeper than :data:`MAX_DEPTH` levels (so nothing later recurses without bound) and
non-finite numbers (``NaN``, ``Infinity``, ``-Infinity`` or ``1e999``, which Python's JSON parser accepts) in
any field, each problem naming the field.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import uuid

from .workflow import WorkflowError, check_placeholders, load_template, placeholders, template_names

#: How deep an envelope may nest (objects and lists). An API-format workflow needs about 6 levels
#: (envelope > workflow > inline > node > inputs > value); deeper bodies are refused with a 400.
MAX_DEPTH = 64

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "envelope.schema.json")
_SCHEMA = None


def schema():
    global _SCHEMA
    if _SCHEMA is None:
        with open(SCHEMA_PATH, encoding="utf-8") as f:  # package data of visionsuit_gpu_agent
            _SCHEMA = json.load(f)
    return _SCHEMA


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_TYPE_WORDS = {"object": "an object", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _short(value):
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _resolve(node, root):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported: {ref}")
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_:\-]{1,64}$")   # field names, node ids ("12", "12:5")


def _name(name):
    """A field name fit for a one-line problem: plain names as they are, others quoted (and cut)."""
    name = str(name)
    if _PLAIN_NAME.match(name):
        return name
    quoted = json.dumps(name)
    return quoted if len(quoted) <= 66 else quoted[:62] + '..."'


def _join(path, name):
    return f"{path}.{_name(name)}" if path else _name(name)


def _non_finite(value):
    return isinstance(value, float) and not math.isfinite(value)


def scan(value):
    """Problems of nesting deeper than :data:`MAX_DEPTH` and of non-finite numbers, without recursion.

    Returns ``(problems, too_deep)``; a too-deep value is reported once, and not walked further.
    """
    problems = []
    stack = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if _non_finite(item):
            problems.append("{}: must be a finite number (got {}; JSON has no NaN or Infinity)".format(
                path or "envelope", _short(item)))
        elif isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                return ["{}: nested too deeply (more than {} levels of objects and lists)".format(
                    path or "envelope", MAX_DEPTH)], True
            if isinstance(item, dict):
                children = [(v, _join(path, k)) for k, v in item.items()]
            else:
                children = [(v, "{}[{}]".format(path or "envelope", i)) for i, v in enumerate(item)]
            stack.extend((v, p, depth + 1) for v, p in reversed(children))
    return problems, False


def check_schema(value, node, root, path, problems):
    """Append ``field: message`` problems of ``value`` against the schema ``node``.

    Non-finite numbers are left to :func:`scan` (one problem per field, whatever the schema says).
    """
    if _non_finite(value):
        return
    node = _resolve(node, root)
    where = path or "envelope"
    kind = node.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_TYPES[k](value) for k in kinds):
            words = " or ".join(_TYPE_WORDS[k] for k in kinds)
            problems.append(f"{where}: must be {words} (got {_short(value)})")
            return
    if "enum" in node and value not in node["enum"]:
        choices = ", ".join(_short(v) for v in node["enum"])
        problems.append(f"{where}: must be one of {choices} (got {_short(value)})")
    if isinstance(value, str):
        if "minLength" in node and len(value) < node["minLength"]:
            problems.append(f"{where}: must not be empty" if node["minLength"] == 1 else
                            "{}: must have at least {} characters".format(where, node["minLength"]))
        if "maxLength" in node and len(value) > node["maxLength"]:
            problems.append("{}: must have at most {} characters (got {})".format(where, node["maxLength"], len(value)))
        if "pattern" in node and not re.search(node["pattern"], value):
            problems.append("{}: {} is not allowed ({})".format(where, _short(value), node.get(
                "description") or "must match {}".format(node["pattern"])))
    if _TYPES["number"](value):
        if "minimum" in node and value < node["minimum"]:
            problems.append("{}: must be at least {} (got {})".format(where, node["minimum"], value))
        if "maximum" in node and value > node["maximum"]:
            problems.append("{}: must be at most {} (got {})".format(where, node["maximum"], value))
        if "exclusiveMinimum" in node and value <= node["exclusiveMinimum"]:
            problems.append("{}: must be greater than {} (got {})".format(where, node["exclusiveMinimum"], value))
        if "multipleOf" in node and value % node["multipleOf"]:
            problems.append("{}: must be a multiple of {} (got {})".format(where, node["multipleOf"], value))
    if isinstance(value, list):
        if "minItems" in node and len(value) < node["minItems"]:
            problems.append("{}: needs at least {} item(s)".format(where, node["minItems"]))
        if "maxItems" in node and len(value) > node["maxItems"]:
            problems.append("{}: allows at most {} items (got {})".format(where, node["maxItems"], len(value)))
        if "items" in node:
            for i, item in enumerate(value):
                check_schema(item, node["items"], root, f"{where}[{i}]", problems)
    if isinstance(value, dict):
        props = node.get("properties") or {}
        if "minProperties" in node and len(value) < node["minProperties"]:
            problems.append(f"{where}: must not be empty")
        if "maxProperties" in node and len(value) > node["maxProperties"]:
            problems.append("{}: allows at most {} entries (got {})".format(where, node["maxProperties"], len(value)))
        for name in node.get("required") or []:
            if name not in value:
                problems.append(f"{_join(path, name)}: is required")
        for name, item in value.items():
            if name in props:
                check_schema(item, props[name], root, _join(path, name), problems)
            elif node.get("additionalProperties") is False:
                problems.append("{}: unknown field (allowed: {})".format(_join(path, name), ", ".join(sorted(props))))
    if "oneOf" in node:
        matches = 0
        for sub in node["oneOf"]:
            sub_problems = []
            check_schema(value, sub, root, path, sub_problems)
            matches += not sub_problems
        if matches != 1:
            alternatives = [" + ".join(_resolve(s, root).get("required") or []) or "?" for s in node["oneOf"]]
            problems.append("{}: give exactly one of {}".format(where, ", ".join(alternatives)))


def validate(envelope, max_template_check=True):
    """All problems of a parsed envelope (empty list: valid)."""
    problems, too_deep = scan(envelope)
    if too_deep:
        return problems
    check_schema(envelope, schema(), schema(), "", problems)
    if problems or not isinstance(envelope, dict):
        return problems
    wf = envelope.get("workflow") or {}
    n_ckpt, n_lora = len(envelope["base_models"]), len(envelope.get("loras") or [])
    if not n_ckpt and "workflow" not in envelope:
        problems.append("workflow: is required when base_models is empty (a model-free job names its workflow; "
                        "the default template renders from a base model)")
    if "template" in wf:
        if wf["template"] not in template_names():
            problems.append("workflow.template: unknown template {!r} (shipped: {})".format(
                wf["template"], ", ".join(template_names())))
        elif max_template_check:
            template = load_template(wf["template"])
            try:
                check_placeholders(template, n_ckpt, n_lora, field="workflow.template")
            except WorkflowError as err:
                problems.append(f"{err.field}: {err}")
            else:
                problems.extend(_check_models(template, n_ckpt, n_lora, "workflow.template"))
    if "inline" in wf:
        problems.extend(_check_inline(wf["inline"], n_ckpt, n_lora))
    return problems


def _check_models(wf, n_ckpt, n_lora, field):
    """What the envelope's models need from the workflow: ``{{checkpoint}}`` needs a base model (a model-free
    workflow has ``base_models: []``), LoRAs need ``{{lora_<i>}}`` placeholders or a checkpoint loader to be
    chained after (see :func:`.workflow.chain_loras`)."""
    problems = []
    used = placeholders(wf)
    if not n_ckpt and "checkpoint" in used:
        problems.append(f"{field}: uses {{{{checkpoint}}}} but base_models is empty (give the base model, or a "
                        "workflow that needs none)")
    if n_lora and not any(n.startswith("lora_") for n in used) and not any(
            isinstance(node.get("inputs"), dict) and "ckpt_name" in node["inputs"] for node in wf.values()):
        problems.append("loras: the workflow has no checkpoint loader (a node with a ckpt_name input) to chain the "
                        "LoRAs after; use {{lora_<i>}} placeholders, or send no loras")
    return problems


def _check_inline(inline, n_ckpt, n_lora):
    problems = []
    for node_id, node in inline.items():
        where = _join("workflow.inline", node_id)
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            problems.append(f"{where}: not an API-format node (needs class_type and inputs); export "
                            "the workflow with 'Save (API Format)'")
        elif not isinstance(node.get("inputs", {}), dict):
            problems.append(f"{where}.inputs: must be an object")
        elif node_id.isdigit() and not node_id.isascii():   # "²": a digit to str.isdigit, not to int()
            problems.append(f"{where}: a numeric node id must use the digits 0-9")
    if problems:
        return problems
    try:
        check_placeholders(inline, n_ckpt, n_lora, field="workflow.inline")
    except WorkflowError as err:
        problems.append(f"{err.field}: {err}")
    else:
        problems.extend(_check_models(inline, n_ckpt, n_lora, "workflow.inline"))
    if not any(isinstance(n.get("inputs"), dict) and "filename_prefix" in n["inputs"] for n in inline.values()):
        problems.append("workflow.inline: has no output node (a node with a filename_prefix input such as "
                        "SaveImage), so the job would produce nothing to upload")
    return problems


def new_job_id():
    return uuid.uuid4().hex


def normalize(envelope, cfg):
    """A valid envelope with every default resolved: the job specification stored and run by the worker."""
    d = cfg.section("defaults")
    job_id = envelope.get("job_id") or new_job_id()
    params = dict(envelope["parameters"])
    params.setdefault("negative_prompt", d["negative_prompt"])
    if "seed" not in params:
        params["seed"] = secrets.randbelow(2 ** 32)
    for name in ("steps", "cfg", "width", "height", "sampler", "scheduler", "batch_size", "denoise"):
        params.setdefault(name, d[name])
    persist_models = envelope.get("persist_models", cfg["jobs.persist_checkpoints"])
    base_models = [{"kind": "checkpoint", "key": m["key"], "bucket": m.get("bucket") or cfg["minio.bucket_checkpoints"],
                    "persist": m.get("persist", persist_models)} for m in envelope["base_models"]]
    loras = []
    for m in envelope.get("loras") or []:
        strength = m.get("strength", d["lora_strength"])
        loras.append({"kind": "lora", "key": m["key"], "bucket": m.get("bucket") or cfg["minio.bucket_loras"],
                      "persist": m.get("persist", cfg["jobs.persist_loras"]), "strength": strength,
                      "strength_clip": m.get("strength_clip", strength)})
    wf = envelope.get("workflow") or {"template": d["template"]}
    output = envelope.get("output") or {}
    prefix = output.get("prefix")
    if prefix is None:
        base = (cfg["minio.outputs_prefix"] or "").strip("/")
        prefix = f"{base}/{job_id}" if base else job_id
    timeout = min(float(envelope.get("timeout", cfg["jobs.timeout"])), cfg["jobs.timeout"])
    return {
        "job_id": job_id, "base_models": base_models, "loras": loras, "workflow": wf, "parameters": params,
        "output": {"bucket": output.get("bucket") or cfg["minio.bucket_outputs"], "prefix": prefix.strip("/")},
        "callback_url": envelope.get("callback_url"), "timeout": timeout,
    }


def parse_body(body):
    """bytes -> (envelope, problems): JSON errors become one problem naming the position."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, ["body: not UTF-8 text"]
    if not text.strip():
        return None, ["body: empty; send the dispatch envelope as JSON"]
    too_deep = [f"body: JSON nested too deeply (more than {MAX_DEPTH} levels of objects and lists)"]
    try:
        value = json.loads(text)
    except RecursionError:
        return None, too_deep
    except ValueError as err:
        return None, [f"body: not valid JSON ({err})"]
    if scan(value)[1]:
        return None, too_deep
    return value, []
