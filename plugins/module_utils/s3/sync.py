# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The S3 sync engine: bucket/prefix <-> local directory, keeping sub-folders.

The engine is split by concern; this module is its entry point and overview:

==================== ==========================================================================================
``sync.py``          :func:`sync` (either direction) and :func:`object_manifest`; re-exports :func:`download`,
                     :func:`download_object` and :func:`upload` (the three entry points, nothing else) so that
                     callers of the engine need one import
``download.py``      :func:`download` (bucket/prefix -> folder), :func:`download_object` (one object, no listing)
``upload.py``        :func:`upload` (folder -> bucket/prefix), ``ORIGINAL_FILENAME``
``transfer.py``      the worker pool, the bookkeeping of a run, the listing, ``DEFAULT_*`` options
``keys.py``          key <-> relative path rules (``key_to_relpath``, ``relpath_to_key``, ``normalize_prefix``,
                     ``safe_join``, include/exclude), the reserved names ``STATE_FILE``/``TEMP_SUFFIX``/...
                     and ComfyUI's placeholders (``COMFYUI_PLACEHOLDERS``, ``is_placeholder``)
``checksums.py``     ETags, CRC32 (+ combine), full-object checksums, ``Verifier``, ``file_md5``/...
``state.py``         the state file (``SyncState``), the sidecars of ranged downloads, the boot id
``localio.py``       local walk, temp names, ``pwrite``/``O_DIRECT`` writer, fsync, free space, ownership
==================== ==========================================================================================

Public API::

    download(client, bucket, prefix, dest, **options) -> result dict
    download_object(client, bucket, key, dest_path, expected_etag=None, expected_size=None, object_info=None,
                    **options) -> result dict      (one object, no listing)
    upload(client, bucket, prefix, source, **options) -> result dict
    sync(client, direction, bucket, prefix, path, **options) -> result dict
    object_manifest(client, bucket, prefix="", include=None, exclude=None, workers=4) -> list of dicts

Options of download/upload: ``include``/``exclude`` (glob lists, matched against the relative path and the
file name), ``delete`` (default False), ``dry_run``, ``workers`` (parallel transfers), ``multipart_threshold``
and ``part_size`` (bytes), ``progress`` (``callback(done_bytes, total_bytes, key)``, called from worker threads),
``on_file`` (``callback({key, size, seconds, resumed})`` once per transferred file, from worker threads),
``bwlimit`` (bytes per second for the whole run, all workers together, 0 = no limit: a token bucket that the
transfer loops draw from before each chunk goes to or comes from the network);
download only: ``owner``/``group`` (chown of downloaded files and created folders), ``reserve_bytes`` (free space to
keep); upload only: ``metadata`` (dict of user metadata), ``original_filename`` (record the file name in
``x-amz-meta-original-filename``, default True).

How it works:

* **One listing decides.** Each side keeps a small state file ``.visionsuit-sync.json`` in the local directory
  recording, per bucket/prefix, relative path -> key, size, mtime (ns) and ETag. A file whose size, mtime and the
  listing's ETag match its record is skipped without any request besides the listing. Without a record the local
  content is hashed (MD5 for single-part ETags, the multipart ETag for ``<md5>-<parts>`` ETags, guessing the part
  size from the part count) and a match is adopted into the state.
