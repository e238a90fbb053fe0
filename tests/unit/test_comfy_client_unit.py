# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pure logic of the ComfyUI client: workflow loading, overrides, error rendering, history parsing, websocket."""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading

import pytest

from rig.standin_fixtures import TORCH_WEIGHTS_ONLY
from visionsuit_gpuworker.comfyui import client as cc
from visionsuit_gpuworker.comfyui import errors as ce
from visionsuit_gpuworker.comfyui import websocket as cws
from visionsuit_gpuworker.comfyui import workflow as cw
from visionsuit_gpuworker.errors import GpuWorkerError

API_WF = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "probe"}},
}

UI_WF = {
    "last_node_id": 9, "last_link_id": 9, "version": 0.4, "links": [[1, 4, 0, 3, 0, "MODEL"]],
    "nodes": [{"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": ["x.safetensors"]}],
}

MISSING_CKPT_400 = {
    "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
              "details": "", "extra_info": {}},
    "node_errors": {"4": {"errors": [{
        "type": "value_not_in_list", "message": "Value not in list",
        "details": "ckpt_name: 'x.safetensors' not in []",
        "extra_info": {"input_name": "ckpt_name", "input_config": [[], {"tooltip": "The name of the checkpoint"}],
                       "received_value": "x.safetensors"}}],
        "dependent_outputs": ["9"], "class_type": "CheckpointLoaderSimple"}},
}


def capture(shared_captures, name):
    if shared_captures is None:
        pytest.skip("ComfyUI captures not present (set VISIONSUIT_COMFYUI_CAPTURES or provide ../shared/comfyui-api)")
    path = shared_captures / (name + ".json")
    if not path.exists():
        pytest.skip(f"capture {name}.json not present in {shared_captures}")
    return json.loads(path.read_text())


# ---- load_workflow -------------------------------------------------------------------------------

def test_load_workflow_accepts_api_text_bytes_dict_and_post_body():
    text = json.dumps(API_WF)
    assert cw.load_workflow(text) == API_WF
    assert cw.load_workflow(text.encode()) == API_WF
    assert cw.load_workflow(API_WF) == API_WF
    assert cw.load_workflow({"prompt": API_WF, "client_id": "x"}) == API_WF


@pytest.mark.parametrize("text", ["{\"prompt\": {\"1\": ", "<html>502 Bad Gateway</html>", "class_type: X"])
def test_load_workflow_not_json(text):
    with pytest.raises(ce.WorkflowInputError) as exc:
        cw.load_workflow(text, source="workflow file wf.json")
    assert "workflow file wf.json is not JSON" in str(exc.value)
    assert exc.value.exit_code == 2
    assert isinstance(exc.value, GpuWorkerError)


def test_load_workflow_empty():
    with pytest.raises(ce.WorkflowInputError, match="is empty"):
        cw.load_workflow("  \n")


def test_load_workflow_ui_format_says_how_to_export():
    with pytest.raises(ce.WorkflowInputError) as exc:
        cw.load_workflow(json.dumps(UI_WF))
    text = str(exc.value)
    assert "UI (graph) format" in text
    assert "links" in text and "nodes" in text
    assert "Save (API Format)" in text and "Export (API)" in text and "dev mode" in text
    assert exc.value.exit_code == 2


def test_load_workflow_rejects_non_workflows():
    with pytest.raises(ce.WorkflowInputError, match="not an object"):
        cw.load_workflow("[1, 2]")
    with pytest.raises(ce.WorkflowInputError, match="node '1' has no class_type"):
        cw.load_workflow({"1": {"inputs": {}}})
    with pytest.raises(ce.WorkflowInputError, match="has no nodes"):
        cw.load_workflow("{}")


# ---- overrides -----------------------------------------------------------------------------------

def test_apply_overrides_copies_and_sets():
    new = cw.apply_overrides(API_WF, {1: {"width": 128}, "2": {"filename_prefix": "other"}})
    assert new["1"]["inputs"]["width"] == 128
    assert new["2"]["inputs"]["filename_prefix"] == "other"
    assert API_WF["1"]["inputs"]["width"] == 64  # the original is untouched


def test_apply_overrides_unknown_node_and_input():
    with pytest.raises(ce.WorkflowInputError, match=r"node 7: no such node in the workflow \(nodes: 1, 2\)"):
        cw.apply_overrides(API_WF, {"7": {"seed": 1}})
    with pytest.raises(ce.WorkflowInputError, match=r"node 1 \(EmptyImage\): no input 'seed'"):
        cw.apply_overrides(API_WF, {"1": {"seed": 1}})
    with pytest.raises(ce.WorkflowInputError, match="mapping"):
        cw.apply_overrides(API_WF, {"1": 5})


