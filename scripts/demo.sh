#!/usr/bin/env bash
# Install what is missing, then start the gateway on 127.0.0.1:3000 with one demo
# session driven by a scripted agent. Prints the viewer URL (with its token).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/visual-runtime demo "$@"
