"""Checks that a model file would load: a safetensors header, or a torch zip/pickle signature."""
from __future__ import annotations

import json
import os
import struct

SAFETENSORS_ERROR = "safetensors._safetensors_rust.SafetensorError"
MAX_HEADER = 100_000_000


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
        if ext in (".safetensors", ".sft"):
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
