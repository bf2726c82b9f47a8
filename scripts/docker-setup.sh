#!/bin/bash
# Make this machine ready for the docker backend and its tests. Idempotent.
#
# 1. apt: docker.io (dockerd 20.10 + client), docker-compose (v1), debootstrap
# 2. dockerd: started in the background if `docker info` does not answer
#    (log: /var/log/dockerd.log); waits until it does
# 3. images (container/build.sh): debian:bookworm-slim (debootstrap when no
#    registry answers), then visual-runtime-session:<content hash> when no
#    image with the hash of container/ + agent_side/ + pyproject.toml exists
#    (tagged :latest, which the gateway uses). VR_DOCKER_GATEWAY_IMAGE=1 also
#    builds the compose gateway image.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
T0=$(date +%s)
say() { printf '==> [%4ss] docker-setup: %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v iptables >/dev/null || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  say "apt-get install ${need[*]} (quiet; a minute or two)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  say "installed ${need[*]}"
fi

if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: /var/log/dockerd.log)"
  # setsid: dockerd outlives this script and the CI step that ran it.
  setsid dockerd > /var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { tail -20 /var/log/dockerd.log >&2; say "dockerd did not start"; exit 1; }
fi
say "dockerd $(docker version --format '{{.Server.Version}}') up"

"$ROOT/container/build.sh" session
if [ "${VR_DOCKER_GATEWAY_IMAGE:-0}" = 1 ]; then
  "$ROOT/container/build.sh" gateway
fi
say "ready in $(( $(date +%s) - T0 )) s"
