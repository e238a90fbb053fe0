"""A stand-in for ComfyUI's HTTP/websocket API, for tests (stdlib only)."""

__version__ = "1.0.0"