def test_set_options_parse_and_coerce():
    overrides = cw.parse_set_options(["1.width=128", "2.filename_prefix=a=b", "1.color=0x10"])
    assert overrides == {"1": {"width": "128", "color": "0x10"}, "2": {"filename_prefix": "a=b"}}
    new = cw.apply_overrides(API_WF, overrides, coerce=True)
    assert new["1"]["inputs"]["width"] == 128
    assert new["1"]["inputs"]["color"] == "0x10"  # not a number: kept as text, ComfyUI will say so
    assert new["2"]["inputs"]["filename_prefix"] == "a=b"
    for bad in ("seed=1", "3.seed", ".seed=1", "3.=1"):
        with pytest.raises(ce.WorkflowInputError, match="NODE_ID.INPUT=VALUE"):
            cw.parse_set_options([bad])


# ---- validation error rendering ------------------------------------------------------------------

def test_render_missing_checkpoint_literal():
    err = ce.WorkflowValidationError(MISSING_CKPT_400["error"], MISSING_CKPT_400["node_errors"])
    assert err.lines == [
        "node 4 (CheckpointLoaderSimple) input ckpt_name: value 'x.safetensors' not in list (available: none)"
        " — the checkpoint is not present on the node; sync it with sync-checkpoints"]
    assert err.exit_code == 8
    assert err.details["node_errors"] == MISSING_CKPT_400["node_errors"]
    assert str(err).startswith("ComfyUI rejected the workflow: node 4 (CheckpointLoaderSimple)")


def test_render_lora_hint_and_class_from_workflow():
    node_errors = {"10": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                      "details": "", "extra_info": {
                                          "input_name": "lora_name", "received_value": "DoomGirl.safetensors",
                                          "input_config": [["other.safetensors"], {}]}}]}}
    lines = ce.render_validation_errors({}, node_errors, {"10": {"class_type": "LoraLoader", "inputs": {}}})
    assert lines == ["node 10 (LoraLoader) input lora_name: value 'DoomGirl.safetensors' not in list "
                     "(available: 'other.safetensors') — the LoRA is not present on the node; sync it with sync-loras"]


def test_render_captured_missing_checkpoint(shared_captures):
    body = capture(shared_captures, "post_prompt_b_missing_ckpt")["body"]
    lines = ce.render_validation_errors(body["error"], body["node_errors"])
    assert lines == [
        "node 1 (CheckpointLoaderSimple) input ckpt_name: value 'missing.safetensors' not in list "
        "(available: 'a.safetensors', 'sub/b.safetensors') — the checkpoint is not present on the node; "
        "sync it with sync-checkpoints"]


def test_render_captured_missing_input_and_bad_values(shared_captures):
    body = capture(shared_captures, "extra_post_prompt_missing_input_and_bad_value")["body"]
    lines = ce.render_validation_errors(body["error"], body["node_errors"])
    assert lines == [
        "node 1 (EmptyImage) input height: Failed to convert an input value to a INT value (received 'abc')",
        "node 1 (EmptyImage) input width: Value 999999 bigger than max of 16384",
        "node 1 (EmptyImage) input batch_size: required input is missing",
    ]


def test_render_captured_bad_link(shared_captures):
    body = capture(shared_captures, "extra_post_prompt_bad_link")["body"]
    (line,) = ce.render_validation_errors(body["error"], body["node_errors"])
    assert line.startswith("node 2 (SaveImage): exception during validation: KeyError '99'")
    assert "link to node 99" in line


def test_render_captured_top_level_errors(shared_captures):
    body = capture(shared_captures, "post_prompt_c_unknown_class_type")["body"]
    (line,) = ce.render_validation_errors(body["error"], body["node_errors"])
    assert "NoSuchNodeXYZ does not exist" in line and "Node ID '#1'" in line and "not installed" in line
    body = capture(shared_captures, "extra_post_prompt_no_outputs")["body"]
    assert ce.render_validation_errors(body["error"], body["node_errors"]) == [
        "Prompt has no outputs — add an output node such as SaveImage"]


def test_render_top_level_literal():
    error = {"type": "invalid_prompt", "message": "Cannot execute because node Foo does not exist.",
             "details": "Node ID '#3'", "extra_info": {}}
    err = ce.WorkflowValidationError(error, {})
    assert err.lines == ["Cannot execute because node Foo does not exist. (Node ID '#3') — the node type is not "
                         "installed on this ComfyUI (custom node missing?)"]


