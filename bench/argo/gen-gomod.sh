#!/usr/bin/env bash
# Regenerates go.mod: Argo Rollouts as a dependency needs the replace directives of its own
# go.mod (the k8s.io staging modules pinned to one release), which Go ignores in a
# dependency. They are read from the downloaded go.mod, never typed by hand.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
mod=github.com/argoproj/argo-rollouts
gomod="$(go mod download -json "$mod@$ARGO_ROLLOUTS_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
cd "$here"
rm -f go.mod go.sum
go mod init bascule.local/bench/argo >/dev/null 2>&1
go mod edit -go=1.26.1 -require="$mod@$ARGO_ROLLOUTS_VERSION"
go mod edit -json "$gomod" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    old, new = r["Old"], r["New"]
    left = old["Path"] + ("@" + old["Version"] if old.get("Version") else "")
    print(left + "=" + new["Path"] + "@" + new["Version"])
' | while read -r rep; do go mod edit -replace="$rep"; done
for cmd in rollouts-controller kubectl-argo-rollouts; do
  go mod edit -tool="$mod/cmd/$cmd"
done
go mod tidy
