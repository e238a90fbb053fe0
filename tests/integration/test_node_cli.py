# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The node commands (console scripts of visionsuit-gpuworker -> visionsuit_gpuworker.cli.node) end to end against
a real MinIO. They run as installed in the test venv (`make venv` installs the package), as a node runs them."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

try:  # the proxy lives with the engine tests; tests/integration is not a package
    from test_s3sync import ByteProxy
except ImportError:  # pragma: no cover - imported as a package module
    from tests.integration.test_s3sync import ByteProxy

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
# The console scripts pip installed beside the interpreter, as on a node (<venv>/bin).
BIN = Path(sys.executable).parent
COMMANDS = ["generate-model-manifest", "sync-checkpoints", "sync-loras", "upload-outputs", "test-create-buckets",
            "test-upload-models", "test-export-outputs"]
KiB = 1024
MiB = 1024 * 1024


class Node:
    def __init__(self, minio, tmp_path, endpoint=None):
        uid = uuid.uuid4().hex[:8]
        self.buckets = {"checkpoints": "ck-" + uid, "loras": "lo-" + uid, "outputs": "out-" + uid}
        self.env_file = tmp_path / "minio.env"
        self.env_file.write_text(
            "# test node\nexport MINIO_ENDPOINT={}\nMINIO_ACCESS_KEY={}\nMINIO_SECRET_KEY='{}'\n"
            "MINIO_BUCKET_CHECKPOINTS={}\nMINIO_BUCKET_LORAS={}\nMINIO_BUCKET_OUTPUTS={}\n"
            "MINIO_OUTPUTS_PREFIX=renders\n".format(endpoint or minio.endpoint, minio.access_key, minio.secret_key,
                                                self.buckets["checkpoints"], self.buckets["loras"],
                                                self.buckets["outputs"]))
        self.secret = minio.secret_key
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MINIO_")}
        self.env.update(VISIONSUIT_MINIO_ENV=str(self.env_file), PYTHONDONTWRITEBYTECODE="1")

    def argv(self, command, *args):
        return [sys.executable, str(BIN / command), *map(str, args)]

    def run(self, command, *args, env=None, check=True):
        proc = subprocess.run(self.argv(command, *args), env=dict(self.env, **(env or {})), capture_output=True,
                              text=True, timeout=120)
        assert self.secret not in proc.stdout + proc.stderr
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    def json(self, command, *args, **kw):
        return json.loads(self.run(command, "--json", *args, **kw).stdout)


@pytest.fixture
def node(minio, tmp_path):
    return Node(minio, tmp_path)


@pytest.fixture
def ready(node, s3):
    for name in node.buckets.values():
        s3.create_bucket(Bucket=name)
    return node


def models_dir(tmp_path):
    models = tmp_path / "models"
    (models / "sdxl").mkdir(parents=True)
    (models / "base model.safetensors").write_bytes(b"B" * 5000)
    (models / "sdxl" / "jüggernaut.safetensors").write_bytes(os.urandom(40 * KiB))
    loras = tmp_path / "loras"
    loras.mkdir()
    (loras / "detail.safetensors").write_bytes(b"L" * 300)
    (loras / "notes.txt").write_text("not a model")
    return models, loras


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(node, command):
    proc = node.run(command, "--help")
    assert proc.stdout.startswith(f"usage: {command}") and "exit codes" in proc.stdout


