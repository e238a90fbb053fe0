# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Assets of a job: download into the cache with the sync engine, surface them to ComfyUI, clean up.

* **Cache.** Each object is mirrored to ``<state_dir>/cache/<bucket>/<key>`` by
  :func:`visionsuit_gpuworker.s3.download.download_object` (no listing: the HEAD that reads the metadata also gives
  the ETag, size and checksum; parallel ranged GETs, verified, resumable, atomic rename). A cached copy whose ETag
  still matches is reused without any GET. The cache is bounded by
  ``jobs.cache_max_bytes`` (least recently used files go first; files in use are never evicted).
* **Names.** ComfyUI sees each model under the file name recorded at upload in the object's metadata
  ``x-amz-meta-original-filename`` (what ``test-upload-models`` writes), whatever the key is (hashed ids
  included); see :func:`comfy_name` for the rules. Two assets of one job with the same name, or a name taken by
  a file the agent does not own, get a suffix (``name_2.safetensors``): nothing is ever overwritten.
* **Surfacing.** A symbolic link (default) or a copy in ComfyUI's checkpoints/loras folder, created atomically
  under its final name (``symlink()``/``link()`` fail rather than replace), so ComfyUI never sees a partial
  file. Every surfaced file is recorded in the job store before it is created; clean-up removes the job's
  non-persistent ones, also after a failure or a crash (at the next start).
* **Shared between slots.** Several render slots stage at once through one :class:`Stager`. An object is fetched
  under a lock of its own (two jobs needing it download it once: the second finds the cached copy); a
  non-persistent model surfaced for one running job is reused by another job that needs the same object (same
  ETag) and is reference-counted: a job's clean-up removes it only when no other job uses it any more (the
  surfaced row passes to a job still using it). Cached files in use by a running job are never evicted.
  Surfacing, clean-up and eviction are serialized by the stager's lock.
