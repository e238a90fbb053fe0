"""VisionSuit GPU agent: takes render jobs over HTTP and runs them through ComfyUI with assets from MinIO.

Standard library only (PyYAML is used for the config file when it is importable; JSON is accepted either
way). The S3 sync engine and the ComfyUI client come from the collection's shared library, installed
beside this package as ``visionsuit_gpuworker``.
"""
__version__ = "1.0.0"
