#!/usr/bin/env python3
# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo's story after provisioning: upload a model, sync it, render a job through the agent, export it.

    rig/demo_story.py CONTAINER STATE_DIR AGENT_PORT

Runs the node commands inside the container (podman exec) and talks to the agent from the host over its
published port. Prints what each step did and how long it took.
"""
import json
import os
import struct
import subprocess
import sys
import time
import urllib.request

CHECKPOINT = "calicomixPonyXL_v20.safetensors"
LORA = "DoomGirl.safetensors"
STANDIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rig", "comfyui-standin")


def tiny_safetensors(path, tag):
    """A valid (empty-tensor) safetensors file: 8-byte little-endian header length, then a JSON header."""
    header = json.dumps({"__metadata__": {"visionsuit_demo": tag}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)


def tiny_checkpoint(path, tag):
    """A small checkpoint that ComfyUI (here: the stand-in) recognises as a model: the stand-in's own
    ``checkpoint_bytes`` (a tensor under ``model.diffusion_model.``). An empty-tensor file would fail to load with
    "ERROR: Could not detect model type of: ..."."""
    saved = sys.dont_write_bytecode
    sys.path.insert(0, STANDIN_DIR)
    sys.dont_write_bytecode = True  # keep the stand-in's tree clean
    try:
        from standin.models import checkpoint_bytes
    finally:
        sys.path.remove(STANDIN_DIR)
        sys.dont_write_bytecode = saved
    with open(path, "wb") as f:
        f.write(checkpoint_bytes(metadata={"visionsuit_demo": tag}))


class Story:
    def __init__(self, container, state, agent_port):
        self.container, self.state, self.agent_port = container, state, agent_port
        with open(os.path.join(state, "demo-vars.yml")) as f:
            self.token = json.load(f)["gpu_agent_api_token"]

    def step(self, title, func):
        print("\n== %s" % title, flush=True)
        start = time.monotonic()
        result = func()
        print("   (%.1f s)" % (time.monotonic() - start), flush=True)
        return result

    def node(self, *argv):
        out = subprocess.run(["podman", "exec", self.container] + list(argv), check=True,
                             capture_output=True, text=True)
        return out.stdout

    def agent(self, method, path, body=None):
        req = urllib.request.Request(
            "http://127.0.0.1:%s%s" % (self.agent_port, path), method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": "Bearer " + self.token, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def upload(self):
        local = os.path.join(self.state, "models")
        for kind, name in (("checkpoints", CHECKPOINT), ("loras", LORA)):
            os.makedirs(os.path.join(local, kind), exist_ok=True)
            (tiny_checkpoint if kind == "checkpoints" else tiny_safetensors)(os.path.join(local, kind, name), kind)
        subprocess.run(["podman", "cp", local, "%s:/tmp/demo-models" % self.container], check=True)
        self.node("test-create-buckets")
        out = self.node("test-upload-models", "--models", "/tmp/demo-models/checkpoints",
                        "--loras", "/tmp/demo-models/loras")
        print("   " + out.strip().replace("\n", "\n   "))

    def sync(self):
        for cmd in ("sync-checkpoints", "sync-loras"):
            summary = json.loads(self.node(cmd, "--json"))
            print("   %-16s files=%s bytes=%s skipped=%s" % (cmd, summary.get("files"), summary.get("bytes"),
                                                          summary.get("skipped")))
        print("   " + self.node("ls", "-l", "/opt/comfyui/models/checkpoints").strip().replace("\n", "\n   "))

    def render(self):
        envelope = {
            "base_models": [{"key": CHECKPOINT}],
            "loras": [{"key": LORA, "strength": 0.8}],
            "parameters": {"prompt": "a lighthouse at dusk", "seed": 42, "steps": 4, "width": 64, "height": 64},
        }
        job = self.agent("POST", "/jobs", envelope)
        print("   POST /jobs -> %s (%s)" % (job["job_id"], job["state"]))
        deadline = time.monotonic() + 300
        while job["state"] not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = self.agent("GET", "/jobs/" + job["job_id"])
        print("   state: %s" % job["state"])
        if job["state"] != "done":
            raise SystemExit("demo: the job did not finish: %s" % job.get("error"))
        for key in job.get("outputs", []):
            print("   output in MinIO: %s" % (key if isinstance(key, str) else json.dumps(key)))
        print("   timings: %s" % json.dumps(job.get("timings", {})))
        return job

    def export(self):
        self.node("test-export-outputs", "/root/demo-export")
        listing = self.node("find", "/root/demo-export", "-type", "f")
        print("   exported inside %s to:" % self.container)
        print("   " + listing.strip().replace("\n", "\n   "))

    def run(self):
        self.step("Upload a model and a LoRA with test-upload-models", self.upload)
        self.step("Sync them onto the node (sync-checkpoints, sync-loras)", self.sync)
        self.step("Render a job through the agent", self.render)
        self.step("Export the outputs with test-export-outputs", self.export)


if __name__ == "__main__":
    Story(*sys.argv[1:4]).run()
