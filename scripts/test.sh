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
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"

# The benchmarks' quick mode, to check that every benchmark still runs (no time is
# asserted; a crash, a failed module or a leaked process fails). It writes to a
# temporary folder so the committed benchmarks/results/ stay as they are.
if [ "${VISUAL_RUNTIME_SKIP_BENCHMARKS:-0}" != 1 ]; then
  echo "== benchmarks (quick)"
  count_ours() {
    local n=0 name
    for name in Xvfb x11vnc chromium bwrap; do
      n=$((n + $(pgrep -c -x "$name" || true)))
    done
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
      n=$((n + $(docker ps -q | wc -l)))
    fi
    echo "$n"
  }
  before=$(count_ours)
  bench_out=$(mktemp -d)
  .venv/bin/python -m benchmarks --quick --out "$bench_out"
  after=$(count_ours)
  echo "benchmarks: report in $bench_out; Xvfb/x11vnc/chromium/bwrap processes and containers" \
       "before $before, after $after"
  if [ "$after" -gt "$before" ]; then
    echo "benchmarks left processes or containers behind" >&2
    exit 1
  fi
fi
