# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ComfyUI client's front ends against the ComfyUI stand-in: the comfyui_workflow module (through
ansible) and the test-run-workflow node command (as a subprocess, as installed on a node)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rig.standin_fixtures import TORCH_WEIGHTS_ONLY

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
# The console script pip installed beside the interpreter, as on a node (<venv>/bin/test-run-workflow).
CLI = Path(sys.executable).parent / "test-run-workflow"
VALIDATION_WF = ROOT / "roles" / "minio_helpers" / "files" / "validation.json"

SIMPLE_WF = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 255}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "it"}},
}
MISSING_CKPT_WF = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "it"}},
}
MISSING_CKPT_LINE = ("node 4 (CheckpointLoaderSimple) input ckpt_name: value 'x.safetensors' not in list "
                     "(available: none) — the checkpoint is not present on the node; sync it with sync-checkpoints")


# ---------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def collections_path(tmp_path_factory):
    """A collections path whose visionsuit.gpuworker is this checkout (independent of .build/)."""
    base = tmp_path_factory.mktemp("collections")
    coll = base / "ansible_collections" / "visionsuit" / "gpuworker"
    coll.parent.mkdir(parents=True)
    coll.symlink_to(ROOT, target_is_directory=True)
    return base


def write_wf(tmp_path, wf, name="wf.json"):
    path = tmp_path / name
    path.write_text(wf if isinstance(wf, str) else json.dumps(wf))
    return path


