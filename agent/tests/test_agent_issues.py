# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""GPU agent: regression tests for tracker issues at the handler/envelope/staging level (no sockets).

* deeply nested JSON and non-finite numbers (NaN, Infinity) in ``POST /jobs`` are 400s naming the problem;
* ComfyUI file names are cut to a byte limit on a UTF-8 boundary, and OS errors while staging get a hint
  that fits the error (a too-long name is not a disk-space problem);
* a model-free workflow: ``base_models`` may be empty.
"""
from __future__ import annotations

import errno
import json
import os

import pytest

from visionsuit_gpu_agent import config, envelope, handler, staging
from visionsuit_gpu_agent.jobs import JobStore
from visionsuit_gpu_agent.metrics import Metrics
from visionsuit_gpu_agent.staging import MODEL_EXTENSIONS, Stager, StagingError, comfy_name, suffixed
from visionsuit_gpu_agent.worker import InvalidEnvelope

TOKEN = "s3cret-token-0123456789"
CFG = config.check({"server": {"api_token": TOKEN},
                    "minio": {"endpoint": "http://127.0.0.1:9000", "access_key": "a", "secret_key": "b"}})
MODEL_FREE_WF = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 255}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "plain"}},
}


class ValidatingAgent:
    """The handler's view of worker.Agent: submit validates like the real one."""

    def __init__(self, cfg=CFG):
        self.cfg = cfg
        self.metrics = Metrics()
        self.accepted = []

    def submit(self, env):
        problems = envelope.validate(env)
        if problems:
            raise InvalidEnvelope(problems)
        self.accepted.append(env)
        return {"job_id": env.get("job_id") or "generated", "state": "queued"}, True

    def retry_after(self):
        return 1


def post(agent, body):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return handler.handle(agent, "POST", "/jobs", {"Authorization": "Bearer " + TOKEN,
                                                   "Content-Type": "application/json",
                                                   "Content-Length": str(len(body))}, body, "127.0.0.1")


def good(**over):
    env = {"job_id": "j1", "base_models": [{"key": "ckpt/a.safetensors"}], "parameters": {"prompt": "a cat"}}
    env.update(over)
    return env


# ---------------------------------------------------------------------------------------------- deep nesting
@pytest.mark.parametrize("body", [
    b"[" * 100000 + b"]" * 100000,
    b'{"base_models": ' + b"[" * 100000 + b"]" * 100000 + b', "parameters": {"prompt": "x"}}',
    b'{"a": ' * 50000 + b"1" + b"}" * 50000,
], ids=["array", "inside-a-field", "objects"])
def test_deeply_nested_json_is_a_400(body):
    agent = ValidatingAgent()
    resp = post(agent, body)
    assert resp.status == 400, resp.body[:200]
    assert "nested" in resp.json()["error"]
    assert agent.accepted == []


def test_nesting_that_json_parses_but_is_too_deep_is_a_400():
    inner = "x"
    for _ in range(300):
        inner = [inner]
    wf = dict(MODEL_FREE_WF, **{"3": {"class_type": "Note", "inputs": {"text": inner}}})
    resp = post(ValidatingAgent(), good(workflow={"inline": wf}))
    assert resp.status == 400
    assert any("nested" in p for p in resp.json()["problems"]), resp.json()


def test_validate_survives_a_deep_python_object():
    deep = []
    for _ in range(100000):
        deep = [deep]
    problems = envelope.validate({"base_models": deep, "parameters": {"prompt": "x"}})
    assert problems and any("nested" in p for p in problems), problems[:3]


