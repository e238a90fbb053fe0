#!/usr/bin/env python3
"""The GPU agent's own overhead per job, and /healthz latency under load while a job runs.

Starts a real MinIO (rig/minio_server.py), the ComfyUI stand-in and the agent as a subprocess, all on
127.0.0.1, then:

1. **Overhead per job** on a warm cache: for each job, (POST sent -> prompt submitted to ComfyUI) +
   (ComfyUI finished -> outputs uploaded), minus the time spent in MinIO transfers (the sync engine's own
   download/upload seconds). Clean-up after the upload is shown separately.
2. **/healthz latency** with 100 concurrent keep-alive clients (4 processes x 25 threads) for a bounded time
   while a slow job renders.

Prints figures only (goals: overhead median < 50 ms, /healthz p99 < 10 ms); no assertions.

    .venv/bin/python benchmarks/agent_overhead.py [--jobs 20] [--seconds 5]
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENT_SRC = ROOT / "files" / "visionsuit-gpu-agent"
sys.path.insert(0, str(ROOT))

from rig.minio_server import MinioServer, free_port  # noqa: E402
from tests.fixtures_standin import safetensors_bytes, start_standin  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 - a throwaway token for a local run


def lib_dir() -> Path:
    lib = ROOT / ".build" / "agent-lib"
    lib.mkdir(parents=True, exist_ok=True)
    link = lib / "visionsuit_gpuworker"
    if not link.exists():
        link.symlink_to(ROOT / "plugins" / "module_utils", target_is_directory=True)
    return lib


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
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vs-agent-bench-"))
    minio = MinioServer.start()
    comfy = start_standin(work / "comfy")
    agent = None
    try:
        sys.path.insert(0, str(lib_dir()))
        from visionsuit_gpuworker.s3client import S3Client

        s3 = S3Client(minio.endpoint, minio.access_key, minio.secret_key)
        s3.create_bucket("bench")
        s3.put_object("bench", "ckpt/base.safetensors", safetensors_bytes({"w": b"\0" * 4096}),
                      metadata={"original-filename": "base.safetensors"})
        s3.put_object("bench", "loras/5e1f0c", safetensors_bytes({"w": b"\1" * 4096}),
                      metadata={"original-filename": "style.safetensors"})
        port = free_port()
        cfg = {"server": {"listen": "127.0.0.1", "port": port, "api_token": TOKEN, "max_body_bytes": 1048576},
               "state_dir": str(work / "state"),
               "minio": {"endpoint": minio.endpoint, "access_key": minio.access_key, "secret_key": minio.secret_key,
                         "bucket_checkpoints": "bench", "bucket_loras": "bench", "bucket_outputs": "bench"},
               "comfyui": {"url": comfy.url, "checkpoints_dir": str(comfy.base_dir / "models" / "checkpoints"),
                           "loras_dir": str(comfy.base_dir / "models" / "loras"),
                           "output_dir": str(comfy.base_dir / "output"), "poll_interval": 0.05},
               "jobs": {"reserve_bytes": 0, "max_queue": 1000}}
        (work / "config.json").write_text(json.dumps(cfg))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(lib_dir()), str(AGENT_SRC)]))
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

        # /healthz under load while a slow job renders
        comfy.control(delay=args.seconds / 3 + 1)
        request(port, "POST", "/jobs", envelope("slow", 999))
        while request(port, "GET", "/jobs/slow")[1]["state"] != "rendering":
            time.sleep(0.01)
        procs, q = [], multiprocessing.Queue()
        per = max(1, args.clients // 4)
        for _ in range(4):
            p = multiprocessing.Process(target=_health_worker, args=(port, per, args.seconds, args.interval, q))
            p.start()
            procs.append(p)
        lat, errors = [], 0
        for _ in procs:
            got, err = q.get(timeout=args.seconds + 60)
            lat += got
            errors += err
        for p in procs:
            p.join()
        busy = request(port, "GET", "/jobs/slow")[1]["state"]
        print(f"/healthz with {per * 4} concurrent clients ({args.interval:g} s pause each) for {args.seconds:g} s "
              f"while a job renders (job state at the end: {busy})")
        print(f"  requests {len(lat)} ({len(lat) / args.seconds:.0f}/s), errors {errors}")
        print(f"  latency p50 {ms(pct(lat, .5))}  p90 {ms(pct(lat, .9))}  p99 {ms(pct(lat, .99))}  "
              f"max {ms(max(lat) if lat else 0)}  (goal p99 < 10 ms)")
        comfy.control(delay=0)
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
