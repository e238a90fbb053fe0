# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The MinIO node commands, one :func:`main` dispatching on the program name.

=========================== ================================================================================
``sync-checkpoints``        bucket ``MINIO_BUCKET_CHECKPOINTS``/``MINIO_CHECKPOINTS_PREFIX`` ->
                            ``/opt/comfyui/models/checkpoints`` (``--dest``)
``sync-loras``              bucket ``MINIO_BUCKET_LORAS``/``MINIO_LORAS_PREFIX`` -> ``/opt/comfyui/models/loras``
``upload-outputs``          ``/opt/comfyui/output`` (``--source``) -> ``MINIO_BUCKET_OUTPUTS``/``MINIO_OUTPUTS_PREFIX``
``generate-model-manifest`` JSON manifest of the checkpoints (``--kind loras`` for the LoRAs) to stdout or
                            ``--output FILE`` (written atomically)
``test-create-buckets``     creates the checkpoints, LoRAs and outputs buckets when missing
``test-upload-models``      ``--models DIR --loras DIR``: uploads models, recording the original file name
``test-export-outputs DIR`` downloads the outputs bucket into DIR
=========================== ================================================================================

The connection comes from ``/etc/comfyui/minio.env`` (``$VISIONSUIT_MINIO_ENV``, ``--env-file``), overridden by
exported ``MINIO_*`` variables; credentials are never accepted on the command line nor printed.

Output of the transfer commands (stdout: results, stderr: progress, log lines, warnings and errors):

* on a terminal (stderr a TTY): a progress bar with bytes done/total, the rate (MiB/s over the last 5 s) and the
  ETA; then the summary line on stdout;
* otherwise (systemd timers: both streams go to the journal): one line per transferred file on stderr
  (``<command>: downloaded "<key>" <bytes> bytes (<size>) in <s> s, <MiB/s> MiB/s``) and the summary line on stdout
  (``<command>: <n> file(s) downloaded, <bytes> bytes (<size>) in <s> s, <MiB/s> MiB/s; <n> up to date,
  <n> deleted, <n> failed``); ``-v`` adds the per-file lines on a terminal too;
* ``-q``: nothing but warnings and errors; ``--dry-run`` prints the plan and changes nothing;
* ``--json``: exactly one JSON document on stdout, one line, on success (the result object with ``"ok": true``,
  ``"exit_code": 0``) and on failure (``{"ok": false, "command", "exit_code", "error_class", "message", "field",
  "details"}``, ``error_class`` ``fatal`` or ``retryable``: :func:`..errors.error_class`), usage errors
  included; the per-file lines still go to stderr (not on a terminal), never to stdout.

``--bwlimit RATE`` (bytes per second, ``10M``, ``512K``; 0 = no limit) caps a transfer run, all workers together
(:class:`..s3.transfer.RateLimiter`).

Exit codes: the one table of all node commands, :data:`..errors.EXIT_CODES` (documented in
roles/minio_helpers/README.md): 0 success, 1 other failure, 2 usage (bad option values too), 3 configuration,
4 integrity check failed, 6 server unreachable or failing after the retries (temporary), 7 credentials rejected
or access denied (fatal), 130 interrupted. ``--version`` prints the installed package's version.

Warnings: a run that did its work but hit a problem worth knowing prints ``<command>: warning: ...`` lines on stderr
(even with ``--json`` or ``-q``; the result object lists them under ``warnings``) and still exits 0. The one warning
today: the sync state file ``.visionsuit-sync.json`` could not be written (a full disk, a read-only folder); the
files are complete and verified, the next run hashes them again instead of skipping them.

ComfyUI's placeholder files (``output/_output_images_will_be_put_here``, ``models/*/put_*_here``,
``input/example.png``) are never uploaded, downloaded over, recorded or deleted (:mod:`..s3.keys`).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import glob
import json
import os
import sys
import tempfile
import time

from ..errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, GpuWorkerError
from ..s3.download import download
from ..s3.env import ENV_FILE_VARIABLE, load_minio_env
from ..s3.sync import object_manifest
from ..s3.transfer import DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, DEFAULT_WORKERS
from ..s3.upload import upload
from .common import NodeArgumentParser, int_range, json_error, json_line, parse_rate, parse_size, size_at_least

