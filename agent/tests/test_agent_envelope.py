# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""GPU agent: the envelope schema and validator, defaults, the workflow filling and the file-name rules."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from visionsuit_gpu_agent import config, envelope, workflow
from visionsuit_gpu_agent.staging import comfy_name

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "agent" / "visionsuit_gpu_agent"

SCHEMA = json.loads((PKG / "envelope.schema.json").read_text())
CFG = config.check({"server": {"api_token": "x" * 32},
                    "minio": {"endpoint": "http://127.0.0.1:9000", "access_key": "a", "secret_key": "b",
                              "outputs_prefix": "renders"},
                    "defaults": {"steps": 30, "negative_prompt": "blurry"}})

VALID = {
    "job_id": "job-1",
    "base_models": [{"key": "ckpt/sdxl.safetensors"}],
    "loras": [{"key": "loras/3f9a1c", "strength": 0.7}],
    "workflow": {"template": "sdxl-txt2img"},
    "parameters": {"prompt": "a cat", "seed": 1, "width": 832, "height": 1216},
    "output": {"bucket": "renders", "prefix": "jobs/job-1"},
    "callback_url": "https://dispatcher.example/hooks/job-1",
}

INVALID = [
    ({"parameters": {"prompt": "x"}}, ["base_models: is required"]),
    (dict(VALID, base_models=[{"key": "k%d" % i} for i in range(9)]), ["base_models: allows at most 8"]),
    (dict(VALID, base_models=[{"key": "../etc/passwd"}]), ["base_models[0].key"]),
    (dict(VALID, base_models=[{"key": "/abs"}]), ["base_models[0].key"]),
    (dict(VALID, base_models=[{"key": "a//b"}]), ["base_models[0].key"]),
    (dict(VALID, base_models=[{"key": "a/"}]), ["base_models[0].key"]),
    (dict(VALID, base_models=[{"key": "x", "bucket": "Bad_Bucket"}]), ["base_models[0].bucket"]),
    (dict(VALID, loras=[{"key": "l", "strength": "high"}]), ["loras[0].strength: must be a number"]),
    (dict(VALID, parameters={"prompt": ""}), ["parameters.prompt: must not be empty"]),
    (dict(VALID, parameters={"prompt": "x", "steps": 0, "width": 1001, "cfg": True}),
     ["parameters.steps", "parameters.width", "parameters.cfg"]),
    (dict(VALID, parameters={"prompt": "x", "sampler": "euler; rm -rf"}), ["parameters.sampler"]),
    (dict(VALID, workflow={}), ["workflow: give exactly one of template, inline"]),
    (dict(VALID, workflow={"template": "a", "inline": {"1": {}}}), ["workflow: give exactly one"]),
    (dict(VALID, workflow={"template": "nope"}), ["workflow.template: unknown template"]),
    (dict(VALID, callback_url="ftp://host/x"), ["callback_url"]),
    (dict(VALID, job_id="../x"), ["job_id"]),
    (dict(VALID, output={"prefix": "../up"}), ["output.prefix"]),
    (dict(VALID, extra=1), ["extra: unknown field"]),
    (dict(VALID, timeout=0), ["timeout: must be greater than 0"]),
]


def test_schema_is_valid_draft_2020_12():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_valid_envelope_passes_both_validators():
    jsonschema = pytest.importorskip("jsonschema")
    assert envelope.validate(VALID) == []
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(VALID)) == []


@pytest.mark.parametrize("env,expected", INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_envelopes_name_each_bad_field(env, expected):
    problems = envelope.validate(env)
    assert problems, env
    text = " | ".join(problems)
    for field in expected:
        assert field in text, text


SCHEMA_LEVEL = [case for case in INVALID if not any("unknown template" in e for e in case[1])]


@pytest.mark.parametrize("env,expected", SCHEMA_LEVEL, ids=[str(i) for i in range(len(SCHEMA_LEVEL))])
def test_the_reference_validator_agrees(env, expected):
    """Our stdlib validator and the jsonschema package reject the same schema-level problems."""
    jsonschema = pytest.importorskip("jsonschema")
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(env))


