#!/usr/bin/env bash
# make cluster-down: stops every process of the local cluster by pid, then removes its
# cgroups, network namespace and state. Also the way a stale, half-dead cluster is cleared.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=env.sh
. "$here/env.sh"
S="$CLUSTER_DIR"
log() { echo "cluster-down: $*" >&2; }

# A recorded pid counts only while its command line still names this cluster: after a
# reboot or a killed session the number may belong to somebody else's process.
ours() {
  local cmd
  cmd="$( { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null)" || return 1
  [[ "$cmd" == *"$S"* || "$cmd" == *"$PG_DIR"* || "$cmd" == *"/run/netns/$NETNS "* ]]
}
# The cluster's processes: those we recorded, those in its cgroups (containers and shims
# included) and those inside its network namespace.
cluster_pids() {
  local f h ns
  for f in "$S"/pids/*; do
    [[ -f "$f" ]] && ours "$(cat "$f")" && cat "$f"
  done
  for h in /sys/fs/cgroup/*/; do
    for cg in "$h${CGROUP_PODS#/}" "$h${CGROUP_SYSTEM#/}"; do
      [[ -d "$cg" ]] && find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null
    done
  done
  if [[ -e "/run/netns/$NETNS" ]]; then
    ns="$(stat -L -c %i "/run/netns/$NETNS")"
    for f in /proc/[0-9]*; do
      [[ "$(stat -L -c %i "$f/ns/net" 2>/dev/null)" == "$ns" ]] && echo "${f#/proc/}"
    done
  fi
}
alive() { local p; for p in $(cluster_pids | sort -un); do kill -0 "$p" 2>/dev/null && echo "$p"; done; }

pids="$(alive)"
if [[ -n "$pids" ]]; then
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null
  for _ in $(seq 50); do pids="$(alive)"; [[ -z "$pids" ]] && break; sleep 0.2; done
  # shellcheck disable=SC2086
  [[ -n "$pids" ]] && { log "killing $pids"; kill -KILL $pids 2>/dev/null; sleep 0.5; }
fi

# Kernel cgroups go deepest first; rmdir only removes empty ones.
for h in /sys/fs/cgroup/*/; do
  for cg in "$h${CGROUP_PODS#/}" "$h${CGROUP_SYSTEM#/}"; do
    [[ -d "$cg" ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
  done
done

# Mounts normally die with the cluster's private mount namespace; clear any that leaked.
grep -F " $S/" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null
done
ip netns list 2>/dev/null | grep -qw "$NETNS" && ip netns delete "$NETNS"
rm -rf "$S" "$PG_DIR"
log "cluster $CLUSTER_NAME removed"