"""
from __future__ import annotations

import errno
import os
import shutil
import threading
import time
import unicodedata

from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.s3.download import download_object
from visionsuit_gpuworker.s3.keys import SIDECAR_SUFFIX, TEMP_SUFFIX, key_to_relpath
from visionsuit_gpuworker.s3.upload import ORIGINAL_FILENAME

MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pt2", ".bin", ".pth")
DEFAULT_NAMES = {"lora": "LoraModel.safetensors", "checkpoint": "BaseModel.safetensors"}
METADATA_KEY = ORIGINAL_FILENAME
COPY_SUFFIX = ".vs-agent-tmp"
#: Names tried for one asset: ``name``, ``name_2`` ... ``name_999`` (the longest suffix is ``_999``).
MAX_TRIES = 1000
#: File systems allow 255 bytes per file name (ext4, xfs, btrfs, tmpfs; NAME_MAX). A ComfyUI name is cut to
#: 255 - 14 (the copy temp ``.<name>.vs-agent-tmp``) - 4 (the collision suffix ``_999``) = 237 bytes of UTF-8,
#: so every file the agent creates for it fits.
NAME_MAX_BYTES = 255
MAX_NAME_BYTES = NAME_MAX_BYTES - len("." + COPY_SUFFIX) - len(f"_{MAX_TRIES - 1}")


def comfy_name(original, kind):
    """The file name ComfyUI sees for an asset whose metadata says ``original`` (None: no metadata).

    Rules: only the last path component counts (``/`` and ``\\`` are separators); control and format
    characters are dropped; leading dots and surrounding spaces are removed (no hidden files, no ``..``);
    a name without a model extension gets ``.safetensors``; the name is cut to :data:`MAX_NAME_BYTES` (237)
    bytes of UTF-8, keeping the extension and whole characters; nothing left (or no metadata) gives
    ``LoraModel.safetensors`` for LoRAs and ``BaseModel.safetensors`` for base models.
    """
    name = original or ""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    name = name.strip().lstrip(".").strip()
    if not name:
        return DEFAULT_NAMES[kind]
    stem, ext = os.path.splitext(name)
    if ext.lower() not in MODEL_EXTENSIONS:
        stem, ext = name, ".safetensors"
    room = MAX_NAME_BYTES - len(ext.encode("utf-8"))
    stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore")  # a character cut in two is dropped
    stem = stem.rstrip(" .") or DEFAULT_NAMES[kind].rsplit(".", 1)[0]
    return stem + ext


def _os_hint(err, folder, permissions):
    """How to fix an OSError met while writing into ``folder`` (the hint fits the error)."""
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"check free space of {folder}"
    if code == errno.ENAMETOOLONG:
        return (f"the file name or path is too long for the file system of {folder} (most allow "
                f"{NAME_MAX_BYTES} bytes of UTF-8 per name)")
    if code == errno.EROFS:
        return f"{folder} is on a read-only file system"
    if code in (errno.EACCES, errno.EPERM):
        return permissions
    return f"check free space of {folder}; {permissions}"


def suffixed(name, n):
    stem, ext = os.path.splitext(name)
    return f"{stem}_{n}{ext}"


class StagingError(GpuWorkerError):
    """Staging failed; the message names the asset."""


class Stager:
    def __init__(self, cfg, client, store, metrics, log):
        self.cfg = cfg
        self.client = client
        self.store = store
        self.metrics = metrics
        self.log = log
        self.cache_dir = cfg.cache_dir
        self.folders = {"checkpoint": cfg["comfyui.checkpoints_dir"], "lora": cfg["comfyui.loras_dir"]}
        self.mode = cfg["jobs.surface_mode"]
        self.lock = threading.RLock()   # surfacing, clean-up, eviction and the tables below
        self._fetch_locks = {}          # (bucket, key) -> lock held while that object is fetched
        self._pins = {}                 # job id -> cache paths the job uses (never evicted meanwhile)
        self._users = {}                # surfaced non-persistent path -> ids of the running jobs using it

    def _fetch_lock(self, bucket, key):
        with self.lock:
            return self._fetch_locks.setdefault((bucket, key), threading.Lock())

    # ------------------------------------------------------------------ download
    def cache_location(self, bucket, key):
        """(folder, prefix, file name) of the cached copy of bucket/key."""
        key_to_relpath(key)  # refuses keys that would escape the cache
        prefix, _sep, base = key.rpartition("/")
        folder = os.path.join(self.cache_dir, bucket, *prefix.split("/")) if prefix else \
            os.path.join(self.cache_dir, bucket)
        return folder, prefix, base

    def fetch(self, bucket, key, progress=None, job_id=None):
        """Make sure the cache holds the current version of bucket/key; returns a dict about it.

        One fetch of an object at a time (a second job waiting for it then finds it cached); ``job_id`` pins
        the cached file until that job's clean-up."""
        folder, _prefix, base = self.cache_location(bucket, key)
        if job_id is not None:
            with self.lock:
                self._pins.setdefault(job_id, set()).add(os.path.join(folder, base))
        with self._fetch_lock(bucket, key):
            return self._fetch(bucket, key, folder, base, progress)

    def _fetch(self, bucket, key, folder, base, progress):
        info = self.client.head_object(bucket, key)
        try:
            result = download_object(self.client, bucket, key, os.path.join(folder, base), object_info=info,
                                     workers=self.cfg["minio.workers"], nice=self.cfg["minio.transfer_nice"],
                                     reserve_bytes=self.cfg["jobs.reserve_bytes"], progress=progress)
        except GpuWorkerError:
            self._drop_partial(folder, base)
            raise
        except OSError as err:
            self._drop_partial(folder, base)
            raise StagingError(f"cannot download '{key}' from bucket '{bucket}': {err.strerror or err}",
                               hint=_os_hint(err, self.cache_dir, f"check the permissions of {self.cache_dir}")
                               ) from err
        path = os.path.join(folder, base)
        if result["files"] + result["skipped"] < 1 or not os.path.isfile(path):
            raise StagingError(f"object '{key}' in bucket '{bucket}' disappeared while it was being staged")
        hit = result["files"] == 0
        self.metrics.inc("cache_hits_total" if hit else "cache_misses_total")
        self.log.info("staging: %s/%s %s", bucket, key, "from the cache" if hit else
                      "downloaded ({} bytes)".format(result["bytes"]))
        self.metrics.inc("downloaded_bytes_total", result["bytes"])
        return {"cache_path": path, "etag": result["etag"], "size": result["size"], "cached": hit,
                "bytes": result["bytes"], "seconds": result["seconds"],
                "original": (info.get("metadata") or {}).get(METADATA_KEY)}

    @staticmethod
    def _drop_partial(folder, base):
        for suffix in (TEMP_SUFFIX, SIDECAR_SUFFIX):
            try:
                os.unlink(os.path.join(folder, "." + base + suffix))
            except OSError:
                pass

    # ------------------------------------------------------------------ surfacing
    def _persistent_entry(self, folder, bucket, key):
        for row in self.store.surfaced(persistent=True):
            if row["bucket"] == bucket and row["key"] == key and os.path.dirname(row["path"]) == folder:
                if os.path.exists(row["path"]):
                    return row
                self.store.remove_surfaced(row["path"])
        return None

    def _create(self, src, dest):
        """Create dest atomically without replacing anything; False when the name is taken."""
        if self.mode == "symlink":
            try:
                os.symlink(src, dest)
            except FileExistsError:
                return False
            return True
        tmp = os.path.join(os.path.dirname(dest), "." + os.path.basename(dest) + COPY_SUFFIX)
        try:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            try:
                os.link(tmp, dest)
            except FileExistsError:
                return False
            return True
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def _shared_entry(self, folder, asset, fetched, taken):
        """A non-persistent file surfaced for a running job of the same object and ETag (to be shared)."""
        for path, users in self._users.items():
            if not users or os.path.dirname(path) != folder or os.path.basename(path) in taken:
                continue
            rows = self.store.surfaced(path=path, persistent=False)
            if rows and rows[0]["bucket"] == asset["bucket"] and rows[0]["key"] == asset["key"] \
                    and rows[0]["etag"] == fetched["etag"] and os.path.lexists(path):
                return path
        return None

    def surface(self, job_id, asset, fetched, taken):
        """Put one fetched asset into ComfyUI's folder; returns its ComfyUI name and whether it is new."""
        with self.lock:
            return self._surface(job_id, asset, fetched, taken)

    def _surface(self, job_id, asset, fetched, taken):
        folder = self.folders[asset["kind"]]
        os.makedirs(folder, exist_ok=True)
        # a model kept by an earlier job is reused as it is (and stays: this job did not bring it in)
        row = self._persistent_entry(folder, asset["bucket"], asset["key"])
        if row is not None:
            name = os.path.basename(row["path"])
            if row["etag"] != fetched["etag"]:
                if self.mode == "copy":
                    self._replace_copy(fetched["cache_path"], row["path"])
                self.store.add_surfaced(row["path"], asset["bucket"], asset["key"], fetched["etag"],
                                        row["cache_path"], True, row["job_id"])
            taken.add(name)
            return name, False
        if not asset["persist"]:
            shared = self._shared_entry(folder, asset, fetched, taken)
            if shared is not None:   # in use by another running job: this job uses it too
                self._users[shared].add(job_id)
                self.log.info("job %s: uses %s, surfaced for another running job", job_id, shared)
                taken.add(os.path.basename(shared))
                return os.path.basename(shared), False
        wanted = comfy_name(fetched["original"], asset["kind"])
        for n in range(1, MAX_TRIES):
            name = wanted if n == 1 else suffixed(wanted, n)
            if name in taken:
                continue
            dest = os.path.join(folder, name)
            if os.path.lexists(dest):
                continue
            self.store.add_surfaced(dest, asset["bucket"], asset["key"], fetched["etag"],
                                    fetched["cache_path"] if self.mode == "symlink" else None,
                                    asset["persist"], job_id)
            try:
                created = self._create(fetched["cache_path"], dest)
            except OSError as err:
                self.store.remove_surfaced(dest)
                raise StagingError(f"cannot put {name} into {folder}: {err.strerror or err}",
                                   hint=_os_hint(err, folder, "check that the agent may write to ComfyUI's model "
                                                              "folders (group comfyui)")) from err
            if not created:
                self.store.remove_surfaced(dest)
                continue
            if not asset["persist"]:
                self._users[dest] = {job_id}
            taken.add(name)
            return name, True
        raise StagingError(f"no free file name for {wanted} in {folder}")

    def _replace_copy(self, src, dest):
        tmp = os.path.join(os.path.dirname(dest), "." + os.path.basename(dest) + COPY_SUFFIX)
        try:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)

    def stage(self, job_id, assets, progress=None):
        """Fetch and surface every asset of a job; returns one dict per asset (same order)."""
        taken = set()
        staged = []
        seen = {}
        for asset in assets:
            ident = (asset["kind"], asset["bucket"], asset["key"])
            if ident in seen:
                staged.append(dict(seen[ident], **{k: asset[k] for k in asset if k.startswith("strength")}))
                continue
            fetched = self.fetch(asset["bucket"], asset["key"], progress, job_id=job_id)
            name, new = self.surface(job_id, asset, fetched, taken)
            entry = dict(asset, name=name, cached=fetched["cached"], bytes=fetched["bytes"],
                         seconds=fetched["seconds"], etag=fetched["etag"], size=fetched["size"],
                         original_filename=fetched["original"], new=new)
            seen[ident] = entry
            staged.append(entry)
        return staged

    # ------------------------------------------------------------------ clean-up
    def cleanup(self, job_id=None):
        """Remove the non-persistent files surfaced for ``job_id`` (None: for every job, at start-up), except the
        ones another running job still uses (their row passes to that job); unpin the job's cached files."""
        with self.lock:
            return self._cleanup(job_id)

    def _cleanup(self, job_id):
        removed = []
        if job_id is None:
            self._users.clear()
            self._pins.clear()
        else:
            self._pins.pop(job_id, None)
            for users in self._users.values():
                users.discard(job_id)
        for row in self.store.surfaced(job_id=job_id, persistent=False):
            users = self._users.get(row["path"])
            if users:   # still used by another running job: it is that job's to remove now
                self.store.add_surfaced(row["path"], row["bucket"], row["key"], row["etag"], row["cache_path"],
                                        False, sorted(users)[0])
                continue
            self._users.pop(row["path"], None)
            try:
                os.unlink(row["path"])
                removed.append(row["path"])
            except FileNotFoundError:
                pass
            except OSError as err:
                self.log.warning("cannot remove %s: %s", row["path"], err)
                continue
            self.store.remove_surfaced(row["path"])
        for folder in self.folders.values():
            if os.path.isdir(folder):
                for name in os.listdir(folder):
                    if name.startswith(".") and name.endswith(COPY_SUFFIX):
                        try:
                            os.unlink(os.path.join(folder, name))
                        except OSError:
                            pass
        return removed

    def evict(self, keep=()):
        """Trim the cache to ``jobs.cache_max_bytes`` (0: unlimited); returns the removed paths. Files surfaced
        or in use by a running job are kept."""
        with self.lock:
            return self._evict(keep)

    def _evict(self, keep):
        limit = self.cfg["jobs.cache_max_bytes"]
        if not limit or not os.path.isdir(self.cache_dir):
            return []
        pinned = self.store.pinned_cache_paths() | set(keep) | set().union(*self._pins.values())
        files, total = [], 0
        for root, _dirs, names in os.walk(self.cache_dir):
            for name in names:
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                total += st.st_size
                if name.startswith(".") or path in pinned:
                    continue
                files.append((max(st.st_atime, st.st_mtime), st.st_size, path))
        removed = []
        for _used, size, path in sorted(files):
            if total <= limit:
                break
            try:
                os.unlink(path)
            except OSError as err:
                if err.errno != errno.ENOENT:
                    continue
            total -= size
            removed.append(path)
        if removed:
            self.log.info("cache over %d bytes: evicted %d file(s)", limit, len(removed))
        return removed


def prepare_output_dir(output_dir, subdir, run_dir):
    """Create ``<output_dir>/<subdir>/<run_dir>`` writable by ComfyUI: mode 0775, group of the output dir.

    No setgid bit (the unit's RestrictSUIDSGID forbids it): the group is set explicitly, and the agent can
    delete ComfyUI's files in it because it owns the folder.
    """
    os.makedirs(output_dir, exist_ok=True)
    gid = os.stat(output_dir).st_gid
    path = output_dir
    for part in (subdir, run_dir):
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o775)
        except FileExistsError:
            continue
        try:
            os.chown(path, -1, gid)
            os.chmod(path, 0o775)  # noqa: S103 - ComfyUI (the group) writes the job's outputs here
        except OSError:
            pass
    return path


def remove_tree(path, retries=3):
    for _attempt in range(retries):
        try:
            shutil.rmtree(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.05)
    return False
