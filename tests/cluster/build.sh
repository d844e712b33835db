#!/usr/bin/env bash
# Builds the local cluster's binaries from pinned upstream Go modules into a cache outside
# the repository, keyed by version, so warm runs skip the build entirely.
# Prints the directory that holds them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
cache="${BASCULE_CACHE:-$HOME/.cache/bascule}"
out="$cache/bin/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-containerd-$CONTAINERD_VERSION"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath -buildvcs=false"
mkdir -p "$out"
log() { echo "build: $*" >&2; }
missing() { local b; for b in "$@"; do [[ -x "$out/$b" ]] || return 0; done; return 1; }

kminor="${KUBE_VERSION#v1.}"; kminor="${kminor%%.*}"
kver=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kver+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kminor"
  kver+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

start=$SECONDS
if missing etcd; then
  log "etcd $ETCD_VERSION"
  (cd "$here/etcd" && go build -ldflags "-s -w" -o "$out/etcd" .)
fi
if missing containerd containerd-shim-runc-v2 ctr; then
  log "containerd $CONTAINERD_VERSION"
  ctrd=github.com/containerd/containerd/v2/cmd
  (cd "$here/containerd" && go build -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
    -o "$out/" "$ctrd/containerd" "$ctrd/containerd-shim-runc-v2" "$ctrd/ctr")
fi
if missing kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; then
  log "kubernetes $KUBE_VERSION"
  (cd "$here/kube" && go build -ldflags "-s -w $kver" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl)
fi
# CoreDNS has a cache directory of its own, so a new version of it leaves the others' builds be.
dns="$cache/bin/coredns-$COREDNS_VERSION"
if [[ ! -x "$dns/coredns" ]]; then
  grep -q "github.com/coredns/coredns $COREDNS_VERSION\$" "$here/coredns/go.mod" \
    || { log "coredns/go.mod does not require CoreDNS $COREDNS_VERSION (versions.env)"; exit 1; }
  log "coredns $COREDNS_VERSION"
  (cd "$here/coredns" && go build -ldflags "-s -w" -o "$dns/coredns" .)
fi
ln -sfn "$dns/coredns" "$out/coredns"
# Our own helper is small and changes with the repository: rebuild when its source is newer.
if [[ ! -x "$out/nsforward" || "$here/nsforward/main.go" -nt "$out/nsforward" ]]; then
  (cd "$here/nsforward" && go build -ldflags "-s -w" -o "$out/nsforward" .)
fi
((SECONDS - start > 5)) && log "built in $((SECONDS - start)) s"
echo "$out"
