# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The S3 sync engine: bucket/prefix <-> local directory, keeping sub-folders.

Public API::

    download(client, bucket, prefix, dest, **options) -> result dict
    download_object(client, bucket, key, dest_path, expected_etag=None, expected_size=None, object_info=None,
                    **options) -> result dict      (one object, no listing)
    upload(client, bucket, prefix, source, **options) -> result dict
    sync(client, direction, bucket, prefix, path, **options) -> result dict
    object_manifest(client, bucket, prefix="", include=None, exclude=None, workers=4) -> list of dicts
    key_to_relpath(key, prefix="") -> str | None     (raises GpuWorkerError on unsafe keys)
    relpath_to_key(relpath, prefix="") -> str
    normalize_prefix(prefix) -> str
    file_matches_etag(path, etag, size=None, part_sizes=()) -> bool
    file_md5(path) / file_multipart_etag(path, part_size) -> str
    part_size_candidates(size, parts, preferred=()) -> list of int
    crc32_combine(crc1, crc2, len2) -> int

Options of download/upload: ``include``/``exclude`` (glob lists, matched against the relative path and the
file name), ``delete`` (default False), ``dry_run``, ``workers`` (parallel transfers), ``multipart_threshold``
and ``part_size`` (bytes), ``progress`` (``callback(done_bytes, total_bytes, key)``, called from worker threads);
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
  in the state file), never temp or state files; for uploads it deletes remote objects under the prefix whose local
  file is gone.
* **Safety.** Keys that would escape the destination (``..``, ``.`` or empty segments, absolute, NUL, reserved
  temp/state names) make the whole sync refuse before anything is transferred.
* **Uploads** send a CRC32 that the server checks (``x-amz-checksum-crc32``) and keeps as the object's full-object
  checksum; above ``multipart_threshold`` they use multipart (parts in parallel, each with its CRC32, the upload
  created as ``CRC32``/``FULL_OBJECT`` and completed with the combined CRC32 of the whole file). They set
  ``Content-Type`` from the file name and skip files whose MD5/multipart ETag matches the listing.

The result dict: ``direction, bucket, prefix, path, dry_run, changed, files, bytes, skipped, deleted, seconds,
transferred`` (keys), ``deleted_paths``, ``resumed`` (keys), ``adopted`` (relative paths found identical
without a state record), ``vanished`` (keys that disappeared between the listing and their transfer),
``plan`` (list of ``{action, key, path, size}``), ``before``/``after`` (sorted relative paths of the target side)
and ``requests`` (HTTP requests by operation).
In dry-run mode ``files``/``bytes``/``transferred``/``deleted`` describe what would be done.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import errno
import fnmatch
import hashlib
import json
import mimetypes
import mmap
import os
import shutil
import stat
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

from ..errors import GpuWorkerError, TransientError
from .client import Cancelled, FileSlice, crc32_b64

MiB = 1024 * 1024
STATE_FILE = ".visionsuit-sync.json"
TEMP_SUFFIX = ".vsync-part"
SIDECAR_SUFFIX = ".vsync-part.json"
DEFAULT_WORKERS = 4
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_PART_SIZE = 16 * MiB
MIN_UPLOAD_PART_SIZE = 5 * MiB
MAX_PARTS = 10000
INTEGRITY_EXIT_CODE = 4
READ_CHUNK = MiB
FLUSH_BYTES = 256 * MiB
DIRECT_ALIGN = 4096
DIRECT_MIN_SIZE = 256 * 1024
MAX_INLINE_PART = 256 * MiB
COMMON_PART_SIZES_MIB = (5, 6, 8, 10, 15, 16, 25, 32, 50, 64, 100, 128, 256, 512, 1024)
ORIGINAL_FILENAME = "original-filename"
_STATE_VERSION = 1


# ---------------------------------------------------------------------------------------------- paths
def normalize_prefix(prefix):
    """``/a/b/`` -> ``a/b`` (a folder-like prefix; empty means the whole bucket)."""
    return (prefix or "").strip().strip("/")