def test_every_problem_is_reported_at_once():
    bad = {"base_models": [{"key": "../a"}], "parameters": {"prompt": "", "steps": 5000}, "nope": 1}
    problems = envelope.validate(bad)
    assert len(problems) >= 4
    assert envelope.validate([]) == ["envelope: must be an object (got [])"]


def test_inline_workflow_checks():
    wf = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "{{checkpoint}}"}},
          "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["1", 0]}}}
    assert envelope.validate(dict(VALID, workflow={"inline": wf})) == []
    bad = copy.deepcopy(wf)
    bad["1"]["inputs"]["ckpt_name"] = "{{checkpoint_3}}"
    assert "checkpoint 3" in " ".join(envelope.validate(dict(VALID, workflow={"inline": bad})))
    bad["1"]["inputs"]["ckpt_name"] = "{{bogus}}"
    assert "unknown placeholder {{bogus}}" in " ".join(envelope.validate(dict(VALID, workflow={"inline": bad})))
    no_out = {"1": wf["1"]}
    assert "no output node" in " ".join(envelope.validate(dict(VALID, workflow={"inline": no_out})))
    ui = {"nodes": [], "links": []}
    assert "workflow.inline" in " ".join(envelope.validate(dict(VALID, workflow={"inline": ui})))


def test_normalize_applies_config_defaults():
    env = {"base_models": [{"key": "c", "persist": False}, {"key": "d"}], "loras": [{"key": "l"}],
           "parameters": {"prompt": "p"}}
    spec = envelope.normalize(env, CFG)
    p = spec["parameters"]
    assert (p["steps"], p["negative_prompt"], p["width"], p["sampler"]) == (30, "blurry", 1024, "euler")
    assert isinstance(p["seed"], int)
    assert spec["base_models"][0] == {"kind": "checkpoint", "key": "c", "bucket": "comfyui-checkpoints",
                                      "persist": False}
    assert spec["base_models"][1]["persist"] is True          # jobs.persist_checkpoints
    assert spec["loras"][0]["persist"] is False and spec["loras"][0]["strength"] == 0.8
    assert spec["loras"][0]["strength_clip"] == 0.8
    assert spec["workflow"] == {"template": "sdxl-txt2img"}
    assert spec["output"] == {"bucket": "comfyui-outputs", "prefix": "renders/" + spec["job_id"]}
    assert spec["timeout"] == CFG["jobs.timeout"]
    assert envelope.normalize(dict(env, timeout=10 ** 6), CFG)["timeout"] == CFG["jobs.timeout"]


def test_template_fill_and_lora_chain():
    params = envelope.normalize(VALID, CFG)["parameters"]
    wf = workflow.build(workflow.load_template("sdxl-txt2img"), params, ["base.safetensors"],
                        [{"name": "a.safetensors", "strength": 0.5, "strength_clip": 0.4},
                         {"name": "b.safetensors", "strength": 1.0, "strength_clip": 1.0}], "job-1", "job-1.a1")
    assert wf["4"]["inputs"]["ckpt_name"] == "base.safetensors"
    assert wf["3"]["inputs"]["seed"] == 1 and wf["3"]["inputs"]["steps"] == 30
    assert wf["5"]["inputs"]["width"] == 832 and isinstance(wf["5"]["inputs"]["width"], int)
    assert wf["9"]["inputs"]["filename_prefix"] == "vs-agent/job-1.a1/img"
    loras = {k: v for k, v in wf.items() if v["class_type"] == "LoraLoader"}
    assert [v["inputs"]["lora_name"] for _, v in sorted(loras.items())] == ["a.safetensors", "b.safetensors"]
    first, second = sorted(loras)
    assert loras[first]["inputs"]["model"] == ["4", 0] and loras[second]["inputs"]["clip"] == [first, 1]
    assert wf["3"]["inputs"]["model"] == [second, 0]
    assert wf["6"]["inputs"]["clip"] == [second, 1] and wf["7"]["inputs"]["clip"] == [second, 1]
    assert wf["8"]["inputs"]["vae"] == ["4", 2]                   # the VAE still comes from the checkpoint
    assert "{{" not in json.dumps(wf)


