#!/usr/bin/env bash
# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
# The test rig's SSH key: the molecule scenarios and the provisioning benchmark reach their systemd containers
# over ansible.builtin.ssh as root with this key (the containers bind-mount authorized_keys read-only).
# Created once in the cache directory; prints the directory (id_ed25519, id_ed25519.pub, authorized_keys).
set -euo pipefail
CACHE="${VISIONSUIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/visionsuit-gpuworker}"
dir="$CACHE/ssh"
if [ ! -s "$dir/id_ed25519" ] || [ ! -s "$dir/authorized_keys" ]; then
  command -v ssh-keygen >/dev/null || { echo "ssh-key: ssh-keygen is missing (apt-get install openssh-client)" >&2; exit 1; }
  mkdir -p "$dir"
  chmod 700 "$dir"
  rm -f "$dir/id_ed25519" "$dir/id_ed25519.pub"
  ssh-keygen -q -t ed25519 -N '' -C visionsuit-test-rig -f "$dir/id_ed25519"
  cp "$dir/id_ed25519.pub" "$dir/authorized_keys.tmp"
  chmod 644 "$dir/authorized_keys.tmp"
  mv "$dir/authorized_keys.tmp" "$dir/authorized_keys"
fi
echo "$dir"