COMFY_ROOT = "/opt/comfyui"
DEFAULT_DIRS = {
    "checkpoints": COMFY_ROOT + "/models/checkpoints",
    "loras": COMFY_ROOT + "/models/loras",
    "outputs": COMFY_ROOT + "/output",
}
_EPILOG = ("connection: /etc/comfyui/minio.env (or $%s), overridden by exported MINIO_* variables. "
           "Warnings (e.g. a state file that could not be written) go to stderr and keep 0" % ENV_FILE_VARIABLE)
# the option limits (the engine's, s3/transfer.py check_workers), checked while parsing: a usage error, exit 2
MAX_WORKERS = 64
MIN_PART_SIZE = 64 * 1024
MiB = 1024 * 1024


# ---------------------------------------------------------------------------------------------- helpers

def human(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return "%d B" % n if unit == "B" else "%.1f %s" % (n, unit)
        n /= 1024


def mib_per_s(nbytes, seconds):
    return nbytes / MiB / seconds if seconds > 0 else 0.0


def duration(seconds):
    """``0:42``, ``12:05``, ``1:02:03`` (an ETA)."""
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    return ("%d:%02d:%02d" % (hours, rest // 60, rest % 60)) if hours else "%d:%02d" % (rest // 60, rest % 60)


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most 10 times a second: bytes done/total, percentage, the rate
    over the last :attr:`WINDOW` seconds and the ETA at that rate (``--:--`` until there is a rate)."""

    WINDOW = 5.0

    def __init__(self, label, stream=None, clock=time.monotonic):
        self.label = label
        self.stream = stream or sys.stderr
        self.clock = clock
        self.last = None
        self.drawn = False
        self.samples = collections.deque()  # (time, done bytes), the sliding window of the rate

    def rate(self):
        """Bytes per second over the window (0.0 before two samples)."""
        if len(self.samples) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def __call__(self, done, total, key):
        now = self.clock()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.WINDOW:
            self.samples.popleft()
        if self.last is not None and now - self.last < 0.1 and done < total:
            return
        self.last = now
        width = 24
        frac = min(1.0, done / total) if total else 1.0
        filled = "#" * int(frac * width)
        name = key if len(key) <= 32 else "..." + key[-29:]
        rate = self.rate()
        eta = duration((total - done) / rate) if rate > 0 and total >= done else "--:--"
        self.stream.write("\r%s [%-*s] %3d%% %s/%s %.1f MiB/s ETA %s %s\x1b[K" % (
            self.label, width, filled, int(frac * 100), human(done), human(total), rate / MiB, eta, name))
        self.stream.flush()
        self.drawn = True

    def log(self, line):
        """A log line above the bar (``-v`` on a terminal); the next update redraws the bar."""
        self.stream.write("\r\x1b[K%s\n" % line if self.drawn else "%s\n" % line)
        self.stream.flush()

    def close(self):
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _out(text):
    """One line on stdout (a function so that library code does not call print)."""
    sys.stdout.write("%s\n" % text)


def _is_tty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _add_common(parser, transfer=True, sync=True):
    parser.add_argument("--env-file", metavar="FILE",
                        help="MinIO settings file (default $%s or /etc/comfyui/minio.env)" % ENV_FILE_VARIABLE)
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (one line) on stdout, on success and on failure")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also print a line per transferred file on a terminal (always done otherwise)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar, per-file lines nor summary (warnings and errors only)")
    parser.add_argument("--retries", type=int_range(0), default=5, metavar="N",
                        help="retries of a failed request (default %(default)s, exponential backoff)")
    if not transfer:
        return
    parser.add_argument("--workers", type=int_range(1, MAX_WORKERS), default=DEFAULT_WORKERS, metavar="N",
                        help="parallel transfers, 1 to %d (default %%(default)s)" % MAX_WORKERS)
    parser.add_argument("--multipart-threshold", type=parse_size, default=DEFAULT_MULTIPART_THRESHOLD,
                        metavar="SIZE", help="objects above this use ranged/multipart transfers (default 64M)")
    parser.add_argument("--part-size", type=size_at_least(MIN_PART_SIZE, "64K"), default=DEFAULT_PART_SIZE,
                        metavar="SIZE", help="range/part size, at least 64K (default 16M; uploads use at least 5M)")
    parser.add_argument("--bwlimit", type=parse_rate, default=0, metavar="RATE",
                        help="bandwidth limit of the run, all workers together, in bytes per second "
                             "(e.g. 10M, 512K; K/M/G are 1024-based; default 0 = no limit)")
    if not sync:
        return
    parser.add_argument("--bucket", help="bucket (default from minio.env)")
    parser.add_argument("--prefix", help="folder inside the bucket (default from minio.env)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be transferred, change nothing")
    parser.add_argument("--delete", action="store_true",
                        help="also delete files that are gone from the source side (downloads: only files "
                             "this sync manages)")
    parser.add_argument("--include", action="append", default=[], metavar="GLOB",
                        help="only files whose path or name matches (repeatable)")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="skip files whose path or name matches (repeatable)")


def _settings(args):
    return load_minio_env(args.env_file or None)


def _client(settings, args):
    return settings.client(retries=max(0, args.retries))


def _transfer_opts(args):
    return {"workers": args.workers, "multipart_threshold": args.multipart_threshold, "part_size": args.part_size,
            "bwlimit": args.bwlimit}


def _progress(args, label):
    if args.quiet or args.json or not _is_tty(sys.stderr):
        return None
    return ProgressBar(label)


def _file_logger(prog, args, verb, progress_bar):
    """``on_file`` of a run: one line per transferred file on stderr when not on a terminal (the journal of a timer
    run), with ``-v`` on a terminal too (above the progress bar); None with ``-q``."""
    if args.quiet or (_is_tty(sys.stderr) and not args.verbose):
        return None

    def on_file(rec):
        line = "%s: %s %s %d bytes (%s) in %.2f s, %.2f MiB/s%s" % (
            prog, verb, json.dumps(rec["key"], ensure_ascii=False), rec["size"], human(rec["size"]),
            rec["seconds"], mib_per_s(rec["size"], rec["seconds"]), " (resumed)" if rec.get("resumed") else "")
        if progress_bar is not None:
            progress_bar.log(line)
        else:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
    return on_file


def _summary_wanted(args):
    return not args.quiet and not args.json


def _json_out(doc):
    """The run's one JSON document (``--json``), marked successful."""
    _out(json_line(dict(doc, ok=True, exit_code=EXIT_OK)))


def _print_plan(result):
    for item in result["plan"]:
        if item["action"] == "delete":
            target = item["path"] or item["key"]
            _out("would delete %s" % target)
        elif item["action"] == "download":
            _out("would download %s -> %s (%s)" % (item["key"], item["path"], human(item["size"])))
        else:
            _out("would upload %s -> %s (%s)" % (item["path"], item["key"], human(item["size"])))
    if not result["plan"]:
        _out("nothing to do (%d file(s) up to date)" % result["skipped"])


def _summary_line(prog, result, failed=0):
    verb = "downloaded" if result["direction"] == "download" else "uploaded"
    text = "%s: %d file(s) %s, %d bytes (%s) in %.1f s, %.2f MiB/s; %d up to date, %d deleted, %d failed" % (
        prog, result["files"], verb, result["bytes"], human(result["bytes"]), result["seconds"],
        mib_per_s(result["bytes"], result["seconds"]), result["skipped"], result["deleted"], failed)
    if result.get("resumed"):
        text += ", %d resumed" % len(result["resumed"])
    return text


def _warn(prog, result):
    """The result's warnings, one ``<command>: warning: ...`` line each on stderr (whatever the output mode)."""
    for message in result.get("warnings") or ():
        sys.stderr.write("%s: warning: %s\n" % (prog, message))
    sys.stderr.flush()


def _report(prog, args, result):
    _warn(prog, result)
    if args.json:
        _json_out(result)
    elif result.get("dry_run"):
        _print_plan(result)
    elif _summary_wanted(args):
        _out(_summary_line(prog, result))


def _run_transfer(prog, args, direction, bucket, prefix, path, label, **extra):
    settings = _settings(args)
    client = _client(settings, args)
    progress_bar = _progress(args, label)
    on_file = _file_logger(prog, args, "downloaded" if direction == "download" else "uploaded", progress_bar)
    opts = dict(_transfer_opts(args), include=args.include or None, exclude=args.exclude or None,
                delete=args.delete, dry_run=args.dry_run, progress=progress_bar, on_file=on_file, **extra)
    try:
        func = download if direction == "download" else upload
        result = func(client, bucket or "", prefix, path, **opts)
    finally:
        if progress_bar is not None:
            progress_bar.close()
        client.close()
    return result


# ---------------------------------------------------------------------------------------------- commands
def _default_owner(dest, owner, group):
    """Run as root without --owner/--group, downloads belong to the owner of the target folder (the ComfyUI
    service user for /opt/comfyui/models/...), so the running worker can read and replace them at once."""
    if owner or group or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return owner, group
    try:
        st = os.stat(dest)
    except OSError:
        return owner, group
    return str(st.st_uid), str(st.st_gid)


def _sync_kind(kind):
    def command(prog, args):
        settings = _settings(args)
        bucket = args.bucket or settings.bucket(kind)
        prefix = settings.prefix(kind) if args.prefix is None else args.prefix
        dest = args.dest or DEFAULT_DIRS[kind]
        owner, group = _default_owner(dest, args.owner, args.group)
        result = _run_transfer(prog, args, "download", bucket, prefix, dest, kind, owner=owner, group=group)
        _report(prog, args, result)
        return EXIT_OK
    return command


def cmd_upload_outputs(prog, args):
    settings = _settings(args)
    bucket = args.bucket or settings.bucket("outputs")
    prefix = settings.prefix("outputs") if args.prefix is None else args.prefix
    result = _run_transfer(prog, args, "upload", bucket, prefix, args.source or DEFAULT_DIRS["outputs"], "outputs",
                           original_filename=True)
    _report(prog, args, result)
    return EXIT_OK


def cmd_manifest(prog, args):
    settings = _settings(args)
    bucket = args.bucket or settings.bucket(args.kind)
    prefix = settings.prefix(args.kind) if args.prefix is None else args.prefix
    client = _client(settings, args)
    try:
        models = object_manifest(client, bucket, prefix, include=args.include or None,
                                 exclude=args.exclude or None, workers=args.workers)
    finally:
        client.close()
    doc = {"kind": args.kind, "bucket": bucket, "prefix": prefix, "endpoint": settings.endpoint,
           "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "count": len(models),
           "models": models}
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if args.output:
        write_atomic(args.output, text)
        if args.json:
            _json_out({"output": args.output, "count": len(models)})
        elif _summary_wanted(args):
            _out("%s: %d model(s) written to %s" % (prog, len(models), args.output))
    elif args.json:
        _json_out(doc)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def write_atomic(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    except OSError as err:
        raise GpuWorkerError("cannot write %s: %s" % (path, err.strerror or err), field="--output")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cmd_create_buckets(prog, args):
    settings = _settings(args)
    client = _client(settings, args)
    created, existing = [], []
    try:
        for kind in ("checkpoints", "loras", "outputs"):
            name = settings.bucket(kind)
            if name in created or name in existing:
                continue
            if client.bucket_exists(name):
                existing.append(name)
            else:
                client.create_bucket(name)
                created.append(name)
    finally:
        client.close()
    result = {"created": created, "existing": existing, "changed": bool(created)}
    if args.json:
        _json_out(result)
    elif _summary_wanted(args):
        for name in created:
            _out("created bucket %s" % name)
        for name in existing:
            _out("bucket %s already exists" % name)
    return EXIT_OK


def cmd_upload_models(prog, args):
    if not args.models and not args.loras:
        raise GpuWorkerError("give --models DIR and/or --loras DIR", exit_code=EXIT_USAGE)
    settings = _settings(args)
    out = {}
    for kind, folder in (("checkpoints", args.models), ("loras", args.loras)):
        if not folder:
            continue
        if not os.path.isdir(folder):
            flag = "--models" if kind == "checkpoints" else "--loras"
            raise GpuWorkerError("%s is not a folder" % folder, field=flag, exit_code=EXIT_USAGE)
        client = _client(settings, args)
        progress_bar = _progress(args, kind)
        try:
            out[kind] = upload(client, settings.bucket(kind), settings.prefix(kind), folder, original_filename=True,
                               progress=progress_bar, dry_run=args.dry_run,
                               on_file=_file_logger(prog, args, "uploaded", progress_bar), **_transfer_opts(args))
        finally:
            if progress_bar is not None:
                progress_bar.close()
            client.close()
    for result in out.values():
        _warn(prog, result)
    if args.json:
        _json_out(out)
    else:
        for result in out.values():
            if result["dry_run"]:
                _print_plan(result)
            elif _summary_wanted(args):
                _out(_summary_line(prog, result))
    return EXIT_OK


def export_outputs(dest, names=None, env_file=None, workers=DEFAULT_WORKERS, progress=None, bwlimit=0):
    """Download the outputs bucket/prefix (only ``names``, paths relative to the prefix, when given) into
    ``dest``; shared with ``test-run-workflow --export-dir``. Returns the sync result dict."""
    settings = load_minio_env(env_file or None)
    client = settings.client()
    include = [glob.escape(n) for n in names] if names is not None else None
    if names is not None and not include:
        include = ["\x00"]  # nothing to export
    try:
        return download(client, settings.bucket("outputs"), settings.prefix("outputs"), dest, include=include,
                        workers=workers, progress=progress, bwlimit=bwlimit)
    finally:
        client.close()


def cmd_export_outputs(prog, args):
    settings = _settings(args)
    bucket = args.bucket or settings.bucket("outputs")
    prefix = settings.prefix("outputs") if args.prefix is None else args.prefix
    result = _run_transfer(prog, args, "download", bucket, prefix, args.dir, "outputs")
    _report(prog, args, result)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- parsers
def _parser(prog, description):
    return NodeArgumentParser(prog, description, epilog_extra=_EPILOG)


def build_parser(prog):
    if prog in ("sync-checkpoints", "sync-loras"):
        kind = "checkpoints" if prog == "sync-checkpoints" else "loras"
        p = _parser(prog, "Download the %s from MinIO (bucket MINIO_BUCKET_%s, folder MINIO_%s_PREFIX) into %s; "
                          "unchanged files are skipped from one listing, downloads are verified and resumable."
                    % (kind, kind.upper(), kind.upper(), DEFAULT_DIRS[kind]))
        _add_common(p)
        p.add_argument("--dest", metavar="DIR", help="target folder (default %s)" % DEFAULT_DIRS[kind])
        p.add_argument("--owner", help="user owning the downloaded files (default: the running user; "
                                       "as root, the owner of the target folder)")
        p.add_argument("--group", help="group owning the downloaded files")
        return p
    if prog == "upload-outputs":
        p = _parser(prog, "Upload the ComfyUI renders (%s) to MinIO (bucket MINIO_BUCKET_OUTPUTS, folder "
                          "MINIO_OUTPUTS_PREFIX); unchanged files are skipped." % DEFAULT_DIRS["outputs"])
        _add_common(p)
        p.add_argument("--source", metavar="DIR", help="folder to upload (default %s)" % DEFAULT_DIRS["outputs"])
        return p
    if prog == "generate-model-manifest":
        p = _parser(prog, "Write a JSON manifest (name, key, size, etag, last_modified, original_filename) of the "
                          "models in MinIO.")
        _add_common(p, transfer=False)
        p.add_argument("--kind", choices=("checkpoints", "loras"), default="checkpoints",
                       help="which models (default %(default)s)")
        p.add_argument("--bucket", help="bucket (default MINIO_BUCKET_<KIND>)")
        p.add_argument("--prefix", help="folder in the bucket (default MINIO_<KIND>_PREFIX)")
        p.add_argument("--include", action="append", default=[], metavar="GLOB")
        p.add_argument("--exclude", action="append", default=[], metavar="GLOB")
        p.add_argument("--workers", type=int_range(1, MAX_WORKERS), default=DEFAULT_WORKERS, metavar="N",
                       help="parallel HEAD requests, 1 to %d" % MAX_WORKERS)
        p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically) instead of stdout")
        return p
    if prog == "test-create-buckets":
        p = _parser(prog, "Create the checkpoints, LoRAs and outputs buckets named in minio.env when missing.")
        _add_common(p, transfer=False)
        return p
    if prog == "test-upload-models":
        p = _parser(prog, "Upload model files to the checkpoints/LoRAs buckets, recording each original file name "
                          "in x-amz-meta-original-filename.")
        _add_common(p, sync=False)
        p.add_argument("--models", metavar="DIR", help="checkpoints to upload")
        p.add_argument("--loras", metavar="DIR", help="LoRAs to upload")
        p.add_argument("--dry-run", action="store_true", help="print what would be uploaded")
        return p
    if prog == "test-export-outputs":
        p = _parser(prog, "Download the outputs bucket (MINIO_BUCKET_OUTPUTS, folder MINIO_OUTPUTS_PREFIX) into DIR.")
        _add_common(p)
        p.add_argument("dir", metavar="DIR", help="folder to download into")
        return p
    raise KeyError(prog)


COMMANDS = {
    "sync-checkpoints": _sync_kind("checkpoints"),
    "sync-loras": _sync_kind("loras"),
    "upload-outputs": cmd_upload_outputs,
    "generate-model-manifest": cmd_manifest,
    "test-create-buckets": cmd_create_buckets,
    "test-upload-models": cmd_upload_models,
    "test-export-outputs": cmd_export_outputs,
}


def main(argv=None, prog=None):
    """Entry point of every node command; ``prog`` (default: ``argv[0]``'s name) picks the command. When the
    program is not a command name (``python -m ...node_cli``), the first argument is the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(prog or (sys.argv[0] if sys.argv else "") or "")
    if prog.endswith(".py"):
        prog = prog[:-3]
    if prog not in COMMANDS:
        if argv and argv[0] in COMMANDS:
            prog = argv.pop(0)
        else:
            sys.stderr.write("usage: node_cli COMMAND [options]; commands: %s\n" % ", ".join(sorted(COMMANDS)))
            return EXIT_USAGE
    parser = build_parser(prog)
    parser.json_errors = "--json" in argv[:argv.index("--")] if "--" in argv else "--json" in argv
    try:
        args = parser.parse_args(argv)
    except SystemExit as err:
        return err.code if isinstance(err.code, int) else EXIT_USAGE
    try:
        return COMMANDS[prog](prog, args)
    except GpuWorkerError as err:
        run = (err.details or {}).get("run_summary")
        if run and not args.quiet and not args.json:  # a transfer run that failed midway: what it did, then why
            _out(_summary_line(prog, run, failed=run.get("failed", 0)))
        return _fail(prog, args, "%s" % err, err.exit_code or EXIT_FAILURE, err.field, err.details)
    except KeyboardInterrupt:
        return _fail(prog, args, "interrupted (a partial download is resumed by the next run)", EXIT_INTERRUPTED,
                     line="%s: interrupted (a partial download is resumed by the next run)" % prog)
    except BrokenPipeError:
        return EXIT_FAILURE
    except OSError as err:
        return _fail(prog, args, "%s" % err, EXIT_FAILURE)


def _fail(prog, args, message, code, field=None, details=None, line=None):
    """A failed run: one line on stderr, and with ``--json`` the error document on stdout; returns the exit code."""
    sys.stderr.write((line or "%s: error: %s" % (prog, message)) + "\n")
    sys.stderr.flush()
    if args.json:
        _out(json_line(json_error(prog, message, code, field=field, details=details)))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
