# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Contract tests of the ComfyUI stand-in (rig/comfyui-standin): the behaviour the project relies on.

Each test starts the stand-in as a subprocess (fixtures in rig/standin_fixtures.py).
"""
from __future__ import annotations

import http.client
import json
import struct
import time
import zlib

import pytest

from rig.standin_fixtures import WsClient

CLIENT = "contract-client"


def empty_image_prompt(prefix="probe", width=64, height=48, color=0x102030):
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": 1,
                                                      "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def blur_chain(n=4, prefix="slow"):
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 5}}}
    for i in range(2, n + 2):
        prompt[str(i)] = {"class_type": "ImageBlur", "inputs": {"image": [str(i - 1), 0], "blur_radius": 3,
                                                                "sigma": 1.0}}
    prompt["20"] = {"class_type": "SaveImage", "inputs": {"images": [str(n + 1), 0], "filename_prefix": prefix}}
    return prompt


def txt2img_prompt(ckpt="model.safetensors", lora="style.safetensors", steps=3, seed=7, prefix="render/txt"):
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "10": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": lora,
                                                      "strength_model": 0.8, "strength_clip": 0.5}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["10", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["10", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["10", 0], "seed": seed, "steps": steps, "cfg": 7.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0], "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


def png_info(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    chunks, pos = {}, 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks.setdefault(kind.decode(), []).append(body)
        pos += 12 + length
    raw = zlib.decompress(b"".join(chunks["IDAT"]))
    assert len(raw) == height * (1 + width * 3)
    return width, height, chunks


def types(messages):
    return [m["type"] for m in messages]


def run_messages(ws, prompt_id):
    msgs = ws.recv_until(lambda m: m["type"] == "executing" and m["data"]["node"] is None
                         and m["data"].get("prompt_id") == prompt_id)
    return [m for m in msgs if m["type"] != "status"]


# ----------------------------------------------------------------------------------------------- basics
def test_system_stats_and_api_prefix(comfy_standin):
    stats = comfy_standin.get_json("/system_stats")
    assert set(stats) == {"system", "devices"}
    assert stats["system"]["comfyui_version"] == "0.3.64"
    assert "--port" in stats["system"]["argv"]
    assert stats["devices"][0]["type"] == "cpu"
    for path in ("/queue", "/prompt", "/features", "/history", "/models", "/embeddings", "/object_info/EmptyImage"):
        plain, api = comfy_standin.get(path), comfy_standin.get("/api" + path)
        assert plain.status == api.status == 200
        assert plain.content_type == api.content_type == "application/json; charset=utf-8"
        assert plain.json() == api.json()
    assert comfy_standin.get_json("/features") == {"supports_preview_metadata": True, "max_upload_size": 104857600}


def test_unknown_route_and_wrong_method(comfy_standin):
    resp = comfy_standin.get("/no/such/route")
    assert resp.status == 404 and resp.content_type.startswith("text/plain")
    resp = comfy_standin.request("GET", "/interrupt")
    assert resp.status == 405 and "POST" in resp.headers["Allow"]


def test_fake_gpu_device(standin_factory):
    srv = standin_factory(args=["--standin-gpu-name", "NVIDIA Test GPU"])
    device = srv.get_json("/system_stats")["devices"][0]
    assert device["type"] == "cuda" and "NVIDIA Test GPU" in device["name"] and device["index"] == 0


def test_model_listings_follow_the_disk(comfy_standin):
    srv = comfy_standin
    assert srv.get_json("/models/checkpoints") == []
    assert srv.get("/models/nope").status == 404
    assert srv.get_json("/object_info/NoSuchNode") == {}
    srv.add_model("checkpoints", "b.safetensors")
    srv.add_model("checkpoints", "sub/a.ckpt")
    srv.add_model("checkpoints", "notes.txt", content=b"x")
    srv.add_model("checkpoints", "partial.safetensors.part", content=b"x")
    srv.add_model("loras", "style.safetensors")
    srv.add_model("embeddings", "neg.pt", content=b"\x80\x02")
    assert srv.get_json("/models/checkpoints") == ["b.safetensors", "sub/a.ckpt"]
    ckpt = srv.get_json("/object_info/CheckpointLoaderSimple")["CheckpointLoaderSimple"]
    assert ckpt["input"]["required"]["ckpt_name"][0] == ["b.safetensors", "sub/a.ckpt"]
    lora = srv.get_json("/object_info")["LoraLoader"]
    assert lora["input"]["required"]["lora_name"][0] == ["style.safetensors"]
    assert srv.get_json("/embeddings") == ["neg"]
    (srv.base_dir / "models" / "checkpoints" / "b.safetensors").unlink()
    assert srv.get_json("/models/checkpoints") == ["sub/a.ckpt"]


def test_object_info_entries_have_comfyui_shape(comfy_standin):
    info = comfy_standin.get_json("/object_info")
    needed = {"EmptyImage", "SaveImage", "PreviewImage", "LoadImage", "CheckpointLoaderSimple", "LoraLoader",
              "CLIPTextEncode", "KSampler", "EmptyLatentImage", "VAEDecode", "VAELoader", "ImageBlur"}
    assert needed <= set(info)
    for name, entry in info.items():
        assert entry["name"] == name
        assert {"input", "input_order", "output", "output_is_list", "output_name", "display_name", "description",
                "python_module", "category", "output_node"} <= set(entry)
        assert {k: list(v) for k, v in entry["input"].items()} == entry["input_order"]
        assert len(entry["output"]) == len(entry["output_is_list"]) == len(entry["output_name"])
    assert info["SaveImage"]["output_node"] is True and info["KSampler"]["output_node"] is False
    assert info["KSampler"]["input"]["required"]["seed"][1]["max"] == 0xFFFFFFFFFFFFFFFF


# ----------------------------------------------------------------------------------------------- a run
def test_valid_run_messages_files_history_and_view(comfy_standin):
    srv = comfy_standin
    with srv.ws(CLIENT) as ws:
        first = ws.recv()
        assert first == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": CLIENT}}
        status, body = srv.post_json("/prompt", {"prompt": empty_image_prompt(), "client_id": CLIENT,
                                                 "extra_data": {"extra_pnginfo": {"workflow": {"v": 1}}}})
        assert status == 200 and set(body) == {"prompt_id", "number", "node_errors"} and body["number"] == 0
        pid = body["prompt_id"]
        msgs = run_messages(ws, pid)
    assert types(msgs) == ["execution_start", "execution_cached", "progress_state", "executing", "progress_state",
                           "progress_state", "executing", "executed", "progress_state", "execution_success",
                           "executing"]
    executed = msgs[7]["data"]
    image = {"filename": "probe_00001_.png", "subfolder": "", "type": "output"}
    assert executed == {"node": "2", "display_node": "2", "output": {"images": [image]}, "prompt_id": pid}

    hist = srv.wait_history(pid)
    assert set(hist) == {"prompt", "outputs", "status", "meta"}
    assert hist["prompt"][:2] == [0, pid] and hist["prompt"][3] == {
        "client_id": CLIENT, "extra_pnginfo": {"workflow": {"v": 1}}} and hist["prompt"][4] == ["2"]
    assert hist["outputs"] == {"2": {"images": [image]}}
    assert hist["status"]["status_str"] == "success" and hist["status"]["completed"] is True
    assert [m[0] for m in hist["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]

    data = (srv.output_dir / "probe_00001_.png").read_bytes()
    width, height, chunks = png_info(data)
    assert (width, height) == (64, 48)
    texts = dict(c.split(b"\x00", 1) for c in chunks["tEXt"])
    assert json.loads(texts[b"prompt"])["2"]["class_type"] == "SaveImage"
    assert json.loads(texts[b"workflow"]) == {"v": 1}
    view = srv.get("/view?filename=probe_00001_.png&subfolder=&type=output")
    assert view.status == 200 and view.content_type == "image/png" and view.body == data
    assert view.headers["Content-Disposition"] == 'filename="probe_00001_.png"'


def test_counter_per_prefix_subfolders_and_cache(comfy_standin):
    srv = comfy_standin
    a1 = srv.wait_history(srv.submit(empty_image_prompt("renders/x"), CLIENT))
    a2 = srv.wait_history(srv.submit(empty_image_prompt("renders/x", color=1), CLIENT))
    b1 = srv.wait_history(srv.submit(empty_image_prompt("other", color=2), CLIENT))
    assert a1["outputs"]["2"]["images"][0] == {"filename": "x_00001_.png", "subfolder": "renders", "type": "output"}
    assert a2["outputs"]["2"]["images"][0]["filename"] == "x_00002_.png"
    assert b1["outputs"]["2"]["images"][0]["filename"] == "other_00001_.png"
    assert srv.get("/view?filename=x_00002_.png&subfolder=renders&type=output").status == 200
    # Re-queuing the identical prompt is answered from the cache: no new file, same outputs (as in ComfyUI).
    again = srv.wait_history(srv.submit(empty_image_prompt("other", color=2), CLIENT))
    cached = [m for m in again["status"]["messages"] if m[0] == "execution_cached"][0][1]["nodes"]
    assert sorted(cached) == ["1", "2"]
    assert again["outputs"] == b1["outputs"]
    assert sorted(p.name for p in srv.output_dir.iterdir()) == [
        "_output_images_will_be_put_here", "other_00001_.png", "renders"]


def test_cache_none_always_renders(standin_factory):
    srv = standin_factory(args=["--cache-none"])
    srv.wait_history(srv.submit(empty_image_prompt("same")))
    hist = srv.wait_history(srv.submit(empty_image_prompt("same")))
    assert hist["outputs"]["2"]["images"][0]["filename"] == "same_00002_.png"


def test_txt2img_with_models_and_progress(comfy_standin):
    srv = comfy_standin
    srv.add_model("checkpoints", "model.safetensors")
    srv.add_model("loras", "style.safetensors")
    with srv.ws(CLIENT) as ws:
        ws.recv()
        pid = srv.submit(txt2img_prompt(steps=3), CLIENT)
        msgs = run_messages(ws, pid)
    order = [m["data"]["node"] for m in msgs if m["type"] == "executing" and m["data"]["node"]]
    assert order.index("4") < order.index("10") < order.index("3") < order.index("8") < order.index("9")
    progress = [m["data"] for m in msgs if m["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 3, "3"), (2, 3, "3"), (3, 3, "3")]
    assert msgs[-2]["type"] == "execution_success"
    image = srv.wait_history(pid)["outputs"]["9"]["images"][0]
    assert image == {"filename": "txt_00001_.png", "subfolder": "render", "type": "output"}
    assert png_info((srv.output_dir / "render" / "txt_00001_.png").read_bytes())[:2] == (64, 64)


def test_invalid_checkpoint_gives_execution_error(comfy_standin):
    srv = comfy_standin
    srv.add_model("checkpoints", "model.safetensors", valid=False)
    srv.add_model("loras", "style.safetensors")
    with srv.ws(CLIENT) as ws:
        ws.recv()
        pid = srv.submit(txt2img_prompt(), CLIENT)
        msgs = run_messages(ws, pid)
    assert types(msgs)[-3:] == ["executing", "execution_error", "executing"]
    err = msgs[-2]["data"]
    assert set(err) == {"prompt_id", "node_id", "node_type", "executed", "exception_message", "exception_type",
                        "traceback", "current_inputs", "current_outputs", "timestamp"}
    assert (err["node_id"], err["node_type"], err["executed"]) == ("4", "CheckpointLoaderSimple", [])
    assert err["exception_type"] == "safetensors._safetensors_rust.SafetensorError"
    assert "header too large" in err["exception_message"]
    assert err["current_inputs"] == {"ckpt_name": ["model.safetensors"]}
    hist = srv.wait_history(pid)
    assert hist["status"]["status_str"] == "error" and hist["status"]["completed"] is False
    assert hist["outputs"] == {} and hist["meta"] == {}


def test_truncated_safetensors_fails_to_load(comfy_standin):
    srv = comfy_standin
    path = srv.add_model("checkpoints", "model.safetensors")
    path.write_bytes(path.read_bytes()[:-2])
    srv.add_model("loras", "style.safetensors")
    hist = srv.wait_history(srv.submit(txt2img_prompt(), CLIENT))
    err = hist["status"]["messages"][-1]
    assert err[0] == "execution_error" and err[1]["node_id"] == "4"


# ----------------------------------------------------------------------------------------------- validation
def rejected(srv, body):
    status, resp = srv.post_json("/prompt", body)
    assert status == 400, resp
    assert set(resp) == {"error", "node_errors"}
    assert set(resp["error"]) == {"type", "message", "details", "extra_info"}
    return resp


def test_validation_errors(comfy_standin):
    srv = comfy_standin
    assert rejected(srv, {"client_id": CLIENT})["error"]["type"] == "no_prompt"
    no_out = {"1": empty_image_prompt()["1"]}
    assert rejected(srv, {"prompt": no_out})["error"]["type"] == "prompt_no_outputs"
    unknown = dict(empty_image_prompt(), **{"1": {"class_type": "Nope", "inputs": {}}})
    resp = rejected(srv, {"prompt": unknown})
    assert resp["error"]["type"] == "invalid_prompt" and resp["error"]["details"] == "Node ID '#1'"
    no_class = dict(empty_image_prompt(), **{"1": {"inputs": {}}})
    assert rejected(srv, {"prompt": no_class})["error"]["type"] == "invalid_prompt"

    bad = empty_image_prompt()
    bad["1"]["inputs"] = {"width": 0, "height": "abc", "color": 0}
    resp = rejected(srv, {"prompt": bad})
    assert resp["error"]["type"] == "prompt_outputs_failed_validation"
    node = resp["node_errors"]["1"]
    assert node["class_type"] == "EmptyImage" and node["dependent_outputs"] == ["2"]
    by_type = {e["type"]: e for e in node["errors"]}
    assert set(by_type) == {"value_smaller_than_min", "invalid_input_type", "required_input_missing"}
    assert by_type["required_input_missing"]["extra_info"] == {"input_name": "batch_size"}
    assert by_type["value_smaller_than_min"]["extra_info"]["input_config"][1]["min"] == 1

    srv.add_model("checkpoints", "there.safetensors")
    missing = txt2img_prompt(ckpt="missing.safetensors")
    resp = rejected(srv, {"prompt": missing})
    err = resp["node_errors"]["4"]["errors"][0]
    assert err["type"] == "value_not_in_list"
    assert err["details"] == "ckpt_name: 'missing.safetensors' not in ['there.safetensors']"
    assert err["extra_info"]["input_config"][0] == ["there.safetensors"]
    assert resp["error"]["details"] == ""

    link = {"2": {"class_type": "SaveImage", "inputs": {"images": ["99", 0], "filename_prefix": "x"}}}
    resp = rejected(srv, {"prompt": link})
    assert resp["node_errors"]["2"]["errors"][0]["type"] == "exception_during_validation"
    assert resp["node_errors"]["2"]["errors"][0]["details"] == "'99'"

    wrong_type = {"5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                  "2": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "x"}}}
    err = rejected(srv, {"prompt": wrong_type})["node_errors"]["2"]["errors"][0]
    assert err["type"] == "return_type_mismatch" and err["extra_info"]["received_type"] == "LATENT"

    # rejected prompts used up numbers 0..7; the next accepted one gets 8
    status, body = srv.post_json("/prompt", {"prompt": empty_image_prompt()})
    assert status == 200 and body["number"] == 8


def test_malformed_json_is_a_500_text(comfy_standin):
    for raw in ('{"prompt": {"1": ', ""):
        resp = comfy_standin.request("POST", "/prompt", body=raw)
        assert resp.status == 500
        assert resp.content_type == "text/plain; charset=utf-8"
    assert comfy_standin.get_json("/prompt") == {"exec_info": {"queue_remaining": 0}}


def test_partial_failure_queues_the_valid_outputs(comfy_standin):
    prompt = empty_image_prompt()
    prompt["3"] = {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}
    status, body = comfy_standin.post_json("/prompt", {"prompt": prompt})
    assert status == 200 and list(body["node_errors"]) == ["3"]
    hist = comfy_standin.wait_history(body["prompt_id"])
    assert hist["prompt"][4] == ["2"] and list(hist["outputs"]) == ["2"]


def test_load_image_from_input_folder(comfy_standin):
    srv = comfy_standin
    srv.wait_history(srv.submit(empty_image_prompt("src", width=20, height=10)))
    (srv.input_dir / "pic.png").write_bytes((srv.output_dir / "src_00001_.png").read_bytes())
    info = srv.get_json("/object_info/LoadImage")["LoadImage"]
    assert info["input"]["required"]["image"][0] == ["example.png", "pic.png"]  # example.png: the checkout's
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "pic.png"}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    out = srv.wait_history(srv.submit(prompt))["outputs"]["2"]["images"][0]
    assert out["type"] == "temp" and out["filename"].startswith("ComfyUI_temp_")
    view = srv.get("/view?filename={}&type=temp".format(out["filename"]))
    assert png_info(view.body)[:2] == (20, 10)
    prompt["1"]["inputs"]["image"] = "gone.png"
    resp = rejected(srv, {"prompt": prompt})
    assert resp["node_errors"]["1"]["errors"][0]["type"] == "custom_validation_failed"


def test_view_refuses_escapes(comfy_standin):
    srv = comfy_standin
    assert srv.get("/view?filename=nope.png&type=output").status == 404
    assert srv.get("/view?filename=../x.png").status == 400
    assert srv.get("/view?filename=x.png&subfolder=../../etc").status == 403
    assert srv.get("/view?filename=x.png&type=bogus").status == 400


# ----------------------------------------------------------------------------------------------- queue
def test_queue_front_delete_clear_and_interrupt(standin_factory):
    # each node takes 1 s: ample time for the queue operations below while node 1 runs
    srv = standin_factory(delay=1.0)
    with srv.ws(CLIENT) as ws:
        ws.recv()
        slow = srv.submit(blur_chain(4), CLIENT)
        ws.recv_until(lambda m: m["type"] == "executing" and m["data"]["node"] == "1")
        p1 = srv.submit(empty_image_prompt("p1"), CLIENT)
        p2 = srv.submit(empty_image_prompt("p2"), CLIENT, front=True)
        p3 = srv.submit(empty_image_prompt("p3"), CLIENT)
        queue = srv.get_json("/queue")
        assert [i[1] for i in queue["queue_running"]] == [slow]
        assert sorted(i[0] for i in queue["queue_pending"]) == [-2, 1, 3]
        assert srv.get_json("/prompt")["exec_info"]["queue_remaining"] == 4
        assert srv.request("POST", "/queue", body={"delete": [p3]}).status == 200
        assert sorted(i[1] for i in srv.get_json("/queue")["queue_pending"]) == sorted([p1, p2])
        resp = srv.request("POST", "/queue", body={"clear": True})
        assert resp.status == 200 and resp.body == b""
        assert srv.get_json("/queue")["queue_pending"] == []
        ws.recv_until(lambda m: m["type"] == "executing" and m["data"]["node"] == "2")
        resp = srv.request("POST", "/interrupt")
        assert resp.status == 200 and resp.body == b""
        msgs = ws.recv_until(lambda m: m["type"] == "executing" and m["data"]["node"] is None)
    stop = [m["data"] for m in msgs if m["type"] == "execution_interrupted"][0]
    assert stop["node_id"] == "3" and stop["executed"] == ["1", "2"] and stop["node_type"] == "ImageBlur"
    hist = srv.wait_history(slow)
    assert hist["status"]["status_str"] == "error" and hist["outputs"] == {}
    assert [m[0] for m in hist["status"]["messages"]][-1] == "execution_interrupted"
    assert srv.get_json(f"/history/{p1}") == {}


def test_interrupt_for_another_prompt_id_is_ignored(standin_factory):
    srv = standin_factory(delay=0.05)
    pid = srv.submit(blur_chain(3), CLIENT)
    srv.request("POST", "/interrupt", body={"prompt_id": "not-running"})
    assert srv.wait_history(pid)["status"]["status_str"] == "success"


def _wait_running(srv, prompt_id, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if [i[1] for i in srv.get_json("/queue")["queue_running"]] == [prompt_id]:
            return
        time.sleep(0.02)
    raise AssertionError(f"prompt {prompt_id} did not start in {timeout}s")


def _last_message(hist):
    return [m[0] for m in hist["status"]["messages"]][-1]


def test_targeted_interrupt_stops_only_the_named_running_prompt(standin_factory):
    # ComfyUI 0.3.64 (server.py post_interrupt): {"prompt_id": X} interrupts only when X is the running prompt,
    # else it logs "Prompt X is not currently running, skipping interrupt"; without an id it is global.
    srv = standin_factory(delay=0.4)
    first = srv.submit(blur_chain(3, "first"), "someone-else")
    _wait_running(srv, first)
    prompt = blur_chain(3, "mine")
    prompt["1"]["inputs"]["color"] = 6   # not cached from the first run: 5 nodes of 0.4 s, time to interrupt it
    mine = srv.submit(prompt, CLIENT)
    resp = srv.request("POST", "/interrupt", body={"prompt_id": mine}, headers={"Content-Type": "application/json"})
    assert resp.status == 200 and resp.body == b""
    hist = srv.wait_history(first)
    assert hist["status"]["status_str"] == "success" and _last_message(hist) == "execution_success"
    _wait_running(srv, mine)
    resp = srv.request("POST", "/interrupt", body={"prompt_id": mine}, headers={"Content-Type": "application/json"})
    assert resp.status == 200 and resp.body == b""
    hist = srv.wait_history(mine)
    assert hist["status"]["status_str"] == "error" and _last_message(hist) == "execution_interrupted"
    assert hist["outputs"] == {}
    log = srv.log()
    assert f"Prompt {mine} is not currently running, skipping interrupt" in log
    assert f"Interrupting prompt {mine}" in log
    assert "Processing interrupted" in log
    assert "Global interrupt" not in log


@pytest.mark.parametrize("body", [None, b"", b"{}", b"not json", b'{"prompt_id": ""}', b'{"prompt_id": null}'])
def test_interrupt_without_a_prompt_id_is_global(standin_factory, body):
    srv = standin_factory(delay=0.4)
    other = srv.submit(blur_chain(3, "other"), "someone-else")
    _wait_running(srv, other)
    resp = srv.request("POST", "/interrupt", body=body)
    assert resp.status == 200 and resp.body == b""
    hist = srv.wait_history(other)
    assert hist["status"]["status_str"] == "error" and _last_message(hist) == "execution_interrupted"
    assert "Global interrupt (no prompt_id specified)" in srv.log()


def test_interrupt_with_a_body_that_is_not_an_object_is_a_500(comfy_standin):
    # aiohttp's request.json() gives the list; ComfyUI's json_data.get(...) then raises: HTTP 500
    resp = comfy_standin.request("POST", "/interrupt", body=[1, 2])
    assert resp.status == 500 and resp.body.startswith(b"500 Internal Server Error")
    assert "Global interrupt" not in comfy_standin.log()


def test_queue_delete_and_clear_spare_the_running_prompt(standin_factory):
    srv = standin_factory(delay=0.5)
    running = srv.submit(blur_chain(3, "run"), "someone-else")
    _wait_running(srv, running)
    p1, p2, p3 = (srv.submit(empty_image_prompt(f"del{i}"), CLIENT) for i in range(3))
    resp = srv.request("POST", "/queue", body={"delete": [running, p1, "no-such-prompt"]})
    assert resp.status == 200 and resp.body == b""
    queue = srv.get_json("/queue")
    assert [i[1] for i in queue["queue_running"]] == [running]          # delete never touches the running one
    assert sorted(i[1] for i in queue["queue_pending"]) == sorted([p2, p3])
    resp = srv.request("POST", "/queue", body={"clear": True})
    assert resp.status == 200 and resp.body == b""
    queue = srv.get_json("/queue")
    assert [i[1] for i in queue["queue_running"]] == [running] and queue["queue_pending"] == []
    assert srv.wait_history(running)["status"]["status_str"] == "success"
    srv.wait_idle()
    for pid in (p1, p2, p3):
        assert srv.get_json(f"/history/{pid}") == {}
    assert srv.state()["executed"] == 1
    assert not any(p.name.startswith("del") for p in srv.output_dir.glob("*"))
    # a body that is not JSON is a 500, as aiohttp's request.json() raises in ComfyUI's handler
    assert srv.request("POST", "/queue", body=b"").status == 500


def test_history_max_items_delete_and_clear(comfy_standin):
    srv = comfy_standin
    ids = [srv.submit(empty_image_prompt(f"h{i}")) for i in range(3)]
    for pid in ids:
        srv.wait_history(pid)
    assert list(srv.get_json("/history?max_items=1")) == [ids[-1]]
    assert list(srv.get_json("/history")) == ids
    assert srv.request("POST", "/history", body={"delete": [ids[0]]}).status == 200
    assert list(srv.get_json("/history")) == ids[1:]
    srv.request("POST", "/history", body={"clear": True})
    assert srv.get_json("/history") == {}


# ----------------------------------------------------------------------------------------------- websocket
def test_websocket_protocol_details(comfy_standin):
    srv = comfy_standin
    with srv.ws("proto") as ws:
        assert ws.recv()["data"]["sid"] == "proto"
        ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        assert ws.recv() == {"type": "feature_flags", "data": {"supports_preview_metadata": True,
                                                                "max_upload_size": 104857600}}
        ws.send_frame(0x9, b"hi")
        assert ws.recv_frame(5) == (0xA, b"hi")
        # a message in two fragments is reassembled
        text = json.dumps({"type": "feature_flags", "data": {}}).encode()
        ws.send_frame(0x1, text[:5], fin=False)
        ws.send_frame(0x0, text[5:])
        assert ws.recv()["type"] == "feature_flags"
        ws.send_frame(0x8, struct.pack(">H", 1000))
        opcode, payload = ws.recv_frame(5)
        assert opcode == 0x8 and struct.unpack(">H", payload[:2])[0] == 1000
    with srv.ws() as ws:  # without a clientId the server makes one up
        assert len(ws.recv()["data"]["sid"]) == 32
        ws.send_frame(0x1, b"{}", masked=False)
        opcode, payload = ws.recv_frame(5)
        assert opcode == 0x8 and struct.unpack(">H", payload[:2])[0] == 1002
    resp = srv.get("/ws")
    assert resp.status == 400


def test_messages_go_to_the_submitting_client_only(comfy_standin):
    srv = comfy_standin
    with srv.ws("owner") as owner, srv.ws("other") as other:
        owner.recv()
        other.recv()
        pid = srv.submit(empty_image_prompt(), "owner")
        run_messages(owner, pid)
        seen = other.recv_until(lambda m: m["data"].get("status", {}).get("exec_info", {}).get(
            "queue_remaining") == 0 and m["type"] == "status")
        assert set(types(seen)) == {"status"}


# ----------------------------------------------------------------------------------------------- faults
def test_fault_fail_node_by_id_and_class(standin_factory):
    srv = standin_factory(fail_node="SaveImage")
    hist = srv.wait_history(srv.submit(empty_image_prompt(), CLIENT))
    event, data = hist["status"]["messages"][-1]
    assert event == "execution_error" and data["node_id"] == "2" and data["executed"] == ["1"]
    assert data["exception_type"] == "standin.executor.InjectedFailure"
    state = srv.control(fail_node="1")
    assert state["faults"]["fail_node"] == "1"
    hist = srv.wait_history(srv.submit(empty_image_prompt(color=9), CLIENT))
    assert hist["status"]["messages"][-1][1]["node_id"] == "1"
    srv.control(fail_node=None)
    hist = srv.wait_history(srv.submit(empty_image_prompt(color=10), CLIENT))
    assert hist["status"]["status_str"] == "success"


def test_fault_control_rejects_bad_input(comfy_standin):
    status, body = comfy_standin.post_json("/standin/control", {"no_such_fault": 1})
    assert status == 400 and "no_such_fault" in body["error"]
    status, body = comfy_standin.post_json("/standin/control", {"delay": "slow"})
    assert status == 400
    assert comfy_standin.control(delay=0.5, html_responses=2)["faults"]["delay"] == 0.5
    assert comfy_standin.control(reset=True)["faults"] == {
        "fail_node": None, "delay": 0.0, "drop_ws_after": None, "html_responses": 0, "crash": None,
        "history_lag": 0.0, "history_lag_share": 1.0, "previews": False}


def test_fault_html_responses(standin_factory):
    srv = standin_factory(env={"COMFYUI_STANDIN_HTML_RESPONSES": "2"})
    first, second = srv.get("/queue"), srv.get("/api/history")
    for resp in (first, second):
        assert resp.status == 502 and resp.content_type.startswith("text/html")
    assert srv.get("/system_stats").status == 200
    assert srv.get("/queue").status == 200
    srv.control(html_responses=1)
    assert srv.get("/history/abc").status == 502
    assert srv.get("/history/abc").status == 200


def test_fault_drop_ws_after(standin_factory):
    srv = standin_factory(drop_ws_after=3)
    ws = srv.ws(CLIENT)
    ws.recv()
    pid = srv.submit(empty_image_prompt(), CLIENT)
    got = []
    with pytest.raises(ConnectionError):
        while True:
            got.append(ws.recv())
    ws.close()
    assert ws.close_code is None  # cut, not closed politely
    assert [m["type"] for m in got if m["type"] != "status"] == ["execution_start", "execution_cached",
                                                                  "progress_state"]
    assert srv.wait_history(pid)["status"]["status_str"] == "success"
    with srv.ws(CLIENT) as again:
        assert again.recv()["type"] == "status"


# How a client sees a server process die: its connections drop (reset, closed without a reply, refused, a reply cut
# short). A timeout is not among them: a server that does not crash must fail the test.
DROPPED = (ConnectionError, http.client.HTTPException)


def test_fault_crash_exits_mid_run(standin_factory):
    srv = standin_factory(crash="2")
    with srv.ws(CLIENT) as ws:
        ws.recv()
        try:
            srv.submit(empty_image_prompt(), CLIENT)
        except DROPPED:
            pass  # the crash came before the reply to POST /prompt: ComfyUI queues, then answers
        seen = []
        with pytest.raises(DROPPED):
            while True:
                seen.append(ws.recv())
    assert srv.proc.wait(10) == 1
    assert ("executing", "2") in [(m["type"], m["data"].get("node")) for m in seen]
    assert not (srv.output_dir / "probe_00001_.png").exists()


def test_fault_delay_and_state(standin_factory):
    srv = standin_factory(delay=0.2)
    pid = srv.submit(blur_chain(2), CLIENT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not srv.state()["queue_running"]:
        time.sleep(0.02)
    state = srv.state()
    assert state["queue_running"] == [pid] and state["faults"]["delay"] == 0.2
    srv.wait_history(pid)
    assert srv.state()["executed"] == 1


# ----------------------------------------------------------------------------------------------- process
def test_sigterm_stops_cleanly_with_a_client_connected(standin_factory, tmp_path):
    srv = standin_factory(args=["--output-directory", str(tmp_path / "out")])
    srv.wait_history(srv.submit(empty_image_prompt()))
    assert (tmp_path / "out" / "probe_00001_.png").is_file()
    ws = srv.ws("bye")
    ws.recv()
    assert srv.stop() == 0
    with pytest.raises((ConnectionError, OSError)):
        ws.recv(5)
    assert ws.close_code in (None, 1001)
    ws.close()


def test_ws_client_standalone(comfy_standin):
    # the helper class is usable directly (e.g. by other test modules)
    ws = WsClient(comfy_standin.host, comfy_standin.port, "/api/ws?clientId=abc")
    try:
        assert ws.recv()["data"]["sid"] == "abc"
    finally:
        ws.close()


# -------------------------------------------------------------------------------------------- partial runs, long errors
def test_partly_invalid_prompt_runs_the_valid_outputs_like_comfyui(comfy_standin):
    """One valid output and one behind a missing checkpoint: ComfyUI 0.3.64's validate_prompt keeps the valid
    outputs, so POST /prompt answers 200 (keys of post_prompt_a_valid) with node_errors shaped as in
    post_prompt_b_missing_ckpt's 400, and only the valid output runs."""
    srv = comfy_standin
    prompt = empty_image_prompt("ok")
    prompt.update({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "missing.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "bad"}},
    })
    status, body = srv.post_json("/prompt", {"prompt": prompt, "client_id": CLIENT})
    assert status == 200 and set(body) == {"prompt_id", "number", "node_errors"}, body
    assert list(body["node_errors"]) == ["4"]  # the dependants (8, 9) carry no errors of their own
    entry = body["node_errors"]["4"]
    assert set(entry) == {"errors", "dependent_outputs", "class_type"}
    assert entry["class_type"] == "CheckpointLoaderSimple" and entry["dependent_outputs"] == ["9"]
    (err,) = entry["errors"]
    assert set(err) == {"type", "message", "details", "extra_info"} and err["type"] == "value_not_in_list"
    assert err["extra_info"]["received_value"] == "missing.safetensors"
    hist = srv.wait_history(body["prompt_id"])
    assert hist["status"]["status_str"] == "success"
    assert hist["prompt"][4] == ["2"] and list(hist["outputs"]) == ["2"]
    assert (srv.output_dir / "ok_00001_.png").is_file() and not list(srv.output_dir.glob("bad_*"))