def _is_reserved(name):
    return name == STATE_FILE or name.startswith(STATE_FILE + ".") or name.endswith(TEMP_SUFFIX) \
        or name.endswith(SIDECAR_SUFFIX)


def key_to_relpath(key, prefix=""):
    """Map an object key under ``prefix`` to a safe relative POSIX path.

    Returns None for folder markers (keys ending in ``/``). Raises GpuWorkerError for keys that would
    escape the destination or clash with the sync's own files.
    """
    prefix = normalize_prefix(prefix)
    if "\x00" in key:
        raise GpuWorkerError("refusing object key %r: it contains a NUL byte" % key, field="key",
                             hint="rename or delete the object in the bucket")
    if prefix:
        if not key.startswith(prefix + "/"):
            raise GpuWorkerError("object key %r is not under prefix %r" % (key, prefix), field="key")
        rest = key[len(prefix) + 1:]
    else:
        rest = key
    if rest == "" or rest.endswith("/"):
        if rest.startswith("/") or "/../" in "/" + rest or "/./" in "/" + rest:
            raise GpuWorkerError("refusing object key %r: it would escape the destination folder" % key,
                                 field="key", hint="rename or delete the object in the bucket")
        return None
    if rest.startswith("/") or rest.startswith("\\"):
        raise GpuWorkerError("refusing object key %r: it is an absolute path" % key, field="key",
                             hint="rename or delete the object in the bucket")
    segments = rest.split("/")
    for seg in segments:
        if seg in ("..", "."):
            raise GpuWorkerError("refusing object key %r: it would escape the destination folder ('%s' segment)"
                                 % (key, seg), field="key", hint="rename or delete the object in the bucket")
        if seg == "":
            raise GpuWorkerError("refusing object key %r: it has an empty path segment ('//')" % key, field="key",
                                 hint="rename or delete the object in the bucket")
        if _is_reserved(seg):
            raise GpuWorkerError("refusing object key %r: '%s' is a name reserved for the sync's own files"
                                 % (key, seg), field="key", hint="rename the object in the bucket")
    return "/".join(segments)


def relpath_to_key(relpath, prefix=""):
    prefix = normalize_prefix(prefix)
    rel = relpath.replace(os.sep, "/")
    return prefix + "/" + rel if prefix else rel


def safe_join(root, relpath):
    """Join and double-check (lexically) that the result stays inside ``root``."""
    root_abs = os.path.abspath(root)
    path = os.path.normpath(os.path.join(root_abs, *relpath.split("/")))
    if os.path.commonpath([root_abs, path]) != root_abs or path == root_abs:
        raise GpuWorkerError("refusing path %r: it escapes %s" % (relpath, root), field="key")
    return path


def _matches(rel, include, exclude):
    base = rel.rsplit("/", 1)[-1]
    if include and not any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(base, p) for p in include):
        return False
    if exclude and any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(base, p) for p in exclude):
        return False
    return True


# ---------------------------------------------------------------------------------------------- hashing
def etag_part_count(etag):
    """Part count of a multipart ETag (``<md5>-<n>``), 0 for a plain MD5 ETag, None if neither."""
    etag = (etag or "").strip('"')
    if len(etag) == 32 and _is_hex(etag):
        return 0
    if "-" in etag:
        head, tail = etag.split("-", 1)
        if len(head) == 32 and _is_hex(head) and tail.isdigit() and int(tail) > 0:
            return int(tail)
    return None


