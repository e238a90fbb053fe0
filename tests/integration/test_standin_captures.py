# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Conformance of the ComfyUI stand-in with exchanges captured from a real ComfyUI 0.3.64.

The captures (shared/comfyui-api, see its README) were recorded in one session: empty server, model
files dropped in, run (a), rejected prompts (b, c, extra_*), run (d) that fails at execution, run (e)
with a queue, front/delete/clear and an interrupt. ``replay`` repeats that session against one
stand-in, in the same order (so prompt numbers and file counters line up), and every capture is then
compared with what the stand-in answered: status code, content type, and the JSON shape (key sets,
value types, exact values wherever they are deterministic). Websocket captures are compared message
by message (type sequence, then each message's shape).

Kept exceptions, with reasons, are in LOOSE_KEYS / UNORDERED_KEYS and in test_view_png below.
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from rig.standin_fixtures import WsClient, start_standin

pytestmark = pytest.mark.integration

# Values that legitimately differ from the capture; only their JSON type is compared.
LOOSE_KEYS = {
    "timestamp": "wall clock",
    "ram_total": "machine", "ram_free": "machine", "vram_total": "machine", "vram_free": "machine",
    "torch_vram_total": "machine", "torch_vram_free": "machine",
    "python_version": "interpreter build", "pytorch_version": "no torch in the stand-in",
    "argv": "the stand-in is started with other flags (--base-directory, a free port)",
    "description": "own wording (ComfyUI's texts are not copied)",
    "tooltip": "own wording (ComfyUI's texts are not copied)",
    "output_tooltips": "own wording (ComfyUI's texts are not copied)",
    "traceback": "frames of the stand-in's code, not ComfyUI's",
    "port": "free port",
}
# Lists whose order ComfyUI takes from a Python set (so it varies between runs): compared sorted.
UNORDERED_KEYS = {"errors", "current_outputs"}

CAPTURES = [
    # (capture name, what the replay does for it) -- in the order of the original session
    "get_system_stats", "get_queue_empty", "get_history_empty", "get_embeddings", "get_models",
    "get_models_checkpoints_empty", "extra_get_models_loras_empty", "get_object_info_CheckpointLoaderSimple",
    "get_object_info_LoraLoader", "get_object_info_SaveImage", "extra_get_object_info_EmptyImage",
    "extra_get_object_info_ImageBlur_v3node", "extra_get_object_info_unknown", "extra_get_prompt",
    "extra_get_features", "extra_get_api_prefix_queue", "extra_get_history_unknown_id",
    "extra_get_models_unknown_folder",
    # model files dropped in (no restart)
    "get_object_info_CheckpointLoaderSimple_after_files", "get_object_info_LoraLoader_after_files",
    "extra_get_models_checkpoints_after_files", "extra_get_models_loras_after_files",
    # run (a)
    "post_prompt_a_valid", "get_history_a_done", "extra_get_history_after_a", "extra_get_history_max_items_1",
    "get_view_a_png", "extra_get_view_missing_file",
    # rejected prompts
    "post_prompt_b_missing_ckpt", "post_prompt_c_malformed_json", "post_prompt_c_unknown_class_type",
    "extra_post_prompt_no_prompt_key", "extra_post_prompt_no_outputs", "extra_post_prompt_missing_class_type",
    "extra_post_prompt_missing_input_and_bad_value", "extra_post_prompt_bad_link", "extra_post_prompt_empty_body",
    # run (d)
    "post_prompt_d_exec_error", "get_history_d_exec_error",
    # run (e)
    "post_prompt_e_slow", "post_prompt_e_pending1", "post_prompt_e_pending2_front", "extra_get_prompt_while_busy",
    "get_queue_running_and_pending", "extra_post_queue_delete", "extra_get_queue_after_delete", "post_queue_clear",
    "get_queue_after_clear", "post_interrupt", "get_history_e_interrupted", "extra_get_queue_final",
    "extra_get_history_final",
]
WS_CAPTURES = ["ws_feature_flags_handshake", "ws_a_valid_run", "ws_d_exec_error_run", "ws_e_queue_interrupt_run",
               "ws_all_messages"]
NOT_EXCHANGES = {"_notes.json"}  # summary numbers of the capture session, nothing to replay


# --------------------------------------------------------------------------------------------- helpers
def load(captures, name):
    return json.loads((captures / (name + ".json")).read_text())


def substitute(obj, idmap):
    """The capture with its prompt ids replaced by the ids the stand-in gave the same prompts."""
    if isinstance(obj, dict):
        return {idmap.get(k, k): substitute(v, idmap) for k, v in obj.items()}
    if isinstance(obj, list):
        return [substitute(v, idmap) for v in obj]
    if isinstance(obj, str):
        return idmap.get(obj, obj)
    return obj


def compare(expected, actual, path="body", loose=False):
    """Differences between two JSON values: same keys, same types, same values unless loose."""
    problems = []
    key = path.rsplit(".", 1)[-1].split("[")[0]
    loose = loose or key in LOOSE_KEYS
    if type(expected) is not type(actual):
        return [f"{path}: type {type(actual).__name__}, expected {type(expected).__name__} ({expected!r})"]
    if isinstance(expected, dict):
        if set(expected) != set(actual):
            missing, unexpected = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
            problems.append(f"{path}: keys differ: missing {missing}, unexpected {unexpected}")
        for k in expected:
            if k in actual:
                problems += compare(expected[k], actual[k], f"{path}.{k}", loose)
    elif isinstance(expected, list):
        if loose:
            kinds = {type(v).__name__ for v in expected}
            if expected and {type(v).__name__ for v in actual} - kinds:
                got = sorted({type(v).__name__ for v in actual})
                problems.append(f"{path}: element types {got}, expected {sorted(kinds)}")
            return problems
        if len(expected) != len(actual):
            return [f"{path}: {len(actual)} items, expected {len(expected)}"]
        if key in UNORDERED_KEYS:
            expected = sorted(expected, key=lambda v: json.dumps(v, sort_keys=True)[:80])
            actual = sorted(actual, key=lambda v: json.dumps(v, sort_keys=True)[:80])
        for i, (e, a) in enumerate(zip(expected, actual)):
            problems += compare(e, a, f"{path}[{i}]", loose)
    elif not loose and expected != actual:
        problems.append(f"{path}: {actual!r}, expected {expected!r}")
    return problems


class Recorder:
    """Reads one websocket in the background; the test waits for messages without losing any."""

    def __init__(self, ws):
        self.ws, self.items, self.cond = ws, [], threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                opcode, payload = self.ws.recv_frame(None)
            except (OSError, ConnectionError, ValueError):
                break
            with self.cond:
                if opcode == 0x1:
                    self.items.append({"kind": "text", "msg": json.loads(payload)})
                else:
                    self.items.append({"kind": f"opcode{opcode}"})
                self.cond.notify_all()
            if opcode == 0x8:
                break

    def wait_for(self, predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for item in self.items:
                    if item["kind"] == "text" and predicate(item["msg"]):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("websocket message not seen; got %s" % [
                        i.get("msg", {}).get("type") for i in self.items])
                self.cond.wait(left)

    def executing(self, node, prompt_id):
        return self.wait_for(lambda m: m["type"] == "executing" and m["data"]["node"] == node
                             and m["data"].get("prompt_id") == prompt_id)


def exchange(srv, capture, idmap, path=None, body=None):
    """Send the captured request (ids substituted) and return the stand-in's answer in capture form."""
    req = capture["request"]
    path = path or req["path"]
    for old, new in idmap.items():
        path = path.replace(old, new)
    body = req["body"] if body is None else body
    if body is not None and not isinstance(body, str):
        body = json.dumps(substitute(body, idmap))
    resp = srv.request(req["method"], path, body=body,
                       headers={"Content-Type": "application/json"} if body is not None else {})
    out = {"status": resp.status, "headers": resp.headers, "body_len": len(resp.body), "raw": resp.body}
    if resp.headers.get("Content-Type", "").startswith("application/json"):
        out["body"] = resp.json()
    return out


# --------------------------------------------------------------------------------------------- the replay
@pytest.fixture(scope="module")
def replay(shared_captures, tmp_path_factory):
    if shared_captures is None:
        pytest.skip("ComfyUI API captures not found (shared/comfyui-api or $VISIONSUIT_COMFYUI_CAPTURES)")
    caps = {name: load(shared_captures, name) for name in CAPTURES + WS_CAPTURES}
    srv = start_standin(tmp_path_factory.mktemp("captures") / "base")
    results, idmap = {}, {}
    client_id = caps["ws_all_messages"]["client_id"]
    ws = WsClient(srv.host, srv.port, f"/ws?clientId={client_id}")
    rec = Recorder(ws)
    try:
        def do(name, **kw):
            results[name] = exchange(srv, caps[name], idmap, **kw)
            return results[name]

        def posted(name):
            res = do(name)
            idmap[caps[name]["body"]["prompt_id"]] = res["body"]["prompt_id"]
            return res["body"]["prompt_id"]

        for name in CAPTURES[:CAPTURES.index("get_object_info_CheckpointLoaderSimple_after_files")]:
            do(name)
        # the feature-flag handshake, on a connection of its own
        hs = caps["ws_feature_flags_handshake"]
        with WsClient(srv.host, srv.port, "/ws?clientId={}".format(hs["client_id"])) as other:
            first = other.recv()
            other.send_json(hs["sent_after_first"])
            results["ws_feature_flags_handshake"] = [first, other.recv()]

        srv.add_model("checkpoints", "a.safetensors", valid=False)  # a dummy file, as in the capture session
        srv.add_model("checkpoints", "sub/b.safetensors", valid=False)
        srv.add_model("loras", "lora_a.safetensors", valid=False)
        for name in ("get_object_info_CheckpointLoaderSimple_after_files", "get_object_info_LoraLoader_after_files",
                     "extra_get_models_checkpoints_after_files", "extra_get_models_loras_after_files"):
            do(name)

        pid_a = posted("post_prompt_a_valid")
        srv.wait_history(pid_a)
        rec.executing(None, pid_a)
        for name in ("get_history_a_done", "extra_get_history_after_a", "extra_get_history_max_items_1",
                     "get_view_a_png", "extra_get_view_missing_file", "post_prompt_b_missing_ckpt",
                     "post_prompt_c_malformed_json", "post_prompt_c_unknown_class_type",
                     "extra_post_prompt_no_prompt_key", "extra_post_prompt_no_outputs",
                     "extra_post_prompt_missing_class_type", "extra_post_prompt_missing_input_and_bad_value",
                     "extra_post_prompt_bad_link", "extra_post_prompt_empty_body"):
            do(name)

        pid_d = posted("post_prompt_d_exec_error")
        srv.wait_history(pid_d)
        rec.executing(None, pid_d)
        do("get_history_d_exec_error")

        # (e): each node of the slow prompt takes 1 s, long enough for the queue operations done meanwhile
        srv.control(delay=1.0)
        pid_e = posted("post_prompt_e_slow")
        rec.executing("1", pid_e)
        posted("post_prompt_e_pending1")
        posted("post_prompt_e_pending2_front")
        for name in ("extra_get_prompt_while_busy", "get_queue_running_and_pending", "extra_post_queue_delete",
                     "extra_get_queue_after_delete", "post_queue_clear", "get_queue_after_clear"):
            do(name)
        rec.executing("2", pid_e)
        do("post_interrupt")
        srv.wait_history(pid_e)
        rec.executing(None, pid_e)
        srv.control(delay=0)
        for name in ("get_history_e_interrupted", "extra_get_queue_final", "extra_get_history_final"):
            do(name)
        ws.send_frame(0x8, b"\x03\xe8")
        rec.thread.join(10)
        results["ws_stream"] = list(rec.items)
    finally:
        ws.close()
        srv.stop()
    return {"results": results, "idmap": idmap, "captures": caps, "dir": shared_captures}


# --------------------------------------------------------------------------------------------- the checks
def test_every_capture_is_covered(replay):
    names = {p.stem for p in replay["dir"].glob("*.json")} - {n[:-5] for n in NOT_EXCHANGES}
    assert names == set(CAPTURES) | set(WS_CAPTURES), "captures not replayed (or gone): {}".format(sorted(
        names ^ (set(CAPTURES) | set(WS_CAPTURES))))


@pytest.mark.parametrize("name", [n for n in CAPTURES if n != "get_view_a_png"])
def test_http_exchange(replay, name):
    cap, got = replay["captures"][name], replay["results"][name]
    assert got["status"] == cap["status"], "{}: status {}, captured {}".format(name, got["status"], cap["status"])
    assert got["headers"].get("Content-Type") == cap["headers"].get("Content-Type")
    if cap["body_is_json"]:
        expected = substitute(cap["body"], replay["idmap"])
        problems = compare(expected, got["body"])
        assert not problems, "{} differs from the capture:\n  {}".format(name, "\n  ".join(problems))
    elif "body_text" in cap:
        assert got["raw"].decode() == cap["body_text"]
    else:
        assert got["body_len"] == cap["body_len"] == 0


def test_view_png(replay):
    # Exception: the bytes differ (Pillow's encoder vs the stand-in's), so the PNG is compared by its
    # signature, IHDR (64x64 RGB) and type, not by hash.
    cap, got = replay["captures"]["get_view_a_png"], replay["results"]["get_view_a_png"]
    assert got["status"] == cap["status"] == 200
    for header in ("Content-Type", "Content-Disposition"):
        assert got["headers"].get(header) == cap["headers"][header]
    assert got["raw"][:16].hex() == cap["body_binary"]["first_bytes_hex"]
    raw = (replay["dir"] / "raw" / "get_view_a_png.png").read_bytes()
    assert got["raw"][16:26] == raw[16:26]  # width, height, bit depth, colour type


def test_ws_feature_flags_handshake(replay):
    expected = replay["captures"]["ws_feature_flags_handshake"]["received"]
    problems = compare(expected, replay["results"]["ws_feature_flags_handshake"], "ws")
    assert not problems, "\n".join(problems)


def ws_signature(items):
    return [(i["kind"], (i.get("msg") or {}).get("type")) for i in items]


def test_ws_full_stream_message_order(replay):
    expected = replay["captures"]["ws_all_messages"]["messages"]
    got = replay["results"]["ws_stream"]
    assert ws_signature(got) == ws_signature(expected)


@pytest.mark.parametrize("name", ["ws_a_valid_run", "ws_d_exec_error_run", "ws_e_queue_interrupt_run",
                                  "ws_all_messages"])
def test_ws_messages(replay, name):
    cap = replay["captures"][name]
    stream = replay["results"]["ws_stream"]
    problems = []
    for item in cap["messages"]:
        i = item["i"]
        if i >= len(stream):
            problems.append(f"message {i} missing")
            continue
        if item["kind"] != "text":
            if stream[i]["kind"] != item["kind"]:
                problems.append(f"message {i}: {stream[i]['kind']}, expected {item['kind']}")
            continue
        expected = substitute(item["msg"], replay["idmap"])
        problems += compare(expected, stream[i].get("msg"), f"ws[{i}]")
    assert not problems, "{} differs from the capture:\n  {}".format(name, "\n  ".join(problems[:30]))


def test_compare_detects_drift():
    # The comparison itself must notice a changed key, type, status-like value or list length.
    base = {"error": {"type": "no_prompt", "extra_info": {}}, "node_errors": {}, "number": 3, "list": [1, 2]}
    assert compare(base, json.loads(json.dumps(base))) == []
    assert compare(base, dict(base, extra=1))
    assert compare(base, dict(base, number=3.0))
    assert compare(base, dict(base, error={"type": "no_prompts", "extra_info": {}}))
    assert compare(base, dict(base, list=[1]))
    assert compare({"timestamp": 1}, {"timestamp": 2}) == []
    assert compare({"timestamp": 1}, {"timestamp": "2"})
