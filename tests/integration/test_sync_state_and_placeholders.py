# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The sync state file on a full disk, and ComfyUI's placeholder files, against a real MinIO.

* **Disk exactly full** (issue 11): when ``.visionsuit-sync.json`` cannot be written (``ENOSPC``), the library
  result carries a warning and the node commands print it on stderr (exit code 0: the files themselves are
  complete and verified); the next run with space is correct: what changed is fetched, what the missing state
  no longer vouches for is hashed and adopted (not downloaded again), and a stale state file left behind never
  makes ``--delete`` remove a file the sync no longer placed. The state write is made to fail at the point it
  is written (the ``open`` of :mod:`visionsuit_gpuworker.s3.state`) and, as root, on a real tiny tmpfs.
* **Placeholders of a fresh ComfyUI checkout** (issue 12): ``output/_output_images_will_be_put_here``,
  ``input/example.png`` and ``models/*/put_*_here`` are never uploaded, recorded, downloaded over nor deleted.
"""
from __future__ import annotations

import builtins
import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

try:  # tests/integration is not a package
    from test_node_cli import Node
    from test_s3sync import client_for, put
except ImportError:  # pragma: no cover - imported as a package module
    from tests.integration.test_node_cli import Node
    from tests.integration.test_s3sync import client_for, put

from visionsuit_gpuworker.cli import node as node_cli
from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.s3 import keys
from visionsuit_gpuworker.s3 import state as state_mod
from visionsuit_gpuworker.s3.download import download, download_object
from visionsuit_gpuworker.s3.keys import STATE_FILE, is_reserved, key_to_relpath
from visionsuit_gpuworker.s3.upload import upload

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
KiB = 1024


@pytest.fixture
def client(minio):
    return client_for(minio.endpoint, minio)


@pytest.fixture
def ready(minio, s3, tmp_path):
    node = Node(minio, tmp_path)
    for name in node.buckets.values():
        s3.create_bucket(Bucket=name)
    return node


class StateDiskFull:
    """Make every write of the sync state file fail with ENOSPC, where :mod:`.s3.state` writes it: its ``open``
    of a file named ``.visionsuit-sync.json*`` for writing gives a file whose writes raise ``ENOSPC`` (the
    file is created, as on a real full disk). Reading the state still works."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.failed = []

    def on(self):
        real_open = builtins.open
        failed = self.failed

        class Full:
            def __init__(self, f):
                self.f = f

            def write(self, data):
                failed.append(self.f.name)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def __getattr__(self, name):
                return getattr(self.f, name)

        def fake_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if any(m in mode for m in "wax+") and os.path.basename(str(file)).startswith(STATE_FILE):
                return Full(f)
            return f

        self.monkeypatch.setattr(state_mod, "open", fake_open, raising=False)

    def off(self):
        self.monkeypatch.delattr(state_mod, "open", raising=False)


def _leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith(STATE_FILE) and n != STATE_FILE)


# ---------------------------------------------------------------------------------------------- issue 11
def test_download_state_write_enospc_is_reported_and_the_next_run_is_correct(s3, bucket, client, tmp_path,
                                                                             monkeypatch):
    put(s3, bucket, "a.bin", b"1" * 3000)
    put(s3, bucket, "sub/b.bin", b"b" * 100)
    put(s3, bucket, "keep.bin", b"k" * 10)
    dest = tmp_path / "d"
    r0 = download(client, bucket, "", str(dest))
    assert r0["files"] == 3
    saved = json.loads((dest / STATE_FILE).read_text())

    put(s3, bucket, "a.bin", b"2" * 3000)  # same size, new content
    put(s3, bucket, "c.bin", b"c" * 500)
    s3.delete_object(Bucket=bucket, Key="sub/b.bin")
    full = StateDiskFull(monkeypatch)
    full.on()
    r1 = download(client, bucket, "", str(dest), delete=True)
    full.off()
    assert full.failed, "the state write was not attempted"
    assert r1["transferred"] == ["a.bin", "c.bin"] and r1["deleted"] == 1
    assert len(r1.get("warnings") or []) == 1, "the unwritten state file went unreported"
    warning = r1["warnings"][0]
    assert STATE_FILE in warning and str(dest) in warning and "No space left on device" in warning
    assert "hash" in warning  # says what it costs: the next run hashes the files again
    assert _leftovers(dest) == []  # no temp file of the failed write is left behind
    assert json.loads((dest / STATE_FILE).read_text()) == saved  # the old state is untouched (stale)
    assert (dest / "a.bin").read_bytes() == b"2" * 3000

    # before the next run: someone puts a file back where the sync had deleted one (the stale state still
    # records it), and a.bin changes again with the same size
    (dest / "sub").mkdir(exist_ok=True)
    (dest / "sub" / "b.bin").write_bytes(b"placed by hand")
    put(s3, bucket, "a.bin", b"3" * 3000)
    r2 = download(client, bucket, "", str(dest), delete=True)
    assert r2["warnings"] == []
    assert r2["transferred"] == ["a.bin"]  # changed: fetched, not skipped from a stale record
    assert r2["adopted"] == ["c.bin"]  # complete but unrecorded: hashed and adopted, not downloaded again
    assert r2["skipped"] == 2 and r2["requests"] == {"ListObjectsV2": 1, "GetObject": 1}
    assert r2["deleted"] == 0 and (dest / "sub" / "b.bin").read_bytes() == b"placed by hand"
    assert (dest / "a.bin").read_bytes() == b"3" * 3000
    entries = json.loads((dest / STATE_FILE).read_text())["targets"][f"{bucket}/"]
    assert sorted(entries) == ["a.bin", "c.bin", "keep.bin"]
    r3 = download(client, bucket, "", str(dest), delete=True)
    assert r3["files"] == 0 and r3["adopted"] == [] and r3["skipped"] == 3 and r3["requests"] == {
        "ListObjectsV2": 1}


def test_upload_and_download_object_state_write_enospc_is_reported(s3, bucket, client, tmp_path, monkeypatch):
    src = tmp_path / "out"
    src.mkdir()
    (src / "one.png").write_bytes(b"\x89PNG1")
    (src / "two.png").write_bytes(b"\x89PNG2")
    full = StateDiskFull(monkeypatch)
    full.on()
    r1 = upload(client, bucket, "renders", str(src))
    assert r1["files"] == 2 and len(r1.get("warnings") or []) == 1 and "No space left on device" in r1["warnings"][0]
    assert not (src / STATE_FILE).exists() and _leftovers(src) == []
    one = download_object(client, bucket, "renders/one.png", str(tmp_path / "single" / "one.png"))
    assert one["files"] == 1 and len(one["warnings"]) == 1 and STATE_FILE in one["warnings"][0]
    full.off()
    r2 = upload(client, bucket, "renders", str(src))
    assert r2["files"] == 0 and sorted(r2["adopted"]) == ["one.png", "two.png"] and r2["warnings"] == []
    assert upload(client, bucket, "renders", str(src))["adopted"] == []
    again = download_object(client, bucket, "renders/one.png", str(tmp_path / "single" / "one.png"))
    assert again["files"] == 0 and again["adopted"] == ["one.png"] and again["warnings"] == []


def test_sync_checkpoints_command_reports_the_unwritten_state(ready, s3, tmp_path, monkeypatch, capsys):
    """In process (the write fails where the state module writes it): the warning on stderr and in --json."""
    s3.put_object(Bucket=ready.buckets["checkpoints"], Key="m.safetensors", Body=b"m" * 2000)
    for name in list(os.environ):
        if name.startswith("MINIO_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VISIONSUIT_MINIO_ENV", str(ready.env_file))
    dest = tmp_path / "ckpt"
    full = StateDiskFull(monkeypatch)
    full.on()
    assert node_cli.main(["--dest", str(dest), "-q"], prog="sync-checkpoints") == 0  # -q: the warning only
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sync-checkpoints: warning: ")
    assert STATE_FILE in lines[0] and "No space left on device" in lines[0]
    assert node_cli.main(["--dest", str(dest), "--json"], prog="sync-checkpoints") == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["files"] == 0 and doc["adopted"] == ["m.safetensors"] and len(doc["warnings"]) == 1
    assert err.startswith("sync-checkpoints: warning: ")
    full.off()
    assert node_cli.main(["--dest", str(dest), "--json"], prog="sync-checkpoints") == 0
    out, err = capsys.readouterr()
    assert err == "" and json.loads(out)["warnings"] == [] and (dest / STATE_FILE).exists()
    assert ready.secret not in out + err


def _mount_tmpfs(path, size):
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % proc.stderr.strip())


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tiny tmpfs")
def test_sync_checkpoints_on_an_exactly_full_tmpfs(ready, s3, tmp_path):
    """The real thing: the models fill the disk exactly, so the state file cannot be written."""
    bucket = ready.buckets["checkpoints"]
    models = {"m1.safetensors": os.urandom(64 * KiB), "sub/m2.safetensors": os.urandom(32 * KiB)}
    for key, data in models.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "512k")
    try:
        dest = disk / "ckpt"
        dest.mkdir()
        filler = disk / "filler"
        st = os.statvfs(disk)
        free = st.f_bavail * st.f_frsize
        filler.write_bytes(b"\0" * (free - 96 * KiB))  # exactly the models' size stays free
        st = os.statvfs(disk)
        assert st.f_bavail * st.f_frsize == 96 * KiB

        p = ready.run("sync-checkpoints", "--dest", dest, "-q")  # -q: the warning only
        assert p.returncode == 0 and p.stdout == ""
        assert p.stderr.startswith("sync-checkpoints: warning: ") and p.stderr.count("\n") == 1
        assert STATE_FILE in p.stderr and "No space left on device" in p.stderr
        assert not (dest / STATE_FILE).exists() and _leftovers(dest) == []
        for key, data in models.items():
            assert (dest / key).read_bytes() == data

        # still full: nothing is downloaded again, the files are adopted, and the warning repeats
        p = ready.run("sync-checkpoints", "--dest", dest, "--json")
        doc = json.loads(p.stdout)
        assert doc["files"] == 0 and sorted(doc["adopted"]) == sorted(models) and len(doc["warnings"]) == 1
        assert "No space left on device" in p.stderr and doc["requests"] == {"ListObjectsV2": 1}

        filler.unlink()
        doc = ready.json("sync-checkpoints", "--dest", dest)
        assert doc["files"] == 0 and sorted(doc["adopted"]) == sorted(models) and doc["warnings"] == []
        assert (dest / STATE_FILE).exists()
        p = ready.run("sync-checkpoints", "--dest", dest, "--json")
        doc = json.loads(p.stdout)
        assert p.stderr == "" and doc["adopted"] == [] and doc["skipped"] == 2
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ---------------------------------------------------------------------------------------------- issue 12
STANDIN_MODELS = ROOT / "rig" / "comfyui-standin" / "models"


def test_the_placeholder_rule_covers_comfyui_0_3_64_and_the_standin():
    standin = sorted(p.name for p in STANDIN_MODELS.glob("*/put_*_here"))
    placeholders, is_placeholder = keys.COMFYUI_PLACEHOLDERS, keys.is_placeholder
    assert standin and set(standin) <= placeholders
    assert "_output_images_will_be_put_here" in placeholders
    for name in placeholders:
        assert is_reserved(name) and is_placeholder(name) and is_placeholder("/opt/comfyui/models/x/" + name)
        assert key_to_relpath(name) is None and key_to_relpath("renders/" + name, "renders") is None
    # example.png is only ComfyUI's directly in a folder named input
    assert is_placeholder("/opt/comfyui/input/example.png") and is_placeholder("input/example.png")
    assert not is_placeholder("/opt/comfyui/output/example.png") and not is_placeholder("example.png")
    assert not is_reserved("example.png") and key_to_relpath("example.png") == "example.png"
    assert key_to_relpath("input/example.png") is None
    assert key_to_relpath("put_my_own_here.png") == "put_my_own_here.png"  # only the exact names


