#!/usr/bin/env bash
# Builds the Argo Rollouts controller and its kubectl plugin from the pinned Go module into
# a cache outside the repository, keyed by version, so warm runs skip the build entirely.
# Prints the directory that holds them (and the module's CRDs, copied beside them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
cache="${BASCULE_CACHE:-$HOME/.cache/bascule}"
out="$cache/bin/argo-rollouts-$ARGO_ROLLOUTS_VERSION"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath -buildvcs=false"
mod=github.com/argoproj/argo-rollouts
if [[ ! -x "$out/rollouts-controller" || ! -x "$out/kubectl-argo-rollouts" || ! -d "$out/crds" ]]; then
  start=$SECONDS
  echo "build: argo-rollouts $ARGO_ROLLOUTS_VERSION" >&2
  mkdir -p "$out"
  ver="-X $mod/utils/version.version=${ARGO_ROLLOUTS_VERSION#v} -X $mod/utils/version.gitTreeState=clean"
  (cd "$here" && go build -ldflags "-s -w $ver" -o "$out/" \
    "$mod/cmd/rollouts-controller" "$mod/cmd/kubectl-argo-rollouts")
  src="$(cd "$here" && go list -m -f '{{.Dir}}' "$mod")"
  rm -rf "$out/crds.tmp" && cp -r "$src/manifests/crds" "$out/crds.tmp" && chmod -R u+w "$out/crds.tmp"
  mv "$out/crds.tmp" "$out/crds"
  echo "build: argo-rollouts built in $((SECONDS - start)) s" >&2
fi
echo "$out"
