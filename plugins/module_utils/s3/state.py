# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a sync remembers between runs.

* :class:`SyncState`: the state file ``.visionsuit-sync.json`` of a local folder, per target (``bucket/prefix``)
  relative path -> key, size, mtime (ns) and ETag; a file whose size, mtime and listed ETag match its record
  (:func:`entry_matches`) is skipped without hashing it. The state is an optimisation, so a failed write (a full
  disk, a read-only folder) does not fail the sync: :meth:`SyncState.save` keeps the error and
  :meth:`SyncState.warning` words it for the result's ``warnings`` (the node commands print it on stderr). The
  previous file then stays as it was; it only vouches for files whose size and mtime still match, so the next run
  hashes the rest again (and adopts what matches) instead of skipping it;
* the sidecar of a ranged download (``.<name>.vsync-part.json``: written and flushed ranges, ETag, boot id), read
  with :func:`read_sidecar` and replaced atomically with :func:`write_json_atomic`;
* :func:`boot_id`, which tells a killed process (its written data is still in the page cache) from a restarted
  machine (only flushed data survived).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import threading

from .keys import STATE_FILE

_STATE_VERSION = 1


class SyncState:
    """``<dir>/.visionsuit-sync.json``: per target (``bucket/prefix``) relative path -> key, size, mtime_ns, etag."""

    def __init__(self, root, target):
        self.root = root
        self.path = os.path.join(root, STATE_FILE)
        self.target = target
        self.lock = threading.Lock()
        self.doc = {"version": _STATE_VERSION, "targets": {}}
        self.dirty = False
        self.error = None  # the OSError of the last failed save, None once a save succeeded
        try:
            with open(self.path, "r", encoding="utf-8") as f:
                doc = json.load(f)
            if isinstance(doc, dict) and doc.get("version") == _STATE_VERSION \
                    and isinstance(doc.get("targets"), dict):
                self.doc = doc
        except (OSError, ValueError):
            pass
        entries = self.doc["targets"].get(target)
        self.entries = entries if isinstance(entries, dict) else {}
        self.doc["targets"][target] = self.entries

    def get(self, rel):
        entry = self.entries.get(rel)
        return entry if isinstance(entry, dict) else None

    def put(self, rel, key, st, etag):
        with self.lock:
            self.entries[rel] = {"key": key, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "etag": etag}
            self.dirty = True

    def remove(self, rel):
        with self.lock:
            if self.entries.pop(rel, None) is not None:
                self.dirty = True

    def save(self):
        """Write the state (atomically: a temp file renamed over the old one) when it changed; returns True when
        the file is current. A failure (``ENOSPC``, a read-only folder) is kept in :attr:`error` and leaves the
        previous file untouched: the state is an optimisation, losing it only costs hashing next time."""
        with self.lock:
            if not self.dirty:
                return True
            tmp = "%s.%d.tmp" % (self.path, os.getpid())
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    # dumps (C encoder) + one write: json.dump encodes in Python, chunk by chunk
                    f.write(json.dumps(self.doc, sort_keys=True, separators=(",", ":")))
                os.replace(tmp, self.path)
                self.dirty = False
                self.error = None
                return True
            except OSError as err:
                self.error = err
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                return False

    def warning(self):
        """One line saying that the last save failed and what that costs, or None."""
        err = self.error
        if err is None:
            return None
        reason = err.strerror or str(err)
        if err.errno == errno.ENOSPC:
            reason += " (the disk is full: free up space)"
        return ("could not write the sync state %s: %s; the transferred files are complete and verified, but the "
                "next run hashes them again instead of skipping them" % (self.path, reason))


def entry_matches(entry, st, etag):
    return bool(entry) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns \
        and entry.get("etag") == etag


def read_sidecar(path):
    """The JSON document of a sidecar, or None when it is missing or unreadable."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def write_json_atomic(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc))
    os.replace(tmp, path)


_BOOT_ID = []


def boot_id():
    """This boot's id (Linux), to tell a crashed process (its written data is still in the page cache) from a
    restarted machine (only flushed data survived); None elsewhere."""
    if not _BOOT_ID:
        try:
            with open("/proc/sys/kernel/random/boot_id", "r", encoding="ascii") as f:
                _BOOT_ID.append(f.read().strip() or None)
        except OSError:
            _BOOT_ID.append(None)
    return _BOOT_ID[0]
