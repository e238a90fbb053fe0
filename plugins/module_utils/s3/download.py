# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Downloads: bucket/prefix -> folder (:func:`download`) and one object -> file (:func:`download_object`).

This module is over 600 lines because :class:`_Download` (one object's temp file, ranges, resume, streamed
verification, commit) is one state machine whose parts share its locks and counters, and both entry points use it.

Each object goes to a hidden temp file ``.<name>.vsync-part`` beside its final name; every byte is verified as it
streams (see :class:`_Download`), the file is fsynced once and renamed atomically, and its folder fsynced after
the renames. A ranged download records its written and flushed ranges in ``.<name>.vsync-part.json`` so that the
next run fetches only the missing ones. A failed check removes the temp file and raises GpuWorkerError with
:data:`INTEGRITY_EXIT_CODE` (exit code 4 in the node commands).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import errno
import hashlib
import os
import stat
import threading
import zlib

from ..errors import EXIT_INTEGRITY, GpuWorkerError
from .checksums import Crc32, Verifier, crc32_combine, etag_part_count, file_matches_etag, usable_checksum
from .client import Cancelled
from .keys import is_placeholder, is_reserved, key_to_relpath, matches, normalize_prefix, relpath_to_key, safe_join
from .localio import (
    READ_CHUNK,
    FileWriter,
    MiB,
    check_space,
    fsync_dirs,
    human_size,
    prune_empty_dirs,
    resolve_owner,
    thread_buffer,
    tmp_names,
    unlink_if_exists,
    walk_local,
)
from .state import SyncState, boot_id, entry_matches, read_sidecar, write_json_atomic
from .transfer import (
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_PART_SIZE,
    DEFAULT_WORKERS,
    Pool,
    Run,
    check_workers,
    list_remote,
    raise_run_error,
)

INTEGRITY_EXIT_CODE = EXIT_INTEGRITY  # 4 in the one exit code table (..errors.EXIT_CODES)
FLUSH_BYTES = 256 * MiB
DIRECT_MIN_SIZE = 256 * 1024
MAX_INLINE_PART = 256 * MiB


