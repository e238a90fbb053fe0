#!/usr/bin/env python3
# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Jobs per minute of the GPU agent with 1, 2 and 4 render slots, and its own overhead per job.

Starts a real MinIO (rig/minio_server.py), N ComfyUI stand-ins (one per slot, each on a free 127.0.0.1 port,
sharing the first one's models/ and output/ as instances of one ComfyUI install do) and, for each slot count, a
fresh agent as a subprocess (as under systemd) with ``comfyui.instances: [{url, gpu}, ...]``. For each run it:

1. warms up: one job per slot with no render delay (fills the agent's cache: every measured job finds its
   checkpoint and LoRA cached, as on a busy node);
2. sets the stand-ins' render delay so that one job renders ``--delay`` seconds (the stand-ins run with
   ``--cache-none``: every node of every prompt executes; the per-node delay is ``--delay`` / nodes);
3. submits ``--jobs-per-slot`` x N jobs at once and waits until all are finished.

Figures per run (from the job documents, never timed assertions):

* jobs/min = jobs / (last ``marks.finished`` - the time the first POST was sent) x 60;
* scaling vs 1 slot = jobs/min(N) / (N x jobs/min(1)) (goal >= 0.9: the agent is not the bottleneck);
* overhead per job = (``marks.finished`` - ``marks.started``) - ``timings.comfyui_execution_s``: the time a
  slot is held by a job minus ComfyUI's own run time (execution_start -> execution_success, as the stand-in
  stamps them). It includes staging (cache hits), building and submitting the prompt, noticing the end, uploading
  the outputs to MinIO and the clean-up; it excludes the time in the queue. Goal: < 50 ms with 4 slots.

Prints markdown tables; ``--json FILE`` writes every figure. Every process and temp dir is removed at the end,
also on failure or Ctrl-C.

    .venv/bin/python benchmarks/agent_slots.py [--slots 1,2,4] [--jobs-per-slot 4] [--delay 1.0] [--json FILE]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 - a throwaway token for a local run
CKPT_KEY, LORA_KEY = "ckpt/base.safetensors", "loras/5e1f0c"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------- figures (pure)
def pct(values, q):
    """Linear-interpolated percentile (q in 0..1); nan for no values."""
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def job_figures(doc):
    """Per-job seconds from a finished job document: render (ComfyUI's own run time), held (slot held: started ->
    finished), overhead (held - render) and its parts: pre (started -> prompt submitted), notice (submitted ->
    the agent saw the end, minus render), post (the end seen -> finished: upload and clean-up)."""
    m, t = doc["marks"], doc["timings"]
    render = t["comfyui_execution_s"]
    held = m["finished"] - m["started"]
    return {"render": render, "held": held, "overhead": held - render, "pre": m["submitted"] - m["started"],
            "notice": m["comfy_done"] - m["submitted"] - render, "post": m["finished"] - m["comfy_done"],
            "queued": m["started"] - m["accepted"]}


def summarise(docs, t0, n_slots):
    """The figures of one run: ``docs`` are the finished job documents, ``t0`` the wall time (time.time()) when the
    first POST was sent."""
    figs = [job_figures(d) for d in docs]
    makespan = max(d["marks"]["finished"] for d in docs) - t0
    render = statistics.median(f["render"] for f in figs)
    # the gap between a job's end and the next job's start on the same slot: dispatch cost beside the overhead
    gaps = []
    for slot in {d["slot"] for d in docs}:
        mine = sorted((d["marks"]["started"], d["marks"]["finished"]) for d in docs if d["slot"] == slot)
        gaps += [b[0] - a[1] for a, b in zip(mine, mine[1:])]
    per_slot = [sum(1 for d in docs if d["slot"] == s) for s in range(n_slots)]
    out = {"slots": n_slots, "jobs": len(docs), "makespan_s": makespan, "jobs_per_min": len(docs) / makespan * 60,
           "render_median_s": render, "ideal_jobs_per_min": n_slots * 60 / render,
           "jobs_per_slot": per_slot, "slot_busy_share": sum(f["held"] for f in figs) / (n_slots * makespan),
           "dispatch_gap_median_s": statistics.median(gaps) if gaps else None,
           "dispatch_gap_max_s": max(gaps) if gaps else None}
    for key in ("overhead", "pre", "notice", "post", "render", "held"):
        values = [f[key] for f in figs]
        out[key] = {"median_s": statistics.median(values), "p95_s": pct(values, .95), "max_s": max(values)}
    return out