# ---- pre-check against /object_info --------------------------------------------------------------

CKPT_INFO = {"CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["a.safetensors"], {}]}},
                                        "output": ["MODEL", "CLIP", "VAE"]}}


def test_validate_against_object_info_literal():
    wf = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
          "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 99999, "height": 64}},
          "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "v"}}}
    info = dict(CKPT_INFO)
    info["EmptyLatentImage"] = {"input": {"required": {
        "width": ["INT", {"min": 16, "max": 16384}], "height": ["INT", {"min": 16, "max": 16384}],
        "batch_size": ["INT", {"min": 1, "max": 4096}]}}}
    info["SaveImage"] = {"input": {"required": {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {}]}}}
    error, node_errors = cw.validate_against_object_info(wf, info)
    lines = ce.render_validation_errors(error, node_errors, wf)
    assert lines == [
        "node 4 (CheckpointLoaderSimple) input ckpt_name: value 'x.safetensors' not in list "
        "(available: 'a.safetensors') — the checkpoint is not present on the node; sync it with sync-checkpoints",
        "node 5 (EmptyLatentImage) input width: Value 99999 bigger than max of 16384",
        "node 5 (EmptyLatentImage) input batch_size: required input is missing",
        "node 9 (SaveImage) input images: Input links to a node that is not in the workflow: images -> node 8",
    ]
    wf["4"]["inputs"]["ckpt_name"] = "a.safetensors"
    del wf["5"], wf["9"]
    assert cw.validate_against_object_info(wf, info) == ({}, {})


def test_validate_unknown_class():
    error, node_errors = cw.validate_against_object_info({"1": {"class_type": "Nope", "inputs": {}}}, {})
    assert node_errors == {}
    assert "Nope does not exist" in ce.render_validation_errors(error, node_errors)[0]


def test_validate_against_captured_object_info(shared_captures):
    info = capture(shared_captures, "get_object_info_LoraLoader_after_files")["body"]
    wf = {"1": {"class_type": "LoraLoader", "inputs": {
        "model": ["0", 0], "clip": ["0", 1], "lora_name": "DoomGirl.safetensors",
        "strength_model": 0.8, "strength_clip": 0.8}},
        "0": {"class_type": "LoraLoader", "inputs": {}}}
    error, node_errors = cw.validate_against_object_info({"1": wf["1"]}, info)
    lines = ce.render_validation_errors(error, node_errors)
    assert any("value 'DoomGirl.safetensors' not in list (available: 'lora_a.safetensors')" in ln
               and "sync-loras" in ln for ln in lines), lines


# ---- history / results ---------------------------------------------------------------------------

def test_collect_outputs_all_kinds():
    outputs = {
        "12": {"gifs": [{"filename": "clip_00001.mp4", "subfolder": "vid", "type": "output", "format": "video/h264"}]},
        "9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"},
                         {"filename": "b.png", "subfolder": "", "type": "temp"}], "animated": [False]},
        "10": {"audio": [{"filename": "s.flac", "subfolder": "audio", "type": "output"}], "text": ["hello"]},
    }
    flat = cw.collect_outputs(outputs)
    assert [(o["node_id"], o["kind"], o["filename"]) for o in flat] == [
        ("9", "images", "a.png"), ("9", "images", "b.png"), ("10", "audio", "s.flac"),
        ("10", "text", None), ("12", "gifs", "clip_00001.mp4")]
    assert flat[3]["text"] == "hello"
    assert [cw.output_identifier(o) for o in flat] == ["a.png", "temp:b.png", "audio/s.flac", None,
                                                       "vid/clip_00001.mp4"]


def test_result_from_history_literal_states():
    assert cw.result_from_history("p", None) is None
    assert cw.result_from_history("p", {"outputs": {}, "status": {"status_str": None, "completed": False,
                                                                   "messages": []}}) is None
    entry = {"outputs": {}, "status": {"status_str": "error", "completed": False, "messages": [
        ["execution_start", {"prompt_id": "p", "timestamp": 1000}],
        ["execution_error", {"prompt_id": "p", "node_id": "4", "node_type": "KSampler",
                             "exception_type": "RuntimeError", "exception_message": "CUDA out of memory\n",
                             "traceback": ["x"], "timestamp": 3500}]]}}
    result = cw.result_from_history("p", entry)
    assert result["status"] == "error"
    assert result["error"]["node_id"] == "4" and result["error"]["exception_message"] == "CUDA out of memory"
    assert result["timings"]["execution_s"] == 2.5
    assert ce.describe_failure(result) == "workflow p failed on node 4 (KSampler): RuntimeError: CUDA out of memory"
    with pytest.raises(ce.WorkflowExecutionError) as exc:
        cc.raise_for_result(result)
    assert exc.value.exit_code == 9