def test_create_buckets_upload_models_manifest_and_sync(node, s3, tmp_path):
    created = node.json("test-create-buckets")
    assert sorted(created["created"]) == sorted(node.buckets.values()) and created["changed"]
    again = node.json("test-create-buckets")
    assert again["created"] == [] and sorted(again["existing"]) == sorted(node.buckets.values())

    models, loras = models_dir(tmp_path)
    up = node.json("test-upload-models", "--models", models, "--loras", loras)
    assert sorted(up["checkpoints"]["transferred"]) == ["base model.safetensors", "sdxl/jüggernaut.safetensors"]
    assert up["loras"]["files"] == 2
    head = s3.head_object(Bucket=node.buckets["checkpoints"], Key="base model.safetensors")
    assert head["Metadata"]["original-filename"] == "base model.safetensors"
    assert node.json("test-upload-models", "--models", models)["checkpoints"]["files"] == 0

    manifest = json.loads(node.run("generate-model-manifest").stdout)
    assert manifest["bucket"] == node.buckets["checkpoints"] and manifest["count"] == 2
    names = {m["name"]: m for m in manifest["models"]}
    assert names["sdxl/jüggernaut.safetensors"]["original_filename"] == "jüggernaut.safetensors"
    assert names["base model.safetensors"]["size"] == 5000 and names["base model.safetensors"]["etag"]
    assert set(names["base model.safetensors"]) >= {"name", "key", "size", "etag", "last_modified",
                                                    "original_filename"}
    out = tmp_path / "manifest.json"
    proc = node.run("generate-model-manifest", "--output", out)
    assert proc.stdout == f"generate-model-manifest: 2 model(s) written to {out}\n"  # the journal's line
    assert json.loads(out.read_text())["models"] == manifest["models"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".manifest")] == []

    dest = tmp_path / "ckpt"
    dry = node.run("sync-checkpoints", "--dest", dest, "--dry-run")
    assert "would download base model.safetensors" in dry.stdout and not dest.exists()
    logged = node.run("sync-checkpoints", "--dest", dest)  # not a TTY (a timer): a line per file and a summary
    assert len(logged.stderr.splitlines()) == 2 and "2 file(s) downloaded" in logged.stdout
    assert node.run("sync-checkpoints", "--dest", dest, "-q").stdout == ""
    assert (dest / "sdxl" / "jüggernaut.safetensors").read_bytes() == (
        models / "sdxl" / "jüggernaut.safetensors").read_bytes()
    second = node.json("sync-checkpoints", "--dest", dest)
    assert second["files"] == 0 and second["skipped"] == 2 and second["requests"] == {"ListObjectsV2": 1}
    assert "up to date" in node.run("sync-checkpoints", "--dest", dest, "-v").stdout

    lora_dest = tmp_path / "loras-out"
    r = node.json("sync-loras", "--dest", lora_dest, "--include", "*.safetensors")
    assert r["transferred"] == ["detail.safetensors"] and sorted(os.listdir(lora_dest)) == [
        ".visionsuit-sync.json", "detail.safetensors"]

    # --delete removes what left the bucket (dry-run first)
    s3.delete_object(Bucket=node.buckets["checkpoints"], Key="base model.safetensors")
    plan = node.json("sync-checkpoints", "--dest", dest, "--delete", "--dry-run")
    assert plan["deleted_paths"] == [str(dest / "base model.safetensors")]
    assert (dest / "base model.safetensors").exists()
    r = node.json("sync-checkpoints", "--dest", dest, "--delete")
    assert r["deleted"] == 1 and not (dest / "base model.safetensors").exists()


def test_uploaded_models_carry_a_crc32_and_sync_fetches_them_with_gets_only(ready, s3, tmp_path):
    import base64
    import zlib
    models = tmp_path / "models"
    (models / "sdxl").mkdir(parents=True)
    big = os.urandom(11 * MiB + 3)
    (models / "sdxl" / "big.safetensors").write_bytes(big)
    for i in range(4):
        (models / f"small-{i}.safetensors").write_bytes(os.urandom(10 * KiB + i))
    sizes = ["--multipart-threshold", "5M", "--part-size", "5M"]
    up = ready.json("test-upload-models", "--models", models, *sizes)
    assert up["checkpoints"]["requests"]["UploadPart"] == 3
    head = s3.head_object(Bucket=ready.buckets["checkpoints"], Key="sdxl/big.safetensors", ChecksumMode="ENABLED")
    assert head["ChecksumType"] == "FULL_OBJECT" and head["ETag"].strip('"').endswith("-3")
    assert head["ChecksumCRC32"] == base64.b64encode(zlib.crc32(big).to_bytes(4, "big")).decode()

    dest = tmp_path / "ckpt"
    r = ready.json("sync-checkpoints", "--dest", dest, "--multipart-threshold", "4M", "--part-size", "4M")
    # small objects: one GET each; the big one: one HEAD (its CRC32) and 3 ranged GETs, verified without a re-read
    assert r["files"] == 5 and r["requests"] == {"ListObjectsV2": 1, "HeadObject": 1, "GetObject": 4 + 3}
    assert (dest / "sdxl" / "big.safetensors").read_bytes() == big


