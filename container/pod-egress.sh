#!/bin/bash
# Egress for a swarm pod's app sandbox (container/pod.sh, docs/swarm.md).
#
#   pod-egress.sh up        the launcher (root, CAP_NET_ADMIN, the node's network):
#                           the node's firewall rules for this session, then a veth
#                           pair vrw<slot> (node) / vrwp<slot> (sandbox end, still
#                           on the node)
#   pod-egress.sh move PID  the launcher: the sandbox end into PID's namespace
#   pod-egress.sh sandbox CMD...
#                           root of the app's own user namespace (uid 10001
#                           outside): waits for its end of the pair, sets its
#                           address and default route, then runs CMD as uid 10001
#                           in a nested user namespace, without capabilities over
#                           the network namespace
#   pod-egress.sh down      the launcher: removes the rules and the pair
#
# VR_EGRESS="SLOT NODE_IP SANDBOX_IP" (a /30 of 10.232.0.0/16, one per slot) and
# VR_EGRESS_DENY="CIDR ..." (the gateway's --egress-deny plus every swarm node's
# address) come from the service's environment.
#
# The rules are the session's own (chains VRW<slot>-OUT / VRW<slot>-IN, hooked
# first in FORWARD and DOCKER-USER for its interface, an INPUT drop and one NAT
# rule), so "down" leaves nothing on the node; "up" first removes whatever a
# killed pod of the same slot left. What the sandbox may reach: anything but the
# node itself (INPUT), other sessions (vrw+ and the other backends' links),
# Docker's bridges on the node, link-local addresses, connections the node
# DNAT-ed (published ports) and the deny list. Inbound only for connections it
# opened. No IPv6: no address on either end (addrgenmode none), and ip6tables
# drops the interface's traffic where the node has IPv6.
set -euo pipefail
export PATH="/usr/sbin:/sbin:$PATH"
read -r SLOT NODE_IP SANDBOX_IP <<<"${VR_EGRESS:?VR_EGRESS is not set}"
IF="vrw$SLOT"
PEER="vrwp$SLOT"
OUT="VRW$SLOT-OUT"
IN="VRW$SLOT-IN"
READY=/tmp/.vr-egress-ready

# The node's dockerd uses one iptables backend; our rules must be in the same one
# (its FORWARD policy is DROP there, and only an ACCEPT in that backend passes).
ipt() { "$IPT" -w "$@"; }
pick_backend() {
  IPT=iptables-nft IP6T=ip6tables-nft
  if ! iptables-nft -w -S DOCKER-USER >/dev/null 2>&1 \
      && iptables-legacy -w -S DOCKER-USER >/dev/null 2>&1; then
    IPT=iptables-legacy IP6T=ip6tables-legacy
  fi
  export XTABLES_LOCKFILE=/tmp/.xtables.lock  # the root is read-only
}

hooks() {  # the (table chain rule...) lines this session adds, one per line
  echo "filter INPUT -i $IF -j DROP"
  echo "filter FORWARD -i $IF -j $OUT"
  echo "filter FORWARD -o $IF -j $IN"
  if ipt -S DOCKER-USER >/dev/null 2>&1; then
    echo "filter DOCKER-USER -i $IF -j $OUT"
    echo "filter DOCKER-USER -o $IF -j $IN"
  fi
  echo "nat POSTROUTING -s $SANDBOX_IP/32 ! -d $NODE_IP/30 -j MASQUERADE"
}

down() {
  pick_backend
  local table chain rule
  while read -r table chain rule; do
    # shellcheck disable=SC2086
    while ipt -t "$table" -D "$chain" $rule 2>/dev/null; do :; done
  done < <(hooks)
  for chain in "$OUT" "$IN"; do
    ipt -F "$chain" 2>/dev/null || true
    ipt -X "$chain" 2>/dev/null || true
  done
  if "$IP6T" -w -S INPUT >/dev/null 2>&1; then
    while "$IP6T" -w -D INPUT -i "$IF" -j DROP 2>/dev/null; do :; done
    while "$IP6T" -w -D FORWARD -i "$IF" -j DROP 2>/dev/null; do :; done
    while "$IP6T" -w -D FORWARD -o "$IF" -j DROP 2>/dev/null; do :; done
  fi
  ip link delete "$IF" 2>/dev/null || true
}

up() {
  if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != 1 ]; then
    echo "pod-egress: IPv4 forwarding is off on this node (net.ipv4.ip_forward=0)" >&2
    exit 1
  fi
  down  # what a killed pod of this slot may have left
  ipt -N "$OUT"
  ipt -N "$IN"
  ipt -A "$OUT" -m conntrack --ctstate DNAT -j DROP
  ipt -A "$OUT" -d 169.254.0.0/16 -j DROP
  local net
  for net in ${VR_EGRESS_DENY:-}; do
    ipt -A "$OUT" -d "$net" -j DROP
  done
  for net in vrw+ vrh+ vrd+ docker0 docker_gwbridge br-+; do
    ipt -A "$OUT" -o "$net" -j DROP
  done
  ipt -A "$OUT" -j ACCEPT
  ipt -A "$IN" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
  ipt -A "$IN" -j DROP
  local table chain rule
  while read -r table chain rule; do
    # shellcheck disable=SC2086
    ipt -t "$table" -I "$chain" 1 $rule
  done < <(hooks)
  if "$IP6T" -w -S INPUT >/dev/null 2>&1; then
    "$IP6T" -w -I INPUT 1 -i "$IF" -j DROP
    "$IP6T" -w -I FORWARD 1 -i "$IF" -j DROP
    "$IP6T" -w -I FORWARD 1 -o "$IF" -j DROP
  fi
  # The rules exist before the link does: no packet passes first.
  ip link add "$IF" type veth peer name "$PEER"
  ip link set "$IF" addrgenmode none
  ip addr add "$NODE_IP/30" dev "$IF"
  ip link set "$IF" up
}

move() {
  local pid="$1" i
  for i in $(seq 1 500); do  # the sandbox says when it has its own namespace
    if [ -f "$READY" ] && [ "$(stat -c %u "$READY")" = 10001 ]; then
      ip link set "$PEER" netns "$pid"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.02
  done
  echo "pod-egress: the app sandbox did not start its network namespace" >&2
  return 1
}

sandbox() {
  ip link set lo up
  : > "$READY"
  local i
  for i in $(seq 1 500); do
    ip link show "$PEER" >/dev/null 2>&1 && break
    sleep 0.02
  done
  ip link set "$PEER" addrgenmode none
  ip addr add "$SANDBOX_IP/30" dev "$PEER"
  ip link set "$PEER" up
  ip route add default via "$NODE_IP"
  # uid 10001 again, in a user namespace of its own: nothing in it holds a
  # capability over this network namespace (owned by the one above).
  exec unshare --user --map-user=10001 --map-group=10001 -- "$@"
}

case "${1:-}" in
  up) pick_backend; up ;;
  down) down ;;
  move) move "$2" ;;
  sandbox) shift; sandbox "$@" ;;
  *) echo "usage: $0 up|down|move PID|sandbox CMD..." >&2; exit 2 ;;
esac
