#!/usr/bin/env python3
# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a drain adds to a restart on an idle node: the figure of issue 16 (goal: under 1 s).

The roles restart a ComfyUI instance as drain -> restart -> wait -> resume (roles/comfyui/tasks/restart.yml) and the
agent as drain -> restart -> wait -> resume; without an agent on the node the same restart is the restart alone,
and the wait for the service happens anyway (after the handlers). So the drain's own cost is two tasks of the
collection's module ``agent_drain`` (state=drained, state=resumed) against an agent with nothing to wait for.

Starts a real MinIO (rig/minio_server.py), one ComfyUI stand-in and the agent as a subprocess (as under systemd;
benchmarks/agent_slots.py's rig), then times, in the same run:

* **http**: one drain + resume pair as raw HTTP calls (``POST /drain`` then ``POST /resume``, slot 0): the floor;
* **playbooks**: ``ansible-playbook`` (connection local, the venv's Python) with ``--restarts`` restart sequences,
  once as ``restart`` only (an ``ansible.builtin.command: "true"`` stands for the systemd restart) and once as
  ``drain, restart, resume`` with the real module; alternated ``--rounds`` times. Extra per restart =
  (drain playbook - plain playbook) / restarts, median over the rounds, and the same for the whole agent (no slot);
  with ansible's own ``linear`` strategy and with ``mitogen_linear`` (PyPI mitogen in a cache directory, as
  benchmarks/provision.py installs it; ``--strategies linear`` skips it).

Over SSH each task also pays its round trip (benchmarks/README.md, provision: ~0.3 s a task with pipelining): the
local figure is the module's own cost, the SSH figure is two more round trips on top. Prints a markdown table;
``--json FILE`` writes every figure. Figures only, never assertions; every process and temp dir is removed.

    .venv/bin/python benchmarks/drain_cost.py [--restarts 10] [--rounds 3] [--http 50] [--json FILE]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
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



def _load(name):
    spec = importlib.util.spec_from_file_location("bench_" + name, ROOT / "benchmarks" / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


slots_rig = _load("agent_slots")   # MinIO, stand-ins, the agent as a process


# ---------------------------------------------------------------------------------------------- figures (pure)
def playbook(restarts, port, token, slot, drain):
    """A play of ``restarts`` restart sequences: [drain,] restart[, resume] per restart (slot None: the agent)."""
    args = {"url": f"http://127.0.0.1:{port}", "token": token}
    if slot is not None:
        args["slot"] = slot
    tasks = []
    for i in range(restarts):
        if drain:
            tasks.append({"name": f"drain {i}", "visionsuit.gpuworker.agent_drain": dict(args, state="drained",
                                                                                         timeout=600)})
        tasks.append({"name": f"restart {i}", "ansible.builtin.command": "true", "changed_when": True})
        if drain:
            tasks.append({"name": f"resume {i}", "visionsuit.gpuworker.agent_drain": dict(args, state="resumed")})
    return [{"name": "restarts", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "tasks": tasks}]


def extra_per_restart(plain_s, drain_s, restarts):
    """Median over the rounds of (drain playbook - plain playbook) / restarts, and each round's figure."""
    per_round = [(d - p) / restarts for p, d in zip(plain_s, drain_s)]
    return statistics.median(per_round), per_round


def table(rows):
    out = ["| restart of | what is timed | extra per restart, median | per round |", "| --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['sequence']} | {r['what']} | {r['median_ms']:.0f} ms | "
                   f"{', '.join(f'{x:.0f}' for x in r['per_round_ms'])} ms |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- measuring
def run_playbook(path, env):
    t0 = time.monotonic()
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(path)],
                          env=env, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{path.name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return took


def http_pairs(port, n, slot):
    body = {} if slot is None else {"slot": slot}
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, doc = slots_rig.request(port, "POST", "/drain", body)
        if status != 200 or not doc.get("idle"):
            raise RuntimeError(f"POST /drain: {status} {doc}")
        status, doc = slots_rig.request(port, "POST", "/resume", body)
        if status != 200:
            raise RuntimeError(f"POST /resume: {status} {doc}")
        times.append(time.perf_counter() - t0)
    return times


def measure(args):
    from rig.minio_server import MinioServer

    rows = []
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="vs-drain-cost-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        with slots_rig.signals_deferred():
            minio = MinioServer.start()
            stack.callback(minio.stop)
        comfys = slots_rig.start_standins(work, 1, stack)
        agent = slots_rig.Agent(work / "agent", minio, comfys, 1)
        stack.callback(agent.stop)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".build" / "collections"),
                   ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
                   ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="0")
        envs = {"linear": env}
        if "mitogen" in args.strategies:
            target, plugin = _load("provision").mitogen_strategy_dir()
            envs["mitogen"] = dict(env, ANSIBLE_STRATEGY_PLUGINS=plugin, ANSIBLE_STRATEGY="mitogen_linear",
                                   PYTHONPATH=target + os.pathsep + env.get("PYTHONPATH", ""))
        for label, slot in (("ComfyUI instance (slot 0)", 0), ("agent (whole)", None)):
            times = http_pairs(agent.port, args.http, slot)
            rows.append({"sequence": label, "what": f"raw HTTP: POST /drain + POST /resume ({args.http} pairs)",
                         "median_ms": statistics.median(times) * 1000,
                         "per_round_ms": [slots_rig.pct(times, 0.5) * 1000, slots_rig.pct(times, 0.95) * 1000]})
            paths = {}
            for drain in (False, True):
                paths[drain] = work / f"play-{slot}-{drain}.yml"
                paths[drain].write_text(json.dumps(playbook(args.restarts, agent.port, slots_rig.TOKEN, slot, drain)))
            for strategy in args.strategies:
                run_playbook(paths[True], envs[strategy])   # warm-up: ansible's caches, the module's first import
                plain, drained = [], []
                for r in range(args.rounds):
                    print(f"{label}, {strategy}: round {r + 1}/{args.rounds} ...", file=sys.stderr, flush=True)
                    plain.append(run_playbook(paths[False], envs[strategy]))
                    drained.append(run_playbook(paths[True], envs[strategy]))
                median, per_round = extra_per_restart(plain, drained, args.restarts)
                rows.append({"sequence": label, "strategy": strategy,
                             "what": f"ansible-playbook ({strategy}, local): drain + resume tasks ({args.restarts} "
                             f"restarts a playbook; the plain one takes {statistics.median(plain):.1f} s)",
                             "median_ms": median * 1000, "per_round_ms": [x * 1000 for x in per_round],
                             "plain_s": plain, "drain_s": drained})
        _, health = slots_rig.request(agent.port, "GET", "/healthz")
        if health.get("draining") or health.get("drained_slots"):
            raise RuntimeError(f"the agent was left drained: {health}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--restarts", type=int, default=10, help="restart sequences per playbook (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="plain/drain playbook pairs, alternated (default 3)")
    ap.add_argument("--http", type=int, default=50, help="raw HTTP drain+resume pairs (default 50)")
    ap.add_argument("--strategies", default="linear,mitogen", help="linear and/or mitogen (default both)")
    ap.add_argument("--json", metavar="FILE", help="write every figure as JSON to FILE")
    args = ap.parse_args()
    args.strategies = [s for s in args.strategies.split(",") if s.strip()]
    if not 1 <= args.restarts <= 100 or not 1 <= args.rounds <= 20 or not 1 <= args.http <= 1000 or \
            not args.strategies or set(args.strategies) - {"linear", "mitogen"}:
        ap.error("--restarts: 1-100; --rounds: 1-20; --http: 1-1000; --strategies: linear,mitogen")

    def interrupted(signum, _frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    loadavg = os.getloadavg()
    try:
        rows = measure(args)
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'Ctrl-C'}); processes and temp files removed", file=sys.stderr)
        return 130
    when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"drain cost on an idle node: agent + 1 stand-in + MinIO on 127.0.0.1; {os.cpu_count()} CPUs, load "
          f"{loadavg[0]:.1f} before, {when}\n")
    print(table(rows))
    print("\n(raw HTTP rows: 'per round' is the median and p95 of the pairs.) Goal: the drain adds under 1 s to a "
          "restart on an idle node (figures only, no assertions).")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": when, "cpus": os.cpu_count(), "machine": platform.platform(),
                                               "loadavg": loadavg, "args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
