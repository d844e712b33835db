#!/usr/bin/env bash
# Runs inside the cluster's network namespace and a private mount namespace (see up.sh):
# starts every daemon of the control plane and the node, records their pids, then waits.
# Mounts made by kubelet and containerd stay in this mount namespace and vanish with it.
# `node.sh BIN kubelet coredns` (up.sh, in those namespaces) starts only the daemons named,
# in a node that runs already, and returns.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=env.sh
. "$here/env.sh"
bin="$1"
shift
S="$CLUSTER_DIR"
P="$S/pki"
mkdir -p "$S/logs" "$S/pids"
umask 022  # containerd's snapshot directories become the containers' root directories

# All daemons, and so the containerd shims they start, live in one cgroup per hierarchy;
# kubelet puts pods under another (its cgroupRoot), which must exist beforehand.
for h in /sys/fs/cgroup/*/; do
  [[ -f "${h}cgroup.procs" ]] || continue
  for cg in "$h${CGROUP_SYSTEM#/}" "$h${CGROUP_PODS#/}"; do
    mkdir -p "$cg"
    if [[ -f "${h}cpuset.cpus" ]]; then
      cat "${h}cpuset.cpus" >"$cg/cpuset.cpus"
      cat "${h}cpuset.mems" >"$cg/cpuset.mems"
    fi
  done
  echo $$ >"$h${CGROUP_SYSTEM#/}/cgroup.procs"
done

start() { # start NAME CMD...
  local name="$1"; shift
  "$@" >"$S/logs/$name.log" 2>&1 &
  echo $! >"$S/pids/$name"
}
start_kubelet() {
  start kubelet "$bin/kubelet" --config "$S/kubelet.yaml" --kubeconfig "$S/kubelet.kubeconfig" \
    --root-dir "$S/kubelet" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v 1
}
# CoreDNS needs its read access (and kube-system, which the API server creates a moment after
# it is ready) before it starts, or its lists back off.
start_coredns() {
  for _ in $(seq 50); do
    "$bin/kubectl" --kubeconfig "$S/admin-internal.kubeconfig" apply -f "$S/cluster-objects.yaml" \
      >"$S/logs/cluster-objects.log" 2>&1 && break
    sleep 0.2
  done
  start coredns "$bin/coredns" -conf "$S/Corefile"
}
if (($#)); then
  for daemon in "$@"; do "start_$daemon"; done
  exit 0
fi

ip link set lo up
ip link add node0 type veth peer name node0p 2>/dev/null || true
ip link set node0 up && ip link set node0p up
ip addr replace "$NODE_IP/24" dev node0
ip route replace default dev node0
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.ipv4.conf.all.route_localnet=1

start etcd "$bin/etcd" --name "$NODE_NAME" --data-dir "$S/etcd" --log-level warn \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster "$NODE_NAME=http://127.0.0.1:2380" --unsafe-no-fsync \
  --listen-metrics-urls http://127.0.0.1:2381

start kube-apiserver "$bin/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
  --bind-address 0.0.0.0 --secure-port 6443 --advertise-address "$NODE_IP" \
  --service-cluster-ip-range "$SERVICE_CIDR" --allow-privileged \
  --client-ca-file "$P/ca.crt" --tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" \
  --kubelet-client-certificate "$P/apiserver-kubelet-client.crt" --kubelet-client-key "$P/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP \
  --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$P/sa.pub" \
  --service-account-signing-key-file "$P/sa.key" --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction --profiling=false --event-ttl 1h \
  --endpoint-reconciler-type lease --v 1

# The rest wait for the API server to answer before they start.
until "$bin/kubectl" --kubeconfig "$S/admin-internal.kubeconfig" get --raw /readyz >/dev/null 2>&1; do
  sleep 0.2
done

start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$S/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$S/controller-manager.kubeconfig" --authorization-kubeconfig "$S/controller-manager.kubeconfig" \
  --service-account-private-key-file "$P/sa.key" --root-ca-file "$P/ca.crt" \
  --use-service-account-credentials --leader-elect=false --bind-address 127.0.0.1 \
  --allocate-node-cidrs --cluster-cidr "$POD_SUBNET" --node-cidr-mask-size 24 \
  --service-cluster-ip-range "$SERVICE_CIDR" --controllers '*,-bootstrapsigner,-tokencleaner' --v 1

start kube-scheduler "$bin/kube-scheduler" --kubeconfig "$S/scheduler.kubeconfig" \
  --authentication-kubeconfig "$S/scheduler.kubeconfig" --authorization-kubeconfig "$S/scheduler.kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1 --v 1

start containerd "$bin/containerd" --config "$S/containerd.toml"
until [[ -S "$S/containerd/containerd.sock" ]]; do sleep 0.1; done

start_kubelet

start kube-proxy "$bin/kube-proxy" --config "$S/kube-proxy.yaml" --v 1

if [[ -x /usr/lib/postgresql/15/bin/postgres ]]; then
  start postgres setpriv --reuid postgres --regid postgres --init-groups /usr/lib/postgresql/15/bin/postgres -D "$PG_DIR/data" \
    -c listen_addresses="127.0.0.1,$NODE_IP" -c port=5432 -c unix_socket_directories="$PG_DIR/run" \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off
fi

# Last, as nothing else waits for it.
start_coredns

echo ok >"$S/node.started"
wait
