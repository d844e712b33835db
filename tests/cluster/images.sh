#!/usr/bin/env bash
# Imports the locally built images (pause, sample app) into the cluster's containerd.
# No registry is involved: manifests use fixed tags with imagePullPolicy Never.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=env.sh
. "$here/env.sh"
bin="$1"
out="$BASCULE_CACHE/images/archives"
mapfile -t archives < <("$here/images/build-images.sh" "$out" | grep '\.tar$')
for a in "${archives[@]}"; do
  "$bin/ctr" --address "$CLUSTER_DIR/containerd/containerd.sock" -n k8s.io images import \
    "$a" >/dev/null
done
echo "images: imported ${#archives[@]} archives" >&2
