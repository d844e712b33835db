#!/usr/bin/env bash
# Figures of the local cluster, one name=value a line: the warm start (cluster-up when the
# binaries and images are cached but no cluster runs), the reuse of a running one, and the
# memory of the running cluster (resident set of all its processes, pods included).
# Uses a cluster of its own name, so a running `bascule` cluster is left alone.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export BASCULE_CLUSTER_NAME=bascule-bench BASCULE_API_PORT=16643 BASCULE_PG_PORT=15632
"$here/tests/cluster/build.sh" >/dev/null
t0=$(date +%s.%N)
"$here/tests/cluster/up.sh" >/dev/null 2>&1
t1=$(date +%s.%N)
"$here/tests/cluster/up.sh" >/dev/null 2>&1
t2=$(date +%s.%N)
dir="/var/lib/bascule/clusters/$BASCULE_CLUSTER_NAME"
pids="$( (cat "$dir"/pids/*; find /sys/fs/cgroup/pids/"$BASCULE_CLUSTER_NAME"* -name cgroup.procs -exec cat {} +) | sort -un)"
rss_kb=0
for p in $pids; do
  kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
  rss_kb=$((rss_kb + ${kb:-0}))
done
"$here/tests/cluster/down.sh" >/dev/null 2>&1
secs() { python3 -c "print(f\"{$2 - $1:.2f}\")"; }
echo "warm_cluster_up_seconds=$(secs "$t0" "$t1")"
echo "reuse_cluster_up_seconds=$(secs "$t1" "$t2")"
echo "cluster_processes=$(echo "$pids" | wc -w)"
echo "cluster_rss_mb=$((rss_kb / 1024))"
