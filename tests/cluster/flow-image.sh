#!/usr/bin/env bash
# Builds Bascule's flow image at a commit and imports it into the local cluster's containerd,
# for the Kubernetes work pool (README: Flows as Kubernetes Jobs). No registry, no image
# builder: three layers written by images/oci.py —
#   1. the Debian rootfs of the sample app's images (images/build-images.sh --rootfs, cached),
#   2. Bascule's locked dependencies (`pip install --require-hashes -r requirements.lock`,
#      wheels for the image's Python 3.11), cached under the lock file's hash,
#   3. Bascule's code at the commit (`git archive`), cached under the commit.
# Nothing is rebuilt or imported again when the cluster already has the image.
#
#   flow-image.sh [COMMIT]     prints the image reference, bascule.local/bascule-flows:<sha12>
#
# Environment: as the cluster's scripts (env.sh): BASCULE_CLUSTER_NAME, BASCULE_CACHE.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=env.sh
. "$here/env.sh"
repo="$(cd "$here/../.." && pwd)"
log() { echo "flow-image: $*" >&2; }
start=$SECONDS

# Bump when the dependency layer's recipe below changes.
DEPS_RECIPE=1
REPOSITORY=bascule.local/bascule-flows
PREFIX=/opt/bascule

commit="$(git -C "$repo" rev-parse --verify "${1:-HEAD}^{commit}")"
ref="$REPOSITORY:${commit:0:12}"
bin="$("$here/build.sh")"
ctr() { "$bin/ctr" --address "$CLUSTER_DIR/containerd/containerd.sock" -n k8s.io "$@"; }
if ctr images ls -q | grep -qxF "$ref"; then
  log "$ref is in the cluster already"
  echo "$ref"
  exit 0
fi

rootfs="$("$here/images/build-images.sh" --rootfs)"
cache="$BASCULE_CACHE/images"
exec 9>"$cache/.flow-lock"
flock 9

python="${PYTHON:-python3}"
machine="$(uname -m)"
deps_key="$( (echo "$DEPS_RECIPE $machine"; cat "$repo/requirements.lock") | sha256sum | cut -c1-16)"
deps="$cache/flow-deps-$deps_key"
if [[ -f "$deps/.complete" ]]; then
  log "dependency layer cached: $deps"
else
  log "installing requirements.lock into the dependency layer"
  # Every manylinux tag glibc 2.36 runs (pip does not expand one to the older ones).
  platforms=()
  for minor in $(seq 5 36); do platforms+=(--platform "manylinux_2_${minor}_$machine"); done
  platforms+=(--platform "manylinux2014_$machine" --platform "manylinux2010_$machine"
    --platform "manylinux1_$machine")
  rm -rf "$deps.tmp" && mkdir -p "$deps.tmp/root$PREFIX"
  # Wheels for the image's interpreter (Debian bookworm's CPython 3.11, glibc 2.36),
  # whatever this machine's Python is; the lock's hashes are checked as in the workflows.
  "$python" -m pip install --quiet --disable-pip-version-check --no-compile --no-deps \
    --require-hashes --only-binary=:all: --implementation cp --python-version 3.11 \
    --abi cp311 --abi abi3 --abi none "${platforms[@]}" \
    --target "$deps.tmp/root$PREFIX/site" -r "$repo/requirements.lock" >&2
  # Layer mtimes are 0 and the flow runs as nobody: bytecode checked by hash, not time.
  "$python" -m compileall -q --invalidation-mode unchecked-hash "$deps.tmp/root$PREFIX/site" \
    >/dev/null || true
  find "$deps.tmp/root" -type d -exec chmod 0755 {} +
  "$python" "$here/images/oci.py" layer "$deps.tmp/root" "$deps.tmp/deps.tar.gz" >/dev/null
  rm -rf "$deps.tmp/root"
  rm -rf "$deps" && mv "$deps.tmp" "$deps"
  touch "$deps/.complete"
fi

code="$cache/flow-code-$commit"
if [[ ! -f "$code/code.tar.gz" ]]; then
  log "writing the code layer of $commit"
  rm -rf "$code.tmp" && mkdir -p "$code.tmp/root$PREFIX/app"
  git -C "$repo" archive "$commit" | tar -C "$code.tmp/root$PREFIX/app" -xf -
  "$python" -m compileall -q --invalidation-mode unchecked-hash \
    "$code.tmp/root$PREFIX/app/bascule" "$code.tmp/root$PREFIX/app/tasks" \
    "$code.tmp/root$PREFIX/app/flows" >/dev/null
  # The checkout's umask must not decide the image's modes.
  find "$code.tmp/root" -type d -exec chmod 0755 {} +
  find "$code.tmp/root" -type f -exec chmod go+r {} +
  "$python" "$here/images/oci.py" layer "$code.tmp/root" "$code.tmp/code.tar.gz" >/dev/null
  rm -rf "$code.tmp/root"
  rm -rf "$code" && mv "$code.tmp" "$code"
fi

work="$(mktemp -d "$cache/work.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cat >"$work/flows.json" <<EOF
{"images": [{"name": "$ref",
  "layers": ["$rootfs", "$deps/deps.tar.gz", "$code/code.tar.gz"],
  "config": {
   "Env": ["PATH=$PREFIX/site/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "PYTHONPATH=$PREFIX/app:$PREFIX/site", "PYTHONDONTWRITEBYTECODE=1",
           "PYTHONUNBUFFERED=1", "HOME=/tmp", "PREFECT_HOME=/tmp/prefect"],
   "Cmd": ["python3", "-m", "prefect", "flow-run", "execute"],
   "WorkingDir": "$PREFIX/app",
   "User": "65534:65534",
   "Labels": {"org.opencontainers.image.revision": "$commit"}}}]}
EOF
log "writing and importing $ref"
"$python" "$here/images/oci.py" archive "$work/flows.json" "$work/flows.oci.tar" 2>/dev/null
ctr images import "$work/flows.oci.tar" >/dev/null
log "done in $((SECONDS - start)) s"
echo "$ref"
