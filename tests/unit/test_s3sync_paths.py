# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Object key -> local path safety, ETag arithmetic and streaming verification of the sync engine."""
import base64
import hashlib
import os
import zlib

import pytest

from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.s3.checksums import (
    Verifier,
    crc32_combine,
    etag_part_count,
    file_matches_etag,
    file_multipart_etag,
    part_size_candidates,
)
from visionsuit_gpuworker.s3.keys import key_to_relpath, matches, normalize_prefix, relpath_to_key, safe_join
from visionsuit_gpuworker.s3.localio import MiB


@pytest.mark.parametrize("key,prefix,rel", [
    ("model.safetensors", "", "model.safetensors"),
    ("sdxl/a b/ü.safetensors", "", "sdxl/a b/ü.safetensors"),
    ("sdxl/a b/ü.safetensors", "sdxl", "a b/ü.safetensors"),
    ("sdxl/x", "/sdxl/", "x"),
    ("..foo/bar..", "", "..foo/bar.."),
    (".hidden", "", ".hidden"),
    ("dir/", "", None),
    ("sdxl/", "sdxl", None),
])
def test_safe_keys(key, prefix, rel):
    assert key_to_relpath(key, prefix) == rel


@pytest.mark.parametrize("key,why", [
    ("../evil", "escape"),
    ("a/../../evil", "escape"),
    ("a/..", "escape"),
    ("./a", "escape"),
    ("/etc/passwd", "absolute"),
    ("a//b", "empty path segment"),
    ("a\x00b", "NUL"),
    ("../", "escape"),
    ("x/.visionsuit-sync.json", "reserved"),
    ("x/.m.safetensors.vsync-part", "reserved"),
])
def test_unsafe_keys_are_refused(key, why):
    with pytest.raises(GpuWorkerError) as e:
        key_to_relpath(key)
    assert why in str(e.value) and "refusing object key" in str(e.value)


def test_prefix_mismatch_and_helpers(tmp_path):
    with pytest.raises(GpuWorkerError):
        key_to_relpath("other/x", "sdxl")
    assert normalize_prefix(" /a/b/ ") == "a/b"
    assert relpath_to_key("a/b.png", "/out/") == "out/a/b.png"
    assert relpath_to_key("a.png", "") == "a.png"
    root = str(tmp_path)
    assert safe_join(root, "a/b") == os.path.join(root, "a", "b")
    for bad in ("../x", "a/../../x", ""):
        with pytest.raises(GpuWorkerError):
            safe_join(root, bad)


def test_include_exclude_globs():
    assert matches("sdxl/a.safetensors", ["*.safetensors"], None)
    assert not matches("sdxl/a.ckpt", ["*.safetensors"], None)
    assert matches("sdxl/a.ckpt", None, ["*.safetensors"])
    assert not matches("tmp/a.safetensors", None, ["tmp/*"])
    assert not matches("a.safetensors", ["*.safetensors"], ["a.*"])


def test_etag_part_counts_and_part_size_guesses():
    assert etag_part_count("d41d8cd98f00b204e9800998ecf8427e") == 0
    assert etag_part_count('"d41d8cd98f00b204e9800998ecf8427e-12"') == 12
    assert etag_part_count("opaque") is None
    cands = part_size_candidates(100 * MiB + 1, 13)
    assert 8 * MiB in cands and all(-(-(100 * MiB + 1) // p) == 13 for p in cands)
    assert part_size_candidates(11 * MiB, 3, preferred=[5 * MiB])[0] == 5 * MiB
    assert part_size_candidates(0, 1) == []


def _multipart_etag(data, part):
    digests = [hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part)]  # noqa: S324
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"  # noqa: S324


def test_verifier_md5_multipart_and_checksums(tmp_path):
    data = os.urandom(3 * 1024 + 17)
    md5 = hashlib.md5(data).hexdigest()  # noqa: S324
    v = Verifier(md5, len(data))
    v.update(data[:100])
    v.update(data[100:])
    assert v.result()[0] and v.method == "md5"

    bad = bytearray(data)
    bad[5] ^= 1
    v = Verifier(md5, len(data))
    v.update(bytes(bad))
    ok, why = v.result()
    assert not ok and "MD5" in why

    v = Verifier(md5, len(data) + 1)
    v.update(data)
    assert v.result() == (False, f"size {len(data)} instead of {len(data) + 1}")

    etag = _multipart_etag(data, 1024)
    v = Verifier(etag, len(data), part_sizes=[1024])
    for i in range(0, len(data), 700):
        v.update(data[i:i + 700])
    assert v.result()[0] and v.method == "multipart-etag"
    p = tmp_path / "f"
    p.write_bytes(data)
    assert file_multipart_etag(str(p), 1024) == etag
    assert file_matches_etag(str(p), etag, part_sizes=[1024])
    assert file_matches_etag(str(p), md5)
    assert not file_matches_etag(str(p), "opaque-etag")

    crc = base64.b64encode((zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "big")).decode()
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    for checksums in ({"crc32": crc}, {"sha256": sha}):
        v = Verifier("opaque", len(data), checksums=checksums)
        v.update(data)
        assert v.result()[0], checksums
        v = Verifier(md5, len(data), checksums=checksums)
        v.update(bytes(bad))
        assert not v.result()[0]
    # composite (per-part) checksums cannot be recomputed: the ETag is used instead
    v = Verifier(md5, len(data), checksums={"crc32": crc + "-3"}, checksum_type="COMPOSITE")
    assert v.method == "md5"


@pytest.mark.parametrize("len1,len2", [(0, 0), (0, 7), (7, 0), (1, 1), (1000, 3), (3, 65536), (12345, 1048577)])
def test_crc32_combine_equals_the_crc_of_the_concatenation(len1, len2):
    a, b = os.urandom(len1), os.urandom(len2)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_crc32_combine_over_many_ranges_in_order():
    data = os.urandom(300000)
    crc = 0
    for off in range(0, len(data), 65536):
        piece = data[off:off + 65536]
        crc = crc32_combine(crc, zlib.crc32(piece), len(piece))
    assert crc == zlib.crc32(data)
    assert crc32_combine(0, zlib.crc32(b"x" * (16 << 20)), 16 << 20) == zlib.crc32(b"x" * (16 << 20))