# ---------------------------------------------------------------------------------------------- NaN / Infinity
@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
@pytest.mark.parametrize("field,template", [
    ("parameters.cfg", b'{"base_models":[{"key":"a"}],"parameters":{"prompt":"x","cfg":%s}}'),
    ("parameters.denoise", b'{"base_models":[{"key":"a"}],"parameters":{"prompt":"x","denoise":%s}}'),
    ("loras[0].strength", b'{"base_models":[{"key":"a"}],"loras":[{"key":"l","strength":%s}],'
                          b'"parameters":{"prompt":"x"}}'),
    ("loras[0].strength_clip", b'{"base_models":[{"key":"a"}],"loras":[{"key":"l","strength_clip":%s}],'
                               b'"parameters":{"prompt":"x"}}'),
    ("timeout", b'{"base_models":[{"key":"a"}],"parameters":{"prompt":"x"},"timeout":%s}'),
    ("parameters.steps", b'{"base_models":[{"key":"a"}],"parameters":{"prompt":"x","steps":%s}}'),
    ("workflow.inline.1.inputs.cfg", b'{"base_models":[{"key":"a"}],"parameters":{"prompt":"x"},"workflow":'
                                     b'{"inline":{"1":{"class_type":"KSampler","inputs":{"cfg":%s,'
                                     b'"filename_prefix":"x","ckpt_name":"{{checkpoint}}"}}}}}'),
])
def test_non_finite_numbers_are_a_400_naming_the_field(field, template, literal):
    agent = ValidatingAgent()
    resp = post(agent, template % literal)
    assert resp.status == 400, resp.body
    problems = resp.json()["problems"]
    assert any(p.startswith(field + ": ") and "finite" in p for p in problems), problems
    assert agent.accepted == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_validate_rejects_non_finite_numbers(value):
    problems = envelope.validate(good(parameters={"prompt": "x", "cfg": value}))
    assert [p for p in problems if p.startswith("parameters.cfg: ")], problems
    assert len(problems) == 1, problems   # one problem per bad field


# ---------------------------------------------------------------------------------------------- file names
def _bytes(name):
    return len(name.encode("utf-8"))


def test_name_limit_leaves_room_for_suffixes():
    longest_suffix = len("_999")
    temp = len("." + staging.COPY_SUFFIX)
    assert staging.MAX_NAME_BYTES + longest_suffix + temp <= 255
    assert staging.MAX_NAME_BYTES == 237


@pytest.mark.parametrize("original,kind", [
    ("模" * 300, "lora"),
    ("模" * 300 + ".safetensors", "lora"),
    ("模" * 300 + ".ckpt", "checkpoint"),
    ("a" + "模" * 300 + ".pt", "lora"),
    ("ab" + "模" * 300, "checkpoint"),
    ("😀" * 100 + ".sft", "lora"),
    ("x" * 300 + ".safetensors", "lora"),
    ("é" * 200, "lora"),
])
def test_comfy_name_is_cut_in_bytes_on_a_utf8_boundary(original, kind):
    name = comfy_name(original, kind)
    assert _bytes(name) <= staging.MAX_NAME_BYTES, (_bytes(name), name)
    assert _bytes(suffixed(name, 999)) + len("." + staging.COPY_SUFFIX) <= 255
    assert name.encode("utf-8").decode("utf-8") == name          # whole characters only
    ext = os.path.splitext(original)[1]
    assert name.endswith(ext if ext in MODEL_EXTENSIONS else ".safetensors"), name
    stem = os.path.splitext(name)[0]
    assert original.startswith(stem) and len(stem) > 0
    # as long as possible: one more character of the original would not fit
    assert _bytes(name) > staging.MAX_NAME_BYTES - 4


def test_short_names_are_not_cut():
    assert comfy_name("模型.safetensors", "lora") == "模型.safetensors"
    assert comfy_name("x" * 225 + ".safetensors", "lora") == "x" * 225 + ".safetensors"


def _stager(tmp_path, **jobs):
    cfg = config.check({"server": {"api_token": TOKEN}, "state_dir": str(tmp_path / "state"),
                        "minio": {"endpoint": "http://127.0.0.1:9000", "access_key": "a", "secret_key": "b"},
                        "comfyui": {"checkpoints_dir": str(tmp_path / "models" / "checkpoints"),
                                    "loras_dir": str(tmp_path / "models" / "loras")},
                        "jobs": jobs})
    store = JobStore(str(tmp_path / "state" / "jobs.sqlite3"))
    return Stager(cfg, None, store, Metrics(), None), store


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_a_300_character_cjk_name_is_surfaced_and_collision_safe(tmp_path, mode):
    stager, store = _stager(tmp_path, surface_mode=mode)
    cached = tmp_path / "cache.bin"
    cached.write_bytes(b"model")
    fetched = {"original": "模" * 300, "cache_path": str(cached), "etag": "e1"}
    asset = {"kind": "lora", "bucket": "b", "key": "loras/x", "persist": False}
    try:
        first, new = stager.surface("j1", asset, fetched, set())
        assert new and _bytes(first) <= staging.MAX_NAME_BYTES and first.endswith(".safetensors")
        second, _ = stager.surface("j1", dict(asset, key="loras/y"), fetched, set())
        assert second == suffixed(first, 2)
        assert sorted(os.listdir(tmp_path / "models" / "loras")) == sorted([first, second])
    finally:
        store.close()


