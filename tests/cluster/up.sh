#!/usr/bin/env bash
# make cluster-up: a single-node Kubernetes built from upstream parts, inside a network
# namespace of its own. Reuses a healthy running cluster; cleans up a stale one first.
# The last line printed is KUBECONFIG=<path>.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=env.sh
. "$here/env.sh"
S="$CLUSTER_DIR"
t0=$SECONDS
log() { echo "cluster-up: $*" >&2; }

bin="$("$here/build.sh")"
kubectl() { "$bin/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

kubeconfig() { # kubeconfig FILE SERVER CERTNAME
  local ca crt key
  ca="$(base64 -w0 <"$S/pki/ca.crt")" crt="$(base64 -w0 <"$S/pki/$3.crt")" key="$(base64 -w0 <"$S/pki/$3.key")"
  (umask 077 && cat >"$1") <<KC
apiVersion: v1
kind: Config
clusters:
- name: $CLUSTER_NAME
  cluster: {server: "$2", certificate-authority-data: $ca}
users:
- name: $3
  user: {client-certificate-data: $crt, client-key-data: $key}
contexts:
- name: $CLUSTER_NAME
  context: {cluster: $CLUSTER_NAME, user: $3}
current-context: $CLUSTER_NAME
KC
}

kubelet_config() {
: >"$S/resolv.conf"
cat >"$S/kubelet.yaml" <<EOT
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$S/pki/ca.crt"}
authorization: {mode: Webhook}
address: "$NODE_IP"
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: "$S/pki/kubelet-serving.crt"
tlsPrivateKeyFile: "$S/pki/kubelet-serving.key"
cgroupDriver: cgroupfs
cgroupRoot: "$CGROUP_PODS"
containerRuntimeEndpoint: "unix://$S/containerd/containerd.sock"
failSwapOn: false
resolvConf: "$S/resolv.conf"
# Each cluster its own: a kubelet deletes the log directories of pods it does not know, so
# in the shared /var/log/pods two clusters on one machine delete each other's pods' logs.
podLogsDir: "$S/pod-logs"
clusterDNS: ["$DNS_IP"]
clusterDomain: "$CLUSTER_DOMAIN"
serializeImagePulls: false
# Images come from local archives and are never pulled: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
fileCheckFrequency: 10s
protectKernelDefaults: false
EOT
}

dns_config() {
  kubeconfig "$S/coredns.kubeconfig" "https://127.0.0.1:6443" coredns
# CoreDNS answers for the cluster's names from what the API server says of Services and
# EndpointSlices, and NXDOMAIN for every other name: nothing is forwarded out of the cluster.
cat >"$S/Corefile" <<EOT
$CLUSTER_DOMAIN:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_IP
    errors
    ready 127.0.0.1:8181
    kubernetes {
        kubeconfig "$S/coredns.kubeconfig"
        ttl 5
    }
}
.:53 {
    bind $NODE_IP
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOT
# Objects node.sh creates before it starts CoreDNS: CoreDNS's read access, the kube-dns
# Service at kubelet's clusterDNS address, and a name for PostgreSQL (postgres.db) — both
# Services lead to host processes on the node, so their EndpointSlices are written here.
cat >"$S/cluster-objects.yaml" <<EOT
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
  - {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
  - {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  clusterIP: "$DNS_IP"
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: bascule.local}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
---
apiVersion: v1
kind: Namespace
metadata: {name: db}
---
apiVersion: v1
kind: Service
metadata: {name: postgres, namespace: db}
spec:
  ports: [{name: postgres, port: 5432, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: postgres-node
  namespace: db
  labels: {kubernetes.io/service-name: postgres, endpointslice.kubernetes.io/managed-by: bascule.local}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
ports: [{name: postgres, port: 5432, protocol: TCP}]
EOT
}

all_alive() { local f; for f in "$S"/pids/*; do kill -0 "$(cat "$f")" 2>/dev/null || return 1; done; }
dns_ready() { nsenter --net="/run/netns/$NETNS" curl -fsS --max-time 2 http://127.0.0.1:8181/ready >/dev/null 2>&1; }
kubelet_current() { grep -q '^clusterDNS:' "$S/kubelet.yaml" && grep -q '^podLogsDir:' "$S/kubelet.yaml"; }
up_to_date() {
  [[ -f "$S/pids/coredns" ]] && kubelet_current \
    && kubectl -n kube-system get service kube-dns >/dev/null 2>&1 \
    && kubectl -n db get service postgres >/dev/null 2>&1
}
# A running cluster started before it had cluster DNS (or its own pod log directory) gets it
# without a restart of the rest: CoreDNS and its Services, and kubelet again with clusterDNS
# and podLogsDir (its pods keep running; those started before keep their resolv.conf, without
# the cluster's DNS, and their logs in /var/log/pods, until they are replaced).
bring_up_to_date() {
  local daemons=() kubelet deadline=$((SECONDS + 60))
  log "adding cluster DNS (CoreDNS, the kube-dns and postgres.db Services) and the pods' own log directory to $CLUSTER_NAME"
  "$here/pki.sh" "$S/pki" "$NODE_NAME" "$NODE_IP" "$SERVICE_IP"
  dns_config
  kubectl apply -f "$S/cluster-objects.yaml" >"$S/logs/cluster-objects.log"
  if ! kubelet_current; then
    mkdir -p "$S/pod-logs"
    kubelet_config
    kubelet="$(cat "$S/pids/kubelet")"
    kill -TERM "$kubelet"
    while kill -0 "$kubelet" 2>/dev/null; do sleep 0.2; done
    daemons+=(kubelet)
  fi
  [[ -f "$S/pids/coredns" ]] || daemons+=(coredns)
  if ((${#daemons[@]})); then
    # As node.sh started the others: in the node's network and mount namespaces.
    setsid -w nsenter --net="/run/netns/$NETNS" --mount="/proc/$(cat "$S/pids/supervisor")/ns/mnt" \
      -- "$here/node.sh" "$bin" "${daemons[@]}" >>"$S/logs/node.log" 2>&1 </dev/null
  fi
  until dns_ready && kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "cluster DNS not ready; see $S/logs/coredns.log and kubelet.log"; exit 1; }
    sleep 0.3
  done
}
if [[ -f "$S/node.started" ]] && all_alive && kubectl get --raw /readyz >/dev/null 2>&1 \
  && kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s >/dev/null 2>&1; then
  log "reusing the running cluster $CLUSTER_NAME"
  # The images as this checkout builds them (cached: about 2 s): a sample app changed since
  # the cluster started is imported again, so its pods run what the archives hold (and what
  # tests read the digests from); the digest references are added too.
  "$here/images.sh" "$bin" changed
  up_to_date || bring_up_to_date
  echo "KUBECONFIG=$KUBECONFIG_PATH"
  exit 0
fi
if [[ -e "$S" ]] || ip netns list 2>/dev/null | grep -qw "$NETNS"; then
  log "cleaning up a stale cluster $CLUSTER_NAME"
  "$here/down.sh"
fi

"$here/../../scripts/install-system.sh"
mkdir -p "$S"/{pids,logs,pod-logs,cni/net.d,cni/ipam,containerd,kubelet}
chmod 700 "$S"
"$here/pki.sh" "$S/pki" "$NODE_NAME" "$NODE_IP" "$SERVICE_IP"

inside="https://127.0.0.1:6443"
kubeconfig "$KUBECONFIG_PATH" "https://127.0.0.1:$API_PORT" admin
kubeconfig "$S/admin-internal.kubeconfig" "$inside" admin
kubeconfig "$S/controller-manager.kubeconfig" "$inside" controller-manager
kubeconfig "$S/scheduler.kubeconfig" "$inside" scheduler
kubeconfig "$S/kubelet.kubeconfig" "$inside" kubelet
kubeconfig "$S/kube-proxy.kubeconfig" "$inside" kube-proxy

cat >"$S/containerd.toml" <<EOT
version = 3
root = "$S/containerd/root"
state = "$S/containerd/state"
[grpc]
  address = "$S/containerd/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "bascule.local/pause:3.10"
[plugins.'io.containerd.cri.v1.runtime']
  enable_cdi = false
  # This machine withholds CAP_SYS_RESOURCE even from root, so negative oom_score_adj
  # values are refused; keep containers' scores at or above containerd's own.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
        Root = "$S/runc"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$S/cni/net.d"
    use_internal_loopback = true
EOT

cat >"$S/cni/net.d/10-bascule.conflist" <<EOT
{"cniVersion": "1.0.0", "name": "bascule", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$S/cni/ipam",
            "ranges": [[{"subnet": "$POD_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOT

kubelet_config
dns_config

# minSyncPeriod is kube-proxy's default, written out: it reads 0 as unset (1 s), so the 0 s
# this file said until 2026-11-28 ran as 1 s (its /configz). A Service change that comes soon
# after others (a new pod's endpoint, its Ready, then a switch) may wait up to that second for
# the next sync: bench/README.md, "Where a deploy's time goes".
cat >"$S/kube-proxy.yaml" <<EOT
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$S/kube-proxy.kubeconfig"}
mode: iptables
clusterCIDR: "$POD_SUBNET"
hostnameOverride: "$NODE_NAME"
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# nf_conntrack_max is global to the machine: leave it alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {minSyncPeriod: 1s, syncPeriod: 30s}
EOT

if [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then
  rm -rf "$PG_DIR" && mkdir -p "$PG_DIR/data" "$PG_DIR/run"
  (umask 077; openssl rand -hex 16 >"$S/postgres.password")
  install -o postgres -m 600 "$S/postgres.password" "$PG_DIR/pwfile"
  chown -R postgres: "$PG_DIR" && chmod 700 "$PG_DIR"
  setpriv --reuid postgres --regid postgres --init-groups \
    /usr/lib/postgresql/15/bin/initdb -D "$PG_DIR/data" -A scram-sha-256 -U postgres \
    --pwfile="$PG_DIR/pwfile" >"$S/logs/initdb.log" 2>&1 </dev/null
  rm -f "$PG_DIR/pwfile"
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PG_DIR/data/pg_hba.conf"
fi

log "starting the control plane and the node in network namespace $NETNS"
ip netns add "$NETNS"
setsid nsenter --net="/run/netns/$NETNS" unshare --mount --propagation slave -- \
  "$here/node.sh" "$bin" >"$S/logs/node.log" 2>&1 </dev/null &
echo $! >"$S/pids/supervisor"
"$bin/nsforward" -netns "/run/netns/$NETNS" -ready-file "$S/forward.ready" \
  -map "127.0.0.1:$API_PORT=127.0.0.1:6443" -map "127.0.0.1:$PG_PORT=127.0.0.1:5432" \
  >"$S/logs/nsforward.log" 2>&1 </dev/null &
echo $! >"$S/pids/nsforward"

# Fails at once, with the log's tail, when a daemon of the cluster has died.
check_alive() {
  local f
  for f in "$S"/pids/*; do
    kill -0 "$(cat "$f")" 2>/dev/null && continue
    log "$(basename "$f") exited; last lines of its log:"
    tail -n 15 "$S/logs/$(basename "$f").log" >&2 || true
    exit 1
  done
}
deadline=$((SECONDS + 180))
until kubectl get --raw /readyz >/dev/null 2>&1; do
  check_alive
  ((SECONDS < deadline)) || { log "API server not ready; see $S/logs"; exit 1; }
  sleep 0.3
done
"$here/images.sh" "$bin"
until kubectl get "node/$NODE_NAME" >/dev/null 2>&1; do
  check_alive
  ((SECONDS < deadline)) || { log "node never registered; see $S/logs/kubelet.log"; exit 1; }
  sleep 0.3
done
kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=120s >/dev/null
# The default ServiceAccount must exist before pods can be created in a namespace.
until kubectl -n default get serviceaccount default >/dev/null 2>&1; do sleep 0.3; done
# CoreDNS is ready once it has read every Service and EndpointSlice.
until dns_ready; do
  check_alive
  ((SECONDS < deadline)) || { log "CoreDNS not ready; see $S/logs/coredns.log"; exit 1; }
  sleep 0.3
done
log "ready in $((SECONDS - t0)) s"
echo "KUBECONFIG=$KUBECONFIG_PATH"
