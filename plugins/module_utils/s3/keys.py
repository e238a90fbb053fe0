# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Object keys <-> local relative paths: the rules that keep a sync inside its folder.

* :func:`normalize_prefix` turns ``/a/b/`` into ``a/b`` (a folder-like prefix; empty means the whole bucket);
* :func:`key_to_relpath` maps a key under a prefix to a safe relative POSIX path, refusing keys that would escape
  the destination (``..``, ``.`` or empty segments, absolute, NUL) or clash with the sync's own files;
* :func:`relpath_to_key` and :func:`safe_join` go the other way, and :func:`matches` applies include/exclude globs;
* the names reserved for the sync's own files (:data:`STATE_FILE`, temp files ending in :data:`TEMP_SUFFIX` and
  their :data:`SIDECAR_SUFFIX` records) are defined here, because refusing them is one of these rules.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fnmatch
import os

from ..errors import GpuWorkerError

STATE_FILE = ".visionsuit-sync.json"
TEMP_SUFFIX = ".vsync-part"
SIDECAR_SUFFIX = ".vsync-part.json"


def normalize_prefix(prefix):
    """``/a/b/`` -> ``a/b`` (a folder-like prefix; empty means the whole bucket)."""
    return (prefix or "").strip().strip("/")


def is_reserved(name):
    """Whether a file name belongs to the sync itself (state file, temp file, sidecar)."""
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
        if is_reserved(seg):
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


def matches(rel, include, exclude):
    """Whether ``rel`` passes the include/exclude globs (each matched against the path and the file name)."""
    base = rel.rsplit("/", 1)[-1]
    if include and not any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(base, p) for p in include):
        return False
    if exclude and any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(base, p) for p in exclude):
        return False
    return True