def test_fault_fail_message_gives_a_multiline_execution_error(standin_factory):
    text = "Weights only load failed. Re-running `torch.load` ...\n Please file an issue ...\n\nCheck the docs."
    srv = standin_factory()
    srv.add_model("checkpoints", "model.safetensors")
    srv.add_model("loras", "style.safetensors")
    state = srv.control(fail_node="CheckpointLoaderSimple", fail_message=text)
    assert state["faults"]["fail_message"] == text
    hist = srv.wait_history(srv.submit(txt2img_prompt(), CLIENT))
    event, data = hist["status"]["messages"][-1]
    assert event == "execution_error" and (data["node_id"], data["node_type"]) == ("4", "CheckpointLoaderSimple")
    assert data["exception_message"] == text + "\n"  # ComfyUI appends a newline to the exception text
    assert data["exception_type"] == "standin.executor.InjectedFailure"
    assert data["current_inputs"] == {"ckpt_name": ["model.safetensors"]}
    status, body = srv.post_json("/standin/control", {"fail_message": 3})
    assert status == 400 and "fail_message" in body["error"]
    assert "fail_message" not in srv.control(reset=True)["faults"]  # shown only while set
    srv.control(fail_node="4")
    hist = srv.wait_history(srv.submit(txt2img_prompt(seed=8), CLIENT))
    assert "was told to fail" in hist["status"]["messages"][-1][1]["exception_message"]


