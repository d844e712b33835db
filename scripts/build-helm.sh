#!/usr/bin/env bash
# Builds helm (for `manifests:` Helm charts: `helm template`) from the Go module pinned in
# scripts/helm/go.mod, the way tests/cluster/build.sh builds the local cluster's binaries: into a
# cache outside the repository, keyed by version, so warm runs skip the build entirely.
# Prints the path of the binary.
set -euo pipefail
here="$(cd "$(dirname "$0")/helm" && pwd)"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath -buildvcs=false"
# The version is go.mod's, read without the network: one place to change it.
version="$(sed -n 's#^[[:space:]]*helm\.sh/helm/v4 \(v[^ ]*\).*#\1#p' "$here/go.mod")"
[[ -n "$version" ]] || { echo "build-helm: scripts/helm/go.mod requires no helm.sh/helm/v4" >&2; exit 1; }
out="${BASCULE_CACHE:-$HOME/.cache/bascule}/bin/helm-$version"
if [[ ! -x "$out/helm" ]]; then
  start=$SECONDS
  echo "build: helm $version" >&2
  mkdir -p "$out"
  # helm reports the version it was told at link time (its source says only "v4.3").
  (cd "$here" && go build -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" \
    -o "$out/helm.tmp" helm.sh/helm/v4/cmd/helm)
  mv "$out/helm.tmp" "$out/helm"
  echo "build: helm built in $((SECONDS - start)) s" >&2
fi
echo "$out/helm"
