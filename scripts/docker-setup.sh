#!/bin/bash
# Make this machine ready for the docker backend and its tests. Idempotent.
#
# 1. apt: docker.io (dockerd 20.10 + client), docker-compose (v1), debootstrap,
#    runsc (gVisor, registered in /etc/docker/daemon.json; SIGHUP reloads it)
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
command -v runsc >/dev/null || need+=(runsc)
if [ ${#need[@]} -gt 0 ]; then
  say "apt-get install ${need[*]} (quiet; a minute or two)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  say "installed ${need[*]}"
fi

# gVisor for --docker-runtime runsc (docs/docker.md#gvisor-runsc): Debian's runsc,
# registered in daemon.json (other keys kept). ptrace: kvm hangs in nested VMs;
# --network=host: that release's own network stack refuses kernels >= 6.x
# (the container keeps its own namespace); --host-uds=create: Xvfb's socket on
# the shared bind mount reaches the runtime agent.
RUNSC_CHANGED=$(python3 - <<'PY'
import json, os
path = "/etc/docker/daemon.json"
try:
    config = json.load(open(path))
except FileNotFoundError:
    config = {}
entry = {"path": "/usr/bin/runsc",
         "runtimeArgs": ["--platform=ptrace", "--network=host", "--host-uds=create"]}
if config.get("runtimes", {}).get("runsc") != entry:
    config.setdefault("runtimes", {})["runsc"] = entry
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(config, f, indent=2)
    os.replace(path + ".tmp", path)
    print("yes")
PY
)

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
if [ -n "$RUNSC_CHANGED" ]; then
  # Runtimes reload on SIGHUP. Only the dockerd of this mount namespace reads this
  # daemon.json (a Docker-in-Docker node's dockerd is another process).
  for comm in /proc/[0-9]*/comm; do
    pid="${comm#/proc/}"; pid="${pid%/comm}"
    [ "$(cat "$comm" 2>/dev/null)" = dockerd ] || continue
    if [ "$(readlink "/proc/$pid/ns/mnt")" = "$(readlink /proc/self/ns/mnt)" ]; then
      kill -HUP "$pid"
    fi
  done
fi
for _ in $(seq 1 40); do
  docker info --format '{{json .Runtimes}}' | grep -q '"runsc"' && break
  sleep 0.5
done
docker info --format '{{json .Runtimes}}' | grep -q '"runsc"' \
  || { say "dockerd does not list the runsc runtime (see /etc/docker/daemon.json)"; exit 1; }
say "runtime runsc registered ($(runsc --version 2>/dev/null | head -1))"

"$ROOT/container/build.sh" session
if [ "${VR_DOCKER_GATEWAY_IMAGE:-0}" = 1 ]; then
  "$ROOT/container/build.sh" gateway
fi
say "ready in $(( $(date +%s) - T0 )) s"