class _Download:
    """One object: temp file, streamed verification, fsync, atomic rename, resumable ranges.

    Requests: objects up to ``multipart_threshold`` with a plain (MD5) ETag take one GET and nothing else (its reply
    carries the ``x-amz-checksum-*`` headers); bigger objects, multipart ETags and ``refresh`` take a HEAD first
    (plus ``HEAD ?partNumber=1`` for a multipart ETag without a usable full-object checksum: the part size).

    Verification of ranged downloads happens while the ranges stream, without reading the file back:

    * ``crc32``: the object has a full-object CRC32 (what :func:`.upload.upload` stores); each range's CRC32 is
      computed in its worker and the ranges' values are combined in order (:func:`.checksums.crc32_combine`);
    * ``parts``: a multipart ETag whose part size is known: the ranges follow the parts, each range's MD5 is
      computed in its worker and the ETag is the MD5 of the part digests;
    * ``sequential`` (anything else: a plain MD5 ETag, SHA checksums): completed ranges are hashed in order from the
      temp file as they complete, by whichever worker is free (and the rest before the rename).

    Ranges resumed from an earlier run, or whose stream was not contiguous, are hashed from the temp file: what the
    checks cover is always what is on disk under the temp name before the rename.
    """

    def __init__(self, run, pool, item, opts):
        self.run = run
        self.pool = pool
        self.client = run.client
        self.bucket = run.bucket
        self.key = item["key"]
        self.rel = item["rel"]
        self.path = item["path"]
        self.size = item["size"]
        self.etag = item["etag"]
        self.info = item.get("info")
        self.opts = opts
        self.tmp, self.sidecar = tmp_names(self.path)
        self.lock = threading.Lock()
        self.seq_lock = threading.Lock()
        self.done = set()      # ranges whose data was written (this run or an earlier one)
        self.flushed = set()   # the part of ``done`` known to be on disk (fdatasync)
        self.unflushed = 0
        self.flushing = False
        self.remaining = 0
        self.ranges = []
        self.digests = {}
        self.mode = None
        self.cursor = 0
        self.seq = None
        self.part_sizes = [opts["part_size"]]
        self.resumed = False
        self.finished = False
        self.fetched = 0

    # first unit: (HEAD), then either one streamed GET here or ranged units in the pool
    def start(self):
        self.run.start_file(self.key)
        for attempt in (0, 1):
            try:
                self._start(refresh=attempt > 0)
                return
            except GpuWorkerError as err:
                status = err.details.get("status")
                if status == 404 and err.details.get("code") != "NoSuchBucket" and not self.opts.get("pinned"):
                    self.run.vanished(self.key)  # deleted since the listing: nothing to mirror
                    return
                if status == 412 and attempt == 0 and not self.opts.get("pinned"):
                    continue  # replaced since the listing: look again and fetch the current version
                raise

    def _start(self, refresh):
        self._makedirs(os.path.dirname(self.path))
        threshold = self.opts["multipart_threshold"]
        if refresh:
            self.info = None
        if self.info is None and (refresh or self.size > threshold or etag_part_count(self.etag)):
            self._head()
        if self.size == 0 or self.size <= threshold:
            self._single()
        else:
            self._ranged()

    def _head(self):
        info = self.client.head_object(self.bucket, self.key)
        if info.get("size") is not None:
            self.size = info["size"]
        if info.get("etag"):
            self.etag = info["etag"]
        self.info = info

    def _object_part_size(self):
        """The size of part 1 (``HEAD ?partNumber=1``), or None."""
        try:
            part = self.client.head_object(self.bucket, self.key, part_number=1, checksum_mode=False)
        except GpuWorkerError:
            return None
        return part.get("content_length") or None

    def _checksum(self, info):
        return usable_checksum((info or {}).get("checksums"), (info or {}).get("checksum_type"))

    def _verifier(self, info):
        return Verifier(self.etag, self.size, (info or {}).get("checksums"), (info or {}).get("checksum_type"),
                        self.part_sizes)

    def _makedirs(self, folder):
        known = self.opts["known_dirs"]
        if folder in known:
            return
        missing = []
        probe = folder
        while not os.path.isdir(probe):
            missing.append(probe)
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o755)
            except FileExistsError:
                pass
            except OSError as err:
                raise GpuWorkerError("cannot create folder %s: %s" % (d, err.strerror or err),
                                     hint="check the permissions of the destination")
            if self.opts["uid"] != -1 or self.opts["gid"] != -1:
                os.chown(d, self.opts["uid"], self.opts["gid"])
        known.add(folder)

    # ---------------------------------------------------------------- one GET
    def _single(self):
        unlink_if_exists(self.sidecar)
        if self.info is not None and etag_part_count(self.etag) and not self._checksum(self.info):
            psize = self._object_part_size()
            if psize:
                self.part_sizes.insert(0, psize)
        holder = [self._verifier(self.info) if self.info is not None or not self.size else None]
        out = FileWriter(self.tmp, self.size >= DIRECT_MIN_SIZE, create=True)
        ok = False
        try:
            if self.size:
                def on_headers(info):
                    if holder[0] is None:
                        holder[0] = self._verifier(info)

                def write(pos, data):
                    self.run.throttle(len(data), self.pool.cancelled)
                    out.write(pos, data)
                    holder[0].update(data)
                    self.run.progress(len(data), self.key)

                self.client.get_object(self.bucket, self.key, write, etag=self.etag, cancelled=self.pool.cancelled,
                                       checksum_mode=holder[0] is None, on_headers=on_headers,
                                       buffer=thread_buffer())
            st = out.sync()
            ok = True
        finally:
            out.close()
            if not ok:
                unlink_if_exists(self.tmp)
        self._commit(holder[0].result(), st, sidecar=False)

    # ---------------------------------------------------------------- ranged GETs
    def _ranged(self):
        size = self.size
        rsize = self.opts["part_size"]
        checksum = self._checksum(self.info)
        parts = etag_part_count(self.etag)
        self.mode = "sequential"
        if checksum and checksum[0] == "crc32":
            self.mode = "crc32"
        elif not checksum and parts:
            psize = self._object_part_size()
            if psize:
                self.part_sizes.insert(0, psize)
                if psize <= MAX_INLINE_PART and -(-size // psize) == parts:
                    self.mode = "parts"
                    rsize = psize
        if self.mode == "sequential":
            self.seq = self._verifier(self.info)
        self.rsize = rsize
        self.ranges = [(i, start, min(start + rsize, size) - 1) for i, start in enumerate(range(0, size, rsize))]
        side = read_sidecar(self.sidecar)
        done = set()
        if side and side.get("etag") == self.etag and side.get("size") == size and side.get("range_size") == rsize \
                and os.path.isfile(self.tmp) and os.path.getsize(self.tmp) == size:
            done = {int(i) for i in side.get("done", []) if 0 <= int(i) < len(self.ranges)}
            flushed = {int(i) for i in side.get("flushed", side.get("done", [])) if int(i) in done}
            if side.get("boot_id") != boot_id():
                done = flushed  # the machine restarted since: written but unflushed data may be lost
            self.flushed = flushed
        if done:
            self.resumed = True
            self.run.progress(sum(e - s + 1 for i, s, e in self.ranges if i in done), self.key)
        else:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                try:
                    os.posix_fallocate(fd, 0, size)
                except (AttributeError, OSError) as err:
                    if getattr(err, "errno", None) == errno.ENOSPC:
                        raise GpuWorkerError("no space left for %s (%s)" % (self.path, human_size(size)),
                                             hint="free up space on the destination")
                    os.ftruncate(fd, size)
            finally:
                os.close(fd)
        self.done = done
        self._save_sidecar()
        pending = [r for r in self.ranges if r[0] not in done]
        self.remaining = len(pending)
        if not pending:
            self._finish_ranged()
            return
        for r in pending:
            self.pool.submit(self._range, r)

    def _save_sidecar(self):
        write_json_atomic(self.sidecar, {"key": self.key, "etag": self.etag, "size": self.size,
                                         "range_size": self.rsize, "done": sorted(self.done),
                                         "flushed": sorted(self.flushed), "boot_id": boot_id()})

    def _range(self, rng):
        index, start, end = rng
        mode = self.mode
        h = {"next": start, "crc": 0, "md5": hashlib.md5() if mode == "parts" else None}  # noqa: S324 - S3 ETag
        out = FileWriter(self.tmp, True)
        try:
            def write(pos, data):
                self.run.throttle(len(data), self.pool.cancelled)
                out.write(pos, data)
                if h["next"] == pos:
                    if mode == "crc32":
                        h["crc"] = zlib.crc32(data, h["crc"])
                    elif mode == "parts":
                        h["md5"].update(data)
                    h["next"] = pos + len(data)
                else:
                    h["next"] = None  # not one contiguous stream: hash this range from the file at the end
                self.run.progress(len(data), self.key)

            self.client.get_object(self.bucket, self.key, write, start=start, end=end, etag=self.etag,
                                   cancelled=self.pool.cancelled, buffer=thread_buffer())
        finally:
            out.close()
        digest = None
        if h["next"] == end + 1:
            digest = h["crc"] if mode == "crc32" else (h["md5"].digest() if mode == "parts" else None)
        with self.lock:
            if digest is not None:
                self.digests[index] = digest
            self.done.add(index)
            self._save_sidecar()
            self.fetched += end - start + 1
            self.unflushed += end - start + 1
            self.remaining -= 1
            last = self.remaining == 0
            flush = not last and not self.flushing and self.unflushed >= FLUSH_BYTES
            if flush:
                self.flushing = True
        if mode == "sequential":
            self._advance(block=False)
        if flush:
            self._checkpoint()
        if last:
            self._finish_ranged()

    def _checkpoint(self):
        """Flush the data of the ranges written so far, then record them as flushed in the sidecar."""
        with self.lock:
            batch = self.done - self.flushed
            self.unflushed = 0
        try:
            if batch:
                fd = os.open(self.tmp, os.O_WRONLY)
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
                with self.lock:
                    self.flushed |= batch
                    self._save_sidecar()
        finally:
            with self.lock:
                self.flushing = False

    def interrupted(self):
        """After a failed or interrupted run: make what this run wrote durable, so that it stays resumable even
        across a restart of the machine."""
        if self.ranges and not self.finished and self.done - self.flushed and os.path.isfile(self.tmp):
            try:
                self._checkpoint()
            except OSError:
                pass

    def _range_from_file(self, f, start, end, update):
        f.seek(start)
        left = end - start + 1
        while left > 0:
            if self.pool.cancelled():
                raise Cancelled("verification of %s cancelled" % self.path)
            data = f.read(min(READ_CHUNK, left))
            if not data:
                raise OSError(errno.EIO, "%s is shorter than expected" % self.tmp)
            update(data)
            left -= len(data)

    def _advance(self, block):
        """Sequential mode: hash the completed ranges that follow the hashed ones, in order, from the temp file."""
        if not self.seq_lock.acquire(block):
            return  # another worker is at it (the last range's worker finishes the rest)
        try:
            with open(self.tmp, "rb") as f:
                while True:
                    with self.lock:
                        i = self.cursor
                        ready = i < len(self.ranges) and i in self.done
                    if not ready:
                        return
                    start, end = self.ranges[i][1:]
                    self._range_from_file(f, start, end, self.seq.update)
                    self.cursor = i + 1
        finally:
            self.seq_lock.release()

    def _ranged_result(self):
        if self.mode == "sequential":
            self._advance(block=True)
            if self.cursor != len(self.ranges):
                return False, "only %d of %d ranges could be hashed" % (self.cursor, len(self.ranges))
            return self.seq.result()
        values = []
        with open(self.tmp, "rb") as f:
            for index, start, end in self.ranges:
                value = self.digests.get(index)
                if value is None:
                    h = Crc32() if self.mode == "crc32" else hashlib.md5()  # noqa: S324 - S3 ETag
                    self._range_from_file(f, start, end, h.update)
                    value = h.crc if self.mode == "crc32" else h.digest()
                values.append((value, end - start + 1))
        if self.mode == "crc32":
            crc = 0
            for value, length in values:
                crc = crc32_combine(crc, value, length)
            got = base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")
            expected = self._checksum(self.info)[1]
            return got == expected, "x-amz-checksum-crc32 %s instead of %s" % (got, expected)
        got = "%s-%d" % (hashlib.md5(b"".join(v[0] for v in values)).hexdigest(), len(values))  # noqa: S324
        return got == self.etag, "multipart ETag %s instead of %s" % (got, self.etag)

    def _finish_ranged(self):
        try:
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)  # once per file, before the checks and the rename
                st = os.fstat(fd)
            finally:
                os.close(fd)
            result = self._ranged_result()
        except Cancelled:
            raise
        except OSError as err:
            result, st = (False, "cannot read the temp file back: %s" % err), None
        self._commit(result, st, sidecar=True)

    # ---------------------------------------------------------------- verified -> final name
    def _commit(self, result, st, sidecar):
        ok, why = result
        if ok and st is not None and st.st_size != self.size:
            ok, why = False, "size %d instead of %d" % (st.st_size, self.size)
        if not ok:
            unlink_if_exists(self.tmp)
            unlink_if_exists(self.sidecar)
            if self.resumed:
                why += " (the download had resumed an earlier partial one)"
            raise GpuWorkerError(
                "integrity check failed for '%s' from bucket '%s': %s; the partial download was removed"
                % (self.key, self.bucket, why), hint="run the sync again; if it persists the object is corrupt "
                "in the bucket or something on the path alters data", exit_code=INTEGRITY_EXIT_CODE,
                details={"key": self.key})
        if self.opts["uid"] != -1 or self.opts["gid"] != -1:
            os.chown(self.tmp, self.opts["uid"], self.opts["gid"])
        try:
            os.replace(self.tmp, self.path)
        except IsADirectoryError:
            raise GpuWorkerError("cannot replace folder %s with object '%s'" % (self.path, self.key))
        self.finished = True
        self.opts["renamed_in"].add(os.path.dirname(self.path))
        if sidecar:
            unlink_if_exists(self.sidecar)
        self.opts["state"].put(self.rel, self.key, st, self.etag)
        self.run.transferred(self.key, self.size, self.resumed)


