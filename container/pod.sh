#!/bin/bash
# The swarm backend's pod: both parts of a session in one container, each in its
# own sandbox (gateway/backends/swarm.py, docs/swarm.md).
#
# Runs as root with only CAP_SETUID, CAP_SETGID and CAP_KILL (the service drops
# every other capability) and does three things:
#   app    uid 10001, no capabilities, no new privileges, in a user and network
#          namespace of its own: loopback only (network "none"), so it reaches
#          neither the node, the gateway, the runtime agent's port nor other
#          sessions. Xvfb, fluxbox, xterm, Chromium (container/session.sh).
#   agent  uid 10002, no capabilities, no new privileges, in the node's network
#          (ICE candidates, the TLS link to the gateway); it alone can read the
#          link secret and key (Swarm secrets, mode 0400, uid 10002).
#          With VR_EGRESS set (network "egress") that namespace gets a link to
#          the node instead, behind the session's own firewall rules
#          (container/pod-egress.sh, removed again when the pod exits).
#   both   write their output to /tmp/logs/{app,agent}.log through file
#          descriptors this script opened (the files are root's: neither part can
#          rewrite the other's log); the agent serves them to the gateway.
# When either part exits the other is stopped and the task ends with its status.
set -u
umask 022
mkdir -p /tmp/.X11-unix /tmp/logs
chmod 1777 /tmp/.X11-unix
: > /tmp/logs/app.log
: > /tmp/logs/agent.log

as_user() {
  local uid="$1"; shift
  exec setpriv --reuid="$uid" --regid="$uid" --clear-groups --inh-caps=-all --no-new-privs -- "$@"
}

# DevTools and the shared folder: Chromium's pipe (container/cdp-relay.py) and the
# Downloads folder (agent_side/files_server.py) are served by the session user on
# sockets in a folder of the session user's with the agent's group, setgid (as
# gateway/backends/devtools.py makes it on one machine). Both are told the agent's
# uid as it shows in the app's user namespace, which maps only 10001: the overflow
# uid. The folder (2750) admits only the session user and the agent's group, and
# of those the overflow uid can only be the agent (the CDP relay also accepts its
# own uid; the files server does not).
setpriv --reuid=10001 --regid=10002 --clear-groups --inh-caps=-all --no-new-privs -- \
  sh -c 'mkdir -m 0750 /tmp/vr-link && chmod 2750 /tmp/vr-link'
# Both parts share the task's one CPU limit (on one machine the docker backend caps
# them apart: --session-cpus for the app, 1.5 CPUs for the agent). A lower
# priority for the app keeps a busy page from starving the capture and encode of
# the frames that show it (docs/swarm.md, glass-to-glass).
APP_NICE=(nice -n 5)
APP_ENV=(env HOME=/tmp/user USER=user DISPLAY=:0 VR_CDP_DIR=/tmp/vr-link
         VR_FILES_SOCKET=/tmp/vr-link/files.sock
         VR_AGENT_UID="$(cat /proc/sys/kernel/overflowuid)" /opt/visual-runtime/session.sh)
if [ -z "${VR_EGRESS:-}" ]; then
  ( as_user 10001 "${APP_NICE[@]}" unshare --user --net --map-user=10001 --map-group=10001 -- \
      "${APP_ENV[@]}" ) \
    >>/tmp/logs/app.log 2>&1 &
  APP=$!
else
  # network "egress": the sandbox's namespace gets a link to the node, behind this
  # session's firewall rules (container/pod-egress.sh; the launcher then holds
  # CAP_NET_ADMIN too). The namespace's own root sets its end up, then the desktop
  # runs as 10001 in a nested user namespace.
  trap '/opt/visual-runtime/pod-egress.sh down' EXIT
  if ! /opt/visual-runtime/pod-egress.sh up >>/tmp/logs/agent.log 2>&1; then
    echo "pod: the egress network did not come up (see above)" >>/tmp/logs/agent.log
    exit 1
  fi
  ( as_user 10001 "${APP_NICE[@]}" unshare --user --net --map-root-user -- \
      /opt/visual-runtime/pod-egress.sh sandbox "${APP_ENV[@]}" ) >>/tmp/logs/app.log 2>&1 &
  APP=$!
  if ! /opt/visual-runtime/pod-egress.sh move "$APP" >>/tmp/logs/agent.log 2>&1; then
    kill -TERM "$APP" 2>/dev/null
    wait "$APP"
    exit 1
  fi
fi
for _ in $(seq 1 1000); do
  [ -S /tmp/.X11-unix/X0 ] && break
  kill -0 "$APP" 2>/dev/null || break
  sleep 0.02
done
if [ ! -S /tmp/.X11-unix/X0 ]; then
  echo "pod: Xvfb did not start (see app.log)" >>/tmp/logs/agent.log
  kill -TERM "$APP" 2>/dev/null
  wait "$APP"
  exit 1
fi
( as_user 10002 /bin/sh -c 'umask 077; mkdir -p /tmp/agent/recording && exec python -m agent_side "$@"' \
    agent "$@" ) >>/tmp/logs/agent.log 2>&1 &
AGENT=$!

stop() { kill -TERM "$AGENT" "$APP" 2>/dev/null; }
trap stop TERM INT
wait -n "$APP" "$AGENT"
status=$?
if kill -0 "$AGENT" 2>/dev/null; then
  echo "pod: the app sandbox exited with status $status" >>/tmp/logs/agent.log
else
  echo "pod: the runtime agent exited with status $status" >>/tmp/logs/agent.log
fi
stop
# The agent finishes the recording on SIGTERM: give it the time the task's grace allows.
wait "$AGENT" 2>/dev/null
wait "$APP" 2>/dev/null
exit "$status"
