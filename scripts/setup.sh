#!/usr/bin/env bash
# Install whatever is missing to run Visual Runtime on Debian 12 / Ubuntu:
# system packages (apt) and the project's .venv. Idempotent; fast when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "setup: run as root (sessions need bubblewrap, cgroups and network namespaces)" >&2
    exit 1
  fi
fi

APT_PACKAGES=(
  xvfb fluxbox xterm x11vnc chromium ffmpeg bubblewrap
  iproute2 iptables util-linux procps x11-utils xdotool libseccomp2
  fonts-dejavu-core xfonts-base ca-certificates curl
  python3 python3-venv python3-dev gcc
  coturn
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# A python3 from elsewhere (pyenv, a toolcache) is fine if it is >= 3.11 and has venv.
if command -v python3 >/dev/null && python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  keep=()
  for pkg in "${missing[@]}"; do
    case "$pkg" in python3|python3-venv|python3-dev) ;; *) keep+=("$pkg");; esac
  done
  missing=("${keep[@]+"${keep[@]}"}")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# tests/mcp runs the official MCP TypeScript SDK client with node (npm ci installs it there).
# Any node >= 18 with npm will do, e.g. one that came from nodesource, so only add Debian's.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup: installing nodejs npm"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends nodejs npm
fi

# tests/kubernetes renders deploy/kubernetes with `kubectl kustomize`; any kubectl will do
# (Debian's is in kubernetes-client). tests/swarm validates the stack file with docker-compose.
if ! command -v kubectl >/dev/null; then
  echo "setup: installing kubernetes-client (kubectl)"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends kubernetes-client
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.visual-runtime-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi

# Each session's runtime agent runs as an unprivileged user and reads the code
# and the venv read-only from here (a `mktemp -d` checkout is 0700).
chmod o+rx . .venv

if [ -x scripts/fetch-novnc.sh ]; then
  scripts/fetch-novnc.sh
fi
echo "setup: ready"
