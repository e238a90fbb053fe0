# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``test-run-workflow``: run an API-format workflow on a ComfyUI node and print what it produced.

Exit codes: the one table of all node commands, :data:`..errors.EXIT_CODES` (documented in
roles/minio_helpers/README.md). For this command: 0 success (the asset identifiers are printed, one per line;
``--json`` prints one JSON document on one line instead, on failures too, with ``ok``, ``exit_code``,
``error_class`` and ``message``), 1 other failure, 2 usage or bad input (bad option value, file missing, not
JSON, UI format instead of API format, bad --set), 3 bad minio.env (--export-dir), 5 timeout, 6 ComfyUI (or
MinIO, --export-dir) cannot be reached, 7 MinIO refused the credentials (--export-dir), 8 validation error
(ComfyUI rejected the workflow, or part of it: see --allow-partial; or the local --check pre-check found
problems; node_errors printed readably), 9 execution error (a node failed, or the run was interrupted),
130 interrupted. ``--version`` prints the installed package's version.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys
import time

from ..comfyui.client import DEFAULT_HOST, DEFAULT_PORT, ComfyClient, base_url_from, check_workflow, run_workflow
from ..comfyui.errors import (
    WorkflowExecutionError,
    WorkflowInputError,
    WorkflowPartlyRejectedError,
    WorkflowValidationError,
    describe_failure,
)
from ..comfyui.workflow import apply_overrides, check_partial_run, load_workflow, output_identifier, parse_set_options
from ..errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, GpuWorkerError
from .common import NodeArgumentParser, int_range, json_error, json_line, seconds

PROG = "test-run-workflow"
DEFAULT_ENV_FILE = "/etc/comfyui/minio.env"