# ------------------------------------------------------------------ history lag, previews, checkout placeholders

def test_fault_history_lag_leaves_history_empty_after_execution_success(standin_factory):
    srv = standin_factory(history_lag=1.0)
    assert srv.state()["faults"]["history_lag"] == 1.0 and srv.state()["faults"]["history_lag_share"] == 1.0
    with srv.ws(CLIENT) as ws:
        ws.recv()
        pid = srv.submit(empty_image_prompt("lag"), CLIENT)
        ws.recv_until(lambda m: m["type"] == "execution_success")
        # as on the real server in 2 of 20 runs: the run is over on the websocket, the history not written yet
        assert srv.get_json("/history/" + pid) == {}
        assert pid in [item[1] for item in srv.get_json("/queue")["queue_running"]]
        msgs = run_messages(ws, pid)
    assert msgs[-1] == {"type": "executing", "data": {"node": None, "prompt_id": pid}}
    assert srv.get_json("/history/" + pid)[pid]["status"]["status_str"] == "success"
    # a share of 0 switches it off for every run; settable at run time and through the environment
    srv.control(history_lag_share=0)
    started = time.monotonic()
    srv.wait_history(srv.submit(empty_image_prompt("nolag"), CLIENT))
    assert time.monotonic() - started < 1.0
    for bad in ({"history_lag": "later"}, {"history_lag_share": 2}, {"history_lag": -1}):
        status, body = srv.post_json("/standin/control", bad)
        assert status == 400 and next(iter(bad)) in body["error"]
    env_srv = standin_factory(env={"COMFYUI_STANDIN_HISTORY_LAG": "0.5", "COMFYUI_STANDIN_HISTORY_LAG_SHARE": "0.3"})
    assert env_srv.state()["faults"]["history_lag"] == 0.5 and env_srv.state()["faults"]["history_lag_share"] == 0.3


