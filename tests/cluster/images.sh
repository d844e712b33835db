#!/usr/bin/env bash
# Imports the locally built images (pause, sample app) into the cluster's containerd.
# No registry is involved: manifests use fixed tags with imagePullPolicy Never. Each image also
# gets the repository digest reference (name@sha256:<manifest digest>) a registry pull records:
# pods then report it as their imageID, and can run the image by digest.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=env.sh
. "$here/env.sh"
bin="$1"
mode="${2:-all}"  # changed: only the archives whose images containerd does not hold yet
out="$BASCULE_CACHE/images/archives"
mapfile -t archives < <("$here/images/build-images.sh" "$out" | grep '\.tar$')
ctr() { "$bin/ctr" --address "$CLUSTER_DIR/containerd/containerd.sock" -n k8s.io "$@"; }
if [[ $mode == changed ]]; then
  held="$(ctr images ls 2>/dev/null | awk 'NR > 1 {print $3}')"
  changed=()
  for a in "${archives[@]}"; do
    for digest in $(tar -xOf "$a" index.json | grep -o 'sha256:[0-9a-f]\{64\}'); do
      grep -qx "$digest" <<<"$held" || { changed+=("$a"); break; }
    done
  done
  archives=("${changed[@]}")
fi
for a in "${archives[@]}"; do
  ctr images import "$a" >/dev/null
done
# REF TYPE DIGEST ...: each name:tag also as name@digest.
ctr images ls 2>/dev/null | awk 'NR > 1 && $1 !~ /^sha256:/ && $1 !~ /@/ {
    name = $1; sub(/:[^:\/]*$/, "", name); print $1, name "@" $3 }' |
  while read -r ref digested; do
    ctr images tag --force "$ref" "$digested" >/dev/null
  done
echo "images: imported ${#archives[@]} archives" >&2
