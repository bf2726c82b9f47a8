#!/bin/sh
# Entry point of the session image: "app" (the desktop) or "agent ARGS..."
# (the runtime agent). With VR_LOG_FILE set (a file bind-mounted from the
# session's logs/ folder) output goes there, so logs survive the container.
set -u
if [ -n "${VR_LOG_FILE:-}" ] && [ -w "$VR_LOG_FILE" ]; then
  exec >>"$VR_LOG_FILE" 2>&1
fi
role="${1:-app}"
[ $# -gt 0 ] && shift
case "$role" in
  app) exec /opt/visual-runtime/session.sh ;;
  agent) exec python -m agent_side "$@" ;;
  pod) exec /opt/visual-runtime/pod.sh "$@" ;;  # the swarm backend: both parts, as root until they start
  *) exec "$role" "$@" ;;
esac
