# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The stand-in's CheckpointLoaderSimple recognises a checkpoint as ComfyUI 0.3.64 does, in a simplified rule.

Real ComfyUI (``comfy/sd.py`` ``load_checkpoint_guess_config``) raises
``RuntimeError("ERROR: Could not detect model type of: {}\\n{}".format(ckpt_path, model_detection_error_hint(...)))``
when a checkpoint's tensors identify no model; the hint is empty, or a HINT line for a file named like a LoRA.
The stand-in's rule: a safetensors checkpoint is a model when one of its tensor keys starts with
``model.diffusion_model.``. LoRA loaders do not apply it; torch files (``.ckpt``, ...) keep the signature check.

Each test starts the stand-in as a subprocess (fixtures in rig/standin_fixtures.py); the files are written with
the fixtures' own safetensors writer, independent of the stand-in's code, except where ``checkpoint_bytes`` (the
stand-in's helper that every test uses for a checkpoint that must render) is itself under test.
"""

from __future__ import annotations

import json
import struct

from rig.standin_fixtures import CHECKPOINT_KEY_PREFIX, checkpoint_bytes, safetensors_bytes

CLIENT = "detection-client"
LORA_HINT = (
    "HINT: This seems to be a Lora file and Lora files should be put in the lora folder and loaded with "
    "a lora loader node.."
)


def ckpt_prompt(ckpt, lora=None, prefix="detect"):
    """CheckpointLoaderSimple (-> LoraLoader) -> KSampler -> VAEDecode -> SaveImage."""
    model = ["4", 0]
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }
    if lora:
        prompt["10"] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": ["4", 0],
                "clip": ["4", 1],
                "lora_name": lora,
                "strength_model": 0.8,
                "strength_clip": 0.5,
            },
        }
        model = ["10", 0]
    prompt["3"] = {
        "class_type": "KSampler",
        "inputs": {
            "model": model,
            "seed": 3,
            "steps": 2,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "positive": ["6", 0],
            "negative": ["6", 0],
            "latent_image": ["5", 0],
            "denoise": 1.0,
        },
    }
    return prompt


def run(srv, prompt):
    """(websocket messages of the run, without status, and its history entry)."""
    with srv.ws(CLIENT) as ws:
        ws.recv()
        pid = srv.submit(prompt, CLIENT)
        msgs = ws.recv_until(
            lambda m: m["type"] == "executing" and m["data"]["node"] is None and m["data"].get("prompt_id") == pid
        )
    return [m for m in msgs if m["type"] != "status"], srv.wait_history(pid)


def test_a_safetensors_checkpoint_without_a_diffusion_model_key_fails_like_comfyui(comfy_standin):
    srv = comfy_standin
    path = srv.add_model(
        "checkpoints", "notamodel.safetensors", content=safetensors_bytes({"w": b"\x01\x02\x03\x04"}, {"standin": "1"})
    )
    msgs, hist = run(srv, ckpt_prompt("notamodel.safetensors"))
    assert [m["type"] for m in msgs][-3:] == ["executing", "execution_error", "executing"]
    err = msgs[-2]["data"]
    # the shape of the captured execution_error (../shared/comfyui-api/ws_d_exec_error_run.json)
    assert set(err) == {
        "prompt_id",
        "node_id",
        "node_type",
        "executed",
        "exception_message",
        "exception_type",
        "traceback",
        "current_inputs",
        "current_outputs",
        "timestamp",
    }
    assert (err["node_id"], err["node_type"], err["executed"]) == ("4", "CheckpointLoaderSimple", [])
    assert err["exception_type"] == "RuntimeError"
    # "ERROR: ... of: <full path>\n" + an empty hint, then the newline ComfyUI's executor appends
    assert err["exception_message"] == f"ERROR: Could not detect model type of: {path}\n\n"
    assert err["exception_message"].splitlines()[0] == f"ERROR: Could not detect model type of: {path}"
    assert isinstance(err["traceback"], list) and err["traceback"]
    assert all(isinstance(line, str) for line in err["traceback"])
    assert err["current_inputs"] == {"ckpt_name": ["notamodel.safetensors"]}
    assert hist["status"]["status_str"] == "error" and hist["status"]["completed"] is False
    assert hist["status"]["messages"][-1] == ["execution_error", err]
    assert hist["outputs"] == {}
    assert not list(srv.output_dir.glob("detect_*"))


def test_a_lora_named_file_loaded_as_a_checkpoint_gets_comfyuis_hint(comfy_standin):
    srv = comfy_standin
    lora = safetensors_bytes({"lora_unet_input_blocks_1_1_proj_in.lora_down.weight": b"\x00" * 8})
    path = srv.add_model("checkpoints", "sub/myLoRA_v1.safetensors", content=lora)
    _msgs, hist = run(srv, ckpt_prompt("sub/myLoRA_v1.safetensors"))
    event, err = hist["status"]["messages"][-1]
    assert event == "execution_error" and err["exception_type"] == "RuntimeError"
    assert err["exception_message"] == f"ERROR: Could not detect model type of: {path}\n\n{LORA_HINT}\n"


def test_an_empty_safetensors_checkpoint_is_not_a_model(comfy_standin):
    srv = comfy_standin
    path = srv.add_model("checkpoints", "empty.safetensors", content=safetensors_bytes(metadata={"only": "meta"}))
    _msgs, hist = run(srv, ckpt_prompt("empty.safetensors"))
    event, err = hist["status"]["messages"][-1]
    assert event == "execution_error"
    assert err["exception_message"].startswith(f"ERROR: Could not detect model type of: {path}\n")


def test_a_checkpoint_with_a_diffusion_model_key_renders(comfy_standin):
    srv = comfy_standin
    independent = safetensors_bytes(
        {"first_stage_model.decoder.conv_in.weight": b"\x02" * 4, "model.diffusion_model.out.2.bias": b"\x01" * 4}
    )
    srv.add_model("checkpoints", "ok.safetensors", content=independent)
    msgs, hist = run(srv, ckpt_prompt("ok.safetensors", prefix="ok"))
    assert msgs[-2]["type"] == "execution_success", msgs[-3:]
    assert hist["outputs"]["9"]["images"][0]["filename"] == "ok_00001_.png"


def test_checkpoint_bytes_is_a_recognisable_valid_safetensors_file(comfy_standin):
    data = checkpoint_bytes(b"tag", tensors={"cond_stage_model.w": b"\x05"}, metadata={"m": 1})
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    assert header["__metadata__"] == {"m": "1"}
    assert any(key.startswith(CHECKPOINT_KEY_PREFIX) for key in header)
    assert "cond_stage_model.w" in header
    assert 8 + n + max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__") == len(data)
    assert checkpoint_bytes(b"a") != checkpoint_bytes(b"b")
    srv = comfy_standin
    srv.add_model("checkpoints", "helper.safetensors", content=data)
    srv.add_model("checkpoints", "default.safetensors")  # the fixture's default checkpoint uses it
    for name in ("helper.safetensors", "default.safetensors"):
        _msgs, hist = run(srv, ckpt_prompt(name, prefix=name.split(".")[0]))
        assert hist["status"]["status_str"] == "success", hist["status"]["messages"][-1]


def test_a_lora_without_the_prefix_still_loads(comfy_standin):
    srv = comfy_standin
    srv.add_model("checkpoints", "model.safetensors")
    srv.add_model(
        "loras",
        "style_lora.safetensors",
        content=safetensors_bytes({"lora_unet_down_blocks_0.lora_up.weight": b"\x00" * 8}),
    )
    msgs, hist = run(srv, ckpt_prompt("model.safetensors", lora="style_lora.safetensors", prefix="lora"))
    assert msgs[-2]["type"] == "execution_success", msgs[-3:]
    assert "10" in [m["data"]["node"] for m in msgs if m["type"] == "executing"]
    assert hist["outputs"]["9"]["images"][0]["filename"] == "lora_00001_.png"


def test_a_torch_checkpoint_keeps_the_signature_check(comfy_standin):
    srv = comfy_standin
    srv.add_model("checkpoints", "legacy.ckpt", content=b"PK\x03\x04" + b"\x00" * 60)
    _msgs, hist = run(srv, ckpt_prompt("legacy.ckpt", prefix="legacy"))
    assert hist["status"]["status_str"] == "success", hist["status"]["messages"][-1]
