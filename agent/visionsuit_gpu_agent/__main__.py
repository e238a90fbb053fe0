# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m visionsuit_gpu_agent``: see :mod:`visionsuit_gpu_agent.main`."""
import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
