# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Object keys <-> local relative paths: the rules that keep a sync inside its folder.

* :func:`normalize_prefix` turns ``/a/b/`` into ``a/b`` (a folder-like prefix; empty means the whole bucket);
* :func:`key_to_relpath` maps a key under a prefix to a safe relative POSIX path, refusing keys that would escape
  the destination (``..``, ``.`` or empty segments, absolute, NUL), that are not UTF-8 text (lone surrogates), or
  clash with the sync's own files;
* :func:`relpath_to_key` and :func:`safe_join` go the other way, and :func:`matches` applies include/exclude globs;
* the reserved names are defined here, because keeping clear of them is one of these rules (:func:`is_reserved`):

  - the sync's own files (:data:`STATE_FILE`, temp files ending in :data:`TEMP_SUFFIX` and their
    :data:`SIDECAR_SUFFIX` records): a key that names one is refused;
  - the placeholder files of a fresh ComfyUI checkout (:data:`COMFYUI_PLACEHOLDERS`, and ``example.png`` directly in
    a folder named ``input``, see :func:`is_placeholder`): ComfyUI's, not the sync's. They are never uploaded,
    recorded in the state file, downloaded over nor deleted, and objects carrying such a name are left out of a
    download (as folder markers are), not refused.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fnmatch
import os

from ..errors import GpuWorkerError

STATE_FILE = ".visionsuit-sync.json"
TEMP_SUFFIX = ".vsync-part"
SIDECAR_SUFFIX = ".vsync-part.json"

# The placeholder files ComfyUI 0.3.64 ships (a fresh checkout: ``output/_output_images_will_be_put_here`` and one
# ``models/<folder>/put_..._here`` per model folder; root-owned when root installed ComfyUI). Exact names only: they
# are reserved wherever they appear, and a file merely looking like one (``put_my_own_here.png``) is a file.
COMFYUI_PLACEHOLDERS = frozenset((
    "_output_images_will_be_put_here",
    "put_audio_encoder_models_here",
    "put_checkpoints_here",
    "put_clip_or_text_encoder_models_here",
    "put_clip_vision_models_here",
    "put_controlnets_and_t2i_here",
    "put_diffusers_models_here",
    "put_diffusion_model_files_here",
    "put_embeddings_or_textual_inversion_concepts_here",
    "put_esrgan_and_other_upscale_models_here",
    "put_gligen_models_here",
    "put_hypernetworks_here",
    "put_loras_here",
    "put_model_patches_here",
    "put_photomaker_models_here",
    "put_t2i_style_model_here",
    "put_taesd_encoder_pth_and_taesd_decoder_pth_here",
    "put_text_encoder_files_here",
    "put_unet_files_here",
    "put_vae_here",
))
# Placeholders whose name is too common to reserve everywhere: ComfyUI's only directly inside a folder of that name
# (``input/example.png``; a render called example.png elsewhere is a file like any other).
COMFYUI_PLACEHOLDERS_IN_FOLDER = frozenset((("input", "example.png"),))


# Where a backslash separates paths (Windows), a key starting with one is absolute. On Linux it is a character of a
# file name like any other: refusing it there would refuse, with the whole download, an object that upload() made
# from a local file named so (and safe_join() checks every path lexically anyway).
_BACKSLASH_SEPARATES = "\\" in (os.sep, os.altsep)


def normalize_prefix(prefix):
    """``/a/b/`` -> ``a/b`` (a folder-like prefix; empty means the whole bucket)."""
    return (prefix or "").strip().strip("/")


def _is_sync_file(name):
    """Whether a file name belongs to the sync itself (state file, temp file, sidecar)."""
    return name == STATE_FILE or name.startswith(STATE_FILE + ".") or name.endswith(TEMP_SUFFIX) \
        or name.endswith(SIDECAR_SUFFIX)


def is_reserved(name):
    """Whether a file name is reserved: one of the sync's own files (state file, temp file, sidecar) or one of
    ComfyUI's placeholder names (:data:`COMFYUI_PLACEHOLDERS`). The placeholder that depends on its folder
    (``input/example.png``) needs the path: :func:`is_placeholder`."""
    return _is_sync_file(name) or name in COMFYUI_PLACEHOLDERS


def is_placeholder(path):
    """Whether ``path`` (absolute or relative, ``/`` or ``os.sep`` separated) is a ComfyUI placeholder file: its
    name is one of :data:`COMFYUI_PLACEHOLDERS`, or it is ``example.png`` directly in a folder named ``input``."""
    parts = str(path).replace(os.sep, "/").rstrip("/").split("/")
    name = parts[-1]
    if name in COMFYUI_PLACEHOLDERS:
        return True
    return len(parts) > 1 and (parts[-2], name) in COMFYUI_PLACEHOLDERS_IN_FOLDER


def key_to_relpath(key, prefix=""):
    """Map an object key under ``prefix`` to a safe relative POSIX path.

    Returns None for what is not mirrored: folder markers (keys ending in ``/``) and ComfyUI's placeholder files
    (a segment in :data:`COMFYUI_PLACEHOLDERS`, or ``input/example.png``: the local ones stay as ComfyUI shipped
    them). Raises GpuWorkerError for keys that would escape the destination or clash with the sync's own files.
    """
    prefix = normalize_prefix(prefix)
    if "\x00" in key:
        raise GpuWorkerError("refusing object key %r: it contains a NUL byte" % key, field="key",
                             hint="rename or delete the object in the bucket")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (from JSON, say): neither a key S3 can have nor a file name
        raise GpuWorkerError("refusing object key %r: it is not valid UTF-8 text" % key, field="key",
                             hint="give the key as UTF-8 text")
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
    if rest.startswith("/") or (_BACKSLASH_SEPARATES and rest.startswith("\\")):
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
        if _is_sync_file(seg):
            raise GpuWorkerError("refusing object key %r: '%s' is a name reserved for the sync's own files"
                                 % (key, seg), field="key", hint="rename the object in the bucket")
    if any(seg in COMFYUI_PLACEHOLDERS for seg in segments) or is_placeholder(rest):
        return None  # ComfyUI's placeholder (or below a folder named like one): not mirrored
    return "/".join(segments)


def relpath_to_key(relpath, prefix=""):
    """The object key of a local relative path; a name that is not valid UTF-8 (an S3 key is UTF-8) is refused
    with an error naming the file, instead of a UnicodeEncodeError deep in the request."""
    prefix = normalize_prefix(prefix)
    rel = relpath.replace(os.sep, "/")
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        try:  # a name read from disk: its undecodable bytes are surrogate escapes
            shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            shown = rel.encode("utf-8", "backslashreplace").decode("utf-8")
        raise GpuWorkerError("local file '%s' has a name that is not valid UTF-8 and cannot be an S3 key" % shown,
                             field="path", hint="rename the file (e.g. convmv -f latin1 -t utf8) and run again")
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
