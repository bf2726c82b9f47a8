#!/usr/bin/env bash
# Install what is missing (system packages, .venv, Docker engine and images),
# then run the linters and the whole test suite on the real parts.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -x scripts/docker-setup.sh ]; then
  scripts/docker-setup.sh
fi
echo "== ruff"; .venv/bin/ruff check gateway agent_side tests benchmarks
echo "== mypy"; .venv/bin/mypy gateway agent_side
echo "== pytest"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