def _report_state(run, state):
    """Add the warning of a state file that could not be written (a full disk) to the result."""
    message = state.warning()
    if message and message not in run.result["warnings"]:
        run.result["warnings"].append(message)


def _unchanged(entry, st):
    """Whether a local file is still exactly what the sync recorded (same size and mtime)."""
    return bool(entry) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns


def _needed_space(transfers):
    """Bytes still to come (the recorded ranges of matching temp files excluded)."""
    needed = 0
    for t in transfers:
        tmp, side = tmp_names(t["path"])
        doc = read_sidecar(side)
        if doc and doc.get("etag") == t["etag"] and doc.get("size") == t["size"] and os.path.isfile(tmp):
            needed += max(0, t["size"] - len(doc.get("done", [])) * int(doc.get("range_size") or 0))
        else:
            needed += t["size"]
    return needed


def _run_downloads(run, transfers, opts, workers):
    """Run the transfers in a pool; makes the renames durable (folder fsync) and keeps partial ones resumable."""
    pool = Pool(workers, opts.get("nice"))
    jobs = [_Download(run, pool, t, opts) for t in transfers]
    try:
        for job in jobs:
            pool.submit(job.start)
        pool.wait()
    finally:
        if pool.errors or pool.cancelled():
            for job in jobs:
                job.interrupted()
        fsync_dirs(opts["renamed_in"])
        opts["state"].save()
    err = pool.first_error()
    if err is not None:
        raise_run_error(err, run, "download")
    return jobs


