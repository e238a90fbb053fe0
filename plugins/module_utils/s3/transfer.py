# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What downloads and uploads share: the worker pool, the bookkeeping of a run, the listing, the defaults.

* :class:`Pool`: a thread pool whose tasks may submit more tasks (a download's first unit submits its ranges);
  the first failure cancels the rest; ``nice`` lowers the CPU priority of its threads only;
* :class:`Run`: counters, progress, the per-file log (``on_file``) and the result dict of one run (see :mod:`.sync`
  for its keys);
* :class:`RateLimiter`: the bandwidth limit (``bwlimit``) of one run, a token bucket shared by all its workers;
* :func:`list_remote`: the bucket listing under a prefix as relative path -> entry;
* :func:`check_workers` and :func:`raise_run_error`: option checks and the error a failed run raises.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ..errors import GpuWorkerError
from .client import Cancelled
from .keys import key_to_relpath
from .localio import MiB

DEFAULT_WORKERS = 4
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_PART_SIZE = 16 * MiB


def _thread_priority():
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (AttributeError, OSError):
        return None


def _set_thread_priority(value):
    """Set the nice value of the calling thread (Linux keeps one per thread), best effort."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), value)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at the usual priority
        pass


class Pool:
    """A thread pool whose tasks may submit more tasks; the first failure cancels the rest.

    ``nice`` > 0 lowers the CPU priority of the pool's threads only, so that a service transferring beside its
    own control plane (the GPU agent answering /healthz) keeps answering while the transfer uses every core."""

    def __init__(self, workers, nice=0):
        # an absolute value: the pool starts some threads from its own (already lowered) threads
        base = _thread_priority() if int(nice or 0) > 0 else None
        target = None if base is None else min(19, base + int(nice))
        self.executor = ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="vsync",
                                           initializer=_set_thread_priority if target is not None else None,
                                           initargs=(target,) if target is not None else ())
        self.cond = threading.Condition()
        self.pending = 0
        self.errors = []
        self.abort = threading.Event()

    def cancelled(self):
        return self.abort.is_set()

    def submit(self, fn, *args):
        with self.cond:
            self.pending += 1
        self.executor.submit(self._run, fn, args)

    def _run(self, fn, args):
        try:
            if not self.abort.is_set():
                fn(*args)
        except BaseException as err:  # noqa: BLE001 - reported by wait()
            with self.cond:
                if not isinstance(err, Cancelled) or not self.errors:
                    self.errors.append(err)
            self.abort.set()
        finally:
            with self.cond:
                self.pending -= 1
                self.cond.notify_all()

    def wait(self):
        try:
            with self.cond:
                while self.pending:
                    self.cond.wait(0.5)
        except BaseException:
            self.abort.set()
            raise
        finally:
            self.executor.shutdown(wait=True)

    def first_error(self):
        real = [e for e in self.errors if not isinstance(e, Cancelled)]
        return (real or self.errors or [None])[0]


class RateLimiter:
    """A token bucket of ``rate`` bytes per second shared by the workers of one run (``bwlimit``).

    :meth:`consume` is called with each chunk the transfer loops read from the network (downloads) or hand to it
    (uploads), before the chunk goes on; it sleeps as long as the bucket is in debt. The bucket holds at most
    ``burst`` bytes (a quarter of a second of ``rate``, at least 64 KiB), so over any interval of ``t`` seconds
    at most ``burst + rate * t`` bytes pass, whatever the number of workers. ``rate`` 0 or None: no limit."""

    def __init__(self, rate, burst=None, clock=time.monotonic, sleep=time.sleep):
        self.rate = float(rate or 0)
        self.burst = float(burst if burst is not None else max(64 * 1024, self.rate / 4))
        self.clock = clock
        self.sleep = sleep
        self.lock = threading.Lock()
        self.tat = None  # theoretical arrival time: when the bucket is full again

    def consume(self, nbytes, cancelled=None):
        if self.rate <= 0 or nbytes <= 0:
            return
        with self.lock:
            now = self.clock()
            self.tat = max(now if self.tat is None else self.tat, now) + nbytes / self.rate
            wait = self.tat - now - self.burst / self.rate
        while wait > 0:  # in slices, so that a cancelled run does not sleep out a long debt
            if cancelled is not None and cancelled():
                raise Cancelled("transfer cancelled")
            step = min(wait, 0.25)
            self.sleep(step)
            wait -= step


class Run:
    """Shared bookkeeping of one download/upload run."""

    def __init__(self, client, direction, bucket, prefix, path, progress, dry_run, bwlimit=0, on_file=None):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.lock = threading.Lock()
        self.progress_cb = progress
        self.done_bytes = 0
        self.total_bytes = 0
        self.started = time.time()
        self.limiter = RateLimiter(bwlimit) if bwlimit else None
        self.on_file = on_file
        self.file_started = {}
        self.stats_before = dict(client.stats)
        self.result = {
            "direction": direction, "bucket": bucket, "prefix": prefix, "path": path, "dry_run": bool(dry_run),
            "changed": False, "files": 0, "bytes": 0, "skipped": 0, "deleted": 0, "seconds": 0.0,
            "transferred": [], "deleted_paths": [], "resumed": [], "adopted": [], "vanished": [], "plan": [],
            "before": [], "after": [], "requests": {},
        }

    def progress(self, nbytes, key):
        with self.lock:
            self.done_bytes += nbytes
            done, total = self.done_bytes, self.total_bytes
        if self.progress_cb is not None and nbytes:
            self.progress_cb(done, total, key)

    def throttle(self, nbytes, cancelled=None):
        """Wait until ``nbytes`` more may be transferred under the run's ``bwlimit`` (no wait without one)."""
        if self.limiter is not None:
            self.limiter.consume(nbytes, cancelled)

    def start_file(self, key):
        """A file's transfer begins (its first request): the start of the time in its ``on_file`` record."""
        with self.lock:
            self.file_started.setdefault(key, time.monotonic())

    def transferred(self, key, nbytes, resumed=False):
        with self.lock:
            self.result["files"] += 1
            self.result["bytes"] += nbytes
            self.result["transferred"].append(key)
            if resumed:
                self.result["resumed"].append(key)
            began = self.file_started.pop(key, None)
        if self.on_file is not None:
            seconds = max(0.0, time.monotonic() - began) if began is not None else 0.0
            self.on_file({"key": key, "size": nbytes, "seconds": seconds, "resumed": bool(resumed)})

    def vanished(self, key):
        with self.lock:
            self.result["vanished"].append(key)

    def finish(self):
        r = self.result
        r["transferred"].sort()
        r["vanished"].sort()
        r["seconds"] = round(time.time() - self.started, 3)
        r["changed"] = bool(r["plan"])
        now = self.client.stats
        r["requests"] = {k: now[k] - self.stats_before.get(k, 0) for k in sorted(now)
                         if now[k] - self.stats_before.get(k, 0)}
        return r


def check_workers(workers, part_size, multipart_threshold):
    try:
        workers = int(workers)
        part_size = int(part_size)
        multipart_threshold = int(multipart_threshold)
    except (TypeError, ValueError):
        raise GpuWorkerError("workers, part_size and multipart_threshold must be integers")
    if workers < 1 or workers > 64:
        raise GpuWorkerError("workers must be between 1 and 64, not %d" % workers, field="workers")
    if part_size < 64 * 1024:
        raise GpuWorkerError("part_size must be at least 64 KiB", field="part_size")
    if multipart_threshold < 1:
        raise GpuWorkerError("multipart_threshold must be positive", field="multipart_threshold")
    return workers, part_size, multipart_threshold


def list_remote(client, bucket, prefix, strict):
    """relative path -> listing entry, for every object under the prefix."""
    remote = {}
    list_prefix = prefix + "/" if prefix else ""
    for obj in client.list_objects(bucket, list_prefix):
        key = obj["key"]
        if strict:
            rel = key_to_relpath(key, prefix)
        else:
            rest = key[len(list_prefix):]
            rel = None if (not rest or rest.endswith("/")) else rest
        if rel is None:
            continue
        obj["rel"] = rel
        remote[rel] = obj
    if strict:
        # a key used both as a file and as a folder ("a" and "a/b") cannot be mirrored
        for rel in remote:
            parts = rel.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent in remote:
                    raise GpuWorkerError("object keys %r and %r clash: one is a file, the other a folder" % (
                        remote[parent]["key"], remote[rel]["key"]), hint="rename one of them in the bucket")
    return remote


def raise_run_error(err, run, what):
    """Raise the first error of a failed run, as GpuWorkerError where it is one (with what was completed)."""
    done = run.result["files"]
    if isinstance(err, GpuWorkerError):
        err.details = dict(err.details or {})
        err.details.setdefault("transferred", sorted(run.result["transferred"]))
        r = run.result
        planned = sum(1 for item in r["plan"] if item["action"] != "delete")
        err.details.setdefault("run_summary", {
            "direction": r["direction"], "files": r["files"], "bytes": r["bytes"], "skipped": r["skipped"],
            "deleted": r["deleted"], "resumed": list(r["resumed"]), "seconds": round(time.time() - run.started, 3),
            "failed": max(0, planned - r["files"] - len(r["vanished"]))})
        if done and "(%d file" not in err.message:
            err.message = "%s (%d file(s) completed before the failure)" % (err.message, done)
        raise err
    if isinstance(err, KeyboardInterrupt):
        raise err
    if isinstance(err, OSError):
        raise GpuWorkerError("%s failed: %s" % (what, err), hint="check permissions and free space")
    raise err
