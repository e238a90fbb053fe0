# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The job store: SQLite under the state directory, so accepted jobs survive restarts.

Every state change is written through (one small transaction); reads come from an in-memory mirror, so
``GET /jobs/<id>`` and ``/healthz`` never wait for the disk. Progress while rendering is kept in memory only.

Restart behaviour (:meth:`JobStore.recover`):

* ``queued`` jobs are queued again in their original order;
* a job that was mid-run (``staging``, ``rendering``, ``uploading``) when the agent stopped is run once more
  from the start (its ``attempts`` counter says it is the second run); if it was already on its second run
  it is marked ``failed`` with the reason "interrupted by an agent restart twice", so one poisonous job
  cannot crash-loop the agent;
* finished jobs whose callback had not been delivered get their callback sent again;
* the ComfyUI prompts that were in flight (table ``prompts``, see below) are marked to be cancelled: the worker
  cancels them (delete from the queue, targeted interrupt) and removes their outputs before it runs a job.

Table ``prompts``: every prompt id the agent gives ComfyUI is recorded *before* it is submitted, with the job,
the attempt and the attempt's output folder (``run_dir``), in state ``submitted``; it is forgotten when the run
ended normally. A prompt to be stopped (the job timed out, ComfyUI was lost, the agent restarted) is in state
``cancel`` with the ``reason`` until ComfyUI confirms it is gone and its outputs were removed.

Each prompt row also records the render slot that submitted it (``slot``, its index) and that slot's ComfyUI URL
(``url``): after a crash the prompt is cancelled on the ComfyUI instance that runs it, never on another one.

Schema versions (``PRAGMA user_version``): 0/1 had no ``prompts`` table; opening such a database adds it and
records the ``prompt_id`` of each job that was mid-run, so that it is cancelled like one of this version. 2 had
no ``slot``/``url`` columns (one ComfyUI): they are added, NULL for the rows there; a row without a URL is
cancelled by slot 0 (on a node upgraded in place, the one ComfyUI it had).

The table also records the model files the agent put into ComfyUI's folders (``surfaced``), so that
clean-up after a crash removes exactly those, and which persist between jobs.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time

