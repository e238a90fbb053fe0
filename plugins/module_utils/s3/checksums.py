# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What an object's bytes must hash to: ETags, full-object checksums and their streaming verification.

* ETags: a plain MD5 (single-part upload) or ``<md5 of the part MD5s>-<parts>`` (multipart, from the part ETags:
  :func:`multipart_etag`); :func:`etag_part_count` tells them apart and :func:`part_size_candidates` guesses the
  part size from the count;
* full-object ``x-amz-checksum-crc32/sha256/sha1`` (:func:`usable_checksum`), CRC32 as base64
  (:func:`crc32_b64`) and the combination of the CRC32s of consecutive ranges (:func:`crc32_combine`, zlib's);
* :class:`Verifier` checks bytes as they stream against the checksum when there is one, else the ETag;
  :func:`file_md5`, :func:`file_multipart_etag` and :func:`file_matches_etag` hash a local file.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import os
import zlib

from .client import Cancelled
from .localio import READ_CHUNK, MiB

COMMON_PART_SIZES_MIB = (5, 6, 8, 10, 15, 16, 25, 32, 50, 64, 100, 128, 256, 512, 1024)


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


def multipart_etag(part_etags):
    """The ETag S3 gives the object of a multipart upload with these part ETags (in part order): the MD5 of the
    concatenated binary part MD5s, ``-`` and the part count. None when a part ETag is not an MD5 (e.g. encrypted)."""
    digests = []
    for etag in part_etags:
        etag = (etag or "").strip('"')
        if etag_part_count(etag) != 0:
            return None
        digests.append(bytes.fromhex(etag))
    return _md5_of_md5s(digests) if digests else None


def _md5_of_md5s(digests):
    return "%s-%d" % (hashlib.md5(b"".join(digests)).hexdigest(), len(digests))  # noqa: S324 - S3 ETag


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
        return _md5_of_md5s(self.digests + ([self.current.digest()] if self.filled else []))


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
        return crc32_b64(self.crc)


class Crc32:
    """An incremental CRC32 with the ``update`` interface of hashlib (value in ``crc``)."""

    def __init__(self):
        self.crc = 0

    def update(self, data):
        self.crc = zlib.crc32(data, self.crc)


def crc32_b64(value):
    """A CRC32 (``zlib.crc32`` value) as the base64 text of ``x-amz-checksum-crc32``."""
    return base64.b64encode((value & 0xFFFFFFFF).to_bytes(4, "big")).decode("ascii")


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