def run_cli(*args, env=None, timeout=60):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, str(CLI)] + [str(a) for a in args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def cli_target(srv):
    return ["--host", srv.host, "--port", srv.port]


def run_module(collections_path, args, check=False, timeout=120):
    """Run the module on localhost through ansible; the host's result dict."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_path), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    env.pop("ANSIBLE_CONFIG", None)
    cmd = [str(VENV_BIN / "ansible"), "localhost", "-m", "visionsuit.gpuworker.comfyui_workflow",
           "-a", json.dumps(args)] + (["--check"] if check else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=str(collections_path))
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"ansible did not print JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return out["plays"][0]["tasks"][0]["hosts"]["localhost"]


def history(srv):
    return srv.get_json("/history")


# ---------------------------------------------------------------------------------------------- node command
def test_cli_success_prints_assets(comfy_standin, tmp_path):
    wf = write_wf(tmp_path, SIMPLE_WF)
    proc = run_cli("--workflow", wf, "--interval", "0.2", *cli_target(comfy_standin))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["it_00001_.png"]
    assert proc.stderr == ""
    assert (comfy_standin.output_dir / "it_00001_.png").is_file()
    # --set keeps the type of the value it replaces; --json gives the summary
    proc = run_cli("--workflow", wf, "--set", "1.width=48", "--set", "2.filename_prefix=sub/other",
                   "--json", *cli_target(comfy_standin))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "success" and summary["via"] == "websocket"
    assert summary["assets"] == ["sub/other_00001_.png"]
    assert summary["outputs"] == [{"node_id": "2", "kind": "images", "filename": "other_00001_.png",
                                   "subfolder": "sub", "type": "output"}]
    (entry,) = [h for pid, h in history(comfy_standin).items() if pid == summary["prompt_id"]]
    assert entry["prompt"][2]["1"]["inputs"]["width"] == 48


def test_cli_bad_input_exit_2(comfy_standin, tmp_path):
    proc = run_cli("--workflow", write_wf(tmp_path, "{not json"), *cli_target(comfy_standin))
    assert proc.returncode == 2
    assert "is not JSON" in proc.stderr
    ui = {"last_node_id": 2, "last_link_id": 1, "nodes": [{"id": 1, "type": "EmptyImage"}], "links": [],
          "version": 0.4}
    proc = run_cli("--workflow", write_wf(tmp_path, ui), *cli_target(comfy_standin))
    assert proc.returncode == 2
    assert "UI (graph) format" in proc.stderr and "Save (API Format)" in proc.stderr
    proc = run_cli("--workflow", write_wf(tmp_path, SIMPLE_WF), "--set", "7.seed=1",
                   *cli_target(comfy_standin))
    assert proc.returncode == 2
    assert "node 7: no such node" in proc.stderr
    proc = run_cli("--workflow", tmp_path / "absent.json", *cli_target(comfy_standin))
    assert proc.returncode == 2 and "cannot read workflow file" in proc.stderr
    assert history(comfy_standin) == {}


def test_cli_missing_checkpoint_exit_3(comfy_standin, tmp_path):
    proc = run_cli("--workflow", write_wf(tmp_path, MISSING_CKPT_WF), *cli_target(comfy_standin))
    assert proc.returncode == 8, proc.stderr
    assert proc.stderr.splitlines() == ["test-run-workflow: ComfyUI rejected the workflow:", "  " + MISSING_CKPT_LINE]
    assert proc.stdout == ""


def test_cli_execution_error_exit_4(standin_factory, tmp_path):
    srv = standin_factory(fail_node="2")
    proc = run_cli("--workflow", write_wf(tmp_path, SIMPLE_WF), "--json", *cli_target(srv))
    assert proc.returncode == 9, proc.stderr
    assert "failed on node 2 (SaveImage)" in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "error"
    assert summary["error"]["node_id"] == "2" and summary["error"]["node_type"] == "SaveImage"
    assert summary["error"]["exception_message"]


def test_cli_websocket_dropped_mid_run_falls_back_to_polling(standin_factory, tmp_path):
    srv = standin_factory(delay=0.3, drop_ws_after=2)
    proc = run_cli("--workflow", write_wf(tmp_path, SIMPLE_WF), "--json", "--interval", "0.2",
                   *cli_target(srv))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["via"] == "websocket+polling"  # the socket was cut, the run was still followed
    assert summary["assets"] == ["it_00001_.png"]
    assert "cutting" in srv.log()


def test_cli_html_answers_while_polling_are_ignored_silently(standin_factory, tmp_path):
    srv = standin_factory(delay=0.3, html_responses=4)
    proc = run_cli("--workflow", write_wf(tmp_path, SIMPLE_WF), "--no-websocket", "--interval", "0.1",
                   *cli_target(srv))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["it_00001_.png"]
    assert proc.stderr == ""
    assert srv.state()["faults"]["html_responses"] == 0  # all 4 HTML answers were served (and ignored)


def test_cli_timeout_exit_5(standin_factory, tmp_path):
    srv = standin_factory(delay=5)
    proc = run_cli("--workflow", write_wf(tmp_path, SIMPLE_WF), "--timeout", "1", "--interval", "0.2",
                   *cli_target(srv))
    assert proc.returncode == 5, proc.stderr
    assert "did not finish within 1s" in proc.stderr and "running" in proc.stderr


def test_cli_unreachable_exit_6(tmp_path):
    from rig.standin_fixtures import free_port

    proc = run_cli("--workflow", write_wf(tmp_path, SIMPLE_WF), "--port", free_port())
    assert proc.returncode == 6
    assert "cannot reach ComfyUI" in proc.stderr


# ---------------------------------------------------------------------------------------------- module
def test_module_success(comfy_standin, collections_path):
    res = run_module(collections_path, {"workflow": SIMPLE_WF, "port": comfy_standin.port,
                                        "overrides": {"2": {"filename_prefix": "mod"}}, "poll_interval": 0.2})
    assert not res.get("failed"), res
    assert res["changed"] is True and res["status"] == "success"
    assert res["outputs"] == [{"node_id": "2", "kind": "images", "filename": "mod_00001_.png", "subfolder": "",
                               "type": "output"}]
    assert res["assets"] == ["mod_00001_.png"]
    assert res["prompt_id"] in history(comfy_standin)


def test_module_missing_checkpoint_and_execution_error(standin_factory, collections_path, tmp_path):
    srv = standin_factory()
    res = run_module(collections_path, {"workflow": json.dumps(MISSING_CKPT_WF), "port": srv.port})
    assert res["failed"] is True
    assert res["msg"] == "ComfyUI rejected the workflow: " + MISSING_CKPT_LINE
    assert res["problems"] == [MISSING_CKPT_LINE]
    assert res["node_errors"]["4"]["errors"][0]["type"] == "value_not_in_list"

    srv.control(fail_node="1")
    res = run_module(collections_path, {"path": str(write_wf(tmp_path, SIMPLE_WF)), "port": srv.port})
    assert res["failed"] is True
    assert res["status"] == "error"
    assert "failed on node 1 (EmptyImage)" in res["msg"]
    assert res["error"]["node_id"] == "1"


def test_module_check_mode_submits_nothing(standin_factory, collections_path, tmp_path):
    srv = standin_factory()
    srv.add_model("checkpoints", "calicomixPonyXL_v20.safetensors")
    srv.add_model("loras", "DoomGirl.safetensors")
    res = run_module(collections_path, {"path": str(VALIDATION_WF), "port": srv.port,
                                        "overrides": {"3": {"seed": 42}}}, check=True)
    assert not res.get("failed"), res
    assert res["status"] == "valid" and res["validated_against_server"] is True
    assert res["workflow"]["3"]["inputs"]["seed"] == 42
    res = run_module(collections_path, {"workflow": MISSING_CKPT_WF, "port": srv.port}, check=True)
    assert res["failed"] is True
    assert "value 'x.safetensors' not in list" in res["msg"] and "sync-checkpoints" in res["msg"]
    assert history(srv) == {}
    assert srv.get_json("/queue") == {"queue_running": [], "queue_pending": []}


# ---------------------------------------------------------------------------------------------- validation.json
def _minio_env(tmp_path, minio, **buckets):
    path = tmp_path / "minio.env"
    lines = [f"MINIO_ENDPOINT={minio.endpoint}", f"MINIO_ACCESS_KEY={minio.access_key}",
             f"MINIO_SECRET_KEY='{minio.secret_key}'"]
    lines += [f"MINIO_BUCKET_{k.upper()}={v}" for k, v in buckets.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_validation_workflow_passes_once_models_are_synced(standin_factory, tmp_path, minio, s3, bucket):
    from rig.standin_fixtures import checkpoint_bytes, safetensors_bytes

    srv = standin_factory()
    wf = json.loads(VALIDATION_WF.read_text())
    assert {n["class_type"] for n in wf.values()} == {
        "CheckpointLoaderSimple", "LoraLoader", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode",
        "SaveImage"}
    proc = run_cli("--workflow", VALIDATION_WF, "--check", *cli_target(srv))
    assert proc.returncode == 8
    assert "ckpt_name: value 'calicomixPonyXL_v20.safetensors' not in list" in proc.stderr
    assert "sync-checkpoints" in proc.stderr and "sync-loras" in proc.stderr

    # the models reach the node the production way: MinIO -> sync-checkpoints / sync-loras
    lora = safetensors_bytes()  # 8-byte little-endian header length + JSON header {}
    assert lora == (2).to_bytes(8, "little") + b"{}"
    model = checkpoint_bytes()  # a checkpoint must hold a model ComfyUI can detect
    s3.put_object(Bucket=bucket, Key="checkpoints/calicomixPonyXL_v20.safetensors", Body=model)
    s3.put_object(Bucket=bucket, Key="loras/DoomGirl.safetensors", Body=lora)
    env_file = _minio_env(tmp_path, minio, checkpoints=bucket, loras=bucket)
    sync_env = {"MINIO_CHECKPOINTS_PREFIX": "checkpoints/", "MINIO_LORAS_PREFIX": "loras/"}
    for prog, folder in (("sync-checkpoints", "checkpoints"), ("sync-loras", "loras")):
        sync = subprocess.run([sys.executable, str(Path(sys.executable).parent / prog), "--env-file", str(env_file),
                               "-q", "--dest", str(srv.base_dir / "models" / folder)],
                              capture_output=True, text=True, env=dict(os.environ, **sync_env), timeout=60)
        assert sync.returncode == 0, sync.stderr
    assert (srv.base_dir / "models" / "checkpoints" / "calicomixPonyXL_v20.safetensors").read_bytes() == model

    proc = run_cli("--workflow", VALIDATION_WF, "--check", *cli_target(srv))
    assert proc.returncode == 0, proc.stderr
    assert history(srv) == {}
    proc = run_cli("--workflow", VALIDATION_WF, "--set", "5.width=64", "--set", "5.height=64",
                   "--set", "3.steps=2", "--json", *cli_target(srv))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["assets"] == ["validation_00001_.png"]
    assert (srv.output_dir / "validation_00001_.png").is_file()


def test_cli_export_dir_downloads_outputs_from_minio(standin_factory, tmp_path, minio, s3, bucket):
    srv = standin_factory(delay=0.2)
    env_file = _minio_env(tmp_path, minio, outputs=bucket)
    export = tmp_path / "export"
    full_env = dict(os.environ)
    cmd = [sys.executable, str(CLI), "--workflow", str(write_wf(tmp_path, SIMPLE_WF)), "--export-dir", str(export),
           "--env-file", str(env_file), "--export-wait", "30", "--interval", "0.2", "--host", srv.host,
           "--port", str(srv.port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    try:
        # play upload-outputs: once the render is on disk, put it in the outputs bucket
        produced = srv.output_dir / "it_00001_.png"
        deadline = time.monotonic() + 30
        while not produced.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert produced.exists(), proc.communicate(timeout=5)
        time.sleep(0.3)
        s3.put_object(Bucket=bucket, Key="it_00001_.png", Body=produced.read_bytes())
        out, err = proc.communicate(timeout=45)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["it_00001_.png"]
    assert (export / "it_00001_.png").read_bytes() == produced.read_bytes()

    # a bad minio.env fails before anything is queued
    bad = tmp_path / "bad.env"
    bad.write_text("MINIO_ENDPOINT=\n")
    proc = run_cli("--workflow", write_wf(tmp_path, SIMPLE_WF), "--export-dir", export,
                   "--env-file", bad, *cli_target(srv))
    assert proc.returncode == 3  # the bad minio.env's code
    assert "--export-dir" in proc.stderr
    assert len(history(srv)) == 1


# ---------------------------------------------------------------------------------------- partial runs, one-line errors
# One valid output (node 2) and one whose checkpoint is missing (node 9): ComfyUI answers 200 with node_errors
# for node 4, drops output 9 and runs output 2.
PARTIAL_WF = dict(SIMPLE_WF, **MISSING_CKPT_WF)
DROPPED = "ComfyUI rejected part of the workflow and dropped output node 9 (SaveImage)"
LOAD_FAILED = ("failed on node 4 (CheckpointLoaderSimple) loading ckpt_name 'old.ckpt': standin.executor."
               "InjectedFailure: Weights only load failed. Re-running `torch.load` with `weights_only` set to "
               "`False` will likely succeed, but it can result in arbitrary code execution. Do it only if you got "
               "the file from a trusted source. (+2 more lines)")


def _fail_load_multiline(srv):
    srv.add_model("checkpoints", "old.ckpt", content=b"\x80\x02}q\x00.")
    srv.control(fail_node="CheckpointLoaderSimple", fail_message=TORCH_WEIGHTS_ONLY)
    wf = json.loads(json.dumps(MISSING_CKPT_WF))
    wf["4"]["inputs"]["ckpt_name"] = "old.ckpt"
    return wf


def test_cli_partly_rejected_workflow_exit_3_unless_allowed(standin_factory, tmp_path):
    srv = standin_factory()
    wf = write_wf(tmp_path, PARTIAL_WF)
    proc = run_cli("--workflow", wf, "--interval", "0.2", *cli_target(srv))
    assert proc.returncode == 8, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert lines[:2] == ["test-run-workflow: " + DROPPED + ":", "  " + MISSING_CKPT_LINE]
    assert "--allow-partial" in lines[2]
    assert proc.stdout == ""
    (entry,) = history(srv).values()  # the valid part ran: the failure is reported once it is done
    assert entry["status"]["status_str"] == "success"
    proc = run_cli("--workflow", wf, "--json", *cli_target(srv))
    assert proc.returncode == 8
    summary = json.loads(proc.stdout)
    assert summary["status"] == "partial" and summary["dropped_outputs"] == ["9"]
    assert summary["problems"] == [MISSING_CKPT_LINE] and list(summary["node_errors"]) == ["4"]
    proc = run_cli("--workflow", wf, "--allow-partial", "--set", "2.filename_prefix=part", *cli_target(srv))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["part_00001_.png"]
    assert proc.stderr.splitlines() == ["test-run-workflow: warning: " + DROPPED + ":", "  " + MISSING_CKPT_LINE]


def test_cli_check_names_the_local_precheck(comfy_standin, tmp_path):
    proc = run_cli("--workflow", write_wf(tmp_path, MISSING_CKPT_WF), "--check", *cli_target(comfy_standin))
    assert proc.returncode == 8
    assert proc.stderr.splitlines() == [
        "test-run-workflow: the local pre-check against ComfyUI's /object_info found problems (nothing was queued):",
        "  " + MISSING_CKPT_LINE]
    assert "ComfyUI rejected" not in proc.stderr
    assert history(comfy_standin) == {}


def test_cli_multiline_comfyui_error_is_one_line(standin_factory, tmp_path):
    srv = standin_factory()
    wf = write_wf(tmp_path, _fail_load_multiline(srv))
    proc = run_cli("--workflow", wf, "--json", *cli_target(srv))
    assert proc.returncode == 9, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("test-run-workflow: workflow ") and line.endswith(LOAD_FAILED)
    assert json.loads(proc.stdout)["error"]["exception_message"] == TORCH_WEIGHTS_ONLY
    proc = run_cli("--workflow", wf, "--verbose", "--no-websocket", *cli_target(srv))  # the full text on request
    assert proc.returncode == 9
    assert TORCH_WEIGHTS_ONLY in proc.stderr


def test_cli_checkpoint_without_a_model_is_one_line_naming_the_node_and_the_file(standin_factory, tmp_path):
    from rig.standin_fixtures import safetensors_bytes

    srv = standin_factory()
    # a LoRA put among the checkpoints: ComfyUI's "Could not detect model type" with its LoRA hint on a 2nd line
    path = srv.add_model("checkpoints", "DoomGirl_lora.safetensors", content=safetensors_bytes({"lora_te.w": b"1"}))
    wf = json.loads(json.dumps(MISSING_CKPT_WF))
    wf["4"]["inputs"]["ckpt_name"] = "DoomGirl_lora.safetensors"
    proc = run_cli("--workflow", write_wf(tmp_path, wf), "--json", *cli_target(srv))
    assert proc.returncode == 9, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("test-run-workflow: workflow "), line
    assert line.endswith(
        "failed on node 4 (CheckpointLoaderSimple) loading ckpt_name 'DoomGirl_lora.safetensors': RuntimeError: "
        f"ERROR: Could not detect model type of: {path} (+1 more line)"), line
    message = json.loads(proc.stdout)["error"]["exception_message"]
    assert message.startswith(f"ERROR: Could not detect model type of: {path}\n\nHINT: This seems to be a Lora file")


def test_module_partly_rejected_workflow_and_allow_partial(standin_factory, collections_path):
    srv = standin_factory()
    res = run_module(collections_path, {"workflow": PARTIAL_WF, "port": srv.port, "poll_interval": 0.2})
    assert res["failed"] is True
    assert res["msg"] == DROPPED + ": " + MISSING_CKPT_LINE
    assert res["status"] == "partial" and res["run_status"] == "success"
    assert res["dropped_outputs"] == ["9"] and res["problems"] == [MISSING_CKPT_LINE]
    assert res["node_errors"]["4"]["class_type"] == "CheckpointLoaderSimple"
    assert res["prompt_id"] in history(srv)
    res = run_module(collections_path, {"workflow": PARTIAL_WF, "port": srv.port, "allow_partial": True,
                                        "overrides": {"2": {"filename_prefix": "mod"}}})
    assert not res.get("failed"), res
    assert res["status"] == "success" and res["assets"] == ["mod_00001_.png"]
    assert res["dropped_outputs"] == ["9"] and res["problems"] == [MISSING_CKPT_LINE]
    assert any(DROPPED in w for w in res.get("warnings", [])), res.get("warnings")
    res = run_module(collections_path, {"workflow": PARTIAL_WF, "port": srv.port, "wait": False})
    assert res["failed"] is True and res["status"] == "partial" and res["run_status"] == "queued"


def test_module_multiline_comfyui_error_msg_is_one_line(standin_factory, collections_path):
    srv = standin_factory()
    wf = _fail_load_multiline(srv)
    res = run_module(collections_path, {"workflow": wf, "port": srv.port})
    assert res["failed"] is True and res["status"] == "error"
    assert "\n" not in res["msg"] and res["msg"].endswith(LOAD_FAILED)
    assert res["error_detail"] == TORCH_WEIGHTS_ONLY
    assert res["error"]["current_inputs"] == {"ckpt_name": ["old.ckpt"]}
