"""VisionSuit GPU agent: takes render jobs over HTTP and runs them through ComfyUI with assets from MinIO.

Standard library only (PyYAML is used for the config file when it is importable; JSON is accepted either
way). The S3 sync engine and the ComfyUI client come from the library package ``visionsuit_gpuworker``
(distribution ``visionsuit-gpuworker``), a dependency of this one.
"""
try:
    from importlib.metadata import PackageNotFoundError, version
except ImportError:  # pragma: no cover - Python < 3.8 is not supported on nodes
    raise

try:
    __version__ = version("visionsuit-gpu-agent")
except PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"
