# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tiny PNG writer/reader (stdlib only): enough to "render" images and to read an input's size."""
from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _channel_ramp(width: int, start: int, end: int) -> bytes:
    if width <= 1:
        return bytes([start & 0xFF])
    return bytes((start + (end - start) * x // (width - 1)) & 0xFF for x in range(width))


def gradient_rows(width: int, height: int, color: tuple[int, int, int], spread: int = 96):
    """Yield the raw RGB rows of a gentle gradient around ``color`` (red varies with x, green with y)."""
    r, g, b = color
    template = bytearray(width * 3)
    template[0::3] = _channel_ramp(width, max(r - spread, 0), min(r + spread, 255))
    template[2::3] = bytes([b]) * width
    greens = _channel_ramp(height, max(g - spread, 0), min(g + spread, 255))
    for y in range(height):
        row = bytearray(template)
        row[1::3] = bytes([greens[y]]) * width
        yield bytes(row)


def solid_rows(width: int, height: int, color: tuple[int, int, int]):
    row = bytes(color) * width
    for _ in range(height):
        yield row


def encode_png(width: int, height: int, rows, text: dict[str, str] | None = None, level: int = 4) -> bytes:
    """Encode 8-bit RGB ``rows`` (an iterable of ``width * 3`` byte rows) as a PNG file."""
    comp = zlib.compressobj(level)
    parts = []
    for row in rows:
        parts.append(comp.compress(b"\x00" + row))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    out = [PNG_SIGNATURE, _chunk(b"IHDR", ihdr)]
    for key, value in (text or {}).items():
        raw_key = key.encode("latin-1", "replace")[:79]
        out.append(_chunk(b"tEXt", raw_key + b"\x00" + value.encode("latin-1", "replace")))
    out.append(_chunk(b"IDAT", b"".join(parts)))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def image_size(path) -> tuple[int, int] | None:
    """Width and height of a PNG (from IHDR), or None when the file is not a PNG."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError:
        return None
    if len(head) < 24 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def read_text_chunks(data: bytes) -> dict[str, str]:
    """The tEXt chunks of a PNG held in memory (used by tests)."""
    out = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"tEXt" and b"\x00" in body:
            key, _, value = body.partition(b"\x00")
            out[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + length
    return out
