# Settings of the local cluster, sourced by its scripts. Every name can be overridden
# from the environment, so two clusters can live side by side.
# shellcheck shell=bash
BASCULE_CACHE="${BASCULE_CACHE:-$HOME/.cache/bascule}"
CLUSTER_NAME="${BASCULE_CLUSTER_NAME:-bascule}"
# Not under a private home directory: overlayfs lets containers running as other users
# read image layers only when the snapshot directories are reachable for them.
CLUSTER_DIR="${BASCULE_CLUSTER_DIR:-/var/lib/bascule/clusters/$CLUSTER_NAME}"
NETNS="$CLUSTER_NAME"
NODE_NAME="${CLUSTER_NAME}-node"
# The node, pod and service networks exist only inside the cluster's network namespace.
NODE_IP="10.123.0.2"
POD_SUBNET="10.124.0.0/24"
SERVICE_CIDR="10.125.0.0/16"
SERVICE_IP="10.125.0.1"
# The kube-dns Service: CoreDNS runs on the node (node.sh) and pods resolve through it.
DNS_IP="10.125.0.10"
CLUSTER_DOMAIN="cluster.local"
# Host loopback ports that lead into the namespace.
API_PORT="${BASCULE_API_PORT:-16443}"
PG_PORT="${BASCULE_PG_PORT:-15432}"
# PostgreSQL runs as its own user, which cannot enter a private home directory.
PG_DIR="${BASCULE_PG_DIR:-/var/tmp/bascule-$CLUSTER_NAME-postgres}"
KUBECONFIG_PATH="$CLUSTER_DIR/kubeconfig"
CGROUP_PODS="/$CLUSTER_NAME"
CGROUP_SYSTEM="/$CLUSTER_NAME-system"