@pytest.mark.parametrize("code,wanted,unwanted", [
    (errno.ENAMETOOLONG, "too long", "free space"),
    (errno.ENOSPC, "free space", "too long"),
    (errno.EACCES, "may write", "free space"),
    (errno.EROFS, "read-only", "free space"),
])
def test_surface_error_text_fits_the_error(tmp_path, monkeypatch, code, wanted, unwanted):
    stager, store = _stager(tmp_path)

    def fail(*_a, **_k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(staging.os, "symlink", fail)
    fetched = {"original": "style.safetensors", "cache_path": str(tmp_path / "c"), "etag": "e"}
    try:
        with pytest.raises(StagingError) as exc:
            stager.surface("j1", {"kind": "lora", "bucket": "b", "key": "k", "persist": False}, fetched, set())
        text = str(exc.value)
        assert wanted in text and unwanted not in text, text
        assert os.strerror(code) in text
        assert store.surfaced() == []
    finally:
        store.close()


@pytest.mark.parametrize("code,wanted,unwanted", [
    (errno.ENAMETOOLONG, "too long", "free space"),
    (errno.ENOSPC, "free space", "too long"),
])
def test_download_error_text_fits_the_error(tmp_path, monkeypatch, code, wanted, unwanted):
    stager, store = _stager(tmp_path)

    class Client:
        def head_object(self, bucket, key):
            return {"etag": "e", "size": 1, "metadata": {}}

    def fail(*_a, **_k):
        raise OSError(code, os.strerror(code))

    stager.client = Client()
    monkeypatch.setattr(staging, "download_object", fail)
    try:
        with pytest.raises(StagingError) as exc:
            stager.fetch("b", "k/" + "模" * 100)
        text = str(exc.value)
        assert wanted in text and unwanted not in text, text
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------- model-free
def test_model_free_envelope_is_valid_and_normalizes():
    env = {"job_id": "plain", "base_models": [], "workflow": {"inline": MODEL_FREE_WF},
           "parameters": {"prompt": "unused"}}
    assert envelope.validate(env) == []
    spec = envelope.normalize(env, CFG)
    assert spec["base_models"] == [] and spec["loras"] == []
    resp = post(ValidatingAgent(), env)
    assert resp.status == 202, resp.body


def test_model_free_envelope_with_a_model_workflow_is_a_400():
    problems = envelope.validate({"base_models": [], "parameters": {"prompt": "x"}})  # the default template
    assert any(p.startswith("workflow: ") and "base_models is empty" in p for p in problems), problems
    problems = envelope.validate({"base_models": [], "parameters": {"prompt": "x"},
                                  "workflow": {"template": "sdxl-txt2img"}})
    assert any(p.startswith("workflow.template: ") and "{{checkpoint}}" in p and "base_models" in p
               for p in problems), problems
    loader = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "{{checkpoint}}"}}
    wf = dict(MODEL_FREE_WF, **{"3": loader})
    problems = envelope.validate({"base_models": [], "parameters": {"prompt": "x"}, "workflow": {"inline": wf}})
    assert any("{{checkpoint}}" in p for p in problems), problems


def test_loras_need_a_place_in_the_workflow():
    problems = envelope.validate({"base_models": [], "loras": [{"key": "l"}], "parameters": {"prompt": "x"},
                                  "workflow": {"inline": MODEL_FREE_WF}})
    assert any(p.startswith("loras: ") and "checkpoint loader" in p for p in problems), problems


# ---------------------------------------------------------------------------------------------- fuzz findings
def test_odd_field_names_are_quoted_on_one_line():
    problems = envelope.validate({"base_models": [{"key": "a", "bad\nname": 1}], "parameters": {"prompt": "x"}})
    assert problems == ['base_models[0]."bad\\nname": unknown field (allowed: bucket, key, persist)'], problems


def test_a_node_id_that_int_cannot_read_is_refused():
    wf = {"\u00b2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "{{checkpoint}}"}},
          "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["\u00b2", 0]}}}
    problems = envelope.validate({"base_models": [{"key": "a"}], "loras": [{"key": "l"}],
                                  "parameters": {"prompt": "x"}, "workflow": {"inline": wf}})
    assert any(p.startswith('workflow.inline."\\u00b2": ') for p in problems), problems
