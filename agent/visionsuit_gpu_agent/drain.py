# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The drain: render slots that start no new job, so that their ComfyUI (or the agent) can restart under no job.

``POST /drain`` drains the whole agent (every slot, and ``POST /jobs`` answers 503) or one slot (no new job starts
on it; the other slots go on); ``POST /resume`` ends it. Queued jobs stay queued; running jobs finish.

The state lives in ``<state_dir>/drain.json`` (written atomically: a temporary file in the same folder, fsync,
rename, fsync of the folder; removed when nothing is drained any more), read when the agent starts: a drain
survives an agent restart, and only ``POST /resume`` ends it. A file that cannot be read or understood drains the
whole agent (the safe reading of "someone drained it"), with an error in the log, until ``POST /resume``.

File format: ``{"version": 1, "all": true|false, "slots": [1, ...], "since": <unix time>}`` (``all``: the whole
agent, new slots included; ``slots``: the slots drained one by one).
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
import time

FILE_NAME = "drain.json"
VERSION = 1


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, data):
    """Write ``data`` (bytes) to ``path``: temporary file in the same folder, fsync, rename, fsync the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


class DrainState:
    """Which slots are drained (immutable: :meth:`drain` and :meth:`resume` return a new state to :meth:`save`)."""

    def __init__(self, path, all_slots=False, slots=(), since=None, problem=None):
        self.path = path
        self.all = bool(all_slots)
        self.slots = frozenset(int(s) for s in slots)
        self.since = since
        self.problem = problem   # why the file could not be read (then drained as a whole)

    # ------------------------------------------------------------------ reading
    def drained(self, index):
        return self.all or index in self.slots

    def drained_slots(self, count):
        return [i for i in range(count) if self.drained(i)]

    def refuses_jobs(self, count):
        """The agent takes no new job: drained as a whole, or every slot drained."""
        return self.all or (count > 0 and all(i in self.slots for i in range(count)))

    @property
    def active(self):
        return self.all or bool(self.slots)

    # ------------------------------------------------------------------ changes
    def drain(self, slot=None):
        if slot is not None and self.drained(slot) and not self.problem:
            return self
        slots = self.slots if slot is None else self.slots | {slot}
        return DrainState(self.path, self.all or slot is None, slots, self.since or time.time())

    def resume(self, count, slot=None):
        if slot is None:
            return DrainState(self.path)
        slots = (set(range(count)) if self.all else set(self.slots)) - {slot}
        return DrainState(self.path, False, slots, self.since if slots else None)

    def save(self):
        """Persist (raises OSError); nothing drained removes the file."""
        if not self.active:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                return
            _fsync_dir(os.path.dirname(os.path.abspath(self.path)))
            return
        doc = {"version": VERSION, "all": self.all, "slots": sorted(self.slots), "since": self.since}
        write_atomic(self.path, (json.dumps(doc, sort_keys=True) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, path, count, log=None):
        """The state saved at ``path`` (not drained when there is no file). Slots past ``count`` (a configuration
        with fewer instances now) are dropped; a file that cannot be read drains the whole agent."""
        for tmp in glob.glob(os.path.join(glob.escape(os.path.dirname(os.path.abspath(path))),
                                          "." + glob.escape(os.path.basename(path)) + ".*.tmp")):
            with contextlib.suppress(OSError):   # a write cut short by a crash
                os.unlink(tmp)
        try:
            with open(path, "rb") as f:
                raw = f.read(65536)
        except FileNotFoundError:
            return cls(path)
        except OSError as err:
            return cls._unreadable(path, f"cannot read it: {err.strerror or err}", log)
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            return cls._unreadable(path, f"not valid JSON ({err})", log)
        if not isinstance(doc, dict) or not isinstance(doc.get("all", False), bool) \
                or not isinstance(doc.get("slots", []), list) \
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in doc.get("slots", [])):
            return cls._unreadable(path, "not a drain state ({\"all\": bool, \"slots\": [int, ...]})", log)
        since = doc.get("since")
        since = since if isinstance(since, (int, float)) and not isinstance(since, bool) else None
        slots = [s for s in doc.get("slots", []) if s < count]
        if log is not None and len(slots) != len(doc.get("slots", [])):
            log.warning("%s names slot(s) this configuration does not have (%d slot(s)): ignored", path, count)
        return cls(path, doc.get("all", False), slots, since)

    @classmethod
    def _unreadable(cls, path, why, log):
        problem = f"{path}: {why}; the agent stays drained until POST /resume"
        if log is not None:
            log.error("drain state %s", problem)
        return cls(path, True, (), time.time(), problem=problem)
