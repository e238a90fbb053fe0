# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Command line: ComfyUI's own flags (the ones the stand-in does not model are accepted and ignored; an option
ComfyUI 0.3.64 does not have is refused like ComfyUI refuses it) plus the stand-in's fault options."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from . import __version__
from .executor import Engine
from .faults import ENV, Faults
from .paths import Layout
from .server import App, make_server
from .websocket import Hub

log = logging.getLogger("standin")


#: Every option of ComfyUI 0.3.64's comfy/cli_args.py. main.py parses them with argparse's parse_args, so any
#: other option ends the process at start: "main.py: error: unrecognized arguments: ..." on stderr, exit 2.
COMFYUI_OPTIONS = frozenset('''
    --listen --port --tls-keyfile --tls-certfile --enable-cors-header --max-upload-size --base-directory
    --extra-model-paths-config --output-directory --temp-directory --input-directory --models-directory
    --auto-launch --disable-auto-launch --cuda-device --cuda-malloc --disable-cuda-malloc --force-fp32 --force-fp16
    --fp32-unet --fp64-unet --bf16-unet --fp16-unet --fp8_e4m3fn-unet --fp8_e5m2-unet --fp8_e8m0fnu-unet
    --fp16-vae --fp32-vae --bf16-vae --cpu-vae --fp8_e4m3fn-text-enc --fp8_e5m2-text-enc --fp16-text-enc
    --fp32-text-enc --bf16-text-enc --force-channels-last --directml --oneapi-device-selector
    --disable-ipex-optimize --supports-fp8-compute --preview-method --preview-size --cache-classic --cache-lru
    --cache-none --use-split-cross-attention --use-quad-cross-attention --use-pytorch-cross-attention
    --use-sage-attention --use-flash-attention --disable-xformers --force-upcast-attention --dont-upcast-attention
    --gpu-only --highvram --normalvram --lowvram --novram --cpu --reserve-vram --async-offload
    --default-hashing-function --disable-smart-memory --deterministic --fast --mmap-torch-files --disable-mmap
    --dont-print-server --quick-test-for-ci --windows-standalone-build --disable-metadata
    --disable-all-custom-nodes --whitelist-custom-nodes --disable-api-nodes --multi-user --verbose --log-stdout
    --front-end-version --front-end-root --user-directory --enable-compress-response-body --comfy-api-base
    --database-url -h --help
'''.split())


def refused_options(unknown):
    """The options among ``unknown`` (what the stand-in's parser left over) that ComfyUI itself would refuse."""
    return [arg for arg in unknown if arg.startswith("-") and arg.split("=", 1)[0] not in COMFYUI_OPTIONS]


def build_parser(default_base):
    p = argparse.ArgumentParser(prog="main.py", allow_abbrev=False,
                                description="ComfyUI API stand-in (no models are run; images are gradients).")
    p.add_argument("--listen", nargs="?", const="0.0.0.0,::", default="127.0.0.1",  # noqa: S104 - ComfyUI's const
                   help="address(es) to listen on, comma separated (ComfyUI semantics)")
    p.add_argument("--port", type=int, default=8188)
    p.add_argument("--base-directory", default=default_base)
    p.add_argument("--output-directory")
    p.add_argument("--input-directory")
    p.add_argument("--temp-directory")
    p.add_argument("--user-directory")
    p.add_argument("--max-upload-size", type=float, default=100)
    p.add_argument("--cache-none", action="store_true", help="never reuse results of an earlier prompt")
    p.add_argument("--cache-classic", action="store_true")
    p.add_argument("--cache-lru", type=int, default=0)
    p.add_argument("--verbose", nargs="?", const="DEBUG", default="INFO")
    p.add_argument("--log-stdout", action="store_true")
    p.add_argument("--comfyui-version", default="0.3.64", help="version reported by /system_stats")
    g = p.add_argument_group("stand-in faults (also COMFYUI_STANDIN_<NAME> variables, POST /standin/control)")
    g.add_argument("--standin-fail-node", help="node id or class_type whose execution fails")
    g.add_argument("--standin-delay", help="seconds each executed node takes")
    g.add_argument("--standin-drop-ws-after", help="cut websocket connections after N messages of a run")
    g.add_argument("--standin-html-responses", help="answer the next N /queue and /history requests with 502 HTML")
    g.add_argument("--standin-crash", help="exit(1) when a run reaches this node id/class_type (true: first node)")
    g.add_argument("--standin-history-lag",
                   help="seconds between execution_success and the run's /history entry (as seen on real servers)")
    g.add_argument("--standin-history-lag-share", help="share (0..1) of runs that get the history lag (default 1)")
    g.add_argument("--standin-previews", help="send binary preview frames while KSampler runs (true/false)")
    g.add_argument("--standin-gpu-name", default=os.environ.get("COMFYUI_STANDIN_GPU_NAME"),
                   help="report a CUDA device with this name in /system_stats instead of the CPU")
    return p


def main(argv=None):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = build_parser(here)
    args, unknown = parser.parse_known_args(argv)
    refused = refused_options(unknown)
    if refused:
        parser.error("unrecognized arguments: %s" % " ".join(refused))  # exit 2, like ComfyUI's parse_args
    logging.basicConfig(stream=sys.stdout if args.log_stdout else sys.stderr,
                        level=getattr(logging, str(args.verbose).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if unknown:
        log.info("ignoring ComfyUI options the stand-in does not need: %s", " ".join(unknown))

    faults = Faults()
    settings = {}
    for name, env in ENV.items():
        value = getattr(args, "standin_" + name)
        if value is None:
            value = os.environ.get(env)
        if value is not None:
            settings[name] = value
    try:
        faults.update(settings)
    except ValueError as exc:
        log.error("bad fault option: %s", exc)
        return 2

    layout = Layout(args.base_directory, args.output_directory, args.input_directory, args.temp_directory,
                    args.user_directory)
    layout.prepare()
    args.gpu_name = args.standin_gpu_name
    hub = Hub()
    engine = Engine(layout, hub, faults, cache=not args.cache_none)
    app = App(args, layout, hub, engine, faults)
    servers = []
    try:
        for host in [h.strip() for h in args.listen.split(",") if h.strip()]:
            servers.append(make_server(app, host, args.port))
    except OSError as exc:
        log.error("cannot listen on %s port %d: %s", args.listen, args.port, exc)
        return 1
    engine.start()
    for srv in servers:
        threading.Thread(target=srv.serve_forever, name=f"http-{srv.server_address[0]}", daemon=True).start()

    stop = threading.Event()

    def on_signal(signum, frame):
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("comfyui-standin %s (ComfyUI API %s), base directory %s, faults %s", __version__,
             args.comfyui_version, layout.base_dir, faults.snapshot())
    log.info("Starting server")
    log.info("To see the GUI go to: http://%s:%d", servers[0].server_address[0], args.port)
    while not stop.wait(1.0):
        pass
    engine.stop()
    for srv in servers:
        srv.shutdown()
        srv.server_close()
    hub.close_all()
    hub.stop()
    log.info("stopped")
    return 0