def build_parser():
    parser = NodeArgumentParser(
        PROG, "Queue an API-format ComfyUI workflow, wait for it and print the generated assets.")
    parser.add_argument("--workflow", required=True, metavar="FILE",
                        help="workflow in ComfyUI's API format (JSON); '-' reads stdin")
    parser.add_argument("--host", default=DEFAULT_HOST, help="ComfyUI host (default %(default)s)")
    parser.add_argument("--port", type=int_range(1, 65535), default=DEFAULT_PORT,
                        help="ComfyUI port (default %(default)s)")
    parser.add_argument("--url", help="ComfyUI base URL (overrides --host/--port), e.g. https://gpu1/comfy")
    parser.add_argument("--timeout", type=seconds(), default=900.0,
                        help="seconds to wait for the run to finish (default %(default)s)")
    parser.add_argument("--interval", type=seconds(), default=2.0,
                        help="seconds between /history polls when the websocket is silent or gone "
                             "(default %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="override an input, e.g. --set 3.seed=42 (repeatable; numbers keep their type)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of the asset list")
    parser.add_argument("--export-dir", metavar="DIR",
                        help="after a successful run, download the outputs from MinIO into DIR "
                             "(as test-export-outputs does; needs %s)" % DEFAULT_ENV_FILE)
    parser.add_argument("--env-file", default=None,
                        help="MinIO settings (default $VISIONSUIT_MINIO_ENV or %s)" % DEFAULT_ENV_FILE)
    parser.add_argument("--export-wait", type=seconds(allow_zero=True), default=120.0,
                        help="seconds to wait for the outputs to reach MinIO (upload-outputs) before giving up "
                             "(default %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="validate against the server's /object_info (node types, model names) "
                             "without queueing anything")
    parser.add_argument("--allow-partial", action="store_true",
                        help="accept a run that ComfyUI only partly accepted (it dropped the outputs behind invalid "
                             "nodes and ran the rest): a warning instead of exit code 8")
    parser.add_argument("--no-websocket", action="store_true", help="poll /history only")
    parser.add_argument("-v", "--verbose", action="store_true", help="print progress to stderr")
    return parser


def _out(text):
    sys.stdout.write(text + "\n")


def _err(text):
    sys.stderr.write("%s: %s\n" % (PROG, text))


def _read_workflow(path):
    if path == "-":
        return load_workflow(sys.stdin.read(), source="workflow from stdin")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except (IOError, OSError) as err:
        raise WorkflowInputError("cannot read workflow file %s (%s)" % (path, err.strerror or err)) from None
    return load_workflow(data, source="workflow file %s" % path)


def _progress_printer(workflow):
    def show(event):
        etype = event.get("type")
        node = event.get("node")
        label = "%s (%s)" % (node, (workflow.get(str(node)) or {}).get("class_type", "?")) if node else ""
        if etype == "execution_start":
            sys.stderr.write("started\n")
        elif etype == "execution_cached" and event.get("nodes"):
            sys.stderr.write("cached: %s\n" % ", ".join(event["nodes"]))
        elif etype == "executing" and node:
            sys.stderr.write("running node %s\n" % label)
        elif etype == "progress":
            sys.stderr.write("node %s: %s/%s\n" % (label, event.get("value"), event.get("max")))
        elif etype == "executed" and node:
            sys.stderr.write("node %s done\n" % label)
    return show


def _minio_settings(args):
    """Read the MinIO settings up front (fail before queueing anything); exit code 3 on a bad minio.env."""
    try:
        from ..s3.env import load_minio_env
    except ImportError:
        raise GpuWorkerError("--export-dir needs the MinIO helpers (minio_env.py), which are not installed") from None
    try:
        return load_minio_env(args.env_file)
    except GpuWorkerError as err:
        raise GpuWorkerError("--export-dir: %s" % err, exit_code=err.exit_code) from None


def export_outputs(result, args):
    """Download the run's output files from MinIO into ``args.export_dir`` (test-export-outputs' code).

    The files reach MinIO through ``upload-outputs`` (its timer), so this retries until every file of the
    run is there or ``--export-wait`` seconds have passed. Returns the export summary.
    """
    from .node import export_outputs as download_outputs

    names = [output_identifier(o) for o in result["outputs"] if o.get("filename") and o.get("type") == "output"]
    deadline = time.time() + max(0.0, args.export_wait)
    while True:
        try:
            sync = download_outputs(args.export_dir, names=names, env_file=args.env_file)
        except GpuWorkerError as err:
            raise GpuWorkerError("--export-dir: %s" % err, exit_code=err.exit_code) from None
        present = set(sync.get("after") or [])
        missing = [n for n in names if n not in present]
        if not missing:
            return {"dir": os.path.abspath(args.export_dir), "files": names,
                    "downloaded": len(sync.get("transferred") or [])}
        if time.time() >= deadline:
            raise GpuWorkerError(
                "--export-dir: %d output(s) not in MinIO after %gs: %s"
                % (len(missing), args.export_wait, ", ".join(missing)), exit_code=EXIT_FAILURE,
                hint="is upload-outputs running on the node (its timer), and is MINIO_BUCKET_OUTPUTS right?")
        time.sleep(min(max(args.interval, 0.2), 5.0))


def _ok_json(doc):
    """The run's one JSON document (``--json``, one line), marked successful."""
    _out(json_line(dict(doc, ok=True, exit_code=EXIT_OK)))


def _error_json(message, code, doc=None):
    """The run's one JSON document (``--json``, one line) of a failure: ``doc`` plus the error fields."""
    _out(json_line(json_error(PROG, message, code, doc=doc)))


def main(argv=None):
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    parser.json_errors = "--json" in words
    args = parser.parse_args(argv)
    summary = {}
    try:
        workflow = _read_workflow(args.workflow)
        overrides = parse_set_options(args.overrides)
        workflow = apply_overrides(workflow, overrides, coerce=True)
        client = ComfyClient(base_url_from(args.url, args.host, args.port), timeout=min(30.0, args.timeout))
        if args.export_dir and not args.check:
            _minio_settings(args)
        if args.check:
            check_workflow(client, workflow)
            if args.json:
                _ok_json({"status": "valid", "nodes": len(workflow)})
            else:
                _out("workflow is valid (%d nodes)" % len(workflow))
            return EXIT_OK
        progress = _progress_printer(workflow) if args.verbose else None
        result = run_workflow(client, workflow, timeout=args.timeout, interval=args.interval,
                              on_progress=progress, use_websocket=not args.no_websocket)
        summary = dict(result)
        summary["assets"] = [output_identifier(o) for o in result["outputs"] if o.get("filename")]
        partial = check_partial_run(client.last_node_errors, workflow, summary, allow_partial=args.allow_partial)
        if partial is not None:
            summary.update(node_errors=partial.node_errors, problems=partial.lines,
                           dropped_outputs=partial.dropped_outputs)
            _err("warning: %s:" % partial.summary)
            for line in partial.lines:
                sys.stderr.write("  %s\n" % line)
        if result["status"] != "success":
            raise WorkflowExecutionError(result)
        if args.export_dir:
            summary["exported"] = export_outputs(result, args)
        if args.json:
            _ok_json(summary)
        else:
            for asset in summary["assets"]:
                _out(asset)
            for out in result["outputs"]:
                if out.get("text") is not None:
                    _out("text from node %s: %s" % (out["node_id"], out["text"]))
        return EXIT_OK
    except WorkflowValidationError as err:
        _err(err.summary + ":" if err.lines else str(err))
        for line in err.lines:
            sys.stderr.write("  %s\n" % line)
        if isinstance(err, WorkflowPartlyRejectedError):
            sys.stderr.write("  the rest of the workflow ran (prompt %s, %s); --allow-partial accepts such a run\n"
                             % (err.result.get("prompt_id"), err.result.get("status")))
            if args.json:
                _error_json(err.summary or str(err), err.exit_code, doc=err.details)
        elif args.json:
            _error_json(err.summary or str(err), err.exit_code,
                        doc={"status": "invalid", "problems": err.lines, "node_errors": err.node_errors,
                             "error": err.error})
        return err.exit_code
    except WorkflowExecutionError as err:
        _err(describe_failure(err.result))
        if args.verbose and err.details.get("error_detail"):
            sys.stderr.write("ComfyUI's message:\n%s\n" % err.details["error_detail"])
        if args.verbose and (err.result.get("error") or {}).get("traceback"):
            sys.stderr.write("".join(err.result["error"]["traceback"]))
        if args.json:
            _error_json(describe_failure(err.result), err.exit_code, doc=summary or err.result)
        return err.exit_code
    except GpuWorkerError as err:
        _err(str(err))
        if args.json:
            _error_json(str(err), err.exit_code or EXIT_FAILURE,
                        doc=dict(summary, status=summary.get("status") or "failed"))
        return err.exit_code or EXIT_FAILURE
    except KeyboardInterrupt:
        _err("interrupted (the run continues on ComfyUI)")
        if args.json:
            _error_json("interrupted (the run continues on ComfyUI)", EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
