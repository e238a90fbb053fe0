"""The dispatch envelope: validation against ``envelope.schema.json`` and the defaults from the config.

:func:`validate` returns the list of problems (``"parameters.steps: must be at most 1000 (got 5000)"``), each
naming the field at fault; :func:`normalize` turns a valid envelope into the job specification the worker
runs (every default resolved, so a job re-run after a restart does not depend on a changed config).

The validator implements the part of JSON Schema 2020-12 the schema uses (type, properties, required,
additionalProperties, items, min/maxItems, min/maxProperties, minimum, maximum, exclusiveMinimum,
multipleOf, min/maxLength, pattern, enum, oneOf, local ``$ref``), with the standard library only.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import uuid

from .workflow import WorkflowError, check_placeholders, load_template, template_names

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


def _join(path, name):
    return f"{path}.{name}" if path else str(name)


def check_schema(value, node, root, path, problems):
    """Append ``field: message`` problems of ``value`` against the schema ``node``."""
    node = _resolve(node, root)
    where = path or "envelope"
    kind = node.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_TYPES[k](value) for k in kinds):
            problems.append("{}: must be {} (got {})".format(where, " or ".join(_TYPE_WORDS[k] for k in kinds),
                                                         _short(value)))
            return
    if "enum" in node and value not in node["enum"]:
        problems.append("{}: must be one of {} (got {})".format(where, ", ".join(_short(v) for v in node["enum"]),
                                                            _short(value)))
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
    problems = []
    check_schema(envelope, schema(), schema(), "", problems)
    if problems or not isinstance(envelope, dict):
        return problems
    wf = envelope.get("workflow") or {}
    n_ckpt, n_lora = len(envelope["base_models"]), len(envelope.get("loras") or [])
    if "template" in wf:
        if wf["template"] not in template_names():
            problems.append("workflow.template: unknown template {!r} (shipped: {})".format(
                wf["template"], ", ".join(template_names())))
        elif max_template_check:
            try:
                check_placeholders(load_template(wf["template"]), n_ckpt, n_lora, field="workflow.template")
            except WorkflowError as err:
                problems.append(f"{err.field}: {err}")
    if "inline" in wf:
        problems.extend(_check_inline(wf["inline"], n_ckpt, n_lora))
    return problems


def _check_inline(inline, n_ckpt, n_lora):
    problems = []
    for node_id, node in inline.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            problems.append(f"workflow.inline.{node_id}: not an API-format node (needs class_type and inputs); export "
                            "the workflow with 'Save (API Format)'")
        elif not isinstance(node.get("inputs", {}), dict):
            problems.append(f"workflow.inline.{node_id}.inputs: must be an object")
    if problems:
        return problems
    try:
        check_placeholders(inline, n_ckpt, n_lora, field="workflow.inline")
    except WorkflowError as err:
        problems.append(f"{err.field}: {err}")
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
    try:
        return json.loads(text), []
    except ValueError as err:
        return None, [f"body: not valid JSON ({err})"]
