# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""GPU agent: property-based tests of envelope validation and of ``POST /jobs`` (hypothesis).

Whatever JSON (or non-JSON) arrives, :func:`envelope.validate` returns ``field: message`` problems and never
raises; an envelope it accepts normalizes, fills its workflow and serializes as strict JSON (no NaN reaches
ComfyUI or the job store); and :func:`handler.handle` answers ``POST /jobs`` with 202/200 or one of the
documented 4xx answers (400, 409, 413, 429) with a JSON error — never a 500 or an exception; ``POST /drain`` and
``POST /resume`` answer 200 or 400.

Bounded (``max_examples``), no deadline (a loaded 2-core machine must not flake), no example database (the
checkout is not written to).
"""
from __future__ import annotations

import json
import tempfile

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rig.fuzz import SETTINGS  # noqa: E402  (bounded, derandomized, caches outside the checkout)

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

from visionsuit_gpu_agent import config, envelope, handler, workflow  # noqa: E402
from visionsuit_gpu_agent.worker import Agent  # noqa: E402

TOKEN = "fuzz-token-0123456789abcdef"
DOCUMENTED = {200, 202, 400, 409, 413, 429}


def cfg_for(state_dir):
    return config.check({"server": {"api_token": TOKEN, "max_body_bytes": 1 << 20}, "state_dir": state_dir,
                         "minio": {"endpoint": "http://127.0.0.1:9", "access_key": "a", "secret_key": "b"},
                         "jobs": {"max_queue": 10000}})


# ---------------------------------------------------------------------------------------------- strategies
numbers = st.one_of(st.integers(), st.integers(-20, 20000), st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20))
json_values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                           st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                           max_leaves=12)


def either(good):
    """Mostly plausible values, sometimes anything."""
    return st.one_of(good, good, json_values)


keys = st.one_of(st.sampled_from(["ckpt/a.safetensors", "loras/3f9a", "a", "../x", "/abs", "a//b", "a/"]),
                 st.text(min_size=1, max_size=30))
buckets = st.one_of(st.sampled_from(["comfyui-loras", "Bad_Bucket", "ab"]), st.text(max_size=10))
model = st.fixed_dictionaries({"key": either(keys)},
                              optional={"bucket": either(buckets), "persist": either(st.booleans()),
                                        "strength": either(numbers), "strength_clip": either(numbers)})
placeholder_strings = st.sampled_from(["{{checkpoint}}", "{{checkpoint_0}}", "{{checkpoint_3}}", "{{lora_0}}",
                                       "{{lora_0_strength}}", "{{lora_1_strength_clip}}", "{{seed}}", "{{cfg}}",
                                       "{{prompt}}, detailed", "{{bogus}}", "{{ steps }}", "plain", ""])
node = st.fixed_dictionaries({
    "class_type": either(st.sampled_from(["EmptyImage", "SaveImage", "CheckpointLoaderSimple", "KSampler"])),
    "inputs": either(st.dictionaries(st.sampled_from(["filename_prefix", "ckpt_name", "images", "seed", "cfg",
                                                      "text"]) | st.text(max_size=6),
                                     st.one_of(placeholder_strings, json_values, st.just(["1", 0])), max_size=5)),
})
workflows = st.one_of(
    st.fixed_dictionaries({"template": either(st.sampled_from(["sdxl-txt2img", "nope", "../x"]))}),
    st.fixed_dictionaries({"inline": either(st.dictionaries(st.sampled_from(["1", "2", "3"]) | st.text(max_size=4),
                                                            either(node), max_size=4))}),
    st.fixed_dictionaries({}, optional={"template": json_values, "inline": json_values, "x": json_values}),
)
parameters = st.fixed_dictionaries(
    {"prompt": either(st.text(max_size=30))},
    optional={name: either(numbers) for name in ("seed", "steps", "cfg", "width", "height", "batch_size",
                                                 "denoise")}
    | {name: either(st.text(max_size=20)) for name in ("negative_prompt", "sampler", "scheduler")}
    | {"extra": json_values})
# envelopes built to be valid (so that the "accepted -> normalizes, fills, stores" half is exercised) ...
ok_keys = st.from_regex(r"\A[a-z0-9]{1,8}(/[a-z0-9._-]{0,6}[a-z0-9])?\Z")
ok_models = st.lists(st.fixed_dictionaries({"key": ok_keys}, optional={"persist": st.booleans(),
                                                                       "bucket": st.just("comfyui-models")}),
                     max_size=3)
ok_strength = st.floats(-10, 10, allow_nan=False) | st.integers(-10, 10)
ok_loras = st.lists(st.fixed_dictionaries({"key": ok_keys}, optional={"strength": ok_strength,
                                                                      "strength_clip": ok_strength}), max_size=3)
ok_inline = st.dictionaries(
    st.sampled_from(["1", "2", "3", "10", "x", "\u00b2"]),
    st.fixed_dictionaries({"class_type": st.sampled_from(["EmptyImage", "SaveImage", "CheckpointLoaderSimple"]),
                           "inputs": st.dictionaries(st.sampled_from(["filename_prefix", "ckpt_name", "seed", "cfg",
                                                                      "text", "images"]),
                                                     st.one_of(placeholder_strings, st.just(["1", 0]), numbers,
                                                               st.text(max_size=5)), max_size=4)}),
    min_size=1, max_size=4)
ok_parameters = st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=20)},
    optional={"seed": st.integers(0, 2 ** 64 - 1), "steps": st.integers(1, 1000), "cfg": st.floats(0, 100),
              "width": st.integers(2, 2048).map(lambda n: n * 8), "denoise": st.floats(0, 1),
              "sampler": st.sampled_from(["euler", "dpmpp_2m"]), "batch_size": st.integers(1, 64)})
ok_envelopes = st.fixed_dictionaries(
    {"base_models": ok_models, "parameters": ok_parameters},
    optional={"job_id": st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z"), "loras": ok_loras,
              "workflow": st.one_of(st.just({"template": "sdxl-txt2img"}),
                                    st.fixed_dictionaries({"inline": ok_inline})),
              "output": st.fixed_dictionaries({}, optional={"prefix": st.from_regex(r"\A[a-z0-9]{1,8}\Z")}),
              "timeout": st.floats(0.001, 86400) | st.integers(1, 86400), "persist_models": st.booleans()})


def _mutate(pair):
    env, (field, value) = pair
    env = dict(env)
    env[field] = value
    return env


# ... those with one field replaced by anything, and envelopes that are rarely valid
mutated = st.tuples(ok_envelopes, st.tuples(st.sampled_from(["job_id", "base_models", "loras", "workflow",
                                                             "parameters", "output", "timeout", "x"]),
                                            json_values)).map(_mutate)
envelopes = st.one_of(ok_envelopes, mutated, st.fixed_dictionaries(
    {"parameters": either(parameters)},
    optional={"job_id": either(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z")),
              "base_models": either(st.lists(either(model), max_size=3)),
              "loras": either(st.lists(either(model), max_size=3)),
              "workflow": either(workflows),
              "output": either(st.fixed_dictionaries({}, optional={"bucket": either(buckets),
                                                                    "prefix": either(st.text(max_size=20))})),
              "callback_url": either(st.sampled_from(["https://d.example/h", "ftp://x", "http://a b"])),
              "persist_models": either(st.booleans()),
              "timeout": either(numbers),
              "unknown": json_values}))
anything = st.one_of(envelopes, json_values)


def nested(depth, opener=b"[", closer=b"]"):
    return opener * depth + closer * depth


bodies = st.one_of(
    anything.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.binary(max_size=64),
    st.text(max_size=64).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(1, 200000).map(nested),
    st.integers(1, 50000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.sampled_from([b"NaN", b"Infinity", b'{"parameters": {"prompt": "x", "cfg": NaN}, "base_models": []}',
                     b"1e999", b"-1e999", b'"\\ud800"', b"[1,]", b"{}", b"null"]),
)


# ---------------------------------------------------------------------------------------------- properties
@SETTINGS
@given(anything)
def test_validate_never_raises_and_valid_envelopes_run(env):
    problems = envelope.validate(env)
    assert isinstance(problems, list)
    for p in problems:
        assert isinstance(p, str) and ": " in p, p
    if problems:
        return
    spec = envelope.normalize(env, cfg_for("/tmp/unused-state"))
    json.dumps(spec, allow_nan=False)                      # strict JSON: what the store and ComfyUI get
    wf = spec["workflow"]
    template = wf["inline"] if "inline" in wf else workflow.load_template(wf["template"])
    checkpoints = [f"c{i}.safetensors" for i in range(len(spec["base_models"]))]
    loras = [{"name": f"l{i}.safetensors", "strength": m["strength"], "strength_clip": m["strength_clip"]}
             for i, m in enumerate(spec["loras"])]
    built = workflow.build(template, spec["parameters"], checkpoints, loras, spec["job_id"], spec["job_id"] + ".a1")
    json.dumps(built, allow_nan=False)


@pytest.fixture(scope="module")
def real_agent():
    with tempfile.TemporaryDirectory() as tmp:
        agent = Agent(cfg_for(tmp))        # not started: submit() validates, normalizes and stores
        try:
            yield agent
        finally:
            agent.store.close()


def _check_answer(resp):
    assert resp.status in DOCUMENTED, (resp.status, resp.body[:300])
    doc = json.loads(resp.body.decode("utf-8"))
    if resp.status >= 400:
        assert isinstance(doc["error"], str) and doc["error"]
        assert "\n" not in doc["error"]


@SETTINGS
@given(body=bodies)
def test_post_jobs_answers_only_documented_codes(real_agent, body):
    headers = {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json",
               "Content-Length": str(len(body))}
    _check_answer(handler.handle(real_agent, "POST", "/jobs", headers, body, "127.0.0.1"))


@SETTINGS
@given(env=envelopes)
def test_post_jobs_with_envelope_shaped_bodies(real_agent, env):
    body = json.dumps(env, allow_nan=True).encode()
    headers = {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json",
               "Content-Length": str(len(body))}
    resp = handler.handle(real_agent, "POST", "/jobs", headers, body, "127.0.0.1")
    _check_answer(resp)
    if resp.status in (200, 202):
        job_id = resp.json()["job_id"]
        json.dumps(real_agent.store.spec(job_id), allow_nan=False)


drain_bodies = st.one_of(
    bodies,
    st.fixed_dictionaries({}, optional={"slot": either(st.integers(-2, 3)), "timeout": either(numbers),
                                        "x": json_values}).map(lambda d: json.dumps(d, allow_nan=True).encode()),
)


@pytest.fixture(scope="module")
def drain_agent():
    with tempfile.TemporaryDirectory() as tmp:
        agent = Agent(cfg_for(tmp))        # no job runs: a drain with a timeout answers at once
        try:
            yield agent
        finally:
            agent.store.close()


@SETTINGS
@given(path=st.sampled_from(["/drain", "/resume"]), body=drain_bodies)
def test_drain_and_resume_answer_200_or_400(drain_agent, path, body):
    headers = {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json",
               "Content-Length": str(len(body))}
    resp = handler.handle(drain_agent, "POST", path, headers, body, "127.0.0.1")
    assert resp.status in (200, 400, 413), (resp.status, resp.body[:300])
    _check_answer(resp)
    if resp.status == 200:
        assert set(resp.json()) >= {"draining", "idle", "running", "queued", "drained_slots"}
