# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Prometheus text exposition (format 0.0.4) of the agent's counters, histograms and gauges."""
from __future__ import annotations

import threading

PREFIX = "visionsuit_gpu_agent_"
PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

HELP = {
    "jobs_accepted_total": ("counter", "Jobs accepted by POST /jobs."),
    "jobs_rejected_total": ("counter", "POST /jobs answered with an error, by reason."),
    "jobs_total": ("counter", "Jobs finished, by outcome (done, failed)."),
    "phase_seconds": ("histogram", "Duration of each job phase (queued, staging, rendering, uploading, cleanup)."),
    "downloaded_bytes_total": ("counter", "Bytes downloaded from MinIO for job assets."),
    "uploaded_bytes_total": ("counter", "Bytes of outputs uploaded to MinIO."),
    "cache_hits_total": ("counter", "Assets served from the local cache (ETag unchanged)."),
    "cache_misses_total": ("counter", "Assets downloaded because the cache had no current copy."),
    "callbacks_total": ("counter", "Completion callbacks, by result (delivered, failed)."),
    "http_requests_total": ("counter", "HTTP requests, by route and status code."),
    "queue_depth": ("gauge", "Jobs waiting in the queue."),
    "busy": ("gauge", "Render slots running a job (1 while a job runs on a one-slot node)."),
    "comfyui_up": ("gauge", "1 when the last health probe of every slot's ComfyUI succeeded."),
    "slot_busy": ("gauge", "1 while the render slot runs a job, by slot and GPU index (empty: not pinned)."),
    "slot_up": ("gauge", "1 when the last health probe of the slot's ComfyUI succeeded, by slot and GPU."),
    "slot_jobs_total": ("counter", "Jobs the render slot finished (done or failed), by slot and GPU."),
    "slot_failures_total": ("counter", "Jobs that failed on the render slot, by slot and GPU."),
    "draining": ("gauge", "1 while the agent is drained (POST /drain): no new job starts, POST /jobs answers 503."),
    "slot_draining": ("gauge", "1 while the render slot is drained: it starts no new job, by slot and GPU."),
    "s3_requests_total": ("counter", "S3 requests sent, by operation."),
}


def _labels(labels):
    if not labels:
        return ""
    esc = [(k, str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')) for k, v in labels]
    return "{{{}}}".format(",".join('{}="{}"'.format(*kv) for kv in esc))


def _num(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.counters = {}   # (name, labels tuple) -> value
        self.hists = {}      # (name, labels) -> [bucket counts..., sum, count]
        self.gauges = {}     # name -> callable or value

    def inc(self, name, amount=1, **labels):
        key = (name, tuple(sorted(labels.items())))
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + amount

    def observe(self, name, value, **labels):
        key = (name, tuple(sorted(labels.items())))
        with self.lock:
            h = self.hists.get(key)
            if h is None:
                h = self.hists[key] = [0] * len(PHASE_BUCKETS) + [0.0, 0]
            for i, bound in enumerate(PHASE_BUCKETS):
                if value <= bound:
                    h[i] += 1
            h[-2] += value
            h[-1] += 1

    def gauge(self, name, fn):
        """Register a gauge read at scrape time: ``fn()`` returns a number or a dict {labels tuple: number}."""
        self.gauges[name] = fn

    def value(self, name, **labels):
        with self.lock:
            return self.counters.get((name, tuple(sorted(labels.items()))), 0)

    def render(self):
        lines = []
        with self.lock:
            counters = dict(self.counters)
            hists = {k: list(v) for k, v in self.hists.items()}
        names = sorted({key[0] for key in counters} | {key[0] for key in hists} | set(self.gauges))
        for name in names:
            kind, text = HELP.get(name, ("untyped", name))
            full = PREFIX + name
            lines.append(f"# HELP {full} {text}")
            lines.append(f"# TYPE {full} {kind}")
            if name in self.gauges:
                try:
                    value = self.gauges[name]()
                except Exception:  # noqa: BLE001,S112 - a broken gauge must not break the scrape
                    continue
                if isinstance(value, dict):
                    for labels, v in sorted(value.items()):
                        lines.append(f"{full}{_labels(labels)} {_num(v)}")
                else:
                    lines.append(f"{full} {_num(value)}")
                continue
            for (n, labels), value in sorted(counters.items()):
                if n == name:
                    lines.append(f"{full}{_labels(labels)} {_num(value)}")
            for (n, labels), h in sorted(hists.items()):
                if n != name:
                    continue
                for i, bound in enumerate(PHASE_BUCKETS):
                    lines.append("{}_bucket{} {}".format(full, _labels(labels + (("le", _num(float(bound))),)), h[i]))
                lines.append("{}_bucket{} {}".format(full, _labels(labels + (("le", "+Inf"),)), h[-1]))
                lines.append(f"{full}_sum{_labels(labels)} {repr(round(h[-2], 6))}")
                lines.append(f"{full}_count{_labels(labels)} {h[-1]}")
        return "\n".join(lines) + "\n"