def test_template_is_the_validation_graph():
    validation = json.loads((ROOT / "roles" / "minio_helpers" / "files" / "validation.json").read_text())
    template = workflow.load_template("sdxl-txt2img")
    assert {k: v["class_type"] for k, v in validation.items() if v["class_type"] != "LoraLoader"} == \
        {k: v["class_type"] for k, v in template.items()}


def test_filename_prefix_of_every_output_node_is_redirected():
    wf = {"1": {"class_type": "X", "inputs": {"filename_prefix": "../../etc/out"}},
          "2": {"class_type": "Y", "inputs": {"filename_prefix": "ComfyUI"}}}
    out = workflow.build(wf, envelope.normalize(VALID, CFG)["parameters"], ["c"], [], "j", "j.a2")
    assert out["1"]["inputs"]["filename_prefix"] == "vs-agent/j.a2/out"
    assert out["2"]["inputs"]["filename_prefix"] == "vs-agent/j.a2/ComfyUI"


@pytest.mark.parametrize("original,kind,expected", [
    ("style.safetensors", "lora", "style.safetensors"),
    ("style", "lora", "style.safetensors"),
    ("model.ckpt", "checkpoint", "model.ckpt"),
    ("weird.name.v2", "lora", "weird.name.v2.safetensors"),
    (None, "lora", "LoraModel.safetensors"),
    ("", "lora", "LoraModel.safetensors"),
    (None, "checkpoint", "BaseModel.safetensors"),
    ("../../etc/passwd", "lora", "passwd.safetensors"),
    ("..", "lora", "LoraModel.safetensors"),
    ("a\\b\\c.safetensors", "lora", "c.safetensors"),
    ("evil\x00na\x1bme\n.safetensors", "lora", "evilname.safetensors"),
    (".hidden.safetensors", "lora", "hidden.safetensors"),
    ("  spaced .safetensors ", "lora", "spaced.safetensors"),
    ("x" * 300 + ".safetensors", "lora", "x" * 225 + ".safetensors"),       # 237 bytes (staging.MAX_NAME_BYTES)
    ("模" * 300, "lora", "模" * 75 + ".safetensors"),                        # 225 + 12 bytes, whole characters
])
def test_comfy_name_rules(original, kind, expected):
    assert comfy_name(original, kind) == expected


def test_config_check_names_every_bad_key():
    with pytest.raises(config.ConfigError) as exc:
        config.check({"server": {"port": 70000, "api_token": "short", "allowed_networks": ["nonsense"]},
                      "minio": {"endpoint": "ftp://x", "access_key": "a"}, "jobs": {"surface_mode": "hardlink"},
                      "bogus": {"x": 1}})
    text = "\n".join(exc.value.problems)
    for key in ("server.port", "server.api_token", "server.allowed_networks", "minio.endpoint",
                "minio.secret_key", "jobs.surface_mode", "bogus: unknown key"):
        assert key in text, text
    assert "short" not in text            # secrets are never echoed


def test_config_transfer_nice_default_and_range():
    good = {"server": {"api_token": "t" * 16}, "minio": {"endpoint": "http://m:9000", "access_key": "a",
                                                         "secret_key": "s"}}
    assert config.check(good)["minio.transfer_nice"] == 10
    with pytest.raises(config.ConfigError) as exc:
        config.check({**good, "minio": {**good["minio"], "transfer_nice": 25}})
    assert any(p.startswith("minio.transfer_nice: must be 0-19") for p in exc.value.problems), exc.value.problems
