#!/usr/bin/env bash
# Regenerates kube/go.mod: k8s.io/kubernetes as a dependency needs every staging module
# it replaces with ./staging/src/... pinned to the matching published v0.x instead.
# The list is read from the downloaded go.mod, never typed by hand.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
staging="v0.${KUBE_VERSION#v1.}"
gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
cd "$here/kube"
rm -f go.mod go.sum
go mod init bascule.local/cluster/kube >/dev/null 2>&1
go mod edit -go=1.24.0 -require="k8s.io/kubernetes@$KUBE_VERSION"
sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gomod" | while read -r mod; do
  go mod edit -replace="$mod=$mod@$staging"
done
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  go mod edit -tool="k8s.io/kubernetes/cmd/$cmd"
done
go mod tidy