def _fresh_checkout(root, owner=(4321, 4322)):
    """The placeholders of a fresh ComfyUI checkout: root-owned files in folders of the service user."""
    files = {
        "output/_output_images_will_be_put_here": b"",
        "input/example.png": b"\x89PNG example",
        "models/checkpoints/put_checkpoints_here": b"",
        "models/loras/put_loras_here": b"",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if os.geteuid() == 0:
            os.chown(path.parent, *owner)
    return {rel: os.stat(root / rel) for rel in files}


def _untouched(root, before):
    for rel, st in before.items():
        now = os.stat(root / rel)
        assert (now.st_ino, now.st_size, now.st_mtime_ns, now.st_uid) == (
            st.st_ino, st.st_size, st.st_mtime_ns, st.st_uid), rel


def test_upload_outputs_leaves_the_placeholder_out(ready, s3, tmp_path):
    comfy = tmp_path / "comfyui"
    before = _fresh_checkout(comfy)
    out = comfy / "output"
    (out / "ComfyUI_00001_.png").write_bytes(b"\x89PNG1")
    (out / "sub").mkdir()
    (out / "sub" / "example.png").write_bytes(b"\x89PNG a render named example")  # not in input/: a file
    r = ready.json("upload-outputs", "--source", out, "--delete")
    assert sorted(r["transferred"]) == ["renders/ComfyUI_00001_.png", "renders/sub/example.png"]
    listed = s3.list_objects_v2(Bucket=ready.buckets["outputs"]).get("Contents", [])
    assert sorted(o["Key"] for o in listed) == ["renders/ComfyUI_00001_.png", "renders/sub/example.png"]
    entries = json.loads((out / STATE_FILE).read_text())["targets"][ready.buckets["outputs"] + "/renders"]
    assert sorted(entries) == ["ComfyUI_00001_.png", "sub/example.png"]
    again = ready.json("upload-outputs", "--source", out, "--delete")
    assert again["changed"] is False and again["files"] == 0
    _untouched(comfy, before)


def test_placeholder_objects_and_records_never_clobber_or_delete_the_local_ones(ready, s3, client, tmp_path):
    comfy = tmp_path / "comfyui"
    before = _fresh_checkout(comfy)
    bucket = ready.buckets["checkpoints"]
    # a bucket filled from a fresh checkout by another tool: it holds the placeholder too
    s3.put_object(Bucket=bucket, Key="put_checkpoints_here", Body=b"not empty in the bucket")
    s3.put_object(Bucket=bucket, Key="sdxl/put_checkpoints_here", Body=b"")
    s3.put_object(Bucket=bucket, Key="model.safetensors", Body=b"M" * 1000)
    dest = comfy / "models" / "checkpoints"
    r = ready.json("sync-checkpoints", "--dest", dest, "--delete")
    assert r["transferred"] == ["model.safetensors"] and r["deleted"] == 0
    assert sorted(os.listdir(dest)) == [STATE_FILE, "model.safetensors", "put_checkpoints_here"]
    entries = json.loads((dest / STATE_FILE).read_text())["targets"][bucket + "/"]
    assert sorted(entries) == ["model.safetensors"]
    _untouched(comfy, before)

    # a state file written by an earlier version recorded the placeholder; it left the bucket: --delete keeps it
    doc = json.loads((dest / STATE_FILE).read_text())
    st = os.stat(dest / "put_checkpoints_here")
    doc["targets"][bucket + "/"]["put_checkpoints_here"] = {
        "key": "put_checkpoints_here", "size": st.st_size, "mtime_ns": st.st_mtime_ns,
        "etag": "d41d8cd98f00b204e9800998ecf8427e"}
    (dest / STATE_FILE).write_text(json.dumps(doc))
    s3.delete_object(Bucket=bucket, Key="put_checkpoints_here")
    r = ready.json("sync-checkpoints", "--dest", dest, "--delete")
    assert r["deleted"] == 0 and r["files"] == 0 and r["plan"] == []
    _untouched(comfy, before)
    entries = json.loads((dest / STATE_FILE).read_text())["targets"][bucket + "/"]
    assert sorted(entries) == ["model.safetensors"]

    # the input folder: example.png in the bucket does not replace ComfyUI's, in either direction
    inbucket = ready.buckets["loras"]
    s3.put_object(Bucket=inbucket, Key="in/example.png", Body=b"other")
    s3.put_object(Bucket=inbucket, Key="in/photo.png", Body=b"photo")
    r = download(client, inbucket, "in", str(comfy / "input"), delete=True)
    assert r["transferred"] == ["in/photo.png"] and r["deleted"] == 0
    up = upload(client, inbucket, "up", str(comfy / "input"))
    assert up["transferred"] == ["up/photo.png"]
    _untouched(comfy, before)
    with pytest.raises(Exception) as e:
        download_object(client, bucket, "model.safetensors", str(dest / "put_checkpoints_here"))
    assert "not a plain file name" in str(e.value)
    _untouched(comfy, before)


def test_dry_run_plans_nothing_for_placeholders(ready, s3, tmp_path):
    comfy = tmp_path / "comfyui"
    _fresh_checkout(comfy)
    s3.put_object(Bucket=ready.buckets["loras"], Key="put_loras_here", Body=b"x")
    plan = ready.json("sync-loras", "--dest", comfy / "models" / "loras", "--delete", "--dry-run")
    assert plan["plan"] == [] and plan["before"] == [] and plan["after"] == []
    plan = ready.json("upload-outputs", "--source", comfy / "output", "--dry-run")
    assert plan["plan"] == [] and plan["files"] == 0


def test_upload_of_a_file_with_a_non_utf8_name_is_a_clear_error(s3, bucket, client, tmp_path):
    """A file name that is not UTF-8 (Latin-1 from an old tool) cannot be an S3 key: one clear error naming the
    file, not a UnicodeEncodeError traceback; nothing is uploaded."""
    src = tmp_path / "out"
    src.mkdir()
    (src / "ok.png").write_bytes(b"fine")
    with open(os.path.join(os.fsencode(src), b"caf\xe9.png"), "wb") as f:
        f.write(b"latin-1 name")
    with pytest.raises(GpuWorkerError) as exc:
        upload(client, bucket, "", str(src))
    assert "not valid UTF-8" in str(exc.value) and "caf\\xe9.png" in str(exc.value)
    assert exc.value.hint and "rename" in exc.value.hint


# ---- the stand-in has the placeholders of a fresh ComfyUI 0.3.64 checkout ------------------------------------

STANDIN_DIR = ROOT / "rig" / "comfyui-standin"
CHECKOUT_FILES = ("output/_output_images_will_be_put_here", "input/example.png")


def _png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_the_standin_its_repository_and_its_fixture_base_dirs_hold_the_checkout_placeholders(standin_factory,
                                                                                              tmp_path):
    assert (STANDIN_DIR / CHECKOUT_FILES[0]).read_bytes() == b""
    assert _png_size((STANDIN_DIR / CHECKOUT_FILES[1]).read_bytes()) == (1, 1)
    for rel in CHECKOUT_FILES:
        assert keys.is_placeholder(rel) and keys.is_placeholder(str(STANDIN_DIR / rel)), rel
    # tracked in the git repository the comfyui role clones (the .gitignore keeps other run-time files out)
    repo = tmp_path / "standin.git"
    subprocess.run(["bash", str(ROOT / "rig" / "standin-repo.sh"), str(repo)], check=True, capture_output=True,
                   timeout=60)
    for tag in ("standin-v1", "standin-v2"):
        tracked = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", tag], check=True,
                                 capture_output=True, text=True, timeout=30).stdout.split()
        assert sorted(t for t in tracked if t.startswith(("output/", "input/"))) == sorted(CHECKOUT_FILES), tag
        assert {"models/checkpoints/put_checkpoints_here", "models/loras/put_loras_here"} <= set(tracked)
    # a base directory made by the fixtures is laid out like a fresh checkout too
    srv = standin_factory()
    for rel in CHECKOUT_FILES:
        assert (srv.base_dir / rel).read_bytes() == (STANDIN_DIR / rel).read_bytes(), rel
    assert "example.png" in srv.get_json("/object_info/LoadImage")["LoadImage"]["input"]["required"]["image"][0]


def test_upload_outputs_of_a_fresh_standin_output_dir_uploads_nothing(ready, s3, standin_factory):
    srv = standin_factory()
    out = srv.output_dir
    assert sorted(p.name for p in out.iterdir()) == ["_output_images_will_be_put_here"]
    r = ready.json("upload-outputs", "--source", out, "--delete")
    assert r["transferred"] == [] and r["changed"] is False
    assert s3.list_objects_v2(Bucket=ready.buckets["outputs"]).get("Contents", []) == []
    # after a render only the render goes up; the placeholder stays where it is, unrecorded
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "probe"}}}
    assert srv.wait_history(srv.submit(prompt))["status"]["status_str"] == "success"
    r = ready.json("upload-outputs", "--source", out, "--delete")
    assert r["transferred"] == ["renders/probe_00001_.png"]
    listed = s3.list_objects_v2(Bucket=ready.buckets["outputs"]).get("Contents", [])
    assert [o["Key"] for o in listed] == ["renders/probe_00001_.png"]
    entries = json.loads((out / STATE_FILE).read_text())["targets"][ready.buckets["outputs"] + "/renders"]
    assert sorted(entries) == ["probe_00001_.png"]
    assert (out / "_output_images_will_be_put_here").read_bytes() == b""
