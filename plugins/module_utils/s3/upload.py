# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Uploads: folder -> bucket/prefix (:func:`upload`).

Each file is sent with a CRC32 that the server checks (``x-amz-checksum-crc32``) and keeps as the object's
full-object checksum; above ``multipart_threshold`` it goes in parts (in parallel, each with its CRC32, the upload
created as ``CRC32``/``FULL_OBJECT`` and completed with the combined CRC32 of the whole file). ``Content-Type``
comes from the file name, and the file name is recorded in ``x-amz-meta-original-filename``
(:data:`ORIGINAL_FILENAME`) unless ``original_filename=False``. Files whose MD5/multipart ETag matches the listing
are skipped.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import mimetypes
import os
import threading
import zlib

from ..errors import GpuWorkerError
from .checksums import crc32_b64, crc32_combine, file_matches_etag
from .client import FileSlice
from .keys import is_placeholder, matches, normalize_prefix, relpath_to_key
from .localio import MiB, walk_local
from .state import SyncState, entry_matches
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

MIN_UPLOAD_PART_SIZE = 5 * MiB
MAX_PARTS = 10000
ORIGINAL_FILENAME = "original-filename"


class _Upload:
    def __init__(self, run, pool, item, opts):
        self.run = run
        self.pool = pool
        self.client = run.client
        self.bucket = run.bucket
        self.item = item
        self.key = item["key"]
        self.path = item["path"]
        self.size = item["size"]
        self.opts = opts
        self.lock = threading.Lock()
        self.parts = []
        self.remaining = 0
        self.upload_id = None
        self.completed = False

    def headers(self):
        ctype = mimetypes.guess_type(self.path)[0] or "application/octet-stream"
        meta = dict(self.opts["metadata"] or {})
        if self.opts["original_filename"]:
            meta[ORIGINAL_FILENAME] = os.path.basename(self.path)
        return ctype, meta

    def start(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.run.vanished(self.key)  # removed since the folder was scanned
            return
        self.size = st.st_size
        self.st_before = st
        self.run.start_file(self.key)
        ctype, meta = self.headers()
        if self.size <= self.opts["multipart_threshold"]:
            body = FileSlice(self.path, 0, self.size)
            crc = 0
            for data in body.chunks():
                crc = zlib.crc32(data, crc)
            body.throttle = self._throttle
            etag = self.client.put_object(self.bucket, self.key, body, content_type=ctype, metadata=meta,
                                          checksum_crc32=crc32_b64(crc))
            self.run.progress(self.size, self.key)
            self._done(etag)
            return
        psize = max(self.opts["part_size"], MIN_UPLOAD_PART_SIZE, -(-self.size // MAX_PARTS))
        chunks = [(n + 1, off, min(psize, self.size - off)) for n, off in enumerate(range(0, self.size, psize))]
        self.upload_id = self.client.create_multipart_upload(self.bucket, self.key, ctype, meta,
                                                             checksum_algorithm="CRC32", checksum_type="FULL_OBJECT")
        self.opts["active"].add(self)
        self.remaining = len(chunks)
        for chunk in chunks:
            self.pool.submit(self._part, chunk)

    def _part(self, chunk):
        number, offset, length = chunk
        body = FileSlice(self.path, offset, length)
        crc = 0
        for data in body.chunks():
            crc = zlib.crc32(data, crc)
        body.throttle = self._throttle
        etag = self.client.upload_part(self.bucket, self.key, self.upload_id, number, body,
                                       checksum_crc32=crc32_b64(crc))
        self.run.progress(length, self.key)
        with self.lock:
            self.parts.append((number, etag, crc, length))
            self.remaining -= 1
            last = self.remaining == 0
        if last:
            whole = 0
            for _n, _etag, crc, length in sorted(self.parts):
                whole = crc32_combine(whole, crc, length)
            etag = self.client.complete_multipart_upload(
                self.bucket, self.key, self.upload_id, [(n, e, crc32_b64(c)) for n, e, c, _l in self.parts],
                checksum_crc32=crc32_b64(whole), checksum_type="FULL_OBJECT")
            self.completed = True
            self.opts["active"].discard(self)
            self._done(etag)

    def _throttle(self, nbytes):
        self.run.throttle(nbytes, self.pool.cancelled)

    def _done(self, etag):
        st = os.stat(self.path)
        if st.st_size == self.st_before.st_size and st.st_mtime_ns == self.st_before.st_mtime_ns:
            self.opts["state"].put(self.item["rel"], self.key, st, etag)
        self.run.transferred(self.key, self.size)


class _ActiveSet:
    def __init__(self):
        self.lock = threading.Lock()
        self.items = set()

    def add(self, item):
        with self.lock:
            self.items.add(item)

    def discard(self, item):
        with self.lock:
            self.items.discard(item)


def upload(client, bucket, prefix, source, include=None, exclude=None, delete=False, dry_run=False,
           workers=DEFAULT_WORKERS, multipart_threshold=DEFAULT_MULTIPART_THRESHOLD, part_size=DEFAULT_PART_SIZE,
           metadata=None, original_filename=True, progress=None, nice=0, bwlimit=0, on_file=None):
    """Mirror the folder ``source`` into ``bucket/prefix`` (see :mod:`.sync`); returns the result dict.
    ``nice``, ``bwlimit`` and ``on_file`` as for :func:`.download.download`."""
    workers, part_size, multipart_threshold = check_workers(workers, part_size, multipart_threshold)
    prefix = normalize_prefix(prefix)
    source = os.path.abspath(source)
    if not os.path.isdir(source):
        raise GpuWorkerError("source folder %s does not exist" % source, field="path",
                             hint="create it or pass the right folder")
    run = Run(client, "upload", bucket, prefix, source, progress, dry_run, bwlimit=bwlimit, on_file=on_file)
    run.result["warnings"] = []
    # ComfyUI's placeholders (output/_output_images_will_be_put_here, ...) are not renders: never uploaded nor
    # recorded, and objects named like them (an earlier upload's) are left alone
    local = {rel: st for rel, st in walk_local(source, include, exclude).items()
             if not is_placeholder(source + "/" + rel)}
    remote = list_remote(client, bucket, prefix, strict=False)
    remote = {rel: obj for rel, obj in remote.items()
              if matches(rel, include, exclude) and not is_placeholder(source + "/" + rel)}
    run.result["before"] = sorted(remote)
    state = SyncState(source, "%s/%s" % (bucket, prefix))
    up_part = max(part_size, MIN_UPLOAD_PART_SIZE)

    transfers = []
    for rel in sorted(local):
        st = local[rel]
        path = os.path.join(source, *rel.split("/"))
        key = relpath_to_key(rel, prefix)
        obj = remote.get(rel)
        item = {"key": key, "rel": rel, "path": path, "size": st.st_size}
        if obj is not None and obj["size"] == st.st_size:
            if entry_matches(state.get(rel), st, obj["etag"]):
                run.result["skipped"] += 1
                continue
            if file_matches_etag(path, obj["etag"], st.st_size, [up_part, part_size]):
                if not dry_run:
                    state.put(rel, key, st, obj["etag"])
                run.result["adopted"].append(rel)
                run.result["skipped"] += 1
                continue
        transfers.append(item)

    deletes = sorted(rel for rel in remote if rel not in local) if delete else []
    for rel in list(state.entries):
        if rel not in local and not dry_run:
            state.remove(rel)
    plan = [{"action": "upload", "key": t["key"], "path": t["path"], "size": t["size"]} for t in transfers]
    plan += [{"action": "delete", "key": remote[rel]["key"], "path": None, "size": remote[rel]["size"]}
             for rel in deletes]
    run.result["plan"] = plan
    run.result["after"] = sorted((set(remote) | {t["rel"] for t in transfers}) - set(deletes))
    run.total_bytes = sum(t["size"] for t in transfers)
    if dry_run:
        run.result["files"] = len(transfers)
        run.result["bytes"] = run.total_bytes
        run.result["transferred"] = [t["key"] for t in transfers]
        run.result["deleted"] = len(deletes)
        run.result["deleted_paths"] = [remote[rel]["key"] for rel in deletes]
        return run.finish()

    active = _ActiveSet()
    opts = {"part_size": up_part, "multipart_threshold": multipart_threshold, "metadata": metadata,
            "original_filename": original_filename, "state": state, "active": active}
    pool = Pool(workers, nice)
    try:
        for t in transfers:
            pool.submit(_Upload(run, pool, t, opts).start)
        pool.wait()
    finally:
        for job in list(active.items):
            if not job.completed:
                try:
                    client.abort_multipart_upload(bucket, job.key, job.upload_id)
                except GpuWorkerError:
                    pass
        state.save()
    err = pool.first_error()
    if err is not None:
        raise_run_error(err, run, "upload")
    message = state.warning()
    if message:
        run.result["warnings"].append(message)
    if deletes:
        keys = [remote[rel]["key"] for rel in deletes]
        client.delete_objects(bucket, keys)
        run.result["deleted"] = len(keys)
        run.result["deleted_paths"] = keys
    return run.finish()