def _is_hex(text):
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def part_size_candidates(size, parts, preferred=()):
    """Part sizes that split ``size`` bytes into exactly ``parts`` parts, likeliest first."""
    if parts <= 0 or size <= 0:
        return []
    out = []
    exact = -(-size // parts)
    guesses = list(preferred) + [m * MiB for m in COMMON_PART_SIZES_MIB] + [exact, -(-exact // MiB) * MiB]
    for p in guesses:
        if p and p > 0 and -(-size // p) == parts and p not in out:
            out.append(p)
    return out


class _PartHasher:
    def __init__(self, part_size):
        self.part_size = part_size
        self.current = hashlib.md5()  # noqa: S324 - S3 ETag
        self.filled = 0
        self.digests = []

    def update(self, data):
        view = memoryview(data)
        while len(view):
            take = min(len(view), self.part_size - self.filled)
            self.current.update(view[:take])
            self.filled += take
            view = view[take:]
            if self.filled == self.part_size:
                self.digests.append(self.current.digest())
                self.current = hashlib.md5()  # noqa: S324 - S3 ETag
                self.filled = 0

    def etag(self):
        digests = self.digests + ([self.current.digest()] if self.filled else [])
        return "%s-%d" % (hashlib.md5(b"".join(digests)).hexdigest(), len(digests))  # noqa: S324


class _Checksum:
    """A full-object S3 checksum (sha256, sha1, crc32) as base64, computed incrementally."""

    SUPPORTED = ("sha256", "sha1", "crc32")

    def __init__(self, algo):
        self.algo = algo
        self.crc = 0
        self.h = hashlib.new(algo) if algo in ("sha256", "sha1") else None

    def update(self, data):
        if self.h is not None:
            self.h.update(data)
        else:
            self.crc = zlib.crc32(data, self.crc)

    def value(self):
        if self.h is not None:
            return base64.b64encode(self.h.digest()).decode("ascii")
        return base64.b64encode((self.crc & 0xFFFFFFFF).to_bytes(4, "big")).decode("ascii")


class _Crc32:
    def __init__(self):
        self.crc = 0

    def update(self, data):
        self.crc = zlib.crc32(data, self.crc)


_CRC_POLY = 0xEDB88320


def _crc_multmodp(a, b):
    """a * b modulo the CRC-32 polynomial (reflected bit order, as in zlib's crc32.c)."""
    m = 1 << 31
    p = 0
    while m:
        if a & m:
            p ^= b
            if not a & (m - 1):
                break
        m >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1
    return p


def _crc_x2n_table():
    table = []
    p = 1 << 30  # x^1
    for _i in range(32):
        table.append(p)
        p = _crc_multmodp(p, p)
    return table


_CRC_X2N = _crc_x2n_table()


def crc32_combine(crc1, crc2, len2):
    """CRC32 of A+B from ``crc1`` = crc32(A), ``crc2`` = crc32(B) and ``len2`` = len(B) (zlib's crc32_combine)."""
    p = 1 << 31  # x^0
    k = 3  # x^(8 * len2): bytes to bits
    n = len2
    while n:
        if n & 1:
            p = _crc_multmodp(_CRC_X2N[k & 31], p)
        n >>= 1
        k += 1
    return _crc_multmodp(p, crc1 & 0xFFFFFFFF) ^ (crc2 & 0xFFFFFFFF)


def usable_checksum(checksums, checksum_type=None):
    """(algorithm, base64 value) of a full-object checksum we can recompute, or None."""
    if (checksum_type or "FULL_OBJECT").upper() != "FULL_OBJECT":
        return None
    for algo in _Checksum.SUPPORTED:
        value = (checksums or {}).get(algo)
        if value and "-" not in value:
            return algo, value
    return None


class Verifier:
    """Streaming verification of an object's bytes against its checksum header or ETag."""

    def __init__(self, etag, size, checksums=None, checksum_type=None, part_sizes=()):
        self.etag = (etag or "").strip('"')
        self.size = size
        self.seen = 0
        self.checksum = None
        self.expected_checksum = None
        self.md5 = None
        self.part_hashers = []
        usable = usable_checksum(checksums, checksum_type)
        if usable:
            self.checksum = _Checksum(usable[0])
            self.expected_checksum = usable[1]
        if self.checksum is None:
            parts = etag_part_count(self.etag)
            if parts == 0:
                self.md5 = hashlib.md5()  # noqa: S324 - S3 ETag
            elif parts:
                self.part_hashers = [_PartHasher(p) for p in part_size_candidates(size, parts, part_sizes)]

    @property
    def method(self):
        if self.checksum is not None:
            return "x-amz-checksum-" + self.checksum.algo
        if self.md5 is not None:
            return "md5"
        if self.part_hashers:
            return "multipart-etag"
        return "size"

    def update(self, data):
        self.seen += len(data)
        if self.checksum is not None:
            self.checksum.update(data)
        elif self.md5 is not None:
            self.md5.update(data)
        for h in self.part_hashers:
            h.update(data)

    def result(self):
        """(ok, explanation)."""
        if self.size is not None and self.seen != self.size:
            return False, "size %d instead of %d" % (self.seen, self.size)
        if self.checksum is not None:
            got = self.checksum.value()
            return got == self.expected_checksum, "%s %s instead of %s" % (
                self.method, got, self.expected_checksum)
        if self.md5 is not None:
            got = self.md5.hexdigest()
            return got == self.etag, "MD5 %s instead of ETag %s" % (got, self.etag)
        if self.part_hashers:
            got = [h.etag() for h in self.part_hashers]
            return self.etag in got, "multipart ETag %s instead of %s" % (got[0] if got else "?", self.etag)
        return True, "size only"

    def feed_file(self, path, cancelled=None):
        with open(path, "rb") as f:
            while True:
                if cancelled is not None and cancelled():
                    raise Cancelled("verification of %s cancelled" % path)
                data = f.read(READ_CHUNK)
                if not data:
                    break
                self.update(data)


def file_md5(path):
    h = hashlib.md5()  # noqa: S324 - S3 ETag
    with open(path, "rb") as f:
        for data in iter(lambda: f.read(READ_CHUNK), b""):
            h.update(data)
    return h.hexdigest()


def file_multipart_etag(path, part_size):
    h = _PartHasher(part_size)
    with open(path, "rb") as f:
        for data in iter(lambda: f.read(READ_CHUNK), b""):
            h.update(data)
    return h.etag()


def file_matches_etag(path, etag, size=None, part_sizes=()):
    """Whether the local file has this (single-part or multipart) ETag; False when the ETag is opaque."""
    if size is None:
        size = os.path.getsize(path)
    parts = etag_part_count(etag)
    if parts is None:
        return False
    v = Verifier(etag, size, part_sizes=part_sizes)
    v.feed_file(path)
    return v.result()[0]


# ---------------------------------------------------------------------------------------------- state
class SyncState:
    """``<dir>/.visionsuit-sync.json``: per target (``bucket/prefix``) relative path -> key, size, mtime_ns, etag."""

    def __init__(self, root, target):
        self.root = root
        self.path = os.path.join(root, STATE_FILE)
        self.target = target
        self.lock = threading.Lock()
        self.doc = {"version": _STATE_VERSION, "targets": {}}
        self.dirty = False
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
        with self.lock:
            if not self.dirty:
                return
            tmp = "%s.%d.tmp" % (self.path, os.getpid())
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    # dumps (C encoder) + one write: json.dump encodes in Python, chunk by chunk
                    f.write(json.dumps(self.doc, sort_keys=True, separators=(",", ":")))
                os.replace(tmp, self.path)
                self.dirty = False
            except OSError:
                # the state is an optimisation: a read-only source folder only costs re-hashing next time
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


def entry_matches(entry, st, etag):
    return bool(entry) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns \
        and entry.get("etag") == etag


# ---------------------------------------------------------------------------------------------- pool
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


class _Pool:
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


# ---------------------------------------------------------------------------------------------- engine
class _Run:
    """Shared bookkeeping of one download/upload run."""

    def __init__(self, client, direction, bucket, prefix, path, progress, dry_run):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.lock = threading.Lock()
        self.progress_cb = progress
        self.done_bytes = 0
        self.total_bytes = 0
        self.started = time.time()
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

    def transferred(self, key, nbytes, resumed=False):
        with self.lock:
            self.result["files"] += 1
            self.result["bytes"] += nbytes
            self.result["transferred"].append(key)
            if resumed:
                self.result["resumed"].append(key)

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


def _check_workers(workers, part_size, multipart_threshold):
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


def _resolve_owner(owner, group):
    uid = gid = -1
    if owner not in (None, ""):
        import pwd
        try:
            uid = int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise GpuWorkerError("unknown user %r" % owner, field="owner", hint="create the user or fix owner")
    if group not in (None, ""):
        import grp
        try:
            gid = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise GpuWorkerError("unknown group %r" % group, field="group", hint="create the group or fix group")
    return uid, gid


def _list_remote(client, bucket, prefix, strict):
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


def _walk_local(root, include=None, exclude=None):
    """relative path -> os.stat_result of regular files under root (temp/state files excluded)."""
    found = {}
    if not os.path.isdir(root):
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if _is_reserved(name) or (name.startswith(".") and (TEMP_SUFFIX in name or STATE_FILE in name)):
                continue
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if _matches(rel, include, exclude):
                found[rel] = st
    return found


def _tmp_names(path):
    folder, name = os.path.split(path)
    return os.path.join(folder, "." + name + TEMP_SUFFIX), os.path.join(folder, "." + name + SIDECAR_SUFFIX)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read_sidecar(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def _write_json_atomic(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc))
    os.replace(tmp, path)


_BOOT_ID = []


def _boot_id():
    """This boot's id (Linux), to tell a crashed process (its written data is still in the page cache) from a
    restarted machine (only flushed data survived); None elsewhere."""
    if not _BOOT_ID:
        try:
            with open("/proc/sys/kernel/random/boot_id", "r", encoding="ascii") as f:
                _BOOT_ID.append(f.read().strip() or None)
        except OSError:
            _BOOT_ID.append(None)
    return _BOOT_ID[0]


def _free_space(path):
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return shutil.disk_usage(probe).free


def _human(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return str(n)  # pragma: no cover


# ---------------------------------------------------------------------------------------------- download
def _pwrite_all(fd, data, pos):
    view = memoryview(data)
    while len(view):
        n = os.pwrite(fd, view, pos)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[n:]
        pos += n


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the file itself is already durable
    finally:
        os.close(fd)


_THREAD = threading.local()


def _thread_buffer():
    """This thread's page-aligned receive buffer (reused for every chunk: no allocation per chunk)."""
    buf = getattr(_THREAD, "buffer", None)
    if buf is None:
        buf = _THREAD.buffer = mmap.mmap(-1, READ_CHUNK)
    return buf


class _FileWriter:
    """``pwrite`` into a temp file. Page-aligned chunks (offset and length; the receive buffer is page-aligned) go
    through an ``O_DIRECT`` descriptor when the file system supports it: the data goes to the disk without filling
    the page cache, so no dirty pages pile up for the final fsync and no fresh memory has to be faulted in (on a
    VM that costs more than the network). Anything else, and every chunk after an ``EINVAL``, is written through
    the page cache."""

    def __init__(self, path, direct, create=False):
        self.path = path
        self.fd = self.dfd = None
        flags = os.O_WRONLY | (os.O_CREAT | os.O_TRUNC if create else 0)
        if direct and hasattr(os, "O_DIRECT"):
            try:
                self.dfd = os.open(path, flags | os.O_DIRECT, 0o644)
            except OSError:
                self.dfd = None
        if self.dfd is None:
            self.fd = os.open(path, flags, 0o644)

    def _buffered(self):
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY)  # opened when first needed (an unaligned tail, a fallback)
        return self.fd

    def sync(self):
        """fsync; returns the file's stat."""
        fd = self.fd if self.fd is not None else self.dfd
        os.fsync(fd)
        return os.fstat(fd)

    def write(self, pos, data):
        view = memoryview(data)
        if self.dfd is not None and not pos % DIRECT_ALIGN and len(view) >= DIRECT_ALIGN:
            cut = len(view) - len(view) % DIRECT_ALIGN
            try:
                _pwrite_all(self.dfd, view[:cut], pos)
                pos += cut
                view = view[cut:]
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                self._buffered()
                os.close(self.dfd)  # unaligned memory or a file system without O_DIRECT: page cache from now on
                self.dfd = None
        if len(view):
            _pwrite_all(self._buffered(), view, pos)

    def close(self):
        for fd in (self.dfd, self.fd):
            if fd is not None:
                os.close(fd)
        self.fd = self.dfd = None


class _Download:
    """One object: temp file, streamed verification, fsync, atomic rename, resumable ranges.

    Requests: objects up to ``multipart_threshold`` with a plain (MD5) ETag take one GET and nothing else (its reply
    carries the ``x-amz-checksum-*`` headers); bigger objects, multipart ETags and ``refresh`` take a HEAD first
    (plus ``HEAD ?partNumber=1`` for a multipart ETag without a usable full-object checksum: the part size).

    Verification of ranged downloads happens while the ranges stream, without reading the file back:

    * ``crc32``: the object has a full-object CRC32 (what :func:`upload` stores); each range's CRC32 is computed in
      its worker and the ranges' values are combined in order (:func:`crc32_combine`);
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
        self.tmp, self.sidecar = _tmp_names(self.path)
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
        _unlink(self.sidecar)
        if self.info is not None and etag_part_count(self.etag) and not self._checksum(self.info):
            psize = self._object_part_size()
            if psize:
                self.part_sizes.insert(0, psize)
        holder = [self._verifier(self.info) if self.info is not None or not self.size else None]
        out = _FileWriter(self.tmp, self.size >= DIRECT_MIN_SIZE, create=True)
        ok = False
        try:
            if self.size:
                def on_headers(info):
                    if holder[0] is None:
                        holder[0] = self._verifier(info)

                def write(pos, data):
                    out.write(pos, data)
                    holder[0].update(data)
                    self.run.progress(len(data), self.key)

                self.client.get_object(self.bucket, self.key, write, etag=self.etag, cancelled=self.pool.cancelled,
                                       checksum_mode=holder[0] is None, on_headers=on_headers,
                                       buffer=_thread_buffer())
            st = out.sync()
            ok = True
        finally:
            out.close()
            if not ok:
                _unlink(self.tmp)
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
        side = _read_sidecar(self.sidecar)
        done = set()
        if side and side.get("etag") == self.etag and side.get("size") == size and side.get("range_size") == rsize \
                and os.path.isfile(self.tmp) and os.path.getsize(self.tmp) == size:
            done = {int(i) for i in side.get("done", []) if 0 <= int(i) < len(self.ranges)}
            flushed = {int(i) for i in side.get("flushed", side.get("done", [])) if int(i) in done}
            if side.get("boot_id") != _boot_id():
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
                        raise GpuWorkerError("no space left for %s (%s)" % (self.path, _human(size)),
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
        _write_json_atomic(self.sidecar, {"key": self.key, "etag": self.etag, "size": self.size,
                                          "range_size": self.rsize, "done": sorted(self.done),
                                          "flushed": sorted(self.flushed), "boot_id": _boot_id()})

    def _range(self, rng):
        index, start, end = rng
        mode = self.mode
        h = {"next": start, "crc": 0, "md5": hashlib.md5() if mode == "parts" else None}  # noqa: S324 - S3 ETag
        out = _FileWriter(self.tmp, True)
        try:
            def write(pos, data):
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
                                   cancelled=self.pool.cancelled, buffer=_thread_buffer())
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
                    h = _Crc32() if self.mode == "crc32" else hashlib.md5()  # noqa: S324 - S3 ETag
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
            _unlink(self.tmp)
            _unlink(self.sidecar)
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
            _unlink(self.sidecar)
        self.opts["state"].put(self.rel, self.key, st, self.etag)
        self.run.transferred(self.key, self.size, self.resumed)


def _fsync_dirs(folders):
    for folder in sorted(folders):
        _fsync_dir(folder)


def _needed_space(transfers):
    """Bytes still to come (the recorded ranges of matching temp files excluded)."""
    needed = 0
    for t in transfers:
        tmp, side = _tmp_names(t["path"])
        doc = _read_sidecar(side)
        if doc and doc.get("etag") == t["etag"] and doc.get("size") == t["size"] and os.path.isfile(tmp):
            needed += max(0, t["size"] - len(doc.get("done", [])) * int(doc.get("range_size") or 0))
        else:
            needed += t["size"]
    return needed


def _check_space(dest, needed, reserve_bytes):
    free = _free_space(dest)
    if needed + reserve_bytes > free:
        raise GpuWorkerError("not enough free space in %s: the sync needs %s, %s are free" % (
            dest, _human(needed + reserve_bytes), _human(free)), field="path",
            hint="free up space or sync to a larger disk", details={"needed": needed, "free": free})


def _run_downloads(run, transfers, opts, workers):
    """Run the transfers in a pool; makes the renames durable (folder fsync) and keeps partial ones resumable."""
    pool = _Pool(workers, opts.get("nice"))
    jobs = [_Download(run, pool, t, opts) for t in transfers]
    try:
        for job in jobs:
            pool.submit(job.start)
        pool.wait()
    finally:
        if pool.errors or pool.cancelled():
            for job in jobs:
                job.interrupted()
        _fsync_dirs(opts["renamed_in"])
        opts["state"].save()
    err = pool.first_error()
    if err is not None:
        _raise_run_error(err, run, "download")
    return jobs


def download(client, bucket, prefix, dest, include=None, exclude=None, delete=False, dry_run=False,
             workers=DEFAULT_WORKERS, multipart_threshold=DEFAULT_MULTIPART_THRESHOLD, part_size=DEFAULT_PART_SIZE,
             owner=None, group=None, progress=None, reserve_bytes=0, nice=0):
    """Mirror ``bucket/prefix`` into the folder ``dest`` (see the module docstring). Returns the result dict.

    ``nice``: how much lower the transfer threads run (CPU priority, Linux), for callers that must stay responsive.
    """
    workers, part_size, multipart_threshold = _check_workers(workers, part_size, multipart_threshold)
    prefix = normalize_prefix(prefix)
    dest = os.path.abspath(dest)
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise GpuWorkerError("destination %s is not a folder" % dest, field="path")
    uid, gid = _resolve_owner(owner, group)
    run = _Run(client, "download", bucket, prefix, dest, progress, dry_run)
    remote = _list_remote(client, bucket, prefix, strict=True)
    remote = {rel: obj for rel, obj in remote.items() if _matches(rel, include, exclude)}
    state = SyncState(dest, "%s/%s" % (bucket, prefix))
    local_all = _walk_local(dest)
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
        if not _matches(rel, include, exclude):
            continue
        if rel in local_all:
            if delete:
                deletes.append(rel)
        elif not dry_run:
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
        _check_space(dest, _needed_space(transfers), reserve_bytes)
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
        _prune_empty_dirs(os.path.dirname(path), dest)
    state.save()
    return run.finish()


def download_object(client, bucket, key, dest_path, expected_etag=None, expected_size=None, object_info=None,
                    workers=DEFAULT_WORKERS, multipart_threshold=DEFAULT_MULTIPART_THRESHOLD,
                    part_size=DEFAULT_PART_SIZE, owner=None, group=None, progress=None, reserve_bytes=0, nice=0):
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
    workers, part_size, multipart_threshold = _check_workers(workers, part_size, multipart_threshold)
    key_to_relpath(key)  # refuses unsafe keys (NUL, '..', reserved names) like download() does
    dest_path = os.path.abspath(dest_path)
    folder, name = os.path.split(dest_path)
    if not name or _is_reserved(name):
        raise GpuWorkerError("refusing destination %s: not a plain file name" % dest_path, field="path")
    uid, gid = _resolve_owner(owner, group)
    prefix = key.rpartition("/")[0]
    run = _Run(client, "download", bucket, prefix, folder, progress, False)
    run.result.update({"key": key, "etag": expected_etag, "size": expected_size})
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
            run.result["skipped"] = 1
            run.result["adopted"].append(name)
            return run.finish()
    run.result["plan"] = [{"action": "download", "key": key, "path": dest_path, "size": expected_size}]
    run.total_bytes = expected_size
    _check_space(folder, _needed_space([item]), reserve_bytes)
    opts = {"part_size": part_size, "multipart_threshold": multipart_threshold, "uid": uid, "gid": gid,
            "state": state, "known_dirs": set(), "renamed_in": set(), "pinned": True, "nice": nice}
    job = _run_downloads(run, [item], opts, workers)[0]
    run.result.update({"etag": job.etag, "size": job.size})
    return run.finish()


def _prune_empty_dirs(folder, root):
    while folder != root and folder.startswith(root + os.sep):
        try:
            os.rmdir(folder)
        except OSError:
            return
        folder = os.path.dirname(folder)


def _raise_run_error(err, run, what):
    done = run.result["files"]
    if isinstance(err, GpuWorkerError):
        err.details = dict(err.details or {})
        err.details.setdefault("transferred", sorted(run.result["transferred"]))
        if done and "(%d file" not in err.message:
            err.message = "%s (%d file(s) completed before the failure)" % (err.message, done)
        raise err
    if isinstance(err, KeyboardInterrupt):
        raise err
    if isinstance(err, OSError):
        raise GpuWorkerError("%s failed: %s" % (what, err), hint="check permissions and free space")
    raise err


# ---------------------------------------------------------------------------------------------- upload
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
        ctype, meta = self.headers()
        if self.size <= self.opts["multipart_threshold"]:
            body = FileSlice(self.path, 0, self.size)
            crc = 0
            for data in body.chunks():
                crc = zlib.crc32(data, crc)
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
           metadata=None, original_filename=True, progress=None, nice=0):
    """Mirror the folder ``source`` into ``bucket/prefix`` (see the module docstring). Returns the result dict.
    ``nice`` as for :func:`download`."""
    workers, part_size, multipart_threshold = _check_workers(workers, part_size, multipart_threshold)
    prefix = normalize_prefix(prefix)
    source = os.path.abspath(source)
    if not os.path.isdir(source):
        raise GpuWorkerError("source folder %s does not exist" % source, field="path",
                             hint="create it or pass the right folder")
    run = _Run(client, "upload", bucket, prefix, source, progress, dry_run)
    local = _walk_local(source, include, exclude)
    remote = _list_remote(client, bucket, prefix, strict=False)
    remote = {rel: obj for rel, obj in remote.items() if _matches(rel, include, exclude)}
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
    pool = _Pool(workers, nice)
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
        _raise_run_error(err, run, "upload")
    if deletes:
        keys = [remote[rel]["key"] for rel in deletes]
        client.delete_objects(bucket, keys)
        run.result["deleted"] = len(keys)
        run.result["deleted_paths"] = keys
    return run.finish()


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


# ---------------------------------------------------------------------------------------------- manifest
def object_manifest(client, bucket, prefix="", include=None, exclude=None, workers=DEFAULT_WORKERS):
    """List the objects under ``bucket/prefix`` with their metadata (one HEAD per object, in parallel).

    Returns dicts: ``name`` (path relative to the prefix), ``key``, ``size``, ``etag``, ``last_modified``,
    ``content_type``, ``original_filename`` (from ``x-amz-meta-original-filename``, else the file name).
    """
    prefix = normalize_prefix(prefix)
    remote = _list_remote(client, bucket, prefix, strict=False)
    items = [remote[rel] for rel in sorted(remote) if _matches(rel, include, exclude)]
    out = [None] * len(items)
    pool = _Pool(workers)

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


__all__ = ["download", "download_object", "upload", "sync", "object_manifest", "key_to_relpath", "relpath_to_key",
           "normalize_prefix", "file_matches_etag", "file_md5", "file_multipart_etag", "part_size_candidates",
           "etag_part_count", "crc32_combine", "Verifier", "SyncState", "STATE_FILE", "TEMP_SUFFIX", "SIDECAR_SUFFIX",
           "TransientError"]
