# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Checks that a model file would load: a safetensors header, or a torch zip/pickle signature; and that a
checkpoint holds a model ComfyUI can detect (the rule of :func:`is_recognisable`)."""
from __future__ import annotations

import json
import os
import struct

SAFETENSORS_ERROR = "safetensors._safetensors_rust.SafetensorError"
SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
MAX_HEADER = 100_000_000
# A checkpoint's diffusion model lives under this key prefix (ComfyUI's ldm/sgm layout); see is_recognisable().
CHECKPOINT_KEY_PREFIX = "model.diffusion_model."
CHECKPOINT_FIRST_KEY = CHECKPOINT_KEY_PREFIX + "input_blocks.0.0.weight"


class LoadError(Exception):
    """A model that fails to load; ``exception_type`` is what ComfyUI would report for it."""

    def __init__(self, message, exception_type):
        super().__init__(message)
        self.exception_type = exception_type


def check_model_file(path):
    """Return the safetensors header (dict) or {} for torch files; raise LoadError like a real loader."""
    ext = os.path.splitext(path)[1].lower()
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if ext in SAFETENSORS_EXTENSIONS:
            if len(head) < 8:
                raise LoadError("Error while deserializing header: header too small", SAFETENSORS_ERROR)
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER:
                raise LoadError("Error while deserializing header: header too large", SAFETENSORS_ERROR)
            if 8 + n > size:
                raise LoadError("Error while deserializing header: invalid header length (file truncated?)",
                                SAFETENSORS_ERROR)
            raw = fh.read(n)
            try:
                header = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise LoadError(f"Error while deserializing header: invalid JSON in header: {exc}",
                                SAFETENSORS_ERROR) from None
            if not isinstance(header, dict):
                raise LoadError("Error while deserializing header: header is not a JSON object", SAFETENSORS_ERROR)
            end = 0
            for key, info in header.items():
                if key == "__metadata__":
                    continue
                try:
                    end = max(end, int(info["data_offsets"][1]))
                except (TypeError, KeyError, IndexError, ValueError):
                    raise LoadError(f"Error while deserializing header: tensor {key!r} has no valid data_offsets",
                                    SAFETENSORS_ERROR) from None
            if 8 + n + end != size:
                raise LoadError("Error while deserializing header: metadata incomplete, the file is not fully "
                                "covered by the tensors it declares", SAFETENSORS_ERROR)
            return header
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return {}
    raise LoadError("invalid load key, {!r}.".format(head[:1].decode("latin-1")), "_pickle.UnpicklingError")


def is_recognisable(header) -> bool:
    """The stand-in's rule for "ComfyUI detects a model type in this checkpoint": at least one tensor key starts
    with ``model.diffusion_model.`` (where ComfyUI's model detection looks for a UNet/DiT, e.g.
    ``model.diffusion_model.input_blocks.0.0.weight`` of SD1.x). Real ComfyUI goes on to match the key shapes
    against every model family it knows; the stand-in stops at the prefix."""
    return any(key != "__metadata__" and key.startswith(CHECKPOINT_KEY_PREFIX) for key in header)


def detection_hint(path) -> str:
    """ComfyUI 0.3.64's ``model_detection_error_hint``: a HINT line for a file named like a LoRA, else nothing."""
    if "lora" in os.path.basename(path).lower():
        return ("\nHINT: This seems to be a Lora file and Lora files should be put in the lora folder and loaded "
                "with a lora loader node..")
    return ""


def check_checkpoint_file(path):
    """:func:`check_model_file`, then, for a safetensors file, :func:`is_recognisable`: otherwise a LoadError as
    ComfyUI's ``load_checkpoint_guess_config`` raises it (a RuntimeError whose message names the full path and
    ends with the hint). Torch files (``.ckpt``, ``.pt``, ...) are not looked into: their signature suffices."""
    header = check_model_file(path)
    if os.path.splitext(path)[1].lower() in SAFETENSORS_EXTENSIONS and not is_recognisable(header):
        raise LoadError(f"ERROR: Could not detect model type of: {path}\n{detection_hint(path)}",
                        "RuntimeError")
    return header


def safetensors_bytes(tensors=None, metadata=None) -> bytes:
    """A small valid safetensors file: ``tensors`` maps name -> raw bytes (stored as U8)."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    data = b""
    for name, raw in (tensors or {}).items():
        header[name] = {"dtype": "U8", "shape": [len(raw)], "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob + data


def checkpoint_bytes(data=b"\x00\x00\x00\x00", tensors=None, metadata=None) -> bytes:
    """A small safetensors checkpoint that CheckpointLoaderSimple recognises (see :func:`is_recognisable`): the
    tensor ``model.diffusion_model.input_blocks.0.0.weight`` (an SD1.x UNet's first key) holding ``data`` (vary it
    to get distinct files), then ``tensors`` (name -> raw bytes) and ``metadata``."""
    return safetensors_bytes(dict({CHECKPOINT_FIRST_KEY: bytes(data)}, **(tensors or {})), metadata)
