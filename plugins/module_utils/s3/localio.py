# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The local side of a sync: walking a folder, temp file names, writing, flushing, free space, ownership.

:class:`FileWriter` writes received chunks with ``pwrite`` into a preallocated temp file, page-aligned chunks
through ``O_DIRECT`` where the file system allows it (no page cache to fill and flush); :func:`thread_buffer` is
each worker's reused, page-aligned receive buffer. Local reads and writes go in :data:`READ_CHUNK` pieces.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import mmap
import os
import shutil
import stat
import threading

from ..errors import GpuWorkerError
from .keys import SIDECAR_SUFFIX, STATE_FILE, TEMP_SUFFIX, is_reserved, matches

MiB = 1024 * 1024
READ_CHUNK = MiB
DIRECT_ALIGN = 4096


def walk_local(root, include=None, exclude=None):
    """relative path -> os.stat_result of regular files under root (temp/state files excluded)."""
    found = {}
    if not os.path.isdir(root):
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if is_reserved(name) or (name.startswith(".") and (TEMP_SUFFIX in name or STATE_FILE in name)):
                continue
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if matches(rel, include, exclude):
                found[rel] = st
    return found


def tmp_names(path):
    """(temp file, sidecar) of a download to ``path``: ``.<name>.vsync-part`` and ``.<name>.vsync-part.json``."""
    folder, name = os.path.split(path)
    return os.path.join(folder, "." + name + TEMP_SUFFIX), os.path.join(folder, "." + name + SIDECAR_SUFFIX)


def unlink_if_exists(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def prune_empty_dirs(folder, root):
    """Remove ``folder`` and its parents up to (not including) ``root`` while they are empty."""
    while folder != root and folder.startswith(root + os.sep):
        try:
            os.rmdir(folder)
        except OSError:
            return
        folder = os.path.dirname(folder)


def resolve_owner(owner, group):
    """(uid, gid) of a user/group name or number; -1 for the ones not given."""
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


def _free_space(path):
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return shutil.disk_usage(probe).free


def human_size(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return str(n)  # pragma: no cover


def check_space(dest, needed, reserve_bytes):
    """Raise GpuWorkerError unless ``needed + reserve_bytes`` bytes are free where ``dest`` is (or will be)."""
    free = _free_space(dest)
    if needed + reserve_bytes > free:
        raise GpuWorkerError("not enough free space in %s: the sync needs %s, %s are free" % (
            dest, human_size(needed + reserve_bytes), human_size(free)), field="path",
            hint="free up space or sync to a larger disk", details={"needed": needed, "free": free})


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


def fsync_dirs(folders):
    """fsync each folder (makes the renames in it durable), best effort."""
    for folder in sorted(folders):
        _fsync_dir(folder)


_THREAD = threading.local()


def thread_buffer():
    """This thread's page-aligned receive buffer (reused for every chunk: no allocation per chunk)."""
    buf = getattr(_THREAD, "buffer", None)
    if buf is None:
        buf = _THREAD.buffer = mmap.mmap(-1, READ_CHUNK)
    return buf


class FileWriter:
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
