# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""ComfyUI API stand-in: run it like ComfyUI (``python3 main.py --listen 127.0.0.1 --port 8188``)."""
import sys

from standin.cli import main

if __name__ == "__main__":
    sys.exit(main())
