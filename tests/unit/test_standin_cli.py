# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The stand-in's command line is as strict as ComfyUI 0.3.64's: main.py parses its options with argparse's
parse_args, so an option it does not have ends the process at start (exit 2, "unrecognized arguments") while
every real option is accepted. The stand-in used to ignore unknown options, so a unit with a bad flag kept
running under the stand-in and died under the real server (found by molecule/default/verify_start_failure.yml).
"""
import subprocess
import sys
from pathlib import Path

MAIN = Path(__file__).resolve().parents[2] / "rig" / "comfyui-standin" / "main.py"


def run(*args):
    return subprocess.run([sys.executable, str(MAIN), *args], capture_output=True, text=True, timeout=30)


def test_an_option_comfyui_does_not_have_ends_the_process_like_comfyui():
    proc = run("--cpu", "--no-such-flag", "--port", "1")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "main.py: error: unrecognized arguments: --no-such-flag"


def test_real_comfyui_options_are_accepted():
    sys.path.insert(0, str(MAIN.parent))
    try:
        from standin.cli import refused_options
    finally:
        sys.path.remove(str(MAIN.parent))
    # what the stand-in's parser leaves over from real ComfyUI options (values included) is not refused
    assert refused_options(["--lowvram", "--preview-method", "auto", "--cuda-device", "0", "--fast",
                            "--database-url=sqlite:///:memory:"]) == []
    assert refused_options(["--lowvram", "--no-such-flag", "x", "--also-bad=1"]) == ["--no-such-flag", "--also-bad=1"]
