#!/bin/sh
# Healthy when the container's part of the pod serves: the app container's
# X socket exists; the agent container's runtime agent answers /health.
if [ "${VR_ROLE:-app}" = agent ]; then
  exec python - <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(4)
s.connect("/run/vr/agent.sock")
s.sendall(b"GET /health HTTP/1.0\r\nHost: agent\r\n\r\n")
sys.exit(0 if s.recv(64).split()[1:2] == [b"200"] else 1)
PY
fi
[ -S /tmp/.X11-unix/X0 ]