def test_result_from_captured_histories(shared_captures):
    body = capture(shared_captures, "get_history_a_done")["body"]
    (pid, entry), = body.items()
    result = cw.result_from_history(pid, entry)
    assert result["status"] == "success" and result["error"] is None
    assert result["outputs"] == [{"node_id": "2", "kind": "images", "filename": "probe_00001_.png",
                                  "subfolder": "", "type": "output"}]
    body = capture(shared_captures, "get_history_d_exec_error")["body"]
    (pid, entry), = body.items()
    result = cw.result_from_history(pid, entry)
    assert result["status"] == "error"
    assert result["error"]["node_id"] == "1" and result["error"]["node_type"] == "CheckpointLoaderSimple"
    assert result["error"]["exception_message"] == "Error while deserializing header: header too large"
    assert "SafetensorError" in ce.describe_failure(result)
    body = capture(shared_captures, "get_history_e_interrupted")["body"]
    (pid, entry), = body.items()
    result = cw.result_from_history(pid, entry)
    assert result["status"] == "interrupted" and result["error"]["node_id"] == "3"
    assert "interrupted at node 3 (ImageBlur)" in ce.describe_failure(result)


def test_base_url_from():
    assert cc.base_url_from() == "http://127.0.0.1:8188"
    assert cc.base_url_from(host="gpu1", port=8190) == "http://gpu1:8190"
    assert cc.base_url_from(host="::1", port=1) == "http://[::1]:1"
    assert cc.base_url_from("https://proxy/comfy/") == "https://proxy/comfy"
    client = cc.ComfyClient("https://proxy/comfy", client_id="c1")
    assert client.ws_url() == "wss://proxy:443/comfy/ws?clientId=c1"


