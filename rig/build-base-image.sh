#!/usr/bin/env bash
# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
# Build (or reuse) the Debian 12 systemd base image for molecule and the demo, without any registry:
# debootstrap a minbase bookworm with systemd and python3, then `podman import` it.
# The image tag is a hash of this recipe, so a change here builds a new image; the rootfs tarball is
# cached in ~/.cache/visionsuit-gpuworker so a wiped podman store re-imports in seconds.
# Prints the image name on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
# Everything the roles install on the CPU path is in the image, so scenarios need no package mirror.
PACKAGES="systemd,systemd-sysv,dbus,python3,python3-apt,python3-venv,python3-pip,python3-yaml,sudo,ca-certificates,iproute2,procps,curl,git,gnupg,udev,kmod,pciutils,openssh-server"
recipe_hash=$( (cat "$0"; echo "$SUITE $PACKAGES") | sha256sum | cut -c1-12)
IMAGE="localhost/visionsuit-debian12-systemd:$recipe_hash"
CACHE="${VISIONSUIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/visionsuit-gpuworker}"
tarball="$CACHE/debian12-systemd-$recipe_hash.tar"

if podman image exists "$IMAGE"; then
  echo "$IMAGE"; exit 0
fi
mkdir -p "$CACHE"
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || { echo "build-base-image: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  echo "build-base-image: debootstrap $SUITE (first run only, a few minutes)" >&2
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 40 "$CACHE/debootstrap.log" >&2; echo "build-base-image: debootstrap failed, see $CACHE/debootstrap.log" >&2; exit 1; }
  # A container has no consoles or hardware: mask the units that would only fail or wait.
  for unit in getty@tty1.service console-getty.service systemd-udevd.service systemd-udev-trigger.service \
              systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount systemd-remount-fs.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
  done
  echo "visionsuit-node" > "$root/etc/hostname"
  : > "$root/etc/machine-id"
  rm -rf "$root/var/cache/apt/archives/"*.deb
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" > "$root/etc/apt/sources.list"
  tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' "$tarball" "$IMAGE" >&2
echo "$IMAGE"