def test_env_overrides_bucket_and_prefix(ready, s3, tmp_path):
    other = "ov-" + uuid.uuid4().hex[:8]
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=other, Key="sub/x/y.safetensors", Body=b"y")
    r = ready.json("sync-loras", "--dest", tmp_path / "l",
                   env={"MINIO_BUCKET_LORAS": other, "MINIO_LORAS_PREFIX": "sub"})
    assert r["transferred"] == ["sub/x/y.safetensors"] and (tmp_path / "l" / "x" / "y.safetensors").exists()


def test_upload_outputs_and_export(ready, s3, tmp_path):
    src = tmp_path / "output"
    (src / "batch 1").mkdir(parents=True)
    (src / "ComfyUI_00001_.png").write_bytes(b"\x89PNG1")
    (src / "batch 1" / "ComfyUI_00002_.png").write_bytes(b"\x89PNG2")
    r = ready.json("upload-outputs", "--source", src)
    assert sorted(r["transferred"]) == ["renders/ComfyUI_00001_.png", "renders/batch 1/ComfyUI_00002_.png"]
    head = s3.head_object(Bucket=ready.buckets["outputs"], Key="renders/ComfyUI_00001_.png")
    assert head["ContentType"] == "image/png"
    assert ready.json("upload-outputs", "--source", src)["changed"] is False
    export = tmp_path / "export"
    r = ready.json("test-export-outputs", export)
    assert r["files"] == 2 and (export / "batch 1" / "ComfyUI_00002_.png").read_bytes() == b"\x89PNG2"

    # the Python entry shared with test-run-workflow --export-dir
    from visionsuit_gpuworker.cli import node as node_cli
    res = node_cli.export_outputs(str(tmp_path / "only"), names=["batch 1/ComfyUI_00002_.png"],
                                  env_file=str(ready.env_file))
    assert res["transferred"] == ["renders/batch 1/ComfyUI_00002_.png"]


def test_errors_are_one_line_with_documented_exit_codes(ready, minio, tmp_path):
    bad_secret = "definitely-wrong-secret"
    p = ready.run("sync-checkpoints", "--dest", tmp_path / "d", check=False, env={"MINIO_SECRET_KEY": bad_secret})
    assert p.returncode == 7 and "rejected the credentials" in p.stderr and "MINIO_SECRET_KEY" in p.stderr
    assert bad_secret not in p.stderr and "Traceback" not in p.stderr and p.stderr.count("\n") == 1

    p = ready.run("sync-checkpoints", "--dest", tmp_path / "d", check=False, env={"MINIO_BUCKET_CHECKPOINTS": "nope-x"})
    assert p.returncode == 1 and f"bucket 'nope-x' does not exist on {minio.endpoint}" in p.stderr

    p = ready.run("sync-loras", check=False, env={"MINIO_ENDPOINT": "http://127.0.0.1:9000/minio"})
    assert p.returncode == 3 and "MINIO_ENDPOINT" in p.stderr and "path" in p.stderr

    p = ready.run("sync-loras", check=False, env={"VISIONSUIT_MINIO_ENV": str(tmp_path / "missing.env")})
    assert p.returncode == 3 and "missing.env does not exist" in p.stderr

    broken = tmp_path / "broken.env"
    broken.write_text("MINIO_ENDPOINT=http://127.0.0.1:1\nthis line is wrong\n")
    p = ready.run("test-create-buckets", "--env-file", broken, check=False)
    assert p.returncode == 3 and "line 2 is not KEY=VALUE" in p.stderr

    p = ready.run("sync-loras", "--workers", "zero", check=False)
    assert p.returncode == 2 and "invalid int value" in p.stderr and p.stderr.count("\n") == 1

    p = ready.run("sync-loras", "--dest", tmp_path / "d", "--retries", "1", check=False,
                  env={"MINIO_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"})
    assert p.returncode == 6 and "cannot reach MinIO" in p.stderr and "connection refused" in p.stderr


