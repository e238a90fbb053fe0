#!/usr/bin/env python3
# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Provisioning benchmark: wall time of playbooks/provision.yml on throwaway systemd containers.

For each connection (podman, ssh, ssh-pipelining, mitogen) and each fleet size (default 1, 3 and 6 hosts, forks =
hosts) it starts fresh containers, runs the first provision and the idempotent re-run, and prints the wall time,
the tasks per host and the seconds per task, then the ratios (re-run / first; N hosts / 1 host). Uses the rig of
the demo and molecule: the local base image (with sshd; the rig's key from rig/ssh-key.sh is bind-mounted as root's
authorized_keys), a real MinIO and the ComfyUI stand-in repository (no PyTorch). Package caches are warm: pip's
cache is a host directory shared by the containers and filled before the timed runs, so the first run measures
the roles, not PyPI. Run with the project venv on PATH (make setup first):

    PATH=$PWD/.venv/bin:$PATH CONTAINERS_CONF=$PWD/rig/containers.conf python3 benchmarks/provision.py \\
        --connections podman,ssh,ssh-pipelining,mitogen --hosts 1,3,6 --json /tmp/provision.json

Connections: podman = containers.podman.podman (podman exec + cp per task step); ssh = ansible.builtin.ssh with
Ansible's default ssh_args (ControlMaster=auto, ControlPersist=60s); ssh-pipelining = the same plus
pipelining=True (one ssh round trip per task); mitogen = ssh-pipelining with strategy mitogen_linear (PyPI
mitogen, installed into a cache directory on first use, outside the project venv).
"""
import argparse
import json
import os
import re
import resource
import shutil
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


CACHE = os.environ.get("VISIONSUIT_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "visionsuit-gpuworker")
MITOGEN = "mitogen==0.3.54"
SSH_ARGS = ("-C -o ControlMaster=auto -o ControlPersist=60s -o IdentitiesOnly=yes -o UserKnownHostsFile=/dev/null "
            "-o StrictHostKeyChecking=no -o LogLevel=ERROR")
CONNECTIONS = ("podman", "ssh", "ssh-pipelining", "mitogen")


def start_hosts(image, names, repo_tar, ssh_dir, pip_cache):
    for name in names:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True)
        sh("podman", "run", "-d", "--name", name, "--hostname", name, "--systemd=always",
           "-v", os.path.join(ssh_dir, "authorized_keys") + ":/root/.ssh/authorized_keys:ro",
           "-v", pip_cache + ":/root/.cache/pip", image, "/sbin/init")
    addresses = {}
    for name in names:
        for _ in range(150):
            state = subprocess.run(["podman", "exec", name, "systemctl", "is-system-running"],
                                   capture_output=True, text=True).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.2)
        sh("podman", "cp", repo_tar, name + ":/srv/standin.tar")
        sh("podman", "exec", name, "tar", "-C", "/srv", "-xf", "/srv/standin.tar")
        sh("podman", "exec", name, "sh", "-c",
           "mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/update-success-stamp")
        addresses[name] = sh("podman", "inspect", "--format", "{{.NetworkSettings.IPAddress}}", name).strip()
    return addresses


def mitogen_strategy_dir():
    """The strategy plugin directory of mitogen, installed once into the cache (not into the project venv)."""
    target = os.path.join(CACHE, "bench-mitogen", MITOGEN.split("==")[1])
    plugin = os.path.join(target, "ansible_mitogen", "plugins", "strategy")
    if not os.path.isdir(plugin):
        sh(sys.executable, "-m", "pip", "install", "-q", "--target", target, MITOGEN)
    return target, plugin


def inventory(work, names, addresses, connection, ssh_dir):
    hosts = {}
    for n in names:
        if connection == "podman":
            hosts[n] = {"ansible_connection": "containers.podman.podman"}
        else:
            hosts[n] = {"ansible_connection": "ssh", "ansible_host": addresses[n], "ansible_user": "root",
                        "ansible_ssh_private_key_file": os.path.join(ssh_dir, "id_ed25519")}
        hosts[n]["ansible_python_interpreter"] = "/usr/bin/python3"
    path = os.path.join(work, "inventory-%s.json" % connection)
    with open(path, "w") as f:
        json.dump({"all": {"hosts": hosts, "children": {"agents": {"hosts": {n: {} for n in names}}}}}, f)
    return path


def round_trips(record_path):
    """Per host: the task results that needed the node (a looped task: one per item run), from task_record's lines."""
    trips = {}
    with open(record_path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["remote"]:
                trips[r["host"]] = trips.get(r["host"], 0) + (r["items"] if r["items"] is not None else 1)
    return trips


def provision(inventory_path, extra_vars, forks, connection, record_path):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORKS=str(forks), ANSIBLE_SSH_ARGS=SSH_ARGS,
               ANSIBLE_PIPELINING="1" if connection in ("ssh-pipelining", "mitogen") else "0",
               ANSIBLE_CALLBACK_PLUGINS=os.path.join(ROOT, "benchmarks", "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="task_record", VISIONSUIT_TASK_RECORD=record_path)
    if connection == "mitogen":
        target, plugin = mitogen_strategy_dir()
        env.update(ANSIBLE_STRATEGY_PLUGINS=plugin, ANSIBLE_STRATEGY="mitogen_linear",
                   PYTHONPATH=target + os.pathsep + env.get("PYTHONPATH", ""))
    if os.path.exists(record_path):  # task_record appends: a --record DIR used before would count twice
        os.unlink(record_path)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    out = subprocess.run(["ansible-playbook", os.path.join(ROOT, "playbooks", "provision.yml"), "-i", inventory_path,
                          "-e", "@" + extra_vars], capture_output=True, text=True, env=env)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of ansible-playbook and its workers on the controller (the containers' own work is not in it)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-4000:] + out.stderr[-2000:])
        raise RuntimeError("provision failed over %s (rc=%d)" % (connection, out.returncode))
    recap = {m.group(1): [int(x) for x in m.groups()[1:]] for m in RECAP.finditer(out.stdout)}
    tasks = sum(v[0] + v[4] for v in recap.values())  # ok (includes changed) + skipped, all hosts
    changed = sum(v[1] for v in recap.values())
    trips = round_trips(record_path)
    return wall, tasks, changed, cpu, sum(trips.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", default="1,3,6", help="fleet sizes, comma separated (default 1,3,6)")
    ap.add_argument("--connections", default="podman,ssh-pipelining",
                    help="comma separated, of: %s (default podman,ssh-pipelining)" % ", ".join(CONNECTIONS))
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--record", help="keep each run's per-task lines (callback_plugins/task_record.py) in this "
                    "directory: <connection>-<hosts>-{first,rerun}.jsonl")
    ap.add_argument("--no-warm-up", action="store_true",
                    help="skip the untimed first provision that fills pip's cache (when an earlier run filled it)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.hosts.split(",")]
    connections = args.connections.split(",")
    for c in connections:
        if c not in CONNECTIONS:
            ap.error("--connections: unknown %r (allowed: %s)" % (c, ", ".join(CONNECTIONS)))
    image = sh(os.path.join(ROOT, "rig", "build-base-image.sh")).strip()
    ssh_dir = sh(os.path.join(ROOT, "rig", "ssh-key.sh")).strip()
    pip_cache = os.path.join(CACHE, "bench-pip-cache")
    os.makedirs(pip_cache, exist_ok=True)
    work = tempfile.mkdtemp(prefix="vs-bench-provision-")
    sh(os.path.join(ROOT, "rig", "standin-repo.sh"), os.path.join(work, "comfyui-standin.git"))
    repo_tar = os.path.join(work, "standin.tar")
    sh("tar", "-C", work, "-cf", repo_tar, "comfyui-standin.git")
    results = []
    names_all = ["vs-bench-%d" % i for i in range(1, max(sizes) + 1)]
    minio = None
    try:
        # warm-up: one provision fills pip's cache (not reported)
        runs = ([] if args.no_warm_up else [("warm-up", 1)]) + [(c, n) for c in connections for n in sizes]
        for connection, count in runs:
            names = names_all[:count]
            for n in names_all:
                subprocess.run(["podman", "rm", "-f", n], capture_output=True)
            addresses = start_hosts(image, names, repo_tar, ssh_dir, pip_cache)
            if minio is None:
                gw = sh("podman", "exec", names[0], "getent", "hosts", "host.containers.internal").split()[0]
                minio = MinioServer.start(address=gw)
            ev = os.path.join(work, "vars.json")
            fd = os.open(ev, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"comfyui_git_url": "file:///srv/comfyui-standin.git", "comfyui_version": "standin-v1",
                           "comfyui_torch_packages": [], "gpu_agent_api_token": "benchmark-token-0123456789",
                           "comfyui_pip_constraints_file": os.path.join(ROOT, "rig", "comfyui-standin",
                                                                        "constraints.txt"),
                           "comfyui_pip_constraints": ["requests==2.32.5"],
                           "visionsuit_minio_endpoint": "http://host.containers.internal:%d" % minio.port,
                           "visionsuit_minio_access_key": minio.access_key,
                           "visionsuit_minio_secret_key": minio.secret_key}, f)
            inv = inventory(work, names, addresses, "podman" if connection == "warm-up" else connection, ssh_dir)
            record = os.path.join(args.record or work, "%s-%d" % (connection, count))
            try:
                first = provision(inv, ev, len(names), "podman" if connection == "warm-up" else connection,
                                  record + "-first.jsonl")
                if connection == "warm-up":
                    continue
                rerun = provision(inv, ev, len(names), connection, record + "-rerun.jsonl")
            except RuntimeError as exc:
                print("%-15s %d host(s): FAILED (%s)" % (connection, count, exc), flush=True)
                results.append({"connection": connection, "hosts": count, "error": str(exc)})
                continue
            row = {"connection": connection, "hosts": count}
            for key, (wall, tasks, changed, cpu, trips) in (("first", first), ("rerun", rerun)):
                per_host = tasks / float(count)
                row.update({key + "_s": round(wall, 1), key + "_tasks_per_host": int(round(per_host)),
                            key + "_round_trips_per_host": int(round(trips / float(count))),
                            key + "_controller_cpu_s": round(cpu, 1),
                            key + "_changed": changed, key + "_s_per_task": round(wall / per_host, 3)})
            results.append(row)
            print("%-15s %d host(s): first %6.1f s (%d tasks/host, %d round trips/host, %.2f s/task, %d changed)   "
                  "re-run %6.1f s (%d tasks/host, %d round trips/host, %.2f s/task, %d changed); "
                  "controller CPU %.1f / %.1f s, load %.1f" % (
                      connection, count, row["first_s"], row["first_tasks_per_host"],
                      row["first_round_trips_per_host"], row["first_s_per_task"],
                      row["first_changed"], row["rerun_s"], row["rerun_tasks_per_host"],
                      row["rerun_round_trips_per_host"], row["rerun_s_per_task"], row["rerun_changed"],
                      row["first_controller_cpu_s"], row["rerun_controller_cpu_s"],
                      os.getloadavg()[0]), flush=True)
    finally:
        for n in names_all:
            subprocess.run(["podman", "rm", "-f", n], capture_output=True)
        if minio is not None:
            minio.stop()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("| connection | hosts | first s | re-run s | tasks/host (first, re-run) "
          "| node round trips/host (first, re-run) | s/task (first, re-run) | re-run / first "
          "| N hosts / 1 host (first, re-run) "
          "| controller CPU s (first, re-run) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in results:
        if "error" in row:
            print("| %s | %d | failed: %s | | | | | | | |" % (row["connection"], row["hosts"], row["error"]))
            continue
        one = next((r for r in results if r["connection"] == row["connection"] and r["hosts"] == 1
                    and "error" not in r), None)
        scale = ("%.2f, %.2f" % (row["first_s"] / one["first_s"], row["rerun_s"] / one["rerun_s"])
                 if one and row["hosts"] > 1 else "")
        row["rerun_over_first"] = round(row["rerun_s"] / row["first_s"], 2)
        print("| %s | %d | %.1f | %.1f | %d, %d | %d, %d | %.2f, %.2f | %.2f | %s | %.1f, %.1f |" % (
            row["connection"], row["hosts"], row["first_s"], row["rerun_s"], row["first_tasks_per_host"],
            row["rerun_tasks_per_host"], row["first_round_trips_per_host"], row["rerun_round_trips_per_host"],
            row["first_s_per_task"], row["rerun_s_per_task"], row["rerun_over_first"],
            scale, row["first_controller_cpu_s"], row["rerun_controller_cpu_s"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results}, f, indent=2)


if __name__ == "__main__":
    main()
