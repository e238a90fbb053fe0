# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""A stand-in for ComfyUI's HTTP/websocket API, for tests (stdlib only)."""

__version__ = "1.0.0"
