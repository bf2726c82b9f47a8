#!/bin/sh
# Start dockerd inside a Docker-in-Docker container (a swarm worker node of the tests).
# Session nodes run dockerd with the session seccomp profile as the default, so
# a swarm service (which on Docker < 25 cannot carry a profile of its own) keeps
# user namespaces for the app sandbox and Chromium's own sandbox (docs/swarm.md).
set -eu
# Without --privileged (its full capability set is more than some hosts' bounding
# set allows) /sys and the cgroup mounts are read-only: make them writable first.
mount -o remount,rw /sys 2>/dev/null || true
for d in /sys/fs/cgroup /sys/fs/cgroup/*; do
  if mountpoint -q "$d"; then
    mount -o remount,bind,rw "$d" 2>/dev/null || mount -o remount,rw "$d" 2>/dev/null || true
  fi
done
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  # cgroup v2: move ourselves out of the root cgroup so dockerd can delegate controllers.
  mkdir -p /sys/fs/cgroup/init
  xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/init/cgroup.procs 2>/dev/null || true
  sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers \
    > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
fi
exec dockerd --host=unix:///var/run/docker.sock --storage-driver=overlay2 \
  --seccomp-profile=/etc/docker/seccomp-chromium.json --log-level=warn "$@"
