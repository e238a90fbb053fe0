# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The agent: job queue, the job pipeline (stage -> render -> upload -> clean up), callbacks, health probe.

One render slot per ComfyUI instance (``comfyui.instances``, or one slot on ``comfyui.url``): each slot has its own
worker thread, which runs one job at a time against its own ComfyUI (ComfyUI runs one prompt at a time). All
slots take jobs from one queue, bounded by ``jobs.max_queue``, in the order they were accepted: the next job goes
to a free slot whose ComfyUI is up (the one that has run the fewest jobs, then the lowest index); a slot whose
ComfyUI is down takes none while another slot is up (with every slot down, jobs run and fail as with one slot).
Staging is shared (:class:`staging.Stager` is reference-counted); timeouts and cancels act on the slot's own
prompt, on the slot's own ComfyUI.

Draining (:mod:`.drain`, ``POST /drain`` / ``POST /resume``): a drained slot starts no new job (its running job
finishes); with the whole agent drained (or every slot) no job starts and ``submit`` raises :class:`Draining`.
Queued jobs stay queued. The state is saved in the state dir and read at start.
"""
from __future__ import annotations

import collections
import glob
import hashlib
import hmac
import json
import logging
import mimetypes
import os
import shutil
import ssl
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid

from visionsuit_gpuworker.comfyui import client as comfy_client
from visionsuit_gpuworker.comfyui.errors import ComfyConnectionError, WorkflowTimeoutError, failure_detail, one_line
from visionsuit_gpuworker.comfyui.websocket import WebSocketClosed
from visionsuit_gpuworker.comfyui.workflow import check_partial_run
from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.s3.client import S3Client
from visionsuit_gpuworker.s3.keys import relpath_to_key
from visionsuit_gpuworker.s3.upload import upload as s3_upload

from . import __version__
from .drain import FILE_NAME as DRAIN_FILE
from .drain import DrainState
from .envelope import normalize, validate
from .jobs import ACTIVE, JobStore
from .metrics import Metrics
from .staging import Stager, prepare_output_dir, remove_tree
from .workflow import OUTPUT_SUBDIR, WorkflowError, build, load_template

log = logging.getLogger("visionsuit_gpu_agent")


class InvalidEnvelope(Exception):
    def __init__(self, problems):
        super().__init__("; ".join(problems))
        self.problems = problems


class QueueFull(Exception):
    pass


class Conflict(Exception):
    pass


class Draining(Exception):
    """The agent is drained: it takes no new job until ``POST /resume``."""

    def __init__(self, message, retry_after):
        super().__init__(message)
        self.retry_after = retry_after


class BadRequest(Exception):
    """A request the agent cannot act on (e.g. a slot it does not have); answered 400."""


class DrainNotSaved(Exception):
    """The drain state could not be written to the state dir: nothing was changed."""


class JobFailed(Exception):
    """A job failure with the reason shown to the dispatcher."""


def _reason(err):
    if isinstance(err, GpuWorkerError):
        return str(err)
    if isinstance(err, (WorkflowError, JobFailed)):
        return str(err)
    if isinstance(err, OSError):
        return f"{err.strerror or type(err).__name__}: {err.filename or err}"
    return f"internal error: {type(err).__name__}: {err}"


class Slot:
    """One render slot: a ComfyUI instance (``url``, pinned to ``gpu`` or not) and the worker thread feeding it."""

    def __init__(self, index, url, gpu):
        self.index, self.url, self.gpu = index, url, gpu
        self.current = None          # the job id it runs
        self.settling = False        # cancelling its prompts before it takes the next job
        self.reachable = None        # last health probe of its ComfyUI (None: not probed yet)
        self.checked_at = None
        self.started = 0             # jobs it started (the scheduler's measure of how busy it has been)
        self.jobs = 0                # jobs it finished (done or failed)
        self.failures = 0
        self.settle_after = 0.0      # cancel back-off after its ComfyUI could not be reached

    @property
    def labels(self):
        return (("gpu", "" if self.gpu is None else str(self.gpu)), ("slot", str(self.index)))

    def state(self):
        return {"slot": self.index, "gpu": self.gpu, "busy": self.current is not None, "current_job": self.current,
                "comfyui_reachable": self.reachable, "comfyui_checked_at": self.checked_at, "jobs": self.jobs,
                "failures": self.failures}


class Agent:
    # Cancelling ComfyUI prompts (timed-out jobs, runs orphaned by a restart): how long the worker waits for one
    # to leave ComfyUI's queue, how often one not confirmed yet is tried again while idle (and after ComfyUI could
    # not be reached), and when one never confirmed is given up (its outputs removed all the same).
    CANCEL_WAIT_S = 10.0
    CANCEL_RETRY_S = 2.0
    CANCEL_BACKOFF_S = 15.0
    CANCEL_GIVE_UP_S = 6 * 3600.0
    _CANCEL_REASONS = {"timeout": "the job timed out", "lost": "ComfyUI was lost",
                       "restart": "left by an agent restart", "error": "an agent error"}
    _CANCEL_OUTCOMES = {"deleted": "removed from ComfyUI's queue before it ran",
                        "interrupted": "interrupted while it ran",
                        "finished": "it ended before the interrupt took effect",
                        "given up": "not confirmed gone after {age:.0f}s; given up"}

    def __init__(self, cfg, s3=None):
        self.cfg = cfg
        os.makedirs(cfg["state_dir"], exist_ok=True)
        os.makedirs(cfg.cache_dir, exist_ok=True)
        self.store = JobStore(cfg.db_path)
        self.metrics = Metrics()
        self.s3 = s3 or S3Client(cfg["minio.endpoint"], cfg["minio.access_key"], cfg["minio.secret_key"],
                                 region=cfg["minio.region"], ca_bundle=cfg["minio.ca_bundle"] or None,
                                 validate_certs=cfg["minio.validate_certs"], timeout=cfg["minio.timeout"],
                                 retries=cfg["minio.retries"], backoff=cfg["minio.backoff"],
                                 max_backoff=max(1.0, cfg["minio.backoff"] * 16))
        self.stager = Stager(cfg, self.s3, self.store, self.metrics, log)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.queue = collections.deque()
        self.slots = [Slot(s["slot"], s["url"], s["gpu"]) for s in cfg.slots]
        self.drain_state = DrainState.load(os.path.join(cfg["state_dir"], DRAIN_FILE), len(self.slots), log)
        if self.drain_state.active:
            drained = self.drain_state.drained_slots(len(self.slots))
            log.warning("%s since %s (saved in the state dir): no new job starts there until POST /resume",
                        "the agent is drained" if self.drain_state.refuses_jobs(len(self.slots)) else
                        "slot(s) {} drained".format(", ".join(map(str, drained))),
                        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.drain_state.since or time.time())))
        self.stopping = threading.Event()
        self.started_at = time.time()
        self.threads = []
        self.callbacks = collections.deque()
        self.callback_cond = threading.Condition()
        self._durations = collections.deque(maxlen=20)
        self.metrics.gauge("queue_depth", lambda: len(self.queue))
        self.metrics.gauge("busy", lambda: sum(1 for s in self.slots if s.current is not None))
        self.metrics.gauge("comfyui_up", lambda: 1 if self.comfy_reachable else 0)
        self.metrics.gauge("slot_busy", lambda: {s.labels: int(s.current is not None) for s in self.slots})
        self.metrics.gauge("slot_up", lambda: {s.labels: int(bool(s.reachable)) for s in self.slots})
        self.metrics.gauge("slot_jobs_total", lambda: {s.labels: s.jobs for s in self.slots})
        self.metrics.gauge("slot_failures_total", lambda: {s.labels: s.failures for s in self.slots})
        self.metrics.gauge("draining", lambda: int(self.drain_state.refuses_jobs(len(self.slots))))
        self.metrics.gauge("slot_draining", lambda: {s.labels: int(self.drain_state.drained(s.index))
                                                     for s in self.slots})
        self.metrics.gauge("s3_requests_total", lambda: {(("operation", k),): v for k, v in self.s3.stats.items()})
        self._health_cache = None

    # ------------------------------------------------------------------ slots
    @property
    def current(self):
        """The job of the first busy slot (None when idle); :meth:`running` lists all."""
        running = self.running()
        return running[0] if running else None

    def running(self):
        return [s.current for s in self.slots if s.current is not None]

    @property
    def comfy_reachable(self):
        """Every slot's ComfyUI answered its last probe (False: one did not; None: not all probed yet)."""
        states = [s.reachable for s in self.slots]
        return False if False in states else None if None in states else True

    @property
    def comfy_checked_at(self):
        times = [s.checked_at for s in self.slots]
        return None if None in times else min(times)

    @property
    def _settle_after(self):   # the cancel back-off of slot 0 (the one slot of a one-instance node)
        return self.slots[0].settle_after

    @_settle_after.setter
    def _settle_after(self, value):
        self.slots[0].settle_after = value

    def _takes_next(self, slot):
        """Whether ``slot`` takes the next queued job now (call with ``self.cond`` held)."""
        if not self.queue or slot.current is not None or self.drain_state.drained(slot.index):
            return False
        open_slots = [s for s in self.slots if not self.drain_state.drained(s.index)]   # drained ones take none
        free = [s for s in open_slots if s.current is None and not s.settling]
        up = [s for s in free if s.reachable is not False]
        if not up:
            if any(s.reachable is not False for s in open_slots):
                return False   # a busy slot whose ComfyUI is up takes it when it is free
            up = free          # every ComfyUI is down: run it (it fails with the reason, as with one slot)
        return bool(up) and min(up, key=lambda s: (s.started, s.index)) is slot

    def _slot_for_url(self, url):
        for slot in self.slots:
            if url and slot.url.rstrip("/") == url.rstrip("/"):
                return slot
        return None

    # ------------------------------------------------------------------ lifecycle
    def start(self, threads=True):
        """Recover after a restart, then start the worker, callback and health threads."""
        requeued, failed = self.store.recover()
        for job_id in requeued + failed:
            for path in glob.glob(os.path.join(glob.escape(self.cfg["comfyui.output_dir"]), OUTPUT_SUBDIR,
                                               glob.escape(job_id) + ".a*")):
                remove_tree(path)
        self.stager.cleanup(None)
        self.store.purge(self.cfg["jobs.retention_hours"] * 3600)
        for job_id in requeued:
            log.warning("job %s was interrupted by a restart: running it once more", job_id)
        for job_id in failed:
            log.error("job %s was interrupted by a restart twice: marked failed", job_id)
            self.metrics.inc("jobs_total", outcome="failed")
        with self.lock:
            self.queue.extend(self.store.queued_ids())
        for job_id in self.store.pending_callbacks():
            self._queue_callback(job_id)
        if threads:
            if len(self.slots) > 1:   # down slots are known before the first job is placed
                self.probe_comfy()
            targets = [(lambda slot=slot: self._worker_loop(slot), f"worker-{slot.index}") for slot in self.slots]
            for target, name in targets + [(self._callback_loop, "callbacks"), (self._health_loop, "health")]:
                t = threading.Thread(target=target, name="agent-" + name, daemon=True)
                t.start()
                self.threads.append(t)
        return self

    def stop(self, grace=None):
        """Stop taking jobs; wait up to ``grace`` seconds for the running one. True when idle at return."""
        grace = self.cfg["jobs.shutdown_grace"] if grace is None else grace
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()
        with self.callback_cond:
            self.callback_cond.notify_all()
        deadline = time.time() + grace
        while self.running() and time.time() < deadline:
            time.sleep(0.05)
        return not self.running()

    def alive(self):
        return all(t.is_alive() for t in self.threads) or self.stopping.is_set()

    # ------------------------------------------------------------------ API used by the handler
    def health(self):
        with self.lock:
            slots = [dict(s.state(), draining=self.drain_state.drained(s.index)) for s in self.slots]
            depth = len(self.queue)
            drain = self.drain_state
        running = [s["current_job"] for s in slots if s["current_job"] is not None]
        return {"status": "ok", "busy": bool(running), "current_job": running[0] if running else None,
                "current_jobs": running, "queue_depth": depth,
                "running": [{"job_id": s["current_job"], "slot": s["slot"]} for s in slots
                            if s["current_job"] is not None],
                "draining": drain.refuses_jobs(len(slots)), "drained_slots": drain.drained_slots(len(slots)),
                "drained_since": drain.since if drain.active else None,
                "max_queue": self.cfg["jobs.max_queue"], "comfyui_reachable": self.comfy_reachable,
                "comfyui_checked_at": self.comfy_checked_at, "slots": slots, "version": __version__,
                "uptime_s": round(time.time() - self.started_at, 1)}

    def get_job(self, job_id):
        return self.store.get(job_id)

    def submit(self, envelope):
        """Validate and queue; returns (job document, created). Raises InvalidEnvelope/QueueFull/Conflict."""
        problems = validate(envelope)
        if problems:
            raise InvalidEnvelope(problems)
        spec = normalize(envelope, self.cfg)
        spec["request"] = envelope
        job_id = spec["job_id"]
        with self.cond:
            existing = self.store.spec(job_id)
            if existing is not None:
                if existing.get("request") != envelope:
                    raise Conflict(f"job_id {job_id} was already used with a different envelope")
                return self.store.get(job_id), False
            if self.drain_state.refuses_jobs(len(self.slots)):
                raise Draining("the agent is draining (POST /drain): it takes no new job until POST /resume; "
                               f"{len(self.queue)} job(s) queued", self.drain_retry_after())
            if len(self.queue) >= self.cfg["jobs.max_queue"] or self.stopping.is_set():
                raise QueueFull(f"the queue holds {len(self.queue)} job(s), the most it takes (jobs.max_queue)")
            now = time.time()
            doc = {"job_id": job_id, "state": "queued", "created_at": now, "updated_at": now, "started_at": None,
                   "finished_at": None, "attempts": 0, "progress": None, "timings": {}, "outputs": [],
                   "output_keys": [], "assets": [], "error": None, "error_detail": None, "error_phase": None,
                   "prompt_id": None, "slot": None, "gpu": None,
                   "seed": spec["parameters"]["seed"], "notes": [], "marks": {"accepted": now},
                   "callback": {"url": spec["callback_url"], "state": "pending", "attempts": 0,
                                "last_error": None} if spec["callback_url"] else None}
            doc, created = self.store.add(spec, doc)
            if created:
                self.queue.append(job_id)
                self.cond.notify_all()
        self.metrics.inc("jobs_accepted_total")
        log.info("job %s accepted (%d queued)", job_id, len(self.queue))
        return self.store.get(job_id), True

    def retry_after(self):
        """Seconds a client should wait when the queue is full (mean recent job time, bounded)."""
        mean = sum(self._durations) / len(self._durations) if self._durations else self.cfg["jobs.retry_after"]
        return int(min(3600, max(1, round(mean))))

    def drain_retry_after(self):
        """Seconds a client should wait while the agent is drained (``jobs.retry_after``): a drain lasts a restart."""
        return int(self.cfg["jobs.retry_after"])

    # ------------------------------------------------------------------ drain
    MAX_DRAIN_WAIT_S = 3600.0

    def _slot_index(self, slot):
        if slot is None:
            return None
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < len(self.slots):
            raise BadRequest(f"slot: no slot {slot!r} here (slots 0-{len(self.slots) - 1})")
        return slot

    def _change_drain(self, new):
        """Save ``new`` then make it the state (call with ``self.cond`` held)."""
        try:
            new.save()
        except OSError as err:
            why = err.strerror or err
            raise DrainNotSaved(f"cannot save the drain state in {new.path}: {why}; nothing changed") from err
        self.drain_state = new
        self.cond.notify_all()

    def drain_status(self, slot=None):
        """The drain document (call with ``self.cond`` held): ``slot`` None: the whole agent, else that slot."""
        drain, count = self.drain_state, len(self.slots)
        running = [{"job_id": s.current, "slot": s.index} for s in self.slots
                   if s.current is not None and (slot is None or s.index == slot)]
        return {"slot": slot, "draining": drain.refuses_jobs(count) if slot is None else drain.drained(slot),
                "drained_slots": drain.drained_slots(count), "accepting_jobs": not drain.refuses_jobs(count),
                "idle": not running, "running": running, "queued": len(self.queue),
                "since": drain.since if drain.active else None}

    def drain(self, slot=None, timeout=None):
        """Drain the agent (``slot`` None) or one slot: no new job starts there, running jobs finish, queued jobs
        stay queued. With ``timeout`` wait up to that many seconds for the running job(s) there to end. Returns
        :meth:`drain_status`. Raises :class:`BadRequest`, :class:`DrainNotSaved`."""
        slot = self._slot_index(slot)
        with self.cond:
            before = self.drain_state
            new = before.drain(slot)
            if (new.all, new.slots) != (before.all, before.slots) or before.problem:
                self._change_drain(new)
                log.warning("drain: %s takes no new job until POST /resume (%d running, %d queued)",
                            "the agent" if slot is None else f"slot {slot}", len(self.running()), len(self.queue))
            if timeout:
                deadline = time.monotonic() + min(float(timeout), self.MAX_DRAIN_WAIT_S)
                while not self.stopping.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0 or not any(s.current is not None for s in self.slots
                                            if slot is None or s.index == slot):
                        break
                    self.cond.wait(min(left, 1.0))
            return self.drain_status(slot)

    def resume(self, slot=None):
        """End the drain of the agent (``slot`` None: every slot) or of one slot; queued jobs start again."""
        slot = self._slot_index(slot)
        with self.cond:
            before = self.drain_state
            new = before.resume(len(self.slots), slot)
            if (new.all, new.slots) != (before.all, before.slots) or before.problem:
                self._change_drain(new)
                log.warning("resume: %s takes jobs again (%d queued)",
                            "the agent" if slot is None else f"slot {slot}", len(self.queue))
            return self.drain_status(slot)

    # ------------------------------------------------------------------ worker
    def _worker_loop(self, slot):
        while not self.stopping.is_set():
            # Prompts this slot left in its ComfyUI (a timed-out job, a run orphaned by a restart) are cancelled and
            # their outputs removed before its next job (waiting a bounded time), and tried again while idle.
            unsettled = self._settle_prompts(wait=self.CANCEL_WAIT_S if self.queue else 0.0, slot=slot)
            with self.cond:
                if self.stopping.is_set():
                    return
                if not self._takes_next(slot):
                    if not self.stopping.is_set():
                        self.cond.wait(self.CANCEL_RETRY_S if unsettled else 1.0)
                    continue
                job_id = self.queue.popleft()
                slot.current = job_id
                slot.started += 1
            try:
                self.run_job(job_id, slot)
            except Exception:  # noqa: BLE001 - the worker must survive anything a job does
                log.error("job %s: unexpected error\n%s", job_id, traceback.format_exc())
            finally:
                with self.cond:
                    slot.current = None
                    self.cond.notify_all()

    def run_job(self, job_id, slot=None):
        slot = slot or self.slots[0]
        spec = self.store.spec(job_id)
        attempt = self.store.start_attempt(job_id)
        started = time.time()
        doc = self.store.get(job_id)
        timings = {"queued_s": round(started - doc["created_at"], 3)}
        marks = dict(doc.get("marks") or {}, started=started)
        transfer = {"download_s": 0.0, "upload_s": 0.0}
        self.store.update(job_id, state="staging", started_at=started, timings=timings, marks=marks, error=None,
                          error_detail=None, error_phase=None, progress=None, slot=slot.index, gpu=slot.gpu)
        log.info("job %s: staging (attempt %d) on slot %d (GPU %s)", job_id, attempt, slot.index,
                 "any" if slot.gpu is None else slot.gpu)
        phase, failure, detail, t_phase = "staging", None, None, time.time()
        run_dir = f"{job_id}.a{attempt}"
        job_dir = os.path.join(self.cfg["comfyui.output_dir"], OUTPUT_SUBDIR, run_dir)
        try:
            staged = self.stager.stage(job_id, spec["base_models"] + spec["loras"])
            transfer["download_s"] = round(sum(a["seconds"] for a in staged if not a["cached"]), 4)
            assets = [{k: a[k] for k in ("kind", "bucket", "key", "name", "cached", "persist", "original_filename")}
                      for a in staged]
            timings["staging_s"] = round(time.time() - t_phase, 3)
            self.metrics.observe("phase_seconds", timings["staging_s"], phase="staging")

            phase, t_phase = "rendering", time.time()
            checkpoints = [a["name"] for a in staged if a["kind"] == "checkpoint"]
            loras = [{"name": a["name"], "strength": a["strength"], "strength_clip": a["strength_clip"]}
                     for a in staged if a["kind"] == "lora"]
            wf_spec = spec["workflow"]
            template = wf_spec["inline"] if "inline" in wf_spec else load_template(wf_spec["template"])
            workflow = build(template, spec["parameters"], checkpoints, loras, job_id, run_dir)
            prepare_output_dir(self.cfg["comfyui.output_dir"], OUTPUT_SUBDIR, run_dir)
            self.store.update(job_id, state="rendering", assets=assets, timings=timings,
                              progress={"value": 0, "max": None, "fraction": 0.0, "node": None})
            result = self._render(job_id, workflow, spec["timeout"], marks, slot)
            timings["rendering_s"] = round(time.time() - t_phase, 3)
            if result.get("timings", {}).get("execution_s") is not None:
                timings["comfyui_execution_s"] = result["timings"]["execution_s"]
            self.metrics.observe("phase_seconds", timings["rendering_s"], phase="rendering")

            phase, t_phase = "uploading", time.time()
            self.store.update(job_id, state="uploading", timings=timings, marks=marks,
                              progress={"value": 1, "max": 1, "fraction": 1.0, "node": None})
            outputs, upload_s = self._upload(job_id, spec, result, job_dir)
            transfer["upload_s"] = upload_s
            marks["uploaded"] = time.time()
            timings["uploading_s"] = round(time.time() - t_phase, 3)
            self.metrics.observe("phase_seconds", timings["uploading_s"], phase="uploading")
            self.store.update(job_id, outputs=outputs, output_keys=[o["key"] for o in outputs])
        except Exception as err:  # noqa: BLE001 - every failure ends the job with a reason
            failure = f"{phase} failed: {one_line(_reason(err))}"  # one line; the full text in error_detail
            detail = failure_detail(err)
            if not isinstance(err, (GpuWorkerError, WorkflowError, JobFailed)):
                log.error("job %s: %s\n%s", job_id, failure, traceback.format_exc())
            else:
                log.warning("job %s: %s", job_id, failure)
        # clean-up runs whatever happened
        t_clean = time.time()
        try:
            self.stager.cleanup(job_id)
            if not self.cfg["jobs.keep_outputs"]:
                remove_tree(job_dir)
            self.stager.evict()
        except Exception as err:  # noqa: BLE001 - a clean-up problem is reported, the agent goes on
            log.error("job %s: clean-up failed: %s", job_id, err)
            if failure is None:
                failure = f"cleanup failed: {_reason(err)}"
                phase = "cleanup"
        timings["cleanup_s"] = round(time.time() - t_clean, 3)
        self.metrics.observe("phase_seconds", timings["cleanup_s"], phase="cleanup")
        self.metrics.observe("phase_seconds", timings["queued_s"], phase="queued")
        finished = time.time()
        timings["total_s"] = round(finished - started, 3)
        marks["finished"] = finished
        self._durations.append(finished - started)
        state = "failed" if failure else "done"
        self.store.update(job_id, state=state, finished_at=finished, timings=timings, marks=marks,
                          transfer=transfer, error=failure, error_detail=detail, error_phase=phase if failure else None,
                          progress=None if failure else {"value": 1, "max": 1, "fraction": 1.0, "node": None})
        self.metrics.inc("jobs_total", outcome=state)
        slot.jobs += 1
        slot.failures += 1 if failure else 0
        log.info("job %s: %s in %.2fs%s", job_id, state, finished - started, (": " + failure) if failure else "")
        if spec.get("callback_url"):
            self._queue_callback(job_id)

    def _comfy(self, slot):
        return comfy_client.ComfyClient(slot.url, timeout=self.cfg["comfyui.timeout"])

    def _render(self, job_id, workflow, timeout, marks, slot):
        client = self._comfy(slot)
        ws = None
        prompt_id = None
        retries = self.cfg["comfyui.submit_retries"]
        for attempt in range(retries + 1):
            try:
                try:
                    ws = client.connect_ws()
                except (OSError, WebSocketClosed, ValueError):
                    ws = None
                prompt_id = self._submit(client, job_id, workflow, slot)
                break
            except ComfyConnectionError as err:
                if ws is not None:
                    ws.close()
                    ws = None
                if attempt >= retries or self.stopping.is_set():
                    with self.cond:   # the next jobs go to the other slots until its probe answers again
                        slot.reachable, slot.checked_at = False, time.time()
                    raise JobFailed(f"ComfyUI is unreachable at {slot.url} after {attempt + 1} attempt(s): "
                                    f"{err.message}") from err
                time.sleep(self.cfg["comfyui.retry_delay"] * (2 ** attempt))
        marks["submitted"] = time.time()
        self.store.update(job_id, prompt_id=prompt_id, marks=marks)

        def on_progress(event):
            if event.get("type") == "progress" and event.get("max"):
                value, top = event.get("value") or 0, event["max"]
                self.store.update(job_id, persist=False, progress={
                    "value": value, "max": top, "fraction": round(min(1.0, value / float(top)), 4),
                    "node": event.get("node")})
            elif event.get("type") == "executing" and event.get("node"):
                doc = self.store.get(job_id)
                progress = dict(doc.get("progress") or {}, node=event.get("node"))
                self.store.update(job_id, persist=False, progress=progress)

        try:
            result = client.wait(prompt_id, timeout=timeout, interval=self.cfg["comfyui.poll_interval"],
                                 on_progress=on_progress, ws=ws,
                                 unreachable_grace=self.cfg["comfyui.unreachable_grace"])
        except WorkflowTimeoutError:
            # Never a global interrupt (it would stop another client's run): this prompt only, deleted from the
            # queue if it still waits there, and its outputs removed once ComfyUI confirms it is gone.
            self.store.cancel_prompt(prompt_id, "timeout")
            self._settle_prompts(wait=self.CANCEL_WAIT_S, only=prompt_id, slot=slot)
            raise
        except ComfyConnectionError as err:
            self.store.cancel_prompt(prompt_id, "lost")  # cancelled, outputs removed, once ComfyUI answers again
            raise JobFailed(f"lost ComfyUI while rendering (crashed or stopped?): {err.message}") from err
        except Exception:
            self.store.cancel_prompt(prompt_id, "error")
            raise
        self.store.forget_prompt(prompt_id)  # the run has ended in ComfyUI
        marks["comfy_done"] = time.time()
        check_partial_run(client.last_node_errors, workflow, result)  # dropped outputs fail the job
        comfy_client.raise_for_result(result)
        return result

    def _submit(self, client, job_id, workflow, slot):
        """Submit under a prompt id recorded first (with the slot and its ComfyUI): a crash at any later point
        leaves it known, to be cancelled on that ComfyUI."""
        attempt = (self.store.get(job_id) or {}).get("attempts") or 1
        run_dir = f"{job_id}.a{attempt}"
        chosen = str(uuid.uuid4())
        self.store.record_prompt(chosen, job_id, attempt, run_dir, slot.index, slot.url)
        try:
            prompt_id = client.submit(workflow, prompt_id=chosen)
        except ComfyConnectionError:
            self.store.cancel_prompt(chosen, "lost")  # the request may have reached ComfyUI
            raise
        except Exception:
            self.store.forget_prompt(chosen)  # rejected: nothing was queued
            raise
        if prompt_id != chosen:  # a ComfyUI that does not take the id it is given
            self.store.forget_prompt(chosen)
            self.store.record_prompt(prompt_id, job_id, attempt, run_dir, slot.index, slot.url)
        return prompt_id

    def _settle_prompts(self, wait=0.0, only=None, slot=None):
        """Cancel the prompts of ``slot`` (default slot 0) marked ``cancel`` (delete from the queue + targeted
        interrupt: never another client's run) on the ComfyUI they were submitted to and, once it confirms one is
        gone, remove its output folder and note it in the job.

        A slot's prompts are those recorded with its URL; slot 0 also takes those recorded without one (schema 2)
        or with a URL no slot has any more (a changed configuration: cancelled at the recorded URL).
        Waits up to ``wait`` seconds for each. One not confirmed stays recorded and is tried again later (after
        ``CANCEL_BACKOFF_S`` when ComfyUI could not be reached), until ``CANCEL_GIVE_UP_S``. Returns how many are
        left. Runs in the slot's worker thread only.
        """
        slot = slot or self.slots[0]
        try:
            rows = [r for r in self.store.prompts(state="cancel") if (only is None or r["prompt_id"] == only)
                    and (self._slot_for_url(r["url"]) or self.slots[0]) is slot]
            if not rows or (only is None and time.time() < slot.settle_after):
                return len(rows)
            clients = {}
            left = 0
            unreachable = False
            slot.settling = True
            for row in rows:
                if self.stopping.is_set():
                    left += 1
                    continue
                outcome = None
                if not unreachable:
                    url = row["url"] or slot.url
                    if url not in clients:
                        clients[url] = comfy_client.ComfyClient(url, timeout=min(5.0, self.cfg["comfyui.timeout"]))
                    try:
                        outcome = clients[url].cancel(row["prompt_id"], wait=wait)
                    except GpuWorkerError as err:  # ComfyUI down: the other rows are not tried now either
                        unreachable = True
                        slot.settle_after = time.time() + self.CANCEL_BACKOFF_S
                        log.warning("job %s: cannot cancel ComfyUI prompt %s yet: %s", row["job_id"],
                                    row["prompt_id"], err)
                if outcome in (None, "running", "pending"):
                    if time.time() - row["created"] < self.CANCEL_GIVE_UP_S:
                        left += 1
                        continue
                    outcome = "given up"
                self._close_prompt(row, outcome)
            return left
        except Exception:  # noqa: BLE001 - the worker goes on; the rows stay for the next try
            log.error("cancelling ComfyUI prompts failed:\n%s", traceback.format_exc())
            return 1
        finally:
            if slot.settling:
                with self.cond:
                    slot.settling = False
                    self.cond.notify_all()

    def _close_prompt(self, row, outcome):
        files = 0
        run_dir = row["run_dir"]
        if run_dir and os.path.basename(run_dir) == run_dir and run_dir not in (".", "..") \
                and not self.cfg["jobs.keep_outputs"]:
            path = os.path.join(self.cfg["comfyui.output_dir"], OUTPUT_SUBDIR, run_dir)
            files = sum(len(names) for _root, _dirs, names in os.walk(path))
            remove_tree(path)
        self.store.forget_prompt(row["prompt_id"])
        if outcome == "gone":  # never queued, or ComfyUI restarted meanwhile: nothing to say
            log.info("job %s: ComfyUI prompt %s is not in ComfyUI (any more)", row["job_id"], row["prompt_id"])
            return
        note = "ComfyUI prompt {} of attempt {} ({}) cancelled: {}".format(
            row["prompt_id"], row["attempt"], self._CANCEL_REASONS.get(row["reason"], str(row["reason"])),
            self._CANCEL_OUTCOMES.get(outcome, outcome).format(age=time.time() - row["created"]))
        if files:
            note += f"; the {files} output file(s) it wrote were removed"
        log.warning("job %s: %s", row["job_id"], note)
        doc = self.store.get(row["job_id"])
        if doc is not None:
            self.store.update(row["job_id"], notes=list(doc.get("notes") or []) + [note])

    def _upload(self, job_id, spec, result, job_dir):
        out_root = os.path.realpath(self.cfg["comfyui.output_dir"])
        job_real = os.path.realpath(job_dir)
        rels = []
        for out in result.get("outputs") or []:
            if not out.get("filename") or (out.get("type") or "output") != "output":
                continue
            src = os.path.realpath(os.path.join(out_root, out.get("subfolder") or "", out["filename"]))
            if os.path.commonpath([src, out_root]) != out_root:
                raise JobFailed("ComfyUI reported an output outside its output folder: {}".format(out["filename"]))
            if os.path.commonpath([src, job_real]) == job_real:
                rel = os.path.relpath(src, job_real).replace(os.sep, "/")
            else:  # an output node that ignored filename_prefix: bring the file into the job folder
                rel = out["filename"]
                n = 1
                while os.path.lexists(os.path.join(job_real, rel)):
                    n += 1
                    stem, ext = os.path.splitext(out["filename"])
                    rel = f"{stem}_{n}{ext}"
                shutil.copyfile(src, os.path.join(job_real, rel))
            if not os.path.isfile(os.path.join(job_real, rel)):
                raise JobFailed(f"ComfyUI reported output {rel} but the file is not there")
            if rel not in rels:
                rels.append(rel)
        if not rels:
            raise JobFailed("the workflow produced no output files")
        bucket, prefix = spec["output"]["bucket"], spec["output"]["prefix"]
        res = s3_upload(self.s3, bucket, prefix, job_real, include=[glob.escape(r) for r in rels],
                        metadata={"visionsuit-job-id": job_id}, workers=self.cfg["minio.workers"],
                        nice=self.cfg["minio.transfer_nice"])
        self.metrics.inc("uploaded_bytes_total", res["bytes"])
        outputs = []
        for rel in rels:
            path = os.path.join(job_real, rel)
            outputs.append({"bucket": bucket, "key": relpath_to_key(rel, prefix), "size": os.path.getsize(path),
                            "content_type": mimetypes.guess_type(rel)[0] or "application/octet-stream"})
        return outputs, res["seconds"]

    # ------------------------------------------------------------------ callbacks
    def _queue_callback(self, job_id):
        with self.callback_cond:
            self.callbacks.append(job_id)
            self.callback_cond.notify_all()

    def _callback_loop(self):
        while not self.stopping.is_set():
            with self.callback_cond:
                while not self.callbacks and not self.stopping.is_set():
                    self.callback_cond.wait(1.0)
                if self.stopping.is_set():
                    return
                job_id = self.callbacks.popleft()
            try:
                self.deliver_callback(job_id)
            except Exception:  # noqa: BLE001 - never let one callback stop the others
                log.error("callback of job %s: %s", job_id, traceback.format_exc())

    def deliver_callback(self, job_id):
        """POST the job document to its callback URL: retried with exponential backoff, bounded."""
        spec = self.store.spec(job_id)
        doc = self.store.get(job_id)
        if not spec or not spec.get("callback_url") or doc is None:
            return False
        url = spec["callback_url"]
        attempts = self.cfg["callback.attempts"]
        context = None
        if url.startswith("https://"):
            context = ssl.create_default_context(cafile=self.cfg["callback.ca_bundle"] or None)
        last_error = None
        for attempt in range(attempts):
            doc = self.store.get(job_id)
            doc["callback"] = dict(doc.get("callback") or {}, attempts=attempt + 1, state="delivering")
            body = json.dumps(doc, sort_keys=True).encode("utf-8")
            sig = hmac.new(self.cfg["server.api_token"].encode("utf-8"), body, hashlib.sha256).hexdigest()
            req = urllib.request.Request(url, data=body, method="POST", headers={
                "Content-Type": "application/json", "User-Agent": f"visionsuit-gpu-agent/{__version__}",
                "X-VisionSuit-Job-Id": job_id, "X-VisionSuit-Signature": "sha256=" + sig})
            status = None
            try:
                with urllib.request.urlopen(req, timeout=self.cfg["callback.timeout"], context=context) as resp:
                    status = resp.status
                    resp.read(65536)
            except urllib.error.HTTPError as err:
                status = err.code
                last_error = f"HTTP {err.code}"
            except (OSError, ValueError) as err:
                last_error = str(getattr(err, "reason", None) or err)
            if status is not None and 200 <= status < 300:
                self.store.update(job_id, callback=dict(doc["callback"], state="delivered", last_error=None))
                self.store.set_callback_state(job_id, "delivered")
                self.metrics.inc("callbacks_total", result="delivered")
                return True
            if status is not None and 400 <= status < 500 and status not in (408, 425, 429):
                break  # the dispatcher refuses it: retrying does not help
            if attempt + 1 < attempts and not self.stopping.is_set():
                self.stopping.wait(min(self.cfg["callback.max_backoff"], self.cfg["callback.backoff"] * (2 ** attempt)))
            if self.stopping.is_set():
                return False  # still pending: sent again after the restart
        self.store.update(job_id, callback=dict(doc["callback"], state="failed", last_error=last_error))
        self.store.set_callback_state(job_id, "failed")
        self.metrics.inc("callbacks_total", result="failed")
        log.warning("callback of job %s to %s failed: %s", job_id, url.split("?")[0], last_error)
        return False

    # ------------------------------------------------------------------ ComfyUI health
    def probe_comfy(self):
        """Probe every slot's ComfyUI (``/system_stats``); True when all answered. A slot coming back or going
        down wakes the workers (queued jobs go to the slots that are up)."""
        results = {}

        def probe(slot):
            try:
                comfy_client.ComfyClient(slot.url, timeout=2.0).system_stats()
                results[slot.index] = True
            except GpuWorkerError:
                results[slot.index] = False
            except Exception:  # noqa: BLE001 - a probe never kills the health thread
                results[slot.index] = False

        if len(self.slots) == 1:
            probe(self.slots[0])
        else:   # in parallel: a dead instance (2 s timeout) does not delay the others' state
            threads = [threading.Thread(target=probe, args=(s,), daemon=True) for s in self.slots]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        now = time.time()
        with self.cond:
            for slot in self.slots:
                was, slot.reachable, slot.checked_at = slot.reachable, results.get(slot.index, False), now
                if was is not False and slot.reachable is False and len(self.slots) > 1:
                    log.warning("slot %d: ComfyUI at %s does not answer; no jobs go to it while it is down",
                                slot.index, slot.url)
            self.cond.notify_all()
        return all(results.get(s.index) for s in self.slots)

    def _health_loop(self):
        while not self.stopping.is_set():
            self.probe_comfy()
            self.stopping.wait(self.cfg["comfyui.health_interval"])


__all__ = ["Agent", "Slot", "InvalidEnvelope", "QueueFull", "Conflict", "Draining", "BadRequest", "DrainNotSaved",
           "ACTIVE"]