def download(client, bucket, prefix, dest, include=None, exclude=None, delete=False, dry_run=False,
             workers=DEFAULT_WORKERS, multipart_threshold=DEFAULT_MULTIPART_THRESHOLD, part_size=DEFAULT_PART_SIZE,
             owner=None, group=None, progress=None, reserve_bytes=0, nice=0, bwlimit=0, on_file=None):
    """Mirror ``bucket/prefix`` into the folder ``dest`` (see :mod:`.sync`); returns the result dict.

    ``nice``: how much lower the transfer threads run (CPU priority, Linux), for callers that must stay responsive.
    ``bwlimit``: bytes per second for the whole run, all workers together (0: no limit; :class:`.transfer.RateLimiter`).
    ``on_file(record)``: called once per downloaded file with ``{key, size, seconds, resumed}``.
    """
    workers, part_size, multipart_threshold = check_workers(workers, part_size, multipart_threshold)
    prefix = normalize_prefix(prefix)
    dest = os.path.abspath(dest)
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise GpuWorkerError("destination %s is not a folder" % dest, field="path")
    uid, gid = resolve_owner(owner, group)
    run = Run(client, "download", bucket, prefix, dest, progress, dry_run, bwlimit=bwlimit, on_file=on_file)
    run.result["warnings"] = []
    remote = list_remote(client, bucket, prefix, strict=True)
    # ComfyUI's placeholders are neither fetched nor seen locally: never downloaded over, recorded or deleted
    remote = {rel: obj for rel, obj in remote.items()
              if matches(rel, include, exclude) and not is_placeholder(dest + "/" + rel)}
    state = SyncState(dest, "%s/%s" % (bucket, prefix))
    local_all = {rel: st for rel, st in walk_local(dest).items() if not is_placeholder(dest + "/" + rel)}
    run.result["before"] = sorted(local_all)

    transfers = []
    for rel in sorted(remote):
        obj = remote[rel]
        path = safe_join(dest, rel)
        st = local_all.get(rel)
        if st is None and os.path.lexists(path):
            if os.path.isdir(path):
                raise GpuWorkerError("cannot download '%s': %s is a folder" % (obj["key"], path),
                                     hint="remove or rename the local folder")
        if st is not None and st.st_size == obj["size"]:
            if entry_matches(state.get(rel), st, obj["etag"]):
                run.result["skipped"] += 1
                continue
            if file_matches_etag(path, obj["etag"], obj["size"], [part_size]):
                if not dry_run:
                    state.put(rel, obj["key"], st, obj["etag"])
                run.result["adopted"].append(rel)
                run.result["skipped"] += 1
                continue
        transfers.append({"key": obj["key"], "rel": rel, "path": path, "size": obj["size"], "etag": obj["etag"]})

    deletes = []
    for rel in sorted(state.entries):
        if rel in remote:
            continue
        if not matches(rel, include, exclude):
            continue
        if rel in local_all and _unchanged(state.get(rel), local_all[rel]):
            if delete:
                deletes.append(rel)
        elif not dry_run:
            # gone, or no longer what the sync placed (changed by hand, or put back after a run whose state
            # could not be written): not the sync's to delete any more
            state.remove(rel)

    plan = [{"action": "download", "key": t["key"], "path": t["path"], "size": t["size"]} for t in transfers]
    plan += [{"action": "delete", "key": relpath_to_key(rel, prefix), "path": safe_join(dest, rel), "size":
              local_all[rel].st_size} for rel in deletes]
    run.result["plan"] = plan
    after = set(local_all) | {t["rel"] for t in transfers}
    after -= set(deletes)
    run.result["after"] = sorted(after)
    total = sum(t["size"] for t in transfers)
    run.total_bytes = total

    if dry_run:
        run.result["files"] = len(transfers)
        run.result["bytes"] = total
        run.result["transferred"] = [t["key"] for t in transfers]
        run.result["deleted"] = len(deletes)
        run.result["deleted_paths"] = [safe_join(dest, rel) for rel in deletes]
        return run.finish()

    if transfers:
        check_space(dest, _needed_space(transfers), reserve_bytes)
        try:
            os.makedirs(dest, exist_ok=True)
        except OSError as err:
            raise GpuWorkerError("cannot create destination %s: %s" % (dest, err.strerror or err), field="path")
    opts = {"part_size": part_size, "multipart_threshold": multipart_threshold, "uid": uid, "gid": gid,
            "state": state, "known_dirs": {dest}, "renamed_in": set(), "nice": nice}
    _run_downloads(run, transfers, opts, workers)

    for rel in deletes:
        path = safe_join(dest, rel)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise GpuWorkerError("cannot delete %s: %s" % (path, e.strerror or e))
        state.remove(rel)
        run.result["deleted"] += 1
        run.result["deleted_paths"].append(path)
        prune_empty_dirs(os.path.dirname(path), dest)
    state.save()
    _report_state(run, state)
    return run.finish()


