# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Entry point and supervisor: ``python -m visionsuit_gpu_agent [--config PATH] [--check-config]``.

``--check-config`` validates the file and exits 0 (valid) or 1 (one line per bad key on stderr); the role
runs it as the ``validate`` command of the config template, so a bad value never reaches a running agent. The
MinIO env file named by ``minio.env_file`` is read and checked with it; the agent reads that file at start only
(a changed minio.env takes effect at the next restart).

Serving: the HTTP server runs in the main thread's care, the worker, callback and health threads beside it.
SIGTERM/SIGINT stop taking jobs, wait up to ``jobs.shutdown_grace`` seconds for the running job and exit 0;
a job cut short is run again at the next start (see :mod:`.jobs`). If a worker thread dies the supervisor
exits 1 so that systemd restarts the agent.

One agent per state dir: before it touches any state (recovery, clean-up of ComfyUI's folders, the job
database) the supervisor takes an exclusive lock on ``<state_dir>/agent.lock`` (``flock``, held for the life
of the process) and binds its port. A second agent started on the same state dir or port exits 1 with one
line ("another agent holds <state dir>", "port 8081 is in use") and changes nothing.
"""
from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
import threading

from . import __version__
from .config import DEFAULT_PATH, ConfigError, load

log = logging.getLogger("visionsuit_gpu_agent")
LOCK_NAME = "agent.lock"


class StartupError(Exception):
    """The agent cannot start; the message is one line for the operator (no traceback)."""


def lock_state_dir(state_dir):
    """Take the exclusive lock of the state dir; returns the file descriptor to hold (closing it releases)."""
    path = os.path.join(state_dir, LOCK_NAME)
    try:
        os.makedirs(state_dir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as err:
        raise StartupError(f"cannot use the state dir {state_dir}: {err.strerror or err}") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        try:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
        except OSError:
            holder = ""
        os.close(fd)
        raise StartupError("another agent holds {}{}".format(
            state_dir, f" (pid {holder})" if holder.isdigit() else "")) from err
    except OSError as err:
        os.close(fd)
        raise StartupError(f"cannot lock {path}: {err.strerror or err}") from err
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd


def build_parser():
    p = argparse.ArgumentParser(prog="visionsuit-gpu-agent", description="VisionSuit GPU agent (render jobs "
                                "from the dispatcher, assets from MinIO, rendering by ComfyUI).")
    p.add_argument("--config", default=DEFAULT_PATH, help="configuration file (default %(default)s)")
    p.add_argument("--check-config", action="store_true", help="validate the configuration and exit 0/1")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--version", action="version", version="%(prog)s " + __version__)
    return p


def _comfy_text(cfg):
    """``http://127.0.0.1:8188`` for one slot; ``2 slots: 0 http://...:8188 (GPU 0), 1 ...`` for several."""
    slots = cfg.slots
    if len(slots) == 1 and slots[0]["gpu"] is None:
        return slots[0]["url"]
    return "{} slot(s): {}".format(len(slots), ", ".join(
        "{} {}{}".format(s["slot"], s["url"], "" if s["gpu"] is None else " (GPU {})".format(s["gpu"]))
        for s in slots))


def check_config(path, out=sys.stdout, err=sys.stderr):
    try:
        cfg = load(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"{path}: {line}", file=err)
        print(f"{path}: {len(exc.problems)} problem(s); configuration rejected", file=err)
        return 1
    print("{}: configuration OK (listen {}:{}, MinIO {}{}, ComfyUI {})".format(
        path, cfg["server.listen"], cfg["server.port"], cfg["minio.endpoint"],
        f" from {cfg['minio.env_file']}" if cfg["minio.env_file"] else "", _comfy_text(cfg)), file=out)
    return 0


def serve(cfg, ready=None, stop_event=None):
    """Run the agent until ``stop_event`` is set (or a signal arrives). Returns the exit status.

    Raises :class:`StartupError` when another agent holds the state dir or the port is taken; nothing has
    been changed then.
    """
    from .server import ListenError, make_server

    lock_fd = lock_state_dir(cfg["state_dir"])
    try:
        try:
            httpd = make_server(None, cfg=cfg)
        except ListenError as err:
            raise StartupError(str(err)) from err
        try:
            return _serve(cfg, httpd, ready, stop_event)
        finally:
            httpd.server_close()
    finally:
        os.close(lock_fd)


def _serve(cfg, httpd, ready, stop_event):
    from .worker import Agent

    # Many short request threads: switching the GIL more often keeps /healthz latency low under load.
    sys.setswitchinterval(0.001)
    agent = Agent(cfg).start()
    httpd.agent = agent
    stop_event = stop_event or threading.Event()
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="agent-http", daemon=True)
    t.start()
    host, port = httpd.server_address[:2]
    log.info("visionsuit-gpu-agent %s listening on %s://%s:%d (ComfyUI %s, MinIO %s)", __version__,
             "https" if cfg["server.tls_cert"] else "http", host, port, _comfy_text(cfg), cfg["minio.endpoint"])
    if ready is not None:
        ready(agent, httpd)
    status = 0
    while not stop_event.wait(0.5):
        if not agent.alive() or not t.is_alive():
            log.error("an agent thread died; exiting so that systemd restarts the agent")
            status = 1
            break
    log.info("stopping: no new jobs; waiting up to %ss for the running one", cfg["jobs.shutdown_grace"])
    httpd.shutdown()
    httpd.server_close()
    if not agent.stop():
        log.warning("job(s) %s still running at exit: run again at the next start", ", ".join(agent.running()))
    agent.store.close()
    return status


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.check_config:
        return check_config(args.config)
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        for line in exc.problems:
            log.error("%s: %s", args.config, line)
        return 1
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %d received", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return serve(cfg, stop_event=stop)
    except StartupError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
