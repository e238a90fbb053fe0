"""Pure logic of the ComfyUI client: workflow loading, overrides, error rendering, history parsing, websocket."""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading

import pytest

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
    assert err.exit_code == 3
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
    assert exc.value.exit_code == 4


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