def _preview_run(srv, announce_metadata):
    srv.add_model("checkpoints", "model.safetensors")
    srv.add_model("loras", "style.safetensors")
    with srv.ws(CLIENT) as ws:
        ws.recv()
        if announce_metadata:
            ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
            ws.recv_until(lambda m: m["type"] == "feature_flags")
        pid = srv.submit(txt2img_prompt(steps=3, seed=announce_metadata + 1), CLIENT)
        msgs = run_messages(ws, pid)
        return pid, msgs, list(ws.binary)


def test_previews_are_binary_frames_during_sampling(standin_factory):
    srv = standin_factory(previews="true")
    assert srv.state()["faults"]["previews"] is True
    pid, msgs, frames = _preview_run(srv, announce_metadata=False)
    assert msgs[-2]["type"] == "execution_success"
    assert len(frames) == 3  # one per KSampler step, none for the other nodes
    for frame in frames:
        event, fmt = struct.unpack(">II", frame[:8])
        assert (event, fmt) == (1, 2)  # PREVIEW_IMAGE, PNG
        assert png_info(frame[8:])[:2] == (8, 8)
    # a client that announced supports_preview_metadata gets PREVIEW_IMAGE_WITH_METADATA (event 4) instead
    pid, _msgs, frames = _preview_run(srv, announce_metadata=True)
    assert len(frames) == 3
    for frame in frames:
        event, size = struct.unpack(">II", frame[:8])
        meta = json.loads(frame[8:8 + size])
        assert event == 4 and meta["prompt_id"] == pid and meta["node_id"] == "3"
        assert meta["image_type"] == "image/png" and png_info(frame[8 + size:])[:2] == (8, 8)


def test_previews_are_off_by_default(comfy_standin):
    # ComfyUI's default --preview-method is none: no binary frames (the captured runs have none)
    assert comfy_standin.state()["faults"]["previews"] is False
    _pid, msgs, frames = _preview_run(comfy_standin, announce_metadata=False)
    assert msgs[-2]["type"] == "execution_success" and frames == []