def add_scaling(runs):
    """scaling = jobs/min(N) / (N x jobs/min(1)), against the 1-slot run when there is one."""
    base = next((r for r in runs if r["slots"] == 1), None)
    for r in runs:
        r["scaling"] = r["jobs_per_min"] / (r["slots"] * base["jobs_per_min"]) if base else None
        r["of_ideal"] = r["jobs_per_min"] / r["ideal_jobs_per_min"]
    return runs


def tables(runs):
    def ms(x):
        return "-" if x is None else f"{x * 1000:.1f}"

    lines = ["| slots | jobs | render s (median) | wall s | jobs/min | ideal jobs/min | scaling vs 1 slot "
             "(goal >= 0.9) | overhead ms median / p95 (goal < 50 with 4) | agent CPU ms/job | load avg before |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        scaling = "-" if r["scaling"] is None else f"{r['scaling']:.3f}"
        lines.append(f"| {r['slots']} | {r['jobs']} | {r['render_median_s']:.3f} | {r['makespan_s']:.2f} "
                     f"| {r['jobs_per_min']:.1f} | {r['ideal_jobs_per_min']:.1f} | {scaling} "
                     f"| {ms(r['overhead']['median_s'])} / {ms(r['overhead']['p95_s'])} "
                     f"| {ms(r.get('agent_cpu_s_per_job'))} | {(r.get('loadavg_before') or ['-'])[0]} |")
    lines += ["", "Overhead parts, ms median / p95 (pre: started -> prompt submitted; notice: submitted -> end seen, "
              "minus render; post: end seen -> finished, i.e. upload + clean-up; gap: a slot's idle time between "
              "two jobs)", "",
              "| slots | pre | notice | post | overhead | gap median / max | slot busy share | jobs per slot |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        parts = " | ".join(f"{ms(r[k]['median_s'])} / {ms(r[k]['p95_s'])}" for k in ("pre", "notice", "post",
                                                                                    "overhead"))
        lines.append(f"| {r['slots']} | {parts} | {ms(r['dispatch_gap_median_s'])} / {ms(r['dispatch_gap_max_s'])} "
                     f"| {r['slot_busy_share']:.3f} | {r['jobs_per_slot']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- processes
def request(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
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
        conn.close()


def envelope(job_id, seed):
    return {"job_id": job_id, "base_models": [{"key": CKPT_KEY}], "loras": [{"key": LORA_KEY, "strength": 0.8}],
            "parameters": {"prompt": "benchmark", "seed": seed, "steps": 2, "width": 64, "height": 64}}


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Agent:
    """The agent as a subprocess with ``comfyui.instances`` = the given stand-ins; a fresh state dir each time."""

    def __init__(self, work, minio, comfys, n_jobs):
        from rig.minio_server import free_port

        self.work = work
        self.port = free_port()
        first = comfys[0].base_dir
        cfg = {"server": {"listen": "127.0.0.1", "port": self.port, "api_token": TOKEN},
               "state_dir": str(work / "state"),
               "minio": {"endpoint": minio.endpoint, "access_key": minio.access_key, "secret_key": minio.secret_key,
                         "bucket_checkpoints": "bench", "bucket_loras": "bench", "bucket_outputs": "bench"},
               "comfyui": {"instances": [{"url": c.url, "gpu": i} for i, c in enumerate(comfys)],
                           "checkpoints_dir": str(first / "models" / "checkpoints"),
                           "loras_dir": str(first / "models" / "loras"), "output_dir": str(first / "output")},
               "jobs": {"reserve_bytes": 0, "max_queue": max(16, n_jobs + len(comfys))}}
        work.mkdir(parents=True, exist_ok=True)
        (work / "config.json").write_text(json.dumps(cfg))
        self.log_path = work / "agent.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "visionsuit_gpu_agent", "--config",
                                      str(work / "config.json"), "--log-level", "WARNING"],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self):
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError, ValueError):
                status, health = request(self.port, "GET", "/healthz")
                if status == 200 and all(s.get("comfyui_reachable") for s in health.get("slots", [{}])):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent not ready with all slots reachable within 30 s:\n{self.log()}")
            time.sleep(0.1)

    def log(self):
        with contextlib.suppress(ValueError):
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def submit(self, job_id, seed):
        status, body = request(self.port, "POST", "/jobs", envelope(job_id, seed))
        if status != 202:
            raise RuntimeError(f"POST /jobs {job_id}: {status} {body}")

    def wait_all(self, job_ids, timeout):
        """The finished documents, in order; polls the oldest unfinished job only, every 0.1 s (the figures come
        from the documents' own marks, so the poll interval does not enter them)."""
        deadline = time.monotonic() + timeout
        docs = []
        for job_id in job_ids:
            while True:
                _, doc = request(self.port, "GET", "/jobs/" + job_id)
                if doc["state"] in ("done", "failed"):
                    if doc["state"] != "done":
                        raise RuntimeError(f"job {job_id} failed: {doc.get('error')}\n{self.log()}")
                    docs.append(doc)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job_id} not finished after {timeout:.0f} s (state {doc['state']})")
                time.sleep(0.1)
        return docs

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def start_standins(work, n, stack):
    """n stand-ins sharing the first one's models/ and output/ (as instances of one install), --cache-none. Each one
    is registered for the clean-up before it is waited for (rig.standin_fixtures.start_standin, done by hand)."""
    from rig.minio_server import free_port
    from rig.standin_fixtures import StandinServer, seed_checkout_files

    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYUI_STANDIN_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep the stand-in's source tree clean
    comfys = []
    for i in range(n):
        base = work / f"comfy{i}" / "base"
        base.mkdir(parents=True)
        args = ["--cache-none"]
        if comfys:
            os.symlink(comfys[0].base_dir / "models", base / "models")
            args += ["--output-directory", str(comfys[0].output_dir)]
        else:
            seed_checkout_files(base)
        srv = StandinServer(base, free_port(), args, env, base.parent / "standin.log")
        stack.callback(srv.stop)
        comfys.append(srv.wait_ready())
    return comfys