def _closed_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_killed_transfer_leaves_no_partial_file_and_resumes(ready, s3, minio, tmp_path):
    data = os.urandom(3 * MiB)
    s3.put_object(Bucket=ready.buckets["checkpoints"], Key="huge.safetensors", Body=data)
    dest = tmp_path / "ckpt"
    args = ["--dest", dest, "--multipart-threshold", "256K", "--part-size", "256K", "--workers", "2"]
    slow = ByteProxy(minio.port, rate=384 * KiB)
    try:
        proc = subprocess.Popen(ready.argv("sync-checkpoints", *args),
                                env=dict(ready.env, MINIO_ENDPOINT=slow.endpoint),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while slow.down_bytes < 1200 * KiB and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the transfer ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    finally:
        slow.close()
    assert not (dest / "huge.safetensors").exists()
    assert (dest / ".huge.safetensors.vsync-part").exists()
    side = json.loads((dest / ".huge.safetensors.vsync-part.json").read_text())
    assert side["done"] and len(side["done"]) < 12

    fast = ByteProxy(minio.port)
    try:
        r = ready.json("sync-checkpoints", *args, env={"MINIO_ENDPOINT": fast.endpoint})
    finally:
        fast.close()
    assert r["resumed"] == ["huge.safetensors"]
    assert fast.down_bytes < len(data) - len(side["done"]) * 256 * KiB + 64 * KiB  # headers/listing slack
    assert (dest / "huge.safetensors").read_bytes() == data
    assert sorted(os.listdir(dest)) == [".visionsuit-sync.json", "huge.safetensors"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand files to another user")
def test_as_root_downloads_belong_to_the_target_folders_owner(ready, s3, tmp_path):
    s3.put_object(Bucket=ready.buckets["loras"], Key="sub/owned.safetensors", Body=b"o" * 100)
    dest = tmp_path / "loras-owned"
    dest.mkdir()
    os.chown(dest, 4321, 4322)  # stands for the ComfyUI service user
    ready.run("sync-loras", "--dest", dest)
    for path in (dest / "sub", dest / "sub" / "owned.safetensors"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (4321, 4322), path
    explicit = tmp_path / "loras-explicit"
    explicit.mkdir()
    os.chown(explicit, 4321, 4322)
    ready.run("sync-loras", "--dest", explicit, "--owner", "0", "--group", "0")
    assert (explicit / "sub" / "owned.safetensors").stat().st_uid == 0


# ---------------------------------------------------------------------------------------------- issue 14 item 8
ALL_COMMANDS = COMMANDS + ["test-run-workflow"]
GALAXY_VERSION = next(line.split(":", 1)[1].strip().strip("'\"") for line in (ROOT / "galaxy.yml").read_text()
                      .splitlines() if line.startswith("version:"))


def _bare(command, *args):
    """A node command without MinIO behind it (the options are refused before anything is read)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIO_")}
    env.update(VISIONSUIT_MINIO_ENV="/nonexistent/minio.env", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, str(BIN / command), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=60)


_TRANSFER = ["sync-checkpoints", "sync-loras", "upload-outputs", "test-upload-models", "test-export-outputs"]
BAD_VALUES = (
    [(c, "--workers", v) for c in _TRANSFER + ["generate-model-manifest"] for v in ("0", "65", "zero", "-3")]
    + [(c, "--retries", v) for c in COMMANDS for v in ("-1", "many")]
    + [(c, "--part-size", v) for c in _TRANSFER for v in ("1K", "0", "lots")]
    + [(c, "--multipart-threshold", v) for c in _TRANSFER for v in ("0", "-5M", "x")]
    + [(c, "--bwlimit", v) for c in _TRANSFER for v in ("fast", "-1M", "10Q")]
    + [("test-run-workflow", o, v) for o, v in (("--port", "0"), ("--port", "70000"), ("--port", "http"),
                                                ("--timeout", "0"), ("--timeout", "-1"), ("--interval", "0"),
                                                ("--interval", "nan"), ("--export-wait", "-1"),
                                                ("--timeout", "inf"))]
)


@pytest.mark.parametrize(("command", "option", "value"), BAD_VALUES)
def test_bad_option_values_are_usage_errors_naming_the_option(command, option, value, tmp_path):
    extra = ["--workflow", tmp_path / "wf.json"] if command == "test-run-workflow" else []
    extra += [tmp_path] if command == "test-export-outputs" else []
    p = _bare(command, *extra, f"{option}={value}")
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith(f"{command}: error: argument {option}"), p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_command_prints_the_package_version(command):
    p = _bare(command, "--version")
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"{command} {GALAXY_VERSION}\n"


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_command_documents_the_one_exit_code_table(command):
    from visionsuit_gpuworker.errors import exit_codes_text

    p = _bare(command, "--help")
    assert p.returncode == 0
    assert " ".join(exit_codes_text().split()) in " ".join(p.stdout.split())


def test_the_exit_code_table_is_documented_once_in_the_readme():
    from visionsuit_gpuworker.errors import EXIT_CODES

    text = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\d+)` \| (.+?) \|$", text, re.M))
    assert {int(k) for k in rows} == {code for code, _ in EXIT_CODES}
    assert len(set(dict(EXIT_CODES))) == len(EXIT_CODES)  # one meaning per number


def test_wrong_credentials_and_an_unreachable_server_have_their_own_codes(ready, tmp_path):
    p = ready.run("sync-checkpoints", "--dest", tmp_path / "d", check=False,
                  env={"MINIO_SECRET_KEY": "definitely-wrong-secret"})
    assert p.returncode == 7 and "rejected the credentials" in p.stderr  # fatal: retrying will not help

    p = ready.run("sync-loras", "--dest", tmp_path / "d", "--retries", "0", check=False,
                  env={"MINIO_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"})
    assert p.returncode == 6 and "cannot reach MinIO" in p.stderr  # temporary: run again later


# ---------------------------------------------------------------------------------------------- issue 14 item 8, part 2
FILE_LINE = re.compile(r'^(?P<prog>[a-z-]+): (?P<verb>downloaded|uploaded) "(?P<key>[^"]+)" (?P<size>\d+) bytes '
                       r"\([^)]+\) in (?P<seconds>[\d.]+) s, (?P<rate>[\d.]+) MiB/s$")
SUMMARY = re.compile(r"^(?P<prog>[a-z-]+): (?P<files>\d+) file\(s\) (?P<verb>downloaded|uploaded), (?P<bytes>\d+) "
                     r"bytes \([^)]+\) in [\d.]+ s, [\d.]+ MiB/s; (?P<skipped>\d+) up to date, (?P<deleted>\d+) "
                     r"deleted, (?P<failed>\d+) failed$")


def test_a_timer_run_logs_each_file_and_a_summary(ready, s3, tmp_path):
    """Not on a terminal (a systemd timer: stdout and stderr go to the journal): a line per transferred file on
    stderr (key, size, seconds, MiB/s) and the summary on stdout; nothing is silent any more."""
    objects = {"a.safetensors": os.urandom(300 * KiB), "sub/b c.safetensors": b"b" * 1000}
    for key, data in objects.items():
        s3.put_object(Bucket=ready.buckets["checkpoints"], Key=key, Body=data)
    dest = tmp_path / "ck"
    p = ready.run("sync-checkpoints", "--dest", dest)
    lines = [FILE_LINE.match(line) for line in p.stderr.splitlines()]
    assert all(lines), p.stderr
    assert {m["key"]: int(m["size"]) for m in lines} == {k: len(v) for k, v in objects.items()}
    assert all(m["prog"] == "sync-checkpoints" and m["verb"] == "downloaded" for m in lines)
    summary = SUMMARY.match(p.stdout.rstrip("\n"))
    assert summary and p.stdout.count("\n") == 1, p.stdout
    assert (summary["files"], summary["bytes"], summary["skipped"], summary["failed"]) == (
        "2", str(sum(map(len, objects.values()))), "0", "0")

    again = ready.run("sync-checkpoints", "--dest", dest)
    assert again.stderr == "" and SUMMARY.match(again.stdout.rstrip("\n"))["skipped"] == "2"
    quiet = ready.run("sync-checkpoints", "--dest", tmp_path / "ck2", "-q")
    assert quiet.stdout == quiet.stderr == "" and (tmp_path / "ck2" / "a.safetensors").exists()

    src = tmp_path / "renders"
    src.mkdir()
    (src / "ComfyUI_00001_.png").write_bytes(b"png" * 100)
    up = ready.run("upload-outputs", "--source", src)
    m = FILE_LINE.match(up.stderr.rstrip("\n"))
    assert m and m["verb"] == "uploaded" and m["key"] == "renders/ComfyUI_00001_.png" and m["size"] == "300"
    assert SUMMARY.match(up.stdout.rstrip("\n"))["files"] == "1"


def test_json_is_one_line_on_stdout_on_success_and_on_every_error(ready, s3, tmp_path):
    s3.put_object(Bucket=ready.buckets["loras"], Key="x.safetensors", Body=b"x" * 2000)
    p = ready.run("sync-loras", "--dest", tmp_path / "l", "--json")
    assert p.stdout.count("\n") == 1 and p.stdout.endswith("}\n"), p.stdout
    doc = json.loads(p.stdout)
    assert doc["ok"] is True and doc["exit_code"] == 0 and doc["files"] == 1
    assert FILE_LINE.match(p.stderr.rstrip("\n"))  # the log line stays on stderr, out of the document
    for command, args in (("test-create-buckets", ()), ("generate-model-manifest", ("--kind", "loras"))):
        out = ready.run(command, "--json", *args).stdout
        assert out.count("\n") == 1 and json.loads(out)["ok"] is True

    cases = [  # (arguments, extra environment, exit code, error class, text of the message)
        (["sync-loras", "--dest", tmp_path / "d"], {"MINIO_SECRET_KEY": "definitely-wrong-secret"}, 7, "fatal",
         "rejected the credentials"),
        (["sync-loras", "--dest", tmp_path / "d", "--retries", "0"],
         {"MINIO_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}, 6, "retryable", "cannot reach MinIO"),
        (["sync-loras", "--workers", "0"], {}, 2, "fatal", "argument --workers"),
        (["sync-loras", "--bwlimit", "fast"], {}, 2, "fatal", "argument --bwlimit"),
        (["sync-loras"], {"MINIO_ENDPOINT": "http://127.0.0.1:9000/minio"}, 3, "fatal", "MINIO_ENDPOINT"),
        (["generate-model-manifest"], {"MINIO_BUCKET_CHECKPOINTS": "nope-x"}, 1, "fatal", "does not exist"),
    ]
    for argv, env, code, klass, text in cases:
        p = ready.run(argv[0], *argv[1:], "--json", env=env, check=False)
        assert p.returncode == code, (argv, p.stderr)
        assert p.stdout.count("\n") == 1, (argv, p.stdout)
        doc = json.loads(p.stdout)
        assert doc["ok"] is False and doc["exit_code"] == code and doc["error_class"] == klass, (argv, doc)
        assert text in doc["message"] and doc["command"] == argv[0], (argv, doc)
        assert p.stderr.count("\n") == 1 and "error" in p.stderr, (argv, p.stderr)  # the line on stderr stays


def test_bwlimit_slows_a_transfer_down_to_the_limit(ready, s3, tmp_path):
    """--bwlimit caps the run, all workers together: 3 MiB at 1 MiB/s cannot take less than ~2.75 s (the limiter
    lets a quarter of a second through at once). Only the lower bound is asserted (a limit can only slow down),
    with a wide margin; nothing here is timed from above."""
    data = os.urandom(3 * MiB)
    s3.put_object(Bucket=ready.buckets["checkpoints"], Key="big.safetensors", Body=data)
    dest = tmp_path / "ck"
    t0 = time.monotonic()
    doc = ready.json("sync-checkpoints", "--dest", dest, "--bwlimit", "1M", "--workers", "4",
                     "--multipart-threshold", "256K", "--part-size", "256K")
    assert time.monotonic() - t0 >= 2.0 and doc["seconds"] >= 2.0, doc["seconds"]
    assert (dest / "big.safetensors").read_bytes() == data

    src = tmp_path / "renders"
    src.mkdir()
    (src / "one.png").write_bytes(os.urandom(2 * MiB))
    (src / "two.png").write_bytes(os.urandom(MiB))
    t0 = time.monotonic()
    doc = ready.json("upload-outputs", "--source", src, "--bwlimit", "1M", "--workers", "4")
    assert doc["files"] == 2 and time.monotonic() - t0 >= 2.0 and doc["seconds"] >= 2.0, doc["seconds"]

    doc = ready.json("test-export-outputs", tmp_path / "export", "--bwlimit", "1M")
    assert doc["files"] == 2 and doc["seconds"] >= 2.0, doc["seconds"]
    assert ready.json("sync-checkpoints", "--dest", tmp_path / "ck0", "--bwlimit", "0")["files"] == 1



def test_run_workflow_json_is_one_line_on_errors_too(tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}))
    cases = [(["--workflow", tmp_path / "missing.json"], 2, "fatal"),
             (["--workflow", wf, "--port", "0"], 2, "fatal"),
             (["--workflow", wf, "--port", _closed_port(), "--timeout", "5"], 6, "retryable")]
    for args, code, klass in cases:
        p = _bare("test-run-workflow", *args, "--json")
        assert p.returncode == code, p.stderr
        assert p.stdout.count("\n") == 1, p.stdout
        doc = json.loads(p.stdout)
        assert (doc["ok"], doc["exit_code"], doc["error_class"]) == (False, code, klass), doc
        assert doc["message"] and doc["command"] == "test-run-workflow"