def test_unreachable_server_is_a_connection_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client = cc.ComfyClient(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(ce.ComfyConnectionError) as exc:
        client.system_stats()
    assert exc.value.exit_code == 6 and "cannot reach ComfyUI" in str(exc.value)


# ---- queue calls: interrupt, delete, queue state, cancel ----------------------------------------

class _FakeComfy:
    """A small ComfyUI on 127.0.0.1 for the queue calls: records every request; ``running``/``pending``/``history``
    answer ``GET /queue`` and ``/history/<id>``. As ComfyUI 0.3.64: ``POST /queue {"delete": [...]}`` removes
    pending prompts only; ``POST /interrupt`` with a ``prompt_id`` acts only when that prompt runs, without one it
    stops whatever runs (``interrupt_takes`` False: the run goes on, as when a node does not check the flag)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests, self.running, self.pending, self.history = [], [], [], {}
        self.interrupt_takes = True
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status, obj=None):
                body = b"" if obj is None else json.dumps(obj).encode()
                self.send_response(status)
                if obj is not None:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                with fake.lock:
                    fake.requests.append(("GET", self.path, None, None))
                    if self.path == "/queue":
                        return self._reply(200, {"queue_running": [[0, p, {}, {}, []] for p in fake.running],
                                                 "queue_pending": [[n, p, {}, {}, []] for n, p in fake.pending]})
                    if self.path.startswith("/history/"):
                        pid = self.path[len("/history/"):]
                        return self._reply(200, {pid: fake.history[pid]} if pid in fake.history else {})
                return self._reply(404)

            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with fake.lock:
                    fake.requests.append(("POST", self.path, raw, self.headers.get("Content-Type")))
                    body = json.loads(raw) if raw.strip() else {}
                    if self.path == "/prompt":
                        return self._reply(200, {"prompt_id": body.get("prompt_id") or "server-made",
                                                 "number": 1, "node_errors": {}})
                    if self.path == "/queue":
                        fake.pending = [(n, p) for n, p in fake.pending if p not in body.get("delete", [])]
                    elif self.path == "/interrupt" and fake.running and fake.interrupt_takes:
                        pid = body.get("prompt_id")
                        if not pid or pid in fake.running:
                            stopped = fake.running.pop(0)
                            fake.history[stopped] = _history_entry(stopped, "execution_interrupted")
                return self._reply(200)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def posts(self, path=None):
        return [r for r in self.requests if r[0] == "POST" and (path is None or r[1] == path)]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _history_entry(prompt_id, last):
    status = "success" if last == "execution_success" else "error"
    return {"prompt": [0, prompt_id, {}, {}, []], "outputs": {},
            "status": {"status_str": status, "completed": status == "success",
                       "messages": [["execution_start", {"prompt_id": prompt_id, "timestamp": 1}],
                                    [last, {"prompt_id": prompt_id, "node_id": "3", "node_type": "ImageBlur",
                                            "executed": ["1", "2"], "timestamp": 2}]]}}


@pytest.fixture
def fake_comfy():
    fake = _FakeComfy()
    yield fake
    fake.close()


def test_interrupt_is_targeted_when_given_a_prompt_id(fake_comfy):
    client = cc.ComfyClient(fake_comfy.url, timeout=5)
    client.interrupt("p-1")
    client.interrupt()
    (_, _, targeted, ctype), (_, _, plain, _) = fake_comfy.posts("/interrupt")
    assert json.loads(targeted) == {"prompt_id": "p-1"} and ctype == "application/json"
    assert plain == b""   # no prompt_id: ComfyUI's global interrupt ("Global interrupt (no prompt_id specified)")


def test_delete_from_queue_and_queue_state_counting_the_running_prompt(fake_comfy):
    client = cc.ComfyClient(fake_comfy.url, timeout=5)
    fake_comfy.running = ["other"]
    fake_comfy.pending = [(7, "mine"), (3, "b"), (5, "c")]
    assert client.queue_state("other") == "running"
    assert client.queue_state("b") == "pending (1 ahead)"       # the running prompt is ahead of it too
    assert client.queue_state("mine") == "pending (3 ahead)"
    assert client.queue_state("nope") == "absent"
    client.delete_from_queue(["mine", "other"])
    assert [json.loads(r[2]) for r in fake_comfy.posts("/queue")] == [{"delete": ["mine", "other"]}]
    assert client.queue_state("mine") == "absent" and client.queue_state("other") == "running"
    client.delete_from_queue([])
    assert len(fake_comfy.posts("/queue")) == 1   # nothing to delete: no request
    assert client.queue()["queue_running"][0][1] == "other"


def test_timeout_message_counts_the_running_prompt(fake_comfy):
    client = cc.ComfyClient(fake_comfy.url, timeout=5)
    fake_comfy.running = ["other"]
    fake_comfy.pending = [(1, "mine")]
    with pytest.raises(ce.WorkflowTimeoutError) as exc:
        client.wait("mine", timeout=0.3, interval=0.05, use_websocket=False)
    assert "last known state: pending (1 ahead)" in str(exc.value)
    assert fake_comfy.posts() == []   # waiting never interrupts anything


def test_submit_sends_the_chosen_prompt_id(fake_comfy):
    client = cc.ComfyClient(fake_comfy.url, timeout=5)
    assert client.submit(API_WF, prompt_id="chosen-1") == "chosen-1"
    assert client.submit(API_WF) == "server-made"
    first, second = (json.loads(r[2]) for r in fake_comfy.posts("/prompt"))
    assert first["prompt_id"] == "chosen-1" and "prompt_id" not in second


def test_cancel_deletes_a_pending_prompt_and_spares_the_running_one(fake_comfy):
    client = cc.ComfyClient(fake_comfy.url, timeout=5)
    fake_comfy.running = ["other"]
    fake_comfy.pending = [(1, "mine")]
    assert client.cancel("mine", wait=2, interval=0.05) == "deleted"
    assert fake_comfy.running == ["other"] and fake_comfy.pending == []
    posts = [(r[1], json.loads(r[2]) if r[2] else None) for r in fake_comfy.posts()]
    # the delete comes first, so the prompt cannot start between the interrupt and the delete
    assert posts[0] == ("/queue", {"delete": ["mine"]})
    assert all(body == {"prompt_id": "mine"} for path, body in posts if path == "/interrupt")


def test_cancel_interrupts_its_own_running_prompt(fake_comfy):
    client = cc.ComfyClient(fake_comfy.url, timeout=5)
    fake_comfy.running = ["mine"]
    fake_comfy.pending = [(1, "next")]
    assert client.cancel("mine", wait=2, interval=0.05) == "interrupted"
    assert fake_comfy.pending == [(1, "next")]


def test_cancel_of_a_finished_or_unknown_prompt(fake_comfy):
    client = cc.ComfyClient(fake_comfy.url, timeout=5)
    fake_comfy.history["done"] = _history_entry("done", "execution_success")
    fake_comfy.running = ["other"]
    assert client.cancel("done", wait=1, interval=0.05) == "finished"
    assert client.cancel("never-seen", wait=1, interval=0.05) == "gone"
    assert fake_comfy.running == ["other"]


def test_cancel_repeats_the_targeted_interrupt_then_gives_up(fake_comfy):
    client = cc.ComfyClient(fake_comfy.url, timeout=5)
    fake_comfy.running = ["mine"]
    fake_comfy.interrupt_takes = False   # a node that does not look at the interrupt flag
    assert client.cancel("mine", wait=0.4, interval=0.05) == "running"
    interrupts = fake_comfy.posts("/interrupt")
    assert len(interrupts) >= 2 and all(json.loads(r[2]) == {"prompt_id": "mine"} for r in interrupts)


def test_cancel_raises_when_comfyui_is_unreachable():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ce.ComfyConnectionError):
        cc.ComfyClient(f"http://127.0.0.1:{port}", timeout=2).cancel("x", wait=0.2)


# ---- websocket framing ---------------------------------------------------------------------------

def _server_frame(opcode, payload, fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += struct.pack("!BH", 126, n)
    else:
        head += struct.pack("!BQ", 127, n)
    return head + payload


def _read_client_frame(conn):
    def exact(n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data
    b1, b2 = exact(2)
    assert b2 & 0x80, "client frames must be masked"
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack("!H", exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exact(8))[0]
    mask = exact(4)
    data = bytes(c ^ mask[i % 4] for i, c in enumerate(exact(n)))
    return b1 & 0x0F, data


def test_websocket_client_frames():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    seen = {}
    big = json.dumps({"type": "big", "data": "x" * 70000}).encode()

    def serve():
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            seen["request"] = request.decode()
            key = [ln.split(":", 1)[1].strip() for ln in seen["request"].split("\r\n")
                   if ln.lower().startswith("sec-websocket-key")][0]
            accept = base64.b64encode(hashlib.sha1((key + cws._WS_GUID).encode()).digest()).decode()  # noqa: S324
            first = _server_frame(1, b'{"type": "status"}')
            # the first frame arrives in the same packet as the handshake answer
            conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode() + first)
            conn.sendall(_server_frame(9, b"ping!"))
            seen["pong"] = _read_client_frame(conn)
            conn.sendall(_server_frame(1, b'{"type": "exe', fin=False) + _server_frame(0, b'cuting"}'))
            conn.sendall(_server_frame(2, b"\x00\x00\x00\x01PNG"))
            conn.sendall(_server_frame(1, b"y" * 300))
            frame = _server_frame(1, big)
            conn.sendall(frame[:5])  # a frame split across reads
            seen["client_text"] = _read_client_frame(conn)
            conn.sendall(frame[5:])
            conn.sendall(_server_frame(8, struct.pack("!H", 1000)))
            seen["close"] = _read_client_frame(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ws = cws.WebSocket(f"ws://127.0.0.1:{port}/ws?clientId=abc", timeout=5)
    assert ws.recv(timeout=5) == (1, b'{"type": "status"}')
    assert ws.recv(timeout=5) == (1, b'{"type": "executing"}')  # ping answered on the way, fragments joined
    assert ws.recv(timeout=5) == (2, b"\x00\x00\x00\x01PNG")
    assert ws.recv(timeout=5) == (1, b"y" * 300)
    assert ws.recv(timeout=0.2) is None  # only 5 bytes of the next frame so far: a timeout, no data lost
    ws.send('{"hello": 1}')
    assert ws.recv(timeout=5) == (1, big)
    with pytest.raises(cws.WebSocketClosed):
        ws.recv(timeout=5)
    ws.close()
    thread.join(5)
    listener.close()
    assert seen["request"].startswith("GET /ws?clientId=abc HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{port}" in seen["request"]
    assert seen["pong"] == (10, b"ping!")
    assert seen["client_text"] == (1, b'{"hello": 1}')
    assert seen["close"][0] == 8


def test_websocket_refused_upgrade():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n\r\n<html>bad</html>")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with pytest.raises(cws.WebSocketClosed, match="502"):
        cws.WebSocket(f"ws://127.0.0.1:{port}/ws", timeout=5)
    thread.join(5)
    listener.close()


# ---- partly rejected workflows, one-line failure messages ------------------------------------------

# ComfyUI answers 200 with node_errors when only some outputs are invalid: it drops those and runs the rest
# (same shape as post_prompt_a_valid's answer, node_errors as in post_prompt_b_missing_ckpt's 400).
PARTIAL_200 = {"prompt_id": "p-partial", "number": 3, "node_errors": MISSING_CKPT_400["node_errors"]}
PARTIAL_WF = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 255}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "ok"}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "bad"}},
}


def test_partly_rejected_workflow_fails_by_default():
    ok = {"prompt_id": "p-partial", "status": "success", "outputs": [
        {"node_id": "2", "kind": "images", "filename": "ok_00001_.png", "subfolder": "", "type": "output"}],
        "error": None, "timings": {}}
    assert cw.check_partial_run({}, PARTIAL_WF, ok) is None
    with pytest.raises(ce.WorkflowValidationError) as exc:
        cw.check_partial_run(PARTIAL_200["node_errors"], PARTIAL_WF, ok)
    err = exc.value
    assert isinstance(err, ce.WorkflowPartlyRejectedError) and err.exit_code == ce.EXIT_VALIDATION == 8
    assert str(err) == (
        "ComfyUI rejected part of the workflow and dropped output node 9 (SaveImage): node 4 "
        "(CheckpointLoaderSimple) input ckpt_name: value 'x.safetensors' not in list (available: none) — the "
        "checkpoint is not present on the node; sync it with sync-checkpoints")
    assert "\n" not in str(err)
    assert err.dropped_outputs == ["9"]
    assert err.details["status"] == "partial" and err.details["run_status"] == "success"
    assert err.details["prompt_id"] == "p-partial" and err.details["outputs"] == ok["outputs"]
    assert err.details["node_errors"] == PARTIAL_200["node_errors"] and err.details["problems"] == err.lines
    # allowed: no exception, the error object describes what was dropped
    allowed = cw.check_partial_run(PARTIAL_200["node_errors"], PARTIAL_WF, ok, allow_partial=True)
    assert allowed.dropped_outputs == ["9"] and allowed.lines == err.lines


def test_precheck_failure_names_the_local_precheck():
    class FakeClient:
        def object_info(self, node=None):
            return {node: CKPT_INFO[node]} if node in CKPT_INFO else {}

    wf = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}}}
    with pytest.raises(ce.WorkflowValidationError) as exc:
        cc.check_workflow(FakeClient(), wf)
    err = exc.value
    assert err.summary == "the local pre-check against ComfyUI's /object_info found problems (nothing was queued)"
    assert str(err).startswith(err.summary + ": node 4 (CheckpointLoaderSimple) input ckpt_name")
    assert "rejected" not in str(err)
    # ComfyUI's own rejection keeps its wording
    assert ce.WorkflowValidationError(MISSING_CKPT_400["error"], MISSING_CKPT_400["node_errors"]).summary == (
        "ComfyUI rejected the workflow")


def test_multiline_execution_error_is_one_line(shared_captures):
    """The captured execution_error message of run (d), once as recorded and once with torch's multi-line text."""
    ws = capture(shared_captures, "ws_d_exec_error_run")
    (data,) = [m["msg"]["data"] for m in ws["messages"] if m.get("msg", {}).get("type") == "execution_error"]
    pid = data["prompt_id"]
    entry = {"outputs": {}, "status": {"status_str": "error", "completed": False,
                                       "messages": [["execution_error", data]]}}
    result = cw.result_from_history(pid, entry)
    assert result["error"]["current_inputs"] == {"ckpt_name": ["a.safetensors"]}
    assert ce.describe_failure(result) == (
        "workflow %s failed on node 1 (CheckpointLoaderSimple) loading ckpt_name 'a.safetensors': "
        "safetensors._safetensors_rust.SafetensorError: Error while deserializing header: header too large" % pid)

    data = dict(data, exception_type="_pickle.UnpicklingError", exception_message=TORCH_WEIGHTS_ONLY + "\n",
                current_inputs={"ckpt_name": ["old.ckpt"]})
    entry["status"]["messages"] = [["execution_error", data]]
    result = cw.result_from_history(pid, entry)
    line = ce.describe_failure(result)
    assert "\n" not in line
    assert line == (
        "workflow %s failed on node 1 (CheckpointLoaderSimple) loading ckpt_name 'old.ckpt': "
        "_pickle.UnpicklingError: Weights only load failed. Re-running `torch.load` with `weights_only` set to "
        "`False` will likely succeed, but it can result in arbitrary code execution. Do it only if you got the "
        "file from a trusted source. (+2 more lines)" % pid)
    err = ce.WorkflowExecutionError(result)
    assert str(err) == line
    assert err.details["error_detail"] == TORCH_WEIGHTS_ONLY
    assert ce.failure_detail(err) == TORCH_WEIGHTS_ONLY
    assert ce.failure_detail(ce.WorkflowTimeoutError("late")) is None
    assert ce.failure_detail(GpuWorkerError("first\nsecond")) == "first\nsecond"
    assert ce.one_line("\n\n  first  \n\nsecond\nthird") == "first (+2 more lines)"
    assert ce.one_line("x" * 50, limit=10) == "xxxxxxx..."


def test_execution_error_without_node_or_file_input_stays_one_line():
    result = {"prompt_id": "p", "status": "error", "error": {
        "node_id": "3", "node_type": "KSampler", "exception_type": "torch.OutOfMemoryError",
        "exception_message": "Allocation on device \nThis error means you ran out of memory on your GPU.\n\n"
                             "TIPS: If the workflow worked before you might have accidentally set the batch_size "
                             "to a large number.",
        "current_inputs": {"seed": [42], "model": ["<comfy.model_patcher.ModelPatcher object at 0x7f>"]}}}
    assert ce.describe_failure(result) == (
        "workflow p failed on node 3 (KSampler): torch.OutOfMemoryError: Allocation on device (+2 more lines)")
    lost = {"prompt_id": "p", "status": "error", "error": {"node_id": None, "exception_message": "gone\nfor good"}}
    assert ce.describe_failure(lost) == "workflow p failed: gone (+1 more line)"


# ---- against the stand-in: a late history entry, binary preview frames ---------------------------------------

TXT2IMG = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "model.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": 7, "steps": 4, "cfg": 7.0,
                                               "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                                               "positive": ["6", 0], "negative": ["7", 0],
                                               "latent_image": ["5", 0]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "prev"}},
}