def download_object(client, bucket, key, dest_path, expected_etag=None, expected_size=None, object_info=None,
                    workers=DEFAULT_WORKERS, multipart_threshold=DEFAULT_MULTIPART_THRESHOLD,
                    part_size=DEFAULT_PART_SIZE, owner=None, group=None, progress=None, reserve_bytes=0, nice=0,
                    bwlimit=0, on_file=None):
    """Download the single object ``bucket/key`` to the file ``dest_path``, without a listing.

    Same machinery as :func:`download`: hidden temp file and sidecar next to ``dest_path``, parallel ranged GETs
    above ``multipart_threshold``, every byte verified, fsync, atomic rename, resume of an interrupted download.
    The file is recorded in the folder's ``.visionsuit-sync.json`` (target ``bucket/<folder of the key>``, the
    record :func:`download` of that prefix keeps), so a current copy is skipped: with ``expected_etag`` and
    ``expected_size`` (e.g. from the caller's listing) or ``object_info`` (what the caller's
    ``client.head_object(bucket, key)`` returned: also saves the download's own HEAD) without any request, else
    after one HEAD. A file without a record whose content has the object's ETag is adopted. The GETs are pinned to
    that ETag (``If-Match``): an object replaced meanwhile fails (``412``) instead of mixing versions.

    Returns the result dict of :func:`download` (``files`` 1 or 0, ``skipped``, ``bytes``, ``resumed``,
    ``requests``, ...) plus ``key``, ``etag`` and ``size``. Raises GpuWorkerError (``details["status"] == 404``)
    when the object does not exist.
    """
    workers, part_size, multipart_threshold = check_workers(workers, part_size, multipart_threshold)
    key_to_relpath(key)  # refuses unsafe keys (NUL, '..', reserved names) like download() does
    dest_path = os.path.abspath(dest_path)
    folder, name = os.path.split(dest_path)
    if not name or is_reserved(name) or is_placeholder(dest_path):
        raise GpuWorkerError("refusing destination %s: not a plain file name" % dest_path, field="path")
    uid, gid = resolve_owner(owner, group)
    prefix = key.rpartition("/")[0]
    run = Run(client, "download", bucket, prefix, folder, progress, False, bwlimit=bwlimit, on_file=on_file)
    run.result.update({"key": key, "etag": expected_etag, "size": expected_size, "warnings": []})
    info = object_info
    if object_info is not None:
        expected_etag = expected_etag or object_info.get("etag")
        if expected_size is None:
            expected_size = object_info.get("size") or 0
    if expected_etag is None or expected_size is None:
        info = client.head_object(bucket, key)
        expected_etag = expected_etag or info.get("etag")
        if expected_size is None:
            expected_size = info.get("size") or 0
    expected_etag = (expected_etag or "").strip('"')
    run.result.update({"etag": expected_etag, "size": expected_size})
    state = SyncState(folder, "%s/%s" % (bucket, prefix))
    item = {"key": key, "rel": name, "path": dest_path, "size": expected_size, "etag": expected_etag, "info": info}
    try:
        st = os.stat(dest_path)
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise GpuWorkerError("cannot inspect %s: %s" % (dest_path, err.strerror or err), field="path")
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise GpuWorkerError("cannot download '%s': %s is a folder" % (key, dest_path),
                             hint="remove or rename the local folder")
    run.result["before"] = [name] if st is not None else []
    run.result["after"] = [name]
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == expected_size:
        entry = state.get(name)
        if entry_matches(entry, st, expected_etag) and entry.get("key") == key:
            run.result["skipped"] = 1
            return run.finish()
        if file_matches_etag(dest_path, expected_etag, expected_size, [part_size]):
            state.put(name, key, st, expected_etag)
            state.save()
            _report_state(run, state)
            run.result["skipped"] = 1
            run.result["adopted"].append(name)
            return run.finish()
    run.result["plan"] = [{"action": "download", "key": key, "path": dest_path, "size": expected_size}]
    run.total_bytes = expected_size
    check_space(folder, _needed_space([item]), reserve_bytes)
    opts = {"part_size": part_size, "multipart_threshold": multipart_threshold, "uid": uid, "gid": gid,
            "state": state, "known_dirs": set(), "renamed_in": set(), "pinned": True, "nice": nice}
    job = _run_downloads(run, [item], opts, workers)[0]
    _report_state(run, state)
    run.result.update({"etag": job.etag, "size": job.size})
    return run.finish()
