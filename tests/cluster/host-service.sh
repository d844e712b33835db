#!/usr/bin/env bash
# Lets the local cluster's pods reach a server that listens on this machine's loopback (a Prefect
# server, for flows run as Kubernetes Jobs) by a Service name, the way they reach the node's
# PostgreSQL (postgres.db): an nsforward started inside the cluster's network namespace listens
# on the node's address and relays each connection back to 127.0.0.1:PORT here (its -netns is
# this script's namespace), and a Service NAME in bascule-system, with an EndpointSlice for the
# node's address, names it. Nothing leaves loopback or the cluster's namespace.
#
#   host-service.sh NAME PORT PIDFILE    prints http://NAME.bascule-system:80 when it answers
#
# Stop it with `kill $(cat PIDFILE)`; the Service stays (it leads nowhere then).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=env.sh
. "$here/env.sh"
if [[ $# -ne 3 ]]; then
  echo "usage: $0 NAME PORT PIDFILE" >&2
  exit 2
fi
name="$1" port="$2" pidfile="$3"
namespace=bascule-system
bin="$("$here/build.sh")"
ready="$(mktemp -u "${TMPDIR:-/tmp}/bascule-host-service.XXXXXX")"
trap 'rm -f "$ready"' EXIT
setsid nsenter --net="/run/netns/$NETNS" "$bin/nsforward" -netns "/proc/$$/ns/net" \
  -ready-file "$ready" -map "$NODE_IP:$port=127.0.0.1:$port" </dev/null >/dev/null 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 100); do
  [[ -f "$ready" ]] && break
  kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "host-service: nsforward exited" >&2; exit 1; }
  sleep 0.1
done
[[ -f "$ready" ]] || { echo "host-service: nsforward not ready after 10 s" >&2; exit 1; }
"$bin/kubectl" --kubeconfig "$KUBECONFIG_PATH" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $namespace}
---
apiVersion: v1
kind: Service
metadata: {name: $name, namespace: $namespace}
spec:
  ports: [{name: http, port: 80, targetPort: $port, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $name-node
  namespace: $namespace
  labels: {kubernetes.io/service-name: $name, endpointslice.kubernetes.io/managed-by: bascule.local}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
ports: [{name: http, port: $port, protocol: TCP}]
EOF
echo "http://$name.$namespace:80"