def test_run_workflow_waits_for_a_history_entry_written_after_execution_success(standin_factory):
    # Real ComfyUI (2 runs of 20): execution_success is on the websocket while /history/<id> is still {}.
    srv = standin_factory(history_lag=1.5)
    client = cc.ComfyClient(srv.url, timeout=10)
    events = []
    result = cc.run_workflow(client, API_WF, timeout=30, interval=0.2, on_progress=events.append)
    assert result["status"] == "success" and result["via"] == "websocket"
    assert [o["filename"] for o in result["outputs"]] == ["probe_00001_.png"]
    assert "execution_success" in [e["type"] for e in events]
    assert result["timings"]["wait_s"] >= 1.0  # it did wait for the entry
    # polling only (no websocket) copes as well
    wf = json.loads(json.dumps(API_WF))
    wf["1"]["inputs"]["color"] = 5
    result = cc.run_workflow(client, wf, timeout=30, interval=0.2, use_websocket=False)
    assert result["status"] == "success" and [o["filename"] for o in result["outputs"]] == ["probe_00002_.png"]


def test_run_workflow_ignores_binary_preview_frames(standin_factory):
    from rig.standin_fixtures import checkpoint_bytes

    srv = standin_factory(previews=True, delay=0.2)  # slow enough that the client reads the socket
    (srv.base_dir / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    (srv.base_dir / "models" / "checkpoints" / "model.safetensors").write_bytes(checkpoint_bytes(b"\x00" * 16))
    client = cc.ComfyClient(srv.url, timeout=10)
    seen = []
    real_recv = cws.WebSocket.recv

    def spy(self, timeout=None):
        msg = real_recv(self, timeout)
        if msg is not None:
            seen.append(msg)
        return msg

    events = []
    cws.WebSocket.recv, saved = spy, cws.WebSocket.recv
    try:
        result = cc.run_workflow(client, TXT2IMG, timeout=30, interval=0.2, on_progress=events.append)
    finally:
        cws.WebSocket.recv = saved
    binary = [payload for op, payload in seen if op == cws.WebSocket.OP_BINARY]
    assert len(binary) == 4 and all(struct.unpack(">II", p[:8]) == (1, 2) for p in binary)
    assert result["status"] == "success" and result["via"] == "websocket"
    assert [o["filename"] for o in result["outputs"]] == ["prev_00001_.png"]
    assert [e["value"] for e in events if e["type"] == "progress"] == [1, 2, 3, 4]
