#!/usr/bin/env bash
# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
# Make a git repository of the ComfyUI stand-in (rig/comfyui-standin) with two tagged commits, so the
# comfyui role can clone it like ComfyUI and tests can upgrade from one pinned version to the other.
#   rig/standin-repo.sh DEST     -> DEST is a bare repo with tags standin-v1 and standin-v2
# Prints the commit ids of the two tags.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:?usage: standin-repo.sh DEST}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp -r "$here/rig/comfyui-standin/." "$work/"
find "$work" -name __pycache__ -prune -exec rm -rf {} +
cd "$work"
git init -q -b master .
git -c user.name=rig -c user.email=rig@localhost add -A
git -c user.name=rig -c user.email=rig@localhost commit -q -m "ComfyUI stand-in v1"
git tag standin-v1
echo "standin-v2" > STANDIN_RELEASE
git -c user.name=rig -c user.email=rig@localhost add -A
git -c user.name=rig -c user.email=rig@localhost commit -q -m "ComfyUI stand-in v2"
git tag standin-v2
rm -rf "$dest"
git clone -q --bare "$work" "$dest"
git -C "$dest" rev-parse standin-v1 standin-v2
