#!/usr/bin/env bash
# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
# make demo / make demo-clean: a throwaway local worker.
#   up:   start a real MinIO and one systemd container (a CPU-only "GPU host"), provision it with
#         playbooks/provision.yml, then show what was done and how to reach it.
#   down: remove the container and MinIO.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.demo"
name=visionsuit-demo
export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/rig/containers.conf}"
export PATH="$root/.venv/bin:$PATH"
COMFYUI_GIT_URL="${COMFYUI_GIT_URL:-https://github.com/comfyanonymous/ComfyUI.git}"
COMFYUI_VERSION="${COMFYUI_VERSION:-v0.3.64}"
COMFY_PORT="${DEMO_COMFYUI_PORT:-18188}"
AGENT_PORT="${DEMO_AGENT_PORT:-18081}"

step_start=0
step() { step_start=$EPOCHREALTIME; printf '\n== %s\n' "$*"; }
done_step() { awk -v a="$step_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "   (%.1f s)\n", b - a }'; }

down() {
  podman rm -f "$name" >/dev/null 2>&1 || true
  "$root/rig/minio_server.py" stop --state-dir "$state/minio" || true
  rm -rf "$state"
  echo "demo removed (container $name, MinIO, $state)"
}

up() {
  mkdir -p "$state"
  step "Base image"
  image=$("$root/rig/build-base-image.sh")
  echo "   $image"; done_step

  step "Throwaway worker container '$name' (systemd, CPU only)"
  if ! podman container exists "$name"; then
    podman run -d --name "$name" --hostname "$name" --systemd=always \
      -p "127.0.0.1:$COMFY_PORT:8188" -p "127.0.0.1:$AGENT_PORT:8081" "$image" /sbin/init >/dev/null
  fi
  for _ in $(seq 50); do
    s=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
    case "$s" in running|degraded) break;; esac; sleep 0.2
  done
  gw=$(podman exec "$name" getent hosts host.containers.internal | awk '{print $1}')
  echo "   systemd: $s; host seen from the container at $gw"; done_step

  step "MinIO (real server, random credentials)"
  "$root/rig/minio_server.py" start --state-dir "$state/minio" --address "$gw" >/dev/null
  minio_port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$state/minio/minio.json")
  echo "   http://$gw:$minio_port (from the worker: http://host.containers.internal:$minio_port)"; done_step

  step "ComfyUI source"
  git_url=$COMFYUI_GIT_URL version=$COMFYUI_VERSION torch='["torch", "torchvision", "torchaudio"]'
  if ! timeout 20 git ls-remote --exit-code "$COMFYUI_GIT_URL" "$COMFYUI_VERSION" >/dev/null 2>&1; then
    echo "   $COMFYUI_GIT_URL cannot be reached from here: installing the ComfyUI stand-in from its local repo instead."
    "$root/rig/standin-repo.sh" "$state/comfyui-standin.git" >/dev/null
    tar -C "$state" -cf "$state/standin.tar" comfyui-standin.git
    podman cp "$state/standin.tar" "$name:/srv/standin.tar"
    podman exec "$name" tar -C /srv -xf /srv/standin.tar
    git_url=file:///srv/comfyui-standin.git version=standin-v1 torch='[]'
  else
    echo "   $COMFYUI_GIT_URL @ $COMFYUI_VERSION with CPU PyTorch"
  fi; done_step

  python3 - "$state" "$git_url" "$version" "$torch" "$root" <<'PY'
import json, os, secrets, sys
state, url, version, torch, root = sys.argv[1:6]
m = json.load(open(os.path.join(state, "minio", "minio.json")))
v = {
    "comfyui_git_url": url, "comfyui_version": version, "comfyui_torch_packages": json.loads(torch),
    "visionsuit_minio_endpoint": "http://host.containers.internal:%d" % m["port"],
    "visionsuit_minio_access_key": m["access_key"], "visionsuit_minio_secret_key": m["secret_key"],
    "gpu_agent_api_token": secrets.token_urlsafe(24),
    "comfyui_listen": "0.0.0.0",
}
if version == "standin-v1":  # the stand-in has no shipped package set: its own (empty) constraints
    v["comfyui_pip_constraints_file"] = os.path.join(root, "rig", "comfyui-standin", "constraints.txt")
fd = os.open(os.path.join(state, "demo-vars.yml"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(v, f, indent=2)
PY

  step "ansible-playbook playbooks/provision.yml -i inventories/demo"
  ansible-playbook "$root/playbooks/provision.yml" -i "$root/inventories/demo/hosts.yml" -e "@$state/demo-vars.yml" \
    | sed 's/^/   /'
  done_step

  python3 "$root/rig/demo_story.py" "$name" "$state" "$AGENT_PORT"

  cat <<MSG

== Done: a provisioned worker is running.
   ComfyUI:     http://127.0.0.1:$COMFY_PORT/system_stats  (inside: 127.0.0.1:8188)
   Agent:       http://127.0.0.1:$AGENT_PORT/healthz  (token: gpu_agent_api_token in $state/demo-vars.yml)
   MinIO:       see $state/minio/minio.json (endpoint and keys, mode 0600)
   Shell:       podman exec -it $name bash
   Node config: podman exec $name cat /etc/comfyui/minio.env
   Remove it:   make demo-clean
MSG
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