* **Downloads** go to a hidden temp file ``.<name>.vsync-part`` in the destination folder. An object up to
  ``multipart_threshold`` with a plain (MD5) ETag costs one GET and nothing else: the listing gave its size and
  ETag, and the GET (``x-amz-checksum-mode: ENABLED``) returns its checksum headers. Bigger objects (and multipart
  ETags) take a HEAD first, then parallel ranged GETs written with ``os.pwrite`` into a preallocated temp file.
  Page-aligned chunks are written with ``O_DIRECT`` where the file system allows it (no page cache to fill and
  flush; memory use is one reused, page-aligned 1 MiB buffer per worker). Every byte is verified before the atomic
  rename to the final name, as it streams, without reading the file back: the size, and the object's
  full-object ``x-amz-checksum-crc32/sha256/sha1`` when it has one (what :func:`upload` stores: CRC32; ranged
  downloads compute each range's CRC32 in its worker and combine them), else the MD5 (single-part ETag) or the
  multipart ETag (the ranges then follow the object's parts, part size from ``HEAD ?partNumber=1``, and each part's
  MD5 is computed while it streams). A failed check removes the temp file and raises (exit code 4 in the node
  commands). Each file is fsynced once before its rename, and the folders after the renames.
* **Resume.** A ranged download records its written ranges and the ETag in ``.<name>.vsync-part.json``, and which
  of them are flushed to disk (``fdatasync`` every 256 MiB and when a run fails or is interrupted, instead of an
  fsync per range). The next run fetches only the missing ranges if the ETag is unchanged (else it starts over):
  after a killed process all written ranges count, after a restart of the machine (another boot id) only the
  flushed ones. Resumed ranges are hashed from the temp file, so the final check covers what is on disk: nothing
  ever appears under the final name before it is complete and verified.
* **Delete** (off by default) removes local files that left the bucket, but only files the sync manages (recorded
  in the state file, and unchanged since: same size and mtime; a file changed by hand, or put back where the sync
  had deleted one, is left alone and forgotten), never temp or state files; for uploads it deletes remote objects
  under the prefix whose local file is gone.
* **The state file is an optimisation.** When it cannot be written (a full disk, a read-only folder) the run still
  succeeds and its result carries a line in ``warnings``; the previous file stays, and the next run hashes (and
  adopts) what it no longer vouches for instead of skipping it, downloads nothing that is complete again, and
  deletes nothing the stale file names unless it is unchanged.
* **Safety.** Keys that would escape the destination (``..``, ``.`` or empty segments, absolute, NUL, not UTF-8,
  reserved temp/state names) make the whole sync refuse before anything is transferred.
* **ComfyUI's placeholders** (``output/_output_images_will_be_put_here``, ``models/*/put_*_here``,
  ``input/example.png``: :data:`.keys.COMFYUI_PLACEHOLDERS`) are not the sync's: never uploaded, recorded,
  downloaded over nor deleted; objects named like them are left out of either direction.
* **Uploads** send a CRC32 that the server checks (``x-amz-checksum-crc32``) and keeps as the object's full-object
  checksum; above ``multipart_threshold`` they use multipart (parts in parallel, each with its CRC32, the upload
  created as ``CRC32``/``FULL_OBJECT`` and completed with the combined CRC32 of the whole file). They set
  ``Content-Type`` from the file name and skip files whose MD5/multipart ETag matches the listing.

The result dict: ``direction, bucket, prefix, path, dry_run, changed, files, bytes, skipped, deleted, seconds,
transferred`` (keys), ``deleted_paths``, ``resumed`` (keys), ``adopted`` (relative paths found identical
without a state record), ``vanished`` (keys that disappeared between the listing and their transfer),
``plan`` (list of ``{action, key, path, size}``), ``before``/``after`` (sorted relative paths of the target side),
``requests`` (HTTP requests by operation) and ``warnings`` (lines about a run that did its work all the same: the
state file could not be written).
In dry-run mode ``files``/``bytes``/``transferred``/``deleted`` describe what would be done.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import GpuWorkerError
from .download import download, download_object
from .keys import matches, normalize_prefix
from .transfer import DEFAULT_WORKERS, Pool, list_remote
from .upload import ORIGINAL_FILENAME, upload


def sync(client, direction, bucket, prefix, path, **options):
    """``direction``: ``download`` (bucket -> path) or ``upload`` (path -> bucket)."""
    if direction == "download":
        return download(client, bucket, prefix, path, **options)
    if direction == "upload":
        options.pop("owner", None)
        options.pop("group", None)
        options.pop("reserve_bytes", None)
        return upload(client, bucket, prefix, path, **options)
    raise GpuWorkerError("direction must be 'download' or 'upload', not %r" % direction, field="direction")


def object_manifest(client, bucket, prefix="", include=None, exclude=None, workers=DEFAULT_WORKERS):
    """List the objects under ``bucket/prefix`` with their metadata (one HEAD per object, in parallel).

    Returns dicts: ``name`` (path relative to the prefix), ``key``, ``size``, ``etag``, ``last_modified``,
    ``content_type``, ``original_filename`` (from ``x-amz-meta-original-filename``, else the file name).
    """
    prefix = normalize_prefix(prefix)
    remote = list_remote(client, bucket, prefix, strict=False)
    items = [remote[rel] for rel in sorted(remote) if matches(rel, include, exclude)]
    out = [None] * len(items)
    pool = Pool(workers)

    def head(i, obj):
        info = client.head_object(bucket, obj["key"], checksum_mode=False)
        out[i] = {
            "name": obj["rel"], "key": obj["key"], "size": obj["size"], "etag": obj["etag"],
            "last_modified": obj["last_modified"], "content_type": info.get("content_type"),
            "original_filename": (info.get("metadata") or {}).get(ORIGINAL_FILENAME) or obj["rel"].rsplit("/", 1)[-1],
        }

    for i, obj in enumerate(items):
        pool.submit(head, i, obj)
    pool.wait()
    err = pool.first_error()
    if err is not None:
        raise err
    return out


__all__ = ["sync", "object_manifest", "download", "download_object", "upload"]
