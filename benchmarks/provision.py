#!/usr/bin/env python3
"""Provisioning benchmark: wall time of playbooks/provision.yml on throwaway systemd containers.

Measures, in one run: the first provision and the idempotent re-run of one host, then the same for three hosts
at once (forks >= 3), and prints the figures, the task counts and the ratios (re-run / first run;
three hosts / one host). Uses the same rig as the demo: the local base image, a real MinIO and the ComfyUI
stand-in repository (no PyTorch). Run with the project venv on PATH (make setup first):

    PATH=$PWD/.venv/bin:$PATH CONTAINERS_CONF=$PWD/rig/containers.conf python3 benchmarks/provision.py
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from rig.minio_server import MinioServer  # noqa: E402

RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)", re.M)


def sh(*argv, **kw):
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, **kw).stdout


def start_hosts(image, names, repo_tar):
    for name in names:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True)
        sh("podman", "run", "-d", "--name", name, "--hostname", name, "--systemd=always", image, "/sbin/init")
    for name in names:
        for _ in range(100):
            state = subprocess.run(["podman", "exec", name, "systemctl", "is-system-running"],
                                   capture_output=True, text=True).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.2)
        sh("podman", "cp", repo_tar, name + ":/srv/standin.tar")
        sh("podman", "exec", name, "tar", "-C", "/srv", "-xf", "/srv/standin.tar")
        sh("podman", "exec", name, "sh", "-c",
           "mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/update-success-stamp")


def provision(inventory, extra_vars, forks):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORKS=str(forks))
    start = time.monotonic()
    out = subprocess.run(["ansible-playbook", os.path.join(ROOT, "playbooks", "provision.yml"), "-i", inventory,
                          "-e", "@" + extra_vars], capture_output=True, text=True, env=env)
    wall = time.monotonic() - start
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-4000:] + out.stderr[-2000:])
        raise SystemExit("provision failed (rc=%d)" % out.returncode)
    recap = {m.group(1): [int(x) for x in m.groups()[1:]] for m in RECAP.finditer(out.stdout)}
    tasks = sum(v[0] + v[4] for v in recap.values())  # ok (includes changed) + skipped, all hosts
    changed = sum(v[1] for v in recap.values())
    return wall, tasks, changed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=3, help="size of the multi-host run (default 3)")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()
    image = sh(os.path.join(ROOT, "rig", "build-base-image.sh")).strip()
    work = tempfile.mkdtemp(prefix="vs-bench-provision-")
    sh(os.path.join(ROOT, "rig", "standin-repo.sh"), os.path.join(work, "comfyui-standin.git"))
    repo_tar = os.path.join(work, "standin.tar")
    sh("tar", "-C", work, "-cf", repo_tar, "comfyui-standin.git")
    results = {}
    names_all = ["vs-bench-%d" % i for i in range(1, args.hosts + 1)]
    minio = None
    try:
        for label, names in (("1 host", names_all[:1]), ("%d hosts" % args.hosts, names_all)):
            start_hosts(image, names, repo_tar)
            if minio is None:
                gw = sh("podman", "exec", names[0], "getent", "hosts", "host.containers.internal").split()[0]
                minio = MinioServer.start(address=gw)
            inv = os.path.join(work, "inventory.yml")
            with open(inv, "w") as f:
                json.dump({"all": {"hosts": {n: {"ansible_connection": "containers.podman.podman",
                                                 "ansible_python_interpreter": "/usr/bin/python3"} for n in names},
                                   "children": {"agents": {"hosts": {n: {} for n in names}}}}}, f)
            ev = os.path.join(work, "vars.json")
            fd = os.open(ev, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"comfyui_git_url": "file:///srv/comfyui-standin.git", "comfyui_version": "standin-v1",
                           "comfyui_torch_packages": [], "gpu_agent_api_token": "benchmark-token-0123456789",
                           "comfyui_pip_constraints_file": os.path.join(ROOT, "rig", "comfyui-standin",
                                                                        "constraints.txt"),
                           "visionsuit_minio_endpoint": "http://host.containers.internal:%d" % minio.port,
                           "visionsuit_minio_access_key": minio.access_key,
                           "visionsuit_minio_secret_key": minio.secret_key}, f)
            first = provision(inv, ev, forks=len(names))
            rerun = provision(inv, ev, forks=len(names))
            results[label] = {"first_s": round(first[0], 1), "first_tasks": first[1], "first_changed": first[2],
                              "rerun_s": round(rerun[0], 1), "rerun_tasks": rerun[1], "rerun_changed": rerun[2]}
            print("%-8s first %6.1f s (%d tasks, %d changed)   re-run %6.1f s (%d tasks, %d changed)" % (
                label, first[0], first[1], first[2], rerun[0], rerun[1], rerun[2]), flush=True)
    finally:
        for n in names_all:
            subprocess.run(["podman", "rm", "-f", n], capture_output=True)
        if minio is not None:
            minio.stop()
    one, many = results["1 host"], results["%d hosts" % args.hosts]
    ratios = {"rerun_over_first_1host": round(one["rerun_s"] / one["first_s"], 2),
              "rerun_over_first_%dhosts" % args.hosts: round(many["rerun_s"] / many["first_s"], 2),
              "%dhosts_over_1host_first" % args.hosts: round(many["first_s"] / one["first_s"], 2),
              "%dhosts_over_1host_rerun" % args.hosts: round(many["rerun_s"] / one["rerun_s"], 2)}
    print("ratios: " + ", ".join("%s=%s" % kv for kv in ratios.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "ratios": ratios}, f, indent=2)


if __name__ == "__main__":
    main()