@contextlib.contextmanager
def signals_deferred():
    """SIGINT/SIGTERM wait until the block ends (MinIO runs in a session of its own: a start interrupted before the
    server is registered for the clean-up would leave it running)."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def run_slots(work, minio, comfys, n, jobs_per_slot, delay, per_node):
    """One run with n slots; returns its figures."""
    k = n * jobs_per_slot
    agent = Agent(work / f"run-{n}", minio, comfys[:n], k)
    try:
        for c in comfys[:n]:
            c.control(delay=0)
        warm = [f"warm-{n}-{i}" for i in range(n)]
        for i, job_id in enumerate(warm):
            agent.submit(job_id, 10_000 + i)
        warm_docs = agent.wait_all(warm, timeout=60)
        if per_node is None:   # nodes of the agent's prompt, from the stand-in's history (all execute: --cache-none)
            doc = warm_docs[0]
            hist = comfys[doc["slot"]].get_json(f"/history/{doc['prompt_id']}")
            per_node = delay / len(hist[doc["prompt_id"]]["prompt"][2])
        for c in comfys[:n]:
            c.control(delay=per_node)
        time.sleep(0.5)   # let the warm-up's clean-up and the machine settle
        job_ids = [f"n{n}-{i}" for i in range(k)]
        loadavg = os.getloadavg()
        cpu0 = cpu_seconds(agent.proc.pid)
        t0 = time.time()
        for i, job_id in enumerate(job_ids):
            agent.submit(job_id, 100 + i)
        t_posted = time.time()
        docs = agent.wait_all(job_ids, timeout=60 + 4 * jobs_per_slot * (delay + 1))
        cpu = cpu_seconds(agent.proc.pid) - cpu0
    finally:
        agent.stop()
    out = summarise(docs, t0, n)
    out.update(loadavg_before=[round(x, 2) for x in loadavg], post_s=t_posted - t0, agent_cpu_s=cpu,
               agent_cpu_s_per_job=cpu / k, per_node_delay_s=per_node)
    return out, per_node


def measure(args, slots):
    """Starts MinIO and the stand-ins, runs each slot count; removes every process and temp dir at the end."""
    from rig.minio_server import MinioServer
    from rig.standin_fixtures import checkpoint_bytes, safetensors_bytes
    from visionsuit_gpuworker.s3.client import S3Client  # installed in the venv (make venv)

    runs = []
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="vs-agent-slots-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        with signals_deferred():
            minio = MinioServer.start()
            stack.callback(minio.stop)
        s3 = S3Client(minio.endpoint, minio.access_key, minio.secret_key)
        s3.create_bucket("bench")
        s3.put_object("bench", CKPT_KEY, checkpoint_bytes(b"\0" * 4096),
                      metadata={"original-filename": "base.safetensors"})
        s3.put_object("bench", LORA_KEY, safetensors_bytes({"w": b"\1" * 4096}),
                      metadata={"original-filename": "style.safetensors"})
        comfys = start_standins(work, max(slots), stack)
        per_node = None
        for n in slots:
            print(f"{n} slot(s): {n * args.jobs_per_slot} jobs of {args.delay:g} s ...", file=sys.stderr, flush=True)
            result, per_node = run_slots(work, minio, comfys, n, args.jobs_per_slot, args.delay, per_node)
            runs.append(result)
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", default="1,2,4", help="slot counts to run, comma-separated (default 1,2,4)")
    ap.add_argument("--jobs-per-slot", type=int, default=4, help="measured jobs per slot in each run (default 4)")
    ap.add_argument("--delay", type=float, default=1.0, help="render time of one job in the stand-in, s (default 1)")
    ap.add_argument("--json", metavar="FILE", help="write every figure as JSON to FILE")
    args = ap.parse_args()
    try:
        slots = sorted({int(s) for s in args.slots.split(",") if s.strip()})
    except ValueError:
        slots = []
    if not slots or min(slots) < 1 or max(slots) > 16 or not 1 <= args.jobs_per_slot <= 50 or \
            not 0 < args.delay <= 30:
        ap.error("--slots: a comma-separated list of 1-16; --jobs-per-slot: 1-50; --delay: (0, 30]")

    def interrupted(signum, _frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # once: the clean-up must not be interrupted in turn
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)   # clean up on SIGTERM as on Ctrl-C
    try:
        runs = measure(args, slots)
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'Ctrl-C'}); processes and temp files removed", file=sys.stderr)
        return 130
    add_scaling(runs)
    when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"agent render slots: {args.jobs_per_slot} jobs per slot, stand-in render {args.delay:g} s per job "
          f"({runs[0]['per_node_delay_s'] * 1000:.1f} ms per node), warm cache, MinIO and stand-ins on 127.0.0.1; "
          f"{os.cpu_count()} CPUs, {when}\n")
    print(tables(runs))
    print("\ngoals: scaling >= 0.9 for N slots; overhead per job < 50 ms with 4 slots (figures only, no assertions)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": when, "cpus": os.cpu_count(), "machine": platform.platform(), "python": sys.executable,
            "args": vars(args), "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