STATES = ("queued", "staging", "rendering", "uploading", "done", "failed")
ACTIVE = ("staging", "rendering", "uploading")
FINAL = ("done", "failed")
MAX_ATTEMPTS = 2
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL,
    spec TEXT NOT NULL,
    doc TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    callback_state TEXT
);
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    run_dir TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    slot INTEGER,
    url TEXT
);
CREATE TABLE IF NOT EXISTS surfaced (
    path TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    etag TEXT,
    cache_path TEXT,
    persistent INTEGER NOT NULL,
    job_id TEXT,
    created REAL NOT NULL
);
"""


class JobStore:
    def __init__(self, path):
        self.path = path
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self.lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            os.chmod(path, 0o600)
        except OSError:
            pass
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        self.db.executescript(_SCHEMA)
        self.jobs = {}      # id -> doc (the public job document)
        self.specs = {}     # id -> spec
        self.order = {}     # id -> seq
        self.attempts = {}
        for seq, job_id, spec, doc, attempts in self.db.execute(
                "SELECT seq, id, spec, doc, attempts FROM jobs ORDER BY seq"):
            self.jobs[job_id] = json.loads(doc)
            self.specs[job_id] = json.loads(spec)
            self.order[job_id] = seq
            self.attempts[job_id] = attempts
        if version < SCHEMA_VERSION:
            self._migrate()

    def _migrate(self):
        """From schema 0/1: record the prompt id of each mid-run job (it was in flight); from 2: add the slot and
        url columns of ``prompts``; then the new version."""
        now = time.time()
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                columns = {row[1] for row in self.db.execute("PRAGMA table_info(prompts)")}
                for column, kind in (("slot", "INTEGER"), ("url", "TEXT")):
                    if column not in columns:
                        self.db.execute(f"ALTER TABLE prompts ADD COLUMN {column} {kind}")
                for job_id in sorted(self.jobs, key=self.order.get):
                    doc = self.jobs[job_id]
                    if doc.get("state") in ACTIVE and doc.get("prompt_id"):
                        attempt = max(1, self.attempts.get(job_id) or 0)
                        self.db.execute(
                            "INSERT OR IGNORE INTO prompts (prompt_id, job_id, attempt, run_dir, state, reason, "
                            "created, updated) VALUES (?, ?, ?, ?, 'submitted', NULL, ?, ?)",
                            (str(doc["prompt_id"]), job_id, attempt, f"{job_id}.a{attempt}", now, now))
                self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def close(self):
        with self.lock:
            self.db.close()

    # ------------------------------------------------------------------ jobs
    def add(self, spec, doc):
        """Insert a new job; returns (doc, created). An existing id returns its current doc, created False."""
        job_id = spec["job_id"]
        with self.lock:
            if job_id in self.jobs:
                return self.jobs[job_id], False
            now = time.time()
            cur = self.db.execute(
                "INSERT INTO jobs (id, state, spec, doc, attempts, created, updated, callback_state) "
                "VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
                (job_id, doc["state"], json.dumps(spec), json.dumps(doc), now, now,
                 "pending" if spec.get("callback_url") else None))
            self.jobs[job_id] = doc
            self.specs[job_id] = spec
            self.order[job_id] = cur.lastrowid
            self.attempts[job_id] = 0
            return doc, True

    def get(self, job_id):
        with self.lock:
            doc = self.jobs.get(job_id)
            return json.loads(json.dumps(doc)) if doc is not None else None

    def spec(self, job_id):
        with self.lock:
            return self.specs.get(job_id)

    def update(self, job_id, persist=True, **fields):
        """Merge ``fields`` into the job document (written to SQLite unless ``persist`` is False)."""
        with self.lock:
            doc = self.jobs[job_id]
            doc.update(fields)
            doc["updated_at"] = time.time()
            if persist:
                self.db.execute("UPDATE jobs SET state = ?, doc = ?, updated = ? WHERE id = ?",
                                (doc["state"], json.dumps(doc), doc["updated_at"], job_id))
            return doc

    def start_attempt(self, job_id):
        with self.lock:
            self.attempts[job_id] = self.attempts.get(job_id, 0) + 1
            self.db.execute("UPDATE jobs SET attempts = ? WHERE id = ?", (self.attempts[job_id], job_id))
            self.jobs[job_id]["attempts"] = self.attempts[job_id]
            return self.attempts[job_id]

    def set_callback_state(self, job_id, state):
        with self.lock:
            self.db.execute("UPDATE jobs SET callback_state = ? WHERE id = ?", (state, job_id))

    def pending_callbacks(self):
        with self.lock:
            return [row[0] for row in self.db.execute(
                "SELECT id FROM jobs WHERE callback_state = 'pending' AND state IN ('done', 'failed') ORDER BY seq")]

    def queued_ids(self):
        with self.lock:
            return sorted((j for j, d in self.jobs.items() if d["state"] == "queued"), key=self.order.get)

    def count(self, state):
        with self.lock:
            return sum(1 for d in self.jobs.values() if d["state"] == state)

    def recover(self):
        """Apply the restart rules (module docstring); returns (requeued ids, failed ids)."""
        requeued, failed = [], []
        with self.lock:
            self.db.execute("UPDATE prompts SET state = 'cancel', reason = 'restart', updated = ? "
                            "WHERE state = 'submitted'", (time.time(),))
            for job_id in sorted(self.jobs, key=self.order.get):
                doc = self.jobs[job_id]
                if doc["state"] not in ACTIVE:
                    continue
                was = doc["state"]
                if self.attempts.get(job_id, 0) >= MAX_ATTEMPTS:
                    self.update(job_id, state="failed", progress=None, finished_at=time.time(),
                                error=f"interrupted by an agent restart twice (last time while {was}); not run "
                                      "again")
                    failed.append(job_id)
                else:
                    notes = list(doc.get("notes") or [])
                    notes.append(f"the agent restarted while the job was {was}; running it once more")
                    self.update(job_id, state="queued", progress=None, notes=notes)
                    requeued.append(job_id)
        return requeued, failed

    def purge(self, older_than_s):
        """Forget finished jobs older than ``older_than_s`` seconds; returns how many."""
        limit = time.time() - older_than_s
        with self.lock:
            gone = [j for j, d in self.jobs.items() if d["state"] in FINAL and (d.get("finished_at") or 0) < limit]
            for job_id in gone:
                self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                for table in (self.jobs, self.specs, self.order, self.attempts):
                    table.pop(job_id, None)
            return len(gone)

    # ------------------------------------------------------------------ ComfyUI prompts
    def record_prompt(self, prompt_id, job_id, attempt, run_dir, slot=None, url=None):
        """Record a prompt id before it is submitted (state ``submitted``), with the slot and ComfyUI URL it goes
        to."""
        now = time.time()
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO prompts (prompt_id, job_id, attempt, run_dir, state, reason, "
                            "created, updated, slot, url) VALUES (?, ?, ?, ?, 'submitted', NULL, ?, ?, ?, ?)",
                            (prompt_id, job_id, attempt, run_dir, now, now, slot, url))

    def cancel_prompt(self, prompt_id, reason):
        """Mark a recorded prompt to be cancelled (``reason``: timeout, lost, restart)."""
        with self.lock:
            self.db.execute("UPDATE prompts SET state = 'cancel', reason = ?, updated = ? WHERE prompt_id = ?",
                            (reason, time.time(), prompt_id))

    def forget_prompt(self, prompt_id):
        with self.lock:
            self.db.execute("DELETE FROM prompts WHERE prompt_id = ?", (prompt_id,))

    def prompts(self, state=None):
        query, args = ("SELECT prompt_id, job_id, attempt, run_dir, state, reason, created, slot, url "
                       "FROM prompts"), []
        if state is not None:
            query += " WHERE state = ?"
            args.append(state)
        with self.lock:
            rows = self.db.execute(query + " ORDER BY created, prompt_id", args).fetchall()
        return [{"prompt_id": r[0], "job_id": r[1], "attempt": r[2], "run_dir": r[3], "state": r[4], "reason": r[5],
                 "created": r[6], "slot": r[7], "url": r[8]} for r in rows]

    # ------------------------------------------------------------------ surfaced model files
    def add_surfaced(self, path, bucket, key, etag, cache_path, persistent, job_id):
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO surfaced (path, bucket, key, etag, cache_path, persistent, "
                            "job_id, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (path, bucket, key, etag, cache_path, int(bool(persistent)), job_id, time.time()))

    def remove_surfaced(self, path):
        with self.lock:
            self.db.execute("DELETE FROM surfaced WHERE path = ?", (path,))

    def surfaced(self, path=None, job_id=None, persistent=None):
        query, args = "SELECT path, bucket, key, etag, cache_path, persistent, job_id FROM surfaced WHERE 1=1", []
        if path is not None:
            query += " AND path = ?"
            args.append(path)
        if job_id is not None:
            query += " AND job_id = ?"
            args.append(job_id)
        if persistent is not None:
            query += " AND persistent = ?"
            args.append(int(bool(persistent)))
        with self.lock:
            rows = self.db.execute(query, args).fetchall()
        return [{"path": r[0], "bucket": r[1], "key": r[2], "etag": r[3], "cache_path": r[4],
                 "persistent": bool(r[5]), "job_id": r[6]} for r in rows]

    def pinned_cache_paths(self):
        with self.lock:
            return {r[0] for r in self.db.execute("SELECT cache_path FROM surfaced WHERE cache_path IS NOT NULL")}
